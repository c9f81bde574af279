//! One remote_write endpoint: its settings, its HTTP client, and one request sent with what
//! the answer means for the data. The shipper's batches and the live push both send through
//! it.

use std::sync::atomic::AtomicBool;
use std::time::Duration;

use tokio::sync::Notify;
pub use vantage_core::config::SendMode;

use crate::series::Labels;

/// TLS settings of an endpoint (rustls; system-independent roots from webpki unless `ca_file`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tls {
    /// PEM file with the CA(s) that sign the server's certificate.
    pub ca_file: Option<std::path::PathBuf>,
    /// PEM client certificate and key, for servers that want mutual TLS.
    pub cert_file: Option<std::path::PathBuf>,
    pub key_file: Option<std::path::PathBuf>,
    /// Accept any server certificate (testing only).
    pub insecure_skip_verify: bool,
}

/// One remote_write endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Names the endpoint in metrics and keys its cursor: renaming it resends the backlog.
    pub name: String,
    pub url: String,
    pub basic_auth: Option<(String, String)>,
    pub bearer_token: Option<String>,
    pub tls: Tls,
    pub timeout: Duration,
    /// Added to every series sent (e.g. `instance`), below the target's own labels.
    pub external_labels: Labels,
    /// Stored rounds per request.
    pub max_samples_per_send: usize,
    /// Stored rounds per second while catching up (0 = unlimited).
    pub max_samples_per_second: u32,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// Every round, or only those no scrape covered.
    pub send: SendMode,
    /// `send = "gaps"`: scrapes further apart than this leave a gap that is shipped.
    pub scrape_gap: Duration,
}

impl Endpoint {
    pub fn new(name: impl Into<String>, url: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            url: url.into(),
            basic_auth: None,
            bearer_token: None,
            tls: Tls::default(),
            timeout: Duration::from_secs(30),
            external_labels: Labels::new(),
            max_samples_per_send: DEFAULT_SAMPLES_PER_SEND,
            max_samples_per_second: DEFAULT_SAMPLES_PER_SECOND,
            min_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(60),
            send: SendMode::All,
            scrape_gap: vantage_core::defaults::REMOTE_WRITE_SCRAPE_GAP,
        }
    }
}

/// Rounds per request: about 7,000 series points for ping, ~100 KB compressed.
pub const DEFAULT_SAMPLES_PER_SEND: usize = 1_000;
/// Catch-up rate: a 1 h backlog of 100 targets at 1 s (360,000 rounds) drains in 36 s.
pub const DEFAULT_SAMPLES_PER_SECOND: u32 = 10_000;
/// What the tasks of one shipper share: the stop signal and its wake-up.
pub(super) struct Shared {
    pub stop: AtomicBool,
    pub notify: Notify,
}

/// An endpoint could not be set up (bad TLS files, bad URL).
#[derive(Debug, thiserror::Error)]
#[error("remote_write endpoint {endpoint:?}: {message}")]
pub struct SetupError {
    pub endpoint: String,
    pub message: String,
}

pub(super) fn client(ep: &Endpoint) -> Result<reqwest::Client, SetupError> {
    let fail = |m: String| SetupError {
        endpoint: ep.name.clone(),
        message: m,
    };
    let mut b = reqwest::Client::builder()
        .timeout(ep.timeout)
        .connect_timeout(ep.timeout.min(Duration::from_secs(10)))
        .user_agent(concat!("vantage/", env!("CARGO_PKG_VERSION")))
        .use_rustls_tls();
    if let Some(ca) = &ep.tls.ca_file {
        let pem = std::fs::read(ca).map_err(|e| fail(format!("{}: {e}", ca.display())))?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| fail(format!("{}: {e}", ca.display())))?
        {
            b = b.add_root_certificate(cert);
        }
    }
    match (&ep.tls.cert_file, &ep.tls.key_file) {
        (Some(c), Some(k)) => {
            let mut pem = std::fs::read(c).map_err(|e| fail(format!("{}: {e}", c.display())))?;
            pem.extend(std::fs::read(k).map_err(|e| fail(format!("{}: {e}", k.display())))?);
            let id = reqwest::Identity::from_pem(&pem).map_err(|e| fail(e.to_string()))?;
            b = b.identity(id);
        }
        (None, None) => {}
        _ => return Err(fail("tls cert_file and key_file go together".into())),
    }
    if ep.tls.insecure_skip_verify {
        b = b.danger_accept_invalid_certs(true);
    }
    b.build().map_err(|e| fail(e.to_string()))
}

pub(super) enum Outcome {
    Ok,
    /// Retry the same request after a backoff.
    Retry(String),
    /// The receiver refused the data: split it, or drop a single sample.
    Refused(String),
}

/// Statuses that refuse the endpoint's setup rather than the data (credentials, URL, method,
/// encoding): nothing would be accepted until it is fixed, so the data is kept and retried.
fn refuses_setup(status: u16) -> bool {
    matches!(status, 401 | 403 | 404 | 405 | 407 | 411 | 415)
}

/// Receiver messages that refuse samples, whatever the status: Prometheus 2.42 answers a
/// sample older than its out-of-order window with `500 too old sample`, which would otherwise
/// be retried forever and block the endpoint.
const SAMPLE_REFUSALS: [&str; 4] = [
    "too old sample",
    "out of bounds",
    "out of order sample",
    DUPLICATE_SAMPLE,
];

/// The refusal of a sample at a time the receiver already holds another value at.
const DUPLICATE_SAMPLE: &str = "duplicate sample for timestamp";

/// A refusal that means the receiver already holds another value at that exact time.
pub(super) fn collides_with_scrape(text: &str) -> bool {
    text.to_ascii_lowercase().contains(DUPLICATE_SAMPLE)
}

fn refuses_samples(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    SAMPLE_REFUSALS.iter().any(|m| t.contains(m))
}

/// One remote_write request to an endpoint, and what its answer means for the data.
pub(super) async fn post(client: &reqwest::Client, ep: &Endpoint, body: Vec<u8>) -> Outcome {
    let mut r = client
        .post(&ep.url)
        .header("Content-Encoding", "snappy")
        .header("Content-Type", "application/x-protobuf")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
        .body(body);
    if let Some((u, p)) = &ep.basic_auth {
        r = r.basic_auth(u, Some(p));
    } else if let Some(t) = &ep.bearer_token {
        r = r.bearer_auth(t);
    }
    match r.send().await {
        Ok(resp) => {
            let status = resp.status();
            if status.is_success() {
                return Outcome::Ok;
            }
            let text = resp.text().await.unwrap_or_default();
            // The receiver's reason, bounded: it is kept and logged.
            let text: String = text.trim().chars().take(300).collect();
            let msg = format!("HTTP {status}: {text}");
            let code = status.as_u16();
            if refuses_samples(&text) {
                Outcome::Refused(msg)
            } else if code == 429 || status.is_server_error() || refuses_setup(code) {
                Outcome::Retry(msg)
            } else {
                Outcome::Refused(msg)
            }
        }
        Err(e) => Outcome::Retry(vantage_core::error_chain(&e)),
    }
}
