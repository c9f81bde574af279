//! The answer the store keeps per DNS target: rcode, server, transport and records, written
//! when the answer changes (a TTL counting down is no change), not per round, so the page
//! still shows the last answer after a restart.
//!
//! ```text
//! version u8 = 1
//! rcode varint (the rcode + 1; 0: no answer), transport u8 (0: none; else its place in
//! DnsTransport::ALL + 1), server: 0 | 4 + 4 bytes + port u16 LE | 6 + 16 bytes + port u16 LE,
//! records varint (all of the answer), kept varint (at most MAX_RECORDS),
//! kept × (ttl varint, then name, class, type and data: each a varint length and UTF-8)
//! ```

use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use serde_json::Value;

use super::super::module::Detail;
use super::super::tcp::{put_varint, varint};
use super::options::DnsTransport;
use super::report::{DnsRecord, DnsReport};

const VERSION: u8 = 1;
/// Records of an answer kept (and shown); the others are counted.
pub const MAX_RECORDS: usize = 32;
/// A record's data is kept (and shown) to this many characters, then `…` (a TXT record may
/// hold kilobytes).
pub const MAX_RECORD_DATA: usize = 256;

/// `data` cut to [`MAX_RECORD_DATA`] characters, with `…` when it was longer.
pub fn cut_record_data(data: &str) -> String {
    let mut shown: String = data.chars().take(MAX_RECORD_DATA).collect();
    if data.chars().nth(MAX_RECORD_DATA).is_some() {
        shown.push('…');
    }
    shown
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// The answer of a round, under key 0 (only the latest is kept).
pub(crate) fn detail(r: &DnsReport) -> Option<Detail> {
    let mut out = vec![VERSION];
    put_varint(&mut out, r.rcode.map_or(0, |c| u64::from(c) + 1));
    let transport = r
        .transport
        .and_then(|t| DnsTransport::ALL.iter().position(|x| *x == t));
    out.push(transport.map_or(0, |i| i as u8 + 1));
    match r.server {
        None => out.push(0),
        Some(SocketAddr::V4(a)) => {
            out.push(4);
            out.extend_from_slice(&a.ip().octets());
            out.extend_from_slice(&a.port().to_le_bytes());
        }
        Some(SocketAddr::V6(a)) => {
            out.push(6);
            out.extend_from_slice(&a.ip().octets());
            out.extend_from_slice(&a.port().to_le_bytes());
        }
    }
    put_varint(&mut out, r.answers.len() as u64);
    let kept = &r.answers[..r.answers.len().min(MAX_RECORDS)];
    put_varint(&mut out, kept.len() as u64);
    for a in kept {
        put_varint(&mut out, u64::from(a.ttl));
        for s in [&a.name, &a.class, &a.record_type] {
            put_str(&mut out, s);
        }
        put_str(&mut out, &cut_record_data(&a.data));
    }
    Some(Detail {
        key: 0,
        fingerprint: fingerprint(r),
        bytes: out,
    })
}

/// The answer without its TTLs and the records' order (a round-robin server rotates them).
fn fingerprint(r: &DnsReport) -> u64 {
    let mut records: Vec<(&str, &str, &str, &str)> = r
        .answers
        .iter()
        .map(|a| (&*a.name, &*a.class, &*a.record_type, &*a.data))
        .collect();
    records.sort_unstable();
    let mut h = DefaultHasher::new();
    (r.rcode, r.server, r.transport.map(DnsTransport::as_str)).hash(&mut h);
    records.hash(&mut h);
    h.finish()
}

fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if b.len() < n {
        return None;
    }
    let (head, rest) = b.split_at(n);
    *b = rest;
    Some(head)
}

fn get_str(b: &mut &[u8]) -> Option<String> {
    let n = usize::try_from(varint(b)?).ok()?;
    String::from_utf8(take(b, n)?.to_vec()).ok()
}

fn get_server(b: &mut &[u8]) -> Option<Option<SocketAddr>> {
    let ip = match take(b, 1)?[0] {
        0 => return Some(None),
        4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(take(b, 4)?).ok()?)),
        6 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(take(b, 16)?).ok()?)),
        _ => return None,
    };
    let port = u16::from_le_bytes(take(b, 2)?.try_into().ok()?);
    Some(Some(SocketAddr::new(ip, port)))
}

