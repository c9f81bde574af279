//! The traceroute probe: every TTL probed at once, one Paris flow (or several) per trace, and
//! path-change detection across traces.
//!
//! A trace sends, for each TTL from `first_ttl` up, `probes_per_hop` probes per flow, all back
//! to back (or `spacing` apart per hop), lowest TTL first so that a destination rate-limiting
//! its answers spends its budget on the probes that matter; where the destination's distance is
//! not known yet, one probe per flow first and the rest once the answers show the TTL is not
//! beyond it (`fill`). It ends as soon as every hop up to the destination answered or timed
//! out: about the slowest hop's RTT (twice that when the distance was not known), or one
//! timeout when a hop is silent, never a timeout per hop.
//!
//! The destination's distance from the last trace bounds the TTLs sent (plus a margin); if the
//! path got longer, the trace extends itself as soon as the top hop turns out to be a router.
//!
//! Answers that do not say which probe they answer (IPv4 routers quoting 8 bytes of a UDP probe
//! read from the error queue) are placed by what earlier traces learned about the answering
//! address, else by re-probing the unresolved TTLs of that flow one at a time.

mod detail;
mod fill;
pub(crate) mod live;
pub(crate) mod module;
pub(crate) mod options;
mod path;
mod rate;
pub mod series;
#[cfg(test)]
mod tests;
mod text;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::engines::{Engines, socket_prober};
use super::resolve::HostResolver;
use super::round::{Probe, ProbeRequest, Progress, ProgressSender, timed_sample};
use crate::clock::{Clock, SystemClock};
use crate::lock::LockExt;
use crate::net::BoxFuture;
use crate::net::trace::{
    FLOW_IDS, KernelTraceSockets, Outgoing, ReplyKind, TCP_CONNECT_LIMIT, TraceReply, TraceSocket,
    TraceSocketFactory, TraceSocketKey,
};
use crate::sample::{
    Balancing, HopReport, HopResponder, Measurement, ProbeError, Sample, TraceReport, Unreachable,
};
use crate::types::{ProbeKind, TraceDiscovery};
use options::TraceOptions;
use path::{FlowFacts, Path, PathTracker};
pub use rate::{DeviceRate, set_device_rate};

/// Kernel and user-space RTTs further apart than this mean the wall clock stepped.
const CLOCK_STEP_TOLERANCE: Duration = Duration::from_millis(500);
/// TTLs probed beyond the destination's distance in the last trace, to notice a longer path
/// without waiting for an extension.
const TTL_MARGIN: u8 = 2;
/// TTLs probed at once while the destination's distance is unknown (the first trace, or a
/// path that grew): the top hop answering "time exceeded" extends the trace by as many again.
/// The first trace thus sends `TTL_WINDOW × probes_per_hop × flows` probes at most at once
/// instead of `max_hops × ...`, most of which would all reach the destination together.
const TTL_WINDOW: u8 = 8;
/// With several flows, one in this many (at least one) moves to an unused identifier each
/// trace: a flow keeping its identifier for the daemon's life keeps its branch, so a branch
/// that no flow hashed onto would never be found. The others keep theirs, so that a branch
/// lost is seen as flows leaving it.
const ROTATE_ONE_IN: u16 = 4;
/// Per-target state not used for this long is dropped (targets removed from the config).
const STATE_IDLE_LIMIT: Duration = Duration::from_secs(7 * 24 * 3600);
/// Probes sent again, one flow at a time, at a TTL where flows met different next hops: a
/// second address for one flow means per-packet balancing there, not branches.
const SPLIT_REPROBES: usize = 2;
/// TTLs where paths split checked per trace at most (the lowest first); bounds the probes.
const MAX_SPLIT_CHECKS: usize = 2;
/// The MDA's stopping points for 95 % confidence (Veitch et al., "Failure control in
/// multipath route tracing", INFOCOM 2009; used by Paris traceroute's MDA and MDA-Lite): with
/// k next hops seen at a hop, `MDA_STOP[k - 1]` flows probed there leave less than a 5 %
/// chance that one more next hop was missed. Beyond 16, every flow identifier is used.
const MDA_STOP: [u16; 16] = [
    6, 11, 16, 21, 27, 33, 38, 44, 51, 57, 63, 70, 76, 83, 90, 96,
];
/// Targets whose state is kept at most.
const MAX_STATES: usize = crate::defaults::MAX_TARGETS + 1024;

/// Whether every flow's one router at the next TTL (`next`) follows from its one router at
/// this one (`here`): flows that met the same router here all met the same one there, and
/// as many flows met both as the MDA's stopping point asks for the routers met there, so
/// that packets picking branches at random (per-packet balancing) do not pass by chance.
fn follows(here: &HashMap<u16, Vec<IpAddr>>, next: &HashMap<u16, Vec<IpAddr>>) -> bool {
    let mut to: HashMap<IpAddr, IpAddr> = HashMap::new();
    let mut both = 0;
    for (flow, n) in next {
        if let Some(h) = here.get(flow) {
            if *to.entry(h[0]).or_insert(n[0]) != n[0] {
                return false;
            }
            both += 1;
        }
    }
    let mut routers: Vec<IpAddr> = to.into_values().collect();
    routers.sort_unstable();
    routers.dedup();
    both >= usize::from(MDA_STOP[routers.len().clamp(1, MDA_STOP.len()) - 1])
}

/// The traceroute prober. Cheap to share; sockets open on first use and are shared by every
/// target with the same protocol, family and socket options.
pub struct TraceProbe {
    factory: Arc<dyn TraceSocketFactory>,
    clock: Arc<dyn Clock>,
    engines: Engines<TraceSocketKey, Engine>,
    states: Mutex<HashMap<String, Arc<tokio::sync::Mutex<TargetState>>>>,
    resolver: HostResolver,
    /// The probe rate all traces share (`device.trace_probes_per_second`).
    device: Arc<DeviceRate>,
}

socket_prober!(TraceProbe);

/// What a target's traces remember between runs.
#[derive(Debug, Default)]
struct TargetState {
    options: Option<TraceOptions>,
    tracker: PathTracker,
    /// The destination's distance in the last trace that reached it.
    dest_ttl: Option<u8>,
    /// For sockets whose probes connect: the lowest TTL the destination may be at, by the last
    /// trace (its distance, else one beyond the farthest router that answered).
    dest_floor: Option<u8>,
    /// Where answers that did not name their probe came from: (flow, address) → (TTL, the
    /// answer's own TTL when it was learned).
    learned: HashMap<(u16, IpAddr), (u8, Option<u8>)>,
    last_used: Option<Instant>,
    /// Per flow: the identifier it goes out with (below `FLOW_IDS`).
    ids: Vec<u16>,
    /// Flows moved to new identifiers so far: says which flow moves next.
    rotations: u16,
    /// Where the search for an unused identifier starts, so that all of them take turns.
    next_id: u16,
}

