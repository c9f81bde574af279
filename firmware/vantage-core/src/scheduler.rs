//! When probes run.
//!
//! Every (target, probe) pair is a [`Job`] with its own interval. Its start times sit at a fixed
//! phase within the interval, derived from a hash of its name (as Prometheus spreads scrapes), so
//! a thousand targets with a 1 s interval start evenly across the second instead of all at once,
//! and a reload does not move the phase of a job that did not change.
//!
//! A dedicated thread sleeps until the next due job and hands it to the runtime, with the jobs
//! due within [`DISPATCH_AHEAD`] after it; the async timer wheel rounds sleeps up to whole
//! milliseconds, the thread does not. How late each run starts against its plan is reported, so
//! users can see whether the device distorts its own measurements.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::clock::{Clock, SystemClock};
use crate::lock::LockExt;
use crate::types::ProbeKind;

/// How far ahead of its plan a job is handed to the runtime together with one that is due: at
/// a thousand rounds a second and more, the thread wakes once for the jobs of the next
/// millisecond instead of once for each, and so does the runtime thread it wakes. A round
/// started this early is not late: the lag counts lateness only.
pub const DISPATCH_AHEAD: Duration = Duration::from_millis(1);

/// Identifies a job: one probe kind on one target.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobKey {
    pub target: Arc<str>,
    pub probe: ProbeKind,
}

impl fmt::Display for JobKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.target, self.probe)
    }
}

/// A periodic job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub key: JobKey,
    pub interval: Duration,
}

/// A job is due.
#[derive(Debug, Clone)]
pub struct SchedulerEvent {
    pub key: JobKey,
    /// When it should start.
    pub planned: Instant,
}

/// The phase of a job within its interval: stable for a name, spread evenly over many names.
pub fn spread_offset(key: &JobKey, interval: Duration) -> Duration {
    // FNV-1a: stable across runs and builds (std's hasher is randomly seeded).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key
        .target
        .bytes()
        .chain([0xff])
        .chain(key.probe.as_str().bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let nanos = interval.as_nanos().max(1) as u64;
    Duration::from_nanos(h % nanos)
}

/// The first start time at or after `now` on the job's grid `epoch + offset + k·interval`.
fn first_due(epoch: Instant, now: Instant, interval: Duration, offset: Duration) -> Instant {
    let base = epoch + offset;
    if now <= base {
        return base;
    }
    let since = now.duration_since(base).as_nanos();
    let step = interval.as_nanos().max(1);
    let k = since.div_ceil(step);
    base + Duration::from_nanos((k * step) as u64)
}

enum Control {
    Set(Vec<Job>),
    Stop,
}

struct Entry {
    interval: Duration,
    next: Instant,
    generation: u64,
}

/// The schedule itself, apart from the thread that sleeps on it: what is due when. It reads no
/// clock of its own, so tests step it through time exactly.
struct Plan {
    epoch: Instant,
    entries: HashMap<JobKey, Entry>,
    heap: BinaryHeap<Reverse<(Instant, u64, JobKey)>>,
    generation: u64,
}

impl Plan {
    fn new(epoch: Instant) -> Self {
        Self {
            epoch,
            entries: HashMap::new(),
            heap: BinaryHeap::new(),
            generation: 0,
        }
    }

    /// Hands every job due at `now` to `dispatch`, and plans its next run.
    fn dispatch_due(&mut self, now: Instant, dispatch: &impl Fn(SchedulerEvent)) {
        while let Some(Reverse((due, gen_, _))) = self.heap.peek() {
            if *due > now {
                break;
            }
            let (due, gen_, key) = (*due, *gen_, self.heap.pop().expect("peeked").0.2);
            let Some(e) = self.entries.get_mut(&key) else {
                continue;
            };
            if e.generation != gen_ {
                continue;
            }
            dispatch(SchedulerEvent {
                key: key.clone(),
                planned: due,
            });
            // Skip whole intervals if the thread itself fell behind; never burst.
            let mut next = due + e.interval;
            if next <= now {
                next = first_due(self.epoch, now, e.interval, spread_offset(&key, e.interval));
            }
            e.next = next;
            self.heap.push(Reverse((next, gen_, key)));
        }
    }

    /// When the next job is due, if any.
    fn next_due(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((due, _, _))| *due)
    }

    /// Replaces the job set. Jobs whose key and interval are unchanged keep their timing.
    fn set(&mut self, jobs: Vec<Job>, now: Instant) {
        let mut fresh = HashMap::with_capacity(jobs.len());
        for job in jobs {
            self.generation += 1;
            let next = match self.entries.remove(&job.key) {
                Some(old) if old.interval == job.interval => old.next,
                _ => first_due(
                    self.epoch,
                    now,
                    job.interval,
                    spread_offset(&job.key, job.interval),
                ),
            };
            self.heap
                .push(Reverse((next, self.generation, job.key.clone())));
            fresh.insert(
                job.key,
                Entry {
                    interval: job.interval,
                    next,
                    generation: self.generation,
                },
            );
        }
        self.entries = fresh;
        // Drop stale heap entries now and then so reload churn cannot grow it.
        if self.heap.len() > 2 * self.entries.len() + 1024 {
            let entries = &self.entries;
            self.heap
                .retain(|Reverse((_, g, k))| entries.get(k).is_some_and(|e| e.generation == *g));
        }
    }
}

