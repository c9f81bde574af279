//! An HTTP round: the request on a fresh connection per hop (resolve, connect, TLS, then
//! hyper's HTTP/1.1, or HTTP/2 when the server's ALPN picks it), each phase timed; redirects
//! followed up to `max_redirects`; the last body read within `max_body` and checked.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HOST, LOCATION, USER_AGENT};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::super::dns::build_tls_config;
use super::super::resolve::resolve_host;
use super::super::round::{
    AddressGuard, Probe, ProbeRequest, check_addr, check_host, module_sample,
};
use super::super::tcp;
use super::options::{Url, parse_url};
use super::{HttpOptions, HttpReport, KIND};
use crate::config::host::Host;
use crate::net::BoxFuture;
use crate::sample::{ProbeError, Sample};
use crate::types::ProbeKind;

/// The `User-Agent` sent unless the headers set one.
const AGENT: &str = concat!("vantage/", env!("CARGO_PKG_VERSION"));

/// The HTTP prober. Cheap to share.
#[derive(Debug, Default)]
pub(crate) struct HttpProbe;

impl Probe for HttpProbe {
    fn kind(&self) -> ProbeKind {
        ProbeKind::Module(KIND)
    }

    fn run(&self, req: ProbeRequest) -> BoxFuture<'_, Sample> {
        Box::pin(async move {
            module_sample(&req, KIND, |o: &HttpOptions| {
                round(o, req.deadline, req.guard.as_deref())
            })
            .await
        })
    }
}

/// One round within the timeout (and the request's deadline): the report, and why it failed.
pub(crate) async fn round(
    o: &HttpOptions,
    deadline: Option<Duration>,
    guard: Option<&dyn AddressGuard>,
) -> (HttpReport, Option<ProbeError>) {
    let mut report = HttpReport::default();
    let timeout = deadline.map_or(o.timeout, |d| d.min(o.timeout));
    let error = match tokio::time::timeout(timeout, follow(o, &mut report, guard)).await {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e),
        Err(_) => Some(ProbeError::Timeout),
    };
    (report, error)
}

/// One response, as far as the round needs it.
struct Response {
    status: u16,
    location: Option<String>,
    body: Vec<u8>,
}

/// The request, and the redirects it is sent on (each checked by the guard, as the first).
async fn follow(
    o: &HttpOptions,
    report: &mut HttpReport,
    guard: Option<&dyn AddressGuard>,
) -> Result<(), ProbeError> {
    let mut url = parse_url(&o.url).map_err(ProbeError::Validation)?;
    let mut method = http::Method::from_bytes(o.method.as_bytes())
        .map_err(|_| ProbeError::Validation(format!("method {:?}", o.method)))?;
    let mut body = o.body.clone();
    loop {
        check_host(guard, &url.host, Some(url.port))?;
        let r = fetch(&url, &method, body.as_deref(), o, report, guard).await?;
        let redirect = (300..400).contains(&r.status) && o.max_redirects > 0;
        if let (true, Some(loc)) = (redirect, &r.location) {
            if report.redirects >= o.max_redirects {
                let n = o.max_redirects;
                return Err(ProbeError::Validation(format!("more than {n} redirects")));
            }
            url = parse_url(&join(&url, loc))
                .map_err(|m| ProbeError::Validation(format!("redirect to {loc:?}: {m}")))?;
            report.redirects += 1;
            // As browsers do: a 303, and a 301/302 after a POST, continue with a GET.
            let to_get = r.status == 303 || (matches!(r.status, 301 | 302) && method == "POST");
            if to_get {
                method = http::Method::GET;
                body = None;
            }
            continue;
        }
        return check(o, &r, report);
    }
}

/// The status against the valid codes, the body against the regexes.
fn check(o: &HttpOptions, r: &Response, report: &mut HttpReport) -> Result<(), ProbeError> {
    let text = String::from_utf8_lossy(&r.body);
    report.body_matched = o.body_must_match.as_ref().map(|p| p.is_match(&text));
    report.body_not_matched = o.body_must_not_match.as_ref().map(|p| !p.is_match(&text));
    if !o.status_ok(r.status) {
        return Err(ProbeError::Validation(format!(
            "status {} is not a valid status code",
            r.status
        )));
    }
    if report.body_matched == Some(false) {
        let p = o.body_must_match.as_ref().map_or("", |p| p.as_str());
        return Err(ProbeError::Validation(format!(
            "the body does not match body_must_match {p:?}"
        )));
    }
    if report.body_not_matched == Some(false) {
        let p = o.body_must_not_match.as_ref().map_or("", |p| p.as_str());
        return Err(ProbeError::Validation(format!(
            "the body matches body_must_not_match {p:?}"
        )));
    }
    Ok(())
}

/// A `Location` against the URL it came from (RFC 3986 section 5.2, without dot segments).
pub(super) fn join(base: &Url, loc: &str) -> String {
    let has_scheme = loc.split_once(':').is_some_and(|(s, _)| {
        s.starts_with(|c: char| c.is_ascii_alphabetic())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    });
    let scheme = if base.https { "https" } else { "http" };
    if has_scheme {
        loc.to_string()
    } else if let Some(rest) = loc.strip_prefix("//") {
        format!("{scheme}://{rest}")
    } else if loc.starts_with('/') {
        format!("{scheme}://{}{loc}", base.authority)
    } else {
        let path = base.path.split(['?', '#']).next().unwrap_or("/");
        let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
        format!("{scheme}://{}{dir}/{loc}", base.authority)
    }
}

