//! The store's and the remote_write endpoints' settings, from the config.

use std::path::{Path, PathBuf};

use vantage_store::config::StoreConfig;
use vantage_store::{BackendKind, Labels, StoreOptions};

/// The store directory of a backend under the data directory (each engine keeps its own, so
/// switching engines never makes one read the other's files).
pub fn store_dir(data_dir: &Path, backend: BackendKind) -> PathBuf {
    match backend {
        BackendKind::Fjall => data_dir.join("store"),
        BackendKind::Sled => data_dir.join("store-sled"),
    }
}

pub fn store_options(data_dir: &Path, c: &StoreConfig) -> StoreOptions {
    let mut backend: BackendKind = c.backend.parse().unwrap_or_default();
    if !backend.available() {
        tracing::error!(
            "store: this build has no {} backend; using fjall",
            backend.as_str()
        );
        backend = BackendKind::Fjall;
    }
    let mut o = StoreOptions::new(store_dir(data_dir, backend));
    o.backend = backend;
    o.max_bytes = c.max_bytes;
    o.max_age = c.max_age;
    o.commit_interval = c.commit_interval;
    o.commit_samples = c.commit_samples;
    o.max_pending = c.max_pending;
    o
}

/// The labels every series shipped to an endpoint carries beside its own: the endpoint's
/// `labels`, then the device's labels (as on `/metrics`), then the identity dashboards select
/// on, `job="vantage"` and `instance=<device name>`, unless set before. A central Prometheus
/// that scrapes the device with the same `job` and `instance` sees the pushed and scraped
/// series as the same series (docs/FLEET.md).
pub fn shipped_labels(
    endpoint: &Labels,
    device_labels: &[(String, String)],
    device_name: &str,
) -> Labels {
    let mut l = endpoint.clone();
    for (k, v) in device_labels {
        l.entry(k.clone()).or_insert_with(|| v.clone());
    }
    l.entry("job".into()).or_insert_with(|| "vantage".into());
    l.entry("instance".into())
        .or_insert_with(|| device_name.to_string());
    l
}

#[cfg(test)]
mod identity_tests {
    use super::*;

    #[test]
    fn shipped_series_carry_the_device_labels_job_and_instance_unless_set() {
        let device = [
            ("device".to_string(), "pi7".to_string()),
            ("site".to_string(), "hq".to_string()),
        ];
        let l = shipped_labels(&Labels::new(), &device, "pi7");
        let want: Labels = [
            ("device", "pi7"),
            ("instance", "pi7"),
            ("job", "vantage"),
            ("site", "hq"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(l, want);
        // The endpoint's own labels win over the device's and over the defaults.
        let own: Labels = [("instance", "probe1.corp"), ("job", "edge"), ("site", "x")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let l = shipped_labels(&own, &device, "pi7");
        assert_eq!(l.get("instance").map(String::as_str), Some("probe1.corp"));
        assert_eq!(l.get("job").map(String::as_str), Some("edge"));
        assert_eq!(l.get("site").map(String::as_str), Some("x"));
        assert_eq!(l.get("device").map(String::as_str), Some("pi7"));
    }
}
