//! `[leds]` as the loader reads it with the section registered: every good file in
//! `testdata/` loads, every bad one fails with the message on its first line
//! (`# expect: LINE: FIELD: MESSAGE`), and the README quotes the section's ranges.

use std::path::Path;
use std::time::Duration;

use vantage_core::config::{Registered, parse_duration, register};
use vantage_core::{Config, ConfigErrors};
use vantage_leds::{LedBackendKind, LedRole, LedsConfig, LedsSection};

const SECTIONS: &[Registered] = &[register::<LedsConfig>()];

fn load(path: &Path) -> Result<Config, ConfigErrors> {
    Config::load_with(path, SECTIONS)
}

vantage_testkit::config_file_tests!(load);

#[test]
fn leds_section_is_read() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testdata/good");
    let c = load(&dir.join("leds-sysfs.toml")).unwrap();
    assert_eq!(c.leds().backend, LedBackendKind::Sysfs);
    assert_eq!(
        c.leds().identify_timeout,
        std::time::Duration::from_secs(600)
    );
    let roles: Vec<_> = c
        .leds()
        .leds
        .iter()
        .map(|l| (l.role, l.name.as_str()))
        .collect();
    assert_eq!(
        roles,
        [
            (LedRole::Health, "vantage:green"),
            (LedRole::Targets, "vantage:amber"),
            (LedRole::System, "vantage:red")
        ]
    );
    let g = load(&dir.join("leds-gpio.toml")).unwrap();
    assert_eq!(g.leds().backend, LedBackendKind::Gpio);
    assert_eq!(g.leds().leds[0].pin, Some(17));
    assert_eq!(g.leds().leds[0].name, "gpio17");
    assert!(!g.leds().leds[0].active_low);
    assert_eq!(g.leds().leds[1].role, LedRole::Problem);
    assert!(g.leds().leds[1].active_low);
    // Without [leds], nothing is driven.
    let m = Config::parse_with("", "m.toml", SECTIONS).unwrap();
    assert_eq!(m.leds().backend, LedBackendKind::None);
    assert!(m.leds().leds.is_empty());
    // The log backend shows the three-LED layout when none is listed.
    let l = Config::parse_with("[leds]\nbackend = \"log\"\n", "l.toml", SECTIONS).unwrap();
    assert_eq!(l.leds().leds.len(), 3);
}

#[test]
fn only_the_device_and_a_loader_that_knows_it_read_leds() {
    let text = "[leds]\nbackend = \"log\"\n";
    let e = Config::parse_provisioned_with(text, "remote", SECTIONS).unwrap_err();
    assert_eq!(e.errors[0].line, Some(1));
    assert_eq!(e.errors[0].field, "leds");
    assert_eq!(
        e.errors[0].message,
        "only the device's own config may set this section"
    );
    // The core alone does not know the section: an unknown key, like any other.
    let e = Config::parse(text, "core").unwrap_err();
    assert!(e.errors[0].message.contains("unknown field `leds`"), "{e}");
}

#[test]
fn the_readme_quotes_the_documented_ranges() {
    use vantage_testkit::{readme_duration, readme_range};
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("README.md");
    let duration = |s: &str| readme_duration(s, |s| parse_duration(s).ok());
    for (field, b) in [
        ("identify_timeout", vantage_leds::IDENTIFY_TIMEOUT_RANGE),
        ("stale_after", vantage_leds::STALE_AFTER_RANGE),
    ] {
        let (lo, hi) = readme_range(&readme, "`[leds]`", field);
        let readme: (Option<Duration>, Option<Duration>) = (duration(lo), duration(hi));
        assert_eq!(readme, (Some(b.min), Some(b.max)), "`[leds]` {field}");
    }
}
