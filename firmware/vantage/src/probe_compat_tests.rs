//! Blackbox module names rewritten into Vantage's, and rounds shown under blackbox's names.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use vantage_core::{DnsPhases, DnsReport, Measurement, PingReport, ProbeKind, Sample};

use super::*;

fn query(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn translated(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    translate(&query(pairs))
        .unwrap()
        .expect("a blackbox module")
}

#[test]
fn vantage_module_names_are_left_alone() {
    for m in ["ping", "dns", "trace", "tcp", "http"] {
        assert_eq!(
            translate(&query(&[("module", m), ("target", "x")])),
            Ok(None)
        );
    }
    assert_eq!(translate(&query(&[("target", "x")])), Ok(None));
    // `dns` is both: blackbox's with its `query_name`, Vantage's with `query`.
    let vantage = query(&[("module", "dns"), ("target", "x"), ("query", "a")]);
    assert_eq!(translate(&vantage), Ok(None));
}

#[test]
fn blackbox_modules_run_the_matching_kind() {
    let q = translated(&[("module", "icmp"), ("target", "127.0.0.1")]);
    assert_eq!(q["module"], "ping");
    assert_eq!(q["target"], "127.0.0.1");
    let q = translated(&[("module", "icmp_ipv6"), ("target", "::1")]);
    assert_eq!(
        (q["module"].as_str(), q["ip_protocol"].as_str()),
        ("ping", "ipv6")
    );
    let q = translated(&[("module", "tcp_connect"), ("target", "127.0.0.1:22")]);
    assert_eq!((q["module"].as_str(), q["attempts"].as_str()), ("tcp", "1"));
    // blackbox's http prober takes a target without a scheme as http://.
    let q = translated(&[("module", "http_2xx"), ("target", "example.com:8080/x")]);
    assert_eq!(q["target"], "http://example.com:8080/x");
    let q = translated(&[("module", "http_post_2xx"), ("target", "https://a/")]);
    assert_eq!(
        (q["target"].as_str(), q["method"].as_str()),
        ("https://a/", "POST")
    );
}

#[test]
fn blackbox_dns_targets_are_host_port_with_query_name_as_a_parameter() {
    let q = translated(&[
        ("module", "dns"),
        ("target", "127.0.0.1:5353"),
        ("query_name", "example.com"),
        ("query_type", "AAAA"),
    ]);
    assert_eq!(q["module"], "dns");
    assert_eq!(q["target"], "127.0.0.1");
    assert_eq!(q["port"], "5353");
    assert_eq!(
        (q["query"].as_str(), q["type"].as_str()),
        ("example.com", "AAAA")
    );
    let q = translated(&[
        ("module", "dns_tcp"),
        ("target", "[::1]:53"),
        ("query_name", "a"),
    ]);
    assert_eq!((q["target"].as_str(), q["port"].as_str()), ("::1", "53"));
    assert_eq!(q["transport"], "tcp");
    // Without a port the transport's default applies, as in blackbox.
    let q = translated(&[("module", "dns"), ("target", "::1"), ("query_name", "a")]);
    assert!(!q.contains_key("port") && q["target"] == "::1");
    let err = translate(&query(&[("module", "dns_udp"), ("target", "127.0.0.1:53")])).unwrap_err();
    assert!(err.contains("query_name parameter is missing"), "{err}");
}

fn sample(kind: ProbeKind, success: bool, m: Measurement) -> Sample {
    Sample {
        target: "probe".into(),
        probe: kind,
        timestamp: SystemTime::now(),
        duration: Duration::from_millis(250),
        success,
        error: None,
        measurement: m,
        quality: Default::default(),
    }
}

fn lookup(address: &str) -> Option<Lookup> {
    Some(Lookup {
        took: Duration::from_millis(3),
        address: Some(address.parse().unwrap()),
    })
}

#[test]
fn a_ping_round_shows_under_blackbox_names() {
    let r = PingReport {
        sent: 2,
        received: 2,
        rtts: vec![Duration::from_millis(1), Duration::from_millis(3)],
        ..PingReport::default()
    };
    let text = render(
        &sample(ProbeKind::PING, true, Measurement::from(r)),
        lookup("::1"),
    );
    for want in [
        "# TYPE probe_success gauge\nprobe_success 1\n",
        "probe_duration_seconds 0.25\n",
        "probe_icmp_duration_seconds{phase=\"rtt\"} 0.002\n",
        "probe_dns_lookup_time_seconds 0.003\n",
        "probe_ip_protocol 6\n",
    ] {
        assert!(text.contains(want), "{want:?} in\n{text}");
    }
    // Only blackbox's names, gauges only, each family once.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        assert!(line.starts_with("probe_"), "{line}");
    }
    assert!(
        !text.contains("counter") && !text.contains("histogram"),
        "{text}"
    );
    assert_eq!(text.matches("# TYPE probe_success ").count(), 1);
}

#[test]
fn a_dns_round_shows_its_phases_and_record_counts() {
    let r = DnsReport {
        rcode: Some(0),
        authority_records: 1,
        additional_records: 2,
        phases: DnsPhases {
            request: Some(Duration::from_millis(4)),
            ..DnsPhases::default()
        },
        lookup: Some(Duration::from_millis(4)),
        ..DnsReport::default()
    };
    let text = render(
        &sample(ProbeKind::DNS, true, Measurement::from(r)),
        lookup("127.0.0.1"),
    );
    for want in [
        "probe_success 1\n",
        "probe_dns_duration_seconds{phase=\"request\"} 0.004\n",
        "probe_dns_answer_rrs 0\n",
        "probe_dns_authority_rrs 1\n",
        "probe_dns_additional_rrs 2\n",
        "probe_ip_protocol 4\n",
    ] {
        assert!(text.contains(want), "{want:?} in\n{text}");
    }
}

#[test]
fn an_http_round_shows_status_phases_length_redirects_and_expiry() {
    let http = vantage_core::ModuleId::by_name("http").unwrap();
    let ms = serde_json::to_value(Duration::from_millis(1)).unwrap();
    let r = http.module().report_from_json(serde_json::json!({
        "status": 301,
        "redirects": 1,
        "phases": [ms, ms, ms, ms, ms],
        "content_length": 42,
        "cert_not_after": 1_900_000_000,
        "tls_version": "TLS 1.3",
    }));
    let m = Measurement::Module(r.unwrap());
    let text = render(&sample(ProbeKind::Module(http), false, m), None);
    for want in [
        "probe_success 0\n",
        "probe_http_status_code 301\n",
        "probe_http_content_length 42\n",
        "probe_http_uncompressed_body_length 42\n",
        "probe_http_redirects 1\n",
        "probe_ssl_earliest_cert_expiry 1900000000\n",
        "probe_tls_version_info{version=\"TLS 1.3\"} 1\n",
    ] {
        assert!(text.contains(want), "{want:?} in\n{text}");
    }
    for phase in ["resolve", "connect", "tls", "processing", "transfer"] {
        let want = format!("probe_http_duration_seconds{{phase=\"{phase}\"}} 0.001\n");
        assert!(text.contains(&want), "{want:?} in\n{text}");
    }
    // Without a lookup (none was made) its series are absent, not 0.
    assert!(!text.contains("probe_ip_protocol"), "{text}");
}
