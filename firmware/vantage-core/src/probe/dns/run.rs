//! The DNS probe's run: the question, the transports and the answer judged.

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{RData, Record};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::super::resolve::resolve_host;
use super::super::round::{AddressGuard, Probe, ProbeRequest, check_addr};
use super::options::{DnsOptions, DnsTransport, KIND, rcode_name};
use super::report::{DnsFlags, DnsRecord, DnsReport};
use crate::clock::{Clock, SystemClock};
use crate::config::host::Host;
use crate::defaults;
use crate::lock::LockExt;
use crate::net::{BoxFuture, ByteStream, DnsConnector, KernelDns};
use crate::sample::{Measurement, ProbeError, Sample};
use crate::types::ProbeKind;

/// Largest DNS message: UDP datagrams and TCP frames both fit in 16 bits.
const MAX_MESSAGE: usize = 65535;
/// Smallest UDP receive buffer: answers up to this size are read whole whatever we advertised.
const UDP_BUFFER_MIN: usize = 4096;
/// glibc reads at most three nameservers (MAXNS).
const MAX_NAMESERVERS: usize = 3;

/// The DNS prober. Cheap to share; holds no per-target state apart from TLS configs.
pub struct DnsProbe {
    connector: Arc<dyn DnsConnector>,
    clock: Arc<dyn Clock>,
    resolv_conf: PathBuf,
    tls_configs: Mutex<HashMap<TlsKey, Arc<rustls::ClientConfig>>>,
}

/// TLS client configs differ in their trust and ALPN: built once per CA file version.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct TlsKey {
    ca_file: Option<(PathBuf, Option<SystemTime>)>,
    insecure: bool,
    https: bool,
}

impl fmt::Debug for DnsProbe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DnsProbe")
            .field("connector", &self.connector)
            .field("resolv_conf", &self.resolv_conf)
            .finish_non_exhaustive()
    }
}

impl Default for DnsProbe {
    fn default() -> Self {
        Self::new()
    }
}

/// Why one exchange with one server ended without an answer.
#[derive(Debug)]
enum Failure {
    Timeout,
    Error(ProbeError),
}

impl From<ProbeError> for Failure {
    fn from(e: ProbeError) -> Self {
        Failure::Error(e)
    }
}

fn net_err(what: &str, server: SocketAddr, e: io::Error) -> Failure {
    Failure::Error(ProbeError::Network(format!("{what} {server}: {e}")))
}

impl DnsProbe {
    /// A prober on kernel sockets, reading `/etc/resolv.conf` for `host = "system"`.
    pub fn new() -> Self {
        Self::with_parts(
            Arc::new(KernelDns),
            Arc::new(SystemClock),
            defaults::RESOLV_CONF.into(),
        )
    }

    pub fn with_parts(
        connector: Arc<dyn DnsConnector>,
        clock: Arc<dyn Clock>,
        resolv_conf: PathBuf,
    ) -> Self {
        Self {
            connector,
            clock,
            resolv_conf,
            tls_configs: Mutex::new(HashMap::new()),
        }
    }

    /// One query to `host` with `opts`, within `timeout`. Always returns a report; the error
    /// says why there is no (acceptable) answer.
    pub async fn query(
        &self,
        host: &Host,
        opts: &DnsOptions,
        timeout: Duration,
    ) -> (DnsReport, Option<ProbeError>) {
        self.query_guarded(host, opts, timeout, None).await
    }

    /// [`Self::query`], sending only to a server address `guard` allows.
    pub async fn query_guarded(
        &self,
        host: &Host,
        opts: &DnsOptions,
        timeout: Duration,
        guard: Option<&dyn AddressGuard>,
    ) -> (DnsReport, Option<ProbeError>) {
        let started = self.clock.now();
        let deadline = tokio::time::Instant::now() + timeout;
        let mut report = DnsReport::default();
        let ask = self.ask(host, opts, deadline, &mut report, guard);
        let outcome = tokio::time::timeout_at(deadline, ask).await;
        let error = match outcome {
            Err(_) | Ok(Err(Failure::Timeout)) => Some(ProbeError::Timeout),
            Ok(Err(Failure::Error(e))) => Some(e),
            Ok(Ok(answer)) => {
                report.lookup = Some(self.clock.now().saturating_duration_since(started));
                judge(&mut report, &answer, opts)
            }
        };
        (report, error)
    }

