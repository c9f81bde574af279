//! HTTP endpoints: `/metrics`, the blackbox-style `/probe`, health, readiness and reload, and
//! `/api/samples` (stored rounds for the charts).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Extension, FromRef, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use vantage_core::{Host, IpProtocol, ModuleOptions, ProbeKind, ProbeRequest, Target};

use crate::fleet::provisioning;
use crate::metrics::Metrics;
use crate::metrics::{TargetSeries, write_targets};
use crate::probe_compat;
use crate::probe_guard::{Allowlist, ProbeGuard, Refusal};
use crate::scrape::TEXT_FORMAT;
use crate::state::{AppState, Lights, Probing, Reloader};
use crate::storage::Storage;

/// Subtracted from Prometheus' scrape timeout so the answer arrives before Prometheus gives up.
const SCRAPE_TIMEOUT_OFFSET: Duration = Duration::from_millis(500);
/// Used when a `/probe` request does not say how long Prometheus waits.
const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(10);

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/probe", get(probe))
        .route("/-/healthy", get(|| async { "Healthy\n" }))
        .route("/-/ready", get(|| async { "Ready\n" }))
        .route("/-/reload", post(reload))
        .route("/api/provisioning", get(provisioning))
        .route("/api/identify", post(identify))
        .route("/api/leds", get(leds))
        .route(
            "/api/samples",
            get(crate::storage::samples).with_state(state.store()),
        )
        .layer(DefaultBodyLimit::max(64 * 1024))
        .with_state(state)
}

/// What `/metrics` answers from: the live series and the store's and remote_write's own.
#[derive(Clone)]
struct Scraping {
    metrics: Arc<Metrics>,
    storage: Option<Arc<Storage>>,
}

impl FromRef<Arc<AppState>> for Scraping {
    fn from_ref(s: &Arc<AppState>) -> Self {
        Self {
            metrics: s.metrics.clone(),
            storage: s.storage.clone(),
        }
    }
}

#[derive(Clone)]
struct Provisioning(Arc<provisioning::State>);

impl FromRef<Arc<AppState>> for Provisioning {
    fn from_ref(s: &Arc<AppState>) -> Self {
        Self(s.provisioning.clone())
    }
}

async fn metrics(State(s): State<Scraping>, headers: HeaderMap) -> Response {
    crate::scrape::answer(s.metrics, s.storage, &headers)
}

/// Where the provisioned targets stand: applied, overridden by local ones, last error.
async fn provisioning(State(Provisioning(p)): State<Provisioning>) -> Response {
    axum::Json(p.status()).into_response()
}

async fn reload(State(Reloader(r)): State<Reloader>) -> Response {
    match r.reload() {
        Ok(()) => (StatusCode::OK, "config reloaded\n").into_response(),
        Err(e) => (
            StatusCode::BAD_REQUEST,
            format!("config reload failed, the running config is unchanged:\n{e}\n"),
        )
            .into_response(),
    }
}

/// `POST /api/identify[?seconds=N]`: blink every LED fast to find the device; `seconds=0`
/// stops. Same access as `/-/reload`.
async fn identify(
    State(lights): State<Lights>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let duration = match q.get("seconds").map(|s| s.trim()) {
        None | Some("") => None,
        Some(s) => match s.parse::<u64>() {
            Ok(n) if n <= vantage_leds::MAX_IDENTIFY.as_secs() => Some(Duration::from_secs(n)),
            _ => {
                return bad_request(format!(
                    "seconds must be a whole number from 0 to {}",
                    vantage_leds::MAX_IDENTIFY.as_secs()
                ));
            }
        },
    };
    let d = lights.identify(duration);
    axum::Json(serde_json::json!({ "identify_seconds": d.as_secs() })).into_response()
}

/// `GET /api/leds`: what each LED shows and why.
async fn leds(State(Lights(leds)): State<Lights>) -> Response {
    axum::Json(leds.snapshot()).into_response()
}

fn bad_request(msg: impl Into<String>) -> Response {
    (StatusCode::BAD_REQUEST, format!("{}\n", msg.into())).into_response()
}

/// How long Prometheus waits for this scrape, minus a margin.
fn scrape_deadline(headers: &HeaderMap) -> Result<Duration, String> {
    let Some(v) = headers.get("X-Prometheus-Scrape-Timeout-Seconds") else {
        return Ok(DEFAULT_PROBE_TIMEOUT);
    };
    let secs: f64 = v
        .to_str()
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .filter(|s: &f64| s.is_finite() && *s > 0.0)
        .ok_or_else(|| {
            "X-Prometheus-Scrape-Timeout-Seconds must be a positive number of seconds".to_string()
        })?;
    let d = Duration::from_secs_f64(secs.min(300.0));
    Ok(d.saturating_sub(SCRAPE_TIMEOUT_OFFSET)
        .max(Duration::from_millis(100)))
}

