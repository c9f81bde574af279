//! The shape of a probe round's series: gauge families and their points, and the histograms a
//! daemon keeps from rounds. Each probe kind declares its own here; the store, remote_write,
//! `/metrics` and `/probe` derive theirs from these declarations.

use std::borrow::Cow;

/// One gauge series family of a round: its name, help text and labels.
#[derive(Debug, PartialEq, Eq)]
pub struct Gauge {
    pub name: &'static str,
    pub help: &'static str,
    /// Carries `probe="KIND"` (the series every probe kind has).
    pub probe_label: bool,
    /// The gauge's own label (`stat`, `phase`, `rcode`, `hop`), if any.
    pub label: Option<&'static str>,
}

/// A gauge without labels.
pub const fn gauge(name: &'static str, help: &'static str) -> Gauge {
    Gauge {
        name,
        help,
        probe_label: false,
        label: None,
    }
}

/// A gauge without labels of its own that carries `probe="KIND"`: one that several kinds write
/// for the same target (the TLS certificate's expiry, from TCP and from HTTPS rounds), so that
/// each kind's is a series of its own.
pub const fn per_probe(name: &'static str, help: &'static str) -> Gauge {
    Gauge {
        name,
        help,
        probe_label: true,
        label: None,
    }
}

/// A gauge with one label of its own that carries `probe="KIND"` too: one that several kinds
/// write for the same target with a value of its label (the TLS version), each kind's a series
/// of its own.
pub const fn per_probe_labelled(
    name: &'static str,
    label: &'static str,
    help: &'static str,
) -> Gauge {
    Gauge {
        name,
        help,
        probe_label: true,
        label: Some(label),
    }
}

/// A gauge with one label of its own.
pub const fn labelled(name: &'static str, label: &'static str, help: &'static str) -> Gauge {
    Gauge {
        name,
        help,
        probe_label: false,
        label: Some(label),
    }
}

/// One point of a round: a gauge, the value of its own label, and the value.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub gauge: &'static Gauge,
    pub label_value: Option<Cow<'static, str>>,
    pub value: f64,
}

impl Point {
    pub fn new(gauge: &'static Gauge, value: f64) -> Self {
        Self {
            gauge,
            label_value: None,
            value,
        }
    }

    pub fn labelled(gauge: &'static Gauge, v: impl Into<Cow<'static, str>>, value: f64) -> Self {
        Self {
            gauge,
            label_value: Some(v.into()),
            value,
        }
    }

    /// The gauge's own label with its value, if it has one.
    pub fn label(&self) -> Option<(&'static str, &str)> {
        self.gauge.label.zip(self.label_value.as_deref())
    }
}

/// A histogram the daemon keeps per target from every round (for `rate()` over live scrapes;
/// not stored, not in `/probe`): exponential buckets from `start`, `count` of them.
#[derive(Debug, PartialEq)]
pub struct HistogramDef {
    pub name: &'static str,
    pub help: &'static str,
    pub start: f64,
    pub factor: f64,
    pub count: usize,
}

/// A counter the daemon keeps per target from every round (for `rate()` over live scrapes;
/// not stored, not in `/probe`), like [`HistogramDef`].
#[derive(Debug, PartialEq, Eq)]
pub struct CounterDef {
    pub name: &'static str,
    pub help: &'static str,
}

/// A family of info series (value 1) the daemon keeps from a target's last round, with labels
/// of its own: facts of the round the store does not keep (a trace's hop addresses). Each
/// round replaces the target's set, so the family follows the current state and its
/// cardinality stays what one round can show. Shown in `/probe` answers too.
#[derive(Debug, PartialEq, Eq)]
pub struct InfoFamily {
    pub name: &'static str,
    pub help: &'static str,
    /// The family's own label names, sorted (the exposition's order).
    pub labels: &'static [&'static str],
}

/// Seconds from microseconds, the stored resolution.
pub fn secs(us: u64) -> f64 {
    us as f64 / 1e6
}

/// 1 for true, 0 for false.
pub fn flag(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}
