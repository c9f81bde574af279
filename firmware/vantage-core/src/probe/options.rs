//! Settings several kinds share, declared once (`raw_section!`) and read the same way for each:
//! the packet marks, source address and address family of the kinds that send their own packets
//! (ping, trace, tcp), the TLS settings of tcp and http, and the boolean flags of tcp and http.

use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::module::OptionsInput;
use crate::config::check::{Check, Src, merge_marks, read_section};
use crate::types::IpProtocol;

/// Declares a kind's section as written: every field optional, unknown keys refused, and
/// [`Keys`](crate::config::check::Keys) to ask which are set. The settings several kinds share are named by a group, so their
/// fields and docs are written once: `@addressing("verb")` adds `tos`, `dscp`, `source` and
/// `ip_protocol`; `@tls` adds `server_name`, `ca_file` and `insecure`. Fields keep the order
/// written, which serde's "expected one of" messages quote. (A flattened shared struct would not
/// do: serde's `flatten` does not work with `deny_unknown_fields`.)
macro_rules! raw_section {
    ($(#[$m:meta])* $vis:vis struct $name:ident { $($body:tt)* }) => {
        $crate::probe::options::raw_section!(@munch [$(#[$m])*] [$vis] $name [] [] [] $($body)*);
    };
    (@munch [$($m:tt)*] [$vis:vis] $name:ident [$($f:tt)*] [$($n:ident)*] [$($i:tt)*]) => {
        $($m)*
        #[derive(Debug, Clone, Default, ::serde::Deserialize, ::serde::Serialize)]
        #[serde(deny_unknown_fields)]
        $vis struct $name { $($f)* }
        impl $crate::config::check::Keys for $name {
            fn has(&self, name: &str) -> bool {
                $(if name == stringify!($n) { return self.$n.is_some(); })*
                false
            }
        }
        $($i)*
    };
    (@munch $m:tt $vis:tt $name:ident $f:tt $n:tt [$($i:tt)*] @addressing($verb:literal), $($rest:tt)*) => {
        $crate::probe::options::raw_section!(@munch $m $vis $name $f $n [$($i)*
            impl $crate::probe::options::Addressed for $name {
                fn addressing(&self) -> $crate::probe::options::RawAddressing<'_> {
                    $crate::probe::options::RawAddressing {
                        tos: self.tos.as_ref(),
                        dscp: self.dscp.as_ref(),
                        source: self.source.as_ref(),
                        ip_protocol: self.ip_protocol.as_ref(),
                    }
                }
            }
        ]
            /// IPv4 TOS byte / IPv6 traffic class (0..=255). Mutually exclusive with `dscp`.
            pub tos: Option<::toml::Spanned<i64>>,
            /// DSCP code point (0..=63), placed in the upper six bits of TOS.
            pub dscp: Option<::toml::Spanned<i64>>,
            /// Source address to send from.
            pub source: Option<::toml::Spanned<String>>,
            #[doc = concat!("`auto`, `ipv4` or `ipv6`: which address of a hostname to ", $verb, ".")]
            pub ip_protocol: Option<::toml::Spanned<String>>,
            $($rest)*);
    };
    (@munch $m:tt $vis:tt $name:ident $f:tt $n:tt [$($i:tt)*] @tls, $($rest:tt)*) => {
        $crate::probe::options::raw_section!(@munch $m $vis $name $f $n [$($i)*
            impl $crate::probe::options::Secured for $name {
                fn tls(&self) -> $crate::probe::options::RawTls<'_> {
                    $crate::probe::options::RawTls {
                        server_name: self.server_name.as_ref(),
                        ca_file: self.ca_file.as_ref(),
                        insecure: self.insecure.as_ref(),
                    }
                }
            }
        ]
            /// The name the certificate must carry; the host's name by default.
            pub server_name: Option<::toml::Spanned<String>>,
            /// A PEM file of the CAs to trust instead of the built-in roots.
            pub ca_file: Option<::toml::Spanned<String>>,
            /// Accept any certificate (testing only); the expiry is still read.
            pub insecure: Option<::toml::Spanned<$crate::probe::options::Flag>>,
            $($rest)*);
    };
    (@munch $m:tt $vis:tt $name:ident [$($f:tt)*] [$($n:ident)*] $i:tt
        $(#[$fm:meta])* $fvis:vis $field:ident : $ty:ty, $($rest:tt)*) => {
        $crate::probe::options::raw_section!(@munch $m $vis $name
            [$($f)* $(#[$fm])* $fvis $field: $ty,] [$($n)* $field] $i $($rest)*);
    };
}
pub(crate) use raw_section;

/// The target's own section and `[defaults.KIND]` (named `defaults`), read into the kind's type;
/// a section that does not read is reported and taken as unset.
pub(crate) fn sections<R: serde::de::DeserializeOwned>(
    c: &mut Check<'_, '_>,
    input: &OptionsInput<'_, '_>,
    defaults: &str,
) -> (Option<R>, Option<R>) {
    let d = input.defaults.and_then(|v| read_section(c, v, defaults));
    let t = input.own.and_then(|v| read_section(c, v, input.path));
    (t, d)
}

/// A setting a kind cannot do without; unset, the error points at the target's section (or the
/// target when it has none) and `msg` says what to write.
pub(crate) fn required<'a, R, T>(
    c: &mut Check<'_, '_>,
    input: &OptionsInput<'_, '_>,
    x: Src<'a, R>,
    get: impl Fn(&'a R) -> Option<&'a Spanned<T>>,
    (name, msg): (&str, &str),
) -> Option<&'a Spanned<T>> {
    let v = x.pick(get);
    if v.is_none() {
        let span = input.own.map_or(input.target_span.clone(), |v| v.span());
        c.err(span, &x.field(name), msg);
    }
    v
}

/// `tos`, `dscp`, `source` and `ip_protocol` of a kind's section, as written.
pub(crate) struct RawAddressing<'a> {
    pub tos: Option<&'a Spanned<i64>>,
    pub dscp: Option<&'a Spanned<i64>>,
    pub source: Option<&'a Spanned<String>>,
    pub ip_protocol: Option<&'a Spanned<String>>,
}

/// A section with the `@addressing` group of [`raw_section`].
pub(crate) trait Addressed {
    fn addressing(&self) -> RawAddressing<'_>;
}

/// The TOS byte (`tos` or `dscp`), the source address and the address family: the target's
/// settings over its defaults'.
pub(crate) fn addressing<R: Addressed>(
    c: &mut Check<'_, '_>,
    x: Src<'_, R>,
) -> (Option<u8>, Option<IpAddr>, IpProtocol) {
    let (tos_raw, dscp_raw) = merge_marks(x.t, x.d, |r| {
        let a = r.addressing();
        (a.tos, a.dscp)
    });
    let tos = c.tos_or_dscp(tos_raw, dscp_raw, &x.field("tos"), &x.field("dscp"));
    let source = x
        .pick(|r| r.addressing().source)
        .and_then(|v| c.ip_addr(v, &x.field("source")));
    (
        tos,
        source,
        ip_protocol(c, x, |r| r.addressing().ip_protocol),
    )
}

/// The address family to use of a host name with both; `auto` when unset.
pub(crate) fn ip_protocol<'a, R>(
    c: &mut Check<'_, '_>,
    x: Src<'a, R>,
    get: impl Fn(&'a R) -> Option<&'a Spanned<String>>,
) -> IpProtocol {
    x.pick(get)
        .and_then(|v| c.ip_protocol(v, &x.field("ip_protocol")))
        .unwrap_or_default()
}

/// `server_name`, `ca_file` and `insecure` of a kind's section, as written.
pub(crate) struct RawTls<'a> {
    pub server_name: Option<&'a Spanned<String>>,
    pub ca_file: Option<&'a Spanned<String>>,
    pub insecure: Option<&'a Spanned<Flag>>,
}

/// A section with the `@tls` group of [`raw_section`].
pub(crate) trait Secured {
    fn tls(&self) -> RawTls<'_>;
}

/// `server_name`, `ca_file` and `insecure`: the target's over its defaults'.
pub(crate) fn tls<R: Secured>(
    c: &mut Check<'_, '_>,
    x: Src<'_, R>,
) -> (Option<String>, Option<PathBuf>, bool) {
    let insecure = flag(c, x.pick(|r| r.tls().insecure), &x.field("insecure"));
    let server_name = x.pick(|r| r.tls().server_name).map(|v| v.get_ref().clone());
    let ca_file = x
        .pick(|r| r.tls().ca_file)
        .map(|v| PathBuf::from(v.get_ref()));
    (server_name, ca_file, insecure)
}

/// The TLS settings the target's own table sets where they would be silently ignored (no TLS):
/// each is an error, `msg` says when it applies.
pub(crate) fn tls_unused<R: Secured>(
    c: &mut Check<'_, '_>,
    x: Src<'_, R>,
    with_insecure: bool,
    msg: &str,
) {
    let Some(own) = x.t.map(Secured::tls) else {
        return;
    };
    let insecure = own.insecure.filter(|_| with_insecure);
    for (name, span) in [
        ("server_name", own.server_name.map(Spanned::span)),
        ("ca_file", own.ca_file.map(Spanned::span)),
        ("insecure", insecure.map(Spanned::span)),
    ] {
        if let Some(span) = span {
            c.err(span, &x.field(name), msg);
        }
    }
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
