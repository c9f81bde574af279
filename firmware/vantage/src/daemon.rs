//! `vantage run`: loads the config, starts the runner and the HTTP server, reloads on SIGHUP.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use vantage_core::{Config, ConfigErrors, JobKey, Observer, Probe, Runner, Sample, defaults};

use crate::fleet::{self, announce::Announcer, provisioning, uplink};
use vantage_leds::{Health, LedObserver, Leds, Notifier, Pattern, Supervisor};

use crate::metrics::{DeviceSeries, LedCollector, Metrics};
use crate::storage::Storage;

use crate::config_source::ConfigSource;

/// Rounds run on demand at once (`/probe`, "Test now", "Run now"); more get `429`.
pub const ON_DEMAND_ROUNDS: usize = 64;
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

/// State shared by the HTTP handlers and the reload paths.
pub struct Daemon {
    pub source: ConfigSource,
    pub metrics: Arc<Metrics>,
    pub runner: Runner,
    /// The config in effect: the local file plus provisioned targets.
    pub config: Mutex<Arc<Config>>,
    /// The device's own config file, as loaded; the fleet loops follow it.
    local: watch::Sender<Arc<Config>>,
    pub provisioning: Arc<provisioning::State>,
    announcer: Option<Announcer>,
    /// Serialises applying configs: a reload and a provisioning fetch may finish together, and
    /// the one that read the local config first must not apply it last.
    apply_lock: Mutex<()>,
    /// When the daemon started, for the status page's uptime.
    pub started: Instant,
    /// Bounds the rounds run on demand at once: `/probe`, the page's "Test now" and "Run now".
    pub probe_permits: Arc<tokio::sync::Semaphore>,
    /// The status LEDs and the state they show.
    pub leds: Arc<Leds>,
    pub health: Arc<Health>,
    /// The `[leds]` the LEDs were opened with.
    leds_config: vantage_core::LedsConfig,
    /// The sample store and remote_write shipping (none in tests that do not need them).
    pub storage: Option<Arc<Storage>>,
}

