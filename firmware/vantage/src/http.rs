//! HTTP endpoints: `/metrics`, the blackbox-style `/probe`, health, readiness and reload, and
//! `/api/samples` (stored rounds for the charts).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use vantage_core::config::parse_host;
use vantage_core::{
    DnsOptions, DnsTransport, Host, ModuleOptions, PingOptions, ProbeKind, ProbeRequest, Target,
    TraceOptions, TraceProtocol, defaults,
};

use crate::daemon::Daemon;
use crate::metrics::{TargetSeries, write_targets};

const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Subtracted from Prometheus' scrape timeout so the answer arrives before Prometheus gives up.
const SCRAPE_TIMEOUT_OFFSET: Duration = Duration::from_millis(500);
/// Used when a `/probe` request does not say how long Prometheus waits.
const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(10);

pub fn router(daemon: Arc<Daemon>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/probe", get(probe))
        .route("/-/healthy", get(|| async { "Healthy\n" }))
        .route("/-/ready", get(|| async { "Ready\n" }))
        .route("/-/reload", post(reload))
        .route("/api/provisioning", get(provisioning))
        .route("/api/identify", post(identify))
        .route("/api/leds", get(leds))
        .route("/api/samples", get(crate::storage::samples))
        .layer(DefaultBodyLimit::max(64 * 1024))
        .with_state(daemon)
}

async fn metrics(State(d): State<Arc<Daemon>>, headers: HeaderMap) -> Response {
    let gzip = accepts_gzip(&headers);
    let scrape = headers.contains_key("x-prometheus-scrape-timeout-seconds");
    // Rendering thousands of targets takes a while: off the async workers, so that probes
    // due meanwhile still start on time.
    let render = move || {
        let text = d.metrics.render();
        // A Prometheus scrape covered the rounds until now (`send = "gaps"` skips them).
        if scrape && let Some(s) = &d.storage {
            s.note_scrape();
        }
        if gzip {
            gzip_bytes(text.as_bytes())
        } else {
            text.into_bytes()
        }
    };
    match tokio::task::spawn_blocking(render).await {
        Ok(body) if gzip => (
            [
                (header::CONTENT_TYPE, TEXT_FORMAT),
                (header::CONTENT_ENCODING, "gzip"),
                (header::VARY, "accept-encoding"),
            ],
            body,
        )
            .into_response(),
        Ok(body) => (
            [
                (header::CONTENT_TYPE, TEXT_FORMAT),
                (header::VARY, "accept-encoding"),
            ],
            body,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("rendering failed: {e}\n"),
        )
            .into_response(),
    }
}

/// Does the client take gzip (`Accept-Encoding: gzip`, not `gzip;q=0`)? Prometheus asks for it.
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';').map(str::trim);
            let coding = parts.next().unwrap_or("");
            let q = parts
                .find_map(|p| p.strip_prefix("q="))
                .and_then(|q| q.trim().parse::<f64>().ok())
                .unwrap_or(1.0);
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && q > 0.0
        })
}

/// Fast compression: a scrape is compressed once and read once; level 1 gets most of the gain.
pub(crate) fn gzip_bytes(raw: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(raw.len() / 6),
        flate2::Compression::fast(),
    );
    enc.write_all(raw).expect("writing into a Vec cannot fail");
    enc.finish().expect("writing into a Vec cannot fail")
}

/// Where the provisioned targets stand: applied, overridden by local ones, last error.
async fn provisioning(State(d): State<Arc<Daemon>>) -> Response {
    axum::Json(d.provisioning.status()).into_response()
}

