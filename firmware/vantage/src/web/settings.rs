//! Settings of the web front door, kept in `web/settings.json` (mode 0600: it holds the scrape
//! credentials): extra Host names, scrape authentication, the `/probe` allow-list.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use vantage_core::RwLockExt;

use serde::{Deserialize, Serialize};

use super::config_file::{FieldError, write_private};

/// How `/metrics`, `/probe` and `/-/healthy` are protected.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase", deny_unknown_fields)]
pub enum ScrapeAuth {
    /// Open, as Prometheus exporters usually are.
    #[default]
    None,
    /// `Authorization: Bearer <token>` (Prometheus `authorization: credentials:`).
    Bearer { token: String },
    /// HTTP basic auth (Prometheus `basic_auth:`).
    Basic { username: String, password: String },
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Host names accepted besides the defaults (IP literals, localhost, the hostname and
    /// local-only domains). `*.example.net` matches subdomains; `*` accepts any Host.
    pub allowed_hosts: Vec<String>,
    pub scrape_auth: ScrapeAuth,
    /// When not empty, `/probe` only probes targets matching one entry: an IP address, a
    /// CIDR block, a hostname, `*.suffix`, or `@targets` (the hosts of configured targets).
    pub probe_allowlist: Vec<String>,
    /// Also serve the page over HTTPS on this address (e.g. `[::]:9443`); `None`: off.
    pub https_listen: Option<String>,
}

const MAX_LIST: usize = 256;
const MAX_ITEM: usize = 253;

impl Settings {
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errs = Vec::new();
        let list = |name: &str, items: &[String], errs: &mut Vec<FieldError>| {
            if items.len() > MAX_LIST {
                errs.push(FieldError::new(name, format!("at most {MAX_LIST} entries")));
            }
            for (i, s) in items.iter().enumerate() {
                let ok = !s.is_empty()
                    && s.len() <= MAX_ITEM
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || ".-_*:/@[]".contains(c));
                if !ok {
                    errs.push(FieldError::new(
                        format!("{name}[{i}]"),
                        format!("{s:?} is not a host name, address, pattern or CIDR block"),
                    ));
                }
            }
        };
        list("allowed_hosts", &self.allowed_hosts, &mut errs);
        list("probe_allowlist", &self.probe_allowlist, &mut errs);
        for (i, p) in self.probe_allowlist.iter().enumerate() {
            if p.contains('/') && parse_cidr(p).is_none() {
                errs.push(FieldError::new(
                    format!("probe_allowlist[{i}]"),
                    format!("{p:?} is not a valid CIDR block"),
                ));
            }
        }
        match &self.scrape_auth {
            ScrapeAuth::None => {}
            ScrapeAuth::Bearer { token } => {
                if token.len() < 16
                    || token.len() > 512
                    || !token.chars().all(|c| c.is_ascii_graphic())
                {
                    errs.push(FieldError::new(
                        "scrape_auth.token",
                        "must be 16 to 512 printable ASCII characters without spaces",
                    ));
                }
            }
            ScrapeAuth::Basic { username, password } => {
                if username.is_empty()
                    || username.len() > 128
                    || username.contains(':')
                    || username.chars().any(char::is_control)
                {
                    errs.push(FieldError::new(
                        "scrape_auth.username",
                        "must be 1 to 128 characters, without ':' or control characters",
                    ));
                }
                if password.len() < 10
                    || password.len() > 512
                    || password.chars().any(char::is_control)
                {
                    errs.push(FieldError::new(
                        "scrape_auth.password",
                        "must be 10 to 512 characters without control characters",
                    ));
                }
            }
        }
        if let Some(l) = &self.https_listen
            && l.parse::<SocketAddr>().is_err()
        {
            errs.push(FieldError::new(
                "https_listen",
                format!("{l:?} is not an address and port, e.g. \"[::]:9443\" or \"0.0.0.0:9443\""),
            ));
        }
        if errs.is_empty() { Ok(()) } else { Err(errs) }
    }

    pub fn https_listen_addr(&self) -> Option<SocketAddr> {
        self.https_listen.as_deref().and_then(|l| l.parse().ok())
    }
}

/// Parses `192.0.2.0/24` or `2001:db8::/32`.
pub fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (ip, len) = s.split_once('/')?;
    let ip: IpAddr = ip.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (len <= max).then_some((ip, len))
}

pub fn cidr_contains((net, len): (IpAddr, u8), ip: IpAddr) -> bool {
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => {
            let mask = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len))
            };
            u32::from(n) & mask == u32::from(i) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(i)) => {
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len))
            };
            u128::from(n) & mask == u128::from(i) & mask
        }
        _ => false,
    }
}

/// Does `pattern` (`name`, `*.suffix`) match the host name `host`?
pub fn name_matches(pattern: &str, host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let pattern = pattern.trim_end_matches('.').to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        Some(suffix) => host.ends_with(&format!(".{suffix}")),
        None => pattern == "*" || pattern == host,
    }
}

#[derive(Debug)]
pub struct SettingsStore {
    path: PathBuf,
    current: RwLock<Settings>,
}

impl SettingsStore {
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join("settings.json");
        // A damaged file must not stop the daemon: defaults until the admin saves again.
        let current = match std::fs::read(&path).map(|b| serde_json::from_slice(&b)) {
            Ok(Ok(s)) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Settings::default(),
            Ok(Err(e)) => {
                tracing::error!(
                    "{} is damaged ({e}); using default settings",
                    path.display()
                );
                Settings::default()
            }
            Err(e) => {
                tracing::error!(
                    "cannot read {} ({e}); using default settings",
                    path.display()
                );
                Settings::default()
            }
        };
        Ok(Self {
            path,
            current: RwLock::new(current),
        })
    }

    pub fn get(&self) -> Settings {
        self.current.read_or_recover().clone()
    }

    pub fn set(&self, s: Settings) -> std::io::Result<()> {
        let body = serde_json::to_vec_pretty(&s).map_err(std::io::Error::other)?;
        let mut cur = self.current.write_or_recover();
        write_private(&self.path, &body)?;
        *cur = s;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_and_names() {
        let n = parse_cidr("192.0.2.0/24").unwrap();
        assert!(cidr_contains(n, "192.0.2.77".parse().unwrap()));
        assert!(!cidr_contains(n, "192.0.3.1".parse().unwrap()));
        assert!(!cidr_contains(n, "::1".parse().unwrap()));
        let n6 = parse_cidr("2001:db8::/32").unwrap();
        assert!(cidr_contains(n6, "2001:db8:1::1".parse().unwrap()));
        assert!(parse_cidr("192.0.2.0/33").is_none());
        assert!(name_matches("*.example.net", "a.b.example.net"));
        assert!(!name_matches("*.example.net", "example.net.evil.com"));
        assert!(name_matches("Probe.LAN", "probe.lan."));
    }

    #[test]
    fn validation_names_fields() {
        let s = Settings {
            allowed_hosts: vec!["ok.example".into(), "bad host;rm".into()],
            scrape_auth: ScrapeAuth::Bearer {
                token: "short".into(),
            },
            probe_allowlist: vec!["10.0.0.0/99".into()],
            https_listen: Some("9443".into()),
        };
        let errs = s.validate().unwrap_err();
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "allowed_hosts[1]",
                "probe_allowlist[0]",
                "scrape_auth.token",
                "https_listen"
            ]
        );
    }
}