/// A `/probe` request read: what to run, and the port it reaches first.
struct Plan {
    kind: ProbeKind,
    host: Host,
    port: Option<u16>,
    /// The addresses of a name the round may use (the kind's `ip_protocol`).
    ip_protocol: IpProtocol,
    options: ModuleOptions,
}

/// The request's kind, target and options, or a message for 400: the kind's module reads its
/// target and parameters itself.
fn plan(q: &HashMap<String, String>) -> Result<Plan, String> {
    let module = q
        .get("module")
        .map_or(ProbeKind::DEFAULT.as_str(), String::as_str);
    let kind = module
        .parse::<ProbeKind>()
        .map_err(|msg| format!("module: {msg}"))?;
    let target = q
        .get("target")
        .filter(|t| !t.is_empty())
        .ok_or("target parameter is missing")?;
    let ProbeKind::Module(id) = kind else {
        return Err(format!("module {kind} is not a probe module"));
    };
    let m = id.module();
    let param = |k: &str| q.get(k).map(String::as_str);
    let query = vantage_core::ProbeQuery {
        target,
        param: &param,
        trusted: false,
    };
    let (host, options) = m.probe_options(&query)?;
    Ok(Plan {
        kind,
        host,
        port: m.port(options.as_ref()),
        ip_protocol: m.ip_protocol(options.as_ref()),
        options: ModuleOptions { kind: id, options },
    })
}

/// `/probe`: one round of the kind `module` names, answered with its gauges; a blackbox
/// module name answers with blackbox's names ([`probe_compat`]).
async fn probe(
    State(d): State<Probing>,
    Query(q): Query<HashMap<String, String>>,
    allow: Option<Extension<Allowlist>>,
    headers: HeaderMap,
) -> Response {
    let (q, blackbox) = match probe_compat::translate(&q) {
        Ok(Some(t)) => (t, true),
        Ok(None) => (q, false),
        Err(msg) => return bad_request(msg),
    };
    let p = match plan(&q) {
        Ok(p) => p,
        Err(msg) => return bad_request(msg),
    };
    let guard = ProbeGuard {
        endpoint: d.configs.in_effect().probe_endpoint.clone(),
        kind: p.kind,
        allow: allow.map(|Extension(a)| a),
    };
    let deadline = match scrape_deadline(&headers) {
        Ok(t) => t,
        Err(msg) => return bad_request(msg),
    };
    let started = std::time::Instant::now();
    let lookup = match guard.admit(&p.host, p.port, p.ip_protocol, deadline).await {
        Ok(l) => l,
        Err(Refusal::BadRequest(msg)) => return bad_request(msg),
        Err(Refusal::Forbidden(msg)) => {
            return (StatusCode::FORBIDDEN, format!("{msg}\n")).into_response();
        }
    };
    // The round gets what the check left of the deadline.
    let deadline = deadline
        .saturating_sub(started.elapsed())
        .max(Duration::from_millis(100));
    let Ok(_permit) = d.probe_permits.try_acquire() else {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            "too many /probe requests at once\n",
        )
            .into_response();
    };
    let Some(prober) = d.runner.probe(p.kind) else {
        return bad_request(format!("module {} is not available", p.kind));
    };
    let kind = p.kind;
    let sample = prober
        .run(ProbeRequest {
            target: Arc::new(round_target(p, deadline)),
            deadline: Some(deadline),
            guard: Some(Arc::new(guard)),
            progress: None,
        })
        .await;
    let text = if blackbox {
        probe_compat::render(&sample, Some(lookup))
    } else {
        // Gauges only: a counter or histogram of one round would restart at every request.
        let series = TargetSeries::one_round(kind);
        series.observe(&sample);
        let mut text = String::new();
        write_targets(&[&series], &[], &mut text);
        text
    };
    ([(header::CONTENT_TYPE, TEXT_FORMAT)], text).into_response()
}

/// The target of a `/probe` round, named as its kind names it.
fn round_target(p: Plan, deadline: Duration) -> Target {
    let o = &p.options;
    Target {
        name: o
            .kind
            .module()
            .probe_round_name(&p.host, o.options.as_ref()),
        host: p.host,
        labels: Default::default(),
        probes: vec![(p.kind, deadline)],
        modules: vec![p.options],
    }
}

#[cfg(test)]
#[path = "http_tests.rs"]
mod tests;
