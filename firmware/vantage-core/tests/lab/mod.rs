//! Network namespaces wired into labs of routers, built and torn down by the tests.
//!
//! The namespaces are the test kit's (`vantage_testkit::Netns`: unique names, deleted on drop,
//! also when a test fails); this module wires several of them into chains and ECMP labs with
//! forwarding, routes and per-hop delay. Code runs inside a namespace on a thread of its own
//! ([`Lab::run`]): a thread's network namespace and credentials are its own, so the rest of
//! the test process is untouched.

#![allow(dead_code)]

use std::future::Future;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

use vantage_testkit::{DelayQueue, Netns, REQUIRE_ROOT_ENV};

/// Whether this process can build labs; prints why not (and skips) unless CI forbids it.
pub fn can_build(test: &str) -> bool {
    vantage_testkit::root_or_skip(test) && have_tool(test, "nft")
}

/// Whether a tool the test needs or compares against is installed; missing tools fail under
/// CI (`VANTAGE_REQUIRE_ROOT_TESTS=1`).
pub fn have_tool(test: &str, tool: &str) -> bool {
    let Some(missing) = vantage_testkit::missing_tools(&[tool]) else {
        return true;
    };
    if std::env::var(REQUIRE_ROOT_ENV).as_deref() == Ok("1") {
        panic!("{test}: `{missing}` is not installed (scripts/deps.d lists it)");
    }
    eprintln!("SKIPPED {test}: `{missing}` is not installed");
    false
}

pub fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[derive(Debug, Clone)]
pub struct Link {
    pub a: usize,
    pub b: usize,
    pub a_if: String,
    pub b_if: String,
    /// Subnet number: 10.200.N.0/24 and fd00:200:N::/64; `a` is .1 / ::1, `b` is .2 / ::2.
    pub net: u8,
}

/// Who runs the code in a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum As {
    Root,
    /// User and group `nobody`, with no capabilities.
    Nobody,
}

#[derive(Debug)]
pub struct Lab {
    tag: String,
    nodes: Vec<Netns>,
    names: Vec<String>,
    pub links: Vec<Link>,
    /// Helper threads running in the lab's namespaces, stopped before it is torn down.
    helpers: Vec<(
        std::sync::Arc<std::sync::atomic::AtomicBool>,
        std::thread::JoinHandle<()>,
    )>,
    delays: Vec<DelayQueue>,
    /// Held for the lab's life; released after the teardown.
    _turn: Turn,
}

/// Labs run side by side, except one that measures time: it waits until it is alone, since the
/// delay holders' timing suffers when other labs flood their namespaces at the same moment.
static TURNS: std::sync::RwLock<()> = std::sync::RwLock::new(());

