//! Ping counters and the RTT histogram of one target, as the ping kind declares them
//! ([`vantage_core::ping_series`]); its per-round gauges are in `rounds`.

use std::sync::LazyLock;

use vantage_core::PingReport;
use vantage_core::ping_series::{self as series, COUNTERS, RTT_HISTOGRAM};

use super::text::{Buckets, Counter, Histogram, Kind, Lines};
use super::{Family, TargetSeries};

static RTT_BUCKETS: LazyLock<Buckets> = LazyLock::new(|| {
    Buckets::exponential(
        RTT_HISTOGRAM.start,
        RTT_HISTOGRAM.factor,
        RTT_HISTOGRAM.count,
    )
});

#[derive(Debug)]
pub struct PingSeries {
    rtt: Histogram,
    /// One per [`COUNTERS`], in its order.
    counters: [Counter; COUNTERS.len()],
}

impl Default for PingSeries {
    fn default() -> Self {
        Self {
            rtt: Histogram::new(&RTT_BUCKETS),
            counters: Default::default(),
        }
    }
}

impl PingSeries {
    pub fn observe(&self, r: &PingReport) {
        series::observe(r, &mut |_, v| self.rtt.observe(v));
        series::count(r, &mut |i, n| self.counters[i].add(n));
    }
}

/// The family of [`COUNTERS`]`[I]`.
const fn counter<const I: usize>() -> Family {
    Family {
        name: COUNTERS[I].name,
        help: COUNTERS[I].help,
        kind: Kind::Counter,
        write: |t: &TargetSeries, name: &str, l: &mut Lines<'_>| {
            if let Some(p) = &t.ping {
                l.sample(name, &[], None, p.counters[I].get() as f64);
            }
        },
    }
}

pub const FAMILIES: [Family; 1 + COUNTERS.len()] = [
    Family {
        name: RTT_HISTOGRAM.name,
        help: RTT_HISTOGRAM.help,
        kind: Kind::Histogram,
        write: |t, name, l| {
            if let Some(p) = &t.ping {
                p.rtt.write(name, l);
            }
        },
    },
    counter::<0>(),
    counter::<1>(),
    counter::<2>(),
    counter::<3>(),
];
