//! `POST /api/targets/{name}/run?kind=KIND`: "Run now" on the target page. A few rounds of a
//! kind that runs live (a ping burst, a few traces) with the target's own options, answered as
//! server-sent events while the answers arrive, like ping or mtr in a terminal. What a run of
//! a kind does and what its events hold is the kind's module's ([`LiveRun`]); docs/API.md lists
//! the events.
//!
//! Bounded: the kind's rounds, one run per target at a time, each run one of the daemon's
//! on-demand rounds (shared with `/probe` and "Test now", `429` when all are taken),
//! [`RUN_LIMIT`] in all; the run stops when the client goes away.

use std::collections::HashSet;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::{FromRef, Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use vantage_core::live::{Fields, LiveEvent, LiveRows};
use vantage_core::{
    LiveRun, LockExt, Measurement, Probe, ProbeKind, ProbeRequest, Sample, Target, in_words,
    kind_names,
};

use super::Web;
use super::config_file::FieldError;
use super::error::{ApiError, ApiResult};
use crate::state::Probing;

/// A run stops after this, whatever the target's options.
pub const RUN_LIMIT: Duration = Duration::from_secs(60);
/// A comment line this often keeps proxies from closing a quiet stream, and notices a client
/// that went away while a trace waits for its timeouts.
const KEEP_ALIVE: Duration = Duration::from_secs(5);
/// Events waiting for a slow client (a whole trace's answers fit); the run waits when this
/// many are queued.
const QUEUE: usize = 256;

/// The targets with a run going, and how long a run may take.
#[derive(Debug)]
pub struct Runs {
    active: Arc<Mutex<HashSet<String>>>,
    /// [`RUN_LIMIT`]; tests shorten it.
    limit: Mutex<Duration>,
}

impl Default for Runs {
    fn default() -> Self {
        Self {
            active: Arc::default(),
            limit: Mutex::new(RUN_LIMIT),
        }
    }
}

/// A target's run, given back when dropped.
#[derive(Debug)]
struct RunSlot(Arc<Mutex<HashSet<String>>>, String);

impl Runs {
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.active.lock_or_recover().is_empty()
    }

    #[cfg(test)]
    pub fn set_limit(&self, limit: Duration) {
        *self.limit.lock_or_recover() = limit;
    }

    fn claim(&self, name: &str) -> Option<RunSlot> {
        let mut set = self.active.lock_or_recover();
        set.insert(name.to_string())
            .then(|| RunSlot(self.active.clone(), name.to_string()))
    }
}

impl Drop for RunSlot {
    fn drop(&mut self) {
        self.0.lock_or_recover().remove(&self.1);
    }
}

#[derive(Debug, Deserialize)]
pub struct RunQuery {
    kind: Option<String>,
}

/// The events of a run; the run stops when this is dropped (the client went away).
struct RunStream {
    rx: mpsc::Receiver<Event>,
    task: JoinHandle<()>,
}

impl Drop for RunStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl futures_core::Stream for RunStream {
    type Item = Result<Event, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx).map(|e| e.map(Ok))
    }
}

/// Where a run's events go; `false` once the client is gone.
struct Out(mpsc::Sender<Event>);

impl Out {
    async fn send(&self, v: Value) -> bool {
        let name = v["type"].as_str().unwrap_or("message").to_string();
        let ev = Event::default().event(name).data(v.to_string());
        self.0.send(ev).await.is_ok()
    }

    async fn send_all(&self, events: Vec<LiveEvent>) -> bool {
        for e in events {
            if !self.send(e.to_json()).await {
                return false;
            }
        }
        true
    }
}

