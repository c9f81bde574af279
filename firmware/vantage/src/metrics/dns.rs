//! DNS counters and the lookup histogram of one target (its per-round gauges are in `rounds`),
//! as the DNS probe declares them.

use std::sync::LazyLock;

use vantage_core::DnsReport;
use vantage_core::dns_series::{self as dns, COUNTERS, LOOKUP_HISTOGRAM as LOOKUP};

use super::text::{Buckets, Counter, Histogram, Kind, Lines};
use super::{Family, TargetSeries};

static LOOKUP_BUCKETS: LazyLock<Buckets> =
    LazyLock::new(|| Buckets::exponential(LOOKUP.start, LOOKUP.factor, LOOKUP.count));

#[derive(Debug)]
pub struct DnsSeries {
    lookup: Histogram,
    counters: [Counter; COUNTERS.len()],
}

impl Default for DnsSeries {
    fn default() -> Self {
        Self {
            lookup: Histogram::new(&LOOKUP_BUCKETS),
            counters: Default::default(),
        }
    }
}

impl DnsSeries {
    pub fn observe(&self, r: &DnsReport) {
        dns::observe(r, &mut |_, v| self.lookup.observe(v));
        dns::count(r, &mut |i, n| {
            if let Some(c) = self.counters.get(i) {
                c.add(n);
            }
        });
    }
}

fn counter<const I: usize>(t: &TargetSeries, name: &str, l: &mut Lines<'_>) {
    if let Some(d) = &t.dns {
        l.sample(name, &[], None, d.counters[I].get() as f64);
    }
}

const fn counter_family<const I: usize>() -> Family {
    Family {
        name: COUNTERS[I].name,
        help: COUNTERS[I].help,
        kind: Kind::Counter,
        write: counter::<I>,
    }
}

pub const FAMILIES: [Family; 4] = [
    Family {
        name: LOOKUP.name,
        help: LOOKUP.help,
        kind: Kind::Histogram,
        write: |t, name, l| {
            if let Some(d) = &t.dns {
                d.lookup.write(name, l);
            }
        },
    },
    counter_family::<0>(),
    counter_family::<1>(),
    counter_family::<2>(),
];

#[cfg(test)]
mod tests {
    use super::*;

    /// Each round adds to the counters the DNS probe declares, in their order; a round
    /// without an answer adds nothing to the lookup histogram.
    #[test]
    fn rounds_add_to_the_declared_counters() {
        let s = DnsSeries::default();
        let r = DnsReport {
            truncated_retry: true,
            stray_datagrams: 3,
            validation_failures: vec!["missing 192.0.2.1".into()],
            ..DnsReport::default()
        };
        s.observe(&r);
        s.observe(&r);
        s.observe(&DnsReport::default());
        let counts: Vec<u64> = s.counters.iter().map(Counter::get).collect();
        assert_eq!(counts, [2, 2, 6]);
        let names: Vec<&str> = FAMILIES.iter().map(|f| f.name).collect();
        assert_eq!(names[0], LOOKUP.name);
        assert_eq!(names[1..], COUNTERS.map(|c| c.name));
    }
}
