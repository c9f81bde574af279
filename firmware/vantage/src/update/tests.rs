//! Starting an update: the command's logic against a fake installer and a local HTTP server,
//! and the signature check with the real `rauc` program and bundles made here.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use vantage_testkit::TempDir;

use super::cli::{UpdateArgs, run_with};
use super::spool::{Limits, hex};
use super::{BundleInfo, Installer, Rauc};

/// Trusts bundles whose content starts with `trusted`; records what it was asked to install.
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
            return Err("signature verification failed".to_string());
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

fn entries(dir: &Path) -> usize {
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

fn sha(b: &[u8]) -> String {
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
