//! Small value types shared across the core.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A probe module kind, by its name (see `probe::MODULES`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModuleId(pub(crate) &'static str);

/// The kind of a probe: a module registered in `probe::MODULES`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ProbeKind {
    Module(ModuleId),
}

impl ProbeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeKind::Module(m) => m.0,
        }
    }
}

impl fmt::Display for ProbeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ProbeKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ProbeKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
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
    pub const ALL: [IpProtocol; 3] = [IpProtocol::Auto, IpProtocol::Ipv4, IpProtocol::Ipv6];

    pub fn as_str(self) -> &'static str {
        match self {
            IpProtocol::Auto => "auto",
            IpProtocol::Ipv4 => "ipv4",
            IpProtocol::Ipv6 => "ipv6",
        }
    }
}

/// What a traceroute sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TraceProtocol {
    /// UDP datagrams to a fixed port (traceroute's default).
    #[default]
    Udp,
    /// ICMP echo requests (mtr's default).
    Icmp,
    /// TCP SYNs to a port; passes firewalls that drop the other two.
    Tcp,
}

impl TraceProtocol {
    pub const ALL: [TraceProtocol; 3] =
        [TraceProtocol::Udp, TraceProtocol::Icmp, TraceProtocol::Tcp];

    pub fn as_str(self) -> &'static str {
        match self {
            TraceProtocol::Udp => "udp",
            TraceProtocol::Icmp => "icmp",
            TraceProtocol::Tcp => "tcp",
        }
    }
}

impl fmt::Display for TraceProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TraceProtocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "udp" => Ok(TraceProtocol::Udp),
            "icmp" => Ok(TraceProtocol::Icmp),
            "tcp" => Ok(TraceProtocol::Tcp),
            other => Err(format!("{other:?} is not one of udp, icmp, tcp")),
        }
    }
}

/// How a traceroute looks for the branches of load-balanced paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TraceDiscovery {
    /// MDA-Lite: at each hop, new flow identifiers until the stopping rule for 95 %
    /// confidence says no further next hop is there, within the trace's probe budget.
    #[default]
    Mda,
    /// Only the configured flows.
    Flows,
}

impl TraceDiscovery {
    pub const ALL: [TraceDiscovery; 2] = [TraceDiscovery::Mda, TraceDiscovery::Flows];

    pub fn as_str(self) -> &'static str {
        match self {
            TraceDiscovery::Mda => "mda",
            TraceDiscovery::Flows => "flows",
        }
    }
}

impl FromStr for TraceDiscovery {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "mda" => Ok(TraceDiscovery::Mda),
            "flows" => Ok(TraceDiscovery::Flows),
            other => Err(format!("{other:?} is not one of mda, flows")),
        }
    }
}

/// Which sockets a traceroute may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TraceSockets {
    /// Unprivileged sockets where they identify every reply exactly (ICMP datagram sockets),
    /// raw sockets where those do better and CAP_NET_RAW allows them (UDP, TCP), else the
    /// unprivileged kind.
    #[default]
    Auto,
    /// Only sockets any user may open: UDP, TCP and ICMP datagram sockets reading errors
    /// from the socket error queue.
    Unprivileged,
    /// Raw sockets only (needs CAP_NET_RAW).
    Raw,
}

impl TraceSockets {
    pub const ALL: [TraceSockets; 3] = [
        TraceSockets::Auto,
        TraceSockets::Unprivileged,
        TraceSockets::Raw,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TraceSockets::Auto => "auto",
            TraceSockets::Unprivileged => "unprivileged",
            TraceSockets::Raw => "raw",
        }
    }
}

impl FromStr for TraceSockets {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(TraceSockets::Auto),
            "unprivileged" => Ok(TraceSockets::Unprivileged),
            "raw" => Ok(TraceSockets::Raw),
            other => Err(format!("{other:?} is not one of auto, unprivileged, raw")),
        }
    }
}
