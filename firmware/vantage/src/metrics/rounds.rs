//! A target's per-round gauges on `/metrics` and `/probe`: the points of its last round of
//! each probe kind, from the one definition in [`vantage_store::gauges`] that remote_write
//! ships too.
//!
//! Every target keeps its last round of each kind, so the points are kept compactly: the
//! round's values apart from its shape (which gauges, with which values of their own labels).
//! A shape whose labels are all static (ping's, DNS's) is shared by every target that has it.

use std::borrow::Cow;
use std::sync::{Arc, LazyLock, Mutex};
use vantage_core::LockExt;

use vantage_core::{ProbeKind, Sample};
use vantage_store::StoredSample;
use vantage_store::gauges::{Gauge, Point, initial_points, points};

use super::text::Lines;

/// The series of a round's points, in order: each point's gauge and its own label's value.
type Shape = [(&'static Gauge, Option<Cow<'static, str>>)];

/// Shapes kept for sharing at most: the kinds' static label sets make a handful; beyond this a
/// target keeps a shape of its own.
const MAX_SHARED_SHAPES: usize = 64;

/// The shapes with only static labels seen so far, shared between targets.
static SHAPES: LazyLock<Mutex<Vec<Arc<Shape>>>> = LazyLock::new(Mutex::default);

/// Whether `shape` is the shape of `pts`.
fn same_shape(shape: &Shape, pts: &[Point]) -> bool {
    shape.len() == pts.len()
        && shape
            .iter()
            .zip(pts)
            .all(|((g, l), p)| std::ptr::eq(*g, p.gauge) && *l == p.label_value)
}

/// The shape of `pts`: a shared one when its labels are all static.
fn shape_of(pts: &[Point]) -> Arc<Shape> {
    let own = || -> Arc<Shape> {
        pts.iter()
            .map(|p| (p.gauge, p.label_value.clone()))
            .collect()
    };
    if pts
        .iter()
        .any(|p| matches!(p.label_value, Some(Cow::Owned(_))))
    {
        return own();
    }
    let mut shared = SHAPES.lock_or_recover();
    if let Some(s) = shared.iter().find(|s| same_shape(s, pts)) {
        return s.clone();
    }
    let s = own();
    if shared.len() < MAX_SHARED_SHAPES {
        shared.push(s.clone());
    }
    s
}

/// One kind's last round.
#[derive(Debug)]
struct Last {
    kind: ProbeKind,
    shape: Arc<Shape>,
    /// The value of each point of `shape`.
    values: Box<[f64]>,
}

impl Last {
    fn new(kind: ProbeKind, pts: &[Point]) -> Self {
        Self {
            kind,
            shape: shape_of(pts),
            values: pts.iter().map(|p| p.value).collect(),
        }
    }

    fn set(&mut self, pts: &[Point]) {
        if same_shape(&self.shape, pts) {
            // The usual case: the last round's series with new values, no allocation.
            for (v, p) in self.values.iter_mut().zip(pts) {
                *v = p.value;
            }
        } else {
            *self = Self::new(self.kind, pts);
        }
    }
}

/// The last round's points of each probe kind of one target.
#[derive(Debug)]
pub struct RoundGauges {
    last: Mutex<Vec<Last>>,
}

impl RoundGauges {
    /// Every kind starts with its series at 0 ([`initial_points`]).
    pub fn new(kinds: &[ProbeKind]) -> Self {
        Self {
            last: Mutex::new(
                kinds
                    .iter()
                    .map(|k| Last::new(*k, &initial_points(*k)))
                    .collect(),
            ),
        }
    }

    /// Shows `sample` as its probe kind's last round, converted exactly as the store keeps it.
    pub fn observe(&self, sample: &Sample) {
        let pts = points(&StoredSample::from_sample(sample, 0));
        let mut last = self.last.lock_or_recover();
        match last.iter_mut().find(|l| l.kind == sample.probe) {
            Some(l) => l.set(&pts),
            None => last.push(Last::new(sample.probe, &pts)),
        }
    }

