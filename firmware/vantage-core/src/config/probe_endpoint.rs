//! `[probe_endpoint]`: what `/probe` may be asked to reach. Anyone who can scrape the device
//! can ask `/probe` for a round, so by default it serves every probe kind but reaches only the
//! well-known ports of each ([`defaults::PROBE_ENDPOINT_PORTS`]), and never link-local or cloud
//! metadata addresses, nor unspecified, broadcast or multicast ones.
//!
//! ```toml
//! [probe_endpoint]
//! modules = ["ping", "dns", "tcp", "http"]   # default: every kind
//! allow_link_local = false                   # 169.254.0.0/16, fe80::/10, metadata services
//! ports = { tcp = [22, 443, "8000-8099"] }   # per kind; replaces that kind's default list
//! ```

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::RangeInclusive;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::check::Check;
use super::host::Host;
use crate::defaults;
use crate::types::ProbeKind;

/// `[probe_endpoint]` as written.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawProbeEndpoint {
    pub modules: Option<Spanned<Vec<Spanned<String>>>>,
    pub allow_link_local: Option<Spanned<bool>>,
    #[serde(default)]
    pub ports: BTreeMap<Spanned<String>, Spanned<Vec<Spanned<toml::Value>>>>,
}

/// What `/probe` may reach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProbeEndpoint {
    /// The kinds `/probe` serves.
    pub modules: Vec<ProbeKind>,
    /// Link-local and cloud metadata addresses and names are refused unless this is set.
    pub allow_link_local: bool,
    /// The ports each kind with ports may reach (kind name, port ranges).
    pub ports: Vec<(String, Vec<RangeInclusive<u16>>)>,
}

impl Default for ProbeEndpoint {
    fn default() -> Self {
        Self {
            modules: ProbeKind::every().collect(),
            allow_link_local: false,
            ports: defaults::PROBE_ENDPOINT_PORTS
                .iter()
                .map(|(k, ports)| (k.to_string(), ports.iter().map(|p| *p..=*p).collect()))
                .collect(),
        }
    }
}

/// Cloud metadata services' addresses outside the link-local ranges (AWS over IPv6, Alibaba).
const METADATA_ADDRS: [IpAddr; 2] = [
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)),
    IpAddr::V4(Ipv4Addr::new(100, 100, 100, 200)),
];

impl ProbeEndpoint {
    /// Whether `/probe` serves `kind`.
    pub fn check_module(&self, kind: ProbeKind) -> Result<(), String> {
        if self.modules.contains(&kind) {
            return Ok(());
        }
        Err(format!(
            "module {kind} is not served by /probe here (probe_endpoint.modules)"
        ))
    }

    /// Whether a round of `kind` may reach `port`.
    pub fn check_port(&self, kind: ProbeKind, port: u16) -> Result<(), String> {
        let Some((_, ranges)) = self.ports.iter().find(|(k, _)| k == kind.as_str()) else {
            return Ok(());
        };
        if ranges.iter().any(|r| r.contains(&port)) {
            return Ok(());
        }
        let list: Vec<String> = ranges.iter().map(range_text).collect();
        Err(format!(
            "port {port} is not open to /probe for module {kind} (probe_endpoint.ports.{kind}: {})",
            list.join(", ")
        ))
    }

    /// A host as named, before it is resolved: cloud metadata names are refused.
    pub fn check_host(&self, host: &Host) -> Result<(), String> {
        match host {
            Host::Ip(ip) => self.check_addr(*ip),
            Host::Name(n) => {
                let n = n.trim_end_matches('.').to_ascii_lowercase();
                if !self.allow_link_local && defaults::METADATA_NAMES.contains(&n.as_str()) {
                    return Err(format!(
                        "{n:?} names a cloud metadata service, which /probe does not reach \
                         (probe_endpoint.allow_link_local)"
                    ));
                }
                Ok(())
            }
        }
    }

