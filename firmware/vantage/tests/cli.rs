//! The `vantage` command as a user runs it.

mod support;

use std::process::Command;
use std::time::Duration;

use support::*;

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn version_and_help() {
    let (code, out, _) = run(&["--version"]);
    assert_eq!(code, 0);
    assert_eq!(out.trim(), format!("vantage {}", env!("CARGO_PKG_VERSION")));
    let (code, out, _) = run(&["--help"]);
    assert_eq!(code, 0);
    for word in ["run", "check-config", "ping", "trace", "Usage"] {
        assert!(out.contains(word), "{out}");
    }
    let (code, out, _) = run(&["run", "--help"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("--config") && out.contains("--listen") && out.contains("--data-dir"),
        "{out}"
    );
}

#[test]
fn check_config_accepts_the_sample_and_reports_every_problem() {
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/vantage.toml");
    let (code, out, err) = run(&["check-config", sample]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("OK (2 targets)"), "{out}");

    let dir = TempDir::new("check");
    let bad = dir.path("bad.toml");
    std::fs::write(&bad, "[[targets]]\nname = \"a\"\nhost = \"-c 1000\"\nprobes = [\"ping\"]\n\n[[targets]]\nname = \"a\"\nhost = \"::1\"\nprobes = [\"ping\"]\ninterval = \"0s\"\n").unwrap();
    let (code, _, err) = run(&["check-config", bad.to_str().unwrap()]);
    assert_eq!(code, 1);
    let want = [
        format!(
            "{}:3:8: targets[0].host: must not start with '-'",
            bad.display()
        ),
        format!(
            "{}:10:12: targets[1].interval: \"0s\" is zero; a duration must be positive",
            bad.display()
        ),
        "2 problems found".to_string(),
    ];
    for w in want {
        assert!(err.contains(&w), "missing {w:?} in\n{err}");
    }
    let (code, _, err) = run(&["check-config", "/nonexistent/vantage.toml"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("/nonexistent/vantage.toml: cannot read the file"),
        "{err}"
    );
}

#[test]
fn ping_refuses_hostile_hosts_before_touching_the_network() {
    for host in ["-c 1000", "127.0.0.1; rm -rf /", "$(reboot)"] {
        let (code, _, err) = run(&["ping", "--count", "1", "--", host]);
        assert_eq!(code, 2, "{host}");
        assert!(err.contains("vantage ping: host"), "{err}");
    }
}

#[test]
fn ping_loopback_prints_replies_and_a_summary() {
    if !require(
        vantage_core::net::KernelSockets::default().can_open(),
        "permission to open ICMP sockets",
    ) {
        return;
    }
    let (code, out, err) = run(&["ping", "--count", "3", "--interval", "100ms", "127.0.0.1"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out.matches("bytes from 127.0.0.1: seq=").count(),
        3,
        "{out}"
    );
    assert!(
        out.contains("3 packets transmitted, 3 received, 0.0% packet loss"),
        "{out}"
    );
    assert!(out.contains("rtt min/avg/max/mdev = "), "{out}");
}

#[test]
fn the_daemon_runs_the_embedded_config_and_reloads_on_sighup() {
    if !require(
        vantage_core::net::KernelSockets::default().can_open(),
        "permission to open ICMP sockets",
    ) {
        return;
    }
    let dir = TempDir::new("sighup");
    let cfg = dir.path("vantage.toml");
    std::fs::write(&cfg, "[[targets]]\nname = \"one\"\nhost = \"127.0.0.1\"\nprobes = [\"ping\"]\ninterval = \"200ms\"\n").unwrap();
    let (proc, addr) = start_daemon(Some(&cfg), &dir.0);
    let sent_one = || {
        http_get(addr, "/metrics")
            .ok()
            .and_then(|(_, m)| metric(&m, r#"vantage_ping_packets_sent_total{target="one"}"#))
            .unwrap_or(0.0)
    };
    wait_until(Duration::from_secs(10), || sent_one() >= 5.0);
    let before = sent_one();

    std::fs::write(&cfg, "[[targets]]\nname = \"one\"\nhost = \"127.0.0.1\"\nprobes = [\"ping\"]\ninterval = \"200ms\"\n[[targets]]\nname = \"two\"\nhost = \"127.0.0.1\"\nprobes = [\"ping\"]\ninterval = \"200ms\"\n").unwrap();
    // SAFETY: plain signal to our own child.
    unsafe { libc::kill(proc.0.id() as i32, libc::SIGHUP) };
    wait_until(Duration::from_secs(10), || {
        http_get(addr, "/metrics").is_ok_and(|(_, m)| {
            metric(&m, r#"vantage_probe_success{probe="ping",target="two"}"#) == Some(1.0)
        })
    });
    // "one" kept its state through the reload: its counters did not start over.
    assert!(
        sent_one() >= before,
        "counter of an unchanged target went from {before} to {}",
        sent_one()
    );

    // A broken edit is refused and the daemon keeps probing.
    std::fs::write(&cfg, "[[targets]]\nname = \"one\"\nhost = \"127.0.0.1\"\nprobes = [\"ping\"]\ncolour = \"red\"\n").unwrap();
    let (s, body) = http(addr, "POST", "/-/reload").unwrap();
    assert_eq!(s, 400);
    assert!(body.contains("unknown field `colour`"), "{body}");
    let (_, m) = http_get(addr, "/metrics").unwrap();
    assert_eq!(
        metric(&m, "vantage_config_last_reload_successful"),
        Some(0.0)
    );
    assert_eq!(metric(&m, "vantage_targets"), Some(2.0));

    // Embedded config: no --config at all.
    let dir2 = TempDir::new("embedded");
    let (_p2, addr2) = start_daemon(None, &dir2.0);
    wait_until(Duration::from_secs(10), || {
        http_get(addr2, "/metrics").is_ok_and(|(_, m)| {
            metric(
                &m,
                r#"vantage_probe_success{probe="ping",role="self-test",target="loopback-v4"}"#,
            ) == Some(1.0)
        })
    });
}

#[test]
fn the_daemon_refuses_a_bad_config_at_start_with_the_reason() {
    let dir = TempDir::new("badstart");
    let cfg = dir.path("vantage.toml");
    std::fs::write(
        &cfg,
        "[[targets]]\nname = \"x\"\nhost = \"a b\"\nprobes = [\"ping\"]\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["run", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&dir.0)
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("targets[0].host: contains whitespace"),
        "{err}"
    );
}

#[test]
fn trace_prints_an_mtr_like_table() {
    // UDP traces need no privilege; loopback is the destination at the first hop.
    let (code, out, err) = run(&["trace", "127.0.0.1", "-w", "1s", "-c", "2", "-i", "100ms"]);
    assert_eq!(code, 0, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with(
            "vantage trace to 127.0.0.1 (127.0.0.1): udp, 30 hops max, 3 probes per hop"
        ),
        "{out}"
    );
    for col in [
        "HOP", "HOST", "Loss%", "Snt", "Last", "Avg", "Best", "Wrst", "StDev",
    ] {
        assert!(lines[1].contains(col), "{out}");
    }
    assert!(lines[2].starts_with("  1.  127.0.0.1"), "{out}");
    assert!(
        lines[2].contains("  0.0%    6 "),
        "two cycles of three probes: {out}"
    );
    assert!(
        lines[3].starts_with("destination reached in 1 hop;"),
        "{out}"
    );
}

#[test]
fn trace_refuses_bad_input() {
    for (args, want) in [
        (
            &["trace", "--", "-c 1000"][..],
            "host must not start with '-'",
        ),
        (&["trace", "a;b"][..], "host contains ';'"),
        (
            &["trace", "127.0.0.1", "-f", "9", "-m", "3"][..],
            "first TTL 9 is above the maximum 3",
        ),
        (
            &["trace", "127.0.0.1", "-P", "gre"][..],
            "\"gre\" is not one of udp, icmp, tcp",
        ),
        (
            &["trace", "::1", "--source", "127.0.0.1"][..],
            "not of the same IP version",
        ),
    ] {
        let (code, out, err) = run(args);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

/// `--setup-code-file` (here through its environment variable) makes first-boot setup ask for
/// the code on the file's first line.
#[test]
fn the_daemon_requires_the_setup_code_it_was_given() {
    let dir = TempDir::new("setup-code");
    let code = dir.path("setup-code.txt");
    std::fs::write(&code, "TEST-CODE-1234\n").unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let log = std::fs::File::create(dir.path("daemon.log")).unwrap();
    let child = std::process::Command::new(BIN)
        .args(["run", "--listen", &addr.to_string(), "--data-dir"])
        .arg(&dir.0)
        .env("VANTAGE_SETUP_CODE_FILE", &code)
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let _proc = Proc(child);
    wait_until(Duration::from_secs(10), || {
        http_get(addr, "/-/ready").is_ok_and(|(s, _)| s == 200)
    });
    let (status, state) = http_get(addr, "/api/auth/state").unwrap();
    assert_eq!(status, 200, "{state}");
    assert!(state.contains("\"setup_code_required\":true"), "{state}");
    let json = [("Content-Type", "application/json")];
    let body = r#"{"password": "correct horse battery staple"}"#;
    let (status, _, answer) = http_with(addr, "POST", "/api/auth/setup", &json, body).unwrap();
    assert_eq!(status, 403, "{answer}");
    let body = r#"{"password": "correct horse battery staple", "setup_code": "TEST-CODE-1234"}"#;
    let (status, _, answer) = http_with(addr, "POST", "/api/auth/setup", &json, body).unwrap();
    assert_eq!(status, 201, "{answer}");
}

#[test]
fn tcp_one_shot_connects_and_refuses_bad_options() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            drop(s);
        }
    });
    let target = format!("127.0.0.1:{port}");
    let (code, out, err) = run(&["tcp", &target, "--attempts", "2", "--spacing", "1ms"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("\"connected\": 2"), "{out}");
    assert!(out.contains("\"probe\": \"tcp\""), "{out}");
    let (code, _, err) = run(&["tcp", &target, "--bogus", "1"]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown option --bogus"), "{err}");
    let (code, _, err) = run(&["tcp", "127.0.0.1:0"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("tcp.port: must be between 1 and 65535, got 0"),
        "{err}"
    );
}

#[test]
fn http_one_shot_fetches_and_refuses_unsafe_urls() {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
        }
    });
    let url = format!("http://127.0.0.1:{port}/");
    let (code, out, err) = run(&["http", &url, "--method", "HEAD"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("\"status\": 204"), "{out}");
    assert!(out.contains("\"probe\": \"http\""), "{out}");
    let (code, _, err) = run(&["http", "file:///etc/passwd"]);
    assert_eq!(code, 2);
    assert!(err.contains("scheme \"file\" is not probed"), "{err}");
}

/// Resident memory of a live process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// Wrong logins (each a real argon2id hash with its 19 MiB buffer) give their memory back:
/// the daemon does not keep a freed buffer per hash (it once kept seven, 133 MB, for good).
#[test]
fn wrong_logins_give_the_hash_memory_back() {
    let dir = TempDir::new("login-memory");
    let (proc, addr) = start_daemon(None, &dir.0);
    web_session(addr);
    let pid = proc.0.id();
    let before = rss_kib(pid);
    let json = [("Content-Type", "application/json")];
    // Within the free failures of one address: every login is hashed, none refused early.
    for _ in 0..5 {
        let body = r#"{"password": "not the password at all"}"#;
        let (status, _, answer) = http_with(addr, "POST", "/api/auth/login", &json, body).unwrap();
        assert_eq!(status, 401, "{answer}");
    }
    let grown = rss_kib(pid).saturating_sub(before);
    // Less than one buffer: none of the five is kept.
    assert!(
        grown < 15 * 1024,
        "RSS grew by {grown} KiB after 5 wrong logins"
    );
}