    async fn ask(
        &self,
        host: &Host,
        opts: &DnsOptions,
        deadline: tokio::time::Instant,
        report: &mut DnsReport,
        guard: Option<&dyn AddressGuard>,
    ) -> Result<Message, Failure> {
        if host.is_system() {
            let servers = system_nameservers(&self.resolv_conf, opts.port)?;
            let mut last = Failure::Timeout;
            for (i, server) in servers.iter().enumerate() {
                // Share what is left of the timeout between the servers still to ask.
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                let share = left / (servers.len() - i) as u32;
                let attempt_deadline = tokio::time::Instant::now() + share;
                report.attempts += 1;
                report.server = Some(*server);
                let result = tokio::time::timeout_at(
                    attempt_deadline,
                    self.exchange(*server, opts, None, report),
                )
                .await
                .unwrap_or(Err(Failure::Timeout));
                match result {
                    // glibc tries the next server on these rcodes too.
                    Ok(m)
                        if matches!(u16::from(m.metadata.response_code), 2 | 4 | 5)
                            && i + 1 < servers.len() =>
                    {
                        last = Failure::Error(ProbeError::Validation(format!(
                            "{server} answered {}",
                            rcode_name(m.metadata.response_code.into())
                        )));
                    }
                    Ok(m) => return Ok(m),
                    Err(e) => last = e,
                }
            }
            return Err(last);
        }
        let addr = match host {
            Host::Ip(ip) => *ip,
            Host::Name(_) => {
                let t0 = self.clock.now();
                let addr = resolve_host(host, opts.ip_protocol).await;
                report.phases.resolve = Some(self.clock.now().saturating_duration_since(t0));
                addr?
            }
        };
        let addr = check_addr(guard, addr)?;
        let server = SocketAddr::new(addr, opts.port);
        report.attempts = 1;
        report.server = Some(server);
        let tls_name = match host {
            Host::Name(n) => Some(n.trim_end_matches('.').to_string()),
            Host::Ip(_) => None,
        };
        self.exchange(server, opts, tls_name, report).await
    }

    /// One query to one server, with the TCP retry of a truncated UDP answer.
    async fn exchange(
        &self,
        server: SocketAddr,
        opts: &DnsOptions,
        host_name: Option<String>,
        report: &mut DnsReport,
    ) -> Result<Message, Failure> {
        let (id, packet) = match opts.transport {
            // RFC 8484 section 4.1: ID 0, so that HTTP caches see equal requests.
            DnsTransport::Https => build_query_with_id(opts, 0)?,
            _ => build_query(opts)?,
        };
        let tls_name = || {
            opts.server_name
                .clone()
                .or(host_name.clone())
                .unwrap_or_else(|| server.ip().to_string())
        };
        match opts.transport {
            DnsTransport::Udp => {
                let t0 = self.clock.now();
                let answer = self.udp_exchange(server, opts, id, &packet, report).await;
                let udp_time = self.clock.now().saturating_duration_since(t0);
                report.phases.request = Some(udp_time);
                let answer = answer?;
                if !answer.metadata.truncation {
                    report.transport = Some(DnsTransport::Udp);
                    return Ok(answer);
                }
                // Truncated: ask again over TCP, as resolvers do (RFC 7766), with a new ID.
                report.truncated_retry = true;
                let (id, packet) = build_query(opts)?;
                report.phases.request = None;
                let answer = self
                    .stream_exchange(server, opts, None, id, &packet, report)
                    .await;
                // The request phase covers both exchanges.
                report.phases.request = Some(udp_time + report.phases.request.unwrap_or_default());
                answer
            }
            DnsTransport::Tcp => {
                self.stream_exchange(server, opts, None, id, &packet, report)
                    .await
            }
            DnsTransport::Tls => {
                self.stream_exchange(server, opts, Some(tls_name()), id, &packet, report)
                    .await
            }
            DnsTransport::Https => {
                self.https_exchange(server, opts, tls_name(), id, &packet, report)
                    .await
            }
        }
    }

