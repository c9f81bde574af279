//! The spool: where a bundle being received (download or upload) is written, on the data
//! partition, bounded in size, hashed as it arrives, and removed again on any failure, so a
//! refused or broken transfer leaves nothing behind.

use std::io::Write;
use std::path::{Path, PathBuf};

use ring::digest::{Context, SHA256};

/// Largest bundle accepted: a slot is 1,280 MiB (`ROOT_SLOT_MIB`, image/arch/*.conf) and a
/// bundle holds one root file system plus its hash tree.
pub const MAX_BUNDLE: u64 = 1536 * MIB;
/// Room left free on the data partition besides a bundle: the store, the config and the
/// system's own writes need it more than an update does.
pub const RESERVE: u64 = 64 * MIB;
pub const MIB: u64 = 1024 * 1024;

/// Limits of one transfer.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max: u64,
    pub reserve: u64,
}

impl Limits {
    pub const DEFAULT: Limits = Limits {
        max: MAX_BUNDLE,
        reserve: RESERVE,
    };
}

/// Bytes free to an unprivileged writer in the file system holding `dir`.
pub fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other("path with a NUL byte"))?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid C string and `st` a writable statvfs for the call's duration.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // The fields are 32 bits wide on 32-bit targets (armv7).
    #[allow(clippy::useless_conversion)]
    Ok(u64::from(st.f_bavail).saturating_mul(u64::from(st.f_frsize)))
}

/// Why a bundle was not taken into the spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpoolError {
    /// Larger than [`Limits::max`].
    TooLarge(String),
    /// The data partition has no room for it.
    Full(String),
    /// Anything else: an I/O error, a wrong SHA-256.
    Other(String),
}

impl std::fmt::Display for SpoolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (Self::TooLarge(m) | Self::Full(m) | Self::Other(m)) = self;
        f.write_str(m)
    }
}

impl From<SpoolError> for String {
    fn from(e: SpoolError) -> String {
        e.to_string()
    }
}

fn mib(n: u64) -> String {
    format!("{:.1} MiB", n as f64 / MIB as f64)
}

/// A bundle being written into the spool as `NAME.part`; dropped before [`SpoolFile::finish`],
/// it removes what it wrote.
pub struct SpoolFile {
    part: PathBuf,
    done: PathBuf,
    file: Option<std::fs::File>,
    written: u64,
    limits: Limits,
    hash: Context,
}

impl SpoolFile {
    /// Starts `dir/name` afresh (a leftover of an earlier attempt is replaced). `expected` is
    /// the announced size, if any: too large a bundle, or one that does not fit on the
    /// partition, is refused before a byte is written.
    pub fn create(
        dir: &Path,
        name: &str,
        expected: Option<u64>,
        limits: Limits,
    ) -> Result<Self, SpoolError> {
        let other = SpoolError::Other;
        std::fs::create_dir_all(dir)
            .map_err(|e| other(format!("cannot create the spool {}: {e}", dir.display())))?;
        if let Some(n) = expected {
            check_size(n, limits)?;
        }
        let part = dir.join(format!("{name}.part"));
        let done = dir.join(name);
        let _ = std::fs::remove_file(&done);
        let _ = std::fs::remove_file(&part);
        let free = free_bytes(dir).map_err(|e| other(format!("{}: {e}", dir.display())))?;
        let need = expected.unwrap_or(0).saturating_add(limits.reserve);
        if need > free {
            return Err(SpoolError::Full(format!(
                "the data partition is full: the bundle needs {} and {} must stay free, {} is free",
                mib(expected.unwrap_or(0)),
                mib(limits.reserve),
                mib(free)
            )));
        }
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&part)
            .map_err(|e| other(format!("cannot write {}: {e}", part.display())))?;
        Ok(Self {
            part,
            done,
            file: Some(file),
            written: 0,
            limits,
            hash: Context::new(&SHA256),
        })
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    /// Appends a chunk; refuses it when the bundle grows past the limit or the disk is full.
    pub fn write(&mut self, chunk: &[u8]) -> Result<(), SpoolError> {
        self.written += chunk.len() as u64;
        check_size(self.written, self.limits)?;
        let file = self.file.as_mut().expect("open until finished");
        if let Err(e) = file.write_all(chunk) {
            return Err(if e.raw_os_error() == Some(libc::ENOSPC) {
                SpoolError::Full("the data partition is full: the bundle does not fit".to_string())
            } else {
                SpoolError::Other(format!("cannot write {}: {e}", self.part.display()))
            });
        }
        self.hash.update(chunk);
        Ok(())
    }

