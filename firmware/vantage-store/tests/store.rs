//! The store on its own: round trips, cursors, bounds, reopen.

mod common;

use std::time::Duration;

use common::*;
use vantage_core::{ProbeKind, RoundQuality};
use vantage_store::codec::StoredDns;
use vantage_store::{Cursor, DropReason, Store, StoredSample};

#[test]
fn samples_survive_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = now_ms() - 60_000;
    {
        let s = open(dir.path());
        for i in 0..3000u64 {
            let target = ["a", "b", "c"][(i % 3) as usize];
            s.append(&ping(target, t0 + i as i64 * 10, 1000 + i), &labels("x"));
        }
        s.flush().unwrap();
        let st = s.stats();
        assert_eq!(st.samples, 3000);
        assert_eq!(st.pending, 0);
        assert!(st.healthy());
    }
    let s = open(dir.path());
    let st = s.stats();
    assert_eq!(st.samples, 3000, "{st:?}");
    let got = s.query("b", ProbeKind::PING, t0, t0 + 1_000_000).unwrap();
    assert_eq!(got.len(), 1000);
    for (k, g) in got.iter().enumerate() {
        let i = 1 + 3 * k as u64;
        assert_eq!(g.timestamp_ms, t0 + i as i64 * 10);
        let key = s.series(g.series).unwrap();
        assert_eq!(&*key.target, "b");
        assert_eq!(key.labels.get("site").map(String::as_str), Some("x"));
        if !(1000 + i).is_multiple_of(17) {
            assert_eq!(g.ping.unwrap().rtt_us, Some((1000 + i, 1000 + i, 1000 + i)));
        }
    }
    // A time range picks its samples only.
    let part = s.query("a", ProbeKind::PING, t0, t0 + 299).unwrap();
    assert_eq!(part.len(), 10);
    assert!(
        s.query("zz", ProbeKind::PING, 0, i64::MAX)
            .unwrap()
            .is_empty()
    );
}

/// Rounds flagged late or under pressure keep their flags through a commit and a reopen.
#[test]
fn round_quality_survives_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = now_ms() - 60_000;
    let flags = [
        RoundQuality::empty(),
        RoundQuality::LATE,
        RoundQuality::empty(),
        RoundQuality::CPU | RoundQuality::MEMORY,
    ];
    {
        let s = open(dir.path());
        for (i, q) in flags.iter().enumerate() {
            let mut round = ping("a", t0 + i as i64 * 10, 1000);
            round.quality = *q;
            s.append(&round, &labels("x"));
        }
        s.flush().unwrap();
    }
    let s = open(dir.path());
    let got = s.query("a", ProbeKind::PING, t0, t0 + 1_000).unwrap();
    let back: Vec<RoundQuality> = got.iter().map(|g| g.quality).collect();
    assert_eq!(back, flags);
}

/// DNS and trace rounds keep their figures through commits, a reopen and a query: what comes
/// back is what the live sample held, at the stored resolution.
#[test]
fn dns_and_trace_rounds_keep_their_figures() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = now_ms() - 60_000;
    let mut appended = Vec::new();
    {
        let s = open(dir.path());
        for i in 0..600u64 {
            let ms = t0 + i as i64 * 10;
            let sample = match i % 3 {
                0 => dns("d", ms, 1000 + i),
                1 => trace("t", ms, 1000 + i),
                _ => ping("d", ms, 1000 + i),
            };
            s.append(&sample, &labels("x"));
            appended.push(sample);
            if i % 150 == 0 {
                s.flush().unwrap();
            }
        }
        s.flush().unwrap();
        assert_eq!(s.stats().samples, 600);
    }
    let s = open(dir.path());
    for (target, probe) in [("d", ProbeKind::DNS), ("t", ProbeKind::TRACE)] {
        let got = s.query(target, probe, t0, t0 + 1_000_000).unwrap();
        let want: Vec<StoredSample> = appended
            .iter()
            .filter(|a| &*a.target == target && a.probe == probe)
            .map(|a| StoredSample::from_sample(a, got[0].series))
            .collect();
        assert_eq!(got.len(), 200);
        assert_eq!(got, want, "{target}");
    }
    let d = s.query("d", ProbeKind::DNS, t0, t0 + 1_000_000).unwrap();
    let figures = |s: &StoredSample| StoredDns::decode(&s.module.as_ref().unwrap().bytes).unwrap();
    let dd = figures(&d[2]); // n = 1006
    assert_eq!(dd.rcode, Some(0));
    assert_eq!(dd.answers, 1);
    assert_eq!(dd.lookup_us, Some(1006));
    let timeout = figures(&d[1]); // n = 1003, a multiple of 17
    assert_eq!((timeout.rcode, timeout.request_us), (None, Some(500_000)));
    let t = s.query("t", ProbeKind::TRACE, t0, t0 + 1_000_000).unwrap();
    let tt = t[0].trace.as_ref().unwrap();
    assert_eq!(tt.hop_count(), 3 + 1001 % 5);
    assert_eq!(tt.hops.last().unwrap().rtt_avg_us, Some(1001));
    assert_eq!(tt.hops[2].received, 0);
}

#[test]
fn pending_samples_show_in_queries_before_the_commit() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(dir.path());
    o.commit_interval = Duration::from_secs(3600);
    let s = Store::open(o).unwrap();
    let t0 = now_ms();
    s.append(&ping("a", t0, 5), &labels("x"));
    assert_eq!(s.query("a", ProbeKind::PING, t0, t0).unwrap().len(), 1);
    assert_eq!(s.stats().pending, 1);
}

