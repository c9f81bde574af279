//! Starting an update: the command's logic against a fake installer and a local HTTP server,
//! and the signature check with the real `rauc` program and bundles made here.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use vantage_testkit::TempDir;

use super::cli::{UpdateArgs, run_with};
use super::spool::{Limits, hex};
use super::{BundleInfo, Installer, Rauc};

/// Trusts bundles whose content starts with `trusted` (refusing others in the words of `rauc`,
/// naming the file); records what it was asked to install.
#[derive(Debug, Default)]
pub struct FakeInstaller {
    pub installed: Mutex<Vec<Vec<u8>>>,
    pub checked: Mutex<usize>,
}

impl Installer for FakeInstaller {
    fn check(&self, bundle: &Path) -> Result<BundleInfo, String> {
        *self.checked.lock().unwrap() += 1;
        let b = std::fs::read(bundle).map_err(|e| e.to_string())?;
        if !b.starts_with(b"trusted") {
            return Err(format!(
                "{} is not a bundle signed by a trusted key: signature verification failed",
                bundle.display()
            ));
        }
        Ok(BundleInfo {
            compatible: "vantage-amd64".to_string(),
            version: "9.9.9".to_string(),
        })
    }

    fn install(&self, bundle: &Path, progress: &mut dyn FnMut(u8, &str)) -> Result<(), String> {
        progress(0, "Installing");
        let b = std::fs::read(bundle).map_err(|e| e.to_string())?;
        self.installed.lock().unwrap().push(b);
        progress(100, "Installing done.");
        Ok(())
    }
}

/// A real check, a recorded install: what reaches the slot is only what was recorded.
#[derive(Debug)]
struct RealCheck {
    rauc: Rauc,
    installed: Mutex<usize>,
}

impl Installer for RealCheck {
    fn check(&self, bundle: &Path) -> Result<BundleInfo, String> {
        self.rauc.check(bundle)
    }
    fn install(&self, _: &Path, _: &mut dyn FnMut(u8, &str)) -> Result<(), String> {
        *self.installed.lock().unwrap() += 1;
        Ok(())
    }
}

fn args(bundle: &str, spool: &Path) -> UpdateArgs {
    UpdateArgs {
        bundle: bundle.to_string(),
        allow_http: false,
        sha256: None,
        check_only: false,
        keyring: PathBuf::from("/unused"),
        spool: spool.to_path_buf(),
    }
}

pub fn entries(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

/// Serves `body` at `/bundle` on a loopback port; returns its URL.
async fn serve(body: &'static [u8]) -> String {
    let app = axum::Router::new().route("/bundle", axum::routing::get(move || async move { body }));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await });
    format!("http://{addr}/bundle")
}

pub fn sha(b: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, b).as_ref())
}

#[test]
fn only_https_urls_unless_http_is_allowed() {
    assert!(super::download::check_url("https://example.net/b.raucb", false).is_ok());
    let e = super::download::check_url("http://example.net/b.raucb", false).unwrap_err();
    assert!(e.contains("plain http:// is refused"), "{e}");
    assert!(super::download::check_url("http://example.net/b.raucb", true).is_ok());
    let e = super::download::check_url("ftp://example.net/b", true).unwrap_err();
    assert!(e.contains("ftp:// is not supported"), "{e}");
}

#[tokio::test]
async fn a_download_with_the_right_sha256_is_checked_installed_and_removed() {
    const BODY: &[u8] = b"trusted bundle bytes";
    let url = serve(BODY).await;
    let spool = TempDir::new("update-spool");
    let fake = Arc::new(FakeInstaller::default());
    let mut a = args(&url, spool.path());
    a.sha256 = Some(sha(BODY));
    // Refused over http unless allowed, before anything is fetched.
    let mut out = Vec::new();
    let e = run_with(&a, fake.clone(), Limits::DEFAULT, &mut out)
        .await
        .unwrap_err();
    assert!(e.contains("plain http:// is refused"), "{e}");
    a.allow_http = true;
    run_with(&a, fake.clone(), Limits::DEFAULT, &mut out)
        .await
        .unwrap();
    let out = String::from_utf8(out).unwrap();
    assert!(
        out.contains("signature good: vantage-amd64 version 9.9.9"),
        "{out}"
    );
    assert!(out.contains("100% Installing done."), "{out}");
    assert!(out.contains("reboot to start it"), "{out}");
    assert_eq!(*fake.installed.lock().unwrap(), [BODY.to_vec()]);
    assert_eq!(entries(spool.path()), 0, "the spool is emptied");
}

