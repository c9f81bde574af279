//! Ships stored samples to Prometheus remote_write 1.0 endpoints, with their original
//! timestamps, resuming from a persisted cursor per endpoint.
//!
//! Delivery is at least once: the cursor moves only after a 2xx, and is persisted with the
//! store's next group commit, so after a crash a few requests may be sent again. A resend is
//! built from the same stored samples and is an exact duplicate (same series, timestamps and
//! values), which Prometheus accepts idempotently.

pub mod proto;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use prost::Message;
use tokio::sync::Notify;

use crate::codec::{StoredSample, unix_ms};
use crate::gauges::{Point, points};
use crate::series::{Labels, SeriesKey};
use crate::store::{Cursor, Store};

/// Labels of one point's series: `__name__`, `target`, `probe` (where the gauge has it), the
/// point's own label, the target's labels, the endpoint's external labels; sorted by name.
fn series_labels(p: &Point, key: &SeriesKey, external: &Labels) -> Vec<proto::Label> {
    let mut m: BTreeMap<&str, &str> = BTreeMap::new();
    for (k, v) in external.iter() {
        m.insert(k, v);
    }
    for (k, v) in key.labels.iter() {
        m.insert(k, v);
    }
    m.insert("__name__", p.gauge.name);
    m.insert("target", &key.target);
    if p.gauge.probe_label {
        m.insert("probe", key.probe.as_str());
    }
    if let Some((k, v)) = p.label() {
        m.insert(k, v);
    }
    m.into_iter()
        .map(|(k, v)| proto::Label {
            name: k.to_string(),
            value: v.to_string(),
        })
        .collect()
}

/// Builds the protobuf request for stored samples (deterministic: a resend is byte-identical).
pub fn build_request(
    samples: &[StoredSample],
    series: &dyn Fn(u32) -> Option<SeriesKey>,
    external: &Labels,
) -> proto::WriteRequest {
    // (series id, gauge name, own label value) -> a point of it and its samples
    type Key = (u32, &'static str, Option<std::borrow::Cow<'static, str>>);
    let mut by_series: BTreeMap<Key, (Point, Vec<proto::Sample>)> = BTreeMap::new();
    for s in samples {
        for p in points(s) {
            let key = (s.series, p.gauge.name, p.label_value.clone());
            let sample = proto::Sample {
                value: p.value,
                timestamp: s.timestamp_ms,
            };
            by_series
                .entry(key)
                .or_insert((p, Vec::new()))
                .1
                .push(sample);
        }
    }
    let mut keys: BTreeMap<u32, Option<SeriesKey>> = BTreeMap::new();
    let mut timeseries = Vec::with_capacity(by_series.len());
    for ((id, _, _), (point, mut pts)) in by_series {
        let Some(key) = keys.entry(id).or_insert_with(|| series(id)).clone() else {
            continue;
        };
        pts.sort_by_key(|p| p.timestamp);
        pts.dedup_by_key(|p| p.timestamp);
        timeseries.push(proto::TimeSeries {
            labels: series_labels(&point, &key, external),
            samples: pts,
        });
    }
    proto::WriteRequest { timeseries }
}

/// Protobuf, then the snappy block format, as remote_write 1.0 wants.
pub fn encode_request(req: &proto::WriteRequest) -> Vec<u8> {
    let raw = req.encode_to_vec();
    snap::raw::Encoder::new()
        .compress_vec(&raw)
        .unwrap_or_default()
}

/// TLS settings of an endpoint (rustls; system-independent roots from webpki unless `ca_file`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tls {
    /// PEM file with the CA(s) that sign the server's certificate.
    pub ca_file: Option<std::path::PathBuf>,
    /// PEM client certificate and key, for servers that want mutual TLS.
    pub cert_file: Option<std::path::PathBuf>,
    pub key_file: Option<std::path::PathBuf>,
    /// Accept any server certificate (testing only).
    pub insecure_skip_verify: bool,
}

