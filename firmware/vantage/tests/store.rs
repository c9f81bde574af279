//! The daemon with its store and remote_write shipping, against a real Prometheus (Debian's
//! package) with the remote-write receiver: the backlog of an outage arrives with its original
//! timestamps, across a `kill -9` of the daemon in the middle of the outage; DNS and trace
//! rounds of an outage arrive as the very series `/metrics` shows for them; a full disk does
//! not stop probing.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;
use vantage_core::ProbeKind;

fn can_probe() -> bool {
    require(have("prometheus"), "the prometheus package")
        && require(
            vantage_core::net::KernelSockets::default().can_open(),
            "permission to open ICMP sockets",
        )
}

struct Prom {
    proc: Option<Proc>,
    port: u16,
    dir: std::path::PathBuf,
}

impl Prom {
    fn start(dir: &Path, port: u16) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let cfg = dir.join("prometheus.yml");
        std::fs::write(
            &cfg,
            "global:\n  scrape_interval: 1h\nstorage:\n  tsdb:\n    out_of_order_time_window: 24h\n",
        )
        .unwrap();
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(dir.join("prometheus.log"))
            .unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--web.enable-remote-write-receiver")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let p = Self {
            proc: Some(Proc(child)),
            port,
            dir: dir.to_path_buf(),
        };
        wait_until(Duration::from_secs(30), || {
            http_get(p.addr(), "/-/ready").is_ok_and(|(s, _)| s == 200)
        });
        p
    }

    fn addr(&self) -> SocketAddr {
        format!("127.0.0.1:{}", self.port).parse().unwrap()
    }

    fn stop(&mut self) {
        if let Some(p) = self.proc.take() {
            term(&p);
            drop(p);
        }
    }

    fn restart(&mut self) {
        self.stop();
        *self = Prom::start(&self.dir.clone(), self.port);
    }

    /// Timestamps (ms) of the raw samples of `selector` over the last `range_s` seconds.
    fn timestamps(&self, selector: &str, range_s: u64) -> Vec<i64> {
        let q = format!("{selector}[{range_s}s]");
        let (status, body) =
            http_get(self.addr(), &format!("/api/v1/query?query={}", enc(&q))).unwrap();
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let mut out = Vec::new();
        for series in v["data"]["result"].as_array().unwrap() {
            for pair in series["values"].as_array().unwrap() {
                out.push((pair[0].as_f64().unwrap() * 1000.0).round() as i64);
            }
        }
        out
    }
}

type Labels = BTreeMap<String, String>;

impl Prom {
    /// Each series of `selector` over the last `range_s` seconds: its labels and the
    /// timestamps (ms) of its raw samples.
    fn series(&self, selector: &str, range_s: u64) -> Vec<(Labels, Vec<i64>)> {
        let q = format!("{selector}[{range_s}s]");
        let (status, body) =
            http_get(self.addr(), &format!("/api/v1/query?query={}", enc(&q))).unwrap();
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let labels = s["metric"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                    .collect();
                let ts = s["values"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| (p[0].as_f64().unwrap() * 1000.0).round() as i64)
                    .collect();
                (labels, ts)
            })
            .collect()
    }
}

/// The series of a `/metrics` text: name and labels, with the value.
fn live_series(text: &str) -> Vec<(String, Labels, f64)> {
    vantage_testkit::exposition_series(text)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn term(p: &Proc) {
    // SAFETY: kill(2) with a pid we own.
    unsafe {
        libc::kill(p.0.id() as i32, libc::SIGTERM);
    }
    let start = Instant::now();
    while std::fs::metadata(format!("/proc/{}", p.0.id())).is_ok_and(|_| !zombie(p.0.id()))
        && start.elapsed() < Duration::from_secs(20)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.split(") ").nth(1).is_some_and(|r| r.starts_with('Z')))
        .unwrap_or(true)
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' | b'-' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn scrape(addr: SocketAddr) -> String {
    http_get(addr, "/metrics")
        .map(|(_, b)| b)
        .unwrap_or_default()
}

