//! The ping probe on real kernel sockets, in network namespaces built for each test.
//!
//! Each test builds a client and a server namespace joined by a veth pair; delay comes from an
//! NFQUEUE holder in the server (this kernel has no netem) and loss from an iptables
//! `statistic` rule. Needs root: skipped with a printed reason otherwise, unless
//! `VANTAGE_REQUIRE_ROOT_TESTS=1`, which turns the skip into a failure.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use vantage_core::net::{IcmpSocketFactory, KernelSockets, SocketKey, SocketKind};
use vantage_core::{PingOptions, PingProbe, PingReport, SystemClock};
use vantage_testkit::{DelayQueue, VethPair, quantile, root_or_skip};

const DELAY: Duration = Duration::from_millis(10);
/// A round's timeout: no reply later than it counts.
const TIMEOUT: Duration = Duration::from_secs(1);

fn opts(packets: u32, spacing_ms: u64) -> PingOptions {
    PingOptions {
        packets,
        spacing: Duration::from_millis(spacing_ms),
        timeout: TIMEOUT,
        ..PingOptions::default()
    }
}

fn probe(force_raw: bool) -> PingProbe {
    PingProbe::with_parts(Arc::new(KernelSockets { force_raw }), Arc::new(SystemClock))
}

fn addr(s: &str) -> IpAddr {
    s.parse().expect("valid address")
}

/// The socket kind the kernel hands out in the calling thread's namespace.
fn socket_kind(force_raw: bool, ipv6: bool) -> SocketKind {
    let key = SocketKey {
        ipv6,
        ttl: None,
        tos: None,
        source: None,
    };
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async { KernelSockets { force_raw }.open(&key).unwrap().kind() })
}

/// Absolute errors against the delay, sorted.
fn errors(rtts: &[Duration], truth: Duration) -> Vec<Duration> {
    let mut e: Vec<Duration> = rtts.iter().map(|r| r.abs_diff(truth)).collect();
    e.sort();
    e
}

fn assert_all_replies(what: &str, r: &PingReport, packets: u32, min_rtt: Duration) {
    assert_eq!(r.sent, packets, "{what}: {r:?}");
    assert_eq!(
        r.received, packets,
        "{what}: every request should be answered: {r:?}"
    );
    assert_eq!(r.duplicates, 0, "{what}: {r:?}");
    assert_eq!(r.icmp_errors, 0, "{what}: {r:?}");
    // Below: the delay holder held every request. Above: a reply counted after the timeout
    // would be a bug; anything less is not, as a loaded machine stalls the holder itself
    // (a CI-like run saw six replies held 521 ms).
    for rtt in &r.rtts {
        assert!(
            *rtt >= min_rtt && *rtt < TIMEOUT,
            "{what}: RTT {rtt:?} outside [{min_rtt:?}, {TIMEOUT:?}): {r:?}"
        );
    }
}

/// fping's `-C` summary line on stderr: `ADDR : 10.2 10.1 - 10.3` (ms, `-` for a loss).
fn parse_fping(stderr: &str, target: &str) -> Vec<Duration> {
    let line = stderr
        .lines()
        .find(|l| l.split_whitespace().next() == Some(target))
        .unwrap_or_else(|| panic!("no fping line for {target} in:\n{stderr}"));
    let (_, values) = line.split_once(':').expect("fping -C line has a colon");
    values
        .split_whitespace()
        .filter(|v| *v != "-")
        .map(|v| Duration::from_secs_f64(v.parse::<f64>().expect("fping RTT") / 1000.0))
        .collect()
}

