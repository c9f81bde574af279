//! The renderer: one thread that owns the LEDs and plays each one's pattern.
//!
//! The daemon's main loop calls [`Leds::update`] about once a second. If it stops doing so
//! for `stale_after`, the renderer shows "not responding" by itself: a stuck main loop never
//! leaves "all good" on. (If the whole process freezes, the LEDs freeze too; the systemd
//! watchdog then restarts the daemon, see `docs/LEDS.md`.)

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use vantage_core::LockExt;

use crate::config::LedRole;
use serde::Serialize;

use crate::backend::Led;
use crate::pattern::Pattern;
use crate::state::{Condition, DeviceState, conditions, pattern_for};

/// The longest the renderer sleeps, so liveness checks see it tick.
const MAX_SLEEP: Duration = Duration::from_millis(500);
/// Identify never runs longer than this, whatever is asked.
pub const MAX_IDENTIFY: Duration = Duration::from_secs(24 * 3600);

/// The LEDs of the device and the thread that drives them.
#[derive(Debug)]
pub struct Leds {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<Vec<Slot>>>>,
    identify_default: Duration,
    views: Vec<(String, LedRole)>,
}

#[derive(Debug)]
struct Shared {
    desired: Mutex<Desired>,
    wake: Condvar,
}

#[derive(Debug)]
struct Desired {
    state: DeviceState,
    identify_until: Option<Instant>,
    fed: Instant,
    stale_after: Duration,
    stop: bool,
    /// What the renderer showed last (after shutdown: what the LEDs were left showing).
    shown: Vec<Pattern>,
    /// Bumped on every change, so a change made while the renderer writes is not slept over.
    version: u64,
    rendered_at: Instant,
    write_errors: u64,
}

#[derive(Debug)]
struct Slot {
    role: LedRole,
    label: String,
    led: Box<dyn Led>,
    pattern: Option<Pattern>,
    since: Instant,
    lit: Option<bool>,
    failing: bool,
}

/// What the LEDs show now, for the web page and metrics.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Snapshot {
    pub leds: Vec<LedView>,
    pub conditions: Vec<Condition>,
    #[serde(rename = "identify_remaining_seconds", serialize_with = "secs")]
    pub identify_remaining: Option<Duration>,
    pub responding: bool,
    pub write_errors: u64,
}

fn secs<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LedView {
    pub label: String,
    pub role: LedRole,
    pub pattern: Pattern,
}

impl Leds {
    /// Takes the LEDs and starts rendering. Until the first [`Leds::update`] the device is
    /// booting.
    pub fn start(
        leds: Vec<(LedRole, Box<dyn Led>)>,
        identify_default: Duration,
        stale_after: Duration,
    ) -> Self {
        let now = Instant::now();
        let slots: Vec<Slot> = leds
            .into_iter()
            .map(|(role, led)| Slot {
                role,
                label: led.label().to_string(),
                led,
                pattern: None,
                since: now,
                lit: None,
                failing: false,
            })
            .collect();
        let shared = Arc::new(Shared {
            desired: Mutex::new(Desired {
                state: DeviceState {
                    booting: true,
                    ..DeviceState::default()
                },
                identify_until: None,
                fed: now,
                stale_after,
                stop: false,
                shown: vec![Pattern::Off; slots.len()],
                version: 0,
                rendered_at: now,
                write_errors: 0,
            }),
            wake: Condvar::new(),
        });
        let views = slots.iter().map(|s| (s.label.clone(), s.role)).collect();
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("vantage-leds".into())
            .spawn(move || render(&s, slots))
            .expect("spawning the LED thread");
        Self {
            shared,
            thread: Mutex::new(Some(thread)),
            identify_default,
            views,
        }
    }

    /// The daemon's state, from its main loop; also proves the loop is alive.
    pub fn update(&self, state: DeviceState) {
        self.set(state, true);
    }

    /// A new state between two ticks of the main loop (a probe result), shown at once; it
    /// does not count as a sign of life of the main loop.
    pub fn set_state(&self, state: DeviceState) {
        self.set(state, false);
    }

    fn set(&self, state: DeviceState, feed: bool) {
        let mut d = self.lock();
        let now = Instant::now();
        let was_stale = now.saturating_duration_since(d.fed) > d.stale_after;
        let changed = d.state != state || (feed && was_stale);
        d.state = state;
        if feed {
            d.fed = now;
        }
        if changed {
            d.version += 1;
        }
        drop(d);
        if changed {
            self.shared.wake.notify_all();
        }
    }

