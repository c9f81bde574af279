use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use crate::probe::pattern::Pattern;

use super::run::TcpProbe;
use super::series::*;
use super::stored::{StoredTcp, not_after};
use super::*;
use crate::config::{Config, parse_host, split_host_port};
use crate::probe::module::ProbeQuery;
use crate::probe::round::ProbeRequest;
use crate::sample::{Measurement, ProbeError};
use crate::series::Point;
use crate::types::ProbeKind;

fn parse(text: &str) -> Result<Config, String> {
    Config::parse(text, "t.toml").map_err(|e| e.to_string())
}

fn target(host: &str, tcp: &str) -> String {
    format!("[[targets]]\nname = \"t\"\nhost = \"{host}\"\nprobes = [\"tcp\"]\ntcp = {tcp}\n")
}

fn options(cfg: &Config) -> &TcpOptions {
    cfg.targets[0].module::<TcpOptions>(KIND).unwrap()
}

#[test]
fn minimal_config_and_defaults() {
    let cfg = parse(&target("127.0.0.1", "{ port = 443 }")).unwrap();
    let o = options(&cfg);
    assert_eq!(*o, TcpOptions::for_port(443));
    assert_eq!(
        cfg.targets[0].probes,
        [(ProbeKind::Module(KIND), options::INTERVAL)]
    );
    // [defaults.tcp] fills what the target leaves out, the target's own settings win.
    let text = format!(
        "[defaults]\ntcp = {{ port = 22, attempts = 5, dscp = 46, interval = \"30s\" }}\n{}",
        target(
            "::1",
            "{ attempts = 2, tls = true, server_name = \"x.test\" }"
        )
    );
    let cfg = parse(&text).unwrap();
    let o = options(&cfg);
    assert_eq!(
        (o.port, o.attempts, o.tos, o.tls),
        (22, 2, Some(46 << 2), true)
    );
    assert_eq!(o.server_name.as_deref(), Some("x.test"));
    assert_eq!(cfg.targets[0].probes[0].1, Duration::from_secs(30));
    // The same options from /probe parameters.
    let param = |k: &str| (k == "tls").then_some("true");
    let q = ProbeQuery {
        target: "[::1]:8443",
        param: &param,
        trusted: false,
    };
    let (host, o) = KIND.module().probe_options(&q).unwrap();
    assert_eq!(host, parse_host("::1").unwrap());
    let o = o.as_any().downcast_ref::<TcpOptions>().unwrap();
    assert_eq!((o.port, o.tls), (8443, true));
}

#[test]
fn bad_settings_are_located() {
    let cases = [
        ("{ attempts = 2 }", "5:7: targets[0].tcp.port: is required"),
        (
            "{ port = 0 }",
            "5:16: targets[0].tcp.port: must be between 1 and 65535, got 0",
        ),
        (
            "{ port = 1, attempts = 99 }",
            "targets[0].tcp.attempts: must be between 1 and 20",
        ),
        (
            "{ port = 1, expect = \"(\" }",
            "targets[0].tcp.expect: is not a valid regex",
        ),
        (
            "{ port = 1, send = \"a\\nb\" }",
            "targets[0].tcp.send: must be one line",
        ),
        (
            "{ port = 1, ca_file = \"/x\" }",
            "targets[0].tcp.ca_file: applies only with tls = true",
        ),
        (
            "{ port = 1, tls = \"yes\" }",
            "targets[0].tcp.tls: \"yes\" is not true or false",
        ),
        (
            "{ port = 1, bogus = 1 }",
            "targets[0].tcp.bogus: unknown field `bogus`",
        ),
        (
            "{ port = 1, source = \"::1\" }",
            "tcp.source: source ::1 and host 127.0.0.1 are not",
        ),
        (
            "{ port = 1, timeout = \"20s\" }",
            "a tcp round takes up to 20s 200ms, longer than the interval (10s)",
        ),
    ];
    for (tcp, want) in cases {
        let err = parse(&target("127.0.0.1", tcp)).unwrap_err();
        assert!(err.contains(want), "{tcp}: {err}");
    }
    let text = "[[targets]]\nname = \"t\"\nhost = \"h\"\nprobes = [\"ping\"]\ntcp = { port = 1 }\n";
    let err = parse(text).unwrap_err();
    assert!(
        err.contains("targets[0].tcp: is set but \"tcp\" is not in probes"),
        "{err}"
    );
    let param = |_: &str| None;
    for (t, want) in [
        ("h", "write HOST:PORT"),
        ("h:x", "port \"x\" is not a whole number"),
        (
            "h:70000",
            "tcp.port: must be between 1 and 65535, got 70000",
        ),
    ] {
        let q = ProbeQuery {
            target: t,
            param: &param,
            trusted: false,
        };
        let err = KIND.module().probe_options(&q).unwrap_err();
        assert!(err.contains(want), "{t}: {err}");
    }
}

