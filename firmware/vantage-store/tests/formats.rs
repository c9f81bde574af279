//! A rollback meeting a newer build's data (`src/format.rs`, docs/STORE.md "Formats across
//! releases"): the store opens, serves what it reads, and keeps the rest on disk untouched,
//! counted, with nothing quarantined; a salvage copies it as it is.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::*;
use vantage_core::{ProbeKind, Sample};
use vantage_store::backend::{self, Backend, BackendKind, Commit, EngineOptions};
use vantage_store::codec::{ErrorKind, encode_block};
use vantage_store::format::ENGINE_FJALL;
use vantage_store::{
    Cursor, DropReason, Labels, SeriesKey, Store, StoreOptions, StoredSample, quarantine_dir,
};

fn engine(dir: &Path) -> Box<dyn Backend> {
    let opts = EngineOptions { max_bytes: 1 << 30 };
    backend::open(backend(), &dir.join("store"), &opts).expect("engine opens")
}

/// Sets the checksum after a change to a block's or series entry's bytes.
fn reseal(b: &mut [u8]) {
    let n = b.len() - 4;
    let crc = crc32fast::hash(&b[..n]);
    b[n..].copy_from_slice(&crc.to_le_bytes());
}

fn round(series: u32, ts: i64, success: bool) -> StoredSample {
    StoredSample {
        series,
        timestamp_ms: ts,
        success,
        error: ErrorKind::None,
        duration_us: 1_000,
        ping: None,
        trace: None,
        module: None,
        quality: Default::default(),
    }
}

/// Two intact blocks a newer build could write: version 5, and version 4 with flags this
/// build does not define. (block, index entry)
fn newer_blocks(ts: i64) -> Vec<(Vec<u8>, Vec<u8>)> {
    let rounds: Vec<StoredSample> = (0..7).map(|i| round(0, ts + i, true)).collect();
    let (mut v5, meta) = encode_block(&rounds);
    v5[0] = 5;
    reseal(&mut v5);
    // The flag byte is the one byte a round's success changes (besides the checksum).
    let (ok, _) = encode_block(&[round(0, ts, true)]);
    let (failed, meta1) = encode_block(&[round(0, ts, false)]);
    let at = (0..ok.len() - 4).find(|&i| ok[i] != failed[i]).unwrap();
    let mut flags = ok.clone();
    flags[at] |= 0b0110_0000; // a DNS and a trace round at once: no version defines that
    reseal(&mut flags);
    vec![
        (v5, meta.encode().to_vec()),
        (flags, meta1.encode().to_vec()),
    ]
}

/// A series entry of a probe this build does not know (store code 200).
fn newer_series() -> Vec<u8> {
    let key = SeriesKey {
        target: "future".into(),
        probe: ProbeKind::PING,
        labels: Default::default(),
    };
    let mut b = key.encode();
    b[0] = 200;
    reseal(&mut b);
    b
}

