//! Config files from `testdata/`: every good file loads, every bad file fails with the message
//! written on its first line (`# expect: LINE: FIELD: MESSAGE`).

use std::path::Path;

use vantage_core::{Config, ProbeKind};

vantage_testkit::config_file_tests!(Config::load);

/// A mistake in `[defaults.KIND]` is found for every kind, even where no target runs it yet.
#[test]
fn a_bad_defaults_section_is_an_error_for_every_kind_whatever_runs() {
    for m in vantage_core::MODULES {
        let name = m.name();
        let other = if name == "ping" { "trace" } else { "ping" };
        let text = format!(
            "[defaults.{name}]\ncolour = 1\n\n[[targets]]\nname = \"a\"\nhost = \"127.0.0.1\"\nprobes = [\"{other}\"]\n"
        );
        let e = Config::parse(&text, "d.toml").unwrap_err().to_string();
        assert!(
            e.contains(&format!(
                "d.toml:2:1: defaults.{name}.colour: unknown field `colour`"
            )),
            "{name}: {e}"
        );
    }
}

#[test]
fn every_problem_is_reported_not_just_the_first() {
    let text = r#"
[[targets]]
name = "ok"
host = "127.0.0.1"
probes = ["ping"]

[[targets]]
name = "bad host"
host = "a b"
probes = ["ping"]
interval = "0s"

[[targets]]
name = "x"
host = "127.0.0.1"
probes = ["ping"]
bogus = 1
"#;
    let e = Config::parse(text, "t.toml").unwrap_err();
    let fields: Vec<_> = e.errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "targets[1].name",
            "targets[1].host",
            "targets[1].interval",
            "targets[2].bogus"
        ],
        "{e}"
    );
    assert_eq!(e.errors[1].line, Some(9));
}

#[test]
fn minimal_form_means_what_it_says() {
    let c = Config::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testdata/good/minimal.toml"),
    )
    .unwrap();
    let t = &c.targets[0];
    assert_eq!(t.name, "gateway");
    assert_eq!(t.host.to_string(), "192.168.1.1");
    assert_eq!(
        t.probes,
        vec![(ProbeKind::PING, std::time::Duration::from_secs(1))]
    );
    assert_eq!(t.labels.get("site").map(String::as_str), Some("office"));
}

#[test]
fn defaults_apply_and_targets_override_them() {
    let c =
        Config::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testdata/good/full.toml"))
            .unwrap();
    let a = c.target("router.lan").unwrap();
    assert_eq!(
        a.interval(ProbeKind::PING),
        Some(std::time::Duration::from_secs(5))
    );
    assert_eq!(
        a.options_or_default::<vantage_core::PingOptions>().packets,
        3
    );
    assert_eq!(
        a.options_or_default::<vantage_core::PingOptions>().tos,
        Some(46 << 2)
    );
    assert_eq!(
        a.options_or_default::<vantage_core::PingOptions>().ttl,
        Some(64)
    );
    let b = c.target("v6").unwrap();
    // The target's tos replaces the default dscp.
    assert_eq!(
        b.options_or_default::<vantage_core::PingOptions>().tos,
        Some(0)
    );
    assert_eq!(
        b.options_or_default::<vantage_core::PingOptions>().packets,
        3
    );
    assert_eq!(
        b.options_or_default::<vantage_core::PingOptions>()
            .ip_protocol,
        vantage_core::IpProtocol::Auto
    );
}

#[test]
fn a_bad_default_is_reported_once_not_per_target() {
    let f = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/testdata/bad/dns-defaults-timeout-over-interval.toml");
    let e = Config::load(&f).unwrap_err();
    assert_eq!(e.errors.len(), 1, "{e}");
}

#[test]
fn the_device_section_loads_with_its_defaults() {
    let c = Config::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testdata/good/device.toml"),
    )
    .unwrap();
    assert_eq!(c.device.name.as_deref(), Some("probe-office-1"));
    assert_eq!(
        c.device.labels.get("room").map(String::as_str),
        Some("2-14")
    );
    assert_eq!(c.device.trace_probes_per_second, 400);
    let bare = Config::parse(
        "[[targets]]\nname = \"a\"\nhost = \"127.0.0.1\"\nprobes = [\"ping\"]\n",
        "t",
    )
    .unwrap();
    assert!(bare.device.name.is_none() && bare.device.labels.is_empty());
}

