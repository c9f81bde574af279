//! What the store's files share: the [`Store`] handle, its engine and state ([`Inner`],
//! [`State`]), its counters, the meta keys and the shipping [`Cursor`]. It imports none of the
//! files that work on them.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime};
use vantage_core::LockExt;

use vantage_core::ProbeKind;

use crate::backend::{Backend, BackendError};
use crate::codec::{BlockMeta, StoredSample, unix_ms};
use crate::rollup;
use crate::series::{Labels, SeriesKey};

use super::details;
use super::options::StoreOptions;

pub(super) const META_FLOOR: &[u8] = b"f";
pub(super) const META_SERIES: &[u8] = b"s";
pub(super) const META_CURSOR: &[u8] = b"c";
/// A lower bound for the next sequence number (set by a salvage, so numbers are never reused).
pub(super) const META_NEXT: &[u8] = b"n";

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
    pub(super) fn idx(self) -> usize {
        self as usize
    }
}

/// Position of the next sample to ship: block sequence number and index within the block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct Cursor {
    pub seq: u64,
    pub idx: u32,
}

impl Cursor {
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut v = self.seq.to_le_bytes().to_vec();
        v.extend_from_slice(&self.idx.to_le_bytes());
        v
    }
    pub(super) fn decode(b: &[u8]) -> Option<Self> {
        if b.len() != 12 {
            return None;
        }
        Some(Self {
            seq: u64::from_le_bytes(b[..8].try_into().ok()?),
            idx: u32::from_le_bytes(b[8..].try_into().ok()?),
        })
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) struct IndexEntry {
    pub(super) meta: BlockMeta,
    /// Samples committed before this block since the store opened (for backlog arithmetic).
    pub(super) cum: u64,
}

/// A series id with the labels it was created for.
pub(super) type LabelledId = (Arc<Labels>, u32);

#[derive(Default)]
pub(super) struct State {
    pub(super) pending: VecDeque<StoredSample>,
    pub(super) series: Vec<SeriesKey>,
    pub(super) lookup: HashMap<(Arc<str>, ProbeKind), Vec<LabelledId>>,
    /// Series whose dictionary entry is not yet on disk.
    pub(super) unsaved_series: Vec<u32>,
    pub(super) index: BTreeMap<u64, IndexEntry>,
    pub(super) floor: u64,
    pub(super) floor_dirty: bool,
    pub(super) next_seq: u64,
    pub(super) cum_end: u64,
    pub(super) samples: u64,
    pub(super) block_bytes: u64,
    pub(super) cursors: HashMap<String, Cursor>,
    pub(super) dirty_cursors: Vec<String>,
    pub(super) index_removals: Vec<u64>,
    pub(super) commit_now: bool,
    /// Pending samples at the front being written by a commit right now.
    pub(super) in_flight: usize,
    /// Per-minute aggregates not yet written.
    pub(super) rollups: rollup::Open,
    /// Round details (trace paths, DNS answers) not yet written.
    pub(super) details: details::Details,
    /// Intact blocks found in a format this build cannot decode (a newer build's): kept in
    /// the index and on disk, skipped by reads, copied as they are by a salvage.
    pub(super) unreadable: BTreeSet<u64>,
    /// Raw dictionary entries of series whose probe this build does not know (a newer
    /// build's), by id: a placeholder stands in for them, a salvage copies these bytes.
    pub(super) unknown_series: BTreeMap<u32, Vec<u8>>,
}

#[derive(Default)]
pub(super) struct Counters {
    pub(super) dropped: [AtomicU64; 4],
    pub(super) commits: AtomicU64,
    pub(super) commit_errors: AtomicU64,
    pub(super) bytes_committed: AtomicU64,
    pub(super) samples_committed: AtomicU64,
    pub(super) quarantined: AtomicU64,
    pub(super) corrupt_blocks: AtomicU64,
    pub(super) blocks_read: AtomicU64,
    pub(super) last_commit_ms: AtomicU64,
}

pub(super) struct Inner {
    pub(super) opts: StoreOptions,
    pub(super) backend: RwLock<Option<Box<dyn Backend>>>,
    pub(super) state: Mutex<State>,
    pub(super) wake: Condvar,
    pub(super) counters: Counters,
    pub(super) error: Mutex<Option<String>>,
    pub(super) closing: AtomicBool,
    pub(super) last_emergency: Mutex<Option<Instant>>,
    pub(super) head_file: Mutex<Option<std::fs::File>>,
    pub(super) usage: Mutex<(Option<Instant>, u64)>,
    pub(super) commit_serial: Mutex<()>,
}

/// The store. Cheap to share behind an `Arc`; all methods take `&self`.
pub struct Store {
    pub(super) inner: Arc<Inner>,
    pub(super) committer: Mutex<Option<JoinHandle<()>>>,
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

pub(super) fn now_ms() -> i64 {
    unix_ms(SystemTime::now())
}

impl State {
    /// The ids of a target's series of one probe, one for each label set it was stored with.
    pub(super) fn ids_of(&self, target: &str, probe: ProbeKind) -> Vec<u32> {
        self.lookup
            .get(&(Arc::from(target), probe))
            .map(|v| v.iter().map(|(_, id)| *id).collect())
            .unwrap_or_default()
    }

    pub(super) fn series_id(
        &mut self,
        target: &Arc<str>,
        probe: ProbeKind,
        labels: &Labels,
    ) -> u32 {
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
    /// The state for a query that reads written aggregates after it lets the lock go. Late
    /// rounds (of minutes already written) move from memory into the table with a commit: a
    /// query overlapping that move would count them twice or not at all. While any exist (in
    /// memory, in flight, or pending), the query holds off commits (`commit_serial`, taken
    /// before the state as the committer does) until its guard is dropped. Rare: a clock set
    /// back.
    pub(super) fn state_between_commits(
        &self,
    ) -> (Option<MutexGuard<'_, ()>>, MutexGuard<'_, State>) {
        let st = self.state.lock_or_recover();
        let late = |st: &State| {
            let r = &st.rollups;
            r.late_in_flight
                || !r.late.is_empty()
                || st.pending.iter().any(|s| s.timestamp_ms < r.written_below)
        };
        if !late(&st) {
            return (None, st);
        }
        drop(st);
        let serial = self.commit_serial.lock_or_recover();
        (Some(serial), self.state.lock_or_recover())
    }

    pub(super) fn backend_err(&self, e: &BackendError) {
        let msg = e.to_string();
        let mut err = self.error.lock_or_recover();
        if err.as_deref() != Some(&msg) {
            tracing::error!(store = %self.opts.dir.display(), "store: {msg}; samples are kept in memory and written when the disk works again");
        }
        *err = Some(msg);
    }

    /// The error while the engine is not open: the last one it gave, if any.
    pub(super) fn not_open(&self) -> BackendError {
        BackendError::Io(
            self.error
                .lock_or_recover()
                .clone()
                .unwrap_or_else(|| "store is not open".into()),
        )
    }
}
