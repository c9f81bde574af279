//! DNS series of one target.

use std::collections::HashMap;
use std::sync::Mutex;

use prometheus::core::Collector;
use prometheus::proto::MetricFamily;
use prometheus::{Gauge, GaugeVec, Histogram, HistogramOpts, IntCounter, Opts};
use vantage_core::config::rcode_name;
use vantage_core::{DnsPhases, DnsReport};

pub mod names {
    pub const LOOKUP: &str = "vantage_dns_lookup_seconds";
    pub const PHASE: &str = "vantage_dns_phase_seconds";
    pub const RCODE: &str = "vantage_dns_rcode";
    pub const ANSWER_RECORDS: &str = "vantage_dns_answer_records";
    pub const AUTHORITY_RECORDS: &str = "vantage_dns_authority_records";
    pub const ADDITIONAL_RECORDS: &str = "vantage_dns_additional_records";
    pub const VALIDATION_FAILURES: &str = "vantage_dns_validation_failures_total";
    pub const TRUNCATED_RETRIES: &str = "vantage_dns_truncated_retries_total";
    pub const STRAY_DATAGRAMS: &str = "vantage_dns_stray_datagrams_total";
}

/// Rcodes whose series exist from the start, so an alert on NXDOMAIN or SERVFAIL has a series
/// to look at before the first one happens.
const COMMON_RCODES: [u16; 4] = [0, 2, 3, 5];

/// Lookup buckets: 100 µs doubling to ~26 s (19 buckets).
fn lookup_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.0001, 2.0, 19).expect("valid buckets")
}

#[derive(Debug)]
pub struct DnsSeries {
    lookup: Histogram,
    phase: GaugeVec,
    rcode: GaugeVec,
    /// Rcode label values present in `rcode`; the last one is 1, the others 0.
    rcodes_seen: Mutex<Vec<String>>,
    answers: Gauge,
    authority: Gauge,
    additional: Gauge,
    validation_failures: IntCounter,
    truncated_retries: IntCounter,
    strays: IntCounter,
}

impl DnsSeries {
    /// `valid_rcodes`: the target's expected rcodes, whose series also exist from the start.
    pub fn new(labels: &HashMap<String, String>, valid_rcodes: &[u16]) -> Self {
        let opts = |name: &str, help: &str| Opts::new(name, help).const_labels(labels.clone());
        let phase = GaugeVec::new(
            opts(
                names::PHASE,
                "Time of each phase of the last query: resolve (the server's name), connect, tls, request.",
            ),
            &["phase"],
        )
        .expect("valid metric");
        for p in DnsPhases::NAMES {
            phase.with_label_values(&[p]).set(0.0);
        }
        let rcode = GaugeVec::new(
            opts(
                names::RCODE,
                "1 for the rcode of the last answer, 0 for the other rcodes seen (all 0 without an answer).",
            ),
            &["rcode"],
        )
        .expect("valid metric");
        let mut seen = Vec::new();
        for n in COMMON_RCODES.iter().chain(valid_rcodes) {
            let name = rcode_name(*n);
            if !seen.contains(&name) {
                rcode.with_label_values(&[&name]).set(0.0);
                seen.push(name);
            }
        }
        let gauge =
            |name: &str, help: &str| Gauge::with_opts(opts(name, help)).expect("valid metric");
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
            phase,
            rcode,
            rcodes_seen: Mutex::new(seen),
            answers: gauge(
                names::ANSWER_RECORDS,
                "Records in the answer section of the last answer.",
            ),
            authority: gauge(
                names::AUTHORITY_RECORDS,
                "Records in the authority section of the last answer.",
            ),
            additional: gauge(
                names::ADDITIONAL_RECORDS,
                "Records in the additional section of the last answer (EDNS OPT included).",
            ),
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
        for p in DnsPhases::NAMES {
            let v = r.phases.get(p).map_or(0.0, |d| d.as_secs_f64());
            self.phase.with_label_values(&[p]).set(v);
        }
        let mut seen = self.rcodes_seen.lock().unwrap_or_else(|e| e.into_inner());
        let last = r.rcode_name();
        if let Some(name) = &last
            && !seen.contains(name)
        {
            // Rcodes are 12 bits, and a hostile server could walk through all of them; the
            // series count stays bounded by what a resolver can actually send.
            if seen.len() < 64 {
                seen.push(name.clone());
            }
        }
        for name in seen.iter() {
            let v = if last.as_ref() == Some(name) {
                1.0
            } else {
                0.0
            };
            self.rcode.with_label_values(&[name]).set(v);
        }
        if r.rcode.is_some() {
            self.answers.set(r.answers.len() as f64);
            self.authority.set(f64::from(r.authority_records));
            self.additional.set(f64::from(r.additional_records));
        } else {
            self.answers.set(0.0);
            self.authority.set(0.0);
            self.additional.set(0.0);
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
        out.extend(self.phase.collect());
        out.extend(self.rcode.collect());
        out.extend(self.answers.collect());
        out.extend(self.authority.collect());
        out.extend(self.additional.collect());
        out.extend(self.validation_failures.collect());
        out.extend(self.truncated_retries.collect());
        out.extend(self.strays.collect());
    }
}
