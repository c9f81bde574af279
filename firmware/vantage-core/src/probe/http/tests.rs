use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::probe::pattern::Pattern;

use super::run::{HttpProbe, join, round};
use super::stored::StoredHttp;
use super::*;
use crate::config::{Config, parse_host};
use crate::probe::module::ProbeQuery;
use crate::probe::round::ProbeRequest;
use crate::probe::tcp::{CERT_NOT_AFTER, TLS_VERSION};
use crate::sample::{Measurement, ProbeError};
use crate::types::ProbeKind;

fn parse(text: &str) -> Result<Config, String> {
    Config::parse(text, "t.toml").map_err(|e| e.to_string())
}

fn target(http: &str) -> String {
    format!("[[targets]]\nname = \"t\"\nhost = \"web\"\nprobes = [\"http\"]\nhttp = {http}\n")
}

#[test]
fn minimal_config_and_defaults() {
    let cfg = parse(&target("{ url = \"https://example.com/health\" }")).unwrap();
    let o = cfg.targets[0].module::<HttpOptions>(KIND).unwrap();
    assert_eq!(*o, HttpOptions::for_url("https://example.com/health"));
    assert_eq!(
        cfg.targets[0].probes,
        [(ProbeKind::Module(KIND), options::INTERVAL)]
    );
    assert!(o.status_ok(204) && !o.status_ok(301) && !o.status_ok(404));
    let text = format!(
        "[defaults]\nhttp = {{ url = \"http://a.test/\", max_redirects = 0, timeout = \"2s\" }}\n{}",
        target(
            "{ method = \"post\", valid_status_codes = [200, 404], headers = { Accept = \"text/plain\" } }"
        )
    );
    let cfg = parse(&text).unwrap();
    let o = cfg.targets[0].module::<HttpOptions>(KIND).unwrap();
    assert_eq!(
        (o.url.as_str(), o.method.as_str()),
        ("http://a.test/", "POST")
    );
    assert_eq!((o.max_redirects, o.timeout), (0, Duration::from_secs(2)));
    assert_eq!(o.valid_status_codes, [200, 404]);
    assert_eq!(
        o.headers,
        [("Accept".to_string(), "text/plain".to_string())]
    );
    // The same options from /probe parameters; the host is the URL's.
    let param = |k: &str| match k {
        "valid_status_codes" => Some("200, 301"),
        "max_redirects" => Some("3"),
        _ => None,
    };
    let q = ProbeQuery {
        target: "http://[::1]:8080/x?y=1",
        param: &param,
        trusted: false,
    };
    let (host, o) = KIND.module().probe_options(&q).unwrap();
    assert_eq!(host, parse_host("::1").unwrap());
    let o = o.as_any().downcast_ref::<HttpOptions>().unwrap();
    assert_eq!(
        (o.valid_status_codes.as_slice(), o.max_redirects),
        (&[200, 301][..], 3)
    );
}

#[test]
fn bad_settings_and_unsafe_urls_are_located() {
    let cases = [
        (
            "{ method = \"GET\" }",
            "5:8: targets[0].http.url: is required",
        ),
        (
            "{ url = \"file:///etc/passwd\" }",
            "targets[0].http.url: scheme \"file\" is not probed",
        ),
        (
            "{ url = \"https://user:secret@a.test/\" }",
            "targets[0].http.url: must not carry credentials",
        ),
        (
            "{ url = \"/relative\" }",
            "targets[0].http.url: \"/relative\" has no scheme",
        ),
        (
            "{ url = \"http://a.test/\", body_must_match = \"(\" }",
            "targets[0].http.body_must_match: is not a valid regex",
        ),
        (
            "{ url = \"http://a.test/\", valid_status_codes = [99] }",
            "targets[0].http.valid_status_codes: must be at most 64 codes from 100 to 599",
        ),
        (
            "{ url = \"http://a.test/\", max_redirects = 21 }",
            "targets[0].http.max_redirects: must be between 0 and 20",
        ),
        (
            "{ url = \"http://a.test/\", method = \"G T\" }",
            "targets[0].http.method: \"G T\" is not a method",
        ),
        (
            "{ url = \"http://a.test/\", headers = { Host = \"x\" } }",
            "targets[0].http.headers: Host is set by the probe",
        ),
        (
            "{ url = \"http://a.test/\", ca_file = \"/x\" }",
            "targets[0].http.ca_file: applies only to an https:// URL",
        ),
        (
            "{ url = \"http://a.test/\", bogus = 1 }",
            "targets[0].http.bogus: unknown field `bogus`",
        ),
    ];
    for (http, want) in cases {
        let err = parse(&target(http)).unwrap_err();
        assert!(err.contains(want), "{http}: {err}");
    }
    let param = |_: &str| None;
    for (t, want) in [
        ("data:text/plain,hi", "scheme \"data\" is not probed"),
        ("http://u:p@h/", "must not carry credentials"),
        ("//h/x", "has no scheme"),
    ] {
        let q = ProbeQuery {
            target: t,
            param: &param,
            trusted: false,
        };
        let err = KIND.module().probe_options(&q).unwrap_err();
        assert!(
            err.starts_with("target ") && err.contains(want),
            "{t}: {err}"
        );
    }
}

