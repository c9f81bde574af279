//! A trace round's series: its gauges, the hop address and balancing families and the
//! path-change counter the daemon keeps, and the round as the store keeps it (µs resolution,
//! [`StoredTrace`]). The one definition of what a trace round shows; the store, its rollup,
//! remote_write, `/metrics` and `/probe` read it here.
//!
//! The store writes [`StoredTrace`] in its own block layout (flag bits and varints, about 17
//! bytes plus 3 per hop), which it has written since its second version, and reads it back
//! into these figures. Hop addresses are not in the round: `path_hash` identifies the path,
//! whose addresses the store keeps once (`detail.rs`).

use std::collections::BTreeSet;
use std::time::Duration;

use crate::sample::TraceReport;
use crate::series::{CounterDef, Gauge, InfoFamily, Point, flag, gauge, labelled, secs};

pub static HOPS: Gauge = gauge(
    "vantage_trace_hops",
    "Hops to the destination in the last trace, or to the last hop that answered.",
);
pub static HOP_RTT: Gauge = labelled(
    "vantage_trace_hop_rtt_seconds",
    "hop",
    "Mean round-trip time of the hop's answers in the last trace (absent: none).",
);
pub static HOP_LOSS: Gauge = labelled(
    "vantage_trace_hop_loss_ratio",
    "hop",
    "Share of the last trace's probes to this hop that got no answer.",
);
pub static PATH_HASH: Gauge = gauge(
    "vantage_trace_path_hash",
    "Identifies the paths the last trace followed (32-bit hash of their hops).",
);
pub static PATHS: Gauge = gauge(
    "vantage_trace_paths",
    "Distinct paths seen within the path window (ECMP branches, or old and new path).",
);
pub static FLOWS_REACHED: Gauge = gauge(
    "vantage_trace_flows_reached_ratio",
    "Share of the last trace's flows that the destination answered (between 0 and 1: some branches do not get through).",
);
pub static PATH_CHANGED: Gauge = gauge(
    "vantage_trace_round_path_changed",
    "1 if the last trace followed a path none of the paths seen within the path window matches.",
);

/// Every per-round gauge of a trace round, in the order `/metrics` writes their families.
pub static GAUGES: [&Gauge; 7] = [
    &HOPS,
    &HOP_RTT,
    &HOP_LOSS,
    &PATH_HASH,
    &PATHS,
    &FLOWS_REACHED,
    &PATH_CHANGED,
];

/// `address` and `hop`: 1 for each address that answered at the hop (at most one per flow and
/// hop, so `max_hops × flows` series). The store keeps no addresses: these come from the last
/// round only.
pub const HOP_INFO: InfoFamily = InfoFamily {
    name: "vantage_trace_hop_info",
    help: "1 for each address that answered at the hop in the last trace.",
    labels: &["address", "hop"],
};

/// `hop` and `kind` (per_flow or per_packet): hops where several addresses answered, at most
/// `max_hops` series.
pub const HOP_BALANCING: InfoFamily = InfoFamily {
    name: "vantage_trace_hop_balancing",
    help: "1 for each hop of the last trace where several addresses answered, with how the balancer before it spreads flows (kind: per_flow or per_packet).",
    labels: &["hop", "kind"],
};

/// The info families, in the order `/metrics` writes them (before the counters).
pub const INFO: [InfoFamily; 2] = [HOP_INFO, HOP_BALANCING];

/// The info series a round shows ([`INFO`] by index): hop by hop, addresses in order.
pub fn info(r: &TraceReport, add: &mut dyn FnMut(usize, Vec<String>)) {
    let answered: BTreeSet<(u8, String)> = r
        .hops
        .iter()
        .flat_map(|h| h.responders.iter().map(|a| (h.ttl, a.address.to_string())))
        .collect();
    for (hop, address) in answered {
        add(0, vec![address, hop.to_string()]);
    }
    for h in &r.hops {
        if let Some(b) = h.balancing {
            add(1, vec![h.ttl.to_string(), b.as_str().to_string()]);
        }
    }
}

