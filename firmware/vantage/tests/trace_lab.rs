//! The daemon and the `vantage trace` command in namespace labs (root only): the path-change
//! counter through a reroute and through ECMP flapping, the one-shot table against mtr, and
//! its branches through a 3-way split.

#[path = "../../vantage-core/tests/lab/mod.rs"]
mod lab;
mod support;

use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Stdio};
use std::time::Duration;

use lab::{Chain, Diamond, Ecmp, Lab};
use support::*;

/// `vantage run` inside a namespace, listening on that namespace's loopback.
struct NsDaemon<'a> {
    lab: &'a Lab,
    node: usize,
    addr: SocketAddr,
    _proc: Proc,
    _dir: TempDir,
}

impl<'a> NsDaemon<'a> {
    fn start(lab: &'a Lab, node: usize, config: &str) -> Self {
        let dir = TempDir::new("trace-lab");
        let cfg = dir.path("vantage.toml");
        std::fs::write(&cfg, config).unwrap();
        let addr: SocketAddr = "127.0.0.1:9430".parse().unwrap();
        let log = std::fs::File::create(dir.path("daemon.log")).unwrap();
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                lab.ns(node),
                BIN,
                "--log-level",
                "info,vantage::trace=debug",
                "run",
                "--listen",
            ])
            .arg(addr.to_string())
            .arg("--config")
            .arg(&cfg)
            .arg("--data-dir")
            .arg(&dir.0)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let d = NsDaemon {
            lab,
            node,
            addr,
            _proc: Proc(child),
            _dir: dir,
        };
        wait_until(Duration::from_secs(10), || d.get("/-/ready").is_some());
        d
    }

    fn get(&self, path: &str) -> Option<String> {
        let (addr, path) = (self.addr, path.to_string());
        self.lab
            .block(self.node, move || http_get(addr, &path).ok())
            .filter(|(s, _)| *s == 200)
            .map(|(_, b)| b)
    }

    fn metrics(&self) -> String {
        self.get("/metrics").unwrap_or_default()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path("daemon.log")).unwrap_or_default()
    }
}

fn series(target: &str, name: &str) -> String {
    format!("{name}{{target=\"{target}\"}}")
}

fn hop_info(m: &str, target: &str, hop: u8) -> Vec<String> {
    m.lines()
        .filter(|l| {
            l.starts_with("vantage_trace_hop_info{")
                && l.contains(&format!("hop=\"{hop}\""))
                && l.contains(&format!("target=\"{target}\""))
        })
        .filter_map(|l| {
            l.split("address=\"")
                .nth(1)?
                .split('"')
                .next()
                .map(String::from)
        })
        .collect()
}

/// Waits until the target's trace reached the destination with every hop answering.
fn settle(d: &NsDaemon, target: &str, hops: u8) {
    wait_until(Duration::from_secs(20), || {
        let m = d.metrics();
        metric(&m, &series(target, "vantage_trace_hops")) == Some(f64::from(hops))
            && (1..=hops).all(|h| {
                m.contains(&format!(
                    "vantage_trace_hop_loss_ratio{{hop=\"{h}\",target=\"{target}\"}} 0"
                ))
            })
    });
}

#[test]
fn rerouting_a_middle_hop_counts_one_path_change() {
    if !lab::can_build("rerouting_a_middle_hop_counts_one_path_change") {
        return;
    }
    let c = Chain::new("drr");
    let config = format!(
        "[defaults]\ninterval = \"500ms\"\n[defaults.trace]\ntimeout = \"300ms\"\n\n\
         [[targets]]\nname = \"v4\"\nhost = \"{}\"\nprobes = [\"trace\"]\n\n\
         [[targets]]\nname = \"v6\"\nhost = \"{}\"\nprobes = [\"trace\"]\n",
        c.dst(false),
        c.dst(true)
    );
    let d = NsDaemon::start(&c.lab, c.s, &config);
    for t in ["v4", "v6"] {
        settle(&d, t, 5);
    }
    let m = d.metrics();
    for (t, v6) in [("v4", false), ("v6", true)] {
        assert_eq!(
            metric(&m, &series(t, "vantage_trace_path_changes_total")),
            Some(0.0),
            "{m}"
        );
        assert_eq!(
            hop_info(&m, t, 3),
            [c.hops(v6, false)[2].to_string()],
            "{m}"
        );
        assert_eq!(
            metric(
                &m,
                &format!("vantage_probe_success{{probe=\"trace\",target=\"{t}\"}}")
            ),
            Some(1.0)
        );
    }
    let before: Vec<f64> = ["v4", "v6"]
        .iter()
        .map(|t| metric(&m, &series(t, "vantage_trace_path_hash")).unwrap())
        .collect();

    c.reroute(true);
    for (t, v6) in [("v4", false), ("v6", true)] {
        let want = c.hops(v6, true)[2].to_string();
        wait_until(Duration::from_secs(20), || {
            hop_info(&d.metrics(), t, 3) == [want.clone()]
        });
    }
    // Several more traces on the new path: still one change.
    std::thread::sleep(Duration::from_secs(3));
    let m = d.metrics();
    for (i, t) in ["v4", "v6"].iter().enumerate() {
        assert_eq!(
            metric(&m, &series(t, "vantage_trace_path_changes_total")),
            Some(1.0),
            "{t}\n{m}"
        );
        assert_ne!(
            metric(&m, &series(t, "vantage_trace_path_hash")),
            Some(before[i])
        );
        assert_eq!(metric(&m, &series(t, "vantage_trace_hops")), Some(5.0));
    }
}

