//! The ping probe: rounds of ICMP echo requests with kernel receive timestamps.
//!
//! One socket per set of socket options is shared by every target. Replies are matched on
//! (source address, sequence) and an 8-byte cookie in the payload. Sequence numbers are handed
//! out per destination address by the engine, so two targets pinging the same host never wait on
//! the same (address, sequence) key, which is the collision surge-ping's `Client` has on Linux
//! (surge-ping #73: the kernel owns the identifier of a datagram socket, leaving only the
//! sequence to tell requests apart).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use surge_ping::{Icmpv4Packet, Icmpv6Packet};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::engines::{Engines, socket_prober};
use super::resolve::HostResolver;
use super::round::{Probe, ProbeRequest, Progress, ProgressSender, timed_sample};
use crate::clock::{Clock, SystemClock};
use crate::lock::LockExt;
use crate::net::{
    BoxFuture, IcmpSocket, IcmpSocketFactory, KernelSockets, SocketKey, SocketKind, echo_request,
    icmpv4_checksum_ok,
};
use crate::sample::{Measurement, PingReport, ProbeError, Sample};
use crate::types::ProbeKind;
use options::PingOptions;

/// Kernel and user-space RTTs further apart than this mean the wall clock stepped.
const CLOCK_STEP_TOLERANCE: Duration = Duration::from_millis(500);
/// Destinations whose next sequence number is remembered at least; beyond this (and twice
/// the destinations in flight) the ones with nothing in flight are forgotten, so `/probe`
/// requests to ever new addresses cannot grow the table for good.
const SEQ_TABLE_PRUNE_AT: usize = 4096;

/// The echo payload after the cookie: a fixed pattern, checked in replies.
pub(crate) fn payload_byte(i: usize) -> u8 {
    (i & 0xff) as u8
}

/// The ping prober. Cheap to share; sockets open on first use.
pub struct PingProbe {
    factory: Arc<dyn IcmpSocketFactory>,
    clock: Arc<dyn Clock>,
    engines: Engines<SocketKey, Engine>,
    resolver: HostResolver,
}

socket_prober!(PingProbe);

impl PingProbe {
    /// A prober on real kernel sockets.
    pub fn new() -> Self {
        Self::with_parts(Arc::new(KernelSockets::default()), Arc::new(SystemClock))
    }

    pub fn with_parts(factory: Arc<dyn IcmpSocketFactory>, clock: Arc<dyn Clock>) -> Self {
        Self {
            factory,
            clock,
            engines: Engines::default(),
            resolver: HostResolver::default(),
        }
    }

    fn engine(&self, key: SocketKey) -> Result<Arc<Engine>, ProbeError> {
        let ipv6 = key.ipv6;
        self.engines
            .get_or_open(key, "ICMP socket", "ping probes", |key| {
                self.factory.open(key).map(|s| Engine::start(s, ipv6))
            })
    }

    /// Runs one round of `opts.packets` echo requests to `addr`.
    pub async fn round(&self, addr: IpAddr, opts: &PingOptions) -> Result<PingReport, ProbeError> {
        match self.round_with_error(addr, opts, None).await? {
            (report, Some(e)) if report.received == 0 => Err(e),
            (report, _) => Ok(report),
        }
    }

    /// A round's report, plus the send error if some requests could not be sent: those count
    /// as sent and lost, so an unroutable target shows 100 % loss in its counters.
    async fn round_with_error(
        &self,
        addr: IpAddr,
        opts: &PingOptions,
        live: Option<&ProgressSender>,
    ) -> Result<(PingReport, Option<ProbeError>), ProbeError> {
        let key = SocketKey {
            ipv6: addr.is_ipv6(),
            ttl: opts.ttl,
            tos: opts.tos,
            source: opts.source,
        };
        let engine = self.engine(key)?;
        Ok(engine.round(addr, opts, self.clock.as_ref(), live).await)
    }
}

impl Probe for PingProbe {
    fn kind(&self) -> ProbeKind {
        ProbeKind::PING
    }

