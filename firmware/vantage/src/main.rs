//! The `vantage` command.

mod apply;
mod config;
mod config_source;
mod daemon;
mod files;
mod fleet;
mod http;
mod leds_cmd;
mod malloc;
mod metrics;
mod node_exporter;
mod oneshot;
mod probe_compat;
mod probe_guard;
mod scrape;
mod state;
mod storage;
#[cfg(test)]
mod test_support;
mod update;
mod web;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Vantage: a network probe that pings, traces and queries DNS on schedule and exports the
/// results to Prometheus.
#[derive(Debug, Parser)]
#[command(name = "vantage", version, about, long_about = None, propagate_version = true)]
struct Cli {
    /// Log level filter (error, warn, info, debug, trace, or a tracing filter directive).
    #[arg(long, global = true, env = "VANTAGE_LOG", default_value = "info")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon: probe the configured targets and serve /metrics.
    Run {
        #[command(flatten)]
        config: config_source::ConfigArgs,
        /// Address to serve HTTP on.
        #[arg(long, short = 'l', env = "VANTAGE_LISTEN", default_value = "[::]:9430")]
        listen: SocketAddr,
        /// Directory for the sample store and device state.
        #[arg(
            long,
            short = 'd',
            env = "STATE_DIRECTORY",
            default_value = "vantage-data"
        )]
        data_dir: PathBuf,
        /// A one-time code first-boot setup of the web page requires (its first line), e.g.
        /// written to the boot partition when the image is flashed. Without it, anyone on the
        /// network can set the admin password first.
        #[arg(long, env = "VANTAGE_SETUP_CODE_FILE", value_name = "FILE")]
        setup_code_file: Option<PathBuf>,
    },
    /// Check a config file: exit 0 if it is valid, else print every problem and exit 1.
    CheckConfig {
        /// Config file (TOML).
        path: PathBuf,
    },
    /// Ping a host from the command line, like ping(8), using the daemon's ping code.
    Ping(oneshot::PingArgs),
    /// Trace the route to a host once and print an mtr-like table, using the daemon's trace code.
    Trace(oneshot::TraceArgs),
    /// Ask a DNS server one question, like dig(1), using the daemon's DNS probe.
    Dns(oneshot::DnsArgs),
    /// Find Vantage devices on the local network (mDNS) and hand them to Prometheus: a list,
    /// a file_sd JSON file, or an http_sd endpoint.
    Discover(fleet::discover::DiscoverArgs),
    /// Drive the status LEDs without the daemon: boot pattern, test cycle, off.
    Leds(leds_cmd::LedsArgs),
    /// Install an update bundle into the slot that is not running (A/B image, as root): a file,
    /// or a URL downloaded into the spool; the signature is checked before anything is written.
    Update(update::cli::UpdateArgs),
    /// One round of a probe module: `vantage KIND TARGET [--OPTION VALUE]...` (e.g. `tcp`).
    #[command(external_subcommand)]
    Module(Vec<String>),
}

fn main() -> ExitCode {
    malloc::tune();
    let cli = Cli::parse();
    init_logging(&cli.log_level);
    match cli.command {
        Command::CheckConfig { path } => match crate::config::load(&path) {
            Ok(c) => {
                println!("{}: OK ({} targets)", path.display(), c.targets.len());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                eprintln!(
                    "{} problem{} found",
                    e.errors.len(),
                    if e.errors.len() == 1 { "" } else { "s" }
                );
                ExitCode::FAILURE
            }
        },
        Command::Run {
            config,
            listen,
            data_dir,
            setup_code_file,
        } => {
            let source = config.source(Some(&data_dir));
            runtime().block_on(async {
                match daemon::run(source, listen, data_dir, setup_code_file).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("vantage: {e:#}");
                        ExitCode::FAILURE
                    }
                }
            })
        }
        Command::Ping(args) => runtime().block_on(oneshot::ping(args)),
        Command::Trace(args) => runtime().block_on(oneshot::trace(args)),
        Command::Dns(args) => runtime().block_on(oneshot::dns(args)),
        Command::Discover(args) => runtime().block_on(fleet::discover::run(args)),
        Command::Leds(args) => leds_cmd::run(args),
        Command::Update(args) => runtime().block_on(update::cli::run(args)),
        Command::Module(args) => runtime().block_on(oneshot::module(args)),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("vantage")
        .build()
        .expect("start the Tokio runtime")
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}
