//! What a person can set for each probe kind, described for forms: the web page's target editor
//! builds its fields from this, so a kind and its options are written once (here, from the
//! defaults and ranges in `defaults.rs` that the config loader enforces) and the page never
//! keeps a list of its own. The loader stays the judge: the page only pre-checks.

use std::time::Duration;

use serde::Serialize;

use crate::defaults::Bounds;

/// How a field is entered and pre-checked.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Input {
    /// A whole number within `min..=max`.
    Integer { min: i64, max: i64 },
    /// A duration with a unit ("500ms", "1s"), within `min..=max`.
    Duration { min: String, max: String },
    /// One of `options`.
    Choice { options: Vec<&'static str> },
    /// Free text (an address, a name); the loader checks it.
    Text,
    /// One value per line.
    Lines,
}

/// One option of a probe kind: its key in the kind's table (`ping.packets`), its label, its
/// input, the value used when it is left empty, and a hint.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Field {
    pub key: &'static str,
    pub label: &'static str,
    #[serde(flatten)]
    pub input: Input,
    pub default: String,
    pub hint: &'static str,
    /// The kind cannot run without it (no default).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub required: bool,
}

/// A probe kind as a form shows it: its name (`probes = [...]`), the table its options live in,
/// what its host means, and its fields.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeForm {
    pub kind: &'static str,
    pub title: &'static str,
    pub host_hint: &'static str,
    pub fields: Vec<Field>,
}

/// A duration as the config file writes it: the largest unit that divides it.
pub fn duration_text(v: Duration) -> String {
    let ms = v.as_millis();
    for (unit, n) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ] {
        if ms >= n && ms.is_multiple_of(n) {
            return format!("{}{unit}", ms / n);
        }
    }
    format!("{ms}ms")
}

pub(crate) fn integer(
    key: &'static str,
    label: &'static str,
    b: Bounds<i64>,
    default: String,
) -> Field {
    Field {
        key,
        label,
        input: Input::Integer {
            min: b.min,
            max: b.max,
        },
        default,
        hint: "",
        required: false,
    }
}

pub(crate) fn duration(
    key: &'static str,
    label: &'static str,
    b: Bounds<Duration>,
    default: Duration,
) -> Field {
    Field {
        key,
        label,
        input: Input::Duration {
            min: duration_text(b.min),
            max: duration_text(b.max),
        },
        default: duration_text(default),
        hint: "",
        required: false,
    }
}

pub(crate) fn choice(key: &'static str, label: &'static str, options: Vec<&'static str>) -> Field {
    Field {
        key,
        label,
        default: options[0].to_string(),
        input: Input::Choice { options },
        hint: "",
        required: false,
    }
}

pub(crate) fn text(key: &'static str, label: &'static str, default: &str, input: Input) -> Field {
    Field {
        key,
        label,
        input,
        default: default.to_string(),
        hint: "",
        required: false,
    }
}

impl Field {
    /// Marks a setting the kind cannot run without.
    pub fn required(mut self) -> Self {
        self.required = true;
        self
    }

    pub(crate) fn hint(mut self, hint: &'static str) -> Self {
        self.hint = hint;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, probe_forms};

    #[test]
    fn every_kind_has_a_form_and_durations_read_back() {
        let kinds: Vec<_> = probe_forms().iter().map(|f| f.kind).collect();
        assert_eq!(kinds, ["ping", "trace", "tcp", "http", "dns"]);
        for (d, s) in [
            (1, "1ms"),
            (100, "100ms"),
            (1000, "1s"),
            (60_000, "1m"),
            (90_000, "90s"),
        ] {
            assert_eq!(duration_text(Duration::from_millis(d)), s);
            assert_eq!(
                super::super::parse_duration(s).unwrap(),
                Duration::from_millis(d)
            );
        }
    }

    /// The bounds a form offers are the loader's: each field's min and max load, one past
    /// either end is refused naming the field.
    #[test]
    fn ranges_are_the_loaders() {
        for form in probe_forms() {
            for f in &form.fields {
                let (lo, hi, below, above) = match &f.input {
                    Input::Integer { min, max } => (
                        min.to_string(),
                        max.to_string(),
                        (min - 1).to_string(),
                        (max + 1).to_string(),
                    ),
                    Input::Duration { min, max } => {
                        let (a, b) = (
                            super::super::parse_duration(min).unwrap(),
                            super::super::parse_duration(max).unwrap(),
                        );
                        let q = |d: Duration| format!("\"{}ms\"", d.as_millis());
                        (
                            q(a),
                            q(b),
                            q(a - Duration::from_millis(1)),
                            q(b + Duration::from_millis(1)),
                        )
                    }
                    _ => continue,
                };
                let file = |v: &str| {
                    let host = if form.kind == "dns" {
                        "192.0.2.53"
                    } else {
                        "192.0.2.1"
                    };
                    let query = if form.kind == "dns" && f.key != "query" {
                        "query = \"example.com\", "
                    } else {
                        ""
                    };
                    // Settings a field's extremes need beside them (cross-field checks).
                    let mut extra = match (form.kind, f.key) {
                        ("trace", "first_ttl") => ", max_hops = 255",
                        ("trace", "interval") => ", timeout = \"10ms\"",
                        _ => "",
                    }
                    .to_string();
                    // The kind's other required settings: integers at their least, text as
                    // the kind needs it.
                    for r in form.fields.iter().filter(|r| r.required && r.key != f.key) {
                        match r.input {
                            Input::Integer { min, .. } => {
                                extra.push_str(&format!(", {} = {min}", r.key));
                            }
                            Input::Text => extra.push_str(&format!(
                                ", {} = \"{}\"",
                                r.key,
                                required_text(form.kind, r.key)
                            )),
                            _ => panic!("no value for the required {}.{}", form.kind, r.key),
                        }
                    }
                    format!(
                        "[[targets]]\nname = \"t\"\nhost = \"{host}\"\ninterval = \"1h\"\nprobes = [\"{}\"]\n{} = {{ {query}{} = {v}{extra} }}\n",
                        form.kind, form.kind, f.key
                    )
                };
                for ok in [&lo, &hi] {
                    Config::parse(&file(ok), "f.toml")
                        .unwrap_or_else(|e| panic!("{}.{} = {ok}: {e}", form.kind, f.key));
                }
                for bad in [&below, &above] {
                    let e = Config::parse(&file(bad), "f.toml")
                        .expect_err(&format!("{}.{} = {bad}", form.kind, f.key));
                    let key = format!("{}.{}", form.kind, f.key);
                    assert!(e.to_string().contains(&key), "{key} = {bad}: {e}");
                }
            }
        }
    }

    /// A valid value for a required text setting, so that another field's extremes can be
    /// loaded beside it.
    fn required_text(kind: &str, key: &str) -> &'static str {
        match (kind, key) {
            ("http", "url") => "http://192.0.2.1/",
            _ => panic!("no value for the required {kind}.{key}: add one here"),
        }
    }
}