    /// Completes the file, checking its SHA-256 if one was given; returns its path.
    pub fn finish(mut self, sha256: Option<&[u8; 32]>) -> Result<PathBuf, String> {
        let file = self.file.take().expect("open until finished");
        file.sync_all()
            .map_err(|e| format!("cannot write {}: {e}", self.part.display()))?;
        drop(file);
        let got = self.hash.clone().finish();
        if let Some(want) = sha256
            && got.as_ref() != want.as_slice()
        {
            return Err(format!(
                "SHA-256 mismatch: expected {}, got {}",
                hex(want),
                hex(got.as_ref())
            ));
        }
        std::fs::rename(&self.part, &self.done)
            .map_err(|e| format!("cannot write {}: {e}", self.done.display()))?;
        Ok(self.done.clone())
    }
}

impl std::fmt::Debug for SpoolFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpoolFile")
            .field("part", &self.part)
            .field("written", &self.written)
            .finish_non_exhaustive()
    }
}

impl Drop for SpoolFile {
    fn drop(&mut self) {
        // Not finished, or finish() failed: nothing stays behind.
        let _ = std::fs::remove_file(&self.part);
    }
}

fn check_size(n: u64, limits: Limits) -> Result<(), SpoolError> {
    if n > limits.max {
        return Err(SpoolError::TooLarge(format!(
            "the bundle is too large: more than {} (at most {})",
            mib(n.min(limits.max.saturating_add(1))),
            mib(limits.max)
        )));
    }
    Ok(())
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A SHA-256 written as 64 hex digits.
pub fn parse_sha256(s: &str) -> Result<[u8; 32], String> {
    let s = s.trim();
    if s.len() != 64 || !s.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!("{s:?} is not a SHA-256 (64 hex digits)"));
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex digits");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(b: &[u8]) -> [u8; 32] {
        ring::digest::digest(&SHA256, b)
            .as_ref()
            .try_into()
            .unwrap()
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    #[test]
    fn a_complete_bundle_with_the_right_hash_is_kept() {
        let dir = vantage_testkit::TempDir::new("spool");
        let mut f = SpoolFile::create(dir.path(), "b.raucb", Some(6), Limits::DEFAULT).unwrap();
        f.write(b"abc").unwrap();
        f.write(b"def").unwrap();
        let p = f.finish(Some(&sha(b"abcdef"))).unwrap();
        assert_eq!(std::fs::read(p).unwrap(), b"abcdef");
        assert_eq!(files(dir.path()), ["b.raucb"]);
    }

    #[test]
    fn a_wrong_hash_an_oversize_or_an_abandoned_bundle_leaves_nothing() {
        let dir = vantage_testkit::TempDir::new("spool");
        let mut f = SpoolFile::create(dir.path(), "b.raucb", None, Limits::DEFAULT).unwrap();
        f.write(b"abc").unwrap();
        let e = f.finish(Some(&sha(b"other"))).unwrap_err();
        assert!(e.starts_with("SHA-256 mismatch: expected "), "{e}");
        assert!(files(dir.path()).is_empty());

        let small = Limits { max: 4, reserve: 0 };
        let e = SpoolFile::create(dir.path(), "b.raucb", Some(5), small).unwrap_err();
        assert!(
            matches!(&e, SpoolError::TooLarge(m) if m.contains("too large")),
            "{e}"
        );
        let mut f = SpoolFile::create(dir.path(), "b.raucb", None, small).unwrap();
        f.write(b"abcd").unwrap();
        let e = f.write(b"e").unwrap_err().to_string();
        assert!(
            e.contains("too large") && e.contains("at most 0.0 MiB"),
            "{e}"
        );
        drop(f);
        assert!(files(dir.path()).is_empty());
    }

    #[test]
    fn a_full_partition_is_refused_with_a_clear_message_before_writing() {
        let dir = vantage_testkit::TempDir::new("spool");
        let free = free_bytes(dir.path()).unwrap();
        let limits = Limits {
            max: u64::MAX,
            reserve: 0,
        };
        let e = SpoolFile::create(dir.path(), "b.raucb", Some(free + MIB), limits).unwrap_err();
        assert!(
            matches!(&e, SpoolError::Full(m) if m.starts_with("the data partition is full")),
            "{e}"
        );
        let all_reserved = Limits {
            max: MAX_BUNDLE,
            reserve: free + MIB,
        };
        let e = SpoolFile::create(dir.path(), "b.raucb", None, all_reserved).unwrap_err();
        assert!(e.to_string().contains("must stay free"), "{e}");
        assert!(files(dir.path()).is_empty());
    }

    #[test]
    fn sha256_is_read_from_hex() {
        let want = sha(b"x");
        assert_eq!(parse_sha256(&hex(&want)).unwrap(), want);
        let e = parse_sha256("abc").unwrap_err();
        assert!(e.contains("64 hex digits"), "{e}");
    }
}
