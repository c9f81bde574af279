//! Host names to addresses, for the kinds that resolve their target's host.

use std::net::IpAddr;
use std::time::Duration;

use crate::config::host::Host;
use crate::lock::LockExt;
use crate::sample::ProbeError;
use crate::types::IpProtocol;

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