    async fn udp_exchange(
        &self,
        server: SocketAddr,
        opts: &DnsOptions,
        id: u16,
        packet: &[u8],
        report: &mut DnsReport,
    ) -> Result<Message, Failure> {
        let sock = self
            .connector
            .udp(server, opts.source)
            .await
            .map_err(|e| net_err("cannot open a UDP socket to", server, e))?;
        sock.send(packet)
            .await
            .map_err(|e| net_err("send to", server, e))?;
        // An answer is at most what we advertised (512 bytes without EDNS); some servers send
        // more, so leave room, but not 64 KiB for each of thousands of queries in flight.
        let mut buf = vec![0u8; usize::from(opts.edns_udp_size).clamp(UDP_BUFFER_MIN, MAX_MESSAGE)];
        let mut malformed: Option<String> = None;
        loop {
            let n = match sock.recv(&mut buf).await {
                Ok(n) => n.min(buf.len()),
                // ICMP port unreachable shows up as ECONNREFUSED on a connected socket.
                Err(e) => return Err(net_err("receive from", server, e)),
            };
            match check_answer(&buf[..n], id, opts) {
                Ok(m) => {
                    report.response_bytes = n;
                    return Ok(m);
                }
                Err(Stray::NotOurs) => {}
                Err(Stray::Malformed(e)) => malformed = Some(e),
            }
            report.stray_datagrams += 1;
            if report.stray_datagrams >= defaults::DNS_MAX_STRAY_DATAGRAMS {
                let why = malformed.map_or(String::new(), |m| format!("; last one: {m}"));
                return Err(ProbeError::Protocol(format!(
                    "{} datagrams from {server} that are not an answer to the query{why}",
                    report.stray_datagrams
                ))
                .into());
            }
        }
    }

    /// TCP, or TLS over TCP when `tls_name` is set: one length-prefixed query, one answer.
    async fn stream_exchange(
        &self,
        server: SocketAddr,
        opts: &DnsOptions,
        tls_name: Option<String>,
        id: u16,
        packet: &[u8],
        report: &mut DnsReport,
    ) -> Result<Message, Failure> {
        let transport = if tls_name.is_some() {
            DnsTransport::Tls
        } else {
            DnsTransport::Tcp
        };
        let mut stream = self
            .open_stream(server, opts, transport, tls_name, report)
            .await?;
        let t2 = self.clock.now();
        let mut frame = Vec::with_capacity(packet.len() + 2);
        frame.extend_from_slice(&(packet.len() as u16).to_be_bytes());
        frame.extend_from_slice(packet);
        let io = async {
            stream.write_all(&frame).await?;
            stream.flush().await?;
            let len = stream.read_u16().await? as usize;
            let mut buf = vec![0u8; len];
            stream.read_exact(&mut buf).await?;
            // Close politely; the answer is in, a slow close is not the server's answer time.
            let _ = tokio::time::timeout(Duration::from_millis(50), stream.shutdown()).await;
            Ok::<_, io::Error>(buf)
        };
        let result = io.await;
        let request = self.clock.now().saturating_duration_since(t2);
        report.phases.request = Some(request);
        let buf = result.map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => Failure::Error(ProbeError::Protocol(format!(
                "{server} closed the connection without a complete answer"
            ))),
            _ => net_err("exchange with", server, e),
        })?;
        report.response_bytes = buf.len();
        judge_stream_answer(&buf, id, opts, server, transport)
    }

    /// DNS over HTTPS: TCP, TLS with ALPN h2, one HTTP/2 request with the query, one answer.
    async fn https_exchange(
        &self,
        server: SocketAddr,
        opts: &DnsOptions,
        tls_name: String,
        id: u16,
        packet: &[u8],
        report: &mut DnsReport,
    ) -> Result<Message, Failure> {
        let authority = https::authority(&tls_name, opts.port);
        let stream = self
            .open_stream(server, opts, DnsTransport::Https, Some(tls_name), report)
            .await?;
        let t2 = self.clock.now();
        let result = https::exchange(stream, server, &authority, opts, packet).await;
        report.phases.request = Some(self.clock.now().saturating_duration_since(t2));
        let buf = result?;
        report.response_bytes = buf.len();
        judge_stream_answer(&buf, id, opts, server, DnsTransport::Https)
    }

    /// A TCP connection to `server`, in TLS when `tls_name` is set; fills the connect and TLS
    /// phases.
    async fn open_stream(
        &self,
        server: SocketAddr,
        opts: &DnsOptions,
        transport: DnsTransport,
        tls_name: Option<String>,
        report: &mut DnsReport,
    ) -> Result<Box<dyn ByteStream>, Failure> {
        let t0 = self.clock.now();
        let tcp = self
            .connector
            .tcp(server, opts.source)
            .await
            .map_err(|e| net_err("cannot connect to", server, e))?;
        report.phases.connect = Some(self.clock.now().saturating_duration_since(t0));
        report.transport = Some(transport);
        let Some(name) = tls_name else {
            return Ok(tcp);
        };
        let config = self.tls_config(opts, transport == DnsTransport::Https)?;
        let server_name = ServerName::try_from(name.clone()).map_err(|e| {
            ProbeError::Validation(format!("{name:?} is not a TLS server name: {e}"))
        })?;
        let t1 = self.clock.now();
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(server_name, tcp)
            .await
            .map_err(|e| {
                Failure::Error(ProbeError::Network(format!(
                    "TLS handshake with {server} ({name}): {e}"
                )))
            })?;
        report.phases.tls = Some(self.clock.now().saturating_duration_since(t1));
        Ok(Box::new(tls))
    }

    fn tls_config(
        &self,
        opts: &DnsOptions,
        https: bool,
    ) -> Result<Arc<rustls::ClientConfig>, ProbeError> {
        let key = TlsKey {
            ca_file: opts.ca_file.as_ref().map(|p| {
                let mtime = std::fs::metadata(p).and_then(|m| m.modified()).ok();
                (p.clone(), mtime)
            }),
            insecure: opts.insecure_skip_verify,
            https,
        };
        let mut cache = self.tls_configs.lock_or_recover();
        if let Some(c) = cache.get(&key) {
            return Ok(c.clone());
        }
        let config = Arc::new(build_tls_config(
            opts.ca_file.as_deref(),
            opts.insecure_skip_verify,
            https,
        )?);
        // Old versions of a CA file are of no further use.
        cache.retain(|k, _| {
            k.ca_file == key.ca_file
                || k.ca_file.as_ref().map(|c| &c.0) != key.ca_file.as_ref().map(|c| &c.0)
        });
        cache.insert(key, config.clone());
        Ok(config)
    }
}

