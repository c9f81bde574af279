//! The ping probe's echo-reply parser, on any packet.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = vantage_core::fuzz::echo_reply(data);
});
