//! The A/B update state of an image, read at scrape time, so the central view shows which slot
//! a device runs and that an update was rolled back, without anyone logging in to it.
//!
//! The image's health check (docs/IMAGE.md, "Health and rollback") writes what it decided to
//! the data partition: `good-A`, `good-B` (the build last marked good in each slot) and `last`,
//! one line per trial: `2026-12-02T10:00:00Z rollback slot=B version=1.4.0 build=abc
//! reason=not-ready-in-600s`. The booted slot is `rauc.slot=` on the kernel command line. Off
//! an A/B image (no `rauc.slot=`), there are no update series.
//!
//! [`read`] is the one reader of that state: the collector turns it into series, and
//! `GET /api/update` shows it on the page (the running slot, its build, trial or good, what the
//! last trial did).

use std::path::PathBuf;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{GaugeVec, Opts};
use serde::Serialize;

/// Where the image's health check keeps its findings.
pub const STATE_DIR: &str = "/var/lib/vantage-image/update";
const CMDLINE: &str = "/proc/cmdline";
/// The image build's `VERSION=` and `BUILD=` (image/steps/chroot/47-rauc.sh), in the slot.
const RELEASE: &str = "/usr/lib/vantage-image/release";
const SLOTS: [&str; 2] = ["A", "B"];
/// The files are a line each; anything longer is not theirs and is cut.
const MAX_FILE: u64 = 4096;
/// A label value from the files: longer ones are cut, other characters than these dropped.
const MAX_VALUE: usize = 64;

const SLOT_INFO: &str = "vantage_update_slot_info";
const LAST_TRIAL: &str = "vantage_update_last_trial_timestamp_seconds";

/// What the last trial of a newly installed slot did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Trial {
    /// Seconds since the epoch.
    pub at: f64,
    /// `good`, `rollback` or `kept`.
    pub result: String,
    pub slot: String,
    pub version: String,
    pub build: String,
    pub reason: String,
}

/// Where the state is read from: the image's paths, or a test's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotPaths {
    /// The health check's `good-A`, `good-B` and `last`.
    pub dir: PathBuf,
    /// The kernel command line (`rauc.slot=`).
    pub cmdline: PathBuf,
    /// The running build's release file.
    pub release: PathBuf,
}

impl Default for SlotPaths {
    fn default() -> Self {
        Self {
            dir: PathBuf::from(STATE_DIR),
            cmdline: PathBuf::from(CMDLINE),
            release: PathBuf::from(RELEASE),
        }
    }
}

/// A root slot and the build last marked good in it (empty if none).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Slot {
    pub slot: String,
    pub booted: bool,
    pub good_build: String,
}

/// The A/B state of the running image.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImageState {
    /// The slot this boot runs (`A`, `B`).
    pub booted: String,
    /// The running build's version and unique build name (absent: no release file).
    pub version: Option<String>,
    pub build: Option<String>,
    /// `good` (this build was marked good in this slot), `trial` (not yet: the health check
    /// decides within its trial time) or `unknown` (no release file to compare with).
    pub state: &'static str,
    pub slots: Vec<Slot>,
    /// What the last trial of a newly installed slot did.
    pub last: Option<Trial>,
}

/// Reads the image's A/B state; `None` off an A/B image (no `rauc.slot=`).
pub fn read(paths: &SlotPaths) -> Option<ImageState> {
    let booted = crate::files::read_text(&paths.cmdline, MAX_FILE)
        .as_deref()
        .and_then(booted_slot)?;
    let slots: Vec<Slot> = SLOTS
        .iter()
        .map(|s| Slot {
            slot: (*s).to_string(),
            booted: *s == booted,
            good_build: crate::files::read_text(&paths.dir.join(format!("good-{s}")), MAX_FILE)
                .map(|b| clean(b.trim()))
                .unwrap_or_default(),
        })
        .collect();
    let release = crate::files::read_text(&paths.release, MAX_FILE).unwrap_or_default();
    let field = |key: &str| {
        release
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(|v| clean(v.trim().trim_matches('"')))
            .filter(|v| !v.is_empty())
    };
    let (version, build) = (field("VERSION"), field("BUILD"));
    let good_here = slots.iter().find(|s| s.booted).map(|s| &s.good_build);
    let state = match (&build, good_here) {
        (None, _) => "unknown",
        (Some(b), Some(g)) if b == g => "good",
        _ => "trial",
    };
    let last =
        crate::files::read_text(&paths.dir.join("last"), MAX_FILE).and_then(|l| parse_trial(&l));
    Some(ImageState {
        booted,
        version,
        build,
        state,
        slots,
        last,
    })
}