impl Probe for DnsProbe {
    fn kind(&self) -> ProbeKind {
        ProbeKind::DNS
    }

    fn run(&self, req: ProbeRequest) -> BoxFuture<'_, Sample> {
        Box::pin(async move {
            let started = self.clock.now();
            let timestamp = self.clock.wall();
            let target = &req.target;
            let (report, error) = match target.module::<DnsOptions>(KIND) {
                Some(opts) => {
                    let timeout = req
                        .deadline
                        .map_or(opts.timeout, |d| opts.timeout.min(d))
                        .max(Duration::from_millis(1));
                    let guard = req.guard.as_deref();
                    let (report, error) =
                        self.query_guarded(&target.host, opts, timeout, guard).await;
                    (Some(report), error)
                }
                None => (
                    None,
                    Some(ProbeError::Validation(
                        "the target has no dns options (dns.query is required)".into(),
                    )),
                ),
            };
            Sample {
                target: target.name.as_str().into(),
                probe: ProbeKind::DNS,
                timestamp,
                duration: self.clock.now().saturating_duration_since(started),
                success: error.is_none(),
                error,
                measurement: report.map_or(Measurement::None, Measurement::from),
                quality: Default::default(),
            }
        })
    }
}

/// A fresh query with a random ID, as bytes.
fn build_query(opts: &DnsOptions) -> Result<(u16, Vec<u8>), ProbeError> {
    build_query_with_id(opts, rand::random())
}

fn build_query_with_id(opts: &DnsOptions, id: u16) -> Result<(u16, Vec<u8>), ProbeError> {
    let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = opts.recursion_desired;
    let mut q = Query::query(opts.query.clone(), opts.record_type);
    q.set_query_class(opts.class);
    msg.add_query(q);
    if opts.edns_udp_size > 0 {
        let mut edns = Edns::new();
        edns.set_max_payload(opts.edns_udp_size);
        edns.set_version(0);
        edns.set_dnssec_ok(opts.dnssec);
        msg.set_edns(edns);
    }
    let bytes = msg
        .to_vec()
        .map_err(|e| ProbeError::Protocol(format!("cannot encode the query: {e}")))?;
    Ok((id, bytes))
}

