//! sled 0.34: a B-tree over a log. One tree, keys prefixed by kind, so one batch is atomic.

use std::path::Path;

use super::{
    Backend, BackendError, BackendKind, Commit, EngineOptions, MetaKeys, MetaVisitor, SeqVisitor,
    block_key, key_seq, visit_entries, visit_index,
};

const BLOCK: u8 = b'b';
const INDEX: u8 = b'i';
const META: u8 = b'm';

#[derive(Debug)]
pub struct SledBackend {
    db: sled::Db,
}

fn err(e: sled::Error) -> BackendError {
    match e {
        sled::Error::Io(e) => super::fjall::io_err(e),
        other => BackendError::Corrupt(other.to_string()),
    }
}

fn key(prefix: u8, seq: u64) -> [u8; 9] {
    let mut k = [prefix; 9];
    k[1..].copy_from_slice(&block_key(seq));
    k
}

fn meta_key(k: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(k.len() + 1);
    v.push(META);
    v.extend_from_slice(k);
    v
}

impl SledBackend {
    pub fn open(dir: &Path, opts: &EngineOptions) -> Result<Self, BackendError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity((opts.max_bytes / 64).clamp(1 << 20, 16 << 20))
            // Writes reach the disk when the store commits, not on a timer of sled's own.
            .flush_every_ms(None)
            .open()
            .map_err(|e| match e {
                sled::Error::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock => {
                    BackendError::Locked(io.to_string())
                }
                sled::Error::Io(io) if io.to_string().contains("lock") => {
                    BackendError::Locked(io.to_string())
                }
                e => err(e),
            })?;
        Ok(Self { db })
    }
}

impl Backend for SledBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Sled
    }

    fn commit(&self, c: Commit, sync: bool) -> Result<(), BackendError> {
        let mut b = sled::Batch::default();
        for (seq, v) in c.blocks {
            b.insert(&key(BLOCK, seq)[..], v);
        }
        for (seq, v) in c.index {
            b.insert(&key(INDEX, seq)[..], v);
        }
        for seq in c.index_removals {
            b.remove(&key(INDEX, seq)[..]);
        }
        for (k, v) in c.meta {
            b.insert(meta_key(&k), v);
        }
        for k in c.meta_removals {
            b.remove(meta_key(&k));
        }
        self.db.apply_batch(b).map_err(err)?;
        if sync {
            self.db.flush().map_err(err)?;
        }
        Ok(())
    }

    fn get_block(&self, seq: u64) -> Result<Option<Vec<u8>>, BackendError> {
        self.db
            .get(key(BLOCK, seq))
            .map(|v| v.map(|v| v.to_vec()))
            .map_err(err)
    }

    fn scan_index(&self, from: u64, f: &mut SeqVisitor<'_>) -> Result<(), BackendError> {
        let entries = self.db.range(key(INDEX, from)..key(INDEX, u64::MAX));
        visit_index(entries.map(|kv| kv.map_err(err)), 1, f)?;
        if let Some(v) = self.db.get(key(INDEX, u64::MAX)).map_err(err)? {
            f(u64::MAX, &v)?;
        }
        Ok(())
    }

    fn scan_meta_keys(
        &self,
        keys: MetaKeys<'_>,
        f: &mut MetaVisitor<'_>,
    ) -> Result<(), BackendError> {
        let entry = |kv: sled::Result<(sled::IVec, sled::IVec)>| kv.map_err(err);
        // Meta keys carry the `META` byte in front.
        match keys {
            MetaKeys::Prefix(p) => visit_entries(self.db.scan_prefix(meta_key(p)).map(entry), 1, f),
            MetaKeys::Range(from, to) => {
                visit_entries(self.db.range(meta_key(from)..meta_key(to)).map(entry), 1, f)
            }
        }
    }

    fn block_bounds(&self) -> Result<Option<(u64, u64)>, BackendError> {
        let mut it = self.db.scan_prefix([BLOCK]);
        let first = match it.next() {
            Some(kv) => kv.map_err(err)?.0,
            None => return Ok(None),
        };
        let last = match it.next_back() {
            Some(kv) => kv.map_err(err)?.0,
            None => first.clone(),
        };
        Ok(key_seq(&first[1..]).zip(key_seq(&last[1..])))
    }

    fn drop_below(&self, seq: u64) -> Result<(), BackendError> {
        let mut b = sled::Batch::default();
        for prefix in [BLOCK, INDEX] {
            for k in self.db.range(key(prefix, 0)..key(prefix, seq)).keys() {
                b.remove(k.map_err(err)?);
            }
        }
        self.db.apply_batch(b).map_err(err)
    }

    fn fill_factor(&self) -> f64 {
        0.25
    }
}

impl Drop for SledBackend {
    fn drop(&mut self) {
        let _ = self.db.flush();
    }
}
