//! The DNS probe: one question to one server, over UDP, TCP, TLS or HTTPS, and the raw answer
//! judged.
//!
//! The wire format comes from hickory-proto; the transports are ours, so the probe sees every
//! rcode as the server sent it (a caching resolver library would turn SERVFAIL into an error and
//! retry elsewhere) and can time each phase. Nothing is cached between rounds: every round opens
//! a fresh socket with a fresh source port and query ID.
//!
//! `host = "system"` asks the nameservers of `/etc/resolv.conf` in order, with the same code, and
//! moves on to the next one where glibc's stub resolver would (no answer, SERVFAIL, NOTIMP,
//! REFUSED), so the probe sees what applications on this machine see.

pub mod detail;
pub(crate) mod module;
pub(crate) mod options;
pub(crate) mod report;
mod run;
pub mod series;

pub use report::{DnsFlags, DnsPhases, DnsRecord, DnsReport};
/// Read by every probe that does a TLS handshake.
pub(crate) use run::build_tls_config;
#[cfg(any(test, fuzzing))]
pub(crate) use run::fuzz;
pub use run::{DnsProbe, system_nameservers};
