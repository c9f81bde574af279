//! The probe modules, one line per kind, and the lookups over them. The only file below
//! `probe` that names every kind: the kinds and the vocabulary they share (`module`, `round`,
//! `report`) do not import it.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use super::module::ProbeModule;
use super::report::ModuleReport;
use super::round::Probe;
use super::{dns, http, ping, tcp, trace};
use crate::config::target::Target;
use crate::types::{ModuleId, ProbeKind};

/// The probe modules: one line per kind.
pub static MODULES: &[&dyn ProbeModule] = &[
    &ping::module::Ping,
    &trace::module::Trace,
    &tcp::Tcp,
    &http::Http,
    &dns::module::Dns,
];

/// A prober for every kind.
pub fn probes() -> Vec<Arc<dyn Probe>> {
    MODULES.iter().map(|m| m.probe()).collect()
}

impl ModuleReport {
    pub fn module(&self) -> &'static dyn ProbeModule {
        self.kind.module()
    }
}

impl ModuleId {
    pub fn module(self) -> &'static dyn ProbeModule {
        MODULES
            .iter()
            .copied()
            .find(|m| m.name() == self.0)
            .expect("a ModuleId names a registered module")
    }

    /// Every registered module kind, in registration order.
    pub fn all() -> impl Iterator<Item = ModuleId> {
        MODULES.iter().map(|m| ModuleId(m.name()))
    }

    pub fn by_name(name: &str) -> Option<ModuleId> {
        Self::all().find(|m| m.0 == name)
    }

    /// The module whose rounds the store writes with `code`.
    pub fn by_store_code(code: u8) -> Option<ModuleId> {
        Self::all().find(|m| m.module().store_code() == code)
    }
}

impl ProbeKind {
    /// The kind a request that names none is about (`probe=` of the page's and the store's
    /// endpoints, `module=` of `/probe`).
    pub const DEFAULT: ProbeKind = ProbeKind::PING;

    /// Every kind, in registration order (ping and trace first, the order lists of kinds,
    /// forms and `/metrics` had before they were modules).
    pub fn every() -> impl Iterator<Item = ProbeKind> {
        ModuleId::all().map(ProbeKind::Module)
    }

    /// The module of a kind.
    pub fn module(self) -> Option<&'static dyn ProbeModule> {
        match self {
            ProbeKind::Module(m) => Some(m.module()),
        }
    }
}

// Here rather than with `Target`: it asks the kind's module, and the config types know no module.
impl Target {
    /// The longest a round of `kind` can take with the target's options (none for a kind the
    /// target does not run).
    pub fn round_length(&self, kind: ProbeKind) -> Duration {
        let ProbeKind::Module(m) = kind;
        self.modules
            .iter()
            .find(|o| o.kind == m)
            .map_or(Duration::ZERO, |o| {
                m.module().round_length(o.options.as_ref())
            })
    }
}

