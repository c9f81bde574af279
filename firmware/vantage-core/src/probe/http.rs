//! The HTTP(S) probe, as one probe module: one request (and the redirects it is sent on), the
//! status checked against the valid codes, the body against must / must-not regexes within a
//! size limit, and the time of each phase: resolve, connect, TLS, processing, transfer.
//!
//! ```toml
//! probes = ["http"]
//! http = { url = "https://example.com/health" }
//! ```

mod options;
mod run;
mod stored;
#[cfg(test)]
mod tests;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::module::{
    Detail, DetailUse, Glance, OptionsInput, Peer, Rollup, TypedModule, fields_detail, fields_json,
    int_param,
};
use super::round::Probe;
use crate::config::check::Check;
use crate::config::form::ProbeForm;
use crate::config::host::Host;
use crate::series::{Gauge, Point, gauge, labelled};
use crate::types::{IpProtocol, ModuleId};

pub use options::HttpOptions;

/// The module's name: `probes = ["http"]`, `http = {...}`, `probe="http"`, `module=http`.
const NAME: &str = "http";
/// The kind.
pub(crate) const KIND: ModuleId = ModuleId(NAME);

/// The fields of the latest report the store keeps ([`TypedModule::detail`]).
const LAST_FIELDS: [&str; 5] = [
    "address",
    "status",
    "version",
    "tls_version",
    "cert_not_after",
];

/// The phases of a round, in order; each is summed over the redirects followed.
pub const PHASES: [&str; 5] = ["resolve", "connect", "tls", "processing", "transfer"];

/// One HTTP round.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpReport {
    /// The address of the last request.
    pub address: Option<IpAddr>,
    /// The last response's status.
    pub status: Option<u16>,
    /// `HTTP/1.1` or `HTTP/2`.
    pub version: Option<String>,
    /// Redirects followed.
    pub redirects: u32,
    /// Time of each of [`PHASES`]; processing is the request sent to the first response byte.
    pub phases: [Duration; 5],
    /// Bytes of the last response's body read.
    pub content_length: Option<u64>,
    /// The TLS version agreed (`TLS 1.3`).
    pub tls_version: Option<String>,
    /// The earliest `notAfter` of the last server's chain, in seconds since the epoch.
    pub cert_not_after: Option<i64>,
    /// Whether the body matched `body_must_match`, and `body_must_not_match`.
    pub body_matched: Option<bool>,
    pub body_not_matched: Option<bool>,
}

pub static STATUS: Gauge = gauge(
    "vantage_http_status_code",
    "Status code of the last response of the last round (absent without a response).",
);
pub static PHASE: Gauge = labelled(
    "vantage_http_phase_seconds",
    "phase",
    "Time of each phase of the last round, summed over its redirects; 0 for a phase it did not have.",
);
pub static CONTENT_LENGTH: Gauge = gauge(
    "vantage_http_content_length_bytes",
    "Bytes of the last response body of the last round (absent without a body read).",
);
pub static REDIRECTS: Gauge = gauge(
    "vantage_http_redirects",
    "Redirects the last round followed.",
);

static GAUGES: [&Gauge; 6] = [
    &STATUS,
    &PHASE,
    &CONTENT_LENGTH,
    &REDIRECTS,
    &super::tcp::CERT_NOT_AFTER,
    &super::tcp::TLS_VERSION,
];

/// `/probe` parameters of module=http, each the option of the same name. Headers and a body
/// are the config's only.
const PARAMS: [&str; 10] = [
    "method",
    "valid_status_codes",
    "max_redirects",
    "body_must_match",
    "body_must_not_match",
    "max_body",
    "timeout",
    "ip_protocol",
    "server_name",
    "insecure",
];
/// Settings that name a file on the device: the command line's only.
const TRUSTED_PARAMS: [&str; 1] = ["ca_file"];

/// The HTTP probe module.
#[derive(Debug)]
pub(crate) struct Http;

