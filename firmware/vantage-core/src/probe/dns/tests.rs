//! The DNS probe against a scripted network: no root, no real sockets.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, MX, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Mutex as AsyncMutex, mpsc};

use super::super::options::{AnswerData, Pattern};
use super::*;
use crate::clock::TokioClock;
use crate::net::{ByteStream, DatagramChannel, DnsConnector};

/// What the scripted server sends back for one query.
type Script = dyn Fn(&Message, Via, SocketAddr) -> Vec<Vec<u8>> + Send + Sync;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Udp,
    Tcp,
}

struct FakeNet {
    script: Box<Script>,
    log: Mutex<Vec<(Via, SocketAddr)>>,
}

impl fmt::Debug for FakeNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FakeNet")
    }
}

#[derive(Debug)]
struct FakeUdp {
    net: Arc<FakeNet>,
    server: SocketAddr,
    tx: mpsc::UnboundedSender<Vec<u8>>,
    rx: AsyncMutex<mpsc::UnboundedReceiver<Vec<u8>>>,
}

impl DatagramChannel for FakeUdp {
    fn send<'a>(&'a self, packet: &'a [u8]) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(async move {
            let q = Message::from_vec(packet).expect("the probe sends valid queries");
            for d in (self.net.script)(&q, Via::Udp, self.server) {
                let _ = self.tx.send(d);
            }
            Ok(())
        })
    }
    fn recv<'a>(&'a self, buf: &'a mut [u8]) -> BoxFuture<'a, io::Result<usize>> {
        Box::pin(async move {
            match self.rx.lock().await.recv().await {
                Some(d) => {
                    let n = d.len().min(buf.len());
                    buf[..n].copy_from_slice(&d[..n]);
                    Ok(n)
                }
                None => std::future::pending().await,
            }
        })
    }
}

#[derive(Debug, Clone)]
struct Connector(Arc<FakeNet>);

impl DnsConnector for Connector {
    fn udp<'a>(
        &'a self,
        server: SocketAddr,
        _source: Option<IpAddr>,
    ) -> BoxFuture<'a, io::Result<Box<dyn DatagramChannel>>> {
        Box::pin(async move {
            self.0.log.lock().unwrap().push((Via::Udp, server));
            let (tx, rx) = mpsc::unbounded_channel();
            Ok(Box::new(FakeUdp {
                net: self.0.clone(),
                server,
                tx,
                rx: AsyncMutex::new(rx),
            }) as Box<dyn DatagramChannel>)
        })
    }

    fn tcp<'a>(
        &'a self,
        server: SocketAddr,
        _source: Option<IpAddr>,
    ) -> BoxFuture<'a, io::Result<Box<dyn ByteStream>>> {
        Box::pin(async move {
            self.0.log.lock().unwrap().push((Via::Tcp, server));
            let (client, mut srv) = tokio::io::duplex(1 << 17);
            let net = self.0.clone();
            tokio::spawn(async move {
                let Ok(len) = srv.read_u16().await else {
                    return;
                };
                let mut buf = vec![0u8; len as usize];
                if srv.read_exact(&mut buf).await.is_err() {
                    return;
                }
                let q = Message::from_vec(&buf).expect("the probe sends valid queries");
                // Over TCP the script returns raw bytes: frames or deliberate garbage.
                for chunk in (net.script)(&q, Via::Tcp, server) {
                    let _ = srv.write_all(&chunk).await;
                }
                let _ = srv.shutdown().await;
                // Keep the pipe open until the client is done reading.
                let mut sink = Vec::new();
                let _ = srv.read_to_end(&mut sink).await;
            });
            Ok(Box::new(client) as Box<dyn ByteStream>)
        })
    }
}

fn probe_with(
    script: impl Fn(&Message, Via, SocketAddr) -> Vec<Vec<u8>> + Send + Sync + 'static,
) -> (DnsProbe, Arc<FakeNet>) {
    probe_with_resolv(script, "/nonexistent/resolv.conf".into())
}

fn probe_with_resolv(
    script: impl Fn(&Message, Via, SocketAddr) -> Vec<Vec<u8>> + Send + Sync + 'static,
    resolv: PathBuf,
) -> (DnsProbe, Arc<FakeNet>) {
    let net = Arc::new(FakeNet {
        script: Box::new(script),
        log: Mutex::new(Vec::new()),
    });
    let probe = DnsProbe::with_parts(
        Arc::new(Connector(net.clone())),
        Arc::new(TokioClock::new()),
        resolv,
    );
    (probe, net)
}

fn answer_to(q: &Message) -> Message {
    let mut m = Message::new(q.metadata.id, MessageType::Response, OpCode::Query);
    m.metadata.recursion_desired = q.metadata.recursion_desired;
    m.metadata.recursion_available = true;
    m.add_queries(q.queries.clone());
    m
}

fn a_record(name: &Name, ip: [u8; 4]) -> Record {
    Record::from_rdata(name.clone(), 300, RData::A(A(Ipv4Addr::from(ip))))
}

fn bytes(m: &Message) -> Vec<u8> {
    m.to_vec().unwrap()
}

fn frame(m: &Message) -> Vec<u8> {
    let b = bytes(m);
    let mut f = (b.len() as u16).to_be_bytes().to_vec();
    f.extend_from_slice(&b);
    f
}

