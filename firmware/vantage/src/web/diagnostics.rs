//! `GET /api/targets/{name}/history?probe=ping&range=24h`: a target's diagnostics over a range,
//! read from the store's per-minute aggregates (`docs/STORE.md`): per bucket the median and
//! spread of the round's main time, loss, rounds and each phase's mean; the range's summary;
//! DNS rcode and trace path changes, with the hop addresses of each path before and after; for
//! a trace the mtr-like hop table; the latest answer (from memory, else the store's).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::{FromRef, Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use vantage_core::dns_detail::cut_record_data;
use vantage_core::{DetailUse, ProbeKind};
use vantage_store::{Agg, Dist, HopAgg, PhaseSum, Store, StoredDetail};

use super::Web;
use super::config_file::FieldError;
use super::error::{ApiError, ApiResult};
use super::history::HistorySource;
use crate::state::Configs;

/// The ranges the page offers: name, length and bucket width in seconds (about 60 to 360
/// buckets, each a whole number of the store's minutes).
pub const RANGES: &[(&str, u64, u64)] = &[
    ("1h", 3_600, 60),
    ("24h", 86_400, 300),
    ("7d", 7 * 86_400, 1_800),
    ("30d", 30 * 86_400, 7_200),
];
/// Quantiles of each bucket: the spread drawn as shade around the median.
const QUANTILES: [(&str, f64); 5] = [
    ("p10_ms", 0.10),
    ("p25_ms", 0.25),
    ("median_ms", 0.50),
    ("p75_ms", 0.75),
    ("p90_ms", 0.90),
];

/// Records of the last DNS answer shown (and stored); more are counted, not listed.
pub use vantage_core::dns_detail::MAX_RECORDS;
/// A certificate that expires within this many days is shown as a warning.
pub const CERT_WARN_DAYS: i64 = 14;

#[derive(Debug, Deserialize)]
pub struct RangeQuery {
    #[serde(default = "default_probe")]
    probe: String,
    #[serde(default = "default_range")]
    range: String,
}

fn default_probe() -> String {
    ProbeKind::DEFAULT.as_str().into()
}

fn default_range() -> String {
    "1h".into()
}

fn ms(us: f64) -> f64 {
    (us / 1000.0 * 1000.0).round() / 1000.0
}

fn dist_json(d: &Dist, out: &mut serde_json::Map<String, Value>) {
    for (name, q) in QUANTILES {
        out.insert(name.into(), json!(d.quantile(q).map(ms)));
    }
    out.insert("min_ms".into(), json!((d.n > 0).then(|| ms(d.min as f64))));
    out.insert("max_ms".into(), json!((d.n > 0).then(|| ms(d.max as f64))));
    out.insert("avg_ms".into(), json!(d.mean().map(ms)));
    out.insert("stddev_ms".into(), json!(d.stddev().map(ms)));
}

/// Ping: packets lost over sent; other probes: failed rounds over rounds.
fn loss(a: &Agg) -> Option<f64> {
    if a.sent > 0 {
        Some(1.0 - a.received as f64 / a.sent as f64)
    } else {
        (a.rounds > 0).then(|| 1.0 - f64::from(a.successes) / f64::from(a.rounds))
    }
}

fn agg_json(t: Option<i64>, a: &Agg) -> Value {
    let mut m = serde_json::Map::new();
    if let Some(t) = t {
        m.insert("t".into(), json!(t / 1000));
    }
    m.insert("rounds".into(), json!(a.rounds));
    m.insert("successes".into(), json!(a.successes));
    m.insert("flagged".into(), json!(a.flagged));
    m.insert("loss".into(), json!(loss(a)));
    dist_json(&a.time, &mut m);
    Value::Object(m)
}

fn mark_name(probe: ProbeKind, v: u32) -> String {
    match probe {
        ProbeKind::Module(m) => m.module().mark_name(v),
        _ => format!("{v:08x}"),
    }
}

fn hop_json(h: &HopAgg) -> Value {
    json!({
        "hop": h.ttl,
        "sent": h.sent,
        "received": h.received,
        "loss": (h.sent > 0).then(|| 1.0 - h.received as f64 / h.sent as f64),
        "last_ms": h.last.map(|(_, us)| ms(us as f64)),
        "avg_ms": h.rtt.mean().map(ms),
        "best_ms": (h.rtt.n > 0).then(|| ms(h.rtt.min as f64)),
        "worst_ms": (h.rtt.n > 0).then(|| ms(h.rtt.max as f64)),
        "stddev_ms": h.rtt.stddev().map(ms),
    })
}

/// The target `name` when it runs a `kind` probe; 404 naming what is missing otherwise.
pub(super) fn target_with_probe<'a>(
    cfg: &'a vantage_core::Config,
    name: &str,
    kind: ProbeKind,
) -> ApiResult<&'a vantage_core::Target> {
    let Some(t) = cfg.target(name) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no target named {name:?}"),
        ));
    };
    if t.interval(kind).is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("target {name:?} has no {kind} probe"),
        ));
    }
    Ok(t)
}

