//! The remote_write client against a scripted HTTP server: retries, splitting refused
//! requests, auth, rate limit, and `send = "gaps"` beside a scrape log.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use prost::Message;
use vantage_core::config::Secret;
use vantage_store::remote_write::config::Auth;
use vantage_store::remote_write::proto::WriteRequest;
use vantage_store::remote_write::{bisect, build_request};
use vantage_store::{Endpoint, ScrapeLog, SendMode, Shipper, ShipperOptions, Store};

#[derive(Debug, Clone)]
struct Req {
    at: Instant,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Req {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn decode(&self) -> WriteRequest {
        let raw = snap::raw::Decoder::new()
            .decompress_vec(&self.body)
            .unwrap();
        WriteRequest::decode(&raw[..]).unwrap()
    }
}

/// Answers with the scripted statuses in order, then 204 forever.
fn server(script: Vec<u16>) -> (String, Arc<Mutex<Vec<Req>>>) {
    let mut script = script.into_iter();
    server_with(move |_| {
        let status = script.next().unwrap_or(204);
        (status, format!("status {status}"))
    })
}

/// Answers each request with the status and text `answer` decides.
fn server_with(
    mut answer: impl FnMut(&Req) -> (u16, String) + Send + 'static,
) -> (String, Arc<Mutex<Vec<Req>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/api/v1/write", l.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut conn) = conn else { continue };
            let _ = conn.set_nodelay(true);
            let mut r = BufReader::new(conn.try_clone().unwrap());
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let mut headers = Vec::new();
                loop {
                    let mut h = String::new();
                    r.read_line(&mut h).unwrap();
                    let h = h.trim_end();
                    if h.is_empty() {
                        break;
                    }
                    let (k, v) = h.split_once(": ").unwrap();
                    headers.push((k.to_string(), v.to_string()));
                }
                let len: usize = headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .map_or(0, |(_, v)| v.parse().unwrap());
                let mut body = vec![0; len];
                r.read_exact(&mut body).unwrap();
                let req = Req {
                    at: Instant::now(),
                    headers,
                    body,
                };
                let (status, text) = answer(&req);
                s.lock().unwrap().push(req);
                // A 204 has no body: bytes after it would be read as the start of the next
                // response on the kept-alive connection, failing that request.
                let text = if status == 204 { String::new() } else { text };
                // One write, without Nagle: split small writes would each wait for a delayed
                // ACK, 40 ms per request.
                let resp = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\n\r\n{text}",
                    text.len()
                );
                let _ = conn.write_all(resp.as_bytes());
            }
        }
    });
    (url, seen)
}

fn filled_store(dir: &std::path::Path, n: i64) -> Arc<Store> {
    let s = Arc::new(open(dir));
    let t0 = now_ms() - 60_000;
    for i in 0..n {
        s.append(&ping("a", t0 + i, 100 + i as u64), &labels("x"));
    }
    s.flush().unwrap();
    s
}

