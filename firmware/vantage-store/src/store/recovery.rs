//! Opening the store: loading the index, series and cursors, repairing what the engine lost,
//! and moving a damaged store aside (quarantine, salvage).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use vantage_core::ProbeKind;

use crate::backend::{self, Backend, BackendError, Commit, EngineOptions};
use crate::codec::{BlockMeta, decode_block, encode_block};
use crate::rollup;
use crate::series::SeriesKey;

use super::sidecar::{Head, read_series_log};
use super::{
    Cursor, DropReason, IndexEntry, Inner, META_CURSOR, META_FLOOR, META_NEXT, META_SERIES,
    OpenError, lock,
};

/// Newest blocks read back on open to catch a damaged tail early.
const CHECK_ON_OPEN: usize = 16;
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
                probe: ProbeKind::Ping,
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

    /// Drops and reopens the engine (fjall refuses writes after a failed one; a store that
    /// could not open at start is retried here).
    pub(super) fn reopen(&self) {
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
}
