//! The group commit: pending samples, new series, cursors and aggregates written as one batch,
//! by the committer thread or `Store::flush`.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use vantage_core::{LockExt, RwLockExt};

use crate::backend::{Backend, BackendError, Commit};
use crate::codec::{BlockMeta, DecodeError, StoredSample, encode_block};
use crate::format;
use crate::rollup::{self, Agg, Due};

use super::details::{self, Details};
use super::sidecar::{Head, append_series_log};
use super::state::{
    Cursor, IndexEntry, Inner, META_CURSOR, META_FLOOR, META_SERIES, State, now_ms,
};

/// Largest block one commit writes; a longer backlog of pending samples is split.
const MAX_BLOCK_SAMPLES: usize = 50_000;

/// After a backlog drained, hands back the queue's spare room: a queue keeps its largest
/// capacity (up to `max_pending` samples of about 100 bytes) otherwise. Room for one block,
/// or twice what is left, is kept, so a steady rate does not reallocate at each commit.
fn release_backlog<T>(q: &mut std::collections::VecDeque<T>) {
    let keep = (q.len() * 2).max(MAX_BLOCK_SAMPLES);
    if q.capacity() > 2 * keep {
        q.shrink_to(keep);
    }
}

impl Inner {
    /// Adds the aggregates due to a commit: the minutes completed, and the written minutes that
    /// late rounds join (read and merged here).
    fn rollup_meta(&self, b: &dyn Backend, due: &Due, c: &mut Commit) -> Result<(), BackendError> {
        c.meta.extend(due.meta.iter().cloned());
        c.meta_removals = due.removals.clone();
        for ((series, minute), late) in &due.late {
            let k = rollup::key(*series, *minute);
            let mut stored = Ok(None);
            b.scan_meta_range(&k, &rollup::key(*series, minute + 1), &mut |_, v| {
                stored = Agg::decode(v, *minute).map(Some);
                Ok(())
            })?;
            let mut merged = match stored {
                Ok(a) => a.unwrap_or_default(),
                // A newer build's aggregate stays as it is; the late rounds are in the blocks.
                Err(DecodeError::Version(v)) if format::AGGREGATE.is_newer(v) => continue,
                // A damaged one is replaced.
                Err(_) => Agg::default(),
            };
            merged.merge(late);
            c.meta.push((k, merged.encode(*minute)));
        }
        Ok(())
    }

