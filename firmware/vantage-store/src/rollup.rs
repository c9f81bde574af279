//! Per-minute aggregates of each series: what range queries read instead of the rounds.
//!
//! A block holds every series' rounds of one commit, so a month of one target in blocks means
//! reading the month of every target. The store therefore folds each committed round into the
//! aggregate of its series and minute ([`Agg`]), and writes a minute's aggregate once, when
//! the minute is [`GRACE_MS`] behind the newest round committed, as one small entry of the
//! engine's meta keyspace (`r`, series id, minute). A month of one target is 43,200 entries of
//! a few dozen bytes. `docs/STORE.md` has the layout and the trade-offs.
//!
//! An aggregate keeps what the charts and tables need: rounds and successes, packets sent and
//! received, the distribution of the round's main time (ping: the round's mean RTT; DNS: the
//! lookup; trace: the last hop's RTT) as count, min, max, sum, sum of squares and a log-scale
//! histogram (buckets 2^(1/8) apart: percentiles within ±4.5 %), the changes of a DNS rcode
//! or a trace path with their times, and per trace hop mtr's figures. Aggregates merge:
//! a wider bucket is the merge of its minutes.

use std::collections::BTreeMap;

use crate::codec::{DecodeError, Reader, StoredSample, put_varint};

/// Width of one aggregate.
pub const MINUTE_MS: i64 = 60_000;
/// A minute's aggregate is written once the newest committed round is this much past its end.
/// A round committed later into a minute already written (a clock set back) is merged into the
/// written aggregate with the next commit.
pub const GRACE_MS: i64 = 3 * MINUTE_MS;
/// Changes kept per aggregate (a value flapping every round keeps its first ones and a count).
const MAX_CHANGES: usize = 16;
/// Histogram buckets per doubling.
const STEPS_PER_DOUBLING: f64 = 8.0;
/// The version aggregates are written in: [`crate::format::AGGREGATE`]'s.
const VERSION: u8 = crate::format::AGGREGATE.writes;

/// The start of the minute holding `ts_ms`.
pub fn minute_of(ts_ms: i64) -> i64 {
    ts_ms.div_euclid(MINUTE_MS) * MINUTE_MS
}

/// Distribution of a time in µs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Dist {
    pub n: u64,
    pub min: u64,
    pub max: u64,
    pub sum: u64,
    pub sumsq: f64,
    /// Log-scale bucket → count.
    pub hist: Hist,
}

/// Log-scale buckets and their counts, by bucket. A sorted vector, not a map: a minute of one
/// series fills a handful of buckets, and the store keeps minutes of every series in memory
/// until they are written (a map's node is several times the size of what it holds).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Hist(Vec<(u16, u32)>);

impl Hist {
    /// Adds `count` to `bucket`.
    pub fn add(&mut self, bucket: u16, count: u32) {
        match self.0.binary_search_by_key(&bucket, |(b, _)| *b) {
            Ok(i) => self.0[i].1 = self.0[i].1.saturating_add(count),
            Err(i) => self.0.insert(i, (bucket, count)),
        }
    }

    /// (bucket, count) in bucket order.
    pub fn iter(&self) -> impl Iterator<Item = (u16, u32)> + '_ {
        self.0.iter().copied()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn bucket_of(us: u64) -> u16 {
    if us == 0 {
        return 0;
    }
    ((us as f64).log2() * STEPS_PER_DOUBLING).floor() as u16 + 1
}

fn bucket_mid(b: u16) -> f64 {
    if b == 0 {
        return 0.0;
    }
    2f64.powf((f64::from(b) - 0.5) / STEPS_PER_DOUBLING)
}

impl Dist {
    pub fn add(&mut self, us: u64) {
        if self.n == 0 || us < self.min {
            self.min = us;
        }
        self.max = self.max.max(us);
        self.n += 1;
        self.sum = self.sum.saturating_add(us);
        self.sumsq += (us as f64) * (us as f64);
        self.hist.add(bucket_of(us), 1);
    }

    pub fn merge(&mut self, o: &Dist) {
        if o.n == 0 {
            return;
        }
        if self.n == 0 || o.min < self.min {
            self.min = o.min;
        }
        self.max = self.max.max(o.max);
        self.n += o.n;
        self.sum = self.sum.saturating_add(o.sum);
        self.sumsq += o.sumsq;
        for (b, c) in o.hist.iter() {
            self.hist.add(b, c);
        }
    }

    pub fn mean(&self) -> Option<f64> {
        (self.n > 0).then(|| self.sum as f64 / self.n as f64)
    }

    /// Population standard deviation.
    pub fn stddev(&self) -> Option<f64> {
        let m = self.mean()?;
        Some((self.sumsq / self.n as f64 - m * m).max(0.0).sqrt())
    }

