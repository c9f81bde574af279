//! Measurement quality: whether a round ran on an overloaded probe rather than a slow network.
//!
//! A round is flagged [`RoundQuality::LATE`] when it started more than [`LATE_THRESHOLD`] after
//! its plan, and [`RoundQuality::CPU`] / [`RoundQuality::MEMORY`] when tasks of the device were
//! stalled on that resource for more than [`STALL_THRESHOLD`] of the round (Linux PSI, the
//! `some` line of `/proc/pressure/{cpu,memory}`). Such rounds' RTTs may include the probe's own
//! delays.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Serialize;

/// Scheduler lag above which a round counts as late.
pub const LATE_THRESHOLD: Duration = Duration::from_millis(10);
/// Share of a round's duration during which some task was stalled on the CPU (or on memory)
/// above which the round counts as run under pressure: 10 %.
pub const STALL_THRESHOLD: f64 = 0.10;

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

/// The device's stall counters; tests substitute counters they move.
pub trait Pressure: Send + Sync + fmt::Debug + 'static {
    /// Total time some task was stalled on `resource` since boot (PSI `some total=`), or `None`
    /// where the kernel does not report it.
    fn stalled(&self, resource: Resource) -> Option<Duration>;
}

/// The kernel's PSI files, `/proc/pressure/cpu` and `/proc/pressure/memory`.
#[derive(Debug, Default)]
pub struct ProcPressure {
    /// The missing files were reported.
    reported: AtomicBool,
}

impl Pressure for ProcPressure {
    fn stalled(&self, resource: Resource) -> Option<Duration> {
        let path = match resource {
            Resource::Cpu => "/proc/pressure/cpu",
            Resource::Memory => "/proc/pressure/memory",
        };
        match std::fs::read_to_string(path) {
            Ok(text) => some_total(&text),
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
    cpu: Option<Duration>,
    memory: Option<Duration>,
}

impl PressureMark {
    pub(crate) fn take(p: &dyn Pressure) -> Self {
        Self {
            cpu: p.stalled(Resource::Cpu),
            memory: p.stalled(Resource::Memory),
        }
    }

    /// The pressure flags of a round that started at this mark and lasted `elapsed`.
    pub(crate) fn flags(self, p: &dyn Pressure, elapsed: Duration) -> RoundQuality {
        let mut q = RoundQuality::empty();
        if elapsed.is_zero() {
            return q;
        }
        for (resource, before) in [(Resource::Cpu, self.cpu), (Resource::Memory, self.memory)] {
            let (Some(before), Some(after)) = (before, p.stalled(resource)) else {
                continue;
            };
            let share = after.saturating_sub(before).as_secs_f64() / elapsed.as_secs_f64();
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
