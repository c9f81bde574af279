//! Store benchmarks, run by `scripts/bench-store.sh`.
//!
//! ```text
//! vantage-store-bench ingest BACKEND DIR HOURS [KIND] one device-hour = 100 targets at 1 s
//! vantage-store-bench drain  BACKEND DIR URL RATE     ship DIR's store to URL, RATE rounds/s (0: no limit)
//! vantage-store-bench range  BACKEND DIR DAYS         one target `bench` pinged every 1 s for DAYS
//! ```
//! `range` writes DAYS of one target's rounds (a commit per hour of them), reopens the store
//! and times the charts' range queries through the aggregates (1 h, 24 h, 7 d, 30 d) and, for
//! comparison, reading the same DAYS of rounds from the blocks.
//! KIND is the probe of every round: `ping` (default; one packet), `dns` (an answered query
//! over UDP) or `trace` (12 hops, 3 probes each, one hop silent).
//! `ingest` writes HOURS of samples as the device would (a commit every 5 s of samples, i.e.
//! every 500 rounds), then prints one line of `key=value` figures: ingest rate, bytes on disk
//! and bytes written per sample (this process's `write_bytes` from /proc/self/io: what reached
//! the block layer, journal, tables and syncs included). A second, unpaced run measures raw
//! ingest speed.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use vantage_core::{
    DnsPhases, DnsRecord, DnsReport, HopReport, HopResponder, Measurement, PingReport, ProbeKind,
    Sample, TraceReport,
};
use vantage_store::{Endpoint, Labels, Shipper, ShipperOptions, Store, StoreOptions};

const TARGETS: u64 = 100;

fn write_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| {
                    l.strip_prefix("write_bytes: ")
                        .map(|v| v.trim().parse().ok())
                })
                .flatten()
        })
        .unwrap_or(0)
}

fn sample(target: &Arc<str>, ms: u64, rtt_us: u64) -> Sample {
    Sample {
        target: target.clone(),
        probe: ProbeKind::PING,
        timestamp: UNIX_EPOCH + Duration::from_millis(ms),
        duration: Duration::from_micros(rtt_us),
        success: true,
        error: None,
        measurement: Measurement::from(PingReport {
            sent: 1,
            received: 1,
            rtts: vec![Duration::from_micros(rtt_us)],
            ..Default::default()
        }),
        quality: Default::default(),
    }
}

/// A round of `kind` whose times jitter with `rng` (a DNS lookup or the RTT to the
/// destination around 20 ms).
fn round(kind: ProbeKind, target: &Arc<str>, ms: u64, rng: u64) -> Sample {
    let us = Duration::from_micros;
    let jitter = rng % 4_000;
    match kind {
        ProbeKind::DNS => {
            let lookup = 18_000 + jitter;
            Sample {
                probe: ProbeKind::DNS,
                duration: us(lookup + 40 + rng % 30),
                measurement: Measurement::from(DnsReport {
                    attempts: 1,
                    rcode: Some(0),
                    answers: vec![DnsRecord {
                        name: "www.example.test.".into(),
                        ttl: 60,
                        class: "IN".into(),
                        record_type: "A".into(),
                        data: "192.0.2.1".into(),
                    }],
                    additional_records: 1,
                    response_bytes: 60,
                    lookup: Some(us(lookup)),
                    phases: DnsPhases {
                        request: Some(us(lookup - 20 - rng % 20)),
                        ..DnsPhases::default()
                    },
                    rcode_valid: true,
                    ..DnsReport::default()
                }),
                ..sample(target, ms, 0)
            }
        }
        ProbeKind::TRACE => {
            let hops = (1..=12u8)
                .map(|ttl| {
                    let silent = ttl == 4;
                    let base = 500 + u64::from(ttl) * 1_600 + (rng >> ttl) % 1_000;
                    HopReport {
                        ttl,
                        sent: 3,
                        received: if silent { 0 } else { 3 },
                        responders: if silent {
                            vec![]
                        } else {
                            vec![HopResponder {
                                address: format!("198.51.100.{ttl}").parse().unwrap(),
                                replies: 3,
                                flows: vec![0],
                                unreachable: None,
                            }]
                        },
                        rtts: if silent {
                            vec![]
                        } else {
                            vec![us(base), us(base + jitter / 8), us(base + jitter / 3)]
                        },
                        balancing: None,
                    }
                })
                .collect();
            Sample {
                probe: ProbeKind::TRACE,
                duration: us(30_000 + jitter),
                measurement: Measurement::from(TraceReport {
                    flows: 1,
                    reached: true,
                    hops,
                    path_hash: 0x9e37_79b9_u32.wrapping_mul(target.len() as u32 + ms as u32 % 7),
                    paths_known: 1,
                    ..TraceReport::default()
                }),
                ..sample(target, ms, 0)
            }
        }
        _ => sample(target, ms, 18_000 + jitter),
    }
}

