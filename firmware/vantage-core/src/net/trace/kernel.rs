//! Kernel trace sockets: UDP, ICMP and TCP, unprivileged (error queue) and raw.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::{Mutex as AsyncMutex, mpsc};
use tokio::task::JoinHandle;

use super::sys::{self, Msg};
use super::wire::{self, UdpPorts};
use super::{
    Outgoing, ReplyKind, TCP_CONNECT_LIMIT, TraceReply, TraceSocket, TraceSocketFactory,
    TraceSocketKey,
};
use crate::lock::{LockExt, RwLockExt};
use crate::net::BoxFuture;
use crate::types::{TraceProtocol, TraceSockets};

/// `SOL_RAW` / `ICMP_FILTER` (linux/icmp.h) and `ICMP6_FILTER` (linux/icmpv6.h).
const SOL_RAW: i32 = 255;
const ICMP_FILTER: i32 = 1;
const ICMP6_FILTER: i32 = 1;

/// Opens real kernel sockets.
#[derive(Debug, Default, Clone, Copy)]
pub struct KernelTraceSockets;

impl TraceSocketFactory for KernelTraceSockets {
    fn open(&self, key: &TraceSocketKey) -> io::Result<Arc<dyn TraceSocket>> {
        // Raw first where it identifies more answers (UDP: 8-byte quotes; TCP: Paris flows).
        let order: &[bool] = match (key.sockets, key.protocol) {
            (TraceSockets::Raw, _) => &[true],
            (TraceSockets::Unprivileged, _) => &[false],
            (TraceSockets::Auto, TraceProtocol::Icmp) => &[false, true],
            (TraceSockets::Auto, _) => &[true, false],
        };
        let mut errors = Vec::new();
        for &raw in order {
            let opened: io::Result<Arc<dyn TraceSocket>> = match key.protocol {
                TraceProtocol::Udp => UdpTrace::open(key, raw).map(|s| Arc::new(s) as _),
                TraceProtocol::Icmp => IcmpTrace::open(key, raw).map(|s| Arc::new(s) as _),
                TraceProtocol::Tcp if raw => TcpRawTrace::open(key).map(|s| Arc::new(s) as _),
                TraceProtocol::Tcp => TcpConnTrace::open(key).map(|s| Arc::new(s) as _),
            };
            match opened {
                Ok(s) => return Ok(s),
                Err(e) => errors.push((raw, e)),
            }
        }
        let denied = |e: &io::Error| {
            e.kind() == io::ErrorKind::PermissionDenied || e.raw_os_error() == Some(libc::EPERM)
        };
        if errors.iter().all(|(_, e)| denied(e)) {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                permission_hint(key),
            ));
        }
        let (_, e) = errors
            .into_iter()
            .find(|(_, e)| !denied(e))
            .expect("not all denied");
        Err(e)
    }
}

/// What to tell a user whose system refused the sockets a trace needs.
fn permission_hint(key: &TraceSocketKey) -> String {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ping_group_range")
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into());
    match (key.protocol, key.sockets) {
        (_, TraceSockets::Raw) => format!(
            "sockets = \"raw\" needs CAP_NET_RAW; grant it to the service or use sockets = \"auto\" for {} traces",
            key.protocol
        ),
        (TraceProtocol::Icmp, _) => format!(
            "ICMP traces need an unprivileged ICMP socket (net.ipv4.ping_group_range is \"{range}\", which must include this \
             process's group) or a raw one (CAP_NET_RAW); run `sysctl -w net.ipv4.ping_group_range=\"0 2147483647\"`, grant \
             CAP_NET_RAW, or trace with protocol = \"udp\""
        ),
        _ => format!(
            "the system refused the sockets a {} trace needs",
            key.protocol
        ),
    }
}

fn domain(ipv6: bool) -> Domain {
    if ipv6 { Domain::IPV6 } else { Domain::IPV4 }
}

fn unspecified(ipv6: bool) -> IpAddr {
    if ipv6 {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    }
}

/// Options every receiving socket gets: kernel timestamps and the answer's TTL.
fn receive_options(s: &Socket, ipv6: bool) {
    let fd = s.as_raw_fd();
    if let Err(e) = sys::set_int(fd, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1) {
        tracing::debug!("SO_TIMESTAMPNS unavailable, RTTs use user-space receive times: {e}");
    }
    let _ = if ipv6 {
        sys::set_int(fd, libc::SOL_IPV6, libc::IPV6_RECVHOPLIMIT, 1)
    } else {
        sys::set_int(fd, libc::SOL_IP, libc::IP_RECVTTL, 1)
    };
    // Room for the answers of many traces arriving together.
    let _ = s.set_recv_buffer_size(1 << 20);
}

fn recv_errors(s: &Socket, ipv6: bool) -> io::Result<()> {
    if ipv6 {
        sys::set_int(s.as_raw_fd(), libc::SOL_IPV6, libc::IPV6_RECVERR, 1)
    } else {
        sys::set_int(s.as_raw_fd(), libc::SOL_IP, libc::IP_RECVERR, 1)
    }
}

fn set_tos(s: &Socket, ipv6: bool, tos: Option<u8>) -> io::Result<()> {
    match tos {
        Some(t) if ipv6 => s.set_tclass_v6(u32::from(t)),
        Some(t) => s.set_tos_v4(u32::from(t)),
        None => Ok(()),
    }
}

/// Sends, retrying when the call fails only to report an earlier asynchronous error: with
/// `IP_RECVERR`, every ICMP error also sets the socket's pending error, which the next send
/// returns (and clears) instead of sending.
fn send_retrying(mut send: impl FnMut() -> io::Result<()>) -> io::Result<()> {
    let mut last = None;
    for _ in 0..4 {
        match send() {
            Ok(()) => return Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(
                        libc::EHOSTUNREACH
                            | libc::ENETUNREACH
                            | libc::ECONNREFUSED
                            | libc::EPROTO
                            | libc::EHOSTDOWN
                            | libc::ENONET
                            | libc::EACCES
                            | libc::EMSGSIZE
                    )
                ) =>
            {
                last = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.expect("loop ran"))
}

/// Answers from reader tasks, handed to whoever calls `recv`.
struct Inbox {
    tx: mpsc::UnboundedSender<TraceReply>,
    rx: AsyncMutex<mpsc::UnboundedReceiver<TraceReply>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Inbox {
    fn new() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            tx,
            rx: AsyncMutex::new(rx),
            tasks: Mutex::new(Vec::new()),
        }
    }

    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let mut tasks = self.tasks.lock_or_recover();
        tasks.retain(|t| !t.is_finished());
        tasks.push(tokio::spawn(task));
    }

    fn recv(&self) -> BoxFuture<'_, io::Result<TraceReply>> {
        Box::pin(async move {
            self.rx
                .lock()
                .await
                .recv()
                .await
                .ok_or_else(|| io::Error::other("trace socket closed"))
        })
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        for t in self
            .tasks
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .drain(..)
        {
            t.abort();
        }
    }
}

