//! Options of the DNS probe.

use std::fmt;
use std::hash::Hash;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use hickory_proto::rr::{DNSClass, Name, RecordType};
use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::super::options::ip_protocol;
pub use super::super::pattern::Pattern;
use crate::config::check::{self, Check, Keys, written_at};
use crate::defaults::{self, self as D};
use crate::types::{IpProtocol, ModuleId};

/// `probes = ["dns"]`, `dns = {...}`, `probe="dns"`, `module=dns`.
pub(crate) const NAME: &str = "dns";
/// The DNS module's kind.
pub(crate) const KIND: ModuleId = ModuleId(NAME);

/// `[defaults.dns]` and `targets[].dns`, as written. A target's value wins over
/// `[defaults.dns]`, which wins over the built-in default.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawDns {
    /// Time between queries for this probe; overrides the target's `interval`.
    pub interval: Option<Spanned<String>>,
    /// The name to ask for. For `type = "PTR"` an IP address is turned into its reverse name.
    pub query: Option<Spanned<String>>,
    /// Record type: A, AAAA, MX, TXT, NS, SOA, CNAME, PTR, SRV, CAA, ... (default A).
    #[serde(rename = "type")]
    pub record_type: Option<Spanned<String>>,
    /// Query class: IN (default), CH (e.g. `version.bind`) or HS.
    pub class: Option<Spanned<String>>,
    /// `udp` (default; retried over TCP when the answer is truncated), `tcp`, `tls` (DNS over
    /// TLS) or `https` (DNS over HTTPS).
    pub transport: Option<Spanned<String>>,
    /// Server port; 53 for udp/tcp, 853 for tls, 443 for https.
    pub port: Option<Spanned<i64>>,
    /// HTTPS: the URL path of the DNS endpoint (default `/dns-query`).
    pub doh_path: Option<Spanned<String>>,
    /// HTTPS: `post` (default) or `get` (the query base64url-encoded in `?dns=`).
    pub doh_method: Option<Spanned<String>>,
    /// TLS: the name the server's certificate must carry (default: the host, if it is a name).
    pub server_name: Option<Spanned<String>>,
    /// TLS: a PEM file of CA certificates to trust instead of the built-in web PKI roots.
    pub ca_file: Option<Spanned<String>>,
    /// TLS: accept any certificate. Only for testing.
    pub insecure_skip_verify: Option<Spanned<bool>>,
    /// The RD bit (default true). Set false to ask an authoritative server about its own data.
    pub recursion_desired: Option<Spanned<bool>>,
    /// Set the EDNS DO bit, asking for DNSSEC records (default false).
    pub dnssec: Option<Spanned<bool>>,
    /// EDNS UDP payload size advertised (512..=65535, default 1232); 0 sends no EDNS record.
    pub edns_udp_size: Option<Spanned<i64>>,
    /// How long to wait for the answer, connection and retry over TCP included (default 5s).
    pub timeout: Option<Spanned<String>>,
    /// Rcodes that count as success (default ["NOERROR"]).
    pub valid_rcodes: Option<Spanned<Vec<Spanned<String>>>>,
    /// Each of these must be an answer record's data (an IP, a name or text).
    pub answer_contains: Option<Spanned<Vec<Spanned<String>>>>,
    /// None of these may be an answer record's data.
    pub answer_not_contains: Option<Spanned<Vec<Spanned<String>>>>,
    /// Each regex must match at least one answer record (`name TTL CLASS TYPE data`).
    pub answer_match: Option<Spanned<Vec<Spanned<String>>>>,
    /// No answer record may match any of these regexes.
    pub answer_not_match: Option<Spanned<Vec<Spanned<String>>>>,
    /// Fewest answer records that count as success (default 0).
    pub min_answers: Option<Spanned<i64>>,
    /// `auto`, `ipv4` or `ipv6`: which address of a server hostname to use.
    pub ip_protocol: Option<Spanned<String>>,
    /// Source address to send from.
    pub source: Option<Spanned<String>>,
}

