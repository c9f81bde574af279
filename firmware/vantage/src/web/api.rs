//! The JSON API under `/api/` (documented in docs/API.md).
//!
//! Every error has one shape, `{"error": "...", "errors": [{"field": "...", "message": "..."}]}`,
//! with a 4xx status for anything the client can fix; internals never reach the client.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{FromRef, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use vantage_core::{Measurement, ProbeKind, ProbeRequest};

use super::Web;
use super::auth::{self, Auth, LoginError, SESSION_MAX, Session, check_new_password};
use super::config_file::{
    self, Edit, EditError, FieldError, apply_edit, raw_targets, revision, validate_alone,
};
use super::device;
use super::diagnostics::Charts;
pub use super::error::MAX_BODY;
use super::error::{ApiError, ApiResult, JsonBody, typed};
use super::guard::{SESSION_COOKIE, client_ip};
use super::history::BUCKET;
use super::saving::{Editor, check_files, edit_error_for, location, read_text, save_with};
use super::secrets::redact_text;
use super::server::OverTls;
use super::settings::{ScrapeAuth, Settings, SettingsStore};
use super::tls::MAX_PEM;
use crate::fleet::provisioning;
use crate::state::{Probing, Reloader};

/// "Test now" never runs longer than this, whatever the target's options.
const TEST_NOW_LIMIT: Duration = Duration::from_secs(15);

/// Every route of the API, as documented in docs/API.md; the route-enumerating test walks it.
#[cfg(test)]
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/api/auth/state"),
    ("POST", "/api/auth/setup"),
    ("POST", "/api/auth/login"),
    ("POST", "/api/auth/logout"),
    ("POST", "/api/auth/password"),
    ("GET", "/api/status"),
    ("GET", "/api/history"),
    ("GET", "/api/targets"),
    ("POST", "/api/targets"),
    // Before the DELETE: the route walk deletes the target it names.
    ("GET", "/api/targets/{name}/history"),
    ("POST", "/api/targets/{name}/run"),
    ("PUT", "/api/targets/{name}"),
    ("DELETE", "/api/targets/{name}"),
    ("POST", "/api/targets/test"),
    ("GET", "/api/probes"),
    ("GET", "/api/config"),
    ("POST", "/api/reload"),
    ("GET", "/api/settings"),
    ("PUT", "/api/settings"),
    ("GET", "/api/tls"),
    ("PUT", "/api/tls"),
    ("GET", "/api/config/remote_write"),
    ("POST", "/api/config/remote_write"),
    ("PUT", "/api/config/remote_write/{name}"),
    ("DELETE", "/api/config/remote_write/{name}"),
    ("GET", "/api/config/store"),
    ("PUT", "/api/config/store"),
    ("GET", "/api/config/leds"),
    ("PUT", "/api/config/leds"),
    ("GET", "/api/update"),
    ("POST", "/api/update"),
    ("GET", "/api/node-exporter"),
    ("PUT", "/api/node-exporter"),
];

pub fn router(web: Arc<Web>) -> Router {
    let modules = super::node_exporter::routes(Router::new());
    super::update::routes(super::sections::routes(modules))
        .route("/api/auth/state", get(auth_state))
        .route("/api/auth/setup", post(setup))
        .route("/api/auth/login", post(login))
        .route("/api/auth/logout", post(logout))
        .route("/api/auth/password", post(change_password))
        .route("/api/status", get(super::status::status))
        .route("/api/history", get(history))
        .route("/api/targets", get(list_targets).post(add_target))
        .route(
            "/api/targets/{name}",
            put(replace_target).delete(delete_target),
        )
        .route(
            "/api/targets/{name}/history",
            get(super::diagnostics::target_history),
        )
        .route("/api/targets/{name}/run", post(super::run_now::run_now))
        .route("/api/targets/test", post(test_target))
        .route("/api/probes", get(probe_forms))
        .route("/api/config", get(config_text))
        .route("/api/reload", post(reload))
        .route("/api/settings", get(get_settings).put(put_settings))
        .route("/api/tls", get(get_tls).put(put_tls))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such page") })
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(web)
}