impl fmt::Debug for Inbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inbox").finish_non_exhaustive()
    }
}

/// The source address the kernel picks for a destination (UDP and TCP checksums cover it).
#[derive(Debug)]
struct Sources {
    bound: Option<IpAddr>,
    cache: Mutex<HashMap<IpAddr, (IpAddr, Instant)>>,
}

impl Sources {
    const FRESH: Duration = Duration::from_secs(5);

    fn new(bound: Option<IpAddr>) -> Self {
        Self {
            bound,
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn for_dst(&self, dst: IpAddr) -> io::Result<IpAddr> {
        if let Some(b) = self.bound {
            return Ok(b);
        }
        let now = Instant::now();
        let mut cache = self.cache.lock_or_recover();
        if let Some((src, at)) = cache.get(&dst)
            && now.duration_since(*at) < Self::FRESH
        {
            return Ok(*src);
        }
        // Connecting a UDP socket sends nothing; it asks the routing table for the source.
        let s = UdpSocket::bind(SocketAddr::new(unspecified(dst.is_ipv6()), 0))?;
        s.connect(SocketAddr::new(dst, 9))?;
        let src = s.local_addr()?.ip();
        if cache.len() > 4096 {
            cache.clear();
        }
        cache.insert(dst, (src, now));
        Ok(src)
    }
}

/// Drains a socket whenever it is readable or has errors queued, calling `handle` with each
/// message (`true` for the error queue).
async fn read_loop(
    fd: Arc<AsyncFd<Socket>>,
    errqueue: bool,
    mut handle: impl FnMut(&Msg, &[u8], bool) + Send,
) {
    let mut buf = vec![0u8; 65536];
    loop {
        let mut guard = match fd.ready(Interest::READABLE | Interest::ERROR).await {
            Ok(g) => g,
            Err(e) => {
                tracing::warn!("trace socket poll failed: {e}");
                return;
            }
        };
        let raw = fd.get_ref().as_raw_fd();
        for queue in [true, false] {
            if queue && !errqueue {
                continue;
            }
            let mut errors = 0;
            loop {
                match sys::recv(raw, &mut buf, queue) {
                    Ok(m) => handle(&m, &buf[..m.len], queue),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    // A pending asynchronous error is reported (and cleared) by a plain read.
                    Err(_) if errors < 8 => errors += 1,
                    Err(e) => {
                        tracing::debug!("trace socket read: {e}");
                        break;
                    }
                }
            }
        }
        guard.clear_ready();
    }
}

fn register(s: Socket) -> io::Result<Arc<AsyncFd<Socket>>> {
    s.set_nonblocking(true)?;
    // SAFETY: the Socket owns its fd, keeps it open and never swaps it while it lives.
    let fd = unsafe { AsyncFd::register_with_interest(s, Interest::READABLE | Interest::ERROR) }
        .map_err(io::Error::from)?;
    Ok(Arc::new(fd))
}

/// A raw ICMP socket that only lets errors (and, for ICMP traces, echo replies) through.
fn raw_icmp(ipv6: bool, echo_replies: bool) -> io::Result<Socket> {
    let s = if ipv6 {
        Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))?
    } else {
        Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))?
    };
    if ipv6 {
        // icmp6_filter: a set bit blocks the type.
        let mut filt = [0xffff_ffffu32; 8];
        let mut pass = vec![1u8, 2, 3];
        if echo_replies {
            pass.push(129);
        }
        for t in pass {
            filt[usize::from(t >> 5)] &= !(1 << (t & 31));
        }
        let bytes: Vec<u8> = filt.iter().flat_map(|w| w.to_ne_bytes()).collect();
        let _ = sys::set_bytes(s.as_raw_fd(), libc::IPPROTO_ICMPV6, ICMP6_FILTER, &bytes);
    } else {
        let mut pass = (1u32 << 3) | (1 << 11);
        if echo_replies {
            pass |= 1;
        }
        let _ = sys::set_bytes(s.as_raw_fd(), SOL_RAW, ICMP_FILTER, &(!pass).to_ne_bytes());
    }
    receive_options(&s, ipv6);
    Ok(s)
}

/// An ICMP error read from a raw socket: who sent it, what it says, and the probe it quotes.
struct RawError<'a> {
    from: IpAddr,
    kind: ReplyKind,
    quote: wire::Quote<'a>,
}

/// An ICMP message read from a raw ICMP socket (IPv4 ones start with the IP header).
fn raw_icmp_message<'a>(
    ipv6: bool,
    m: &Msg,
    data: &'a [u8],
) -> Option<(IpAddr, Option<u8>, wire::IcmpMsg<'a>)> {
    if ipv6 {
        let from = m.name?.ip();
        Some((from, m.ttl, wire::icmp(data)?))
    } else {
        let ip = wire::ipv4(data)?;
        if ip.proto != wire::PROTO_ICMP {
            return None;
        }
        Some((IpAddr::V4(ip.src), Some(ip.ttl), wire::icmp(ip.payload)?))
    }
}

fn raw_error<'a>(ipv6: bool, from: IpAddr, msg: &wire::IcmpMsg<'a>) -> Option<RawError<'a>> {
    let kind = wire::classify(ipv6, msg.typ, msg.code, msg.mtu(ipv6))?;
    Some(RawError {
        from,
        kind,
        quote: wire::quote(ipv6, msg.body)?,
    })
}

fn reply(
    from: IpAddr,
    dst: IpAddr,
    flow: Option<u16>,
    seq: Option<u16>,
    kind: ReplyKind,
    m: &Msg,
    reply_ttl: Option<u8>,
) -> TraceReply {
    TraceReply {
        from,
        dst,
        flow,
        seq,
        kind,
        reply_ttl,
        kernel_time: m.kernel_time,
        read_at: m.read_at,
    }
}

/// Valid probe sequence numbers (0 and 0xffff are no UDP checksum).
fn valid_seq(seq: u16) -> Option<u16> {
    (1..=0xfffe).contains(&seq).then_some(seq)
}