fn server() -> Host {
    Host::Ip(IpAddr::from([192, 0, 2, 53]))
}

fn opts(query: &str, rt: &str) -> DnsOptions {
    let mut o = DnsOptions::new(query, rt).unwrap();
    o.timeout = Duration::from_millis(300);
    o
}

/// An answer with two A records.
fn good(q: &Message, _: Via, _: SocketAddr) -> Vec<Vec<u8>> {
    let mut m = answer_to(q);
    let name = q.queries[0].name().clone();
    m.add_answer(a_record(&name, [192, 0, 2, 1]));
    m.add_answer(a_record(&name, [192, 0, 2, 2]));
    vec![bytes(&m)]
}

#[tokio::test(start_paused = true)]
async fn answer_over_udp_is_reported_and_validated() {
    let (probe, net) = probe_with(good);
    let mut o = opts("www.example.com", "A");
    o.answer_contains = vec![AnswerData::parse("192.0.2.2")];
    o.answer_not_contains = vec![AnswerData::parse("192.0.2.99")];
    o.answer_match = vec![Pattern(
        regex::Regex::new(r"^www\.example\.com\. 300 IN A ").unwrap(),
    )];
    o.min_answers = 2;
    let (r, err) = probe.query(&server(), &o, o.timeout).await;
    assert_eq!(err, None, "{r:?}");
    assert_eq!(r.rcode, Some(0));
    assert_eq!(r.rcode_name().as_deref(), Some("NOERROR"));
    assert!(r.rcode_valid);
    assert_eq!(r.answers.len(), 2);
    assert_eq!(
        r.answers[0].to_string(),
        "www.example.com. 300 IN A 192.0.2.1"
    );
    assert_eq!(r.transport, Some(DnsTransport::Udp));
    assert_eq!(r.server, Some("192.0.2.53:53".parse().unwrap()));
    assert!(r.phases.request.is_some() && r.phases.connect.is_none());
    assert!(r.phases.resolve.is_none(), "an IP needs no resolving");
    assert!(r.lookup.is_some());
    assert!(r.flags.recursion_available);
    assert_eq!(r.stray_datagrams, 0);
    assert_eq!(
        net.log.lock().unwrap().as_slice(),
        &[(Via::Udp, "192.0.2.53:53".parse().unwrap())]
    );
}

#[tokio::test(start_paused = true)]
async fn failed_checks_fail_the_probe_and_say_why() {
    let (probe, _) = probe_with(good);
    let mut o = opts("www.example.com", "A");
    o.answer_contains = vec![AnswerData::parse("192.0.2.9")];
    o.answer_not_contains = vec![AnswerData::parse("192.0.2.1")];
    o.answer_match = vec![Pattern(regex::Regex::new("AAAA").unwrap())];
    o.answer_not_match = vec![Pattern(regex::Regex::new(r"192\.0\.2\.2$").unwrap())];
    o.min_answers = 3;
    let (r, err) = probe.query(&server(), &o, o.timeout).await;
    assert!(r.rcode_valid);
    assert_eq!(
        r.validation_failures.len(),
        5,
        "{:?}",
        r.validation_failures
    );
    let Some(ProbeError::Validation(msg)) = err else {
        panic!("{err:?}")
    };
    for want in [
        "2 answer records, fewer than the 3 required",
        "no answer record has the data 192.0.2.9",
        "has the data 192.0.2.1",
        "no answer record matches /AAAA/",
        r"matches /192\.0\.2\.2$/",
    ] {
        assert!(msg.contains(want), "{msg:?} lacks {want:?}");
    }
}

fn rcode_answer(rcode: ResponseCode) -> impl Fn(&Message, Via, SocketAddr) -> Vec<Vec<u8>> {
    move |q, _, _| {
        let mut m = answer_to(q);
        m.metadata.response_code = rcode;
        vec![bytes(&m)]
    }
}

#[tokio::test(start_paused = true)]
async fn unexpected_rcode_fails_expected_one_succeeds() {
    let (probe, _) = probe_with(rcode_answer(ResponseCode::NXDomain));
    let mut o = opts("nope.example.com", "A");
    let (r, err) = probe.query(&server(), &o, o.timeout).await;
    assert_eq!(r.rcode, Some(3));
    assert!(!r.rcode_valid);
    assert_eq!(
        err,
        Some(ProbeError::Validation(
            "rcode NXDOMAIN is not one of the expected (NOERROR)".into()
        ))
    );
    o.valid_rcodes = vec![3];
    let (r, err) = probe.query(&server(), &o, o.timeout).await;
    assert_eq!(err, None);
    assert!(r.rcode_valid);
}