/// Over HTTPS the cookie is also `Secure`, so it never travels over the plain-HTTP port.
fn session_cookie(token: &str, tls: bool) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        SESSION_MAX.as_secs(),
        if tls { "; Secure" } else { "" }
    ))
    .expect("token is hex")
}

type Tls = Option<Extension<OverTls>>;

fn clear_cookie() -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"
    ))
    .expect("static text")
}

fn with_session(token: &str, s: &Session, status: StatusCode, tls: &Tls) -> Response {
    let mut r = (status, Json(json!({ "csrf_token": s.csrf }))).into_response();
    r.headers_mut()
        .insert(header::SET_COOKIE, session_cookie(token, tls.is_some()));
    r
}

// ---- auth ----

/// The admin credentials and sessions, the one thing the auth handlers use.
#[derive(Clone)]
struct Admin(Arc<Auth>);

impl FromRef<Arc<Web>> for Admin {
    fn from_ref(web: &Arc<Web>) -> Self {
        Self(web.auth.clone())
    }
}

async fn auth_state(
    State(Admin(auth)): State<Admin>,
    session: Option<Extension<(String, Session)>>,
) -> Json<Value> {
    Json(json!({
        "setup_required": !auth.is_set_up(),
        "setup_code_required": auth.setup_code_file().is_some(),
        "setup_warning": (!auth.is_set_up() && auth.setup_code_file().is_none())
            .then_some(auth::CLAIM_WARNING),
        "logged_in": session.is_some(),
        "csrf_token": session.as_ref().map(|s| s.0.1.csrf.clone()),
        "password_min_chars": auth::MIN_PASSWORD_CHARS,
        "hostname": device::hostname(),
        "error": auth.damaged,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordIn {
    password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetupIn {
    password: String,
    /// Required when the device has a setup code.
    setup_code: Option<String>,
}

/// Runs argon2 off the async threads, on the fixed hashing pool.
async fn hashing<T: Send + 'static>(
    auth: &Arc<Auth>,
    f: impl FnOnce(&Auth) -> T + Send + 'static,
) -> ApiResult<T> {
    let a = auth.clone();
    auth.hash_pool
        .run(move || f(&a))
        .await
        .map_err(|e| ApiError::internal("password check failed", e))
}

async fn setup(
    State(Admin(auth)): State<Admin>,
    tls: Tls,
    req_ext: axum::http::Extensions,
    JsonBody(body): JsonBody,
) -> ApiResult {
    if auth.is_set_up() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "the admin password is already set; log in",
        ));
    }
    let p: SetupIn = typed(body)?;
    let ip = client_ip(&req_ext);
    check_setup_code(&auth, ip, p.setup_code.as_deref())?;
    check_new_password(&p.password).map_err(|m| {
        ApiError::fields(
            StatusCode::UNPROCESSABLE_ENTITY,
            "the password is not acceptable",
            vec![FieldError::new("password", m)],
        )
    })?;
    let hash = hashing(&auth, move |a| a.hash_password(&p.password))
        .await?
        .map_err(|e| ApiError::internal("cannot hash the password", e))?;
    match auth.setup(hash) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "the admin password is already set; log in",
            ));
        }
        Err(e) => return Err(ApiError::internal("cannot store the password", e)),
    }
    // Whoever reaches a fresh device first claims it: the log says who did.
    tracing::warn!(client = %ip, "admin password set: the device was claimed");
    let (token, s) = auth.open_session();
    Ok(with_session(&token, &s, StatusCode::CREATED, &tls))
}

fn check_setup_code(auth: &Auth, ip: IpAddr, code: Option<&str>) -> ApiResult<()> {
    match auth.check_setup_code(ip, code) {
        Ok(()) => Ok(()),
        Err(LoginError::BadPassword) => {
            tracing::warn!(client = %ip, "wrong setup code");
            let place = auth.setup_code_place().unwrap_or_default();
            Err(ApiError::fields(
                StatusCode::FORBIDDEN,
                "the setup code is wrong",
                vec![FieldError::new(
                    "setup_code",
                    format!("enter the code printed when the device was flashed (also in {place})"),
                )],
            ))
        }
        Err(e) => Err(login_error(e)),
    }
}

