//! `[update]`: an A/B update bundle the device should install, named by a provisioning file
//! (or the device's own config): its URL, version and SHA-256, and the maintenance window in
//! which it may be installed. The daemon tries each version once (docs/IMAGE.md). Read with the
//! core's checks, a [`ConfigSection`] `crate::config` registers; a provisioned file may set it.

use serde::{Deserialize, Serialize};
use toml::Spanned;
use vantage_core::Config;
use vantage_core::config::{Check, ConfigSection, Section, read_table};

/// `[update]` as written.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpdate {
    pub url: Spanned<String>,
    pub version: Spanned<String>,
    pub sha256: Spanned<String>,
    /// `"HH:MM-HH:MM"` in UTC; absent: any time.
    pub window: Option<Spanned<String>>,
    /// Reboot into the new slot once installed; absent: [`DEFAULT_REBOOT`].
    pub reboot: Option<bool>,
}

/// Whether a fleet update reboots the device once installed, still inside its window, when
/// `[update]` says nothing: the window is when the operator accepts the interruption, and an
/// installed slot that waits for a power cycle is an update that has not happened.
pub const DEFAULT_REBOOT: bool = true;

/// A validated `[update]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UpdateOffer {
    /// https:// only: the bundle is signed, but a clear channel would let anyone on the path
    /// hand the device another signed bundle (an older build).
    pub url: String,
    pub version: String,
    /// 64 lowercase hex digits.
    pub sha256: String,
    pub window: Option<Window>,
    /// Ask for a reboot into the new slot once it is installed.
    pub reboot: bool,
}

/// `[update]` when written: a section's value, `None` (shown as `null`) when absent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct UpdateSection(pub Option<UpdateOffer>);

impl ConfigSection for UpdateSection {
    const KEY: &'static str = "update";
    /// The provisioning file is where a fleet names its bundle.
    const DEVICE_ONLY: bool = false;

    fn read(c: &mut Check<'_, '_>, value: &Section<'_>) -> Self {
        let raw: Option<RawUpdate> = read_table(c, value, "update", "must be a table ([update])");
        UpdateSection(raw.map(|raw| validate_update(c, &raw)))
    }
}

/// The config's `[update]`, for a config read with [`UpdateSection`] registered.
pub trait UpdateOffered {
    fn update_offer(&self) -> Option<&UpdateOffer>;
}

impl UpdateOffered for Config {
    fn update_offer(&self) -> Option<&UpdateOffer> {
        self.section::<UpdateSection>()?.0.as_ref()
    }
}

/// A daily maintenance window in UTC, as minutes of the day; `end < start` spans midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Window {
    pub start: u16,
    pub end: u16,
}

const DAY: i64 = 86_400;
/// `update.version`: at most this many characters.
const MAX_VERSION: usize = 64;

impl Window {
    /// `"02:00-05:00"`.
    pub fn parse(s: &str) -> Option<Window> {
        let minute = |t: &str| -> Option<u16> {
            let (h, m) = t.trim().split_once(':')?;
            if h.len() != 2 || m.len() != 2 {
                return None;
            }
            let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
            (h < 24 && m < 60).then_some(h * 60 + m)
        };
        let (a, b) = s.split_once('-')?;
        let (start, end) = (minute(a)?, minute(b)?);
        (start != end).then_some(Window { start, end })
    }

    /// Seconds from `unix` (seconds since the epoch) until the window opens; 0 inside it.
    pub fn wait_seconds(&self, unix: i64) -> i64 {
        let now = unix.rem_euclid(DAY);
        let (start, end) = (i64::from(self.start) * 60, i64::from(self.end) * 60);
        let inside = if start < end {
            (start..end).contains(&now)
        } else {
            now >= start || now < end
        };
        if inside {
            0
        } else {
            (start - now).rem_euclid(DAY)
        }
    }
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hm = |m: u16| format!("{:02}:{:02}", m / 60, m % 60);
        write!(f, "{}-{} UTC", hm(self.start), hm(self.end))
    }
}