#[derive(Debug)]
pub struct UpdateCollector {
    paths: SlotPaths,
    descs: Vec<Desc>,
}

impl UpdateCollector {
    /// The image's paths.
    pub fn new() -> Self {
        Self::at(SlotPaths::default())
    }

    /// Reads the state from elsewhere (tests).
    pub fn at(paths: SlotPaths) -> Self {
        let descs = families(None, &[], None)
            .iter()
            .flat_map(|c| c.desc().into_iter().cloned().collect::<Vec<_>>())
            .collect();
        Self { paths, descs }
    }
}

/// A value fit for a label: the characters a version, build or reason is made of.
fn clean(v: &str) -> String {
    v.chars()
        .filter(|c| c.is_ascii_alphanumeric() || "._+-~:".contains(*c))
        .take(MAX_VALUE)
        .collect()
}

/// `rauc.slot=X` of a kernel command line.
pub fn booted_slot(cmdline: &str) -> Option<String> {
    cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("rauc.slot="))
        .map(clean)
        .filter(|s| !s.is_empty())
}

/// Parses the health check's `last` line; `None` for anything else.
pub fn parse_trial(line: &str) -> Option<Trial> {
    let mut words = line.lines().next()?.split_whitespace();
    let at = utc_seconds(words.next()?)?;
    let result = words.next()?;
    if !["good", "rollback", "kept"].contains(&result) {
        return None;
    }
    let mut t = Trial {
        at,
        result: result.to_string(),
        slot: String::new(),
        version: String::new(),
        build: String::new(),
        reason: String::new(),
    };
    for w in words {
        let Some((k, v)) = w.split_once('=') else {
            continue;
        };
        match k {
            "slot" => t.slot = clean(v),
            "version" => t.version = clean(v),
            "build" => t.build = clean(v),
            "reason" => t.reason = clean(v),
            _ => {}
        }
    }
    Some(t)
}

/// `YYYY-MM-DDTHH:MM:SSZ` (what `date -u +%FT%TZ` writes) as seconds since the epoch.
fn utc_seconds(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    if b.len() != 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[19] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    vantage_core::utc_to_unix(y, mo, d, h, mi, sec).map(|t| t as f64)
}

/// The families for a booted slot, the builds marked good per slot and the last trial.
fn families(booted: Option<&str>, good: &[(&str, String)], trial: Option<&Trial>) -> Vec<GaugeVec> {
    let slots = GaugeVec::new(
        Opts::new(
            SLOT_INFO,
            "One per root slot of an A/B image: whether it is the booted one and the build last \
             marked good in it (empty if none).",
        ),
        &["slot", "booted", "good_build"],
    )
    .expect("valid metric");
    for (slot, build) in good {
        let booted = if booted == Some(*slot) {
            "true"
        } else {
            "false"
        };
        slots.with_label_values(&[slot, booted, build]).set(1.0);
    }
    let last = GaugeVec::new(
        Opts::new(
            LAST_TRIAL,
            "When the last newly installed slot's trial boot ended, in seconds since the epoch; \
             result good (kept), rollback (not ready in time: the device went back to the \
             other slot) or kept (not ready, but no good slot to go back to).",
        ),
        &["result", "slot", "version", "build", "reason"],
    )
    .expect("valid metric");
    if let Some(t) = trial {
        last.with_label_values(&[&t.result, &t.slot, &t.version, &t.build, &t.reason])
            .set(t.at);
    }
    vec![slots, last]
}

