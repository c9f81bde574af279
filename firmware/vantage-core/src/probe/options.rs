//! Settings several kinds share, read the same way for each: the packet marks, source address
//! and address family of the kinds that send their own packets (ping, trace, tcp), and the
//! boolean flags of tcp and http.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::config::check::{Check, merge, merge_marks};
use crate::types::IpProtocol;

/// `tos`, `dscp`, `source` and `ip_protocol` of a kind's section, as written.
pub(crate) type RawAddressing<'a> = (
    Option<&'a Spanned<i64>>,
    Option<&'a Spanned<i64>>,
    Option<&'a Spanned<String>>,
    Option<&'a Spanned<String>>,
);

/// The TOS byte (`tos` or `dscp`), the source address and the address family: the target's
/// settings over its defaults'.
pub(crate) fn addressing<'a, R>(
    c: &mut Check<'_, '_>,
    field: &dyn Fn(&str) -> String,
    t: Option<&'a R>,
    d: Option<&'a R>,
    get: impl Fn(&'a R) -> RawAddressing<'a>,
) -> (Option<u8>, Option<IpAddr>, IpProtocol) {
    let (tos_raw, dscp_raw) = merge_marks(t, d, |r| {
        let (tos, dscp, _, _) = get(r);
        (tos, dscp)
    });
    let tos = c.tos_or_dscp(tos_raw, dscp_raw, &field("tos"), &field("dscp"));
    let source = merge(t, d, |r| get(r).2).and_then(|v| c.ip_addr(v, &field("source")));
    let ip_protocol = merge(t, d, |r| get(r).3)
        .and_then(|v| c.ip_protocol(v, &field("ip_protocol")))
        .unwrap_or_default();
    (tos, source, ip_protocol)
}

/// A boolean setting as written: a boolean, or "true"/"false" as a form writes it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub(crate) enum Flag {
    Bool(bool),
    Text(String),
}

pub(crate) fn flag(c: &mut Check<'_, '_>, v: Option<&Spanned<Flag>>, field: &str) -> bool {
    match v.map(|v| (v.get_ref(), v.span())) {
        None | Some((Flag::Bool(false), _)) => false,
        Some((Flag::Bool(true), _)) => true,
        Some((Flag::Text(t), span)) => match t.as_str() {
            "true" => true,
            "false" => false,
            other => {
                c.err(span, field, format!("{other:?} is not true or false"));
                false
            }
        },
    }
}