/// One remote_write endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Names the endpoint in metrics and keys its cursor: renaming it resends the backlog.
    pub name: String,
    pub url: String,
    pub basic_auth: Option<(String, String)>,
    pub bearer_token: Option<String>,
    pub tls: Tls,
    pub timeout: Duration,
    /// Added to every series sent (e.g. `instance`), below the target's own labels.
    pub external_labels: Labels,
    /// Stored rounds per request.
    pub max_samples_per_send: usize,
    /// Stored rounds per second while catching up (0 = unlimited).
    pub max_samples_per_second: u32,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
}

impl Endpoint {
    pub fn new(name: impl Into<String>, url: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            url: url.into(),
            basic_auth: None,
            bearer_token: None,
            tls: Tls::default(),
            timeout: Duration::from_secs(30),
            external_labels: Labels::new(),
            max_samples_per_send: DEFAULT_SAMPLES_PER_SEND,
            max_samples_per_second: DEFAULT_SAMPLES_PER_SECOND,
            min_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(60),
        }
    }
}

/// Rounds per request: about 7,000 series points for ping, ~100 KB compressed.
pub const DEFAULT_SAMPLES_PER_SEND: usize = 1_000;
/// Catch-up rate: a 1 h backlog of 100 targets at 1 s (360,000 rounds) drains in 36 s.
pub const DEFAULT_SAMPLES_PER_SECOND: u32 = 10_000;

/// How often an idle shipper looks for new samples.
#[derive(Debug, Clone)]
pub struct ShipperOptions {
    pub poll_interval: Duration,
}

impl Default for ShipperOptions {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(1),
        }
    }
}

/// Figures of one endpoint, for metrics.
#[derive(Debug, Default)]
pub struct EndpointStats {
    pub name: String,
    /// Stored rounds acknowledged by the endpoint.
    pub samples_sent: AtomicU64,
    /// Series points acknowledged.
    pub points_sent: AtomicU64,
    /// Failed requests (network, 5xx, 429, other 4xx).
    pub failures: AtomicU64,
    /// Rounds the endpoint refused with a 4xx other than 429 (not retried).
    pub samples_rejected: AtomicU64,
    pub requests: AtomicU64,
    /// Rounds committed to the store and not yet acknowledged.
    pub backlog: AtomicU64,
    /// Ms since the epoch of the last 2xx; 0 when none yet.
    pub last_success_ms: AtomicI64,
    /// Whether the last request (or the last idle check) succeeded.
    pub up: AtomicBool,
    pub last_error: Mutex<Option<String>>,
}

struct Shared {
    stop: AtomicBool,
    notify: Notify,
}

/// Runs one task per endpoint on the current Tokio runtime.
#[derive(Clone)]
pub struct Shipper {
    stats: Vec<Arc<EndpointStats>>,
    shared: Arc<Shared>,
    handles: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl std::fmt::Debug for Shipper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shipper")
            .field("endpoints", &self.stats.len())
            .finish()
    }
}

/// An endpoint could not be set up (bad TLS files, bad URL).
#[derive(Debug, thiserror::Error)]
#[error("remote_write endpoint {endpoint:?}: {message}")]
pub struct SetupError {
    pub endpoint: String,
    pub message: String,
}

fn client(ep: &Endpoint) -> Result<reqwest::Client, SetupError> {
    let fail = |m: String| SetupError {
        endpoint: ep.name.clone(),
        message: m,
    };
    let mut b = reqwest::Client::builder()
        .timeout(ep.timeout)
        .connect_timeout(ep.timeout.min(Duration::from_secs(10)))
        .user_agent(concat!("vantage/", env!("CARGO_PKG_VERSION")))
        .use_rustls_tls();
    if let Some(ca) = &ep.tls.ca_file {
        let pem = std::fs::read(ca).map_err(|e| fail(format!("{}: {e}", ca.display())))?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| fail(format!("{}: {e}", ca.display())))?
        {
            b = b.add_root_certificate(cert);
        }
    }
    match (&ep.tls.cert_file, &ep.tls.key_file) {
        (Some(c), Some(k)) => {
            let mut pem = std::fs::read(c).map_err(|e| fail(format!("{}: {e}", c.display())))?;
            pem.extend(std::fs::read(k).map_err(|e| fail(format!("{}: {e}", k.display())))?);
            let id = reqwest::Identity::from_pem(&pem).map_err(|e| fail(e.to_string()))?;
            b = b.identity(id);
        }
        (None, None) => {}
        _ => return Err(fail("tls cert_file and key_file go together".into())),
    }
    if ep.tls.insecure_skip_verify {
        b = b.danger_accept_invalid_certs(true);
    }
    b.build().map_err(|e| fail(e.to_string()))
}

