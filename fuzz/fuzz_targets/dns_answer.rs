//! The DNS probe's answer checks and report, on any message.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = vantage_core::fuzz::dns_answer(data);
});