#[test]
fn trace_rate_limits_resolve_per_target_and_per_device() {
    use vantage_core::TraceOptions;
    let c = Config::parse(
        "[device]\ntrace_probes_per_second = 400\n[defaults.trace]\nprobes_per_second = 50\n\
         [[targets]]\nname = \"a\"\nhost = \"192.0.2.1\"\nprobes = [\"trace\"]\n\
         [[targets]]\nname = \"b\"\nhost = \"192.0.2.2\"\nprobes = [\"trace\"]\n\
         trace = { probes_per_second = 20 }\n",
        "t",
    )
    .unwrap();
    assert_eq!(c.device.trace_probes_per_second, 400);
    let rate = |i: usize| {
        c.targets[i]
            .options_or_default::<TraceOptions>()
            .probes_per_second
    };
    assert_eq!((rate(0), rate(1)), (50, 20));
    let bare = Config::parse("", "t").unwrap();
    assert_eq!(
        bare.device.trace_probes_per_second,
        vantage_core::defaults::DEVICE_TRACE_PROBES_PER_SECOND
    );
    assert_eq!(
        TraceOptions::default().probes_per_second,
        vantage_core::defaults::TRACE_PROBES_PER_SECOND
    );
    // A bad default is named where it is written.
    let e = Config::parse(
        "[defaults.trace]\nprobes_per_second = 20000\n[[targets]]\nname = \"a\"\nhost = \"192.0.2.1\"\nprobes = [\"trace\"]\n",
        "t",
    )
    .unwrap_err();
    assert_eq!(e.errors.len(), 1, "{e}");
    assert_eq!(e.errors[0].field, "defaults.trace.probes_per_second");
    assert_eq!(
        e.errors[0].message,
        "must be between 1 and 12800, got 20000"
    );
}

#[test]
fn a_provisioned_file_may_not_set_device_sections() {
    let e = Config::parse_provisioned(
        "[[targets]]\nname = \"a\"\nhost = \"127.0.0.1\"\nprobes = [\"ping\"]\n[device]\nname = \"x\"\n",
        "remote",
    )
    .unwrap_err();
    assert_eq!(e.errors[0].line, Some(5));
    assert_eq!(e.errors[0].field, "device");
    let ok = Config::parse_provisioned("[defaults]\ninterval = \"2s\"\n[[targets]]\nname = \"a\"\nhost = \"127.0.0.1\"\nprobes = [\"ping\"]\n", "remote").unwrap();
    assert_eq!(ok.targets.len(), 1);
}

#[test]
fn trace_options_resolve_with_defaults() {
    use std::time::Duration;
    use vantage_core::{TraceProtocol, TraceSockets};
    let c =
        Config::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testdata/good/trace.toml"))
            .unwrap();
    let up = c.target("upstream").unwrap();
    assert_eq!(
        up.interval(ProbeKind::TRACE),
        Some(Duration::from_secs(120))
    );
    assert_eq!(
        up.options_or_default::<vantage_core::TraceOptions>()
            .protocol,
        TraceProtocol::Udp
    );
    assert_eq!(
        up.options_or_default::<vantage_core::TraceOptions>()
            .max_hops,
        30
    );
    assert_eq!(
        up.options_or_default::<vantage_core::TraceOptions>().port,
        443,
        "the default port applies"
    );
    assert_eq!(
        up.options_or_default::<vantage_core::TraceOptions>()
            .timeout,
        Duration::from_millis(1500)
    );
    assert_eq!(
        up.options_or_default::<vantage_core::TraceOptions>().tos,
        Some(10 << 2)
    );
    assert_eq!(
        up.options_or_default::<vantage_core::TraceOptions>()
            .probes_per_hop,
        3
    );
    assert_eq!(
        up.options_or_default::<vantage_core::TraceOptions>()
            .size_for(false),
        60
    );
    assert_eq!(
        up.options_or_default::<vantage_core::TraceOptions>()
            .size_for(true),
        80
    );
    let web = c.target("web").unwrap();
    assert_eq!(
        web.options_or_default::<vantage_core::TraceOptions>()
            .protocol,
        TraceProtocol::Tcp
    );
    assert_eq!(
        (
            web.options_or_default::<vantage_core::TraceOptions>()
                .first_ttl,
            web.options_or_default::<vantage_core::TraceOptions>()
                .max_hops
        ),
        (2, 20)
    );
    assert_eq!(
        web.options_or_default::<vantage_core::TraceOptions>().flows,
        4
    );
    assert_eq!(
        (
            web.options_or_default::<vantage_core::TraceOptions>()
                .discovery,
            web.options_or_default::<vantage_core::TraceOptions>()
                .probe_budget
        ),
        (vantage_core::TraceDiscovery::Flows, 500)
    );
    assert_eq!(
        (
            up.options_or_default::<vantage_core::TraceOptions>()
                .discovery,
            up.options_or_default::<vantage_core::TraceOptions>()
                .probe_budget
        ),
        (
            vantage_core::TraceDiscovery::Mda,
            vantage_core::defaults::TRACE_PROBE_BUDGET
        )
    );
    assert_eq!(
        web.options_or_default::<vantage_core::TraceOptions>()
            .sockets,
        TraceSockets::Raw
    );
    assert_eq!(
        web.options_or_default::<vantage_core::TraceOptions>()
            .spacing,
        Duration::ZERO
    );
    assert_eq!(
        web.options_or_default::<vantage_core::TraceOptions>()
            .path_window,
        Duration::from_secs(1800)
    );
    assert_eq!(web.interval(ProbeKind::PING), Some(Duration::from_secs(1)));
    let v6 = c.target("v6").unwrap();
    assert_eq!(
        v6.options_or_default::<vantage_core::TraceOptions>()
            .protocol,
        TraceProtocol::Icmp
    );
    assert_eq!(
        v6.options_or_default::<vantage_core::TraceOptions>().port,
        0
    );
    assert_eq!(
        v6.options_or_default::<vantage_core::TraceOptions>().tos,
        Some(0),
        "the target's tos replaces the default dscp"
    );
    assert_eq!(
        v6.options_or_default::<vantage_core::TraceOptions>()
            .size_for(true),
        120
    );
    assert_eq!(v6.interval(ProbeKind::TRACE), Some(Duration::from_secs(30)));
}