enum Outcome {
    Ok,
    /// Retry the same request after a backoff.
    Retry(String),
    /// Not retried: the batch is dropped.
    Rejected(String),
}

impl Shipper {
    /// Starts shipping to every endpoint. Must be called within a Tokio runtime.
    pub fn start(
        store: Arc<Store>,
        endpoints: Vec<Endpoint>,
        opts: ShipperOptions,
    ) -> Result<Self, SetupError> {
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            notify: Notify::new(),
        });
        let mut stats = Vec::new();
        let mut tasks = Vec::new();
        for ep in endpoints {
            let c = client(&ep)?;
            let st = Arc::new(EndpointStats {
                name: ep.name.clone(),
                ..Default::default()
            });
            stats.push(st.clone());
            tasks.push((ep, c, st));
        }
        let mut handles = Vec::new();
        for (ep, c, st) in tasks {
            let task = EndpointTask {
                store: store.clone(),
                ep,
                client: c,
                stats: st,
                shared: shared.clone(),
                opts: opts.clone(),
            };
            handles.push(tokio::spawn(task.run()));
        }
        Ok(Self {
            stats,
            shared,
            handles: Arc::new(Mutex::new(handles)),
        })
    }

    pub fn endpoints(&self) -> &[Arc<EndpointStats>] {
        &self.stats
    }

    /// Shipping works: every endpoint's last request succeeded. `None` without endpoints.
    pub fn uplink_up(&self) -> Option<bool> {
        if self.stats.is_empty() {
            return None;
        }
        Some(self.stats.iter().all(|s| s.up.load(Ordering::Relaxed)))
    }

    /// Stops the tasks and waits for them (a request in flight is abandoned; its samples
    /// are sent again next time).
    pub async fn stop(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.notify.notify_waiters();
        let handles = std::mem::take(&mut *self.handles.lock().unwrap_or_else(|e| e.into_inner()));
        for h in handles {
            h.abort();
            let _ = h.await;
        }
    }
}

struct EndpointTask {
    store: Arc<Store>,
    ep: Endpoint,
    client: reqwest::Client,
    stats: Arc<EndpointStats>,
    shared: Arc<Shared>,
    opts: ShipperOptions,
}

impl EndpointTask {
    fn stopping(&self) -> bool {
        self.shared.stop.load(Ordering::SeqCst)
    }

