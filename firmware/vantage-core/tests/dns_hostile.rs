//! A tiny hostile DNS server on loopback (UDP and TCP on one port) answers the probe with
//! garbage, wrong IDs, cut packets and lies. The probe must never panic, must not take longer
//! than its timeout, and must only accept a real answer to its question. No root needed.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::Message;
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record};
use vantage_core::{Config, DnsProbe, Probe, ProbeError, ProbeRequest, Sample};

/// What the server does with each query.
#[derive(Debug, Clone, Copy)]
enum Mode {
    /// Random bytes, then nothing.
    Garbage,
    /// Answers with the wrong ID, then the right answer.
    WrongIdsThenAnswer,
    /// Our answer cut short, without the TC bit.
    Cut,
    /// A truncated UDP answer; over TCP a frame that lies about its length.
    TruncatedThenLyingTcp,
    /// A truncated UDP answer; over TCP random bytes.
    TruncatedThenGarbageTcp,
    /// Random bytes behind our ID and the response bit: the decoder sees all of it.
    Fuzz,
}

fn rand_bytes(n: usize) -> Vec<u8> {
    (0..n).map(|_| rand::random::<u8>()).collect()
}

fn answer(query: &Message) -> Vec<u8> {
    let mut m = Message::response(query.metadata.id, query.metadata.op_code);
    m.metadata.recursion_desired = query.metadata.recursion_desired;
    m.add_queries(query.queries.clone());
    let name = query.queries[0].name().clone();
    m.add_answer(Record::from_rdata(name, 60, RData::A(A::new(192, 0, 2, 1))));
    m.to_vec().unwrap()
}

struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn serve(mode: Mode) -> Server {
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = tcp.local_addr().unwrap();
    let udp = UdpSocket::bind(addr).unwrap();
    udp.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    tcp.set_nonblocking(true).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let s1 = stop.clone();
    let udp_thread = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while !s1.load(Ordering::Relaxed) {
            let Ok((n, from)) = udp.recv_from(&mut buf) else {
                continue;
            };
            let q = Message::from_vec(&buf[..n]).unwrap();
            let good = answer(&q);
            let id = q.metadata.id.to_be_bytes();
            let mut out: Vec<Vec<u8>> = Vec::new();
            match mode {
                Mode::Garbage => {
                    for len in [0, 1, 11, 12, 13, 100, 512, 1500] {
                        out.push(rand_bytes(len));
                    }
                }
                Mode::WrongIdsThenAnswer => {
                    for k in 1..10u16 {
                        let mut d = good.clone();
                        d[..2].copy_from_slice(&(q.metadata.id ^ k).to_be_bytes());
                        out.push(d);
                    }
                    out.push(good);
                }
                Mode::Cut => {
                    for cut in [2, 12, 20, good.len() - 1] {
                        out.push(good[..cut].to_vec());
                    }
                }
                Mode::TruncatedThenLyingTcp | Mode::TruncatedThenGarbageTcp => {
                    let mut m = Message::response(q.metadata.id, q.metadata.op_code);
                    m.add_queries(q.queries.clone());
                    m.metadata.truncation = true;
                    out.push(m.to_vec().unwrap());
                }
                Mode::Fuzz => {
                    for i in 0..40 {
                        let mut d = rand_bytes(3 + (i * 29) % 700);
                        d[..2].copy_from_slice(&id);
                        d[2] |= 0x80;
                        out.push(d);
                    }
                }
            }
            for d in out {
                let _ = udp.send_to(&d, from);
            }
        }
    });
    let s2 = stop.clone();
    let tcp_thread = std::thread::spawn(move || {
        use std::io::{Read, Write};
        while !s2.load(Ordering::Relaxed) {
            let Ok((mut conn, _)) = tcp.accept() else {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            };
            conn.set_nonblocking(false).unwrap();
            conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut len = [0u8; 2];
            if conn.read_exact(&mut len).is_err() {
                continue;
            }
            let mut q = vec![0u8; u16::from_be_bytes(len) as usize];
            if conn.read_exact(&mut q).is_err() {
                continue;
            }
            let reply = match mode {
                // Promises 60000 bytes, sends 10 and closes.
                Mode::TruncatedThenLyingTcp => [vec![0xea, 0x60], rand_bytes(10)].concat(),
                _ => rand_bytes(300),
            };
            let _ = conn.write_all(&reply);
        }
    });
    Server {
        addr,
        stop,
        threads: vec![udp_thread, tcp_thread],
    }
}

fn probe(server: &Server, timeout: &str) -> Sample {
    let toml = format!(
        "[[targets]]\nname = \"hostile\"\nhost = \"127.0.0.1\"\nprobes = [\"dns\"]\n\
         dns = {{ query = \"www.example.test\", port = {}, timeout = \"{timeout}\" }}\n",
        server.addr.port()
    );
    let cfg = Config::parse(&toml, "test").unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(DnsProbe::new().run(ProbeRequest::for_target(&cfg.targets[0])))
}

fn strays(s: &Sample) -> u32 {
    s.measurement.dns().map_or(0, |r| r.stray_datagrams)
}

#[test]
fn garbage_is_ignored_until_the_timeout() {
    let server = serve(Mode::Garbage);
    let t0 = Instant::now();
    let s = probe(&server, "300ms");
    assert_eq!(s.error, Some(ProbeError::Timeout), "{s:?}");
    // The probe's own measure says the garbage did not extend the 300 ms timeout; the wall
    // bound only catches a hang, with room for a loaded machine or qemu-user.
    assert!(
        s.duration >= Duration::from_millis(290) && s.duration < Duration::from_millis(1500),
        "{:?}",
        s.duration
    );
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    // The empty datagram may or may not be delivered; the rest are.
    assert!(strays(&s) >= 7, "{s:?}");
}

#[test]
fn wrong_ids_are_skipped_and_the_answer_taken() {
    let server = serve(Mode::WrongIdsThenAnswer);
    let s = probe(&server, "1s");
    assert!(s.success, "{s:?}");
    assert_eq!(strays(&s), 9);
}

#[test]
fn cut_packets_are_not_answers() {
    let server = serve(Mode::Cut);
    let s = probe(&server, "300ms");
    assert_eq!(s.error, Some(ProbeError::Timeout), "{s:?}");
    assert_eq!(strays(&s), 4);
}

#[test]
fn lies_over_tcp_after_truncation_are_protocol_errors() {
    let server = serve(Mode::TruncatedThenLyingTcp);
    let s = probe(&server, "1s");
    assert!(
        matches!(&s.error, Some(ProbeError::Protocol(m)) if m.contains("closed the connection")),
        "{s:?}"
    );
    let server = serve(Mode::TruncatedThenGarbageTcp);
    let s = probe(&server, "1s");
    assert!(!s.success);
    assert!(
        matches!(
            &s.error,
            Some(ProbeError::Protocol(_)) | Some(ProbeError::Timeout)
        ),
        "{s:?}"
    );
    match s.measurement.dns() {
        Some(r) => assert!(r.truncated_retry),
        None => panic!("{:?}", s.measurement),
    }
}

#[test]
fn fuzzed_answers_never_panic() {
    let server = serve(Mode::Fuzz);
    for _ in 0..10 {
        let s = probe(&server, "100ms");
        assert!(!s.success || strays(&s) < 40);
    }
}
