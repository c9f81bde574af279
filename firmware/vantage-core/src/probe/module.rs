//! A probe kind as one module: its options, run, report, series, store encoding, `/probe`
//! parameters and form, behind one object-safe trait. The crates that store, show and serve
//! rounds stay generic over kinds: they ask [`MODULES`](super::registry::MODULES) what a kind
//! does.
//!
//! Adding a kind is a file that implements [`TypedModule`] (over its own options and report
//! types; [`ProbeModule`] follows) and one line in `MODULES`.

use std::fmt::Debug;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use toml::de::DeTable;

use super::live::LiveRun;
pub use super::report::{ModuleReport, Report};
use super::round::Probe;
pub use crate::config::check::Section;
use crate::config::check::{Check, read_section};
use crate::config::error::Collector;
use crate::config::form::ProbeForm;
use crate::config::host::Host;
pub use crate::config::target::{ModuleOptions, Options};
use crate::series::{CounterDef, Gauge, HistogramDef, InfoFamily, Point};
use crate::types::{IpProtocol, ModuleId};

/// What a module is given to resolve its options for one target.
#[derive(Debug)]
pub struct OptionsInput<'a, 't> {
    /// Where errors point: `targets[3].tcp`.
    pub path: &'a str,
    /// The target's own section, and `[defaults.KIND]`.
    pub own: Option<&'a Section<'t>>,
    pub defaults: Option<&'a Section<'t>>,
    /// Where the target's table is, for errors about a missing setting.
    pub target_span: std::ops::Range<usize>,
    /// The target's host, when it parsed; with its place in the file.
    pub host: Option<(&'a Host, std::ops::Range<usize>)>,
}

/// Why a round does not fit its interval: the setting to blame (a key of the kind's section,
/// found in the target's section or else in `[defaults.KIND]`; `None`: the section), and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Misfit {
    pub setting: Option<&'static str>,
    pub message: String,
}

/// Phases a kind's round is split into, at most ([`ProbeModule::phases`]).
pub const MAX_PHASES: usize = 5;

/// What a range of rounds keeps of one stored round, besides its success.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rollup {
    /// The round's main time, µs (DNS: the lookup), whose distribution the range keeps.
    pub time_us: Option<u64>,
    /// The round's outcome as one number (DNS: the rcode), whose changes the range counts.
    pub mark: Option<u32>,
    /// The time of each of the kind's phases ([`ProbeModule::phases`], in that order), µs;
    /// `None` for a phase the round did not have. The range keeps each phase's mean.
    pub phases_us: [Option<u64>; MAX_PHASES],
}

/// Who answered a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(untagged)]
pub enum Peer {
    Ip(IpAddr),
    Socket(std::net::SocketAddr),
}

/// What the page's status card shows of one round, read from the report as it comes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Glance {
    /// The round's main time ([`ProbeModule::figure`]): what [`Rollup::time_us`] keeps of
    /// the stored round.
    pub time: Option<Duration>,
    /// Packets or attempts sent, and how many of them were lost, for a kind that counts loss.
    pub loss: Option<(u32, u32)>,
    pub peer: Option<Peer>,
    /// The answer in a few words (`NOERROR, 2 answers`, `HTTP 200`).
    pub detail: Option<String>,
}

/// What the store keeps of a round beyond its figures, written only when it changes: a
/// trace's hop addresses (once per path), a DNS answer's records (the latest one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detail {
    /// Which detail of the series this is: details of one key replace each other (trace: the
    /// path hash, so each path is kept once; DNS: one key, the latest answer).
    pub key: u32,
    /// Identifies the content: the store writes the detail when the series' key or
    /// fingerprint differs from the last one it wrote (a DNS answer whose TTLs counted down
    /// is the same answer).
    pub fingerprint: u64,
    /// The module's encoding, starting with its format version ([`ProbeModule::detail_json`]
    /// reads it).
    pub bytes: Vec<u8>,
}

/// Format version of a [`fields_detail`].
const FIELDS_VERSION: u8 = 1;

