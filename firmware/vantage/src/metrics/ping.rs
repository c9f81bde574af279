//! Ping counters and the RTT histogram of one target (its per-round gauges are in `rounds`).

use std::collections::HashMap;

use prometheus::core::Collector;
use prometheus::proto::MetricFamily;
use prometheus::{Histogram, HistogramOpts, IntCounter, Opts};
use vantage_core::PingReport;

pub mod names {
    pub const RTT: &str = "vantage_ping_rtt_seconds";
    pub const SENT: &str = "vantage_ping_packets_sent_total";
    pub const RECEIVED: &str = "vantage_ping_packets_received_total";
    pub const DUPLICATES: &str = "vantage_ping_duplicates_total";
    pub const ICMP_ERRORS: &str = "vantage_ping_icmp_errors_total";
}

/// RTT buckets: 50 µs doubling to ~26 s (20 buckets), as smokeping_prober uses.
fn rtt_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.00005, 2.0, 20).expect("valid buckets")
}

#[derive(Debug)]
pub struct PingSeries {
    rtt: Histogram,
    sent: IntCounter,
    received: IntCounter,
    duplicates: IntCounter,
    icmp_errors: IntCounter,
}

impl PingSeries {
    pub fn new(labels: &HashMap<String, String>) -> Self {
        let opts = |name: &str, help: &str| Opts::new(name, help).const_labels(labels.clone());
        Self {
            rtt: Histogram::with_opts(
                HistogramOpts::from(opts(names::RTT, "Round-trip time of each echo reply."))
                    .buckets(rtt_buckets()),
            )
            .expect("valid metric"),
            sent: IntCounter::with_opts(opts(names::SENT, "Echo requests sent."))
                .expect("valid metric"),
            received: IntCounter::with_opts(opts(
                names::RECEIVED,
                "Echo replies received in time.",
            ))
            .expect("valid metric"),
            duplicates: IntCounter::with_opts(opts(
                names::DUPLICATES,
                "Duplicate echo replies received.",
            ))
            .expect("valid metric"),
            icmp_errors: IntCounter::with_opts(opts(
                names::ICMP_ERRORS,
                "ICMP errors (unreachable, time exceeded) received for echo requests.",
            ))
            .expect("valid metric"),
        }
    }

    pub fn observe(&self, r: &PingReport) {
        for rtt in &r.rtts {
            self.rtt.observe(rtt.as_secs_f64());
        }
        self.sent.inc_by(u64::from(r.sent));
        self.received.inc_by(u64::from(r.received));
        self.duplicates.inc_by(u64::from(r.duplicates));
        self.icmp_errors.inc_by(u64::from(r.icmp_errors));
    }

    pub fn collect(&self, out: &mut Vec<MetricFamily>) {
        out.extend(self.rtt.collect());
        out.extend(self.sent.collect());
        out.extend(self.received.collect());
        out.extend(self.duplicates.collect());
        out.extend(self.icmp_errors.collect());
    }
}