// ---------------------------------------------------------------------------------------------
// UDP

/// UDP probes: one socket per flow, so each flow keeps its source port for the socket's life.
#[derive(Debug)]
struct UdpTrace {
    key: TraceSocketKey,
    raw: bool,
    cookie: u32,
    /// Source port of each flow's socket, by flow.
    ports: Arc<RwLock<Vec<u16>>>,
    flows: Mutex<Vec<Arc<AsyncFd<Socket>>>>,
    sources: Sources,
    inbox: Inbox,
}

impl UdpTrace {
    fn open(key: &TraceSocketKey, raw: bool) -> io::Result<Self> {
        let t = Self {
            key: *key,
            raw,
            cookie: rand::random(),
            ports: Arc::default(),
            flows: Mutex::new(Vec::new()),
            sources: Sources::new(key.source),
            inbox: Inbox::new(),
        };
        if raw {
            let fd = register(raw_icmp(key.ipv6, false)?)?;
            let (ipv6, cookie, ports, tx) =
                (key.ipv6, t.cookie, t.ports.clone(), t.inbox.tx.clone());
            t.inbox.spawn(read_loop(fd, false, move |m, data, _| {
                if let Some(r) = udp_raw_error(ipv6, cookie, &ports, m, data) {
                    let _ = tx.send(r);
                }
            }));
        }
        // Open flow 0 now so that a refused socket fails here, not on the first send.
        t.flow_socket(0)?;
        Ok(t)
    }

    fn flow_socket(&self, flow: u16) -> io::Result<(Arc<AsyncFd<Socket>>, u16)> {
        let mut flows = self.flows.lock_or_recover();
        while flows.len() <= usize::from(flow) {
            let ipv6 = self.key.ipv6;
            let s = Socket::new(domain(ipv6), Type::DGRAM, Some(Protocol::UDP))?;
            set_tos(&s, ipv6, self.key.tos)?;
            let bind = self.key.source.unwrap_or_else(|| unspecified(ipv6));
            s.bind(&SockAddr::from(SocketAddr::new(bind, 0)))?;
            let port = s
                .local_addr()?
                .as_socket()
                .map(|a| a.port())
                .ok_or_else(|| io::Error::other("UDP socket without a port"))?;
            if !self.raw {
                recv_errors(&s, ipv6)?;
            }
            receive_options(&s, ipv6);
            let fd = register(s)?;
            let this_flow = flows.len() as u16;
            let (cookie, tx, errqueue) = (self.cookie, self.inbox.tx.clone(), !self.raw);
            self.inbox
                .spawn(read_loop(fd.clone(), errqueue, move |m, data, queue| {
                    let r = if queue {
                        udp_queued_error(ipv6, this_flow, cookie, m, data)
                    } else {
                        udp_data(this_flow, cookie, m, data)
                    };
                    if let Some(r) = r {
                        let _ = tx.send(r);
                    }
                }));
            self.ports.write_or_recover().push(port);
            flows.push(fd);
        }
        let port = self.ports.read_or_recover()[usize::from(flow)];
        Ok((flows[usize::from(flow)].clone(), port))
    }
}

/// An ICMP error about one of our UDP probes, read on a raw ICMP socket.
fn udp_raw_error(
    ipv6: bool,
    cookie: u32,
    ports: &RwLock<Vec<u16>>,
    m: &Msg,
    data: &[u8],
) -> Option<TraceReply> {
    let (from, ttl, msg) = raw_icmp_message(ipv6, m, data)?;
    let e = raw_error(ipv6, from, &msg)?;
    if e.quote.proto != wire::PROTO_UDP {
        return None;
    }
    let u = wire::udp(e.quote.transport)?;
    let flow = flow_of_port(ports, u.sport)?;
    // The quoted payload names the probe when the router quoted it; the checksum always does
    // (routers quote at least 8 bytes of UDP header).
    let seq = match wire::read_header(u.payload, cookie) {
        Some((f, s)) if f == flow => Some(s),
        Some(_) => return None,
        // Quoted, but with another cookie: an earlier process that had this port.
        None if u.payload.len() >= wire::HEADER_LEN => return None,
        None => valid_seq(u.checksum),
    };
    Some(reply(e.from, e.quote.dst, Some(flow), seq, e.kind, m, ttl))
}

fn flow_of_port(ports: &RwLock<Vec<u16>>, port: u16) -> Option<u16> {
    ports
        .read_or_recover()
        .iter()
        .position(|p| *p == port)
        .map(|i| i as u16)
}

/// An ICMP error from a UDP socket's error queue: the data is the quoted UDP payload, which
/// routers that quote only 8 bytes leave empty.
fn udp_queued_error(
    ipv6: bool,
    flow: u16,
    cookie: u32,
    m: &Msg,
    data: &[u8],
) -> Option<TraceReply> {
    let e = m.err.filter(|e| e.is_icmp())?;
    let kind = wire::classify(ipv6, e.typ, e.code, e.info)?;
    let from = e.offender?;
    let dst = m.name?.ip();
    let seq = match wire::read_header(data, cookie) {
        Some((f, s)) if f == flow => Some(s),
        Some(_) => return None,
        // Quoted, but with another cookie: an earlier process that had this port.
        None if data.len() >= wire::HEADER_LEN => return None,
        None => None,
    };
    Some(reply(from, dst, Some(flow), seq, kind, m, m.ttl))
}

/// A datagram from the destination: a service answered on the probed port.
fn udp_data(flow: u16, cookie: u32, m: &Msg, data: &[u8]) -> Option<TraceReply> {
    let from = m.name?.ip();
    let seq = wire::read_header(data, cookie)
        .filter(|(f, _)| *f == flow)
        .map(|(_, s)| s);
    Some(reply(
        from,
        from,
        Some(flow),
        seq,
        ReplyKind::UdpData,
        m,
        m.ttl,
    ))
}

impl TraceSocket for UdpTrace {
    fn raw(&self) -> bool {
        self.raw
    }

    fn paris(&self) -> bool {
        true
    }

