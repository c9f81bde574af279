//! The shipping loop: one task per endpoint reads the store from the endpoint's cursor,
//! sends the rounds (all of them, or in `send = "gaps"` mode those no scrape covered), splits
//! a refused request down to the refused samples, and moves the cursor once every sample of a
//! batch is either accepted or refused.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use vantage_core::LockExt;

use tokio::sync::Notify;

use super::bisect::{self, RateLimitedLog};
use super::endpoint::{
    Endpoint, Outcome, SendMode, SetupError, Shared, client, collides_with_scrape, post,
};
use super::live::{LiveSeries, LiveTask};
use super::proto;
use super::request::{build_request, encode_request};
use super::scrapes::{Coverage, ScrapeLog};
use crate::codec::unix_ms;
use crate::store::{Cursor, ReadBatch, Store};

/// At most one log line about refused samples per endpoint this often.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(60);

/// How often an idle shipper looks for new samples, and the scrapes it knows of.
#[derive(Debug, Clone)]
pub struct ShipperOptions {
    pub poll_interval: Duration,
    /// Scrapes of `/metrics`, for endpoints with `send = "gaps"`.
    pub scrapes: Arc<ScrapeLog>,
    /// The daemon's own series, pushed as they stand every `live_interval` to endpoints with
    /// `send = "all"`, which have no scrape to read them from.
    pub live: Option<Arc<dyn LiveSeries>>,
    pub live_interval: Duration,
}

/// How often the daemon's own series are pushed: Prometheus' usual scrape interval.
pub const LIVE_INTERVAL: Duration = Duration::from_secs(15);

impl Default for ShipperOptions {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(1),
            scrapes: Arc::new(ScrapeLog::new()),
            live: None,
            live_interval: LIVE_INTERVAL,
        }
    }
}

/// Figures of one endpoint, for metrics.
#[derive(Debug, Default)]
pub struct EndpointStats {
    pub name: String,
    /// Stored rounds shipped: every series sample of them accepted or refused.
    pub samples_sent: AtomicU64,
    /// Series samples acknowledged.
    pub points_sent: AtomicU64,
    /// Request bodies acknowledged (protobuf, snappy-compressed), in bytes.
    pub bytes_sent: AtomicU64,
    /// Failed requests (network, 5xx, 429, 4xx; the parts of a split request count each).
    pub failures: AtomicU64,
    /// Series samples the endpoint refused one by one (a 4xx other than 429 for a request
    /// of that single sample), or in parts beyond the split budget; not retried.
    pub samples_rejected: AtomicU64,
    /// `send = "gaps"`: single samples refused as a duplicate of what the receiver already
    /// held at that exact millisecond. Its own scrape put a value or a failed scrape's
    /// staleness marker there, which happens when a round's start falls on the scraper's
    /// timestamp; the receiver keeps that point, so this is not a fault of the data.
    pub samples_collided: AtomicU64,
    /// Stored rounds not shipped because scrapes covered them (`send = "gaps"`).
    pub samples_skipped: AtomicU64,
    pub requests: AtomicU64,
    /// Rounds committed to the store and not yet acknowledged.
    pub backlog: AtomicU64,
    /// Ms since the epoch of the oldest round not yet shipped; 0 when none waits.
    pub oldest_unshipped_ms: AtomicI64,
    /// Ms since the epoch of the last 2xx; 0 when none yet.
    pub last_success_ms: AtomicI64,
    /// Whether the last request (or the last idle check) succeeded.
    pub up: AtomicBool,
    pub last_error: Mutex<Option<String>>,
    /// The receiver's reason for the last refused sample, kept after later successes.
    pub last_rejection: Mutex<Option<String>>,
}

/// Runs one task per endpoint on the current Tokio runtime.
#[derive(Clone)]
pub struct Shipper {
    stats: Vec<Arc<EndpointStats>>,
    shared: Arc<Shared>,
    handles: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl std::fmt::Debug for Shipper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shipper")
            .field("endpoints", &self.stats.len())
            .finish()
    }
}

