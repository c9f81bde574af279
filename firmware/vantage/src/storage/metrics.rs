//! The store's and shipping's series on `/metrics`.

use std::sync::atomic::Ordering;
use vantage_core::LockExt;

use prometheus::core::Collector;
use prometheus::proto::MetricFamily;
use prometheus::{Gauge, GaugeVec, IntCounter, IntCounterVec, Opts};
use vantage_store::{DropReason, EndpointStats, StoreStats};

use super::{Shipping, Storage};
use crate::metrics::Collect;

/// Metric names, in one place.
pub mod names {
    pub const STORE_SAMPLES: &str = "vantage_store_samples";
    pub const STORE_BYTES: &str = "vantage_store_bytes";
    pub const STORE_DROPPED: &str = "vantage_store_dropped_samples_total";
    pub const STORE_OLDEST: &str = "vantage_store_oldest_sample_timestamp_seconds";
    pub const STORE_PENDING: &str = "vantage_store_pending_samples";
    pub const STORE_HEALTHY: &str = "vantage_store_healthy";
    pub const STORE_COMMITS: &str = "vantage_store_commits_total";
    pub const STORE_WRITE_ERRORS: &str = "vantage_store_write_errors_total";
    pub const STORE_WRITTEN: &str = "vantage_store_written_bytes_total";
    pub const STORE_QUARANTINED: &str = "vantage_store_quarantined_total";
    pub const STORE_CORRUPT: &str = "vantage_store_corrupt_blocks_total";
    pub const STORE_UNREADABLE: &str = "vantage_store_unreadable_samples";
    pub const RW_SENT: &str = "vantage_remote_write_samples_sent_total";
    pub const RW_FAILURES: &str = "vantage_remote_write_failures_total";
    pub const RW_REJECTED: &str = "vantage_remote_write_rejected_samples_total";
    pub const RW_BYTES: &str = "vantage_remote_write_sent_bytes_total";
    pub const RW_SKIPPED: &str = "vantage_remote_write_skipped_samples_total";
    pub const RW_COLLIDED: &str = "vantage_remote_write_scrape_collisions_total";
    pub const RW_OLDEST: &str = "vantage_remote_write_oldest_unshipped_timestamp_seconds";
    pub const RW_BACKLOG: &str = "vantage_remote_write_backlog_samples";
    pub const RW_LAST_SUCCESS: &str = "vantage_remote_write_last_success_timestamp_seconds";
    pub const UPLINK_UP: &str = "vantage_uplink_up";
}

fn one(c: impl Collector, out: &mut Vec<MetricFamily>) {
    out.extend(c.collect());
}

fn gauge(name: &str, help: &str, v: f64, out: &mut Vec<MetricFamily>) {
    let g = Gauge::new(name, help).expect("valid metric");
    g.set(v);
    one(g, out);
}

fn counter(name: &str, help: &str, v: u64, out: &mut Vec<MetricFamily>) {
    let c = IntCounter::new(name, help).expect("valid metric");
    c.inc_by(v);
    one(c, out);
}

type StoreCounter = fn(&StoreStats) -> u64;

/// The store's counters: name, help, value.
const STORE_COUNTERS: [(&str, &str, StoreCounter); 5] = [
    (
        names::STORE_COMMITS,
        "Group commits written to the store.",
        |s| s.commits,
    ),
    (
        names::STORE_WRITE_ERRORS,
        "Group commits that failed (retried with backoff).",
        |s| s.commit_errors,
    ),
    (
        names::STORE_WRITTEN,
        "Bytes handed to the storage engine by commits.",
        |s| s.bytes_committed,
    ),
    (
        names::STORE_QUARANTINED,
        "Damaged stores moved aside at start.",
        |s| s.quarantined,
    ),
    (
        names::STORE_CORRUPT,
        "Damaged blocks, index entries or lost commits found.",
        |s| s.corrupt_blocks,
    ),
];

