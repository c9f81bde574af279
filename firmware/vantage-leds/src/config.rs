//! `[leds]`: which status LEDs the device has and how they are driven, read with the core's
//! checks (a [`ConfigSection`] the daemon registers with the loader), defaults and ranges
//! beside it.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::LazyLock;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;
use vantage_core::Config;
use vantage_core::config::{Check, ConfigSection, Section, read_table};
use vantage_core::defaults::{self, Bounds, between};

/// Where the kernel's LED class lives.
pub const SYSFS_ROOT: &str = "/sys/class/leds";
/// How long "identify" blinks when the request names no duration: long enough to walk to a rack.
pub const IDENTIFY_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// `leds.identify_timeout`: from a second to a day.
pub const IDENTIFY_TIMEOUT_RANGE: Bounds<Duration> =
    between(Duration::from_secs(1), Duration::from_secs(24 * 3600));
/// The daemon's main loop ticks every second; this many seconds of silence means it is stuck.
pub const STALE_AFTER: Duration = Duration::from_secs(5);
/// `leds.stale_after`: more than one tick, at most ten minutes.
pub const STALE_AFTER_RANGE: Bounds<Duration> =
    between(Duration::from_secs(2), Duration::from_secs(600));

/// `[leds]` as written.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawLeds {
    /// `sysfs`, `gpio`, `log` or `none`.
    pub backend: Option<Spanned<String>>,
    /// Where the kernel LED class lives; tests point it at a fake tree.
    pub sysfs_root: Option<Spanned<String>>,
    /// How long "identify" blinks when the request names no duration.
    pub identify_timeout: Option<Spanned<String>>,
    /// How long the daemon's main loop may go quiet before the LEDs say "not responding".
    pub stale_after: Option<Spanned<String>>,
    pub led: Option<Spanned<Vec<RawLed>>>,
}

/// One `[[leds.led]]` as written.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawLed {
    pub role: Spanned<String>,
    /// sysfs: the LED's directory under `sysfs_root`; gpio and log: a label.
    pub name: Option<Spanned<String>>,
    /// gpio: BCM pin number.
    pub pin: Option<Spanned<i64>>,
    /// gpio: the LED lights when the pin is low.
    pub active_low: Option<Spanned<bool>>,
}

/// How the LEDs are driven.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LedBackendKind {
    /// No LEDs: the state machine still runs (identify, metrics), nothing lights.
    #[default]
    None,
    /// The kernel LED class, `/sys/class/leds/<name>`.
    Sysfs,
    /// Raspberry Pi GPIO pins, by BCM number.
    Gpio,
    /// Pattern changes written to the log, for development.
    Log,
}

impl LedBackendKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LedBackendKind::None => "none",
            LedBackendKind::Sysfs => "sysfs",
            LedBackendKind::Gpio => "gpio",
            LedBackendKind::Log => "log",
        }
    }
}

/// What one LED shows. Three LEDs use `health`, `targets` and `system`; two use `health` and
/// `problem`; one uses `status`. See the README for the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LedRole {
    /// The daemon itself: booting, running, not responding (green).
    Health,
    /// Probe targets failing (amber).
    Targets,
    /// Uplink and storage (red).
    System,
    /// `targets` and `system` on one LED, the more urgent one winning.
    Problem,
    /// Everything on a single LED.
    Status,
}

impl LedRole {
    pub const ALL: [LedRole; 5] = [
        LedRole::Health,
        LedRole::Targets,
        LedRole::System,
        LedRole::Problem,
        LedRole::Status,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LedRole::Health => "health",
            LedRole::Targets => "targets",
            LedRole::System => "system",
            LedRole::Problem => "problem",
            LedRole::Status => "status",
        }
    }
}

impl fmt::Display for LedRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One validated LED.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LedConfig {
    pub role: LedRole,
    /// sysfs directory name, or a label (gpio: `gpio<pin>` when none is given).
    pub name: String,
    pub pin: Option<u8>,
    pub active_low: bool,
}

/// The validated `[leds]` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LedsConfig {
    pub backend: LedBackendKind,
    pub sysfs_root: PathBuf,
    pub identify_timeout: Duration,
    pub stale_after: Duration,
    pub leds: Vec<LedConfig>,
}

impl Default for LedsConfig {
    fn default() -> Self {
        Self {
            backend: LedBackendKind::None,
            sysfs_root: PathBuf::from(SYSFS_ROOT),
            identify_timeout: IDENTIFY_TIMEOUT,
            stale_after: STALE_AFTER,
            leds: Vec::new(),
        }
    }
}

/// The three-LED layout the `log` backend shows when no LED is listed.
fn default_log_leds() -> Vec<LedConfig> {
    [
        (LedRole::Health, "green"),
        (LedRole::Targets, "amber"),
        (LedRole::System, "red"),
    ]
    .into_iter()
    .map(|(role, name)| LedConfig {
        role,
        name: name.to_string(),
        pin: None,
        active_low: false,
    })
    .collect()
}

