//! A TCP round: staggered connection attempts; the first connection also does the TLS
//! handshake and the send/expect exchange. Every connection is closed with a FIN (and a TLS
//! close_notify) so the service sees no half-open or reset connections.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};

use super::super::dns::build_tls_config;
use super::super::resolve::HostResolver;
use super::super::round::{Probe, ProbeRequest, module_sample};
use super::{KIND, TcpOptions, TcpReport};
use crate::config::host::Host;
use crate::net::BoxFuture;
use crate::sample::{ProbeError, Sample};
use crate::types::ProbeKind;

/// The most of a reply line read for `expect`, in bytes.
pub(crate) const MAX_REPLY: usize = 4096;

/// The TCP prober. Cheap to share.
#[derive(Debug, Default)]
pub(crate) struct TcpProbe {
    resolver: HostResolver,
}

impl Probe for TcpProbe {
    fn kind(&self) -> ProbeKind {
        ProbeKind::Module(KIND)
    }

    fn run(&self, req: ProbeRequest) -> BoxFuture<'_, Sample> {
        Box::pin(async move {
            let host = &req.target.host;
            module_sample(&req, KIND, |o: &TcpOptions| self.round(host, o, &req)).await
        })
    }
}

impl TcpProbe {
    /// One round: the report, and why it failed if it did for a reason other than lost attempts.
    pub(crate) async fn round(
        &self,
        host: &Host,
        o: &TcpOptions,
        req: &ProbeRequest,
    ) -> (TcpReport, Option<ProbeError>) {
        let deadline = req.deadline;
        let mut report = TcpReport {
            port: o.port,
            ..TcpReport::default()
        };
        let ip = self.resolver.resolve(host, o.ip_protocol).await;
        let ip = match ip.and_then(|ip| req.checked(ip)) {
            Ok(ip) => ip,
            Err(e) => return (report, Some(e)),
        };
        report.address = Some(ip);
        let addr = SocketAddr::new(ip, o.port);
        let timeout = deadline.map_or(o.timeout, |d| d.min(o.timeout));
        let attempts = if deadline.is_some_and(|d| d < o.round_length()) {
            1
        } else {
            o.attempts
        };
        let first = async {
            let r = first_attempt(addr, host, o, timeout, &mut report).await;
            (r, report)
        };
        let mut others = tokio::task::JoinSet::new();
        for i in 1..attempts {
            let o = o.clone();
            others.spawn(async move {
                tokio::time::sleep(o.spacing * i).await;
                connect_only(addr, &o, timeout).await
            });
        }
        let ((first, mut report), others) = tokio::join!(first, others.join_all());
        report.sent = attempts;
        let mut other_error = None;
        for r in others {
            match r {
                Ok(t) => report.connect_times.push(t),
                Err(e) => other_error = other_error.or(Some(e)),
            }
        }
        report.connected = report.connect_times.len() as u32;
        // Attempts that did not connect are loss, like ping's packets; the round fails when
        // none connected, or when the first connection's checks (TLS, expect) failed.
        let checks = o.tls || o.send.is_some() || o.expect.is_some();
        let error = match first {
            Ok(()) => (report.connected == 0).then_some(other_error.unwrap_or(ProbeError::Timeout)),
            Err(e) if report.connected == 0 || checks => Some(e),
            Err(_) => None,
        };
        (report, error)
    }
}

async fn connect(addr: SocketAddr, o: &TcpOptions) -> Result<(TcpStream, Duration), ProbeError> {
    let sock = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(|e| ProbeError::Network(format!("socket: {e}")))?;
    if let Some(tos) = o.tos {
        let s = socket2::SockRef::from(&sock);
        let r = if addr.is_ipv6() {
            s.set_tclass_v6(u32::from(tos))
        } else {
            s.set_tos_v4(u32::from(tos))
        };
        r.map_err(|e| ProbeError::Network(format!("setting TOS {tos}: {e}")))?;
    }
    if let Some(src) = o.source {
        sock.bind(SocketAddr::new(src, 0))
            .map_err(|e| ProbeError::Network(format!("binding to source {src}: {e}")))?;
    }
    let start = Instant::now();
    let stream = sock
        .connect(addr)
        .await
        .map_err(|e| ProbeError::Network(format!("connect to {addr}: {e}")))?;
    Ok((stream, start.elapsed()))
}

