//! Opening and setting up the sockets of every kind: options, bound ports, the raw ICMP socket
//! errors are read on, the source address a probe will leave from, and sending past pending
//! errors.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::lock::LockExt;
use crate::net::sys;

/// `SOL_RAW` / `ICMP_FILTER` (linux/icmp.h) and `ICMP6_FILTER` (linux/icmpv6.h).
const SOL_RAW: i32 = 255;
const ICMP_FILTER: i32 = 1;
const ICMP6_FILTER: i32 = 1;

/// A new socket of the address family.
pub(super) fn new(ipv6: bool, ty: Type, proto: Protocol) -> io::Result<Socket> {
    let domain = if ipv6 { Domain::IPV6 } else { Domain::IPV4 };
    Socket::new(domain, ty, Some(proto))
}

fn unspecified(ipv6: bool) -> IpAddr {
    if ipv6 {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    }
}

/// Binds to `source`, if one is set.
pub(super) fn bind_source(s: &Socket, source: Option<IpAddr>) -> io::Result<()> {
    match source {
        Some(src) => s.bind(&SockAddr::from(SocketAddr::new(src, 0))),
        None => Ok(()),
    }
}

/// Binds to `source` (or any address) and a port the kernel picks; returns the port, which
/// for an ICMP datagram socket is its echo identifier.
pub(super) fn bind_port(s: &Socket, ipv6: bool, source: Option<IpAddr>) -> io::Result<u16> {
    let bind = source.unwrap_or_else(|| unspecified(ipv6));
    s.bind(&SockAddr::from(SocketAddr::new(bind, 0)))?;
    s.local_addr()?
        .as_socket()
        .map(|a| a.port())
        .ok_or_else(|| io::Error::other("socket bound without a port"))
}

/// Options every receiving socket gets: kernel timestamps and the answer's TTL.
pub(super) fn receive_options(s: &Socket, ipv6: bool) {
    let fd = s.as_raw_fd();
    sys::stamp_receives(fd);
    let _ = if ipv6 {
        sys::set_int(fd, libc::SOL_IPV6, libc::IPV6_RECVHOPLIMIT, 1)
    } else {
        sys::set_int(fd, libc::SOL_IP, libc::IP_RECVTTL, 1)
    };
    // Room for the answers of many traces arriving together.
    let _ = s.set_recv_buffer_size(1 << 20);
}

/// Queues the ICMP errors about the socket's packets on its error queue (`IP_RECVERR`).
pub(super) fn recv_errors(s: &Socket, ipv6: bool) -> io::Result<()> {
    if ipv6 {
        sys::set_int(s.as_raw_fd(), libc::SOL_IPV6, libc::IPV6_RECVERR, 1)
    } else {
        sys::set_int(s.as_raw_fd(), libc::SOL_IP, libc::IP_RECVERR, 1)
    }
}

pub(super) fn set_tos(s: &Socket, ipv6: bool, tos: Option<u8>) -> io::Result<()> {
    match tos {
        Some(t) if ipv6 => s.set_tclass_v6(u32::from(t)),
        Some(t) => s.set_tos_v4(u32::from(t)),
        None => Ok(()),
    }
}

/// Hands a non-blocking socket to the reactor, for its readers.
pub(super) fn register(s: Socket) -> io::Result<Arc<AsyncFd<Socket>>> {
    s.set_nonblocking(true)?;
    Ok(Arc::new(sys::register(
        s,
        Interest::READABLE | Interest::ERROR,
    )?))
}

/// A new ICMP socket of the address family: a datagram (unprivileged) or raw one.
pub(super) fn icmp(ipv6: bool, ty: Type) -> io::Result<Socket> {
    new(
        ipv6,
        ty,
        if ipv6 {
            Protocol::ICMPV6
        } else {
            Protocol::ICMPV4
        },
    )
}

/// A raw ICMP socket that only lets errors (and, for ICMP traces, echo replies) through.
pub(super) fn raw_icmp(ipv6: bool, echo_replies: bool) -> io::Result<Socket> {
    let s = icmp(ipv6, Type::RAW)?;
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

/// The source address the kernel picks for a destination (UDP and TCP checksums cover it).
#[derive(Debug)]
pub(super) struct Sources {
    bound: Option<IpAddr>,
    cache: Mutex<HashMap<IpAddr, (IpAddr, Instant)>>,
}

impl Sources {
    const FRESH: Duration = Duration::from_secs(5);

    pub fn new(bound: Option<IpAddr>) -> Self {
        Self {
            bound,
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn for_dst(&self, dst: IpAddr) -> io::Result<IpAddr> {
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

/// Sends `packet` to `to` with the probe's TTL, retrying when the call fails only to report
/// an earlier asynchronous error: with `IP_RECVERR`, every ICMP error also sets the socket's
/// pending error, which the next send returns (and clears) instead of sending.
pub(super) fn send(s: &Socket, packet: &[u8], to: SocketAddr, ttl: u8) -> io::Result<()> {
    let mut last = None;
    for _ in 0..4 {
        match sys::send_ttl(s.as_raw_fd(), packet, to, ttl) {
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
