//! Entry points for the fuzz targets in `fuzz/` (docs/FUZZING.md) into parsers that are not
//! public: each takes any bytes and must never panic. Built only for tests and fuzzing.

use std::net::IpAddr;

use crate::net::trace::{TraceReply, kernel_fuzz};
use crate::probe::dns::report::DnsReport;
use crate::probe::{dns_fuzz, ping_fuzz};

/// The ping probe's echo-reply parser, as each socket kind and address family delivers;
/// returns the (address, sequence) of every packet taken for an answer to our requests.
pub fn echo_reply(packet: &[u8]) -> Vec<(IpAddr, u16)> {
    ping_fuzz::parse_all(packet)
}

/// The trace sockets' reply parsers. The first [`TRACE_PREFIX`] bytes stand for what `recvmsg`
/// said besides the packet (address family, error-queue entry, sender).
pub fn trace_reply(input: &[u8]) -> Vec<TraceReply> {
    kernel_fuzz::replies(input)
}

pub const TRACE_PREFIX: usize = kernel_fuzz::PREFIX;

/// The DNS probe's answer checks and report, for a query of `example.com. IN A` with the ID the
/// message carries; the report when the message is accepted as the answer.
pub fn dns_answer(message: &[u8]) -> Option<DnsReport> {
    dns_fuzz::answer(message)
}

/// Small valid inputs for each target, the fuzzers' starting corpus (`fuzz/corpus/`).
pub mod seeds {
    use hickory_proto::op::{Message, MessageType, Query};
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{Name, RData, Record, RecordType};

    use super::{dns_fuzz, kernel_fuzz, ping_fuzz};
    use crate::net::echo_request;
    use crate::net::trace::wire;

    /// An echo reply to sequence 7, as an IPv4 datagram socket delivers it.
    pub fn echo_reply() -> Vec<u8> {
        let mut payload = ping_fuzz::COOKIE.to_vec();
        payload.extend((0..8).map(ping_fuzz::payload_byte));
        let mut packet = echo_request(false, ping_fuzz::IDENT, 7, &payload);
        packet[0] = 0;
        packet
    }

    /// A router's "time exceeded" about UDP probe 5 of flow 0, read on a raw IPv4 socket: the
    /// recvmsg prefix (sender known), the IP header, the ICMP message and the quoted probe.
    pub fn trace_reply() -> Vec<u8> {
        let mut input = vec![0u8; kernel_fuzz::PREFIX];
        input[0] = 4;
        input[7..11].copy_from_slice(&[192, 0, 2, 9]);
        let probe = wire::udp_payload(16, kernel_fuzz::COOKIE, 0, 5, None);
        let mut udp = kernel_fuzz::PORTS[0].to_be_bytes().to_vec();
        udp.extend_from_slice(&[0x82, 0x9b, 0, 24, 0, 5]);
        udp.extend_from_slice(&probe);
        let quoted = ipv4(wire::PROTO_UDP, [192, 0, 2, 9], [198, 51, 100, 1], &udp);
        let mut icmp = vec![11, 0, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(&quoted);
        input.extend_from_slice(&ipv4(
            wire::PROTO_ICMP,
            [192, 0, 2, 1],
            [192, 0, 2, 9],
            &icmp,
        ));
        input
    }

    fn ipv4(proto: u8, src: [u8; 4], dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
        let len = (20 + payload.len()) as u16;
        let mut p = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, proto, 0, 0];
        p[2..4].copy_from_slice(&len.to_be_bytes());
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p.extend_from_slice(payload);
        p
    }

    /// The answer to `example.com. IN A`: one A record, 192.0.2.1.
    pub fn dns_answer() -> Vec<u8> {
        let name = Name::from_ascii(dns_fuzz::QUERY).expect("a valid name");
        let mut m = Message::new(
            0x1234,
            MessageType::Response,
            hickory_proto::op::OpCode::Query,
        );
        m.add_query(Query::query(name.clone(), RecordType::A));
        m.add_answer(Record::from_rdata(
            name,
            300,
            RData::A(A::new(192, 0, 2, 1)),
        ));
        m.to_vec().expect("the message encodes")
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::net::trace::ReplyKind;

    #[test]
    fn the_echo_seed_is_taken_for_a_reply() {
        let got = echo_reply(&seeds::echo_reply());
        assert!(
            got.contains(&(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 7)),
            "{got:?}"
        );
    }

    #[test]
    fn the_trace_seed_is_taken_for_a_router_answer() {
        let got = trace_reply(&seeds::trace_reply());
        assert!(
            got.iter().any(|r| r.kind == ReplyKind::TimeExceeded
                && r.seq == Some(5)
                && r.from == IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))),
            "{got:?}"
        );
    }

    #[test]
    fn the_dns_seed_is_accepted_and_validated() {
        let r = dns_answer(&seeds::dns_answer()).expect("accepted");
        assert_eq!(r.answers.len(), 1);
        assert_eq!(r.validation_failures, Vec::<String>::new());
    }

    /// Writes the seeds as the fuzz targets' corpus: run with `--ignored` after changing one.
    #[test]
    #[ignore = "writes fuzz/corpus/, run by hand"]
    fn write_seeds() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
        for (target, seed) in [
            ("echo_reply", seeds::echo_reply()),
            ("trace_reply", seeds::trace_reply()),
            ("dns_answer", seeds::dns_answer()),
        ] {
            let dir = root.join(target);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("seed"), seed).unwrap();
        }
    }

    #[test]
    fn short_and_empty_inputs_are_refused() {
        for input in [&[][..], &[0], &[0x45; 19]] {
            assert!(echo_reply(input).is_empty());
            assert!(trace_reply(input).is_empty());
            assert!(dns_answer(input).is_none());
        }
    }
}
