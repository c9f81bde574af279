//! The sample store under `--data-dir` and the remote_write shipper, wired into the daemon:
//! every sample the runner emits is appended to the store; the shipper sends the store's
//! samples to the configured endpoints; both report their state on `/metrics`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use prometheus::core::Collector;
use prometheus::proto::MetricFamily;
use prometheus::{Gauge, GaugeVec, IntCounter, IntCounterVec, Opts};
use vantage_core::config::{Auth, RemoteWriteConfig, StoreConfig};
use vantage_core::{Config, JobKey, Observer, Sample};
use vantage_leds::{StoreHealth, Uplink};
use vantage_store::remote_write::Tls;
use vantage_store::{
    BackendKind, DropReason, Endpoint, EndpointStats, Labels, ScrapeLog, Shipper, ShipperOptions,
    Store, StoreOptions,
};

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
    pub const RW_SENT: &str = "vantage_remote_write_samples_sent_total";
    pub const RW_FAILURES: &str = "vantage_remote_write_failures_total";
    pub const RW_REJECTED: &str = "vantage_remote_write_rejected_samples_total";
    pub const RW_BYTES: &str = "vantage_remote_write_sent_bytes_total";
    pub const RW_SKIPPED: &str = "vantage_remote_write_skipped_samples_total";
    pub const RW_OLDEST: &str = "vantage_remote_write_oldest_unshipped_timestamp_seconds";
    pub const RW_BACKLOG: &str = "vantage_remote_write_backlog_samples";
    pub const RW_LAST_SUCCESS: &str = "vantage_remote_write_last_success_timestamp_seconds";
    pub const UPLINK_UP: &str = "vantage_uplink_up";
}

/// The store directory of a backend under the data directory (each engine keeps its own, so
/// switching engines never makes one read the other's files).
pub fn store_dir(data_dir: &Path, backend: BackendKind) -> PathBuf {
    match backend {
        BackendKind::Fjall => data_dir.join("store"),
        BackendKind::Sled => data_dir.join("store-sled"),
    }
}

pub fn store_options(data_dir: &Path, c: &StoreConfig) -> StoreOptions {
    let mut backend: BackendKind = c.backend.parse().unwrap_or_default();
    if !backend.available() {
        tracing::error!(
            "store: this build has no {} backend; using fjall",
            backend.as_str()
        );
        backend = BackendKind::Fjall;
    }
    let mut o = StoreOptions::new(store_dir(data_dir, backend));
    o.backend = backend;
    o.max_bytes = c.max_bytes;
    o.max_age = c.max_age;
    o.commit_interval = c.commit_interval;
    o.commit_samples = c.commit_samples;
    o.max_pending = c.max_pending;
    o
}

pub fn endpoint(c: &RemoteWriteConfig) -> Endpoint {
    let mut e = Endpoint::new(c.name.clone(), c.url.clone());
    match &c.auth {
        Auth::None => {}
        Auth::Basic {
            username, password, ..
        } => e.basic_auth = Some((username.clone(), password.0.clone())),
        Auth::Bearer { token, .. } => e.bearer_token = Some(token.0.clone()),
    }
    e.tls = Tls {
        ca_file: c.tls.ca_file.clone(),
        cert_file: c.tls.cert_file.clone(),
        key_file: c.tls.key_file.clone(),
        insecure_skip_verify: c.tls.insecure_skip_verify,
    };
    e.timeout = c.timeout;
    e.external_labels = c.labels.clone().into_iter().collect();
    e.max_samples_per_send = c.max_samples_per_send;
    e.max_samples_per_second = c.max_samples_per_second;
    e.min_backoff = c.min_backoff;
    e.max_backoff = c.max_backoff;
    e.send = c.send;
    e.scrape_gap = c.scrape_gap;
    e
}

/// The labels every series shipped to an endpoint carries beside its own: the endpoint's
/// `labels`, then the device's labels (as on `/metrics`), then the identity dashboards select
/// on, `job="vantage"` and `instance=<device name>`, unless set before. A central Prometheus
/// that scrapes the device with the same `job` and `instance` sees the pushed and scraped
/// series as the same series (docs/FLEET.md).
pub fn shipped_labels(
    endpoint: &Labels,
    device_labels: &[(String, String)],
    device_name: &str,
) -> Labels {
    let mut l = endpoint.clone();
    for (k, v) in device_labels {
        l.entry(k.clone()).or_insert_with(|| v.clone());
    }
    l.entry("job".into()).or_insert_with(|| "vantage".into());
    l.entry("instance".into())
        .or_insert_with(|| device_name.to_string());
    l
}