#[derive(Debug)]
#[allow(dead_code)]
enum Turn {
    Shared(std::sync::RwLockReadGuard<'static, ()>),
    Alone(std::sync::RwLockWriteGuard<'static, ()>),
}

impl Lab {
    pub fn new(tag: &str) -> Self {
        let turn = Turn::Shared(TURNS.read().unwrap_or_else(|e| e.into_inner()));
        Self::with_turn(tag, turn)
    }

    /// A lab that runs while no other lab does (timing measurements).
    pub fn alone(tag: &str) -> Self {
        let turn = Turn::Alone(TURNS.write().unwrap_or_else(|e| e.into_inner()));
        Self::with_turn(tag, turn)
    }

    fn with_turn(tag: &str, turn: Turn) -> Self {
        Self {
            tag: tag.to_string(),
            nodes: Vec::new(),
            names: Vec::new(),
            links: Vec::new(),
            helpers: Vec::new(),
            delays: Vec::new(),
            _turn: turn,
        }
    }

    /// Adds a namespace. Routers forward and answer without rate limits.
    pub fn node(&mut self, name: &str, router: bool) -> usize {
        self.nodes.push(Netns::new(&format!("{}-{name}", self.tag)));
        self.names.push(name.to_string());
        let i = self.nodes.len() - 1;
        // No duplicate address detection: addresses (link-local ones too) work at once.
        self.sysctl(i, "net.ipv6.conf.all.accept_dad", "0");
        self.sysctl(i, "net.ipv6.conf.default.accept_dad", "0");
        // No ICMP rate limits: tests trace again and again and count every answer (a Linux
        // host answers 6 probes at once, then one a second).
        for (k, v) in [
            ("net.ipv4.icmp_ratelimit", "0"),
            ("net.ipv6.icmp.ratelimit", "0"),
            ("net.ipv4.icmp_msgs_per_sec", "100000"),
            ("net.ipv4.icmp_msgs_burst", "100000"),
        ] {
            self.sysctl(i, k, v);
        }
        if router {
            for (k, v) in [
                ("net.ipv4.ip_forward", "1"),
                ("net.ipv6.conf.all.forwarding", "1"),
                // Answer from the interface the probe came in on, as traceroute users expect.
                ("net.ipv4.icmp_errors_use_inbound_ifaddr", "1"),
            ] {
                self.sysctl(i, k, v);
            }
        }
        i
    }

    pub fn by_name(&self, name: &str) -> usize {
        self.names.iter().position(|n| n == name).expect(name)
    }

    pub fn ns(&self, node: usize) -> &str {
        self.nodes[node].name()
    }

    /// Holds every packet `node` forwards or sends for `delay` (an NFQUEUE holder; the
    /// kernels we run on have no netem), so a hop behind k such nodes answers 2k + 1 delays
    /// later.
    pub fn delay(&mut self, node: usize, delay: Duration) {
        let queue = 10 + self.delays.len() as u16;
        // The holder binds first: packets sent to an unbound queue are dropped.
        self.delays.push(DelayQueue::start(
            &self.nodes[node],
            queue,
            delay,
            Duration::ZERO,
        ));
        let q = queue.to_string();
        for tool in ["iptables", "ip6tables"] {
            for chain in ["FORWARD", "OUTPUT"] {
                self.exec(
                    node,
                    &[tool, "-A", chain, "-j", "NFQUEUE", "--queue-num", &q],
                );
            }
        }
    }

    /// A veth pair between two nodes with an IPv4 and an IPv6 subnet.
    pub fn link(&mut self, a: usize, b: usize) -> usize {
        let net = self.links.len() as u8;
        let (a_if, b_if) = (format!("e{net}a"), format!("e{net}b"));
        sh(&[
            "ip",
            "link",
            "add",
            &a_if,
            "netns",
            self.nodes[a].name(),
            "type",
            "veth",
            "peer",
            "name",
            &b_if,
            "netns",
            self.nodes[b].name(),
        ]);
        for (node, ifname, host) in [(a, &a_if, 1), (b, &b_if, 2)] {
            self.ip(
                node,
                &[
                    "addr",
                    "add",
                    &format!("10.200.{net}.{host}/24"),
                    "dev",
                    ifname,
                ],
            );
            self.ip(
                node,
                &[
                    "addr",
                    "add",
                    &format!("fd00:200:{net}::{host}/64"),
                    "dev",
                    ifname,
                    "nodad",
                ],
            );
            self.ip(node, &["link", "set", ifname, "up"]);
        }
        self.links.push(Link {
            a,
            b,
            a_if,
            b_if,
            net,
        });
        self.links.len() - 1
    }

    /// The address of `node` on `link`.
    pub fn addr(&self, link: usize, node: usize, v6: bool) -> IpAddr {
        let l = &self.links[link];
        let host = if l.a == node {
            1
        } else {
            assert_eq!(l.b, node, "node {node} is not on link {link}");
            2
        };
        if v6 {
            format!("fd00:200:{}::{host}", l.net).parse().unwrap()
        } else {
            format!("10.200.{}.{host}", l.net).parse().unwrap()
        }
    }

    pub fn subnet(&self, link: usize, v6: bool) -> String {
        let net = self.links[link].net;
        if v6 {
            format!("fd00:200:{net}::/64")
        } else {
            format!("10.200.{net}.0/24")
        }
    }

    /// `ip -n NS ARGS`.
    pub fn ip(&self, node: usize, args: &[&str]) -> String {
        let mut v = vec!["ip", "-n", self.nodes[node].name()];
        v.extend_from_slice(args);
        sh(&v)
    }

    /// `ip -n NS -6 ARGS` when `v6`.
    pub fn ip_fam(&self, node: usize, v6: bool, args: &[&str]) -> String {
        let mut v = vec!["ip", "-n", self.nodes[node].name()];
        if v6 {
            v.push("-6");
        }
        v.extend_from_slice(args);
        sh(&v)
    }

    /// Runs a command inside the namespace.
    pub fn exec(&self, node: usize, args: &[&str]) -> String {
        let mut v = vec!["ip", "netns", "exec", self.nodes[node].name()];
        v.extend_from_slice(args);
        sh(&v)
    }

    pub fn sysctl(&self, node: usize, key: &str, value: &str) {
        self.exec(node, &["sysctl", "-qw", &format!("{key}={value}")]);
    }

    /// A route in both families: `ip route replace DEST via NEXT` for IPv4 and IPv6, where
    /// `dest_link` names the destination subnet (`None`: default) and `via` is the address of
    /// `next_node` on `via_link`.
    pub fn route(&self, node: usize, dest_link: Option<usize>, via_link: usize, next_node: usize) {
        for v6 in [false, true] {
            let dest = dest_link.map_or("default".to_string(), |l| self.subnet(l, v6));
            let via = self.addr(via_link, next_node, v6).to_string();
            self.ip_fam(node, v6, &["route", "replace", &dest, "via", &via]);
        }
    }

    /// Runs `f`'s future inside `node`'s namespace on a thread of its own with a
    /// single-threaded runtime, so every socket it opens lives in that namespace.
    pub fn run<F, Fut, T>(&self, node: usize, who: As, f: F) -> T
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T>,
        T: Send + 'static,
    {
        let path = format!("/var/run/netns/{}", self.nodes[node].name());
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            // SAFETY: a valid namespace fd; setns changes only this thread's namespace.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            if who == As::Nobody {
                drop_privileges();
            }
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(f())
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    }
}

impl Lab {
    /// Runs blocking code inside `node`'s namespace on a thread of its own (e.g. an HTTP
    /// client for a daemon listening there).
    pub fn block<F, T>(&self, node: usize, f: F) -> T
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.run(node, As::Root, move || async move { f() })
    }
}

