//! How many probes each configured flow sends at each TTL, and when.
//!
//! A TTL gets `probes_per_hop` probes per flow only where it is known to be at or short of
//! the destination: the last trace's distance says so before the trace starts, the answers say
//! so while it runs. Elsewhere (beyond the known distance, or all TTLs while it is unknown) one
//! probe per flow goes first, and the rest follow as soon as an answer shows the TTL is due
//! them, while the first one is still in flight, so that a silent hop still costs one timeout.
//! A first trace then sends no more than later ones do: not the whole window's worth of
//! probes to a destination that turns out to be closer.
//!
//! With multipath discovery, a TTL short of the destination that answered needs no more: the
//! discovery flows probe it at least `MDA_STOP[0]` times in all, more than `probes_per_hop`
//! asks for its RTT and loss figures. Only the destination's hop, which discovery never
//! probes, and a TTL that stays unanswered while a higher one answered (a lost probe or a
//! silent router, which discovery would then skip) get the configured flow's
//! `probes_per_hop`.

use std::time::{Duration, Instant};

use super::Round;
use super::rate::{BATCH, BATCH_GAP};

/// An unanswered TTL below one that answered is taken for lost (and topped up) after twice the
/// slowest RTT its flow has met, and at least this long: answers of neighbouring hops may
/// arrive out of order.
const LATE_AFTER: Duration = Duration::from_millis(10);

/// What one configured flow queued at one TTL.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Slot {
    /// Probes queued (sent since, or dropped when they no longer mattered).
    queued: u32,
    /// When the first one was due to leave.
    first: Option<Instant>,
    answered: bool,
}

/// What one configured flow's answers showed so far.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Reach {
    /// The highest TTL a router answered at (0: none).
    router: u8,
    /// The highest TTL anything answered at (0: none).
    any: u8,
    /// The slowest answer.
    rtt: Duration,
}

/// The slots of `flows` configured flows, one per TTL.
pub(super) fn slots(flows: u16) -> Vec<Slot> {
    vec![Slot::default(); usize::from(flows) * 256]
}

impl Round<'_> {
    fn slot(&self, ttl: u8, flow: u16) -> Option<&Slot> {
        self.slots
            .get(usize::from(flow) * 256 + usize::from(ttl))
            .filter(|_| flow < self.flows)
    }

    /// Whether discovery flows will probe the TTLs short of the destination.
    fn discovering(&self) -> bool {
        self.all > self.flows
    }

    /// Probes per configured flow sent at `ttl` from the start: all of them at the last
    /// trace's distance and, without discovery, short of it and at TTL 1 (no destination is
    /// nearer); one elsewhere.
    pub(super) fn planned(&self, ttl: u8) -> u32 {
        let full = match self.state.dest_ttl {
            Some(d) => ttl == d || (ttl < d && !self.discovering()),
            None => ttl == 1 && !self.discovering(),
        };
        if full { self.opts.probes_per_hop } else { 1 }
    }

    /// When a probe queued at `at` may leave with zero spacing: the current batch's time, or
    /// the next one's once `BATCH` probes joined it (`BATCH_GAP` later).
    pub(super) fn paced(&mut self, at: Instant) -> Instant {
        let (t, n) = match self.batch {
            Some((t, n)) if at < t + BATCH_GAP && n < BATCH => (t, n),
            Some((t, _)) if at < t + BATCH_GAP => (t + BATCH_GAP, 0),
            _ => (at, 0),
        };
        self.batch = Some((t, n + 1));
        t
    }

    /// Queues a probe to leave at `when`, keeping the queue in time order.
    pub(super) fn enqueue(&mut self, when: Instant, ttl: u8, flow: u16) {
        if flow < self.flows {
            let s = &mut self.slots[usize::from(flow) * 256 + usize::from(ttl)];
            s.queued += 1;
            s.first.get_or_insert(when);
        }
        let i = self.queue.partition_point(|q| q.0 <= when);
        self.queue.insert(i, (when, ttl, flow));
    }

    /// Notes an answer of a configured flow for `fill`.
    pub(super) fn note(&mut self, ttl: u8, flow: u16, router: bool, rtt: Duration) {
        let f = usize::from(flow);
        if flow >= self.flows {
            return;
        }
        self.slots[f * 256 + usize::from(ttl)].answered = true;
        let r = &mut self.reach[f];
        r.any = r.any.max(ttl);
        if router {
            r.router = r.router.max(ttl);
        }
        r.rtt = r.rtt.max(rtt);
    }

    /// When `ttl` is due the rest of its probes for `flow`: now, later (an unanswered TTL not
    /// yet late), or not (yet).
    fn due(&self, ttl: u8, flow: u16, s: Slot, now: Instant) -> Option<Instant> {
        let f = usize::from(flow);
        let r = self.reach[f];
        if !self.discovering() {
            // Short of a router that answered, or of the destination: at or short of it.
            let known = r.router.saturating_add(1).max(self.dest[f].unwrap_or(0));
            return (ttl <= known).then_some(now);
        }
        // The destination's hop: with discovery's first round, which the trace waits for
        // anyway (an RTT saved on a first trace).
        if self.dest[f] == Some(ttl) {
            return (!self.opening).then_some(now);
        }
        if ttl < r.any && !s.answered {
            let grace = (r.rtt * 2).max(LATE_AFTER);
            return (grace < self.opts.timeout)
                .then(|| s.first.map(|t| t + grace))
                .flatten();
        }
        None
    }

    /// Queues the probes that became due (see the module notes); returns when the next
    /// unanswered TTL will be late, to look again then.
    pub(super) fn fill(&mut self, now: Instant) -> Option<Instant> {
        let want = self.opts.probes_per_hop;
        let mut wake: Option<Instant> = None;
        for flow in 0..self.flows {
            for ttl in self.opts.first_ttl..=self.top(flow) {
                let Some(&s) = self.slot(ttl, flow) else {
                    break;
                };
                if s.queued == 0 || s.queued >= want {
                    continue;
                }
                match self.due(ttl, flow, s, now) {
                    Some(t) if t <= now => self.top_up(ttl, flow, s, now),
                    Some(t) => wake = Some(wake.map_or(t, |w| w.min(t))),
                    None => {}
                }
            }
        }
        wake
    }

    /// Queues the probes `flow` still owes `ttl`: `spacing` apart from its first one, or in
    /// the usual batches.
    fn top_up(&mut self, ttl: u8, flow: u16, s: Slot, now: Instant) {
        let spacing = self.opts.spacing;
        for i in s.queued..self.opts.probes_per_hop {
            let when = if spacing.is_zero() {
                self.paced(now)
            } else {
                s.first.map_or(now, |t| (t + spacing * i).max(now))
            };
            self.enqueue(when, ttl, flow);
        }
    }
}