fn series_key(id: u32) -> Vec<u8> {
    let mut k = b"s".to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// A block as written: (sequence number, bytes, index entry).
type Block = (u64, Vec<u8>, Vec<u8>);
/// A meta entry: (key, value).
type Entry = (Vec<u8>, Vec<u8>);

/// Writes a newer build's blocks (after the last one) and a series entry (after the last id)
/// straight through the engine. Returns the blocks' (seq, bytes, index entry) and the series'
/// (key, bytes).
fn write_newer(dir: &Path, ts: i64, next_id: u32) -> (Vec<Block>, Entry) {
    let e = engine(dir);
    let first = e.block_bounds().unwrap().map_or(0, |(_, last)| last + 1);
    let mut c = Commit::default();
    let mut out = Vec::new();
    for (i, (block, index)) in newer_blocks(ts).into_iter().enumerate() {
        let seq = first + i as u64;
        c.blocks.push((seq, block.clone()));
        c.index.push((seq, index.clone()));
        out.push((seq, block, index));
    }
    let series = (series_key(next_id), newer_series());
    c.meta.push(series.clone());
    e.commit(c, true).unwrap();
    (out, series)
}

/// Every index entry of the engine, by sequence number.
fn index_of(e: &dyn Backend) -> BTreeMap<u64, Vec<u8>> {
    let mut out = BTreeMap::new();
    e.scan_index(0, &mut |seq, v| {
        out.insert(seq, v.to_vec());
        Ok(())
    })
    .unwrap();
    out
}

fn meta_value(e: &dyn Backend, key: &[u8]) -> Option<Vec<u8>> {
    let mut out = None;
    e.scan_meta(key, &mut |k, v| {
        if k == key {
            out = Some(v.to_vec());
        }
        Ok(())
    })
    .unwrap();
    out
}

/// The newer data is on disk byte for byte as written.
fn assert_kept(dir: &Path, blocks: &[Block], series: &Entry) {
    let e = engine(dir);
    let index = index_of(e.as_ref());
    for (seq, block, entry) in blocks {
        assert_eq!(
            e.get_block(*seq).unwrap().as_ref(),
            Some(block),
            "block {seq}"
        );
        assert_eq!(index.get(seq), Some(entry), "index entry {seq}");
    }
    assert_eq!(meta_value(e.as_ref(), &series.0).as_ref(), Some(&series.1));
}

/// Ten rounds of target "a", committed and closed.
fn store_with_rounds(dir: &Path, t0: i64) {
    let s = open(dir);
    for i in 0..10 {
        s.append(&ping("a", t0 + i * 1000, 100 + i as u64), &labels("x"));
    }
    s.flush().unwrap();
}

#[test]
fn a_newer_builds_blocks_and_series_are_kept_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = now_ms() - 600_000;
    store_with_rounds(dir.path(), t0);
    let (blocks, series) = write_newer(dir.path(), t0 + 20_000, 1);
    {
        let s = open(dir.path());
        let st = s.stats();
        // Both newer blocks are among the newest, read back on open.
        assert_eq!(st.unreadable_samples, 8, "{st:?}");
        assert_eq!(st.dropped(DropReason::Corrupt), 0, "{st:?}");
        assert_eq!((st.corrupt_blocks, st.quarantined), (0, 0), "{st:?}");
        assert!(st.healthy(), "{st:?}");
        let got = s.query("a", ProbeKind::PING, t0, i64::MAX).unwrap();
        assert_eq!(got.len(), 10);
        let shipped = s.read_from(Cursor::default(), 1000).unwrap();
        assert_eq!(shipped.samples.len(), 10);
        // New rounds and a new series go on after the newer build's.
        s.append(&ping("b", t0 + 30_000, 5), &labels("y"));
        s.flush().unwrap();
        let b = s.query("b", ProbeKind::PING, t0, i64::MAX).unwrap();
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].series, 2, "the newer build's series keeps id 1");
        assert_eq!(s.stats().unreadable_samples, 8);
    }
    assert!(!quarantine_dir(&dir.path().join("store")).exists());
    assert_kept(dir.path(), &blocks, &series);
    // Reopened once more: the same, nothing lost or counted as damage.
    let s = open(dir.path());
    let st = s.stats();
    assert_eq!((st.unreadable_samples, st.corrupt_blocks), (8, 0), "{st:?}");
    assert_eq!(
        s.query("a", ProbeKind::PING, t0, i64::MAX).unwrap().len(),
        10
    );
}

/// A store that needs a salvage (here: commits lost behind the head file) copies the newer
/// build's blocks and series byte for byte into the fresh store.
#[test]
fn a_salvage_copies_a_newer_builds_data_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = now_ms() - 600_000;
    store_with_rounds(dir.path(), t0);
    let (blocks, series) = write_newer(dir.path(), t0 + 20_000, 1);
    // A head file ahead of the engine: the store counts lost commits and salvages.
    let mut head = [0u8; 20];
    head[..8].copy_from_slice(&100u64.to_le_bytes());
    head[8..16].copy_from_slice(&1000u64.to_le_bytes());
    let crc = crc32fast::hash(&head[..16]);
    head[16..].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(dir.path().join("store.head"), head).unwrap();
    {
        let s = open(dir.path());
        let st = s.stats();
        assert!(st.corrupt_blocks > 0, "the salvage ran: {st:?}");
        assert_eq!(st.unreadable_samples, 8, "{st:?}");
        assert_eq!(
            s.query("a", ProbeKind::PING, t0, i64::MAX).unwrap().len(),
            10
        );
    }
    assert_kept(dir.path(), &blocks, &series);
}

