//! Range queries through the per-minute aggregates: the same answer as folding the rounds,
//! without reading the blocks, across a reopen.

mod common;

use common::*;
use vantage_core::ProbeKind;
use vantage_store::{Agg, Store};

const STEP: i64 = 10 * 60_000;

/// The rounds themselves, folded into the same buckets.
fn from_rounds(s: &Store, target: &str, probe: ProbeKind, from: i64, to: i64) -> Vec<(i64, Agg)> {
    let mut out: Vec<(i64, Agg)> = Vec::new();
    // In time order (a late round comes back in append order).
    let mut rounds = s.query(target, probe, from, to).unwrap();
    rounds.sort_by_key(|r| r.timestamp_ms);
    for r in rounds {
        let b = r.timestamp_ms.div_euclid(STEP) * STEP;
        if out.last().is_none_or(|(lb, _)| *lb != b) {
            out.push((b, Agg::default()));
        }
        out.last_mut().unwrap().1.add(&r);
    }
    out
}

#[test]
fn aggregates_answer_like_the_rounds_without_reading_blocks() {
    let dir = tempfile::tempdir().unwrap();
    // Two hours of two targets at one round a second, ending an hour ago.
    let t0 = (now_ms() - 3 * 3_600_000) / 3_600_000 * 3_600_000;
    let to = t0 + 2 * 3_600_000;
    {
        let s = open(dir.path());
        for i in 0..7200i64 {
            s.append(
                &ping("a", t0 + i * 1000, 1000 + (i as u64 * 7919) % 20_000),
                &labels("x"),
            );
            s.append(&ping("b", t0 + i * 1000 + 500, 5000), &labels("x"));
            if i % 600 == 0 {
                s.flush().unwrap();
            }
        }
        s.flush().unwrap();
        // The next commit writes the minutes the last one completed.
        s.flush().unwrap();
        let want = from_rounds(&s, "a", ProbeKind::PING, t0, to);
        assert_eq!(want.len(), 12);
        let before = s.stats().blocks_read;
        let got = s.aggregate("a", ProbeKind::PING, t0, to, STEP).unwrap();
        assert_eq!(
            s.stats().blocks_read,
            before,
            "the aggregates answered, not the blocks"
        );
        assert_eq!(got, want);
        let a = &got[3].1;
        assert_eq!(a.rounds, 600);
        assert_eq!(a.sent, 600);
        assert!(a.time.quantile(0.5).unwrap() > 1000.0);
    }
    // After a reopen: the same answer (the newest minutes rebuilt from the blocks).
    let s = open(dir.path());
    let want = from_rounds(&s, "a", ProbeKind::PING, t0, to);
    assert_eq!(
        s.aggregate("a", ProbeKind::PING, t0, to, STEP).unwrap(),
        want
    );
    assert_eq!(
        s.aggregate("b", ProbeKind::PING, t0, to, 3_600_000)
            .unwrap()
            .len(),
        2
    );
    assert!(
        s.aggregate("zz", ProbeKind::PING, t0, to, STEP)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn recent_rounds_count_before_their_minute_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let t0 = now_ms() - 30_000;
    for i in 0..20i64 {
        s.append(&ping("a", t0 + i * 1000, 2000), &labels("x"));
    }
    // Pending, then committed but not written: counted once either way.
    let pending = s
        .aggregate("a", ProbeKind::PING, t0, t0 + 60_000, 3_600_000)
        .unwrap();
    s.flush().unwrap();
    let committed = s
        .aggregate("a", ProbeKind::PING, t0, t0 + 60_000, 3_600_000)
        .unwrap();
    let rounds = |v: &[(i64, Agg)]| v.iter().map(|(_, a)| a.rounds).sum::<u32>();
    assert_eq!(rounds(&pending), 20);
    assert_eq!(rounds(&committed), 20);
}

#[test]
fn dns_and_trace_aggregates_keep_changes_and_hops() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = (now_ms() - 3 * 3_600_000) / 3_600_000 * 3_600_000;
    let to = t0 + 3_600_000;
    let s = open(dir.path());
    for i in 0..360i64 {
        s.append(&dns("d", t0 + i * 10_000, 3000 + i as u64), &labels("x"));
        s.append(&trace("t", t0 + i * 10_000, i as u64), &labels("x"));
    }
    s.flush().unwrap();
    s.flush().unwrap();
    for (target, probe) in [("d", ProbeKind::DNS), ("t", ProbeKind::TRACE)] {
        let want = from_rounds(&s, target, probe, t0, to);
        let got = s.aggregate(target, probe, t0, to, STEP).unwrap();
        assert_eq!(got, want, "{target}");
    }
    let all = s
        .aggregate("t", ProbeKind::TRACE, t0, to, to - t0 + 60_000)
        .unwrap();
    let rounds = s.query("t", ProbeKind::TRACE, t0, to).unwrap();
    let changes = rounds
        .windows(2)
        .filter(|w| {
            w[0].trace.as_ref().unwrap().path_hash != w[1].trace.as_ref().unwrap().path_hash
        })
        .count();
    let merged = all.iter().fold(Agg::default(), |mut m, (_, a)| {
        m.merge(a);
        m
    });
    assert_eq!(merged.marks.changed as usize, changes);
    assert!(!merged.hops.is_empty());
}

