//! The durable sample store: group commit, bounds, cursors, recovery.
//!
//! This file holds the [`Store`]'s small API (open, append, flush, close, stats). What the
//! files share, the `Store` type and its state, is in `state` (and `options`, the settings),
//! which imports none of them, so no file imports this one back. Each job has its own file:
//! `commit` (the group commit), `bounds` (age and size limits), `cursor` (shipping
//! positions), `query` (reads for the charts), `details` and `detail_reads` (round details
//! kept beside the figures), `load` (the state read back from the engine on open),
//! `recovery` (opening the engine, quarantine, salvage) and `sidecar` (the files kept beside
//! the engine).

// The crate does not enable it everywhere yet; this module keeps to it.
#![warn(clippy::too_many_lines)]

mod bounds;
mod commit;
mod cursor;
mod detail_reads;
mod details;
mod load;
mod options;
mod query;
mod recovery;
mod sidecar;
mod state;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, SystemTime};
use vantage_core::{LockExt, RwLockExt};

use vantage_core::Sample;

use crate::backend::BackendError;
use crate::codec::StoredSample;
use crate::series::{Labels, SeriesKey};

pub use bounds::dir_usage;
pub use cursor::ReadBatch;
pub use details::StoredDetail;
pub use options::{
    DEFAULT_COMMIT_INTERVAL, DEFAULT_COMMIT_SAMPLES, DEFAULT_MAX_AGE, DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PENDING, StoreOptions,
};
pub use recovery::quarantine_dir;
use state::{Counters, Inner, State};
pub use state::{Cursor, DropReason, OpenError, Store};

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
    /// Samples in intact blocks this build cannot decode (written by a newer version), found
    /// so far: kept on disk untouched and skipped by queries and shipping, until the bounds
    /// drop them like any block.
    pub unreadable_samples: u64,
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
        let mut st = inner.state.lock_or_recover();
        let disk_bytes = inner.disk_usage();
        let st = &mut *st;
        // Blocks the bounds dropped since are no longer held.
        st.unreadable.retain(|seq| st.index.contains_key(seq));
        let unreadable_samples = st
            .unreadable
            .iter()
            .filter_map(|seq| st.index.get(seq))
            .map(|e| u64::from(e.meta.count))
            .sum();
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
            unreadable_samples,
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
