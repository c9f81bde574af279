//! Recent results per target and probe, for the status page and its sparklines.
//!
//! [`MemoryHistory`] keeps the last hour in one-minute buckets (60 buckets of 24 bytes per
//! probe, whatever the interval), so memory stays bounded at under 2 KiB per target. The page reads it
//! through [`HistorySource`], which the on-disk store can implement to serve longer ranges.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use vantage_core::{JobKey, Measurement, Observer, ProbeError, ProbeKind, Sample};

/// Width of one history bucket.
pub const BUCKET: Duration = Duration::from_secs(60);
/// Buckets kept: one hour.
pub const BUCKETS: usize = 60;

/// One bucket of the chart.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Point {
    /// Start of the bucket, Unix seconds.
    pub t: u64,
    pub rounds: u32,
    pub successes: u32,
    /// Mean RTT of the rounds that got replies, in milliseconds.
    pub rtt_ms: Option<f64>,
    /// Packets lost / sent, over the bucket.
    pub loss: Option<f64>,
}

/// The latest round and the time of the last successful one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Latest {
    pub timestamp: f64,
    pub success: bool,
    pub duration_ms: f64,
    pub error: Option<String>,
    pub address: Option<String>,
    /// Ping: mean RTT; DNS: the lookup time.
    pub rtt_ms: Option<f64>,
    pub loss: Option<f64>,
    pub last_success: Option<f64>,
    /// A short summary of the probe's own result, e.g. `NOERROR, 2 answers`.
    pub detail: Option<String>,
}

/// Where the page gets recent results from.
pub trait HistorySource: Send + Sync + 'static {
    fn latest(&self, target: &str, probe: ProbeKind) -> Option<Latest>;
    /// Buckets overlapping `[since, now]`, oldest first.
    fn series(&self, target: &str, probe: ProbeKind, since: SystemTime) -> Vec<Point>;
    /// Forget targets not in `keep` (after a config change).
    fn retain(&self, keep: &dyn Fn(&str) -> bool);
}

/// One bucket, kept small (24 bytes): 60 per target and probe.
#[derive(Debug, Default, Clone, Copy)]
struct Acc {
    /// Bucket start, Unix seconds (u32 lasts until 2106).
    t: u32,
    rounds: u32,
    successes: u32,
    rtt_n: u32,
    rtt_sum_ms: f32,
    sent: u16,
    lost: u16,
}

#[derive(Debug, Default)]
struct Track {
    buckets: Vec<Acc>,
    latest: Option<Latest>,
}

/// In-memory history, fed as an [`Observer`] of the runner.
#[derive(Debug, Default)]
pub struct MemoryHistory {
    tracks: RwLock<HashMap<(Arc<str>, ProbeKind), Track>>,
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl MemoryHistory {
    pub fn record(&self, s: &Sample) {
        let ts = unix(s.timestamp);
        let bucket_t =
            ((ts as u64) / BUCKET.as_secs() * BUCKET.as_secs()).min(u64::from(u32::MAX)) as u32;
        let mut detail = None;
        let (rtt, loss, sent, lost, address) = match &s.measurement {
            Measurement::Ping(p) => (
                p.mean().map(ms),
                Some(p.loss_ratio()),
                p.sent,
                p.sent.saturating_sub(p.received),
                p.address.map(|a| a.to_string()),
            ),
            Measurement::Dns(d) => {
                detail = d
                    .rcode_name()
                    .map(|r| format!("{r}, {} answers", d.answers.len()));
                (
                    d.lookup.map(ms),
                    None,
                    0,
                    0,
                    d.server.map(|a| a.to_string()),
                )
            }
            _ => (None, None, 0, 0, None),
        };
        let mut map = self.tracks.write().unwrap_or_else(|e| e.into_inner());
        let track = map.entry((s.target.clone(), s.probe)).or_default();
        let last_success = if s.success {
            Some(ts)
        } else {
            track.latest.as_ref().and_then(|l| l.last_success)
        };
        track.latest = Some(Latest {
            timestamp: ts,
            success: s.success,
            duration_ms: ms(s.duration),
            error: s.error.as_ref().map(ProbeError::to_string),
            address,
            rtt_ms: rtt,
            loss,
            last_success,
            detail,
        });
        if track.buckets.last().is_none_or(|b| b.t != bucket_t) {
            // A sample from an older bucket (clock step back) joins the newest bucket.
            if track.buckets.last().is_none_or(|b| b.t < bucket_t) {
                track.buckets.push(Acc {
                    t: bucket_t,
                    ..Acc::default()
                });
            }
            if track.buckets.len() > BUCKETS {
                let extra = track.buckets.len() - BUCKETS;
                track.buckets.drain(..extra);
            }
        }
        let b = track.buckets.last_mut().expect("pushed above");
        b.rounds = b.rounds.saturating_add(1);
        b.successes = b.successes.saturating_add(u32::from(s.success));
        if let Some(r) = rtt {
            b.rtt_sum_ms += r as f32;
            b.rtt_n = b.rtt_n.saturating_add(1);
        }
        // Loss is a ratio: when the packet counts would overflow, halve both.
        if u32::from(b.sent) + sent > u32::from(u16::MAX) {
            b.sent /= 2;
            b.lost /= 2;
        }
        b.sent = b.sent.saturating_add(sent.min(u32::from(u16::MAX)) as u16);
        b.lost = b.lost.saturating_add(lost.min(u32::from(u16::MAX)) as u16);
    }
}

impl HistorySource for MemoryHistory {
    fn latest(&self, target: &str, probe: ProbeKind) -> Option<Latest> {
        let map = self.tracks.read().unwrap_or_else(|e| e.into_inner());
        map.get(&(Arc::from(target), probe))?.latest.clone()
    }

