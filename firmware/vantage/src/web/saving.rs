//! Saving the config file from the page: the one read-edit-validate-write-reload path, and
//! the checks and error answers it shares with every editor.

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::FromRef;
use axum::http::{HeaderMap, StatusCode, header};
use serde_json::{Value, json};

use super::Web;
use super::config_file::{ConfigLocation, EditError, revision, write_atomic};
use super::error::{ApiError, ApiResult};
use super::secrets::redact_text;
use crate::config_source::ConfigSource;
use crate::state::{Configs, Reload};

/// What the config editors use: the file and where it comes from, the configs as applied, the
/// lock that serialises saves, the directory client files must stay out of, and the reload.
#[derive(Clone)]
pub(super) struct Editor {
    source: ConfigSource,
    pub configs: Configs,
    save_lock: Arc<tokio::sync::Mutex<()>>,
    /// The web state's directory (`data_dir/web`).
    web_dir: PathBuf,
    reloader: Arc<dyn Reload>,
}

impl FromRef<Arc<Web>> for Editor {
    fn from_ref(web: &Arc<Web>) -> Self {
        Self {
            source: web.state.source.clone(),
            configs: web.state.configs.clone(),
            save_lock: web.save_lock.clone(),
            web_dir: web.data_dir.join("web"),
            reloader: web.state.reloader.clone(),
        }
    }
}

pub(super) fn location(ed: &Editor) -> ConfigLocation {
    ConfigLocation::of(&ed.source)
}

pub(super) fn read_text(loc: &ConfigLocation) -> ApiResult<String> {
    loc.read()
        .map_err(|e| ApiError::internal(&format!("cannot read {}", loc.display()), e))
}

fn if_match(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().trim_matches('"').to_string())
}

/// An edit's error as the API reports it; `what` names the edited thing in messages.
pub(super) fn edit_error_for(e: EditError, what: &str) -> ApiError {
    match e {
        EditError::Document(m) => ApiError::new(StatusCode::CONFLICT, m),
        EditError::NotFound(n) => {
            ApiError::new(StatusCode::NOT_FOUND, format!("no {what} named {n:?}"))
        }
        EditError::Invalid(errs) => ApiError::fields(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("the {what} is not valid"),
            errs,
        ),
    }
}

/// Refuses an edit naming a `*_file` the daemon must not read for a client (see
/// `client_files.rs`). Runs before the save lock, so a slow file cannot hold it.
pub(super) async fn check_files(ed: &Editor, body: &Value, what: &str) -> ApiResult<()> {
    super::client_files::check(body, &ed.web_dir)
        .await
        .map_err(|errs| {
            ApiError::fields(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("the {what} is not valid"),
                errs,
            )
        })
}

/// The one way the page changes the config file: under `save_lock`, read the file as it is
/// now, check `If-Match`, apply `edit` (which validates the whole result like check-config),
/// then (unless `dry_run`) write it atomically with a backup and reload it like SIGHUP.
pub(super) async fn save_with(
    ed: &Editor,
    headers: &HeaderMap,
    dry_run: bool,
    what: &str,
    edit: impl FnOnce(&str, &str) -> Result<String, EditError>,
) -> ApiResult<Value> {
    let _lock = ed.save_lock.lock().await;
    let loc = location(ed);
    let Some(path) = loc.path.clone() else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "the daemon runs on its embedded config and has nowhere to save; start it with --config or a data directory",
        ));
    };
    let text = read_text(&loc)?;
    if let Some(want) = if_match(headers)
        && want != revision(&text)
    {
        return Err(ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "the config file changed since the page loaded it; reload the page and try again",
        ));
    }
    let new = edit(&text, &path.display().to_string()).map_err(|e| edit_error_for(e, what))?;
    if dry_run {
        return Ok(json!({ "valid": true, "saved": false }));
    }
    let mode = std::fs::metadata(&path).map_or(0o640, |m| {
        use std::os::unix::fs::PermissionsExt;
        m.permissions().mode() & 0o777
    });
    // A config that is a symlink (e.g. from a read-only /etc into the data partition) is
    // saved where it points, so the link survives.
    let p = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
    let bytes = new.clone().into_bytes();
    tokio::task::spawn_blocking(move || write_atomic(&p, &bytes, mode, true, |_| Ok(())))
        .await
        .map_err(|e| ApiError::internal("cannot save the config", e))?
        // The admin needs the reason (e.g. a read-only directory) to fix it.
        .map_err(|e| ApiError::internal(&format!("cannot save {}: {e}", path.display()), &e))?;
    tracing::info!(path = %path.display(), "config saved from the web page");
    if let Err(e) = ed.reloader.reload() {
        return Err(ApiError::internal("the saved config did not reload", e));
    }
    Ok(json!({ "revision": revision(&new), "path": path.display().to_string() }))
}

/// Shipping errors may quote an endpoint's URL, and with it a password in its user info.
pub(super) fn redact_endpoint_errors(remote_write: &mut Value) {
    if let Some(eps) = remote_write
        .get_mut("endpoints")
        .and_then(Value::as_array_mut)
    {
        for e in eps {
            if let Some(Value::String(m)) = e.get_mut("last_error") {
                *m = redact_text(m);
            }
        }
    }
}
