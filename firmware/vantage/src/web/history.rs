//! Recent results per target and probe, for the status page and its sparklines.
//!
//! [`MemoryHistory`] keeps the last hour in one-minute buckets (60 buckets of 16 bytes per
//! probe, whatever the interval), so memory stays bounded at about 1.2 KiB per target.
//! [`StoreHistory`] serves the same buckets from the sample store, so the charts survive a
//! restart and `/api/history` can go back a day; the device uses it whenever the store is open,
//! and its memory then keeps only the last [`RECENT_MINUTES`], the minutes the store may still
//! be filling (at 10,000 targets, 0.8 MiB instead of 9.6). The page reads either through
//! [`HistorySource`].

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use vantage_core::{LockExt, RwLockExt};

use serde::Serialize;
use vantage_core::{
    DetailUse, Glance, JobKey, Measurement, ModuleReport, Observer, Peer, ProbeError, ProbeKind,
    Sample,
};
use vantage_store::StoredSample;

/// Width of one history bucket.
pub const BUCKET: Duration = Duration::from_secs(60);
/// Buckets kept: one hour.
pub const BUCKETS: usize = 60;
/// Buckets the memory keeps beside an open store: the minutes not yet [`SETTLE`]d there, and
/// the current one.
pub const RECENT_MINUTES: usize = (SETTLE / 60) as usize + 3;
const _: () = assert!((RECENT_MINUTES as u64 - 1) * 60 >= SETTLE + 59 && RECENT_MINUTES <= BUCKETS);

/// One bucket of the chart.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Point {
    /// Start of the bucket, Unix seconds.
    pub t: u64,
    pub rounds: u32,
    pub successes: u32,
    /// Mean of the rounds' main time (ping's RTT, DNS's lookup...), in milliseconds.
    pub rtt_ms: Option<f64>,
    /// Packets (or attempts) lost / sent over the bucket, for the kinds that count them.
    pub loss: Option<f64>,
    /// From the store: the bucket's mean of every other figure the store keeps for the
    /// probe, by the store's value names (`duration_seconds`, ...).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub values: BTreeMap<&'static str, f64>,
}

/// The latest round and the time of the last successful one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Latest {
    pub timestamp: f64,
    pub success: bool,
    pub duration_ms: f64,
    pub error: Option<String>,
    /// Who answered: a ping target's address, a DNS server's address and port. Kept as the
    /// address itself, shown as text: no string is built per round.
    pub address: Option<Peer>,
    /// The round's main time (its module's `figure`: ping's mean RTT, DNS's lookup...).
    pub rtt_ms: Option<f64>,
    pub loss: Option<f64>,
    pub last_success: Option<f64>,
    /// A short summary of the probe's own result, e.g. `NOERROR, 2 answers`.
    pub detail: Option<String>,
}

/// Where the page gets recent results from.
pub trait HistorySource: Send + Sync + 'static {
    fn latest(&self, target: &str, probe: ProbeKind) -> Option<Latest>;
    /// Whether the latest round succeeded; `None` before the first. The status view asks it
    /// of every target at each refresh (its counts), so a source answers without a copy.
    fn succeeded(&self, target: &str, probe: ProbeKind) -> Option<bool> {
        self.latest(target, probe).map(|l| l.success)
    }
    /// The latest report of a module kind other than ping (DNS answer, HTTP status, TLS
    /// certificate) with its time, Unix seconds; kept in memory only, so none after a restart
    /// until the next round (the target page then shows the answer the store kept: a DNS
    /// answer is a round detail, `vantage_store::Store::details`).
    fn latest_report(&self, _target: &str, _probe: ProbeKind) -> Option<(f64, ModuleReport)> {
        None
    }
    /// Buckets overlapping `[since, now]`, oldest first.
    fn series(&self, target: &str, probe: ProbeKind, since: SystemTime) -> Vec<Point>;
    /// [`HistorySource::series`] of several probes at once (the status page shows them all):
    /// a source that reads the store reads it once for all of them.
    fn series_many(&self, keys: &[(&str, ProbeKind)], since: SystemTime) -> Vec<Vec<Point>> {
        keys.iter()
            .map(|(t, p)| self.series(t, *p, since))
            .collect()
    }
    /// Forget targets not in `keep` (after a config change).
    fn retain(&self, keep: &dyn Fn(&str) -> bool);
}

/// One minute of one probe, kept small (16 bytes): 60 per target and probe. Its start is
/// where it sits in the ring ([`Track::newest`]).
#[derive(Debug, Default, Clone, Copy)]
struct Acc {
    rtt_sum_ms: f32,
    /// Counts saturate: a minute holds 6,000 rounds at the shortest interval (10 ms).
    rounds: u16,
    successes: u16,
    rtt_n: u16,
    sent: u16,
    lost: u16,
}

/// The last minutes: minute `m` (Unix seconds / 60) in slot `m % len`, for the `len` minutes
/// up to `newest` ([`MemoryHistory::minutes`]). One allocation of its final size at the first
/// round: a growing vector kept room for 64 buckets of 24 bytes.
type Ring = Box<[Acc]>;

#[derive(Debug, Default)]
struct Track {
    /// The newest minute seen (Unix seconds / 60).
    newest: u32,
    buckets: Option<Ring>,
    latest: Option<Latest>,
    /// The latest report of a round that had one, with its time (Unix seconds): kept for the
    /// kinds whose page shows it ([`DetailUse::LastReport`]); not for ping, whose figures the
    /// buckets hold, nor for trace, whose paths are its details.
    report: Option<(f64, ModuleReport)>,
}

/// Whether the page shows the latest report of `kind`'s rounds, so the history keeps it.
fn shows_last_report(kind: ProbeKind) -> bool {
    kind.module()
        .is_some_and(|m| m.detail_use() == DetailUse::LastReport)
}

