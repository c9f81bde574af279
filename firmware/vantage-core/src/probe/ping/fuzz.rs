//! The echo-reply parser on any bytes, for the fuzz targets.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};

/// The pattern a reply must carry after the cookie (replies with any other are not ours).
pub(crate) use super::payload_byte;
use super::{Parsed, Shared, Table, parse};
use crate::net::{BoxFuture, IcmpSocket, Received, SocketKind};

/// The identifier and cookie the parser looks for: fixed, so that the fuzzer can find them in
/// its comparisons.
pub(crate) const IDENT: u16 = 0x4754;
pub(crate) const COOKIE: [u8; 8] = *b"vantage!";

/// A socket that is only asked its kind: the parser never sends or receives.
#[derive(Debug)]
struct KindOnly(SocketKind);

impl IcmpSocket for KindOnly {
    fn kind(&self) -> SocketKind {
        self.0
    }
    fn send_to(&self, _: &[u8], _: IpAddr) -> io::Result<()> {
        Ok(())
    }
    fn recv<'a>(&'a self, _: &'a mut [u8]) -> BoxFuture<'a, io::Result<Received>> {
        Box::pin(std::future::pending())
    }
}

/// Parses `packet` as each socket kind and address family would deliver it; returns the
/// address and sequence of each packet taken for a reply or error to one of our requests.
pub(crate) fn parse_all(packet: &[u8]) -> Vec<(IpAddr, u16)> {
    let from_v4 = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    let from_v6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
    let mut out = Vec::new();
    for kind in [SocketKind::Datagram, SocketKind::Raw] {
        for (ipv6, from) in [(false, from_v4), (true, from_v6)] {
            let shared = Shared {
                socket: Arc::new(KindOnly(kind)),
                ipv6,
                ident: IDENT,
                cookie: COOKIE,
                table: Mutex::new(Table::default()),
            };
            if let Some(Parsed { addr, seq, .. }) = parse(&shared, packet, from) {
                out.push((addr, seq));
            }
        }
    }
    out
}