    pub(super) fn commit_loop(self: Arc<Self>, degraded: bool) {
        let mut last = Instant::now();
        let mut failures = u32::from(degraded);
        let mut retry_at: Option<Instant> =
            degraded.then(|| Instant::now() + Duration::from_secs(1));
        loop {
            {
                let mut st = self.state.lock_or_recover();
                loop {
                    if self.closing.load(Ordering::SeqCst) {
                        break;
                    }
                    let due = last + self.opts.commit_interval;
                    let now = Instant::now();
                    if (st.commit_now && retry_at.is_none()) || now >= due {
                        break;
                    }
                    let wait = due - now;
                    st = self
                        .wake
                        .wait_timeout(st, wait)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                st.commit_now = false;
            }
            last = Instant::now();
            let closing = self.closing.load(Ordering::SeqCst);
            if let Some(at) = retry_at {
                if Instant::now() < at && !closing {
                    continue;
                }
                if self.backend.read_or_recover().is_none() || failures > 0 {
                    self.reopen();
                }
            }
            match self.commit_round(closing) {
                Ok(()) => {
                    failures = 0;
                    retry_at = None;
                    if self.error.lock_or_recover().take().is_some() {
                        tracing::info!("store: writes work again");
                    }
                }
                Err(e) => {
                    failures += 1;
                    self.backend_err(&e);
                    // Capped low: a disk that has space again should be used again soon.
                    let backoff =
                        Duration::from_secs(1 << failures.min(4)).min(Duration::from_secs(10));
                    retry_at = Some(Instant::now() + backoff);
                }
            }
            if closing {
                return;
            }
            self.enforce_bounds();
        }
    }

    /// Writes what is pending, in blocks of at most `MAX_BLOCK_SAMPLES`.
    pub(super) fn commit_round(&self, force: bool) -> Result<(), BackendError> {
        // One commit at a time (the committer thread and `Store::flush`).
        let _serial = self.commit_serial.lock_or_recover();
        loop {
            let guard = self.backend.read_or_recover();
            let Some(b) = guard.as_ref() else {
                return Err(self.not_open());
            };
            // Take what to write under the lock; encode and write without it, so appends
            // (the probes) never wait for the disk.
            let batch = self.take_batch();
            let (mut c, meta) = self.encode_batch(&batch);
            let rolled = self
                .rollup_meta(b.as_ref(), &batch.due, &mut c)
                .and_then(|()| Details::add_newer(b.as_ref(), &batch.details, &mut c));
            details::spare_written(&mut c.meta_removals, &c.meta);
            let stale = match rolled {
                Ok(stale) => stale,
                Err(e) => {
                    let mut st = self.state.lock_or_recover();
                    st.in_flight = 0;
                    st.index_removals.extend(batch.removals);
                    st.rollups.failed(batch.due);
                    return Err(e);
                }
            };
            if c.is_empty() {
                let mut st = self.state.lock_or_recover();
                st.in_flight = 0;
                st.details.written(&batch.details, &stale);
                return Ok(());
            }
            let bytes: usize = c.blocks.iter().map(|(_, v)| v.len() + 8).sum::<usize>()
                + c.index.iter().map(|(_, v)| v.len() + 8).sum::<usize>()
                + c.meta.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
            let res = b.commit(c, true);
            let mut st = self.state.lock_or_recover();
            st.in_flight = 0;
            match res {
                Ok(()) => self.committed(&mut st, batch, &stale, meta, bytes),
                Err(e) => {
                    st.index_removals.extend(batch.removals);
                    st.rollups.failed(batch.due);
                    self.counters.commit_errors.fetch_add(1, Ordering::Relaxed);
                    return Err(e);
                }
            }
            let more = !st.pending.is_empty() && (force || st.pending.len() >= MAX_BLOCK_SAMPLES);
            if !more {
                return Ok(());
            }
        }
    }

    /// Takes what the next commit writes; the samples stay pending (in flight) until it is
    /// written.
    fn take_batch(&self) -> Batch {
        let mut st = self.state.lock_or_recover();
        let n = st.pending.len().min(MAX_BLOCK_SAMPLES);
        st.in_flight = n;
        let samples: Vec<StoredSample> = st.pending.iter().take(n).cloned().collect();
        let series: Vec<(u32, Vec<u8>)> = st
            .unsaved_series
            .iter()
            .filter_map(|id| st.series.get(*id as usize).map(|s| (*id, s.encode())))
            .collect();
        let cursors: Vec<(String, Cursor)> = st
            .dirty_cursors
            .iter()
            .filter_map(|n| st.cursors.get(n).map(|c| (n.clone(), *c)))
            .collect();
        let floor = st.floor_dirty.then_some(st.floor);
        let removals = std::mem::take(&mut st.index_removals);
        let due = st.rollups.due();
        Batch {
            details: st.details.due(),
            samples,
            seq: st.next_seq,
            series,
            cursors,
            floor,
            removals,
            due,
        }
    }

    /// Encodes a batch (all but its aggregates) into one commit; appends its new series to the
    /// series log first.
    fn encode_batch(&self, batch: &Batch) -> (Commit, Option<BlockMeta>) {
        let mut c = Commit::default();
        let mut meta = None;
        if !batch.samples.is_empty() {
            let (block, m) = encode_block(&batch.samples);
            c.index.push((batch.seq, m.encode().to_vec()));
            c.blocks.push((batch.seq, block));
            meta = Some(m);
        }
        if !batch.series.is_empty()
            && let Err(e) = append_series_log(&self.opts.dir, &batch.series)
        {
            tracing::warn!("store: cannot append to the series log: {e}");
        }
        for (id, rec) in &batch.series {
            let mut k = META_SERIES.to_vec();
            k.extend_from_slice(&id.to_be_bytes());
            c.meta.push((k, rec.clone()));
        }
        for (name, cur) in &batch.cursors {
            let mut k = META_CURSOR.to_vec();
            k.extend_from_slice(name.as_bytes());
            c.meta.push((k, cur.encode()));
        }
        if let Some(f) = batch.floor {
            c.meta.push((META_FLOOR.to_vec(), f.to_le_bytes().to_vec()));
        }
        c.index_removals = batch.removals.clone();
        (c, meta)
    }

    /// Applies a written batch to the state: its samples leave the queue for the index, and
    /// its series, cursors and floor are no longer unsaved.
    fn committed(
        &self,
        st: &mut State,
        batch: Batch,
        stale: &[(u32, u32)],
        meta: Option<BlockMeta>,
        bytes: usize,
    ) {
        let Batch {
            samples,
            seq,
            series,
            cursors,
            floor,
            due,
            details,
            ..
        } = batch;
        let n = samples.len();
        st.pending.drain(..n);
        release_backlog(&mut st.pending);
        st.rollups.written(&due);
        st.details.written(&details, stale);
        st.rollups.fold(&samples, true);
        // A set: at a start with thousands of targets every series is new at once.
        let saved: HashSet<u32> = series.iter().map(|(id, _)| *id).collect();
        st.unsaved_series.retain(|id| !saved.contains(id));
        let written: Vec<String> = cursors
            .iter()
            .filter(|(name, cur)| st.cursors.get(name) == Some(cur))
            .map(|(name, _)| name.clone())
            .collect();
        st.dirty_cursors.retain(|e| !written.contains(e));
        if floor == Some(st.floor) {
            st.floor_dirty = false;
        }
        if let Some(m) = meta {
            let cum = st.cum_end;
            st.index.insert(seq, IndexEntry { meta: m, cum });
            st.cum_end += u64::from(m.count);
            st.samples += u64::from(m.count);
            st.block_bytes += u64::from(m.len);
            st.next_seq = seq + 1;
        }
        let co = &self.counters;
        co.commits.fetch_add(1, Ordering::Relaxed);
        co.bytes_committed
            .fetch_add(bytes as u64, Ordering::Relaxed);
        co.samples_committed.fetch_add(n as u64, Ordering::Relaxed);
        co.last_commit_ms
            .store(now_ms().max(0) as u64, Ordering::Relaxed);
        let head = Head {
            next_seq: st.next_seq,
            samples: st.samples,
        };
        self.write_head(head);
    }
}

/// What one commit writes, taken from the state under its lock.
struct Batch {
    samples: Vec<StoredSample>,
    seq: u64,
    series: Vec<(u32, Vec<u8>)>,
    cursors: Vec<(String, Cursor)>,
    floor: Option<u64>,
    /// Index entries of blocks found damaged, deleted with this commit.
    removals: Vec<u64>,
    due: Due,
    /// Round details queued.
    details: Vec<details::DueDetail>,
}

#[cfg(test)]
mod queue_tests {
    use std::collections::VecDeque;

    use super::{MAX_BLOCK_SAMPLES, release_backlog};

    #[test]
    fn a_drained_backlog_gives_its_room_back_and_a_steady_queue_keeps_it() {
        let mut q: VecDeque<u64> = (0..10 * MAX_BLOCK_SAMPLES as u64).collect();
        q.drain(..9 * MAX_BLOCK_SAMPLES);
        release_backlog(&mut q);
        assert!(q.capacity() < 10 * MAX_BLOCK_SAMPLES, "{}", q.capacity());
        q.drain(..);
        release_backlog(&mut q);
        let cap = q.capacity();
        assert!(
            (MAX_BLOCK_SAMPLES..3 * MAX_BLOCK_SAMPLES).contains(&cap),
            "{cap}"
        );
        // One block's worth comes and goes without the queue being reallocated.
        q.extend(0..MAX_BLOCK_SAMPLES as u64);
        q.drain(..);
        release_backlog(&mut q);
        assert_eq!(q.capacity(), cap);
    }
}
