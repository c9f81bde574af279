//! A target's per-round gauges on `/metrics` and `/probe`: the points of its last round of
//! each probe kind, from the one definition in [`vantage_store::gauges`] that remote_write
//! ships too.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use prometheus::proto::{Gauge, LabelPair, Metric, MetricFamily, MetricType};
use vantage_core::{ProbeKind, Sample};
use vantage_store::StoredSample;
use vantage_store::gauges::{Point, initial_points, points};

/// The last round's points of each probe kind of one target.
#[derive(Debug)]
pub struct RoundGauges {
    last: Mutex<Vec<(ProbeKind, Vec<Point>)>>,
}

impl RoundGauges {
    /// Every kind starts with its series at 0 ([`initial_points`]).
    pub fn new(kinds: &[ProbeKind]) -> Self {
        Self {
            last: Mutex::new(kinds.iter().map(|k| (*k, initial_points(*k))).collect()),
        }
    }

    /// Shows `sample` as its probe kind's last round, converted exactly as the store keeps it.
    pub fn observe(&self, sample: &Sample) {
        let pts = points(&StoredSample::from_sample(sample, 0));
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        match last.iter_mut().find(|(k, _)| *k == sample.probe) {
            Some((_, p)) => *p = pts,
            None => last.push((sample.probe, pts)),
        }
    }

    /// The points as metric families, with `labels` (the target's) on every series.
    pub fn collect(&self, labels: &HashMap<String, String>, out: &mut Vec<MetricFamily>) {
        let last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let mut families: BTreeMap<&str, MetricFamily> = BTreeMap::new();
        for (kind, pts) in last.iter() {
            for p in pts {
                let f = families.entry(p.gauge.name).or_insert_with(|| {
                    let mut f = MetricFamily::default();
                    f.set_name(p.gauge.name.to_string());
                    f.set_help(p.gauge.help.to_string());
                    f.set_field_type(MetricType::GAUGE);
                    f
                });
                f.mut_metric().push(metric(p, *kind, labels));
            }
        }
        out.extend(families.into_values());
    }
}

fn pair(name: &str, value: &str) -> LabelPair {
    let mut l = LabelPair::default();
    l.set_name(name.to_string());
    l.set_value(value.to_string());
    l
}

fn metric(p: &Point, kind: ProbeKind, labels: &HashMap<String, String>) -> Metric {
    let mut pairs: Vec<LabelPair> = labels.iter().map(|(k, v)| pair(k, v)).collect();
    if p.gauge.probe_label {
        pairs.push(pair("probe", kind.as_str()));
    }
    if let Some((k, v)) = p.label() {
        pairs.push(pair(k, v));
    }
    pairs.sort_by(|a, b| a.name().cmp(b.name()));
    let mut g = Gauge::default();
    g.set_value(p.value);
    let mut m = Metric::default();
    m.set_label(pairs);
    m.set_gauge(g);
    m
}
