//! SYN probes from a raw TCP socket (CAP_NET_RAW). Each flow has a source port reserved by a
//! bound (never listening) TCP socket, so no local connection takes it and the kernel resets
//! the answers. The destination's SYN-ACK or RST is read on the raw TCP socket, the routers'
//! ICMP errors on a raw ICMP socket; both name the probe by the sequence number of the SYN.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use socket2::{Protocol, Socket, Type};
use tokio::io::unix::AsyncFd;

use super::receive::{self, Inbox, Ports, reply, valid_seq};
use super::{Kind, socket};
use crate::lock::LockExt;
use crate::net::sys::Msg;
use crate::net::trace::wire;
use crate::net::trace::{Outgoing, ReplyKind, TraceReply, TraceSocketKey};

#[derive(Debug)]
pub(super) struct TcpRawTrace {
    key: TraceSocketKey,
    probes: SynProbes,
    tcp: Arc<AsyncFd<Socket>>,
    /// The bound sockets that keep each flow's source port ours.
    reserved: Mutex<Vec<Socket>>,
    sources: socket::Sources,
}

impl TcpRawTrace {
    pub fn open(key: &TraceSocketKey, inbox: &Inbox) -> io::Result<Self> {
        let ipv6 = key.ipv6;
        let icmp = socket::register(socket::raw_icmp(ipv6, false)?)?;
        let tcp = socket::new(ipv6, Type::RAW, Protocol::TCP)?;
        socket::set_tos(&tcp, ipv6, key.tos)?;
        socket::bind_source(&tcp, key.source)?;
        socket::receive_options(&tcp, ipv6);
        let tcp = socket::register(tcp)?;
        let probes = SynProbes {
            ipv6,
            cookie: rand::random(),
            ports: Ports::default(),
        };
        let ours = probes.clone();
        inbox.read(icmp, false, move |m, data, _| ours.raw_error(m, data));
        let ours = probes.clone();
        inbox.read(tcp.clone(), false, move |m, data, _| ours.answer(m, data));
        let t = Self {
            key: *key,
            probes,
            tcp,
            reserved: Mutex::new(Vec::new()),
            sources: socket::Sources::new(key.source),
        };
        t.port(0)?;
        Ok(t)
    }

    fn port(&self, flow: u16) -> io::Result<u16> {
        let mut reserved = self.reserved.lock_or_recover();
        while reserved.len() <= usize::from(flow) {
            let s = socket::new(self.key.ipv6, Type::STREAM, Protocol::TCP)?;
            let port = socket::bind_port(&s, self.key.ipv6, self.key.source)?;
            self.probes.ports.push(port);
            reserved.push(s);
        }
        Ok(self.probes.ports.of_flow(flow))
    }
}

impl Kind for TcpRawTrace {
    fn raw(&self) -> bool {
        true
    }

    fn send(&self, p: &Outgoing, _: &Inbox) -> io::Result<()> {
        let sport = self.port(p.flow)?;
        let src = self.sources.for_dst(p.dst)?;
        let seq = (u32::from(self.probes.cookie) << 16) | u32::from(p.seq);
        let syn = wire::tcp_syn(src, p.dst, sport, p.port, seq);
        // Raw IPv6 sockets take the port field as the protocol; it must be zero or ours.
        socket::send(self.tcp.get_ref(), &syn, SocketAddr::new(p.dst, 0), p.ttl)
    }
}

/// What names our SYNs in the answers to them: the cookie in the upper half of their sequence
/// number (the probe's in the lower), and the source port of their flow.
#[derive(Debug, Clone)]
pub(super) struct SynProbes {
    pub ipv6: bool,
    pub cookie: u16,
    pub ports: Ports,
}

impl SynProbes {
    /// An ICMP error about one of our SYNs, read on a raw ICMP socket.
    pub fn raw_error(&self, m: &Msg, data: &[u8]) -> Option<TraceReply> {
        let (from, ttl, msg) = receive::raw_icmp_message(self.ipv6, m, data)?;
        let e = receive::raw_error(self.ipv6, from, &msg, wire::PROTO_TCP)?;
        let seg = wire::tcp(e.quote.transport)?;
        let flow = self.ports.flow(seg.sport)?;
        if (seg.seq >> 16) as u16 != self.cookie {
            return None;
        }
        let seq = valid_seq(seg.seq as u16);
        Some(reply(e.from, e.quote.dst, Some(flow), seq, e.kind, m, ttl))
    }

