//! `vantage leds`: the status LEDs without the daemon — the boot pattern the image sets
//! early, a test cycle through every state for checking a device by eye, and off.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use vantage_leds::{Condition, Led, LedRole, LedsSection, Pattern, pattern_for};

use crate::config_source::ConfigArgs;

#[derive(Debug, Args)]
pub struct LedsArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// The daemon's data directory, to use the [leds] the web page saved there.
    #[arg(long, short = 'd', env = "STATE_DIRECTORY")]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    action: LedsAction,
}

#[derive(Debug, Subcommand)]
enum LedsAction {
    /// Hand the boot pattern to the kernel, so it shows until the daemon takes over.
    Boot,
    /// Turn every LED off.
    Off,
    /// Show every state in turn, most urgent first, printing what each LED should do.
    Test {
        /// How long to show each state.
        #[arg(long, default_value = "4s")]
        each: humantime::Duration,
    },
}

pub fn run(args: LedsArgs) -> ExitCode {
    let source = args.config.source(args.data_dir.as_deref());
    let config = match source.load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let mut leds = match vantage_leds::open(config.leds()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("vantage leds: {e}");
            return ExitCode::FAILURE;
        }
    };
    if leds.is_empty() {
        println!(
            "no status LEDs configured ([leds] in {})",
            source.describe()
        );
        return ExitCode::SUCCESS;
    }
    let result = match args.action {
        LedsAction::Boot => vantage_leds::persist_boot(&mut leds).map(|p| {
            for ((role, led), p) in leds.iter().zip(p) {
                println!("{} ({role}): {p}", led.label());
            }
        }),
        LedsAction::Off => leds
            .iter_mut()
            .try_for_each(|(_, l)| l.persist(Pattern::Off).map(|_| ())),
        LedsAction::Test { each } => test_cycle(&mut leds, *each),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vantage leds: {e}");
            ExitCode::FAILURE
        }
    }
}

fn test_cycle(leds: &mut [(LedRole, Box<dyn Led>)], each: Duration) -> std::io::Result<()> {
    for cond in Condition::ALL {
        let conds = if cond == Condition::Running {
            vec![cond]
        } else {
            vec![cond, Condition::Running]
        };
        let patterns: Vec<Pattern> = leds.iter().map(|(r, _)| pattern_for(*r, &conds)).collect();
        let shown: Vec<String> = leds
            .iter()
            .zip(&patterns)
            .map(|((_, l), p)| format!("{}={p}", l.label()))
            .collect();
        println!("{cond:?}: {}", shown.join(" "));
        let start = Instant::now();
        let mut lit: Vec<Option<bool>> = vec![None; leds.len()];
        while start.elapsed() < each {
            let t = start.elapsed();
            for (i, ((_, led), p)) in leds.iter_mut().zip(&patterns).enumerate() {
                let on = p.level(t);
                if lit[i] != Some(on) {
                    led.set(on)?;
                    lit[i] = Some(on);
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    leds.iter_mut()
        .try_for_each(|(_, l)| l.persist(Pattern::Off).map(|_| ()))
}
