//! Runs the configured probes on schedule and hands every sample to an [`Observer`].

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::clock::{Clock, SystemClock};
use crate::config::{Config, Target};
use crate::lock::{LockExt, RwLockExt};
use crate::probe::{Probe, ProbeRequest};
use crate::quality::{LATE_THRESHOLD, Pressure, PressureMark, ProcPressure, RoundQuality};
use crate::sample::Sample;
use crate::scheduler::{Job, JobKey, Scheduler, SchedulerEvent};
use crate::types::ProbeKind;

/// Rounds of one job allowed to run at once; a round that overlaps more is skipped.
const MAX_OVERLAP: u32 = 2;

/// Where samples and scheduler figures go (metrics, store, LEDs: the daemon decides).
pub trait Observer: Send + Sync + 'static {
    fn sample(&self, sample: Sample);
    /// How late a round started against its plan.
    fn lag(&self, key: &JobKey, lag: Duration);
    /// A round was skipped because earlier rounds of the same job were still running or
    /// waiting to start.
    fn skipped(&self, key: &JobKey);
}

/// What a config change did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
    pub unchanged: Vec<String>,
}

/// What a runner is built from: its probes, where their samples go, how many rounds run at
/// once, and its seams (the clock, the device's stall counters).
pub struct RunnerParts {
    pub probes: Vec<Arc<dyn Probe>>,
    pub observer: Arc<dyn Observer>,
    pub max_concurrent: usize,
    pub clock: Arc<dyn Clock>,
    pub pressure: Arc<dyn Pressure>,
}

impl fmt::Debug for RunnerParts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunnerParts")
            .field("max_concurrent", &self.max_concurrent)
            .finish_non_exhaustive()
    }
}

struct Shared {
    clock: Arc<dyn Clock>,
    pressure: Arc<dyn Pressure>,
    targets: RwLock<HashMap<Arc<str>, Arc<Target>>>,
    probes: HashMap<ProbeKind, Arc<dyn Probe>>,
    observer: Arc<dyn Observer>,
    permits: Semaphore,
    running: Mutex<HashMap<JobKey, Overlap>>,
}

/// The probing engine of the daemon.
pub struct Runner {
    shared: Arc<Shared>,
    scheduler: Scheduler,
}

impl fmt::Debug for Runner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runner").finish_non_exhaustive()
    }
}

impl Runner {
    /// Starts the scheduler. Must be called from within a Tokio runtime, which runs the probes.
    pub fn start(
        probes: Vec<Arc<dyn Probe>>,
        observer: Arc<dyn Observer>,
        max_concurrent: usize,
    ) -> Self {
        Self::with_clock(probes, observer, max_concurrent, Arc::new(SystemClock))
    }

    /// Starts the scheduler on `clock`, which also measures how late rounds start.
    pub fn with_clock(
        probes: Vec<Arc<dyn Probe>>,
        observer: Arc<dyn Observer>,
        max_concurrent: usize,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self::with_seams(RunnerParts {
            probes,
            observer,
            max_concurrent,
            clock,
            pressure: Arc::new(ProcPressure::default()),
        })
    }

    /// Starts the scheduler on the parts' clock, reading the device's stall counters from
    /// their `pressure`.
    pub fn with_seams(parts: RunnerParts) -> Self {
        let clock = parts.clock.clone();
        let shared = Arc::new(Shared::new(parts));
        let handle = tokio::runtime::Handle::current();
        let s = shared.clone();
        let scheduler = Scheduler::with_clock(clock, move |ev| s.dispatch(&handle, ev));
        Self { shared, scheduler }
    }