/// The detail of a kind whose latest report is a few fields (TCP, HTTP: status, TLS version,
/// certificate expiry): those of `fields` the report's JSON has, under one key, as JSON after a
/// format version; it changes when one of them does.
pub(crate) fn fields_detail(report: &impl Report, fields: &[&str]) -> Detail {
    let all = report.json();
    let kept: serde_json::Map<String, serde_json::Value> = fields
        .iter()
        .filter_map(|f| Some((f.to_string(), all.get(f).filter(|v| !v.is_null())?.clone())))
        .collect();
    let json = serde_json::Value::Object(kept).to_string();
    let mut h = std::hash::DefaultHasher::new();
    std::hash::Hash::hash(&json, &mut h);
    let mut bytes = vec![FIELDS_VERSION];
    bytes.extend_from_slice(json.as_bytes());
    Detail {
        key: 0,
        fingerprint: std::hash::Hasher::finish(&h),
        bytes,
    }
}

/// A [`fields_detail`]'s fields as JSON; `None` for bytes of another version or damaged.
pub(crate) fn fields_json(bytes: &[u8]) -> Option<serde_json::Value> {
    match bytes.split_first()? {
        (&FIELDS_VERSION, json) => serde_json::from_slice(json).ok(),
        _ => None,
    }
}

/// What the target page makes of a kind's stored details ([`ProbeModule::detail`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DetailUse {
    /// The kind keeps none.
    None,
    /// One per mark, the detail's key being the mark (trace: each path's hops by its path
    /// hash): a range lists those of the marks it names under this field.
    PerMark(&'static str),
    /// The latest report's detail, under one key: shown as the last report until the first
    /// round after a start.
    LastReport,
}

/// What `/probe` asks of a module: the `target` parameter and the other query parameters.
pub struct ProbeQuery<'a> {
    pub target: &'a str,
    pub param: &'a dyn Fn(&str) -> Option<&'a str>,
    /// The device's own command line, not a network client: it may name local files.
    pub trusted: bool,
}

impl std::fmt::Debug for ProbeQuery<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProbeQuery")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// A module's options from `/probe` parameters (`key = value` of its section), judged by the
/// config's own rules; the first problem, with its field, for a 400.
pub fn module_options_from(
    m: ModuleId,
    section: toml::Table,
    host: Option<&Host>,
) -> Result<std::sync::Arc<dyn Options>, String> {
    let name = m.module().name();
    let mut root = toml::Table::new();
    root.insert(name.to_string(), toml::Value::Table(section));
    let text = toml::to_string(&root).map_err(|e| e.to_string())?;
    let doc = DeTable::parse(&text).map_err(|e| e.message().to_string())?;
    let span = doc.span();
    let sec = doc.into_inner().remove(name);
    let mut col = Collector::new(&text);
    let input = OptionsInput {
        path: name,
        own: sec.as_ref(),
        defaults: None,
        target_span: span.clone(),
        host: host.map(|h| (h, span)),
    };
    let options = m.module().options(&mut Check { col: &mut col }, &input);
    match (options, col.errors.first()) {
        (Some(o), None) => Ok(o),
        (_, Some(e)) => Err(format!("{}: {}", e.field, e.message)),
        (None, None) => Err(format!("{name}: invalid options")),
    }
}

