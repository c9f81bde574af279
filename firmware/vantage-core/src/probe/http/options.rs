//! `http = {...}` and `[defaults.http]`: the settings, their defaults and ranges, and the form.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::super::module::OptionsInput;
use super::super::options::{ip_protocol, raw_section, required, sections, tls, tls_unused};
use super::super::pattern::{self, Pattern};
use crate::config::check::{Check, Src};
use crate::config::form::{Input, ProbeForm};
use crate::config::form::{choice, duration, integer, text};
use crate::config::host::{Host, parse_host};
use crate::defaults::{self as D, Bounds};
use crate::types::IpProtocol;

/// Seconds between rounds when neither the target nor the defaults set one.
pub(super) const INTERVAL: Duration = Duration::from_secs(30);
/// How long a whole round may take: every redirect, the body included.
pub(super) const TIMEOUT: Duration = Duration::from_secs(5);
/// Redirects followed before the round fails; 0 takes a redirect as the answer.
pub(super) const MAX_REDIRECTS: u32 = 10;
pub(super) const MAX_REDIRECTS_RANGE: Bounds<i64> = Bounds { min: 0, max: 20 };
/// The most of a response body read; a longer body fails the round.
pub(super) const MAX_BODY: u64 = 1 << 20;
pub(super) const MAX_BODY_RANGE: Bounds<i64> = Bounds {
    min: 1,
    max: 64 << 20,
};
/// Longest URL, header value and regex, in bytes.
pub(super) const MAX_TEXT: usize = 2048;
/// Longest request body, and most request headers.
pub(super) const MAX_REQUEST_BODY: usize = 64 << 10;
pub(super) const MAX_HEADERS: usize = 32;

/// Status codes as a list, or "200, 301" as a form writes them.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub(crate) enum Codes {
    List(Vec<i64>),
    Text(String),
}

raw_section! {
    /// `[defaults.http]` and `targets[].http`, as written.
    pub(crate) struct RawHttp {
        /// Read by the loader, like every kind's `interval`.
        pub interval: Option<Spanned<String>>,
        pub url: Option<Spanned<String>>,
        pub method: Option<Spanned<String>>,
        pub headers: Option<Spanned<BTreeMap<String, String>>>,
        pub body: Option<Spanned<String>>,
        pub valid_status_codes: Option<Spanned<Codes>>,
        pub max_redirects: Option<Spanned<i64>>,
        pub body_must_match: Option<Spanned<String>>,
        pub body_must_not_match: Option<Spanned<String>>,
        pub max_body: Option<Spanned<i64>>,
        pub timeout: Option<Spanned<String>>,
        pub ip_protocol: Option<Spanned<String>>,
        @tls,
    }
}

/// Resolved HTTP options of one target.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct HttpOptions {
    /// An `http://` or `https://` URL without credentials.
    pub url: String,
    pub method: String,
    /// Request headers, sorted by name.
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
    /// The status codes that pass; empty for any 2xx.
    pub valid_status_codes: Vec<u16>,
    pub max_redirects: u32,
    /// Regexes the body must, and must not, match.
    pub body_must_match: Option<Pattern>,
    pub body_must_not_match: Option<Pattern>,
    pub max_body: u64,
    pub timeout: Duration,
    pub ip_protocol: IpProtocol,
    /// The name the certificate must carry; the URL's host by default.
    pub server_name: Option<String>,
    /// The CAs to trust instead of the built-in roots.
    pub ca_file: Option<PathBuf>,
    /// Accept any certificate (testing only); the expiry is still read.
    pub insecure: bool,
}

impl HttpOptions {
    /// Options with every default and this URL.
    pub fn for_url(url: &str) -> Self {
        Self {
            url: url.to_string(),
            method: "GET".into(),
            headers: Vec::new(),
            body: None,
            valid_status_codes: Vec::new(),
            max_redirects: MAX_REDIRECTS,
            body_must_match: None,
            body_must_not_match: None,
            max_body: MAX_BODY,
            timeout: TIMEOUT,
            ip_protocol: IpProtocol::Auto,
            server_name: None,
            ca_file: None,
            insecure: false,
        }
    }

    pub fn status_ok(&self, status: u16) -> bool {
        if self.valid_status_codes.is_empty() {
            (200..300).contains(&status)
        } else {
            self.valid_status_codes.contains(&status)
        }
    }
}

/// A URL's parts the probe needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Url {
    pub https: bool,
    pub host: Host,
    /// The host as written in the URL (brackets around IPv6), for `Host:` and names.
    pub authority: String,
    pub port: u16,
    pub path: String,
}

