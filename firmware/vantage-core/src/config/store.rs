//! `[store]` (the sample store on the SD card) and `[[remote_write]]` (where its samples are
//! shipped). The core only validates them; the daemon hands them to `vantage-store`.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::check::Check;
use super::check::Src;
use super::fleet::Secret;
use super::names::{check_label_name, check_label_value, check_name};
use crate::defaults::{self, self as D};

/// `[store]` as written.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    /// `fjall` (default) or `sled` (builds with the `sled` feature only).
    pub backend: Option<Spanned<String>>,
    /// Bytes on disk, e.g. `"4GiB"`, `"500MB"` or a plain number of bytes.
    pub max_size: Option<Spanned<toml::Value>>,
    pub max_age: Option<Spanned<String>>,
    /// Group commit: write at least this often...
    pub commit_interval: Option<Spanned<String>>,
    /// ...or when this many samples wait.
    pub commit_samples: Option<Spanned<i64>>,
    /// Samples kept in memory while the disk refuses writes.
    pub max_pending: Option<Spanned<i64>>,
}

/// Validated `[store]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoreConfig {
    pub backend: String,
    pub max_bytes: u64,
    pub max_age: Duration,
    pub commit_interval: Duration,
    pub commit_samples: usize,
    pub max_pending: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            backend: "fjall".into(),
            max_bytes: defaults::STORE_MAX_BYTES,
            max_age: defaults::STORE_MAX_AGE,
            commit_interval: defaults::STORE_COMMIT_INTERVAL,
            commit_samples: defaults::STORE_COMMIT_SAMPLES,
            max_pending: defaults::STORE_MAX_PENDING,
        }
    }
}

/// `remote_write[].basic_auth` as written.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawBasicAuth {
    pub username: Spanned<String>,
    #[serde(skip_serializing)]
    pub password: Option<Spanned<String>>,
    pub password_file: Option<Spanned<String>>,
}

/// `remote_write[].tls` as written.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub ca_file: Option<Spanned<String>>,
    pub cert_file: Option<Spanned<String>>,
    pub key_file: Option<Spanned<String>>,
    pub insecure_skip_verify: Option<Spanned<bool>>,
}

/// One `[[remote_write]]` table as written.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRemoteWrite {
    pub url: Spanned<String>,
    pub name: Option<Spanned<String>>,
    pub basic_auth: Option<Spanned<RawBasicAuth>>,
    #[serde(skip_serializing)]
    pub bearer_token: Option<Spanned<String>>,
    pub bearer_token_file: Option<Spanned<String>>,
    pub tls: Option<RawTls>,
    pub timeout: Option<Spanned<String>>,
    #[serde(default)]
    pub labels: BTreeMap<Spanned<String>, Spanned<String>>,
    pub max_samples_per_send: Option<Spanned<i64>>,
    pub max_samples_per_second: Option<Spanned<i64>>,
    pub min_backoff: Option<Spanned<String>>,
    pub max_backoff: Option<Spanned<String>>,
    /// `all` (default) or `gaps`.
    pub send: Option<Spanned<String>>,
    pub scrape_gap: Option<Spanned<String>>,
}

/// Which stored rounds an endpoint receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SendMode {
    /// Every round: the endpoint's Prometheus does not scrape the device (push-only fleets).
    #[default]
    All,
    /// Only rounds that no scrape of `/metrics` covered: the endpoint's Prometheus also scrapes
    /// the device, and remote_write fills the gaps (scrape + backfill fleets).
    Gaps,
}

impl SendMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Gaps => "gaps",
        }
    }
}

/// How an endpoint authenticates.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Auth {
    None,
    Basic {
        username: String,
        password: Secret,
        /// Read at load; kept to show where the password came from.
        password_file: Option<PathBuf>,
    },
    Bearer {
        token: Secret,
        token_file: Option<PathBuf>,
    },
}

/// Validated TLS options.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize)]
pub struct TlsConfig {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub insecure_skip_verify: bool,
}

/// One validated remote_write endpoint; the store's shipper sends to it as it is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct RemoteWriteConfig {
    /// Names the endpoint in metrics and keys its shipping cursor: renaming it resends the
    /// backlog.
    pub name: String,
    pub url: String,
    pub auth: Auth,
    pub tls: TlsConfig,
    pub timeout: Duration,
    /// Added to every series shipped to this endpoint (e.g. `instance`), below the target's
    /// own labels.
    pub labels: BTreeMap<String, String>,
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

