//! Loading the store's state from the engine on open: the block index (rebuilt where entries
//! were lost), the series dictionary, the cursors and the aggregates not yet written.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use vantage_core::LockExt;

use vantage_core::ProbeKind;

use crate::backend::{Backend, BackendError};
use crate::codec::{BlockMeta, DecodeError, decode_block, encode_block};
use crate::rollup;
use crate::series::SeriesKey;

use super::sidecar::{Head, read_series_log};
use super::state::{
    Cursor, DropReason, IndexEntry, Inner, META_CURSOR, META_FLOOR, META_NEXT, META_SERIES, State,
};

/// Newest blocks read back on open to catch a damaged tail early.
const CHECK_ON_OPEN: usize = 16;

impl Inner {
    /// Loads index, series and cursors; true when it found damage worth a salvage.
    pub(super) fn load(&self, b: &dyn Backend, head: Option<Head>) -> Result<bool, BackendError> {
        let mut floor = meta_u64(b, META_FLOOR)?;
        let next_min = meta_u64(b, META_NEXT)?;
        let bounds = b.block_bounds()?;
        if let Some((first, _)) = bounds {
            floor = floor.max(first);
        }
        let LoadedIndex {
            index,
            cum,
            bad: bad_index,
            rebuilt,
        } = load_index(b, floor, bounds)?;
        let LoadedSeries {
            series,
            bad: bad_series,
            unknown,
        } = load_series(b, &self.opts.dir)?;
        let cursors = load_cursors(b)?;

        let mut st = self.state.lock_or_recover();
        // A newer build's series keep their ids (behind placeholders): new ones go after.
        let len = unknown.keys().next_back().map_or(0, |m| m + 1);
        st.install_series(series, len);
        if !unknown.is_empty() {
            tracing::warn!(
                series = unknown.len(),
                "store: series of probes this version does not know (written by a newer \
                 version); kept untouched"
            );
        }
        st.unknown_series = unknown;
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
        self.count_damage(bad_index, bad_series, rebuilt);
        if let Some(h) = head {
            damaged |= self.behind_head(h);
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

    /// Counts and reports the damaged index and series entries skipped and the index entries
    /// rebuilt.
    fn count_damage(&self, bad_index: u64, bad_series: u64, rebuilt: u64) {
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
    }

    /// True (and the loss counted) when the engine came back behind the head file.
    fn behind_head(&self, h: Head) -> bool {
        let mut st = self.state.lock_or_recover();
        if h.next_seq > st.next_seq {
            // The engine came back behind what it had acknowledged: data was lost.
            let blocks = h.next_seq - st.next_seq;
            let lost = h.samples.saturating_sub(st.samples);
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
            return true;
        }
        false
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
            let st = self.state.lock_or_recover();
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
        open.cleaned_below = self
            .state
            .lock_or_recover()
            .index
            .values()
            .next()
            .map_or(0, |e| rollup::minute_of(e.meta.min_ts));
        for seq in blocks {
            if let Some(samples) = self.read_block_with(b, seq)? {
                open.fold(&samples, false);
            }
        }
        self.state.lock_or_recover().rollups = open;
        Ok(())
    }
}

impl State {
    /// Installs the series dictionary loaded from the engine, at least `len` ids long.
    fn install_series(&mut self, mut series: BTreeMap<u32, SeriesKey>, len: u32) {
        // Series ids are dense; a hole (damaged entry, or a series of a probe this build does
        // not know) gets a placeholder so ids stay stable.
        let n = series
            .keys()
            .next_back()
            .map_or(0, |m| *m as usize + 1)
            .max(len as usize);
        let mut dict = Vec::with_capacity(n);
        for id in 0..n as u32 {
            dict.push(series.remove(&id).unwrap_or_else(|| SeriesKey {
                target: Arc::from(format!("unknown-series-{id}")),
                probe: ProbeKind::PING,
                labels: Arc::default(),
            }));
        }
        self.lookup.clear();
        for (id, s) in dict.iter().enumerate() {
            self.lookup
                .entry((s.target.clone(), s.probe))
                .or_default()
                .push((s.labels.clone(), id as u32));
        }
        // Series created while the engine was down keep their ids after the loaded ones.
        let carried: Vec<SeriesKey> = self
            .unsaved_series
            .iter()
            .filter_map(|id| self.series.get(*id as usize).cloned())
            .collect();
        let carried_ids = std::mem::take(&mut self.unsaved_series);
        self.series = dict;
        if !carried.is_empty() {
            // Re-map pending samples onto fresh ids.
            let mut remap = HashMap::new();
            for (old, key) in carried_ids.iter().zip(carried) {
                let new = self.series_id(&key.target, key.probe, &key.labels);
                remap.insert(*old, new);
            }
            for s in self.pending.iter_mut() {
                if let Some(n) = remap.get(&s.series) {
                    s.series = *n;
                }
            }
        }
    }
}

/// The value of an 8-byte meta entry (0 when there is none).
fn meta_u64(b: &dyn Backend, name: &[u8]) -> Result<u64, BackendError> {
    let mut out = 0u64;
    b.scan_meta(name, &mut |k, v| {
        if k == name && v.len() == 8 {
            out = u64::from_le_bytes(v.try_into().unwrap_or_default());
        }
        Ok(())
    })?;
    Ok(out)
}

/// The block index as loaded.
struct LoadedIndex {
    index: BTreeMap<u64, IndexEntry>,
    /// Samples in the index (its `cum_end`).
    cum: u64,
    /// Entries that did not decode.
    bad: u64,
    /// Entries rebuilt from their blocks.
    rebuilt: u64,
}

/// Reads the index entries from `floor` on, rebuilding those of blocks whose entry was lost.
fn load_index(
    b: &dyn Backend,
    floor: u64,
    bounds: Option<(u64, u64)>,
) -> Result<LoadedIndex, BackendError> {
    let mut index = BTreeMap::new();
    let mut bad = 0u64;
    let mut cum = 0u64;
    b.scan_index(floor, &mut |seq, v| {
        match BlockMeta::decode(v) {
            Some(meta) => {
                index.insert(seq, IndexEntry { meta, cum });
                cum += u64::from(meta.count);
            }
            None => bad += 1,
        }
        Ok(())
    })?;
    // Blocks without index entries (the index lost with a damaged journal): rebuild their
    // entries from the blocks themselves.
    let mut rebuilt = 0u64;
    if let Some((first, last)) = bounds {
        rebuilt = rebuild_index(b, &mut index, first.max(floor), last);
        if rebuilt > 0 {
            cum = 0;
            for e in index.values_mut() {
                e.cum = cum;
                cum += u64::from(e.meta.count);
            }
        }
    }
    Ok(LoadedIndex {
        index,
        cum,
        bad,
        rebuilt,
    })
}

/// Adds an entry for each readable block in `first..=last` that has none; returns how many.
fn rebuild_index(
    b: &dyn Backend,
    index: &mut BTreeMap<u64, IndexEntry>,
    first: u64,
    last: u64,
) -> u64 {
    let mut rebuilt = 0u64;
    for seq in first..=last {
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
    rebuilt
}

/// The series dictionary as loaded.
struct LoadedSeries {
    series: BTreeMap<u32, SeriesKey>,
    /// Entries that did not decode.
    bad: u64,
    /// Intact entries of probes this build does not know (a newer build's), raw, by id.
    unknown: BTreeMap<u32, Vec<u8>>,
}

/// The series dictionary from the engine, completed from the series log.
fn load_series(b: &dyn Backend, dir: &Path) -> Result<LoadedSeries, BackendError> {
    let mut series: BTreeMap<u32, SeriesKey> = BTreeMap::new();
    let mut unknown = BTreeMap::new();
    let mut bad = 0u64;
    b.scan_meta(META_SERIES, &mut |k, v| {
        let id = k
            .get(1..5)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_be_bytes);
        match (id, SeriesKey::decode(v)) {
            (Some(id), Ok(s)) => {
                series.insert(id, s);
            }
            (Some(id), Err(DecodeError::Malformed)) => {
                unknown.insert(id, v.to_vec());
            }
            _ => bad += 1,
        }
        Ok(())
    })?;
    for (id, k) in read_series_log(dir) {
        series.entry(id).or_insert(k);
    }
    Ok(LoadedSeries {
        series,
        bad,
        unknown,
    })
}

/// The shipping cursors as last committed.
fn load_cursors(b: &dyn Backend) -> Result<HashMap<String, Cursor>, BackendError> {
    let mut cursors = HashMap::new();
    b.scan_meta(META_CURSOR, &mut |k, v| {
        if let (Ok(name), Some(c)) = (std::str::from_utf8(&k[1..]), Cursor::decode(v)) {
            cursors.insert(name.to_string(), c);
        }
        Ok(())
    })?;
    Ok(cursors)
}
