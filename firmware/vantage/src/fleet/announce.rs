//! mDNS/DNS-SD announcement of the device as `_vantage._tcp.local.`.
//!
//! Instance name: the device name. SRV: `<device>.local.` and the HTTP port. TXT:
//! `txtvers=1`, `version` (daemon version), `path` (metrics path), `device`, `site` (the
//! device's `site` label, empty if none) and `label.<name>=<value>` for every device label.
//! `vantage discover` turns these into Prometheus targets.

use std::sync::Mutex;
use vantage_core::LockExt;

use mdns_sd::{ServiceDaemon, ServiceInfo};
use vantage_core::Config;

use super::config::FleetSections;
use super::{SERVICE_TYPE, device_name};

/// TXT entries are at most 255 bytes; longer labels are left out of the announcement (they
/// are still on the series).
const MAX_TXT_ENTRY: usize = 255;

/// What is announced; re-registered when it changes on reload.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Announced {
    name: String,
    txt: Vec<(String, String)>,
}

pub fn txt_records(config: &Config) -> Vec<(String, String)> {
    let mut txt = vec![
        ("txtvers".to_string(), "1".to_string()),
        ("version".into(), env!("CARGO_PKG_VERSION").into()),
        ("path".into(), "/metrics".into()),
        ("device".into(), device_name(config)),
        (
            "site".into(),
            config
                .device
                .labels
                .get("site")
                .cloned()
                .unwrap_or_default(),
        ),
    ];
    for (k, v) in &config.device.labels {
        let key = format!("label.{k}");
        if key.len() + v.len() < MAX_TXT_ENTRY {
            txt.push((key, v.clone()));
        }
    }
    txt
}

/// Keeps the device's announcement in line with its config.
pub struct Announcer {
    port: u16,
    daemon: Mutex<Option<ServiceDaemon>>,
    current: Mutex<Option<(Announced, String)>>,
}

impl std::fmt::Debug for Announcer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Announcer")
            .field("port", &self.port)
            .finish()
    }
}

impl Announcer {
    pub fn new(port: u16) -> Self {
        Self {
            port,
            daemon: Mutex::new(None),
            current: Mutex::new(None),
        }
    }

    /// Registers, re-registers or withdraws the announcement for `config`.
    pub fn apply(&self, config: &Config) {
        let want = config.discovery().mdns.then(|| Announced {
            name: device_name(config),
            txt: txt_records(config),
        });
        let mut current = self.current.lock_or_recover();
        if current.as_ref().map(|(a, _)| a) == want.as_ref() {
            return;
        }
        let mut daemon = self.daemon.lock_or_recover();
        if let (Some((_, fullname)), Some(d)) = (current.take(), daemon.as_ref()) {
            // Sends a goodbye, so browsers drop the old name at once.
            let _ = d.unregister(&fullname);
        }
        let Some(want) = want else {
            if let Some(d) = daemon.take() {
                let _ = d.shutdown();
            }
            return;
        };
        if daemon.is_none() {
            match ServiceDaemon::new() {
                Ok(d) => *daemon = Some(d),
                Err(e) => {
                    tracing::error!("mDNS: cannot start the responder: {e}");
                    return;
                }
            }
        }
        let Some(d) = daemon.as_ref() else { return };
        let props: std::collections::HashMap<String, String> = want.txt.iter().cloned().collect();
        let info = ServiceInfo::new(
            SERVICE_TYPE,
            &want.name,
            &format!("{}.local.", want.name),
            "",
            self.port,
            props,
        )
        .map(ServiceInfo::enable_addr_auto);
        match info {
            Ok(info) => {
                let fullname = info.get_fullname().to_string();
                match d.register(info) {
                    Ok(()) => {
                        tracing::info!(%fullname, port = self.port, "mDNS: announcing the device");
                        *current = Some((want, fullname));
                    }
                    Err(e) => tracing::error!("mDNS: cannot announce the device: {e}"),
                }
            }
            Err(e) => tracing::error!("mDNS: bad announcement: {e}"),
        }
    }
}

impl Announcer {
    /// Withdraws the announcement (a goodbye packet, so browsers drop the device at once) and
    /// waits briefly for it to go out. Called on shutdown.
    pub fn withdraw(&self) {
        let Some(d) = self.daemon.lock_or_recover().take() else {
            return;
        };
        if let Some((_, fullname)) = self.current.lock_or_recover().take()
            && let Ok(rx) = d.unregister(&fullname)
        {
            let _ = rx.recv_timeout(std::time::Duration::from_secs(1));
        }
        if let Ok(rx) = d.shutdown() {
            let _ = rx.recv_timeout(std::time::Duration::from_secs(1));
        }
    }
}

impl Drop for Announcer {
    fn drop(&mut self) {
        self.withdraw();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txt_carries_version_site_path_and_labels() {
        let c = crate::config::parse(
            "[device]\nname = \"d1\"\nlabels = { site = \"hq\", room = \"r2\" }\n",
            "t",
        )
        .unwrap();
        let txt = txt_records(&c);
        let get = |k: &str| txt.iter().find(|(kk, _)| kk == k).map(|(_, v)| v.as_str());
        assert_eq!(get("version"), Some(env!("CARGO_PKG_VERSION")));
        assert_eq!(get("site"), Some("hq"));
        assert_eq!(get("path"), Some("/metrics"));
        assert_eq!(get("device"), Some("d1"));
        assert_eq!(get("label.room"), Some("r2"));
    }
}
