//! The status LEDs driven by the real daemon, against a fake `/sys/class/leds` tree.

mod support;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// A fake LED class directory with three GPIO-style LEDs.
fn fake_leds(root: &Path) {
    for name in ["green", "amber", "red"] {
        let d = root.join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("brightness"), "0").unwrap();
        std::fs::write(d.join("max_brightness"), "1").unwrap();
        std::fs::write(d.join("trigger"), "none [mmc0] timer heartbeat").unwrap();
    }
}

fn read(root: &Path, led: &str, file: &str) -> String {
    std::fs::read_to_string(root.join(led).join(file))
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn lit(root: &Path, led: &str) -> bool {
    read(root, led, "brightness") == "1"
}

fn leds_config(root: &Path, targets: &str) -> String {
    format!(
        r#"
[leds]
backend = "sysfs"
sysfs_root = "{}"
identify_timeout = "3s"

[[leds.led]]
role = "health"
name = "green"

[[leds.led]]
role = "targets"
name = "amber"

[[leds.led]]
role = "system"
name = "red"
{targets}"#,
        root.display()
    )
}

/// Samples `led` every 5 ms and counts its rising edges, until there are `want` of them or
/// `limit` has passed.
fn flashes(root: &Path, led: &str, want: usize, limit: Duration) -> usize {
    let start = Instant::now();
    let mut last = lit(root, led);
    let mut n = 0;
    while n < want && start.elapsed() < limit {
        let now = lit(root, led);
        if now && !last {
            n += 1;
        }
        last = now;
        std::thread::sleep(Duration::from_millis(5));
    }
    n
}

/// Stays true for all of `over`.
fn holds(over: Duration, f: impl Fn() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < over {
        if !f() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

fn sigterm_and_wait(p: &mut Proc) {
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(p.0.id() as i32, libc::SIGTERM) };
    let start = Instant::now();
    while p.0.try_wait().unwrap().is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "daemon did not stop"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn assert_all_dark(root: &Path) {
    for led in ["green", "amber", "red"] {
        assert_eq!(read(root, led, "brightness"), "0", "{led} after shutdown");
        assert_eq!(read(root, led, "trigger"), "none", "{led} after shutdown");
    }
}

/// All good, identify and shutdown, without root (no targets: nothing to ping).
#[test]
fn daemon_drives_the_led_class() {
    let dir = TempDir::new("leds");
    let root = dir.path("leds");
    fake_leds(&root);
    let cfg = dir.path("vantage.toml");
    std::fs::write(&cfg, leds_config(&root, "")).unwrap();
    let (mut daemon, addr) = start_daemon(Some(&cfg), &dir.0);
    // The kernel trigger the LED had (mmc0) is switched off, and all good is green steady.
    wait_until(Duration::from_secs(10), || {
        lit(&root, "green") && !lit(&root, "amber") && !lit(&root, "red")
    });
    assert_eq!(read(&root, "green", "trigger"), "none");
    assert!(holds(Duration::from_millis(1200), || lit(&root, "green")));

    let (status, body) = http(addr, "POST", "/api/identify?seconds=60").unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"identify_seconds\":60"), "{body}");
    // Red, dark while all is good, blinks. Its rate (5 Hz) and the time-out are the driver's
    // unit tests: counted against the wall clock here, a busy machine would make them flaky.
    let n = flashes(&root, "red", 3, Duration::from_secs(20));
    assert_eq!(n, 3, "red flashed {n} times in 20 s of identify");
    let (_, leds) = http_get(addr, "/api/leds").unwrap();
    assert!(leds.contains("\"identify\""), "{leds}");
    let (_, metrics) = http_get(addr, "/metrics").unwrap();
    assert_eq!(
        metric(
            &metrics,
            "vantage_led_pattern{led=\"amber\",pattern=\"fast_blink\",role=\"targets\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    // `seconds=0` ends it.
    let (status, body) = http(addr, "POST", "/api/identify?seconds=0").unwrap();
    assert_eq!(status, 200, "{body}");
    wait_until(Duration::from_secs(10), || {
        holds(Duration::from_millis(300), || {
            lit(&root, "green") && !lit(&root, "red")
        })
    });
    let (status, _) = http(addr, "POST", "/api/identify?seconds=soon").unwrap();
    assert_eq!(status, 400);

    sigterm_and_wait(&mut daemon);
    assert_all_dark(&root);
}

#[test]
fn leds_command_sets_the_boot_pattern_and_turns_off() {
    let dir = TempDir::new("leds-cmd");
    let root = dir.path("leds");
    fake_leds(&root);
    let cfg = dir.path("vantage.toml");
    std::fs::write(&cfg, leds_config(&root, "")).unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(["leds", "--config", cfg.to_str().unwrap()])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let out = run(&["boot"]);
    assert!(out.contains("green (health): slow_blink"), "{out}");
    // The kernel blinks it from now on, without any process.
    assert_eq!(read(&root, "green", "trigger"), "timer");
    assert_eq!(read(&root, "green", "delay_on"), "500");
    assert_eq!(read(&root, "green", "delay_off"), "500");
    assert_eq!(read(&root, "amber", "trigger"), "none");
    let out = run(&["test", "--each", "20ms"]);
    assert_eq!(out.lines().count(), 9, "{out}");
    assert!(
        out.contains("Identify: green=fast_blink amber=fast_blink red=fast_blink"),
        "{out}"
    );
    run(&["off"]);
    assert_all_dark(&root);
}

#[test]
fn leds_command_reads_the_config_the_daemon_runs() {
    // As the image's boot unit runs it: --data-dir and --default-config, no --config. The
    // page-saved file in the data directory wins over the packaged default.
    let dir = TempDir::new("leds-src");
    let root = dir.path("leds");
    fake_leds(&root);
    let data = dir.path("data");
    std::fs::create_dir_all(&data).unwrap();
    let packaged = dir.path("packaged.toml");
    std::fs::write(
        &packaged,
        "[[targets]]\nname = \"l\"\nhost = \"127.0.0.1\"\nprobes = [\"ping\"]\n",
    )
    .unwrap();
    let boot = || {
        let out = Command::new(BIN)
            .env_remove("VANTAGE_CONFIG")
            .env_remove("STATE_DIRECTORY")
            .args(["leds", "--data-dir", data.to_str().unwrap()])
            .args(["--default-config", packaged.to_str().unwrap(), "boot"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let out = boot();
    assert!(out.contains("no status LEDs configured"), "{out}");
    assert!(out.contains("packaged.toml"), "{out}");
    std::fs::write(data.join("vantage.toml"), leds_config(&root, "")).unwrap();
    let out = boot();
    assert!(out.contains("green (health): slow_blink"), "{out}");
    assert_eq!(read(&root, "green", "trigger"), "timer");
    // --config and --default-config together are refused, naming both.
    let out = Command::new(BIN)
        .args([
            "leds",
            "--config",
            "a.toml",
            "--default-config",
            "b.toml",
            "off",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--config") && err.contains("--default-config"),
        "{err}"
    );
}

/// Network namespaces and a veth pair, removed on drop.
struct Net {
    daemon_ns: String,
    peer_ns: String,
}

impl Net {
    fn new() -> Self {
        let id = std::process::id();
        let net = Net {
            daemon_ns: format!("vleds{id}a"),
            peer_ns: format!("vleds{id}b"),
        };
        let (a, b) = (&net.daemon_ns, &net.peer_ns);
        for args in [
            vec!["netns", "add", a],
            vec!["netns", "add", b],
            vec!["-n", a, "link", "set", "lo", "up"],
            vec!["-n", b, "link", "set", "lo", "up"],
            vec![
                "-n", a, "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", b,
            ],
            vec!["-n", a, "addr", "add", "192.0.2.1/24", "dev", "va"],
            vec!["-n", b, "addr", "add", "192.0.2.2/24", "dev", "vb"],
            vec!["-n", a, "link", "set", "va", "up"],
            vec!["-n", b, "link", "set", "vb", "up"],
        ] {
            ip(&args);
        }
        net
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in [&self.daemon_ns, &self.peer_ns] {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(out.status.success(), "ip {args:?}: {out:?}");
}

/// The issue's scenario: a target in a network namespace goes down (veth link down) and the
/// amber LED's files change within one probe interval (plus the round's timeout); it comes
/// back; systemd hears READY, WATCHDOG pings and STOPPING.
#[test]
fn target_down_lights_amber_within_one_probe_interval() {
    if !require(is_root(), "root (network namespaces)") || !require(have("ip"), "iproute2") {
        return;
    }
    let net = Net::new();
    let dir = TempDir::new("leds-netns");
    let root = dir.path("leds");
    fake_leds(&root);
    let interval = Duration::from_secs(1);
    let timeout = Duration::from_millis(300);
    // Two targets, one of them on loopback, so one failing is "some targets": amber steady.
    let cfg = dir.path("vantage.toml");
    std::fs::write(
        &cfg,
        leds_config(
            &root,
            r#"
[defaults]
interval = "1s"
[defaults.ping]
timeout = "300ms"

[[targets]]
name = "peer"
host = "192.0.2.2"
probes = ["ping"]

[[targets]]
name = "self"
host = "127.0.0.1"
probes = ["ping"]
"#,
        ),
    )
    .unwrap();
    let sock_path = dir.path("notify.sock");
    let notify = UnixDatagram::bind(&sock_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let log = std::fs::File::create(dir.path("daemon.log")).unwrap();
    let child = Command::new("ip")
        .args(["netns", "exec", &net.daemon_ns, BIN, "run", "--listen"])
        .arg("127.0.0.1:9430")
        .arg("--config")
        .arg(&cfg)
        .arg("--data-dir")
        .arg(dir.path("data"))
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "1000000")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut daemon = Proc(child);
    let mut buf = [0u8; 128];
    let mut next = || {
        let n = notify.recv(&mut buf).expect("a message on NOTIFY_SOCKET");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert_eq!(next(), "READY=1");
    wait_until(Duration::from_secs(10), || {
        holds(Duration::from_millis(1500), || {
            lit(&root, "green") && !lit(&root, "amber") && !lit(&root, "red")
        })
    });
    // The watchdog is pinged every half timeout while healthy.
    let t = Instant::now();
    let mut pings = 0;
    while t.elapsed() < Duration::from_millis(1600) {
        if next() == "WATCHDOG=1" {
            pings += 1;
        }
    }
    assert!(pings >= 2, "{pings} watchdog pings in 1.6 s");

    ip(&["-n", &net.peer_ns, "link", "set", "vb", "down"]);
    let down = Instant::now();
    wait_until(interval + timeout + Duration::from_secs(2), || {
        lit(&root, "amber")
    });
    let latency = down.elapsed();
    eprintln!("amber lit {latency:?} after the link went down");
    assert!(
        latency <= interval + timeout + Duration::from_millis(700),
        "amber lit after {latency:?}; want within one interval ({interval:?}) plus the timeout"
    );
    // Some targets failing: amber steady, green steady, red dark.
    assert!(holds(Duration::from_millis(1500), || {
        lit(&root, "amber") && lit(&root, "green") && !lit(&root, "red")
    }));

    ip(&["-n", &net.peer_ns, "link", "set", "vb", "up"]);
    let up = Instant::now();
    wait_until(interval + timeout + Duration::from_secs(3), || {
        !lit(&root, "amber")
    });
    eprintln!("amber dark {:?} after the link came up", up.elapsed());

    sigterm_and_wait(&mut daemon);
    let mut rest = Vec::new();
    notify
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    while let Ok(n) = notify.recv(&mut buf) {
        rest.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert!(rest.iter().any(|m| m == "STOPPING=1"), "{rest:?}");
    assert_all_dark(&root);
    drop(net);
}