impl Lab {
    /// Makes `node` answer expiring IPv4 UDP probes that arrive on `ifname` the RFC 792 way,
    /// quoting only the IP header and 8 bytes of UDP, as many routers still do (Linux quotes
    /// the whole probe). The kernel's own time-exceeded messages are dropped.
    pub fn short_quotes(&mut self, node: usize, ifname: &str) {
        self.exec(
            node,
            &[
                "nft",
                &format!(
                    "add table inet vtsq; add chain inet vtsq out {{ type filter hook output priority 0; }}; \
                     add rule inet vtsq out icmp type time-exceeded meta mark != {SHORT_QUOTE_MARK} drop"
                ),
            ],
        );
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (path, ifname, flag) = (
            format!("/var/run/netns/{}", self.nodes[node].name()),
            ifname.to_string(),
            stop.clone(),
        );
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).unwrap();
            // SAFETY: a valid namespace fd; setns changes only this thread's namespace.
            assert_eq!(
                unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) },
                0
            );
            short_quote_responder(&ifname, &flag, ready_tx);
        });
        ready_rx.recv().expect("responder started");
        self.helpers.push((stop, t));
    }
}

/// Marks the short-quote responder's packets, which its drop rule lets through.
const SHORT_QUOTE_MARK: u32 = 0x5157;

