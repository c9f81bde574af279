//! Fleet updates: the provisioning file's `[update]` names a bundle (URL, version, SHA-256)
//! and a maintenance window. Inside the window the device downloads it (https only, the
//! SHA-256 checked as it arrives), checks its signature and installs it. Each version is tried
//! at most once: the version is written to the data directory before the attempt, so neither a
//! failure nor a restart makes the device try the same bundle again; a new version does.
//!
//! Once installed (still inside the window) the device asks for a reboot into the new slot,
//! unless `[update] reboot = false`: the daemon runs without privileges, so it writes
//! [`REBOOT_REQUEST_FILE`] in its data directory and the image's root-run
//! `vantage-image-reboot.path` reboots (docs/IMAGE.md, "Starting an update").

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use super::offer::UpdateOffer;
use vantage_core::Clock;

use super::spool::{Limits, parse_sha256};
use super::{Source, Updater};

/// The version last attempted, in the data directory.
pub const ATTEMPTED_FILE: &str = "update-attempted";
/// The reboot request, in the data directory: one line saying why.
pub const REBOOT_REQUEST_FILE: &str = "reboot-request";
/// How often the offer is looked at again (it changes with the provisioning file).
pub const POLL: Duration = Duration::from_secs(60);

/// Gets the bundle an offer names into the spool, its SHA-256 checked.
pub trait Fetch: Send + Sync + 'static {
    fn fetch(
        &self,
        offer: &UpdateOffer,
        spool: &Path,
        progress: &mut (dyn FnMut(u64, Option<u64>) + Send),
    ) -> impl Future<Output = Result<PathBuf, String>> + Send;
}

/// Over HTTPS, as `vantage update URL` does, trusting the device's `[provisioning] ca_file`
/// too: a fleet whose provisioning server has a private CA serves its bundles the same way.
pub struct HttpsFetch {
    /// The `ca_file` in effect (read again at each fetch).
    pub ca_file: Box<dyn Fn() -> Option<String> + Send + Sync>,
}

impl std::fmt::Debug for HttpsFetch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpsFetch")
            .field("ca_file", &(self.ca_file)())
            .finish()
    }
}

impl Fetch for HttpsFetch {
    async fn fetch(
        &self,
        offer: &UpdateOffer,
        spool: &Path,
        progress: &mut (dyn FnMut(u64, Option<u64>) + Send),
    ) -> Result<PathBuf, String> {
        let ca_file = (self.ca_file)();
        let src = Source {
            url: &offer.url,
            allow_http: false,
            sha256: Some(parse_sha256(&offer.sha256)?),
            limits: Limits::DEFAULT,
            ca_file: ca_file.as_deref(),
        };
        super::download(&src, spool, progress).await
    }
}

/// What to do about an offer now.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nothing to do (no offer, already running it, already tried it).
    Nothing,
    /// Outside the window: wait this long.
    Wait(Duration),
    Install,
}

/// Decides from the offer, the running version, the version last tried and the wall clock.
pub fn decide(
    offer: Option<&UpdateOffer>,
    running: &str,
    attempted: Option<&str>,
    unix: i64,
) -> Decision {
    let Some(o) = offer else {
        return Decision::Nothing;
    };
    if o.version == running || attempted == Some(o.version.as_str()) {
        return Decision::Nothing;
    }
    match o.window.map_or(0, |w| w.wait_seconds(unix)) {
        0 => Decision::Install,
        s => Decision::Wait(Duration::from_secs(s.unsigned_abs())),
    }
}

/// The fleet-update loop's parts.
pub struct Fleet<F: Fetch> {
    pub updater: Arc<Updater>,
    pub clock: Arc<dyn Clock>,
    pub fetch: F,
    /// The offer in effect (read again at each look).
    pub offer: Box<dyn Fn() -> Option<UpdateOffer> + Send + Sync>,
    /// The version this build is (a bundle of it is not installed again).
    pub running: String,
    /// Where the version last attempted is kept.
    pub attempted: PathBuf,
    /// Where a reboot is asked for after an install.
    pub reboot_request: PathBuf,
}

impl<F: Fetch> std::fmt::Debug for Fleet<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("running", &self.running)
            .field("attempted", &self.attempted)
            .finish_non_exhaustive()
    }
}

impl<F: Fetch> Fleet<F> {
    pub async fn run(self) {
        loop {
            let attempted = std::fs::read_to_string(&self.attempted).ok();
            let offer = (self.offer)();
            let unix = self
                .clock
                .wall()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            let wait = match decide(
                offer.as_ref(),
                &self.running,
                attempted.as_deref().map(str::trim),
                unix,
            ) {
                Decision::Nothing => POLL,
                // The offer may change meanwhile: look again at least every POLL.
                Decision::Wait(d) => d.min(POLL),
                Decision::Install => {
                    self.attempt(offer.as_ref().expect("an offer to install"))
                        .await;
                    POLL
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    async fn attempt(&self, offer: &UpdateOffer) {
        // An upload from the page is running: look again later, this is not an attempt.
        let Some(_busy) = self.updater.try_begin("fleet") else {
            return;
        };
        // Written before the attempt: a crash or restart half-way does not make it twice.
        if let Err(e) = crate::files::write_whole(&self.attempted, offer.version.as_bytes()) {
            self.updater.failed(&format!(
                "cannot record the attempt in {}: {e}; not updating",
                self.attempted.display()
            ));
            return;
        }
        tracing::info!(version = %offer.version, url = %offer.url, "fleet update: downloading");
        let up = self.updater.clone();
        let mut progress = move |n: u64, _: Option<u64>| up.update_status(|s| s.bytes = n);
        let bundle = match self
            .fetch
            .fetch(offer, &self.updater.spool, &mut progress)
            .await
        {
            Ok(b) => b,
            Err(e) => {
                self.updater
                    .failed(&format!("fleet update {}: {e}", offer.version));
                return;
            }
        };
        let name = format!("the download of fleet update {}", offer.version);
        if self.updater.check(&bundle, &name).await.is_err()
            || self.updater.install(&bundle).await.is_err()
        {
            return;
        }
        if offer.reboot {
            self.ask_for_reboot(offer);
        }
    }

    /// Writes the reboot request the image's path unit acts on.
    fn ask_for_reboot(&self, offer: &UpdateOffer) {
        let why = format!("fleet update {} installed\n", offer.version);
        match crate::files::write_whole(&self.reboot_request, why.as_bytes()) {
            Ok(()) => {
                tracing::info!(version = %offer.version, "fleet update: reboot requested");
                self.updater.update_status(|s| {
                    s.message = "installed: rebooting into it, on trial".to_string();
                });
            }
            Err(e) => {
                let msg = format!(
                    "installed, but the reboot request {} could not be written: {e}; \
                     it starts at the next boot, on trial",
                    self.reboot_request.display()
                );
                tracing::warn!("update: {msg}");
                self.updater.update_status(|s| s.message = msg);
            }
        }
    }
}
