//! "Run now": `POST /api/targets/{name}/run` streams a ping burst or traces as server-sent
//! events. The runs go to 127.0.0.1 only.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Method, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

use super::Fixture;
use crate::state::ON_DEMAND_ROUNDS;
use vantage_core::live::{RUN_PINGS, RUN_TRACES};

/// Two ping targets (the second slow: a run of it takes 95 s, its next event comes 5 s after
/// the first) and a trace target.
const RUN_CONFIG: &str = r#"
[defaults]
interval = "1h"

[[targets]]
name = "loop"
host = "127.0.0.1"
probes = ["ping"]
ping = { spacing = "200ms" }

[[targets]]
name = "slow"
host = "127.0.0.1"
probes = ["ping"]
ping = { spacing = "5s" }

[[targets]]
name = "path"
host = "127.0.0.1"
probes = ["trace"]
trace = { max_hops = 4, timeout = "1s" }
"#;

/// Whether this machine can open ICMP sockets (root, or `ping_group_range`); skips with a
/// reason otherwise, unless `VANTAGE_REQUIRE_ROOT_TESTS=1` makes that a failure.
fn icmp_or_skip(test: &str) -> bool {
    if vantage_core::net::KernelSockets::default().can_open() {
        return true;
    }
    let why = "needs ICMP sockets (root, or net.ipv4.ping_group_range covering this group)";
    if std::env::var(vantage_testkit::REQUIRE_ROOT_ENV).as_deref() == Ok("1") {
        panic!("{test}: {why}");
    }
    eprintln!("SKIPPED {test}: {why}");
    false
}

/// The server-sent events of a response body, read as they arrive.
struct Events {
    body: Body,
    buf: String,
}

impl Events {
    /// The next event's JSON data (keep-alive comments skipped); `None` at the stream's end.
    async fn next(&mut self) -> Option<Value> {
        loop {
            if let Some(i) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..i + 2).collect();
                let data: String = block
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(str::trim_start)
                    .collect();
                if data.is_empty() {
                    continue;
                }
                return Some(serde_json::from_str(&data).expect("event data is JSON"));
            }
            let frame = self.body.frame().await?.expect("body frame");
            if let Ok(d) = frame.into_data() {
                self.buf.push_str(std::str::from_utf8(&d).expect("UTF-8"));
            }
        }
    }
}

impl Fixture {
    /// Starts a run; its status and, for a 200, its events.
    async fn run(&self, target: &str, kind: &str, session: bool) -> (StatusCode, Events) {
        let path = format!("/api/targets/{target}/run?kind={kind}");
        let req = self
            .builder(Method::POST, &path, session, session)
            .body(Body::empty())
            .unwrap();
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        if status == StatusCode::OK {
            assert_eq!(resp.headers()[header::CONTENT_TYPE], "text/event-stream");
        }
        let events = Events {
            body: resp.into_body(),
            buf: String::new(),
        };
        (status, events)
    }

    fn free_permits(&self) -> usize {
        self.web.state.probe_permits.available_permits()
    }
}

async fn error_of(status: StatusCode, mut e: Events) -> (StatusCode, String) {
    let mut text = String::new();
    while let Some(Ok(f)) = e.body.frame().await {
        if let Ok(d) = f.into_data() {
            text.push_str(&String::from_utf8_lossy(&d));
        }
    }
    let v: Value = serde_json::from_str(&text).unwrap_or_default();
    let msg = v["error"].as_str().unwrap_or(&text).to_string();
    let fields = v["errors"].to_string();
    (status, format!("{msg} {fields}"))
}

