//! Options of the traceroute probe.

use std::net::IpAddr;
use std::time::Duration;

use serde::Serialize;
use toml::Spanned;

use super::super::options::{addressing, raw_section};
use crate::config::check::{Check, Src, parse_duration, written_at};
use crate::defaults::{self, self as D};
use crate::types::{IpProtocol, TraceDiscovery, TraceProtocol, TraceSockets};

raw_section! {
    /// `[defaults.trace]` and `targets[].trace`, as written. A target's value wins over
    /// `[defaults.trace]`, which wins over the built-in default.
    pub struct RawTrace {
        /// Time between traces; overrides the target's `interval`.
        pub interval: Option<Spanned<String>>,
        /// `udp` (default), `icmp` or `tcp`.
        pub protocol: Option<Spanned<String>>,
        /// Destination port of UDP and TCP probes (33434 / 80).
        pub port: Option<Spanned<i64>>,
        /// First TTL probed (1..=255).
        pub first_ttl: Option<Spanned<i64>>,
        /// Highest TTL probed (1..=255).
        pub max_hops: Option<Spanned<i64>>,
        /// Probes per hop and flow in one trace (1..=10).
        pub probes_per_hop: Option<Spanned<i64>>,
        /// Gap between the successive probes of one hop ("0s" sends them back to back).
        pub spacing: Option<Spanned<String>>,
        /// How long to wait for each probe's answer.
        pub timeout: Option<Spanned<String>>,
        /// Packet size in bytes, IP header included.
        pub size: Option<Spanned<i64>>,
        @addressing("trace"),
        /// Paris flows per trace (1..=16), whose paths are tracked for path changes.
        pub flows: Option<Spanned<i64>>,
        /// `mda` (default) or `flows`: how branches of load-balanced paths are looked for.
        pub discovery: Option<Spanned<String>>,
        /// The most probes one trace sends (6..=4096, default 256).
        pub probe_budget: Option<Spanned<i64>>,
        /// The most probes a second one trace sends (1..=12800, default 100).
        pub probes_per_second: Option<Spanned<i64>>,
        /// `auto`, `unprivileged` or `raw`.
        pub sockets: Option<Spanned<String>>,
        /// How long a path stays known after it was last seen.
        pub path_window: Option<Spanned<String>>,
    }
}

/// Resolved traceroute options of one target.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct TraceOptions {
    pub protocol: TraceProtocol,
    /// Destination port (UDP and TCP).
    pub port: u16,
    pub first_ttl: u8,
    pub max_hops: u8,
    pub probes_per_hop: u32,
    pub spacing: Duration,
    pub timeout: Duration,
    /// Packet size including the IP header; `None` means 60 bytes for IPv4, 80 for IPv6.
    pub size: Option<usize>,
    /// The full TOS / traffic-class byte.
    pub tos: Option<u8>,
    pub source: Option<IpAddr>,
    pub ip_protocol: IpProtocol,
    pub flows: u32,
    pub discovery: TraceDiscovery,
    /// The most probes one trace sends.
    pub probe_budget: u32,
    /// The most probes a second one trace sends.
    pub probes_per_second: u32,
    pub sockets: TraceSockets,
    pub path_window: Duration,
}

impl Default for TraceOptions {
    fn default() -> Self {
        Self {
            protocol: TraceProtocol::Udp,
            port: defaults::TRACE_UDP_PORT,
            first_ttl: defaults::TRACE_FIRST_TTL,
            max_hops: defaults::TRACE_MAX_HOPS,
            probes_per_hop: defaults::TRACE_PROBES_PER_HOP,
            spacing: defaults::TRACE_SPACING,
            timeout: defaults::TRACE_TIMEOUT,
            size: None,
            tos: None,
            source: None,
            ip_protocol: IpProtocol::Auto,
            flows: defaults::TRACE_FLOWS,
            discovery: TraceDiscovery::default(),
            probe_budget: defaults::TRACE_PROBE_BUDGET,
            probes_per_second: defaults::TRACE_PROBES_PER_SECOND,
            sockets: TraceSockets::Auto,
            path_window: defaults::TRACE_PATH_WINDOW,
        }
    }
}

/// Headers plus the 12 bytes of probe identification every UDP and ICMP probe carries.
pub const fn min_size(ipv6: bool) -> usize {
    (if ipv6 { 40 } else { 20 }) + 8 + 12
}

/// Largest probe: a jumbo frame.
pub const MAX_SIZE: usize = 9000;

