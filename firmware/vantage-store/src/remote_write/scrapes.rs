//! Which stretches of time a Prometheus scrape of `/metrics` already covered, for endpoints
//! with `send = "gaps"` (scrape + backfill fleets): rounds inside a covered stretch reached
//! the central Prometheus by the scrape and are not shipped; rounds in a gap are.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;
use vantage_core::LockExt;

/// Covered stretches kept per scrape gap: each is one run of scrapes without a gap, so this
/// many outages (or scraper restarts) back. Older rounds count as uncovered and are shipped:
/// a duplicate is harmless, a hole is not.
pub const MAX_SPANS: usize = 4096;

/// What to do with a round in `send = "gaps"` mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coverage {
    /// Between two scrapes less than the scrape gap apart: the scrape has it.
    Covered,
    /// After the latest scrape, and the next one is not overdue yet: decide later.
    Wait,
    /// No scrape covered it: ship it.
    Ship,
}

/// Successful scrapes as merged covered intervals `[first, last]` (ms since the epoch), one
/// list per scrape gap in use (each endpoint may set its own).
#[derive(Debug, Default)]
pub struct ScrapeLog {
    tracks: Mutex<Vec<Track>>,
}

#[derive(Debug)]
struct Track {
    gap_ms: i64,
    spans: VecDeque<(i64, i64)>,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl ScrapeLog {
    pub fn new() -> Self {
        Self::default()
    }

    fn tracks(&self) -> std::sync::MutexGuard<'_, Vec<Track>> {
        self.tracks.lock_or_recover()
    }

    /// Starts keeping intervals for `gap` (idempotent). Scrapes noted before are not known
    /// to it, so their rounds are shipped.
    pub fn track(&self, gap: Duration) {
        let mut t = self.tracks();
        if !t.iter().any(|t| t.gap_ms == ms(gap)) {
            t.push(Track {
                gap_ms: ms(gap),
                spans: VecDeque::new(),
            });
        }
    }

    /// Notes a successful scrape at `at_ms`.
    pub fn record(&self, at_ms: i64) {
        for t in self.tracks().iter_mut() {
            match t.spans.back_mut() {
                Some(last) if at_ms >= last.1 && at_ms - last.1 < t.gap_ms => last.1 = at_ms,
                // The clock stepped back: keep what is known; the rounds after it are shipped.
                Some(last) if at_ms < last.1 => {}
                _ => {
                    if t.spans.len() >= MAX_SPANS {
                        t.spans.pop_front();
                    }
                    t.spans.push_back((at_ms, at_ms));
                }
            }
        }
    }

    /// Whether the round at `round_ms` was covered by scrapes no more than `gap` apart, given
    /// the time `now_ms`. Without any known scrape (e.g. after a restart) every round ships.
    pub fn decide(&self, gap: Duration, round_ms: i64, now_ms: i64) -> Coverage {
        let tracks = self.tracks();
        let Some(t) = tracks.iter().find(|t| t.gap_ms == ms(gap)) else {
            return Coverage::Ship;
        };
        let Some(&(_, latest)) = t.spans.back() else {
            return Coverage::Ship;
        };
        if round_ms > latest {
            return if now_ms.saturating_sub(latest) < t.gap_ms {
                Coverage::Wait
            } else {
                Coverage::Ship
            };
        }
        // The last span starting at or before the round.
        let i = t.spans.partition_point(|s| s.0 <= round_ms);
        match i.checked_sub(1).map(|i| t.spans[i]) {
            Some((_, end)) if round_ms <= end => Coverage::Covered,
            _ => Coverage::Ship,
        }
    }

