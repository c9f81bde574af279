//! The ping probe as a probe module: its options, form, `/probe` parameter, series, counters,
//! store figures and rollup behind [`TypedModule`], registered in
//! [`MODULES`](super::super::registry::MODULES) with the store code the built-in kind had (1).
//!
//! The store keeps writing ping rounds in its own block layout (flag bits, about 10 bytes a
//! round, since its first version) rather than as module bytes: at 10,000 targets a second
//! that saves the module code, length and version of every round and an allocation per round.
//! It reads them into [`StoredPing`], whose points and values are the module's.
//!
//! A target's ping options are its module options, read by the ping probe like every kind's
//! (`Target::options_or_default`); the page's "Run now" ([`PingLive`]) sets its own packet
//! count with `Target::set_options`.

use std::net::IpAddr;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use super::super::module::{
    Glance, Misfit, ModuleReport, OptionsInput, Peer, Rollup, Section, TypedModule, family_mismatch,
};
use super::super::round::Probe;
use super::PingProbe;
use super::live::PingLive;
use super::options::{PingOptions, RawPing};
use super::series::{self, StoredPing};
use crate::config::check::{Check, read_section};
use crate::config::form::{Input, ProbeForm};
use crate::config::form::{choice, duration, integer, text};
use crate::config::host::{Host, parse_host};
use crate::defaults as d;
use crate::probe::live::LiveRun;
use crate::sample::{Measurement, PingReport};
use crate::series::{CounterDef, Gauge, HistogramDef, Point};
use crate::types::IpProtocol;
use crate::types::{ModuleId, ProbeKind};

/// `probes = ["ping"]`, `ping = {...}`, `probe="ping"`, `module=ping`.
pub(crate) const NAME: &str = "ping";
/// The ping module's kind.
pub(crate) const KIND: ModuleId = ModuleId(NAME);

impl ProbeKind {
    /// The ping probe module's kind.
    pub const PING: ProbeKind = ProbeKind::Module(KIND);
}

impl From<PingReport> for Measurement {
    fn from(r: PingReport) -> Self {
        Measurement::Module(ModuleReport::new(KIND, r))
    }
}

impl Measurement {
    /// The ping report of a ping round.
    pub fn ping(&self) -> Option<&PingReport> {
        match self {
            Measurement::Module(r) => r.get(),
            _ => None,
        }
    }
}

/// The ping probe module.
#[derive(Debug)]
pub(crate) struct Ping;

