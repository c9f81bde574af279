//! One connecting TCP socket per probe (traceroute's tcpconn method). Needs no privilege; every
//! probe has its own source port, so flows are not kept on one ECMP path. A probe reaching a
//! listening service completes a handshake there; the trace sends at most one probe at a time
//! that may reach it ([`TraceSocket::connects`]), and the socket resets the connection.
//!
//! The RTT of a completed handshake is the kernel's (`TCP_INFO`). A refused one is timed in
//! user space: the RST that refuses a connect gives no RTT sample (`tcpi_rtt` stays 0), no
//! error-queue entry and no receive timestamp.
//!
//! [`TraceSocket::connects`]: crate::net::trace::TraceSocket::connects

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant, SystemTime};

use socket2::{Protocol, SockAddr, Socket, Type};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::receive::{self, Inbox, reply};
use super::{Kind, socket};
use crate::net::sys;
use crate::net::trace::{Outgoing, ReplyKind, TCP_CONNECT_LIMIT, TraceReply, TraceSocketKey};

#[derive(Debug)]
pub(super) struct TcpConnTrace {
    key: TraceSocketKey,
}

impl TcpConnTrace {
    pub fn open(key: &TraceSocketKey) -> io::Result<Self> {
        // Fail early if TCP sockets cannot be made at all.
        drop(socket::new(key.ipv6, Type::STREAM, Protocol::TCP)?);
        Ok(Self { key: *key })
    }

    /// A socket set up to connect for probe `p`, its connect started.
    fn connecting(&self, p: &Outgoing) -> io::Result<Socket> {
        let ipv6 = p.dst.is_ipv6();
        let s = socket::new(ipv6, Type::STREAM, Protocol::TCP)?;
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
        socket::set_tos(&s, ipv6, self.key.tos)?;
        socket::recv_errors(&s, ipv6)?;
        socket::receive_options(&s, ipv6);
        let _ = sys::set_int(s.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_SYNCNT, 1);
        socket::bind_source(&s, self.key.source)?;
        match s.connect(&SockAddr::from(SocketAddr::new(p.dst, p.port))) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        Ok(s)
    }
}

impl Kind for TcpConnTrace {
    fn raw(&self) -> bool {
        false
    }

    fn paris(&self) -> bool {
        false
    }

    fn connects(&self) -> bool {
        true
    }

    fn send(&self, p: &Outgoing, inbox: &Inbox) -> io::Result<()> {
        let s = self.connecting(p)?;
        let interest = Interest::READABLE | Interest::WRITABLE | Interest::ERROR;
        let fd = sys::register(s, interest)?;
        let (tx, probe) = (inbox.sender(), *p);
        let limit = p.timeout.min(TCP_CONNECT_LIMIT);
        let sent_wall = SystemTime::now();
        inbox.spawn(async move {
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
}

/// How the connect of probe `p` ended: an ICMP error from the way, a reset, or a completed
/// handshake timed by the kernel (`tcpi_rtt` holds the first sample right after the SYN-ACK,
/// which user-space wake-ups cannot distort).
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
            && let Some((e, kind)) = receive::queued_icmp(ipv6, &m)
        {
            let (flow, seq) = (Some(p.flow), Some(p.seq));
            return Some(reply(e.offender?, p.dst, flow, seq, kind, &m, m.ttl));
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
                r.kernel_time = sys::tcp_rtt(raw).map(|rtt| sent_wall + rtt);
                return Some(r);
            }
            _ => {}
        }
        guard.clear_ready();
    }
}
