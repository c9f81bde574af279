//! The five blink patterns and their timing.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

/// What one LED does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Pattern {
    Off,
    Steady,
    /// 1 Hz: 500 ms on, 500 ms off.
    SlowBlink,
    /// 5 Hz: 100 ms on, 100 ms off. Reserved for "identify" and "not responding".
    FastBlink,
    /// Two 150 ms flashes, then 1050 ms dark: a 1.5 s cycle.
    DoubleFlash,
}

pub const SLOW_HALF: Duration = Duration::from_millis(500);
pub const FAST_HALF: Duration = Duration::from_millis(100);
pub const FLASH: Duration = Duration::from_millis(150);
pub const DOUBLE_CYCLE: Duration = Duration::from_millis(1500);

impl Pattern {
    pub const ALL: [Pattern; 5] = [
        Pattern::Off,
        Pattern::Steady,
        Pattern::SlowBlink,
        Pattern::FastBlink,
        Pattern::DoubleFlash,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Pattern::Off => "off",
            Pattern::Steady => "steady",
            Pattern::SlowBlink => "slow_blink",
            Pattern::FastBlink => "fast_blink",
            Pattern::DoubleFlash => "double_flash",
        }
    }

    /// Whether the LED is lit `elapsed` after the pattern started. Every pattern starts lit
    /// (except `Off`), so a change of state shows at once.
    pub fn level(self, elapsed: Duration) -> bool {
        let ms = elapsed.as_millis();
        match self {
            Pattern::Off => false,
            Pattern::Steady => true,
            Pattern::SlowBlink => (ms / SLOW_HALF.as_millis()).is_multiple_of(2),
            Pattern::FastBlink => (ms / FAST_HALF.as_millis()).is_multiple_of(2),
            Pattern::DoubleFlash => {
                let t = ms % DOUBLE_CYCLE.as_millis();
                let f = FLASH.as_millis();
                t < f || (2 * f..3 * f).contains(&t)
            }
        }
    }

    /// How long from `elapsed` until the level next changes; `None` for steady patterns.
    pub fn next_change(self, elapsed: Duration) -> Option<Duration> {
        let ms = elapsed.as_millis() as u64;
        let left = |period: u64| Duration::from_millis(period - ms % period);
        match self {
            Pattern::Off | Pattern::Steady => None,
            Pattern::SlowBlink => Some(left(SLOW_HALF.as_millis() as u64)),
            Pattern::FastBlink => Some(left(FAST_HALF.as_millis() as u64)),
            Pattern::DoubleFlash => {
                let f = FLASH.as_millis() as u64;
                let cycle = DOUBLE_CYCLE.as_millis() as u64;
                let t = ms % cycle;
                let next = [f, 2 * f, 3 * f, cycle]
                    .into_iter()
                    .find(|b| *b > t)
                    .unwrap_or(cycle);
                Some(Duration::from_millis(next - t))
            }
        }
    }

    /// `(delay_on, delay_off)` in ms for the kernel's `timer` trigger, for patterns it can
    /// show on its own.
    pub fn timer_delays(self) -> Option<(u64, u64)> {
        match self {
            Pattern::SlowBlink => {
                Some((SLOW_HALF.as_millis() as u64, SLOW_HALF.as_millis() as u64))
            }
            Pattern::FastBlink => {
                Some((FAST_HALF.as_millis() as u64, FAST_HALF.as_millis() as u64))
            }
            _ => None,
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Pattern {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.replace('-', "_");
        Pattern::ALL
            .into_iter()
            .find(|p| p.as_str() == s || (s == "on" && *p == Pattern::Steady))
            .ok_or_else(|| {
                format!("unknown pattern {s:?} (expected off, steady, slow_blink, fast_blink or double_flash)")
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lit_ms(p: Pattern, over: u64) -> Vec<bool> {
        (0..over)
            .map(|ms| p.level(Duration::from_millis(ms)))
            .collect()
    }

    #[test]
    fn timings() {
        assert!(lit_ms(Pattern::Off, 3000).iter().all(|l| !l));
        assert!(lit_ms(Pattern::Steady, 3000).iter().all(|l| *l));
        let slow = lit_ms(Pattern::SlowBlink, 2000);
        assert!(slow[..500].iter().all(|l| *l) && slow[500..1000].iter().all(|l| !l));
        assert!(slow[1000..1500].iter().all(|l| *l));
        let fast = lit_ms(Pattern::FastBlink, 1000);
        assert_eq!(fast.iter().filter(|l| **l).count(), 500);
        assert!(fast[..100].iter().all(|l| *l) && fast[100..200].iter().all(|l| !l));
        // Double flash: two rising edges per 1.5 s cycle, 300 ms lit in all.
        let d = lit_ms(Pattern::DoubleFlash, 3000);
        let rises = d.windows(2).filter(|w| !w[0] && w[1]).count();
        assert_eq!(
            rises, 3,
            "two flashes in the first cycle (one starts lit) + two in the second - 1 at t=0"
        );
        assert_eq!(d[..1500].iter().filter(|l| **l).count(), 300);
        assert!(d[450..1500].iter().all(|l| !l));
    }

    #[test]
    fn next_change_lands_on_every_edge() {
        for p in Pattern::ALL {
            let mut t = Duration::ZERO;
            for ms in 0..3000u64 {
                let now = Duration::from_millis(ms);
                let edge = ms > 0 && p.level(now) != p.level(now - Duration::from_millis(1));
                if edge {
                    assert_eq!(t, now, "{p}: an edge at {ms} ms was not announced");
                }
                if let Some(d) = p.next_change(now) {
                    if now >= t {
                        t = now + d;
                    }
                } else {
                    assert!(!edge);
                }
            }
        }
    }

    #[test]
    fn parse() {
        assert_eq!("slow-blink".parse::<Pattern>(), Ok(Pattern::SlowBlink));
        assert_eq!("on".parse::<Pattern>(), Ok(Pattern::Steady));
        assert!("disco".parse::<Pattern>().is_err());
        for p in Pattern::ALL {
            assert_eq!(p.as_str().parse::<Pattern>(), Ok(p));
        }
    }
}
