//! Reading, editing and saving the config file for the page.
//!
//! The editor works on the document as written, through `toml_edit`, so a hand-written file
//! keeps its comments, order and layout; only the edited `[[targets]]` table changes. Every
//! edit is validated by rendering the whole document and running the same parser as
//! `vantage check-config`; its errors, which name fields like `targets[3].ping.packets`, are
//! mapped back to the edited target's fields.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value as Json;
use toml_edit::{Array, ArrayOfTables, DocumentMut, InlineTable, Item, Table, Value};
use vantage_core::ConfigError;

use crate::config_source::{ConfigSource, EMBEDDED_CONFIG};
pub use crate::files::{backup_path, write_atomic};

/// Where the page reads the config from and saves it to.
#[derive(Debug, Clone)]
pub struct ConfigLocation {
    /// The file saves go to; `None` when the daemon runs on the embedded config with nowhere
    /// to save (only in tests: `vantage run` always has a data directory).
    pub path: Option<PathBuf>,
    /// Nothing saved yet and no default file: the embedded config is running.
    pub embedded: bool,
    /// Nothing saved yet: the packaged default file that is running, whose text the first
    /// save starts from.
    pub default: Option<PathBuf>,
}

impl ConfigLocation {
    pub fn of(source: &ConfigSource) -> Self {
        let (path, saved) = match source {
            ConfigSource::File(p) => (Some(p.clone()), true),
            ConfigSource::DataDir { path, .. } => (Some(path.clone()), path.exists()),
            ConfigSource::Embedded => (None, false),
        };
        let default = match source.current() {
            ConfigSource::File(d) if !saved => Some(d),
            _ => None,
        };
        Self {
            path,
            embedded: !saved && default.is_none(),
            default,
        }
    }

    /// The current text: the file as it is on disk now (hand edits included), the default
    /// file, or the embedded config.
    pub fn read(&self) -> io::Result<String> {
        match (&self.path, &self.default, self.embedded) {
            (_, Some(d), _) => fs::read_to_string(d),
            (Some(p), None, false) => fs::read_to_string(p),
            _ => Ok(EMBEDDED_CONFIG.to_string()),
        }
    }

    pub fn display(&self) -> String {
        self.path
            .as_ref()
            .map_or_else(|| "<embedded>".to_string(), |p| p.display().to_string())
    }
}

