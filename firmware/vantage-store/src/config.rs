//! `[store]`: the sample store on the SD card, read with the core's checks (a
//! [`ConfigSection`] the daemon registers with the loader), its defaults and ranges beside it.

use std::sync::LazyLock;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;
use vantage_core::Config;
use vantage_core::config::{Check, ConfigSection, Section, Src, read_table};
use vantage_core::defaults::{Bounds, between};

use crate::remote_write::config::{RemoteWriteConfig, RemoteWrites};

/// Store: a quarter of a 16 GB card; at ~12 bytes a round, 100 targets at 1 s for 30 days need
/// about 3.3 GB.
pub const STORE_MAX_BYTES: u64 = 4 << 30;
/// Bounds of `store.max_size`.
pub const STORE_MIN_BYTES: u64 = 1 << 20;
pub const STORE_MAX_MAX_BYTES: u64 = 16 << 40;
/// Store: samples older than this are dropped.
pub const STORE_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);
/// Group commit interval: also the durability window (what a power cut can lose).
pub const STORE_COMMIT_INTERVAL: Duration = Duration::from_secs(5);
/// Group commit size: a commit happens early when this many samples wait.
pub const STORE_COMMIT_SAMPLES: usize = 10_000;
/// Samples kept in memory while the disk refuses writes (about 80 MB at most).
pub const STORE_MAX_PENDING: usize = 1_000_000;
/// `store.max_age`: from a minute to ten years.
pub const STORE_MAX_AGE_RANGE: Bounds<Duration> = between(
    Duration::from_secs(60),
    Duration::from_secs(10 * 365 * 24 * 3600),
);
/// `store.commit_interval`.
pub const STORE_COMMIT_INTERVAL_RANGE: Bounds<Duration> =
    between(Duration::from_millis(10), Duration::from_millis(600_000));
/// `store.commit_samples`.
pub const STORE_COMMIT_SAMPLES_RANGE: Bounds<i64> = between(1, 1_000_000);
/// `store.max_pending`.
pub const STORE_MAX_PENDING_RANGE: Bounds<i64> = between(1000, 100_000_000);

/// `[store]` as written.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    /// `fjall` (default) or `sled` (builds with the `sled` feature only).
    pub backend: Option<Spanned<String>>,
    /// Bytes on disk, e.g. `"4GiB"`, `"500MB"` or a plain number of bytes.
    pub max_size: Option<Spanned<toml::Value>>,
    pub max_age: Option<Spanned<String>>,
    /// Group commit: write at least this often...
    pub commit_interval: Option<Spanned<String>>,
    /// ...or when this many samples wait.
    pub commit_samples: Option<Spanned<i64>>,
    /// Samples kept in memory while the disk refuses writes.
    pub max_pending: Option<Spanned<i64>>,
}

/// Validated `[store]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoreConfig {
    pub backend: String,
    pub max_bytes: u64,
    pub max_age: Duration,
    pub commit_interval: Duration,
    pub commit_samples: usize,
    pub max_pending: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            backend: "fjall".into(),
            max_bytes: STORE_MAX_BYTES,
            max_age: STORE_MAX_AGE,
            commit_interval: STORE_COMMIT_INTERVAL,
            commit_samples: STORE_COMMIT_SAMPLES,
            max_pending: STORE_MAX_PENDING,
        }
    }
}

/// Parses sizes: `"4GiB"`, `"512MiB"`, `"500MB"`, `"64kB"`, or a bare integer of bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.trim();
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "kib" | "k" => 1 << 10,
        "mib" | "m" => 1 << 20,
        "gib" | "g" => 1 << 30,
        "tib" | "t" => 1 << 40,
        _ => {
            return Err(format!(
                "{s:?} is not a size; write e.g. \"4GiB\", \"500MB\" or \"65536\""
            ));
        }
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size; write e.g. \"4GiB\", \"500MB\" or \"65536\""))?;
    let bytes = n * mult as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(format!("{s:?} is too large"));
    }
    Ok(bytes as u64)
}

/// `[store]` of a config the loader was not given the section for: the defaults.
static DEFAULT_STORE: LazyLock<StoreConfig> = LazyLock::new(StoreConfig::default);

