//! Builders the daemon's unit tests share.

use std::time::{Duration, SystemTime};

use vantage_core::{HopReport, HopResponder, Measurement, PingReport, ProbeKind, Sample};

/// A ping round of `target` at `at` that got its one reply after `rtt` (2 ms long).
pub fn answered_ping(target: &str, at: SystemTime, rtt: Duration) -> Sample {
    Sample {
        target: target.into(),
        probe: ProbeKind::PING,
        timestamp: at,
        duration: Duration::from_millis(2),
        success: true,
        error: None,
        measurement: Measurement::from(PingReport {
            sent: 1,
            received: 1,
            rtts: vec![rtt],
            ..PingReport::default()
        }),
        quality: Default::default(),
    }
}

/// A trace hop at `ttl` that `addrs` answered (one reply each, flow 0), with these RTTs (µs)
/// of `sent` probes.
pub fn trace_hop(ttl: u8, addrs: &[&str], rtts_us: &[u64], sent: u32) -> HopReport {
    HopReport {
        ttl,
        sent,
        received: rtts_us.len() as u32,
        responders: addrs
            .iter()
            .map(|a| HopResponder {
                address: a.parse().unwrap(),
                replies: 1,
                flows: vec![0],
                unreachable: None,
            })
            .collect(),
        rtts: rtts_us.iter().map(|u| Duration::from_micros(*u)).collect(),
        balancing: None,
    }
}
