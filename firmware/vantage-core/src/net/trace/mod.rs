//! The traceroute socket edge.
//!
//! The trace probe hands [`Outgoing`] probes to a [`TraceSocket`] and reads back
//! [`TraceReply`]s that say who answered which probe. How a probe is put on the wire and how its
//! answer is recognised is the socket's business, so the probe's logic is the same for every
//! protocol and socket kind, and unit tests script replies without root.
//!
//! The kernel implementations ([`KernelTraceSockets`]):
//!
//! | protocol | unprivileged                                  | raw (CAP_NET_RAW)                        |
//! |----------|-----------------------------------------------|------------------------------------------|
//! | udp      | one UDP socket per flow, errors from the socket error queue (`IP_RECVERR`); probe identified by the quoted payload | same UDP sockets; errors read on a raw ICMP socket; probe identified by the quoted UDP checksum, so 8-byte quotes suffice |
//! | icmp     | ICMP datagram socket, errors from its error queue; probe identified by the quoted echo sequence | raw ICMP socket |
//! | tcp      | one connecting TCP socket per probe (not Paris: each probe has its own source port) | SYNs on a raw TCP socket from one reserved port per flow; errors on a raw ICMP socket |
//!
//! In every Paris mode, the probes of one flow share the fields routers hash on (addresses,
//! protocol, ports; for ICMP also the checksum), so a load balancer keeps the flow on one path.

mod kernel;
#[cfg(any(test, fuzzing))]
pub(crate) use kernel::fuzz as kernel_fuzz;
mod socket;
pub(crate) mod wire;

pub use kernel::KernelTraceSockets;
#[cfg(test)]
pub(crate) use socket::Replies;
pub use socket::{
    FLOW_IDS, Outgoing, ReplyKind, TCP_CONNECT_LIMIT, TraceReply, TraceSocket, TraceSocketFactory,
    TraceSocketKey,
};