#[tokio::test(start_paused = true)]
async fn stray_and_hostile_datagrams_are_ignored() {
    let (probe, _) = probe_with(|q, via, addr| {
        let id = q.metadata.id;
        let mut out = vec![
            vec![],
            vec![0xff; 3],
            b"garbage that is not DNS at all".to_vec(),
        ];
        // Another query's answer.
        let mut other = answer_to(q);
        other.metadata.id = id.wrapping_add(1);
        out.push(bytes(&other));
        // Our ID but a different question.
        let mut wrong_q = Message::new(id, MessageType::Response, OpCode::Query);
        wrong_q.add_query(Query::query(
            Name::from_str("evil.example.").unwrap(),
            RecordType::A,
        ));
        out.push(bytes(&wrong_q));
        // Our ID, the query bit instead of the response bit.
        let mut echoed = bytes(q);
        echoed[2] &= 0x7f;
        out.push(echoed);
        // Our answer cut in the middle of a record (no TC bit).
        let full = good(q, via, addr).remove(0);
        out.push(full[..full.len() - 3].to_vec());
        // Header counts that promise more than the packet holds.
        let mut liar = full.clone();
        liar[6] = 0xff;
        liar[7] = 0xff;
        out.push(liar);
        out.push(full);
        out
    });
    let o = opts("www.example.com", "A");
    let (r, err) = probe.query(&server(), &o, o.timeout).await;
    assert_eq!(err, None, "{r:?}");
    assert_eq!(r.answers.len(), 2);
    assert_eq!(r.stray_datagrams, 8);
}

#[tokio::test(start_paused = true)]
async fn no_answer_is_a_timeout_within_the_configured_time() {
    let (probe, _) = probe_with(|q, _, _| {
        let mut junk = bytes(q);
        junk[0] ^= 0x55;
        vec![junk]
    });
    let o = opts("www.example.com", "A");
    let t0 = tokio::time::Instant::now();
    let (r, err) = probe.query(&server(), &o, Duration::from_millis(200)).await;
    let took = t0.elapsed();
    assert_eq!(err, Some(ProbeError::Timeout));
    assert!(
        took >= Duration::from_millis(190) && took < Duration::from_millis(400),
        "{took:?}"
    );
    assert_eq!(r.rcode, None);
    assert_eq!(r.stray_datagrams, 1);
    assert!(r.lookup.is_none());
}

#[tokio::test(start_paused = true)]
async fn a_flood_of_strays_ends_the_round_early() {
    let (probe, _) = probe_with(|q, _, _| {
        (0..200u16)
            .map(|i| {
                let mut m = answer_to(q);
                m.metadata.id = q.metadata.id.wrapping_add(i + 1);
                bytes(&m)
            })
            .collect()
    });
    let o = opts("www.example.com", "A");
    let (r, err) = probe.query(&server(), &o, Duration::from_secs(5)).await;
    assert!(
        matches!(err, Some(ProbeError::Protocol(ref m)) if m.contains("not an answer")),
        "{err:?}"
    );
    assert_eq!(r.stray_datagrams, defaults::DNS_MAX_STRAY_DATAGRAMS);
}

#[tokio::test(start_paused = true)]
async fn random_bytes_never_panic() {
    // Datagrams that start with our ID and the response bit, then random bytes: every one goes
    // through the full decoder.
    for round in 0..20u32 {
        let (probe, _) = probe_with(move |q, _, _| {
            (0..60)
                .map(|i| {
                    let len = (round as usize * 37 + i * 13) % 600 + 1;
                    let mut d: Vec<u8> = (0..len).map(|_| rand::random()).collect();
                    if d.len() >= 3 {
                        d[..2].copy_from_slice(&q.metadata.id.to_be_bytes());
                        d[2] |= 0x80;
                    }
                    d
                })
                .collect()
        });
        let o = opts("www.example.com", "TXT");
        let (_, err) = probe.query(&server(), &o, Duration::from_millis(50)).await;
        assert!(err.is_some());
    }
}

#[tokio::test(start_paused = true)]
async fn unprintable_records_do_not_panic() {
    let (probe, _) = probe_with(|q, _, _| {
        // hickory's Display refuses OPT data; a hostile server may put one in the answers.
        let mut d = bytes(&answer_to(q));
        d[7] = 1; // ANCOUNT
        d.extend_from_slice(&[0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0]);
        vec![d]
    });
    let mut o = opts("www.example.com", "A");
    o.answer_match = vec![Pattern(regex::Regex::new("x").unwrap())];
    // hickory's decoder refuses an OPT record outside the additional section: ignored.
    let (r, err) = probe.query(&server(), &o, o.timeout).await;
    assert_eq!(err, Some(ProbeError::Timeout));
    assert_eq!(r.stray_datagrams, 1);

    // Whatever else refuses to print comes out as a placeholder, not a panic.
    struct Refuses;
    impl fmt::Display for Refuses {
        fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
            Err(fmt::Error)
        }
    }
    assert_eq!(text(&Refuses), "<unprintable>");
    assert_eq!(
        text(&RData::OPT(hickory_proto::rr::rdata::OPT::new(vec![]))),
        "<unprintable>"
    );
}

#[tokio::test(start_paused = true)]
async fn truncated_udp_answer_is_retried_over_tcp() {
    let (probe, net) = probe_with(|q, via, _| {
        let name = q.queries[0].name().clone();
        let mut m = answer_to(q);
        match via {
            Via::Udp => {
                m.metadata.truncation = true;
                vec![bytes(&m)]
            }
            Via::Tcp => {
                for i in 0..100u8 {
                    m.add_answer(Record::from_rdata(
                        name.clone(),
                        60,
                        RData::TXT(TXT::new(vec![format!("record {i} {}", "x".repeat(60))])),
                    ));
                }
                vec![frame(&m)]
            }
        }
    });
    let o = opts("big.example.com", "TXT");
    let (r, err) = probe.query(&server(), &o, o.timeout).await;
    assert_eq!(err, None, "{r:?}");
    assert!(r.truncated_retry);
    assert_eq!(r.transport, Some(DnsTransport::Tcp));
    assert_eq!(r.answers.len(), 100);
    assert!(r.response_bytes > 6000);
    assert!(r.phases.connect.is_some());
    let log = net.log.lock().unwrap().clone();
    assert_eq!(
        log.iter().map(|l| l.0).collect::<Vec<_>>(),
        [Via::Udp, Via::Tcp]
    );
}

