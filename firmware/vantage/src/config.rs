//! The config file as the daemon reads it: the core's sections plus those the daemon and its
//! crates own (`[store]` and `[[remote_write]]` by `vantage-store`, `[leds]` by `vantage-leds`,
//! `[uplink]`, `[discovery]` and `[provisioning]` by `fleet`, `[update]` by `update`),
//! registered with the core's loader. The daemon, `vantage check-config` and the page's
//! validation all load through here, so their errors are the same.

use std::path::Path;

use vantage_core::config::{Registered, register};
use vantage_core::{Config, ConfigErrors};
use vantage_leds::LedsConfig;
use vantage_store::config::StoreConfig;
use vantage_store::remote_write::config::RemoteWrites;

use crate::fleet::config::{Discovery, ProvisioningSection, Uplink};
use crate::update::offer::UpdateSection;

/// The top-level sections read outside the core.
pub const SECTIONS: &[Registered] = &[
    register::<StoreConfig>(),
    register::<RemoteWrites>(),
    register::<LedsConfig>(),
    register::<Uplink>(),
    register::<Discovery>(),
    register::<ProvisioningSection>(),
    register::<UpdateSection>(),
];

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    Config::load_with(path, SECTIONS)
}

/// Parses and validates config text; `file` names it in error messages.
pub fn parse(text: &str, file: &str) -> Result<Config, ConfigErrors> {
    Config::parse_with(text, file, SECTIONS)
}

/// Parses a provisioned targets file: `[defaults]`, `[[targets]]` and `[update]` only, since a
/// central file must not rename the device, change its uplink or point it at another URL.
pub fn parse_provisioned(text: &str, file: &str) -> Result<Config, ConfigErrors> {
    Config::parse_provisioned_with(text, file, SECTIONS)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::fleet::config::{self as fleet, FleetSections};
    use crate::update::offer::UpdateOffered;

    const TARGET: &str = "[[targets]]\nname = \"a\"\nhost = \"127.0.0.1\"\nprobes = [\"ping\"]\n";

    vantage_testkit::config_file_tests!(load);

    #[test]
    fn fleet_sections_load_with_their_defaults() {
        let f = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testdata/good/fleet.toml");
        let c = load(&f).unwrap();
        assert_eq!(c.device.name.as_deref(), Some("probe-office-1"));
        assert!(c.uplink().enabled && c.uplink().gateway);
        assert_eq!(
            c.uplink().upstream,
            vantage_core::config::parse_host("192.0.2.254").ok()
        );
        assert!(c.discovery().mdns);
        let p = c.provisioning().unwrap();
        assert_eq!(p.refresh, Duration::from_secs(300));
        assert_eq!(p.timeout, fleet::PROVISIONING_TIMEOUT);
        assert!(p.token.is_none() && p.token_file.is_some());

        // Absent sections: nothing goes out on the network by itself.
        let bare = parse(TARGET, "t").unwrap();
        assert!(!bare.uplink().enabled && !bare.discovery().mdns);
        assert!(bare.provisioning().is_none() && bare.update_offer().is_none());
        assert_eq!(bare.uplink().interval, fleet::UPLINK_INTERVAL);
        // A present but empty section turns the feature on with its defaults.
        let on = parse("[uplink]\n[discovery]\n", "t").unwrap();
        let u = on.uplink();
        assert!(u.enabled && u.gateway && u.upstream.is_none() && on.discovery().mdns);
        assert_eq!(
            (u.interval, u.timeout),
            (fleet::UPLINK_INTERVAL, fleet::UPLINK_TIMEOUT)
        );
        assert!(
            !parse("[discovery]\nmdns = false\n", "t")
                .unwrap()
                .discovery()
                .mdns
        );
        // A config read by the core alone has none of them: the accessors say off.
        let core = Config::parse(TARGET, "t").unwrap();
        assert!(!core.uplink().enabled && core.provisioning().is_none());
    }

    #[test]
    fn they_serialize_under_their_keys_as_before() {
        let c = parse(
            "[uplink]\nupstream = \"192.0.2.254\"\n[provisioning]\nurl = \"https://x.example/t.toml\"\ntoken = \"hunter2\"\n",
            "t",
        )
        .unwrap();
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["uplink"]["enabled"], true);
        assert_eq!(json["uplink"]["upstream"], serde_json::json!("192.0.2.254"));
        assert_eq!(json["discovery"], serde_json::json!({ "mdns": false }));
        assert_eq!(json["provisioning"]["url"], "https://x.example/t.toml");
        assert!(json["provisioning"].get("token").is_none(), "{json}");
        assert!(!json.to_string().contains("hunter2"));
        assert!(json["update"].is_null());
        assert!(serde_json::to_value(parse("", "t").unwrap()).unwrap()["provisioning"].is_null());
    }

    #[test]
    fn an_unknown_section_is_told_every_section_there_is() {
        let e = parse("[uplnk]\n", "t").unwrap_err();
        assert_eq!(
            e.to_string(),
            "t:1:2: unknown field `uplnk`, expected one of `defaults`, `device`, \
             `probe_endpoint`, `targets`, `store`, `remote_write`, `leds`, `uplink`, \
             `discovery`, `provisioning`, `update`"
        );
    }

    #[test]
    fn a_provisioned_file_may_set_targets_and_update_only() {
        for (section, line) in [
            ("[provisioning]\nurl = \"https://x.example\"\n", 5),
            ("[uplink]\n", 5),
            ("[discovery]\n", 5),
            ("[device]\nname = \"x\"\n", 5),
            ("[leds]\n", 5),
        ] {
            let e = parse_provisioned(&format!("{TARGET}{section}"), "remote").unwrap_err();
            assert_eq!(e.errors[0].line, Some(line), "{e}");
            assert_eq!(
                e.errors[0].message,
                "only the device's own config may set this section"
            );
        }
        let ok = parse_provisioned(
            &format!(
                "[defaults]\ninterval = \"2s\"\n{TARGET}[update]\nurl = \"https://u.example/b.raucb\"\n\
                 version = \"1.2.0\"\nsha256 = \"{}\"\n",
                "ab".repeat(32)
            ),
            "remote",
        )
        .unwrap();
        assert_eq!(ok.targets.len(), 1);
        assert_eq!(ok.update_offer().unwrap().version, "1.2.0");
    }
}
