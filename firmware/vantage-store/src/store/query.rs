//! Reads for the local charts: samples and per-minute aggregates of a time range, and reading
//! blocks back (a damaged block is forgotten and counted).

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use vantage_core::{LockExt, RwLockExt};

use vantage_core::ProbeKind;

use crate::backend::{Backend, BackendError};
use crate::codec::{DecodeError, StoredSample, decode_block, is_intact};
use crate::format;
use crate::rollup::{self, Agg};

use super::state::{DropReason, Inner, Store};

impl Store {
    /// Samples of one target and probe with `from <= timestamp <= to` (ms since the epoch),
    /// committed or pending, in append order.
    pub fn query(
        &self,
        target: &str,
        probe: ProbeKind,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<StoredSample>, BackendError> {
        self.query_many(&[(target, probe)], from_ms, to_ms)
    }

    /// Samples of the series of `keys` with `from <= timestamp <= to`, committed or pending, in
    /// append order: one pass over the blocks for a page of targets, where a query per target
    /// would read each block once per target. Only these series' samples are kept, so the
    /// answer grows with the page, not with every series in the blocks. [`Store::series`] names
    /// their series.
    pub fn query_many(
        &self,
        keys: &[(&str, ProbeKind)],
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<StoredSample>, BackendError> {
        let (ids, blocks, pending) = {
            let st = self.inner.state.lock_or_recover();
            let ids: HashSet<u32> = keys
                .iter()
                .flat_map(|(target, probe)| st.ids_of(target, *probe))
                .collect();
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            let blocks: Vec<u64> = st
                .index
                .iter()
                .filter(|(_, e)| e.meta.max_ts >= from_ms && e.meta.min_ts <= to_ms)
                .map(|(s, _)| *s)
                .collect();
            let pending: Vec<StoredSample> = st
                .pending
                .iter()
                .filter(|s| ids.contains(&s.series))
                .cloned()
                .collect();
            (ids, blocks, pending)
        };
        let keep = |s: &StoredSample| {
            ids.contains(&s.series) && s.timestamp_ms >= from_ms && s.timestamp_ms <= to_ms
        };
        let mut out = Vec::new();
        for seq in blocks {
            if let Some(samples) = self.inner.read_block(seq)? {
                out.extend(samples.into_iter().filter(keep));
            }
        }
        out.extend(pending.into_iter().filter(keep));
        Ok(out)
    }

    /// One target's rounds of one probe with `from <= timestamp <= to` (ms), folded into
    /// buckets of `step_ms` (a multiple of a minute; buckets start at multiples of it). Reads
    /// the per-minute aggregates, the aggregates not yet written and the rounds not yet
    /// committed; only rounds from before the store kept aggregates are read from blocks.
    /// Returns (bucket start, aggregate), oldest first, buckets without rounds left out.
    pub fn aggregate(
        &self,
        target: &str,
        probe: ProbeKind,
        from_ms: i64,
        to_ms: i64,
        step_ms: i64,
    ) -> Result<Vec<(i64, Agg)>, BackendError> {
        let step = (step_ms.max(rollup::MINUTE_MS) / rollup::MINUTE_MS) * rollup::MINUTE_MS;
        let bucket = |t: i64| t.div_euclid(step) * step;
        let (_serial, st) = self.inner.state_between_commits();
        let (ids, start, open, pending) = {
            let ids = st.ids_of(target, probe);
            let open = st.rollups.in_memory(&ids, from_ms, to_ms);
            let pending: Vec<StoredSample> = st
                .pending
                .iter()
                .filter(|s| {
                    ids.contains(&s.series) && s.timestamp_ms >= from_ms && s.timestamp_ms <= to_ms
                })
                .cloned()
                .collect();
            (
                ids,
                (st.rollups.start, st.rollups.written_below),
                open,
                pending,
            )
        };
        drop(st);
        // Written minutes are those before `written`, the ones in memory at or after it: a
        // commit moving minutes between the two while this reads counts them once.
        let (start, written) = start;
        // (minute or round time, aggregate), merged in time order.
        let mut parts: Vec<(i64, Agg)> = Vec::new();
        if from_ms < start {
            for s in self.query(target, probe, from_ms, to_ms.min(start - 1))? {
                let mut a = Agg::default();
                a.add(&s);
                parts.push((s.timestamp_ms, a));
            }
        }
        if written > from_ms.max(start) {
            let to = to_ms.min(written - 1);
            parts.extend(self.inner.written_rollups(&ids, from_ms.max(start), to)?);
        }
        parts.extend(open);
        for s in pending {
            let mut a = Agg::default();
            a.add(&s);
            parts.push((s.timestamp_ms, a));
        }
        parts.sort_by_key(|(t, _)| *t);
        let mut out: Vec<(i64, Agg)> = Vec::new();
        for (t, a) in parts {
            let b = bucket(t);
            match out.last_mut() {
                Some((lb, la)) if *lb == b => la.merge(&a),
                _ => out.push((b, a)),
            }
        }
        Ok(out)
    }

    /// Reads every block back, counting (and forgetting) the damaged ones. Returns
    /// (blocks read, blocks damaged).
    pub fn verify(&self) -> Result<(u64, u64), BackendError> {
        let seqs: Vec<u64> = self
            .inner
            .state
            .lock_or_recover()
            .index
            .keys()
            .copied()
            .collect();
        let before = self.inner.counters.corrupt_blocks.load(Ordering::Relaxed);
        for seq in &seqs {
            if self.inner.closing.load(Ordering::Relaxed) {
                break;
            }
            self.inner.read_block(*seq)?;
        }
        let bad = self.inner.counters.corrupt_blocks.load(Ordering::Relaxed) - before;
        Ok((seqs.len() as u64, bad))
    }
}

impl Inner {
    /// The written aggregates of `ids` for the minutes overlapping `[from, to]`.
    fn written_rollups(
        &self,
        ids: &[u32],
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<(i64, Agg)>, BackendError> {
        let guard = self.backend.read_or_recover();
        let mut out = Vec::new();
        let Some(b) = guard.as_ref() else {
            return Ok(out);
        };
        let (from, to) = (
            rollup::minute_of(from_ms),
            rollup::minute_of(to_ms) + rollup::MINUTE_MS,
        );
        for id in ids {
            b.scan_meta_range(
                &rollup::key(*id, from),
                &rollup::key(*id, to),
                &mut |k, v| {
                    if let Some(m) = rollup::key_minute(k) {
                        match Agg::decode(v, m) {
                            Ok(a) => out.push((m, a)),
                            // A newer build's minute: kept, not shown.
                            Err(DecodeError::Version(v)) if format::AGGREGATE.is_newer(v) => {}
                            Err(e) => {
                                tracing::warn!(minute = m, "store: damaged aggregate skipped ({e})")
                            }
                        }
                    }
                    Ok(())
                },
            )?;
        }
        Ok(out)
    }

    pub(super) fn read_block(&self, seq: u64) -> Result<Option<Vec<StoredSample>>, BackendError> {
        let guard = self.backend.read_or_recover();
        let Some(b) = guard.as_ref() else {
            return Err(self.not_open());
        };
        self.read_block_with(b.as_ref(), seq)
    }

    /// Reads and decodes one block; a damaged or missing block is forgotten and counted. An
    /// intact block this build cannot decode (a newer build wrote it) is kept, index entry
    /// and all, and skipped: `None`, counted once in the unreadable samples.
    pub(super) fn read_block_with(
        &self,
        b: &dyn Backend,
        seq: u64,
    ) -> Result<Option<Vec<StoredSample>>, BackendError> {
        self.counters.blocks_read.fetch_add(1, Ordering::Relaxed);
        let why = match b.get_block(seq) {
            Ok(Some(v)) => match decode_block(&v) {
                Ok(s) => return Ok(Some(s)),
                Err(e) if is_intact(&v) => {
                    self.note_unreadable(seq, &e);
                    return Ok(None);
                }
                Err(e) => e.to_string(),
            },
            Ok(None) => "block missing".to_string(),
            Err(BackendError::Corrupt(m)) => m,
            Err(e) => return Err(e),
        };
        let mut st = self.state.lock_or_recover();
        if let Some(e) = st.index.remove(&seq) {
            st.samples = st.samples.saturating_sub(u64::from(e.meta.count));
            st.block_bytes = st.block_bytes.saturating_sub(u64::from(e.meta.len));
            st.index_removals.push(seq);
            self.counters.dropped[DropReason::Corrupt.idx()]
                .fetch_add(u64::from(e.meta.count), Ordering::Relaxed);
            self.counters.corrupt_blocks.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                seq,
                samples = e.meta.count,
                "store: damaged block dropped ({why})"
            );
        }
        Ok(None)
    }

    /// Remembers an intact block this build cannot decode; says so once per block.
    fn note_unreadable(&self, seq: u64, e: &DecodeError) {
        let mut st = self.state.lock_or_recover();
        let Some(count) = st.index.get(&seq).map(|e| e.meta.count) else {
            return;
        };
        if st.unreadable.insert(seq) {
            tracing::warn!(
                seq,
                samples = count,
                "store: block in a format this version cannot read ({e}), written by a newer \
                 version; kept untouched and skipped"
            );
        }
    }
}
