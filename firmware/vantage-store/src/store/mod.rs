//! The durable sample store: group commit, bounds, cursors, recovery.
//!
//! This file holds the [`Store`] type, its shared state and its small API (open, append,
//! flush, close, stats). Each job has its own file: `commit` (the group commit), `bounds`
//! (age and size limits), `cursor` (shipping positions), `query` (reads for the charts),
//! `load` (the state read back from the engine on open), `recovery` (opening the engine,
//! quarantine, salvage) and `sidecar` (the files kept beside the engine).

// The crate does not enable it everywhere yet; this module keeps to it.
#![warn(clippy::too_many_lines)]

mod bounds;
mod commit;
mod cursor;
mod details;
mod load;
mod query;
mod recovery;
mod sidecar;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};
use vantage_core::{LockExt, RwLockExt};

use vantage_core::{ProbeKind, Sample};

use crate::backend::{Backend, BackendError, BackendKind};
use crate::codec::{BlockMeta, StoredSample, unix_ms};
use crate::rollup;
use crate::series::{Labels, SeriesKey};

pub use bounds::dir_usage;
pub use cursor::{Cursor, ReadBatch};
pub use details::StoredDetail;
pub use recovery::quarantine_dir;

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
    /// Round details (trace paths, DNS answers) not yet written.
    details: details::Details,
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

fn now_ms() -> i64 {
    unix_ms(SystemTime::now())
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
        let mut st = inner.state.lock_or_recover();
        for (sample, labels) in samples {
            let id = st.series_id(&sample.target, sample.probe, labels);
            let stored = StoredSample::from_sample(sample, id);
            st.details.note(id, stored.timestamp_ms, sample);
            st.pending.push_back(stored);
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
            let _st = self.inner.state.lock_or_recover();
            self.inner.closing.store(true, Ordering::SeqCst);
        }
        self.inner.wake.notify_all();
        if let Some(h) = self.committer.lock_or_recover().take() {
            let _ = h.join();
        }
        *self.inner.backend.write_or_recover() = None;
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
        let st = inner.state.lock_or_recover();
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
            error: inner.error.lock_or_recover().clone(),
            last_commit: (last > 0).then(|| SystemTime::UNIX_EPOCH + Duration::from_millis(last)),
        }
    }

    /// The series of a stored sample.
    pub fn series(&self, id: u32) -> Option<SeriesKey> {
        self.inner
            .state
            .lock_or_recover()
            .series
            .get(id as usize)
            .cloned()
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.close();
    }
}

impl State {
    /// The ids of a target's series of one probe, one for each label set it was stored with.
    fn ids_of(&self, target: &str, probe: ProbeKind) -> Vec<u32> {
        self.lookup
            .get(&(Arc::from(target), probe))
            .map(|v| v.iter().map(|(_, id)| *id).collect())
            .unwrap_or_default()
    }

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
}

impl Inner {
    fn backend_err(&self, e: &BackendError) {
        let msg = e.to_string();
        let mut err = self.error.lock_or_recover();
        if err.as_deref() != Some(&msg) {
            tracing::error!(store = %self.opts.dir.display(), "store: {msg}; samples are kept in memory and written when the disk works again");
        }
        *err = Some(msg);
    }

    /// The error while the engine is not open: the last one it gave, if any.
    fn not_open(&self) -> BackendError {
        BackendError::Io(
            self.error
                .lock_or_recover()
                .clone()
                .unwrap_or_else(|| "store is not open".into()),
        )
    }
}
