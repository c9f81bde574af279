//! Settings → Update: `POST /api/update` with a bundle as the body, against a fake installer.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, StatusCode};
use serde_json::{Value, json};
use vantage_testkit::TempDir;

use super::{Fixture, Resp};
use crate::metrics::update::SlotPaths;
use crate::update::spool::Limits;
use crate::update::tests::FakeInstaller;

async fn upload(f: &Fixture, body: Vec<u8>, session: bool, csrf: bool) -> Resp {
    let req = f
        .builder(Method::POST, "/api/update", session, csrf)
        .header("content-type", "application/octet-stream")
        .body(Body::from(body))
        .unwrap();
    f.raw(req).await
}

fn spool_entries(f: &Fixture) -> usize {
    std::fs::read_dir(&f.web.update.spool)
        .map(|d| d.count())
        .unwrap_or(0)
}

async fn fixture() -> (Fixture, Arc<FakeInstaller>) {
    let f = Fixture::logged_in(None).await;
    // What a power cut left in the spool is gone once the daemon starts again.
    std::fs::create_dir_all(&f.web.update.spool).unwrap();
    std::fs::write(f.web.update.spool.join("upload.raucb"), b"old").unwrap();
    let again = crate::update::Updater::new(f.web.update.installer(), f.web.update.spool.clone());
    assert_eq!(spool_entries(&f), 0);
    drop(again);
    let fake = Arc::new(FakeInstaller::default());
    f.web.update.set_installer(fake.clone());
    (f, fake)
}

#[tokio::test]
async fn an_upload_needs_the_session_and_its_csrf_token() {
    let (f, fake) = fixture().await;
    let r = upload(&f, b"trusted".to_vec(), false, false).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    let r = upload(&f, b"trusted".to_vec(), true, false).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert!(r.text.contains("CSRF"), "{}", r.text);
    assert_eq!(*fake.checked.lock().unwrap(), 0);
    assert_eq!(spool_entries(&f), 0);
    // Reading the status needs the session too.
    let r = f.send(Method::GET, "/api/update", None, false).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
}

#[tokio::test]
async fn an_oversize_or_untrusted_bundle_is_refused_and_nothing_installed() {
    let (f, fake) = fixture().await;
    f.web.update.set_limits(Limits {
        max: 100 * 1024,
        reserve: 0,
    });
    let r = upload(&f, vec![b't'; 100 * 1024 + 1], true, true).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.text);
    assert!(r.text.contains("the bundle is too large"), "{}", r.text);

    let r = upload(&f, b"foreign bundle".to_vec(), true, true).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    // In the sender's terms: the spool's path is the device's business.
    assert_eq!(
        r.body["error"],
        "the uploaded file is not a bundle signed by a trusted key: signature verification failed",
        "{}",
        r.text
    );
    let s = f.get("/api/update").await;
    assert_eq!(s.body["phase"], "failed", "{}", s.text);
    assert_eq!(s.body["message"], r.body["error"], "{}", s.text);
    assert!(fake.installed.lock().unwrap().is_empty());
    assert_eq!(spool_entries(&f), 0, "nothing left in the spool");
}

#[tokio::test]
async fn a_trusted_bundle_reaches_the_installer_and_the_page_sees_it_installed() {
    let (f, fake) = fixture().await;
    // Larger than the API's JSON body limit: the upload is streamed, not buffered.
    let mut bundle = b"trusted".to_vec();
    bundle.resize(300 * 1024, b'x');
    let r = upload(&f, bundle.clone(), true, true).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    assert_eq!(r.body["version"], "9.9.9", "{}", r.text);
    // The install runs in the background; the page polls. Bounded by count, not time.
    let mut s = f.get("/api/update").await;
    for _ in 0..1000 {
        if s.body["phase"] == "installed" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        s = f.get("/api/update").await;
    }
    assert_eq!(s.body["phase"], "installed", "{}", s.text);
    assert_eq!(s.body["percent"], 100, "{}", s.text);
    assert_eq!(s.body["bytes"], 300 * 1024, "{}", s.text);
    assert_eq!(*fake.installed.lock().unwrap(), [bundle]);
    assert_eq!(spool_entries(&f), 0, "the installed bundle is removed");
}

/// A body that sends a first chunk, then fails (`fail`) or never sends another.
struct Cut {
    sent: bool,
    fail: bool,
}

impl futures_core::Stream for Cut {
    type Item = Result<Vec<u8>, std::io::Error>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        if !self.sent {
            self.sent = true;
            return std::task::Poll::Ready(Some(Ok(b"trusted, then".to_vec())));
        }
        if self.fail {
            std::task::Poll::Ready(Some(Err(std::io::Error::other("connection reset"))))
        } else {
            std::task::Poll::Pending
        }
    }
}

