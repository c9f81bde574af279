//! Kill loop: SIGKILL a process appending to the store at random moments, 200 times; after each
//! kill the store opens and holds every sample appended longer ago than the durability window.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use vantage_core::ProbeKind;
use vantage_store::{BackendKind, Store};

const BIN: &str = env!("CARGO_BIN_EXE_vantage-store-torture");
const COMMIT_MS: u64 = 50;
/// What the docs promise: a commit every interval, plus the time the commit takes. The slack
/// covers a slow sync on a busy CI machine.
const WINDOW_MS: u128 = COMMIT_MS as u128 + 250;

fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

/// The run's side log: `(last sequence number appended, unix ms, samples committed by then)`.
fn side_log(dir: &Path, run: u32) -> Vec<(u64, u128, u64)> {
    let log = std::fs::read_to_string(dir.join(format!("log-{run}"))).unwrap_or_default();
    log.lines()
        .filter_map(|l| {
            let mut f = l.split(' ');
            Some((
                f.next()?.parse().ok()?,
                f.next()?.parse().ok()?,
                f.next()?.parse().ok()?,
            ))
        })
        .collect()
}

/// What a run's store must hold after the kill.
#[derive(Debug, Clone, Copy)]
struct Must {
    /// Samples the process saw committed: durable whatever the timing.
    committed: u64,
    /// The highest sequence number appended longer than the window before the kill.
    windowed: Option<u64>,
}

fn must_hold(dir: &Path, run: u32, killed_at: u128) -> Must {
    let log = side_log(dir, run);
    let until = killed_at.saturating_sub(WINDOW_MS);
    Must {
        committed: log.iter().map(|(_, _, c)| *c).max().unwrap_or(0),
        windowed: log
            .iter()
            .filter(|(_, t, _)| *t <= until)
            .map(|(n, _, _)| *n)
            .max(),
    }
}

/// Sequence numbers stored for a run: the RTT in µs.
fn stored(s: &Store, run: u32, span: (i64, i64)) -> Vec<u64> {
    let mut v: Vec<u64> = s
        .query(&format!("r{run}"), ProbeKind::PING, span.0, span.1)
        .unwrap()
        .iter()
        .map(|x| x.ping.unwrap().rtt_us.unwrap().0)
        .collect();
    v.sort_unstable();
    v
}

/// Checks a run's samples: a gap-free, duplicate-free prefix holding at least every committed
/// sample. Returns whether the durability window held too (timing: reported, not asserted per
/// run, since a starved committer on a loaded machine may miss it).
fn check_run(
    s: &Store,
    dir: &Path,
    run: u32,
    span: (i64, i64),
    must: Must,
) -> Result<bool, String> {
    let got = stored(s, run, span);
    // Every sample is stored at most once, and the stored ones form a prefix 0..k.
    for (i, n) in got.iter().enumerate() {
        if *n != i as u64 {
            return Err(format!(
                "run {run}: sample {i} is {n}: a gap or a duplicate"
            ));
        }
    }
    if (got.len() as u64) < must.committed {
        return Err(format!(
            "run {run}: {} samples stored, but the store had committed {} before the kill ({})",
            got.len(),
            must.committed,
            dir.display()
        ));
    }
    Ok(must.windowed.is_none_or(|m| got.len() as u64 > m))
}