/// One request on a fresh connection: resolve, connect, TLS, then the exchange.
async fn fetch(
    url: &Url,
    method: &http::Method,
    body: Option<&str>,
    o: &HttpOptions,
    report: &mut HttpReport,
    guard: Option<&dyn AddressGuard>,
) -> Result<Response, ProbeError> {
    let t = Instant::now();
    let ip = check_addr(guard, resolve_host(&url.host, o.ip_protocol).await?)?;
    report.phases[0] += t.elapsed();
    report.address = Some(ip);
    let addr = SocketAddr::new(ip, url.port);
    let t = Instant::now();
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| ProbeError::Network(format!("connect to {addr}: {e}")))?;
    report.phases[1] += t.elapsed();
    let request = request(url, method, body, o)?;
    if !url.https {
        return exchange(stream, false, request, o, report).await;
    }
    let name = server_name(o, url)?;
    let mut config = build_tls_config(o.ca_file.as_deref(), o.insecure, false)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let t = Instant::now();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, stream)
        .await
        .map_err(|e| ProbeError::Validation(format!("TLS handshake: {e}")))?;
    report.phases[2] += t.elapsed();
    let session = tls.get_ref().1;
    report.tls_version = session
        .protocol_version()
        .and_then(|v| tcp::tls_version_name(u16::from(v)))
        .map(String::from);
    report.cert_not_after = session
        .peer_certificates()
        .and_then(|chain| chain.iter().filter_map(|c| tcp::not_after(c)).min());
    let h2 = session.alpn_protocol() == Some(b"h2");
    exchange(tls, h2, request, o, report).await
}

fn server_name(o: &HttpOptions, url: &Url) -> Result<ServerName<'static>, ProbeError> {
    let name = match (&o.server_name, &url.host) {
        (Some(n), _) => n.clone(),
        (None, Host::Name(n)) => n.trim_end_matches('.').to_string(),
        (None, Host::Ip(ip)) => ip.to_string(),
    };
    ServerName::try_from(name.clone()).map_err(|_| {
        ProbeError::Validation(format!(
            "server_name {name:?} is not a host name or address"
        ))
    })
}

type Request = http::Request<Full<Bytes>>;

/// The request for HTTP/1.1 (origin form and `Host:`); HTTP/2 takes the full URI instead.
fn request(
    url: &Url,
    method: &http::Method,
    body: Option<&str>,
    o: &HttpOptions,
) -> Result<Request, ProbeError> {
    let mut b = http::Request::builder()
        .method(method.clone())
        .uri(url.path.as_str())
        .header(HOST, url.authority.as_str());
    for (k, v) in &o.headers {
        b = b.header(k.as_str(), v.as_str());
    }
    if !o
        .headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("user-agent"))
    {
        b = b.header(USER_AGENT, AGENT);
    }
    let body = Full::new(Bytes::from(body.unwrap_or_default().to_string()));
    b.body(body)
        .map_err(|e| ProbeError::Validation(format!("the request: {e}")))
}

/// Ends the connection's task when the round ends, however it ends (a timeout included).
struct Connection(tokio::task::JoinHandle<()>);

impl Drop for Connection {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Sends the request and reads the response: the processing and transfer phases.
async fn exchange<S>(
    io: S,
    h2: bool,
    mut req: Request,
    o: &HttpOptions,
    report: &mut HttpReport,
) -> Result<Response, ProbeError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let net = |e: hyper::Error| ProbeError::Network(format!("HTTP: {e}"));
    let io = TokioIo::new(io);
    let t = Instant::now();
    let (resp, _conn) = if h2 {
        let host = req.headers_mut().remove(HOST);
        let host = host.and_then(|h| h.to_str().ok().map(str::to_string));
        let uri = format!("https://{}{}", host.unwrap_or_default(), req.uri());
        *req.version_mut() = http::Version::HTTP_2;
        *req.uri_mut() = uri
            .parse()
            .map_err(|e| ProbeError::Validation(format!("the request URI: {e}")))?;
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(net)?;
        let conn = Connection(tokio::spawn(async move {
            let _ = conn.await;
        }));
        (send.send_request(req).await.map_err(net)?, conn)
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(net)?;
        let conn = Connection(tokio::spawn(async move {
            let _ = conn.await;
        }));
        (send.send_request(req).await.map_err(net)?, conn)
    };
    report.phases[3] += t.elapsed();
    report.version = Some(format!("{:?}", resp.version()));
    let status = resp.status().as_u16();
    report.status = Some(status);
    let location = resp
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let t = Instant::now();
    let body = read_body(resp.into_body(), o.max_body, report).await;
    report.phases[4] += t.elapsed();
    Ok(Response {
        status,
        location,
        body: body?,
    })
}

/// The body, at most `max` bytes of it; a longer one fails the round unread.
async fn read_body(
    mut body: Incoming,
    max: u64,
    report: &mut HttpReport,
) -> Result<Vec<u8>, ProbeError> {
    let mut buf = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ProbeError::Network(format!("reading the body: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let len = (buf.len() + data.len()) as u64;
        if len > max {
            report.content_length = Some(len);
            return Err(ProbeError::Validation(format!(
                "the body is longer than max_body ({max} bytes)"
            )));
        }
        buf.extend_from_slice(&data);
    }
    report.content_length = Some(buf.len() as u64);
    Ok(buf)
}