impl Keys for RawDns {
    fn has(&self, name: &str) -> bool {
        match name {
            "interval" => self.interval.is_some(),
            "query" => self.query.is_some(),
            "type" => self.record_type.is_some(),
            "class" => self.class.is_some(),
            "transport" => self.transport.is_some(),
            "port" => self.port.is_some(),
            "doh_path" => self.doh_path.is_some(),
            "doh_method" => self.doh_method.is_some(),
            "server_name" => self.server_name.is_some(),
            "ca_file" => self.ca_file.is_some(),
            "insecure_skip_verify" => self.insecure_skip_verify.is_some(),
            "recursion_desired" => self.recursion_desired.is_some(),
            "dnssec" => self.dnssec.is_some(),
            "edns_udp_size" => self.edns_udp_size.is_some(),
            "timeout" => self.timeout.is_some(),
            "valid_rcodes" => self.valid_rcodes.is_some(),
            "answer_contains" => self.answer_contains.is_some(),
            "answer_not_contains" => self.answer_not_contains.is_some(),
            "answer_match" => self.answer_match.is_some(),
            "answer_not_match" => self.answer_not_match.is_some(),
            "min_answers" => self.min_answers.is_some(),
            "ip_protocol" => self.ip_protocol.is_some(),
            "source" => self.source.is_some(),
            _ => false,
        }
    }
}

/// How the query travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DnsTransport {
    /// UDP, retried over TCP when the answer comes back truncated.
    #[default]
    Udp,
    Tcp,
    /// DNS over TLS (RFC 7858).
    Tls,
    /// DNS over HTTPS (RFC 8484), over HTTP/2.
    Https,
}

impl DnsTransport {
    pub const ALL: [DnsTransport; 4] = [
        DnsTransport::Udp,
        DnsTransport::Tcp,
        DnsTransport::Tls,
        DnsTransport::Https,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DnsTransport::Udp => "udp",
            DnsTransport::Tcp => "tcp",
            DnsTransport::Tls => "tls",
            DnsTransport::Https => "https",
        }
    }

    pub fn default_port(self) -> u16 {
        match self {
            DnsTransport::Udp | DnsTransport::Tcp => 53,
            DnsTransport::Tls => 853,
            DnsTransport::Https => 443,
        }
    }

    /// Whether the exchange runs over TLS (and the TLS options apply).
    pub fn is_tls(self) -> bool {
        matches!(self, DnsTransport::Tls | DnsTransport::Https)
    }

    /// The transport a config or command-line word names (`dot` and `doh` are aliases).
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "udp" => Ok(DnsTransport::Udp),
            "tcp" => Ok(DnsTransport::Tcp),
            "tls" | "dot" => Ok(DnsTransport::Tls),
            "https" | "doh" => Ok(DnsTransport::Https),
            other => Err(format!("{other:?} is not one of udp, tcp, tls, https")),
        }
    }
}

/// How a DNS over HTTPS query is sent (RFC 8484 section 4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DohMethod {
    /// The query as the request body: no size limit from URL lengths.
    #[default]
    Post,
    /// The query base64url-encoded in the `dns` URL parameter: cacheable by HTTP caches.
    Get,
}

impl DohMethod {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "post" => Ok(DohMethod::Post),
            "get" => Ok(DohMethod::Get),
            _ => Err(format!("{s:?} is not one of post, get")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DohMethod::Post => "POST",
            DohMethod::Get => "GET",
        }
    }
}

/// Checks a DNS over HTTPS endpoint path: absolute, and a valid URL path (and query).
pub fn parse_doh_path(s: &str) -> Result<String, String> {
    if !s.starts_with('/') {
        return Err(format!(
            "{s:?} must start with '/', e.g. \"{}\"",
            defaults::DNS_DOH_PATH
        ));
    }
    if s.len() > 1024 {
        return Err("is longer than 1024 bytes".into());
    }
    if s.contains('#') {
        return Err(format!("{s:?} must not contain a fragment ('#')"));
    }
    match s.parse::<http::uri::PathAndQuery>() {
        Ok(p) if p.as_str() == s => Ok(s.to_string()),
        _ => Err(format!(
            "{s:?} is not a valid URL path (spaces and control characters must be %-encoded)"
        )),
    }
}