    fn send(&self, p: &Outgoing) -> io::Result<()> {
        let (fd, sport) = self.flow_socket(p.flow)?;
        let ipv6 = p.dst.is_ipv6();
        let len = p.size.saturating_sub(if ipv6 { 48 } else { 28 });
        let src = self.sources.for_dst(p.dst)?;
        let payload = wire::udp_payload(
            len,
            self.cookie,
            p.flow,
            p.seq,
            Some(UdpPorts {
                src,
                dst: p.dst,
                sport,
                dport: p.port,
            }),
        );
        let to = SocketAddr::new(p.dst, p.port);
        let raw = fd.get_ref().as_raw_fd();
        send_retrying(|| sys::send_ttl(raw, &payload, to, p.ttl))
    }

    fn recv(&self) -> BoxFuture<'_, io::Result<TraceReply>> {
        self.inbox.recv()
    }
}

// ---------------------------------------------------------------------------------------------
// ICMP

/// ICMP echo probes on one datagram (unprivileged) or raw socket. The flows share the socket's
/// identifier and differ in their checksum.
#[derive(Debug)]
struct IcmpTrace {
    raw: bool,
    ipv6: bool,
    ident: u16,
    cookie: u32,
    fd: Arc<AsyncFd<Socket>>,
    sources: Sources,
    inbox: Inbox,
}

impl IcmpTrace {
    fn open(key: &TraceSocketKey, raw: bool) -> io::Result<Self> {
        let ipv6 = key.ipv6;
        let (s, ident) = if raw {
            (raw_icmp(ipv6, true)?, rand::random::<u16>())
        } else {
            let proto = if ipv6 {
                Protocol::ICMPV6
            } else {
                Protocol::ICMPV4
            };
            let s = Socket::new(domain(ipv6), Type::DGRAM, Some(proto))?;
            let bind = key.source.unwrap_or_else(|| unspecified(ipv6));
            s.bind(&SockAddr::from(SocketAddr::new(bind, 0)))?;
            // The kernel's identifier for this socket is its "port".
            let ident = s
                .local_addr()?
                .as_socket()
                .map(|a| a.port())
                .ok_or_else(|| io::Error::other("ICMP socket without an identifier"))?;
            recv_errors(&s, ipv6)?;
            receive_options(&s, ipv6);
            (s, ident)
        };
        if raw && let Some(src) = key.source {
            s.bind(&SockAddr::from(SocketAddr::new(src, 0)))?;
        }
        set_tos(&s, ipv6, key.tos)?;
        let fd = register(s)?;
        let t = Self {
            raw,
            ipv6,
            ident,
            cookie: rand::random(),
            fd: fd.clone(),
            sources: Sources::new(key.source),
            inbox: Inbox::new(),
        };
        let (cookie, tx) = (t.cookie, t.inbox.tx.clone());
        t.inbox.spawn(read_loop(fd, !raw, move |m, data, queue| {
            let r = if raw {
                icmp_raw_message(ipv6, ident, cookie, m, data)
            } else if queue {
                icmp_queued_error(ipv6, ident, cookie, m, data)
            } else {
                icmp_echo_reply(ipv6, cookie, m.name.map(|a| a.ip()), m, data)
            };
            if let Some(r) = r {
                let _ = tx.send(r);
            }
        }));
        Ok(t)
    }
}

/// Flow and sequence of a quoted echo request of ours.
fn quoted_echo(ipv6: bool, ident: u16, cookie: u32, inner: &[u8]) -> Option<(u16, u16)> {
    let e = wire::icmp(inner)?;
    if e.typ != if ipv6 { 128 } else { 8 } || e.ident() != ident {
        return None;
    }
    let flow = match wire::read_header(e.body, cookie) {
        Some((f, _)) => f,
        // Only the 8-byte header was quoted: the checksum says the flow.
        None => {
            let c = u16::from_be_bytes([inner[2], inner[3]]);
            (0..super::FLOW_IDS).find(|f| wire::icmp_flow_checksum(*f) == c)?
        }
    };
    Some((flow, e.seq()))
}

fn icmp_echo_reply(
    ipv6: bool,
    cookie: u32,
    from: Option<IpAddr>,
    m: &Msg,
    data: &[u8],
) -> Option<TraceReply> {
    let e = wire::icmp(data)?;
    if e.typ != if ipv6 { 129 } else { 0 } {
        return None;
    }
    let (flow, _) = wire::read_header(e.body, cookie)?;
    let from = from?;
    Some(reply(
        from,
        from,
        Some(flow),
        Some(e.seq()),
        ReplyKind::EchoReply,
        m,
        m.ttl,
    ))
}

/// An ICMP error from a datagram socket's error queue: the data is the quoted echo request.
fn icmp_queued_error(
    ipv6: bool,
    ident: u16,
    cookie: u32,
    m: &Msg,
    data: &[u8],
) -> Option<TraceReply> {
    let e = m.err.filter(|e| e.is_icmp())?;
    let kind = wire::classify(ipv6, e.typ, e.code, e.info)?;
    let (flow, seq) = quoted_echo(ipv6, ident, cookie, data)?;
    Some(reply(
        e.offender?,
        m.name?.ip(),
        Some(flow),
        Some(seq),
        kind,
        m,
        m.ttl,
    ))
}

fn icmp_raw_message(
    ipv6: bool,
    ident: u16,
    cookie: u32,
    m: &Msg,
    data: &[u8],
) -> Option<TraceReply> {
    let (from, ttl, msg) = raw_icmp_message(ipv6, m, data)?;
    if msg.typ == if ipv6 { 129 } else { 0 } {
        if msg.ident() != ident {
            return None;
        }
        let mut r = icmp_echo_reply(ipv6, cookie, Some(from), m, msg_bytes(ipv6, data)?)?;
        r.reply_ttl = ttl;
        return Some(r);
    }
    let e = raw_error(ipv6, from, &msg)?;
    let inner_proto = if ipv6 {
        wire::PROTO_ICMPV6
    } else {
        wire::PROTO_ICMP
    };
    if e.quote.proto != inner_proto {
        return None;
    }
    let (flow, seq) = quoted_echo(ipv6, ident, cookie, e.quote.transport)?;
    Some(reply(
        e.from,
        e.quote.dst,
        Some(flow),
        Some(seq),
        e.kind,
        m,
        ttl,
    ))
}

/// The ICMP message of a raw read (past the IPv4 header).
fn msg_bytes(ipv6: bool, data: &[u8]) -> Option<&[u8]> {
    if ipv6 {
        Some(data)
    } else {
        Some(wire::ipv4(data)?.payload)
    }
}

impl TraceSocket for IcmpTrace {
    fn raw(&self) -> bool {
        self.raw
    }

    fn paris(&self) -> bool {
        true
    }

