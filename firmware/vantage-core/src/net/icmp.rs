//! Kernel ICMP sockets with kernel send and receive timestamps.
//!
//! We open the socket ourselves rather than through surge-ping's `Client`, because the client
//! timestamps replies in user space after a task switch and cannot read `SO_TIMESTAMPNS`; the
//! wire format is decoded with surge-ping's packet types (see `probe::ping`).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::socket::{
    BoxFuture, IcmpSocket, IcmpSocketFactory, Received, SENT_HEAD_LEN, SentStamp, SocketKey,
    SocketKind,
};
use super::sys;

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
    /// `SO_TIMESTAMPING` send stamps are on: each sent packet comes back on the error queue.
    tx_stamps: bool,
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
        sys::stamp_receives(socket.as_raw_fd());
        let tx_stamps = sys::stamp_sends(socket.as_raw_fd());
        let fd = sys::register(socket, Interest::READABLE)?;
        Ok(Self {
            fd,
            kind,
            tx_stamps,
        })
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

    fn stamps_sends(&self) -> bool {
        self.tx_stamps
    }

    fn sent_stamps(&self, out: &mut Vec<SentStamp>) {
        if !self.tx_stamps {
            return;
        }
        let fd = self.fd.get_ref().as_raw_fd();
        // Bounded: a socket's error queue holds at most its receive buffer's worth.
        for _ in 0..MAX_STAMPS_PER_DRAIN {
            match read_sent_stamp(fd) {
                Ok(Some(stamp)) => out.push(stamp),
                Ok(None) => {}
                Err(_) => break,
            }
        }
    }
}

/// Stamps read per call; the queue is drained after every send, so a call rarely finds more
/// than one.
const MAX_STAMPS_PER_DRAIN: usize = 1024;

/// Reads one message of the error queue: `Ok(None)` for one that is not a usable send stamp,
/// an error (`EAGAIN`) when the queue is empty.
fn read_sent_stamp(fd: RawFd) -> io::Result<Option<SentStamp>> {
    // Link, IP and ICMP headers plus the cookie; the rest of the packet is cut off.
    let mut buf = [0u8; 160];
    let m = sys::recv(fd, &mut buf, true)?;
    Ok(m.sent_time.and_then(|time| {
        let (to, icmp_head) = locate_echo_request(&buf[..m.len])?;
        Some(SentStamp {
            to,
            icmp_head,
            time,
        })
    }))
}

/// Finds our echo request in a packet the kernel looped back with its send stamp. The packet
/// starts at the link-layer header, whose length depends on the device (14 for Ethernet and
/// loopback, 0 for tunnels), so the IP header is searched for: version, protocol and an
/// echo-request type must all fit.
fn locate_echo_request(data: &[u8]) -> Option<(IpAddr, [u8; SENT_HEAD_LEN])> {
    const LIKELY: [usize; 4] = [14, 0, 18, 16];
    let mut scan = LIKELY
        .into_iter()
        .chain((1..=32).filter(|o| !LIKELY.contains(o)));
    scan.find_map(|off| echo_request_at(data.get(off..)?))
}

fn echo_request_at(ip: &[u8]) -> Option<(IpAddr, [u8; SENT_HEAD_LEN])> {
    let (to, icmp) = match ip.first()? >> 4 {
        4 if ip[0] == 0x45 && *ip.get(9)? == 1 => {
            let dst: [u8; 4] = ip.get(16..20)?.try_into().ok()?;
            (IpAddr::V4(dst.into()), ip.get(20..)?)
        }
        6 if *ip.get(6)? == 58 => {
            let dst: [u8; 16] = ip.get(24..40)?.try_into().ok()?;
            (IpAddr::V6(dst.into()), ip.get(40..)?)
        }
        _ => return None,
    };
    let echo = if to.is_ipv4() { 8 } else { 128 };
    if *icmp.first()? != echo || *icmp.get(1)? != 0 {
        return None;
    }
    Some((to, icmp.get(..SENT_HEAD_LEN)?.try_into().ok()?))
}

fn recv_with_timestamp(fd: RawFd, buf: &mut [u8]) -> io::Result<Received> {
    let m = sys::recv(fd, buf, false)?;
    let from = m
        .name
        .ok_or_else(|| io::Error::other("reply without a source address"))?;
    Ok(Received {
        len: m.len,
        from: from.ip(),
        kernel_time: m.kernel_time,
        read_at: m.read_at,
    })
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
    use std::net::Ipv6Addr;

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

    fn ipv4_packet(link: usize, to: [u8; 4], icmp: &[u8]) -> Vec<u8> {
        let mut p = vec![0xaa; link];
        let total = (20 + icmp.len()) as u16;
        p.extend_from_slice(&[
            0x45,
            0,
            (total >> 8) as u8,
            total as u8,
            0,
            0,
            0x40,
            0,
            64,
            1,
        ]);
        p.extend_from_slice(&[0, 0, 127, 0, 0, 1]);
        p.extend_from_slice(&to);
        p.extend_from_slice(icmp);
        p
    }

    #[test]
    fn looped_requests_are_found_behind_any_link_header() {
        let icmp = echo_request(false, 9, 513, b"cookie!!0123456789");
        for link in [0, 14, 18, 23] {
            let p = ipv4_packet(link, [10, 1, 2, 3], &icmp);
            let (to, head) = locate_echo_request(&p).unwrap_or_else(|| panic!("link {link}"));
            assert_eq!(to, IpAddr::from([10, 1, 2, 3]));
            assert_eq!(&head[..], &icmp[..SENT_HEAD_LEN]);
        }
        let icmp6 = echo_request(true, 9, 7, b"cookie!!");
        let mut p6 = vec![0u8; 14];
        p6.extend_from_slice(&[0x60, 0, 0, 0, 0, icmp6.len() as u8, 58, 64]);
        p6.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        p6.extend_from_slice(&"fd00::7".parse::<Ipv6Addr>().unwrap().octets());
        p6.extend_from_slice(&icmp6);
        let (to, head) = locate_echo_request(&p6).unwrap();
        assert_eq!(to, "fd00::7".parse::<IpAddr>().unwrap());
        assert_eq!(&head[..], &icmp6[..SENT_HEAD_LEN]);
    }

    #[test]
    fn stamps_of_other_packets_are_not_taken_for_requests() {
        // An echo reply, a UDP datagram, a truncated request, and noise.
        let mut reply = echo_request(false, 1, 1, b"cookie!!");
        reply[0] = 0;
        assert_eq!(
            locate_echo_request(&ipv4_packet(14, [1, 2, 3, 4], &reply)),
            None
        );
        let mut udp = ipv4_packet(14, [1, 2, 3, 4], &[8; 16]);
        udp[14 + 9] = 17;
        assert_eq!(locate_echo_request(&udp), None);
        let short = ipv4_packet(14, [1, 2, 3, 4], &echo_request(false, 1, 1, b"coo"));
        assert_eq!(locate_echo_request(&short), None);
        assert_eq!(locate_echo_request(&[0x45; 60]), None);
        assert_eq!(locate_echo_request(&[]), None);
    }
}
