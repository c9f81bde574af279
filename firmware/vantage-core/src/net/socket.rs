//! What the ping probe's sockets are: the [`IcmpSocket`] trait and its factory, the key a
//! socket is opened for, and what it hands back. Kernel sockets (`icmp.rs`) and tests' scripted
//! ones implement it.

use std::fmt::Debug;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// A boxed future, for object-safe async trait methods.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How the kernel delivers ICMP to us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketKind {
    /// Unprivileged ICMP datagram socket: the kernel owns the identifier and only hands us
    /// replies to this socket's requests, without the IP header.
    Datagram,
    /// Raw socket (CAP_NET_RAW): we see every ICMP packet; IPv4 ones with their IP header.
    Raw,
}

/// Socket options that differ between targets; targets with equal keys share one socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SocketKey {
    pub ipv6: bool,
    pub ttl: Option<u8>,
    pub tos: Option<u8>,
    pub source: Option<IpAddr>,
}

/// One received packet.
#[derive(Debug, Clone, Copy)]
pub struct Received {
    pub len: usize,
    pub from: IpAddr,
    /// When the kernel received the packet (SO_TIMESTAMPNS), if it told us.
    pub kernel_time: Option<SystemTime>,
    /// When we read it.
    pub read_at: Instant,
}

/// When the kernel handed one of our packets to the network device (`SO_TIMESTAMPING`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SentStamp {
    /// The address the packet went to.
    pub to: IpAddr,
    /// The first bytes of the ICMP message: its header and the start of its payload.
    pub icmp_head: [u8; SENT_HEAD_LEN],
    pub time: SystemTime,
}

/// How much of a stamped ICMP message [`SentStamp`] keeps: the echo header and an 8-byte cookie.
pub const SENT_HEAD_LEN: usize = 16;

/// An ICMP socket of one address family.
pub trait IcmpSocket: Send + Sync + Debug {
    fn kind(&self) -> SocketKind;
    /// Sends without waiting; a full send buffer is an error, counted as a lost packet.
    fn send_to(&self, packet: &[u8], to: IpAddr) -> io::Result<()>;
    fn recv<'a>(&'a self, buf: &'a mut [u8]) -> BoxFuture<'a, io::Result<Received>>;
    /// Whether the kernel reports when each packet left ([`Self::sent_stamps`]).
    fn stamps_sends(&self) -> bool {
        false
    }
    /// Moves the send timestamps the kernel has queued so far into `out`, without waiting.
    fn sent_stamps(&self, _out: &mut Vec<SentStamp>) {}
}

/// Opens ICMP sockets.
pub trait IcmpSocketFactory: Send + Sync + Debug {
    fn open(&self, key: &SocketKey) -> io::Result<Arc<dyn IcmpSocket>>;
}