/// A connect-only attempt: its connect time, the connection closed at once.
async fn connect_only(
    addr: SocketAddr,
    o: &TcpOptions,
    timeout: Duration,
) -> Result<Duration, ProbeError> {
    let (stream, t) = tokio::time::timeout(timeout, connect(addr, o))
        .await
        .map_err(|_| ProbeError::Timeout)??;
    close(stream);
    Ok(t)
}

/// How long a closed connection waits for the peer's FIN before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Sends our FIN, then waits in the background for the peer's, so neither side keeps a
/// half-open connection and the round does not wait for a slow peer.
fn close<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(mut s: S) {
    tokio::spawn(async move {
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            s.shutdown().await?;
            let mut sink = [0u8; 512];
            while s.read(&mut sink).await? > 0 {}
            Ok::<(), std::io::Error>(())
        })
        .await;
    });
}

/// The first attempt: connect, then TLS and send/expect when configured, all within `timeout`.
async fn first_attempt(
    addr: SocketAddr,
    host: &Host,
    o: &TcpOptions,
    timeout: Duration,
    report: &mut TcpReport,
) -> Result<(), ProbeError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let (mut stream, t) = tokio::time::timeout_at(deadline, connect(addr, o))
        .await
        .map_err(|_| ProbeError::Timeout)??;
    report.connect_times.push(t);
    if !o.tls {
        let r = tokio::time::timeout_at(deadline, exchange(&mut stream, o, report)).await;
        close(stream);
        return r.map_err(|_| ProbeError::Timeout)?;
    }
    let name = server_name(o, host, addr.ip())?;
    let config = build_tls_config(o.ca_file.as_deref(), o.insecure, false).map(|mut c| {
        c.alpn_protocols.clear();
        Arc::new(c)
    })?;
    let started = Instant::now();
    let tls = tokio_rustls::TlsConnector::from(config).connect(name, stream);
    let mut tls = match tokio::time::timeout_at(deadline, tls).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(ProbeError::Validation(format!("TLS handshake: {e}"))),
        Err(_) => return Err(ProbeError::Timeout),
    };
    report.tls_handshake = Some(started.elapsed());
    let session = tls.get_ref().1;
    report.tls_version = session
        .protocol_version()
        .and_then(|v| super::tls_version_name(u16::from(v)))
        .map(String::from);
    report.cert_not_after = session.peer_certificates().and_then(|chain| {
        chain
            .iter()
            .filter_map(|c| super::stored::not_after(c))
            .min()
    });
    let r = tokio::time::timeout_at(deadline, exchange(&mut tls, o, report)).await;
    close(tls);
    r.map_err(|_| ProbeError::Timeout)?
}

fn server_name(o: &TcpOptions, host: &Host, ip: IpAddr) -> Result<ServerName<'static>, ProbeError> {
    let name = match (&o.server_name, host) {
        (Some(n), _) => n.clone(),
        (None, Host::Name(n)) => n.trim_end_matches('.').to_string(),
        (None, _) => ip.to_string(),
    };
    ServerName::try_from(name.clone()).map_err(|_| {
        ProbeError::Validation(format!(
            "server_name {name:?} is not a host name or address"
        ))
    })
}

/// `send`, then the first reply line against `expect`.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    o: &TcpOptions,
    report: &mut TcpReport,
) -> Result<(), ProbeError> {
    if let Some(line) = &o.send {
        let io = |e: std::io::Error| ProbeError::Network(format!("sending: {e}"));
        s.write_all(format!("{line}\n").as_bytes())
            .await
            .map_err(io)?;
        s.flush().await.map_err(io)?;
    }
    let Some(pattern) = &o.expect else {
        return Ok(());
    };
    let mut buf = Vec::new();
    let mut reader = BufReader::new(&mut *s).take(MAX_REPLY as u64);
    reader
        .read_until(b'\n', &mut buf)
        .await
        .map_err(|e| ProbeError::Network(format!("reading the reply: {e}")))?;
    let reply = String::from_utf8_lossy(&buf)
        .trim_end_matches(['\r', '\n'])
        .to_string();
    let matched = pattern.is_match(&reply);
    report.expect_matched = Some(matched);
    report.reply = Some(reply.clone());
    if matched {
        Ok(())
    } else {
        Err(ProbeError::Validation(format!(
            "the reply {reply:?} does not match expect {pattern:?}"
        )))
    }
}
