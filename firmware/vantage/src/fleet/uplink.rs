//! Uplink awareness: the device pings its own default gateway(s), and optionally one chosen
//! upstream host, so alerts can tell "this probe's own network is down" from "the target is
//! down".
//!
//! Gateways come from the kernel's routing table (`/proc/net/route`, `/proc/net/ipv6_route`)
//! each round, so a DHCP renewal that changes the gateway is followed. A family is exported
//! once it has had a default route: a device that never had IPv6 does not report an IPv6
//! uplink as down, but one that loses its IPv4 default route does.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vantage_core::LockExt;

use prometheus::{GaugeVec, Opts};
use tokio::sync::watch;
use vantage_core::{Config, PingProbe, Probe, ProbeRequest};

use super::config::FleetSections;

/// A default route found in the routing table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultRoute {
    pub gateway: IpAddr,
    pub interface: String,
    pub metric: u32,
}

const RTF_UP: u32 = 0x1;
const RTF_GATEWAY: u32 = 0x2;
const RTF_REJECT: u32 = 0x200;

/// The lowest-metric IPv4 default route in `/proc/net/route` text.
pub fn parse_ipv4_routes(text: &str) -> Option<DefaultRoute> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 8 {
                return None;
            }
            let dest = u32::from_str_radix(f[1], 16).ok()?;
            let gw = u32::from_str_radix(f[2], 16).ok()?;
            let flags = u32::from_str_radix(f[3], 16).ok()?;
            let metric: u32 = f[6].parse().ok()?;
            let mask = u32::from_str_radix(f[7], 16).ok()?;
            // The kernel prints the address in host byte order of a little-endian u32.
            let usable = flags & RTF_UP != 0 && flags & RTF_GATEWAY != 0 && flags & RTF_REJECT == 0;
            (dest == 0 && mask == 0 && usable && gw != 0).then(|| DefaultRoute {
                gateway: IpAddr::V4(Ipv4Addr::from(gw.swap_bytes())),
                interface: f[0].to_string(),
                metric,
            })
        })
        .min_by_key(|r| r.metric)
}

/// The lowest-metric IPv6 default route in `/proc/net/ipv6_route` text.
pub fn parse_ipv6_routes(text: &str) -> Option<DefaultRoute> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 || f[1] != "00" || f[0].len() != 32 || f[0].bytes().any(|b| b != b'0') {
                return None;
            }
            let gw = u128::from_str_radix(f[4], 16).ok()?;
            let metric = u32::from_str_radix(f[5], 16).ok()?;
            let flags = u32::from_str_radix(f[8], 16).ok()?;
            let usable = flags & RTF_UP != 0 && flags & RTF_REJECT == 0 && f[9] != "lo";
            (gw != 0 && usable).then(|| DefaultRoute {
                gateway: IpAddr::V6(Ipv6Addr::from(gw)),
                interface: f[9].to_string(),
                metric,
            })
        })
        .min_by_key(|r| r.metric)
}

/// Reads the current default routes, IPv4 then IPv6.
pub fn default_routes() -> [(&'static str, Option<DefaultRoute>); 2] {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    [
        ("ipv4", parse_ipv4_routes(&read("/proc/net/route"))),
        ("ipv6", parse_ipv6_routes(&read("/proc/net/ipv6_route"))),
    ]
}

/// The uplink's series.
#[derive(Debug)]
pub struct UplinkMetrics {
    gateway_up: GaugeVec,
    gateway_rtt: GaugeVec,
    gateway_info: GaugeVec,
    upstream_up: GaugeVec,
    upstream_rtt: GaugeVec,
    seen: Mutex<BTreeSet<&'static str>>,
    /// The gateway_info labels exported per family, to remove them when the route changes.
    info: Mutex<std::collections::BTreeMap<&'static str, (String, String)>>,
}

impl UplinkMetrics {
    /// Removes every gateway series: the uplink check is off, or gateways are not watched.
    fn clear_gateway(&self) {
        self.gateway_up.reset();
        self.gateway_rtt.reset();
        self.gateway_info.reset();
        self.info.lock_or_recover().clear();
    }

    pub fn new(registry: &prometheus::Registry) -> Arc<Self> {
        let g = |name: &str, help: &str, labels: &[&str]| {
            let v = GaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(v.clone()))
                .expect("unique metric");
            v
        };
        Arc::new(Self {
            gateway_up: g(
                "vantage_uplink_gateway_up",
                "1 if the default gateway of this address family answered the last ping, else 0 (also 0 when the default route is gone).",
                &["family"],
            ),
            gateway_rtt: g(
                "vantage_uplink_gateway_rtt_seconds",
                "Round-trip time of the last answered ping to the default gateway.",
                &["family"],
            ),
            gateway_info: g(
                "vantage_uplink_gateway_info",
                "The current default gateway and interface of each address family; always 1.",
                &["family", "gateway", "interface"],
            ),
            upstream_up: g(
                "vantage_uplink_upstream_up",
                "1 if the configured upstream host answered the last ping, else 0.",
                &["upstream"],
            ),
            upstream_rtt: g(
                "vantage_uplink_upstream_rtt_seconds",
                "Round-trip time of the last answered ping to the configured upstream host.",
                &["upstream"],
            ),
            seen: Mutex::default(),
            info: Mutex::default(),
        })
    }
}

