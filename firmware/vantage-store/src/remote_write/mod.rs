//! Ships stored samples to Prometheus remote_write 1.0 endpoints, with their original
//! timestamps, resuming from a persisted cursor per endpoint.
//!
//! Delivery is at least once: the cursor moves only when every sample of a batch was
//! accepted or refused, and is persisted with the store's next group commit, so after a crash
//! a few requests may be sent again. A resend is built from the same stored samples and is an
//! exact duplicate (same series, timestamps and values), which Prometheus accepts
//! idempotently. A refused request is split down to the refused samples (`bisect`).

pub mod bisect;
pub mod proto;
pub mod scrapes;
mod shipper;

use std::collections::BTreeMap;

use prost::Message;

use vantage_core::config::rcode_name;

use crate::codec::StoredSample;
use crate::series::{Labels, SeriesKey};

pub use scrapes::{Coverage, ScrapeLog};
pub use shipper::{
    DEFAULT_SAMPLES_PER_SECOND, DEFAULT_SAMPLES_PER_SEND, Endpoint, EndpointStats, SendMode,
    SetupError, Shipper, ShipperOptions, Tls,
};

/// One series point of a stored round: the metric name, at most one label of its own beside
/// the series' labels (`stat`, `phase`, `rcode`, `hop`), and the value.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub name: &'static str,
    pub label: Option<(&'static str, String)>,
    pub value: f64,
}

impl Point {
    fn new(name: &'static str, value: f64) -> Self {
        Self {
            name,
            label: None,
            value,
        }
    }

    fn labelled(name: &'static str, label: &'static str, v: impl Into<String>, value: f64) -> Self {
        Self {
            name,
            label: Some((label, v.into())),
            value,
        }
    }
}

/// Names of the series shipped, in one place. Those that `/metrics` also has carry the same
/// name and labels there (the daemon's tests check it); the `_round_` ones are per-round
/// gauges standing in for `/metrics` counters and histograms, which single rounds cannot
/// rebuild.
pub mod names {
    pub const PROBE_SUCCESS: &str = "vantage_probe_success";
    pub const PROBE_DURATION: &str = "vantage_probe_duration_seconds";
    pub const PING_RTT: &str = "vantage_ping_round_rtt_seconds";
    pub const PING_LOSS: &str = "vantage_ping_loss_ratio";
    pub const PING_SENT: &str = "vantage_ping_round_packets_sent";
    pub const PING_RECEIVED: &str = "vantage_ping_round_packets_received";
    pub const PING_DUPLICATES: &str = "vantage_ping_round_duplicates";
    pub const DNS_PHASE: &str = "vantage_dns_phase_seconds";
    pub const DNS_RCODE: &str = "vantage_dns_rcode";
    pub const DNS_ANSWER_RECORDS: &str = "vantage_dns_answer_records";
    pub const DNS_AUTHORITY_RECORDS: &str = "vantage_dns_authority_records";
    pub const DNS_ADDITIONAL_RECORDS: &str = "vantage_dns_additional_records";
    pub const DNS_LOOKUP: &str = "vantage_dns_round_lookup_seconds";
    pub const DNS_VALIDATION_FAILED: &str = "vantage_dns_round_validation_failed";
    pub const DNS_TRUNCATED_RETRY: &str = "vantage_dns_round_truncated_retry";
    pub const DNS_STRAY_DATAGRAMS: &str = "vantage_dns_round_stray_datagrams";
    pub const TRACE_HOPS: &str = "vantage_trace_hops";
    pub const TRACE_HOP_RTT: &str = "vantage_trace_hop_rtt_seconds";
    pub const TRACE_HOP_LOSS: &str = "vantage_trace_hop_loss_ratio";
    pub const TRACE_PATH_HASH: &str = "vantage_trace_path_hash";
    pub const TRACE_PATHS: &str = "vantage_trace_paths";
    pub const TRACE_PATH_CHANGED: &str = "vantage_trace_round_path_changed";
}

/// Rcodes whose `vantage_dns_rcode` series `/metrics` has from the start (NOERROR, SERVFAIL,
/// NXDOMAIN, REFUSED): every shipped DNS round sets them, 1 for its own rcode, as a scrape
/// right after the round would have.
pub const COMMON_RCODES: [u16; 4] = [0, 2, 3, 5];

