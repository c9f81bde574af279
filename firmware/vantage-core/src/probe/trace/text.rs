//! The trace module's text for the command line: an mtr-style report table of one or more
//! traces (`vantage trace -c N` sums them up like mtr's report cycles).

use std::time::Duration;

use super::options::TraceOptions;
use crate::sample::{Balancing, HopReport, HopResponder, TraceReport};

/// The table of `rounds` to `host`, summed up; `None` without a round.
pub(crate) fn text(host: &str, opts: &TraceOptions, rounds: &[&TraceReport]) -> Option<String> {
    let (first, rest) = rounds.split_first()?;
    let mut total = (*first).clone();
    for r in rest {
        accumulate(&mut total, r);
    }
    Some(table(host, opts, &total))
}

/// Adds a later trace's hops to a running total (the path summary is the latest trace's).
fn accumulate(total: &mut TraceReport, r: &TraceReport) {
    for h in r.hops.iter() {
        match total.hops.iter_mut().find(|t| t.ttl == h.ttl) {
            Some(t) => {
                t.sent += h.sent;
                t.received += h.received;
                t.rtts.extend(&h.rtts);
                for a in &h.responders {
                    match t.responders.iter_mut().find(|x| x.address == a.address) {
                        Some(x) => {
                            x.replies += a.replies;
                            x.unreachable = x.unreachable.or(a.unreachable);
                        }
                        None => t.responders.push(a.clone()),
                    }
                }
                t.responders.sort_by_key(|r| std::cmp::Reverse(r.replies));
                // Branches one trace found count for the sum; per-packet evidence from any
                // trace wins over per-flow.
                let per_packet = Some(Balancing::PerPacket);
                if h.balancing == per_packet || t.balancing == per_packet {
                    t.balancing = per_packet;
                } else {
                    t.balancing = t.balancing.or(h.balancing);
                }
            }
            None => total.hops.push(h.clone()),
        }
    }
    total.hops.sort_by_key(|h| h.ttl);
    total.reached |= r.reached;
    total.rate_limited |= r.rate_limited;
    total.rate_cut_short |= r.rate_cut_short;
    total.path_hash = r.path_hash;
    total.paths_known = r.paths_known;
}

fn ms(d: Option<Duration>) -> String {
    d.map_or(String::new(), |d| format!("{:.2}", d.as_secs_f64() * 1e3))
}

/// An mtr-style report table of the rounds summed up.
pub(crate) fn table(host: &str, opts: &TraceOptions, r: &TraceReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let addr = r.address.map(|a| a.to_string()).unwrap_or_default();
    let _ = writeln!(
        out,
        "vantage trace to {host} ({addr}): {}, {} hops max, {} probe{} per hop, {} flow{}, {}{}",
        opts.protocol,
        opts.max_hops,
        opts.probes_per_hop,
        if opts.probes_per_hop == 1 { "" } else { "s" },
        r.flows,
        if r.flows == 1 { "" } else { "s" },
        if r.raw_sockets {
            "raw sockets"
        } else {
            "unprivileged sockets"
        },
        if r.paris {
            ""
        } else {
            ", a new flow per probe"
        },
    );
    let _ = writeln!(
        out,
        "{:>4}  {:<40} {:>6} {:>4} {:>7} {:>7} {:>7} {:>7} {:>7}",
        "HOP", "HOST", "Loss%", "Snt", "Last", "Avg", "Best", "Wrst", "StDev"
    );
    // An address with the "unreachable" mark it sent, if any (`10.0.0.1 !N`).
    let named = |a: &HopResponder| match a.unreachable.map(|u| u.mark()) {
        Some(mark) if !mark.is_empty() => format!("{} {mark}", a.address),
        _ => a.address.to_string(),
    };
    for h in &r.hops {
        let mut name = h.responders.first().map_or("???".to_string(), named);
        if let Some(b) = h.balancing {
            // The branches that follow are per-flow ECMP or a per-packet spread.
            name = format!("{name} [{}]", b.as_str().replace('_', " "));
        }
        let _ = writeln!(
            out,
            "{:>3}.  {:<40} {:>5.1}% {:>4} {:>7} {:>7} {:>7} {:>7} {:>7}",
            h.ttl,
            name,
            h.loss_ratio() * 100.0,
            h.sent,
            ms(h.last()),
            ms(h.mean()),
            ms(h.min()),
            ms(h.max()),
            h.stddev_seconds()
                .map_or(String::new(), |s| format!("{:.2}", s * 1e3)),
        );
        // Further addresses of the hop (ECMP branches, per-packet balancing), as mtr lists them.
        for a in h.responders.iter().skip(1) {
            let _ = writeln!(out, "      {}", named(a));
        }
    }
    out.push_str(&summary(opts, r));
    out
}

