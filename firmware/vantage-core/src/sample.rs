//! The one sample type every probe emits.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::probe::report::ModuleReport;
use crate::quality::RoundQuality;
use crate::types::{ProbeKind, TraceProtocol};

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
    /// Whether the round ran late or under CPU or memory pressure (set by the runner; empty
    /// for a round run on demand).
    #[serde(skip_serializing_if = "RoundQuality::is_empty")]
    pub quality: RoundQuality,
}

/// Probe-specific results.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
#[non_exhaustive]
pub enum Measurement {
    /// The probe could not run at all (e.g. the name did not resolve).
    None,
    /// A probe module's report (`probe::MODULES`).
    Module(ModuleReport),
}

/// One ping round.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
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
    /// Replies timed from the kernel's send timestamp (`SO_TIMESTAMPING`); the others from the
    /// time read just before sending. Not stored: a property of the device, not of the round.
    pub kernel_send_stamps: u32,
}

/// The figures of a report with `sent` and `received` counts and the RTT of each reply
/// (`rtts`): a ping round's, a trace hop's.
macro_rules! rtt_figures {
    ($report:ty) => {
        impl $report {
            pub fn loss_ratio(&self) -> f64 {
                loss_ratio(self.sent, self.received)
            }

            pub fn min(&self) -> Option<Duration> {
                self.rtts.iter().min().copied()
            }

            pub fn max(&self) -> Option<Duration> {
                self.rtts.iter().max().copied()
            }

            pub fn mean(&self) -> Option<Duration> {
                mean(&self.rtts)
            }

            /// Population standard deviation of the RTTs, in seconds.
            pub fn stddev_seconds(&self) -> Option<f64> {
                stddev_seconds(&self.rtts)
            }
        }
    };
}

rtt_figures!(PingReport);
rtt_figures!(HopReport);

fn loss_ratio(sent: u32, received: u32) -> f64 {
    if sent == 0 {
        return 1.0;
    }
    1.0 - f64::from(received.min(sent)) / f64::from(sent)
}

fn mean(rtts: &[Duration]) -> Option<Duration> {
    if rtts.is_empty() {
        return None;
    }
    Some(rtts.iter().sum::<Duration>() / rtts.len() as u32)
}

fn stddev_seconds(rtts: &[Duration]) -> Option<f64> {
    let mean = mean(rtts)?.as_secs_f64();
    let n = rtts.len() as f64;
    let var = rtts
        .iter()
        .map(|r| (r.as_secs_f64() - mean).powi(2))
        .sum::<f64>()
        / n;
    Some(var.sqrt())
}

/// One trace: every hop from the first TTL to the destination.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TraceReport {
    /// The address traced (a hostname resolves each trace).
    pub address: Option<IpAddr>,
    pub protocol: TraceProtocol,
    /// Raw sockets carried the trace (else unprivileged ones).
    pub raw_sockets: bool,
    /// Every probe of a flow shared one flow identifier (Paris traceroute), so a load balancer
    /// kept the flow on one path. False only for unprivileged TCP, where each probe is its own
    /// connection.
    pub paris: bool,
    /// Flows probed.
    pub flows: u32,
    /// The destination answered.
    pub reached: bool,
    /// Flows the destination answered: below `flows`, some branch does not get through (a
    /// partial blackhole) or lost every answer.
    pub flows_reached: u32,
    /// From the first TTL up to the destination, or up to the last hop that answered.
    pub hops: Vec<HopReport>,
    /// Identifies the paths this trace followed (32-bit FNV-1a of their hop addresses); equal
    /// paths give equal hashes across restarts and devices.
    pub path_hash: u32,
    /// This trace followed a path that none of the paths seen within the path window matches.
    pub path_changed: bool,
    /// Distinct paths seen within the path window (ECMP branches, or old and new path).
    pub paths_known: u32,
    /// A probe rate limit (the trace's or the device's) held some probe back.
    pub rate_limited: bool,
    /// The trace's time ran out while a probe waited for the rate limit: probes it meant to
    /// send were not sent.
    pub rate_cut_short: bool,
}