    fn send(&self, p: &Outgoing) -> io::Result<()> {
        let ipv6 = self.ipv6;
        let payload = p.size.saturating_sub(if ipv6 { 48 } else { 28 });
        // The ICMPv6 checksum covers the addresses; a wrong guess only costs the constant
        // checksum (the kernel computes a valid one), never the answer.
        let pseudo = if ipv6 {
            self.sources.for_dst(p.dst).ok().map(|s| (s, p.dst))
        } else {
            None
        };
        let packet = wire::icmp_echo(
            ipv6,
            self.ident,
            p.seq,
            payload,
            self.cookie,
            p.flow,
            pseudo,
        );
        let to = SocketAddr::new(p.dst, 0);
        let raw = self.fd.get_ref().as_raw_fd();
        send_retrying(|| sys::send_ttl(raw, &packet, to, p.ttl))
    }

    fn recv(&self) -> BoxFuture<'_, io::Result<TraceReply>> {
        self.inbox.recv()
    }
}

// ---------------------------------------------------------------------------------------------
// TCP, raw

/// SYN probes from a raw TCP socket. Each flow has a source port reserved by a bound (never
/// listening) TCP socket, so no local connection takes it and the kernel resets the answers.
#[derive(Debug)]
struct TcpRawTrace {
    ipv6: bool,
    cookie: u16,
    send_fd: RawFd,
    _send: Arc<AsyncFd<Socket>>,
    key: TraceSocketKey,
    ports: Arc<RwLock<Vec<u16>>>,
    reserved: Mutex<Vec<Socket>>,
    sources: Sources,
    inbox: Inbox,
}

impl TcpRawTrace {
    fn open(key: &TraceSocketKey) -> io::Result<Self> {
        let ipv6 = key.ipv6;
        let icmp = register(raw_icmp(ipv6, false)?)?;
        let tcp = Socket::new(domain(ipv6), Type::RAW, Some(Protocol::TCP))?;
        set_tos(&tcp, ipv6, key.tos)?;
        if let Some(src) = key.source {
            tcp.bind(&SockAddr::from(SocketAddr::new(src, 0)))?;
        }
        receive_options(&tcp, ipv6);
        let tcp = register(tcp)?;
        let t = Self {
            ipv6,
            cookie: rand::random(),
            send_fd: tcp.get_ref().as_raw_fd(),
            _send: tcp.clone(),
            key: *key,
            ports: Arc::default(),
            reserved: Mutex::new(Vec::new()),
            sources: Sources::new(key.source),
            inbox: Inbox::new(),
        };
        let (cookie, ports, tx) = (t.cookie, t.ports.clone(), t.inbox.tx.clone());
        t.inbox.spawn(read_loop(icmp, false, move |m, data, _| {
            if let Some(r) = tcp_raw_error(ipv6, cookie, &ports, m, data) {
                let _ = tx.send(r);
            }
        }));
        let (ports, tx) = (t.ports.clone(), t.inbox.tx.clone());
        t.inbox.spawn(read_loop(tcp, false, move |m, data, _| {
            if let Some(r) = tcp_raw_answer(ipv6, cookie, &ports, m, data) {
                let _ = tx.send(r);
            }
        }));
        t.port(0)?;
        Ok(t)
    }

    fn port(&self, flow: u16) -> io::Result<u16> {
        let mut reserved = self.reserved.lock_or_recover();
        while reserved.len() <= usize::from(flow) {
            let s = Socket::new(domain(self.ipv6), Type::STREAM, Some(Protocol::TCP))?;
            let bind = self.key.source.unwrap_or_else(|| unspecified(self.ipv6));
            s.bind(&SockAddr::from(SocketAddr::new(bind, 0)))?;
            let port = s
                .local_addr()?
                .as_socket()
                .map(|a| a.port())
                .ok_or_else(|| io::Error::other("TCP socket without a port"))?;
            self.ports.write_or_recover().push(port);
            reserved.push(s);
        }
        Ok(self.ports.read_or_recover()[usize::from(flow)])
    }
}

/// An ICMP error about one of our SYNs, read on a raw ICMP socket.
fn tcp_raw_error(
    ipv6: bool,
    cookie: u16,
    ports: &RwLock<Vec<u16>>,
    m: &Msg,
    data: &[u8],
) -> Option<TraceReply> {
    let (from, ttl, msg) = raw_icmp_message(ipv6, m, data)?;
    let e = raw_error(ipv6, from, &msg)?;
    if e.quote.proto != wire::PROTO_TCP {
        return None;
    }
    let seg = wire::tcp(e.quote.transport)?;
    let flow = flow_of_port(ports, seg.sport)?;
    if (seg.seq >> 16) as u16 != cookie {
        return None;
    }
    let seq = valid_seq(seg.seq as u16);
    Some(reply(e.from, e.quote.dst, Some(flow), seq, e.kind, m, ttl))
}

/// The destination's SYN-ACK or RST to one of our SYNs, read on the raw TCP socket.
fn tcp_raw_answer(
    ipv6: bool,
    cookie: u16,
    ports: &RwLock<Vec<u16>>,
    m: &Msg,
    data: &[u8],
) -> Option<TraceReply> {
    let (from, ttl, seg) = if ipv6 {
        (m.name?.ip(), m.ttl, data)
    } else {
        let ip = wire::ipv4(data)?;
        (IpAddr::V4(ip.src), Some(ip.ttl), ip.payload)
    };
    let seg = wire::tcp(seg)?;
    let flow = flow_of_port(ports, seg.dport)?;
    let kind = if seg.flags & wire::TCP_RST != 0 {
        ReplyKind::TcpReset
    } else if seg.flags & (wire::TCP_SYN | wire::TCP_ACK) == wire::TCP_SYN | wire::TCP_ACK {
        ReplyKind::TcpSynAck
    } else {
        return None;
    };
    // Both answer our SYN with ack = its sequence + 1.
    let acked = seg.ack.wrapping_sub(1);
    if seg.flags & wire::TCP_ACK == 0 || (acked >> 16) as u16 != cookie {
        return None;
    }
    let seq = valid_seq(acked as u16);
    Some(reply(from, from, Some(flow), seq, kind, m, ttl))
}

impl TraceSocket for TcpRawTrace {
    fn raw(&self) -> bool {
        true
    }

    fn paris(&self) -> bool {
        true
    }

