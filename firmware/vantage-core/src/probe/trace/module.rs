//! The trace probe as a probe module: its options, form, `/probe` parameter, series, counter,
//! store figures and rollup behind [`TypedModule`], registered in
//! [`MODULES`](super::super::registry::MODULES) with the store code the built-in kind had (3).
//!
//! A target's trace options are its module options, read by the trace probe like every
//! kind's (`Target::options_or_default`). The page's "Run now" is [`TraceLive`]; the command
//! line's mtr-style table is in `text.rs`.
//!
//! The store keeps writing trace rounds in its own block layout (flag bits and varints, about
//! 17 bytes plus 3 per hop) rather than as module bytes, and reads them into [`StoredTrace`],
//! whose points and values are the module's. The module's own encoding of a round (what the
//! module trait hands around as a stored round's bytes):
//!
//! ```text
//! version u8 = 1
//! reached u8, path_changed u8, path_hash u32 LE, paths_known varint,
//! partial: 0 | 1 reached varint, flows varint,
//! last RTT: 0 | 1 min, avg, max µs varints,
//! hops varint, hops × (ttl u8, sent varint, received varint, 0 | 1 mean RTT µs varint)
//! ```

use std::net::IpAddr;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use super::super::module::{
    Detail, DetailUse, Glance, Misfit, ModuleReport, OptionsInput, Peer, Rollup, Section,
    TypedModule, family_mismatch,
};
use super::super::round::Probe;
use super::super::tcp::{put_varint, varint};
use super::TraceProbe;
use super::live::TraceLive;
use super::options::{RawTrace, TraceOptions, min_size as trace_min_size};
use super::series::{self, StoredHop, StoredTrace};
use crate::config::check::{Check, read_section};
use crate::config::form::{Input, ProbeForm};
use crate::config::form::{choice, duration, integer, text};
use crate::config::host::{Host, parse_host};
use crate::defaults as d;
use crate::probe::live::LiveRun;
use crate::sample::{HopReport, Measurement, TraceReport};
use crate::series::{CounterDef, Gauge, InfoFamily, Point};
use crate::types::{IpProtocol, ModuleId, ProbeKind, TraceDiscovery, TraceProtocol, TraceSockets};

/// `probes = ["trace"]`, `trace = {...}`, `probe="trace"`, `module=trace`.
pub(crate) const NAME: &str = "trace";
/// The trace module's kind.
pub(crate) const KIND: ModuleId = ModuleId(NAME);

impl ProbeKind {
    /// The trace probe module's kind.
    pub const TRACE: ProbeKind = ProbeKind::Module(KIND);
}

impl From<TraceReport> for Measurement {
    fn from(r: TraceReport) -> Self {
        Measurement::Module(ModuleReport::new(KIND, r))
    }
}

impl Measurement {
    /// The trace report of a trace round.
    pub fn trace(&self) -> Option<&TraceReport> {
        match self {
            Measurement::Module(r) => r.get(),
            _ => None,
        }
    }
}

/// The trace probe module.
#[derive(Debug)]
pub(crate) struct Trace;