fn opts(backend: &str, dir: &str) -> StoreOptions {
    let mut o = StoreOptions::new(std::path::Path::new(dir).join("store"));
    o.backend = backend.parse().expect("fjall or sled");
    o
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    match a.get(1).map(String::as_str) {
        Some("ingest") => ingest(
            &a[2],
            &a[3],
            a[4].parse().expect("HOURS"),
            a.get(5)
                .map_or(Ok(ProbeKind::PING), |k| k.parse())
                .expect("KIND"),
        ),
        Some("range") => range(&a[2], &a[3], a[4].parse().expect("DAYS")),
        Some("drain") => drain(&a[2], &a[3], &a[4], a[5].parse().expect("RATE")),
        _ => {
            eprintln!("usage: vantage-store-bench ingest|drain ...");
            std::process::exit(2);
        }
    }
}

fn ingest(backend: &str, dir: &str, hours: f64, kind: ProbeKind) {
    let targets: Vec<Arc<str>> = (0..TARGETS)
        .map(|i| Arc::from(format!("target-{i:03}")))
        .collect();
    let labels = Labels::from([("site".to_string(), "bench".to_string())]);
    let seconds = (hours * 3600.0) as u64;
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let start_ms = now_ms - seconds * 1000;
    let n = seconds * TARGETS;

    // Paced like the device: one commit per 5 s of samples.
    let mut o = opts(backend, dir);
    o.commit_interval = Duration::from_secs(3600);
    o.commit_samples = (5 * TARGETS) as usize;
    let store = Store::open(o).expect("store opens");
    let w0 = write_bytes();
    let t = Instant::now();
    let mut rng = 0x2545f4914f6cdd1du64;
    for s in 0..seconds {
        for (i, target) in targets.iter().enumerate() {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            // Times around 20 ms with a few ms of jitter, 10 ms apart in start time.
            store.append(
                &round(kind, target, start_ms + s * 1000 + i as u64 * 10, rng),
                &labels,
            );
        }
        if s % 5 == 4 {
            // Let the committer keep up, as the real 5 s would.
            while store.stats().pending >= 5 * TARGETS {
                std::thread::yield_now();
            }
        }
    }
    store.flush().expect("flush");
    let paced = t.elapsed();
    let st = store.stats();
    store.close();
    drop(store);
    let written = write_bytes() - w0;
    let disk = vantage_store::dir_usage(std::path::Path::new(dir));

    // Raw ingest speed: default group commit, as fast as appends go.
    let raw_dir = format!("{dir}-raw");
    let store = Store::open(opts(backend, &raw_dir)).expect("store opens");
    let t = Instant::now();
    let raw_n = n.min(2_000_000);
    for k in 0..raw_n {
        let target = &targets[(k % TARGETS) as usize];
        store.append(&round(kind, target, start_ms + k * 10, k % 977), &labels);
    }
    store.flush().expect("flush");
    let raw = t.elapsed();
    drop(store);
    let _ = std::fs::remove_dir_all(&raw_dir);

    println!(
        "backend={backend} kind={} samples={n} commits={} paced_s={:.2} disk_bytes={disk} disk_per_sample={:.2} written_bytes={written} written_per_sample={:.2} committed_per_sample={:.2} block_bytes_per_sample={:.2} raw_samples={raw_n} raw_ingest_per_s={:.0}",
        kind.as_str(),
        st.commits,
        paced.as_secs_f64(),
        disk as f64 / n as f64,
        written as f64 / n as f64,
        st.bytes_committed as f64 / n as f64,
        st.block_bytes as f64 / n as f64,
        raw_n as f64 / raw.as_secs_f64(),
    );
}

