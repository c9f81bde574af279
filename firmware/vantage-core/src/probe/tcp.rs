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
mod series;
mod stored;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use super::module::{
    Detail, DetailUse, Glance, OptionsInput, Peer, Rollup, TypedModule, bool_param, fields_detail,
    fields_json, int_param,
};
use super::round::Probe;
use crate::config::check::Check;
use crate::config::form::ProbeForm;
use crate::config::host::{Host, parse_host, split_host_port};
use crate::series::{Gauge, HistogramDef, Point};
use crate::types::{IpProtocol, ModuleId};

pub use options::TcpOptions;
use series::{ATTEMPTS_OK, ATTEMPTS_SENT, GAUGES, LOSS};
pub use series::{CERT_NOT_AFTER, TLS_VERSION, TcpReport};
/// Read by every probe that does a TLS handshake.
pub(crate) use stored::{not_after, put_varint, tls_version_code, tls_version_name, varint};

/// The module's name: `probes = ["tcp"]`, `tcp = {...}`, `probe="tcp"`, `module=tcp`.
const NAME: &str = "tcp";
/// The kind.
pub(crate) const KIND: ModuleId = ModuleId(NAME);

/// The fields of the latest report the store keeps ([`TypedModule::detail`]).
const LAST_FIELDS: [&str; 4] = ["address", "port", "tls_version", "cert_not_after"];

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

impl TypedModule for Tcp {
    type Options = TcpOptions;
    type Report = TcpReport;
    type Raw = options::RawTcp;
    const NAME: &'static str = NAME;
    const STORE_CODE: u8 = 4;
    const DEFAULT_INTERVAL: Duration = options::INTERVAL;
    const PARAMS: &'static [&'static str] = &PARAMS;
    const TRUSTED_PARAMS: &'static [&'static str] = &TRUSTED_PARAMS;
    const GAUGES: &'static [&'static Gauge] = &GAUGES;
    const PHASES: &'static [&'static str] = &["connect", "tls"];
    const HISTOGRAMS: &'static [HistogramDef] = &HISTOGRAMS;

    fn form(&self) -> ProbeForm {
        options::form(NAME)
    }
    fn options(&self, c: &mut Check<'_, '_>, input: &OptionsInput<'_, '_>) -> Option<TcpOptions> {
        options::resolve(c, input)
    }
    fn round_length(&self, o: &TcpOptions) -> Duration {
        o.round_length()
    }
    fn probe(&self) -> Arc<dyn Probe> {
        Arc::new(run::TcpProbe::default())
    }
    /// `HOST:PORT` (`[v6]:PORT`).
    fn probe_target(&self, target: &str) -> Result<(Host, toml::Table), String> {
        let (host, port) = split_host_port(target)?;
        let host = parse_host(host).map_err(|m| format!("target {m}"))?;
        let section = toml::Table::from_iter([("port".into(), toml::Value::Integer(port))]);
        Ok((host, section))
    }
    fn probe_param(&self, name: &str, value: &str) -> Result<toml::Value, String> {
        match name {
            "tls" | "insecure" => bool_param(name, value),
            "attempts" | "dscp" => int_param(name, value),
            _ => Ok(toml::Value::String(value.to_string())),
        }
    }
    fn ip_protocol(&self, o: &TcpOptions) -> IpProtocol {
        o.ip_protocol
    }
    fn port(&self, o: &TcpOptions) -> Option<u16> {
        Some(o.port)
    }
    fn encode(&self, r: &TcpReport, out: &mut Vec<u8>) {
        stored::StoredTcp::from_report(r).encode(out);
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
    fn observe(&self, r: &TcpReport, add: &mut dyn FnMut(usize, f64)) {
        for t in &r.connect_times {
            add(0, t.as_secs_f64());
        }
    }
    fn values(&self, bytes: &[u8], out: &mut Vec<(&'static str, f64)>) {
        if let Some(s) = stored::StoredTcp::decode(bytes) {
            s.values(out);
        }
    }
    /// The latest round's address, port, TLS version and certificate expiry, kept when one
    /// changes, so the page shows them after a restart.
    fn detail(&self, r: &TcpReport) -> Option<Detail> {
        Some(fields_detail(r, &LAST_FIELDS))
    }
    fn detail_json(&self, bytes: &[u8]) -> Option<serde_json::Value> {
        fields_json(bytes)
    }
    const DETAIL_USE: DetailUse = DetailUse::LastReport;
    /// The round's mean connect time (none without a connection), and its phases: that
    /// connect time and the TLS handshake.
    const FIGURE: &'static str = "connect time";
    /// The mean connect time and the attempts that did not connect.
    fn glance(&self, r: &TcpReport) -> Glance {
        let n = r.connect_times.len() as u32;
        Glance {
            time: (n > 0).then(|| r.connect_times.iter().sum::<Duration>() / n),
            loss: Some((r.sent, r.sent.saturating_sub(r.connected))),
            peer: r
                .address
                .map(|ip| Peer::Socket(std::net::SocketAddr::new(ip, r.port))),
            detail: r.tls_version.clone(),
        }
    }
    fn rollup(&self, bytes: &[u8]) -> Rollup {
        let Some(s) = stored::StoredTcp::decode(bytes) else {
            return Rollup::default();
        };
        let connect = s.connect_us.map(|c| c.1);
        Rollup {
            time_us: connect,
            phases_us: [connect, s.tls_us, None, None, None],
            mark: None,
        }
    }
}