    /// Blinks every LED fast for `duration` (the configured timeout when `None`), to find the
    /// device in a rack. Returns how long it will blink.
    pub fn identify(&self, duration: Option<Duration>) -> Duration {
        let d = duration.unwrap_or(self.identify_default).min(MAX_IDENTIFY);
        self.lock().identify_until = Some(Instant::now() + d);
        self.shared.wake.notify_all();
        d
    }

    pub fn stop_identify(&self) {
        let mut g = self.lock();
        g.identify_until = None;
        g.version += 1;
        drop(g);
        self.shared.wake.notify_all();
    }

    /// What the LEDs show for the state as it is now (the renderer shows the same within
    /// a moment); after [`Leds::shutdown`], what they were left showing.
    pub fn snapshot(&self) -> Snapshot {
        let d = self.lock();
        let now = Instant::now();
        let identify_remaining = d
            .identify_until
            .and_then(|u| u.checked_duration_since(now))
            .filter(|r| !r.is_zero());
        let responding = now.saturating_duration_since(d.fed) <= d.stale_after;
        let (conds, patterns) = if d.stop {
            (Vec::new(), d.shown.clone())
        } else {
            let conds = conditions(&d.state, identify_remaining.is_some(), responding);
            let patterns = self
                .views
                .iter()
                .map(|(_, role)| pattern_for(*role, &conds))
                .collect();
            (conds, patterns)
        };
        Snapshot {
            leds: self
                .views
                .iter()
                .zip(patterns)
                .map(|((label, role), pattern)| LedView {
                    label: label.clone(),
                    role: *role,
                    pattern,
                })
                .collect(),
            conditions: conds,
            identify_remaining,
            responding,
            write_errors: d.write_errors,
        }
    }

    /// Whether the renderer thread is ticking (for the systemd watchdog).
    pub fn renderer_alive(&self) -> bool {
        let d = self.lock();
        !d.stop && Instant::now().saturating_duration_since(d.rendered_at) < MAX_SLEEP * 4
    }

