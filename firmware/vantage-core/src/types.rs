//! Small value types shared across the core.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The kind of a probe. Each kind has one implementation in `probe/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ProbeKind {
    Ping,
    Dns,
    Trace,
}

impl ProbeKind {
    pub const ALL: [ProbeKind; 3] = [ProbeKind::Ping, ProbeKind::Dns, ProbeKind::Trace];

    pub fn as_str(self) -> &'static str {
        match self {
            ProbeKind::Ping => "ping",
            ProbeKind::Dns => "dns",
            ProbeKind::Trace => "trace",
        }
    }
}

impl fmt::Display for ProbeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ProbeKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ProbeKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown probe {s:?} (expected one of: ping, dns, trace)"))
    }
}

/// Which address family to use when a hostname resolves to both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IpProtocol {
    /// The first address the system resolver returns (RFC 6724 order).
    #[default]
    Auto,
    Ipv4,
    Ipv6,
}

impl IpProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            IpProtocol::Auto => "auto",
            IpProtocol::Ipv4 => "ipv4",
            IpProtocol::Ipv6 => "ipv6",
        }
    }
}
