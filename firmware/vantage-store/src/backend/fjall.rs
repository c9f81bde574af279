//! fjall: an LSM tree with a journal. Blocks and index entries live in keyspaces with FIFO
//! compaction (whole tables are dropped, never rewritten), which makes them a ring buffer.

use std::path::Path;
use std::sync::Arc;

use fjall::compaction::Fifo;
use fjall::{AbstractTree, Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use super::{
    Backend, BackendError, BackendKind, Commit, EngineOptions, MetaVisitor, SeqVisitor, block_key,
    key_seq,
};

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

impl FjallBackend {
    pub fn open(dir: &Path, opts: &EngineOptions) -> Result<Self, BackendError> {
        std::fs::create_dir_all(dir).map_err(|e| BackendError::Io(e.to_string()))?;
        // Small memtables keep memory low on a Pi and make FIFO tables small enough to drop
        // at a fine grain under a small byte bound.
        let memtable = (opts.max_bytes / 32).clamp(256 << 10, 8 << 20);
        let db = Database::builder(dir)
            .worker_threads(1)
            .cache_size(4 << 20)
            .max_journaling_size(64 << 20)
            .manual_journal_persist(true)
            .open()
            .map_err(err)?;
        let ring = || {
            KeyspaceCreateOptions::default()
                .compaction_strategy(Arc::new(Fifo::new(u64::MAX, None)))
                .max_memtable_size(memtable)
                .manual_journal_persist(true)
        };
        let blocks = db.keyspace("blocks", ring).map_err(err)?;
        let index = db.keyspace("index", ring).map_err(err)?;
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
        for g in self.index.range(block_key(from)..) {
            let (k, v) = g.into_inner().map_err(err)?;
            if let Some(seq) = key_seq(&k) {
                f(seq, &v)?;
            }
        }
        Ok(())
    }

    fn scan_meta(&self, prefix: &[u8], f: &mut MetaVisitor<'_>) -> Result<(), BackendError> {
        for g in self.meta.prefix(prefix) {
            let (k, v) = g.into_inner().map_err(err)?;
            f(&k, &v)?;
        }
        Ok(())
    }

    fn scan_meta_range(
        &self,
        from: &[u8],
        to: &[u8],
        f: &mut MetaVisitor<'_>,
    ) -> Result<(), BackendError> {
        for g in self.meta.range(from.to_vec()..to.to_vec()) {
            let (k, v) = g.into_inner().map_err(err)?;
            f(&k, &v)?;
        }
        Ok(())
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