#[test]
fn kill_loop_loses_nothing_older_than_the_window() {
    let iterations: u32 = std::env::var("VANTAGE_KILL_ITERATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let dir = tempfile::tempdir().unwrap();
    let backend = backend();
    let started = Instant::now();
    let mut must: BTreeMap<u32, ((i64, i64), Must)> = BTreeMap::new();
    let mut window_missed = 0u32;
    let mut early_kills = 0;
    let mut sled_losses = 0;
    let mut rng_state = 0x9e3779b97f4a7c15u64 ^ u64::from(std::process::id());
    let mut rand = move || {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        rng_state
    };
    // A loaded machine starves the child, so fewer kills land after samples aged past the
    // window: keep killing until a third of the planned runs did, at most three times as many.
    let mut with_data = 0u32;
    let mut runs = 0u32;
    for run in 0..iterations * 3 {
        if run >= iterations && with_data > iterations / 3 {
            break;
        }
        runs = run + 1;
        let spawned = unix_ms() as i64;
        let mut child = Command::new(BIN)
            .arg(dir.path())
            .arg(run.to_string())
            .arg(backend.as_str())
            .arg(COMMIT_MS.to_string())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.path().join(format!("err-{run}"))).unwrap())
            .spawn()
            .unwrap();
        // Random moment: one kill in five during open and recovery, the others while samples
        // are appended and committed.
        if rand() % 5 == 0 {
            early_kills += 1;
            std::thread::sleep(Duration::from_millis(rand() % 60));
        } else {
            let mut line = String::new();
            let out = child.stdout.take().unwrap();
            std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line).unwrap();
            if line.trim() != "ready" {
                let _ = child.wait();
                let err = std::fs::read_to_string(dir.path().join(format!("err-{run}")));
                panic!("run {run}: the torture process did not start: {err:?}");
            }
            std::thread::sleep(Duration::from_millis(100 + rand() % 400));
        }
        let killed_at = unix_ms();
        child.kill().unwrap();
        child.wait().unwrap();
        let span = (spawned - 1000, killed_at as i64 + 1000);
        let held = must_hold(dir.path(), run, killed_at);
        with_data += u32::from(held.windowed.is_some());
        must.insert(run, (span, held));

        let mut o = opts(dir.path());
        o.max_bytes = 64 << 20;
        let s = Store::open(o).unwrap_or_else(|e| panic!("run {run}: store does not open: {e}"));
        let st = s.stats();
        if backend == BackendKind::Sled && st.quarantined > 0 {
            // sled 0.34 can leave its log unreadable after an abrupt stop (sled #1533): the
            // store must notice, set the engine aside, count the loss and carry on with a
            // fresh one. fjall, which ships, is held to "nothing lost" below.
            assert_eq!(st.samples, 0, "run {run}: {st:?}");
            assert!(
                st.dropped_total() > 0,
                "run {run}: the loss is not counted: {st:?}"
            );
            eprintln!(
                "run {run}: sled's store was unreadable after the kill and set aside ({} rounds lost, counted)",
                st.dropped_total()
            );
            sled_losses += 1;
            must.clear();
            s.close();
            continue;
        }
        assert_eq!(st.quarantined, 0, "run {run}: {st:?}");
        assert_eq!(st.dropped_total(), 0, "run {run}: {st:?}");
        let (span, m) = must[&run];
        if !check_run(&s, dir.path(), run, span, m).unwrap() {
            window_missed += 1;
            eprintln!("run {run}: a sample older than {WINDOW_MS} ms was not yet committed");
        }
        if run % 25 == 24 {
            for (r, (span, m)) in &must {
                check_run(&s, dir.path(), *r, *span, *m).unwrap();
            }
        }
        s.close();
    }
    let mut o = opts(dir.path());
    o.max_bytes = 64 << 20;
    let s = Store::open(o).unwrap();
    for (r, (span, m)) in &must {
        check_run(&s, dir.path(), *r, *span, *m).unwrap();
    }
    s.close();
    eprintln!(
        "kill loop: {runs} kills on {backend} in {:.1} s ({early_kills} during open); {with_data} runs had samples older than the window, {window_missed} missed it; {sled_losses} left sled unreadable",
        started.elapsed().as_secs_f64()
    );
    assert!(
        with_data > iterations / 3,
        "the kills came too early to test anything"
    );
    // A committer that stopped or fell far behind misses the window in nearly every run; a
    // busy machine delays a few commits.
    assert!(
        window_missed * 4 <= with_data,
        "the window was missed in {window_missed} of {with_data} runs"
    );
}
