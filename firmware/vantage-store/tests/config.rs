//! `[store]` and `[[remote_write]]` as the loader reads them with the sections registered:
//! every good file in `testdata/` loads, every bad one fails with the message on its first line
//! (`# expect: LINE: FIELD: MESSAGE`), and the README quotes the sections' ranges.

use std::path::Path;
use std::time::Duration;

use vantage_core::config::{Registered, parse_duration, register};
use vantage_core::defaults::Bounds;
use vantage_core::{Config, ConfigErrors};
use vantage_store::config::{self as store, StoreConfig, StoreSections};
use vantage_store::remote_write::config::{self as rw, Auth, RemoteWrites, SendMode};

const SECTIONS: &[Registered] = &[register::<StoreConfig>(), register::<RemoteWrites>()];

fn load(path: &Path) -> Result<Config, ConfigErrors> {
    Config::load_with(path, SECTIONS)
}

vantage_testkit::config_file_tests!(load);

#[test]
fn store_and_remote_write_sections() {
    let c = load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testdata/good/store.toml"))
        .unwrap();
    assert_eq!(c.store().backend, "fjall");
    assert_eq!(c.store().max_bytes, 2 << 30);
    assert_eq!(c.store().max_age, Duration::from_secs(14 * 86400));
    assert_eq!(c.store().commit_interval, Duration::from_secs(2));
    assert_eq!(c.store().commit_samples, 5000);
    assert_eq!(c.remote_write().len(), 2);
    let rw = &c.remote_write()[0];
    assert_eq!(rw.name, "central");
    assert_eq!(rw.max_samples_per_second, 2000);
    assert_eq!(rw.send, SendMode::Gaps);
    assert_eq!(rw.scrape_gap, Duration::from_secs(120));
    assert_eq!(
        rw.labels.get("instance").map(String::as_str),
        Some("pi-office")
    );
    match &rw.auth {
        Auth::Basic {
            username, password, ..
        } => {
            assert_eq!(username, "vantage");
            assert_eq!(password.0, "s3cret");
        }
        other => panic!("{other:?}"),
    }
    // Secrets never show in Debug output.
    assert!(!format!("{c:?}").contains("s3cret"));
    let other = &c.remote_write()[1];
    assert_eq!(other.name, "127.0.0.1:9090");
    assert!(matches!(other.auth, Auth::Bearer { .. }));
    assert_eq!(other.send, SendMode::All);
    assert_eq!(other.scrape_gap, rw::REMOTE_WRITE_SCRAPE_GAP);
    // Without the sections, the defaults.
    let m = Config::parse_with(
        "[[targets]]\nname = \"a\"\nhost = \"::1\"\nprobes = [\"ping\"]\n",
        "m",
        SECTIONS,
    )
    .unwrap();
    assert_eq!(m.store().max_bytes, store::STORE_MAX_BYTES);
    assert!(m.remote_write().is_empty());
}

#[test]
fn password_files_are_read() {
    let dir = std::env::temp_dir().join(format!("vantage-pw-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pw = dir.join("pw");
    std::fs::write(&pw, "from-file\n").unwrap();
    let text = format!(
        "[[remote_write]]\nurl = \"https://p.example/w\"\nbasic_auth = {{ username = \"u\", password_file = {:?} }}\n[[targets]]\nname = \"a\"\nhost = \"::1\"\nprobes = [\"ping\"]\n",
        pw.display().to_string()
    );
    let c = Config::parse_with(&text, "t", SECTIONS).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    match &c.remote_write()[0].auth {
        Auth::Basic { password, .. } => assert_eq!(password.0, "from-file"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_readme_quotes_the_documented_ranges() {
    use vantage_testkit::readme_range_mismatches;
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("README.md");
    let ints: &[(&str, &str, Bounds<i64>)] = &[
        (
            "`[store]`",
            "commit_samples",
            store::STORE_COMMIT_SAMPLES_RANGE,
        ),
        ("`[store]`", "max_pending", store::STORE_MAX_PENDING_RANGE),
        (
            "`[[remote_write]]`",
            "max_samples_per_send",
            rw::REMOTE_WRITE_SAMPLES_PER_SEND_RANGE,
        ),
        (
            "`[[remote_write]]`",
            "max_samples_per_second",
            rw::REMOTE_WRITE_SAMPLES_PER_SECOND_RANGE,
        ),
    ];
    let durations: &[(&str, &str, Bounds<Duration>)] = &[
        ("`[store]`", "max_age", store::STORE_MAX_AGE_RANGE),
        (
            "`[store]`",
            "commit_interval",
            store::STORE_COMMIT_INTERVAL_RANGE,
        ),
        (
            "`[[remote_write]]`",
            "timeout",
            rw::REMOTE_WRITE_TIMEOUT_RANGE,
        ),
    ];
    let ints: Vec<_> = ints
        .iter()
        .map(|(s, f, b)| (*s, *f, b.min, b.max))
        .collect();
    let durations: Vec<_> = durations
        .iter()
        .map(|(s, f, b)| (*s, *f, b.min, b.max))
        .collect();
    let wrong = readme_range_mismatches(&readme, &ints, &durations, |s| parse_duration(s).ok());
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
