//! The trace module's "Run now": [`RUN_TRACES`] traces with the target's trace options, a
//! `hop` event per answer and a `cycle` event (the trace's hops as the report counts them)
//! after each trace. Their path state is their own, so a run never shows up as a path change
//! of the target's scheduled traces.

use std::time::Duration;

use serde_json::{Value, json};

use super::options::TraceOptions;
use crate::config::target::Target;
use crate::probe::live::{Fields, LiveRun, ms};
use crate::probe::round::Progress;
use crate::sample::{Balancing, Sample, TraceReport};

/// Traces of a trace run, [`RUN_GAP`] apart (per-hop loss and spread need a few).
pub const RUN_TRACES: u32 = 5;
const RUN_GAP: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub(crate) struct TraceLive;

impl LiveRun for TraceLive {
    fn rounds(&self) -> u32 {
        RUN_TRACES
    }
    fn gap(&self) -> Duration {
        RUN_GAP
    }
    fn start(&self, target: &Target, event: &mut Fields) {
        let max_hops = target.options_or_default::<TraceOptions>().max_hops;
        event.insert("count".into(), RUN_TRACES.into());
        event.insert("max_hops".into(), max_hops.into());
    }
    fn target(&self, target: &mut Target) {
        target.name = format!("run now: {}", target.name);
    }
    fn progress(&self, p: &Progress, round: u32) -> Option<Value> {
        let Progress::Hop {
            ttl,
            flow,
            from,
            rtt,
            destination,
        } = p
        else {
            return None;
        };
        Some(json!({
            "type": "hop",
            "cycle": round,
            "ttl": ttl,
            "flow": flow,
            "address": from,
            "rtt_ms": ms(*rtt),
            "destination": destination,
        }))
    }
    /// The trace's hops as the report counts them (the page's table takes loss from these),
    /// with how the hop's addresses balance when there are several (`per_flow`: branches,
    /// `per_packet`), else null.
    fn round(&self, round: u32, s: &Sample) -> Option<Value> {
        let r = s.measurement.trace()?;
        Some(json!({
            "type": "cycle",
            "cycle": round,
            "reached": r.reached,
            "hops": r.hops.iter().map(|h| json!({
                "ttl": h.ttl,
                "sent": h.sent,
                "received": h.received,
                "addresses": h.responders.iter().map(|a| a.address).collect::<Vec<_>>(),
                "balancing": h.balancing.map(Balancing::as_str),
            })).collect::<Vec<_>>(),
        }))
    }
    fn summary(&self, last: Option<&Sample>, rounds: u32, event: &mut Fields) {
        let report = last.and_then(|s| s.measurement.trace());
        let error = last.and_then(|s| s.error.as_ref()).map(ToString::to_string);
        for (k, v) in [
            ("cycles", json!(rounds)),
            ("success", json!(last.is_some_and(|s| s.success))),
            ("error", json!(error)),
            ("reached", json!(report.is_some_and(|r| r.reached))),
            ("hop_count", json!(report.map(TraceReport::hop_count))),
        ] {
            event.insert(k.into(), v);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::sample::{HopReport, Measurement};
    use crate::types::ProbeKind;

    fn hop(ttl: u8, addrs: &[&str], balancing: Option<Balancing>) -> HopReport {
        HopReport {
            sent: 3,
            received: 3,
            balancing,
            ..HopReport::answered_by(ttl, addrs)
        }
    }

    #[test]
    fn a_cycle_lists_each_hops_branches_and_their_balancing() {
        let report = TraceReport {
            reached: true,
            hops: vec![
                hop(1, &["10.0.0.1"], None),
                hop(2, &["10.0.1.1", "10.0.1.2"], Some(Balancing::PerFlow)),
                hop(3, &["10.0.2.1", "10.0.2.2"], Some(Balancing::PerPacket)),
            ],
            ..TraceReport::default()
        };
        let sample = Sample {
            target: "t".into(),
            probe: ProbeKind::TRACE,
            timestamp: SystemTime::UNIX_EPOCH,
            duration: Duration::ZERO,
            success: true,
            error: None,
            measurement: Measurement::from(report),
            quality: Default::default(),
        };
        let e = TraceLive.round(2, &sample).unwrap();
        assert_eq!((&e["type"], &e["cycle"]), (&json!("cycle"), &json!(2)));
        let hops = e["hops"].as_array().unwrap();
        assert_eq!(hops[1]["addresses"], json!(["10.0.1.1", "10.0.1.2"]));
        let kinds: Vec<&Value> = hops.iter().map(|h| &h["balancing"]).collect();
        assert_eq!(
            kinds,
            [&Value::Null, &json!("per_flow"), &json!("per_packet")]
        );
    }
}