    fn run(&self, req: ProbeRequest) -> BoxFuture<'_, Sample> {
        Box::pin(async move {
            let round = async {
                let mut opts: PingOptions = req.target.options_or_default();
                if let Some(deadline) = req.deadline {
                    // Fit the whole round, sends and the wait for the last reply, in the deadline.
                    let sends = opts.spacing * opts.packets.saturating_sub(1);
                    opts.timeout = opts
                        .timeout
                        .min(deadline.saturating_sub(sends))
                        .max(Duration::from_millis(1));
                }
                let addr = req.address(&self.resolver, opts.ip_protocol).await?;
                let live = req.progress.as_ref();
                let (report, send_error) = self.round_with_error(addr, &opts, live).await?;
                let ok = report.received > 0;
                let error = match send_error {
                    Some(e) if !ok => Some(e),
                    _ => (!ok && report.icmp_errors == 0).then_some(ProbeError::Timeout),
                };
                Ok((ok, error, Measurement::from(report)))
            };
            timed_sample(self.clock.as_ref(), &req, ProbeKind::PING, round).await
        })
    }
}

/// An echo payload of `size` bytes: the cookie, then the fixed pattern.
fn payload(cookie: &[u8; 8], size: usize) -> Vec<u8> {
    let mut payload = vec![0u8; size.max(8)];
    payload[..8].copy_from_slice(cookie);
    for (i, b) in payload[8..].iter_mut().enumerate() {
        *b = payload_byte(i);
    }
    payload
}

/// What the receive loop tells a round about its request number `index`.
#[derive(Debug)]
enum Event {
    /// `kernel_sent`: the RTT starts at the kernel's send timestamp.
    Reply {
        index: u32,
        rtt: Duration,
        kernel_sent: bool,
    },
    Duplicate,
    IcmpError {
        index: u32,
    },
}

/// A round's outcome per request, for a caller that watches the round live.
struct Live<'a> {
    tx: &'a ProgressSender,
    /// Per request: when it counts as lost, until its outcome is sent.
    due: Vec<Option<Instant>>,
}

impl Live<'_> {
    /// A request went out (`failed`: could not be sent, lost at once).
    fn sent(&mut self, deadline: Instant, failed: bool) {
        self.due.push(Some(deadline));
        if failed {
            self.outcome(self.due.len() as u32 - 1, None);
        }
    }

    /// Sends request `index`'s outcome, the first time only.
    fn outcome(&mut self, index: u32, rtt: Option<Duration>) {
        if let Some(d) = self.due.get_mut(index as usize)
            && d.take().is_some()
        {
            let _ = self.tx.send(Progress::new(live::Echo { index, rtt }));
        }
    }

    /// Reports the requests whose wait ended by `now` as lost.
    fn expire(&mut self, now: Instant) {
        for i in 0..self.due.len() {
            if self.due[i].is_some_and(|d| d <= now) {
                self.outcome(i as u32, None);
            }
        }
    }

    /// The round ended: the requests not reported got no answer in time.
    fn finish(&mut self) {
        for i in 0..self.due.len() {
            self.outcome(i as u32, None);
        }
    }

    fn next_due(&self) -> Option<Instant> {
        self.due.iter().flatten().min().copied()
    }
}

#[derive(Debug)]
struct Waiter {
    /// The request's number in its round.
    index: u32,
    sent_at: Instant,
    sent_wall: SystemTime,
    /// When the kernel sent the request (`SO_TIMESTAMPING`), once it has said so.
    kernel_sent: Option<SystemTime>,
    replies: u32,
    tx: mpsc::UnboundedSender<Event>,
}

#[derive(Debug)]
struct Table {
    waiters: HashMap<(IpAddr, u16), Waiter>,
    next_seq: HashMap<IpAddr, u16>,
    /// `next_seq` is pruned when it grows to this size.
    prune_at: usize,
}

impl Default for Table {
    fn default() -> Self {
        Self {
            waiters: HashMap::new(),
            next_seq: HashMap::new(),
            prune_at: SEQ_TABLE_PRUNE_AT,
        }
    }
}

impl Table {
    /// Removes a round's waiters and, when the table has grown, forgets the destinations
    /// with nothing in flight (amortised: the next prune waits until it has doubled again).
    fn release(&mut self, keys: &[(IpAddr, u16)]) {
        for k in keys {
            self.waiters.remove(k);
        }
        if self.next_seq.len() >= self.prune_at {
            let busy: std::collections::HashSet<IpAddr> =
                self.waiters.keys().map(|(a, _)| *a).collect();
            self.next_seq.retain(|a, _| busy.contains(a));
            self.prune_at = (2 * self.next_seq.len()).max(SEQ_TABLE_PRUNE_AT);
        }
    }