/// A run's events after `start`, up to its summary, each checked against the generic shape
/// the page renders any kind from: rows keyed and as wide as the start's table, statuses
/// and the summary in words; the stream ends after the summary.
async fn rest_of_run(start: &Value, ev: &mut Events) -> (Vec<Value>, Value) {
    assert_eq!(start["type"], "start", "{start}");
    assert!(start["text"].is_string(), "{start}");
    let table = &start["table"];
    assert!(
        ["table", "list"].contains(&table["layout"].as_str().unwrap()),
        "{start}"
    );
    assert!(table["key"].is_string(), "{start}");
    let columns = table["columns"].as_array().expect("columns");
    for c in columns {
        assert!(c["label"].is_string(), "{c}");
        assert!(
            ["count", "ms", "ratio"].contains(&c["unit"].as_str().unwrap()),
            "{c}"
        );
    }
    let mut rows = Vec::new();
    let summary = loop {
        let e = ev.next().await.expect("a summary ends the stream");
        match e["type"].as_str() {
            Some("row") => {
                assert!(e["key"].is_u64(), "{e}");
                assert_eq!(e["cells"].as_array().unwrap().len(), columns.len(), "{e}");
                assert!(e["lost"].is_boolean() && e["hidden"].is_boolean(), "{e}");
                rows.push(e);
            }
            Some("status") => assert!(e["text"].is_string(), "{e}"),
            Some("summary") => break e,
            other => panic!("{other:?}: {e}"),
        }
    };
    assert!(summary["text"].is_string(), "{summary}");
    assert!(ev.next().await.is_none(), "the summary is the last event");
    (rows, summary)
}

#[tokio::test]
async fn run_now_refuses_what_it_cannot_run() {
    let f = Fixture::logged_in(Some(RUN_CONFIG)).await;
    let (s, e) = f.run("loop", "ping", false).await;
    assert_eq!(error_of(s, e).await.0, StatusCode::UNAUTHORIZED);
    let (s, e) = f.run("nosuch", "ping", true).await;
    let (s, m) = error_of(s, e).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{m}");
    assert!(m.contains("no target named \"nosuch\""), "{m}");
    let (s, e) = f.run("loop", "trace", true).await;
    let (s, m) = error_of(s, e).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{m}");
    assert!(m.contains("has no trace probe"), "{m}");
    for kind in ["dns", "nonsense", ""] {
        let (s, e) = f.run("loop", kind, true).await;
        let (s, m) = error_of(s, e).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{kind}: {m}");
        assert!(m.contains("only ping and trace runs stream"), "{kind}: {m}");
    }
    // The kinds that stream are those whose modules run live.
    let req = f
        .builder(Method::POST, "/api/targets/loop/run", true, true)
        .body(Body::empty())
        .unwrap();
    let resp = f.app.clone().oneshot(req).await.unwrap();
    let events = Events {
        body: resp.into_body(),
        buf: String::new(),
    };
    let (s, m) = error_of(StatusCode::BAD_REQUEST, events).await;
    assert!(m.contains("kind is missing: ping or trace"), "{s}: {m}");
    // Every on-demand round taken (by `/probe` requests, say): 429, nothing started.
    let held = f
        .web
        .state
        .probe_permits
        .try_acquire_many(ON_DEMAND_ROUNDS as u32)
        .unwrap();
    let (s, e) = f.run("loop", "ping", true).await;
    let (s, m) = error_of(s, e).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{m}");
    assert!(m.contains("too many probes running on demand"), "{m}");
    assert!(f.web.runs.is_empty(), "a refused run holds no target");
    drop(held);
}

#[tokio::test]
async fn a_ping_run_streams_each_reply_as_it_arrives() {
    if !icmp_or_skip("a_ping_run_streams_each_reply_as_it_arrives") {
        return;
    }
    let f = Fixture::logged_in(Some(RUN_CONFIG)).await;
    let (status, mut ev) = f.run("loop", "ping", true).await;
    assert_eq!(status, StatusCode::OK);
    let start = ev.next().await.unwrap();
    assert_eq!(start["type"], "start");
    assert_eq!(start["count"], RUN_PINGS);
    assert_eq!(
        (&start["table"]["layout"], &start["table"]["key"]),
        (&"list".into(), &"seq".into())
    );
    let first = ev.next().await.unwrap();
    assert_eq!((&first["type"], &first["key"]), (&"row".into(), &1.into()));
    // The first reply is here while the run still goes (20 requests 200 ms apart): it holds
    // an on-demand round and its target.
    assert_eq!(f.free_permits(), ON_DEMAND_ROUNDS - 1);
    let (s, e) = f.run("loop", "ping", true).await;
    let (s, m) = error_of(s, e).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{m}");
    assert!(m.contains("already going"), "{m}");
    let (mut echoes, summary) = rest_of_run(&start, &mut ev).await;
    echoes.insert(0, first);
    let seqs: Vec<u64> = echoes.iter().map(|e| e["key"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=u64::from(RUN_PINGS)).collect::<Vec<_>>());
    let replies = echoes.iter().filter(|e| e["cells"][1].is_number()).count();
    let lost = echoes.iter().filter(|e| e["lost"] == true).count();
    assert_eq!(replies + lost, echoes.len());
    assert_eq!(summary["sent"], RUN_PINGS, "{summary}");
    assert_eq!(summary["received"], replies, "{summary}");
    let text = summary["text"].as_str().unwrap();
    assert!(
        text.starts_with(&format!("{RUN_PINGS} sent, {replies} received, ")),
        "{text}"
    );
    // Loopback answers.
    assert!(replies > 0, "{summary}");
    assert_eq!(summary["address"], "127.0.0.1");
    // Done: the round and the target are free again.
    assert_eq!(f.free_permits(), ON_DEMAND_ROUNDS);
    assert!(f.web.runs.is_empty());
}