struct Shipping {
    config: Vec<RemoteWriteConfig>,
    device_labels: Vec<(String, String)>,
    shipper: Shipper,
}

/// The daemon's store and shipper.
pub struct Storage {
    store: Option<Arc<Store>>,
    store_config: StoreConfig,
    labels: RwLock<HashMap<Arc<str>, Arc<Labels>>>,
    shipping: Mutex<Option<Shipping>>,
    /// Prometheus scrapes of `/metrics`, for endpoints with `send = "gaps"`.
    scrapes: Arc<ScrapeLog>,
    /// The daemon's own series, pushed to `send = "all"` endpoints (set once by the daemon).
    live: std::sync::OnceLock<Arc<dyn vantage_store::remote_write::LiveSeries>>,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the store means for the status LEDs. A full store is a ring buffer doing its job;
/// it is worth a light only while samples wait for an unreachable uplink, because the oldest
/// unshipped ones are the next to go.
fn store_health(healthy: bool, disk_bytes: u64, max_bytes: u64, uplink: Uplink) -> StoreHealth {
    if !healthy {
        StoreHealth::Failing
    } else if uplink == Uplink::Unreachable
        && disk_bytes.saturating_mul(10) >= max_bytes.saturating_mul(9)
    {
        StoreHealth::NearFull
    } else {
        StoreHealth::Ok
    }
}

impl Storage {
    /// The shipping and store states the status LEDs show.
    pub fn led_inputs(&self) -> (Uplink, StoreHealth) {
        let uplink = match lock(&self.shipping)
            .as_ref()
            .and_then(|s| s.shipper.uplink_up())
        {
            None => Uplink::Unknown,
            Some(true) => Uplink::Reachable,
            Some(false) => Uplink::Unreachable,
        };
        let store = match &self.store {
            None => StoreHealth::Failing,
            Some(s) => {
                let st = s.stats();
                store_health(
                    st.healthy(),
                    st.disk_bytes,
                    self.store_config.max_bytes,
                    uplink,
                )
            }
        };
        (uplink, store)
    }

    /// The store's fill and the shipping state, for the web page's status. Endpoint URLs are
    /// left out: they may carry credentials.
    pub fn status_json(&self) -> serde_json::Value {
        use serde_json::json;
        let store = match &self.store {
            None => json!({ "configured": true, "healthy": false,
                             "error": "the store could not be opened; see the log" }),
            Some(s) => {
                let st = s.stats();
                let max = self.store_config.max_bytes;
                json!({
                    "configured": true,
                    "healthy": st.healthy(),
                    "error": st.error,
                    "backend": st.backend,
                    "samples": st.samples,
                    "disk_bytes": st.disk_bytes,
                    "max_bytes": max,
                    "fill": if max == 0 { 0.0 } else { st.disk_bytes as f64 / max as f64 },
                    "oldest_ms": st.oldest_ms,
                    "newest_ms": st.newest_ms,
                    "dropped": st.dropped_total(),
                })
            }
        };
        let shipping = lock(&self.shipping);
        let remote_write = match shipping.as_ref() {
            None => json!({ "configured": false }),
            Some(sh) => {
                let endpoints: Vec<_> = sh
                    .shipper
                    .endpoints()
                    .iter()
                    .map(|e| {
                        let last = e.last_success_ms.load(Ordering::Relaxed);
                        json!({
                            "name": e.name,
                            "up": e.up.load(Ordering::Relaxed),
                            "backlog": e.backlog.load(Ordering::Relaxed),
                            "samples_sent": e.samples_sent.load(Ordering::Relaxed),
                            "last_success_ms": (last > 0).then_some(last),
                            "last_error": e.last_error.lock().unwrap_or_else(|e| e.into_inner()).clone(),
                            "rejected_samples": e.samples_rejected.load(Ordering::Relaxed),
                            "last_rejection": e.last_rejection.lock().unwrap_or_else(|e| e.into_inner()).clone(),
                        })
                    })
                    .collect();
                let state = match sh.shipper.uplink_up() {
                    Some(true) => "shipping",
                    Some(false) => "uplink down",
                    None => "unknown",
                };
                json!({ "configured": true, "state": state, "endpoints": endpoints })
            }
        };
        json!({ "store": store, "remote_write": remote_write })
    }

