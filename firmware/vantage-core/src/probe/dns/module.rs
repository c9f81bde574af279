//! The DNS probe as a probe module: its options, form, `/probe` parameters, series, counters,
//! store encoding and rollup behind [`TypedModule`], registered in
//! [`MODULES`](super::super::registry::MODULES) with the store code the built-in kind had (2).
//!
//! Blocks written before (versions 1 to 4) keep DNS rounds in the store's built-in figures;
//! the store reads them into this module's encoding. Still outside: the blackbox names `/probe`
//! gives a DNS round, and the `vantage dns` command line (dig-like, its own flags), which runs
//! [`DnsProbe`] itself.

use std::sync::Arc;
use std::time::Duration;

use super::super::module::{
    Detail, DetailUse, Glance, Misfit, ModuleReport, OptionsInput, Peer, Rollup, Section,
    TypedModule, int_param,
};
use super::super::round::Probe;
use super::options::{DnsOptions, DnsTransport, RawDns};
use super::options::{KIND, NAME};
use super::report::DnsReport;
use super::run::DnsProbe;
use super::series::{self, StoredDns};
use crate::config::check::{Check, read_section};
use crate::config::form::{Input, ProbeForm};
use crate::config::form::{choice, duration, integer, text};
use crate::config::host::{Host, parse_host};
use crate::defaults as d;
use crate::sample::Measurement;
use crate::series::{CounterDef, Gauge, HistogramDef, Point};
use crate::types::ProbeKind;

impl ProbeKind {
    /// The DNS probe module's kind.
    pub const DNS: ProbeKind = ProbeKind::Module(KIND);
}

impl From<DnsReport> for Measurement {
    fn from(r: DnsReport) -> Self {
        Measurement::Module(ModuleReport::new(KIND, r))
    }
}

impl Measurement {
    /// The DNS report of a DNS round.
    pub fn dns(&self) -> Option<&DnsReport> {
        match self {
            Measurement::Module(r) => r.get(),
            _ => None,
        }
    }
}

/// `/probe` parameters of module=dns, each the option of the same name.
const PARAMS: [&str; 4] = ["query", "type", "transport", "port"];

/// The DNS probe module.
#[derive(Debug)]
pub(crate) struct Dns;

