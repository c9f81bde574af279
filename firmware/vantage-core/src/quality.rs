//! Measurement quality: whether a round ran on an overloaded probe rather than a slow network.
//!
//! A round is flagged [`RoundQuality::LATE`] when it started more than [`LATE_THRESHOLD`] after
//! its plan, and [`RoundQuality::CPU`] / [`RoundQuality::MEMORY`] when tasks of the device were
//! stalled on that resource for more than [`STALL_THRESHOLD`] of the round (Linux PSI, the
//! `some` line of `/proc/pressure/{cpu,memory}`). Such rounds' RTTs may include the probe's own
//! delays. The share is taken between the readings at the round's start and end, which may be
//! up to [`PSI_READ_INTERVAL`] old: the files are read at most that often, whatever the number
//! of targets.

use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::lock::LockExt;

/// Scheduler lag above which a round counts as late.
pub const LATE_THRESHOLD: Duration = Duration::from_millis(10);
/// Share of a round's duration during which some task was stalled on the CPU (or on memory)
/// above which the round counts as run under pressure: 10 %.
pub const STALL_THRESHOLD: f64 = 0.10;
/// How long a reading of a PSI file is reused: every round reads the counters at its start and
/// end, and at thousands of rounds a second the files are read at most this often, not four
/// times a round. Rounds shorter than this may share their readings and go unchecked.
pub const PSI_READ_INTERVAL: Duration = Duration::from_millis(1);

/// Flags of one round; empty for a round run on time on an unloaded device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct RoundQuality(u8);

impl RoundQuality {
    /// Started more than [`LATE_THRESHOLD`] after its plan.
    pub const LATE: Self = Self(1);
    /// CPU stall above [`STALL_THRESHOLD`] of the round.
    pub const CPU: Self = Self(1 << 1);
    /// Memory stall above [`STALL_THRESHOLD`] of the round.
    pub const MEMORY: Self = Self(1 << 2);
    /// Every flag with its name (the `reason` label of `/metrics`), in bit order.
    pub const REASONS: [(Self, &'static str); 3] = [
        (Self::LATE, "late"),
        (Self::CPU, "cpu"),
        (Self::MEMORY, "memory"),
    ];
    const KNOWN: u8 = 0b111;

    pub const fn empty() -> Self {
        Self(0)
    }

    pub const fn bits(self) -> u8 {
        self.0
    }

    /// The flags of `bits`; `None` when a bit this build does not define is set.
    pub const fn from_bits(bits: u8) -> Option<Self> {
        if bits & !Self::KNOWN == 0 {
            Some(Self(bits))
        } else {
            None
        }
    }

    // By reference, for serde's `skip_serializing_if`.
    pub const fn is_empty(&self) -> bool {
        self.0 == 0
    }

    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn insert(&mut self, other: Self) {
        self.0 |= other.0;
    }

    /// The names of the flags set, in bit order.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        Self::REASONS
            .into_iter()
            .filter(move |(f, _)| self.contains(*f))
            .map(|(_, n)| n)
    }
}

impl std::ops::BitOr for RoundQuality {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

impl fmt::Display for RoundQuality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, n) in self.names().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(n)?;
        }
        Ok(())
    }
}

/// Serialized as the list of flag names, e.g. `["late", "cpu"]`.
impl Serialize for RoundQuality {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.names())
    }
}

/// A resource whose stalls PSI reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Cpu,
    Memory,
}

impl Resource {
    fn flag(self) -> RoundQuality {
        match self {
            Resource::Cpu => RoundQuality::CPU,
            Resource::Memory => RoundQuality::MEMORY,
        }
    }
}

/// A reading of a stall counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stall {
    /// When it was read (monotonic).
    pub at: Instant,
    /// Total time some task was stalled on the resource since boot (PSI `some total=`).
    pub total: Duration,
}

/// The device's stall counters; tests substitute counters they move.
pub trait Pressure: Send + Sync + fmt::Debug + 'static {
    /// The stall counter of `resource`, or `None` where the kernel does not report it.
    fn stalled(&self, resource: Resource) -> Option<Stall>;
}

/// The kernel's PSI files, `/proc/pressure/cpu` and `/proc/pressure/memory`, each read at most
/// once per [`PSI_READ_INTERVAL`].
#[derive(Debug, Default)]
pub struct ProcPressure {
    /// The last reading of the CPU and of the memory counter.
    last: [Mutex<Option<Stall>>; 2],
    /// The missing files were reported.
    reported: AtomicBool,
}

