//! One remote_write endpoint: its settings, its HTTP client, and one request sent with what
//! the answer means for the data. The shipper's batches and the live push both send through
//! it.

use std::sync::atomic::AtomicBool;
use std::time::Duration;

use super::config::Auth;
use tokio::sync::Notify;
// An endpoint is the config's, sent to as it is. Its TLS settings use rustls, with
// system-independent roots from webpki unless `ca_file`.
pub use super::config::{RemoteWriteConfig as Endpoint, SendMode, TlsConfig as Tls};

/// Rounds per request: about 7,000 series points for ping, ~100 KB compressed.
pub const DEFAULT_SAMPLES_PER_SEND: usize = super::config::REMOTE_WRITE_SAMPLES_PER_SEND;
/// Catch-up rate: a 1 h backlog of 100 targets at 1 s (360,000 rounds) drains in 36 s.
pub const DEFAULT_SAMPLES_PER_SECOND: u32 = super::config::REMOTE_WRITE_SAMPLES_PER_SECOND;
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
    match &ep.auth {
        Auth::None => {}
        Auth::Basic {
            username, password, ..
        } => r = r.basic_auth(username, Some(&password.0)),
        Auth::Bearer { token, .. } => r = r.bearer_auth(&token.0),
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
