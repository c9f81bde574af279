//! One file per probe kind, all behind the [`Probe`] trait.

mod ping;
mod trace;

use std::fmt::Debug;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

pub use ping::PingProbe;
pub use trace::TraceProbe;

use crate::config::{Host, Target};
use crate::net::BoxFuture;
use crate::sample::{ProbeError, Sample};
use crate::types::{IpProtocol, ProbeKind};

/// What a probe is asked to do: probe this target once.
#[derive(Debug, Clone)]
pub struct ProbeRequest {
    pub target: Arc<Target>,
    /// An upper bound for the whole round (e.g. Prometheus' scrape timeout on `/probe`).
    pub deadline: Option<Duration>,
}

impl ProbeRequest {
    pub fn for_target(target: &Target) -> Self {
        Self {
            target: Arc::new(target.clone()),
            deadline: None,
        }
    }
}

/// A probe kind. Implementations never panic on bad input from the network and always return a
/// sample, failed or not.
pub trait Probe: Send + Sync + Debug {
    fn kind(&self) -> ProbeKind;
    fn run(&self, req: ProbeRequest) -> BoxFuture<'_, Sample>;
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
