//! The ping engine against a scripted network: no root, no real sockets.

use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{Mutex as AsyncMutex, mpsc};

use super::options::PingOptions;
use super::*;
use crate::clock::TokioClock;
use crate::net::{
    BoxFuture, IcmpSocket, IcmpSocketFactory, Received, SENT_HEAD_LEN, SentStamp, SocketKey,
    SocketKind,
};

/// What the fake network does with an echo request to an address.
#[derive(Debug, Clone, Copy)]
enum Behaviour {
    Reply(Duration),
    Drop,
    Duplicate(Duration),
    Unreachable,
    ForeignCookie,
    Garbage,
    SendFails,
}

fn behaviour(addr: IpAddr) -> Behaviour {
    match addr.to_string().as_str() {
        "10.0.0.1" | "fd00::1" => Behaviour::Reply(Duration::from_millis(5)),
        "10.0.0.2" => Behaviour::Drop,
        "10.0.0.3" => Behaviour::Duplicate(Duration::from_millis(2)),
        "10.0.0.4" => Behaviour::Unreachable,
        "10.0.0.5" => Behaviour::ForeignCookie,
        "10.0.0.6" => Behaviour::Garbage,
        "10.0.0.7" => Behaviour::Reply(Duration::from_millis(300)),
        "10.0.0.8" => Behaviour::SendFails,
        _ => Behaviour::Drop,
    }
}

#[derive(Debug)]
struct FakeSocket {
    /// The probe's clock too: replies are stamped on tokio's paused time, as the probe reads it.
    clock: TokioClock,
    ipv6: bool,
    tx: mpsc::UnboundedSender<(Vec<u8>, IpAddr, SystemTime)>,
    rx: AsyncMutex<mpsc::UnboundedReceiver<(Vec<u8>, IpAddr, SystemTime)>>,
    /// Like `SO_TIMESTAMPING`: each request is stamped this long after the probe read its clock,
    /// and a foreign packet's stamp comes with it.
    send_stamp_after: Option<Duration>,
    stamps: std::sync::Mutex<Vec<SentStamp>>,
}

impl FakeSocket {
    fn deliver(&self, packet: Vec<u8>, from: IpAddr, after: Duration, sent_wall: SystemTime) {
        let tx = self.tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let _ = tx.send((packet, from, sent_wall + after));
        });
    }
}

impl IcmpSocket for FakeSocket {
    fn kind(&self) -> SocketKind {
        SocketKind::Datagram
    }

    fn stamps_sends(&self) -> bool {
        self.send_stamp_after.is_some()
    }

    fn sent_stamps(&self, out: &mut Vec<SentStamp>) {
        out.append(&mut self.stamps.lock().unwrap());
    }

    fn send_to(&self, packet: &[u8], to: IpAddr) -> io::Result<()> {
        let now = self.clock.wall();
        if let Some(after) = self.send_stamp_after {
            let head: [u8; SENT_HEAD_LEN] = packet[..SENT_HEAD_LEN].try_into().unwrap();
            let mut foreign = head;
            foreign[8] ^= 0xff;
            let mut stamps = self.stamps.lock().unwrap();
            for (icmp_head, late) in [(foreign, Duration::ZERO), (head, after)] {
                let time = now + late;
                stamps.push(SentStamp {
                    to,
                    icmp_head,
                    time,
                });
            }
        }
        let mut reply = packet.to_vec();
        reply[0] = if self.ipv6 { 129 } else { 0 };
        match behaviour(to) {
            Behaviour::Reply(d) => self.deliver(reply, to, d, now),
            Behaviour::Drop => {}
            Behaviour::Duplicate(d) => {
                // Reply and duplicate leave together, so the test does not depend on timers.
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(d).await;
                    let _ = tx.send((reply.clone(), to, now + d));
                    let _ = tx.send((reply, to, now + d));
                });
            }
            Behaviour::Unreachable => {
                // Type 3 code 1 from a router, quoting our IPv4 header and echo header.
                let mut err = vec![3, 1, 0, 0, 0, 0, 0, 0];
                let mut ip = vec![0x45, 0, 0, 84, 0, 0, 0, 0, 64, 1, 0, 0, 10, 0, 0, 99];
                if let IpAddr::V4(v4) = to {
                    ip.extend_from_slice(&v4.octets());
                }
                err.extend_from_slice(&ip);
                err.extend_from_slice(&packet[..8]);
                self.deliver(
                    err,
                    "10.9.9.9".parse().unwrap(),
                    Duration::from_millis(1),
                    now,
                );
            }
            Behaviour::ForeignCookie => {
                reply[8] ^= 0xff;
                self.deliver(reply, to, Duration::from_millis(1), now);
            }
            Behaviour::Garbage => {
                self.deliver(vec![0, 0, 1], to, Duration::from_millis(1), now);
                self.deliver(vec![], to, Duration::from_millis(1), now);
                self.deliver(vec![0xff; 40], to, Duration::from_millis(1), now);
            }
            Behaviour::SendFails => return Err(io::Error::other("Network is unreachable")),
        }
        Ok(())
    }

    fn recv<'a>(&'a self, buf: &'a mut [u8]) -> BoxFuture<'a, io::Result<Received>> {
        Box::pin(async move {
            let (p, from, kernel) = self
                .rx
                .lock()
                .await
                .recv()
                .await
                .ok_or_else(|| io::Error::other("closed"))?;
            let n = p.len().min(buf.len());
            buf[..n].copy_from_slice(&p[..n]);
            Ok(Received {
                len: n,
                from,
                kernel_time: Some(kernel),
                read_at: self.clock.now(),
            })
        })
    }
}