fn login_error(e: LoginError) -> ApiError {
    match e {
        LoginError::NotSetUp => ApiError::new(
            StatusCode::CONFLICT,
            "no admin password yet: choose one first",
        ),
        LoginError::BadPassword => ApiError::new(StatusCode::UNAUTHORIZED, "wrong password"),
        LoginError::Damaged(msg) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, msg),
        LoginError::RateLimited(wait) => {
            // Rounded up: waiting as told must be enough.
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            ApiError {
                retry_after: Some(secs),
                ..ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!("too many failed attempts; try again in {secs} s"),
                )
            }
        }
    }
}

async fn login(
    State(Admin(auth)): State<Admin>,
    tls: Tls,
    req_ext: axum::http::Extensions,
    JsonBody(body): JsonBody,
) -> ApiResult {
    let p: PasswordIn = typed(body)?;
    let ip = client_ip(&req_ext);
    // Refuse early, before spending a hash on a client that must wait.
    if let Some(wait) = auth.retry_after(ip) {
        return Err(login_error(LoginError::RateLimited(wait)));
    }
    let res = hashing(&auth, move |a| a.login(ip, &p.password)).await?;
    match res {
        Ok((token, s)) => Ok(with_session(&token, &s, StatusCode::OK, &tls)),
        Err(e) => {
            if e == LoginError::BadPassword {
                tracing::warn!(client = %ip, "failed login");
            }
            Err(login_error(e))
        }
    }
}

async fn logout(
    State(Admin(auth)): State<Admin>,
    Extension((token, _)): Extension<(String, Session)>,
) -> Response {
    auth.logout(&token);
    let mut r = StatusCode::NO_CONTENT.into_response();
    r.headers_mut().insert(header::SET_COOKIE, clear_cookie());
    r
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangePasswordIn {
    current: String,
    new: String,
}

async fn change_password(
    State(Admin(auth)): State<Admin>,
    tls: Tls,
    req_ext: axum::http::Extensions,
    JsonBody(body): JsonBody,
) -> ApiResult {
    let p: ChangePasswordIn = typed(body)?;
    let ip: IpAddr = client_ip(&req_ext);
    check_new_password(&p.new).map_err(|m| {
        ApiError::fields(
            StatusCode::UNPROCESSABLE_ENTITY,
            "the new password is not acceptable",
            vec![FieldError::new("new", m)],
        )
    })?;
    let res = hashing(&auth, move |a| {
        a.check_password(ip, &p.current)
            .map(|()| a.hash_password(&p.new))
    })
    .await?;
    let hash = match res {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => return Err(ApiError::internal("cannot hash the password", e)),
        Err(LoginError::BadPassword) => {
            return Err(ApiError::fields(
                StatusCode::FORBIDDEN,
                "the current password is wrong",
                vec![FieldError::new("current", "wrong password")],
            ));
        }
        Err(e) => return Err(login_error(e)),
    };
    auth.store_hash(hash)
        .map_err(|e| ApiError::internal("cannot store the password", e))?;
    tracing::info!("admin password changed; all sessions ended");
    let (token, s) = auth.open_session();
    Ok(with_session(&token, &s, StatusCode::OK, &tls))
}

// ---- status and history ----

#[derive(Deserialize)]
struct HistoryQuery {
    target: String,
    #[serde(default = "default_probe")]
    probe: String,
    minutes: Option<u32>,
}

fn default_probe() -> String {
    ProbeKind::DEFAULT.as_str().into()
}

async fn history(
    State(Charts { configs, history }): State<Charts>,
    q: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(q) = q.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let kind: ProbeKind = q.probe.parse().map_err(|m: String| {
        ApiError::fields(
            StatusCode::BAD_REQUEST,
            "bad query",
            vec![FieldError::new("probe", m)],
        )
    })?;
    let cfg = configs.in_effect();
    let Some(t) = cfg.target(&q.target) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no target named {:?}", q.target),
        ));
    };
    let Some(interval) = t.interval(kind) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("target {:?} has no {kind} probe", q.target),
        ));
    };
    let minutes = q.minutes.unwrap_or(60).clamp(1, 24 * 60);
    let since = SystemTime::now() - Duration::from_secs(u64::from(minutes) * 60);
    let name = t.name.clone();
    let points = tokio::task::spawn_blocking(move || history.series(&name, kind, since))
        .await
        .map_err(|e| ApiError::internal("history failed", e))?;
    Ok(Json(json!({
        "target": t.name,
        "probe": kind,
        "interval_seconds": interval.as_secs_f64(),
        "bucket_seconds": BUCKET.as_secs(),
        "points": points,
    })))
}

