//! How the store is set up, and its defaults.

use std::path::PathBuf;
use std::time::Duration;

use crate::backend::BackendKind;

/// A quarter of a 16 GB card.
pub const DEFAULT_MAX_BYTES: u64 = 4 << 30;
/// Thirty days.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);
/// The durability window: at most this much is lost on a power cut.
pub const DEFAULT_COMMIT_INTERVAL: Duration = Duration::from_secs(5);
pub const DEFAULT_COMMIT_SAMPLES: usize = 10_000;
pub const DEFAULT_MAX_PENDING: usize = 1_000_000;

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
            max_bytes: DEFAULT_MAX_BYTES,
            max_age: DEFAULT_MAX_AGE,
            commit_interval: DEFAULT_COMMIT_INTERVAL,
            commit_samples: DEFAULT_COMMIT_SAMPLES,
            max_pending: DEFAULT_MAX_PENDING,
        }
    }
}