impl TypedModule for Dns {
    type Options = DnsOptions;
    type Report = DnsReport;
    type Raw = RawDns;
    const NAME: &'static str = NAME;
    /// The built-in kind's code, so the store's series dictionary keeps naming DNS rounds.
    const STORE_CODE: u8 = 2;
    const DEFAULT_INTERVAL: Duration = d::DNS_INTERVAL;
    const PARAMS: &'static [&'static str] = &PARAMS;
    const GAUGES: &'static [&'static Gauge] = &series::GAUGES;
    const HISTOGRAMS: &'static [HistogramDef] = &[series::LOOKUP_HISTOGRAM];
    const COUNTERS: &'static [CounterDef] = &series::COUNTERS;
    const PHASES: &'static [&'static str] = &series::PHASES;
    const MARKS: bool = true;
    /// `system`: the resolvers of `/etc/resolv.conf`.
    const SYSTEM_HOST: bool = true;

    fn form(&self) -> ProbeForm {
        form()
    }
    fn options(&self, c: &mut Check<'_, '_>, input: &OptionsInput<'_, '_>) -> Option<DnsOptions> {
        options(c, input)
    }
    /// The timeout covers the whole lookup, TCP retry included.
    fn round_length(&self, o: &DnsOptions) -> Duration {
        o.timeout
    }
    /// The timeout, where it was written.
    fn misfit(&self, o: &DnsOptions, interval: Duration) -> Option<Misfit> {
        (o.timeout >= interval).then(|| Misfit {
            setting: Some("timeout"),
            message: format!(
                "the timeout ({}) must be shorter than the interval ({})",
                humantime::format_duration(o.timeout),
                humantime::format_duration(interval)
            ),
        })
    }
    /// Only a query is a mistake without the probe; the section's keys are checked all the same.
    fn unused_section(&self, c: &mut Check<'_, '_>, path: &str, section: &Section<'_>) {
        let raw: Option<RawDns> = read_section(c, section, path);
        if let Some(v) = raw.and_then(|r| r.query) {
            c.err(v.span(), path, "is set but \"dns\" is not in probes");
        }
    }
    fn probe(&self) -> Arc<dyn Probe> {
        Arc::new(DnsProbe::new())
    }
    /// The server to ask: an address, a name or `system`.
    fn probe_target(&self, target: &str) -> Result<(Host, toml::Table), String> {
        let host = parse_host(target).map_err(|m| format!("target {m}"))?;
        Ok((host, toml::Table::new()))
    }
    fn probe_param(&self, name: &str, value: &str) -> Result<toml::Value, String> {
        match name {
            "port" => int_param(name, value),
            _ => Ok(toml::Value::String(value.to_string())),
        }
    }
    fn port(&self, o: &DnsOptions) -> Option<u16> {
        Some(o.port)
    }
    fn encode(&self, r: &DnsReport, out: &mut Vec<u8>) {
        StoredDns::from_report(r).encode(out);
    }
    fn points(&self, bytes: &[u8], out: &mut Vec<Point>) {
        if let Some(s) = StoredDns::decode(bytes) {
            s.points(out);
        }
    }
    fn initial_points(&self, out: &mut Vec<Point>) {
        series::initial_points(out);
    }
    fn observe(&self, r: &DnsReport, add: &mut dyn FnMut(usize, f64)) {
        series::observe(r, add);
    }
    fn count(&self, r: &DnsReport, add: &mut dyn FnMut(usize, u64)) {
        series::count(r, add);
    }
    fn values(&self, bytes: &[u8], out: &mut Vec<(&'static str, f64)>) {
        if let Some(s) = StoredDns::decode(bytes) {
            s.values(out);
        }
    }
    /// The lookup, and the rcode ([`series::NO_RCODE`] without an answer).
    const FIGURE: &'static str = "lookup";
    fn glance(&self, r: &DnsReport) -> Glance {
        Glance {
            time: r.lookup,
            loss: None,
            peer: r.server.map(Peer::Socket),
            detail: r
                .rcode_name()
                .map(|rcode| format!("{rcode}, {} answers", r.answers.len())),
        }
    }
    fn rollup(&self, bytes: &[u8]) -> Rollup {
        StoredDns::decode(bytes).map_or_else(Rollup::default, |s| {
            let [(_, a), (_, b), (_, c), (_, d)] = s.phases();
            Rollup {
                time_us: s.lookup_us,
                mark: Some(s.mark()),
                phases_us: [a, b, c, d, None],
            }
        })
    }
    fn mark_name(&self, mark: u32) -> String {
        series::mark_name(mark)
    }
    const DETAIL_USE: DetailUse = DetailUse::LastReport;
    /// The answer, kept when it changes.
    fn detail(&self, r: &DnsReport) -> Option<Detail> {
        super::detail::detail(r)
    }
    fn detail_json(&self, bytes: &[u8]) -> Option<serde_json::Value> {
        super::detail::detail_json(bytes)
    }
}

/// `dns = {...}` over `[defaults.dns]`, judged with the config's located messages.
pub(crate) fn options(c: &mut Check<'_, '_>, input: &OptionsInput<'_, '_>) -> Option<DnsOptions> {
    let before = c.errors();
    let defaults: Option<RawDns> = input
        .defaults
        .and_then(|v| read_section(c, v, "defaults.dns"));
    let own: Option<RawDns> = input.own.and_then(|v| read_section(c, v, input.path));
    if c.errors() > before {
        return None;
    }
    DnsOptions::resolve(
        c,
        input.path,
        own.as_ref(),
        defaults.as_ref(),
        input.target_span.clone(),
    )
}

