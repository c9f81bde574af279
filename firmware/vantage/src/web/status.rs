//! `GET /api/status`: the device's facts and one page of its targets, each with its latest
//! round and last hour.
//!
//! A page, not every target: the answer's size and the work behind it (each target's last hour
//! from the store) must not grow with the number of targets, or a device probing thousands of
//! them spends its memory on the status view. Counts over all targets stay in every answer.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::Json;
use axum::extract::{FromRef, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use vantage_core::{Config, Host, ProbeKind, Target};
use vantage_leds::Leds;

use super::Web;
use super::config_file::{ConfigLocation, FieldError};
use super::device;
use super::error::{ApiError, ApiResult};
use super::history::{BUCKET, BUCKETS, HistorySource, Latest, Point};
use super::saving::redact_endpoint_errors;
use crate::config_source::ConfigSource;
use crate::fleet::provisioning;
use crate::state::Configs;
use crate::storage::Storage;

/// Targets in a page when the query names no `limit`.
pub const PAGE_DEFAULT: usize = 100;
/// The largest `limit` a query may ask for.
pub const PAGE_MAX: usize = 500;
// Two of the largest pages fit in the history's cache of stored buckets.
const _: () = assert!(2 * PAGE_MAX <= super::history::CACHED_PROBES);
/// The longest filter text (`q`), in characters.
pub const FILTER_MAX: usize = 128;

pub(super) fn leds_json(leds: &Leds) -> Value {
    let snap = leds.snapshot();
    json!({ "configured": !snap.leds.is_empty(), "state": snap })
}

/// Which targets a page is cut from.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StatusQuery {
    #[serde(default)]
    offset: usize,
    limit: Option<usize>,
    /// Part of a target's name, host or one of its label values, any case.
    q: Option<String>,
    /// `answering`, `silent` (no probe's latest round succeeded) or `all`.
    state: Option<String>,
    /// Exactly this target (the target page).
    target: Option<String>,
}

/// A query checked: every field within its range.
#[derive(Debug)]
struct Selection {
    offset: usize,
    limit: usize,
    filter: Option<String>,
    state: StateFilter,
    target: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum StateFilter {
    All,
    Answering,
    Silent,
}

impl StatusQuery {
    fn check(self) -> Result<Selection, FieldError> {
        let limit = self.limit.unwrap_or(PAGE_DEFAULT);
        if !(1..=PAGE_MAX).contains(&limit) {
            return Err(FieldError::new(
                "limit",
                format!("must be between 1 and {PAGE_MAX}, not {limit}"),
            ));
        }
        let filter = self.q.filter(|q| !q.trim().is_empty());
        if let Some(q) = &filter
            && q.chars().count() > FILTER_MAX
        {
            return Err(FieldError::new(
                "q",
                format!("at most {FILTER_MAX} characters"),
            ));
        }
        let state = match self.state.as_deref() {
            None | Some("all") => StateFilter::All,
            Some("answering") => StateFilter::Answering,
            Some("silent") => StateFilter::Silent,
            Some(other) => {
                return Err(FieldError::new(
                    "state",
                    format!("one of all, answering, silent; not {other:?}"),
                ));
            }
        };
        Ok(Selection {
            offset: self.offset,
            limit,
            filter: filter.map(|q| q.trim().to_lowercase()),
            state,
            target: self.target,
        })
    }
}

/// One probe's card: the latest round and its last hour, one point a minute.
#[derive(Serialize)]
struct ProbeStatus {
    probe: ProbeKind,
    /// What `latest.rtt_ms` and the points' time are: `RTT`, `lookup`, ...
    figure: Option<&'static str>,
    interval_seconds: f64,
    latest: Option<Latest>,
    history: Vec<Point>,
}

#[derive(Serialize)]
struct TargetStatus<'a> {
    name: &'a str,
    host: &'a Host,
    labels: &'a BTreeMap<String, String>,
    probes: Vec<ProbeStatus>,
}

/// Where the page sits among the targets that matched.
#[derive(Serialize)]
struct Page {
    offset: usize,
    limit: usize,
    /// Targets that match the query, over all pages.
    matched: usize,
}

/// Counts over every target of the config, whatever the query.
#[derive(Serialize)]
struct Counts {
    targets: usize,
    /// Targets whose latest round of some probe succeeded.
    answering: usize,
}

/// The status view's answer. Typed rather than a `Value` tree: the points are most of it, and
/// a tree of them costs many times the answer's size.
#[derive(Serialize)]
struct Status<'a> {
    device: Value,
    config: Value,
    store: Value,
    remote_write: Value,
    leds: Value,
    provisioning: crate::fleet::provisioning::Status,
    history_minutes: u64,
    counts: Counts,
    page: Page,
    targets: Vec<TargetStatus<'a>>,
}

/// What the status view reads: the config in effect and where it comes from, the charts'
/// history, and the device's facts.
#[derive(Clone)]
pub(super) struct StatusView {
    configs: Configs,
    history: Arc<dyn HistorySource>,
    source: ConfigSource,
    storage: Option<Arc<Storage>>,
    provisioning: Arc<provisioning::State>,
    leds: Arc<Leds>,
    started: Instant,
}

