//! One-shot commands for debugging on a device.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use vantage_core::config::{parse_duration, parse_host};
use vantage_core::{IpProtocol, PingOptions, PingProbe, PingReport, resolve_host};

#[derive(Debug, Args)]
pub struct PingArgs {
    /// Host to ping: an IP address or a hostname.
    host: String,
    /// Stop after this many echo requests (0: until Ctrl-C).
    #[arg(long, short = 'c', default_value_t = 5)]
    count: u32,
    /// Time between requests.
    #[arg(long, short = 'i', default_value = "1s", value_parser = parse_duration)]
    interval: Duration,
    /// How long to wait for each reply.
    #[arg(long, short = 'W', default_value = "1s", value_parser = parse_duration)]
    timeout: Duration,
    /// ICMP payload bytes.
    #[arg(long, short = 's', default_value_t = 56, value_parser = clap::value_parser!(u16).range(8..=9000))]
    size: u16,
    /// IP TTL / hop limit.
    #[arg(long, short = 't', value_parser = clap::value_parser!(u8).range(1..))]
    ttl: Option<u8>,
    /// Use IPv4 only.
    #[arg(short = '4', conflicts_with = "ipv6")]
    ipv4: bool,
    /// Use IPv6 only.
    #[arg(short = '6')]
    ipv6: bool,
}

pub async fn ping(args: PingArgs) -> ExitCode {
    let host = match parse_host(&args.host) {
        Ok(h) => h,
        Err(msg) => {
            eprintln!("vantage ping: host {msg}");
            return ExitCode::from(2);
        }
    };
    let proto = match (args.ipv4, args.ipv6) {
        (true, _) => IpProtocol::Ipv4,
        (_, true) => IpProtocol::Ipv6,
        _ => IpProtocol::Auto,
    };
    let addr = match resolve_host(&host, proto).await {
        Ok(a) => a,
        Err(e) => {
            eprintln!("vantage ping: {e}");
            return ExitCode::from(2);
        }
    };
    let opts = PingOptions {
        packets: 1,
        timeout: args.timeout,
        size: usize::from(args.size),
        ttl: args.ttl,
        ..PingOptions::default()
    };
    println!("PING {host} ({addr}): {} data bytes", args.size);
    let probe = PingProbe::new();
    let mut total = PingReport::default();
    let mut ticker = tokio::time::interval(args.interval);
    let mut seq = 0u32;
    loop {
        if args.count != 0 && seq >= args.count {
            break;
        }
        tokio::select! {
            _ = ticker.tick() => {}
            _ = tokio::signal::ctrl_c() => break,
        }
        let r = tokio::select! {
            r = probe.round(addr, &opts) => r,
            _ = tokio::signal::ctrl_c() => break,
        };
        match r {
            Ok(r) => {
                for rtt in &r.rtts {
                    println!(
                        "{} bytes from {addr}: seq={seq} time={:.3} ms",
                        usize::from(args.size) + 8,
                        rtt.as_secs_f64() * 1e3
                    );
                }
                if r.duplicates > 0 {
                    println!(
                        "seq={seq}: {} duplicate repl{}",
                        r.duplicates,
                        if r.duplicates == 1 { "y" } else { "ies" }
                    );
                }
                if r.received == 0 {
                    println!(
                        "no reply for seq={seq}{}",
                        if r.icmp_errors > 0 {
                            " (ICMP error received)"
                        } else {
                            ""
                        }
                    );
                }
                total.sent += r.sent;
                total.received += r.received;
                total.duplicates += r.duplicates;
                total.icmp_errors += r.icmp_errors;
                total.rtts.extend(r.rtts);
            }
            Err(e) => {
                eprintln!("vantage ping: {e}");
                if matches!(e, vantage_core::ProbeError::Permission(_)) {
                    return ExitCode::from(2);
                }
                total.sent += 1;
            }
        }
        seq += 1;
    }
    println!("--- {host} ping statistics ---");
    println!(
        "{} packets transmitted, {} received, {}{:.1}% packet loss",
        total.sent,
        total.received,
        if total.duplicates > 0 {
            format!("+{} duplicates, ", total.duplicates)
        } else {
            String::new()
        },
        total.loss_ratio() * 100.0
    );
    if let (Some(min), Some(avg), Some(max), Some(sd)) = (
        total.min(),
        total.mean(),
        total.max(),
        total.stddev_seconds(),
    ) {
        println!(
            "rtt min/avg/max/mdev = {:.3}/{:.3}/{:.3}/{:.3} ms",
            min.as_secs_f64() * 1e3,
            avg.as_secs_f64() * 1e3,
            max.as_secs_f64() * 1e3,
            sd * 1e3
        );
    }
    if total.received > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