impl RemoteWriteConfig {
    /// An endpoint named `name` at `url` with every other setting at its default.
    pub fn new(name: impl Into<String>, url: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            url: url.into(),
            auth: Auth::None,
            tls: TlsConfig::default(),
            timeout: D::REMOTE_WRITE_TIMEOUT,
            labels: BTreeMap::new(),
            max_samples_per_send: D::REMOTE_WRITE_SAMPLES_PER_SEND,
            max_samples_per_second: D::REMOTE_WRITE_SAMPLES_PER_SECOND,
            min_backoff: D::REMOTE_WRITE_MIN_BACKOFF,
            max_backoff: D::REMOTE_WRITE_MAX_BACKOFF,
            send: SendMode::All,
            scrape_gap: D::REMOTE_WRITE_SCRAPE_GAP,
        }
    }
}

/// Parses sizes: `"4GiB"`, `"512MiB"`, `"500MB"`, `"64kB"`, or a bare integer of bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.trim();
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "kib" | "k" => 1 << 10,
        "mib" | "m" => 1 << 20,
        "gib" | "g" => 1 << 30,
        "tib" | "t" => 1 << 40,
        _ => {
            return Err(format!(
                "{s:?} is not a size; write e.g. \"4GiB\", \"500MB\" or \"65536\""
            ));
        }
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size; write e.g. \"4GiB\", \"500MB\" or \"65536\""))?;
    let bytes = n * mult as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(format!("{s:?} is too large"));
    }
    Ok(bytes as u64)
}

impl StoreConfig {
    pub(crate) fn resolve(c: &mut Check<'_, '_>, raw: Option<&RawStore>) -> Self {
        let mut out = Self::default();
        let Some(raw) = raw else { return out };
        if let Some(b) = &raw.backend {
            match b.get_ref().as_str() {
                "fjall" | "sled" => out.backend = b.get_ref().clone(),
                other => c.err(
                    b.span(),
                    "store.backend",
                    format!("{other:?} is not a store backend (fjall or sled)"),
                ),
            }
        }
        if let Some(n) = raw.max_size.as_ref().and_then(|v| max_size(c, v)) {
            out.max_bytes = n;
        }
        let field = |name: &str| format!("store.{name}");
        let x = Src::new(Some(raw), None, &field);
        out.max_age = x
            .ranged(c, |r| r.max_age.as_ref(), "max_age", D::STORE_MAX_AGE_RANGE)
            .unwrap_or(out.max_age);
        let interval = D::STORE_COMMIT_INTERVAL_RANGE;
        out.commit_interval = x
            .ranged(
                c,
                |r| r.commit_interval.as_ref(),
                "commit_interval",
                interval,
            )
            .unwrap_or(out.commit_interval);
        let samples = D::STORE_COMMIT_SAMPLES_RANGE;
        out.commit_samples = x
            .ranged(c, |r| r.commit_samples.as_ref(), "commit_samples", samples)
            .map_or(out.commit_samples, |n| n as usize);
        out.max_pending = x
            .ranged(
                c,
                |r| r.max_pending.as_ref(),
                "max_pending",
                D::STORE_MAX_PENDING_RANGE,
            )
            .map_or(out.max_pending, |n| n as usize);
        out
    }
}

/// `store.max_size`: bytes as a number or a size with its unit, within its bounds.
fn max_size(c: &mut Check<'_, '_>, v: &Spanned<toml::Value>) -> Option<u64> {
    let parsed = match v.get_ref() {
        toml::Value::Integer(n) if *n >= 0 => Ok(*n as u64),
        toml::Value::Integer(n) => Err(format!("{n} is negative")),
        toml::Value::String(s) => parse_size(s),
        other => Err(format!(
            "must be a size such as \"4GiB\", got a {}",
            other.type_str()
        )),
    };
    match parsed {
        Ok(n) if (defaults::STORE_MIN_BYTES..=defaults::STORE_MAX_MAX_BYTES).contains(&n) => {
            Some(n)
        }
        Ok(n) => {
            c.err(
                v.span(),
                "store.max_size",
                format!(
                    "{n} bytes is out of range; it must be between {} MiB and {} TiB",
                    defaults::STORE_MIN_BYTES >> 20,
                    defaults::STORE_MAX_MAX_BYTES >> 40
                ),
            );
            None
        }
        Err(m) => {
            c.err(v.span(), "store.max_size", m);
            None
        }
    }
}

