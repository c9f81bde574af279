//! `vantage_rounds_flagged_ratio{reason}`: the share of the rounds that finished in the last
//! minute whose figures may include the device's own delays (late, CPU or memory stall), all
//! targets together. The per-target counters say which rounds; this says at a glance whether
//! the device is overloaded now, so a network problem is not mistaken for a busy probe.
//!
//! Kept as 60 one-second slots (rounds and flagged rounds per reason): O(1) per round and per
//! scrape, whatever the number of targets.

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};
use vantage_core::LockExt;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{GaugeVec, Opts};
use vantage_core::RoundQuality;

const NAME: &str = "vantage_rounds_flagged_ratio";
/// The window, in one-second slots.
const SLOTS: usize = 60;
const REASONS: usize = RoundQuality::REASONS.len();

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    /// The second this slot counts; a slot of an older second is stale.
    second: u64,
    rounds: u32,
    flagged: [u32; REASONS],
}

/// Clones share their slots: one is registered, one is fed rounds.
#[derive(Debug, Clone)]
pub struct FlaggedShare {
    slots: Arc<Mutex<[Slot; SLOTS]>>,
    gauge: GaugeVec,
}

impl FlaggedShare {
    pub fn new() -> Self {
        let gauge = GaugeVec::new(
            Opts::new(
                NAME,
                "Share of the rounds finished in the last minute, all targets together, that \
                 were flagged for the reason (see vantage_rounds_flagged_total); 0 without rounds.",
            ),
            &["reason"],
        )
        .expect("valid metric");
        Self {
            slots: Arc::new(Mutex::new([Slot::default(); SLOTS])),
            gauge,
        }
    }

    /// A round finished now.
    pub fn add(&self, quality: RoundQuality) {
        self.add_at(now_second(), quality);
    }

    fn add_at(&self, second: u64, quality: RoundQuality) {
        let mut slots = self.slots.lock_or_recover();
        let slot = &mut slots[(second % SLOTS as u64) as usize];
        if slot.second != second {
            *slot = Slot {
                second,
                ..Slot::default()
            };
        }
        slot.rounds = slot.rounds.saturating_add(1);
        for (i, (flag, _)) in RoundQuality::REASONS.iter().enumerate() {
            if quality.contains(*flag) {
                slot.flagged[i] = slot.flagged[i].saturating_add(1);
            }
        }
    }

    /// Per reason (in [`RoundQuality::REASONS`]' order), the share of the rounds of the
    /// minute up to `second`.
    fn shares_at(&self, second: u64) -> [f64; REASONS] {
        let slots = self.slots.lock_or_recover();
        let (mut rounds, mut flagged) = (0u64, [0u64; REASONS]);
        for s in slots
            .iter()
            .filter(|s| s.second <= second && second - s.second < SLOTS as u64)
        {
            rounds += u64::from(s.rounds);
            for (f, n) in flagged.iter_mut().zip(s.flagged) {
                *f += u64::from(n);
            }
        }
        flagged.map(|n| {
            if rounds == 0 {
                0.0
            } else {
                n as f64 / rounds as f64
            }
        })
    }
}

fn now_second() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Collector for FlaggedShare {
    fn desc(&self) -> Vec<&Desc> {
        self.gauge.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let shares = self.shares_at(now_second());
        for ((_, reason), share) in RoundQuality::REASONS.iter().zip(shares) {
            self.gauge.with_label_values(&[reason]).set(share);
        }
        self.gauge.collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_share_covers_the_last_minute_only() {
        let s = FlaggedShare::new();
        let t0 = 1_000_000;
        for i in 0..30 {
            s.add_at(t0 + i, RoundQuality::empty());
        }
        s.add_at(t0 + 10, RoundQuality::CPU);
        s.add_at(t0 + 20, RoundQuality::CPU | RoundQuality::LATE);
        // 32 rounds: 2 CPU, 1 late, 0 memory.
        let [late, cpu, memory] = s.shares_at(t0 + 30);
        assert_eq!((late, cpu, memory), (1.0 / 32.0, 2.0 / 32.0, 0.0));
        // 55 s later the first 15 s (10 with nothing flagged, 1 CPU at t0+10) left the window.
        let [late, cpu, _] = s.shares_at(t0 + 74);
        assert_eq!((late, cpu), (1.0 / 16.0, 1.0 / 16.0));
        // A slot reused a minute later starts again.
        s.add_at(t0 + 20 + 60, RoundQuality::empty());
        let [late, cpu, _] = s.shares_at(t0 + 80);
        assert_eq!((late, cpu), (0.0, 0.0), "only the new round of that slot");
        assert_eq!(s.shares_at(t0 + 500), [0.0; REASONS]);
    }

    #[test]
    fn every_reason_is_exported_from_zero() {
        let s = FlaggedShare::new();
        let f = s.collect();
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].name(), NAME);
        let mut reasons: Vec<&str> = f[0]
            .get_metric()
            .iter()
            .map(|m| m.get_label()[0].value())
            .collect();
        reasons.sort_unstable();
        assert_eq!(reasons, ["cpu", "late", "memory"]);
        assert!(
            f[0].get_metric()
                .iter()
                .all(|m| m.get_gauge().get_value() == 0.0)
        );
        s.add(RoundQuality::MEMORY);
        let f = s.collect();
        let memory = f[0]
            .get_metric()
            .iter()
            .find(|m| m.get_label()[0].value() == "memory")
            .unwrap();
        assert_eq!(memory.get_gauge().get_value(), 1.0);
    }
}