impl TypedModule for Ping {
    type Options = PingOptions;
    type Report = PingReport;
    type Raw = RawPing;
    const NAME: &'static str = NAME;
    /// The built-in kind's code, so the store's series dictionary keeps naming ping rounds.
    const STORE_CODE: u8 = 1;
    const DEFAULT_INTERVAL: Duration = d::PING_INTERVAL;
    const PARAMS: &'static [&'static str] = &["ip_protocol"];
    const GAUGES: &'static [&'static Gauge] = &series::GAUGES;
    const HISTOGRAMS: &'static [HistogramDef] = &[series::RTT_HISTOGRAM];
    const COUNTERS: &'static [CounterDef] = &series::COUNTERS;
    const LIVE: Option<&'static dyn LiveRun> = Some(&PingLive);

    fn form(&self) -> ProbeForm {
        form()
    }
    fn options(&self, c: &mut Check<'_, '_>, input: &OptionsInput<'_, '_>) -> Option<PingOptions> {
        options(c, input)
    }
    fn round_length(&self, o: &PingOptions) -> Duration {
        o.round_length()
    }
    /// The requests' spread alone must fit: a reply may come in after the next round started.
    fn misfit(&self, o: &PingOptions, interval: Duration) -> Option<Misfit> {
        (o.spacing * o.packets.saturating_sub(1) >= interval).then(|| Misfit {
            setting: Some("packets"),
            message: format!(
                "a round of {} packets {} apart takes longer than the interval ({}); send fewer packets or space them closer",
                o.packets,
                humantime::format_duration(o.spacing),
                humantime::format_duration(interval)
            ),
        })
    }
    /// A ping section without the probe is not a mistake (it always was allowed); its settings
    /// are checked all the same.
    fn unused_section(&self, c: &mut Check<'_, '_>, path: &str, section: &Section<'_>) {
        if let Some(raw) = read_section::<RawPing>(c, section, path) {
            PingOptions::resolve(c, path, Some(&raw), None);
        }
    }
    fn probe(&self) -> Arc<dyn Probe> {
        Arc::new(PingProbe::new())
    }
    fn probe_target(&self, target: &str) -> Result<(Host, toml::Table), String> {
        let host = parse_host(target).map_err(|m| format!("target {m}"))?;
        Ok((host, toml::Table::new()))
    }
    fn ip_protocol(&self, o: &PingOptions) -> IpProtocol {
        o.ip_protocol
    }
    fn encode(&self, r: &PingReport, out: &mut Vec<u8>) {
        StoredPing::from_report(r).encode(out);
    }
    fn points(&self, bytes: &[u8], out: &mut Vec<Point>) {
        if let Some(s) = StoredPing::decode(bytes) {
            s.points(out);
        }
    }
    fn initial_points(&self, out: &mut Vec<Point>) {
        series::initial_points(out);
    }
    fn observe(&self, r: &PingReport, add: &mut dyn FnMut(usize, f64)) {
        series::observe(r, add);
    }
    fn count(&self, r: &PingReport, add: &mut dyn FnMut(usize, u64)) {
        series::count(r, add);
    }
    fn values(&self, bytes: &[u8], out: &mut Vec<(&'static str, f64)>) {
        if let Some(s) = StoredPing::decode(bytes) {
            s.values(out);
        }
    }
    /// The mean RTT.
    const FIGURE: &'static str = "RTT";
    fn glance(&self, r: &PingReport) -> Glance {
        Glance {
            time: r.mean(),
            loss: Some((r.sent, r.sent.saturating_sub(r.received))),
            peer: r.address.map(Peer::Ip),
            detail: None,
        }
    }
    fn rollup(&self, bytes: &[u8]) -> Rollup {
        Rollup {
            time_us: StoredPing::decode(bytes).and_then(|s| s.time_us()),
            ..Rollup::default()
        }
    }
}

/// `ping = {...}` over `[defaults.ping]`, judged with the config's located messages; an
/// address host is checked against the source and address family.
pub(crate) fn options(c: &mut Check<'_, '_>, input: &OptionsInput<'_, '_>) -> Option<PingOptions> {
    let before = c.errors();
    let defaults: Option<RawPing> = input
        .defaults
        .and_then(|v| read_section(c, v, "defaults.ping"));
    let own: Option<RawPing> = input.own.and_then(|v| read_section(c, v, input.path));
    if c.errors() > before {
        return None;
    }
    let o = PingOptions::resolve(c, input.path, own.as_ref(), defaults.as_ref());
    if let Some((Host::Ip(ip), host_span)) = &input.host {
        let source_span = own
            .as_ref()
            .and_then(|r| r.source.as_ref())
            .map(|s| s.span());
        let at = source_span.unwrap_or_else(|| input.target_span.clone());
        check_family(c, input.path, *ip, &o, at, host_span.clone());
    }
    (c.errors() == before).then_some(o)
}

/// The source and the wanted family against the host's address.
fn check_family(
    c: &mut Check<'_, '_>,
    path: &str,
    ip: IpAddr,
    o: &PingOptions,
    source_at: Range<usize>,
    host_at: Range<usize>,
) {
    if let Some(src) = o.source.filter(|s| s.is_ipv4() != ip.is_ipv4()) {
        c.err(
            Some(source_at),
            &format!("{path}.source"),
            format!("source {src} and host {ip} are not of the same IP version"),
        );
    }
    if family_mismatch(o.ip_protocol, ip) {
        c.err(
            Some(host_at),
            &format!("{path}.ip_protocol"),
            format!("is {} but the host is {ip}", o.ip_protocol.as_str()),
        );
    }
}