/// The Internet checksum.
fn checksum(data: &[u8], mut sum: u32) -> u16 {
    for c in data.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn short_quote_responder(
    ifname: &str,
    stop: &std::sync::atomic::AtomicBool,
    ready: std::sync::mpsc::Sender<()>,
) {
    let name = std::ffi::CString::new(ifname).unwrap();
    // SAFETY: plain socket calls on fds this function owns; every buffer passed lives across
    // the call with the length given.
    unsafe {
        let ifindex = libc::if_nametoindex(name.as_ptr());
        assert!(ifindex > 0, "no interface {ifname}");
        let eth_ip = (libc::ETH_P_IP as u16).to_be();
        let rx = libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM, i32::from(eth_ip));
        assert!(rx >= 0, "AF_PACKET: {}", std::io::Error::last_os_error());
        let mut ll: libc::sockaddr_ll = std::mem::zeroed();
        ll.sll_family = libc::AF_PACKET as u16;
        ll.sll_protocol = eth_ip;
        ll.sll_ifindex = ifindex as i32;
        let rc = libc::bind(
            rx,
            (&ll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        );
        assert_eq!(rc, 0);
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 100_000,
        };
        libc::setsockopt(
            rx,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as u32,
        );
        let tx = libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP);
        assert!(tx >= 0);
        let mark = SHORT_QUOTE_MARK;
        libc::setsockopt(
            tx,
            libc::SOL_SOCKET,
            libc::SO_MARK,
            (&mark as *const u32).cast(),
            std::mem::size_of::<u32>() as u32,
        );
        let _ = ready.send(());
        let mut buf = [0u8; 2048];
        while !stop.load(Ordering::Relaxed) {
            let n = libc::recv(rx, buf.as_mut_ptr().cast(), buf.len(), 0);
            if n < 28 {
                continue;
            }
            let p = &buf[..n as usize];
            let ihl = usize::from(p[0] & 0x0f) * 4;
            // Incoming (not our own) UDP whose TTL runs out here.
            if p[0] >> 4 != 4 || p[9] != 17 || p[8] > 1 || p.len() < ihl + 8 {
                continue;
            }
            let total = usize::from(u16::from_be_bytes([p[2], p[3]])).min(p.len());
            // A real wire carries the finished UDP checksum; a veth leaves it to the receiver.
            let mut udp = p[ihl..total].to_vec();
            udp[6] = 0;
            udp[7] = 0;
            let mut pseudo = 0u32;
            for w in p[12..20].chunks(2) {
                pseudo += u32::from(u16::from_be_bytes([w[0], w[1]]));
            }
            pseudo += 17 + udp.len() as u32;
            let c = match checksum(&udp, pseudo) {
                0 => 0xffff,
                c => c,
            };
            let mut icmp = vec![11u8, 0, 0, 0, 0, 0, 0, 0];
            icmp.extend_from_slice(&p[..ihl]);
            icmp.extend_from_slice(&udp[..8]);
            icmp[8 + ihl + 6..8 + ihl + 8].copy_from_slice(&c.to_be_bytes());
            let ic = checksum(&icmp, 0);
            icmp[2..4].copy_from_slice(&ic.to_be_bytes());
            let mut to: libc::sockaddr_in = std::mem::zeroed();
            to.sin_family = libc::AF_INET as u16;
            to.sin_addr.s_addr = u32::from_ne_bytes([p[12], p[13], p[14], p[15]]);
            libc::sendto(
                tx,
                icmp.as_ptr().cast(),
                icmp.len(),
                0,
                (&to as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            );
        }
        libc::close(rx);
        libc::close(tx);
    }
}

