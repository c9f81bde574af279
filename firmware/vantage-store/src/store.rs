//! The durable sample store: group commit, bounds, cursors, recovery.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use vantage_core::{ProbeKind, Sample};

use crate::backend::{self, Backend, BackendError, BackendKind, Commit, EngineOptions};
use crate::codec::{BlockMeta, StoredSample, decode_block, encode_block, unix_ms};
use crate::rollup::{self, Agg, Due};
use crate::series::{Labels, SeriesKey};

/// Largest block one commit writes; a longer backlog of pending samples is split.
const MAX_BLOCK_SAMPLES: usize = 50_000;
/// Newest blocks read back on open to catch a damaged tail early.
const CHECK_ON_OPEN: usize = 16;
/// Consecutive failed opens after which the store is quarantined before the next attempt.
const MAX_FAILED_OPENS: u32 = 3;

const META_FLOOR: &[u8] = b"f";
const META_SERIES: &[u8] = b"s";
const META_CURSOR: &[u8] = b"c";
/// A lower bound for the next sequence number (set by a salvage, so numbers are never reused).
const META_NEXT: &[u8] = b"n";

/// How the store is set up. See `docs/STORE.md` for what each bound means on a card.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// The store's own directory (the daemon uses `<data-dir>/store`).
    pub dir: PathBuf,
    pub backend: BackendKind,
    /// Bytes on disk the store may use; the oldest samples are dropped beyond it.
    pub max_bytes: u64,
    /// Samples older than this are dropped.
    pub max_age: Duration,
    /// Group commit: pending samples are written and synced at least this often...
    pub commit_interval: Duration,
    /// ...or as soon as this many are pending.
    pub commit_samples: usize,
    /// Samples held in memory while the disk refuses writes; the oldest go beyond it.
    pub max_pending: usize,
}

impl StoreOptions {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            backend: BackendKind::Fjall,
            max_bytes: crate::DEFAULT_MAX_BYTES,
            max_age: crate::DEFAULT_MAX_AGE,
            commit_interval: crate::DEFAULT_COMMIT_INTERVAL,
            commit_samples: crate::DEFAULT_COMMIT_SAMPLES,
            max_pending: crate::DEFAULT_MAX_PENDING,
        }
    }
}

/// Position of the next sample to ship: block sequence number and index within the block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct Cursor {
    pub seq: u64,
    pub idx: u32,
}

impl Cursor {
    fn encode(&self) -> Vec<u8> {
        let mut v = self.seq.to_le_bytes().to_vec();
        v.extend_from_slice(&self.idx.to_le_bytes());
        v
    }
    fn decode(b: &[u8]) -> Option<Self> {
        if b.len() != 12 {
            return None;
        }
        Some(Self {
            seq: u64::from_le_bytes(b[..8].try_into().ok()?),
            idx: u32::from_le_bytes(b[8..].try_into().ok()?),
        })
    }
}

/// Samples read for shipping, with the cursor that follows them.
#[derive(Debug, Clone, Default)]
pub struct ReadBatch {
    pub samples: Vec<StoredSample>,
    pub next: Cursor,
}

/// Why samples were dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Older than `max_age`.
    Age,
    /// Beyond `max_bytes`.
    Bytes,
    /// Pending in memory while writes failed, beyond `max_pending`.
    Overflow,
    /// In a block found damaged.
    Corrupt,
}

impl DropReason {
    pub const ALL: [DropReason; 4] = [
        DropReason::Age,
        DropReason::Bytes,
        DropReason::Overflow,
        DropReason::Corrupt,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Age => "age",
            DropReason::Bytes => "bytes",
            DropReason::Overflow => "overflow",
            DropReason::Corrupt => "corrupt",
        }
    }
    fn idx(self) -> usize {
        self as usize
    }
}

/// A snapshot of the store's figures, for metrics and the web page.
#[derive(Debug, Clone, Default)]
pub struct StoreStats {
    pub backend: &'static str,
    /// Samples on disk (committed, not dropped).
    pub samples: u64,
    /// Samples waiting for the next commit.
    pub pending: u64,
    /// Bytes the engine occupies on disk.
    pub disk_bytes: u64,
    /// Bytes of encoded blocks on disk (what the samples need, before engine overhead).
    pub block_bytes: u64,
    pub oldest_ms: Option<i64>,
    pub newest_ms: Option<i64>,
    pub dropped: [u64; 4],
    pub commits: u64,
    pub commit_errors: u64,
    /// Bytes handed to the engine by commits (blocks, index, meta).
    pub bytes_committed: u64,
    pub samples_committed: u64,
    pub quarantined: u64,
    pub corrupt_blocks: u64,
    /// Blocks read back from the engine since the store opened (queries, shipping, checks).
    pub blocks_read: u64,
    /// `None` when healthy; the last error while writes fail.
    pub error: Option<String>,
    pub last_commit: Option<SystemTime>,
}

impl StoreStats {
    pub fn dropped(&self, r: DropReason) -> u64 {
        self.dropped[r.idx()]
    }
    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().sum()
    }
    pub fn healthy(&self) -> bool {
        self.error.is_none()
    }
}

#[derive(Debug, Clone, Copy)]
struct IndexEntry {
    meta: BlockMeta,
    /// Samples committed before this block since the store opened (for backlog arithmetic).
    cum: u64,
}

/// A series id with the labels it was created for.
type LabelledId = (Arc<Labels>, u32);

#[derive(Default)]
struct State {
    pending: VecDeque<StoredSample>,
    series: Vec<SeriesKey>,
    lookup: HashMap<(Arc<str>, ProbeKind), Vec<LabelledId>>,
    /// Series whose dictionary entry is not yet on disk.
    unsaved_series: Vec<u32>,
    index: BTreeMap<u64, IndexEntry>,
    floor: u64,
    floor_dirty: bool,
    next_seq: u64,
    cum_end: u64,
    samples: u64,
    block_bytes: u64,
    cursors: HashMap<String, Cursor>,
    dirty_cursors: Vec<String>,
    index_removals: Vec<u64>,
    commit_now: bool,
    /// Pending samples at the front being written by a commit right now.
    in_flight: usize,
    /// Per-minute aggregates not yet written.
    rollups: rollup::Open,
}

#[derive(Default)]
struct Counters {
    dropped: [AtomicU64; 4],
    commits: AtomicU64,
    commit_errors: AtomicU64,
    bytes_committed: AtomicU64,
    samples_committed: AtomicU64,
    quarantined: AtomicU64,
    corrupt_blocks: AtomicU64,
    blocks_read: AtomicU64,
    last_commit_ms: AtomicU64,
}

struct Inner {
    opts: StoreOptions,
    backend: RwLock<Option<Box<dyn Backend>>>,
    state: Mutex<State>,
    wake: Condvar,
    counters: Counters,
    error: Mutex<Option<String>>,
    closing: AtomicBool,
    last_emergency: Mutex<Option<Instant>>,
    head_file: Mutex<Option<std::fs::File>>,
    usage: Mutex<(Option<Instant>, u64)>,
    commit_serial: Mutex<()>,
}

