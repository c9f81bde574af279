//! Small files kept beside the engine's directory: the head file and the series log.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use vantage_core::LockExt;

use crate::series::SeriesKey;

use super::state::Inner;

/// The head file beside the store: next sequence number and live samples after the last
/// commit. Written in place without a sync (it costs no extra flash write per commit beyond the
/// page cache's writeback); after a power cut it can only be behind the engine, never ahead. An
/// engine that comes back behind it lost data that this file lets us count.
fn head_path(dir: &Path) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(".head");
    dir.with_file_name(name)
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Head {
    pub(super) next_seq: u64,
    pub(super) samples: u64,
}

impl Head {
    fn encode(&self) -> [u8; 20] {
        let mut b = [0u8; 20];
        b[..8].copy_from_slice(&self.next_seq.to_le_bytes());
        b[8..16].copy_from_slice(&self.samples.to_le_bytes());
        let crc = crc32fast::hash(&b[..16]);
        b[16..].copy_from_slice(&crc.to_le_bytes());
        b
    }
    pub(super) fn read(dir: &Path) -> Option<Self> {
        let b = std::fs::read(head_path(dir)).ok()?;
        if b.len() != 20 || crc32fast::hash(&b[..16]).to_le_bytes() != b[16..20] {
            return None;
        }
        Some(Self {
            next_seq: u64::from_le_bytes(b[..8].try_into().ok()?),
            samples: u64::from_le_bytes(b[8..16].try_into().ok()?),
        })
    }
}

/// The series log beside the store: every series definition, appended and synced when a new
/// series first appears (rare: a new target or new labels). It keeps samples attributable when
/// the engine loses its own copy of the dictionary with a damaged journal.
fn series_log_path(dir: &Path) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(".series");
    dir.with_file_name(name)
}

pub(super) fn read_series_log(dir: &Path) -> BTreeMap<u32, SeriesKey> {
    let mut out = BTreeMap::new();
    let Ok(b) = std::fs::read(series_log_path(dir)) else {
        return out;
    };
    let mut pos = 0usize;
    while pos + 8 <= b.len() {
        let len = u32::from_le_bytes(b[pos..pos + 4].try_into().unwrap_or_default()) as usize;
        let id = u32::from_le_bytes(b[pos + 4..pos + 8].try_into().unwrap_or_default());
        let Some(rec) = b.get(pos + 8..pos + 8 + len) else {
            break;
        };
        if let Ok(k) = SeriesKey::decode(rec) {
            out.insert(id, k);
        }
        pos += 8 + len;
    }
    out
}

pub(super) fn append_series_log(dir: &Path, entries: &[(u32, Vec<u8>)]) -> std::io::Result<()> {
    use std::io::Write;
    let mut buf = Vec::new();
    for (id, rec) in entries {
        buf.extend_from_slice(&(rec.len() as u32).to_le_bytes());
        buf.extend_from_slice(&id.to_le_bytes());
        buf.extend_from_slice(rec);
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(series_log_path(dir))?;
    f.write_all(&buf)?;
    f.sync_data()
}

impl Inner {
    pub(super) fn write_head(&self, h: Head) {
        use std::os::unix::fs::FileExt;
        let mut f = self.head_file.lock_or_recover();
        if f.is_none() {
            *f = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(head_path(&self.opts.dir))
                .ok();
        }
        if let Some(file) = f.as_ref()
            && file.write_all_at(&h.encode(), 0).is_err()
        {
            *f = None;
        }
    }
}