/// Becomes `nobody` on this thread only (raw syscalls; libc's wrappers would change every
/// thread), which also clears every capability.
fn drop_privileges() {
    const NOBODY: libc::c_long = 65534;
    // SAFETY: plain syscalls with integer arguments; a null list with size 0 clears groups.
    unsafe {
        assert_eq!(
            libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()),
            0
        );
        assert_eq!(
            libc::syscall(libc::SYS_setresgid, NOBODY, NOBODY, NOBODY),
            0
        );
        assert_eq!(
            libc::syscall(libc::SYS_setresuid, NOBODY, NOBODY, NOBODY),
            0
        );
    }
    // Proof: a raw socket is now refused.
    // SAFETY: socket() has no memory preconditions; the fd is closed right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP) };
    if fd >= 0 {
        // SAFETY: fd was just opened by us.
        unsafe { libc::close(fd) };
        panic!("still allowed to open raw sockets after dropping privileges");
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for (stop, _) in &self.helpers {
            stop.store(true, Ordering::Relaxed);
        }
        for (_, t) in self.helpers.drain(..) {
            let _ = t.join();
        }
        // Holders before their namespaces; the namespaces go with `nodes`.
        self.delays.clear();
    }
}

/// A chain `s - r1 - r2 - r3 - r4 - d` plus `r3b`, an alternative to `r3` between `r2` and
/// `r4`. Routes are symmetric so every router answers from the interface a probe came in on,
/// in both families.
#[derive(Debug)]
pub struct Chain {
    pub lab: Lab,
    pub s: usize,
    pub routers: Vec<usize>,
    pub r3b: usize,
    pub d: usize,
    /// Links s-r1, r1-r2, r2-r3, r3-r4, r4-d, r2-r3b, r3b-r4.
    pub l: Vec<usize>,
}

impl Chain {
    pub fn new(tag: &str) -> Self {
        Self::on(Lab::new(tag))
    }

    /// The chain while no other lab runs.
    pub fn alone(tag: &str) -> Self {
        Self::on(Lab::alone(tag))
    }

    fn on(mut lab: Lab) -> Self {
        let s = lab.node("s", false);
        let routers: Vec<usize> = (1..=4).map(|i| lab.node(&format!("r{i}"), true)).collect();
        let r3b = lab.node("r3b", true);
        let d = lab.node("d", false);
        let order = [s, routers[0], routers[1], routers[2], routers[3], d];
        let mut l: Vec<usize> = order.windows(2).map(|w| lab.link(w[0], w[1])).collect();
        l.push(lab.link(routers[1], r3b));
        l.push(lab.link(r3b, routers[3]));
        // Hosts: default towards the chain. Routers: back towards s by default, forward to d.
        lab.route(s, None, l[0], routers[0]);
        lab.route(d, None, l[4], routers[3]);
        for (i, r) in routers.iter().enumerate() {
            if i > 0 {
                lab.route(*r, None, l[i], order[i]);
            }
            if i < 3 {
                lab.route(*r, Some(l[4]), l[i + 1], order[i + 2]);
            }
        }
        lab.route(r3b, None, l[5], routers[1]);
        lab.route(r3b, Some(l[4]), l[6], routers[3]);
        Chain {
            lab,
            s,
            routers,
            r3b,
            d,
            l,
        }
    }

    pub fn dst(&self, v6: bool) -> IpAddr {
        self.lab.addr(self.l[4], self.d, v6)
    }

    /// The addresses a trace from `s` to `d` should show, hop by hop.
    pub fn hops(&self, v6: bool, via_r3b: bool) -> Vec<IpAddr> {
        let (r, l) = (&self.routers, &self.l);
        let lab = &self.lab;
        let mut h = vec![lab.addr(l[0], r[0], v6), lab.addr(l[1], r[1], v6)];
        if via_r3b {
            h.push(lab.addr(l[5], self.r3b, v6));
            h.push(lab.addr(l[6], r[3], v6));
        } else {
            h.push(lab.addr(l[2], r[2], v6));
            h.push(lab.addr(l[3], r[3], v6));
        }
        h.push(self.dst(v6));
        h
    }