impl Shipper {
    /// Starts shipping to every endpoint. Must be called within a Tokio runtime.
    pub fn start(
        store: Arc<Store>,
        endpoints: Vec<Endpoint>,
        opts: ShipperOptions,
    ) -> Result<Self, SetupError> {
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            notify: Notify::new(),
        });
        let mut stats = Vec::new();
        let mut tasks = Vec::new();
        for ep in endpoints {
            let c = client(&ep)?;
            let st = Arc::new(EndpointStats {
                name: ep.name.clone(),
                ..Default::default()
            });
            if ep.send == SendMode::Gaps {
                opts.scrapes.track(ep.scrape_gap);
            }
            stats.push(st.clone());
            tasks.push((ep, c, st));
        }
        let mut handles = Vec::new();
        if let Some(live) = &opts.live {
            for (ep, c, _) in tasks.iter().filter(|(ep, _, _)| ep.send == SendMode::All) {
                let task = LiveTask {
                    ep: ep.clone(),
                    client: c.clone(),
                    live: live.clone(),
                    interval: opts.live_interval,
                    shared: shared.clone(),
                };
                handles.push(tokio::spawn(task.run()));
            }
        }
        for (ep, c, st) in tasks {
            let task = EndpointTask {
                store: store.clone(),
                ep,
                client: c,
                stats: st,
                shared: shared.clone(),
                opts: opts.clone(),
                refusals: Mutex::default(),
            };
            handles.push(tokio::spawn(task.run()));
        }
        Ok(Self {
            stats,
            shared,
            handles: Arc::new(Mutex::new(handles)),
        })
    }

    pub fn endpoints(&self) -> &[Arc<EndpointStats>] {
        &self.stats
    }

    /// Shipping works: every endpoint's last request succeeded. `None` without endpoints.
    pub fn uplink_up(&self) -> Option<bool> {
        if self.stats.is_empty() {
            return None;
        }
        Some(self.stats.iter().all(|s| s.up.load(Ordering::Relaxed)))
    }

    /// Stops the tasks and waits for them (a request in flight is abandoned; its samples
    /// are sent again next time).
    pub async fn stop(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.notify.notify_waiters();
        let handles = std::mem::take(&mut *self.handles.lock_or_recover());
        for h in handles {
            h.abort();
            let _ = h.await;
        }
    }
}

struct EndpointTask {
    store: Arc<Store>,
    ep: Endpoint,
    client: reqwest::Client,
    stats: Arc<EndpointStats>,
    shared: Arc<Shared>,
    opts: ShipperOptions,
    refusals: Mutex<RateLimitedLog>,
}

/// Catch-up rate limit: a budget of rounds that refills at the configured rate.
struct RateLimit {
    rate: f64,
    budget: f64,
    refilled: Instant,
}

impl RateLimit {
    fn new(per_second: u32) -> Self {
        let rate = f64::from(per_second);
        Self {
            rate,
            budget: rate,
            refilled: Instant::now(),
        }
    }

    /// How long to wait before sending `n` rounds (and takes them from the budget).
    fn take(&mut self, n: usize) -> Option<Duration> {
        if self.rate <= 0.0 {
            return None;
        }
        let now = Instant::now();
        self.budget = (self.budget + now.duration_since(self.refilled).as_secs_f64() * self.rate)
            .min(self.rate);
        self.refilled = now;
        let mut wait = None;
        if self.budget < n as f64 {
            let w = Duration::from_secs_f64((n as f64 - self.budget) / self.rate);
            self.budget = n as f64;
            self.refilled = now + w;
            wait = Some(w);
        }
        self.budget -= n as f64;
        wait
    }
}

/// What the gaps filter left of a batch.
enum Selected {
    /// Rounds to send (possibly none), and the cursor after the decided ones.
    Rounds(ReadBatch),
    /// The first round is still undecided: look again later.
    Wait,
}

impl EndpointTask {
    fn stopping(&self) -> bool {
        self.shared.stop.load(Ordering::SeqCst)
    }