fn read_secret(
    c: &mut Check<'_, '_>,
    span: Range<usize>,
    field: &str,
    path: &str,
) -> Option<String> {
    match std::fs::read_to_string(path) {
        Ok(s) => {
            let s = s.trim_end_matches(['\n', '\r']).to_string();
            if s.is_empty() {
                c.err(Some(span), field, format!("{path} is empty"));
                None
            } else {
                Some(s)
            }
        }
        Err(e) => {
            c.err(Some(span), field, format!("cannot read {path}: {e}"));
            None
        }
    }
}

/// The endpoint name used when none is given: host and port of the URL.
pub fn default_name(url: &str) -> String {
    let url = url.trim();
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    host.to_string()
}

impl RemoteWriteConfig {
    /// One `[[remote_write]]` endpoint; `None` when anything in it is wrong.
    pub(crate) fn resolve(
        c: &mut Check<'_, '_>,
        path: &str,
        span: Range<usize>,
        raw: &RawRemoteWrite,
    ) -> Option<Self> {
        let before = c.col.errors.len();
        let f = |n: &str| format!("{path}.{n}");
        let url = endpoint_url(c, &f("url"), raw);
        let name = match &raw.name {
            Some(n) => {
                if let Err(m) = check_name(n.get_ref()) {
                    c.err(n.span(), &f("name"), m);
                }
                n.get_ref().clone()
            }
            None => default_name(&url),
        };
        let auth = endpoint_auth(c, &f, span, raw);
        let tls = raw
            .tls
            .as_ref()
            .map_or_else(TlsConfig::default, |t| endpoint_tls(c, &f, t));
        let labels = external_labels(c, &f, raw);
        let p = endpoint_pacing(c, &f, raw);
        let (send, scrape_gap) = endpoint_send(c, &f, raw);
        if c.col.errors.len() > before {
            return None;
        }
        Some(Self {
            send,
            scrape_gap,
            name,
            url,
            auth,
            tls,
            timeout: p.timeout,
            labels,
            max_samples_per_send: p.per_send,
            max_samples_per_second: p.per_second,
            min_backoff: p.min_backoff,
            max_backoff: p.max_backoff,
        })
    }
}

/// How an endpoint is written to: request timeout, retry backoff and rates.
struct Pacing {
    timeout: Duration,
    min_backoff: Duration,
    max_backoff: Duration,
    per_send: usize,
    per_second: u32,
}

fn endpoint_pacing(c: &mut Check<'_, '_>, f: FieldOf<'_>, raw: &RawRemoteWrite) -> Pacing {
    let x = Src::new(Some(raw), None, f);
    let timeout = x
        .ranged(
            c,
            |r| r.timeout.as_ref(),
            "timeout",
            D::REMOTE_WRITE_TIMEOUT_RANGE,
        )
        .unwrap_or(defaults::REMOTE_WRITE_TIMEOUT);
    let (min_backoff, max_backoff) = backoff(c, f, raw);
    let per_send = D::REMOTE_WRITE_SAMPLES_PER_SEND_RANGE;
    let per_send = x
        .ranged(
            c,
            |r| r.max_samples_per_send.as_ref(),
            "max_samples_per_send",
            per_send,
        )
        .map_or(defaults::REMOTE_WRITE_SAMPLES_PER_SEND, |n| n as usize);
    let per_second = D::REMOTE_WRITE_SAMPLES_PER_SECOND_RANGE;
    let per_second = x
        .ranged(
            c,
            |r| r.max_samples_per_second.as_ref(),
            "max_samples_per_second",
            per_second,
        )
        .map_or(defaults::REMOTE_WRITE_SAMPLES_PER_SECOND, |n| n as u32);
    Pacing {
        timeout,
        min_backoff,
        max_backoff,
        per_send,
        per_second,
    }
}

