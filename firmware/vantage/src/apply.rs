//! Building the device's parts on a loaded config, and applying configs to them: the one
//! writer of the config in effect. The daemon builds once and adds the background loops
//! (fleet, LEDs, signals); tests build the same parts without them.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vantage_core::LockExt;

use tokio::sync::{Semaphore, watch};
use vantage_core::{Config, ConfigErrors, JobKey, Observer, Probe, Runner, Sample, defaults};
use vantage_leds::{Health, LedObserver, Leds, LedsConfig, LedsSection};

use crate::config_source::ConfigSource;
use crate::fleet::{self, announce::Announcer, provisioning};
use crate::metrics::{DeviceSeries, LedCollector, Metrics};
use crate::state::{AppState, Configs, ON_DEMAND_ROUNDS, Reload};
use crate::storage::Storage;

/// Hands every sample to several observers (metrics, store, LEDs).
pub struct Fanout(pub Vec<Arc<dyn Observer>>);

impl Observer for Fanout {
    fn sample(&self, sample: Sample) {
        if let Some((last, rest)) = self.0.split_last() {
            for o in rest {
                o.sample(sample.clone());
            }
            last.sample(sample);
        }
    }
    fn lag(&self, key: &JobKey, lag: Duration) {
        self.0.iter().for_each(|o| o.lag(key, lag));
    }
    fn skipped(&self, key: &JobKey) {
        self.0.iter().for_each(|o| o.skipped(key));
    }
}

/// Applies configs: merges the provisioned targets in and hands the result to the runner,
/// the metrics, the store, the LEDs' health and the mDNS announcement.
pub struct Applier {
    source: ConfigSource,
    metrics: Arc<Metrics>,
    runner: Arc<Runner>,
    provisioning: Arc<provisioning::State>,
    announcer: Option<Announcer>,
    storage: Option<Arc<Storage>>,
    health: Arc<Health>,
    /// The `[leds]` the LEDs were opened with.
    leds_config: LedsConfig,
    /// The config in effect: the local file plus provisioned targets.
    running: watch::Sender<Arc<Config>>,
    /// The device's own config file, as loaded; the fleet loops follow it.
    local: watch::Sender<Arc<Config>>,
    /// Serialises applying configs: a reload and a provisioning fetch may finish together, and
    /// the one that read the local config first must not apply it last.
    apply_lock: Mutex<()>,
}

impl Applier {
    /// Applies a local config: merges the provisioned targets in, updates the device labels
    /// and the mDNS announcement.
    fn apply(&self, local: Config) {
        let _serial = self.apply_lock.lock_or_recover();
        self.apply_locked(local);
    }

    fn apply_locked(&self, local: Config) {
        let config = self.provisioning.merge(&local);
        let device_labels = fleet::device_labels(&local);
        self.metrics.set_device_labels(device_labels.clone());
        vantage_core::set_trace_device_rate(local.device.trace_probes_per_second);
        if let Some(a) = &self.announcer {
            a.apply(&local);
        }
        self.local.send_replace(Arc::new(local));
        // Series first, so the first samples of new targets find them.
        self.metrics.apply(&config);
        if let Some(s) = &self.storage {
            s.apply(&config, device_labels);
        }
        self.health
            .set_targets(config.targets.iter().map(|t| t.name.as_str()));
        self.health.set_stall_after(stall_after(&config));
        if config.leds() != &self.leds_config {
            tracing::warn!("[leds] changed: the LEDs keep their old settings until a restart");
        }
        let applied = self.runner.apply(&config);
        tracing::info!(
            targets = config.targets.len(),
            added = applied.added.len(),
            changed = applied.changed.len(),
            removed = applied.removed.len(),
            unchanged = applied.unchanged.len(),
            "config applied"
        );
        self.running.send_replace(Arc::new(config));
    }

    /// Applies the local config again, after the provisioned targets changed.
    pub fn reapply(&self) {
        let _serial = self.apply_lock.lock_or_recover();
        let local = (**self.local.borrow()).clone();
        self.apply_locked(local);
    }

