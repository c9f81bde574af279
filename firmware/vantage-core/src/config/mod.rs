//! The config file: one TOML document with `[defaults]` and `[[targets]]`.
//!
//! Loading never stops at the first problem: every target is checked on its own, and all
//! problems come back together, each with its line and field, so `vantage check-config` and the
//! web page can show them all at once.

mod error;
mod fleet;
pub(crate) mod form;
mod host;
mod leds;
mod probe_endpoint;
mod store;

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use error::Collector;
pub use error::{ConfigError, ConfigErrors};
pub use fleet::{Device, Discovery, Provisioning, Secret, Uplink};
pub use form::{Field, Input, ProbeForm, duration_text, probe_forms};
pub use host::{Host, parse_host, split_host_port};
pub use leds::{LedBackendKind, LedConfig, LedRole, LedsConfig, RawLed, RawLeds, check_led_name};
pub use probe_endpoint::{ProbeEndpoint, RawProbeEndpoint};
pub use store::{
    Auth, RawRemoteWrite, RawStore, RemoteWriteConfig, SendMode, StoreConfig, TlsConfig,
    default_name as remote_write_default_name, parse_size,
};

use crate::defaults::{self, self as D, Bounds};
pub use crate::probe::{
    AnswerData, DnsOptions, DnsTransport, DohMethod, Pattern, PingOptions, RawDns, RawPing,
    RawTrace, TraceOptions, parse_doh_path, parse_query, parse_rcode, parse_record_type,
    rcode_name,
};
use crate::probe::{ModuleOptions, OptionsInput, Section};
use crate::types::{IpProtocol, ModuleId, ProbeKind};

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Config {
    pub targets: Vec<Arc<Target>>,
    /// `[store]`: the sample store on the SD card.
    pub store: StoreConfig,
    /// `[[remote_write]]`: where the store's samples are shipped.
    pub remote_write: Vec<RemoteWriteConfig>,
    /// `[device]`: the device's name and the labels on all its series.
    pub device: Device,
    /// `[uplink]`: probing the device's own gateway.
    pub uplink: Uplink,
    /// `[discovery]`: the mDNS announcement.
    pub discovery: Discovery,
    /// `[provisioning]`: extra targets from a URL.
    pub provisioning: Option<Provisioning>,
    /// `[leds]`; without it, no LEDs are driven.
    pub leds: LedsConfig,
    /// `[probe_endpoint]`: what `/probe` may reach.
    pub probe_endpoint: ProbeEndpoint,
}

/// One validated target.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Target {
    pub name: String,
    pub host: Host,
    /// The user's labels, added to every series of this target.
    pub labels: BTreeMap<String, String>,
    /// Enabled probes with their intervals, in the order written.
    pub probes: Vec<(ProbeKind, Duration)>,
    /// The options of each module kind the target runs (as JSON: an object by kind name).
    #[serde(serialize_with = "modules_by_kind")]
    pub modules: Vec<ModuleOptions>,
}

/// A target's module options as JSON: `{"ping": {...}, "dns": {...}}`.
fn modules_by_kind<S: serde::Serializer>(m: &[ModuleOptions], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(Some(m.len()))?;
    for o in m {
        map.serialize_entry(o.kind.module().name(), &o.options.json())?;
    }
    map.end()
}

impl Target {
    pub fn interval(&self, kind: ProbeKind) -> Option<Duration> {
        self.probes
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, i)| *i)
    }

    /// The options of module kind `kind`, when the target runs it.
    pub fn module<T: std::any::Any>(&self, kind: ModuleId) -> Option<&T> {
        self.modules.iter().find(|m| m.kind == kind)?.get()
    }

    /// The options of the kind whose options are a `T` (each kind has its own type): the
    /// target's when it runs the kind, the kind's defaults otherwise (a one-shot round of a
    /// kind the target does not run).
    pub fn options_or_default<T: std::any::Any + Clone + Default>(&self) -> T {
        self.modules
            .iter()
            .find_map(ModuleOptions::get::<T>)
            .cloned()
            .unwrap_or_default()
    }

    /// Sets the options of `kind` (a one-off round with other options than the config's).
    pub fn set_options(&mut self, kind: ProbeKind, options: Arc<dyn crate::probe::Options>) {
        let ProbeKind::Module(m) = kind;
        self.modules.retain(|o| o.kind != m);
        self.modules.push(ModuleOptions { kind: m, options });
    }

    /// The longest a round of `kind` can take with the target's options (none for a kind the
    /// target does not run).
    pub fn round_length(&self, kind: ProbeKind) -> Duration {
        let ProbeKind::Module(m) = kind;
        self.modules
            .iter()
            .find(|o| o.kind == m)
            .map_or(Duration::ZERO, |o| {
                m.module().round_length(o.options.as_ref())
            })
    }
}