#[test]
fn rtt_with_10ms_delay_is_at_least_as_accurate_as_fping() {
    if !root_or_skip("rtt_with_10ms_delay_is_at_least_as_accurate_as_fping") {
        return;
    }
    if let Some(t) = vantage_testkit::missing_tools(&["fping"]) {
        panic!("the fping comparison needs `{t}` (scripts/deps.d lists it)");
    }
    let net = VethPair::new("rtt");
    let delay = DelayQueue::echo_requests(&net.server, 1, DELAY, Duration::ZERO);
    const N: u32 = 200;
    // Both pingers run at the same time, so they see the same path and the same machine load.
    let fping = net
        .client
        .command("fping")
        .args(["-C", &N.to_string(), "-p", "10", "-t", "1000", "-q"])
        .arg(VethPair::SERVER_V4)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start fping");
    let report = net.client.block_on(|| async {
        probe(false)
            .round(addr(VethPair::SERVER_V4), &opts(N, 10))
            .await
            .unwrap()
    });
    let out = fping.wait_with_output().expect("fping ran");
    let fping_rtts = parse_fping(&String::from_utf8_lossy(&out.stderr), VethPair::SERVER_V4);
    assert_all_replies("vantage", &report, N, DELAY);
    assert!(
        fping_rtts.len() as u32 >= N * 9 / 10,
        "fping lost too much: {fping_rtts:?}"
    );

    let ours = errors(&report.rtts, DELAY);
    let theirs = errors(&fping_rtts, DELAY);
    // fping prints RTTs from 10 ms on with one decimal, so its figures carry up to ±50 µs of
    // rounding; two pingers sampling the same path a few milliseconds apart on a busy 2-core
    // machine differ by more: a median 130 µs apart was seen with the machine busy. Beyond
    // those 250 µs (2.5 % of the delay), vantage must be at least as close to the truth as
    // fping.
    // The median is asserted; the tail (p90) is printed only: a loaded CI machine preempts either
    // pinger at random, and tail accuracy is measured side by side in scripts/bench-ping.sh.
    let allowance = Duration::from_micros(50 + 200);
    for q in [0.5, 0.9] {
        let (o, t) = (quantile(&ours, q).unwrap(), quantile(&theirs, q).unwrap());
        eprintln!("p{:.0} |error|: vantage {o:?}, fping {t:?}", q * 100.0);
        assert!(
            q > 0.5 || o <= t + allowance,
            "vantage's p{} error {o:?} is worse than fping's {t:?}\nvantage: {:?}\nfping: {fping_rtts:?}",
            q * 100.0,
            report.rtts
        );
    }
    // And the delay is really there: no RTT below it.
    assert!(report.min().unwrap() >= DELAY, "{report:?}");
    // Every request's hold started at the kernel's receive stamp, so the holder's own error is
    // only its release lateness, which it recorded for each.
    let held = delay.stop();
    eprintln!("holder: {}", held.summary());
    assert!(held.packets >= u64::from(N) * 19 / 10, "{}", held.summary());
    assert_eq!(held.kernel_arrivals, held.packets, "{}", held.summary());
    assert_eq!(held.late.count(), held.packets, "{}", held.summary());
}

#[test]
fn loss_of_20_percent_is_reported_as_such() {
    if !root_or_skip("loss_of_20_percent_is_reported_as_such") {
        return;
    }
    let net = VethPair::new("loss");
    net.server.drop_echo_requests(0.2);
    // Four rounds of 100, as the daemon would run them.
    let reports: Vec<PingReport> = net.client.block_on(|| async {
        let p = probe(false);
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(
                p.round(addr(VethPair::SERVER_V4), &opts(100, 5))
                    .await
                    .unwrap(),
            );
        }
        v
    });
    let sent: u32 = reports.iter().map(|r| r.sent).sum();
    let received: u32 = reports.iter().map(|r| r.received).sum();
    let lost = u64::from(sent - received);
    assert_eq!(sent, 400);
    // Exact: every loss we report is a request the rule dropped, and the other way round.
    let dropped = net.server.rule_packets(false, "INPUT");
    assert_eq!(
        lost, dropped,
        "reported {lost} lost, iptables dropped {dropped}"
    );
    // And about 20 %: the binomial spread over 400 packets is sqrt(.2 × .8 / 400) = 2 %, so
    // ±8 % is four standard deviations (a false failure about once in 16,000 runs).
    let ratio = lost as f64 / f64::from(sent);
    assert!(
        (0.12..=0.28).contains(&ratio),
        "loss {ratio} over {sent} packets"
    );
    for r in &reports {
        assert!((r.loss_ratio() - f64::from(r.sent - r.received) / f64::from(r.sent)).abs() < 1e-9);
        assert_eq!(r.duplicates, 0);
    }
}

