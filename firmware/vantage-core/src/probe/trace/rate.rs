//! Probe rate limits: a token bucket per trace (`trace.probes_per_second`) and one shared by
//! every trace of the device (`device.trace_probes_per_second`). A probe leaves only with a
//! token from both; without one it waits (it is never dropped), and the trace says so.
//!
//! A trace whose own bucket has a token but the device's has none reserves the device's next
//! token and sends its next probe when that time comes: traces running at once take turns at
//! the device's rate, in the order they asked, and none is starved by one that woke first. A
//! trace waiting for its own token reserves nothing: its slow rate holds no other trace back.

use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use crate::defaults;
use crate::lock::LockExt;

/// Probes a trace sends at once; the rest follow in batches this size, `BATCH_GAP` apart,
/// lowest TTL first. The answers of one batch (the destination's, a router's "unreachable")
/// stop the probes of later batches beyond them before they leave, and no router or
/// destination sees more than a batch at once (at most 12,800 probes/s for a trace).
pub(super) const BATCH: u32 = 64;
pub(super) const BATCH_GAP: Duration = Duration::from_millis(5);

/// A token bucket, kept as the time its next token is due (GCRA): `rate` tokens a second,
/// at most `burst` at hand.
#[derive(Debug, Clone)]
pub(crate) struct Bucket {
    /// Time one token takes to come back.
    every: Duration,
    /// How far ahead of `due` a token may be taken: `burst − 1` tokens' time.
    slack: Duration,
    /// When the bucket is next empty-handed once all tokens taken so far are paid back.
    due: Option<Instant>,
}

impl Bucket {
    pub(crate) fn new(rate: u32) -> Self {
        let rate = rate.max(1);
        let every = Duration::from_secs(1) / rate;
        Self {
            every,
            slack: every * (burst(rate) - 1),
            due: None,
        }
    }

    /// When a token is at hand: `now` or later.
    pub(crate) fn ready_at(&self, now: Instant) -> Instant {
        self.due
            .map_or(now, |due| due.checked_sub(self.slack).unwrap_or(due))
            .max(now)
    }

    /// Takes a token at `at` (no earlier than [`Self::ready_at`]).
    pub(crate) fn take(&mut self, at: Instant) {
        self.due = Some(self.due.map_or(at, |d| d.max(at)) + self.every);
    }
}

/// Tokens a bucket of `rate` holds: one second's worth, at most a batch of the trace's sends,
/// so a trace's first batch leaves at once and the rate holds after it.
pub(crate) fn burst(rate: u32) -> u32 {
    rate.clamp(1, BATCH)
}

/// The device's bucket, shared by every trace running at once; its rate follows the config.
#[derive(Debug)]
pub struct DeviceRate {
    bucket: Mutex<(u32, Bucket)>,
}

impl DeviceRate {
    pub fn new(rate: u32) -> Self {
        Self {
            bucket: Mutex::new((rate, Bucket::new(rate))),
        }
    }

    /// Sets the rate (a config applied); tokens already taken stay taken.
    pub fn set_rate(&self, rate: u32) {
        let mut b = self.bucket.lock_or_recover();
        if b.0 != rate {
            let due = b.1.due;
            *b = (rate, Bucket::new(rate));
            b.1.due = due;
        }
    }

    pub fn rate(&self) -> u32 {
        self.bucket.lock_or_recover().0
    }

    /// With a token of `own` at hand, reserves it and the device's next token: `Ok` with
    /// when that is (`now` or later). Else `Err` with when `own` has one, nothing taken.
    pub(crate) fn reserve(&self, own: &mut Bucket, now: Instant) -> Result<Instant, Instant> {
        let ready = own.ready_at(now);
        if ready > now {
            return Err(ready);
        }
        let mut b = self.bucket.lock_or_recover();
        let at = b.1.ready_at(now);
        own.take(at);
        b.1.take(at);
        Ok(at)
    }
}

/// The bucket of every prober made with [`super::TraceProbe::new`]: the daemon's rounds,
/// `/probe` and the page's "Run now" all draw from it.
pub(crate) static DEVICE: LazyLock<Arc<DeviceRate>> =
    LazyLock::new(|| Arc::new(DeviceRate::new(defaults::DEVICE_TRACE_PROBES_PER_SECOND)));

/// Sets the rate all traces of the device share (`device.trace_probes_per_second`).
pub fn set_device_rate(rate: u32) {
    DEVICE.set_rate(rate);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes `n` tokens as fast as the bucket gives them; returns the last one's offset.
    fn drain(rate: u32, n: u32) -> Duration {
        let dev = DeviceRate::new(100_000);
        let mut own = Bucket::new(rate);
        let start = Instant::now();
        let mut now = start;
        for _ in 0..n {
            now = match dev.reserve(&mut own, now) {
                Ok(at) => at,
                Err(ready) => dev.reserve(&mut own, ready).expect("own token at hand"),
            };
        }
        now - start
    }

    #[test]
    fn a_burst_leaves_at_once_and_the_rest_at_the_rate() {
        // 64 at once, then one every 10 ms: the 100th leaves 36 tokens' time later.
        assert_eq!(drain(100, 64), Duration::ZERO);
        assert_eq!(drain(100, 100), Duration::from_millis(360));
        // A slow rate holds one second's worth.
        assert_eq!(drain(5, 5), Duration::ZERO);
        assert_eq!(drain(5, 6), Duration::from_millis(200));
    }

    #[test]
    fn a_new_device_rate_holds_from_the_next_token_and_keeps_what_was_taken() {
        let dev = DeviceRate::new(10);
        let mut own = Bucket::new(1000);
        let now = Instant::now();
        for _ in 0..10 {
            assert_eq!(dev.reserve(&mut own, now), Ok(now));
        }
        dev.set_rate(1);
        assert_eq!(dev.rate(), 1);
        // Ten tokens at 10/s were paid back by now + 1 s; then one a second (to two other
        // traces: one waiting for its turn has none to take before it).
        let s = Duration::from_secs(1);
        assert_eq!(dev.reserve(&mut own, now), Ok(now + s));
        assert!(dev.reserve(&mut own, now).is_err());
        assert_eq!(dev.reserve(&mut Bucket::new(1000), now), Ok(now + 2 * s));
    }

    #[test]
    fn traces_take_turns_at_the_device_rate() {
        let dev = DeviceRate::new(1);
        let (mut a, mut b) = (Bucket::new(1000), Bucket::new(1000));
        let now = Instant::now();
        let s = Duration::from_secs(1);
        // The device's one token goes to a; b reserves the next, a the one after.
        assert_eq!(dev.reserve(&mut a, now), Ok(now));
        assert_eq!(dev.reserve(&mut b, now), Ok(now + s));
        assert_eq!(dev.reserve(&mut a, now), Ok(now + 2 * s));
        // A faster device: each trace's own rate holds, and a trace waiting for its own token
        // keeps none of the device's from the others.
        let dev = DeviceRate::new(1000);
        let mut slow = Bucket::new(1);
        assert_eq!(dev.reserve(&mut slow, now), Ok(now));
        assert_eq!(dev.reserve(&mut slow, now), Err(now + s));
        let mut c = Bucket::new(1000);
        for _ in 0..63 {
            assert_eq!(dev.reserve(&mut c, now), Ok(now));
        }
    }
}