/// The sections of module kinds in one table, taken out before the table is read.
type ModuleSections<'t> = Vec<(ModuleId, Section<'t>)>;

/// Removes the sections of module kinds from `table` (a target or `[defaults]`).
fn take_module_sections<'t>(table: &mut DeValue<'t>) -> ModuleSections<'t> {
    let DeValue::Table(t) = table else {
        return Vec::new();
    };
    ModuleId::all()
        .filter_map(|m| Some((m, t.remove(m.0)?)))
        .collect()
}

fn section<'a, 't>(sections: &'a ModuleSections<'t>, m: ModuleId) -> Option<&'a Section<'t>> {
    sections.iter().find(|(k, _)| *k == m).map(|(_, v)| v)
}

/// A module's options from `/probe` parameters (`key = value` of its section), judged by the
/// config's own rules; the first problem, with its field, for a 400.
pub fn module_options_from(
    m: ModuleId,
    section: toml::Table,
    host: Option<&Host>,
) -> Result<std::sync::Arc<dyn crate::probe::Options>, String> {
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

/// A module's section read into its own type, errors located like a target's.
pub fn read_section<T: serde::de::DeserializeOwned>(
    c: &mut Check<'_, '_>,
    v: &Section<'_>,
    path: &str,
) -> Option<T> {
    if !v.get_ref().is_table() {
        c.err(Some(v.span()), path, "must be a table");
        return None;
    }
    match T::deserialize(toml::de::ValueDeserializer::from(v.clone())) {
        Ok(t) => Some(t),
        Err(e) => {
            let field = field_at(v.get_ref(), e.span(), path);
            c.err(e.span().or(Some(v.span())), &field, e.message().trim());
            None
        }
    }
}

/// `[defaults]` as written.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawDefaults {
    /// Interval for every probe that does not set its own.
    pub interval: Option<Spanned<String>>,
}

/// The top level, minus `targets` (each target is read on its own so that one bad target does
/// not hide the problems of the others).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoot {
    #[serde(default)]
    defaults: RawDefaults,
    #[serde(default)]
    device: fleet::RawDevice,
    uplink: Option<fleet::RawUplink>,
    discovery: Option<fleet::RawDiscovery>,
    provisioning: Option<fleet::RawProvisioning>,
    probe_endpoint: Option<RawProbeEndpoint>,
}

/// One `[[targets]]` table as written.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawTarget {
    pub name: Spanned<String>,
    pub host: Spanned<String>,
    pub probes: Spanned<Vec<Spanned<String>>>,
    pub interval: Option<Spanned<String>>,
    #[serde(default)]
    pub labels: BTreeMap<Spanned<String>, Spanned<String>>,
}

/// Label names our own series use; a user label must not shadow them.
const RESERVED_LABELS: &[&str] = &[
    "target", "probe", "hop", "address", "rcode", "endpoint", "job", "instance", "le", "quantile",
    "version", "arch", "phase", "device",
];

/// Sections that only the device's own file may set, not a provisioned one.
const DEVICE_SECTIONS: &[&str] = &[
    "device",
    "uplink",
    "discovery",
    "provisioning",
    "leds",
    "probe_endpoint",
];

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let file = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse(&text, &file),
            Err(e) => Err(ConfigErrors {
                file,
                errors: vec![ConfigError {
                    line: None,
                    column: None,
                    field: String::new(),
                    message: format!("cannot read the file: {e}"),
                }],
            }),
        }
    }

    /// Parses and validates config text; `file` names it in error messages.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigErrors> {
        let mut col = Collector::new(text);
        let config = parse_into(text, &mut col);
        if col.errors.is_empty() {
            Ok(config)
        } else {
            col.errors
                .sort_by_key(|e| (e.line.unwrap_or(0), e.column.unwrap_or(0)));
            // A bad value in [defaults] is found once per target that inherits it: say it once.
            col.errors.dedup();
            Err(ConfigErrors {
                file: file.to_string(),
                errors: col.errors,
            })
        }
    }

    /// Parses a provisioned targets file: `[defaults]` and `[[targets]]` only, since a central
    /// file must not rename the device, change its uplink or point it at another URL.
    pub fn parse_provisioned(text: &str, file: &str) -> Result<Config, ConfigErrors> {
        let mut col = Collector::new(text);
        if let Ok(doc) = DeTable::parse(text) {
            for (k, _) in doc.get_ref().iter() {
                if DEVICE_SECTIONS.contains(&k.get_ref().as_ref()) {
                    col.push(
                        Some(k.span()),
                        k.get_ref().to_string(),
                        "only the device's own config may set this section",
                    );
                }
            }
        }
        if !col.errors.is_empty() {
            return Err(ConfigErrors {
                file: file.to_string(),
                errors: col.errors,
            });
        }
        Config::parse(text, file)
    }

    pub fn target(&self, name: &str) -> Option<&Target> {
        self.targets.iter().find(|t| t.name == name).map(|t| &**t)
    }
}