impl TraceOptions {
    /// The packet size for one address family.
    pub fn size_for(&self, ipv6: bool) -> usize {
        let default = if ipv6 {
            defaults::TRACE_SIZE_V6
        } else {
            defaults::TRACE_SIZE_V4
        };
        self.size.unwrap_or(default).clamp(min_size(ipv6), MAX_SIZE)
    }

    /// The longest a trace waits: the last probe of a hop plus its timeout.
    pub fn round_length(&self) -> Duration {
        self.spacing * self.probes_per_hop.saturating_sub(1) + self.timeout
    }

    /// Probes of one trace when every TTL is probed.
    pub fn packets(&self) -> u32 {
        u32::from(self.max_hops.saturating_sub(self.first_ttl)) + 1
    }

    pub(crate) fn resolve<'a>(
        c: &mut Check<'_, '_>,
        path: &str,
        t: Option<&'a RawTrace>,
        d: Option<&'a RawTrace>,
    ) -> Self {
        let field = written_at(path, "defaults.trace", t, d);
        let x = Src::new(t, d, &field);
        let protocol = x
            .parsed(c, |r| r.protocol.as_ref(), "protocol")
            .unwrap_or(TraceProtocol::Udp);
        let port = resolve_port(c, x, protocol);
        let (first_ttl, max_hops) = resolve_ttls(c, x);
        let (probes_per_hop, spacing, timeout) = resolve_timing(c, x);
        let size = resolve_size(c, x, protocol);
        let (tos, source, ip_protocol) = addressing(c, x);
        let (flows, discovery, probe_budget, probes_per_second) = resolve_discovery(c, x);
        let base = Self::default();
        let opts = Self {
            protocol,
            port,
            first_ttl,
            max_hops,
            probes_per_hop,
            spacing,
            timeout,
            size,
            tos,
            source,
            ip_protocol,
            flows,
            discovery,
            probe_budget,
            probes_per_second,
            sockets: x
                .parsed(c, |r| r.sockets.as_ref(), "sockets")
                .unwrap_or(base.sockets),
            path_window: x
                .ranged(
                    c,
                    |r| r.path_window.as_ref(),
                    "path_window",
                    D::TRACE_PATH_WINDOW_RANGE,
                )
                .unwrap_or(base.path_window),
        };
        check_packets(c, x, &opts);
        opts
    }
}

type Raw<'a> = Src<'a, RawTrace>;

/// The destination port: none for ICMP, else the target's, the default's or the protocol's.
fn resolve_port(c: &mut Check<'_, '_>, x: Raw<'_>, protocol: TraceProtocol) -> u16 {
    let port_raw = x.pick(|r| r.port.as_ref());
    // A default port is meant for the UDP and TCP targets; only a target's own port on an
    // ICMP trace is a mistake.
    match (protocol, port_raw) {
        (TraceProtocol::Icmp, Some(v)) if x.t.and_then(|r| r.port.as_ref()).is_some() => {
            c.err(
                v.span(),
                &x.field("port"),
                "ICMP probes have no port; set port only with protocol \"udp\" or \"tcp\"",
            );
            0
        }
        (TraceProtocol::Icmp, _) => 0,
        (_, Some(v)) => c
            .int_in(v, &x.field("port"), D::PORT_RANGE.min, D::PORT_RANGE.max)
            .map_or(0, |p| p as u16),
        (TraceProtocol::Udp, None) => defaults::TRACE_UDP_PORT,
        (TraceProtocol::Tcp, None) => defaults::TRACE_TCP_PORT,
    }
}

/// The gap between a hop's probes; zero is valid and means back to back.
fn resolve_spacing(c: &mut Check<'_, '_>, x: Raw<'_>) -> Option<Duration> {
    x.pick(|r| r.spacing.as_ref()).and_then(|v| {
        // Zero is a valid gap: it means back to back.
        if parse_duration(v.get_ref()).is_err()
            && humantime::parse_duration(v.get_ref().trim()).is_ok_and(|d| d.is_zero())
        {
            return Some(Duration::ZERO);
        }
        let r = D::TRACE_SPACING_RANGE;
        c.duration_in(v, &x.field("spacing"), r.min, r.max)
    })
}

