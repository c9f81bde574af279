//! Probe packets and the parts of answers we read: pure functions over bytes.
//!
//! Every UDP and ICMP probe carries a 12-byte header at the start of its payload:
//! `cookie (4) | flow (2) | seq (2) | compensation (2) | reserved (2)`. The cookie is random per
//! socket, so answers to other programs' probes are never taken for ours. The compensation word
//! steers the packet's checksum: UDP probes get `checksum == seq` (Paris traceroute's trick, which
//! identifies the probe from the 8 bytes of UDP header every router quotes), ICMP probes get one
//! checksum per flow (routers that balance ICMP hash its first four bytes).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::socket::ReplyKind;
use crate::sample::Unreachable;

pub(crate) const HEADER_LEN: usize = 12;
/// Offset of the compensation word in the payload: even, so it is a whole checksum word.
const COMP_OFFSET: usize = 8;

pub(crate) const PROTO_ICMP: u8 = 1;
pub(crate) const PROTO_TCP: u8 = 6;
pub(crate) const PROTO_UDP: u8 = 17;
pub(crate) const PROTO_ICMPV6: u8 = 58;

/// TCP flags.
pub(crate) const TCP_SYN: u8 = 0x02;
pub(crate) const TCP_RST: u8 = 0x04;
pub(crate) const TCP_ACK: u8 = 0x10;

/// One's-complement sum of big-endian 16-bit words, not yet folded.
fn sum(data: &[u8], mut acc: u64) -> u64 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u64::from(u16::from_be_bytes([*last, 0]));
    }
    acc
}

fn fold(mut acc: u64) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The Internet checksum (RFC 1071) of `data` plus a partial sum.
pub(crate) fn checksum(data: &[u8], partial: u64) -> u16 {
    !fold(sum(data, partial))
}

/// The sum of the pseudo header UDP, TCP and ICMPv6 checksums cover.
fn pseudo(src: IpAddr, dst: IpAddr, proto: u8, len: usize) -> u64 {
    let mut acc = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => sum(&d.octets(), sum(&s.octets(), 0)),
        (s, d) => sum(&v6(d).octets(), sum(&v6(s).octets(), 0)),
    };
    acc += u64::from(proto);
    acc += len as u64;
    acc
}

