//! Every reply parser of the kernel trace sockets on any bytes, for the fuzz targets.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Instant;

use super::icmp::EchoProbes;
use super::receive::Ports;
use super::tcp_raw::SynProbes;
use super::udp::UdpProbes;
use crate::net::sys::{ExtErr, Msg};
use crate::net::trace::TraceReply;

/// The cookie, identifier and source ports the parsers look for: fixed, so that the fuzzer can
/// find them in its comparisons.
pub(crate) const COOKIE: u32 = 0x5641_4e54;
pub(crate) const IDENT: u16 = 0x4754;
pub(crate) const PORTS: [u16; 2] = [33434, 33435];
/// Bytes read before the packet: flags, error type, code, info (4), address (16).
pub(crate) const PREFIX: usize = 23;

/// What recvmsg would have said with the packet, from the first [`PREFIX`] bytes: bit 0 of the
/// flags is the address family, bit 1 whether an error-queue entry came, bit 2 whether the
/// sender's address is known.
fn msg(input: &[u8]) -> Option<(bool, Msg, &[u8])> {
    let (head, data) = (input.get(..PREFIX)?, &input[PREFIX..]);
    let ipv6 = head[0] & 1 != 0;
    let addr = if ipv6 {
        IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&head[7..23]).ok()?))
    } else {
        IpAddr::V4(Ipv4Addr::new(head[7], head[8], head[9], head[10]))
    };
    let origin = if ipv6 {
        libc::SO_EE_ORIGIN_ICMP6
    } else {
        libc::SO_EE_ORIGIN_ICMP
    };
    let err = (head[0] & 2 != 0).then_some(ExtErr {
        origin,
        typ: head[1],
        code: head[2],
        info: u32::from_be_bytes([head[3], head[4], head[5], head[6]]),
        offender: Some(addr),
    });
    let m = Msg {
        len: data.len(),
        name: (head[0] & 4 != 0).then_some(SocketAddr::new(addr, 33434)),
        kernel_time: None,
        sent_time: None,
        ttl: Some(64),
        err,
        read_at: Instant::now(),
    };
    Some((ipv6, m, data))
}

/// Runs `input` through every parser; returns the replies they recognised.
pub(crate) fn replies(input: &[u8]) -> Vec<TraceReply> {
    let Some((ipv6, m, data)) = msg(input) else {
        return Vec::new();
    };
    let ports = Ports::of(&PORTS);
    let udp = UdpProbes {
        ipv6,
        cookie: COOKIE,
        ports: ports.clone(),
    };
    let icmp = EchoProbes {
        ipv6,
        ident: IDENT,
        cookie: COOKIE,
    };
    let tcp = SynProbes {
        ipv6,
        cookie: COOKIE as u16,
        ports,
    };
    [
        udp.raw_error(&m, data),
        udp.queued_error(0, &m, data),
        udp.data(0, &m, data),
        icmp.raw_message(&m, data),
        icmp.queued_error(&m, data),
        tcp.raw_error(&m, data),
        tcp.answer(&m, data),
    ]
    .into_iter()
    .flatten()
    .collect()
}