    /// Opens the store under `data_dir` and starts shipping. Never fails: without a usable
    /// store the daemon keeps probing and exporting, and says why in the log and on /metrics.
    pub fn start(data_dir: &Path, config: &Config) -> Arc<Self> {
        let opts = store_options(data_dir, &config.store);
        let store = match Store::open(opts) {
            Ok(s) => Some(Arc::new(s)),
            Err(e) => {
                tracing::error!("store: cannot open the store, samples are not kept: {e}");
                None
            }
        };
        Arc::new(Self {
            store,
            store_config: config.store.clone(),
            labels: RwLock::default(),
            shipping: Mutex::new(None),
            scrapes: Arc::new(ScrapeLog::new()),
            live: std::sync::OnceLock::new(),
        })
    }

    /// Where the daemon's own series come from, for push-only endpoints. Set before the first
    /// config is applied; later calls are ignored.
    pub fn set_live(&self, live: Arc<dyn vantage_store::remote_write::LiveSeries>) {
        let _ = self.live.set(live);
    }

    /// Notes a successful Prometheus scrape of `/metrics` (now): the rounds it covered are
    /// not shipped to `send = "gaps"` endpoints.
    pub fn note_scrape(&self) {
        self.scrapes
            .record(vantage_store::codec::unix_ms(std::time::SystemTime::now()));
    }

    /// Takes a new config: target labels at once; endpoints restart when they changed. Store
    /// settings apply at the next start. `device_labels` (the `[device]` name and labels, on
    /// every scraped series) go on every shipped series too, below the endpoint's own labels.
    pub fn apply(&self, config: &Config, device_labels: Vec<(String, String)>) {
        let labels = config
            .targets
            .iter()
            .map(|t| {
                (
                    Arc::from(t.name.as_str()),
                    Arc::new(t.labels.clone().into_iter().collect::<Labels>()),
                )
            })
            .collect();
        *self.labels.write().unwrap_or_else(|e| e.into_inner()) = labels;
        if config.store != self.store_config {
            tracing::warn!("store: [store] settings changed; they take effect at the next start");
        }
        let Some(store) = &self.store else { return };
        let mut shipping = lock(&self.shipping);
        if shipping
            .as_ref()
            .is_some_and(|s| s.config == config.remote_write && s.device_labels == device_labels)
            || (shipping.is_none() && config.remote_write.is_empty())
        {
            return;
        }
        if let Some(old) = shipping.take() {
            let s = old.shipper;
            tokio::spawn(async move { s.stop().await });
        }
        if config.remote_write.is_empty() {
            return;
        }
        let device_name = crate::fleet::device_name(config);
        let endpoints = config
            .remote_write
            .iter()
            .map(|c| {
                let mut e = endpoint(c);
                e.external_labels =
                    shipped_labels(&e.external_labels, &device_labels, &device_name);
                e
            })
            .collect();
        let opts = ShipperOptions {
            scrapes: self.scrapes.clone(),
            live: self.live.get().cloned(),
            ..ShipperOptions::default()
        };
        match Shipper::start(store.clone(), endpoints, opts) {
            Ok(shipper) => {
                tracing::info!(
                    endpoints = config.remote_write.len(),
                    "remote_write: shipping the store"
                );
                *shipping = Some(Shipping {
                    config: config.remote_write.clone(),
                    device_labels,
                    shipper,
                });
            }
            Err(e) => tracing::error!("remote_write: {e}; not shipping"),
        }
    }

    /// The scrapes noted so far.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn scrapes(&self) -> &Arc<ScrapeLog> {
        &self.scrapes
    }

    /// The store, when it opened.
    pub fn store(&self) -> Option<&Arc<Store>> {
        self.store.as_ref()
    }

    /// The `[store]` settings the store was opened with (changes need a restart).
    pub fn running_store_config(&self) -> &StoreConfig {
        &self.store_config
    }

    /// Stops shipping and writes what is pending.
    pub async fn shutdown(&self) {
        let shipper = lock(&self.shipping).take().map(|s| s.shipper);
        if let Some(s) = shipper {
            s.stop().await;
        }
        if let Some(store) = self.store.clone() {
            let _ = tokio::task::spawn_blocking(move || store.close()).await;
        }
    }
}