fn parse_into(text: &str, col: &mut Collector<'_>) -> Config {
    let doc = match DeTable::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            col.push(
                e.span(),
                "",
                format!("TOML syntax error: {}", e.message().trim()),
            );
            return Config::default();
        }
    };
    let doc_span = doc.span();
    let mut root = doc.into_inner();
    let targets_value = root.remove("targets");
    let store_value = root.remove("store");
    let remote_write_value = root.remove("remote_write");
    let leds_value = root.remove("leds");
    let module_defaults = root
        .get_mut("defaults")
        .map(|d| take_module_sections(d.get_mut()))
        .unwrap_or_default();

    let raw_root =
        match RawRoot::deserialize(toml::de::Deserializer::from(Spanned::new(doc_span, root))) {
            Ok(r) => r,
            Err(e) => {
                col.push(e.span(), "", e.message().trim().to_string());
                RawRoot::default()
            }
        };
    let raw_leds = leds_value.and_then(|v| read_leds(col, &v));
    let raw_targets = targets_value
        .map(|v| read_targets(col, v))
        .unwrap_or_default();

    let mut check = Check { col };
    for (m, v) in &module_defaults {
        let path = format!("defaults.{}", m.module().name());
        m.module().check_defaults(&mut check, &path, v);
    }
    let leds = LedsConfig::resolve(&mut check, raw_leds.as_ref());
    let defaults = Defaults {
        raw: &raw_root.defaults,
        modules: &module_defaults,
    };
    // Shared with the runner (and the configs built from this one), not copied.
    let targets = resolve_targets(&mut check, &raw_targets, &defaults)
        .into_iter()
        .map(Arc::new)
        .collect();
    let store = store_value.map_or_else(StoreConfig::default, |v| read_store(&mut check, &v));
    let remote_write = remote_write_value
        .map(|v| read_remote_write(&mut check, v))
        .unwrap_or_default();
    let device = fleet::validate_device(&mut check, &raw_root.device);
    let uplink = fleet::validate_uplink(&mut check, raw_root.uplink.as_ref());
    let discovery = fleet::validate_discovery(raw_root.discovery.as_ref());
    let provisioning = fleet::validate_provisioning(&mut check, raw_root.provisioning.as_ref());
    let probe_endpoint = probe_endpoint::validate(&mut check, raw_root.probe_endpoint.as_ref());
    Config {
        targets,
        store,
        remote_write,
        device,
        uplink,
        discovery,
        provisioning,
        leds,
        probe_endpoint,
    }
}

type Value<'t> = Spanned<DeValue<'t>>;

/// `[leds]`, read on its own so its errors name the field, like a target's.
fn read_leds(col: &mut Collector<'_>, value: &Value<'_>) -> Option<RawLeds> {
    if !value.get_ref().is_table() {
        col.push(Some(value.span()), "leds", "must be a table ([leds])");
        return None;
    }
    match RawLeds::deserialize(toml::de::ValueDeserializer::from(value.clone())) {
        Ok(l) => Some(l),
        Err(e) => {
            let field = field_at(value.get_ref(), e.span(), "leds");
            col.push(
                e.span().or(Some(value.span())),
                field,
                e.message().trim().to_string(),
            );
            None
        }
    }
}

/// A target as written: its index, span, table and module sections.
type WrittenTarget<'t> = (usize, Range<usize>, RawTarget, ModuleSections<'t>);

/// `[defaults]` as written, with its module sections.
struct Defaults<'r, 't> {
    raw: &'r RawDefaults,
    modules: &'r ModuleSections<'t>,
}

