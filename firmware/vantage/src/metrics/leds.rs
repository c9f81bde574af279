//! The LEDs' state as metrics, read from the renderer at scrape time, so a dashboard shows
//! what a person by the device sees.

use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Gauge, GaugeVec, IntCounter, Opts};
use vantage_leds::{Condition, Leds, Pattern};

use super::names;

#[derive(Debug)]
pub struct LedCollector {
    leds: Arc<Leds>,
    descs: Vec<Desc>,
}

impl LedCollector {
    pub fn new(leds: Arc<Leds>) -> Self {
        let descs = Self::build(&leds)
            .iter()
            .flat_map(|c| c.desc().into_iter().cloned().collect::<Vec<_>>())
            .collect();
        Self { leds, descs }
    }

    fn build(leds: &Leds) -> Vec<Box<dyn Collector>> {
        let snap = leds.snapshot();
        let pattern = GaugeVec::new(
            Opts::new(
                names::LED_PATTERN,
                "1 for the pattern each status LED shows now, 0 for the others.",
            ),
            &["led", "role", "pattern"],
        )
        .expect("valid metric");
        for l in &snap.leds {
            for p in Pattern::ALL {
                pattern
                    .with_label_values(&[&l.label, l.role.as_str(), p.as_str()])
                    .set(if p == l.pattern { 1.0 } else { 0.0 });
            }
        }
        let condition = GaugeVec::new(
            Opts::new(
                names::DEVICE_CONDITION,
                "1 for each condition the status LEDs report now (see the README's table).",
            ),
            &["condition"],
        )
        .expect("valid metric");
        for c in Condition::ALL {
            let name = serde_json::to_value(c)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            condition
                .with_label_values(&[&name])
                .set(if snap.conditions.contains(&c) {
                    1.0
                } else {
                    0.0
                });
        }
        let identify = Gauge::new(
            names::IDENTIFY_REMAINING,
            "Seconds the LEDs keep blinking to identify the device; 0 when not identifying.",
        )
        .expect("valid metric");
        identify.set(snap.identify_remaining.map_or(0.0, |d| d.as_secs_f64()));
        // Built afresh for each scrape from the renderer's running count.
        let errors = IntCounter::new(
            names::LED_WRITE_ERRORS,
            "Failed writes to the status LEDs since start.",
        )
        .expect("valid metric");
        errors.inc_by(snap.write_errors);
        vec![
            Box::new(pattern),
            Box::new(condition),
            Box::new(identify),
            Box::new(errors),
        ]
    }
}

impl Collector for LedCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        Self::build(&self.leds)
            .iter()
            .flat_map(|c| c.collect())
            .collect()
    }
}
