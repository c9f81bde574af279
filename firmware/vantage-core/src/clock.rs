use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use crate::lock::LockExt;

/// The source of time for probes and the scheduler; tests substitute a clock they control
/// ([`TokioClock`] under tokio's paused time, [`ManualClock`] for the scheduler's plan).
///
/// Probes sleep with tokio's timers until instants read from this clock, so a clock given to a
/// probe must agree with tokio's: [`SystemClock`] does outside tests, [`TokioClock`] always.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// Monotonic time, for measuring durations.
    fn now(&self) -> Instant;
    /// Wall-clock time, for sample timestamps.
    fn wall(&self) -> SystemTime;
}

/// The operating system's clocks.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
    fn wall(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// Tokio's clock, with wall time derived from it. Under `#[tokio::test(start_paused = true)]`
/// time moves only when every task waits, and then straight to the next timer, so a test sees
/// exact durations however loaded the machine is (or slow, as under qemu-user).
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    origin: tokio::time::Instant,
    origin_wall: SystemTime,
}

impl TokioClock {
    /// A clock whose wall time starts at the system's wall time now.
    pub fn new() -> Self {
        Self {
            origin: tokio::time::Instant::now(),
            origin_wall: SystemTime::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }
    fn wall(&self) -> SystemTime {
        self.origin_wall + tokio::time::Instant::now().duration_since(self.origin)
    }
}

/// A clock that moves only when told to: for logic that reads the time but does not sleep on
/// tokio's timers (the scheduler's plan).
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<(Instant, SystemTime)>,
}

impl ManualClock {
    pub fn new() -> Self {
        Self {
            now: Mutex::new((Instant::now(), SystemTime::UNIX_EPOCH)),
        }
    }

    /// Moves both readings forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock_or_recover();
        now.0 += by;
        now.1 += by;
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.now.lock_or_recover().0
    }
    fn wall(&self) -> SystemTime {
        self.now.lock_or_recover().1
    }
}
