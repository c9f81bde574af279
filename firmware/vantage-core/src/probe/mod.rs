//! One file per probe kind, all behind the [`Probe`] trait.

mod dns;
mod engines;
mod http;
pub mod live;
mod module;
mod ping;
mod tcp;
mod trace;
#[cfg(any(test, fuzzing))]
pub(crate) use {dns::fuzz as dns_fuzz, ping::fuzz as ping_fuzz};

use std::fmt::Debug;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

#[cfg(test)]
pub(crate) use dns::module::KIND as DNS_MODULE;
pub use dns::options::{
    AnswerData, DnsOptions, DnsTransport, DohMethod, Pattern, RawDns, parse_doh_path, parse_query,
    parse_rcode, parse_record_type, rcode_name,
};
pub use dns::{DnsProbe, detail as dns_detail, series as dns_series, system_nameservers};
pub use live::LiveRun;
pub use module::{
    Detail, DetailUse, MAX_PHASES, Misfit, ModuleOptions, ModuleReport, Options, OptionsInput,
    ProbeModule, ProbeQuery, Report, Rollup, Section, family_mismatch, in_words, kind_names,
    module_options_from,
};
pub use ping::options::{PingOptions, RawPing};
pub use ping::{PingProbe, series as ping_series};
pub use trace::options::{RawTrace, TraceOptions};
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

/// The probe modules: one line per kind.
pub static MODULES: &[&dyn ProbeModule] = &[
    &ping::module::Ping,
    &trace::module::Trace,
    &tcp::Tcp,
    &http::Http,
    &dns::module::Dns,
];

impl ProbeKind {
    /// The kind a request that names none is about (`probe=` of the page's and the store's
    /// endpoints, `module=` of `/probe`).
    pub const DEFAULT: ProbeKind = ProbeKind::PING;
}

/// A prober for every kind.
pub fn probes() -> Vec<Arc<dyn Probe>> {
    MODULES.iter().map(|m| m.probe()).collect()
}

use crate::config::host::Host;
use crate::config::target::Target;
use crate::lock::LockExt;
use crate::net::BoxFuture;
use crate::sample::{ProbeError, Sample};
use crate::types::{IpProtocol, ProbeKind};

/// What a probe is asked to do: probe this target once.
#[derive(Debug, Clone)]
pub struct ProbeRequest {
    pub target: Arc<Target>,
    /// An upper bound for the whole round (e.g. Prometheus' scrape timeout on `/probe`).
    pub deadline: Option<Duration>,
    /// What the round may reach, for a round a network client asked for (`/probe`); the
    /// config's own rounds have none.
    pub guard: Option<Arc<dyn AddressGuard>>,
    /// Where the round sends its answers as they arrive, for a caller that shows the round
    /// live (the page's "Run now", [`LiveRun`]); the ping and trace probes send them.
    pub progress: Option<ProgressSender>,
}

impl ProbeRequest {
    pub fn for_target(target: &Target) -> Self {
        Self {
            target: Arc::new(target.clone()),
            deadline: None,
            guard: None,
            progress: None,
        }
    }

    /// `ip` if the guard lets the round send to it (every address when there is no guard).
    pub fn checked(&self, ip: IpAddr) -> Result<IpAddr, ProbeError> {
        check_addr(self.guard.as_deref(), ip)
    }
}

/// One answer of a round, sent while the round runs (see [`ProbeRequest::progress`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Echo request number `index` (from 0 in the round): its RTT, or `None` once it timed
    /// out, could not be sent or drew an ICMP error. One per request.
    Echo { index: u32, rtt: Option<Duration> },
    /// An answer to a trace probe sent with `ttl` on flow `flow`, from `from`; `destination`
    /// when the target itself answered.
    Hop {
        ttl: u8,
        flow: u16,
        from: IpAddr,
        rtt: Duration,
        destination: bool,
    },
}

/// Where a round sends its [`Progress`]. Unbounded: a round's answers are bounded by its
/// options, and a round never waits for the caller.
pub type ProgressSender = tokio::sync::mpsc::UnboundedSender<Progress>;

/// What a round asked for over the network may reach. A probe checks the host it is about to
/// resolve (a redirect's too) and then the address it resolved to, right before sending: a
/// name that resolves to a refused address (DNS rebinding) is refused too.
pub trait AddressGuard: Send + Sync + Debug {
    /// A host and port the round is about to resolve and connect to (`None`: no port, ICMP).
    fn check_host(&self, host: &Host, port: Option<u16>) -> Result<(), String>;
    /// The address the host resolved to.
    fn check_addr(&self, ip: IpAddr) -> Result<(), String>;
}