impl Track {
    /// The bucket of `minute` in a ring of `len` minutes: a new minute clears the slots of the
    /// minutes since the newest; a minute older than the ring (a clock step back) joins the
    /// newest.
    fn bucket(&mut self, minute: u32, len: usize) -> &mut Acc {
        let ring = self.buckets.get_or_insert_with(|| {
            self.newest = minute;
            vec![Acc::default(); len].into_boxed_slice()
        });
        let len = ring.len();
        if minute > self.newest {
            let gap = (minute - self.newest).min(len as u32);
            for m in minute - gap + 1..=minute {
                ring[m as usize % len] = Acc::default();
            }
            self.newest = minute;
        }
        let oldest = self.newest.saturating_sub(len as u32 - 1);
        let slot = if minute < oldest { self.newest } else { minute };
        &mut ring[slot as usize % len]
    }

    /// The minutes that had rounds, oldest first, with their start (Unix seconds).
    fn minutes(&self) -> impl Iterator<Item = (u64, &Acc)> {
        self.buckets.iter().flat_map(move |ring| {
            let len = ring.len();
            let oldest = self.newest.saturating_sub(len as u32 - 1);
            (oldest..=self.newest)
                .map(move |m| (u64::from(m) * BUCKET.as_secs(), &ring[m as usize % len]))
                .filter(|(_, a)| a.rounds > 0)
        })
    }
}

/// In-memory history, fed as an [`Observer`] of the runner.
#[derive(Debug)]
pub struct MemoryHistory {
    /// Boxed: the table keeps room for up to twice its entries, and a track is 200 bytes.
    tracks: RwLock<HashMap<ProbeKey, Box<Track>>>,
    /// Minutes each probe's ring holds.
    minutes: usize,
}