    /// The next sequence number for `addr` that no request in flight uses.
    fn allocate(&mut self, addr: IpAddr) -> Option<u16> {
        let next = self.next_seq.entry(addr).or_insert_with(rand::random);
        for _ in 0..=u16::MAX {
            let seq = *next;
            *next = next.wrapping_add(1);
            if !self.waiters.contains_key(&(addr, seq)) {
                return Some(seq);
            }
        }
        None
    }
}

#[derive(Debug)]
struct Shared {
    socket: Arc<dyn IcmpSocket>,
    ipv6: bool,
    /// Our identifier on raw sockets; the kernel assigns it on datagram sockets.
    ident: u16,
    cookie: [u8; 8],
    table: Mutex<Table>,
}

impl Shared {
    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock_or_recover()
    }
}

/// One socket and its receive loop.
#[derive(Debug)]
struct Engine {
    shared: Arc<Shared>,
    recv_task: JoinHandle<()>,
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.recv_task.abort();
    }
}

/// Removes a round's waiters however the round ends (finished, timed out or cancelled).
struct RoundGuard<'a> {
    shared: &'a Shared,
    keys: Vec<(IpAddr, u16)>,
}

impl Drop for RoundGuard<'_> {
    fn drop(&mut self) {
        self.shared.table().release(&self.keys);
    }
}

impl Engine {
    fn start(socket: Arc<dyn IcmpSocket>, ipv6: bool) -> Self {
        let shared = Arc::new(Shared {
            socket,
            ipv6,
            ident: rand::random(),
            cookie: rand::random(),
            table: Mutex::new(Table::default()),
        });
        let recv_task = tokio::spawn(receive_loop(shared.clone()));
        Self { shared, recv_task }
    }

    async fn round(
        &self,
        addr: IpAddr,
        opts: &PingOptions,
        clock: &dyn Clock,
        live: Option<&ProgressSender>,
    ) -> (PingReport, Option<ProbeError>) {
        let shared = &*self.shared;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut guard = RoundGuard {
            shared,
            keys: Vec::with_capacity(opts.packets as usize),
        };
        let mut live = live.map(|tx| Live {
            tx,
            due: Vec::with_capacity(opts.packets as usize),
        });
        let payload = payload(&shared.cookie, opts.size);

        let mut report = PingReport {
            address: Some(addr),
            ..PingReport::default()
        };
        let mut send_error = None;
        let mut answered = 0u32;
        let mut next_send = clock.now();
        let mut last_deadline = next_send;
        loop {
            let now = clock.now();
            if let Some(l) = &mut live {
                // Replies already delivered count before their requests are declared lost.
                while let Ok(ev) = rx.try_recv() {
                    tally(&mut report, &mut answered, ev, opts.timeout, Some(l));
                }
                l.expire(now);
            }
            if report.sent < opts.packets && now >= next_send {
                let Some(seq) = shared.table().allocate(addr) else {
                    // 65,536 requests to one address in flight: nothing sensible left to send.
                    send_error = Some(ProbeError::Network("no free ICMP sequence number".into()));
                    break;
                };
                guard.keys.push((addr, seq));
                let (sent_at, error) =
                    self.send((addr, seq), &payload, clock, report.sent, tx.clone());
                last_deadline = sent_at + opts.timeout;
                if let Some(l) = &mut live {
                    l.sent(last_deadline, error.is_some());
                }
                if let Some(e) = error {
                    // Counted as sent and lost: an unroutable target shows 100 % loss.
                    send_error = Some(e);
                    answered += 1;
                }
                report.sent += 1;
                next_send += opts.spacing;
                continue;
            }
            if report.sent == opts.packets && (answered >= report.sent || now >= last_deadline) {
                break;
            }
            let mut wake = if report.sent < opts.packets {
                next_send.min(last_deadline.max(now))
            } else {
                last_deadline
            };
            if let Some(due) = live.as_ref().and_then(Live::next_due) {
                wake = wake.min(due.max(now));
            }
            tokio::select! {
                // Replies first: one that arrived in time counts even if the deadline timer
                // fired in the same poll.
                biased;
                ev = rx.recv() => match ev {
                    Some(ev) => tally(&mut report, &mut answered, ev, opts.timeout, live.as_mut()),
                    None => break,
                },
                _ = tokio::time::sleep_until(wake.into()) => {}
            }
        }
        // Let the receive loop read what the kernel already queued before the waiters go.
        tokio::task::yield_now().await;
        drop(guard);
        // What the receive loop delivered before the guard removed the waiters. Replies are
        // judged by their own RTT, so a busy runtime that reads them late does not lose them.
        while let Ok(ev) = rx.try_recv() {
            tally(&mut report, &mut answered, ev, opts.timeout, live.as_mut());
        }
        if let Some(l) = &mut live {
            l.finish();
        }
        (report, send_error)
    }