#[test]
fn a_newer_builds_aggregate_is_kept_and_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = (now_ms() - 3_600_000) / 60_000 * 60_000;
    store_with_rounds(dir.path(), t0);
    // Series 0, the minute of the first rounds, a version this build does not read.
    let mut key = b"r".to_vec();
    key.extend_from_slice(&0u32.to_be_bytes());
    key.extend_from_slice(&t0.to_be_bytes());
    let value = vec![2u8, 0xff, 0xff, 0xff];
    {
        let e = engine(dir.path());
        let mut c = Commit::default();
        c.meta.push((key.clone(), value.clone()));
        c.meta
            .push((b"w".to_vec(), (t0 + 60_000).to_le_bytes().to_vec()));
        e.commit(c, true).unwrap();
    }
    {
        let s = open(dir.path());
        s.aggregate("a", ProbeKind::PING, t0, t0 + 120_000, 60_000)
            .unwrap();
        // A late round of that written minute: merged into its aggregate by the next commit,
        // which must not replace the newer build's.
        s.append(&ping("a", t0 + 30_000, 7), &labels("x"));
        s.flush().unwrap();
        s.flush().unwrap();
        let st = s.stats();
        assert_eq!((st.corrupt_blocks, st.quarantined), (0, 0), "{st:?}");
    }
    let e = engine(dir.path());
    assert_eq!(meta_value(e.as_ref(), &key), Some(value));
}

