//! A target's per-round gauges on `/metrics` and `/probe`: the points of its last round of
//! each probe kind, from the one definition in [`vantage_store::gauges`] that remote_write
//! ships too.

use std::sync::Mutex;

use vantage_core::{ProbeKind, Sample};
use vantage_store::StoredSample;
use vantage_store::gauges::{Gauge, Point, initial_points, points};

use super::text::Lines;

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

    /// The target's lines of one gauge family.
    pub fn write(&self, gauge: &Gauge, lines: &mut Lines<'_>) {
        let last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        for (kind, pts) in last.iter() {
            for p in pts.iter().filter(|p| std::ptr::eq(p.gauge, gauge)) {
                // The probe label (of a gauge several kinds write), then the gauge's own.
                let probe = p.gauge.probe_label.then(|| ("probe", kind.as_str()));
                let mut labels: Vec<(&str, &str)> = probe.into_iter().chain(p.label()).collect();
                // `Lines` merges them with the target's labels: sorted by name.
                labels.sort_unstable_by_key(|l| l.0);
                lines.sample(gauge.name, &labels, None, p.value);
            }
        }
    }
}