#[tokio::test]
async fn a_cut_or_abandoned_upload_leaves_nothing_and_says_so() {
    let (f, fake) = fixture().await;
    let req = |fail| {
        f.builder(Method::POST, "/api/update", true, true)
            .body(Body::from_stream(Cut { sent: false, fail }))
            .unwrap()
    };
    let r = f.raw(req(true)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert!(r.text.contains("upload cut"), "{}", r.text);
    assert_eq!(spool_entries(&f), 0);

    // The client goes away mid-upload: the request's future is dropped.
    let gone = tokio::time::timeout(std::time::Duration::from_millis(300), f.raw(req(false))).await;
    assert!(gone.is_err(), "the body never ends");
    let s = f.get("/api/update").await;
    assert_eq!(s.body["phase"], "failed", "{}", s.text);
    assert!(s.text.contains("the upload was cut"), "{}", s.text);
    assert_eq!(spool_entries(&f), 0);
    assert_eq!(*fake.checked.lock().unwrap(), 0);
    // And the next upload is not refused as "already running".
    let r = upload(&f, b"trusted".to_vec(), true, true).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
}

/// The image's update state in a temporary directory, as the health check writes it.
/// Slot B holds build b1 (1.3.0), marked good; `release` is the running build's file.
fn image(
    f: &Fixture,
    cmdline: &str,
    release: &str,
    good_a: Option<&str>,
    last: Option<&str>,
) -> TempDir {
    let dir = TempDir::new("image-state");
    let p = dir.path();
    std::fs::write(p.join("cmdline"), cmdline).unwrap();
    std::fs::write(p.join("release"), release).unwrap();
    std::fs::write(p.join("good-B"), "b1\n").unwrap();
    if let Some(b) = good_a {
        std::fs::write(p.join("good-A"), b).unwrap();
    }
    if let Some(l) = last {
        std::fs::write(p.join("last"), l).unwrap();
    }
    f.web.update.set_slot_paths(SlotPaths {
        dir: p.to_path_buf(),
        cmdline: p.join("cmdline"),
        release: p.join("release"),
    });
    dir
}

#[tokio::test]
async fn the_answer_says_which_slot_runs_its_build_and_what_the_last_trial_did() {
    let (f, _) = fixture().await;
    let get = || f.send(Method::GET, "/api/update", None, true);
    const CMDLINE: &str = "BOOT_IMAGE=/vmlinuz root=PARTLABEL=vantage-a rauc.slot=A ro\n";
    const A_RELEASE: &str = "VERSION=1.4.0\nBUILD=b2\n";

    // Slot A runs build b2, marked good there after a trial that went well.
    let _d = image(
        &f,
        CMDLINE,
        A_RELEASE,
        Some("b2\n"),
        Some("2026-12-02T10:00:00Z good slot=A version=1.4.0 build=b2 after=42s\n"),
    );
    let r = get().await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["phase"], "idle", "the update status is still there");
    let i = &r.body["image"];
    assert_eq!(
        (&i["booted"], &i["version"], &i["build"], &i["state"]),
        (&json!("A"), &json!("1.4.0"), &json!("b2"), &json!("good")),
        "{i}"
    );
    assert_eq!(
        i["slots"],
        json!([{"slot": "A", "booted": true, "good_build": "b2"},
               {"slot": "B", "booted": false, "good_build": "b1"}])
    );
    assert_eq!(i["last"]["result"], "good");
    assert_eq!(i["last"]["at"], 1_796_205_600.0);

    // Just installed and booted: build b2 was never marked good in A, so it is on trial.
    let _d = image(&f, CMDLINE, A_RELEASE, None, None);
    let i = get().await.body["image"].clone();
    assert_eq!(
        (&i["state"], &i["last"]),
        (&json!("trial"), &Value::Null),
        "{i}"
    );

    // 1.5.0 went into A and was not ready in time: the device rolled back to B's good b1.
    let _d = image(
        &f,
        "root=PARTLABEL=vantage-b rauc.slot=B ro\n",
        "VERSION=1.3.0\nBUILD=b1\n",
        None,
        Some(
            "2026-12-02T10:00:00Z rollback slot=A version=1.5.0 build=b3 reason=not-ready-in-600s\n",
        ),
    );
    let i = get().await.body["image"].clone();
    assert_eq!(
        (&i["booted"], &i["version"], &i["state"]),
        (&json!("B"), &json!("1.3.0"), &json!("good")),
        "{i}"
    );
    assert_eq!(
        i["last"],
        json!({"at": 1_796_205_600.0, "result": "rollback", "slot": "A", "version": "1.5.0",
               "build": "b3", "reason": "not-ready-in-600s"})
    );

    // Not an A/B image: no rauc.slot=, nothing about slots, whatever files lie around.
    let _d = image(
        &f,
        "root=/dev/mmcblk0p2 ro quiet\n",
        A_RELEASE,
        Some("b2\n"),
        None,
    );
    let r = get().await;
    assert_eq!(r.body["image"], Value::Null, "{}", r.text);
    assert_eq!(r.body["phase"], "idle");
}
