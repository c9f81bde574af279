//! What a trace socket is: the [`TraceSocket`] trait and its factory, the probes handed to it
//! and the replies it reads back. The kernel sockets (`kernel.rs`) and tests' scripted ones
//! implement it.

use std::fmt::Debug;
use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{Mutex as AsyncMutex, mpsc};

use crate::net::socket::BoxFuture;
use crate::sample::Unreachable;
use crate::types::{TraceProtocol, TraceSockets};

/// Flow identifiers a socket serves (`Outgoing::flow` below this). Enough for multipath
/// discovery to confirm up to 10 next hops at one hop (57 flows, the MDA's stopping point),
/// and at least twice the configured flows, so a trace can move some flows to identifiers
/// no flow used the trace before.
pub const FLOW_IDS: u16 = 64;
const _: () = assert!(FLOW_IDS as i64 >= 2 * crate::defaults::TRACE_FLOWS_RANGE.max);

/// The longest a connecting TCP probe waits: the kernel retransmits the SYN after its initial
/// RTO of one second, and an answer to the retransmission would give a wrong RTT.
pub const TCP_CONNECT_LIMIT: Duration = Duration::from_millis(990);

/// Settings that differ between traces; traces with equal keys share one socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceSocketKey {
    pub ipv6: bool,
    pub protocol: TraceProtocol,
    /// Which kinds of socket may be used.
    pub sockets: TraceSockets,
    pub tos: Option<u8>,
    pub source: Option<IpAddr>,
}

/// One probe to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outgoing {
    pub dst: IpAddr,
    /// Destination port (UDP, TCP).
    pub port: u16,
    pub ttl: u8,
    /// Which flow identifier (below [`FLOW_IDS`]); the probes of one flow share their 5-tuple.
    pub flow: u16,
    /// Identifies the probe among those in flight to `dst`; 1..=0xfffe.
    pub seq: u16,
    /// Packet size including the IP header (UDP, ICMP).
    pub size: usize,
    /// How long an answer is awaited (a connecting TCP socket is closed after it).
    pub timeout: Duration,
}

/// What an answer says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyKind {
    /// A router on the way: ICMP time exceeded in transit.
    TimeExceeded,
    /// ICMP destination unreachable (port unreachable is how the destination answers UDP).
    Unreachable(Unreachable),
    /// The destination answered an ICMP echo request.
    EchoReply,
    /// The destination accepted a TCP SYN.
    TcpSynAck,
    /// The destination refused a TCP SYN.
    TcpReset,
    /// The destination answered a UDP probe with data (a service listens on the port).
    UdpData,
}

impl ReplyKind {
    /// Whether this answer, coming from the destination, means the probe reached it.
    pub fn is_destination_answer(self) -> bool {
        !matches!(self, ReplyKind::TimeExceeded)
    }
}

/// An answer to one of our probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceReply {
    /// Who answered.
    pub from: IpAddr,
    /// Where the answered probe was going.
    pub dst: IpAddr,
    /// The probe's flow, when the answer says.
    pub flow: Option<u16>,
    /// The probe's sequence number; `None` when the answer does not identify the probe (an
    /// IPv4 router quoting only 8 bytes of a UDP probe read from the error queue).
    pub seq: Option<u16>,
    pub kind: ReplyKind,
    /// TTL / hop limit of the answer as it arrived (a hint of the answerer's distance).
    pub reply_ttl: Option<u8>,
    /// When the kernel received the answer, if it said.
    pub kernel_time: Option<SystemTime>,
    /// When we read it.
    pub read_at: Instant,
}

/// Sends probes of one [`TraceSocketKey`] and receives the answers to all of them.
pub trait TraceSocket: Send + Sync + Debug {
    /// Raw sockets carry the probes.
    fn raw(&self) -> bool;
    /// The probes of a flow share one 5-tuple (Paris traceroute).
    fn paris(&self) -> bool;
    /// Every probe that reaches the destination opens a connection there (a connecting TCP
    /// socket): the trace then lets at most one probe that may reach it be in flight. Such a
    /// socket gives up on a probe after [`TCP_CONNECT_LIMIT`]: no answer comes later.
    fn connects(&self) -> bool {
        false
    }
    /// Hands one probe to the kernel without waiting.
    fn send(&self, probe: &Outgoing) -> io::Result<()>;
    /// The next answer to any probe sent on this socket.
    fn recv(&self) -> BoxFuture<'_, io::Result<TraceReply>>;
}

/// Opens trace sockets.
pub trait TraceSocketFactory: Send + Sync + Debug {
    fn open(&self, key: &TraceSocketKey) -> io::Result<Arc<dyn TraceSocket>>;
}

/// Answers found by whatever watches a socket, handed out in order by [`TraceSocket::recv`].
#[derive(Debug)]
pub(crate) struct Replies {
    tx: mpsc::UnboundedSender<TraceReply>,
    rx: AsyncMutex<mpsc::UnboundedReceiver<TraceReply>>,
}

impl Replies {
    pub fn new() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            tx,
            rx: AsyncMutex::new(rx),
        }
    }

    /// Where answers are put.
    pub fn sender(&self) -> mpsc::UnboundedSender<TraceReply> {
        self.tx.clone()
    }

    /// The next answer.
    pub fn recv(&self) -> BoxFuture<'_, io::Result<TraceReply>> {
        Box::pin(async move {
            self.rx
                .lock()
                .await
                .recv()
                .await
                .ok_or_else(|| io::Error::other("trace socket closed"))
        })
    }
}