impl Observer for Storage {
    fn sample(&self, sample: Sample) {
        let Some(store) = &self.store else { return };
        let labels = self
            .labels
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&sample.target)
            .cloned()
            .unwrap_or_default();
        store.append(&sample, &labels);
    }
    fn lag(&self, _: &JobKey, _: Duration) {}
    fn skipped(&self, _: &JobKey) {}
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
            counter(
                names::STORE_COMMITS,
                "Group commits written to the store.",
                st.commits,
                out,
            );
            counter(
                names::STORE_WRITE_ERRORS,
                "Group commits that failed (retried with backoff).",
                st.commit_errors,
                out,
            );
            counter(
                names::STORE_WRITTEN,
                "Bytes handed to the storage engine by commits.",
                st.bytes_committed,
                out,
            );
            counter(
                names::STORE_QUARANTINED,
                "Damaged stores moved aside at start.",
                st.quarantined,
                out,
            );
            counter(
                names::STORE_CORRUPT,
                "Damaged blocks, index entries or lost commits found.",
                st.corrupt_blocks,
                out,
            );
        }
        if let Some(s) = lock(&self.shipping).as_ref() {
            collect_shipping(s, out);
        }
    }
}

type Counter = fn(&EndpointStats) -> u64;
type Level = fn(&EndpointStats) -> f64;

