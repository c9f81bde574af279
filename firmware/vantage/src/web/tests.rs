//! In-process tests of the whole HTTP application.

pub use vantage_testkit::TempDir;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;
use vantage_core::{Measurement, PingReport, ProbeKind, Sample};
use vantage_store::config::StoreSections;

use super::api::ROUTES;
use super::auth::{HashParams, SESSION_IDLE};
use super::{MemoryHistory, Web};
use crate::config_source::ConfigSource;

const PASSWORD: &str = "correct horse battery staple";
const HOST: &str = "192.0.2.10:9430";

const CONFIG: &str = r#"# Hand-written header comment.
[defaults]
interval = "5s"

[[targets]]
name = "loop"
host = "127.0.0.1"
probes = ["ping"]
"#;

struct Fixture {
    dir: TempDir,
    web: Arc<Web>,
    history: Arc<MemoryHistory>,
    app: Router,
    cookie: Option<String>,
    csrf: Option<String>,
}

struct Resp {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Value,
    text: String,
}

impl Fixture {
    async fn new(config: Option<&str>) -> Self {
        Self::build(TempDir::new("web"), config, None, false).await
    }

    /// Like `vantage run --default-config FILE`: `default` is written beside the data
    /// directory's file and runs until the first save.
    async fn with_default(config: Option<&str>, default: Option<&str>) -> Self {
        Self::build(TempDir::new("web"), config, default, false).await
    }

    /// Like `vantage run`: with the sample store open under the data directory, and the
    /// history read from it.
    async fn with_store(dir: TempDir, config: Option<&str>) -> Self {
        Self::build(dir, config, None, true).await
    }

    async fn build(dir: TempDir, config: Option<&str>, default: Option<&str>, store: bool) -> Self {
        let path = dir.path().join("vantage.toml");
        if let Some(c) = config {
            std::fs::write(&path, c).unwrap();
        }
        let default = default.map(|text| {
            let p = dir.path().join("packaged.toml");
            std::fs::write(&p, text).unwrap();
            p
        });
        // Without a file yet, the daemon runs like `vantage run` without --config.
        let source = ConfigSource::DataDir { path, default };
        let cfg = source.load().unwrap();
        let history = Arc::new(MemoryHistory::default());
        let storage = store.then(|| crate::storage::Storage::start(dir.path(), &cfg));
        let source_of_history = super::history_source(history.clone(), storage.as_deref());
        let wiring = crate::apply::Wiring {
            observers: vec![history.clone() as _],
            storage,
            ..Default::default()
        };
        let state = crate::apply::build(source, cfg, wiring).state;
        let web = Web::open_with(state, dir.path(), source_of_history, HashParams::TEST).unwrap();
        let app = super::app(web.clone());
        Self {
            dir,
            web,
            history,
            app,
            cookie: None,
            csrf: None,
        }
    }

    /// A fresh device with the password set and a session open.
    async fn logged_in(config: Option<&str>) -> Self {
        Self::new(config).await.log_in().await
    }

    async fn log_in(mut self) -> Self {
        let f = &mut self;
        let r = f
            .send(
                Method::POST,
                "/api/auth/setup",
                Some(json!({"password": PASSWORD})),
                false,
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        f.take_session(&r);
        self
    }

    fn take_session(&mut self, r: &Resp) {
        let c = r.headers[header::SET_COOKIE].to_str().unwrap();
        self.cookie = Some(c.split(';').next().unwrap().to_string());
        self.csrf = r.body["csrf_token"].as_str().map(String::from);
    }

    fn config_path(&self) -> std::path::PathBuf {
        self.dir.path().join("vantage.toml")
    }

    async fn raw(&self, req: Request<Body>) -> Resp {
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        assert!(!status.is_server_error(), "server error {status}: {text}");
        Resp {
            status,
            headers,
            body,
            text,
        }
    }

    fn builder(
        &self,
        method: Method,
        path: &str,
        with_session: bool,
        with_csrf: bool,
    ) -> axum::http::request::Builder {
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, HOST);
        if with_session && let Some(c) = &self.cookie {
            b = b.header(header::COOKIE, c);
        }
        if with_csrf && let Some(t) = &self.csrf {
            b = b.header("x-csrf-token", t);
        }
        b
    }

    async fn send(&self, method: Method, path: &str, body: Option<Value>, auth: bool) -> Resp {
        let b = self.builder(method, path, auth, auth);
        let req = match body {
            Some(v) => b
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(v.to_string())),
            None => b.body(Body::empty()),
        }
        .unwrap();
        self.raw(req).await
    }

    async fn get(&self, path: &str) -> Resp {
        self.send(Method::GET, path, None, true).await
    }
}