/// `ip` if `guard` (when there is one) lets a round send to it.
pub fn check_addr(guard: Option<&dyn AddressGuard>, ip: IpAddr) -> Result<IpAddr, ProbeError> {
    match guard.map(|g| g.check_addr(ip)) {
        Some(Err(msg)) => Err(ProbeError::Validation(format!("refused: {msg}"))),
        _ => Ok(ip),
    }
}

/// Whether `guard` (when there is one) lets a round reach `host` on `port`.
pub fn check_host(
    guard: Option<&dyn AddressGuard>,
    host: &Host,
    port: Option<u16>,
) -> Result<(), ProbeError> {
    match guard.map(|g| g.check_host(host, port)) {
        Some(Err(msg)) => Err(ProbeError::Validation(format!("refused: {msg}"))),
        _ => Ok(()),
    }
}

/// A probe kind. Implementations never panic on bad input from the network and always return a
/// sample, failed or not.
pub trait Probe: Send + Sync + Debug {
    fn kind(&self) -> ProbeKind;
    fn run(&self, req: ProbeRequest) -> BoxFuture<'_, Sample>;
}

/// How long a resolved address is reused. Probes run every second; the system resolver need
/// not be asked that often, and a changed record is picked up within this time.
const RESOLVE_CACHE_TTL: Duration = Duration::from_secs(30);

/// Resolves hostnames through the system resolver, caching answers for [`RESOLVE_CACHE_TTL`].
/// Failures are not cached, so a name that starts resolving is used at once.
#[derive(Debug, Default)]
pub struct HostResolver {
    cache: std::sync::Mutex<
        std::collections::HashMap<(String, IpProtocol), (IpAddr, std::time::Instant)>,
    >,
}

impl HostResolver {
    pub async fn resolve(&self, host: &Host, proto: IpProtocol) -> Result<IpAddr, ProbeError> {
        let Host::Name(name) = host else {
            return resolve_host(host, proto).await;
        };
        let key = (name.clone(), proto);
        let now = std::time::Instant::now();
        {
            let mut cache = self.cache.lock_or_recover();
            match cache.get(&key) {
                Some((addr, at)) if now.duration_since(*at) < RESOLVE_CACHE_TTL => {
                    return Ok(*addr);
                }
                Some(_) => {
                    cache.remove(&key);
                }
                None => {}
            }
        }
        let addr = resolve_host(host, proto).await?;
        self.cache.lock_or_recover().insert(key, (addr, now));
        Ok(addr)
    }
}

/// Resolves a target's host to one address of the wanted family.
pub async fn resolve_host(host: &Host, proto: IpProtocol) -> Result<IpAddr, ProbeError> {
    let name = match host {
        Host::Ip(ip) => return Ok(*ip),
        Host::Name(n) => n.trim_end_matches('.'),
    };
    let addrs = tokio::time::timeout(Duration::from_secs(5), tokio::net::lookup_host((name, 0)))
        .await
        .map_err(|_| ProbeError::Resolve(format!("{name}: resolver timed out")))?
        .map_err(|e| ProbeError::Resolve(format!("{name}: {e}")))?;
    let mut addrs = addrs.map(|sa| sa.ip());
    let found = match proto {
        IpProtocol::Auto => addrs.next(),
        IpProtocol::Ipv4 => addrs.find(IpAddr::is_ipv4),
        IpProtocol::Ipv6 => addrs.find(IpAddr::is_ipv6),
    };
    found.ok_or_else(|| ProbeError::Resolve(format!("{name}: no {} address", proto.as_str())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn resolver_caches_names_and_passes_addresses_through() {
        let r = HostResolver::default();
        let ip = Host::Ip("192.0.2.1".parse().unwrap());
        assert_eq!(
            r.resolve(&ip, IpProtocol::Auto).await.unwrap(),
            "192.0.2.1".parse::<IpAddr>().unwrap()
        );
        // "localhost" resolves from /etc/hosts without any network traffic.
        let name = Host::Name("localhost".into());
        let first = r.resolve(&name, IpProtocol::Ipv4).await.unwrap();
        assert_eq!(first, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(r.cache.lock().unwrap().len(), 1);
        assert_eq!(r.resolve(&name, IpProtocol::Ipv4).await.unwrap(), first);
        // A failed lookup is not cached; a successful one is.
        let v6 = r.resolve(&name, IpProtocol::Ipv6).await;
        assert_eq!(r.cache.lock().unwrap().len(), 1 + usize::from(v6.is_ok()));
    }
}
