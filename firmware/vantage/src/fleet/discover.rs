//! `vantage discover`: finds devices announced over mDNS and hands them to Prometheus, as a
//! `file_sd` JSON file, an `http_sd` endpoint, or a table on the terminal.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use vantage_core::RwLockExt;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use mdns_sd::{ServiceDaemon, ServiceEvent, ServiceInfo};
use serde::Serialize;

use super::SERVICE_TYPE;

#[derive(Debug, clap::Args)]
pub struct DiscoverArgs {
    /// How long to listen before printing the list (or writing with --once).
    #[arg(long, short = 't', default_value = "3s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Keep this Prometheus file_sd JSON file up to date (written atomically on every change).
    #[arg(long, value_name = "FILE")]
    file_sd: Option<PathBuf>,
    /// Serve the devices as a Prometheus http_sd endpoint on this address (path /http_sd).
    #[arg(long, value_name = "ADDR")]
    http_sd: Option<SocketAddr>,
    /// With --file-sd: write the file once after --timeout and exit.
    #[arg(long)]
    once: bool,
    /// Print the list as JSON (the file_sd format) instead of a table.
    #[arg(long)]
    json: bool,
}

/// One device as announced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Device {
    pub name: String,
    pub addresses: Vec<IpAddr>,
    pub port: u16,
    pub txt: BTreeMap<String, String>,
}

impl Device {
    fn from_info(info: &ServiceInfo) -> Self {
        let txt = info
            .get_properties()
            .iter()
            .map(|p| (p.key().to_string(), p.val_str().to_string()))
            .collect::<BTreeMap<_, _>>();
        let instance = info
            .get_fullname()
            .strip_suffix(SERVICE_TYPE)
            .unwrap_or(info.get_fullname())
            .trim_end_matches('.');
        let mut addresses: Vec<IpAddr> = info.get_addresses().iter().copied().collect();
        addresses.sort_by_key(|a| (address_rank(a), *a));
        Self {
            name: txt
                .get("device")
                .cloned()
                .unwrap_or_else(|| instance.to_string()),
            addresses,
            port: info.get_port(),
            txt,
        }
    }

    /// The address Prometheus should scrape: a routable IPv4 first, then IPv6.
    pub fn scrape_address(&self) -> Option<String> {
        self.addresses
            .first()
            .map(|a| SocketAddr::new(*a, self.port).to_string())
    }
}

/// Lower is better: routable IPv4, routable IPv6, link-local, loopback last.
fn address_rank(a: &IpAddr) -> u8 {
    match a {
        IpAddr::V4(v4) if v4.is_loopback() => 5,
        IpAddr::V4(v4) if v4.is_link_local() => 3,
        IpAddr::V4(_) => 0,
        IpAddr::V6(v6) if v6.is_loopback() => 6,
        // Link-local IPv6 needs a zone Prometheus cannot take.
        IpAddr::V6(v6) if v6.is_unicast_link_local() => 7,
        IpAddr::V6(_) => 1,
    }
}

/// A Prometheus service-discovery target group (the same JSON for file_sd and http_sd).
#[derive(Debug, Serialize, PartialEq)]
pub struct TargetGroup {
    pub targets: Vec<String>,
    pub labels: BTreeMap<String, String>,
}

/// Target groups for `devices`: the device's metadata as `__meta_vantage_*` labels (the
/// device already puts its labels on its own series; relabel these if wanted).
pub fn target_groups(devices: &BTreeMap<String, Device>) -> Vec<TargetGroup> {
    let mut groups: Vec<TargetGroup> = devices
        .values()
        .filter_map(|d| {
            let addr = d.scrape_address()?;
            let mut labels = BTreeMap::new();
            labels.insert("__meta_vantage_device".into(), d.name.clone());
            for (k, v) in &d.txt {
                match k.as_str() {
                    "version" | "site" => {
                        labels.insert(format!("__meta_vantage_{k}"), v.clone());
                    }
                    "path" if v.starts_with('/') => {
                        labels.insert("__metrics_path__".into(), v.clone());
                    }
                    _ => {
                        if let Some(name) = k.strip_prefix("label.")
                            && vantage_core::config::check_label_name(name).is_ok()
                        {
                            labels.insert(format!("__meta_vantage_label_{name}"), v.clone());
                        }
                    }
                }
            }
            Some(TargetGroup {
                targets: vec![addr],
                labels,
            })
        })
        .collect();
    groups.sort_by(|a, b| a.targets.cmp(&b.targets));
    groups
}

type Devices = Arc<RwLock<BTreeMap<String, Device>>>;

/// Anyone on the LAN can announce; a flood of fake devices must not exhaust memory.
const MAX_DEVICES: usize = 10_000;

/// Browses in a thread; `changed` is bumped on every change.
fn browse(
    devices: Devices,
    changed: tokio::sync::watch::Sender<u64>,
) -> anyhow::Result<ServiceDaemon> {
    let mdns = ServiceDaemon::new().map_err(|e| anyhow::anyhow!("cannot start mDNS: {e}"))?;
    let rx = mdns
        .browse(SERVICE_TYPE)
        .map_err(|e| anyhow::anyhow!("cannot browse {SERVICE_TYPE}: {e}"))?;
    std::thread::Builder::new()
        .name("mdns-browse".into())
        .spawn(move || {
            while let Ok(event) = rx.recv() {
                let mut map = devices.write_or_recover();
                let changed_now = match event {
                    ServiceEvent::ServiceResolved(info)
                        if map.len() >= MAX_DEVICES && !map.contains_key(info.get_fullname()) =>
                    {
                        tracing::warn!(
                            "more than {MAX_DEVICES} devices announced; ignoring {}",
                            info.get_fullname()
                        );
                        false
                    }
                    ServiceEvent::ServiceResolved(info) => {
                        let d = Device::from_info(&info);
                        tracing::debug!(device = %d.name, addresses = ?d.addresses, "found");
                        map.insert(info.get_fullname().to_string(), d.clone()) != Some(d)
                    }
                    ServiceEvent::ServiceRemoved(_, fullname) => {
                        tracing::debug!(%fullname, "gone");
                        map.remove(&fullname).is_some()
                    }
                    _ => false,
                };
                drop(map);
                if changed_now {
                    changed.send_modify(|n| *n += 1);
                }
            }
        })?;
    Ok(mdns)
}