impl FromStr for ProbeKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ProbeKind::every().find(|k| k.as_str() == s).ok_or_else(|| {
            let names: Vec<&str> = ProbeKind::every().map(ProbeKind::as_str).collect();
            format!(
                "unknown probe {s:?} (expected one of: {})",
                names.join(", ")
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::host::Host;
    use crate::probe::module::{DetailUse, ModuleOptions, ProbeQuery, in_words};
    use crate::probe::trace::options::TraceOptions;
    use crate::sample::{HopReport, TraceReport};
    use crate::types::IpProtocol;

    /// `/probe`'s options of `kind` from `target` and `params`, through the kind's module.
    fn probe(kind: &str, target: &str, params: &[(&str, &str)]) -> Result<ModuleOptions, String> {
        let id = ModuleId::by_name(kind).expect("a registered kind");
        let param = |k: &str| params.iter().find(|(p, _)| *p == k).map(|(_, v)| *v);
        let q = ProbeQuery {
            target,
            param: &param,
            trusted: false,
        };
        let (_, options) = id.module().probe_options(&q)?;
        Ok(ModuleOptions { kind: id, options })
    }

    /// A parameter another kind reads is refused, naming the kinds that read it; `system`
    /// is the DNS module's only.
    #[test]
    fn probe_parameters_of_other_kinds_are_named() {
        for (kind, target, param, want) in [
            (
                "ping",
                "127.0.0.1",
                "transport",
                "transport applies to module=dns only",
            ),
            (
                "tcp",
                "127.0.0.1:1",
                "port",
                "port applies to module=dns only",
            ),
            (
                "ping",
                "127.0.0.1",
                "protocol",
                "protocol applies to module=trace only",
            ),
            (
                "trace",
                "127.0.0.1",
                "ip_protocol",
                "ip_protocol applies to module=ping, tcp and http",
            ),
            (
                "dns",
                "127.0.0.1",
                "attempts",
                "attempts applies to module=tcp only",
            ),
        ] {
            let mut params = vec![(param, "x")];
            if kind == "dns" {
                params.push(("query", "a.test"));
            }
            let got = probe(kind, target, &params);
            assert_eq!(got.unwrap_err(), want, "{kind} {param}");
        }
        assert!(probe("dns", "system", &[("query", "a.test")]).is_ok());
        for (kind, target) in [("ping", "system"), ("tcp", "system:53")] {
            let e = probe(kind, target, &[]).unwrap_err();
            assert_eq!(e, "target \"system\" only works with module=dns", "{kind}");
        }
        assert_eq!(in_words(&["a"], "or"), "a");
        assert_eq!(in_words(&["a", "b", "c"], "or"), "a, b or c");
        assert_eq!(in_words(&[], "or"), "");
    }

    /// Each kind says which addresses its round uses and how its `/probe` round is named;
    /// a kind that says nothing takes the defaults.
    #[test]
    fn kinds_name_their_probe_round_and_address_family() {
        for kind in ["ping", "tcp", "http"] {
            let target = match kind {
                "tcp" => "localhost:1",
                "http" => "http://localhost/",
                _ => "localhost",
            };
            let o = probe(kind, target, &[("ip_protocol", "ipv6")]).unwrap();
            let m = o.kind.module();
            assert_eq!(
                m.ip_protocol(o.options.as_ref()),
                IpProtocol::Ipv6,
                "{kind}"
            );
            let host = Host::Name("localhost".into());
            assert_eq!(m.probe_round_name(&host, o.options.as_ref()), "probe");
        }
        let o = probe("trace", "192.0.2.1", &[("protocol", "icmp")]).unwrap();
        let host = Host::Ip("192.0.2.1".parse().unwrap());
        let name = o.kind.module().probe_round_name(&host, o.options.as_ref());
        assert_eq!(name, "/probe/icmp/192.0.2.1");
        let dns = probe("dns", "192.0.2.1", &[("query", "a.test")]).unwrap();
        assert_eq!(
            dns.kind.module().ip_protocol(dns.options.as_ref()),
            IpProtocol::Auto
        );
    }

    /// Only trace has a command-line text (its rounds summed up), and only ping and trace
    /// run live.
    #[test]
    fn text_and_live_runs_are_the_kinds_that_have_them() {
        let live = crate::probe::module::kind_names(|m| m.live().is_some());
        assert_eq!(live, ["ping", "trace"]);
        let tcp = probe("tcp", "127.0.0.1:1", &[]).unwrap();
        assert_eq!(tcp.kind.module().text("h", tcp.options.as_ref(), &[]), None);
        let round = TraceReport {
            reached: true,
            hops: vec![HopReport {
                ttl: 1,
                sent: 3,
                ..Default::default()
            }],
            ..TraceReport::default()
        };
        let round = ModuleReport::new(ModuleId("trace"), round);
        let trace = round.module();
        let o = TraceOptions::default();
        assert_eq!(trace.text("h", &o, &[]), None);
        let text = trace.text("h", &o, &[round.clone(), round]).unwrap();
        let hop = text.lines().nth(2).unwrap();
        assert!(
            hop.starts_with("  1.  ???") && hop.contains("100.0%    6"),
            "{text}"
        );
    }

    /// Each kind says what its stored details are to the page: details keyed by marks need
    /// marks; a trace keeps each path, DNS, TCP and HTTP their latest report, ping none.
    #[test]
    fn details_are_used_as_each_module_declares() {
        let uses: Vec<(&str, DetailUse)> =
            MODULES.iter().map(|m| (m.name(), m.detail_use())).collect();
        for m in MODULES {
            if let DetailUse::PerMark(_) = m.detail_use() {
                assert!(m.keeps_marks(), "{}", m.name());
            }
        }
        let of = |name: &str| uses.iter().find(|(n, _)| *n == name).map(|(_, u)| *u);
        assert_eq!(of("trace"), Some(DetailUse::PerMark("paths")));
        for kind in ["dns", "tcp", "http"] {
            assert_eq!(of(kind), Some(DetailUse::LastReport), "{kind}");
        }
        assert_eq!(of("ping"), Some(DetailUse::None));
    }

    /// A range lists hops for trace alone: the store sums the hops of trace rounds.
    #[test]
    fn only_trace_keeps_hops() {
        let with: Vec<&str> = MODULES
            .iter()
            .filter(|m| m.keeps_hops())
            .map(|m| m.name())
            .collect();
        assert_eq!(with, ["trace"]);
    }
}