/// The packet size: a TCP trace sends bare SYNs, so only its own size is a mistake.
fn resolve_size(c: &mut Check<'_, '_>, x: Raw<'_>, protocol: TraceProtocol) -> Option<usize> {
    let own_size = x.t.and_then(|r| r.size.as_ref());
    match x.pick(|r| r.size.as_ref()) {
        // A default size is meant for the UDP and ICMP targets; a TCP target ignores it.
        Some(_) if protocol == TraceProtocol::Tcp && own_size.is_none() => None,
        Some(v) if protocol == TraceProtocol::Tcp => {
            c.err(
                v.span(),
                &x.field("size"),
                "TCP probes are bare SYNs; size applies to udp and icmp only",
            );
            None
        }
        Some(v) => c
            .int_in(v, &x.field("size"), min_size(false) as i64, MAX_SIZE as i64)
            .map(|v| v as usize),
        None => None,
    }
}

/// The Paris flows, how branches are looked for, and the probes a trace may send in all and in a
/// second.
fn resolve_discovery(c: &mut Check<'_, '_>, x: Raw<'_>) -> (u32, TraceDiscovery, u32, u32) {
    let base = TraceOptions::default();
    let flows = x
        .ranged(c, |r| r.flows.as_ref(), "flows", D::TRACE_FLOWS_RANGE)
        .map_or(base.flows, |v| v as u32);
    let discovery = x
        .parsed(c, |r| r.discovery.as_ref(), "discovery")
        .unwrap_or(base.discovery);
    let budget = x
        .ranged(
            c,
            |r| r.probe_budget.as_ref(),
            "probe_budget",
            D::TRACE_PROBE_BUDGET_RANGE,
        )
        .map_or(base.probe_budget, |v| v as u32);
    let rate = D::TRACE_PROBES_PER_SECOND_RANGE;
    let per_second = x
        .ranged(
            c,
            |r| r.probes_per_second.as_ref(),
            "probes_per_second",
            rate,
        )
        .map_or(base.probes_per_second, |v| v as u32);
    (flows, discovery, budget, per_second)
}

/// One trace may send at most `TRACE_MAX_PACKETS`; the error goes where the product grew.
fn check_packets(c: &mut Check<'_, '_>, x: Raw<'_>, opts: &TraceOptions) {
    let (first_ttl, max_hops) = (opts.first_ttl, opts.max_hops);
    let (probes_per_hop, flows) = (opts.probes_per_hop, opts.flows);
    let packets = opts.packets() * probes_per_hop * flows;
    if first_ttl <= max_hops && packets > defaults::TRACE_MAX_PACKETS {
        let span = x
            .pick(|r| r.probes_per_hop.as_ref())
            .or(x.pick(|r| r.flows.as_ref()))
            .or(x.pick(|r| r.max_hops.as_ref()))
            .map(|v| v.span());
        c.err(
            span,
            &x.field("probes_per_hop"),
            format!(
                "{} hops × {probes_per_hop} probes per hop × {flows} flows is {packets} packets a trace; at most {} are allowed",
                opts.packets(),
                defaults::TRACE_MAX_PACKETS
            ),
        );
    }
}

/// The first and the highest TTL, the first no higher than the highest.
fn resolve_ttls(c: &mut Check<'_, '_>, x: Raw<'_>) -> (u8, u8) {
    let base = TraceOptions::default();
    let first_ttl = x
        .ranged(c, |r| r.first_ttl.as_ref(), "first_ttl", D::TTL_RANGE)
        .map_or(base.first_ttl, |v| v as u8);
    let max_hops = x
        .ranged(c, |r| r.max_hops.as_ref(), "max_hops", D::TTL_RANGE)
        .map_or(base.max_hops, |v| v as u8);
    if first_ttl > max_hops {
        let first_raw = x.pick(|r| r.first_ttl.as_ref());
        let span = first_raw
            .or(x.pick(|r| r.max_hops.as_ref()))
            .map(|v| v.span());
        c.err(
            span,
            &x.field("first_ttl"),
            format!("first_ttl {first_ttl} is above max_hops {max_hops}"),
        );
    }
    (first_ttl, max_hops)
}

/// Probes per hop, the gap between them and how long each waits.
fn resolve_timing(c: &mut Check<'_, '_>, x: Raw<'_>) -> (u32, Duration, Duration) {
    let base = TraceOptions::default();
    let per_hop = D::TRACE_PROBES_PER_HOP_RANGE;
    let probes_per_hop = x
        .ranged(c, |r| r.probes_per_hop.as_ref(), "probes_per_hop", per_hop)
        .map_or(base.probes_per_hop, |v| v as u32);
    let spacing = resolve_spacing(c, x).unwrap_or(base.spacing);
    let timeout = x
        .ranged(c, |r| r.timeout.as_ref(), "timeout", D::TIMEOUT_RANGE)
        .unwrap_or(base.timeout);
    (probes_per_hop, spacing, timeout)
}