async fn wait(f: impl Fn() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < Duration::from_secs(30), "timed out");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_are_exact_duplicates_and_a_refused_batch_is_split() {
    let dir = tempfile::tempdir().unwrap();
    let store = filled_store(dir.path(), 250);
    // 503, 429, then success: the first batch is retried twice; the second batch gets a 400
    // and is sent again in halves, which land; the third gets a 401 (the endpoint's setup, not
    // the data), kept and retried.
    let (url, seen) = server(vec![503, 429, 204, 400, 204, 204, 401, 204]);
    let mut e = Endpoint::new("ep", url);
    e.max_samples_per_send = 100;
    e.min_backoff = Duration::from_millis(100);
    e.max_backoff = Duration::from_millis(400);
    e.auth = Auth::Bearer {
        token: Secret("tok".into()),
        token_file: None,
    };
    let shipper = Shipper::start(store.clone(), vec![e], ShipperOptions::default()).unwrap();
    let st = shipper.endpoints()[0].clone();
    wait(|| store.backlog(store.cursor("ep")) == 0).await;
    let reqs = seen.lock().unwrap().clone();
    assert_eq!(reqs.len(), 8, "{reqs:?}");
    assert_eq!(reqs[0].body, reqs[1].body, "a retry is an exact duplicate");
    assert_eq!(reqs[1].body, reqs[2].body);
    assert_ne!(reqs[2].body, reqs[3].body);
    assert_eq!(reqs[6].body, reqs[7].body, "a 401 is retried, not dropped");
    let points = |r: &Req| -> usize { r.decode().timeseries.iter().map(|t| t.samples.len()).sum() };
    assert_eq!(points(&reqs[4]) + points(&reqs[5]), points(&reqs[3]));
    assert!(points(&reqs[4]).abs_diff(points(&reqs[5])) <= 1);
    // Backoff doubles from min_backoff (with ±10 % jitter).
    assert!(reqs[1].at - reqs[0].at >= Duration::from_millis(85));
    assert!(reqs[2].at - reqs[1].at >= Duration::from_millis(170));
    for r in &reqs {
        assert_eq!(r.header("content-encoding"), Some("snappy"));
        assert_eq!(r.header("content-type"), Some("application/x-protobuf"));
        assert_eq!(r.header("x-prometheus-remote-write-version"), Some("0.1.0"));
        assert_eq!(r.header("authorization"), Some("Bearer tok"));
    }
    let first = reqs[0].decode();
    let success = first
        .timeseries
        .iter()
        .find(|t| t.labels.iter().any(|l| l.value == "vantage_probe_success"))
        .unwrap();
    assert_eq!(success.samples.len(), 100);
    assert_eq!(st.samples_sent.load(Ordering::Relaxed), 250);
    assert_eq!(st.samples_rejected.load(Ordering::Relaxed), 0);
    assert_eq!(st.failures.load(Ordering::Relaxed), 4);
    assert_eq!(shipper.uplink_up(), Some(true));
    shipper.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursor_survives_a_restart_and_basic_auth_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let (url, seen) = server(vec![]);
    {
        let store = filled_store(dir.path(), 300);
        let mut e = Endpoint::new("ep", url.clone());
        e.max_samples_per_send = 100;
        e.auth = Auth::Basic {
            username: "user".into(),
            password: Secret("pw".into()),
            password_file: None,
        };
        let shipper = Shipper::start(store.clone(), vec![e], ShipperOptions::default()).unwrap();
        wait(|| store.backlog(store.cursor("ep")) == 0).await;
        shipper.stop().await;
        store.close();
    }
    assert_eq!(seen.lock().unwrap().len(), 3);
    assert_eq!(
        seen.lock().unwrap()[0].header("authorization"),
        Some("Basic dXNlcjpwdw==")
    );
    // Reopened: nothing is sent again, new samples are.
    let store = Arc::new(open(dir.path()));
    store.append(&ping("a", now_ms(), 7), &labels("x"));
    store.flush().unwrap();
    let shipper = Shipper::start(
        store.clone(),
        vec![Endpoint::new("ep", url)],
        ShipperOptions::default(),
    )
    .unwrap();
    wait(|| store.backlog(store.cursor("ep")) == 0).await;
    shipper.stop().await;
    let reqs = seen.lock().unwrap().clone();
    assert_eq!(reqs.len(), 4);
    let last = reqs[3].decode();
    let s = last
        .timeseries
        .iter()
        .find(|t| t.labels.iter().any(|l| l.value == "vantage_probe_success"))
        .unwrap();
    assert_eq!(s.samples.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_is_rate_limited() {
    let dir = tempfile::tempdir().unwrap();
    let store = filled_store(dir.path(), 2000);
    let (url, _seen) = server(vec![]);
    let mut e = Endpoint::new("ep", url);
    e.max_samples_per_send = 100;
    e.max_samples_per_second = 1000;
    let t = Instant::now();
    let shipper = Shipper::start(store.clone(), vec![e], ShipperOptions::default()).unwrap();
    wait(|| store.backlog(store.cursor("ep")) == 0).await;
    let took = t.elapsed();
    shipper.stop().await;
    // 2000 rounds at 1000/s, with a first second of budget: about one second.
    assert!(took >= Duration::from_millis(900), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
}

/// `(series labels, timestamp)` of every sample of a request.
type Point = (Vec<(String, String)>, i64);

fn points_of(req: &WriteRequest) -> Vec<Point> {
    let mut v = Vec::new();
    for t in &req.timeseries {
        let labels: Vec<_> = t
            .labels
            .iter()
            .map(|l| (l.name.clone(), l.value.clone()))
            .collect();
        for s in &t.samples {
            v.push((labels.clone(), s.timestamp));
        }
    }
    v
}

fn is_loss_at(p: &Point, marked: &[i64]) -> bool {
    marked.contains(&p.1)
        && p.0
            .iter()
            .any(|(k, v)| k == "__name__" && v == "vantage_ping_loss_ratio")
}

/// A receiver that, like Prometheus, refuses a whole request for one bad sample: the
/// loss-ratio samples of three marked rounds. Every other sample lands, exactly once; the
/// three are counted; the cost stays within 1 + 2·⌈log2 N⌉ requests per bad sample.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_request_is_split_until_only_the_bad_samples_are_left() {
    let dir = tempfile::tempdir().unwrap();
    let store = filled_store(dir.path(), 300);
    let rounds = store.read_from(store.cursor("ep"), 1000).unwrap().samples;
    let marked: Vec<i64> = [17, 150, 299]
        .iter()
        .map(|&i| rounds[i].timestamp_ms)
        .collect();
    let m = marked.clone();
    let (url, seen) = server_with(move |r| {
        if points_of(&r.decode()).iter().any(|p| is_loss_at(p, &m)) {
            (400, "out of order sample".into())
        } else {
            (204, String::new())
        }
    });
    let mut e = Endpoint::new("ep", url);
    e.max_samples_per_send = 100;
    e.labels = vantage_store::Labels::from([("instance".into(), "pi".into())]);
    let shipper = Shipper::start(store.clone(), vec![e], ShipperOptions::default()).unwrap();
    let st = shipper.endpoints()[0].clone();
    wait(|| store.backlog(store.cursor("ep")) == 0).await;
    shipper.stop().await;

    let reqs = seen.lock().unwrap().clone();
    let mut accepted: Vec<Point> = Vec::new();
    for r in &reqs {
        let pts = points_of(&r.decode());
        if !pts.iter().any(|p| is_loss_at(p, &marked)) {
            accepted.extend(pts);
        }
    }
    // Every sample of the stored rounds, but the three.
    let ext = vantage_store::Labels::from([("instance".into(), "pi".into())]);
    let whole = build_request(&rounds, &|id| store.series(id), &ext);
    let mut want: Vec<Point> = points_of(&whole)
        .into_iter()
        .filter(|p| !is_loss_at(p, &marked))
        .collect();
    want.sort();
    let n_accepted = accepted.len();
    accepted.sort();
    accepted.dedup();
    assert_eq!(
        accepted.len(),
        n_accepted,
        "no sample is sent twice once accepted"
    );
    assert_eq!(accepted, want, "every good sample lands");
    assert!(want.len() > 2500, "{}", want.len());
    assert_eq!(st.samples_rejected.load(Ordering::Relaxed), 3);
    assert_eq!(st.points_sent.load(Ordering::Relaxed), want.len() as u64);
    assert!(st.bytes_sent.load(Ordering::Relaxed) > 0);
    assert_eq!(st.samples_sent.load(Ordering::Relaxed), 300);
    // Three batches of ~950 samples, one bad sample each: at most 1 + 2·10 requests each.
    assert!(reqs.len() <= 3 * (1 + 2 * 10), "{} requests", reqs.len());
    let why = st.last_rejection.lock().unwrap().clone().unwrap();
    assert!(why.contains("out of order sample"), "{why}");
    assert!(why.contains("vantage_ping_loss_ratio{"), "{why}");
    assert!(why.contains(&format!("@{}", marked[2])), "{why}");
}

/// A receiver refusing everything: every sample is counted as refused, and the split budget
/// bounds the requests. (Prometheus 2.42 answers a sample beyond its out-of-order window with
/// `500 too old sample`: a refusal of the data, not a server fault to retry forever.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_refusing_everything_costs_a_bounded_number_of_requests() {
    let dir = tempfile::tempdir().unwrap();
    let store = filled_store(dir.path(), 300);
    let (url, seen) = server_with(|_| (500, "too old sample".into()));
    let mut e = Endpoint::new("ep", url);
    e.max_samples_per_send = 300;
    let shipper = Shipper::start(store.clone(), vec![e], ShipperOptions::default()).unwrap();
    let st = shipper.endpoints()[0].clone();
    wait(|| store.backlog(store.cursor("ep")) == 0).await;
    shipper.stop().await;
    let reqs = seen.lock().unwrap().clone();
    let total = points_of(&reqs[0].decode()).len();
    assert_eq!(st.samples_rejected.load(Ordering::Relaxed), total as u64);
    assert_eq!(st.points_sent.load(Ordering::Relaxed), 0);
    assert_eq!(st.bytes_sent.load(Ordering::Relaxed), 0);
    assert!(
        reqs.len() <= 1 + 2 * bisect::max_splits(total),
        "{}",
        reqs.len()
    );
    assert_eq!(reqs.len(), 1 + 2 * bisect::max_splits(total));
}

fn success_timestamps(reqs: &[Req]) -> Vec<i64> {
    let mut v: Vec<i64> = reqs
        .iter()
        .flat_map(|r| {
            r.decode()
                .timeseries
                .into_iter()
                .filter(|t| t.labels.iter().any(|l| l.value == "vantage_probe_success"))
                .flat_map(|t| t.samples.into_iter().map(|s| s.timestamp))
        })
        .collect();
    v.sort();
    v
}

/// `send = "gaps"`: rounds between scrapes are skipped, rounds before the first known scrape
/// and in a gap are shipped, a round after the latest scrape waits for the next one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gaps_mode_ships_only_what_no_scrape_covered() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path()));
    let s = 1000;
    let t0 = now_ms() - 3000 * s;
    // A round every 10 s from t0 to t0 + 1000 s.
    let rounds: Vec<i64> = (0..=100).map(|i| t0 + i * 10 * s).collect();
    for (i, &t) in rounds.iter().enumerate() {
        store.append(&ping("a", t, 100 + i as u64), &labels("x"));
    }
    store.flush().unwrap();
    // Scraped every 15 s from t0 + 200 s to t0 + 600 s; none since (an outage).
    let log = Arc::new(ScrapeLog::new());
    let gap = Duration::from_secs(600);
    log.track(gap);
    for t in (200..=600).step_by(15) {
        log.record(t0 + t * s);
    }
    let last_scrape = t0 + 590 * s;
    let (url, seen) = server(vec![]);
    let mut e = Endpoint::new("ep", url);
    e.send = SendMode::Gaps;
    e.scrape_gap = gap;
    let opts = ShipperOptions {
        poll_interval: Duration::from_millis(50),
        scrapes: log.clone(),
        ..ShipperOptions::default()
    };
    let shipper = Shipper::start(store.clone(), vec![e], opts).unwrap();
    let st = shipper.endpoints()[0].clone();
    wait(|| store.backlog(store.cursor("ep")) == 0).await;
    let want: Vec<i64> = rounds
        .iter()
        .copied()
        .filter(|&t| t < t0 + 200 * s || t > last_scrape)
        .collect();
    assert_eq!(success_timestamps(&seen.lock().unwrap()), want);
    assert_eq!(
        st.samples_skipped.load(Ordering::Relaxed),
        101 - want.len() as u64
    );
    assert_eq!(st.samples_sent.load(Ordering::Relaxed), want.len() as u64);

    // Scrapes resume; a round after the latest waits (the next is due within the gap)...
    let now = now_ms();
    log.record(now);
    store.append(&ping("a", now + 1, 7), &labels("x"));
    store.flush().unwrap();
    let sent_before = seen.lock().unwrap().len();
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(store.backlog(store.cursor("ep")), 1);
    }
    // ...and the next scrape covers it: skipped, never sent.
    log.record(now + 2);
    wait(|| store.backlog(store.cursor("ep")) == 0).await;
    assert_eq!(seen.lock().unwrap().len(), sent_before);
    assert_eq!(
        st.samples_skipped.load(Ordering::Relaxed),
        102 - want.len() as u64
    );
    shipper.stop().await;
}