/// `[[targets]]` as written, each with its index and span.
fn read_targets<'t>(col: &mut Collector<'_>, value: Value<'t>) -> Vec<WrittenTarget<'t>> {
    let mut raw_targets = Vec::new();
    let span = value.span();
    let DeValue::Array(items) = value.into_inner() else {
        col.push(
            Some(span),
            "targets",
            "must be an array of tables ([[targets]])",
        );
        return raw_targets;
    };
    for (i, item) in items.iter().enumerate() {
        let item_span = item.span();
        if !item.get_ref().is_table() {
            col.push(Some(item_span), format!("targets[{i}]"), "must be a table");
            continue;
        }
        let mut item = item.clone();
        let modules = take_module_sections(item.get_mut());
        match RawTarget::deserialize(toml::de::ValueDeserializer::from(item.clone())) {
            Ok(t) => raw_targets.push((i, item_span, t, modules)),
            Err(e) => {
                let field = field_at(item.get_ref(), e.span(), &format!("targets[{i}]"));
                col.push(
                    e.span().or(Some(item_span)),
                    field,
                    e.message().trim().to_string(),
                );
            }
        }
    }
    if raw_targets.len() > defaults::MAX_TARGETS {
        col.push(
            None,
            "targets",
            format!(
                "{} targets; at most {} are supported",
                raw_targets.len(),
                defaults::MAX_TARGETS
            ),
        );
    }
    raw_targets
}

/// Every valid target, names unique.
fn resolve_targets(
    check: &mut Check<'_, '_>,
    raw_targets: &[WrittenTarget<'_>],
    defaults: &Defaults<'_, '_>,
) -> Vec<Target> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut targets = Vec::with_capacity(raw_targets.len());
    for (i, span, raw, modules) in raw_targets {
        let path = format!("targets[{i}]");
        let at = At {
            path: &path,
            span: span.clone(),
            raw,
            d: defaults.raw,
            modules,
            module_defaults: defaults.modules,
        };
        if let Some(t) = validate_target(check, &at) {
            if let Some(first) = seen.insert(t.name.clone(), *i) {
                check.err(
                    raw.name.span(),
                    &format!("{path}.name"),
                    format!(
                        "{:?} is already the name of targets[{first}]; names must be unique",
                        t.name
                    ),
                );
            } else {
                targets.push(t);
            }
        }
    }
    targets
}

/// `[store]`.
fn read_store(check: &mut Check<'_, '_>, v: &Value<'_>) -> StoreConfig {
    if !v.get_ref().is_table() {
        check.err(Some(v.span()), "store", "must be a table ([store])");
        return StoreConfig::default();
    }
    match RawStore::deserialize(toml::de::ValueDeserializer::from(v.clone())) {
        Ok(raw) => StoreConfig::resolve(check, Some(&raw)),
        Err(e) => {
            let field = field_at(v.get_ref(), e.span(), "store");
            check.err(e.span().or(Some(v.span())), &field, e.message().trim());
            StoreConfig::default()
        }
    }
}

/// `[[remote_write]]`: every valid endpoint, names unique.
fn read_remote_write(check: &mut Check<'_, '_>, value: Value<'_>) -> Vec<RemoteWriteConfig> {
    let mut remote_write: Vec<RemoteWriteConfig> = Vec::new();
    let span = value.span();
    let DeValue::Array(items) = value.into_inner() else {
        check.err(
            Some(span),
            "remote_write",
            "must be an array of tables ([[remote_write]])",
        );
        return remote_write;
    };
    for (i, item) in items.iter().enumerate() {
        let path = format!("remote_write[{i}]");
        let item_span = item.span();
        if !item.get_ref().is_table() {
            check.err(Some(item_span), &path, "must be a table");
            continue;
        }
        let raw = match RawRemoteWrite::deserialize(toml::de::ValueDeserializer::from(item.clone()))
        {
            Ok(r) => r,
            Err(e) => {
                let field = field_at(item.get_ref(), e.span(), &path);
                check.err(e.span().or(Some(item_span)), &field, e.message().trim());
                continue;
            }
        };
        let Some(rw) = RemoteWriteConfig::resolve(check, &path, item_span.clone(), &raw) else {
            continue;
        };
        if let Some(j) = remote_write.iter().position(|o| o.name == rw.name) {
            let what = if raw.name.is_some() { "name" } else { "url" };
            check.err(
                raw.name.as_ref().map(|n| n.span()).or(Some(raw.url.span())),
                &format!("{path}.{what}"),
                format!(
                    "endpoint name {:?} is already used by remote_write[{j}]; give each endpoint its own name",
                    rw.name
                ),
            );
        } else {
            remote_write.push(rw);
        }
    }
    remote_write
}

/// Names the key of `table` whose key or value contains `span`, to say which field a serde
/// error is about. Tables and arrays of tables are followed down (`leds.led[1].colour`); the
/// span of a `[[header]]` table covers only its header, so containment is checked key by key.
fn field_at(table: &DeValue<'_>, span: Option<Range<usize>>, path: &str) -> String {
    let (Some(span), Some(t)) = (span, table.as_table()) else {
        return path.to_string();
    };
    for (k, v) in t.iter() {
        if within(k.span(), &span) || contains(v, &span) {
            let here = format!("{path}.{}", k.get_ref());
            if let Some(items) = v.get_ref().as_array() {
                for (i, item) in items.iter().enumerate() {
                    if contains(item, &span) {
                        return field_at(item.get_ref(), Some(span), &format!("{here}[{i}]"));
                    }
                }
            }
            return if v.get_ref().is_table() {
                field_at(v.get_ref(), Some(span), &here)
            } else {
                here
            };
        }
    }
    path.to_string()
}