    async fn sleep(&self, d: Duration) {
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = self.shared.notify.notified() => {}
        }
    }

    async fn run(self) {
        let name = self.ep.name.clone();
        let mut cursor = self.store.cursor(&name);
        // Catch-up rate limit: a budget of rounds that refills at the configured rate.
        let rate = f64::from(self.ep.max_samples_per_second);
        let mut budget = rate;
        let mut refilled = Instant::now();
        while !self.stopping() {
            let store = self.store.clone();
            let max = self.ep.max_samples_per_send.max(1);
            let c = cursor;
            let read = tokio::task::spawn_blocking(move || {
                let c = store.cursor_at_least(c);
                let b = store.read_from(c, max);
                (c, b)
            })
            .await;
            let (from, batch) = match read {
                Ok((from, Ok(b))) => (from, b),
                Ok((_, Err(e))) => {
                    tracing::warn!(endpoint = %name, "remote_write: cannot read the store: {e}");
                    self.sleep(self.opts.poll_interval).await;
                    continue;
                }
                Err(_) => return,
            };
            cursor = from;
            self.stats
                .backlog
                .store(self.store.backlog(cursor), Ordering::Relaxed);
            if batch.samples.is_empty() {
                cursor = batch.next;
                self.sleep(self.opts.poll_interval).await;
                continue;
            }
            let n = batch.samples.len();
            if rate > 0.0 {
                let now = Instant::now();
                budget = (budget + now.duration_since(refilled).as_secs_f64() * rate).min(rate);
                refilled = now;
                if budget < n as f64 {
                    let wait = (n as f64 - budget) / rate;
                    self.sleep(Duration::from_secs_f64(wait)).await;
                    budget = n as f64;
                    refilled = Instant::now();
                }
                budget -= n as f64;
            }
            let store = self.store.clone();
            let req = build_request(
                &batch.samples,
                &move |id| store.series(id),
                &self.ep.external_labels,
            );
            let points: usize = req.timeseries.iter().map(|t| t.samples.len()).sum();
            let body = encode_request(&req);
            let mut attempt = 0u32;
            loop {
                if self.stopping() {
                    return;
                }
                attempt += 1;
                self.stats.requests.fetch_add(1, Ordering::Relaxed);
                match self.send(body.clone()).await {
                    Outcome::Ok => {
                        self.stats
                            .samples_sent
                            .fetch_add(n as u64, Ordering::Relaxed);
                        self.stats
                            .points_sent
                            .fetch_add(points as u64, Ordering::Relaxed);
                        self.stats
                            .last_success_ms
                            .store(unix_ms(SystemTime::now()), Ordering::Relaxed);
                        if !self.stats.up.swap(true, Ordering::Relaxed) && attempt > 1 {
                            tracing::info!(endpoint = %name, "remote_write: endpoint reachable again; sending the backlog");
                        }
                        *self
                            .stats
                            .last_error
                            .lock()
                            .unwrap_or_else(|e| e.into_inner()) = None;
                        break;
                    }
                    Outcome::Rejected(msg) => {
                        self.stats.failures.fetch_add(1, Ordering::Relaxed);
                        self.stats
                            .samples_rejected
                            .fetch_add(n as u64, Ordering::Relaxed);
                        // The server answered: the uplink works.
                        self.stats.up.store(true, Ordering::Relaxed);
                        tracing::warn!(endpoint = %name, samples = n, "remote_write: endpoint refused a batch, dropped: {msg}");
                        *self
                            .stats
                            .last_error
                            .lock()
                            .unwrap_or_else(|e| e.into_inner()) = Some(msg);
                        break;
                    }
                    Outcome::Retry(msg) => {
                        self.stats.failures.fetch_add(1, Ordering::Relaxed);
                        if self.stats.up.swap(false, Ordering::Relaxed) || attempt == 1 {
                            tracing::warn!(endpoint = %name, "remote_write: {msg}; retrying with backoff");
                        }
                        *self
                            .stats
                            .last_error
                            .lock()
                            .unwrap_or_else(|e| e.into_inner()) = Some(msg);
                        let exp = self
                            .ep
                            .min_backoff
                            .saturating_mul(1u32 << (attempt - 1).min(16))
                            .min(self.ep.max_backoff);
                        let jitter = rand::random::<f64>() * 0.2 + 0.9;
                        self.sleep(exp.mul_f64(jitter)).await;
                        self.stats
                            .backlog
                            .store(self.store.backlog(cursor), Ordering::Relaxed);
                    }
                }
            }
            cursor = batch.next;
            self.store.set_cursor(&name, cursor);
            self.stats
                .backlog
                .store(self.store.backlog(cursor), Ordering::Relaxed);
        }
    }

    async fn send(&self, body: Vec<u8>) -> Outcome {
        let mut r = self
            .client
            .post(&self.ep.url)
            .header("Content-Encoding", "snappy")
            .header("Content-Type", "application/x-protobuf")
            .header("X-Prometheus-Remote-Write-Version", "0.1.0")
            .body(body);
        if let Some((u, p)) = &self.ep.basic_auth {
            r = r.basic_auth(u, Some(p));
        } else if let Some(t) = &self.ep.bearer_token {
            r = r.bearer_auth(t);
        }
        match r.send().await {
            Ok(resp) => {
                let status = resp.status();
                if status.is_success() {
                    return Outcome::Ok;
                }
                let text = resp.text().await.unwrap_or_default();
                let text: String = text.trim().chars().take(300).collect();
                let msg = format!("HTTP {status}: {text}");
                if status.as_u16() == 429 || status.is_server_error() {
                    Outcome::Retry(msg)
                } else {
                    Outcome::Rejected(msg)
                }
            }
            Err(e) => {
                let mut msg = e.to_string();
                let mut src = std::error::Error::source(&e);
                while let Some(s) = src {
                    msg.push_str(": ");
                    msg.push_str(&s.to_string());
                    src = s.source();
                }
                Outcome::Retry(msg)
            }
        }
    }
}

