//! `vantage dns` and the daemon's DNS metrics, against a small DNS responder on loopback.

mod support;

use std::process::Command;
use std::time::Duration;

use support::*;

fn vantage(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn one_shot_query_prints_the_answer_and_exits_by_rcode() {
    let r = Responder::start();
    let port = r.addr.port().to_string();
    let (code, out, err) = vantage(&["dns", "127.0.0.1", "www.example.test", "A", "-p", &port]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("status: NOERROR"), "{out}");
    assert!(out.contains("www.example.test. 60 IN A 192.0.2.1"), "{out}");
    assert!(out.contains("over udp"), "{out}");

    let (code, out, err) = vantage(&["dns", "127.0.0.1", "nx.example.test", "-p", &port]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("status: NXDOMAIN"), "{out}");
    assert!(
        err.contains("rcode NXDOMAIN is not one of the expected (NOERROR)"),
        "{err}"
    );
    let (code, _, _) = vantage(&[
        "dns",
        "127.0.0.1",
        "nx.example.test",
        "-p",
        &port,
        "--valid-rcodes",
        "NOERROR,NXDOMAIN",
    ]);
    assert_eq!(code, 0);

    let (code, _, err) = vantage(&[
        "dns",
        "127.0.0.1",
        "silent.example.test",
        "-p",
        &port,
        "-W",
        "300ms",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("timeout"), "{err}");

    for (args, want) in [
        (
            vec!["dns", "127.0.0.1", "example.test", "AXFR"],
            "zone transfer",
        ),
        (vec!["dns", "a;b", "example.test"], "server contains ';'"),
        (
            vec!["dns", "127.0.0.1", "example.test", "--transport", "quic"],
            "not one of udp, tcp, tls",
        ),
        (
            vec!["dns", "127.0.0.1", "example.test", "--server-name", "x"],
            "need --transport tls",
        ),
    ] {
        let (code, _, err) = vantage(&args);
        assert_eq!(code, 2, "{args:?}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

#[test]
fn daemon_exports_dns_metrics() {
    let r = Responder::start();
    let port = r.addr.port();
    let dir = TempDir::new("dns-metrics");
    let config = dir.path("vantage.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[defaults.dns]
port = {port}
timeout = "300ms"

[[targets]]
name = "ok"
host = "127.0.0.1"
probes = ["dns"]
interval = "500ms"
dns = {{ query = "www.example.test", answer_contains = ["192.0.2.1"] }}

[[targets]]
name = "nx"
host = "127.0.0.1"
probes = ["dns"]
interval = "500ms"
dns = {{ query = "nx.example.test" }}

[[targets]]
name = "bad-answer"
host = "127.0.0.1"
probes = ["dns"]
interval = "500ms"
dns = {{ query = "www.example.test", answer_contains = ["192.0.2.99"] }}

[[targets]]
name = "silent"
host = "127.0.0.1"
probes = ["dns"]
interval = "500ms"
dns = {{ query = "silent.example.test" }}
"#
        ),
    )
    .unwrap();
    let (_daemon, addr) = start_daemon(Some(&config), &dir.0);

    // Series exist from the start, before any round.
    let (_, m) = http_get(addr, "/metrics").unwrap();
    for series in [
        r#"vantage_dns_phase_seconds{phase="connect",target="ok"}"#,
        r#"vantage_dns_phase_seconds{phase="request",target="silent"}"#,
        r#"vantage_dns_rcode{rcode="SERVFAIL",target="ok"}"#,
        r#"vantage_dns_validation_failures_total{target="bad-answer"}"#,
        r#"vantage_dns_lookup_seconds_count{target="ok"}"#,
    ] {
        assert!(m.contains(series), "{series} missing:\n{m}");
    }

    let mut m = String::new();
    wait_until(Duration::from_secs(10), || {
        m = http_get(addr, "/metrics").unwrap().1;
        metric(
            &m,
            r#"vantage_dns_validation_failures_total{target="bad-answer"}"#,
        ) >= Some(1.0)
            && metric(&m, r#"vantage_dns_lookup_seconds_count{target="nx"}"#) >= Some(1.0)
            && metric(
                &m,
                r#"vantage_probe_rounds_total{probe="dns",result="failure",target="silent"}"#,
            ) >= Some(1.0)
            && metric(&m, r#"vantage_probe_success{probe="dns",target="ok"}"#) == Some(1.0)
    });
    let v = |s: &str| metric(&m, s).unwrap_or_else(|| panic!("{s} missing:\n{m}"));
    assert_eq!(v(r#"vantage_dns_rcode{rcode="NOERROR",target="ok"}"#), 1.0);
    assert_eq!(v(r#"vantage_dns_rcode{rcode="NXDOMAIN",target="ok"}"#), 0.0);
    assert_eq!(v(r#"vantage_dns_answer_records{target="ok"}"#), 1.0);
    assert!(v(r#"vantage_dns_phase_seconds{phase="request",target="ok"}"#) > 0.0);
    assert_eq!(
        v(r#"vantage_dns_phase_seconds{phase="connect",target="ok"}"#),
        0.0
    );
    assert_eq!(
        v(r#"vantage_dns_validation_failures_total{target="ok"}"#),
        0.0
    );

    assert_eq!(v(r#"vantage_probe_success{probe="dns",target="nx"}"#), 0.0);
    assert_eq!(v(r#"vantage_dns_rcode{rcode="NXDOMAIN",target="nx"}"#), 1.0);
    assert_eq!(v(r#"vantage_dns_rcode{rcode="NOERROR",target="nx"}"#), 0.0);
    assert_eq!(v(r#"vantage_dns_answer_records{target="nx"}"#), 0.0);
    // An unexpected rcode is not an answer-check failure.
    assert_eq!(
        v(r#"vantage_dns_validation_failures_total{target="nx"}"#),
        0.0
    );

    assert_eq!(
        v(r#"vantage_probe_success{probe="dns",target="bad-answer"}"#),
        0.0
    );
    assert_eq!(
        v(r#"vantage_dns_rcode{rcode="NOERROR",target="bad-answer"}"#),
        1.0
    );

    assert_eq!(
        v(r#"vantage_probe_success{probe="dns",target="silent"}"#),
        0.0
    );
    assert_eq!(
        v(r#"vantage_dns_rcode{rcode="NOERROR",target="silent"}"#),
        0.0
    );
    assert_eq!(
        v(r#"vantage_dns_lookup_seconds_count{target="silent"}"#),
        0.0
    );

    // /probe: module=dns needs a query.
    let (s, body) = http_get(addr, "/probe?target=127.0.0.1&module=dns").unwrap();
    assert_eq!(s, 400);
    assert!(body.contains("query parameter is missing"), "{body}");
    let (s, body) = http_get(addr, "/probe?target=127.0.0.1&module=dns&query=x&type=AXFR").unwrap();
    assert_eq!(s, 400);
    assert!(body.contains("zone transfer"), "{body}");
    let (s, body) = http_get(addr, "/probe?target=system&module=ping").unwrap();
    assert_eq!(s, 400, "{body}");
}
