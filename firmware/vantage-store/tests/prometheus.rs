//! End to end with a real Prometheus (Debian's package) and its remote-write receiver: an outage
//! (Prometheus stopped), then recovery; every sample of the outage is queryable at its original
//! timestamp, with no duplicates or gaps: ping, DNS and trace rounds with their own series. The
//! same with the store and shipper restarted in the middle of the outage.

mod common;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use vantage_store::{Endpoint, Shipper, ShipperOptions, Store};

const TARGETS: usize = 5;
const STEP: Duration = Duration::from_millis(200);

fn require(ok: bool, what: &str) -> bool {
    if ok {
        return true;
    }
    if std::env::var("VANTAGE_REQUIRE_ROOT_TESTS").as_deref() == Ok("1") {
        panic!("required for this test: {what}");
    }
    eprintln!("SKIPPED: needs {what}");
    false
}

fn outage() -> Duration {
    Duration::from_secs(
        std::env::var("VANTAGE_OUTAGE_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(60),
    )
}

#[derive(Debug)]
pub struct Prometheus {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
}

impl Prometheus {
    pub fn start(dir: &Path, port: u16) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let cfg = dir.join("prometheus.yml");
        // Out-of-order ingestion lets a backlog older than the head block in, as a central
        // Prometheus receiving from many devices needs (see docs/STORE.md).
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
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--web.enable-remote-write-receiver")
            .arg("--storage.tsdb.retention.time=2d")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus runs");
        let p = Self {
            child: Some(child),
            port,
            dir: dir.to_path_buf(),
        };
        let start = Instant::now();
        while !p.ready() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "prometheus did not start: {}",
                std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        p
    }

    fn ready(&self) -> bool {
        std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            && reqwest::blocking_get(&format!("http://127.0.0.1:{}/-/ready", self.port))
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe_term(&c);
            let start = Instant::now();
            while c.try_wait().unwrap().is_none() {
                if start.elapsed() > Duration::from_secs(30) {
                    let _ = c.kill();
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        *self = Prometheus::start(&self.dir.clone(), self.port);
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/api/v1/write", self.port)
    }

    /// Raw samples of a series over the last `range` at `at`: (ms, value).
    pub async fn raw(&self, selector: &str, range_s: u64, at_ms: i64) -> Vec<(i64, f64)> {
        let q = format!("{selector}[{range_s}s]");
        let url = format!(
            "http://127.0.0.1:{}/api/v1/query?query={}&time={:.3}",
            self.port,
            urlencode(&q),
            at_ms as f64 / 1000.0
        );
        let v: serde_json::Value =
            serde_json::from_str(&reqwest::get(&url).await.unwrap().text().await.unwrap()).unwrap();
        assert_eq!(v["status"], "success", "{v}");
        let mut out = Vec::new();
        for series in v["data"]["result"].as_array().unwrap() {
            for pair in series["values"].as_array().unwrap() {
                let t = pair[0].as_f64().unwrap();
                let val: f64 = pair[1].as_str().unwrap().parse().unwrap();
                out.push(((t * 1000.0).round() as i64, val));
            }
        }
        out
    }

    pub async fn scalar(&self, q: &str, at_ms: i64) -> Option<f64> {
        let url = format!(
            "http://127.0.0.1:{}/api/v1/query?query={}&time={:.3}",
            self.port,
            urlencode(q),
            at_ms as f64 / 1000.0
        );
        let v: serde_json::Value =
            serde_json::from_str(&reqwest::get(&url).await.unwrap().text().await.unwrap()).unwrap();
        v["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|s| s.parse().ok())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn unsafe_term(c: &Child) {
    // SIGTERM: Prometheus shuts down cleanly, as when an operator stops it.
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(c.id().to_string())
        .status();
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' | b'-' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

mod reqwest {
    pub use ::reqwest::*;
    /// A readiness probe without a runtime.
    pub fn blocking_get(url: &str) -> bool {
        let url = url.strip_prefix("http://").unwrap();
        let (host, path) = url.split_once('/').unwrap();
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(host) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(2)));
        if write!(s, "GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").is_err() {
            return false;
        }
        let mut b = String::new();
        let _ = s.read_to_string(&mut b);
        b.starts_with("HTTP/1.1 200") || b.starts_with("HTTP/1.0 200")
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn endpoint(url: String) -> Endpoint {
    let mut e = Endpoint::new("central", url);
    e.min_backoff = Duration::from_millis(200);
    e.max_backoff = Duration::from_secs(2);
    e.timeout = Duration::from_secs(5);
    e.labels = vantage_store::Labels::from([("instance".into(), "test-device".into())]);
    e
}

struct Device {
    store: Arc<Store>,
    shipper: Shipper,
}

impl Device {
    fn start(dir: &Path, url: String) -> Self {
        let store = Arc::new(open(dir));
        let shipper = Shipper::start(
            store.clone(),
            vec![endpoint(url)],
            ShipperOptions {
                poll_interval: Duration::from_millis(200),
                ..ShipperOptions::default()
            },
        )
        .unwrap();
        Self { store, shipper }
    }

    async fn stop(self) {
        self.shipper.stop().await;
        self.store.close();
    }
}

/// What was appended: per ping target, and for the DNS target "dns0" and the trace target
/// "tr0", (timestamp, n) of each round.
#[derive(Default)]
struct Sent {
    ping: BTreeMap<String, Vec<(i64, u64)>>,
    dns: Vec<(i64, u64)>,
    trace: Vec<(i64, u64)>,
}

/// Appends one round per ping target every STEP, and a DNS and a trace round every other
/// STEP, for `d`.
async fn probe_for(store: &Store, d: Duration, sent: &mut Sent, n: &mut u64) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        let ms = now_ms();
        for t in 0..TARGETS {
            let name = format!("t{t}");
            *n += 1;
            store.append(&ping(&name, ms, 1000 + *n), &labels("lab"));
            sent.ping.entry(name).or_default().push((ms, 1000 + *n));
        }
        if (*n / TARGETS as u64).is_multiple_of(2) {
            store.append(&dns("dns0", ms, 1000 + *n), &labels("lab"));
            sent.dns.push((ms, 1000 + *n));
            store.append(&trace("tr0", ms, 1000 + *n), &labels("lab"));
            sent.trace.push((ms, 1000 + *n));
        }
        tokio::time::sleep(STEP).await;
    }
}

async fn wait_drained(store: &Store, shipper: &Shipper) {
    let start = Instant::now();
    loop {
        store.flush().unwrap();
        let backlog = store.backlog(store.cursor("central"));
        let up = shipper.uplink_up() == Some(true);
        if backlog == 0 && up && store.stats().pending == 0 {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "backlog not drained: {backlog}; last error: {:?}",
            shipper.endpoints()[0].last_error.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every appended round is in Prometheus at its own timestamp, once, with its value.
async fn check_all(p: &Prometheus, sent: &Sent, outage: (i64, i64)) {
    let at = now_ms() + 1000;
    let first = sent.ping.values().flatten().map(|(t, _)| *t).min().unwrap();
    let range = ((at - first) / 1000 + 10) as u64;
    check_dns_and_trace(p, sent, outage, at, range).await;
    for (target, rounds) in &sent.ping {
        let got = p
            .raw(
                &format!("vantage_probe_success{{target=\"{target}\",instance=\"test-device\",site=\"lab\",probe=\"ping\"}}"),
                range,
                at,
            )
            .await;
        let want: Vec<i64> = rounds.iter().map(|(t, _)| *t).collect();
        let got_ts: Vec<i64> = got.iter().map(|(t, _)| *t).collect();
        if got_ts != want {
            let missing: Vec<_> = want
                .iter()
                .filter(|t| !got_ts.contains(t))
                .take(10)
                .collect();
            let extra: Vec<_> = got_ts
                .iter()
                .filter(|t| !want.contains(t))
                .take(10)
                .collect();
            panic!(
                "{target}: {} rounds sent, {} in Prometheus; missing {missing:?}, unexpected {extra:?}",
                want.len(),
                got_ts.len()
            );
        }
        // Values too: the RTT of each round is its sequence number in µs.
        let rtts = p
            .raw(
                &format!("vantage_ping_round_rtt_seconds{{target=\"{target}\",stat=\"avg\"}}"),
                range,
                at,
            )
            .await;
        let want_rtt: Vec<(i64, f64)> = rounds
            .iter()
            .filter(|(_, n)| n % 17 != 0)
            .map(|(t, n)| (*t, *n as f64 / 1e6))
            .collect();
        assert_eq!(rtts.len(), want_rtt.len(), "{target}");
        for ((t, v), (wt, wv)) in rtts.iter().zip(&want_rtt) {
            assert_eq!(t, wt);
            assert!((v - wv).abs() < 1e-9, "{target} at {t}: {v} != {wv}");
        }
        // No duplicates or gaps as count_over_time sees them.
        let count = p
            .scalar(
                &format!("count_over_time(vantage_probe_success{{target=\"{target}\"}}[{range}s])"),
                at,
            )
            .await;
        assert_eq!(count, Some(want.len() as f64), "{target}");
    }
}

/// `(timestamp, value)` of a series' raw samples must be exactly `want`.
fn same_points(what: &str, got: &[(i64, f64)], want: &[(i64, f64)]) {
    let ts = |v: &[(i64, f64)]| v.iter().map(|p| p.0).collect::<Vec<_>>();
    assert_eq!(ts(got), ts(want), "{what}: timestamps");
    for ((t, g), (_, w)) in got.iter().zip(want) {
        assert!((g - w).abs() < 1e-9, "{what} at {t}: {g} != {w}");
    }
}

/// The DNS and trace rounds, those of the outage included, are in Prometheus at their own
/// timestamps under the series `/metrics` has for them.
async fn check_dns_and_trace(p: &Prometheus, sent: &Sent, outage: (i64, i64), at: i64, range: u64) {
    let during = |v: &[(i64, u64)]| {
        v.iter()
            .filter(|(t, _)| *t > outage.0 && *t < outage.1)
            .count()
    };
    assert!(
        during(&sent.dns) > 10 && during(&sent.trace) > 10,
        "rounds during the outage"
    );
    let sel = |name: &str, extra: &str| {
        format!(r#"{name}{{target="dns0",site="lab",instance="test-device"{extra}}}"#)
    };
    // Lookup time: n µs for answered rounds (none for timeouts, every 17th).
    let want: Vec<(i64, f64)> = sent
        .dns
        .iter()
        .filter(|(_, n)| !n.is_multiple_of(17))
        .map(|(t, n)| (*t, *n as f64 / 1e6))
        .collect();
    let got = p
        .raw(&sel("vantage_dns_round_lookup_seconds", ""), range, at)
        .await;
    same_points("dns lookup", &got, &want);
    // The rcode series: every round sets NOERROR, 1 for an answered round that is no NXDOMAIN.
    let want: Vec<(i64, f64)> = sent
        .dns
        .iter()
        .map(|(t, n)| {
            let noerror = !n.is_multiple_of(17) && !n.is_multiple_of(13);
            (*t, if noerror { 1.0 } else { 0.0 })
        })
        .collect();
    let got = p
        .raw(&sel("vantage_dns_rcode", r#",rcode="NOERROR""#), range, at)
        .await;
    same_points("dns rcode", &got, &want);
    let got = p
        .raw(&sel("vantage_dns_answer_records", ""), range, at)
        .await;
    assert_eq!(got.len(), sent.dns.len());
    let got = p
        .raw(&sel("vantage_probe_success", r#",probe="dns""#), range, at)
        .await;
    assert_eq!(got.len(), sent.dns.len());

    let sel = |name: &str, extra: &str| {
        format!(r#"{name}{{target="tr0",site="lab",instance="test-device"{extra}}}"#)
    };
    // Hop count: 3 + n % 5.
    let want: Vec<(i64, f64)> = sent
        .trace
        .iter()
        .map(|(t, n)| (*t, (3 + n % 5) as f64))
        .collect();
    let got = p.raw(&sel("vantage_trace_hops", ""), range, at).await;
    same_points("trace hops", &got, &want);
    // The last hop's RTT is n µs; hop 3 is silent unless last.
    let want: Vec<(i64, f64)> = sent
        .trace
        .iter()
        .filter(|(_, n)| 3 + n % 5 == 4)
        .map(|(t, n)| (*t, *n as f64 / 1e6))
        .collect();
    let got = p
        .raw(
            &sel("vantage_trace_hop_rtt_seconds", r#",hop="4""#),
            range,
            at,
        )
        .await;
    let got: Vec<_> = got
        .into_iter()
        .filter(|(t, _)| want.iter().any(|w| w.0 == *t))
        .collect();
    same_points("trace last hop rtt", &got, &want);
    let got = p
        .raw(
            &sel("vantage_trace_hop_loss_ratio", r#",hop="3""#),
            range,
            at,
        )
        .await;
    assert_eq!(got.len(), sent.trace.len());
    let want: Vec<(i64, f64)> = sent
        .trace
        .iter()
        .map(|(t, n)| (*t, if n.is_multiple_of(11) { 1.0 } else { 0.0 }))
        .collect();
    let got = p
        .raw(&sel("vantage_trace_round_path_changed", ""), range, at)
        .await;
    same_points("trace path changed", &got, &want);
}

async fn outage_test(restart_device_midway: bool) {
    if !require(
        std::process::Command::new("prometheus")
            .arg("--version")
            .output()
            .is_ok(),
        "the prometheus package",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut prom = Prometheus::start(&dir.path().join("prom"), free_port());
    let dev_dir = dir.path().join("device");
    std::fs::create_dir_all(&dev_dir).unwrap();
    let mut dev = Device::start(&dev_dir, prom.url());
    let mut sent = Sent::default();
    let mut n = 0u64;

    probe_for(&dev.store, Duration::from_secs(3), &mut sent, &mut n).await;
    wait_drained(&dev.store, &dev.shipper).await;

    // Outage: Prometheus stopped.
    prom.stop();
    let outage_start = now_ms();
    let outage = outage();
    if restart_device_midway {
        probe_for(&dev.store, outage / 2, &mut sent, &mut n).await;
        assert!(dev.store.backlog(dev.store.cursor("central")) > 0);
        assert_eq!(dev.shipper.uplink_up(), Some(false));
        let st = &dev.shipper.endpoints()[0];
        assert!(st.failures.load(std::sync::atomic::Ordering::Relaxed) > 0);
        dev.stop().await;
        dev = Device::start(&dev_dir, prom.url());
        probe_for(&dev.store, outage / 2, &mut sent, &mut n).await;
    } else {
        probe_for(&dev.store, outage, &mut sent, &mut n).await;
        assert_eq!(dev.shipper.uplink_up(), Some(false));
        // The figures behind the backlog alerts move while the endpoint is away.
        let st = &dev.shipper.endpoints()[0];
        assert!(st.backlog.load(std::sync::atomic::Ordering::Relaxed) > 0);
        let oldest = st
            .oldest_unshipped_ms
            .load(std::sync::atomic::Ordering::Relaxed);
        assert!(oldest > 0 && oldest <= outage_start + 1000, "{oldest}");
    }
    let backlog = dev.store.backlog(dev.store.cursor("central"));
    assert!(backlog > 0, "samples wait for the endpoint");

    // Recovery.
    let outage_end = now_ms();
    prom.restart();
    probe_for(&dev.store, Duration::from_secs(2), &mut sent, &mut n).await;
    wait_drained(&dev.store, &dev.shipper).await;
    check_all(&prom, &sent, (outage_start, outage_end)).await;
    let st = &dev.shipper.endpoints()[0];
    assert!(
        st.last_success_ms
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
    eprintln!(
        "outage of {:?}{}: {} rounds, all in Prometheus at their timestamps",
        outage,
        if restart_device_midway {
            " with a device restart"
        } else {
            ""
        },
        n
    );
    dev.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_then_recovery() {
    outage_test(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_with_device_restart() {
    outage_test(true).await;
}

fn sh(dir: &Path, cmd: &str) {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(ok, "{cmd}");
}

/// TLS with a private CA (rustls, ring): accepted with `ca_file`, refused without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_endpoint_with_a_private_ca() {
    if !require(
        Command::new("prometheus").arg("--version").output().is_ok()
            && Command::new("openssl").arg("version").output().is_ok()
            && Command::new("curl").arg("--version").output().is_ok(),
        "the prometheus, openssl and curl packages",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sh(
        d,
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=vantage-test-ca",
    );
    sh(
        d,
        "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout srv.key -out srv.csr -subj /CN=127.0.0.1",
    );
    sh(
        d,
        "printf 'subjectAltName=IP:127.0.0.1\\nbasicConstraints=CA:FALSE\\nextendedKeyUsage=serverAuth\\n' > ext && openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out srv.pem -days 2 -extfile ext",
    );
    std::fs::write(
        d.join("web.yml"),
        format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\n",
            d.join("srv.pem").display(),
            d.join("srv.key").display()
        ),
    )
    .unwrap();
    std::fs::write(d.join("p.yml"), "global:\n  scrape_interval: 1h\n").unwrap();
    let port = free_port();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", d.join("p.yml").display()))
        .arg(format!("--storage.tsdb.path={}", d.join("tsdb").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg(format!("--web.config.file={}", d.join("web.yml").display()))
        .arg("--web.enable-remote-write-receiver")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(d.join("prom.log")).unwrap())
        .spawn()
        .unwrap();
    let _prom = Prometheus {
        child: Some(child),
        port,
        dir: d.to_path_buf(),
    };
    let ready = format!("curl -sf --cacert ca.pem https://127.0.0.1:{port}/-/ready");
    let start = Instant::now();
    while !Command::new("sh")
        .arg("-c")
        .arg(&ready)
        .current_dir(d)
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success()
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "prometheus with TLS did not start"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let store = Arc::new(open(&d.join("dev")));
    for i in 0..50 {
        store.append(&ping("a", now_ms() - 1000 + i, 100), &labels("x"));
    }
    store.flush().unwrap();
    let url = format!("https://127.0.0.1:{port}/api/v1/write");
    let mut good = endpoint(url.clone());
    good.name = "good".into();
    good.tls.ca_file = Some(d.join("ca.pem"));
    let mut bad = endpoint(url);
    bad.name = "untrusted".into();
    let shipper =
        Shipper::start(store.clone(), vec![good, bad], ShipperOptions::default()).unwrap();
    let start = Instant::now();
    loop {
        let e = shipper.endpoints();
        if e[0].samples_sent.load(std::sync::atomic::Ordering::Relaxed) == 50
            && e[1].failures.load(std::sync::atomic::Ordering::Relaxed) > 0
        {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{e:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let e = shipper.endpoints();
    assert_eq!(e[0].failures.load(std::sync::atomic::Ordering::Relaxed), 0);
    assert_eq!(
        e[1].samples_sent.load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    let why = e[1].last_error.lock().unwrap().clone().unwrap_or_default();
    assert!(
        why.to_lowercase().contains("certificate") || why.contains("UnknownIssuer"),
        "{why}"
    );
    assert_eq!(shipper.uplink_up(), Some(false));
    shipper.stop().await;
}

/// Prometheus rolls back a whole request for one sample it cannot take (here a round two days
/// old, beyond the out-of-order window): the shipper splits the request until only that
/// round's samples are refused; every other round lands, and the refusals are counted exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_with_one_sample_too_old_delivers_all_the_others() {
    if !require(
        Command::new("prometheus").arg("--version").output().is_ok(),
        "the prometheus package",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let prom = Prometheus::start(&dir.path().join("prom"), free_port());
    let dev = Device::start(&dir.path().join("device"), prom.url());
    let start = now_ms() - 60_000;
    dev.store.append(&ping("t0", start, 1), &labels("lab"));
    wait_drained(&dev.store, &dev.shipper).await;

    // One batch: 10 rounds of each of 5 targets, and in the middle one round two days old.
    let mut want: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    want.insert("t0".into(), vec![start]);
    for i in 0..10i64 {
        for t in 0..TARGETS {
            let name = format!("t{t}");
            let ts = start + 1000 + i * 1000 + t as i64;
            dev.store
                .append(&ping(&name, ts, 1000 + i as u64), &labels("lab"));
            want.entry(name).or_default().push(ts);
        }
        if i == 5 {
            dev.store
                .append(&ping("old", now_ms() - 48 * 3600 * 1000, 2), &labels("lab"));
        }
    }
    wait_drained(&dev.store, &dev.shipper).await;

    let st = &dev.shipper.endpoints()[0];
    let rejected = st
        .samples_rejected
        .load(std::sync::atomic::Ordering::Relaxed);
    // A ping round with a reply is 10 samples: success, duration, sent, received, duplicates,
    // loss and 4 RTT statistics.
    assert_eq!(rejected, 10, "exactly the old round's samples are refused");
    let why = st
        .last_rejection
        .lock()
        .unwrap()
        .clone()
        .unwrap_or_default();
    assert!(why.contains("target=\"old\""), "{why}");
    let at = now_ms() + 1000;
    for (target, ts) in &want {
        let got = prom
            .raw(
                &format!("vantage_probe_success{{target=\"{target}\",instance=\"test-device\"}}"),
                120,
                at,
            )
            .await;
        let got: Vec<i64> = got.iter().map(|p| p.0).collect();
        assert_eq!(&got, ts, "{target}");
        let rtt = prom
            .raw(
                &format!("vantage_ping_round_rtt_seconds{{target=\"{target}\"}}"),
                120,
                at,
            )
            .await;
        // Every 17th round (n = 1003) timed out: no RTT.
        let answered = ts
            .iter()
            .filter(|&&t| t != start + 1000 + 3000 + t_index(target))
            .count();
        assert_eq!(
            rtt.len(),
            4 * answered,
            "{target}: 4 RTT statistics per answered round"
        );
    }
    eprintln!("refused: {why}");
    dev.stop().await;
}

/// `t3` -> 3.
fn t_index(target: &str) -> i64 {
    target[1..].parse().unwrap()
}
