//! Prometheus metrics.
//!
//! Targets carry their own label sets (the user's labels differ between targets), which a
//! `*Vec` metric with one fixed label list cannot express. So each target owns its metrics, built
//! with its labels as constant labels, and `gather` merges the families of all targets with the
//! daemon-wide metrics of the registry. A target's series exist from the moment it is configured,
//! at zero, so a target that never answers still has them.

mod dns;
mod leds;
mod ping;
mod process;
mod rounds;
mod trace;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::core::Collector;
use prometheus::proto::MetricFamily;
use prometheus::{
    Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry,
    TextEncoder,
};
use vantage_core::{Config, JobKey, Measurement, Observer, ProbeKind, Sample, Target};

pub use dns::DnsSeries;
pub use leds::LedCollector;
pub use ping::PingSeries;
pub use rounds::RoundGauges;
pub use trace::TraceSeries;

/// Metric names, in one place.
pub mod names {
    pub const PROBE_LAST_SUCCESS: &str = "vantage_probe_last_success_timestamp_seconds";
    pub const PROBE_ROUNDS: &str = "vantage_probe_rounds_total";
    pub const BUILD_INFO: &str = "vantage_build_info";
    pub const SCHEDULER_LAG: &str = "vantage_scheduler_lag_seconds";
    pub const SCHEDULER_SKIPPED: &str = "vantage_scheduler_skipped_rounds_total";
    pub const RELOAD_OK: &str = "vantage_config_last_reload_successful";
    pub const RELOAD_TS: &str = "vantage_config_last_reload_success_timestamp_seconds";
    pub const TARGETS: &str = "vantage_targets";
    pub const START_TIME: &str = "vantage_start_time_seconds";
    pub const LED_PATTERN: &str = "vantage_led_pattern";
    pub const DEVICE_CONDITION: &str = "vantage_device_condition";
    pub const IDENTIFY_REMAINING: &str = "vantage_identify_remaining_seconds";
    pub const LED_WRITE_ERRORS: &str = "vantage_led_write_errors_total";
}

/// Seconds since the Unix epoch, for timestamp gauges.
pub fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
}

/// Constant labels of a target's series: `target` plus the user's labels.
pub fn target_labels(t: &Target) -> HashMap<String, String> {
    let mut l: HashMap<String, String> = t
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    l.insert("target".into(), t.name.clone());
    l
}

/// The counters every probe kind has, for one target (the gauges are in [`RoundGauges`]).
#[derive(Debug)]
pub struct ProbeSeries {
    last_success: GaugeVec,
    rounds: IntCounterVec,
}

impl ProbeSeries {
    pub fn new(const_labels: &HashMap<String, String>, kinds: &[ProbeKind]) -> Self {
        let opts =
            |name: &str, help: &str| Opts::new(name, help).const_labels(const_labels.clone());
        let s = Self {
            last_success: GaugeVec::new(
                opts(
                    names::PROBE_LAST_SUCCESS,
                    "When the probe last succeeded, in seconds since the epoch (0: never).",
                ),
                &["probe"],
            )
            .expect("valid metric"),
            rounds: IntCounterVec::new(
                opts(names::PROBE_ROUNDS, "Probe rounds run, by result."),
                &["probe", "result"],
            )
            .expect("valid metric"),
        };
        for k in kinds {
            let p = k.as_str();
            s.last_success.with_label_values(&[p]).set(0.0);
            s.rounds.with_label_values(&[p, "success"]);
            s.rounds.with_label_values(&[p, "failure"]);
        }
        s
    }

    pub fn observe(&self, sample: &Sample) {
        let p = sample.probe.as_str();
        if sample.success {
            self.last_success
                .with_label_values(&[p])
                .set(unix_seconds(sample.timestamp));
        }
        self.rounds
            .with_label_values(&[p, if sample.success { "success" } else { "failure" }])
            .inc();
    }

    pub fn collect_into(&self, out: &mut Vec<MetricFamily>) {
        out.extend(self.last_success.collect());
        out.extend(self.rounds.collect());
    }
}