/// The page's ping target form.
pub(crate) fn form() -> ProbeForm {
    let ip = IpProtocol::ALL.iter().map(|p| p.as_str()).collect();
    ProbeForm {
        kind: NAME,
        title: "Ping options",
        host_hint: "the address or host name to ping",
        fields: vec![
            integer(
                "packets",
                "Packets per round",
                d::PING_PACKETS_RANGE,
                d::PING_PACKETS.to_string(),
            ),
            duration("spacing", "Spacing", d::PING_SPACING_RANGE, d::PING_SPACING)
                .hint("between the packets of a round"),
            duration("timeout", "Timeout", d::TIMEOUT_RANGE, d::PING_TIMEOUT).hint("per reply"),
            integer(
                "size",
                "Payload bytes",
                d::PING_SIZE_RANGE,
                d::PING_PAYLOAD_SIZE.to_string(),
            ),
            integer("ttl", "TTL", d::TTL_RANGE, "system".into()),
            integer("dscp", "DSCP", d::DSCP_RANGE, "none".into()),
            text("source", "Source address", "automatic", Input::Text)
                .hint("an address of this device"),
            choice("ip_protocol", "Address family", ip).hint("for host names with both"),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::module::{ProbeModule, Report};

    fn report() -> PingReport {
        let us = Duration::from_micros;
        PingReport {
            sent: 3,
            received: 2,
            duplicates: 1,
            rtts: vec![us(100), us(300)],
            ..PingReport::default()
        }
    }

    fn parse(target: &str) -> Result<crate::config::Config, String> {
        let text = format!("[[targets]]\nname = \"t\"\nhost = \"127.0.0.1\"\n{target}");
        crate::config::Config::parse(&text, "t.toml").map_err(|e| e.to_string())
    }

    /// The ping section goes through the module: its options reach the target's module
    /// options, where the ping probe reads them; on a target without ping it is checked but allowed; a round
    /// longer than the interval is blamed on the packets where they were written.
    #[test]
    fn the_config_reads_ping_through_the_module() {
        let c =
            parse("probes = [\"ping\"]\nping = { packets = 3, ip_protocol = \"ipv4\" }\n").unwrap();
        let t = &c.targets[0];
        let from_module = t.module::<PingOptions>(KIND).unwrap();
        assert_eq!(from_module.packets, 3);
        assert_eq!(*from_module, t.options_or_default::<PingOptions>());
        assert_eq!(t.probes[0], (ProbeKind::PING, d::PING_INTERVAL));
        assert!(parse("probes = [\"trace\"]\nping = { packets = 3 }\n").is_ok());
        let e = parse("probes = [\"trace\"]\nping = { packets = -5 }\n").unwrap_err();
        assert!(
            e.contains("targets[0].ping.packets: must be between 1 and 100, got -5"),
            "{e}"
        );
        let e =
            parse("probes = [\"ping\"]\nping = { packets = 3, source = \"::1\" }\n").unwrap_err();
        assert!(
            e.contains("targets[0].ping.source: source ::1 and host 127.0.0.1"),
            "{e}"
        );
        let e = parse(
            "probes = [\"ping\"]\ninterval = \"1s\"\nping = { packets = 20, spacing = \"100ms\" }\n",
        )
        .unwrap_err();
        assert!(
            e.contains("t.toml:6:20: targets[0].ping.packets: a round of 20 packets 100ms apart takes longer than the interval (1s)"),
            "{e}"
        );
    }

    /// A round's module bytes show the points and values of the store's figures.
    #[test]
    fn a_rounds_bytes_show_the_stored_figures() {
        let m: &dyn ProbeModule = &Ping;
        let mut bytes = Vec::new();
        m.encode(&report(), &mut bytes);
        let (mut from_module, mut figures) = (Vec::new(), Vec::new());
        m.points(&bytes, &mut from_module);
        StoredPing::from_report(&report()).points(&mut figures);
        assert_eq!(from_module, figures);
        let mut values = Vec::new();
        m.values(&bytes, &mut values);
        assert!(values.contains(&("rtt_avg_seconds", 0.0002)), "{values:?}");
        assert_eq!(m.rollup(&bytes).time_us, Some(200));
        assert!(!m.keeps_marks());
        let back = m.report_from_json(Report::json(&report()));
        assert_eq!(back.unwrap().get::<PingReport>(), Some(&report()));
        assert_eq!(ProbeModule::form(&Ping).kind, "ping");
        assert_eq!(m.store_code(), 1);
    }
}