    /// The device's own config as it is applied, for the loops that follow it.
    pub fn local(&self) -> watch::Receiver<Arc<Config>> {
        self.local.subscribe()
    }

    /// Takes the mDNS announcement back, at shutdown.
    pub fn withdraw(&self) {
        if let Some(a) = &self.announcer {
            a.withdraw();
        }
    }
}

impl Reload for Applier {
    fn reload(&self) -> Result<(), ConfigErrors> {
        match self.source.load() {
            Ok(config) => {
                self.apply(config);
                self.metrics.reload_result(true);
                // A changed [provisioning] section takes effect now, not at the next refresh.
                self.provisioning.wake.notify_one();
                Ok(())
            }
            Err(e) => {
                tracing::error!("config reload failed, keeping the running config:\n{e}");
                self.metrics.reload_result(false);
                Err(e)
            }
        }
    }
}

/// What a device has beside its config: all optional, none in most tests.
#[derive(Default)]
pub struct Wiring {
    /// Keeps the provisioned targets' last good copy.
    pub data_dir: Option<PathBuf>,
    /// The HTTP port the mDNS announcement names; no announcement without it.
    pub announce_port: Option<u16>,
    /// Also get every sample (web history, ...).
    pub observers: Vec<Arc<dyn Observer>>,
    pub storage: Option<Arc<Storage>>,
}

/// The parts [`build`] made.
pub struct Built {
    pub state: Arc<AppState>,
    pub applier: Arc<Applier>,
    pub health: Arc<Health>,
}

/// Builds the device's parts on a loaded config and applies it. Starts the runner, so it must
/// run inside the Tokio runtime; starts no other task.
pub fn build(source: ConfigSource, config: Config, wiring: Wiring) -> Built {
    let metrics = Arc::new(Metrics::new());
    let provisioning = provisioning::State::new(metrics.registry(), wiring.data_dir);
    provisioning.load_cache(&config);
    let started = Instant::now();
    let leds = Arc::new(start_leds(&config));
    metrics.register(Box::new(LedCollector::new(leds.clone())));
    let health = Arc::new(Health::new(started, boot_grace(&config)));
    let storage = wiring.storage;
    let runner = Arc::new(start_runner(
        &metrics,
        &leds,
        &health,
        wiring.observers,
        storage.as_ref(),
    ));
    let running = watch::Sender::new(Arc::new(Config::default()));
    let local = watch::Sender::new(Arc::new(Config::default()));
    let configs = Configs {
        running: running.subscribe(),
        local: local.subscribe(),
    };
    let applier = Arc::new(Applier {
        source: source.clone(),
        metrics: metrics.clone(),
        runner: runner.clone(),
        provisioning: provisioning.clone(),
        announcer: wiring.announce_port.map(Announcer::new),
        storage: storage.clone(),
        health: health.clone(),
        leds_config: config.leds().clone(),
        running,
        local,
        apply_lock: Mutex::new(()),
    });
    applier.apply(config);
    metrics.reload_result(true);
    let state = Arc::new(AppState {
        source,
        metrics,
        runner,
        probe_permits: Arc::new(Semaphore::new(ON_DEMAND_ROUNDS)),
        provisioning,
        storage,
        leds,
        leds_config: applier.leds_config.clone(),
        started,
        configs,
        reloader: applier.clone(),
    });
    Built {
        state,
        applier,
        health,
    }
}

/// The shared state on `source`'s config, with nothing beside it.
#[cfg(test)]
pub fn state_of(source: ConfigSource) -> Arc<AppState> {
    let config = source.load().expect("a valid config");
    build(source, config, Wiring::default()).state
}