/// Per-endpoint counters: name, help, value.
const SHIPPING_COUNTERS: [(&str, &str, Counter); 5] = [
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

/// `GET /api/samples?target=NAME[&probe=ping][&from=UNIX_S][&to=UNIX_S]`: the stored rounds of
/// one target and probe (default: the last hour), for the local charts. Rounds from an outage
/// of the uplink are here too, at their own times. Each round has its named `values` (those of
/// `Sample::values`); DNS rounds with an answer also the rcode's name, trace rounds their `hops`,
/// flagged rounds their `flags` ([`round_json`]).
#[derive(Debug, serde::Deserialize)]
pub struct SamplesQuery {
    target: String,
    probe: Option<String>,
    from: Option<f64>,
    to: Option<f64>,
}

/// At most this many rounds per answer (a day of one target at 1 s).
const MAX_SAMPLES_PER_ANSWER: usize = 86_400;

pub async fn samples(
    axum::extract::State(storage): axum::extract::State<Option<Arc<Storage>>>,
    axum::extract::Query(q): axum::extract::Query<SamplesQuery>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let bad = |m: String| (axum::http::StatusCode::BAD_REQUEST, m).into_response();
    let Some(store) = storage.as_ref().and_then(|s| s.store.clone()) else {
        return (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "no store: see the log",
        )
            .into_response();
    };
    let probe: vantage_core::ProbeKind = match q.probe.as_deref().unwrap_or("ping").parse() {
        Ok(p) => p,
        Err(e) => return bad(e),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let to = q.to.unwrap_or(now);
    let from = q.from.unwrap_or(to - 3600.0);
    if !(from.is_finite() && to.is_finite()) || from > to {
        return bad("from and to are seconds since the epoch, from <= to".into());
    }
    let (from_ms, to_ms) = ((from * 1000.0) as i64, (to * 1000.0) as i64);
    let target = q.target.clone();
    let res =
        tokio::task::spawn_blocking(move || store.query(&target, probe, from_ms, to_ms)).await;
    let rounds = match res {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            return (axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
        }
        Err(e) => {
            return (axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
        }
    };
    let truncated = rounds.len() > MAX_SAMPLES_PER_ANSWER;
    let skip = rounds.len().saturating_sub(MAX_SAMPLES_PER_ANSWER);
    let samples: Vec<serde_json::Value> = rounds.iter().skip(skip).map(round_json).collect();
    axum::Json(serde_json::json!({
        "target": q.target,
        "probe": probe.as_str(),
        "from": from,
        "to": to,
        "truncated": truncated,
        "samples": samples,
    }))
    .into_response()
}

/// One stored round as `/api/samples` shows it; `flags` lists why a round's figures may include
/// the device's own delays (`late`, `cpu`, `memory`), and is absent for most rounds.
fn round_json(r: &vantage_store::StoredSample) -> serde_json::Value {
    let values: serde_json::Map<String, serde_json::Value> = r
        .values()
        .into_iter()
        .map(|(k, v)| (k.to_string(), serde_json::json!(v)))
        .collect();
    let rcode = values
        .get("rcode")
        .and_then(serde_json::Value::as_f64)
        .map(|v| v as u16);
    let mut round = serde_json::json!({
        "timestamp": r.timestamp_ms as f64 / 1000.0,
        "error": r.error.as_str(),
        "values": values,
    });
    // A DNS round with an answer (the one kind with an rcode value): its rcode's name too.
    if let Some(rcode) = rcode {
        round["rcode"] = serde_json::json!(vantage_core::config::rcode_name(rcode));
    }
    if let Some(t) = &r.trace {
        round["hops"] = t
            .hops
            .iter()
            .map(|h| {
                serde_json::json!({
                    "ttl": h.ttl,
                    "sent": h.sent,
                    "received": h.received,
                    "loss_ratio": h.loss_ratio(),
                    "rtt_avg_seconds": h.rtt_avg_us.map(|us| us as f64 / 1e6),
                })
            })
            .collect();
    }
    if !r.quality.is_empty() {
        round["flags"] = serde_json::json!(r.quality);
    }
    round
}

#[cfg(test)]
mod round_json_tests {
    use std::time::{Duration, UNIX_EPOCH};

    use vantage_core::{Measurement, ProbeKind, RoundQuality, Sample};
    use vantage_store::StoredSample;

    use super::round_json;

    #[test]
    fn flagged_rounds_list_their_flags_and_others_have_none() {
        let mut s = Sample {
            target: "t".into(),
            probe: ProbeKind::PING,
            timestamp: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            duration: Duration::from_millis(3),
            success: true,
            error: None,
            measurement: Measurement::None,
            quality: RoundQuality::empty(),
        };
        let plain = round_json(&StoredSample::from_sample(&s, 0));
        assert!(plain.get("flags").is_none(), "{plain}");
        s.quality = RoundQuality::LATE | RoundQuality::MEMORY;
        let flagged = round_json(&StoredSample::from_sample(&s, 0));
        assert_eq!(flagged["flags"], serde_json::json!(["late", "memory"]));
        assert_eq!(flagged["timestamp"], serde_json::json!(1_700_000_000.0));
    }
}

#[cfg(test)]
mod identity_tests {
    use super::*;

    #[test]
    fn shipped_series_carry_the_device_labels_job_and_instance_unless_set() {
        let device = [
            ("device".to_string(), "pi7".to_string()),
            ("site".to_string(), "hq".to_string()),
        ];
        let l = shipped_labels(&Labels::new(), &device, "pi7");
        let want: Labels = [
            ("device", "pi7"),
            ("instance", "pi7"),
            ("job", "vantage"),
            ("site", "hq"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(l, want);
        // The endpoint's own labels win over the device's and over the defaults.
        let own: Labels = [("instance", "probe1.corp"), ("job", "edge"), ("site", "x")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let l = shipped_labels(&own, &device, "pi7");
        assert_eq!(l.get("instance").map(String::as_str), Some("probe1.corp"));
        assert_eq!(l.get("job").map(String::as_str), Some("edge"));
        assert_eq!(l.get("site").map(String::as_str), Some("x"));
        assert_eq!(l.get("device").map(String::as_str), Some("pi7"));
    }
}

#[cfg(test)]
mod led_tests {
    use super::*;

    #[test]
    fn a_full_store_lights_only_while_the_uplink_is_down() {
        let gib = 1u64 << 30;
        assert_eq!(
            store_health(false, 0, gib, Uplink::Reachable),
            StoreHealth::Failing
        );
        assert_eq!(
            store_health(true, gib, gib, Uplink::Reachable),
            StoreHealth::Ok
        );
        assert_eq!(
            store_health(true, gib, gib, Uplink::Unknown),
            StoreHealth::Ok
        );
        assert_eq!(
            store_health(true, gib / 2, gib, Uplink::Unreachable),
            StoreHealth::Ok
        );
        assert_eq!(
            store_health(true, gib / 100 * 95, gib, Uplink::Unreachable),
            StoreHealth::NearFull
        );
        assert_eq!(
            store_health(true, gib / 100 * 89, gib, Uplink::Unreachable),
            StoreHealth::Ok
        );
    }
}

/// What the shipper sends for a round is what `/metrics` shows right after it: same names,
/// same labels, same values, derived from the one definition (`vantage_store::gauges`).
/// Checked on the live metrics themselves.
#[cfg(test)]
mod shipped_series_tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    use serde_json::json;
    use vantage_core::{
        Config, DnsPhases, DnsRecord, DnsReport, HopReport, HopResponder, Measurement, ModuleId,
        Observer, PingReport, ProbeKind, Sample, TraceReport,
    };
    use vantage_store::remote_write::build_request;
    use vantage_store::{Labels, SeriesKey, StoredSample};

    use crate::metrics::Metrics;

    type Series = (String, BTreeMap<String, String>);

    /// `name{labels} value` lines of the text format.
    fn parse(text: &str) -> BTreeMap<Series, f64> {
        vantage_testkit::exposition_series(text)
            .into_iter()
            .map(|(name, labels, value)| ((name, labels), value))
            .collect()
    }

    fn sample(target: &str, probe: ProbeKind, m: Measurement) -> Sample {
        Sample {
            target: Arc::from(target),
            probe,
            timestamp: SystemTime::now(),
            duration: Duration::from_micros(23_456),
            success: true,
            error: None,
            measurement: m,
            quality: Default::default(),
        }
    }

    /// A round of a module kind, its report given as JSON (the kind's fields by name).
    fn module_sample(target: &str, kind: &str, report: serde_json::Value) -> Sample {
        let kind = ModuleId::by_name(kind).unwrap();
        let report = kind.module().report_from_json(report).unwrap();
        sample(target, ProbeKind::Module(kind), Measurement::Module(report))
    }

    #[test]
    fn shipped_series_are_the_live_ones() {
        let config = Config::parse(
            r#"
[[targets]]
name = "resolver"
host = "192.0.2.53"
probes = ["dns"]
labels = { site = "lab" }
dns = { query = "www.example.test" }

[[targets]]
name = "path"
host = "192.0.2.1"
probes = ["trace"]
labels = { site = "lab", rack = "r1" }

[[targets]]
name = "gw"
host = "192.0.2.2"
probes = ["ping"]

[[targets]]
name = "web"
host = "192.0.2.80"
probes = ["tcp"]
labels = { site = "lab" }
tcp = { port = 443, tls = true }

[[targets]]
name = "site"
host = "www.example.test"
probes = ["http"]
http = { url = "https://www.example.test/health" }
"#,
            "test.toml",
        )
        .unwrap();
        let metrics = Metrics::new();
        metrics.apply(&config);
        let us = Duration::from_micros;
        let dns = sample(
            "resolver",
            ProbeKind::DNS,
            Measurement::from(DnsReport {
                rcode: Some(1),
                answers: vec![DnsRecord {
                    name: "www.example.test.".into(),
                    ttl: 60,
                    class: "IN".into(),
                    record_type: "A".into(),
                    data: "192.0.2.1".into(),
                }],
                authority_records: 2,
                additional_records: 1,
                lookup: Some(us(21_000)),
                phases: DnsPhases {
                    resolve: Some(us(120)),
                    connect: Some(us(400)),
                    tls: None,
                    request: Some(us(20_400)),
                },
                ..DnsReport::default()
            }),
        );
        let hop = |ttl: u8, rtts: &[u64]| HopReport {
            ttl,
            sent: 3,
            received: rtts.len() as u32,
            responders: if rtts.is_empty() {
                vec![]
            } else {
                vec![HopResponder {
                    address: format!("192.0.2.{ttl}").parse().unwrap(),
                    replies: rtts.len() as u32,
                    flows: vec![0],
                    unreachable: None,
                }]
            },
            rtts: rtts.iter().map(|r| us(*r)).collect(),
            balancing: None,
        };
        let trace = sample(
            "path",
            ProbeKind::Trace,
            Measurement::Trace(TraceReport {
                reached: true,
                flows: 1,
                hops: vec![
                    hop(1, &[500, 700, 600]),
                    hop(2, &[]),
                    hop(3, &[9_000, 9_500]),
                ],
                path_hash: 4242,
                path_changed: true,
                paths_known: 2,
                ..TraceReport::default()
            }),
        );
        let ping = sample(
            "gw",
            ProbeKind::PING,
            Measurement::from(PingReport {
                sent: 4,
                received: 3,
                duplicates: 1,
                rtts: vec![us(1_234), us(1_500), us(2_001)],
                ..PingReport::default()
            }),
        );
        let (tcp_kind, http_kind) = (
            ModuleId::by_name("tcp").unwrap(),
            ModuleId::by_name("http").unwrap(),
        );
        let tcp = module_sample(
            "web",
            "tcp",
            json!({
                "port": 443,
                "sent": 3,
                "connected": 2,
                "connect_times": [us(300), us(500)],
                "tls_handshake": us(2_500),
                "tls_version": "TLS 1.2",
                "cert_not_after": 1_936_754_745,
            }),
        );
        let http = module_sample(
            "site",
            "http",
            json!({
                "status": 200,
                "redirects": 1,
                "phases": [us(10), us(300), us(2_000), us(4_000), us(500)],
                "content_length": 1234,
                "cert_not_after": 1_936_754_745,
                "tls_version": "TLS 1.3",
            }),
        );
        metrics.sample(tcp.clone());
        metrics.sample(http.clone());
        metrics.sample(dns.clone());
        metrics.sample(trace.clone());
        metrics.sample(ping.clone());
        let live = parse(&metrics.render());

        let keys = [
            SeriesKey {
                target: "resolver".into(),
                probe: ProbeKind::DNS,
                labels: Arc::new(Labels::from([("site".into(), "lab".into())])),
            },
            SeriesKey {
                target: "path".into(),
                probe: ProbeKind::Trace,
                labels: Arc::new(Labels::from([
                    ("site".into(), "lab".into()),
                    ("rack".into(), "r1".into()),
                ])),
            },
            SeriesKey {
                target: "gw".into(),
                probe: ProbeKind::PING,
                labels: Arc::new(Labels::new()),
            },
            SeriesKey {
                target: "web".into(),
                probe: ProbeKind::Module(tcp_kind),
                labels: Arc::new(Labels::from([("site".into(), "lab".into())])),
            },
            SeriesKey {
                target: "site".into(),
                probe: ProbeKind::Module(http_kind),
                labels: Arc::new(Labels::new()),
            },
        ];
        // Through the store's encoding, as a round shipped after an outage would be.
        let (block, _) = vantage_store::codec::encode_block(&[
            StoredSample::from_sample(&dns, 0),
            StoredSample::from_sample(&trace, 1),
            StoredSample::from_sample(&ping, 2),
            StoredSample::from_sample(&tcp, 3),
            StoredSample::from_sample(&http, 4),
        ]);
        let stored = vantage_store::codec::decode_block(&block).unwrap();
        let lookup = |id: u32| keys.get(id as usize).cloned();
        let req = build_request(&stored, &lookup, &Labels::new());
        let mut shipped = BTreeMap::new();
        for t in &req.timeseries {
            let mut labels: BTreeMap<String, String> = t
                .labels
                .iter()
                .map(|l| (l.name.clone(), l.value.clone()))
                .collect();
            let name = labels.remove("__name__").unwrap();
            shipped.insert((name, labels), t.samples[0].value);
        }

        // The one definition: every shipped series is on /metrics with the same value, and
        // every per-round gauge on /metrics is shipped. Counters, histograms and hop
        // addresses are scrape-only.
        assert!(!shipped.is_empty());
        for ((name, labels), v) in &shipped {
            let live_v = live
                .get(&(name.clone(), labels.clone()))
                .unwrap_or_else(|| panic!("shipped {name}{labels:?} is not on /metrics"));
            assert_eq!(live_v, v, "{name}{labels:?}");
        }
        let gauges: Vec<&str> = vantage_store::gauges::ALL.iter().map(|g| g.name).collect();
        for (name, labels) in live.keys() {
            if gauges.contains(&name.as_str()) {
                assert!(
                    shipped.contains_key(&(name.clone(), labels.clone())),
                    "live {name}{labels:?} is not shipped"
                );
            }
        }
        for g in [
            &vantage_store::gauges::DNS_LOOKUP,
            &vantage_store::gauges::DNS_TRUNCATED_RETRY,
            &vantage_store::gauges::TRACE_PATH_CHANGED,
            &vantage_store::gauges::PING_RTT,
            &vantage_store::gauges::PING_SENT,
        ] {
            assert!(shipped.keys().any(|(n, _)| n == g.name), "{}", g.name);
        }
        // Every gauge of the TCP module, but expect (not configured), is shipped for its round.
        let tcp_gauges = tcp_kind.module().gauges();
        let web = |(_, l): &&Series| l.get("target").map(String::as_str) == Some("web");
        let shipped_tcp: Vec<&str> = shipped
            .keys()
            .filter(web)
            .map(|(n, _)| n.as_str())
            .collect();
        for g in tcp_gauges.iter().filter(|g| !g.name.contains("expect")) {
            assert!(shipped_tcp.contains(&g.name), "{} {shipped_tcp:?}", g.name);
        }
        // Every gauge of the HTTP module is shipped for its round, and every phase.
        let site = |(_, l): &&Series| l.get("target").map(String::as_str) == Some("site");
        let shipped_http: Vec<&Series> = shipped.keys().filter(site).collect();
        for g in http_kind.module().gauges() {
            assert!(
                shipped_http.iter().any(|(n, _)| n == g.name),
                "{} {shipped_http:?}",
                g.name
            );
        }
        let phases = shipped_http
            .iter()
            .filter(|(_, l)| l.contains_key("phase"))
            .count();
        assert_eq!(phases, 5);
        let probe_success = BTreeMap::from([
            ("probe".to_string(), "tcp".to_string()),
            ("site".to_string(), "lab".to_string()),
            ("target".to_string(), "web".to_string()),
        ]);
        let success = (
            vantage_store::gauges::PROBE_SUCCESS.name.to_string(),
            probe_success,
        );
        assert_eq!(shipped.get(&success), Some(&1.0));
        let histogram = format!("{}_bucket", tcp_kind.module().histograms()[0].name);
        assert!(live.keys().any(|(n, _)| *n == histogram));
        let hop3 = (
            vantage_store::gauges::TRACE_HOP_RTT.name.to_string(),
            BTreeMap::from([
                ("hop".to_string(), "3".to_string()),
                ("rack".to_string(), "r1".to_string()),
                ("site".to_string(), "lab".to_string()),
                ("target".to_string(), "path".to_string()),
            ]),
        );
        assert_eq!(shipped.get(&hop3), Some(&0.00925));
    }

    /// The TLS certificate's expiry, written by the TCP and by the HTTP probe of one target, is
    /// one series per probe on `/metrics` and in remote_write, never the same series twice.
    #[test]
    fn a_target_s_tcp_and_https_certificates_are_series_of_their_own() {
        let config = Config::parse(
            r#"
[[targets]]
name = "web"
host = "192.0.2.80"
probes = ["tcp", "http"]
tcp = { port = 8443, tls = true }
http = { url = "https://192.0.2.80/health" }
"#,
            "test.toml",
        )
        .unwrap();
        let metrics = Metrics::new();
        metrics.apply(&config);
        let (tcp_kind, http_kind) = (
            ModuleId::by_name("tcp").unwrap(),
            ModuleId::by_name("http").unwrap(),
        );
        let samples = [
            module_sample(
                "web",
                "tcp",
                json!({"cert_not_after": 1_900_000_000, "tls_version": "TLS 1.2"}),
            ),
            module_sample(
                "web",
                "http",
                json!({"cert_not_after": 1_800_000_000, "tls_version": "TLS 1.3"}),
            ),
        ];
        for s in &samples {
            metrics.sample(s.clone());
        }
        let name = vantage_core::module_gauges::TLS_CERT_NOT_AFTER.name;
        let text = metrics.render();
        let mut live: Vec<(String, f64)> = vantage_testkit::exposition_series(&text)
            .into_iter()
            .filter(|(n, _, _)| n == name)
            .map(|(_, l, v)| (l["probe"].clone(), v))
            .collect();
        live.sort_by(|a, b| a.0.cmp(&b.0));
        let want = vec![("http".to_string(), 1.8e9), ("tcp".to_string(), 1.9e9)];
        assert_eq!(live, want, "{text}");
        // The TLS version likewise, with the probe label beside its own.
        let tls_version = vantage_core::module_gauges::TLS_VERSION.name;
        let mut versions: Vec<(String, String, f64)> = vantage_testkit::exposition_series(&text)
            .into_iter()
            .filter(|(n, _, _)| n == tls_version)
            .map(|(_, l, v)| (l["probe"].clone(), l["version"].clone(), v))
            .collect();
        versions.sort_by(|a, b| a.0.cmp(&b.0));
        let want_versions = [("http", "TLS 1.3", 1.0), ("tcp", "TLS 1.2", 1.0)]
            .map(|(p, v, x)| (p.to_string(), v.to_string(), x));
        assert_eq!(versions, want_versions, "{text}");

        let keys = [tcp_kind, http_kind].map(|k| SeriesKey {
            target: "web".into(),
            probe: ProbeKind::Module(k),
            labels: Arc::new(Labels::new()),
        });
        let stored: Vec<StoredSample> = samples
            .iter()
            .zip(0..)
            .map(|(s, i)| StoredSample::from_sample(s, i))
            .collect();
        let lookup = |id: u32| keys.get(id as usize).cloned();
        let req = build_request(&stored, &lookup, &Labels::new());
        let mut shipped: Vec<(String, f64)> = req
            .timeseries
            .iter()
            .filter(|t| {
                t.labels
                    .iter()
                    .any(|l| l.name == "__name__" && l.value == name)
            })
            .map(|t| {
                let probe = t.labels.iter().find(|l| l.name == "probe");
                (
                    probe.map(|l| l.value.clone()).unwrap_or_default(),
                    t.samples[0].value,
                )
            })
            .collect();
        shipped.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(shipped, want);
    }
}