/// The store. Cheap to share behind an `Arc`; all methods take `&self`.
pub struct Store {
    inner: Arc<Inner>,
    committer: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.inner.opts.dir)
            .finish_non_exhaustive()
    }
}

/// The store could not start at all (it never fails for damaged data: that is quarantined).
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{0}")]
    Backend(#[from] BackendError),
    #[error("cannot prepare {path}: {err}")]
    Dir { path: PathBuf, err: std::io::Error },
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn now_ms() -> i64 {
    unix_ms(SystemTime::now())
}

/// Where a damaged store is moved to (one kept; an older one is deleted).
pub fn quarantine_dir(dir: &Path) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(".quarantine");
    dir.with_file_name(name)
}

fn marker_path(dir: &Path) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(".opening");
    dir.with_file_name(name)
}

fn sync_dir(dir: &Path) {
    if let Ok(f) = std::fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

/// Moves a damaged store aside so a fresh one can start.
fn quarantine(dir: &Path, why: &str) -> Result<PathBuf, OpenError> {
    let q = quarantine_dir(dir);
    if q.exists() {
        let _ = std::fs::remove_dir_all(&q);
    }
    std::fs::rename(dir, &q).map_err(|err| OpenError::Dir {
        path: dir.to_path_buf(),
        err,
    })?;
    if let Some(parent) = dir.parent() {
        sync_dir(parent);
    }
    tracing::error!(
        store = %dir.display(),
        quarantine = %q.display(),
        "store: the store is damaged ({why}); moved it aside and starting an empty one"
    );
    Ok(q)
}

/// The head file beside the store: next sequence number and live samples after the last
/// commit. Written in place without a sync (it costs no extra flash write per commit beyond the
/// page cache's writeback); after a power cut it can only be behind the engine, never ahead. An
/// engine that comes back behind it lost data that this file lets us count.
fn head_path(dir: &Path) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(".head");
    dir.with_file_name(name)
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Head {
    next_seq: u64,
    samples: u64,
}

impl Head {
    fn encode(&self) -> [u8; 20] {
        let mut b = [0u8; 20];
        b[..8].copy_from_slice(&self.next_seq.to_le_bytes());
        b[8..16].copy_from_slice(&self.samples.to_le_bytes());
        let crc = crc32fast::hash(&b[..16]);
        b[16..].copy_from_slice(&crc.to_le_bytes());
        b
    }
    fn read(dir: &Path) -> Option<Self> {
        let b = std::fs::read(head_path(dir)).ok()?;
        if b.len() != 20 || crc32fast::hash(&b[..16]).to_le_bytes() != b[16..20] {
            return None;
        }
        Some(Self {
            next_seq: u64::from_le_bytes(b[..8].try_into().ok()?),
            samples: u64::from_le_bytes(b[8..16].try_into().ok()?),
        })
    }
}

/// The series log beside the store: every series definition, appended and synced when a new
/// series first appears (rare: a new target or new labels). It keeps samples attributable when
/// the engine loses its own copy of the dictionary with a damaged journal.
fn series_log_path(dir: &Path) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(".series");
    dir.with_file_name(name)
}

fn read_series_log(dir: &Path) -> BTreeMap<u32, SeriesKey> {
    let mut out = BTreeMap::new();
    let Ok(b) = std::fs::read(series_log_path(dir)) else {
        return out;
    };
    let mut pos = 0usize;
    while pos + 8 <= b.len() {
        let len = u32::from_le_bytes(b[pos..pos + 4].try_into().unwrap_or_default()) as usize;
        let id = u32::from_le_bytes(b[pos + 4..pos + 8].try_into().unwrap_or_default());
        let Some(rec) = b.get(pos + 8..pos + 8 + len) else {
            break;
        };
        if let Ok(k) = SeriesKey::decode(rec) {
            out.insert(id, k);
        }
        pos += 8 + len;
    }
    out
}

fn append_series_log(dir: &Path, entries: &[(u32, Vec<u8>)]) -> std::io::Result<()> {
    use std::io::Write;
    let mut buf = Vec::new();
    for (id, rec) in entries {
        buf.extend_from_slice(&(rec.len() as u32).to_le_bytes());
        buf.extend_from_slice(&id.to_le_bytes());
        buf.extend_from_slice(rec);
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(series_log_path(dir))?;
    f.write_all(&buf)?;
    f.sync_data()
}

/// Bytes a directory tree really occupies (allocated blocks: sparse, preallocated files count
/// for what they hold).
pub fn dir_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else {
                total += m.blocks() * 512;
            }
        }
    }
    total
}

impl Store {
    /// Opens (or creates) the store. A damaged store is repaired where the engine can (torn
    /// tail), otherwise quarantined; this only fails when the directory itself is unusable.
    pub fn open(opts: StoreOptions) -> Result<Self, OpenError> {
        if let Some(parent) = opts.dir.parent() {
            std::fs::create_dir_all(parent).map_err(|err| OpenError::Dir {
                path: parent.to_path_buf(),
                err,
            })?;
        }
        let inner = Arc::new(Inner {
            opts,
            backend: RwLock::new(None),
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            counters: Counters::default(),
            error: Mutex::new(None),
            closing: AtomicBool::new(false),
            last_emergency: Mutex::new(None),
            head_file: Mutex::new(None),
            usage: Mutex::new((None, 0)),
            commit_serial: Mutex::new(()),
        });
        // A store that cannot open now (disk full, read-only, locked) is retried by the
        // committer; samples wait in memory meanwhile. Damage never gets here: it is quarantined.
        let degraded = match inner.open_backend() {
            Ok(()) => false,
            Err(OpenError::Backend(e)) => {
                inner.backend_err(&e);
                true
            }
            Err(e) => return Err(e),
        };
        let i = inner.clone();
        let committer = std::thread::Builder::new()
            .name("store-commit".into())
            .spawn(move || i.commit_loop(degraded))
            .map_err(|err| OpenError::Dir {
                path: inner.opts.dir.clone(),
                err,
            })?;
        Ok(Self {
            inner,
            committer: Mutex::new(Some(committer)),
        })
    }

    pub fn options(&self) -> &StoreOptions {
        &self.inner.opts
    }

    /// Queues a sample for the next group commit. Never blocks on the disk.
    pub fn append(&self, sample: &Sample, labels: &Labels) {
        self.append_many(std::iter::once((sample, labels)));
    }

