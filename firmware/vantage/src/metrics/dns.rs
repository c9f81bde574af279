//! DNS counters and the lookup histogram of one target (its per-round gauges are in `rounds`).

use std::sync::LazyLock;

use vantage_core::DnsReport;

use super::text::{Counter, Histogram, Kind, Lines, exponential_buckets};
use super::{Family, TargetSeries};

/// Lookup buckets: 100 µs doubling to ~26 s (19 buckets).
static LOOKUP_BUCKETS: LazyLock<Vec<f64>> = LazyLock::new(|| exponential_buckets(0.0001, 2.0, 19));

#[derive(Debug)]
pub struct DnsSeries {
    lookup: Histogram,
    validation_failures: Counter,
    truncated_retries: Counter,
    strays: Counter,
}

impl Default for DnsSeries {
    fn default() -> Self {
        Self {
            lookup: Histogram::new(&LOOKUP_BUCKETS),
            validation_failures: Counter::default(),
            truncated_retries: Counter::default(),
            strays: Counter::default(),
        }
    }
}

impl DnsSeries {
    pub fn observe(&self, r: &DnsReport) {
        if let Some(l) = r.lookup {
            self.lookup.observe(l.as_secs_f64());
        }
        if !r.validation_failures.is_empty() {
            self.validation_failures.add(1);
        }
        if r.truncated_retry {
            self.truncated_retries.add(1);
        }
        self.strays.add(u64::from(r.stray_datagrams));
    }
}

fn counter(t: &TargetSeries, name: &str, l: &mut Lines<'_>, c: fn(&DnsSeries) -> &Counter) {
    if let Some(d) = &t.dns {
        l.sample(name, &[], None, c(d).get() as f64);
    }
}

pub const FAMILIES: [Family; 4] = [
    Family {
        name: "vantage_dns_lookup_seconds",
        help: "Time from the start of a round to the answer, for rounds that got one.",
        kind: Kind::Histogram,
        write: |t, name, l| {
            if let Some(d) = &t.dns {
                d.lookup.write(name, l);
            }
        },
    },
    Family {
        name: "vantage_dns_validation_failures_total",
        help: "Answers with an expected rcode whose records failed the configured checks.",
        kind: Kind::Counter,
        write: |t, name, l| counter(t, name, l, |d| &d.validation_failures),
    },
    Family {
        name: "vantage_dns_truncated_retries_total",
        help: "Truncated UDP answers retried over TCP.",
        kind: Kind::Counter,
        write: |t, name, l| counter(t, name, l, |d| &d.truncated_retries),
    },
    Family {
        name: "vantage_dns_stray_datagrams_total",
        help: "Datagrams ignored because they were not the answer (wrong ID or question, malformed).",
        kind: Kind::Counter,
        write: |t, name, l| counter(t, name, l, |d| &d.strays),
    },
];
