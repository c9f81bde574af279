//! The per-round gauges: the one definition of what a probe round shows.
//!
//! A round becomes a set of gauge points through [`points`]. The same function feeds every
//! place a round is shown, so they cannot drift apart:
//! - `/metrics`: a target's last round (the daemon renders these points),
//! - `/probe`: the round it just ran,
//! - remote_write: every stored round, at the round's own timestamp.
//!
//! The input is the stored form of a round ([`StoredSample`], µs resolution), which is what the
//! store keeps and later ships; the daemon converts each live round the same way before showing
//! it, so a value shipped after an outage is exactly what a scrape would have shown.
//!
//! Counters and histograms (`_total`, `vantage_ping_rtt_seconds`, ...) are not here: they add up
//! rounds since the daemon started, which a single stored round cannot rebuild; they serve
//! `rate()` over live scrapes. Dashboards and alerts build on these gauges (`docs/FLEET.md`).

use std::sync::LazyLock;

use vantage_core::ProbeKind;

use crate::codec::StoredSample;
/// The DNS module's gauges, under the names they had as a built-in kind's.
pub use vantage_core::dns_series::{
    ADDITIONAL_RECORDS as DNS_ADDITIONAL_RECORDS, ANSWER_RECORDS as DNS_ANSWER_RECORDS,
    AUTHORITY_RECORDS as DNS_AUTHORITY_RECORDS, COMMON_RCODES, LOOKUP as DNS_LOOKUP,
    PHASE as DNS_PHASE, RCODE as DNS_RCODE, STRAY_DATAGRAMS as DNS_STRAY_DATAGRAMS,
    TRUNCATED_RETRY as DNS_TRUNCATED_RETRY, VALIDATION_FAILED as DNS_VALIDATION_FAILED,
};
/// The ping kind's gauges, under the names they have always had here.
pub use vantage_core::ping_series::{
    DUPLICATES as PING_DUPLICATES, LOSS as PING_LOSS, RECEIVED as PING_RECEIVED, RTT as PING_RTT,
    SENT as PING_SENT,
};
pub use vantage_core::series::{Gauge, Point, gauge, labelled};
/// The trace kind's gauges, under the names they have always had here.
pub use vantage_core::trace_series::{
    FLOWS_REACHED as TRACE_FLOWS_REACHED, HOP_LOSS as TRACE_HOP_LOSS, HOP_RTT as TRACE_HOP_RTT,
    HOPS as TRACE_HOPS, PATH_CHANGED as TRACE_PATH_CHANGED, PATH_HASH as TRACE_PATH_HASH,
    PATHS as TRACE_PATHS,
};

pub static PROBE_SUCCESS: Gauge = Gauge {
    probe_label: true,
    ..gauge(
        "vantage_probe_success",
        "1 if the last round of the probe succeeded, else 0.",
    )
};
pub static PROBE_DURATION: Gauge = Gauge {
    probe_label: true,
    ..gauge(
        "vantage_probe_duration_seconds",
        "How long the last round of the probe took.",
    )
};
/// Every per-round gauge: every probe's, ping's, trace's and each probe module's, each once
/// (modules may share one, like the TLS certificate's expiry; a family must not be written
/// twice).
pub static ALL: LazyLock<Vec<&'static Gauge>> = LazyLock::new(|| {
    let modules = vantage_core::MODULES.iter().flat_map(|m| m.gauges());
    let mut seen = std::collections::HashSet::new();
    [&PROBE_SUCCESS, &PROBE_DURATION]
        .into_iter()
        .chain(vantage_core::ping_series::GAUGES)
        .chain(vantage_core::trace_series::GAUGES)
        .chain(modules.copied())
        .filter(|g| seen.insert(g.name))
        .collect()
});

fn secs(us: u64) -> f64 {
    us as f64 / 1e6
}

fn flag(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

/// The gauges a round shows. A round without replies has no RTT points, a hop without
/// answers no RTT point, a DNS round without an answer no lookup point: an absent series says
/// "none", where 0 would claim an instant answer and NaN would poison `avg_over_time`.
pub fn points(s: &StoredSample) -> Vec<Point> {
    let mut v = Vec::with_capacity(16);
    v.push(Point::new(&PROBE_SUCCESS, flag(s.success)));
    v.push(Point::new(&PROBE_DURATION, secs(s.duration_us)));
    if let Some(p) = &s.ping {
        p.points(&mut v);
    }
    if let Some(t) = &s.trace {
        t.points(&mut v);
    }
    if let Some(m) = &s.module
        && let Some(module) = m.module()
    {
        module.points(&m.bytes, &mut v);
    }
    v
}

/// What a configured target shows before its first round of `kind`: every series that does
/// not depend on the round's content, at 0, so a target that never answered still has them.
pub fn initial_points(kind: ProbeKind) -> Vec<Point> {
    let mut v = vec![
        Point::new(&PROBE_SUCCESS, 0.0),
        Point::new(&PROBE_DURATION, 0.0),
    ];
    if let Some(m) = kind.module() {
        m.initial_points(&mut v);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{ErrorKind, StoredDns, StoredModule, StoredPing};
    use vantage_core::RoundQuality;

    fn round() -> StoredSample {
        StoredSample {
            series: 0,
            timestamp_ms: 0,
            success: false,
            error: ErrorKind::Timeout,
            duration_us: 1_000_000,
            ping: None,
            trace: None,
            module: None,
            quality: RoundQuality::empty(),
        }
    }

    #[test]
    fn names_are_unique_and_valid() {
        let mut names: Vec<&str> = ALL.iter().map(|g| g.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALL.len());
        for n in names {
            assert!(n.starts_with("vantage_"), "{n}");
            assert!(
                n.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{n}"
            );
            assert!(!n.ends_with("_total"), "{n}: a gauge, not a counter");
        }
    }

    #[test]
    fn every_point_of_a_round_is_in_the_catalogue() {
        let mut s = round();
        s.ping = Some(StoredPing {
            sent: 3,
            received: 2,
            rtt_us: Some((100, 200, 300)),
            stddev_us: 80,
            ..StoredPing::default()
        });
        s.module = Some(Box::new(StoredModule::dns(&StoredDns {
            rcode: Some(4),
            lookup_us: Some(5),
            ..StoredDns::default()
        })));
        for p in points(&s) {
            assert!(ALL.contains(&p.gauge), "{}", p.gauge.name);
            assert_eq!(p.gauge.label.is_some(), p.label_value.is_some());
        }
        let rcodes: Vec<_> = points(&s)
            .into_iter()
            .filter(|p| p.gauge == &DNS_RCODE)
            .map(|p| (p.label_value.unwrap().into_owned(), p.value))
            .collect();
        assert_eq!(rcodes.len(), 5);
        assert!(rcodes.contains(&("NOTIMP".to_string(), 1.0)), "{rcodes:?}");
    }

    #[test]
    fn a_round_without_replies_has_no_rtt_and_full_loss() {
        let mut s = round();
        s.ping = Some(StoredPing {
            sent: 2,
            ..StoredPing::default()
        });
        let p = points(&s);
        assert!(!p.iter().any(|p| p.gauge == &PING_RTT));
        let loss = p.iter().find(|p| p.gauge == &PING_LOSS).unwrap();
        assert_eq!(loss.value, 1.0);
    }

    #[test]
    fn initial_points_are_a_subset_of_a_round_and_all_zero() {
        for kind in ProbeKind::every() {
            for p in initial_points(kind) {
                assert_eq!(p.value, 0.0, "{}", p.gauge.name);
                assert!(ALL.contains(&p.gauge));
            }
        }
    }
}
