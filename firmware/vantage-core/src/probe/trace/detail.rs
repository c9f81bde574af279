//! The path the store keeps per path hash: each hop's addresses, written once when the path
//! changes (not per round), so the page can show the path before and after each change, also
//! for ranges of a month and after a restart.
//!
//! ```text
//! version u8 = 1
//! reached u8, hops varint,
//! hops × (ttl u8, addresses varint, addresses × (4 | 6, the address's 4 or 16 bytes))
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde_json::{Value, json};

use super::super::module::Detail;
use super::super::tcp::{put_varint, varint};
use crate::sample::TraceReport;

const VERSION: u8 = 1;
/// Hops kept of a path (a trace has at most 64 TTLs).
const MAX_HOPS: usize = 64;
/// Addresses kept of one hop (a balancer may spread flows over many).
const MAX_ADDRESSES: usize = 16;

/// The hop addresses of a trace that had answers, keyed by its path hash.
pub(crate) fn detail(r: &TraceReport) -> Option<Detail> {
    if !r.hops.iter().any(|h| !h.responders.is_empty()) {
        return None;
    }
    let mut out = vec![VERSION, u8::from(r.reached)];
    let hops = &r.hops[..r.hops.len().min(MAX_HOPS)];
    put_varint(&mut out, hops.len() as u64);
    for h in hops {
        out.push(h.ttl);
        let mut addresses: Vec<IpAddr> = h.responders.iter().map(|x| x.address).collect();
        addresses.sort();
        addresses.truncate(MAX_ADDRESSES);
        put_varint(&mut out, addresses.len() as u64);
        for a in addresses {
            match a {
                IpAddr::V4(v4) => {
                    out.push(4);
                    out.extend_from_slice(&v4.octets());
                }
                IpAddr::V6(v6) => {
                    out.push(6);
                    out.extend_from_slice(&v6.octets());
                }
            }
        }
    }
    Some(Detail {
        key: r.path_hash,
        fingerprint: u64::from(r.path_hash),
        bytes: out,
    })
}

fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if b.len() < n {
        return None;
    }
    let (head, rest) = b.split_at(n);
    *b = rest;
    Some(head)
}

/// `{"reached": bool, "hops": [{"hop": TTL, "addresses": [...]}]}` (no addresses: the hop
/// did not answer); `None` for bytes [`detail`] did not write.
pub(crate) fn detail_json(bytes: &[u8]) -> Option<Value> {
    let mut b = bytes;
    let head = take(&mut b, 2)?;
    if head[0] != VERSION {
        return None;
    }
    let n = varint(&mut b)?;
    let mut hops = Vec::new();
    for _ in 0..n.min(MAX_HOPS as u64) {
        let ttl = take(&mut b, 1)?[0];
        let mut addresses = Vec::new();
        for _ in 0..varint(&mut b)?.min(MAX_ADDRESSES as u64) {
            let a = match take(&mut b, 1)?[0] {
                4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(take(&mut b, 4)?).ok()?)),
                6 => IpAddr::V6(Ipv6Addr::from(
                    <[u8; 16]>::try_from(take(&mut b, 16)?).ok()?,
                )),
                _ => return None,
            };
            addresses.push(a.to_string());
        }
        hops.push(json!({"hop": ttl, "addresses": addresses}));
    }
    (b.is_empty() && hops.len() as u64 == n).then(|| json!({"reached": head[1] == 1, "hops": hops}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::HopReport;

    fn hop(ttl: u8, addresses: &[&str]) -> HopReport {
        HopReport {
            sent: 2,
            received: addresses.len() as u32,
            ..HopReport::answered_by(ttl, addresses)
        }
    }

    #[test]
    fn a_path_round_trips_with_silent_hops_and_both_families() {
        let r = TraceReport {
            reached: true,
            path_hash: 0xdead_beef,
            hops: vec![
                hop(1, &["192.0.2.1"]),
                hop(2, &[]),
                hop(3, &["2001:db8::2", "198.51.100.3"]),
            ],
            ..TraceReport::default()
        };
        let d = detail(&r).unwrap();
        assert_eq!((d.key, d.fingerprint), (0xdead_beef, 0xdead_beef));
        // 2 + 1 + (1 + 1 + 5) + (1 + 1) + (1 + 1 + 5 + 17)
        assert_eq!(d.bytes.len(), 36, "compact: {:?}", d.bytes);
        assert_eq!(
            detail_json(&d.bytes).unwrap(),
            json!({"reached": true, "hops": [
                {"hop": 1, "addresses": ["192.0.2.1"]},
                {"hop": 2, "addresses": []},
                {"hop": 3, "addresses": ["198.51.100.3", "2001:db8::2"]},
            ]})
        );
        for cut in 0..d.bytes.len() {
            assert!(detail_json(&d.bytes[..cut]).is_none(), "cut at {cut}");
        }
    }

    #[test]
    fn a_trace_without_answers_keeps_no_path() {
        let r = TraceReport {
            hops: vec![hop(1, &[]), hop(2, &[])],
            ..TraceReport::default()
        };
        assert!(detail(&r).is_none());
    }
}
