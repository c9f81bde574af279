//! `GET /api/samples`: the stored rounds of one target, for the local charts.

use std::sync::Arc;

use vantage_store::Store;

/// `GET /api/samples?target=NAME[&probe=ping][&from=UNIX_S][&to=UNIX_S]`: the stored rounds of
/// one target and probe (default: the last hour), for the local charts. Rounds from an outage
/// of the uplink are here too, at their own times. Each round has its named `values` (those of
/// `Sample::values`); DNS rounds with an answer also the rcode's name, trace rounds their `hops`,
/// flagged rounds their `flags` ([`round_json`]).
#[derive(Debug, serde::Deserialize)]
pub struct SamplesQuery {
    target: String,
    probe: Option<String>,
    from: Option<f64>,
    to: Option<f64>,
}

/// At most this many rounds per answer (a day of one target at 1 s).
const MAX_SAMPLES_PER_ANSWER: usize = 86_400;

pub async fn samples(
    axum::extract::State(store): axum::extract::State<Option<Arc<Store>>>,
    axum::extract::Query(q): axum::extract::Query<SamplesQuery>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let bad = |m: String| (axum::http::StatusCode::BAD_REQUEST, m).into_response();
    let Some(store) = store else {
        return (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "no store: see the log",
        )
            .into_response();
    };
    let default = vantage_core::ProbeKind::DEFAULT.as_str();
    let probe: vantage_core::ProbeKind = match q.probe.as_deref().unwrap_or(default).parse() {
        Ok(p) => p,
        Err(e) => return bad(e),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let to = q.to.unwrap_or(now);
    let from = q.from.unwrap_or(to - 3600.0);
    if !(from.is_finite() && to.is_finite()) || from > to {
        return bad("from and to are seconds since the epoch, from <= to".into());
    }
    let (from_ms, to_ms) = ((from * 1000.0) as i64, (to * 1000.0) as i64);
    let target = q.target.clone();
    let res =
        tokio::task::spawn_blocking(move || store.query(&target, probe, from_ms, to_ms)).await;
    let rounds = match res {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            return (axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
        }
        Err(e) => {
            return (axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
        }
    };
    let truncated = rounds.len() > MAX_SAMPLES_PER_ANSWER;
    let skip = rounds.len().saturating_sub(MAX_SAMPLES_PER_ANSWER);
    let samples: Vec<serde_json::Value> = rounds.iter().skip(skip).map(round_json).collect();
    axum::Json(serde_json::json!({
        "target": q.target,
        "probe": probe.as_str(),
        "from": from,
        "to": to,
        "truncated": truncated,
        "samples": samples,
    }))
    .into_response()
}

/// One stored round as `/api/samples` shows it; `flags` lists why a round's figures may include
/// the device's own delays (`late`, `cpu`, `memory`), and is absent for most rounds.
fn round_json(r: &vantage_store::StoredSample) -> serde_json::Value {
    let values: serde_json::Map<String, serde_json::Value> = r
        .values()
        .into_iter()
        .map(|(k, v)| (k.to_string(), serde_json::json!(v)))
        .collect();
    let rcode = values
        .get("rcode")
        .and_then(serde_json::Value::as_f64)
        .map(|v| v as u16);
    let mut round = serde_json::json!({
        "timestamp": r.timestamp_ms as f64 / 1000.0,
        "error": r.error.as_str(),
        "values": values,
    });
    // A DNS round with an answer (the one kind with an rcode value): its rcode's name too.
    if let Some(rcode) = rcode {
        round["rcode"] = serde_json::json!(vantage_core::config::rcode_name(rcode));
    }
    if let Some(t) = &r.trace {
        round["hops"] = t
            .hops
            .iter()
            .map(|h| {
                serde_json::json!({
                    "ttl": h.ttl,
                    "sent": h.sent,
                    "received": h.received,
                    "loss_ratio": h.loss_ratio(),
                    "rtt_avg_seconds": h.rtt_avg_us.map(|us| us as f64 / 1e6),
                })
            })
            .collect();
    }
    if !r.quality.is_empty() {
        round["flags"] = serde_json::json!(r.quality);
    }
    round
}

#[cfg(test)]
mod round_json_tests {
    use std::time::{Duration, UNIX_EPOCH};

    use vantage_core::{Measurement, ProbeKind, RoundQuality, Sample};
    use vantage_store::StoredSample;

    use super::round_json;

    #[test]
    fn flagged_rounds_list_their_flags_and_others_have_none() {
        let mut s = Sample {
            target: "t".into(),
            probe: ProbeKind::PING,
            timestamp: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            duration: Duration::from_millis(3),
            success: true,
            error: None,
            measurement: Measurement::None,
            quality: RoundQuality::empty(),
        };
        let plain = round_json(&StoredSample::from_sample(&s, 0));
        assert!(plain.get("flags").is_none(), "{plain}");
        s.quality = RoundQuality::LATE | RoundQuality::MEMORY;
        let flagged = round_json(&StoredSample::from_sample(&s, 0));
        assert_eq!(flagged["flags"], serde_json::json!(["late", "memory"]));
        assert_eq!(flagged["timestamp"], serde_json::json!(1_700_000_000.0));
    }
}