impl Pressure for ProcPressure {
    fn stalled(&self, resource: Resource) -> Option<Stall> {
        let (path, slot) = match resource {
            Resource::Cpu => ("/proc/pressure/cpu", &self.last[0]),
            Resource::Memory => ("/proc/pressure/memory", &self.last[1]),
        };
        let now = Instant::now();
        let mut last = slot.lock_or_recover();
        if let Some(s) = *last
            && now.saturating_duration_since(s.at) < PSI_READ_INTERVAL
        {
            return Some(s);
        }
        match std::fs::read_to_string(path) {
            Ok(text) => {
                *last = some_total(&text).map(|total| Stall { at: now, total });
                *last
            }
            Err(e) => {
                if !self.reported.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "{path}: {e}; rounds are not checked for CPU or memory pressure \
                         (a kernel without PSI)"
                    );
                }
                None
            }
        }
    }
}

/// The `total=` µs figure of the `some` line of a PSI file.
fn some_total(text: &str) -> Option<Duration> {
    let line = text.lines().find(|l| l.starts_with("some "))?;
    let total = line
        .split_whitespace()
        .find_map(|f| f.strip_prefix("total="))?;
    total.parse().ok().map(Duration::from_micros)
}

/// The stall counters at the start of a round.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PressureMark {
    cpu: Option<Stall>,
    memory: Option<Stall>,
}

impl PressureMark {
    pub(crate) fn take(p: &dyn Pressure) -> Self {
        Self {
            cpu: p.stalled(Resource::Cpu),
            memory: p.stalled(Resource::Memory),
        }
    }

    /// The pressure flags of a round that started at this mark and ends now: the share of the
    /// time between the two readings that some task was stalled (no flag when both readings
    /// are the same one).
    pub(crate) fn flags(self, p: &dyn Pressure) -> RoundQuality {
        let mut q = RoundQuality::empty();
        for (resource, before) in [(Resource::Cpu, self.cpu), (Resource::Memory, self.memory)] {
            let (Some(before), Some(after)) = (before, p.stalled(resource)) else {
                continue;
            };
            let span = after.at.saturating_duration_since(before.at);
            if span.is_zero() {
                continue;
            }
            let share = after.total.saturating_sub(before.total).as_secs_f64() / span.as_secs_f64();
            if share > STALL_THRESHOLD {
                q.insert(resource.flag());
            }
        }
        q
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_some_total_is_read_from_a_psi_file() {
        let cpu = "some avg10=1.50 avg60=0.80 avg300=0.20 total=123456789\n\
                   full avg10=0.00 avg60=0.00 avg300=0.00 total=42\n";
        assert_eq!(some_total(cpu), Some(Duration::from_micros(123_456_789)));
        assert_eq!(some_total("full avg10=0.00 total=5\n"), None);
        assert_eq!(some_total("some avg10=0.00 total=x\n"), None);
    }

    /// A counter that grows by a second of stall at every reading, always read at one instant.
    #[derive(Debug)]
    struct SameInstant(Instant, Mutex<u64>);

    impl Pressure for SameInstant {
        fn stalled(&self, _: Resource) -> Option<Stall> {
            let mut n = self.1.lock_or_recover();
            *n += 1;
            Some(Stall {
                at: self.0,
                total: Duration::from_secs(*n),
            })
        }
    }

    #[test]
    fn a_round_between_the_same_readings_is_not_judged() {
        let p = SameInstant(Instant::now(), Mutex::new(0));
        let mark = PressureMark::take(&p);
        assert_eq!(mark.flags(&p), RoundQuality::empty());
    }

    #[test]
    #[ignore = "a measurement; prints figures"]
    fn read_cost() {
        let n = 20_000u32;
        let start = Instant::now();
        for _ in 0..n {
            let _ = ProcPressure::default().stalled(Resource::Cpu);
        }
        let fresh = start.elapsed() / n;
        let p = ProcPressure::default();
        let start = Instant::now();
        for _ in 0..n {
            let _ = p.stalled(Resource::Cpu);
        }
        println!(
            "PSI read: {fresh:?} fresh, {:?} with reuse",
            start.elapsed() / n
        );
    }

    #[test]
    fn the_kernels_counters_are_read_where_psi_exists() {
        let p = ProcPressure::default();
        for (r, path) in [
            (Resource::Cpu, "/proc/pressure/cpu"),
            (Resource::Memory, "/proc/pressure/memory"),
        ] {
            let first = p.stalled(r);
            assert_eq!(
                first.is_some(),
                std::path::Path::new(path).exists(),
                "{path}"
            );
            if let (Some(a), Some(b)) = (first, p.stalled(r)) {
                assert!(b.total >= a.total && b.at >= a.at, "{a:?} {b:?}");
            }
        }
    }

    #[test]
    fn flags_round_trip_through_bits_and_refuse_unknown_ones() {
        let q = RoundQuality::LATE | RoundQuality::MEMORY;
        assert_eq!(RoundQuality::from_bits(q.bits()), Some(q));
        assert_eq!(q.to_string(), "late,memory");
        assert_eq!(serde_json::to_string(&q).unwrap(), r#"["late","memory"]"#);
        assert_eq!(RoundQuality::from_bits(1 << 3), None);
        assert!(RoundQuality::default().is_empty());
    }
}