/// One probe kind. Everything the other crates need of a kind goes through here.
pub trait ProbeModule: Send + Sync + Debug {
    /// `probes = ["NAME"]`, the `NAME = {...}` section, `probe="NAME"`, `module=NAME`.
    fn name(&self) -> &'static str;
    /// The kind's code in the store's series dictionary and blocks: stable, never reused
    /// (1 to 3 are ping, DNS and trace, the codes they had as built-in kinds).
    fn store_code(&self) -> u8;
    fn default_interval(&self) -> Duration;
    /// The page's target form for the kind.
    fn form(&self) -> ProbeForm;
    /// Validates the kind's section of one target (over `[defaults.NAME]`); errors go to `c`.
    fn options(
        &self,
        c: &mut Check<'_, '_>,
        input: &OptionsInput<'_, '_>,
    ) -> Option<Arc<dyn Options>>;
    /// The longest a round with these options takes; it must be shorter than the interval.
    fn round_length(&self, options: &dyn Options) -> Duration;
    /// Why a round with these options does not fit `interval`, if it does not.
    fn misfit(&self, options: &dyn Options, interval: Duration) -> Option<Misfit>;
    /// The kind's section on a target that does not run the kind (at `path`): a mistake.
    fn unused_section(&self, c: &mut Check<'_, '_>, path: &str, section: &Section<'_>);
    /// `[defaults.KIND]` (at `path`): checked even when no target runs the kind, so that a
    /// mistake there is found before a target starts to use it.
    fn check_defaults(&self, c: &mut Check<'_, '_>, path: &str, section: &Section<'_>);
    /// The prober that runs rounds of this kind.
    fn probe(&self) -> Arc<dyn Probe>;
    /// `/probe?module=NAME&target=...`: the host and options of one round, or a message for 400.
    fn probe_options(&self, q: &ProbeQuery<'_>) -> Result<(Host, Arc<dyn Options>), String>;
    /// The `/probe` parameters the kind reads, besides `target` and `module` (and on the
    /// command line, where the query is trusted, its file settings).
    fn probe_params(&self) -> &'static [&'static str];
    /// The port a round with these options connects to first (`/probe` holds it to
    /// `[probe_endpoint] ports`); `None` for a kind without ports.
    fn port(&self, _options: &dyn Options) -> Option<u16> {
        None
    }
    /// Parameters only the command line may set (they name files on the device).
    fn trusted_params(&self) -> &'static [&'static str] {
        &[]
    }
    /// The address family a round with these options uses for a name (`/probe` reports the
    /// address it looked up of that family).
    fn ip_protocol(&self, _options: &dyn Options) -> IpProtocol {
        IpProtocol::Auto
    }
    /// Whether the kind takes `host = "system"` (the device's own resolvers).
    fn takes_system_host(&self) -> bool {
        false
    }
    /// The target name of a `/probe` round to `host`.
    fn probe_round_name(&self, _host: &Host, _options: &dyn Options) -> String {
        PROBE_ROUND_NAME.into()
    }
    /// How the page's "Run now" runs the kind live; `None`: it does not.
    fn live(&self) -> Option<&'static dyn LiveRun> {
        None
    }
    /// The command line's text for rounds of one target to `host` run one after another (each
    /// round's report, in order); `None`: the command prints each round as JSON.
    fn text(
        &self,
        _host: &str,
        _options: &dyn Options,
        _rounds: &[ModuleReport],
    ) -> Option<String> {
        None
    }
    /// Every per-round gauge the kind shows, besides `vantage_probe_success` and
    /// `vantage_probe_duration_seconds`.
    fn gauges(&self) -> &'static [&'static Gauge];
    /// The report's figures as stored (µs resolution), starting with their format version.
    fn encode(&self, report: &dyn Report, out: &mut Vec<u8>);
    /// The points of a stored round ([`Self::encode`]'s bytes); none for bytes it cannot read.
    fn points(&self, stored: &[u8], out: &mut Vec<Point>);
    /// The points before the first round: every series that does not depend on one, at 0.
    fn initial_points(&self, out: &mut Vec<Point>);
    /// The histograms the daemon keeps from rounds, and what a round adds to each (by index).
    fn histograms(&self) -> &'static [HistogramDef];
    fn observe(&self, report: &dyn Report, add: &mut dyn FnMut(usize, f64));
    /// The counters the daemon keeps from rounds, and what a round adds to each (by index).
    fn counters(&self) -> &'static [CounterDef];
    fn count(&self, report: &dyn Report, add: &mut dyn FnMut(usize, u64));
    /// The info families the daemon keeps from a target's last round, and each series a round
    /// shows: (family index, label values in the family's label order), in exposition order.
    fn info_families(&self) -> &'static [InfoFamily];
    fn info(&self, report: &dyn Report, add: &mut dyn FnMut(usize, Vec<String>));
    /// The named values of a stored round (the store's query answers), without the success
    /// and duration every round has.
    fn values(&self, stored: &[u8], out: &mut Vec<(&'static str, f64)>);
    /// What a range of rounds keeps of a stored round: its main time and its mark.
    fn rollup(&self, stored: &[u8]) -> Rollup;
    /// What the round's main time is called on the page (`RTT`, `lookup`).
    fn figure(&self) -> &'static str;
    /// The round at a glance, for the page's status card.
    fn glance(&self, report: &dyn Report) -> Glance;
    /// What the store keeps of this round beyond its figures, if anything ([`Detail`]).
    fn detail(&self, _report: &dyn Report) -> Option<Detail> {
        None
    }
    /// A stored [`Detail`]'s bytes as JSON: a trace path's hops; a DNS answer in the shape of
    /// the report's JSON. `None` for bytes it cannot read.
    fn detail_json(&self, _bytes: &[u8]) -> Option<serde_json::Value> {
        None
    }
    /// What the page makes of the details.
    fn detail_use(&self) -> DetailUse;
    /// Whether the kind's rounds have marks, whose changes a range of rounds shows.
    fn keeps_marks(&self) -> bool;
    /// Whether a range of the kind's rounds lists each hop's figures (trace: mtr's columns
    /// per TTL, which the store sums per minute).
    fn keeps_hops(&self) -> bool;
    /// A mark as the page shows it.
    fn mark_name(&self, mark: u32) -> String;
    /// The phases a round is split into, in the order they happen (at most [`MAX_PHASES`]),
    /// declared once per kind: the page names and draws them, and [`Rollup::phases_us`] gives
    /// their times in this order, which the store sums per minute. None for a kind without.
    fn phases(&self) -> &'static [&'static str];
    /// A report from its JSON (the shape [`Report::json`] writes; a field left out takes its
    /// default), for a crate that holds rounds of every kind without naming any kind's types.
    fn report_from_json(&self, json: serde_json::Value) -> Result<ModuleReport, String>;
}

