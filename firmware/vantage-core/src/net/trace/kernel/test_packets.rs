//! Packets and `recvmsg` results for the parsers' unit tests.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use crate::net::sys::{ExtErr, Msg};

pub const COOKIE: u32 = 0xc0ff_ee01;

pub fn a(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub fn msg(name: Option<SocketAddr>, err: Option<ExtErr>) -> Msg {
    Msg {
        len: 0,
        name,
        kernel_time: None,
        sent_time: None,
        ttl: Some(61),
        err,
        read_at: Instant::now(),
    }
}

/// An IPv4 packet.
pub fn ip4(src: &str, dst: &str, proto: u8, ttl: u8, payload: &[u8]) -> Vec<u8> {
    let (IpAddr::V4(s), IpAddr::V4(d)) = (a(src), a(dst)) else {
        panic!()
    };
    let mut p = vec![0x45, 0, 0, 0, 0, 0, 0, 0, ttl, proto, 0, 0];
    p.extend_from_slice(&s.octets());
    p.extend_from_slice(&d.octets());
    p.extend_from_slice(payload);
    p
}

/// A router's ICMP error `typ`/`code` quoting `inner`, in an IPv4 packet from `from`.
pub fn icmp_error(from: &str, typ: u8, code: u8, inner: &[u8]) -> Vec<u8> {
    let mut p = vec![typ, code, 0, 0, 0, 0, 0, 0];
    p.extend_from_slice(inner);
    ip4(from, "10.0.0.1", 1, 63, &p)
}

/// One of our probes to 192.0.2.9 as a router quotes it: protocol `proto`, then `transport`.
pub fn probe(proto: u8, transport: &[u8]) -> Vec<u8> {
    ip4("10.0.0.1", "192.0.2.9", proto, 1, transport)
}