/// The page's DNS target form.
pub(crate) fn form() -> ProbeForm {
    let transports = DnsTransport::ALL.iter().map(|t| t.as_str()).collect();
    ProbeForm {
        kind: NAME,
        title: "DNS options",
        host_hint: "the DNS server to ask (\"system\": the resolvers of the device)",
        fields: vec![
            text("query", "Query name", "", Input::Text).hint("the name to ask for (required)"),
            text("type", "Record type", "A", Input::Text).hint("A, AAAA, MX, TXT, NS, SOA, PTR, …"),
            choice("transport", "Transport", transports),
            integer("port", "Port", d::PORT_RANGE, "the transport's".into())
                .hint("53; 853 for tls, 443 for https"),
            duration("timeout", "Timeout", d::TIMEOUT_RANGE, d::DNS_TIMEOUT)
                .hint("for the whole lookup"),
            integer(
                "min_answers",
                "Minimum answers",
                d::DNS_MIN_ANSWERS_RANGE,
                "0".into(),
            )
            .hint("fewer fails the probe"),
            text(
                "answer_contains",
                "Answers that must be present",
                "",
                Input::Lines,
            )
            .hint("one per line: an address, name or text the answer must contain"),
        ],
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::probe::dns::report::DnsPhases;
    use crate::probe::module::{ProbeModule, Report};

    fn report() -> DnsReport {
        DnsReport {
            rcode: Some(3),
            authority_records: 1,
            lookup: Some(Duration::from_micros(20_000)),
            phases: DnsPhases {
                request: Some(Duration::from_micros(19_500)),
                ..DnsPhases::default()
            },
            truncated_retry: true,
            ..DnsReport::default()
        }
    }

    /// What the store keeps of a round is what the built-in figures kept, so a stored round
    /// shows the same points whichever encoding it was written in.
    #[test]
    fn a_stored_round_shows_the_built_in_figures_points() {
        let mut bytes = Vec::new();
        ProbeModule::encode(&Dns, &report(), &mut bytes);
        let mut from_module = Vec::new();
        ProbeModule::points(&Dns, &bytes, &mut from_module);
        let mut built_in = Vec::new();
        StoredDns::from_report(&report()).points(&mut built_in);
        assert_eq!(from_module, built_in);
        assert!(
            from_module
                .iter()
                .any(|p| p.gauge == &series::LOOKUP && p.value == 0.02)
        );
        let mut none = Vec::new();
        ProbeModule::points(&Dns, &bytes[..1], &mut none);
        assert!(none.is_empty());
    }

    /// The report goes to JSON and back whole, the rcode as its mnemonic.
    #[test]
    fn the_report_reads_back_from_its_json() {
        for rcode in [Some(3), Some(3000), None] {
            let r = DnsReport { rcode, ..report() };
            let json = Report::json(&r);
            let back = Dns.report_from_json(json.clone()).expect("reads back");
            assert_eq!(back.get::<DnsReport>(), Some(&r), "{json}");
        }
        assert!(
            Dns.report_from_json(serde_json::json!({"rcode": "OOPS"}))
                .is_err()
        );
    }

    /// Counters, named values and the rollup of a round go through the module trait.
    #[test]
    fn counters_values_and_the_rollup_mark_come_through_the_module() {
        let m: &dyn ProbeModule = &Dns;
        let names: Vec<&str> = m.counters().iter().map(|c| c.name).collect();
        assert_eq!(names, series::COUNTERS.map(|c| c.name));
        let mut added = Vec::new();
        m.count(&report(), &mut |i, n| added.push((i, n)));
        assert_eq!(added, [(0, 0), (1, 1), (2, 0)]);
        let mut bytes = Vec::new();
        m.encode(&report(), &mut bytes);
        let mut values = Vec::new();
        m.values(&bytes, &mut values);
        assert!(values.contains(&("rcode", 3.0)), "{values:?}");
        assert!(values.contains(&("lookup_seconds", 0.02)), "{values:?}");
        let r = m.rollup(&bytes);
        assert_eq!((r.time_us, r.mark), (Some(20_000), Some(3)));
        // Only the request happened; the phases in the module's order.
        assert_eq!(m.phases(), ["resolve", "connect", "tls", "request"]);
        assert_eq!(r.phases_us, [None, None, None, Some(19_500), None]);
        assert!(m.keeps_marks());
        assert_eq!(m.mark_name(3), "NXDOMAIN");
        assert_eq!(m.mark_name(series::NO_RCODE), "no answer");
        let mut silent = Vec::new();
        m.encode(&DnsReport::default(), &mut silent);
        assert_eq!(m.rollup(&silent).mark, Some(series::NO_RCODE));
        assert_eq!(m.rollup(&[]), Rollup::default());
    }

    #[test]
    fn the_form_and_the_round_length_come_from_the_options() {
        assert_eq!(ProbeModule::form(&Dns).kind, "dns");
        let o = DnsOptions::new("example.com", "A").unwrap();
        assert_eq!(ProbeModule::round_length(&Dns, &o), d::DNS_TIMEOUT);
        assert_eq!(ProbeModule::port(&Dns, &o), Some(53));
        let (host, section) = Dns.probe_target("system").unwrap();
        assert!(host.is_system() && section.is_empty());
        assert!(Dns.probe_target("").is_err());
    }
}
