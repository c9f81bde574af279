//! The ping probe as a probe module: its options, form, `/probe` parameter, series, counters,
//! store figures and rollup behind [`TypedModule`], registered in
//! [`MODULES`](super::super::MODULES) with the store code the built-in kind had (1).
//!
//! The store keeps writing ping rounds in its own block layout (flag bits, about 10 bytes a
//! round, since its first version) rather than as module bytes: at 10,000 targets a second
//! that saves the module code, length and version of every round and an allocation per round.
//! It reads them into [`StoredPing`], whose points and values are the module's.
//!
//! A target's ping options are its module options and, for the ping probe, `Target::ping`.

use std::net::IpAddr;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use super::super::Probe;
use super::super::module::{Misfit, ModuleReport, OptionsInput, Rollup, Section, TypedModule};
use super::PingProbe;
use super::series::{self, StoredPing};
use crate::config::{Check, Host, PingOptions, ProbeForm, RawPing, parse_host, read_section};
use crate::defaults as d;
use crate::probe::family_mismatch;
use crate::sample::{Measurement, PingReport};
use crate::series::{CounterDef, Gauge, HistogramDef, Point};
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
    const NAME: &'static str = NAME;
    /// The built-in kind's code, so the store's series dictionary keeps naming ping rounds.
    const STORE_CODE: u8 = 1;
    const DEFAULT_INTERVAL: Duration = d::PING_INTERVAL;
    const PARAMS: &'static [&'static str] = &["ip_protocol"];
    const GAUGES: &'static [&'static Gauge] = &series::GAUGES;
    const HISTOGRAMS: &'static [HistogramDef] = &[series::RTT_HISTOGRAM];
    const COUNTERS: &'static [CounterDef] = &series::COUNTERS;

    fn form(&self) -> ProbeForm {
        crate::config::form::ping()
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
    fn rollup(&self, bytes: &[u8]) -> Rollup {
        Rollup {
            time_us: StoredPing::decode(bytes).and_then(|s| s.time_us()),
            mark: None,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::ProbeModule;

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
        let back = m.report_from_json(crate::probe::Report::json(&report()));
        assert_eq!(back.unwrap().get::<PingReport>(), Some(&report()));
        assert_eq!(ProbeModule::form(&Ping).kind, "ping");
        assert_eq!(m.store_code(), 1);
    }
}