#[tokio::test]
async fn a_wrong_sha256_an_oversize_or_an_untrusted_bundle_is_never_installed() {
    const BODY: &[u8] = b"trusted bundle bytes";
    const FOREIGN: &[u8] = b"foreign bundle bytes";
    let (url, foreign) = (serve(BODY).await, serve(FOREIGN).await);
    let spool = TempDir::new("update-spool");
    let fake = Arc::new(FakeInstaller::default());
    let mut a = args(&url, spool.path());
    a.allow_http = true;
    a.sha256 = Some(sha(b"something else"));
    let e = run_with(&a, fake.clone(), Limits::DEFAULT, &mut Vec::new())
        .await
        .unwrap_err();
    assert!(e.starts_with("SHA-256 mismatch"), "{e}");
    assert_eq!(*fake.checked.lock().unwrap(), 0, "not even checked");

    a.sha256 = None;
    let small = Limits { max: 8, reserve: 0 };
    let e = run_with(&a, fake.clone(), small, &mut Vec::new())
        .await
        .unwrap_err();
    assert!(e.contains("the bundle is too large"), "{e}");

    let mut a = args(&foreign, spool.path());
    a.allow_http = true;
    let e = run_with(&a, fake.clone(), Limits::DEFAULT, &mut Vec::new())
        .await
        .unwrap_err();
    assert!(e.contains("signature verification failed"), "{e}");
    assert!(fake.installed.lock().unwrap().is_empty());
    assert_eq!(entries(spool.path()), 0, "nothing left behind");
}

#[tokio::test]
async fn a_cut_download_leaves_nothing_and_the_next_attempt_starts_afresh() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Announces 1000 bytes, sends 10 and hangs up.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/bundle", l.local_addr().unwrap());
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf).await;
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\ntrusted...")
            .await;
    });
    let spool = TempDir::new("update-spool");
    // A leftover of an earlier attempt is not trusted nor appended to.
    std::fs::write(spool.path().join("download.raucb.part"), b"old").unwrap();
    let fake = Arc::new(FakeInstaller::default());
    let mut a = args(&url, spool.path());
    a.allow_http = true;
    let e = run_with(&a, fake.clone(), Limits::DEFAULT, &mut Vec::new())
        .await
        .unwrap_err();
    assert!(e.contains("download cut"), "{e}");
    assert_eq!(entries(spool.path()), 0);
    assert_eq!(*fake.checked.lock().unwrap(), 0);
}

/// `KEY=value` pairs of `scripts/rauc-keys.sh --env`.
fn dev_key() -> (PathBuf, PathBuf) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/rauc-keys.sh");
    let out = Command::new(script).arg("--env").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let get = |k: &str| {
        text.split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .map(PathBuf::from)
            .unwrap_or_else(|| panic!("no {k} in {text}"))
    };
    (get("RAUC_KEY="), get("RAUC_CERT="))
}