impl fmt::Display for DnsTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An expected piece of answer data: an address compares as an address, anything else as
/// case-insensitive text with the trailing dot of names ignored, against the whole record data
/// or its last field (the exchange of an MX, the target of an SRV).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(untagged)]
pub enum AnswerData {
    Ip(IpAddr),
    Text(String),
}

impl AnswerData {
    pub fn parse(s: &str) -> Self {
        match s.trim().parse::<IpAddr>() {
            Ok(ip) => AnswerData::Ip(ip),
            Err(_) => AnswerData::Text(normalize_text(s)),
        }
    }

    /// Whether a record's data, in presentation form, is this.
    pub fn matches(&self, data: &str) -> bool {
        match self {
            AnswerData::Ip(ip) => data.trim().parse::<IpAddr>().is_ok_and(|d| d == *ip),
            // MX, SRV and friends end with the name they point at: "10 mail.example.com.".
            AnswerData::Text(t) => {
                normalize_text(data) == *t
                    || data
                        .split_whitespace()
                        .next_back()
                        .is_some_and(|last| normalize_text(last) == *t)
            }
        }
    }
}

impl fmt::Display for AnswerData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AnswerData::Ip(ip) => ip.fmt(f),
            AnswerData::Text(t) => f.write_str(t),
        }
    }
}

fn normalize_text(s: &str) -> String {
    let t = s.trim();
    t.strip_suffix('.').unwrap_or(t).to_ascii_lowercase()
}

/// Resolved DNS options of one target.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct DnsOptions {
    /// Fully qualified query name.
    #[serde(serialize_with = "as_display")]
    pub query: Name,
    #[serde(serialize_with = "as_display")]
    pub record_type: RecordType,
    #[serde(serialize_with = "as_display")]
    pub class: DNSClass,
    pub transport: DnsTransport,
    pub port: u16,
    /// HTTPS: the endpoint's URL path, query string allowed.
    pub doh_path: String,
    pub doh_method: DohMethod,
    pub server_name: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub insecure_skip_verify: bool,
    pub recursion_desired: bool,
    pub dnssec: bool,
    /// 0: no EDNS record.
    pub edns_udp_size: u16,
    pub timeout: Duration,
    /// Rcode numbers that count as success.
    pub valid_rcodes: Vec<u16>,
    pub answer_contains: Vec<AnswerData>,
    pub answer_not_contains: Vec<AnswerData>,
    pub answer_match: Vec<Pattern>,
    pub answer_not_match: Vec<Pattern>,
    pub min_answers: u32,
    pub ip_protocol: IpProtocol,
    pub source: Option<IpAddr>,
}

fn as_display<T: fmt::Display, S: serde::Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

impl DnsOptions {
    /// Options for a one-shot query with everything else at its default.
    pub fn new(query: &str, record_type: &str) -> Result<Self, String> {
        let record_type = parse_record_type(record_type)?;
        Ok(Self {
            query: parse_query(query, record_type)?,
            record_type,
            class: DNSClass::IN,
            transport: DnsTransport::Udp,
            port: DnsTransport::Udp.default_port(),
            doh_path: defaults::DNS_DOH_PATH.into(),
            doh_method: DohMethod::Post,
            server_name: None,
            ca_file: None,
            insecure_skip_verify: false,
            recursion_desired: true,
            dnssec: false,
            edns_udp_size: defaults::DNS_EDNS_UDP_SIZE,
            timeout: defaults::DNS_TIMEOUT,
            valid_rcodes: vec![0],
            answer_contains: Vec::new(),
            answer_not_contains: Vec::new(),
            answer_match: Vec::new(),
            answer_not_match: Vec::new(),
            min_answers: 0,
            ip_protocol: IpProtocol::Auto,
            source: None,
        })
    }