#[test]
fn the_form_comes_from_the_module() {
    let forms = crate::config::probe_forms();
    let f = forms.iter().find(|f| f.kind == "tcp").unwrap();
    let keys: Vec<_> = f.fields.iter().map(|f| f.key).collect();
    assert!(
        keys.starts_with(&["port", "attempts", "spacing", "timeout"]),
        "{keys:?}"
    );
    assert!(keys.contains(&"tls") && keys.contains(&"expect"));
}

fn request(host: &str, o: TcpOptions) -> ProbeRequest {
    let text = target(host, &format!("{{ port = {} }}", o.port));
    let mut t = Arc::unwrap_or_clone(parse(&text).unwrap().targets.remove(0));
    t.modules[0].options = Arc::new(o);
    ProbeRequest::for_target(&t)
}

fn report(s: &crate::sample::Sample) -> &TcpReport {
    match &s.measurement {
        Measurement::Module(r) => r.get::<TcpReport>().unwrap(),
        m => panic!("{m:?}"),
    }
}

async fn listener(addr: &str) -> (TcpListener, u16) {
    let l = TcpListener::bind(addr).await.unwrap();
    let port = l.local_addr().unwrap().port();
    (l, port)
}

/// Accepts connections, and for each runs `serve`.
fn serve<F, Fut>(l: TcpListener, serve: F)
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(serve(s));
        }
    });
}

#[tokio::test]
async fn open_port_on_loopback_v4_and_v6() {
    for addr in ["127.0.0.1:0", "[::1]:0"] {
        let (l, port) = listener(addr).await;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        serve(l, move |s| {
            let tx = tx.clone();
            async move {
                // The prober closes with a FIN: the server reads end-of-stream, not a reset.
                let mut buf = [0u8; 16];
                let n = tokio::io::AsyncReadExt::read(&mut { s }, &mut buf).await;
                let _ = tx.send(n.map_err(|e| e.kind()));
            }
        });
        let host = addr.rsplit_once(':').unwrap().0.trim_matches(['[', ']']);
        let o = TcpOptions {
            spacing: Duration::from_millis(1),
            ..TcpOptions::for_port(port)
        };
        let s = TcpProbe::default().run(request(host, o)).await;
        assert!(s.success, "{s:?}");
        let r = report(&s);
        assert_eq!((r.sent, r.connected, r.connect_times.len()), (3, 3, 3));
        assert_eq!(r.address.unwrap().is_ipv6(), addr.starts_with('['));
        for _ in 0..3 {
            assert_eq!(rx.recv().await.unwrap(), Ok(0), "a clean close");
        }
    }
}

#[tokio::test]
async fn closed_port_fails_with_connection_refused() {
    let (l, port) = listener("127.0.0.1:0").await;
    drop(l);
    let s = TcpProbe::default()
        .run(request("127.0.0.1", TcpOptions::for_port(port)))
        .await;
    assert!(!s.success);
    let r = report(&s);
    assert_eq!((r.sent, r.connected), (3, 0));
    match &s.error {
        Some(ProbeError::Network(m)) => assert!(m.contains("refused"), "{m}"),
        e => panic!("{e:?}"),
    }
}