fn v6(a: IpAddr) -> Ipv6Addr {
    match a {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// The word that, added to data summing to `partial`, makes its checksum `target`.
fn compensation(partial: u64, target: u16) -> u16 {
    // checksum = !(s + x)  =>  x = !target - s, in one's complement: !target + !s.
    fold(u64::from(!target) + u64::from(!fold(partial)))
}

fn write_header(payload: &mut [u8], cookie: u32, flow: u16, seq: u16) {
    payload[..4].copy_from_slice(&cookie.to_be_bytes());
    payload[4..6].copy_from_slice(&flow.to_be_bytes());
    payload[6..8].copy_from_slice(&seq.to_be_bytes());
    payload[8..12].fill(0);
    for (i, b) in payload[HEADER_LEN..].iter_mut().enumerate() {
        *b = (i & 0xff) as u8;
    }
}

/// Reads `(flow, seq)` from a payload that starts with our header and cookie.
pub(crate) fn read_header(payload: &[u8], cookie: u32) -> Option<(u16, u16)> {
    let h = payload.get(..HEADER_LEN)?;
    if h[..4] != cookie.to_be_bytes() {
        return None;
    }
    Some((
        u16::from_be_bytes([h[4], h[5]]),
        u16::from_be_bytes([h[6], h[7]]),
    ))
}

/// Where a UDP probe goes, for its checksum.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UdpPorts {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
}

/// A UDP probe's payload of `len` bytes (at least [`HEADER_LEN`]); with `ports`, chosen so that
/// the kernel's UDP checksum comes out as `seq`.
pub(crate) fn udp_payload(
    len: usize,
    cookie: u32,
    flow: u16,
    seq: u16,
    ports: Option<UdpPorts>,
) -> Vec<u8> {
    let mut p = vec![0u8; len.max(HEADER_LEN)];
    write_header(&mut p, cookie, flow, seq);
    if let Some(u) = ports {
        let udp_len = 8 + p.len();
        let mut acc = pseudo(u.src, u.dst, PROTO_UDP, udp_len);
        acc = sum(&u.sport.to_be_bytes(), acc);
        acc = sum(&u.dport.to_be_bytes(), acc);
        acc += udp_len as u64;
        acc = sum(&p, acc);
        let comp = compensation(acc, seq);
        p[COMP_OFFSET..COMP_OFFSET + 2].copy_from_slice(&comp.to_be_bytes());
    }
    p
}

/// The checksum an ICMP flow's echo requests all share.
pub(crate) fn icmp_flow_checksum(flow: u16) -> u16 {
    0x5a00_u16.wrapping_add(flow.wrapping_mul(0x0101))
}

/// An ICMP(v6) echo request whose checksum is [`icmp_flow_checksum`] of its flow. `pseudo` gives
/// the addresses an ICMPv6 checksum covers; `ident` is the one the kernel will put in (datagram
/// sockets) or ours (raw sockets).
pub(crate) fn icmp_echo(
    ipv6: bool,
    ident: u16,
    seq: u16,
    payload_len: usize,
    cookie: u32,
    flow: u16,
    pseudo_addrs: Option<(IpAddr, IpAddr)>,
) -> Vec<u8> {
    let payload_len = payload_len.max(HEADER_LEN);
    let mut p = vec![0u8; 8 + payload_len];
    p[0] = if ipv6 { 128 } else { 8 };
    p[4..6].copy_from_slice(&ident.to_be_bytes());
    p[6..8].copy_from_slice(&seq.to_be_bytes());
    write_header(&mut p[8..], cookie, flow, seq);
    let mut acc = match (ipv6, pseudo_addrs) {
        (true, Some((s, d))) => pseudo(s, d, PROTO_ICMPV6, p.len()),
        _ => 0,
    };
    acc = sum(&p, acc);
    let target = icmp_flow_checksum(flow);
    let comp = compensation(acc, target);
    p[8 + COMP_OFFSET..8 + COMP_OFFSET + 2].copy_from_slice(&comp.to_be_bytes());
    p[2..4].copy_from_slice(&target.to_be_bytes());
    p
}

/// A TCP SYN with an MSS option, checksummed.
pub(crate) fn tcp_syn(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, seq: u32) -> Vec<u8> {
    let mut t = vec![0u8; 24];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[12] = 6 << 4; // data offset: 6 words
    t[13] = TCP_SYN;
    t[14..16].copy_from_slice(&64240u16.to_be_bytes());
    let mss: u16 = if dst.is_ipv6() { 1440 } else { 1460 };
    t[20] = 2;
    t[21] = 4;
    t[22..24].copy_from_slice(&mss.to_be_bytes());
    let c = checksum(&t, pseudo(src, dst, PROTO_TCP, t.len()));
    t[16..18].copy_from_slice(&c.to_be_bytes());
    t
}

/// An ICMP message: its header fields and everything after the first 8 bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IcmpMsg<'a> {
    pub typ: u8,
    pub code: u8,
    /// Bytes 4..8: identifier and sequence for echo, MTU for "too big".
    pub rest: [u8; 4],
    pub body: &'a [u8],
}

pub(crate) fn icmp(msg: &[u8]) -> Option<IcmpMsg<'_>> {
    let h = msg.get(..8)?;
    Some(IcmpMsg {
        typ: h[0],
        code: h[1],
        rest: [h[4], h[5], h[6], h[7]],
        body: &msg[8..],
    })
}

impl IcmpMsg<'_> {
    pub fn ident(&self) -> u16 {
        u16::from_be_bytes([self.rest[0], self.rest[1]])
    }
    pub fn seq(&self) -> u16 {
        u16::from_be_bytes([self.rest[2], self.rest[3]])
    }
    /// Next-hop MTU of "fragmentation needed" (low 16 bits, IPv4) / "packet too big" (IPv6).
    pub fn mtu(&self, ipv6: bool) -> u32 {
        if ipv6 {
            u32::from_be_bytes(self.rest)
        } else {
            u32::from(u16::from_be_bytes([self.rest[2], self.rest[3]]))
        }
    }
}