/// One TTL of a trace.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct HopReport {
    pub ttl: u8,
    pub sent: u32,
    /// Answers (time exceeded, unreachable or the destination's reply) within the timeout.
    pub received: u32,
    /// Who answered, most answers first.
    pub responders: Vec<HopResponder>,
    /// Round-trip times, in the order the probes were sent.
    pub rtts: Vec<Duration>,
    /// How the balancer before this hop spread Paris flows over its addresses, when several
    /// answered.
    pub balancing: Option<Balancing>,
}

/// How a load balancer spreads probes over its next hops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balancing {
    /// Each flow keeps one next hop (ECMP hashing): the addresses are branches.
    PerFlow,
    /// One flow met several next hops: the pick says nothing about the path.
    PerPacket,
}

impl Balancing {
    pub fn as_str(self) -> &'static str {
        match self {
            Balancing::PerFlow => "per_flow",
            Balancing::PerPacket => "per_packet",
        }
    }
}

/// An address that answered at a hop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HopResponder {
    pub address: IpAddr,
    pub replies: u32,
    /// Flows (0-based) whose probes it answered.
    pub flows: Vec<u32>,
    /// It answered "unreachable" (and forwarded nothing, unless it is the destination). Kept
    /// per address: at a hop where paths split, one branch may stop while the others go on.
    pub unreachable: Option<Unreachable>,
}

/// ICMP destination-unreachable codes, as traceroute marks them (!N, !H, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unreachable {
    Network,
    Host,
    Protocol,
    Port,
    /// Fragmentation needed (IPv4) or packet too big (IPv6), with the next hop's MTU.
    FragmentationNeeded {
        mtu: u32,
    },
    /// Administratively prohibited (a filter).
    Prohibited,
    /// Any other code.
    Other(u8),
}

impl Unreachable {
    /// traceroute's annotation: !N, !H, !P, (none for port), !F-MTU, !X, !<code>.
    pub fn mark(&self) -> String {
        match self {
            Unreachable::Network => "!N".into(),
            Unreachable::Host => "!H".into(),
            Unreachable::Protocol => "!P".into(),
            Unreachable::Port => String::new(),
            Unreachable::FragmentationNeeded { mtu } => format!("!F-{mtu}"),
            Unreachable::Prohibited => "!X".into(),
            Unreachable::Other(c) => format!("!<{c}>"),
        }
    }
}

impl HopReport {
    pub fn last(&self) -> Option<Duration> {
        self.rtts.last().copied()
    }

    /// The first "unreachable" an address of this hop answered, if any did.
    pub fn unreachable(&self) -> Option<Unreachable> {
        self.responders.iter().find_map(|r| r.unreachable)
    }
}

impl TraceReport {
    /// The last hop: the destination when reached.
    pub fn last_hop(&self) -> Option<&HopReport> {
        self.hops.last()
    }

    /// Hops up to the destination, or up to the last hop that answered.
    pub fn hop_count(&self) -> u32 {
        self.hops.last().map_or(0, |h| u32::from(h.ttl))
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
    /// The peer answered with something that breaks the protocol (malformed, mismatched).
    Protocol(String),
    /// An answer came, but not the expected one (rcode, answer checks).
    Validation(String),
}

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeError::Resolve(m) => write!(f, "cannot resolve: {m}"),
            ProbeError::Permission(m) => write!(f, "not permitted: {m}"),
            ProbeError::Network(m) => write!(f, "network error: {m}"),
            ProbeError::Timeout => f.write_str("timeout"),
            ProbeError::Protocol(m) => write!(f, "protocol error: {m}"),
            ProbeError::Validation(m) => write!(f, "unexpected answer: {m}"),
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
            // Trace's at full resolution, as before trace was a module.
            Measurement::Module(r) if let Some(t) = r.get::<TraceReport>() => {
                trace_values(t, &mut v)
            }
            // Ping's at full resolution, as before ping was a module.
            Measurement::Module(r) if r.get::<PingReport>().is_some() => {
                if let Some(p) = r.get::<PingReport>() {
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
            // A module's values are those of its stored round (µs resolution).
            Measurement::Module(r) => {
                let mut bytes = Vec::new();
                r.module().encode(r.report.as_ref(), &mut bytes);
                r.module().values(&bytes, &mut v);
            }
        }
        v
    }
}

