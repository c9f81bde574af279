//! The `process_*` series every Prometheus exporter has (CPU, memory, file descriptors, start
//! time), read from `/proc/self` at scrape time. Names and meanings follow the Prometheus
//! client libraries, so existing dashboards and alerts for exporters work unchanged.

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Counter, Gauge, Metric, MetricFamily, MetricType};

/// Reads `/proc/self` when scraped; absent figures (another OS, a hidden /proc) are left out.
#[derive(Debug)]
pub struct ProcessCollector {
    descs: Vec<Desc>,
}

impl Default for ProcessCollector {
    fn default() -> Self {
        Self::new()
    }
}

const SERIES: [(&str, &str, bool); 6] = [
    (
        "process_cpu_seconds_total",
        "Total user and system CPU time spent in seconds.",
        true,
    ),
    (
        "process_resident_memory_bytes",
        "Resident memory size in bytes.",
        false,
    ),
    (
        "process_virtual_memory_bytes",
        "Virtual memory size in bytes.",
        false,
    ),
    (
        "process_open_fds",
        "Number of open file descriptors.",
        false,
    ),
    (
        "process_max_fds",
        "Maximum number of open file descriptors.",
        false,
    ),
    (
        "process_start_time_seconds",
        "Start time of the process since unix epoch in seconds.",
        false,
    ),
];

impl ProcessCollector {
    pub fn new() -> Self {
        let descs = SERIES
            .iter()
            .map(|(n, h, _)| Desc::new(n.to_string(), h.to_string(), vec![], Default::default()))
            .collect::<Result<_, _>>()
            .expect("valid metric");
        Self { descs }
    }
}

/// The figures, in the order of [`SERIES`].
fn read() -> [Option<f64>; 6] {
    let stat = std::fs::read_to_string("/proc/self/stat").ok();
    // Fields after the command name, which sits in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .as_deref()
        .and_then(|s| s.rsplit_once(')'))
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // `man 5 proc`: utime=14, stime=15, starttime=22, vsize=23, rss=24 (1-based, counting the
    // pid and the command); `fields[0]` is field 3.
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    // SAFETY: as above.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as f64;
    let cpu = field(14)
        .zip(field(15))
        .filter(|_| ticks > 0.0)
        .map(|(u, s)| (u + s) / ticks);
    let start = field(22).zip(boot_time()).filter(|_| ticks > 0.0);
    [
        cpu,
        field(24).map(|p| p * page),
        field(23),
        std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as f64),
        max_fds(),
        start.map(|(t, boot)| boot + t / ticks),
    ]
}

/// `btime` of `/proc/stat`: when the system booted, in seconds since the epoch.
fn boot_time() -> Option<f64> {
    std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

fn max_fds() -> Option<f64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    (rc == 0 && lim.rlim_cur != libc::RLIM_INFINITY).then_some(lim.rlim_cur as f64)
}

impl Collector for ProcessCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        SERIES
            .iter()
            .zip(read())
            .filter_map(|((name, help, counter), v)| {
                let v = v?;
                let mut m = Metric::default();
                let mut f = MetricFamily::default();
                if *counter {
                    let mut c = Counter::default();
                    c.set_value(v);
                    m.set_counter(c);
                    f.set_field_type(MetricType::COUNTER);
                } else {
                    let mut g = Gauge::default();
                    g.set_value(v);
                    m.set_gauge(g);
                    f.set_field_type(MetricType::GAUGE);
                }
                f.set_name(name.to_string());
                f.set_help(help.to_string());
                f.mut_metric().push(m);
                Some(f)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let text = crate::metrics::encode(&ProcessCollector::new().collect());
        let value = |name: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")))
                .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
                .parse()
                .unwrap()
        };
        // This test process holds a few MB, a few fds, and started within the last day.
        assert!(value("process_resident_memory_bytes") > 1e6, "{text}");
        assert!(value("process_virtual_memory_bytes") >= value("process_resident_memory_bytes"));
        assert!(value("process_open_fds") >= 3.0, "{text}");
        assert!(value("process_cpu_seconds_total") >= 0.0);
        let now = crate::metrics::unix_seconds(std::time::SystemTime::now());
        let start = value("process_start_time_seconds");
        assert!(
            start <= now + 1.0 && start > now - 86_400.0,
            "{start} vs {now}"
        );
        assert!(
            text.contains("# TYPE process_cpu_seconds_total counter"),
            "{text}"
        );
    }
}
