//! Round details: a trace's hop addresses kept once per path (written when the path changes,
//! not per round), a DNS target's latest answer, both across a reopen; old ones go with the
//! rounds, each series' newest stays.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use vantage_core::{Measurement, ProbeKind, Sample};
use vantage_store::{Store, StoreOptions, StoredDetail};

/// A trace over `path` (one address per hop, "" for a silent hop) with its path hash.
fn traced(target: &str, ms: i64, hash: u32, path: &[&str]) -> Sample {
    let mut s = trace(target, ms, 7);
    let Measurement::Module(m) = &s.measurement else {
        unreachable!()
    };
    let mut r = m.get::<vantage_core::TraceReport>().unwrap().clone();
    r.path_hash = hash;
    r.hops = path
        .iter()
        .enumerate()
        .map(|(i, a)| vantage_core::HopReport {
            ttl: i as u8 + 1,
            sent: 2,
            received: u32::from(!a.is_empty()),
            responders: (!a.is_empty())
                .then(|| vantage_core::HopResponder {
                    address: a.parse().unwrap(),
                    replies: 1,
                    flows: vec![0],
                    unreachable: None,
                })
                .into_iter()
                .collect(),
            ..Default::default()
        })
        .collect();
    s.measurement = Measurement::from(r);
    s
}

fn hops(d: &StoredDetail) -> serde_json::Value {
    ProbeKind::TRACE
        .module()
        .unwrap()
        .detail_json(&d.bytes)
        .unwrap()["hops"]
        .clone()
}

const A: &[&str] = &["192.0.2.1", "", "198.51.100.9"];
const B: &[&str] = &["192.0.2.1", "203.0.113.5", "198.51.100.9"];

#[test]
fn a_path_is_stored_once_when_it_changes_and_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = (now_ms() - 3_600_000) / 60_000 * 60_000;
    {
        let s = open(dir.path());
        // 100 rounds on A, 100 on B, 100 on A again, ten seconds apart.
        for (run, (hash, path)) in [(1, A), (2, B), (1, A)].into_iter().enumerate() {
            for i in 0..100i64 {
                let ms = t0 + (run as i64 * 100 + i) * 10_000;
                s.append(&traced("t", ms, hash, path), &labels("x"));
            }
            s.flush().unwrap();
        }
        let d = s.details("t", ProbeKind::TRACE).unwrap();
        // Each path once, with the time it last became current: the first round of its run
        // (a write per round would have moved it to the run's last round).
        let keys: Vec<(u32, i64)> = d.iter().map(|d| (d.key, d.timestamp_ms)).collect();
        assert_eq!(keys, [(2, t0 + 100 * 10_000), (1, t0 + 200 * 10_000)]);
        assert_eq!(
            hops(&d[1]),
            json!([
                {"hop": 1, "addresses": ["192.0.2.1"]},
                {"hop": 2, "addresses": []},
                {"hop": 3, "addresses": ["198.51.100.9"]},
            ])
        );
        assert_eq!(
            hops(&d[0])[1],
            json!({"hop": 2, "addresses": ["203.0.113.5"]})
        );
        assert!(s.details("t", ProbeKind::PING).unwrap().is_empty());
        assert!(s.details("nope", ProbeKind::TRACE).unwrap().is_empty());
    }
    let s = open(dir.path());
    let d = s.details("t", ProbeKind::TRACE).unwrap();
    assert_eq!(d.len(), 2, "{d:?}");
    assert_eq!(hops(&d[0])[1]["addresses"], json!(["203.0.113.5"]));
    // The first round after a start is written again (before its commit too): its time renewed.
    let later = t0 + 300 * 10_000;
    s.append(&traced("t", later, 1, A), &labels("x"));
    let d = s.details("t", ProbeKind::TRACE).unwrap();
    assert_eq!((d[1].key, d[1].timestamp_ms), (1, later));
    s.flush().unwrap();
    assert_eq!(s.details("t", ProbeKind::TRACE).unwrap(), d);
}

/// A DNS target keeps its latest answer: TTLs counting down are no change, new records are.
#[test]
fn a_dns_answer_is_kept_when_it_changes_and_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = (now_ms() - 3_600_000) / 60_000 * 60_000;
    let answer = |ms: i64, ttl: u32, data: &str| {
        let mut s = dns("d", ms, 3000);
        let Measurement::Module(m) = &s.measurement else {
            unreachable!()
        };
        let mut r = m.get::<vantage_core::DnsReport>().unwrap().clone();
        r.answers[0].ttl = ttl;
        r.answers[0].data = data.into();
        s.measurement = Measurement::from(r);
        s
    };
    let module = ProbeKind::DNS.module().unwrap();
    {
        let s = open(dir.path());
        for i in 0..50i64 {
            s.append(
                &answer(t0 + i * 1000, 300 - i as u32, "192.0.2.1"),
                &labels("x"),
            );
        }
        s.flush().unwrap();
        let d = s.details("d", ProbeKind::DNS).unwrap();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].timestamp_ms, t0, "the first round of the answer");
        for i in 50..60i64 {
            s.append(&answer(t0 + i * 1000, 60, "192.0.2.7"), &labels("x"));
        }
        s.flush().unwrap();
    }
    let s = open(dir.path());
    let d = s.details("d", ProbeKind::DNS).unwrap();
    assert_eq!(d.len(), 1, "one key: the latest answer only");
    assert_eq!(d[0].timestamp_ms, t0 + 50_000);
    let v = module.detail_json(&d[0].bytes).unwrap();
    assert_eq!(v["rcode"], "NOERROR");
    assert_eq!(v["answers"][0]["data"], "192.0.2.7");
    assert_eq!(v["answers"][0]["ttl"], 60);
}

