//! `[[remote_write]]`: where the store's samples are shipped, read with the core's checks (a
//! [`ConfigSection`] the daemon registers with the loader), defaults and ranges beside it. The
//! shipper sends to a validated endpoint as it is.

use std::collections::BTreeMap;
use std::ops::{Deref, Range};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;
use toml::de::DeValue;
use vantage_core::config::{
    Check, ConfigSection, Secret, Section, Src, check_label_name, check_label_value, check_name,
    read_section,
};
use vantage_core::defaults::{Bounds, between};

/// remote_write: request timeout.
pub const REMOTE_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// remote_write: first retry delay after a 5xx, a 429 or a network error; doubles up to the max.
pub const REMOTE_WRITE_MIN_BACKOFF: Duration = Duration::from_millis(500);
pub const REMOTE_WRITE_MAX_BACKOFF: Duration = Duration::from_secs(60);
/// remote_write: probe rounds per request (each round is 2 to 9 series points).
pub const REMOTE_WRITE_SAMPLES_PER_SEND: usize = 1_000;
/// remote_write: catch-up rate limit in probe rounds per second (0: none). A 1 h backlog of
/// 100 targets at 1 s drains in 36 s.
pub const REMOTE_WRITE_SAMPLES_PER_SECOND: u32 = 10_000;
/// remote_write `send = "gaps"`: scrapes further apart than this leave a gap that is shipped;
/// four missed scrapes at Prometheus' default 15 s interval.
pub const REMOTE_WRITE_SCRAPE_GAP: Duration = Duration::from_secs(60);
/// `remote_write.scrape_gap`.
pub const REMOTE_WRITE_SCRAPE_GAP_RANGE: Bounds<Duration> = between(
    Duration::from_millis(2_000),
    Duration::from_millis(3_600_000),
);
/// `remote_write.timeout`.
pub const REMOTE_WRITE_TIMEOUT_RANGE: Bounds<Duration> =
    between(Duration::from_millis(100), Duration::from_millis(300_000));
/// `remote_write.min_backoff`.
pub const REMOTE_WRITE_MIN_BACKOFF_RANGE: Bounds<Duration> =
    between(Duration::from_millis(10), Duration::from_millis(600_000));
/// `remote_write.max_backoff`.
pub const REMOTE_WRITE_MAX_BACKOFF_RANGE: Bounds<Duration> =
    between(Duration::from_millis(10), Duration::from_millis(3_600_000));
/// `remote_write.max_samples_per_send`.
pub const REMOTE_WRITE_SAMPLES_PER_SEND_RANGE: Bounds<i64> = between(1, 100_000);
/// `remote_write.max_samples_per_second` (0: no limit).
pub const REMOTE_WRITE_SAMPLES_PER_SECOND_RANGE: Bounds<i64> = between(0, 10_000_000);

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
            timeout: REMOTE_WRITE_TIMEOUT,
            labels: BTreeMap::new(),
            max_samples_per_send: REMOTE_WRITE_SAMPLES_PER_SEND,
            max_samples_per_second: REMOTE_WRITE_SAMPLES_PER_SECOND,
            min_backoff: REMOTE_WRITE_MIN_BACKOFF,
            max_backoff: REMOTE_WRITE_MAX_BACKOFF,
            send: SendMode::All,
            scrape_gap: REMOTE_WRITE_SCRAPE_GAP,
        }
    }
}

/// Every valid `[[remote_write]]` endpoint, names unique, in the file's order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct RemoteWrites(pub Vec<RemoteWriteConfig>);

impl Deref for RemoteWrites {
    type Target = Vec<RemoteWriteConfig>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl ConfigSection for RemoteWrites {
    const KEY: &'static str = "remote_write";
    const DEVICE_ONLY: bool = false;

    /// `[[remote_write]]`: every valid endpoint, names unique.
    fn read(check: &mut Check<'_, '_>, value: &Section<'_>) -> Self {
        let mut remote_write: Vec<RemoteWriteConfig> = Vec::new();
        let DeValue::Array(items) = value.get_ref() else {
            check.err(
                Some(value.span()),
                "remote_write",
                "must be an array of tables ([[remote_write]])",
            );
            return Self(remote_write);
        };
        for (i, item) in items.iter().enumerate() {
            let path = format!("remote_write[{i}]");
            let Some(raw) = read_section::<RawRemoteWrite>(check, item, &path) else {
                continue;
            };
            let Some(rw) = RemoteWriteConfig::resolve(check, &path, item.span(), &raw) else {
                continue;
            };
            if let Some(j) = remote_write.iter().position(|o| o.name == rw.name) {
                let what = if raw.name.is_some() { "name" } else { "url" };
                check.err(
                    raw.name.as_ref().map(|n| n.span()).or(Some(raw.url.span())),
                    &format!("{path}.{what}"),
                    format!(
                        "endpoint name {:?} is already used by remote_write[{j}]; give each endpoint its own name",
                        rw.name
                    ),
                );
            } else {
                remote_write.push(rw);
            }
        }
        Self(remote_write)
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
    fn resolve(
        c: &mut Check<'_, '_>,
        path: &str,
        span: Range<usize>,
        raw: &RawRemoteWrite,
    ) -> Option<Self> {
        let before = c.errors();
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
        if c.errors() > before {
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
            REMOTE_WRITE_TIMEOUT_RANGE,
        )
        .unwrap_or(REMOTE_WRITE_TIMEOUT);
    let (min_backoff, max_backoff) = backoff(c, f, raw);
    let per_send = REMOTE_WRITE_SAMPLES_PER_SEND_RANGE;
    let per_send = x
        .ranged(
            c,
            |r| r.max_samples_per_send.as_ref(),
            "max_samples_per_send",
            per_send,
        )
        .map_or(REMOTE_WRITE_SAMPLES_PER_SEND, |n| n as usize);
    let per_second = REMOTE_WRITE_SAMPLES_PER_SECOND_RANGE;
    let per_second = x
        .ranged(
            c,
            |r| r.max_samples_per_second.as_ref(),
            "max_samples_per_second",
            per_second,
        )
        .map_or(REMOTE_WRITE_SAMPLES_PER_SECOND, |n| n as u32);
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
            REMOTE_WRITE_SCRAPE_GAP_RANGE,
        )
        .unwrap_or(REMOTE_WRITE_SCRAPE_GAP);
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
            REMOTE_WRITE_MIN_BACKOFF_RANGE,
        )
        .unwrap_or(REMOTE_WRITE_MIN_BACKOFF);
    let max_backoff = x
        .ranged(
            c,
            |r| r.max_backoff.as_ref(),
            "max_backoff",
            REMOTE_WRITE_MAX_BACKOFF_RANGE,
        )
        .unwrap_or(REMOTE_WRITE_MAX_BACKOFF);
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
    fn default_names() {
        assert_eq!(
            default_name("https://u:p@prom.example:9090/api/v1/write"),
            "prom.example:9090"
        );
        assert_eq!(default_name("http://10.0.0.1/x"), "10.0.0.1");
    }
}
