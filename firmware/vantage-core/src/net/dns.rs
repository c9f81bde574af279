//! The DNS probe's socket edge: UDP sockets and TCP streams to one server. TLS is layered on top
//! by the probe, over any stream, so tests can script a TLS server through an in-memory pipe.

use std::fmt::Debug;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpSocket, UdpSocket};

use super::socket::BoxFuture;

/// A byte stream to a DNS server (TCP; the probe wraps it in TLS for DoT).
pub trait ByteStream: AsyncRead + AsyncWrite + Send + Unpin + Debug {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + Debug> ByteStream for T {}

/// A UDP socket connected to one server: it only receives datagrams from that address.
pub trait DatagramChannel: Send + Sync + Debug {
    fn send<'a>(&'a self, packet: &'a [u8]) -> BoxFuture<'a, io::Result<()>>;
    fn recv<'a>(&'a self, buf: &'a mut [u8]) -> BoxFuture<'a, io::Result<usize>>;
}

/// Opens connections to DNS servers.
pub trait DnsConnector: Send + Sync + Debug {
    fn udp<'a>(
        &'a self,
        server: SocketAddr,
        source: Option<IpAddr>,
    ) -> BoxFuture<'a, io::Result<Box<dyn DatagramChannel>>>;
    /// Resolves once the TCP handshake is done.
    fn tcp<'a>(
        &'a self,
        server: SocketAddr,
        source: Option<IpAddr>,
    ) -> BoxFuture<'a, io::Result<Box<dyn ByteStream>>>;
}

/// Kernel sockets. A fresh socket per query: a new random source port each time, as resolvers
/// do, and no state shared between probes.
#[derive(Debug, Default, Clone, Copy)]
pub struct KernelDns;

fn bind_addr(server: SocketAddr, source: Option<IpAddr>) -> SocketAddr {
    let ip = source.unwrap_or(if server.is_ipv4() {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    });
    SocketAddr::new(ip, 0)
}

#[derive(Debug)]
struct KernelUdp(UdpSocket);

impl DatagramChannel for KernelUdp {
    fn send<'a>(&'a self, packet: &'a [u8]) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(async move { self.0.send(packet).await.map(|_| ()) })
    }
    fn recv<'a>(&'a self, buf: &'a mut [u8]) -> BoxFuture<'a, io::Result<usize>> {
        Box::pin(self.0.recv(buf))
    }
}

impl DnsConnector for KernelDns {
    fn udp<'a>(
        &'a self,
        server: SocketAddr,
        source: Option<IpAddr>,
    ) -> BoxFuture<'a, io::Result<Box<dyn DatagramChannel>>> {
        Box::pin(async move {
            let sock = UdpSocket::bind(bind_addr(server, source)).await?;
            sock.connect(server).await?;
            Ok(Box::new(KernelUdp(sock)) as Box<dyn DatagramChannel>)
        })
    }

    fn tcp<'a>(
        &'a self,
        server: SocketAddr,
        source: Option<IpAddr>,
    ) -> BoxFuture<'a, io::Result<Box<dyn ByteStream>>> {
        Box::pin(async move {
            let sock = if server.is_ipv4() {
                TcpSocket::new_v4()?
            } else {
                TcpSocket::new_v6()?
            };
            if source.is_some() {
                sock.bind(bind_addr(server, source))?;
            }
            let stream = sock.connect(server).await?;
            // Queries are one small write each; don't let Nagle hold them back.
            stream.set_nodelay(true)?;
            Ok(Box::new(stream) as Box<dyn ByteStream>)
        })
    }
}