impl Daemon {
    /// Builds the daemon on a loaded config. Must run inside the Tokio runtime.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn start(source: ConfigSource, config: Config) -> Arc<Self> {
        Self::start_with(source, config, None, None, Vec::new(), None)
    }

    /// `data_dir` keeps the provisioned targets' last good copy; `announce_port` is the HTTP
    /// port the mDNS announcement names; `observers` also get every sample (web history, ...).
    pub fn start_with(
        source: ConfigSource,
        config: Config,
        data_dir: Option<PathBuf>,
        announce_port: Option<u16>,
        observers: Vec<Arc<dyn Observer>>,
        storage: Option<Arc<Storage>>,
    ) -> Arc<Self> {
        let metrics = Arc::new(Metrics::new());
        let provisioning = provisioning::State::new(metrics.registry(), data_dir);
        provisioning.load_cache(&config);
        let uplink = uplink::UplinkMetrics::new(metrics.registry());
        let started = Instant::now();
        let leds = Arc::new(start_leds(&config));
        metrics.register(Box::new(LedCollector::new(leds.clone())));
        let health = Arc::new(Health::new(started, boot_grace(&config)));
        let probes: Vec<Arc<dyn Probe>> = vantage_core::probes();
        let mut all = vec![
            metrics.clone() as Arc<dyn Observer>,
            Arc::new(LedObserver {
                health: health.clone(),
                leds: leds.clone(),
            }),
        ];
        all.extend(observers);
        if let Some(s) = &storage {
            all.push(s.clone() as Arc<dyn Observer>);
            metrics.add_collector(s.clone());
            s.set_live(Arc::new(DeviceSeries(Arc::downgrade(&metrics))));
        }
        let observer = Arc::new(Fanout(all));
        let runner = Runner::start(probes, observer, defaults::MAX_CONCURRENT_PROBES);
        let daemon = Arc::new(Self {
            source,
            metrics,
            runner,
            config: Mutex::new(Arc::new(Config::default())),
            local: watch::Sender::new(Arc::new(Config::default())),
            provisioning: provisioning.clone(),
            announcer: announce_port.map(Announcer::new),
            apply_lock: Mutex::new(()),
            started,
            probe_permits: Arc::new(tokio::sync::Semaphore::new(ON_DEMAND_ROUNDS)),
            leds,
            health,
            leds_config: config.leds.clone(),
            storage,
        });
        daemon.apply(config);
        daemon.metrics.reload_result(true);
        tokio::spawn(uplink::run(daemon.local.subscribe(), uplink));
        let (reapply, mut reapplies) = tokio::sync::mpsc::channel(1);
        tokio::spawn(provisioning::run(
            daemon.local.subscribe(),
            reapply,
            provisioning,
        ));
        let weak = Arc::downgrade(&daemon);
        tokio::spawn(async move {
            while reapplies.recv().await.is_some() {
                let Some(d) = weak.upgrade() else { return };
                d.reapply();
            }
        });
        daemon
    }

    /// Applies a local config: merges the provisioned targets in, updates the device labels
    /// and the mDNS announcement.
    fn apply(&self, local: Config) {
        let _serial = self.apply_lock.lock().unwrap_or_else(|e| e.into_inner());
        self.apply_locked(local);
    }

    fn apply_locked(&self, local: Config) {
        let config = self.provisioning.merge(&local);
        let device_labels = fleet::device_labels(&local);
        self.metrics.set_device_labels(device_labels.clone());
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
        if config.leds != self.leds_config {
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
        *self.config.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
    }

    /// The `[leds]` the LEDs were opened with (changes need a restart).
    pub fn running_leds_config(&self) -> &vantage_core::LedsConfig {
        &self.leds_config
    }

    /// The device's own config, without provisioned targets.
    pub fn local_config(&self) -> Arc<Config> {
        self.local.borrow().clone()
    }

    /// Applies the local config again, after the provisioned targets changed.
    pub fn reapply(&self) {
        let _serial = self.apply_lock.lock().unwrap_or_else(|e| e.into_inner());
        self.apply_locked((*self.local_config()).clone());
    }

    pub fn config(&self) -> Arc<Config> {
        self.config
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reloads the config; on error the running config stays as it is.
    pub fn reload(&self) -> Result<(), ConfigErrors> {
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

/// Runs until SIGTERM or Ctrl-C.
pub async fn run(
    source: ConfigSource,
    listen: SocketAddr,
    data_dir: PathBuf,
    setup_code_file: Option<PathBuf>,
) -> anyhow::Result<()> {
    let config = source.load().map_err(|e| anyhow::anyhow!("{e}"))?;
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    let listener = bind(listen).await?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        config = %source.describe(),
        listen = %listener.local_addr()?,
        data_dir = %data_dir.display(),
        "vantage starting"
    );
    let storage = Storage::start(&data_dir, &config);
    let history = Arc::new(crate::web::MemoryHistory::default());
    let daemon = Daemon::start_with(
        source,
        config,
        Some(data_dir.clone()),
        Some(listener.local_addr()?.port()),
        vec![history.clone() as Arc<dyn Observer>],
        Some(storage.clone()),
    );
    // The charts read the store when it is open, so they survive a restart; memory otherwise.
    let history_source: Arc<dyn crate::web::HistorySource> = match storage.store() {
        Some(store) => Arc::new(crate::web::StoreHistory::new(history, store.clone())),
        None => history,
    };
    let code = setup_code_file.as_deref();
    let web = crate::web::Web::open(daemon.clone(), &data_dir, history_source, code)?;
    let _ = crate::web::apply_https(&web).await;

    // The LED tick is the main loop's heartbeat: it runs on the same runtime as everything
    // else, so a wedged runtime stops it, the LEDs say "not responding" and, with
    // WatchdogSec=, systemd restarts the daemon.
    let notifier = Notifier::from_env().map(Arc::new);
    if let Some(w) = notifier.as_ref().and_then(|n| n.watchdog_timeout()) {
        tracing::info!(timeout = %humantime::format_duration(w), "systemd watchdog on");
    }
    let supervisor = Supervisor {
        leds: daemon.leds.clone(),
        health: daemon.health.clone(),
        notifier: notifier.clone(),
    };
    if let Some(n) = &notifier {
        let _ = n.ready();
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let ticker = tokio::spawn(supervisor.run(|| true, stop_rx));
    if let Some(storage) = daemon.storage.clone() {
        // Shipping and store state for the LEDs; once a second is as fast as a person looks.
        let health = daemon.health.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            loop {
                every.tick().await;
                let (uplink, store) = storage.led_inputs();
                health.set_uplink(uplink);
                health.set_store(store);
            }
        });
    }

    let reloader = daemon.clone();
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading config");
            let _ = reloader.reload();
        }
    });

    // Not axum::serve: it has no header read timeout (slowloris); see web/server.rs.
    crate::web::serve_http(listener, crate::web::app(web), shutdown_signal()).await;
    if let Some(a) = &daemon.announcer {
        a.withdraw();
    }
    if let Some(n) = &notifier {
        let _ = n.stopping();
    }
    let _ = stop_tx.send(true);
    let _ = ticker.await;
    // Pending samples reach the disk before the process goes.
    storage.shutdown().await;
    // A defined state for the LEDs: dark, with the kernel's triggers off.
    daemon.leds.shutdown(Pattern::Off);
    tracing::info!("vantage stopped");
    Ok(())
}