impl Default for MemoryHistory {
    /// The whole hour of the charts: the history of a device without a store.
    fn default() -> Self {
        Self::keeping(BUCKETS)
    }
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Lost over sent; a round that sent nothing lost everything (as ping's loss ratio has it).
fn lost_share(sent: u32, lost: u32) -> f64 {
    if sent == 0 {
        1.0
    } else {
        f64::from(lost) / f64::from(sent)
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl MemoryHistory {
    /// A history of the last `minutes` (1 to [`BUCKETS`]).
    pub fn keeping(minutes: usize) -> Self {
        Self {
            tracks: RwLock::default(),
            minutes: minutes.clamp(1, BUCKETS),
        }
    }

    /// Minutes each probe's ring holds.
    pub fn minutes(&self) -> usize {
        self.minutes
    }

    pub fn record(&self, s: &Sample) {
        let ts = unix(s.timestamp);
        let minute = (ts as u64 / BUCKET.as_secs()).min(u64::from(u32::MAX)) as u32;
        let glance = match &s.measurement {
            Measurement::Module(r) => r.module().glance(r.report.as_ref()),
            _ => Glance::default(),
        };
        let rtt = glance.time.map(ms);
        let (sent, lost) = glance.loss.unwrap_or_default();
        let loss = glance.loss.map(|_| lost_share(sent, lost));
        let mut map = self.tracks.write_or_recover();
        let track = map.entry((s.target.clone(), s.probe)).or_default();
        let last_success = if s.success {
            Some(ts)
        } else {
            track.latest.as_ref().and_then(|l| l.last_success)
        };
        if let Measurement::Module(r) = &s.measurement
            && shows_last_report(s.probe)
        {
            track.report = Some((ts, r.clone()));
        }
        track.latest = Some(Latest {
            timestamp: ts,
            success: s.success,
            duration_ms: ms(s.duration),
            error: s.error.as_ref().map(ProbeError::to_string),
            address: glance.peer,
            rtt_ms: rtt,
            loss,
            last_success,
            detail: glance.detail,
        });
        let b = track.bucket(minute, self.minutes);
        b.rounds = b.rounds.saturating_add(1);
        b.successes = b.successes.saturating_add(u16::from(s.success));
        if let Some(r) = rtt {
            b.rtt_sum_ms += r as f32;
            b.rtt_n = b.rtt_n.saturating_add(1);
        }
        // Loss is a ratio: when the packet counts would overflow, halve both.
        if u32::from(b.sent) + sent > u32::from(u16::MAX) {
            b.sent /= 2;
            b.lost /= 2;
        }
        b.sent = b.sent.saturating_add(sent.min(u32::from(u16::MAX)) as u16);
        b.lost = b.lost.saturating_add(lost.min(u32::from(u16::MAX)) as u16);
    }
}

impl HistorySource for MemoryHistory {
    fn latest(&self, target: &str, probe: ProbeKind) -> Option<Latest> {
        let map = self.tracks.read_or_recover();
        map.get(&(Arc::from(target), probe))?.latest.clone()
    }

    fn succeeded(&self, target: &str, probe: ProbeKind) -> Option<bool> {
        let map = self.tracks.read_or_recover();
        map.get(&(Arc::from(target), probe))?
            .latest
            .as_ref()
            .map(|l| l.success)
    }

    fn latest_report(&self, target: &str, probe: ProbeKind) -> Option<(f64, ModuleReport)> {
        let map = self.tracks.read_or_recover();
        map.get(&(Arc::from(target), probe))?.report.clone()
    }

    fn series(&self, target: &str, probe: ProbeKind, since: SystemTime) -> Vec<Point> {
        let since = unix(since) as u64;
        let map = self.tracks.read_or_recover();
        let Some(track) = map.get(&(Arc::from(target), probe)) else {
            return Vec::new();
        };
        track
            .minutes()
            .filter(|(t, _)| t + BUCKET.as_secs() > since)
            .map(|(t, b)| Point {
                t,
                rounds: u32::from(b.rounds),
                successes: u32::from(b.successes),
                rtt_ms: (b.rtt_n > 0).then(|| f64::from(b.rtt_sum_ms) / f64::from(b.rtt_n)),
                loss: (b.sent > 0).then(|| f64::from(b.lost) / f64::from(b.sent)),
                values: BTreeMap::new(),
            })
            .collect()
    }

    fn retain(&self, keep: &dyn Fn(&str) -> bool) {
        self.tracks.write_or_recover().retain(|(t, _), _| keep(t));
    }
}

impl Observer for MemoryHistory {
    fn sample(&self, sample: Sample) {
        self.record(&sample);
    }
    fn lag(&self, _: &JobKey, _: Duration) {}
    fn skipped(&self, _: &JobKey) {}
}

/// The stored value that is the chart's red bars. (The line is each round's main time,
/// `StoredSample::time_us`; the other figures the store keeps show up in [`Point::values`]
/// by themselves.)
const LOSS_VALUE: &str = "loss_ratio";
/// Stored values that are already in the point's own fields.
const SHOWN: &[&str] = &["success", "sent", "received", "loss_ratio"];

/// Rounds are stored when they end (a trace round takes up to a minute), so the newest minutes
/// may still grow: buckets are only cached once they are this old.
const SETTLE: u64 = 120;
/// Ranges longer than this (up to a day, for `/api/history`) are read from the store each time
/// instead of being cached.
const CACHED_SPAN: u64 = BUCKET.as_secs() * (BUCKETS as u64 + 1);

/// A target's probe.
type ProbeKey = (Arc<str>, ProbeKind);
/// Buckets by start (Unix seconds).
type Buckets = BTreeMap<u64, StoredAgg>;

/// One bucket being summed from stored rounds.
#[derive(Debug, Default, Clone)]
struct StoredAgg {
    rounds: u32,
    successes: u32,
    line: (f64, u32),
    loss: (f64, u32),
    values: BTreeMap<&'static str, (f64, u32)>,
}

impl StoredAgg {
    fn add(&mut self, r: &StoredSample) {
        self.rounds += 1;
        self.successes += u32::from(r.success);
        if let Some(us) = r.time_us() {
            self.line.0 += us as f64 / 1000.0;
            self.line.1 += 1;
        }
        let values = r.values();
        for (k, v) in &values {
            if !v.is_finite() {
                continue;
            }
            if *k == LOSS_VALUE {
                self.loss.0 += v;
                self.loss.1 += 1;
            }
            if !SHOWN.contains(k) {
                let e = self.values.entry(k).or_default();
                e.0 += v;
                e.1 += 1;
            }
        }
    }

    /// A minute of the store's per-minute aggregates, as the status view's sparkline uses it:
    /// rounds, successes, the mean main time, and the share of packets lost (ping's, or a
    /// trace's last hop's); no other values (the status view shows none).
    fn from_minute(a: &vantage_store::Agg) -> Self {
        let lost = |sent: u64, received: u64| {
            (sent > 0).then(|| (1.0 - received.min(sent) as f64 / sent as f64, 1))
        };
        let loss = match a.hops.last() {
            Some(h) if a.sent == 0 => lost(h.sent, h.received),
            _ => lost(a.sent, a.received),
        };
        Self {
            rounds: a.rounds,
            successes: a.successes,
            line: a.time.mean().map_or((0.0, 0), |us| (us / 1000.0, 1)),
            loss: loss.unwrap_or((0.0, 0)),
            values: BTreeMap::new(),
        }
    }

    fn point(&self, t: u64) -> Point {
        let mean = |(sum, n): (f64, u32)| (n > 0).then(|| sum / f64::from(n));
        Point {
            t,
            rounds: self.rounds,
            successes: self.successes,
            rtt_ms: mean(self.line),
            loss: mean(self.loss),
            values: self
                .values
                .iter()
                .filter_map(|(k, v)| mean(*v).map(|m| (*k, m)))
                .collect(),
        }
    }
}

#[derive(Debug, Default)]
struct Cached {
    /// First bucket held.
    start: u64,
    /// Buckets before this one are complete: they are not read again.
    done_until: u64,
    buckets: BTreeMap<u64, StoredAgg>,
}

impl Cached {
    /// Where a refresh for buckets from `since` on starts reading: the first bucket not yet
    /// complete in the cache (all of them when the cache does not reach back to `since`).
    fn read_from(&mut self, since: u64) -> u64 {
        if since < self.start || self.buckets.is_empty() && self.done_until == 0 {
            *self = Cached {
                start: since,
                ..Cached::default()
            };
        }
        since.max(self.done_until)
    }

    /// Replaces the buckets from `from` on with `fresh`, read just now up to `to` (exclusive);
    /// returns those from `since` on.
    fn merge(
        &mut self,
        (since, from, to): (u64, u64, u64),
        fresh: BTreeMap<u64, StoredAgg>,
        now: u64,
    ) -> Vec<Point> {
        self.buckets.retain(|t, _| *t < from);
        self.buckets.extend(fresh);
        // Complete: settled, and read (a bucket from `to` on was not).
        let settled = bucket_of(now.saturating_sub(SETTLE)).min(bucket_of(to));
        self.done_until = self.done_until.max(settled);
        let keep_from = bucket_of(now.saturating_sub(CACHED_SPAN));
        self.buckets.retain(|t, _| *t >= keep_from);
        self.start = self.start.max(keep_from);
        self.buckets
            .range(since..)
            .map(|(t, a)| a.point(*t))
            .collect()
    }
}

fn now_unix() -> u64 {
    unix(SystemTime::now()) as u64
}

fn bucket_of(unix_s: u64) -> u64 {
    unix_s / BUCKET.as_secs() * BUCKET.as_secs()
}

/// Start of the bucket `t` falls in, Unix seconds.
#[cfg(test)]
pub fn bucket_start(t: SystemTime) -> u64 {
    bucket_of(unix(t) as u64)
}

/// History read from the sample store with `Store::query`, so it survives a restart. The
/// latest result comes from memory (it has the error text and the address, which the store
/// does not keep) and from the store's newest round until the first round after a start.
/// Recent buckets are cached, so a refresh reads only the last few minutes from the store.
pub struct StoreHistory {
    memory: Arc<MemoryHistory>,
    store: Arc<vantage_store::Store>,
    /// Buckets of stored rounds, for one probe's charts ([`HistorySource::series`]).
    cache: Mutex<HashMap<ProbeKey, Cached>>,
    /// Buckets of the store's per-minute aggregates, for the status view's sparklines
    /// ([`HistorySource::series_many`]).
    page_cache: Mutex<HashMap<ProbeKey, Cached>>,
    /// The newest stored round per probe, read at most every [`LATEST_TTL`] until memory has
    /// one (a probe with a long interval may take a while after a start).
    stored_latest: Mutex<HashMap<(Arc<str>, ProbeKind), StoredLatest>>,
    /// The first bucket `memory` saw whole (the one after the daemon started): from it on,
    /// within the minutes memory keeps, the status view's points come from memory, so a
    /// refresh reads the store only for the minutes that left memory since the last one.
    memory_from: u64,
}

/// Probes whose stored buckets are cached: two of the status view's largest pages of one probe
/// each (the status view asserts that its largest page fits). A request for more probes than are
/// cached drops the others first, so the cache never holds more than this and one request.
pub(super) const CACHED_PROBES: usize = 1000;

/// When the newest stored round was read, and what it was.
type StoredLatest = (std::time::Instant, Option<Latest>);

const LATEST_TTL: Duration = Duration::from_secs(30);

impl std::fmt::Debug for StoreHistory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreHistory").finish_non_exhaustive()
    }
}

impl StoreHistory {
    /// The first bucket the status view takes from memory at `now`: memory's whole minutes
    /// since the start, no further back than it keeps.
    fn recent_from(&self, now: u64) -> u64 {
        let kept = (self.memory.minutes() as u64 - 1) * BUCKET.as_secs();
        self.memory_from.max(bucket_of(now).saturating_sub(kept))
    }

    /// Makes room in the cache for `keys`: when they would not fit beside what it holds, only
    /// theirs stay.
    fn bound_cache(cache: &mut HashMap<ProbeKey, Cached>, keys: &[(&str, ProbeKind)]) {
        if cache.len() + keys.len() > CACHED_PROBES {
            cache.retain(|(t, p), _| keys.contains(&(&**t, *p)));
        }
    }

    /// `memory` must also be an observer of the runner (it supplies the latest results).
    pub fn new(memory: Arc<MemoryHistory>, store: Arc<vantage_store::Store>) -> Self {
        Self::started_at(memory, store, now_unix())
    }

    /// [`StoreHistory::new`] for a daemon that started at `started` (Unix seconds).
    fn started_at(
        memory: Arc<MemoryHistory>,
        store: Arc<vantage_store::Store>,
        started: u64,
    ) -> Self {
        Self {
            memory,
            store,
            cache: Mutex::default(),
            page_cache: Mutex::default(),
            stored_latest: Mutex::default(),
            memory_from: bucket_of(started) + BUCKET.as_secs(),
        }
    }

    /// Stored rounds in `[from, to]` (Unix seconds) summed into buckets.
    fn read(
        &self,
        target: &str,
        probe: ProbeKind,
        from: u64,
        to: u64,
    ) -> Result<BTreeMap<u64, StoredAgg>, vantage_store::backend::BackendError> {
        let ms = |s: u64| i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX);
        let rounds = self.store.query(target, probe, ms(from), ms(to))?;
        let mut out: BTreeMap<u64, StoredAgg> = BTreeMap::new();
        for r in rounds {
            let t = bucket_of(u64::try_from(r.timestamp_ms / 1000).unwrap_or(0));
            out.entry(t).or_default().add(&r);
        }
        Ok(out)
    }

    /// The store's per-minute aggregates of one probe in `[from, to)` (Unix seconds): small
    /// entries of their own, so a page's sparklines never decode the blocks of every target.
    fn read_minutes(
        &self,
        target: &str,
        probe: ProbeKind,
        from: u64,
        to: u64,
    ) -> Result<Buckets, vantage_store::backend::BackendError> {
        let ms = |s: u64| i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX);
        let minutes = self.store.aggregate(
            target,
            probe,
            ms(from),
            ms(to).saturating_sub(1),
            vantage_store::rollup::MINUTE_MS,
        )?;
        Ok(minutes
            .iter()
            .map(|(t, a)| {
                let t = u64::try_from(*t / 1000).unwrap_or(0);
                (t, StoredAgg::from_minute(a))
            })
            .collect())
    }

