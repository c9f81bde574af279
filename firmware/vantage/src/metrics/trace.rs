//! Trace series of one target beside its per-round gauges (`rounds`): the hop addresses and
//! the path-change counter, which the store does not keep.
//!
//! `vantage_trace_hop_info` carries `hop` (the TTL, at most `max_hops` values) and the
//! answering `address` (at most one per flow and hop). Addresses that no longer answer are
//! removed, so the cardinality follows the current path and stays bounded by `max_hops × flows`.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use prometheus::core::Collector;
use prometheus::proto::MetricFamily;
use prometheus::{GaugeVec, IntCounter, Opts};
use vantage_core::TraceReport;

pub mod names {
    pub const HOP_INFO: &str = "vantage_trace_hop_info";
    pub const PATH_CHANGES: &str = "vantage_trace_path_changes_total";
}

#[derive(Debug)]
pub struct TraceSeries {
    hop_info: GaugeVec,
    path_changes: Option<IntCounter>,
    /// (hop, address) label values set by the last trace, to remove those the next one lacks.
    current: Mutex<BTreeSet<(String, String)>>,
}

impl TraceSeries {
    /// `counters: false` leaves out the path-change counter (a `/probe` answer is one trace,
    /// which a counter cannot describe).
    pub fn new(labels: &HashMap<String, String>, counters: bool) -> Self {
        let opts = |name: &str, help: &str| Opts::new(name, help).const_labels(labels.clone());
        Self {
            hop_info: GaugeVec::new(
                opts(
                    names::HOP_INFO,
                    "1 for each address that answered at the hop in the last trace.",
                ),
                &["hop", "address"],
            )
            .expect("valid metric"),
            path_changes: counters.then(|| {
                IntCounter::with_opts(opts(
                    names::PATH_CHANGES,
                    "Traces that followed a path none of the paths seen within the path window matches.",
                ))
                .expect("valid metric")
            }),
            current: Mutex::default(),
        }
    }

    pub fn observe(&self, r: &TraceReport) {
        let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = BTreeSet::new();
        for h in &r.hops {
            let hop = h.ttl.to_string();
            for a in &h.responders {
                let addr = a.address.to_string();
                self.hop_info.with_label_values(&[&hop, &addr]).set(1.0);
                next.insert((hop.clone(), addr));
            }
        }
        // Set before removing, so a scrape in between never misses a hop still on the path.
        for (hop, addr) in cur.difference(&next) {
            let _ = self.hop_info.remove_label_values(&[hop, addr]);
        }
        *cur = next;
        if r.path_changed
            && let Some(c) = &self.path_changes
        {
            c.inc();
        }
    }

