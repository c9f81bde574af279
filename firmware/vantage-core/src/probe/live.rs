//! "Run now": a few rounds of one target while someone watches, each answer shown as it
//! arrives (the page's live ping burst and traces). The daemon claims the run, streams its
//! events and stops it; a kind that runs live says through [`LiveRun`] how many rounds, with
//! which options, and what the page shows of them. A kind without one
//! ([`ProbeModule::live`]'s default) does not stream.
//!
//! The events describe themselves, so that one renderer on the page serves every kind:
//! `start` carries the [`Table`] the run fills (its layout, its rows' key and its columns),
//! then [`LiveEvent`]s set rows by key (the kind computes each row's figures) or tell what
//! the run is doing, and `summary` ends the run with the kind's summary in words (docs/API.md
//! lists the fields).
//!
//! [`ProbeModule::live`]: super::ProbeModule::live

use std::fmt::Debug;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value};

use super::round::Progress;
use crate::config::target::Target;
use crate::sample::Sample;

/// An event's fields.
pub type Fields = Map<String, Value>;

/// How the page lays a run's rows out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// A table under the columns' labels.
    Table,
    /// Short items side by side, each its row's cells joined by ": " (the labels unshown).
    List,
}

/// How a column's numbers show: as they are, or formatted like the page's other figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    Count,
    /// Milliseconds.
    Ms,
    /// A share from 0 to 1, shown as a percentage.
    Ratio,
}

/// One column of a run's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Column {
    pub label: &'static str,
    pub unit: Unit,
}

/// The table a run fills: its layout, the name of its rows' key (the page marks each row
/// with it: `data-seq`, `data-hop`) and its columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Table {
    pub layout: Layout,
    pub key: &'static str,
    pub columns: &'static [Column],
}

/// An event of a run between its start and its summary.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum LiveEvent {
    /// Sets row `key` (a new row goes in key order): `cells` in the table's column order, a
    /// number in its column's unit, a text as it is, null for none; `lost` marks an answer
    /// that never came, `hidden` a row the page keeps out of sight.
    Row {
        key: u32,
        cells: Vec<Value>,
        lost: bool,
        hidden: bool,
    },
    /// What the run is doing now, in words.
    Status { text: String },
}

impl LiveEvent {
    /// The event as the stream sends it.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// How a kind runs live. The daemon writes each event's `type` and `kind`, the start event's
/// `target`, `host` and `table`; the kind adds its own fields.
pub trait LiveRun: Send + Sync + Debug {
    /// What a run does, in a few words ("a burst of 20 echo requests").
    fn what(&self) -> String;
    /// Rounds in a run (the run stops early after a round that measured nothing: no socket,
    /// no address, which another round would not have either).
    fn rounds(&self) -> u32;
    /// The pause between two rounds.
    fn gap(&self) -> Duration {
        Duration::ZERO
    }
    /// The table the run fills.
    fn table(&self) -> Table;
    /// The start event's own fields, from the target as configured: `text` says what the run
    /// is about to do.
    fn start(&self, target: &Target, event: &mut Fields);
    /// The target as the run probes it, after the start event: a run's own options, or a
    /// name of its own for a kind that compares a round with the last one to the same target.
    fn target(&self, _target: &mut Target) {}
    /// A run's rows, empty: the rows fill from its answers.
    fn rows(&self) -> Box<dyn LiveRows>;
    /// The summary event's own fields, from the last round and the number of rounds run:
    /// `text` is the summary in words.
    fn summary(&self, last: Option<&Sample>, rounds: u32, event: &mut Fields);
}

/// One run's rows as they fill.
pub trait LiveRows: Send {
    /// An answer of round `round` (from 1): the events it makes (the rows it changes).
    fn answer(&mut self, p: &Progress, round: u32) -> Vec<LiveEvent>;
    /// The events after round `round`, from its sample.
    fn round(&mut self, _round: u32, _sample: &Sample) -> Vec<LiveEvent> {
        Vec::new()
    }
}

/// A time as a live event shows it: milliseconds, to the microsecond.
pub(crate) fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// Milliseconds in words, as the page writes them ("1.25 ms", "80 µs"; "–" for none).
pub(crate) fn ms_text(v: Option<f64>) -> String {
    match v {
        None => "–".into(),
        Some(v) if v > 0.0 && v < 0.1 => {
            format!("{:.*} µs", usize::from(v < 0.01), v * 1000.0)
        }
        Some(v) if v < 10.0 => format!("{v:.2} ms"),
        Some(v) if v < 100.0 => format!("{v:.1} ms"),
        Some(v) => format!("{} ms", v.round()),
    }
}

/// A ratio as a percentage in words, as the page writes it ("12.5%"; "–" for none).
pub(crate) fn pct_text(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| {
        format!("{}%", (v * 1000.0).round() / 10.0)
    })
}

