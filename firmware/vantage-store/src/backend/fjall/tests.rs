use std::path::Path;

use super::*;

const MAX_BYTES: u64 = 8 << 20;
const BLOCK_LEN: usize = 8 << 10;
/// Blocks a table: memtables are flushed by hand, so the count does not hang on timing.
const TABLE_BLOCKS: u64 = 8;
/// Tables in `blocks` (and as many in `index`): many times `MAX_OPEN_FILES`.
const TABLES: u64 = 40;
const BLOCKS: u64 = TABLES * TABLE_BLOCKS;

fn block(seq: u64) -> Vec<u8> {
    let mut v: Vec<u8> = (0..BLOCK_LEN)
        .map(|i| (seq as usize * 31 + i * 7) as u8)
        .collect();
    v[..8].copy_from_slice(&seq.to_le_bytes());
    v
}

/// The process's descriptors that point into `dir`.
fn open_files_under(dir: &Path) -> Vec<String> {
    let dir = dir.canonicalize().unwrap();
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|p| p.starts_with(&dir))
        .map(|p| p.display().to_string())
        .collect()
}

/// Writes every memtable out as a table and waits for it (no timing involved).
fn flush(b: &FjallBackend) {
    for ks in [&b.blocks, &b.index, &b.meta] {
        ks.rotate_memtable_and_wait().unwrap();
    }
}

fn read_all(b: &FjallBackend, seqs: impl Iterator<Item = u64>) {
    for seq in seqs {
        let got = b.get_block(seq).unwrap();
        assert!(
            got.as_deref() == Some(&block(seq)[..]),
            "block {seq} read back wrong"
        );
    }
}

fn assert_bounded(dir: &Path, when: &str) {
    let open = open_files_under(dir);
    assert!(
        open.len() <= MAX_OPEN_FILES,
        "{when}: {} files of the store open, bound {MAX_OPEN_FILES}: {open:#?}",
        open.len()
    );
}

#[test]
fn open_files_stay_bounded_however_many_tables_are_read() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let opts = EngineOptions {
        max_bytes: MAX_BYTES,
    };
    let b = FjallBackend::open(&dir, &opts).unwrap();
    for seq in 0..BLOCKS {
        let c = Commit {
            blocks: vec![(seq, block(seq))],
            index: vec![(seq, seq.to_be_bytes().to_vec())],
            ..Commit::default()
        };
        b.commit(c, seq % TABLE_BLOCKS == 0).unwrap();
        if seq % TABLE_BLOCKS == TABLE_BLOCKS - 1 {
            flush(&b);
        }
    }
    let tables = b.blocks.table_count();
    assert!(tables as u64 >= TABLES, "{tables} tables: too few");
    assert!(b.index.table_count() as u64 >= TABLES);
    // Every block from its table: each read opens a different table.
    read_all(&b, 0..BLOCKS);
    assert_bounded(&dir, "after reading every table");
    // And again in the other order, once more over the same tables.
    read_all(&b, (0..BLOCKS).rev());
    assert_bounded(&dir, "after reading every table twice");
    let mut n = 0;
    b.scan_index(0, &mut |seq, v| {
        assert_eq!(v, seq.to_be_bytes());
        n += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(n, BLOCKS);
    assert_bounded(&dir, "after scanning the index");

    // Reopening recovers every table: that too leaves no table open.
    drop(b);
    let b = FjallBackend::open(&dir, &opts).unwrap();
    assert_eq!(b.blocks.table_count(), tables);
    assert_bounded(&dir, "after reopening");
    read_all(&b, (0..BLOCKS).rev());
    assert_eq!(b.block_bounds().unwrap(), Some((0, BLOCKS - 1)));
    assert_bounded(&dir, "after reading every table after reopening");
}

#[test]
fn blocks_memtable_is_small_at_the_default_bound() {
    let (blocks, index) = memtable_sizes(crate::DEFAULT_MAX_BYTES);
    assert_eq!(blocks, MAX_BLOCKS_MEMTABLE);
    assert!(blocks <= 2 << 20, "{blocks}");
    assert_eq!(index, MAX_INDEX_MEMTABLE);
    // A small bound still gets the smallest memtable, and never one above its share.
    assert_eq!(memtable_sizes(1 << 20), (MIN_MEMTABLE, MIN_MEMTABLE));
    assert_eq!(memtable_sizes(32 << 20).0, 1 << 20);
}

/// Memory one `blocks` table pins (index and filter blocks) when its blocks are `value_len`
/// bytes each, and the blocks it holds. The table is 90 % of the memtable's size: filling it
/// whole would rotate it in the background, at a moment that depends on timing.
fn pinned_per_table(value_len: usize) -> (usize, u64) {
    let tmp = tempfile::tempdir().unwrap();
    let b = FjallBackend::open(tmp.path(), &EngineOptions { max_bytes: 1 << 30 }).unwrap();
    // fjall counts an entry's key, value and about 100 bytes of its own.
    let per_table = MAX_BLOCKS_MEMTABLE * 9 / 10 / (value_len as u64 + 128);
    let mut value = vec![0u8; value_len];
    for seq in 0..per_table {
        // Incompressible enough for the table to be about the memtable's size.
        for (i, x) in value.iter_mut().enumerate() {
            *x = (seq as usize)
                .wrapping_mul(2_654_435_761)
                .wrapping_add(i * 131) as u8;
        }
        let c = Commit {
            blocks: vec![(seq, value.clone())],
            ..Commit::default()
        };
        b.commit(c, false).unwrap();
    }
    flush(&b);
    assert_eq!(b.blocks.table_count(), 1, "blocks of {value_len} bytes");
    let t = &b.blocks.tree;
    (
        t.pinned_filter_size() + t.pinned_block_index_size(),
        per_table,
    )
}

#[test]
fn a_full_blocks_table_pins_little_memory() {
    // The figures `MAX_BLOCKS_MEMTABLE`'s comment relies on: large blocks (a 5 s commit of
    // 10,000 targets) pin well under 4 KiB per table, small ones (a few targets) under 1.5 %
    // of their bytes.
    let (large, n) = pinned_per_table(64 << 10);
    assert!(
        large <= 4 << 10,
        "{large} bytes pinned for {n} blocks of 64 KiB"
    );
    let (small, n) = pinned_per_table(256);
    assert!(
        small as u64 <= n * 256 * 15 / 1000,
        "{small} bytes pinned for {n} blocks of 256 bytes"
    );
    eprintln!("pinned per 2 MiB table: {large} (64 KiB blocks), {small} (256-byte blocks)");
}
