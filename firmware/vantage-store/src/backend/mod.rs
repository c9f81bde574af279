//! The key-value engines the store can sit on. The store needs very little from them: atomic,
//! durable commits of a few keys; point reads; ordered scans of the small index; dropping the
//! oldest blocks; the size on disk.

use std::fmt;
use std::path::Path;

pub mod fjall;
#[cfg(feature = "sled")]
pub mod sled;

/// Which engine a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum BackendKind {
    #[default]
    Fjall,
    Sled,
}

impl BackendKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Fjall => "fjall",
            BackendKind::Sled => "sled",
        }
    }

    /// Whether this build includes the engine.
    pub fn available(self) -> bool {
        match self {
            BackendKind::Fjall => true,
            BackendKind::Sled => cfg!(feature = "sled"),
        }
    }
}

impl std::str::FromStr for BackendKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "fjall" => Ok(BackendKind::Fjall),
            "sled" => Ok(BackendKind::Sled),
            _ => Err(format!("unknown store backend {s:?} (fjall or sled)")),
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An engine error, classified by what the store should do about it.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The data on disk is damaged or unreadable: recover or quarantine.
    #[error("damaged store: {0}")]
    Corrupt(String),
    /// Out of space, read-only file system, I/O failure: keep the data, retry later.
    #[error("I/O error: {0}")]
    Io(String),
    /// Another process holds the store.
    #[error("store is locked by another process: {0}")]
    Locked(String),
    /// The engine refuses further writes until it is reopened (fjall after a failed write).
    #[error("store needs to be reopened: {0}")]
    Poisoned(String),
    /// The engine's files are in a format newer than this build reads (a newer version wrote
    /// them): left untouched, neither opened nor moved aside.
    #[error("store written by a newer version: {0}; left untouched")]
    Newer(String),
}

impl BackendError {
    pub fn is_no_space(&self) -> bool {
        match self {
            BackendError::Io(m) | BackendError::Poisoned(m) => {
                m.contains("No space left") || m.contains("StorageFull") || m.contains("ENOSPC")
            }
            _ => false,
        }
    }
}

/// One group commit: written atomically and synced to the device before `commit` returns.
#[derive(Debug, Default)]
pub struct Commit {
    /// (sequence number, encoded block)
    pub blocks: Vec<(u64, Vec<u8>)>,
    /// (sequence number, encoded `BlockMeta`)
    pub index: Vec<(u64, Vec<u8>)>,
    /// Index entries to delete (blocks found damaged).
    pub index_removals: Vec<u64>,
    /// Small named values: series dictionary, cursors, the floor, per-minute aggregates.
    pub meta: Vec<(Vec<u8>, Vec<u8>)>,
    /// Meta keys to delete (aggregates of minutes no longer stored).
    pub meta_removals: Vec<Vec<u8>>,
}

impl Commit {
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
            && self.index.is_empty()
            && self.index_removals.is_empty()
            && self.meta.is_empty()
            && self.meta_removals.is_empty()
    }
}

/// Called for each entry of an ordered scan: (sequence number, value).
pub type SeqVisitor<'a> = dyn FnMut(u64, &[u8]) -> Result<(), BackendError> + 'a;
/// Called for each meta entry: (key, value).
pub type MetaVisitor<'a> = dyn FnMut(&[u8], &[u8]) -> Result<(), BackendError> + 'a;

/// Which meta entries a scan visits.
#[derive(Debug, Clone, Copy)]
pub enum MetaKeys<'a> {
    /// Those whose key starts with this.
    Prefix(&'a [u8]),
    /// Those with `from <= key < to`.
    Range(&'a [u8], &'a [u8]),
}

/// Hands each entry of an engine's scan to `f`, in the scan's order, its key without the first
/// `tag` bytes (the engine's own marker of the table, if it has one).
pub(crate) fn visit_entries<K: AsRef<[u8]>, V: AsRef<[u8]>>(
    entries: impl Iterator<Item = Result<(K, V), BackendError>>,
    tag: usize,
    f: &mut MetaVisitor<'_>,
) -> Result<(), BackendError> {
    for e in entries {
        let (k, v) = e?;
        f(&k.as_ref()[tag..], v.as_ref())?;
    }
    Ok(())
}

/// [`visit_entries`] for an index scan: each entry by the sequence number its key holds after
/// the first `tag` bytes; entries with other keys are skipped.
pub(crate) fn visit_index<K: AsRef<[u8]>, V: AsRef<[u8]>>(
    entries: impl Iterator<Item = Result<(K, V), BackendError>>,
    tag: usize,
    f: &mut SeqVisitor<'_>,
) -> Result<(), BackendError> {
    visit_entries(entries, tag, &mut |k, v| match key_seq(k) {
        Some(seq) => f(seq, v),
        None => Ok(()),
    })
}

/// The engine interface. Keys of blocks and index entries are sequence numbers; both only grow.
pub trait Backend: Send + Sync + 'static {
    fn kind(&self) -> BackendKind;
    /// Writes the commit atomically; durable on return when `sync` is set.
    fn commit(&self, c: Commit, sync: bool) -> Result<(), BackendError>;
    fn get_block(&self, seq: u64) -> Result<Option<Vec<u8>>, BackendError>;
    /// Every index entry at or above `from`, in order.
    fn scan_index(&self, from: u64, f: &mut SeqVisitor<'_>) -> Result<(), BackendError>;
    /// Every meta entry of `keys`, in key order.
    fn scan_meta_keys(
        &self,
        keys: MetaKeys<'_>,
        f: &mut MetaVisitor<'_>,
    ) -> Result<(), BackendError>;
    /// Every meta entry whose key starts with `prefix`.
    fn scan_meta(&self, prefix: &[u8], f: &mut MetaVisitor<'_>) -> Result<(), BackendError> {
        self.scan_meta_keys(MetaKeys::Prefix(prefix), f)
    }
    /// Every meta entry with `from <= key < to`, in key order.
    fn scan_meta_range(
        &self,
        from: &[u8],
        to: &[u8],
        f: &mut MetaVisitor<'_>,
    ) -> Result<(), BackendError> {
        self.scan_meta_keys(MetaKeys::Range(from, to), f)
    }
    /// The lowest and highest block sequence numbers present.
    fn block_bounds(&self) -> Result<Option<(u64, u64)>, BackendError>;
    /// Reclaims the space of blocks and index entries below `seq` (best effort; may be lazy).
    fn drop_below(&self, seq: u64) -> Result<(), BackendError>;
    /// Share of the byte bound that encoded blocks may fill: the rest is the engine's overhead
    /// (journal, tables being written, space not yet reclaimed). Measured in `docs/STORE.md`.
    fn fill_factor(&self) -> f64;
}

/// Opens the engine of `kind` in `dir` (created if missing).
pub fn open(
    kind: BackendKind,
    dir: &Path,
    opts: &EngineOptions,
) -> Result<Box<dyn Backend>, BackendError> {
    match kind {
        BackendKind::Fjall => Ok(Box::new(fjall::FjallBackend::open(dir, opts)?)),
        #[cfg(feature = "sled")]
        BackendKind::Sled => Ok(Box::new(sled::SledBackend::open(dir, opts)?)),
        #[cfg(not(feature = "sled"))]
        BackendKind::Sled => Err(BackendError::Io(
            "this build has no sled backend (cargo feature \"sled\")".into(),
        )),
    }
}

/// Tuning derived from the store's limits.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// The byte bound of the store: in-memory buffers are sized from it.
    pub max_bytes: u64,
}

pub(crate) fn block_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

pub(crate) fn key_seq(k: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(k.try_into().ok()?))
}
