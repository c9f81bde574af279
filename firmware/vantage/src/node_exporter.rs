//! Local metrics on the image (docs/IMAGE.md, "Local metrics: node exporter"): Debian's
//! `prometheus-node-exporter`, off by default, switched on and off from the page. Local scripts
//! drop `*.prom` files into its textfile directory and their series appear beside the machine's.
//!
//! The daemon runs unprivileged and cannot start units, so it only asks: it writes
//! [`REQUEST_FILE`] (`on` or `off`) into its data directory; the image's root-run
//! `vantage-image-node-exporter.path` starts `/usr/lib/vantage-image/node-exporter`, which
//! enables and starts (or disables and stops) the exporter and records what systemd then has in
//! [`STATE_FILE`], which this module reads. Off the image (no helper, no exporter) nothing is
//! offered.

use std::path::{Path, PathBuf};

use serde::Serialize;

/// The request, in the data directory: `on` or `off` and a newline.
pub const REQUEST_FILE: &str = "node-exporter-request";
/// What the image's helper last applied: `on|off ACTIVE-STATE [failed]`, one line.
pub const STATE_FILE: &str = "/var/lib/vantage-image/node-exporter/state";
/// The image's root-run helper; its presence is what makes the setting offered.
pub const HELPER: &str = "/usr/lib/vantage-image/node-exporter";
/// Debian's exporter.
pub const EXPORTER: &str = "/usr/bin/prometheus-node-exporter";
/// Debian's default textfile directory (on the data partition through the `/var` overlay).
pub const TEXTFILE_DIR: &str = "/var/lib/prometheus/node-exporter";
/// Debian's default listen port (`:9100`, every address).
pub const PORT: u16 = 9100;
/// The state file is a line; anything longer is not its.
const MAX_STATE: u64 = 256;

/// Where the request is written and the state read: the image's paths, or a test's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    pub request: PathBuf,
    pub state: PathBuf,
    pub helper: PathBuf,
    pub exporter: PathBuf,
}

impl Paths {
    /// The image's paths, the request in `data_dir`.
    pub fn image(data_dir: &Path) -> Self {
        Self {
            request: data_dir.join(REQUEST_FILE),
            state: PathBuf::from(STATE_FILE),
            helper: PathBuf::from(HELPER),
            exporter: PathBuf::from(EXPORTER),
        }
    }
}

/// What the helper recorded after its last run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Applied {
    /// Enabled: started at every boot.
    pub enabled: bool,
    /// systemd's word for the unit now (`active`, `inactive`, `failed`, ...).
    pub active: String,
    /// The last request could not be applied (the helper logged why).
    pub failed: bool,
}

/// The setting as the page shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    /// `false` off the image: nothing else is said then.
    pub available: bool,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub detail: Option<Detail>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Detail {
    pub enabled: bool,
    pub active: String,
    pub failed: bool,
    /// A request not taken up by the helper yet: `true` (on) or `false` (off).
    pub pending: Option<bool>,
    pub textfile_directory: &'static str,
    pub port: u16,
}

/// The daemon's side of the setting.
#[derive(Debug)]
pub struct NodeExporter {
    paths: std::sync::Mutex<Paths>,
}

impl NodeExporter {
    pub fn new(paths: Paths) -> Self {
        Self {
            paths: std::sync::Mutex::new(paths),
        }
    }

    fn paths(&self) -> Paths {
        use vantage_core::LockExt;
        self.paths.lock_or_recover().clone()
    }

    #[cfg(test)]
    pub fn set_paths(&self, p: Paths) {
        use vantage_core::LockExt;
        *self.paths.lock_or_recover() = p;
    }

    /// Offered where the image's helper and Debian's exporter both are.
    pub fn available(&self) -> bool {
        let p = self.paths();
        p.helper.is_file() && p.exporter.is_file()
    }

    pub fn status(&self) -> Status {
        if !self.available() {
            return Status {
                available: false,
                detail: None,
            };
        }
        let p = self.paths();
        // Nothing recorded yet: a fresh image, where the exporter is off.
        let applied = crate::files::read_text(&p.state, MAX_STATE)
            .and_then(|s| parse_state(&s))
            .unwrap_or(Applied {
                enabled: false,
                active: "inactive".to_string(),
                failed: false,
            });
        let pending =
            crate::files::read_text(&p.request, MAX_STATE).and_then(|s| parse_request(&s));
        Status {
            available: true,
            detail: Some(Detail {
                enabled: applied.enabled,
                active: applied.active,
                failed: applied.failed,
                pending,
                textfile_directory: TEXTFILE_DIR,
                port: PORT,
            }),
        }
    }

    /// Asks the helper to switch the exporter on or off: the request file, written so that a
    /// power cut leaves the old request or the new one, never a torn one.
    pub fn request(&self, on: bool) -> std::io::Result<()> {
        let body: &[u8] = if on { b"on\n" } else { b"off\n" };
        crate::files::write_atomic(&self.paths().request, body, 0o600, false, |_| Ok(()))
    }
}

/// `on` or `off`, as the daemon writes it.
pub fn parse_request(s: &str) -> Option<bool> {
    match s.strip_suffix('\n').unwrap_or(s) {
        "on" => Some(true),
        "off" => Some(false),
        _ => None,
    }
}

/// The helper's line: `on|off ACTIVE-STATE [failed]`; `None` for anything else.
pub fn parse_state(s: &str) -> Option<Applied> {
    let mut words = s.lines().next()?.split_whitespace();
    let enabled = match words.next()? {
        "on" => true,
        "off" => false,
        _ => return None,
    };
    // systemd's words: `active`, `inactive`, `failed`, `activating`, ...
    let active = words.next()?;
    if active.len() > 32 || !active.bytes().all(|b| b.is_ascii_lowercase() || b == b'-') {
        return None;
    }
    let active = active.to_string();
    let failed = words.next() == Some("failed");
    Some(Applied {
        enabled,
        active,
        failed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_helpers_line_is_parsed_and_anything_else_refused() {
        assert_eq!(
            parse_state("on active\n"),
            Some(Applied {
                enabled: true,
                active: "active".into(),
                failed: false
            })
        );
        let a = parse_state("off inactive failed\n").unwrap();
        assert!(!a.enabled && a.failed && a.active == "inactive");
        assert_eq!(parse_state("on\n"), None);
        assert_eq!(parse_state("yes active\n"), None);
        assert_eq!(parse_state(""), None);
        assert_eq!(parse_state("on \"}<x>\n"), None);
        assert_eq!(parse_state("on act\"ive"), None);
        assert_eq!(parse_request("on\n"), Some(true));
        assert_eq!(parse_request("off"), Some(false));
        assert_eq!(parse_request("on\n\n"), None);
        assert_eq!(parse_request("ON\n"), None);
    }

    #[test]
    fn a_long_state_file_is_read_only_as_far_as_its_bound() {
        let dir = vantage_testkit::TempDir::new("node-exporter");
        let big = dir.path().join("state");
        std::fs::write(&big, format!("on {}", "a".repeat(1 << 20))).unwrap();
        assert_eq!(
            crate::files::read_text(&big, MAX_STATE).unwrap().len() as u64,
            MAX_STATE
        );
        assert_eq!(
            parse_state(&crate::files::read_text(&big, MAX_STATE).unwrap()),
            None
        );
        // A symlink is not followed.
        std::os::unix::fs::symlink(&big, dir.path().join("link")).unwrap();
        assert_eq!(
            crate::files::read_text(&dir.path().join("link"), MAX_STATE),
            None
        );
    }
}
