//! The router in-process: every route, good and hostile input.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

use super::router;
use crate::config_source::ConfigSource;
use crate::state::AppState;

/// A target on loopback whose first round is hours away, so its series are only the initial ones.
const IDLE: &str = r#"
[[targets]]
name = "idle"
host = "127.0.0.1"
probes = ["ping"]
interval = "24h"
labels = { site = "lab" }
"#;

use vantage_testkit::TempDir;

/// [`IDLE`] with `/probe` open to the unprivileged ports the tests' servers bind.
fn idle_with_high_ports() -> String {
    format!(
        "{IDLE}\n[probe_endpoint]\nports = {{ tcp = [\"1024-65535\"], http = [80, \"1024-65535\"], \
         dns = [\"1024-65535\"] }}\n"
    )
}

fn state_with(text: &str, dir: &TempDir) -> Arc<AppState> {
    let path = dir.path().join("vantage.toml");
    std::fs::write(&path, text).unwrap();
    crate::apply::state_of(ConfigSource::File(path))
}

async fn call(d: &Arc<AppState>, req: Request<Body>) -> (StatusCode, String, Option<String>) {
    let resp = router(d.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    let ctype = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned(), ctype)
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

fn value(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A Prometheus scrape (it sends its scrape timeout) is noted for `send = "gaps"` endpoints;
/// another client's GET is not.
#[tokio::test]
async fn a_prometheus_scrape_of_metrics_is_noted() {
    let dir = TempDir::new("scrape");
    let text = format!(
        "{IDLE}\n[[remote_write]]\nname = \"central\"\nurl = \"http://127.0.0.1:9/w\"\nsend = \"gaps\"\nscrape_gap = \"30s\"\n"
    );
    let path = dir.path().join("vantage.toml");
    std::fs::write(&path, &text).unwrap();
    let source = ConfigSource::File(path);
    let config = source.load().unwrap();
    let storage = crate::storage::Storage::start(&dir.path().join("data"), &config);
    let wiring = crate::apply::Wiring {
        storage: Some(storage.clone()),
        ..Default::default()
    };
    let d = crate::apply::build(source, config, wiring).state;
    let gap = std::time::Duration::from_secs(30);
    let (status, _, _) = call(&d, get("/metrics")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(storage.scrapes().spans(gap).is_empty());
    for _ in 0..2 {
        let req = Request::get("/metrics")
            .header("X-Prometheus-Scrape-Timeout-Seconds", "10")
            .body(Body::empty())
            .unwrap();
        let (status, _, _) = call(&d, req).await;
        assert_eq!(status, StatusCode::OK);
    }
    let spans = storage.scrapes().spans(gap);
    assert_eq!(spans.len(), 1, "{spans:?}");
    assert!(spans[0].1 >= spans[0].0);
    storage.shutdown().await;
}

#[tokio::test]
async fn metrics_exist_from_the_start_with_user_labels() {
    let dir = TempDir::new("start");
    let d = state_with(IDLE, &dir);
    let (status, body, ctype) = call(&d, get("/metrics")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        ctype.as_deref(),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    for series in [
        r#"vantage_probe_success{probe="ping",site="lab",target="idle"} 0"#,
        r#"vantage_probe_duration_seconds{probe="ping",site="lab",target="idle"} 0"#,
        r#"vantage_ping_packets_sent_total{site="lab",target="idle"} 0"#,
        r#"vantage_ping_round_packets_sent{site="lab",target="idle"} 0"#,
        r#"vantage_ping_loss_ratio{site="lab",target="idle"} 0"#,
        r#"vantage_ping_packets_received_total{site="lab",target="idle"} 0"#,
        r#"vantage_ping_duplicates_total{site="lab",target="idle"} 0"#,
        r#"vantage_ping_rtt_seconds_bucket{site="lab",target="idle",le="0.00005"} 0"#,
        r#"vantage_ping_rtt_seconds_bucket{site="lab",target="idle",le="26.2144"} 0"#,
        r#"vantage_ping_rtt_seconds_count{site="lab",target="idle"} 0"#,
        r#"vantage_config_last_reload_successful 1"#,
        r#"vantage_targets 1"#,
        r#"vantage_scheduler_lag_seconds_count{probe="ping"}"#,
        "process_resident_memory_bytes ",
        "process_start_time_seconds ",
    ] {
        assert!(body.contains(series), "missing {series}\n{body}");
    }
    assert!(body.contains(&format!(
        r#"vantage_build_info{{arch="{}",version="{}"}} 1"#,
        std::env::consts::ARCH,
        env!("CARGO_PKG_VERSION")
    )));
}

#[tokio::test]
async fn metrics_are_gzipped_when_the_scraper_takes_it() {
    use std::io::Read;
    let dir = TempDir::new("gzip");
    let d = state_with(IDLE, &dir);
    let (_, plain, _) = call(&d, get("/metrics")).await;
    let req = |enc: &str| {
        Request::get("/metrics")
            .header("accept-encoding", enc)
            .body(Body::empty())
            .unwrap()
    };
    // Prometheus' own header.
    let resp = router(d.clone()).oneshot(req("gzip")).await.unwrap();
    assert_eq!(resp.headers()["content-encoding"], "gzip");
    let zipped = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(
        zipped.len() * 3 < plain.len(),
        "{} vs {}",
        zipped.len(),
        plain.len()
    );
    let mut text = String::new();
    flate2::read::GzDecoder::new(&zipped[..])
        .read_to_string(&mut text)
        .unwrap();
    // Same families (the process figures move between two scrapes).
    let names = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| l.starts_with("# TYPE"))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(names(&text), names(&plain));
    for refused in ["identity", "gzip;q=0", "br, deflate"] {
        let resp = router(d.clone()).oneshot(req(refused)).await.unwrap();
        assert!(
            resp.headers().get("content-encoding").is_none(),
            "{refused}"
        );
    }
    let resp = router(d.clone())
        .oneshot(req("deflate, gzip;q=0.5"))
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-encoding"], "gzip");
}

#[tokio::test]
async fn health_and_ready() {
    let dir = TempDir::new("health");
    let d = state_with(IDLE, &dir);
    assert_eq!(call(&d, get("/-/healthy")).await.0, StatusCode::OK);
    assert_eq!(call(&d, get("/-/ready")).await.0, StatusCode::OK);
    // The page at `/` is the web module's (see web/tests.rs).
    assert_eq!(call(&d, get("/nope")).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn reload_applies_good_files_and_keeps_the_running_config_on_bad_ones() {
    let dir = TempDir::new("reload");
    let d = state_with(IDLE, &dir);
    let path = dir.path().join("vantage.toml");

    // GET is not a way to reload.
    assert_eq!(
        call(&d, get("/-/reload")).await.0,
        StatusCode::METHOD_NOT_ALLOWED
    );

    let added = format!(
        "{IDLE}\n[[targets]]\nname = \"second\"\nhost = \"::1\"\nprobes = [\"ping\"]\ninterval = \"24h\"\n"
    );
    std::fs::write(&path, &added).unwrap();
    let (s, body, _) = call(&d, Request::post("/-/reload").body(Body::empty()).unwrap()).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (_, m, _) = call(&d, get("/metrics")).await;
    assert!(
        m.contains(r#"vantage_probe_success{probe="ping",target="second"} 0"#),
        "{m}"
    );
    assert_eq!(value(&m, "vantage_targets"), Some(2.0));
    assert_eq!(
        value(&m, "vantage_config_last_reload_successful"),
        Some(1.0)
    );

    std::fs::write(
        &path,
        format!("{added}\n[[targets]]\nname = \"x\"\nhost = \"a;b\"\nprobes = [\"ping\"]\n"),
    )
    .unwrap();
    let (s, body, _) = call(&d, Request::post("/-/reload").body(Body::empty()).unwrap()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        body.contains("vantage.toml:17:8: targets[2].host: contains ';'"),
        "{body}"
    );
    let (_, m, _) = call(&d, get("/metrics")).await;
    assert_eq!(
        value(&m, "vantage_config_last_reload_successful"),
        Some(0.0)
    );
    // The running config is untouched.
    assert_eq!(value(&m, "vantage_targets"), Some(2.0));
    assert!(m.contains(r#"target="second""#));
}

#[tokio::test]
async fn reload_keeps_series_of_unchanged_targets_and_drops_removed_ones() {
    let dir = TempDir::new("keep");
    let two = "[[targets]]\nname = \"a\"\nhost = \"127.0.0.1\"\nprobes = [\"ping\"]\ninterval = \"24h\"\n\
               [[targets]]\nname = \"b\"\nhost = \"127.0.0.1\"\nprobes = [\"ping\"]\ninterval = \"24h\"\n";
    let d = state_with(two, &dir);
    // Feed a sample to "a" as the runner would, then reload a config that changes only "b".
    let sample = vantage_core::Sample {
        target: "a".into(),
        probe: vantage_core::ProbeKind::PING,
        timestamp: std::time::SystemTime::now(),
        duration: std::time::Duration::from_millis(3),
        success: true,
        error: None,
        measurement: vantage_core::Measurement::from(vantage_core::PingReport {
            sent: 3,
            received: 3,
            rtts: vec![std::time::Duration::from_millis(1); 3],
            ..Default::default()
        }),
        quality: Default::default(),
    };
    vantage_core::Observer::sample(&*d.metrics, sample);
    let changed = "[[targets]]\nname = \"a\"\nhost = \"127.0.0.1\"\nprobes = [\"ping\"]\ninterval = \"24h\"\n";
    std::fs::write(dir.path().join("vantage.toml"), changed).unwrap();
    d.reloader.reload().unwrap();
    let (_, m, _) = call(&d, get("/metrics")).await;
    assert_eq!(
        value(&m, r#"vantage_ping_packets_sent_total{target="a"}"#),
        Some(3.0),
        "{m}"
    );
    assert!(!m.contains(r#"target="b""#), "{m}");
}

#[tokio::test]
async fn probe_rejects_bad_requests_with_a_reason() {
    let dir = TempDir::new("probe-bad");
    let d = state_with(IDLE, &dir);
    let cases = [
        ("/probe", "target parameter is missing"),
        ("/probe?target=", "target parameter is missing"),
        (
            "/probe?target=127.0.0.1%3B%20rm%20-rf%20%2F",
            "target contains whitespace",
        ),
        ("/probe?target=-c%201000", "target must not start with '-'"),
        ("/probe?target=%24(reboot)", "target contains '$'"),
        (
            "/probe?target=127.0.0.1&module=smoke",
            "module: unknown probe \"smoke\"",
        ),
    ];
    for (uri, want) in cases {
        let (s, body, _) = call(&d, get(uri)).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{uri}");
        assert!(body.contains(want), "{uri}: {body}");
    }
    let long = format!("/probe?target={}", "a".repeat(5000));
    let (s, body, _) = call(&d, get(&long)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(body.contains("5000 characters"), "{body}");
    for bad in ["abc", "-1", "0", "NaN", "inf"] {
        let req = Request::get("/probe?target=127.0.0.1")
            .header("X-Prometheus-Scrape-Timeout-Seconds", bad)
            .body(Body::empty())
            .unwrap();
        let (s, body, _) = call(&d, req).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}");
        assert!(
            body.contains("X-Prometheus-Scrape-Timeout-Seconds"),
            "{body}"
        );
    }
}

#[tokio::test]
async fn probe_answers_with_that_probes_metrics_only() {
    let dir = TempDir::new("probe");
    let d = state_with(IDLE, &dir);
    let req = Request::get("/probe?target=127.0.0.1&module=ping")
        .header("X-Prometheus-Scrape-Timeout-Seconds", "2")
        .body(Body::empty())
        .unwrap();
    let start = std::time::Instant::now();
    let (s, body, ctype) = call(&d, req).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(
        ctype.as_deref(),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    // Bounded by the scrape timeout minus the offset.
    assert!(
        start.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert!(
        body.contains("vantage_probe_success{probe=\"ping\"}"),
        "{body}"
    );
    assert!(body.contains("vantage_ping_round_packets_sent 1"), "{body}");
    // Gauges only: counters and histograms of one round would restart at every request.
    assert!(!body.contains("_total"), "{body}");
    assert!(!body.contains("_bucket"), "{body}");
    assert!(!body.contains("target=\"idle\""), "{body}");
    assert!(!body.contains("vantage_build_info"), "{body}");
    // Loopback answers wherever ICMP sockets are permitted (root, or ping_group_range).
    if vantage_core::net::KernelSockets::default().can_open() {
        assert!(
            body.contains("vantage_probe_success{probe=\"ping\"} 1"),
            "{body}"
        );
    }
}

#[test]
fn scrape_deadline_leaves_a_margin() {
    use axum::http::HeaderMap;
    let mut h = HeaderMap::new();
    assert_eq!(
        super::scrape_deadline(&h).unwrap(),
        super::DEFAULT_PROBE_TIMEOUT
    );
    h.insert("X-Prometheus-Scrape-Timeout-Seconds", "10".parse().unwrap());
    assert_eq!(
        super::scrape_deadline(&h).unwrap(),
        std::time::Duration::from_millis(9500)
    );
    h.insert(
        "X-Prometheus-Scrape-Timeout-Seconds",
        "0.2".parse().unwrap(),
    );
    assert_eq!(
        super::scrape_deadline(&h).unwrap(),
        std::time::Duration::from_millis(100)
    );
}

#[tokio::test]
async fn trace_series_exist_from_the_start() {
    let dir = TempDir::new("trace-start");
    let d = state_with(
        "[[targets]]\nname = \"up\"\nhost = \"192.0.2.10\"\nprobes = [\"trace\"]\ninterval = \"24h\"\n",
        &dir,
    );
    let (_, body, _) = call(&d, get("/metrics")).await;
    for series in [
        r#"vantage_probe_success{probe="trace",target="up"} 0"#,
        r#"vantage_trace_hops{target="up"} 0"#,
        r#"vantage_trace_path_hash{target="up"} 0"#,
        r#"vantage_trace_path_changes_total{target="up"} 0"#,
        r#"vantage_trace_paths{target="up"} 0"#,
        r#"vantage_scheduler_lag_seconds_count{probe="trace"}"#,
    ] {
        assert!(body.contains(series), "missing {series}\n{body}");
    }
}

#[tokio::test]
async fn probe_traces_on_demand() {
    let dir = TempDir::new("probe-trace");
    let d = state_with(IDLE, &dir);
    // UDP traces need no privilege: loopback answers at the first hop everywhere.
    let req = Request::get("/probe?target=127.0.0.1&module=trace")
        .header("X-Prometheus-Scrape-Timeout-Seconds", "3")
        .body(Body::empty())
        .unwrap();
    let start = std::time::Instant::now();
    let (s, body, _) = call(&d, req).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert!(start.elapsed() < std::time::Duration::from_secs(3));
    for series in [
        r#"vantage_probe_success{probe="trace"} 1"#,
        "vantage_trace_hops 1",
        r#"vantage_trace_hop_info{address="127.0.0.1",hop="1"} 1"#,
        r#"vantage_trace_hop_loss_ratio{hop="1"} 0"#,
        "vantage_trace_paths 1",
    ] {
        assert!(body.contains(series), "missing {series}\n{body}");
    }
    assert!(!body.contains("path_changes_total"), "{body}");
    assert!(!body.contains("target=\"idle\""), "{body}");
    for (uri, want) in [
        (
            "/probe?target=127.0.0.1&module=trace&protocol=sctp",
            "protocol: \"sctp\" is not one of udp, icmp, tcp",
        ),
        (
            "/probe?target=127.0.0.1&module=ping&protocol=udp",
            "protocol applies to module=trace only",
        ),
    ] {
        let (s, body, _) = call(&d, get(uri)).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{uri}");
        assert!(body.contains(want), "{uri}: {body}");
    }
}

fn post(uri: &str) -> Request<Body> {
    Request::post(uri).body(Body::empty()).unwrap()
}

#[tokio::test]
async fn identify_starts_stops_and_refuses_bad_durations() {
    let dir = TempDir::new("identify");
    let d = state_with(
        &format!("{IDLE}\n[leds]\nbackend = \"log\"\nidentify_timeout = \"90s\"\n"),
        &dir,
    );
    let (s, body, _) = call(&d, post("/api/identify")).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body, r#"{"identify_seconds":90}"#);
    let (s, body, _) = call(&d, get("/api/leds")).await;
    assert_eq!(s, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["leds"].as_array().unwrap().len(), 3, "{body}");
    assert!(
        v["conditions"]
            .as_array()
            .unwrap()
            .contains(&"identify".into())
    );
    assert!(
        v["identify_remaining_seconds"].as_f64().unwrap() > 80.0,
        "{body}"
    );

    let (s, body, _) = call(&d, post("/api/identify?seconds=0")).await;
    assert_eq!(
        (s, body.as_str()),
        (StatusCode::OK, r#"{"identify_seconds":0}"#)
    );
    let (_, body, _) = call(&d, get("/api/leds")).await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(v["identify_remaining_seconds"].is_null(), "{body}");

    for bad in ["-1", "1.5", "soon", "86401", "99999999999999999999999"] {
        let (s, body, _) = call(&d, post(&format!("/api/identify?seconds={bad}"))).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert!(body.contains("seconds must be a whole number"), "{body}");
    }
    assert_eq!(
        call(&d, get("/api/identify")).await.0,
        StatusCode::METHOD_NOT_ALLOWED
    );
    d.leds.shutdown(vantage_leds::Pattern::Off);
}

#[tokio::test]
async fn probe_connects_over_tcp_on_demand() {
    let dir = TempDir::new("probe-tcp");
    let d = state_with(&idle_with_high_ports(), &dir);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let _ = tokio::io::AsyncWriteExt::write_all(&mut s, b"220 ready\r\n").await;
        }
    });
    let uri = format!("/probe?module=tcp&target=127.0.0.1:{port}&expect=%5E220");
    let (s, body, _) = call(&d, get(&uri)).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert!(
        body.contains("vantage_probe_success{probe=\"tcp\"} 1"),
        "{body}"
    );
    assert!(
        body.contains("vantage_tcp_round_attempts_connected 3"),
        "{body}"
    );
    assert!(
        body.contains("vantage_tcp_round_expect_matched 1"),
        "{body}"
    );
    assert!(!body.contains("_bucket"), "{body}");
    for (uri, want) in [
        ("/probe?module=tcp&target=127.0.0.1", "write HOST:PORT"),
        (
            "/probe?module=tcp&target=127.0.0.1:0",
            "tcp.port: must be between 1 and 65535, got 0",
        ),
        (
            "/probe?module=tcp&target=127.0.0.1:1&expect=(",
            "tcp.expect: is not a valid regex",
        ),
        (
            "/probe?module=tcp&target=127.0.0.1:1&tls=maybe",
            "tls: \"maybe\"",
        ),
        (
            "/probe?module=tcp&target=127.0.0.1:1&protocol=udp",
            "protocol applies to module=trace only",
        ),
    ] {
        let (s, body, _) = call(&d, get(uri)).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{uri}");
        assert!(body.contains(want), "{uri}: {body}");
    }
}

#[tokio::test]
async fn probe_fetches_over_http_on_demand() {
    let dir = TempDir::new("probe-http");
    let d = state_with(&idle_with_high_ports(), &dir);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = tokio::io::AsyncReadExt::read(&mut s, &mut buf).await;
                let reply =
                    "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";
                let _ = tokio::io::AsyncWriteExt::write_all(&mut s, reply.as_bytes()).await;
            });
        }
    });
    let uri =
        format!("/probe?module=http&target=http://127.0.0.1:{port}/health&body_must_match=%5Ehel");
    let (s, body, _) = call(&d, get(&uri)).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    for want in [
        "vantage_probe_success{probe=\"http\"} 1",
        "vantage_http_status_code 200",
        "vantage_http_content_length_bytes 5",
        "vantage_http_redirects 0",
        "vantage_http_phase_seconds{phase=\"tls\"} 0",
        "vantage_http_phase_seconds{phase=\"transfer\"}",
    ] {
        assert!(body.contains(want), "{want}: {body}");
    }
    for (uri, want) in [
        (
            "/probe?module=http&target=file:///etc/passwd",
            "scheme \"file\" is not probed",
        ),
        (
            "/probe?module=http&target=http://user:pw@127.0.0.1/",
            "must not carry credentials",
        ),
        (
            "/probe?module=http&target=http://127.0.0.1/&max_redirects=99",
            "http.max_redirects: must be between 0 and 20",
        ),
    ] {
        let (s, body, _) = call(&d, get(uri)).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{uri}");
        assert!(body.contains(want), "{uri}: {body}");
    }
}

/// A one-reply HTTP server on loopback: its port, and a count of the connections it took.
async fn http_server(reply: String) -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let reply = reply.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = tokio::io::AsyncReadExt::read(&mut s, &mut buf).await;
                let _ = tokio::io::AsyncWriteExt::write_all(&mut s, reply.as_bytes()).await;
            });
        }
    });
    (port, seen)
}

