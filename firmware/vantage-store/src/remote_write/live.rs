//! The daemon's own series (store, shipping, scheduler, uplink, build), pushed as they stand.
//!
//! A push-only fleet has no scrape to read a device's health from. So every `send = "all"`
//! endpoint also gets, every [`LIVE_INTERVAL`](super::LIVE_INTERVAL), a snapshot of the
//! daemon-wide series with the current time. They are not stored: an outage leaves a hole in
//! them (the probe rounds, which are stored, fill theirs). One attempt each, no retry: the next
//! snapshot supersedes a lost one.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use super::endpoint::{Endpoint, Outcome, Shared, post};
use super::proto;
use super::request::encode_request;
use crate::codec::unix_ms;
use crate::series::Labels;

/// One series as it stands: its labels (`__name__` included) and value.
pub type LiveSample = (Vec<(String, String)>, f64);

/// Where the daemon's own series come from (the daemon's metrics registry).
pub trait LiveSeries: Send + Sync + std::fmt::Debug {
    fn snapshot(&self) -> Vec<LiveSample>;
}

/// A request of the snapshot at `now_ms`: the endpoint's labels below each series' own.
pub fn live_request(
    snapshot: &[LiveSample],
    external: &Labels,
    now_ms: i64,
) -> proto::WriteRequest {
    // Keyed by the full label set: two equal sets would be a duplicate Prometheus refuses.
    let mut series: BTreeMap<Vec<(&str, &str)>, f64> = BTreeMap::new();
    for (labels, v) in snapshot.iter().filter(|(_, v)| v.is_finite()) {
        let mut m: BTreeMap<&str, &str> = external
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        for (k, v) in labels {
            m.insert(k, v);
        }
        series.insert(m.into_iter().collect(), *v);
    }
    let timeseries = series
        .into_iter()
        .map(|(labels, v)| proto::TimeSeries {
            labels: labels
                .into_iter()
                .map(|(k, v)| proto::Label {
                    name: k.to_string(),
                    value: v.to_string(),
                })
                .collect(),
            samples: vec![proto::Sample {
                value: v,
                timestamp: now_ms,
            }],
        })
        .collect();
    proto::WriteRequest { timeseries }
}

pub(super) struct LiveTask {
    pub ep: Endpoint,
    pub client: reqwest::Client,
    pub live: Arc<dyn LiveSeries>,
    pub interval: Duration,
    pub shared: Arc<Shared>,
}

impl LiveTask {
    pub async fn run(self) {
        let mut failing = false;
        while !self.shared.stop.load(Ordering::SeqCst) {
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = self.shared.notify.notified() => continue,
            }
            let req = live_request(
                &self.live.snapshot(),
                &self.ep.labels,
                unix_ms(SystemTime::now()),
            );
            let ok = matches!(
                post(&self.client, &self.ep, encode_request(&req)).await,
                Outcome::Ok
            );
            // The stored rounds' shipping reports the endpoint's state; this only notes a change.
            if ok == failing {
                failing = !ok;
                tracing::debug!(endpoint = %self.ep.name, ok, "remote_write: the daemon's own series");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_becomes_one_sample_per_series_below_its_own_labels() {
        let snap: Vec<LiveSample> = vec![
            (vec![("__name__".into(), "x_healthy".into())], 1.0),
            (
                vec![
                    ("__name__".into(), "x_build_info".into()),
                    ("version".into(), "1".into()),
                    ("instance".into(), "own".into()),
                ],
                1.0,
            ),
            (vec![("__name__".into(), "nan".into())], f64::NAN),
            (vec![("__name__".into(), "x_healthy".into())], 1.0),
        ];
        let ext = Labels::from([
            ("job".into(), "vantage".into()),
            ("instance".into(), "dev1".into()),
        ]);
        let req = live_request(&snap, &ext, 42);
        assert_eq!(req.timeseries.len(), 2, "{req:?}");
        let build = &req.timeseries[0];
        let pairs: Vec<(&str, &str)> = build
            .labels
            .iter()
            .map(|l| (l.name.as_str(), l.value.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("__name__", "x_build_info"),
                ("instance", "own"),
                ("job", "vantage"),
                ("version", "1")
            ]
        );
        assert_eq!(build.samples[0].timestamp, 42);
    }
}