async fn reload(State(d): State<Arc<Daemon>>) -> Response {
    match d.reload() {
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
    State(d): State<Arc<Daemon>>,
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
    let d = d.identify(duration);
    axum::Json(serde_json::json!({ "identify_seconds": d.as_secs() })).into_response()
}

/// `GET /api/leds`: what each LED shows and why.
async fn leds(State(d): State<Arc<Daemon>>) -> Response {
    axum::Json(d.leds.snapshot()).into_response()
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

/// The kind, host and (for a probe module) options of a `/probe` request: a module reads its
/// target and parameters itself.
fn probe_target(
    q: &HashMap<String, String>,
) -> Result<(ProbeKind, Host, Vec<ModuleOptions>), String> {
    let module = q.get("module").map_or("ping", String::as_str);
    let kind = module
        .parse::<ProbeKind>()
        .map_err(|msg| format!("module: {msg}"))?;
    let target = q
        .get("target")
        .filter(|t| !t.is_empty())
        .ok_or("target parameter is missing")?;
    let ProbeKind::Module(id) = kind else {
        let host = parse_host(target).map_err(|msg| format!("target {msg}"))?;
        return Ok((kind, host, Vec::new()));
    };
    let param = |k: &str| q.get(k).map(String::as_str);
    let query = vantage_core::ProbeQuery {
        target,
        param: &param,
        trusted: false,
    };
    let (host, options) = id.module().probe_options(&query)?;
    Ok((kind, host, vec![ModuleOptions { kind: id, options }]))
}

async fn probe(
    State(d): State<Arc<Daemon>>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let (kind, host, modules) = match probe_target(&q) {
        Ok(t) => t,
        Err(msg) => return bad_request(msg),
    };
    let dns_query = q.get("query").cloned();
    let dns_type = q.get("type").cloned();
    let dns_transport = q.get("transport").cloned();
    let dns_port = q.get("port").cloned();
    // `module=trace` only: udp (default), icmp or tcp.
    let protocol = q.get("protocol").cloned();
    let mut trace = TraceOptions::default();
    match (kind, protocol.as_deref()) {
        (_, None) => {}
        (ProbeKind::Trace, Some(p)) => match p.parse::<TraceProtocol>() {
            Ok(p) => {
                trace.protocol = p;
                trace.port = match p {
                    TraceProtocol::Udp => defaults::TRACE_UDP_PORT,
                    TraceProtocol::Tcp => defaults::TRACE_TCP_PORT,
                    TraceProtocol::Icmp => 0,
                };
            }
            Err(msg) => return bad_request(format!("protocol: {msg}")),
        },
        (_, Some(_)) => return bad_request("protocol applies to module=trace only"),
    }
    // module=dns asks `query` (and `type`, default A) of the target, over `transport` (default
    // udp) to `port` (the transport's default); the other DNS options take their defaults.
    if kind != ProbeKind::Dns {
        for (name, v) in [("transport", &dns_transport), ("port", &dns_port)] {
            if v.is_some() {
                return bad_request(format!("{name} applies to module=dns only"));
            }
        }
    }
    let dns = match (kind, dns_query) {
        (ProbeKind::Dns, None) => {
            return bad_request("query parameter is missing (module=dns asks the target for it)");
        }
        (ProbeKind::Dns, Some(name)) => {
            let mut o = match DnsOptions::new(&name, dns_type.as_deref().unwrap_or("A")) {
                Ok(o) => o,
                Err(msg) => return bad_request(format!("query/type: {msg}")),
            };
            if let Some(t) = &dns_transport {
                match DnsTransport::parse(t) {
                    Ok(t) => o.transport = t,
                    Err(msg) => return bad_request(format!("transport: {msg}")),
                }
            }
            // The messages of the config file's `port`.
            o.port = match dns_port.as_deref().map(|p| (p, p.parse::<i64>())) {
                None => o.transport.default_port(),
                Some((_, Ok(n))) => match u16::try_from(n) {
                    Ok(p) if p > 0 => p,
                    _ => return bad_request(format!("port: must be between 1 and 65535, got {n}")),
                },
                Some((p, Err(_))) => {
                    return bad_request(format!("port: {p:?} is not a whole number"));
                }
            };
            Some(o)
        }
        _ => None,
    };
    if host.is_system() && kind != ProbeKind::Dns {
        return bad_request("target \"system\" only works with module=dns");
    }
    let deadline = match scrape_deadline(&headers) {
        Ok(t) => t,
        Err(msg) => return bad_request(msg),
    };
    let Ok(_permit) = d.probe_permits.try_acquire() else {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            "too many /probe requests at once\n",
        )
            .into_response();
    };
    let Some(prober) = d.runner.probe(kind) else {
        return bad_request(format!("module {kind} is not available"));
    };
    let target = Target {
        // Traces compare each path with the last one to the same host.
        name: match kind {
            ProbeKind::Trace => format!("/probe/{}/{host}", trace.protocol),
            _ => "probe".into(),
        },
        host,
        labels: Default::default(),
        probes: vec![(kind, deadline)],
        ping: PingOptions::default(),
        trace,
        dns,
        modules,
    };
    let sample = prober
        .run(ProbeRequest {
            target: Arc::new(target),
            deadline: Some(deadline),
        })
        .await;
    // Gauges only: a counter or histogram of one round would restart at every request.
    let series = TargetSeries::one_round(kind);
    series.observe(&sample);
    let mut text = String::new();
    write_targets(&[&series], &[], &mut text);
    ([(header::CONTENT_TYPE, TEXT_FORMAT)], text).into_response()
}

#[cfg(test)]
#[path = "http_tests.rs"]
mod tests;
