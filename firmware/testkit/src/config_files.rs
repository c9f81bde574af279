//! The config tests' files: every `tests/testdata/good/*.toml` of a crate loads, and every
//! `tests/testdata/bad/*.toml` fails with the problem its first line names
//! (`# expect: LINE: FIELD: MESSAGE`). The loader's message is read as the config loader
//! writes it: one problem per `FILE:LINE:COLUMN: FIELD: MESSAGE`, the place left out when a
//! problem has none.

use std::fmt::Display;
use std::path::{Path, PathBuf};

/// The `.toml` files of `tests/testdata/SUB` under `manifest_dir`, sorted; at least one.
pub fn testdata_files(manifest_dir: &str, sub: &str) -> Vec<PathBuf> {
    let dir = Path::new(manifest_dir).join("tests/testdata").join(sub);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .toml files in {}", dir.display());
    files
}

/// The two tests of a crate's config files, written where they are used:
/// `vantage_testkit::config_file_tests!(load);` with `load: Fn(&Path) -> Result<_, impl Display>`
/// defines `good_files_load` and `each_bad_file_fails_with_its_message` for the calling crate's
/// `tests/testdata`.
#[macro_export]
macro_rules! config_file_tests {
    ($load:expr) => {
        #[test]
        fn good_files_load() {
            $crate::good_files_load(env!("CARGO_MANIFEST_DIR"), |f| ($load)(f).map(|_| ()));
        }

        #[test]
        fn each_bad_file_fails_with_its_message() {
            $crate::bad_files_fail_as_expected(env!("CARGO_MANIFEST_DIR"), |f| {
                ($load)(f).map(|_| ())
            });
        }
    };
}

/// Every good file loads with `load`.
pub fn good_files_load<E: Display>(manifest_dir: &str, load: impl Fn(&Path) -> Result<(), E>) {
    for f in testdata_files(manifest_dir, "good") {
        if let Err(e) = load(&f) {
            panic!("{e}");
        }
    }
}

/// Every bad file fails to load with a problem on the line its first line names, whose
/// `FIELD: MESSAGE` contains the expected text; all mismatches are reported together.
pub fn bad_files_fail_as_expected<E: Display>(
    manifest_dir: &str,
    load: impl Fn(&Path) -> Result<(), E>,
) {
    let mut failures = Vec::new();
    for f in testdata_files(manifest_dir, "bad") {
        let text = std::fs::read_to_string(&f).unwrap();
        let want = text
            .lines()
            .next()
            .unwrap_or_default()
            .strip_prefix("# expect: ");
        let want = want
            .unwrap_or_else(|| panic!("{}: the first line names the expected error", f.display()));
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        let all = match load(&f) {
            Ok(()) => {
                failures.push(format!("{name}: loaded, want {want:?}"));
                continue;
            }
            Err(e) => e.to_string(),
        };
        let prefix = format!("{}:", f.display());
        assert!(all.starts_with(&prefix), "{all}");
        let (want_line, want_rest) = want.split_once(": ").unwrap();
        let hit = all
            .split(&format!("\n{prefix}"))
            .map(|p| p.strip_prefix(&prefix).unwrap_or(p).trim_start())
            .any(|p| placed_at(p, want_line).is_some_and(|rest| rest.contains(want_rest)));
        if !hit {
            failures.push(format!("{name}: want {want:?}\n   got {all}"));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// `FIELD: MESSAGE` of a problem written `LINE:[COLUMN:] FIELD: MESSAGE` when its line is
/// `line`.
fn placed_at<'a>(problem: &'a str, line: &str) -> Option<&'a str> {
    let (at, rest) = problem.split_once(' ')?;
    let mut parts = at.strip_suffix(':')?.split(':');
    (parts.next()? == line).then_some(rest)
}

#[cfg(test)]
mod tests {
    use super::placed_at;

    #[test]
    fn a_problem_is_placed_by_its_line() {
        assert_eq!(
            placed_at("3:5: store.max_size: too big", "3"),
            Some("store.max_size: too big")
        );
        assert_eq!(placed_at("3: leds: unknown", "3"), Some("leds: unknown"));
        assert_eq!(placed_at("13:1: x: y", "3"), None);
        assert_eq!(placed_at("no place here", "3"), None);
    }
}