/// A receiver already holding a value at a round's exact millisecond (its own scrape, or a
/// failed scrape's staleness marker) refuses that sample as a duplicate. For a gaps endpoint
/// that is a collision with the scrape, counted apart; for a push endpoint it is a refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_on_a_scrape_timestamp_is_a_collision_only_beside_a_scrape() {
    for mode in [SendMode::Gaps, SendMode::All] {
        let dir = tempfile::tempdir().unwrap();
        let store = filled_store(dir.path(), 40);
        let rounds = store.read_from(store.cursor("ep"), 1000).unwrap().samples;
        let marked = [rounds[21].timestamp_ms];
        let (url, _seen) = server_with(move |r| {
            if points_of(&r.decode())
                .iter()
                .any(|p| is_loss_at(p, &marked))
            {
                (400, "duplicate sample for timestamp".into())
            } else {
                (204, String::new())
            }
        });
        let mut e = Endpoint::new("ep", url);
        e.send = mode;
        let shipper = Shipper::start(store.clone(), vec![e], ShipperOptions::default()).unwrap();
        let st = shipper.endpoints()[0].clone();
        wait(|| store.backlog(store.cursor("ep")) == 0).await;
        shipper.stop().await;
        let (collided, rejected) = (
            st.samples_collided.load(Ordering::Relaxed),
            st.samples_rejected.load(Ordering::Relaxed),
        );
        match mode {
            SendMode::Gaps => assert_eq!((collided, rejected), (1, 0), "{mode:?}"),
            _ => assert_eq!((collided, rejected), (0, 1), "{mode:?}"),
        }
        assert_eq!(st.samples_sent.load(Ordering::Relaxed), 40, "{mode:?}");
    }
}