    /// Applies a new config: unchanged targets keep their schedule and their running rounds.
    pub fn apply(&self, config: &Config) -> Applied {
        let mut applied = Applied::default();
        let mut next: HashMap<Arc<str>, Arc<Target>> = HashMap::with_capacity(config.targets.len());
        {
            let old = self.shared.targets.read_or_recover();
            for t in &config.targets {
                let name: Arc<str> = t.name.as_str().into();
                match old.get(&name) {
                    Some(o) if **o == **t => {
                        applied.unchanged.push(t.name.clone());
                        next.insert(name, o.clone());
                    }
                    // The config's own, not a copy. An unchanged target keeps the runner's
                    // (rounds in flight are told from a changed target's by pointer).
                    Some(_) => {
                        applied.changed.push(t.name.clone());
                        next.insert(name, t.clone());
                    }
                    None => {
                        applied.added.push(t.name.clone());
                        next.insert(name, t.clone());
                    }
                }
            }
            applied.removed = old
                .keys()
                .filter(|k| !next.contains_key(*k))
                .map(|k| k.to_string())
                .collect();
            applied.removed.sort();
        }
        let jobs = config
            .targets
            .iter()
            .flat_map(|t| {
                let name: Arc<str> = next
                    .get_key_value(t.name.as_str())
                    .map(|(k, _)| k.clone())
                    .expect("inserted above");
                t.probes
                    .iter()
                    .filter(|(k, _)| self.shared.probes.contains_key(k))
                    .map(move |(kind, interval)| Job {
                        key: JobKey {
                            target: name.clone(),
                            probe: *kind,
                        },
                        interval: *interval,
                    })
            })
            .collect();
        *self.shared.targets.write_or_recover() = next;
        self.scheduler.set_jobs(jobs);
        applied
    }

    /// The probe of a kind, for on-demand use.
    pub fn probe(&self, kind: ProbeKind) -> Option<Arc<dyn Probe>> {
        self.shared.probes.get(&kind).cloned()
    }

    pub fn jobs(&self) -> Vec<Job> {
        self.scheduler.jobs()
    }
}

impl Shared {
    fn new(parts: RunnerParts) -> Self {
        Self {
            clock: parts.clock,
            pressure: parts.pressure,
            targets: RwLock::default(),
            probes: parts.probes.into_iter().map(|p| (p.kind(), p)).collect(),
            observer: parts.observer,
            permits: Semaphore::new(parts.max_concurrent.max(1)),
            running: Mutex::default(),
        }
    }

    /// Starts a round of the scheduler's event on `handle`, unless [`MAX_OVERLAP`] rounds of
    /// its job are still running or waiting to start.
    fn dispatch(self: &Arc<Self>, handle: &tokio::runtime::Handle, ev: SchedulerEvent) {
        if let Some(admitted) = self.admit(&ev.key) {
            let s = self.clone();
            handle.spawn(async move { s.run_job(ev, admitted).await });
        }
    }

    /// Counts a round of `key` from its dispatch on, not from its start: when the runtime cannot
    /// keep up, rounds it has not started yet are skipped instead of queued without bound (each
    /// queued round holds a task, and late rounds measure the device, not the network).
    fn admit(self: &Arc<Self>, key: &JobKey) -> Option<Admitted> {
        let mut running = self.running.lock_or_recover();
        let o = running.entry(key.clone()).or_default();
        if o.rounds >= MAX_OVERLAP {
            drop(running);
            self.observer.skipped(key);
            return None;
        }
        o.rounds += 1;
        Some(Admitted {
            shared: self.clone(),
            key: key.clone(),
        })
    }

    async fn run_job(&self, ev: SchedulerEvent, _admitted: Admitted) {
        let Some(target) = self.targets.read_or_recover().get(&ev.key.target).cloned() else {
            return;
        };
        let Some(probe) = self.probes.get(&ev.key.probe).cloned() else {
            return;
        };
        let Ok(_permit) = self.permits.acquire().await else {
            return;
        };
        let start = self.clock.now();
        let lag = start.saturating_duration_since(ev.planned);
        self.observer.lag(&ev.key, lag);
        let mark = PressureMark::take(self.pressure.as_ref());
        let mut sample = probe
            .run(ProbeRequest {
                target: target.clone(),
                deadline: None,
                guard: None,
                progress: None,
            })
            .await;
        sample.quality = mark.flags(self.pressure.as_ref());
        if lag > LATE_THRESHOLD {
            sample.quality.insert(RoundQuality::LATE);
        }
        // A target edited or removed while this round ran: its result belongs to the old config.
        let current = self.targets.read_or_recover().get(&ev.key.target).cloned();
        if !current.is_some_and(|c| Arc::ptr_eq(&c, &target)) {
            return;
        }
        if self.first_in_its_millisecond(&ev.key, &sample) {
            self.observer.sample(sample);
        } else {
            self.observer.skipped(&ev.key);
        }
    }