    /// Registers request `index` of a round, to `addr` with `seq`, and sends it: its send
    /// time, and the error if it could not be sent.
    fn send(
        &self,
        (addr, seq): (IpAddr, u16),
        payload: &[u8],
        clock: &dyn Clock,
        index: u32,
        tx: mpsc::UnboundedSender<Event>,
    ) -> (Instant, Option<ProbeError>) {
        let shared = &*self.shared;
        let packet = echo_request(shared.ipv6, shared.ident, seq, payload);
        let sent_at = {
            // Register before sending so a fast reply cannot arrive unmatched. The send times
            // are read last, after the table lookup, so as little as possible of our own work
            // counts as round-trip time.
            let mut t = shared.table();
            let slot = t.waiters.entry((addr, seq));
            let sent_at = clock.now();
            slot.insert_entry(Waiter {
                index,
                sent_at,
                sent_wall: clock.wall(),
                kernel_sent: None,
                replies: 0,
                tx,
            });
            sent_at
        };
        if let Err(e) = shared.socket.send_to(&packet, addr) {
            return (
                sent_at,
                Some(ProbeError::Network(format!("send to {addr}: {e}"))),
            );
        }
        // Also keeps the error queue, which shares the receive buffer, short.
        apply_sent_stamps(shared);
        (sent_at, None)
    }
}

/// Adds one event of the receive loop to a round's report (and its outcome to `live`).
fn tally(
    report: &mut PingReport,
    answered: &mut u32,
    ev: Event,
    timeout: Duration,
    live: Option<&mut Live<'_>>,
) {
    let outcome = match ev {
        Event::Reply {
            index,
            rtt,
            kernel_sent,
        } if rtt <= timeout => {
            report.received += 1;
            report.rtts.push(rtt);
            report.kernel_send_stamps += u32::from(kernel_sent);
            *answered += 1;
            Some((index, Some(rtt)))
        }
        // Too late: counted as lost, like every pinger with a timeout does.
        Event::Reply { index, .. } => {
            *answered += 1;
            Some((index, None))
        }
        Event::Duplicate => {
            report.duplicates += 1;
            None
        }
        Event::IcmpError { index } => {
            report.icmp_errors += 1;
            *answered += 1;
            Some((index, None))
        }
    };
    if let (Some(l), Some((index, rtt))) = (live, outcome) {
        l.outcome(index, rtt);
    }
}