// ---- targets ----

/// What the targets list reads: the editor's part, and the provisioned targets.
#[derive(Clone)]
struct TargetList {
    ed: Editor,
    provisioning: Arc<provisioning::State>,
}

impl FromRef<Arc<Web>> for TargetList {
    fn from_ref(web: &Arc<Web>) -> Self {
        Self {
            ed: Editor::from_ref(web),
            provisioning: web.state.provisioning.clone(),
        }
    }
}

async fn list_targets(State(l): State<TargetList>) -> ApiResult<Json<Value>> {
    let loc = location(&l.ed);
    let text = read_text(&loc)?;
    let running = l.ed.configs.in_effect();
    // Compared with the local config: provisioned targets are not in the file.
    let (file_errors, matches) = match crate::config::parse(&text, &loc.display()) {
        Ok(c) => (Vec::new(), c == *l.ed.configs.own()),
        Err(e) => (e.errors, false),
    };
    let raw = raw_targets(&text).unwrap_or_default();
    let targets: Vec<Value> = raw
        .into_iter()
        .map(|r| {
            let name = r.get("name").and_then(Value::as_str).unwrap_or_default();
            let effective = running.target(name);
            json!({ "raw": r, "effective": effective })
        })
        .collect();
    Ok(Json(json!({
        "path": loc.display(),
        "embedded": loc.embedded,
        "default": loc.default,
        "writable": loc.path.is_some(),
        "revision": revision(&text),
        "file_errors": redact_errors(file_errors),
        "running_matches_file": matches,
        "targets": targets,
        // Targets from central provisioning: running, not in the file, not editable here.
        "provisioned": l.provisioning.status().targets,
    })))
}

fn edit_error(e: EditError) -> ApiError {
    edit_error_for(e, "target")
}

/// Read, edit, validate, save atomically with a backup, reload. Serialised by `save_lock`.
async fn save(ed: &Editor, headers: &HeaderMap, edit: Edit<'_>) -> ApiResult<Value> {
    save_with(ed, headers, false, "target", |text, file| {
        apply_edit(text, file, edit)
    })
    .await
}

