//! fjall: an LSM tree with a journal. Blocks and index entries live in keyspaces with FIFO
//! compaction (whole tables are dropped, never rewritten), which makes them a ring buffer.

use std::path::Path;
use std::sync::Arc;

use fjall::compaction::Fifo;
use fjall::{AbstractTree, Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use crate::format::ENGINE_FJALL;

use super::{
    Backend, BackendError, BackendKind, Commit, EngineOptions, MetaKeys, MetaVisitor, SeqVisitor,
    block_key, key_seq, visit_entries, visit_index,
};

/// Table file descriptors fjall may keep between reads: none (see `open`).
const CACHED_TABLE_FILES: usize = 0;

/// Files of the store's directory open at rest, whatever the store's size and age: the lock
/// file and the active journal. Add one per block read in flight and, while the background
/// worker runs, the table a flush writes (or a `meta` compaction's inputs and output).
pub const MAX_OPEN_FILES: usize = 2;

/// Largest memtable of the `blocks` keyspace. Every committed block stays in the active
/// memtable until it reaches this size, and a full one is held again while it is flushed, so
/// up to twice this is heap. Each flush makes a table, which FIFO never merges; a table pins
/// its index and filter blocks (`blocks` stays in L0, where both are pinned). Those grow with
/// the data, not with the table count: one index entry per 4 KiB data block (or per block,
/// when larger) and about 2.4 bytes of filter per block (false-positive rate 1e-4). Measured
/// (tests): 652 bytes for a 2 MiB table of 64 KiB blocks, 1.4 % of the data for 256-byte
/// blocks. What smaller tables add is each table's fixed part (its struct, path, metadata and
/// the pinned blocks' headers, estimated at 1 KiB): at the 4 GiB bound blocks fill at most
/// 70 % of it, 2.8 GiB, about 1,400 tables of 2 MiB, so about 1.4 MiB against 0.35 MiB for
/// 8 MiB tables, in exchange for up to 12 MiB less heap at any size of the store. fjall
/// persists a keyspace's memtable size when it creates it: an existing store keeps its own.
const MAX_BLOCKS_MEMTABLE: u64 = 2 << 20;
/// Largest memtable of `index` (a few dozen bytes per block: it seldom fills).
const MAX_INDEX_MEMTABLE: u64 = 8 << 20;
/// Smallest memtable: small memtables keep memory low on a Pi and make FIFO tables small
/// enough to drop at a fine grain under a small byte bound.
const MIN_MEMTABLE: u64 = 256 << 10;

/// Memtable sizes of `blocks` and `index` for a store bounded to `max_bytes`.
fn memtable_sizes(max_bytes: u64) -> (u64, u64) {
    let want = max_bytes / 32;
    (
        want.clamp(MIN_MEMTABLE, MAX_BLOCKS_MEMTABLE),
        want.clamp(MIN_MEMTABLE, MAX_INDEX_MEMTABLE),
    )
}

#[allow(missing_debug_implementations)]
pub struct FjallBackend {
    db: Database,
    blocks: Keyspace,
    index: Keyspace,
    meta: Keyspace,
}

/// I/O errors that mean missing or mangled files rather than a device that refuses writes.
pub(crate) fn io_err(e: std::io::Error) -> BackendError {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::NotFound | K::UnexpectedEof | K::InvalidData | K::InvalidInput | K::AlreadyExists => {
            BackendError::Corrupt(e.to_string())
        }
        _ => BackendError::Io(e.to_string()),
    }
}

fn err(e: fjall::Error) -> BackendError {
    match e {
        fjall::Error::Io(e) => io_err(e),
        fjall::Error::Storage(fjall::LsmError::Io(e)) => io_err(e),
        fjall::Error::Poisoned => BackendError::Poisoned("a previous write failed".into()),
        fjall::Error::Locked => BackendError::Locked("fjall lock".into()),
        other => BackendError::Corrupt(format!("{other:?}")),
    }
}

/// fjall's format marker in the engine's directory: `FJL` and the format's version.
pub const VERSION_FILE: &str = "version";
const VERSION_MAGIC: &[u8] = b"FJL";

/// Refuses a directory whose fjall format is newer than this build reads, before fjall opens
/// it: fjall calls any version it does not know invalid, which the store would take for
/// damage and move aside, losing a newer build's rounds on a rollback.
fn check_version(dir: &Path) -> Result<(), BackendError> {
    let Ok(b) = std::fs::read(dir.join(VERSION_FILE)) else {
        return Ok(());
    };
    match b.get(..4) {
        Some([m0, m1, m2, v]) if [*m0, *m1, *m2] == VERSION_MAGIC && ENGINE_FJALL.is_newer(*v) => {
            Err(BackendError::Newer(format!(
                "its fjall format is {v}, this version reads up to {}",
                ENGINE_FJALL.reads_newest
            )))
        }
        _ => Ok(()),
    }
}

