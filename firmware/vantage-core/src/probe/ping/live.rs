//! The ping module's "Run now": one round of [`RUN_PINGS`] echo requests with the target's
//! other ping options, an `echo` event per request.

use std::sync::Arc;

use serde_json::{Value, json};

use super::module::KIND;
use super::options::PingOptions;
use crate::config::target::Target;
use crate::probe::live::{Fields, LiveRun, ms};
use crate::probe::round::Progress;
use crate::sample::Sample;
use crate::types::ProbeKind;

/// Echo requests of a ping run.
pub const RUN_PINGS: u32 = 20;

#[derive(Debug)]
pub(crate) struct PingLive;

impl LiveRun for PingLive {
    fn rounds(&self) -> u32 {
        1
    }
    fn start(&self, _target: &Target, event: &mut Fields) {
        event.insert("count".into(), RUN_PINGS.into());
    }
    fn target(&self, target: &mut Target) {
        let options = PingOptions {
            packets: RUN_PINGS,
            ..target.options_or_default()
        };
        target.set_options(ProbeKind::Module(KIND), Arc::new(options));
    }
    fn progress(&self, p: &Progress, _round: u32) -> Option<Value> {
        let Progress::Echo { index, rtt } = p else {
            return None;
        };
        Some(json!({"type": "echo", "seq": index + 1, "rtt_ms": rtt.map(ms)}))
    }
    fn summary(&self, last: Option<&Sample>, _rounds: u32, event: &mut Fields) {
        let mut put = |k: &str, v: Value| {
            event.insert(k.into(), v);
        };
        put("success", json!(last.is_some_and(|s| s.success)));
        let error = last.and_then(|s| s.error.as_ref()).map(ToString::to_string);
        put("error", json!(error));
        put("sent", json!(0));
        put("received", json!(0));
        let Some(p) = last.and_then(|s| s.measurement.ping()) else {
            return;
        };
        put("address", json!(p.address));
        put("sent", json!(p.sent));
        put("received", json!(p.received));
        put("duplicates", json!(p.duplicates));
        put("loss", json!(p.loss_ratio()));
        put("min_ms", json!(p.min().map(ms)));
        put("avg_ms", json!(p.mean().map(ms)));
        put("max_ms", json!(p.max().map(ms)));
    }
}
