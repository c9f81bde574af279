//! The accept loop for plain HTTP and HTTPS.
//!
//! `axum::serve` sets no header read timeout, so a client that sends its headers a byte at a
//! time (slowloris) could hold a connection, a task and a file descriptor forever. Here every
//! connection gets a deadline for its request headers (the guard's time limit covers the rest),
//! TLS handshakes get one too, and the number of open connections is bounded, in all and per
//! client address, so one host holding idle connections cannot lock the others out.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vantage_core::LockExt;

use axum::Router;
use axum::extract::ConnectInfo;
use tokio::net::TcpListener;
use tower::ServiceExt;

/// Marks requests that arrived over TLS (the session cookie then gets `Secure`).
#[derive(Debug, Clone, Copy)]
pub struct OverTls;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Request headers must arrive within this after the connection opens or goes idle.
    pub header_timeout: Duration,
    /// A TLS handshake must finish within this.
    pub handshake_timeout: Duration,
    /// Connections open at once; more wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Connections open at once from one client address; more are closed at once.
    pub max_per_client: usize,
}

/// Plain HTTP connections open at once (docs/WEB.md, "Limits").
pub const MAX_CONNECTIONS: usize = 512;
/// HTTPS connections open at once (docs/WEB.md, "HTTPS").
pub const MAX_TLS_CONNECTIONS: usize = 256;
/// Connections one client address may hold open on a listener. Room for a Prometheus that
/// scrapes many `/probe` targets at once, while three such hosts still leave room for others.
pub const MAX_CONNECTIONS_PER_CLIENT: usize = 128;

impl Limits {
    pub const DEFAULT: Limits = Limits {
        header_timeout: Duration::from_secs(15),
        handshake_timeout: Duration::from_secs(10),
        max_connections: MAX_CONNECTIONS,
        max_per_client: MAX_CONNECTIONS_PER_CLIENT,
    };
    pub const HTTPS: Limits = Limits {
        max_connections: MAX_TLS_CONNECTIONS,
        ..Limits::DEFAULT
    };
}

/// Open connections per client address; an entry goes when its last connection closes.
#[derive(Default)]
struct PerClient(Mutex<HashMap<IpAddr, usize>>);

/// One client's slot, given back when dropped.
struct ClientSlot(Arc<PerClient>, IpAddr);

impl PerClient {
    fn take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<ClientSlot> {
        let ip = ip.to_canonical();
        let mut map = self.0.lock_or_recover();
        let n = map.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(ClientSlot(self.clone(), ip))
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut map = self.0.0.lock_or_recover();
        if let Some(n) = map.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.1);
            }
        }
    }
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
    let per_client = Arc::new(PerClient::default());
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
        // Over its share: closed at once, so it neither waits in the queue nor takes a slot.
        let Some(slot) = per_client.take(peer.ip(), limits.max_per_client) else {
            drop(stream);
            continue;
        };
        let app = app.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _permit = (permit, slot);
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
            max_per_client: 4,
        }
    }

    async fn start() -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
        start_with(limits()).await
    }

    async fn start_with(limits: Limits) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let app = Router::new().route(
            "/",
            axum::routing::get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move {
                format!("hello {}", peer.ip())
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve(listener, app, None, limits, async {
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

    /// A client connecting from `from` on the loopback network (any 127/8 address is ours).
    async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.bind(format!("{from}:0").parse().unwrap()).unwrap();
        s.connect(to).await.unwrap()
    }

    /// One host holding many idle connections (more than the whole limit) does not keep
    /// another from being served: its connections beyond its share are closed at once.
    #[tokio::test]
    async fn one_client_cannot_take_every_connection() {
        let (addr, _stop) = start_with(Limits {
            // Idle connections are never cut off here: only the per-client cap can help.
            header_timeout: Duration::from_secs(3600),
            handshake_timeout: Duration::from_secs(3600),
            max_connections: 8,
            max_per_client: 3,
        })
        .await;
        let mut idle = Vec::new();
        for _ in 0..20 {
            idle.push(connect_from("127.0.0.1", addr).await);
        }
        // The kernel queues them in order: the first three are held, the rest are closed by
        // the server at once (EOF, no response).
        for s in &mut idle[3..] {
            let mut b = [0u8; 1];
            let n = tokio::time::timeout(Duration::from_secs(30), s.read(&mut b))
                .await
                .expect("a connection over the client's share stays open");
            assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
        }
        // Another host is served while the first holds its share.
        let mut s = connect_from("127.0.0.2", addr).await;
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        tokio::time::timeout(Duration::from_secs(30), s.read_to_string(&mut out))
            .await
            .expect("the second host waits behind the first one's idle connections")
            .unwrap();
        assert!(out.ends_with("hello 127.0.0.2"), "{out}");
        // Its share comes back when it closes connections (once the server has seen them go).
        idle.clear();
        let served = async {
            loop {
                let mut s = connect_from("127.0.0.1", addr).await;
                let _ = s
                    .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    .await;
                let mut out = String::new();
                let _ = s.read_to_string(&mut out).await;
                if out.ends_with("hello 127.0.0.1") {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(30), served)
            .await
            .expect("the first host's share never came back");
    }

    /// The limits docs/WEB.md states are the ones the listeners use.
    #[test]
    fn documented_connection_limits_are_the_constants() {
        let doc = include_str!("../../../../docs/WEB.md")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        assert_eq!(Limits::DEFAULT.max_connections, MAX_CONNECTIONS);
        assert_eq!(Limits::HTTPS.max_connections, MAX_TLS_CONNECTIONS);
        assert_eq!(Limits::HTTPS.max_per_client, MAX_CONNECTIONS_PER_CLIENT);
        for phrase in [
            format!("at most {MAX_CONNECTIONS} connections at once"),
            format!("at most {MAX_CONNECTIONS_PER_CLIENT} from one client address"),
            format!("at most {MAX_TLS_CONNECTIONS} connections (`MAX_TLS_CONNECTIONS`)"),
            format!("{MAX_CONNECTIONS_PER_CLIENT} per client address"),
        ] {
            assert!(doc.contains(&phrase), "docs/WEB.md does not say {phrase:?}");
        }
    }
}
