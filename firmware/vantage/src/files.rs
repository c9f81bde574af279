//! Small files: replaced whole or not at all (what a power cut leaves is the old content or the
//! new, never a mix, never nothing; every file the daemon writes for a person or for the
//! image's root helpers goes through [`write_atomic`]), and read with a bound.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// [`write_atomic`] with mode 0644 and no backup: state files other programs read.
pub fn write_whole(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic(path, bytes, 0o644, false, |_| Ok(()))
}

/// The first `max` bytes of a regular file (not a symlink, a directory or a device) as text;
/// `None` when it is none of that or does not read as UTF-8. For state files other programs
/// write: bounded whatever is there.
pub fn read_text(path: &Path, max: u64) -> Option<String> {
    use std::io::Read;
    if !fs::symlink_metadata(path).ok()?.is_file() {
        return None;
    }
    let mut s = String::new();
    File::open(path)
        .ok()?
        .take(max)
        .read_to_string(&mut s)
        .ok()?;
    Some(s)
}

/// Where the previous version of a saved file is kept.
pub fn backup_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".bak");
    path.with_file_name(name)
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = std::ffi::OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(format!(".tmp-{}", std::process::id()));
    path.with_file_name(name)
}

/// Writes `bytes` to `path` so that a crash at any point leaves either the old or the new file
/// whole: write a temp file in the same directory, fsync it, keep the old file as `.bak`
/// (a hard link, so `path` never disappears), rename over `path`, fsync the directory.
/// `before_rename` runs after the temp file is durable; tests use it to simulate a crash.
pub fn write_atomic(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    backup: bool,
    before_rename: impl FnOnce(&Path) -> io::Result<()>,
) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = temp_path(path);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        // The mode given to open() is filtered by the umask; set it exactly.
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        before_rename(&tmp)?;
        if backup && path.exists() {
            let bak = backup_path(path);
            let _ = fs::remove_file(&bak);
            if fs::hard_link(path, &bak).is_err() {
                fs::copy(path, &bak)?;
            }
        }
        fs::rename(&tmp, path)?;
        File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp() -> vantage_testkit::TempDir {
        vantage_testkit::TempDir::new("atomic-file")
    }

    #[test]
    fn crash_before_rename_leaves_the_old_file() {
        let d = temp();
        let p = d.path().join("vantage.toml");
        fs::write(&p, "old").unwrap();
        let err = write_atomic(&p, b"new", 0o644, true, |tmp| {
            assert_eq!(fs::read(tmp).unwrap(), b"new");
            Err(io::Error::other("power cut"))
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "power cut");
        assert_eq!(fs::read_to_string(&p).unwrap(), "old");
        // No temp file is left to confuse the next save.
        let names: Vec<_> = fs::read_dir(d.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn save_keeps_a_backup_and_sets_the_mode() {
        let d = temp();
        let p = d.path().join("vantage.toml");
        fs::write(&p, "v1").unwrap();
        write_atomic(&p, b"v2", 0o640, true, |_| Ok(())).unwrap();
        write_atomic(&p, b"v3", 0o640, true, |_| Ok(())).unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "v3");
        assert_eq!(fs::read_to_string(backup_path(&p)).unwrap(), "v2");
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
    }
}