    /// The `q` quantile (0..=1) in µs, to the histogram's resolution, within [min, max].
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.n == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * (self.n - 1) as f64).round() as u64;
        if rank == 0 {
            return Some(self.min as f64);
        }
        if rank + 1 >= self.n {
            return Some(self.max as f64);
        }
        let mut seen = 0u64;
        for (b, c) in self.hist.iter() {
            seen += u64::from(c);
            if seen > rank {
                return Some(bucket_mid(b).clamp(self.min as f64, self.max as f64));
            }
        }
        Some(self.max as f64)
    }

    fn put(&self, out: &mut Vec<u8>) {
        put_varint(out, self.n);
        if self.n == 0 {
            return;
        }
        put_varint(out, self.min);
        put_varint(out, self.max - self.min);
        put_varint(out, self.sum);
        out.extend_from_slice(&self.sumsq.to_le_bytes());
        put_varint(out, self.hist.len() as u64);
        let mut prev = 0u16;
        for (b, c) in self.hist.iter() {
            put_varint(out, u64::from(b - prev));
            put_varint(out, u64::from(c));
            prev = b;
        }
    }

    fn get(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let mut d = Dist {
            n: r.varint()?,
            ..Dist::default()
        };
        if d.n == 0 {
            return Ok(d);
        }
        d.min = r.varint()?;
        d.max = d.min.saturating_add(r.varint()?);
        d.sum = r.varint()?;
        d.sumsq = f64::from_le_bytes(r.bytes(8)?.try_into().map_err(|_| DecodeError::Truncated)?);
        let mut b = 0u16;
        for _ in 0..r.varint()?.min(4096) {
            b = b.saturating_add(small(r.varint()?)?);
            let c = u32::try_from(r.varint()?).map_err(|_| DecodeError::Truncated)?;
            // Buckets are written in increasing order; a repeated one (damage) counts once.
            if d.hist.0.last().is_some_and(|(last, _)| *last == b) {
                d.hist.0.pop();
            }
            d.hist.0.push((b, c));
        }
        Ok(d)
    }
}

fn small(v: u64) -> Result<u16, DecodeError> {
    u16::try_from(v).map_err(|_| DecodeError::Truncated)
}

/// A value that changes now and then (a DNS rcode, a trace's path hash) and its changes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Marks {
    /// (time of the first round, value) of the aggregate.
    pub first: Option<(i64, u32)>,
    pub last: Option<(i64, u32)>,
    /// (time, value before, value after), the first [`MAX_CHANGES`] within the aggregate.
    pub changes: Vec<(i64, u32, u32)>,
    /// Every change within the aggregate, the ones not listed included.
    pub changed: u32,
}

impl Marks {
    pub fn add(&mut self, ts: i64, v: u32) {
        if let Some((_, prev)) = self.last
            && prev != v
        {
            self.change(ts, prev, v);
        }
        if self.first.is_none() {
            self.first = Some((ts, v));
        }
        self.last = Some((ts, v));
    }

    fn change(&mut self, ts: i64, from: u32, to: u32) {
        self.changed += 1;
        if self.changes.len() < MAX_CHANGES {
            self.changes.push((ts, from, to));
        }
    }

    /// Appends a later aggregate's marks, counting the change between the two.
    pub fn merge(&mut self, o: &Marks) {
        if let (Some((_, a)), Some((ts, b))) = (self.last, o.first)
            && a != b
        {
            self.change(ts, a, b);
        }
        for c in &o.changes {
            if self.changes.len() < MAX_CHANGES {
                self.changes.push(*c);
            }
        }
        self.changed += o.changed;
        self.first = self.first.or(o.first);
        self.last = o.last.or(self.last);
    }

    fn put(&self, out: &mut Vec<u8>, base: i64) {
        let Some(((t0, v0), (t1, v1))) = self.first.zip(self.last) else {
            out.push(0);
            return;
        };
        out.push(1);
        let rel = |t: i64| (t - base).max(0) as u64;
        for (t, v) in [(t0, v0), (t1, v1)] {
            put_varint(out, rel(t));
            put_varint(out, u64::from(v));
        }
        put_varint(out, u64::from(self.changed));
        put_varint(out, self.changes.len() as u64);
        for (t, a, b) in &self.changes {
            put_varint(out, rel(*t));
            put_varint(out, u64::from(*a));
            put_varint(out, u64::from(*b));
        }
    }

    fn get(r: &mut Reader<'_>, base: i64) -> Result<Self, DecodeError> {
        let mut m = Marks::default();
        if r.u8()? == 0 {
            return Ok(m);
        }
        let t = |r: &mut Reader<'_>| -> Result<i64, DecodeError> {
            Ok(base + i64::try_from(r.varint()?).map_err(|_| DecodeError::Truncated)?)
        };
        let v = |r: &mut Reader<'_>| -> Result<u32, DecodeError> {
            u32::try_from(r.varint()?).map_err(|_| DecodeError::Truncated)
        };
        m.first = Some((t(r)?, v(r)?));
        m.last = Some((t(r)?, v(r)?));
        m.changed = v(r)?;
        for _ in 0..r.varint()?.min(MAX_CHANGES as u64) {
            m.changes.push((t(r)?, v(r)?, v(r)?));
        }
        Ok(m)
    }
}

/// One trace hop over an aggregate: mtr's columns.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HopAgg {
    pub ttl: u8,
    pub sent: u64,
    pub received: u64,
    /// The hop's mean RTT per round, µs.
    pub rtt: Dist,
    /// (time, RTT µs) of the latest round in which the hop answered.
    pub last: Option<(i64, u64)>,
}