/// Checks an answer read from a stream (TCP, TLS, HTTPS), where anything but our answer is an
/// error: there is no other datagram to wait for.
fn judge_stream_answer(
    buf: &[u8],
    id: u16,
    opts: &DnsOptions,
    server: SocketAddr,
    transport: DnsTransport,
) -> Result<Message, Failure> {
    match check_answer(buf, id, opts) {
        Ok(m) => Ok(m),
        Err(Stray::NotOurs) => Err(ProbeError::Protocol(format!(
            "{server} answered over {transport} with a message that is not the answer to the query"
        ))
        .into()),
        Err(Stray::Malformed(e)) => {
            Err(ProbeError::Protocol(format!("malformed answer from {server}: {e}")).into())
        }
    }
}

#[derive(Debug)]
enum Stray {
    /// Another query's answer, or not an answer at all.
    NotOurs,
    /// Our ID, but the message does not decode.
    Malformed(String),
}

/// Decodes `buf` and checks it answers our question: response bit, ID, opcode and question.
fn check_answer(buf: &[u8], id: u16, opts: &DnsOptions) -> Result<Message, Stray> {
    // Look at the header first: a stray datagram is not worth a full decode.
    if buf.len() < 12 || u16::from_be_bytes([buf[0], buf[1]]) != id || buf[2] & 0x80 == 0 {
        return Err(Stray::NotOurs);
    }
    let msg = Message::from_vec(buf).map_err(|e| Stray::Malformed(e.to_string()))?;
    if msg.metadata.op_code != OpCode::Query {
        return Err(Stray::NotOurs);
    }
    // Name comparison is case-insensitive, as RFC 4343 asks.
    let ours = |q: &Query| {
        q.query_type() == opts.record_type
            && q.query_class() == opts.class
            && q.name() == &opts.query
    };
    match msg.queries.as_slice() {
        [q] if ours(q) => Ok(msg),
        // Servers may leave the question out of an error answer (FORMERR, NOTIMP, REFUSED).
        [] if u16::from(msg.metadata.response_code) != 0 => Ok(msg),
        _ => Err(Stray::NotOurs),
    }
}

/// Fills the report from the answer and checks it; returns why it is not acceptable.
fn judge(report: &mut DnsReport, answer: &Message, opts: &DnsOptions) -> Option<ProbeError> {
    let rcode = u16::from(answer.metadata.response_code);
    report.rcode = Some(rcode);
    report.flags = DnsFlags {
        authoritative: answer.metadata.authoritative,
        truncated: answer.metadata.truncation,
        recursion_available: answer.metadata.recursion_available,
        authentic_data: answer.metadata.authentic_data,
    };
    report.answers = answer.answers.iter().map(record).collect();
    report.authority_records = answer.authorities.len() as u32;
    report.additional_records = answer.additionals.len() as u32 + u32::from(answer.edns.is_some());
    report.rcode_valid = opts.valid_rcodes.contains(&rcode);
    if !report.rcode_valid {
        let want: Vec<String> = opts.valid_rcodes.iter().map(|c| rcode_name(*c)).collect();
        return Some(ProbeError::Validation(format!(
            "rcode {} is not one of the expected ({})",
            rcode_name(rcode),
            want.join(", ")
        )));
    }
    report.validation_failures = validate(&report.answers, opts);
    if report.validation_failures.is_empty() {
        None
    } else {
        Some(ProbeError::Validation(
            report.validation_failures.join("; "),
        ))
    }
}