struct Pki {
    ca_pem: String,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

/// A private CA and a leaf for "tcp.test" and 127.0.0.1 whose validity `leaf` sets.
fn pki(leaf: impl FnOnce(&mut rcgen::CertificateParams)) -> Pki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(vec!["tcp.test".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    leaf(&mut params);
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    Pki {
        ca_pem: ca.pem(),
        chain: vec![cert.der().clone(), ca.der().clone()],
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    }
}

/// A TLS server on loopback: the handshake, then one line read and answered with `reply`.
async fn tls_server(pki: &Pki, reply: &'static str) -> u16 {
    tls_server_of(pki, reply, rustls::DEFAULT_VERSIONS).await
}

/// [`tls_server`] speaking only `versions`.
async fn tls_server_of(
    pki: &Pki,
    reply: &'static str,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> u16 {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(pki.chain.clone(), pki.key.clone_key())
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let (l, port) = listener("127.0.0.1:0").await;
    serve(l, move |s| {
        let acceptor = acceptor.clone();
        async move {
            let Ok(mut s) = acceptor.accept(s).await else {
                return;
            };
            let mut line = String::new();
            let _ = BufReader::new(&mut s).read_line(&mut line).await;
            let _ = s.write_all(reply.as_bytes()).await;
            let _ = s.shutdown().await;
        }
    });
    port
}

fn ca_file(pki: &Pki, tag: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("vantage-tcp-{tag}-{}.pem", std::process::id()));
    std::fs::write(&path, &pki.ca_pem).unwrap();
    path
}

fn tls_options(port: u16, ca: std::path::PathBuf) -> TcpOptions {
    TcpOptions {
        attempts: 1,
        tls: true,
        server_name: Some("tcp.test".into()),
        ca_file: Some(ca),
        send: Some("HELLO".into()),
        expect: Some(pat("^OK ")),
        ..TcpOptions::for_port(port)
    }
}

#[tokio::test]
async fn tls_to_a_private_ca_reads_the_expiry_to_the_second() {
    // UTCTime (before 2050) and GeneralizedTime (from 2050) encodings; a TLS 1.3 server (the
    // default) and one that speaks TLS 1.2 only.
    let tls12: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];
    for (year, month, day, extra, want, versions, version) in [
        (
            2031,
            5,
            17,
            12_345,
            1_936_754_745,
            rustls::DEFAULT_VERSIONS,
            "TLS 1.3",
        ),
        (2051, 2, 3, 7, 2_558_995_207, tls12, "TLS 1.2"),
    ] {
        let pki = pki(|p| {
            p.not_after = rcgen::date_time_ymd(year, month, day) + Duration::from_secs(extra)
        });
        assert_eq!(not_after(&pki.chain[0]), Some(want));
        let port = tls_server_of(&pki, "OK ready\r\n", versions).await;
        let o = tls_options(port, ca_file(&pki, &year.to_string()));
        let s = TcpProbe::default().run(request("127.0.0.1", o)).await;
        assert!(s.success, "{s:?}");
        let r = report(&s);
        // The chain's earliest expiry: the leaf's, not the CA's.
        assert_eq!(r.cert_not_after, Some(want));
        assert!(r.tls_handshake.is_some());
        assert_eq!(r.tls_version.as_deref(), Some(version));
        assert_eq!(r.expect_matched, Some(true));
        assert_eq!(r.reply.as_deref(), Some("OK ready"));
        let mut points = Vec::new();
        KIND.module().points(&stored(&s), &mut points);
        let expiry = points.iter().find(|p| p.gauge == &CERT_NOT_AFTER).unwrap();
        assert_eq!(expiry.value, want as f64);
        let tls: Vec<_> = points.iter().filter(|p| p.gauge == &TLS_VERSION).collect();
        assert_eq!(tls.len(), 1, "{points:?}");
        assert_eq!(
            (tls[0].label(), tls[0].value),
            (Some(("version", version)), 1.0)
        );
    }
}

#[tokio::test]
async fn an_expired_certificate_fails_the_handshake() {
    let pki = pki(|p| {
        p.not_before = rcgen::date_time_ymd(2019, 1, 1);
        p.not_after = rcgen::date_time_ymd(2020, 1, 1);
    });
    let port = tls_server(&pki, "OK\n").await;
    let o = tls_options(port, ca_file(&pki, "expired"));
    let s = TcpProbe::default()
        .run(request("127.0.0.1", o.clone()))
        .await;
    assert!(!s.success);
    match &s.error {
        Some(ProbeError::Validation(m)) => {
            assert!(m.contains("TLS handshake") && m.contains("xpired"), "{m}")
        }
        e => panic!("{e:?}"),
    }
    assert_eq!(
        report(&s).connected,
        1,
        "it connected; the certificate failed"
    );
    // `insecure` accepts it and still reads when it expired.
    let o = TcpOptions {
        insecure: true,
        expect: None,
        send: None,
        ..o
    };
    let s = TcpProbe::default().run(request("127.0.0.1", o)).await;
    assert!(s.success, "{s:?}");
    assert_eq!(report(&s).cert_not_after, Some(1_577_836_800));
}

