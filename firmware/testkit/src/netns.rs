//! Network namespaces, veth pairs and running code inside a namespace.

use std::fs::File;
use std::future::Future;
use std::os::fd::AsRawFd;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// A name no other test process and no other test in this process uses: `vt-TAG-PID-N`.
pub fn unique_name(tag: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("vt-{tag}-{}-{n}", std::process::id())
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// A network namespace, deleted (with its interfaces, routes and rules) on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a namespace with its loopback up.
    pub fn new(tag: &str) -> Self {
        let name = unique_name(tag);
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n NAME ARGS...`; panics with ip's message on failure.
    pub fn ip(&self, args: &[&str]) {
        run(Command::new("ip").arg("-n").arg(&self.name).args(args));
    }

    /// A command that runs `program` inside the namespace (`ip netns exec`).
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Runs `args` inside the namespace to completion; panics on failure.
    pub fn exec(&self, args: &[&str]) -> Output {
        let mut c = self.command(args[0]);
        c.args(&args[1..]);
        run(&mut c)
    }

    /// Lets every group open unprivileged ICMP datagram sockets in this namespace (a new
    /// namespace allows none, so only the raw fallback would work).
    pub fn allow_ping_sockets(&self, allow: bool) {
        let range = if allow { "0 2147483647" } else { "1 0" };
        // /proc/sys/net shows the namespace of the thread that opens it.
        self.run(|| std::fs::write("/proc/sys/net/ipv4/ping_group_range", range))
            .unwrap_or_else(|e| panic!("set ping_group_range in {}: {e}", self.name));
    }

    /// The packet counter of the first rule in `chain` of `table` (iptables `-L -v -x`).
    pub fn rule_packets(&self, ipv6: bool, chain: &str) -> u64 {
        let tool = if ipv6 { "ip6tables" } else { "iptables" };
        let out = self.exec(&[tool, "-w", "-L", chain, "-v", "-x", "-n"]);
        let text = String::from_utf8_lossy(&out.stdout);
        // Two header lines, then one line per rule starting with its packet count.
        text.lines()
            .nth(2)
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no rule counter in {tool} -L {chain}:\n{text}"))
    }

    /// Appends an iptables rule (`-A CHAIN ...`) in the namespace.
    pub fn iptables(&self, rule: &[&str]) {
        let mut args = vec!["iptables", "-w"];
        args.extend_from_slice(rule);
        self.exec(&args);
    }

    /// Appends an ip6tables rule in the namespace.
    pub fn ip6tables(&self, rule: &[&str]) {
        let mut args = vec!["ip6tables", "-w"];
        args.extend_from_slice(rule);
        self.exec(&args);
    }

    /// Drops each incoming echo request (IPv4 and IPv6) with probability `p`.
    pub fn drop_echo_requests(&self, p: f64) {
        let p = format!("{p}");
        self.iptables(&[
            "-A",
            "INPUT",
            "-p",
            "icmp",
            "--icmp-type",
            "echo-request",
            "-m",
            "statistic",
            "--mode",
            "random",
            "--probability",
            &p,
            "-j",
            "DROP",
        ]);
        self.ip6tables(&[
            "-A",
            "INPUT",
            "-p",
            "icmpv6",
            "--icmpv6-type",
            "echo-request",
            "-m",
            "statistic",
            "--mode",
            "random",
            "--probability",
            &p,
            "-j",
            "DROP",
        ]);
    }

    /// Enters the namespace on the calling thread (`setns(2)`): sockets it creates from now on
    /// live in the namespace. Meant for threads spawned for that purpose.
    pub fn enter_current_thread(&self) -> std::io::Result<()> {
        let f = File::open(format!("/var/run/netns/{}", self.name))?;
        // SAFETY: a valid namespace fd; setns only changes this thread's namespace.
        if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Runs `f` on a new thread inside the namespace and returns its result (a panic in `f`
    /// is passed on).
    pub fn run<F, R>(&self, f: F) -> R
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        std::thread::scope(|s| {
            let h = s.spawn(|| {
                self.enter_current_thread()
                    .unwrap_or_else(|e| panic!("setns into {}: {e}", self.name));
                f()
            });
            match h.join() {
                Ok(r) => r,
                Err(p) => std::panic::resume_unwind(p),
            }
        })
    }

    /// Runs the future `f` builds on a current-thread Tokio runtime inside the namespace.
    /// Tasks it spawns run on that thread, so their sockets live in the namespace too.
    pub fn block_on<F, Fut, R>(&self, f: F) -> R
    where
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = R>,
        R: Send,
    {
        self.run(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("build a Tokio runtime")
                .block_on(f())
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let out = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stdin(Stdio::null())
            .output();
        if !matches!(&out, Ok(o) if o.status.success()) {
            eprintln!(
                "warning: could not delete network namespace {}: {out:?}",
                self.name
            );
        }
    }
}

/// Two namespaces joined by a veth pair: a `client` that probes and a `server` that answers.
///
/// ```text
///  client  veth0 192.0.2.1/24  2001:db8::1/64 <-> veth0 192.0.2.2/24  2001:db8::2/64  server
/// ```
/// The addresses are documentation ranges, private to these namespaces.
#[derive(Debug)]
pub struct VethPair {
    pub client: Netns,
    pub server: Netns,
}

impl VethPair {
    pub const CLIENT_V4: &'static str = "192.0.2.1";
    pub const SERVER_V4: &'static str = "192.0.2.2";
    pub const CLIENT_V6: &'static str = "2001:db8::1";
    pub const SERVER_V6: &'static str = "2001:db8::2";
    /// An address on the client's subnet that nobody holds: neighbour discovery fails.
    pub const ABSENT_V4: &'static str = "192.0.2.99";

    pub fn new(tag: &str) -> Self {
        let client = Netns::new(&format!("{tag}c"));
        let server = Netns::new(&format!("{tag}s"));
        // Created inside the client namespace, so the names only need to be unique there.
        client.ip(&[
            "link",
            "add",
            "veth0",
            "type",
            "veth",
            "peer",
            "name",
            "veth0",
            "netns",
            server.name(),
        ]);
        for (ns, v4, v6) in [
            (&client, Self::CLIENT_V4, Self::CLIENT_V6),
            (&server, Self::SERVER_V4, Self::SERVER_V6),
        ] {
            ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", "veth0"]);
            // nodad: the address is usable at once instead of after duplicate detection.
            ns.ip(&["addr", "add", &format!("{v6}/64"), "dev", "veth0", "nodad"]);
            ns.ip(&["link", "set", "veth0", "up"]);
        }
        // Fixed neighbour entries: on a fresh link, IPv6 neighbour discovery holds the first
        // packets for one to two seconds, which would show up as RTT in every test.
        let mac = |ns: &Netns| {
            let out =
                run(Command::new("ip").args(["-n", ns.name(), "-o", "link", "show", "veth0"]));
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let mut words = text.split_whitespace();
            words
                .find(|w| *w == "link/ether")
                .and_then(|_| words.next())
                .unwrap_or_else(|| panic!("no MAC address in `{text}`"))
                .to_string()
        };
        let (client_mac, server_mac) = (mac(&client), mac(&server));
        for (ns, peer_mac, v4, v6) in [
            (&client, &server_mac, Self::SERVER_V4, Self::SERVER_V6),
            (&server, &client_mac, Self::CLIENT_V4, Self::CLIENT_V6),
        ] {
            for a in [v4, v6] {
                ns.ip(&[
                    "neigh",
                    "replace",
                    a,
                    "lladdr",
                    peer_mac,
                    "dev",
                    "veth0",
                    "nud",
                    "permanent",
                ]);
            }
        }
        Self { client, server }
    }
}
