//! Kernel trace sockets: UDP, ICMP and TCP, unprivileged (error queue) and raw.
//!
//! One file per socket kind ([`udp`], [`icmp`], [`tcp_raw`], [`tcp_connect`]): how its probes
//! go out and how its answers are told apart. They share the sockets' setup ([`socket`]) and
//! one receive path ([`receive`]): reader tasks drain each socket (and its error queue), parse
//! what they read with the kind's parsers, and queue the answers for [`TraceSocket::recv`].

mod icmp;
mod receive;
mod socket;
mod tcp_connect;
mod tcp_raw;
mod udp;

#[cfg(any(test, fuzzing))]
pub(crate) mod fuzz;
#[cfg(test)]
mod test_packets;

use std::fmt::Debug;
use std::io;
use std::sync::Arc;

use self::receive::Inbox;
use super::socket::{Outgoing, TraceReply, TraceSocket, TraceSocketFactory, TraceSocketKey};
use crate::net::BoxFuture;
use crate::types::{TraceProtocol, TraceSockets};

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
            let opened = match key.protocol {
                TraceProtocol::Udp => Kernel::open(|inbox| udp::UdpTrace::open(key, raw, inbox)),
                TraceProtocol::Icmp => Kernel::open(|inbox| icmp::IcmpTrace::open(key, raw, inbox)),
                TraceProtocol::Tcp if raw => {
                    Kernel::open(|inbox| tcp_raw::TcpRawTrace::open(key, inbox))
                }
                TraceProtocol::Tcp => Kernel::open(|_| tcp_connect::TcpConnTrace::open(key)),
            };
            match opened {
                Ok(s) => return Ok(s),
                Err(e) => errors.push(e),
            }
        }
        let denied = |e: &io::Error| {
            e.kind() == io::ErrorKind::PermissionDenied || e.raw_os_error() == Some(libc::EPERM)
        };
        match errors.into_iter().find(|e| !denied(e)) {
            Some(e) => Err(e),
            None => Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                permission_hint(key),
            )),
        }
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

/// What differs between the socket kinds: how probes go out. The answers come in through the
/// [`Inbox`] the kind's readers fill.
trait Kind: Send + Sync + Debug + 'static {
    /// See [`TraceSocket::raw`].
    fn raw(&self) -> bool;
    /// See [`TraceSocket::paris`].
    fn paris(&self) -> bool {
        true
    }
    /// See [`TraceSocket::connects`].
    fn connects(&self) -> bool {
        false
    }
    /// Hands one probe to the kernel; readers it starts put their answers in `inbox`.
    fn send(&self, p: &Outgoing, inbox: &Inbox) -> io::Result<()>;
}

/// A kernel trace socket: one kind, and the answers its readers found.
#[derive(Debug)]
struct Kernel<K> {
    kind: K,
    inbox: Inbox,
}

impl<K: Kind> Kernel<K> {
    fn open(kind: impl FnOnce(&Inbox) -> io::Result<K>) -> io::Result<Arc<dyn TraceSocket>> {
        let inbox = Inbox::new();
        let kind = kind(&inbox)?;
        Ok(Arc::new(Self { kind, inbox }))
    }
}

impl<K: Kind> TraceSocket for Kernel<K> {
    fn raw(&self) -> bool {
        self.kind.raw()
    }

    fn paris(&self) -> bool {
        self.kind.paris()
    }

    fn connects(&self) -> bool {
        self.kind.connects()
    }

    fn send(&self, probe: &Outgoing) -> io::Result<()> {
        self.kind.send(probe, &self.inbox)
    }

    fn recv(&self) -> BoxFuture<'_, io::Result<TraceReply>> {
        self.inbox.recv()
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::icmp::EchoProbes;
    use super::receive::Ports;
    use super::tcp_raw::SynProbes;
    use super::test_packets::{COOKIE, a, msg};
    use super::udp::UdpProbes;
    use crate::net::sys::ExtErr;

    #[test]
    fn garbage_is_ignored_never_a_panic() {
        let ports = Ports::of(&[40000]);
        let parsers = [false, true].map(|ipv6| {
            let (cookie, ports) = (COOKIE, ports.clone());
            let udp = UdpProbes {
                ipv6,
                cookie,
                ports,
            };
            let ports = udp.ports.clone();
            let tcp = SynProbes {
                ipv6,
                cookie: 1,
                ports,
            };
            (
                udp,
                tcp,
                EchoProbes {
                    ipv6,
                    ident: 1,
                    cookie,
                },
            )
        });
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
                let (udp, tcp, icmp) = &parsers[usize::from(ipv6)];
                let _ = udp.raw_error(&m, &data);
                let _ = udp.queued_error(0, &m, &data);
                let _ = udp.data(0, &m, &data);
                let _ = tcp.raw_error(&m, &data);
                let _ = tcp.answer(&m, &data);
                let _ = icmp.raw_message(&m, &data);
                let _ = icmp.queued_error(&m, &data);
                let _ = icmp.echo_reply(&m, &data);
            }
        }
    }
}