async fn receive_loop(shared: Arc<Shared>) {
    let mut buf = vec![0u8; 65536];
    loop {
        let rx = match shared.socket.recv(&mut buf).await {
            Ok(rx) => rx,
            Err(e) => {
                tracing::warn!("ICMP receive error: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let packet = &buf[..rx.len.min(buf.len())];
        let Some(parsed) = parse(&shared, packet, rx.from) else {
            continue;
        };
        let key = (parsed.addr, parsed.seq);
        let mut table = shared.table();
        let unstamped = |t: &Table| t.waiters.get(&key).is_some_and(|w| w.kernel_sent.is_none());
        if parsed.kind == ParsedKind::Reply && shared.socket.stamps_sends() && unstamped(&table) {
            // The request's send stamp was queued before its reply could arrive.
            drop(table);
            apply_sent_stamps(&shared);
            table = shared.table();
        }
        let Some(w) = table.waiters.get_mut(&key) else {
            continue;
        };
        let event = match parsed.kind {
            ParsedKind::Reply => {
                w.replies += 1;
                if w.replies > 1 {
                    Event::Duplicate
                } else {
                    let (rtt, kernel_sent) = rtt(w, rx.read_at, rx.kernel_time);
                    Event::Reply {
                        index: w.index,
                        rtt,
                        kernel_sent,
                    }
                }
            }
            ParsedKind::Error => Event::IcmpError { index: w.index },
        };
        let _ = w.tx.send(event);
    }
}

/// The RTT between the kernel's send and receive timestamps where it gave both, else from the
/// time read before sending to the kernel's receive timestamp, else user-space times only. A
/// kernel figure is used only if it fits inside the user-space one, so a wall clock that
/// stepped in between cannot distort it. The flag says whether the kernel's send time was used.
fn rtt(w: &Waiter, read_at: Instant, kernel_time: Option<SystemTime>) -> (Duration, bool) {
    let user = read_at.saturating_duration_since(w.sent_at);
    let plausible = |k: Duration| {
        k <= user + Duration::from_micros(200) && user - k.min(user) < CLOCK_STEP_TOLERANCE
    };
    let from = |sent: SystemTime| {
        kernel_time?
            .duration_since(sent)
            .ok()
            .filter(|k| plausible(*k))
    };
    if let Some(k) = w.kernel_sent.and_then(from) {
        return (k, true);
    }
    (from(w.sent_wall).unwrap_or(user), false)
}

/// Gives the requests in flight the send stamps the kernel has queued for them.
fn apply_sent_stamps(shared: &Shared) {
    let mut stamps = Vec::new();
    shared.socket.sent_stamps(&mut stamps);
    if stamps.is_empty() {
        return;
    }
    let raw = shared.socket.kind() == SocketKind::Raw;
    let mut table = shared.table();
    for s in stamps {
        let head = &s.icmp_head;
        let ident = u16::from_be_bytes([head[4], head[5]]);
        // Datagram sockets: the kernel chose the identifier, and only our packets loop back.
        if head[8..16] != shared.cookie || (raw && ident != shared.ident) {
            continue;
        }
        let seq = u16::from_be_bytes([head[6], head[7]]);
        if let Some(w) = table.waiters.get_mut(&(s.to, seq)) {
            // A stamp from before the request was registered belongs to an earlier use of the
            // sequence number.
            if s.time >= w.sent_wall {
                w.kernel_sent = Some(s.time);
            }
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum ParsedKind {
    Reply,
    Error,
}

#[derive(Debug)]
struct Parsed {
    /// The address the request went to.
    addr: IpAddr,
    seq: u16,
    kind: ParsedKind,
}

/// Decodes a received packet with surge-ping's codec and checks it is one of ours.
fn parse(shared: &Shared, packet: &[u8], from: IpAddr) -> Option<Parsed> {
    let raw = shared.socket.kind() == SocketKind::Raw;
    let (kind, ident, seq, real_dest, icmp_start) = match from {
        IpAddr::V4(src) if !shared.ipv6 => {
            let sock_type = if raw {
                socket2::Type::RAW
            } else {
                socket2::Type::DGRAM
            };
            let p = Icmpv4Packet::decode(packet, sock_type, src, Ipv4Addr::UNSPECIFIED).ok()?;
            let kind = match p.get_icmp_type().0 {
                0 => ParsedKind::Reply,
                3 | 11 | 12 => ParsedKind::Error,
                _ => return None,
            };
            let ihl = if raw {
                usize::from(packet.first()? & 0x0f) * 4
            } else {
                0
            };
            (
                kind,
                p.get_identifier().0,
                p.get_sequence().0,
                IpAddr::V4(p.get_real_dest()),
                ihl,
            )
        }
        IpAddr::V6(src) if shared.ipv6 => {
            let p = Icmpv6Packet::decode(packet, src).ok()?;
            let kind = match p.get_icmpv6_type().0 {
                129 => ParsedKind::Reply,
                1 | 3 | 4 => ParsedKind::Error,
                _ => return None,
            };
            (
                kind,
                p.get_identifier().0,
                p.get_sequence().0,
                IpAddr::V6(p.get_real_dest()),
                0,
            )
        }
        _ => return None,
    };
    // Datagram sockets only ever see replies to their own identifier, with a checked checksum
    // (ICMPv6 raw sockets have theirs checked by the kernel too).
    if raw
        && (ident != shared.ident || !shared.ipv6 && !icmpv4_checksum_ok(packet.get(icmp_start..)?))
    {
        return None;
    }
    if kind == ParsedKind::Reply {
        let cookie = packet.get(icmp_start + 8..icmp_start + 16)?;
        let rest = packet.get(icmp_start + 16..)?;
        if cookie != shared.cookie || rest.iter().enumerate().any(|(i, b)| *b != payload_byte(i)) {
            return None;
        }
    }
    Some(Parsed {
        addr: if kind == ParsedKind::Reply {
            from
        } else {
            real_dest
        },
        seq,
        kind,
    })
}

#[cfg(any(test, fuzzing))]
pub(crate) mod fuzz;
pub(crate) mod live;
pub(crate) mod module;
pub(crate) mod options;
pub mod series;
#[cfg(test)]
mod tests;
