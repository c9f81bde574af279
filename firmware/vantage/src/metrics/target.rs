//! All series of one target, and the text of every target's series for `/metrics`.

use std::sync::Mutex;
use vantage_core::LockExt;

use vantage_core::{Measurement, ProbeKind, RoundQuality, Sample, Target};
use vantage_store::gauges;

use super::modules::{self, ModuleSeries};
use super::rounds::RoundGauges;
use super::text::{Counter, Kind, Lines, SCRAPE_CHUNK, SpelledSet, family, unix_seconds};

/// A family of per-target series: its header, and how one target writes its lines.
#[derive(Debug)]
struct Family {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    write: fn(&TargetSeries, &str, &mut Lines<'_>),
}

/// The figures every probe kind has that are not per-round gauges.
#[derive(Debug)]
struct ProbeCounts {
    kind: ProbeKind,
    last_success: Mutex<f64>,
    success: Counter,
    failure: Counter,
    /// Rounds flagged for each reason of [`RoundQuality::REASONS`], in its order.
    flagged: [Counter; RoundQuality::REASONS.len()],
}

/// Tells a target's config from a changed one without keeping a copy of it (at 10,000 targets
/// the copies took 5 MB): two configs that differ have the same 64-bit hash with a chance of
/// 2⁻⁶⁴, and a changed target taken for unchanged only keeps its counters running.
pub fn fingerprint(t: &Target) -> u64 {
    use std::hash::{Hash, Hasher};
    // Fixed keys: the same config hashes the same for the daemon's lifetime.
    let mut h = std::hash::DefaultHasher::new();
    t.hash(&mut h);
    h.finish()
}

/// All series of one configured target (or of one `/probe` round).
#[derive(Debug)]
pub struct TargetSeries {
    /// A hash of the config this series set was built for ([`fingerprint`]); a changed
    /// target gets a new set.
    pub(super) target: Option<u64>,
    /// `target` and the user's labels, sorted by name.
    labels: Vec<(String, String)>,
    rounds: RoundGauges,
    /// Empty in a `/probe` answer: counters of one round would restart at every request.
    probes: Vec<ProbeCounts>,
    /// The histograms of the target's module kinds (none in a `/probe` answer).
    modules: Vec<ModuleSeries>,
}

impl TargetSeries {
    pub fn new(t: &Target) -> Self {
        let kinds: Vec<ProbeKind> = t.probes.iter().map(|(k, _)| *k).collect();
        // Kept per target, so sized exactly (a push after an empty collect reserves four).
        let mut labels: Vec<(String, String)> = Vec::with_capacity(t.labels.len() + 1);
        labels.extend(
            t.labels
                .iter()
                .filter(|(k, _)| k.as_str() != "target")
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        labels.push(("target".into(), t.name.clone()));
        labels.sort();
        Self {
            target: Some(fingerprint(t)),
            labels,
            rounds: RoundGauges::new(&kinds),
            probes: kinds
                .iter()
                .map(|k| ProbeCounts {
                    kind: *k,
                    last_success: Mutex::new(0.0),
                    success: Counter::default(),
                    failure: Counter::default(),
                    flagged: Default::default(),
                })
                .collect(),
            modules: ModuleSeries::for_kinds(&kinds),
        }
    }

    /// What a `/probe` answer shows of its one round: the per-round gauges and its kind's info
    /// series (a trace's hop addresses), without labels.
    pub fn one_round(kind: ProbeKind) -> Self {
        Self {
            target: None,
            labels: Vec::new(),
            rounds: RoundGauges::new(&[kind]),
            probes: Vec::new(),
            modules: ModuleSeries::for_probe(kind),
        }
    }

    pub fn observe(&self, sample: &Sample) {
        self.rounds.observe(sample);
        if let Some(p) = self.probes.iter().find(|p| p.kind == sample.probe) {
            if sample.success {
                p.success.add(1);
                *p.last_success.lock_or_recover() = unix_seconds(sample.timestamp);
            } else {
                p.failure.add(1);
            }
            for ((flag, _), c) in RoundQuality::REASONS.iter().zip(&p.flagged) {
                if sample.quality.contains(*flag) {
                    c.add(1);
                }
            }
        }
        if let Measurement::Module(r) = &sample.measurement {
            ModuleSeries::observe(&self.modules, r);
        }
    }
}

const PROBE_FAMILIES: [Family; 3] = [
    Family {
        name: "vantage_probe_last_success_timestamp_seconds",
        help: "When the probe last succeeded, in seconds since the epoch (0: never).",
        kind: Kind::Gauge,
        write: |t, name, l| {
            for p in &t.probes {
                let v = *p.last_success.lock_or_recover();
                l.sample(name, &[("probe", p.kind.as_str())], None, v);
            }
        },
    },
    Family {
        name: "vantage_probe_rounds_total",
        help: "Probe rounds run, by result.",
        kind: Kind::Counter,
        write: |t, name, l| {
            for p in &t.probes {
                for (result, c) in [("failure", &p.failure), ("success", &p.success)] {
                    let own = [("probe", p.kind.as_str()), ("result", result)];
                    l.sample(name, &own, None, c.get() as f64);
                }
            }
        },
    },
    Family {
        name: "vantage_rounds_flagged_total",
        help: "Probe rounds that started late or ran while the device was under CPU or memory \
               pressure (Linux PSI), by reason: their figures may include the device's own delays.",
        kind: Kind::Counter,
        write: |t, name, l| {
            for p in &t.probes {
                for ((_, reason), c) in RoundQuality::REASONS.iter().zip(&p.flagged) {
                    let own = [("probe", p.kind.as_str()), ("reason", *reason)];
                    l.sample(name, &own, None, c.get() as f64);
                }
            }
        },
    },
];

/// Every target's series as text into `out`: family by family, target by target. `device`
/// labels go on every series unless the target has a label of the same name.
pub fn write_targets(targets: &[&TargetSeries], device: &[(String, String)], out: &mut String) {
    write_targets_in_chunks(targets, device, out, &mut |_| {});
}

/// [`write_targets`], handing `out` to `flush` at a target's end whenever it holds
/// [`SCRAPE_CHUNK`] bytes or more. Only after a line of the family was written, so
/// the family's header, once flushed, is never taken back.
pub fn write_targets_in_chunks(
    targets: &[&TargetSeries],
    device: &[(String, String)],
    out: &mut String,
    flush: &mut dyn FnMut(&mut String),
) {
    let flush = std::cell::RefCell::new(flush);
    let labels = spell_labels(targets, device);
    let each = |out: &mut String, write: &dyn Fn(&TargetSeries, &mut Lines<'_>)| {
        let mut any = false;
        for (i, t) in targets.iter().enumerate() {
            let mut lines = Lines::new(out, labels.get(i));
            write(t, &mut lines);
            any |= lines.wrote();
            if any && out.len() >= SCRAPE_CHUNK {
                (flush.borrow_mut())(out);
            }
        }
        any
    };
    let present = RoundGauges::present(targets.iter().map(|t| &t.rounds));
    // A family no target has a point of would write no line: not visited.
    for g in gauges::ALL
        .iter()
        .filter(|g| present.iter().any(|p| std::ptr::eq(*p, **g)))
    {
        family(out, g.name, g.help, Kind::Gauge, |o| {
            each(o, &|t, l| t.rounds.write(g, l))
        });
    }
    let write = |out: &mut String, families: &[Family]| {
        for f in families {
            family(out, f.name, f.help, f.kind, |o| {
                each(o, &|t, l| (f.write)(t, f.name, l))
            });
        }
    };
    write(out, &PROBE_FAMILIES);
    // Each kind's families in the order of the kinds (ping's before trace's, as always).
    for kind in ProbeKind::every() {
        if let ProbeKind::Module(m) = kind {
            modules::write_families(out, m, &|o, w| each(o, &|t, l| w(&t.modules, l)));
        }
    }
}

/// Each target's labels with the device's (unless the target has a label of the same name),
/// spelled once for the whole scrape.
fn spell_labels<'a>(
    targets: &[&'a TargetSeries],
    device: &'a [(String, String)],
) -> SpelledSet<'a> {
    // A ping target with a label or two and the device's name: some 50 bytes in 3 labels.
    let mut set = SpelledSet::with_capacity(targets.len(), 3, 64);
    let mut merged: Vec<(&str, &str)> = Vec::new();
    for t in targets {
        merged.clear();
        merged.extend(t.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        for (k, v) in device {
            if !t.labels.iter().any(|(tk, _)| tk == k) {
                merged.push((k, v));
            }
        }
        merged.sort_unstable();
        set.push(merged.iter().copied());
    }
    set
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use vantage_core::{DnsPhases, DnsReport, PingReport};

    use super::*;
    use crate::test_support::trace_hop;
    use vantage_store::gauges::initial_points;

    fn flagged(text: &str, probe: &str, reason: &str) -> Option<f64> {
        let head = format!(
            "{}{{probe=\"{probe}\",reason=\"{reason}\",target=\"gw\"}} ",
            PROBE_FAMILIES[2].name
        );
        let line = text.lines().find(|l| l.starts_with(&head))?;
        line[head.len()..].parse().ok()
    }

    /// Kept for every target for the daemon's life (10,000 of them on a 64 MB device): a
    /// target's vectors, its config's and its series', hold no spare room.
    #[test]
    fn a_targets_config_and_series_are_sized_exactly() {
        let cfg = crate::config::parse(
            "[[targets]]\nname = \"a\"\nhost = \"127.0.0.1\"\nprobes = [\"ping\"]\n\
             [[targets]]\nname = \"b\"\nhost = \"127.0.0.1\"\nprobes = [\"ping\", \"dns\"]\n\
             labels = { site = \"x\" }\ndns = { query = \"example.com\" }\n",
            "sized.toml",
        )
        .unwrap();
        for t in &cfg.targets {
            assert_eq!(t.probes.capacity(), t.probes.len(), "{}", t.name);
            assert_eq!(t.modules.capacity(), t.modules.len(), "{}", t.name);
            let s = TargetSeries::new(t);
            assert_eq!(s.labels.capacity(), s.labels.len(), "{}", t.name);
            assert_eq!(s.modules.capacity(), s.modules.len(), "{}", t.name);
        }
    }

    /// A scrape of 10,000 targets writes some 400,000 lines: the render allocates a bounded
    /// number of times per scrape (its buffers), none per target or line.
    #[test]
    fn the_render_allocates_per_scrape_not_per_target() {
        let allocations = |n: usize| {
            let mut text = String::new();
            for i in 0..n {
                text.push_str(&format!(
                    "[[targets]]\nname = \"t{i}\"\nhost = \"127.0.0.1\"\nprobes = [\"ping\"]\n\
                     labels = {{ site = \"lab\" }}\n"
                ));
            }
            let cfg = crate::config::parse(&text, "many.toml").unwrap();
            let series: Vec<TargetSeries> =
                cfg.targets.iter().map(|t| TargetSeries::new(t)).collect();
            for (s, t) in series.iter().zip(&cfg.targets) {
                let at = SystemTime::now();
                s.observe(&crate::test_support::answered_ping(
                    &t.name,
                    at,
                    Duration::from_micros(180),
                ));
            }
            let refs: Vec<&TargetSeries> = series.iter().collect();
            let device = [("device".to_string(), "probe-1".to_string())];
            let mut out = String::new();
            let (written, allocations) = crate::test_support::allocations_in(|| {
                let mut written = 0;
                write_targets_in_chunks(&refs, &device, &mut out, &mut |chunk| {
                    written += chunk.len();
                    chunk.clear();
                });
                written + out.len()
            });
            assert!(written > n * 2_000, "{written} bytes for {n} targets");
            allocations
        };
        let (few, many) = (allocations(10), allocations(1_000));
        let mut out = String::new();
        let ping = TargetSeries::new(
            &crate::config::parse(
                "[[targets]]\nname = \"a\"\nhost = \"127.0.0.1\"\nprobes = [\"ping\"]\n",
                "one.toml",
            )
            .unwrap()
            .targets[0],
        );
        let ((), visits) =
            crate::metrics::rounds::tests::writes_in(|| write_targets(&[&ping], &[], &mut out));
        let ping_gauges = initial_points(ProbeKind::PING)
            .iter()
            .map(|p| std::ptr::from_ref(p.gauge))
            .collect::<std::collections::HashSet<_>>()
            .len();
        assert_eq!(
            visits,
            ping_gauges,
            "of {} gauge families",
            gauges::ALL.len()
        );
        assert!(
            many <= few + 20,
            "{few} allocations for 10 targets, {many} for 1,000"
        );
    }

    #[test]
    fn flagged_rounds_are_counted_by_reason_from_zero() {
        let cfg = crate::config::parse(
            "[[targets]]\nname = \"gw\"\nhost = \"127.0.0.1\"\nprobes = [\"ping\", \"trace\"]\n",
            "t.toml",
        )
        .unwrap();
        let t = TargetSeries::new(&cfg.targets[0]);
        let render = |t: &TargetSeries| {
            let mut out = String::new();
            write_targets(&[t], &[], &mut out);
            out
        };
        let text = render(&t);
        for probe in ["ping", "trace"] {
            for reason in ["late", "cpu", "memory"] {
                assert_eq!(flagged(&text, probe, reason), Some(0.0), "{probe} {reason}");
            }
        }
        let round = |quality| Sample {
            target: "gw".into(),
            probe: ProbeKind::PING,
            timestamp: SystemTime::now(),
            duration: Duration::from_millis(2),
            success: true,
            error: None,
            measurement: Measurement::None,
            quality,
        };
        t.observe(&round(RoundQuality::LATE | RoundQuality::CPU));
        t.observe(&round(RoundQuality::CPU));
        t.observe(&round(RoundQuality::empty()));
        let text = render(&t);
        assert_eq!(flagged(&text, "ping", "late"), Some(1.0));
        assert_eq!(flagged(&text, "ping", "cpu"), Some(2.0));
        assert_eq!(flagged(&text, "ping", "memory"), Some(0.0));
        assert_eq!(flagged(&text, "trace", "cpu"), Some(0.0));
        assert!(text.contains(&format!("# TYPE {} counter", PROBE_FAMILIES[2].name)));
    }

    /// A ping round of `r`, at a fixed time.
    fn ping_round(r: Option<PingReport>, success: bool) -> Sample {
        Sample {
            target: "gw".into(),
            probe: ProbeKind::PING,
            timestamp: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            duration: Duration::from_micros(2_004_100),
            success,
            error: None,
            measurement: r.map_or(Measurement::None, Measurement::from),
            quality: RoundQuality::empty(),
        }
    }

    /// A target named `name` running `kind` alone, one named "both" running ping and trace,
    /// the device label, and their series as written before any round.
    fn alone_and_both(
        name: &str,
        kind: &str,
    ) -> (TargetSeries, TargetSeries, [(String, String); 1], String) {
        let cfg = crate::config::parse(
            &format!(
                "[[targets]]\nname = \"{name}\"\nhost = \"127.0.0.1\"\nprobes = [\"{kind}\"]\n\
                 labels = {{ site = \"lab\" }}\n\
                 [[targets]]\nname = \"both\"\nhost = \"127.0.0.2\"\nprobes = [\"ping\", \"trace\"]\n"
            ),
            "t.toml",
        )
        .unwrap();
        let t = TargetSeries::new(&cfg.targets[0]);
        let both = TargetSeries::new(&cfg.targets[1]);
        let device = [("device".to_string(), "probe-1".to_string())];
        let mut text = String::new();
        write_targets(&[&t, &both], &device, &mut text);
        (t, both, device, text)
    }

    /// Ping targets' series (one running ping alone, one with trace too), before their first
    /// round and after rounds with replies, with and without a report, are those the daemon
    /// wrote when ping was a built-in kind (committed as written then): names, labels, help,
    /// order and values.
    #[test]
    fn ping_targets_series_are_those_of_the_built_in_kind() {
        let (t, both, device, mut text) = alone_and_both("gw", "ping");
        let us = Duration::from_micros;
        let answered = PingReport {
            address: Some("127.0.0.1".parse().unwrap()),
            sent: 5,
            received: 4,
            duplicates: 1,
            icmp_errors: 0,
            rtts: vec![us(40), us(900), us(1_500), us(2_600)],
            kernel_send_stamps: 4,
        };
        let unreachable = PingReport {
            sent: 5,
            icmp_errors: 2,
            ..PingReport::default()
        };
        t.observe(&ping_round(Some(answered), true));
        t.observe(&ping_round(Some(unreachable), false));
        t.observe(&ping_round(None, false));
        both.observe(&ping_round(
            Some(PingReport {
                sent: 1,
                received: 1,
                rtts: vec![us(30_000_000)],
                ..PingReport::default()
            }),
            true,
        ));
        text.push_str("# after rounds\n");
        write_targets(&[&t, &both], &device, &mut text);
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src/metrics/testdata/ping-target.prom"
        );
        if std::env::var_os("WRITE_PING_FIXTURE").is_some() {
            std::fs::write(path, &text).unwrap();
        }
        assert_eq!(text, include_str!("testdata/ping-target.prom"));
    }