/// An IPv4 packet as a raw socket delivers it: source, TTL, protocol and payload.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ipv4Packet<'a> {
    pub src: Ipv4Addr,
    pub ttl: u8,
    pub proto: u8,
    pub payload: &'a [u8],
}

pub(crate) fn ipv4(packet: &[u8]) -> Option<Ipv4Packet<'_>> {
    let first = *packet.first()?;
    if first >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(first & 0x0f) * 4;
    if ihl < 20 || packet.len() < ihl {
        return None;
    }
    Some(Ipv4Packet {
        src: Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]),
        ttl: packet[8],
        proto: packet[9],
        payload: &packet[ihl..],
    })
}

/// The packet an ICMP error quotes: where it was going and its transport header (as much as
/// the router quoted: at least 8 bytes, often the whole probe).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Quote<'a> {
    pub dst: IpAddr,
    pub proto: u8,
    pub transport: &'a [u8],
}

pub(crate) fn quote(ipv6: bool, body: &[u8]) -> Option<Quote<'_>> {
    if ipv6 {
        let h = body.get(..40)?;
        if h[0] >> 4 != 6 {
            return None;
        }
        let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&h[24..40]).ok()?);
        let mut next = h[6];
        let mut rest = &body[40..];
        // Extension headers a probe could carry: hop-by-hop, routing, destination options.
        for _ in 0..4 {
            match next {
                0 | 43 | 60 => {
                    let len = (usize::from(*rest.get(1)?) + 1) * 8;
                    next = rest[0];
                    rest = rest.get(len..)?;
                }
                _ => break,
            }
        }
        Some(Quote {
            dst: IpAddr::V6(dst),
            proto: next,
            transport: rest,
        })
    } else {
        let first = *body.first()?;
        let ihl = usize::from(first & 0x0f) * 4;
        if first >> 4 != 4 || ihl < 20 || body.len() < ihl {
            return None;
        }
        Some(Quote {
            dst: IpAddr::V4(Ipv4Addr::new(body[16], body[17], body[18], body[19])),
            proto: body[9],
            transport: &body[ihl..],
        })
    }
}

/// What an ICMP error of this type and code means for a trace; `None` for messages that are no
/// answer to a probe (e.g. fragment reassembly time exceeded).
pub(crate) fn classify(ipv6: bool, typ: u8, code: u8, mtu: u32) -> Option<ReplyKind> {
    use Unreachable as U;
    let u = |x| Some(ReplyKind::Unreachable(x));
    if ipv6 {
        match (typ, code) {
            (3, 0) => Some(ReplyKind::TimeExceeded),
            (2, _) => u(U::FragmentationNeeded { mtu }),
            (1, 0) => u(U::Network),
            (1, 1 | 5 | 6) => u(U::Prohibited),
            (1, 3) => u(U::Host),
            (1, 4) => u(U::Port),
            (1, c) => u(U::Other(c)),
            _ => None,
        }
    } else {
        match (typ, code) {
            (11, 0) => Some(ReplyKind::TimeExceeded),
            (3, 0 | 6 | 11) => u(U::Network),
            (3, 1 | 7 | 12) => u(U::Host),
            (3, 2) => u(U::Protocol),
            (3, 3) => u(U::Port),
            (3, 4) => u(U::FragmentationNeeded { mtu }),
            (3, 9 | 10 | 13) => u(U::Prohibited),
            (3, c) => u(U::Other(c)),
            _ => None,
        }
    }
}

/// The fields of a TCP segment we match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TcpSeg {
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
}

