//! What a `/probe` round may reach: the config's `[probe_endpoint]` (kinds, ports, no
//! link-local or cloud metadata addresses) and the web settings' `probe_allowlist`. Checked
//! twice: before the round, on the target as written and on every address its name resolves
//! to (a refusal is a 400, or a 403 for the allow-list); and during the round, by the probe
//! itself on the address it connects to and on each redirect ([`AddressGuard`]), so a name
//! that resolves elsewhere the second time (DNS rebinding) is refused too.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vantage_core::config::ProbeEndpoint;
use vantage_core::{AddressGuard, Host, IpProtocol, ProbeKind};

use crate::probe_compat::Lookup;

/// How long the check before the round waits for the system resolver.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// The web settings' allow-list for one request, as the front door puts it on the request.
#[derive(Clone)]
pub struct Allowlist(pub Arc<dyn Fn(&Host) -> bool + Send + Sync>);

impl fmt::Debug for Allowlist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Allowlist(..)")
    }
}

/// The rules of one `/probe` round.
#[derive(Debug)]
pub struct ProbeGuard {
    pub endpoint: ProbeEndpoint,
    pub kind: ProbeKind,
    pub allow: Option<Allowlist>,
}

/// Why a request is refused: a bad target (400) or one outside the allow-list (403).
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    BadRequest(String),
    Forbidden(String),
}

impl ProbeGuard {
    fn allowed(&self, host: &Host) -> Result<(), String> {
        match &self.allow {
            Some(a) if !(a.0)(host) => {
                Err(format!("target {host} is not in the /probe allow-list"))
            }
            _ => Ok(()),
        }
    }

    /// Before the round: the kind, the port, the host as written, the allow-list, then every
    /// address the host's name resolves to (within `deadline`). What the name resolved to, and
    /// how fast.
    pub async fn admit(
        &self,
        host: &Host,
        port: Option<u16>,
        proto: IpProtocol,
        deadline: Duration,
    ) -> Result<Lookup, Refusal> {
        let bad = |m: String| Refusal::BadRequest(m);
        self.endpoint.check_module(self.kind).map_err(bad)?;
        if let Some(p) = port {
            self.endpoint.check_port(self.kind, p).map_err(bad)?;
        }
        self.endpoint
            .check_host(host)
            .map_err(|m| bad(format!("target {m}")))?;
        self.allowed(host).map_err(Refusal::Forbidden)?;
        let name = match host {
            Host::Ip(ip) => {
                return Ok(Lookup {
                    took: Duration::ZERO,
                    address: Some(*ip),
                });
            }
            _ if host.is_system() => {
                return Ok(Lookup {
                    took: Duration::ZERO,
                    address: None,
                });
            }
            Host::Name(n) => n.trim_end_matches('.'),
        };
        let started = Instant::now();
        let limit = LOOKUP_TIMEOUT.min(deadline);
        let found = tokio::time::timeout(limit, tokio::net::lookup_host((name, 0))).await;
        let took = started.elapsed();
        // A name that does not resolve is the round's failure to report, not a bad request.
        let Ok(Ok(addrs)) = found else {
            return Ok(Lookup {
                took,
                address: None,
            });
        };
        let addrs: Vec<IpAddr> = addrs.map(|a| a.ip()).collect();
        for ip in &addrs {
            self.endpoint
                .check_addr(*ip)
                .map_err(|m| bad(format!("target {name} resolves to {m}")))?;
        }
        let address = addrs.into_iter().find(|ip| match proto {
            IpProtocol::Auto => true,
            IpProtocol::Ipv4 => ip.to_canonical().is_ipv4(),
            IpProtocol::Ipv6 => !ip.to_canonical().is_ipv4(),
        });
        Ok(Lookup { took, address })
    }
}

impl AddressGuard for ProbeGuard {
    fn check_host(&self, host: &Host, port: Option<u16>) -> Result<(), String> {
        self.endpoint.check_host(host)?;
        if let Some(p) = port {
            self.endpoint.check_port(self.kind, p)?;
        }
        self.allowed(host)
    }

    fn check_addr(&self, ip: IpAddr) -> Result<(), String> {
        self.endpoint.check_addr(ip)
    }
}
