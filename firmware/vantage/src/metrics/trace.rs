//! Trace series of one target.
//!
//! Per-hop series carry a `hop` label (the TTL, at most `max_hops` values) and, for
//! `vantage_trace_hop_info`, the answering `address` (at most one per flow and hop). Series of
//! hops the last trace did not reach, and of addresses that no longer answer, are removed, so
//! the cardinality follows the current path and stays bounded by `max_hops × flows`.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use prometheus::core::Collector;
use prometheus::proto::MetricFamily;
use prometheus::{Gauge, GaugeVec, IntCounter, Opts};
use vantage_core::TraceReport;

pub mod names {
    pub const HOPS: &str = "vantage_trace_hops";
    pub const HOP_RTT: &str = "vantage_trace_hop_rtt_seconds";
    pub const HOP_LOSS: &str = "vantage_trace_hop_loss_ratio";
    pub const HOP_INFO: &str = "vantage_trace_hop_info";
    pub const PATH_HASH: &str = "vantage_trace_path_hash";
    pub const PATH_CHANGES: &str = "vantage_trace_path_changes_total";
    pub const PATHS: &str = "vantage_trace_paths";
}

#[derive(Debug)]
pub struct TraceSeries {
    hops: Gauge,
    hop_rtt: GaugeVec,
    hop_loss: GaugeVec,
    hop_info: GaugeVec,
    path_hash: Gauge,
    path_changes: Option<IntCounter>,
    paths: Gauge,
    /// Label values set by the last trace, to remove the ones the next trace does not set.
    current: Mutex<Current>,
}

#[derive(Debug, Default)]
struct Current {
    hops: BTreeSet<String>,
    info: BTreeSet<(String, String)>,
}

impl TraceSeries {
    /// `counters: false` leaves out the path-change counter (a `/probe` answer is one trace,
    /// which a counter cannot describe).
    pub fn new(labels: &HashMap<String, String>, counters: bool) -> Self {
        let opts = |name: &str, help: &str| Opts::new(name, help).const_labels(labels.clone());
        Self {
            hops: Gauge::with_opts(opts(
                names::HOPS,
                "Hops to the destination in the last trace, or to the last hop that answered.",
            ))
            .expect("valid metric"),
            hop_rtt: GaugeVec::new(
                opts(
                    names::HOP_RTT,
                    "Mean round-trip time of the hop's answers in the last trace (NaN: none).",
                ),
                &["hop"],
            )
            .expect("valid metric"),
            hop_loss: GaugeVec::new(
                opts(
                    names::HOP_LOSS,
                    "Share of the last trace's probes to this hop that got no answer.",
                ),
                &["hop"],
            )
            .expect("valid metric"),
            hop_info: GaugeVec::new(
                opts(
                    names::HOP_INFO,
                    "1 for each address that answered at the hop in the last trace.",
                ),
                &["hop", "address"],
            )
            .expect("valid metric"),
            path_hash: Gauge::with_opts(opts(
                names::PATH_HASH,
                "Identifies the paths the last trace followed (32-bit hash of their hops).",
            ))
            .expect("valid metric"),
            path_changes: counters.then(|| {
                IntCounter::with_opts(opts(
                    names::PATH_CHANGES,
                    "Traces that followed a path none of the paths seen within the path window matches.",
                ))
                .expect("valid metric")
            }),
            paths: Gauge::with_opts(opts(
                names::PATHS,
                "Distinct paths seen within the path window (ECMP branches, or old and new path).",
            ))
            .expect("valid metric"),
            current: Mutex::default(),
        }
    }