#[tokio::test]
async fn a_run_stops_when_the_client_goes_away() {
    if !icmp_or_skip("a_run_stops_when_the_client_goes_away") {
        return;
    }
    let f = Fixture::logged_in(Some(RUN_CONFIG)).await;
    let (status, mut ev) = f.run("slow", "ping", true).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ev.next().await.unwrap()["type"], "start");
    assert_eq!(ev.next().await.unwrap()["key"], 1);
    drop(ev);
    // Stopped at once, not when its next event (5 s on) finds nobody to take it.
    let gone = Instant::now();
    while !(f.web.runs.is_empty() && f.free_permits() == ON_DEMAND_ROUNDS) {
        assert!(gone.elapsed() < Duration::from_secs(3), "the run went on");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_trace_run_streams_a_row_per_hop() {
    if !icmp_or_skip("a_trace_run_streams_a_row_per_hop") {
        return;
    }
    let f = Fixture::logged_in(Some(RUN_CONFIG)).await;
    let (status, mut ev) = f.run("path", "trace", true).await;
    assert_eq!(status, StatusCode::OK);
    let start = ev.next().await.unwrap();
    assert_eq!(
        (&start["table"]["layout"], &start["table"]["key"]),
        (&"table".into(), &"hop".into())
    );
    let (rows, summary) = rest_of_run(&start, &mut ev).await;
    assert_eq!(summary["cycles"], RUN_TRACES);
    assert_eq!(summary["reached"], true, "{summary}");
    assert_eq!(summary["hop_count"], 1, "{summary}");
    assert_eq!(
        summary["text"], "5 traces, destination reached in 1 hop",
        "{summary}"
    );
    // Loopback is one hop away: the destination itself answers at TTL 1 (and at the TTLs
    // beyond, whose rows hide), one address, no balancing to tell.
    let last = |ttl: u64| rows.iter().rfind(|r| r["key"] == ttl);
    let one = last(1).expect("hop 1's row");
    assert_eq!(one["cells"][1], "127.0.0.1", "{one}");
    assert_eq!(one["hidden"], false, "{one}");
    let sent = one["cells"][3].as_u64().unwrap();
    assert!(
        sent >= u64::from(RUN_TRACES),
        "probes of every trace: {one}"
    );
    assert!(one["cells"][2].as_f64().unwrap() < 1.0, "{one}");
    for ttl in 2..=4 {
        if let Some(r) = last(ttl) {
            assert_eq!(r["hidden"], true, "{r}");
        }
    }
}

#[tokio::test]
async fn a_run_stops_at_its_time_limit() {
    if !icmp_or_skip("a_run_stops_at_its_time_limit") {
        return;
    }
    let f = Fixture::logged_in(Some(RUN_CONFIG)).await;
    // The 95 s run of "slow", limited to 2 s: two replies, then the limit's summary.
    f.web.runs.set_limit(Duration::from_secs(2));
    let (status, mut ev) = f.run("slow", "ping", true).await;
    assert_eq!(status, StatusCode::OK);
    let mut last = Value::Null;
    let mut echoes = 0;
    while let Some(e) = ev.next().await {
        echoes += usize::from(e["type"] == "row");
        last = e;
    }
    assert_eq!(last["type"], "summary", "{last}");
    assert_eq!(last["stopped"], true, "{last}");
    assert_eq!(last["error"], "stopped at the 2 s limit", "{last}");
    assert_eq!(last["text"], last["error"], "{last}");
    assert!((1..=2).contains(&echoes), "{echoes}");
    assert!(f.web.runs.is_empty());
    assert_eq!(f.free_permits(), ON_DEMAND_ROUNDS);
}
