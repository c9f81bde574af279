//! Files a client names in the config through the page: every `*_file` key of an edit
//! (remote_write `bearer_token_file` and `basic_auth.password_file`, TLS files, a DNS probe's
//! `ca_file`).
//!
//! The daemon reads them and may send their contents to a server of the editor's choice, so a
//! stolen session must not turn them into a way to read the device's files, and a typo must
//! not hang or exhaust it. A named file must be a regular file (not `/dev/zero` or a FIFO),
//! owned by root or the daemon's user, at most [`MAX_CLIENT_FILE_BYTES`], readable within
//! [`CLIENT_FILE_READ_LIMIT`], and outside the data directory's `web/` (the admin password
//! hash, sessions' settings, the HTTPS key). Every refusal has the same message, so the page
//! cannot be used to learn whether a path exists. Checked before the save lock is taken.

use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value as Json;

use super::config_file::FieldError;

/// The largest file a client may name (a CA bundle fits; a token or password is far smaller).
pub const MAX_CLIENT_FILE_BYTES: u64 = 1 << 20;
/// Checking and reading one named file takes at most this long.
pub const CLIENT_FILE_READ_LIMIT: Duration = Duration::from_secs(5);

/// The `*_file` string values of an edit, with their field paths (`tls.ca_file`).
fn file_fields(v: &Json, prefix: &str, out: &mut Vec<(String, String)>) {
    let join = |k: &str| {
        if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}.{k}")
        }
    };
    match v {
        Json::Object(m) => {
            for (k, v) in m {
                match v {
                    Json::String(s) if k.ends_with("_file") => out.push((join(k), s.clone())),
                    _ => file_fields(v, &join(k), out),
                }
            }
        }
        Json::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                file_fields(v, &format!("{prefix}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn refused(field: String, path: &str) -> FieldError {
    FieldError::new(
        field,
        format!(
            "{path:?} cannot be used: name a regular file of at most {} KiB that the daemon can \
             read, owned by root or the daemon's user, outside the data directory's web/ folder",
            MAX_CLIENT_FILE_BYTES / 1024
        ),
    )
}

fn owner_ok(uid: u32) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    uid == 0 || uid == unsafe { libc::geteuid() }
}

/// Opens and reads `path` as the rules say; `Err` says nothing about why.
fn acceptable(path: &Path, private_dir: &Path) -> Result<(), ()> {
    let real = std::fs::canonicalize(path).map_err(drop)?;
    let private = std::fs::canonicalize(private_dir).unwrap_or_else(|_| private_dir.into());
    if real.starts_with(&private) {
        return Err(());
    }
    // Type, owner and size before opening: opening a FIFO would block, a device never ends.
    let meta = std::fs::metadata(&real).map_err(drop)?;
    if !meta.is_file() || !owner_ok(meta.uid()) || meta.len() > MAX_CLIENT_FILE_BYTES {
        return Err(());
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_NOCTTY)
        .open(&real)
        .map_err(drop)?;
    // The same file as checked, not one swapped in since.
    let opened = file.metadata().map_err(drop)?;
    if (opened.dev(), opened.ino()) != (meta.dev(), meta.ino()) || !opened.is_file() {
        return Err(());
    }
    let mut buf = Vec::new();
    file.take(MAX_CLIENT_FILE_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(drop)?;
    if buf.len() as u64 > MAX_CLIENT_FILE_BYTES {
        return Err(());
    }
    Ok(())
}

/// The LED directory root the page may set: the daemon writes `ROOT/NAME/brightness` and
/// `trigger` there, so a session may point it only into sysfs. A config file written on the
/// device may name any directory (tests and unusual boards do).
const PAGE_SYSFS_ROOT_UNDER: &str = "/sys";

/// Refuses a `sysfs_root` an edit would move outside sysfs (`..` included).
fn sysfs_root_error(body: &Json) -> Option<FieldError> {
    let root = body.get("sysfs_root")?.as_str()?;
    let path = Path::new(root);
    let inside = path.starts_with(PAGE_SYSFS_ROOT_UNDER)
        && !path
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir));
    (!inside).then(|| {
        FieldError::new(
            "sysfs_root",
            format!(
                "{root:?}: the page may set only a directory under {PAGE_SYSFS_ROOT_UNDER}                  (the kernel's LEDs are in /sys/class/leds); another one needs the config file"
            ),
        )
    })
}

