//! The real `vantage` binary in a network namespace built for the test, scraped from inside it.
//!
//! Needs root: skipped with a printed reason otherwise, unless `VANTAGE_REQUIRE_ROOT_TESTS=1`,
//! which turns the skip into a failure.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use vantage_testkit::{VethPair, root_or_skip, unique_name};

const LISTEN: &str = "127.0.0.1:9430";

/// Kills the daemon however the test ends.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Removes the test's files however the test ends.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `GET /metrics` over plain HTTP/1.0 from the calling thread's namespace.
fn scrape() -> std::io::Result<String> {
    let mut s = TcpStream::connect(LISTEN)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: vantage\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    match body.split_once("\r\n\r\n") {
        Some((head, text))
            if head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200") =>
        {
            Ok(text.to_string())
        }
        _ => Err(std::io::Error::other(format!("bad response: {body}"))),
    }
}

/// The value of the series `name{labels...}` (all given labels must match).
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{'))
        })
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn unreachable_targets_report_failure_with_every_series_present() {
    if !root_or_skip("unreachable_targets_report_failure_with_every_series_present") {
        return;
    }
    let net = VethPair::new("daemon");
    let dir = TempDir(std::env::temp_dir().join(unique_name("daemon")));
    std::fs::create_dir_all(&dir.0).unwrap();
    let config = dir.0.join("vantage.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[defaults.ping]
timeout = "500ms"

[[targets]]
name = "reachable"
host = "{server}"
probes = ["ping"]
labels = {{ site = "lab" }}

# On the link, but nobody holds it: neighbour discovery fails, no reply ever comes.
[[targets]]
name = "absent"
host = "{absent}"
probes = ["ping"]
labels = {{ site = "lab" }}

# No route at all: the send itself fails.
[[targets]]
name = "unrouted"
host = "198.51.100.7"
probes = ["ping"]
"#,
            server = VethPair::SERVER_V4,
            absent = VethPair::ABSENT_V4,
        ),
    )
    .unwrap();
    let _daemon = Daemon(
        net.client
            .command(env!("CARGO_BIN_EXE_vantage"))
            .args(["run", "--listen", LISTEN, "--config"])
            .arg(&config)
            .arg("--data-dir")
            .arg(dir.0.join("data"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.0.join("vantage.log")).unwrap())
            .spawn()
            .expect("start vantage"),
    );

    let rounds = |text: &str, target: &str, result: &str| {
        value(
            text,
            "vantage_probe_rounds_total",
            &[("target", target), ("probe", "ping"), ("result", result)],
        )
        .unwrap_or(0.0)
    };
    let started = Instant::now();
    let text = net.client.run(|| {
        loop {
            if let Ok(text) = scrape()
                && rounds(&text, "reachable", "success") >= 2.0
                && rounds(&text, "absent", "failure") >= 2.0
                && rounds(&text, "unrouted", "failure") >= 2.0
            {
                break text;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no two rounds per target within 30 s; last scrape:\n{}\nlog:\n{}",
                scrape().unwrap_or_else(|e| e.to_string()),
                std::fs::read_to_string(dir.0.join("vantage.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    });

    let get = |name: &str, target: &str, extra: &[(&str, &str)]| {
        let mut labels = vec![("target", target)];
        labels.extend_from_slice(extra);
        value(&text, name, &labels)
            .unwrap_or_else(|| panic!("no series {name}{{target=\"{target}\"}} in:\n{text}"))
    };
    let ping = [("probe", "ping")];
    assert_eq!(get("vantage_probe_success", "reachable", &ping), 1.0);
    assert!(get("vantage_ping_packets_received_total", "reachable", &[]) >= 2.0);
    assert!(get("vantage_ping_rtt_seconds_count", "reachable", &[]) >= 2.0);
    assert_eq!(
        value(
            &text,
            "vantage_probe_success",
            &[("target", "reachable"), ("site", "lab")]
        ),
        Some(1.0),
        "the user's labels are on the series"
    );
    for target in ["absent", "unrouted"] {
        assert_eq!(get("vantage_probe_success", target, &ping), 0.0, "{target}");
        assert_eq!(rounds(&text, target, "success"), 0.0, "{target}");
        // Every series a working target has is there, at zero.
        get("vantage_probe_duration_seconds", target, &ping);
        get(
            "vantage_probe_last_success_timestamp_seconds",
            target,
            &ping,
        );
        get("vantage_ping_packets_sent_total", target, &[]);
        get("vantage_ping_loss_ratio", target, &[]);
        assert_eq!(get("vantage_ping_packets_received_total", target, &[]), 0.0);
        assert_eq!(get("vantage_ping_duplicates_total", target, &[]), 0.0);
        assert_eq!(get("vantage_ping_rtt_seconds_count", target, &[]), 0.0);
        assert_eq!(
            get("vantage_ping_rtt_seconds_bucket", target, &[("le", "+Inf")]),
            0.0
        );
    }
    // Requests to the absent neighbour went out and were all lost; those to the unrouted
    // address could not even be sent, and count as lost too.
    for target in ["absent", "unrouted"] {
        assert!(
            get("vantage_ping_packets_sent_total", target, &[]) >= 2.0,
            "{target}"
        );
        assert_eq!(get("vantage_ping_loss_ratio", target, &[]), 1.0, "{target}");
    }
    // The scheduler's own lateness is exported and has seen every round.
    let lag_count = value(&text, "vantage_scheduler_lag_seconds_count", &ping).unwrap();
    assert!(lag_count >= 6.0, "lag histogram count {lag_count}");
}
