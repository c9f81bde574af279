//! `POST /api/targets/{name}/run?kind=ping|trace`: "Run now" on the target page. A ping burst
//! or a few traces with the target's own options, answered as server-sent events while the
//! answers arrive, like ping or mtr in a terminal (docs/API.md lists the events).
//!
//! Bounded: [`RUN_PINGS`] echo requests or [`RUN_TRACES`] traces, one run per target at a time,
//! each run one of the daemon's on-demand rounds (shared with `/probe` and "Test now", `429`
//! when all are taken), [`RUN_LIMIT`] in all; the run stops when the client goes away.

use std::collections::HashSet;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use vantage_core::{
    LockExt, Measurement, PingOptions, Probe, ProbeKind, ProbeRequest, Progress, Sample, Target,
    TraceOptions, TraceReport,
};

use super::Web;
use super::config_file::FieldError;
use super::error::{ApiError, ApiResult};

/// Echo requests of a ping run.
pub const RUN_PINGS: u32 = 20;
/// Traces of a trace run, [`TRACE_GAP`] apart (per-hop loss and spread need a few).
pub const RUN_TRACES: u32 = 5;
const TRACE_GAP: Duration = Duration::from_secs(1);
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
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn kind_of(
    q: Result<Query<RunQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<ProbeKind> {
    let Query(q) = q.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    match q.kind.as_deref().map(str::parse::<ProbeKind>) {
        Some(Ok(k @ (ProbeKind::PING | ProbeKind::TRACE))) => Ok(k),
        other => Err(ApiError::fields(
            StatusCode::BAD_REQUEST,
            "bad query",
            vec![FieldError::new(
                "kind",
                match (other, q.kind) {
                    (None, _) => "kind is missing: ping or trace".to_string(),
                    (_, k) => format!(
                        "kind {:?}: only ping and trace runs stream",
                        k.unwrap_or_default()
                    ),
                },
            )],
        )),
    }
}

pub async fn run_now(
    State(web): State<Arc<Web>>,
    Path(name): Path<String>,
    q: Result<Query<RunQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let kind = kind_of(q)?;
    let cfg = web.state.config();
    let target = super::diagnostics::target_with_probe(&cfg, &name, kind)?;
    let Some(prober) = web.state.runner.probe(kind) else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the {kind} probe is not available in this version"),
        ));
    };
    let Some(slot) = web.runs.claim(&name) else {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("a run of {name:?} is already going; wait for it to end"),
        ));
    };
    let Ok(permit) = web.state.probe_permits.clone().try_acquire_owned() else {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too many probes running on demand (/probe, Test now, Run now); try again shortly",
        ));
    };
    let target = target.clone();
    let limit = *web.runs.limit.lock_or_recover();
    let (tx, rx) = mpsc::channel(QUEUE);
    let task = tokio::spawn(async move {
        let out = Out(tx);
        // Dropped before `out`: the stream ends only after the run gave its place back.
        let _held = (slot, permit);
        let run = async {
            match kind {
                ProbeKind::TRACE => trace(&*prober, target, &out).await,
                _ => ping(&*prober, target, &out).await,
            }
        };
        if tokio::time::timeout(limit, run).await.is_err() {
            let limit = limit.as_secs_f64();
            out.send(json!({"type": "summary", "kind": kind, "stopped": true,
                "error": format!("stopped at the {limit} s limit")}))
                .await;
        }
    });
    let stream = RunStream { rx, task };
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response())
}

/// Runs one round of `target`, sending each answer as an event (`cycle`: which trace); the
/// round's sample, or `None` when the client went away.
async fn round(prober: &dyn Probe, target: Arc<Target>, out: &Out, cycle: u32) -> Option<Sample> {
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
            Some(p) = rx.recv() => if !out.send(progress_json(&p, cycle)).await { return None },
            s = &mut run => break s,
        }
    };
    while let Ok(p) = rx.try_recv() {
        if !out.send(progress_json(&p, cycle)).await {
            return None;
        }
    }
    Some(sample)
}

