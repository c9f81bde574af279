//! The receive path every kernel trace socket shares: reader tasks that drain a socket and its
//! error queue into an [`Inbox`], and the parsing the kinds have in common (raw IP packets,
//! ICMP errors and the probes they quote, error-queue entries).

use std::fmt;
use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, RwLock};

use socket2::Socket;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::lock::{LockExt, RwLockExt};
use crate::net::BoxFuture;
use crate::net::sys::{self, ExtErr, Msg};
use crate::net::trace::socket::{Replies, ReplyKind, TraceReply};
use crate::net::trace::wire;

/// Answers from reader tasks, handed to whoever calls `recv`; the tasks end with it.
pub(super) struct Inbox {
    replies: Replies,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Inbox {
    pub fn new() -> Self {
        Self {
            replies: Replies::new(),
            tasks: Mutex::new(Vec::new()),
        }
    }

    /// Where a task puts the answers it finds.
    pub fn sender(&self) -> mpsc::UnboundedSender<TraceReply> {
        self.replies.sender()
    }

    /// Runs `task` until it ends or the inbox is dropped.
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let mut tasks = self.tasks.lock_or_recover();
        tasks.retain(|t| !t.is_finished());
        tasks.push(tokio::spawn(task));
    }

    /// Drains `fd` whenever it is readable or has errors queued, and keeps the answers `parse`
    /// finds in each message (called with `true` for the error queue, read when `errqueue`).
    pub fn read(
        &self,
        fd: Arc<AsyncFd<Socket>>,
        errqueue: bool,
        mut parse: impl FnMut(&Msg, &[u8], bool) -> Option<TraceReply> + Send + 'static,
    ) {
        let tx = self.sender();
        self.spawn(read_loop(fd, errqueue, move |m, data, queue| {
            if let Some(r) = parse(m, data, queue) {
                let _ = tx.send(r);
            }
        }));
    }

    pub fn recv(&self) -> BoxFuture<'_, io::Result<TraceReply>> {
        self.replies.recv()
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

/// An answer to one of our probes, with the receive times of the message it came in.
pub(super) fn reply(
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
pub(super) fn valid_seq(seq: u16) -> Option<u16> {
    (1..=0xfffe).contains(&seq).then_some(seq)
}

/// The source port of each flow, by flow: answers to TCP and raw UDP probes name the flow by it.
#[derive(Debug, Default, Clone)]
pub(super) struct Ports(Arc<RwLock<Vec<u16>>>);

impl Ports {
    #[cfg(any(test, fuzzing))]
    pub fn of(ports: &[u16]) -> Self {
        Self(Arc::new(RwLock::new(ports.to_vec())))
    }

    /// Adds the next flow's port.
    pub fn push(&self, port: u16) {
        self.0.write_or_recover().push(port);
    }

    /// The port of a flow that has one.
    pub fn of_flow(&self, flow: u16) -> u16 {
        self.0.read_or_recover()[usize::from(flow)]
    }

    /// The flow whose source port is `port`.
    pub fn flow(&self, port: u16) -> Option<u16> {
        self.0
            .read_or_recover()
            .iter()
            .position(|p| *p == port)
            .map(|i| i as u16)
    }
}

/// The ICMP error of an error-queue entry and what it says.
pub(super) fn queued_icmp(ipv6: bool, m: &Msg) -> Option<(ExtErr, ReplyKind)> {
    let e = m.err.filter(|e| e.is_icmp())?;
    Some((e, wire::classify(ipv6, e.typ, e.code, e.info)?))
}

/// A packet of protocol `proto` read on a raw socket: its sender, its TTL and what follows the
/// IP header (IPv4 raw sockets hand over the header, IPv6 ones only what follows it).
pub(super) fn raw_packet<'a>(
    ipv6: bool,
    proto: u8,
    m: &Msg,
    data: &'a [u8],
) -> Option<(IpAddr, Option<u8>, &'a [u8])> {
    if ipv6 {
        return Some((m.name?.ip(), m.ttl, data));
    }
    let ip = wire::ipv4(data)?;
    (ip.proto == proto).then_some((IpAddr::V4(ip.src), Some(ip.ttl), ip.payload))
}

/// An ICMP message read on a raw ICMP socket.
pub(super) fn raw_icmp_message<'a>(
    ipv6: bool,
    m: &Msg,
    data: &'a [u8],
) -> Option<(IpAddr, Option<u8>, wire::IcmpMsg<'a>)> {
    let (from, ttl, icmp) = raw_packet(ipv6, wire::PROTO_ICMP, m, data)?;
    Some((from, ttl, wire::icmp(icmp)?))
}

/// An ICMP error read from a raw socket: who sent it, what it says, and the probe it quotes.
pub(super) struct RawError<'a> {
    pub from: IpAddr,
    pub kind: ReplyKind,
    pub quote: wire::Quote<'a>,
}

/// The ICMP error `msg` from `from`, when it quotes a packet of protocol `proto`.
pub(super) fn raw_error<'a>(
    ipv6: bool,
    from: IpAddr,
    msg: &wire::IcmpMsg<'a>,
    proto: u8,
) -> Option<RawError<'a>> {
    let kind = wire::classify(ipv6, msg.typ, msg.code, msg.mtu(ipv6))?;
    let quote = wire::quote(ipv6, msg.body)?;
    (quote.proto == proto).then_some(RawError { from, kind, quote })
}
