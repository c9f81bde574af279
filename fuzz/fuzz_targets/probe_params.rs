//! The parsers `/probe` hands its query parameters to (target, module, protocol, DNS query,
//! type and transport). The handler's own glue lives in the daemon binary, which has no library
//! to link; these are the functions that read what a client sends. Parameters are separated by
//! newlines in the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vantage_core::config::parse_host;
use vantage_core::{DnsOptions, DnsTransport, ProbeKind, TraceProtocol};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut p = text.split('\n');
    let mut next = || p.next().unwrap_or("");
    let (target, module, protocol) = (next(), next(), next());
    let (query, record_type, transport) = (next(), next(), next());
    let _ = parse_host(target);
    let _ = module.parse::<ProbeKind>();
    let _ = protocol.parse::<TraceProtocol>();
    let _ = DnsOptions::new(query, record_type);
    let _ = DnsTransport::parse(transport);
});