    /// An address a round is about to send to (a resolved name's too).
    pub fn check_addr(&self, ip: IpAddr) -> Result<(), String> {
        let ip = ip.to_canonical();
        let what = match ip {
            _ if ip.is_unspecified() => "an unspecified address",
            _ if ip.is_multicast() => "a multicast address",
            IpAddr::V4(v4) if v4.is_broadcast() => "the broadcast address",
            _ if self.allow_link_local => return Ok(()),
            IpAddr::V4(v4) if v4.is_link_local() => "a link-local address",
            IpAddr::V6(v6) if v6.is_unicast_link_local() => "a link-local address",
            _ if METADATA_ADDRS.contains(&ip) => "a cloud metadata address",
            _ => return Ok(()),
        };
        let why = if what.ends_with("local address") || what.contains("metadata") {
            " (probe_endpoint.allow_link_local)"
        } else {
            ""
        };
        Err(format!("{ip} is {what}, which /probe does not reach{why}"))
    }
}

fn range_text(r: &RangeInclusive<u16>) -> String {
    if r.start() == r.end() {
        r.start().to_string()
    } else {
        format!("{}-{}", r.start(), r.end())
    }
}

/// `[probe_endpoint]` checked; errors name the field and point at the value.
pub(crate) fn validate(c: &mut Check<'_, '_>, raw: Option<&RawProbeEndpoint>) -> ProbeEndpoint {
    let mut e = ProbeEndpoint::default();
    let Some(raw) = raw else { return e };
    if let Some(m) = &raw.modules {
        e.modules.clear();
        for (i, name) in m.get_ref().iter().enumerate() {
            match name.get_ref().parse::<ProbeKind>() {
                Ok(k) if !e.modules.contains(&k) => e.modules.push(k),
                Ok(_) => {}
                Err(msg) => c.err(name.span(), &format!("probe_endpoint.modules[{i}]"), msg),
            }
        }
    }
    e.allow_link_local = raw.allow_link_local.as_ref().is_some_and(|b| *b.get_ref());
    for (kind, list) in &raw.ports {
        let field = format!("probe_endpoint.ports.{}", kind.get_ref());
        let Some(slot) = e.ports.iter_mut().find(|(k, _)| k == kind.get_ref()) else {
            let kinds: Vec<&str> = defaults::PROBE_ENDPOINT_PORTS.iter().map(|p| p.0).collect();
            let msg = format!("unknown kind (ports apply to: {})", kinds.join(", "));
            c.err(kind.span(), &field, msg);
            continue;
        };
        slot.1.clear();
        for (i, v) in list.get_ref().iter().enumerate() {
            match port_range(v.get_ref()) {
                Ok(r) => slot.1.push(r),
                Err(msg) => c.err(v.span(), &format!("{field}[{i}]"), msg),
            }
        }
    }
    e
}