impl Collect for Storage {
    fn collect(&self, out: &mut Vec<MetricFamily>) {
        if let Some(store) = &self.store {
            let st = store.stats();
            gauge(
                names::STORE_SAMPLES,
                "Samples in the store on disk.",
                st.samples as f64,
                out,
            );
            gauge(
                names::STORE_BYTES,
                "Bytes the store occupies on disk.",
                st.disk_bytes as f64,
                out,
            );
            let dropped = IntCounterVec::new(
                Opts::new(
                    names::STORE_DROPPED,
                    "Samples dropped: age and bytes (the bounds, oldest first), overflow (kept in memory while the disk refused writes), corrupt (in damaged data).",
                ),
                &["reason"],
            )
            .expect("valid metric");
            for r in DropReason::ALL {
                dropped
                    .with_label_values(&[r.as_str()])
                    .inc_by(st.dropped(r));
            }
            one(dropped, out);
            gauge(
                names::STORE_OLDEST,
                "Timestamp of the oldest sample kept, in seconds since the epoch (0: none).",
                st.oldest_ms.map_or(0.0, |m| m as f64 / 1000.0),
                out,
            );
            gauge(
                names::STORE_PENDING,
                "Samples waiting in memory for the next group commit.",
                st.pending as f64,
                out,
            );
            gauge(
                names::STORE_HEALTHY,
                "1 if the last write to the store succeeded, else 0 (disk full, read-only, failing).",
                if st.healthy() { 1.0 } else { 0.0 },
                out,
            );
            for (name, help, get) in STORE_COUNTERS {
                counter(name, help, get(&st), out);
            }
            gauge(
                names::STORE_UNREADABLE,
                "Samples in blocks a newer version wrote in a format this one cannot read, found so far: kept on disk untouched, skipped by charts and shipping.",
                st.unreadable_samples as f64,
                out,
            );
        }
        if let Some(s) = self.shipping.lock_or_recover().as_ref() {
            collect_shipping(s, out);
        }
    }
}

type Counter = fn(&EndpointStats) -> u64;
type Level = fn(&EndpointStats) -> f64;

/// Per-endpoint counters: name, help, value.
const SHIPPING_COUNTERS: [(&str, &str, Counter); 6] = [
    (
        names::RW_SENT,
        "Stored probe rounds shipped to the endpoint, every series sample of them accepted or refused (each round is a few series samples: ping up to 10, DNS up to 18, a trace 6 plus 2 per hop).",
        |e| e.samples_sent.load(Ordering::Relaxed),
    ),
    (
        names::RW_FAILURES,
        "Failed remote_write requests (network, 5xx, 429 and 4xx; each part of a split request counts).",
        |e| e.failures.load(Ordering::Relaxed),
    ),
    (
        names::RW_REJECTED,
        "Series samples the endpoint refused (a refused request is split down to single samples; those still refused are dropped and counted here).",
        |e| e.samples_rejected.load(Ordering::Relaxed),
    ),
    (
        names::RW_BYTES,
        "Bytes of remote_write request bodies the endpoint acknowledged (protobuf, snappy-compressed).",
        |e| e.bytes_sent.load(Ordering::Relaxed),
    ),
    (
        names::RW_SKIPPED,
        "Stored probe rounds not shipped because Prometheus scrapes covered them (send = \"gaps\").",
        |e| e.samples_skipped.load(Ordering::Relaxed),
    ),
    (
        names::RW_COLLIDED,
        "Series samples a send = \"gaps\" endpoint already held at that exact millisecond from its own scrape (a scraped value or a failed scrape's staleness marker); not counted as rejected.",
        |e| e.samples_collided.load(Ordering::Relaxed),
    ),
];

/// Per-endpoint gauges: name, help, value.
const SHIPPING_GAUGES: [(&str, &str, Level); 3] = [
    (
        names::RW_BACKLOG,
        "Stored probe rounds not yet acknowledged by the endpoint.",
        |e| e.backlog.load(Ordering::Relaxed) as f64,
    ),
    (
        names::RW_OLDEST,
        "Timestamp of the oldest stored probe round not yet shipped to the endpoint, in seconds since the epoch (0: none waits).",
        |e| e.oldest_unshipped_ms.load(Ordering::Relaxed) as f64 / 1000.0,
    ),
    (
        names::RW_LAST_SUCCESS,
        "When the endpoint last acknowledged a request, in seconds since the epoch (0: never).",
        |e| e.last_success_ms.load(Ordering::Relaxed) as f64 / 1000.0,
    ),
];

fn collect_shipping(s: &Shipping, out: &mut Vec<MetricFamily>) {
    let endpoints = s.shipper.endpoints();
    for (name, help, get) in SHIPPING_COUNTERS {
        let c = IntCounterVec::new(Opts::new(name, help), &["endpoint"]).expect("valid metric");
        for e in endpoints {
            c.with_label_values(&[e.name.as_str()]).inc_by(get(e));
        }
        one(c, out);
    }
    for (name, help, get) in SHIPPING_GAUGES {
        let g = GaugeVec::new(Opts::new(name, help), &["endpoint"]).expect("valid metric");
        for e in endpoints {
            g.with_label_values(&[e.name.as_str()]).set(get(e));
        }
        one(g, out);
    }
    gauge(
        names::UPLINK_UP,
        "1 if shipping works: the last request to every remote_write endpoint succeeded.",
        if s.shipper.uplink_up() == Some(true) {
            1.0
        } else {
            0.0
        },
        out,
    );
}