fn redirect_to(location: &str) -> String {
    format!(
        "HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
}

const OK_REPLY: &str = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";

/// A blackbox module name answers with blackbox's series names, and only those.
#[tokio::test]
async fn blackbox_modules_answer_with_blackbox_names() {
    let dir = TempDir::new("probe-blackbox");
    let d = state_with(&idle_with_high_ports(), &dir);
    let (web, _) = http_server(OK_REPLY.into()).await;
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tcp_port = tcp.local_addr().unwrap().port();
    tokio::spawn(async move { while tcp.accept().await.is_ok() {} });
    let cases = [
        // blackbox's http prober takes a target without a scheme as http://.
        (
            format!("module=http_2xx&target=127.0.0.1:{web}/health"),
            vec![
                "probe_success 1",
                "probe_http_status_code 200",
                "probe_http_content_length 5",
                "probe_http_redirects 0",
                "probe_http_duration_seconds{phase=\"connect\"}",
                "probe_ip_protocol 4",
                "probe_dns_lookup_time_seconds 0",
            ],
        ),
        (
            format!("module=tcp_connect&target=127.0.0.1:{tcp_port}"),
            vec!["probe_success 1"],
        ),
        (
            "module=icmp&target=127.0.0.1".to_string(),
            vec!["probe_success ", "probe_duration_seconds "],
        ),
        (
            "module=icmp_ipv6&target=::1".to_string(),
            vec!["probe_ip_protocol 6"],
        ),
    ];
    for (q, wants) in cases {
        let (s, body, _) = call(&d, get(&format!("/probe?{q}"))).await;
        assert_eq!(s, StatusCode::OK, "{q}: {body}");
        for want in wants {
            assert!(body.contains(want), "{q}: {want:?} in\n{body}");
        }
        assert!(!body.contains("vantage_"), "{q}: {body}");
    }
    if vantage_core::net::KernelSockets::default().can_open() {
        let (_, body, _) = call(&d, get("/probe?module=icmp&target=127.0.0.1")).await;
        assert!(body.contains("probe_success 1"), "{body}");
        assert!(
            body.contains("probe_icmp_duration_seconds{phase=\"rtt\"}"),
            "{body}"
        );
    }
    // Vantage's own names keep Vantage's answer.
    let (_, body, _) = call(
        &d,
        get(&format!("/probe?module=tcp&target=127.0.0.1:{tcp_port}")),
    )
    .await;
    assert!(
        body.contains("vantage_probe_success{probe=\"tcp\"} 1"),
        "{body}"
    );
    assert!(!body.contains("\nprobe_success"), "{body}");
    let (s, body, _) = call(&d, get("/probe?module=dns_udp&target=127.0.0.1:53")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(body.contains("query_name parameter is missing"), "{body}");
}

/// `/probe` is no SSRF or port-scanning tool: link-local, metadata and non-unicast targets,
/// and ports outside `[probe_endpoint] ports`, get a 400 that says why.
#[tokio::test]
async fn probe_refuses_link_local_metadata_and_unlisted_ports() {
    let dir = TempDir::new("probe-refuse");
    let d = state_with(IDLE, &dir);
    for (uri, want) in [
        (
            "/probe?target=169.254.169.254",
            "169.254.169.254 is a link-local address",
        ),
        ("/probe?module=icmp&target=169.254.169.254", "link-local"),
        ("/probe?target=fe80::1", "fe80::1 is a link-local address"),
        (
            "/probe?module=tcp&target=[fd00:ec2::254]:80",
            "cloud metadata address",
        ),
        (
            "/probe?target=metadata.google.internal",
            "names a cloud metadata service",
        ),
        (
            "/probe?module=http&target=http://metadata/computeMetadata/v1/",
            "cloud metadata service",
        ),
        (
            "/probe?module=http&target=http://169.254.169.254/latest/meta-data/",
            "link-local",
        ),
        ("/probe?target=0.0.0.0", "unspecified address"),
        ("/probe?target=::", "unspecified address"),
        ("/probe?target=255.255.255.255", "the broadcast address"),
        ("/probe?target=224.0.0.1", "a multicast address"),
        // Issue: a DNS probe over TCP to any port told open from closed ports.
        (
            "/probe?module=dns&target=127.0.0.1&query=a&transport=tcp&port=6379",
            "port 6379 is not open to /probe for module dns",
        ),
        (
            "/probe?module=tcp&target=127.0.0.1:6379",
            "port 6379 is not open to /probe for module tcp",
        ),
        (
            "/probe?module=tcp_connect&target=127.0.0.1:8080",
            "probe_endpoint.ports.tcp",
        ),
        (
            "/probe?module=http&target=http://127.0.0.1:8080/",
            "port 8080 is not open to /probe for module http",
        ),
    ] {
        let (s, body, _) = call(&d, get(uri)).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{uri}: {body}");
        assert!(body.contains(want), "{uri}: {want:?} in {body}");
    }
    // The config opens what it lists: link-local addresses, other ports, fewer modules.
    let text = format!(
        "{IDLE}\n[probe_endpoint]\nmodules = [\"ping\", \"tcp\"]\nallow_link_local = true\nports = {{ tcp = [6379] }}\n"
    );
    let open = state_with(&text, &TempDir::new("probe-open"));
    for uri in [
        "/probe?target=fe80::1",
        "/probe?module=tcp&target=127.0.0.1:6379",
    ] {
        let (s, body, _) = call(&open, get(uri)).await;
        assert_eq!(s, StatusCode::OK, "{uri}: {body}");
    }
    let (s, body, _) = call(&open, get("/probe?module=trace&target=127.0.0.1")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        body.contains("module trace is not served by /probe here"),
        "{body}"
    );
}

/// A redirect is held to the same rules as the target: a refused address, an unlisted port or
/// a host outside the allow-list fails the round without a connection to it.
#[tokio::test]
async fn http_redirects_are_held_to_the_same_rules() {
    let (allowed, _) = http_server(OK_REPLY.into()).await;
    let (unlisted, unlisted_seen) = http_server(OK_REPLY.into()).await;
    // Every unprivileged port but the one of the second server.
    let (below, above) = (unlisted - 1, unlisted + 1);
    let text = format!(
        "{IDLE}\n[probe_endpoint]\nports = {{ http = [\"1024-{below}\", \"{above}-65535\"] }}\n"
    );
    let d = state_with(&text, &TempDir::new("probe-redirect"));
    let probe = |location: String| {
        let d = d.clone();
        async move {
            let (from, _) = http_server(redirect_to(&location)).await;
            let uri = format!("/probe?module=http_2xx&target=http://127.0.0.1:{from}/");
            call(&d, get(&uri)).await
        }
    };
    let (s, body, _) = probe(format!("http://127.0.0.1:{allowed}/")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        body.contains("probe_success 1") && body.contains("probe_http_redirects 1"),
        "{body}"
    );
    for location in [
        format!("http://127.0.0.1:{unlisted}/"),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "http://metadata.google.internal/".to_string(),
    ] {
        let (s, body, _) = probe(location.clone()).await;
        assert_eq!(s, StatusCode::OK);
        assert!(body.contains("probe_success 0"), "{location}: {body}");
    }
    assert_eq!(unlisted_seen.load(std::sync::atomic::Ordering::SeqCst), 0);
    // The allow-list the front door hands over judges every hop: `localhost` is not on it.
    let (from, _) = http_server(redirect_to(&format!("http://localhost:{allowed}/"))).await;
    let only_127 = crate::probe_guard::Allowlist(Arc::new(|h: &vantage_core::Host| {
        h.to_string() == "127.0.0.1"
    }));
    let mut req = get(&format!(
        "/probe?module=http_2xx&target=http://127.0.0.1:{from}/"
    ));
    req.extensions_mut().insert(only_127.clone());
    let (_, body, _) = call(&d, req).await;
    assert!(body.contains("probe_success 0"), "{body}");
    let mut req = get(&format!(
        "/probe?module=http_2xx&target=http://localhost:{allowed}/"
    ));
    req.extensions_mut().insert(only_127);
    let (s, body, _) = call(&d, req).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("not in the /probe allow-list"), "{body}");
}
