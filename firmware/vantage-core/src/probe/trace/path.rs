//! Path-change detection that a load balancer flipping between known branches does not fool.
//!
//! Each trace yields one path per flow. A path is *known* while it was seen within the path
//! window, and always while it was seen in the latest trace that had answers (so a window
//! shorter than the interval still compares each trace with the one before). A trace counts as
//! a path change when one of its paths matches no known path; paths dropping out of the window
//! count nothing, so a reroute counts once, not once when the new path appears and again when
//! the old one is forgotten.
//!
//! Paths are compared hop by hop where both have answers: a hop that did not answer in one of
//! them (loss, rate limiting) is a wildcard, so a lost probe is no change. Hops answered by
//! several addresses (per-packet balancing) match when the sets share an address.

use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Known paths kept at most (oldest forgotten first); bounds memory per target.
const MAX_KNOWN: usize = 64;

/// The path one flow took in one trace.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Path {
    pub first_ttl: u8,
    /// Addresses that answered at TTL `first_ttl + i`, sorted; empty where none did.
    pub hops: Vec<Vec<IpAddr>>,
    /// The TTL at which the destination answered.
    pub reached_at: Option<u8>,
}

impl Path {
    fn answered(&self) -> bool {
        self.hops.iter().any(|h| !h.is_empty())
    }

    fn at(&self, ttl: u8) -> &[IpAddr] {
        ttl.checked_sub(self.first_ttl)
            .and_then(|i| self.hops.get(usize::from(i)))
            .map_or(&[], Vec::as_slice)
    }

    /// How many hops agree, or `None` if some hop or the destination's distance disagrees.
    fn agreement(&self, other: &Path) -> Option<usize> {
        if let (Some(a), Some(b)) = (self.reached_at, other.reached_at)
            && a != b
        {
            return None;
        }
        let lo = self.first_ttl.min(other.first_ttl);
        let hi = self.last_ttl().max(other.last_ttl());
        let mut score = 0;
        for ttl in lo..=hi {
            let (a, b) = (self.at(ttl), other.at(ttl));
            if a.is_empty() || b.is_empty() {
                continue;
            }
            if !a.iter().any(|x| b.contains(x)) {
                return None;
            }
            score += 1;
        }
        Some(score)
    }

    fn last_ttl(&self) -> u8 {
        let last = usize::from(self.first_ttl) + self.hops.len().max(1) - 1;
        u8::try_from(last).unwrap_or(u8::MAX)
    }

    /// Whether this path holds everything `other` saw: the same destination distance (if
    /// `other` reached it) and, at every hop `other` has answers, at least those addresses.
    fn subsumes(&self, other: &Path) -> bool {
        if other.reached_at.is_some() && other.reached_at != self.reached_at {
            return false;
        }
        (other.first_ttl..=other.last_ttl()).all(|ttl| {
            let mine = self.at(ttl);
            other.at(ttl).iter().all(|a| mine.contains(a))
        })
    }

    /// Fills holes and adds addresses `other` saw.
    fn merge(&mut self, other: &Path) {
        let lo = self.first_ttl.min(other.first_ttl);
        let hi = self.last_ttl().max(other.last_ttl());
        let mut hops = Vec::with_capacity(usize::from(hi - lo) + 1);
        for ttl in lo..=hi {
            let mut h: Vec<IpAddr> = self.at(ttl).to_vec();
            for a in other.at(ttl) {
                if !h.contains(a) {
                    h.push(*a);
                }
            }
            h.sort();
            hops.push(h);
        }
        self.first_ttl = lo;
        self.hops = hops;
        self.reached_at = self.reached_at.or(other.reached_at);
    }

    /// Forgets the addresses at `ttl` (a per-packet hop): a wildcard from now on.
    fn clear(&mut self, ttl: u8) {
        if let Some(h) = ttl
            .checked_sub(self.first_ttl)
            .and_then(|i| self.hops.get_mut(usize::from(i)))
        {
            h.clear();
        }
    }

