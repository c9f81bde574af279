//! The DNS kind's report of one round.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::options::{DnsTransport, parse_rcode, rcode_name};

/// One DNS query.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct DnsReport {
    /// The server that was asked last (for `host = "system"`, the one that answered).
    pub server: Option<SocketAddr>,
    /// The transport that carried the answer (`tcp` after a truncated UDP answer).
    pub transport: Option<DnsTransport>,
    /// The UDP answer came back truncated and the query was repeated over TCP.
    pub truncated_retry: bool,
    /// Servers asked; above 1 only for `host = "system"` when a server failed.
    pub attempts: u32,
    /// Response code of the answer, extended rcode included.
    #[serde(serialize_with = "rcode_ser", deserialize_with = "rcode_de")]
    pub rcode: Option<u16>,
    pub flags: DnsFlags,
    pub answers: Vec<DnsRecord>,
    pub authority_records: u32,
    pub additional_records: u32,
    /// Size of the answer on the wire.
    pub response_bytes: usize,
    /// Time from the start of the round to the answer: the phases together.
    pub lookup: Option<Duration>,
    pub phases: DnsPhases,
    /// Datagrams that were not our answer (wrong ID or question, malformed), ignored.
    pub stray_datagrams: u32,
    /// The rcode is one of the expected ones.
    pub rcode_valid: bool,
    /// Answer checks that failed (contains, match, minimum count), as sentences.
    pub validation_failures: Vec<String>,
}

fn rcode_ser<S: serde::Serializer>(v: &Option<u16>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(n) => s.serialize_str(&rcode_name(*n)),
        None => s.serialize_none(),
    }
}

/// An rcode as [`rcode_ser`] writes it: its mnemonic, or `RCODE<n>` for one without.
fn rcode_de<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    let Some(name) = Option::<String>::deserialize(d)? else {
        return Ok(None);
    };
    let number = name.strip_prefix("RCODE").unwrap_or(&name);
    parse_rcode(number)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

impl DnsReport {
    pub fn rcode_name(&self) -> Option<String> {
        self.rcode.map(rcode_name)
    }
}

/// Header flags of a DNS answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DnsFlags {
    pub authoritative: bool,
    pub truncated: bool,
    pub recursion_available: bool,
    pub authentic_data: bool,
}

/// One answer record, in presentation form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsRecord {
    pub name: String,
    pub ttl: u32,
    pub class: String,
    #[serde(rename = "type")]
    pub record_type: String,
    pub data: String,
}

impl fmt::Display for DnsRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} {} {}",
            self.name, self.ttl, self.class, self.record_type, self.data
        )
    }
}

/// Where the time of a DNS round went, as blackbox_exporter splits it. A phase that did not
/// happen (no name to resolve, no TCP) is `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DnsPhases {
    /// Resolving the server's own hostname.
    pub resolve: Option<Duration>,
    /// TCP handshake (tcp, tls, and the TCP retry of a truncated UDP answer).
    pub connect: Option<Duration>,
    /// TLS handshake.
    pub tls: Option<Duration>,
    /// From sending the query to the answer (both exchanges for a truncated UDP answer).
    pub request: Option<Duration>,
}

impl DnsPhases {
    /// The phase names, in order, as used for metric labels.
    pub const NAMES: [&'static str; 4] = ["resolve", "connect", "tls", "request"];

    pub fn get(&self, name: &str) -> Option<Duration> {
        match name {
            "resolve" => self.resolve,
            "connect" => self.connect,
            "tls" => self.tls,
            "request" => self.request,
            _ => None,
        }
    }
}