    /// Whether no overlapping round of the job was already delivered with the same millisecond
    /// timestamp. Two rounds admitted while the device stalled start together once it resumes:
    /// they measured the same instant, and a series holds one point per timestamp (Prometheus
    /// keeps one and counts the other as a duplicate), so the second to end is dropped as
    /// skipped.
    fn first_in_its_millisecond(&self, key: &JobKey, sample: &Sample) -> bool {
        let ms = sample
            .timestamp
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let mut running = self.running.lock_or_recover();
        let Some(o) = running.get_mut(key) else {
            return true;
        };
        if o.delivered_ms == Some(ms) {
            return false;
        }
        o.delivered_ms = Some(ms);
        true
    }
}

/// A job's rounds in flight, and the timestamp of the last one delivered while any ran.
#[derive(Default)]
struct Overlap {
    rounds: u32,
    delivered_ms: Option<u128>,
}

/// A round counted against its job's overlap limit until it ends (or is dropped unstarted).
struct Admitted {
    shared: Arc<Shared>,
    key: JobKey,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut running = self.shared.running.lock_or_recover();
        if let Some(o) = running.get_mut(&self.key) {
            o.rounds -= 1;
            if o.rounds == 0 {
                running.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Instant, SystemTime};

    use super::*;
    use crate::clock::ManualClock;
    use crate::net::BoxFuture;
    use crate::quality::{Resource, Stall};
    use crate::sample::Measurement;

    /// Stall counters the test moves, read at the time of the test's clock.
    #[derive(Debug)]
    struct FakePressure {
        clock: Arc<ManualClock>,
        /// µs stalled on the CPU and on memory; `None` for a kernel without PSI.
        stalled: Mutex<Option<[u64; 2]>>,
    }

    impl Pressure for FakePressure {
        fn stalled(&self, resource: Resource) -> Option<Stall> {
            let s = (*self.stalled.lock_or_recover())?;
            let us = match resource {
                Resource::Cpu => s[0],
                Resource::Memory => s[1],
            };
            Some(Stall {
                at: self.clock.now(),
                total: Duration::from_micros(us),
            })
        }
    }

    /// A round that takes one second of `clock`, while the device stalls for `stall` µs
    /// (CPU, memory).
    #[derive(Debug)]
    struct FakeProbe {
        clock: Arc<ManualClock>,
        pressure: Arc<FakePressure>,
        stall: [u64; 2],
        start: Instant,
    }

    /// Rounds of `ms` wall-clock milliseconds since the epoch, else as [`FakeProbe`]'s.
    fn sample_at(target: &str, ms: u64) -> Sample {
        Sample {
            target: target.into(),
            probe: ProbeKind::PING,
            timestamp: SystemTime::UNIX_EPOCH + Duration::from_millis(ms),
            duration: Duration::from_secs(1),
            success: true,
            error: None,
            measurement: Measurement::None,
            quality: RoundQuality::default(),
        }
    }

    impl Probe for FakeProbe {
        fn kind(&self) -> ProbeKind {
            ProbeKind::PING
        }
        fn run(&self, req: ProbeRequest) -> BoxFuture<'_, Sample> {
            Box::pin(async move {
                self.clock.advance(Duration::from_secs(1));
                if let Some(s) = self.pressure.stalled.lock_or_recover().as_mut() {
                    s[0] += self.stall[0];
                    s[1] += self.stall[1];
                }
                // Each round a second of the clock later than the last: its own timestamp.
                let ms = self.clock.now().duration_since(self.start).as_millis() as u64;
                sample_at(&req.target.name, ms)
            })
        }
    }

    #[derive(Default)]
    struct Samples(Mutex<Vec<Sample>>);

    impl Observer for Samples {
        fn sample(&self, sample: Sample) {
            self.0.lock_or_recover().push(sample);
        }
        fn lag(&self, _: &JobKey, _: Duration) {}
        fn skipped(&self, _: &JobKey) {}
    }