#[tokio::test]
async fn banner_expect_matches_or_fails() {
    let (l, port) = listener("127.0.0.1:0").await;
    serve(l, |mut s| async move {
        let _ = s.write_all(b"SSH-2.0-test\r\nmore").await;
        let _ = s.shutdown().await;
    });
    let o = |expect: &str| TcpOptions {
        attempts: 1,
        expect: Some(pat(expect)),
        ..TcpOptions::for_port(port)
    };
    let s = TcpProbe::default()
        .run(request("127.0.0.1", o("^SSH-2\\.0-")))
        .await;
    assert!(s.success, "{s:?}");
    assert_eq!(report(&s).expect_matched, Some(true));
    let s = TcpProbe::default()
        .run(request("127.0.0.1", o("^HTTP/")))
        .await;
    assert!(!s.success);
    assert_eq!(report(&s).expect_matched, Some(false));
    match &s.error {
        Some(ProbeError::Validation(m)) => {
            assert!(m.contains("\"SSH-2.0-test\" does not match"), "{m}")
        }
        e => panic!("{e:?}"),
    }
    let mut points = Vec::new();
    KIND.module().points(&stored(&s), &mut points);
    let matched = points.iter().find(|p| p.gauge == &EXPECT_MATCHED).unwrap();
    assert_eq!(matched.value, 0.0);
}

#[tokio::test(start_paused = true)]
async fn a_silent_server_cannot_hold_the_round_past_its_timeout() {
    let (l, port) = listener("127.0.0.1:0").await;
    serve(l, |s| async move {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        drop(s);
    });
    let o = TcpOptions {
        attempts: 1,
        timeout: Duration::from_secs(2),
        expect: Some(pat("x")),
        ..TcpOptions::for_port(port)
    };
    let started = tokio::time::Instant::now();
    let s = TcpProbe::default().run(request("127.0.0.1", o)).await;
    assert_eq!(s.error, Some(ProbeError::Timeout));
    assert!(started.elapsed() <= Duration::from_secs(2) + Duration::from_millis(10));
}

fn stored(s: &crate::sample::Sample) -> Vec<u8> {
    let mut b = Vec::new();
    KIND.module().encode(report(s), &mut b);
    b
}

#[test]
fn stored_rounds_read_back_and_bad_bytes_are_refused() {
    let full = StoredTcp {
        sent: 3,
        connected: 2,
        connect_us: Some((100, 150, 200)),
        tls_us: Some(900),
        not_after: Some(1_936_754_745),
        expect_matched: Some(false),
        tls_version: Some(0x0304),
    };
    for s in [
        full,
        StoredTcp::default(),
        StoredTcp {
            not_after: Some(-5),
            ..full
        },
    ] {
        let mut b = Vec::new();
        s.encode(&mut b);
        assert_eq!(StoredTcp::decode(&b), Some(s));
        // A round is small: no connection 4 bytes, everything under 20.
        assert!(b.len() < 20, "{}", b.len());
        assert_eq!(StoredTcp::decode(&b[..b.len() - 1]), None);
        let mut longer = b.clone();
        longer.push(0);
        assert_eq!(StoredTcp::decode(&longer), None);
    }
    assert_eq!(StoredTcp::decode(&[2, 0, 0, 0]), None, "another version");
    assert_eq!(StoredTcp::decode(&[1, 0x40, 0, 0]), None, "unknown flags");
    let mut tls = Vec::new();
    full.points(&mut tls);
    tls.retain(|p| p.gauge == &TLS_VERSION);
    assert_eq!(tls, [Point::labelled(&TLS_VERSION, "TLS 1.3", 1.0)]);
    // Every point of a round is one of the module's gauges; none before the first round
    // depends on it.
    let mut points: Vec<Point> = Vec::new();
    full.points(&mut points);
    KIND.module().initial_points(&mut points);
    for p in &points {
        assert!(GAUGES.contains(&p.gauge), "{}", p.gauge.name);
        assert_eq!(p.gauge.label.is_some(), p.label_value.is_some());
    }
}

#[test]
fn split_host_port_forms() {
    assert_eq!(split_host_port("h.test:443"), Ok(("h.test", 443)));
    assert_eq!(split_host_port("[::1]:22"), Ok(("::1", 22)));
    assert!(split_host_port("::1:22").is_err());
}

/// Refuses one address, as `/probe` refuses link-local ones.
#[derive(Debug)]
struct Refuse(std::net::IpAddr);

impl crate::probe::round::AddressGuard for Refuse {
    fn check_host(&self, _: &crate::config::Host, _: Option<u16>) -> Result<(), String> {
        Ok(())
    }
    fn check_addr(&self, ip: std::net::IpAddr) -> Result<(), String> {
        if ip == self.0 {
            Err(format!("{ip} is refused"))
        } else {
            Ok(())
        }
    }
}

