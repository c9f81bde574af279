//! Starting an A/B update (docs/IMAGE.md, "Starting an update"): a bundle from a file, a URL,
//! the page's upload or the provisioning file is put in the spool on the data partition, its
//! signature checked against the image's keyring, and only then installed into the slot that
//! is not running. The health check decides at the next boot whether it stays.

pub mod cli;
mod download;
pub mod fleet;

mod installer;
pub mod offer;
pub mod spool;
#[cfg(test)]
pub mod tests;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use vantage_core::LockExt;

use crate::metrics::update::{ImageState, SlotPaths};
pub use download::{DOWNLOAD_NAME, Source, download};
pub use installer::{BundleInfo, Installer, Rauc};
use spool::Limits;

/// The keyring the image trusts (image/files/rauc-system.conf), in the read-only slot.
pub const KEYRING: &str = "/usr/lib/vantage-image/rauc/keyring.pem";
/// The spool in the daemon's state directory (on the data partition on the image).
pub const SPOOL_DIR: &str = "update-spool";

/// Checks the bundle's signature on a blocking thread. Nothing is installed.
pub async fn check(installer: &Arc<dyn Installer>, bundle: &Path) -> Result<BundleInfo, String> {
    let (i, b) = (installer.clone(), bundle.to_path_buf());
    tokio::task::spawn_blocking(move || i.check(&b))
        .await
        .map_err(|e| format!("the check stopped: {e}"))?
}

/// Installs a checked bundle on a blocking thread, `progress` seeing each step.
pub async fn install(
    installer: &Arc<dyn Installer>,
    bundle: &Path,
    mut progress: impl FnMut(u8, &str) + Send + 'static,
) -> Result<(), String> {
    let (i, b) = (installer.clone(), bundle.to_path_buf());
    tokio::task::spawn_blocking(move || i.install(&b, &mut progress))
        .await
        .map_err(|e| format!("the install stopped: {e}"))?
}

/// What an update is doing, for the page (`GET /api/update`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    #[default]
    Idle,
    Receiving,
    Checking,
    Installing,
    /// Installed into the other slot: it starts at the next boot, on trial.
    Installed,
    Failed,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    pub phase: Phase,
    /// `upload`, `fleet` or a URL.
    pub source: Option<String>,
    pub bytes: u64,
    pub percent: Option<u8>,
    pub message: String,
    pub version: Option<String>,
}

/// The daemon's one update at a time: the installer, the spool and what it is doing.
#[derive(Debug)]
pub struct Updater {
    installer: Mutex<Arc<dyn Installer>>,
    limits: Mutex<Limits>,
    pub spool: PathBuf,
    status: Mutex<Status>,
    busy: Arc<tokio::sync::Mutex<()>>,
    /// Where the image's A/B state is read (the same reader as `/metrics`).
    slots: Mutex<SlotPaths>,
}

/// Held while an update runs; another one is refused meanwhile.
pub type Busy = tokio::sync::OwnedMutexGuard<()>;

impl Updater {
    /// Empties the spool: at start nothing can be in progress, and what a power cut left
    /// there (up to a whole bundle) would otherwise take room on the data partition for good.
    pub fn new(installer: Arc<dyn Installer>, spool: PathBuf) -> Arc<Self> {
        let _ = std::fs::remove_dir_all(&spool);
        Arc::new(Self {
            installer: Mutex::new(installer),
            limits: Mutex::new(Limits::DEFAULT),
            spool,
            status: Mutex::default(),
            busy: Arc::default(),
            slots: Mutex::default(),
        })
    }

    pub fn installer(&self) -> Arc<dyn Installer> {
        self.installer.lock_or_recover().clone()
    }

    pub fn limits(&self) -> Limits {
        *self.limits.lock_or_recover()
    }

    #[cfg(test)]
    pub fn set_installer(&self, i: Arc<dyn Installer>) {
        *self.installer.lock_or_recover() = i;
    }

    #[cfg(test)]
    pub fn set_limits(&self, l: Limits) {
        *self.limits.lock_or_recover() = l;
    }

    /// The running image's slots, build and last trial; `None` off an A/B image.
    pub fn image_state(&self) -> Option<ImageState> {
        crate::metrics::update::read(&self.slots.lock_or_recover())
    }

    #[cfg(test)]
    pub fn set_slot_paths(&self, p: SlotPaths) {
        *self.slots.lock_or_recover() = p;
    }

    /// The right to run an update, unless one is running.
    pub fn try_begin(&self, source: &str) -> Option<Busy> {
        let guard = self.busy.clone().try_lock_owned().ok()?;
        *self.status.lock_or_recover() = Status {
            phase: Phase::Receiving,
            source: Some(source.to_string()),
            ..Status::default()
        };
        Some(guard)
    }

    pub fn status(&self) -> Status {
        self.status.lock_or_recover().clone()
    }

    pub fn update_status(&self, f: impl FnOnce(&mut Status)) {
        f(&mut self.status.lock_or_recover());
    }

    pub fn failed(&self, msg: &str) {
        tracing::warn!("update: {msg}");
        self.update_status(|s| {
            s.phase = Phase::Failed;
            s.message = msg.to_string();
        });
    }

    /// Checks a received bundle; on a refusal it is removed and the status says why, calling
    /// the bundle `name`: its path in the spool means nothing to whoever sent it.
    pub async fn check(&self, bundle: &Path, name: &str) -> Result<BundleInfo, String> {
        self.update_status(|s| s.phase = Phase::Checking);
        match check(&self.installer(), bundle).await {
            Ok(info) => {
                self.update_status(|s| s.version = Some(info.version.clone()));
                Ok(info)
            }
            Err(e) => {
                let e = e.replace(&bundle.display().to_string(), name);
                let _ = std::fs::remove_file(bundle);
                self.failed(&e);
                Err(e)
            }
        }
    }

    /// Installs a checked bundle, then removes it from the spool whatever the outcome.
    pub async fn install(self: &Arc<Self>, bundle: &Path) -> Result<(), String> {
        self.update_status(|s| s.phase = Phase::Installing);
        let me = self.clone();
        let r = install(&self.installer(), bundle, move |pct, what| {
            me.update_status(|s| {
                s.percent = Some(pct);
                s.message = what.to_string();
            });
        })
        .await;
        let _ = std::fs::remove_file(bundle);
        match &r {
            Ok(()) => {
                tracing::info!("update installed; it starts at the next boot, on trial");
                self.update_status(|s| {
                    s.phase = Phase::Installed;
                    s.percent = Some(100);
                    s.message = "installed: it starts at the next boot, on trial".to_string();
                });
            }
            Err(e) => self.failed(e),
        }
        r
    }
}