#[tokio::test(start_paused = true)]
async fn tcp_transport_and_its_failures() {
    let mut o = opts("mail.example.com", "MX");
    o.transport = DnsTransport::Tcp;
    o.answer_contains = vec![AnswerData::parse("mx1.example.com")];

    let (probe, net) = probe_with(|q, _, _| {
        let mut m = answer_to(q);
        m.add_answer(Record::from_rdata(
            q.queries[0].name().clone(),
            60,
            RData::MX(MX::new(10, Name::from_str("mx1.example.com.").unwrap())),
        ));
        vec![frame(&m)]
    });
    let (r, err) = probe.query(&server(), &o, o.timeout).await;
    assert_eq!(err, None, "{r:?}");
    assert_eq!(r.answers[0].data, "10 mx1.example.com.");
    assert_eq!(r.transport, Some(DnsTransport::Tcp));
    assert!(!r.truncated_retry);
    assert_eq!(net.log.lock().unwrap()[0].0, Via::Tcp);

    // An answer to some other ID on the stream.
    let (probe, _) = probe_with(|q, _, _| {
        let mut m = answer_to(q);
        m.metadata.id ^= 1;
        vec![frame(&m)]
    });
    let (_, err) = probe.query(&server(), &o, o.timeout).await;
    assert!(
        matches!(err, Some(ProbeError::Protocol(ref m)) if m.contains("not the answer")),
        "{err:?}"
    );

    // A frame that promises more than is sent before the close.
    let (probe, _) = probe_with(|_, _, _| vec![vec![0x01, 0x00, 1, 2, 3]]);
    let (_, err) = probe.query(&server(), &o, o.timeout).await;
    assert!(
        matches!(err, Some(ProbeError::Protocol(ref m)) if m.contains("closed the connection")),
        "{err:?}"
    );

    // Garbage in a well-framed message.
    let (probe, _) = probe_with(|q, _, _| {
        let mut f = frame(&answer_to(q));
        let n = f.len();
        f.truncate(n - 4);
        f[0..2].copy_from_slice(&((n - 6) as u16).to_be_bytes());
        vec![f]
    });
    let (_, err) = probe.query(&server(), &o, o.timeout).await;
    assert!(
        matches!(err, Some(ProbeError::Protocol(ref m)) if m.contains("malformed")),
        "{err:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn system_resolver_moves_on_like_glibc() {
    let dir = std::env::temp_dir().join(format!("vantage-dns-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("resolv.conf");
    std::fs::write(
        &conf,
        "# a comment\nsearch example.com\nnameserver 192.0.2.1\nnameserver bogus\noptions edns0\nnameserver 192.0.2.2\nnameserver 192.0.2.3\nnameserver 192.0.2.4\n",
    )
    .unwrap();
    let servers = system_nameservers(&conf, 53).unwrap();
    assert_eq!(
        servers,
        ["192.0.2.1:53", "192.0.2.2:53", "192.0.2.3:53"].map(|s| s.parse::<SocketAddr>().unwrap())
    );

    // The first server says SERVFAIL, the second does not answer, the third does.
    let (probe, net) = probe_with_resolv(
        |q, via, addr| match addr.ip().to_string().as_str() {
            "192.0.2.1" => rcode_answer(ResponseCode::ServFail)(q, via, addr),
            "192.0.2.2" => vec![],
            _ => good(q, via, addr),
        },
        conf.clone(),
    );
    let system = Host::Name("system".into());
    let o = opts("www.example.com", "A");
    let (r, err) = probe.query(&system, &o, Duration::from_millis(600)).await;
    assert_eq!(err, None, "{r:?}");
    assert_eq!(r.attempts, 3);
    assert_eq!(r.server, Some("192.0.2.3:53".parse().unwrap()));
    assert_eq!(net.log.lock().unwrap().len(), 3);

    // When every server fails, the last one's answer is what applications see.
    let (probe, _) = probe_with_resolv(rcode_answer(ResponseCode::ServFail), conf.clone());
    let (r, err) = probe.query(&system, &o, o.timeout).await;
    assert_eq!(r.rcode, Some(2));
    assert_eq!(r.attempts, 3);
    assert!(matches!(err, Some(ProbeError::Validation(ref m)) if m.contains("SERVFAIL")));

    // No nameserver lines: glibc asks 127.0.0.1.
    std::fs::write(&conf, "search example.com\n").unwrap();
    assert_eq!(
        system_nameservers(&conf, 53).unwrap(),
        vec!["127.0.0.1:53".parse::<SocketAddr>().unwrap()]
    );
    std::fs::write(&conf, "nameserver fe80::1%1\nnameserver ::1\n").unwrap();
    let v6 = system_nameservers(&conf, 5353).unwrap();
    assert_eq!(v6[0].to_string(), "[fe80::1%1]:5353");
    assert_eq!(v6[1].to_string(), "[::1]:5353");
    std::fs::remove_dir_all(&dir).unwrap();

    let (probe, _) = probe_with(good);
    let (_, err) = probe.query(&system, &o, o.timeout).await;
    assert!(
        matches!(err, Some(ProbeError::Resolve(ref m)) if m.contains("cannot read")),
        "{err:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn query_carries_the_options() {
    let seen = Arc::new(Mutex::new(None));
    let s2 = seen.clone();
    let (probe, _) = probe_with(move |q, via, addr| {
        *s2.lock().unwrap() = Some(q.clone());
        good(q, via, addr)
    });
    let mut o = opts("192.0.2.7", "PTR");
    o.recursion_desired = false;
    o.dnssec = true;
    o.edns_udp_size = 4096;
    o.port = 5300;
    let (r, _) = probe.query(&server(), &o, o.timeout).await;
    assert_eq!(r.server, Some("192.0.2.53:5300".parse().unwrap()));
    let q = seen.lock().unwrap().clone().unwrap();
    assert!(!q.metadata.recursion_desired);
    assert_eq!(q.queries[0].name().to_ascii(), "7.2.0.192.in-addr.arpa.");
    assert_eq!(q.queries[0].query_type(), RecordType::PTR);
    let edns = q.edns.as_ref().unwrap();
    assert_eq!(edns.max_payload(), 4096);
    assert!(edns.flags().dnssec_ok);

    o.edns_udp_size = 0;
    o.dnssec = false;
    probe.query(&server(), &o, o.timeout).await;
    assert!(seen.lock().unwrap().as_ref().unwrap().edns.is_none());
}

#[tokio::test(start_paused = true)]
async fn run_emits_a_sample() {
    let cfg = crate::config::Config::parse(
        r#"
[[targets]]
name = "resolver"
host = "192.0.2.53"
probes = ["dns"]
dns = { query = "example.com", type = "A", answer_contains = ["192.0.2.1"] }
"#,
        "inline",
    )
    .unwrap();
    let (probe, _) = probe_with(good);
    let s = probe.run(ProbeRequest::for_target(&cfg.targets[0])).await;
    assert!(s.success, "{s:?}");
    assert_eq!(s.probe, ProbeKind::DNS);
    let values: HashMap<_, _> = s.values().into_iter().collect();
    assert_eq!(values["success"], 1.0);
    assert_eq!(values["rcode"], 0.0);
    assert_eq!(values["answer_records"], 2.0);
    assert_eq!(values["validation_failed"], 0.0);
    assert!(values.contains_key("request_seconds"));
    assert!(!values.contains_key("connect_seconds"));

    // A deadline shorter than the timeout wins.
    let (probe, _) = probe_with(|_, _, _| vec![]);
    let mut req = ProbeRequest::for_target(&cfg.targets[0]);
    req.deadline = Some(Duration::from_millis(100));
    let t0 = tokio::time::Instant::now();
    let s = probe.run(req).await;
    assert!(t0.elapsed() < Duration::from_secs(1));
    assert_eq!(s.error, Some(ProbeError::Timeout));
    assert!(!s.success);
}

/// DNS over HTTPS against a scripted HTTP/2 server, behind TLS, on an in-memory pipe.
mod doh {
    use std::future::poll_fn;
    use std::task::Poll;

    use bytes::Bytes;
    use h2::Reason;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

    use super::*;
    use crate::probe::dns::options::DohMethod;

    /// What the fake server saw of one request.
    #[derive(Debug, Clone, Default)]
    struct Seen {
        method: String,
        path: String,
        authority: String,
        content_type: Option<String>,
        accept: Option<String>,
        sni: Option<String>,
        alpn: Option<Vec<u8>>,
        query: Option<Message>,
    }

    /// How the fake server answers one request.
    enum Reply {
        /// Status, content type and body.
        Http(u16, Option<&'static str>, Vec<u8>),
        /// Headers, then a stream reset in place of the body.
        ResetBody,
        /// A stream reset in place of the answer.
        Reset(Reason),
        /// GOAWAY for the whole connection.
        GoAway,
    }

    type DohScript = dyn Fn(&Seen) -> Reply + Send + Sync;

    struct DohNet {
        script: Box<DohScript>,
        acceptor: tokio_rustls::TlsAcceptor,
        /// After the TLS handshake, send this instead of speaking HTTP/2.
        not_h2: Option<Vec<u8>>,
        seen: Mutex<Vec<Seen>>,
    }

    impl fmt::Debug for DohNet {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("DohNet")
        }
    }

    #[derive(Debug, Clone)]
    struct DohConnector(Arc<DohNet>);

    impl DnsConnector for DohConnector {
        fn udp<'a>(
            &'a self,
            _server: SocketAddr,
            _source: Option<IpAddr>,
        ) -> BoxFuture<'a, io::Result<Box<dyn DatagramChannel>>> {
            Box::pin(async { Err(io::Error::other("no UDP in DoH tests")) })
        }

        fn tcp<'a>(
            &'a self,
            _server: SocketAddr,
            _source: Option<IpAddr>,
        ) -> BoxFuture<'a, io::Result<Box<dyn ByteStream>>> {
            Box::pin(async move {
                let (client, srv) = tokio::io::duplex(1 << 17);
                tokio::spawn(serve(self.0.clone(), srv));
                Ok(Box::new(client) as Box<dyn ByteStream>)
            })
        }
    }

    async fn serve(net: Arc<DohNet>, srv: tokio::io::DuplexStream) {
        let Ok(mut tls) = net.acceptor.accept(srv).await else {
            return;
        };
        let (_, session) = tls.get_ref();
        let base = Seen {
            sni: session.server_name().map(str::to_string),
            alpn: session.alpn_protocol().map(<[u8]>::to_vec),
            ..Seen::default()
        };
        if let Some(junk) = &net.not_h2 {
            let _ = tls.write_all(junk).await;
            let _ = tls.flush().await;
            let mut sink = Vec::new();
            let _ = tls.read_to_end(&mut sink).await;
            return;
        }
        let Ok(mut conn) = h2::server::handshake(tls).await else {
            return;
        };
        let (goaway_tx, mut goaway_rx) = mpsc::unbounded_channel::<Reason>();
        loop {
            let next = poll_fn(|cx| {
                if let Poll::Ready(Some(reason)) = goaway_rx.poll_recv(cx) {
                    conn.abrupt_shutdown(reason);
                }
                conn.poll_accept(cx)
            })
            .await;
            let Some(Ok((req, respond))) = next else {
                // Linger a little, as servers do after a GOAWAY, before the socket goes.
                tokio::time::sleep(Duration::from_millis(200)).await;
                break;
            };
            tokio::spawn(handle(
                net.clone(),
                base.clone(),
                req,
                respond,
                goaway_tx.clone(),
            ));
        }
    }

    async fn handle(
        net: Arc<DohNet>,
        mut seen: Seen,
        req: http::Request<h2::RecvStream>,
        mut respond: h2::server::SendResponse<Bytes>,
        goaway: mpsc::UnboundedSender<Reason>,
    ) {
        let (parts, mut body) = req.into_parts();
        let header = |name: http::header::HeaderName| {
            parts
                .headers
                .get(name)
                .map(|v| v.to_str().unwrap().to_string())
        };
        seen.method = parts.method.to_string();
        seen.path = parts.uri.path_and_query().unwrap().to_string();
        seen.authority = parts.uri.authority().unwrap().to_string();
        seen.content_type = header(http::header::CONTENT_TYPE);
        seen.accept = header(http::header::ACCEPT);
        let mut packet = Vec::new();
        while let Some(Ok(chunk)) = body.data().await {
            let _ = body.flow_control().release_capacity(chunk.len());
            packet.extend_from_slice(&chunk);
        }
        if let Some((_, dns)) = seen.path.split_once("dns=") {
            packet = base64url_decode(dns);
        }
        seen.query = Message::from_vec(&packet).ok();
        net.seen.lock().unwrap().push(seen.clone());
        match (net.script)(&seen) {
            Reply::Http(status, content_type, data) => {
                let mut b = http::Response::builder().status(status);
                if let Some(t) = content_type {
                    b = b.header(http::header::CONTENT_TYPE, t);
                }
                let Ok(mut tx) = respond.send_response(b.body(()).unwrap(), false) else {
                    return;
                };
                // In pieces, as a large answer would come.
                for piece in data.chunks(16 * 1024) {
                    tx.reserve_capacity(piece.len());
                    let _ = tx.send_data(Bytes::copy_from_slice(piece), false);
                }
                let _ = tx.send_data(Bytes::new(), true);
            }
            Reply::ResetBody => {
                let head = http::Response::builder()
                    .status(200)
                    .header(http::header::CONTENT_TYPE, "application/dns-message")
                    .body(())
                    .unwrap();
                if let Ok(mut tx) = respond.send_response(head, false) {
                    let _ = tx.send_data(Bytes::from_static(&[0, 0, 0x81]), false);
                    tx.send_reset(Reason::INTERNAL_ERROR);
                }
            }
            Reply::Reset(reason) => respond.send_reset(reason),
            Reply::GoAway => {
                let _ = goaway.send(Reason::INTERNAL_ERROR);
            }
        }
    }

    fn base64url_decode(s: &str) -> Vec<u8> {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let bits: Vec<u32> = s
            .bytes()
            .map(|c| ALPHABET.iter().position(|&a| a == c).unwrap() as u32)
            .collect();
        let mut out = Vec::new();
        for chunk in bits.chunks(4) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, b)| n | (b << (18 - 6 * i)));
            for i in 0..chunk.len() - 1 {
                out.push((n >> (16 - 8 * i)) as u8);
            }
        }
        out
    }

    fn acceptor() -> tokio_rustls::TlsAcceptor {
        let cert =
            rcgen::generate_simple_self_signed(vec!["dns.example.test".to_string()]).unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key_pair.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![CertificateDer::from(cert.cert.der().to_vec())], key)
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }

    fn doh_probe(
        script: impl Fn(&Seen) -> Reply + Send + Sync + 'static,
    ) -> (DnsProbe, Arc<DohNet>) {
        doh_probe_with(script, None)
    }

    fn doh_probe_with(
        script: impl Fn(&Seen) -> Reply + Send + Sync + 'static,
        not_h2: Option<Vec<u8>>,
    ) -> (DnsProbe, Arc<DohNet>) {
        let net = Arc::new(DohNet {
            script: Box::new(script),
            acceptor: acceptor(),
            not_h2,
            seen: Mutex::new(Vec::new()),
        });
        let probe = DnsProbe::with_parts(
            Arc::new(DohConnector(net.clone())),
            Arc::new(TokioClock::new()),
            "/nonexistent/resolv.conf".into(),
        );
        (probe, net)
    }

    fn doh_opts() -> DnsOptions {
        let mut o = opts("www.example.com", "A");
        o.transport = DnsTransport::Https;
        o.port = 443;
        o.server_name = Some("dns.example.test".into());
        o.insecure_skip_verify = true;
        o.timeout = Duration::from_secs(2);
        o
    }

    /// The good answer to what the server saw, as an HTTP body.
    fn good_body(seen: &Seen) -> Vec<u8> {
        let q = seen.query.as_ref().expect("the request carries a query");
        good(q, Via::Tcp, "192.0.2.53:443".parse().unwrap()).remove(0)
    }

    fn ok(seen: &Seen) -> Reply {
        Reply::Http(200, Some("application/dns-message"), good_body(seen))
    }

    #[tokio::test(start_paused = true)]
    async fn post_answer_is_reported_with_its_phases() {
        let (probe, net) = doh_probe(ok);
        let mut o = doh_opts();
        o.answer_contains = vec![AnswerData::parse("192.0.2.2")];
        let (r, err) = probe.query(&server(), &o, o.timeout).await;
        assert_eq!(err, None, "{r:?}");
        assert_eq!(r.transport, Some(DnsTransport::Https));
        assert_eq!(r.transport.unwrap().as_str(), "https");
        assert_eq!(r.server, Some("192.0.2.53:443".parse().unwrap()));
        assert_eq!(r.answers.len(), 2);
        assert!(r.response_bytes > 12);
        let p = r.phases;
        assert!(
            p.connect.is_some() && p.tls.is_some() && p.request.is_some(),
            "{p:?}"
        );
        let seen = net.seen.lock().unwrap()[0].clone();
        assert_eq!(seen.method, "POST");
        assert_eq!(seen.path, "/dns-query");
        assert_eq!(seen.authority, "dns.example.test");
        assert_eq!(
            seen.content_type.as_deref(),
            Some("application/dns-message")
        );
        assert_eq!(seen.accept.as_deref(), Some("application/dns-message"));
        assert_eq!(seen.sni.as_deref(), Some("dns.example.test"));
        assert_eq!(seen.alpn.as_deref(), Some(&b"h2"[..]));
        let q = seen.query.unwrap();
        assert_eq!(q.metadata.id, 0, "RFC 8484 asks for ID 0");
        assert_eq!(q.queries[0].name().to_ascii(), "www.example.com.");
    }

    #[tokio::test(start_paused = true)]
    async fn get_sends_the_query_in_the_url() {
        let (probe, net) = doh_probe(ok);
        let mut o = doh_opts();
        o.doh_method = DohMethod::Get;
        o.doh_path = "/resolve?ct=1".into();
        o.port = 8443;
        let (r, err) = probe.query(&server(), &o, o.timeout).await;
        assert_eq!(err, None, "{r:?}");
        let seen = net.seen.lock().unwrap()[0].clone();
        assert_eq!(seen.method, "GET");
        assert!(seen.path.starts_with("/resolve?ct=1&dns="), "{}", seen.path);
        assert!(!seen.path.contains('='.to_string().repeat(2).as_str()));
        assert_eq!(seen.authority, "dns.example.test:8443");
        assert_eq!(seen.content_type, None);
        let q = seen.query.unwrap();
        assert_eq!(q.queries[0].name().to_ascii(), "www.example.com.");
        assert_eq!(q.metadata.id, 0);
    }

    #[test]
    fn base64url_matches_rfc_8484() {
        // RFC 8484 section 4.1.1: www.example.com A, ID 0, RD, no EDNS.
        let mut o = opts("www.example.com", "A");
        o.edns_udp_size = 0;
        let (_, packet) = build_query_with_id(&o, 0).unwrap();
        assert_eq!(
            https::base64url(&packet),
            "AAABAAABAAAAAAAAA3d3dwdleGFtcGxlA2NvbQAAAQAB"
        );
        assert_eq!(https::base64url(b""), "");
        assert_eq!(https::base64url(b"\xfb\xff"), "-_8");
        for n in 0..40u8 {
            let data: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37) ^ 0xa5).collect();
            assert_eq!(base64url_decode(&https::base64url(&data)), data);
        }
        assert_eq!(https::authority("2001:db8::53", 443), "[2001:db8::53]");
        assert_eq!(https::authority("192.0.2.53", 8443), "192.0.2.53:8443");
    }

    async fn fails_with(reply: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> ProbeError {
        let (probe, _) = doh_probe(reply);
        let o = doh_opts();
        let (r, err) = probe.query(&server(), &o, o.timeout).await;
        assert_eq!(r.transport, Some(DnsTransport::Https));
        assert!(r.phases.request.is_some(), "{r:?}");
        assert_eq!(r.rcode, None);
        err.expect("the probe fails")
    }

    #[tokio::test(start_paused = true)]
    async fn http_errors_name_the_status() {
        let err = fails_with(|_| Reply::Http(500, Some("text/plain"), b"oops".to_vec())).await;
        assert_eq!(
            err,
            ProbeError::Protocol(
                "https://dns.example.test/dns-query answered HTTP status 500 Internal Server Error"
                    .into()
            )
        );
        // Even with a DNS message in the body: the status decides.
        let err =
            fails_with(|s| Reply::Http(404, Some("application/dns-message"), good_body(s))).await;
        assert!(
            err.to_string().contains("HTTP status 404 Not Found"),
            "{err}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_content_type_must_be_a_dns_message() {
        let err = fails_with(|s| Reply::Http(200, Some("text/html"), good_body(s))).await;
        assert!(
            matches!(&err, ProbeError::Protocol(m) if m.contains("content-type \"text/html\", not application/dns-message")),
            "{err:?}"
        );
        let err = fails_with(|s| Reply::Http(200, None, good_body(s))).await;
        assert!(err.to_string().contains("without a content-type"), "{err}");
        // Case and parameters do not matter.
        let (probe, _) = doh_probe(|s| {
            Reply::Http(
                200,
                Some("Application/DNS-Message; charset=binary"),
                good_body(s),
            )
        });
        let o = doh_opts();
        let (_, err) = probe.query(&server(), &o, o.timeout).await;
        assert_eq!(err, None);
    }

    #[tokio::test(start_paused = true)]
    async fn truncated_garbled_and_oversized_bodies_fail() {
        let err = fails_with(|s| {
            let b = good_body(s);
            Reply::Http(
                200,
                Some("application/dns-message"),
                b[..b.len() - 5].to_vec(),
            )
        })
        .await;
        assert!(err.to_string().contains("malformed answer"), "{err}");
        let err = fails_with(|_| Reply::Http(200, Some("application/dns-message"), vec![])).await;
        assert!(err.to_string().contains("not the answer"), "{err}");
        let err = fails_with(|_| {
            Reply::Http(
                200,
                Some("application/dns-message"),
                b"<html>definitely not DNS</html>".to_vec(),
            )
        })
        .await;
        assert!(matches!(err, ProbeError::Protocol(_)), "{err:?}");
        let err =
            fails_with(|_| Reply::Http(200, Some("application/dns-message"), vec![0; 70_000]))
                .await;
        assert!(err.to_string().contains("more than 65535 bytes"), "{err}");
        // Random bodies that start like our answer never panic.
        for round in 0..20usize {
            let (probe, _) = doh_probe(move |_| {
                let mut d: Vec<u8> = (0..(round * 29 % 400 + 3))
                    .map(|_| rand::random())
                    .collect();
                d[..3].copy_from_slice(&[0, 0, 0x81]);
                Reply::Http(200, Some("application/dns-message"), d)
            });
            let mut o = doh_opts();
            o.record_type = RecordType::TXT;
            let (_, err) = probe.query(&server(), &o, o.timeout).await;
            assert!(err.is_some());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn resets_goaway_and_non_http2_peers_fail_cleanly() {
        let err = fails_with(|_| Reply::Reset(Reason::REFUSED_STREAM)).await;
        assert!(
            err.to_string()
                .contains("reset the HTTP/2 stream (REFUSED_STREAM)"),
            "{err}"
        );
        let err = fails_with(|_| Reply::ResetBody).await;
        assert!(err.to_string().contains("INTERNAL_ERROR"), "{err}");
        // A GOAWAY that still covers our stream (last stream ID 1), then the close.
        let err = fails_with(|_| Reply::GoAway).await;
        assert_eq!(
            err,
            ProbeError::Protocol(
                "192.0.2.53:443 closed the connection without a complete answer".into()
            )
        );

        // A TLS server that does not speak HTTP/2.
        let (probe, _) = doh_probe_with(ok, Some(b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec()));
        let o = doh_opts();
        let t0 = tokio::time::Instant::now();
        let (r, err) = probe.query(&server(), &o, o.timeout).await;
        assert!(
            matches!(&err, Some(ProbeError::Protocol(_) | ProbeError::Network(_))),
            "{err:?}"
        );
        assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
        assert!(r.phases.tls.is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn an_unverified_certificate_is_refused() {
        let (probe, net) = doh_probe(ok);
        let mut o = doh_opts();
        o.insecure_skip_verify = false;
        let (r, err) = probe.query(&server(), &o, o.timeout).await;
        assert!(
            matches!(&err, Some(ProbeError::Network(m)) if m.contains("TLS handshake") && m.contains("certificate")),
            "{err:?}"
        );
        assert!(r.phases.tls.is_none() && r.phases.request.is_none());
        assert!(net.seen.lock().unwrap().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_server_is_a_timeout() {
        let (probe, _) = doh_probe_with(ok, Some(vec![]));
        let o = doh_opts();
        let t0 = tokio::time::Instant::now();
        let (_, err) = probe.query(&server(), &o, Duration::from_millis(300)).await;
        assert_eq!(err, Some(ProbeError::Timeout));
        assert!(t0.elapsed() < Duration::from_secs(1));
    }
}