    /// Runs one round that starts `lag` after its plan while the device stalls for `stall` µs
    /// (CPU, memory) of its one second; `psi` false is a kernel without PSI.
    async fn round(lag: Duration, stall: [u64; 2], psi: bool) -> RoundQuality {
        let clock = Arc::new(ManualClock::new());
        let pressure = Arc::new(FakePressure {
            clock: clock.clone(),
            stalled: Mutex::new(None),
        });
        if psi {
            *pressure.stalled.lock_or_recover() = Some([7_000_000, 9_000_000]);
        }
        let probe = Arc::new(FakeProbe {
            clock: clock.clone(),
            pressure: pressure.clone(),
            stall,
            start: clock.now(),
        });
        let samples = Arc::new(Samples::default());
        let shared = one_target(probe, samples.clone(), 1, clock.clone(), pressure);
        let planned: Instant = clock.now();
        clock.advance(lag);
        let key = JobKey {
            target: "t".into(),
            probe: ProbeKind::PING,
        };
        let admitted = shared.admit(&key).expect("nothing else runs");
        shared
            .run_job(SchedulerEvent { key, planned }, admitted)
            .await;
        let got = samples.0.lock_or_recover();
        assert_eq!(got.len(), 1);
        got[0].quality
    }

    /// A runner's shared state with `probe` and one ping target, `t`.
    fn one_target(
        probe: Arc<dyn Probe>,
        observer: Arc<dyn Observer>,
        max_concurrent: usize,
        clock: Arc<ManualClock>,
        pressure: Arc<FakePressure>,
    ) -> Arc<Shared> {
        let shared = Arc::new(Shared::new(RunnerParts {
            probes: vec![probe],
            observer,
            max_concurrent,
            clock,
            pressure,
        }));
        let cfg = Config::parse(
            "[[targets]]\nname = \"t\"\nhost = \"127.0.0.1\"\nprobes = [\"ping\"]\n",
            "inline",
        )
        .unwrap();
        shared
            .targets
            .write_or_recover()
            .insert("t".into(), cfg.targets[0].clone());
        shared
    }

    /// Counts rounds and skipped rounds.
    #[derive(Default)]
    struct Counts {
        samples: Mutex<u32>,
        skipped: Mutex<u32>,
    }

    impl Observer for Counts {
        fn sample(&self, _: Sample) {
            *self.samples.lock_or_recover() += 1;
        }
        fn lag(&self, _: &JobKey, _: Duration) {}
        fn skipped(&self, _: &JobKey) {
            *self.skipped.lock_or_recover() += 1;
        }
    }

    /// A one-thread runtime that runs nothing until the test blocks on it, one target with the
    /// probe `make` gives, its rounds counted; and a round of that target due now.
    struct BusyLab {
        rt: tokio::runtime::Runtime,
        clock: Arc<ManualClock>,
        counts: Arc<Counts>,
        shared: Arc<Shared>,
    }

    impl BusyLab {
        fn new(make: impl FnOnce(&Arc<ManualClock>, &Arc<FakePressure>) -> Arc<dyn Probe>) -> Self {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            let clock = Arc::new(ManualClock::new());
            let pressure = Arc::new(FakePressure {
                clock: clock.clone(),
                stalled: Mutex::new(None),
            });
            let probe = make(&clock, &pressure);
            let counts = Arc::new(Counts::default());
            let shared = one_target(probe, counts.clone(), 100, clock.clone(), pressure);
            Self {
                rt,
                clock,
                counts,
                shared,
            }
        }

        fn due(&self) -> SchedulerEvent {
            SchedulerEvent {
                key: JobKey {
                    target: "t".into(),
                    probe: ProbeKind::PING,
                },
                planned: self.clock.now(),
            }
        }
    }

