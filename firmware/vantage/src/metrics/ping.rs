//! Ping counters and the RTT histogram of one target (its per-round gauges are in `rounds`).

use std::sync::LazyLock;

use vantage_core::PingReport;

use super::text::{Counter, Histogram, Kind, Lines, exponential_buckets};
use super::{Family, TargetSeries};

/// RTT buckets: 50 µs doubling to ~26 s (20 buckets), as smokeping_prober uses.
static RTT_BUCKETS: LazyLock<Vec<f64>> = LazyLock::new(|| exponential_buckets(0.00005, 2.0, 20));

#[derive(Debug)]
pub struct PingSeries {
    rtt: Histogram,
    sent: Counter,
    received: Counter,
    duplicates: Counter,
    icmp_errors: Counter,
}

impl Default for PingSeries {
    fn default() -> Self {
        Self {
            rtt: Histogram::new(&RTT_BUCKETS),
            sent: Counter::default(),
            received: Counter::default(),
            duplicates: Counter::default(),
            icmp_errors: Counter::default(),
        }
    }
}

impl PingSeries {
    pub fn observe(&self, r: &PingReport) {
        for rtt in &r.rtts {
            self.rtt.observe(rtt.as_secs_f64());
        }
        self.sent.add(u64::from(r.sent));
        self.received.add(u64::from(r.received));
        self.duplicates.add(u64::from(r.duplicates));
        self.icmp_errors.add(u64::from(r.icmp_errors));
    }
}

fn counter(t: &TargetSeries, name: &str, l: &mut Lines<'_>, c: fn(&PingSeries) -> &Counter) {
    if let Some(p) = &t.ping {
        l.sample(name, &[], None, c(p).get() as f64);
    }
}

pub const FAMILIES: [Family; 5] = [
    Family {
        name: "vantage_ping_rtt_seconds",
        help: "Round-trip time of each echo reply.",
        kind: Kind::Histogram,
        write: |t, name, l| {
            if let Some(p) = &t.ping {
                p.rtt.write(name, l);
            }
        },
    },
    Family {
        name: "vantage_ping_packets_sent_total",
        help: "Echo requests sent.",
        kind: Kind::Counter,
        write: |t, name, l| counter(t, name, l, |p| &p.sent),
    },
    Family {
        name: "vantage_ping_packets_received_total",
        help: "Echo replies received in time.",
        kind: Kind::Counter,
        write: |t, name, l| counter(t, name, l, |p| &p.received),
    },
    Family {
        name: "vantage_ping_duplicates_total",
        help: "Duplicate echo replies received.",
        kind: Kind::Counter,
        write: |t, name, l| counter(t, name, l, |p| &p.duplicates),
    },
    Family {
        name: "vantage_ping_icmp_errors_total",
        help: "ICMP errors (unreachable, time exceeded) received for echo requests.",
        kind: Kind::Counter,
        write: |t, name, l| counter(t, name, l, |p| &p.icmp_errors),
    },
];
