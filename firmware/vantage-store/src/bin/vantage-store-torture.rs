//! Appends sequence-numbered samples to a store as fast as asked, logging what it appended, until
//! killed. The kill-loop test (`tests/crash.rs`) kills it at random moments with SIGKILL and
//! checks that nothing older than the durability window is missing.
//!
//! ```text
//! vantage-store-torture DIR RUN [BACKEND] [COMMIT_MS] [BATCH] [PERIOD_MS]
//! ```
//! Samples go to target `r<RUN>`; sample `n` has an RTT of `n` µs. After each batch a line
//! `<last n> <unix ms> <committed>` is appended to `DIR/log-<RUN>` with one write(2) (it survives
//! SIGKILL); `committed` counts the samples the store had made durable by then, which are the
//! first ones appended (one target, committed in order).

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use vantage_core::{Measurement, PingReport, ProbeKind, Sample};
use vantage_store::{Labels, Store, StoreOptions};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: vantage-store-torture DIR RUN [BACKEND] [COMMIT_MS] [BATCH] [PERIOD_MS]");
        std::process::exit(2);
    }
    let dir = std::path::PathBuf::from(&args[1]);
    let run: u32 = args[2].parse().expect("RUN is a number");
    let arg = |i: usize, d: u64| args.get(i).map_or(d, |s| s.parse().expect("a number"));
    let mut o = StoreOptions::new(dir.join("store"));
    if let Some(b) = args.get(3) {
        o.backend = b.parse().expect("fjall or sled");
    }
    o.commit_interval = Duration::from_millis(arg(4, 100));
    let batch = arg(5, 20);
    let period = Duration::from_millis(arg(6, 2));
    o.max_bytes = 64 << 20;
    let store = Store::open(o).expect("store opens");
    println!("ready");
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("log-{run}")))
        .expect("side log");
    let target: Arc<str> = Arc::from(format!("r{run}"));
    let labels = Labels::new();
    let mut n = 0u64;
    loop {
        for _ in 0..batch {
            let s = Sample {
                target: target.clone(),
                probe: ProbeKind::PING,
                timestamp: SystemTime::now(),
                duration: Duration::from_micros(n),
                success: true,
                error: None,
                measurement: Measurement::from(PingReport {
                    sent: 1,
                    received: 1,
                    rtts: vec![Duration::from_micros(n)],
                    ..Default::default()
                }),
                quality: Default::default(),
            };
            store.append(&s, &labels);
            n += 1;
        }
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        let committed = store.samples_committed();
        let _ = log.write_all(format!("{} {ms} {committed}\n", n - 1).as_bytes());
        std::thread::sleep(period);
    }
}
