//! Corruption injection: a damaged store opens, says what it lost, and keeps working.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use vantage_core::ProbeKind;
use vantage_store::{DropReason, Store, StoreStats};

const COMMITS: i64 = 16;
const PER_COMMIT: i64 = 5_000;

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if e.metadata().unwrap().len() > 0 && !p.ends_with("lock") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// A store with enough data to have flushed tables and a live journal.
fn populated(dir: &Path) -> i64 {
    let mut o = opts(dir);
    o.max_bytes = 8 << 20;
    let s = Store::open(o).unwrap();
    let t0 = now_ms() - 3_600_000;
    for c in 0..COMMITS {
        for i in 0..PER_COMMIT {
            let n = c * PER_COMMIT + i;
            s.append(
                &ping(&format!("t{}", n % 50), t0 + n, 1000 + n as u64),
                &labels("x"),
            );
        }
        s.flush().unwrap();
    }
    t0
}

fn reopen(dir: &Path) -> Store {
    let mut o = opts(dir);
    o.max_bytes = 8 << 20;
    Store::open(o).expect("a damaged store still opens")
}

/// Samples of the populated targets that can be read back and attributed.
fn total(s: &Store, t0: i64) -> u64 {
    let all = s
        .read_from(vantage_store::Cursor::default(), usize::MAX)
        .unwrap();
    all.samples
        .iter()
        .filter(|x| x.timestamp_ms >= t0)
        .filter(|x| {
            s.series(x.series)
                .is_some_and(|k| k.target.starts_with('t'))
        })
        .count() as u64
}

/// After damage: the store opens, the loss is counted (or there is none), writes work, and a
/// second open does not find more damage (no crash or quarantine loop).
fn check(dir: &Path, t0: i64, what: &str) -> StoreStats {
    let written = (COMMITS * PER_COMMIT) as u64;
    let s = reopen(dir);
    let (blocks, bad) = s.verify().unwrap();
    let st = s.stats();
    let present = total(&s, t0);
    eprintln!(
        "{what}: {present} of {written} samples readable; {} counted dropped as corrupt, {} damaged blocks, {} quarantined ({blocks} blocks verified, {bad} bad)",
        st.dropped(DropReason::Corrupt),
        st.corrupt_blocks,
        st.quarantined
    );
    assert!(present <= written);
    if present < written {
        assert!(
            st.corrupt_blocks > 0 || st.quarantined > 0,
            "{what}: {} samples lost without a count: {st:?}",
            written - present
        );
    }
    assert_eq!(
        st.samples, present,
        "{what}: stats agree with what is readable"
    );
    // Writes work.
    let now = now_ms();
    s.append(&ping("after", now, 42), &labels("x"));
    s.flush().unwrap();
    assert_eq!(
        s.query("after", ProbeKind::PING, now, now).unwrap().len(),
        1
    );
    drop(s);
    let s = reopen(dir);
    let again = s.stats();
    assert_eq!(
        again.quarantined, 0,
        "{what}: second open quarantined: {again:?}"
    );
    assert_eq!(
        s.query("after", ProbeKind::PING, now, now).unwrap().len(),
        1
    );
    // Data an engine could not read at first may come back; none may go missing.
    assert!(total(&s, t0) >= present, "{what}: second open lost more");
    st
}

fn newest(dir: &Path) -> PathBuf {
    files(dir)
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().modified().unwrap())
        .unwrap()
}

fn flip(p: &Path, at: u64, n: usize) {
    let mut b = std::fs::read(p).unwrap();
    let at = (at as usize).min(b.len().saturating_sub(n));
    let end = (at + n).min(b.len());
    for x in &mut b[at..end] {
        *x ^= 0x5a;
    }
    std::fs::write(p, b).unwrap();
}

#[test]
fn truncated_newest_file() {
    let d = tempfile::tempdir().unwrap();
    let t0 = populated(d.path());
    let f = newest(&d.path().join("store"));
    let len = std::fs::metadata(&f).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&f)
        .unwrap()
        .set_len(len / 2 + 3)
        .unwrap();
    check(d.path(), t0, &format!("truncate {}", f.display()));
}

#[test]
fn flipped_bytes_in_every_file() {
    // One file at a time, each in a fresh store.
    let probe = tempfile::tempdir().unwrap();
    populated(probe.path());
    let base = probe.path().join("store");
    let names: Vec<PathBuf> = files(&base)
        .into_iter()
        .map(|p| p.strip_prefix(&base).unwrap().to_path_buf())
        .collect();
    assert!(names.len() >= 4, "{names:?}");
    for name in names {
        let d = tempfile::tempdir().unwrap();
        let t0 = populated(d.path());
        let f = d.path().join("store").join(&name);
        if !f.exists() {
            continue;
        }
        let len = std::fs::metadata(&f).unwrap().len();
        flip(&f, len / 2, 16);
        check(
            d.path(),
            t0,
            &format!("flip 16 bytes in {}", name.display()),
        );
    }
}

#[test]
fn deleted_file() {
    let probe = tempfile::tempdir().unwrap();
    populated(probe.path());
    let base = probe.path().join("store");
    let names: Vec<PathBuf> = files(&base)
        .into_iter()
        .map(|p| p.strip_prefix(&base).unwrap().to_path_buf())
        .collect();
    for name in names {
        if std::env::var("ONLY").is_ok_and(|o| !name.to_string_lossy().contains(&o)) {
            continue;
        }
        let d = tempfile::tempdir().unwrap();
        let t0 = populated(d.path());
        let f = d.path().join("store").join(&name);
        if !f.exists() {
            continue;
        }
        std::fs::remove_file(&f).unwrap();
        check(d.path(), t0, &format!("delete {}", name.display()));
    }
}

#[test]
fn undamaged_store_has_everything() {
    let d = tempfile::tempdir().unwrap();
    let t0 = populated(d.path());
    let st = check(d.path(), t0, "no damage");
    assert_eq!(st.samples, (COMMITS * PER_COMMIT) as u64);
}

#[test]
#[ignore]
fn list_files() {
    let d = tempfile::tempdir().unwrap();
    populated(d.path());
    for f in files(&d.path().join("store")) {
        eprintln!("{} {}", f.display(), std::fs::metadata(&f).unwrap().len());
    }
}

#[test]
fn unreadable_store_is_quarantined_once() {
    let d = tempfile::tempdir().unwrap();
    populated(d.path());
    // Garbage in place of every file.
    for f in files(&d.path().join("store")) {
        std::fs::write(&f, b"not a store").unwrap();
    }
    let s = reopen(d.path());
    let st = s.stats();
    assert!(st.quarantined == 1 || st.corrupt_blocks > 0, "{st:?}");
    let now = now_ms();
    s.append(&ping("after", now, 1), &labels("x"));
    s.flush().unwrap();
    drop(s);
    let s = reopen(d.path());
    assert_eq!(s.stats().quarantined, 0);
    assert_eq!(
        s.query("after", ProbeKind::PING, now, now).unwrap().len(),
        1
    );
}