    fn hash_into(&self, h: &mut Fnv) {
        for (i, hop) in self.hops.iter().enumerate() {
            h.write(&[self.first_ttl.saturating_add(i as u8)]);
            for a in hop {
                match a {
                    IpAddr::V4(v4) => h.write(&v4.octets()),
                    IpAddr::V6(v6) => h.write(&v6.octets()),
                }
            }
            h.write(&[0xff]);
        }
        h.write(&[0xfe, self.reached_at.unwrap_or(0)]);
    }
}

impl std::fmt::Display for Path {
    /// `1 10.0.0.1, 2 *, 3 10.0.2.1|10.0.2.2` (the traceroute way of writing a path).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, hop) in self.hops.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{} ", self.first_ttl.saturating_add(i as u8))?;
            if hop.is_empty() {
                f.write_str("*")?;
            }
            for (j, a) in hop.iter().enumerate() {
                if j > 0 {
                    f.write_str("|")?;
                }
                write!(f, "{a}")?;
            }
        }
        if self.reached_at.is_none() {
            f.write_str(" (destination not reached)")?;
        }
        Ok(())
    }
}

/// 32-bit FNV-1a: stable across runs, builds and machines, and exact as a float metric value.
struct Fnv(u32);

impl Fnv {
    fn new() -> Self {
        Fnv(0x811c_9dc5)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u32::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0193);
        }
    }
}

#[derive(Debug, Clone)]
struct Known {
    path: Path,
    last_seen: Instant,
    /// The trace (counter) it was last seen in.
    seen_in: u64,
}

/// What one trace did to the known paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Observation {
    /// A path matched none of the known ones (never on the first trace).
    pub changed: bool,
    /// Identifies the known paths this trace followed.
    pub hash: u32,
    /// Paths known now.
    pub known: u32,
    /// The paths that matched none known (empty on the first trace).
    pub new_paths: Vec<Path>,
}

/// The known paths of one target.
#[derive(Debug, Clone, Default)]
pub(crate) struct PathTracker {
    known: Vec<Known>,
    /// Per flow: the known path it followed to the destination last time.
    last_flows: Vec<Option<Path>>,
    /// TTLs where one flow met several addresses (per-packet balancing), and when last seen.
    per_packet: Vec<(u8, Instant)>,
    traces: u64,
    last_answered: u64,
    last_hash: u32,
}

impl PathTracker {
    /// Adds a path unless a known one already holds all of it; returns its index. Paths known
    /// before this trace (`..before`) are left as they are: the rest of the trace is judged
    /// against them.
    fn insert(&mut self, p: Path, now: Instant, before: usize) -> usize {
        if let Some(i) = self.known.iter().position(|k| k.path.subsumes(&p)) {
            return i;
        }
        if let Some(i) = (before..self.known.len()).find(|i| p.subsumes(&self.known[*i].path)) {
            self.known[i].path = p;
            return i;
        }
        self.known.push(Known {
            path: p,
            last_seen: now,
            seen_in: self.traces,
        });
        self.known.len() - 1
    }

    /// Judges one trace whose paths say nothing about which flow took which.
    #[cfg(test)]
    pub fn observe(&mut self, paths: &[Path], now: Instant, window: Duration) -> Observation {
        self.observe_flows(paths, None, now, window)
    }