    pub(crate) fn resolve(
        c: &mut Check<'_, '_>,
        path: &str,
        t: Option<&RawDns>,
        d: Option<&RawDns>,
        target_span: std::ops::Range<usize>,
    ) -> Option<Self> {
        let field = written_at(path, "defaults.dns", t, d);
        let x = Src::new(t, d, &field);
        let before = c.col.errors.len();
        let (query, record_type, class) = question(c, x, target_span);
        let (transport, port) = transport(c, x);
        let (doh_path, doh_method) = https_settings(c, x, transport);
        let (server_name, ca_file, insecure_skip_verify) = tls_settings(c, x, transport);
        let (recursion_desired, dnssec, edns_udp_size) = message_settings(c, x);
        let timeout = x
            .ranged(c, |r| r.timeout.as_ref(), "timeout", D::TIMEOUT_RANGE)
            .unwrap_or(defaults::DNS_TIMEOUT);
        let valid_rcodes = valid_rcodes(c, x);
        let (answer_contains, answer_not_contains, answer_match, answer_not_match) =
            answer_checks(c, x);
        let (min_answers, ip_protocol, source) = answer_count_and_addressing(c, x);
        if c.col.errors.len() > before {
            return None;
        }
        Some(Self {
            query: query?,
            record_type: record_type?,
            class: class?,
            transport,
            port,
            doh_path,
            doh_method,
            server_name,
            ca_file,
            insecure_skip_verify,
            recursion_desired,
            dnssec,
            edns_udp_size,
            timeout,
            valid_rcodes,
            answer_contains,
            answer_not_contains,
            answer_match,
            answer_not_match,
            min_answers,
            ip_protocol,
            source,
        })
    }
}

/// The fewest answer records for success, and which address family and source to query from.
fn answer_count_and_addressing(
    c: &mut Check<'_, '_>,
    x: Src<'_>,
) -> (u32, IpProtocol, Option<IpAddr>) {
    let min_answers = x
        .ranged(
            c,
            |r| r.min_answers.as_ref(),
            "min_answers",
            D::DNS_MIN_ANSWERS_RANGE,
        )
        .map_or(0, |n| n as u32);
    let ip_protocol = ip_protocol(c, x, |r| r.ip_protocol.as_ref());
    let source = x
        .pick(|r| r.source.as_ref())
        .and_then(|v| c.ip_addr(v, &x.field("source")));
    (min_answers, ip_protocol, source)
}

type AnswerChecks = (Vec<AnswerData>, Vec<AnswerData>, Vec<Pattern>, Vec<Pattern>);

/// What the answer must and must not contain, as data and as patterns.
fn answer_checks(c: &mut Check<'_, '_>, x: Src<'_>) -> AnswerChecks {
    let contains = x.pick(|r| r.answer_contains.as_ref());
    let not_contains = x.pick(|r| r.answer_not_contains.as_ref());
    let answer_contains = data_list(c, x, contains, "answer_contains");
    let answer_not_contains = data_list(c, x, not_contains, "answer_not_contains");
    let answer_match = regexes(c, x, x.pick(|r| r.answer_match.as_ref()), "answer_match");
    let not_match = x.pick(|r| r.answer_not_match.as_ref());
    let answer_not_match = regexes(c, x, not_match, "answer_not_match");
    (
        answer_contains,
        answer_not_contains,
        answer_match,
        answer_not_match,
    )
}

/// Where a target's DNS settings come from: its own table, else `[defaults.dns]`.
type Src<'a> = check::Src<'a, RawDns>;

