//! The seam between starting an update and the slots: [`Installer`] checks a bundle's
//! signature and installs it; [`Rauc`] does so with the `rauc` program, tests with a fake.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Deserialize;

/// What a bundle whose signature checked out says of itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleInfo {
    pub compatible: String,
    pub version: String,
}

/// Checks and installs bundles. Both calls block (they run a program); callers in async code
/// put them on a blocking thread.
pub trait Installer: Send + Sync + std::fmt::Debug + 'static {
    /// Verifies the bundle's signature against the trusted keyring and reads its manifest.
    /// Installs nothing.
    fn check(&self, bundle: &Path) -> Result<BundleInfo, String>;
    /// Writes the bundle into the slot that is not running; `progress` sees each step as a
    /// percentage and a line of text.
    fn install(&self, bundle: &Path, progress: &mut dyn FnMut(u8, &str)) -> Result<(), String>;
}

/// The `rauc` program, run with an argument vector (never a shell).
#[derive(Debug, Clone)]
pub struct Rauc {
    pub program: PathBuf,
    pub keyring: PathBuf,
}

impl Rauc {
    pub fn new(keyring: &Path) -> Self {
        Self {
            program: PathBuf::from("rauc"),
            keyring: keyring.to_path_buf(),
        }
    }
}

/// The parts of `rauc info --output-format=json` we use.
#[derive(Deserialize)]
struct Info {
    compatible: Option<String>,
    version: Option<String>,
}

/// The last line of what `rauc` wrote to stderr: its reason, without its log lines.
fn reason(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let line = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty() && !l.contains("rauc-Message"))
        .unwrap_or("no reason given");
    line.trim().chars().take(300).collect()
}

impl Installer for Rauc {
    fn check(&self, bundle: &Path) -> Result<BundleInfo, String> {
        if !self.keyring.is_file() {
            return Err(format!(
                "no keyring at {}: this system cannot check a bundle's signature",
                self.keyring.display()
            ));
        }
        let out = Command::new(&self.program)
            .arg("info")
            .arg("--output-format=json")
            .arg(format!("--keyring={}", self.keyring.display()))
            .arg(bundle)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.program.display()))?;
        if !out.status.success() {
            return Err(format!(
                "{} is not a bundle signed by a trusted key: {}",
                bundle.display(),
                reason(&out.stderr)
            ));
        }
        let info: Info = serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("cannot read what rauc info said: {e}"))?;
        Ok(BundleInfo {
            compatible: info.compatible.unwrap_or_default(),
            version: info.version.unwrap_or_default(),
        })
    }

    fn install(&self, bundle: &Path, progress: &mut dyn FnMut(u8, &str)) -> Result<(), String> {
        let mut child = Command::new(&self.program)
            .arg("install")
            .arg(bundle)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.program.display()))?;
        // stderr on a thread of its own, so neither pipe fills while the other is read.
        let mut stderr = child.stderr.take().expect("piped");
        let errors = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = (&mut stderr).take(64 * 1024).read_to_end(&mut buf);
            buf
        });
        let stdout = child.stdout.take().expect("piped");
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some((pct, what)) = parse_progress(&line) {
                progress(pct, what);
            }
        }
        let status = child.wait().map_err(|e| format!("rauc install: {e}"))?;
        let stderr = errors.join().unwrap_or_default();
        if status.success() {
            Ok(())
        } else {
            Err(format!("rauc install failed: {}", reason(&stderr)))
        }
    }
}

/// A progress line of `rauc install`: `  20% Checking bundle`.
pub fn parse_progress(line: &str) -> Option<(u8, &str)> {
    let (pct, rest) = line.trim_start().split_once('%')?;
    let pct: u8 = pct.parse().ok().filter(|p| *p <= 100)?;
    Some((pct, rest.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_are_read_and_others_ignored() {
        assert_eq!(
            parse_progress("  20% Checking bundle"),
            Some((20, "Checking bundle"))
        );
        assert_eq!(
            parse_progress("100% Installing done."),
            Some((100, "Installing done."))
        );
        assert_eq!(parse_progress("installing"), None);
        assert_eq!(parse_progress("101% nonsense"), None);
        assert_eq!(parse_progress("Installing `/x` succeeded"), None);
    }

    #[test]
    fn the_reason_is_the_last_line_that_is_not_a_log_line() {
        let e = b"rauc-Message: 17:54:59.117: Verifying bundle signature... \nsignature verification failed: Verify error: self-signed certificate\n";
        assert_eq!(
            reason(e),
            "signature verification failed: Verify error: self-signed certificate"
        );
    }

    #[test]
    fn a_missing_keyring_is_refused_before_rauc_runs() {
        let r = Rauc {
            program: PathBuf::from("/nonexistent/rauc"),
            keyring: PathBuf::from("/nonexistent/keyring.pem"),
        };
        let e = r.check(Path::new("/tmp/x.raucb")).unwrap_err();
        assert!(e.contains("no keyring at /nonexistent/keyring.pem"), "{e}");
    }
}
