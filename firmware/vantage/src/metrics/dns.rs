//! DNS counters and the lookup histogram of one target (its per-round gauges are in `rounds`).

use std::collections::HashMap;

use prometheus::core::Collector;
use prometheus::proto::MetricFamily;
use prometheus::{Histogram, HistogramOpts, IntCounter, Opts};
use vantage_core::DnsReport;

pub mod names {
    pub const LOOKUP: &str = "vantage_dns_lookup_seconds";
    pub const VALIDATION_FAILURES: &str = "vantage_dns_validation_failures_total";
    pub const TRUNCATED_RETRIES: &str = "vantage_dns_truncated_retries_total";
    pub const STRAY_DATAGRAMS: &str = "vantage_dns_stray_datagrams_total";
}

/// Lookup buckets: 100 µs doubling to ~26 s (19 buckets).
fn lookup_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.0001, 2.0, 19).expect("valid buckets")
}

#[derive(Debug)]
pub struct DnsSeries {
    lookup: Histogram,
    validation_failures: IntCounter,
    truncated_retries: IntCounter,
    strays: IntCounter,
}

impl DnsSeries {
    pub fn new(labels: &HashMap<String, String>) -> Self {
        let opts = |name: &str, help: &str| Opts::new(name, help).const_labels(labels.clone());
        let counter =
            |name: &str, help: &str| IntCounter::with_opts(opts(name, help)).expect("valid metric");
        Self {
            lookup: Histogram::with_opts(
                HistogramOpts::from(opts(
                    names::LOOKUP,
                    "Time from the start of a round to the answer, for rounds that got one.",
                ))
                .buckets(lookup_buckets()),
            )
            .expect("valid metric"),
            validation_failures: counter(
                names::VALIDATION_FAILURES,
                "Answers with an expected rcode whose records failed the configured checks.",
            ),
            truncated_retries: counter(
                names::TRUNCATED_RETRIES,
                "Truncated UDP answers retried over TCP.",
            ),
            strays: counter(
                names::STRAY_DATAGRAMS,
                "Datagrams ignored because they were not the answer (wrong ID or question, malformed).",
            ),
        }
    }

    pub fn observe(&self, r: &DnsReport) {
        if let Some(l) = r.lookup {
            self.lookup.observe(l.as_secs_f64());
        }
        if !r.validation_failures.is_empty() {
            self.validation_failures.inc();
        }
        if r.truncated_retry {
            self.truncated_retries.inc();
        }
        self.strays.inc_by(u64::from(r.stray_datagrams));
    }

    pub fn collect(&self, out: &mut Vec<MetricFamily>) {
        out.extend(self.lookup.collect());
        out.extend(self.validation_failures.collect());
        out.extend(self.truncated_retries.collect());
        out.extend(self.strays.collect());
    }
}