fn progress_json(p: &Progress, cycle: u32) -> Value {
    match p {
        Progress::Echo { index, rtt } => json!({
            "type": "echo",
            "seq": index + 1,
            "rtt_ms": rtt.map(ms),
        }),
        Progress::Hop {
            ttl,
            flow,
            from,
            rtt,
            destination,
        } => json!({
            "type": "hop",
            "cycle": cycle,
            "ttl": ttl,
            "flow": flow,
            "address": from,
            "rtt_ms": ms(*rtt),
            "destination": destination,
        }),
    }
}

/// A burst of [`RUN_PINGS`] echo requests with the target's other ping options.
async fn ping(prober: &dyn Probe, mut target: Target, out: &Out) {
    let options = PingOptions {
        packets: RUN_PINGS,
        ..target.options_or_default()
    };
    target.set_options(ProbeKind::PING, Arc::new(options));
    let start = json!({"type": "start", "kind": "ping", "target": target.name,
        "host": target.host.to_string(), "count": RUN_PINGS});
    if !out.send(start).await {
        return;
    }
    let Some(s) = round(prober, Arc::new(target), out, 1).await else {
        return;
    };
    let mut summary = json!({"type": "summary", "kind": "ping", "success": s.success,
        "error": s.error.as_ref().map(ToString::to_string), "sent": 0, "received": 0});
    if let Some(p) = s.measurement.ping() {
        summary["address"] = json!(p.address);
        summary["sent"] = json!(p.sent);
        summary["received"] = json!(p.received);
        summary["duplicates"] = json!(p.duplicates);
        summary["loss"] = json!(p.loss_ratio());
        summary["min_ms"] = json!(p.min().map(ms));
        summary["avg_ms"] = json!(p.mean().map(ms));
        summary["max_ms"] = json!(p.max().map(ms));
    }
    out.send(summary).await;
}

/// The hops of one trace, as the report counts them (the page's table takes loss from these).
fn cycle_json(cycle: u32, r: &TraceReport) -> Value {
    json!({
        "type": "cycle",
        "cycle": cycle,
        "reached": r.reached,
        "hops": r.hops.iter().map(|h| json!({
            "ttl": h.ttl,
            "sent": h.sent,
            "received": h.received,
            "addresses": h.responders.iter().map(|a| a.address).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

/// [`RUN_TRACES`] traces with the target's trace options. Their path state is their own, so
/// a run never shows up as a path change of the target's scheduled traces.
async fn trace(prober: &dyn Probe, mut target: Target, out: &Out) {
    let start = json!({"type": "start", "kind": "trace", "target": target.name,
        "host": target.host.to_string(), "count": RUN_TRACES,
        "max_hops": target.options_or_default::<TraceOptions>().max_hops});
    if !out.send(start).await {
        return;
    }
    target.name = format!("run now: {}", target.name);
    let target = Arc::new(target);
    let (mut done, mut last) = (0, None);
    for cycle in 1..=RUN_TRACES {
        if cycle > 1 {
            tokio::time::sleep(TRACE_GAP).await;
        }
        let Some(s) = round(prober, target.clone(), out, cycle).await else {
            return;
        };
        done = cycle;
        if let Some(r) = s.measurement.trace()
            && !out.send(cycle_json(cycle, r)).await
        {
            return;
        }
        let failed = matches!(s.measurement, Measurement::None);
        last = Some(s);
        if failed {
            // Could not trace at all (no socket, no address): another try says the same.
            break;
        }
    }
    let s = last.as_ref();
    let report = s.and_then(|s| s.measurement.trace());
    out.send(json!({"type": "summary", "kind": "trace", "cycles": done,
        "success": s.is_some_and(|s| s.success),
        "error": s.and_then(|s| s.error.as_ref()).map(ToString::to_string),
        "reached": report.is_some_and(|r| r.reached),
        "hop_count": report.map(TraceReport::hop_count)}))
        .await;
}