/// `443` or `"8000-8099"`.
fn port_range(v: &toml::Value) -> Result<RangeInclusive<u16>, String> {
    let port = |n: i64| {
        u16::try_from(n)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("{n} is not a port (1 to 65535)"))
    };
    match v {
        toml::Value::Integer(n) => port(*n).map(|p| p..=p),
        toml::Value::String(s) => {
            let parse = |t: &str| {
                t.trim()
                    .parse::<i64>()
                    .map_err(|_| format!("{s:?} is not a port or a range like \"8000-8099\""))
                    .and_then(port)
            };
            let (a, b) = s.split_once('-').unwrap_or((s, s));
            let (a, b) = (parse(a)?, parse(b)?);
            if a > b {
                return Err(format!("{s:?}: the range ends before it starts"));
            }
            Ok(a..=b)
        }
        other => Err(format!(
            "{other} is not a port or a range like \"8000-8099\""
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn endpoint(toml: &str) -> Result<ProbeEndpoint, String> {
        Config::parse(toml, "t.toml")
            .map(|c| c.probe_endpoint)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_open_only_well_known_ports() {
        let e = ProbeEndpoint::default();
        let tcp: ProbeKind = "tcp".parse().unwrap();
        assert!(e.check_port(tcp, 443).is_ok());
        let err = e.check_port(tcp, 6379).unwrap_err();
        assert!(
            err.contains("port 6379") && err.contains("probe_endpoint.ports.tcp"),
            "{err}"
        );
        assert!(e.check_port(ProbeKind::DNS, 853).is_ok());
        assert!(e.check_port(ProbeKind::DNS, 5353).is_err());
        assert!(e.check_port(ProbeKind::PING, 1).is_ok());
        assert!(e.check_module(ProbeKind::TRACE).is_ok());
    }

    #[test]
    fn refuses_link_local_metadata_and_non_unicast() {
        let e = ProbeEndpoint::default();
        for bad in [
            "169.254.169.254",
            "fe80::1",
            "fd00:ec2::254",
            "100.100.100.200",
            "::ffff:169.254.169.254",
            "0.0.0.0",
            "::",
            "255.255.255.255",
            "224.0.0.1",
            "ff02::1",
        ] {
            let ip: IpAddr = bad.parse().unwrap();
            assert!(e.check_addr(ip).is_err(), "{bad} must be refused");
        }
        for ok in ["127.0.0.1", "::1", "192.0.2.1", "10.1.2.3"] {
            assert!(e.check_addr(ok.parse().unwrap()).is_ok(), "{ok}");
        }
        for name in ["metadata.google.internal", "METADATA.", "metadata"] {
            let err = e.check_host(&Host::Name(name.into())).unwrap_err();
            assert!(err.contains("cloud metadata"), "{err}");
        }
        let open = ProbeEndpoint {
            allow_link_local: true,
            ..ProbeEndpoint::default()
        };
        assert!(open.check_addr("169.254.169.254".parse().unwrap()).is_ok());
        assert!(open.check_host(&Host::Name("metadata".into())).is_ok());
        // Broadcast stays refused: it is never one host.
        assert!(open.check_addr("255.255.255.255".parse().unwrap()).is_err());
    }

    /// The README quotes the default ports and the metadata names as `defaults.rs` has them.
    #[test]
    fn the_readme_quotes_the_defaults() {
        let readme = include_str!("../../../../README.md");
        let section = readme
            .split("### What `/probe` may reach")
            .nth(1)
            .and_then(|s| s.split("\n### ").next())
            .expect("the README's [probe_endpoint] section");
        for (kind, ports) in defaults::PROBE_ENDPOINT_PORTS {
            let list: Vec<String> = ports.iter().map(u16::to_string).collect();
            let want = format!("{} {}", kind.to_uppercase(), list.join(", "));
            assert!(section.contains(&want), "{want:?} in the README");
        }
        for name in defaults::METADATA_NAMES {
            assert!(
                section.contains(&format!("`{name}`")),
                "{name} in the README"
            );
        }
    }

    #[test]
    fn config_section_sets_modules_ports_and_link_local() {
        let e = endpoint(
            "[probe_endpoint]\nmodules = [\"ping\", \"tcp\"]\nallow_link_local = true\n\
             ports = { tcp = [6379, \"8000-8099\"] }\n",
        )
        .unwrap();
        let tcp: ProbeKind = "tcp".parse().unwrap();
        assert!(e.check_module(ProbeKind::DNS).is_err());
        assert!(e.check_module(tcp).is_ok());
        assert!(e.allow_link_local);
        assert!(e.check_port(tcp, 8050).is_ok() && e.check_port(tcp, 6379).is_ok());
        assert!(e.check_port(tcp, 443).is_err());
        // Other kinds keep their defaults.
        assert!(e.check_port(ProbeKind::DNS, 53).is_ok());
    }

    #[test]
    fn config_errors_name_the_field_and_line() {
        let err = endpoint("[probe_endpoint]\nports = { tcp = [22, 70000, \"9-1\"], ping = [1] }\nmodules = [\"icmp\"]\n")
            .unwrap_err();
        for want in [
            "probe_endpoint.ports.tcp[1]",
            "70000 is not a port",
            "probe_endpoint.ports.tcp[2]",
            "ends before it starts",
            "probe_endpoint.ports.ping",
            "unknown kind",
            "probe_endpoint.modules[0]",
            "t.toml:2:",
            "t.toml:3:",
        ] {
            assert!(err.contains(want), "{want:?} in {err}");
        }
    }
}