/// The target name of a `/probe` round, for a kind that does not name it.
const PROBE_ROUND_NAME: &str = "probe";

/// A probe kind written against its own options and report types: what is the kind's own and
/// nothing else. [`ProbeModule`] follows for every one (the downcasts and the `/probe`
/// parameter loop are written once, here).
pub(crate) trait TypedModule: Send + Sync + Debug + 'static {
    type Options: Options;
    type Report: Report + serde::de::DeserializeOwned;
    /// The kind's section as written (a target's, or `[defaults.KIND]`), before defaults.
    type Raw: serde::de::DeserializeOwned;
    /// [`ProbeModule::name`].
    const NAME: &'static str;
    /// [`ProbeModule::store_code`].
    const STORE_CODE: u8;
    const DEFAULT_INTERVAL: Duration;
    /// The `/probe` parameters the kind reads, each the option of the same name.
    const PARAMS: &'static [&'static str];
    /// Parameters only the command line may set (they name files on the device).
    const TRUSTED_PARAMS: &'static [&'static str] = &[];
    const GAUGES: &'static [&'static Gauge];
    const HISTOGRAMS: &'static [HistogramDef] = &[];

    fn form(&self) -> ProbeForm;
    fn options(&self, c: &mut Check<'_, '_>, input: &OptionsInput<'_, '_>)
    -> Option<Self::Options>;
    fn round_length(&self, options: &Self::Options) -> Duration;
    /// [`ProbeModule::misfit`]; by default the round length against the interval.
    fn misfit(&self, options: &Self::Options, interval: Duration) -> Option<Misfit> {
        let length = self.round_length(options);
        (length >= interval).then(|| Misfit {
            setting: None,
            message: format!(
                "a {} round takes up to {}, longer than the interval ({}); shorten its timeout or send fewer attempts",
                Self::NAME,
                humantime::format_duration(length),
                humantime::format_duration(interval)
            ),
        })
    }
    /// [`ProbeModule::unused_section`]; by default the section itself is the mistake.
    fn unused_section(&self, c: &mut Check<'_, '_>, path: &str, section: &Section<'_>) {
        let msg = format!("is set but {:?} is not in probes", Self::NAME);
        c.err(Some(section.span()), path, msg);
    }
    fn probe(&self) -> Arc<dyn Probe>;
    /// `/probe`'s `target`: the host, and the section the other parameters are added to.
    fn probe_target(&self, target: &str) -> Result<(Host, toml::Table), String>;
    /// A `/probe` parameter as its option's TOML value; a string unless the kind says otherwise.
    fn probe_param(&self, _name: &str, value: &str) -> Result<toml::Value, String> {
        Ok(toml::Value::String(value.to_string()))
    }
    fn port(&self, _options: &Self::Options) -> Option<u16> {
        None
    }
    /// [`ProbeModule::ip_protocol`].
    fn ip_protocol(&self, _options: &Self::Options) -> IpProtocol {
        IpProtocol::Auto
    }
    /// [`ProbeModule::takes_system_host`].
    const SYSTEM_HOST: bool = false;
    /// [`ProbeModule::probe_round_name`]; a kind that compares a round with the last one to
    /// the same target (a trace's path) names it after what makes two rounds comparable.
    fn probe_round_name(&self, _host: &Host, _options: &Self::Options) -> String {
        PROBE_ROUND_NAME.into()
    }
    /// [`ProbeModule::live`].
    const LIVE: Option<&'static dyn LiveRun> = None;
    /// [`ProbeModule::text`].
    fn text(
        &self,
        _host: &str,
        _options: &Self::Options,
        _rounds: &[&Self::Report],
    ) -> Option<String> {
        None
    }
    fn encode(&self, report: &Self::Report, out: &mut Vec<u8>);
    fn points(&self, stored: &[u8], out: &mut Vec<Point>);
    fn initial_points(&self, out: &mut Vec<Point>);
    fn observe(&self, _report: &Self::Report, _add: &mut dyn FnMut(usize, f64)) {}
    /// [`ProbeModule::counters`] and what a round adds to each.
    const COUNTERS: &'static [CounterDef] = &[];
    fn count(&self, _report: &Self::Report, _add: &mut dyn FnMut(usize, u64)) {}
    /// [`ProbeModule::info_families`] and the series a round shows.
    const INFO: &'static [InfoFamily] = &[];
    fn info(&self, _report: &Self::Report, _add: &mut dyn FnMut(usize, Vec<String>)) {}
    fn values(&self, _stored: &[u8], _out: &mut Vec<(&'static str, f64)>) {}
    fn rollup(&self, _stored: &[u8]) -> Rollup {
        Rollup::default()
    }
    /// [`ProbeModule::figure`].
    const FIGURE: &'static str;
    /// [`ProbeModule::glance`].
    fn glance(&self, report: &Self::Report) -> Glance;
    /// [`ProbeModule::detail`].
    fn detail(&self, _report: &Self::Report) -> Option<Detail> {
        None
    }
    /// [`ProbeModule::detail_json`].
    fn detail_json(&self, _bytes: &[u8]) -> Option<serde_json::Value> {
        None
    }
    /// [`ProbeModule::detail_use`].
    const DETAIL_USE: DetailUse = DetailUse::None;
    /// [`ProbeModule::keeps_marks`].
    const MARKS: bool = false;
    /// [`ProbeModule::keeps_hops`].
    const HOPS: bool = false;
    /// [`ProbeModule::phases`].
    const PHASES: &'static [&'static str] = &[];
    fn mark_name(&self, mark: u32) -> String {
        format!("{mark:08x}")
    }
}