impl Collector for UpdateCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Some(state) = read(&self.paths) else {
            return Vec::new();
        };
        let good: Vec<(&str, String)> = state
            .slots
            .iter()
            .map(|s| (s.slot.as_str(), s.good_build.clone()))
            .collect();
        families(Some(&state.booted), &good, state.last.as_ref())
            .iter()
            .flat_map(Collector::collect)
            .filter(|f| !f.get_metric().is_empty())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape(c: &UpdateCollector) -> String {
        crate::metrics::encode(&c.collect())
    }

    fn paths(dir: &std::path::Path, cmdline: &std::path::Path) -> SlotPaths {
        SlotPaths {
            dir: dir.to_path_buf(),
            cmdline: cmdline.to_path_buf(),
            release: dir.join("no-release"),
        }
    }

    #[test]
    fn a_rollback_shows_with_the_booted_slot_and_the_good_builds() {
        let dir = vantage_testkit::TempDir::new("update");
        let cmdline = dir.path().join("cmdline");
        std::fs::write(
            &cmdline,
            "BOOT_IMAGE=/vmlinuz root=PARTLABEL=vantage-a rauc.slot=A ro quiet\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("good-A"), "b1\n").unwrap();
        std::fs::write(
            dir.path().join("last"),
            "2026-12-02T10:00:00Z rollback slot=B version=1.4.0 build=b2-broken reason=not-ready-in-600s\n",
        )
        .unwrap();
        let text = scrape(&UpdateCollector::at(paths(dir.path(), &cmdline)));
        assert!(
            text.contains(r#"vantage_update_slot_info{booted="true",good_build="b1",slot="A"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"vantage_update_slot_info{booted="false",good_build="",slot="B"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"vantage_update_last_trial_timestamp_seconds{build="b2-broken",reason="not-ready-in-600s",result="rollback",slot="B",version="1.4.0"} 1796205600"#),
            "{text}"
        );
    }

    #[test]
    fn off_an_ab_image_there_are_no_update_series() {
        let dir = vantage_testkit::TempDir::new("update");
        let cmdline = dir.path().join("cmdline");
        std::fs::write(&cmdline, "root=/dev/sda1 ro quiet\n").unwrap();
        std::fs::write(dir.path().join("good-A"), "b1\n").unwrap();
        assert_eq!(
            scrape(&UpdateCollector::at(paths(dir.path(), &cmdline))),
            ""
        );
        // No trial yet: the slots only.
        std::fs::write(&cmdline, "rauc.slot=B\n").unwrap();
        let text = scrape(&UpdateCollector::at(paths(dir.path(), &cmdline)));
        assert!(
            text.contains(r#"slot="B""#) && !text.contains("last_trial"),
            "{text}"
        );
    }

    #[test]
    fn odd_files_are_bounded_and_refused() {
        assert_eq!(parse_trial("hello world"), None);
        assert_eq!(parse_trial("2026-13-02T10:00:00Z good slot=A"), None);
        assert_eq!(parse_trial("2026-12-02T10:00:00Z exploded slot=A"), None);
        let t =
            parse_trial("2026-12-02T10:00:00Z good slot=A version=1\"}x build=b after=3s").unwrap();
        assert_eq!(
            (t.slot.as_str(), t.version.as_str(), t.at),
            ("A", "1x", 1_796_205_600.0)
        );
        assert_eq!(booted_slot("rauc.slot=A\"b x").as_deref(), Some("Ab"));
        let long = format!("2026-12-02T10:00:00Z kept build={}", "x".repeat(10_000));
        assert_eq!(parse_trial(&long).unwrap().build.len(), MAX_VALUE);
        // A file much larger than a line is read only as far as MAX_FILE.
        let dir = vantage_testkit::TempDir::new("update");
        let big = dir.path().join("big");
        std::fs::write(&big, "y".repeat(1 << 20)).unwrap();
        assert_eq!(
            crate::files::read_text(&big, MAX_FILE).unwrap().len() as u64,
            MAX_FILE
        );
        assert_eq!(utc_seconds("2024-03-01T00:00:00Z"), Some(1_709_251_200.0));
        assert_eq!(utc_seconds("2024-03-01 00:00:00Z"), None);
    }
}