/// Everything kept of one series over one minute (or, merged, over a wider bucket).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Agg {
    pub rounds: u32,
    pub successes: u32,
    /// Ping: packets sent and received.
    pub sent: u64,
    pub received: u64,
    /// The round's main time (ping: mean RTT; DNS: lookup; trace: the last hop's RTT), µs.
    pub time: Dist,
    /// DNS: the rcode (65535 for a round without an answer); trace: the path hash; a
    /// module's: its [`Rollup::mark`](vantage_core::Rollup).
    pub marks: Marks,
    /// Trace hops by TTL.
    pub hops: Vec<HopAgg>,
    /// Rounds flagged for the device's own delays (late, CPU or memory load): their times may
    /// include the device's, not only the network's.
    pub flagged: u32,
    /// Per phase of the kind ([`ProbeModule::phases`](vantage_core::ProbeModule), in its
    /// order): the rounds that had it and their sum, µs. Empty for a kind without phases.
    pub phases: Vec<PhaseSum>,
}

/// One phase over an aggregate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PhaseSum {
    pub n: u32,
    pub sum_us: u64,
}

impl PhaseSum {
    /// The phase's mean, µs, over the rounds that had it.
    pub fn mean_us(&self) -> Option<f64> {
        (self.n > 0).then(|| self.sum_us as f64 / f64::from(self.n))
    }
}

/// Adds `o` to `into` phase by phase (a vector that is shorter grows).
fn merge_phases(into: &mut Vec<PhaseSum>, o: &[PhaseSum]) {
    if into.len() < o.len() {
        into.resize(o.len(), PhaseSum::default());
    }
    for (a, b) in into.iter_mut().zip(o) {
        a.n = a.n.saturating_add(b.n);
        a.sum_us = a.sum_us.saturating_add(b.sum_us);
    }
}

/// The value a DNS round without an answer has in [`Agg::marks`].
pub use vantage_core::dns_series::NO_RCODE;

impl Agg {
    /// Folds one round in (rounds of one series, in time order).
    pub fn add(&mut self, s: &StoredSample) {
        self.rounds += 1;
        self.successes += u32::from(s.success);
        self.flagged += u32::from(!s.quality.is_empty());
        if let Some(p) = &s.ping {
            self.sent += u64::from(p.sent);
            self.received += u64::from(p.received);
            if let Some(us) = p.time_us() {
                self.time.add(us);
            }
        }
        if let Some(m) = &s.module
            && let Some(module) = m.module()
        {
            let r = module.rollup(&m.bytes);
            if let Some(us) = r.time_us {
                self.time.add(us);
            }
            if let Some(mark) = r.mark {
                self.marks.add(s.timestamp_ms, mark);
            }
            let names = module.phases().len().min(r.phases_us.len());
            if names > 0 {
                let mut round = vec![PhaseSum::default(); names];
                for (p, us) in round.iter_mut().zip(r.phases_us) {
                    if let Some(us) = us {
                        *p = PhaseSum { n: 1, sum_us: us };
                    }
                }
                merge_phases(&mut self.phases, &round);
            }
        }
        if let Some(t) = &s.trace {
            if let Some(us) = t.time_us() {
                self.time.add(us);
            }
            self.marks.add(s.timestamp_ms, t.path_hash);
            for h in &t.hops {
                let i = match self.hops.binary_search_by_key(&h.ttl, |x| x.ttl) {
                    Ok(i) => i,
                    Err(i) => {
                        self.hops.insert(
                            i,
                            HopAgg {
                                ttl: h.ttl,
                                ..HopAgg::default()
                            },
                        );
                        i
                    }
                };
                let a = &mut self.hops[i];
                a.sent += u64::from(h.sent);
                a.received += u64::from(h.received);
                if let Some(us) = h.rtt_avg_us {
                    a.rtt.add(us);
                    a.last = Some((s.timestamp_ms, us));
                }
            }
        }
    }

    /// Merges a later aggregate of the same series.
    pub fn merge(&mut self, o: &Agg) {
        self.rounds += o.rounds;
        self.successes += o.successes;
        self.flagged = self.flagged.saturating_add(o.flagged);
        self.sent += o.sent;
        self.received += o.received;
        self.time.merge(&o.time);
        self.marks.merge(&o.marks);
        merge_phases(&mut self.phases, &o.phases);
        for h in &o.hops {
            match self.hops.binary_search_by_key(&h.ttl, |x| x.ttl) {
                Ok(i) => {
                    let a = &mut self.hops[i];
                    a.sent += h.sent;
                    a.received += h.received;
                    a.rtt.merge(&h.rtt);
                    a.last = h.last.or(a.last);
                }
                Err(i) => self.hops.insert(i, h.clone()),
            }
        }
    }

