//! TOML text to a validated config: never a panic, whatever the text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vantage_core::Config;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Config::parse(text, "fuzz");
        let _ = Config::parse_provisioned(text, "fuzz");
    }
});
