//! UDP probes: one socket per flow, so each flow keeps its source port for the socket's life.
//! Unprivileged, the ICMP errors come from each socket's error queue and name the probe by the
//! quoted payload; raw, they are read on a raw ICMP socket and the quoted UDP checksum names
//! the probe, so 8-byte quotes suffice.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use socket2::{Protocol, Socket, Type};
use tokio::io::unix::AsyncFd;

use super::receive::{self, Inbox, Ports, reply, valid_seq};
use super::{Kind, socket};
use crate::lock::LockExt;
use crate::net::sys::Msg;
use crate::net::trace::wire::{self, UdpPorts};
use crate::net::trace::{Outgoing, ReplyKind, TraceReply, TraceSocketKey};

#[derive(Debug)]
pub(super) struct UdpTrace {
    key: TraceSocketKey,
    raw: bool,
    probes: UdpProbes,
    flows: Mutex<Vec<Arc<AsyncFd<Socket>>>>,
    sources: socket::Sources,
}

impl UdpTrace {
    pub fn open(key: &TraceSocketKey, raw: bool, inbox: &Inbox) -> io::Result<Self> {
        let t = Self {
            key: *key,
            raw,
            probes: UdpProbes {
                ipv6: key.ipv6,
                cookie: rand::random(),
                ports: Ports::default(),
            },
            flows: Mutex::new(Vec::new()),
            sources: socket::Sources::new(key.source),
        };
        if raw {
            let fd = socket::register(socket::raw_icmp(key.ipv6, false)?)?;
            let probes = t.probes.clone();
            inbox.read(fd, false, move |m, data, _| probes.raw_error(m, data));
        }
        // Open flow 0 now so that a refused socket fails here, not on the first send.
        t.flow_socket(0, inbox)?;
        Ok(t)
    }

    fn flow_socket(&self, flow: u16, inbox: &Inbox) -> io::Result<(Arc<AsyncFd<Socket>>, u16)> {
        let mut flows = self.flows.lock_or_recover();
        while flows.len() <= usize::from(flow) {
            let ipv6 = self.key.ipv6;
            let s = socket::new(ipv6, Type::DGRAM, Protocol::UDP)?;
            socket::set_tos(&s, ipv6, self.key.tos)?;
            let port = socket::bind_port(&s, ipv6, self.key.source)?;
            if !self.raw {
                socket::recv_errors(&s, ipv6)?;
            }
            socket::receive_options(&s, ipv6);
            let fd = socket::register(s)?;
            let (this_flow, probes) = (flows.len() as u16, self.probes.clone());
            inbox.read(fd.clone(), !self.raw, move |m, data, queue| {
                if queue {
                    probes.queued_error(this_flow, m, data)
                } else {
                    probes.data(this_flow, m, data)
                }
            });
            self.probes.ports.push(port);
            flows.push(fd);
        }
        let port = self.probes.ports.of_flow(flow);
        Ok((flows[usize::from(flow)].clone(), port))
    }
}

impl Kind for UdpTrace {
    fn raw(&self) -> bool {
        self.raw
    }

    fn send(&self, p: &Outgoing, inbox: &Inbox) -> io::Result<()> {
        let (fd, sport) = self.flow_socket(p.flow, inbox)?;
        let ipv6 = p.dst.is_ipv6();
        let len = p.size.saturating_sub(if ipv6 { 48 } else { 28 });
        let src = self.sources.for_dst(p.dst)?;
        let ports = UdpPorts {
            src,
            dst: p.dst,
            sport,
            dport: p.port,
        };
        let cookie = self.probes.cookie;
        let payload = wire::udp_payload(len, cookie, p.flow, p.seq, Some(ports));
        socket::send(
            fd.get_ref(),
            &payload,
            SocketAddr::new(p.dst, p.port),
            p.ttl,
        )
    }
}

/// What names our probes in the answers to them: the cookie in their payload, and the source
/// port of their flow.
#[derive(Debug, Clone)]
pub(super) struct UdpProbes {
    pub ipv6: bool,
    pub cookie: u32,
    pub ports: Ports,
}

impl UdpProbes {
    /// The probe a quoted UDP payload names: `None` when it is not one of this flow's probes,
    /// `Some(None)` when the quote is too short to say.
    fn quoted_seq(&self, payload: &[u8], flow: u16) -> Option<Option<u16>> {
        match wire::read_header(payload, self.cookie) {
            Some((f, s)) if f == flow => Some(Some(s)),
            Some(_) => None,
            // Quoted, but with another cookie: an earlier process that had this port.
            None if payload.len() >= wire::HEADER_LEN => None,
            None => Some(None),
        }
    }

    /// An ICMP error about one of our UDP probes, read on a raw ICMP socket.
    pub fn raw_error(&self, m: &Msg, data: &[u8]) -> Option<TraceReply> {
        let (from, ttl, msg) = receive::raw_icmp_message(self.ipv6, m, data)?;
        let e = receive::raw_error(self.ipv6, from, &msg, wire::PROTO_UDP)?;
        let u = wire::udp(e.quote.transport)?;
        let flow = self.ports.flow(u.sport)?;
        // The quoted payload names the probe when the router quoted it; the checksum always
        // does (routers quote at least 8 bytes of UDP header).
        let seq = self
            .quoted_seq(u.payload, flow)?
            .or_else(|| valid_seq(u.checksum));
        Some(reply(e.from, e.quote.dst, Some(flow), seq, e.kind, m, ttl))
    }

