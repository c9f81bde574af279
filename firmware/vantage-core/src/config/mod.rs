//! The config file: one TOML document with `[defaults]` and `[[targets]]`.
//!
//! Loading never stops at the first problem: every target is checked on its own, and all
//! problems come back together, each with its line and field, so `vantage check-config` and the
//! web page can show them all at once.

// The vocabulary the probe modules read their sections with; none of these imports a probe.
pub(crate) mod check;
pub(crate) mod error;
pub(crate) mod form;
pub(crate) mod host;
pub(crate) mod names;
pub(crate) mod target;

mod device;
mod fields;
mod probe_endpoint;
mod secret;
mod section;

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

pub use check::Section;
use check::field_at;
pub use check::{Check, Ranged, Src, parse_duration, read_section, read_table};
pub use device::Device;
use error::Collector;
pub use error::{ConfigError, ConfigErrors};
pub use form::{Field, Input, ProbeForm, duration_text};
pub use host::{Host, parse_host, split_host_port};
use names::checked_labels;
pub use names::{check_label_name, check_label_value, check_name};
pub use probe_endpoint::{ProbeEndpoint, RawProbeEndpoint};
pub use secret::Secret;
pub use section::{ConfigSection, OwnedSections, Registered, SectionValue, register};
pub use target::{ModuleOptions, Target};

use crate::defaults::{self, self as D};
pub use crate::probe::dns::options::{
    AnswerData, DnsOptions, DnsTransport, DohMethod, Pattern, RawDns, parse_doh_path, parse_query,
    parse_rcode, parse_record_type, rcode_name,
};
pub use crate::probe::module::module_options_from;
use crate::probe::module::{OptionsInput, in_words, kind_names};
pub use crate::probe::ping::options::{PingOptions, RawPing};
pub use crate::probe::trace::options::{RawTrace, TraceOptions};
use crate::types::{ModuleId, ProbeKind};

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Config {
    pub targets: Vec<Arc<Target>>,
    /// `[device]`: the device's name and the labels on all its series.
    pub device: Device,
    /// `[probe_endpoint]`: what `/probe` may reach.
    pub probe_endpoint: ProbeEndpoint,
    /// The sections the caller of the loader registered (the daemon's `[store]`, `[leds]`,
    /// `[uplink]`, `[update]`...), by key.
    #[serde(flatten)]
    pub sections: OwnedSections,
}

