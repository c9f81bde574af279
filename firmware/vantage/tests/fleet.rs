//! Fleet features against real parts: two daemons in their own network namespaces announce
//! themselves over mDNS across a bridge, `vantage discover` finds them, a real Prometheus
//! scrapes both through http_sd and queries each by its device labels; the uplink probe sees
//! its gateway go away.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Namespaces deleted when dropped (their veths go with them).
struct Netns(Vec<String>);

impl Drop for Netns {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

/// hub (bridge br0, 192.0.2.1/24) with one namespace per device at 192.0.2.1N, default route
/// via the hub.
fn lab(tag: &str, devices: &[&str]) -> (Netns, String, Vec<String>) {
    let pid = std::process::id();
    let hub = format!("vf{tag}{pid}h");
    let mut all = Netns(vec![hub.clone()]);
    ip(&["netns", "add", &hub]);
    ip(&["-n", &hub, "link", "set", "lo", "up"]);
    ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"]);
    ip(&["-n", &hub, "addr", "add", "192.0.2.1/24", "dev", "br0"]);
    ip(&["-n", &hub, "link", "set", "br0", "up"]);
    let mut names = Vec::new();
    for (i, d) in devices.iter().enumerate() {
        let ns = format!("vf{tag}{pid}{d}");
        ip(&["netns", "add", &ns]);
        all.0.push(ns.clone());
        let port = format!("v{d}");
        ip(&[
            "-n", &hub, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ]);
        ip(&["-n", &hub, "link", "set", &port, "master", "br0", "up"]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("192.0.2.1{}/24", i + 1),
            "dev",
            "eth0",
        ]);
        ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        ip(&["-n", &ns, "route", "add", "default", "via", "192.0.2.1"]);
        names.push(ns);
    }
    (all, hub, names)
}

fn spawn_in(ns: &str, log: &Path, args: &[&str]) -> Proc {
    let child = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    Proc(child)
}