#[derive(Debug)]
struct FakeNet(TokioClock, Option<Duration>);

impl IcmpSocketFactory for FakeNet {
    fn open(&self, key: &SocketKey) -> io::Result<Arc<dyn IcmpSocket>> {
        let (tx, rx) = mpsc::unbounded_channel();
        Ok(Arc::new(FakeSocket {
            clock: self.0,
            ipv6: key.ipv6,
            tx,
            rx: AsyncMutex::new(rx),
            send_stamp_after: self.1,
            stamps: Default::default(),
        }))
    }
}

#[derive(Debug)]
struct DeniedNet;

impl IcmpSocketFactory for DeniedNet {
    fn open(&self, _: &SocketKey) -> io::Result<Arc<dyn IcmpSocket>> {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            crate::net::ping_permission_hint(),
        ))
    }
}

fn probe() -> PingProbe {
    let clock = TokioClock::new();
    PingProbe::with_parts(Arc::new(FakeNet(clock, None)), Arc::new(clock))
}

/// A network whose kernel stamps each request 1 ms after the probe read its clock.
fn stamping_probe() -> PingProbe {
    let clock = TokioClock::new();
    let net = FakeNet(clock, Some(Duration::from_millis(1)));
    PingProbe::with_parts(Arc::new(net), Arc::new(clock))
}

#[tokio::test(start_paused = true)]
async fn kernel_send_stamps_start_the_rtt() {
    let r = stamping_probe()
        .round("10.0.0.1".parse().unwrap(), &opts(5, 200))
        .await
        .unwrap();
    assert_eq!((r.sent, r.received, r.kernel_send_stamps), (5, 5, 5));
    // Replies come 5 ms after the clock read, the kernel sent 1 ms after it; the stamp of the
    // foreign packet (another cookie, sent at the clock read) must not be taken.
    for rtt in &r.rtts {
        let err = rtt.as_secs_f64() - 0.004;
        assert!(err.abs() < 0.0003, "rtt {rtt:?}");
    }
    let plain = probe()
        .round("10.0.0.1".parse().unwrap(), &opts(2, 200))
        .await
        .unwrap();
    assert_eq!((plain.received, plain.kernel_send_stamps), (2, 0));
}

fn opts(packets: u32, timeout_ms: u64) -> PingOptions {
    PingOptions {
        packets,
        spacing: Duration::from_millis(10),
        timeout: Duration::from_millis(timeout_ms),
        ..PingOptions::default()
    }
}