/// A tiny verity bundle (what build-bundle.sh makes, with 20 kB for a root file system).
fn bundle(dir: &Path, name: &str, key: &Path, cert: &Path) -> PathBuf {
    let content = dir.join(format!("{name}-content"));
    std::fs::create_dir_all(&content).unwrap();
    // Random, so squashfs cannot squeeze it under its 4 kB minimum.
    let root: Vec<u8> = (0..20_000).map(|_| rand::random::<u8>()).collect();
    std::fs::write(content.join("root.ext4"), root).unwrap();
    std::fs::write(
        content.join("manifest.raucm"),
        "[update]\ncompatible=vantage-amd64\nversion=9.9.9\n\n[bundle]\nformat=verity\n\n\
         [image.rootfs]\nfilename=root.ext4\n",
    )
    .unwrap();
    let out = dir.join(format!("{name}.raucb"));
    let r = Command::new("rauc")
        .arg("bundle")
        .arg(format!("--cert={}", cert.display()))
        .arg(format!("--key={}", key.display()))
        .arg(&content)
        .arg(&out)
        .output()
        .expect("rauc installed (scripts/deps.d/image.apt)");
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    out
}

#[tokio::test]
async fn rauc_passes_a_bundle_of_the_dev_key_and_refuses_another_before_install() {
    let dir = TempDir::new("update-rauc");
    let (dev_key, dev_cert) = dev_key();
    let (other_key, other_cert) = (dir.path().join("other.key"), dir.path().join("other.pem"));
    let r = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=not the vantage key"])
        .arg("-keyout")
        .arg(&other_key)
        .arg("-out")
        .arg(&other_cert)
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let good = bundle(dir.path(), "good", &dev_key, &dev_cert);
    let foreign = bundle(dir.path(), "foreign", &other_key, &other_cert);

    let real = Arc::new(RealCheck {
        rauc: Rauc::new(&dev_cert),
        installed: Mutex::new(0),
    });
    let mut a = args(good.to_str().unwrap(), dir.path());
    a.keyring = dev_cert.clone();
    let mut out = Vec::new();
    run_with(&a, real.clone(), Limits::DEFAULT, &mut out)
        .await
        .unwrap();
    let out = String::from_utf8(out).unwrap();
    assert!(
        out.contains("signature good: vantage-amd64 version 9.9.9"),
        "{out}"
    );
    assert_eq!(*real.installed.lock().unwrap(), 1);

    a.bundle = foreign.to_str().unwrap().to_string();
    let e = run_with(&a, real.clone(), Limits::DEFAULT, &mut Vec::new())
        .await
        .unwrap_err();
    assert!(
        e.contains("is not a bundle signed by a trusted key") && e.contains("signature"),
        "{e}"
    );
    assert_eq!(
        *real.installed.lock().unwrap(),
        1,
        "the foreign one never reached install"
    );
}

mod fleet {
    use std::path::{Path, PathBuf};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use crate::update::offer::{UpdateOffer, Window};
    use vantage_core::Clock;
    use vantage_testkit::TempDir;

    use super::super::fleet::{Decision, Fetch, Fleet, REBOOT_REQUEST_FILE, decide};
    use super::super::spool::{Limits, SpoolFile, parse_sha256};
    use super::super::{Phase, Updater};
    use super::{FakeInstaller, sha};

    const BUNDLE: &[u8] = b"trusted bundle 1.3.0";
    const FOREIGN: &[u8] = b"foreign bundle";
    const DAY: u64 = 86_400;
    /// A day at midnight UTC.
    const MIDNIGHT: u64 = 20_000 * DAY;

    /// Tokio's paused clock, with wall time starting at midnight UTC.
    #[derive(Debug)]
    struct PausedClock(tokio::time::Instant);

    impl Clock for PausedClock {
        fn now(&self) -> std::time::Instant {
            tokio::time::Instant::now().into_std()
        }
        fn wall(&self) -> SystemTime {
            UNIX_EPOCH + Duration::from_secs(MIDNIGHT) + self.0.elapsed()
        }
    }

    /// Serves `BUNDLE` for any offer, through the spool, checking the offer's SHA-256.
    #[derive(Clone, Default)]
    struct FakeFetch(Arc<Mutex<Vec<String>>>);

