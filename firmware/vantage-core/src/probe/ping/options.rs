//! Options of the ping probe.

use std::net::IpAddr;
use std::time::Duration;

use serde::Serialize;
use toml::Spanned;

use super::super::options::{addressing, raw_section};
use crate::config::check::{Check, Src};
use crate::defaults::{self, self as D};
use crate::types::IpProtocol;

raw_section! {
    /// `[defaults.ping]` and `targets[].ping`, as written. Every field is optional: a target's
    /// value wins over `[defaults.ping]`, which wins over the built-in default.
    pub struct RawPing {
        /// Seconds between rounds for this probe; overrides the target's `interval`.
        pub interval: Option<Spanned<String>>,
        /// Echo requests per round (1..=100).
        pub packets: Option<Spanned<i64>>,
        /// Gap between the requests of one round (1ms..=10s).
        pub spacing: Option<Spanned<String>>,
        /// How long to wait for each reply.
        pub timeout: Option<Spanned<String>>,
        /// ICMP payload bytes (8..=9000); the first 8 carry a cookie that matches replies.
        pub size: Option<Spanned<i64>>,
        /// IP TTL / IPv6 hop limit (1..=255).
        pub ttl: Option<Spanned<i64>>,
        @addressing("ping"),
    }
}

/// Resolved ping options of one target.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct PingOptions {
    pub packets: u32,
    pub spacing: Duration,
    pub timeout: Duration,
    pub size: usize,
    pub ttl: Option<u8>,
    /// The full TOS / traffic-class byte.
    pub tos: Option<u8>,
    pub source: Option<IpAddr>,
    pub ip_protocol: IpProtocol,
}

impl Default for PingOptions {
    fn default() -> Self {
        Self {
            packets: defaults::PING_PACKETS,
            spacing: defaults::PING_SPACING,
            timeout: defaults::PING_TIMEOUT,
            size: defaults::PING_PAYLOAD_SIZE,
            ttl: None,
            tos: None,
            source: None,
            ip_protocol: IpProtocol::Auto,
        }
    }
}

impl PingOptions {
    /// Time from the first request to the end of the wait for the last reply.
    pub fn round_length(&self) -> Duration {
        self.spacing * self.packets.saturating_sub(1) + self.timeout
    }

    pub(crate) fn resolve<'a>(
        c: &mut Check<'_, '_>,
        path: &str,
        t: Option<&'a RawPing>,
        d: Option<&'a RawPing>,
    ) -> Self {
        let base = Self::default();
        let field = |name: &str| format!("{path}.{name}");
        let x = Src::new(t, d, &field);
        let packets = x
            .ranged(c, |r| r.packets.as_ref(), "packets", D::PING_PACKETS_RANGE)
            .map_or(base.packets, |v| v as u32);
        let spacing = x
            .ranged(c, |r| r.spacing.as_ref(), "spacing", D::PING_SPACING_RANGE)
            .unwrap_or(base.spacing);
        let timeout = x
            .ranged(c, |r| r.timeout.as_ref(), "timeout", D::TIMEOUT_RANGE)
            .unwrap_or(base.timeout);
        let size = x
            .ranged(c, |r| r.size.as_ref(), "size", D::PING_SIZE_RANGE)
            .map_or(base.size, |v| v as usize);
        let ttl = x
            .ranged(c, |r| r.ttl.as_ref(), "ttl", D::TTL_RANGE)
            .map(|v| v as u8);
        let (tos, source, ip_protocol) = addressing(c, x);
        Self {
            packets,
            spacing,
            timeout,
            size,
            ttl,
            tos,
            source,
            ip_protocol,
        }
    }
}