/// The scheduler thread. Dropping it stops the thread.
pub struct Scheduler {
    tx: mpsc::Sender<Control>,
    thread: Option<thread::JoinHandle<()>>,
    jobs: Mutex<Vec<Job>>,
}

impl fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scheduler").finish_non_exhaustive()
    }
}

impl Scheduler {
    /// Starts the thread on the system clock; `dispatch` is called on it for every due job and
    /// must not block.
    pub fn start(dispatch: impl Fn(SchedulerEvent) + Send + 'static) -> Self {
        Self::with_clock(Arc::new(SystemClock), dispatch)
    }

    /// Starts the thread on `clock`.
    pub fn with_clock(
        clock: Arc<dyn Clock>,
        dispatch: impl Fn(SchedulerEvent) + Send + 'static,
    ) -> Self {
        let (tx, rx) = mpsc::channel();
        let thread = thread::Builder::new()
            .name("vantage-sched".into())
            .spawn(move || run(rx, clock.as_ref(), dispatch))
            .expect("spawn scheduler thread");
        Self {
            tx,
            thread: Some(thread),
            jobs: Mutex::new(Vec::new()),
        }
    }

    /// Replaces the job set. Jobs whose key and interval are unchanged keep their timing.
    pub fn set_jobs(&self, jobs: Vec<Job>) {
        *self.jobs.lock_or_recover() = jobs.clone();
        let _ = self.tx.send(Control::Set(jobs));
    }