/// Every probe kind a form can offer, in [`ProbeKind::every`]'s order.
pub fn probe_forms() -> Vec<ProbeForm> {
    ProbeKind::every()
        .map(|k| match k {
            ProbeKind::Module(m) => m.module().form(),
        })
        .collect()
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
    device: device::RawDevice,
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

/// Sections that only the device's own file may set, not a provisioned one.
const DEVICE_SECTIONS: &[&str] = &["device", "probe_endpoint"];

impl Config {
    /// Reads and validates a config file with the core's sections only.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        Config::load_with(path, &[])
    }

    /// Reads and validates a config file; `sections` are the top-level sections other crates
    /// read ([`ConfigSection`]).
    pub fn load_with(path: &Path, sections: &[Registered]) -> Result<Config, ConfigErrors> {
        let file = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse_with(&text, &file, sections),
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

    /// Parses and validates config text with the core's sections only; `file` names it in
    /// error messages.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigErrors> {
        Config::parse_with(text, file, &[])
    }

    /// Parses and validates config text; `sections` are the top-level sections other crates
    /// read ([`ConfigSection`]), `file` names the text in error messages.
    pub fn parse_with(
        text: &str,
        file: &str,
        sections: &[Registered],
    ) -> Result<Config, ConfigErrors> {
        let mut col = Collector::new(text);
        let config = parse_into(text, sections, &mut col);
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
    /// file must not rename the device or change what `/probe` may reach.
    pub fn parse_provisioned(text: &str, file: &str) -> Result<Config, ConfigErrors> {
        Config::parse_provisioned_with(text, file, &[])
    }

    /// [`Config::parse_provisioned`] with the sections other crates read: those a provisioned
    /// file may set (`ConfigSection::DEVICE_ONLY` false) are read, the others refused.
    pub fn parse_provisioned_with(
        text: &str,
        file: &str,
        sections: &[Registered],
    ) -> Result<Config, ConfigErrors> {
        let mut col = Collector::new(text);
        let device_only = |k: &str| {
            DEVICE_SECTIONS.contains(&k) || sections.iter().any(|s| s.device_only && s.key == k)
        };
        if let Ok(doc) = DeTable::parse(text) {
            for (k, _) in doc.get_ref().iter() {
                if device_only(k.get_ref().as_ref()) {
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
        Config::parse_with(text, file, sections)
    }

    /// The value of a section another crate reads; `None` when the loader was not given it.
    pub fn section<T: ConfigSection>(&self) -> Option<&T> {
        self.sections.get::<T>()
    }

    pub fn target(&self, name: &str) -> Option<&Target> {
        self.targets.iter().find(|t| t.name == name).map(|t| &**t)
    }
}

/// The file's sections as written, before defaults and ranges: the sections read on their own
/// (so their errors name the field) taken out, the rest deserialized as the root.
struct Sections<'t> {
    root: RawRoot,
    targets: Vec<WrittenTarget<'t>>,
    /// The registered sections, each with its value when written.
    owned: Vec<(Registered, Option<Value<'t>>)>,
    module_defaults: ModuleSections<'t>,
}

fn parse_into(text: &str, registered: &[Registered], col: &mut Collector<'_>) -> Config {
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
    let sections = read_sections(doc, registered, col);
    resolve(&sections, &mut Check { col })
}

fn read_sections<'t>(
    doc: Spanned<DeTable<'t>>,
    registered: &[Registered],
    col: &mut Collector<'_>,
) -> Sections<'t> {
    let doc_span = doc.span();
    let mut root = doc.into_inner();
    let targets_value = root.remove("targets");
    let owned = registered
        .iter()
        .map(|r| (*r, root.remove(r.key)))
        .collect();
    unknown_root_keys(&mut root, registered, col);
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
    Sections {
        root: raw_root,
        owned,
        targets: targets_value
            .map(|v| read_targets(col, v))
            .unwrap_or_default(),
        module_defaults,
    }
}

/// Takes out the top-level keys that name no section, each an error listing every key the file
/// may have: the root's own, `targets` and the registered sections (which serde's message on
/// the root alone would leave out).
fn unknown_root_keys(root: &mut DeTable<'_>, registered: &[Registered], col: &mut Collector<'_>) {
    let keys: Vec<&str> = fields::struct_fields::<RawRoot>()
        .iter()
        .copied()
        .chain(["targets"])
        .chain(registered.iter().map(|r| r.key))
        .collect();
    let unknown: Vec<_> = root
        .iter()
        .filter(|(k, _)| !keys.contains(&k.get_ref().as_ref()))
        .map(|(k, _)| (k.get_ref().to_string(), k.span()))
        .collect();
    for (key, span) in unknown {
        root.remove(key.as_str());
        let expected: Vec<String> = keys.iter().map(|k| format!("`{k}`")).collect();
        col.push(
            Some(span),
            "",
            format!(
                "unknown field `{key}`, expected one of {}",
                expected.join(", ")
            ),
        );
    }
}

/// Defaults merged and every value checked against its range.
fn resolve(s: &Sections<'_>, check: &mut Check<'_, '_>) -> Config {
    for (m, v) in &s.module_defaults {
        let path = format!("defaults.{}", m.module().name());
        m.module().check_defaults(check, &path, v);
    }
    let defaults = Defaults {
        raw: &s.root.defaults,
        modules: &s.module_defaults,
    };
    let raw = &s.root;
    Config {
        sections: OwnedSections(
            s.owned
                .iter()
                .map(|(r, v)| {
                    let value = v.as_ref().map_or_else(r.default, |v| (r.read)(check, v));
                    (r.key, value)
                })
                .collect(),
        ),
        // Shared with the runner (and the configs built from this one), not copied.
        targets: resolve_targets(check, &s.targets, &defaults)
            .into_iter()
            .map(Arc::new)
            .collect(),
        device: device::validate_device(check, &raw.device),
        probe_endpoint: probe_endpoint::validate(check, raw.probe_endpoint.as_ref()),
    }
}

type Value<'t> = Spanned<DeValue<'t>>;

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

fn check_system_host(c: &mut Check<'_, '_>, at: &At<'_>, kinds: &[(ProbeKind, Range<usize>)]) {
    let takes = |k: &ProbeKind| k.module().is_some_and(|m| m.takes_system_host());
    let able = in_words(&kind_names(|m| m.takes_system_host()), "or");
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