    /// Moves the middle of the path from r3 to r3b (both directions), or back.
    pub fn reroute(&self, via_r3b: bool) {
        let (r, l, lab) = (&self.routers, &self.l, &self.lab);
        if via_r3b {
            lab.route(r[1], Some(l[4]), l[5], self.r3b);
            lab.route(r[3], None, l[6], self.r3b);
        } else {
            lab.route(r[1], Some(l[4]), l[2], r[2]);
            lab.route(r[3], None, l[3], r[2]);
        }
    }

    /// Makes router `i` (0-based) drop the ICMP errors it would send: a silent hop.
    pub fn silence(&self, i: usize) {
        let n = self.routers[i];
        self.lab.exec(
            n,
            &[
                "nft",
                "add table inet vt; add chain inet vt out { type filter hook output priority 0; }; \
                 add rule inet vt out icmp type time-exceeded drop; \
                 add rule inet vt out icmpv6 type time-exceeded drop",
            ],
        );
    }
}

/// `s - r1 - {r2a, r2b} - r3 - d`: r1 balances towards d over r2a and r2b (multipath route,
/// layer-4 hashing), so each flow keeps one branch and different flows spread over both.
#[derive(Debug)]
pub struct Ecmp {
    pub lab: Lab,
    pub s: usize,
    pub r1: usize,
    pub r2a: usize,
    pub r2b: usize,
    pub r3: usize,
    pub d: usize,
    /// Links s-r1, r1-r2a, r1-r2b, r2a-r3, r2b-r3, r3-d.
    pub l: Vec<usize>,
}

impl Ecmp {
    pub fn new(tag: &str) -> Self {
        let mut lab = Lab::new(tag);
        let s = lab.node("s", false);
        let r1 = lab.node("r1", true);
        let r2a = lab.node("r2a", true);
        let r2b = lab.node("r2b", true);
        let r3 = lab.node("r3", true);
        let d = lab.node("d", false);
        let l = vec![
            lab.link(s, r1),
            lab.link(r1, r2a),
            lab.link(r1, r2b),
            lab.link(r2a, r3),
            lab.link(r2b, r3),
            lab.link(r3, d),
        ];
        lab.route(s, None, l[0], r1);
        lab.route(d, None, l[5], r3);
        lab.route(r2a, None, l[1], r1);
        lab.route(r2b, None, l[2], r1);
        lab.route(r2a, Some(l[5]), l[3], r3);
        lab.route(r2b, Some(l[5]), l[4], r3);
        lab.route(r3, None, l[3], r2a);
        lab.sysctl(r1, "net.ipv4.fib_multipath_hash_policy", "1");
        lab.sysctl(r1, "net.ipv6.fib_multipath_hash_policy", "1");
        let e = Ecmp {
            lab,
            s,
            r1,
            r2a,
            r2b,
            r3,
            d,
            l,
        };
        e.balance(true, true);
        e
    }

    pub fn dst(&self, v6: bool) -> IpAddr {
        self.lab.addr(self.l[5], self.d, v6)
    }

    /// r1's route to d: over both branches, or one of them.
    pub fn balance(&self, a: bool, b: bool) {
        for v6 in [false, true] {
            let dest = self.lab.subnet(self.l[5], v6);
            let via_a = self.lab.addr(self.l[1], self.r2a, v6).to_string();
            let via_b = self.lab.addr(self.l[2], self.r2b, v6).to_string();
            let mut args = vec!["route", "replace", dest.as_str()];
            match (a, b) {
                (true, true) => args.extend([
                    "nexthop",
                    "via",
                    via_a.as_str(),
                    "nexthop",
                    "via",
                    via_b.as_str(),
                ]),
                (true, false) => args.extend(["via", via_a.as_str()]),
                (false, true) => args.extend(["via", via_b.as_str()]),
                (false, false) => panic!("no branch"),
            }
            self.lab.ip_fam(self.r1, v6, &args);
        }
    }

