//! Derives the [`DeviceState`] from what the daemon sees: probe results, and (once they
//! exist) the uplink and the store, which report through [`Health::set_uplink`] and
//! [`Health::set_store`].

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vantage_core::LockExt;

use vantage_core::{JobKey, Observer, Sample};

use crate::driver::Leds;
use crate::state::{DeviceState, StoreHealth, Uplink};
use table::Targets;

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
    targets: Targets,
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
                targets: Targets::default(),
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
        self.lock().targets.set(names);
    }

    /// The outcome of one probe round. Rounds of targets no longer configured are ignored.
    pub fn record(&self, target: &str, probe: &str, success: bool) {
        let mut g = self.lock();
        g.last_sample = Some(Instant::now());
        g.targets.record(target, probe, success);
    }

    pub fn set_uplink(&self, uplink: Uplink) {
        self.lock().uplink = uplink;
    }

    pub fn set_store(&self, store: StoreHealth) {
        self.lock().store = store;
    }

    /// The state now. Costs the same whatever the number of targets: the runner's observer
    /// calls it twice per probe result.
    pub fn state(&self, now: Instant) -> DeviceState {
        let mut g = self.lock();
        if !g.booted
            && (g.targets.silent() == 0 || now.saturating_duration_since(g.started) >= g.boot_grace)
        {
            g.booted = true;
        }
        DeviceState {
            booting: !g.booted,
            targets_total: g.targets.len(),
            targets_failing: g.targets.failing(),
            uplink: g.uplink,
            store: g.store,
        }
    }

    /// Table entries looked at so far: a deterministic measure of what rounds cost, for the
    /// test that keeps a round's cost independent of the number of targets.
    pub fn work(&self) -> u64 {
        self.lock().targets.visited()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock_or_recover()
    }
}

mod table {
    use std::collections::{HashMap, HashSet};

    /// The latest success per probe of each configured target, with the counts the LEDs show
    /// kept up to date as results arrive: a round touches its own target only, so 10,000
    /// targets cost no more per round than 10. Its own module, so that nothing reads the map
    /// except through methods that count what they look at.
    #[derive(Debug, Default)]
    pub(super) struct Targets {
        by_name: HashMap<Box<str>, Target>,
        /// Targets whose latest result of some probe failed.
        failing: usize,
        /// Targets with no result yet.
        silent: usize,
        /// Entries looked at, see [`super::Health::work`].
        visited: u64,
    }

    #[derive(Debug, Default)]
    struct Target {
        /// Latest success per probe (a target has a handful at most).
        probes: Vec<(Box<str>, bool)>,
        /// Probes whose latest result failed.
        failed: usize,
    }

    impl Target {
        fn failing(&self) -> bool {
            self.failed > 0
        }
    }

    impl Targets {
        pub(super) fn len(&self) -> usize {
            self.by_name.len()
        }

        pub(super) fn is_empty(&self) -> bool {
            self.by_name.is_empty()
        }

        pub(super) fn failing(&self) -> usize {
            self.failing
        }

        pub(super) fn silent(&self) -> usize {
            self.silent
        }

        pub(super) fn visited(&self) -> u64 {
            self.visited
        }

        /// A reload: results of removed targets are forgotten; new ones start silent.
        pub(super) fn set<'a>(&mut self, names: impl IntoIterator<Item = &'a str>) {
            let names: HashSet<&str> = names.into_iter().collect();
            let (mut failing, mut silent) = (0, 0);
            self.visited += self.by_name.len() as u64;
            self.by_name.retain(|k, t| {
                let keep = names.contains(&**k);
                if !keep {
                    failing += usize::from(t.failing());
                    silent += usize::from(t.probes.is_empty());
                }
                keep
            });
            self.failing -= failing;
            self.silent -= silent;
            for n in names {
                self.visited += 1;
                if !self.by_name.contains_key(n) {
                    self.by_name.insert(n.into(), Target::default());
                    self.silent += 1;
                }
            }
        }