/// Parses an absolute `http`/`https` URL; refuses other schemes and credentials.
pub(crate) fn parse_url(s: &str) -> Result<Url, String> {
    if s.len() > MAX_TEXT {
        return Err(format!("is {} bytes long; at most {MAX_TEXT}", s.len()));
    }
    // The scheme first: `file:///x` and `data:,x` are refused as such, not as malformed.
    let scheme = s.split_once(':').map(|(p, _)| p).filter(|p| {
        p.starts_with(|c: char| c.is_ascii_alphabetic())
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    });
    let https = match scheme.map(str::to_ascii_lowercase).as_deref() {
        Some("https") => true,
        Some("http") => false,
        Some(other) => {
            return Err(format!(
                "scheme {other:?} is not probed; write an http:// or https:// URL"
            ));
        }
        None => return Err(format!("{s:?} has no scheme; write http:// or https://")),
    };
    let uri: http::Uri = s.parse().map_err(|e| format!("{s:?} is not a URL: {e}"))?;
    let Some(auth) = uri.authority() else {
        return Err(format!("{s:?} has no host"));
    };
    if auth.as_str().contains('@') {
        return Err("must not carry credentials (user:password@); they would be logged".into());
    }
    let name = auth.host().trim_start_matches('[').trim_end_matches(']');
    let host = parse_host(name).map_err(|m| format!("host {m}"))?;
    let port = auth.port_u16().unwrap_or(if https { 443 } else { 80 });
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    Ok(Url {
        https,
        host,
        authority: auth.as_str().to_string(),
        port,
        path,
    })
}

fn codes(c: &mut Check<'_, '_>, v: &Spanned<Codes>, field: &str) -> Vec<u16> {
    let list: Result<Vec<i64>, String> = match v.get_ref() {
        Codes::List(l) => Ok(l.clone()),
        Codes::Text(t) => t
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().map_err(|_| format!("{s:?} is not a status code")))
            .collect(),
    };
    match list {
        Ok(l) if l.len() <= 64 && l.iter().all(|n| (100..=599).contains(n)) => {
            l.into_iter().map(|n| n as u16).collect()
        }
        Ok(_) => {
            c.err(v.span(), field, "must be at most 64 codes from 100 to 599");
            Vec::new()
        }
        Err(msg) => {
            c.err(v.span(), field, msg);
            Vec::new()
        }
    }
}

fn headers(
    c: &mut Check<'_, '_>,
    v: &Spanned<BTreeMap<String, String>>,
    field: &str,
) -> Vec<(String, String)> {
    if v.get_ref().len() > MAX_HEADERS {
        c.err(v.span(), field, format!("at most {MAX_HEADERS} headers"));
        return Vec::new();
    }
    let mut out = Vec::new();
    for (name, value) in v.get_ref() {
        let problem = if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            Some(format!("{name:?} is not a header name"))
        } else if value.len() > MAX_TEXT || http::HeaderValue::from_str(value).is_err() {
            Some(format!(
                "{name}: not a header value of at most {MAX_TEXT} bytes"
            ))
        } else if name.eq_ignore_ascii_case("host") || name.eq_ignore_ascii_case("content-length") {
            Some(format!("{name} is set by the probe"))
        } else {
            None
        };
        match problem {
            Some(msg) => c.err(v.span(), field, msg),
            None => out.push((name.clone(), value.clone())),
        }
    }
    out
}

/// Validates a target's `http` over `[defaults.http]`.
pub(super) fn resolve(c: &mut Check<'_, '_>, input: &OptionsInput<'_, '_>) -> Option<HttpOptions> {
    let before = c.errors();
    let (t, d) = sections::<RawHttp>(c, input, "defaults.http");
    let field = |name: &str| format!("{}.{name}", input.path);
    let x = Src::new(t.as_ref(), d.as_ref(), &field);
    let msg = "is required: the URL to fetch, e.g. http = { url = \"https://example.com/\" }";
    let url = required(c, input, x, |r| r.url.as_ref(), ("url", msg))?;
    let parsed = match parse_url(url.get_ref()) {
        Ok(u) => u,
        Err(msg) => {
            c.err(url.span(), &field("url"), msg);
            return None;
        }
    };
    let mut o = HttpOptions::for_url(url.get_ref());
    request_settings(c, x, &mut o);
    response_checks(c, x, &mut o);
    o.timeout = x
        .ranged(c, |r| r.timeout.as_ref(), "timeout", D::TIMEOUT_RANGE)
        .unwrap_or(TIMEOUT);
    o.ip_protocol = ip_protocol(c, x, |r| r.ip_protocol.as_ref());
    (o.server_name, o.ca_file, o.insecure) = tls(c, x);
    if !parsed.https {
        // TLS settings on an `http://` URL would be silently ignored: say so.
        tls_unused(c, x, true, "applies only to an https:// URL");
    }
    (c.errors() == before).then_some(o)
}

