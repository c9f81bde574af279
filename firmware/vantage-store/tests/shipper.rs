//! The remote_write client against a scripted HTTP server: retries, drops, auth, rate limit.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use prost::Message;
use vantage_store::remote_write::proto::WriteRequest;
use vantage_store::{Endpoint, Shipper, ShipperOptions, Store};

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
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/api/v1/write", l.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    std::thread::spawn(move || {
        let mut script = script.into_iter();
        for conn in l.incoming() {
            let Ok(mut conn) = conn else { continue };
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
                s.lock().unwrap().push(Req {
                    at: Instant::now(),
                    headers,
                    body,
                });
                let status = script.next().unwrap_or(204);
                // A 204 has no body: bytes after it would be read as the start of the next
                // response on the kept-alive connection, failing that request.
                let text = if status == 204 {
                    String::new()
                } else {
                    format!("status {status}")
                };
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\n\r\n{text}",
                    text.len()
                );
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
async fn retries_are_exact_duplicates_and_4xx_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let store = filled_store(dir.path(), 250);
    // 503, 429, network-level success...: the first batch is retried twice; the second batch
    // gets a 400 and is dropped; the third goes through.
    let (url, seen) = server(vec![503, 429, 204, 400, 204]);
    let mut e = Endpoint::new("ep", url);
    e.max_samples_per_send = 100;
    e.min_backoff = Duration::from_millis(100);
    e.max_backoff = Duration::from_millis(400);
    e.bearer_token = Some("tok".into());
    let shipper = Shipper::start(store.clone(), vec![e], ShipperOptions::default()).unwrap();
    let st = shipper.endpoints()[0].clone();
    wait(|| store.backlog(store.cursor("ep")) == 0).await;
    let reqs = seen.lock().unwrap().clone();
    assert_eq!(reqs.len(), 5, "{reqs:?}");
    assert_eq!(reqs[0].body, reqs[1].body, "a retry is an exact duplicate");
    assert_eq!(reqs[1].body, reqs[2].body);
    assert_ne!(reqs[2].body, reqs[3].body);
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
    assert_eq!(st.samples_sent.load(Ordering::Relaxed), 150);
    assert_eq!(st.samples_rejected.load(Ordering::Relaxed), 100);
    assert_eq!(st.failures.load(Ordering::Relaxed), 3);
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
        e.basic_auth = Some(("user".into(), "pw".into()));
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
