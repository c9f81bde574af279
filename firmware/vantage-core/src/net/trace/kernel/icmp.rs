//! ICMP echo probes on one datagram (unprivileged) or raw socket. The flows share the socket's
//! identifier and differ in their checksum; a probe is named by the quoted echo sequence.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use socket2::{Socket, Type};
use tokio::io::unix::AsyncFd;

use super::receive::{self, Inbox, reply};
use super::{Kind, socket};
use crate::net::sys::Msg;
use crate::net::trace::wire;
use crate::net::trace::{FLOW_IDS, Outgoing, ReplyKind, TraceReply, TraceSocketKey};

#[derive(Debug)]
pub(super) struct IcmpTrace {
    raw: bool,
    probes: EchoProbes,
    fd: Arc<AsyncFd<Socket>>,
    sources: socket::Sources,
}

impl IcmpTrace {
    pub fn open(key: &TraceSocketKey, raw: bool, inbox: &Inbox) -> io::Result<Self> {
        let ipv6 = key.ipv6;
        let (s, ident) = if raw {
            let s = socket::raw_icmp(ipv6, true)?;
            socket::bind_source(&s, key.source)?;
            (s, rand::random::<u16>())
        } else {
            let s = socket::icmp(ipv6, Type::DGRAM)?;
            // The kernel's identifier for this socket is its "port".
            let ident = socket::bind_port(&s, ipv6, key.source)?;
            socket::recv_errors(&s, ipv6)?;
            socket::receive_options(&s, ipv6);
            (s, ident)
        };
        socket::set_tos(&s, ipv6, key.tos)?;
        let fd = socket::register(s)?;
        let probes = EchoProbes {
            ipv6,
            ident,
            cookie: rand::random(),
        };
        inbox.read(fd.clone(), !raw, move |m, data, queue| {
            if raw {
                probes.raw_message(m, data)
            } else if queue {
                probes.queued_error(m, data)
            } else {
                probes.echo_reply(m, data)
            }
        });
        Ok(Self {
            raw,
            probes,
            fd,
            sources: socket::Sources::new(key.source),
        })
    }
}

impl Kind for IcmpTrace {
    fn raw(&self) -> bool {
        self.raw
    }

    fn send(&self, p: &Outgoing, _: &Inbox) -> io::Result<()> {
        let EchoProbes {
            ipv6,
            ident,
            cookie,
        } = self.probes;
        let payload = p.size.saturating_sub(if ipv6 { 48 } else { 28 });
        // The ICMPv6 checksum covers the addresses; a wrong guess only costs the constant
        // checksum (the kernel computes a valid one), never the answer.
        let pseudo = if ipv6 {
            self.sources.for_dst(p.dst).ok().map(|s| (s, p.dst))
        } else {
            None
        };
        let packet = wire::icmp_echo(ipv6, ident, p.seq, payload, cookie, p.flow, pseudo);
        socket::send(self.fd.get_ref(), &packet, SocketAddr::new(p.dst, 0), p.ttl)
    }
}

/// What names our echo requests in the answers to them: the identifier, and the cookie in
/// their payload.
#[derive(Debug, Clone, Copy)]
pub(super) struct EchoProbes {
    pub ipv6: bool,
    pub ident: u16,
    pub cookie: u32,
}

impl EchoProbes {
    /// Flow and sequence of a quoted echo request of ours.
    fn quoted(&self, inner: &[u8]) -> Option<(u16, u16)> {
        let e = wire::icmp(inner)?;
        if e.typ != if self.ipv6 { 128 } else { 8 } || e.ident() != self.ident {
            return None;
        }
        let flow = match wire::read_header(e.body, self.cookie) {
            Some((f, _)) => f,
            // Only the 8-byte header was quoted: the checksum says the flow.
            None => {
                let c = u16::from_be_bytes([inner[2], inner[3]]);
                (0..FLOW_IDS).find(|f| wire::icmp_flow_checksum(*f) == c)?
            }
        };
        Some((flow, e.seq()))
    }

    fn is_reply(&self, e: &wire::IcmpMsg<'_>) -> bool {
        e.typ == if self.ipv6 { 129 } else { 0 }
    }

    /// The destination's echo reply `e` to one of our probes.
    fn answer(
        &self,
        from: IpAddr,
        e: &wire::IcmpMsg<'_>,
        m: &Msg,
        ttl: Option<u8>,
    ) -> Option<TraceReply> {
        if !self.is_reply(e) {
            return None;
        }
        let (flow, _) = wire::read_header(e.body, self.cookie)?;
        let kind = ReplyKind::EchoReply;
        Some(reply(from, from, Some(flow), Some(e.seq()), kind, m, ttl))
    }

    /// An echo reply read on a datagram socket.
    pub fn echo_reply(&self, m: &Msg, data: &[u8]) -> Option<TraceReply> {
        self.answer(m.name?.ip(), &wire::icmp(data)?, m, m.ttl)
    }

    /// An ICMP error from a datagram socket's error queue: the data is the quoted echo request.
    pub fn queued_error(&self, m: &Msg, data: &[u8]) -> Option<TraceReply> {
        let (e, kind) = receive::queued_icmp(self.ipv6, m)?;
        let (flow, seq) = self.quoted(data)?;
        let (from, dst) = (e.offender?, m.name?.ip());
        Some(reply(from, dst, Some(flow), Some(seq), kind, m, m.ttl))
    }

    /// An echo reply or an ICMP error read on a raw ICMP socket.
    pub fn raw_message(&self, m: &Msg, data: &[u8]) -> Option<TraceReply> {
        let (from, ttl, msg) = receive::raw_icmp_message(self.ipv6, m, data)?;
        if self.is_reply(&msg) {
            if msg.ident() != self.ident {
                return None;
            }
            return self.answer(from, &msg, m, ttl);
        }
        let inner_proto = if self.ipv6 {
            wire::PROTO_ICMPV6
        } else {
            wire::PROTO_ICMP
        };
        let e = receive::raw_error(self.ipv6, from, &msg, inner_proto)?;
        let (flow, seq) = self.quoted(e.quote.transport)?;
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::sys::ExtErr;
    use crate::net::trace::kernel::test_packets::{COOKIE, a, icmp_error, ip4, msg, probe};
    use crate::sample::Unreachable;

    #[test]
    fn icmp_answers_match_our_identifier() {
        let ident = 0x4242;
        let ours = EchoProbes {
            ipv6: false,
            ident,
            cookie: COOKIE,
        };
        let other = EchoProbes {
            ident: ident ^ 1,
            ..ours
        };
        let m = msg(None, None);
        let echo = wire::icmp_echo(false, ident, 31, 32, COOKIE, 3, None);
        let mut reply_msg = echo.clone();
        reply_msg[0] = 0;
        let pkt = ip4("192.0.2.9", "10.0.0.1", 1, 57, &reply_msg);
        let r = ours.raw_message(&m, &pkt).unwrap();
        assert_eq!(
            (r.kind, r.seq, r.flow),
            (ReplyKind::EchoReply, Some(31), Some(3))
        );
        assert!(other.raw_message(&m, &pkt).is_none());
        // A router quoting only the echo header: the flow comes from the checksum.
        let pkt = icmp_error("10.9.9.9", 11, 0, &probe(wire::PROTO_ICMP, &echo[..8]));
        let r = ours.raw_message(&m, &pkt).unwrap();
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
        let r = ours.queued_error(&queued, &echo).unwrap();
        assert_eq!(r.kind, ReplyKind::Unreachable(Unreachable::Prohibited));
        assert_eq!((r.from, r.seq), (a("10.9.9.9"), Some(31)));
    }
}