fn within(r: Range<usize>, span: &Range<usize>) -> bool {
    r.start <= span.start && span.start < r.end.max(r.start + 1)
}

/// Whether `span` starts inside `v` or anything nested in it.
fn contains(v: &Spanned<DeValue<'_>>, span: &Range<usize>) -> bool {
    if within(v.span(), span) {
        return true;
    }
    match v.get_ref() {
        DeValue::Table(t) => t
            .iter()
            .any(|(k, v)| within(k.span(), span) || contains(v, span)),
        DeValue::Array(a) => a.iter().any(|i| contains(i, span)),
        _ => false,
    }
}

/// The TOS and DSCP settings, which are one setting: a target that sets either replaces the
/// default's pair.
pub(crate) type Marks<'a> = (Option<&'a Spanned<i64>>, Option<&'a Spanned<i64>>);

pub(crate) fn merge_marks<'a, R>(
    target: Option<&'a R>,
    default: Option<&'a R>,
    get: impl Fn(&'a R) -> Marks<'a>,
) -> Marks<'a> {
    match target.map(&get) {
        Some(pair @ ((Some(_), _) | (_, Some(_)))) => pair,
        _ => default.map(&get).unwrap_or((None, None)),
    }
}

/// Picks a target's value, else the default's.
pub(crate) fn merge<'a, R, T: 'a>(
    target: Option<&'a R>,
    default: Option<&'a R>,
    get: impl Fn(&'a R) -> Option<&'a Spanned<T>>,
) -> Option<&'a Spanned<T>> {
    target.and_then(&get).or_else(|| default.and_then(&get))
}

/// One target as written, with what it inherits and where it is.
struct At<'r> {
    path: &'r str,
    span: Range<usize>,
    raw: &'r RawTarget,
    d: &'r RawDefaults,
    modules: &'r ModuleSections<'r>,
    module_defaults: &'r ModuleSections<'r>,
}

impl At<'_> {
    fn field(&self, name: &str) -> String {
        format!("{}.{name}", self.path)
    }
}

fn validate_target(c: &mut Check<'_, '_>, at: &At<'_>) -> Option<Target> {
    let raw = at.raw;
    let before = c.col.errors.len();
    let name = raw.name.get_ref();
    if let Err(msg) = check_name(name) {
        c.err(raw.name.span(), &at.field("name"), msg);
    }
    let host = match parse_host(raw.host.get_ref()) {
        Ok(h) => Some(h),
        Err(msg) => {
            c.err(raw.host.span(), &at.field("host"), msg);
            None
        }
    };
    let kinds = target_kinds(c, at);
    let labels = target_labels(c, at);
    let modules = target_modules(c, at, &kinds, host.as_ref());
    if host.as_ref().is_some_and(Host::is_system) {
        check_system_host(c, at, &kinds);
    }
    // Kept per target for the daemon's life: sized exactly, not in room for four.
    let mut probes = Vec::with_capacity(kinds.len());
    for (kind, _) in &kinds {
        let interval = match interval_setting(at, *kind) {
            Some((v, field)) => c
                .duration_in(&v, &field, D::INTERVAL_RANGE.min, D::INTERVAL_RANGE.max)
                .unwrap_or(default_interval(*kind)),
            None => default_interval(*kind),
        };
        match *kind {
            ProbeKind::Module(m) => check_module_fits(c, at, m, &modules, interval),
        }
        probes.push((*kind, interval));
    }
    if c.col.errors.len() > before {
        return None;
    }
    Some(Target {
        name: name.clone(),
        host: host?,
        labels,
        probes,
        modules,
    })
}

/// The options of each module kind the target runs; a section without its kind is a mistake.
fn target_modules(
    c: &mut Check<'_, '_>,
    at: &At<'_>,
    kinds: &[(ProbeKind, Range<usize>)],
    host: Option<&Host>,
) -> Vec<ModuleOptions> {
    let mut out = Vec::with_capacity(kinds.len());
    for (m, v) in at.modules {
        if !kinds.iter().any(|(k, _)| *k == ProbeKind::Module(*m)) {
            m.module()
                .unused_section(c, &at.field(m.module().name()), v);
        }
    }
    for (kind, _) in kinds {
        let ProbeKind::Module(m) = *kind;
        let input = OptionsInput {
            path: &at.field(m.module().name()),
            own: section(at.modules, m),
            defaults: section(at.module_defaults, m),
            target_span: at.span.clone(),
            host: host.map(|h| (h, at.raw.host.span())),
        };
        if let Some(options) = m.module().options(c, &input) {
            out.push(ModuleOptions { kind: m, options });
        }
    }
    out
}

