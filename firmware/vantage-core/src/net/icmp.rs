//! Kernel ICMP sockets with kernel receive timestamps.
//!
//! We open the socket ourselves rather than through surge-ping's `Client`, because the client
//! timestamps replies in user space after a task switch and cannot read `SO_TIMESTAMPNS`; the
//! wire format is decoded with surge-ping's packet types (see `probe::ping`).

use std::io;
use std::mem::{self, MaybeUninit};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::io::unix::AsyncFd;

use super::{BoxFuture, IcmpSocket, IcmpSocketFactory, Received, SocketKey, SocketKind};

/// Opens real kernel sockets: an unprivileged datagram socket first, a raw one as fallback.
#[derive(Debug, Default, Clone, Copy)]
pub struct KernelSockets {
    /// Skip the datagram socket and require a raw one (for tests of the raw path).
    pub force_raw: bool,
}

impl KernelSockets {
    /// Whether this process may open an IPv4 ICMP socket of either kind.
    pub fn can_open(&self) -> bool {
        let dgram = !self.force_raw
            && Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::ICMPV4)).is_ok();
        dgram || Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4)).is_ok()
    }
}

impl IcmpSocketFactory for KernelSockets {
    fn open(&self, key: &SocketKey) -> io::Result<Arc<dyn IcmpSocket>> {
        Ok(Arc::new(KernelIcmpSocket::open(key, self.force_raw)?))
    }
}

#[derive(Debug)]
struct KernelIcmpSocket {
    fd: AsyncFd<Socket>,
    kind: SocketKind,
}

/// What to tell a user whose system allows neither socket kind.
pub fn ping_permission_hint() -> String {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ping_group_range")
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into());
    format!(
        "neither an unprivileged ICMP socket (net.ipv4.ping_group_range is \"{range}\", which must include this process's group) \
         nor a raw socket (needs CAP_NET_RAW) could be opened; run `sysctl -w net.ipv4.ping_group_range=\"0 2147483647\"` \
         or grant the service CAP_NET_RAW"
    )
}

impl KernelIcmpSocket {
    fn open(key: &SocketKey, force_raw: bool) -> io::Result<Self> {
        let (domain, proto) = if key.ipv6 {
            (Domain::IPV6, Protocol::ICMPV6)
        } else {
            (Domain::IPV4, Protocol::ICMPV4)
        };
        let dgram = if force_raw {
            Err(io::Error::from(io::ErrorKind::PermissionDenied))
        } else {
            Socket::new(domain, Type::DGRAM, Some(proto))
        };
        let (socket, kind) = match dgram {
            Ok(s) => (s, SocketKind::Datagram),
            Err(dgram_err) => match Socket::new(domain, Type::RAW, Some(proto)) {
                Ok(s) => (s, SocketKind::Raw),
                Err(raw_err) => {
                    let denied = |e: &io::Error| {
                        matches!(e.kind(), io::ErrorKind::PermissionDenied)
                            || e.raw_os_error() == Some(libc::EACCES)
                    };
                    if denied(&dgram_err) || denied(&raw_err) {
                        return Err(io::Error::new(
                            io::ErrorKind::PermissionDenied,
                            ping_permission_hint(),
                        ));
                    }
                    return Err(raw_err);
                }
            },
        };
        socket.set_nonblocking(true)?;
        // Room for replies of thousands of targets arriving in the same millisecond.
        let _ = socket.set_recv_buffer_size(4 << 20);
        let _ = socket.set_send_buffer_size(1 << 20);
        if let Some(src) = key.source {
            socket.bind(&SockAddr::from(SocketAddr::new(src, 0)))?;
        }
        if let Some(ttl) = key.ttl {
            if key.ipv6 {
                socket.set_unicast_hops_v6(u32::from(ttl))?;
            } else {
                socket.set_ttl_v4(u32::from(ttl))?;
            }
        }
        if let Some(tos) = key.tos {
            if key.ipv6 {
                socket.set_tclass_v6(u32::from(tos))?;
            } else {
                socket.set_tos_v4(u32::from(tos))?;
            }
        }
        let on: libc::c_int = 1;
        // SAFETY: valid fd, option value is a c_int of the declared size.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_TIMESTAMPNS,
                (&on as *const libc::c_int).cast(),
                mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            tracing::debug!(
                "SO_TIMESTAMPNS unavailable, RTTs use user-space receive times: {}",
                io::Error::last_os_error()
            );
        }
        // SAFETY: the Socket owns its fd, keeps it open and never swaps it while it lives.
        let fd = unsafe { AsyncFd::register_with_interest(socket, tokio::io::Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(Self { fd, kind })
    }
}

impl IcmpSocket for KernelIcmpSocket {
    fn kind(&self) -> SocketKind {
        self.kind
    }