    async fn sleep(&self, d: Duration) {
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = self.shared.notify.notified() => {}
        }
    }

    fn note_backlog(&self, cursor: Cursor, oldest_ms: Option<i64>) {
        self.stats
            .backlog
            .store(self.store.backlog(cursor), Ordering::Relaxed);
        if let Some(ms) = oldest_ms {
            self.stats.oldest_unshipped_ms.store(ms, Ordering::Relaxed);
        }
    }

    async fn read(&self, cursor: Cursor, max: usize) -> Option<(Cursor, ReadBatch)> {
        let store = self.store.clone();
        let read = tokio::task::spawn_blocking(move || {
            let c = store.cursor_at_least(cursor);
            (c, store.read_from(c, max))
        })
        .await;
        match read {
            Ok((from, Ok(b))) => Some((from, b)),
            Ok((_, Err(e))) => {
                tracing::warn!(endpoint = %self.ep.name, "remote_write: cannot read the store: {e}");
                self.sleep(self.opts.poll_interval).await;
                Some((
                    cursor,
                    ReadBatch {
                        samples: Vec::new(),
                        next: cursor,
                    },
                ))
            }
            Err(_) => None,
        }
    }

    async fn run(self) {
        let name = self.ep.name.clone();
        let mut cursor = self.store.cursor(&name);
        let mut limit = RateLimit::new(self.ep.max_samples_per_second);
        while !self.stopping() {
            let max = self.ep.max_samples_per_send.max(1);
            let Some((from, batch)) = self.read(cursor, max).await else {
                return;
            };
            cursor = from;
            let oldest = batch.samples.iter().map(|s| s.timestamp_ms).min();
            self.note_backlog(cursor, Some(oldest.unwrap_or(0)));
            if batch.samples.is_empty() {
                cursor = batch.next;
                self.sleep(self.opts.poll_interval).await;
                continue;
            }
            let batch = match self.ep.send {
                SendMode::All => batch,
                SendMode::Gaps => match self.select_gaps(from, batch).await {
                    Some(Selected::Rounds(b)) => b,
                    Some(Selected::Wait) => {
                        self.sleep(self.opts.poll_interval).await;
                        continue;
                    }
                    None => return,
                },
            };
            let n = batch.samples.len();
            if let Some(wait) = limit.take(n) {
                self.sleep(wait).await;
            }
            if n > 0 {
                let store = self.store.clone();
                let req =
                    build_request(&batch.samples, &move |id| store.series(id), &self.ep.labels);
                if !self.deliver(req, cursor).await {
                    return;
                }
                self.stats
                    .samples_sent
                    .fetch_add(n as u64, Ordering::Relaxed);
            }
            cursor = batch.next;
            self.store.set_cursor(&name, cursor);
            self.note_backlog(cursor, None);
        }
    }

    /// `send = "gaps"`: keeps the rounds no scrape covered, up to the first one still
    /// undecided (the cursor stops there). `None` when the store cannot be read any more.
    async fn select_gaps(&self, from: Cursor, mut batch: ReadBatch) -> Option<Selected> {
        let now = unix_ms(SystemTime::now());
        let log = &self.opts.scrapes;
        let mut keep = Vec::with_capacity(batch.samples.len());
        let mut decided = batch.samples.len();
        for (i, s) in batch.samples.iter().enumerate() {
            match log.decide(self.ep.scrape_gap, s.timestamp_ms, now) {
                Coverage::Covered => {}
                Coverage::Ship => keep.push(i),
                Coverage::Wait => {
                    decided = i;
                    break;
                }
            }
        }
        if decided == 0 {
            return Some(Selected::Wait);
        }
        if decided < batch.samples.len() {
            // The cursor right after the decided rounds.
            let (_, head) = self.read(from, decided).await?;
            if head.samples.len() != decided {
                return Some(Selected::Wait);
            }
            batch.next = head.next;
        }
        let skipped = decided - keep.len();
        self.stats
            .samples_skipped
            .fetch_add(skipped as u64, Ordering::Relaxed);
        let mut samples = std::mem::take(&mut batch.samples);
        let mut k = keep.into_iter().peekable();
        let mut i = 0;
        samples.retain(|_| {
            let hit = k.peek() == Some(&i);
            if hit {
                k.next();
            }
            i += 1;
            hit
        });
        batch.samples = samples;
        Some(Selected::Rounds(batch))
    }

    /// Sends a request; when the receiver refuses it, sends each half, recursively, down to
    /// single samples, within the split budget (`bisect::max_splits`). Every sample ends
    /// accepted or counted as refused. `false` when stopping midway.
    async fn deliver(&self, req: proto::WriteRequest, cursor: Cursor) -> bool {
        let mut splits = bisect::max_splits(bisect::samples_in(&req.timeseries));
        let mut parts = vec![req.timeseries];
        while let Some(part) = parts.pop() {
            let n = bisect::samples_in(&part);
            let req = proto::WriteRequest { timeseries: part };
            let body = encode_request(&req);
            let bytes = body.len() as u64;
            let Some(refused) = self.send_until_answered(body, cursor).await else {
                return false;
            };
            match refused {
                None => {
                    self.stats
                        .points_sent
                        .fetch_add(n as u64, Ordering::Relaxed);
                    self.stats.bytes_sent.fetch_add(bytes, Ordering::Relaxed);
                }
                Some(msg) if n > 1 && splits > 0 => {
                    splits -= 1;
                    tracing::debug!(endpoint = %self.ep.name, samples = n, "remote_write: part refused, splitting: {msg}");
                    let (a, b) = bisect::split(req.timeseries);
                    parts.push(b);
                    parts.push(a);
                }
                Some(msg) => self.refused(&req.timeseries, n, msg, splits == 0 && n > 1),
            }
        }
        true
    }

    /// Counts and reports samples the receiver refused.
    fn refused(&self, part: &[proto::TimeSeries], n: usize, msg: String, whole: bool) {
        if n == 1 && self.ep.send == SendMode::Gaps && collides_with_scrape(&msg) {
            self.stats.samples_collided.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(endpoint = %self.ep.name, "remote_write: a sample falls on a scrape's timestamp: {msg}");
            return;
        }
        self.stats
            .samples_rejected
            .fetch_add(n as u64, Ordering::Relaxed);
        let what = match part.iter().find(|t| !t.samples.is_empty()) {
            Some(t) if n == 1 => describe(t),
            _ => format!("{n} samples (split budget spent)"),
        };
        let why = format!("{msg} [{what}]");
        *self.stats.last_rejection.lock_or_recover() = Some(why.clone());
        *self.stats.last_error.lock_or_recover() = Some(why.clone());
        let due = self
            .refusals
            .lock_or_recover()
            .note(n as u64, Instant::now(), REFUSAL_LOG_EVERY);
        if let Some(total) = due {
            tracing::warn!(
                endpoint = %self.ep.name,
                refused = total,
                whole,
                "remote_write: the endpoint refused samples (dropped; counted in vantage_remote_write_rejected_samples_total; at most one line a minute): {why}"
            );
        }
    }

    /// Sends one body until the receiver answers about the data: `Some(None)` accepted,
    /// `Some(Some(reason))` refused, `None` when stopping. Network errors, 5xx, 429 and
    /// setup refusals (401, 404...) are retried with backoff; `cursor` is where the batch
    /// starts, for the backlog figure meanwhile.
    async fn send_until_answered(&self, body: Vec<u8>, cursor: Cursor) -> Option<Option<String>> {
        let name = &self.ep.name;
        let mut attempt = 0u32;
        loop {
            if self.stopping() {
                return None;
            }
            attempt += 1;
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            let msg = match self.send(body.clone()).await {
                Outcome::Ok => {
                    self.stats
                        .last_success_ms
                        .store(unix_ms(SystemTime::now()), Ordering::Relaxed);
                    if !self.stats.up.swap(true, Ordering::Relaxed) && attempt > 1 {
                        tracing::info!(endpoint = %name, "remote_write: endpoint reachable again; sending the backlog");
                    }
                    *self.stats.last_error.lock_or_recover() = None;
                    return Some(None);
                }
                Outcome::Refused(msg) => {
                    self.stats.failures.fetch_add(1, Ordering::Relaxed);
                    // The server answered: the uplink works.
                    self.stats.up.store(true, Ordering::Relaxed);
                    return Some(Some(msg));
                }
                Outcome::Retry(msg) => msg,
            };
            self.stats.failures.fetch_add(1, Ordering::Relaxed);
            if self.stats.up.swap(false, Ordering::Relaxed) || attempt == 1 {
                tracing::warn!(endpoint = %name, "remote_write: {msg}; retrying with backoff");
            }
            *self.stats.last_error.lock_or_recover() = Some(msg);
            let exp = self
                .ep
                .min_backoff
                .saturating_mul(1u32 << (attempt - 1).min(16))
                .min(self.ep.max_backoff);
            let jitter = rand::random::<f64>() * 0.2 + 0.9;
            self.sleep(exp.mul_f64(jitter)).await;
            // Rounds keep coming while the endpoint is away: the backlog shows them.
            self.note_backlog(cursor, None);
        }
    }

    async fn send(&self, body: Vec<u8>) -> Outcome {
        post(&self.client, &self.ep, body).await
    }
}

/// `name{labels} @ms` of a refused single sample, for the log (bounded).
fn describe(t: &proto::TimeSeries) -> String {
    let mut s = String::new();
    let name = t
        .labels
        .iter()
        .find(|l| l.name == "__name__")
        .map_or("", |l| l.value.as_str());
    s.push_str(name);
    s.push('{');
    let rest: Vec<String> = t
        .labels
        .iter()
        .filter(|l| l.name != "__name__")
        .map(|l| format!("{}={:?}", l.name, l.value))
        .collect();
    s.push_str(&rest.join(","));
    s.push('}');
    if let Some(p) = t.samples.first() {
        s.push_str(&format!(" @{}", p.timestamp));
    }
    s.chars().take(300).collect()
}

impl Store {
    /// `c`, or the oldest sample still stored when `c` points at dropped samples.
    pub fn cursor_at_least(&self, c: Cursor) -> Cursor {
        c.max(self.cursor_floor())
    }
}