    /// Judges one trace: `paths[f]` is flow `f`'s path. `facts` is given for Paris flows,
    /// which keep their branch while they keep their identifier and the branches stay.
    pub fn observe_flows(
        &mut self,
        paths: &[Path],
        facts: Option<FlowFacts<'_>>,
        now: Instant,
        window: Duration,
    ) -> Observation {
        let per_flow = facts.is_some();
        let (stopped, moved) = facts.map_or((&[][..], &[][..]), |f| (f.stopped, f.moved));
        let moved = |f: usize| moved.get(f).copied().unwrap_or(false);
        self.traces += 1;
        let stopped = |f: usize| stopped.get(f).copied().unwrap_or(false);
        let any_reached = paths.iter().any(|p| p.reached_at.is_some());
        // A flow that a router stopped while others reached the destination lost its branch:
        // it follows no path (its few answered hops would match any).
        let following: Vec<(usize, Path)> = paths
            .iter()
            .enumerate()
            .filter(|(f, p)| p.answered() && !(any_reached && stopped(*f)))
            .map(|(f, p)| (f, self.without_per_packet(p, now)))
            .collect();
        // A flow on a new identifier may find a branch no flow had hashed onto: found, not
        // new, while the flows that kept theirs show the paths unchanged.
        let kept = following.iter().any(|(f, _)| !moved(*f));
        let found_only: Vec<usize> = following
            .iter()
            .map(|(f, _)| *f)
            .filter(|f| kept && moved(*f))
            .collect();
        if following.is_empty() {
            // Nothing answered: nothing to compare; keep what we know and the last identity.
            return Observation {
                changed: false,
                hash: self.last_hash,
                known: self.known.len() as u32,
                new_paths: Vec::new(),
            };
        }
        let last = self.last_answered;
        self.known
            .retain(|k| k.seen_in == last || now.saturating_duration_since(k.last_seen) <= window);
        self.per_packet
            .retain(|(_, seen)| now.saturating_duration_since(*seen) <= window);
        let m = self.match_paths(&following, &found_only, now);
        for f in (0..paths.len()).filter(|f| moved(*f)) {
            if let Some(l) = self.last_flows.get_mut(f) {
                *l = None;
            }
        }
        let mut left = Vec::new();
        if per_flow {
            left = self.left_branches(paths, &m.by_flow, |f| any_reached && stopped(f));
            // A branch another flow still follows was not lost (flows rehashed over the same
            // branches).
            left.retain(|l| !m.followed.iter().any(|f| f.subsumes(l)));
            self.known
                .retain(|k| !left.iter().any(|l| k.path.subsumes(l)));
        }
        self.last_hash = identity(&m.followed);
        self.last_answered = self.traces;
        if self.known.len() > MAX_KNOWN {
            self.known.sort_by_key(|k| std::cmp::Reverse(k.last_seen));
            self.known.truncate(MAX_KNOWN);
        }
        Observation {
            changed: m.changed || !left.is_empty(),
            hash: self.last_hash,
            known: self.known.len() as u32,
            new_paths: m.new_paths,
        }
    }

    /// Matches each flow's path with the known ones, adding and refining known paths.
    /// Paths of flows in `found_only` that match none known are added without counting.
    fn match_paths(
        &mut self,
        paths: &[(usize, Path)],
        found_only: &[usize],
        now: Instant,
    ) -> Matched {
        let had_known = !self.known.is_empty();
        // Every path of this trace is judged against what was known before it: two ECMP
        // branches that both fill the holes of a partly seen path are both known, not one
        // known and one new.
        let before = self.known.len();
        let mut refined = vec![false; before];
        let mut m = Matched::default();
        for (f, p) in paths {
            let best = self.known[..before]
                .iter()
                .enumerate()
                .filter_map(|(i, k)| k.path.agreement(p).map(|s| (s, i)))
                // Equally good matches (a hole where two known paths differ): the path seen
                // most recently is the likelier one.
                .max_by_key(|(s, i)| (*s, self.known[*i].seen_in, std::cmp::Reverse(*i)));
            let i = match best {
                Some((_, i)) => {
                    let mut merged = self.known[i].path.clone();
                    merged.merge(p);
                    if merged == self.known[i].path {
                        i
                    } else {
                        // The trace saw more than the known path held: the fuller path
                        // replaces it.
                        refined[i] = true;
                        self.insert(merged, now, before)
                    }
                }
                None => {
                    if had_known && !found_only.contains(f) {
                        m.changed = true;
                        if !m.new_paths.contains(p) {
                            m.new_paths.push(p.clone());
                        }
                    }
                    self.insert(p.clone(), now, before)
                }
            };
            self.known[i].last_seen = now;
            self.known[i].seen_in = self.traces;
            if !m.followed.contains(&self.known[i].path) {
                m.followed.push(self.known[i].path.clone());
            }
            if p.reached_at.is_some() {
                m.by_flow.push((*f, p.clone(), self.known[i].path.clone()));
            }
        }
        let mut i = 0;
        self.known.retain(|k| {
            let keep = i >= before || !refined[i] || m.followed.contains(&k.path);
            i += 1;
            keep
        });
        m
    }