    /// A trace round of `r`, at a fixed time.
    fn trace_round(r: Option<vantage_core::TraceReport>, success: bool) -> Sample {
        Sample {
            target: "up".into(),
            probe: ProbeKind::TRACE,
            timestamp: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            duration: Duration::from_micros(1_503_200),
            success,
            error: None,
            measurement: r.map_or(Measurement::None, Measurement::from),
            quality: RoundQuality::empty(),
        }
    }

    /// A hop of a trace round: its responders, RTTs (µs) and probes sent.
    /// Trace targets' series (one running trace alone, one with ping too), before their first
    /// round and after rounds with a path, a changed and partly reached path (held back by the
    /// rate limit) and no report, are those the daemon wrote when trace was a built-in kind
    /// (committed as written then; the rate counters since): names, labels, help, order and
    /// values.
    #[test]
    fn trace_targets_series_are_those_of_the_built_in_kind() {
        let (t, both, device, mut text) = alone_and_both("up", "trace");
        let mut balanced = trace_hop(2, &["10.0.1.1", "10.0.1.2"], &[900, 1_100, 1_300], 3);
        balanced.balancing = Some(vantage_core::Balancing::PerFlow);
        let first = vantage_core::TraceReport {
            address: Some("127.0.0.1".parse().unwrap()),
            reached: true,
            flows: 2,
            flows_reached: 2,
            hops: vec![
                trace_hop(1, &["10.0.0.1"], &[400, 500, 600], 3),
                balanced,
                trace_hop(3, &[], &[], 3),
                trace_hop(4, &["127.0.0.1"], &[2_000, 2_400], 3),
            ],
            path_hash: 0xdead_beef,
            paths_known: 2,
            ..Default::default()
        };
        let changed = vantage_core::TraceReport {
            reached: true,
            flows: 4,
            flows_reached: 3,
            hops: vec![
                trace_hop(1, &["10.0.0.1"], &[450], 1),
                trace_hop(2, &["127.0.0.1"], &[1_000, 3_000], 2),
            ],
            path_hash: 42,
            path_changed: true,
            paths_known: 3,
            rate_limited: true,
            ..Default::default()
        };
        t.observe(&trace_round(
            Some(vantage_core::TraceReport::default()),
            false,
        ));
        t.observe(&trace_round(Some(changed), true));
        both.observe(&trace_round(Some(first), true));
        both.observe(&trace_round(None, false));
        text.push_str("# after rounds\n");
        write_targets(&[&t, &both], &device, &mut text);
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src/metrics/testdata/trace-target.prom"
        );
        if std::env::var_os("WRITE_TRACE_FIXTURE").is_some() {
            std::fs::write(path, &text).unwrap();
        }
        assert_eq!(text, include_str!("testdata/trace-target.prom"));
    }