/// What [`count`] adds to, by index.
pub const COUNTERS: [CounterDef; 3] = [
    CounterDef {
        name: "vantage_trace_path_changes_total",
        help: "Traces that followed a path none of the paths seen within the path window matches.",
    },
    CounterDef {
        name: "vantage_trace_rate_limited_total",
        help: "Traces that a probe rate limit (the trace's probes_per_second or the device's trace_probes_per_second) held back: some probe waited for its turn.",
    },
    CounterDef {
        name: "vantage_trace_rate_cut_short_total",
        help: "Traces whose time ran out while probes waited for the probe rate limit: they ended without sending them.",
    },
];

/// What a round adds to each of [`COUNTERS`], by index.
pub fn count(r: &TraceReport, add: &mut dyn FnMut(usize, u64)) {
    add(0, u64::from(r.path_changed));
    add(1, u64::from(r.rate_limited));
    add(2, u64::from(r.rate_cut_short));
}

/// The points before the first round: every series that does not depend on one, at 0.
pub fn initial_points(out: &mut Vec<Point>) {
    for g in [&HOPS, &PATH_HASH, &PATHS, &FLOWS_REACHED, &PATH_CHANGED] {
        out.push(Point::new(g, 0.0));
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// One TTL of a stored trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoredHop {
    pub ttl: u8,
    pub sent: u32,
    pub received: u32,
    /// Mean RTT of the hop's answers in µs; `None` when none came back.
    pub rtt_avg_us: Option<u64>,
}

impl StoredHop {
    pub fn loss_ratio(&self) -> f64 {
        if self.sent == 0 {
            1.0
        } else {
            1.0 - f64::from(self.received.min(self.sent)) / f64::from(self.sent)
        }
    }
}

/// Trace figures of one stored round: hop count, per-hop RTT and loss, the path's identity.
/// Hop addresses are not in the round: `path_hash` identifies the path.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoredTrace {
    pub reached: bool,
    /// Hops from the first TTL to the destination, or to the last hop that answered.
    pub hops: Vec<StoredHop>,
    /// min, avg, max RTT of the last hop in µs (the destination's, when reached); present
    /// exactly when the last hop has an RTT, whose mean is its avg.
    pub last_rtt_us: Option<(u64, u64, u64)>,
    pub path_hash: u32,
    pub path_changed: bool,
    pub paths_known: u32,
    /// (flows the destination answered, flows) when it answered some flows but not all (a
    /// partial blackhole); `None` when it answered all or none.
    pub partial: Option<(u32, u32)>,
}

impl StoredTrace {
    /// What the store keeps of a round.
    pub fn from_report(t: &TraceReport) -> Self {
        Self {
            reached: t.reached,
            hops: t
                .hops
                .iter()
                .map(|h| StoredHop {
                    ttl: h.ttl,
                    sent: h.sent,
                    received: h.received,
                    rtt_avg_us: h.mean().map(micros),
                })
                .collect(),
            last_rtt_us: t
                .last_hop()
                .and_then(|h| match (h.min(), h.mean(), h.max()) {
                    (Some(a), Some(b), Some(c)) => Some((micros(a), micros(b), micros(c))),
                    _ => None,
                }),
            path_hash: t.path_hash,
            path_changed: t.path_changed,
            paths_known: t.paths_known,
            partial: (t.reached && t.flows_reached < t.flows).then_some((t.flows_reached, t.flows)),
        }
    }

    /// Hops to the destination or to the last hop that answered: the last hop's TTL.
    pub fn hop_count(&self) -> u32 {
        self.hops.last().map_or(0, |h| u32::from(h.ttl))
    }

    /// Share of the flows that the destination answered.
    pub fn flows_reached_ratio(&self) -> f64 {
        match self.partial {
            Some((reached, flows)) if flows > 0 => f64::from(reached) / f64::from(flows),
            _ => f64::from(u8::from(self.reached)),
        }
    }

    /// The gauges the round shows. A hop without answers has no RTT point: an absent series
    /// says "none", where 0 would claim an instant answer.
    pub fn points(&self, v: &mut Vec<Point>) {
        v.push(Point::new(&HOPS, f64::from(self.hop_count())));
        for h in &self.hops {
            let hop = h.ttl.to_string();
            if let Some(r) = h.rtt_avg_us {
                v.push(Point::labelled(&HOP_RTT, hop.clone(), secs(r)));
            }
            v.push(Point::labelled(&HOP_LOSS, hop, h.loss_ratio()));
        }
        v.push(Point::new(&PATH_HASH, f64::from(self.path_hash)));
        v.push(Point::new(&PATHS, f64::from(self.paths_known)));
        v.push(Point::new(&FLOWS_REACHED, self.flows_reached_ratio()));
        v.push(Point::new(&PATH_CHANGED, flag(self.path_changed)));
    }

