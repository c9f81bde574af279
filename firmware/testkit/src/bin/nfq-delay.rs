//! `nfq-delay`: holds packets from an NFQUEUE for a fixed time, a userspace stand-in for
//! `tc qdisc netem delay` on kernels without netem.
//!
//! ```text
//! ip netns exec NS nfq-delay --queue 7 --delay-ms 10 [--jitter-ms 1]
//! ip netns exec NS iptables -A INPUT -p icmp --icmp-type echo-request -j NFQUEUE --queue-num 7
//! ```
//! Runs until SIGINT or SIGTERM, then prints how many packets it held and how late they left
//! after their due time. SIGUSR1 prints the same for the packets since the last SIGUSR1 (a
//! line `nfq-delay: window: ...`), so a benchmark can take the holder's own error for its
//! measuring window. It prints `ready` on stdout once the queue is bound, so scripts can add
//! the iptables rule after that.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use vantage_testkit::Control;

static CONTROL: Control = Control {
    stop: AtomicBool::new(false),
    report: AtomicBool::new(false),
    packets: AtomicU64::new(0),
};

extern "C" fn on_signal(sig: libc::c_int) {
    let flag = if sig == libc::SIGUSR1 {
        &CONTROL.report
    } else {
        &CONTROL.stop
    };
    flag.store(true, Ordering::Relaxed);
}

const USAGE: &str = "usage: nfq-delay --queue N --delay-ms MS [--jitter-ms MS]";

fn parse() -> Result<(u16, Duration, Duration), String> {
    let mut queue = None;
    let mut delay = None;
    let mut jitter = Duration::ZERO;
    let mut args = std::env::args().skip(1);
    let ms = |v: Option<String>, flag: &str| -> Result<Duration, String> {
        let v = v.ok_or_else(|| format!("{flag} needs a value"))?;
        let f: f64 = v
            .parse()
            .map_err(|_| format!("{flag}: `{v}` is not a number of milliseconds"))?;
        if !(0.0..=60_000.0).contains(&f) {
            return Err(format!("{flag}: {v} is outside 0..=60000 ms"));
        }
        Ok(Duration::from_secs_f64(f / 1000.0))
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "--queue" => {
                let v = args.next().ok_or("--queue needs a value")?;
                queue = Some(
                    v.parse::<u16>()
                        .map_err(|_| format!("--queue: `{v}` is not a queue number (0..65535)"))?,
                );
            }
            "--delay-ms" => delay = Some(ms(args.next(), "--delay-ms")?),
            "--jitter-ms" => jitter = ms(args.next(), "--jitter-ms")?,
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument `{other}`\n{USAGE}")),
        }
    }
    Ok((
        queue.ok_or("--queue is required")?,
        delay.ok_or("--delay-ms is required")?,
        jitter,
    ))
}

fn main() -> ExitCode {
    let (queue, delay, jitter) = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("nfq-delay: {e}");
            return ExitCode::from(2);
        }
    };
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGUSR1, on_signal as *const () as libc::sighandler_t);
    }
    let result = vantage_testkit::run_delay_loop(queue, delay, jitter, &CONTROL, |r| {
        if r.is_ok() {
            println!("ready");
        }
    });
    match result {
        Ok(stats) => {
            eprintln!("nfq-delay: held {}", stats.summary());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("nfq-delay: {e}");
            ExitCode::FAILURE
        }
    }
}
