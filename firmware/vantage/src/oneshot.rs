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

#[derive(Debug, Args)]
pub struct DnsArgs {
    /// The server to ask: an IP address, a hostname, or "system" for the nameservers of
    /// /etc/resolv.conf.
    server: String,
    /// The name to look up (an IP address for PTR).
    name: String,
    /// Record type: A, AAAA, MX, TXT, NS, SOA, CNAME, PTR, SRV, CAA, ...
    #[arg(default_value = "A")]
    record_type: String,
    /// Transport: udp (retried over TCP when truncated), tcp or tls.
    #[arg(long, short = 'T', default_value = "udp")]
    transport: String,
    /// Server port (default: 53, or 853 for tls).
    #[arg(long, short = 'p')]
    port: Option<u16>,
    /// TLS: the name the server's certificate must carry (default: the server, if a name).
    #[arg(long)]
    server_name: Option<String>,
    /// TLS: trust the CA certificates in this PEM file instead of the built-in roots.
    #[arg(long)]
    ca_file: Option<std::path::PathBuf>,
    /// TLS: accept any certificate.
    #[arg(long)]
    insecure: bool,
    /// Clear the RD bit (ask an authoritative server about its own data).
    #[arg(long)]
    norecurse: bool,
    /// Set the EDNS DO bit.
    #[arg(long)]
    dnssec: bool,
    /// EDNS UDP payload size; 0 sends no EDNS record.
    #[arg(long, default_value_t = vantage_core::defaults::DNS_EDNS_UDP_SIZE)]
    edns_size: u16,
    /// How long to wait for the answer.
    #[arg(long, short = 'W', default_value = "5s", value_parser = parse_duration)]
    timeout: Duration,
    /// Rcodes that count as success (exit 0).
    #[arg(long, value_delimiter = ',', default_value = "NOERROR")]
    valid_rcodes: Vec<String>,
}

pub async fn dns(args: DnsArgs) -> ExitCode {
    use vantage_core::config::parse_rcode;
    use vantage_core::{DnsOptions, DnsProbe, DnsTransport};
    let fail = |msg: String| {
        eprintln!("vantage dns: {msg}");
        ExitCode::from(2)
    };
    let host = match parse_host(&args.server) {
        Ok(h) => h,
        Err(msg) => return fail(format!("server {msg}")),
    };
    let mut opts = match DnsOptions::new(&args.name, &args.record_type) {
        Ok(o) => o,
        Err(msg) => return fail(msg),
    };
    opts.transport = match args.transport.as_str() {
        "udp" => DnsTransport::Udp,
        "tcp" => DnsTransport::Tcp,
        "tls" | "dot" => DnsTransport::Tls,
        other => return fail(format!("transport {other:?} is not one of udp, tcp, tls")),
    };
    if opts.transport != DnsTransport::Tls
        && (args.server_name.is_some() || args.ca_file.is_some() || args.insecure)
    {
        return fail("--server-name, --ca-file and --insecure need --transport tls".into());
    }
    if args.dnssec && args.edns_size == 0 {
        return fail("--dnssec needs EDNS (--edns-size above 0)".into());
    }
    if args.edns_size != 0 && args.edns_size < 512 {
        return fail("--edns-size must be 0 or at least 512".into());
    }
    opts.port = args.port.unwrap_or(opts.transport.default_port());
    opts.server_name = args.server_name;
    opts.ca_file = args.ca_file;
    opts.insecure_skip_verify = args.insecure;
    opts.recursion_desired = !args.norecurse;
    opts.dnssec = args.dnssec;
    opts.edns_udp_size = args.edns_size;
    opts.timeout = args.timeout;
    opts.valid_rcodes.clear();
    for r in &args.valid_rcodes {
        match parse_rcode(r) {
            Ok(n) => opts.valid_rcodes.push(n),
            Err(msg) => return fail(msg),
        }
    }

    let (report, error) = DnsProbe::new().query(&host, &opts, opts.timeout).await;
    let server = report
        .server
        .map_or_else(|| host.to_string(), |s| s.to_string());
    println!(
        ";; {} {} {} @{server} over {}{}",
        opts.query,
        opts.class,
        opts.record_type,
        report.transport.unwrap_or(opts.transport),
        if report.truncated_retry {
            " (UDP answer truncated, retried)"
        } else {
            ""
        }
    );
    if let Some(rcode) = report.rcode_name() {
        let f = &report.flags;
        let flags: Vec<&str> = [
            (f.authoritative, "aa"),
            (f.truncated, "tc"),
            (opts.recursion_desired, "rd"),
            (f.recursion_available, "ra"),
            (f.authentic_data, "ad"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
        println!(
            ";; status: {rcode}, flags: {}; ANSWER: {}, AUTHORITY: {}, ADDITIONAL: {}; {} bytes",
            flags.join(" "),
            report.answers.len(),
            report.authority_records,
            report.additional_records,
            report.response_bytes
        );
        for r in &report.answers {
            println!("{r}");
        }
    }
    let ms = |d: Option<Duration>| {
        d.map_or("-".to_string(), |d| {
            format!("{:.3} ms", d.as_secs_f64() * 1e3)
        })
    };
    let p = &report.phases;
    println!(
        ";; resolve {}, connect {}, tls {}, request {}; lookup {}",
        ms(p.resolve),
        ms(p.connect),
        ms(p.tls),
        ms(p.request),
        ms(report.lookup)
    );
    if report.attempts > 1 {
        println!(";; {} servers asked", report.attempts);
    }
    if report.stray_datagrams > 0 {
        println!(";; {} stray datagrams ignored", report.stray_datagrams);
    }
    match error {
        None => ExitCode::SUCCESS,
        Some(e) => {
            eprintln!("vantage dns: {e}");
            ExitCode::FAILURE
        }
    }
}