    impl Fetch for FakeFetch {
        async fn fetch(
            &self,
            offer: &UpdateOffer,
            spool: &Path,
            _: &mut (dyn FnMut(u64, Option<u64>) + Send),
        ) -> Result<PathBuf, String> {
            self.0.lock().unwrap().push(offer.version.clone());
            let mut f = SpoolFile::create(spool, "download.raucb", None, Limits::DEFAULT)?;
            f.write(body(&offer.version))?;
            f.finish(Some(&parse_sha256(&offer.sha256)?))
        }
    }

    /// What is served for a version: a bundle the fake installer refuses for `-foreign` ones.
    fn body(version: &str) -> &'static [u8] {
        if version.ends_with("-foreign") {
            FOREIGN
        } else {
            BUNDLE
        }
    }

    fn offer(version: &str, sha256: &str) -> UpdateOffer {
        UpdateOffer {
            url: "https://updates.example.net/b.raucb".to_string(),
            version: version.to_string(),
            sha256: sha256.to_string(),
            window: Window::parse("02:00-03:00"),
            reboot: true,
        }
    }

    #[test]
    fn the_decision_follows_version_attempt_and_window() {
        let o = offer("1.3.0", &sha(BUNDLE));
        let at = |h: u64| (MIDNIGHT + h * 3600) as i64;
        assert_eq!(decide(None, "1.2.0", None, at(2)), Decision::Nothing);
        assert_eq!(decide(Some(&o), "1.3.0", None, at(2)), Decision::Nothing);
        assert_eq!(
            decide(Some(&o), "1.2.0", Some("1.3.0"), at(2)),
            Decision::Nothing
        );
        assert_eq!(
            decide(Some(&o), "1.2.0", Some("1.2.5"), at(2)),
            Decision::Install
        );
        assert_eq!(
            decide(Some(&o), "1.2.0", None, at(1)),
            Decision::Wait(Duration::from_secs(3600))
        );
        let any_time = UpdateOffer { window: None, ..o };
        assert_eq!(
            decide(Some(&any_time), "1.2.0", None, at(1)),
            Decision::Install
        );
    }

    /// Waits, in real time (the install runs on a blocking thread), for the update to end.
    async fn until(up: &Updater, phase: Phase) {
        for _ in 0..3000 {
            if up.status().phase == phase {
                return;
            }
            tokio::task::spawn_blocking(|| std::thread::sleep(Duration::from_millis(10)))
                .await
                .unwrap();
        }
        panic!("phase {phase:?} not reached: {:?}", up.status());
    }

    #[tokio::test(start_paused = true)]
    async fn an_offer_is_installed_inside_its_window_once_per_version() {
        let dir = TempDir::new("fleet-update");
        let fake = Arc::new(FakeInstaller::default());
        let updater = Updater::new(fake.clone(), dir.path().join("spool"));
        let current = Arc::new(Mutex::new(Some(offer("1.3.0", &sha(BUNDLE)))));
        let fetch = FakeFetch::default();
        let c = current.clone();
        let fleet = Fleet {
            updater: updater.clone(),
            clock: Arc::new(PausedClock(tokio::time::Instant::now())),
            fetch: fetch.clone(),
            offer: Box::new(move || c.lock().unwrap().clone()),
            running: "1.2.0".to_string(),
            attempted: dir.path().join("update-attempted"),
            reboot_request: dir.path().join(REBOOT_REQUEST_FILE),
        };
        let task = tokio::spawn(fleet.run());
        let fetched = || fetch.0.lock().unwrap().clone();

        // 01:30: before the window.
        tokio::time::sleep(Duration::from_secs(90 * 60)).await;
        assert!(fetched().is_empty());
        // 02:30: inside it.
        tokio::time::sleep(Duration::from_secs(3600)).await;
        until(&updater, Phase::Installed).await;
        assert_eq!(fetched(), ["1.3.0"]);
        assert_eq!(*fake.installed.lock().unwrap(), [BUNDLE.to_vec()]);
        // Installed: a reboot into it is asked for (the image's path unit removes the file).
        let request = dir.path().join(REBOOT_REQUEST_FILE);
        until_file(&request).await;
        assert_eq!(
            std::fs::read_to_string(&request).unwrap(),
            "fleet update 1.3.0 installed\n"
        );
        std::fs::remove_file(&request).unwrap();
        // Days later, windows come and go: not again.
        tokio::time::sleep(Duration::from_secs(3 * DAY)).await;
        assert_eq!(fetched(), ["1.3.0"]);

        // A new version whose SHA-256 does not match what is served: tried once, refused
        // before its signature is even checked, never installed, never retried.
        *current.lock().unwrap() = Some(offer("1.4.0", &sha(b"another bundle")));
        tokio::time::sleep(Duration::from_secs(DAY)).await;
        until(&updater, Phase::Failed).await;
        assert!(
            updater.status().message.contains("SHA-256 mismatch"),
            "{:?}",
            updater.status()
        );
        tokio::time::sleep(Duration::from_secs(3 * DAY)).await;
        assert_eq!(fetched(), ["1.3.0", "1.4.0"]);
        assert_eq!(fake.installed.lock().unwrap().len(), 1);
        assert_eq!(*fake.checked.lock().unwrap(), 1);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("update-attempted")).unwrap(),
            "1.4.0"
        );
        assert_eq!(super::entries(&dir.path().join("spool")), 0);

        // A bundle whose signature is refused: tried, not installed, no reboot either.
        *current.lock().unwrap() = Some(offer("1.5.0-foreign", &sha(FOREIGN)));
        tokio::time::sleep(Duration::from_secs(DAY)).await;
        until(&updater, Phase::Failed).await;
        assert_eq!(
            updater.status().message,
            "the download of fleet update 1.5.0-foreign is not a bundle signed by a trusted key: \
             signature verification failed"
        );
        assert_eq!(*fake.checked.lock().unwrap(), 2);
        assert_eq!(fake.installed.lock().unwrap().len(), 1);
        assert!(
            !request.exists(),
            "no reboot after a failed or refused update"
        );
        task.abort();
    }

    /// Waits, in real time, for a file to appear.
    async fn until_file(path: &Path) {
        for _ in 0..3000 {
            if path.exists() {
                return;
            }
            tokio::task::spawn_blocking(|| std::thread::sleep(Duration::from_millis(10)))
                .await
                .unwrap();
        }
        panic!("{} not written", path.display());
    }

    #[tokio::test(start_paused = true)]
    async fn with_reboot_off_an_install_asks_for_no_reboot() {
        let dir = TempDir::new("fleet-update");
        let fake = Arc::new(FakeInstaller::default());
        let updater = Updater::new(fake.clone(), dir.path().join("spool"));
        let any_time = |version: &str| UpdateOffer {
            window: None,
            reboot: false,
            ..offer(version, &sha(BUNDLE))
        };
        let current = Arc::new(Mutex::new(any_time("1.3.0")));
        let c = current.clone();
        let fetch = FakeFetch::default();
        let fleet = Fleet {
            updater: updater.clone(),
            clock: Arc::new(PausedClock(tokio::time::Instant::now())),
            fetch: fetch.clone(),
            offer: Box::new(move || Some(c.lock().unwrap().clone())),
            running: "1.2.0".to_string(),
            attempted: dir.path().join("update-attempted"),
            reboot_request: dir.path().join(REBOOT_REQUEST_FILE),
        };
        let task = tokio::spawn(fleet.run());
        until(&updater, Phase::Installed).await;
        // A second version: once it is fetched, the first attempt has run to its end.
        *current.lock().unwrap() = any_time("1.3.1");
        for _ in 0..3000 {
            if fetch.0.lock().unwrap().len() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        assert_eq!(*fetch.0.lock().unwrap(), ["1.3.0", "1.3.1"]);
        assert!(!dir.path().join(REBOOT_REQUEST_FILE).exists());
        task.abort();
    }
}
