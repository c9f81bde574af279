//! `tcp = {...}` and `[defaults.tcp]`: the settings, their defaults and ranges, and the form.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use toml::Spanned;

use super::super::module::{OptionsInput, family_mismatch};
use super::super::options::tls_unused;
use super::super::options::{Flag, addressing, flag, raw_section, required, sections, tls};
use super::super::pattern::{self, Pattern};
use crate::config::check::{Check, Src};
use crate::config::form::{Input, ProbeForm};
use crate::config::form::{choice, duration, integer, text};
use crate::config::host::Host;
use crate::defaults::{self as D, Bounds};
use crate::types::IpProtocol;

/// Seconds between rounds when neither the target nor the defaults set one.
pub(super) const INTERVAL: Duration = Duration::from_secs(10);
/// Connection attempts per round.
pub(super) const ATTEMPTS: u32 = 3;
pub(super) const ATTEMPTS_RANGE: Bounds<i64> = Bounds { min: 1, max: 20 };
/// Gap between the starts of a round's attempts.
pub(super) const SPACING: Duration = Duration::from_millis(100);
pub(super) const SPACING_RANGE: Bounds<Duration> = Bounds {
    min: Duration::from_millis(1),
    max: Duration::from_secs(10),
};
/// How long an attempt may take: the connect, and for the first one the handshake and reply.
pub(super) const TIMEOUT: Duration = Duration::from_secs(3);
/// Longest `send` line and `expect` pattern, in bytes.
pub(super) const MAX_LINE: usize = 1024;

raw_section! {
    /// `[defaults.tcp]` and `targets[].tcp`, as written.
    pub(crate) struct RawTcp {
        /// Read by the loader, like every kind's `interval`.
        pub interval: Option<Spanned<String>>,
        pub port: Option<Spanned<i64>>,
        pub attempts: Option<Spanned<i64>>,
        pub spacing: Option<Spanned<String>>,
        pub timeout: Option<Spanned<String>>,
        @addressing("connect to"),
        pub tls: Option<Spanned<Flag>>,
        @tls,
        pub send: Option<Spanned<String>>,
        pub expect: Option<Spanned<String>>,
    }
}

/// Resolved TCP options of one target.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct TcpOptions {
    pub port: u16,
    pub attempts: u32,
    pub spacing: Duration,
    pub timeout: Duration,
    /// The full TOS / traffic-class byte.
    pub tos: Option<u8>,
    pub source: Option<IpAddr>,
    pub ip_protocol: IpProtocol,
    pub tls: bool,
    /// The name the certificate must carry; the host's name by default.
    pub server_name: Option<String>,
    /// The CAs to trust instead of the built-in roots.
    pub ca_file: Option<PathBuf>,
    /// Accept any certificate (testing only); the expiry is still read.
    pub insecure: bool,
    pub send: Option<String>,
    /// A regex the first reply line must match.
    pub expect: Option<Pattern>,
}

impl TcpOptions {
    /// The last attempt starts `spacing × (attempts − 1)` in, and may take `timeout`.
    pub fn round_length(&self) -> Duration {
        self.spacing * self.attempts.saturating_sub(1) + self.timeout
    }

    /// Options with every default and this port.
    pub fn for_port(port: u16) -> Self {
        Self {
            port,
            attempts: ATTEMPTS,
            spacing: SPACING,
            timeout: TIMEOUT,
            tos: None,
            source: None,
            ip_protocol: IpProtocol::Auto,
            tls: false,
            server_name: None,
            ca_file: None,
            insecure: false,
            send: None,
            expect: None,
        }
    }
}

/// A `send` line within [`MAX_LINE`], without line breaks.
fn line(c: &mut Check<'_, '_>, v: Option<&Spanned<String>>, field: &str) -> Option<String> {
    let v = v?;
    let s = v.get_ref();
    let problem = if s.len() > MAX_LINE {
        Some(format!("is {} bytes long; at most {MAX_LINE}", s.len()))
    } else if s.contains(['\r', '\n']) {
        Some("must be one line; the line break is added when sent".to_string())
    } else {
        None
    };
    match problem {
        Some(msg) => {
            c.err(v.span(), field, msg);
            None
        }
        None => Some(s.clone()),
    }
}