    /// The encoded aggregate of the minute starting at `base` (ms).
    pub fn encode(&self, base: i64) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(base, &mut out);
        out
    }

    /// [`Agg::encode`] into `out` (cleared first), to reuse one buffer.
    pub fn encode_into(&self, base: i64, out: &mut Vec<u8>) {
        out.clear();
        out.push(VERSION);
        put_varint(out, u64::from(self.rounds));
        put_varint(out, u64::from(self.successes));
        put_varint(out, self.sent);
        put_varint(out, self.received);
        self.time.put(out);
        self.marks.put(out, base);
        put_varint(out, self.hops.len() as u64);
        for h in &self.hops {
            out.push(h.ttl);
            put_varint(out, h.sent);
            put_varint(out, h.received);
            h.rtt.put(out);
            if let Some((t, us)) = h.last {
                out.push(1);
                put_varint(out, (t - base).max(0) as u64);
                put_varint(out, us);
            } else {
                out.push(0);
            }
        }
        // Last, so that aggregates written before it read as having no flagged rounds.
        put_varint(out, u64::from(self.flagged));
        // After it, only for kinds with phases: older aggregates, and every ping minute, end
        // before and read as having none.
        if !self.phases.is_empty() {
            put_varint(out, self.phases.len() as u64);
            for p in &self.phases {
                put_varint(out, u64::from(p.n));
                put_varint(out, p.sum_us);
            }
        }
    }

    pub fn decode(b: &[u8], base: i64) -> Result<Self, DecodeError> {
        let mut r = Reader::new(b);
        let version = r.u8()?;
        if !crate::format::AGGREGATE.reads(version) {
            return Err(DecodeError::Version(version));
        }
        let u32v = |r: &mut Reader<'_>| -> Result<u32, DecodeError> {
            u32::try_from(r.varint()?).map_err(|_| DecodeError::Truncated)
        };
        let mut a = Agg {
            rounds: u32v(&mut r)?,
            successes: u32v(&mut r)?,
            sent: r.varint()?,
            received: r.varint()?,
            time: Dist::get(&mut r)?,
            marks: Marks::get(&mut r, base)?,
            hops: Vec::new(),
            flagged: 0,
            phases: Vec::new(),
        };
        for _ in 0..r.varint()?.min(256) {
            let mut h = HopAgg {
                ttl: r.u8()?,
                sent: r.varint()?,
                received: r.varint()?,
                rtt: Dist::get(&mut r)?,
                last: None,
            };
            if r.u8()? == 1 {
                let t = base + i64::try_from(r.varint()?).map_err(|_| DecodeError::Truncated)?;
                h.last = Some((t, r.varint()?));
            }
            a.hops.push(h);
        }
        if !r.is_empty() {
            a.flagged = u32v(&mut r)?;
        }
        if !r.is_empty() {
            for _ in 0..r.varint()?.min(vantage_core::MAX_PHASES as u64) {
                a.phases.push(PhaseSum {
                    n: u32v(&mut r)?,
                    sum_us: r.varint()?,
                });
            }
        }
        Ok(a)
    }
}

/// Meta key of the minute from which aggregates exist (rounds before it are read from blocks).
pub const META_START: &[u8] = b"a";
/// Meta key of the minute below which every aggregate is written.
pub const META_WRITTEN: &[u8] = b"w";
/// Aggregates of minutes no longer in the blocks are deleted in steps of at least this much.
const CLEANUP_STEP_MS: i64 = 60 * MINUTE_MS;

/// The aggregates being built: the store's in-memory side of the table.
#[derive(Debug, Default)]
pub(crate) struct Open {
    /// Rounds before this (a minute start, ms) have no aggregates: read from the blocks.
    pub start: i64,
    pub start_dirty: bool,
    /// Every minute before this is written (or had no rounds); later rounds of them are not
    /// folded.
    pub written_below: i64,
    /// The newest round folded.
    pub newest: i64,
    /// (series, minute) → aggregate, minutes not yet written. Kept encoded: 10,000 targets
    /// have 50,000 of them in memory (the grace time and the open minute), and the encoded
    /// form of a ping minute is a few dozen bytes where an [`Agg`] takes about 180 and its
    /// histogram's own allocation.
    pub aggs: BTreeMap<(u32, i64), Packed>,
    /// Rounds of minutes already written, to merge into the written aggregates.
    pub late: BTreeMap<(u32, i64), Agg>,
    /// A commit is writing late rounds: they are neither here nor readable in the table until
    /// it is done, so a query waits for it.
    pub late_in_flight: bool,
    /// Keys of aggregates below this were deleted.
    pub cleaned_below: i64,
    /// Keys to delete with the next commit.
    pub removals: Vec<Vec<u8>>,
    /// The buffer aggregates are encoded in before they are packed.
    pub scratch: Vec<u8>,
}

/// An aggregate of one series' minute, encoded as [`Agg::encode`] writes it for the minute
/// (exactly what the commit writes). Empty: no rounds yet.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Packed(Box<[u8]>);

impl Packed {
    /// The aggregate of the minute starting at `minute`.
    pub fn get(&self, minute: i64) -> Agg {
        #[cfg(test)]
        tests::UNPACKS.with(|n| n.set(n.get() + 1));
        if self.0.is_empty() {
            return Agg::default();
        }
        // Encoded here from an `Agg`, so it decodes (the round trip is exact: see the tests).
        Agg::decode(&self.0, minute).unwrap_or_default()
    }

    /// Packs `a`, the aggregate of the minute starting at `minute`, encoded in `scratch`.
    pub fn set(&mut self, a: &Agg, minute: i64, scratch: &mut Vec<u8>) {
        a.encode_into(minute, scratch);
        self.0 = scratch.as_slice().into();
    }
}

/// What a commit writes of the aggregates; handed back to [`Open::written`] when it succeeded.
#[derive(Debug, Default)]
pub(crate) struct Due {
    pub keys: Vec<(u32, i64)>,
    pub meta: Vec<(Vec<u8>, Vec<u8>)>,
    pub written_below: i64,
    pub removals: Vec<Vec<u8>>,
    /// Late rounds' aggregates, to merge with the written ones before the commit.
    pub late: Vec<((u32, i64), Agg)>,
}

