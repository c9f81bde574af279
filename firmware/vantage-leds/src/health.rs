//! Derives the [`DeviceState`] from what the daemon sees: probe results, and (once they
//! exist) the uplink and the store, which report through [`Health::set_uplink`] and
//! [`Health::set_store`].

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vantage_core::{JobKey, Observer, Sample};

use crate::driver::Leds;
use crate::state::{DeviceState, StoreHealth, Uplink};

/// How long "booting" lasts at most when some target never reports.
pub const DEFAULT_BOOT_GRACE: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct Health {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    started: Instant,
    boot_grace: Duration,
    booted: bool,
    /// Longest silence of the probes (with targets configured) before they count as stuck.
    stall_after: Duration,
    last_sample: Option<Instant>,
    /// Latest success per probe of each configured target.
    targets: HashMap<String, HashMap<String, bool>>,
    uplink: Uplink,
    store: StoreHealth,
}

impl Health {
    pub fn new(started: Instant, boot_grace: Duration) -> Self {
        Self {
            inner: Mutex::new(Inner {
                started,
                boot_grace,
                booted: false,
                stall_after: boot_grace.max(Duration::from_secs(10)) * 2,
                last_sample: None,
                targets: HashMap::new(),
                uplink: Uplink::Unknown,
                store: StoreHealth::Unknown,
            }),
        }
    }

    /// How long the probes may be silent before [`Health::stalled`] says so (default: twice
    /// the boot grace, at least 20 s).
    pub fn set_stall_after(&self, d: Duration) {
        self.lock().stall_after = d;
    }

    /// Targets are configured but no probe result arrived for `stall_after`: the scheduler or
    /// the runner is stuck, and the LEDs' picture of the targets is stale.
    pub fn stalled(&self, now: Instant) -> bool {
        let g = self.lock();
        if g.targets.is_empty() {
            return false;
        }
        let since = g.last_sample.unwrap_or(g.started);
        now.saturating_duration_since(since) > g.stall_after
    }

    /// The configured targets (at start and after each reload). Results of removed targets
    /// are forgotten; new ones start with no result, which counts as not failing.
    pub fn set_targets<'a>(&self, names: impl IntoIterator<Item = &'a str>) {
        let names: HashSet<&str> = names.into_iter().collect();
        let mut g = self.lock();
        g.targets.retain(|k, _| names.contains(k.as_str()));
        for n in names {
            g.targets.entry(n.to_string()).or_default();
        }
    }

    /// The outcome of one probe round. Rounds of targets no longer configured are ignored.
    pub fn record(&self, target: &str, probe: &str, success: bool) {
        let mut g = self.lock();
        g.last_sample = Some(Instant::now());
        if let Some(t) = g.targets.get_mut(target) {
            t.insert(probe.to_string(), success);
        }
    }

    pub fn set_uplink(&self, uplink: Uplink) {
        self.lock().uplink = uplink;
    }

    pub fn set_store(&self, store: StoreHealth) {
        self.lock().store = store;
    }

    pub fn state(&self, now: Instant) -> DeviceState {
        let mut g = self.lock();
        if !g.booted
            && (g.targets.values().all(|t| !t.is_empty())
                || now.saturating_duration_since(g.started) >= g.boot_grace)
        {
            g.booted = true;
        }
        DeviceState {
            booting: !g.booted,
            targets_total: g.targets.len(),
            targets_failing: g
                .targets
                .values()
                .filter(|t| t.values().any(|ok| !ok))
                .count(),
            uplink: g.uplink,
            store: g.store,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The runner's observer for the LEDs: records each result and shows a change at once,
/// so a target going down lights the LED within one probe interval (plus its timeout), not
/// one more main-loop tick later.
#[derive(Debug)]
pub struct LedObserver {
    pub health: Arc<Health>,
    pub leds: Arc<Leds>,
}

impl Observer for LedObserver {
    fn sample(&self, sample: Sample) {
        let now = Instant::now();
        let before = self.health.state(now);
        self.health
            .record(&sample.target, sample.probe.as_str(), sample.success);
        let after = self.health.state(now);
        if after != before {
            self.leds.set_state(after);
        }
    }

    fn lag(&self, _: &JobKey, _: Duration) {}

    fn skipped(&self, _: &JobKey) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boots_until_every_target_reported() {
        let t0 = Instant::now();
        let h = Health::new(t0, Duration::from_secs(60));
        h.set_targets(["a", "b"]);
        assert!(h.state(t0).booting);
        h.record("a", "ping", true);
        assert!(h.state(t0).booting);
        h.record("b", "ping", false);
        let s = h.state(t0);
        assert!(!s.booting);
        assert_eq!((s.targets_total, s.targets_failing), (2, 1));
        // Booting is over for good, even when a reload adds a target with no result yet.
        h.set_targets(["a", "b", "c"]);
        assert!(!h.state(t0).booting);
    }

    #[test]
    fn boot_grace_ends_booting() {
        let t0 = Instant::now();
        let h = Health::new(t0, Duration::from_secs(10));
        h.set_targets(["silent"]);
        assert!(h.state(t0 + Duration::from_secs(9)).booting);
        assert!(!h.state(t0 + Duration::from_secs(10)).booting);
    }

    #[test]
    fn no_targets_is_not_booting_nor_failing() {
        let t0 = Instant::now();
        let h = Health::new(t0, Duration::from_secs(10));
        h.set_targets([]);
        let s = h.state(t0);
        assert!(!s.booting);
        assert_eq!(s.targets_failing, 0);
    }

    #[test]
    fn a_target_fails_when_any_probe_failed_last() {
        let t0 = Instant::now();
        let h = Health::new(t0, Duration::from_secs(10));
        h.set_targets(["a"]);
        h.record("a", "ping", true);
        h.record("a", "dns", false);
        assert_eq!(h.state(t0).targets_failing, 1);
        h.record("a", "dns", true);
        assert_eq!(h.state(t0).targets_failing, 0);
        // Removed targets are forgotten; unknown ones ignored.
        h.record("a", "ping", false);
        h.set_targets(["b"]);
        h.record("zzz", "ping", false);
        assert_eq!(h.state(t0).targets_failing, 0);
        assert_eq!(h.state(t0).targets_total, 1);
    }

    #[test]
    fn silent_probes_count_as_stalled() {
        let t0 = Instant::now();
        let h = Health::new(t0, Duration::from_secs(10));
        h.set_stall_after(Duration::from_secs(30));
        // Nothing to probe: never stalled.
        assert!(!h.stalled(t0 + Duration::from_secs(3600)));
        h.set_targets(["a"]);
        assert!(!h.stalled(t0 + Duration::from_secs(30)));
        assert!(h.stalled(t0 + Duration::from_secs(31)));
        let now = Instant::now();
        h.record("a", "ping", true);
        assert!(!h.stalled(now + Duration::from_secs(30)));
        assert!(h.stalled(now + Duration::from_secs(31)));
    }

    #[test]
    fn uplink_and_store_plug_in() {
        let t0 = Instant::now();
        let h = Health::new(t0, Duration::from_secs(10));
        assert_eq!(h.state(t0).uplink, Uplink::Unknown);
        h.set_uplink(Uplink::Unreachable);
        h.set_store(StoreHealth::NearFull);
        let s = h.state(t0);
        assert_eq!(
            (s.uplink, s.store),
            (Uplink::Unreachable, StoreHealth::NearFull)
        );
    }
}