/// The series a stored round becomes. A round without replies has no RTT points, a hop
/// without answers no RTT point (`/metrics` shows NaN). See `docs/STORE.md`.
pub fn points(s: &StoredSample) -> Vec<Point> {
    use names::*;
    let secs = |us: u64| us as f64 / 1e6;
    let flag = |b: bool| if b { 1.0 } else { 0.0 };
    let mut v = Vec::with_capacity(12);
    v.push(Point::new(PROBE_SUCCESS, flag(s.success)));
    v.push(Point::new(PROBE_DURATION, secs(s.duration_us)));
    if let Some(p) = &s.ping {
        v.push(Point::new(PING_SENT, f64::from(p.sent)));
        v.push(Point::new(PING_RECEIVED, f64::from(p.received)));
        v.push(Point::new(PING_DUPLICATES, f64::from(p.duplicates)));
        let loss = if p.sent == 0 {
            1.0
        } else {
            1.0 - f64::from(p.received.min(p.sent)) / f64::from(p.sent)
        };
        v.push(Point::new(PING_LOSS, loss));
        if let Some((min, avg, max)) = p.rtt_us {
            v.push(Point::labelled(PING_RTT, "stat", "min", secs(min)));
            v.push(Point::labelled(PING_RTT, "stat", "avg", secs(avg)));
            v.push(Point::labelled(PING_RTT, "stat", "max", secs(max)));
            v.push(Point::labelled(
                PING_RTT,
                "stat",
                "stddev",
                secs(p.stddev_us),
            ));
        }
    }
    if let Some(d) = &s.dns {
        // As `/metrics` after the round: every phase (0 when it did not happen), the common
        // rcodes and the round's own (1 for it), the section counts (0 without an answer).
        for (phase, us) in d.phases() {
            v.push(Point::labelled(
                DNS_PHASE,
                "phase",
                phase,
                us.map_or(0.0, secs),
            ));
        }
        let mut rcodes: Vec<u16> = COMMON_RCODES.to_vec();
        if let Some(r) = d.rcode
            && !rcodes.contains(&r)
        {
            rcodes.push(r);
        }
        for r in rcodes {
            let set = flag(d.rcode == Some(r));
            v.push(Point::labelled(DNS_RCODE, "rcode", rcode_name(r), set));
        }
        v.push(Point::new(DNS_ANSWER_RECORDS, f64::from(d.answers)));
        v.push(Point::new(DNS_AUTHORITY_RECORDS, f64::from(d.authority)));
        v.push(Point::new(DNS_ADDITIONAL_RECORDS, f64::from(d.additional)));
        if let Some(l) = d.lookup_us {
            v.push(Point::new(DNS_LOOKUP, secs(l)));
        }
        v.push(Point::new(DNS_VALIDATION_FAILED, flag(d.validation_failed)));
        v.push(Point::new(DNS_TRUNCATED_RETRY, flag(d.truncated_retry)));
        v.push(Point::new(
            DNS_STRAY_DATAGRAMS,
            f64::from(d.stray_datagrams),
        ));
    }
    if let Some(t) = &s.trace {
        v.push(Point::new(TRACE_HOPS, f64::from(t.hop_count())));
        for h in &t.hops {
            let hop = h.ttl.to_string();
            if let Some(r) = h.rtt_avg_us {
                v.push(Point::labelled(TRACE_HOP_RTT, "hop", hop.clone(), secs(r)));
            }
            v.push(Point::labelled(TRACE_HOP_LOSS, "hop", hop, h.loss_ratio()));
        }
        v.push(Point::new(TRACE_PATH_HASH, f64::from(t.path_hash)));
        v.push(Point::new(TRACE_PATHS, f64::from(t.paths_known)));
        v.push(Point::new(TRACE_PATH_CHANGED, flag(t.path_changed)));
    }
    v
}

/// Labels of one point's series: `__name__`, `target`, `probe` (on `vantage_probe_*`), the
/// point's own label, the target's labels, the endpoint's external labels; sorted by name.
fn series_labels(
    name: &str,
    label: Option<(&str, &str)>,
    key: &SeriesKey,
    external: &Labels,
) -> Vec<proto::Label> {
    let mut m: BTreeMap<&str, &str> = BTreeMap::new();
    for (k, v) in external.iter() {
        m.insert(k, v);
    }
    for (k, v) in key.labels.iter() {
        m.insert(k, v);
    }
    m.insert("__name__", name);
    m.insert("target", &key.target);
    if name.starts_with("vantage_probe_") {
        m.insert("probe", key.probe.as_str());
    }
    if let Some((k, v)) = label {
        m.insert(k, v);
    }
    m.into_iter()
        .map(|(k, v)| proto::Label {
            name: k.to_string(),
            value: v.to_string(),
        })
        .collect()
}

