//! Helpers shared by the store's integration tests.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use vantage_core::{
    DnsPhases, DnsRecord, DnsReport, HopReport, HopResponder, Measurement, PingReport, ProbeError,
    ProbeKind, Sample, TraceReport,
};
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
        probe: ProbeKind::PING,
        timestamp: at_ms(ms),
        duration: Duration::from_micros(n + 100),
        success: ok,
        error: (!ok).then_some(ProbeError::Timeout),
        measurement: Measurement::from(PingReport {
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
            kernel_send_stamps: 0,
        }),
        quality: Default::default(),
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

/// A DNS round whose lookup time encodes `n` (µs); every 13th is NXDOMAIN, every 17th times out.
pub fn dns(target: &str, ms: i64, n: u64) -> Sample {
    let timeout = n.is_multiple_of(17);
    let nx = n.is_multiple_of(13);
    let lookup = Duration::from_micros(n);
    let report = if timeout {
        DnsReport {
            attempts: 1,
            phases: DnsPhases {
                request: Some(Duration::from_millis(500)),
                ..DnsPhases::default()
            },
            ..DnsReport::default()
        }
    } else {
        DnsReport {
            attempts: 1,
            rcode: Some(if nx { 3 } else { 0 }),
            answers: if nx {
                vec![]
            } else {
                vec![DnsRecord {
                    name: "www.example.test.".into(),
                    ttl: 60,
                    class: "IN".into(),
                    record_type: "A".into(),
                    data: "192.0.2.1".into(),
                }]
            },
            authority_records: u32::from(nx),
            additional_records: 1,
            response_bytes: 60,
            lookup: Some(lookup),
            phases: DnsPhases {
                request: Some(lookup - Duration::from_micros(20)),
                ..DnsPhases::default()
            },
            rcode_valid: !nx,
            ..DnsReport::default()
        }
    };
    Sample {
        target: Arc::from(target),
        probe: ProbeKind::DNS,
        timestamp: at_ms(ms),
        duration: if timeout {
            Duration::from_millis(500)
        } else {
            lookup + Duration::from_micros(40)
        },
        success: !timeout && !nx,
        error: if timeout {
            Some(ProbeError::Timeout)
        } else if nx {
            Some(ProbeError::Validation("rcode NXDOMAIN".into()))
        } else {
            None
        },
        measurement: report.into(),
        quality: Default::default(),
    }
}

/// A trace of `3 + n % 5` hops whose last hop's mean RTT encodes `n` (µs); the third hop is
/// silent; the path changes every 11th round.
pub fn trace(target: &str, ms: i64, n: u64) -> Sample {
    let count = 3 + (n % 5) as u8;
    let hops: Vec<HopReport> = (1..=count)
        .map(|ttl| {
            let silent = ttl == 3 && ttl != count;
            let rtt = if ttl == count {
                Duration::from_micros(n)
            } else {
                Duration::from_micros(300 * u64::from(ttl))
            };
            HopReport {
                ttl,
                sent: 3,
                received: if silent { 0 } else { 3 },
                responders: if silent {
                    vec![]
                } else {
                    vec![HopResponder {
                        address: format!("192.0.2.{ttl}").parse().unwrap(),
                        replies: 3,
                        flows: vec![0],
                        unreachable: None,
                    }]
                },
                rtts: if silent { vec![] } else { vec![rtt; 3] },
                balancing: None,
            }
        })
        .collect();
    Sample {
        target: Arc::from(target),
        probe: ProbeKind::TRACE,
        timestamp: at_ms(ms),
        duration: Duration::from_micros(n + 1000),
        success: true,
        error: None,
        measurement: Measurement::from(TraceReport {
            flows: 1,
            reached: true,
            hops,
            path_hash: 0x1234_0000 + u32::from(count),
            path_changed: n.is_multiple_of(11),
            paths_known: 1,
            ..TraceReport::default()
        }),
        quality: Default::default(),
    }
}
