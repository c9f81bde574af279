//! The config file's device sections on the settings page: `[[remote_write]]` endpoints,
//! `[store]` limits and `[leds]`.
//!
//! They go through the same path as the targets editor (edit the document in place, validate
//! the whole file with the parser `check-config` uses, save atomically with a backup, reload),
//! so their messages are the parser's own. What does not apply live says so: `[store]` and
//! `[leds]` are read at start (`restart_required`); endpoints restart their shipping at once.
//! Secrets are masked on the way out (see `secrets.rs`).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRef, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use vantage_core::Config;
use vantage_leds::{LedBackendKind, LedRole, Leds, LedsConfig, LedsSection};
use vantage_store::config::{STORE_MAX_MAX_BYTES, STORE_MIN_BYTES, StoreConfig, StoreSections};
use vantage_store::remote_write::config as rw;

use super::Web;
use super::config_file::{
    Edit, EditError, LEDS_ORDER, REMOTE_WRITE, STORE_ORDER, apply_list_edit, apply_section_edit,
    raw_items, raw_section, revision,
};
use super::error::{ApiError, ApiResult, JsonBody};
use super::saving::{Editor, check_files, location, read_text, redact_endpoint_errors, save_with};
use crate::storage::Storage;

/// What the `[[remote_write]]` and `[store]` editors use: the editor and the storage running.
#[derive(Clone)]
struct StorageEditor {
    ed: Editor,
    storage: Option<Arc<Storage>>,
}

impl FromRef<Arc<Web>> for StorageEditor {
    fn from_ref(web: &Arc<Web>) -> Self {
        Self {
            ed: Editor::from_ref(web),
            storage: web.state.storage.clone(),
        }
    }
}

impl StorageEditor {
    fn store_open(&self) -> bool {
        self.storage.as_ref().is_some_and(|s| s.store().is_some())
    }
}

/// What the `[leds]` editor uses: the editor, the LEDs, and the `[leds]` they were opened with.
#[derive(Clone)]
struct LedsEditor {
    ed: Editor,
    leds: Arc<Leds>,
    running: LedsConfig,
}

impl FromRef<Arc<Web>> for LedsEditor {
    fn from_ref(web: &Arc<Web>) -> Self {
        Self {
            ed: Editor::from_ref(web),
            leds: web.state.leds.clone(),
            running: web.state.running_leds_config().clone(),
        }
    }
}
use super::secrets::{mask_endpoint, redact_text, unmask_endpoint};

pub fn routes(r: Router<Arc<Web>>) -> Router<Arc<Web>> {
    use axum::routing::{get, put};
    r.route(
        "/api/config/remote_write",
        get(get_remote_write).post(add_endpoint),
    )
    .route(
        "/api/config/remote_write/{name}",
        put(replace_endpoint).delete(delete_endpoint),
    )
    .route("/api/config/store", get(get_store).put(put_store))
    .route("/api/config/leds", get(get_leds).put(put_leds))
}

/// `?dry_run=true`: validate only, save nothing (the page checks fields as they are typed).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaveQuery {
    #[serde(default)]
    dry_run: bool,
}

type Q = Result<Query<SaveQuery>, axum::extract::rejection::QueryRejection>;

fn dry_run(q: Q) -> ApiResult<bool> {
    q.map(|Query(q)| q.dry_run)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))
}

/// The file as it is now: its text, revision, and its parsed config when it is valid.
struct FileNow {
    text: String,
    revision: String,
    path: String,
    writable: bool,
    parsed: Result<Config, Vec<vantage_core::ConfigError>>,
}

fn file_now(ed: &Editor) -> ApiResult<FileNow> {
    let loc = location(ed);
    let text = read_text(&loc)?;
    let parsed = crate::config::parse(&text, &loc.display()).map_err(|e| e.errors);
    Ok(FileNow {
        revision: revision(&text),
        path: loc.display(),
        writable: loc.path.is_some(),
        text,
        parsed,
    })
}

fn file_json(f: &FileNow) -> Value {
    json!({
        "path": f.path,
        "writable": f.writable,
        "revision": f.revision,
        "file_errors": f.parsed.as_ref().err().cloned().unwrap_or_default()
            .iter()
            .map(|e| json!({"line": e.line, "field": e.field, "message": redact_text(&e.message)}))
            .collect::<Vec<_>>(),
    })
}

fn human(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

fn size(bytes: u64) -> Value {
    for (unit, shift) in [("TiB", 40), ("GiB", 30), ("MiB", 20)] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return json!(format!("{}{unit}", bytes >> shift));
        }
    }
    json!(bytes)
}

/// `[store]` in the file's own syntax, for showing defaults and what runs.
fn store_as_written(c: &StoreConfig) -> Value {
    json!({
        "backend": c.backend,
        "max_size": size(c.max_bytes),
        "max_age": human(c.max_age),
        "commit_interval": human(c.commit_interval),
        "commit_samples": c.commit_samples,
        "max_pending": c.max_pending,
    })
}