    /// Covered intervals kept for `gap` (for tests and the status page).
    pub fn spans(&self, gap: Duration) -> Vec<(i64, i64)> {
        self.tracks()
            .iter()
            .find(|t| t.gap_ms == ms(gap))
            .map(|t| t.spans.iter().copied().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GAP: Duration = Duration::from_secs(60);
    const S: i64 = 1000;

    /// Scrapes every 15 s from 0 to 300 s, an outage until 700 s, every 20 s again to 900 s.
    fn log() -> ScrapeLog {
        let l = ScrapeLog::new();
        l.track(GAP);
        for t in (0..=300).step_by(15).chain((700..=900).step_by(20)) {
            l.record(t * S);
        }
        l
    }

    #[test]
    fn rounds_between_close_scrapes_are_covered_and_an_outage_is_shipped() {
        let l = log();
        assert_eq!(l.spans(GAP), [(0, 300 * S), (700 * S, 900 * S)]);
        let now = 901 * S;
        assert_eq!(l.decide(GAP, 7 * S, now), Coverage::Covered);
        assert_eq!(l.decide(GAP, 300 * S, now), Coverage::Covered);
        assert_eq!(l.decide(GAP, 301 * S, now), Coverage::Ship);
        assert_eq!(l.decide(GAP, 500 * S, now), Coverage::Ship);
        assert_eq!(l.decide(GAP, 699 * S, now), Coverage::Ship);
        assert_eq!(l.decide(GAP, 700 * S, now), Coverage::Covered);
        // Before anything known (the log starts at 0).
        assert_eq!(l.decide(GAP, -S, now), Coverage::Ship);
    }

    #[test]
    fn rounds_after_the_latest_scrape_wait_until_the_next_is_overdue() {
        let l = log();
        // 5 s after the last scrape: the next one will probably cover it.
        assert_eq!(l.decide(GAP, 905 * S, 906 * S), Coverage::Wait);
        assert_eq!(l.decide(GAP, 905 * S, 959 * S), Coverage::Wait);
        // The next scrape came: covered.
        l.record(915 * S);
        assert_eq!(l.decide(GAP, 905 * S, 916 * S), Coverage::Covered);
        // No scrape for a whole gap: shipped, and so is everything after.
        assert_eq!(l.decide(GAP, 920 * S, 975 * S), Coverage::Ship);
        assert_eq!(l.decide(GAP, 920 * S, 974 * S), Coverage::Wait);
        // Scrapes resume after the gap: a new span, the hole stays shipped.
        l.record(1000 * S);
        l.record(1015 * S);
        assert_eq!(l.spans(GAP).len(), 3);
        assert_eq!(l.decide(GAP, 950 * S, 1016 * S), Coverage::Ship);
        assert_eq!(l.decide(GAP, 1010 * S, 1016 * S), Coverage::Covered);
    }

    #[test]
    fn an_empty_log_ships_everything_as_after_a_restart() {
        let l = ScrapeLog::new();
        l.track(GAP);
        assert_eq!(l.decide(GAP, 5 * S, 6 * S), Coverage::Ship);
        // A gap nobody tracks knows no scrapes either.
        let other = Duration::from_secs(30);
        l.record(10 * S);
        assert_eq!(l.decide(other, 10 * S, 11 * S), Coverage::Ship);
        assert_eq!(l.decide(GAP, 10 * S, 11 * S), Coverage::Covered);
    }

    #[test]
    fn each_gap_has_its_own_spans_and_memory_is_bounded() {
        let l = ScrapeLog::new();
        l.track(GAP);
        l.track(Duration::from_secs(20));
        l.track(GAP);
        for t in [0, 15, 45, 60] {
            l.record(t * S);
        }
        assert_eq!(l.spans(GAP), [(0, 60 * S)]);
        assert_eq!(
            l.spans(Duration::from_secs(20)),
            [(0, 15 * S), (45 * S, 60 * S)]
        );
        // One scrape per two gaps: every scrape is a span of its own, the oldest dropped.
        let l = ScrapeLog::new();
        l.track(GAP);
        for i in 0..(MAX_SPANS as i64 + 10) {
            l.record(i * 120 * S);
        }
        let spans = l.spans(GAP);
        assert_eq!(spans.len(), MAX_SPANS);
        assert_eq!(spans[0], (10 * 120 * S, 10 * 120 * S));
        assert_eq!(l.decide(GAP, 0, i64::MAX), Coverage::Ship);
        // A clock stepping back changes nothing known.
        let before = l.spans(GAP);
        l.record(5 * S);
        assert_eq!(l.spans(GAP), before);
    }
}
