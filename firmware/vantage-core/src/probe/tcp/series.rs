//! A TCP round's report and the gauges it shows.

use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::series::{Gauge, gauge, labelled, per_probe, per_probe_labelled};

/// One TCP round.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TcpReport {
    /// The address connected to (a hostname resolves each round).
    pub address: Option<IpAddr>,
    pub port: u16,
    /// Connection attempts made, and those that connected in time.
    pub sent: u32,
    pub connected: u32,
    /// Time from SYN to the established connection, of each attempt that connected.
    pub connect_times: Vec<Duration>,
    /// TLS handshake time of the round's first connection (with `tls`).
    pub tls_handshake: Option<Duration>,
    /// The TLS version agreed (`TLS 1.3`).
    pub tls_version: Option<String>,
    /// The earliest `notAfter` of the chain the server sent, in seconds since the epoch.
    pub cert_not_after: Option<i64>,
    /// Whether the first reply line matched `expect` (with `expect`).
    pub expect_matched: Option<bool>,
    /// The first reply line (with `expect`), cut to [`run::MAX_REPLY`] bytes.
    pub reply: Option<String>,
}

pub(crate) static CONNECT_STATS: Gauge = labelled(
    "vantage_tcp_round_connect_seconds",
    "stat",
    "Connect times of the last round: min, avg, max (absent for a round without connections).",
);
pub(crate) static ATTEMPTS_SENT: Gauge = gauge(
    "vantage_tcp_round_attempts_sent",
    "Connection attempts of the last round.",
);
pub(crate) static ATTEMPTS_OK: Gauge = gauge(
    "vantage_tcp_round_attempts_connected",
    "Connection attempts of the last round that connected in time.",
);
pub(crate) static LOSS: Gauge = gauge(
    "vantage_tcp_loss_ratio",
    "Share of the last round's connection attempts that did not connect in time.",
);
pub(crate) static TLS_HANDSHAKE: Gauge = gauge(
    "vantage_tls_handshake_seconds",
    "TLS handshake time of the last round (absent without a handshake).",
);
pub static CERT_NOT_AFTER: Gauge = per_probe(
    "vantage_tls_cert_not_after_timestamp_seconds",
    "Earliest expiry of the certificate chain the server sent, in seconds since the epoch.",
);
/// Shared with every kind that does a TLS handshake, like [`CERT_NOT_AFTER`].
pub static TLS_VERSION: Gauge = per_probe_labelled(
    "vantage_tls_version_info",
    "version",
    "1 for the TLS version the last round's handshake agreed (\"TLS 1.2\", \"TLS 1.3\"; absent without one).",
);
pub(crate) static EXPECT_MATCHED: Gauge = gauge(
    "vantage_tcp_round_expect_matched",
    "1 if the first reply line of the last round matched expect (absent without expect).",
);

pub(super) static GAUGES: [&Gauge; 8] = [
    &CONNECT_STATS,
    &ATTEMPTS_SENT,
    &ATTEMPTS_OK,
    &LOSS,
    &TLS_HANDSHAKE,
    &CERT_NOT_AFTER,
    &TLS_VERSION,
    &EXPECT_MATCHED,
];
