//! Central provisioning: extra targets pulled from an HTTPS URL (a file kept in git and served
//! by anything), with a bearer token, refreshed periodically.
//!
//! - Pulled targets merge with the local ones; on a name clash the local target wins and the
//!   clash is reported (metric, log, `/api/provisioning`).
//! - A fetched file is applied only when it validates completely; otherwise the running set
//!   stays and the failure is reported. The last good copy is kept in the data directory and
//!   used after a restart, so a device that boots while the server is unreachable still
//!   probes the central targets.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use vantage_core::LockExt;

use super::config::{FleetSections, MAX_PROVISIONING_BYTES, Provisioning};
use prometheus::{Gauge, IntCounterVec, Opts};
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use vantage_core::{Config, defaults, error_chain};

use crate::metrics::unix_seconds;
use crate::update::offer::{UpdateOffer, UpdateOffered};

/// The last good copy, in the data directory.
pub const CACHE_FILE: &str = "provisioned-targets.toml";
/// After a failed fetch, try again this soon (or at the refresh interval, if shorter).
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);

/// What the web page and `/api/provisioning` show.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    pub url: Option<String>,
    /// Provisioned targets in effect (after local ones won their clashes).
    pub targets: Vec<String>,
    /// Provisioned targets not applied because a local target has the same name.
    pub overridden_by_local: Vec<String>,
    pub last_attempt: Option<f64>,
    pub last_success: Option<f64>,
    /// Why the last fetch was not applied; `None` when it was.
    pub last_error: Option<String>,
    /// Where the targets in effect came from: `remote`, `cache` or `none`.
    pub source: &'static str,
}

/// Provisioning state shared by the fetch loop, the reload path and the HTTP handlers.
#[derive(Debug)]
pub struct State {
    data_dir: Option<PathBuf>,
    remote: Mutex<Option<Arc<Config>>>,
    text: Mutex<Option<String>>,
    /// The `ETag` of the file in effect and the URL it came from.
    etag: Mutex<Option<(String, String)>>,
    status: Mutex<Status>,
    /// Wakes the fetch loop early (config reload).
    pub wake: tokio::sync::Notify,
    ok: Gauge,
    last_success: Gauge,
    fetches: IntCounterVec,
    targets: Gauge,
    overridden: Gauge,
}

