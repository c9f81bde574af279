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
            "not one of udp, tcp, tls, https",
        ),
        (
            vec!["dns", "127.0.0.1", "example.test", "--server-name", "x"],
            "--server-name: only applies to transport = \"tls\" or \"https\" (transport is udp)",
        ),
        (
            vec![
                "dns",
                "127.0.0.1",
                "example.test",
                "-T",
                "tls",
                "--doh-path",
                "/q",
            ],
            "--doh-path: only applies to transport = \"https\" (transport is tls)",
        ),
        (
            vec![
                "dns",
                "127.0.0.1",
                "example.test",
                "-T",
                "https",
                "--doh-path",
                "q",
            ],
            "--doh-path",
        ),
        // The config's own ranges and rules, named by the flag.
        (
            vec!["dns", "127.0.0.1", "example.test", "--edns-size", "100"],
            "--edns-size",
        ),
        (
            vec![
                "dns",
                "127.0.0.1",
                "example.test",
                "--dnssec",
                "--edns-size",
                "0",
            ],
            "--dnssec",
        ),
        (
            vec!["dns", "127.0.0.1", "example.test", "-W", "soon"],
            "--timeout",
        ),
        (
            vec!["dns", "127.0.0.1", "example.test", "--valid-rcodes", "FINE"],
            "--valid-rcodes",
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

# /probe reaches only well-known DNS ports by default; the responder has its own.
[probe_endpoint]
ports = {{ dns = [{port}] }}

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

    // Until one scrape shows every target's latest round as it should be: on a loaded machine
    // any round may miss its 300 ms timeout, and the next one then answers again.
    let mut m = String::new();
    wait_until(Duration::from_secs(30), || {
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
            && metric(&m, r#"vantage_dns_rcode{rcode="NXDOMAIN",target="nx"}"#) == Some(1.0)
            && metric(
                &m,
                r#"vantage_dns_rcode{rcode="NOERROR",target="bad-answer"}"#,
            ) == Some(1.0)
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
    assert!(body.contains("dns.query: is required"), "{body}");
    let (s, body) = http_get(addr, "/probe?target=127.0.0.1&module=dns&query=x&type=AXFR").unwrap();
    assert_eq!(s, 400);
    assert!(body.contains("zone transfer"), "{body}");
    let (s, body) = http_get(addr, "/probe?target=system&module=ping").unwrap();
    assert_eq!(s, 400, "{body}");

    // transport and port: the responder listens on UDP at its own port only.
    let probe = |extra: &str| {
        http_get(
            addr,
            &format!("/probe?target=127.0.0.1&module=dns&query=www.example.test{extra}"),
        )
        .unwrap()
    };
    let (s, body) = probe(&format!("&port={port}"));
    assert_eq!(s, 200, "{body}");
    assert_eq!(metric(&body, "vantage_probe_success"), Some(1.0), "{body}");
    assert_eq!(
        metric(&body, r#"vantage_dns_rcode{rcode="NOERROR"}"#),
        Some(1.0),
        "{body}"
    );
    let (s, body) = probe(&format!("&port={port}&transport=udp"));
    assert_eq!(s, 200, "{body}");
    assert_eq!(metric(&body, "vantage_probe_success"), Some(1.0), "{body}");
    // Nothing listens on TCP there.
    let (s, body) = probe(&format!("&port={port}&transport=tcp"));
    assert_eq!(s, 200, "{body}");
    assert_eq!(metric(&body, "vantage_probe_success"), Some(0.0), "{body}");
    for (extra, want) in [
        (
            "&transport=quic".to_string(),
            "transport: \"quic\" is not one of udp, tcp, tls, https",
        ),
        (
            "&port=0".to_string(),
            "port: must be between 1 and 65535, got 0",
        ),
        (
            "&port=70000".to_string(),
            "port: must be between 1 and 65535, got 70000",
        ),
        (
            "&port=dns".to_string(),
            "port: \"dns\" is not a whole number",
        ),
    ] {
        let (s, body) = probe(&extra);
        assert_eq!(s, 400, "{extra}: {body}");
        assert!(body.contains(want), "{extra}: {body}");
    }
    let (s, body) = http_get(addr, "/probe?target=127.0.0.1&module=ping&transport=tcp").unwrap();
    assert_eq!(s, 400);
    assert!(
        body.contains("transport applies to module=dns only"),
        "{body}"
    );
    let (s, body) = http_get(addr, "/probe?target=127.0.0.1&module=trace&port=53").unwrap();
    assert_eq!(s, 400);
    assert!(body.contains("port applies to module=dns only"), "{body}");
}

/// unbound on loopback serving DNS over HTTPS with a certificate made here; killed on drop.
struct DohUnbound {
    port: u16,
    _proc: Proc,
    _dir: TempDir,
}

impl DohUnbound {
    fn start() -> Option<Self> {
        let unbound = ["/usr/sbin/unbound", "/usr/bin/unbound"]
            .into_iter()
            .find(|p| std::path::Path::new(p).is_file());
        if !require(unbound.is_some(), "unbound (scripts/deps.d/dns.apt)") {
            return None;
        }
        let dir = TempDir::new("dns-doh");
        let cert =
            rcgen::generate_simple_self_signed(vec!["dns.example.test".to_string()]).unwrap();
        std::fs::write(dir.path("cert.pem"), cert.cert.pem()).unwrap();
        std::fs::write(dir.path("key.pem"), cert.key_pair.serialize_pem()).unwrap();
        let port = free_port();
        let d = dir.0.display();
        let conf = format!(
            r#"server:
    interface: 127.0.0.1@{port}
    https-port: {port}
    tls-service-key: "{d}/key.pem"
    tls-service-pem: "{d}/cert.pem"
    do-ip6: no
    do-daemonize: no
    username: ""
    chroot: ""
    directory: "{d}"
    pidfile: ""
    use-syslog: no
    logfile: ""
    num-threads: 1
    access-control: 127.0.0.0/8 allow
    module-config: "iterator"
    local-zone: "test." nodefault
    local-zone: "example.test." static
    local-data: "www.example.test. 300 IN A 192.0.2.10"
"#
        );
        std::fs::write(dir.path("unbound.conf"), conf).unwrap();
        let log = std::fs::File::create(dir.path("unbound.log")).unwrap();
        let proc = Proc(
            Command::new(unbound.unwrap())
                .args(["-d", "-c"])
                .arg(dir.path("unbound.conf"))
                .stdout(std::process::Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        let ub = DohUnbound {
            port,
            _proc: proc,
            _dir: dir,
        };
        let log = ub._dir.path("unbound.log");
        wait_until(Duration::from_secs(10), || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            assert!(!text.contains("fatal"), "unbound did not start:\n{text}");
            text.contains("start of service")
        });
        Some(ub)
    }
}

#[test]
fn one_shot_query_over_https() {
    let Some(ub) = DohUnbound::start() else {
        return;
    };
    let port = ub.port.to_string();
    let args = [
        "dns",
        "127.0.0.1",
        "www.example.test",
        "-T",
        "https",
        "-p",
        &port,
        "--server-name",
        "dns.example.test",
        "--insecure",
    ];
    let (code, out, err) = vantage(&args);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("over https (POST /dns-query)"), "{out}");
    assert!(out.contains("status: NOERROR"), "{out}");
    assert!(
        out.contains("www.example.test. 300 IN A 192.0.2.10"),
        "{out}"
    );
    assert!(
        !out.contains("tls -,") && !out.contains("request -;"),
        "{out}"
    );

    let mut get = args.to_vec();
    get.push("--doh-get");
    let (code, out, err) = vantage(&get);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("over https (GET /dns-query)"), "{out}");

    let mut wrong = args.to_vec();
    wrong.extend(["--doh-path", "/nope"]);
    let (code, out, err) = vantage(&wrong);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("/nope answered HTTP status 404"), "{err}");

    // Without --insecure the self-signed certificate is refused.
    let (code, _, err) = vantage(&args[..args.len() - 1]);
    assert_eq!(code, 1);
    assert!(err.contains("TLS handshake"), "{err}");
}
