//! Test support for Vantage's real-network tests and benchmarks.
//!
//! Builds throw-away network namespaces joined by veth pairs, makes packet loss with iptables'
//! `statistic` match and delay with an NFQUEUE holder (the kernels we run on have no netem
//! qdisc), and runs code inside a namespace. Everything it creates is removed by drop guards,
//! also when a test panics. Nothing here is part of the product.

mod config_files;
mod delay;
mod exposition;
mod netns;
mod readme;
mod tempdir;

pub use config_files::{bad_files_fail_as_expected, good_files_load, testdata_files};
pub use delay::{Control, DelayQueue, DelayStats, Lateness, run_delay_loop};
pub use exposition::{Labels, exposition_series};
pub use netns::{Netns, VethPair, unique_name};
pub use readme::{DurationRange, IntRange, readme_duration, readme_range, readme_range_mismatches};
pub use tempdir::TempDir;

/// Set to `1` to make root-only tests fail instead of skipping when they cannot run.
pub const REQUIRE_ROOT_ENV: &str = "VANTAGE_REQUIRE_ROOT_TESTS";

/// Whether a root-only test can run here. Returns false, after printing why, when the test
/// should be skipped; panics instead when `VANTAGE_REQUIRE_ROOT_TESTS=1`, so CI cannot pass by
/// silently skipping.
pub fn root_or_skip(test: &str) -> bool {
    let reason = if euid() != 0 {
        Some("needs root (network namespaces, iptables, raw sockets)".to_string())
    } else {
        missing_tools(&["ip", "iptables", "ip6tables"])
            .map(|t| format!("needs `{t}` (install iproute2 and iptables)"))
    };
    match reason {
        None => true,
        Some(r) if std::env::var(REQUIRE_ROOT_ENV).as_deref() == Ok("1") => {
            panic!("{test}: {r}, and {REQUIRE_ROOT_ENV}=1 forbids skipping")
        }
        Some(r) => {
            eprintln!("SKIPPED {test}: {r}; set {REQUIRE_ROOT_ENV}=1 to make this a failure");
            false
        }
    }
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The first of `tools` not found on PATH.
pub fn missing_tools<'a>(tools: &[&'a str]) -> Option<&'a str> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<_> = std::env::split_paths(&path).collect();
    // Root's tools live in sbin, which a test runner's PATH may lack.
    dirs.extend(["/usr/sbin", "/sbin"].map(std::path::PathBuf::from));
    tools
        .iter()
        .find(|t| !dirs.iter().any(|d| d.join(t).is_file()))
        .copied()
}

/// Quantile of a sorted slice (nearest rank), `q` in 0..=1.
pub fn quantile<T: Copy>(sorted: &[T], q: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_is_nearest_rank() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.5), Some(50));
        assert_eq!(quantile(&v, 0.9), Some(90));
        assert_eq!(quantile(&v, 0.0), Some(1));
        assert_eq!(quantile(&v, 1.0), Some(100));
        assert_eq!(quantile::<u32>(&[], 0.5), None);
    }

    #[test]
    fn missing_tools_finds_absent_ones() {
        assert_eq!(missing_tools(&["sh"]), None);
        assert_eq!(
            missing_tools(&["sh", "no-such-tool-vantage"]),
            Some("no-such-tool-vantage")
        );
    }
}
