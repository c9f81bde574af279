//! Builders the daemon's unit tests share.

use std::time::Duration;

use vantage_core::{HopReport, HopResponder};

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
