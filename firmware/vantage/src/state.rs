//! What the HTTP endpoints and the web page use of the running device: the runner for rounds
//! on demand, the metrics, the store, the config in effect, the status LEDs, and a way to
//! reload. Built once (`apply::build`); nothing here starts a task or knows how the daemon is
//! wired.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::FromRef;
use tokio::sync::{Semaphore, watch};
use vantage_core::{Config, ConfigErrors, Runner};
use vantage_leds::Leds;
use vantage_leds::LedsConfig;
use vantage_store::Store;

use crate::config_source::ConfigSource;
use crate::fleet::provisioning;
use crate::metrics::Metrics;
use crate::storage::Storage;

/// Rounds run on demand at once (`/probe`, "Test now", "Run now"); more get `429`.
pub const ON_DEMAND_ROUNDS: usize = 64;

/// Loads the config from its source again and applies it (`/-/reload`, a saved edit).
pub trait Reload: Send + Sync {
    /// On error the running config stays as it is.
    fn reload(&self) -> Result<(), ConfigErrors>;
}

/// The configs as last applied: the one in effect (the local file plus provisioned targets)
/// and the device's own file.
#[derive(Clone)]
pub struct Configs {
    pub running: watch::Receiver<Arc<Config>>,
    pub local: watch::Receiver<Arc<Config>>,
}

impl Configs {
    /// The config in effect.
    pub fn in_effect(&self) -> Arc<Config> {
        self.running.borrow().clone()
    }

    /// The device's own config, without provisioned targets.
    pub fn own(&self) -> Arc<Config> {
        self.local.borrow().clone()
    }
}

/// What a round on demand uses (`/probe`, "Test now", "Run now"): the config in effect, the
/// probers, and the permits that bound such rounds.
#[derive(Clone)]
pub struct Probing {
    pub configs: Configs,
    pub runner: Arc<Runner>,
    pub probe_permits: Arc<Semaphore>,
}

impl FromRef<Arc<AppState>> for Probing {
    fn from_ref(s: &Arc<AppState>) -> Self {
        Self {
            configs: s.configs.clone(),
            runner: s.runner.clone(),
            probe_permits: s.probe_permits.clone(),
        }
    }
}

/// The reload, for the endpoints that ask for one (`/-/reload`, the page's "Reload").
#[derive(Clone)]
pub struct Reloader(pub Arc<dyn Reload>);

impl FromRef<Arc<AppState>> for Reloader {
    fn from_ref(s: &Arc<AppState>) -> Self {
        Self(s.reloader.clone())
    }
}

/// The status LEDs, for the endpoints that show them or make them blink.
#[derive(Clone)]
pub struct Lights(pub Arc<Leds>);

impl FromRef<Arc<AppState>> for Lights {
    fn from_ref(s: &Arc<AppState>) -> Self {
        Self(s.leds.clone())
    }
}

impl Lights {
    /// "Identify me": every LED blinks fast for `duration` (the configured
    /// `leds.identify_timeout` when `None`); zero stops it. Returns how long it blinks.
    pub fn identify(&self, duration: Option<Duration>) -> Duration {
        match duration {
            Some(d) if d.is_zero() => {
                self.0.stop_identify();
                tracing::info!("identify stopped");
                Duration::ZERO
            }
            d => {
                let d = self.0.identify(d);
                tracing::info!(duration = %humantime::format_duration(d), "identify: blinking all LEDs");
                d
            }
        }
    }
}

/// The state the handlers share; each handler takes only the part it uses (the structs above
/// and beside the handlers, built from this by `FromRef`).
pub struct AppState {
    pub source: ConfigSource,
    pub metrics: Arc<Metrics>,
    pub runner: Arc<Runner>,
    /// Bounds the rounds run on demand at once: `/probe`, the page's "Test now" and "Run now".
    pub probe_permits: Arc<Semaphore>,
    pub provisioning: Arc<provisioning::State>,
    /// The sample store and remote_write shipping (none in tests that do not need them).
    pub storage: Option<Arc<Storage>>,
    /// The status LEDs, and the `[leds]` they were opened with (changes need a restart).
    pub leds: Arc<Leds>,
    pub leds_config: LedsConfig,
    /// When the daemon started, for the status page's uptime.
    pub started: Instant,
    pub configs: Configs,
    pub reloader: Arc<dyn Reload>,
}

impl AppState {
    /// The sample store, when it is open.
    pub fn store(&self) -> Option<Arc<Store>> {
        self.storage.as_ref().and_then(|s| s.store()).cloned()
    }

    /// The `[leds]` the LEDs were opened with (changes need a restart).
    pub fn running_leds_config(&self) -> &LedsConfig {
        &self.leds_config
    }
}