    #[test]
    fn rounds_a_busy_runtime_has_not_started_count_against_the_overlap_limit() {
        let lab = BusyLab::new(|clock, pressure| {
            Arc::new(FakeProbe {
                clock: clock.clone(),
                pressure: pressure.clone(),
                stall: [0, 0],
                start: clock.now(),
            })
        });
        let (rt, counts, shared) = (&lab.rt, &lab.counts, &lab.shared);
        let ev = || lab.due();
        // The runtime's one thread is busy elsewhere: ten rounds come due and none can start.
        for _ in 0..10 {
            shared.dispatch(rt.handle(), ev());
        }
        assert_eq!(rt.metrics().num_alive_tasks(), MAX_OVERLAP as usize);
        assert_eq!(*counts.skipped.lock_or_recover(), 10 - MAX_OVERLAP);
        // Once it gets to them, the admitted rounds run, and free their job for the next ones.
        rt.block_on(async {
            while *counts.samples.lock_or_recover() < MAX_OVERLAP {
                tokio::task::yield_now().await;
            }
        });
        assert_eq!(rt.metrics().num_alive_tasks(), 0);
        shared.dispatch(rt.handle(), ev());
        assert_eq!(rt.metrics().num_alive_tasks(), 1);
        assert_eq!(*counts.skipped.lock_or_recover(), 10 - MAX_OVERLAP);
    }

    /// Every round reports the same millisecond, as rounds that start together do.
    #[derive(Debug)]
    struct SameInstant;

    impl Probe for SameInstant {
        fn kind(&self) -> ProbeKind {
            ProbeKind::PING
        }
        fn run(&self, req: ProbeRequest) -> BoxFuture<'_, Sample> {
            Box::pin(async move { sample_at(&req.target.name, 1_000) })
        }
    }

    #[test]
    fn overlapping_rounds_of_one_millisecond_deliver_one_sample() {
        let lab = BusyLab::new(|_, _| Arc::new(SameInstant));
        let (rt, counts, shared) = (&lab.rt, &lab.counts, &lab.shared);
        let ev = || lab.due();
        // Two rounds admitted while the runtime was busy run at the same instant.
        shared.dispatch(rt.handle(), ev());
        shared.dispatch(rt.handle(), ev());
        rt.block_on(async {
            while rt_alive(shared) > 0 {
                tokio::task::yield_now().await;
            }
        });
        assert_eq!(*counts.samples.lock_or_recover(), 1);
        assert_eq!(*counts.skipped.lock_or_recover(), 1);
        // A later round alone: delivered, whatever its timestamp (nothing overlaps it).
        shared.dispatch(rt.handle(), ev());
        rt.block_on(async {
            while rt_alive(shared) > 0 {
                tokio::task::yield_now().await;
            }
        });
        assert_eq!(*counts.samples.lock_or_recover(), 2);
        assert_eq!(*counts.skipped.lock_or_recover(), 1);
    }

    /// Rounds of any job still admitted.
    fn rt_alive(shared: &Shared) -> u32 {
        shared
            .running
            .lock_or_recover()
            .values()
            .map(|o| o.rounds)
            .sum()
    }

    #[tokio::test]
    async fn a_round_that_starts_late_is_flagged_late() {
        let ms = Duration::from_millis;
        assert_eq!(round(ms(0), [0, 0], true).await, RoundQuality::empty());
        assert_eq!(
            round(LATE_THRESHOLD, [0, 0], true).await,
            RoundQuality::empty()
        );
        assert_eq!(
            round(LATE_THRESHOLD + ms(1), [0, 0], true).await,
            RoundQuality::LATE
        );
        assert_eq!(round(ms(250), [0, 0], true).await, RoundQuality::LATE);
    }

    #[tokio::test]
    async fn stalls_above_the_threshold_flag_cpu_or_memory_pressure() {
        let none = Duration::ZERO;
        // 10 % of the one-second round is the threshold: at it, nothing; above it, flagged.
        assert_eq!(round(none, [100_000, 0], true).await, RoundQuality::empty());
        assert_eq!(
            round(none, [300_000, 50_000], true).await,
            RoundQuality::CPU
        );
        assert_eq!(round(none, [0, 150_000], true).await, RoundQuality::MEMORY);
        assert_eq!(
            round(Duration::from_millis(20), [900_000, 900_000], true).await,
            RoundQuality::LATE | RoundQuality::CPU | RoundQuality::MEMORY
        );
        // Without PSI nothing is flagged for pressure.
        assert_eq!(
            round(none, [900_000, 900_000], false).await,
            RoundQuality::empty()
        );
    }
}