    /// The round's named values (the store's query answers): the last hop's figures and the
    /// path's. Per-hop figures are in [`Self::hops`].
    pub fn values(&self, v: &mut Vec<(&'static str, f64)>) {
        v.push(("hops", f64::from(self.hop_count())));
        v.push(("sent", self.hops.iter().map(|h| f64::from(h.sent)).sum()));
        v.push((
            "received",
            self.hops.iter().map(|h| f64::from(h.received)).sum(),
        ));
        if let Some(last) = self.hops.last() {
            v.push(("loss_ratio", last.loss_ratio()));
            if let Some((min, avg, max)) = self.last_rtt_us {
                v.push(("rtt_min_seconds", secs(min)));
                v.push(("rtt_avg_seconds", secs(avg)));
                v.push(("rtt_max_seconds", secs(max)));
            }
        }
        v.push(("path_hash", f64::from(self.path_hash)));
        v.push(("path_changed", flag(self.path_changed)));
        v.push(("paths_known", f64::from(self.paths_known)));
    }

    /// The round's main time, whose distribution a range of rounds keeps: the last hop's mean
    /// RTT.
    pub fn time_us(&self) -> Option<u64> {
        self.last_rtt_us.map(|(_, avg, _)| avg)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::sample::HopReport;

    /// A trace round with a silent hop, 3 of 4 flows through, a changed path.
    pub(in crate::probe::trace) fn report() -> TraceReport {
        let hop = |ttl, sent, rtts: &[u64]| HopReport {
            ttl,
            sent,
            received: rtts.len() as u32,
            rtts: rtts.iter().copied().map(Duration::from_micros).collect(),
            ..HopReport::default()
        };
        TraceReport {
            reached: true,
            flows: 4,
            flows_reached: 3,
            hops: vec![hop(1, 2, &[100, 300]), hop(2, 2, &[]), hop(3, 2, &[900])],
            path_hash: 5,
            path_changed: true,
            paths_known: 2,
            ..TraceReport::default()
        }
    }

    #[test]
    fn a_round_shows_its_hops_and_path() {
        let s = StoredTrace::from_report(&report());
        assert_eq!(s.hop_count(), 3);
        assert_eq!(s.partial, Some((3, 4)));
        assert_eq!(s.time_us(), Some(900));
        let mut p = Vec::new();
        s.points(&mut p);
        assert!(p.iter().all(|p| GAUGES.contains(&p.gauge)));
        // Hop 2 answered nothing: a loss point, no RTT point.
        let rtt_hops: Vec<_> = p
            .iter()
            .filter(|p| p.gauge == &HOP_RTT)
            .map(|p| p.label_value.clone().unwrap())
            .collect();
        assert_eq!(rtt_hops, ["1", "3"]);
        assert!(
            p.iter()
                .any(|p| p.gauge == &FLOWS_REACHED && p.value == 0.75)
        );
        let mut v = Vec::new();
        s.values(&mut v);
        assert!(v.contains(&("rtt_avg_seconds", 0.0009)), "{v:?}");
        assert!(v.contains(&("sent", 6.0)), "{v:?}");
        assert_eq!(StoredTrace::default().flows_reached_ratio(), 0.0);
        assert_eq!(StoredHop::default().loss_ratio(), 1.0);
    }

    #[test]
    fn counters_and_initial_points() {
        let mut added = Vec::new();
        count(&report(), &mut |i, n| added.push((i, n)));
        assert_eq!(added, [(0, 1), (1, 0), (2, 0)]);
        let held = TraceReport {
            rate_limited: true,
            ..report()
        };
        added.clear();
        count(&held, &mut |i, n| added.push((i, n)));
        assert_eq!(added, [(0, 1), (1, 1), (2, 0)]);
        let mut init = Vec::new();
        initial_points(&mut init);
        assert!(
            init.iter()
                .all(|p| p.value == 0.0 && GAUGES.contains(&p.gauge))
        );
    }
}
