//! The TCP probe, as one probe module: connect time per attempt (several attempts a round, the
//! ones not connected in time counted as lost, like ping's packets), optionally a TLS handshake
//! with the chain's earliest expiry, and a line to send with a regex the first reply line must
//! match (a banner check).
//!
//! ```toml
//! probes = ["tcp"]
//! tcp = { port = 443, tls = true }
//! ```

mod options;
mod run;
mod stored;
#[cfg(test)]
mod tests;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::Probe;
use super::module::{Options, OptionsInput, ProbeModule, ProbeQuery, Report};
use crate::config::{Check, Host, ProbeForm, module_options_from, parse_host, split_host_port};
use crate::series::{Gauge, HistogramDef, Point, gauge, labelled, per_probe};
use crate::types::ModuleId;

pub use options::TcpOptions;
/// Read by every probe that does a TLS handshake.
pub(crate) use stored::not_after;

/// The module's name: `probes = ["tcp"]`, `tcp = {...}`, `probe="tcp"`, `module=tcp`.
const NAME: &str = "tcp";
/// The kind.
pub(crate) const KIND: ModuleId = ModuleId(NAME);

/// One TCP round.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct TcpReport {
    /// The address connected to (a hostname resolves each round).
    pub address: Option<IpAddr>,
    pub port: u16,
    /// Connection attempts made, and those that connected in time.
    pub sent: u32,
    pub connected: u32,
    /// Time from SYN to the established connection, of each attempt that connected.
    pub connect_times: Vec<Duration>,
    /// TLS handshake time of the round's first connection (with `tls`).
    pub tls_handshake: Option<Duration>,
    /// The TLS version agreed (`TLSv1_3`).
    pub tls_version: Option<String>,
    /// The earliest `notAfter` of the chain the server sent, in seconds since the epoch.
    pub cert_not_after: Option<i64>,
    /// Whether the first reply line matched `expect` (with `expect`).
    pub expect_matched: Option<bool>,
    /// The first reply line (with `expect`), cut to [`run::MAX_REPLY`] bytes.
    pub reply: Option<String>,
}

impl TcpReport {
    pub fn loss_ratio(&self) -> f64 {
        if self.sent == 0 {
            return 1.0;
        }
        1.0 - f64::from(self.connected.min(self.sent)) / f64::from(self.sent)
    }
}

pub(crate) static CONNECT_STATS: Gauge = labelled(
    "vantage_tcp_round_connect_seconds",
    "stat",
    "Connect times of the last round: min, avg, max (absent for a round without connections).",
);
pub(crate) static ATTEMPTS_SENT: Gauge = gauge(
    "vantage_tcp_round_attempts_sent",
    "Connection attempts of the last round.",
);
pub(crate) static ATTEMPTS_OK: Gauge = gauge(
    "vantage_tcp_round_attempts_connected",
    "Connection attempts of the last round that connected in time.",
);
pub(crate) static LOSS: Gauge = gauge(
    "vantage_tcp_loss_ratio",
    "Share of the last round's connection attempts that did not connect in time.",
);
pub(crate) static TLS_HANDSHAKE: Gauge = gauge(
    "vantage_tls_handshake_seconds",
    "TLS handshake time of the last round (absent without a handshake).",
);
pub static CERT_NOT_AFTER: Gauge = per_probe(
    "vantage_tls_cert_not_after_timestamp_seconds",
    "Earliest expiry of the certificate chain the server sent, in seconds since the epoch.",
);
pub(crate) static EXPECT_MATCHED: Gauge = gauge(
    "vantage_tcp_round_expect_matched",
    "1 if the first reply line of the last round matched expect (absent without expect).",
);

static GAUGES: [&Gauge; 7] = [
    &CONNECT_STATS,
    &ATTEMPTS_SENT,
    &ATTEMPTS_OK,
    &LOSS,
    &TLS_HANDSHAKE,
    &CERT_NOT_AFTER,
    &EXPECT_MATCHED,
];

/// Connect time of every attempt: 50 µs doubling to ~26 s, as ping's RTTs.
static HISTOGRAMS: [HistogramDef; 1] = [HistogramDef {
    name: "vantage_tcp_connect_seconds",
    help: "Connect time of each connection attempt that connected.",
    start: 0.00005,
    factor: 2.0,
    count: 20,
}];