/// Pings `host` once with the given timeout; `Some(rtt)` if it answered.
async fn ping_once(probe: &PingProbe, host: &str, timeout: Duration) -> Option<Duration> {
    // Built through the config parser so it stays valid whatever fields targets gain.
    let text = format!(
        "[[targets]]\nname = \"uplink\"\nhost = \"{host}\"\nprobes = [\"ping\"]\nping = {{ timeout = \"{}ms\" }}\n",
        timeout.as_millis().max(10)
    );
    let config = crate::config::parse(&text, "<uplink>").ok()?;
    let sample = probe
        .run(ProbeRequest::for_target(&config.targets[0]))
        .await;
    match (sample.measurement.ping(), sample.success) {
        (Some(r), true) => r.mean().or(Some(Duration::ZERO)),
        _ => None,
    }
}

/// Probes the uplink while the device's config is kept (`local`), following its reloads.
pub async fn run(local: watch::Receiver<Arc<Config>>, metrics: Arc<UplinkMetrics>) {
    let probe = PingProbe::new();
    let mut upstream_label: Option<String> = None;
    loop {
        if local.has_changed().is_err() {
            return;
        }
        let cfg = local.borrow().uplink().clone();
        if !cfg.enabled {
            metrics.clear_gateway();
            metrics.upstream_up.reset();
            metrics.upstream_rtt.reset();
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        let started = tokio::time::Instant::now();
        if cfg.gateway {
            for (family, route) in default_routes() {
                let exported = {
                    let mut seen = metrics.seen.lock_or_recover();
                    if route.is_some() {
                        seen.insert(family);
                    }
                    seen.contains(family)
                };
                if !exported {
                    continue;
                }
                let now = route
                    .as_ref()
                    .map(|r| (r.gateway.to_string(), r.interface.clone()));
                {
                    let mut info = metrics.info.lock_or_recover();
                    if info.get(family) != now.as_ref() {
                        if let Some((gw, ifc)) = info.remove(family) {
                            let _ = metrics
                                .gateway_info
                                .remove_label_values(&[family, &gw, &ifc]);
                        }
                        if let Some(n) = now {
                            info.insert(family, n);
                        }
                    }
                }
                let Some(route) = route else {
                    metrics.gateway_up.with_label_values(&[family]).set(0.0);
                    continue;
                };
                metrics
                    .gateway_info
                    .with_label_values(&[family, &route.gateway.to_string(), &route.interface])
                    .set(1.0);
                if let IpAddr::V6(v6) = route.gateway
                    && v6.is_unicast_link_local()
                {
                    // A link-local gateway needs the interface as scope, which the ICMP socket
                    // layer does not take yet: report the route, not a false "down".
                    metrics.gateway_up.remove_label_values(&[family]).ok();
                    continue;
                }
                match ping_once(&probe, &route.gateway.to_string(), cfg.timeout).await {
                    Some(rtt) => {
                        metrics.gateway_up.with_label_values(&[family]).set(1.0);
                        metrics
                            .gateway_rtt
                            .with_label_values(&[family])
                            .set(rtt.as_secs_f64());
                    }
                    None => metrics.gateway_up.with_label_values(&[family]).set(0.0),
                }
            }
        } else {
            metrics.clear_gateway();
        }
        let label = cfg.upstream.as_ref().map(|h| h.to_string());
        if label != upstream_label {
            metrics.upstream_up.reset();
            metrics.upstream_rtt.reset();
            upstream_label = label.clone();
        }
        if let Some(host) = label {
            match ping_once(&probe, &host, cfg.timeout).await {
                Some(rtt) => {
                    metrics.upstream_up.with_label_values(&[&host]).set(1.0);
                    metrics
                        .upstream_rtt
                        .with_label_values(&[&host])
                        .set(rtt.as_secs_f64());
                }
                None => metrics.upstream_up.with_label_values(&[&host]).set(0.0),
            }
        }
        tokio::time::sleep_until(started + cfg.interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The loop follows the local config's watch and ends once its sender is gone (the
    /// device's parts dropped), as it ended with the daemon before.
    #[tokio::test]
    async fn the_loop_ends_when_the_local_config_is_gone() {
        let local = watch::Sender::new(Arc::new(Config::default()));
        let metrics = UplinkMetrics::new(&prometheus::Registry::new());
        let task = tokio::spawn(run(local.subscribe(), metrics));
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(
            !task.is_finished(),
            "uplink off: the loop waits for a config"
        );
        drop(local);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the loop ends within a second of the sender going")
            .unwrap();
    }

    const ROUTE: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t0102000A\t0003\t0\t0\t100\t00000000\t0\t0\t0
wlan0\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0
eth0\t0002000A\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0
";

    #[test]
    fn ipv4_default_route_with_the_lowest_metric() {
        let r = parse_ipv4_routes(ROUTE).unwrap();
        assert_eq!(r.gateway, "10.0.2.1".parse::<IpAddr>().unwrap());
        assert_eq!(r.interface, "eth0");
        assert_eq!(r.metric, 100);
    }

    #[test]
    fn no_default_route_and_garbage_give_none() {
        assert_eq!(parse_ipv4_routes(""), None);
        assert_eq!(
            parse_ipv4_routes("Iface\n\u{0}\u{ff}garbage zz zz zz\n"),
            None
        );
        // Down (flags 0002) and reject routes do not count.
        assert_eq!(
            parse_ipv4_routes("h\neth0\t00000000\t0102000A\t0002\t0\t0\t0\t00000000\t0\t0\t0\n"),
            None
        );
    }

    #[test]
    fn ipv6_default_route() {
        let text = "\
00000000000000000000000000000000 00 00000000000000000000000000000000 00 20010db8000000000000000000000001 00000400 00000001 00000000 00000003     eth0
20010db8000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo
";
        let r = parse_ipv6_routes(text).unwrap();
        assert_eq!(r.gateway, "2001:db8::1".parse::<IpAddr>().unwrap());
        assert_eq!(r.metric, 0x400);
        assert_eq!(parse_ipv6_routes("nonsense\n"), None);
    }
}
