//! Vantage probing core.
//!
//! The config model, the scheduler and the probes. Nothing in here speaks HTTP, drives GPIO or
//! writes to disk: the daemon wires the core to those. Sockets and the clock sit behind small
//! traits ([`net::IcmpSocket`], [`Clock`]) so the probing logic is testable without root.
//!
//! ```no_run
//! use vantage_core::{Config, PingProbe, Probe, ProbeRequest};
//! # async fn demo() {
//! let cfg = Config::parse(r#"
//!     [[targets]]
//!     name = "gw"
//!     host = "127.0.0.1"
//!     probes = ["ping"]
//! "#, "inline").unwrap();
//! let probe = PingProbe::new();
//! let sample = probe.run(ProbeRequest::for_target(&cfg.targets[0])).await;
//! println!("{sample:?}");
//! # }
//! ```

// Functions over 80 lines (clippy.toml) are hard to review; tests are exempt (cfg_attr below).
#![warn(clippy::too_many_lines)]
#![cfg_attr(test, allow(clippy::too_many_lines))]

mod clock;
pub mod config;
pub mod defaults;
mod error_text;
// Entry points to private parsers for the fuzz targets (fuzz/), built only with `--cfg fuzzing`.
#[cfg(any(test, fuzzing))]
#[doc(hidden)]
pub mod fuzz;
mod lock;
pub mod net;
mod probe;
mod quality;
mod runner;
mod sample;
mod scheduler;
pub mod series;
mod types;

pub use clock::{Clock, ManualClock, SystemClock, TokioClock, utc_to_unix};
pub use config::{
    Config, ConfigError, ConfigErrors, ConfigSection, DnsOptions, DnsTransport, DohMethod, Host,
    PingOptions, Target, TraceOptions,
};
pub use error_text::error_chain;
pub use lock::{LockExt, RwLockExt};
pub use probe::{
    AddressGuard, Detail, DetailUse, DnsFlags, DnsPhases, DnsProbe, DnsRecord, DnsReport, Glance,
    HostResolver, LiveRun, MAX_PHASES, MODULES, Misfit, ModuleOptions, ModuleReport, Options,
    OptionsInput, Peer, PingProbe, Probe, ProbeModule, ProbeQuery, ProbeRequest, Progress,
    ProgressSender, Report, Rollup, Section, TraceDeviceRate, TraceProbe, dns_detail, dns_series,
    family_mismatch, in_words, kind_names, live_run as live, module_gauges, ping_series, probes,
    resolve_host, set_trace_device_rate, system_nameservers, trace_series,
};
pub use quality::{
    LATE_THRESHOLD, PSI_READ_INTERVAL, Pressure, ProcPressure, Resource, RoundQuality,
    STALL_THRESHOLD, Stall,
};
pub use runner::{Applied, Observer, Runner, RunnerParts};
pub use sample::{
    Balancing, HopReport, HopResponder, Measurement, PingReport, ProbeError, Sample, TraceReport,
    Unreachable,
};
pub use scheduler::{Job, JobKey, Scheduler, SchedulerEvent, spread_offset};
pub use types::{IpProtocol, ModuleId, ProbeKind, TraceDiscovery, TraceProtocol, TraceSockets};
