//! The store's and shipping's state for the status LEDs and the web page's status.

use std::sync::atomic::Ordering;
use vantage_core::LockExt;

use vantage_leds::{StoreHealth, Uplink};

use super::Storage;

/// What the store means for the status LEDs. A full store is a ring buffer doing its job;
/// it is worth a light only while samples wait for an unreachable uplink, because the oldest
/// unshipped ones are the next to go.
fn store_health(healthy: bool, disk_bytes: u64, max_bytes: u64, uplink: Uplink) -> StoreHealth {
    if !healthy {
        StoreHealth::Failing
    } else if uplink == Uplink::Unreachable
        && disk_bytes.saturating_mul(10) >= max_bytes.saturating_mul(9)
    {
        StoreHealth::NearFull
    } else {
        StoreHealth::Ok
    }
}

impl Storage {
    /// The shipping and store states the status LEDs show.
    pub fn led_inputs(&self) -> (Uplink, StoreHealth) {
        let uplink = match self
            .shipping
            .lock_or_recover()
            .as_ref()
            .and_then(|s| s.shipper.uplink_up())
        {
            None => Uplink::Unknown,
            Some(true) => Uplink::Reachable,
            Some(false) => Uplink::Unreachable,
        };
        let store = match &self.store {
            None => StoreHealth::Failing,
            Some(s) => {
                let st = s.stats();
                store_health(
                    st.healthy(),
                    st.disk_bytes,
                    self.store_config.max_bytes,
                    uplink,
                )
            }
        };
        (uplink, store)
    }

    /// The store's fill and the shipping state, for the web page's status. Endpoint URLs are
    /// left out: they may carry credentials.
    pub fn status_json(&self) -> serde_json::Value {
        use serde_json::json;
        let store = match &self.store {
            None => json!({ "configured": true, "healthy": false,
                             "error": "the store could not be opened; see the log" }),
            Some(s) => {
                let st = s.stats();
                let max = self.store_config.max_bytes;
                json!({
                    "configured": true,
                    "healthy": st.healthy(),
                    "error": st.error,
                    "backend": st.backend,
                    "samples": st.samples,
                    "disk_bytes": st.disk_bytes,
                    "max_bytes": max,
                    "fill": if max == 0 { 0.0 } else { st.disk_bytes as f64 / max as f64 },
                    "oldest_ms": st.oldest_ms,
                    "newest_ms": st.newest_ms,
                    "dropped": st.dropped_total(),
                })
            }
        };
        let shipping = self.shipping.lock_or_recover();
        let remote_write = match shipping.as_ref() {
            None => json!({ "configured": false }),
            Some(sh) => {
                let endpoints: Vec<_> = sh
                    .shipper
                    .endpoints()
                    .iter()
                    .map(|e| {
                        let last = e.last_success_ms.load(Ordering::Relaxed);
                        json!({
                            "name": e.name,
                            "up": e.up.load(Ordering::Relaxed),
                            "backlog": e.backlog.load(Ordering::Relaxed),
                            "samples_sent": e.samples_sent.load(Ordering::Relaxed),
                            "last_success_ms": (last > 0).then_some(last),
                            "last_error": e.last_error.lock_or_recover().clone(),
                            "rejected_samples": e.samples_rejected.load(Ordering::Relaxed),
                            "scrape_collisions": e.samples_collided.load(Ordering::Relaxed),
                            "last_rejection": e.last_rejection.lock_or_recover().clone(),
                        })
                    })
                    .collect();
                let state = match sh.shipper.uplink_up() {
                    Some(true) => "shipping",
                    Some(false) => "uplink down",
                    None => "unknown",
                };
                json!({ "configured": true, "state": state, "endpoints": endpoints })
            }
        };
        json!({ "store": store, "remote_write": remote_write })
    }
}

#[cfg(test)]
mod led_tests {
    use super::*;

    #[test]
    fn a_full_store_lights_only_while_the_uplink_is_down() {
        let gib = 1u64 << 30;
        assert_eq!(
            store_health(false, 0, gib, Uplink::Reachable),
            StoreHealth::Failing
        );
        assert_eq!(
            store_health(true, gib, gib, Uplink::Reachable),
            StoreHealth::Ok
        );
        assert_eq!(
            store_health(true, gib, gib, Uplink::Unknown),
            StoreHealth::Ok
        );
        assert_eq!(
            store_health(true, gib / 2, gib, Uplink::Unreachable),
            StoreHealth::Ok
        );
        assert_eq!(
            store_health(true, gib / 100 * 95, gib, Uplink::Unreachable),
            StoreHealth::NearFull
        );
        assert_eq!(
            store_health(true, gib / 100 * 89, gib, Uplink::Unreachable),
            StoreHealth::Ok
        );
    }
}
