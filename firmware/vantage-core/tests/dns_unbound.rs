//! The DNS probe against a real unbound, in a network namespace each test builds for itself.
//!
//! unbound serves a local zone the test writes, a zone that always fails (an auth-zone whose
//! primary never answers: SERVFAIL), a record set too big for a 512-byte UDP answer, and DNS
//! over TLS and over HTTPS (unbound speaks HTTP/2 through nghttp2) with a certificate the test
//! makes with openssl. The probe runs on a thread that has
//! joined the namespace, so its sockets live there; nothing leaves the namespace.
//!
//! Needs root, `ip`, `iptables`, `unbound` and `openssl`: without them the tests skip with the
//! reason, unless `VANTAGE_REQUIRE_ROOT_TESTS=1`, where they fail.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use vantage_core::net::KernelDns;
use vantage_core::{
    Config, DnsProbe, DnsReport, DnsTransport, Host, Probe, ProbeError, ProbeRequest, Sample,
    SystemClock,
};

const SERVER: &str = "192.0.2.53";

fn have(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
        .unwrap_or(false)
        || Path::new("/usr/sbin").join(cmd).is_file()
}

/// Whether the test can run; panics instead of skipping under `VANTAGE_REQUIRE_ROOT_TESTS=1`.
fn can_run() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let missing: Vec<&str> = ["ip", "iptables", "unbound", "openssl"]
        .into_iter()
        .filter(|c| !have(c))
        .collect();
    let why = if !root {
        "root (network namespaces)".to_string()
    } else if !missing.is_empty() {
        format!("{} (scripts/deps.d/dns.apt)", missing.join(", "))
    } else {
        return true;
    };
    if std::env::var("VANTAGE_REQUIRE_ROOT_TESTS").as_deref() == Ok("1") {
        panic!("this test needs {why}");
    }
    eprintln!("SKIPPED: needs {why}");
    false
}

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace with `SERVER` on its loopback; deleted on drop.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "vdns-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        run("ip", &["netns", "add", &name]);
        let ns = Netns(name);
        run("ip", &["-n", &ns.0, "link", "set", "lo", "up"]);
        run(
            "ip",
            &[
                "-n",
                &ns.0,
                "addr",
                "add",
                &format!("{SERVER}/32"),
                "dev",
                "lo",
            ],
        );
        ns
    }

    fn exec(&self, cmd: &str, args: &[&str]) {
        let mut all = vec!["netns", "exec", &self.0, cmd];
        all.extend_from_slice(args);
        run("ip", &all);
    }

    /// Runs `f` on a thread inside the namespace, with its own runtime.
    fn block_on<T: Send + 'static>(
        &self,
        f: impl std::future::Future<Output = T> + Send + 'static,
    ) -> T {
        let path = format!("/run/netns/{}", self.0);
        std::thread::spawn(move || {
            let ns = File::open(&path).unwrap();
            // SAFETY: a valid namespace fd; setns affects only this thread.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(f)
        })
        .join()
        .unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// unbound in the namespace; killed on drop (before the namespace goes).
struct Unbound {
    child: Child,
    dir: TempDir,
    // Dropped last.
    ns: Netns,
}

impl Drop for Unbound {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Unbound {
    fn start(tag: &str) -> Self {
        let ns = Netns::new(tag);
        let dir = std::env::temp_dir().join(format!("{}-unbound", ns.0));
        std::fs::create_dir_all(&dir).unwrap();
        let dir = TempDir(dir);
        let d = dir.0.display().to_string();
        // A CA and a server certificate it signs: webpki refuses a CA certificate as the
        // server's own.
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut ca = vec!["req", "-x509"];
        ca.extend_from_slice(&ec);
        let (ca_key, ca_pem) = (format!("{d}/ca.key"), format!("{d}/ca.pem"));
        ca.extend_from_slice(&["-keyout", &ca_key, "-out", &ca_pem]);
        ca.extend_from_slice(&["-subj", "/CN=Vantage test CA", "-days", "2"]);
        run("openssl", &ca);
        let mut csr = vec!["req"];
        csr.extend_from_slice(&ec);
        let (key, req) = (format!("{d}/key.pem"), format!("{d}/server.csr"));
        csr.extend_from_slice(&[
            "-keyout",
            &key,
            "-out",
            &req,
            "-subj",
            "/CN=dns.example.test",
        ]);
        run("openssl", &csr);
        let ext = format!("{d}/server.ext");
        std::fs::write(
            &ext,
            "subjectAltName=DNS:dns.example.test\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        let cert = format!("{d}/cert.pem");
        run(
            "openssl",
            &[
                "x509",
                "-req",
                "-in",
                &req,
                "-CA",
                &ca_pem,
                "-CAkey",
                &ca_key,
                "-CAcreateserial",
                "-out",
                &cert,
                "-days",
                "2",
                "-extfile",
                &ext,
            ],
        );
        let big: String = (0..20)
            .map(|i| {
                format!(
                    "    local-data: \"big.example.test. 60 IN TXT \\\"record {i:02} {}\\\"\"\n",
                    "x".repeat(90)
                )
            })
            .collect();
        let conf = format!(
            r#"server:
    interface: {SERVER}@53
    interface: {SERVER}@853
    interface: {SERVER}@443
    tls-port: 853
    https-port: 443
    http-endpoint: "/dns-query"
    tls-service-key: "{d}/key.pem"
    tls-service-pem: "{d}/cert.pem"
    do-daemonize: no
    username: ""
    chroot: ""
    directory: "{d}"
    pidfile: ""
    use-syslog: no
    logfile: ""
    verbosity: 1
    num-threads: 1
    access-control: 0.0.0.0/0 allow
    module-config: "iterator"
    local-zone: "test." nodefault
    local-zone: "example.test." static
    local-data: "www.example.test. 300 IN A 192.0.2.10"
    local-data: "www.example.test. 300 IN A 192.0.2.11"
    local-data: "www.example.test. 300 IN AAAA 2001:db8::10"
    local-data: "example.test. 300 IN MX 10 mx1.example.test."
    local-data: "example.test. 300 IN TXT \"v=spf1 -all\""
{big}
# A zone whose primary never answers is never loaded: unbound answers SERVFAIL for it.
auth-zone:
    name: "broken.test."
    primary: 127.0.0.1@9
    for-downstream: yes
    for-upstream: no
    fallback-enabled: no
"#
        );
        let conf_path = format!("{d}/unbound.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let log = File::create(format!("{d}/unbound.log")).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.0, "unbound", "-d", "-c", &conf_path])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let ub = Unbound { child, dir, ns };
        let started = Instant::now();
        loop {
            let log = std::fs::read_to_string(format!("{d}/unbound.log")).unwrap_or_default();
            if log.contains("start of service") {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10) && !log.contains("fatal"),
                "unbound did not start:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        ub
    }

    fn ca(&self) -> String {
        self.dir.0.join("ca.pem").display().to_string()
    }

    /// Probes the target described by `dns` (a TOML inline table) once.
    fn probe(&self, dns: &str) -> Sample {
        self.probe_host(SERVER, dns)
    }

    fn probe_host(&self, host: &str, dns: &str) -> Sample {
        let toml = format!(
            "[[targets]]\nname = \"t\"\nhost = \"{host}\"\nprobes = [\"dns\"]\ndns = {dns}\n"
        );
        let cfg = Config::parse(&toml, "test").unwrap_or_else(|e| panic!("{e}"));
        let target = cfg.targets[0].clone();
        let resolv = self.dir.0.join("resolv.conf");
        self.ns.block_on(async move {
            let probe = DnsProbe::with_parts(Arc::new(KernelDns), Arc::new(SystemClock), resolv);
            probe.run(ProbeRequest::for_target(&target)).await
        })
    }
}

fn report(s: &Sample) -> &DnsReport {
    match s.measurement.dns() {
        Some(r) => r,
        None => panic!("no DNS report: {:?} ({:?})", s.measurement, s.error),
    }
}

fn datas(r: &DnsReport) -> Vec<&str> {
    r.answers.iter().map(|a| a.data.as_str()).collect()
}

#[test]
fn answers_are_validated_over_udp_tcp_and_tls() {
    if !can_run() {
        return;
    }
    let ub = Unbound::start("ok");

    let s = ub.probe(
        r#"{ query = "www.example.test", type = "A", answer_contains = ["192.0.2.10", "192.0.2.11"], answer_match = ['^www\.example\.test\. 300 IN A '], min_answers = 2 }"#,
    );
    assert!(s.success, "{s:?}");
    let r = report(&s);
    assert_eq!(r.rcode_name().as_deref(), Some("NOERROR"));
    assert_eq!(r.transport, Some(DnsTransport::Udp));
    assert!(r.flags.authoritative);
    let mut d = datas(r);
    d.sort();
    assert_eq!(d, ["192.0.2.10", "192.0.2.11"]);
    assert!(r.phases.request.unwrap() < Duration::from_secs(1));
    assert!(r.phases.connect.is_none());

    // dig, asking the same server, sees the same records.
    if have("dig") {
        let out = Command::new("ip")
            .args([
                "netns", "exec", &ub.ns.0, "dig", "+short", "+tries=1", "+time=2",
            ])
            .arg(format!("@{SERVER}"))
            .args(["www.example.test", "A"])
            .output()
            .unwrap();
        let mut dig: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        dig.sort();
        assert_eq!(dig, d, "dig and the probe disagree");
    }

    let s = ub.probe(
        r#"{ query = "www.example.test", type = "AAAA", answer_contains = ["2001:db8::10"] }"#,
    );
    assert!(s.success, "{s:?}");
    let s = ub.probe(
        r#"{ query = "example.test", type = "MX", answer_contains = ["mx1.example.test"] }"#,
    );
    assert!(s.success, "{s:?}");
    assert_eq!(datas(report(&s)), ["10 mx1.example.test."]);
    let s = ub.probe(r#"{ query = "example.test", type = "TXT", answer_match = ["spf1"] }"#);
    assert!(s.success, "{s:?}");

    // A check that fails: the probe fails and says why; the rcode is still fine.
    let s = ub.probe(r#"{ query = "www.example.test", answer_contains = ["192.0.2.99"], answer_not_contains = ["192.0.2.10"] }"#);
    assert!(!s.success);
    let r = report(&s);
    assert!(r.rcode_valid);
    assert_eq!(
        r.validation_failures.len(),
        2,
        "{:?}",
        r.validation_failures
    );
    assert!(matches!(s.error, Some(ProbeError::Validation(_))));

    let s = ub.probe(
        r#"{ query = "www.example.test", transport = "tcp", answer_contains = ["192.0.2.10"] }"#,
    );
    assert!(s.success, "{s:?}");
    let r = report(&s);
    assert_eq!(r.transport, Some(DnsTransport::Tcp));
    assert!(r.phases.connect.is_some() && r.phases.tls.is_none());

    let tls = format!(
        r#"{{ query = "www.example.test", transport = "tls", server_name = "dns.example.test", ca_file = "{}", answer_contains = ["192.0.2.11"] }}"#,
        ub.ca()
    );
    let s = ub.probe(&tls);
    assert!(s.success, "{s:?}");
    let r = report(&s);
    assert_eq!(r.transport, Some(DnsTransport::Tls));
    assert_eq!(r.server, Some(format!("{SERVER}:853").parse().unwrap()));
    assert!(r.phases.connect.is_some() && r.phases.tls.is_some());

    // The certificate does not name the server we asked for: no answer is trusted.
    let s = ub.probe(&tls.replace(
        "server_name = \"dns.example.test\"",
        "server_name = \"other.example.test\"",
    ));
    assert!(!s.success);
    assert!(
        matches!(&s.error, Some(ProbeError::Network(m)) if m.contains("TLS handshake") && m.contains("certificate")),
        "{:?}",
        s.error
    );
    // Without our CA the built-in roots do not know the test certificate.
    let s = ub.probe(
        r#"{ query = "www.example.test", transport = "tls", server_name = "dns.example.test" }"#,
    );
    assert!(!s.success);
    // Unless told not to check.
    let s = ub
        .probe(r#"{ query = "www.example.test", transport = "tls", insecure_skip_verify = true }"#);
    assert!(s.success, "{s:?}");
}

#[test]
fn nxdomain_and_servfail_are_reported() {
    if !can_run() {
        return;
    }
    let ub = Unbound::start("rc");
    let s = ub.probe(r#"{ query = "nope.example.test" }"#);
    assert!(!s.success);
    let r = report(&s);
    assert_eq!(r.rcode, Some(3));
    assert!(!r.rcode_valid);
    assert_eq!(
        s.error,
        Some(ProbeError::Validation(
            "rcode NXDOMAIN is not one of the expected (NOERROR)".into()
        ))
    );
    assert_eq!(s.values().iter().find(|v| v.0 == "rcode").unwrap().1, 3.0);

    let s = ub.probe(r#"{ query = "nope.example.test", valid_rcodes = ["NXDOMAIN"] }"#);
    assert!(s.success, "{s:?}");

    let s = ub.probe(r#"{ query = "www.broken.test" }"#);
    assert!(!s.success);
    assert_eq!(report(&s).rcode_name().as_deref(), Some("SERVFAIL"));
    assert!(s.duration < Duration::from_secs(2), "{:?}", s.duration);
}

#[test]
fn truncated_udp_answer_is_retried_over_tcp() {
    if !can_run() {
        return;
    }
    let ub = Unbound::start("tc");
    // Without EDNS the UDP answer is limited to 512 bytes; the 20 records need ~2300.
    let s = ub.probe(
        r#"{ query = "big.example.test", type = "TXT", edns_udp_size = 0, min_answers = 20 }"#,
    );
    assert!(s.success, "{s:?}");
    let r = report(&s);
    assert!(r.truncated_retry);
    assert_eq!(r.transport, Some(DnsTransport::Tcp));
    assert_eq!(r.answers.len(), 20);
    assert!(r.response_bytes > 2000, "{}", r.response_bytes);
    assert!(!r.flags.truncated);
    // With a big enough EDNS buffer it fits in one datagram.
    let s = ub.probe(r#"{ query = "big.example.test", type = "TXT", edns_udp_size = 4096 }"#);
    let r = report(&s);
    assert!(s.success && !r.truncated_retry, "{s:?}");
    assert_eq!(r.transport, Some(DnsTransport::Udp));
}

#[test]
fn total_loss_times_out_within_the_configured_time() {
    if !can_run() {
        return;
    }
    let ub = Unbound::start("loss");
    // 100 % loss on the server's way in, as `-m statistic` would at P=1.
    ub.ns.exec(
        "iptables",
        &[
            "-A",
            "INPUT",
            "-p",
            "udp",
            "--dport",
            "53",
            "-m",
            "statistic",
            "--mode",
            "random",
            "--probability",
            "1.0",
            "-j",
            "DROP",
        ],
    );
    let t0 = Instant::now();
    let s = ub.probe(r#"{ query = "www.example.test", timeout = "500ms" }"#);
    let took = t0.elapsed();
    assert!(!s.success);
    assert_eq!(s.error, Some(ProbeError::Timeout));
    assert!(
        // At least the timeout; the upper bound leaves room for a loaded machine.
        s.duration >= Duration::from_millis(490) && s.duration < Duration::from_millis(1500),
        "{:?}",
        s.duration
    );
    assert!(took < Duration::from_secs(10), "{took:?}");
    let r = report(&s);
    assert_eq!(r.rcode, None);
    // TCP still gets through the UDP-only rule.
    let s = ub.probe(r#"{ query = "www.example.test", transport = "tcp", timeout = "500ms" }"#);
    assert!(s.success, "{s:?}");
}

#[test]
fn system_resolver_asks_the_resolv_conf_nameservers() {
    if !can_run() {
        return;
    }
    let ub = Unbound::start("sys");
    // The first nameserver does not exist in the namespace (no route): the next one answers.
    std::fs::write(
        ub.dir.0.join("resolv.conf"),
        format!("nameserver 198.51.100.1\nnameserver {SERVER}\n"),
    )
    .unwrap();
    let s = ub.probe_host(
        "system",
        r#"{ query = "www.example.test", answer_contains = ["192.0.2.10"] }"#,
    );
    assert!(s.success, "{s:?}");
    let r = report(&s);
    assert_eq!(r.attempts, 2);
    assert_eq!(r.server, Some(format!("{SERVER}:53").parse().unwrap()));
    // Raw rcodes come through: NXDOMAIN is an answer, not a reason to ask elsewhere.
    let s = ub.probe_host("system", r#"{ query = "nope.example.test" }"#);
    assert_eq!(report(&s).rcode_name().as_deref(), Some("NXDOMAIN"));
    assert!(Host::Name("system".into()).is_system());
}

#[test]
fn answers_over_https() {
    if !can_run() {
        return;
    }
    let ub = Unbound::start("doh");
    let doh = format!(
        r#"{{ query = "www.example.test", transport = "https", server_name = "dns.example.test", ca_file = "{}", answer_contains = ["192.0.2.10", "192.0.2.11"] }}"#,
        ub.ca()
    );
    let s = ub.probe(&doh);
    assert!(s.success, "{s:?}");
    let r = report(&s);
    assert_eq!(r.transport, Some(DnsTransport::Https));
    assert_eq!(r.server, Some(format!("{SERVER}:443").parse().unwrap()));
    assert_eq!(r.rcode_name().as_deref(), Some("NOERROR"));
    let p = r.phases;
    assert!(
        p.connect.is_some() && p.tls.is_some() && p.request.is_some(),
        "{p:?}"
    );
    assert!(p.request.unwrap() < Duration::from_secs(1), "{p:?}");
    let values: Vec<_> = s.values().into_iter().map(|v| v.0).collect();
    assert!(values.contains(&"tls_seconds"), "{values:?}");

    // GET, and an rcode that is not NOERROR, come through as over UDP.
    let s = ub.probe(&format!(
        r#"{{ query = "nope.example.test", transport = "https", doh_method = "get", server_name = "dns.example.test", ca_file = "{}", valid_rcodes = ["NXDOMAIN"] }}"#,
        ub.ca()
    ));
    assert!(s.success, "{s:?}");
    assert_eq!(report(&s).rcode_name().as_deref(), Some("NXDOMAIN"));

    // Another path: unbound answers 404, and the probe says so.
    let s = ub.probe(&doh.replace(
        "transport = \"https\"",
        "transport = \"https\", doh_path = \"/wrong\"",
    ));
    assert!(!s.success);
    assert!(
        matches!(&s.error, Some(ProbeError::Protocol(m)) if m.contains("https://dns.example.test/wrong answered HTTP status 404")),
        "{:?}",
        s.error
    );
    assert_eq!(report(&s).rcode, None);

    // The certificate does not name the server we asked for.
    let s = ub.probe(&doh.replace("dns.example.test", "other.example.test"));
    assert!(
        matches!(&s.error, Some(ProbeError::Network(m)) if m.contains("TLS handshake")),
        "{:?}",
        s.error
    );
    // Unless told not to check.
    let s = ub.probe(
        r#"{ query = "www.example.test", transport = "https", insecure_skip_verify = true }"#,
    );
    assert!(s.success, "{s:?}");
}
