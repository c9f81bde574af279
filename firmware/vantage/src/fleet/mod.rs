//! Running many devices: the device's identity on its series, the mDNS announcement,
//! `vantage discover`, uplink probing and central provisioning.

pub mod announce;
pub mod config;
pub mod discover;
pub mod provisioning;
pub mod uplink;

use prometheus::proto::{LabelPair, MetricFamily};
use vantage_core::Config;

/// DNS-SD service type every device announces.
pub const SERVICE_TYPE: &str = "_vantage._tcp.local.";

/// The device's name: `[device].name`, else the host name made label- and DNS-safe.
pub fn device_name(config: &Config) -> String {
    if let Some(n) = &config.device.name {
        return n.clone();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    sanitize_name(host.trim())
}

/// Letters, digits, '.', '_' and '-' (what `[device].name` allows), at most 64 characters.
pub fn sanitize_name(raw: &str) -> String {
    let s: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(vantage_core::defaults::MAX_NAME_LEN)
        .collect();
    let s = s.trim_start_matches(|c: char| !c.is_ascii_alphanumeric());
    if s.is_empty() {
        "vantage".into()
    } else {
        s.to_string()
    }
}

/// `device="NAME"` (when `[device].name` is set) plus `[device].labels`: the labels on every
/// series of the device. Without a `[device]` section the series stay as they are; Prometheus'
/// `instance` already tells devices apart.
pub fn device_labels(config: &Config) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = config
        .device
        .name
        .iter()
        .map(|n| ("device".to_string(), n.clone()))
        .collect();
    v.extend(
        config
            .device
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    v
}

/// Adds `labels` to every metric of `families` that does not already carry a label of that
/// name: a target's own `site` wins over the device's `site`.
pub fn add_labels(families: &mut [MetricFamily], labels: &[(String, String)]) {
    if labels.is_empty() {
        return;
    }
    for f in families.iter_mut() {
        for m in f.mut_metric().iter_mut() {
            let mut pairs: Vec<LabelPair> = m.take_label();
            for (k, v) in labels {
                if !pairs.iter().any(|p| p.name() == k) {
                    let mut p = LabelPair::default();
                    p.set_name(k.clone());
                    p.set_value(v.clone());
                    pairs.push(p);
                }
            }
            pairs.sort_by(|a, b| a.name().cmp(b.name()));
            m.set_label(pairs);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_become_valid_device_names() {
        assert_eq!(sanitize_name("probe-1.lan"), "probe-1.lan");
        assert_eq!(sanitize_name("héllo wörld"), "h-llo-w-rld");
        assert_eq!(sanitize_name("--x"), "x");
        assert_eq!(sanitize_name(""), "vantage");
        assert_eq!(sanitize_name(&"a".repeat(100)).len(), 64);
    }

    #[test]
    fn device_labels_reach_every_series_but_do_not_override_a_targets_own() {
        let cfg = crate::config::parse(
            "[device]\nname = \"dev1\"\nlabels = { site = \"hq\", room = \"r1\" }\n[[targets]]\nname = \"a\"\nhost = \"127.0.0.1\"\nprobes = [\"ping\"]\nlabels = { site = \"branch\" }\n",
            "t",
        )
        .unwrap();
        let m = crate::metrics::Metrics::new();
        m.apply(&cfg);
        m.set_device_labels(device_labels(&cfg));
        let text = m.render();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.contains("device=\"dev1\""), "{line}");
            assert!(line.contains("room=\"r1\""), "{line}");
        }
        assert!(text.contains(
            "vantage_probe_success{device=\"dev1\",probe=\"ping\",room=\"r1\",site=\"branch\",target=\"a\"} 0"
        ));
        assert!(text.contains("vantage_targets{device=\"dev1\",room=\"r1\",site=\"hq\"} 1"));
    }
}