/// Parses a TCP header; an ICMP quote of 8 bytes yields ports and sequence, flags and ack zero.
pub(crate) fn tcp(seg: &[u8]) -> Option<TcpSeg> {
    let h = seg.get(..8)?;
    let (ack, flags) = match seg.get(8..14) {
        Some(more) => (
            u32::from_be_bytes([more[0], more[1], more[2], more[3]]),
            more[5],
        ),
        None => (0, 0),
    };
    Some(TcpSeg {
        sport: u16::from_be_bytes([h[0], h[1]]),
        dport: u16::from_be_bytes([h[2], h[3]]),
        seq: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
        ack,
        flags,
    })
}

/// The fields of a quoted UDP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UdpHdr<'a> {
    pub sport: u16,
    pub dport: u16,
    pub checksum: u16,
    pub payload: &'a [u8],
}

pub(crate) fn udp(seg: &[u8]) -> Option<UdpHdr<'_>> {
    let h = seg.get(..8)?;
    Some(UdpHdr {
        sport: u16::from_be_bytes([h[0], h[1]]),
        dport: u16::from_be_bytes([h[2], h[3]]),
        checksum: u16::from_be_bytes([h[6], h[7]]),
        payload: &seg[8..],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// The UDP checksum as the kernel computes it for this payload.
    fn udp_checksum(u: UdpPorts, payload: &[u8]) -> u16 {
        let len = 8 + payload.len();
        let mut seg = Vec::new();
        seg.extend_from_slice(&u.sport.to_be_bytes());
        seg.extend_from_slice(&u.dport.to_be_bytes());
        seg.extend_from_slice(&(len as u16).to_be_bytes());
        seg.extend_from_slice(&[0, 0]);
        seg.extend_from_slice(payload);
        match checksum(&seg, pseudo(u.src, u.dst, PROTO_UDP, len)) {
            0 => 0xffff,
            c => c,
        }
    }

    #[test]
    fn udp_checksum_equals_the_sequence_number() {
        let mut rng = 0x1234_5678_u64;
        let mut next = || {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (rng >> 33) as u32
        };
        for (src, dst) in [
            (a("10.0.0.1"), a("192.0.2.77")),
            (a("fd00::1"), a("2001:db8::dead:beef")),
        ] {
            for len in [12, 13, 32, 1000] {
                for _ in 0..200 {
                    let seq = (next() % 0xfffe + 1) as u16;
                    let ports = UdpPorts {
                        src,
                        dst,
                        sport: next() as u16,
                        dport: 33434,
                    };
                    let p = udp_payload(len, next(), 3, seq, Some(ports));
                    assert_eq!(p.len(), len);
                    assert_eq!(udp_checksum(ports, &p), seq, "{src} len {len}");
                }
            }
        }
    }

    #[test]
    fn icmp_checksum_is_constant_per_flow_and_valid() {
        for flow in 0..16u16 {
            for seq in [1u16, 2, 77, 0xfffe] {
                let p = icmp_echo(false, 0xbeef, seq, 32, 0xabcd_0123, flow, None);
                assert_eq!(p.len(), 40);
                assert_eq!(u16::from_be_bytes([p[2], p[3]]), icmp_flow_checksum(flow));
                // A valid checksum sums to zero over the whole message.
                assert_eq!(checksum(&p, 0), 0, "flow {flow} seq {seq}");
                let (s, d) = (a("fd00::1"), a("fd00::2"));
                let p6 = icmp_echo(true, 7, seq, 20, 1, flow, Some((s, d)));
                assert_eq!(checksum(&p6, pseudo(s, d, PROTO_ICMPV6, p6.len())), 0);
                assert_eq!(u16::from_be_bytes([p6[2], p6[3]]), icmp_flow_checksum(flow));
            }
        }
        assert_ne!(icmp_flow_checksum(0), icmp_flow_checksum(1));
    }

    #[test]
    fn tcp_syn_is_valid() {
        let (s, d) = (a("10.1.1.1"), a("10.2.2.2"));
        let t = tcp_syn(s, d, 40000, 80, 0xa1b2_0005);
        assert_eq!(checksum(&t, pseudo(s, d, PROTO_TCP, t.len())), 0);
        let seg = tcp(&t).unwrap();
        assert_eq!((seg.sport, seg.dport, seg.seq), (40000, 80, 0xa1b2_0005));
        assert_eq!(seg.flags, TCP_SYN);
        let (s6, d6) = (a("fd00::1"), a("fd00::9"));
        let t6 = tcp_syn(s6, d6, 1, 2, 3);
        assert_eq!(checksum(&t6, pseudo(s6, d6, PROTO_TCP, t6.len())), 0);
    }

    #[test]
    fn header_round_trips_and_checks_the_cookie() {
        let p = udp_payload(32, 0xdead_beef, 5, 999, None);
        assert_eq!(read_header(&p, 0xdead_beef), Some((5, 999)));
        assert_eq!(read_header(&p, 0xdead_bee0), None);
        assert_eq!(read_header(&p[..11], 0xdead_beef), None);
        assert_eq!(read_header(&[], 1), None);
    }

    #[test]
    fn quotes_of_both_families_parse() {
        // IPv4 header (20 bytes) + 8 bytes of UDP.
        let mut q4 = vec![
            0x45, 0, 0, 60, 0, 0, 0, 0, 1, 17, 0, 0, 10, 0, 0, 1, 192, 0, 2, 9,
        ];
        q4.extend_from_slice(&[0x9c, 0x40, 0x82, 0x9a, 0, 40, 0x12, 0x34]);
        let q = quote(false, &q4).unwrap();
        assert_eq!((q.dst, q.proto), (a("192.0.2.9"), PROTO_UDP));
        let u = udp(q.transport).unwrap();
        assert_eq!((u.sport, u.dport, u.checksum), (40000, 33434, 0x1234));
        assert!(u.payload.is_empty());
        // IPv6 header with a hop-by-hop extension header before TCP.
        let mut q6 = vec![0u8; 40];
        q6[0] = 0x60;
        q6[6] = 0;
        q6[24..40].copy_from_slice(&"2001:db8::5".parse::<Ipv6Addr>().unwrap().octets());
        q6.extend_from_slice(&[PROTO_TCP, 0, 0, 0, 0, 0, 0, 0]);
        q6.extend_from_slice(&[0, 80, 1, 187, 1, 2, 3, 4]);
        let q = quote(true, &q6).unwrap();
        assert_eq!((q.dst, q.proto), (a("2001:db8::5"), PROTO_TCP));
        assert_eq!(tcp(q.transport).unwrap().seq, 0x0102_0304);
        // Truncated and foreign input is refused, never a panic.
        assert!(quote(false, &q4[..10]).is_none());
        assert!(quote(true, &q6[..39]).is_none());
        assert!(quote(false, &[0x65u8; 30]).is_none());
        for bad in [
            &q4[..10],
            &[0x65u8; 30][..],
            &[][..],
            &q6[..39],
            &[0x4f; 3][..],
        ] {
            let _ = quote(false, bad);
            let _ = quote(true, bad);
            let _ = ipv4(bad);
            let _ = icmp(bad);
            let _ = tcp(bad);
            let _ = udp(bad);
        }
    }

    #[test]
    fn icmp_types_classify() {
        use ReplyKind as K;
        assert_eq!(classify(false, 11, 0, 0), Some(K::TimeExceeded));
        assert_eq!(classify(false, 11, 1, 0), None);
        assert_eq!(
            classify(false, 3, 3, 0),
            Some(K::Unreachable(Unreachable::Port))
        );
        assert_eq!(
            classify(false, 3, 13, 0),
            Some(K::Unreachable(Unreachable::Prohibited))
        );
        assert_eq!(
            classify(false, 3, 4, 1400),
            Some(K::Unreachable(Unreachable::FragmentationNeeded {
                mtu: 1400
            }))
        );
        assert_eq!(classify(true, 3, 0, 0), Some(K::TimeExceeded));
        assert_eq!(
            classify(true, 1, 4, 0),
            Some(K::Unreachable(Unreachable::Port))
        );
        assert_eq!(
            classify(true, 1, 0, 0),
            Some(K::Unreachable(Unreachable::Network))
        );
        assert_eq!(classify(true, 128, 0, 0), None);
    }
}