#[test]
fn the_form_comes_from_the_module() {
    let forms = crate::config::probe_forms();
    let f = forms.iter().find(|f| f.kind == "http").unwrap();
    let keys: Vec<_> = f.fields.iter().map(|f| f.key).collect();
    assert!(keys.starts_with(&["url", "method"]), "{keys:?}");
    assert!(f.fields[0].required && keys.contains(&"valid_status_codes"));
}

#[test]
fn redirect_locations_join_their_url() {
    let base = options::parse_url("https://a.test:8443/dir/page?q=1").unwrap();
    for (loc, want) in [
        ("http://b.test/x", "http://b.test/x"),
        ("//c.test/y", "https://c.test/y"),
        ("/z", "https://a.test:8443/z"),
        ("next", "https://a.test:8443/dir/next"),
        ("data:text/plain,x", "data:text/plain,x"),
    ] {
        assert_eq!(join(&base, loc), want);
    }
}

#[test]
fn stored_rounds_keep_every_figure_and_every_phase() {
    let all = StoredHttp {
        redirects: 2,
        phases_us: [1, 20, 300, 4000, 50_000],
        status: Some(404),
        content_length: Some(1 << 33),
        not_after: Some(-5),
        tls_version: Some(0x0303),
    };
    for s in [all, StoredHttp::default()] {
        let mut b = Vec::new();
        s.encode(&mut b);
        assert_eq!(StoredHttp::decode(&b), Some(s));
        assert_eq!(StoredHttp::decode(&b[..b.len() - 1]), None);
    }
    assert_eq!(StoredHttp::decode(&[2, 0]), None, "another version");
    // Before the first round: every phase at 0, and the redirects.
    let mut points = Vec::new();
    KIND.module().initial_points(&mut points);
    let phases: Vec<_> = points
        .iter()
        .filter(|p| p.gauge == &PHASE)
        .map(|p| (p.label().unwrap().1.to_string(), p.value))
        .collect();
    let want: Vec<_> = PHASES.iter().map(|p| (p.to_string(), 0.0)).collect();
    assert_eq!(phases, want);
    assert!(points.iter().any(|p| p.gauge == &REDIRECTS));
}

/// A response with a body; `None` for a server that never answers.
type Handler = fn(&str) -> Option<String>;

fn answer(status: &str, extra: &str, body: &str) -> Option<String> {
    Some(format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n{body}",
        body.len()
    ))
}

fn site(path: &str) -> Option<String> {
    match path {
        "/ok" => answer("200 OK", "", "hello vantage"),
        "/404" => answer("404 Not Found", "", "no"),
        "/500" => answer("500 Internal Server Error", "", "oops"),
        "/redirect" => answer("302 Found", "Location: /ok\r\n", ""),
        "/loop" => answer("302 Found", "Location: loop\r\n", ""),
        "/bad-redirect" => answer("302 Found", "Location: file:///etc/passwd\r\n", ""),
        "/huge" => Some(format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
            1u64 << 30
        )),
        _ => None,
    }
}

/// Reads one request head and answers it from `handler`; `/huge` streams a body until the
/// client goes away, `None` holds the connection without a word.
async fn serve_one<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, handler: Handler) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65_536 {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head);
    let path = head.split(' ').nth(1).unwrap_or("/");
    let Some(reply) = handler(path) else {
        std::future::pending::<()>().await;
        return;
    };
    if s.write_all(reply.as_bytes()).await.is_err() {
        return;
    }
    if path == "/huge" {
        let chunk = vec![b'x'; 64 << 10];
        while s.write_all(&chunk).await.is_ok() {}
    }
    let _ = s.shutdown().await;
}