    pub fn collect(&self, out: &mut Vec<MetricFamily>) {
        let mut all = self.hop_info.collect();
        if let Some(c) = &self.path_changes {
            all.extend(c.collect());
        }
        // hop_info is empty until the first trace; the text format has no empty family.
        out.extend(all.into_iter().filter(|f| !f.get_metric().is_empty()));
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use vantage_core::{HopReport, HopResponder, Measurement, ProbeKind, Sample};

    use super::*;
    use crate::metrics::{RoundGauges, encode};

    fn hop(ttl: u8, addrs: &[&str], rtts_ms: &[u64], sent: u32) -> HopReport {
        HopReport {
            ttl,
            sent,
            received: rtts_ms.len() as u32,
            responders: addrs
                .iter()
                .map(|a| HopResponder {
                    address: a.parse().unwrap(),
                    replies: 1,
                    flows: vec![0],
                })
                .collect(),
            rtts: rtts_ms.iter().map(|m| Duration::from_millis(*m)).collect(),
            unreachable: None,
        }
    }

    /// A trace target's whole exposition: its per-round gauges and the trace series.
    struct Shown {
        rounds: RoundGauges,
        trace: TraceSeries,
    }

    impl Shown {
        fn new(counters: bool, labels: &HashMap<String, String>) -> Self {
            Self {
                rounds: RoundGauges::new(&[ProbeKind::Trace]),
                trace: TraceSeries::new(labels, counters),
            }
        }

        fn observe(&self, r: TraceReport) {
            self.trace.observe(&r);
            self.rounds.observe(&Sample {
                target: "up".into(),
                probe: ProbeKind::Trace,
                timestamp: SystemTime::UNIX_EPOCH,
                duration: Duration::from_millis(30),
                success: r.reached,
                error: None,
                measurement: Measurement::Trace(r),
            });
        }

        fn render(&self, labels: &HashMap<String, String>) -> String {
            let mut f = Vec::new();
            self.rounds.collect(labels, &mut f);
            self.trace.collect(&mut f);
            encode(&f)
        }
    }

    fn labels() -> HashMap<String, String> {
        HashMap::from([("target".to_string(), "up".to_string())])
    }

    #[test]
    fn series_follow_the_path_and_count_changes() {
        let l = labels();
        let s = Shown::new(true, &l);
        let m = s.render(&l);
        for line in [
            r#"vantage_trace_hops{target="up"} 0"#,
            r#"vantage_trace_path_hash{target="up"} 0"#,
            r#"vantage_trace_path_changes_total{target="up"} 0"#,
            r#"vantage_trace_paths{target="up"} 0"#,
            r#"vantage_trace_round_path_changed{target="up"} 0"#,
        ] {
            assert!(m.contains(line), "missing {line}\n{m}");
        }
        s.observe(TraceReport {
            reached: true,
            hops: vec![
                hop(1, &["10.0.0.1"], &[1, 1, 1], 3),
                hop(2, &[], &[], 3),
                hop(3, &["10.0.2.1"], &[10, 20], 3),
                hop(4, &["192.0.2.9"], &[4, 4, 4], 3),
            ],
            path_hash: 1234,
            paths_known: 1,
            ..Default::default()
        });
        let m = s.render(&l);
        for line in [
            r#"vantage_trace_hops{target="up"} 4"#,
            r#"vantage_trace_hop_rtt_seconds{hop="1",target="up"} 0.001"#,
            r#"vantage_trace_hop_rtt_seconds{hop="3",target="up"} 0.015"#,
            r#"vantage_trace_hop_loss_ratio{hop="2",target="up"} 1"#,
            r#"vantage_trace_hop_info{address="10.0.2.1",hop="3",target="up"} 1"#,
            r#"vantage_trace_hop_info{address="192.0.2.9",hop="4",target="up"} 1"#,
            r#"vantage_trace_path_hash{target="up"} 1234"#,
            r#"vantage_trace_path_changes_total{target="up"} 0"#,
        ] {
            assert!(m.contains(line), "missing {line}\n{m}");
        }
        // The silent hop has a loss series but no RTT and no address.
        assert!(
            !m.contains(r#"vantage_trace_hop_rtt_seconds{hop="2""#),
            "{m}"
        );
        let info = m
            .lines()
            .filter(|l| l.starts_with("vantage_trace_hop_info{"));
        assert_eq!(info.count(), 3, "{m}");
        let loss3 = m
            .lines()
            .find(|l| l.starts_with(r#"vantage_trace_hop_loss_ratio{hop="3""#))
            .unwrap();
        assert!(loss3.contains(" 0.333"), "{loss3}");

        // Hop 3 moves and the path gets shorter: the old address and hop 4 disappear.
        s.observe(TraceReport {
            reached: true,
            hops: vec![
                hop(1, &["10.0.0.1"], &[1, 1, 1], 3),
                hop(2, &[], &[], 3),
                hop(3, &["10.0.9.1"], &[5, 5, 5], 3),
            ],
            path_hash: 99,
            path_changed: true,
            paths_known: 2,
            ..Default::default()
        });
        let m = s.render(&l);
        assert!(
            m.contains(r#"vantage_trace_hop_info{address="10.0.9.1",hop="3",target="up"} 1"#),
            "{m}"
        );
        assert!(!m.contains("10.0.2.1"), "{m}");
        assert!(!m.contains(r#"hop="4""#), "{m}");
        assert!(m.contains(r#"vantage_trace_hops{target="up"} 3"#), "{m}");
        assert!(
            m.contains(r#"vantage_trace_path_changes_total{target="up"} 1"#),
            "{m}"
        );
        assert!(
            m.contains(r#"vantage_trace_round_path_changed{target="up"} 1"#),
            "{m}"
        );
        assert!(m.contains(r#"vantage_trace_paths{target="up"} 2"#), "{m}");
    }

    #[test]
    fn the_probe_form_has_no_counter() {
        let none = HashMap::new();
        let s = Shown::new(false, &none);
        s.observe(TraceReport {
            path_changed: true,
            ..Default::default()
        });
        let m = s.render(&none);
        assert!(!m.contains("path_changes_total"), "{m}");
        assert!(m.contains("vantage_trace_hops 0"), "{m}");
    }
}