/// All series of one configured target.
#[derive(Debug)]
struct TargetSeries {
    /// The config this series set was built for; a changed target gets a new set.
    target: Target,
    labels: HashMap<String, String>,
    rounds: RoundGauges,
    probes: ProbeSeries,
    ping: Option<PingSeries>,
    trace: Option<TraceSeries>,
    dns: Option<DnsSeries>,
}

impl TargetSeries {
    fn new(t: &Target) -> Self {
        let labels = target_labels(t);
        let kinds: Vec<ProbeKind> = t.probes.iter().map(|(k, _)| *k).collect();
        let has = |k| kinds.contains(&k);
        Self {
            target: t.clone(),
            rounds: RoundGauges::new(&kinds),
            probes: ProbeSeries::new(&labels, &kinds),
            ping: has(ProbeKind::Ping).then(|| PingSeries::new(&labels)),
            trace: has(ProbeKind::Trace).then(|| TraceSeries::new(&labels, true)),
            dns: has(ProbeKind::Dns).then(|| DnsSeries::new(&labels)),
            labels,
        }
    }

    fn observe(&self, sample: &Sample) {
        self.rounds.observe(sample);
        self.probes.observe(sample);
        match &sample.measurement {
            Measurement::Ping(r) => self.ping.iter().for_each(|s| s.observe(r)),
            Measurement::Trace(r) => self.trace.iter().for_each(|s| s.observe(r)),
            Measurement::Dns(r) => self.dns.iter().for_each(|s| s.observe(r)),
            _ => {}
        }
    }

    fn collect(&self, out: &mut Vec<MetricFamily>) {
        self.rounds.collect(&self.labels, out);
        self.probes.collect_into(out);
        self.ping.iter().for_each(|s| s.collect(out));
        self.trace.iter().for_each(|s| s.collect(out));
        self.dns.iter().for_each(|s| s.collect(out));
    }
}

/// A part of the daemon that adds its own families at scrape time (the store, the shipper).
pub trait Collect: Send + Sync {
    fn collect(&self, out: &mut Vec<MetricFamily>);
}

#[derive(Default)]
struct Extra(RwLock<Vec<Arc<dyn Collect>>>);

impl std::fmt::Debug for Extra {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Extra")
    }
}

