//! Reads of the stored round details: a target's for its page, and the old ones a commit
//! deletes with the aggregates.

use std::collections::HashMap;
use vantage_core::{LockExt, RwLockExt};

use vantage_core::ProbeKind;

use crate::backend::{Backend, BackendError};

use super::details::{PREFIX, StoredDetail, key, parse};
use super::state::{Inner, Store};

impl Store {
    /// Every stored detail of one target and probe (committed or waiting for the next
    /// commit), oldest first; of one key, the newest.
    pub fn details(
        &self,
        target: &str,
        probe: ProbeKind,
    ) -> Result<Vec<StoredDetail>, BackendError> {
        // The queued ones are read first: a commit that writes them meanwhile still leaves
        // them in this answer.
        let (ids, queued) = {
            let st = self.inner.state.lock_or_recover();
            let ids = st.ids_of(target, probe);
            let queued: Vec<StoredDetail> = st
                .details
                .queued
                .iter()
                .filter(|((s, _), _)| ids.contains(s))
                .map(|((_, k), (ts, b))| StoredDetail {
                    key: *k,
                    timestamp_ms: *ts,
                    bytes: b.clone(),
                })
                .collect();
            (ids, queued)
        };
        let mut by_key: HashMap<u32, StoredDetail> = HashMap::new();
        let mut keep = |d: StoredDetail| {
            if by_key
                .get(&d.key)
                .is_none_or(|o| o.timestamp_ms <= d.timestamp_ms)
            {
                by_key.insert(d.key, d);
            }
        };
        {
            let guard = self.inner.backend.read_or_recover();
            if let Some(b) = guard.as_ref() {
                for id in &ids {
                    for d in self.inner.scan_details(b.as_ref(), *id)? {
                        keep(d);
                    }
                }
            }
        }
        for d in queued {
            keep(d);
        }
        let mut out: Vec<StoredDetail> = by_key.into_values().collect();
        out.sort_by_key(|d| (d.timestamp_ms, d.key));
        Ok(out)
    }
}

impl Inner {
    /// The details of series `id` in the engine.
    fn scan_details(&self, b: &dyn Backend, id: u32) -> Result<Vec<StoredDetail>, BackendError> {
        let mut prefix = vec![PREFIX];
        prefix.extend_from_slice(&id.to_be_bytes());
        let mut out = Vec::new();
        b.scan_meta(&prefix, &mut |k, v| {
            match parse(k, v) {
                Some(d) => out.push(d),
                None => tracing::warn!(series = id, "store: damaged detail skipped"),
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Keys of the details of `series` (ids below it) from before `cutoff_ms`, each series'
    /// newest excepted.
    pub(super) fn old_details(
        &self,
        b: &dyn Backend,
        series: u32,
        cutoff_ms: i64,
    ) -> Result<Vec<Vec<u8>>, BackendError> {
        let mut keys = Vec::new();
        for id in 0..series {
            let mut ds = self.scan_details(b, id)?;
            let Some(newest) = ds.iter().map(|d| (d.timestamp_ms, d.key)).max() else {
                continue;
            };
            ds.retain(|d| d.timestamp_ms < cutoff_ms && (d.timestamp_ms, d.key) != newest);
            keys.extend(ds.iter().map(|d| key(id, d.key)));
        }
        Ok(keys)
    }
}
