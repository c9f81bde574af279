//! Names and labels as the config takes them: target names, label names and values, and a
//! `labels` table checked entry by entry.

use std::collections::BTreeMap;
use std::ops::Range;

use toml::Spanned;

use super::check::Check;
use crate::defaults;

/// Label names our own series use; a user label must not shadow them.
const RESERVED_LABELS: &[&str] = &[
    "target", "probe", "hop", "address", "rcode", "endpoint", "job", "instance", "le", "quantile",
    "version", "arch", "phase", "device",
];

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

pub fn check_label_value(v: &str) -> Result<(), String> {
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