/// Which rounds the endpoint receives (`send`), and for `gaps` the longest scrape interval
/// still counted as covered (`scrape_gap`).
fn endpoint_send(
    c: &mut Check<'_, '_>,
    f: FieldOf<'_>,
    raw: &RawRemoteWrite,
) -> (SendMode, Duration) {
    let send = match raw.send.as_ref().map(|v| (v.span(), v.get_ref().as_str())) {
        None | Some((_, "all")) => SendMode::All,
        Some((_, "gaps")) => SendMode::Gaps,
        Some((s, other)) => {
            c.err(
                s,
                &f("send"),
                format!("{other:?} is not a send mode; write \"all\" (ship every round) or \"gaps\" (ship only the rounds no scrape of /metrics covered)"),
            );
            SendMode::All
        }
    };
    let scrape_gap = Src::new(Some(raw), None, f)
        .ranged(
            c,
            |r| r.scrape_gap.as_ref(),
            "scrape_gap",
            D::REMOTE_WRITE_SCRAPE_GAP_RANGE,
        )
        .unwrap_or(defaults::REMOTE_WRITE_SCRAPE_GAP);
    (send, scrape_gap)
}

/// The first and the longest retry delay, in that order.
fn backoff(c: &mut Check<'_, '_>, f: FieldOf<'_>, raw: &RawRemoteWrite) -> (Duration, Duration) {
    let x = Src::new(Some(raw), None, f);
    let min_backoff = x
        .ranged(
            c,
            |r| r.min_backoff.as_ref(),
            "min_backoff",
            D::REMOTE_WRITE_MIN_BACKOFF_RANGE,
        )
        .unwrap_or(defaults::REMOTE_WRITE_MIN_BACKOFF);
    let max_backoff = x
        .ranged(
            c,
            |r| r.max_backoff.as_ref(),
            "max_backoff",
            D::REMOTE_WRITE_MAX_BACKOFF_RANGE,
        )
        .unwrap_or(defaults::REMOTE_WRITE_MAX_BACKOFF);
    if min_backoff > max_backoff {
        c.err(
            raw.max_backoff
                .as_ref()
                .map(|v| v.span())
                .or(raw.min_backoff.as_ref().map(|v| v.span())),
            &f("max_backoff"),
            "must not be shorter than min_backoff",
        );
    }
    (min_backoff, max_backoff)
}

/// The endpoint's URL, trimmed: http or https, with a host and nothing unprintable.
fn endpoint_url(c: &mut Check<'_, '_>, field: &str, raw: &RawRemoteWrite) -> String {
    let url = raw.url.get_ref().trim().to_string();
    let lower = url.to_ascii_lowercase();
    if !(lower.starts_with("http://") || lower.starts_with("https://")) {
        c.err(
            raw.url.span(),
            field,
            format!("{url:?} must start with http:// or https://"),
        );
    } else if default_name(&url).is_empty()
        || url.chars().any(|ch| ch.is_whitespace() || ch.is_control())
    {
        c.err(raw.url.span(), field, format!("{url:?} is not a URL"));
    }
    url
}

type FieldOf<'f> = &'f dyn Fn(&str) -> String;

/// At most one of basic_auth, bearer_token and bearer_token_file.
fn endpoint_auth(
    c: &mut Check<'_, '_>,
    f: FieldOf<'_>,
    span: Range<usize>,
    raw: &RawRemoteWrite,
) -> Auth {
    match (&raw.basic_auth, &raw.bearer_token, &raw.bearer_token_file) {
        (Some(b), None, None) => basic_auth(c, f, b),
        (None, Some(t), None) => Auth::Bearer {
            token: Secret(t.get_ref().clone()),
            token_file: None,
        },
        (None, None, Some(file)) => {
            match read_secret(c, file.span(), &f("bearer_token_file"), file.get_ref()) {
                Some(t) => Auth::Bearer {
                    token: Secret(t),
                    token_file: Some(PathBuf::from(file.get_ref())),
                },
                None => Auth::None,
            }
        }
        (None, None, None) => Auth::None,
        _ => {
            let s = raw
                .bearer_token
                .as_ref()
                .map(|t| t.span())
                .or(raw.bearer_token_file.as_ref().map(|t| t.span()))
                .unwrap_or(span);
            c.err(
                s,
                &f("bearer_token"),
                "set one of basic_auth, bearer_token or bearer_token_file",
            );
            Auth::None
        }
    }
}

