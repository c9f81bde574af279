//! A trace target's own series through the module shape: the info families follow the
//! current path, the counter counts changes, a `/probe` answer has no counter.

use std::time::{Duration, SystemTime};

use vantage_core::{HopReport, Measurement, ProbeKind, Sample, Target};

use vantage_core::TraceReport;

use crate::metrics::{TargetSeries, write_targets};

/// A hop answered by `addrs` with these RTTs in ms.
fn hop(ttl: u8, addrs: &[&str], rtts_ms: &[u64], sent: u32) -> HopReport {
    let us: Vec<u64> = rtts_ms.iter().map(|m| m * 1000).collect();
    crate::test_support::trace_hop(ttl, addrs, &us, sent)
}

/// A trace target's whole exposition: its per-round gauges and the trace series.
struct Shown(TargetSeries);

impl Shown {
    fn new(counters: bool) -> Self {
        Self(if counters {
            TargetSeries::new(&Target {
                name: "up".into(),
                host: vantage_core::Host::Name("up.example".into()),
                labels: Default::default(),
                probes: vec![(ProbeKind::TRACE, Duration::from_secs(60))],
                modules: Vec::new(),
            })
        } else {
            TargetSeries::one_round(ProbeKind::TRACE)
        })
    }

    fn observe(&self, r: TraceReport) {
        self.0.observe(&Sample {
            target: "up".into(),
            probe: ProbeKind::TRACE,
            timestamp: SystemTime::UNIX_EPOCH,
            duration: Duration::from_millis(30),
            success: r.reached,
            error: None,
            measurement: Measurement::from(r),
            quality: Default::default(),
        });
    }

    fn render(&self) -> String {
        let mut out = String::new();
        write_targets(&[&self.0], &[], &mut out);
        out
    }
}

#[test]
fn series_follow_the_path_and_count_changes() {
    let s = Shown::new(true);
    let m = s.render();
    for line in [
        r#"vantage_trace_hops{target="up"} 0"#,
        r#"vantage_trace_path_hash{target="up"} 0"#,
        r#"vantage_trace_path_changes_total{target="up"} 0"#,
        r#"vantage_trace_paths{target="up"} 0"#,
        r#"vantage_trace_flows_reached_ratio{target="up"} 0"#,
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
    let m = s.render();
    for line in [
        r#"vantage_trace_hops{target="up"} 4"#,
        r#"vantage_trace_hop_rtt_seconds{hop="1",target="up"} 0.001"#,
        r#"vantage_trace_hop_rtt_seconds{hop="3",target="up"} 0.015"#,
        r#"vantage_trace_hop_loss_ratio{hop="2",target="up"} 1"#,
        r#"vantage_trace_hop_info{address="10.0.2.1",hop="3",target="up"} 1"#,
        r#"vantage_trace_hop_info{address="192.0.2.9",hop="4",target="up"} 1"#,
        r#"vantage_trace_path_hash{target="up"} 1234"#,
        r#"vantage_trace_path_changes_total{target="up"} 0"#,
        r#"vantage_trace_flows_reached_ratio{target="up"} 1"#,
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

    assert!(!m.contains("vantage_trace_hop_balancing{"), "{m}");

    // Hop 3 moves and the path gets shorter: the old address and hop 4 disappear; hop 1
    // is two per-packet addresses.
    let mut one = hop(1, &["10.0.0.1", "10.0.0.2"], &[1, 1, 1], 3);
    one.balancing = Some(vantage_core::Balancing::PerPacket);
    s.observe(TraceReport {
        reached: true,
        hops: vec![
            one,
            hop(2, &[], &[], 3),
            hop(3, &["10.0.9.1"], &[5, 5, 5], 3),
        ],
        path_hash: 99,
        path_changed: true,
        paths_known: 2,
        // A partial blackhole: 3 of 4 flows got through.
        flows: 4,
        flows_reached: 3,
        ..Default::default()
    });
    let m = s.render();
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
    assert!(
        m.contains(r#"vantage_trace_hop_balancing{hop="1",kind="per_packet",target="up"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(r#"vantage_trace_flows_reached_ratio{target="up"} 0.75"#),
        "{m}"
    );
}

#[test]
fn the_probe_form_has_no_counter() {
    let s = Shown::new(false);
    let mut one = hop(1, &["10.0.0.1", "10.0.0.2"], &[1, 1], 2);
    one.balancing = Some(vantage_core::Balancing::PerFlow);
    s.observe(TraceReport {
        path_changed: true,
        hops: vec![one],
        ..Default::default()
    });
    let m = s.render();
    assert!(!m.contains("path_changes_total"), "{m}");
    assert!(m.contains("vantage_trace_hops 1"), "{m}");
    // The info series are the round's own: a `/probe` answer shows them.
    for line in [
        r#"vantage_trace_hop_info{address="10.0.0.1",hop="1"} 1"#,
        r#"vantage_trace_hop_info{address="10.0.0.2",hop="1"} 1"#,
        r#"vantage_trace_hop_balancing{hop="1",kind="per_flow"} 1"#,
    ] {
        assert!(m.contains(line), "missing {line}\n{m}");
    }
}