    fn latest_stored(&self, target: &str, probe: ProbeKind) -> Option<Latest> {
        let now = now_unix();
        let ms = |s: u64| i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX);
        let from = now.saturating_sub(BUCKET.as_secs() * BUCKETS as u64);
        let rounds = self
            .store
            .query(target, probe, ms(from), ms(now + 60))
            .ok()?;
        let last = rounds.iter().max_by_key(|r| r.timestamp_ms)?;
        let values = last.values();
        let value = |name: &str| values.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
        let secs = |ms: i64| ms as f64 / 1000.0;
        Some(Latest {
            timestamp: secs(last.timestamp_ms),
            success: last.success,
            duration_ms: last.duration_us as f64 / 1000.0,
            error: (!last.success).then(|| match last.error.as_str() {
                "" => "failed".to_string(),
                kind => kind.to_string(),
            }),
            address: None,
            rtt_ms: last.time_us().map(|us| us as f64 / 1000.0),
            loss: value(LOSS_VALUE),
            last_success: rounds
                .iter()
                .filter(|r| r.success)
                .map(|r| r.timestamp_ms)
                .max()
                .map(secs),
            detail: None,
        })
    }
}

impl HistorySource for StoreHistory {
    fn latest_report(&self, target: &str, probe: ProbeKind) -> Option<(f64, ModuleReport)> {
        self.memory.latest_report(target, probe)
    }
    fn succeeded(&self, target: &str, probe: ProbeKind) -> Option<bool> {
        self.memory
            .succeeded(target, probe)
            .or_else(|| self.latest(target, probe).map(|l| l.success))
    }
    fn latest(&self, target: &str, probe: ProbeKind) -> Option<Latest> {
        if let Some(l) = self.memory.latest(target, probe) {
            return Some(l);
        }
        let key = (Arc::from(target), probe);
        let mut cached = self.stored_latest.lock_or_recover();
        if let Some((at, l)) = cached.get(&key)
            && at.elapsed() < LATEST_TTL
        {
            return l.clone();
        }
        let l = self.latest_stored(target, probe);
        cached.insert(key, (std::time::Instant::now(), l.clone()));
        l
    }