/// `basic_auth`: a user name and either a password or a file holding it.
fn basic_auth(c: &mut Check<'_, '_>, f: FieldOf<'_>, b: &Spanned<RawBasicAuth>) -> Auth {
    let bs = b.span();
    let b = b.get_ref();
    let pw = match (&b.password, &b.password_file) {
        (Some(p), None) => Some((p.get_ref().clone(), None)),
        (None, Some(file)) => read_secret(
            c,
            file.span(),
            &f("basic_auth.password_file"),
            file.get_ref(),
        )
        .map(|p| (p, Some(PathBuf::from(file.get_ref())))),
        (Some(_), Some(file)) => {
            c.err(
                file.span(),
                &f("basic_auth.password_file"),
                "set either password or password_file, not both",
            );
            None
        }
        (None, None) => {
            c.err(bs, &f("basic_auth"), "needs a password or a password_file");
            None
        }
    };
    match pw {
        Some((p, file)) => Auth::Basic {
            username: b.username.get_ref().clone(),
            password: Secret(p),
            password_file: file,
        },
        None => Auth::None,
    }
}

/// `tls`: files that exist, and a client certificate only with its key.
fn endpoint_tls(c: &mut Check<'_, '_>, f: FieldOf<'_>, t: &RawTls) -> TlsConfig {
    let file = |c: &mut Check<'_, '_>, v: &Option<Spanned<String>>, n: &str| {
        v.as_ref().and_then(|p| {
            let pb = PathBuf::from(p.get_ref());
            if pb.is_file() {
                Some(pb)
            } else {
                c.err(
                    p.span(),
                    &f(&format!("tls.{n}")),
                    format!("{:?} is not a readable file", p.get_ref()),
                );
                None
            }
        })
    };
    let tls = TlsConfig {
        ca_file: file(c, &t.ca_file, "ca_file"),
        cert_file: file(c, &t.cert_file, "cert_file"),
        key_file: file(c, &t.key_file, "key_file"),
        insecure_skip_verify: t
            .insecure_skip_verify
            .as_ref()
            .is_some_and(|v| *v.get_ref()),
    };
    if t.cert_file.is_some() != t.key_file.is_some() {
        let s = t
            .cert_file
            .as_ref()
            .or(t.key_file.as_ref())
            .map(|v| v.span());
        c.err(
            s,
            &f("tls"),
            "cert_file and key_file go together (client certificate and its key)",
        );
    }
    tls
}

/// The endpoint's external labels; `instance` and `job` are allowed: they describe the device.
fn external_labels(
    c: &mut Check<'_, '_>,
    f: FieldOf<'_>,
    raw: &RawRemoteWrite,
) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    for (k, v) in &raw.labels {
        let field = f(&format!("labels.{}", k.get_ref()));
        let name_ok = if matches!(k.get_ref().as_str(), "instance" | "job") {
            Ok(())
        } else {
            check_label_name(k.get_ref())
        };
        if let Err(m) = name_ok {
            c.err(Some(k.span()), &field, m);
        } else if let Err(m) = check_label_value(v.get_ref()) {
            c.err(Some(v.span()), &field, m);
        } else {
            labels.insert(k.get_ref().clone(), v.get_ref().clone());
        }
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4GiB"), Ok(4 << 30));
        assert_eq!(parse_size("500MB"), Ok(500_000_000));
        assert_eq!(parse_size("1.5 MiB"), Ok(3 << 19));
        assert_eq!(parse_size("65536"), Ok(65536));
        assert!(parse_size("4 parsecs").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("-1GB").is_err());
    }

    #[test]
    fn default_names() {
        assert_eq!(
            default_name("https://u:p@prom.example:9090/api/v1/write"),
            "prom.example:9090"
        );
        assert_eq!(default_name("http://10.0.0.1/x"), "10.0.0.1");
    }

    #[test]
    fn secrets_are_not_shown() {
        let s = Secret("hunter2".into());
        assert!(!format!("{s:?}").contains("hunter2"));
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"<secret>\"");
    }
}