impl TypedModule for Trace {
    type Options = TraceOptions;
    type Report = TraceReport;
    type Raw = RawTrace;
    const NAME: &'static str = NAME;
    /// The built-in kind's code, so the store's series dictionary keeps naming trace rounds.
    const STORE_CODE: u8 = 3;
    const DEFAULT_INTERVAL: Duration = d::TRACE_INTERVAL;
    const PARAMS: &'static [&'static str] = &["protocol"];
    const GAUGES: &'static [&'static Gauge] = &series::GAUGES;
    const COUNTERS: &'static [CounterDef] = &series::COUNTERS;
    const INFO: &'static [InfoFamily] = &series::INFO;
    const MARKS: bool = true;
    const HOPS: bool = true;
    const LIVE: Option<&'static dyn LiveRun> = Some(&TraceLive);

    fn form(&self) -> ProbeForm {
        form()
    }
    fn options(&self, c: &mut Check<'_, '_>, input: &OptionsInput<'_, '_>) -> Option<TraceOptions> {
        options(c, input)
    }
    fn round_length(&self, o: &TraceOptions) -> Duration {
        o.round_length()
    }
    /// Blamed on the timeout (where it was written, else the target), with the message the
    /// built-in kind gave.
    fn misfit(&self, o: &TraceOptions, interval: Duration) -> Option<Misfit> {
        (o.round_length() >= interval).then(|| Misfit {
            setting: Some("timeout"),
            message: format!(
                "a trace waits up to {} for its answers, longer than the interval ({}); shorten the timeout or the spacing",
                humantime::format_duration(o.round_length()),
                humantime::format_duration(interval)
            ),
        })
    }
    /// A trace section without the probe is not a mistake (it always was allowed); its
    /// settings are checked all the same.
    fn unused_section(&self, c: &mut Check<'_, '_>, path: &str, section: &Section<'_>) {
        if let Some(raw) = read_section::<RawTrace>(c, section, path) {
            TraceOptions::resolve(c, path, Some(&raw), None);
        }
    }
    fn probe(&self) -> Arc<dyn Probe> {
        Arc::new(TraceProbe::new())
    }
    fn probe_target(&self, target: &str) -> Result<(Host, toml::Table), String> {
        let host = parse_host(target).map_err(|m| format!("target {m}"))?;
        Ok((host, toml::Table::new()))
    }
    fn ip_protocol(&self, o: &TraceOptions) -> IpProtocol {
        o.ip_protocol
    }
    /// Traces compare each path with the last one to the same host over the same protocol.
    fn probe_round_name(&self, host: &Host, o: &TraceOptions) -> String {
        format!("/probe/{}/{host}", o.protocol)
    }
    /// An mtr-style table of the traces summed up.
    fn text(&self, host: &str, o: &TraceOptions, rounds: &[&TraceReport]) -> Option<String> {
        super::text::text(host, o, rounds)
    }
    fn encode(&self, r: &TraceReport, out: &mut Vec<u8>) {
        encode(&StoredTrace::from_report(r), out);
    }
    fn points(&self, bytes: &[u8], out: &mut Vec<Point>) {
        if let Some(s) = decode(bytes) {
            s.points(out);
        }
    }
    fn initial_points(&self, out: &mut Vec<Point>) {
        series::initial_points(out);
    }
    fn count(&self, r: &TraceReport, add: &mut dyn FnMut(usize, u64)) {
        series::count(r, add);
    }
    fn info(&self, r: &TraceReport, add: &mut dyn FnMut(usize, Vec<String>)) {
        series::info(r, add);
    }
    fn values(&self, bytes: &[u8], out: &mut Vec<(&'static str, f64)>) {
        if let Some(s) = decode(bytes) {
            s.values(out);
        }
    }
    /// The last hop's mean RTT, and the path hash as the mark.
    const FIGURE: &'static str = "last hop RTT";
    /// The last hop's RTT and loss: the destination's, when reached.
    fn glance(&self, r: &TraceReport) -> Glance {
        let last = r.last_hop();
        Glance {
            time: last.and_then(HopReport::mean),
            loss: last.map(|h| (h.sent, h.sent.saturating_sub(h.received))),
            peer: r.address.map(Peer::Ip),
            detail: Some(format!("{} hops", r.hop_count())),
        }
    }
    fn rollup(&self, bytes: &[u8]) -> Rollup {
        let s = decode(bytes);
        Rollup {
            time_us: s.as_ref().and_then(StoredTrace::time_us),
            mark: s.map(|s| s.path_hash),
            ..Rollup::default()
        }
    }
    /// Each path's hops, by its path hash (the mark).
    const DETAIL_USE: DetailUse = DetailUse::PerMark("paths");
    /// The hop addresses, once per path hash.
    fn detail(&self, r: &TraceReport) -> Option<Detail> {
        super::detail::detail(r)
    }
    fn detail_json(&self, bytes: &[u8]) -> Option<serde_json::Value> {
        super::detail::detail_json(bytes)
    }
}