impl Open {
    /// Folds committed rounds in. With `late`, rounds of written minutes are kept to merge
    /// into them; without (rebuilding after a start, when they may be merged already), skipped.
    pub fn fold<'a>(&mut self, samples: impl IntoIterator<Item = &'a StoredSample>, late: bool) {
        let mut open = Vec::new();
        for s in samples {
            if s.timestamp_ms < self.start {
                continue;
            }
            let key = (s.series, minute_of(s.timestamp_ms));
            if s.timestamp_ms < self.written_below {
                if late {
                    self.late.entry(key).or_default().add(s);
                }
                continue;
            }
            self.newest = self.newest.max(s.timestamp_ms);
            open.push((key, s));
        }
        // Unpacking and packing cost the aggregate's size: once per minute of a series in the
        // batch, not once per round (a store reopened after a burst refolds thousands of
        // rounds of one minute). The sort is stable: rounds of a minute keep their order.
        open.sort_by_key(|(key, _)| *key);
        for run in open.chunk_by(|a, b| a.0 == b.0) {
            let key = run[0].0;
            let packed = self.aggs.entry(key).or_default();
            let mut a = packed.get(key.1);
            for (_, s) in run {
                a.add(s);
            }
            packed.set(&a, key.1, &mut self.scratch);
        }
    }

    /// The aggregates due for writing: minutes [`GRACE_MS`] behind the newest round.
    pub fn due(&mut self) -> Due {
        let below =
            (minute_of(self.newest - GRACE_MS - MINUTE_MS) + MINUTE_MS).max(self.written_below);
        self.late_in_flight = !self.late.is_empty();
        let mut d = Due {
            written_below: below,
            removals: std::mem::take(&mut self.removals),
            late: std::mem::take(&mut self.late).into_iter().collect(),
            ..Due::default()
        };
        for ((series, minute), a) in &self.aggs {
            if *minute < below {
                d.keys.push((*series, *minute));
                d.meta.push((key(*series, *minute), a.0.to_vec()));
            }
        }
        if below > self.written_below {
            d.meta
                .push((META_WRITTEN.to_vec(), below.to_le_bytes().to_vec()));
        }
        if self.start_dirty {
            d.meta
                .push((META_START.to_vec(), self.start.to_le_bytes().to_vec()));
        }
        d
    }

    /// The commit holding `d` is durable.
    pub fn written(&mut self, d: &Due) {
        for k in &d.keys {
            self.aggs.remove(k);
        }
        self.written_below = d.written_below;
        self.start_dirty = false;
        self.late_in_flight = false;
    }

    /// The commit holding `d` failed: its deletions and late rounds wait for the next one.
    pub fn failed(&mut self, d: Due) {
        self.late_in_flight = false;
        self.removals.extend(d.removals);
        for (k, a) in d.late {
            self.late.entry(k).or_default().merge(&a);
        }
    }

    /// Aggregates in memory of `ids` from minute `from` to `to` (ms): not yet written, and late.
    pub fn in_memory(&self, ids: &[u32], from: i64, to: i64) -> Vec<(i64, Agg)> {
        let wanted = |(s, m): &(u32, i64)| ids.contains(s) && *m >= minute_of(from) && *m <= to;
        let open = self
            .aggs
            .iter()
            .filter(|(k, _)| wanted(k))
            .map(|((_, m), a)| (*m, a.get(*m)));
        let late = self
            .late
            .iter()
            .filter(|(k, _)| wanted(k))
            .map(|((_, m), a)| (*m, a.clone()));
        open.chain(late).collect()
    }

    /// Whether the aggregates below `oldest_ms` (the oldest round still stored) should go now.
    pub fn cleanup_due(&self, oldest_ms: i64) -> Option<i64> {
        let cutoff = minute_of(oldest_ms);
        (cutoff >= self.cleaned_below + CLEANUP_STEP_MS).then_some(cutoff)
    }
}

/// Meta key of a series' minute: `r`, series id, minute (big-endian, so keys sort by time).
pub fn key(series: u32, minute_ms: i64) -> Vec<u8> {
    let mut k = Vec::with_capacity(13);
    k.push(b'r');
    k.extend_from_slice(&series.to_be_bytes());
    k.extend_from_slice(&(minute_ms.max(0) as u64).to_be_bytes());
    k
}