/// The table's last lines: how the trace ended, its paths, and what the rate limit did.
fn summary(opts: &TraceOptions, r: &TraceReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let end = if r.reached {
        let n = r.hop_count();
        format!(
            "destination reached in {n} hop{}",
            if n == 1 { "" } else { "s" }
        )
    } else if let Some(u) = r.hops.last().and_then(HopReport::unreachable) {
        format!("destination unreachable ({})", u.mark())
    } else {
        "destination not reached".to_string()
    };
    let _ = writeln!(
        out,
        "{end}; path hash {:08x}, {} path{} seen",
        r.path_hash,
        r.paths_known,
        if r.paths_known == 1 { "" } else { "s" }
    );
    if r.rate_cut_short {
        let _ = writeln!(
            out,
            "the probe rate limit ({}/s) left probes unsent: fewer probes or branches than asked",
            opts.probes_per_second
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::Unreachable;

    /// A hop at `ttl` that `addrs` answered (one reply each, flow 0), with these RTTs (µs) of
    /// `sent` probes.
    fn hop(ttl: u8, addrs: &[&str], rtts_us: &[u64], sent: u32) -> HopReport {
        HopReport {
            sent,
            received: rtts_us.len() as u32,
            rtts: rtts_us.iter().map(|u| Duration::from_micros(*u)).collect(),
            ..HopReport::answered_by(ttl, addrs)
        }
    }

    #[test]
    fn the_table_reads_like_mtr() {
        let mut r = TraceReport {
            address: Some("192.0.2.9".parse().unwrap()),
            reached: true,
            raw_sockets: true,
            paris: true,
            flows: 1,
            hops: vec![
                hop(1, &["10.0.0.1"], &[1000, 1200, 1400], 3),
                hop(2, &[], &[], 3),
                hop(3, &["10.0.2.1", "10.0.2.2"], &[3000, 3000], 3),
                hop(4, &["192.0.2.9"], &[4000, 4000, 4000], 3),
            ],
            path_hash: 0xabcd,
            paths_known: 1,
            ..Default::default()
        };
        let t = table("example", &TraceOptions::default(), &r);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("vantage trace to example (192.0.2.9): udp, 30 hops max, 3 probes per hop, 1 flow, raw sockets"), "{t}");
        assert!(
            lines[1].contains("Loss%") && lines[1].contains("StDev"),
            "{t}"
        );
        assert!(
            lines[2].starts_with("  1.  10.0.0.1")
                && lines[2].contains("  0.0%    3    1.40    1.20    1.00    1.40    0.16"),
            "{t}"
        );
        assert!(
            lines[3].starts_with("  2.  ???") && lines[3].contains("100.0%"),
            "{t}"
        );
        assert!(
            lines[4].contains("10.0.2.1") && lines[4].contains(" 33.3%"),
            "{t}"
        );
        assert_eq!(lines[5].trim(), "10.0.2.2");
        assert_eq!(lines.len(), 8, "{t}");
        let cut = TraceReport {
            rate_cut_short: true,
            ..r.clone()
        };
        let t1 = text("example", &TraceOptions::default(), &[&r, &cut]).unwrap();
        assert!(
            t1.lines()
                .last()
                .unwrap()
                .starts_with("the probe rate limit (100/s) left probes unsent"),
            "{t1}"
        );
        // With the balancing known, the first address says which kind.
        r.hops[2].balancing = Some(crate::sample::Balancing::PerFlow);
        let t2 = table("example", &TraceOptions::default(), &r);
        assert!(
            t2.lines().nth(4).unwrap().contains("10.0.2.1 [per flow]"),
            "{t2}"
        );
        r.hops[2].balancing = None;
        assert_eq!(
            lines[7],
            "destination reached in 4 hops; path hash 0000abcd, 1 path seen"
        );
        r.reached = false;
        r.hops.truncate(1);
        r.hops[0].responders[0].unreachable = Some(Unreachable::Host);
        let t = table("example", &TraceOptions::default(), &r);
        assert!(t.contains("10.0.0.1 !H"), "{t}");
        assert!(t.contains("destination unreachable (!H)"), "{t}");
        // At a split, the mark stays with the branch that sent it, listed first or not.
        let mut split = hop(2, &["10.0.1.1", "10.0.1.2"], &[1000, 1000], 2);
        split.responders[1].unreachable = Some(Unreachable::Network);
        r.hops = vec![split];
        let t = table("example", &TraceOptions::default(), &r);
        let lines: Vec<&str> = t.lines().collect();
        assert!(
            lines[2].contains("10.0.1.1") && !lines[2].contains('!'),
            "{t}"
        );
        assert_eq!(lines[3].trim(), "10.0.1.2 !N", "{t}");
        assert!(t.contains("destination unreachable (!N)"), "{t}");
    }

    #[test]
    fn cycles_add_up() {
        let mut t = TraceReport {
            hops: vec![hop(1, &["10.0.0.1"], &[1000], 1)],
            ..Default::default()
        };
        let mut split = hop(1, &["10.0.0.1", "10.0.0.9"], &[], 2);
        split.balancing = Some(Balancing::PerFlow);
        accumulate(
            &mut t,
            &TraceReport {
                reached: true,
                hops: vec![split.clone(), hop(2, &["10.0.0.2"], &[2000], 1)],
                ..Default::default()
            },
        );
        assert!(t.reached);
        assert_eq!((t.hops[0].sent, t.hops[0].received), (3, 1));
        assert_eq!(t.hops[0].responders.len(), 2);
        assert_eq!(t.hops[0].responders[0].replies, 2);
        assert_eq!(t.hops[1].ttl, 2);
        // A branch a later trace found brings its balancing; per-packet evidence stays.
        assert_eq!(t.hops[0].balancing, Some(Balancing::PerFlow));
        let later = |h: &HopReport| TraceReport {
            hops: vec![h.clone()],
            ..Default::default()
        };
        split.balancing = Some(Balancing::PerPacket);
        accumulate(&mut t, &later(&split));
        split.balancing = Some(Balancing::PerFlow);
        accumulate(&mut t, &later(&split));
        assert_eq!(t.hops[0].balancing, Some(Balancing::PerPacket));
    }
}
