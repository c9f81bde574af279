//! Settings → Local metrics: `GET`/`PUT /api/node-exporter` off the image and on a fixture of
//! it (the helper and exporter present, the helper's state file written as the helper does).

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use axum::body::Body;
use axum::http::{Method, StatusCode, header};
use serde_json::json;

use super::{Fixture, Resp};
use crate::node_exporter::{PORT, Paths, REQUEST_FILE, TEXTFILE_DIR};

/// The image's files under the fixture's directory; `image` says whether helper and exporter
/// are there.
fn paths(f: &Fixture, image: bool) -> Paths {
    let root = f.dir.path().join("image");
    std::fs::create_dir_all(&root).unwrap();
    if image {
        std::fs::write(root.join("helper"), "#!/bin/sh\n").unwrap();
        std::fs::write(root.join("exporter"), "").unwrap();
    }
    let p = Paths {
        request: f.dir.path().join(REQUEST_FILE),
        state: root.join("state"),
        helper: root.join("helper"),
        exporter: root.join("exporter"),
    };
    f.web.node_exporter.set_paths(p.clone());
    p
}

async fn put(f: &Fixture, body: &str, session: bool, csrf: bool) -> Resp {
    let req = f
        .builder(Method::PUT, "/api/node-exporter", session, csrf)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    f.raw(req).await
}

fn request_of(p: &Paths) -> Option<String> {
    std::fs::read_to_string(&p.request).ok()
}

#[tokio::test]
async fn off_the_image_the_setting_is_not_offered() {
    let f = Fixture::logged_in(None).await;
    let p = paths(&f, false);
    let r = f.get("/api/node-exporter").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body, json!({"available": false}), "{}", r.text);
    let r = put(&f, r#"{"enabled": true}"#, true, true).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert!(r.text.contains("not on this device"), "{}", r.text);
    assert_eq!(request_of(&p), None);
    // The helper without the exporter (a Buildroot tree without it) is not the image either.
    std::fs::write(&p.helper, "").unwrap();
    assert_eq!(f.get("/api/node-exporter").await.body["available"], false);
}

#[tokio::test]
async fn on_the_image_it_is_off_at_first_and_switched_through_the_request_file() {
    let f = Fixture::logged_in(None).await;
    let p = paths(&f, true);
    let r = f.get("/api/node-exporter").await;
    assert_eq!(
        r.body,
        json!({"available": true, "enabled": false, "active": "inactive", "failed": false,
               "pending": null, "textfile_directory": TEXTFILE_DIR, "port": PORT}),
        "{}",
        r.text
    );
    assert_eq!(
        (TEXTFILE_DIR, PORT),
        ("/var/lib/prometheus/node-exporter", 9100)
    );

    let r = put(&f, r#"{"enabled": true}"#, true, true).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    assert_eq!(r.body["pending"], true, "{}", r.text);
    assert_eq!(r.body["enabled"], false, "not applied yet: {}", r.text);
    assert_eq!(request_of(&p).as_deref(), Some("on\n"));
    let mode = std::fs::metadata(&p.request).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let left: Vec<PathBuf> = std::fs::read_dir(f.dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|e| e.to_string_lossy().contains(".tmp"))
        .collect();
    assert!(left.is_empty(), "temp files left: {left:?}");

    // The helper takes the request and records what systemd has.
    std::fs::remove_file(&p.request).unwrap();
    std::fs::write(&p.state, "on active\n").unwrap();
    let r = f.get("/api/node-exporter").await;
    assert_eq!(
        (&r.body["enabled"], &r.body["active"], &r.body["pending"]),
        (&json!(true), &json!("active"), &json!(null)),
        "{}",
        r.text
    );

    let r = put(&f, r#"{"enabled": false}"#, true, true).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    assert_eq!(r.body["pending"], false, "{}", r.text);
    assert_eq!(request_of(&p).as_deref(), Some("off\n"));
    // A request the helper could not apply: the page says so.
    std::fs::remove_file(&p.request).unwrap();
    std::fs::write(&p.state, "on active failed\n").unwrap();
    let r = f.get("/api/node-exporter").await;
    assert_eq!(r.body["failed"], true, "{}", r.text);
    // A state file that is not the helper's reads as nothing recorded: off.
    std::fs::write(&p.state, "<html>\n").unwrap();
    assert_eq!(f.get("/api/node-exporter").await.body["enabled"], false);
}

#[tokio::test]
async fn bad_bodies_are_refused_and_nothing_is_requested() {
    let f = Fixture::logged_in(None).await;
    let p = paths(&f, true);
    for body in [
        r#"{"enabled": "on"}"#,
        r#"{"enabled": 1}"#,
        r#"{"enabled": null}"#,
        r#"{}"#,
        r#"{"enabled": true, "port": 1}"#,
        r#"["on"]"#,
        "on",
    ] {
        let r = put(&f, body, true, true).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.text);
        assert!(r.body["error"].is_string(), "{body}: {}", r.text);
    }
    let req = f
        .builder(Method::PUT, "/api/node-exporter", true, true)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from("on"))
        .unwrap();
    assert_eq!(f.raw(req).await.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(request_of(&p), None);
}

#[tokio::test]
async fn switching_needs_the_session_and_its_csrf_token() {
    let f = Fixture::logged_in(None).await;
    let p = paths(&f, true);
    let r = put(&f, r#"{"enabled": true}"#, false, false).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    let r = put(&f, r#"{"enabled": true}"#, true, false).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert!(r.text.contains("CSRF"), "{}", r.text);
    let cross = f
        .builder(Method::PUT, "/api/node-exporter", true, true)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ORIGIN, "http://attacker.example")
        .body(Body::from(r#"{"enabled": true}"#))
        .unwrap();
    assert_eq!(f.raw(cross).await.status, StatusCode::FORBIDDEN);
    assert_eq!(request_of(&p), None);
    // Reading it needs the session too.
    let r = f.send(Method::GET, "/api/node-exporter", None, false).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
}