impl Store {
    /// `c`, or the oldest sample still stored when `c` points at dropped samples.
    pub fn cursor_at_least(&self, c: Cursor) -> Cursor {
        c.max(self.cursor_floor())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{ErrorKind, StoredPing};
    use vantage_core::ProbeKind;

    #[test]
    fn request_is_sorted_deterministic_and_decodes() {
        let key = SeriesKey {
            target: "gw".into(),
            probe: ProbeKind::Ping,
            labels: Arc::new(Labels::from([("site".into(), "office".into())])),
        };
        let s = |ts, rtt| StoredSample {
            series: 0,
            timestamp_ms: ts,
            success: true,
            error: ErrorKind::None,
            duration_us: 1500,
            ping: Some(StoredPing {
                sent: 1,
                received: 1,
                duplicates: 0,
                icmp_errors: 0,
                rtt_us: Some((rtt, rtt, rtt)),
                stddev_us: 0,
            }),
            dns: None,
            trace: None,
        };
        let samples = vec![s(2000, 10), s(1000, 20), s(1000, 20)];
        let ext = Labels::from([("instance".into(), "pi".into())]);
        let lookup = |id: u32| (id == 0).then(|| key.clone());
        let req = build_request(&samples, &lookup, &ext);
        assert_eq!(req.timeseries.len(), 10);
        let succ = req
            .timeseries
            .iter()
            .find(|t| {
                t.labels
                    .iter()
                    .any(|l| l.value == crate::gauges::PROBE_SUCCESS.name)
            })
            .unwrap();
        let names: Vec<_> = succ.labels.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["__name__", "instance", "probe", "site", "target"]);
        assert_eq!(
            succ.samples.iter().map(|p| p.timestamp).collect::<Vec<_>>(),
            [1000, 2000]
        );
        let rtt = req
            .timeseries
            .iter()
            .find(|t| {
                t.labels
                    .iter()
                    .any(|l| l.name == "stat" && l.value == "min")
            })
            .unwrap();
        assert!(!rtt.labels.iter().any(|l| l.name == "probe"));
        assert_eq!(rtt.labels[0].value, crate::gauges::PING_RTT.name);
        assert_eq!(rtt.samples[0].value, 20e-6);
        let a = encode_request(&req);
        let b = encode_request(&build_request(&samples, &lookup, &ext));
        assert_eq!(a, b);
        let raw = snap::raw::Decoder::new().decompress_vec(&a).unwrap();
        assert_eq!(proto::WriteRequest::decode(&raw[..]).unwrap(), req);
    }

