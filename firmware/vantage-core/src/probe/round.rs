//! One round as a probe kind sees it: what it is asked ([`ProbeRequest`]), what it may reach
//! ([`AddressGuard`]), where it reports as it runs ([`Progress`]), and the [`Probe`] that runs it.

use std::fmt::Debug;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::report::{ModuleReport, Report};
use super::resolve::HostResolver;
use crate::clock::Clock;
use crate::config::host::Host;
use crate::config::target::Target;
use crate::net::BoxFuture;
use crate::sample::{Measurement, ProbeError, Sample};
use crate::types::{IpProtocol, ModuleId, ProbeKind};

/// What a probe is asked to do: probe this target once.
#[derive(Debug, Clone)]
pub struct ProbeRequest {
    pub target: Arc<Target>,
    /// An upper bound for the whole round (e.g. Prometheus' scrape timeout on `/probe`).
    pub deadline: Option<Duration>,
    /// What the round may reach, for a round a network client asked for (`/probe`); the
    /// config's own rounds have none.
    pub guard: Option<Arc<dyn AddressGuard>>,
    /// Where the round sends its answers as they arrive, for a caller that shows the round
    /// live (the page's "Run now", [`LiveRun`](super::live::LiveRun)); the ping and trace
    /// probes send them.
    pub progress: Option<ProgressSender>,
}

impl ProbeRequest {
    pub fn for_target(target: &Target) -> Self {
        Self {
            target: Arc::new(target.clone()),
            deadline: None,
            guard: None,
            progress: None,
        }
    }

    /// `ip` if the guard lets the round send to it (every address when there is no guard).
    pub fn checked(&self, ip: IpAddr) -> Result<IpAddr, ProbeError> {
        check_addr(self.guard.as_deref(), ip)
    }

    /// The address the target's host resolves to with `resolver`, if the round may reach it.
    pub(crate) async fn address(
        &self,
        resolver: &HostResolver,
        protocol: IpProtocol,
    ) -> Result<IpAddr, ProbeError> {
        let addr = resolver.resolve(&self.target.host, protocol).await;
        addr.and_then(|a| self.checked(a))
    }
}

/// One answer of a round, sent while the round runs (see [`ProbeRequest::progress`]). What it
/// holds is its kind's (a ping echo's outcome, a trace's hop answer): the kind's probe makes it
/// and the kind's [`LiveRun`](super::live::LiveRun) reads it back, so a kind that runs live
/// adds nothing here.
#[derive(Debug)]
pub struct Progress(Box<dyn Answer>);

/// What a kind's answer is: anything its own module can read back.
trait Answer: std::any::Any + Send + Debug {}
impl<T: std::any::Any + Send + Debug> Answer for T {}

impl Progress {
    pub fn new(answer: impl std::any::Any + Send + Debug) -> Self {
        Self(Box::new(answer))
    }

    /// The answer, if it is a `T`.
    pub fn get<T: std::any::Any>(&self) -> Option<&T> {
        let any: &dyn std::any::Any = &*self.0;
        any.downcast_ref()
    }
}

/// Where a round sends its [`Progress`]. Unbounded: a round's answers are bounded by its
/// options, and a round never waits for the caller.
pub type ProgressSender = tokio::sync::mpsc::UnboundedSender<Progress>;

/// What a round asked for over the network may reach. A probe checks the host it is about to
/// resolve (a redirect's too) and then the address it resolved to, right before sending: a
/// name that resolves to a refused address (DNS rebinding) is refused too.
pub trait AddressGuard: Send + Sync + Debug {
    /// A host and port the round is about to resolve and connect to (`None`: no port, ICMP).
    fn check_host(&self, host: &Host, port: Option<u16>) -> Result<(), String>;
    /// The address the host resolved to.
    fn check_addr(&self, ip: IpAddr) -> Result<(), String>;
}

/// `ip` if `guard` (when there is one) lets a round send to it.
pub fn check_addr(guard: Option<&dyn AddressGuard>, ip: IpAddr) -> Result<IpAddr, ProbeError> {
    match guard.map(|g| g.check_addr(ip)) {
        Some(Err(msg)) => Err(ProbeError::Validation(format!("refused: {msg}"))),
        _ => Ok(ip),
    }
}

/// Whether `guard` (when there is one) lets a round reach `host` on `port`.
pub fn check_host(
    guard: Option<&dyn AddressGuard>,
    host: &Host,
    port: Option<u16>,
) -> Result<(), ProbeError> {
    match guard.map(|g| g.check_host(host, port)) {
        Some(Err(msg)) => Err(ProbeError::Validation(format!("refused: {msg}"))),
        _ => Ok(()),
    }
}

/// A probe kind. Implementations never panic on bad input from the network and always return a
/// sample, failed or not.
pub trait Probe: Send + Sync + Debug {
    fn kind(&self) -> ProbeKind;
    fn run(&self, req: ProbeRequest) -> BoxFuture<'_, Sample>;
}

/// How a round went: whether it succeeded, why not, and what it measured; or why it could not
/// run at all (a failed round that measured nothing).
pub(crate) type Outcome = Result<(bool, Option<ProbeError>, Measurement), ProbeError>;

/// A round of `probe` for `req`'s target as a [`Sample`], timed on `clock` around `round`.
pub(crate) async fn timed_sample(
    clock: &dyn Clock,
    req: &ProbeRequest,
    probe: ProbeKind,
    round: impl Future<Output = Outcome>,
) -> Sample {
    let started = clock.now();
    let timestamp = clock.wall();
    let result = round.await;
    let duration = clock.now().saturating_duration_since(started);
    let (success, error, measurement) =
        result.unwrap_or_else(|e| (false, Some(e), Measurement::None));
    Sample {
        target: req.target.name.as_str().into(),
        probe,
        timestamp,
        duration,
        success,
        error,
        measurement,
        quality: Default::default(),
    }
}

/// A round of the module kind `kind` as a [`Sample`], timed from its start: `round` is given
/// the target's options of the kind and gives the report, and why the round failed if it did.
pub(crate) async fn module_sample<'a, O, R, F>(
    req: &'a ProbeRequest,
    kind: ModuleId,
    round: impl FnOnce(&'a O) -> F,
) -> Sample
where
    O: std::any::Any,
    R: Report + Default,
    F: Future<Output = (R, Option<ProbeError>)>,
{
    let started = Instant::now();
    let timestamp = SystemTime::now();
    let t = &req.target;
    let (report, error) = match t.module::<O>(kind) {
        Some(o) => round(o).await,
        None => (
            R::default(),
            Some(ProbeError::Protocol(format!(
                "the target has no {} options",
                kind.0
            ))),
        ),
    };
    Sample {
        target: t.name.as_str().into(),
        probe: ProbeKind::Module(kind),
        timestamp,
        duration: started.elapsed(),
        success: error.is_none(),
        error,
        measurement: Measurement::Module(ModuleReport::new(kind, report)),
        quality: Default::default(),
    }
}