impl State {
    pub fn new(registry: &prometheus::Registry, data_dir: Option<PathBuf>) -> Arc<Self> {
        let gauge = |name: &str, help: &str| {
            let g = Gauge::new(name, help).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let fetches = IntCounterVec::new(
            Opts::new(
                "vantage_provisioning_fetches_total",
                "Fetches of the provisioning URL by result: applied, unchanged, invalid (file rejected, running set kept), error (network, TLS or HTTP).",
            ),
            &["result"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(fetches.clone()))
            .expect("unique metric");
        for r in ["applied", "unchanged", "invalid", "error"] {
            fetches.with_label_values(&[r]);
        }
        Arc::new(Self {
            data_dir,
            remote: Mutex::default(),
            text: Mutex::default(),
            etag: Mutex::default(),
            status: Mutex::new(Status {
                source: "none",
                ..Status::default()
            }),
            wake: tokio::sync::Notify::new(),
            ok: gauge(
                "vantage_provisioning_last_fetch_successful",
                "1 if the last fetch of the provisioning URL succeeded and its file was valid, else 0.",
            ),
            last_success: gauge(
                "vantage_provisioning_last_success_timestamp_seconds",
                "When the provisioning URL was last fetched successfully (0: never).",
            ),
            fetches,
            targets: gauge(
                "vantage_provisioning_targets",
                "Provisioned targets in effect.",
            ),
            overridden: gauge(
                "vantage_provisioning_overridden_targets",
                "Provisioned targets not applied because a local target has the same name.",
            ),
        })
    }

    fn cache_path(&self) -> Option<PathBuf> {
        self.data_dir.as_ref().map(|d| d.join(CACHE_FILE))
    }

    /// Loads the last good copy at start, if provisioning is configured and the copy is valid.
    pub fn load_cache(&self, local: &Config) {
        let (Some(p), Some(path)) = (local.provisioning(), self.cache_path()) else {
            return;
        };
        let Ok(text) = std::fs::read_to_string(&path) else {
            return;
        };
        match crate::config::parse_provisioned(&text, &path.display().to_string()) {
            Ok(c) => {
                tracing::info!(
                    targets = c.targets.len(),
                    file = %path.display(),
                    "using the last good copy of the provisioned targets until {} answers",
                    p.url
                );
                *self.remote.lock_or_recover() = Some(Arc::new(c));
                *self.text.lock_or_recover() = Some(text);
                self.status.lock_or_recover().source = "cache";
            }
            Err(e) => tracing::warn!("ignoring the cached provisioned targets:\n{e}"),
        }
    }

    /// The local config plus the provisioned targets, local winning on name clashes.
    pub fn merge(&self, local: &Config) -> Config {
        let remote = if local.provisioning().is_some() {
            self.remote.lock_or_recover().clone()
        } else {
            None
        };
        let (merged, applied, overridden) = merge(local, remote.as_deref());
        if !overridden.is_empty() {
            tracing::warn!(
                targets = ?overridden,
                "provisioned targets with the same name as a local target: the local ones win"
            );
        }
        self.targets.set(applied.len() as f64);
        self.overridden.set(overridden.len() as f64);
        let mut st = self.status.lock_or_recover();
        st.url = local.provisioning().map(|p| p.url.clone());
        st.targets = applied;
        st.overridden_by_local = overridden;
        merged
    }

    pub fn status(&self) -> Status {
        self.status.lock_or_recover().clone()
    }

    /// The `[update]` of the provisioned file in effect.
    pub fn offered_update(&self) -> Option<UpdateOffer> {
        self.remote
            .lock_or_recover()
            .as_ref()
            .and_then(|c| c.update_offer().cloned())
    }

    fn failed(&self, result: &str, msg: String) {
        tracing::error!("provisioning: {msg}; keeping the running targets");
        self.ok.set(0.0);
        self.fetches.with_label_values(&[result]).inc();
        self.status.lock_or_recover().last_error = Some(msg);
    }

    fn succeeded(&self, result: &str) {
        let now = unix_seconds(SystemTime::now());
        self.ok.set(1.0);
        self.last_success.set(now);
        self.fetches.with_label_values(&[result]).inc();
        let mut st = self.status.lock_or_recover();
        st.last_error = None;
        st.last_success = Some(now);
        st.source = "remote";
    }

    /// Validates a fetched file and, if good, makes it the provisioned set and caches it.
    /// Returns whether the set changed.
    fn accept(&self, url: &str, text: String, etag: Option<String>) -> bool {
        if self.text.lock_or_recover().as_deref() == Some(text.as_str()) {
            *self.etag.lock_or_recover() = etag.map(|e| (url.to_string(), e));
            self.succeeded("unchanged");
            return false;
        }
        match crate::config::parse_provisioned(&text, url) {
            Err(e) => {
                self.failed("invalid", format!("the file at {url} is invalid:\n{e}"));
                false
            }
            Ok(c) => {
                if let Some(path) = self.cache_path()
                    && let Err(e) = crate::files::write_whole(&path, text.as_bytes())
                {
                    tracing::warn!("cannot keep a copy in {}: {e}", path.display());
                }
                tracing::info!(targets = c.targets.len(), %url, "provisioned targets applied");
                *self.remote.lock_or_recover() = Some(Arc::new(c));
                *self.text.lock_or_recover() = Some(text);
                *self.etag.lock_or_recover() = etag.map(|e| (url.to_string(), e));
                self.succeeded("applied");
                true
            }
        }
    }
}

/// Merges: local targets first, then provisioned ones whose names are free. Returns the config,
/// the provisioned names applied and the provisioned names a local target overrode.
pub fn merge(local: &Config, remote: Option<&Config>) -> (Config, Vec<String>, Vec<String>) {
    let mut out = local.clone();
    let (mut applied, mut overridden) = (Vec::new(), Vec::new());
    for t in remote.map(|r| r.targets.as_slice()).unwrap_or_default() {
        if local.target(&t.name).is_some() {
            overridden.push(t.name.clone());
        } else if out.targets.len() >= defaults::MAX_TARGETS {
            tracing::warn!(
                "provisioned target {} not applied: at most {} targets",
                t.name,
                defaults::MAX_TARGETS
            );
        } else {
            applied.push(t.name.clone());
            out.targets.push(t.clone());
        }
    }
    (out, applied, overridden)
}

enum Fetched {
    NotModified,
    Body(String, Option<String>),
}

fn token(p: &Provisioning) -> Result<Option<String>, String> {
    if let Some(t) = &p.token {
        return Ok(Some(t.0.clone()));
    }
    let Some(f) = &p.token_file else {
        return Ok(None);
    };
    let t = std::fs::read_to_string(f).map_err(|e| format!("cannot read token_file {f}: {e}"))?;
    let t = t.trim();
    if t.is_empty() || t.chars().any(|c| c.is_control() || c == ' ') {
        return Err(format!("token_file {f} must hold one token without spaces"));
    }
    Ok(Some(t.to_string()))
}

/// Adds the certificates of a PEM file (`[provisioning] ca_file`) to a client's trusted roots,
/// next to the Mozilla ones. The fleet-update download trusts the same file.
pub fn trust_ca_file(
    mut b: reqwest::ClientBuilder,
    ca: &str,
) -> Result<reqwest::ClientBuilder, String> {
    let pem = std::fs::read(ca).map_err(|e| format!("cannot read ca_file {ca}: {e}"))?;
    let certs =
        reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| format!("ca_file {ca}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("ca_file {ca}: no PEM certificate in it"));
    }
    for c in certs {
        b = b.add_root_certificate(c);
    }
    Ok(b)
}

fn client(p: &Provisioning) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .https_only(true)
        .timeout(p.timeout)
        .connect_timeout(p.timeout.min(Duration::from_secs(10)))
        .redirect(reqwest::redirect::Policy::limited(5))
        .user_agent(concat!("vantage/", env!("CARGO_PKG_VERSION")));
    if let Some(ca) = &p.ca_file {
        b = trust_ca_file(b, ca)?;
    }
    b.build()
        .map_err(|e| format!("cannot build the HTTPS client: {e}"))
}

async fn fetch(p: &Provisioning, etag: Option<String>) -> Result<Fetched, String> {
    let client = client(p)?;
    let mut req = client.get(&p.url);
    if let Some(t) = token(p)? {
        req = req.bearer_auth(t);
    }
    if let Some(e) = etag {
        req = req.header(reqwest::header::IF_NONE_MATCH, e);
    }
    let mut resp = req.send().await.map_err(|e| error_chain(&e))?;
    let status = resp.status();
    if status == reqwest::StatusCode::NOT_MODIFIED {
        return Ok(Fetched::NotModified);
    }
    if !status.is_success() {
        return Err(format!("{} answered HTTP {status}", p.url));
    }
    let etag = resp
        .headers()
        .get(reqwest::header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| error_chain(&e))? {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_PROVISIONING_BYTES {
            return Err(format!(
                "{} sent more than {} bytes",
                p.url, MAX_PROVISIONING_BYTES
            ));
        }
    }
    let text =
        String::from_utf8(body).map_err(|_| format!("{} sent a file that is not UTF-8", p.url))?;
    Ok(Fetched::Body(text, etag))
}

/// Fetches while the device's config is kept (`local`); a config reload wakes it at once.
/// A changed set of targets is announced on `reapply`, whose receiver applies the local config
/// again with them.
pub async fn run(
    local: watch::Receiver<Arc<Config>>,
    reapply: mpsc::Sender<()>,
    state: Arc<State>,
) {
    loop {
        if local.has_changed().is_err() || reapply.is_closed() {
            return;
        }
        let cfg = local.borrow().provisioning().cloned();
        let Some(p) = cfg else {
            state.wake.notified().await;
            continue;
        };
        state.status.lock_or_recover().last_attempt = Some(unix_seconds(SystemTime::now()));
        // An ETag only means something to the URL that sent it.
        let etag = state
            .etag
            .lock_or_recover()
            .clone()
            .filter(|(url, _)| *url == p.url)
            .map(|(_, e)| e);
        let wait = match fetch(&p, etag).await {
            Ok(Fetched::NotModified) => {
                state.succeeded("unchanged");
                p.refresh
            }
            Ok(Fetched::Body(text, etag)) => {
                // One pending reapply covers any number of changes.
                if state.accept(&p.url, text, etag) {
                    let _ = reapply.try_send(());
                }
                if state.status.lock_or_recover().last_error.is_some() {
                    p.refresh.min(RETRY_AFTER_FAILURE)
                } else {
                    p.refresh
                }
            }
            Err(msg) => {
                state.failed("error", msg);
                p.refresh.min(RETRY_AFTER_FAILURE)
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = state.wake.notified() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> Config {
        crate::config::parse(text, "t").unwrap()
    }

    #[test]
    fn local_targets_win_name_clashes() {
        let local = cfg("[[targets]]\nname = \"a\"\nhost = \"127.0.0.1\"\nprobes = [\"ping\"]\n");
        let remote = cfg(
            "[[targets]]\nname = \"a\"\nhost = \"127.0.0.9\"\nprobes = [\"ping\"]\n[[targets]]\nname = \"b\"\nhost = \"127.0.0.2\"\nprobes = [\"ping\"]\n",
        );
        let (m, applied, over) = merge(&local, Some(&remote));
        assert_eq!(m.targets.len(), 2);
        assert_eq!(m.target("a").unwrap().host.to_string(), "127.0.0.1");
        assert_eq!(applied, ["b"]);
        assert_eq!(over, ["a"]);
        let (m, applied, over) = merge(&local, None);
        assert_eq!((m.targets.len(), applied.len(), over.len()), (1, 0, 0));
    }

    #[test]
    fn a_bad_file_keeps_the_good_set_and_a_good_one_is_cached() {
        let dir = std::env::temp_dir().join(format!("vantage-prov-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let reg = prometheus::Registry::new();
        let st = State::new(&reg, Some(dir.clone()));
        let good = "[[targets]]\nname = \"b\"\nhost = \"127.0.0.2\"\nprobes = [\"ping\"]\n";
        assert!(st.accept("u", good.into(), None));
        assert!(!st.accept("u", good.into(), None), "same text: unchanged");
        assert!(!st.accept("u", "[[targets]]\nname = 1\n".into(), None));
        assert!(st.status().last_error.unwrap().contains("invalid"));
        assert_eq!(st.ok.get(), 0.0);
        assert_eq!(
            st.remote.lock_or_recover().as_ref().unwrap().targets[0].name,
            "b"
        );
        assert_eq!(std::fs::read_to_string(dir.join(CACHE_FILE)).unwrap(), good);

        // A restart finds the cached copy.
        let local = cfg("[provisioning]\nurl = \"https://x.example/t.toml\"\n");
        let st2 = State::new(&prometheus::Registry::new(), Some(dir.clone()));
        st2.load_cache(&local);
        assert_eq!(st2.merge(&local).targets.len(), 1);
        assert_eq!(st2.status().source, "cache");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