fn bad(field: &str, msg: String) -> ApiError {
    ApiError::fields(
        StatusCode::BAD_REQUEST,
        "bad query",
        vec![FieldError::new(field, msg)],
    )
}

/// What the store holds for one range of one target's probe.
struct Stored {
    buckets: Vec<(i64, Agg)>,
    /// Trace paths, the DNS answer: empty for a kind without details.
    details: Vec<StoredDetail>,
}

/// Reads the range's buckets and the probe's details off the async runtime.
async fn read_store(
    store: Arc<vantage_store::Store>,
    target: String,
    kind: ProbeKind,
    (from, to, step_ms): (i64, i64, i64),
) -> ApiResult<Stored> {
    tokio::task::spawn_blocking(move || {
        Ok::<_, vantage_store::backend::BackendError>(Stored {
            buckets: store.aggregate(&target, kind, from, to, step_ms)?,
            details: store.details(&target, kind)?,
        })
    })
    .await
    .map_err(|e| ApiError::internal("history failed", e))?
    .map_err(|e| ApiError::internal("history failed", e))
}

/// What a target's charts read: the config in effect and the recent rounds.
#[derive(Clone)]
pub struct Charts {
    pub configs: Configs,
    pub history: Arc<dyn HistorySource>,
}

impl FromRef<Arc<Web>> for Charts {
    fn from_ref(web: &Arc<Web>) -> Self {
        Self {
            configs: web.state.configs.clone(),
            history: web.history.clone(),
        }
    }
}

/// What a target's page reads: its charts, and the store for the longer ranges.
#[derive(Clone)]
pub struct TargetView {
    charts: Charts,
    store: Option<Arc<Store>>,
}

impl FromRef<Arc<Web>> for TargetView {
    fn from_ref(web: &Arc<Web>) -> Self {
        Self {
            charts: Charts::from_ref(web),
            store: web.state.store(),
        }
    }
}

pub async fn target_history(
    State(v): State<TargetView>,
    Path(name): Path<String>,
    q: Result<Query<RangeQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(q) = q.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let kind: ProbeKind = q.probe.parse().map_err(|m: String| bad("probe", m))?;
    let Some(&(range, secs, step)) = RANGES.iter().find(|(n, _, _)| *n == q.range) else {
        let names: Vec<&str> = RANGES.iter().map(|(n, _, _)| *n).collect();
        return Err(bad(
            "range",
            format!("unknown range {:?}: one of {}", q.range, names.join(", ")),
        ));
    };
    let cfg = v.charts.configs.in_effect();
    let t = target_with_probe(&cfg, &name, kind)?;
    let store = v.store;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64;
    let (step_ms, len_ms) = (step as i64 * 1000, secs as i64 * 1000);
    let to = now;
    let from = (to - len_ms).div_euclid(step_ms) * step_ms;
    let open = store.is_some();
    // Without a store (it could not open: the log says why) there is no history: no points.
    let stored = match store {
        Some(store) => read_store(store, t.name.to_string(), kind, (from, to, step_ms)).await?,
        None => Stored {
            buckets: Vec::new(),
            details: Vec::new(),
        },
    };
    let mut body = range_body(&t.name, kind, range, (from, to, step), &stored.buckets);
    body["store_open"] = json!(open);
    if let Some(DetailUse::PerMark(field)) = kind.module().map(|m| m.detail_use()) {
        body[field] = marked_details(kind, &body, &stored.details);
    }
    if let Some((at, report)) = v.charts.history.latest_report(&t.name, kind) {
        body["last"] = last_json(
            at,
            &vantage_core::Report::json(report.report.as_ref()),
            now / 1000,
        );
    } else if let Some(last) = stored_last(kind, &stored.details, now / 1000) {
        body["last"] = last;
    } else if kind.module().map(|m| m.detail_use()) == Some(DetailUse::LastReport) {
        // The kind shows its latest round, and there is none yet: the page says so.
        body["last"] = Value::Null;
    }
    Ok(Json(body))
}

/// The phases a kind's rounds have, if the page draws them ([`vantage_core::ProbeModule::phases`]).
pub fn phase_names(kind: ProbeKind) -> Option<&'static [&'static str]> {
    kind.module().map(|m| m.phases()).filter(|p| !p.is_empty())
}

/// The latest report the store kept (from before a restart, until a round runs), marked
/// `stored`: of a kind whose details are its latest report ([`DetailUse::LastReport`]).
fn stored_last(kind: ProbeKind, details: &[StoredDetail], now: i64) -> Option<Value> {
    let module = kind.module()?;
    if module.detail_use() != DetailUse::LastReport {
        return None;
    }
    let d = details.last()?;
    let report = module.detail_json(&d.bytes)?;
    let mut last = last_json(d.timestamp_ms as f64 / 1000.0, &report, now);
    last["stored"] = json!(true);
    Some(last)
}