/// The answer in the shape of the report's JSON (`rcode`, `server`, `transport`, `answers`),
/// plus `answers_total`: the records of the answer, of which `answers` holds the first
/// [`MAX_RECORDS`].
pub(crate) fn detail_json(bytes: &[u8]) -> Option<Value> {
    let mut b = bytes;
    if take(&mut b, 1)?[0] != VERSION {
        return None;
    }
    let rcode = match varint(&mut b)? {
        0 => None,
        n => Some(u16::try_from(n - 1).ok()?),
    };
    let transport = match take(&mut b, 1)?[0] {
        0 => None,
        i => Some(*DnsTransport::ALL.get(usize::from(i) - 1)?),
    };
    let server = get_server(&mut b)?;
    let total = varint(&mut b)?;
    let kept = varint(&mut b)?;
    let mut answers = Vec::new();
    for _ in 0..kept.min(MAX_RECORDS as u64) {
        let ttl = u32::try_from(varint(&mut b)?).ok()?;
        answers.push(DnsRecord {
            ttl,
            name: get_str(&mut b)?,
            class: get_str(&mut b)?,
            record_type: get_str(&mut b)?,
            data: get_str(&mut b)?,
        });
    }
    if !b.is_empty() || answers.len() as u64 != kept {
        return None;
    }
    let r = DnsReport {
        rcode,
        transport,
        server,
        answers,
        ..DnsReport::default()
    };
    let mut v = serde_json::to_value(&r).ok()?;
    v["answers_total"] = total.into();
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(data: &str, ttl: u32) -> DnsRecord {
        DnsRecord {
            name: "www.example.test.".into(),
            ttl,
            class: "IN".into(),
            record_type: "A".into(),
            data: data.into(),
        }
    }

    fn answer(records: Vec<DnsRecord>) -> DnsReport {
        DnsReport {
            rcode: Some(0),
            server: Some("[2001:db8::53]:5353".parse().unwrap()),
            transport: Some(DnsTransport::Tcp),
            answers: records,
            ..DnsReport::default()
        }
    }

    #[test]
    fn an_answer_round_trips_in_the_reports_shape() {
        let r = answer(vec![record("192.0.2.1", 300), record("192.0.2.2", 299)]);
        let d = detail(&r).unwrap();
        assert_eq!(d.key, 0);
        let v = detail_json(&d.bytes).unwrap();
        assert_eq!(v["rcode"], "NOERROR");
        assert_eq!(v["server"], "[2001:db8::53]:5353");
        assert_eq!(v["transport"], "tcp");
        assert_eq!(v["answers_total"], 2);
        assert_eq!(v["answers"], serde_json::to_value(&r.answers).unwrap());
        for cut in 0..d.bytes.len() {
            assert!(detail_json(&d.bytes[..cut]).is_none(), "cut at {cut}");
        }
        let none = detail(&DnsReport::default()).unwrap();
        let v = detail_json(&none.bytes).unwrap();
        assert_eq!(
            (&v["rcode"], &v["answers_total"]),
            (&Value::Null, &0.into())
        );
    }

    #[test]
    fn ttls_and_order_are_no_change_records_and_rcodes_are() {
        let a = answer(vec![record("192.0.2.1", 300), record("192.0.2.2", 300)]);
        let later = answer(vec![record("192.0.2.2", 120), record("192.0.2.1", 120)]);
        assert_eq!(
            detail(&a).unwrap().fingerprint,
            detail(&later).unwrap().fingerprint
        );
        let other = answer(vec![record("192.0.2.3", 300)]);
        assert_ne!(
            detail(&a).unwrap().fingerprint,
            detail(&other).unwrap().fingerprint
        );
        let failed = DnsReport {
            rcode: Some(2),
            ..answer(Vec::new())
        };
        assert_ne!(
            detail(&failed).unwrap().fingerprint,
            detail(&answer(Vec::new())).unwrap().fingerprint
        );
    }

    #[test]
    fn a_long_answer_keeps_its_first_records_cut_and_counts_the_rest() {
        let long = "x".repeat(MAX_RECORD_DATA + 10);
        let r = answer((0..MAX_RECORDS + 5).map(|_| record(&long, 1)).collect());
        let v = detail_json(&detail(&r).unwrap().bytes).unwrap();
        assert_eq!(v["answers_total"], MAX_RECORDS + 5);
        let kept = v["answers"].as_array().unwrap();
        assert_eq!(kept.len(), MAX_RECORDS);
        let data = kept[0]["data"].as_str().unwrap();
        assert_eq!(data.chars().count(), MAX_RECORD_DATA + 1);
        assert!(data.ends_with('…'));
    }
}
