//! `[device]`: the device's name and the labels on every series it exports, and the trace rate
//! the probing core shares among all traces. The daemon's other device sections (`[uplink]`,
//! `[discovery]`, `[provisioning]`, `[update]`) are the daemon's own (`ConfigSection`s).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::check::Check;
use super::names::{check_name, checked_labels};
use crate::defaults::{self, self as D};

/// `[device]` as written.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawDevice {
    pub name: Option<Spanned<String>>,
    #[serde(default)]
    pub labels: BTreeMap<Spanned<String>, Spanned<String>>,
    /// The most trace probes a second, all traces together.
    pub trace_probes_per_second: Option<Spanned<i64>>,
}

/// The device's identity on its series and in its announcement, and what it sends in all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Device {
    /// `None`: the daemon uses the host name.
    pub name: Option<String>,
    /// Added to every series the device exports (a target's own label of the same name wins).
    pub labels: BTreeMap<String, String>,
    /// The most trace probes a second, summed over every trace running at once.
    pub trace_probes_per_second: u32,
}

impl Default for Device {
    fn default() -> Self {
        Self {
            name: None,
            labels: BTreeMap::new(),
            trace_probes_per_second: defaults::DEVICE_TRACE_PROBES_PER_SECOND,
        }
    }
}

pub(crate) fn validate_device(c: &mut Check<'_, '_>, raw: &RawDevice) -> Device {
    let name = raw
        .name
        .as_ref()
        .and_then(|n| match check_name(n.get_ref()) {
            Ok(()) => Some(n.get_ref().clone()),
            Err(msg) => {
                c.err(Some(n.span()), "device.name", msg);
                None
            }
        });
    let labels = checked_labels(c, &raw.labels, "device", None);
    let trace_probes_per_second = c
        .ranged(
            Some(raw),
            None,
            |r| r.trace_probes_per_second.as_ref(),
            "device.trace_probes_per_second",
            D::DEVICE_TRACE_PROBES_PER_SECOND_RANGE,
        )
        .map_or(defaults::DEVICE_TRACE_PROBES_PER_SECOND, |v| v as u32);
    Device {
        name,
        labels,
        trace_probes_per_second,
    }
}