/// The kind to run and how it runs live: one whose module has a [`LiveRun`].
fn kind_of(
    q: Result<Query<RunQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<(ProbeKind, &'static dyn LiveRun)> {
    let Query(q) = q.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let kind = q.kind.as_deref().map(str::parse::<ProbeKind>);
    if let Some(Ok(k)) = kind
        && let Some(live) = k.module().and_then(|m| m.live())
    {
        return Ok((k, live));
    }
    let live = kind_names(|m| m.live().is_some());
    let msg = match kind {
        None => format!("kind is missing: {}", in_words(&live, "or")),
        Some(_) => format!(
            "kind {:?}: only {} runs stream",
            q.kind.unwrap_or_default(),
            in_words(&live, "and")
        ),
    };
    Err(ApiError::fields(
        StatusCode::BAD_REQUEST,
        "bad query",
        vec![FieldError::new("kind", msg)],
    ))
}

/// What "Run now" uses: a round on demand's part of the state, and the runs going.
#[derive(Clone)]
pub struct RunNow {
    probing: Probing,
    runs: Arc<Runs>,
}

impl FromRef<Arc<Web>> for RunNow {
    fn from_ref(web: &Arc<Web>) -> Self {
        Self {
            probing: Probing::from_ref(web),
            runs: web.runs.clone(),
        }
    }
}

pub async fn run_now(
    State(RunNow { probing, runs }): State<RunNow>,
    Path(name): Path<String>,
    q: Result<Query<RunQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let (kind, live) = kind_of(q)?;
    let cfg = probing.configs.in_effect();
    let target = super::diagnostics::target_with_probe(&cfg, &name, kind)?;
    let Some(prober) = probing.runner.probe(kind) else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the {kind} probe is not available in this version"),
        ));
    };
    let Some(slot) = runs.claim(&name) else {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("a run of {name:?} is already going; wait for it to end"),
        ));
    };
    let Ok(permit) = probing.probe_permits.try_acquire_owned() else {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too many probes running on demand (/probe, Test now, Run now); try again shortly",
        ));
    };
    let target = target.clone();
    let limit = *runs.limit.lock_or_recover();
    let (tx, rx) = mpsc::channel(QUEUE);
    let task = tokio::spawn(async move {
        let out = Out(tx);
        // Dropped before `out`: the stream ends only after the run gave its place back.
        let _held = (slot, permit);
        let run = run(live, kind, &*prober, target, &out);
        if tokio::time::timeout(limit, run).await.is_err() {
            let limit = limit.as_secs_f64();
            let error = format!("stopped at the {limit} s limit");
            out.send(json!({"type": "summary", "kind": kind, "stopped": true,
                "error": error, "text": error}))
                .await;
        }
    });
    let stream = RunStream { rx, task };
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response())
}

/// The run: a start event with the table the run fills, the kind's rounds (each answer's
/// rows as it arrives, and the kind's events after each round), then a summary.
async fn run(
    live: &dyn LiveRun,
    kind: ProbeKind,
    prober: &dyn Probe,
    mut target: Target,
    out: &Out,
) {
    let mut start = event("start", kind);
    start.insert("target".into(), json!(target.name));
    start.insert("host".into(), json!(target.host.to_string()));
    start.insert("table".into(), json!(live.table()));
    live.start(&target, &mut start);
    if !out.send(Value::Object(start)).await {
        return;
    }
    live.target(&mut target);
    let target = Arc::new(target);
    let mut rows = live.rows();
    let (mut done, mut last) = (0, None);
    for n in 1..=live.rounds() {
        if n > 1 {
            tokio::time::sleep(live.gap()).await;
        }
        let Some(s) = round(&mut *rows, prober, target.clone(), out, n).await else {
            return;
        };
        done = n;
        if !out.send_all(rows.round(n, &s)).await {
            return;
        }
        let failed = matches!(s.measurement, Measurement::None);
        last = Some(s);
        if failed {
            // Could not probe at all (no socket, no address): another try says the same.
            break;
        }
    }
    let mut summary = event("summary", kind);
    live.summary(last.as_ref(), done, &mut summary);
    out.send(Value::Object(summary)).await;
}

/// An event's `type` and `kind`.
fn event(kind_of_event: &str, kind: ProbeKind) -> Fields {
    let mut e = Fields::new();
    e.insert("type".into(), json!(kind_of_event));
    e.insert("kind".into(), json!(kind));
    e
}

/// Runs round `n` of `target`, sending the events of each answer as it arrives; the round's
/// sample, or `None` when the client went away.
async fn round(
    rows: &mut dyn LiveRows,
    prober: &dyn Probe,
    target: Arc<Target>,
    out: &Out,
    n: u32,
) -> Option<Sample> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut run = prober.run(ProbeRequest {
        target,
        deadline: None,
        guard: None,
        progress: Some(tx),
    });
    let sample = loop {
        tokio::select! {
            biased;
            Some(p) = rx.recv() => if !out.send_all(rows.answer(&p, n)).await { return None },
            s = &mut run => break s,
        }
    };
    while let Ok(p) = rx.try_recv() {
        if !out.send_all(rows.answer(&p, n)).await {
            return None;
        }
    }
    Some(sample)
}
