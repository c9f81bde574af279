//! Probe rate limits: a trace's own and the device's, under tokio's paused time.

use super::*;

/// When each probe left, to `dst` (every destination: `None`).
fn times(net: &Net, dst: Option<IpAddr>) -> Vec<Instant> {
    net.sent_at
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, d)| dst.is_none_or(|x| x == *d))
        .map(|(t, _)| *t)
        .collect()
}

/// No stretch of sends holds more probes than a bucket of `rate` gives: `burst` plus `rate`
/// a second.
fn assert_within(times: &[Instant], rate: u32, burst: u32) {
    for i in 0..times.len() {
        for j in i..times.len() {
            let probes = (j - i + 1) as f64;
            let span = times[j].duration_since(times[i]).as_secs_f64();
            let allowed = f64::from(burst) + f64::from(rate) * span + 1e-9;
            assert!(
                probes <= allowed,
                "{probes} probes in {span} s at {rate}/s, burst {burst}"
            );
        }
    }
}

/// Each hop's probes and answers.
fn counts(r: &TraceReport) -> Vec<(u8, u32, u32)> {
    r.hops.iter().map(|h| (h.ttl, h.sent, h.received)).collect()
}

#[tokio::test(start_paused = true)]
async fn n_probes_at_rate_r_take_at_least_n_minus_the_burst_over_r() {
    let rate = 10;
    let burst = rate::burst(rate);
    let limited = TraceOptions {
        flows: 4,
        probes_per_second: rate,
        ..opts(1000)
    };
    let free = TraceOptions {
        probes_per_second: 12_800,
        ..limited.clone()
    };
    let net = Net::new(|_| chain());
    let unlimited = trace(&probe(&net), &net, &free).await;
    assert!(!unlimited.rate_limited);
    let net = Net::new(|_| chain());
    let start = Instant::now();
    let r = trace(&probe(&net), &net, &limited).await;
    let sent = times(&net, None);
    let n = sent.len() as u32;
    assert!(n > 2 * burst, "{n} probes");
    let last = sent.last().unwrap().duration_since(start);
    let least = Duration::from_secs(u64::from(n - burst)) / rate;
    assert!(
        last >= least,
        "{n} probes at {rate}/s: the last left at {last:?}"
    );
    assert_within(&sent, rate, burst);
    // Held back, not dropped: every hop got the probes and answers it gets without a limit.
    assert!(r.reached && r.rate_limited && !r.rate_cut_short);
    assert_eq!(counts(&r), counts(&unlimited));
    assert_eq!(addrs(&r), addrs(&unlimited));
}

#[tokio::test(start_paused = true)]
async fn a_trace_the_limit_keeps_from_finishing_says_so() {
    let o = TraceOptions {
        flows: 4,
        probes_per_second: 1,
        ..opts(1000)
    };
    let net = Net::new(|_| chain());
    let r = probe(&net)
        .trace("t", net.dst, &o, Duration::from_secs(3))
        .await
        .unwrap();
    // One token at once, then one a second, within 3 s.
    let sent = times(&net, None);
    assert!((3..=4).contains(&sent.len()), "{} probes", sent.len());
    assert!(r.rate_limited && r.rate_cut_short);
    let mut counted = [0; 3];
    series::count(&r, &mut |i, n| counted[i] += n);
    assert_eq!(counted, [0, 1, 1]);
}

#[tokio::test(start_paused = true)]
async fn traces_running_at_once_share_the_device_limit() {
    let rate = 20;
    let burst = rate::burst(rate);
    let device = Arc::new(DeviceRate::new(rate));
    let o = TraceOptions {
        flows: 4,
        probes_per_second: 12_800,
        ..opts(1000)
    };
    let net = Net::new(|_| chain());
    let p = probe(&net).with_device_rate(device.clone());
    let (a, b): (IpAddr, IpAddr) = (net.dst, "192.0.2.98".parse().unwrap());
    let start = Instant::now();
    let budget = Duration::from_secs(60);
    let (ra, rb) = tokio::join!(p.trace("a", a, &o, budget), p.trace("b", b, &o, budget));
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert!(ra.reached && rb.reached);
    assert!(ra.rate_limited && rb.rate_limited);
    assert!(!ra.rate_cut_short && !rb.rate_cut_short);
    let all = times(&net, None);
    let n = all.len() as u32;
    assert!(n > 2 * burst, "{n} probes");
    // Together within the device's rate: alone, each would have had it to itself.
    assert_within(&all, rate, burst);
    let last = all.last().unwrap().duration_since(start);
    assert!(
        last >= Duration::from_secs(u64::from(n - burst)) / rate,
        "{last:?}"
    );
    // They took turns: each sent while the other was still sending.
    let (ta, tb) = (times(&net, Some(a)), times(&net, Some(b)));
    assert!(ta[0] < *tb.last().unwrap() && tb[0] < *ta.last().unwrap());
    let half = |t: &[Instant]| {
        t.iter()
            .filter(|x| x.duration_since(start) < last / 2)
            .count()
    };
    assert!(half(&ta) >= ta.len() / 4 && half(&tb) >= tb.len() / 4);
    // A new rate holds from the next token on.
    device.set_rate(5);
    assert_eq!(device.rate(), 5);
}