/// Builds the protobuf request for stored samples (deterministic: a resend is byte-identical).
pub fn build_request(
    samples: &[StoredSample],
    series: &dyn Fn(u32) -> Option<SeriesKey>,
    external: &Labels,
) -> proto::WriteRequest {
    // (series id, metric name, own label) -> points
    type Key = (u32, &'static str, Option<(&'static str, String)>);
    let mut by_series: BTreeMap<Key, Vec<proto::Sample>> = BTreeMap::new();
    for s in samples {
        for p in points(s) {
            by_series
                .entry((s.series, p.name, p.label))
                .or_default()
                .push(proto::Sample {
                    value: p.value,
                    timestamp: s.timestamp_ms,
                });
        }
    }
    let mut keys: BTreeMap<u32, Option<SeriesKey>> = BTreeMap::new();
    let mut timeseries = Vec::with_capacity(by_series.len());
    for ((id, name, label), mut pts) in by_series {
        let Some(key) = keys.entry(id).or_insert_with(|| series(id)).clone() else {
            continue;
        };
        pts.sort_by_key(|p| p.timestamp);
        pts.dedup_by_key(|p| p.timestamp);
        timeseries.push(proto::TimeSeries {
            labels: series_labels(
                name,
                label.as_ref().map(|(k, v)| (*k, v.as_str())),
                &key,
                external,
            ),
            samples: pts,
        });
    }
    proto::WriteRequest { timeseries }
}

