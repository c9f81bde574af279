//! Unprivileged TCP traces in the trace labs (root only; see `lab`). Each probe is a real
//! `connect()`, so every probe that reaches a service would otherwise complete a handshake
//! there: the service at the chain's `d` counts the connections it accepts and how each ended,
//! and nft counters at `d` count the handshakes' packets. Each probe also has a source port of
//! its own, so it takes a branch of its own through a per-flow balancer: the ECMP lab checks
//! that this is no path change.

mod lab;

use std::io::{ErrorKind, Read};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use lab::{As, Chain, Ecmp, Lab};
use vantage_core::{
    TraceDiscovery, TraceOptions, TraceProbe, TraceProtocol, TraceReport, TraceSockets,
};

const PORT: u16 = 8080;
/// A port nothing listens on.
const CLOSED: u16 = 8081;
const TRACES: usize = 3;

/// How a connection the service accepted ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The prober reset it (`SO_LINGER` 0): no FIN exchange, no TIME_WAIT.
    Reset,
    /// An orderly close (FIN).
    Closed,
    /// Still open after two seconds.
    Open,
}

/// Accepts on `addr` until `stop`, recording how each connection ended.
fn serve(listener: TcpListener, stop: Arc<AtomicBool>, ends: Arc<Mutex<Vec<End>>>) {
    listener.set_nonblocking(true).unwrap();
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((mut s, _)) => {
                s.set_nonblocking(false).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let end = match s.read(&mut [0u8; 64]) {
                    Err(e) if e.kind() == ErrorKind::ConnectionReset => End::Reset,
                    Ok(0) => End::Closed,
                    _ => End::Open,
                };
                ends.lock().unwrap().push(end);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// nft counters at the service's host: SYN-ACKs it sent, RSTs and handshake-completing ACKs
/// (pure ACKs: the prober sends no data) it received; SYNs to the closed port and the RSTs
/// refusing them.
fn count_handshakes(lab: &Lab, d: usize) {
    let (p, c) = (PORT.to_string(), CLOSED.to_string());
    let rules = format!(
        "add table inet cnt; \
         add counter inet cnt synack; add counter inet cnt rst; add counter inet cnt ack; \
         add counter inet cnt syn_closed; add counter inet cnt refused; \
         add chain inet cnt out {{ type filter hook output priority 0; }}; \
         add chain inet cnt in {{ type filter hook input priority 0; }}; \
         add rule inet cnt out tcp sport {p} tcp flags & (syn | ack) == syn | ack counter name synack; \
         add rule inet cnt in tcp dport {p} tcp flags & rst == rst counter name rst; \
         add rule inet cnt in tcp dport {p} tcp flags & (fin | syn | rst | ack) == ack counter name ack; \
         add rule inet cnt in tcp dport {c} tcp flags & (syn | ack) == syn counter name syn_closed; \
         add rule inet cnt out tcp sport {c} tcp flags & rst == rst counter name refused"
    );
    lab.exec(d, &["nft", &rules]);
}

fn counter(lab: &Lab, d: usize, name: &str) -> u64 {
    let out = lab.exec(d, &["nft", "list", "counter", "inet", "cnt", name]);
    let words: Vec<&str> = out.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "packets").expect("packets");
    words[at + 1].parse().unwrap()
}

/// Traces from `s` until the lab answers end to end over `hops` hops (neighbour discovery,
/// first ARP), at most 10 s.
fn warm_up(lab: &Lab, s: usize, dst: IpAddr, hops: usize) {
    let start = Instant::now();
    loop {
        let o = TraceOptions {
            protocol: TraceProtocol::Icmp,
            sockets: TraceSockets::Raw,
            timeout: Duration::from_millis(800),
            max_hops: 10,
            ..TraceOptions::default()
        };
        let r = lab.run(s, As::Root, move || async move {
            TraceProbe::new()
                .trace("warm", dst, &o, Duration::from_secs(10))
                .await
                .unwrap()
        });
        if r.reached && r.hops.len() == hops && r.hops.iter().all(|h| h.received == h.sent) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no route: {r:#?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn tcp_options(port: u16) -> TraceOptions {
    TraceOptions {
        protocol: TraceProtocol::Tcp,
        sockets: TraceSockets::Unprivileged,
        port,
        flows: 4,
        probes_per_hop: 3,
        timeout: Duration::from_millis(800),
        max_hops: 10,
        discovery: TraceDiscovery::Flows,
        ..TraceOptions::default()
    }
}

/// `TRACES` unprivileged TCP traces by one prober (the first without knowing the distance, the
/// others with it), pausing after each until `next` says go on.
fn traces(
    c: &Chain,
    dst: IpAddr,
    done: mpsc::Sender<(TraceReport, Duration)>,
    next: mpsc::Receiver<()>,
) {
    let o = tcp_options(PORT);
    c.lab.run(c.s, As::Nobody, move || async move {
        let p = TraceProbe::new();
        for _ in 0..TRACES {
            let start = Instant::now();
            let r = p
                .trace("svc", dst, &o, Duration::from_secs(20))
                .await
                .unwrap();
            done.send((r, start.elapsed())).unwrap();
            next.recv().unwrap();
        }
    });
}

#[test]
fn unprivileged_tcp_traces_complete_at_most_one_connection_each_and_reset_it() {
    const NAME: &str = "unprivileged_tcp_traces_complete_at_most_one_connection_each_and_reset_it";
    if !lab::can_build(NAME) {
        return;
    }
    let c = Chain::new("conn");
    count_handshakes(&c.lab, c.d);
    for v6 in [false, true] {
        warm_up(&c.lab, c.s, c.dst(v6), 5);
        let dst = c.dst(v6);
        let stop = Arc::new(AtomicBool::new(false));
        let ends: Arc<Mutex<Vec<End>>> = Arc::default();
        let (ready_tx, ready_rx) = mpsc::channel();
        let (done_tx, done_rx) = mpsc::channel();
        let (next_tx, next_rx) = mpsc::channel();
        let before = ["synack", "rst", "ack"].map(|n| counter(&c.lab, c.d, n));
        std::thread::scope(|scope| {
            let (stop2, ends2, lab) = (stop.clone(), ends.clone(), &c.lab);
            scope.spawn(move || {
                lab.block(c.d, move || {
                    let l = TcpListener::bind(SocketAddr::new(dst, PORT)).unwrap();
                    ready_tx.send(()).unwrap();
                    serve(l, stop2, ends2);
                })
            });
            ready_rx.recv().unwrap();
            let chain = &c;
            scope.spawn(move || traces(chain, dst, done_tx, next_rx));
            // Per trace: handshakes completed (the service's kernel counts them as they come)
            // and connections the service accepted so far.
            let (mut handshakes, mut accepted) = (Vec::new(), Vec::new());
            let mut acks_so_far = before[2];
            for i in 0..TRACES {
                let (r, took) = done_rx.recv().unwrap();
                eprintln!("v6 {v6}: trace {i} took {took:?}");
                assert!(
                    r.reached && r.hop_count() == 5,
                    "v6 {v6}, trace {i}: {r:#?}"
                );
                // The trace's sockets all end within their 990 ms connect limit.
                std::thread::sleep(Duration::from_millis(1500));
                let acks = counter(&c.lab, c.d, "ack");
                handshakes.push(acks - acks_so_far);
                acks_so_far = acks;
                accepted.push(ends.lock().unwrap().len());
                next_tx.send(()).unwrap();
            }
            std::thread::sleep(Duration::from_millis(500));
            let after = ["synack", "rst", "ack"].map(|n| counter(&c.lab, c.d, n));
            let [synacks, rsts, acks] = [0, 1, 2].map(|i| after[i] - before[i]);
            // Raw SYNs (unchanged): the prober's kernel knows no such connection and resets
            // every SYN-ACK, so the service completes none.
            let o = TraceOptions {
                sockets: TraceSockets::Raw,
                ..tcp_options(PORT)
            };
            let r = c.lab.run(c.s, As::Root, move || async move {
                TraceProbe::new()
                    .trace("raw", dst, &o, Duration::from_secs(20))
                    .await
                    .unwrap()
            });
            assert!(r.reached && r.raw_sockets, "v6 {v6}: {r:#?}");
            std::thread::sleep(Duration::from_millis(1500));
            let raw = ["synack", "rst", "ack"].map(|n| counter(&c.lab, c.d, n));
            let [raw_synacks, raw_rsts, raw_acks] = [0, 1, 2].map(|i| raw[i] - after[i]);
            stop.store(true, Ordering::Relaxed);
            let ends = ends.lock().unwrap().clone();
            eprintln!(
                "v6 {v6}: a raw trace: SYN-ACKs sent {raw_synacks}, RSTs received {raw_rsts}, \
                 handshake ACKs {raw_acks}"
            );
            assert!(raw_synacks >= 1 && raw_rsts >= raw_synacks && raw_acks == 0);
            let resets = ends.iter().filter(|e| **e == End::Reset).count();
            eprintln!(
                "v6 {v6}: handshakes completed per trace {handshakes:?}, accepted after each \
                 trace {accepted:?} ({resets} reset), SYN-ACKs sent {synacks}, RSTs received \
                 {rsts}, handshake ACKs {acks}"
            );
            assert!(
                handshakes.iter().all(|n| *n <= 1),
                "v6 {v6}: connections per trace {handshakes:?}"
            );
            assert!(!ends.is_empty(), "v6 {v6}: the service saw no connection");
            assert!(
                ends.iter().all(|e| *e == End::Reset),
                "v6 {v6}: every connection ends with a reset: {ends:?}"
            );
            assert_eq!(acks as usize, ends.len(), "v6 {v6}: handshakes completed");
            assert!(rsts as usize >= ends.len(), "v6 {v6}: {rsts} RSTs");
        });
    }
}

#[test]
fn a_closed_port_sees_one_syn_per_unprivileged_tcp_trace() {
    const NAME: &str = "a_closed_port_sees_one_syn_per_unprivileged_tcp_trace";
    if !lab::can_build(NAME) {
        return;
    }
    let c = Chain::new("refd");
    count_handshakes(&c.lab, c.d);
    for v6 in [false, true] {
        warm_up(&c.lab, c.s, c.dst(v6), 5);
        let dst = c.dst(v6);
        let before = ["syn_closed", "refused"].map(|n| counter(&c.lab, c.d, n));
        let o = tcp_options(CLOSED);
        let timeout = o.timeout;
        let reports = c.lab.run(c.s, As::Nobody, move || async move {
            let p = TraceProbe::new();
            let mut out = Vec::new();
            for _ in 0..TRACES {
                out.push(
                    p.trace("refd", dst, &o, Duration::from_secs(20))
                        .await
                        .unwrap(),
                );
            }
            out
        });
        let after = ["syn_closed", "refused"].map(|n| counter(&c.lab, c.d, n));
        let [syns, refused] = [0, 1].map(|i| after[i] - before[i]);
        eprintln!("v6 {v6}: {TRACES} traces to a closed port: {syns} SYNs, {refused} RSTs");
        for (i, r) in reports.iter().enumerate() {
            assert!(
                r.reached && r.hop_count() == 5,
                "v6 {v6}, trace {i}: {r:#?}"
            );
            let last = r.hops.last().unwrap();
            assert_eq!((last.sent, last.received), (1, 1), "v6 {v6}, trace {i}");
            assert!(last.mean().is_some_and(|rtt| rtt < timeout));
        }
        assert_eq!((syns, refused), (TRACES as u64, TRACES as u64), "v6 {v6}");
    }
}

#[test]
fn unprivileged_tcp_through_a_per_flow_balancer_is_no_path_change() {
    const NAME: &str = "unprivileged_tcp_through_a_per_flow_balancer_is_no_path_change";
    if !lab::can_build(NAME) {
        return;
    }
    let e = Ecmp::new("tcpe");
    for v6 in [false, true] {
        warm_up(&e.lab, e.s, e.dst(v6), 4);
        let dst = e.dst(v6);
        // The closed port answers with a RST: no service needed.
        let o = TraceOptions {
            probes_per_hop: 1,
            ..tcp_options(CLOSED)
        };
        let reports = e.lab.run(e.s, As::Nobody, move || async move {
            let p = TraceProbe::new();
            let mut out = Vec::new();
            for _ in 0..15 {
                out.push(
                    p.trace("ecmp", dst, &o, Duration::from_secs(20))
                        .await
                        .unwrap(),
                );
            }
            out
        });
        // A trace whose 4 probes at hop 2 all took one branch (one in 8) before any trace met
        // both there may count one change: it cannot tell the other branch from a reroute.
        // Once a trace met both, hop 2 and 3 are per-packet and nothing counts.
        let mut changes = Vec::new();
        let mut both_at = None;
        for (i, r) in reports.iter().enumerate() {
            assert!(
                r.reached && r.hop_count() == 4,
                "v6 {v6}, trace {i}: {r:#?}"
            );
            if r.path_changed {
                changes.push(i);
            }
            if both_at.is_none() && r.hops[1].responders.len() == 2 {
                both_at = Some(i);
            }
        }
        eprintln!("v6 {v6}: both branches first met in trace {both_at:?}, changes in {changes:?}");
        let both_at = both_at.expect("15 traces of 4 probes: one meets both branches");
        assert!(
            changes.len() <= 1 && changes.iter().all(|c| *c <= both_at),
            "v6 {v6}: changes in traces {changes:?}, both branches met in trace {both_at}"
        );
    }
}