    pub fn jobs(&self) -> Vec<Job> {
        self.jobs.lock_or_recover().clone()
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        let _ = self.tx.send(Control::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The kernel's default timer slack (50 µs) lets it defer our wake-ups to batch them with
/// others; a probe's start time is what we measure lag against, so ask for none.
fn tighten_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK only changes the calling thread's timer slack.
    let rc = unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
    if rc != 0 {
        tracing::debug!(
            "cannot set the scheduler's timer slack: {}",
            std::io::Error::last_os_error()
        );
    }
}

fn run(rx: mpsc::Receiver<Control>, clock: &dyn Clock, dispatch: impl Fn(SchedulerEvent)) {
    tighten_timer_slack();
    let mut plan = Plan::new(clock.now());
    loop {
        plan.dispatch_due(clock.now() + DISPATCH_AHEAD, &dispatch);
        let wait = plan
            .next_due()
            .map(|due| due.saturating_duration_since(clock.now()))
            .unwrap_or(Duration::from_secs(3600));
        match rx.recv_timeout(wait) {
            Ok(Control::Set(jobs)) => plan.set(jobs, clock.now()),
            Ok(Control::Stop) | Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;
    use crate::clock::ManualClock;

    fn key(name: &str) -> JobKey {
        JobKey {
            target: name.into(),
            probe: ProbeKind::PING,
        }
    }

    #[test]
    fn offsets_are_stable_and_spread_over_the_interval() {
        let interval = Duration::from_secs(1);
        assert_eq!(
            spread_offset(&key("a"), interval),
            spread_offset(&key("a"), interval)
        );
        // 1000 targets over ten 100 ms buckets: each bucket gets roughly a tenth.
        let mut buckets = [0u32; 10];
        for i in 0..1000 {
            let off = spread_offset(&key(&format!("target-{i}")), interval);
            assert!(off < interval);
            buckets[(off.as_millis() / 100) as usize] += 1;
        }
        for b in buckets {
            assert!((60..=140).contains(&b), "{buckets:?}");
        }
    }

    #[test]
    fn the_scheduler_thread_sleeps_without_timer_slack() {
        let (tx, rx) = mpsc::channel();
        let s = Scheduler::start(move |_| {
            // SAFETY: PR_GET_TIMERSLACK reads the calling (scheduler) thread's timer slack.
            let _ = tx.send(unsafe { libc::prctl(libc::PR_GET_TIMERSLACK) });
        });
        s.set_jobs(vec![Job {
            key: key("slack"),
            interval: Duration::from_millis(100),
        }]);
        let slack = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the job ran");
        assert_eq!(slack, 1, "timer slack of the scheduler thread in ns");
    }

    #[test]
    fn first_due_lands_on_the_grid() {
        let epoch = Instant::now();
        let i = Duration::from_millis(100);
        let off = Duration::from_millis(30);
        assert_eq!(first_due(epoch, epoch, i, off), epoch + off);
        assert_eq!(
            first_due(epoch, epoch + Duration::from_millis(31), i, off),
            epoch + Duration::from_millis(130)
        );
        assert_eq!(
            first_due(epoch, epoch + Duration::from_millis(130), i, off),
            epoch + Duration::from_millis(130)
        );
    }

    /// Steps the plan through `span` of the clock's time, 1 ms at a time, collecting what it
    /// dispatches.
    fn step(
        plan: &mut Plan,
        clock: &ManualClock,
        span: Duration,
        seen: &RefCell<Vec<SchedulerEvent>>,
    ) {
        for _ in 0..span.as_millis() {
            clock.advance(Duration::from_millis(1));
            plan.dispatch_due(clock.now(), &|ev| seen.borrow_mut().push(ev));
        }
    }

    fn planned(seen: &RefCell<Vec<SchedulerEvent>>, name: &str) -> Vec<Instant> {
        seen.borrow()
            .iter()
            .filter(|e| &*e.key.target == name)
            .map(|e| e.planned)
            .collect()
    }

    /// Every start of a job on its grid `epoch + offset + k·interval`, up to `until`.
    fn grid(epoch: Instant, job: &Job, until: Instant) -> Vec<Instant> {
        let first = epoch + spread_offset(&job.key, job.interval);
        (0..)
            .map(|k| first + job.interval * k)
            .take_while(|t| *t <= until)
            .collect()
    }

    #[test]
    fn jobs_run_at_their_own_intervals_and_keep_phase_across_updates() {
        let clock = ManualClock::new();
        let epoch = clock.now();
        let mut plan = Plan::new(epoch);
        let seen = RefCell::new(Vec::new());
        let fast = Job {
            key: key("fast"),
            interval: Duration::from_millis(50),
        };
        let slow = Job {
            key: key("slow"),
            interval: Duration::from_millis(200),
        };
        plan.set(vec![fast.clone(), slow.clone()], clock.now());
        step(&mut plan, &clock, Duration::from_millis(620), &seen);
        // Re-applying the same jobs must not shift them.
        plan.set(vec![fast.clone(), slow.clone()], clock.now());
        step(&mut plan, &clock, Duration::from_millis(400), &seen);
        let removed_at = clock.now();
        plan.set(vec![slow.clone()], clock.now());
        step(&mut plan, &clock, Duration::from_millis(150), &seen);
        assert_eq!(planned(&seen, "fast"), grid(epoch, &fast, removed_at));
        assert_eq!(planned(&seen, "slow"), grid(epoch, &slow, clock.now()));
        // 1,020 ms of a 50 ms job, whatever its phase.
        assert!((20..=21).contains(&planned(&seen, "fast").len()));
    }

    #[test]
    fn a_late_wake_skips_whole_intervals_and_never_bursts() {
        let clock = ManualClock::new();
        let epoch = clock.now();
        let mut plan = Plan::new(epoch);
        let job = Job {
            key: key("j"),
            interval: Duration::from_millis(100),
        };
        plan.set(vec![job.clone()], clock.now());
        let seen = RefCell::new(Vec::new());
        // The thread oversleeps ten intervals (a stalled machine): one run, not ten.
        clock.advance(Duration::from_millis(1000));
        plan.dispatch_due(clock.now(), &|ev| seen.borrow_mut().push(ev));
        assert_eq!(seen.borrow().len(), 1);
        let next = plan.next_due().unwrap();
        assert!(next > clock.now() && next <= clock.now() + job.interval);
        assert!(
            grid(epoch, &job, next).contains(&next),
            "back on the job's grid"
        );
    }

    #[test]
    fn a_changed_interval_moves_the_job_to_its_new_grid() {
        let clock = ManualClock::new();
        let epoch = clock.now();
        let mut plan = Plan::new(epoch);
        let seen = RefCell::new(Vec::new());
        let mut job = Job {
            key: key("j"),
            interval: Duration::from_millis(100),
        };
        plan.set(vec![job.clone()], clock.now());
        step(&mut plan, &clock, Duration::from_millis(250), &seen);
        job.interval = Duration::from_millis(70);
        plan.set(vec![job.clone()], clock.now());
        seen.borrow_mut().clear();
        let changed_at = clock.now();
        step(&mut plan, &clock, Duration::from_millis(300), &seen);
        let on_grid: Vec<Instant> = grid(epoch, &job, clock.now())
            .into_iter()
            .filter(|t| *t >= changed_at)
            .collect();
        assert_eq!(planned(&seen, "j"), on_grid);
    }

    /// The job due within [`DISPATCH_AHEAD`] goes at once, ahead of its plan; a later one
    /// waits for its time. The clock stands still between the steps, so the order holds
    /// however slowly the thread runs.
    #[test]
    fn the_thread_hands_over_the_jobs_of_the_next_millisecond_at_once() {
        let interval = Duration::from_secs(10);
        let find = |from: Duration, to: Duration| {
            (0..)
                .map(|i| key(&format!("k{i}")))
                .find(|k| (from..to).contains(&spread_offset(k, interval)))
                .unwrap()
        };
        let soon = find(DISPATCH_AHEAD / 4, DISPATCH_AHEAD / 2);
        let later = find(DISPATCH_AHEAD * 3, DISPATCH_AHEAD * 4);
        let clock = Arc::new(ManualClock::new());
        let (tx, rx) = mpsc::channel();
        let s = Scheduler::with_clock(clock.clone(), move |ev| {
            let _ = tx.send(ev);
        });
        let jobs = [&soon, &later].map(|k| Job {
            key: k.clone(),
            interval,
        });
        s.set_jobs(jobs.to_vec());
        let ev = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("dispatched");
        assert_eq!(ev.key, soon);
        assert!(ev.planned > clock.now(), "handed over ahead of its plan");
        assert!(rx.recv_timeout(Duration::from_millis(50)).is_err());
        clock.advance(DISPATCH_AHEAD * 3);
        let ev = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("dispatched");
        assert_eq!(ev.key, later);
    }

    #[test]
    fn the_thread_dispatches_on_its_clock() {
        let (tx, rx) = mpsc::channel();
        let s = Scheduler::with_clock(Arc::new(SystemClock), move |ev| {
            let _ = tx.send(ev);
        });
        let job = Job {
            key: key("j"),
            interval: Duration::from_millis(20),
        };
        s.set_jobs(vec![job.clone()]);
        assert_eq!(s.jobs(), vec![job.clone()]);
        // Order, not timing: three runs arrive, each planned one interval after the last.
        let evs: Vec<SchedulerEvent> = (0..3)
            .map(|_| {
                rx.recv_timeout(Duration::from_secs(60))
                    .expect("the job ran")
            })
            .collect();
        for w in evs.windows(2) {
            assert_eq!(
                (w[1].planned - w[0].planned).as_nanos() % job.interval.as_nanos(),
                0
            );
            assert!(w[1].planned > w[0].planned);
        }
    }
}
