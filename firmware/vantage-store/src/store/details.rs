//! Round details (a trace's hop addresses, a DNS answer's records): what a module keeps of a
//! round beyond its figures ([`vantage_core::Detail`]), written only when it changes.
//!
//! Each is one meta entry, `d` + series id + the detail's key (both big-endian) → the time of
//! the round it came from (i64 LE, ms) and the module's bytes, queued when a round's key or
//! fingerprint differs from that of its series' newest round, and written with the next commit
//! (with the round's block). A trace path is stored once per path hash, not per round; a DNS
//! answer once per change. Rounds can come out of time order (a late round, one run on
//! demand): the newest round's detail wins. After a start the first round of each series is
//! written again, which also renews its time, unless the stored detail of its key is newer.
//! Details older than the oldest stored round are deleted with the aggregates, except each
//! series' newest (a path may stay current for months).

use std::collections::{BTreeMap, HashMap, HashSet};

use vantage_core::{Measurement, Sample};

use crate::backend::{Backend, BackendError, Commit};

/// Meta key prefix of the details.
pub(super) const PREFIX: u8 = b'd';

/// A detail as stored: its key within the series, the time of its round (ms) and the module's
/// bytes ([`vantage_core::ProbeModule::detail_json`] reads them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDetail {
    pub key: u32,
    pub timestamp_ms: i64,
    pub bytes: Vec<u8>,
}

/// A detail queued for a commit: ((series, key), round time ms, meta value).
pub(super) type DueDetail = ((u32, u32), i64, Vec<u8>);

/// The detail of a series' newest round: its time (ms), key and fingerprint.
#[derive(Debug, Clone, Copy)]
struct Newest {
    ts: i64,
    key: u32,
    fingerprint: u64,
}

/// The details waiting for a commit, and the newest each series noted.
#[derive(Debug, Default)]
pub(super) struct Details {
    /// Per series: the detail of its newest round (by round time) since the store opened.
    last: HashMap<u32, Newest>,
    /// (series, key) → (time, bytes), until a commit wrote it.
    pub(super) queued: BTreeMap<(u32, u32), (i64, Vec<u8>)>,
}

pub(super) fn key(series: u32, detail: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(PREFIX);
    k.extend_from_slice(&series.to_be_bytes());
    k.extend_from_slice(&detail.to_be_bytes());
    k
}

/// The detail key of a meta key made by [`key`].
fn detail_of(k: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(k.get(5..9)?.try_into().ok()?))
}

fn value(ts: i64, bytes: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + bytes.len());
    v.extend_from_slice(&ts.to_le_bytes());
    v.extend_from_slice(bytes);
    v
}

pub(super) fn parse(k: &[u8], v: &[u8]) -> Option<StoredDetail> {
    Some(StoredDetail {
        key: detail_of(k)?,
        timestamp_ms: i64::from_le_bytes(v.get(..8)?.try_into().ok()?),
        bytes: v.get(8..)?.to_vec(),
    })
}

impl Details {
    /// Queues `sample`'s detail (series `id`, round time `ts` ms) if it differs from that of
    /// the series' newest round. A round older than the newest leaves the newest's key alone:
    /// its detail is queued only for another key (a path), where it may be the newest.
    pub fn note(&mut self, id: u32, ts: i64, sample: &Sample) {
        let Measurement::Module(r) = &sample.measurement else {
            return;
        };
        let Some(d) = r.module().detail(r.report.as_ref()) else {
            return;
        };
        match self.last.get(&id).copied() {
            Some(n) if ts < n.ts && n.key == d.key => return,
            Some(n) if ts < n.ts => {}
            newest => {
                self.last.insert(
                    id,
                    Newest {
                        ts,
                        key: d.key,
                        fingerprint: d.fingerprint,
                    },
                );
                if newest.is_some_and(|n| (n.key, n.fingerprint) == (d.key, d.fingerprint)) {
                    return;
                }
            }
        }
        if self.queued.get(&(id, d.key)).is_none_or(|(t, _)| *t <= ts) {
            self.queued.insert((id, d.key), (ts, d.bytes));
        }
    }

    /// The meta entries a commit writes: every queued detail (they stay queued until
    /// [`Details::written`]).
    pub fn due(&self) -> Vec<DueDetail> {
        self.queued
            .iter()
            .map(|(k, (ts, b))| (*k, *ts, value(*ts, b)))
            .collect()
    }

    /// A commit wrote `due` but `stale` (older than the stored details of their keys):
    /// forget them, unless queued again since. A series whose newest is stale forgets it, so
    /// that its next round is compared with what is stored (a new answer is written).
    pub fn written(&mut self, due: &[DueDetail], stale: &[(u32, u32)]) {
        for (k, ts, _) in due {
            if self.queued.get(k).is_some_and(|(t, _)| t == ts) {
                self.queued.remove(k);
            }
            let newest = self.last.get(&k.0).map(|n| (n.key, n.ts));
            if stale.contains(k) && newest == Some((k.1, *ts)) {
                self.last.remove(&k.0);
            }
        }
    }

    /// Adds to `c` the meta entries of the details in `due` (what [`Details::due`] returned)
    /// that are newer than the stored details of their keys (a round given late does not
    /// replace a newer one's); returns those left out.
    pub fn add_newer(
        b: &dyn Backend,
        due: &[DueDetail],
        c: &mut Commit,
    ) -> Result<Vec<(u32, u32)>, BackendError> {
        let mut stale = Vec::new();
        for ((series, k), ts, v) in due {
            let mk = key(*series, *k);
            let mut stored = None;
            b.scan_meta(&mk, &mut |sk, sv| {
                stored = parse(sk, sv).map(|d| d.timestamp_ms).or(stored);
                Ok(())
            })?;
            if stored.is_some_and(|t| t > *ts) {
                stale.push((*series, *k));
            } else {
                c.meta.push((mk, v.clone()));
            }
        }
        Ok(stale)
    }
}

/// Deletions in `removals` that would undo a detail written by the same commit.
pub(super) fn spare_written(removals: &mut Vec<Vec<u8>>, written: &[(Vec<u8>, Vec<u8>)]) {
    if written.is_empty() {
        return;
    }
    let keys: HashSet<&[u8]> = written.iter().map(|(k, _)| k.as_slice()).collect();
    removals.retain(|k| !keys.contains(k.as_slice()));
}

/// Copies every readable detail from `old` into `c` (a salvage).
pub(super) fn copy_all(old: &dyn Backend, c: &mut crate::backend::Commit) {
    let res = old.scan_meta(&[PREFIX], &mut |k, v| {
        c.meta.push((k.to_vec(), v.to_vec()));
        Ok(())
    });
    if let Err(e) = res {
        tracing::warn!("store: details not salvaged: {e}");
    }
}