fn range(backend: &str, dir: &str, days: u64) {
    let target: Arc<str> = Arc::from("bench");
    let labels = Labels::new();
    let seconds = days * 86_400;
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let start_ms = now_ms - seconds * 1000;
    let mut o = opts(backend, dir);
    o.commit_interval = Duration::from_secs(3600);
    o.commit_samples = 3600;
    let t = Instant::now();
    {
        let store = Store::open(o.clone()).expect("store opens");
        let mut rng = 0x2545f4914f6cdd1du64;
        for s in 0..seconds {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            store.append(
                &round(ProbeKind::PING, &target, start_ms + s * 1000, rng),
                &labels,
            );
            if s % 3600 == 3599 {
                while store.stats().pending >= 3600 {
                    std::thread::yield_now();
                }
            }
        }
        store.flush().expect("flush");
        store.flush().expect("flush");
    }
    let ingest = t.elapsed();
    let t = Instant::now();
    let store = Store::open(o).expect("store opens");
    let open = t.elapsed();
    let now = now_ms as i64;
    let mut line = format!(
        "backend={backend} rounds={seconds} ingest_s={:.1} open_ms={:.1}",
        ingest.as_secs_f64(),
        open.as_secs_f64() * 1e3
    );
    for (name, len_s, step_s) in [
        ("1h", 3600, 60),
        ("24h", 86_400, 300),
        ("7d", 604_800, 1800),
        ("30d", 2_592_000, 7200),
    ] {
        for pass in ["cold", "warm"] {
            let b0 = store.stats().blocks_read;
            let t = Instant::now();
            let buckets = store
                .aggregate(
                    "bench",
                    ProbeKind::PING,
                    now - len_s * 1000,
                    now,
                    step_s * 1000,
                )
                .expect("aggregate");
            let took = t.elapsed();
            let rounds: u32 = buckets.iter().map(|(_, a)| a.rounds).sum();
            line += &format!(
                " {name}_{pass}_ms={:.1} {name}_buckets={} {name}_rounds={rounds} {name}_blocks_read={}",
                took.as_secs_f64() * 1e3,
                buckets.len(),
                store.stats().blocks_read - b0
            );
        }
    }
    let t = Instant::now();
    let raw = store
        .query("bench", ProbeKind::PING, now - seconds as i64 * 1000, now)
        .expect("query");
    line += &format!(
        " blocks_all_rounds={} blocks_read_ms={:.1}",
        raw.len(),
        t.elapsed().as_secs_f64() * 1e3
    );
    println!("{line}");
}

fn drain(backend: &str, dir: &str, url: &str, rate: u32) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let store = Arc::new(Store::open(opts(backend, dir)).expect("store opens"));
        let total = store.backlog(store.cursor("bench"));
        let mut e = Endpoint::new("bench", url);
        e.max_samples_per_second = rate;
        let t = Instant::now();
        let shipper = Shipper::start(store.clone(), vec![e], ShipperOptions::default())
            .expect("shipper");
        loop {
            let left = store.backlog(store.cursor("bench"));
            if left == 0 {
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(1800), "drain stuck at {left}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let took = t.elapsed();
        let ep = &shipper.endpoints()[0];
        let points = ep.points_sent.load(std::sync::atomic::Ordering::Relaxed);
        let failures = ep.failures.load(std::sync::atomic::Ordering::Relaxed);
        shipper.stop().await;
        println!(
            "backend={backend} rate={rate} rounds={total} points={points} failures={failures} drain_s={:.2} rounds_per_s={:.0}",
            took.as_secs_f64(),
            total as f64 / took.as_secs_f64()
        );
        store.close();
    });
}