impl TypedModule for Http {
    type Options = HttpOptions;
    type Report = HttpReport;
    type Raw = options::RawHttp;
    const NAME: &'static str = NAME;
    const STORE_CODE: u8 = 5;
    const DEFAULT_INTERVAL: Duration = options::INTERVAL;
    const PARAMS: &'static [&'static str] = &PARAMS;
    const TRUSTED_PARAMS: &'static [&'static str] = &TRUSTED_PARAMS;
    const PHASES: &'static [&'static str] = &PHASES;
    const GAUGES: &'static [&'static Gauge] = &GAUGES;

    fn form(&self) -> ProbeForm {
        options::form(NAME)
    }
    fn options(&self, c: &mut Check<'_, '_>, input: &OptionsInput<'_, '_>) -> Option<HttpOptions> {
        options::resolve(c, input)
    }
    fn round_length(&self, o: &HttpOptions) -> Duration {
        o.timeout
    }
    fn probe(&self) -> Arc<dyn Probe> {
        Arc::new(run::HttpProbe)
    }
    /// The URL.
    fn probe_target(&self, target: &str) -> Result<(Host, toml::Table), String> {
        let url = options::parse_url(target).map_err(|m| format!("target {m}"))?;
        let url_value = toml::Value::String(target.to_string());
        Ok((
            url.host,
            toml::Table::from_iter([("url".into(), url_value)]),
        ))
    }
    fn probe_param(&self, name: &str, value: &str) -> Result<toml::Value, String> {
        match name {
            "max_redirects" | "max_body" => int_param(name, value),
            _ => Ok(toml::Value::String(value.to_string())),
        }
    }
    fn ip_protocol(&self, o: &HttpOptions) -> IpProtocol {
        o.ip_protocol
    }
    fn port(&self, o: &HttpOptions) -> Option<u16> {
        options::parse_url(&o.url).ok().map(|u| u.port)
    }
    fn encode(&self, r: &HttpReport, out: &mut Vec<u8>) {
        stored::StoredHttp::from_report(r).encode(out);
    }
    fn points(&self, bytes: &[u8], out: &mut Vec<Point>) {
        if let Some(s) = stored::StoredHttp::decode(bytes) {
            s.points(out);
        }
    }
    fn initial_points(&self, out: &mut Vec<Point>) {
        stored::StoredHttp::default().points(out);
    }
    fn values(&self, bytes: &[u8], out: &mut Vec<(&'static str, f64)>) {
        if let Some(s) = stored::StoredHttp::decode(bytes) {
            s.values(out);
        }
    }
    /// The phases together of a round with a response, and the status
    /// ([`stored::NO_STATUS`] without one).
    const FIGURE: &'static str = "total time";
    /// The time of every phase of a round that got a response, and its status.
    fn glance(&self, r: &HttpReport) -> Glance {
        Glance {
            time: r.status.map(|_| r.phases.iter().sum()),
            loss: None,
            peer: r.address.map(Peer::Ip),
            detail: r.status.map(|s| format!("HTTP {s}")),
        }
    }
    fn rollup(&self, bytes: &[u8]) -> Rollup {
        stored::StoredHttp::decode(bytes).map_or_else(Rollup::default, |s| Rollup {
            time_us: s.status.map(|_| s.total_us()),
            mark: Some(s.mark()),
            phases_us: s.phases_us.map(|us| Some(u64::from(us))),
        })
    }
    /// The latest response's status, version, TLS version and certificate expiry, kept when
    /// one changes, so the page shows them after a restart.
    fn detail(&self, r: &HttpReport) -> Option<Detail> {
        Some(fields_detail(r, &LAST_FIELDS))
    }
    fn detail_json(&self, bytes: &[u8]) -> Option<serde_json::Value> {
        fields_json(bytes)
    }
    const DETAIL_USE: DetailUse = DetailUse::LastReport;
    const MARKS: bool = true;
    fn mark_name(&self, mark: u32) -> String {
        if mark == stored::NO_STATUS {
            "no response".into()
        } else {
            mark.to_string()
        }
    }
}