/// Checks every `*_file` of `body` and an LED `sysfs_root`; `private_dir` is the data
/// directory's `web/`.
pub async fn check(body: &Json, private_dir: &Path) -> Result<(), Vec<FieldError>> {
    let mut fields = Vec::new();
    file_fields(body, "", &mut fields);
    let mut errors: Vec<FieldError> = sysfs_root_error(body).into_iter().collect();
    for (field, path) in fields {
        let (p, dir) = (PathBuf::from(&path), private_dir.to_path_buf());
        let read = tokio::task::spawn_blocking(move || acceptable(&p, &dir));
        // A read still stuck after the limit is left behind; the request does not wait for it.
        match tokio::time::timeout(CLIENT_FILE_READ_LIMIT, read).await {
            Ok(Ok(Ok(()))) => {}
            _ => errors.push(refused(field, &path)),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::web::tests::TempDir;
    use serde_json::json;

    #[test]
    fn the_page_may_point_leds_only_into_sysfs() {
        for ok in ["/sys/class/leds", "/sys/devices/platform/leds"] {
            assert!(
                sysfs_root_error(&json!({ "sysfs_root": ok })).is_none(),
                "{ok}"
            );
        }
        for bad in [
            "/var/lib/vantage",
            "/sys/../etc",
            "/system",
            "relative",
            "/",
        ] {
            let e = sysfs_root_error(&json!({ "sysfs_root": bad })).expect(bad);
            assert_eq!(e.field, "sysfs_root");
            assert!(e.message.contains("under /sys"), "{bad}: {}", e.message);
        }
        assert!(sysfs_root_error(&json!({ "backend": "none" })).is_none());
    }

    #[test]
    fn file_fields_are_found_at_any_depth() {
        let mut out = Vec::new();
        let body = json!({"bearer_token_file": "/a", "basic_auth": {"password_file": "/b"},
                          "tls": {"ca_file": "/c", "insecure_skip_verify": false},
                          "dns": [{"ca_file": "/d"}], "name": "x_file", "n_file": 5});
        file_fields(&body, "", &mut out);
        out.sort();
        let want = [
            ("basic_auth.password_file", "/b"),
            ("bearer_token_file", "/a"),
            ("dns[0].ca_file", "/d"),
            ("tls.ca_file", "/c"),
        ];
        let got: Vec<_> = out.iter().map(|(f, p)| (f.as_str(), p.as_str())).collect();
        assert_eq!(got, want);
    }

    /// `/dev/zero`, a FIFO with no writer, a file over the cap, a missing path, a directory, the
    /// admin password file (also through a symlink): all refused at once, with one message.
    #[tokio::test]
    async fn devices_fifos_huge_private_and_missing_files_are_refused_alike() {
        let dir = TempDir::new("client-files");
        let web = dir.path().join("web");
        std::fs::create_dir(&web).unwrap();
        std::fs::write(web.join("admin.json"), b"{\"password_hash\":\"x\"}").unwrap();
        let link = dir.path().join("innocent");
        std::os::unix::fs::symlink(web.join("admin.json"), &link).unwrap();
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let huge = dir.path().join("huge");
        let f = std::fs::File::create(&huge).unwrap();
        f.set_len(MAX_CLIENT_FILE_BYTES + 1).unwrap();
        let good = dir.path().join("token");
        std::fs::write(&good, b"s3cret\n").unwrap();

        let paths = [
            "/dev/zero".to_string(),
            fifo.display().to_string(),
            huge.display().to_string(),
            dir.path().join("missing").display().to_string(),
            dir.path().display().to_string(),
            web.join("admin.json").display().to_string(),
            link.display().to_string(),
            format!("{}/../web/admin.json", dir.path().join("web").display()),
        ];
        let mut messages = std::collections::HashSet::new();
        for p in &paths {
            // Refused by the checks themselves (a blocking open or an endless read would hang
            // here), not only by the time limit.
            assert!(acceptable(Path::new(p), &web).is_err(), "{p}");
            let errs = check(&json!({"bearer_token_file": p}), &web)
                .await
                .unwrap_err();
            assert_eq!(errs[0].field, "bearer_token_file");
            messages.insert(errs[0].message.replace(p.as_str(), "PATH"));
        }
        assert_eq!(messages.len(), 1, "{messages:?}");
        let body = json!({"basic_auth": {"password_file": good.display().to_string()}});
        check(&body, &web).await.unwrap();
        assert!(acceptable(&good, &web).is_ok());
    }

    #[test]
    fn documented_limits_are_the_constants() {
        let doc = include_str!("../../../../docs/WEB.md")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        for phrase in [
            format!(
                "at most {} MiB (`MAX_CLIENT_FILE_BYTES`",
                MAX_CLIENT_FILE_BYTES >> 20
            ),
            format!("read within {} s", CLIENT_FILE_READ_LIMIT.as_secs()),
        ] {
            assert!(doc.contains(&phrase), "docs/WEB.md does not say {phrase:?}");
        }
    }
}