/// Validates a target's `tcp` over `[defaults.tcp]`.
pub(super) fn resolve(c: &mut Check<'_, '_>, input: &OptionsInput<'_, '_>) -> Option<TcpOptions> {
    let before = c.errors();
    let (t, d) = sections::<RawTcp>(c, input, "defaults.tcp");
    let field = |name: &str| format!("{}.{name}", input.path);
    let x = Src::new(t.as_ref(), d.as_ref(), &field);
    let msg = "is required: the port to connect to, e.g. tcp = { port = 443 }";
    let port = required(c, input, x, |r| r.port.as_ref(), ("port", msg))?;
    let port = c.int_in(port, &field("port"), D::PORT_RANGE.min, D::PORT_RANGE.max)? as u16;
    let mut o = TcpOptions::for_port(port);
    (o.attempts, o.spacing, o.timeout) = timing(c, x);
    (o.tos, o.source, o.ip_protocol) = addressing(c, x);
    o.tls = flag(c, x.pick(|r| r.tls.as_ref()), &field("tls"));
    (o.server_name, o.ca_file, o.insecure) = tls(c, x);
    o.send = line(c, x.pick(|r| r.send.as_ref()), &field("send"));
    o.expect = pattern::setting(c, x.pick(|r| r.expect.as_ref()), &field("expect"), MAX_LINE);
    if !o.tls {
        // TLS settings without `tls = true` would be silently ignored: say so.
        tls_unused(c, x, false, "applies only with tls = true");
    }
    if let Some((Host::Ip(ip), span)) = &input.host {
        check_family(c, x, &o, (*ip, span.clone()));
    }
    (c.errors() == before).then_some(o)
}

/// Attempts per round, the gap between their starts and how long each may take.
fn timing(c: &mut Check<'_, '_>, x: Src<'_, RawTcp>) -> (u32, Duration, Duration) {
    let attempts = x
        .ranged(c, |r| r.attempts.as_ref(), "attempts", ATTEMPTS_RANGE)
        .map_or(ATTEMPTS, |n| n as u32);
    let spacing = x
        .ranged(c, |r| r.spacing.as_ref(), "spacing", SPACING_RANGE)
        .unwrap_or(SPACING);
    let timeout = x
        .ranged(c, |r| r.timeout.as_ref(), "timeout", D::TIMEOUT_RANGE)
        .unwrap_or(TIMEOUT);
    (attempts, spacing, timeout)
}

fn check_family(
    c: &mut Check<'_, '_>,
    x: Src<'_, RawTcp>,
    o: &TcpOptions,
    (ip, host_span): (IpAddr, std::ops::Range<usize>),
) {
    if let Some(src) = o.source.filter(|s| s.is_ipv4() != ip.is_ipv4()) {
        let span = x
            .pick(|r| r.source.as_ref())
            .map_or(host_span.clone(), Spanned::span);
        c.err(
            span,
            &x.field("source"),
            format!("source {src} and host {ip} are not of the same IP version"),
        );
    }
    if family_mismatch(o.ip_protocol, ip) {
        c.err(
            host_span,
            &x.field("ip_protocol"),
            format!("is {} but the host is {ip}", o.ip_protocol.as_str()),
        );
    }
}

/// The page's TCP fields.
pub(super) fn form(kind: &'static str) -> ProbeForm {
    let ip = IpProtocol::ALL.iter().map(|p| p.as_str()).collect();
    let port = Bounds {
        min: D::PORT_RANGE.min,
        max: D::PORT_RANGE.max,
    };
    ProbeForm {
        kind,
        title: "TCP",
        host_hint: "the address or host name to connect to",
        fields: vec![
            integer("port", "Port", port, String::new()).required(),
            integer("attempts", "Attempts", ATTEMPTS_RANGE, ATTEMPTS.to_string()),
            duration("spacing", "Spacing", SPACING_RANGE, SPACING),
            duration("timeout", "Timeout", D::TIMEOUT_RANGE, TIMEOUT).hint("per attempt"),
            integer("dscp", "DSCP", D::DSCP_RANGE, String::new()),
            text("source", "Source address", "", Input::Text),
            choice("ip_protocol", "Address family", ip).hint("for host names with both"),
            choice("tls", "TLS", vec!["false", "true"]).hint("handshake and certificate expiry"),
            text("server_name", "TLS server name", "", Input::Text).hint("default: the host"),
            text("ca_file", "TLS CA file", "", Input::Text).hint("default: built-in roots"),
            text("send", "Send", "", Input::Text).hint("a line sent after connecting"),
            text("expect", "Expect", "", Input::Text).hint("regex the first reply line must match"),
        ],
    }
}
