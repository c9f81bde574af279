//! Builders the daemon's unit tests share.

use std::time::{Duration, SystemTime};

use vantage_core::{HopReport, HopResponder, Measurement, PingReport, ProbeKind, Sample};

/// A ping round of `target` at `at` that got its one reply after `rtt` (2 ms long).
pub fn answered_ping(target: &str, at: SystemTime, rtt: Duration) -> Sample {
    Sample {
        target: target.into(),
        probe: ProbeKind::PING,
        timestamp: at,
        duration: Duration::from_millis(2),
        success: true,
        error: None,
        measurement: Measurement::from(PingReport {
            sent: 1,
            received: 1,
            rtts: vec![rtt],
            ..PingReport::default()
        }),
        quality: Default::default(),
    }
}

/// A trace hop at `ttl` that `addrs` answered (one reply each, flow 0), with these RTTs (µs)
/// of `sent` probes.
pub fn trace_hop(ttl: u8, addrs: &[&str], rtts_us: &[u64], sent: u32) -> HopReport {
    HopReport {
        ttl,
        sent,
        received: rtts_us.len() as u32,
        responders: addrs
            .iter()
            .map(|a| HopResponder {
                address: a.parse().unwrap(),
                replies: 1,
                flows: vec![0],
                unreachable: None,
            })
            .collect(),
        rtts: rtts_us.iter().map(|u| Duration::from_micros(*u)).collect(),
        balancing: None,
    }
}

/// The allocator of the unit tests: the system's, counting each thread's allocations so that a
/// test can bound what a piece of code allocates while other tests run beside it.
struct CountingAlloc;

thread_local! {
    static ALLOCATIONS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

fn count_one() {
    // `try_with`: a thread being torn down has no counter left, and allocates nothing of ours.
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

// SAFETY: every call is passed on to the system allocator unchanged.
unsafe impl std::alloc::GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        count_one();
        // SAFETY: the caller's contract, passed on.
        unsafe { std::alloc::System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        count_one();
        // SAFETY: the caller's contract, passed on.
        unsafe { std::alloc::System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, size: usize) -> *mut u8 {
        count_one();
        // SAFETY: the caller's contract, passed on.
        unsafe { std::alloc::System.realloc(ptr, layout, size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAlloc = CountingAlloc;

/// What `f` returns, and how many allocations (and reallocations) it made on this thread.
pub fn allocations_in<R>(f: impl FnOnce() -> R) -> (R, u64) {
    let before = ALLOCATIONS.with(|n| n.get());
    let r = f();
    (r, ALLOCATIONS.with(|n| n.get()) - before)
}
