//! `vantage run`: loads the config, starts the runner and the HTTP server, reloads on SIGHUP.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::TcpListener;
use vantage_core::{
    Config, ConfigErrors, JobKey, Observer, PingProbe, Probe, Runner, Sample, TraceProbe, defaults,
};

use crate::http;
use crate::metrics::Metrics;

/// The config a device runs when none is given: pings loopback, so it works anywhere.
pub const EMBEDDED_CONFIG: &str = include_str!("../vantage.toml");

/// Where the config comes from.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    File(PathBuf),
    Embedded,
}

impl ConfigSource {
    pub fn load(&self) -> Result<Config, ConfigErrors> {
        match self {
            ConfigSource::File(p) => Config::load(p),
            ConfigSource::Embedded => Config::parse(EMBEDDED_CONFIG, "<embedded default config>"),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            ConfigSource::File(p) => p.display().to_string(),
            ConfigSource::Embedded => "the embedded default config".into(),
        }
    }
}

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
    pub config: Mutex<Arc<Config>>,
    /// When the daemon started, for the status page's uptime.
    pub started: Instant,
    /// Bounds concurrent on-demand `/probe` requests.
    pub probe_permits: tokio::sync::Semaphore,
}

impl Daemon {
    /// Builds the daemon on a loaded config. Must run inside the Tokio runtime.
    pub fn start(source: ConfigSource, config: Config) -> Arc<Self> {
        let metrics = Arc::new(Metrics::new());
        let probes: Vec<Arc<dyn Probe>> =
            vec![Arc::new(PingProbe::new()), Arc::new(TraceProbe::new())];
        let observer = Arc::new(Fanout(vec![metrics.clone() as Arc<dyn Observer>]));
        let runner = Runner::start(probes, observer, defaults::MAX_CONCURRENT_PROBES);
        let daemon = Arc::new(Self {
            source,
            metrics,
            runner,
            config: Mutex::new(Arc::new(Config::default())),
            started: Instant::now(),
            probe_permits: tokio::sync::Semaphore::new(64),
        });
        daemon.apply(config);
        daemon.metrics.reload_result(true);
        daemon
    }

    fn apply(&self, config: Config) {
        // Series first, so the first samples of new targets find them.
        self.metrics.apply(&config);
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
    let daemon = Daemon::start(source, config);

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

    axum::serve(
        listener,
        http::router(daemon.clone()).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await
    .context("HTTP server failed")?;
    tracing::info!("vantage stopped");
    Ok(())
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
}