/// The guard judges the address a name resolved to, right before the connect (a name that
/// resolves elsewhere than when `/probe` checked it is still refused): nothing connects.
#[tokio::test]
async fn a_guard_refuses_the_address_a_name_resolves_to_before_connecting() {
    let (l, port) = listener("127.0.0.1:0").await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    serve(l, move |_| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(());
        }
    });
    let o = TcpOptions {
        attempts: 1,
        ip_protocol: crate::types::IpProtocol::Ipv4,
        ..TcpOptions::for_port(port)
    };
    let mut req = request("localhost", o.clone());
    req.guard = Some(Arc::new(Refuse("127.0.0.1".parse().unwrap())));
    let s = TcpProbe::default().run(req).await;
    assert!(!s.success, "{s:?}");
    let msg = s
        .error
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_default();
    assert!(msg.contains("127.0.0.1 is refused"), "{msg}");
    // The same round without the refusal connects: the listener sees exactly that one.
    let mut req = request("localhost", o);
    req.guard = Some(Arc::new(Refuse("192.0.2.1".parse().unwrap())));
    assert!(TcpProbe::default().run(req).await.success);
    rx.recv().await.unwrap();
    assert!(rx.try_recv().is_err(), "the refused round connected");
}

/// Named values and the rollup: the mean connect time is the range's main time; a round
/// without a connection has none, and TCP rounds have no marks.
#[test]
fn values_and_rollup_of_stored_rounds() {
    let s = StoredTcp {
        sent: 3,
        connected: 2,
        connect_us: Some((1_000, 1_500, 2_000)),
        tls_us: Some(4_000),
        not_after: Some(1_900_000_000),
        ..StoredTcp::default()
    };
    let mut b = Vec::new();
    s.encode(&mut b);
    let m = KIND.module();
    let mut v = Vec::new();
    m.values(&b, &mut v);
    for want in [
        ("attempts_sent", 3.0),
        ("connect_seconds", 0.0015),
        ("connect_max_seconds", 0.002),
        ("tls_seconds", 0.004),
        ("cert_not_after_seconds", 1_900_000_000.0),
    ] {
        assert!(v.contains(&want), "{want:?} in {v:?}");
    }
    assert_eq!(m.rollup(&b).time_us, Some(1_500));
    assert_eq!(m.rollup(&b).mark, None);
    // The phases the range keeps, named by the module in the same order.
    assert_eq!(m.phases(), ["connect", "tls"]);
    assert_eq!(m.rollup(&b).phases_us[..2], [Some(1_500), Some(4_000)]);
    assert!(!m.keeps_marks());
    let mut none = Vec::new();
    StoredTcp::default().encode(&mut none);
    assert_eq!(m.rollup(&none).time_us, None);
    let mut nv = Vec::new();
    m.values(&none, &mut nv);
    assert!(!nv.iter().any(|(k, _)| *k == "connect_seconds"), "{nv:?}");
}

/// The store keeps the latest round's address, port, TLS version and certificate expiry (the
/// page shows them after a restart): the same detail while they stay, another when the
/// certificate changes, and not the connect times of a round.
#[test]
fn the_latest_round_is_a_detail_that_changes_with_its_certificate() {
    let m = KIND.module();
    assert_eq!(m.detail_use(), DetailUse::LastReport);
    let round = |connect_ms: u64, not_after: i64| TcpReport {
        address: Some("192.0.2.7".parse().unwrap()),
        port: 443,
        sent: 1,
        connected: 1,
        connect_times: vec![Duration::from_millis(connect_ms)],
        tls_version: Some("TLS 1.3".into()),
        cert_not_after: Some(not_after),
        ..TcpReport::default()
    };
    let d = m.detail(&round(2, 1_900_000_000)).unwrap();
    assert_eq!(
        m.detail_json(&d.bytes),
        Some(serde_json::json!({"address": "192.0.2.7", "port": 443,
            "tls_version": "TLS 1.3", "cert_not_after": 1_900_000_000}))
    );
    assert_eq!(m.detail(&round(9, 1_900_000_000)), Some(d.clone()));
    let renewed = m.detail(&round(2, 1_990_000_000)).unwrap();
    assert_ne!(renewed.fingerprint, d.fingerprint);
    assert_eq!(
        m.detail_json(&[2, b'{', b'}']),
        None,
        "another format version"
    );
}

/// A pattern the test knows to be valid.
fn pat(text: &str) -> Pattern {
    Pattern::new(text).expect("a valid test pattern")
}
