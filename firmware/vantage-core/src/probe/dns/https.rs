//! DNS over HTTPS (RFC 8484): one query as one HTTP/2 request, over a TLS stream the probe has
//! opened itself. Only the client side of HTTP/2 (the `h2` crate) lives here.
//!
//! RFC 8484 section 5.2 asks for HTTP/2 at least; servers such as unbound speak nothing else, so
//! there is no HTTP/1.1 fallback. The connection carries one request and is closed with it, like
//! every other transport of the probe: each round measures a full connection setup.

use std::net::{IpAddr, SocketAddr};
use std::pin::pin;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode, header};

use super::super::options::{DnsOptions, DohMethod};
use super::MAX_MESSAGE;
use crate::net::ByteStream;
use crate::sample::ProbeError;

/// The media type of a DNS message in an HTTP body (RFC 8484 section 6).
pub(super) const DNS_MESSAGE: &str = "application/dns-message";

/// The `:authority` of the request: the TLS name, bracketed if an IPv6 address, with the port
/// unless it is 443.
pub(super) fn authority(tls_name: &str, port: u16) -> String {
    let host = match tls_name.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => format!("[{v6}]"),
        _ => tls_name.to_string(),
    };
    if port == 443 {
        host
    } else {
        format!("{host}:{port}")
    }
}

/// Why an exchange ended without a DNS message.
#[derive(Debug)]
enum Fault {
    H2(h2::Error),
    Status(StatusCode),
    ContentType(Option<String>),
    TooBig(usize),
}

impl From<h2::Error> for Fault {
    fn from(e: h2::Error) -> Self {
        Fault::H2(e)
    }
}

/// Sends `packet` to `https://{authority}{doh_path}` over `stream` and returns the answer's
/// body, checked to be a DNS message by status and content type.
pub(super) async fn exchange(
    stream: Box<dyn ByteStream>,
    server: SocketAddr,
    authority: &str,
    opts: &DnsOptions,
    packet: &[u8],
) -> Result<Vec<u8>, ProbeError> {
    let url = format!("https://{authority}{}", opts.doh_path);
    let request = build_request(&url, opts.doh_method, packet)?;
    let (send, connection) = h2::client::Builder::new()
        // No server push for a one-request connection.
        .enable_push(false)
        .handshake::<_, Bytes>(stream)
        .await
        .map_err(|e| h2_error(server, &e))?;
    // Boxed, not pinned on the stack: it outlives this function for the close.
    let mut connection = Box::pin(connection);
    let body = (opts.doh_method == DohMethod::Post).then(|| Bytes::copy_from_slice(packet));
    let mut ask = pin!(async move {
        let mut send = send.ready().await?;
        let (response, mut tx) = send.send_request(request, body.is_none())?;
        if let Some(body) = body {
            tx.send_data(body, true)?;
        }
        let response = response.await?;
        let (parts, mut body) = response.into_parts();
        if !parts.status.is_success() {
            return Err(Fault::Status(parts.status));
        }
        let content_type = parts.headers.get(header::CONTENT_TYPE);
        if !content_type.is_some_and(is_dns_message) {
            return Err(Fault::ContentType(
                content_type.map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
            ));
        }
        let mut buf = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk?;
            let _ = body.flow_control().release_capacity(chunk.len());
            if buf.len() + chunk.len() > MAX_MESSAGE {
                return Err(Fault::TooBig(buf.len() + chunk.len()));
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf)
    });
    // The connection future does the I/O of the request; both run until the answer is in.
    let result = tokio::select! {
        biased;
        r = &mut ask => r,
        r = &mut connection => match r {
            // The request often knows better why (a reset of its stream).
            Err(e) => tokio::time::timeout(Duration::from_millis(100), &mut ask)
                .await
                .unwrap_or(Err(Fault::H2(e))),
            // Closed cleanly before the answer: the request sees the close and says so.
            Ok(()) => ask.await,
        },
    };
    if result.is_ok() {
        // All handles are gone with `ask`, so the connection says GOAWAY and ends. Closing is
        // not the server's answer time: it finishes on its own, within a bound.
        tokio::spawn(tokio::time::timeout(Duration::from_millis(200), connection));
    }
    result.map_err(|f| match f {
        Fault::H2(e) => h2_error(server, &e),
        Fault::Status(s) => ProbeError::Protocol(format!(
            "{url} answered HTTP status {}{}",
            s.as_u16(),
            s.canonical_reason().map_or(String::new(), |r| format!(" {r}"))
        )),
        Fault::ContentType(None) => {
            ProbeError::Protocol(format!("{url} answered without a content-type"))
        }
        Fault::ContentType(Some(t)) => ProbeError::Protocol(format!(
            "{url} answered with content-type {t:?}, not {DNS_MESSAGE}"
        )),
        Fault::TooBig(n) => ProbeError::Protocol(format!(
            "{url} answered with more than {MAX_MESSAGE} bytes ({n} so far), larger than any DNS message"
        )),
    })
}

fn build_request(url: &str, method: DohMethod, packet: &[u8]) -> Result<Request<()>, ProbeError> {
    let builder = Request::builder()
        .header(header::ACCEPT, DNS_MESSAGE)
        .header(
            header::USER_AGENT,
            concat!("vantage/", env!("CARGO_PKG_VERSION")),
        );
    let builder = match method {
        DohMethod::Post => builder
            .method(Method::POST)
            .uri(url)
            .header(header::CONTENT_TYPE, DNS_MESSAGE)
            .header(header::CONTENT_LENGTH, packet.len()),
        DohMethod::Get => {
            let sep = if url.contains('?') { '&' } else { '?' };
            builder
                .method(Method::GET)
                .uri(format!("{url}{sep}dns={}", base64url(packet)))
        }
    };
    builder
        .body(())
        .map_err(|e| ProbeError::Validation(format!("{url} is not a usable URL: {e}")))
}

/// `application/dns-message`, in any case, parameters allowed.
fn is_dns_message(v: &HeaderValue) -> bool {
    v.to_str().is_ok_and(|s| {
        s.split(';')
            .next()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case(DNS_MESSAGE))
    })
}

fn h2_error(server: SocketAddr, e: &h2::Error) -> ProbeError {
    if let Some(io) = e.get_io() {
        return match io.kind() {
            // A server that closes first breaks our next write.
            std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::BrokenPipe => {
                ProbeError::Protocol(format!(
                    "{server} closed the connection without a complete answer"
                ))
            }
            _ => ProbeError::Network(format!("HTTP/2 exchange with {server}: {io}")),
        };
    }
    match e.reason() {
        Some(reason) if e.is_go_away() && e.is_remote() => ProbeError::Protocol(format!(
            "{server} closed the HTTP/2 connection (GOAWAY {reason:?}) before answering"
        )),
        Some(reason) if e.is_reset() && e.is_remote() => ProbeError::Protocol(format!(
            "{server} reset the HTTP/2 stream ({reason:?}) before answering"
        )),
        _ => ProbeError::Protocol(format!("HTTP/2 exchange with {server}: {e}")),
    }
}

/// Base64url without padding (RFC 4648 section 5), the encoding of the `dns` parameter.
pub(super) fn base64url(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let n = (b(0) << 16) | (b(1) << 8) | b(2);
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}