/// Highest BCM GPIO number on any Raspberry Pi (the Pi 1–4 SoCs have 0..=53; the Pi 5's header
/// exposes 0..=27).
const MAX_BCM_PIN: i64 = 53;
const MAX_LEDS: usize = 3;

/// What the LEDs seen so far took: each role, name and pin belongs to one LED.
#[derive(Default)]
struct Taken {
    roles: HashMap<LedRole, usize>,
    names: HashMap<String, usize>,
    pins: HashMap<u8, usize>,
}

impl ConfigSection for LedsConfig {
    const KEY: &'static str = "leds";
    const DEVICE_ONLY: bool = true;

    /// `[leds]`, read on its own so its errors name the field, like a target's.
    fn read(c: &mut Check<'_, '_>, value: &Section<'_>) -> Self {
        let raw: Option<RawLeds> = read_table(c, value, "leds", "must be a table ([leds])");
        LedsConfig::resolve(c, raw.as_ref())
    }
}

/// `[leds]` of a config the loader was not given the section for: no LEDs.
static NO_LEDS: LazyLock<LedsConfig> = LazyLock::new(LedsConfig::default);

/// The config's `[leds]`, for a config read with [`LedsConfig`] registered (`Config::section`).
pub trait LedsSection {
    fn leds(&self) -> &LedsConfig;
}

impl LedsSection for Config {
    fn leds(&self) -> &LedsConfig {
        self.section::<LedsConfig>().unwrap_or(&NO_LEDS)
    }
}

impl LedsConfig {
    fn resolve(c: &mut Check<'_, '_>, raw: Option<&RawLeds>) -> Self {
        let mut out = Self::default();
        let Some(raw) = raw else {
            return out;
        };
        out.resolve_settings(c, raw);
        let backend = out.backend;
        let list: &[RawLed] = raw.led.as_ref().map_or(&[], |l| l.get_ref());
        let list_span = raw.led.as_ref().map(|l| l.span());
        if list.len() > MAX_LEDS {
            c.err(
                list_span.clone(),
                "leds.led",
                format!("{} LEDs; at most {MAX_LEDS} are supported", list.len()),
            );
        }
        if list.is_empty() && matches!(backend, LedBackendKind::Sysfs | LedBackendKind::Gpio) {
            c.err(
                raw.backend.as_ref().map(|b| b.span()),
                "leds.led",
                format!(
                    "the {} backend needs at least one [[leds.led]]",
                    backend.as_str()
                ),
            );
        }
        let mut taken = Taken::default();
        for (i, led) in list.iter().enumerate() {
            if let Some(led) = out.resolve_led(c, i, led, &mut taken) {
                out.leds.push(led);
            }
        }
        check_layout(c, &taken.roles, list_span);
        if list.is_empty() && backend == LedBackendKind::Log {
            out.leds = default_log_leds();
        }
        out
    }

    /// The settings of `[leds]` other than the LEDs themselves.
    fn resolve_settings(&mut self, c: &mut Check<'_, '_>, raw: &RawLeds) {
        if let Some(b) = &raw.backend {
            match b.get_ref().as_str() {
                "none" => self.backend = LedBackendKind::None,
                "sysfs" => self.backend = LedBackendKind::Sysfs,
                "gpio" => self.backend = LedBackendKind::Gpio,
                "log" => self.backend = LedBackendKind::Log,
                other => c.err(
                    b.span(),
                    "leds.backend",
                    format!("{other:?} is not one of sysfs, gpio, log, none"),
                ),
            }
        }
        if let Some(root) = &raw.sysfs_root {
            if root.get_ref().starts_with('/') {
                self.sysfs_root = PathBuf::from(root.get_ref());
            } else {
                c.err(
                    root.span(),
                    "leds.sysfs_root",
                    format!("{:?} must be an absolute path", root.get_ref()),
                );
            }
        }
        let raw = Some(raw);
        if let Some(d) = c.ranged(
            raw,
            None,
            |r| r.identify_timeout.as_ref(),
            "leds.identify_timeout",
            IDENTIFY_TIMEOUT_RANGE,
        ) {
            self.identify_timeout = d;
        }
        if let Some(d) = c.ranged(
            raw,
            None,
            |r| r.stale_after.as_ref(),
            "leds.stale_after",
            STALE_AFTER_RANGE,
        ) {
            self.stale_after = d;
        }
    }