async fn server(addr: &str, handler: Handler) -> u16 {
    let l = TcpListener::bind(addr).await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(serve_one(s, handler));
        }
    });
    port
}

fn with(url: String, f: impl FnOnce(&mut HttpOptions)) -> HttpOptions {
    let mut o = HttpOptions::for_url(&url);
    f(&mut o);
    o
}

#[tokio::test]
async fn status_and_body_checks_against_a_loopback_server() {
    let port = server("127.0.0.1:0", site).await;
    let url = |p: &str| format!("http://127.0.0.1:{port}{p}");
    let o = with(url("/ok"), |o| o.body_must_match = Some(pat("hello")));
    let (r, e) = round(&o, None, None).await;
    assert_eq!(e, None);
    assert_eq!((r.status, r.content_length), (Some(200), Some(13)));
    assert_eq!(
        (r.body_matched, r.version.as_deref()),
        (Some(true), Some("HTTP/1.1"))
    );
    assert!(r.phases[1] > Duration::ZERO && r.phases[3] > Duration::ZERO);
    assert_eq!(r.phases[2], Duration::ZERO, "no TLS on http://");
    let o = with(url("/ok"), |o| o.body_must_match = Some(pat("^bye")));
    let (r, e) = round(&o, None, None).await;
    assert_eq!(r.body_matched, Some(false));
    assert!(matches!(e, Some(ProbeError::Validation(m)) if m.contains("does not match")));
    let o = with(url("/ok"), |o| o.body_must_not_match = Some(pat("vantage")));
    let (r, e) = round(&o, None, None).await;
    assert_eq!(r.body_not_matched, Some(false));
    assert!(matches!(e, Some(ProbeError::Validation(m)) if m.contains("matches body_must_not")));
    for (path, code) in [("/404", 404), ("/500", 500)] {
        let (r, e) = round(&with(url(path), |_| {}), None, None).await;
        assert_eq!(r.status, Some(code));
        let want = format!("status {code} is not a valid status code");
        assert!(matches!(e, Some(ProbeError::Validation(m)) if m == want));
        let o = with(url(path), |o| o.valid_status_codes = vec![code]);
        assert_eq!(
            round(&o, None, None).await.1,
            None,
            "{code} listed as valid"
        );
    }
}

#[tokio::test]
async fn redirects_followed_counted_and_not() {
    let port = server("127.0.0.1:0", site).await;
    let url = |p: &str| format!("http://127.0.0.1:{port}{p}");
    let (r, e) = round(&with(url("/redirect"), |_| {}), None, None).await;
    assert_eq!(e, None);
    assert_eq!(
        (r.redirects, r.status, r.content_length),
        (1, Some(200), Some(13))
    );
    let o = with(url("/redirect"), |o| o.max_redirects = 0);
    let (r, e) = round(&o, None, None).await;
    assert_eq!((r.redirects, r.status), (0, Some(302)));
    assert!(e.is_some(), "a 302 is not 2xx");
    let o = with(url("/redirect"), |o| {
        o.max_redirects = 0;
        o.valid_status_codes = vec![302];
    });
    assert_eq!(round(&o, None, None).await.1, None);
    let o = with(url("/loop"), |o| o.max_redirects = 3);
    let (r, e) = round(&o, None, None).await;
    assert_eq!(r.redirects, 3);
    assert!(matches!(e, Some(ProbeError::Validation(m)) if m == "more than 3 redirects"));
    // A redirect to another scheme is refused like such a URL.
    let (_, e) = round(&with(url("/bad-redirect"), |_| {}), None, None).await;
    assert!(matches!(e, Some(ProbeError::Validation(m)) if m.contains("is not probed")));
}