        /// One probe result; results of targets not configured are ignored.
        pub(super) fn record(&mut self, target: &str, probe: &str, ok: bool) {
            self.visited += 1;
            let Some(t) = self.by_name.get_mut(target) else {
                return;
            };
            let (was_failing, was_silent) = (t.failing(), t.probes.is_empty());
            let slot = t.probes.iter().position(|(p, _)| **p == *probe);
            self.visited += slot.map_or(t.probes.len(), |i| i + 1) as u64;
            match slot {
                Some(i) if t.probes[i].1 == ok => {}
                Some(i) => {
                    t.probes[i].1 = ok;
                    if ok {
                        t.failed -= 1;
                    } else {
                        t.failed += 1;
                    }
                }
                None => {
                    t.probes.push((probe.into(), ok));
                    t.failed += usize::from(!ok);
                }
            }
            match (was_failing, t.failing()) {
                (false, true) => self.failing += 1,
                (true, false) => self.failing -= 1,
                _ => {}
            }
            self.silent -= usize::from(was_silent);
        }
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
    use vantage_core::ProbeKind;

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
    #[test]
    fn removing_the_last_silent_target_ends_booting() {
        let t0 = Instant::now();
        let h = Health::new(t0, Duration::from_secs(60));
        h.set_targets(["a", "silent"]);
        h.record("a", "ping", true);
        assert!(h.state(t0).booting);
        h.set_targets(["a"]);
        assert!(!h.state(t0).booting);
    }

    /// The kept counts match a count from scratch over any mix of results and reloads.
    #[test]
    fn kept_counts_match_a_recount() {
        let t0 = Instant::now();
        let h = Health::new(t0, Duration::from_secs(3600));
        let mut model: std::collections::HashMap<String, std::collections::HashMap<&str, bool>> =
            Default::default();
        let mut booted = false;
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = |m: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % m
        };
        for step in 0..5_000u32 {
            if step.is_multiple_of(500) {
                let names: Vec<String> = (0..20)
                    .filter(|_| next(3) != 0)
                    .map(|i| format!("t{i}"))
                    .collect();
                h.set_targets(names.iter().map(String::as_str));
                model.retain(|k, _| names.contains(k));
                for n in names {
                    model.entry(n).or_default();
                }
            }
            let target = format!("t{}", next(22));
            let probe = ["ping", "dns", "trace"][next(3) as usize];
            let ok = next(4) != 0;
            h.record(&target, probe, ok);
            if let Some(t) = model.get_mut(&target) {
                t.insert(probe, ok);
            }
            let s = h.state(t0);
            let failing = model.values().filter(|t| t.values().any(|ok| !ok)).count();
            let silent = model.values().filter(|t| t.is_empty()).count();
            assert_eq!((s.targets_total, s.targets_failing), (model.len(), failing));
            // Booting ends for good the first time every target has reported.
            booted |= silent == 0;
            assert_eq!(s.booting, !booted, "step {step}");
        }
    }

    /// Work the LED observer does for `rounds` probe results spread over `n` targets with
    /// two probes each, counted as table entries looked at, after every target has reported.
    fn work_per_round(n: usize, rounds: usize) -> f64 {
        let t0 = Instant::now();
        let health = Arc::new(Health::new(t0, Duration::from_secs(60)));
        let names: Vec<String> = (0..n).map(|i| format!("t{i}")).collect();
        health.set_targets(names.iter().map(String::as_str));
        let leds = Arc::new(Leds::start(
            Vec::new(),
            Duration::ZERO,
            Duration::from_secs(60),
        ));
        let obs = LedObserver {
            health: health.clone(),
            leds: leds.clone(),
        };
        let round = |i: usize, ok: bool| {
            let probe = if i.is_multiple_of(2) {
                ProbeKind::PING
            } else {
                ProbeKind::DNS
            };
            obs.sample(Sample {
                target: names[(i / 2) % n].as_str().into(),
                probe,
                timestamp: std::time::SystemTime::now(),
                duration: Duration::ZERO,
                success: ok,
                error: None,
                measurement: vantage_core::Measurement::None,
                quality: Default::default(),
            });
        };
        for i in 0..2 * n {
            round(i, true);
        }
        assert!(!health.state(t0).booting);
        let before = health.work();
        // Targets go down and come back: the failing count changes every few rounds.
        for i in 0..rounds {
            round(i * 7, i % 3 != 0);
        }
        let per_round = (health.work() - before) as f64 / rounds as f64;
        leds.shutdown(crate::Pattern::Off);
        per_round
    }

    /// Each probe result costs the same whatever the number of targets: at 10,000 targets
    /// with a round each per second, a scan over every target per round is 10^8 steps a second.
    #[test]
    fn a_round_costs_the_same_at_100_and_10000_targets() {
        let small = work_per_round(100, 2_000);
        let large = work_per_round(10_000, 2_000);
        assert!(small > 0.0, "the observer looks at some entry per round");
        assert!(
            large <= 2.0 * small,
            "work per round grows with the targets: {small:.1} entries at 100 targets, {large:.1} at 10,000"
        );
    }
}