/// ` (error)` after a summary, when the last round failed.
pub(crate) fn error_text(last: Option<&Sample>) -> String {
    last.and_then(|s| s.error.as_ref())
        .map_or(String::new(), |e| format!(" ({e})"))
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use serde_json::json;

    use super::*;
    use crate::config::Config;
    use crate::probe::ping::live::RUN_PINGS;
    use crate::probe::ping::options::PingOptions;
    use crate::probe::trace::live::RUN_TRACES;
    use crate::sample::{Measurement, PingReport, ProbeError};
    use crate::types::ProbeKind;

    fn target() -> Target {
        let c = Config::parse(
            "[[targets]]\nname = \"t\"\nhost = \"127.0.0.1\"\nprobes = [\"ping\", \"trace\"]\n\
             ping = { packets = 3, spacing = \"50ms\" }\ntrace = { max_hops = 7 }\n",
            "t.toml",
        )
        .unwrap();
        c.targets[0].as_ref().clone()
    }

    fn live(kind: ProbeKind) -> &'static dyn LiveRun {
        kind.module().and_then(|m| m.live()).expect("runs live")
    }

    fn ping_sample(report: PingReport) -> Sample {
        Sample {
            target: "t".into(),
            probe: ProbeKind::PING,
            timestamp: SystemTime::now(),
            duration: Duration::from_secs(1),
            success: true,
            error: None,
            measurement: Measurement::from(report),
            quality: Default::default(),
        }
    }

    #[test]
    fn times_and_ratios_read_as_on_the_page() {
        let ms = |v| ms_text(Some(v));
        assert_eq!(
            [ms(0.005), ms(0.08), ms(1.5), ms(12.34), ms(123.6)],
            ["5.0 µs", "80 µs", "1.50 ms", "12.3 ms", "124 ms"]
        );
        assert_eq!(ms_text(None), "–");
        assert_eq!(
            [pct_text(Some(0.0)), pct_text(Some(0.125)), pct_text(None)],
            ["0%", "12.5%", "–"]
        );
    }

    /// A ping run is one round of its own packet count with the target's other options; each
    /// echo request is a row of the list, marked when lost; the summary says the figures.
    #[test]
    fn a_ping_run_sends_its_own_burst() {
        let l = live(ProbeKind::PING);
        assert_eq!(l.what(), "a burst of 20 echo requests");
        let mut t = target();
        let mut start = Fields::new();
        l.start(&t, &mut start);
        assert_eq!(
            Value::Object(start),
            json!({"count": RUN_PINGS, "text": "Pinging 127.0.0.1: 20 requests…"})
        );
        assert_eq!(
            json!(l.table()),
            json!({"layout": "list", "key": "seq", "columns": [
                {"label": "Seq", "unit": "count"}, {"label": "RTT", "unit": "ms"}]})
        );
        l.target(&mut t);
        let o: PingOptions = t.options_or_default();
        assert_eq!(
            (o.packets, o.spacing),
            (RUN_PINGS, Duration::from_millis(50))
        );
        assert_eq!((l.rounds(), t.name.as_str()), (1, "t"));
        let mut rows = l.rows();
        let echo = |index, rtt| Progress::new(super::super::ping::live::Echo { index, rtt });
        let answered = rows.answer(&echo(0, Some(Duration::from_micros(1500))), 1);
        assert_eq!(
            answered[0].to_json(),
            json!({"type": "row", "key": 1, "cells": [1, 1.5], "lost": false, "hidden": false})
        );
        let lost = rows.answer(&echo(1, None), 1);
        assert_eq!(
            lost,
            [LiveEvent::Row {
                key: 2,
                cells: vec![json!(2), json!("lost")],
                lost: true,
                hidden: false
            }]
        );
        let s = ping_sample(PingReport {
            sent: 2,
            received: 1,
            rtts: vec![Duration::from_micros(2000)],
            ..PingReport::default()
        });
        assert_eq!(rows.round(1, &s), []);
        let mut summary = Fields::new();
        l.summary(Some(&s), 1, &mut summary);
        assert_eq!(
            summary["text"],
            "2 sent, 1 received, 50% loss; min/avg/max 2.00 ms / 2.00 ms / 2.00 ms"
        );
        assert_eq!(
            (&summary["loss"], &summary["avg_ms"]),
            (&json!(0.5), &json!(2.0))
        );
        let failed = Sample {
            error: Some(ProbeError::Resolve("nowhere: no address".into())),
            measurement: Measurement::None,
            ..s
        };
        let mut none = Fields::new();
        l.summary(Some(&failed), 1, &mut none);
        assert_eq!((&none["sent"], none.get("loss")), (&json!(0), None));
        assert_eq!(
            none["text"],
            "0 sent, 0 received, – loss; min/avg/max – / – / – (cannot resolve: nowhere: no address)"
        );
    }

    /// A trace run's traces keep their path state apart from the target's (a name of their
    /// own); its table is a row per hop, its summary in words.
    #[test]
    fn a_trace_run_is_a_few_traces_of_its_own() {
        let l = live(ProbeKind::TRACE);
        assert_eq!(l.what(), "5 traces");
        let mut t = target();
        let mut start = Fields::new();
        l.start(&t, &mut start);
        assert_eq!(
            Value::Object(start),
            json!({"count": RUN_TRACES, "max_hops": 7, "text": "Tracing 127.0.0.1: 5 traces…"})
        );
        let table = l.table();
        assert_eq!((table.layout, table.key), (Layout::Table, "hop"));
        assert_eq!(table.columns[2].unit, Unit::Ratio);
        l.target(&mut t);
        assert_eq!((l.rounds(), t.name.as_str()), (RUN_TRACES, "run now: t"));
        let mut summary = Fields::new();
        l.summary(None, 0, &mut summary);
        assert_eq!(summary["text"], "0 traces, destination not reached");
    }
}