/// Every file under `dir` with its bytes.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                let name = p.strip_prefix(dir).unwrap().display().to_string();
                out.insert(name, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// An engine directory in a newer fjall format (a newer build upgraded the engine) is not
/// taken for damage: the store stays closed, says why, and leaves every file as it was; the
/// newer build, back, finds everything.
#[test]
fn a_newer_engine_format_is_left_untouched_not_quarantined() {
    if backend() != BackendKind::Fjall {
        eprintln!("skipped: the engine format check is fjall's");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let t0 = now_ms() - 600_000;
    store_with_rounds(dir.path(), t0);
    let version = dir.path().join("store").join(backend::fjall::VERSION_FILE);
    let original = std::fs::read(&version).unwrap();
    let pinned = ENGINE_FJALL.writes;
    assert_eq!(
        original,
        [b'F', b'J', b'L', pinned],
        "fjall writes the pinned format"
    );
    std::fs::write(&version, [b'F', b'J', b'L', pinned + 1]).unwrap();
    let before = files(&dir.path().join("store"));
    {
        let s = open(dir.path());
        let st = s.stats();
        let err = st.error.clone().unwrap_or_default();
        assert!(err.contains("newer version"), "{st:?}");
        assert_eq!((st.quarantined, st.samples), (0, 0), "{st:?}");
        // Rounds wait in memory meanwhile.
        s.append(&ping("a", t0 + 50_000, 1), &labels("x"));
        assert_eq!(
            s.query("a", ProbeKind::PING, t0, i64::MAX).unwrap().len(),
            1
        );
        s.close();
    }
    assert!(!quarantine_dir(&dir.path().join("store")).exists());
    assert_eq!(files(&dir.path().join("store")), before);
    std::fs::write(&version, &original).unwrap();
    let s = open(dir.path());
    assert_eq!(
        s.query("a", ProbeKind::PING, t0, i64::MAX).unwrap().len(),
        10
    );
}

/// A whole store directory as this release writes it (engine, head file, series log):
/// every later build must open it with everything in it (the newer reads the older).
/// `write_the_release_fixture` made it.
const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/store-0.1.0");
/// 2025-12-04 00:00 UTC: the fixture's first round.
const FIXTURE_T0: i64 = 1_764_806_400_000;
const FIXTURE_CURSOR: Cursor = Cursor { seq: 0, idx: 10 };

fn fixture_opts(dir: &Path) -> StoreOptions {
    let mut o = opts(dir);
    o.backend = BackendKind::Fjall;
    // The fixture's rounds are old: the age bound must not drop them.
    o.max_age = Duration::from_secs(100 * 365 * 24 * 3600);
    o
}

/// Ten minutes of a ping, a DNS and a trace target, a round each every 20 s.
fn fixture_rounds() -> Vec<(Sample, Labels)> {
    let mut out = Vec::new();
    for i in 0..30u64 {
        let ms = FIXTURE_T0 + i as i64 * 20_000;
        out.push((ping("gw", ms, 1_000 + i * 37), labels("office")));
        out.push((dns("resolver", ms + 5, 20_000 + i * 11), labels("dc")));
        out.push((trace("path", ms + 9, 3 + i), Labels::new()));
    }
    out
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

#[test]
#[ignore = "writes tests/data/store-0.1.0: run by hand, once per release"]
fn write_the_release_fixture() {
    let dir = Path::new(FIXTURE);
    let _ = std::fs::remove_dir_all(dir);
    let s = Store::open(fixture_opts(dir)).unwrap();
    for (sample, labels) in fixture_rounds() {
        s.append(&sample, &labels);
    }
    s.flush().unwrap();
    s.set_cursor("central", FIXTURE_CURSOR);
    s.flush().unwrap();
    s.close();
    drop(s);
    // What git keeps: the journal without its preallocated zeros (64 MiB), no empty folders.
    trim_for_git(dir);
}

fn trim_for_git(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            trim_for_git(&p);
            let _ = std::fs::remove_dir(&p); // only when empty
        } else if p.extension().is_some_and(|x| x == "jnl") {
            let b = std::fs::read(&p).unwrap();
            let n = b.iter().rposition(|x| *x != 0).map_or(0, |i| i + 1);
            std::fs::write(&p, &b[..n]).unwrap();
        }
    }
}

/// The fixture copied and opened: every round with its figures, series labels, the cursor,
/// the aggregates; nothing counted as damage or unreadable.
#[test]
fn a_store_written_by_release_0_1_0_opens_with_everything() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(Path::new(FIXTURE), dir.path());
    let s = Store::open(fixture_opts(dir.path())).unwrap();
    let st = s.stats();
    assert_eq!(st.samples, 90, "{st:?}");
    assert_eq!(
        (st.corrupt_blocks, st.quarantined, st.unreadable_samples),
        (0, 0, 0),
        "{st:?}"
    );
    let rounds = fixture_rounds();
    for (target, probe) in [
        ("gw", ProbeKind::PING),
        ("resolver", ProbeKind::DNS),
        ("path", ProbeKind::TRACE),
    ] {
        let got = s.query(target, probe, 0, i64::MAX).unwrap();
        let want: Vec<&(Sample, Labels)> = rounds
            .iter()
            .filter(|(r, _)| &*r.target == target)
            .collect();
        assert_eq!(got.len(), want.len(), "{target}");
        for (g, (sample, labels)) in got.iter().zip(want) {
            assert_eq!(g, &StoredSample::from_sample(sample, g.series), "{target}");
            let key = s.series(g.series).unwrap();
            assert_eq!((&*key.target, key.probe), (target, probe));
            assert_eq!(&*key.labels, labels);
        }
        let aggs = s.aggregate(target, probe, 0, i64::MAX, 3_600_000).unwrap();
        let n: u32 = aggs.iter().map(|(_, a)| a.rounds).sum();
        assert_eq!(n, 30, "{target}: {aggs:?}");
    }
    assert_eq!(s.cursor("central"), FIXTURE_CURSOR);
}