#[tokio::test]
async fn a_silent_server_is_held_to_the_timeout_and_a_huge_body_to_the_limit() {
    let port = server("127.0.0.1:0", site).await;
    let o = with(format!("http://127.0.0.1:{port}/silent"), |o| {
        o.timeout = Duration::from_millis(300)
    });
    let started = std::time::Instant::now();
    let (r, e) = round(&o, None, None).await;
    assert_eq!(e, Some(ProbeError::Timeout));
    assert_eq!(r.status, None);
    assert!(started.elapsed() < Duration::from_secs(20));
    let o = with(format!("http://127.0.0.1:{port}/huge"), |o| {
        o.max_body = 100_000;
        o.timeout = Duration::from_secs(20);
    });
    let (r, e) = round(&o, None, None).await;
    assert_eq!(r.status, Some(200));
    assert!(r.content_length.unwrap() > 100_000 && r.content_length.unwrap() < 1 << 20);
    assert!(matches!(e, Some(ProbeError::Validation(m)) if m.contains("longer than max_body")));
}

#[tokio::test]
async fn ipv6_on_loopback_through_the_prober() {
    let Ok(l) = TcpListener::bind("[::1]:0").await else {
        eprintln!("skipped: no IPv6 loopback");
        return;
    };
    drop(l);
    let port = server("[::1]:0", site).await;
    let text = target(&format!("{{ url = \"http://[::1]:{port}/ok\" }}"));
    let t = parse(&text).unwrap().targets.remove(0);
    let s = HttpProbe.run(ProbeRequest::for_target(&t)).await;
    assert!(s.success, "{s:?}");
    let Measurement::Module(m) = &s.measurement else {
        panic!("{s:?}")
    };
    let r = m.get::<HttpReport>().unwrap();
    assert!(r.address.unwrap().is_ipv6());
    let mut stored = Vec::new();
    KIND.module().encode(m.report.as_ref(), &mut stored);
    let mut points = Vec::new();
    KIND.module().points(&stored, &mut points);
    let status = points.iter().find(|p| p.gauge == &STATUS).unwrap();
    assert_eq!(status.value, 200.0);
    assert_eq!(points.iter().filter(|p| p.gauge == &PHASE).count(), 5);
}

struct Pki {
    ca_pem: String,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

/// A private CA and a leaf for "web.test" whose validity `leaf` sets.
fn pki(leaf: impl FnOnce(&mut rcgen::CertificateParams)) -> Pki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["web.test".to_string()]).unwrap();
    leaf(&mut params);
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    Pki {
        ca_pem: ca.pem(),
        chain: vec![cert.der().clone(), ca.der().clone()],
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    }
}

/// An HTTPS server on loopback: HTTP/1.1 answering from [`site`], or with `h2` HTTP/2 (by
/// ALPN) answering every request with 200 and its own path.
async fn https_server(pki: &Pki, h2: bool) -> u16 {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(pki.chain.clone(), pki.key.clone_key())
        .unwrap();
    config.alpn_protocols = vec![if h2 {
        b"h2".to_vec()
    } else {
        b"http/1.1".to_vec()
    }];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                match acceptor.accept(s).await {
                    Ok(s) if h2 => serve_h2(s).await,
                    Ok(s) => serve_one(s, site).await,
                    Err(_) => {}
                }
            });
        }
    });
    port
}

async fn serve_h2<S: AsyncRead + AsyncWrite + Unpin>(s: S) {
    let Ok(mut conn) = h2::server::handshake(s).await else {
        return;
    };
    while let Some(Ok((req, mut respond))) = conn.accept().await {
        let body = format!("{} {}", req.uri().authority().unwrap(), req.uri().path());
        let resp = http::Response::builder().status(200).body(()).unwrap();
        if let Ok(mut send) = respond.send_response(resp, false) {
            let _ = send.send_data(bytes::Bytes::from(body), true);
        }
    }
}

fn https(port: u16, pki: &Pki, tag: &str) -> HttpOptions {
    let path = std::env::temp_dir().join(format!("vantage-http-{tag}-{}.pem", std::process::id()));
    std::fs::write(&path, &pki.ca_pem).unwrap();
    with(format!("https://127.0.0.1:{port}/ok"), |o| {
        o.server_name = Some("web.test".into());
        o.ca_file = Some(path);
    })
}

