//! A bundle fetched from a URL, streamed into the spool: https only unless allowed, bounded in
//! size, its SHA-256 checked as it arrives when one is expected. An interrupted transfer is
//! not resumed: the next attempt starts afresh (the spool file is removed on any failure).

use std::path::{Path, PathBuf};
use std::time::Duration;

use vantage_core::error_chain;

use super::spool::{Limits, SpoolFile};

/// The spool's name for a downloaded bundle.
pub const DOWNLOAD_NAME: &str = "download.raucb";
/// A server silent this long mid-transfer is given up on.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// One download.
#[derive(Debug, Clone)]
pub struct Source<'a> {
    pub url: &'a str,
    /// Plain `http://` too (a lab server); the signature is checked either way.
    pub allow_http: bool,
    pub sha256: Option<[u8; 32]>,
    pub limits: Limits,
    /// A PEM file of roots to trust besides the Mozilla ones (`[provisioning] ca_file`).
    pub ca_file: Option<&'a str>,
}

/// Refuses a URL the device must not fetch a bundle from.
pub fn check_url(url: &str, allow_http: bool) -> Result<reqwest::Url, String> {
    let u = reqwest::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    match u.scheme() {
        "https" => Ok(u),
        "http" if allow_http => Ok(u),
        "http" => Err(format!(
            "{url}: plain http:// is refused (anyone on the path could swap the bundle for \
             another signed one, e.g. an older build); use https://, or allow http (--allow-http) for a lab \
             server"
        )),
        s => Err(format!("{url}: {s}:// is not supported (https:// only)")),
    }
}

/// Downloads into `spool`, reporting bytes so far and the announced total; returns the
/// bundle's path. On failure nothing is left in the spool.
pub async fn download(
    src: &Source<'_>,
    spool: &Path,
    progress: &mut (dyn FnMut(u64, Option<u64>) + Send),
) -> Result<PathBuf, String> {
    let url = check_url(src.url, src.allow_http)?;
    let mut client = reqwest::Client::builder()
        .use_rustls_tls()
        .https_only(!src.allow_http)
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        .redirect(reqwest::redirect::Policy::limited(5))
        .user_agent(concat!("vantage/", env!("CARGO_PKG_VERSION")));
    if let Some(ca) = src.ca_file {
        client = crate::fleet::provisioning::trust_ca_file(client, ca)?;
    }
    let client = client
        .build()
        .map_err(|e| format!("cannot build the HTTPS client: {e}"))?;
    let mut resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("{}: {}", src.url, error_chain(&e)))?;
    if !resp.status().is_success() {
        return Err(format!("{} answered HTTP {}", src.url, resp.status()));
    }
    let total = resp.content_length();
    let mut file = SpoolFile::create(spool, DOWNLOAD_NAME, total, src.limits)?;
    progress(0, total);
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| format!("{}: download cut: {}", src.url, error_chain(&e)))?
    {
        // Chunks are small writes to the page cache; the file is synced once at the end.
        file.write(&chunk)?;
        progress(file.written(), total);
    }
    if let Some(n) = total
        && file.written() != n
    {
        return Err(format!(
            "{}: download cut: {} of {n} bytes",
            src.url,
            file.written()
        ));
    }
    file.finish(src.sha256.as_ref())
}
