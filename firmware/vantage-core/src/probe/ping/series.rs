//! A ping round's series: its gauges, the RTT histogram and the counters the daemon keeps,
//! and the round as the store keeps it (µs resolution, [`StoredPing`]). The one definition
//! of what a ping round shows; the store, remote_write, `/metrics` and `/probe` read it here.
//!
//! The store writes [`StoredPing`] in its own compact block layout (flag bits and varints,
//! about 10 bytes a round), which it has written since its first version, and reads it back
//! into these figures. The module's own encoding ([`StoredPing::encode`], what the module trait
//! hands around as a stored round's bytes):
//!
//! ```text
//! version u8 = 1
//! sent, received, duplicates, icmp_errors   varints
//! [received replies] min µs, avg µs, max µs, stddev µs   varints (absent without replies)
//! ```

use std::time::Duration;

use super::super::tcp::{put_varint, varint};
use crate::sample::PingReport;
use crate::series::{CounterDef, Gauge, HistogramDef, Point, gauge, labelled, secs};

pub static RTT: Gauge = labelled(
    "vantage_ping_round_rtt_seconds",
    "stat",
    "Round-trip times of the last round: min, avg, max and stddev (absent for a round without replies).",
);
pub static LOSS: Gauge = gauge(
    "vantage_ping_loss_ratio",
    "Share of echo requests of the last round that got no reply.",
);
pub static SENT: Gauge = gauge(
    "vantage_ping_round_packets_sent",
    "Echo requests sent in the last round.",
);
pub static RECEIVED: Gauge = gauge(
    "vantage_ping_round_packets_received",
    "Echo replies received in time in the last round.",
);
pub static DUPLICATES: Gauge = gauge(
    "vantage_ping_round_duplicates",
    "Duplicate echo replies received in the last round.",
);

/// Every per-round gauge of a ping round, in the order `/metrics` writes their families.
pub static GAUGES: [&Gauge; 5] = [&RTT, &LOSS, &SENT, &RECEIVED, &DUPLICATES];

/// The RTT of every reply: 50 µs doubling to ~26 s (20 buckets), as smokeping_prober uses.
pub const RTT_HISTOGRAM: HistogramDef = HistogramDef {
    name: "vantage_ping_rtt_seconds",
    help: "Round-trip time of each echo reply.",
    start: 0.00005,
    factor: 2.0,
    count: 20,
};

/// What [`count`] adds to, by index.
pub const COUNTERS: [CounterDef; 4] = [
    CounterDef {
        name: "vantage_ping_packets_sent_total",
        help: "Echo requests sent.",
    },
    CounterDef {
        name: "vantage_ping_packets_received_total",
        help: "Echo replies received in time.",
    },
    CounterDef {
        name: "vantage_ping_duplicates_total",
        help: "Duplicate echo replies received.",
    },
    CounterDef {
        name: "vantage_ping_icmp_errors_total",
        help: "ICMP errors (unreachable, time exceeded) received for echo requests.",
    },
];

/// What a round adds to [`RTT_HISTOGRAM`] (index 0): each reply's RTT, in seconds. Called
/// for every round of every target: it does not allocate.
pub fn observe(r: &PingReport, add: &mut dyn FnMut(usize, f64)) {
    for rtt in &r.rtts {
        add(0, rtt.as_secs_f64());
    }
}

/// What a round adds to each of [`COUNTERS`], by index.
pub fn count(r: &PingReport, add: &mut dyn FnMut(usize, u64)) {
    let figures = [r.sent, r.received, r.duplicates, r.icmp_errors];
    for (i, n) in figures.into_iter().enumerate() {
        add(i, u64::from(n));
    }
}

/// The points before the first round: every series that does not depend on one, at 0.
pub fn initial_points(out: &mut Vec<Point>) {
    for g in [&SENT, &RECEIVED, &DUPLICATES, &LOSS] {
        out.push(Point::new(g, 0.0));
    }
}

/// Ping figures of one stored round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoredPing {
    pub sent: u32,
    pub received: u32,
    pub duplicates: u32,
    pub icmp_errors: u32,
    /// min, avg, max RTT in µs, when at least one reply came back.
    pub rtt_us: Option<(u64, u64, u64)>,
    /// Population standard deviation of the RTTs in µs (0 with one reply).
    pub stddev_us: u64,
}