    fn series(&self, target: &str, probe: ProbeKind, since: SystemTime) -> Vec<Point> {
        let now = now_unix();
        let since = bucket_of(unix(since) as u64);
        let fallback = |e: vantage_store::backend::BackendError| {
            tracing::warn!(
                "history: cannot read the store ({e}); showing the minutes memory keeps"
            );
            self.memory
                .series(target, probe, UNIX_EPOCH + Duration::from_secs(since))
        };
        if now.saturating_sub(since) > CACHED_SPAN {
            return self
                .read(target, probe, since, now + 60)
                .map_or_else(fallback, |m| {
                    m.range(since..).map(|(t, a)| a.point(*t)).collect()
                });
        }
        let mut cache = self.cache.lock_or_recover();
        Self::bound_cache(&mut cache, &[(target, probe)]);
        let c = cache.entry((Arc::from(target), probe)).or_default();
        let from = c.read_from(since);
        match self.read(target, probe, from, now + 60) {
            Ok(fresh) => c.merge((since, from, now + 60), fresh, now),
            Err(e) => fallback(e),
        }
    }

    fn series_many(&self, keys: &[(&str, ProbeKind)], since: SystemTime) -> Vec<Vec<Point>> {
        self.series_many_at(keys, since, now_unix())
    }

    fn retain(&self, keep: &dyn Fn(&str) -> bool) {
        self.memory.retain(keep);
        self.stored_latest
            .lock_or_recover()
            .retain(|(t, _), _| keep(t));
        self.cache.lock_or_recover().retain(|(t, _), _| keep(t));
        self.page_cache
            .lock_or_recover()
            .retain(|(t, _), _| keep(t));
    }
}

