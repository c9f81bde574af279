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

/// Seconds since the Unix epoch of a UTC calendar date and time (proleptic Gregorian, Howard
/// Hinnant's days-from-civil), or `None` when a field is out of its range. Second 60 is a leap
/// second as written in certificates and logs.
pub fn utc_to_unix(year: i64, month: i64, day: i64, h: i64, m: i64, s: i64) -> Option<i64> {
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || !(0..=23).contains(&h)
        || !(0..=59).contains(&m)
        || !(0..=60).contains(&s)
    {
        return None;
    }
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + m * 60 + s)
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

#[cfg(test)]
mod tests {
    use super::utc_to_unix;

    #[test]
    fn calendar_dates_to_unix_seconds() {
        assert_eq!(utc_to_unix(1970, 1, 1, 0, 0, 0), Some(0));
        // Across a leap day, a century that is not a leap year and one that is.
        assert_eq!(utc_to_unix(2024, 3, 1, 0, 0, 0), Some(1_709_251_200));
        assert_eq!(utc_to_unix(2100, 3, 1, 0, 0, 0), Some(4_107_542_400));
        assert_eq!(utc_to_unix(2000, 2, 29, 12, 0, 0), Some(951_825_600));
        assert_eq!(utc_to_unix(1969, 12, 31, 23, 59, 59), Some(-1));
        assert_eq!(utc_to_unix(2026, 12, 2, 10, 0, 60), Some(1_796_205_660));
        for bad in [
            (13, 1, 0, 0, 0),
            (0, 1, 0, 0, 0),
            (1, 32, 0, 0, 0),
            (1, 1, 24, 0, 0),
            (1, 1, 0, 60, 0),
            (1, 1, 0, 0, 61),
            (1, 1, -1, 0, 0),
        ] {
            assert_eq!(
                utc_to_unix(2026, bad.0, bad.1, bad.2, bad.3, bad.4),
                None,
                "{bad:?}"
            );
        }
    }
}
