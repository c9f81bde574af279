//! Vantage status LEDs.
//!
//! A person by the device, with no screen, reads its state from one to three LEDs. The daemon
//! feeds a [`Health`] with probe results (and, later, the uplink and store states); a
//! [`Supervisor`] tick turns that into a [`DeviceState`] for the [`Leds`] renderer, which maps
//! it to a [`Pattern`] per LED ([`pattern_for`]) and plays it on a [`Led`] backend: the kernel
//! LED class ([`SysfsLed`]), Raspberry Pi GPIO pins ([`GpioLed`]), the log ([`LogLed`]), or
//! none. The same tick pings the systemd watchdog ([`Notifier`]) only while all is well.
//!
//! ```no_run
//! use std::time::Duration;
//! use vantage_leds::{DeviceState, Leds, LedRole, LogLed, Led};
//! let leds: Vec<(LedRole, Box<dyn Led>)> = vec![(LedRole::Status, Box::new(LogLed::new("act")))];
//! let leds = Leds::start(leds, Duration::from_secs(300), Duration::from_secs(5));
//! leds.update(DeviceState::default());
//! leds.identify(Some(Duration::from_secs(30)));
//! ```

// Functions over 80 lines (clippy.toml) are hard to review; tests are exempt (cfg_attr below).
#![warn(clippy::too_many_lines)]
#![cfg_attr(test, allow(clippy::too_many_lines))]

mod backend;
mod config;
mod driver;
mod health;
mod notify;
mod pattern;
mod state;
mod supervise;

use std::io;

#[cfg(target_os = "linux")]
pub use backend::RppalLine;
pub use backend::{GpioLed, Led, LogLed, OutputLine, SysfsLed};
pub use config::{
    IDENTIFY_TIMEOUT, IDENTIFY_TIMEOUT_RANGE, LedBackendKind, LedConfig, LedRole, LedsConfig,
    LedsSection, RawLed, RawLeds, STALE_AFTER, STALE_AFTER_RANGE, SYSFS_ROOT, check_led_name,
};
pub use driver::{LedView, Leds, MAX_IDENTIFY, Snapshot};
pub use health::{DEFAULT_BOOT_GRACE, Health, LedObserver};
pub use notify::Notifier;
pub use pattern::Pattern;
pub use state::{Condition, DeviceState, StoreHealth, Uplink, conditions, pattern_for};
pub use supervise::{Supervisor, TICK};

/// Opens the LEDs `[leds]` names; the first that cannot be opened is the error. `none`
/// gives an empty list.
pub fn open(cfg: &LedsConfig) -> io::Result<Vec<(LedRole, Box<dyn Led>)>> {
    let mut out: Vec<(LedRole, Box<dyn Led>)> = Vec::new();
    for l in &cfg.leds {
        if let Some(led) = open_one(cfg, l)? {
            out.push((l.role, led));
        }
    }
    Ok(out)
}

/// Opens one LED of `cfg`; `None` for the `none` backend.
pub fn open_one(cfg: &LedsConfig, l: &LedConfig) -> io::Result<Option<Box<dyn Led>>> {
    Ok(Some(match cfg.backend {
        LedBackendKind::None => return Ok(None),
        LedBackendKind::Log => Box::new(LogLed::new(&l.name)),
        LedBackendKind::Sysfs => Box::new(SysfsLed::open(&cfg.sysfs_root, &l.name)?),
        LedBackendKind::Gpio => open_gpio(l)?,
    }))
}

#[cfg(target_os = "linux")]
fn open_gpio(l: &LedConfig) -> io::Result<Box<dyn Led>> {
    let pin = l.pin.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("LED {}: no pin", l.name),
        )
    })?;
    Ok(Box::new(GpioLed::open(&l.name, pin, l.active_low)?))
}

#[cfg(not(target_os = "linux"))]
fn open_gpio(_: &LedConfig) -> io::Result<Box<dyn Led>> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "the gpio LED backend needs Linux on a Raspberry Pi",
    ))
}

/// The patterns of the boot state, for each role.
pub fn boot_patterns(roles: &[LedRole]) -> Vec<Pattern> {
    let conds = [Condition::Booting, Condition::Running];
    roles.iter().map(|r| pattern_for(*r, &conds)).collect()
}

/// Hands the boot pattern to the kernel so it shows before (and without) the daemon: what the
/// image runs early at boot (`vantage leds boot`). Returns the patterns set.
pub fn persist_boot(leds: &mut [(LedRole, Box<dyn Led>)]) -> io::Result<Vec<Pattern>> {
    let roles: Vec<LedRole> = leds.iter().map(|(r, _)| *r).collect();
    let patterns = boot_patterns(&roles);
    for ((_, led), p) in leds.iter_mut().zip(&patterns) {
        led.persist(*p)?;
    }
    Ok(patterns)
}