/// `trace = {...}` over `[defaults.trace]`, judged with the config's located messages; an
/// address host is checked against the source, the address family and the packet size.
pub(crate) fn options(c: &mut Check<'_, '_>, input: &OptionsInput<'_, '_>) -> Option<TraceOptions> {
    let before = c.errors();
    let defaults: Option<RawTrace> = input
        .defaults
        .and_then(|v| read_section(c, v, "defaults.trace"));
    let own: Option<RawTrace> = input.own.and_then(|v| read_section(c, v, input.path));
    if c.errors() > before {
        return None;
    }
    let o = TraceOptions::resolve(c, input.path, own.as_ref(), defaults.as_ref());
    if let Some((Host::Ip(ip), host_span)) = &input.host {
        check_family(c, input.path, *ip, &o, own.as_ref(), host_span.clone());
    }
    (c.errors() == before).then_some(o)
}

/// The source, the wanted family and the packet size against the host's address; each error
/// where the setting was written in the target's section, else at the host.
fn check_family(
    c: &mut Check<'_, '_>,
    path: &str,
    ip: IpAddr,
    o: &TraceOptions,
    own: Option<&RawTrace>,
    host_at: Range<usize>,
) {
    let place = |get: fn(&RawTrace) -> Option<Range<usize>>| {
        own.and_then(get).unwrap_or_else(|| host_at.clone())
    };
    if let Some(src) = o.source.filter(|s| s.is_ipv4() != ip.is_ipv4()) {
        c.err(
            Some(place(|r| r.source.as_ref().map(|s| s.span()))),
            &format!("{path}.source"),
            format!("source {src} and host {ip} are not of the same IP version"),
        );
    }
    if family_mismatch(o.ip_protocol, ip) {
        c.err(
            Some(host_at.clone()),
            &format!("{path}.ip_protocol"),
            format!("is {} but the host is {ip}", o.ip_protocol.as_str()),
        );
    }
    if let Some(size) = o.size.filter(|s| *s < trace_min_size(ip.is_ipv6())) {
        c.err(
            Some(place(|r| r.size.as_ref().map(|s| s.span()))),
            &format!("{path}.size"),
            format!(
                "{size} bytes is too small for a probe to {ip}; IPv6 probes are at least {} bytes",
                trace_min_size(true)
            ),
        );
    }
}

/// The version byte of [`encode`].
const VERSION: u8 = 1;

/// The module's encoding of a round's figures (see the top of this file).
fn encode(t: &StoredTrace, out: &mut Vec<u8>) {
    out.push(VERSION);
    out.push(u8::from(t.reached));
    out.push(u8::from(t.path_changed));
    out.extend_from_slice(&t.path_hash.to_le_bytes());
    put_varint(out, u64::from(t.paths_known));
    match t.partial {
        Some((reached, flows)) => {
            out.push(1);
            put_varint(out, u64::from(reached));
            put_varint(out, u64::from(flows));
        }
        None => out.push(0),
    }
    match t.last_rtt_us {
        Some((min, avg, max)) => {
            out.push(1);
            for us in [min, avg, max] {
                put_varint(out, us);
            }
        }
        None => out.push(0),
    }
    put_varint(out, t.hops.len() as u64);
    for h in &t.hops {
        out.push(h.ttl);
        put_varint(out, u64::from(h.sent));
        put_varint(out, u64::from(h.received));
        match h.rtt_avg_us {
            Some(us) => {
                out.push(1);
                put_varint(out, us);
            }
            None => out.push(0),
        }
    }
}

