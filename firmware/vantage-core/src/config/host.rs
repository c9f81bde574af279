//! Target hosts: an IP literal or an RFC 1123 hostname, nothing else.
//!
//! Hosts come from config files and from the web page, and end up in DNS queries, log lines and
//! labels. They are never passed to a shell, but we still refuse anything that is not a plain
//! address or hostname so that a hostile string is rejected with a clear message at the edge.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::defaults::MAX_HOST_LEN;

/// A validated probe destination.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(into = "String")]
pub enum Host {
    Ip(IpAddr),
    Name(String),
}

impl Host {
    /// `host = "system"`: the DNS probe asks the resolvers in `/etc/resolv.conf`.
    pub fn is_system(&self) -> bool {
        matches!(self, Host::Name(n) if n == crate::defaults::SYSTEM_RESOLVER)
    }

    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Host::Ip(ip) => Some(*ip),
            Host::Name(_) => None,
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(ip) => ip.fmt(f),
            Host::Name(n) => f.write_str(n),
        }
    }
}

impl From<Host> for String {
    fn from(h: Host) -> String {
        h.to_string()
    }
}

impl FromStr for Host {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_host(s)
    }
}

impl<'de> Deserialize<'de> for Host {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_host(&s).map_err(serde::de::Error::custom)
    }
}

/// Splits a `/probe` target written `HOST:PORT` (`[IPv6]:PORT`); the port is checked by
/// whoever uses it, the host by [`parse_host`].
pub fn split_host_port(s: &str) -> Result<(&str, i64), String> {
    let (host, port) = match s.strip_prefix('[') {
        Some(rest) => rest
            .split_once("]:")
            .ok_or_else(|| format!("target {s:?}: write [IPv6]:PORT"))?,
        None => s
            .rsplit_once(':')
            .filter(|(h, _)| !h.contains(':'))
            .ok_or_else(|| format!("target {s:?}: write HOST:PORT (IPv6 as [ADDRESS]:PORT)"))?,
    };
    let port = port
        .parse::<i64>()
        .map_err(|_| format!("target {s:?}: port {port:?} is not a whole number"))?;
    Ok((host, port))
}

/// Parses and validates a host, returning a message that says exactly what is wrong.
pub fn parse_host(s: &str) -> Result<Host, String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.chars().count() > MAX_HOST_LEN {
        return Err(format!(
            "is {} characters long; a host is at most {MAX_HOST_LEN}",
            s.chars().count()
        ));
    }
    // Brackets are a common way to write IPv6 literals in URLs; accept them.
    let unbracketed = s
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(s);
    if let Ok(ip) = unbracketed.parse::<IpAddr>() {
        return Ok(Host::Ip(ip));
    }
    if s.starts_with('-') {
        return Err("must not start with '-'".into());
    }
    if let Some(c) = s.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "contains whitespace or a control character ({:?})",
            c
        ));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '.'))
    {
        return Err(format!(
            "contains {c:?}, which is not allowed in a hostname (letters, digits, '-' and '.' only)"
        ));
    }
    let name = s.strip_suffix('.').unwrap_or(s);
    if name.is_empty() {
        return Err("is not a hostname".into());
    }
    check_dns_labels(name)?;
    // A dotted all-numeric name that failed to parse as an address is a typo, not a hostname.
    if name
        .split('.')
        .all(|l| l.chars().all(|c| c.is_ascii_digit()))
    {
        return Err(format!("{s:?} is not a valid IPv4 address"));
    }
    Ok(Host::Name(s.to_ascii_lowercase()))
}

/// Each dot-separated label of a hostname: not empty, at most 63 bytes, no '-' at either end.
fn check_dns_labels(name: &str) -> Result<(), String> {
    for label in name.split('.') {
        if label.is_empty() {
            return Err("has an empty label (two dots in a row, or a leading dot)".into());
        }
        if label.len() > 63 {
            return Err(format!(
                "has a label of {} characters; DNS labels are at most 63",
                label.len()
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!(
                "has the label {label:?}, which starts or ends with '-'"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_addresses_and_names() {
        assert_eq!(
            parse_host("192.168.1.1").unwrap(),
            Host::Ip("192.168.1.1".parse().unwrap())
        );
        assert_eq!(parse_host("::1").unwrap(), Host::Ip("::1".parse().unwrap()));
        assert_eq!(
            parse_host("[2001:db8::1]").unwrap(),
            Host::Ip("2001:db8::1".parse().unwrap())
        );
        assert_eq!(
            parse_host("Example.COM.").unwrap(),
            Host::Name("example.com.".into())
        );
        assert_eq!(parse_host("a-b.c1").unwrap(), Host::Name("a-b.c1".into()));
    }

    #[test]
    fn rejects_hostile_and_malformed_hosts() {
        let cases = [
            ("", "must not be empty"),
            ("-c 1000", "must not start with '-'"),
            ("127.0.0.1; rm -rf /", "contains whitespace"),
            ("a;b", "contains ';'"),
            ("$(reboot)", "contains '$'"),
            ("a`id`", "contains '`'"),
            ("a..b", "empty label"),
            ("a-.b", "starts or ends with '-'"),
            ("300.1.1.1", "not a valid IPv4 address"),
            ("tab\there", "whitespace"),
        ];
        for (input, want) in cases {
            let err = parse_host(input).unwrap_err();
            assert!(err.contains(want), "{input:?}: got {err:?}, want {want:?}");
        }
        let long = "a".repeat(5000);
        assert!(parse_host(&long).unwrap_err().contains("5000 characters"));
        let long_label = format!("{}.com", "a".repeat(64));
        assert!(parse_host(&long_label).unwrap_err().contains("at most 63"));
    }
}
