//! Top-level sections owned by the crates that use them (`[leds]` by `vantage-leds`): each
//! crate reads its own section with the shared [`Check`], and the caller of the loader says
//! which sections there are (`Config::parse_with`). A key no registered section claims is
//! still an unknown field of the file.

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::Serialize;

use super::check::{Check, Section};

/// A top-level section read outside the core: its key, whether a provisioned file may set it,
/// and how it is read. The value is what the section validates to; absent, its `Default`.
pub trait ConfigSection:
    Any + fmt::Debug + Clone + Default + PartialEq + Serialize + Send + Sync
{
    /// The section's top-level key (`"leds"` for `[leds]`).
    const KEY: &'static str;
    /// Only the device's own file may set it, not a provisioned one.
    const DEVICE_ONLY: bool;

    /// Reads the section as written, every problem pushed into `check` with its place; the
    /// value returned after a problem is not used.
    fn read(check: &mut Check<'_, '_>, value: &Section<'_>) -> Self;
}

/// A section the loader knows, built with [`register`].
#[derive(Clone, Copy)]
pub struct Registered {
    pub(super) key: &'static str,
    pub(super) device_only: bool,
    pub(super) read: fn(&mut Check<'_, '_>, &Section<'_>) -> Arc<dyn SectionValue>,
    pub(super) default: fn() -> Arc<dyn SectionValue>,
}

impl fmt::Debug for Registered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Registered({})", self.key)
    }
}

/// Registers `T` with the loader.
pub const fn register<T: ConfigSection>() -> Registered {
    Registered {
        key: T::KEY,
        device_only: T::DEVICE_ONLY,
        read: read_erased::<T>,
        default: default_erased::<T>,
    }
}

fn read_erased<T: ConfigSection>(c: &mut Check<'_, '_>, v: &Section<'_>) -> Arc<dyn SectionValue> {
    Arc::new(T::read(c, v))
}

fn default_erased<T: ConfigSection>() -> Arc<dyn SectionValue> {
    Arc::new(T::default())
}

/// A section's value, whatever its type.
pub trait SectionValue: Any + fmt::Debug + Send + Sync {
    fn as_any(&self) -> &dyn Any;
    fn same(&self, other: &dyn SectionValue) -> bool;
    fn to_json(&self) -> serde_json::Value;
}

impl<T: ConfigSection> SectionValue for T {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn same(&self, other: &dyn SectionValue) -> bool {
        other.as_any().downcast_ref::<T>() == Some(self)
    }

    fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// The values of the registered sections, by key: each read, or its default when absent.
#[derive(Debug, Clone, Default)]
pub struct OwnedSections(pub(super) BTreeMap<&'static str, Arc<dyn SectionValue>>);

impl OwnedSections {
    /// The value of section `T`; `None` when the loader was not given it.
    pub fn get<T: ConfigSection>(&self) -> Option<&T> {
        self.0.get(T::KEY)?.as_any().downcast_ref()
    }
}

impl PartialEq for OwnedSections {
    fn eq(&self, other: &Self) -> bool {
        self.0.len() == other.0.len()
            && self
                .0
                .iter()
                .all(|(k, v)| other.0.get(k).is_some_and(|o| v.same(&**o)))
    }
}

impl Serialize for OwnedSections {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, &v.to_json())?;
        }
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;
    use crate::config::{Config, read_table};

    /// A section as another crate would write it: `[lab] level = N`, 1 to 9.
    #[derive(Debug, Clone, Default, PartialEq, Serialize)]
    struct Lab {
        level: i64,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct RawLab {
        level: toml::Spanned<i64>,
    }

    impl ConfigSection for Lab {
        const KEY: &'static str = "lab";
        const DEVICE_ONLY: bool = true;

        fn read(c: &mut Check<'_, '_>, v: &Section<'_>) -> Self {
            let raw: Option<RawLab> = read_table(c, v, "lab", "must be a table ([lab])");
            let level = raw.and_then(|r| c.int_in(&r.level, "lab.level", 1, 9));
            Lab {
                level: level.unwrap_or_default(),
            }
        }
    }

    const SECTIONS: &[Registered] = &[register::<Lab>()];
    const TARGET: &str = "[[targets]]\nname = \"a\"\nhost = \"::1\"\nprobes = [\"ping\"]\n";

    #[test]
    fn a_registered_section_is_read_with_its_default_when_absent() {
        let c = Config::parse_with(&format!("[lab]\nlevel = 3\n{TARGET}"), "t", SECTIONS).unwrap();
        assert_eq!(c.section::<Lab>(), Some(&Lab { level: 3 }));
        let c = Config::parse_with(TARGET, "t", SECTIONS).unwrap();
        assert_eq!(c.section::<Lab>(), Some(&Lab::default()));
        // Serialized under its key, like the core's own sections.
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["lab"], serde_json::json!({ "level": 0 }));
        // A loader not given the section has no value for it.
        assert_eq!(Config::parse(TARGET, "t").unwrap().section::<Lab>(), None);
    }

    #[test]
    fn its_errors_come_with_the_others_in_file_order() {
        let text =
            "[[targets]]\nname = \"a\"\nhost = \"::1\"\nprobes = [\"pong\"]\n[lab]\nlevel = 12\n";
        let e = Config::parse_with(text, "t", SECTIONS).unwrap_err();
        let got: Vec<_> = e
            .errors
            .iter()
            .map(|e| (e.line, e.field.as_str()))
            .collect();
        assert_eq!(
            got,
            [(Some(4), "targets[0].probes"), (Some(6), "lab.level")]
        );
        assert_eq!(e.errors[1].message, "must be between 1 and 9, got 12");
    }

    #[test]
    fn unregistered_keys_are_unknown_and_device_sections_stay_home() {
        let e = Config::parse("[lab]\nlevel = 3\n", "t").unwrap_err();
        assert!(
            e.errors[0].message.starts_with("unknown field `lab`"),
            "{e}"
        );
        // A mistyped key is told the registered ones too.
        let e = Config::parse_with("[lb]\nlevel = 3\n", "t", SECTIONS).unwrap_err();
        assert!(
            e.errors[0].message.ends_with(
                "expected one of `defaults`, `device`, `probe_endpoint`, `targets`, `lab`"
            ),
            "{e}"
        );
        let e = Config::parse_provisioned_with("[lab]\nlevel = 3\n", "t", SECTIONS).unwrap_err();
        assert_eq!(e.errors[0].field, "lab");
        assert_eq!(
            e.errors[0].message,
            "only the device's own config may set this section"
        );
    }
}
