//! Shipping positions: one cursor per remote_write endpoint, and reading on from one.

use crate::backend::BackendError;
use crate::codec::StoredSample;
use vantage_core::LockExt;

use super::state::{Cursor, State, Store};

/// Samples read for shipping, with the cursor that follows them.
#[derive(Debug, Clone, Default)]
pub struct ReadBatch {
    pub samples: Vec<StoredSample>,
    pub next: Cursor,
}

impl Store {
    /// The shipping position of an endpoint (the oldest sample when it never shipped).
    pub fn cursor(&self, endpoint: &str) -> Cursor {
        let st = self.inner.state.lock_or_recover();
        let c = st.cursors.get(endpoint).copied().unwrap_or_default();
        st.clamp(c)
    }

    /// Records that everything before `c` was delivered to `endpoint`. Persisted with the next
    /// group commit.
    pub fn set_cursor(&self, endpoint: &str, c: Cursor) {
        let mut st = self.inner.state.lock_or_recover();
        if st.cursors.get(endpoint) != Some(&c) {
            st.cursors.insert(endpoint.to_string(), c);
            if !st.dirty_cursors.iter().any(|e| e == endpoint) {
                st.dirty_cursors.push(endpoint.to_string());
            }
        }
    }

    /// The position of the oldest sample still stored.
    pub fn cursor_floor(&self) -> Cursor {
        Cursor {
            seq: self.inner.state.lock_or_recover().floor,
            idx: 0,
        }
    }

    /// Committed samples at or after `c`.
    pub fn backlog(&self, c: Cursor) -> u64 {
        let st = self.inner.state.lock_or_recover();
        let c = st.clamp(c);
        match st.index.range(c.seq..).next() {
            Some((_, e)) => st.cum_end - e.cum - u64::from(c.idx).min(u64::from(e.meta.count)),
            None => 0,
        }
    }

    /// Reads up to about `max` committed samples from `c` on, whole blocks at a time. Damaged
    /// blocks are skipped (and counted).
    pub fn read_from(&self, c: Cursor, max: usize) -> Result<ReadBatch, BackendError> {
        let mut out = ReadBatch {
            samples: Vec::new(),
            next: c,
        };
        let mut c = self.inner.state.lock_or_recover().clamp(c);
        loop {
            let next = {
                let st = self.inner.state.lock_or_recover();
                st.index
                    .range(c.seq..)
                    .next()
                    .map(|(s, e)| (*s, e.meta.count))
            };
            let Some((seq, count)) = next else {
                out.next = c;
                return Ok(out);
            };
            if seq != c.seq {
                c = Cursor { seq, idx: 0 };
            }
            let samples = match self.inner.read_block(seq)? {
                Some(s) => s,
                None => {
                    c = Cursor {
                        seq: seq + 1,
                        idx: 0,
                    };
                    continue;
                }
            };
            let start = (c.idx as usize).min(samples.len());
            let room = max.saturating_sub(out.samples.len());
            let take = (samples.len() - start).min(room.max(1));
            out.samples.extend_from_slice(&samples[start..start + take]);
            c = if start + take >= count as usize {
                Cursor {
                    seq: seq + 1,
                    idx: 0,
                }
            } else {
                Cursor {
                    seq,
                    idx: (start + take) as u32,
                }
            };
            if out.samples.len() >= max {
                out.next = c;
                return Ok(out);
            }
        }
    }
}

impl State {
    fn clamp(&self, c: Cursor) -> Cursor {
        if c.seq < self.floor {
            Cursor {
                seq: self.floor,
                idx: 0,
            }
        } else {
            c
        }
    }
}
