//! A validated target and its module options: what a probe is given to run a round.

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::host::Host;
use crate::types::{ModuleId, ProbeKind};

/// A kind's validated options for one target. Implemented for every plain options struct.
pub trait Options: Any + Debug + Send + Sync {
    fn eq_dyn(&self, other: &dyn Options) -> bool;
    fn hash_dyn(&self, h: &mut dyn Hasher);
    fn json(&self) -> serde_json::Value;
    fn as_any(&self) -> &dyn Any;
}

impl<T: Any + Debug + PartialEq + Hash + Serialize + Send + Sync> Options for T {
    fn eq_dyn(&self, other: &dyn Options) -> bool {
        other.as_any().downcast_ref::<T>() == Some(self)
    }
    fn hash_dyn(&self, mut h: &mut dyn Hasher) {
        self.hash(&mut h);
    }
    fn json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// A target's options of one module kind.
#[derive(Debug, Clone)]
pub struct ModuleOptions {
    pub kind: ModuleId,
    pub options: Arc<dyn Options>,
}

impl ModuleOptions {
    pub fn get<T: Any>(&self) -> Option<&T> {
        self.options.as_any().downcast_ref()
    }
}

impl PartialEq for ModuleOptions {
    fn eq(&self, o: &Self) -> bool {
        self.kind == o.kind && self.options.eq_dyn(o.options.as_ref())
    }
}
impl Eq for ModuleOptions {}
impl Hash for ModuleOptions {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.kind.hash(h);
        self.options.hash_dyn(h);
    }
}
impl Serialize for ModuleOptions {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.options.json().serialize(s)
    }
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
        map.serialize_entry(o.kind.0, &o.options.json())?;
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
    pub fn set_options(&mut self, kind: ProbeKind, options: Arc<dyn Options>) {
        let ProbeKind::Module(m) = kind;
        self.modules.retain(|o| o.kind != m);
        self.modules.push(ModuleOptions { kind: m, options });
    }
}
