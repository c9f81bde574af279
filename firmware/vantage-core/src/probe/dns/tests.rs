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

use super::*;
use crate::config::{AnswerData, Pattern};
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
        Arc::new(SystemClock),
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

#[tokio::test]
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

#[tokio::test]
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

#[tokio::test]
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

#[tokio::test]
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

#[tokio::test]
async fn no_answer_is_a_timeout_within_the_configured_time() {
    let (probe, _) = probe_with(|q, _, _| {
        let mut junk = bytes(q);
        junk[0] ^= 0x55;
        vec![junk]
    });
    let o = opts("www.example.com", "A");
    let t0 = std::time::Instant::now();
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

#[tokio::test]
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

#[tokio::test]
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

#[tokio::test]
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

#[tokio::test]
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

#[tokio::test]
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

#[tokio::test]
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

#[tokio::test]
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

#[tokio::test]
async fn run_emits_a_sample() {
    let cfg = crate::Config::parse(
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
    assert_eq!(s.probe, ProbeKind::Dns);
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
    let t0 = std::time::Instant::now();
    let s = probe.run(req).await;
    assert!(t0.elapsed() < Duration::from_secs(1));
    assert_eq!(s.error, Some(ProbeError::Timeout));
    assert!(!s.success);
}
