//! The front door every request passes: Host allow-list (DNS rebinding), CSRF and session
//! checks, scrape authentication, the `/probe` allow-list, a time limit and security headers.
//!
//! The rule for state changes is deliberately global rather than per route: every request
//! with a method other than GET, HEAD or OPTIONS needs a live session AND the session's CSRF
//! token in `X-CSRF-Token` AND no cross-site `Origin` / `Sec-Fetch-Site`. The only exceptions
//! are first-boot setup and login (which have no session yet: they get the Origin checks), a few
//! harmless operations (reload, identify) from clients on the device itself, and `/-/reload`
//! with the scrape credentials. A new route cannot forget it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRef, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use vantage_core::Host;

use super::Web;
use super::auth::{Auth, Session, constant_time_eq};
use super::device;
use super::error::ApiError;
use super::settings::{
    ScrapeAuth, Settings, SettingsStore, cidr_contains, name_matches, parse_cidr,
};
use crate::probe_guard::Allowlist;
use crate::state::Configs;

pub const SESSION_COOKIE: &str = "vantage_session";
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Whole-request limit for the page and API (body upload included: a slow sender is cut off).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// An update bundle (up to 1.5 GiB) uploaded over a slow link, and its signature check.
const UPLOAD_REQUEST_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// `/probe` has its own deadline from the scrape timeout (at most 300 s).
const PROBE_REQUEST_TIMEOUT: Duration = Duration::from_secs(310);

/// Routes that change state without a session: they authenticate by other means.
const SESSIONLESS_POSTS: &[&str] = &["/api/auth/setup", "/api/auth/login"];
const SCRAPE_PATHS: &[&str] = &["/metrics", "/probe", "/-/healthy", "/-/ready"];
/// Readable without a session: the login state and the page's own assets.
const PUBLIC_API: &[&str] = &["/api/auth/state"];
/// Harmless operations that clients on the device itself (scripts, service managers, `curl
/// localhost`) may call without a session. The Origin checks still apply to them.
const LOCAL_OPS: &[(Method, &str)] = &[
    (Method::POST, "/-/reload"),
    (Method::POST, "/api/identify"),
    (Method::GET, "/api/leds"),
    (Method::GET, "/api/provisioning"),
    (Method::GET, "/api/samples"),
];

/// Local-only name suffixes: an attacker's public domain cannot end in these.
const LOCAL_SUFFIXES: &[&str] = &[
    ".local",
    ".lan",
    ".home.arpa",
    ".internal",
    ".localdomain",
    ".home",
    ".localhost",
];

/// The request's client address (a fixed placeholder when there is none, as in tests). An
/// IPv4 client of a dual-stack `[::]` listener arrives as `::ffff:a.b.c.d`; it is taken as the
/// IPv4 address it is, so `curl 127.0.0.1` counts as the device itself and rate limits key on
/// one form.
pub fn client_ip(req_ext: &axum::http::Extensions) -> IpAddr {
    req_ext
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| {
            c.0.ip().to_canonical()
        })
}

/// The host part of a Host header value, without the port.
fn host_name(value: &str) -> Option<&str> {
    if let Some(rest) = value.strip_prefix('[') {
        return rest.split_once(']').map(|(h, _)| h);
    }
    match value.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => Some(h),
        Some(_) => None,
        None => Some(value),
    }
}

/// Is this Host acceptable? IP literals always are: a DNS-rebinding page reaches us under
/// the attacker's own name, never under an address.
pub fn host_allowed(value: &str, settings: &Settings, own_name: &str) -> bool {
    let Some(h) = host_name(value) else {
        return false;
    };
    let h = h.trim_end_matches('.').to_ascii_lowercase();
    if h.is_empty() {
        return false;
    }
    if h.parse::<IpAddr>().is_ok() || h == "localhost" || !h.contains('.') {
        return true;
    }
    let own = own_name.to_ascii_lowercase();
    if !own.is_empty() && (h == own || h == format!("{own}.local")) {
        return true;
    }
    if LOCAL_SUFFIXES.iter().any(|s| h.ends_with(s)) {
        return true;
    }
    settings.allowed_hosts.iter().any(|p| name_matches(p, &h))
}