/// The question: name, type and class.
fn question(
    c: &mut Check<'_, '_>,
    x: Src<'_>,
    target_span: std::ops::Range<usize>,
) -> (Option<Name>, Option<RecordType>, Option<DNSClass>) {
    let record_type = match x.pick(|r| r.record_type.as_ref()) {
        Some(v) => match parse_record_type(v.get_ref()) {
            Ok(rt) => Some(rt),
            Err(msg) => {
                c.err(v.span(), &x.field("type"), msg);
                None
            }
        },
        None => Some(RecordType::A),
    };
    let query = match x.pick(|r| r.query.as_ref()) {
        Some(v) => match parse_query(v.get_ref(), record_type.unwrap_or(RecordType::A)) {
            Ok(n) => Some(n),
            Err(msg) => {
                c.err(v.span(), &x.field("query"), msg);
                None
            }
        },
        None => {
            c.err(
                Some(target_span),
                &x.field("query"),
                "is required by the dns probe: the name to ask for, e.g. dns = { query = \"example.com\" }",
            );
            None
        }
    };
    let class = match x.pick(|r| r.class.as_ref()) {
        Some(v) => match v.get_ref().to_ascii_uppercase().as_str() {
            "IN" => Some(DNSClass::IN),
            "CH" => Some(DNSClass::CH),
            "HS" => Some(DNSClass::HS),
            other => {
                c.err(
                    v.span(),
                    &x.field("class"),
                    format!("{other:?} is not one of IN, CH, HS"),
                );
                None
            }
        },
        None => Some(DNSClass::IN),
    };
    (query, record_type, class)
}

/// The transport and the server's port (the transport's own by default).
fn transport(c: &mut Check<'_, '_>, x: Src<'_>) -> (DnsTransport, u16) {
    let transport = match x.pick(|r| r.transport.as_ref()) {
        Some(v) => match DnsTransport::parse(v.get_ref()) {
            Ok(t) => t,
            Err(msg) => {
                c.err(v.span(), &x.field("transport"), msg);
                DnsTransport::Udp
            }
        },
        None => DnsTransport::Udp,
    };
    let port = x
        .ranged(c, |r| r.port.as_ref(), "port", D::PORT_RANGE)
        .map_or(transport.default_port(), |p| p as u16);
    (transport, port)
}

/// Refuses a setting that `transport` does not use: TLS settings need tls or https, DoH
/// settings need https.
fn only_for(
    c: &mut Check<'_, '_>,
    x: Src<'_>,
    transport: DnsTransport,
    https: bool,
    span: std::ops::Range<usize>,
    name: &str,
) {
    if https && transport != DnsTransport::Https {
        c.err(
            Some(span),
            &x.field(name),
            format!("only applies to transport = \"https\" (transport is {transport})"),
        );
    } else if !https && !transport.is_tls() {
        c.err(
            Some(span),
            &x.field(name),
            format!("only applies to transport = \"tls\" or \"https\" (transport is {transport})"),
        );
    }
}

/// DNS over HTTPS: the URL path and the method.
fn https_settings(
    c: &mut Check<'_, '_>,
    x: Src<'_>,
    transport: DnsTransport,
) -> (String, DohMethod) {
    let doh_path = match x.pick(|r| r.doh_path.as_ref()) {
        Some(v) => {
            only_for(c, x, transport, true, v.span(), "doh_path");
            parse_doh_path(v.get_ref()).unwrap_or_else(|msg| {
                c.err(v.span(), &x.field("doh_path"), msg);
                String::new()
            })
        }
        None => defaults::DNS_DOH_PATH.into(),
    };
    let doh_method = match x.pick(|r| r.doh_method.as_ref()) {
        Some(v) => {
            only_for(c, x, transport, true, v.span(), "doh_method");
            DohMethod::parse(v.get_ref()).unwrap_or_else(|msg| {
                c.err(v.span(), &x.field("doh_method"), msg);
                DohMethod::Post
            })
        }
        None => DohMethod::Post,
    };
    (doh_path, doh_method)
}

