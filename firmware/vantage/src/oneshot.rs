//! One-shot commands for debugging on a device.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use vantage_core::config::{parse_duration, parse_host};
use vantage_core::{
    Host, IpProtocol, Measurement, ModuleReport, Options, PingOptions, PingProbe, PingReport,
    ProbeError, ProbeKind, ProbeModule, ProbeRequest, Target, TraceDiscovery, TraceOptions,
    TraceProtocol, TraceSockets, defaults, resolve_host,
};

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

/// The address `host` names in the family `-4` or `-6` asks for; on failure the message for
/// `vantage CMD` is printed and the exit code is 2.
async fn address_of(
    cmd: &str,
    host: &Host,
    ipv4: bool,
    ipv6: bool,
) -> Result<std::net::IpAddr, ExitCode> {
    let proto = match (ipv4, ipv6) {
        (true, _) => IpProtocol::Ipv4,
        (_, true) => IpProtocol::Ipv6,
        _ => IpProtocol::Auto,
    };
    resolve_host(host, proto).await.map_err(|e| {
        eprintln!("vantage {cmd}: {e}");
        ExitCode::from(2)
    })
}

pub async fn ping(args: PingArgs) -> ExitCode {
    let host = match parse_host(&args.host) {
        Ok(h) => h,
        Err(msg) => {
            eprintln!("vantage ping: host {msg}");
            return ExitCode::from(2);
        }
    };
    let addr = match address_of("ping", &host, args.ipv4, args.ipv6).await {
        Ok(a) => a,
        Err(code) => return code,
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
                total.kernel_send_stamps += r.kernel_send_stamps;
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
        println!(
            "send times: {} of {} from the kernel's send timestamp, the rest read before sending",
            total.kernel_send_stamps, total.received
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
    /// Transport: udp (retried over TCP when truncated), tcp, tls (DNS over TLS) or https (DNS
    /// over HTTPS).
    #[arg(long, short = 'T', default_value = vantage_core::DnsTransport::Udp.as_str())]
    transport: String,
    /// Server port (default: 53, 853 for tls, 443 for https).
    #[arg(long, short = 'p')]
    port: Option<u16>,
    /// HTTPS: the URL path of the DNS endpoint (default: /dns-query).
    #[arg(long)]
    doh_path: Option<String>,
    /// HTTPS: send the query with GET (base64url in ?dns=) instead of POST.
    #[arg(long)]
    doh_get: bool,
    /// TLS and HTTPS: the name the server's certificate must carry (default: the server, if a
    /// name).
    #[arg(long)]
    server_name: Option<String>,
    /// TLS and HTTPS: trust the CA certificates in this PEM file instead of the built-in roots.
    #[arg(long)]
    ca_file: Option<String>,
    /// TLS and HTTPS: accept any certificate.
    #[arg(long)]
    insecure: bool,
    /// Clear the RD bit (ask an authoritative server about its own data).
    #[arg(long)]
    norecurse: bool,
    /// Set the EDNS DO bit.
    #[arg(long)]
    dnssec: bool,
    /// EDNS UDP payload size (512 to 65535; default 1232); 0 sends no EDNS record.
    #[arg(long)]
    edns_size: Option<u16>,
    /// How long to wait for the whole lookup (default 5s).
    #[arg(long, short = 'W')]
    timeout: Option<String>,
    /// Rcodes that count as success, exit 0 (default NOERROR).
    #[arg(long, value_delimiter = ',')]
    valid_rcodes: Vec<String>,
}

/// The command's flags and the `dns = {...}` keys they set: the config's own checks and
/// defaults judge them, and its messages name the flag.
const DNS_FLAGS: [(&str, &str); 14] = [
    ("query", "NAME"),
    ("type", "RECORD_TYPE"),
    ("transport", "--transport"),
    ("port", "--port"),
    ("doh_path", "--doh-path"),
    ("doh_method", "--doh-get"),
    ("server_name", "--server-name"),
    ("ca_file", "--ca-file"),
    ("insecure_skip_verify", "--insecure"),
    ("recursion_desired", "--norecurse"),
    ("dnssec", "--dnssec"),
    ("edns_udp_size", "--edns-size"),
    ("timeout", "--timeout"),
    ("valid_rcodes", "--valid-rcodes"),
];

/// The flags as a `dns = {...}` section; flags left out keep the config's defaults.
fn dns_section(a: &DnsArgs) -> toml::Table {
    use toml::Value as V;
    let mut t = toml::Table::new();
    let mut put = |k: &str, v: V| {
        t.insert(k.into(), v);
    };
    put("query", V::String(a.name.clone()));
    put("type", V::String(a.record_type.clone()));
    put("transport", V::String(a.transport.clone()));
    let text = |v: &Option<String>| v.clone().map(V::String);
    let on = |b: bool, v: bool| b.then_some(V::Boolean(v));
    let flags = [
        ("port", a.port.map(|p| V::Integer(p.into()))),
        ("doh_path", text(&a.doh_path)),
        ("doh_method", a.doh_get.then(|| V::String("get".into()))),
        ("server_name", text(&a.server_name)),
        ("ca_file", text(&a.ca_file)),
        ("insecure_skip_verify", on(a.insecure, true)),
        ("recursion_desired", on(a.norecurse, false)),
        ("dnssec", on(a.dnssec, true)),
        ("edns_udp_size", a.edns_size.map(|n| V::Integer(n.into()))),
        ("timeout", text(&a.timeout)),
    ];
    for (k, v) in flags {
        if let Some(v) = v {
            put(k, v);
        }
    }
    if !a.valid_rcodes.is_empty() {
        let codes = a.valid_rcodes.iter().cloned().map(V::String).collect();
        put("valid_rcodes", V::Array(codes));
    }
    t
}

/// A config message about `dns.KEY` as one about the flag that set it.
fn dns_flag_message(msg: &str) -> String {
    let Some(rest) = msg.strip_prefix("dns.") else {
        return msg.to_string();
    };
    let key_end = rest.find([':', '[']).unwrap_or(rest.len());
    match DNS_FLAGS.iter().find(|(k, _)| *k == &rest[..key_end]) {
        Some((_, flag)) => format!("{flag}{}", &rest[key_end..]),
        None => msg.to_string(),
    }
}

pub async fn dns(args: DnsArgs) -> ExitCode {
    use vantage_core::{DnsOptions, DnsProbe, DnsTransport, ModuleId};
    let fail = |msg: String| {
        eprintln!("vantage dns: {msg}");
        ExitCode::from(2)
    };
    let host = match parse_host(&args.server) {
        Ok(h) => h,
        Err(msg) => return fail(format!("server {msg}")),
    };
    let dns = ModuleId::by_name("dns").expect("the DNS module is registered");
    let opts = match vantage_core::config::module_options_from(dns, dns_section(&args), Some(&host))
    {
        Ok(o) => o,
        Err(msg) => return fail(dns_flag_message(&msg)),
    };
    let Some(opts) = opts.as_any().downcast_ref::<DnsOptions>() else {
        return fail("the DNS module gave no DNS options".into());
    };
    let (report, error) = DnsProbe::new().query(&host, opts, opts.timeout).await;
    let server = report
        .server
        .map_or_else(|| host.to_string(), |s| s.to_string());
    println!(
        ";; {} {} {} @{server} over {}{}{}",
        opts.query,
        opts.class,
        opts.record_type,
        report.transport.unwrap_or(opts.transport),
        if opts.transport == DnsTransport::Https {
            format!(" ({} {})", opts.doh_method.as_str(), opts.doh_path)
        } else {
            String::new()
        },
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

#[derive(Debug, Args)]
pub struct TraceArgs {
    /// Host to trace: an IP address or a hostname.
    host: String,
    /// What to send: udp, icmp or tcp.
    #[arg(long, short = 'P', default_value = "udp", value_parser = parse_protocol)]
    protocol: TraceProtocol,
    /// Destination port (udp: 33434, tcp: 80).
    #[arg(long, short = 'p', value_parser = clap::value_parser!(u16).range(1..))]
    port: Option<u16>,
    /// First TTL probed.
    #[arg(long, short = 'f', default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..))]
    first_ttl: u8,
    /// Highest TTL probed.
    #[arg(long, short = 'm', default_value_t = 30, value_parser = clap::value_parser!(u8).range(1..))]
    max_hops: u8,
    /// Probes per hop in each trace.
    #[arg(long, short = 'q', default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=10))]
    queries: u32,
    /// How long to wait for each answer.
    #[arg(long, short = 'w', default_value = "2s", value_parser = parse_duration)]
    timeout: Duration,
    /// Traces to run; the table sums them up (like mtr's report cycles).
    #[arg(long, short = 'c', default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    cycles: u32,
    /// Time between traces when running several.
    #[arg(long, short = 'i', default_value = "1s", value_parser = parse_duration)]
    interval: Duration,
    /// Paris flows per trace; more discover more ECMP branches.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=16))]
    flows: u32,
    /// How branches of load-balanced paths are looked for: mda (new flows at each hop until
    /// the stopping rule says every next hop was seen) or flows (only the --flows).
    #[arg(long, default_value = "mda", value_parser = parse_discovery)]
    discovery: TraceDiscovery,
    /// The most probes one trace sends, discovery included.
    #[arg(long, default_value_t = defaults::TRACE_PROBE_BUDGET,
          value_parser = clap::value_parser!(u32).range(
              defaults::TRACE_PROBE_BUDGET_RANGE.min..=defaults::TRACE_PROBE_BUDGET_RANGE.max))]
    probe_budget: u32,
    /// The most probes a second the trace sends (scamper's -p).
    #[arg(long, default_value_t = defaults::TRACE_PROBES_PER_SECOND,
          value_parser = clap::value_parser!(u32).range(
              defaults::TRACE_PROBES_PER_SECOND_RANGE.min..=defaults::TRACE_PROBES_PER_SECOND_RANGE.max))]
    probes_per_second: u32,
    /// Packet size in bytes, IP header included (default 60 for IPv4, 80 for IPv6).
    #[arg(long, short = 's', value_parser = clap::value_parser!(u16).range(40..=9000))]
    size: Option<u16>,
    /// TOS byte / IPv6 traffic class.
    #[arg(long, short = 't')]
    tos: Option<u8>,
    /// Source address.
    #[arg(long)]
    source: Option<std::net::IpAddr>,
    /// Socket kinds: auto, unprivileged or raw.
    #[arg(long, default_value = "auto", value_parser = parse_sockets)]
    sockets: TraceSockets,
    /// Use IPv4 only.
    #[arg(short = '4', conflicts_with = "ipv6")]
    ipv4: bool,
    /// Use IPv6 only.
    #[arg(short = '6')]
    ipv6: bool,
}