impl FromRef<Arc<Web>> for StatusView {
    fn from_ref(web: &Arc<Web>) -> Self {
        let s = &web.state;
        Self {
            configs: s.configs.clone(),
            history: web.history.clone(),
            source: s.source.clone(),
            storage: s.storage.clone(),
            provisioning: s.provisioning.clone(),
            leds: s.leds.clone(),
            started: s.started,
        }
    }
}

pub(super) async fn status(
    State(v): State<StatusView>,
    q: Result<Query<StatusQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = q.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let sel = q
        .check()
        .map_err(|e| ApiError::fields(StatusCode::BAD_REQUEST, "bad query", vec![e]))?;
    // The history may come from the store on disk: off the async workers.
    tokio::task::spawn_blocking(move || {
        let cfg = v.configs.in_effect();
        Json(status_of(&v, &cfg, &sel)).into_response()
    })
    .await
    .map_err(|e| ApiError::internal("status failed", e))
}

/// Whether a target's latest round of some probe succeeded.
fn answering(v: &StatusView, t: &Target) -> bool {
    t.probes
        .iter()
        .any(|(k, _)| v.history.succeeded(&t.name, *k) == Some(true))
}

/// Whether `t` matches the name or text filter; the answering state is checked apart, since
/// it costs a look at the history.
fn matches_text(t: &Target, sel: &Selection) -> bool {
    if let Some(name) = &sel.target {
        return t.name == *name;
    }
    let Some(q) = &sel.filter else {
        return true;
    };
    let has = |s: &str| s.to_lowercase().contains(q.as_str());
    has(&t.name) || has(&t.host.to_string()) || t.labels.values().any(|v| has(v))
}

/// The page's targets, with the counts over all of them.
fn select<'a>(
    v: &StatusView,
    cfg: &'a Config,
    sel: &Selection,
) -> (Vec<&'a Target>, Counts, usize) {
    let mut counts = Counts {
        targets: cfg.targets.len(),
        answering: 0,
    };
    let mut matched = 0;
    let mut page = Vec::with_capacity(sel.limit.min(cfg.targets.len()));
    for t in &cfg.targets {
        let up = answering(v, t);
        counts.answering += usize::from(up);
        let state_ok = match sel.state {
            StateFilter::All => true,
            StateFilter::Answering => up,
            StateFilter::Silent => !up,
        };
        if !state_ok || !matches_text(t, sel) {
            continue;
        }
        if matched >= sel.offset && page.len() < sel.limit {
            page.push(&**t);
        }
        matched += 1;
    }
    (page, counts, matched)
}

fn status_of<'a>(v: &StatusView, cfg: &'a Config, sel: &Selection) -> Status<'a> {
    v.history.retain(&|t| cfg.target(t).is_some());
    let (page, counts, matched) = select(v, cfg, sel);
    // Every chart of the page at once: the store is read once per refresh, not once a target.
    let keys: Vec<(&str, ProbeKind)> = page
        .iter()
        .flat_map(|t| t.probes.iter().map(|(k, _)| (t.name.as_str(), *k)))
        .collect();
    let since = SystemTime::now() - BUCKET * BUCKETS as u32;
    let mut histories = v.history.series_many(&keys, since).into_iter();
    let targets = page
        .into_iter()
        .map(|t| TargetStatus {
            name: &t.name,
            host: &t.host,
            labels: &t.labels,
            probes: t
                .probes
                .iter()
                .map(|(k, i)| ProbeStatus {
                    probe: *k,
                    figure: k.module().map(|m| m.figure()),
                    interval_seconds: i.as_secs_f64(),
                    latest: v.history.latest(&t.name, *k),
                    // The sparkline draws RTT and loss; the other figures' means are the
                    // target page's.
                    history: histories
                        .next()
                        .unwrap_or_default()
                        .into_iter()
                        .map(|p| Point {
                            values: BTreeMap::new(),
                            ..p
                        })
                        .collect(),
                })
                .collect(),
        })
        .collect();
    Status {
        counts,
        page: Page {
            offset: sel.offset,
            limit: sel.limit,
            matched,
        },
        targets,
        ..device_part(v)
    }
}

/// Everything of the answer but the targets.
fn device_part(v: &StatusView) -> Status<'static> {
    let loc = ConfigLocation::of(&v.source);
    let mut storage = v.storage.as_ref().map_or_else(
        || json!({ "store": { "configured": false }, "remote_write": { "configured": false } }),
        |s| s.status_json(),
    );
    redact_endpoint_errors(&mut storage["remote_write"]);
    Status {
        device: json!({
            "version": env!("CARGO_PKG_VERSION"),
            "hostname": device::hostname(),
            "uptime_seconds": v.started.elapsed().as_secs(),
            "addresses": device::addresses(),
            "time": SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        }),
        config: json!({
            "path": loc.display(),
            "embedded": loc.embedded,
            "default": loc.default,
            "writable": loc.path.is_some(),
        }),
        store: storage["store"].take(),
        remote_write: storage["remote_write"].take(),
        leds: leds_json(&v.leds),
        provisioning: v.provisioning.status(),
        history_minutes: BUCKETS as u64 * BUCKET.as_secs() / 60,
        counts: Counts {
            targets: 0,
            answering: 0,
        },
        page: Page {
            offset: 0,
            limit: 0,
            matched: 0,
        },
        targets: Vec::new(),
    }
}