fn write_file_sd(path: &std::path::Path, groups: &[TargetGroup]) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(groups).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, json)?;
    // Prometheus watches the file: a rename makes it see a whole file, never half of one.
    std::fs::rename(&tmp, path)
}

async fn http_sd(State(devices): State<Devices>) -> impl IntoResponse {
    let groups = target_groups(&devices.read_or_recover());
    (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_string(&groups).unwrap_or_else(|_| "[]".into()),
    )
}

pub async fn run(args: DiscoverArgs) -> ExitCode {
    match run_inner(args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vantage discover: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run_inner(args: DiscoverArgs) -> anyhow::Result<ExitCode> {
    let devices: Devices = Arc::default();
    let (tx, mut rx) = tokio::sync::watch::channel(0u64);
    let mdns = browse(devices.clone(), tx)?;
    let serving = args.http_sd.is_some() || (args.file_sd.is_some() && !args.once);

    if !serving {
        tokio::time::sleep(args.timeout).await;
        let _ = mdns.shutdown();
        let map = devices.read_or_recover().clone();
        if let Some(path) = &args.file_sd {
            write_file_sd(path, &target_groups(&map))?;
            eprintln!("{} devices written to {}", map.len(), path.display());
        } else if args.json {
            println!("{}", serde_json::to_string_pretty(&target_groups(&map))?);
        } else {
            print_table(&map);
        }
        return Ok(ExitCode::SUCCESS);
    }

    if let Some(addr) = args.http_sd {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
        tracing::info!(listen = %listener.local_addr()?, "serving http_sd on /http_sd");
        let app = Router::new()
            .route("/http_sd", get(http_sd))
            .route("/-/healthy", get(|| async { "Healthy\n" }))
            .with_state(devices.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!("http_sd server failed: {e}");
            }
        });
    }
    if let Some(path) = &args.file_sd {
        write_file_sd(path, &[])?;
    }
    loop {
        tokio::select! {
            r = rx.changed() => {
                if r.is_err() {
                    anyhow::bail!("the mDNS browser stopped");
                }
            }
            _ = tokio::signal::ctrl_c() => break,
        }
        let map = devices.read_or_recover().clone();
        tracing::info!(devices = map.len(), "device list changed");
        if let Some(path) = &args.file_sd
            && let Err(e) = write_file_sd(path, &target_groups(&map))
        {
            tracing::error!("cannot write {}: {e}", path.display());
        }
    }
    let _ = mdns.shutdown();
    Ok(ExitCode::SUCCESS)
}

fn print_table(map: &BTreeMap<String, Device>) {
    if map.is_empty() {
        eprintln!("no devices found ({SERVICE_TYPE})");
        return;
    }
    println!(
        "{:<24} {:<28} {:<10} {:<12} LABELS",
        "DEVICE", "ADDRESS", "VERSION", "SITE"
    );
    for d in map.values() {
        let get = |k: &str| d.txt.get(k).map(String::as_str).unwrap_or("");
        let labels: Vec<String> = d
            .txt
            .iter()
            .filter_map(|(k, v)| k.strip_prefix("label.").map(|k| format!("{k}={v}")))
            .collect();
        println!(
            "{:<24} {:<28} {:<10} {:<12} {}",
            d.name,
            d.scrape_address().unwrap_or_default(),
            get("version"),
            get("site"),
            labels.join(",")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_groups_prefer_routable_ipv4_and_carry_meta_labels() {
        let mut txt = BTreeMap::new();
        txt.insert("device".to_string(), "d1".to_string());
        txt.insert("version".into(), "0.1.0".into());
        txt.insert("site".into(), "hq".into());
        txt.insert("path".into(), "/metrics".into());
        txt.insert("label.room".into(), "r2".into());
        txt.insert("label.bad-name".into(), "x".into());
        let mut addresses: Vec<IpAddr> = ["127.0.0.1", "fe80::1", "2001:db8::5", "192.0.2.11"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        addresses.sort_by_key(|a| (address_rank(a), *a));
        let mut map = BTreeMap::new();
        map.insert(
            "d1._vantage._tcp.local.".to_string(),
            Device {
                name: "d1".into(),
                addresses,
                port: 9430,
                txt,
            },
        );
        let g = target_groups(&map);
        assert_eq!(g[0].targets, ["192.0.2.11:9430"]);
        assert_eq!(g[0].labels["__meta_vantage_device"], "d1");
        assert_eq!(g[0].labels["__meta_vantage_site"], "hq");
        assert_eq!(g[0].labels["__meta_vantage_label_room"], "r2");
        assert_eq!(g[0].labels["__metrics_path__"], "/metrics");
        assert!(!g[0].labels.keys().any(|k| k.contains("bad")));
    }
}