/// GET inside a namespace (the test process itself stays in the host's).
fn get_in(ns: &str, url: &str) -> String {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "curl",
            "-sS",
            "--max-time",
            "5",
            "-g",
            url,
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn query_in(ns: &str, prom: &str, q: &str) -> String {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "curl",
            "-sS",
            "--max-time",
            "5",
            "--data-urlencode",
        ])
        .arg(format!("query={q}"))
        .arg(format!("http://{prom}/api/v1/query"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn wait_for(limit: Duration, what: &str, mut f: impl FnMut() -> Result<(), String>) {
    let start = std::time::Instant::now();
    loop {
        match f() {
            Ok(()) => return,
            Err(last) if start.elapsed() > limit => {
                panic!("{what}: not within {limit:?}; last: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

#[test]
fn prometheus_discovers_two_namespaced_daemons_over_mdns_and_sees_their_uplinks() {
    if !require(is_root(), "root (network namespaces)")
        || !require(
            have("prometheus") && have("curl"),
            "the prometheus and curl packages",
        )
    {
        return;
    }
    let dir = TempDir::new("fleet");
    let (_netns, hub, devs) = lab("d", &["a", "b"]);
    let mut daemons = Vec::new();
    for (i, (ns, site)) in devs.iter().zip(["north", "south"]).enumerate() {
        let name = ["dev-a", "dev-b"][i];
        // dev-a also watches an upstream host (the hub again: this lab has nothing beyond it).
        let upstream = if i == 0 {
            "upstream = \"192.0.2.1\"\n"
        } else {
            ""
        };
        let cfg = dir.path(&format!("{name}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "[device]\nname = \"{name}\"\nlabels = {{ site = \"{site}\", room = \"r{i}\" }}\n\
                 [discovery]\n[uplink]\ninterval = \"1s\"\ntimeout = \"500ms\"\n{upstream}\
                 [[targets]]\nname = \"lo\"\nhost = \"127.0.0.1\"\nprobes = [\"ping\"]\n"
            ),
        )
        .unwrap();
        let data = dir.path(&format!("{name}-data"));
        std::fs::create_dir_all(&data).unwrap();
        daemons.push(spawn_in(
            ns,
            &dir.path(&format!("{name}.log")),
            &[
                BIN,
                "run",
                "--config",
                cfg.to_str().unwrap(),
                "--listen",
                "0.0.0.0:9430",
                "--data-dir",
                data.to_str().unwrap(),
            ],
        ));
    }
    let logs = |d: &TempDir| {
        ["dev-a.log", "dev-b.log", "discover.log", "prometheus.log"]
            .iter()
            .map(|f| {
                format!(
                    "--- {f}\n{}",
                    std::fs::read_to_string(d.path(f)).unwrap_or_default()
                )
            })
            .collect::<String>()
    };

    for ns in &devs {
        wait_for(Duration::from_secs(20), "daemon ready", || {
            let r = get_in(ns, "http://127.0.0.1:9430/-/ready");
            if r.contains("Ready") {
                Ok(())
            } else {
                Err(logs(&dir))
            }
        });
    }

    // file_sd, one shot: both devices with their TXT metadata.
    let sd_file = dir.path("vantage.json");
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &hub,
            BIN,
            "discover",
            "--timeout",
            "4s",
            "--once",
            "--file-sd",
        ])
        .arg(&sd_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sd: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&sd_file).unwrap()).unwrap();
    let groups = sd.as_array().unwrap();
    assert_eq!(groups.len(), 2, "file_sd: {sd}\n{}", logs(&dir));
    assert_eq!(groups[0]["targets"][0], "192.0.2.11:9430", "{sd}");
    assert_eq!(groups[0]["labels"]["__meta_vantage_device"], "dev-a");
    assert_eq!(groups[0]["labels"]["__meta_vantage_site"], "north");
    assert_eq!(
        groups[0]["labels"]["__meta_vantage_version"],
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(groups[0]["labels"]["__metrics_path__"], "/metrics");
    assert_eq!(groups[1]["targets"][0], "192.0.2.12:9430", "{sd}");

    // The table for people.
    let out = Command::new("ip")
        .args(["netns", "exec", &hub, BIN, "discover", "--timeout", "3s"])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row = table
        .lines()
        .find(|l| l.starts_with("dev-b "))
        .unwrap_or_else(|| panic!("{table}"));
    for want in [
        "192.0.2.12:9430",
        env!("CARGO_PKG_VERSION"),
        "south",
        "room=r1",
    ] {
        assert!(row.contains(want), "{want} missing in {row:?}");
    }

    // http_sd, long-running, feeding a real Prometheus in the hub namespace.
    let _discover = spawn_in(
        &hub,
        &dir.path("discover.log"),
        &[BIN, "discover", "--http-sd", "127.0.0.1:9431"],
    );
    let prom_cfg = dir.path("prometheus.yml");
    std::fs::write(
        &prom_cfg,
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
         scrape_configs:\n  - job_name: vantage\n    http_sd_configs:\n      - url: http://127.0.0.1:9431/http_sd\n        refresh_interval: 1s\n\
         \x20   relabel_configs:\n      - source_labels: [__meta_vantage_device]\n        target_label: instance\n",
    )
    .unwrap();
    let tsdb = dir.path("tsdb");
    let _prom = spawn_in(
        &hub,
        &dir.path("prometheus.log"),
        &[
            "prometheus",
            &format!("--config.file={}", prom_cfg.display()),
            &format!("--storage.tsdb.path={}", tsdb.display()),
            "--web.listen-address=127.0.0.1:9090",
        ],
    );
    let prom = "127.0.0.1:9090";
    wait_for(
        Duration::from_secs(40),
        "Prometheus scrapes both devices",
        || {
            let r = query_in(&hub, prom, "up{job=\"vantage\"} == 1");
            let n = r.matches("\"instance\"").count();
            if n == 2 {
                Ok(())
            } else {
                Err(format!("{r}\n{}", logs(&dir)))
            }
        },
    );
    for (dev, site, room) in [("dev-a", "north", "r0"), ("dev-b", "south", "r1")] {
        let q = format!(
            "vantage_probe_success{{device=\"{dev}\",site=\"{site}\",room=\"{room}\",target=\"lo\"}}"
        );
        wait_for(Duration::from_secs(20), &q, || {
            let r = query_in(&hub, prom, &q);
            if r.contains(&format!("\"instance\":\"{dev}\"")) && r.contains(",\"1\"]") {
                Ok(())
            } else {
                Err(r)
            }
        });
        // Device labels are on the daemon-wide series too, not only on targets'.
        let r = query_in(
            &hub,
            prom,
            &format!("vantage_build_info{{device=\"{dev}\",site=\"{site}\"}}"),
        );
        assert!(r.contains("\"result\":[{"), "{r}");
    }

    // Uplink: both gateways answer; then the hub drops dev-a's pings and only dev-a goes down.
    for dev in ["dev-a", "dev-b"] {
        let q = format!("vantage_uplink_gateway_up{{device=\"{dev}\",family=\"ipv4\"}}");
        wait_for(Duration::from_secs(20), &q, || {
            let r = query_in(&hub, prom, &q);
            if r.contains(",\"1\"]") {
                Ok(())
            } else {
                Err(r)
            }
        });
    }
    wait_for(Duration::from_secs(20), "dev-a's upstream up", || {
        let r = query_in(
            &hub,
            prom,
            "vantage_uplink_upstream_up{device=\"dev-a\",upstream=\"192.0.2.1\"} == 1",
        );
        if r.contains("\"result\":[{") {
            Ok(())
        } else {
            Err(r)
        }
    });
    let gw_info = get_in(&devs[0], "http://127.0.0.1:9430/metrics");
    assert!(
        gw_info.contains("vantage_uplink_gateway_info{")
            && gw_info.contains("gateway=\"192.0.2.1\""),
        "{gw_info}"
    );
    let ok = Command::new("ip")
        .args([
            "netns",
            "exec",
            &hub,
            "iptables",
            "-A",
            "INPUT",
            "-s",
            "192.0.2.11",
            "-p",
            "icmp",
            "-j",
            "DROP",
        ])
        .status()
        .unwrap();
    assert!(ok.success());
    wait_for(Duration::from_secs(20), "dev-a's uplink down", || {
        let r = query_in(
            &hub,
            prom,
            "vantage_uplink_gateway_up{device=\"dev-a\"} == 0",
        );
        if r.contains("\"result\":[{") {
            Ok(())
        } else {
            Err(r)
        }
    });
    wait_for(Duration::from_secs(20), "dev-a's upstream down", || {
        let r = query_in(
            &hub,
            prom,
            "vantage_uplink_upstream_up{device=\"dev-a\",upstream=\"192.0.2.1\"} == 0",
        );
        if r.contains("\"result\":[{") {
            Ok(())
        } else {
            Err(r)
        }
    });
    let r = query_in(&hub, prom, "vantage_uplink_gateway_up{device=\"dev-b\"}");
    assert!(r.contains(",\"1\"]"), "dev-b's uplink stays up: {r}");
    // Loopback targets keep working: the device tells its own uplink from its targets.
    let r = get_in(&devs[0], "http://127.0.0.1:9430/metrics");
    assert!(r.contains("vantage_probe_success{device=\"dev-a\",probe=\"ping\",room=\"r0\",site=\"north\",target=\"lo\"} 1"), "{r}");

    // A renamed device (config reload) is announced under its new name at once.
    let cfg_a = dir.path("dev-a.toml");
    let text = std::fs::read_to_string(&cfg_a)
        .unwrap()
        .replace("name = \"dev-a\"", "name = \"dev-a2\"");
    std::fs::write(&cfg_a, text).unwrap();
    // SAFETY: kill has no memory preconditions; the pid is our own child's.
    unsafe { libc::kill(daemons[0].0.id() as i32, libc::SIGHUP) };
    wait_for(Duration::from_secs(20), "dev-a renamed in http_sd", || {
        let r = get_in(&hub, "http://127.0.0.1:9431/http_sd");
        if r.contains("\"dev-a2\"") && !r.contains("\"dev-a\"") {
            Ok(())
        } else {
            Err(r)
        }
    });

    // A device that goes away (goodbye packet) drops out of http_sd.
    // SAFETY: kill has no memory preconditions; the pid is our own child's.
    unsafe { libc::kill(daemons[1].0.id() as i32, libc::SIGTERM) };
    wait_for(Duration::from_secs(20), "dev-b leaves http_sd", || {
        let r = get_in(&hub, "http://127.0.0.1:9431/http_sd");
        if r.contains("192.0.2.11") && !r.contains("192.0.2.12") {
            Ok(())
        } else {
            Err(r)
        }
    });
}