impl TargetState {
    /// Moves some flows to identifiers no flow used in the last trace, when there are several
    /// Paris flows; returns which flows moved (their earlier branch says nothing now).
    fn rotate(&mut self, flows: u16, paris: bool) -> Vec<bool> {
        let n = usize::from(flows);
        let mut moved = vec![false; n];
        if self.ids.len() != n {
            self.ids = (0..flows).collect();
            return moved;
        }
        if !paris || flows < 2 {
            return moved;
        }
        for _ in 0..(flows / ROTATE_ONE_IN).max(1) {
            let f = usize::from(self.rotations % flows);
            let id = (0..FLOW_IDS)
                .map(|k| (self.next_id + k) % FLOW_IDS)
                .find(|id| !self.ids.contains(id))
                .unwrap_or(self.ids[f]);
            self.next_id = (id + 1) % FLOW_IDS;
            self.ids[f] = id;
            moved[f] = true;
            self.rotations = self.rotations.wrapping_add(1);
        }
        moved
    }
}

impl TraceProbe {
    /// A prober on real kernel sockets, drawing on the device's probe rate.
    pub fn new() -> Self {
        Self::with_parts(Arc::new(KernelTraceSockets), Arc::new(SystemClock))
            .with_device_rate(rate::DEVICE.clone())
    }

    /// The prober drawing on `device` for its probe rate (a prober of its own parts has a
    /// bucket of its own at the default rate).
    pub fn with_device_rate(mut self, device: Arc<DeviceRate>) -> Self {
        self.device = device;
        self
    }

    pub fn with_parts(factory: Arc<dyn TraceSocketFactory>, clock: Arc<dyn Clock>) -> Self {
        Self {
            factory,
            clock,
            engines: Engines::default(),
            states: Mutex::new(HashMap::new()),
            resolver: HostResolver::default(),
            device: Arc::new(DeviceRate::new(
                crate::defaults::DEVICE_TRACE_PROBES_PER_SECOND,
            )),
        }
    }

    fn engine(&self, key: TraceSocketKey) -> Result<Arc<Engine>, ProbeError> {
        let protocol = key.protocol;
        self.engines.get_or_open(
            key,
            &format!("{protocol} trace socket"),
            &format!("{protocol} traces"),
            |key| self.factory.open(key).map(Engine::start),
        )
    }

    fn state(&self, target: &str) -> Arc<tokio::sync::Mutex<TargetState>> {
        let mut states = self.states.lock_or_recover();
        let now = self.clock.now();
        if !states.contains_key(target) {
            states.retain(|_, s| {
                s.try_lock().map_or(true, |s| {
                    s.last_used
                        .is_none_or(|t| now.saturating_duration_since(t) < STATE_IDLE_LIMIT)
                })
            });
            // On-demand traces (`/probe`) name arbitrary hosts: bound what they can make us keep.
            if states.len() >= MAX_STATES {
                let oldest = states
                    .iter()
                    .filter_map(|(k, s)| s.try_lock().ok().map(|s| (s.last_used, k.clone())))
                    .min();
                if let Some((_, k)) = oldest {
                    states.remove(&k);
                }
            }
        }
        states.entry(target.to_string()).or_default().clone()
    }

    /// Traces `addr` once with `opts`, as target `target` (whose earlier traces it compares
    /// with for path changes).
    pub async fn trace(
        &self,
        target: &str,
        addr: IpAddr,
        opts: &TraceOptions,
        budget: Duration,
    ) -> Result<TraceReport, ProbeError> {
        self.trace_with(target, addr, opts, budget, None).await
    }

    /// [`Self::trace`], sending each answer to `live` as it arrives.
    async fn trace_with(
        &self,
        target: &str,
        addr: IpAddr,
        opts: &TraceOptions,
        budget: Duration,
        live: Option<&ProgressSender>,
    ) -> Result<TraceReport, ProbeError> {
        let key = TraceSocketKey {
            ipv6: addr.is_ipv6(),
            protocol: opts.protocol,
            sockets: opts.sockets,
            tos: opts.tos,
            source: opts.source,
        };
        let engine = self.engine(key)?;
        let state = self.state(target);
        let mut state = state.lock().await;
        if state.options.as_ref() != Some(opts) {
            *state = TargetState {
                options: Some(opts.clone()),
                ..TargetState::default()
            };
        }
        let mut lease = engine.lease(addr).await;
        let clock = self.clock.as_ref();
        let started = clock.now();
        let moved = state.rotate(flow_count(opts), engine.socket.paris());
        let mut round = Round::new(addr, opts, &*engine.socket, &mut state, clock);
        round.live = live;
        round.device = Some(&self.device);
        let end = started + budget;
        round.run(&mut lease.rx, end).await;
        // Discovery counts the addresses that answered at each hop: place them all first.
        round.resolve_unplaced(&mut lease.rx, end).await;
        round.discover(&mut lease.rx, end).await;
        round.check_splits(&mut lease.rx, end).await;
        round.resolve_unplaced(&mut lease.rx, end).await;
        let (mut report, paths) = round.report()?;
        report.rate_limited = round.rate_held;
        report.rate_cut_short = round.rate_cut;
        let dest_floor = round.frontier.and(round.dest_floor());
        let paris = round.socket.paris();
        let paths = if paris { paths } else { path::union(paths) };
        // Flows a router's "unreachable" ended short of the destination.
        let stopped: Vec<bool> = (0..usize::from(round.flows))
            .map(|f| round.dest[f].is_none() && round.stop[f].is_some())
            .collect();
        drop(lease);
        let now = clock.now();
        if tracing::enabled!(target: "vantage::trace", tracing::Level::DEBUG) {
            for (flow, p) in paths.iter().enumerate() {
                tracing::debug!(target: "vantage::trace", "{target}: flow {flow} to {addr}: {p}");
            }
        }
        let facts = FlowFacts {
            stopped: &stopped,
            moved: &moved,
        };
        let o = state
            .tracker
            .observe_flows(&paths, paris.then_some(facts), now, opts.path_window);
        for p in &o.new_paths {
            tracing::info!(target: "vantage::trace", "{target}: path to {addr} changed: {p}");
        }
        report.path_hash = o.hash;
        report.path_changed = o.changed;
        report.paths_known = o.known;
        if paris {
            for h in report.hops.iter_mut().filter(|h| h.responders.len() > 1) {
                h.balancing = Some(if state.tracker.is_per_packet(h.ttl) {
                    Balancing::PerPacket
                } else {
                    Balancing::PerFlow
                });
            }
        }
        // The next trace's range comes from the destination's answers only.
        if report.reached {
            state.dest_ttl = u8::try_from(report.hop_count()).ok();
        }
        state.dest_floor = dest_floor;
        state.last_used = Some(now);
        Ok(report)
    }
}

