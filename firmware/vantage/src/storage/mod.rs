//! The sample store under `--data-dir` and the remote_write shipper, wired into the daemon:
//! every sample the runner emits is appended to the store; the shipper sends the store's
//! samples to the configured endpoints; both report their state on `/metrics`.
//!
//! This file holds [`Storage`] and its life (start, config changes, samples in, shutdown).
//! Each other job has its own file: `options` (the store's and endpoints' settings from the
//! config), `status` (the status LEDs and the web page's status), `metrics` (the store's and
//! shipping's series on `/metrics`) and `api` (`GET /api/samples`).

mod api;
mod metrics;
mod options;
mod status;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use vantage_core::{LockExt, RwLockExt};

use vantage_core::{Config, JobKey, Observer, Sample};
use vantage_store::config::{StoreConfig, StoreSections};
use vantage_store::remote_write::config::RemoteWriteConfig;
use vantage_store::{Labels, ScrapeLog, Shipper, ShipperOptions, Store};

pub use api::samples;
use options::{shipped_labels, store_options};

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

impl Storage {
    /// Opens the store under `data_dir` and starts shipping. Never fails: without a usable
    /// store the daemon keeps probing and exporting, and says why in the log and on /metrics.
    pub fn start(data_dir: &Path, config: &Config) -> Arc<Self> {
        let opts = store_options(data_dir, config.store());
        let store = match Store::open(opts) {
            Ok(s) => Some(Arc::new(s)),
            Err(e) => {
                tracing::error!("store: cannot open the store, samples are not kept: {e}");
                None
            }
        };
        Arc::new(Self {
            store,
            store_config: config.store().clone(),
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
        *self.labels.write_or_recover() = labels;
        if config.store() != &self.store_config {
            tracing::warn!("store: [store] settings changed; they take effect at the next start");
        }
        let Some(store) = &self.store else { return };
        let mut shipping = self.shipping.lock_or_recover();
        if shipping
            .as_ref()
            .is_some_and(|s| s.config == config.remote_write() && s.device_labels == device_labels)
            || (shipping.is_none() && config.remote_write().is_empty())
        {
            return;
        }
        if let Some(old) = shipping.take() {
            let s = old.shipper;
            tokio::spawn(async move { s.stop().await });
        }
        if config.remote_write().is_empty() {
            return;
        }
        let device_name = crate::fleet::device_name(config);
        let endpoints = config
            .remote_write()
            .iter()
            .map(|c| {
                let mut e = c.clone();
                e.labels = shipped_labels(&e.labels, &device_labels, &device_name);
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
                    endpoints = config.remote_write().len(),
                    "remote_write: shipping the store"
                );
                *shipping = Some(Shipping {
                    config: config.remote_write().to_vec(),
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
        let shipper = self.shipping.lock_or_recover().take().map(|s| s.shipper);
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
            .read_or_recover()
            .get(&sample.target)
            .cloned()
            .unwrap_or_default();
        store.append(&sample, &labels);
    }
    fn lag(&self, _: &JobKey, _: Duration) {}
    fn skipped(&self, _: &JobKey) {}
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
        DnsPhases, DnsRecord, DnsReport, HopReport, HopResponder, Measurement, ModuleId, Observer,
        PingReport, ProbeKind, Sample, TraceReport,
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
        let config = crate::config::parse(
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
            ProbeKind::TRACE,
            Measurement::from(TraceReport {
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
                probe: ProbeKind::TRACE,
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
        let config = crate::config::parse(
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
