//! The trace engine against a scripted network: no root, no real sockets.

use std::io;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::mpsc;

use super::*;
use crate::clock::TokioClock;
use crate::net::trace::{
    Outgoing, Replies, ReplyKind, TraceReply, TraceSocket, TraceSocketFactory, TraceSocketKey,
};
use crate::sample::Unreachable;
use crate::types::TraceProtocol;

mod rate_limits;
mod scenarios;

/// What a hop does with a probe whose TTL runs out there.
#[derive(Debug, Clone, Copy)]
enum Hop {
    /// Answers "time exceeded" after this many ms, quoting the whole probe.
    Router(&'static str, u64),
    /// Answers without saying which probe (an IPv4 router quoting 8 bytes, error queue).
    Anonymous(&'static str, u64),
    /// Never answers.
    Silent,
    /// Answers "unreachable" and forwards nothing.
    Unreachable(&'static str, Unreachable),
    /// Forwards nothing and answers "unreachable" only to probes sent with at least this TTL:
    /// Linux's rate limit on unreachables, letting a few through, here the high ones.
    Limited(&'static str, Unreachable, u8),
    /// The destination, answering after this many ms.
    Dest(u64),
    /// The destination, never answering.
    DeadDest,
}

type Route = Arc<dyn Fn(u16) -> Vec<Hop> + Send + Sync>;

#[derive(Clone)]
struct Net {
    /// The probe's clock too: answers are stamped on tokio's paused time, as the probe reads it.
    clock: TokioClock,
    dst: IpAddr,
    route: Arc<Mutex<Route>>,
    sent: Arc<Mutex<Vec<Outgoing>>>,
    /// When each probe left, and to where.
    sent_at: Arc<Mutex<Vec<(Instant, IpAddr)>>>,
    fail_sends: Arc<Mutex<bool>>,
    /// Extra copies of each answer (duplicates) and answers to unknown probes (foreign).
    noise: Arc<Mutex<bool>>,
    /// Probes connect, as unprivileged TCP's do: the destination answers with a SYN-ACK and
    /// the socket is not Paris.
    connects: bool,
}

impl fmt::Debug for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Net")
    }
}

const DST: &str = "192.0.2.99";

impl Net {
    fn new(route: impl Fn(u16) -> Vec<Hop> + Send + Sync + 'static) -> Self {
        Self {
            clock: TokioClock::new(),
            dst: DST.parse().unwrap(),
            route: Arc::new(Mutex::new(Arc::new(route))),
            sent: Arc::default(),
            sent_at: Arc::default(),
            fail_sends: Arc::default(),
            noise: Arc::default(),
            connects: false,
        }
    }

    /// The network for a socket whose probes connect.
    fn connecting(route: impl Fn(u16) -> Vec<Hop> + Send + Sync + 'static) -> Self {
        Self {
            connects: true,
            ..Self::new(route)
        }
    }

    fn reroute(&self, route: impl Fn(u16) -> Vec<Hop> + Send + Sync + 'static) {
        *self.route.lock().unwrap() = Arc::new(route);
    }

    fn take_sent(&self) -> Vec<Outgoing> {
        std::mem::take(&mut *self.sent.lock().unwrap())
    }
}

#[derive(Debug)]
struct FakeSocket {
    net: Net,
    replies: Replies,
}

impl TraceSocket for FakeSocket {
    fn raw(&self) -> bool {
        false
    }

    fn paris(&self) -> bool {
        !self.net.connects
    }

    fn connects(&self) -> bool {
        self.net.connects
    }

    fn send(&self, p: &Outgoing) -> io::Result<()> {
        if *self.net.fail_sends.lock().unwrap() {
            return Err(io::Error::other("Network is unreachable"));
        }
        self.net.sent.lock().unwrap().push(*p);
        let at = Instant::from_std(self.net.clock.now());
        self.net.sent_at.lock().unwrap().push((at, p.dst));
        let hops = (self.net.route.lock().unwrap())(p.flow);
        // The hop where the TTL runs out answers, unless one before it refuses to forward;
        // beyond the destination, the destination answers.
        let at = usize::from(p.ttl - 1).min(hops.len() - 1);
        let hop = hops[..at]
            .iter()
            .find(|h| matches!(h, Hop::Unreachable(..) | Hop::Limited(..)))
            .copied()
            .unwrap_or(hops[at]);
        let (from, kind, ms, seq) = match hop {
            Hop::Router(a, ms) => (a.parse().unwrap(), ReplyKind::TimeExceeded, ms, Some(p.seq)),
            Hop::Anonymous(a, ms) => (a.parse().unwrap(), ReplyKind::TimeExceeded, ms, None),
            Hop::Unreachable(a, u) => (
                a.parse().unwrap(),
                ReplyKind::Unreachable(u),
                1,
                Some(p.seq),
            ),
            Hop::Dest(ms) if self.net.connects => (p.dst, ReplyKind::TcpSynAck, ms, Some(p.seq)),
            Hop::Dest(ms) => (
                p.dst,
                ReplyKind::Unreachable(Unreachable::Port),
                ms,
                Some(p.seq),
            ),
            Hop::Limited(a, u, min_ttl) if p.ttl >= min_ttl => (
                a.parse().unwrap(),
                ReplyKind::Unreachable(u),
                1,
                Some(p.seq),
            ),
            Hop::Silent | Hop::DeadDest | Hop::Limited(..) => return Ok(()),
        };
        let sent_wall = self.net.clock.wall();
        let r = TraceReply {
            from,
            dst: p.dst,
            flow: Some(p.flow),
            seq,
            kind,
            reply_ttl: Some(255 - p.ttl),
            kernel_time: Some(sent_wall + Duration::from_millis(ms)),
            read_at: self.net.clock.now(),
        };
        let copies = if *self.net.noise.lock().unwrap() {
            2
        } else {
            1
        };
        let tx = self.replies.sender();
        let noise = *self.net.noise.lock().unwrap();
        let clock = self.net.clock;
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            if noise {
                // Another program's probe, and an answer about another destination.
                let mut foreign = r;
                foreign.seq = Some(r.seq.unwrap_or(1).wrapping_add(5000));
                let _ = tx.send(foreign);
                let mut elsewhere = r;
                elsewhere.dst = "198.51.100.1".parse().unwrap();
                let _ = tx.send(elsewhere);
            }
            for _ in 0..copies {
                let _ = tx.send(TraceReply {
                    read_at: clock.now(),
                    ..r
                });
            }
        });
        Ok(())
    }