/// The config's `[store]` and `[[remote_write]]`, for a config read with [`StoreConfig`] and
/// [`RemoteWrites`] registered (`Config::section`).
pub trait StoreSections {
    fn store(&self) -> &StoreConfig;
    fn remote_write(&self) -> &[RemoteWriteConfig];
}

impl StoreSections for Config {
    fn store(&self) -> &StoreConfig {
        self.section::<StoreConfig>().unwrap_or(&DEFAULT_STORE)
    }

    fn remote_write(&self) -> &[RemoteWriteConfig] {
        self.section::<RemoteWrites>().map_or(&[], |r| &r.0)
    }
}

impl ConfigSection for StoreConfig {
    const KEY: &'static str = "store";
    const DEVICE_ONLY: bool = false;

    /// `[store]`, read on its own so its errors name the field, like a target's.
    fn read(c: &mut Check<'_, '_>, value: &Section<'_>) -> Self {
        match read_table::<RawStore>(c, value, "store", "must be a table ([store])") {
            Some(raw) => StoreConfig::resolve(c, Some(&raw)),
            None => StoreConfig::default(),
        }
    }
}

impl StoreConfig {
    fn resolve(c: &mut Check<'_, '_>, raw: Option<&RawStore>) -> Self {
        let mut out = Self::default();
        let Some(raw) = raw else { return out };
        if let Some(b) = &raw.backend {
            match b.get_ref().as_str() {
                "fjall" | "sled" => out.backend = b.get_ref().clone(),
                other => c.err(
                    b.span(),
                    "store.backend",
                    format!("{other:?} is not a store backend (fjall or sled)"),
                ),
            }
        }
        if let Some(n) = raw.max_size.as_ref().and_then(|v| max_size(c, v)) {
            out.max_bytes = n;
        }
        let field = |name: &str| format!("store.{name}");
        let x = Src::new(Some(raw), None, &field);
        out.max_age = x
            .ranged(c, |r| r.max_age.as_ref(), "max_age", STORE_MAX_AGE_RANGE)
            .unwrap_or(out.max_age);
        let interval = STORE_COMMIT_INTERVAL_RANGE;
        out.commit_interval = x
            .ranged(
                c,
                |r| r.commit_interval.as_ref(),
                "commit_interval",
                interval,
            )
            .unwrap_or(out.commit_interval);
        let samples = STORE_COMMIT_SAMPLES_RANGE;
        out.commit_samples = x
            .ranged(c, |r| r.commit_samples.as_ref(), "commit_samples", samples)
            .map_or(out.commit_samples, |n| n as usize);
        out.max_pending = x
            .ranged(
                c,
                |r| r.max_pending.as_ref(),
                "max_pending",
                STORE_MAX_PENDING_RANGE,
            )
            .map_or(out.max_pending, |n| n as usize);
        out
    }
}

/// `store.max_size`: bytes as a number or a size with its unit, within its bounds.
fn max_size(c: &mut Check<'_, '_>, v: &Spanned<toml::Value>) -> Option<u64> {
    let parsed = match v.get_ref() {
        toml::Value::Integer(n) if *n >= 0 => Ok(*n as u64),
        toml::Value::Integer(n) => Err(format!("{n} is negative")),
        toml::Value::String(s) => parse_size(s),
        other => Err(format!(
            "must be a size such as \"4GiB\", got a {}",
            other.type_str()
        )),
    };
    match parsed {
        Ok(n) if (STORE_MIN_BYTES..=STORE_MAX_MAX_BYTES).contains(&n) => Some(n),
        Ok(n) => {
            c.err(
                v.span(),
                "store.max_size",
                format!(
                    "{n} bytes is out of range; it must be between {} MiB and {} TiB",
                    STORE_MIN_BYTES >> 20,
                    STORE_MAX_MAX_BYTES >> 40
                ),
            );
            None
        }
        Err(m) => {
            c.err(v.span(), "store.max_size", m);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4GiB"), Ok(4 << 30));
        assert_eq!(parse_size("500MB"), Ok(500_000_000));
        assert_eq!(parse_size("1.5 MiB"), Ok(3 << 19));
        assert_eq!(parse_size("65536"), Ok(65536));
        assert!(parse_size("4 parsecs").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("-1GB").is_err());
    }
}
