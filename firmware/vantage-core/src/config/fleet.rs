//! Device-level sections for running a fleet: `[device]` (name and labels on every series),
//! `[uplink]` (probe the device's own gateway), `[discovery]` (mDNS announcement) and
//! `[provisioning]` (extra targets pulled from a URL).
//!
//! `[uplink]` and `[discovery]` are off unless their section is present: both send packets
//! on the local network (ICMP to the gateway, multicast DNS), which a config must ask for.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::check::Check;
use super::host::{Host, parse_host};
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

/// `[uplink]` as written.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawUplink {
    pub gateway: Option<Spanned<bool>>,
    pub upstream: Option<Spanned<String>>,
    pub interval: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
}

/// `[discovery]` as written.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawDiscovery {
    pub mdns: Option<Spanned<bool>>,
}

/// `[provisioning]` as written.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawProvisioning {
    pub url: Spanned<String>,
    pub token: Option<Spanned<String>>,
    pub token_file: Option<Spanned<String>>,
    pub ca_file: Option<Spanned<String>>,
    pub refresh: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
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

/// Probing the device's own way out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Uplink {
    pub enabled: bool,
    /// Probe the default gateways found in the routing table.
    pub gateway: bool,
    /// An extra host beyond the gateway (e.g. the ISP's first router).
    pub upstream: Option<Host>,
    pub interval: Duration,
    pub timeout: Duration,
}

impl Default for Uplink {
    fn default() -> Self {
        Self {
            enabled: false,
            gateway: true,
            upstream: None,
            interval: defaults::UPLINK_INTERVAL,
            timeout: defaults::UPLINK_TIMEOUT,
        }
    }
}

/// Announcing the device on the local network.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Discovery {
    pub mdns: bool,
}

/// Where extra targets come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Provisioning {
    pub url: String,
    /// Never serialised: the config may be shown on the web page.
    #[serde(skip)]
    pub token: Option<Secret>,
    pub token_file: Option<String>,
    pub ca_file: Option<String>,
    pub refresh: Duration,
    pub timeout: Duration,
}

/// A string that does not print itself (nor serialize: it shows as `"<secret>"`).
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Secret(pub String);

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<secret>")
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
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

pub(crate) fn validate_uplink(c: &mut Check<'_, '_>, raw: Option<&RawUplink>) -> Uplink {
    let Some(raw) = raw else {
        return Uplink::default();
    };
    let mut u = Uplink {
        enabled: true,
        ..Uplink::default()
    };
    if let Some(g) = &raw.gateway {
        u.gateway = *g.get_ref();
    }
    if let Some(h) = &raw.upstream {
        match parse_host(h.get_ref()) {
            Ok(host) => u.upstream = Some(host),
            Err(msg) => c.err(Some(h.span()), "uplink.upstream", msg),
        }
    }
    let r = Some(raw);
    if let Some(d) = c.ranged(
        r,
        None,
        |r| r.interval.as_ref(),
        "uplink.interval",
        D::INTERVAL_RANGE,
    ) {
        u.interval = d;
    }
    if let Some(d) = c.ranged(
        r,
        None,
        |r| r.timeout.as_ref(),
        "uplink.timeout",
        D::TIMEOUT_RANGE,
    ) {
        u.timeout = d;
    }
    if u.timeout >= u.interval {
        c.err(
            raw.timeout.as_ref().map(|t| t.span()),
            "uplink.timeout",
            format!(
                "must be shorter than the interval ({})",
                humantime::format_duration(u.interval)
            ),
        );
    }
    if !u.gateway && u.upstream.is_none() {
        c.err(
            raw.gateway.as_ref().map(|g| g.span()),
            "uplink.gateway",
            "is false and no upstream is set: the section would probe nothing",
        );
    }
    u
}

pub(crate) fn validate_discovery(raw: Option<&RawDiscovery>) -> Discovery {
    Discovery {
        mdns: raw.is_some_and(|d| d.mdns.as_ref().is_none_or(|m| *m.get_ref())),
    }
}

pub(crate) fn validate_provisioning(
    c: &mut Check<'_, '_>,
    raw: Option<&RawProvisioning>,
) -> Option<Provisioning> {
    let raw = raw?;
    let url = raw.url.get_ref().trim();
    check_provisioning_url(c, raw, url);
    check_provisioning_secrets(c, raw);
    let r = Some(raw);
    let refresh = c
        .ranged(
            r,
            None,
            |r| r.refresh.as_ref(),
            "provisioning.refresh",
            D::PROVISIONING_REFRESH_RANGE,
        )
        .unwrap_or(defaults::PROVISIONING_REFRESH);
    let timeout = c
        .ranged(
            r,
            None,
            |r| r.timeout.as_ref(),
            "provisioning.timeout",
            D::PROVISIONING_TIMEOUT_RANGE,
        )
        .unwrap_or(defaults::PROVISIONING_TIMEOUT);
    Some(Provisioning {
        url: url.to_string(),
        token: raw.token.as_ref().map(|t| Secret(t.get_ref().clone())),
        token_file: raw.token_file.as_ref().map(|t| t.get_ref().clone()),
        ca_file: raw.ca_file.as_ref().map(|t| t.get_ref().clone()),
        refresh,
        timeout,
    })
}

/// The server's URL: https only, since the token and the targets travel over it.
fn check_provisioning_url(c: &mut Check<'_, '_>, raw: &RawProvisioning, url: &str) {
    let lower = url.to_ascii_lowercase();
    if !lower.starts_with("https://") {
        c.err(
            Some(raw.url.span()),
            "provisioning.url",
            format!("{url:?} must be an https:// URL: the token and the targets must not travel in clear"),
        );
    } else if url.len() <= "https://".len()
        || url.chars().any(|ch| ch.is_whitespace() || ch.is_control())
    {
        c.err(
            Some(raw.url.span()),
            "provisioning.url",
            format!("{url:?} is not a valid URL"),
        );
    }
}

/// The token, or the file holding it, and the CA file.
fn check_provisioning_secrets(c: &mut Check<'_, '_>, raw: &RawProvisioning) {
    if let (Some(_), Some(f)) = (&raw.token, &raw.token_file) {
        c.err(
            Some(f.span()),
            "provisioning.token_file",
            "set either token or token_file, not both",
        );
    }
    for (v, field) in [
        (&raw.token_file, "provisioning.token_file"),
        (&raw.ca_file, "provisioning.ca_file"),
    ] {
        if let Some(v) = v
            && v.get_ref().trim().is_empty()
        {
            c.err(Some(v.span()), field, "must not be empty");
        }
    }
    if let Some(t) = &raw.token
        && (t.get_ref().is_empty() || t.get_ref().chars().any(|ch| ch.is_control() || ch == ' '))
    {
        c.err(
            Some(t.span()),
            "provisioning.token",
            "must be a non-empty token without spaces or control characters",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_not_shown() {
        let s = Secret("hunter2".into());
        assert!(!format!("{s:?}").contains("hunter2"));
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"<secret>\"");
    }
}
