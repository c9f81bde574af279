//! Measurement quality: whether a round ran on an overloaded probe rather than a slow network.
//!
//! A round is flagged [`RoundQuality::LATE`] when it started more than [`LATE_THRESHOLD`] after
//! its plan, and [`RoundQuality::CPU`] / [`RoundQuality::MEMORY`] when tasks were stalled on
//! that resource for more than [`STALL_THRESHOLD`] of the round (Linux PSI, the `some` line of
//! `cpu.pressure` and `memory.pressure`): the tasks of the daemon's own cgroup v2 where it runs
//! in one (a systemd service, a container, a CPU quota: the cgroup's file counts the quota's
//! throttling, which the whole system's does not), else of the whole device
//! (`/proc/pressure/*`). Such rounds' RTTs may include the probe's own delays. The share is
//! taken between the readings at the round's start and end, which may be up to
//! [`PSI_READ_INTERVAL`] old: the files are read at most that often, whatever the number of
//! targets.

use std::fmt;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
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

/// The whole device's PSI files.
pub const SYSTEM_PSI_DIR: &str = "/proc/pressure";

/// The kernel's PSI files `cpu.pressure` and `memory.pressure` of one directory (see
/// [`psi_dir`]), each read at most once per [`PSI_READ_INTERVAL`].
#[derive(Debug)]
pub struct ProcPressure {
    /// The CPU and the memory file.
    paths: [PathBuf; 2],
    /// The last reading of the CPU and of the memory counter, and its file.
    last: [Mutex<Reading>; 2],
    /// The missing files were reported.
    reported: AtomicBool,
}

/// A PSI file kept open and read from its start each time: one system call a reading instead
/// of five (open, stat, two reads, close), at up to a thousand readings a second.
#[derive(Debug, Default)]
struct Reading {
    file: Option<File>,
    stall: Option<Stall>,
}

impl Reading {
    /// The `some` total of the file at `path`, opening it first if it is not open. A failed
    /// read closes it, so the next reading opens it again.
    fn read(&mut self, path: &Path) -> std::io::Result<Option<Duration>> {
        let file = match &mut self.file {
            Some(f) => f,
            none => none.insert(File::open(path)?),
        };
        // Two lines of about 70 bytes: one read from offset 0 gets them whole.
        let mut buf = [0u8; 512];
        let n = file
            .read_at(&mut buf, 0)
            .inspect_err(|_| self.file = None)?;
        Ok(std::str::from_utf8(&buf[..n]).ok().and_then(some_total))
    }
}

/// The files of [`psi_dir`]: the daemon's cgroup's where it has its own, else the device's.
impl Default for ProcPressure {
    fn default() -> Self {
        let dir = psi_dir();
        tracing::debug!(
            "rounds are judged by the stall counters in {}",
            dir.display()
        );
        Self::in_dir(&dir)
    }
}

impl ProcPressure {
    /// The counters of `dir`: [`SYSTEM_PSI_DIR`] (`cpu`, `memory`) or a cgroup v2 directory
    /// (`cpu.pressure`, `memory.pressure`).
    pub fn in_dir(dir: &Path) -> Self {
        let (cpu, memory) = if dir == Path::new(SYSTEM_PSI_DIR) {
            ("cpu", "memory")
        } else {
            ("cpu.pressure", "memory.pressure")
        };
        Self {
            paths: [dir.join(cpu), dir.join(memory)],
            last: Default::default(),
            reported: AtomicBool::new(false),
        }
    }
}

impl Pressure for ProcPressure {
    fn stalled(&self, resource: Resource) -> Option<Stall> {
        let i = match resource {
            Resource::Cpu => 0,
            Resource::Memory => 1,
        };
        let (path, slot) = (&self.paths[i], &self.last[i]);
        let now = Instant::now();
        let mut last = slot.lock_or_recover();
        if let Some(s) = last.stall
            && now.saturating_duration_since(s.at) < PSI_READ_INTERVAL
        {
            return Some(s);
        }
        match last.read(path) {
            Ok(total) => {
                last.stall = total.map(|total| Stall { at: now, total });
                last.stall
            }
            Err(e) => {
                if !self.reported.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "{}: {e}; rounds are not checked for CPU or memory pressure \
                         (a kernel without PSI)",
                        path.display()
                    );
                }
                None
            }
        }
    }
}

/// Where this process's stall counters are: its cgroup v2 directory when its `cpu.pressure`
/// reads (from `/proc/self/cgroup` and the cgroup2 mount of `/proc/self/mountinfo`), else
/// [`SYSTEM_PSI_DIR`]. A CPU quota's throttling shows only in the cgroup's own file; the root
/// cgroup's file is the device's, and a container's root is the container's.
pub fn psi_dir() -> PathBuf {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    choose_psi_dir(cgroup_dir(
        &read("/proc/self/cgroup"),
        &read("/proc/self/mountinfo"),
    ))
}