    fn send_to(&self, packet: &[u8], to: IpAddr) -> io::Result<()> {
        self.fd
            .get_ref()
            .send_to(packet, &SockAddr::from(SocketAddr::new(to, 0)))?;
        Ok(())
    }

    fn recv<'a>(&'a self, buf: &'a mut [u8]) -> BoxFuture<'a, io::Result<Received>> {
        Box::pin(async move {
            loop {
                let mut guard = self.fd.readable().await?;
                match guard.try_io(|s| recv_with_timestamp(s.get_ref().as_raw_fd(), buf)) {
                    Ok(result) => return result,
                    Err(_would_block) => continue,
                }
            }
        })
    }
}

fn recv_with_timestamp(fd: i32, buf: &mut [u8]) -> io::Result<Received> {
    let mut addr = MaybeUninit::<libc::sockaddr_storage>::zeroed();
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // u64 elements keep the control buffer aligned for cmsghdr.
    let mut control = [0u64; 16];
    // SAFETY: msghdr is plain data; zero is a valid initial state.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_name = addr.as_mut_ptr().cast();
    msg.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = mem::size_of_val(&control) as _;
    // SAFETY: all pointers in msg point to live buffers of the stated sizes.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT) };
    let read_at = Instant::now();
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut kernel_time = None;
    // SAFETY: msg was filled by recvmsg; CMSG_* walk within msg_controllen.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS
            {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                if ts.tv_sec >= 0 {
                    kernel_time =
                        Some(UNIX_EPOCH + Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    // SAFETY: the kernel wrote a sockaddr of the socket's family into addr.
    let from = unsafe { sockaddr_ip(addr.as_ptr()) }
        .ok_or_else(|| io::Error::other("reply without a source address"))?;
    Ok(Received {
        len: n as usize,
        from,
        kernel_time,
        read_at,
    })
}

/// # Safety
/// `addr` must point to an initialised sockaddr_storage.
unsafe fn sockaddr_ip(addr: *const libc::sockaddr_storage) -> Option<IpAddr> {
    // SAFETY: per the contract; the family field says which struct it is.
    unsafe {
        match i32::from((*addr).ss_family) {
            libc::AF_INET => {
                let sin = &*(addr.cast::<libc::sockaddr_in>());
                Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                    sin.sin_addr.s_addr,
                ))))
            }
            libc::AF_INET6 => {
                let sin6 = &*(addr.cast::<libc::sockaddr_in6>());
                Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
            }
            _ => None,
        }
    }
}

/// Builds an ICMP echo request. On datagram sockets the kernel replaces the identifier and
/// fills in the checksum; for ICMPv6 the kernel always computes the checksum.
pub fn echo_request(ipv6: bool, ident: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(8 + payload.len());
    p.push(if ipv6 { 128 } else { 8 });
    p.push(0);
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(&ident.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(payload);
    if !ipv6 {
        let sum = checksum(&p);
        p[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    p
}

/// Does an ICMPv4 message (from its type byte on) carry a valid checksum? Raw sockets see
/// packets before the kernel checks them; datagram sockets only ever see valid ones.
pub fn icmpv4_checksum_ok(icmp: &[u8]) -> bool {
    !icmp.is_empty() && checksum(icmp) == 0
}

/// The Internet checksum (RFC 1071).
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let word = if chunk.len() == 2 {
            u16::from_be_bytes([chunk[0], chunk[1]])
        } else {
            u16::from_be_bytes([chunk[0], 0])
        };
        sum = sum.wrapping_add(u32::from(word));
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_request_checksum_verifies() {
        let p = echo_request(false, 0x1234, 7, b"abcdefgh");
        assert_eq!(p[0], 8);
        assert_eq!(&p[4..8], &[0x12, 0x34, 0, 7]);
        // A packet with its checksum in place sums to zero.
        assert_eq!(checksum(&p), 0);
        let odd = echo_request(false, 1, 1, b"abc");
        assert_eq!(checksum(&odd), 0);
        assert!(icmpv4_checksum_ok(&p));
        let mut bad = p.clone();
        bad[9] ^= 1;
        assert!(!icmpv4_checksum_ok(&bad));
        assert!(!icmpv4_checksum_ok(&[]));
        let v6 = echo_request(true, 1, 2, b"x");
        assert_eq!(v6[0], 128);
        assert_eq!(&v6[2..4], &[0, 0]);
    }
}