/// Closing wakes the committer at once, however long the commit interval (a close that
/// raced the committer's wait used to hang until the interval ran out).
#[test]
fn close_returns_at_once_with_a_long_commit_interval() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = now_ms();
    for i in 0..40 {
        let mut o = opts(dir.path());
        o.commit_interval = Duration::from_secs(3600);
        let s = Store::open(o).unwrap();
        s.append(&ping("a", t0 + i, 5), &labels("x"));
        let start = std::time::Instant::now();
        drop(s);
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "close took {:?}",
            start.elapsed()
        );
    }
    let s = open(dir.path());
    assert_eq!(
        s.query("a", ProbeKind::PING, t0, t0 + 100).unwrap().len(),
        40
    );
}

#[test]
fn commit_happens_by_count_or_by_interval() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(dir.path());
    o.commit_interval = Duration::from_millis(300);
    o.commit_samples = 100;
    let s = Store::open(o).unwrap();
    let t0 = now_ms();
    for i in 0..100 {
        s.append(&ping("a", t0 + i, 5), &labels("x"));
    }
    std::thread::sleep(Duration::from_millis(150));
    assert_eq!(s.stats().samples, 100, "count triggers a commit at once");
    s.append(&ping("a", t0 + 200, 5), &labels("x"));
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(s.stats().pending, 1);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(s.stats().samples, 101, "the interval commits the rest");
}

#[test]
fn reading_with_cursors_and_backlog() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = now_ms() - 10_000;
    {
        let s = open(dir.path());
        for round in 0..5 {
            for i in 0..100 {
                s.append(&ping("a", t0 + round * 1000 + i, 7), &labels("x"));
            }
            s.flush().unwrap();
        }
        assert_eq!(s.backlog(Cursor::default()), 500);
        let b = s.read_from(s.cursor("ep"), 250).unwrap();
        assert_eq!(b.samples.len(), 250);
        assert_eq!(s.backlog(b.next), 250);
        s.set_cursor("ep", b.next);
        s.flush().unwrap();
    }
    let s = open(dir.path());
    let c = s.cursor("ep");
    assert_eq!(s.backlog(c), 250);
    let rest = s.read_from(c, 10_000).unwrap();
    assert_eq!(rest.samples.len(), 250);
    assert_eq!(rest.samples[0].timestamp_ms, t0 + 2000 + 50);
    assert_eq!(s.backlog(rest.next), 0);
    assert_eq!(s.backlog(s.cursor("other")), 500);
}

#[test]
fn old_samples_are_dropped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(dir.path());
    o.max_age = Duration::from_secs(3600);
    let s = Store::open(o).unwrap();
    let old = now_ms() - 2 * 3600 * 1000;
    for i in 0..50 {
        s.append(&ping("a", old + i, 7), &labels("x"));
    }
    s.flush().unwrap();
    for i in 0..20 {
        s.append(&ping("a", now_ms() + i, 7), &labels("x"));
    }
    s.flush().unwrap();
    // The age bound is applied by the background commit: wait for it, bounded, as a loaded
    // machine may run it late.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut st = s.stats();
    while st.dropped(DropReason::Age) < 50 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        st = s.stats();
    }
    assert_eq!(st.dropped(DropReason::Age), 50, "{st:?}");
    assert_eq!(st.samples, 20);
    assert!(st.oldest_ms.unwrap() >= now_ms() - 10_000);
}

#[test]
fn the_byte_bound_holds_and_drops_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(dir.path());
    o.max_bytes = 4 << 20;
    let s = Store::open(o).unwrap();
    let t0 = now_ms() - 3_600_000;
    let mut n = 0i64;
    for _ in 0..60 {
        for _ in 0..10_000 {
            s.append(
                &ping(&format!("t{}", n % 100), t0 + n, 20_000 + (n % 977) as u64),
                &labels("x"),
            );
            n += 1;
        }
        s.flush().unwrap();
        std::thread::sleep(Duration::from_millis(120));
    }
    let st = s.stats();
    assert!(st.dropped(DropReason::Bytes) > 0, "{st:?}");
    assert_eq!(
        st.samples + st.dropped(DropReason::Bytes),
        n as u64,
        "{st:?}"
    );
    assert!(st.block_bytes <= 4 << 20, "{st:?}");
    // Oldest first: what is left is the newest.
    let c = s.cursor("x");
    let first = s.read_from(c, 1).unwrap();
    assert_eq!(
        first.samples[0].timestamp_ms,
        t0 + st.dropped(DropReason::Bytes) as i64
    );
}

/// A page of targets reads only its own series, from blocks and from rounds not yet committed,
/// in append order; a target the store never saw adds nothing.
#[test]
fn query_many_keeps_only_the_series_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let t0 = now_ms() - 60_000;
    for i in 0..300u64 {
        let target = ["a", "b", "c"][i as usize % 3];
        s.append(&ping(target, t0 + i as i64 * 10, 1000 + i), &labels("x"));
        if i == 150 {
            s.flush().unwrap();
        }
    }
    let keys = [
        ("a", ProbeKind::PING),
        ("c", ProbeKind::PING),
        ("nobody", ProbeKind::PING),
    ];
    let got = s.query_many(&keys, t0, t0 + 1_000_000).unwrap();
    let targets: Vec<String> = got
        .iter()
        .map(|r| s.series(r.series).unwrap().target.to_string())
        .collect();
    assert_eq!(got.len(), 200);
    assert!(targets.iter().all(|t| t == "a" || t == "c"), "{targets:?}");
    assert!(
        got.windows(2)
            .all(|w| w[0].timestamp_ms < w[1].timestamp_ms)
    );
    assert!(
        s.query_many(&[("nobody", ProbeKind::PING)], t0, t0 + 1_000_000)
            .unwrap()
            .is_empty()
    );
}
