//! The ping module's "Run now": one round of [`RUN_PINGS`] echo requests with the target's
//! other ping options, a row per request (its RTT, or "lost").

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::options::PingOptions;
use crate::config::target::Target;
use crate::probe::live::{
    Column, Fields, Layout, LiveEvent, LiveRows, LiveRun, Table, Unit, error_text, ms, ms_text,
    pct_text,
};
use crate::probe::round::Progress;
use crate::sample::Sample;
use crate::types::ProbeKind;

/// An echo request's outcome as a round sends it live ([`Progress`]): its RTT, or `None` once
/// it timed out, could not be sent or drew an ICMP error. One per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Echo {
    /// From 0 in the round.
    pub index: u32,
    pub rtt: Option<Duration>,
}

/// Echo requests of a ping run.
pub const RUN_PINGS: u32 = 20;

/// A run's rows: one per echo request, shown as a list ("3: 1.25 ms", "4: lost").
const TABLE: Table = Table {
    layout: Layout::List,
    key: "seq",
    columns: &[
        Column {
            label: "Seq",
            unit: Unit::Count,
        },
        Column {
            label: "RTT",
            unit: Unit::Ms,
        },
    ],
};

#[derive(Debug)]
pub(crate) struct PingLive;

impl LiveRun for PingLive {
    fn what(&self) -> String {
        format!("a burst of {RUN_PINGS} echo requests")
    }
    fn rounds(&self) -> u32 {
        1
    }
    fn table(&self) -> Table {
        TABLE
    }
    fn start(&self, target: &Target, event: &mut Fields) {
        let text = format!("Pinging {}: {RUN_PINGS} requests…", target.host);
        event.insert("count".into(), RUN_PINGS.into());
        event.insert("text".into(), text.into());
    }
    fn target(&self, target: &mut Target) {
        let options = PingOptions {
            packets: RUN_PINGS,
            ..target.options_or_default()
        };
        target.set_options(ProbeKind::PING, Arc::new(options));
    }
    fn rows(&self) -> Box<dyn LiveRows> {
        Box::new(Echoes)
    }
    fn summary(&self, last: Option<&Sample>, _rounds: u32, event: &mut Fields) {
        let mut put = |k: &str, v: Value| {
            event.insert(k.into(), v);
        };
        put("success", json!(last.is_some_and(|s| s.success)));
        let error = last.and_then(|s| s.error.as_ref()).map(ToString::to_string);
        put("error", json!(error));
        let p = last.and_then(|s| s.measurement.ping());
        let (min, avg, max) = p.map_or((None, None, None), |p| {
            (p.min().map(ms), p.mean().map(ms), p.max().map(ms))
        });
        let (sent, received) = p.map_or((0, 0), |p| (p.sent, p.received));
        let loss = p.map(|p| p.loss_ratio());
        put(
            "text",
            json!(format!(
                "{sent} sent, {received} received, {} loss; min/avg/max {} / {} / {}{}",
                pct_text(loss),
                ms_text(min),
                ms_text(avg),
                ms_text(max),
                error_text(last)
            )),
        );
        put("sent", json!(sent));
        put("received", json!(received));
        let Some(p) = p else {
            return;
        };
        put("address", json!(p.address));
        put("duplicates", json!(p.duplicates));
        put("loss", json!(loss));
        put("min_ms", json!(min));
        put("avg_ms", json!(avg));
        put("max_ms", json!(max));
    }
}

/// A ping run's rows: each request's row as its answer (or its end) arrives.
#[derive(Debug)]
struct Echoes;

impl LiveRows for Echoes {
    fn answer(&mut self, p: &Progress, _round: u32) -> Vec<LiveEvent> {
        let Some(&Echo { index, rtt }) = p.get() else {
            return Vec::new();
        };
        let seq = index + 1;
        vec![LiveEvent::Row {
            key: seq,
            cells: vec![json!(seq), rtt.map_or(json!("lost"), |d| json!(ms(d)))],
            lost: rtt.is_none(),
            hidden: false,
        }]
    }
}
