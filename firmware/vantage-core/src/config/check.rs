//! The checks every part of the config is read with: ranges, formats, and merging a target's
//! setting with its default. The probe modules read their sections with these; nothing here
//! knows a probe kind.

use std::ops::Range;
use std::time::Duration;

use toml::Spanned;
use toml::de::DeValue;

use super::error::Collector;
use crate::defaults::{self, Bounds};
use crate::types::IpProtocol;

/// A config section as written (`tcp = { ... }`), with its place in the file.
pub type Section<'t> = Spanned<DeValue<'t>>;

/// A module's section read into its own type, errors located like a target's.
pub fn read_section<T: serde::de::DeserializeOwned>(
    c: &mut Check<'_, '_>,
    v: &Section<'_>,
    path: &str,
) -> Option<T> {
    read_table(c, v, path, "must be a table")
}

/// A top-level table (`[leds]`) read into its own type, errors located like a target's;
/// `not_table` is the message when it is something else.
pub fn read_table<T: serde::de::DeserializeOwned>(
    c: &mut Check<'_, '_>,
    v: &Section<'_>,
    path: &str,
    not_table: &str,
) -> Option<T> {
    if !v.get_ref().is_table() {
        c.err(Some(v.span()), path, not_table);
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

/// Names the key of `table` whose key or value contains `span`, to say which field a serde
/// error is about. Tables and arrays of tables are followed down (`leds.led[1].colour`); the
/// span of a `[[header]]` table covers only its header, so containment is checked key by key.
pub(super) fn field_at(table: &DeValue<'_>, span: Option<Range<usize>>, path: &str) -> String {
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

/// Where a setting comes from: a target's own table, else the kind's defaults (`d` is `None`
/// for a table without defaults, such as `[store]`); `field` names a setting in errors.
pub struct Src<'a, R> {
    pub t: Option<&'a R>,
    pub d: Option<&'a R>,
    pub field: &'a dyn Fn(&str) -> String,
}

// Not derived: a derive would ask `R: Copy`.
impl<R> std::fmt::Debug for Src<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Src({})", (self.field)("*"))
    }
}

impl<R> Clone for Src<'_, R> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<R> Copy for Src<'_, R> {}

impl<'a, R> Src<'a, R> {
    pub fn new(t: Option<&'a R>, d: Option<&'a R>, field: &'a dyn Fn(&str) -> String) -> Self {
        Self { t, d, field }
    }

    /// The target's value, else the default's.
    pub fn pick<T>(&self, get: impl Fn(&'a R) -> Option<&'a Spanned<T>>) -> Option<&'a Spanned<T>> {
        merge(self.t, self.d, get)
    }

    pub fn field(&self, name: &str) -> String {
        (self.field)(name)
    }

    /// The setting `name`, held to its documented range (see [`Check::ranged`]).
    pub fn ranged<V: Ranged + 'a>(
        &self,
        c: &mut Check<'_, '_>,
        get: impl Fn(&'a R) -> Option<&'a Spanned<V>>,
        name: &str,
        range: Bounds<V::Value>,
    ) -> Option<V::Value> {
        c.ranged(self.t, self.d, get, &self.field(name), range)
    }

    /// The setting `name`, parsed by its type (see [`Check::parsed`]).
    pub fn parsed<T: std::str::FromStr<Err = String>>(
        &self,
        c: &mut Check<'_, '_>,
        get: impl Fn(&'a R) -> Option<&'a Spanned<String>>,
        name: &str,
    ) -> Option<T> {
        c.parsed(self.t, self.d, get, &self.field(name))
    }
}

/// A section that can say which keys it sets.
pub(crate) trait Keys {
    fn has(&self, name: &str) -> bool;
}

/// Names a setting where its value was written: the target's section, else `defaults` (the
/// kind's defaults table) when only that sets it. A bad default is then reported there (once,
/// the collector drops repeats), not under every target that inherits it.
pub(crate) fn written_at<'a, R: Keys>(
    path: &'a str,
    defaults: &'a str,
    t: Option<&'a R>,
    d: Option<&'a R>,
) -> impl Fn(&str) -> String + 'a {
    move |name| {
        if t.is_some_and(|r| r.has(name)) || d.is_none_or(|r| !r.has(name)) {
            format!("{path}.{name}")
        } else {
            format!("{defaults}.{name}")
        }
    }
}

/// A setting's type as written (`i64`, or a duration `String`) and the value it checks to.
pub trait Ranged: Sized {
    type Value;
    /// How a value is held to its range: [`Check::int_in`] or [`Check::duration_in`].
    const CHECK_IN: CheckIn<Self>;
}

pub type CheckIn<V> = fn(
    &mut Check<'_, '_>,
    &Spanned<V>,
    &str,
    <V as Ranged>::Value,
    <V as Ranged>::Value,
) -> Option<<V as Ranged>::Value>;

impl Ranged for i64 {
    type Value = i64;
    const CHECK_IN: CheckIn<Self> = |c, v, field, min, max| c.int_in(v, field, min, max);
}

impl Ranged for String {
    type Value = Duration;
    const CHECK_IN: CheckIn<Self> = |c, v, field, min, max| c.duration_in(v, field, min, max);
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

    pub fn err(
        &mut self,
        span: impl Into<Option<Range<usize>>>,
        field: &str,
        msg: impl Into<String>,
    ) {
        self.col.push(span.into(), field, msg);
    }

    /// The setting `get` reads from a target's table, else from its defaults, held to its
    /// documented range: `None` when unset or out of range (then the error names the place).
    pub fn ranged<'a, R, V: Ranged + 'a>(
        &mut self,
        t: Option<&'a R>,
        d: Option<&'a R>,
        get: impl Fn(&'a R) -> Option<&'a Spanned<V>>,
        field: &str,
        range: Bounds<V::Value>,
    ) -> Option<V::Value> {
        merge(t, d, get).and_then(|v| V::CHECK_IN(self, v, field, range.min, range.max))
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

    pub fn int_in(&mut self, v: &Spanned<i64>, field: &str, min: i64, max: i64) -> Option<i64> {
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

    pub fn duration_in(
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