/// The runner, its samples going to the metrics, the LEDs' health, `observers` and the store.
fn start_runner(
    metrics: &Arc<Metrics>,
    leds: &Arc<Leds>,
    health: &Arc<Health>,
    observers: Vec<Arc<dyn Observer>>,
    storage: Option<&Arc<Storage>>,
) -> Runner {
    let probes: Vec<Arc<dyn Probe>> = vantage_core::probes();
    let mut all = vec![
        metrics.clone() as Arc<dyn Observer>,
        Arc::new(LedObserver {
            health: health.clone(),
            leds: leds.clone(),
        }),
    ];
    all.extend(observers);
    if let Some(s) = storage {
        all.push(s.clone() as Arc<dyn Observer>);
        metrics.add_collector(s.clone());
        s.set_live(Arc::new(DeviceSeries(Arc::downgrade(metrics))));
    }
    Runner::start(
        probes,
        Arc::new(Fanout(all)),
        defaults::MAX_CONCURRENT_PROBES,
    )
}

/// Opens the configured LEDs; one that cannot be opened is logged and left out, since probing
/// matters more than a lamp.
fn start_leds(config: &Config) -> Leds {
    let cfg = config.leds();
    let mut leds = Vec::new();
    for l in &cfg.leds {
        match vantage_leds::open_one(cfg, l) {
            Ok(Some(led)) => leds.push((l.role, led)),
            Ok(None) => {}
            Err(e) => tracing::error!(led = %l.name, role = %l.role, "status LED left out: {e}"),
        }
    }
    if !leds.is_empty() {
        tracing::info!(
            backend = cfg.backend.as_str(),
            leds = leds.len(),
            "status LEDs on"
        );
    }
    Leds::start(leds, cfg.identify_timeout, cfg.stale_after)
}

/// The longest interval plus round of any probe in the config.
fn longest_round(config: &Config) -> Duration {
    config
        .targets
        .iter()
        .flat_map(|t| t.probes.iter().map(|(k, i)| *i + t.round_length(*k)))
        .max()
        .unwrap_or(Duration::ZERO)
}

/// Probes silent this long mean probing is stuck: three of the longest rounds, at least 30 s.
fn stall_after(config: &Config) -> Duration {
    (longest_round(config) * 3).max(Duration::from_secs(30))
}

/// "Booting" lasts until every target has reported once, or at most this long: the longest
/// interval plus the longest round, with a margin, capped at five minutes.
fn boot_grace(config: &Config) -> Duration {
    (longest_round(config) + Duration::from_secs(5)).min(Duration::from_secs(300))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: &str = "[[targets]]\nname = \"a\"\nhost = \"127.0.0.1\"\nprobes = [\"ping\"]\ninterval = \"24h\"\n";

    fn names(c: &Config) -> Vec<&str> {
        c.targets.iter().map(|t| t.name.as_str()).collect()
    }

    /// A reload reaches the handlers' view and the fleet loops' watch; a broken file keeps
    /// the running config; a reapply keeps the local one.
    #[tokio::test]
    async fn reloads_reach_the_state_and_the_local_watch() {
        let dir = std::env::temp_dir().join(format!("vantage-apply-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("vantage.toml");
        std::fs::write(&path, ONE).unwrap();
        let source = ConfigSource::File(path.clone());
        let built = build(source.clone(), source.load().unwrap(), Wiring::default());
        let (state, applier) = (&built.state, &built.applier);
        let mut local = applier.local();
        assert_eq!(names(&state.configs.in_effect()), ["a"]);

        let two = ONE.to_string() + &ONE.replace("\"a\"", "\"b\"");
        std::fs::write(&path, two).unwrap();
        state.reloader.reload().unwrap();
        assert_eq!(names(&state.configs.in_effect()), ["a", "b"]);
        assert_eq!(names(&state.configs.own()), ["a", "b"]);
        assert!(local.has_changed().unwrap());
        assert_eq!(names(&local.borrow_and_update()), ["a", "b"]);

        std::fs::write(&path, "[[targets]]\nname = 1\n").unwrap();
        assert!(state.reloader.reload().is_err());
        assert_eq!(names(&state.configs.in_effect()), ["a", "b"]);
        assert!(!local.has_changed().unwrap());

        applier.reapply();
        assert_eq!(names(&state.configs.in_effect()), ["a", "b"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