#[test]
fn a_bad_default_is_reported_once_where_it_is_written() {
    let text = r#"
[defaults.trace]
flows = 99

[[targets]]
name = "a"
host = "192.0.2.1"
probes = ["trace"]

[[targets]]
name = "b"
host = "192.0.2.2"
probes = ["trace"]
"#;
    let e = Config::parse(text, "t.toml").unwrap_err();
    assert_eq!(e.errors.len(), 1, "{e}");
    assert_eq!(e.errors[0].field, "defaults.trace.flows");
    assert_eq!(e.errors[0].line, Some(3));
}

/// The README's config reference quotes the ranges `defaults.rs` holds each setting to.
#[test]
fn the_readme_quotes_the_documented_ranges() {
    use std::time::Duration;
    use vantage_core::config::parse_duration;
    use vantage_core::defaults::{self as D, Bounds};
    use vantage_testkit::readme_range_mismatches;
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("README.md");
    let ints: &[(&str, &str, Bounds<i64>)] = &[
        ("Ping options", "packets", D::PING_PACKETS_RANGE),
        ("Ping options", "size", D::PING_SIZE_RANGE),
        ("Ping options", "ttl", D::TTL_RANGE),
        ("Trace options", "port", D::PORT_RANGE),
        ("Trace options", "first_ttl", D::TTL_RANGE),
        ("Trace options", "max_hops", D::TTL_RANGE),
        (
            "Trace options",
            "probes_per_hop",
            D::TRACE_PROBES_PER_HOP_RANGE,
        ),
        ("Trace options", "flows", D::TRACE_FLOWS_RANGE),
        ("Trace options", "probe_budget", D::TRACE_PROBE_BUDGET_RANGE),
        (
            "Trace options",
            "probes_per_second",
            D::TRACE_PROBES_PER_SECOND_RANGE,
        ),
        (
            "`[device]`",
            "trace_probes_per_second",
            D::DEVICE_TRACE_PROBES_PER_SECOND_RANGE,
        ),
        ("DNS options", "port", D::PORT_RANGE),
        ("DNS options", "edns_udp_size", D::DNS_EDNS_UDP_SIZE_RANGE),
        ("DNS options", "min_answers", D::DNS_MIN_ANSWERS_RANGE),
    ];
    let durations: &[(&str, &str, Bounds<Duration>)] = &[
        ("Ping options", "interval", D::INTERVAL_RANGE),
        ("Ping options", "spacing", D::PING_SPACING_RANGE),
        ("Ping options", "timeout", D::TIMEOUT_RANGE),
        ("Trace options", "interval", D::INTERVAL_RANGE),
        ("Trace options", "timeout", D::TIMEOUT_RANGE),
        ("Trace options", "path_window", D::TRACE_PATH_WINDOW_RANGE),
        ("DNS options", "interval", D::INTERVAL_RANGE),
        ("DNS options", "timeout", D::TIMEOUT_RANGE),
    ];
    let ints: Vec<_> = ints
        .iter()
        .map(|(s, f, b)| (*s, *f, b.min, b.max))
        .collect();
    let durations: Vec<_> = durations
        .iter()
        .map(|(s, f, b)| (*s, *f, b.min, b.max))
        .collect();
    let wrong = readme_range_mismatches(&readme, &ints, &durations, |s| parse_duration(s).ok());
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