#[test]
fn backlog_reaches_prometheus_across_an_outage_and_a_kill() {
    if !can_probe() {
        return;
    }
    let dir = TempDir::new("rw");
    let mut prom = Prom::start(&dir.path("prom"), free_port());
    let cfg = dir.path("vantage.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[store]
commit_interval = "200ms"

[[remote_write]]
name = "central"
url = "http://127.0.0.1:{}/api/v1/write"
min_backoff = "100ms"
max_backoff = "1s"
labels = {{ instance = "dev1" }}

[[targets]]
name = "lo"
host = "127.0.0.1"
probes = ["ping"]
interval = "200ms"
labels = {{ site = "lab" }}
"#,
            prom.port
        ),
    )
    .unwrap();
    let data = dir.path("data");
    std::fs::create_dir_all(&data).unwrap();
    let (daemon, addr) = start_daemon(Some(&cfg), &data);
    wait_until(Duration::from_secs(20), || {
        let m = scrape(addr);
        metric(&m, "vantage_uplink_up") == Some(1.0)
            && metric(
                &m,
                r#"vantage_remote_write_samples_sent_total{endpoint="central"}"#,
            )
            .is_some_and(|v| v > 0.0)
    });

    // The local charts' view of the store.
    let (status, body) = http_get(addr, "/api/samples?target=lo&probe=ping").unwrap();
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let rounds = v["samples"].as_array().unwrap();
    assert!(!rounds.is_empty(), "{body}");
    assert_eq!(rounds[0]["values"]["success"], 1.0, "{body}");
    assert!(
        rounds[0]["values"]["rtt_avg_seconds"].as_f64().is_some(),
        "{body}"
    );
    let (status, _) = http_get(addr, "/api/samples?target=lo&probe=bogus").unwrap();
    assert_eq!(status, 400);
    // The status page's device facts: store fill and shipping state.
    let session = web_session(addr);
    let status_of = |addr| {
        let (code, _, body) = http_with(
            addr,
            "GET",
            "/api/status",
            &[("Cookie", session.0.as_str())],
            "",
        )
        .unwrap();
        assert_eq!(code, 200, "{body}");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()
    };
    let st = status_of(addr);
    assert_eq!(st["store"]["healthy"], true, "{st}");
    assert!(st["store"]["samples"].as_u64().unwrap() > 0, "{st}");
    assert!(st["store"]["fill"].as_f64().unwrap() > 0.0, "{st}");
    assert_eq!(st["remote_write"]["state"], "shipping", "{st}");
    assert_eq!(st["remote_write"]["endpoints"][0]["name"], "central");
    assert!(
        !st.to_string().contains("/api/v1/write"),
        "endpoint URL leaked: {st}"
    );

    // Outage, and the daemon killed in the middle of it.
    prom.stop();
    wait_until(Duration::from_secs(10), || {
        let m = scrape(addr);
        metric(&m, "vantage_uplink_up") == Some(0.0)
            && metric(
                &m,
                r#"vantage_remote_write_backlog_samples{endpoint="central"}"#,
            )
            .is_some_and(|v| v > 0.0)
    });
    let st = status_of(addr);
    assert_eq!(st["remote_write"]["state"], "uplink down", "{st}");
    assert!(
        st["remote_write"]["endpoints"][0]["backlog"]
            .as_u64()
            .unwrap()
            > 0,
        "{st}"
    );
    std::thread::sleep(Duration::from_secs(2));
    drop(daemon); // SIGKILL
    let (daemon, addr) = start_daemon(Some(&cfg), &data);
    std::thread::sleep(Duration::from_secs(3));
    let m = scrape(addr);
    assert_eq!(metric(&m, "vantage_uplink_up"), Some(0.0), "{m}");
    assert_eq!(
        metric(
            &m,
            r#"vantage_store_dropped_samples_total{reason="corrupt"}"#
        ),
        Some(0.0)
    );

    // Recovery: the backlog drains.
    prom.restart();
    wait_until(Duration::from_secs(60), || {
        let m = scrape(addr);
        metric(&m, "vantage_uplink_up") == Some(1.0)
            && metric(
                &m,
                r#"vantage_remote_write_backlog_samples{endpoint="central"}"#,
            )
            .is_some_and(|v| v < 5.0)
    });
    let m = scrape(addr);
    let ep = |name: &str| metric(&m, &format!(r#"{name}{{endpoint="central"}}"#));
    assert_eq!(ep("vantage_remote_write_rejected_samples_total"), Some(0.0));
    assert_eq!(ep("vantage_remote_write_skipped_samples_total"), Some(0.0));
    assert!(ep("vantage_remote_write_sent_bytes_total").is_some_and(|v| v > 0.0));
    assert!(ep("vantage_remote_write_oldest_unshipped_timestamp_seconds").is_some());
    std::thread::sleep(Duration::from_secs(1));
    term(&daemon);
    drop(daemon);

    // Every stored round up to the newest one Prometheus has is there, at its timestamp, once.
    let store =
        vantage_store::Store::open(vantage_store::StoreOptions::new(data.join("store"))).unwrap();
    let mut stored: Vec<i64> = store
        .query("lo", ProbeKind::PING, 0, i64::MAX)
        .unwrap()
        .iter()
        .map(|s| s.timestamp_ms)
        .collect();
    stored.sort_unstable();
    let got = prom.timestamps(
        r#"vantage_probe_success{target="lo",probe="ping",site="lab",instance="dev1"}"#,
        3600,
    );
    assert!(!got.is_empty());
    let newest = *got.iter().max().unwrap();
    let want: Vec<i64> = stored.iter().copied().filter(|t| *t <= newest).collect();
    let mut got_sorted = got.clone();
    got_sorted.sort_unstable();
    assert_eq!(got_sorted.len(), got.len());
    assert_eq!(got_sorted, want, "Prometheus and the store disagree");
    // The outage is in there: rounds are 200 ms apart except across the daemon restart.
    let gaps = want.windows(2).filter(|w| w[1] - w[0] > 1500).count();
    assert!(gaps <= 1, "{gaps} gaps");
    assert!(want.len() > 30, "{} rounds", want.len());
}

/// DNS and trace rounds of an outage reach Prometheus at their own timestamps as exactly the
/// series (names, labels) that `/metrics` had for them before the outage, and `/api/samples`
/// serves their figures.
#[test]
fn dns_and_trace_rounds_of_an_outage_arrive_as_their_live_series() {
    if !can_probe() {
        return;
    }
    let dns = Responder::start();
    let dir = TempDir::new("rw-dns-trace");
    let mut prom = Prom::start(&dir.path("prom"), free_port());
    let cfg = dir.path("vantage.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[device]
name = "pi-lab"
labels = {{ room = "r1" }}

[store]
commit_interval = "200ms"

[[remote_write]]
name = "central"
url = "http://127.0.0.1:{}/api/v1/write"
min_backoff = "100ms"
max_backoff = "1s"
labels = {{ instance = "dev1" }}

[defaults.dns]
port = {}
timeout = "200ms"

[[targets]]
name = "resolver"
host = "127.0.0.1"
probes = ["dns"]
interval = "300ms"
labels = {{ site = "lab" }}
dns = {{ query = "www.example.test" }}

[[targets]]
name = "path"
host = "127.0.0.1"
probes = ["trace"]
interval = "400ms"
labels = {{ site = "lab" }}
trace = {{ timeout = "200ms" }}
"#,
            prom.port,
            dns.addr.port()
        ),
    )
    .unwrap();
    let data = dir.path("data");
    std::fs::create_dir_all(&data).unwrap();
    let (daemon, addr) = start_daemon(Some(&cfg), &data);
    let mut m = String::new();
    wait_until(Duration::from_secs(20), || {
        m = scrape(addr);
        metric(&m, "vantage_uplink_up") == Some(1.0)
            && m.lines().any(|l| {
                l.starts_with("vantage_dns_rcode{")
                    && l.contains(r#"rcode="NOERROR""#)
                    && l.ends_with(" 1")
            })
            && m.lines()
                .any(|l| l.starts_with("vantage_trace_hops{") && l.ends_with(" 1"))
    });
    // The live series that shipping fills in: the per-round gauges of the DNS and trace
    // targets, from the one definition both use (docs/STORE.md).
    let gauges: Vec<&str> = vantage_store::gauges::ALL.iter().map(|g| g.name).collect();
    let live: Vec<(String, Labels)> = live_series(&m)
        .into_iter()
        .filter(|(name, labels, _)| {
            gauges.contains(&name.as_str()) && labels.contains_key("target")
        })
        .map(|(n, l, _)| (n, l))
        .collect();
    for want in [
        "vantage_dns_phase_seconds",
        "vantage_dns_rcode",
        "vantage_dns_answer_records",
        "vantage_trace_hops",
        "vantage_trace_hop_rtt_seconds",
        "vantage_trace_hop_loss_ratio",
        "vantage_trace_path_hash",
    ] {
        assert!(live.iter().any(|(n, _)| n == want), "{want} not live:\n{m}");
    }

    // Outage.
    prom.stop();
    let outage_start = now_ms();
    std::thread::sleep(Duration::from_secs(4));
    let outage_end = now_ms();
    wait_until(Duration::from_secs(10), || {
        metric(
            &scrape(addr),
            "vantage_remote_write_backlog_samples{", /* device labels first */
        )
        .is_some_and(|v| v > 0.0)
    });
    prom.restart();
    wait_until(Duration::from_secs(60), || {
        let m = scrape(addr);
        metric(&m, "vantage_uplink_up") == Some(1.0)
            && metric(
                &m,
                "vantage_remote_write_backlog_samples{", /* device labels first */
            )
            .is_some_and(|v| v < 5.0)
    });
    std::thread::sleep(Duration::from_secs(1));

    // The store's rounds of the outage, as the local charts read them: every round's timestamp,
    // and those of rounds that failed (on a loaded machine a round can miss its 200 ms timeout;
    // it has no lookup or hop times to ship).
    let stored = |target: &str, probe: &str| -> (Vec<i64>, Vec<i64>, serde_json::Value) {
        let (status, body) = http_get(
            addr,
            &format!(
                "/api/samples?target={target}&probe={probe}&from={:.3}&to={:.3}",
                outage_start as f64 / 1000.0,
                outage_end as f64 / 1000.0
            ),
        )
        .unwrap();
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let samples = v["samples"].as_array().unwrap();
        let ms = |s: &serde_json::Value| (s["timestamp"].as_f64().unwrap() * 1000.0).round() as i64;
        let ts = samples.iter().map(ms).collect();
        let failed = samples
            .iter()
            .filter(|s| s["error"] != "")
            .map(ms)
            .collect();
        (ts, failed, v)
    };
    let (dns_ts, dns_failed, dns_json) = stored("resolver", "dns");
    let (trace_ts, trace_failed, trace_json) = stored("path", "trace");
    assert!(dns_ts.len() >= 5, "{dns_json}");
    assert!(trace_ts.len() >= 5, "{trace_json}");
    assert!(dns_failed.len() * 2 < dns_ts.len(), "{dns_json}");
    assert!(trace_failed.len() * 2 < trace_ts.len(), "{trace_json}");
    let answered = |j: &serde_json::Value| {
        j["samples"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["error"] == "")
            .cloned()
            .unwrap()
    };
    let d = &answered(&dns_json);
    assert_eq!(d["rcode"], "NOERROR", "{d}");
    assert_eq!(d["values"]["answer_records"], 1.0, "{d}");
    assert!(d["values"]["lookup_seconds"].as_f64().is_some(), "{d}");
    assert!(d["values"]["request_seconds"].as_f64().is_some(), "{d}");
    let t = &answered(&trace_json);
    assert_eq!(t["values"]["hops"], 1.0, "{t}");
    assert_eq!(t["hops"][0]["ttl"], 1, "{t}");
    assert_eq!(t["hops"][0]["loss_ratio"], 0.0, "{t}");
    assert!(t["hops"][0]["rtt_avg_seconds"].as_f64().is_some(), "{t}");

    // Each live series is in Prometheus with the same labels (plus the endpoint's
    // `instance` and the default `job`), with a point at the original timestamp of every round of the outage.
    let range = ((now_ms() - outage_start) / 1000 + 60) as u64;
    for (name, labels) in &live {
        let mut sel: Vec<String> = vec![format!("__name__={name:?}")];
        sel.extend(labels.iter().map(|(k, v)| format!("{k}={v:?}")));
        let found = prom.series(&format!("{{{}}}", sel.join(",")), range);
        assert_eq!(found.len(), 1, "{name}{labels:?}: {found:?}");
        let (mut got_labels, ts) = found.into_iter().next().unwrap();
        assert_eq!(got_labels.remove("instance").as_deref(), Some("dev1"));
        // Shipped series carry the identity dashboards select on (docs/FLEET.md).
        assert_eq!(got_labels.remove("job").as_deref(), Some("vantage"));
        got_labels.remove("__name__");
        assert_eq!(&got_labels, labels, "{name}");
        let (want, failed) = if name.starts_with("vantage_dns_")
            || labels.get("probe").is_some_and(|p| p == "dns")
        {
            (&dns_ts, &dns_failed)
        } else {
            (&trace_ts, &trace_failed)
        };
        let during: Vec<i64> = ts
            .into_iter()
            .filter(|t| *t >= outage_start && *t <= outage_end)
            .collect();
        // Every answered round at its own timestamp; a failed one may lack a time series.
        let missing: Vec<i64> = want
            .iter()
            .copied()
            .filter(|t| !during.contains(t))
            .collect();
        assert!(
            during.iter().all(|t| want.contains(t)) && missing.iter().all(|t| failed.contains(t)),
            "{name}{labels:?}: the outage's rounds\n  got:  {during:?}\n  want: {want:?} (failed: {failed:?})"
        );
    }
    term(&daemon);
    drop(daemon);
}

#[test]
fn a_full_disk_does_not_stop_probing() {
    if !can_probe() || !require(is_root(), "root (mounts a tmpfs)") {
        return;
    }
    let dir = TempDir::new("full");
    let data = dir.path("data");
    std::fs::create_dir_all(&data).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(&data)
        .status()
        .unwrap()
        .success();
    assert!(ok, "mount tmpfs");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(data.clone());
    let cfg = dir.path("vantage.toml");
    let mut text = String::from("[store]\ncommit_interval = \"100ms\"\n");
    for i in 0..5 {
        text.push_str(&format!(
            "[[targets]]\nname = \"lo{i}\"\nhost = \"127.0.0.1\"\nprobes = [\"ping\"]\ninterval = \"100ms\"\n"
        ));
    }
    std::fs::write(&cfg, text).unwrap();
    let (daemon, addr) = start_daemon(Some(&cfg), &data);
    wait_until(Duration::from_secs(10), || {
        metric(&scrape(addr), "vantage_store_samples").is_some_and(|v| v > 0.0)
    });

    // Fill the disk.
    let filler = data.join("filler");
    let _ = Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", filler.display()))
        .arg("bs=64k")
        .stderr(Stdio::null())
        .status();
    // Writes fail and rounds wait in memory (both at once: the engine may free a little space
    // by itself now and then, which would let one commit through).
    wait_until(Duration::from_secs(30), || {
        let m = scrape(addr);
        metric(&m, "vantage_store_healthy") == Some(0.0)
            && metric(&m, "vantage_store_pending_samples").is_some_and(|v| v > 0.0)
    });
    let rounds = |m: &str| {
        metric(
            m,
            r#"vantage_probe_rounds_total{probe="ping",result="success",target="lo0"}"#,
        )
        .unwrap_or(0.0)
    };
    // Probing goes on (progress, not a rate: a loaded machine runs fewer rounds a second).
    let before = rounds(&scrape(addr));
    wait_until(Duration::from_secs(30), || {
        rounds(&scrape(addr)) > before + 5.0
    });
    let m = scrape(addr);
    assert!(
        metric(&m, "vantage_store_write_errors_total").is_some_and(|v| v > 0.0),
        "{m}"
    );

    // Space returns: the store catches up without losing what waited in memory.
    std::fs::remove_file(&filler).unwrap();
    wait_until(Duration::from_secs(60), || {
        let m = scrape(addr);
        metric(&m, "vantage_store_healthy") == Some(1.0)
            && metric(&m, "vantage_store_pending_samples").is_some_and(|v| v < 100.0)
    });
    let m = scrape(addr);
    assert_eq!(
        metric(
            &m,
            r#"vantage_store_dropped_samples_total{reason="overflow"}"#
        ),
        Some(0.0),
        "{m}"
    );
    let log = std::fs::read_to_string(data.join("daemon.log")).unwrap_or_default();
    assert!(!log.contains("panicked"), "{log}");
    drop(daemon);
}