/// TLS: the name to verify, the CA file, and whether to skip verification.
fn tls_settings(
    c: &mut Check<'_, '_>,
    x: Src<'_>,
    transport: DnsTransport,
) -> (Option<String>, Option<PathBuf>, bool) {
    let server_name = x.pick(|r| r.server_name.as_ref()).and_then(|v| {
        only_for(c, x, transport, false, v.span(), "server_name");
        match crate::config::host::parse_host(v.get_ref()) {
            Ok(crate::config::host::Host::Name(n)) => Some(n.trim_end_matches('.').to_string()),
            Ok(crate::config::host::Host::Ip(ip)) => Some(ip.to_string()),
            Err(msg) => {
                c.err(v.span(), &x.field("server_name"), msg);
                None
            }
        }
    });
    let ca_file = x.pick(|r| r.ca_file.as_ref()).and_then(|v| {
        only_for(c, x, transport, false, v.span(), "ca_file");
        if v.get_ref().is_empty() {
            c.err(v.span(), &x.field("ca_file"), "must not be empty");
            None
        } else {
            Some(PathBuf::from(v.get_ref()))
        }
    });
    let insecure_skip_verify = x
        .pick(|r| r.insecure_skip_verify.as_ref())
        .map(|v| {
            if *v.get_ref() {
                only_for(c, x, transport, false, v.span(), "insecure_skip_verify");
            }
            *v.get_ref()
        })
        .unwrap_or(false);
    (server_name, ca_file, insecure_skip_verify)
}

/// The query's flags and EDNS: recursion desired, DNSSEC OK, and the EDNS UDP size (0: none).
fn message_settings(c: &mut Check<'_, '_>, x: Src<'_>) -> (bool, bool, u16) {
    let recursion_desired = x
        .pick(|r| r.recursion_desired.as_ref())
        .map(|v| *v.get_ref())
        .unwrap_or(true);
    let dnssec = x
        .pick(|r| r.dnssec.as_ref())
        .map(|v| *v.get_ref())
        .unwrap_or(false);
    let edns_udp_size = match x.pick(|r| r.edns_udp_size.as_ref()) {
        Some(v) if *v.get_ref() == 0 => 0,
        Some(v) => {
            let r = D::DNS_EDNS_UDP_SIZE_RANGE;
            c.int_in(v, &x.field("edns_udp_size"), r.min, r.max)
                .map_or(defaults::DNS_EDNS_UDP_SIZE, |n| n as u16)
        }
        None => defaults::DNS_EDNS_UDP_SIZE,
    };
    if dnssec
        && edns_udp_size == 0
        && let Some(v) = x.pick(|r| r.dnssec.as_ref())
    {
        c.err(
            v.span(),
            &x.field("dnssec"),
            "needs EDNS, but edns_udp_size is 0",
        );
    }
    (recursion_desired, dnssec, edns_udp_size)
}

/// The rcodes that count as success, each once; NOERROR by default.
fn valid_rcodes(c: &mut Check<'_, '_>, x: Src<'_>) -> Vec<u16> {
    let Some(list) = x.pick(|r| r.valid_rcodes.as_ref()) else {
        return vec![0];
    };
    if list.get_ref().is_empty() {
        c.err(
            list.span(),
            &x.field("valid_rcodes"),
            "must name at least one rcode, e.g. [\"NOERROR\"]",
        );
    }
    let mut codes = Vec::new();
    for v in list.get_ref() {
        match parse_rcode(v.get_ref()) {
            Ok(n) if !codes.contains(&n) => codes.push(n),
            Ok(_) => {}
            Err(msg) => c.err(v.span(), &x.field("valid_rcodes"), msg),
        }
    }
    codes
}

type StringList = Spanned<Vec<Spanned<String>>>;

fn data_list(
    c: &mut Check<'_, '_>,
    x: Src<'_>,
    list: Option<&StringList>,
    name: &str,
) -> Vec<AnswerData> {
    let mut out = Vec::new();
    for v in list.map(|l| l.get_ref().as_slice()).unwrap_or_default() {
        if v.get_ref().trim().is_empty() {
            c.err(v.span(), &x.field(name), "must not contain an empty string");
        } else {
            out.push(AnswerData::parse(v.get_ref()));
        }
    }
    out
}