    /// Stops rendering and leaves every LED in a defined state: `last` on all of them
    /// (normally [`Pattern::Off`]), handed to the kernel where it can keep it.
    pub fn shutdown(&self, last: Pattern) {
        let handle = self.thread.lock_or_recover().take();
        let Some(handle) = handle else { return };
        self.lock().stop = true;
        self.shared.wake.notify_all();
        match handle.join() {
            Ok(mut slots) => {
                for s in &mut slots {
                    if let Err(e) = s.led.persist(last) {
                        tracing::warn!(led = %s.label, "cannot leave the LED {last}: {e}");
                    }
                }
                let mut d = self.lock();
                d.shown = vec![last; slots.len()];
            }
            Err(_) => tracing::error!("the LED thread panicked"),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Desired> {
        self.shared.desired.lock_or_recover()
    }
}

impl Drop for Leds {
    fn drop(&mut self) {
        self.shutdown(Pattern::Off);
    }
}

fn render(shared: &Shared, mut slots: Vec<Slot>) -> Vec<Slot> {
    let mut guard = shared.desired.lock_or_recover();
    loop {
        if guard.stop {
            return slots;
        }
        let now = Instant::now();
        if guard.identify_until.is_some_and(|u| u <= now) {
            guard.identify_until = None;
        }
        let identify = guard.identify_until.is_some();
        let stale_at = guard.fed + guard.stale_after;
        let responding = now <= stale_at;
        let conds = conditions(&guard.state, identify, responding);
        let patterns: Vec<Pattern> = slots.iter().map(|s| pattern_for(s.role, &conds)).collect();
        let version = guard.version;
        guard.shown = patterns.clone();
        guard.rendered_at = now;
        let mut deadline = now + MAX_SLEEP;
        if responding {
            deadline = deadline.min(stale_at + Duration::from_millis(1));
        }
        if let Some(u) = guard.identify_until {
            deadline = deadline.min(u);
        }
        drop(guard);

        let mut errors = 0;
        for (slot, p) in slots.iter_mut().zip(patterns) {
            if slot.pattern != Some(p) {
                slot.pattern = Some(p);
                slot.since = now;
                slot.led.pattern_changed(p);
            }
            let elapsed = now.saturating_duration_since(slot.since);
            let lit = p.level(elapsed);
            if slot.lit != Some(lit) {
                match slot.led.set(lit) {
                    Ok(()) => {
                        slot.lit = Some(lit);
                        if slot.failing {
                            slot.failing = false;
                            tracing::info!(led = %slot.label, "LED writable again");
                        }
                    }
                    Err(e) => {
                        errors += 1;
                        if !slot.failing {
                            slot.failing = true;
                            tracing::warn!(led = %slot.label, "cannot set LED: {e}");
                        }
                    }
                }
            }
            if let Some(d) = p.next_change(elapsed) {
                deadline = deadline.min(now + d);
            }
        }

        guard = shared.desired.lock_or_recover();
        guard.write_errors += errors;
        let wait = deadline.saturating_duration_since(Instant::now());
        if !wait.is_zero() && !guard.stop && guard.version == version {
            guard = shared
                .wake
                .wait_timeout(guard, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::Arc;

    use super::*;
    use crate::state::{StoreHealth, Uplink};

    /// Records every level written, with its time.
    #[derive(Debug, Clone, Default)]
    struct Recorder {
        log: Arc<Mutex<Vec<(Instant, bool)>>>,
        persisted: Arc<Mutex<Vec<Pattern>>>,
        fail: Arc<Mutex<bool>>,
    }

    #[derive(Debug)]
    struct FakeLed(String, Recorder);

    impl Led for FakeLed {
        fn label(&self) -> &str {
            &self.0
        }
        fn set(&mut self, on: bool) -> io::Result<()> {
            if *self.1.fail.lock().unwrap() {
                return Err(io::Error::other("gone"));
            }
            self.1.log.lock().unwrap().push((Instant::now(), on));
            Ok(())
        }
        fn persist(&mut self, p: Pattern) -> io::Result<bool> {
            self.1.persisted.lock().unwrap().push(p);
            Ok(true)
        }
    }

    fn three() -> (Leds, [Recorder; 3]) {
        let r: [Recorder; 3] = Default::default();
        let leds: Vec<(LedRole, Box<dyn Led>)> = vec![
            (
                LedRole::Health,
                Box::new(FakeLed("green".into(), r[0].clone())),
            ),
            (
                LedRole::Targets,
                Box::new(FakeLed("amber".into(), r[1].clone())),
            ),
            (
                LedRole::System,
                Box::new(FakeLed("red".into(), r[2].clone())),
            ),
        ];
        (
            Leds::start(leds, Duration::from_secs(2), Duration::from_millis(600)),
            r,
        )
    }

    fn good() -> DeviceState {
        DeviceState {
            booting: false,
            targets_total: 2,
            targets_failing: 0,
            uplink: Uplink::Reachable,
            store: StoreHealth::Ok,
        }
    }

    fn patterns(l: &Leds) -> Vec<Pattern> {
        l.snapshot().leds.iter().map(|v| v.pattern).collect()
    }

    /// Rising edges recorded in the last `window`.
    fn rises(r: &Recorder, window: Duration) -> usize {
        let log = r.log.lock().unwrap();
        let from = Instant::now() - window;
        log.windows(2)
            .filter(|w| w[1].0 >= from && !w[0].1 && w[1].1)
            .count()
    }

    /// Waits until the renderer has written `on` last to the recorded LED.
    fn wait_level(r: &Recorder, on: bool) {
        let end = Instant::now() + Duration::from_secs(2);
        while r.log.lock().unwrap().last().map(|e| e.1) != Some(on) {
            assert!(Instant::now() < end, "LED never set to {on}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn wait_for(l: &Leds, want: &[Pattern], within: Duration) {
        let end = Instant::now() + within;
        while patterns(l) != want {
            assert!(
                Instant::now() < end,
                "still {:?}, want {want:?}",
                patterns(l)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn renders_state_changes_at_once() {
        let (leds, r) = three();
        wait_for(
            &leds,
            &[Pattern::SlowBlink, Pattern::Off, Pattern::Off],
            Duration::from_secs(1),
        );
        leds.update(good());
        wait_for(
            &leds,
            &[Pattern::Steady, Pattern::Off, Pattern::Off],
            Duration::from_millis(400),
        );
        wait_level(&r[0], true);
        leds.update(DeviceState {
            targets_failing: 1,
            uplink: Uplink::Unreachable,
            ..good()
        });
        wait_for(
            &leds,
            &[Pattern::Steady, Pattern::Steady, Pattern::SlowBlink],
            Duration::from_millis(100),
        );
        // The slow blink really blinks: about two rising edges in 1.2 s.
        leds.update(DeviceState {
            targets_failing: 1,
            uplink: Uplink::Unreachable,
            ..good()
        });
        for _ in 0..4 {
            std::thread::sleep(Duration::from_millis(300));
            leds.update(DeviceState {
                targets_failing: 1,
                uplink: Uplink::Unreachable,
                ..good()
            });
        }
        let n = rises(&r[2], Duration::from_millis(1200));
        assert!((1..=3).contains(&n), "red rose {n} times in 1.2 s");
        // Steady LEDs are written once, not on every tick.
        assert!(
            r[1].log.lock().unwrap().len() <= 2,
            "{:?}",
            r[1].log.lock().unwrap()
        );
    }

    #[test]
    fn identify_blinks_fast_then_times_out() {
        let (leds, r) = three();
        leds.update(good());
        let d = leds.identify(Some(Duration::from_millis(1500)));
        assert_eq!(d, Duration::from_millis(1500));
        wait_for(&leds, &[Pattern::FastBlink; 3], Duration::from_millis(1000));
        assert!(leds.snapshot().identify_remaining.is_some());
        // The main loop goes on updating (a silent one would show "not responding").
        for _ in 0..10 {
            std::thread::sleep(Duration::from_millis(100));
            leds.update(good());
        }
        // 5 Hz: five flashes a second on every LED; a busy machine may wake the renderer late
        // and so show fewer, never more.
        for rec in &r {
            let n = rises(rec, Duration::from_millis(1000));
            assert!((1..=6).contains(&n), "{n} flashes in 1 s");
        }
        let end = Instant::now() + Duration::from_secs(3);
        while patterns(&leds) != [Pattern::Steady, Pattern::Off, Pattern::Off] {
            assert!(Instant::now() < end, "still {:?}", patterns(&leds));
            leds.update(good());
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(leds.snapshot().identify_remaining, None);
        // The default duration, capped; stop ends it early.
        assert_eq!(leds.identify(None), Duration::from_secs(2));
        assert_eq!(
            leds.identify(Some(Duration::from_secs(1 << 40))),
            MAX_IDENTIFY
        );
        leds.stop_identify();
        wait_for(
            &leds,
            &[Pattern::Steady, Pattern::Off, Pattern::Off],
            Duration::from_millis(400),
        );
    }

    #[test]
    fn a_silent_main_loop_is_shown_as_not_responding() {
        let (leds, r) = three();
        leds.update(good());
        wait_for(
            &leds,
            &[Pattern::Steady, Pattern::Off, Pattern::Off],
            Duration::from_millis(400),
        );
        // No update for longer than stale_after (600 ms): green goes dark, red blinks fast.
        wait_for(
            &leds,
            &[Pattern::Off, Pattern::Off, Pattern::FastBlink],
            Duration::from_millis(900),
        );
        assert!(!leds.snapshot().responding);
        wait_level(&r[0], false);
        // Even identify does not hide it.
        leds.identify(Some(Duration::from_secs(5)));
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(
            patterns(&leds),
            [Pattern::Off, Pattern::Off, Pattern::FastBlink]
        );
        leds.stop_identify();
        // The loop comes back: so does green.
        leds.update(good());
        wait_for(
            &leds,
            &[Pattern::Steady, Pattern::Off, Pattern::Off],
            Duration::from_millis(400),
        );
    }

    #[test]
    fn shutdown_leaves_a_defined_state() {
        let (leds, r) = three();
        leds.update(good());
        leds.identify(Some(Duration::from_secs(5)));
        std::thread::sleep(Duration::from_millis(50));
        leds.shutdown(Pattern::Off);
        for rec in &r {
            assert_eq!(*rec.persisted.lock().unwrap(), [Pattern::Off]);
        }
        assert!(!leds.renderer_alive());
        assert_eq!(patterns(&leds), [Pattern::Off; 3]);
        // Twice is harmless; nothing is written after shutdown.
        leds.shutdown(Pattern::Steady);
        let n = r[0].log.lock().unwrap().len();
        leds.update(good());
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(r[0].log.lock().unwrap().len(), n);
        assert_eq!(r[0].persisted.lock().unwrap().len(), 1);
    }

    #[test]
    fn write_errors_are_counted_and_retried() {
        // An LED that fails from the very first write (a vanished sysfs file).
        let rec = Recorder::default();
        *rec.fail.lock().unwrap() = true;
        let leds = Leds::start(
            vec![(
                LedRole::Health,
                Box::new(FakeLed("green".into(), rec.clone())),
            )],
            Duration::from_secs(2),
            Duration::from_secs(30),
        );
        leds.update(good());
        let end = Instant::now() + Duration::from_secs(3);
        while leds.snapshot().write_errors == 0 {
            assert!(Instant::now() < end, "no write error counted");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(leds.renderer_alive());
        assert!(rec.log.lock().unwrap().is_empty());
        // It comes back: the level is written within the renderer's longest sleep (500 ms).
        *rec.fail.lock().unwrap() = false;
        let end = Instant::now() + Duration::from_secs(3);
        while rec.log.lock().unwrap().is_empty() {
            assert!(Instant::now() < end, "never retried");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(rec.log.lock().unwrap().last().map(|e| e.1), Some(true));
    }
}
