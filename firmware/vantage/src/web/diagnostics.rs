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
use vantage_store::{Agg, Dist, HopAgg, StoredSample};

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

/// Phases come from the stored rounds themselves (the per-minute aggregates keep only the
/// total), so only over ranges up to this long: a day of a 1 s target is 86,400 rounds.
pub const PHASES_MAX_RANGE_SECS: u64 = 86_400;
/// Records of the last DNS answer shown; more are counted, not listed.
pub const MAX_RECORDS: usize = 32;
/// A record's data is cut to this many characters (a TXT record may hold kilobytes).
pub const MAX_RECORD_DATA: usize = 256;
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
    let phase_store = store.clone();
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
    if let Some(names) = phase_names(kind) {
        body["phases"] = match phase_store.filter(|_| secs <= PHASES_MAX_RANGE_SECS) {
            Some(store) => {
                let target = t.name.clone();
                let rounds =
                    tokio::task::spawn_blocking(move || store.query(&target, kind, from, to))
                        .await
                        .map_err(|e| ApiError::internal("history failed", e))?
                        .map_err(|e| ApiError::internal("history failed", e))?;
                phases_json(names, &rounds, step_ms)
            }
            None => {
                json!({"names": names, "points": [], "max_range_seconds": PHASES_MAX_RANGE_SECS})
            }
        };
    }
    if let Some((at, report)) = web.history.latest_report(&t.name, kind) {
        body["last"] = last_json(
            at,
            &vantage_core::Report::json(report.report.as_ref()),
            now / 1000,
        );
    }
    Ok(Json(body))
}

/// The phases a kind's rounds have, if the page draws them ([`vantage_core::ProbeModule::phases`]).
pub fn phase_names(kind: ProbeKind) -> Option<&'static [&'static str]> {
    kind.module().map(|m| m.phases()).filter(|p| !p.is_empty())
}

/// Per bucket of `step_ms` with rounds, the mean of each phase (ms) over the rounds that had it
/// (`null` for a phase none had).
pub fn phases_json(names: &[&str], rounds: &[StoredSample], step_ms: i64) -> Value {
    let mut buckets: std::collections::BTreeMap<i64, Vec<(f64, u32)>> = Default::default();
    for r in rounds {
        let t = r.timestamp_ms.div_euclid(step_ms) * step_ms;
        let sums = buckets
            .entry(t)
            .or_insert_with(|| vec![(0.0, 0); names.len()]);
        for (k, v) in r.values() {
            if let Some(i) = k
                .strip_suffix("_seconds")
                .and_then(|p| names.iter().position(|n| *n == p))
            {
                sums[i].0 += v * 1000.0;
                sums[i].1 += 1;
            }
        }
    }
    let points: Vec<Value> = buckets
        .into_iter()
        .map(|(t, sums)| {
            let means: Vec<Option<f64>> = sums
                .iter()
                .map(|&(sum, n)| (n > 0).then(|| (sum / f64::from(n) * 1000.0).round() / 1000.0))
                .collect();
            json!({"t": t / 1000, "ms": means})
        })
        .collect();
    json!({"names": names, "points": points, "max_range_seconds": PHASES_MAX_RANGE_SECS})
}

/// One answer record as the page lists it, its data cut to [`MAX_RECORD_DATA`] characters.
fn record_json(r: &Value) -> Value {
    let data = r.get("data").and_then(Value::as_str).unwrap_or_default();
    let cut = data.chars().count() > MAX_RECORD_DATA;
    let mut shown: String = data.chars().take(MAX_RECORD_DATA).collect();
    if cut {
        shown.push('…');
    }
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
        out["records_total"] = json!(answers.len());
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
    if kind == ProbeKind::TRACE {
        body["hops"] = all.hops.iter().map(hop_json).collect();
    }
    body
}