    fn send(&self, p: &Outgoing) -> io::Result<()> {
        let sport = self.port(p.flow)?;
        let src = self.sources.for_dst(p.dst)?;
        let seq = (u32::from(self.cookie) << 16) | u32::from(p.seq);
        let syn = wire::tcp_syn(src, p.dst, sport, p.port, seq);
        // Raw IPv6 sockets take the port field as the protocol; it must be zero or ours.
        let to = SocketAddr::new(p.dst, 0);
        send_retrying(|| sys::send_ttl(self.send_fd, &syn, to, p.ttl))
    }

    fn recv(&self) -> BoxFuture<'_, io::Result<TraceReply>> {
        self.inbox.recv()
    }
}

// ---------------------------------------------------------------------------------------------
// TCP, unprivileged

/// One connecting TCP socket per probe (traceroute's tcpconn method). Needs no privilege; every
/// probe has its own source port, so flows are not kept on one ECMP path. A probe reaching a
/// listening service completes a handshake there; the trace sends at most one probe at a time
/// that may reach it ([`TraceSocket::connects`]), and the socket resets the connection.
///
/// The RTT of a completed handshake is the kernel's (`TCP_INFO`). A refused one is timed in
/// user space: the RST that refuses a connect gives no RTT sample (`tcpi_rtt` stays 0), no
/// error-queue entry and no receive timestamp.
#[derive(Debug)]
struct TcpConnTrace {
    key: TraceSocketKey,
    inbox: Inbox,
}

impl TcpConnTrace {
    fn open(key: &TraceSocketKey) -> io::Result<Self> {
        // Fail early if TCP sockets cannot be made at all.
        drop(Socket::new(
            domain(key.ipv6),
            Type::STREAM,
            Some(Protocol::TCP),
        )?);
        Ok(Self {
            key: *key,
            inbox: Inbox::new(),
        })
    }
}

impl TraceSocket for TcpConnTrace {
    fn raw(&self) -> bool {
        false
    }

    fn paris(&self) -> bool {
        false
    }

    fn connects(&self) -> bool {
        true
    }

    fn send(&self, p: &Outgoing) -> io::Result<()> {
        let ipv6 = p.dst.is_ipv6();
        let s = Socket::new(domain(ipv6), Type::STREAM, Some(Protocol::TCP))?;
        s.set_nonblocking(true)?;
        // Set before connecting, so that every close (after the answer, at the connect limit,
        // or when the task is dropped) resets a connection the handshake completed: the
        // service sees a reset, not a session, and no FIN exchange or TIME_WAIT follows. A
        // socket still waiting for its SYN-ACK sends nothing on close; the kernel then resets
        // the late SYN-ACK, so the service completes no handshake for it.
        s.set_linger(Some(Duration::ZERO))?;
        if ipv6 {
            s.set_unicast_hops_v6(u32::from(p.ttl))?;
        } else {
            s.set_ttl_v4(u32::from(p.ttl))?;
        }
        set_tos(&s, ipv6, self.key.tos)?;
        recv_errors(&s, ipv6)?;
        receive_options(&s, ipv6);
        let _ = sys::set_int(s.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_SYNCNT, 1);
        if let Some(src) = self.key.source {
            s.bind(&SockAddr::from(SocketAddr::new(src, 0)))?;
        }
        match s.connect(&SockAddr::from(SocketAddr::new(p.dst, p.port))) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        // SAFETY: the Socket owns its fd, keeps it open and never swaps it while it lives.
        let fd = unsafe {
            AsyncFd::register_with_interest(
                s,
                Interest::READABLE | Interest::WRITABLE | Interest::ERROR,
            )
        }
        .map_err(io::Error::from)?;
        let (tx, probe) = (self.inbox.tx.clone(), *p);
        let limit = p.timeout.min(TCP_CONNECT_LIMIT);
        let sent_wall = SystemTime::now();
        self.inbox.spawn(async move {
            let outcome = connect_outcome(&fd, &probe, sent_wall);
            if let Ok(Some(r)) = tokio::time::timeout(limit, outcome).await {
                let _ = tx.send(r);
            }
            // Closed as soon as the answer came or the limit passed: with SO_LINGER 0, a
            // connected socket sends a reset.
            drop(fd);
        });
        Ok(())
    }

    fn recv(&self) -> BoxFuture<'_, io::Result<TraceReply>> {
        self.inbox.recv()
    }
}

/// The handshake's RTT as the kernel measured it (`tcpi_rtt` holds the first sample right after
/// the SYN-ACK), which user-space wake-ups cannot distort.
fn handshake_rtt(fd: RawFd) -> Option<Duration> {
    // SAFETY: tcp_info is plain data; the kernel fills at most `len` bytes of it.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: valid fd; info and len describe a writable buffer of that size.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    (rc == 0 && info.tcpi_rtt > 0).then(|| Duration::from_micros(u64::from(info.tcpi_rtt)))
}

async fn connect_outcome(
    fd: &AsyncFd<Socket>,
    p: &Outgoing,
    sent_wall: SystemTime,
) -> Option<TraceReply> {
    let ipv6 = p.dst.is_ipv6();
    let mut buf = [0u8; 512];
    loop {
        let mut guard = fd
            .ready(Interest::READABLE | Interest::WRITABLE | Interest::ERROR)
            .await
            .ok()?;
        let raw = fd.get_ref().as_raw_fd();
        if let Ok(m) = sys::recv(raw, &mut buf, true)
            && let Some(e) = m.err.filter(|e| e.is_icmp())
            && let Some(kind) = wire::classify(ipv6, e.typ, e.code, e.info)
        {
            return Some(reply(
                e.offender?,
                p.dst,
                Some(p.flow),
                Some(p.seq),
                kind,
                &m,
                m.ttl,
            ));
        }
        let read_at = Instant::now();
        let at_dst = |kind| TraceReply {
            from: p.dst,
            dst: p.dst,
            flow: Some(p.flow),
            seq: Some(p.seq),
            kind,
            reply_ttl: None,
            kernel_time: None,
            read_at,
        };
        match fd.get_ref().take_error() {
            Ok(Some(e)) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
                return Some(at_dst(ReplyKind::TcpReset));
            }
            // EHOSTUNREACH and the like come with an error-queue entry, read above.
            Ok(Some(_)) => {}
            Ok(None) if guard.ready().is_writable() && fd.get_ref().peer_addr().is_ok() => {
                let mut r = at_dst(ReplyKind::TcpSynAck);
                r.kernel_time = handshake_rtt(raw).map(|rtt| sent_wall + rtt);
                return Some(r);
            }
            _ => {}
        }
        guard.clear_ready();
    }
}