    /// r2a's and r2b's addresses as hop 2 shows them.
    pub fn branches(&self, v6: bool) -> [IpAddr; 2] {
        [
            self.lab.addr(self.l[1], self.r2a, v6),
            self.lab.addr(self.l[2], self.r2b, v6),
        ]
    }
}

/// `s - r1 - {r2a, r2b, r2c} - r3 - d`: r1 balances towards d over three next hops per flow
/// (multipath route, layer-4 hashing), so each source port keeps one branch.
#[derive(Debug)]
pub struct Diamond {
    pub lab: Lab,
    pub s: usize,
    pub r1: usize,
    /// r2a, r2b, r2c.
    pub r2: [usize; 3],
    pub r3: usize,
    pub d: usize,
    /// Links s-r1, r1-r2a, r1-r2b, r1-r2c, r2a-r3, r2b-r3, r2c-r3, r3-d.
    pub l: Vec<usize>,
}

impl Diamond {
    pub fn new(tag: &str) -> Self {
        let mut lab = Lab::new(tag);
        let s = lab.node("s", false);
        let r1 = lab.node("r1", true);
        let r2 = ["r2a", "r2b", "r2c"].map(|n| lab.node(n, true));
        let r3 = lab.node("r3", true);
        let d = lab.node("d", false);
        let mut l = vec![lab.link(s, r1)];
        l.extend(r2.map(|r| lab.link(r1, r)));
        l.extend(r2.map(|r| lab.link(r, r3)));
        l.push(lab.link(r3, d));
        lab.route(s, None, l[0], r1);
        lab.route(d, None, l[7], r3);
        lab.route(r3, None, l[4], r2[0]);
        for (i, r) in r2.iter().enumerate() {
            lab.route(*r, None, l[1 + i], r1);
            lab.route(*r, Some(l[7]), l[4 + i], r3);
        }
        lab.sysctl(r1, "net.ipv4.fib_multipath_hash_policy", "1");
        lab.sysctl(r1, "net.ipv6.fib_multipath_hash_policy", "1");
        for v6 in [false, true] {
            let dest = lab.subnet(l[7], v6);
            let mut args = vec!["route".to_string(), "replace".into(), dest];
            for (i, r) in r2.iter().enumerate() {
                let via = lab.addr(l[1 + i], *r, v6).to_string();
                args.extend(["nexthop".into(), "via".into(), via]);
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            lab.ip_fam(r1, v6, &args);
        }
        Diamond {
            lab,
            s,
            r1,
            r2,
            r3,
            d,
            l,
        }
    }

    pub fn dst(&self, v6: bool) -> IpAddr {
        self.lab.addr(self.l[7], self.d, v6)
    }

    /// r2a's, r2b's and r2c's addresses as hop 2 shows them.
    pub fn branches(&self, v6: bool) -> [IpAddr; 3] {
        [0, 1, 2].map(|i| self.lab.addr(self.l[1 + i], self.r2[i], v6))
    }

    /// Counts the packets `s` sends to the destination from now on (nft counter).
    pub fn count_sent(&self, v6: bool) {
        let (fam, dst) = (if v6 { "ip6" } else { "ip" }, self.dst(v6));
        self.lab.exec(
            self.s,
            &[
                "nft",
                &format!(
                    "add table inet cnt; flush table inet cnt; \
                     add chain inet cnt out {{ type filter hook output priority 0; }}; \
                     add rule inet cnt out {fam} daddr {dst} counter"
                ),
            ],
        );
    }

    /// Packets counted since [`Self::count_sent`].
    pub fn sent(&self) -> u64 {
        let out = self
            .lab
            .exec(self.s, &["nft", "list", "table", "inet", "cnt"]);
        out.split_whitespace()
            .skip_while(|w| *w != "packets")
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no counter in {out}"))
    }
}
