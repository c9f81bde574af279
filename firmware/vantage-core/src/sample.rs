//! The one sample type every probe emits.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::types::ProbeKind;

/// The outcome of one probe round against one target.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    pub target: Arc<str>,
    pub probe: ProbeKind,
    /// Wall-clock time the round started.
    pub timestamp: SystemTime,
    /// How long the round took.
    pub duration: Duration,
    pub success: bool,
    /// Why the round failed, when it failed for a reason other than lost packets.
    pub error: Option<ProbeError>,
    pub measurement: Measurement,
}

/// Probe-specific results.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
#[non_exhaustive]
pub enum Measurement {
    /// The probe could not run at all (e.g. the name did not resolve).
    None,
    Ping(PingReport),
}

/// One ping round.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct PingReport {
    /// The address pinged (a hostname resolves each round).
    pub address: Option<IpAddr>,
    pub sent: u32,
    pub received: u32,
    /// Replies to a request that was already answered.
    pub duplicates: u32,
    /// ICMP errors (unreachable, time exceeded) received for our requests.
    pub icmp_errors: u32,
    /// Round-trip time of each reply, in the order the replies arrived.
    pub rtts: Vec<Duration>,
}

impl PingReport {
    pub fn loss_ratio(&self) -> f64 {
        if self.sent == 0 {
            return 1.0;
        }
        1.0 - f64::from(self.received.min(self.sent)) / f64::from(self.sent)
    }

    pub fn min(&self) -> Option<Duration> {
        self.rtts.iter().min().copied()
    }

    pub fn max(&self) -> Option<Duration> {
        self.rtts.iter().max().copied()
    }

    pub fn mean(&self) -> Option<Duration> {
        if self.rtts.is_empty() {
            return None;
        }
        Some(self.rtts.iter().sum::<Duration>() / self.rtts.len() as u32)
    }

    /// Population standard deviation of the RTTs, in seconds.
    pub fn stddev_seconds(&self) -> Option<f64> {
        let mean = self.mean()?.as_secs_f64();
        let n = self.rtts.len() as f64;
        let var = self
            .rtts
            .iter()
            .map(|r| (r.as_secs_f64() - mean).powi(2))
            .sum::<f64>()
            / n;
        Some(var.sqrt())
    }
}

/// Why a probe could not do its job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "message", rename_all = "lowercase")]
#[non_exhaustive]
pub enum ProbeError {
    /// The target's hostname did not resolve (or not to the wanted family).
    Resolve(String),
    /// The system refused to open the socket the probe needs.
    Permission(String),
    /// A socket error while sending or receiving.
    Network(String),
    /// No answer within the timeout.
    Timeout,
}

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeError::Resolve(m) => write!(f, "cannot resolve: {m}"),
            ProbeError::Permission(m) => write!(f, "not permitted: {m}"),
            ProbeError::Network(m) => write!(f, "network error: {m}"),
            ProbeError::Timeout => f.write_str("timeout"),
        }
    }
}

impl std::error::Error for ProbeError {}

impl Sample {
    /// The sample flattened to named numbers, for storage and charts. Names are stable.
    pub fn values(&self) -> Vec<(&'static str, f64)> {
        let mut v = vec![
            ("success", if self.success { 1.0 } else { 0.0 }),
            ("duration_seconds", self.duration.as_secs_f64()),
        ];
        match &self.measurement {
            Measurement::None => {}
            Measurement::Ping(p) => {
                v.push(("sent", f64::from(p.sent)));
                v.push(("received", f64::from(p.received)));
                v.push(("duplicates", f64::from(p.duplicates)));
                v.push(("loss_ratio", p.loss_ratio()));
                if let (Some(min), Some(mean), Some(max)) = (p.min(), p.mean(), p.max()) {
                    v.push(("rtt_min_seconds", min.as_secs_f64()));
                    v.push(("rtt_avg_seconds", mean.as_secs_f64()));
                    v.push(("rtt_max_seconds", max.as_secs_f64()));
                }
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_statistics() {
        let p = PingReport {
            sent: 4,
            received: 3,
            rtts: vec![
                Duration::from_millis(10),
                Duration::from_millis(20),
                Duration::from_millis(30),
            ],
            ..Default::default()
        };
        assert_eq!(p.loss_ratio(), 0.25);
        assert_eq!(p.mean(), Some(Duration::from_millis(20)));
        let sd = p.stddev_seconds().unwrap();
        assert!((sd - 0.008165).abs() < 1e-5, "{sd}");
        let empty = PingReport::default();
        assert_eq!(empty.loss_ratio(), 1.0);
        assert_eq!(empty.mean(), None);
    }
}