#[tokio::test]
async fn https_with_a_private_ca_reads_the_expiry_to_the_second() {
    let pki =
        pki(|p| p.not_after = rcgen::date_time_ymd(2031, 5, 17) + Duration::from_secs(12_345));
    let port = https_server(&pki, false).await;
    let (r, e) = round(&https(port, &pki, "ok"), None, None).await;
    assert_eq!(e, None);
    assert_eq!(
        (r.status, r.cert_not_after),
        (Some(200), Some(1_936_754_745))
    );
    assert!(r.phases[2] > Duration::ZERO);
    assert_eq!(r.tls_version.as_deref(), Some("TLS 1.3"));
    let mut stored = Vec::new();
    StoredHttp::from_report(&r).encode(&mut stored);
    let mut points = Vec::new();
    KIND.module().points(&stored, &mut points);
    let expiry = points.iter().find(|p| p.gauge == &CERT_NOT_AFTER).unwrap();
    assert_eq!(expiry.value, 1_936_754_745.0);
    let tls: Vec<_> = points.iter().filter(|p| p.gauge == &TLS_VERSION).collect();
    assert_eq!(tls.len(), 1, "{points:?}");
    assert_eq!(
        (tls[0].label(), tls[0].value),
        (Some(("version", "TLS 1.3")), 1.0)
    );
}

#[tokio::test]
async fn an_expired_certificate_fails_unless_insecure() {
    let pki = pki(|p| {
        p.not_before = rcgen::date_time_ymd(2019, 1, 1);
        p.not_after = rcgen::date_time_ymd(2020, 1, 1);
    });
    let port = https_server(&pki, false).await;
    let o = https(port, &pki, "expired");
    let (r, e) = round(&o, None, None).await;
    assert!(
        matches!(&e, Some(ProbeError::Validation(m)) if m.contains("TLS handshake") && m.contains("xpired")),
        "{e:?}"
    );
    assert_eq!(r.status, None);
    let o = HttpOptions {
        insecure: true,
        ..o
    };
    let (r, e) = round(&o, None, None).await;
    assert_eq!(e, None);
    assert_eq!(r.cert_not_after, Some(1_577_836_800));
}

#[tokio::test]
async fn http2_when_the_server_picks_it() {
    let pki = pki(|_| {});
    let port = https_server(&pki, true).await;
    let o = HttpOptions {
        body_must_match: Some(pat(&format!("^127.0.0.1:{port} /ok$"))),
        ..https(port, &pki, "h2")
    };
    let (r, e) = round(&o, None, None).await;
    assert_eq!(e, None, "{r:?}");
    assert_eq!(
        (r.status, r.version.as_deref()),
        (Some(200), Some("HTTP/2.0"))
    );
    assert_eq!(r.body_matched, Some(true));
}

/// Named values (one per phase, named after [`PHASES`]), and the rollup: the phases'
/// total of a round with a response, and its status as the mark ("no response" without).
#[test]
fn values_rollup_and_marks_of_stored_rounds() {
    let s = StoredHttp {
        phases_us: [100, 200, 300, 400, 500],
        status: Some(503),
        not_after: Some(1_900_000_000),
        ..StoredHttp::default()
    };
    let mut b = Vec::new();
    s.encode(&mut b);
    let m = KIND.module();
    let mut v = Vec::new();
    m.values(&b, &mut v);
    for (phase, us) in PHASES.iter().zip(s.phases_us) {
        let name = format!("{phase}_seconds");
        let got = v.iter().find(|(k, _)| *k == name).map(|(_, x)| *x);
        assert_eq!(got, Some(f64::from(us) / 1e6), "{name} in {v:?}");
    }
    assert!(v.contains(&("total_seconds", 0.0015)), "{v:?}");
    assert!(v.contains(&("status_code", 503.0)), "{v:?}");
    assert!(
        v.contains(&("cert_not_after_seconds", 1_900_000_000.0)),
        "{v:?}"
    );
    let r = m.rollup(&b);
    assert_eq!((r.time_us, r.mark), (Some(1_500), Some(503)));
    assert_eq!(m.phases(), PHASES);
    assert_eq!(
        r.phases_us,
        [Some(100), Some(200), Some(300), Some(400), Some(500)]
    );
    assert!(m.keeps_marks());
    assert_eq!(m.mark_name(503), "503");
    let mut silent = Vec::new();
    StoredHttp::default().encode(&mut silent);
    let r = m.rollup(&silent);
    assert_eq!((r.time_us, r.mark), (None, Some(stored::NO_STATUS)));
    assert_eq!(m.mark_name(stored::NO_STATUS), "no response");
}

/// A pattern the test knows to be valid.
fn pat(text: &str) -> Pattern {
    Pattern::new(text).expect("a valid test pattern")
}
