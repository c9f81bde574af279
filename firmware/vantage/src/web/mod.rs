//! The local web page and its JSON API under `/api/`.
//!
//! Everything a person needs to set up a device from a browser: the first-boot password, the
//! targets editor, live status with sparklines, and settings. The page's assets live in `web/`
//! at the repository root and are embedded in the binary. See `docs/WEB.md` for the security
//! design and `docs/API.md` for the API.

mod api;
mod assets;
mod auth;
mod client_files;
mod config_file;
mod device;
mod diagnostics;
mod error;
mod guard;
mod history;
mod node_exporter;
mod run_now;
mod saving;
mod secrets;
mod sections;
mod server;
mod settings;
mod status;
#[cfg(test)]
mod tests;
mod tls;
mod update;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::extract::FromRef;

use crate::state::{AppState, Probing, Reloader};
use crate::storage::Storage;
pub use history::{HistorySource, MemoryHistory, StoreHistory};
pub use server::serve_http;

/// State of the web page: the device's shared state, the admin credentials and sessions, the
/// page's settings.
pub struct Web {
    pub state: Arc<AppState>,
    pub auth: Arc<auth::Auth>,
    pub settings: Arc<settings::SettingsStore>,
    pub history: Arc<dyn HistorySource>,
    /// Serialises config saves so two editors never interleave read-modify-write.
    pub save_lock: Arc<tokio::sync::Mutex<()>>,
    pub data_dir: PathBuf,
    pub tls: Arc<tls::Tls>,
    /// The targets with a "Run now" going.
    pub runs: Arc<run_now::Runs>,
    /// Settings → Update: the uploaded bundle's check and install.
    pub update: Arc<crate::update::Updater>,
    /// Settings → Local metrics: the image's node exporter, switched through a request file.
    pub node_exporter: Arc<crate::node_exporter::NodeExporter>,
}

// The parts of the device's state that web handlers share with the daemon's endpoints.
impl FromRef<Arc<Web>> for Probing {
    fn from_ref(web: &Arc<Web>) -> Self {
        Self::from_ref(&web.state)
    }
}

impl FromRef<Arc<Web>> for Reloader {
    fn from_ref(web: &Arc<Web>) -> Self {
        Self::from_ref(&web.state)
    }
}

impl std::fmt::Debug for Web {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Web")
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

impl Web {
    /// Opens the web state kept in `data_dir/web/` (credentials, settings), creating the
    /// directory with mode 0700. With `setup_code_file`, first-boot setup needs its code.
    pub fn open(
        state: Arc<AppState>,
        data_dir: &Path,
        history: Arc<dyn HistorySource>,
        setup_code_file: Option<&Path>,
    ) -> anyhow::Result<Arc<Self>> {
        let web = Self::open_with(state, data_dir, history, auth::HashParams::PRODUCTION)?;
        if let Some(f) = setup_code_file {
            web.auth.require_setup_code(f);
        }
        Ok(web)
    }

    fn open_with(
        state: Arc<AppState>,
        data_dir: &Path,
        history: Arc<dyn HistorySource>,
        params: auth::HashParams,
    ) -> anyhow::Result<Arc<Self>> {
        let dir = data_dir.join("web");
        config_file::create_private_dir(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let auth = Arc::new(auth::Auth::open(&dir, params)?);
        let settings = Arc::new(settings::SettingsStore::open(&dir)?);
        let tls = Arc::new(tls::Tls::new(&dir));
        Ok(Arc::new(Self {
            state,
            auth,
            settings,
            history,
            save_lock: Arc::default(),
            data_dir: data_dir.to_path_buf(),
            tls,
            runs: Arc::default(),
            update: crate::update::Updater::new(
                Arc::new(crate::update::Rauc::new(Path::new(crate::update::KEYRING))),
                data_dir.join(crate::update::SPOOL_DIR),
            ),
            node_exporter: Arc::new(crate::node_exporter::NodeExporter::new(
                crate::node_exporter::Paths::image(data_dir),
            )),
        }))
    }
}

/// The whole HTTP application: the daemon's endpoints plus the page and its API, behind the
/// guards (Host allow-list, CSRF, sessions, scrape auth, time limit).
pub fn app(web: Arc<Web>) -> Router {
    crate::http::router(web.state.clone())
        .merge(api::router(web.clone()))
        .merge(assets::router())
        .layer(axum::middleware::from_fn_with_state(web, guard::guard))
}

/// The runner's in-memory history for [`history_source`]: the whole hour without a store, only
/// the minutes the store may still be filling when it is open (the store has the rest).
pub fn memory_history(storage: Option<&Storage>) -> Arc<MemoryHistory> {
    Arc::new(match storage.and_then(|s| s.store()) {
        Some(_) => MemoryHistory::keeping(history::RECENT_MINUTES),
        None => MemoryHistory::default(),
    })
}

/// Where the charts come from: the store when it is open, so they survive a restart; else
/// `memory`, which sees every sample since the start.
pub fn history_source(
    memory: Arc<MemoryHistory>,
    storage: Option<&Storage>,
) -> Arc<dyn HistorySource> {
    match storage.and_then(|s| s.store()) {
        Some(store) => Arc::new(StoreHistory::new(memory, store.clone())),
        None => memory,
    }
}

/// Starts (or stops) HTTPS as the settings say. A failure is logged and shown on the settings
/// page; plain HTTP keeps working.
pub async fn apply_https(web: &Arc<Web>) -> Result<(), String> {
    let listen = web.settings.get().https_listen_addr();
    web.tls.apply(listen, app(web.clone())).await
}