    /// The gauges any of `rounds` has a point of, so that a scrape visits every target only
    /// for the families it may write: a ping target has a dozen of the forty-odd gauges.
    pub fn present<'a>(rounds: impl Iterator<Item = &'a RoundGauges>) -> Vec<&'static Gauge> {
        let mut shared: Vec<Arc<Shape>> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut gauges = Vec::new();
        for r in rounds {
            for l in r.last.lock_or_recover().iter() {
                if shared.iter().any(|s| Arc::ptr_eq(s, &l.shape)) {
                    continue;
                }
                for (g, _) in l.shape.iter() {
                    if seen.insert(std::ptr::from_ref(*g)) {
                        gauges.push(*g);
                    }
                }
                if shared.len() < MAX_SHARED_SHAPES {
                    shared.push(l.shape.clone());
                }
            }
        }
        gauges
    }

    /// The target's lines of one gauge family.
    pub fn write(&self, gauge: &Gauge, lines: &mut Lines<'_>) {
        #[cfg(test)]
        tests::WRITES.with(|n| n.set(n.get() + 1));
        let last = self.last.lock_or_recover();
        for l in last.iter() {
            let points = l.shape.iter().zip(l.values.iter());
            for ((g, label), value) in points.filter(|((g, _), _)| std::ptr::eq(*g, gauge)) {
                // The probe label (of a gauge several kinds write), then the gauge's own.
                let probe = g.probe_label.then(|| ("probe", l.kind.as_str()));
                let own = g.label.zip(label.as_deref());
                // `Lines` merges them with the target's labels: sorted by name.
                let pair;
                let labels: &[(&str, &str)] = match (probe, own) {
                    (Some(a), Some(b)) => {
                        pair = if a.0 <= b.0 { [a, b] } else { [b, a] };
                        &pair
                    }
                    (Some(a), None) | (None, Some(a)) => &[a],
                    (None, None) => &[],
                };
                lines.sample(gauge.name, labels, None, *value);
            }
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::time::{Duration, SystemTime};

    use vantage_core::{Measurement, PingReport, RoundQuality};
    use vantage_store::gauges::ALL;

    use super::*;
    use crate::metrics::text::SpelledSet;

    thread_local! {
        /// Calls of [`RoundGauges::write`] on this thread: a target's visits by the render.
        pub static WRITES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    /// What `f` returns, and how many times it called [`RoundGauges::write`].
    pub fn writes_in<R>(f: impl FnOnce() -> R) -> (R, usize) {
        let before = WRITES.with(|n| n.get());
        let r = f();
        (r, WRITES.with(|n| n.get()) - before)
    }

    fn ping(rtts: &[u64]) -> Sample {
        Sample {
            target: "t".into(),
            probe: ProbeKind::PING,
            timestamp: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            duration: Duration::from_millis(3),
            success: !rtts.is_empty(),
            error: None,
            measurement: Measurement::from(PingReport {
                sent: 2,
                received: rtts.len() as u32,
                rtts: rtts.iter().map(|us| Duration::from_micros(*us)).collect(),
                ..PingReport::default()
            }),
            quality: RoundQuality::empty(),
        }
    }

    /// The text of every family of `g`, as `/metrics` writes it.
    fn text(g: &RoundGauges) -> String {
        let mut out = String::new();
        let mut target = SpelledSet::default();
        target.push([("target", "t")]);
        for gauge in ALL.iter() {
            let mut l = Lines::new(&mut out, target.get(0));
            g.write(gauge, &mut l);
        }
        out
    }

    /// The text the points of `s` give, written point by point.
    fn plain(s: &Sample) -> String {
        let mut out = String::new();
        let mut target = SpelledSet::default();
        target.push([("target", "t")]);
        let pts = points(&StoredSample::from_sample(s, 0));
        for gauge in ALL.iter() {
            let mut l = Lines::new(&mut out, target.get(0));
            for p in pts.iter().filter(|p| std::ptr::eq(p.gauge, *gauge)) {
                let probe = p.gauge.probe_label.then(|| ("probe", s.probe.as_str()));
                let mut labels: Vec<(&str, &str)> = probe.into_iter().chain(p.label()).collect();
                labels.sort_unstable_by_key(|l| l.0);
                l.sample(gauge.name, &labels, None, p.value);
            }
        }
        out
    }

    /// Targets with rounds of one shape share it and keep their own values; a round of
    /// another shape (no replies: no RTT points) replaces it, and each writes what its points
    /// say.
    #[test]
    fn targets_share_a_shape_and_keep_their_own_values() {
        let (a, b) = (
            RoundGauges::new(&[ProbeKind::PING]),
            RoundGauges::new(&[ProbeKind::PING]),
        );
        let shape = |g: &RoundGauges| g.last.lock().unwrap()[0].shape.clone();
        assert!(Arc::ptr_eq(&shape(&a), &shape(&b)), "the initial shape");
        let (ra, rb, lost) = (ping(&[1_000, 3_000]), ping(&[20_000]), ping(&[]));
        a.observe(&ra);
        b.observe(&rb);
        assert!(Arc::ptr_eq(&shape(&a), &shape(&b)));
        assert_eq!(text(&a), plain(&ra));
        assert_eq!(text(&b), plain(&rb));
        assert_ne!(text(&a), text(&b));
        b.observe(&lost);
        assert!(!Arc::ptr_eq(&shape(&a), &shape(&b)));
        assert_eq!(text(&b), plain(&lost));
        assert!(!text(&b).contains("rtt"), "{}", text(&b));
        b.observe(&rb);
        assert!(Arc::ptr_eq(&shape(&a), &shape(&b)));
        assert_eq!(text(&b), plain(&rb));
        assert_eq!(text(&a), plain(&ra));
    }

    /// Labels owned by one round (a trace's hop numbers) are kept with its target, not shared.
    #[test]
    fn owned_labels_are_not_shared() {
        let owned = [Point::labelled(
            &vantage_store::gauges::TRACE_HOP_LOSS,
            "3".to_string(),
            0.5,
        )];
        let (x, y) = (shape_of(&owned), shape_of(&owned));
        assert!(!Arc::ptr_eq(&x, &y));
        assert!(same_shape(&x, &owned));
        let shared = [Point::new(&vantage_store::gauges::PROBE_SUCCESS, 1.0)];
        assert!(Arc::ptr_eq(&shape_of(&shared), &shape_of(&shared)));
    }
}