impl StoreHistory {
    /// [`HistorySource::series_many`] at `now` (Unix seconds).
    fn series_many_at(
        &self,
        keys: &[(&str, ProbeKind)],
        since: SystemTime,
        now: u64,
    ) -> Vec<Vec<Point>> {
        let since_b = bucket_of(unix(since) as u64);
        if keys.len() < 2 || now.saturating_sub(since_b) > CACHED_SPAN {
            return keys
                .iter()
                .map(|(t, p)| self.series(t, *p, since))
                .collect();
        }
        let recent_from = self.recent_from(now);
        let to = (now + 60).min(recent_from);
        let mut cache = self.page_cache.lock_or_recover();
        Self::bound_cache(&mut cache, keys);
        let mut out = Vec::with_capacity(keys.len());
        for (t, p) in keys {
            let c = cache.entry((Arc::from(*t), *p)).or_default();
            let from = c.read_from(since_b);
            let fresh = if from < to {
                match self.read_minutes(t, *p, from, to) {
                    Ok(f) => f,
                    Err(e) => {
                        tracing::warn!(
                            "history: cannot read the store ({e}); showing the minutes memory keeps"
                        );
                        return keys
                            .iter()
                            .map(|(t, p)| self.memory.series(t, *p, since))
                            .collect();
                    }
                }
            } else {
                Buckets::new()
            };
            let mut points = c.merge((since_b, from, to), fresh, now);
            points.retain(|p| p.t < recent_from);
            let recent = UNIX_EPOCH + Duration::from_secs(since_b.max(recent_from));
            points.extend(self.memory.series(t, *p, recent));
            out.push(points);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use vantage_core::{Measurement, PingReport};

    /// A fresh store in a directory of its own, removed when the first part is dropped.
    pub(super) fn open_store(
        name: &str,
    ) -> (crate::web::tests::TempDir, Arc<vantage_store::Store>) {
        let dir = crate::web::tests::TempDir::new(name);
        let options = vantage_store::StoreOptions::new(dir.path().join("s"));
        let store = Arc::new(vantage_store::Store::open(options).unwrap());
        (dir, store)
    }

    fn sample(t: u64, ok: bool, rtt_ms: u64) -> Sample {
        Sample {
            target: "gw".into(),
            probe: ProbeKind::PING,
            timestamp: UNIX_EPOCH + Duration::from_secs(t),
            duration: Duration::from_millis(rtt_ms),
            success: ok,
            error: None,
            measurement: Measurement::from(PingReport {
                address: Some("192.0.2.1".parse().unwrap()),
                sent: 2,
                received: if ok { 2 } else { 0 },
                rtts: if ok {
                    vec![Duration::from_millis(rtt_ms); 2]
                } else {
                    vec![]
                },
                ..Default::default()
            }),
            quality: Default::default(),
        }
    }

    /// A kind without a line of its own in the history shows what its module says of a round
    /// at a glance: a TCP round's mean connect time, its lost attempts, the address and port.
    /// A TCP round: 3 of 4 attempts connected, in 1, 2 and 3 ms.
    fn tcp_round() -> (ProbeKind, ModuleReport) {
        let tcp: ProbeKind = "tcp".parse().unwrap();
        let us = |n: u64| json!({"secs": 0, "nanos": n * 1000});
        let report = tcp
            .module()
            .unwrap()
            .report_from_json(json!({
                "address": "192.0.2.7", "port": 443, "sent": 4, "connected": 3,
                "connect_times": [us(1000), us(2000), us(3000)],
            }))
            .unwrap();
        (tcp, report)
    }

    #[test]
    fn every_kind_shows_its_main_time_and_loss() {
        let (tcp, report) = tcp_round();
        let h = MemoryHistory::default();
        h.record(&Sample {
            target: "web".into(),
            probe: tcp,
            timestamp: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            duration: Duration::from_millis(5),
            success: true,
            error: None,
            measurement: Measurement::Module(report),
            quality: Default::default(),
        });
        let l = h.latest("web", tcp).unwrap();
        assert_eq!(l.rtt_ms, Some(2.0));
        assert_eq!(l.loss, Some(0.25));
        assert_eq!(
            serde_json::to_value(l.address).unwrap(),
            json!("192.0.2.7:443")
        );
        let p = &h.series("web", tcp, UNIX_EPOCH)[0];
        assert_eq!((p.rtt_ms, p.loss), (Some(2.0), Some(0.25)));
    }

    #[test]
    fn buckets_are_small() {
        assert_eq!(std::mem::size_of::<Acc>(), 16);
        assert_eq!(std::mem::size_of::<[Acc; BUCKETS]>(), 960);
    }

    /// The minutes with rounds, as (minutes after `start`, rounds).
    fn minutes_of(h: &MemoryHistory, start: u64) -> Vec<(u64, u32)> {
        h.series("gw", ProbeKind::PING, UNIX_EPOCH)
            .iter()
            .map(|p| ((p.t - start) / 60, p.rounds))
            .collect()
    }

    #[test]
    fn the_ring_keeps_each_minute_in_its_slot() {
        let h = MemoryHistory::default();
        let start = 1_700_000_000 / 60 * 60;
        h.record(&sample(start, true, 10));
        h.record(&sample(start + 60, true, 10));
        // Ten silent minutes, then a round: the minutes between stay empty.
        h.record(&sample(start + 12 * 60, true, 10));
        assert_eq!(minutes_of(&h, start), [(0, 1), (1, 1), (12, 1)]);
        // A round that ends late joins its own minute, not the newest.
        h.record(&sample(start + 60 + 5, false, 0));
        assert_eq!(minutes_of(&h, start), [(0, 1), (1, 2), (12, 1)]);
        // 59 minutes on, minute 0 has left the hour and its slot holds minute 60.
        h.record(&sample(start + 60 * 60, true, 10));
        assert_eq!(minutes_of(&h, start), [(1, 2), (12, 1), (60, 1)]);
        // A clock step back beyond the hour joins the newest minute.
        h.record(&sample(start - 3 * 3600, true, 10));
        assert_eq!(minutes_of(&h, start), [(1, 2), (12, 1), (60, 2)]);
        // A step forward of more than an hour leaves only the new minute.
        h.record(&sample(start + 5 * 3600, true, 10));
        assert_eq!(minutes_of(&h, start), [(300, 1)]);
    }

    #[test]
    fn the_latest_address_reads_as_text() {
        let ping = serde_json::to_value(Peer::Ip("192.0.2.1".parse().unwrap())).unwrap();
        assert_eq!(ping, "192.0.2.1");
        let dns = serde_json::to_value(Peer::Socket("[2001:db8::53]:853".parse().unwrap()));
        assert_eq!(dns.unwrap(), "[2001:db8::53]:853");
        let h = MemoryHistory::default();
        h.record(&sample(1_700_000_000, true, 10));
        let l = serde_json::to_value(h.latest("gw", ProbeKind::PING)).unwrap();
        assert_eq!(l["address"], "192.0.2.1");
    }

    #[test]
    fn buckets_aggregate_and_stay_bounded() {
        let h = MemoryHistory::default();
        let start = 1_700_000_000 / 60 * 60;
        for i in 0..(3 * 3600) {
            h.record(&sample(start + i, i % 4 != 0, 10 + i % 3));
        }
        let s = h.series("gw", ProbeKind::PING, UNIX_EPOCH);
        assert_eq!(s.len(), BUCKETS);
        let last = s.last().unwrap();
        assert_eq!(last.rounds, 60);
        assert_eq!(last.successes, 45);
        assert!((last.loss.unwrap() - 0.25).abs() < 1e-9);
        assert!((last.rtt_ms.unwrap() - 11.0).abs() < 0.1, "{last:?}");
        let l = h.latest("gw", ProbeKind::PING).unwrap();
        assert!(l.last_success.is_some());
        // A failure keeps the time of the last success.
        h.record(&sample(start + 4 * 3600, false, 0));
        let l2 = h.latest("gw", ProbeKind::PING).unwrap();
        assert!(!l2.success);
        assert_eq!(l2.last_success, Some(l.timestamp));
        h.retain(&|t| t != "gw");
        assert!(h.latest("gw", ProbeKind::PING).is_none());
    }
    /// After a start, the status view reads the store for the time before it once; the
    /// minutes since come from memory, so refreshes read nothing however many targets run.
    #[test]
    fn minutes_since_the_start_come_from_memory_and_refreshes_read_no_store() {
        let (_dir, store) = open_store("histmem");
        let now = now_unix();
        let started = now - 30 * 60;
        let labels = vantage_store::Labels::new();
        let memory = Arc::new(MemoryHistory::default());
        // The store holds an RTT of 5 ms for every minute of the hour; memory saw the rounds
        // since the start, with 9 ms, so each point shows where it came from.
        for m in (0..60u64).rev() {
            let t = now - m * 60;
            store.append_many(std::iter::once((&sample(t, true, 5), &labels)));
            if t >= bucket_of(started) + 60 {
                memory.record(&sample(t, true, 9));
            }
        }
        store.flush().unwrap();
        let h = StoreHistory::started_at(memory, store.clone(), started);
        let keys = [("gw", ProbeKind::PING), ("other", ProbeKind::PING)];
        let since = UNIX_EPOCH + Duration::from_secs(now - 3600);
        let first = h.series_many(&keys, since);
        let read = store.stats().blocks_read;
        for _ in 0..3 {
            assert_eq!(h.series_many(&keys, since), first);
        }
        assert_eq!(
            store.stats().blocks_read,
            read,
            "a refresh read the store again"
        );
        let points = &first[0];
        assert!(points.len() >= 59, "{points:?}");
        for p in points {
            let want = if p.t < h.memory_from { 5.0 } else { 9.0 };
            assert!((p.rtt_ms.unwrap() - want).abs() < 1e-6, "{p:?}");
            assert_eq!(p.rounds, 1, "{p:?}");
        }
        assert!(points.iter().any(|p| p.t >= h.memory_from));
        assert!(first[1].is_empty());
    }

    /// Beside an open store, memory keeps only the last minutes: the status view takes the
    /// older ones from the store, and as the minutes pass, each that leaves memory is read
    /// from the store once, with no minute missing between the two.
    #[test]
    fn a_short_memory_and_the_store_show_the_whole_hour_as_minutes_pass() {
        let (_dir, store) = open_store("histshort");
        let now = now_unix();
        let labels = vantage_store::Labels::new();
        let memory = Arc::new(MemoryHistory::keeping(RECENT_MINUTES));
        // Stored rounds show 5 ms, memory's 9 ms: each point says where it came from.
        for m in (0..60u64).rev() {
            let t = now - m * 60;
            store.append_many(std::iter::once((&sample(t, true, 5), &labels)));
            memory.record(&sample(t, true, 9));
        }
        store.flush().unwrap();
        assert_eq!(
            memory.series("gw", ProbeKind::PING, UNIX_EPOCH).len(),
            RECENT_MINUTES
        );
        let h = StoreHistory::started_at(memory, store.clone(), now - 7200);
        let keys = [("gw", ProbeKind::PING), ("other", ProbeKind::PING)];
        // The page asks for the last hour at each refresh.
        let since = |at: u64| UNIX_EPOCH + Duration::from_secs(at - 59 * 60);
        for later in [0, 30, 60, 120, 180] {
            let at = now + later;
            let points = &h.series_many_at(&keys, since(at), at)[0];
            let starts: Vec<u64> = points.iter().map(|p| p.t).collect();
            let want: Vec<u64> = (0..60)
                .rev()
                .map(|m| bucket_of(now - m * 60))
                .filter(|t| *t >= bucket_of(at - 59 * 60))
                .collect();
            assert_eq!(starts, want, "at +{later} s");
            let recent = h.recent_from(at);
            for p in points {
                let rtt = if p.t < recent { 5.0 } else { 9.0 };
                assert_eq!(p.rtt_ms, Some(rtt), "at +{later} s: {p:?}");
                assert_eq!(p.rounds, 1, "at +{later} s: {p:?}");
            }
            assert!(points.iter().any(|p| p.t >= recent), "at +{later} s");
        }
        // Minutes already read are not read again.
        let read = store.stats().blocks_read;
        h.series_many_at(&keys, since(now + 180), now + 180);
        assert_eq!(
            store.stats().blocks_read,
            read,
            "a refresh read the store again"
        );
    }

    /// The caches of stored buckets hold at most [`CACHED_PROBES`] probes each, however many
    /// pages and charts are looked at.
    #[test]
    fn the_cache_of_stored_buckets_is_bounded() {
        let (_dir, store) = open_store("histbound");
        let h = StoreHistory::new(Arc::new(MemoryHistory::default()), store);
        let since = SystemTime::now() - BUCKET * BUCKETS as u32;
        let names: Vec<String> = (0..3 * CACHED_PROBES).map(|i| format!("t{i}")).collect();
        for page in names.chunks(CACHED_PROBES * 2 / 3) {
            let keys: Vec<(&str, ProbeKind)> =
                page.iter().map(|t| (t.as_str(), ProbeKind::PING)).collect();
            h.series_many(&keys, since);
            let cache = h.page_cache.lock_or_recover();
            assert!(cache.len() <= CACHED_PROBES, "{} cached", cache.len());
            assert!(
                keys.iter()
                    .all(|(t, p)| cache.contains_key(&(Arc::from(*t), *p)))
            );
        }
        for t in &names[..CACHED_PROBES + 1] {
            h.series(t, ProbeKind::PING, since);
        }
        assert!(h.cache.lock_or_recover().len() <= CACHED_PROBES);
    }

    /// From the store, before the daemon's first round, a TCP round's line is its connect time,
    /// as it is in memory after: each kind's main time, not a value named per kind.
    #[test]
    fn a_stored_rounds_line_is_its_main_time() {
        let (_dir, store) = open_store("histmain");
        let (tcp, report) = tcp_round();
        let at = SystemTime::now() - Duration::from_secs(120);
        let round = Sample {
            target: "web".into(),
            probe: tcp,
            timestamp: at,
            duration: Duration::from_millis(5),
            success: true,
            error: None,
            measurement: Measurement::Module(report),
            quality: Default::default(),
        };
        store.append(&round, &vantage_store::Labels::new());
        store.flush().unwrap();
        let h = StoreHistory::new(Arc::new(MemoryHistory::default()), store);
        let points = h.series("web", tcp, at - Duration::from_secs(60));
        assert_eq!(points.len(), 1, "{points:?}");
        assert_eq!(points[0].rtt_ms, Some(2.0), "{points:?}");
        assert_eq!(h.latest("web", tcp).unwrap().rtt_ms, Some(2.0));
    }

    /// Blocks read from the store by two status refreshes (cold after a start, then warm) of
    /// `n` targets with ten minutes of rounds stored, one block a minute, checking that they
    /// show what each probe's rounds do.
    fn blocks_per_refresh(n: usize) -> u64 {
        let (_dir, store) = open_store("histblocks");
        let now = SystemTime::now();
        let labels = vantage_store::Labels::new();
        let targets: Vec<String> = (0..n).map(|i| format!("t{i}")).collect();
        for m in (0..10u64).rev() {
            let samples: Vec<Sample> = targets
                .iter()
                .map(|t| Sample {
                    target: t.as_str().into(),
                    timestamp: now - Duration::from_secs(m * 60),
                    ..sample(0, m % 3 != 0, 2)
                })
                .collect();
            store.append_many(samples.iter().map(|s| (s, &labels)));
            store.flush().unwrap();
        }
        let h = StoreHistory::new(Arc::new(MemoryHistory::default()), store.clone());
        let keys: Vec<(&str, ProbeKind)> = targets
            .iter()
            .map(|t| (t.as_str(), ProbeKind::PING))
            .collect();
        let since = now - BUCKET * BUCKETS as u32;
        let before = store.stats().blocks_read;
        let cold = h.series_many(&keys, since);
        let warm = h.series_many(&keys, since);
        let read = store.stats().blocks_read - before;
        // The same points as one probe at a time, from a history with nothing cached.
        let single = StoreHistory::new(Arc::new(MemoryHistory::default()), store.clone());
        for (i, (t, p)) in keys.iter().enumerate() {
            let one = single.series(t, *p, since);
            assert_eq!(
                one.iter().map(|p| p.rounds).sum::<u32>(),
                10,
                "{t}: {one:?}"
            );
            assert_eq!(
                one.iter().map(|p| p.successes).sum::<u32>(),
                6,
                "{t}: {one:?}"
            );
            // The sparklines' figures; the other means are the target page's.
            let line: Vec<Point> = one
                .into_iter()
                .map(|p| Point {
                    values: BTreeMap::new(),
                    ..p
                })
                .collect();
            assert_eq!(cold[i], line, "{t}");
            assert_eq!(warm[i], line, "{t}");
        }
        read
    }

    /// The status page shows every target: its sparklines come from the store's per-minute
    /// aggregates, so a refresh decodes no block of rounds, however many targets there are
    /// (reading the blocks cost 10,000 reads of the same blocks every 5 s at 10,000 targets).
    #[test]
    fn a_status_refresh_reads_no_blocks_of_rounds() {
        for n in [3, 60] {
            assert_eq!(blocks_per_refresh(n), 0, "blocks read at {n} targets");
        }
    }
}

/// What the status page costs with the history in the store: 20 targets pinged every second
/// for an hour (72 000 rounds), one status refresh cold (after a start) and warm (the next
/// refresh, 5 s later). Run with
/// `cargo test -p vantage --release --bin vantage store_history_cost -- --ignored --nocapture`.
#[cfg(test)]
mod cost {
    use super::*;
    use std::time::Instant;

    #[test]
    #[ignore = "a measurement; prints figures"]
    fn store_history_cost() {
        let (_dir, store) = super::tests::open_store("histcost");
        let now = SystemTime::now();
        let labels = vantage_store::Labels::new();
        let targets: Vec<String> = (0..20).map(|i| format!("t{i}")).collect();
        for s in (0..3600u64).rev() {
            let samples: Vec<Sample> = targets
                .iter()
                .map(|t| {
                    crate::test_support::answered_ping(
                        t,
                        now - Duration::from_secs(s),
                        Duration::from_millis(2),
                    )
                })
                .collect();
            store.append_many(samples.iter().map(|s| (s, &labels)));
            if s % 5 == 0 {
                store.flush().unwrap();
            }
        }
        store.flush().unwrap();
        let h = StoreHistory::new(Arc::new(MemoryHistory::default()), store.clone());
        let since = now - BUCKET * BUCKETS as u32;
        let refresh = || {
            let t = Instant::now();
            for name in &targets {
                assert!(h.series(name, ProbeKind::PING, since).len() >= 60);
                assert!(h.latest(name, ProbeKind::PING).is_some());
            }
            t.elapsed()
        };
        let cold = refresh();
        let warm = refresh();
        let st = store.stats();
        println!(
            "store: {} rounds, {} KiB on disk; status refresh of 20 targets: cold {:.1} ms, warm {:.1} ms",
            st.samples,
            st.disk_bytes / 1024,
            cold.as_secs_f64() * 1000.0,
            warm.as_secs_f64() * 1000.0
        );
    }
}