    /// The destination's SYN-ACK or RST to one of our SYNs, read on the raw TCP socket.
    pub fn answer(&self, m: &Msg, data: &[u8]) -> Option<TraceReply> {
        let (from, ttl, seg) = receive::raw_packet(self.ipv6, wire::PROTO_TCP, m, data)?;
        let seg = wire::tcp(seg)?;
        let flow = self.ports.flow(seg.dport)?;
        let kind = if seg.flags & wire::TCP_RST != 0 {
            ReplyKind::TcpReset
        } else if seg.flags & (wire::TCP_SYN | wire::TCP_ACK) == wire::TCP_SYN | wire::TCP_ACK {
            ReplyKind::TcpSynAck
        } else {
            return None;
        };
        // Both answer our SYN with ack = its sequence + 1.
        let acked = seg.ack.wrapping_sub(1);
        if seg.flags & wire::TCP_ACK == 0 || (acked >> 16) as u16 != self.cookie {
            return None;
        }
        let seq = valid_seq(acked as u16);
        Some(reply(from, from, Some(flow), seq, kind, m, ttl))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::trace::kernel::test_packets::{a, icmp_error, ip4, msg, probe};

    #[test]
    fn raw_tcp_errors_and_answers_check_port_and_cookie() {
        let cookie: u16 = 0xabcd;
        let ours = SynProbes {
            ipv6: false,
            cookie,
            ports: Ports::of(&[41000]),
        };
        let other_cookie = SynProbes {
            cookie: cookie ^ 1,
            ..ours.clone()
        };
        let other_port = SynProbes {
            ports: Ports::of(&[1]),
            ..ours.clone()
        };
        let m = msg(None, None);
        let seq = (u32::from(cookie) << 16) | 9;
        let mut syn = Vec::new();
        syn.extend_from_slice(&41000u16.to_be_bytes());
        syn.extend_from_slice(&80u16.to_be_bytes());
        syn.extend_from_slice(&seq.to_be_bytes());
        let pkt = icmp_error("10.9.9.9", 11, 0, &probe(wire::PROTO_TCP, &syn));
        let r = ours.raw_error(&m, &pkt).unwrap();
        assert_eq!((r.seq, r.flow, r.from), (Some(9), Some(0), a("10.9.9.9")));
        assert!(other_cookie.raw_error(&m, &pkt).is_none());

        let reply = |flags: u8, ack: u32| {
            let mut t = vec![0u8; 20];
            t[0..2].copy_from_slice(&80u16.to_be_bytes());
            t[2..4].copy_from_slice(&41000u16.to_be_bytes());
            t[8..12].copy_from_slice(&ack.to_be_bytes());
            t[12] = 5 << 4;
            t[13] = flags;
            ip4("192.0.2.9", "10.0.0.1", 6, 58, &t)
        };
        let synack = reply(wire::TCP_SYN | wire::TCP_ACK, seq + 1);
        let r = ours.answer(&m, &synack).unwrap();
        assert_eq!(
            (r.kind, r.seq, r.from, r.dst),
            (
                ReplyKind::TcpSynAck,
                Some(9),
                a("192.0.2.9"),
                a("192.0.2.9")
            )
        );
        let rst = reply(wire::TCP_RST | wire::TCP_ACK, seq + 1);
        let r = ours.answer(&m, &rst).unwrap();
        assert_eq!(r.kind, ReplyKind::TcpReset);
        // A connection of someone else's to that port, a bare SYN, another cookie.
        assert!(ours.answer(&m, &reply(wire::TCP_SYN, 0)).is_none());
        let stranger = reply(wire::TCP_SYN | wire::TCP_ACK, 12345);
        assert!(ours.answer(&m, &stranger).is_none());
        assert!(other_port.answer(&m, &synack).is_none());
    }
}
