//! Settings → Update: `POST /api/update` with a bundle as the body, against a fake installer.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, StatusCode};

use super::{Fixture, Resp};
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
    assert!(
        r.text.contains("signature verification failed"),
        "{}",
        r.text
    );
    let s = f.get("/api/update").await;
    assert_eq!(s.body["phase"], "failed", "{}", s.text);
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