impl<T: TypedModule> ProbeModule for T {
    fn name(&self) -> &'static str {
        T::NAME
    }
    fn store_code(&self) -> u8 {
        T::STORE_CODE
    }
    fn default_interval(&self) -> Duration {
        T::DEFAULT_INTERVAL
    }
    fn form(&self) -> ProbeForm {
        TypedModule::form(self)
    }
    fn options(
        &self,
        c: &mut Check<'_, '_>,
        input: &OptionsInput<'_, '_>,
    ) -> Option<Arc<dyn Options>> {
        TypedModule::options(self, c, input).map(|o| Arc::new(o) as Arc<dyn Options>)
    }
    fn round_length(&self, o: &dyn Options) -> Duration {
        o.as_any()
            .downcast_ref::<T::Options>()
            .map_or(Duration::ZERO, |o| TypedModule::round_length(self, o))
    }
    fn unused_section(&self, c: &mut Check<'_, '_>, path: &str, section: &Section<'_>) {
        TypedModule::unused_section(self, c, path, section);
    }
    fn check_defaults(&self, c: &mut Check<'_, '_>, path: &str, section: &Section<'_>) {
        read_section::<T::Raw>(c, section, path);
    }
    fn misfit(&self, o: &dyn Options, interval: Duration) -> Option<Misfit> {
        TypedModule::misfit(self, o.as_any().downcast_ref::<T::Options>()?, interval)
    }
    fn probe(&self) -> Arc<dyn Probe> {
        TypedModule::probe(self)
    }
    fn probe_options(&self, q: &ProbeQuery<'_>) -> Result<(Host, Arc<dyn Options>), String> {
        foreign_params(T::NAME, q)?;
        let (host, mut section) = self.probe_target(q.target)?;
        if host.is_system() && !T::SYSTEM_HOST {
            let kinds = in_words(&kind_names(|m| m.takes_system_host()), "or");
            return Err(format!("target \"system\" only works with module={kinds}"));
        }
        let trusted = if q.trusted { T::TRUSTED_PARAMS } else { &[] };
        for &p in T::PARAMS.iter().chain(trusted) {
            if let Some(v) = (q.param)(p) {
                section.insert(p.into(), self.probe_param(p, v)?);
            }
        }
        let options = module_options_from(ModuleId(T::NAME), section, Some(&host))?;
        Ok((host, options))
    }
    fn probe_params(&self) -> &'static [&'static str] {
        T::PARAMS
    }
    fn port(&self, o: &dyn Options) -> Option<u16> {
        TypedModule::port(self, o.as_any().downcast_ref::<T::Options>()?)
    }
    fn trusted_params(&self) -> &'static [&'static str] {
        T::TRUSTED_PARAMS
    }
    fn ip_protocol(&self, o: &dyn Options) -> IpProtocol {
        o.as_any()
            .downcast_ref::<T::Options>()
            .map_or(IpProtocol::Auto, |o| TypedModule::ip_protocol(self, o))
    }
    fn takes_system_host(&self) -> bool {
        T::SYSTEM_HOST
    }
    fn probe_round_name(&self, host: &Host, o: &dyn Options) -> String {
        match o.as_any().downcast_ref::<T::Options>() {
            Some(o) => TypedModule::probe_round_name(self, host, o),
            None => PROBE_ROUND_NAME.into(),
        }
    }
    fn live(&self) -> Option<&'static dyn LiveRun> {
        T::LIVE
    }
    fn text(&self, host: &str, o: &dyn Options, rounds: &[ModuleReport]) -> Option<String> {
        let o = o.as_any().downcast_ref::<T::Options>()?;
        let reports: Vec<&T::Report> = rounds.iter().filter_map(|r| r.get()).collect();
        TypedModule::text(self, host, o, &reports)
    }
    fn gauges(&self) -> &'static [&'static Gauge] {
        T::GAUGES
    }
    fn encode(&self, report: &dyn Report, out: &mut Vec<u8>) {
        if let Some(r) = report.as_any().downcast_ref::<T::Report>() {
            TypedModule::encode(self, r, out);
        }
    }
    fn points(&self, stored: &[u8], out: &mut Vec<Point>) {
        TypedModule::points(self, stored, out);
    }
    fn initial_points(&self, out: &mut Vec<Point>) {
        TypedModule::initial_points(self, out);
    }
    fn histograms(&self) -> &'static [HistogramDef] {
        T::HISTOGRAMS
    }
    fn observe(&self, report: &dyn Report, add: &mut dyn FnMut(usize, f64)) {
        if let Some(r) = report.as_any().downcast_ref::<T::Report>() {
            TypedModule::observe(self, r, add);
        }
    }
    fn counters(&self) -> &'static [CounterDef] {
        T::COUNTERS
    }
    fn count(&self, report: &dyn Report, add: &mut dyn FnMut(usize, u64)) {
        if let Some(r) = report.as_any().downcast_ref::<T::Report>() {
            TypedModule::count(self, r, add);
        }
    }
    fn info_families(&self) -> &'static [InfoFamily] {
        T::INFO
    }
    fn info(&self, report: &dyn Report, add: &mut dyn FnMut(usize, Vec<String>)) {
        if let Some(r) = report.as_any().downcast_ref::<T::Report>() {
            TypedModule::info(self, r, add);
        }
    }
    fn values(&self, stored: &[u8], out: &mut Vec<(&'static str, f64)>) {
        TypedModule::values(self, stored, out);
    }
    fn rollup(&self, stored: &[u8]) -> Rollup {
        TypedModule::rollup(self, stored)
    }
    fn figure(&self) -> &'static str {
        T::FIGURE
    }
    fn glance(&self, report: &dyn Report) -> Glance {
        report
            .as_any()
            .downcast_ref::<T::Report>()
            .map(|r| TypedModule::glance(self, r))
            .unwrap_or_default()
    }
    fn detail(&self, report: &dyn Report) -> Option<Detail> {
        TypedModule::detail(self, report.as_any().downcast_ref::<T::Report>()?)
    }
    fn detail_json(&self, bytes: &[u8]) -> Option<serde_json::Value> {
        TypedModule::detail_json(self, bytes)
    }
    fn detail_use(&self) -> DetailUse {
        T::DETAIL_USE
    }
    fn keeps_marks(&self) -> bool {
        T::MARKS
    }
    fn keeps_hops(&self) -> bool {
        T::HOPS
    }
    fn mark_name(&self, mark: u32) -> String {
        TypedModule::mark_name(self, mark)
    }
    fn phases(&self) -> &'static [&'static str] {
        const {
            assert!(
                T::PHASES.len() <= MAX_PHASES,
                "more phases than Rollup holds"
            )
        };
        T::PHASES
    }
    fn report_from_json(&self, json: serde_json::Value) -> Result<ModuleReport, String> {
        let report: T::Report =
            serde_json::from_value(json).map_err(|e| format!("{} report: {e}", T::NAME))?;
        Ok(ModuleReport::new(ModuleId(T::NAME), report))
    }
}

