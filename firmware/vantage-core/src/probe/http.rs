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

use serde::Serialize;

use super::Probe;
use super::module::{Options, OptionsInput, ProbeModule, ProbeQuery, Report};
use crate::config::{Check, Host, ProbeForm, module_options_from};
use crate::series::{Gauge, HistogramDef, Point, gauge, labelled};
use crate::types::ModuleId;

pub use options::HttpOptions;

/// The module's name: `probes = ["http"]`, `http = {...}`, `probe="http"`, `module=http`.
const NAME: &str = "http";
/// The kind.
pub(crate) const KIND: ModuleId = ModuleId(NAME);

/// The phases of a round, in order; each is summed over the redirects followed.
pub const PHASES: [&str; 5] = ["resolve", "connect", "tls", "processing", "transfer"];

/// One HTTP round.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
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
    /// The TLS version agreed (`TLSv1_3`).
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

static GAUGES: [&Gauge; 5] = [
    &STATUS,
    &PHASE,
    &CONTENT_LENGTH,
    &REDIRECTS,
    &super::tcp::CERT_NOT_AFTER,
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

impl ProbeModule for Http {
    fn name(&self) -> &'static str {
        NAME
    }
    fn store_code(&self) -> u8 {
        5
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
            .downcast_ref::<HttpOptions>()
            .map_or(Duration::ZERO, |o| o.timeout)
    }
    fn probe(&self) -> Arc<dyn Probe> {
        Arc::new(run::HttpProbe)
    }
    fn probe_options(&self, q: &ProbeQuery<'_>) -> Result<(Host, Arc<dyn Options>), String> {
        probe_options(q)
    }
    fn probe_params(&self) -> &'static [&'static str] {
        &PARAMS
    }
    fn port(&self, o: &dyn Options) -> Option<u16> {
        let o = o.as_any().downcast_ref::<HttpOptions>()?;
        options::parse_url(&o.url).ok().map(|u| u.port)
    }
    fn trusted_params(&self) -> &'static [&'static str] {
        &TRUSTED_PARAMS
    }
    fn gauges(&self) -> &'static [&'static Gauge] {
        &GAUGES
    }
    fn encode(&self, report: &dyn Report, out: &mut Vec<u8>) {
        if let Some(r) = report.as_any().downcast_ref::<HttpReport>() {
            stored::StoredHttp::from_report(r).encode(out);
        }
    }
    fn points(&self, bytes: &[u8], out: &mut Vec<Point>) {
        if let Some(s) = stored::StoredHttp::decode(bytes) {
            s.points(out);
        }
    }
    fn initial_points(&self, out: &mut Vec<Point>) {
        stored::StoredHttp::default().points(out);
    }
    fn histograms(&self) -> &'static [HistogramDef] {
        &[]
    }
    fn observe(&self, _: &dyn Report, _: &mut dyn FnMut(usize, f64)) {}
}

/// The URL, and the options of the other parameters.
fn probe_options(q: &ProbeQuery<'_>) -> Result<(Host, Arc<dyn Options>), String> {
    let url = options::parse_url(q.target).map_err(|m| format!("target {m}"))?;
    let mut section = toml::Table::new();
    section.insert("url".into(), toml::Value::String(q.target.to_string()));
    let trusted = if q.trusted { &TRUSTED_PARAMS[..] } else { &[] };
    for &p in PARAMS.iter().chain(trusted) {
        let Some(v) = (q.param)(p) else { continue };
        let value = match p {
            "max_redirects" | "max_body" => toml::Value::Integer(
                v.parse()
                    .map_err(|_| format!("{p}: {v:?} is not a whole number"))?,
            ),
            _ => toml::Value::String(v.to_string()),
        };
        section.insert(p.into(), value);
    }
    let options = module_options_from(KIND, section, Some(&url.host))?;
    Ok((url.host, options))
}