fn check_module_fits(
    c: &mut Check<'_, '_>,
    at: &At<'_>,
    m: ModuleId,
    modules: &[ModuleOptions],
    interval: Duration,
) {
    let Some(o) = modules.iter().find(|o| o.kind == m) else {
        return;
    };
    let Some(misfit) = m.module().misfit(o.options.as_ref(), interval) else {
        return;
    };
    let name = m.module().name();
    // Point at the setting where it was written: the target's, else the defaults'.
    let written = |s: Option<&Section<'_>>, key: &str| {
        let v = s?.get_ref().as_table()?.get(key)?;
        Some(v.span())
    };
    let own = section(at.modules, m);
    let (span, field) = match misfit.setting {
        None => (own.map_or(at.span.clone(), Section::span), at.field(name)),
        Some(key) => match (
            written(own, key),
            written(section(at.module_defaults, m), key),
        ) {
            (Some(v), _) => (v, at.field(&format!("{name}.{key}"))),
            (None, Some(v)) => (v, format!("defaults.{name}.{key}")),
            (None, None) => (at.span.clone(), at.field(&format!("{name}.{key}"))),
        },
    };
    c.err(Some(span), &field, misfit.message);
}

/// The probe kinds a target lists, each once, with where it was written.
fn target_kinds(c: &mut Check<'_, '_>, at: &At<'_>) -> Vec<(ProbeKind, Range<usize>)> {
    let raw = at.raw;
    let mut kinds: Vec<(ProbeKind, Range<usize>)> = Vec::new();
    if raw.probes.get_ref().is_empty() {
        c.err(
            raw.probes.span(),
            &at.field("probes"),
            format!(
                "must name at least one probe ({})",
                ProbeKind::every()
                    .map(ProbeKind::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
    }
    for p in raw.probes.get_ref() {
        match p.get_ref().parse::<ProbeKind>() {
            Ok(k) if kinds.iter().any(|(seen, _)| *seen == k) => c.err(
                p.span(),
                &at.field("probes"),
                format!("{k:?} is listed twice").to_lowercase(),
            ),
            Ok(k) => kinds.push((k, p.span())),
            Err(msg) => c.err(p.span(), &at.field("probes"), msg),
        }
    }
    kinds
}

fn target_labels(c: &mut Check<'_, '_>, at: &At<'_>) -> BTreeMap<String, String> {
    checked_labels(c, &at.raw.labels, at.path, Some(at.span.clone()))
}

/// A `labels = {...}` table of `path` (`device` or a target), at most
/// [`defaults::MAX_LABELS`], each name and value checked with a message at its place.
pub(crate) fn checked_labels(
    c: &mut Check<'_, '_>,
    raw: &BTreeMap<Spanned<String>, Spanned<String>>,
    path: &str,
    span: Option<Range<usize>>,
) -> BTreeMap<String, String> {
    if raw.len() > defaults::MAX_LABELS {
        c.err(
            span,
            &format!("{path}.labels"),
            format!("{} labels; at most {}", raw.len(), defaults::MAX_LABELS),
        );
    }
    let mut labels = BTreeMap::new();
    for (k, v) in raw {
        let field = format!("{path}.labels.{}", k.get_ref());
        if let Err(msg) = check_label_name(k.get_ref()) {
            c.err(Some(k.span()), &field, msg);
        } else if let Err(msg) = check_label_value(v.get_ref()) {
            c.err(Some(v.span()), &field, msg);
        } else {
            labels.insert(k.get_ref().clone(), v.get_ref().clone());
        }
    }
    labels
}

fn check_system_host(c: &mut Check<'_, '_>, at: &At<'_>, kinds: &[(ProbeKind, Range<usize>)]) {
    let takes = |k: &ProbeKind| k.module().is_some_and(|m| m.takes_system_host());
    let able = crate::probe::in_words(&crate::probe::kind_names(|m| m.takes_system_host()), "or");
    for (kind, span) in kinds.iter().filter(|(k, _)| !takes(k)) {
        c.err(
            Some(span.clone()),
            &at.field("probes"),
            format!(
                "host \"system\" means the system's resolvers, which only the {able} probe can use; the {kind} probe needs an address or hostname"
            ),
        );
    }
}

/// Where a probe's interval is set: its own table, the target, `[defaults.KIND]`, then
/// `[defaults]`; with the field to name in an error.
fn interval_setting(at: &At<'_>, kind: ProbeKind) -> Option<(Spanned<String>, String)> {
    let (raw, d) = (at.raw, at.d);
    let module_interval = |s: Option<&Section<'_>>| -> Option<Spanned<String>> {
        let v = s?.get_ref().as_table()?.get("interval")?;
        Some(Spanned::new(v.span(), v.get_ref().as_str()?.to_string()))
    };
    let (own, inherited) = match kind {
        ProbeKind::Module(m) => (
            module_interval(section(at.modules, m)),
            module_interval(section(at.module_defaults, m)),
        ),
    };
    let kind = kind.as_str();
    own.map(|v| (v, format!("{}.{kind}.interval", at.path)))
        .or_else(|| raw.interval.clone().map(|v| (v, at.field("interval"))))
        .or_else(|| {
            d.interval
                .clone()
                .map(|v| (v, "defaults.interval".to_string()))
        })
        .or_else(|| inherited.map(|v| (v, format!("defaults.{kind}.interval"))))
}

fn default_interval(kind: ProbeKind) -> Duration {
    match kind {
        ProbeKind::Module(m) => m.module().default_interval(),
    }
}

/// Target names: letters, digits, '.', '_', '-'; they appear in labels, URLs and file names.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    let len = name.chars().count();
    if len > defaults::MAX_NAME_LEN {
        return Err(format!(
            "is {len} characters long; a name is at most {}",
            defaults::MAX_NAME_LEN
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "contains {c:?}; use letters, digits, '.', '_' and '-'"
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err("must start with a letter or digit".into());
    }
    Ok(())
}

/// Prometheus label names, minus the reserved ones.
pub fn check_label_name(name: &str) -> Result<(), String> {
    let valid = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(format!(
            "{name:?} is not a valid label name ([a-zA-Z_][a-zA-Z0-9_]*)"
        ));
    }
    if name.starts_with("__") {
        return Err(format!(
            "{name:?}: names starting with '__' are reserved by Prometheus"
        ));
    }
    if RESERVED_LABELS.contains(&name) {
        return Err(format!(
            "{name:?} is a label Vantage sets itself; choose another name"
        ));
    }
    Ok(())
}

pub(crate) fn check_label_value(v: &str) -> Result<(), String> {
    if v.chars().count() > defaults::MAX_LABEL_VALUE_LEN {
        return Err(format!(
            "value is longer than {} characters",
            defaults::MAX_LABEL_VALUE_LEN
        ));
    }
    if v.chars().any(char::is_control) {
        return Err("value contains a control character".into());
    }
    Ok(())
}

/// A setting's type as written (`i64`, or a duration `String`) and the value it checks to.
pub(crate) trait Ranged {
    type Value;
    fn check_in(
        c: &mut Check<'_, '_>,
        v: &Spanned<Self>,
        field: &str,
        range: Bounds<Self::Value>,
    ) -> Option<Self::Value>
    where
        Self: Sized;
}

impl Ranged for i64 {
    type Value = i64;
    fn check_in(
        c: &mut Check<'_, '_>,
        v: &Spanned<i64>,
        field: &str,
        r: Bounds<i64>,
    ) -> Option<i64> {
        c.int_in(v, field, r.min, r.max)
    }
}

impl Ranged for String {
    type Value = Duration;
    fn check_in(
        c: &mut Check<'_, '_>,
        v: &Spanned<String>,
        field: &str,
        r: Bounds<Duration>,
    ) -> Option<Duration> {
        c.duration_in(v, field, r.min, r.max)
    }
}

/// Range and format checks that record an error and return `None` on failure.
pub struct Check<'c, 't> {
    pub(crate) col: &'c mut Collector<'t>,
}

impl std::fmt::Debug for Check<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Check({} errors)", self.col.errors.len())
    }
}