/// Cross-site request signals: `Sec-Fetch-Site` from modern browsers, else `Origin`.
fn cross_site(headers: &HeaderMap) -> Option<&'static str> {
    if let Some(site) = headers.get("sec-fetch-site")
        && !matches!(site.as_bytes(), b"same-origin" | b"none")
    {
        return Some("cross-site request refused (Sec-Fetch-Site)");
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let host = headers.get(header::HOST).map(HeaderValue::as_bytes);
        let authority = origin
            .to_str()
            .ok()
            .and_then(|o| o.split_once("://"))
            .map(|(_, a)| a.as_bytes());
        let same = match (authority, host) {
            (Some(a), Some(h)) => a.eq_ignore_ascii_case(h),
            _ => false,
        };
        if !same {
            return Some("cross-origin request refused (Origin does not match Host)");
        }
    }
    None
}

pub fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn scrape_authorized(auth: &ScrapeAuth, headers: &HeaderMap) -> bool {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match auth {
        ScrapeAuth::None => true,
        ScrapeAuth::Bearer { token } => given
            .and_then(|g| g.strip_prefix("Bearer "))
            .is_some_and(|g| constant_time_eq(g.trim().as_bytes(), token.as_bytes())),
        ScrapeAuth::Basic { username, password } => given
            .and_then(|g| g.strip_prefix("Basic "))
            .and_then(|b| {
                base64::engine::general_purpose::STANDARD
                    .decode(b.trim())
                    .ok()
            })
            .is_some_and(|raw| {
                let want = format!("{username}:{password}");
                constant_time_eq(&raw, want.as_bytes())
            }),
    }
}

fn unauthorized_scrape(auth: &ScrapeAuth) -> Response {
    let mut r = (StatusCode::UNAUTHORIZED, "authentication required\n").into_response();
    if matches!(auth, ScrapeAuth::Basic { .. }) {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"vantage\", charset=\"UTF-8\""),
        );
    }
    r
}

/// Is a `/probe` target's host allowed by the list (empty: every host)?
pub fn probe_allowed(configs: &Configs, allow: &[String], host: &Host) -> bool {
    allow.is_empty()
        || allow.iter().any(|p| match (p.as_str(), host) {
            ("@targets", h) => configs.in_effect().targets.iter().any(|t| t.host == *h),
            (p, Host::Ip(ip)) if p.contains('/') => {
                parse_cidr(p).is_some_and(|n| cidr_contains(n, *ip))
            }
            (p, Host::Ip(ip)) => p.parse::<IpAddr>().is_ok_and(|a| a == *ip),
            (p, Host::Name(n)) => !p.contains('/') && name_matches(p, n),
        })
}

/// What the guard reads: the page's settings (allowed hosts, scrape credentials, the `/probe`
/// allow-list), the sessions, and the config in effect (the allow-list's `@targets`).
#[derive(Clone)]
pub struct Gate {
    settings: Arc<SettingsStore>,
    auth: Arc<Auth>,
    configs: Configs,
}

impl FromRef<Arc<Web>> for Gate {
    fn from_ref(web: &Arc<Web>) -> Self {
        Self {
            settings: web.settings.clone(),
            auth: web.auth.clone(),
            configs: web.state.configs.clone(),
        }
    }
}

