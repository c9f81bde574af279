//! The config file as the daemon reads it: the core's sections plus those the daemon's crates
//! own (`[store]` and `[[remote_write]]` by `vantage-store`, `[leds]` by `vantage-leds`),
//! registered with the core's loader. The daemon, `vantage check-config` and the page's
//! validation all load through here, so their errors are the same.

use std::path::Path;

use vantage_core::config::{Registered, register};
use vantage_core::{Config, ConfigErrors};
use vantage_leds::LedsConfig;
use vantage_store::config::StoreConfig;
use vantage_store::remote_write::config::RemoteWrites;

/// The top-level sections read outside the core.
pub const SECTIONS: &[Registered] = &[
    register::<StoreConfig>(),
    register::<RemoteWrites>(),
    register::<LedsConfig>(),
];

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    Config::load_with(path, SECTIONS)
}

/// Parses and validates config text; `file` names it in error messages.
pub fn parse(text: &str, file: &str) -> Result<Config, ConfigErrors> {
    Config::parse_with(text, file, SECTIONS)
}

/// Parses a provisioned targets file, which may not set the device's own sections.
pub fn parse_provisioned(text: &str, file: &str) -> Result<Config, ConfigErrors> {
    Config::parse_provisioned_with(text, file, SECTIONS)
}