fn regexes(
    c: &mut Check<'_, '_>,
    x: Src<'_>,
    list: Option<&StringList>,
    name: &str,
) -> Vec<Pattern> {
    let mut out = Vec::new();
    for v in list.map(|l| l.get_ref().as_slice()).unwrap_or_default() {
        match Pattern::new(v.get_ref()) {
            Ok(p) => out.push(p),
            Err(e) => c.err(
                v.span(),
                &x.field(name),
                format!(
                    "{:?} is not a valid regex: {}",
                    v.get_ref(),
                    first_line(&e.to_string())
                ),
            ),
        }
    }
    out
}

fn first_line(s: &str) -> &str {
    s.lines()
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or(s)
        .trim()
}

/// Record types a probe may ask for: any data type, by name or as `TYPEnnn`. Zone transfers and
/// meta types are refused: they are not single-answer lookups.
pub fn parse_record_type(s: &str) -> Result<RecordType, String> {
    let up = s.trim().to_ascii_uppercase();
    let rt = match up.strip_prefix("TYPE").map(str::parse::<u16>) {
        Some(Ok(n)) => RecordType::from(n),
        _ => RecordType::from_str(&up).map_err(|_| {
            format!("{s:?} is not a DNS record type (e.g. A, AAAA, MX, TXT, NS, SOA, CNAME, PTR, SRV, CAA)")
        })?,
    };
    match rt {
        RecordType::AXFR | RecordType::IXFR => Err(format!(
            "{up} is a zone transfer, not a lookup; the dns probe asks single questions"
        )),
        RecordType::OPT | RecordType::ZERO => Err(format!("{up} is not a type one can ask for")),
        rt => Ok(rt),
    }
}

/// The query name, made fully qualified. For PTR an IP address becomes its reverse name, like
/// `dig -x`.
pub fn parse_query(s: &str, rt: RecordType) -> Result<Name, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("must not be empty".into());
    }
    if rt == RecordType::PTR
        && let Ok(ip) = t.parse::<IpAddr>()
    {
        return Ok(Name::from(ip));
    }
    if let Some(c) = t.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "contains whitespace or a control character ({c:?})"
        ));
    }
    let mut name = Name::from_utf8(t).map_err(|e| format!("{t:?} is not a DNS name: {e}"))?;
    name.set_fqdn(true);
    if name.len() > 255 {
        return Err(format!("{t:?} is longer than 255 bytes on the wire"));
    }
    Ok(name)
}

/// Rcode by mnemonic (NOERROR, NXDOMAIN, ...) or number.
pub fn parse_rcode(s: &str) -> Result<u16, String> {
    let up = s.trim().to_ascii_uppercase();
    if let Ok(n) = up.parse::<u16>()
        && n <= 4095
    {
        return Ok(n);
    }
    (0..=23u16)
        .find(|&n| rcode_name(n) == up)
        .ok_or_else(|| {
            format!("{s:?} is not an rcode (NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED, ... or a number)")
        })
}

/// The IANA mnemonic of an rcode, as dig prints it; unknown ones as `RCODE<n>`.
pub fn rcode_name(n: u16) -> String {
    let s = match n {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        6 => "YXDOMAIN",
        7 => "YXRRSET",
        8 => "NXRRSET",
        9 => "NOTAUTH",
        10 => "NOTZONE",
        11 => "DSOTYPENI",
        16 => "BADVERS",
        17 => "BADKEY",
        18 => "BADTIME",
        19 => "BADMODE",
        20 => "BADNAME",
        21 => "BADALG",
        22 => "BADTRUNC",
        23 => "BADCOOKIE",
        n => return format!("RCODE{n}"),
    };
    s.to_string()
}

#[cfg(test)]
mod tests {
    use super::KIND as DNS_MODULE;
    use super::*;