/// What is sent: method, headers and body.
fn request_settings(c: &mut Check<'_, '_>, x: Src<'_, RawHttp>, o: &mut HttpOptions) {
    if let Some(m) = x.pick(|r| r.method.as_ref()) {
        let s = m.get_ref();
        if s.len() > 16 || http::Method::from_bytes(s.as_bytes()).is_err() {
            c.err(
                m.span(),
                &x.field("method"),
                format!("{s:?} is not a method"),
            );
        }
        o.method = s.to_ascii_uppercase();
    }
    if let Some(h) = x.pick(|r| r.headers.as_ref()) {
        o.headers = headers(c, h, &x.field("headers"));
    }
    if let Some(b) = x.pick(|r| r.body.as_ref()) {
        if b.get_ref().len() > MAX_REQUEST_BODY {
            let msg = format!("is longer than {MAX_REQUEST_BODY} bytes");
            c.err(b.span(), &x.field("body"), msg);
        }
        o.body = Some(b.get_ref().clone());
    }
}

/// What the answer must be: its status, how many redirects lead to it, its body's size and
/// what the body must and must not match.
fn response_checks(c: &mut Check<'_, '_>, x: Src<'_, RawHttp>, o: &mut HttpOptions) {
    if let Some(v) = x.pick(|r| r.valid_status_codes.as_ref()) {
        o.valid_status_codes = codes(c, v, &x.field("valid_status_codes"));
    }
    let redirects = MAX_REDIRECTS_RANGE;
    if let Some(n) = x.ranged(c, |r| r.max_redirects.as_ref(), "max_redirects", redirects) {
        o.max_redirects = n as u32;
    }
    if let Some(n) = x.ranged(c, |r| r.max_body.as_ref(), "max_body", MAX_BODY_RANGE) {
        o.max_body = n as u64;
    }
    let must = x.pick(|r| r.body_must_match.as_ref());
    o.body_must_match = pattern::setting(c, must, &x.field("body_must_match"), MAX_TEXT);
    let must_not = x.pick(|r| r.body_must_not_match.as_ref());
    o.body_must_not_match =
        pattern::setting(c, must_not, &x.field("body_must_not_match"), MAX_TEXT);
}

/// The page's HTTP fields.
pub(super) fn form(kind: &'static str) -> ProbeForm {
    let ip = IpProtocol::ALL.iter().map(|p| p.as_str()).collect();
    let methods = vec!["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"];
    ProbeForm {
        kind,
        title: "HTTP",
        host_hint: "the target's name in the series; the URL says where to connect",
        fields: vec![
            text("url", "URL", "", Input::Text)
                .required()
                .hint("http:// or https://, without credentials"),
            choice("method", "Method", methods),
            text("body", "Request body", "", Input::Text),
            text("valid_status_codes", "Valid status codes", "", Input::Text)
                .hint("comma-separated; default: any 2xx"),
            integer(
                "max_redirects",
                "Redirects followed",
                MAX_REDIRECTS_RANGE,
                MAX_REDIRECTS.to_string(),
            )
            .hint("0: a redirect is the answer"),
            text("body_must_match", "Body must match", "", Input::Text).hint("regex"),
            text(
                "body_must_not_match",
                "Body must not match",
                "",
                Input::Text,
            )
            .hint("regex"),
            integer(
                "max_body",
                "Body limit (bytes)",
                MAX_BODY_RANGE,
                MAX_BODY.to_string(),
            ),
            duration("timeout", "Timeout", D::TIMEOUT_RANGE, TIMEOUT).hint("the whole round"),
            choice("ip_protocol", "Address family", ip).hint("for host names with both"),
            text("server_name", "TLS server name", "", Input::Text).hint("default: the URL's host"),
            text("ca_file", "TLS CA file", "", Input::Text).hint("default: built-in roots"),
            choice("insecure", "Skip TLS verification", vec!["false", "true"]).hint("testing only"),
        ],
    }
}
