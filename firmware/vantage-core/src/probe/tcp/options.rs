//! `tcp = {...}` and `[defaults.tcp]`: the settings, their defaults and ranges, and the form.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::super::module::{OptionsInput, family_mismatch};
use super::super::options::{Flag, addressing, flag};
use crate::config::check::{Check, merge, read_section};
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

/// `[defaults.tcp]` and `targets[].tcp`, as written.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTcp {
    /// Read by the loader, like every kind's `interval`.
    pub interval: Option<Spanned<String>>,
    pub port: Option<Spanned<i64>>,
    pub attempts: Option<Spanned<i64>>,
    pub spacing: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub tos: Option<Spanned<i64>>,
    pub dscp: Option<Spanned<i64>>,
    pub source: Option<Spanned<String>>,
    pub ip_protocol: Option<Spanned<String>>,
    pub tls: Option<Spanned<Flag>>,
    pub server_name: Option<Spanned<String>>,
    pub ca_file: Option<Spanned<String>>,
    pub insecure: Option<Spanned<Flag>>,
    pub send: Option<Spanned<String>>,
    pub expect: Option<Spanned<String>>,
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
    pub expect: Option<String>,
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

/// A line setting within [`MAX_LINE`], without line breaks; `expect` must compile.
fn line(
    c: &mut Check<'_, '_>,
    v: Option<&Spanned<String>>,
    field: &str,
    regex: bool,
) -> Option<String> {
    let v = v?;
    let s = v.get_ref();
    let problem = if s.len() > MAX_LINE {
        Some(format!("is {} bytes long; at most {MAX_LINE}", s.len()))
    } else if !regex && s.contains(['\r', '\n']) {
        Some("must be one line; the line break is added when sent".to_string())
    } else if regex {
        regex::RegexBuilder::new(s)
            .size_limit(1 << 20)
            .build()
            .err()
            .map(|e| format!("is not a valid regex: {e}"))
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
    let d: Option<RawTcp> = input
        .defaults
        .and_then(|v| read_section(c, v, "defaults.tcp"));
    let t: Option<RawTcp> = input.own.and_then(|v| read_section(c, v, input.path));
    let (t, d) = (t.as_ref(), d.as_ref());
    let field = |name: &str| format!("{}.{name}", input.path);
    let Some(port) = merge(t, d, |r| r.port.as_ref()) else {
        let span = input.own.map_or(input.target_span.clone(), |v| v.span());
        c.err(
            span,
            &field("port"),
            "is required: the port to connect to, e.g. tcp = { port = 443 }",
        );
        return None;
    };
    let port = c.int_in(port, &field("port"), D::PORT_RANGE.min, D::PORT_RANGE.max)? as u16;
    let mut o = TcpOptions::for_port(port);
    if let Some(n) = c.ranged(
        t,
        d,
        |r| r.attempts.as_ref(),
        &field("attempts"),
        ATTEMPTS_RANGE,
    ) {
        o.attempts = n as u32;
    }
    o.spacing = c
        .ranged(
            t,
            d,
            |r| r.spacing.as_ref(),
            &field("spacing"),
            SPACING_RANGE,
        )
        .unwrap_or(SPACING);
    o.timeout = c
        .ranged(
            t,
            d,
            |r| r.timeout.as_ref(),
            &field("timeout"),
            D::TIMEOUT_RANGE,
        )
        .unwrap_or(TIMEOUT);
    (o.tos, o.source, o.ip_protocol) = addressing(c, &field, t, d, |r| {
        (
            r.tos.as_ref(),
            r.dscp.as_ref(),
            r.source.as_ref(),
            r.ip_protocol.as_ref(),
        )
    });
    o.tls = flag(c, merge(t, d, |r| r.tls.as_ref()), &field("tls"));
    o.insecure = flag(c, merge(t, d, |r| r.insecure.as_ref()), &field("insecure"));
    o.server_name = merge(t, d, |r| r.server_name.as_ref()).map(|v| v.get_ref().clone());
    o.ca_file = merge(t, d, |r| r.ca_file.as_ref()).map(|v| PathBuf::from(v.get_ref()));
    o.send = line(c, merge(t, d, |r| r.send.as_ref()), &field("send"), false);
    o.expect = line(
        c,
        merge(t, d, |r| r.expect.as_ref()),
        &field("expect"),
        true,
    );
    check_tls(c, t, &o, &field);
    if let Some((Host::Ip(ip), span)) = &input.host {
        check_family(c, t, d, &o, (*ip, span.clone()), &field);
    }
    (c.errors() == before).then_some(o)
}

/// TLS settings without `tls = true` would be silently ignored: say so.
fn check_tls(
    c: &mut Check<'_, '_>,
    t: Option<&RawTcp>,
    o: &TcpOptions,
    field: &dyn Fn(&str) -> String,
) {
    if o.tls {
        return;
    }
    let set = |get: fn(&RawTcp) -> Option<std::ops::Range<usize>>| t.and_then(get);
    for (name, span) in [
        (
            "server_name",
            set(|r| r.server_name.as_ref().map(Spanned::span)),
        ),
        ("ca_file", set(|r| r.ca_file.as_ref().map(Spanned::span))),
    ] {
        if let Some(span) = span {
            c.err(span, &field(name), "applies only with tls = true");
        }
    }
}

fn check_family(
    c: &mut Check<'_, '_>,
    t: Option<&RawTcp>,
    d: Option<&RawTcp>,
    o: &TcpOptions,
    (ip, host_span): (IpAddr, std::ops::Range<usize>),
    field: &dyn Fn(&str) -> String,
) {
    if let Some(src) = o.source.filter(|s| s.is_ipv4() != ip.is_ipv4()) {
        let span = merge(t, d, |r| r.source.as_ref()).map_or(host_span.clone(), Spanned::span);
        c.err(
            span,
            &field("source"),
            format!("source {src} and host {ip} are not of the same IP version"),
        );
    }
    if family_mismatch(o.ip_protocol, ip) {
        c.err(
            host_span,
            &field("ip_protocol"),
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
