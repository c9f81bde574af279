//! The trace module's "Run now": [`RUN_TRACES`] traces with the target's trace options, a
//! `hop` event per answer and a `cycle` event (the trace's hops as the report counts them)
//! after each trace. Their path state is their own, so a run never shows up as a path change
//! of the target's scheduled traces.

use std::time::Duration;

use serde_json::{Value, json};

use crate::config::{Target, TraceOptions};
use crate::probe::Progress;
use crate::probe::live::{Fields, LiveRun, ms};
use crate::sample::{Sample, TraceReport};

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
    /// The trace's hops as the report counts them (the page's table takes loss from these).
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
