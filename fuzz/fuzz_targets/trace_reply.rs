//! The trace sockets' reply parsers, on any packet and what recvmsg said with it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = vantage_core::fuzz::trace_reply(data);
});