#[test]
fn a_lost_ecmp_branch_counts_and_steady_branches_count_nothing() {
    if !lab::can_build("a_lost_ecmp_branch_counts_and_steady_branches_count_nothing") {
        return;
    }
    let e = Ecmp::new("decmp");
    let config = format!(
        "[defaults]\ninterval = \"500ms\"\n[defaults.trace]\ntimeout = \"300ms\"\nflows = 16\nprobes_per_hop = 1\n\n\
         [[targets]]\nname = \"v4\"\nhost = \"{}\"\nprobes = [\"trace\"]\n\n\
         [[targets]]\nname = \"v6\"\nhost = \"{}\"\nprobes = [\"trace\"]\n",
        e.dst(false),
        e.dst(true)
    );
    let d = NsDaemon::start(&e.lab, e.s, &config);
    for t in ["v4", "v6"] {
        settle(&d, t, 4);
    }
    for (t, v6) in [("v4", false), ("v6", true)] {
        let mut want: Vec<String> = e.branches(v6).iter().map(IpAddr::to_string).collect();
        want.sort();
        wait_until(Duration::from_secs(10), || {
            let mut got = hop_info(&d.metrics(), t, 2);
            got.sort();
            got == want
        });
    }
    let changes = |m: &str, t: &str| metric(m, &series(t, "vantage_trace_path_changes_total"));
    let paths = |m: &str, t: &str| metric(m, &series(t, "vantage_trace_paths"));
    // Both branches for a few traces, flows moving to new identifiers among them: nothing.
    std::thread::sleep(Duration::from_millis(1500));
    let m = d.metrics();
    for t in ["v4", "v6"] {
        assert_eq!(changes(&m, t), Some(0.0), "{t}\n{}", d.log());
        assert_eq!(paths(&m, t), Some(2.0), "{t}\n{m}");
    }
    // The balancer loses r2b: a change, and one path left; then r2b is back: another.
    e.balance(true, false);
    wait_until(Duration::from_secs(10), || {
        let m = d.metrics();
        ["v4", "v6"]
            .iter()
            .all(|t| changes(&m, t) == Some(1.0) && paths(&m, t) == Some(1.0))
    });
    e.balance(true, true);
    wait_until(Duration::from_secs(10), || {
        let m = d.metrics();
        ["v4", "v6"]
            .iter()
            .all(|t| changes(&m, t) == Some(2.0) && paths(&m, t) == Some(2.0))
    });
}

/// Hop addresses from the `vantage trace` table (`???` is none; extra addresses skipped).
fn parse_table(out: &str) -> Vec<Option<IpAddr>> {
    out.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            w.next()?.strip_suffix('.')?.parse::<u8>().ok()?;
            Some(w.next()?.parse().ok())
        })
        .collect()
}

