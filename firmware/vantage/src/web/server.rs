//! The accept loop for plain HTTP and HTTPS.
//!
//! `axum::serve` sets no header read timeout, so a client that sends its headers a byte at a
//! time (slowloris) could hold a connection, a task and a file descriptor forever. Here every
//! connection gets a deadline for its request headers (the guard's time limit covers the rest),
//! TLS handshakes get one too, and the number of open connections is bounded.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use tokio::net::TcpListener;
use tower::ServiceExt;

use super::tls::OverTls;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Request headers must arrive within this after the connection opens or goes idle.
    pub header_timeout: Duration,
    /// A TLS handshake must finish within this.
    pub handshake_timeout: Duration,
    /// Connections open at once; more wait in the kernel's accept queue.
    pub max_connections: usize,
}

impl Limits {
    pub const DEFAULT: Limits = Limits {
        header_timeout: Duration::from_secs(15),
        handshake_timeout: Duration::from_secs(10),
        max_connections: 512,
    };
}

/// Where TLS server configs come from (they can change while serving).
pub type TlsSource = Arc<dyn Fn() -> Option<Arc<rustls::ServerConfig>> + Send + Sync>;

/// Serves `app` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<TlsSource>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            () = &mut shutdown => return,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let app = app.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tls {
                None => connection(stream, peer, app, false, limits).await,
                Some(source) => {
                    let Some(config) = source() else { return };
                    let acceptor = tokio_rustls::TlsAcceptor::from(config);
                    if let Ok(Ok(s)) =
                        tokio::time::timeout(limits.handshake_timeout, acceptor.accept(stream))
                            .await
                    {
                        connection(s, peer, app, true, limits).await;
                    }
                }
            }
        });
    }
}

async fn connection<S>(stream: S, peer: SocketAddr, app: Router, over_tls: bool, limits: Limits)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        if over_tls {
            req.extensions_mut().insert(OverTls);
        }
        let app = app.clone();
        async move {
            Ok::<_, Infallible>(
                app.oneshot(req.map(axum::body::Body::new))
                    .await
                    .unwrap_or_else(|e| match e {}),
            )
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
        .with_upgrades()
        .await;
}

/// Plain HTTP for `vantage run`.
pub async fn serve_http(listener: TcpListener, app: Router, shutdown: impl Future<Output = ()>) {
    serve(listener, app, None, Limits::DEFAULT, shutdown).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    fn limits() -> Limits {
        Limits {
            header_timeout: Duration::from_millis(300),
            handshake_timeout: Duration::from_millis(300),
            max_connections: 4,
        }
    }

    async fn start() -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let app = Router::new().route(
            "/",
            axum::routing::get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move {
                format!("hello {}", peer.ip())
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve(listener, app, None, limits(), async {
            let _ = rx.await;
        }));
        (addr, tx)
    }

    #[tokio::test]
    async fn serves_and_passes_the_peer_address() {
        let (addr, _stop) = start().await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert!(
            out.starts_with("HTTP/1.1 200") && out.ends_with("hello 127.0.0.1"),
            "{out}"
        );
    }

    #[tokio::test]
    async fn slow_headers_are_cut_off_and_do_not_block_others() {
        let (addr, stop) = start().await;
        // More slow clients than connection slots.
        let mut slow = Vec::new();
        for _ in 0..6 {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nHo").await.unwrap();
            slow.push(s);
        }
        for mut s in slow {
            let mut buf = Vec::new();
            let r = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
            assert!(r.is_ok(), "a slow client was never cut off");
        }
        // After them, a normal request is served.
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
            .await
            .unwrap()
            .unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        // Shutdown stops accepting.
        stop.send(()).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(TcpStream::connect(addr).await.is_err());
    }
}