fn validate_update(c: &mut Check<'_, '_>, raw: &RawUpdate) -> UpdateOffer {
    let url = raw.url.get_ref().trim();
    if !url.to_ascii_lowercase().starts_with("https://")
        || url.len() <= "https://".len()
        || url.chars().any(|ch| ch.is_whitespace() || ch.is_control())
    {
        c.err(
            Some(raw.url.span()),
            "update.url",
            format!("{url:?} must be an https:// URL"),
        );
    }
    let version = raw.version.get_ref().trim();
    if version.is_empty()
        || version.len() > MAX_VERSION
        || !version
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "._+-~".contains(ch))
    {
        c.err(
            Some(raw.version.span()),
            "update.version",
            format!(
                "{version:?} is not a version (1 to {MAX_VERSION} letters, digits and . _ + - ~)"
            ),
        );
    }
    let sha256 = raw.sha256.get_ref().trim().to_ascii_lowercase();
    if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        c.err(
            Some(raw.sha256.span()),
            "update.sha256",
            "must be the bundle's SHA-256 as 64 hex digits (sha256sum)",
        );
    }
    UpdateOffer {
        url: url.to_string(),
        version: version.to_string(),
        sha256,
        window: update_window(c, raw),
        reboot: raw.reboot.unwrap_or(DEFAULT_REBOOT),
    }
}

/// `update.window`, when written: a daily window in UTC.
fn update_window(c: &mut Check<'_, '_>, raw: &RawUpdate) -> Option<Window> {
    let w = raw.window.as_ref()?;
    let parsed = Window::parse(w.get_ref());
    if parsed.is_none() {
        c.err(
            Some(w.span()),
            "update.window",
            format!(
                "{:?} is not a window: \"HH:MM-HH:MM\" in UTC, e.g. \"02:00-05:00\"",
                w.get_ref()
            ),
        );
    }
    parsed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_read_and_waited_for_across_midnight() {
        let w = Window::parse("02:00-05:00").unwrap();
        assert_eq!(w.to_string(), "02:00-05:00 UTC");
        let day = 20_000 * DAY;
        assert_eq!(w.wait_seconds(day + 3 * 3600), 0);
        assert_eq!(w.wait_seconds(day + 3600), 3600);
        assert_eq!(w.wait_seconds(day + 5 * 3600), 21 * 3600);
        let night = Window::parse("23:30-00:30").unwrap();
        assert_eq!(night.wait_seconds(day + 10 * 60), 0);
        assert_eq!(night.wait_seconds(day + 23 * 3600 + 45 * 60), 0);
        assert_eq!(night.wait_seconds(day + 3600), 22 * 3600 + 30 * 60);
        for bad in [
            "2:00-05:00",
            "02:00",
            "24:00-01:00",
            "02:00-02:00",
            "02:60-03:00",
        ] {
            assert_eq!(Window::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn an_update_section_is_validated_field_by_field() {
        let parse = crate::config::parse_provisioned;
        let ok = parse(
            "[update]\nurl = \"https://updates.example.net/vantage-1.2.0-amd64.raucb\"\n\
             version = \"1.2.0\"\nsha256 = \"AB01AB01AB01AB01AB01AB01AB01AB01AB01AB01AB01AB01AB01AB01AB01AB01\"\n\
             window = \"01:00-04:00\"\n",
            "p.toml",
        )
        .unwrap();
        let u = ok.update_offer().unwrap();
        assert_eq!(u.version, "1.2.0");
        assert_eq!(u.sha256, "ab01".repeat(16));
        assert_eq!(u.window, Window::parse("01:00-04:00"));
        assert_eq!(u.reboot, DEFAULT_REBOOT);
        let no_reboot = parse(
            "[update]\nurl = \"https://u.example.net/b.raucb\"\nversion = \"1.2.0\"\n\
             sha256 = \"AB01AB01AB01AB01AB01AB01AB01AB01AB01AB01AB01AB01AB01AB01AB01AB01\"\n\
             reboot = false\n",
            "p.toml",
        )
        .unwrap();
        assert!(!no_reboot.update_offer().unwrap().reboot);
        // Without the section, no offer.
        assert_eq!(parse("", "p.toml").unwrap().update_offer(), None);

        let e = parse(
            "[update]\nurl = \"http://x/b\"\nversion = \"1 2\"\nsha256 = \"abc\"\n\
             window = \"soon\"\nrestart = true\n",
            "p.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("p.toml:6:1: update.restart: unknown field `restart`"),
            "{e}"
        );
        let e = parse(
            "[update]\nurl = \"http://x/b\"\nversion = \"1 2\"\nsha256 = \"abc\"\nwindow = \"soon\"\n",
            "p.toml",
        )
        .unwrap_err()
        .to_string();
        for want in [
            "update.url",
            "must be an https:// URL",
            "update.version",
            "update.sha256",
            "64 hex digits",
            "update.window",
        ] {
            assert!(e.contains(want), "{want} in {e}");
        }
    }
}