fn parse_protocol(s: &str) -> Result<TraceProtocol, String> {
    s.parse()
}

fn parse_sockets(s: &str) -> Result<TraceSockets, String> {
    s.parse()
}

fn parse_discovery(s: &str) -> Result<TraceDiscovery, String> {
    s.parse()
}

pub async fn trace(args: TraceArgs) -> ExitCode {
    let host = match parse_host(&args.host) {
        Ok(h) => h,
        Err(msg) => {
            eprintln!("vantage trace: host {msg}");
            return ExitCode::from(2);
        }
    };
    if args.first_ttl > args.max_hops {
        eprintln!(
            "vantage trace: first TTL {} is above the maximum {}",
            args.first_ttl, args.max_hops
        );
        return ExitCode::from(2);
    }
    let addr = match address_of("trace", &host, args.ipv4, args.ipv6).await {
        Ok(a) => a,
        Err(code) => return code,
    };
    if args.source.is_some_and(|s| s.is_ipv4() != addr.is_ipv4()) {
        eprintln!("vantage trace: source and {addr} are not of the same IP version");
        return ExitCode::from(2);
    }
    let opts = TraceOptions {
        protocol: args.protocol,
        port: match (args.protocol, args.port) {
            (TraceProtocol::Icmp, _) => 0,
            (_, Some(p)) => p,
            (TraceProtocol::Udp, None) => defaults::TRACE_UDP_PORT,
            (TraceProtocol::Tcp, None) => defaults::TRACE_TCP_PORT,
        },
        first_ttl: args.first_ttl,
        max_hops: args.max_hops,
        probes_per_hop: args.queries,
        timeout: args.timeout,
        size: args.size.map(usize::from),
        tos: args.tos,
        source: args.source,
        flows: args.flows,
        discovery: args.discovery,
        probe_budget: args.probe_budget,
        probes_per_second: args.probes_per_second,
        sockets: args.sockets,
        ..TraceOptions::default()
    };
    let kind = ProbeKind::TRACE;
    let Some(m) = kind.module() else {
        return ExitCode::from(2);
    };
    let options: Arc<dyn Options> = Arc::new(opts);
    let mut target = Target {
        name: "cli".into(),
        host: Host::Ip(addr),
        labels: Default::default(),
        probes: vec![(kind, args.interval)],
        modules: Vec::new(),
    };
    target.set_options(kind, options.clone());
    let (rounds, success) = match cycles(m, target, args.cycles, args.interval).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vantage trace: {e}");
            return ExitCode::from(2);
        }
    };
    let Some(text) = m.text(&host.to_string(), options.as_ref(), &rounds) else {
        return ExitCode::FAILURE;
    };
    print!("{text}");
    if success {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Up to `n` rounds of `target` (its one kind, `m`), `interval` apart, until Ctrl-C: their
/// reports and whether one succeeded, or the error of a round that measured nothing (no
/// socket, no address).
async fn cycles(
    m: &dyn ProbeModule,
    target: Target,
    n: u32,
    interval: Duration,
) -> Result<(Vec<ModuleReport>, bool), ProbeError> {
    let probe = m.probe();
    let target = Arc::new(target);
    let (mut reports, mut success) = (Vec::new(), false);
    let mut ticker = tokio::time::interval(interval);
    for _ in 0..n {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = tokio::signal::ctrl_c() => break,
        }
        let req = ProbeRequest {
            target: target.clone(),
            deadline: None,
            guard: None,
            progress: None,
        };
        let s = tokio::select! {
            s = probe.run(req) => s,
            _ = tokio::signal::ctrl_c() => break,
        };
        success |= s.success;
        match s.measurement {
            Measurement::Module(r) => reports.push(r),
            _ => return Err(s.error.unwrap_or(ProbeError::Timeout)),
        }
    }
    Ok((reports, success))
}