    /// A DNS round of `r`, at a fixed time.
    fn dns_round(r: Option<DnsReport>, success: bool) -> Sample {
        Sample {
            target: "resolver".into(),
            probe: ProbeKind::DNS,
            timestamp: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            duration: Duration::from_micros(21_300),
            success,
            error: None,
            measurement: r.map_or(Measurement::None, Measurement::from),
            quality: RoundQuality::empty(),
        }
    }

    /// A DNS target's series, before its first round and after rounds with and without an
    /// answer, are those the daemon wrote when DNS was a built-in kind (committed as written
    /// then): names, labels, help, order and values.
    #[test]
    fn a_dns_targets_series_are_those_of_the_built_in_kind() {
        let cfg = crate::config::parse(
            "[[targets]]\nname = \"resolver\"\nhost = \"127.0.0.1\"\nprobes = [\"dns\"]\n\
             labels = { site = \"lab\" }\ndns = { query = \"example.com\" }\n",
            "t.toml",
        )
        .unwrap();
        let t = TargetSeries::new(&cfg.targets[0]);
        let device = [("device".to_string(), "probe-1".to_string())];
        let mut text = String::new();
        write_targets(&[&t], &device, &mut text);
        let us = Duration::from_micros;
        let answered = DnsReport {
            rcode: Some(3),
            authority_records: 1,
            additional_records: 1,
            lookup: Some(us(20_800)),
            phases: DnsPhases {
                connect: Some(us(300)),
                request: Some(us(20_400)),
                ..DnsPhases::default()
            },
            truncated_retry: true,
            stray_datagrams: 2,
            validation_failures: vec!["no answers".into()],
            ..DnsReport::default()
        };
        t.observe(&dns_round(Some(answered), false));
        t.observe(&dns_round(Some(DnsReport::default()), false));
        t.observe(&dns_round(None, false));
        text.push_str("# after three rounds\n");
        write_targets(&[&t], &device, &mut text);
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src/metrics/testdata/dns-target.prom"
        );
        if std::env::var_os("WRITE_DNS_FIXTURE").is_some() {
            std::fs::write(path, &text).unwrap();
        }
        assert_eq!(text, include_str!("testdata/dns-target.prom"));
    }
}