    #[test]
    fn record_types() {
        assert_eq!(parse_record_type("aaaa").unwrap(), RecordType::AAAA);
        assert_eq!(parse_record_type("CAA").unwrap(), RecordType::CAA);
        assert_eq!(parse_record_type("TYPE65").unwrap(), RecordType::HTTPS);
        assert_eq!(
            parse_record_type("TYPE4000").unwrap(),
            RecordType::Unknown(4000)
        );
        assert!(
            parse_record_type("AXFR")
                .unwrap_err()
                .contains("zone transfer")
        );
        assert!(
            parse_record_type("bogus")
                .unwrap_err()
                .contains("not a DNS record type")
        );
    }

    #[test]
    fn queries() {
        assert_eq!(
            parse_query("example.com", RecordType::A)
                .unwrap()
                .to_ascii(),
            "example.com."
        );
        assert_eq!(
            parse_query("192.0.2.10", RecordType::PTR)
                .unwrap()
                .to_ascii(),
            "10.2.0.192.in-addr.arpa."
        );
        assert_eq!(
            parse_query("bücher.example", RecordType::A)
                .unwrap()
                .to_ascii(),
            "xn--bcher-kva.example."
        );
        assert!(parse_query("a b", RecordType::A).is_err());
        assert!(parse_query("", RecordType::A).is_err());
        assert!(parse_query(&"a".repeat(70), RecordType::A).is_err());
    }

    #[test]
    fn rcodes() {
        assert_eq!(parse_rcode("nxdomain").unwrap(), 3);
        assert_eq!(parse_rcode("2").unwrap(), 2);
        assert_eq!(rcode_name(2), "SERVFAIL");
        assert_eq!(rcode_name(99), "RCODE99");
        assert!(parse_rcode("OOPS").is_err());
        assert!(parse_rcode("5000").is_err());
    }

    #[test]
    fn https_options() {
        let cfg = crate::config::Config::parse(
            r#"
[[targets]]
name = "doh"
host = "dns.example.net"
probes = ["dns"]
dns = { query = "example.com", transport = "doh" }

[[targets]]
name = "doh-get"
host = "192.0.2.53"
probes = ["dns"]
dns = { query = "example.com", transport = "https", port = 8443, doh_path = "/q?a=b", doh_method = "GET", insecure_skip_verify = true }
"#,
            "inline",
        )
        .unwrap();
        let d = cfg.targets[0].module::<DnsOptions>(DNS_MODULE).unwrap();
        assert_eq!(d.transport, DnsTransport::Https);
        assert_eq!((d.port, d.doh_path.as_str()), (443, "/dns-query"));
        assert_eq!(d.doh_method, DohMethod::Post);
        let d = cfg.targets[1].module::<DnsOptions>(DNS_MODULE).unwrap();
        assert_eq!((d.port, d.doh_path.as_str()), (8443, "/q?a=b"));
        assert_eq!(d.doh_method, DohMethod::Get);
        assert!(d.insecure_skip_verify);

        assert!(parse_doh_path("/dns-query").is_ok());
        assert!(parse_doh_path("/a%20b").is_ok());
        for bad in [
            "",
            "dns-query",
            "/a b",
            "/a\nb",
            "/a#frag",
            "https://x/dns-query",
        ] {
            assert!(parse_doh_path(bad).is_err(), "{bad:?}");
        }
        assert!(parse_doh_path(&format!("/{}", "a".repeat(1100))).is_err());
    }

    #[test]
    fn answer_data() {
        let ip = AnswerData::parse("2001:DB8::1");
        assert!(ip.matches("2001:db8:0::1"));
        assert!(!ip.matches("2001:db8::2"));
        let name = AnswerData::parse("Mail.Example.com.");
        assert!(name.matches("mail.example.com"));
        assert!(name.matches("10 mail.example.com."));
        assert!(!name.matches("10 mail.example.org."));
    }
}