/// `/probe` parameters of module=tcp, each the option of the same name.
const PARAMS: [&str; 11] = [
    "attempts",
    "spacing",
    "timeout",
    "dscp",
    "source",
    "ip_protocol",
    "tls",
    "server_name",
    "insecure",
    "send",
    "expect",
];
/// Settings that name a file on the device: the command line's only.
const TRUSTED_PARAMS: [&str; 1] = ["ca_file"];

/// The TCP probe module.
#[derive(Debug)]
pub(crate) struct Tcp;

impl ProbeModule for Tcp {
    fn name(&self) -> &'static str {
        NAME
    }
    fn store_code(&self) -> u8 {
        4
    }
    fn default_interval(&self) -> Duration {
        options::INTERVAL
    }
    fn form(&self) -> ProbeForm {
        options::form()
    }
    fn options(
        &self,
        c: &mut Check<'_, '_>,
        input: &OptionsInput<'_, '_>,
    ) -> Option<Arc<dyn Options>> {
        options::resolve(c, input).map(|o| Arc::new(o) as Arc<dyn Options>)
    }
    fn round_length(&self, o: &dyn Options) -> Duration {
        o.as_any()
            .downcast_ref::<TcpOptions>()
            .map_or(Duration::ZERO, TcpOptions::round_length)
    }
    fn probe(&self) -> Arc<dyn Probe> {
        Arc::new(run::TcpProbe::default())
    }
    fn probe_options(&self, q: &ProbeQuery<'_>) -> Result<(Host, Arc<dyn Options>), String> {
        probe_options(q)
    }
    fn probe_params(&self) -> &'static [&'static str] {
        &PARAMS
    }
    fn port(&self, o: &dyn Options) -> Option<u16> {
        o.as_any().downcast_ref::<TcpOptions>().map(|o| o.port)
    }
    fn trusted_params(&self) -> &'static [&'static str] {
        &TRUSTED_PARAMS
    }
    fn gauges(&self) -> &'static [&'static Gauge] {
        &GAUGES
    }
    fn encode(&self, report: &dyn Report, out: &mut Vec<u8>) {
        if let Some(r) = report.as_any().downcast_ref::<TcpReport>() {
            stored::StoredTcp::from_report(r).encode(out);
        }
    }
    fn points(&self, bytes: &[u8], out: &mut Vec<Point>) {
        if let Some(s) = stored::StoredTcp::decode(bytes) {
            s.points(out);
        }
    }
    fn initial_points(&self, out: &mut Vec<Point>) {
        for g in [&ATTEMPTS_SENT, &ATTEMPTS_OK, &LOSS] {
            out.push(Point::new(g, 0.0));
        }
    }
    fn histograms(&self) -> &'static [HistogramDef] {
        &HISTOGRAMS
    }
    fn observe(&self, report: &dyn Report, add: &mut dyn FnMut(usize, f64)) {
        if let Some(r) = report.as_any().downcast_ref::<TcpReport>() {
            for t in &r.connect_times {
                add(0, t.as_secs_f64());
            }
        }
    }
}

/// `HOST:PORT` (`[v6]:PORT`), and the options of the other parameters.
fn probe_options(q: &ProbeQuery<'_>) -> Result<(Host, Arc<dyn Options>), String> {
    let (host, port) = split_host_port(q.target)?;
    let host = parse_host(host).map_err(|m| format!("target {m}"))?;
    let mut section = toml::Table::new();
    section.insert("port".into(), toml::Value::Integer(port));
    let trusted = if q.trusted { &TRUSTED_PARAMS[..] } else { &[] };
    for &p in PARAMS.iter().chain(trusted) {
        let Some(v) = (q.param)(p) else { continue };
        let value = match p {
            "tls" | "insecure" => toml::Value::Boolean(match v {
                "true" | "1" => true,
                "false" | "0" => false,
                _ => return Err(format!("{p}: {v:?} is not true or false")),
            }),
            "attempts" | "dscp" => toml::Value::Integer(
                v.parse()
                    .map_err(|_| format!("{p}: {v:?} is not a whole number"))?,
            ),
            _ => toml::Value::String(v.to_string()),
        };
        section.insert(p.into(), value);
    }
    let options = module_options_from(KIND, section, Some(&host))?;
    Ok((host, options))
}
