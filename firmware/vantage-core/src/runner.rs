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
    /// A round was skipped because earlier rounds of the same job were still running.
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

struct Shared {
    clock: Arc<dyn Clock>,
    targets: RwLock<HashMap<Arc<str>, Arc<Target>>>,
    probes: HashMap<ProbeKind, Arc<dyn Probe>>,
    observer: Arc<dyn Observer>,
    permits: Semaphore,
    running: Mutex<HashMap<JobKey, u32>>,
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
        let shared = Arc::new(Shared {
            clock: clock.clone(),
            targets: RwLock::default(),
            probes: probes.into_iter().map(|p| (p.kind(), p)).collect(),
            observer,
            permits: Semaphore::new(max_concurrent.max(1)),
            running: Mutex::default(),
        });
        let handle = tokio::runtime::Handle::current();
        let s = shared.clone();
        let scheduler = Scheduler::with_clock(clock, move |ev| {
            let s = s.clone();
            handle.spawn(async move { s.run_job(ev).await });
        });
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
                    Some(o) if **o == *t => {
                        applied.unchanged.push(t.name.clone());
                        next.insert(name, o.clone());
                    }
                    Some(_) => {
                        applied.changed.push(t.name.clone());
                        next.insert(name, Arc::new(t.clone()));
                    }
                    None => {
                        applied.added.push(t.name.clone());
                        next.insert(name, Arc::new(t.clone()));
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
    async fn run_job(&self, ev: SchedulerEvent) {
        let Some(target) = self.targets.read_or_recover().get(&ev.key.target).cloned() else {
            return;
        };
        let Some(probe) = self.probes.get(&ev.key.probe).cloned() else {
            return;
        };
        {
            let mut running = self.running.lock_or_recover();
            let n = running.entry(ev.key.clone()).or_insert(0);
            if *n >= MAX_OVERLAP {
                drop(running);
                self.observer.skipped(&ev.key);
                return;
            }
            *n += 1;
        }
        let _running = RunningGuard {
            shared: self,
            key: &ev.key,
        };
        let Ok(_permit) = self.permits.acquire().await else {
            return;
        };
        self.observer.lag(
            &ev.key,
            self.clock.now().saturating_duration_since(ev.planned),
        );
        let sample = probe
            .run(ProbeRequest {
                target: target.clone(),
                deadline: None,
                guard: None,
                progress: None,
            })
            .await;
        // A target edited or removed while this round ran: its result belongs to the old config.
        let current = self.targets.read_or_recover().get(&ev.key.target).cloned();
        if current.is_some_and(|c| Arc::ptr_eq(&c, &target)) {
            self.observer.sample(sample);
        }
    }
}

struct RunningGuard<'a> {
    shared: &'a Shared,
    key: &'a JobKey,
}

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        let mut running = self.shared.running.lock_or_recover();
        if let Some(n) = running.get_mut(self.key) {
            *n -= 1;
            if *n == 0 {
                running.remove(self.key);
            }
        }
    }
}
