//! The socket edge. The ping probe talks to [`IcmpSocket`]s opened by an [`IcmpSocketFactory`],
//! the DNS probe to connections opened by a [`DnsConnector`], the trace probe to
//! [`trace::TraceSocket`]s; kernel implementations live here, tests script their own.

mod dns;
mod icmp;
mod socket;
mod sys;
pub mod trace;

pub use dns::{ByteStream, DatagramChannel, DnsConnector, KernelDns};
pub use icmp::{KernelSockets, echo_request, icmpv4_checksum_ok, ping_permission_hint};
pub use socket::{
    BoxFuture, IcmpSocket, IcmpSocketFactory, Received, SENT_HEAD_LEN, SentStamp, SocketKey,
    SocketKind,
};