impl Probe for TraceProbe {
    fn kind(&self) -> ProbeKind {
        ProbeKind::TRACE
    }

    fn run(&self, req: ProbeRequest) -> BoxFuture<'_, Sample> {
        Box::pin(async move {
            let round = async {
                let started = self.clock.now();
                let mut opts: TraceOptions = req.target.options_or_default();
                // A trace may extend itself or re-probe once: allow it three rounds.
                let mut budget = opts.round_length() * 3;
                if let Some(deadline) = req.deadline {
                    let sends = opts.spacing * opts.probes_per_hop.saturating_sub(1);
                    opts.timeout = opts
                        .timeout
                        .min(deadline.saturating_sub(sends))
                        .max(Duration::from_millis(1));
                    budget = budget.min(deadline);
                }
                let addr = req.address(&self.resolver, opts.ip_protocol).await?;
                let budget = budget.saturating_sub(self.clock.now() - started);
                let live = req.progress.as_ref();
                let name = &req.target.name;
                let report = self.trace_with(name, addr, &opts, budget, live).await?;
                let stopped = report.hops.iter().any(|h| h.unreachable().is_some());
                let error = (!report.reached && !stopped).then_some(ProbeError::Timeout);
                Ok((report.reached, error, Measurement::from(report)))
            };
            timed_sample(self.clock.as_ref(), &req, ProbeKind::TRACE, round).await
        })
    }
}

/// Flows a trace probes: as configured, within what a socket's identifiers allow.
fn flow_count(opts: &TraceOptions) -> u16 {
    opts.flows.clamp(1, u32::from(FLOW_IDS / 2)) as u16
}

/// One socket and the task that hands its answers to the trace waiting for them.
struct Engine {
    socket: Arc<dyn TraceSocket>,
    routes: Arc<Mutex<HashMap<IpAddr, mpsc::UnboundedSender<TraceReply>>>>,
    /// One trace per destination at a time: answers that do not name their probe can then only
    /// be that trace's.
    leases: Mutex<HashMap<IpAddr, Arc<tokio::sync::Mutex<()>>>>,
    task: JoinHandle<()>,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("socket", &self.socket)
            .finish_non_exhaustive()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Lease<'a> {
    engine: &'a Engine,
    dst: IpAddr,
    rx: mpsc::UnboundedReceiver<TraceReply>,
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        self.engine.routes.lock_or_recover().remove(&self.dst);
        let mut leases = self.engine.leases.lock_or_recover();
        // The map's and our guard's references: nobody else waits for this destination.
        if leases
            .get(&self.dst)
            .is_some_and(|m| Arc::strong_count(m) <= 2)
        {
            leases.remove(&self.dst);
        }
    }
}