    /// The known paths that flows were seen to leave: a flow that reached the destination
    /// before and now took a path that disagrees with it (a next hop removed or added moves
    /// flows), or that a router stopped while others got through (a blackholed branch).
    /// Remembers each flow's path for the next trace.
    fn left_branches(
        &mut self,
        paths: &[Path],
        reached_now: &[(usize, Path, Path)],
        lost: impl Fn(usize) -> bool,
    ) -> Vec<Path> {
        let mut left = Vec::new();
        let mut next = Vec::with_capacity(paths.len());
        for f in 0..paths.len() {
            let prev = self.last_flows.get(f).cloned().flatten();
            let now = reached_now.iter().find(|(g, ..)| *g == f);
            if let Some(k) = &prev
                && (lost(f) || now.is_some_and(|(_, p, _)| k.agreement(p).is_none()))
            {
                left.push(k.clone());
            }
            // A flow neither reaching nor stopped (lost answers) keeps what it followed.
            next.push(match now {
                Some((.., k)) => Some(k.clone()),
                None if lost(f) => None,
                None => prev,
            });
        }
        self.last_flows = next;
        left
    }

    /// Whether one flow met several addresses at `ttl` within the window.
    pub fn is_per_packet(&self, ttl: u8) -> bool {
        self.per_packet.iter().any(|(t, _)| *t == ttl)
    }

    /// `p` without its per-packet hops: one flow answered by several addresses at a TTL (in
    /// this trace or within the window) is per-packet balancing, whose pick says nothing about
    /// the path. New evidence also clears that TTL in the known paths.
    fn without_per_packet(&mut self, p: &Path, now: Instant) -> Path {
        for (i, h) in p.hops.iter().enumerate() {
            let ttl = p.first_ttl.saturating_add(i as u8);
            if h.len() > 1 {
                match self.per_packet.iter_mut().find(|(t, _)| *t == ttl) {
                    Some(e) => e.1 = now,
                    None => {
                        self.per_packet.push((ttl, now));
                        for k in &mut self.known {
                            k.path.clear(ttl);
                        }
                        for k in self.last_flows.iter_mut().flatten() {
                            k.clear(ttl);
                        }
                        // Paths that differed only there are one now.
                        let mut seen: Vec<Path> = Vec::new();
                        self.known.retain(|k| {
                            let dup = seen.contains(&k.path);
                            seen.push(k.path.clone());
                            !dup
                        });
                    }
                }
            }
        }
        let mut p = p.clone();
        for (ttl, _) in &self.per_packet {
            p.clear(*ttl);
        }
        p
    }
}

/// One path holding every address `paths` saw, for probes that each go out on a flow of their
/// own (not Paris): a "flow" of such probes mixes the branches of a balancer hop by hop into a
/// path no packet followed, and each new mix would look like a new path. In the union, a TTL
/// where the trace's probes met several addresses is per-packet balancing to the tracker, as it
/// is to these probes; a reroute still changes every probe's answer there.
pub(crate) fn union(paths: Vec<Path>) -> Vec<Path> {
    paths
        .into_iter()
        .reduce(|mut all, p| {
            all.merge(&p);
            all
        })
        .into_iter()
        .collect()
}

/// What the trace knows about its flows, for Paris flows.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FlowFacts<'a> {
    /// Per flow: a router's "unreachable" ended it short of the destination.
    pub stopped: &'a [bool],
    /// Per flow: it goes out with a new identifier this trace (a new branch, maybe).
    pub moved: &'a [bool],
}

/// What matching one trace's paths found.
#[derive(Debug, Default)]
struct Matched {
    changed: bool,
    new_paths: Vec<Path>,
    /// The known paths this trace followed.
    followed: Vec<Path>,
    /// Each flow that reached the destination: its path and the known path it followed.
    by_flow: Vec<(usize, Path, Path)>,
}