    fn series(&self, target: &str, probe: ProbeKind, since: SystemTime) -> Vec<Point> {
        let since = unix(since) as u64;
        let map = self.tracks.read().unwrap_or_else(|e| e.into_inner());
        let Some(track) = map.get(&(Arc::from(target), probe)) else {
            return Vec::new();
        };
        track
            .buckets
            .iter()
            .filter(|b| u64::from(b.t) + BUCKET.as_secs() > since)
            .map(|b| Point {
                t: u64::from(b.t),
                rounds: b.rounds,
                successes: b.successes,
                rtt_ms: (b.rtt_n > 0).then(|| f64::from(b.rtt_sum_ms) / f64::from(b.rtt_n)),
                loss: (b.sent > 0).then(|| f64::from(b.lost) / f64::from(b.sent)),
            })
            .collect()
    }

    fn retain(&self, keep: &dyn Fn(&str) -> bool) {
        self.tracks
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(t, _), _| keep(t));
    }
}

impl Observer for MemoryHistory {
    fn sample(&self, sample: Sample) {
        self.record(&sample);
    }
    fn lag(&self, _: &JobKey, _: Duration) {}
    fn skipped(&self, _: &JobKey) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use vantage_core::PingReport;

    fn sample(t: u64, ok: bool, rtt_ms: u64) -> Sample {
        Sample {
            target: "gw".into(),
            probe: ProbeKind::Ping,
            timestamp: UNIX_EPOCH + Duration::from_secs(t),
            duration: Duration::from_millis(rtt_ms),
            success: ok,
            error: None,
            measurement: Measurement::Ping(PingReport {
                address: Some("192.0.2.1".parse().unwrap()),
                sent: 2,
                received: if ok { 2 } else { 0 },
                rtts: if ok {
                    vec![Duration::from_millis(rtt_ms); 2]
                } else {
                    vec![]
                },
                ..Default::default()
            }),
        }
    }

    #[test]
    fn buckets_are_small() {
        assert_eq!(std::mem::size_of::<Acc>(), 24);
    }

    #[test]
    fn buckets_aggregate_and_stay_bounded() {
        let h = MemoryHistory::default();
        let start = 1_700_000_000 / 60 * 60;
        for i in 0..(3 * 3600) {
            h.record(&sample(start + i, i % 4 != 0, 10 + i % 3));
        }
        let s = h.series("gw", ProbeKind::Ping, UNIX_EPOCH);
        assert_eq!(s.len(), BUCKETS);
        let last = s.last().unwrap();
        assert_eq!(last.rounds, 60);
        assert_eq!(last.successes, 45);
        assert!((last.loss.unwrap() - 0.25).abs() < 1e-9);
        assert!((last.rtt_ms.unwrap() - 11.0).abs() < 0.1, "{last:?}");
        let l = h.latest("gw", ProbeKind::Ping).unwrap();
        assert!(l.last_success.is_some());
        // A failure keeps the time of the last success.
        h.record(&sample(start + 4 * 3600, false, 0));
        let l2 = h.latest("gw", ProbeKind::Ping).unwrap();
        assert!(!l2.success);
        assert_eq!(l2.last_success, Some(l.timestamp));
        h.retain(&|t| t != "gw");
        assert!(h.latest("gw", ProbeKind::Ping).is_none());
    }
}