    /// One `[[leds.led]]`; `None` when it cannot be used at all.
    fn resolve_led(
        &self,
        c: &mut Check<'_, '_>,
        i: usize,
        led: &RawLed,
        taken: &mut Taken,
    ) -> Option<LedConfig> {
        let backend = self.backend;
        let path = format!("leds.led[{i}]");
        let Some(role) = LedRole::ALL
            .into_iter()
            .find(|r| r.as_str() == led.role.get_ref())
        else {
            c.err(
                led.role.span(),
                &format!("{path}.role"),
                format!(
                    "{:?} is not one of health, targets, system, problem, status",
                    led.role.get_ref()
                ),
            );
            return None;
        };
        if let Some(first) = taken.roles.insert(role, i) {
            c.err(
                led.role.span(),
                &format!("{path}.role"),
                format!("leds.led[{first}] already has the role {role}"),
            );
        }
        let pin = led_pin(c, &path, led, backend);
        if let (Some(p), LedBackendKind::Gpio) = (pin, backend)
            && let Some(first) = taken.pins.insert(p, i)
        {
            c.err(
                led.pin.as_ref().map(|s| s.span()),
                &format!("{path}.pin"),
                format!("pin {p} is already used by leds.led[{first}]"),
            );
        }
        let active_low = led_active_low(c, &path, led, backend);
        let name = self.led_name(c, &path, led, role, pin)?;
        if let Some(first) = taken.names.insert(name.clone(), i) {
            c.err(
                led.name.as_ref().map(|s| s.span()),
                &format!("{path}.name"),
                format!("{name:?} is already the name of leds.led[{first}]"),
            );
        }
        Some(LedConfig {
            role,
            name,
            pin,
            active_low,
        })
    }

    /// The LED's name: as written, else one made from its pin or role (not for sysfs, whose
    /// LEDs are found by name).
    fn led_name(
        &self,
        c: &mut Check<'_, '_>,
        path: &str,
        led: &RawLed,
        role: LedRole,
        pin: Option<u8>,
    ) -> Option<String> {
        match &led.name {
            Some(n) => match check_led_name(n.get_ref()) {
                Ok(()) => Some(n.get_ref().clone()),
                Err(msg) => {
                    c.err(n.span(), &format!("{path}.name"), msg);
                    None
                }
            },
            None if self.backend == LedBackendKind::Sysfs => {
                c.err(
                    led.role.span(),
                    &format!("{path}.name"),
                    format!(
                        "the sysfs backend needs the LED's name (a directory in {})",
                        self.sysfs_root.display()
                    ),
                );
                None
            }
            None => Some(match pin {
                Some(p) => format!("gpio{p}"),
                None => role.as_str().to_string(),
            }),
        }
    }
}

/// The LED's BCM pin: required by the gpio backend, meaningless for sysfs.
fn led_pin(c: &mut Check<'_, '_>, path: &str, led: &RawLed, backend: LedBackendKind) -> Option<u8> {
    match (&led.pin, backend) {
        (Some(p), LedBackendKind::Gpio | LedBackendKind::Log) => c
            .int_in(p, &format!("{path}.pin"), 0, MAX_BCM_PIN)
            .map(|p| p as u8),
        (Some(p), _) => {
            c.err(
                p.span(),
                &format!("{path}.pin"),
                format!("pins are for the gpio backend, not {}", backend.as_str()),
            );
            None
        }
        (None, LedBackendKind::Gpio) => {
            c.err(
                led.role.span(),
                &format!("{path}.pin"),
                "the gpio backend needs the LED's BCM pin number",
            );
            None
        }
        (None, _) => None,
    }
}

/// Whether the LED lights on a low pin: gpio and log only, the kernel handles it for sysfs.
fn led_active_low(
    c: &mut Check<'_, '_>,
    path: &str,
    led: &RawLed,
    backend: LedBackendKind,
) -> bool {
    match (&led.active_low, backend) {
        (Some(v), LedBackendKind::Sysfs) => {
            c.err(
                v.span(),
                &format!("{path}.active_low"),
                "the kernel LED class handles polarity itself (device tree); remove active_low",
            );
            false
        }
        (Some(v), _) => *v.get_ref(),
        (None, _) => false,
    }
}

/// Roles must form one of the layouts the README's table describes.
fn check_layout(
    c: &mut Check<'_, '_>,
    roles: &HashMap<LedRole, usize>,
    span: Option<std::ops::Range<usize>>,
) {
    let has = |r: LedRole| roles.contains_key(&r);
    if has(LedRole::Status) && roles.len() > 1 {
        c.err(
            span.clone(),
            "leds.led",
            "role status shows everything on one LED; it cannot be combined with other roles",
        );
    }
    if has(LedRole::Problem) && (has(LedRole::Targets) || has(LedRole::System)) {
        c.err(
            span,
            "leds.led",
            "role problem combines targets and system; use either problem or targets/system",
        );
    }
}

/// LED names are directory names in the LED class (`ACT`, `led0`, `vantage:green:status`).
pub fn check_led_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name == "." || name == ".." {
        return Err(format!("{name:?} is not an LED name"));
    }
    if name.chars().count() > defaults::MAX_NAME_LEN {
        return Err(format!(
            "is longer than {} characters",
            defaults::MAX_NAME_LEN
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| c.is_control() || c.is_whitespace() || *c == '/')
    {
        return Err(format!(
            "contains {c:?}; an LED name is one directory name without '/' or spaces"
        ));
    }
    Ok(())
}