    /// An ICMP error from the error queue of `flow`'s socket: the data is the quoted UDP
    /// payload, which routers that quote only 8 bytes leave empty.
    pub fn queued_error(&self, flow: u16, m: &Msg, data: &[u8]) -> Option<TraceReply> {
        let (e, kind) = receive::queued_icmp(self.ipv6, m)?;
        let from = e.offender?;
        let dst = m.name?.ip();
        let seq = self.quoted_seq(data, flow)?;
        Some(reply(from, dst, Some(flow), seq, kind, m, m.ttl))
    }

    /// A datagram from the destination on `flow`'s socket: a service answered on the port.
    pub fn data(&self, flow: u16, m: &Msg, data: &[u8]) -> Option<TraceReply> {
        let from = m.name?.ip();
        let seq = wire::read_header(data, self.cookie)
            .filter(|(f, _)| *f == flow)
            .map(|(_, s)| s);
        let kind = ReplyKind::UdpData;
        Some(reply(from, from, Some(flow), seq, kind, m, m.ttl))
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::net::sys::ExtErr;
    use crate::net::trace::kernel::test_packets::{COOKIE, a, icmp_error, msg, probe};
    use crate::sample::Unreachable;

    fn udp_hdr(sport: u16, dport: u16, checksum: u16, payload: &[u8]) -> Vec<u8> {
        let mut u = Vec::new();
        u.extend_from_slice(&sport.to_be_bytes());
        u.extend_from_slice(&dport.to_be_bytes());
        u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        u.extend_from_slice(&checksum.to_be_bytes());
        u.extend_from_slice(payload);
        u
    }

    #[test]
    fn raw_udp_errors_name_the_probe_by_checksum_or_payload() {
        let ours = UdpProbes {
            ipv6: false,
            cookie: COOKIE,
            ports: Ports::of(&[40000, 40001]),
        };
        let m = msg(None, None);
        let udp = |sport, checksum, payload: &[u8]| {
            probe(wire::PROTO_UDP, &udp_hdr(sport, 33434, checksum, payload))
        };
        // An 8-byte quote: the checksum is the sequence number.
        let pkt = icmp_error("10.9.9.9", 11, 0, &udp(40001, 77, &[]));
        let r = ours.raw_error(&m, &pkt).unwrap();
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
        let pkt = icmp_error("192.0.2.9", 3, 3, &udp(40001, 0x1234, &payload));
        let r = ours.raw_error(&m, &pkt).unwrap();
        assert_eq!(r.seq, Some(555));
        assert_eq!(r.kind, ReplyKind::Unreachable(Unreachable::Port));
        // Another program's probe from another port, or with another cookie: not ours.
        let pkt = icmp_error("10.9.9.9", 11, 0, &udp(50000, 77, &[]));
        assert!(ours.raw_error(&m, &pkt).is_none());
        let other = wire::udp_payload(20, COOKIE ^ 1, 1, 555, None);
        let pkt = icmp_error("10.9.9.9", 11, 0, &udp(40001, 5, &other));
        assert!(ours.raw_error(&m, &pkt).is_none());
        // Not UDP inside; not an error at all.
        let inner = probe(wire::PROTO_TCP, &udp_hdr(40001, 33434, 77, &[]));
        let pkt = icmp_error("10.9.9.9", 11, 0, &inner);
        assert!(ours.raw_error(&m, &pkt).is_none());
        let pkt = icmp_error("10.9.9.9", 8, 0, &[0; 28]);
        assert!(ours.raw_error(&m, &pkt).is_none());
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
        let ours = UdpProbes {
            ipv6: false,
            cookie: COOKIE,
            ports: Ports::default(),
        };
        let m = err(libc::SO_EE_ORIGIN_ICMP);
        let payload = wire::udp_payload(32, COOKIE, 2, 99, None);
        let r = ours.queued_error(2, &m, &payload).unwrap();
        assert_eq!(
            (r.seq, r.flow, r.from, r.dst),
            (Some(99), Some(2), a("10.9.9.9"), a("192.0.2.9"))
        );
        let r = ours.queued_error(2, &m, &[]).unwrap();
        assert_eq!(
            (r.seq, r.flow),
            (None, Some(2)),
            "an 8-byte quote names no probe"
        );
        // The payload of another flow cannot be on this socket's queue: refused.
        assert!(ours.queued_error(1, &m, &payload).is_none());
        let stale = wire::udp_payload(32, COOKIE ^ 1, 2, 99, None);
        assert!(ours.queued_error(2, &m, &stale).is_none());
        // Local errors (e.g. the socket's own MTU) are no answer.
        assert!(
            ours.queued_error(2, &err(libc::SO_EE_ORIGIN_LOCAL), &payload)
                .is_none()
        );
    }
}