/// Protobuf, then the snappy block format, as remote_write 1.0 wants.
pub fn encode_request(req: &proto::WriteRequest) -> Vec<u8> {
    let raw = req.encode_to_vec();
    snap::raw::Encoder::new()
        .compress_vec(&raw)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{ErrorKind, StoredPing};
    use std::sync::Arc;
    use vantage_core::ProbeKind;

    #[test]
    fn request_is_sorted_deterministic_and_decodes() {
        let key = SeriesKey {
            target: "gw".into(),
            probe: ProbeKind::Ping,
            labels: Arc::new(Labels::from([("site".into(), "office".into())])),
        };
        let s = |ts, rtt| StoredSample {
            series: 0,
            timestamp_ms: ts,
            success: true,
            error: ErrorKind::None,
            duration_us: 1500,
            ping: Some(StoredPing {
                sent: 1,
                received: 1,
                duplicates: 0,
                icmp_errors: 0,
                rtt_us: Some((rtt, rtt, rtt)),
                stddev_us: 0,
            }),
            dns: None,
            trace: None,
        };
        let samples = vec![s(2000, 10), s(1000, 20), s(1000, 20)];
        let ext = Labels::from([("instance".into(), "pi".into())]);
        let lookup = |id: u32| (id == 0).then(|| key.clone());
        let req = build_request(&samples, &lookup, &ext);
        assert_eq!(req.timeseries.len(), 10);
        let succ = req
            .timeseries
            .iter()
            .find(|t| t.labels.iter().any(|l| l.value == "vantage_probe_success"))
            .unwrap();
        let names: Vec<_> = succ.labels.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["__name__", "instance", "probe", "site", "target"]);
        assert_eq!(
            succ.samples.iter().map(|p| p.timestamp).collect::<Vec<_>>(),
            [1000, 2000]
        );
        let rtt = req
            .timeseries
            .iter()
            .find(|t| {
                t.labels
                    .iter()
                    .any(|l| l.name == "stat" && l.value == "min")
            })
            .unwrap();
        assert!(!rtt.labels.iter().any(|l| l.name == "probe"));
        assert_eq!(rtt.labels[0].value, "vantage_ping_round_rtt_seconds");
        assert_eq!(rtt.samples[0].value, 20e-6);
        let a = encode_request(&req);
        let b = encode_request(&build_request(&samples, &lookup, &ext));
        assert_eq!(a, b);
        let raw = snap::raw::Decoder::new().decompress_vec(&a).unwrap();
        assert_eq!(proto::WriteRequest::decode(&raw[..]).unwrap(), req);
    }

    fn find<'a>(
        req: &'a proto::WriteRequest,
        name: &str,
        label: Option<(&str, &str)>,
    ) -> Option<&'a proto::TimeSeries> {
        req.timeseries.iter().find(|t| {
            t.labels
                .iter()
                .any(|l| l.name == "__name__" && l.value == name)
                && label.is_none_or(|(k, v)| t.labels.iter().any(|l| l.name == k && l.value == v))
        })
    }

    #[test]
    fn dns_and_trace_rounds_become_their_metrics_series() {
        use crate::codec::{StoredDns, StoredHop, StoredTrace};
        let key = |probe| SeriesKey {
            target: "t".into(),
            probe,
            labels: Arc::new(Labels::from([("site".into(), "lab".into())])),
        };
        let base = StoredSample {
            series: 0,
            timestamp_ms: 5_000,
            success: true,
            error: ErrorKind::None,
            duration_us: 21_000,
            ping: None,
            dns: None,
            trace: None,
        };
        let dns = StoredSample {
            dns: Some(Box::new(StoredDns {
                rcode: Some(1),
                answers: 2,
                additional: 1,
                lookup_us: Some(20_000),
                request_us: Some(19_500),
                truncated_retry: true,
                ..StoredDns::default()
            })),
            ..base.clone()
        };
        let trace = StoredSample {
            series: 1,
            timestamp_ms: 6_000,
            trace: Some(Box::new(StoredTrace {
                reached: true,
                hops: vec![
                    StoredHop {
                        ttl: 1,
                        sent: 3,
                        received: 3,
                        rtt_avg_us: Some(500),
                    },
                    StoredHop {
                        ttl: 2,
                        sent: 3,
                        received: 0,
                        rtt_avg_us: None,
                    },
                    StoredHop {
                        ttl: 3,
                        sent: 3,
                        received: 2,
                        rtt_avg_us: Some(9_000),
                    },
                ],
                last_rtt_us: Some((8_000, 9_000, 10_000)),
                path_hash: 77,
                path_changed: true,
                paths_known: 2,
            })),
            ..base.clone()
        };
        let lookup = |id: u32| match id {
            0 => Some(key(ProbeKind::Dns)),
            1 => Some(key(ProbeKind::Trace)),
            _ => None,
        };
        let req = build_request(&[dns, trace], &lookup, &Labels::new());
        let value = |name: &str, label: Option<(&str, &str)>| {
            let t = find(&req, name, label).unwrap_or_else(|| panic!("{name} {label:?}"));
            assert_eq!(t.samples.len(), 1);
            t.samples[0].value
        };
        use names::*;
        let labels = |name: &str, label| {
            find(&req, name, label)
                .unwrap()
                .labels
                .iter()
                .map(|l| l.name.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            labels(DNS_PHASE, Some(("phase", "request"))),
            ["__name__", "phase", "site", "target"]
        );
        assert!(labels(PROBE_SUCCESS, None).contains(&"probe".to_string()));
        assert_eq!(value(DNS_PHASE, Some(("phase", "request"))), 0.0195);
        assert_eq!(value(DNS_PHASE, Some(("phase", "connect"))), 0.0);
        // The common rcodes at 0, the round's own at 1.
        for (rcode, v) in [
            ("NOERROR", 0.0),
            ("SERVFAIL", 0.0),
            ("NXDOMAIN", 0.0),
            ("REFUSED", 0.0),
            ("FORMERR", 1.0),
        ] {
            assert_eq!(value(DNS_RCODE, Some(("rcode", rcode))), v, "{rcode}");
        }
        assert_eq!(value(DNS_ANSWER_RECORDS, None), 2.0);
        assert_eq!(value(DNS_AUTHORITY_RECORDS, None), 0.0);
        assert_eq!(value(DNS_ADDITIONAL_RECORDS, None), 1.0);
        assert_eq!(value(DNS_LOOKUP, None), 0.02);
        assert_eq!(value(DNS_TRUNCATED_RETRY, None), 1.0);
        assert_eq!(value(DNS_VALIDATION_FAILED, None), 0.0);

        assert_eq!(value(TRACE_HOPS, None), 3.0);
        assert_eq!(
            labels(TRACE_HOP_RTT, Some(("hop", "3"))),
            ["__name__", "hop", "site", "target"]
        );
        assert_eq!(value(TRACE_HOP_RTT, Some(("hop", "1"))), 0.0005);
        assert_eq!(value(TRACE_HOP_RTT, Some(("hop", "3"))), 0.009);
        assert!(find(&req, TRACE_HOP_RTT, Some(("hop", "2"))).is_none());
        assert_eq!(value(TRACE_HOP_LOSS, Some(("hop", "2"))), 1.0);
        assert!((value(TRACE_HOP_LOSS, Some(("hop", "3"))) - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(value(TRACE_PATH_HASH, None), 77.0);
        assert_eq!(value(TRACE_PATHS, None), 2.0);
        assert_eq!(value(TRACE_PATH_CHANGED, None), 1.0);
        assert_eq!(
            find(&req, TRACE_HOPS, None).unwrap().samples[0].timestamp,
            6_000
        );
        // DNS points belong to the DNS round's series only, and the other way round.
        assert!(
            req.timeseries
                .iter()
                .filter(|t| t.labels[0].value.starts_with("vantage_trace_"))
                .all(|t| t.samples.iter().all(|p| p.timestamp == 6_000))
        );
        assert!(find(&req, PING_LOSS, None).is_none());
    }
}