/// Figures from [`encode`]'s bytes; `None` for bytes it cannot read.
fn decode(bytes: &[u8]) -> Option<StoredTrace> {
    let mut b = bytes;
    let mut byte = || {
        let (&x, rest) = b.split_first()?;
        b = rest;
        Some(x)
    };
    if byte()? != VERSION {
        return None;
    }
    let (reached, path_changed) = (byte()? == 1, byte()? == 1);
    let hash = [byte()?, byte()?, byte()?, byte()?];
    let mut t = StoredTrace {
        reached,
        path_changed,
        path_hash: u32::from_le_bytes(hash),
        ..StoredTrace::default()
    };
    let n32 = |b: &mut &[u8]| varint(b).and_then(|v| u32::try_from(v).ok());
    let opt = |b: &mut &[u8]| {
        let (&x, rest) = b.split_first()?;
        *b = rest;
        Some(x == 1)
    };
    t.paths_known = n32(&mut b)?;
    if opt(&mut b)? {
        t.partial = Some((n32(&mut b)?, n32(&mut b)?));
    }
    if opt(&mut b)? {
        t.last_rtt_us = Some((varint(&mut b)?, varint(&mut b)?, varint(&mut b)?));
    }
    let hops = varint(&mut b)?;
    for _ in 0..hops.min(256) {
        let (&ttl, rest) = b.split_first()?;
        b = rest;
        let (sent, received) = (n32(&mut b)?, n32(&mut b)?);
        let rtt_avg_us = if opt(&mut b)? {
            Some(varint(&mut b)?)
        } else {
            None
        };
        t.hops.push(StoredHop {
            ttl,
            sent,
            received,
            rtt_avg_us,
        });
    }
    (b.is_empty() && t.hops.len() as u64 == hops).then_some(t)
}