impl Engine {
    fn start(socket: Arc<dyn TraceSocket>) -> Self {
        let routes: Arc<Mutex<HashMap<IpAddr, mpsc::UnboundedSender<TraceReply>>>> = Arc::default();
        let (s, r) = (socket.clone(), routes.clone());
        let task = tokio::spawn(async move {
            loop {
                match s.recv().await {
                    Ok(reply) => {
                        let routes = r.lock_or_recover();
                        if let Some(tx) = routes.get(&reply.dst) {
                            let _ = tx.send(reply);
                        }
                    }
                    Err(e) => {
                        tracing::warn!("trace receive error: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        Self {
            socket,
            routes,
            leases: Mutex::new(HashMap::new()),
            task,
        }
    }

    async fn lease(&self, dst: IpAddr) -> Lease<'_> {
        let m = self
            .leases
            .lock_or_recover()
            .entry(dst)
            .or_default()
            .clone();
        let guard = m.lock_owned().await;
        let (tx, rx) = mpsc::unbounded_channel();
        self.routes.lock_or_recover().insert(dst, tx);
        Lease {
            engine: self,
            dst,
            rx,
            _guard: guard,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Answer {
    from: IpAddr,
    kind: ReplyKind,
    rtt: Duration,
}

#[derive(Debug, Clone)]
struct Sent {
    ttl: u8,
    flow: u16,
    at: Instant,
    wall: SystemTime,
    deadline: Instant,
    answer: Option<Answer>,
}

/// One trace in progress.
struct Round<'a> {
    addr: IpAddr,
    opts: &'a TraceOptions,
    size: usize,
    socket: &'a dyn TraceSocket,
    state: &'a mut TargetState,
    clock: &'a dyn Clock,
    /// The configured flows: probed at every TTL, their paths tracked.
    flows: u16,
    /// Those and the flows multipath discovery may add, probed once at the hops that need them.
    all: u16,
    /// Per flow: the identifier it goes out with.
    ids: Vec<u16>,
    /// Highest TTL scheduled so far.
    hi: u8,
    sent: Vec<Sent>,
    by_seq: HashMap<u16, usize>,
    next_seq: u16,
    /// Sends not made yet: (when, ttl, flow).
    queue: VecDeque<(Instant, u8, u16)>,
    /// Per flow: lowest TTL the destination answered at.
    dest: Vec<Option<u8>>,
    /// Per flow: lowest TTL a router answered "unreachable" at.
    stop: Vec<Option<u8>>,
    /// For sockets whose probes connect (`TraceSocket::connects`): the lowest TTL the
    /// destination may be at. Probes below it go out as usual; those at or beyond it one at a
    /// time, so that at most one reaches a listening service. It rises past each TTL where a
    /// router answered or the probe went unanswered (a silent service opens no connection).
    frontier: Option<u8>,
    /// Answers that did not say which probe they answer.
    unplaced: Vec<TraceReply>,
    /// Whether any answer did not say which probe it answers (discovery then goes a TTL at a
    /// time).
    anonymous: bool,
    send_errors: u32,
    last_send_error: Option<String>,
    /// Where each answer goes as it arrives, for a caller that shows the trace live.
    live: Option<&'a ProgressSender>,
    /// Per configured flow and TTL: what was queued there and whether it answered.
    slots: Vec<fill::Slot>,
    /// Per configured flow: how far its answers reached.
    reach: Vec<fill::Reach>,
    /// With zero spacing, the batch that probes queued now join: when it leaves, its size.
    batch: Option<(Instant, u32)>,
    /// Whether the plain trace is still running (before discovery and the split checks).
    opening: bool,
    /// This trace's probe rate (`probes_per_second`).
    own_rate: rate::Bucket,
    /// The device's, shared with every trace running at once (none: no device limit).
    device: Option<&'a DeviceRate>,
    /// While the next probe waits for a token: when one is due, and whether it is reserved
    /// (else the trace's own bucket has none yet, and the device's is asked again then).
    rate_wait: Option<(Instant, bool)>,
    /// Some probe waited for a token.
    rate_held: bool,
    /// The trace's time ran out while a probe waited for a token.
    rate_cut: bool,
}

impl<'a> Round<'a> {
    fn new(
        addr: IpAddr,
        opts: &'a TraceOptions,
        socket: &'a dyn TraceSocket,
        state: &'a mut TargetState,
        clock: &'a dyn Clock,
    ) -> Self {
        let flows = flow_count(opts);
        if state.ids.len() != usize::from(flows) {
            state.ids = (0..flows).collect();
        }
        let mut ids = state.ids.clone();
        if opts.discovery == TraceDiscovery::Mda && socket.paris() {
            // The other identifiers, from a point that moves each trace.
            let start = state.next_id;
            ids.extend(
                (0..FLOW_IDS)
                    .map(|k| (start + k) % FLOW_IDS)
                    .filter(|id| !state.ids.contains(id)),
            );
        }
        let all = ids.len() as u16;
        let frontier = socket.connects().then(|| {
            state
                .dest_floor
                .map_or(opts.first_ttl, |t| t.max(opts.first_ttl))
        });
        let hi = match state.dest_ttl {
            Some(d) => d
                .saturating_add(TTL_MARGIN)
                .clamp(opts.first_ttl, opts.max_hops),
            None => opts
                .first_ttl
                .saturating_add(TTL_WINDOW - 1)
                .min(opts.max_hops),
        };
        Self {
            addr,
            opts,
            size: opts.size_for(addr.is_ipv6()),
            socket,
            state,
            clock,
            flows,
            all,
            ids,
            hi,
            sent: Vec::new(),
            by_seq: HashMap::new(),
            next_seq: rand::random_range(1..=0xfffe),
            queue: VecDeque::new(),
            dest: vec![None; usize::from(all)],
            stop: vec![None; usize::from(all)],
            frontier,
            unplaced: Vec::new(),
            anonymous: false,
            send_errors: 0,
            last_send_error: None,
            live: None,
            slots: fill::slots(flows),
            reach: vec![fill::Reach::default(); usize::from(flows)],
            batch: None,
            opening: true,
            own_rate: rate::Bucket::new(opts.probes_per_second),
            device: None,
            rate_wait: None,
            rate_held: false,
            rate_cut: false,
        }
    }

    /// Queues the first probes for TTLs `lo..=hi`, starting at `at`: `planned` per flow and
    /// TTL; `fill` adds the rest where the answers show they are due.
    fn schedule(&mut self, lo: u8, hi: u8, at: Instant) {
        let plan: Vec<(u8, u32)> = (lo..=hi).map(|t| (t, self.planned(t))).collect();
        if self.opts.spacing.is_zero() {
            // Back to back, lowest TTL first, in batches: probes for TTLs beyond where a flow
            // ended are dropped before they leave.
            for &(ttl, n) in &plan {
                for _ in 0..n {
                    for flow in 0..self.flows {
                        let when = self.paced(at);
                        self.enqueue(when, ttl, flow);
                    }
                }
            }
        } else {
            let waves = plan.iter().map(|p| p.1).max().unwrap_or(1);
            for w in 0..waves {
                let when = at + self.opts.spacing * w;
                for &(ttl, _) in plan.iter().filter(|p| w < p.1) {
                    for flow in 0..self.flows {
                        self.enqueue(when, ttl, flow);
                    }
                }
            }
        }
    }

    /// The highest TTL that matters for a flow: the destination or the router that said
    /// "unreachable", else everything scheduled.
    fn top(&self, flow: u16) -> u8 {
        let f = usize::from(flow);
        match (self.dest[f], self.stop[f]) {
            (Some(d), Some(s)) => d.min(s),
            (Some(x), None) | (None, Some(x)) => x,
            (None, None) => self.hi,
        }
    }

    /// Whether a queued probe still matters. A probe that connects is not sent to the
    /// destination's distance or beyond once the destination answered.
    fn may_send(&self, ttl: u8, flow: u16) -> bool {
        let reached = self.dest[usize::from(flow)].is_some_and(|d| ttl >= d);
        ttl <= self.top(flow) && !(reached && self.frontier.is_some())
    }

    /// Whether a probe at `ttl` may reach the destination while a probe that may reach it is in
    /// flight: it then waits (connecting sockets only).
    fn held(&self, ttl: u8, busy: bool) -> bool {
        busy && self.frontier.is_some_and(|f| ttl >= f)
    }

    /// Whether a probe that may reach the destination is in flight.
    fn busy(&self, now: Instant) -> bool {
        self.frontier.is_some_and(|f| {
            self.sent
                .iter()
                .any(|s| s.ttl >= f && s.answer.is_none() && s.deadline > now)
        })
    }

    /// Moves the frontier past the TTLs whose probe went unanswered: silence there is a silent
    /// router, or a service that drops the SYN and so opens no connection either.
    fn pass_silent(&mut self, now: Instant) {
        let Some(f) = self.frontier else { return };
        let silent = self
            .sent
            .iter()
            .filter(|s| s.ttl >= f && s.answer.is_none() && s.deadline <= now)
            .map(|s| s.ttl.saturating_add(1))
            .max();
        if let Some(t) = silent {
            self.frontier = Some(f.max(t));
        }
    }

    /// Sends the queued probes that are due and not held back, as long as the rate limits
    /// give tokens; the others wait in the queue.
    fn send_due(&mut self, now: Instant) {
        let mut busy = self.busy(now);
        let mut i = 0;
        while let Some(&(when, ttl, flow)) = self.queue.get(i) {
            if when > now {
                break;
            }
            if self.held(ttl, busy) {
                i += 1;
                continue;
            }
            if self.may_send(ttl, flow) && self.within_budget() {
                if self.token(now).is_err() {
                    break;
                }
                self.queue.remove(i);
                self.send(ttl, flow);
                busy = self.busy(now);
            } else {
                self.queue.remove(i);
            }
        }
    }

    /// A token from this trace's bucket and the device's for a probe to send now, or the
    /// time the one reserved for it is due.
    fn token(&mut self, now: Instant) -> Result<(), Instant> {
        let reserved = match self.rate_wait {
            Some((at, true)) => Ok(at),
            _ => match self.device {
                Some(d) => d.reserve(&mut self.own_rate, now),
                None => match self.own_rate.ready_at(now) {
                    at if at > now => Err(at),
                    _ => {
                        self.own_rate.take(now);
                        Ok(now)
                    }
                },
            },
        };
        self.rate_wait = match reserved {
            Ok(at) if at <= now => None,
            Ok(at) => Some((at, true)),
            Err(at) => Some((at, false)),
        };
        self.rate_held |= self.rate_wait.is_some();
        self.rate_wait.map_or(Ok(()), |(at, _)| Err(at))
    }

    /// Waits for a token, until `end` at the latest: whether one was taken.
    async fn wait_token(&mut self, end: Instant) -> bool {
        loop {
            match self.token(self.clock.now()) {
                Ok(()) => return true,
                Err(at) if at >= end => {
                    self.rate_cut = true;
                    return false;
                }
                Err(at) => tokio::time::sleep_until(at.into()).await,
            }
        }
    }

    /// When the next queued probe that is not held back is due (and its token).
    fn next_send(&self, now: Instant) -> Option<Instant> {
        let busy = self.busy(now);
        self.queue
            .iter()
            .find(|q| !self.held(q.1, busy))
            .map(|q| self.rate_wait.map_or(q.0, |(w, _)| w.max(q.0)))
    }

    /// The lowest TTL the destination may be at, for the next trace: its distance, else one
    /// beyond the farthest router that answered.
    fn dest_floor(&self) -> Option<u8> {
        self.dest.iter().flatten().min().copied().or_else(|| {
            self.sent
                .iter()
                .filter(|s| {
                    s.answer
                        .is_some_and(|a| a.kind == ReplyKind::TimeExceeded && a.from != self.addr)
                })
                .map(|s| s.ttl.saturating_add(1))
                .max()
        })
    }

    fn allocate_seq(&mut self) -> u16 {
        loop {
            let s = self.next_seq;
            self.next_seq = if s >= 0xfffe { 1 } else { s + 1 };
            if !self.by_seq.contains_key(&s) {
                return s;
            }
        }
    }

    fn send(&mut self, ttl: u8, flow: u16) -> usize {
        let seq = self.allocate_seq();
        let probe = Outgoing {
            dst: self.addr,
            port: self.opts.port,
            ttl,
            flow: self.ids[usize::from(flow)],
            seq,
            size: self.size,
            timeout: self.opts.timeout,
        };
        let (at, wall) = (self.clock.now(), self.clock.wall());
        // A connecting socket closes the probe's socket at its limit: nothing answers later.
        let wait = match self.frontier {
            Some(_) => self.opts.timeout.min(TCP_CONNECT_LIMIT),
            None => self.opts.timeout,
        };
        let i = self.sent.len();
        // Registered before sending so that a fast answer finds it.
        self.sent.push(Sent {
            ttl,
            flow,
            at,
            wall,
            deadline: at + wait,
            answer: None,
        });
        self.by_seq.insert(seq, i);
        if let Err(e) = self.socket.send(&probe) {
            // Counted as sent and lost, as ping does: an unroutable target shows full loss.
            self.send_errors += 1;
            self.last_send_error = Some(format!("send to {}: {e}", self.addr));
            self.sent[i].deadline = at;
        }
        i
    }

    /// The new highest TTL when some flow has neither reached the destination nor been
    /// stopped and its highest scheduled hop is settled: a router answered (the path goes on:
    /// `TTL_WINDOW` more), or it stayed silent past its deadline (up to `max_hops` at once,
    /// not a timeout per window).
    fn extension(&self, now: Instant) -> Option<u8> {
        if self.hi >= self.opts.max_hops || !self.queue.is_empty() {
            return None;
        }
        // A silent top hop says the path may go on only while nothing says where it ends: once
        // the destination answered one flow, or a router said "unreachable" to one, a silent
        // flow is a blackholed branch or an answer lost to rate limiting, not a longer path.
        let ended = self.dest.iter().chain(&self.stop).any(Option::is_some);
        let mut silent = false;
        for f in 0..self.flows {
            let fi = usize::from(f);
            if self.dest[fi].is_some() || self.stop[fi].is_some() {
                continue;
            }
            let top: Vec<&Sent> = self
                .sent
                .iter()
                .filter(|s| s.flow == f && s.ttl == self.hi)
                .collect();
            if top
                .iter()
                .any(|s| s.answer.is_some_and(|a| a.kind == ReplyKind::TimeExceeded))
            {
                return Some(self.hi.saturating_add(TTL_WINDOW).min(self.opts.max_hops));
            }
            silent |= !ended
                && !top.is_empty()
                && top.iter().all(|s| s.answer.is_some() || s.deadline <= now);
        }
        silent.then_some(self.opts.max_hops)
    }

    fn pending(&self, now: Instant) -> Option<Instant> {
        self.sent
            .iter()
            .filter(|s| s.answer.is_none() && s.deadline > now && s.ttl <= self.top(s.flow))
            .map(|s| s.deadline)
            .min()
    }

    async fn run(&mut self, rx: &mut mpsc::UnboundedReceiver<TraceReply>, end: Instant) {
        let lo = self.opts.first_ttl;
        self.schedule(lo, self.hi, self.clock.now());
        self.drive(rx, end).await;
        self.opening = false;
    }

    /// Whether the trace may send one more probe.
    fn within_budget(&self) -> bool {
        self.sent.len() < self.opts.probe_budget as usize
    }

    /// MDA-Lite multipath discovery: at each hop short of the destination, probes with more
    /// flows (the configured ones were probed there already; then new identifiers, the same
    /// ones from hop to hop, so that those crossing each branch probe beyond it) until the
    /// flows probed there reach the stopping point for the next hops seen, or the budget
    /// runs out. A silent hop is not enumerated.
    async fn discover(&mut self, rx: &mut mpsc::UnboundedReceiver<TraceReply>, end: Instant) {
        if self.all == self.flows {
            return;
        }
        // The destination's hop first: its probes count in the budget before new flows do.
        self.fill(self.clock.now());
        let below = self.dest.iter().flatten().min().copied();
        let top = below.map_or_else(|| self.last_hop(&self.tops()), |d| d - 1);
        // Rounds over every TTL at once (one RTT each, not one per TTL), lowest TTL first; a
        // TTL at a time once answers came that do not name their probe.
        while self.clock.now() < end {
            let now = self.clock.now();
            let mut queued = false;
            for ttl in self.opts.first_ttl..=top {
                let (tried, next_hops) = self.census(ttl);
                let need = usize::from(MDA_STOP[next_hops.clamp(1, MDA_STOP.len()) - 1]);
                let room = (self.opts.probe_budget as usize)
                    .saturating_sub(self.sent.len() + self.queue.len());
                let fresh: Vec<u16> = (0..self.all)
                    .filter(|f| !tried.contains(f) && ttl <= self.top(*f))
                    .take(need.saturating_sub(tried.len()).min(room))
                    .collect();
                if next_hops == 0 {
                    continue;
                }
                for f in fresh {
                    self.enqueue(now, ttl, f);
                    queued = true;
                }
                if queued && self.anonymous {
                    break;
                }
            }
            if !queued {
                break;
            }
            self.drive(rx, end).await;
        }
        // The next trace's new flows start past the last one used here.
        let used = self.sent.iter().map(|s| usize::from(s.flow)).max();
        if let Some(u) = used.filter(|u| *u >= usize::from(self.flows)) {
            self.state.next_id = (self.ids[u] + 1) % FLOW_IDS;
        }
    }

    /// The flows probed at `ttl`, and how many addresses answered there.
    fn census(&self, ttl: u8) -> (Vec<u16>, usize) {
        let mut tried = Vec::new();
        let mut from = Vec::new();
        for s in self.sent.iter().filter(|s| s.ttl == ttl) {
            if !tried.contains(&s.flow) {
                tried.push(s.flow);
            }
            if let Some(a) = s.answer
                && !from.contains(&a.from)
            {
                from.push(a.from);
            }
        }
        (tried, from.len())
    }

    /// Re-probes one flow at the TTLs where flows met different routers and no flow met
    /// several yet: the answers join that flow's path, where a second address is the
    /// per-packet evidence the path tracker looks for.
    async fn check_splits(&mut self, rx: &mut mpsc::UnboundedReceiver<TraceReply>, end: Instant) {
        let now = self.clock.now();
        let splits = if self.socket.paris() {
            self.splits()
        } else {
            Vec::new()
        };
        for (ttl, flow) in splits {
            for _ in 0..SPLIT_REPROBES {
                self.enqueue(now, ttl, flow);
            }
        }
        // With what `discover` queued and did not send.
        if !self.queue.is_empty() {
            self.drive(rx, end).await;
        }
    }

    /// Up to `MAX_SPLIT_CHECKS` TTLs where flows met different routers, each with a flow
    /// that answered there. A split the one just below it explains (every flow's router here
    /// follows from its router there: the branches of one balancer, seen again one hop on,
    /// e.g. from the interfaces they enter the next router by) is no new balancer and is not
    /// checked again, nor is the next one it explains in turn.
    fn splits(&self) -> Vec<(u8, u16)> {
        let mut out = Vec::new();
        let mut below: Option<HashMap<u16, Vec<IpAddr>>> = None;
        for ttl in self.opts.first_ttl..=self.hi {
            // Per flow, the routers that said "time exceeded" at this TTL.
            let mut seen: HashMap<u16, Vec<IpAddr>> = HashMap::new();
            for s in self.sent.iter().filter(|s| s.ttl == ttl) {
                if let Some(a) = s.answer.filter(|a| a.kind == ReplyKind::TimeExceeded) {
                    let v = seen.entry(s.flow).or_default();
                    if !v.contains(&a.from) {
                        v.push(a.from);
                    }
                }
            }
            let mut all: Vec<IpAddr> = seen.values().flatten().copied().collect();
            all.sort();
            all.dedup();
            let checked = below.take();
            if all.len() > 1
                && seen.values().all(|v| v.len() == 1)
                && let Some(&flow) = seen.keys().min()
            {
                if checked.is_some_and(|b| follows(&b, &seen)) {
                    below = Some(seen);
                    continue;
                }
                out.push((ttl, flow));
                if out.len() == MAX_SPLIT_CHECKS {
                    break;
                }
                below = Some(seen);
            }
        }
        out
    }

    /// Sends what is queued and takes answers until every probe that matters is settled.
    async fn drive(&mut self, rx: &mut mpsc::UnboundedReceiver<TraceReply>, end: Instant) {
        loop {
            let now = self.clock.now();
            self.pass_silent(now);
            let late = self.fill(now);
            self.send_due(now);
            if let Some(hi) = self.extension(now) {
                let from = self.hi + 1;
                self.hi = hi;
                self.schedule(from, self.hi, now);
                continue;
            }
            let wake = [self.next_send(now), self.pending(now), late]
                .into_iter()
                .flatten()
                .min();
            // Every hop that matters answered or timed out, and no extension is due.
            let Some(wake) = wake else { break };
            if now >= end {
                self.rate_cut |=
                    self.rate_wait.is_some_and(|(w, _)| w > now) && !self.queue.is_empty();
                break;
            }
            // Answers first: a task that wakes late (a loaded machine) finds an answer and its
            // deadline ready at once, and the answer's own timestamp says if it came in time.
            tokio::select! {
                biased;
                r = rx.recv() => match r {
                    Some(r) => {
                        // Every answer at hand before `fill` looks: a destination answering
                        // several TTLs at once is at the lowest.
                        self.take(r);
                        while let Ok(r) = rx.try_recv() {
                            self.take(r);
                        }
                    }
                    None => break,
                },
                _ = tokio::time::sleep_until(wake.min(end).into()) => {}
            }
        }
        // Answers the receive task read but did not hand over yet: an anonymous answer left
        // there would never be placed.
        tokio::task::yield_now().await;
        while let Ok(r) = rx.try_recv() {
            self.take(r);
        }
    }

    fn rtt(&self, s: &Sent, r: &TraceReply) -> Duration {
        let user = r.read_at.saturating_duration_since(s.at);
        match r.kernel_time.and_then(|k| k.duration_since(s.wall).ok()) {
            Some(k)
                if k <= user + Duration::from_micros(200)
                    && user - k.min(user) < CLOCK_STEP_TOLERANCE =>
            {
                k
            }
            _ => user,
        }
    }

    /// Records an answer; answers that do not name their probe wait for `resolve_unplaced`.
    fn take(&mut self, r: TraceReply) {
        if let Some(r) = self.by_flow(r) {
            self.take_flow(r);
        }
    }

    /// `r` with its flow identifier turned into the flow that uses it; `None` for an identifier
    /// no flow of this trace uses (a late answer to an earlier trace).
    fn by_flow(&self, mut r: TraceReply) -> Option<TraceReply> {
        if let Some(id) = r.flow {
            r.flow = Some(self.ids.iter().position(|i| *i == id)? as u16);
        }
        Some(r)
    }

    /// [`Self::take`] for an answer whose flow is already ours.
    fn take_flow(&mut self, r: TraceReply) {
        if r.dst != self.addr {
            return;
        }
        let Some(seq) = r.seq else {
            let Some(f) = r.flow else { return };
            self.anonymous = true;
            if f >= self.flows {
                // Once answers like this one came, a discovery flow has one probe in flight at
                // a time: the answer is its. With several open (the first such answer came
                // during discovery), it cannot be placed.
                let mut open = (0..self.sent.len()).filter(|&i| {
                    let s = &self.sent[i];
                    s.flow == f && s.answer.is_none() && s.at <= r.read_at && s.deadline > r.read_at
                });
                if let (Some(i), None) = (open.next(), open.next()) {
                    self.answer(i, &r);
                }
            } else if !self.place_learned(&r) {
                self.unplaced.push(r);
            }
            return;
        };
        let Some(&i) = self.by_seq.get(&seq) else {
            return;
        };
        if r.flow.is_some_and(|f| f != self.sent[i].flow) {
            return;
        }
        self.answer(i, &r);
    }

    fn answer(&mut self, i: usize, r: &TraceReply) -> bool {
        let s = &self.sent[i];
        if s.answer.is_some() {
            return false;
        }
        let rtt = self.rtt(s, r);
        if rtt > self.opts.timeout {
            // Too late: lost, like every tracer with a timeout counts it.
            return false;
        }
        let (ttl, flow) = (s.ttl, usize::from(s.flow));
        self.sent[i].answer = Some(Answer {
            from: r.from,
            kind: r.kind,
            rtt,
        });
        let destination = r.from == self.addr && r.kind.is_destination_answer();
        self.note(ttl, flow as u16, !destination, rtt);
        // The destination answers every probe that reaches it: those beyond its distance
        // known so far say nothing new. (One that arrives before the nearer one is still sent:
        // the report, not the progress, is what counts.)
        let beyond = destination && self.dest[flow].is_some_and(|d| d < ttl);
        if let Some(tx) = self.live.filter(|_| !beyond) {
            let _ = tx.send(Progress::new(live::HopAnswer {
                ttl,
                flow: flow as u16,
                from: r.from,
                rtt,
                destination,
            }));
        }
        // Probes that connect have a flow of their own each (a new source port): the
        // destination's distance is every flow's, and no flow probes it again.
        let flows = match self.frontier {
            Some(_) => 0..self.dest.len(),
            None => flow..flow + 1,
        };
        if destination {
            for d in &mut self.dest[flows] {
                *d = Some(d.map_or(ttl, |d| d.min(ttl)));
            }
        } else {
            if matches!(r.kind, ReplyKind::Unreachable(_)) {
                self.stop[flow] = Some(self.stop[flow].map_or(ttl, |d| d.min(ttl)));
            }
            // A router answered: the destination lies beyond.
            self.frontier = self.frontier.map(|f| f.max(ttl.saturating_add(1)));
        }
        true
    }

    /// The earliest unanswered probe of (ttl, flow) sent before `r` arrived.
    fn open_probe(&self, ttl: u8, flow: u16, r: &TraceReply) -> Option<usize> {
        self.sent
            .iter()
            .position(|s| s.ttl == ttl && s.flow == flow && s.answer.is_none() && s.at <= r.read_at)
    }

    /// Places an answer that did not name its probe at the TTL where its sender answered
    /// before (unless the answer arrived with another TTL of its own, a sign that the sender
    /// moved), or the destination's answer at the destination's distance.
    fn place_learned(&mut self, r: &TraceReply) -> bool {
        let flow = r.flow.unwrap_or(0);
        let ttl = self
            .state
            .learned
            .get(&(self.ids[usize::from(flow)], r.from))
            .filter(|(_, hint)| hint.is_none() || *hint == r.reply_ttl)
            .map(|(ttl, _)| *ttl)
            .or_else(|| {
                // The destination answers every probe that reaches it.
                (r.from == self.addr)
                    .then(|| self.dest[usize::from(flow)])
                    .flatten()
            });
        match ttl.and_then(|ttl| self.open_probe(ttl, flow, r)) {
            Some(i) => self.answer(i, r),
            None => false,
        }
    }

    /// Places answers that did not name their probe: by what earlier traces learned, else by
    /// probing the unresolved TTLs of their flow one at a time.
    async fn resolve_unplaced(
        &mut self,
        rx: &mut mpsc::UnboundedReceiver<TraceReply>,
        end: Instant,
    ) {
        if self.unplaced.is_empty() {
            return;
        }
        let mut left = Vec::new();
        for r in std::mem::take(&mut self.unplaced) {
            if !self.place_learned(&r) {
                left.push(r);
            }
        }
        for flow in 0..self.flows {
            let mut mine: Vec<TraceReply> = left
                .iter()
                .filter(|r| r.flow == Some(flow))
                .copied()
                .collect();
            if mine.is_empty() {
                continue;
            }
            for ttl in self.opts.first_ttl..=self.top(flow) {
                // The top can come down (a router said "unreachable") while we probe.
                if mine.is_empty() || ttl > self.top(flow) || self.clock.now() >= end {
                    break;
                }
                let answered = self
                    .sent
                    .iter()
                    .any(|s| s.ttl == ttl && s.flow == flow && s.answer.is_some());
                if answered {
                    continue;
                }
                let Some(found) = self.probe_alone(ttl, flow, rx, end).await else {
                    continue;
                };
                let id = self.ids[usize::from(flow)];
                self.state
                    .learned
                    .insert((id, found.from), (ttl, found.reply_ttl));
                // Place the main phase's answers from this address at this TTL.
                let (here, rest): (Vec<_>, Vec<_>) =
                    mine.into_iter().partition(|r| r.from == found.from);
                mine = rest;
                for r in here {
                    if let Some(i) = self.open_probe(ttl, flow, &r) {
                        self.answer(i, &r);
                    }
                }
                if found.from == self.addr {
                    break;
                }
            }
        }
        if self.state.learned.len() > 4096 {
            self.state.learned.clear();
        }
    }

    /// Sends one probe with nothing else of its flow in flight and waits for its answer.
    async fn probe_alone(
        &mut self,
        ttl: u8,
        flow: u16,
        rx: &mut mpsc::UnboundedReceiver<TraceReply>,
        end: Instant,
    ) -> Option<TraceReply> {
        if !self.within_budget() || !self.wait_token(end).await {
            return None;
        }
        let i = self.send(ttl, flow);
        let deadline = self.sent[i].deadline.min(end);
        loop {
            // Answers first, and those already read once the deadline passed: on a loaded
            // machine the task wakes late to find both ready, and picking the deadline would
            // drop an answer that came in time (its timestamp decides).
            let r = tokio::select! {
                biased;
                r = rx.recv() => r?,
                _ = tokio::time::sleep_until(deadline.into()) => {
                    tokio::task::yield_now().await;
                    while let Ok(r) = rx.try_recv() {
                        if let Some(found) = self.answer_alone(i, flow, r) {
                            return found;
                        }
                    }
                    return None;
                }
            };
            if let Some(found) = self.answer_alone(i, flow, r) {
                return found;
            }
        }
    }

    /// Whether `r` settles the probe sent alone as `i`: `Some` with its answer (`None` if it
    /// came too late), or `None` if `r` answers something else.
    fn answer_alone(&mut self, i: usize, flow: u16, r: TraceReply) -> Option<Option<TraceReply>> {
        let r = self.by_flow(r)?;
        if r.dst != self.addr || r.flow != Some(flow) {
            return None;
        }
        match r.seq {
            Some(seq) if self.by_seq.get(&seq) == Some(&i) => Some(self.answer(i, &r).then_some(r)),
            // Alone in flight: an anonymous answer on this flow is this probe's.
            None if r.read_at >= self.sent[i].at => Some(self.answer(i, &r).then_some(r)),
            _ => {
                self.take_flow(r);
                None
            }
        }
    }

    /// Each flow's last hop: the destination, the router that stopped it, or the last TTL that
    /// answered at all.
    fn tops(&self) -> Vec<u8> {
        (0..self.all)
            .map(|f| {
                let fi = usize::from(f);
                self.dest[fi].or(self.stop[fi]).unwrap_or_else(|| {
                    self.sent
                        .iter()
                        .filter(|s| s.flow == f && s.answer.is_some())
                        .map(|s| s.ttl)
                        .max()
                        .unwrap_or(0)
                })
            })
            .collect()
    }

    /// The last hop shown: the destination's farthest answer when it answered, else the
    /// highest hop any flow got to. Flows stopped beyond the destination (an "unreachable"
    /// from a blackholed branch that rate limiting let through only at a high TTL) add no
    /// hops that do not exist.
    fn last_hop(&self, tops: &[u8]) -> u8 {
        self.dest
            .iter()
            .flatten()
            .copied()
            .max()
            .unwrap_or_else(|| tops.iter().copied().max().unwrap_or(0))
    }

    /// Cuts each flow's path at its last hop, and at the destination only where its distance
    /// is certain.
    fn settle(&self, paths: &mut [Path], tops: &[u8]) {
        let lo = self.opts.first_ttl;
        for (f, p) in paths.iter_mut().enumerate() {
            p.hops.truncate(usize::from(tops[f].saturating_sub(lo)) + 1);
            // The destination answering at TTL t says its distance is at most t; it is t only
            // if a router let the probe with TTL t - 1 expire. Probes lost below it (a
            // neighbour still resolving, rate limits) would otherwise make a distance up.
            if let Some(t) = p.reached_at {
                let certain = t == 1
                    || self.sent.iter().any(|s| {
                        usize::from(s.flow) == f
                            && s.ttl == t - 1
                            && s.answer.is_some_and(|a| {
                                a.kind == ReplyKind::TimeExceeded && a.from != self.addr
                            })
                    });
                if !certain {
                    p.reached_at = None;
                    p.hops.truncate(usize::from(t.saturating_sub(lo)));
                }
            }
        }
    }

    /// Credits an answer to the address that sent it, with its "unreachable" mark (the
    /// destination's port unreachable is its normal answer, no mark).
    fn credit(&self, hop: &mut HopReport, flow: u16, a: Answer) {
        let r = match hop.responders.iter().position(|r| r.address == a.from) {
            Some(i) => &mut hop.responders[i],
            None => {
                hop.responders.push(HopResponder {
                    address: a.from,
                    replies: 0,
                    flows: Vec::new(),
                    unreachable: None,
                });
                hop.responders.last_mut().expect("pushed")
            }
        };
        r.replies += 1;
        if !r.flows.contains(&u32::from(flow)) {
            r.flows.push(u32::from(flow));
        }
        if let ReplyKind::Unreachable(u) = a.kind
            && !(a.from == self.addr && u == Unreachable::Port)
        {
            r.unreachable = r.unreachable.or(Some(u));
        }
    }

    /// The hops, and each flow's path for the path tracker.
    fn report(&self) -> Result<(TraceReport, Vec<Path>), ProbeError> {
        if self.send_errors as usize == self.sent.len() && !self.sent.is_empty() {
            return Err(ProbeError::Network(
                self.last_send_error.clone().unwrap_or_default(),
            ));
        }
        let lo = self.opts.first_ttl;
        let tops = self.tops();
        let last = self.last_hop(&tops);
        let mut hops = Vec::new();
        let mut paths: Vec<Path> = (0..self.flows)
            .map(|f| Path {
                first_ttl: lo,
                hops: Vec::new(),
                reached_at: self.dest[usize::from(f)],
            })
            .collect();
        for ttl in (lo..=last).filter(|_| last >= lo) {
            let mut hop = HopReport {
                ttl,
                ..HopReport::default()
            };
            for p in paths.iter_mut() {
                p.hops.push(Vec::new());
            }
            for s in self
                .sent
                .iter()
                .filter(|s| s.ttl == ttl && s.ttl <= tops[usize::from(s.flow)])
            {
                hop.sent += 1;
                let Some(a) = s.answer else { continue };
                hop.received += 1;
                hop.rtts.push(a.rtt);
                self.credit(&mut hop, s.flow, a);
                // A router's "unreachable" says where forwarding stopped (often the previous
                // hop answering for the next); it is no hop of a working path. The outage shows
                // in the probe's success, not as a path change.
                let stopped = matches!(a.kind, ReplyKind::Unreachable(_)) && a.from != self.addr;
                // Discovery flows show branches; only the configured flows have paths.
                let Some(p) = paths.get_mut(usize::from(s.flow)) else {
                    continue;
                };
                let h = p.hops.last_mut().expect("pushed above");
                if !stopped && !h.contains(&a.from) {
                    h.push(a.from);
                    h.sort();
                }
            }
            hop.responders
                .sort_by(|a, b| b.replies.cmp(&a.replies).then(a.address.cmp(&b.address)));
            for r in &mut hop.responders {
                r.flows.sort_unstable();
            }
            hops.push(hop);
        }
        self.settle(&mut paths, &tops);
        let report = TraceReport {
            address: Some(self.addr),
            protocol: self.opts.protocol,
            raw_sockets: self.socket.raw(),
            paris: self.socket.paris(),
            flows: u32::from(self.flows),
            reached: self.dest.iter().any(Option::is_some),
            flows_reached: self.dest[..usize::from(self.flows)]
                .iter()
                .flatten()
                .count() as u32,
            hops,
            ..TraceReport::default()
        };
        Ok((report, paths))
    }
}