/// A store with 20 minutes of one round a second of "a" from the start of the last hour
/// (`t0`, ms), their aggregates written; the hour's end is `to`.
fn twenty_written_minutes(dir: &std::path::Path) -> (Store, i64, i64) {
    let t0 = (now_ms() - 3_600_000) / 3_600_000 * 3_600_000;
    let s = open(dir);
    for i in 0..1200i64 {
        s.append(&ping("a", t0 + i * 1000, 3000), &labels("x"));
    }
    s.flush().unwrap();
    s.flush().unwrap();
    (s, t0, t0 + 3_600_000)
}

/// A round of a minute already written (a clock set back) joins that minute's aggregate.
#[test]
fn a_late_round_joins_its_written_minute() {
    let dir = tempfile::tempdir().unwrap();
    let (s, t0, to) = twenty_written_minutes(dir.path());
    let before = s.aggregate("a", ProbeKind::PING, t0, to, STEP).unwrap();
    assert_eq!(before[0].1.rounds, 600);
    s.append(&ping("a", t0 + 30_500, 90_000), &labels("x"));
    for _ in 0..3 {
        s.flush().unwrap();
        let got = s.aggregate("a", ProbeKind::PING, t0, to, STEP).unwrap();
        assert_eq!(got, from_rounds(&s, "a", ProbeKind::PING, t0, to));
        assert_eq!(got[0].1.rounds, 601);
        assert_eq!(got[0].1.time.max, 90_000);
    }
    drop(s);
    let s = open(dir.path());
    let got = s.aggregate("a", ProbeKind::PING, t0, to, STEP).unwrap();
    assert_eq!(got[0].1.rounds, 601, "counted once after a reopen");
}

/// Charts read while late rounds are committed (the committer runs every 100 ms beside the
/// writer's own flushes): a late round moves from memory into the table with a commit, and a
/// query overlapping that move must count it exactly once, never dropping back or ahead.
#[test]
fn queries_during_late_commits_count_each_round_once() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let (s, t0, to) = twenty_written_minutes(dir.path());
    const LATE: u64 = 150;
    let appended = AtomicU64::new(0);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for i in 0..LATE {
                appended.fetch_add(1, Ordering::SeqCst);
                s.append(&ping("a", t0 + 30_000 + i as i64, 3000), &labels("x"));
                s.flush().unwrap();
            }
        });
        let (mut seen, mut after_the_writer) = (600, 0);
        while appended.load(Ordering::SeqCst) < LATE || seen < 600 + LATE {
            if appended.load(Ordering::SeqCst) == LATE {
                after_the_writer += 1;
                assert!(
                    after_the_writer < 1000,
                    "{seen} rounds, never {}",
                    600 + LATE
                );
            }
            let before = appended.load(Ordering::SeqCst);
            let got = s.aggregate("a", ProbeKind::PING, t0, to, STEP).unwrap()[0]
                .1
                .rounds as u64;
            let after = appended.load(Ordering::SeqCst);
            assert!(got >= seen, "{got} rounds after {seen}: late rounds missed");
            assert!(
                got >= 600 + before.saturating_sub(1),
                "{got}: rounds appended before the query missed"
            );
            assert!(
                got <= 600 + after,
                "{got} rounds, at most {} appended: counted twice",
                600 + after
            );
            seen = got;
        }
    });
    let got = s.aggregate("a", ProbeKind::PING, t0, to, STEP).unwrap();
    assert_eq!(got[0].1.rounds as u64, 600 + LATE);
}