#[cfg(any(test, fuzzing))]
pub(crate) mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::trace::sys::ExtErr;
    use crate::sample::Unreachable;

    const COOKIE: u32 = 0xc0ff_ee01;

    fn a(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn msg(name: Option<SocketAddr>, err: Option<ExtErr>) -> Msg {
        Msg {
            len: 0,
            name,
            kernel_time: None,
            ttl: Some(61),
            err,
            read_at: Instant::now(),
        }
    }

    fn ip4(src: &str, dst: &str, proto: u8, ttl: u8, payload: &[u8]) -> Vec<u8> {
        let (IpAddr::V4(s), IpAddr::V4(d)) = (a(src), a(dst)) else {
            panic!()
        };
        let mut p = vec![0x45, 0, 0, 0, 0, 0, 0, 0, ttl, proto, 0, 0];
        p.extend_from_slice(&s.octets());
        p.extend_from_slice(&d.octets());
        p.extend_from_slice(payload);
        p
    }

    fn icmp_error(typ: u8, code: u8, inner: &[u8]) -> Vec<u8> {
        let mut p = vec![typ, code, 0, 0, 0, 0, 0, 0];
        p.extend_from_slice(inner);
        p
    }

    fn udp_hdr(sport: u16, dport: u16, checksum: u16, payload: &[u8]) -> Vec<u8> {
        let mut u = Vec::new();
        u.extend_from_slice(&sport.to_be_bytes());
        u.extend_from_slice(&dport.to_be_bytes());
        u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        u.extend_from_slice(&checksum.to_be_bytes());
        u.extend_from_slice(payload);
        u
    }

    fn ports(p: &[u16]) -> RwLock<Vec<u16>> {
        RwLock::new(p.to_vec())
    }

    #[test]
    fn raw_udp_errors_name_the_probe_by_checksum_or_payload() {
        let ports = ports(&[40000, 40001]);
        let m = msg(None, None);
        // An 8-byte quote: the checksum is the sequence number.
        let inner = ip4(
            "10.0.0.1",
            "192.0.2.9",
            17,
            1,
            &udp_hdr(40001, 33434, 77, &[]),
        );
        let pkt = ip4("10.9.9.9", "10.0.0.1", 1, 63, &icmp_error(11, 0, &inner));
        let r = udp_raw_error(false, COOKIE, &ports, &m, &pkt).unwrap();
        assert_eq!(
            (r.from, r.dst, r.flow, r.seq, r.kind, r.reply_ttl),
            (
                a("10.9.9.9"),
                a("192.0.2.9"),
                Some(1),
                Some(77),
                ReplyKind::TimeExceeded,
                Some(63)
            )
        );
        // A full quote: the payload names the probe even when the quoted checksum was never
        // finished (checksum offload on a virtual link).
        let payload = wire::udp_payload(20, COOKIE, 1, 555, None);
        let inner = ip4(
            "10.0.0.1",
            "192.0.2.9",
            17,
            1,
            &udp_hdr(40001, 33434, 0x1234, &payload),
        );
        let pkt = ip4("192.0.2.9", "10.0.0.1", 1, 60, &icmp_error(3, 3, &inner));
        let r = udp_raw_error(false, COOKIE, &ports, &m, &pkt).unwrap();
        assert_eq!(r.seq, Some(555));
        assert_eq!(r.kind, ReplyKind::Unreachable(Unreachable::Port));
        // Another program's probe from another port, or with another cookie: not ours.
        let inner = ip4(
            "10.0.0.1",
            "192.0.2.9",
            17,
            1,
            &udp_hdr(50000, 33434, 77, &[]),
        );
        let pkt = ip4("10.9.9.9", "10.0.0.1", 1, 63, &icmp_error(11, 0, &inner));
        assert!(udp_raw_error(false, COOKIE, &ports, &m, &pkt).is_none());
        let other = wire::udp_payload(20, COOKIE ^ 1, 1, 555, None);
        let inner = ip4(
            "10.0.0.1",
            "192.0.2.9",
            17,
            1,
            &udp_hdr(40001, 33434, 5, &other),
        );
        let pkt = ip4("10.9.9.9", "10.0.0.1", 1, 63, &icmp_error(11, 0, &inner));
        assert!(udp_raw_error(false, COOKIE, &ports, &m, &pkt).is_none());
        // Not UDP inside; not an error at all.
        let inner = ip4(
            "10.0.0.1",
            "192.0.2.9",
            6,
            1,
            &udp_hdr(40001, 33434, 77, &[]),
        );
        let pkt = ip4("10.9.9.9", "10.0.0.1", 1, 63, &icmp_error(11, 0, &inner));
        assert!(udp_raw_error(false, COOKIE, &ports, &m, &pkt).is_none());
        let pkt = ip4("10.9.9.9", "10.0.0.1", 1, 63, &icmp_error(8, 0, &[0; 28]));
        assert!(udp_raw_error(false, COOKIE, &ports, &m, &pkt).is_none());
    }

    #[test]
    fn raw_tcp_errors_and_answers_check_port_and_cookie() {
        let cookie: u16 = 0xabcd;
        let ports = ports(&[41000]);
        let m = msg(None, None);
        let seq = (u32::from(cookie) << 16) | 9;
        let mut syn = Vec::new();
        syn.extend_from_slice(&41000u16.to_be_bytes());
        syn.extend_from_slice(&80u16.to_be_bytes());
        syn.extend_from_slice(&seq.to_be_bytes());
        let inner = ip4("10.0.0.1", "192.0.2.9", 6, 1, &syn);
        let pkt = ip4("10.9.9.9", "10.0.0.1", 1, 63, &icmp_error(11, 0, &inner));
        let r = tcp_raw_error(false, cookie, &ports, &m, &pkt).unwrap();
        assert_eq!((r.seq, r.flow, r.from), (Some(9), Some(0), a("10.9.9.9")));
        assert!(tcp_raw_error(false, cookie ^ 1, &ports, &m, &pkt).is_none());

        let answer = |flags: u8, ack: u32| {
            let mut t = vec![0u8; 20];
            t[0..2].copy_from_slice(&80u16.to_be_bytes());
            t[2..4].copy_from_slice(&41000u16.to_be_bytes());
            t[8..12].copy_from_slice(&ack.to_be_bytes());
            t[12] = 5 << 4;
            t[13] = flags;
            ip4("192.0.2.9", "10.0.0.1", 6, 58, &t)
        };
        let synack = answer(wire::TCP_SYN | wire::TCP_ACK, seq + 1);
        let r = tcp_raw_answer(false, cookie, &ports, &m, &synack).unwrap();
        assert_eq!(
            (r.kind, r.seq, r.from, r.dst),
            (
                ReplyKind::TcpSynAck,
                Some(9),
                a("192.0.2.9"),
                a("192.0.2.9")
            )
        );
        let rst = answer(wire::TCP_RST | wire::TCP_ACK, seq + 1);
        assert_eq!(
            tcp_raw_answer(false, cookie, &ports, &m, &rst)
                .unwrap()
                .kind,
            ReplyKind::TcpReset
        );
        // A connection of someone else's to that port, a bare SYN, another cookie.
        assert!(tcp_raw_answer(false, cookie, &ports, &m, &answer(wire::TCP_SYN, 0)).is_none());
        assert!(
            tcp_raw_answer(
                false,
                cookie,
                &ports,
                &m,
                &answer(wire::TCP_SYN | wire::TCP_ACK, 12345)
            )
            .is_none()
        );
        assert!(tcp_raw_answer(false, cookie, &RwLock::new(vec![1]), &m, &synack).is_none());
    }

    #[test]
    fn icmp_answers_match_our_identifier() {
        let ident = 0x4242;
        let m = msg(None, None);
        let echo = wire::icmp_echo(false, ident, 31, 32, COOKIE, 3, None);
        let mut reply_msg = echo.clone();
        reply_msg[0] = 0;
        let pkt = ip4("192.0.2.9", "10.0.0.1", 1, 57, &reply_msg);
        let r = icmp_raw_message(false, ident, COOKIE, &m, &pkt).unwrap();
        assert_eq!(
            (r.kind, r.seq, r.flow),
            (ReplyKind::EchoReply, Some(31), Some(3))
        );
        assert!(icmp_raw_message(false, ident ^ 1, COOKIE, &m, &pkt).is_none());
        // A router quoting only the echo header: the flow comes from the checksum.
        let inner = ip4("10.0.0.1", "192.0.2.9", 1, 1, &echo[..8]);
        let pkt = ip4("10.9.9.9", "10.0.0.1", 1, 63, &icmp_error(11, 0, &inner));
        let r = icmp_raw_message(false, ident, COOKIE, &m, &pkt).unwrap();
        assert_eq!(
            (r.kind, r.seq, r.flow, r.dst),
            (ReplyKind::TimeExceeded, Some(31), Some(3), a("192.0.2.9"))
        );
        // The datagram socket's error queue hands out the quoted echo request itself.
        let queued = msg(
            Some(SocketAddr::new(a("192.0.2.9"), 0)),
            Some(ExtErr {
                origin: libc::SO_EE_ORIGIN_ICMP,
                typ: 3,
                code: 13,
                info: 0,
                offender: Some(a("10.9.9.9")),
            }),
        );
        let r = icmp_queued_error(false, ident, COOKIE, &queued, &echo).unwrap();
        assert_eq!(r.kind, ReplyKind::Unreachable(Unreachable::Prohibited));
        assert_eq!((r.from, r.seq), (a("10.9.9.9"), Some(31)));
    }

    #[test]
    fn queued_udp_errors_without_payload_are_anonymous() {
        let err = |origin| {
            msg(
                Some(SocketAddr::new(a("192.0.2.9"), 33434)),
                Some(ExtErr {
                    origin,
                    typ: 11,
                    code: 0,
                    info: 0,
                    offender: Some(a("10.9.9.9")),
                }),
            )
        };
        let m = err(libc::SO_EE_ORIGIN_ICMP);
        let payload = wire::udp_payload(32, COOKIE, 2, 99, None);
        let r = udp_queued_error(false, 2, COOKIE, &m, &payload).unwrap();
        assert_eq!(
            (r.seq, r.flow, r.from, r.dst),
            (Some(99), Some(2), a("10.9.9.9"), a("192.0.2.9"))
        );
        let r = udp_queued_error(false, 2, COOKIE, &m, &[]).unwrap();
        assert_eq!(
            (r.seq, r.flow),
            (None, Some(2)),
            "an 8-byte quote names no probe"
        );
        // The payload of another flow cannot be on this socket's queue: refused.
        assert!(udp_queued_error(false, 1, COOKIE, &m, &payload).is_none());
        let stale = wire::udp_payload(32, COOKIE ^ 1, 2, 99, None);
        assert!(udp_queued_error(false, 2, COOKIE, &m, &stale).is_none());
        // Local errors (e.g. the socket's own MTU) are no answer.
        assert!(
            udp_queued_error(false, 2, COOKIE, &err(libc::SO_EE_ORIGIN_LOCAL), &payload).is_none()
        );
    }

    #[test]
    fn garbage_is_ignored_never_a_panic() {
        let ports = ports(&[40000]);
        let mut x = 0x9e37_79b9_u32;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        let names = [
            None,
            Some(SocketAddr::new(a("fd00::1"), 0)),
            Some(SocketAddr::new(a("10.0.0.1"), 7)),
        ];
        for i in 0..5000 {
            let len = (next() % 120) as usize;
            let mut data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            // Often make it look like IPv4/ICMP so the parsers get further.
            if i % 2 == 0 && len > 20 {
                data[0] = 0x45;
                data[9] = [1u8, 6, 17][i % 3];
            }
            let err = (i % 3 == 0).then(|| ExtErr {
                origin: libc::SO_EE_ORIGIN_ICMP,
                typ: next() as u8,
                code: next() as u8,
                info: next(),
                offender: Some(a("10.9.9.9")),
            });
            for ipv6 in [false, true] {
                let m = msg(names[i % 3], err);
                let _ = udp_raw_error(ipv6, COOKIE, &ports, &m, &data);
                let _ = tcp_raw_error(ipv6, 1, &ports, &m, &data);
                let _ = tcp_raw_answer(ipv6, 1, &ports, &m, &data);
                let _ = icmp_raw_message(ipv6, 1, COOKIE, &m, &data);
                let _ = icmp_queued_error(ipv6, 1, COOKIE, &m, &data);
                let _ = icmp_echo_reply(ipv6, COOKIE, m.name.map(|n| n.ip()), &m, &data);
                let _ = udp_queued_error(ipv6, 0, COOKIE, &m, &data);
                let _ = udp_data(0, COOKIE, &m, &data);
            }
        }
    }
}
