//! The histograms and counters probe modules declare ([`vantage_core::ProbeModule::histograms`],
//! [`vantage_core::ProbeModule::counters`]), kept per target from every round; their gauges go
//! through `rounds` like every kind's.

use std::collections::HashMap;
use std::sync::LazyLock;

use vantage_core::{ModuleId, ModuleReport, ProbeKind};

use super::text::{Buckets, Counter, Histogram, Kind, Lines, family};

/// Each module's bucket bounds, spelled once for every target.
static BUCKETS: LazyLock<HashMap<ModuleId, Vec<Buckets>>> = LazyLock::new(|| {
    ModuleId::all()
        .map(|m| {
            let defs = m.module().histograms();
            let b = defs
                .iter()
                .map(|d| Buckets::exponential(d.start, d.factor, d.count))
                .collect();
            (m, b)
        })
        .collect()
});

/// One module kind's histograms of one target.
#[derive(Debug)]
pub struct ModuleSeries {
    kind: ModuleId,
    histograms: Vec<Histogram>,
    counters: Vec<Counter>,
}

impl ModuleSeries {
    /// The series of every module kind among `kinds`.
    pub fn for_kinds(kinds: &[ProbeKind]) -> Vec<Self> {
        kinds
            .iter()
            .filter_map(|k| match k {
                ProbeKind::Module(m) => Some(Self {
                    kind: *m,
                    histograms: BUCKETS[m].iter().map(Histogram::new).collect(),
                    counters: m
                        .module()
                        .counters()
                        .iter()
                        .map(|_| Counter::default())
                        .collect(),
                }),
                _ => None,
            })
            .collect()
    }

    pub fn observe(series: &[Self], r: &ModuleReport) {
        let Some(s) = series.iter().find(|s| s.kind == r.kind) else {
            return;
        };
        r.module().observe(r.report.as_ref(), &mut |i, v| {
            if let Some(h) = s.histograms.get(i) {
                h.observe(v);
            }
        });
        r.module().count(r.report.as_ref(), &mut |i, n| {
            if let Some(c) = s.counters.get(i) {
                c.add(n);
            }
        });
    }
}

/// How one target's module series write a family's lines.
pub type WriteOne<'a> = &'a dyn Fn(&[ModuleSeries], &mut Lines<'_>);

/// Module `m`'s histogram and counter families (its histograms, then its counters): `each`
/// writes one family's lines of every target, given how one target's series write theirs.
pub fn write_families(
    out: &mut String,
    m: ModuleId,
    each: &dyn Fn(&mut String, WriteOne<'_>) -> bool,
) {
    for (i, def) in m.module().histograms().iter().enumerate() {
        family(out, def.name, def.help, Kind::Histogram, |o| {
            each(o, &|series, l| {
                if let Some(h) = series.iter().find(|s| s.kind == m) {
                    h.histograms[i].write(def.name, l);
                }
            })
        });
    }
    for (i, def) in m.module().counters().iter().enumerate() {
        family(out, def.name, def.help, Kind::Counter, |o| {
            each(o, &|series, l| {
                if let Some(s) = series.iter().find(|s| s.kind == m) {
                    l.sample(def.name, &[], None, s.counters[i].get() as f64);
                }
            })
        });
    }
}