fn field_errors(r: &Resp) -> Vec<(String, String)> {
    r.body["errors"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    (
                        e["field"].as_str().unwrap_or_default().to_string(),
                        e["message"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn fresh_device_asks_for_a_password_and_nothing_else_is_open() {
    let f = Fixture::new(Some(CONFIG)).await;
    let s = f.get("/api/auth/state").await;
    assert_eq!(s.body["setup_required"], true);
    assert_eq!(s.body["logged_in"], false);
    for (m, p) in ROUTES {
        if *m == "GET" && *p != "/api/auth/state" {
            let r = f.get(&p.replace("{name}", "loop")).await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{m} {p}: {}", r.text);
        }
    }
    // Path tricks do not reach a handler around the session check.
    for p in [
        "//api/status",
        "/API/status",
        "/./api/status",
        "/x/../api/status",
        "/api/status/",
        "/api/%73tatus",
    ] {
        let r = f.get(p).await;
        assert!(
            r.status == StatusCode::UNAUTHORIZED || r.status == StatusCode::NOT_FOUND,
            "{p}: {} {}",
            r.status,
            r.text
        );
        assert!(!r.text.contains("targets"), "{p}: {}", r.text);
    }
    // The page itself loads, with its security headers.
    let page = f.get("/").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.text.contains("<title>"), "{}", page.text);
    assert_eq!(page.headers["x-frame-options"], "DENY");
    assert!(
        page.headers[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("default-src 'self'")
    );
    // Login is impossible before setup: there is no default password.
    let r = f
        .send(
            Method::POST,
            "/api/auth/login",
            Some(json!({"password": "admin"})),
            false,
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    // Too short a password is refused with a field message.
    let r = f
        .send(
            Method::POST,
            "/api/auth/setup",
            Some(json!({"password": "short"})),
            false,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(field_errors(&r)[0].0, "password");
    let r = f
        .send(
            Method::POST,
            "/api/auth/setup",
            Some(json!({"password": PASSWORD})),
            false,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let cookie = r.headers[header::SET_COOKIE].to_str().unwrap();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    // Setup happens once.
    let r = f
        .send(
            Method::POST,
            "/api/auth/setup",
            Some(json!({"password": "another long password"})),
            false,
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let stored = std::fs::read_to_string(f.dir.path().join("web/admin.json")).unwrap();
    assert!(stored.contains("$argon2id$") && !stored.contains(PASSWORD));
}

#[tokio::test]
async fn login_logout_and_expiry() {
    let mut f = Fixture::logged_in(Some(CONFIG)).await;
    assert_eq!(f.get("/api/status").await.status, StatusCode::OK);
    let r = f.send(Method::POST, "/api/auth/logout", None, true).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(
        r.headers[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    assert_eq!(f.get("/api/status").await.status, StatusCode::UNAUTHORIZED);

    let r = f
        .send(
            Method::POST,
            "/api/auth/login",
            Some(json!({"password": "wrong password!"})),
            false,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = f
        .send(
            Method::POST,
            "/api/auth/login",
            Some(json!({"password": PASSWORD})),
            false,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    f.take_session(&r);
    let s = f.get("/api/auth/state").await;
    assert_eq!(s.body["logged_in"], true);
    assert_eq!(s.body["csrf_token"].as_str(), f.csrf.as_deref());
    f.web
        .auth
        .age_sessions(SESSION_IDLE + Duration::from_secs(1));
    assert_eq!(f.get("/api/status").await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn login_is_rate_limited_per_client() {
    let f = Fixture::logged_in(Some(CONFIG)).await;
    let mut codes = Vec::new();
    for _ in 0..7 {
        let r = f
            .send(
                Method::POST,
                "/api/auth/login",
                Some(json!({"password": "not the password"})),
                false,
            )
            .await;
        codes.push(r.status.as_u16());
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            assert!(r.headers.contains_key(header::RETRY_AFTER));
        }
    }
    // Five free failures, then waits (1 s, then 2 s: a very slow machine may let one more
    // attempt through after the first wait).
    assert_eq!(codes[..5], [401; 5], "{codes:?}");
    assert!(codes[5..].contains(&429), "{codes:?}");
    // Even the right password waits.
    let r = f
        .send(
            Method::POST,
            "/api/auth/login",
            Some(json!({"password": PASSWORD})),
            false,
        )
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
}

/// Every route and method that could change state, plus paths that do not exist: none may do
/// anything without a session, without the CSRF token, or from another origin.
#[tokio::test]
async fn no_route_changes_state_without_session_and_csrf() {
    let f = Fixture::logged_in(Some(CONFIG)).await;
    let before_config = std::fs::read_to_string(f.config_path()).unwrap();
    let before_admin = std::fs::read_to_string(f.dir.path().join("web/admin.json")).unwrap();
    let body = json!({"name": "evil", "host": "127.0.0.66", "probes": ["ping"],
                      "password": "attacker password!", "current": PASSWORD, "new": "attacker password!",
                      "allowed_hosts": ["*"]});
    let mut routes: Vec<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.replace("{name}", "loop")))
        .collect();
    // The daemon's own endpoints and made-up ones: the rule is global, not per route.
    for (m, p) in [
        ("POST", "/-/reload"),
        ("POST", "/api/identify"),
        ("POST", "/metrics"),
        ("DELETE", "/api/status"),
        ("PATCH", "/api/targets/loop"),
        ("PUT", "/no/such/route"),
        ("POST", "/"),
    ] {
        routes.push((m.into(), p.into()));
    }
    let mut checked = 0;
    for (m, p) in &routes {
        let method: Method = m.parse().unwrap();
        if matches!(method, Method::GET | Method::HEAD) {
            continue;
        }
        let sessionless = p == "/api/auth/setup" || p == "/api/auth/login";
        let send = |session: bool, csrf: bool, origin: Option<&'static str>| {
            let mut b = f
                .builder(method.clone(), p, session, csrf)
                .header(header::CONTENT_TYPE, "application/json");
            if let Some(o) = origin {
                b = b.header(header::ORIGIN, o);
            }
            b.body(Body::from(body.to_string())).unwrap()
        };
        if !sessionless {
            let r = f.raw(send(false, false, None)).await;
            assert_eq!(
                r.status,
                StatusCode::UNAUTHORIZED,
                "{m} {p} without session: {}",
                r.text
            );
            let r = f.raw(send(true, false, None)).await;
            assert_eq!(
                r.status,
                StatusCode::FORBIDDEN,
                "{m} {p} without CSRF token: {}",
                r.text
            );
            let r = f.raw(send(false, true, None)).await;
            assert_eq!(
                r.status,
                StatusCode::UNAUTHORIZED,
                "{m} {p} token without session: {}",
                r.text
            );
        }
        let r = f.raw(send(true, true, Some("http://evil.example"))).await;
        assert_eq!(
            r.status,
            StatusCode::FORBIDDEN,
            "{m} {p} cross-origin: {}",
            r.text
        );
        let mut req = send(true, true, None);
        req.headers_mut()
            .insert("sec-fetch-site", "cross-site".parse().unwrap());
        let r = f.raw(req).await;
        assert_eq!(
            r.status,
            StatusCode::FORBIDDEN,
            "{m} {p} cross-site: {}",
            r.text
        );
        checked += 1;
    }
    assert!(checked >= 16, "{checked}");
    assert_eq!(
        std::fs::read_to_string(f.config_path()).unwrap(),
        before_config
    );
    assert_eq!(
        std::fs::read_to_string(f.dir.path().join("web/admin.json")).unwrap(),
        before_admin
    );
    assert!(!f.dir.path().join("web/settings.json").exists());
    assert_eq!(f.web.state.configs.in_effect().targets.len(), 1);
    // The session still works after all that.
    assert_eq!(f.get("/api/status").await.status, StatusCode::OK);
}

#[tokio::test]
async fn targets_crud_saves_atomically_with_backup_and_hot_reloads() {
    let f = Fixture::logged_in(Some(CONFIG)).await;
    let list = f.get("/api/targets").await;
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(list.body["running_matches_file"], true);
    assert_eq!(list.body["targets"][0]["raw"]["name"], "loop");
    assert_eq!(list.body["targets"][0]["effective"]["probes"][0][0], "ping");
    // Every option resolved, under its kind's name.
    let ping = &list.body["targets"][0]["effective"]["modules"]["ping"];
    assert!(ping["packets"].is_number(), "{ping}");
    let rev = list.body["revision"].as_str().unwrap().to_string();

    let t = json!({"name": "gw", "host": "127.0.0.1", "probes": ["ping"], "interval": "10s",
                   "labels": {"site": "lab"}, "ping": {"packets": 3, "spacing": "200ms", "dscp": null}});
    let mut b = f.builder(Method::POST, "/api/targets", true, true);
    b = b
        .header(header::IF_MATCH, format!("\"{rev}\""))
        .header(header::CONTENT_TYPE, "application/json");
    let r = f.raw(b.body(Body::from(t.to_string())).unwrap()).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let cfg = f.web.state.configs.in_effect();
    let gw = cfg.target("gw").expect("reloaded");
    assert_eq!(
        gw.options_or_default::<vantage_core::PingOptions>().packets,
        3
    );
    assert_eq!(gw.probes[0].1, Duration::from_secs(10));
    let text = std::fs::read_to_string(f.config_path()).unwrap();
    assert!(text.starts_with("# Hand-written header comment."), "{text}");
    assert!(text.contains("site = \"lab\""), "{text}");
    let bak = f.dir.path().join("vantage.toml.bak");
    assert_eq!(std::fs::read_to_string(&bak).unwrap(), CONFIG);
    // The running target "loop" was not restarted: same Arc in the runner means unchanged;
    // here the config says so.
    assert!(f.web.state.configs.in_effect().target("loop").is_some());

    // A stale revision is refused.
    let mut b = f.builder(Method::POST, "/api/targets", true, true);
    b = b
        .header(header::IF_MATCH, format!("\"{rev}\""))
        .header(header::CONTENT_TYPE, "application/json");
    let r = f
        .raw(
            b.body(Body::from(
                json!({"name": "x", "host": "127.0.0.3", "probes": ["ping"]}).to_string(),
            ))
            .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED, "{}", r.text);

    // Edit, rename included.
    let t2 = json!({"name": "gateway", "host": "127.0.0.254", "probes": ["ping"]});
    let r = f.send(Method::PUT, "/api/targets/gw", Some(t2), true).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let cfg = f.web.state.configs.in_effect();
    assert!(cfg.target("gw").is_none());
    assert_eq!(
        cfg.target("gateway").unwrap().host.to_string(),
        "127.0.0.254"
    );
    assert_eq!(
        cfg.target("gateway").unwrap().probes[0].1,
        Duration::from_secs(5)
    );

    let r = f
        .send(Method::DELETE, "/api/targets/gateway", None, true)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(f.web.state.configs.in_effect().target("gateway").is_none());
    let r = f
        .send(Method::DELETE, "/api/targets/gateway", None, true)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = f
        .send(
            Method::PUT,
            "/api/targets/nope",
            Some(json!({"name": "nope", "host": "127.0.0.1", "probes": ["ping"]})),
            true,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn validation_speaks_check_config_field_by_field() {
    let f = Fixture::logged_in(Some(CONFIG)).await;
    let before = std::fs::read_to_string(f.config_path()).unwrap();
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            json!({"name": "a", "host": "127.0.0.1; rm -rf /", "probes": ["ping"]}),
            "host",
            "",
        ),
        (
            json!({"name": "a", "host": "$(reboot)", "probes": ["ping"]}),
            "host",
            "",
        ),
        (
            json!({"name": "a", "host": "`id`", "probes": ["ping"]}),
            "host",
            "",
        ),
        (
            json!({"name": "a", "host": "-oProxyCommand=x", "probes": ["ping"]}),
            "host",
            "",
        ),
        (
            json!({"name": "a b;c", "host": "127.0.0.1", "probes": ["ping"]}),
            "name",
            "",
        ),
        (
            json!({"name": "ünïcödé☃", "host": "127.0.0.1", "probes": ["ping"]}),
            "name",
            "",
        ),
        (
            json!({"name": "a", "host": "ünïcödé.example", "probes": ["ping"]}),
            "host",
            "",
        ),
        (
            json!({"name": "a", "host": "127.0.0.1", "probes": ["ping"], "ping": {"packets": -1}}),
            "ping.packets",
            "between 1 and 100",
        ),
        (
            json!({"name": "a", "host": "127.0.0.1", "probes": ["ping"], "ping": {"size": 1e12}}),
            "ping.size",
            "",
        ),
        (
            json!({"name": "a", "host": "127.0.0.1", "probes": ["ping"], "interval": "-5s"}),
            "interval",
            "negative",
        ),
        (
            json!({"name": "a", "host": "127.0.0.1", "probes": ["ping"], "interval": 5}),
            "interval",
            "",
        ),
        (
            json!({"name": "a", "host": "127.0.0.1", "probes": []}),
            "probes",
            "",
        ),
        (
            json!({"name": "a", "host": "127.0.0.1", "probes": ["telnet"]}),
            "probes",
            "unknown probe",
        ),
        (
            json!({"name": "a", "host": "127.0.0.1", "probes": ["ping"], "ping": {"ttl": 99999999999_i64}}),
            "ping.ttl",
            "",
        ),
        (
            json!({"name": "loop", "host": "127.0.0.1", "probes": ["ping"]}),
            "name",
            "unique",
        ),
        (
            json!({"name": "a", "host": "127.0.0.1", "probes": ["ping"], "labels": {"target": "x"}}),
            "labels.target",
            "",
        ),
        (json!({"host": "127.0.0.1", "probes": ["ping"]}), "", "name"),
        (json!([1, 2, 3]), "", "object"),
        (json!("just a string"), "", "object"),
    ];
    for (body, field, contains) in cases {
        let r = f
            .send(Method::POST, "/api/targets", Some(body.clone()), true)
            .await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {}",
            r.text
        );
        let errs = field_errors(&r);
        assert!(
            errs.iter()
                .any(|(fl, m)| fl == field && m.contains(contains)),
            "{body}: expected {field:?} ~ {contains:?}, got {errs:?}"
        );
        // "Test now" validates the same way (a duplicate name is fine for a one-off test).
        if !contains.contains("unique") {
            let r = f
                .send(Method::POST, "/api/targets/test", Some(body.clone()), true)
                .await;
            assert!(r.status.is_client_error(), "{body}: {}", r.text);
        }
    }
    // Malformed requests.
    let huge = "x".repeat(super::api::MAX_BODY + 1);
    let r = f
        .send(
            Method::POST,
            "/api/targets",
            Some(json!({"name": huge})),
            true,
        )
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.text);
    let b = f
        .builder(Method::POST, "/api/targets", true, true)
        .header(header::CONTENT_TYPE, "application/json");
    let r = f.raw(b.body(Body::from("{\"name\": ")).unwrap()).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let deep = "[".repeat(10_000) + &"]".repeat(10_000);
    let b = f
        .builder(Method::POST, "/api/targets", true, true)
        .header(header::CONTENT_TYPE, "application/json");
    let r = f.raw(b.body(Body::from(deep)).unwrap()).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let b = f
        .builder(Method::POST, "/api/targets", true, true)
        .header(header::CONTENT_TYPE, "text/plain");
    let r = f.raw(b.body(Body::from("name=a")).unwrap()).await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let r = f
        .send(
            Method::PUT,
            "/api/targets/%00%2F..%2Fetc",
            Some(json!({"name": "a", "host": "127.0.0.1", "probes": ["ping"]})),
            true,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    let r = f.get("/api/history?target=loop&probe=rm%20-rf").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = f.get("/api/history?target=loop&minutes=-1").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(std::fs::read_to_string(f.config_path()).unwrap(), before);
    assert!(!f.dir.path().join("vantage.toml.bak").exists());
}

#[tokio::test]
async fn first_save_on_the_embedded_config_creates_the_data_dir_file() {
    let f = Fixture::logged_in(None).await;
    let list = f.get("/api/targets").await;
    assert_eq!(list.body["embedded"], true);
    let embedded = f.web.state.configs.in_effect().targets.len();
    assert!(embedded > 0);
    assert!(!f.config_path().exists());
    let r = f
        .send(
            Method::POST,
            "/api/targets",
            Some(json!({"name": "gw", "host": "127.0.0.1", "probes": ["ping"]})),
            true,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let text = std::fs::read_to_string(f.config_path()).unwrap();
    // The embedded file, comments and all, plus the new target.
    assert!(text.contains("# Vantage configuration."), "{text}");
    assert_eq!(f.web.state.configs.in_effect().targets.len(), embedded + 1);
    let list = f.get("/api/targets").await;
    assert_eq!(list.body["embedded"], false);
    // A restart (a fresh load of the same source) keeps the saved file.
    assert_eq!(
        f.web.state.source.load().unwrap().targets.len(),
        embedded + 1
    );
}

#[tokio::test]
async fn first_save_on_the_packaged_default_starts_from_its_text() {
    let packaged = format!("# packaged default\n{CONFIG}");
    let f = Fixture::with_default(None, Some(&packaged))
        .await
        .log_in()
        .await;
    let default = f.dir.path().join("packaged.toml");
    let list = f.get("/api/targets").await;
    assert_eq!(list.body["embedded"], false);
    assert_eq!(list.body["default"], default.display().to_string());
    let running = f.web.state.configs.in_effect().targets.len();
    assert_eq!(
        running,
        crate::config::parse(CONFIG, "t").unwrap().targets.len()
    );
    let r = f
        .send(
            Method::POST,
            "/api/targets",
            Some(json!({"name": "gw2", "host": "127.0.0.1", "probes": ["ping"]})),
            true,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    // The saved file is the default's text plus the new target; the default is untouched.
    let text = std::fs::read_to_string(f.config_path()).unwrap();
    assert!(text.starts_with("# packaged default\n"), "{text}");
    assert_eq!(std::fs::read_to_string(&default).unwrap(), packaged);
    assert_eq!(f.web.state.configs.in_effect().targets.len(), running + 1);
    let list = f.get("/api/targets").await;
    assert_eq!(list.body["default"], Value::Null);
    // From now on the data directory's file runs, whatever happens to the default.
    std::fs::write(&default, "not = [valid").unwrap();
    assert_eq!(
        f.web.state.source.load().unwrap().targets.len(),
        running + 1
    );
}

#[tokio::test]
async fn hand_edits_are_shown_and_reloaded() {
    let f = Fixture::logged_in(Some(CONFIG)).await;
    std::fs::write(
        f.config_path(),
        format!(
            "{CONFIG}\n[[targets]]\nname = \"hand\"\nhost = \"127.0.0.9\"\nprobes = [\"ping\"]\n"
        ),
    )
    .unwrap();
    let list = f.get("/api/targets").await;
    assert_eq!(list.body["running_matches_file"], false);
    assert_eq!(list.body["targets"][1]["raw"]["name"], "hand");
    assert!(list.body["targets"][1]["effective"].is_null());
    let r = f.send(Method::POST, "/api/reload", None, true).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(f.web.state.configs.in_effect().target("hand").is_some());
    // A broken hand edit: shown with its line, reload refused, running config kept.
    std::fs::write(f.config_path(), "[[targets]]\nname = \"x\"\nhost = \"127.0.0.1\"\nprobes = [\"ping\"]\nping = { packets = 0 }\n").unwrap();
    let c = f.get("/api/config").await;
    assert!(c.body["errors"][0]["line"].as_u64().is_some(), "{}", c.text);
    let r = f.send(Method::POST, "/api/reload", None, true).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(field_errors(&r)[0].1.contains("packets"), "{}", r.text);
    assert!(f.web.state.configs.in_effect().target("hand").is_some());
    // Editing another target of a broken file reports the file's own error, not the form's.
    let r = f
        .send(
            Method::POST,
            "/api/targets",
            Some(json!({"name": "gw", "host": "127.0.0.1", "probes": ["ping"]})),
            true,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        field_errors(&r)
            .iter()
            .any(|(fl, m)| fl.starts_with("file:targets[0]") && m.starts_with("line ")),
        "{}",
        r.text
    );
}

#[tokio::test]
async fn host_header_allow_list_blocks_rebinding() {
    let f = Fixture::new(Some(CONFIG)).await;
    for path in ["/", "/app.js", "/api/auth/state", "/api/samples?target=x"] {
        let req = Request::builder()
            .uri(path)
            .header(header::HOST, "attacker.example.com")
            .body(Body::empty())
            .unwrap();
        let r = f.raw(req).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}");
        let req = Request::builder().uri(path).body(Body::empty()).unwrap();
        assert_eq!(f.raw(req).await.status, StatusCode::BAD_REQUEST, "{path}");
    }
    // The scrape endpoints answer under any name Prometheus uses for the device; their
    // protection is the scrape credentials (tested below) and the /probe allow-list.
    for path in ["/metrics", "/-/healthy", "/-/ready"] {
        let req = Request::builder()
            .uri(path)
            .header(header::HOST, "probe1.corp.example.net:9430")
            .body(Body::empty())
            .unwrap();
        assert_eq!(f.raw(req).await.status, StatusCode::OK, "{path}");
    }
    // Unsafe methods on them still go through the page's rules.
    let req = Request::builder()
        .method(Method::POST)
        .uri("/-/reload")
        .header(header::HOST, "attacker.example.com")
        .body(Body::empty())
        .unwrap();
    assert_eq!(f.raw(req).await.status, StatusCode::FORBIDDEN);
    // Setup through a rebinding name cannot grab a fresh device.
    let req = Request::builder()
        .method(Method::POST)
        .uri("/api/auth/setup")
        .header(header::HOST, "attacker.example.com")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(json!({"password": PASSWORD}).to_string()))
        .unwrap();
    assert_eq!(f.raw(req).await.status, StatusCode::FORBIDDEN);
    assert!(!f.web.auth.is_set_up());
    let req = Request::builder()
        .uri("/metrics")
        .header(header::HOST, "vantage.local:9430")
        .body(Body::empty())
        .unwrap();
    assert_eq!(f.raw(req).await.status, StatusCode::OK);
}

#[tokio::test]
async fn settings_protect_scrapes_and_restrict_probe() {
    let f = Fixture::logged_in(Some(CONFIG)).await;
    assert_eq!(f.get("/metrics").await.status, StatusCode::OK);
    let r = f
        .send(
            Method::PUT,
            "/api/settings",
            Some(json!({"scrape_auth": {"mode": "bearer", "token": "short"}})),
            true,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(field_errors(&r)[0].0, "scrape_auth.token");
    let token = "s3cret-token-for-prometheus";
    let r = f
        .send(
            Method::PUT,
            "/api/settings",
            Some(json!({"scrape_auth": {"mode": "bearer", "token": token},
        "probe_allowlist": ["192.0.2.0/24", "@targets"], "allowed_hosts": ["*.example.net"]})),
            true,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(!r.text.contains(token), "secret echoed: {}", r.text);
    for path in ["/metrics", "/-/healthy", "/probe?target=127.0.0.1"] {
        assert_eq!(f.get(path).await.status, StatusCode::UNAUTHORIZED, "{path}");
        let req = f
            .builder(Method::GET, path, false, false)
            .header(header::AUTHORIZATION, "Bearer wrong-token-wrong-token")
            .body(Body::empty())
            .unwrap();
        assert_eq!(f.raw(req).await.status, StatusCode::UNAUTHORIZED, "{path}");
    }
    let with_token = |path: &str| {
        f.builder(Method::GET, path, false, false)
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(f.raw(with_token("/metrics")).await.status, StatusCode::OK);
    // /probe only reaches allowed targets: an open /probe is an SSRF tool.
    let r = f.raw(with_token("/probe?target=198.51.100.7")).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let r = f
        .raw(with_token("/probe?target=metadata.example.com"))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    // 127.0.0.1 is a configured target ("@targets").
    let r = f
        .raw(with_token("/probe?target=127.0.0.1&module=ping"))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // A target written HOST:PORT is judged by its host.
    for t in [
        "198.51.100.7:22",
        "[2001:db8::7]:443",
        "metadata.example.com:80",
    ] {
        let r = f
            .raw(with_token(&format!("/probe?module=tcp&target={t}")))
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{t}: {}", r.text);
    }
    let r = f
        .raw(with_token("/probe?module=tcp&target=192.0.2.9:0"))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    // The bearer token may also trigger a reload (Prometheus lifecycle style).
    let req = f
        .builder(Method::POST, "/-/reload", false, false)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(f.raw(req).await.status, StatusCode::OK);
    // The extra host name now passes the Host check.
    let req = Request::builder()
        .uri("/-/ready")
        .header(header::HOST, "probe1.example.net")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(f.raw(req).await.status, StatusCode::OK);
    // An empty token keeps the stored one; basic auth works too.
    let r = f.send(Method::PUT, "/api/settings", Some(json!({"scrape_auth": {"mode": "basic", "username": "prom", "password": "basic password 1"}})), true).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let req = f
        .builder(Method::GET, "/metrics", false, false)
        .header(header::AUTHORIZATION, "Basic cHJvbTpiYXNpYyBwYXNzd29yZCAx")
        .body(Body::empty())
        .unwrap();
    assert_eq!(f.raw(req).await.status, StatusCode::OK);
    // That PUT left out the allow-lists: they are kept, not emptied.
    let g = f.get("/api/settings").await;
    assert_eq!(
        g.body["probe_allowlist"],
        json!(["192.0.2.0/24", "@targets"]),
        "{}",
        g.text
    );
    assert_eq!(
        g.body["allowed_hosts"],
        json!(["*.example.net"]),
        "{}",
        g.text
    );
    let req = f
        .builder(Method::GET, "/probe?target=198.51.100.7", false, false)
        .header(header::AUTHORIZATION, "Basic cHJvbTpiYXNpYyBwYXNzd29yZCAx")
        .body(Body::empty())
        .unwrap();
    assert_eq!(f.raw(req).await.status, StatusCode::FORBIDDEN);
    let r = f.get("/metrics").await;
    assert!(
        r.headers[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .starts_with("Basic")
    );
    let r = f
        .send(
            Method::PUT,
            "/api/settings",
            Some(json!({"scrape_auth": {"mode": "telnet"}})),
            true,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = f
        .send(
            Method::PUT,
            "/api/settings",
            Some(json!({"nonsense": 1})),
            true,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn password_change_ends_other_sessions() {
    let mut f = Fixture::logged_in(Some(CONFIG)).await;
    let old_cookie = f.cookie.clone();
    let r = f
        .send(
            Method::POST,
            "/api/auth/password",
            Some(json!({"current": "wrong one!!", "new": "brand new password"})),
            true,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(field_errors(&r)[0].0, "current");
    let r = f
        .send(
            Method::POST,
            "/api/auth/password",
            Some(json!({"current": PASSWORD, "new": "short"})),
            true,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(field_errors(&r)[0].0, "new");
    let r = f
        .send(
            Method::POST,
            "/api/auth/password",
            Some(json!({"current": PASSWORD, "new": "brand new password"})),
            true,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    f.take_session(&r);
    assert_eq!(f.get("/api/status").await.status, StatusCode::OK);
    f.cookie = old_cookie;
    assert_eq!(f.get("/api/status").await.status, StatusCode::UNAUTHORIZED);
    let r = f
        .send(
            Method::POST,
            "/api/auth/login",
            Some(json!({"password": "brand new password"})),
            false,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn status_shows_latest_results_and_history() {
    let f = Fixture::logged_in(Some(CONFIG)).await;
    let now = SystemTime::now();
    for i in 0..3u64 {
        f.history.record(&Sample {
            target: "loop".into(),
            probe: ProbeKind::PING,
            timestamp: now - Duration::from_secs(120 - i * 60),
            duration: Duration::from_millis(3),
            success: i != 1,
            error: None,
            measurement: Measurement::from(PingReport {
                address: Some("127.0.0.1".parse().unwrap()),
                sent: 1,
                received: u32::from(i != 1),
                rtts: if i != 1 {
                    vec![Duration::from_micros(1500)]
                } else {
                    vec![]
                },
                ..Default::default()
            }),
            quality: Default::default(),
        });
    }
    let s = f.get("/api/status").await;
    assert_eq!(s.status, StatusCode::OK);
    assert_eq!(s.body["device"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(s.body["store"]["configured"], false);
    let p = &s.body["targets"][0]["probes"][0];
    assert_eq!(p["probe"], "ping");
    assert_eq!(p["interval_seconds"], 5.0);
    assert!(p["latest"]["success"].is_boolean(), "{}", s.text);
    assert!(p["history"].as_array().unwrap().len() >= 2, "{}", s.text);
    let h = f.get("/api/history?target=loop&probe=ping&minutes=5").await;
    assert_eq!(h.status, StatusCode::OK);
    assert!(!h.body["points"].as_array().unwrap().is_empty());
    assert_eq!(
        f.get("/api/history?target=nope").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn test_now_runs_the_probe_without_saving() {
    let f = Fixture::logged_in(Some(CONFIG)).await;
    let before = std::fs::read_to_string(f.config_path()).unwrap();
    let r = f.send(Method::POST, "/api/targets/test", Some(json!({"name": "try", "host": "127.0.0.1", "probes": ["ping"], "ping": {"packets": 2, "spacing": "10ms"}})), true).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let res = &r.body["results"][0];
    assert_eq!(res["probe"], "ping");
    assert_eq!(res["sent"], 2);
    if nix_root() {
        assert_eq!(res["success"], true, "{}", r.text);
        assert_eq!(res["received"], 2);
    }
    assert_eq!(std::fs::read_to_string(f.config_path()).unwrap(), before);
    assert!(f.web.state.configs.in_effect().target("try").is_none());
}

fn nix_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Every listed route exists (an authorised request is not answered 404/405), so the list the
/// CSRF test walks cannot silently go stale.
#[tokio::test]
async fn every_listed_route_is_routed() {
    let cfg =
        format!("{CONFIG}\n[[remote_write]]\nname = \"loop\"\nurl = \"http://127.0.0.1:9/w\"\n");
    let f = Fixture::logged_in(Some(&cfg)).await;
    for (m, p) in ROUTES {
        if p.contains("logout") || p.contains("setup") || p.contains("password") {
            continue;
        }
        let r = f
            .send(
                m.parse().unwrap(),
                &p.replace("{name}", "loop"),
                Some(json!({})),
                true,
            )
            .await;
        assert!(
            r.status != StatusCode::NOT_FOUND && r.status != StatusCode::METHOD_NOT_ALLOWED,
            "{m} {p}: {} {}",
            r.status,
            r.text
        );
    }
}

/// The daemon started without extra observers (as other front ends do) still serves the page.
#[tokio::test]
async fn page_works_on_a_daemon_without_history_observer() {
    let dir = TempDir::new("plain");
    let source = ConfigSource::Embedded;
    let state = crate::apply::state_of(source);
    let web = Web::open_with(
        state,
        dir.path(),
        Arc::new(MemoryHistory::default()),
        HashParams::TEST,
    )
    .unwrap();
    let req = Request::builder()
        .uri("/api/auth/state")
        .header(header::HOST, "localhost")
        .body(Body::empty())
        .unwrap();
    let resp = super::app(web.clone()).oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // Nowhere to save: a clear 409, not a crash.
    let (token, s) = web.auth.open_session();
    let req = Request::builder()
        .method(Method::POST)
        .uri("/api/targets")
        .header(header::HOST, "localhost")
        .header(header::COOKIE, format!("vantage_session={token}"))
        .header("x-csrf-token", s.csrf)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            json!({"name": "a", "host": "127.0.0.1", "probes": ["ping"]}).to_string(),
        ))
        .unwrap();
    let resp = super::app(web).oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::CONFLICT);
}

#[tokio::test]
async fn reload_endpoint_is_open_to_the_device_itself_only() {
    use axum::extract::ConnectInfo;
    use std::net::SocketAddr;
    let f = Fixture::logged_in(Some(CONFIG)).await;
    let from = |ip: &str, origin: Option<&str>| {
        let mut b = f.builder(Method::POST, "/-/reload", false, false);
        if let Some(o) = origin {
            b = b.header(header::ORIGIN, o);
        }
        let mut req = b.body(Body::empty()).unwrap();
        let addr: SocketAddr = format!("{ip}:40000").parse().unwrap();
        req.extensions_mut().insert(ConnectInfo(addr));
        req
    };
    assert_eq!(f.raw(from("127.0.0.1", None)).await.status, StatusCode::OK);
    assert_eq!(f.raw(from("[::1]", None)).await.status, StatusCode::OK);
    // `curl localhost` to the default `[::]` listener over IPv4.
    assert_eq!(
        f.raw(from("[::ffff:127.0.0.1]", None)).await.status,
        StatusCode::OK
    );
    assert_eq!(
        f.raw(from("[::ffff:198.51.100.4]", None)).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        f.raw(from("198.51.100.4", None)).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        f.raw(from("127.0.0.1", Some("http://evil.example")))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    // Identify and the LED state are device-local operations too.
    let mut req = from("127.0.0.1", None);
    *req.uri_mut() = "/api/identify?seconds=1".parse().unwrap();
    assert_eq!(f.raw(req).await.status, StatusCode::OK);
    let mut req = from("198.51.100.4", None);
    *req.uri_mut() = "/api/identify?seconds=1".parse().unwrap();
    assert_eq!(f.raw(req).await.status, StatusCode::UNAUTHORIZED);
    let mut req = from("127.0.0.1", None);
    *req.uri_mut() = "/api/leds".parse().unwrap();
    *req.method_mut() = Method::GET;
    assert_eq!(f.raw(req).await.status, StatusCode::OK);
    let mut req = from("198.51.100.4", None);
    *req.uri_mut() = "/api/leds".parse().unwrap();
    *req.method_mut() = Method::GET;
    assert_eq!(f.raw(req).await.status, StatusCode::UNAUTHORIZED);
    // Others want a session from loopback too.
    let mut req = f
        .builder(Method::POST, "/api/reload", false, false)
        .body(Body::empty())
        .unwrap();
    req.extensions_mut()
        .insert(ConnectInfo("127.0.0.1:4000".parse::<SocketAddr>().unwrap()));
    assert_eq!(f.raw(req).await.status, StatusCode::UNAUTHORIZED);
}

/// Random JSON of every shape to every route, logged in and not: never a 5xx or a panic, and
/// nothing but valid targets reach the file.
#[tokio::test]
async fn random_bodies_never_cause_server_errors() {
    let f = Fixture::logged_in(Some(CONFIG)).await;
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    const STRINGS: &[&str] = &[
        "",
        "ping",
        "127.0.0.1",
        "::1",
        "a;b",
        "$(id)",
        "`id`",
        "|nc -e sh",
        "\0",
        "\u{202e}evil",
        "☃",
        "-1",
        "1e309",
        "5s",
        "-5s",
        "24h1s",
        "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        "yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy",
        "../../etc/passwd",
        "name",
        "host",
        "probes",
        "ping",
        "labels",
        "interval",
        "auto",
        "ipv7",
    ];
    fn value(next: &mut dyn FnMut() -> u64, depth: u32) -> Value {
        match next() % if depth > 3 { 5 } else { 7 } {
            0 => Value::Null,
            1 => json!(next() & 1 == 0),
            2 => json!((next() as i64) >> (next() % 64)),
            3 => json!(f64::from_bits(next()).clamp(-1e300, 1e300)),
            4 => json!(STRINGS[(next() % STRINGS.len() as u64) as usize]),
            5 => Value::Array((0..next() % 4).map(|_| value(next, depth + 1)).collect()),
            _ => {
                let keys = [
                    "name",
                    "host",
                    "probes",
                    "interval",
                    "labels",
                    "ping",
                    "packets",
                    "spacing",
                    "timeout",
                    "size",
                    "ttl",
                    "tos",
                    "dscp",
                    "source",
                    "ip_protocol",
                    "password",
                    "current",
                    "new",
                    "scrape_auth",
                    "mode",
                    "token",
                    "allowed_hosts",
                    "probe_allowlist",
                    "zzz",
                ];
                Value::Object(
                    (0..next() % 6)
                        .map(|_| {
                            (
                                keys[(next() % keys.len() as u64) as usize].to_string(),
                                value(next, depth + 1),
                            )
                        })
                        .collect(),
                )
            }
        }
    }
    let mut statuses = std::collections::BTreeMap::new();
    for i in 0..400 {
        let (m, p) = ROUTES[i % ROUTES.len()];
        if p.contains("logout") || p.contains("password") {
            continue; // would end the session the rest of the loop needs
        }
        let body = if i.is_multiple_of(3) {
            json!({"name": format!("fz{i}"), "host": "127.0.0.1", "probes": ["ping"], "ping": value(&mut next, 1)})
        } else {
            value(&mut next, 0)
        };
        let r = f
            .send(
                m.parse().unwrap(),
                &p.replace("{name}", "loop"),
                Some(body),
                i % 7 != 0,
            )
            .await;
        *statuses.entry(r.status.as_u16()).or_insert(0) += 1;
    }
    // Whatever was accepted is a valid file.
    let text = std::fs::read_to_string(f.config_path()).unwrap();
    crate::config::parse(&text, "after fuzz").unwrap();
    assert!(statuses.keys().all(|s| *s < 500), "{statuses:?}");
    assert!(statuses.len() > 3, "{statuses:?}");
}

/// The page loads nothing from elsewhere (the device may have no internet).
#[test]
fn assets_are_self_contained() {
    for (name, text) in [
        ("index.html", include_str!("../../../../web/index.html")),
        ("app.js", include_str!("../../../../web/app.js")),
        ("app.css", include_str!("../../../../web/app.css")),
    ] {
        for line in text.lines() {
            let external =
                line.contains("//") && (line.contains("http://") || line.contains("https://"));
            // The SVG namespace is an identifier, not a fetch; a link built on the page's own
            // host name (another port of the device) is not elsewhere.
            assert!(
                !external
                    || line.contains("http://www.w3.org/2000/svg")
                    || line.contains("://${location.hostname}:"),
                "{name}: {line}"
            );
            assert!(!line.contains("innerHTML"), "{name}: {line}");
        }
    }
}

/// One HTTP/1.1 request over TLS to `addr`, trusting only `cert_pem`.
async fn https_request(
    addr: std::net::SocketAddr,
    cert_pem: &[u8],
    req: &str,
) -> std::io::Result<String> {
    use rustls::pki_types::pem::PemObject;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(cert_pem) {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await?;
    tls.write_all(req.as_bytes()).await?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut out))
        .await
        .map_err(|_| std::io::Error::other("timeout"))?
        .or_else(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                Ok(0)
            } else {
                Err(e)
            }
        })?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[tokio::test]
async fn https_with_a_generated_then_an_uploaded_certificate() {
    let f = Fixture::logged_in(Some(CONFIG)).await;
    let r = f.get("/api/tls").await;
    assert!(r.body["listening"].is_null(), "{}", r.text);
    let r = f
        .send(
            Method::PUT,
            "/api/settings",
            Some(json!({"https_listen": "not an address"})),
            true,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(field_errors(&r)[0].0, "https_listen");
    let r = f
        .send(
            Method::PUT,
            "/api/settings",
            Some(json!({"https_listen": "127.0.0.1:0"})),
            true,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let info = f.get("/api/tls").await.body;
    let addr: std::net::SocketAddr = info["listening"].as_str().unwrap().parse().unwrap();
    assert_eq!(info["self_signed"], true);
    let tls_dir = f.dir.path().join("web/tls");
    let cert = std::fs::read(tls_dir.join("cert.pem")).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(tls_dir.join("key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // The same page and API over HTTPS; the login cookie is Secure there.
    let body = json!({"password": PASSWORD}).to_string();
    let resp = https_request(addr, &cert, &format!(
        "POST /api/auth/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )).await.unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.to_ascii_lowercase().contains("; secure"), "{resp}");
    // The guard applies there too.
    let resp = https_request(
        addr,
        &cert,
        "GET / HTTP/1.1\r\nHost: evil.example.com\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");

    // The admin's own certificate replaces the generated one for new connections.
    let key = rcgen::KeyPair::generate().unwrap();
    let own = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let r = f
        .send(
            Method::PUT,
            "/api/tls",
            Some(json!({"cert_pem": own.pem(), "key_pem": "garbage"})),
            true,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(field_errors(&r)[0].0, "key_pem", "{}", r.text);
    let r = f
        .send(
            Method::PUT,
            "/api/tls",
            Some(json!({"cert_pem": own.pem(), "key_pem": key.serialize_pem()})),
            true,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["self_signed"], false);
    assert!(
        https_request(
            addr,
            &cert,
            "GET /-/healthy HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        .await
        .is_err(),
        "the old certificate is still served"
    );
    let resp = https_request(
        addr,
        own.pem().as_bytes(),
        "GET /-/healthy HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");

    // Off again: the port closes.
    let r = f
        .send(
            Method::PUT,
            "/api/settings",
            Some(json!({"https_listen": null})),
            true,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(f.get("/api/tls").await.body["listening"].is_null());
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn damaged_credentials_lock_the_page_without_stopping_the_daemon() {
    let dir = TempDir::new("damaged");
    std::fs::create_dir_all(dir.path().join("web")).unwrap();
    std::fs::write(
        dir.path().join("web/admin.json"),
        b"{\"password_hash\": \"not a hash\"}",
    )
    .unwrap();
    std::fs::write(dir.path().join("web/settings.json"), b"{ torn write").unwrap();
    let source = ConfigSource::Embedded;
    let state = crate::apply::state_of(source);
    let web = Web::open_with(
        state,
        dir.path(),
        Arc::new(MemoryHistory::default()),
        HashParams::TEST,
    )
    .unwrap();
    let app = super::app(web);
    let send = |method: Method, path: &str, body: Option<Value>| {
        let b = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "localhost");
        match body {
            Some(v) => b
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(v.to_string())),
            None => b.body(Body::empty()),
        }
        .unwrap()
    };
    let r = app
        .clone()
        .oneshot(send(Method::GET, "/api/auth/state", None))
        .await
        .unwrap();
    let body: Value =
        serde_json::from_slice(&r.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("damaged"),
        "{body}"
    );
    assert_eq!(body["setup_required"], false);
    // Nobody can claim the device by setting a new password, nor log in.
    let r = app
        .clone()
        .oneshot(send(
            Method::POST,
            "/api/auth/setup",
            Some(json!({"password": PASSWORD})),
        ))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let r = app
        .clone()
        .oneshot(send(
            Method::POST,
            "/api/auth/login",
            Some(json!({"password": PASSWORD})),
        ))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    // Scrapes still work (default settings).
    let r = app
        .clone()
        .oneshot(send(Method::GET, "/metrics", None))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

/// With status LEDs configured, the status page shows them (and what they show), and the
/// identify button's endpoint works with a session; a target edit keeps the `[leds]` section.
#[tokio::test]
async fn status_shows_leds_and_edits_keep_other_sections() {
    let cfg = format!("{CONFIG}\n[leds]\nbackend = \"log\"\n");
    let f = Fixture::logged_in(Some(&cfg)).await;
    let s = f.get("/api/status").await;
    assert_eq!(s.body["leds"]["configured"], true, "{}", s.text);
    assert!(
        s.body["leds"]["state"]["leds"]
            .as_array()
            .is_some_and(|l| !l.is_empty()),
        "{}",
        s.text
    );
    let r = f
        .send(Method::POST, "/api/identify?seconds=2", None, true)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = f
        .send(
            Method::POST,
            "/api/targets",
            Some(json!({"name": "gw", "host": "127.0.0.2", "probes": ["ping"]})),
            true,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let text = std::fs::read_to_string(f.config_path()).unwrap();
    assert!(text.contains("[leds]\nbackend = \"log\""), "{text}");
}

/// docs/openapi.yaml documents every route (a route added without its docs fails here).
#[test]
fn openapi_documents_every_route() {
    let spec = include_str!("../../../../docs/openapi.yaml");
    let mut documented = std::collections::BTreeSet::new();
    let mut path = None;
    for line in spec.lines() {
        if let Some(p) = line.strip_prefix("  /").and_then(|l| l.strip_suffix(':')) {
            path = Some(format!("/{p}"));
        } else if !line.starts_with("    ") && !line.trim().is_empty() && !line.starts_with("  /") {
            path = None;
        }
        if let (Some(p), Some(m)) = (
            &path,
            line.strip_prefix("    ").and_then(|l| l.strip_suffix(':')),
        ) && ["get", "post", "put", "delete", "patch"].contains(&m)
        {
            documented.insert((m.to_uppercase(), p.clone()));
        }
    }
    for (m, p) in ROUTES.iter().chain(&[
        ("POST", "/api/identify"),
        ("GET", "/api/leds"),
        ("GET", "/api/provisioning"),
    ]) {
        assert!(
            documented.contains(&(m.to_string(), p.to_string())),
            "{m} {p} is not in docs/openapi.yaml; documented: {documented:?}"
        );
    }
}

#[tokio::test]
async fn a_symlinked_config_is_saved_through_the_link() {
    let dir = TempDir::new("symlink");
    let real = dir.path().join("real.toml");
    std::fs::write(&real, CONFIG).unwrap();
    let link = dir.path().join("vantage.toml");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let source = ConfigSource::File(link.clone());
    let state = crate::apply::state_of(source);
    let web = Web::open_with(
        state,
        dir.path(),
        Arc::new(MemoryHistory::default()),
        HashParams::TEST,
    )
    .unwrap();
    let (token, s) = web.auth.open_session();
    let req = Request::builder()
        .method(Method::POST)
        .uri("/api/targets")
        .header(header::HOST, "localhost")
        .header(header::COOKIE, format!("vantage_session={token}"))
        .header("x-csrf-token", s.csrf)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            json!({"name": "gw", "host": "127.0.0.2", "probes": ["ping"]}).to_string(),
        ))
        .unwrap();
    let resp = super::app(web.clone()).oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(
        std::fs::read_to_string(&real)
            .unwrap()
            .contains("name = \"gw\"")
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("real.toml.bak")).unwrap(),
        CONFIG
    );
    assert!(web.state.configs.in_effect().target("gw").is_some());
}

#[tokio::test]
async fn status_and_targets_report_provisioning() {
    let f = Fixture::logged_in(Some(CONFIG)).await;
    let s = f.get("/api/status").await;
    // Not configured here: no URL, nothing provisioned.
    assert!(s.body["provisioning"]["url"].is_null(), "{}", s.text);
    let t = f.get("/api/targets").await;
    assert_eq!(t.body["provisioned"], json!([]), "{}", t.text);
    assert_eq!(t.body["running_matches_file"], true);
}

#[tokio::test]
async fn dns_targets_validate_and_test_through_the_same_paths() {
    let f = Fixture::logged_in(Some(CONFIG)).await;
    let r = f.send(Method::POST, "/api/targets", Some(json!({"name": "resolver", "host": "127.0.0.1", "probes": ["dns"], "dns": {"type": "BOGUS"}})), true).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    let fields: Vec<_> = field_errors(&r).into_iter().map(|(f, _)| f).collect();
    assert!(fields.iter().any(|f| f.starts_with("dns.")), "{}", r.text);
    // Nothing listens on this loopback port: the probe fails cleanly, with a reason.
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let r = f
        .send(
            Method::POST,
            "/api/targets/test",
            Some(
                json!({"name": "resolver", "host": "127.0.0.1", "probes": ["dns"],
        "dns": {"query": "example.com", "port": port, "timeout": "500ms"}}),
            ),
            true,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let res = &r.body["results"][0];
    assert_eq!(res["probe"], "dns");
    assert_eq!(res["success"], false, "{}", r.text);
    assert!(res["error"].is_string(), "{}", r.text);
    let r = f
        .send(
            Method::POST,
            "/api/targets",
            Some(
                json!({"name": "resolver", "host": "127.0.0.1", "probes": ["dns"],
        "dns": {"query": "example.com", "port": port, "timeout": "1s"}}),
            ),
            true,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert!(
        std::fs::read_to_string(f.config_path())
            .unwrap()
            .contains("query = \"example.com\"")
    );
}

/// Saves are serialised: concurrent adds all land, and the file stays valid.
#[tokio::test]
async fn concurrent_saves_do_not_lose_edits() {
    let f = Arc::new(Fixture::logged_in(Some(CONFIG)).await);
    let mut tasks = Vec::new();
    for i in 0..12 {
        let f = f.clone();
        tasks.push(tokio::spawn(async move {
            let body = json!({"name": format!("c{i}"), "host": format!("127.0.1.{i}"), "probes": ["ping"]});
            f.send(Method::POST, "/api/targets", Some(body), true).await.status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::CREATED);
    }
    let cfg =
        crate::config::parse(&std::fs::read_to_string(f.config_path()).unwrap(), "f").unwrap();
    assert_eq!(cfg.targets.len(), 13);
    assert_eq!(f.web.state.configs.in_effect().targets.len(), 13);
}

/// The message `vantage check-config` gives for `text`, for the field `field`.
fn check_config_message(text: &str, field: &str) -> String {
    let e = crate::config::parse(text, "f").unwrap_err();
    e.errors
        .iter()
        .find(|e| e.field == field)
        .unwrap_or_else(|| panic!("no error on {field}: {e}"))
        .message
        .clone()
}

#[tokio::test]
async fn remote_write_endpoints_are_edited_with_secrets_masked() {
    let f = Fixture::logged_in(Some(CONFIG)).await;
    const TOKEN: &str = "tok-secret-0123456789";
    let ep = json!({"name": "central", "url": "https://prom.example/api/v1/write",
                    "bearer_token": TOKEN, "labels": {"site": "lab"}});
    let r = f
        .send(Method::POST, "/api/config/remote_write", Some(ep), true)
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["restart_required"], false, "{}", r.text);
    let text = std::fs::read_to_string(f.config_path()).unwrap();
    assert!(text.contains(TOKEN), "{text}");
    assert!(text.starts_with("# Hand-written header comment."), "{text}");
    // Saved with a backup and applied at once.
    let bak = super::config_file::backup_path(&f.config_path());
    assert_eq!(std::fs::read_to_string(bak).unwrap(), CONFIG);
    let running = f.web.state.configs.in_effect();
    assert_eq!(running.remote_write().len(), 1);
    assert_eq!(running.remote_write()[0].name, "central");

    // No GET shows the secret.
    for path in [
        "/api/config/remote_write",
        "/api/config",
        "/api/status",
        "/api/settings",
        "/api/targets",
        "/api/config/store",
    ] {
        let r = f.get(path).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text);
        assert!(
            !r.text.contains(TOKEN),
            "{path} shows the secret: {}",
            r.text
        );
    }
    let g = f.get("/api/config/remote_write").await;
    let e = &g.body["endpoints"][0];
    assert_eq!(e["name"], "central");
    assert_eq!(e["raw"]["bearer_token"], "<secret>");
    assert_eq!(e["raw"]["labels"]["site"], "lab");
    assert_eq!(e["running"], true);
    let rev = g.body["revision"].as_str().unwrap().to_string();

    // The masked value sent back keeps the secret; other fields change; live at once.
    let mut edited = e["raw"].clone();
    edited["timeout"] = json!("10s");
    let req = f
        .builder(Method::PUT, "/api/config/remote_write/central", true, true)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::IF_MATCH, format!("\"{rev}\""))
        .body(Body::from(edited.to_string()))
        .unwrap();
    let r = f.raw(req).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let text = std::fs::read_to_string(f.config_path()).unwrap();
    assert!(
        text.contains(TOKEN) && text.contains("timeout = \"10s\""),
        "{text}"
    );
    assert!(!text.contains("<secret>"), "{text}");
    let running = f.web.state.configs.in_effect();
    assert_eq!(running.remote_write()[0].timeout, Duration::from_secs(10));
    // A stale revision is refused.
    let req = f
        .builder(Method::PUT, "/api/config/remote_write/central", true, true)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::IF_MATCH, format!("\"{rev}\""))
        .body(Body::from(edited.to_string()))
        .unwrap();
    assert_eq!(f.raw(req).await.status, StatusCode::PRECONDITION_FAILED);

    // Validation: the same messages as check-config, next to the fields.
    let bad = json!({"name": "central", "url": "ftp://prom.example/w", "timeout": "-5s",
                     "bearer_token": "another-token"});
    let r = f
        .send(
            Method::PUT,
            "/api/config/remote_write/central",
            Some(bad),
            true,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    let errs = field_errors(&r);
    let as_file = format!(
        "{CONFIG}\n[[remote_write]]\nname = \"central\"\nurl = \"ftp://prom.example/w\"\ntimeout = \"-5s\"\n"
    );
    for field in ["url", "timeout"] {
        let want = check_config_message(&as_file, &format!("remote_write[0].{field}"));
        assert!(
            errs.contains(&(field.to_string(), want.clone())),
            "{field}: want {want:?} in {errs:?}"
        );
    }
    // A dry run validates without saving.
    let before = std::fs::read_to_string(f.config_path()).unwrap();
    let r = f
        .send(
            Method::PUT,
            "/api/config/remote_write/central?dry_run=true",
            Some(json!({"name": "central", "url": "https://prom.example/other", "bearer_token": "<secret>"})),
            true,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["valid"], true);
    assert_eq!(std::fs::read_to_string(f.config_path()).unwrap(), before);
    // The stored token does not follow the URL to another server, saved or dry run.
    for path in [
        "/api/config/remote_write/central?dry_run=true",
        "/api/config/remote_write/central",
    ] {
        let r = f
            .send(
                Method::PUT,
                path,
                Some(json!({"name": "central", "url": "https://evil.example/w", "bearer_token": "<secret>"})),
                true,
            )
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
        let errs = field_errors(&r);
        assert_eq!(errs[0].0, "bearer_token", "{}", r.text);
        assert!(errs[0].1.contains("enter the secret again"), "{}", r.text);
    }
    assert_eq!(std::fs::read_to_string(f.config_path()).unwrap(), before);
    assert!(
        f.web.state.configs.in_effect().remote_write()[0]
            .url
            .contains("prom.example")
    );
    // A mask with no stored secret behind it is refused, not saved as "<secret>".
    let r = f
        .send(
            Method::POST,
            "/api/config/remote_write",
            Some(
                json!({"name": "second", "url": "https://b.example/w", "bearer_token": "<secret>"}),
            ),
            true,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(field_errors(&r)[0].0, "bearer_token", "{}", r.text);
    // Two endpoints of one name: the parser's duplicate rule.
    let r = f
        .send(
            Method::POST,
            "/api/config/remote_write",
            Some(json!({"name": "central", "url": "https://b.example/w"})),
            true,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert!(
        field_errors(&r)
            .iter()
            .any(|(f, m)| f == "name" && m.contains("already used")),
        "{}",
        r.text
    );
    // Hostile input: 4xx, never 5xx, nothing saved.
    for body in [
        json!("https://x.example/"),
        json!([1, 2]),
        json!({"url": 5}),
        json!({"url": "https://x.example/w", "basic_auth": "root"}),
        json!({"url": "https://x.example/w\n[device]\nname = \"pwned\""}),
        json!({"url": "https://x.example/w", "tls": {"ca_file": "../../etc/shadow"}}),
        json!({"url": "https://x.example/w", "labels": {"bad name": "x"}}),
        json!({"url": "https://x.example/w", "max_samples_per_send": 1e300}),
        json!({"url": "https://x.example/w", "zzz": true}),
    ] {
        let r = f
            .send(
                Method::POST,
                "/api/config/remote_write",
                Some(body.clone()),
                true,
            )
            .await;
        assert!(
            r.status.is_client_error(),
            "{body}: {} {}",
            r.status,
            r.text
        );
    }
    assert_eq!(std::fs::read_to_string(f.config_path()).unwrap(), before);
    assert_eq!(
        f.send(Method::DELETE, "/api/config/remote_write/nope", None, true)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let r = f
        .send(
            Method::DELETE,
            "/api/config/remote_write/central",
            None,
            true,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let text = std::fs::read_to_string(f.config_path()).unwrap();
    assert!(!text.contains("remote_write"), "{text}");
    assert!(f.web.state.configs.in_effect().remote_write().is_empty());
}

#[tokio::test]
async fn basic_auth_and_url_passwords_are_masked_and_kept() {
    let cfg = format!(
        "{CONFIG}\n[[remote_write]]\nurl = \"https://u:urlpass77@prom.example/w\"\n# kept\n[remote_write.basic_auth]\nusername = \"me\"\npassword = \"hunter2hunter2\"\n"
    );
    let f = Fixture::logged_in(Some(&cfg)).await;
    let g = f.get("/api/config/remote_write").await;
    assert!(
        !g.text.contains("hunter2") && !g.text.contains("urlpass77"),
        "{}",
        g.text
    );
    let e = &g.body["endpoints"][0];
    assert_eq!(e["name"], "prom.example");
    let mut raw = e["raw"].clone();
    assert_eq!(raw["basic_auth"]["password"], "<secret>");
    raw["basic_auth"]["username"] = json!("you");
    let r = f
        .send(
            Method::PUT,
            "/api/config/remote_write/prom.example",
            Some(raw),
            true,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let text = std::fs::read_to_string(f.config_path()).unwrap();
    assert!(
        text.contains("hunter2hunter2") && text.contains("urlpass77"),
        "{text}"
    );
    assert!(text.contains("\"you\""), "{text}");
    let c = f.web.state.configs.in_effect();
    assert!(matches!(&c.remote_write()[0].auth,
        vantage_store::remote_write::config::Auth::Basic { username, password, .. }
            if username == "you" && password.0 == "hunter2hunter2"));
}

#[tokio::test]
async fn store_and_leds_sections_validate_and_say_when_a_restart_is_needed() {
    let f = Fixture::with_store(TempDir::new("sections"), Some(CONFIG))
        .await
        .log_in()
        .await;
    let g = f.get("/api/config/store").await;
    assert_eq!(g.status, StatusCode::OK, "{}", g.text);
    assert_eq!(g.body["restart_required"], false, "{}", g.text);
    assert_eq!(g.body["running"]["max_size"], "4GiB", "{}", g.text);
    assert!(g.body["stats"]["healthy"].as_bool().unwrap(), "{}", g.text);

    // Out of range: the parser's message on the field.
    let r = f
        .send(
            Method::PUT,
            "/api/config/store",
            Some(json!({"max_size": "1KiB", "max_age": "soon"})),
            true,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    let errs = field_errors(&r);
    let as_file = format!("{CONFIG}\n[store]\nmax_size = \"1KiB\"\nmax_age = \"soon\"\n");
    for field in ["store.max_size", "store.max_age"] {
        let want = check_config_message(&as_file, field);
        assert!(
            errs.contains(&(field.into(), want.clone())),
            "{want:?} in {errs:?}"
        );
    }
    // Saved, reloaded, and honest: the store keeps its old limits until a restart.
    let r = f
        .send(
            Method::PUT,
            "/api/config/store",
            Some(json!({"max_size": "64MiB", "max_age": "2days"})),
            true,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["restart_required"], true, "{}", r.text);
    assert!(r.body["message"].as_str().unwrap().contains("restart"));
    let text = std::fs::read_to_string(f.config_path()).unwrap();
    assert!(
        text.contains("[store]\nmax_size = \"64MiB\"\nmax_age = \"2days\""),
        "{text}"
    );
    assert!(text.starts_with("# Hand-written header comment."), "{text}");
    assert_eq!(f.web.state.configs.own().store().max_bytes, 64 << 20);
    let g = f.get("/api/config/store").await;
    assert_eq!(g.body["restart_required"], true, "{}", g.text);
    assert_eq!(g.body["raw"]["max_size"], "64MiB");
    // Back to the defaults: the section goes, and nothing waits for a restart any more.
    let r = f
        .send(Method::PUT, "/api/config/store", Some(json!({})), true)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["restart_required"], false, "{}", r.text);
    assert!(
        !std::fs::read_to_string(f.config_path())
            .unwrap()
            .contains("[store]")
    );

    // [leds]: per-LED errors by index, `[[leds.led]]` tables in the file, restart needed.
    let r = f
        .send(
            Method::PUT,
            "/api/config/leds",
            Some(json!({"backend": "gpio", "led": [{"role": "health", "pin": 99}, {"role": "nope", "pin": 3}]})),
            true,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    let fields: Vec<String> = field_errors(&r).into_iter().map(|e| e.0).collect();
    assert!(
        fields.contains(&"leds.led[0].pin".to_string()),
        "{fields:?}"
    );
    assert!(
        fields.contains(&"leds.led[1].role".to_string()),
        "{fields:?}"
    );
    let r = f
        .send(
            Method::PUT,
            "/api/config/leds",
            Some(json!({"backend": "log", "led": [{"role": "status", "name": "green"}]})),
            true,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["restart_required"], true, "{}", r.text);
    let text = std::fs::read_to_string(f.config_path()).unwrap();
    assert!(
        text.contains("[leds]\nbackend = \"log\"\n\n[[leds.led]]\nrole = \"status\""),
        "{text}"
    );
    let g = f.get("/api/config/leds").await;
    assert_eq!(g.body["raw"]["led"][0]["role"], "status", "{}", g.text);
    assert_eq!(g.body["running"]["backend"], "none", "{}", g.text);
    // Hostile input never reaches the file or a 5xx.
    for body in [
        json!(null),
        json!("gpio"),
        json!({"backend": {"x": 1}}),
        json!({"led": "all"}),
        json!({"led": [1, 2, 3, 4]}),
        json!({"sysfs_root": "relative/../path"}),
        // The daemon writes brightness and trigger files under it: sysfs only from the page.
        json!({"sysfs_root": "/sys/../etc"}),
        json!({"backend": "sysfs", "sysfs_root": "/tmp"}),
        json!({"identify_timeout": "1e309s"}),
    ] {
        let r = f
            .send(Method::PUT, "/api/config/leds", Some(body.clone()), true)
            .await;
        assert!(
            r.status.is_client_error(),
            "{body}: {} {}",
            r.status,
            r.text
        );
    }
    assert_eq!(std::fs::read_to_string(f.config_path()).unwrap(), text);
}

fn ping_sample(target: &str, at: SystemTime, ok: bool, rtt: Duration) -> Sample {
    Sample {
        target: target.into(),
        probe: ProbeKind::PING,
        timestamp: at,
        duration: rtt,
        success: ok,
        error: (!ok).then_some(vantage_core::ProbeError::Timeout),
        measurement: Measurement::from(PingReport {
            address: Some("127.0.0.1".parse().unwrap()),
            sent: 2,
            received: if ok { 2 } else { 0 },
            rtts: if ok { vec![rtt; 2] } else { vec![] },
            ..Default::default()
        }),
        quality: Default::default(),
    }
}

/// The charts come from the store: a daemon that restarts still shows the hour before.
#[tokio::test]
async fn history_comes_from_the_store_and_survives_a_restart() {
    use vantage_core::Observer;
    let dir = TempDir::new("history");
    let cfg = crate::config::parse(CONFIG, "f").unwrap();
    let now = SystemTime::now();
    {
        let storage = crate::storage::Storage::start(dir.path(), &cfg);
        assert!(storage.store().is_some());
        for m in 1..=30u64 {
            let at = now - Duration::from_secs(m * 60);
            // Every fifth minute fails; RTT 2 ms, or 7 ms twelve minutes ago.
            let rtt = Duration::from_millis(if m == 12 { 7 } else { 2 });
            storage.sample(ping_sample("loop", at, m % 5 != 0, rtt));
        }
        storage.shutdown().await;
    }
    // "Restart": a new daemon on the same data directory, with nothing in memory.
    let f = Fixture::with_store(dir, Some(CONFIG)).await.log_in().await;
    assert!(super::HistorySource::latest(&*f.history, "loop", ProbeKind::PING).is_none());
    let h = f
        .get("/api/history?target=loop&probe=ping&minutes=60")
        .await;
    assert_eq!(h.status, StatusCode::OK, "{}", h.text);
    let points = h.body["points"].as_array().unwrap();
    assert_eq!(points.len(), 30, "{}", h.text);
    let total: u64 = points.iter().map(|p| p["rounds"].as_u64().unwrap()).sum();
    let ok: u64 = points
        .iter()
        .map(|p| p["successes"].as_u64().unwrap())
        .sum();
    assert_eq!((total, ok), (30, 24), "{}", h.text);
    let ten = points
        .iter()
        .find(|p| {
            p["t"].as_u64().unwrap() == super::history::bucket_start(now - Duration::from_secs(720))
        })
        .expect("the point of twelve minutes ago");
    assert!(
        (ten["rtt_ms"].as_f64().unwrap() - 7.0).abs() < 0.01,
        "{ten}"
    );
    assert_eq!(ten["loss"], 0.0, "{ten}");
    let failed = points.iter().filter(|p| p["loss"] == 1.0).count();
    assert_eq!(failed, 6, "{}", h.text);
    // The status page has the same points and a latest result from the store.
    let s = f.get("/api/status").await;
    let p = &s.body["targets"][0]["probes"][0];
    assert_eq!(p["history"].as_array().unwrap().len(), 30, "{}", s.text);
    assert_eq!(p["latest"]["success"], true, "{}", s.text);
    assert!((p["latest"]["rtt_ms"].as_f64().unwrap() - 2.0).abs() < 0.01);
    assert_eq!(s.body["store"]["configured"], true, "{}", s.text);
    // New rounds join the cached ones; the memory's latest (with its address) wins again.
    f.web
        .state
        .storage
        .as_ref()
        .unwrap()
        .sample(ping_sample("loop", now, false, Duration::ZERO));
    f.history
        .record(&ping_sample("loop", now, false, Duration::ZERO));
    let s = f.get("/api/status").await;
    let p = &s.body["targets"][0]["probes"][0];
    assert_eq!(p["history"].as_array().unwrap().len(), 31, "{}", s.text);
    assert_eq!(p["latest"]["success"], false, "{}", s.text);
    assert_eq!(p["latest"]["address"], "127.0.0.1", "{}", s.text);
    // A day back is read from the store too.
    let h = f
        .get("/api/history?target=loop&probe=ping&minutes=1440")
        .await;
    assert_eq!(h.body["points"].as_array().unwrap().len(), 31, "{}", h.text);
}

/// A target's range comes from the store's aggregates: the points hold the rounds that were
/// stored, with their loss and times, and bad ranges or probes are named.
#[tokio::test]
async fn a_targets_range_history_comes_from_the_store() {
    use vantage_core::Observer;
    let dir = TempDir::new("range");
    let cfg = crate::config::parse(CONFIG, "f").unwrap();
    let now = SystemTime::now();
    {
        let storage = crate::storage::Storage::start(dir.path(), &cfg);
        // Two hours of one round a minute: every tenth fails; 3 ms, 9 ms in the first hour.
        for m in 1..=120u64 {
            let at = now - Duration::from_secs(m * 60);
            let rtt = Duration::from_millis(if m > 60 { 9 } else { 3 });
            storage.sample(ping_sample("loop", at, m % 10 != 0, rtt));
        }
        storage.shutdown().await;
    }
    let f = Fixture::with_store(dir, Some(CONFIG)).await.log_in().await;
    let h = f
        .get("/api/targets/loop/history?probe=ping&range=24h")
        .await;
    assert_eq!(h.status, StatusCode::OK, "{}", h.text);
    assert_eq!(h.body["step_seconds"], 300, "{}", h.text);
    let points = h.body["points"].as_array().unwrap();
    let rounds: u64 = points.iter().map(|p| p["rounds"].as_u64().unwrap()).sum();
    assert_eq!(rounds, 120, "{}", h.text);
    let sum = &h.body["summary"];
    assert_eq!(sum["rounds"], 120);
    assert_eq!(sum["successes"], 108);
    assert!((sum["loss"].as_f64().unwrap() - 0.1).abs() < 1e-9, "{sum}");
    assert_eq!(sum["min_ms"], 3.0, "{sum}");
    assert_eq!(sum["max_ms"], 9.0, "{sum}");
    let median = sum["median_ms"].as_f64().unwrap();
    assert!((2.8..=9.5).contains(&median), "{sum}");
    // The last hour has the 3 ms rounds only.
    let h1 = f.get("/api/targets/loop/history?range=1h").await;
    assert_eq!(h1.body["summary"]["max_ms"], 3.0, "{}", h1.text);
    assert!(
        h1.body["summary"]["rounds"].as_u64().unwrap() >= 59,
        "{}",
        h1.text
    );
    let bad = f.get("/api/targets/loop/history?range=2d").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(
        bad.text.contains("range") && bad.text.contains("30d"),
        "{}",
        bad.text
    );
    let no = f.get("/api/targets/loop/history?probe=dns").await;
    assert_eq!(no.status, StatusCode::NOT_FOUND, "{}", no.text);
    let none = f.get("/api/targets/nope/history").await;
    assert_eq!(none.status, StatusCode::NOT_FOUND, "{}", none.text);
}

/// A hand edit that broke the file: the sections still load (with the file's errors), saves
/// are refused, and a secret quoted in an error message stays masked.
#[tokio::test]
async fn sections_survive_a_broken_file_and_errors_do_not_leak_secrets() {
    let f = Fixture::logged_in(Some(CONFIG)).await;
    let broken = format!(
        "{CONFIG}\n[[remote_write]]\nurl = \"ftp://u:leaky-pass@prom.example/w\"\nbearer_token = \"leaky-token\"\n"
    );
    std::fs::write(f.config_path(), &broken).unwrap();
    for path in ["/api/config/remote_write", "/api/targets", "/api/config"] {
        let r = f.get(path).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text);
        assert!(!r.text.contains("leaky"), "{path}: {}", r.text);
        assert!(
            r.text.contains("must start with http"),
            "{path}: {}",
            r.text
        );
    }
    let r = f.send(Method::POST, "/api/reload", None, true).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(!r.text.contains("leaky"), "{}", r.text);
    std::fs::write(f.config_path(), format!("{CONFIG}\n[store\n")).unwrap();
    for path in [
        "/api/config/remote_write",
        "/api/config/store",
        "/api/config/leds",
    ] {
        let r = f.get(path).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text);
        assert!(
            !r.body["file_errors"].as_array().unwrap().is_empty(),
            "{path}: {}",
            r.text
        );
    }
    let r = f
        .send(
            Method::PUT,
            "/api/config/store",
            Some(json!({"max_size": "1GiB"})),
            true,
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
}

/// The target editor's kinds and options come from the daemon: every kind is offered
/// (trace included), with the loader's ranges, and a trace target built from them saves.
#[tokio::test]
async fn probe_forms_offer_every_kind_and_a_trace_target_saves() {
    let f = Fixture::logged_in(Some(CONFIG)).await;
    let r = f.get("/api/probes").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let kinds: Vec<&str> = r.body["probes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["ping", "trace", "tcp", "http", "dns"]);
    // What each kind's main time is called, and the kind a new target starts with.
    let figures: Vec<(&str, &str, bool)> = r.body["probes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let (k, f, d) = (&p["kind"], &p["figure"], &p["default"]);
            (
                k.as_str().unwrap(),
                f.as_str().unwrap(),
                d.as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        figures,
        [
            ("ping", "RTT", true),
            ("trace", "last hop RTT", false),
            ("tcp", "connect time", false),
            ("http", "total time", false),
            ("dns", "lookup", false),
        ]
    );
    // A kind that runs live says what a run does, in its module's words; the others nothing.
    let live: Vec<(&str, &Value)> = r.body["probes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| Some((p["kind"].as_str()?, p.get("live")?)))
        .collect();
    let what = |k: ProbeKind| k.module().and_then(|m| m.live()).map(|l| l.what());
    assert_eq!(
        live,
        [
            ("ping", &json!({ "what": what(ProbeKind::PING) })),
            ("trace", &json!({ "what": what(ProbeKind::TRACE) })),
        ]
    );
    assert_eq!(live[0].1["what"], "a burst of 20 echo requests");
    let trace = &r.body["probes"][1]["fields"];
    let field = |key: &str| {
        trace
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["key"] == key)
            .unwrap_or_else(|| panic!("trace.{key} missing: {trace}"))
            .clone()
    };
    let flows = vantage_core::defaults::TRACE_FLOWS_RANGE;
    assert_eq!(field("flows")["min"], flows.min);
    assert_eq!(field("flows")["max"], flows.max);
    assert_eq!(field("protocol")["options"], json!(["udp", "icmp", "tcp"]));
    assert_eq!(field("path_window")["type"], "duration");
    assert_eq!(field("discovery")["options"], json!(["mda", "flows"]));
    let budget = vantage_core::defaults::TRACE_PROBE_BUDGET_RANGE;
    assert_eq!(field("probe_budget")["min"], budget.min);
    assert_eq!(field("probe_budget")["max"], budget.max);
    // A trace target with every kind of field, as the form sends it; "Test now" first.
    let t = json!({
        "name": "upstream", "host": "127.0.0.1", "probes": ["trace"],
        "trace": {"protocol": "icmp", "flows": 2, "max_hops": 3, "path_window": "5m"}
    });
    let r = f
        .send(Method::POST, "/api/targets/test", Some(t.clone()), true)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["results"][0]["probe"], "trace", "{}", r.text);
    let r = f.send(Method::POST, "/api/targets", Some(t), true).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let text = std::fs::read_to_string(f.config_path()).unwrap();
    assert!(text.contains("flows = 2"), "{text}");
    // Edited from the same form: protocol, port, max hops and path window through the module.
    assert_eq!(field("port")["min"], vantage_core::defaults::PORT_RANGE.min);
    assert_eq!(field("max_hops")["type"], "integer");
    let t = json!({
        "name": "upstream", "host": "127.0.0.1", "probes": ["trace"],
        "trace": {"protocol": "tcp", "port": 8443, "max_hops": 7, "path_window": "2h"}
    });
    let r = f
        .send(Method::PUT, "/api/targets/upstream", Some(t), true)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let text = std::fs::read_to_string(f.config_path()).unwrap();
    assert!(text.contains("port = 8443"), "{text}");
    let c = crate::config::parse(&text, "t.toml").unwrap();
    let up = c.targets.iter().find(|t| t.name == "upstream").unwrap();
    let trace: vantage_core::TraceOptions = up.options_or_default();
    assert_eq!((trace.port, trace.max_hops), (8443, 7));
    assert_eq!(trace.protocol, vantage_core::TraceProtocol::Tcp);
    assert_eq!(trace.path_window, std::time::Duration::from_secs(7200));
    // Past the offered maximum, the loader's message names the field.
    let t = json!({
        "name": "upstream2", "host": "192.0.2.1", "probes": ["trace"],
        "trace": {"flows": flows.max + 1}
    });
    let r = f.send(Method::POST, "/api/targets", Some(t), true).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert!(r.text.contains("trace.flows"), "{}", r.text);
}

/// An admin session cannot make the daemon send its own files (the password hash) to a server,
/// learn whether a path exists, or hang or exhaust it with a device or a FIFO.
#[tokio::test]
async fn secret_files_named_by_the_page_are_checked_before_anything_reads_them() {
    let f = Fixture::logged_in(Some(CONFIG)).await;
    let before = std::fs::read_to_string(f.config_path()).unwrap();
    let fifo = f.dir.path().join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let admin = f.dir.path().join("web").join("admin.json");
    assert!(admin.exists());
    let mut messages = std::collections::HashSet::new();
    for (path, body) in [
        (
            admin.display().to_string(),
            json!({"url": "https://evil.example/w", "bearer_token_file": admin}),
        ),
        (
            "/nonexistent/token".into(),
            json!({"url": "https://evil.example/w", "bearer_token_file": "/nonexistent/token"}),
        ),
        (
            "/dev/zero".into(),
            json!({"url": "https://evil.example/w", "bearer_token_file": "/dev/zero"}),
        ),
        (
            fifo.display().to_string(),
            json!({"url": "https://evil.example/w",
                   "basic_auth": {"username": "u", "password_file": fifo}}),
        ),
    ] {
        let r = f
            .send(
                Method::POST,
                "/api/config/remote_write?dry_run=true",
                Some(body),
                true,
            )
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
        let (field, message) = field_errors(&r).remove(0);
        assert!(field.ends_with("_file"), "{field}");
        messages.insert(message.replace(&path, "PATH"));
    }
    assert_eq!(messages.len(), 1, "{messages:?}");
    // The same rules for a DNS target's CA file, saved or tested.
    for route in ["/api/targets", "/api/targets/test"] {
        let t = json!({"name": "d", "host": "127.0.0.1", "probes": ["dns"],
                       "dns": {"query": "example.com", "transport": "tls", "ca_file": "/dev/zero"}});
        let r = f.send(Method::POST, route, Some(t), true).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
        assert_eq!(field_errors(&r)[0].0, "dns.ca_file", "{}", r.text);
    }
    assert_eq!(std::fs::read_to_string(f.config_path()).unwrap(), before);
    // The save lock is free: a good file is accepted and saved.
    let token = f.dir.path().join("token");
    std::fs::write(&token, "tok-0123456789\n").unwrap();
    let r = f
        .send(
            Method::POST,
            "/api/config/remote_write",
            Some(json!({"url": "https://prom.example/w", "bearer_token_file": token})),
            true,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
}

/// Every TLS file a client can name (remote_write `tls.ca_file`, `tls.cert_file`,
/// `tls.key_file`; a DNS target's `dns.ca_file`) meets the same rules as the secret files, on
/// every route that saves or checks one: refused with the one message, nothing saved.
#[tokio::test]
async fn tls_files_named_by_the_page_meet_the_secret_file_rules_on_every_route() {
    let config =
        format!("{CONFIG}\n[[remote_write]]\nname = \"central\"\nurl = \"http://127.0.0.1:9/w\"\n");
    let f = Fixture::logged_in(Some(&config)).await;
    let before = std::fs::read_to_string(f.config_path()).unwrap();
    let fifo = f.dir.path().join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let admin = f.dir.path().join("web").join("admin.json");
    assert!(admin.exists());
    let paths = [
        admin.display().to_string(),
        fifo.display().to_string(),
        "/dev/zero".to_string(),
        "/nonexistent/ca.pem".to_string(),
    ];
    let endpoint_routes = [
        (Method::POST, "/api/config/remote_write?dry_run=true"),
        (Method::POST, "/api/config/remote_write"),
        (Method::PUT, "/api/config/remote_write/central?dry_run=true"),
        (Method::PUT, "/api/config/remote_write/central"),
    ];
    let target_routes = [
        (Method::POST, "/api/targets"),
        (Method::PUT, "/api/targets/loop"),
        (Method::POST, "/api/targets/test"),
    ];
    let mut messages = std::collections::HashSet::new();
    for path in &paths {
        let mut cases = Vec::new();
        for key in ["ca_file", "cert_file", "key_file"] {
            let body = json!({"name": "central", "url": "http://127.0.0.1:9/w",
                              "tls": {key: path}});
            for (m, route) in &endpoint_routes {
                cases.push((m.clone(), *route, body.clone(), format!("tls.{key}")));
            }
        }
        let target = json!({"name": "loop", "host": "127.0.0.1", "probes": ["dns"],
                            "dns": {"query": "example.com", "transport": "tls", "ca_file": path}});
        for (m, route) in &target_routes {
            cases.push((m.clone(), *route, target.clone(), "dns.ca_file".into()));
        }
        for (method, route, body, field) in cases {
            let r = f.send(method.clone(), route, Some(body), true).await;
            assert_eq!(
                r.status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{method} {route} {field} {path}: {}",
                r.text
            );
            let errs = field_errors(&r);
            assert_eq!(errs.len(), 1, "{method} {route}: {}", r.text);
            assert_eq!(errs[0].0, field, "{method} {route}: {}", r.text);
            messages.insert(errs[0].1.replace(path.as_str(), "PATH"));
        }
    }
    // The same message as for a secret file, whatever the path, field and route.
    let r = f
        .send(
            Method::POST,
            "/api/config/remote_write?dry_run=true",
            Some(json!({"url": "http://127.0.0.1:9/w", "bearer_token_file": "/dev/zero"})),
            true,
        )
        .await;
    messages.insert(field_errors(&r)[0].1.replace("/dev/zero", "PATH"));
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(std::fs::read_to_string(f.config_path()).unwrap(), before);
}

/// A log sink for one test (thread-local subscriber: the test's runtime has one thread).
#[derive(Clone, Default)]
struct LogBuf(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuf {
    type Writer = LogBuf;
    fn make_writer(&'a self) -> LogBuf {
        self.clone()
    }
}

/// A fresh device warns that anyone can claim it, and the log names who did.
#[tokio::test]
async fn claiming_a_fresh_device_is_warned_about_and_logged_with_the_client() {
    let f = Fixture::new(Some(CONFIG)).await;
    let s = f.get("/api/auth/state").await;
    assert!(
        s.body["setup_warning"]
            .as_str()
            .is_some_and(|w| w.contains("Anyone")),
        "{}",
        s.text
    );
    // The log is checked in a process of its own: tracing decides once per log line, for
    // every thread, whether anything wants it, so other tests running at the same time
    // could decide it for this one.
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "web::tests::claim_is_logged",
            "--ignored",
            "--test-threads=1",
        ])
        .env(CLAIM_LOG_CHILD, "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 passed"));
    let r = f
        .send(
            Method::POST,
            "/api/auth/setup",
            Some(json!({"password": PASSWORD})),
            false,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let s = f.get("/api/auth/state").await;
    assert!(s.body["setup_warning"].is_null(), "{}", s.text);
}

const CLAIM_LOG_CHILD: &str = "VANTAGE_TEST_CLAIM_LOG_CHILD";

/// Run by the test above in a process of its own.
#[tokio::test]
#[ignore = "run by claiming_a_fresh_device_is_warned_about_and_logged_with_the_client"]
async fn claim_is_logged() {
    if std::env::var_os(CLAIM_LOG_CHILD).is_none() {
        return;
    }
    let logs = LogBuf::default();
    let sub = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::set_global_default(sub).unwrap();
    let f = Fixture::new(Some(CONFIG)).await;
    let mut req = f
        .builder(Method::POST, "/api/auth/setup", false, false)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(json!({"password": PASSWORD}).to_string()))
        .unwrap();
    let peer: std::net::SocketAddr = "[::ffff:198.51.100.7]:50000".parse().unwrap();
    req.extensions_mut()
        .insert(axum::extract::ConnectInfo(peer));
    assert_eq!(f.raw(req).await.status, StatusCode::CREATED);
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        text.contains("claimed") && text.contains("client=198.51.100.7"),
        "{text}"
    );
}

/// With a setup code file (the image's boot partition), claiming the device needs the code.
#[tokio::test]
async fn a_setup_code_guards_first_boot() {
    let f = Fixture::new(Some(CONFIG)).await;
    let file = f.dir.path().join("vantage-setup-code.txt");
    std::fs::write(&file, "H4CK-PR00F-C0DE\n").unwrap();
    f.web.auth.require_setup_code(&file);
    let s = f.get("/api/auth/state").await;
    assert_eq!(s.body["setup_code_required"], true, "{}", s.text);
    assert!(s.body["setup_warning"].is_null(), "{}", s.text);
    for body in [
        json!({"password": PASSWORD}),
        json!({"password": PASSWORD, "setup_code": "guess"}),
    ] {
        let r = f
            .send(Method::POST, "/api/auth/setup", Some(body), false)
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
        assert_eq!(field_errors(&r)[0].0, "setup_code", "{}", r.text);
        assert!(!r.text.contains("H4CK"), "{}", r.text);
    }
    assert!(!f.web.auth.is_set_up());
    let r = f
        .send(
            Method::POST,
            "/api/auth/setup",
            Some(json!({"password": PASSWORD, "setup_code": "H4CK-PR00F-C0DE"})),
            false,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert!(f.web.auth.is_set_up());
}

/// A probe module's kind reaches the page from the module: its form, and a target built
/// from it that saves and tests.
#[tokio::test]
async fn a_tcp_target_from_the_modules_form_saves() {
    let f = Fixture::logged_in(Some(CONFIG)).await;
    let r = f.get("/api/probes").await;
    let tcp = r.body["probes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["kind"] == "tcp")
        .unwrap_or_else(|| panic!("no tcp form: {}", r.text))
        .clone();
    let port = tcp["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["key"] == "port")
        .unwrap()
        .clone();
    assert_eq!(
        (port["type"].as_str(), port["required"].as_bool()),
        (Some("integer"), Some(true))
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let listen = l.local_addr().unwrap().port();
    tokio::spawn(async move { while l.accept().await.is_ok() {} });
    // As the form sends it: a choice is text.
    let t = json!({
        "name": "web", "host": "127.0.0.1", "probes": ["tcp"],
        "tcp": {"port": listen, "attempts": 2, "tls": "false"}
    });
    let r = f
        .send(Method::POST, "/api/targets/test", Some(t.clone()), true)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["results"][0]["probe"], "tcp", "{}", r.text);
    assert_eq!(r.body["results"][0]["success"], true, "{}", r.text);
    // The round at a glance, in the module's words: its main time and who answered.
    let res = &r.body["results"][0];
    assert_eq!(res["figure"], "connect time", "{}", r.text);
    assert!(
        res["time_ms"].as_f64().is_some_and(|t| t > 0.0),
        "{}",
        r.text
    );
    assert_eq!(res["peer"], format!("127.0.0.1:{listen}"), "{}", r.text);
    let r = f.send(Method::POST, "/api/targets", Some(t), true).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let text = std::fs::read_to_string(f.config_path()).unwrap();
    assert!(text.contains("attempts = 2"), "{text}");
    let t = json!({"name": "web2", "host": "127.0.0.1", "probes": ["tcp"], "tcp": {"attempts": 2}});
    let r = f.send(Method::POST, "/api/targets", Some(t), true).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert!(r.text.contains("tcp.port"), "{}", r.text);
}

#[path = "node_exporter_tests.rs"]
mod node_exporter_tests;
#[path = "run_now_tests.rs"]
mod run_now_tests;
#[path = "update_tests.rs"]
mod update_tests;

/// Before a kind's first round, its range says what its main time is called, and `last` is
/// null for a kind that shows its latest round (the page says none came yet) and absent for
/// one that does not.
#[tokio::test]
async fn a_range_before_the_first_round_names_its_figure() {
    let dir = TempDir::new("figure");
    let f = Fixture::with_store(dir, Some(DIAG_CONFIG))
        .await
        .log_in()
        .await;
    let d = f.get("/api/targets/resolver/history?probe=dns").await;
    assert_eq!(d.status, StatusCode::OK, "{}", d.text);
    assert_eq!(d.body["figure"], "lookup", "{}", d.text);
    assert_eq!(d.body.get("last"), Some(&Value::Null), "{}", d.text);
    let p = f.get("/api/targets/loop/history?probe=ping").await;
    assert_eq!(p.body["figure"], "RTT", "{}", p.text);
    assert_eq!(p.body.get("last"), None, "{}", p.text);
    assert_eq!(p.body.get("hops"), None, "{}", p.text);
}

/// The rounds are stored by the tests; the daemon's own first rounds come hours later (each
/// target's offset within a day), so none joins them while a test runs.
const DIAG_CONFIG: &str = r#"
[[targets]]
name = "loop"
host = "127.0.0.1"
probes = ["ping"]
ping = { interval = "24h" }

[[targets]]
name = "resolver"
host = "127.0.0.1"
probes = ["dns"]
dns = { query = "example.test", interval = "24h" }

[[targets]]
name = "site"
host = "127.0.0.1"
probes = ["http"]
http = { url = "https://127.0.0.1/health", interval = "24h" }

[[targets]]
name = "path"
host = "127.0.0.1"
probes = ["trace"]
trace = { interval = "24h" }
"#;

fn module_sample(target: &str, probe: ProbeKind, at: SystemTime, report: Value) -> Sample {
    let report = probe.module().unwrap().report_from_json(report).unwrap();
    Sample {
        target: target.into(),
        probe,
        timestamp: at,
        duration: Duration::from_millis(20),
        success: true,
        error: None,
        measurement: Measurement::Module(report),
        quality: Default::default(),
    }
}

fn dns_report(resolve_ms: Option<u64>, answers: usize) -> Value {
    let ms = |v: u64| json!({"secs": 0, "nanos": v * 1_000_000});
    let records: Vec<Value> = (0..answers)
        .map(|i| json!({"name": "example.test.", "ttl": 300, "class": "IN", "type": "A", "data": format!("192.0.2.{i}")}))
        .collect();
    json!({
        "rcode": "NOERROR",
        "answers": records,
        "lookup": ms(20 + resolve_ms.unwrap_or(0)),
        "phases": {"resolve": resolve_ms.map(ms), "request": ms(20)},
    })
}

fn http_report(status: u16, not_after: i64) -> Value {
    let phases: Vec<Value> = (1..=5)
        .map(|i| json!({"secs": 0, "nanos": i * 1_000_000}))
        .collect();
    json!({"status": status, "phases": phases, "cert_not_after": not_after, "tls_version": "TLS 1.3"})
}

/// DNS, TCP and HTTP ranges carry each phase's mean per bucket (from the stored rounds), HTTP
/// status changes as marks, rounds flagged for the device's load per bucket, and the latest
/// report: DNS records (at most `MAX_RECORDS`), HTTP status and certificate expiry.
#[tokio::test]
async fn target_ranges_show_phases_status_changes_flags_and_the_last_report() {
    use super::diagnostics::{CERT_WARN_DAYS, MAX_RECORDS};
    use vantage_core::{Observer, RoundQuality};
    let dir = TempDir::new("phases");
    let cfg = crate::config::parse(DIAG_CONFIG, "f").unwrap();
    let now = SystemTime::now();
    let unix = now.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let not_after = unix + (CERT_WARN_DAYS - 4) * 86_400 + 3_600;
    {
        let storage = crate::storage::Storage::start(dir.path(), &cfg);
        for m in 1..=10u64 {
            let at = now - Duration::from_secs(m * 60);
            // The server's name resolved every other minute; 3 ms then.
            let resolve = (m % 2 == 0).then_some(3);
            storage.sample(module_sample(
                "resolver",
                ProbeKind::DNS,
                at,
                dns_report(resolve, 2),
            ));
            // The site answered 200, then 503 for the last three minutes.
            let status = if m <= 3 { 503 } else { 200 };
            let http = ProbeKind::Module(vantage_core::ModuleId::by_name("http").unwrap());
            storage.sample(module_sample(
                "site",
                http,
                at,
                http_report(status, not_after),
            ));
            let mut ping = ping_sample("loop", at, true, Duration::from_millis(2));
            if m <= 2 {
                ping.quality = RoundQuality::CPU;
            }
            storage.sample(ping);
        }
        storage.shutdown().await;
    }
    let f = Fixture::with_store(dir, Some(DIAG_CONFIG))
        .await
        .log_in()
        .await;

    let d = f
        .get("/api/targets/resolver/history?probe=dns&range=1h")
        .await;
    assert_eq!(d.status, StatusCode::OK, "{}", d.text);
    let phases = &d.body["phases"];
    assert_eq!(
        phases["names"],
        json!(["resolve", "connect", "tls", "request"])
    );
    let points = phases["points"].as_array().unwrap();
    assert_eq!(points.len(), 10, "{phases}");
    let with = points
        .iter()
        .filter(|p| p["ms"] == json!([3.0, null, null, 20.0]));
    let without = points
        .iter()
        .filter(|p| p["ms"] == json!([null, null, null, 20.0]));
    assert_eq!((with.count(), without.count()), (5, 5), "{phases}");
    // Nothing in memory yet: the answer the store kept before the restart, said to be so.
    let last = &d.body["last"];
    assert_eq!(last["stored"], true, "{}", d.text);
    assert_eq!(last["rcode"], "NOERROR", "{last}");
    assert_eq!(last["records_total"], 2, "{last}");
    assert_eq!(last["records"][1]["data"], "192.0.2.1", "{last}");
    // Lookup and phases over a month: from the per-minute aggregates, the same means.
    let m = f
        .get("/api/targets/resolver/history?probe=dns&range=30d")
        .await;
    assert_eq!(m.body["summary"]["rounds"], 10, "{}", m.text);
    assert!(
        m.body["summary"]["median_ms"].as_f64().unwrap() > 19.0,
        "{}",
        m.text
    );
    assert_eq!(
        m.body["phases"]["mean_ms"],
        json!([3.0, null, null, 20.0]),
        "{}",
        m.text
    );
    assert!(!m.body["phases"]["points"].as_array().unwrap().is_empty());
    // The latest round in memory: its records, capped.
    f.history.sample(module_sample(
        "resolver",
        ProbeKind::DNS,
        now,
        dns_report(None, MAX_RECORDS + 8),
    ));
    let d = f.get("/api/targets/resolver/history?probe=dns").await;
    let last = &d.body["last"];
    assert_eq!(last["rcode"], "NOERROR", "{last}");
    assert!(last.get("stored").is_none(), "{last}");
    assert_eq!(last["records_total"], MAX_RECORDS + 8, "{last}");
    assert_eq!(
        last["records"].as_array().unwrap().len(),
        MAX_RECORDS,
        "{last}"
    );
    assert_eq!(
        last["records"][1],
        json!({"name": "example.test.", "type": "A", "ttl": 300, "data": "192.0.2.1"})
    );

    let h = f.get("/api/targets/site/history?probe=http&range=1h").await;
    assert_eq!(h.status, StatusCode::OK, "{}", h.text);
    let changes = h.body["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 1, "{}", h.text);
    assert_eq!(
        (&changes[0]["from"], &changes[0]["to"]),
        (&json!("200"), &json!("503"))
    );
    assert_eq!(h.body["current"], "503");
    assert_eq!(
        h.body["summary"]["median_ms"].as_f64().map(f64::round),
        Some(15.0),
        "{}",
        h.text
    );
    assert_eq!(
        h.body["phases"]["points"][0]["ms"],
        json!([1.0, 2.0, 3.0, 4.0, 5.0])
    );
    let http = ProbeKind::Module(vantage_core::ModuleId::by_name("http").unwrap());
    f.history.sample(module_sample(
        "site",
        http,
        now,
        http_report(503, not_after),
    ));
    let h = f.get("/api/targets/site/history?probe=http").await;
    let last = &h.body["last"];
    assert_eq!(
        (&last["status"], &last["tls_version"]),
        (&json!(503), &json!("TLS 1.3")),
        "{last}"
    );
    assert_eq!(last["cert_days_left"], CERT_WARN_DAYS - 4, "{last}");
    assert_eq!(last["cert_warning"], true, "{last}");
    assert!(last.get("records").is_none(), "{last}");
    // Phases over a week, from the aggregates.
    let w = f.get("/api/targets/site/history?probe=http&range=7d").await;
    assert_eq!(
        w.body["phases"]["mean_ms"],
        json!([1.0, 2.0, 3.0, 4.0, 5.0]),
        "{}",
        w.text
    );

    // Ping: two rounds flagged for the device's load.
    let p = f.get("/api/targets/loop/history?probe=ping&range=1h").await;
    assert_eq!(p.body["summary"]["flagged"], 2, "{}", p.text);
    let flagged: u64 = p.body["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["flagged"].as_u64().unwrap())
        .sum();
    assert_eq!(flagged, 2, "{}", p.text);
    assert!(
        p.body.get("phases").is_none() && p.body.get("last").is_none(),
        "{}",
        p.text
    );
}

/// A record's data is cut to `MAX_RECORD_DATA` characters; a certificate far from expiry is
/// no warning, one already expired is, with negative days.
#[test]
fn the_last_report_cuts_long_records_and_judges_certificates() {
    use super::diagnostics::last_json;
    use vantage_core::dns_detail::MAX_RECORD_DATA;
    let long = "x".repeat(MAX_RECORD_DATA + 10);
    let r = json!({"answers": [{"name": "t.", "ttl": 1, "type": "TXT", "data": long}]});
    let last = last_json(5.0, &r, 0);
    let data = last["records"][0]["data"].as_str().unwrap();
    assert_eq!(data.chars().count(), MAX_RECORD_DATA + 1);
    assert!(data.ends_with('…'));
    let far = last_json(0.0, &json!({"cert_not_after": 100 * 86_400}), 0);
    assert_eq!(
        (&far["cert_days_left"], &far["cert_warning"]),
        (&json!(100), &json!(false))
    );
    let gone = last_json(0.0, &json!({"cert_not_after": 1_000}), 86_400 * 2);
    assert_eq!(
        (&gone["cert_days_left"], &gone["cert_warning"]),
        (&json!(-2), &json!(true))
    );
}

/// `n` ping targets `t0000`... on loopback with an interval long enough that no round runs
/// during a test, half of them in `site = "b"`.
fn many_targets(n: usize) -> String {
    let mut c = String::new();
    for i in 0..n {
        let site = if i % 2 == 0 { "a" } else { "b" };
        c.push_str(&format!(
            "[[targets]]\nname = \"t{i:04}\"\nhost = \"127.0.0.1\"\nprobes = [\"ping\"]\ninterval = \"1h\"\nlabels = {{ site = \"{site}\" }}\n"
        ));
    }
    c
}

/// A ping round of `target` that succeeded or not, `ago` before now.
fn ping_round(target: &str, success: bool, ago: Duration) -> Sample {
    Sample {
        target: target.into(),
        probe: ProbeKind::PING,
        timestamp: SystemTime::now() - ago,
        duration: Duration::from_millis(3),
        success,
        error: None,
        measurement: Measurement::from(PingReport {
            address: Some("127.0.0.1".parse().unwrap()),
            sent: 1,
            received: u32::from(success),
            rtts: if success {
                vec![Duration::from_micros(800)]
            } else {
                vec![]
            },
            ..Default::default()
        }),
        quality: Default::default(),
    }
}

/// Every target answered on even numbers, and has rounds in several minutes.
fn fill_history(f: &Fixture, n: usize) {
    for i in 0..n {
        for m in 0..5 {
            let r = ping_round(&format!("t{i:04}"), i % 2 == 0, Duration::from_secs(m * 60));
            f.history.record(&r);
        }
    }
}

fn names(r: &Resp) -> Vec<String> {
    r.body["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn status_answers_one_page_of_targets_with_counts_over_all() {
    let f = Fixture::logged_in(Some(&many_targets(250))).await;
    fill_history(&f, 250);
    let r = f.get("/api/status").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let n = names(&r);
    assert_eq!(n.len(), super::status::PAGE_DEFAULT);
    assert_eq!(n[0], "t0000");
    assert_eq!(r.body["page"]["matched"], 250);
    assert_eq!(r.body["counts"]["targets"], 250);
    assert_eq!(r.body["counts"]["answering"], 125);
    assert!(
        !r.body["targets"][0]["probes"][0]["history"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    let r = f.get("/api/status?offset=200").await;
    assert_eq!(names(&r).first().map(String::as_str), Some("t0200"));
    assert_eq!(names(&r).len(), 50);
    let r = f.get("/api/status?offset=300").await;
    assert!(names(&r).is_empty());
    assert_eq!(r.body["page"]["matched"], 250);

    let r = f.get("/api/status?state=silent&limit=500").await;
    let n = names(&r);
    assert_eq!(n.len(), 125);
    assert!(
        n.iter().all(|t| t.ends_with(['1', '3', '5', '7', '9'])),
        "{n:?}"
    );
    assert_eq!(r.body["counts"]["answering"], 125);

    // Name, host or label value, any case.
    let r = f.get("/api/status?q=T001").await;
    assert_eq!(names(&r).len(), 10, "{:?}", names(&r));
    let r = f.get("/api/status?q=B&state=answering&limit=500").await;
    assert!(
        names(&r).is_empty(),
        "site b only holds odd, silent targets"
    );
    let r = f.get("/api/status?q=127.0.0&limit=7").await;
    assert_eq!(names(&r).len(), 7);
    assert_eq!(r.body["page"]["matched"], 250);

    let r = f.get("/api/status?target=t0042").await;
    assert_eq!(names(&r), ["t0042"]);
    let r = f.get("/api/status?target=t004").await;
    assert!(names(&r).is_empty());
}

#[tokio::test]
async fn status_refuses_a_bad_page_query_naming_the_field() {
    let f = Fixture::logged_in(Some(&many_targets(3))).await;
    let long = "x".repeat(super::status::FILTER_MAX + 1);
    for (query, field) in [
        ("limit=0".to_string(), "limit"),
        (format!("limit={}", super::status::PAGE_MAX + 1), "limit"),
        ("state=down".to_string(), "state"),
        (format!("q={long}"), "q"),
    ] {
        let r = f.get(&format!("/api/status?{query}")).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{query}: {}", r.text);
        assert_eq!(r.body["errors"][0]["field"], field, "{query}: {}", r.text);
    }
    for query in ["offset=-1", "limit=many", "colour=1"] {
        let r = f.get(&format!("/api/status?{query}")).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{query}: {}", r.text);
        assert!(!r.body["error"].as_str().unwrap().is_empty(), "{query}");
    }
    let r = f
        .get(&format!("/api/status?limit={}", super::status::PAGE_MAX))
        .await;
    assert_eq!(r.status, StatusCode::OK);
}

/// The status view's answer must not grow with the number of targets: 10 times the targets,
/// every one with an hour's rounds, give the same page.
#[tokio::test]
async fn the_status_answer_does_not_grow_with_the_number_of_targets() {
    let mut sizes = Vec::new();
    for n in [150, 1500] {
        let f = Fixture::logged_in(Some(&many_targets(n))).await;
        fill_history(&f, n);
        let r = f.get("/api/status").await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.body["page"]["matched"], n);
        sizes.push(r.text.len());
    }
    assert!(
        sizes[1] as f64 <= sizes[0] as f64 * 1.05,
        "answer bytes at 150 and 1,500 targets: {sizes:?}"
    );
}

/// A trace round over `path` (one address per hop, "" for a silent hop) with path hash `hash`.
fn trace_round(at: SystemTime, hash: u32, path: &[&str]) -> Sample {
    let hops: Vec<Value> = path
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let responders: Vec<Value> = (!a.is_empty())
                .then(|| json!({"address": a, "replies": 1, "flows": [0], "unreachable": null}))
                .into_iter()
                .collect();
            json!({"ttl": i + 1, "sent": 1, "received": responders.len(), "responders": responders,
                "rtts": [{"secs": 0, "nanos": 1_000_000}]})
        })
        .collect();
    let report =
        json!({"reached": true, "flows": 1, "flows_reached": 1, "path_hash": hash, "hops": hops});
    module_sample("path", ProbeKind::TRACE, at, report)
}

/// A trace's range names the hops of the path before and after each change, from the store:
/// after a restart, over a week and a month, and the current path's hops.
#[tokio::test]
async fn a_trace_range_shows_the_hops_before_and_after_each_path_change() {
    use vantage_core::Observer;
    let dir = TempDir::new("paths");
    let cfg = crate::config::parse(DIAG_CONFIG, "f").unwrap();
    let now = SystemTime::now();
    let day = Duration::from_secs(86_400);
    let (a, b) = (0x0a0b_0c0d_u32, 0x1122_3344_u32);
    let before = ["192.0.2.1", "", "198.51.100.9"];
    let after = ["192.0.2.1", "203.0.113.7", "198.51.100.9"];
    {
        let storage = crate::storage::Storage::start(dir.path(), &cfg);
        // Three days on one path, then two days on another, a round every six hours.
        for i in (0..20u32).rev() {
            let at = now - Duration::from_secs(6 * 3600) * i - Duration::from_secs(60);
            let (hash, path) = if at < now - 2 * day {
                (a, &before)
            } else {
                (b, &after)
            };
            storage.sample(trace_round(at, hash, path));
        }
        storage.shutdown().await;
    }
    let f = Fixture::with_store(dir, Some(DIAG_CONFIG))
        .await
        .log_in()
        .await;
    for range in ["7d", "30d"] {
        let r = f
            .get(&format!(
                "/api/targets/path/history?probe=trace&range={range}"
            ))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let changes = r.body["changes"].as_array().unwrap();
        assert_eq!(changes.len(), 1, "{range}: {}", r.text);
        let (from, to) = (
            changes[0]["from"].as_str().unwrap(),
            changes[0]["to"].as_str().unwrap(),
        );
        assert_eq!((from, to), ("0a0b0c0d", "11223344"), "{}", r.text);
        let paths = &r.body["paths"];
        let addresses = |name: &str| -> Vec<Value> {
            paths[name]["hops"]
                .as_array()
                .unwrap_or_else(|| panic!("{range}: no path {name}: {paths}"))
                .iter()
                .map(|h| h["addresses"].clone())
                .collect()
        };
        assert_eq!(
            addresses(from),
            [json!(["192.0.2.1"]), json!([]), json!(["198.51.100.9"])],
            "{range}"
        );
        assert_eq!(addresses(to)[1], json!(["203.0.113.7"]), "{range}");
        assert_eq!(r.body["current"], to, "{range}");
        assert_eq!(paths[to]["reached"], true);
        // When each path became current: the first round on it.
        let t = paths[to]["t"].as_f64().unwrap();
        assert!(
            (t - changes[0]["t"].as_f64().unwrap()).abs() < 1e-3,
            "{paths}"
        );
    }
    // A range without the change still names the current path's hops; no other.
    let h = f
        .get("/api/targets/path/history?probe=trace&range=24h")
        .await;
    assert_eq!(h.body["changes"], json!([]), "{}", h.text);
    let names: Vec<&String> = h.body["paths"].as_object().unwrap().keys().collect();
    assert_eq!(names, ["11223344"], "{}", h.text);
    assert!(
        h.body.get("last").is_none(),
        "paths are not an answer: {}",
        h.text
    );
}

/// TCP and HTTP targets' latest status and certificate outlive a restart: before the first
/// round after it, the page shows what the store kept (the newest round's, said to be
/// stored), with the certificate's warning; a round since then replaces it.
#[tokio::test]
async fn tcp_and_http_status_and_certificate_are_shown_after_a_restart() {
    use super::diagnostics::CERT_WARN_DAYS;
    use vantage_core::Observer;
    let config = format!(
        "{DIAG_CONFIG}
[[targets]]
name = \"port\"
host = \"127.0.0.1\"
probes = [\"tcp\"]
tcp = {{ port = 443, tls = true, interval = \"24h\" }}
"
    );
    let dir = TempDir::new("last-stored");
    let cfg = crate::config::parse(&config, "f").unwrap();
    let now = SystemTime::now();
    let unix = now.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let (old_cert, new_cert) = (
        unix + 90 * 86_400,
        unix + (CERT_WARN_DAYS - 4) * 86_400 + 3_600,
    );
    let http = ProbeKind::Module(vantage_core::ModuleId::by_name("http").unwrap());
    let tcp = ProbeKind::Module(vantage_core::ModuleId::by_name("tcp").unwrap());
    let tcp_report = |connect_ms: u64, not_after: i64| {
        let ms = json!({"secs": 0, "nanos": connect_ms * 1_000_000});
        json!({"address": "127.0.0.1", "port": 443, "sent": 1, "connected": 1,
            "connect_times": [ms], "tls_version": "TLS 1.3", "cert_not_after": not_after})
    };
    {
        let storage = crate::storage::Storage::start(dir.path(), &cfg);
        // Oldest first: 200 with the old certificate, then 503 with the renewed one.
        for m in (1..=6u64).rev() {
            let at = now - Duration::from_secs(m * 60);
            let (status, cert) = if m > 2 {
                (200, old_cert)
            } else {
                (503, new_cert)
            };
            storage.sample(module_sample("site", http, at, http_report(status, cert)));
            storage.sample(module_sample("port", tcp, at, tcp_report(m, cert)));
        }
        storage.shutdown().await;
    }
    let f = Fixture::with_store(dir, Some(&config)).await.log_in().await;
    let h = f.get("/api/targets/site/history?probe=http").await;
    let last = &h.body["last"];
    assert_eq!(last["stored"], true, "{}", h.text);
    assert_eq!(
        (&last["status"], &last["tls_version"]),
        (&json!(503), &json!("TLS 1.3")),
        "{last}"
    );
    assert_eq!(last["cert_days_left"], CERT_WARN_DAYS - 4, "{last}");
    assert_eq!(last["cert_warning"], true, "{last}");
    // Stored when the status changed: the time of the first 503.
    let first_503 = (unix - 2 * 60) as f64;
    assert!(
        (last["t"].as_f64().unwrap() - first_503).abs() < 1.0,
        "{last}"
    );
    let t = f.get("/api/targets/port/history?probe=tcp").await;
    let last = &t.body["last"];
    assert_eq!(last["stored"], true, "{}", t.text);
    assert_eq!(
        (&last["address"], &last["tls_version"]),
        (&json!("127.0.0.1"), &json!("TLS 1.3")),
        "{last}"
    );
    assert_eq!(last["cert_not_after"], new_cert, "{last}");
    // A round since the start replaces what the store kept.
    f.history
        .sample(module_sample("site", http, now, http_report(200, old_cert)));
    let h = f.get("/api/targets/site/history?probe=http").await;
    let last = &h.body["last"];
    assert!(last.get("stored").is_none(), "{last}");
    assert_eq!(
        (&last["status"], &last["cert_warning"]),
        (&json!(200), &json!(false)),
        "{last}"
    );
}