/// `vantage KIND TARGET [--OPTION VALUE | --OPTION=VALUE | --FLAG]...`: one round of a probe
/// module with the options `/probe` takes (and the file settings only the device may name),
/// printed as JSON. Exit 0 on success, 1 on failure, 2 for bad arguments.
pub async fn module(args: Vec<String>) -> ExitCode {
    let Some((name, rest)) = args.split_first() else {
        return ExitCode::from(2);
    };
    let Some(id) = vantage_core::ModuleId::by_name(name) else {
        eprintln!("vantage: unknown command {name:?}; see vantage --help");
        return ExitCode::from(2);
    };
    let m = id.module();
    let parsed = module_args(rest).and_then(|(target, options)| {
        let known = |k: &str| m.probe_params().contains(&k) || m.trusted_params().contains(&k);
        if let Some((k, _)) = options.iter().find(|(k, _)| !known(k)) {
            return Err(format!("unknown option --{k}"));
        }
        let param = |k: &str| {
            options
                .iter()
                .find(|(o, _)| o == k)
                .map(|(_, v)| v.as_str())
        };
        let q = vantage_core::ProbeQuery {
            target: &target,
            param: &param,
            trusted: true,
        };
        m.probe_options(&q)
    });
    let (host, options) = match parsed {
        Ok(p) => p,
        Err(msg) => {
            eprintln!("vantage {name}: {msg}");
            return ExitCode::from(2);
        }
    };
    let interval = m.round_length(options.as_ref()) + Duration::from_secs(1);
    let target = vantage_core::Target {
        name: name.clone(),
        host,
        labels: Default::default(),
        probes: vec![(vantage_core::ProbeKind::Module(id), interval)],
        modules: vec![vantage_core::ModuleOptions { kind: id, options }],
    };
    let sample = m
        .probe()
        .run(vantage_core::ProbeRequest::for_target(&target))
        .await;
    println!(
        "{}",
        serde_json::to_string_pretty(&sample).unwrap_or_default()
    );
    if sample.success {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The target and `--option value` pairs (`-` in a name reads as `_`).
fn module_args(args: &[String]) -> Result<(String, Vec<(String, String)>), String> {
    let mut target = None;
    let mut options = Vec::new();
    let mut it = args.iter().peekable();
    while let Some(a) = it.next() {
        let Some(key) = a.strip_prefix("--") else {
            if target.replace(a.clone()).is_some() {
                return Err(format!("unexpected argument {a:?}"));
            }
            continue;
        };
        let (k, v) = match key.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => match it.next_if(|v| !v.starts_with("--")) {
                Some(v) => (key.to_string(), v.clone()),
                None => (key.to_string(), "true".to_string()),
            },
        };
        options.push((k.replace('-', "_"), v));
    }
    Ok((target.ok_or("TARGET is missing")?, options))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `vantage dns --help` states the defaults the config applies; they are the config's.
    #[test]
    fn dns_help_states_the_configs_defaults() {
        use clap::Args as _;
        use vantage_core::defaults as d;
        let help = DnsArgs::augment_args(clap::Command::new("dns"))
            .render_long_help()
            .to_string()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let r = d::DNS_EDNS_UDP_SIZE_RANGE;
        for want in [
            format!("(default: {})", d::DNS_DOH_PATH),
            format!("({} to {}; default {})", r.min, r.max, d::DNS_EDNS_UDP_SIZE),
            format!("(default {})", humantime::format_duration(d::DNS_TIMEOUT)),
            "(default NOERROR)".to_string(),
        ] {
            assert!(help.contains(&want), "{want} in {help}");
        }
        let opts = vantage_core::DnsOptions::new("x.test", "A").unwrap();
        assert_eq!(opts.valid_rcodes, [0], "NOERROR is the default");
    }

    /// Every flag the command turns into a `dns = {...}` key names a key the config reads,
    /// so a message about it can name the flag.
    #[test]
    fn dns_flags_map_to_config_keys() {
        assert_eq!(
            dns_flag_message("dns.edns_udp_size: must be between 512 and 65535, got 100"),
            "--edns-size: must be between 512 and 65535, got 100"
        );
        assert_eq!(
            dns_flag_message("dns.valid_rcodes[0]: \"X\" is not an rcode"),
            "--valid-rcodes[0]: \"X\" is not an rcode"
        );
        assert_eq!(dns_flag_message("other: x"), "other: x");
    }

    #[test]
    fn module_arguments_read_like_probe_parameters() {
        let args = |a: &[&str]| module_args(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let (t, o) = args(&["h:443", "--tls", "--server-name", "x.test", "--attempts=5"]).unwrap();
        assert_eq!(t, "h:443");
        let o: Vec<(&str, &str)> = o.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            o,
            [
                ("tls", "true"),
                ("server_name", "x.test"),
                ("attempts", "5")
            ]
        );
        assert_eq!(args(&["--tls"]).unwrap_err(), "TARGET is missing");
        assert!(
            args(&["a", "b"])
                .unwrap_err()
                .contains("unexpected argument \"b\"")
        );
    }
}