/// A trace round's named values: the last hop's (the destination's, when reached) and the
/// path's.
fn trace_values(t: &TraceReport, v: &mut Vec<(&'static str, f64)>) {
    v.push(("hops", f64::from(t.hop_count())));
    v.push(("sent", t.hops.iter().map(|h| f64::from(h.sent)).sum()));
    v.push((
        "received",
        t.hops.iter().map(|h| f64::from(h.received)).sum(),
    ));
    if let Some(last) = t.last_hop() {
        // The last hop is the destination when reached: its loss and RTT are the
        // end-to-end figures.
        v.push(("loss_ratio", last.loss_ratio()));
        if let (Some(min), Some(mean), Some(max)) = (last.min(), last.mean(), last.max()) {
            v.push(("rtt_min_seconds", min.as_secs_f64()));
            v.push(("rtt_avg_seconds", mean.as_secs_f64()));
            v.push(("rtt_max_seconds", max.as_secs_f64()));
        }
    }
    v.push(("path_hash", f64::from(t.path_hash)));
    v.push(("path_changed", if t.path_changed { 1.0 } else { 0.0 }));
    v.push(("paths_known", f64::from(t.paths_known)));
}

#[cfg(test)]
impl HopReport {
    /// A hop at `ttl` that each of `addrs` answered once, on flow 0: the hop tests build, with
    /// the rest (probes sent, RTTs, balancing) set by the test.
    pub(crate) fn answered_by(ttl: u8, addrs: &[&str]) -> Self {
        Self {
            ttl,
            responders: addrs
                .iter()
                .map(|a| HopResponder {
                    address: a.parse().unwrap(),
                    replies: 1,
                    flows: vec![0],
                    unreachable: None,
                })
                .collect(),
            ..Self::default()
        }
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

    #[test]
    fn trace_values_describe_the_last_hop_and_the_path() {
        let hop = |ttl: u8, sent: u32, rtts: &[u64]| HopReport {
            ttl,
            sent,
            received: rtts.len() as u32,
            rtts: rtts.iter().map(|ms| Duration::from_millis(*ms)).collect(),
            ..Default::default()
        };
        let s = Sample {
            target: "t".into(),
            probe: ProbeKind::TRACE,
            timestamp: SystemTime::UNIX_EPOCH,
            duration: Duration::from_millis(40),
            success: true,
            error: None,
            measurement: Measurement::from(TraceReport {
                reached: true,
                hops: vec![hop(1, 3, &[1, 1, 1]), hop(2, 3, &[]), hop(3, 4, &[10, 30])],
                path_hash: 0xdead_beef,
                path_changed: true,
                paths_known: 2,
                ..Default::default()
            }),
            quality: Default::default(),
        };
        let v: std::collections::HashMap<_, _> = s.values().into_iter().collect();
        assert_eq!(v["hops"], 3.0);
        assert_eq!(v["sent"], 10.0);
        assert_eq!(v["received"], 5.0);
        assert_eq!(v["loss_ratio"], 0.5);
        assert_eq!(v["rtt_avg_seconds"], 0.02);
        assert_eq!(v["path_hash"], f64::from(0xdead_beef_u32));
        assert_eq!(v["path_changed"], 1.0);
        assert_eq!(v["paths_known"], 2.0);
    }

    #[test]
    fn unreachable_marks_match_traceroute() {
        assert_eq!(Unreachable::Network.mark(), "!N");
        assert_eq!(Unreachable::Prohibited.mark(), "!X");
        assert_eq!(
            Unreachable::FragmentationNeeded { mtu: 1400 }.mark(),
            "!F-1400"
        );
        assert_eq!(Unreachable::Port.mark(), "");
    }
}