/// The version byte of [`StoredPing::encode`].
const VERSION: u8 = 1;

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl StoredPing {
    /// What the store keeps of a round.
    pub fn from_report(p: &PingReport) -> Self {
        Self {
            sent: p.sent,
            received: p.received,
            duplicates: p.duplicates,
            icmp_errors: p.icmp_errors,
            rtt_us: match (p.min(), p.mean(), p.max()) {
                (Some(a), Some(b), Some(c)) => Some((micros(a), micros(b), micros(c))),
                _ => None,
            },
            stddev_us: p
                .stddev_seconds()
                .map_or(0, |s| (s * 1e6).round().max(0.0) as u64),
        }
    }

    pub fn loss_ratio(&self) -> f64 {
        if self.sent == 0 {
            1.0
        } else {
            1.0 - f64::from(self.received.min(self.sent)) / f64::from(self.sent)
        }
    }

    /// The gauges the round shows. A round without replies has no RTT points: an absent
    /// series says "none", where 0 would claim an instant answer.
    pub fn points(&self, out: &mut Vec<Point>) {
        out.push(Point::new(&SENT, f64::from(self.sent)));
        out.push(Point::new(&RECEIVED, f64::from(self.received)));
        out.push(Point::new(&DUPLICATES, f64::from(self.duplicates)));
        out.push(Point::new(&LOSS, self.loss_ratio()));
        if let Some((min, avg, max)) = self.rtt_us {
            out.push(Point::labelled(&RTT, "min", secs(min)));
            out.push(Point::labelled(&RTT, "avg", secs(avg)));
            out.push(Point::labelled(&RTT, "max", secs(max)));
            out.push(Point::labelled(&RTT, "stddev", secs(self.stddev_us)));
        }
    }

    /// The round's named values (the store's query answers).
    pub fn values(&self, out: &mut Vec<(&'static str, f64)>) {
        out.push(("sent", f64::from(self.sent)));
        out.push(("received", f64::from(self.received)));
        out.push(("duplicates", f64::from(self.duplicates)));
        out.push(("loss_ratio", self.loss_ratio()));
        if let Some((min, avg, max)) = self.rtt_us {
            out.push(("rtt_min_seconds", secs(min)));
            out.push(("rtt_avg_seconds", secs(avg)));
            out.push(("rtt_max_seconds", secs(max)));
            out.push(("rtt_stddev_seconds", secs(self.stddev_us)));
        }
    }

    /// The module's encoding of the figures (see the top of this file).
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(VERSION);
        for n in [self.sent, self.received, self.duplicates, self.icmp_errors] {
            put_varint(out, u64::from(n));
        }
        if let Some((min, avg, max)) = self.rtt_us {
            for us in [min, avg, max, self.stddev_us] {
                put_varint(out, us);
            }
        }
    }

    /// Figures from [`Self::encode`]'s bytes; `None` for bytes it cannot read.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let (&version, mut b) = bytes.split_first()?;
        if version != VERSION {
            return None;
        }
        let mut n = || varint(&mut b).and_then(|v| u32::try_from(v).ok());
        let (sent, received, duplicates, icmp_errors) = (n()?, n()?, n()?, n()?);
        let (rtt_us, stddev_us) = if b.is_empty() {
            (None, 0)
        } else {
            let mut us = || varint(&mut b);
            let rtts = (us()?, us()?, us()?);
            (Some(rtts), us()?)
        };
        b.is_empty().then_some(Self {
            sent,
            received,
            duplicates,
            icmp_errors,
            rtt_us,
            stddev_us,
        })
    }

    /// The round's main time, whose distribution a range of rounds keeps: the mean RTT.
    pub fn time_us(&self) -> Option<u64> {
        self.rtt_us.map(|(_, avg, _)| avg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> PingReport {
        let us = Duration::from_micros;
        PingReport {
            sent: 4,
            received: 3,
            duplicates: 1,
            icmp_errors: 2,
            rtts: vec![us(100), us(200), us(600)],
            ..PingReport::default()
        }
    }

    #[test]
    fn a_round_shows_its_figures_and_rtts_only_with_replies() {
        let s = StoredPing::from_report(&report());
        assert_eq!(s.rtt_us, Some((100, 300, 600)));
        assert_eq!(s.stddev_us, 216);
        let mut p = Vec::new();
        s.points(&mut p);
        assert_eq!(p.len(), 8);
        assert!(p.iter().any(|p| p.gauge == &LOSS && p.value == 0.25));
        assert!(p.iter().all(|p| GAUGES.contains(&p.gauge)));
        let silent = StoredPing {
            sent: 2,
            ..StoredPing::default()
        };
        let mut p = Vec::new();
        silent.points(&mut p);
        assert!(!p.iter().any(|p| p.gauge == &RTT));
        assert_eq!(silent.loss_ratio(), 1.0);
        assert_eq!(silent.time_us(), None);
        assert_eq!(StoredPing::default().loss_ratio(), 1.0);
        for figures in [s, silent] {
            let mut bytes = Vec::new();
            figures.encode(&mut bytes);
            assert_eq!(StoredPing::decode(&bytes), Some(figures));
            assert_eq!(StoredPing::decode(&bytes[..bytes.len() - 1]), None);
        }
        assert_eq!(StoredPing::decode(&[2, 0, 0, 0, 0]), None);
    }

    #[test]
    fn histogram_and_counters_get_every_reply_and_figure() {
        let mut rtts = Vec::new();
        observe(&report(), &mut |i, v| rtts.push((i, v)));
        assert_eq!(rtts, [(0, 0.0001), (0, 0.0002), (0, 0.0006)]);
        let mut added = Vec::new();
        count(&report(), &mut |i, n| added.push((i, n)));
        assert_eq!(added, [(0, 4), (1, 3), (2, 1), (3, 2)]);
        let mut init = Vec::new();
        initial_points(&mut init);
        assert!(
            init.iter()
                .all(|p| p.value == 0.0 && GAUGES.contains(&p.gauge))
        );
    }
}
