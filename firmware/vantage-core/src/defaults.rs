//! Documented defaults, shared by the config loader, the CLI and the web page.

use std::time::Duration;

/// The smallest and largest value a setting accepts, both included. The config loader holds
/// every ranged setting to one of these (see `Check::ranged`), the docs quote them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds<T> {
    pub min: T,
    pub max: T,
}

/// The bounds from `min` to `max`, both included.
pub const fn between<T>(min: T, max: T) -> Bounds<T> {
    Bounds { min, max }
}

const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Ping: one round every second, like smokeping_prober's continuous ping.
pub const PING_INTERVAL: Duration = Duration::from_secs(1);
/// DNS: one query every 15 seconds, a common blackbox scrape interval.
pub const DNS_INTERVAL: Duration = Duration::from_secs(15);
/// Traceroute: one trace a minute; paths change rarely and traces cost packets.
pub const TRACE_INTERVAL: Duration = Duration::from_secs(60);

/// Echo requests sent per ping round.
pub const PING_PACKETS: u32 = 1;
/// Gap between the echo requests of one round.
pub const PING_SPACING: Duration = Duration::from_millis(100);
/// How long to wait for each echo reply.
pub const PING_TIMEOUT: Duration = Duration::from_secs(1);
/// ICMP payload bytes, as `ping` sends by default (64-byte ICMP message).
pub const PING_PAYLOAD_SIZE: usize = 56;
/// `ping.packets`.
pub const PING_PACKETS_RANGE: Bounds<i64> = between(1, 100);
/// `ping.spacing`.
pub const PING_SPACING_RANGE: Bounds<Duration> = between(ms(1), ms(10_000));
/// `ping.size`: the first 8 bytes carry the cookie that matches replies; 9000 is a jumbo frame.
pub const PING_SIZE_RANGE: Bounds<i64> = between(8, 9000);
/// `ttl`, `first_ttl` and `max_hops`: an IP TTL / IPv6 hop limit.
pub const TTL_RANGE: Bounds<i64> = between(1, 255);
/// `tos`: the whole IPv4 TOS / IPv6 traffic-class byte.
pub const TOS_RANGE: Bounds<i64> = between(0, 255);
/// `dscp`: the upper six bits of the TOS byte.
pub const DSCP_RANGE: Bounds<i64> = between(0, 63);
/// A TCP or UDP port.
pub const PORT_RANGE: Bounds<i64> = between(1, 65535);

/// Traceroute: UDP destination port, as traceroute(8) starts with; one fixed port keeps every
/// probe of a flow on one ECMP path (Paris traceroute).
pub const TRACE_UDP_PORT: u16 = 33434;
/// Traceroute: TCP destination port for SYN probes.
pub const TRACE_TCP_PORT: u16 = 80;
/// First TTL probed.
pub const TRACE_FIRST_TTL: u8 = 1;
/// Highest TTL probed, as traceroute and mtr default to.
pub const TRACE_MAX_HOPS: u8 = 30;
/// Probes per hop and flow in one trace, as traceroute sends.
pub const TRACE_PROBES_PER_HOP: u32 = 3;
/// Gap between the successive probes of one hop; zero sends them back to back (traceroute -z 0).
pub const TRACE_SPACING: Duration = Duration::ZERO;
/// How long to wait for each probe's answer. Routers answer from their slow path, so this is
/// more generous than ping's.
pub const TRACE_TIMEOUT: Duration = Duration::from_secs(2);
/// Packet size in bytes including the IP header, as traceroute sends (60 for IPv4, 80 for IPv6).
pub const TRACE_SIZE_V4: usize = 60;
pub const TRACE_SIZE_V6: usize = 80;
/// Paris flows (fixed 5-tuples) probed per trace; more flows discover more ECMP branches.
pub const TRACE_FLOWS: u32 = 1;
/// `trace.probe_budget`: the most probes one trace sends, multipath discovery included. A
/// 10-hop path costs about 80 (3 probes per hop, plus 5 flows a hop to confirm a single next
/// hop); 256 leaves room for a 3-way split (16 flows) at several hops.
pub const TRACE_PROBE_BUDGET: u32 = 256;
/// `trace.probe_budget`: from the MDA's stopping point for one next hop to the packets one
/// trace may send at all.
pub const TRACE_PROBE_BUDGET_RANGE: Bounds<i64> = between(6, TRACE_MAX_PACKETS as i64);
/// `trace.probes_per_second`: the rate one trace may send at (scamper's `-p`). A 10-hop path's
/// 80 probes leave in under half a second; a router at 100 probes a second from one trace
/// stays well within what its ICMP rate limiter is built for.
pub const TRACE_PROBES_PER_SECOND: u32 = 100;
/// `trace.probes_per_second`: from one a second to a batch every 5 ms.
pub const TRACE_PROBES_PER_SECOND_RANGE: Bounds<i64> = between(1, 12_800);
/// `device.trace_probes_per_second`: the rate all traces running at once may send at together.
/// 1000 probes of 60 bytes a second are under 0.5 Mbit/s on the uplink, and 60,000 probes a
/// minute: about 750 traces of a 10-hop path each minute.
pub const DEVICE_TRACE_PROBES_PER_SECOND: u32 = 1000;
/// `device.trace_probes_per_second`.
pub const DEVICE_TRACE_PROBES_PER_SECOND_RANGE: Bounds<i64> = between(1, 100_000);
/// `trace.probes_per_hop`.
pub const TRACE_PROBES_PER_HOP_RANGE: Bounds<i64> = between(1, 10);
/// `trace.spacing` when not zero (zero means back to back).
pub const TRACE_SPACING_RANGE: Bounds<Duration> = between(ms(1), ms(10_000));
/// `trace.flows`.
pub const TRACE_FLOWS_RANGE: Bounds<i64> = between(1, 16);
/// `trace.path_window`: from a second to a week.
pub const TRACE_PATH_WINDOW_RANGE: Bounds<Duration> =
    between(Duration::from_secs(1), Duration::from_secs(7 * 24 * 3600));