    fn find<'a>(
        req: &'a proto::WriteRequest,
        name: &str,
        label: Option<(&str, &str)>,
    ) -> Option<&'a proto::TimeSeries> {
        req.timeseries.iter().find(|t| {
            t.labels
                .iter()
                .any(|l| l.name == "__name__" && l.value == name)
                && label.is_none_or(|(k, v)| t.labels.iter().any(|l| l.name == k && l.value == v))
        })
    }

    #[test]
    fn dns_and_trace_rounds_become_their_metrics_series() {
        use crate::codec::{StoredDns, StoredHop, StoredTrace};
        let key = |probe| SeriesKey {
            target: "t".into(),
            probe,
            labels: Arc::new(Labels::from([("site".into(), "lab".into())])),
        };
        let base = StoredSample {
            series: 0,
            timestamp_ms: 5_000,
            success: true,
            error: ErrorKind::None,
            duration_us: 21_000,
            ping: None,
            dns: None,
            trace: None,
        };
        let dns = StoredSample {
            dns: Some(Box::new(StoredDns {
                rcode: Some(1),
                answers: 2,
                additional: 1,
                lookup_us: Some(20_000),
                request_us: Some(19_500),
                truncated_retry: true,
                ..StoredDns::default()
            })),
            ..base.clone()
        };
        let trace = StoredSample {
            series: 1,
            timestamp_ms: 6_000,
            trace: Some(Box::new(StoredTrace {
                reached: true,
                hops: vec![
                    StoredHop {
                        ttl: 1,
                        sent: 3,
                        received: 3,
                        rtt_avg_us: Some(500),
                    },
                    StoredHop {
                        ttl: 2,
                        sent: 3,
                        received: 0,
                        rtt_avg_us: None,
                    },
                    StoredHop {
                        ttl: 3,
                        sent: 3,
                        received: 2,
                        rtt_avg_us: Some(9_000),
                    },
                ],
                last_rtt_us: Some((8_000, 9_000, 10_000)),
                path_hash: 77,
                path_changed: true,
                paths_known: 2,
            })),
            ..base.clone()
        };
        let lookup = |id: u32| match id {
            0 => Some(key(ProbeKind::Dns)),
            1 => Some(key(ProbeKind::Trace)),
            _ => None,
        };
        let req = build_request(&[dns, trace], &lookup, &Labels::new());
        let value = |name: &str, label: Option<(&str, &str)>| {
            let t = find(&req, name, label).unwrap_or_else(|| panic!("{name} {label:?}"));
            assert_eq!(t.samples.len(), 1);
            t.samples[0].value
        };
        use crate::gauges::*;
        let labels = |name: &str, label| {
            find(&req, name, label)
                .unwrap()
                .labels
                .iter()
                .map(|l| l.name.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            labels(DNS_PHASE.name, Some(("phase", "request"))),
            ["__name__", "phase", "site", "target"]
        );
        assert!(labels(PROBE_SUCCESS.name, None).contains(&"probe".to_string()));
        assert_eq!(value(DNS_PHASE.name, Some(("phase", "request"))), 0.0195);
        assert_eq!(value(DNS_PHASE.name, Some(("phase", "connect"))), 0.0);
        // The common rcodes at 0, the round's own at 1.
        for (rcode, v) in [
            ("NOERROR", 0.0),
            ("SERVFAIL", 0.0),
            ("NXDOMAIN", 0.0),
            ("REFUSED", 0.0),
            ("FORMERR", 1.0),
        ] {
            assert_eq!(value(DNS_RCODE.name, Some(("rcode", rcode))), v, "{rcode}");
        }
        assert_eq!(value(DNS_ANSWER_RECORDS.name, None), 2.0);
        assert_eq!(value(DNS_AUTHORITY_RECORDS.name, None), 0.0);
        assert_eq!(value(DNS_ADDITIONAL_RECORDS.name, None), 1.0);
        assert_eq!(value(DNS_LOOKUP.name, None), 0.02);
        assert_eq!(value(DNS_TRUNCATED_RETRY.name, None), 1.0);
        assert_eq!(value(DNS_VALIDATION_FAILED.name, None), 0.0);

        assert_eq!(value(TRACE_HOPS.name, None), 3.0);
        assert_eq!(
            labels(TRACE_HOP_RTT.name, Some(("hop", "3"))),
            ["__name__", "hop", "site", "target"]
        );
        assert_eq!(value(TRACE_HOP_RTT.name, Some(("hop", "1"))), 0.0005);
        assert_eq!(value(TRACE_HOP_RTT.name, Some(("hop", "3"))), 0.009);
        assert!(find(&req, TRACE_HOP_RTT.name, Some(("hop", "2"))).is_none());
        assert_eq!(value(TRACE_HOP_LOSS.name, Some(("hop", "2"))), 1.0);
        assert!((value(TRACE_HOP_LOSS.name, Some(("hop", "3"))) - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(value(TRACE_PATH_HASH.name, None), 77.0);
        assert_eq!(value(TRACE_PATHS.name, None), 2.0);
        assert_eq!(value(TRACE_PATH_CHANGED.name, None), 1.0);
        assert_eq!(
            find(&req, TRACE_HOPS.name, None).unwrap().samples[0].timestamp,
            6_000
        );
        // DNS points belong to the DNS round's series only, and the other way round.
        assert!(
            req.timeseries
                .iter()
                .filter(|t| t.labels[0].value.starts_with("vantage_trace_"))
                .all(|t| t.samples.iter().all(|p| p.timestamp == 6_000))
        );
        assert!(find(&req, PING_LOSS.name, None).is_none());
    }
}