/// The details of each mark the range's changes and `current` name, by that name
/// ([`DetailUse::PerMark`]; trace: `{NAME: {t, reached, hops: [{hop, addresses}]}}`), `t`
/// being when the detail was stored (a path: when it last became current). A mark without a
/// stored detail is left out.
fn marked_details(kind: ProbeKind, body: &Value, details: &[StoredDetail]) -> Value {
    let mut wanted: Vec<&str> = Vec::new();
    for c in body["changes"].as_array().into_iter().flatten() {
        wanted.extend([&c["from"], &c["to"]].into_iter().filter_map(Value::as_str));
    }
    wanted.extend(body["current"].as_str());
    let Some(module) = kind.module() else {
        return json!({});
    };
    let mut out = serde_json::Map::new();
    for d in details {
        let name = mark_name(kind, d.key);
        if !wanted.contains(&name.as_str()) {
            continue;
        }
        if let Some(mut p) = module.detail_json(&d.bytes) {
            p["t"] = json!(d.timestamp_ms as f64 / 1000.0);
            out.insert(name, p);
        }
    }
    Value::Object(out)
}

/// Per bucket with rounds, each phase's mean (ms) over the rounds that had it (`null` for a
/// phase none had), and the range's mean of each (`mean_ms`).
pub fn phases_json(names: &[&str], buckets: &[(i64, Agg)], all: &Agg) -> Value {
    let means = |p: &[PhaseSum]| -> Vec<Option<f64>> {
        (0..names.len())
            .map(|i| {
                p.get(i)
                    .and_then(PhaseSum::mean_us)
                    .map(|us| us.round() / 1000.0)
            })
            .collect()
    };
    let points: Vec<Value> = buckets
        .iter()
        .filter(|(_, a)| a.phases.iter().any(|p| p.n > 0))
        .map(|(t, a)| json!({"t": t / 1000, "ms": means(&a.phases)}))
        .collect();
    json!({"names": names, "points": points, "mean_ms": means(&all.phases)})
}

/// One answer record as the page lists it, its data cut (`vantage_core::dns_detail::cut_record_data`).
fn record_json(r: &Value) -> Value {
    let data = r.get("data").and_then(Value::as_str).unwrap_or_default();
    let shown = cut_record_data(data);
    json!({"name": r.get("name"), "type": r.get("type"), "ttl": r.get("ttl"), "data": shown})
}

/// The latest report (`report` as JSON, from time `at`, Unix seconds) as the page shows it:
/// DNS's rcode, server and records (at most [`MAX_RECORDS`]), HTTP's status, and the TLS
/// certificate's expiry with the days left at `now` (Unix seconds).
pub fn last_json(at: f64, report: &Value, now: i64) -> Value {
    let mut out = json!({"t": at, "cert_warn_days": CERT_WARN_DAYS});
    for k in [
        "rcode",
        "server",
        "transport",
        "address",
        "status",
        "version",
        "tls_version",
    ] {
        if let Some(v) = report.get(k).filter(|v| !v.is_null()) {
            out[k] = v.clone();
        }
    }
    if let Some(answers) = report.get("answers").and_then(Value::as_array) {
        // A stored answer keeps its first records and counts them all.
        let total = report.get("answers_total").and_then(Value::as_u64);
        out["records_total"] = json!(total.unwrap_or(answers.len() as u64));
        out["records_max"] = json!(MAX_RECORDS);
        out["records"] = answers.iter().take(MAX_RECORDS).map(record_json).collect();
    }
    if let Some(n) = report.get("cert_not_after").and_then(Value::as_i64) {
        out["cert_not_after"] = json!(n);
        out["cert_days_left"] = json!((n - now).div_euclid(86_400));
        out["cert_warning"] = json!(n - now < CERT_WARN_DAYS * 86_400);
    }
    out
}

/// The answer for `buckets` of `kind` over (from ms, to ms, step s).
pub fn range_body(
    target: &str,
    kind: ProbeKind,
    range: &str,
    (from, to, step): (i64, i64, u64),
    buckets: &[(i64, Agg)],
) -> Value {
    let mut all = Agg::default();
    for (_, a) in buckets {
        all.merge(a);
    }
    let changes: Vec<Value> = all
        .marks
        .changes
        .iter()
        .map(|(t, a, b)| {
            json!({"t": *t as f64 / 1000.0, "from": mark_name(kind, *a), "to": mark_name(kind, *b)})
        })
        .collect();
    let mut body = json!({
        "target": target,
        "probe": kind,
        // What the points' time is: `RTT`, `lookup`, ...
        "figure": kind.module().map(|m| m.figure()),
        "range": range,
        "from": from / 1000,
        "to": to / 1000,
        "step_seconds": step,
        "points": buckets.iter().map(|(t, a)| agg_json(Some(*t), a)).collect::<Vec<_>>(),
        "summary": agg_json(None, &all),
    });
    if kind.module().is_some_and(|m| m.keeps_marks()) {
        body["changes"] = json!(changes);
        body["changes_total"] = json!(all.marks.changed);
        body["current"] = json!(all.marks.last.map(|(_, v)| mark_name(kind, v)));
    }
    if kind.module().is_some_and(|m| m.keeps_hops()) {
        body["hops"] = all.hops.iter().map(hop_json).collect();
    }
    if let Some(names) = phase_names(kind) {
        body["phases"] = phases_json(names, buckets, &all);
    }
    body
}
