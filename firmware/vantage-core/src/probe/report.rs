//! A kind's report of one round, behind one type the sample carries.

use std::any::Any;
use std::fmt::Debug;
use std::sync::Arc;

use serde::Serialize;

use crate::types::ModuleId;

/// A kind's report of one round. Implemented for every plain report struct.
pub trait Report: Any + Debug + Send + Sync {
    fn eq_dyn(&self, other: &dyn Report) -> bool;
    fn json(&self) -> serde_json::Value;
    fn as_any(&self) -> &dyn Any;
}

impl<T: Any + Debug + PartialEq + Serialize + Send + Sync> Report for T {
    fn eq_dyn(&self, other: &dyn Report) -> bool {
        other.as_any().downcast_ref::<T>() == Some(self)
    }
    fn json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// A module kind's report of one round (in [`Measurement::Module`](crate::Measurement)).
#[derive(Debug, Clone)]
pub struct ModuleReport {
    pub kind: ModuleId,
    pub report: Arc<dyn Report>,
}

impl ModuleReport {
    pub fn new<R: Report>(kind: ModuleId, report: R) -> Self {
        Self {
            kind,
            report: Arc::new(report),
        }
    }

    pub fn get<T: Any>(&self) -> Option<&T> {
        self.report.as_any().downcast_ref()
    }
}

impl PartialEq for ModuleReport {
    fn eq(&self, o: &Self) -> bool {
        self.kind == o.kind && self.report.eq_dyn(o.report.as_ref())
    }
}
impl Serialize for ModuleReport {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.report.json().serialize(s)
    }
}