#[test]
fn the_trace_command_agrees_with_mtr_as_nobody() {
    if !lab::can_build("the_trace_command_agrees_with_mtr_as_nobody")
        || !lab::have_tool("the_trace_command_agrees_with_mtr_as_nobody", "mtr")
        || !lab::have_tool("the_trace_command_agrees_with_mtr_as_nobody", "setpriv")
    {
        return;
    }
    let c = Chain::new("dcli");
    c.lab
        .sysctl(c.s, "net.ipv4.ping_group_range", "0 2147483647");
    c.silence(1);
    for v6 in [false, true] {
        let dst = c.dst(v6).to_string();
        let mut want: Vec<Option<IpAddr>> = c.hops(v6, false).into_iter().map(Some).collect();
        want[1] = None;
        for (proto, mtr_flag) in [("udp", "-u"), ("icmp", "-4"), ("tcp", "-T")] {
            // Neighbour discovery settles within a few tries.
            let mut ours = Vec::new();
            for _ in 0..10 {
                let out = Command::new("ip")
                    .args(["netns", "exec", c.lab.ns(c.s)])
                    .args([
                        "setpriv",
                        "--reuid=65534",
                        "--regid=65534",
                        "--clear-groups",
                    ])
                    .args([BIN, "trace", &dst, "-P", proto, "-w", "500ms", "-m", "8"])
                    .output()
                    .unwrap();
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                assert!(
                    text.contains("unprivileged sockets"),
                    "{proto}: {text}{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                ours = parse_table(&text);
                if ours == want {
                    break;
                }
                std::thread::sleep(Duration::from_millis(300));
            }
            assert_eq!(ours, want, "vantage trace -P {proto} {dst}");
            let fam = if v6 { "-6" } else { "-4" };
            let mut args = vec![
                "mtr", fam, "-n", "--json", "-c", "2", "-i", "0.2", "-Z", "1",
            ];
            args.extend(["-G", "0.5", "-m", "8"]);
            if mtr_flag != "-4" {
                args.push(mtr_flag);
            }
            args.push(&dst);
            let mtr_out = c.lab.exec(c.s, &args);
            let mtr: Vec<Option<IpAddr>> = mtr_out
                .split("\"host\":")
                .skip(1)
                .map(|h| {
                    let v = h.trim_start().trim_start_matches('"');
                    v[..v.find('"').unwrap_or(0)].parse().ok()
                })
                .collect();
            assert_eq!(ours, mtr, "{proto} ipv6={v6}: vantage trace vs mtr");
        }
    }
}

/// Hops from the `vantage trace` table: TTL, every address (the hop's line, then the lines
/// listing its further branches) and the balancing kind in brackets, if any.
fn parse_branches(out: &str) -> Vec<(u8, Vec<IpAddr>, Option<String>)> {
    let mut hops: Vec<(u8, Vec<IpAddr>, Option<String>)> = Vec::new();
    for l in out.lines() {
        let mut w = l.split_whitespace();
        let Some(first) = w.next() else { continue };
        if let Some(ttl) = first.strip_suffix('.').and_then(|t| t.parse().ok()) {
            let addrs = w.next().and_then(|a| a.parse().ok()).into_iter().collect();
            let kind = l.split_once('[').and_then(|(_, k)| k.split_once(']'));
            hops.push((ttl, addrs, kind.map(|(k, _)| k.to_string())));
        } else if let (Ok(a), None, Some(h)) = (first.parse(), w.next(), hops.last_mut()) {
            h.1.push(a);
        }
    }
    hops
}

#[test]
fn the_trace_command_lists_every_branch_of_a_split_with_its_kind() {
    if !lab::can_build("the_trace_command_lists_every_branch_of_a_split_with_its_kind") {
        return;
    }
    let d = Diamond::new("dtlb");
    for v6 in [false, true] {
        let dst = d.dst(v6);
        let mut want = d.branches(v6).to_vec();
        want.sort();
        // Neighbour discovery settles within a few tries; MDA's stopping rule misses a branch
        // of three up to one time in twenty.
        let mut hops = Vec::new();
        for _ in 0..10 {
            let out = Command::new("ip")
                .args(["netns", "exec", d.lab.ns(d.s)])
                .args([BIN, "trace", &dst.to_string(), "-w", "500ms", "-m", "6"])
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            hops = parse_branches(&text);
            if let Some((2, got, _)) = hops.get(1) {
                let mut got = got.clone();
                got.sort();
                if got == want && hops.len() == 4 && hops[3].1 == [dst] {
                    eprintln!("ipv6={v6}:\n{text}");
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        assert_eq!(hops.len(), 4, "ipv6={v6}: {hops:?}");
        let mut got = hops[1].1.clone();
        got.sort();
        assert_eq!(got, want, "ipv6={v6}: hop 2 lists r2a, r2b and r2c");
        assert_eq!(
            hops[1].2.as_deref(),
            Some("per flow"),
            "ipv6={v6}: {hops:?}"
        );
        for h in [&hops[0], &hops[3]] {
            assert_eq!((h.1.len(), &h.2), (1, &None), "ipv6={v6}: {hops:?}");
        }
    }
}
