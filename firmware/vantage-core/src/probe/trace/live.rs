//! The trace module's "Run now": [`RUN_TRACES`] traces with the target's trace options, shown
//! as an mtr-like table: a row per hop, updated by each answer and by each trace's report
//! (loss, and how a hop's addresses balance). Their path state is their own, so a run never
//! shows up as a path change of the target's scheduled traces.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use serde_json::json;

use super::options::TraceOptions;
use crate::config::target::Target;
use crate::probe::live::{
    Column, Fields, Layout, LiveEvent, LiveRows, LiveRun, Table, Unit, error_text, ms,
};
use crate::probe::round::Progress;
use crate::sample::{Balancing, Sample, TraceReport};

/// An answer to a trace probe as a round sends it live ([`Progress`]): sent with `ttl` on
/// flow `flow`, from `from`; `destination` when the target itself answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HopAnswer {
    pub ttl: u8,
    pub flow: u16,
    pub from: IpAddr,
    pub rtt: Duration,
    pub destination: bool,
}

/// Traces of a trace run, [`RUN_GAP`] apart (per-hop loss and spread need a few).
pub const RUN_TRACES: u32 = 5;
const RUN_GAP: Duration = Duration::from_secs(1);

const fn column(label: &'static str, unit: Unit) -> Column {
    Column { label, unit }
}

/// A run's table: a row per hop (see [`HopRow::event`]).
const TABLE: Table = Table {
    layout: Layout::Table,
    key: "hop",
    columns: &[
        column("Hop", Unit::Count),
        column("Address", Unit::Count),
        column("Loss", Unit::Ratio),
        column("Sent", Unit::Count),
        column("Last", Unit::Ms),
        column("Avg", Unit::Ms),
        column("Best", Unit::Ms),
        column("Worst", Unit::Ms),
    ],
};

#[derive(Debug)]
pub(crate) struct TraceLive;

impl LiveRun for TraceLive {
    fn what(&self) -> String {
        format!("{RUN_TRACES} traces")
    }
    fn rounds(&self) -> u32 {
        RUN_TRACES
    }
    fn gap(&self) -> Duration {
        RUN_GAP
    }
    fn table(&self) -> Table {
        TABLE
    }
    fn start(&self, target: &Target, event: &mut Fields) {
        let max_hops = target.options_or_default::<TraceOptions>().max_hops;
        let text = format!("Tracing {}: {RUN_TRACES} traces…", target.host);
        event.insert("count".into(), RUN_TRACES.into());
        event.insert("max_hops".into(), max_hops.into());
        event.insert("text".into(), text.into());
    }
    fn target(&self, target: &mut Target) {
        target.name = format!("run now: {}", target.name);
    }
    fn rows(&self) -> Box<dyn LiveRows> {
        Box::<Hops>::default()
    }
    fn summary(&self, last: Option<&Sample>, rounds: u32, event: &mut Fields) {
        let report = last.and_then(|s| s.measurement.trace());
        let error = last.and_then(|s| s.error.as_ref()).map(ToString::to_string);
        let reached = report.is_some_and(|r| r.reached);
        let hop_count = report.map(TraceReport::hop_count);
        let text = match hop_count {
            Some(n) if reached => {
                let s = if n == 1 { "" } else { "s" };
                format!("destination reached in {n} hop{s}")
            }
            _ => "destination not reached".into(),
        };
        for (k, v) in [
            ("cycles", json!(rounds)),
            ("success", json!(last.is_some_and(|s| s.success))),
            ("error", json!(error)),
            ("reached", json!(reached)),
            ("hop_count", json!(hop_count)),
            (
                "text",
                json!(format!("{rounds} traces, {text}{}", error_text(last))),
            ),
        ] {
            event.insert(k.into(), v);
        }
    }
}

/// A run's hops so far, and the nearest hop the destination answered at (the destination
/// answers probes sent beyond it too: only its nearest row shows).
#[derive(Debug, Default)]
struct Hops {
    hops: BTreeMap<u8, HopRow>,
    destination: Option<u8>,
}

/// One hop over the run: its addresses in the order they answered, their balancing once a
/// trace told, its RTTs, and its probes as the traces' reports count them.
#[derive(Debug, Default)]
struct HopRow {
    addresses: Vec<IpAddr>,
    balancing: Option<Balancing>,
    rtts: Vec<f64>,
    sent: u32,
    received: u32,
}

impl HopRow {
    fn add(&mut self, address: IpAddr) {
        if !self.addresses.contains(&address) {
            self.addresses.push(address);
        }
    }

    /// The hop's row: hop, addresses (with their balancing, as `vantage trace` marks them),
    /// loss, sent, last, average, best and worst RTT.
    fn event(&self, ttl: u8, destination: Option<u8>) -> LiveEvent {
        let mut place = self
            .addresses
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" ");
        if let Some(b) = self.balancing {
            place += &format!(" [{}]", b.as_str().replace('_', " "));
        }
        if place.is_empty() {
            place = "???".into();
        }
        let n = self.rtts.len();
        let avg = (n > 0).then(|| self.rtts.iter().sum::<f64>() / n as f64);
        let best = self.rtts.iter().copied().reduce(f64::min);
        let worst = self.rtts.iter().copied().reduce(f64::max);
        let sent = (self.sent > 0).then_some(self.sent);
        let loss = sent.map(|s| 1.0 - f64::from(self.received) / f64::from(s));
        LiveEvent::Row {
            key: u32::from(ttl),
            cells: vec![
                json!(ttl),
                json!(place),
                json!(loss),
                json!(sent),
                json!(self.rtts.last()),
                json!(avg.map(round_us)),
                json!(best),
                json!(worst),
            ],
            lost: false,
            hidden: destination.is_some_and(|d| ttl > d),
        }
    }
}