/// `cgroup` when its `cpu.pressure` has a `some` line, else [`SYSTEM_PSI_DIR`] (no cgroup v2
/// mounted, or PSI switched off for cgroups).
fn choose_psi_dir(cgroup: Option<PathBuf>) -> PathBuf {
    cgroup
        .filter(|d| {
            std::fs::read_to_string(d.join("cpu.pressure")).is_ok_and(|t| some_total(&t).is_some())
        })
        .unwrap_or_else(|| PathBuf::from(SYSTEM_PSI_DIR))
}

/// The cgroup v2 directory of a process from its `/proc/PID/cgroup` (the `0::` line) and
/// `/proc/PID/mountinfo` (the cgroup2 mount: `/sys/fs/cgroup`, or `/sys/fs/cgroup/unified`
/// beside v1 hierarchies); `None` without either.
fn cgroup_dir(proc_cgroup: &str, mountinfo: &str) -> Option<PathBuf> {
    let rel = proc_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))?
        .trim()
        .trim_start_matches('/');
    // "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER".
    let mount = mountinfo.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        (right.split_whitespace().next() == Some("cgroup2"))
            .then(|| left.split_whitespace().nth(4))
            .flatten()
    })?;
    Some(Path::new(mount).join(rel))
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
        let p = ProcPressure::in_dir(Path::new(SYSTEM_PSI_DIR));
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

    const HYBRID_MOUNTINFO: &str = "\
        24 30 0:22 / /sys rw,nosuid - sysfs sysfs rw\n\
        36 24 0:31 / /sys/fs/cgroup rw shared:9 - tmpfs tmpfs ro,mode=755\n\
        37 36 0:32 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw,nsdelegate\n\
        38 36 0:33 / /sys/fs/cgroup/cpu rw,nosuid shared:11 - cgroup cgroup rw,cpu\n";

    #[test]
    fn the_cgroup_v2_directory_comes_from_proc_self_cgroup_and_the_cgroup2_mount() {
        let unified = "4:memory:/x\n1:cpu:/\n0::/system.slice/vantage.service\n";
        assert_eq!(
            cgroup_dir(unified, HYBRID_MOUNTINFO),
            Some(PathBuf::from(
                "/sys/fs/cgroup/unified/system.slice/vantage.service"
            ))
        );
        let v2 = "29 1 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw\n";
        assert_eq!(
            cgroup_dir("0::/bench\n", v2),
            Some(PathBuf::from("/sys/fs/cgroup/bench"))
        );
        assert_eq!(
            cgroup_dir("0::/\n", v2),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        // v1 only, or no cgroup2 mount.
        assert_eq!(cgroup_dir("1:cpu:/a\n", v2), None);
        assert_eq!(
            cgroup_dir("0::/a\n", "24 30 0:22 / /sys rw - sysfs sysfs rw\n"),
            None
        );
    }

    /// A fresh directory under the system's temporary one.
    fn scratch_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("vantage-psi-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn write_psi(dir: &Path, cpu_total_us: u64) {
        let line = |t: u64| format!("some avg10=0.00 avg60=0.00 avg300=0.00 total={t}\n");
        std::fs::write(dir.join("cpu.pressure"), line(cpu_total_us)).unwrap();
        std::fs::write(dir.join("memory.pressure"), line(0)).unwrap();
    }

    #[test]
    fn a_cgroup_directory_is_used_only_where_its_cpu_pressure_reads() {
        let d = scratch_dir("choose");
        assert_eq!(choose_psi_dir(Some(d.clone())), Path::new(SYSTEM_PSI_DIR));
        std::fs::write(d.join("cpu.pressure"), "").unwrap();
        assert_eq!(choose_psi_dir(Some(d.clone())), Path::new(SYSTEM_PSI_DIR));
        write_psi(&d, 5);
        assert_eq!(choose_psi_dir(Some(d.clone())), d);
        assert_eq!(choose_psi_dir(None), Path::new(SYSTEM_PSI_DIR));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_round_throttled_in_its_cgroup_is_flagged_from_the_cgroups_file() {
        let d = scratch_dir("throttled");
        write_psi(&d, 1_000_000);
        let p = ProcPressure::in_dir(&d);
        let mark = PressureMark::take(&p);
        // Past the reuse interval, so the end of the round reads the files again: 1,000 s of
        // stall in a round of at most minutes.
        std::thread::sleep(PSI_READ_INTERVAL * 2);
        write_psi(&d, 1_001_000_000);
        assert_eq!(mark.flags(&p), RoundQuality::CPU);
        let mark = PressureMark::take(&p);
        std::thread::sleep(PSI_READ_INTERVAL * 2);
        assert_eq!(mark.flags(&p), RoundQuality::empty(), "no stall since");
        std::fs::remove_dir_all(&d).unwrap();
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