impl FjallBackend {
    pub fn open(dir: &Path, opts: &EngineOptions) -> Result<Self, BackendError> {
        std::fs::create_dir_all(dir).map_err(|e| BackendError::Io(e.to_string()))?;
        check_version(dir)?;
        let (blocks_memtable, memtable) = memtable_sizes(opts.max_bytes);
        // Open files (fjall 3.1 / lsm-tree 3.1 source): the lock file and the active journal
        // stay open (sealed journals, version files and directory fsyncs are closed at once).
        // A table's file is opened to read its trailer, pinned index and filter blocks (kept
        // in memory, not as fds) and closed; later block reads take the fd from the shared
        // descriptor table or open the file and offer it to that table. That cache is the only
        // holder of table fds between reads, and its cap is not a strict bound: the cache has
        // 4 shards per CPU (a power of two, at most 32) of ceil(cap/shards) each, so a cap of 4
        // keeps 8 open on 2 CPUs; any cap above 0 also fills as tables accumulate (default
        // 900). `None` is worse: every table pins its fd. A cap of 0 admits nothing: a read
        // that misses the block cache opens its table and closes it after the read, an `open`
        // per block read at the store's read rate (charts, resends), small beside the read.
        // In exchange the store's open files stay at `MAX_OPEN_FILES`.
        let db = Database::builder(dir)
            .max_cached_files(Some(CACHED_TABLE_FILES))
            .worker_threads(1)
            .cache_size(4 << 20)
            .max_journaling_size(64 << 20)
            .manual_journal_persist(true)
            .open()
            .map_err(err)?;
        let ring = |memtable| {
            move || {
                KeyspaceCreateOptions::default()
                    .compaction_strategy(Arc::new(Fifo::new(u64::MAX, None)))
                    .max_memtable_size(memtable)
                    .manual_journal_persist(true)
            }
        };
        let blocks = db.keyspace("blocks", ring(blocks_memtable)).map_err(err)?;
        let index = db.keyspace("index", ring(memtable)).map_err(err)?;
        let meta = db
            .keyspace("meta", || {
                KeyspaceCreateOptions::default()
                    .max_memtable_size(1 << 20)
                    .manual_journal_persist(true)
            })
            .map_err(err)?;
        Ok(Self {
            db,
            blocks,
            index,
            meta,
        })
    }
}

impl Backend for FjallBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Fjall
    }

    fn commit(&self, c: Commit, sync: bool) -> Result<(), BackendError> {
        let mut b = self.db.batch();
        for (seq, v) in c.blocks {
            b.insert(&self.blocks, block_key(seq), v);
        }
        for (seq, v) in c.index {
            b.insert(&self.index, block_key(seq), v);
        }
        for seq in c.index_removals {
            b.remove(&self.index, block_key(seq));
        }
        for (k, v) in c.meta {
            b.insert(&self.meta, k, v);
        }
        for k in c.meta_removals {
            b.remove(&self.meta, k);
        }
        let b = b.durability(sync.then_some(PersistMode::SyncAll));
        b.commit().map_err(err)
    }

    fn get_block(&self, seq: u64) -> Result<Option<Vec<u8>>, BackendError> {
        self.blocks
            .get(block_key(seq))
            .map(|v| v.map(|v| v.to_vec()))
            .map_err(err)
    }

    fn scan_index(&self, from: u64, f: &mut SeqVisitor<'_>) -> Result<(), BackendError> {
        let entries = self.index.range(block_key(from)..);
        visit_index(entries.map(|g| g.into_inner().map_err(err)), 0, f)
    }

    fn scan_meta_keys(
        &self,
        keys: MetaKeys<'_>,
        f: &mut MetaVisitor<'_>,
    ) -> Result<(), BackendError> {
        let entry = |g: fjall::Guard| g.into_inner().map_err(err);
        match keys {
            MetaKeys::Prefix(p) => visit_entries(self.meta.prefix(p).map(entry), 0, f),
            MetaKeys::Range(from, to) => {
                visit_entries(self.meta.range(from.to_vec()..to.to_vec()).map(entry), 0, f)
            }
        }
    }

    fn block_bounds(&self) -> Result<Option<(u64, u64)>, BackendError> {
        let first = match self.blocks.first_key_value() {
            Some(g) => g.key().map_err(err)?,
            None => return Ok(None),
        };
        let last = match self.blocks.last_key_value() {
            Some(g) => g.key().map_err(err)?,
            None => return Ok(None),
        };
        Ok(key_seq(&first).zip(key_seq(&last)))
    }

    fn drop_below(&self, seq: u64) -> Result<(), BackendError> {
        // Drops the tables that lie wholly below `seq`: no rewrite, no tombstones.
        self.blocks
            .tree
            .drop_range(..block_key(seq).to_vec())
            .map_err(|e| err(e.into()))?;
        self.index
            .tree
            .drop_range(..block_key(seq).to_vec())
            .map_err(|e| err(e.into()))
    }

    fn fill_factor(&self) -> f64 {
        0.7
    }
}

impl Drop for FjallBackend {
    fn drop(&mut self) {
        // Make what was committed without sync durable too; errors were already reported.
        let _ = self.db.persist(PersistMode::SyncAll);
    }
}

#[cfg(test)]
mod tests;
