//! `GET /api/targets/{name}/history?probe=ping&range=24h`: a target's diagnostics over a range,
//! read from the store's per-minute aggregates (`docs/STORE.md`): per bucket the median and
//! spread of the round's main time, loss and rounds; the range's summary; DNS rcode and trace
//! path changes; for a trace the mtr-like hop table.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use vantage_core::ProbeKind;
use vantage_store::{Agg, Dist, HopAgg};

use super::Web;
use super::config_file::FieldError;
use super::error::{ApiError, ApiResult};

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

#[derive(Debug, Deserialize)]
pub struct RangeQuery {
    #[serde(default = "default_probe")]
    probe: String,
    #[serde(default = "default_range")]
    range: String,
}

fn default_probe() -> String {
    "ping".into()
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

pub async fn target_history(
    State(web): State<Arc<Web>>,
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
    let cfg = web.state.config();
    let t = target_with_probe(&cfg, &name, kind)?;
    let store = web.state.storage.as_ref().and_then(|s| s.store()).cloned();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64;
    let (step_ms, len_ms) = (step as i64 * 1000, secs as i64 * 1000);
    let to = now;
    let from = (to - len_ms).div_euclid(step_ms) * step_ms;
    let target = t.name.clone();
    let open = store.is_some();
    // Without a store (it could not open: the log says why) there is no history: no points.
    let buckets = match store {
        Some(store) => {
            tokio::task::spawn_blocking(move || store.aggregate(&target, kind, from, to, step_ms))
                .await
                .map_err(|e| ApiError::internal("history failed", e))?
                .map_err(|e| ApiError::internal("history failed", e))?
        }
        None => Vec::new(),
    };
    let mut body = range_body(&t.name, kind, range, (from, to, step), &buckets);
    body["store_open"] = json!(open);
    Ok(Json(body))
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
        "range": range,
        "from": from / 1000,
        "to": to / 1000,
        "step_seconds": step,
        "points": buckets.iter().map(|(t, a)| agg_json(Some(*t), a)).collect::<Vec<_>>(),
        "summary": agg_json(None, &all),
    });
    if kind == ProbeKind::Trace || kind.module().is_some_and(|m| m.keeps_marks()) {
        body["changes"] = json!(changes);
        body["changes_total"] = json!(all.marks.changed);
        body["current"] = json!(all.marks.last.map(|(_, v)| mark_name(kind, v)));
    }
    if kind == ProbeKind::Trace {
        body["hops"] = all.hops.iter().map(hop_json).collect();
    }
    body
}