#[tokio::test(start_paused = true)]
async fn replies_use_the_kernel_timestamp() {
    let r = probe()
        .round("10.0.0.1".parse().unwrap(), &opts(5, 200))
        .await
        .unwrap();
    assert_eq!((r.sent, r.received, r.duplicates), (5, 5, 0));
    // The fake stamps replies exactly 5 ms after the send: the kernel path must report that,
    // not the later time the task read it.
    for rtt in &r.rtts {
        let err = rtt.as_secs_f64() - 0.005;
        assert!(err.abs() < 0.0003, "rtt {rtt:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn ipv6_replies_are_matched() {
    let r = probe()
        .round("fd00::1".parse().unwrap(), &opts(2, 200))
        .await
        .unwrap();
    assert_eq!((r.sent, r.received), (2, 2));
}

#[tokio::test(start_paused = true)]
async fn lost_packets_end_the_round_at_the_timeout() {
    let start = tokio::time::Instant::now();
    let r = probe()
        .round("10.0.0.2".parse().unwrap(), &opts(3, 50))
        .await
        .unwrap();
    let took = start.elapsed();
    assert_eq!((r.sent, r.received), (3, 0));
    assert_eq!(r.loss_ratio(), 1.0);
    assert!(
        // The last request leaves 20 ms in and waits its 50 ms; paused time makes it exact.
        took >= Duration::from_millis(70) && took <= Duration::from_millis(71),
        "{took:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn duplicates_are_counted_once_each() {
    let r = probe()
        .round("10.0.0.3".parse().unwrap(), &opts(3, 100))
        .await
        .unwrap();
    assert_eq!(r.received, 3);
    // Including the last request's duplicate, which the receive loop delivered before the
    // round closed.
    assert_eq!(r.duplicates, 3);
}

#[tokio::test(start_paused = true)]
async fn unreachable_errors_are_matched_to_the_request() {
    let start = tokio::time::Instant::now();
    let r = probe()
        .round("10.0.0.4".parse().unwrap(), &opts(2, 10_000))
        .await
        .unwrap();
    assert_eq!((r.sent, r.received, r.icmp_errors), (2, 0, 2));
    // Errors answer the requests: no need to wait for the 10 s timeout.
    assert!(
        start.elapsed() < Duration::from_millis(100),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn foreign_and_garbage_packets_are_ignored() {
    for addr in ["10.0.0.5", "10.0.0.6"] {
        let r = probe()
            .round(addr.parse().unwrap(), &opts(2, 50))
            .await
            .unwrap();
        assert_eq!((r.sent, r.received, r.duplicates), (2, 0, 0), "{addr}");
    }
}

#[tokio::test(start_paused = true)]
async fn late_replies_count_as_lost() {
    let r = probe()
        .round("10.0.0.7".parse().unwrap(), &opts(1, 100))
        .await
        .unwrap();
    assert_eq!((r.sent, r.received), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn send_errors_fail_the_round_with_a_reason() {
    let err = probe()
        .round("10.0.0.8".parse().unwrap(), &opts(2, 50))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProbeError::Network(ref m) if m.contains("Network is unreachable")),
        "{err:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn permission_denied_says_how_to_fix_it() {
    let p = PingProbe::with_parts(Arc::new(DeniedNet), Arc::new(TokioClock::new()));
    let err = p
        .round("10.0.0.1".parse().unwrap(), &opts(1, 50))
        .await
        .unwrap_err();
    match err {
        ProbeError::Permission(m) => assert!(
            m.contains("ping_group_range") && m.contains("CAP_NET_RAW"),
            "{m}"
        ),
        other => panic!("{other:?}"),
    }
}

/// surge-ping #73: two pingers to one host on one socket must not share sequence numbers.
#[tokio::test(start_paused = true)]
async fn concurrent_rounds_to_one_host_do_not_collide() {
    let p = Arc::new(probe());
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let p = p.clone();
        tasks.push(tokio::spawn(async move {
            p.round("10.0.0.1".parse().unwrap(), &opts(10, 500)).await
        }));
    }
    for t in tasks {
        let r = t.await.unwrap().unwrap();
        assert_eq!((r.sent, r.received, r.duplicates), (10, 10, 0));
    }
}

#[test]
fn sequence_allocation_skips_numbers_in_flight() {
    let mut t = Table::default();
    let a: IpAddr = "10.0.0.1".parse().unwrap();
    t.next_seq.insert(a, u16::MAX);
    let (tx, _rx) = mpsc::unbounded_channel();
    t.waiters.insert(
        (a, 0),
        Waiter {
            index: 0,
            sent_at: Instant::now(),
            sent_wall: SystemTime::now(),
            kernel_sent: None,
            replies: 0,
            tx,
        },
    );
    assert_eq!(t.allocate(a), Some(u16::MAX));
    // 0 is in flight: skipped after the wrap.
    assert_eq!(t.allocate(a), Some(1));
}

#[test]
fn rtt_falls_back_to_monotonic_time_when_the_wall_clock_steps() {
    let (tx, _rx) = mpsc::unbounded_channel();
    let sent_at = Instant::now();
    let sent_wall = SystemTime::now();
    let mut w = Waiter {
        index: 0,
        sent_at,
        sent_wall,
        kernel_sent: None,
        replies: 0,
        tx,
    };
    let read_at = sent_at + Duration::from_millis(10);
    let ms = Duration::from_millis;
    assert_eq!(rtt(&w, read_at, Some(sent_wall + ms(9))), (ms(9), false));
    // The wall clock jumped an hour forward: the kernel stamp is useless.
    assert_eq!(
        rtt(&w, read_at, Some(sent_wall + Duration::from_secs(3600))),
        (ms(10), false)
    );
    // ...or backwards.
    assert_eq!(
        rtt(&w, read_at, sent_wall.checked_sub(Duration::from_secs(5))),
        (ms(10), false)
    );
    assert_eq!(rtt(&w, read_at, None), (ms(10), false));
    // Both kernel stamps: their difference.
    w.kernel_sent = Some(sent_wall + ms(1));
    assert_eq!(rtt(&w, read_at, Some(sent_wall + ms(9))), (ms(8), true));
    // A receive stamp before the send stamp (a step between them): not the kernel pair.
    assert_eq!(rtt(&w, read_at, Some(sent_wall)), (ms(0), false));
    // No receive stamp: the send stamp alone is no use.
    assert_eq!(rtt(&w, read_at, None), (ms(10), false));
}

/// An unroutable target: every send fails, yet its counters must say 100 % loss.
#[tokio::test(start_paused = true)]
async fn unsendable_rounds_still_report_what_was_attempted() {
    let cfg = crate::config::Config::parse(
        "[[targets]]\nname = \"t\"\nhost = \"10.0.0.8\"\nprobes = [\"ping\"]\nping = { packets = 3, spacing = \"10ms\", timeout = \"50ms\" }\n",
        "t.toml",
    )
    .unwrap();
    let sample = probe().run(ProbeRequest::for_target(&cfg.targets[0])).await;
    assert!(!sample.success);
    assert!(
        matches!(sample.error, Some(ProbeError::Network(ref m)) if m.contains("Network is unreachable")),
        "{:?}",
        sample.error
    );
    match sample.measurement {
        m if m.ping().is_some() => {
            let r = m.ping().unwrap();
            assert_eq!((r.sent, r.received), (3, 0));
            assert_eq!(r.loss_ratio(), 1.0);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn sequence_table_stays_bounded_after_many_destinations() {
    let mut t = Table::default();
    let busy: IpAddr = "10.0.0.1".parse().unwrap();
    let seq = t.allocate(busy).unwrap();
    let (tx, _rx) = mpsc::unbounded_channel();
    t.waiters.insert(
        (busy, seq),
        Waiter {
            index: 0,
            sent_at: Instant::now(),
            sent_wall: SystemTime::now(),
            kernel_sent: None,
            replies: 0,
            tx,
        },
    );
    // 100,000 rounds to distinct addresses, each one released when it ends.
    for i in 0..100_000u32 {
        let a = IpAddr::V4(std::net::Ipv4Addr::from(0x0b00_0000 + i));
        let s = t.allocate(a).unwrap();
        t.release(&[(a, s)]);
        assert!(t.next_seq.len() <= SEQ_TABLE_PRUNE_AT, "{i}");
    }
    // A destination with a request in flight keeps its sequence.
    assert_eq!(t.allocate(busy), Some(seq.wrapping_add(1)));
}

/// A raw socket: the engine must check what the kernel did not.
#[derive(Debug)]
struct RawStub;

impl IcmpSocket for RawStub {
    fn kind(&self) -> SocketKind {
        SocketKind::Raw
    }
    fn send_to(&self, _: &[u8], _: IpAddr) -> io::Result<()> {
        Ok(())
    }
    fn recv<'a>(&'a self, _: &'a mut [u8]) -> BoxFuture<'a, io::Result<Received>> {
        Box::pin(std::future::pending())
    }
}

/// An IPv4 header and an echo reply to `shared`'s request, as a raw socket reads it.
fn raw_reply(shared: &Shared, seq: u16, payload_len: usize) -> Vec<u8> {
    let mut payload = shared.cookie.to_vec();
    payload.extend((0..payload_len - 8).map(payload_byte));
    let mut icmp = echo_request(false, shared.ident, seq, &payload);
    icmp[0] = 0;
    icmp[2..4].copy_from_slice(&[0, 0]);
    let sum = !icmp
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .fold(0u32, |a, w| {
            let s = a + w;
            (s & 0xffff) + (s >> 16)
        }) as u16;
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let mut ip = vec![
        0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
    ];
    ip.extend_from_slice(&icmp);
    let total = ip.len() as u16;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip
}

#[test]
fn raw_replies_with_a_wrong_checksum_or_payload_are_refused() {
    let shared = Shared {
        socket: Arc::new(RawStub),
        ipv6: false,
        ident: 0x4242,
        cookie: *b"cookie!!",
        table: std::sync::Mutex::new(Table::default()),
    };
    let from: IpAddr = "10.0.0.1".parse().unwrap();
    let good = raw_reply(&shared, 7, 56);
    let p = parse(&shared, &good, from).expect("a valid reply is accepted");
    assert_eq!((p.seq, p.kind), (7, ParsedKind::Reply));
    // Right identifier, sequence and cookie, wrong checksum.
    let mut bad_sum = good.clone();
    bad_sum[22] ^= 0x01;
    assert!(parse(&shared, &bad_sum, from).is_none());
    // Garbage after the cookie, with the checksum fixed up to match (the sum of the 16-bit
    // words is unchanged by swapping two of them).
    let mut garbage = good.clone();
    garbage.swap(20 + 16, 20 + 18);
    garbage.swap(20 + 17, 20 + 19);
    assert!(icmpv4_checksum_ok(&garbage[20..]));
    assert!(parse(&shared, &garbage, from).is_none());
    // Truncated after the header.
    assert!(parse(&shared, &good[..20], from).is_none());
}

/// Runs a round of `opts` to `addr` with progress, returning each answer with when it came.
async fn live_round(addr: &str, opts: PingOptions) -> Vec<(Duration, Progress)> {
    let p = probe();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let start = tokio::time::Instant::now();
    let engine_round = p.round_with_error(addr.parse().unwrap(), &opts, Some(&tx));
    let collect = async {
        let mut got = Vec::new();
        while let Some(ev) = rx.recv().await {
            got.push((start.elapsed(), ev));
            if got.len() == opts.packets as usize {
                break;
            }
        }
        got
    };
    let (_, got) = tokio::join!(engine_round, collect);
    got
}

#[tokio::test(start_paused = true)]
async fn progress_reports_each_reply_as_it_arrives() {
    let got = live_round("10.0.0.1", opts(3, 200)).await;
    // Replies 5 ms after each send, sends 10 ms apart: each comes before the next request.
    for (i, (at, ev)) in got.iter().enumerate() {
        let Some(&super::live::Echo {
            index,
            rtt: Some(rtt),
        }) = ev.get()
        else {
            panic!("{ev:?}")
        };
        assert_eq!(index, i as u32);
        assert!(rtt.as_millis() <= 6, "{rtt:?}");
        assert!(*at < Duration::from_millis(10 * i as u64 + 10), "{at:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn progress_reports_a_loss_when_its_wait_ends() {
    let got = live_round("10.0.0.2", opts(3, 50)).await;
    let seen: Vec<(u32, Option<Duration>)> = got
        .iter()
        .map(|(_, ev)| match ev.get() {
            Some(&super::live::Echo { index, rtt }) => (index, rtt),
            None => panic!("{ev:?}"),
        })
        .collect();
    assert_eq!(seen, [(0, None), (1, None), (2, None)]);
    // The first loss is known 50 ms in, before the round ends at 70 ms.
    assert!(got[0].0 >= Duration::from_millis(50), "{:?}", got[0].0);
    assert!(got[0].0 < Duration::from_millis(60), "{:?}", got[0].0);
}