/// A short fingerprint of the file text (FNV-1a), so a save can refuse to overwrite changes
/// made since the page loaded the file.
pub fn revision(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// One field-level problem, as the API reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// Dotted path relative to the object sent (`ping.packets`), or the file's own path for
    /// problems elsewhere in the file; empty for the whole request.
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// An edit to the list of targets.
#[derive(Debug)]
pub enum Edit<'a> {
    Add(&'a Json),
    Replace(&'a str, &'a Json),
    Delete(&'a str),
}

#[derive(Debug)]
pub enum EditError {
    /// The file itself cannot be parsed as TOML (a broken hand edit).
    Document(String),
    NotFound(String),
    Invalid(Vec<FieldError>),
}

/// A list of tables in the file that the page edits item by item, each named by a key.
#[derive(Debug, Clone, Copy)]
pub struct List {
    /// The top-level key: `targets`, `remote_write`.
    pub key: &'static str,
    /// What the page calls one item, in messages.
    pub what: &'static str,
    /// The name an item goes by (its `name`, or for remote_write the URL's host and port).
    name_of: fn(&toml::Table) -> Option<String>,
    /// The order new keys are written in (the order the docs list them).
    order: &'static [&'static str],
}

fn name_key(t: &toml::Table) -> Option<String> {
    t.get("name").and_then(|n| n.as_str()).map(str::to_string)
}

fn endpoint_name(t: &toml::Table) -> Option<String> {
    name_key(t).or_else(|| {
        t.get("url")
            .and_then(|u| u.as_str())
            .map(vantage_store::remote_write::config::default_name)
    })
}

pub const TARGETS: List = List {
    key: "targets",
    what: "target",
    name_of: name_key,
    order: &[
        "name", "host", "probes", "interval", "labels", "ping", "trace", "dns",
    ],
};

pub const REMOTE_WRITE: List = List {
    key: "remote_write",
    what: "remote_write endpoint",
    name_of: endpoint_name,
    order: &[
        "name",
        "url",
        "basic_auth",
        "bearer_token",
        "bearer_token_file",
        "tls",
        "timeout",
        "labels",
        "max_samples_per_send",
        "max_samples_per_second",
        "min_backoff",
        "max_backoff",
        "send",
        "scrape_gap",
    ],
};

/// `[store]` keys in the documented order.
pub const STORE_ORDER: &[&str] = &[
    "backend",
    "max_size",
    "max_age",
    "commit_interval",
    "commit_samples",
    "max_pending",
];

/// Keys of sub-tables (`[[leds.led]]`) in the documented order.
const SUB_ORDER: &[&str] = &["role", "name", "pin", "active_low"];

/// `[leds]` keys in the documented order (`[[leds.led]]` tables last).
pub const LEDS_ORDER: &[&str] = &[
    "backend",
    "sysfs_root",
    "identify_timeout",
    "stale_after",
    "led",
];

impl List {
    /// The name of one item as the page sent it (JSON object).
    pub fn name_of_json(&self, obj: &Json) -> Option<String> {
        let t: toml::Table = serde_json::from_value(obj.clone()).ok()?;
        (self.name_of)(&t)
    }
}

/// The items of a list, as written, as JSON objects.
pub fn raw_items(text: &str, list: &List) -> Result<Vec<Json>, String> {
    let table: toml::Table = toml::from_str(text).map_err(|e| e.message().to_string())?;
    let Some(toml::Value::Array(items)) = table.get(list.key) else {
        return Ok(Vec::new());
    };
    items
        .iter()
        .map(|t| serde_json::to_value(t).map_err(|e| e.to_string()))
        .collect()
}

/// The `[[targets]]` of a document, as written, as JSON objects.
pub fn raw_targets(text: &str) -> Result<Vec<Json>, String> {
    raw_items(text, &TARGETS)
}

/// A top-level table (`store`, `leds`) as written, as a JSON object (`{}` when absent).
pub fn raw_section(text: &str, key: &str) -> Result<Json, String> {
    let table: toml::Table = toml::from_str(text).map_err(|e| e.message().to_string())?;
    match table.get(key) {
        None => Ok(Json::Object(serde_json::Map::new())),
        Some(v) => serde_json::to_value(v).map_err(|e| e.to_string()),
    }
}

fn parse_doc(text: &str) -> Result<DocumentMut, EditError> {
    text.parse::<DocumentMut>()
        .map_err(|e| EditError::Document(format!("the config file is not valid TOML: {e}")))
}

/// The document's list as an array of tables (an inline `key = [...]` is converted).
fn list_mut<'d>(doc: &'d mut DocumentMut, list: &List) -> Result<&'d mut ArrayOfTables, EditError> {
    if !doc.contains_key(list.key) {
        doc.insert(list.key, Item::ArrayOfTables(ArrayOfTables::new()));
    }
    let item = doc.get_mut(list.key).expect("inserted above");
    if !item.is_array_of_tables() {
        let taken = std::mem::take(item);
        *item = Item::ArrayOfTables(taken.into_array_of_tables().map_err(|_| {
            EditError::Document(format!(
                "`{}` in the config file is not a list of tables",
                list.key
            ))
        })?);
    }
    Ok(item.as_array_of_tables_mut().expect("converted above"))
}

/// Position of the item called `name`, asking each item for its name the way the parser
/// would (the `toml` crate reads the same document in the same order).
fn index_of(text: &str, list: &List, name: &str) -> Option<usize> {
    let table: toml::Table = toml::from_str(text).ok()?;
    let toml::Value::Array(items) = table.get(list.key)? else {
        return None;
    };
    items.iter().position(|t| {
        t.as_table()
            .and_then(|t| (list.name_of)(t))
            .is_some_and(|n| n == name)
    })
}

/// JSON from the page to a TOML table. Type checks are left to the config parser, so a wrong
/// type gets the same message as in a file; `null` means "not set". With `sub_tables`, a list
/// of objects becomes `[[key.sub]]` tables (`[[leds.led]]`) rather than an inline array.
fn to_table(obj: &Json, what: &str, sub_tables: bool) -> Result<Table, Vec<FieldError>> {
    let Json::Object(map) = obj else {
        return Err(vec![FieldError::new(
            "",
            format!("a {what} must be a JSON object"),
        )]);
    };
    let mut t = Table::new();
    for (k, v) in map {
        match v {
            Json::Array(items)
                if sub_tables && !items.is_empty() && items.iter().all(Json::is_object) =>
            {
                let mut aot = ArrayOfTables::new();
                for item in items {
                    let mut sub = Table::new();
                    refill(&mut sub, to_table(item, what, false)?, SUB_ORDER);
                    aot.push(sub);
                }
                t.insert(k, Item::ArrayOfTables(aot));
            }
            _ => {
                if let Some(v) = to_value(v) {
                    t.insert(k, Item::Value(v));
                }
            }
        }
    }
    Ok(t)
}

