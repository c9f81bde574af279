//! Helpers shared by the store's integration tests.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use vantage_core::{Measurement, PingReport, ProbeError, ProbeKind, Sample};
use vantage_store::{BackendKind, Labels, Store, StoreOptions};

/// The backend under test: `VANTAGE_STORE_BACKEND=sled` runs the suites on sled.
pub fn backend() -> BackendKind {
    std::env::var("VANTAGE_STORE_BACKEND")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_default()
}

pub fn opts(dir: &Path) -> StoreOptions {
    let mut o = StoreOptions::new(dir.join("store"));
    o.backend = backend();
    o.commit_interval = Duration::from_millis(100);
    o
}

pub fn open(dir: &Path) -> Store {
    Store::open(opts(dir)).expect("store opens")
}

pub fn at_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms as u64)
}

/// A ping round whose RTT encodes `n` (µs), so values can be checked after a round trip.
pub fn ping(target: &str, ms: i64, n: u64) -> Sample {
    let ok = !n.is_multiple_of(17);
    Sample {
        target: Arc::from(target),
        probe: ProbeKind::Ping,
        timestamp: at_ms(ms),
        duration: Duration::from_micros(n + 100),
        success: ok,
        error: (!ok).then_some(ProbeError::Timeout),
        measurement: Measurement::Ping(PingReport {
            address: None,
            sent: 1,
            received: u32::from(ok),
            duplicates: 0,
            icmp_errors: 0,
            rtts: if ok {
                vec![Duration::from_micros(n)]
            } else {
                vec![]
            },
        }),
    }
}

pub fn labels(site: &str) -> Labels {
    Labels::from([("site".to_string(), site.to_string())])
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}
