//! Ping series of one target.

use std::collections::HashMap;

use prometheus::core::Collector;
use prometheus::proto::MetricFamily;
use prometheus::{Gauge, GaugeVec, Histogram, HistogramOpts, IntCounter, Opts};
use vantage_core::PingReport;

pub mod names {
    pub const RTT: &str = "vantage_ping_rtt_seconds";
    pub const ROUND_RTT: &str = "vantage_ping_round_rtt_seconds";
    pub const LOSS: &str = "vantage_ping_loss_ratio";
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
    round_rtt: GaugeVec,
    loss: Gauge,
    sent: IntCounter,
    received: IntCounter,
    duplicates: IntCounter,
    icmp_errors: IntCounter,
}

impl PingSeries {
    pub fn new(labels: &HashMap<String, String>) -> Self {
        let opts = |name: &str, help: &str| Opts::new(name, help).const_labels(labels.clone());
        let round_rtt = GaugeVec::new(
            opts(
                names::ROUND_RTT,
                "Round-trip times of the last round: min, avg, max and stddev.",
            ),
            &["stat"],
        )
        .expect("valid metric");
        for stat in ["min", "avg", "max", "stddev"] {
            round_rtt.with_label_values(&[stat]).set(f64::NAN);
        }
        Self {
            rtt: Histogram::with_opts(
                HistogramOpts::from(opts(names::RTT, "Round-trip time of each echo reply."))
                    .buckets(rtt_buckets()),
            )
            .expect("valid metric"),
            round_rtt,
            loss: Gauge::with_opts(opts(
                names::LOSS,
                "Share of echo requests of the last round that got no reply.",
            ))
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
        self.loss.set(r.loss_ratio());
        let stats = [
            ("min", r.min().map(|d| d.as_secs_f64())),
            ("avg", r.mean().map(|d| d.as_secs_f64())),
            ("max", r.max().map(|d| d.as_secs_f64())),
            ("stddev", r.stddev_seconds()),
        ];
        for (stat, v) in stats {
            // A round without replies has no RTT: NaN says so, 0 would claim an instant reply.
            self.round_rtt
                .with_label_values(&[stat])
                .set(v.unwrap_or(f64::NAN));
        }
    }

    pub fn collect(&self, out: &mut Vec<MetricFamily>) {
        out.extend(self.rtt.collect());
        out.extend(self.round_rtt.collect());
        out.extend(self.loss.collect());
        out.extend(self.sent.collect());
        out.extend(self.received.collect());
        out.extend(self.duplicates.collect());
        out.extend(self.icmp_errors.collect());
    }
}