/// The identity of a set of paths, whatever order the flows found them in.
fn identity(paths: &[Path]) -> u32 {
    let mut canon: Vec<u32> = paths
        .iter()
        .map(|p| {
            let mut h = Fnv::new();
            p.hash_into(&mut h);
            h.0
        })
        .collect();
    canon.sort_unstable();
    let mut h = Fnv::new();
    for c in canon {
        h.write(&c.to_be_bytes());
    }
    h.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(hops: &[&str], reached: bool) -> Path {
        Path {
            first_ttl: 1,
            hops: hops
                .iter()
                .map(|h| {
                    if h.is_empty() {
                        vec![]
                    } else {
                        h.split('|').map(|a| a.parse().unwrap()).collect()
                    }
                })
                .collect(),
            reached_at: reached.then_some(hops.len() as u8),
        }
    }

    const W: Duration = Duration::from_secs(600);

    #[test]
    fn the_first_trace_is_no_change_and_equal_paths_hash_equal() {
        let t0 = Instant::now();
        let mut a = PathTracker::default();
        let p = path(&["10.0.0.1", "10.0.1.1", "10.9.9.9"], true);
        let o = a.observe(std::slice::from_ref(&p), t0, W);
        assert!(!o.changed);
        assert_eq!(o.known, 1);
        let mut b = PathTracker::default();
        assert_eq!(b.observe(&[p], t0, W).hash, o.hash);
    }

    #[test]
    fn a_reroute_counts_once() {
        let t0 = Instant::now();
        let mut t = PathTracker::default();
        let old = path(&["10.0.0.1", "10.0.1.1", "10.0.2.1", "10.9.9.9"], true);
        let new = path(&["10.0.0.1", "10.0.1.1", "10.0.3.1", "10.9.9.9"], true);
        let mut changes = 0;
        let mut hashes = Vec::new();
        for i in 0..40u64 {
            let p = if i < 5 { &old } else { &new };
            let o = t.observe(std::slice::from_ref(p), t0 + Duration::from_secs(60 * i), W);
            changes += u32::from(o.changed);
            hashes.push(o.hash);
        }
        assert_eq!(changes, 1);
        // The hash follows the path in use, and moves once.
        assert_eq!(hashes.windows(2).filter(|w| w[0] != w[1]).count(), 1);
        assert_ne!(hashes[0], hashes[39]);
        // The old path was forgotten after the window.
        assert_eq!(
            t.observe(&[new], t0 + Duration::from_secs(3000), W).known,
            1
        );
    }

    #[test]
    fn flapping_between_known_branches_is_no_change() {
        let t0 = Instant::now();
        let mut t = PathTracker::default();
        let a = path(&["10.0.0.1", "10.1.0.1", "10.2.0.1", "10.9.9.9"], true);
        let b = path(&["10.0.0.1", "10.1.0.2", "10.2.0.1", "10.9.9.9"], true);
        // Two flows discover both branches in the first trace.
        assert!(!t.observe(&[a.clone(), b.clone()], t0, W).changed);
        for i in 1..50u64 {
            let p = if i % 3 == 0 { &a } else { &b };
            let o = t.observe(std::slice::from_ref(p), t0 + Duration::from_secs(60 * i), W);
            assert!(!o.changed, "trace {i}");
            assert_eq!(o.known, 2);
        }
        // A third branch is new.
        let c = path(&["10.0.0.1", "10.1.0.3", "10.2.0.1", "10.9.9.9"], true);
        assert!(t.observe(&[c], t0 + Duration::from_secs(3600), W).changed);
    }

    #[test]
    fn lost_probes_and_unreached_traces_are_no_change() {
        let t0 = Instant::now();
        let mut t = PathTracker::default();
        let full = path(&["10.0.0.1", "10.0.1.1", "10.0.2.1", "10.9.9.9"], true);
        let h0 = t.observe(std::slice::from_ref(&full), t0, W).hash;
        let holes = path(&["10.0.0.1", "", "10.0.2.1", "10.9.9.9"], true);
        let cut = path(&["10.0.0.1", "10.0.1.1"], false);
        let nothing = path(&["", "", ""], false);
        for (i, p) in [holes, cut, nothing].iter().enumerate() {
            let o = t.observe(
                std::slice::from_ref(p),
                t0 + Duration::from_secs(60 * (i as u64 + 1)),
                W,
            );
            assert!(!o.changed, "{p:?}");
            assert_eq!(
                o.hash, h0,
                "a path with holes keeps the full path's identity"
            );
        }
    }

    #[test]
    fn a_longer_or_shorter_path_is_a_change() {
        let t0 = Instant::now();
        let mut t = PathTracker::default();
        t.observe(&[path(&["10.0.0.1", "10.9.9.9"], true)], t0, W);
        let longer = path(&["10.0.0.1", "10.0.5.1", "10.9.9.9"], true);
        assert!(
            t.observe(&[longer], t0 + Duration::from_secs(60), W)
                .changed
        );
    }

    #[test]
    fn a_window_shorter_than_the_interval_still_compares_with_the_last_trace() {
        let t0 = Instant::now();
        let mut t = PathTracker::default();
        let a = path(&["10.0.0.1", "10.9.9.9"], true);
        let b = path(&["10.0.0.2", "10.9.9.9"], true);
        let w = Duration::from_secs(1);
        t.observe(std::slice::from_ref(&a), t0, w);
        assert!(
            !t.observe(std::slice::from_ref(&a), t0 + Duration::from_secs(3600), w)
                .changed
        );
        assert!(t.observe(&[b], t0 + Duration::from_secs(7200), w).changed);
    }

    #[test]
    fn branches_that_fill_a_partly_seen_path_are_no_change() {
        let t0 = Instant::now();
        let mut t = PathTracker::default();
        // Neighbour discovery still running: only the first hop answered.
        t.observe(&[path(&["10.0.0.1", "", "", ""], false)], t0, W);
        let a = path(&["10.0.0.1", "10.1.0.1", "10.2.0.1", "10.9.9.9"], true);
        let b = path(&["10.0.0.1", "10.1.0.2", "10.2.0.2", "10.9.9.9"], true);
        let o = t.observe(
            &[a.clone(), b.clone(), a.clone()],
            t0 + Duration::from_secs(1),
            W,
        );
        assert!(!o.changed);
        assert_eq!(o.known, 2, "the partial path gave way to the two full ones");
        for i in 2..10u64 {
            let p = if i % 2 == 0 { &a } else { &b };
            let o = t.observe(std::slice::from_ref(p), t0 + Duration::from_secs(i), W);
            assert!(!o.changed);
            assert_eq!(o.known, 2);
        }
        // The refined knowledge still catches a real change at the hop that was a hole.
        let c = path(&["10.0.0.1", "10.1.0.3", "10.2.0.1", "10.9.9.9"], true);
        assert!(t.observe(&[c], t0 + Duration::from_secs(20), W).changed);
    }

    #[test]
    fn paths_reaching_ttl_255_compare_to_the_end() {
        let t0 = Instant::now();
        let mut hops: Vec<String> = (1..=254)
            .map(|i| format!("10.0.{}.{}", i / 200, i % 200))
            .collect();
        hops.push("10.9.9.9".into());
        let refs: Vec<&str> = hops.iter().map(String::as_str).collect();
        let long = path(&refs, true);
        assert_eq!(long.last_ttl(), 255);
        let mut t = PathTracker::default();
        t.observe(std::slice::from_ref(&long), t0, W);
        let mut other = long.clone();
        other.hops[254] = vec!["10.9.9.8".parse().unwrap()];
        other.reached_at = None;
        assert!(t.observe(&[other], t0 + Duration::from_secs(60), W).changed);
    }

    #[test]
    fn per_packet_balancing_merges_into_one_path() {
        let t0 = Instant::now();
        let mut t = PathTracker::default();
        t.observe(&[path(&["10.0.0.1", "10.1.0.1", "10.9.9.9"], true)], t0, W);
        let both = path(&["10.0.0.1", "10.1.0.1|10.1.0.2", "10.9.9.9"], true);
        let o = t.observe(&[both], t0 + Duration::from_secs(60), W);
        assert!(!o.changed);
        assert_eq!(o.known, 1);
        let other = path(&["10.0.0.1", "10.1.0.2", "10.9.9.9"], true);
        assert!(
            !t.observe(&[other], t0 + Duration::from_secs(120), W)
                .changed
        );
    }
}