/// How long a path stays known after it was last seen: a flow flipping between paths seen within
/// this window is not a path change.
pub const TRACE_PATH_WINDOW: Duration = Duration::from_secs(600);
/// Upper bound on the packets of one trace (hops × probes per hop × flows).
pub const TRACE_MAX_PACKETS: u32 = 4096;
/// How long a DNS probe waits for its answer, TCP retry included (blackbox_exporter's default
/// scrape timeout is 10s; a resolver that needs more than 5s is broken for applications).
pub const DNS_TIMEOUT: Duration = Duration::from_secs(5);
/// EDNS UDP payload size: the DNS Flag Day 2020 value, which avoids IP fragmentation.
pub const DNS_EDNS_UDP_SIZE: u16 = 1232;
/// `dns.edns_udp_size` when not 0 (0: no EDNS): RFC 6891's smallest and largest.
pub const DNS_EDNS_UDP_SIZE_RANGE: Bounds<i64> = between(512, 65535);
/// `dns.min_answers`.
pub const DNS_MIN_ANSWERS_RANGE: Bounds<i64> = between(0, 65535);
/// The URL path of a DNS over HTTPS endpoint: the one RFC 8484's examples use, and unbound's,
/// BIND's and most public resolvers' default.
pub const DNS_DOH_PATH: &str = "/dns-query";
/// The DNS target host that means "the nameservers in /etc/resolv.conf".
pub const SYSTEM_RESOLVER: &str = "system";
/// Where the system's nameservers are listed.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";
/// Datagrams that are not our answer (wrong ID, garbage) tolerated per query before giving up.
pub const DNS_MAX_STRAY_DATAGRAMS: u32 = 64;

/// Bounds every interval must fall within.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
pub const MAX_INTERVAL: Duration = Duration::from_secs(24 * 3600);
/// Every probe's `interval`.
pub const INTERVAL_RANGE: Bounds<Duration> = between(MIN_INTERVAL, MAX_INTERVAL);
/// Bounds for probe timeouts.
pub const MIN_TIMEOUT: Duration = Duration::from_millis(10);
pub const MAX_TIMEOUT: Duration = Duration::from_secs(30);
/// Every probe's `timeout`.
pub const TIMEOUT_RANGE: Bounds<Duration> = between(MIN_TIMEOUT, MAX_TIMEOUT);

/// Upper bound on probe rounds running at the same time across all targets.
pub const MAX_CONCURRENT_PROBES: usize = 16_384;

/// Hostname length limit from RFC 1123 / RFC 1035.
pub const MAX_HOST_LEN: usize = 253;
/// Target names appear in URLs, labels and file names: keep them short.
pub const MAX_NAME_LEN: usize = 64;
/// Label values beyond this length are almost certainly a mistake.
pub const MAX_LABEL_VALUE_LEN: usize = 256;
/// Labels per target (cardinality guard).
pub const MAX_LABELS: usize = 16;
/// Targets per config file.
pub const MAX_TARGETS: usize = 20_000;

/// `[probe_endpoint] ports`: the ports `/probe` may reach per probe kind unless the config
/// lists others. The well-known ports of each kind's service, so `/probe` is no port scanner:
/// DNS over UDP/TCP, over HTTPS and over TLS; HTTP and HTTPS; and for TCP the common service
/// ports a reachability check asks about (SSH, SMTP, DNS, HTTP(S), mail submission, DoT, IMAPS,
/// POP3S). Kinds without ports (ping, trace) are not listed.
pub const PROBE_ENDPOINT_PORTS: [(&str, &[u16]); 3] = [
    ("dns", &[53, 443, 853]),
    ("http", &[80, 443]),
    ("tcp", &[22, 25, 53, 80, 443, 465, 587, 853, 993, 995]),
];
/// `[probe_endpoint]` host names of cloud metadata services, refused by `/probe` (with their
/// addresses, see `config::ProbeEndpoint::check_addr`) unless `allow_link_local = true`.
pub const METADATA_NAMES: [&str; 5] = [
    "metadata",
    "metadata.google.internal",
    "metadata.goog",
    "instance-data",
    "instance-data.ec2.internal",
];