    fn recv(&self) -> BoxFuture<'_, io::Result<TraceReply>> {
        self.replies.recv()
    }
}

#[derive(Debug)]
struct FakeNet(Net);

impl TraceSocketFactory for FakeNet {
    fn open(&self, _: &TraceSocketKey) -> io::Result<Arc<dyn TraceSocket>> {
        Ok(Arc::new(FakeSocket {
            net: self.0.clone(),
            replies: Replies::new(),
        }))
    }
}

#[derive(Debug)]
struct DeniedNet;

impl TraceSocketFactory for DeniedNet {
    fn open(&self, _: &TraceSocketKey) -> io::Result<Arc<dyn TraceSocket>> {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "ICMP traces need an unprivileged ICMP socket or CAP_NET_RAW",
        ))
    }
}

/// Options with the configured flows only: most tests count the probes of a plain trace.
/// The rate is a batch every 5 ms, which the batches keep to anyway: only the rate limits'
/// own tests are held back by one.
fn opts(timeout_ms: u64) -> TraceOptions {
    TraceOptions {
        timeout: Duration::from_millis(timeout_ms),
        max_hops: 12,
        discovery: TraceDiscovery::Flows,
        probes_per_second: UNLIMITED,
        ..TraceOptions::default()
    }
}

/// The highest rate a trace may have.
const UNLIMITED: u32 = crate::defaults::TRACE_PROBES_PER_SECOND_RANGE.max as u32;

fn mda(timeout_ms: u64) -> TraceOptions {
    TraceOptions {
        discovery: TraceDiscovery::Mda,
        ..opts(timeout_ms)
    }
}

/// A prober whose device rate holds no test back (the rate limits' own tests set theirs).
fn probe(net: &Net) -> TraceProbe {
    let device = crate::defaults::DEVICE_TRACE_PROBES_PER_SECOND_RANGE.max as u32;
    TraceProbe::with_parts(Arc::new(FakeNet(net.clone())), Arc::new(net.clock))
        .with_device_rate(Arc::new(DeviceRate::new(device)))
}

fn chain() -> Vec<Hop> {
    vec![
        Hop::Router("10.0.0.1", 2),
        Hop::Router("10.0.1.1", 4),
        Hop::Router("10.0.2.1", 6),
        Hop::Router("10.0.3.1", 8),
        Hop::Dest(10),
    ]
}

