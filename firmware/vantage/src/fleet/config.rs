//! The daemon's fleet sections, read with the core's checks (each a [`ConfigSection`] that
//! `crate::config` registers with the loader), their defaults and ranges beside them:
//! `[uplink]` (probe the device's own gateway), `[discovery]` (mDNS announcement) and
//! `[provisioning]` (extra targets pulled from a URL). Only the device's own file may set them.
//!
//! `[uplink]` and `[discovery]` are off unless their section is present: both send packets
//! on the local network (ICMP to the gateway, multicast DNS), which a config must ask for.

use std::sync::LazyLock;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;
use vantage_core::Config;
use vantage_core::config::{Check, ConfigSection, Host, Secret, Section, parse_host, read_table};
use vantage_core::defaults::{self as D, Bounds, between};

/// Uplink: the gateway is probed every 5 seconds, so an alert can tell within a minute.
pub const UPLINK_INTERVAL: Duration = Duration::from_secs(5);
/// `uplink.interval`: a probe's interval range.
pub const UPLINK_INTERVAL_RANGE: Bounds<Duration> = D::INTERVAL_RANGE;
/// Uplink: wait for each gateway reply.
pub const UPLINK_TIMEOUT: Duration = Duration::from_secs(1);
/// `uplink.timeout`: a probe's timeout range (and below the interval).
pub const UPLINK_TIMEOUT_RANGE: Bounds<Duration> = D::TIMEOUT_RANGE;

/// Provisioning: fetch the central targets file every 5 minutes.
pub const PROVISIONING_REFRESH: Duration = Duration::from_secs(300);
/// `provisioning.refresh`: at least 10 s, so a fleet cannot hammer the server.
pub const PROVISIONING_REFRESH_RANGE: Bounds<Duration> =
    between(Duration::from_secs(10), D::MAX_INTERVAL);
/// Provisioning: limit for one fetch.
pub const PROVISIONING_TIMEOUT: Duration = Duration::from_secs(30);
/// `provisioning.timeout`.
pub const PROVISIONING_TIMEOUT_RANGE: Bounds<Duration> =
    between(D::MIN_TIMEOUT, Duration::from_secs(300));
/// Provisioning: the largest targets file accepted.
pub const MAX_PROVISIONING_BYTES: usize = 4 * 1024 * 1024;

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
            interval: UPLINK_INTERVAL,
            timeout: UPLINK_TIMEOUT,
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

/// `[provisioning]` when written: a section's value, `None` (shown as `null`) when absent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct ProvisioningSection(pub Option<Provisioning>);

impl ConfigSection for Uplink {
    const KEY: &'static str = "uplink";
    const DEVICE_ONLY: bool = true;

    fn read(c: &mut Check<'_, '_>, value: &Section<'_>) -> Self {
        match read_table::<RawUplink>(c, value, "uplink", "must be a table ([uplink])") {
            Some(raw) => validate_uplink(c, &raw),
            None => Uplink::default(),
        }
    }
}

impl ConfigSection for Discovery {
    const KEY: &'static str = "discovery";
    const DEVICE_ONLY: bool = true;

    /// A present section turns the announcement on unless it says `mdns = false`.
    fn read(c: &mut Check<'_, '_>, value: &Section<'_>) -> Self {
        let raw: Option<RawDiscovery> =
            read_table(c, value, "discovery", "must be a table ([discovery])");
        Discovery {
            mdns: raw.is_some_and(|d| d.mdns.as_ref().is_none_or(|m| *m.get_ref())),
        }
    }
}

impl ConfigSection for ProvisioningSection {
    const KEY: &'static str = "provisioning";
    const DEVICE_ONLY: bool = true;

    fn read(c: &mut Check<'_, '_>, value: &Section<'_>) -> Self {
        let raw: Option<RawProvisioning> =
            read_table(c, value, "provisioning", "must be a table ([provisioning])");
        ProvisioningSection(raw.map(|raw| validate_provisioning(c, &raw)))
    }
}

/// Sections of a config the loader was not given them for: off.
static NO_UPLINK: LazyLock<Uplink> = LazyLock::new(Uplink::default);
static NO_DISCOVERY: Discovery = Discovery { mdns: false };

/// The config's fleet sections, for a config read with them registered (`Config::section`).
pub trait FleetSections {
    fn uplink(&self) -> &Uplink;
    fn discovery(&self) -> &Discovery;
    fn provisioning(&self) -> Option<&Provisioning>;
}

impl FleetSections for Config {
    fn uplink(&self) -> &Uplink {
        self.section::<Uplink>().unwrap_or(&NO_UPLINK)
    }

    fn discovery(&self) -> &Discovery {
        self.section::<Discovery>().unwrap_or(&NO_DISCOVERY)
    }

    fn provisioning(&self) -> Option<&Provisioning> {
        self.section::<ProvisioningSection>()?.0.as_ref()
    }
}

fn validate_uplink(c: &mut Check<'_, '_>, raw: &RawUplink) -> Uplink {
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
        UPLINK_INTERVAL_RANGE,
    ) {
        u.interval = d;
    }
    if let Some(d) = c.ranged(
        r,
        None,
        |r| r.timeout.as_ref(),
        "uplink.timeout",
        UPLINK_TIMEOUT_RANGE,
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

fn validate_provisioning(c: &mut Check<'_, '_>, raw: &RawProvisioning) -> Provisioning {
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
            PROVISIONING_REFRESH_RANGE,
        )
        .unwrap_or(PROVISIONING_REFRESH);
    let timeout = c
        .ranged(
            r,
            None,
            |r| r.timeout.as_ref(),
            "provisioning.timeout",
            PROVISIONING_TIMEOUT_RANGE,
        )
        .unwrap_or(PROVISIONING_TIMEOUT);
    Provisioning {
        url: url.to_string(),
        token: raw.token.as_ref().map(|t| Secret(t.get_ref().clone())),
        token_file: raw.token_file.as_ref().map(|t| t.get_ref().clone()),
        ca_file: raw.ca_file.as_ref().map(|t| t.get_ref().clone()),
        refresh,
        timeout,
    }
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
