//! One file per probe kind, all behind the [`Probe`] trait.
//!
//! This file only declares the files and re-exports for the rest of the crate and the other
//! crates; nothing below it imports it. The kinds import what they share by its path:
//! [`round`] (a round and its prober), [`module`] (a kind as one module), [`report`],
//! [`resolve`]; [`registry`] names every kind.

pub(crate) mod dns;
mod engines;
pub(crate) mod http;
pub(crate) mod live;
pub(crate) mod module;
pub(crate) mod options;
pub(crate) mod pattern;
pub(crate) mod ping;
pub(crate) mod registry;
pub(crate) mod report;
pub(crate) mod resolve;
pub(crate) mod round;
pub(crate) mod tcp;
pub(crate) mod trace;
#[cfg(any(test, fuzzing))]
pub(crate) use {dns::fuzz as dns_fuzz, ping::fuzz as ping_fuzz};

pub use dns::{
    DnsFlags, DnsPhases, DnsProbe, DnsRecord, DnsReport, detail as dns_detail,
    series as dns_series, system_nameservers,
};
pub use live::LiveRun;
pub use module::{
    Detail, DetailUse, Glance, MAX_PHASES, Misfit, ModuleOptions, Options, OptionsInput, Peer,
    ProbeModule, ProbeQuery, Rollup, Section, family_mismatch, in_words, kind_names,
};
pub use ping::{PingProbe, series as ping_series};
pub use registry::{MODULES, probes};
pub use report::{ModuleReport, Report};
pub use resolve::{HostResolver, resolve_host};
pub use round::{AddressGuard, Probe, ProbeRequest, Progress, ProgressSender};
pub use trace::{
    DeviceRate as TraceDeviceRate, TraceProbe, series as trace_series,
    set_device_rate as set_trace_device_rate,
};

/// The module kinds' per-round gauges, for a crate that shows them under other names too
/// (`/probe`'s blackbox-compatible answer).
pub mod module_gauges {
    pub use super::http::{
        CONTENT_LENGTH as HTTP_CONTENT_LENGTH, PHASE as HTTP_PHASE, REDIRECTS as HTTP_REDIRECTS,
        STATUS as HTTP_STATUS,
    };
    pub use super::tcp::{CERT_NOT_AFTER as TLS_CERT_NOT_AFTER, TLS_VERSION};
}

/// "Run now" as the other crates see it (`vantage_core::live`): the live round's types and how
/// many rounds each kind runs.
pub mod live_run {
    pub use super::live::{Fields, LiveEvent, LiveRows, LiveRun};
    pub use super::ping::live::RUN_PINGS;
    pub use super::trace::live::RUN_TRACES;
}