    /// Queues several samples under one lock.
    pub fn append_many<'a>(&self, samples: impl IntoIterator<Item = (&'a Sample, &'a Labels)>) {
        let inner = &self.inner;
        let mut st = lock(&inner.state);
        for (sample, labels) in samples {
            let id = st.series_id(&sample.target, sample.probe, labels);
            st.pending.push_back(StoredSample::from_sample(sample, id));
        }
        let over = st.pending.len().saturating_sub(inner.opts.max_pending);
        if over > 0 {
            // The oldest that are not being written right now.
            let from = st.in_flight.min(st.pending.len());
            let over = over.min(st.pending.len() - from);
            st.pending.drain(from..from + over);
            inner.counters.dropped[DropReason::Overflow.idx()]
                .fetch_add(over as u64, Ordering::Relaxed);
        }
        if st.pending.len() >= inner.opts.commit_samples {
            st.commit_now = true;
            inner.wake.notify_one();
        }
    }

    /// Writes everything pending now and waits for it (shutdown, tests).
    pub fn flush(&self) -> Result<(), BackendError> {
        self.inner.commit_round(true)
    }

    /// Stops the committer after a last commit.
    pub fn close(&self) {
        {
            // Under the state lock: the committer checks `closing` under it before it waits,
            // so it either sees the flag or is already waiting for the notification (set
            // without the lock, a close between its check and its wait went unheard until the
            // next commit interval).
            let _st = lock(&self.inner.state);
            self.inner.closing.store(true, Ordering::SeqCst);
        }
        self.inner.wake.notify_all();
        if let Some(h) = lock(&self.committer).take() {
            let _ = h.join();
        }
        *self
            .inner
            .backend
            .write()
            .unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Samples made durable by commits since the store opened: a cheap read of one counter
    /// (`stats()` also measures the disk).
    pub fn samples_committed(&self) -> u64 {
        self.inner
            .counters
            .samples_committed
            .load(Ordering::Relaxed)
    }

    pub fn stats(&self) -> StoreStats {
        let inner = &self.inner;
        let c = &inner.counters;
        let st = lock(&inner.state);
        let disk_bytes = inner.disk_usage();
        let mut dropped = [0; 4];
        for (d, a) in dropped.iter_mut().zip(&c.dropped) {
            *d = a.load(Ordering::Relaxed);
        }
        let last = c.last_commit_ms.load(Ordering::Relaxed);
        StoreStats {
            backend: inner.opts.backend.as_str(),
            samples: st.samples,
            pending: st.pending.len() as u64,
            disk_bytes,
            block_bytes: st.block_bytes,
            oldest_ms: st
                .index
                .values()
                .next()
                .map(|e| e.meta.min_ts)
                .or_else(|| st.pending.front().map(|s| s.timestamp_ms)),
            newest_ms: st
                .pending
                .back()
                .map(|s| s.timestamp_ms)
                .or_else(|| st.index.values().next_back().map(|e| e.meta.max_ts)),
            dropped,
            commits: c.commits.load(Ordering::Relaxed),
            commit_errors: c.commit_errors.load(Ordering::Relaxed),
            bytes_committed: c.bytes_committed.load(Ordering::Relaxed),
            samples_committed: c.samples_committed.load(Ordering::Relaxed),
            quarantined: c.quarantined.load(Ordering::Relaxed),
            corrupt_blocks: c.corrupt_blocks.load(Ordering::Relaxed),
            blocks_read: c.blocks_read.load(Ordering::Relaxed),
            error: lock(&inner.error).clone(),
            last_commit: (last > 0).then(|| SystemTime::UNIX_EPOCH + Duration::from_millis(last)),
        }
    }

    /// The series of a stored sample.
    pub fn series(&self, id: u32) -> Option<SeriesKey> {
        lock(&self.inner.state).series.get(id as usize).cloned()
    }

    /// The shipping position of an endpoint (the oldest sample when it never shipped).
    pub fn cursor(&self, endpoint: &str) -> Cursor {
        let st = lock(&self.inner.state);
        let c = st.cursors.get(endpoint).copied().unwrap_or_default();
        st.clamp(c)
    }

    /// Records that everything before `c` was delivered to `endpoint`. Persisted with the next
    /// group commit.
    pub fn set_cursor(&self, endpoint: &str, c: Cursor) {
        let mut st = lock(&self.inner.state);
        if st.cursors.get(endpoint) != Some(&c) {
            st.cursors.insert(endpoint.to_string(), c);
            if !st.dirty_cursors.iter().any(|e| e == endpoint) {
                st.dirty_cursors.push(endpoint.to_string());
            }
        }
    }

    /// The position of the oldest sample still stored.
    pub fn cursor_floor(&self) -> Cursor {
        Cursor {
            seq: lock(&self.inner.state).floor,
            idx: 0,
        }
    }

    /// Committed samples at or after `c`.
    pub fn backlog(&self, c: Cursor) -> u64 {
        let st = lock(&self.inner.state);
        let c = st.clamp(c);
        match st.index.range(c.seq..).next() {
            Some((_, e)) => st.cum_end - e.cum - u64::from(c.idx).min(u64::from(e.meta.count)),
            None => 0,
        }
    }

    /// Reads up to about `max` committed samples from `c` on, whole blocks at a time. Damaged
    /// blocks are skipped (and counted).
    pub fn read_from(&self, c: Cursor, max: usize) -> Result<ReadBatch, BackendError> {
        let mut out = ReadBatch {
            samples: Vec::new(),
            next: c,
        };
        let mut c = lock(&self.inner.state).clamp(c);
        loop {
            let next = {
                let st = lock(&self.inner.state);
                st.index
                    .range(c.seq..)
                    .next()
                    .map(|(s, e)| (*s, e.meta.count))
            };
            let Some((seq, count)) = next else {
                out.next = c;
                return Ok(out);
            };
            if seq != c.seq {
                c = Cursor { seq, idx: 0 };
            }
            let samples = match self.inner.read_block(seq)? {
                Some(s) => s,
                None => {
                    c = Cursor {
                        seq: seq + 1,
                        idx: 0,
                    };
                    continue;
                }
            };
            let start = (c.idx as usize).min(samples.len());
            let room = max.saturating_sub(out.samples.len());
            let take = (samples.len() - start).min(room.max(1));
            out.samples.extend_from_slice(&samples[start..start + take]);
            c = if start + take >= count as usize {
                Cursor {
                    seq: seq + 1,
                    idx: 0,
                }
            } else {
                Cursor {
                    seq,
                    idx: (start + take) as u32,
                }
            };
            if out.samples.len() >= max {
                out.next = c;
                return Ok(out);
            }
        }
    }

    /// Samples of one target and probe with `from <= timestamp <= to` (ms since the epoch),
    /// committed or pending, in append order.
    pub fn query(
        &self,
        target: &str,
        probe: ProbeKind,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<StoredSample>, BackendError> {
        self.query_where(Some((target, probe)), from_ms, to_ms)
    }

    /// Samples of every series with `from <= timestamp <= to`, committed or pending, in append
    /// order: one pass over the blocks for a page that shows every target, where a query per
    /// target would read each block once per target. [`Store::series`] names their series.
    pub fn query_all(&self, from_ms: i64, to_ms: i64) -> Result<Vec<StoredSample>, BackendError> {
        self.query_where(None, from_ms, to_ms)
    }

    fn query_where(
        &self,
        only: Option<(&str, ProbeKind)>,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<StoredSample>, BackendError> {
        let (ids, blocks, pending) = {
            let st = lock(&self.inner.state);
            let ids: Option<Vec<u32>> = only.map(|(target, probe)| {
                st.lookup
                    .get(&(Arc::from(target), probe))
                    .map(|v| v.iter().map(|(_, id)| *id).collect())
                    .unwrap_or_default()
            });
            if ids.as_ref().is_some_and(Vec::is_empty) {
                return Ok(Vec::new());
            }
            let blocks: Vec<u64> = st
                .index
                .iter()
                .filter(|(_, e)| e.meta.max_ts >= from_ms && e.meta.min_ts <= to_ms)
                .map(|(s, _)| *s)
                .collect();
            let pending: Vec<StoredSample> = st
                .pending
                .iter()
                .filter(|s| ids.as_ref().is_none_or(|ids| ids.contains(&s.series)))
                .cloned()
                .collect();
            (ids, blocks, pending)
        };
        let keep = |s: &StoredSample| {
            ids.as_ref().is_none_or(|ids| ids.contains(&s.series))
                && s.timestamp_ms >= from_ms
                && s.timestamp_ms <= to_ms
        };
        let mut out = Vec::new();
        for seq in blocks {
            if let Some(samples) = self.inner.read_block(seq)? {
                out.extend(samples.into_iter().filter(keep));
            }
        }
        out.extend(pending.into_iter().filter(keep));
        Ok(out)
    }

    /// One target's rounds of one probe with `from <= timestamp <= to` (ms), folded into
    /// buckets of `step_ms` (a multiple of a minute; buckets start at multiples of it). Reads
    /// the per-minute aggregates, the aggregates not yet written and the rounds not yet
    /// committed; only rounds from before the store kept aggregates are read from blocks.
    /// Returns (bucket start, aggregate), oldest first, buckets without rounds left out.
    pub fn aggregate(
        &self,
        target: &str,
        probe: ProbeKind,
        from_ms: i64,
        to_ms: i64,
        step_ms: i64,
    ) -> Result<Vec<(i64, Agg)>, BackendError> {
        let step = (step_ms.max(rollup::MINUTE_MS) / rollup::MINUTE_MS) * rollup::MINUTE_MS;
        let bucket = |t: i64| t.div_euclid(step) * step;
        let (ids, start, open, pending) = {
            let st = lock(&self.inner.state);
            let ids: Vec<u32> = st
                .lookup
                .get(&(Arc::from(target), probe))
                .map(|v| v.iter().map(|(_, id)| *id).collect())
                .unwrap_or_default();
            let open = st.rollups.in_memory(&ids, from_ms, to_ms);
            let pending: Vec<StoredSample> = st
                .pending
                .iter()
                .filter(|s| {
                    ids.contains(&s.series) && s.timestamp_ms >= from_ms && s.timestamp_ms <= to_ms
                })
                .cloned()
                .collect();
            (
                ids,
                (st.rollups.start, st.rollups.written_below),
                open,
                pending,
            )
        };
        // Written minutes are those before `written`, the ones in memory at or after it: a
        // commit moving minutes between the two while this reads counts them once.
        let (start, written) = start;
        // (minute or round time, aggregate), merged in time order.
        let mut parts: Vec<(i64, Agg)> = Vec::new();
        if from_ms < start {
            for s in self.query(target, probe, from_ms, to_ms.min(start - 1))? {
                let mut a = Agg::default();
                a.add(&s);
                parts.push((s.timestamp_ms, a));
            }
        }
        if written > from_ms.max(start) {
            let to = to_ms.min(written - 1);
            parts.extend(self.inner.written_rollups(&ids, from_ms.max(start), to)?);
        }
        parts.extend(open);
        for s in pending {
            let mut a = Agg::default();
            a.add(&s);
            parts.push((s.timestamp_ms, a));
        }
        parts.sort_by_key(|(t, _)| *t);
        let mut out: Vec<(i64, Agg)> = Vec::new();
        for (t, a) in parts {
            let b = bucket(t);
            match out.last_mut() {
                Some((lb, la)) if *lb == b => la.merge(&a),
                _ => out.push((b, a)),
            }
        }
        Ok(out)
    }

    /// Reads every block back, counting (and forgetting) the damaged ones. Returns
    /// (blocks read, blocks damaged).
    pub fn verify(&self) -> Result<(u64, u64), BackendError> {
        let seqs: Vec<u64> = lock(&self.inner.state).index.keys().copied().collect();
        let before = self.inner.counters.corrupt_blocks.load(Ordering::Relaxed);
        for seq in &seqs {
            if self.inner.closing.load(Ordering::Relaxed) {
                break;
            }
            self.inner.read_block(*seq)?;
        }
        let bad = self.inner.counters.corrupt_blocks.load(Ordering::Relaxed) - before;
        Ok((seqs.len() as u64, bad))
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.close();
    }
}

impl State {
    fn series_id(&mut self, target: &Arc<str>, probe: ProbeKind, labels: &Labels) -> u32 {
        let key = (target.clone(), probe);
        if let Some(v) = self.lookup.get(&key)
            && let Some((_, id)) = v.iter().find(|(l, _)| **l == *labels)
        {
            return *id;
        }
        let id = self.series.len() as u32;
        let labels = Arc::new(labels.clone());
        self.series.push(SeriesKey {
            target: target.clone(),
            probe,
            labels: labels.clone(),
        });
        self.lookup.entry(key).or_default().push((labels, id));
        self.unsaved_series.push(id);
        id
    }

    fn clamp(&self, c: Cursor) -> Cursor {
        if c.seq < self.floor {
            Cursor {
                seq: self.floor,
                idx: 0,
            }
        } else {
            c
        }
    }

    /// Forgets the oldest block; returns its sample count.
    fn pop_oldest(&mut self) -> Option<(u64, BlockMeta)> {
        let (seq, e) = self.index.pop_first()?;
        self.samples = self.samples.saturating_sub(u64::from(e.meta.count));
        self.block_bytes = self.block_bytes.saturating_sub(u64::from(e.meta.len));
        self.floor = seq + 1;
        self.floor_dirty = true;
        Some((seq, e.meta))
    }
}

impl Inner {
    fn backend_err(&self, e: &BackendError) {
        let msg = e.to_string();
        let mut err = lock(&self.error);
        if err.as_deref() != Some(&msg) {
            tracing::error!(store = %self.opts.dir.display(), "store: {msg}; samples are kept in memory and written when the disk works again");
        }
        *err = Some(msg);
    }

    /// Opens the engine, quarantining a damaged store. Loads the index, series and cursors.
    fn open_backend(&self) -> Result<(), OpenError> {
        let dir = &self.opts.dir;
        let marker = marker_path(dir);
        // An open that crashed the process (a panic deep in an engine) must not loop forever:
        // count attempts in a marker file, and quarantine after a few.
        let attempts: u32 = std::fs::read_to_string(&marker)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        if attempts >= MAX_FAILED_OPENS && dir.exists() {
            quarantine(
                dir,
                &format!("{attempts} attempts to open it did not finish"),
            )?;
            self.counters.quarantined.fetch_add(1, Ordering::Relaxed);
        }
        let _ = std::fs::write(&marker, format!("{}\n", attempts + 1));

        let head = Head::read(dir);
        let eopts = EngineOptions {
            max_bytes: self.opts.max_bytes,
        };
        let mut tries = 0;
        let backend = loop {
            tries += 1;
            match backend::open(self.opts.backend, dir, &eopts) {
                Ok(b) => break b,
                Err(BackendError::Corrupt(why)) if tries == 1 => {
                    quarantine(dir, &why)?;
                    self.counters.quarantined.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    let _ = std::fs::remove_file(&marker);
                    return Err(e.into());
                }
            }
        };
        match self.load(backend.as_ref(), head) {
            Ok(false) => {}
            Ok(true) => {
                // The engine recovered into a state it cannot be trusted to keep (fjall replays
                // a journal written after a lost one as already flushed): copy what is readable
                // into a fresh store and swap it in.
                let fresh = match self.salvage(backend) {
                    Ok(b) => b,
                    Err(e) => {
                        let _ = std::fs::remove_file(&marker);
                        return Err(e);
                    }
                };
                *self.backend.write().unwrap_or_else(|e| e.into_inner()) = Some(fresh);
                let _ = std::fs::remove_file(&marker);
                return Ok(());
            }
            Err(BackendError::Corrupt(why)) => {
                drop(backend);
                quarantine(dir, &why)?;
                self.counters.quarantined.fetch_add(1, Ordering::Relaxed);
                let fresh = backend::open(self.opts.backend, dir, &eopts)?;
                self.load(fresh.as_ref(), head)?;
                *self.backend.write().unwrap_or_else(|e| e.into_inner()) = Some(fresh);
                let _ = std::fs::remove_file(&marker);
                return Ok(());
            }
            Err(e) => {
                let _ = std::fs::remove_file(&marker);
                return Err(e.into());
            }
        }
        *self.backend.write().unwrap_or_else(|e| e.into_inner()) = Some(backend);
        let _ = std::fs::remove_file(&marker);
        Ok(())
    }

    /// Copies every readable block, the series and the cursors into a new engine directory,
    /// moves the damaged one to quarantine and opens the copy in its place.
    fn salvage(&self, old: Box<dyn Backend>) -> Result<Box<dyn Backend>, OpenError> {
        let dir = &self.opts.dir;
        let mut name = dir.file_name().unwrap_or_default().to_os_string();
        name.push(".salvage");
        let tmp = dir.with_file_name(name);
        let _ = std::fs::remove_dir_all(&tmp);
        let eopts = EngineOptions {
            max_bytes: self.opts.max_bytes,
        };
        let (seqs, series, cursors, floor, next_seq) = {
            let st = lock(&self.state);
            (
                st.index.keys().copied().collect::<Vec<_>>(),
                st.series.clone(),
                st.cursors.clone(),
                st.floor,
                st.next_seq,
            )
        };
        let new = backend::open(self.opts.backend, &tmp, &eopts)?;
        let mut c = Commit::default();
        let mut copied = 0u64;
        for seq in seqs {
            if let Some(samples) = self.read_block_with(old.as_ref(), seq)? {
                let (block, meta) = encode_block(&samples);
                c.index.push((seq, meta.encode().to_vec()));
                c.blocks.push((seq, block));
                copied += 1;
            }
            if c.blocks.len() >= 64 {
                new.commit(std::mem::take(&mut c), false)?;
            }
        }
        for (id, s) in series.iter().enumerate() {
            let mut k = META_SERIES.to_vec();
            k.extend_from_slice(&(id as u32).to_be_bytes());
            c.meta.push((k, s.encode()));
        }
        for (name, cur) in &cursors {
            let mut k = META_CURSOR.to_vec();
            k.extend_from_slice(name.as_bytes());
            c.meta.push((k, cur.encode()));
        }
        c.meta
            .push((META_FLOOR.to_vec(), floor.to_le_bytes().to_vec()));
        c.meta
            .push((META_NEXT.to_vec(), next_seq.to_le_bytes().to_vec()));
        new.commit(c, true)?;
        drop(new);
        drop(old);
        quarantine(dir, "recovered with losses; salvaged what was readable")?;
        std::fs::rename(&tmp, dir).map_err(|err| OpenError::Dir {
            path: tmp.clone(),
            err,
        })?;
        if let Some(parent) = dir.parent() {
            sync_dir(parent);
        }
        tracing::warn!(
            blocks = copied,
            "store: salvaged the readable blocks into a fresh store"
        );
        let b = backend::open(self.opts.backend, dir, &eopts)?;
        self.load(b.as_ref(), None)?;
        Ok(b)
    }

    /// Loads index, series and cursors; true when it found damage worth a salvage.
    fn load(&self, b: &dyn Backend, head: Option<Head>) -> Result<bool, BackendError> {
        let mut floor = 0u64;
        let mut next_min = 0u64;
        b.scan_meta(META_FLOOR, &mut |k, v| {
            if k == META_FLOOR && v.len() == 8 {
                floor = u64::from_le_bytes(v.try_into().unwrap_or_default());
            }
            Ok(())
        })?;
        b.scan_meta(META_NEXT, &mut |k, v| {
            if k == META_NEXT && v.len() == 8 {
                next_min = u64::from_le_bytes(v.try_into().unwrap_or_default());
            }
            Ok(())
        })?;
        let bounds = b.block_bounds()?;
        if let Some((first, _)) = bounds {
            floor = floor.max(first);
        }
        let mut index = BTreeMap::new();
        let mut bad_index = 0u64;
        let mut cum = 0u64;
        b.scan_index(floor, &mut |seq, v| {
            match BlockMeta::decode(v) {
                Some(meta) => {
                    index.insert(seq, IndexEntry { meta, cum });
                    cum += u64::from(meta.count);
                }
                None => bad_index += 1,
            }
            Ok(())
        })?;
        // Blocks without index entries (the index lost with a damaged journal): rebuild their
        // entries from the blocks themselves.
        let mut rebuilt = 0u64;
        if let Some((first, last)) = bounds {
            for seq in first.max(floor)..=last {
                if index.contains_key(&seq) {
                    continue;
                }
                if let Ok(Some(v)) = b.get_block(seq)
                    && let Ok(samples) = decode_block(&v)
                {
                    let (_, meta) = encode_block(&samples);
                    let meta = BlockMeta {
                        len: v.len() as u32,
                        ..meta
                    };
                    index.insert(seq, IndexEntry { meta, cum: 0 });
                    rebuilt += 1;
                }
            }
            if rebuilt > 0 {
                cum = 0;
                for e in index.values_mut() {
                    e.cum = cum;
                    cum += u64::from(e.meta.count);
                }
            }
        }
        let mut series: BTreeMap<u32, SeriesKey> = BTreeMap::new();
        let mut bad_series = 0u64;
        b.scan_meta(META_SERIES, &mut |k, v| {
            let id = k
                .get(1..5)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_be_bytes);
            match (id, SeriesKey::decode(v)) {
                (Some(id), Ok(s)) => {
                    series.insert(id, s);
                }
                _ => bad_series += 1,
            }
            Ok(())
        })?;
        for (id, k) in read_series_log(&self.opts.dir) {
            series.entry(id).or_insert(k);
        }
        let mut cursors = HashMap::new();
        b.scan_meta(META_CURSOR, &mut |k, v| {
            if let (Ok(name), Some(c)) = (std::str::from_utf8(&k[1..]), Cursor::decode(v)) {
                cursors.insert(name.to_string(), c);
            }
            Ok(())
        })?;

        let mut st = lock(&self.state);
        // Series ids are dense; a hole (damaged entry) gets a placeholder so ids stay stable.
        let n = series.keys().next_back().map_or(0, |m| *m as usize + 1);
        let mut dict = Vec::with_capacity(n);
        for id in 0..n as u32 {
            dict.push(series.remove(&id).unwrap_or_else(|| SeriesKey {
                target: Arc::from(format!("unknown-series-{id}")),
                probe: ProbeKind::PING,
                labels: Arc::default(),
            }));
        }
        st.lookup.clear();
        for (id, s) in dict.iter().enumerate() {
            st.lookup
                .entry((s.target.clone(), s.probe))
                .or_default()
                .push((s.labels.clone(), id as u32));
        }
        // Series created while the engine was down keep their ids after the loaded ones.
        let carried: Vec<SeriesKey> = st
            .unsaved_series
            .iter()
            .filter_map(|id| st.series.get(*id as usize).cloned())
            .collect();
        let carried_ids = std::mem::take(&mut st.unsaved_series);
        st.series = dict;
        if !carried.is_empty() {
            // Re-map pending samples onto fresh ids.
            let mut remap = HashMap::new();
            for (old, key) in carried_ids.iter().zip(carried) {
                let new = st.series_id(&key.target, key.probe, &key.labels);
                remap.insert(*old, new);
            }
            for s in st.pending.iter_mut() {
                if let Some(n) = remap.get(&s.series) {
                    s.series = *n;
                }
            }
        }
        st.samples = index.values().map(|e| u64::from(e.meta.count)).sum();
        st.block_bytes = index.values().map(|e| u64::from(e.meta.len)).sum();
        st.cum_end = cum;
        st.next_seq = index
            .keys()
            .next_back()
            .map_or(floor, |s| s + 1)
            .max(bounds.map_or(0, |(_, last)| last + 1))
            .max(floor)
            .max(next_min);
        st.index = index;
        st.floor = floor;
        st.cursors = cursors;
        let (blocks, samples) = (st.index.len(), st.samples);
        let recent: Vec<u64> = st.index.keys().rev().take(CHECK_ON_OPEN).copied().collect();
        drop(st);

        let mut damaged = rebuilt > 0 || bad_index + bad_series > 0;
        if bad_index + bad_series > 0 {
            self.counters
                .corrupt_blocks
                .fetch_add(bad_index + bad_series, Ordering::Relaxed);
            tracing::warn!(
                index_entries = bad_index,
                series = bad_series,
                "store: skipped damaged index or series entries"
            );
        }
        if rebuilt > 0 {
            self.counters.corrupt_blocks.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                blocks = rebuilt,
                "store: index entries were missing; rebuilt them from the blocks"
            );
        }
        if let Some(h) = head {
            let mut st = lock(&self.state);
            if h.next_seq > st.next_seq {
                // The engine came back behind what it had acknowledged: data was lost.
                let blocks = h.next_seq - st.next_seq;
                let lost = h.samples.saturating_sub(st.samples);
                damaged = true;
                st.next_seq = h.next_seq;
                drop(st);
                self.counters.dropped[DropReason::Corrupt.idx()].fetch_add(lost, Ordering::Relaxed);
                self.counters
                    .corrupt_blocks
                    .fetch_add(blocks, Ordering::Relaxed);
                tracing::error!(
                    blocks,
                    samples = lost,
                    "store: the newest {blocks} commits were lost to damage (about {lost} samples)"
                );
            }
        }
        // Read the newest blocks back now: a damaged tail shows at once, not at shipping time.
        for seq in recent {
            self.read_block_with(b, seq)?;
        }
        self.load_rollups(b)?;
        tracing::info!(
            store = %self.opts.dir.display(),
            backend = self.opts.backend.as_str(),
            blocks,
            samples,
            "store: opened"
        );
        Ok(damaged)
    }

    /// Loads where the aggregates start and how far they are written, and rebuilds the
    /// aggregates not yet written from the newest blocks (they are only in memory).
    fn load_rollups(&self, b: &dyn Backend) -> Result<(), BackendError> {
        let read = |name: &[u8]| -> Result<Option<i64>, BackendError> {
            let mut out = None;
            b.scan_meta(name, &mut |k, v| {
                if k == name && v.len() == 8 {
                    out = Some(i64::from_le_bytes(v.try_into().unwrap_or_default()));
                }
                Ok(())
            })?;
            Ok(out)
        };
        let (start, written) = (read(rollup::META_START)?, read(rollup::META_WRITTEN)?);
        let (blocks, newest) = {
            let st = lock(&self.state);
            let newest = st.index.values().next_back().map(|e| e.meta.max_ts);
            let from = written.or(start).unwrap_or(i64::MAX);
            let blocks: Vec<u64> = st
                .index
                .iter()
                .filter(|(_, e)| e.meta.max_ts >= from)
                .map(|(s, _)| *s)
                .collect();
            (blocks, newest)
        };
        let mut open = rollup::Open {
            // A store from before the aggregates: its rounds so far are read from the blocks.
            start: start
                .unwrap_or_else(|| newest.map_or(0, |t| rollup::minute_of(t) + rollup::MINUTE_MS)),
            start_dirty: start.is_none(),
            ..rollup::Open::default()
        };
        open.written_below = written.unwrap_or(open.start);
        open.cleaned_below = lock(&self.state)
            .index
            .values()
            .next()
            .map_or(0, |e| rollup::minute_of(e.meta.min_ts));
        for seq in blocks {
            if let Some(samples) = self.read_block_with(b, seq)? {
                open.fold(&samples, false);
            }
        }
        lock(&self.state).rollups = open;
        Ok(())
    }

    /// Adds the aggregates due to a commit: the minutes completed, and the written minutes that
    /// late rounds join (read and merged here).
    fn rollup_meta(&self, b: &dyn Backend, due: &Due, c: &mut Commit) -> Result<(), BackendError> {
        c.meta.extend(due.meta.iter().cloned());
        c.meta_removals = due.removals.clone();
        for ((series, minute), late) in &due.late {
            let k = rollup::key(*series, *minute);
            let mut merged = Agg::default();
            b.scan_meta_range(&k, &rollup::key(*series, minute + 1), &mut |_, v| {
                if let Ok(a) = Agg::decode(v, *minute) {
                    merged = a;
                }
                Ok(())
            })?;
            merged.merge(late);
            c.meta.push((k, merged.encode(*minute)));
        }
        Ok(())
    }

    /// The written aggregates of `ids` for the minutes overlapping `[from, to]`.
    fn written_rollups(
        &self,
        ids: &[u32],
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<(i64, Agg)>, BackendError> {
        let guard = self.backend.read().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        let Some(b) = guard.as_ref() else {
            return Ok(out);
        };
        let (from, to) = (
            rollup::minute_of(from_ms),
            rollup::minute_of(to_ms) + rollup::MINUTE_MS,
        );
        for id in ids {
            b.scan_meta_range(
                &rollup::key(*id, from),
                &rollup::key(*id, to),
                &mut |k, v| {
                    if let Some(m) = rollup::key_minute(k) {
                        match Agg::decode(v, m) {
                            Ok(a) => out.push((m, a)),
                            Err(e) => {
                                tracing::warn!(minute = m, "store: damaged aggregate skipped ({e})")
                            }
                        }
                    }
                    Ok(())
                },
            )?;
        }
        Ok(out)
    }

    /// Queues the deletion of aggregates of minutes no longer in the blocks.
    fn clean_rollups(&self, b: &dyn Backend) {
        let (cutoff, ids) = {
            let st = lock(&self.state);
            let oldest = st.index.values().next().map(|e| e.meta.min_ts);
            match oldest.and_then(|t| st.rollups.cleanup_due(t)) {
                Some(c) => (c, st.series.len() as u32),
                None => return,
            }
        };
        let mut keys = Vec::new();
        for id in 0..ids {
            let res = b.scan_meta_range(
                &rollup::key(id, 0),
                &rollup::key(id, cutoff),
                &mut |k, _| {
                    keys.push(k.to_vec());
                    Ok(())
                },
            );
            if let Err(e) = res {
                tracing::warn!("store: cannot list old aggregates: {e}");
                return;
            }
        }
        let mut st = lock(&self.state);
        st.rollups.removals.extend(keys);
        st.rollups.cleaned_below = cutoff;
    }

    fn read_block(&self, seq: u64) -> Result<Option<Vec<StoredSample>>, BackendError> {
        let guard = self.backend.read().unwrap_or_else(|e| e.into_inner());
        let Some(b) = guard.as_ref() else {
            return Err(BackendError::Io(
                lock(&self.error)
                    .clone()
                    .unwrap_or_else(|| "store is not open".into()),
            ));
        };
        self.read_block_with(b.as_ref(), seq)
    }

    /// Reads and decodes one block; a damaged or missing block is forgotten and counted.
    fn read_block_with(
        &self,
        b: &dyn Backend,
        seq: u64,
    ) -> Result<Option<Vec<StoredSample>>, BackendError> {
        self.counters.blocks_read.fetch_add(1, Ordering::Relaxed);
        let why = match b.get_block(seq) {
            Ok(Some(v)) => match decode_block(&v) {
                Ok(s) => return Ok(Some(s)),
                Err(e) => e.to_string(),
            },
            Ok(None) => "block missing".to_string(),
            Err(BackendError::Corrupt(m)) => m,
            Err(e) => return Err(e),
        };
        let mut st = lock(&self.state);
        if let Some(e) = st.index.remove(&seq) {
            st.samples = st.samples.saturating_sub(u64::from(e.meta.count));
            st.block_bytes = st.block_bytes.saturating_sub(u64::from(e.meta.len));
            st.index_removals.push(seq);
            self.counters.dropped[DropReason::Corrupt.idx()]
                .fetch_add(u64::from(e.meta.count), Ordering::Relaxed);
            self.counters.corrupt_blocks.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                seq,
                samples = e.meta.count,
                "store: damaged block dropped ({why})"
            );
        }
        Ok(None)
    }

    fn commit_loop(self: Arc<Self>, degraded: bool) {
        let mut last = Instant::now();
        let mut failures = u32::from(degraded);
        let mut retry_at: Option<Instant> =
            degraded.then(|| Instant::now() + Duration::from_secs(1));
        loop {
            {
                let mut st = lock(&self.state);
                loop {
                    if self.closing.load(Ordering::SeqCst) {
                        break;
                    }
                    let due = last + self.opts.commit_interval;
                    let now = Instant::now();
                    if (st.commit_now && retry_at.is_none()) || now >= due {
                        break;
                    }
                    let wait = due - now;
                    st = self
                        .wake
                        .wait_timeout(st, wait)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                st.commit_now = false;
            }
            last = Instant::now();
            let closing = self.closing.load(Ordering::SeqCst);
            if let Some(at) = retry_at {
                if Instant::now() < at && !closing {
                    continue;
                }
                if self
                    .backend
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .is_none()
                    || failures > 0
                {
                    self.reopen();
                }
            }
            match self.commit_round(closing) {
                Ok(()) => {
                    failures = 0;
                    retry_at = None;
                    if lock(&self.error).take().is_some() {
                        tracing::info!("store: writes work again");
                    }
                }
                Err(e) => {
                    failures += 1;
                    self.backend_err(&e);
                    // Capped low: a disk that has space again should be used again soon.
                    let backoff =
                        Duration::from_secs(1 << failures.min(4)).min(Duration::from_secs(10));
                    retry_at = Some(Instant::now() + backoff);
                }
            }
            if closing {
                return;
            }
            self.enforce_bounds();
        }
    }

    /// Drops and reopens the engine (fjall refuses writes after a failed one; a store that
    /// could not open at start is retried here).
    fn reopen(&self) {
        *self.backend.write().unwrap_or_else(|e| e.into_inner()) = None;
        // Cursors in memory are newer than on disk; pending samples stay where they are.
        let (cursors, dirty) = {
            let st = lock(&self.state);
            (st.cursors.clone(), st.dirty_cursors.clone())
        };
        match self.open_backend() {
            Ok(()) => {
                let mut st = lock(&self.state);
                for (k, v) in cursors {
                    st.cursors.insert(k, v);
                }
                st.dirty_cursors = dirty;
                tracing::info!(store = %self.opts.dir.display(), "store: reopened");
            }
            Err(OpenError::Backend(e)) => self.backend_err(&e),
            Err(e) => self.backend_err(&BackendError::Io(e.to_string())),
        }
    }

    /// Writes what is pending, in blocks of at most `MAX_BLOCK_SAMPLES`.
    fn commit_round(&self, force: bool) -> Result<(), BackendError> {
        // One commit at a time (the committer thread and `Store::flush`).
        let _serial = lock(&self.commit_serial);
        loop {
            let guard = self.backend.read().unwrap_or_else(|e| e.into_inner());
            let Some(b) = guard.as_ref() else {
                return Err(BackendError::Io(
                    lock(&self.error)
                        .clone()
                        .unwrap_or_else(|| "store is not open".into()),
                ));
            };
            // Take what to write under the lock; encode and write without it, so appends
            // (the probes) never wait for the disk.
            let due: Due;
            let (samples, seq, series, cursors, floor, removals) = {
                let mut st = lock(&self.state);
                let n = st.pending.len().min(MAX_BLOCK_SAMPLES);
                st.in_flight = n;
                let samples: Vec<StoredSample> = st.pending.iter().take(n).cloned().collect();
                let series: Vec<(u32, Vec<u8>)> = st
                    .unsaved_series
                    .iter()
                    .filter_map(|id| st.series.get(*id as usize).map(|s| (*id, s.encode())))
                    .collect();
                let cursors: Vec<(String, Cursor)> = st
                    .dirty_cursors
                    .iter()
                    .filter_map(|n| st.cursors.get(n).map(|c| (n.clone(), *c)))
                    .collect();
                let floor = st.floor_dirty.then_some(st.floor);
                let removals = std::mem::take(&mut st.index_removals);
                due = st.rollups.due();
                (samples, st.next_seq, series, cursors, floor, removals)
            };
            let n = samples.len();
            let mut c = Commit::default();
            let mut meta = None;
            if !samples.is_empty() {
                let (block, m) = encode_block(&samples);
                c.index.push((seq, m.encode().to_vec()));
                c.blocks.push((seq, block));
                meta = Some(m);
            }
            if !series.is_empty()
                && let Err(e) = append_series_log(&self.opts.dir, &series)
            {
                tracing::warn!("store: cannot append to the series log: {e}");
            }
            for (id, rec) in &series {
                let mut k = META_SERIES.to_vec();
                k.extend_from_slice(&id.to_be_bytes());
                c.meta.push((k, rec.clone()));
            }
            for (name, cur) in &cursors {
                let mut k = META_CURSOR.to_vec();
                k.extend_from_slice(name.as_bytes());
                c.meta.push((k, cur.encode()));
            }
            if let Some(f) = floor {
                c.meta.push((META_FLOOR.to_vec(), f.to_le_bytes().to_vec()));
            }
            c.index_removals = removals.clone();
            if let Err(e) = self.rollup_meta(b.as_ref(), &due, &mut c) {
                let mut st = lock(&self.state);
                st.in_flight = 0;
                st.index_removals.extend(removals);
                st.rollups.failed(due);
                return Err(e);
            }
            if c.is_empty() {
                lock(&self.state).in_flight = 0;
                return Ok(());
            }
            let bytes: usize = c.blocks.iter().map(|(_, v)| v.len() + 8).sum::<usize>()
                + c.index.iter().map(|(_, v)| v.len() + 8).sum::<usize>()
                + c.meta.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
            let res = b.commit(c, true);
            let mut st = lock(&self.state);
            st.in_flight = 0;
            match res {
                Ok(()) => {
                    st.pending.drain(..n);
                    st.rollups.written(&due);
                    st.rollups.fold(&samples, true);
                    // A set: at a start with thousands of targets every series is new at once.
                    let saved: HashSet<u32> = series.iter().map(|(id, _)| *id).collect();
                    st.unsaved_series.retain(|id| !saved.contains(id));
                    let written: Vec<String> = cursors
                        .iter()
                        .filter(|(name, cur)| st.cursors.get(name) == Some(cur))
                        .map(|(name, _)| name.clone())
                        .collect();
                    st.dirty_cursors.retain(|e| !written.contains(e));
                    if floor == Some(st.floor) {
                        st.floor_dirty = false;
                    }
                    if let Some(m) = meta {
                        let cum = st.cum_end;
                        st.index.insert(seq, IndexEntry { meta: m, cum });
                        st.cum_end += u64::from(m.count);
                        st.samples += u64::from(m.count);
                        st.block_bytes += u64::from(m.len);
                        st.next_seq = seq + 1;
                    }
                    let co = &self.counters;
                    co.commits.fetch_add(1, Ordering::Relaxed);
                    co.bytes_committed
                        .fetch_add(bytes as u64, Ordering::Relaxed);
                    co.samples_committed.fetch_add(n as u64, Ordering::Relaxed);
                    co.last_commit_ms
                        .store(now_ms().max(0) as u64, Ordering::Relaxed);
                    let head = Head {
                        next_seq: st.next_seq,
                        samples: st.samples,
                    };
                    self.write_head(head);
                }
                Err(e) => {
                    st.index_removals.extend(removals);
                    st.rollups.failed(due);
                    self.counters.commit_errors.fetch_add(1, Ordering::Relaxed);
                    return Err(e);
                }
            }
            let more = !st.pending.is_empty() && (force || st.pending.len() >= MAX_BLOCK_SAMPLES);
            if !more {
                return Ok(());
            }
        }
    }

    /// The store directory's real size, measured at most every few seconds.
    fn disk_usage(&self) -> u64 {
        let mut c = lock(&self.usage);
        if c.0.is_none_or(|t| t.elapsed() > Duration::from_secs(5)) {
            *c = (Some(Instant::now()), dir_usage(&self.opts.dir));
        }
        c.1
    }

    fn write_head(&self, h: Head) {
        use std::os::unix::fs::FileExt;
        let mut f = lock(&self.head_file);
        if f.is_none() {
            *f = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(head_path(&self.opts.dir))
                .ok();
        }
        if let Some(file) = f.as_ref()
            && file.write_all_at(&h.encode(), 0).is_err()
        {
            *f = None;
        }
    }

    /// Drops the oldest blocks beyond the age and byte bounds.
    fn enforce_bounds(&self) {
        let guard = self.backend.read().unwrap_or_else(|e| e.into_inner());
        let Some(b) = guard.as_ref() else { return };
        let max_age_ms = i64::try_from(self.opts.max_age.as_millis()).unwrap_or(i64::MAX);
        let cutoff = now_ms().saturating_sub(max_age_ms);
        let disk = self.disk_usage();
        let mut st = lock(&self.state);
        let floor_before = st.floor;
        // Age: whole blocks whose newest sample is past the bound.
        while let Some((_, e)) = st.index.first_key_value() {
            if e.meta.max_ts >= cutoff {
                break;
            }
            if let Some((_, m)) = st.pop_oldest() {
                self.counters.dropped[DropReason::Age.idx()]
                    .fetch_add(u64::from(m.count), Ordering::Relaxed);
            }
        }
        // Bytes: encoded blocks against their share of the bound (deterministic), and the
        // engine's real size as a safety net, at most once a minute.
        let budget = (self.opts.max_bytes as f64 * b.fill_factor()) as u64;
        let index_overhead = |st: &State| st.index.len() as u64 * 48;
        while st.block_bytes + index_overhead(&st) > budget && st.index.len() > 1 {
            match st.pop_oldest() {
                Some((_, m)) => {
                    self.counters.dropped[DropReason::Bytes.idx()]
                        .fetch_add(u64::from(m.count), Ordering::Relaxed);
                }
                None => break,
            }
        }
        let mut last_emergency = lock(&self.last_emergency);
        if disk > self.opts.max_bytes + self.opts.max_bytes / 10
            && last_emergency.is_none_or(|t| t.elapsed() > Duration::from_secs(60))
        {
            *last_emergency = Some(Instant::now());
            let target = st.block_bytes / 16;
            let mut freed = 0u64;
            while freed < target && st.index.len() > 1 {
                match st.pop_oldest() {
                    Some((_, m)) => {
                        freed += u64::from(m.len);
                        self.counters.dropped[DropReason::Bytes.idx()]
                            .fetch_add(u64::from(m.count), Ordering::Relaxed);
                    }
                    None => break,
                }
            }
            tracing::warn!(
                disk,
                max = self.opts.max_bytes,
                "store: the engine uses more disk than the bound; dropped the oldest 1/16"
            );
        }
        drop(last_emergency);
        let floor = st.floor;
        let head = Head {
            next_seq: st.next_seq,
            samples: st.samples,
        };
        drop(st);
        if floor != floor_before {
            self.clean_rollups(b.as_ref());
            self.write_head(head);
            if let Err(e) = b.drop_below(floor) {
                tracing::warn!("store: reclaiming space failed: {e}");
            }
        }
    }
}
