//! Prometheus metrics.
//!
//! Two parts: the daemon-wide metrics in a `prometheus` registry (a handful of families), and
//! the per-target series, which are written as text straight from each target's state
//! ([`target`]): thousands of targets with their own label sets are cheaper to write than to
//! build as metric families first. A target's series exist from the moment it is configured, at
//! zero, so a target that never answers still has them.

mod leds;
mod modules;
pub mod names;
mod process;
mod rounds;
mod share;
mod target;
pub(crate) mod text;
pub mod update;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};
use vantage_core::RwLockExt;

use prometheus::core::Collector;
use prometheus::proto::MetricFamily;
use prometheus::{
    Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry,
    TextEncoder,
};
use vantage_core::{Config, JobKey, Observer, ProbeKind, Sample};

pub use leds::LedCollector;
pub use target::{TargetSeries, write_targets};
pub use text::{SCRAPE_CHUNK, unix_seconds};

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
    /// The last minute's share of flagged rounds (`vantage_rounds_flagged_ratio`).
    flagged_share: share::FlaggedShare,
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
                "Rounds skipped because two earlier rounds of the same probe were still running or waiting to start, or because one that started in the same millisecond was already delivered.",
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
        let flagged_share = share::FlaggedShare::new();
        for c in [
            Box::new(build) as Box<dyn Collector>,
            Box::new(lag.clone()),
            Box::new(skipped.clone()),
            Box::new(reload_ok.clone()),
            Box::new(reload_ts.clone()),
            Box::new(target_count.clone()),
            Box::new(start_time),
            Box::new(process::ProcessCollector::new()),
            Box::new(update::UpdateCollector::new()),
            Box::new(flagged_share.clone()),
        ] {
            registry.register(c).expect("unique metric");
        }
        for k in ProbeKind::every() {
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
            flagged_share,
            device_labels: RwLock::default(),
        }
    }

    /// Adds a daemon-wide collector (the LEDs' state).
    pub fn register(&self, c: Box<dyn Collector>) {
        self.registry.register(c).expect("unique metric");
    }

    /// Brings the per-target series in line with a config; unchanged targets keep their values.
    pub fn apply(&self, config: &Config) {
        let mut targets = self.targets.write_or_recover();
        let mut next = BTreeMap::new();
        for t in &config.targets {
            let series = match targets.remove(&t.name) {
                Some(s) if s.target == Some(target::fingerprint(t)) => s,
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
        self.extra.0.write_or_recover().push(c);
    }

    /// The daemon-wide families: the registry's and those of the added parts.
    pub fn gather_device(&self) -> Vec<MetricFamily> {
        let mut families = self.registry.gather();
        let mut extra = Vec::new();
        for c in self.extra.0.read_or_recover().iter() {
            c.collect(&mut extra);
        }
        merge_families(&mut families, extra);
        families
    }

    /// The Prometheus text exposition, with the device's labels on every series, whole.
    #[cfg(test)]
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.render_to(&mut out, &mut |_| {});
        out
    }

    /// The exposition written into `out`, handed to `flush` whenever `out` holds
    /// [`SCRAPE_CHUNK`] bytes or more at a target's end (`flush` empties it, or lets it grow);
    /// the rest is left in `out`. A scrape of 10,000 targets is tens of MB of text: streamed
    /// this way, it never has to be in memory at once.
    pub fn render_to(&self, out: &mut String, flush: &mut dyn FnMut(&mut String)) {
        let device = self.device_labels.read_or_recover().clone();
        let mut families = self.gather_device();
        crate::fleet::add_labels(&mut families, &device);
        out.push_str(&encode(&families));
        // A snapshot of the target list, so a reload during the render waits for nothing.
        let targets: Vec<Arc<TargetSeries>> =
            self.targets.read_or_recover().values().cloned().collect();
        let refs: Vec<&TargetSeries> = targets.iter().map(Arc::as_ref).collect();
        target::write_targets_in_chunks(&refs, &device, out, flush);
    }

    /// The labels every series of this device carries (`device` plus `[device].labels`).
    pub fn set_device_labels(&self, labels: Vec<(String, String)>) {
        *self.device_labels.write_or_recover() = labels;
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
        self.flagged_share.add(sample.quality);
        let series = self.targets.read_or_recover().get(&*sample.target).cloned();
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

#[cfg(test)]
mod device_series_tests {
    use super::*;
    use vantage_store::remote_write::LiveSeries;

    /// What a push-only endpoint gets of the daemon's own series is what `/metrics` shows of
    /// them, histograms as their bucket, sum and count series.
    #[test]
    fn the_daemons_own_series_flatten_as_a_scrape_stores_them() {
        let m = Arc::new(Metrics::new());
        m.lag(
            &JobKey {
                target: "t".into(),
                probe: ProbeKind::PING,
            },
            Duration::from_micros(30),
        );
        let snap = DeviceSeries(Arc::downgrade(&m)).snapshot();
        let text = m.render();
        let find = |name: &str, labels: &[(&str, &str)]| {
            snap.iter()
                .find(|(l, _)| {
                    l[0].1 == name
                        && labels
                            .iter()
                            .all(|(k, v)| l.iter().any(|(a, b)| a == k && b == v))
                })
                .map(|(_, v)| *v)
        };
        assert_eq!(find(names::BUILD_INFO, &[]), Some(1.0));
        assert_eq!(
            find("vantage_scheduler_lag_seconds_count", &[("probe", "ping")]),
            Some(1.0)
        );
        assert_eq!(
            find(
                "vantage_scheduler_lag_seconds_bucket",
                &[("probe", "ping"), ("le", "+Inf")]
            ),
            Some(1.0)
        );
        assert_eq!(
            find(
                "vantage_scheduler_lag_seconds_bucket",
                &[("probe", "ping"), ("le", "0.00004")]
            ),
            Some(1.0),
            "{text}"
        );
        assert!(
            text.contains(r#"vantage_scheduler_lag_seconds_bucket{probe="ping",le="0.00004"} 1"#),
            "{text}"
        );
        assert!(find("process_resident_memory_bytes", &[]).is_some_and(|v| v > 0.0));
        // No per-target series: those are stored and shipped round by round.
        assert!(
            !snap
                .iter()
                .any(|(l, _)| l.iter().any(|(k, _)| k == "target"))
        );
        drop(m);
        let gone = DeviceSeries(std::sync::Weak::new()).snapshot();
        assert!(gone.is_empty());
    }
}

/// What a scrape of `/metrics` costs with N ping targets after one round each: render time,
/// bytes plain and gzipped. Run with
/// `cargo test -p vantage --profile ci --bin vantage exposition_cost -- --ignored --nocapture`.
#[cfg(test)]
mod cost {
    use std::time::{Duration, Instant};

    use vantage_core::{Measurement, PingReport};

    use super::*;

    /// A reload keeps an unchanged target's series (its counters go on) and gives a changed
    /// one a new set, telling them apart by the config's hash.
    #[test]
    fn a_reload_keeps_unchanged_targets_and_renews_changed_ones() {
        let config = |packets: u32| {
            crate::config::parse(
                &format!(
                    "[[targets]]\nname = \"a\"\nhost = \"127.0.0.1\"\nprobes = [\"ping\"]\n\
                     [[targets]]\nname = \"b\"\nhost = \"127.0.0.2\"\nprobes = [\"ping\"]\n\
                     ping = {{ packets = {packets} }}\n"
                ),
                "reload.toml",
            )
            .unwrap()
        };
        let m = Metrics::new();
        m.apply(&config(1));
        for target in ["a", "b"] {
            m.sample(Sample {
                target: target.into(),
                probe: ProbeKind::PING,
                timestamp: SystemTime::now(),
                duration: Duration::from_millis(2),
                success: true,
                error: None,
                measurement: Measurement::from(PingReport::default()),
                quality: Default::default(),
            });
        }
        let rounds = |m: &Metrics, target: &str| {
            let want = format!(
                "vantage_probe_rounds_total{{probe=\"ping\",result=\"success\",target=\"{target}\"}} "
            );
            let text = m.render();
            let line = text.lines().find(|l| l.starts_with(&want));
            line.unwrap_or_else(|| panic!("no {want}in\n{text}"))
                .rsplit(' ')
                .next()
                .unwrap()
                .to_string()
        };
        assert_eq!((rounds(&m, "a"), rounds(&m, "b")), ("1".into(), "1".into()));
        m.apply(&config(1));
        assert_eq!((rounds(&m, "a"), rounds(&m, "b")), ("1".into(), "1".into()));
        m.apply(&config(3));
        assert_eq!((rounds(&m, "a"), rounds(&m, "b")), ("1".into(), "0".into()));
    }

    #[test]
    #[ignore = "a measurement; prints figures"]
    fn exposition_cost() {
        for n in [100usize, 1_000, 10_000] {
            let mut text = String::new();
            for i in 0..n {
                text.push_str(&format!(
                    "[[targets]]\nname = \"t{i}\"\nprobes = [\"ping\"]\nhost = \"127.1.{}.{}\"\nlabels = {{ site = \"lab\" }}\n",
                    i / 250,
                    i % 250 + 1
                ));
            }
            let config = crate::config::parse(&text, "cost.toml").unwrap();
            let m = Metrics::new();
            m.apply(&config);
            for t in &config.targets {
                m.sample(crate::test_support::answered_ping(
                    &t.name,
                    SystemTime::now(),
                    Duration::from_micros(180),
                ));
            }
            let _ = m.render();
            let runs = if n >= 10_000 { 5 } else { 20 };
            let start = Instant::now();
            let mut bytes = 0;
            for _ in 0..runs {
                bytes = m.render().len();
            }
            let per = start.elapsed() / runs;
            let body = m.render();
            let start = Instant::now();
            let gz = crate::scrape::gzip_bytes(body.as_bytes()).len();
            println!(
                "{n} targets: render {per:?}, {bytes} bytes, gzip {gz} bytes in {:?}",
                start.elapsed()
            );
        }
    }
}

/// The daemon-wide series as remote_write samples, for push-only endpoints
/// ([`vantage_store::remote_write::LiveSeries`]). Holds the metrics weakly: the store's
/// collector is among them, and the store holds this.
#[derive(Debug)]
pub struct DeviceSeries(pub std::sync::Weak<Metrics>);

impl vantage_store::remote_write::LiveSeries for DeviceSeries {
    fn snapshot(&self) -> Vec<vantage_store::remote_write::LiveSample> {
        let Some(m) = self.0.upgrade() else {
            return Vec::new();
        };
        flatten(&m.gather_device())
    }
}

/// Every sample of `families` with its labels (`__name__` first); a histogram becomes its
/// `_bucket` (with `le`), `_sum` and `_count` series, as a scrape stores it.
pub fn flatten(families: &[MetricFamily]) -> Vec<vantage_store::remote_write::LiveSample> {
    use prometheus::proto::MetricType;
    let mut out = Vec::new();
    for f in families {
        for m in f.get_metric() {
            let labels = |name: String, extra: Option<(&str, String)>| {
                let mut l = vec![("__name__".to_string(), name)];
                l.extend(
                    m.get_label()
                        .iter()
                        .map(|p| (p.name().to_string(), p.value().to_string())),
                );
                l.extend(extra.map(|(k, v)| (k.to_string(), v)));
                l
            };
            let name = f.name();
            match f.get_field_type() {
                MetricType::COUNTER => {
                    out.push((labels(name.into(), None), m.get_counter().get_value()))
                }
                MetricType::GAUGE => {
                    out.push((labels(name.into(), None), m.get_gauge().get_value()))
                }
                MetricType::HISTOGRAM => {
                    let h = m.get_histogram();
                    for b in h.get_bucket() {
                        let mut le = String::new();
                        text::write_value(&mut le, b.upper_bound());
                        let l = labels(format!("{name}_bucket"), Some(("le", le)));
                        out.push((l, b.cumulative_count() as f64));
                    }
                    let inf = Some(("le", "+Inf".to_string()));
                    let count = h.get_sample_count() as f64;
                    out.push((labels(format!("{name}_bucket"), inf), count));
                    out.push((labels(format!("{name}_sum"), None), h.get_sample_sum()));
                    out.push((labels(format!("{name}_count"), None), count));
                }
                _ => {}
            }
        }
    }
    out
}