#[test]
fn ipv6_on_the_same_veth() {
    if !root_or_skip("ipv6_on_the_same_veth") {
        return;
    }
    let net = VethPair::new("v6");
    net.client.allow_ping_sockets(true);
    let _delay = DelayQueue::echo_requests(&net.server, 1, DELAY, Duration::ZERO);
    let (v6, v4) = net.client.block_on(|| async {
        let p = probe(false);
        let v6 = p
            .round(addr(VethPair::SERVER_V6), &opts(20, 10))
            .await
            .unwrap();
        let v4 = p
            .round(addr(VethPair::SERVER_V4), &opts(5, 10))
            .await
            .unwrap();
        (v6, v4)
    });
    let kind = net.client.run(|| socket_kind(false, true));
    assert_eq!(kind, SocketKind::Datagram);
    assert_all_replies("IPv6", &v6, 20, DELAY);
    assert_all_replies("IPv4 beside it", &v4, 5, DELAY);
    // veth stamps what it sends: every RTT starts at the kernel's send time.
    assert_eq!((v6.kernel_send_stamps, v4.kernel_send_stamps), (20, 5));
    assert_eq!(v6.address, Some(addr(VethPair::SERVER_V6)));
}

#[test]
fn raw_socket_path_works_for_both_families() {
    if !root_or_skip("raw_socket_path_works_for_both_families") {
        return;
    }
    let net = VethPair::new("raw");
    let _delay = DelayQueue::echo_requests(&net.server, 1, DELAY, Duration::ZERO);
    let (v4, v6) = net.client.block_on(|| async {
        let p = probe(true);
        let v4 = p
            .round(addr(VethPair::SERVER_V4), &opts(20, 10))
            .await
            .unwrap();
        let v6 = p
            .round(addr(VethPair::SERVER_V6), &opts(20, 10))
            .await
            .unwrap();
        (v4, v6)
    });
    let (k4, k6) = net
        .client
        .run(|| (socket_kind(true, false), socket_kind(true, true)));
    assert_eq!((k4, k6), (SocketKind::Raw, SocketKind::Raw));
    assert_all_replies("raw IPv4", &v4, 20, DELAY);
    assert_all_replies("raw IPv6", &v6, 20, DELAY);
    assert_eq!((v4.kernel_send_stamps, v6.kernel_send_stamps), (20, 20));
}

#[test]
fn datagram_socket_is_preferred_and_raw_is_the_fallback() {
    if !root_or_skip("datagram_socket_is_preferred_and_raw_is_the_fallback") {
        return;
    }
    let net = VethPair::new("kind");
    net.client.allow_ping_sockets(false);
    let denied = net.client.run(|| socket_kind(false, false));
    net.client.allow_ping_sockets(true);
    let allowed = net.client.run(|| socket_kind(false, false));
    assert_eq!(
        denied,
        SocketKind::Raw,
        "no ping sockets allowed: falls back to raw"
    );
    assert_eq!(allowed, SocketKind::Datagram);
}

#[test]
fn two_targets_pinging_the_same_host_concurrently_both_get_every_reply() {
    if !root_or_skip("two_targets_pinging_the_same_host_concurrently_both_get_every_reply") {
        return;
    }
    let net = VethPair::new("dup");
    net.client.allow_ping_sockets(true);
    let _delay = DelayQueue::echo_requests(&net.server, 1, DELAY, Duration::ZERO);
    const N: u32 = 50;
    let results = net.client.block_on(|| async {
        let mut out = Vec::new();
        for force_raw in [false, true] {
            // One prober, as the daemon has: both targets share its socket.
            let p = probe(force_raw);
            let o = opts(N, 5);
            let (a, b) = tokio::join!(
                p.round(addr(VethPair::SERVER_V4), &o),
                p.round(addr(VethPair::SERVER_V4), &o)
            );
            out.push((
                format!("shared socket, raw={force_raw}"),
                a.unwrap(),
                b.unwrap(),
            ));
            // Two probers, two sockets: on datagram sockets the kernel picks each identifier.
            let (p1, p2) = (probe(force_raw), probe(force_raw));
            let (a, b) = tokio::join!(
                p1.round(addr(VethPair::SERVER_V6), &o),
                p2.round(addr(VethPair::SERVER_V6), &o)
            );
            out.push((
                format!("own sockets, raw={force_raw}"),
                a.unwrap(),
                b.unwrap(),
            ));
        }
        out
    });
    for (what, a, b) in &results {
        assert_all_replies(&format!("{what}, first"), a, N, DELAY);
        assert_all_replies(&format!("{what}, second"), b, N, DELAY);
    }
}
