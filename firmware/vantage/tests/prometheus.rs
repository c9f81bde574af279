//! A real Prometheus (the Debian package) scrapes the daemon; promtool lints the exposition.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;

#[test]
fn prometheus_scrapes_the_daemon_and_sees_success() {
    if !require(
        have("prometheus") && have("promtool"),
        "the prometheus package (prometheus, promtool)",
    ) || !require(
        vantage_core::net::KernelSockets::default().can_open(),
        "permission to open ICMP sockets",
    ) {
        return;
    }
    let dir = TempDir::new("prom");
    let cfg = dir.path("vantage.toml");
    std::fs::write(&cfg, "[[targets]]\nname = \"lo\"\nhost = \"127.0.0.1\"\nprobes = [\"ping\"]\ninterval = \"500ms\"\nlabels = { site = \"lab\" }\n").unwrap();
    let (_daemon, addr) = start_daemon(Some(&cfg), &dir.0);
    wait_until(Duration::from_secs(10), || {
        http_get(addr, "/metrics").is_ok_and(|(_, m)| {
            metric(
                &m,
                r#"vantage_probe_success{probe="ping",site="lab",target="lo"}"#,
            ) == Some(1.0)
        })
    });

    // promtool lints a real scrape.
    let (_, body) = http_get(addr, "/metrics").unwrap();
    let mut lint = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    lint.stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = lint.wait_with_output().unwrap();
    let problems = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && problems.trim().is_empty(),
        "promtool check metrics:\n{problems}"
    );

    let prom_port = free_port();
    let prom_cfg = dir.path("prometheus.yml");
    std::fs::write(
        &prom_cfg,
        format!("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: vantage\n    static_configs:\n      - targets: ['{addr}']\n"),
    )
    .unwrap();
    let prom = Command::new("prometheus")
        .arg(format!("--config.file={}", prom_cfg.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path("prometheus.log")).unwrap())
        .spawn()
        .unwrap();
    let _prom = Proc(prom);
    let prom_addr = format!("127.0.0.1:{prom_port}").parse().unwrap();
    let query = "/api/v1/query?query=vantage_probe_success%7Btarget%3D%22lo%22%2Cprobe%3D%22ping%22%2Csite%3D%22lab%22%7D";
    let mut last = String::new();
    let ok = (0..60).any(|_| {
        std::thread::sleep(Duration::from_millis(500));
        match http_get(prom_addr, query) {
            Ok((200, body)) => {
                last = body;
                last.contains(r#""value":["#) && last.contains(r#","1"]"#)
            }
            Ok((_, body)) => {
                last = body;
                false
            }
            Err(e) => {
                last = e.to_string();
                false
            }
        }
    });
    assert!(
        ok,
        "Prometheus never saw vantage_probe_success=1; last answer: {last}\nlog: {}",
        std::fs::read_to_string(dir.path("prometheus.log")).unwrap_or_default()
    );

    // The scrape itself is healthy.
    let (_, up) = http_get(prom_addr, "/api/v1/query?query=up%7Bjob%3D%22vantage%22%7D").unwrap();
    assert!(up.contains(r#","1"]"#), "{up}");
}