fn addrs(r: &TraceReport) -> Vec<String> {
    r.hops
        .iter()
        .map(|h| {
            h.responders
                .iter()
                .map(|r| r.address.to_string())
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect()
}

async fn trace(p: &TraceProbe, net: &Net, o: &TraceOptions) -> TraceReport {
    p.trace("t", net.dst, o, Duration::from_secs(10))
        .await
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn every_hop_answers_and_the_trace_takes_the_slowest_rtt() {
    let net = Net::new(|_| chain());
    let p = probe(&net);
    let start = Instant::now();
    let r = trace(&p, &net, &opts(1000)).await;
    let took = start.elapsed();
    assert!(r.reached);
    assert_eq!(r.hop_count(), 5);
    assert_eq!(
        addrs(&r),
        ["10.0.0.1", "10.0.1.1", "10.0.2.1", "10.0.3.1", DST]
    );
    for (h, ms) in r.hops.iter().zip([2u64, 4, 6, 8, 10]) {
        assert_eq!((h.sent, h.received), (3, 3), "hop {}", h.ttl);
        assert_eq!(h.loss_ratio(), 0.0);
        // The kernel timestamp is used, not the later time the task read the answer.
        let err = h.mean().unwrap().as_secs_f64() - ms as f64 / 1000.0;
        assert!(err.abs() < 0.0005, "hop {} rtt {:?}", h.ttl, h.mean());
        assert_eq!(h.unreachable(), None);
    }
    // About the slowest hop's RTT, far below the timeout.
    assert!(took < Duration::from_millis(200), "{took:?}");
    // The first trace probes a window of TTLs, enough for this path, lowest TTL first: 3
    // probes at TTL 1, one at each other; then 2 more at each TTL up to the destination as
    // the answers show it is no further (one probe at each TTL beyond it, not 3).
    let sent = net.take_sent();
    let w = usize::from(TTL_WINDOW);
    assert!(sent[..w + 2].windows(2).all(|w| w[0].ttl <= w[1].ttl));
    assert_eq!(sent[..3].iter().filter(|s| s.ttl == 1).count(), 3);
    assert!(sent[w + 2..].iter().all(|s| (2..=5).contains(&s.ttl)));
    assert_eq!(sent.len(), 5 * 3 + (w - 5));
    // Every probe has its own sequence number.
    let mut seqs: Vec<u16> = sent.iter().map(|s| s.seq).collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), sent.len());
    assert!(sent.iter().all(|s| (1..=0xfffe).contains(&s.seq)));
}

#[tokio::test(start_paused = true)]
async fn silent_hops_cost_one_timeout_in_all() {
    // With discovery too: a first trace sends one probe per TTL, and the rest to a silent TTL
    // below one that answered leave while its first probe is still waited for.
    for o in [opts(300), mda(300)] {
        let net = Net::new(|_| {
            vec![
                Hop::Router("10.0.0.1", 1),
                Hop::Silent,
                Hop::Router("10.0.2.1", 1),
                Hop::Silent,
                Hop::Silent,
                Hop::Dest(2),
            ]
        });
        let p = probe(&net);
        let start = Instant::now();
        let r = trace(&p, &net, &o).await;
        let took = start.elapsed();
        assert!(r.reached);
        assert_eq!(addrs(&r), ["10.0.0.1", "", "10.0.2.1", "", "", DST]);
        for h in [1, 3, 4] {
            assert_eq!((r.hops[h].sent, r.hops[h].loss_ratio()), (3, 1.0), "{o:?}");
        }
        assert!(
            took >= Duration::from_millis(290) && took < Duration::from_millis(500),
            "{o:?}: {took:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_router_ends_the_trace() {
    let net = Net::new(|_| {
        vec![
            Hop::Router("10.0.0.1", 1),
            Hop::Router("10.0.1.1", 1),
            Hop::Unreachable("10.0.2.1", Unreachable::Network),
            Hop::Dest(1),
        ]
    });
    let p = probe(&net);
    let start = Instant::now();
    let r = trace(&p, &net, &opts(1000)).await;
    assert!(!r.reached);
    assert_eq!(r.hop_count(), 3);
    assert_eq!(r.hops[2].unreachable(), Some(Unreachable::Network));
    assert!(start.elapsed() < Duration::from_millis(300));
    // Through the Probe trait: a failed trace that got an answer, not a timeout.
    let s = p
        .run(crate::probe::round::ProbeRequest::for_target(&target(
            DST,
            opts(1000),
        )))
        .await;
    assert!(!s.success);
    assert_eq!(s.error, None);
}

#[tokio::test(start_paused = true)]
async fn a_silent_destination_reports_the_hops_that_answered() {
    let net = Net::new(|_| {
        vec![
            Hop::Router("10.0.0.1", 1),
            Hop::Router("10.0.1.1", 1),
            Hop::DeadDest,
        ]
    });
    let p = probe(&net);
    let o = opts(100);
    let r = trace(&p, &net, &o).await;
    assert!(!r.reached);
    assert_eq!(addrs(&r), ["10.0.0.1", "10.0.1.1"]);
    // Every TTL up to max_hops was tried.
    assert!(net.take_sent().iter().any(|s| s.ttl == o.max_hops));
    let s = p
        .run(crate::probe::round::ProbeRequest::for_target(&target(
            DST, o,
        )))
        .await;
    assert!(!s.success);
    assert_eq!(s.error, Some(ProbeError::Timeout));
}

#[tokio::test(start_paused = true)]
async fn later_traces_probe_up_to_the_destination_and_extend_when_the_path_grows() {
    let net = Net::new(|_| chain());
    let p = probe(&net);
    let o = opts(400);
    trace(&p, &net, &o).await;
    net.take_sent();
    let r = trace(&p, &net, &o).await;
    assert_eq!(r.hop_count(), 5);
    let max_ttl = net.take_sent().iter().map(|s| s.ttl).max().unwrap();
    assert_eq!(
        max_ttl,
        5 + TTL_MARGIN,
        "TTLs beyond the known distance are spared"
    );
    // The path grows by four hops: the trace notices at its top hop and extends at once.
    net.reroute(|_| {
        let mut h = chain();
        h.splice(
            2..2,
            [
                Hop::Router("10.1.0.1", 3),
                Hop::Router("10.1.1.1", 3),
                Hop::Router("10.1.2.1", 3),
                Hop::Router("10.1.3.1", 3),
            ],
        );
        h
    });
    let start = Instant::now();
    let r = trace(&p, &net, &o).await;
    assert!(r.reached);
    assert_eq!(r.hop_count(), 9);
    assert!(
        start.elapsed() < Duration::from_millis(200),
        "{:?}",
        start.elapsed()
    );
    assert!(r.path_changed);
}

/// Two equal-cost branches at hop 2; each flow keeps its branch.
fn ecmp(swap: bool) -> impl Fn(u16) -> Vec<Hop> + Send + Sync {
    move |flow| {
        let b = if (flow % 2 == 0) != swap {
            "10.0.1.1"
        } else {
            "10.0.1.2"
        };
        vec![
            Hop::Router("10.0.0.1", 1),
            Hop::Router(b, 1),
            Hop::Router("10.0.2.1", 1),
            Hop::Dest(2),
        ]
    }
}

#[tokio::test(start_paused = true)]
async fn flows_discover_ecmp_branches_and_flapping_is_no_change() {
    let net = Net::new(ecmp(false));
    let p = probe(&net);
    let o = TraceOptions {
        flows: 4,
        ..opts(200)
    };
    let r = trace(&p, &net, &o).await;
    assert_eq!(addrs(&r)[1], "10.0.1.1|10.0.1.2");
    assert_eq!(r.hops[1].responders[0].flows, vec![0, 2]);
    assert_eq!(r.hops[1].responders[1].flows, vec![1, 3]);
    // Three probes per flow, and flow 0 probed twice more where the paths split: still one
    // address for it, so the balancing there is per flow.
    assert_eq!(
        (r.hops[1].sent, r.hops[1].received),
        (12 + SPLIT_REPROBES as u32, 12 + SPLIT_REPROBES as u32)
    );
    assert_eq!(r.hops[1].responders[0].replies, 6 + SPLIT_REPROBES as u32);
    assert_eq!(r.paths_known, 2);
    assert!(!r.path_changed);
    assert_eq!(r.hops[1].balancing, Some(crate::sample::Balancing::PerFlow));
    let h0 = r.path_hash;
    let one_flow = TraceOptions {
        flows: 1,
        ..o.clone()
    };
    let _ = one_flow;
    for i in 0..6 {
        net.reroute(ecmp(i % 2 == 0));
        let r = trace(&p, &net, &o).await;
        assert!(!r.path_changed, "trace {i}");
        assert_eq!(r.paths_known, 2);
        assert_eq!(r.path_hash, h0, "the same branches, the same identity");
    }
}

#[tokio::test(start_paused = true)]
async fn anonymous_answers_are_placed_by_probing_alone_then_by_what_was_learned() {
    let route = || {
        vec![
            Hop::Router("10.0.0.1", 1),
            Hop::Anonymous("10.0.1.1", 2),
            Hop::Anonymous("10.0.2.1", 3),
            Hop::Router("10.0.3.1", 4),
            Hop::Dest(5),
        ]
    };
    let net = Net::new(move |_| route());
    let p = probe(&net);
    let o = opts(300);
    let r = trace(&p, &net, &o).await;
    assert_eq!(
        addrs(&r),
        ["10.0.0.1", "10.0.1.1", "10.0.2.1", "10.0.3.1", DST]
    );
    assert_eq!(r.hops[1].received, r.hops[1].sent, "{:?}", r.hops[1]);
    let probed_alone = net.take_sent().iter().filter(|s| s.ttl == 2).count();
    assert_eq!(probed_alone, 4, "three probes plus one sent alone");
    // The next trace places them from what it learned: no probe sent alone.
    let start = Instant::now();
    let r = trace(&p, &net, &o).await;
    assert_eq!(addrs(&r)[1..3], ["10.0.1.1", "10.0.2.1"]);
    assert_eq!((r.hops[2].sent, r.hops[2].received), (3, 3));
    assert_eq!(net.take_sent().iter().filter(|s| s.ttl == 2).count(), 3);
    assert!(start.elapsed() < Duration::from_millis(150));
    assert!(!r.path_changed);
}

#[tokio::test(start_paused = true)]
async fn late_duplicate_and_foreign_answers_do_not_count() {
    let net = Net::new(|_| {
        vec![
            Hop::Router("10.0.0.1", 1),
            Hop::Router("10.0.1.1", 250),
            Hop::Dest(2),
        ]
    });
    *net.noise.lock().unwrap() = true;
    let p = probe(&net);
    let r = trace(&p, &net, &opts(100)).await;
    assert!(r.reached);
    assert_eq!((r.hops[0].sent, r.hops[0].received), (3, 3));
    // 250 ms answers to a 100 ms timeout are lost.
    assert_eq!((r.hops[1].sent, r.hops[1].received), (3, 0));
    assert_eq!((r.hops[2].sent, r.hops[2].received), (3, 3));
}

#[tokio::test(start_paused = true)]
async fn send_errors_fail_the_trace_with_a_reason() {
    let net = Net::new(|_| chain());
    *net.fail_sends.lock().unwrap() = true;
    let p = probe(&net);
    let err = p
        .trace("t", net.dst, &opts(50), Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProbeError::Network(ref m) if m.contains("Network is unreachable")),
        "{err:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn permission_denied_says_how_to_fix_it() {
    let p = TraceProbe::with_parts(Arc::new(DeniedNet), Arc::new(TokioClock::new()));
    let err = p
        .trace("t", DST.parse().unwrap(), &opts(50), Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProbeError::Permission(ref m) if m.contains("CAP_NET_RAW")),
        "{err:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn concurrent_traces_to_one_destination_take_turns() {
    let net = Net::new(|_| chain());
    let p = Arc::new(probe(&net));
    let mut tasks = Vec::new();
    for name in ["a", "b", "c"] {
        let (p, net) = (p.clone(), net.clone());
        tasks.push(tokio::spawn(async move {
            p.trace(name, net.dst, &opts(300), Duration::from_secs(5))
                .await
                .unwrap()
        }));
    }
    for t in tasks {
        let r = t.await.unwrap();
        assert!(r.reached);
        assert!(r.hops.iter().all(|h| h.received == h.sent));
    }
}

#[tokio::test(start_paused = true)]
async fn the_probe_trait_fills_a_sample() {
    let net = Net::new(|_| chain());
    let p = probe(&net);
    let mut o = opts(2000);
    o.protocol = TraceProtocol::Udp;
    let s = p
        .run(crate::probe::round::ProbeRequest {
            target: Arc::new(target(DST, o)),
            deadline: Some(Duration::from_millis(500)),
            guard: None,
            progress: None,
        })
        .await;
    assert!(s.success, "{s:?}");
    assert_eq!(s.probe, ProbeKind::TRACE);
    let Some(r) = s.measurement.trace() else {
        panic!("{s:?}")
    };
    assert_eq!(r.hop_count(), 5);
    let v: HashMap<_, _> = s.values().into_iter().collect();
    assert_eq!(v["hops"], 5.0);
    assert_eq!(v["loss_ratio"], 0.0);
}

#[tokio::test(start_paused = true)]
async fn progress_sends_every_answer_as_it_arrives() {
    let net = Net::new(|_| chain());
    let p = probe(&net);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let start = Instant::now();
    let s = p
        .run(crate::probe::round::ProbeRequest {
            target: Arc::new(target(DST, opts(2000))),
            deadline: None,
            guard: None,
            progress: Some(tx),
        })
        .await;
    assert!(s.success, "{s:?}");
    let Some(r) = s.measurement.trace() else {
        panic!("{s:?}")
    };
    let mut got = Vec::new();
    while let Ok(ev) = rx.try_recv() {
        got.push(ev);
    }
    // One per answer the report counts, each with its hop's address and RTT; the
    // destination's answers to probes beyond it come only before its distance is known.
    let received: u32 = r.hops.iter().map(|h| h.received).sum();
    let (near, beyond): (Vec<_>, Vec<_>) = got
        .into_iter()
        .partition(|ev| matches!(ev.get(), Some(super::live::HopAnswer { ttl, .. }) if *ttl <= 5));
    assert_eq!(near.len(), received as usize, "{near:?}");
    assert!(beyond.len() < 3 * 3, "{beyond:?}");
    assert!(
        beyond.iter().all(|ev| matches!(
            ev.get(),
            Some(super::live::HopAnswer {
                destination: true,
                ..
            })
        )),
        "{beyond:?}"
    );
    for ev in &near {
        let Some(super::live::HopAnswer {
            ttl,
            from,
            rtt,
            destination,
            ..
        }) = ev.get()
        else {
            panic!("{ev:?}")
        };
        let hop = &r.hops[usize::from(*ttl) - 1];
        assert!(hop.responders.iter().any(|x| x.address == *from), "{ev:?}");
        assert_eq!(*destination, *ttl == 5, "{ev:?}");
        let want = Duration::from_millis(2 * u64::from(*ttl));
        assert!(rtt.abs_diff(want) < Duration::from_micros(500), "{ev:?}");
    }
    assert!(start.elapsed() < Duration::from_millis(200));
}

fn target(host: &str, trace: TraceOptions) -> crate::config::Target {
    crate::config::Target {
        name: "t".into(),
        host: crate::config::parse_host(host).unwrap(),
        labels: Default::default(),
        probes: vec![(ProbeKind::TRACE, Duration::from_secs(60))],
        modules: vec![crate::probe::module::ModuleOptions {
            kind: super::module::KIND,
            options: std::sync::Arc::new(trace),
        }],
    }
}

#[tokio::test(start_paused = true)]
async fn an_outage_and_its_end_are_no_path_change() {
    let net = Net::new(|_| chain());
    let p = probe(&net);
    let o = opts(150);
    assert!(trace(&p, &net, &o).await.reached);
    // The first router loses its route (or its neighbour) and says so at TTL 2.
    net.reroute(|_| {
        vec![
            Hop::Router("10.0.0.1", 2),
            Hop::Unreachable("10.0.0.1", Unreachable::Host),
            Hop::Dest(3),
        ]
    });
    let r = trace(&p, &net, &o).await;
    assert!(!r.reached);
    assert_eq!(r.hops[1].unreachable(), Some(Unreachable::Host));
    assert!(
        !r.path_changed,
        "an outage shows in success, not as a path change"
    );
    net.reroute(|_| chain());
    let r = trace(&p, &net, &o).await;
    assert!(r.reached);
    assert!(!r.path_changed, "nor does its end");
}

#[tokio::test(start_paused = true)]
async fn a_destination_seen_only_beyond_lost_probes_is_no_path_change() {
    let net = Net::new(|_| chain());
    let p = probe(&net);
    let o = opts(100);
    // Warming up: every probe below TTL 8 is lost, the destination answers one beyond.
    net.reroute(|_| {
        let mut h = vec![Hop::Silent; 7];
        h.push(Hop::Dest(1));
        h
    });
    let r = trace(&p, &net, &o).await;
    assert!(r.reached);
    assert_eq!(r.hop_count(), 8);
    net.reroute(|_| chain());
    for _ in 0..3 {
        let r = trace(&p, &net, &o).await;
        assert_eq!(r.hop_count(), 5);
        assert!(!r.path_changed, "{r:#?}");
    }
}

#[tokio::test(start_paused = true)]
async fn spaced_probes_go_in_waves_and_skip_what_lies_beyond_the_destination() {
    let net = Net::new(|_| chain());
    let p = probe(&net);
    let o = TraceOptions {
        spacing: Duration::from_millis(60),
        ..opts(500)
    };
    let start = Instant::now();
    let r = trace(&p, &net, &o).await;
    let took = start.elapsed();
    assert!(r.reached);
    assert!(
        r.hops.iter().all(|h| (h.sent, h.received) == (3, 3)),
        "{r:#?}"
    );
    // The last wave leaves 120 ms in; its answers take up to 10 ms more.
    assert!(
        took >= Duration::from_millis(120) && took < Duration::from_millis(400),
        "{took:?}"
    );
    let sent = net.take_sent();
    // The first wave covers the first window of TTLs; later waves stop at the destination,
    // found by then.
    let w = usize::from(TTL_WINDOW);
    assert_eq!(
        sent.len(),
        w + 5 + 5,
        "{:?}",
        sent.iter().map(|s| s.ttl).collect::<Vec<_>>()
    );
    assert!(sent[..w].windows(2).all(|w| w[0].ttl < w[1].ttl));
}

#[tokio::test(start_paused = true)]
async fn ttl_255_is_probed_and_placed_without_overflow() {
    // 254 anonymous routers and the destination at hop 255: the serial pass walks to the top.
    let net = Net::new(|_| {
        let mut h: Vec<Hop> = (0..253).map(|_| Hop::Router("10.0.0.1", 0)).collect();
        h.push(Hop::Anonymous("10.0.0.254", 0));
        h.push(Hop::Dest(0));
        h
    });
    let p = probe(&net);
    let o = TraceOptions {
        max_hops: 255,
        probes_per_hop: 1,
        ..opts(100)
    };
    let r = trace(&p, &net, &o).await;
    assert!(r.reached);
    assert_eq!(r.hop_count(), 255);
    assert_eq!(r.hops[253].responders[0].address.to_string(), "10.0.0.254");
}

/// A task that wakes late (a loaded machine, qemu-user) finds the answer to a probe sent alone
/// and that probe's deadline both ready. The answer must win: its timestamp says it came in
/// time. Picking either at random lost the anonymous hop of the TTL 255 trace now and then.
#[tokio::test(start_paused = true)]
async fn an_answer_waiting_when_the_deadline_passes_is_taken() {
    let net = Net::new(|_| vec![Hop::Silent, Hop::Dest(1)]);
    let o = opts(100);
    let key = TraceSocketKey {
        ipv6: false,
        protocol: o.protocol,
        sockets: o.sockets,
        tos: o.tos,
        source: o.source,
    };
    let socket = FakeNet(net.clone()).open(&key).unwrap();
    let mut state = TargetState::default();
    let (tx, mut rx) = mpsc::unbounded_channel();
    // Twenty tries: a coin flip between the two would pass all of them once in a million.
    for _ in 0..20 {
        let mut round = Round::new(net.dst, &o, &*socket, &mut state, &net.clock);
        let now = net.clock.now();
        tx.send(TraceReply {
            from: "10.0.0.9".parse().unwrap(),
            dst: net.dst,
            flow: Some(0),
            seq: None,
            kind: ReplyKind::TimeExceeded,
            reply_ttl: Some(250),
            kernel_time: Some(net.clock.wall()),
            read_at: now,
        })
        .unwrap();
        // The round's end is already due when the probe leaves.
        let found = round.probe_alone(1, 0, &mut rx, now).await;
        assert_eq!(
            found.map(|r| r.from.to_string()).as_deref(),
            Some("10.0.0.9")
        );
    }
}

#[tokio::test(start_paused = true)]
async fn the_first_trace_probes_a_window_of_ttls_and_extends_while_routers_answer() {
    // 20 routers, then the destination: the first trace grows by a window at a time, each as
    // soon as its top router answers, not by waiting for a timeout.
    let net = Net::new(|_| {
        let mut h: Vec<Hop> = (0..20).map(|_| Hop::Router("10.0.0.1", 1)).collect();
        h.push(Hop::Dest(1));
        h
    });
    let p = probe(&net);
    let o = TraceOptions {
        max_hops: 64,
        flows: 4,
        probe_budget: 1024,
        ..opts(1000)
    };
    let start = Instant::now();
    let r = trace(&p, &net, &o).await;
    assert!(r.reached);
    assert_eq!(r.hop_count(), 21);
    assert!(
        start.elapsed() < Duration::from_millis(100),
        "{:?}",
        start.elapsed()
    );
    let sent = net.take_sent();
    // Three windows (to TTL 8, 16, 24), not all 64 TTLs, each probed first with one probe
    // per flow a TTL; 12 probes a TTL up to the destination (TTL 21), one per flow beyond.
    let top = sent.iter().map(|s| s.ttl).max().unwrap();
    assert_eq!(top, 3 * TTL_WINDOW);
    assert_eq!(sent.iter().filter(|s| s.ttl > 21).count(), 3 * 4);
    assert_eq!(sent.len(), 21 * 12 + 3 * 4);
}

#[tokio::test(start_paused = true)]
async fn probes_leave_in_batches_and_none_beyond_an_answered_destination() {
    // Sixteen flows, three probes per hop, the destination at hop 2.
    let net = Net::new(|_| vec![Hop::Router("10.0.0.1", 1), Hop::Dest(1)]);
    let p = probe(&net);
    let o = TraceOptions {
        flows: 16,
        ..opts(100)
    };
    let r = trace(&p, &net, &o).await;
    assert!(r.reached);
    let sent = net.take_sent();
    // The first batch (64) holds TTL 1 and the first wave of TTL 2, which finds the
    // destination for every flow; the next batch sends the rest of TTL 2 and nothing for TTLs
    // 3 to 8 (288 probes before batches).
    assert_eq!(
        sent.len(),
        96,
        "{:?}",
        sent.iter().map(|s| s.ttl).collect::<Vec<_>>()
    );
    assert!(sent.iter().all(|s| s.ttl <= 2));
}

#[tokio::test(start_paused = true)]
async fn flows_move_to_new_identifiers_and_find_a_branch_none_hashed_onto() {
    // Five branches, hashed by flow identifier; four flows start on the first four.
    let net = Net::new(|id| {
        vec![
            Hop::Router("10.0.0.1", 1),
            Hop::Router(
                ["10.0.1.1", "10.0.1.2", "10.0.1.3", "10.0.1.4", "10.0.1.5"][usize::from(id % 5)],
                1,
            ),
            Hop::Router("10.0.2.1", 1),
            Hop::Dest(2),
        ]
    });
    let p = probe(&net);
    let o = TraceOptions {
        flows: 4,
        ..opts(100)
    };
    let mut found = std::collections::BTreeSet::new();
    for i in 0..6 {
        let r = trace(&p, &net, &o).await;
        assert!(!r.path_changed, "trace {i}: found, not changed");
        found.extend(r.hops[1].responders.iter().map(|x| x.address.to_string()));
        let ids: Vec<u16> = net.take_sent().iter().map(|s| s.flow).collect();
        assert!(ids.iter().all(|id| *id < crate::net::trace::FLOW_IDS));
        let mut distinct = ids.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), 4, "trace {i}: four flows, four identifiers");
        if i == 0 {
            assert_eq!(distinct, [0, 1, 2, 3]);
        }
    }
    assert!(found.contains("10.0.1.5"), "{found:?}");
    let r = trace(&p, &net, &o).await;
    assert_eq!(r.paths_known, 5);
}

#[test]
fn identifiers_take_turns_and_stay_distinct() {
    use crate::net::trace::FLOW_IDS;
    let mut s = TargetState::default();
    assert_eq!(
        s.rotate(4, true),
        [false; 4],
        "the first trace sets them up"
    );
    let mut used = std::collections::BTreeSet::new();
    for _ in 0..u32::from(FLOW_IDS) {
        let moved = s.rotate(4, true);
        assert_eq!(moved.iter().filter(|m| **m).count(), 1);
        let mut ids = s.ids.clone();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 4);
        used.extend(s.ids.iter().copied());
    }
    assert_eq!(used.len(), usize::from(FLOW_IDS));
    // One flow, or flows that are not Paris, keep their identifiers.
    let mut one = TargetState::default();
    one.rotate(1, true);
    assert_eq!(one.rotate(1, true), [false]);
    assert_eq!(s.rotate(4, false), [false; 4]);
    // Sixteen flows move four at a time.
    let mut many = TargetState::default();
    many.rotate(16, true);
    assert_eq!(many.rotate(16, true).iter().filter(|m| **m).count(), 4);
}