/// The page's trace target form.
pub(crate) fn form() -> ProbeForm {
    let protocols = TraceProtocol::ALL.iter().map(|p| p.as_str()).collect();
    let sockets = TraceSockets::ALL.iter().map(|s| s.as_str()).collect();
    let discovery = TraceDiscovery::ALL.iter().map(|s| s.as_str()).collect();
    let ip = IpProtocol::ALL.iter().map(|p| p.as_str()).collect();
    ProbeForm {
        kind: NAME,
        title: "Trace options",
        host_hint: "the address or host name to trace the path to",
        fields: vec![
            duration("interval", "Interval", d::INTERVAL_RANGE, d::TRACE_INTERVAL)
                .hint("between traces; overrides the target's interval"),
            choice("protocol", "Protocol", protocols)
                .hint("udp as traceroute, icmp as mtr, tcp SYN"),
            integer(
                "port",
                "Port",
                d::PORT_RANGE,
                format!("{} (tcp: {})", d::TRACE_UDP_PORT, d::TRACE_TCP_PORT),
            )
            .hint("udp and tcp only"),
            integer(
                "flows",
                "Flows",
                d::TRACE_FLOWS_RANGE,
                d::TRACE_FLOWS.to_string(),
            )
            .hint("paths tracked for path changes"),
            choice("discovery", "Discovery", discovery)
                .hint("mda: new flows at each hop until every branch is found"),
            integer(
                "probe_budget",
                "Probe budget",
                d::TRACE_PROBE_BUDGET_RANGE,
                d::TRACE_PROBE_BUDGET.to_string(),
            )
            .hint("most probes a trace sends"),
            integer(
                "probes_per_second",
                "Probes per second",
                d::TRACE_PROBES_PER_SECOND_RANGE,
                d::TRACE_PROBES_PER_SECOND.to_string(),
            )
            .hint("most probes a second a trace sends"),
            integer(
                "first_ttl",
                "First TTL",
                d::TTL_RANGE,
                d::TRACE_FIRST_TTL.to_string(),
            ),
            integer(
                "max_hops",
                "Max hops",
                d::TTL_RANGE,
                d::TRACE_MAX_HOPS.to_string(),
            ),
            integer(
                "probes_per_hop",
                "Probes per hop",
                d::TRACE_PROBES_PER_HOP_RANGE,
                d::TRACE_PROBES_PER_HOP.to_string(),
            ),
            duration("timeout", "Timeout", d::TIMEOUT_RANGE, d::TRACE_TIMEOUT).hint("per probe"),
            duration(
                "path_window",
                "Path window",
                d::TRACE_PATH_WINDOW_RANGE,
                d::TRACE_PATH_WINDOW,
            )
            .hint("paths seen within it are not a change"),
            integer("dscp", "DSCP", d::DSCP_RANGE, "none".into()),
            text("source", "Source address", "automatic", Input::Text)
                .hint("an address of this device"),
            choice("sockets", "Sockets", sockets).hint("raw needs CAP_NET_RAW"),
            choice("ip_protocol", "Address family", ip).hint("for host names with both"),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::module::{ProbeModule, Report};
    use crate::probe::trace::series::tests::report;

    fn parse(target: &str) -> Result<crate::config::Config, String> {
        let text = format!("[[targets]]\nname = \"t\"\nhost = \"127.0.0.1\"\n{target}");
        crate::config::Config::parse(&text, "t.toml").map_err(|e| e.to_string())
    }

    /// The trace section goes through the module: its options reach the target's module
    /// options, where the trace probe reads them; on a
    /// target without trace it is checked (but not against the host); the host's family is
    /// held against a target running trace, where the setting was written.
    #[test]
    fn the_config_reads_trace_through_the_module() {
        let c = parse(
            "probes = [\"trace\"]\ntrace = { protocol = \"tcp\", max_hops = 12, flows = 2 }\n\
             [defaults.trace]\npath_window = \"2h\"\n",
        )
        .unwrap();
        let t = &c.targets[0].options_or_default::<TraceOptions>();
        let from_module = c.targets[0].module::<TraceOptions>(KIND);
        assert_eq!(from_module, Some(t));
        assert_eq!(
            c.targets[0].probes[0],
            (ProbeKind::TRACE, d::TRACE_INTERVAL)
        );
        assert_eq!(
            (t.protocol, t.port, t.max_hops),
            (TraceProtocol::Tcp, d::TRACE_TCP_PORT, 12)
        );
        assert_eq!((t.flows, t.path_window), (2, Duration::from_secs(7200)));
        assert!(parse("probes = [\"ping\"]\ntrace = { source = \"::1\" }\n").is_ok());
        let e = parse("probes = [\"ping\"]\ntrace = { max_hops = 300 }\n").unwrap_err();
        assert!(
            e.contains("targets[0].trace.max_hops: must be between 1 and 255, got 300"),
            "{e}"
        );
        let e = parse("probes = [\"trace\"]\ntrace = { source = \"::1\" }\n").unwrap_err();
        assert!(
            e.contains("t.toml:5:20: targets[0].trace.source: source ::1 and host 127.0.0.1"),
            "{e}"
        );
        let e = parse("probes = [\"trace\"]\ntrace = { colour = 1 }\n").unwrap_err();
        assert!(e.contains("targets[0].trace.colour"), "{e}");
    }

    /// A round's module bytes read back to the store's figures: points, values, rollup.
    #[test]
    fn a_rounds_bytes_show_the_stored_figures() {
        let m: &dyn ProbeModule = &Trace;
        let figures = StoredTrace::from_report(&report());
        let mut bytes = Vec::new();
        m.encode(&report(), &mut bytes);
        assert_eq!(decode(&bytes), Some(figures.clone()));
        assert_eq!(decode(&bytes[..bytes.len() - 1]), None);
        let mut empty = Vec::new();
        encode(&StoredTrace::default(), &mut empty);
        assert_eq!(decode(&empty), Some(StoredTrace::default()));
        let (mut from_module, mut want) = (Vec::new(), Vec::new());
        m.points(&bytes, &mut from_module);
        figures.points(&mut want);
        assert_eq!(from_module, want);
        let mut values = Vec::new();
        m.values(&bytes, &mut values);
        assert!(values.contains(&("rtt_avg_seconds", 0.0009)), "{values:?}");
        let r = m.rollup(&bytes);
        assert_eq!((r.time_us, r.mark), (Some(900), Some(5)));
        let back = m.report_from_json(Report::json(&report()));
        assert_eq!(back.unwrap().get::<TraceReport>(), Some(&report()));
        assert_eq!(m.store_code(), 3);
        // `/probe`'s port list does not hold traces (their port is a TTL-expiring probe's).
        assert_eq!(m.port(&TraceOptions::default()), None);
    }
}