/// Opens the configured LEDs; one that cannot be opened is logged and left out, since probing
/// matters more than a lamp.
pub fn start_leds(config: &Config) -> Leds {
    let cfg = &config.leds;
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

/// Probes silent this long mean probing is stuck: three of the longest rounds, at least 30 s.
fn stall_after(config: &Config) -> Duration {
    let longest = config
        .targets
        .iter()
        .flat_map(|t| t.probes.iter().map(|(_, i)| *i + t.ping.round_length()))
        .max()
        .unwrap_or(Duration::ZERO);
    (longest * 3).max(Duration::from_secs(30))
}

/// "Booting" lasts until every target has reported once, or at most this long: the longest
/// interval plus the longest round, with a margin, capped at five minutes.
fn boot_grace(config: &Config) -> Duration {
    let longest = config
        .targets
        .iter()
        .flat_map(|t| t.probes.iter().map(|(_, i)| *i + t.ping.round_length()))
        .max()
        .unwrap_or(Duration::ZERO);
    (longest + Duration::from_secs(5)).min(Duration::from_secs(300))
}

async fn bind(listen: SocketAddr) -> anyhow::Result<TcpListener> {
    match TcpListener::bind(listen).await {
        Ok(l) => Ok(l),
        // A machine without IPv6 cannot bind [::]; the same port on 0.0.0.0 serves it.
        Err(e) if listen.ip().is_unspecified() && listen.is_ipv6() => {
            let v4 = SocketAddr::from(([0, 0, 0, 0], listen.port()));
            tracing::warn!("cannot listen on {listen} ({e}); using {v4}");
            TcpListener::bind(v4)
                .await
                .with_context(|| format!("cannot listen on {v4}"))
        }
        Err(e) => Err(e).with_context(|| format!("cannot listen on {listen}")),
    }
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
    tracing::info!("shutting down");
}

impl Daemon {
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// "Identify me": every LED blinks fast for `duration` (the configured
    /// `leds.identify_timeout` when `None`); zero stops it. Returns how long it blinks.
    pub fn identify(&self, duration: Option<Duration>) -> Duration {
        match duration {
            Some(d) if d.is_zero() => {
                self.leds.stop_identify();
                tracing::info!("identify stopped");
                Duration::ZERO
            }
            d => {
                let d = self.leds.identify(d);
                tracing::info!(duration = %humantime::format_duration(d), "identify: blinking all LEDs");
                d
            }
        }
    }
}