fn leds_as_written(c: &LedsConfig) -> Value {
    json!({
        "backend": c.backend.as_str(),
        "sysfs_root": c.sysfs_root,
        "identify_timeout": human(c.identify_timeout),
        "stale_after": human(c.stale_after),
        "led": c.leds.iter().map(|l| json!({
            "role": l.role, "name": l.name, "pin": l.pin, "active_low": l.active_low,
        })).collect::<Vec<_>>(),
    })
}

/// What a save means for the running device.
fn applied(restart_required: bool, what: &str) -> Value {
    json!({
        "restart_required": restart_required,
        "message": if restart_required {
            format!("saved; {what} takes effect when the daemon restarts (systemctl restart vantage)")
        } else {
            format!("saved and applied; {what} uses it now")
        },
    })
}

fn merge(mut a: Value, b: Value) -> Value {
    if let (Some(a), Value::Object(b)) = (a.as_object_mut(), b) {
        a.extend(b);
    }
    a
}

// ---- [[remote_write]] ----

async fn get_remote_write(State(s): State<StorageEditor>) -> ApiResult<Json<Value>> {
    let f = file_now(&s.ed)?;
    // A file that is not TOML shows no endpoints; `file_errors` says why.
    let raw = raw_items(&f.text, &REMOTE_WRITE).unwrap_or_default();
    let running = s.ed.configs.in_effect();
    let mut shipping = s
        .storage
        .as_ref()
        .map_or(Value::Null, |s| s.status_json()["remote_write"].take());
    redact_endpoint_errors(&mut shipping);
    let states = shipping["endpoints"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let store_open = s.store_open();
    let endpoints: Vec<Value> = raw
        .into_iter()
        .map(|r| {
            let name = REMOTE_WRITE.name_of_json(&r).unwrap_or_default();
            let state = states.iter().find(|s| s["name"] == name.as_str()).cloned();
            json!({
                "name": name,
                "raw": mask_endpoint(r),
                "running": running.remote_write().iter().any(|e| e.name == name),
                "state": state,
            })
        })
        .collect();
    Ok(Json(merge(
        file_json(&f),
        json!({
            "endpoints": endpoints,
            // Endpoints ship the store: without one, nothing is sent.
            "store_open": store_open,
            "defaults": {
                "timeout": human(rw::REMOTE_WRITE_TIMEOUT),
                "min_backoff": human(rw::REMOTE_WRITE_MIN_BACKOFF),
                "max_backoff": human(rw::REMOTE_WRITE_MAX_BACKOFF),
                "max_samples_per_send": rw::REMOTE_WRITE_SAMPLES_PER_SEND,
                "max_samples_per_second": rw::REMOTE_WRITE_SAMPLES_PER_SECOND,
                "scrape_gap": human(rw::REMOTE_WRITE_SCRAPE_GAP),
            },
        }),
    )))
}

const ENDPOINT: &str = "remote_write endpoint";

/// The endpoint's secrets are taken from the file as it is under the save lock, so a masked
/// value always stands for the secret of the endpoint being replaced.
fn endpoint_edit(
    name: Option<&str>,
    body: &Value,
    text: &str,
    file: &str,
) -> Result<String, EditError> {
    let mut body = body.clone();
    let old = match name {
        Some(n) => Some(
            raw_items(text, &REMOTE_WRITE)
                .map_err(EditError::Document)?
                .into_iter()
                .find(|r| REMOTE_WRITE.name_of_json(r).as_deref() == Some(n))
                .ok_or_else(|| EditError::NotFound(n.to_string()))?,
        ),
        None => None,
    };
    if body.is_object() {
        unmask_endpoint(&mut body, old.as_ref()).map_err(EditError::Invalid)?;
    }
    let edit = match name {
        Some(n) => Edit::Replace(n, &body),
        None => Edit::Add(&body),
    };
    apply_list_edit(text, file, &REMOTE_WRITE, edit)
}

fn shipping_note(s: &StorageEditor) -> Value {
    if s.store_open() {
        applied(false, "shipping")
    } else {
        json!({
            "restart_required": false,
            "message": "saved; the sample store is not open (see the log), so nothing is shipped",
        })
    }
}

async fn add_endpoint(
    State(s): State<StorageEditor>,
    q: Q,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> ApiResult {
    let dry = dry_run(q)?;
    check_files(&s.ed, &body, ENDPOINT).await?;
    let out = save_with(&s.ed, &headers, dry, ENDPOINT, |text, file| {
        endpoint_edit(None, &body, text, file)
    })
    .await?;
    if dry {
        return Ok(Json(out).into_response());
    }
    Ok((StatusCode::CREATED, Json(merge(out, shipping_note(&s)))).into_response())
}

async fn replace_endpoint(
    State(s): State<StorageEditor>,
    Path(name): Path<String>,
    q: Q,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Value>> {
    let dry = dry_run(q)?;
    check_files(&s.ed, &body, ENDPOINT).await?;
    let out = save_with(&s.ed, &headers, dry, ENDPOINT, |text, file| {
        endpoint_edit(Some(&name), &body, text, file)
    })
    .await?;
    Ok(Json(if dry {
        out
    } else {
        merge(out, shipping_note(&s))
    }))
}

async fn delete_endpoint(
    State(ed): State<Editor>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    let out = save_with(&ed, &headers, false, ENDPOINT, |text, file| {
        apply_list_edit(text, file, &REMOTE_WRITE, Edit::Delete(&name))
    })
    .await?;
    Ok(Json(merge(out, applied(false, "shipping"))))
}

// ---- [store] ----

fn store_restart(storage: Option<&Arc<Storage>>, file: Option<&StoreConfig>) -> bool {
    match (storage, file) {
        (Some(s), Some(f)) => s.running_store_config() != f,
        // Nothing runs yet (or the file is broken): whatever is saved needs a start.
        _ => true,
    }
}

fn store_backends() -> Vec<&'static str> {
    [
        vantage_store::BackendKind::Fjall,
        vantage_store::BackendKind::Sled,
    ]
    .into_iter()
    .filter(|b| b.available())
    .map(|b| b.as_str())
    .collect()
}

async fn get_store(State(s): State<StorageEditor>) -> ApiResult<Json<Value>> {
    let f = file_now(&s.ed)?;
    let raw = raw_section(&f.text, "store").unwrap_or_else(|_| json!({}));
    let file_cfg = f.parsed.as_ref().ok().map(|c| c.store());
    let storage = s.storage.as_ref();
    let stats = storage.and_then(|s| s.store()).map(|st| {
        let st = st.stats();
        json!({
            "backend": st.backend,
            "samples": st.samples,
            "disk_bytes": st.disk_bytes,
            "oldest": st.oldest_ms.map(|m| m as f64 / 1000.0),
            "healthy": st.healthy(),
            "error": st.error,
            "dropped": st.dropped_total(),
        })
    });
    Ok(Json(merge(
        file_json(&f),
        json!({
            "raw": raw,
            "file": file_cfg.map(store_as_written),
            "running": storage.map(|s| store_as_written(s.running_store_config())),
            "restart_required": file_cfg.is_some() && store_restart(storage, file_cfg),
            "defaults": store_as_written(&StoreConfig::default()),
            "stats": stats,
            "limits": {
                "max_size": format!("{} MiB to {} TiB", STORE_MIN_BYTES >> 20, STORE_MAX_MAX_BYTES >> 40),
                // The engines this build has (sled is a build feature).
                "backends": store_backends(),
            },
        }),
    )))
}

async fn put_store(
    State(s): State<StorageEditor>,
    q: Q,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Value>> {
    put_section(&s.ed, q, &headers, &body, "store", STORE_ORDER, || {
        store_restart(s.storage.as_ref(), Some(s.ed.configs.own().store()))
    })
    .await
}

/// Saves an edit of a whole `[section]` (or checks it, on a dry run) and says whether it
/// waits for a restart, as `restart_required()` tells once the file is saved and reloaded.
async fn put_section(
    ed: &Editor,
    q: Q,
    headers: &HeaderMap,
    body: &Value,
    section: &str,
    order: &[&str],
    restart_required: impl FnOnce() -> bool,
) -> ApiResult<Json<Value>> {
    let dry = dry_run(q)?;
    let what = format!("[{section}] section");
    check_files(ed, body, &what).await?;
    let out = save_with(ed, headers, dry, &what, |text, file| {
        apply_section_edit(text, file, section, order, body)
    })
    .await?;
    if dry {
        return Ok(Json(out));
    }
    let restart = restart_required();
    Ok(Json(merge(out, applied(restart, &format!("the {what}")))))
}

// ---- [leds] ----

const LED_BACKENDS: [LedBackendKind; 4] = [
    LedBackendKind::None,
    LedBackendKind::Sysfs,
    LedBackendKind::Gpio,
    LedBackendKind::Log,
];

async fn get_leds(State(l): State<LedsEditor>) -> ApiResult<Json<Value>> {
    let f = file_now(&l.ed)?;
    let raw = raw_section(&f.text, "leds").unwrap_or_else(|_| json!({}));
    let file_cfg = f.parsed.as_ref().ok().map(|c| c.leds());
    let running = &l.running;
    Ok(Json(merge(
        file_json(&f),
        json!({
            "raw": raw,
            "file": file_cfg.map(leds_as_written),
            "running": leds_as_written(running),
            "restart_required": file_cfg.is_some_and(|c| c != running),
            "defaults": leds_as_written(&LedsConfig::default()),
            "state": l.leds.snapshot(),
            "roles": LedRole::ALL.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
            "backends": LED_BACKENDS.map(LedBackendKind::as_str),
        }),
    )))
}

async fn put_leds(
    State(l): State<LedsEditor>,
    q: Q,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Value>> {
    put_section(&l.ed, q, &headers, &body, "leds", LEDS_ORDER, || {
        l.ed.configs.own().leds() != &l.running
    })
    .await
}