/// The daemon's metrics.
#[derive(Debug)]
pub struct Metrics {
    extra: Extra,
    registry: Registry,
    targets: RwLock<BTreeMap<String, Arc<TargetSeries>>>,
    lag: HistogramVec,
    skipped: IntCounterVec,
    reload_ok: Gauge,
    reload_ts: Gauge,
    target_count: Gauge,
    /// `[device]` name and labels, added to every series at render time.
    device_labels: RwLock<Vec<(String, String)>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let build = GaugeVec::new(
            Opts::new(names::BUILD_INFO, "Build information; always 1."),
            &["version", "arch"],
        )
        .expect("valid metric");
        build
            .with_label_values(&[env!("CARGO_PKG_VERSION"), std::env::consts::ARCH])
            .set(1.0);
        // 10 µs to ~10 s: a healthy device sits in the lowest buckets.
        let lag = HistogramVec::new(
            HistogramOpts::new(
                names::SCHEDULER_LAG,
                "How late probe rounds started against their planned time.",
            )
            .buckets(prometheus::exponential_buckets(0.00001, 2.0, 21).expect("valid buckets")),
            &["probe"],
        )
        .expect("valid metric");
        let skipped = IntCounterVec::new(
            Opts::new(
                names::SCHEDULER_SKIPPED,
                "Rounds skipped because earlier rounds of the same probe were still running.",
            ),
            &["target", "probe"],
        )
        .expect("valid metric");
        let reload_ok = Gauge::new(
            names::RELOAD_OK,
            "1 if the last config load succeeded, else 0.",
        )
        .expect("valid metric");
        let reload_ts = Gauge::new(
            names::RELOAD_TS,
            "When the config was last loaded successfully, in seconds since the epoch.",
        )
        .expect("valid metric");
        let target_count = Gauge::new(names::TARGETS, "Configured targets.").expect("valid metric");
        let start_time = Gauge::new(
            names::START_TIME,
            "When the daemon started, in seconds since the epoch.",
        )
        .expect("valid metric");
        start_time.set(unix_seconds(SystemTime::now()));
        for c in [
            Box::new(build) as Box<dyn Collector>,
            Box::new(lag.clone()),
            Box::new(skipped.clone()),
            Box::new(reload_ok.clone()),
            Box::new(reload_ts.clone()),
            Box::new(target_count.clone()),
            Box::new(start_time),
            Box::new(process::ProcessCollector::new()),
        ] {
            registry.register(c).expect("unique metric");
        }
        for k in ProbeKind::ALL {
            lag.with_label_values(&[k.as_str()]);
        }
        Self {
            extra: Extra::default(),
            registry,
            targets: RwLock::default(),
            lag,
            skipped,
            reload_ok,
            reload_ts,
            target_count,
            device_labels: RwLock::default(),
        }
    }

    /// Adds a daemon-wide collector (the LEDs' state).
    pub fn register(&self, c: Box<dyn Collector>) {
        self.registry.register(c).expect("unique metric");
    }

    /// Brings the per-target series in line with a config; unchanged targets keep their values.
    pub fn apply(&self, config: &Config) {
        let mut targets = self.targets.write().unwrap_or_else(|e| e.into_inner());
        let mut next = BTreeMap::new();
        for t in &config.targets {
            let series = match targets.remove(&t.name) {
                Some(s) if s.target == *t => s,
                _ => Arc::new(TargetSeries::new(t)),
            };
            next.insert(t.name.clone(), series);
        }
        *targets = next;
        self.target_count.set(targets.len() as f64);
    }

    pub fn reload_result(&self, ok: bool) {
        self.reload_ok.set(if ok { 1.0 } else { 0.0 });
        if ok {
            self.reload_ts.set(unix_seconds(SystemTime::now()));
        }
    }

    /// Adds a part whose families join every scrape.
    pub fn add_collector(&self, c: Arc<dyn Collect>) {
        self.extra
            .0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(c);
    }

    pub fn gather(&self) -> Vec<MetricFamily> {
        let mut families = self.registry.gather();
        let mut per_target = Vec::new();
        for c in self
            .extra
            .0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            c.collect(&mut per_target);
        }
        for s in self
            .targets
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            s.collect(&mut per_target);
        }
        merge_families(&mut families, per_target);
        families
    }

    /// The Prometheus text exposition, with the device's labels on every series.
    pub fn render(&self) -> String {
        let mut families = self.gather();
        let device = self
            .device_labels
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        crate::fleet::add_labels(&mut families, &device);
        encode(&families)
    }

    /// The labels every series of this device carries (`device` plus `[device].labels`).
    pub fn set_device_labels(&self, labels: Vec<(String, String)>) {
        *self
            .device_labels
            .write()
            .unwrap_or_else(|e| e.into_inner()) = labels;
    }

    /// For the daemon's other parts (uplink, provisioning) to register their metrics.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}

/// Merges `extra` into `families`: same-named families are joined, the result sorted by name.
pub fn merge_families(families: &mut Vec<MetricFamily>, extra: Vec<MetricFamily>) {
    let mut by_name: BTreeMap<String, MetricFamily> = families
        .drain(..)
        .map(|f| (f.name().to_string(), f))
        .collect();
    for mut f in extra {
        if f.get_metric().is_empty() {
            continue;
        }
        match by_name.get_mut(f.name()) {
            Some(existing) => existing.mut_metric().extend(f.take_metric()),
            None => {
                by_name.insert(f.name().to_string(), f);
            }
        }
    }
    families.extend(by_name.into_values());
}

pub fn encode(families: &[MetricFamily]) -> String {
    let mut buf = Vec::new();
    TextEncoder::new()
        .encode(families, &mut buf)
        .expect("text encoding into a Vec cannot fail");
    String::from_utf8(buf).expect("the text format is UTF-8")
}

impl Observer for Metrics {
    fn sample(&self, sample: Sample) {
        let series = self
            .targets
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&*sample.target)
            .cloned();
        if let Some(s) = series {
            s.observe(&sample);
        }
    }

    fn lag(&self, key: &JobKey, lag: Duration) {
        self.lag
            .with_label_values(&[key.probe.as_str()])
            .observe(lag.as_secs_f64());
    }

    fn skipped(&self, key: &JobKey) {
        self.skipped
            .with_label_values(&[&key.target, key.probe.as_str()])
            .inc();
    }
}
