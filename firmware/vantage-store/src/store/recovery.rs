//! Opening the engine and recovering from damage: a store that crashes its opens or that the
//! engine cannot read is moved aside (quarantine), one that lost data is salvaged into a fresh
//! copy, and an engine that refused writes is reopened.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use vantage_core::{LockExt, RwLockExt};

use crate::backend::{self, Backend, BackendError, Commit, EngineOptions};
use crate::codec::{BlockMeta, encode_block};

use super::sidecar::Head;
use super::state::{Inner, META_CURSOR, META_FLOOR, META_NEXT, META_SERIES, OpenError};

/// Consecutive failed opens after which the store is quarantined before the next attempt.
const MAX_FAILED_OPENS: u32 = 3;

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

impl Inner {
    /// Opens the engine, quarantining a damaged store. Loads the index, series and cursors.
    pub(super) fn open_backend(&self) -> Result<(), OpenError> {
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
                *self.backend.write_or_recover() = Some(fresh);
                let _ = std::fs::remove_file(&marker);
                return Ok(());
            }
            Err(BackendError::Corrupt(why)) => {
                drop(backend);
                quarantine(dir, &why)?;
                self.counters.quarantined.fetch_add(1, Ordering::Relaxed);
                let fresh = backend::open(self.opts.backend, dir, &eopts)?;
                self.load(fresh.as_ref(), head)?;
                *self.backend.write_or_recover() = Some(fresh);
                let _ = std::fs::remove_file(&marker);
                return Ok(());
            }
            Err(e) => {
                let _ = std::fs::remove_file(&marker);
                return Err(e.into());
            }
        }
        *self.backend.write_or_recover() = Some(backend);
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
        let (series, unknown_series, cursors, floor, next_seq) = {
            let st = self.state.lock_or_recover();
            (
                st.series.clone(),
                st.unknown_series.clone(),
                st.cursors.clone(),
                st.floor,
                st.next_seq,
            )
        };
        let new = backend::open(self.opts.backend, &tmp, &eopts)?;
        let (mut c, copied) = self.copy_blocks(old.as_ref(), new.as_ref())?;
        for (id, s) in series.iter().enumerate() {
            let mut k = META_SERIES.to_vec();
            k.extend_from_slice(&(id as u32).to_be_bytes());
            // A newer build's series keeps its own bytes, not the placeholder.
            let v = unknown_series
                .get(&(id as u32))
                .cloned()
                .unwrap_or_else(|| s.encode());
            c.meta.push((k, v));
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
        super::details::copy_all(old.as_ref(), &mut c);
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

    /// Copies the readable blocks into `new`, re-encoded, and the intact blocks this build
    /// cannot decode byte for byte with their index entries; returns the commit still to write
    /// and the blocks copied.
    fn copy_blocks(
        &self,
        old: &dyn Backend,
        new: &dyn Backend,
    ) -> Result<(Commit, u64), BackendError> {
        let entries: Vec<(u64, BlockMeta)> = {
            let st = self.state.lock_or_recover();
            st.index.iter().map(|(s, e)| (*s, e.meta)).collect()
        };
        let mut c = Commit::default();
        let mut copied = 0u64;
        for (seq, meta) in entries {
            if let Some(samples) = self.read_block_with(old, seq)? {
                let (block, meta) = encode_block(&samples);
                c.index.push((seq, meta.encode().to_vec()));
                c.blocks.push((seq, block));
                copied += 1;
            } else if self.state.lock_or_recover().unreadable.contains(&seq)
                && let Some(raw) = old.get_block(seq)?
            {
                c.index.push((seq, meta.encode().to_vec()));
                c.blocks.push((seq, raw));
                copied += 1;
            }
            if c.blocks.len() >= 64 {
                new.commit(std::mem::take(&mut c), false)?;
            }
        }
        Ok((c, copied))
    }

    /// Drops and reopens the engine (fjall refuses writes after a failed one; a store that
    /// could not open at start is retried here).
    pub(super) fn reopen(&self) {
        *self.backend.write_or_recover() = None;
        // Cursors in memory are newer than on disk; pending samples stay where they are.
        let (cursors, dirty) = {
            let st = self.state.lock_or_recover();
            (st.cursors.clone(), st.dirty_cursors.clone())
        };
        match self.open_backend() {
            Ok(()) => {
                let mut st = self.state.lock_or_recover();
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
}