async fn add_target(
    State(ed): State<Editor>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> ApiResult {
    check_files(&ed, &body, "target").await?;
    let out = save(&ed, &headers, Edit::Add(&body)).await?;
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

async fn replace_target(
    State(ed): State<Editor>,
    Path(name): Path<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Value>> {
    check_files(&ed, &body, "target").await?;
    save(&ed, &headers, Edit::Replace(&name, &body))
        .await
        .map(Json)
}

async fn delete_target(
    State(ed): State<Editor>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    save(&ed, &headers, Edit::Delete(&name)).await.map(Json)
}

/// What "Test now" uses: the editor's part (the file the target is checked against), and a
/// round on demand's.
#[derive(Clone)]
struct TestNow {
    ed: Editor,
    probing: Probing,
}

impl FromRef<Arc<Web>> for TestNow {
    fn from_ref(web: &Arc<Web>) -> Self {
        Self {
            ed: Editor::from_ref(web),
            probing: Probing::from_ref(web),
        }
    }
}

async fn test_target(
    State(TestNow { ed, probing }): State<TestNow>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Value>> {
    check_files(&ed, &body, "target").await?;
    let text = read_text(&location(&ed))?;
    let target = validate_alone(&text, &body).map_err(edit_error)?;
    let Ok(_permit) = probing.probe_permits.try_acquire() else {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too many probes running on demand; try again",
        ));
    };
    let target = Arc::new(target);
    let mut results = Vec::new();
    for (kind, _) in &target.probes {
        let Some(prober) = probing.runner.probe(*kind) else {
            results.push(json!({ "probe": kind, "success": false,
                "error": format!("the {kind} probe is not available in this version") }));
            continue;
        };
        let round = match *kind {
            ProbeKind::PING => target.round_length(*kind),
            _ => TEST_NOW_LIMIT,
        };
        let deadline = (round + Duration::from_millis(500)).min(TEST_NOW_LIMIT);
        let s = prober
            .run(ProbeRequest {
                target: target.clone(),
                deadline: Some(deadline),
                guard: None,
                progress: None,
            })
            .await;
        let mut r = json!({
            "probe": kind,
            "success": s.success,
            "duration_ms": s.duration.as_secs_f64() * 1000.0,
            "error": s.error.as_ref().map(ToString::to_string),
        });
        if let Measurement::Module(m) = &s.measurement {
            let g = m.module().glance(m.report.as_ref());
            r["figure"] = json!(m.module().figure());
            r["time_ms"] = json!(g.time.map(|t| t.as_secs_f64() * 1000.0));
            r["peer"] = json!(g.peer);
            r["detail"] = json!(g.detail);
        }
        if let Some(p) = s.measurement.ping() {
            r["address"] = json!(p.address);
            r["sent"] = json!(p.sent);
            r["received"] = json!(p.received);
            r["loss"] = json!(p.loss_ratio());
            r["rtts_ms"] = json!(
                p.rtts
                    .iter()
                    .map(|d| d.as_secs_f64() * 1000.0)
                    .collect::<Vec<_>>()
            );
        }
        if let Some(d) = s.measurement.dns() {
            r["server"] = json!(d.server);
            r["rcode"] = json!(d.rcode_name());
            r["answers"] = json!(d.answers.len());
            r["lookup_ms"] = json!(d.lookup.map(|l| l.as_secs_f64() * 1000.0));
        }
        if let Some(t) = s.measurement.trace() {
            r["reached"] = json!(t.reached);
            r["hops"] = json!(
                t.hops
                    .iter()
                    .map(|h| json!({
                        "ttl": h.ttl,
                        "addresses": h.responders.iter().map(|a| a.address).collect::<Vec<_>>(),
                        "rtt_ms": h.mean().map(|d| d.as_secs_f64() * 1000.0),
                        "loss": h.loss_ratio(),
                    }))
                    .collect::<Vec<_>>()
            );
        }
        results.push(r);
    }
    Ok(Json(json!({ "target": target.name, "results": results })))
}

/// The probe kinds and their options, for the target editor: the page builds its form from
/// this rather than from a list of its own. A kind that runs live ("Run now") says what a run
/// does in `live`.
async fn probe_forms() -> Json<Value> {
    let probes: Vec<Value> = vantage_core::config::probe_forms()
        .into_iter()
        .map(|form| {
            let kind = form.kind.parse::<ProbeKind>().ok();
            let module = kind.and_then(ProbeKind::module);
            let live = module.and_then(|m| m.live());
            let mut v = json!(form);
            v["figure"] = json!(module.map(|m| m.figure()));
            // The kind a new target starts with.
            v["default"] = json!(kind == Some(ProbeKind::DEFAULT));
            if let Some(live) = live {
                v["live"] = json!({ "what": live.what() });
            }
            v
        })
        .collect();
    Json(json!({ "probes": probes }))
}

async fn config_text(State(ed): State<Editor>) -> ApiResult<Json<Value>> {
    let loc = location(&ed);
    let text = read_text(&loc)?;
    let errors = match crate::config::parse(&text, &loc.display()) {
        Ok(_) => Vec::new(),
        Err(e) => e.errors,
    };
    let backup = loc
        .path
        .as_ref()
        .map(|p| config_file::backup_path(&std::fs::canonicalize(p).unwrap_or_else(|_| p.clone())))
        .filter(|p| p.exists())
        .map(|p| p.display().to_string());
    Ok(Json(json!({
        "path": loc.display(),
        "embedded": loc.embedded,
        "default": loc.default,
        "revision": revision(&text),
        // Secrets never leave the device: the page shows the file with them masked.
        "text": redact_text(&text),
        "errors": redact_errors(errors),
        "backup": backup,
    })))
}

async fn reload(State(Reloader(r)): State<Reloader>) -> ApiResult<Json<Value>> {
    match r.reload() {
        Ok(()) => Ok(Json(json!({ "reloaded": true }))),
        Err(e) => Err(ApiError::fields(
            StatusCode::UNPROCESSABLE_ENTITY,
            "the config file has errors; the running config is unchanged",
            e.errors
                .iter()
                .map(|e| FieldError::new(format!("file:{}", e.field), redact_text(&e.to_string())))
                .collect(),
        )),
    }
}

/// Config errors quote the values they are about; a secret among them stays masked.
fn redact_errors(mut errors: Vec<vantage_core::ConfigError>) -> Vec<vantage_core::ConfigError> {
    for e in &mut errors {
        e.message = redact_text(&e.message);
    }
    errors
}

// ---- settings ----

fn settings_json(s: &Settings) -> Value {
    let scrape = match &s.scrape_auth {
        ScrapeAuth::None => json!({ "mode": "none" }),
        ScrapeAuth::Bearer { .. } => json!({ "mode": "bearer", "secret_set": true }),
        ScrapeAuth::Basic { username, .. } => {
            json!({ "mode": "basic", "username": username, "secret_set": true })
        }
    };
    json!({
        "allowed_hosts": s.allowed_hosts,
        "probe_allowlist": s.probe_allowlist,
        "scrape_auth": scrape,
        "https_listen": s.https_listen,
    })
}

/// What the settings page shows: the page's settings, and the LEDs' state beside them.
#[derive(Clone)]
struct SettingsView {
    settings: Arc<SettingsStore>,
    leds: Arc<vantage_leds::Leds>,
}

impl FromRef<Arc<Web>> for SettingsView {
    fn from_ref(web: &Arc<Web>) -> Self {
        Self {
            settings: web.settings.clone(),
            leds: web.state.leds.clone(),
        }
    }
}

async fn get_settings(State(s): State<SettingsView>) -> Json<Value> {
    let mut v = settings_json(&s.settings.get());
    v["leds"] = super::status::leds_json(&s.leds);
    Json(v)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScrapeAuthIn {
    mode: String,
    token: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsIn {
    /// Absent: unchanged (a client that does not know a field must not empty it).
    allowed_hosts: Option<Vec<String>>,
    /// Absent: unchanged, so the allow-list never disappears by omission.
    probe_allowlist: Option<Vec<String>>,
    scrape_auth: Option<ScrapeAuthIn>,
    /// Absent: unchanged; empty or null: HTTPS off.
    #[serde(default, deserialize_with = "some_or_null")]
    https_listen: Option<Option<String>>,
}

/// Tells an absent field (`None`) from an explicit `null` (`Some(None)`).
fn some_or_null<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

async fn put_settings(
    State(web): State<Arc<Web>>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Value>> {
    let input: SettingsIn = typed(body)?;
    let old = web.settings.get();
    let empty = |s: &Option<String>| s.as_deref().is_none_or(str::is_empty);
    let scrape_auth = match input.scrape_auth {
        None => old.scrape_auth.clone(),
        Some(a) => match a.mode.as_str() {
            "none" => ScrapeAuth::None,
            // An empty secret keeps the stored one: the page never sees secrets again.
            "bearer" => match (&old.scrape_auth, empty(&a.token)) {
                (ScrapeAuth::Bearer { token }, true) => ScrapeAuth::Bearer {
                    token: token.clone(),
                },
                _ => ScrapeAuth::Bearer {
                    token: a.token.unwrap_or_default(),
                },
            },
            "basic" => {
                let password = match (&old.scrape_auth, empty(&a.password)) {
                    (ScrapeAuth::Basic { password, .. }, true) => password.clone(),
                    _ => a.password.unwrap_or_default(),
                };
                ScrapeAuth::Basic {
                    username: a.username.unwrap_or_default(),
                    password,
                }
            }
            other => {
                return Err(ApiError::fields(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "the settings are not valid",
                    vec![FieldError::new(
                        "scrape_auth.mode",
                        format!("{other:?} is not one of none, bearer, basic"),
                    )],
                ));
            }
        },
    };
    let https_listen = match input.https_listen {
        None => old.https_listen.clone(),
        Some(l) => l.map(|l| l.trim().to_string()).filter(|l| !l.is_empty()),
    };
    let new = Settings {
        allowed_hosts: input
            .allowed_hosts
            .unwrap_or_else(|| old.allowed_hosts.clone()),
        probe_allowlist: input
            .probe_allowlist
            .unwrap_or_else(|| old.probe_allowlist.clone()),
        scrape_auth,
        https_listen,
    };
    new.validate().map_err(|errs| {
        ApiError::fields(
            StatusCode::UNPROCESSABLE_ENTITY,
            "the settings are not valid",
            errs,
        )
    })?;
    web.settings
        .set(new.clone())
        .map_err(|e| ApiError::internal("cannot save the settings", e))?;
    if new.https_listen != old.https_listen
        && let Err(msg) = super::apply_https(&web).await
    {
        // Keep what worked: the old settings; the running listener was left as it was.
        let _ = web.settings.set(old);
        return Err(ApiError::fields(
            StatusCode::UNPROCESSABLE_ENTITY,
            "HTTPS could not start; the settings are unchanged",
            vec![FieldError::new("https_listen", msg)],
        ));
    }
    Ok(Json(settings_json(&new)))
}

/// The page's certificate, the one thing the TLS handlers use.
#[derive(Clone)]
struct Https(Arc<super::tls::Tls>);

impl FromRef<Arc<Web>> for Https {
    fn from_ref(web: &Arc<Web>) -> Self {
        Self(web.tls.clone())
    }
}

async fn get_tls(State(Https(tls)): State<Https>) -> Json<Value> {
    Json(json!(tls.info()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsIn {
    cert_pem: String,
    key_pem: String,
}

async fn put_tls(
    State(Https(tls)): State<Https>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Value>> {
    let t: TlsIn = typed(body)?;
    if t.cert_pem.len() > MAX_PEM || t.key_pem.len() > MAX_PEM {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("certificate and key must each be at most {MAX_PEM} bytes"),
        ));
    }
    tls.install(t.cert_pem.as_bytes(), t.key_pem.as_bytes())
        .map_err(|m| {
            let field = if m.contains("key") {
                "key_pem"
            } else {
                "cert_pem"
            };
            ApiError::fields(
                StatusCode::UNPROCESSABLE_ENTITY,
                "the certificate was not installed",
                vec![FieldError::new(field, m)],
            )
        })?;
    tracing::info!("TLS certificate replaced from the web page");
    Ok(Json(json!(tls.info())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_rounded_up() {
        for (wait_ms, want) in [(1, 1), (999, 1), (1000, 1), (1001, 2), (1500, 2), (4000, 4)] {
            let e = login_error(LoginError::RateLimited(Duration::from_millis(wait_ms)));
            assert_eq!(e.retry_after, Some(want), "{wait_ms} ms");
            let r = e.into_response();
            assert_eq!(r.headers()[header::RETRY_AFTER], want.to_string());
        }
    }
}
