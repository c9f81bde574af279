//! Trace scenarios kept as data: `tests/data/trace-scenarios/*.toml` describe networks (hop by
//! hop, with per-flow and per-packet balancers) and the traces run through them with what each
//! must report. The format is documented in that directory's README.md.

use std::collections::BTreeMap;
use std::path::{Path as FsPath, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Deserialize;

use super::*;

/// A scenario file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioFile {
    #[serde(default)]
    options: OptionsSpec,
    network: BTreeMap<String, NetworkSpec>,
    trace: Vec<TraceSpec>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct OptionsSpec {
    flows: Option<u32>,
    probes_per_hop: Option<u32>,
    discovery: Option<String>,
    timeout_ms: Option<u64>,
    max_hops: Option<u8>,
    probe_budget: Option<u32>,
    probes_per_second: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NetworkSpec {
    hops: Vec<NodeSpec>,
}

/// One hop, or one branch of a balancer: exactly one of the kinds.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeSpec {
    router: Option<String>,
    anonymous: Option<String>,
    silent: Option<bool>,
    unreachable: Option<String>,
    destination: Option<bool>,
    per_flow: Option<Vec<NodeSpec>>,
    per_packet: Option<Vec<NodeSpec>>,
    /// The answer's delay (router, anonymous, destination); 1 ms unless given.
    ms: Option<u64>,
    /// For `unreachable`: the code, "network" unless given.
    code: Option<String>,
    /// For `unreachable`: answered only to probes sent with at least this TTL (Linux's rate
    /// limit letting a few through), and silent to the others.
    from_ttl: Option<u8>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TraceSpec {
    network: String,
    #[serde(default = "one")]
    repeat: u32,
    reached: Option<bool>,
    hop_count: Option<u32>,
    path_changed: Option<bool>,
    paths_known: Option<u32>,
    flows_reached: Option<u32>,
    /// The path hash equals the previous trace's.
    same_path_hash: Option<bool>,
    /// The highest TTL probed.
    top_ttl: Option<u8>,
    /// Probes sent in the trace.
    probes: Option<usize>,
    /// Distinct flow identifiers probed at each TTL, from the first.
    flows_per_ttl: Option<Vec<usize>>,
    /// Probes sent at each TTL, from the first, up to the highest TTL probed.
    probes_per_ttl: Option<Vec<usize>>,
    #[serde(default)]
    hop: BTreeMap<String, HopExpect>,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HopExpect {
    /// Every address that answered at the hop (in any order).
    addresses: Option<Vec<String>>,
    /// "per_flow", "per_packet" or "none".
    balancing: Option<String>,
    /// Address → unreachable code ("network", "host", ...) or "none".
    unreachable: Option<BTreeMap<String, String>>,
    /// Every probe sent at the hop was answered (and placed).
    all_answered: Option<bool>,
}

/// A hop of a loaded network.
#[derive(Debug)]
enum Node {
    Fixed(Hop),
    PerFlow(Vec<Node>),
    PerPacket(Vec<Node>, AtomicUsize),
}

impl Node {
    /// The hop a probe of `flow` meets. A per-flow balancer picks branch `flow % n`, so nested
    /// balancers stay consistent when the inner one's width is a multiple of the outer's.
    fn pick(&self, flow: u16) -> Hop {
        match self {
            Node::Fixed(h) => *h,
            Node::PerFlow(b) => b[usize::from(flow) % b.len()].pick(flow),
            Node::PerPacket(b, turn) => {
                b[turn.fetch_add(1, Ordering::Relaxed) % b.len()].pick(flow)
            }
        }
    }
}

/// A loaded scenario.
struct Scenario {
    file: String,
    options: TraceOptions,
    networks: BTreeMap<String, Arc<Vec<Node>>>,
    traces: Vec<TraceSpec>,
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/trace-scenarios")
}

/// Loads a scenario; errors name the file and the field.
fn load(path: &FsPath) -> Result<Scenario, String> {
    let file = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let text = std::fs::read_to_string(path).map_err(|e| format!("{file}: {e}"))?;
    parse(&file, &text)
}

fn parse(file: &str, text: &str) -> Result<Scenario, String> {
    let spec: ScenarioFile = toml::from_str(text).map_err(|e| format!("{file}: {e}"))?;
    let options = options(&spec.options).map_err(|e| format!("{file}: options.{e}"))?;
    let mut networks = BTreeMap::new();
    for (name, n) in &spec.network {
        if n.hops.is_empty() {
            return Err(format!("{file}: network.{name}.hops: no hops"));
        }
        let hops = n
            .hops
            .iter()
            .enumerate()
            .map(|(i, h)| node(h).map_err(|e| format!("{file}: network.{name}.hops[{i}]{e}")))
            .collect::<Result<Vec<_>, _>>()?;
        networks.insert(name.clone(), Arc::new(hops));
    }
    for (i, t) in spec.trace.iter().enumerate() {
        if !networks.contains_key(&t.network) {
            return Err(format!(
                "{file}: trace[{i}].network: no network named `{}`",
                t.network
            ));
        }
        for (k, h) in &t.hop {
            hop_number(k).map_err(|e| format!("{file}: trace[{i}].hop.{k}: {e}"))?;
            check_expect(h).map_err(|e| format!("{file}: trace[{i}].hop.{k}.{e}"))?;
        }
    }
    Ok(Scenario {
        file: file.to_string(),
        options,
        networks,
        traces: spec.trace,
    })
}

fn options(o: &OptionsSpec) -> Result<TraceOptions, String> {
    let mut out = opts(o.timeout_ms.unwrap_or(100));
    out.discovery = match o.discovery.as_deref() {
        None | Some("flows") => TraceDiscovery::Flows,
        Some("mda") => TraceDiscovery::Mda,
        Some(d) => return Err(format!("discovery: `{d}` is neither \"mda\" nor \"flows\"")),
    };
    out.flows = o.flows.unwrap_or(out.flows);
    out.probes_per_hop = o.probes_per_hop.unwrap_or(out.probes_per_hop);
    out.max_hops = o.max_hops.unwrap_or(out.max_hops);
    out.probe_budget = o.probe_budget.unwrap_or(out.probe_budget);
    out.probes_per_second = o.probes_per_second.unwrap_or(out.probes_per_second);
    Ok(out)
}

fn hop_number(k: &str) -> Result<u8, String> {
    k.parse::<u8>()
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| "hops are numbered from 1".to_string())
}

fn check_expect(h: &HopExpect) -> Result<(), String> {
    for a in h.addresses.iter().flatten() {
        address(a).map_err(|e| format!("addresses: {e}"))?;
    }
    if let Some(b) = &h.balancing
        && !["per_flow", "per_packet", "none"].contains(&b.as_str())
    {
        return Err(format!(
            "balancing: `{b}` is not \"per_flow\", \"per_packet\" or \"none\""
        ));
    }
    for (a, c) in h.unreachable.iter().flatten() {
        address(a).map_err(|e| format!("unreachable: {e}"))?;
        if c != "none" {
            code(c).map_err(|e| format!("unreachable.\"{a}\": {e}"))?;
        }
    }
    Ok(())
}

fn address(a: &str) -> Result<&'static str, String> {
    a.parse::<IpAddr>()
        .map_err(|_| format!("`{a}` is not an IP address"))?;
    // The scripted network's hops hold their addresses for the test's life.
    Ok(Box::leak(a.to_string().into_boxed_str()))
}

fn code(c: &str) -> Result<Unreachable, String> {
    Ok(match c {
        "network" => Unreachable::Network,
        "host" => Unreachable::Host,
        "protocol" => Unreachable::Protocol,
        "prohibited" => Unreachable::Prohibited,
        _ => {
            return Err(format!(
                "`{c}` is not \"network\", \"host\", \"protocol\" or \"prohibited\""
            ));
        }
    })
}

/// One hop; the error starts with the field's path below the hop (`.router: ...`).
fn node(n: &NodeSpec) -> Result<Node, String> {
    let kinds = [
        n.router.is_some(),
        n.anonymous.is_some(),
        n.silent.is_some(),
        n.unreachable.is_some(),
        n.destination.is_some(),
        n.per_flow.is_some(),
        n.per_packet.is_some(),
    ];
    if kinds.iter().filter(|k| **k).count() != 1 {
        return Err(
            ": give exactly one of router, anonymous, silent, unreachable, destination, \
                    per_flow, per_packet"
                .to_string(),
        );
    }
    let ms = n.ms.unwrap_or(1);
    if (n.code.is_some() || n.from_ttl.is_some()) && n.unreachable.is_none() {
        return Err(": code and from_ttl go with unreachable".to_string());
    }
    let branches = |b: &[NodeSpec], field: &str| {
        if b.is_empty() {
            return Err(format!(".{field}: no branches"));
        }
        b.iter()
            .enumerate()
            .map(|(i, x)| node(x).map_err(|e| format!(".{field}[{i}]{e}")))
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(if let Some(a) = &n.router {
        Node::Fixed(Hop::Router(
            address(a).map_err(|e| format!(".router: {e}"))?,
            ms,
        ))
    } else if let Some(a) = &n.anonymous {
        Node::Fixed(Hop::Anonymous(
            address(a).map_err(|e| format!(".anonymous: {e}"))?,
            ms,
        ))
    } else if let Some(a) = &n.unreachable {
        let a = address(a).map_err(|e| format!(".unreachable: {e}"))?;
        let c = code(n.code.as_deref().unwrap_or("network")).map_err(|e| format!(".code: {e}"))?;
        Node::Fixed(match n.from_ttl {
            Some(t) => Hop::Limited(a, c, t),
            None => Hop::Unreachable(a, c),
        })
    } else if let Some(answers) = n.destination {
        Node::Fixed(if answers {
            Hop::Dest(ms)
        } else {
            Hop::DeadDest
        })
    } else if let Some(b) = &n.per_flow {
        Node::PerFlow(branches(b, "per_flow")?)
    } else if let Some(b) = &n.per_packet {
        Node::PerPacket(branches(b, "per_packet")?, AtomicUsize::new(0))
    } else {
        Node::Fixed(Hop::Silent)
    })
}

impl Scenario {
    fn route(&self, network: &str) -> impl Fn(u16) -> Vec<Hop> + Send + Sync + 'static {
        let hops = Arc::clone(&self.networks[network]);
        move |flow| hops.iter().map(|h| h.pick(flow)).collect()
    }

    /// Runs every trace; the error names the file, the trace and what differed.
    async fn run(&self) -> Result<(), String> {
        let first = &self.traces[0].network;
        let net = Net::new(self.route(first));
        let p = probe(&net);
        let mut last_hash = None;
        for (i, t) in self.traces.iter().enumerate() {
            net.reroute(self.route(&t.network));
            for n in 0..t.repeat {
                let r = trace(&p, &net, &self.options).await;
                let sent = net.take_sent();
                check(t, &r, &sent, last_hash).map_err(|e| {
                    format!(
                        "{}: trace[{i}] (network {}, run {n}): {e}\n{r:#?}",
                        self.file, t.network
                    )
                })?;
                last_hash = Some(r.path_hash);
            }
        }
        Ok(())
    }
}

fn differ<T: PartialEq + fmt::Debug>(field: &str, got: T, want: Option<T>) -> Result<(), String> {
    match want {
        Some(w) if w != got => Err(format!("{field}: got {got:?}, want {w:?}")),
        _ => Ok(()),
    }
}

fn check(
    t: &TraceSpec,
    r: &TraceReport,
    sent: &[Outgoing],
    last_hash: Option<u32>,
) -> Result<(), String> {
    differ("reached", r.reached, t.reached)?;
    differ("hop_count", r.hop_count(), t.hop_count)?;
    differ("path_changed", r.path_changed, t.path_changed)?;
    differ("paths_known", r.paths_known, t.paths_known)?;
    differ("flows_reached", r.flows_reached, t.flows_reached)?;
    if t.same_path_hash == Some(true) {
        differ("same_path_hash", Some(r.path_hash), Some(last_hash))?;
    }
    differ(
        "top_ttl",
        sent.iter().map(|s| s.ttl).max(),
        t.top_ttl.map(Some),
    )?;
    differ("probes", sent.len(), t.probes)?;
    if let Some(want) = &t.flows_per_ttl {
        let got = ids_per_ttl(sent);
        differ(
            "flows_per_ttl",
            got.get(..want.len()),
            Some(Some(&want[..])),
        )?;
    }
    if t.probes_per_ttl.is_some() {
        let top = sent.iter().map(|s| s.ttl).max().unwrap_or(0);
        let got: Vec<usize> = (1..=top)
            .map(|ttl| sent.iter().filter(|s| s.ttl == ttl).count())
            .collect();
        differ("probes_per_ttl", got, t.probes_per_ttl.clone())?;
    }
    for (k, h) in &t.hop {
        let n = usize::from(hop_number(k)?);
        let hop = r
            .hops
            .get(n - 1)
            .ok_or_else(|| format!("hop.{k}: the report has {} hops", r.hops.len()))?;
        check_hop(k, hop, h)?;
    }
    Ok(())
}

fn check_hop(k: &str, hop: &HopReport, h: &HopExpect) -> Result<(), String> {
    let mut got: Vec<IpAddr> = hop.responders.iter().map(|x| x.address).collect();
    got.sort_unstable();
    let want = h.addresses.as_ref().map(|w| {
        let mut w: Vec<IpAddr> = w.iter().filter_map(|a| a.parse().ok()).collect();
        w.sort_unstable();
        w
    });
    differ(&format!("hop.{k}.addresses"), got, want)?;
    let balancing = match hop.balancing {
        Some(Balancing::PerFlow) => "per_flow",
        Some(Balancing::PerPacket) => "per_packet",
        None => "none",
    };
    differ(
        &format!("hop.{k}.balancing"),
        balancing,
        h.balancing.as_deref(),
    )?;
    differ(
        &format!("hop.{k}.all_answered"),
        hop.received == hop.sent,
        h.all_answered,
    )?;
    for (a, c) in h.unreachable.iter().flatten() {
        let want = if c == "none" { None } else { Some(code(c)?) };
        let got = hop
            .responders
            .iter()
            .find(|x| x.address.to_string() == *a)
            .ok_or_else(|| format!("hop.{k}.unreachable: {a} did not answer"))?
            .unreachable;
        differ(&format!("hop.{k}.unreachable.\"{a}\""), got, Some(want))?;
    }
    Ok(())
}

fn files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

#[tokio::test(start_paused = true)]
async fn every_scenario_file_holds() {
    let files = files();
    assert!(files.len() >= 10, "{files:?}");
    let mut failed = Vec::new();
    for f in &files {
        match load(f) {
            Ok(s) => {
                if let Err(e) = s.run().await {
                    failed.push(e);
                }
            }
            Err(e) => failed.push(e),
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));
}

#[test]
fn load_errors_name_the_file_and_the_field() {
    let base = "[network.a]\nhops = [{ router = \"10.0.0.1\" }, { destination = true }]\n\
                [[trace]]\nnetwork = \"a\"\n";
    assert!(parse("ok.toml", base).is_ok());
    let cases = [
        (
            base.replace("router = \"10.0.0.1\"", "ruoter = \"10.0.0.1\""),
            "unknown field `ruoter`",
        ),
        (
            base.replace("10.0.0.1", "10.0.0.300"),
            "network.a.hops[0].router: `10.0.0.300` is not an IP address",
        ),
        (
            base.replace("network = \"a\"", "network = \"b\""),
            "trace[0].network: no network named `b`",
        ),
        (
            base.replace(
                "{ router = \"10.0.0.1\" }",
                "{ per_flow = [{ router = \"10.0.0.1\" }, { unreachable = \"10.0.0.2\", code = \"nope\" }] }",
            ),
            "network.a.hops[0].per_flow[1].code: `nope` is not",
        ),
        (
            base.replace("{ destination = true }", "{ destination = true, silent = true }"),
            "network.a.hops[1]: give exactly one of",
        ),
        (
            format!("{base}hop.0.balancing = \"per_flow\"\n"),
            "trace[0].hop.0: hops are numbered from 1",
        ),
        (
            format!("{base}hop.2.balancing = \"flow\"\n"),
            "trace[0].hop.2.balancing: `flow` is not",
        ),
        (
            format!("[options]\ndiscovery = \"all\"\n{base}"),
            "options.discovery: `all` is neither",
        ),
    ];
    for (text, want) in cases {
        let e = parse("bad.toml", &text).err().unwrap_or_default();
        assert!(e.starts_with("bad.toml: "), "{e}");
        assert!(e.contains(want), "{e}\nwant: {want}");
    }
    let e = load(&dir().join("missing.toml")).err().unwrap();
    assert!(e.starts_with("missing.toml: "), "{e}");
}

#[tokio::test(start_paused = true)]
async fn a_scenario_whose_expectation_fails_says_where() {
    let text = "[network.a]\nhops = [{ router = \"10.0.0.1\" }, { destination = true }]\n\
                [[trace]]\nnetwork = \"a\"\nrepeat = 2\nhop_count = 2\n\
                [[trace]]\nnetwork = \"a\"\npath_changed = true\n";
    let e = parse("steady.toml", text).unwrap().run().await.unwrap_err();
    assert!(
        e.starts_with(
            "steady.toml: trace[1] (network a, run 0): path_changed: got false, want true"
        ),
        "{e}"
    );
}