/// Milliseconds to the microsecond, as the run's other times.
fn round_us(v: f64) -> f64 {
    (v * 1e3).round() / 1e3
}

impl Hops {
    fn all(&self) -> Vec<LiveEvent> {
        self.hops
            .iter()
            .map(|(&ttl, h)| h.event(ttl, self.destination))
            .collect()
    }
}

impl LiveRows for Hops {
    fn answer(&mut self, p: &Progress, _round: u32) -> Vec<LiveEvent> {
        let Some(&HopAnswer {
            ttl,
            from,
            rtt,
            destination,
            ..
        }) = p.get()
        else {
            return Vec::new();
        };
        let hop = self.hops.entry(ttl).or_default();
        hop.add(from);
        hop.rtts.push(ms(rtt));
        if destination && self.destination.is_none_or(|d| ttl < d) {
            // Rows beyond it hide.
            self.destination = Some(ttl);
            return self.all();
        }
        vec![hop.event(ttl, self.destination)]
    }

    /// Each hop's probes as the trace's report counts them (loss comes from these), its
    /// addresses and their balancing (per-packet evidence from any trace wins over per-flow).
    fn round(&mut self, round: u32, s: &Sample) -> Vec<LiveEvent> {
        if let Some(r) = s.measurement.trace() {
            for h in &r.hops {
                let hop = self.hops.entry(h.ttl).or_default();
                hop.sent += h.sent;
                hop.received += h.received;
                h.responders.iter().for_each(|a| hop.add(a.address));
                if h.balancing.is_some() && hop.balancing != Some(Balancing::PerPacket) {
                    hop.balancing = h.balancing;
                }
            }
        }
        let mut events = self.all();
        events.push(LiveEvent::Status {
            text: format!("Trace {round} done…"),
        });
        events
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use serde_json::Value;

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

    fn sample(report: TraceReport) -> Sample {
        Sample {
            target: "t".into(),
            probe: ProbeKind::TRACE,
            timestamp: SystemTime::UNIX_EPOCH,
            duration: Duration::ZERO,
            success: true,
            error: None,
            measurement: Measurement::from(report),
            quality: Default::default(),
        }
    }

    fn answer(ttl: u8, from: &str, rtt_us: u64, destination: bool) -> Progress {
        Progress::new(HopAnswer {
            ttl,
            flow: 0,
            from: from.parse().unwrap(),
            rtt: Duration::from_micros(rtt_us),
            destination,
        })
    }

    fn cells(e: &LiveEvent) -> (u32, &[Value], bool) {
        match e {
            LiveEvent::Row {
                key, cells, hidden, ..
            } => (*key, cells, *hidden),
            LiveEvent::Status { .. } => panic!("a row: {e:?}"),
        }
    }

    /// Each answer updates its hop's row: addresses, last, average, best and worst RTT; loss
    /// and sent wait for a trace's report.
    #[test]
    fn an_answer_updates_its_hops_row() {
        let mut rows = TraceLive.rows();
        rows.answer(&answer(1, "10.0.0.1", 1000, false), 1);
        let e = rows.answer(&answer(1, "10.0.0.1", 3000, false), 1);
        let (key, c, hidden) = cells(&e[0]);
        assert_eq!((key, hidden, e.len()), (1, false, 1));
        assert_eq!(
            c,
            [
                json!(1),
                json!("10.0.0.1"),
                Value::Null,
                Value::Null,
                json!(3.0),
                json!(2.0),
                json!(1.0),
                json!(3.0)
            ]
        );
        let other = Progress::new(crate::probe::ping::live::Echo {
            index: 0,
            rtt: None,
        });
        assert_eq!(rows.answer(&other, 1), [], "another kind's answer");
    }

    /// The destination answers probes sent beyond it too: once it answers at a nearer hop,
    /// the rows beyond hide.
    #[test]
    fn rows_beyond_the_destination_hide() {
        let mut rows = TraceLive.rows();
        rows.answer(&answer(3, "192.0.2.9", 500, true), 1);
        rows.answer(&answer(1, "10.0.0.1", 100, false), 1);
        let e = rows.answer(&answer(2, "192.0.2.9", 400, true), 1);
        let shown: Vec<(u32, bool)> = e.iter().map(|e| (cells(e).0, cells(e).2)).collect();
        assert_eq!(shown, [(1, false), (2, false), (3, true)]);
    }

    /// After each trace every row, with loss from the report's counts and the hop's
    /// branches marked with their balancing (per packet wins over per flow), then a status.
    #[test]
    fn a_trace_adds_loss_and_branches() {
        let mut rows = TraceLive.rows();
        let mut lossy = hop(1, &["10.0.0.1"], None);
        lossy.received = 2;
        let report = |two, three| TraceReport {
            reached: true,
            hops: vec![
                lossy.clone(),
                hop(2, &["10.0.1.1", "10.0.1.2"], Some(two)),
                hop(3, &["10.0.2.1"], three),
            ],
            ..TraceReport::default()
        };
        rows.round(1, &sample(report(Balancing::PerPacket, None)));
        let e = rows.round(2, &sample(report(Balancing::PerFlow, None)));
        assert_eq!(e.len(), 4);
        let (_, c, _) = cells(&e[0]);
        assert_eq!((&c[2], &c[3]), (&json!(1.0 - 4.0 / 6.0), &json!(6)));
        assert_eq!(cells(&e[1]).1[1], "10.0.1.1 10.0.1.2 [per packet]");
        assert_eq!(cells(&e[2]).1[1], "10.0.2.1");
        assert_eq!(cells(&e[2]).1[4], Value::Null, "no answer seen live");
        assert_eq!(
            e[3],
            LiveEvent::Status {
                text: "Trace 2 done…".into()
            }
        );
    }
}