fn to_value(v: &Json) -> Option<Value> {
    Some(match v {
        Json::Null => return None,
        Json::Bool(b) => Value::from(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::from(i),
            None => Value::from(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => Value::from(s.as_str()),
        Json::Array(a) => Value::Array(a.iter().filter_map(to_value).collect::<Array>()),
        Json::Object(m) => {
            let mut it = InlineTable::new();
            for (k, v) in m {
                if let Some(v) = to_value(v) {
                    it.insert(k, v);
                }
            }
            Value::InlineTable(it)
        }
    })
}

/// Applies an edit to the targets and validates the result like `check-config`.
pub fn apply_edit(text: &str, file: &str, edit: Edit<'_>) -> Result<String, EditError> {
    apply_list_edit(text, file, &TARGETS, edit)
}

/// Applies an edit to a list and validates the whole result like `check-config`. Returns the
/// new text.
pub fn apply_list_edit(
    text: &str,
    file: &str,
    list: &List,
    edit: Edit<'_>,
) -> Result<String, EditError> {
    let mut doc = parse_doc(text)?;
    let aot = list_mut(&mut doc, list)?;
    let edited = match edit {
        Edit::Add(obj) => {
            let mut t = Table::new();
            refill(
                &mut t,
                to_table(obj, list.what, false).map_err(EditError::Invalid)?,
                list.order,
            );
            aot.push(t);
            Some(aot.len() - 1)
        }
        Edit::Replace(name, obj) => {
            let i =
                index_of(text, list, name).ok_or_else(|| EditError::NotFound(name.to_string()))?;
            let new = to_table(obj, list.what, false).map_err(EditError::Invalid)?;
            // Keep the table's own decor (comments above it); replace its keys.
            refill(aot.get_mut(i).expect("index found above"), new, list.order);
            Some(i)
        }
        Edit::Delete(name) => {
            let i =
                index_of(text, list, name).ok_or_else(|| EditError::NotFound(name.to_string()))?;
            aot.remove(i);
            None
        }
    };
    if aot.is_empty() && list.key != TARGETS.key {
        // No `remote_write = []` left behind by the last delete.
        doc.remove(list.key);
    }
    let out = doc.to_string();
    match crate::config::parse(&out, file) {
        Ok(_) => Ok(out),
        Err(e) => Err(EditError::Invalid(map_errors(
            &e.errors,
            edited.map(|i| format!("{}[{i}]", list.key)).as_deref(),
        ))),
    }
}

/// Replaces a top-level table (`[store]`, `[leds]`) with `obj`; an empty object removes it (all
/// defaults). Comments above the table are kept. Validated like `check-config`; errors keep
/// their full path (`store.max_size`, `leds.led[1].pin`).
pub fn apply_section_edit(
    text: &str,
    file: &str,
    key: &str,
    order: &[&str],
    obj: &Json,
) -> Result<String, EditError> {
    let mut doc = parse_doc(text)?;
    let new = to_table(obj, key, true).map_err(|errs| {
        EditError::Invalid(
            errs.into_iter()
                .map(|e| FieldError::new(key, e.message))
                .collect(),
        )
    })?;
    if new.is_empty() {
        doc.remove(key);
    } else {
        match doc.get_mut(key) {
            Some(Item::Table(t)) => refill(t, new, order),
            _ => {
                let mut t = Table::new();
                refill(&mut t, new, order);
                doc.insert(key, Item::Table(t));
            }
        }
    }
    let out = doc.to_string();
    match crate::config::parse(&out, file) {
        Ok(_) => Ok(out),
        Err(e) => Err(EditError::Invalid(
            e.errors
                .iter()
                .map(|e| {
                    if e.field == key || e.field.starts_with(&format!("{key}.")) {
                        FieldError::new(e.field.clone(), e.message.clone())
                    } else {
                        file_error(e)
                    }
                })
                .collect(),
        )),
    }
}

fn file_error(e: &ConfigError) -> FieldError {
    FieldError::new(
        format!("file:{}", e.field),
        match e.line {
            Some(l) => format!("line {l}: {}", e.message),
            None => e.message.clone(),
        },
    )
}

/// Replaces the keys of `t` with those of `new`: keys the table had stay where they were,
/// new ones follow in the order of `order` (the documented order), then any others.
fn refill(t: &mut Table, new: Table, order: &[&str]) {
    let old: Vec<String> = t.iter().map(|(k, _)| k.to_string()).collect();
    let rank = |k: &str| {
        old.iter()
            .position(|o| o == k)
            .or_else(|| order.iter().position(|o| *o == k).map(|i| old.len() + i))
            .unwrap_or(usize::MAX)
    };
    let mut items: Vec<(String, Item)> = new.into_iter().collect();
    items.sort_by_key(|(k, _)| rank(k));
    t.clear();
    for (k, v) in items {
        t.insert(&k, v);
    }
}

/// Errors of the edited item lose their `targets[i].` prefix (they are shown next to the
/// form's fields); others keep their full path and line, since they are in the file.
pub fn map_errors(errors: &[ConfigError], prefix: Option<&str>) -> Vec<FieldError> {
    errors
        .iter()
        .map(|e| match prefix {
            Some(p) if e.field == *p => FieldError::new("", e.message.clone()),
            Some(p) if e.field.starts_with(&format!("{p}.")) => {
                FieldError::new(&e.field[p.len() + 1..], e.message.clone())
            }
            _ => file_error(e),
        })
        .collect()
}

/// Validates one target on its own, with the file's `[defaults]`, for "test now".
pub fn validate_alone(text: &str, obj: &Json) -> Result<vantage_core::Target, EditError> {
    let mut doc = parse_doc(text)?;
    doc.remove("targets");
    let mut aot = ArrayOfTables::new();
    aot.push(to_table(obj, "target", false).map_err(EditError::Invalid)?);
    doc.insert("targets", Item::ArrayOfTables(aot));
    let out = doc.to_string();
    match crate::config::parse(&out, "<test>") {
        Ok(mut c) if c.targets.len() == 1 => {
            Ok(std::sync::Arc::unwrap_or_clone(c.targets.remove(0)))
        }
        Ok(_) => Err(EditError::Invalid(vec![FieldError::new(
            "",
            "expected exactly one target",
        )])),
        Err(e) => Err(EditError::Invalid(map_errors(
            &e.errors,
            Some("targets[0]"),
        ))),
    }
}

/// Creates a directory readable only by its owner (credentials live there).
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
}

/// Writes a secret file atomically with mode 0600.
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic(path, bytes, 0o600, false, |_| Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const FILE: &str = r#"# my probes
[defaults]
interval = "5s"

# the gateway
[[targets]]
name = "gw"
host = "192.0.2.1"
probes = ["ping"]

[[targets]]
name = "dns"
host = "192.0.2.53"
probes = ["ping"]
ping = { packets = 3 }
"#;

    #[test]
    fn replace_keeps_comments_and_other_targets() {
        let t = json!({"name": "gw", "host": "192.0.2.254", "probes": ["ping"], "ping": {"packets": 2}});
        let out = apply_edit(FILE, "f", Edit::Replace("gw", &t)).unwrap();
        assert!(out.contains("# my probes"), "{out}");
        assert!(out.contains("# the gateway"), "{out}");
        assert!(out.contains("ping = { packets = 3 }"), "{out}");
        let c = crate::config::parse(&out, "f").unwrap();
        assert_eq!(c.targets[0].host.to_string(), "192.0.2.254");
        assert_eq!(
            c.targets[0]
                .options_or_default::<vantage_core::PingOptions>()
                .packets,
            2
        );
        assert_eq!(c.targets[0].probes[0].1, std::time::Duration::from_secs(5));
    }

    #[test]
    fn errors_are_mapped_to_the_edited_fields() {
        let t = json!({"name": "new", "host": "1.2.3.4; rm -rf /", "probes": ["ping"],
                       "ping": {"packets": -5}, "bogus": 1});
        let Err(EditError::Invalid(errs)) = apply_edit(FILE, "f", Edit::Add(&t)) else {
            panic!("accepted")
        };
        assert!(
            errs.iter()
                .any(|e| e.field == "bogus" || e.message.contains("bogus")),
            "{errs:?}"
        );
        let t = json!({"name": "new", "host": "1.2.3.4; rm -rf /", "probes": ["ping"],
                       "ping": {"packets": -5}});
        let Err(EditError::Invalid(errs)) = apply_edit(FILE, "f", Edit::Add(&t)) else {
            panic!("accepted")
        };
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert!(fields.contains(&"host"), "{errs:?}");
        assert!(fields.contains(&"ping.packets"), "{errs:?}");
        let dup = json!({"name": "dns", "host": "192.0.2.2", "probes": ["ping"]});
        let Err(EditError::Invalid(errs)) = apply_edit(FILE, "f", Edit::Add(&dup)) else {
            panic!("accepted")
        };
        assert_eq!(errs[0].field, "name", "{errs:?}");
        assert!(errs[0].message.contains("unique"), "{errs:?}");
    }

    #[test]
    fn delete_and_missing() {
        let out = apply_edit(FILE, "f", Edit::Delete("gw")).unwrap();
        let c = crate::config::parse(&out, "f").unwrap();
        assert_eq!(c.targets.len(), 1);
        assert!(matches!(
            apply_edit(FILE, "f", Edit::Delete("nope")),
            Err(EditError::NotFound(_))
        ));
    }

    #[test]
    fn raw_targets_as_written() {
        let t = raw_targets(FILE).unwrap();
        assert_eq!(t[1]["ping"]["packets"], 3);
        assert!(t[0].get("interval").is_none());
    }
}