pub async fn guard(State(gate): State<Gate>, mut req: Request, next: Next) -> Response {
    let settings = gate.settings.get();
    let headers = req.headers();
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return ApiError::new(StatusCode::BAD_REQUEST, "the Host header is missing")
            .into_response();
    };
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let safe = matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);

    // Scrape endpoints answer under any Host: Prometheus reaches devices by whatever name its
    // service discovery gives, and their protection is the scrape credentials and the `/probe`
    // allow-list. The Host check guards the page and the API, which a rebinding page could
    // otherwise drive with the browser's session.
    if SCRAPE_PATHS.contains(&path.as_str()) && safe {
        if !scrape_authorized(&settings.scrape_auth, headers) {
            return unauthorized_scrape(&settings.scrape_auth);
        }
        // `/probe` holds the target, and every host a round goes on to (redirects), to the
        // list once it has read them.
        if path == "/probe" && !settings.probe_allowlist.is_empty() {
            let (configs, allow) = (gate.configs.clone(), settings.probe_allowlist.clone());
            let check = move |h: &Host| probe_allowed(&configs, &allow, h);
            req.extensions_mut().insert(Allowlist(Arc::new(check)));
        }
        return with_timeout(PROBE_REQUEST_TIMEOUT, next.run(req)).await;
    }
    if !host_allowed(host, &settings, &device::hostname()) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "Host {host:?} is not allowed (protection against DNS rebinding); open the page by \
                 the device's address, or add the name under Settings → Allowed host names"
            ),
        )
        .into_response();
    }

    let local = client_ip(req.extensions()).is_loopback()
        && LOCAL_OPS.iter().any(|(m, p)| *m == method && *p == path);
    let session: Option<(String, Session)> = cookie_value(headers, SESSION_COOKIE)
        .and_then(|t| gate.auth.session(t).map(|s| (t.to_string(), s)));

    if !safe {
        if let Some(why) = cross_site(headers) {
            return ApiError::new(StatusCode::FORBIDDEN, why).into_response();
        }
        // `/-/reload` only re-applies the file on disk (as SIGHUP does): besides a session it
        // accepts the scrape credentials, like Prometheus' lifecycle API.
        let by_token = local
            || (path == "/-/reload"
                && !matches!(settings.scrape_auth, ScrapeAuth::None)
                && scrape_authorized(&settings.scrape_auth, headers));
        if !SESSIONLESS_POSTS.contains(&path.as_str()) && !by_token {
            let Some((_, s)) = &session else {
                return ApiError::new(StatusCode::UNAUTHORIZED, "log in first").into_response();
            };
            let token = headers.get(CSRF_HEADER).map(HeaderValue::as_bytes);
            if !token.is_some_and(|t| constant_time_eq(t, s.csrf.as_bytes())) {
                return ApiError::new(
                    StatusCode::FORBIDDEN,
                    "missing or wrong CSRF token (X-CSRF-Token); reload the page",
                )
                .into_response();
            }
        }
    } else if path.starts_with("/api/")
        && !PUBLIC_API.contains(&path.as_str())
        && session.is_none()
        && !local
    {
        return ApiError::new(StatusCode::UNAUTHORIZED, "log in first").into_response();
    }
    if let Some(s) = session {
        req.extensions_mut().insert(s);
    }
    let limit = if method == Method::POST && path == super::update::PATH {
        UPLOAD_REQUEST_TIMEOUT
    } else {
        REQUEST_TIMEOUT
    };
    let mut resp = with_timeout(limit, next.run(req)).await;
    let h = resp.headers_mut();
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    if path.starts_with("/api/") {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

async fn with_timeout(limit: Duration, fut: impl Future<Output = Response>) -> Response {
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r,
        Err(_) => {
            ApiError::new(StatusCode::REQUEST_TIMEOUT, "the request took too long").into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_rules() {
        let s = Settings {
            allowed_hosts: vec!["*.probes.example.net".into()],
            ..Settings::default()
        };
        for ok in [
            "192.0.2.5",
            "192.0.2.5:9430",
            "[2001:db8::1]:9430",
            "localhost:9430",
            "vantage",
            "vantage.local",
            "kitchen.lan:80",
            "pi.home.arpa",
            "myhost.local",
            "MYHOST",
            "a.probes.example.net",
        ] {
            assert!(host_allowed(ok, &s, "myhost"), "{ok}");
        }
        for bad in [
            "evil.example.com",
            "evil.example.com:9430",
            "192.0.2.5.evil.com",
            "local.evil.com",
            "",
            ":9430",
            "[::1",
            "x:y:z",
        ] {
            assert!(!host_allowed(bad, &s, "myhost"), "{bad}");
        }
    }

    #[test]
    fn cross_site_signals() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("192.0.2.5:9430"));
        assert!(cross_site(&h).is_none());
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://192.0.2.5:9430"),
        );
        assert!(cross_site(&h).is_none());
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        assert!(cross_site(&h).is_some());
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(cross_site(&h).is_some());
        h.remove(header::ORIGIN);
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(cross_site(&h).is_some());
        h.insert("sec-fetch-site", HeaderValue::from_static("same-site"));
        assert!(cross_site(&h).is_some());
        h.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert!(cross_site(&h).is_none());
    }
}
