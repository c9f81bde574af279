//! glibc malloc settings for a daemon that runs for months.
//!
//! Left alone, glibc's malloc let the daemon's memory grow for hours under steady use (a
//! 1,000-target soak: +31 MB in an hour; of that, the live heap grew by the store's memtable,
//! at most 8 MiB, and the rest was free memory kept in malloc's per-thread arenas). Two
//! defaults did it:
//!
//! - Arenas: each new thread that allocates gets an arena of its own, up to 8 per core.
//!   Tokio's workers, its blocking threads (DNS lookups, file reads) and the store's threads
//!   each kept one, and each arena keeps the free memory of its own peaks.
//! - The mmap threshold: a block from 128 KiB on is mapped on its own and unmapped when freed,
//!   but freeing one raises the threshold to that block's size (up to 32 MiB) and the trim
//!   threshold to twice that. After the first `/metrics` answer (2.7 MB for 1,000 targets) every
//!   status answer and scrape body was built inside an arena, and the arenas kept the pages.
//!
//! [`tune`] caps the arenas and fixes the threshold (a fixed one is not raised), so large
//! answers go back to the system when they are dropped. musl's malloc has neither setting.

/// Arenas glibc may keep: the threads allocate little at once, so two are enough to avoid
/// waiting on one lock, and each more is memory kept for its own peaks.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const ARENA_MAX: libc::c_int = 2;

/// Blocks from this size on are mapped on their own and unmapped when freed: the status
/// answer, a scrape body and the history's buffers, never the many small ones.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 256 * 1024;

/// Applies the settings above. Called first thing in `main`, before any other thread exists:
/// glibc fixes its arena limit when the 9th arena would be made.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes malloc's parameters; no allocation is in an unusual state.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, ARENA_MAX);
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};

    /// The arenas malloc has, from `malloc_info`'s `<heap nr="N">` elements.
    fn arenas() -> usize {
        let path = std::env::temp_dir().join(format!("vantage-malloc-{}.xml", std::process::id()));
        let c_path = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: a FILE opened here, written by malloc_info and closed before it is read.
        unsafe {
            let f = libc::fopen(c_path.as_ptr(), c"w".as_ptr());
            assert!(!f.is_null(), "cannot open {}", path.display());
            assert_eq!(libc::malloc_info(0, f), 0);
            libc::fclose(f);
        }
        let xml = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        xml.matches("<heap nr=").count()
    }

    /// Eight threads alive at once, each allocating: without a cap each gets an arena.
    fn allocate_on_threads() {
        let barrier = Arc::new(Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let b = barrier.clone();
                std::thread::spawn(move || {
                    b.wait();
                    let v = vec![i as u8; 1000];
                    b.wait();
                    std::hint::black_box(v);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }

    const CHILD: &str = "VANTAGE_MALLOC_TEST_CHILD";

    /// Runs [`child`] alone in a fresh process (the test harness's threads already have their
    /// arenas), with or without [`tune`]: whether the large block was mapped, and the arenas.
    fn in_child(tuned: bool) -> (bool, usize) {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "malloc::tests::child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, if tuned { "tuned" } else { "default" })
            .env_remove("MALLOC_ARENA_MAX")
            .env_remove("MALLOC_MMAP_THRESHOLD_")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "child failed: {stdout}");
        let line = stdout
            .lines()
            .find_map(|l| l.split_once("mapped=").map(|(_, rest)| rest))
            .unwrap_or_else(|| panic!("no figures in {stdout}"));
        let (mapped, arenas) = line.split_once(" arenas=").unwrap();
        (mapped == "true", arenas.parse().unwrap())
    }

    /// Whether a 512 KiB block is mapped on its own after a 4 MiB one was freed (which raises
    /// glibc's default threshold past 512 KiB).
    fn large_block_mapped_after_a_larger_one() -> bool {
        drop(std::hint::black_box(Vec::<u8>::with_capacity(4 << 20)));
        // SAFETY: mallinfo only reads malloc's counters.
        let before = unsafe { libc::mallinfo() }.hblks;
        let block = std::hint::black_box(Vec::<u8>::with_capacity(512 << 10));
        // SAFETY: as above.
        let during = unsafe { libc::mallinfo() }.hblks;
        drop(block);
        during > before
    }

    #[test]
    fn child() {
        // Only in the process `in_child` starts: alone in the harness, it has nothing to do.
        if let Ok(mode) = std::env::var(CHILD) {
            if mode == "tuned" {
                tune();
            }
            let mapped = large_block_mapped_after_a_larger_one();
            allocate_on_threads();
            println!("mapped={mapped} arenas={}", arenas());
        }
    }

    #[test]
    fn tune_caps_the_arenas_and_keeps_large_blocks_mapped() {
        let (mapped, default) = in_child(false);
        assert!(
            !mapped,
            "glibc's default raises the threshold: the test shows nothing"
        );
        assert!(
            default > ARENA_MAX as usize,
            "without tune: {default} arenas"
        );
        let (mapped, arenas) = in_child(true);
        assert!(mapped, "with tune, a 512 KiB block is mapped on its own");
        assert!(arenas <= ARENA_MAX as usize, "with tune: {arenas} arenas");
    }
}
