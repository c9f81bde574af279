//! Splitting a refused request. Prometheus' receiver rolls back a whole request when one
//! sample is out of order, out of bounds or a conflicting duplicate, and answers 400; so a
//! refused request is split in halves (by samples), each half sent again, down to single
//! samples: the good ones land, only the bad ones are refused.

use std::time::{Duration, Instant};

use super::proto::{Sample, TimeSeries};

/// Series samples (one value of one series at one time) in a part of a request.
pub fn samples_in(part: &[TimeSeries]) -> usize {
    part.iter().map(|t| t.samples.len()).sum()
}

/// Splits a part into two holding half of its samples each (the first half the larger by at
/// most one), keeping each series' samples in time order: the earlier ones go first, so a
/// receiver without out-of-order ingestion sees them in order.
pub fn split(part: Vec<TimeSeries>) -> (Vec<TimeSeries>, Vec<TimeSeries>) {
    let total = samples_in(&part);
    let want = total.div_ceil(2);
    let (mut left, mut right) = (Vec::new(), Vec::new());
    let mut taken = 0;
    for mut ts in part {
        let n = ts.samples.len();
        if taken >= want {
            right.push(ts);
        } else if taken + n <= want {
            taken += n;
            left.push(ts);
        } else {
            let rest: Vec<Sample> = ts.samples.split_off(want - taken);
            taken = want;
            right.push(TimeSeries {
                labels: ts.labels.clone(),
                samples: rest,
            });
            left.push(ts);
        }
    }
    (left, right)
}

/// Splits allowed for a request of `n` samples: enough to isolate this many bad samples
/// exactly (each costs at most ⌈log2 n⌉ splits). Beyond, parts still refused are dropped
/// whole, so a request costs at most `1 + 2 * max_splits(n)` requests whatever it holds.
pub const EXACT_BAD_SAMPLES: usize = 32;

pub fn max_splits(n: usize) -> usize {
    let log = usize::BITS - n.saturating_sub(1).leading_zeros();
    EXACT_BAD_SAMPLES * (log as usize).max(1)
}

/// Logs refusals at most once per interval, with the count held back meanwhile, so a storm of
/// refused samples does not flood the log.
#[derive(Debug, Default)]
pub struct RateLimitedLog {
    last: Option<Instant>,
    held: u64,
}

impl RateLimitedLog {
    /// Notes `n` refused samples at `now`: `Some(total since the last line)` when a line is due.
    pub fn note(&mut self, n: u64, now: Instant, every: Duration) -> Option<u64> {
        self.held += n;
        if self.last.is_some_and(|l| now.duration_since(l) < every) {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held))
    }
}

#[cfg(test)]
mod tests {
    use super::super::proto::Label;
    use super::*;

    fn ts(name: &str, stamps: std::ops::Range<i64>) -> TimeSeries {
        TimeSeries {
            labels: vec![Label {
                name: "__name__".into(),
                value: name.into(),
            }],
            samples: stamps
                .map(|t| Sample {
                    value: t as f64,
                    timestamp: t,
                })
                .collect(),
        }
    }

    #[test]
    fn halves_hold_half_the_samples_in_order() {
        let part = vec![ts("a", 0..3), ts("b", 0..4), ts("c", 0..2)];
        let (l, r) = split(part.clone());
        assert_eq!(samples_in(&l), 5);
        assert_eq!(samples_in(&r), 4);
        // "b" is cut: its first two samples left, the last two right.
        assert_eq!(
            l[1].samples.iter().map(|s| s.timestamp).collect::<Vec<_>>(),
            [0, 1]
        );
        assert_eq!(
            r[0].samples.iter().map(|s| s.timestamp).collect::<Vec<_>>(),
            [2, 3]
        );
        assert_eq!(r[0].labels, part[1].labels);
        // Splitting down always ends at single samples, all of them, once each.
        let mut stack = vec![part];
        let mut singles = Vec::new();
        while let Some(p) = stack.pop() {
            if samples_in(&p) <= 1 {
                singles.extend(p.into_iter().filter(|t| !t.samples.is_empty()));
                continue;
            }
            let (a, b) = split(p);
            assert!(!a.is_empty() && !b.is_empty());
            stack.push(b);
            stack.push(a);
        }
        assert_eq!(singles.len(), 9);
    }

    #[test]
    fn split_budget_grows_with_the_log_of_the_size() {
        assert_eq!(max_splits(1), EXACT_BAD_SAMPLES);
        assert_eq!(max_splits(2), EXACT_BAD_SAMPLES);
        assert_eq!(max_splits(1024), 10 * EXACT_BAD_SAMPLES);
        assert_eq!(max_splits(1025), 11 * EXACT_BAD_SAMPLES);
    }

    #[test]
    fn a_storm_of_refusals_is_logged_once_per_interval() {
        let mut log = RateLimitedLog::default();
        let t0 = Instant::now();
        let every = Duration::from_secs(60);
        assert_eq!(log.note(1, t0, every), Some(1));
        for i in 1..100 {
            assert_eq!(log.note(1, t0 + Duration::from_millis(i), every), None);
        }
        assert_eq!(log.note(1, t0 + every, every), Some(100));
        assert_eq!(log.note(3, t0 + every * 2, every), Some(3));
    }
}
