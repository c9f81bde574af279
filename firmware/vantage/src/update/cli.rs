//! `vantage update FILE|URL`: the command-line way to start an update on the device.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use super::spool::{Limits, parse_sha256};
use super::{DOWNLOAD_NAME, Installer, KEYRING, Rauc, Source};

/// Where the command keeps a download: `/var` is on the data partition on the image.
pub const CLI_SPOOL: &str = "/var/lib/vantage-image/spool";

#[derive(Debug, clap::Args)]
pub struct UpdateArgs {
    /// A bundle file (.raucb), or an https:// URL to download it from.
    #[arg(value_name = "FILE|URL")]
    pub bundle: String,
    /// Also accept a plain http:// URL (a lab server; the signature is checked all the same).
    #[arg(long)]
    pub allow_http: bool,
    /// The SHA-256 the download must have (64 hex digits), checked as it arrives.
    #[arg(long, value_name = "HEX")]
    pub sha256: Option<String>,
    /// Check the signature and print what the bundle is, install nothing.
    #[arg(long)]
    pub check_only: bool,
    /// The keyring the signature must chain to.
    #[arg(long, value_name = "FILE", default_value = KEYRING)]
    pub keyring: PathBuf,
    /// Where a download is kept until it is installed (then removed).
    #[arg(long, value_name = "DIR", default_value = CLI_SPOOL)]
    pub spool: PathBuf,
}

pub async fn run(args: UpdateArgs) -> ExitCode {
    let installer: Arc<dyn Installer> = Arc::new(Rauc::new(&args.keyring));
    let mut out = std::io::stdout();
    match run_with(&args, installer, Limits::DEFAULT, &mut out).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vantage update: {e}");
            ExitCode::FAILURE
        }
    }
}

fn is_url(s: &str) -> bool {
    s.contains("://")
}

/// Downloads (for a URL), checks, installs; progress goes to `out`.
pub async fn run_with(
    args: &UpdateArgs,
    installer: Arc<dyn Installer>,
    limits: Limits,
    out: &mut (dyn Write + Send),
) -> Result<(), String> {
    let sha256 = args.sha256.as_deref().map(parse_sha256).transpose()?;
    let (bundle, downloaded) = if is_url(&args.bundle) {
        super::download::check_url(&args.bundle, args.allow_http)?;
        let src = Source {
            url: &args.bundle,
            allow_http: args.allow_http,
            sha256,
            limits,
            ca_file: None,
        };
        let _ = writeln!(
            out,
            "downloading {} into {}",
            args.bundle,
            args.spool.display()
        );
        let mut shown = 0u64;
        let p = super::download(&src, &args.spool, &mut |n, total| {
            // A line per 10 % (or per 64 MiB without a length), not per chunk.
            let step = total.map_or(64 << 20, |t| (t / 10).max(1));
            if n == 0 || n >= shown + step || Some(n) == total {
                shown = n;
                let of = total.map(|t| format!(" of {t}")).unwrap_or_default();
                let _ = writeln!(out, "  {n}{of} bytes");
            }
        })
        .await?;
        (p, true)
    } else {
        if sha256.is_some() {
            return Err("--sha256 checks a download; give a URL".to_string());
        }
        let p = PathBuf::from(&args.bundle);
        if !p.is_file() {
            return Err(format!("{}: no such file", p.display()));
        }
        (p, false)
    };
    let r = check_then_install(args, &installer, &bundle, out).await;
    if downloaded {
        let _ = std::fs::remove_file(args.spool.join(DOWNLOAD_NAME));
    }
    r
}

async fn check_then_install(
    args: &UpdateArgs,
    installer: &Arc<dyn Installer>,
    bundle: &Path,
    out: &mut (dyn Write + Send),
) -> Result<(), String> {
    let _ = writeln!(
        out,
        "checking the signature against {}",
        args.keyring.display()
    );
    let info = super::check(installer, bundle).await?;
    let _ = writeln!(
        out,
        "signature good: {} version {}",
        info.compatible, info.version
    );
    if args.check_only {
        return Ok(());
    }
    let _ = writeln!(out, "installing into the other slot");
    // Lines as they come: the install runs on a blocking thread, the printing here.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let done = super::install(installer, bundle, move |pct, what| {
        let _ = tx.send(format!("  {pct:3}% {what}"));
    });
    tokio::pin!(done);
    let r = loop {
        tokio::select! {
            Some(line) = rx.recv() => { let _ = writeln!(out, "{line}"); }
            r = &mut done => break r,
        }
    };
    while let Ok(line) = rx.try_recv() {
        let _ = writeln!(out, "{line}");
    }
    r?;
    let _ = writeln!(
        out,
        "installed {}: reboot to start it (on trial: the health check keeps it or falls back)",
        info.version
    );
    Ok(())
}