/// The minute of a key made by [`key`].
pub fn key_minute(k: &[u8]) -> Option<i64> {
    let b: [u8; 8] = k.get(5..13)?.try_into().ok()?;
    i64::try_from(u64::from_be_bytes(b)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{ErrorKind, StoredDns, StoredHop, StoredModule, StoredPing, StoredTrace};
    use std::time::{Duration, UNIX_EPOCH};
    use vantage_core::{Measurement, ProbeKind, RoundQuality, Sample};

    fn ping(ts: i64, rtt: Option<u64>) -> StoredSample {
        StoredSample {
            series: 0,
            timestamp_ms: ts,
            success: rtt.is_some(),
            error: ErrorKind::None,
            duration_us: 1000,
            ping: Some(StoredPing {
                sent: 1,
                received: u32::from(rtt.is_some()),
                rtt_us: rtt.map(|r| (r, r, r)),
                ..StoredPing::default()
            }),
            trace: None,
            module: None,
            quality: RoundQuality::empty(),
        }
    }

    #[test]
    fn histogram_buckets_stay_in_order_and_merge_by_bucket() {
        let mut a = Dist::default();
        for us in [900, 10, 50_000, 10, 900, 1] {
            a.add(us);
        }
        let buckets: Vec<u16> = a.hist.iter().map(|(b, _)| b).collect();
        assert!(buckets.windows(2).all(|w| w[0] < w[1]), "{buckets:?}");
        assert_eq!(a.hist.len(), 4);
        assert_eq!(a.hist.iter().map(|(_, c)| c).sum::<u32>(), 6);
        let mut b = Dist::default();
        b.add(10);
        b.add(7_000_000);
        a.merge(&b);
        assert_eq!(a.hist.len(), 5);
        assert_eq!(
            a.hist.iter().find(|(k, _)| *k == bucket_of(10)).unwrap().1,
            3
        );
        let mut out = Vec::new();
        a.put(&mut out);
        assert_eq!(Dist::get(&mut Reader::new(&out)).unwrap(), a);
    }

    #[test]
    fn quantiles_are_within_the_histogram_resolution() {
        let mut d = Dist::default();
        for us in 1..=1000u64 {
            d.add(us * 100);
        }
        for (q, want) in [(0.1, 10_000.0), (0.5, 50_000.0), (0.9, 90_000.0)] {
            let got = d.quantile(q).unwrap();
            assert!(
                (got - want).abs() / want < 0.05,
                "q{q}: {got} against {want}"
            );
        }
        assert_eq!(d.quantile(0.0), Some(100.0));
        assert_eq!(d.quantile(1.0), Some(100_000.0));
        let m = d.mean().unwrap();
        assert!((m - 50_050.0).abs() < 1e-6);
        assert!((d.stddev().unwrap() - 28_867.5).abs() < 1.0);
    }

    #[test]
    fn merged_minutes_equal_one_aggregate_of_all_rounds() {
        let rounds: Vec<StoredSample> = (0..600)
            .map(|i| {
                ping(
                    i * 1000,
                    (i % 7 != 0).then_some(1000 + (i as u64 * 37) % 5000),
                )
            })
            .collect();
        let mut whole = Agg::default();
        let mut merged = Agg::default();
        for chunk in rounds.chunk_by(|a, b| minute_of(a.timestamp_ms) == minute_of(b.timestamp_ms))
        {
            let mut m = Agg::default();
            for s in chunk {
                m.add(s);
                whole.add(s);
            }
            let base = minute_of(chunk[0].timestamp_ms);
            let back = Agg::decode(&m.encode(base), base).unwrap();
            assert_eq!(back, m);
            merged.merge(&back);
        }
        assert_eq!(merged, whole);
        assert_eq!(merged.rounds, 600);
        assert_eq!(merged.sent - merged.received, 86);
    }

    #[test]
    fn changes_across_minutes_are_found_with_their_times() {
        let dns = |ts: i64, rcode: Option<u16>| StoredSample {
            module: Some(Box::new(StoredModule::dns(&StoredDns {
                rcode,
                lookup_us: rcode.map(|_| 2000),
                ..StoredDns::default()
            }))),
            ping: None,
            ..ping(ts, None)
        };
        let mut a = Agg::default();
        a.add(&dns(1_000, Some(0)));
        a.add(&dns(2_000, Some(0)));
        let mut b = Agg::default();
        b.add(&dns(61_000, Some(3)));
        b.add(&dns(62_000, None));
        let b = Agg::decode(&b.encode(60_000), 60_000).unwrap();
        a.merge(&b);
        assert_eq!(a.marks.changes, vec![(61_000, 0, 3), (62_000, 3, NO_RCODE)]);
        assert_eq!(a.marks.changed, 2);
        assert_eq!(a.time.n, 3);
    }

    /// DNS, TCP and HTTP rounds of one minute each, with phases: the rounds of
    /// `tests/data/aggregates-before-phases.txt` (aggregates written before they kept phases).
    fn minutes_with_phases() -> Vec<(&'static str, i64, Vec<Sample>)> {
        use serde_json::json;
        let ms = |v: u64| json!({"secs": 0, "nanos": v * 1_000_000});
        let round = |kind: &str, at_ms: i64, report: serde_json::Value| {
            let kind: ProbeKind = kind.parse().unwrap();
            Sample {
                target: "t".into(),
                probe: kind,
                timestamp: UNIX_EPOCH + Duration::from_millis(u64::try_from(at_ms).unwrap()),
                duration: Duration::from_millis(30),
                success: true,
                error: None,
                measurement: Measurement::Module(
                    kind.module().unwrap().report_from_json(report).unwrap(),
                ),
                quality: RoundQuality::empty(),
            }
        };
        let base = 1_700_000_040_000;
        let dns = |at, resolve: Option<u64>, request| {
            let phases = json!({"resolve": resolve.map(ms), "request": ms(request)});
            let lookup = ms(request + resolve.unwrap_or(0));
            round(
                "dns",
                at,
                json!({"rcode": "NOERROR", "lookup": lookup, "phases": phases}),
            )
        };
        let tcp = |at, connect, tls| {
            let r = json!({"port": 443, "sent": 1, "connected": 1, "connect_times": [ms(connect)],
                "tls_handshake": ms(tls)});
            round("tcp", at, r)
        };
        let http = |at, status, k: u64| {
            let phases: Vec<_> = (1..=5).map(|i| ms(i * k)).collect();
            round("http", at, json!({"status": status, "phases": phases}))
        };
        vec![
            (
                "dns",
                base,
                vec![dns(base + 1_000, Some(3), 20), dns(base + 2_000, None, 22)],
            ),
            (
                "tcp",
                base,
                vec![tcp(base + 1_000, 2, 5), tcp(base + 3_000, 4, 7)],
            ),
            (
                "http",
                base,
                vec![http(base + 1_000, 200, 1), http(base + 5_000, 503, 2)],
            ),
        ]
    }

    /// Aggregates written before they kept phases (the minutes of [`minutes_with_phases`], as
    /// the encoder of that time wrote them) still decode, with no phases; the same rounds
    /// aggregated now differ only by the phase sums at the end, and a bucket merging an old
    /// minute with a new one has the new one's phases.
    #[test]
    fn aggregates_written_before_phases_still_decode() {
        let text = include_str!("../tests/data/aggregates-before-phases.txt");
        let minutes = minutes_with_phases();
        assert_eq!(text.lines().count(), minutes.len());
        for (line, (kind, base, rounds)) in text.lines().zip(minutes) {
            let mut f = line.split(' ');
            assert_eq!(f.next(), Some(kind));
            assert_eq!(f.next().and_then(|b| b.parse().ok()), Some(base));
            let hex = f.next().unwrap();
            let bytes: Vec<u8> = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect();
            let old = Agg::decode(&bytes, base).unwrap();
            assert!(old.phases.is_empty(), "{kind}: {old:?}");
            let mut now = Agg::default();
            for r in &rounds {
                now.add(&StoredSample::from_sample(r, 0));
            }
            let names = kind
                .parse::<ProbeKind>()
                .unwrap()
                .module()
                .unwrap()
                .phases();
            assert_eq!(now.phases.len(), names.len(), "{kind}");
            let mut without = now.clone();
            without.phases.clear();
            assert_eq!(old, without, "{kind}");
            assert_eq!(without.encode(base), bytes, "{kind}");
            let mut merged = old.clone();
            merged.merge(&now);
            assert_eq!((merged.rounds, &merged.phases), (4, &now.phases), "{kind}");
        }
    }

    /// Each phase's rounds and sum survive the encoding and merge across minutes, so a month's
    /// bucket has the same means as its rounds; a ping minute ends as before, without phases.
    #[test]
    fn phases_are_summed_per_phase_and_merge_across_minutes() {
        let dns = |ts: i64, resolve_us: Option<u64>, request_us: u64| StoredSample {
            module: Some(Box::new(StoredModule::dns(&StoredDns {
                rcode: Some(0),
                lookup_us: Some(request_us + resolve_us.unwrap_or(0)),
                resolve_us,
                request_us: Some(request_us),
                ..StoredDns::default()
            }))),
            ping: None,
            ..ping(ts, None)
        };
        let mut a = Agg::default();
        a.add(&dns(1_000, Some(3_000), 20_000));
        a.add(&dns(2_000, None, 22_000));
        let mut b = Agg::default();
        b.add(&dns(61_000, Some(5_000), 30_000));
        let b = Agg::decode(&b.encode(60_000), 60_000).unwrap();
        assert_eq!(b.phases.len(), 4, "{:?}", b.phases);
        a.merge(&b);
        let a = Agg::decode(&a.encode(0), 0).unwrap();
        let means: Vec<Option<f64>> = a.phases.iter().map(PhaseSum::mean_us).collect();
        assert_eq!(means, [Some(4_000.0), None, None, Some(24_000.0)]);
        assert_eq!((a.phases[0].n, a.phases[3].n), (2, 3));
        let mut p = Agg::default();
        p.add(&ping(0, Some(1_000)));
        let bytes = p.encode(0);
        assert!(p.phases.is_empty());
        // The flagged count (0) is still the last byte of a ping minute.
        assert_eq!(bytes.last(), Some(&0), "{bytes:?}");
        assert_eq!(Agg::decode(&bytes, 0).unwrap(), p);
    }

    #[test]
    fn trace_hops_keep_mtr_figures() {
        let trace = |ts: i64, hash: u32, rtt2: Option<u64>| StoredSample {
            trace: Some(Box::new(StoredTrace {
                reached: true,
                hops: vec![
                    StoredHop {
                        ttl: 1,
                        sent: 3,
                        received: 3,
                        rtt_avg_us: Some(500),
                    },
                    StoredHop {
                        ttl: 2,
                        sent: 3,
                        received: u32::from(rtt2.is_some()) * 3,
                        rtt_avg_us: rtt2,
                    },
                ],
                last_rtt_us: rtt2.map(|r| (r, r, r)),
                path_hash: hash,
                ..StoredTrace::default()
            })),
            ping: None,
            ..ping(ts, None)
        };
        let mut a = Agg::default();
        a.add(&trace(0, 7, Some(3000)));
        a.add(&trace(10_000, 7, None));
        a.add(&trace(20_000, 9, Some(5000)));
        let a = Agg::decode(&a.encode(0), 0).unwrap();
        assert_eq!(a.hops.len(), 2);
        let h2 = &a.hops[1];
        assert_eq!((h2.ttl, h2.sent, h2.received), (2, 9, 6));
        assert_eq!((h2.rtt.min, h2.rtt.max), (3000, 5000));
        assert_eq!(h2.last, Some((20_000, 5000)));
        assert_eq!(a.marks.changes, vec![(20_000, 7, 9)]);
    }

    /// `open`'s aggregates in memory of each of `series` are those of `plain`.
    fn assert_same_as_plain(
        open: &Open,
        plain: &BTreeMap<(u32, i64), Agg>,
        series: impl IntoIterator<Item = u32>,
    ) {
        for series in series {
            let got = open.in_memory(&[series], 0, i64::MAX);
            let want: Vec<(i64, Agg)> = plain
                .iter()
                .filter(|((s, _), _)| *s == series)
                .map(|((_, m), a)| (*m, a.clone()))
                .collect();
            assert_eq!(got, want, "series {series}");
        }
    }

    /// Pending minutes are kept packed: folding rounds through [`Open`] gives the aggregates,
    /// and the bytes a commit writes, that folding them into plain [`Agg`]s gives.
    #[test]
    fn packed_pending_minutes_equal_plain_aggregates() {
        let dns = |ts: i64, rcode: Option<u16>| StoredSample {
            series: 1,
            module: Some(Box::new(StoredModule::dns(&StoredDns {
                rcode,
                lookup_us: rcode.map(|r| 2000 + u64::from(r) * 977),
                ..StoredDns::default()
            }))),
            ping: None,
            ..ping(ts, None)
        };
        let mut rounds = Vec::new();
        for i in 0..300i64 {
            let rtt = (i % 5 != 0).then_some(800 + (i as u64 * 7919) % 90_000);
            rounds.push(ping(i * 1000 + 7, rtt));
            rounds.push(dns(i * 1000 + 11, (i % 13 != 0).then_some((i % 3) as u16)));
        }
        let mut open = Open::default();
        let mut plain: BTreeMap<(u32, i64), Agg> = BTreeMap::new();
        for chunk in rounds.chunks(37) {
            open.fold(chunk, true);
            for s in chunk {
                plain
                    .entry((s.series, minute_of(s.timestamp_ms)))
                    .or_default()
                    .add(s);
            }
        }
        assert_eq!(open.aggs.len(), plain.len());
        assert_same_as_plain(&open, &plain, [0, 1]);
        let dns_minute = &plain[&(1, 0)];
        assert!(dns_minute.marks.changed > 0 && dns_minute.time.hist.len() > 1);
        // Minutes 0 and 1 are due once a round is three minutes past minute 1's end.
        open.fold(&[ping(5 * MINUTE_MS + 1, Some(900))], true);
        let due = open.due();
        assert_eq!(
            due.keys,
            vec![(0, 0), (0, MINUTE_MS), (1, 0), (1, MINUTE_MS)]
        );
        for (k, (key_bytes, bytes)) in due.keys.iter().zip(&due.meta) {
            assert_eq!(key_bytes, &key(k.0, k.1));
            assert_eq!(bytes, &plain[k].encode(k.1), "{k:?}");
        }
        open.written(&due);
        assert_eq!(open.aggs.len(), plain.len() - 4 + 1);
    }

    thread_local! {
        /// Aggregates unpacked on this thread ([`Packed::get`]).
        pub(super) static UNPACKS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    /// A batch unpacks each minute of a series once, however many of its rounds it holds:
    /// a store reopened after a burst refolds thousands of rounds of one minute, and an
    /// aggregate's size grows with its rounds.
    #[test]
    fn a_batch_unpacks_each_pending_minute_once() {
        let mut rounds = Vec::new();
        for i in 0..3000i64 {
            let mut s = ping(i * 20, Some(500 + (i as u64 * 7919) % 90_000));
            s.series = (i % 3) as u32;
            rounds.push(s);
        }
        let mut open = Open::default();
        let mut plain: BTreeMap<(u32, i64), Agg> = BTreeMap::new();
        for s in &rounds {
            plain
                .entry((s.series, minute_of(s.timestamp_ms)))
                .or_default()
                .add(s);
        }
        UNPACKS.with(|n| n.set(0));
        open.fold(&rounds, true);
        // 60 s of rounds: 3 series × 1 minute, plus nothing else.
        assert_eq!(UNPACKS.with(std::cell::Cell::get), plain.len());
        assert_eq!(plain.len(), 3);
        assert_same_as_plain(&open, &plain, 0..3);
    }

    #[test]
    fn flagged_rounds_are_counted_and_older_aggregates_read_as_none() {
        let mut a = Agg::default();
        a.add(&ping(1_000, Some(1000)));
        a.add(&StoredSample {
            quality: RoundQuality::CPU,
            ..ping(2_000, Some(9000))
        });
        a.add(&StoredSample {
            quality: RoundQuality::LATE | RoundQuality::MEMORY,
            ..ping(3_000, None)
        });
        assert_eq!(a.flagged, 2);
        let bytes = a.encode(0);
        let back = Agg::decode(&bytes, 0).unwrap();
        assert_eq!(back, a);
        let mut merged = back.clone();
        merged.merge(&back);
        assert_eq!(merged.flagged, 4);
        // An aggregate written before the count: the same bytes without the trailing varint.
        let old = Agg::decode(&bytes[..bytes.len() - 1], 0).unwrap();
        assert_eq!((old.flagged, old.rounds), (0, 3));
    }

    #[test]
    fn damaged_aggregates_are_errors_not_panics() {
        let mut a = Agg::default();
        a.add(&ping(5, Some(1234)));
        let b = a.encode(0);
        for n in 0..b.len() {
            let _ = Agg::decode(&b[..n], 0);
        }
        assert!(Agg::decode(&[2, 0, 0], 0).is_err());
    }
}