impl Check<'_, '_> {
    /// Problems recorded so far, to tell whether a part added any.
    pub fn errors(&self) -> usize {
        self.col.errors.len()
    }

    pub(crate) fn err(
        &mut self,
        span: impl Into<Option<Range<usize>>>,
        field: &str,
        msg: impl Into<String>,
    ) {
        self.col.push(span.into(), field, msg);
    }

    /// The setting `get` reads from a target's table, else from its defaults, held to its
    /// documented range: `None` when unset or out of range (then the error names the place).
    pub(crate) fn ranged<'a, R, V: Ranged + 'a>(
        &mut self,
        t: Option<&'a R>,
        d: Option<&'a R>,
        get: impl Fn(&'a R) -> Option<&'a Spanned<V>>,
        field: &str,
        range: Bounds<V::Value>,
    ) -> Option<V::Value> {
        merge(t, d, get).and_then(|v| V::check_in(self, v, field, range))
    }

    /// The setting `get` reads from a target's table, else from its defaults, parsed by its
    /// type, whose message names what is accepted.
    pub(crate) fn parsed<'a, R, T: std::str::FromStr<Err = String>>(
        &mut self,
        t: Option<&'a R>,
        d: Option<&'a R>,
        get: impl Fn(&'a R) -> Option<&'a Spanned<String>>,
        field: &str,
    ) -> Option<T> {
        let v = merge(t, d, get)?;
        v.get_ref()
            .parse()
            .map_err(|msg| self.err(v.span(), field, msg))
            .ok()
    }

    pub(crate) fn int_in(
        &mut self,
        v: &Spanned<i64>,
        field: &str,
        min: i64,
        max: i64,
    ) -> Option<i64> {
        let n = *v.get_ref();
        if (min..=max).contains(&n) {
            Some(n)
        } else {
            self.err(
                Some(v.span()),
                field,
                format!("must be between {min} and {max}, got {n}"),
            );
            None
        }
    }

    pub(crate) fn duration_in(
        &mut self,
        v: &Spanned<String>,
        field: &str,
        min: Duration,
        max: Duration,
    ) -> Option<Duration> {
        match parse_duration(v.get_ref()) {
            Ok(d) if d >= min && d <= max => Some(d),
            Ok(_) => {
                self.err(
                    Some(v.span()),
                    field,
                    format!(
                        "{:?} is out of range; it must be between {} and {}",
                        v.get_ref(),
                        humantime::format_duration(min),
                        humantime::format_duration(max)
                    ),
                );
                None
            }
            Err(msg) => {
                self.err(Some(v.span()), field, msg);
                None
            }
        }
    }

    /// The TOS byte from either `tos` (0..=255) or `dscp` (0..=63, the upper six bits).
    pub(crate) fn tos_or_dscp(
        &mut self,
        tos: Option<&Spanned<i64>>,
        dscp: Option<&Spanned<i64>>,
        tos_field: &str,
        dscp_field: &str,
    ) -> Option<u8> {
        match (tos, dscp) {
            (Some(_), Some(dscp)) => {
                self.err(dscp.span(), dscp_field, "set either tos or dscp, not both");
                None
            }
            (Some(tos), None) => {
                let r = defaults::TOS_RANGE;
                self.int_in(tos, tos_field, r.min, r.max).map(|v| v as u8)
            }
            (None, Some(dscp)) => {
                let r = defaults::DSCP_RANGE;
                self.int_in(dscp, dscp_field, r.min, r.max)
                    .map(|v| (v as u8) << 2)
            }
            (None, None) => None,
        }
    }

    pub(crate) fn ip_addr(&mut self, v: &Spanned<String>, field: &str) -> Option<std::net::IpAddr> {
        match v.get_ref().parse() {
            Ok(ip) => Some(ip),
            Err(_) => {
                self.err(
                    v.span(),
                    field,
                    format!("{:?} is not an IP address", v.get_ref()),
                );
                None
            }
        }
    }

    pub(crate) fn ip_protocol(&mut self, v: &Spanned<String>, field: &str) -> Option<IpProtocol> {
        match v.get_ref().as_str() {
            "auto" => Some(IpProtocol::Auto),
            "ipv4" | "ip4" => Some(IpProtocol::Ipv4),
            "ipv6" | "ip6" => Some(IpProtocol::Ipv6),
            other => {
                self.err(
                    Some(v.span()),
                    field,
                    format!("{other:?} is not one of auto, ipv4, ipv6"),
                );
                None
            }
        }
    }
}

/// Parses "1s", "250ms", "1m30s". Bare numbers are refused: the unit must be explicit.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("must not be empty; write a duration such as \"1s\" or \"500ms\"".into());
    }
    if t.starts_with('-') {
        return Err(format!("{s:?} is negative; a duration must be positive"));
    }
    if t.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(format!(
            "{s:?} has no unit; write e.g. \"{t}s\" or \"{t}ms\""
        ));
    }
    match humantime::parse_duration(t) {
        Ok(d) if d.is_zero() => Err(format!("{s:?} is zero; a duration must be positive")),
        Ok(d) => Ok(d),
        Err(e) => Err(format!(
            "{s:?} is not a duration ({e}); write e.g. \"1s\", \"500ms\" or \"1m30s\""
        )),
    }
}
