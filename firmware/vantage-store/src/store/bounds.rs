//! The store's bounds: samples older than `max_age` and beyond `max_bytes` are dropped, oldest
//! first, and counted.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use vantage_core::{LockExt, RwLockExt};

use crate::backend::Backend;
use crate::codec::BlockMeta;
use crate::rollup;

use super::sidecar::Head;
use super::state::{DropReason, Inner, State, now_ms};

/// Bytes a directory tree really occupies (allocated blocks: sparse, preallocated files count
/// for what they hold).
pub fn dir_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else {
                total += m.blocks() * 512;
            }
        }
    }
    total
}

impl State {
    /// Forgets the oldest block; returns its sample count.
    fn pop_oldest(&mut self) -> Option<(u64, BlockMeta)> {
        let (seq, e) = self.index.pop_first()?;
        self.samples = self.samples.saturating_sub(u64::from(e.meta.count));
        self.block_bytes = self.block_bytes.saturating_sub(u64::from(e.meta.len));
        self.floor = seq + 1;
        self.floor_dirty = true;
        Some((seq, e.meta))
    }
}

impl Inner {
    /// Queues the deletion of aggregates of minutes no longer in the blocks.
    fn clean_rollups(&self, b: &dyn Backend) {
        let (cutoff, ids) = {
            let st = self.state.lock_or_recover();
            let oldest = st.index.values().next().map(|e| e.meta.min_ts);
            match oldest.and_then(|t| st.rollups.cleanup_due(t)) {
                Some(c) => (c, st.series.len() as u32),
                None => return,
            }
        };
        let mut keys = Vec::new();
        for id in 0..ids {
            let res = b.scan_meta_range(
                &rollup::key(id, 0),
                &rollup::key(id, cutoff),
                &mut |k, _| {
                    keys.push(k.to_vec());
                    Ok(())
                },
            );
            if let Err(e) = res {
                tracing::warn!("store: cannot list old aggregates: {e}");
                return;
            }
        }
        // Details of rounds no longer stored go with their aggregates.
        match self.old_details(b, ids, cutoff) {
            Ok(old) => keys.extend(old),
            Err(e) => {
                tracing::warn!("store: cannot list old details: {e}");
                return;
            }
        }
        let mut st = self.state.lock_or_recover();
        st.rollups.removals.extend(keys);
        st.rollups.cleaned_below = cutoff;
    }

    /// The store directory's real size, measured at most every few seconds.
    pub(super) fn disk_usage(&self) -> u64 {
        let mut c = self.usage.lock_or_recover();
        if c.0.is_none_or(|t| t.elapsed() > Duration::from_secs(5)) {
            *c = (Some(Instant::now()), dir_usage(&self.opts.dir));
        }
        c.1
    }

    /// Drops the oldest blocks beyond the age and byte bounds.
    pub(super) fn enforce_bounds(&self) {
        let guard = self.backend.read_or_recover();
        let Some(b) = guard.as_ref() else { return };
        let max_age_ms = i64::try_from(self.opts.max_age.as_millis()).unwrap_or(i64::MAX);
        let cutoff = now_ms().saturating_sub(max_age_ms);
        let disk = self.disk_usage();
        let mut st = self.state.lock_or_recover();
        let floor_before = st.floor;
        // Age: whole blocks whose newest sample is past the bound.
        while let Some((_, e)) = st.index.first_key_value() {
            if e.meta.max_ts >= cutoff {
                break;
            }
            if let Some((_, m)) = st.pop_oldest() {
                self.counters.dropped[DropReason::Age.idx()]
                    .fetch_add(u64::from(m.count), Ordering::Relaxed);
            }
        }
        // Bytes: encoded blocks against their share of the bound (deterministic), and the
        // engine's real size as a safety net, at most once a minute.
        let budget = (self.opts.max_bytes as f64 * b.fill_factor()) as u64;
        let index_overhead = |st: &State| st.index.len() as u64 * 48;
        while st.block_bytes + index_overhead(&st) > budget && st.index.len() > 1 {
            match st.pop_oldest() {
                Some((_, m)) => {
                    self.counters.dropped[DropReason::Bytes.idx()]
                        .fetch_add(u64::from(m.count), Ordering::Relaxed);
                }
                None => break,
            }
        }
        let mut last_emergency = self.last_emergency.lock_or_recover();
        if disk > self.opts.max_bytes + self.opts.max_bytes / 10
            && last_emergency.is_none_or(|t| t.elapsed() > Duration::from_secs(60))
        {
            *last_emergency = Some(Instant::now());
            let target = st.block_bytes / 16;
            let mut freed = 0u64;
            while freed < target && st.index.len() > 1 {
                match st.pop_oldest() {
                    Some((_, m)) => {
                        freed += u64::from(m.len);
                        self.counters.dropped[DropReason::Bytes.idx()]
                            .fetch_add(u64::from(m.count), Ordering::Relaxed);
                    }
                    None => break,
                }
            }
            tracing::warn!(
                disk,
                max = self.opts.max_bytes,
                "store: the engine uses more disk than the bound; dropped the oldest 1/16"
            );
        }
        drop(last_emergency);
        let floor = st.floor;
        let head = Head {
            next_seq: st.next_seq,
            samples: st.samples,
        };
        drop(st);
        if floor != floor_before {
            self.clean_rollups(b.as_ref());
            self.write_head(head);
            if let Err(e) = b.drop_below(floor) {
                tracing::warn!("store: reclaiming space failed: {e}");
            }
        }
    }
}
