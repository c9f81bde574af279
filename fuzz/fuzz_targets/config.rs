//! TOML text to a validated config: never a panic, whatever the text. The sections other
//! crates read (`[store]`, `[[remote_write]]`, `[leds]`) are registered as the daemon
//! registers them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vantage_core::Config;
use vantage_core::config::{Registered, register};
use vantage_leds::LedsConfig;
use vantage_store::config::StoreConfig;
use vantage_store::remote_write::config::RemoteWrites;

const SECTIONS: &[Registered] = &[
    register::<StoreConfig>(),
    register::<RemoteWrites>(),
    register::<LedsConfig>(),
];

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Config::parse_with(text, "fuzz", SECTIONS);
        let _ = Config::parse_provisioned_with(text, "fuzz", SECTIONS);
    }
});
