//! A remote_write request: stored samples as protobuf time series, snappy-compressed.

use std::collections::BTreeMap;

use prost::Message;

use super::proto;
use crate::codec::StoredSample;
use crate::gauges::{Point, points};
use crate::series::{Labels, SeriesKey};

/// Labels of one point's series: `__name__`, `target`, `probe` (where the gauge has it), the
/// point's own label, the target's labels, the endpoint's external labels; sorted by name.
fn series_labels(p: &Point, key: &SeriesKey, external: &Labels) -> Vec<proto::Label> {
    let mut m: BTreeMap<&str, &str> = BTreeMap::new();
    for (k, v) in external.iter() {
        m.insert(k, v);
    }
    for (k, v) in key.labels.iter() {
        m.insert(k, v);
    }
    m.insert("__name__", p.gauge.name);
    m.insert("target", &key.target);
    if p.gauge.probe_label {
        m.insert("probe", key.probe.as_str());
    }
    if let Some((k, v)) = p.label() {
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
    // (series id, gauge name, own label value) -> a point of it and its samples
    type Key = (u32, &'static str, Option<std::borrow::Cow<'static, str>>);
    let mut by_series: BTreeMap<Key, (Point, Vec<proto::Sample>)> = BTreeMap::new();
    for s in samples {
        for p in points(s) {
            let key = (s.series, p.gauge.name, p.label_value.clone());
            let sample = proto::Sample {
                value: p.value,
                timestamp: s.timestamp_ms,
            };
            by_series
                .entry(key)
                .or_insert((p, Vec::new()))
                .1
                .push(sample);
        }
    }
    let mut keys: BTreeMap<u32, Option<SeriesKey>> = BTreeMap::new();
    let mut timeseries = Vec::with_capacity(by_series.len());
    for ((id, _, _), (point, mut pts)) in by_series {
        let Some(key) = keys.entry(id).or_insert_with(|| series(id)).clone() else {
            continue;
        };
        pts.sort_by_key(|p| p.timestamp);
        pts.dedup_by_key(|p| p.timestamp);
        timeseries.push(proto::TimeSeries {
            labels: series_labels(&point, &key, external),
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