    pub fn observe(&self, r: &TraceReport) {
        let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = Current::default();
        for h in &r.hops {
            let hop = h.ttl.to_string();
            self.hop_rtt
                .with_label_values(&[&hop])
                .set(h.mean().map_or(f64::NAN, |d| d.as_secs_f64()));
            self.hop_loss.with_label_values(&[&hop]).set(h.loss_ratio());
            for a in &h.responders {
                let addr = a.address.to_string();
                self.hop_info.with_label_values(&[&hop, &addr]).set(1.0);
                next.info.insert((hop.clone(), addr));
            }
            next.hops.insert(hop);
        }
        // Set before removing, so a scrape in between never misses a hop still on the path.
        for hop in cur.hops.difference(&next.hops) {
            let _ = self.hop_rtt.remove_label_values(&[hop]);
            let _ = self.hop_loss.remove_label_values(&[hop]);
        }
        for (hop, addr) in cur.info.difference(&next.info) {
            let _ = self.hop_info.remove_label_values(&[hop, addr]);
        }
        *cur = next;
        self.hops.set(f64::from(r.hop_count()));
        self.path_hash.set(f64::from(r.path_hash));
        self.paths.set(f64::from(r.paths_known));
        if r.path_changed
            && let Some(c) = &self.path_changes
        {
            c.inc();
        }
    }

    pub fn collect(&self, out: &mut Vec<MetricFamily>) {
        let mut all = Vec::new();
        all.extend(self.hops.collect());
        all.extend(self.hop_rtt.collect());
        all.extend(self.hop_loss.collect());
        all.extend(self.hop_info.collect());
        all.extend(self.path_hash.collect());
        if let Some(c) = &self.path_changes {
            all.extend(c.collect());
        }
        all.extend(self.paths.collect());
        // Per-hop families are empty until the first trace; the text format has no empty family.
        out.extend(all.into_iter().filter(|f| !f.get_metric().is_empty()));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use vantage_core::{HopReport, HopResponder};

    use super::*;
    use crate::metrics::encode;

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

    fn render(s: &TraceSeries) -> String {
        let mut f = Vec::new();
        s.collect(&mut f);
        encode(&f)
    }

    fn labels() -> HashMap<String, String> {
        HashMap::from([("target".to_string(), "up".to_string())])
    }

    #[test]
    fn series_follow_the_path_and_count_changes() {
        let s = TraceSeries::new(&labels(), true);
        let m = render(&s);
        for line in [
            r#"vantage_trace_hops{target="up"} 0"#,
            r#"vantage_trace_path_hash{target="up"} 0"#,
            r#"vantage_trace_path_changes_total{target="up"} 0"#,
            r#"vantage_trace_paths{target="up"} 0"#,
        ] {
            assert!(m.contains(line), "missing {line}\n{m}");
        }
        let first = TraceReport {
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
        };
        s.observe(&first);
        let m = render(&s);
        for line in [
            r#"vantage_trace_hops{target="up"} 4"#,
            r#"vantage_trace_hop_rtt_seconds{hop="1",target="up"} 0.001"#,
            r#"vantage_trace_hop_rtt_seconds{hop="2",target="up"} NaN"#,
            r#"vantage_trace_hop_rtt_seconds{hop="3",target="up"} 0.015"#,
            r#"vantage_trace_hop_loss_ratio{hop="2",target="up"} 1"#,
            r#"vantage_trace_hop_info{address="10.0.2.1",hop="3",target="up"} 1"#,
            r#"vantage_trace_hop_info{address="192.0.2.9",hop="4",target="up"} 1"#,
            r#"vantage_trace_path_hash{target="up"} 1234"#,
            r#"vantage_trace_path_changes_total{target="up"} 0"#,
        ] {
            assert!(m.contains(line), "missing {line}\n{m}");
        }
        // The silent hop has loss and RTT series but no address.
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
        s.observe(&TraceReport {
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
        let m = render(&s);
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
        assert!(m.contains(r#"vantage_trace_paths{target="up"} 2"#), "{m}");
    }

    #[test]
    fn the_probe_form_has_no_counter() {
        let s = TraceSeries::new(&HashMap::new(), false);
        s.observe(&TraceReport {
            path_changed: true,
            ..Default::default()
        });
        let m = render(&s);
        assert!(!m.contains("path_changes_total"), "{m}");
        assert!(m.contains("vantage_trace_hops 0"), "{m}");
    }
}