/// The answer checks, each failure as a sentence.
fn validate(answers: &[DnsRecord], opts: &DnsOptions) -> Vec<String> {
    let mut failures = Vec::new();
    if (answers.len() as u32) < opts.min_answers {
        failures.push(format!(
            "{} answer records, fewer than the {} required",
            answers.len(),
            opts.min_answers
        ));
    }
    for want in &opts.answer_contains {
        if !answers.iter().any(|r| want.matches(&r.data)) {
            failures.push(format!("no answer record has the data {want}"));
        }
    }
    for unwanted in &opts.answer_not_contains {
        if let Some(r) = answers.iter().find(|r| unwanted.matches(&r.data)) {
            failures.push(format!("the answer record \"{r}\" has the data {unwanted}"));
        }
    }
    let lines: Vec<String> = answers.iter().map(ToString::to_string).collect();
    for re in &opts.answer_match {
        if !lines.iter().any(|l| re.0.is_match(l)) {
            failures.push(format!("no answer record matches /{}/", re.0.as_str()));
        }
    }
    for re in &opts.answer_not_match {
        if let Some(l) = lines.iter().find(|l| re.0.is_match(l)) {
            failures.push(format!(
                "the answer record \"{l}\" matches /{}/",
                re.0.as_str()
            ));
        }
    }
    failures
}

/// Presentation text of anything, without the panic `to_string` has when `Display` fails
/// (hickory refuses to print some record data, e.g. an OPT record in the answer section).
fn text(v: &dyn fmt::Display) -> String {
    let mut s = String::new();
    if write!(s, "{v}").is_err() {
        s = "<unprintable>".into();
    }
    s
}

fn record(r: &Record<RData>) -> DnsRecord {
    DnsRecord {
        name: text(&r.name),
        ttl: r.ttl,
        class: text(&r.dns_class),
        record_type: text(&r.record_type()),
        data: text(&r.data),
    }
}

/// The nameservers of a resolv.conf, in order (at most three, like glibc); 127.0.0.1 when it
/// lists none, which is also glibc's fallback.
pub fn system_nameservers(path: &Path, port: u16) -> Result<Vec<SocketAddr>, ProbeError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ProbeError::Resolve(format!("cannot read {}: {e}", path.display())))?;
    let mut out = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        let Some(word) = words.next() else { continue };
        let (ip, scope) = match word.split_once('%') {
            Some((ip, scope)) => (ip, Some(scope)),
            None => (word, None),
        };
        let Ok(ip) = ip.parse::<IpAddr>() else {
            continue;
        };
        let addr = match (ip, scope) {
            (IpAddr::V6(v6), Some(scope)) => {
                let index = scope.parse::<u32>().ok().or_else(|| if_index(scope));
                let Some(index) = index else { continue };
                SocketAddr::V6(std::net::SocketAddrV6::new(v6, port, 0, index))
            }
            _ => SocketAddr::new(ip, port),
        };
        out.push(addr);
        if out.len() == MAX_NAMESERVERS {
            break;
        }
    }
    if out.is_empty() {
        out.push(SocketAddr::new(IpAddr::from([127, 0, 0, 1]), port));
    }
    Ok(out)
}

fn if_index(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

pub(crate) fn build_tls_config(
    ca_file: Option<&Path>,
    insecure: bool,
    https: bool,
) -> Result<rustls::ClientConfig, ProbeError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ProbeError::Network(format!("TLS setup: {e}")))?;
    let mut config = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
            .with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        match ca_file {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| {
                    ProbeError::Permission(format!("cannot read ca_file {}: {e}", path.display()))
                })?;
                for cert in CertificateDer::pem_slice_iter(&pem) {
                    let cert = cert.map_err(|e| {
                        ProbeError::Validation(format!(
                            "ca_file {} is not PEM certificates: {e}",
                            path.display()
                        ))
                    })?;
                    roots.add(cert).map_err(|e| {
                        ProbeError::Validation(format!(
                            "ca_file {}: unusable certificate: {e}",
                            path.display()
                        ))
                    })?;
                }
                if roots.is_empty() {
                    return Err(ProbeError::Validation(format!(
                        "ca_file {} holds no certificate",
                        path.display()
                    )));
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    // RFC 7858 section 3.2 registers "dot" for DNS over TLS; RFC 8484 needs HTTP/2, "h2".
    config.alpn_protocols = vec![if https {
        b"h2".to_vec()
    } else {
        b"dot".to_vec()
    }];
    Ok(config)
}

/// `insecure_skip_verify`: any certificate is accepted, but the handshake signatures are still
/// checked so the connection is at least a well-formed TLS session.
#[derive(Debug)]
struct AcceptAnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(any(test, fuzzing))]
#[path = "fuzz.rs"]
pub(crate) mod fuzz;
#[path = "https.rs"]
mod https;
#[cfg(test)]
#[path = "tests.rs"]
mod tests;