/// A DNS round of `target` at `ms` answering `data`.
fn answered(ms: i64, data: &str) -> Sample {
    let mut s = dns("d", ms, 3000);
    let Measurement::Module(m) = &s.measurement else {
        unreachable!()
    };
    let mut r = m.get::<vantage_core::DnsReport>().unwrap().clone();
    r.answers[0].data = data.into();
    s.measurement = Measurement::from(r);
    s
}

/// The stored DNS answers of "d": (round time, first record's data).
fn answers(s: &Store) -> Vec<(i64, String)> {
    let module = ProbeKind::DNS.module().unwrap();
    s.details("d", ProbeKind::DNS)
        .unwrap()
        .iter()
        .map(|d| {
            let v = module.detail_json(&d.bytes).unwrap();
            (
                d.timestamp_ms,
                v["answers"][0]["data"].as_str().unwrap().into(),
            )
        })
        .collect()
}

/// A round given to the store after a newer one (late, or run on demand) does not replace the
/// newer round's answer, queued or written; the next round is compared with the newest one.
#[test]
fn a_late_round_does_not_replace_a_newer_answer() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = (now_ms() - 3_600_000) / 60_000 * 60_000;
    let (x, y) = ("192.0.2.1", "192.0.2.2");
    {
        let s = open(dir.path());
        s.append(&answered(t0 + 20_000, y), &labels("x"));
        s.append(&answered(t0 + 10_000, x), &labels("x"));
        assert_eq!(answers(&s), [(t0 + 20_000, y.into())], "queued");
        s.flush().unwrap();
        assert_eq!(answers(&s), [(t0 + 20_000, y.into())], "written");
        s.append(&answered(t0 + 15_000, x), &labels("x"));
        s.flush().unwrap();
        assert_eq!(
            answers(&s),
            [(t0 + 20_000, y.into())],
            "late after the write"
        );
        // x again: a change from the newest (y), though the last given was x.
        s.append(&answered(t0 + 30_000, x), &labels("x"));
        s.flush().unwrap();
        assert_eq!(answers(&s), [(t0 + 30_000, x.into())], "the next round");
    }
    // After a start the store knows no newest until a round comes: a late first round is
    // not written over the stored one, and the next round is compared with the stored one.
    let s = open(dir.path());
    s.append(&answered(t0 + 25_000, y), &labels("x"));
    s.flush().unwrap();
    assert_eq!(answers(&s), [(t0 + 30_000, x.into())], "late after a start");
    s.append(&answered(t0 + 40_000, y), &labels("x"));
    s.flush().unwrap();
    assert_eq!(
        answers(&s),
        [(t0 + 40_000, y.into())],
        "a change from the stored"
    );
}

/// Details of rounds no longer stored are deleted with the aggregates; a series' newest is
/// kept however old (its path may be current for months).
#[test]
fn old_details_go_with_their_rounds_but_each_series_keeps_its_newest() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_ms();
    let s = Store::open(StoreOptions {
        max_age: Duration::from_secs(2 * 3600),
        ..opts(dir.path())
    })
    .unwrap();
    // Five hours ago: t on A then B, u on A. Now: t on a third path.
    let old = now - 5 * 3_600_000;
    s.append(&traced("t", old, 1, A), &labels("x"));
    s.append(&traced("t", old + 60_000, 2, B), &labels("x"));
    s.append(&traced("u", old, 1, A), &labels("x"));
    s.flush().unwrap();
    s.append(&traced("t", now, 3, &["192.0.2.1"]), &labels("x"));
    s.flush().unwrap();
    assert_eq!(s.details("t", ProbeKind::TRACE).unwrap().len(), 3);
    // The committer drops the old block and then the details, within a few commits.
    let end = Instant::now() + Duration::from_secs(30);
    while s.details("t", ProbeKind::TRACE).unwrap().len() > 1 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    let t: Vec<u32> = s
        .details("t", ProbeKind::TRACE)
        .unwrap()
        .iter()
        .map(|d| d.key)
        .collect();
    assert_eq!(t, [3]);
    let u = s.details("u", ProbeKind::TRACE).unwrap();
    assert_eq!((u.len(), u[0].key), (1, 1), "u's only path stays");
    drop(s);
    let s = open(dir.path());
    assert_eq!(s.details("t", ProbeKind::TRACE).unwrap().len(), 1);
}
