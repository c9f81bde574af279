use std::time::{Instant, SystemTime};

/// The source of time for probes and the scheduler; tests substitute a fixed clock.
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