/// After a restart the scrape log is empty: a gaps endpoint ships every round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gaps_mode_after_a_restart_ships_everything() {
    let dir = tempfile::tempdir().unwrap();
    let store = filled_store(dir.path(), 50);
    let (url, seen) = server(vec![]);
    let mut e = Endpoint::new("ep", url);
    e.send = SendMode::Gaps;
    let shipper = Shipper::start(store.clone(), vec![e], ShipperOptions::default()).unwrap();
    wait(|| store.backlog(store.cursor("ep")) == 0).await;
    shipper.stop().await;
    assert_eq!(success_timestamps(&seen.lock().unwrap()).len(), 50);
}

/// A fixed snapshot of "the daemon's own series".
#[derive(Debug)]
struct Health;

impl vantage_store::remote_write::LiveSeries for Health {
    fn snapshot(&self) -> Vec<vantage_store::remote_write::LiveSample> {
        vec![(
            vec![("__name__".into(), "vantage_store_healthy".into())],
            1.0,
        )]
    }
}

fn carries(r: &Req, name: &str) -> bool {
    r.decode().timeseries.iter().any(|t| {
        t.labels
            .iter()
            .any(|l| l.name == "__name__" && l.value == name)
    })
}

/// Push-only endpoints also get the daemon's own series as they stand, with the endpoint's
/// labels; endpoints beside a scrape (`send = "gaps"`) do not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_only_endpoints_get_the_daemons_own_series() {
    let dir = tempfile::tempdir().unwrap();
    let store = filled_store(dir.path(), 5);
    let (all_url, all_seen) = server(vec![]);
    let (gaps_url, gaps_seen) = server(vec![]);
    let mut all = Endpoint::new("all", all_url);
    all.labels = [("instance".to_string(), "dev1".to_string())].into();
    let mut gaps = Endpoint::new("gaps", gaps_url);
    gaps.send = SendMode::Gaps;
    let opts = ShipperOptions {
        live: Some(Arc::new(Health)),
        live_interval: Duration::from_millis(50),
        ..ShipperOptions::default()
    };
    let shipper = Shipper::start(store.clone(), vec![all, gaps], opts).unwrap();
    let live = |seen: &Arc<Mutex<Vec<Req>>>| {
        seen.lock()
            .unwrap()
            .iter()
            .filter(|r| carries(r, "vantage_store_healthy"))
            .count()
    };
    wait(|| live(&all_seen) >= 2).await;
    // The stored rounds went to both as usual (gaps: nothing scraped, so all of them).
    wait(|| store.backlog(store.cursor("gaps")) == 0 && store.backlog(store.cursor("all")) == 0)
        .await;
    shipper.stop().await;
    assert_eq!(live(&gaps_seen), 0);
    let reqs = all_seen.lock().unwrap();
    let r = reqs
        .iter()
        .find(|r| carries(r, "vantage_store_healthy"))
        .unwrap();
    let t = &r.decode().timeseries[0];
    assert!(
        t.labels
            .iter()
            .any(|l| l.name == "instance" && l.value == "dev1"),
        "{t:?}"
    );
    assert_eq!(t.samples.len(), 1);
}
