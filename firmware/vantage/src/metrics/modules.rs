//! The histograms, counters and info families probe modules declare
//! ([`vantage_core::ProbeModule::histograms`], [`vantage_core::ProbeModule::counters`],
//! [`vantage_core::ProbeModule::info_families`]), kept per target from every round; their
//! gauges go through `rounds` like every kind's.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use vantage_core::{LockExt, ModuleId, ModuleReport, ProbeKind};

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

/// One module kind's histograms, counters and info series of one target.
#[derive(Debug)]
pub struct ModuleSeries {
    kind: ModuleId,
    histograms: Vec<Histogram>,
    counters: Vec<Counter>,
    /// Per info family, the label values of each series the last round showed.
    info: Vec<Mutex<Vec<Vec<String>>>>,
}

impl ModuleSeries {
    /// The series of every module kind among `kinds`.
    pub fn for_kinds(kinds: &[ProbeKind]) -> Vec<Self> {
        let mut out: Vec<Self> = kinds
            .iter()
            .filter_map(|k| match k {
                ProbeKind::Module(m) => Some(Self {
                    histograms: BUCKETS[m].iter().map(Histogram::new).collect(),
                    counters: m
                        .module()
                        .counters()
                        .iter()
                        .map(|_| Counter::default())
                        .collect(),
                    ..Self::info_only(*m)
                }),
                _ => None,
            })
            .collect();
        // Kept per target: without this a target's one kind sits in room for four.
        out.shrink_to_fit();
        out
    }

    /// What a `/probe` answer keeps of `kind`'s series: its info families only (counters and
    /// histograms of one round would restart at every request).
    pub fn for_probe(kind: ProbeKind) -> Vec<Self> {
        match kind {
            ProbeKind::Module(m) => vec![Self::info_only(m)],
            _ => Vec::new(),
        }
    }

    fn info_only(kind: ModuleId) -> Self {
        let families = kind.module().info_families();
        Self {
            kind,
            histograms: Vec::new(),
            counters: Vec::new(),
            info: families.iter().map(|_| Mutex::default()).collect(),
        }
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
        if !s.info.is_empty() {
            let mut next = vec![Vec::new(); s.info.len()];
            r.module().info(r.report.as_ref(), &mut |i, values| {
                if let Some(family) = next.get_mut(i) {
                    family.push(values);
                }
            });
            for (held, shown) in s.info.iter().zip(next) {
                *held.lock_or_recover() = shown;
            }
        }
    }
}

/// How one target's module series write a family's lines.
pub type WriteOne<'a> = &'a dyn Fn(&[ModuleSeries], &mut Lines<'_>);

/// Module `m`'s own families (its info families, its histograms, then its counters): `each`
/// writes one family's lines of every target, given how one target's series write theirs.
pub fn write_families(
    out: &mut String,
    m: ModuleId,
    each: &dyn Fn(&mut String, WriteOne<'_>) -> bool,
) {
    fn of(series: &[ModuleSeries], m: ModuleId) -> Option<&ModuleSeries> {
        series.iter().find(|s| s.kind == m)
    }
    for (i, def) in m.module().info_families().iter().enumerate() {
        family(out, def.name, def.help, Kind::Gauge, |o| {
            each(o, &|series, l| {
                let Some(held) = of(series, m).and_then(|s| s.info.get(i)) else {
                    return;
                };
                for values in held.lock_or_recover().iter() {
                    let own: Vec<(&str, &str)> = def
                        .labels
                        .iter()
                        .zip(values)
                        .map(|(k, v)| (*k, v.as_str()))
                        .collect();
                    l.sample(def.name, &own, None, 1.0);
                }
            })
        });
    }
    for (i, def) in m.module().histograms().iter().enumerate() {
        family(out, def.name, def.help, Kind::Histogram, |o| {
            each(o, &|series, l| {
                if let Some(h) = of(series, m).and_then(|s| s.histograms.get(i)) {
                    h.write(def.name, l);
                }
            })
        });
    }
    for (i, def) in m.module().counters().iter().enumerate() {
        family(out, def.name, def.help, Kind::Counter, |o| {
            each(o, &|series, l| {
                if let Some(c) = of(series, m).and_then(|s| s.counters.get(i)) {
                    l.sample(def.name, &[], None, c.get() as f64);
                }
            })
        });
    }
}

#[cfg(test)]
mod tests;