/// A `/probe` parameter another kind reads, given to kind `own`: a mistake, named with the
/// kinds that read it.
fn foreign_params(own: &str, q: &ProbeQuery<'_>) -> Result<(), String> {
    let reads = |m: &dyn ProbeModule, p: &str| m.probe_params().contains(&p);
    for m in ModuleId::all().map(ModuleId::module) {
        for &p in m.probe_params() {
            if m.name() == own || (q.param)(p).is_none() {
                continue;
            }
            if ModuleId::by_name(own).is_some_and(|o| reads(o.module(), p)) {
                continue;
            }
            let kinds = kind_names(|k| reads(k, p));
            let only = if kinds.len() == 1 { " only" } else { "" };
            return Err(format!(
                "{p} applies to module={}{only}",
                in_words(&kinds, "and")
            ));
        }
    }
    Ok(())
}

/// The names of the kinds `which` picks, in registration order.
pub fn kind_names(which: impl Fn(&dyn ProbeModule) -> bool) -> Vec<&'static str> {
    ModuleId::all()
        .map(ModuleId::module)
        .filter(|m| which(*m))
        .map(|m| m.name())
        .collect()
}

/// Names as a list in words: `ping, tcp and http` (`conj`: the last word).
pub fn in_words(names: &[&str], conj: &str) -> String {
    match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} {conj} {last}", rest.join(", ")),
        Some((last, _)) => (*last).to_string(),
        None => String::new(),
    }
}

/// A `/probe` parameter that is a boolean option: `true`/`1` or `false`/`0`.
pub(crate) fn bool_param(name: &str, value: &str) -> Result<toml::Value, String> {
    match value {
        "true" | "1" => Ok(toml::Value::Boolean(true)),
        "false" | "0" => Ok(toml::Value::Boolean(false)),
        _ => Err(format!("{name}: {value:?} is not true or false")),
    }
}

/// A `/probe` parameter that is a whole-number option.
pub(crate) fn int_param(name: &str, value: &str) -> Result<toml::Value, String> {
    value
        .parse()
        .map(toml::Value::Integer)
        .map_err(|_| format!("{name}: {value:?} is not a whole number"))
}

/// Whether `ip` and the wanted family disagree, for the family checks modules share.
pub fn family_mismatch(p: IpProtocol, ip: IpAddr) -> bool {
    (p == IpProtocol::Ipv4 && ip.is_ipv6()) || (p == IpProtocol::Ipv6 && ip.is_ipv4())
}
