//! Ships stored samples to Prometheus remote_write 1.0 endpoints, with their original
//! timestamps, resuming from a persisted cursor per endpoint.
//!
//! Delivery is at least once: the cursor moves only when every sample of a batch was
//! accepted or refused, and is persisted with the store's next group commit, so after a crash
//! a few requests may be sent again. A resend is built from the same stored samples and is an
//! exact duplicate (same series, timestamps and values), which Prometheus accepts
//! idempotently. A refused request is split down to the refused samples (`bisect`).

pub mod bisect;
pub mod config;
mod endpoint;
mod live;
pub mod proto;
mod request;
pub mod scrapes;
mod shipper;

pub use endpoint::{
    DEFAULT_SAMPLES_PER_SECOND, DEFAULT_SAMPLES_PER_SEND, Endpoint, SendMode, SetupError, Tls,
};
pub use live::{LiveSample, LiveSeries, live_request};
pub use request::{build_request, encode_request};
pub use scrapes::{Coverage, ScrapeLog};
pub use shipper::{EndpointStats, LIVE_INTERVAL, Shipper, ShipperOptions};

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::codec::StoredSample;
    use crate::codec::{ErrorKind, StoredPing};
    use crate::series::{Labels, SeriesKey};
    use std::sync::Arc;
    use vantage_core::{ProbeKind, RoundQuality};

    #[test]
    fn request_is_sorted_deterministic_and_decodes() {
        let key = SeriesKey {
            target: "gw".into(),
            probe: ProbeKind::PING,
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
            trace: None,
            module: None,
            quality: RoundQuality::empty(),
        };
        let samples = vec![s(2000, 10), s(1000, 20), s(1000, 20)];
        let ext = Labels::from([("instance".into(), "pi".into())]);
        let lookup = |id: u32| (id == 0).then(|| key.clone());
        let req = build_request(&samples, &lookup, &ext);
        assert_eq!(req.timeseries.len(), 10);
        let succ = req
            .timeseries
            .iter()
            .find(|t| {
                t.labels
                    .iter()
                    .any(|l| l.value == crate::gauges::PROBE_SUCCESS.name)
            })
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
        assert_eq!(rtt.labels[0].value, crate::gauges::PING_RTT.name);
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
        use crate::codec::{StoredDns, StoredHop, StoredModule, StoredTrace};
        let key = |probe| SeriesKey {
            target: "t".into(),
            probe,
            labels: Arc::new(Labels::from([("site".into(), "lab".into())])),
        };
        let base = crate::codec::tests::other(0, 5_000);
        let dns = StoredSample {
            module: Some(Box::new(StoredModule::dns(&StoredDns {
                rcode: Some(1),
                answers: 2,
                additional: 1,
                lookup_us: Some(20_000),
                request_us: Some(19_500),
                truncated_retry: true,
                ..StoredDns::default()
            }))),
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
                partial: Some((2, 3)),
            })),
            ..base.clone()
        };
        let lookup = |id: u32| match id {
            0 => Some(key(ProbeKind::DNS)),
            1 => Some(key(ProbeKind::TRACE)),
            _ => None,
        };
        let req = build_request(&[dns, trace], &lookup, &Labels::new());
        let value = |name: &str, label: Option<(&str, &str)>| {
            let t = find(&req, name, label).unwrap_or_else(|| panic!("{name} {label:?}"));
            assert_eq!(t.samples.len(), 1);
            t.samples[0].value
        };
        use crate::gauges::*;
        let labels = |name: &str, label| {
            find(&req, name, label)
                .unwrap()
                .labels
                .iter()
                .map(|l| l.name.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            labels(DNS_PHASE.name, Some(("phase", "request"))),
            ["__name__", "phase", "site", "target"]
        );
        assert!(labels(PROBE_SUCCESS.name, None).contains(&"probe".to_string()));
        assert_eq!(value(DNS_PHASE.name, Some(("phase", "request"))), 0.0195);
        assert_eq!(value(DNS_PHASE.name, Some(("phase", "connect"))), 0.0);
        // The common rcodes at 0, the round's own at 1.
        for (rcode, v) in [
            ("NOERROR", 0.0),
            ("SERVFAIL", 0.0),
            ("NXDOMAIN", 0.0),
            ("REFUSED", 0.0),
            ("FORMERR", 1.0),
        ] {
            assert_eq!(value(DNS_RCODE.name, Some(("rcode", rcode))), v, "{rcode}");
        }
        assert_eq!(value(DNS_ANSWER_RECORDS.name, None), 2.0);
        assert_eq!(value(DNS_AUTHORITY_RECORDS.name, None), 0.0);
        assert_eq!(value(DNS_ADDITIONAL_RECORDS.name, None), 1.0);
        assert_eq!(value(DNS_LOOKUP.name, None), 0.02);
        assert_eq!(value(DNS_TRUNCATED_RETRY.name, None), 1.0);
        assert_eq!(value(DNS_VALIDATION_FAILED.name, None), 0.0);

        assert_eq!(value(TRACE_HOPS.name, None), 3.0);
        assert_eq!(
            labels(TRACE_HOP_RTT.name, Some(("hop", "3"))),
            ["__name__", "hop", "site", "target"]
        );
        assert_eq!(value(TRACE_HOP_RTT.name, Some(("hop", "1"))), 0.0005);
        assert_eq!(value(TRACE_HOP_RTT.name, Some(("hop", "3"))), 0.009);
        assert!(find(&req, TRACE_HOP_RTT.name, Some(("hop", "2"))).is_none());
        assert_eq!(value(TRACE_HOP_LOSS.name, Some(("hop", "2"))), 1.0);
        assert!((value(TRACE_HOP_LOSS.name, Some(("hop", "3"))) - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(value(TRACE_PATH_HASH.name, None), 77.0);
        assert_eq!(value(TRACE_PATHS.name, None), 2.0);
        assert!((value(TRACE_FLOWS_REACHED.name, None) - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(value(TRACE_PATH_CHANGED.name, None), 1.0);
        assert_eq!(
            find(&req, TRACE_HOPS.name, None).unwrap().samples[0].timestamp,
            6_000
        );
        // DNS points belong to the DNS round's series only, and the other way round.
        assert!(
            req.timeseries
                .iter()
                .filter(|t| t.labels[0].value.starts_with("vantage_trace_"))
                .all(|t| t.samples.iter().all(|p| p.timestamp == 6_000))
        );
        assert!(find(&req, PING_LOSS.name, None).is_none());
    }
}