/// Distinct flow identifiers sent at each TTL, from 1.
fn ids_per_ttl(sent: &[Outgoing]) -> Vec<usize> {
    let top = sent.iter().map(|s| s.ttl).max().unwrap_or(0);
    (1..=top)
        .map(|ttl| {
            let mut ids: Vec<u16> = sent
                .iter()
                .filter(|s| s.ttl == ttl)
                .map(|s| s.flow)
                .collect();
            ids.sort_unstable();
            ids.dedup();
            ids.len()
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn the_probe_budget_bounds_discovery_of_a_wide_split() {
    // Eight branches at hop 2: confirming them takes 44 flows there.
    let eight = |id: u16| {
        let b = format!("10.0.1.{}", id % 8 + 1);
        vec![
            Hop::Router("10.0.0.1", 1),
            Hop::Router(Box::leak(b.into_boxed_str()), 1),
            Hop::Router("10.0.2.1", 1),
            Hop::Dest(2),
        ]
    };
    let net = Net::new(eight);
    let p = probe(&net);
    let o = mda(100);
    let r = trace(&p, &net, &o).await;
    assert_eq!(r.hops[1].responders.len(), 8);
    assert_eq!(ids_per_ttl(&net.take_sent())[1], 44);
    let o = TraceOptions {
        probe_budget: 40,
        ..mda(100)
    };
    let r = trace(&p, &net, &o).await;
    assert!(r.reached);
    assert_eq!(net.take_sent().len(), 40);
}

#[tokio::test(start_paused = true)]
async fn discovery_probes_every_hop_in_one_round() {
    // Six routers 50 ms away, no balancing: 5 new flows at each TTL below the destination,
    // all in one round trip, not one per TTL.
    let net = Net::new(|_| {
        let mut h: Vec<Hop> = (1..=6)
            .map(|i| {
                Hop::Router(
                    [
                        "10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6",
                    ][i - 1],
                    50,
                )
            })
            .collect();
        h.push(Hop::Dest(50));
        h
    });
    let p = probe(&net);
    let start = Instant::now();
    let r = trace(&p, &net, &mda(1000)).await;
    assert!(r.reached);
    assert_eq!(ids_per_ttl(&net.take_sent())[..7], [6, 6, 6, 6, 6, 6, 1]);
    // The plain trace's round trip and discovery's: about 100 ms (batches 5 ms apart).
    assert!(
        start.elapsed() < Duration::from_millis(150),
        "{:?}",
        start.elapsed()
    );
}

/// Probes of `sent` at `ttl` or beyond.
fn at_or_beyond(sent: &[Outgoing], ttl: u8) -> usize {
    sent.iter().filter(|s| s.ttl >= ttl).count()
}

#[tokio::test(start_paused = true)]
async fn probes_that_connect_reach_the_destination_one_per_trace() {
    let net = Net::connecting(|_| chain());
    let p = probe(&net);
    let o = TraceOptions {
        flows: 4,
        ..opts(1000)
    };
    for i in 0..3 {
        let start = Instant::now();
        let r = trace(&p, &net, &o).await;
        let took = start.elapsed();
        let sent = net.take_sent();
        assert!(r.reached && !r.paris, "trace {i}: {r:#?}");
        assert_eq!(r.hop_count(), 5);
        assert_eq!(r.flows_reached, 4, "the destination is every flow's");
        assert_eq!(
            addrs(&r),
            ["10.0.0.1", "10.0.1.1", "10.0.2.1", "10.0.3.1", DST]
        );
        // One probe reached the destination: one connection, however many flows and probes.
        assert_eq!(at_or_beyond(&sent, 5), 1, "trace {i}");
        assert_eq!((r.hops[4].sent, r.hops[4].received), (1, 1));
        for h in &r.hops[..4] {
            assert_eq!((h.sent, h.received), (12, 12), "trace {i} hop {}", h.ttl);
        }
        if i == 0 {
            // Not knowing the distance, the first trace goes a TTL at a time (one RTT each).
            assert!(took < Duration::from_millis(100), "{took:?}");
        } else {
            // Later ones send every TTL short of the destination at once, then the one.
            assert!(took < Duration::from_millis(25), "trace {i}: {took:?}");
            assert!(sent[..48].iter().all(|s| s.ttl < 5));
        }
    }
}

/// Probes that connect (unprivileged TCP) through a router, a silent hop and a router to the
/// destination.
fn connecting_past_a_silent_hop() -> Net {
    Net::connecting(|_| {
        vec![
            Hop::Router("10.0.0.1", 1),
            Hop::Silent,
            Hop::Router("10.0.2.1", 1),
            Hop::Dest(2),
        ]
    })
}

#[tokio::test(start_paused = true)]
async fn probes_that_connect_pass_silent_hops_and_follow_a_longer_path() {
    let net = connecting_past_a_silent_hop();
    let p = probe(&net);
    let o = TraceOptions {
        flows: 2,
        ..opts(300)
    };
    let start = Instant::now();
    let r = trace(&p, &net, &o).await;
    assert!(r.reached, "{r:#?}");
    assert_eq!(addrs(&r), ["10.0.0.1", "", "10.0.2.1", DST]);
    // The silent hop held the TTLs beyond it for one timeout, then let them go with its other
    // probes, which take a timeout of their own: two in all.
    assert_eq!(r.hops[1].sent, 6);
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(600) && took < Duration::from_millis(700),
        "{took:?}"
    );
    assert_eq!(at_or_beyond(&net.take_sent(), 4), 1);
    // The path grows by a hop: the old distance is a router now, the new one is probed once.
    net.reroute(|_| {
        vec![
            Hop::Router("10.0.0.1", 1),
            Hop::Silent,
            Hop::Router("10.0.2.1", 1),
            Hop::Router("10.0.3.1", 1),
            Hop::Dest(2),
        ]
    });
    let r = trace(&p, &net, &o).await;
    assert!(r.reached && r.hop_count() == 5, "{r:#?}");
    assert_eq!(at_or_beyond(&net.take_sent(), 5), 1);
    // A silent service (SYNs dropped) opens no connection: the trace moves on past it.
    net.reroute(|_| vec![Hop::Router("10.0.0.1", 1), Hop::DeadDest]);
    let r = trace(&p, &net, &o).await;
    assert!(!r.reached);
}

/// Two equal-cost branches at hop 2, rejoining at hop 3, whose router answers from the
/// interface the probe came in on: every probe takes a branch of its own (a new source port
/// each), in a pseudo-random order. `moved` replaces hop 1 (a reroute before the balancer).
fn per_probe_ecmp(moved: bool) -> impl Fn(u16) -> Vec<Hop> + Send + Sync {
    let n = std::sync::atomic::AtomicU32::new(0);
    move |_| {
        let k = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let b = (k.wrapping_mul(0x9e37_79b9) >> 7) & 1 == 1;
        let (two, three) = if b {
            ("10.0.1.2", "10.0.2.2")
        } else {
            ("10.0.1.1", "10.0.2.1")
        };
        vec![
            Hop::Router(if moved { "10.0.0.9" } else { "10.0.0.1" }, 1),
            Hop::Router(two, 1),
            Hop::Router(three, 1),
            Hop::Dest(2),
        ]
    }
}

#[tokio::test(start_paused = true)]
async fn probes_on_flows_of_their_own_through_a_balancer_are_no_path_change() {
    let net = Net::connecting(per_probe_ecmp(false));
    let p = probe(&net);
    let o = TraceOptions {
        flows: 4,
        probes_per_hop: 1,
        ..opts(200)
    };
    for i in 0..30 {
        let r = trace(&p, &net, &o).await;
        assert!(r.reached);
        assert!(!r.path_changed, "trace {i}: {r:#?}");
    }
    // A reroute is still one change.
    net.reroute(per_probe_ecmp(true));
    let changes: Vec<bool> = path_changes(&p, &net, &o, 4).await;
    assert_eq!(changes, [true, false, false, false]);
}

async fn path_changes(p: &TraceProbe, net: &Net, o: &TraceOptions, n: usize) -> Vec<bool> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(trace(p, net, o).await.path_changed);
    }
    out
}

#[tokio::test(start_paused = true)]
async fn a_connecting_probe_is_waited_for_no_longer_than_its_socket_waits() {
    let net = connecting_past_a_silent_hop();
    let p = probe(&net);
    let start = Instant::now();
    let r = trace(&p, &net, &opts(2000)).await;
    let took = start.elapsed();
    assert!(r.reached);
    // The silent hop's first probe, then its others: two connect limits, not two timeouts.
    assert!(took >= TCP_CONNECT_LIMIT * 2, "{took:?}");
    assert!(
        took < TCP_CONNECT_LIMIT * 2 + Duration::from_millis(50),
        "{took:?}"
    );
}
