//! The on-disk encoding of samples: one block per group commit.
//!
//! A block is a run of samples in append order:
//!
//! ```text
//! version u8 = 4 (1 to 3 are still read: 3 is 4 without round quality, 2 is 3 without probe
//!               modules, 1 is 2 without DNS and trace figures)
//! count   varint
//! base_ts zigzag varint (ms since the epoch)
//! count × sample:
//!   series   varint      (id in the series dictionary)
//!   ts       zigzag varint, ms since the previous sample of the block (base_ts for the first)
//!   flags    u8          bit0 success, bits1-3 error kind, bit4 ping,
//!                        ping:     bit5 has rtts, bit6 rtts all equal, bit7 extra counters
//!                        not ping: bit5 dns, bit6 trace (version 2), bit7 module (version 3)
//!   duration varint, µs
//!   ping: sent varint, received varint,
//!         [extra] duplicates varint, icmp_errors varint,
//!         [has rtts] min µs varint, [not equal] avg-min, max-avg, stddev varints
//!   dns:  (written by versions 2 to 4 before DNS was a probe module; still read, into the DNS
//!         module's round: a DNS round is now a module round of code 2)
//!         dflags varint   bit0 answered, bit1 authority/additional present, bit2 lookup,
//!                         bit3 request phase, bit4 validation failed, bit5 truncated retry,
//!                         bit6 resolve phase, bit7 connect phase, bit8 tls phase,
//!                         bit9 stray datagrams
//!         [answered] rcode varint, answers varint, [bit1] authority varint, additional varint
//!         [lookup] zigzag(duration - lookup) µs, [request] zigzag(lookup - request) µs
//!         [resolve] µs, [connect] µs, [tls] µs, [strays] count (varints)
//!   trace: tflags varint  bit0 reached, bit1 path changed, bit2 TTLs not consecutive,
//!                         bit3 last hop's RTTs differ, bit4 some flows did not reach
//!         path_hash u32 LE, paths_known varint, [bit4] flows reached, flows varints,
//!         hops varint,
//!         [hops > 0] first_ttl u8, sent varint (of the first hop),
//!         hops × ([bit2] ttl u8, received << 2 | has RTT << 1 | sent differs varint,
//!                 [differs] sent varint, [has RTT] zigzag(mean RTT - previous hop's) µs),
//!         [bit3] last hop avg-min, max-avg µs varints
//!   module: code u8 (the module's store code), len varint, len bytes (the module's own
//!           encoding, which starts with its own format version)
//! flagged varint      (version 4: samples whose round ran late or under pressure, usually 0)
//! flagged × (index delta varint (the first: its index; then the distance from the previous
//!            flagged sample, at least 1), quality u8 (bit0 late, bit1 cpu, bit2 memory; not 0))
//! crc32   u32 LE over everything before it
//! ```
//!
//! A typical ping round (one packet, answered) takes 9 to 12 bytes, a DNS round about 19, a
//! trace about 17 plus 3 per hop. Error messages, DNS records and hop addresses are not in the
//! rounds (a trace path's addresses and the latest DNS answer are round details, written when
//! they change: `store/details.rs`, `docs/STORE.md`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use vantage_core::{Measurement, ProbeError, RoundQuality, Sample};

use crate::format;

/// The version blocks are written in: [`format::BLOCK`]'s (the rule of what may be written
/// is there).
const VERSION: u8 = format::BLOCK.writes;
/// Blocks written before round quality; still read (every round unflagged).
const VERSION_3: u8 = 3;
/// Blocks written before probe modules; still read.
const VERSION_2: u8 = 2;
/// Blocks written before DNS and trace rounds kept their figures; still read.
const VERSION_1: u8 = 1;

const F_SUCCESS: u8 = 1;
const F_ERROR_SHIFT: u8 = 1;
const F_ERROR_MASK: u8 = 0b1110;
const F_PING: u8 = 1 << 4;
// Ping rounds.
const F_RTTS: u8 = 1 << 5;
const F_RTT_EQUAL: u8 = 1 << 6;
const F_EXTRA: u8 = 1 << 7;
// Other rounds (version 2).
const F_DNS: u8 = 1 << 5;
const F_TRACE: u8 = 1 << 6;
const F_MODULE: u8 = 1 << 7;
/// The most bytes a module's figures of one round may take.
const MAX_MODULE_BYTES: u64 = 4096;

// DNS flags, most common first so a usual round's flags fit one varint byte.
const D_ANSWERED: u64 = 1;
const D_SECTIONS: u64 = 1 << 1;
const D_LOOKUP: u64 = 1 << 2;
const D_REQUEST: u64 = 1 << 3;
const D_VALIDATION_FAILED: u64 = 1 << 4;
const D_TRUNCATED_RETRY: u64 = 1 << 5;
const D_RESOLVE: u64 = 1 << 6;
const D_CONNECT: u64 = 1 << 7;
const D_TLS: u64 = 1 << 8;
const D_STRAYS: u64 = 1 << 9;
const D_KNOWN: u64 = (1 << 10) - 1;

// Trace flags.
const T_REACHED: u64 = 1;
const T_PATH_CHANGED: u64 = 1 << 1;
const T_TTL_GAPS: u64 = 1 << 2;
const T_LAST_SPREAD: u64 = 1 << 3;
// Written since the destination's share of flows was kept; blocks without it read as "all
// flows" when reached.
const T_PARTIAL: u64 = 1 << 4;
const T_KNOWN: u64 = (1 << 5) - 1;

/// Why a round failed, without the message (messages are not stored).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum ErrorKind {
    #[default]
    None = 0,
    Resolve = 1,
    Permission = 2,
    Network = 3,
    Timeout = 4,
    /// A malformed or mismatched answer (from version 2 on; `Other` before).
    Protocol = 5,
    /// An answer, but not the expected one: rcode or answer checks (from version 2 on).
    Validation = 6,
    Other = 7,
}

impl ErrorKind {
    fn from_bits(b: u8) -> Self {
        match b {
            0 => ErrorKind::None,
            1 => ErrorKind::Resolve,
            2 => ErrorKind::Permission,
            3 => ErrorKind::Network,
            4 => ErrorKind::Timeout,
            5 => ErrorKind::Protocol,
            6 => ErrorKind::Validation,
            _ => ErrorKind::Other,
        }
    }

    pub fn of(e: Option<&ProbeError>) -> Self {
        match e {
            None => ErrorKind::None,
            Some(ProbeError::Resolve(_)) => ErrorKind::Resolve,
            Some(ProbeError::Permission(_)) => ErrorKind::Permission,
            Some(ProbeError::Network(_)) => ErrorKind::Network,
            Some(ProbeError::Timeout) => ErrorKind::Timeout,
            Some(ProbeError::Protocol(_)) => ErrorKind::Protocol,
            Some(ProbeError::Validation(_)) => ErrorKind::Validation,
            Some(_) => ErrorKind::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::None => "",
            ErrorKind::Resolve => "resolve",
            ErrorKind::Permission => "permission",
            ErrorKind::Network => "network",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Validation => "validation",
            ErrorKind::Other => "other",
        }
    }
}

/// Ping figures of one stored round: the ping kind's.
pub use vantage_core::ping_series::StoredPing;

/// DNS figures of one stored round: the DNS module's, read from the built-in encoding of old
/// blocks too.
pub use vantage_core::dns_series::StoredDns;

/// Trace figures of one stored round: the trace kind's, in the block's own layout.
pub use vantage_core::trace_series::{StoredHop, StoredTrace};

/// One probe round as stored: what the charts and remote_write need, at µs resolution.
///
/// DNS and trace figures sit behind a `Box` so that the memory queue (up to `max_pending`
/// rounds) stays about 100 bytes a round whatever the probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSample {
    /// Id in the store's series dictionary.
    pub series: u32,
    /// Milliseconds since the Unix epoch (the round's start).
    pub timestamp_ms: i64,
    pub success: bool,
    pub error: ErrorKind,
    pub duration_us: u64,
    pub ping: Option<StoredPing>,
    /// Trace figures (`None` for other probes, and for trace rounds stored before version 2
    /// or that could not trace at all).
    pub trace: Option<Box<StoredTrace>>,
    /// A probe module's figures (`None` for the built-in kinds). DNS rounds of blocks written
    /// before DNS was a module (its built-in figures) are read into the DNS module's encoding.
    pub module: Option<Box<StoredModule>>,
    /// Whether the round ran late or under CPU or memory pressure (empty before version 4).
    pub quality: RoundQuality,
}

/// A probe module's figures of one round, in the module's own encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredModule {
    /// The module's store code; a module this build does not know keeps its bytes unread.
    pub code: u8,
    pub bytes: Vec<u8>,
}

impl StoredModule {
    /// A DNS round's figures as the DNS module's round.
    pub fn dns(d: &StoredDns) -> Self {
        let mut bytes = Vec::new();
        d.encode(&mut bytes);
        let code = vantage_core::ProbeKind::DNS
            .module()
            .map_or(0, |m| m.store_code());
        Self { code, bytes }
    }

    pub fn module(&self) -> Option<&'static dyn vantage_core::ProbeModule> {
        vantage_core::ModuleId::by_store_code(self.code).map(vantage_core::ModuleId::module)
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Milliseconds since the epoch of a wall-clock time (negative before 1970).
pub fn unix_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

impl StoredSample {
    pub fn from_sample(s: &Sample, series: u32) -> Self {
        let (mut ping, mut trace, mut module) = (None, None, None);
        match &s.measurement {
            // Ping and trace rounds keep the block layout's own figures (see `encode_block`).
            Measurement::Module(r) if let Some(t) = r.get::<vantage_core::TraceReport>() => {
                trace = Some(Box::new(StoredTrace::from_report(t)));
            }
            Measurement::Module(r) if let Some(p) = r.get::<vantage_core::PingReport>() => {
                ping = Some(StoredPing::from_report(p));
            }
            Measurement::Module(r) => {
                let mut bytes = Vec::new();
                r.module().encode(r.report.as_ref(), &mut bytes);
                module = Some(Box::new(StoredModule {
                    code: r.module().store_code(),
                    bytes,
                }));
            }
            _ => {}
        }
        Self {
            series,
            timestamp_ms: unix_ms(s.timestamp),
            success: s.success,
            error: ErrorKind::of(s.error.as_ref()),
            duration_us: micros(s.duration),
            ping,
            trace,
            module,
            quality: s.quality,
        }
    }

    /// The same named values as [`Sample::values`], at the stored resolution. Per-hop figures
    /// of a trace are in [`StoredSample::trace`].
    pub fn values(&self) -> Vec<(&'static str, f64)> {
        let mut v = Vec::with_capacity(12);
        let secs = |us: u64| us as f64 / 1e6;
        let flag = |b: bool| if b { 1.0 } else { 0.0 };
        v.push(("success", flag(self.success)));
        v.push(("duration_seconds", secs(self.duration_us)));
        if let Some(p) = &self.ping {
            p.values(&mut v);
        }
        if let Some(t) = &self.trace {
            t.values(&mut v);
        }
        if let Some(m) = &self.module
            && let Some(module) = m.module()
        {
            module.values(&m.bytes, &mut v);
        }
        v
    }

    /// The round's main time, µs: a ping round's mean RTT, a trace's last hop's, a module's
    /// ([`vantage_core::Rollup::time_us`]: DNS's lookup, TCP's connect time...). What a range
    /// of rounds keeps the distribution of, and the page's line.
    pub fn time_us(&self) -> Option<u64> {
        if let Some(p) = &self.ping {
            return p.time_us();
        }
        if let Some(t) = &self.trace {
            return t.time_us();
        }
        let m = self.module.as_ref()?;
        m.module()?.rollup(&m.bytes).time_us
    }

    pub fn timestamp(&self) -> SystemTime {
        if self.timestamp_ms >= 0 {
            UNIX_EPOCH + Duration::from_millis(self.timestamp_ms as u64)
        } else {
            UNIX_EPOCH - Duration::from_millis(self.timestamp_ms.unsigned_abs())
        }
    }
}

/// A block that failed to decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("block checksum mismatch")]
    Checksum,
    #[error("block truncated")]
    Truncated,
    #[error("unknown block version {0}")]
    Version(u8),
    /// Flags this version does not define (a newer writer, or damage the checksum missed).
    #[error("block has unknown flags")]
    Malformed,
}

/// Summary of a block, kept in the index so the store never reads a block to know what is in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockMeta {
    pub count: u32,
    pub min_ts: i64,
    pub max_ts: i64,
    /// Encoded length of the block in bytes.
    pub len: u32,
}

impl BlockMeta {
    pub const ENCODED_LEN: usize = 24;

    pub fn encode(&self) -> [u8; Self::ENCODED_LEN] {
        let mut b = [0u8; Self::ENCODED_LEN];
        b[0..4].copy_from_slice(&self.count.to_le_bytes());
        b[4..12].copy_from_slice(&self.min_ts.to_le_bytes());
        b[12..20].copy_from_slice(&self.max_ts.to_le_bytes());
        b[20..24].copy_from_slice(&self.len.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Option<Self> {
        if b.len() != Self::ENCODED_LEN {
            return None;
        }
        Some(Self {
            count: u32::from_le_bytes(b[0..4].try_into().ok()?),
            min_ts: i64::from_le_bytes(b[4..12].try_into().ok()?),
            max_ts: i64::from_le_bytes(b[12..20].try_into().ok()?),
            len: u32::from_le_bytes(b[20..24].try_into().ok()?),
        })
    }
}

pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        let b = *self.buf.get(self.pos).ok_or(DecodeError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    pub fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError::Truncated)
    }

    fn u32v(&mut self) -> Result<u32, DecodeError> {
        u32::try_from(self.varint()?).map_err(|_| DecodeError::Truncated)
    }

    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::Truncated)?;
        let s = self.buf.get(self.pos..end).ok_or(DecodeError::Truncated)?;
        self.pos = end;
        Ok(s)
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }
}

fn put_zigzag(out: &mut Vec<u8>, v: i64) {
    put_varint(out, zigzag(v));
}

/// `a - b` of two µs figures, lossless for any values (decoded with [`sub_back`]).
fn delta(a: u64, b: u64) -> i64 {
    (a as i64).wrapping_sub(b as i64)
}

fn sub_back(a: u64, d: i64) -> u64 {
    (a as i64).wrapping_sub(d) as u64
}

/// A DNS round of the built-in figures (blocks written before DNS was a module), as the DNS
/// module's round.
fn get_dns(r: &mut Reader<'_>, duration_us: u64) -> Result<StoredModule, DecodeError> {
    Ok(StoredModule::dns(&get_dns_figures(r, duration_us)?))
}

fn get_dns_figures(r: &mut Reader<'_>, duration_us: u64) -> Result<StoredDns, DecodeError> {
    let f = r.varint()?;
    if f & !D_KNOWN != 0 {
        return Err(DecodeError::Malformed);
    }
    let mut d = StoredDns {
        validation_failed: f & D_VALIDATION_FAILED != 0,
        truncated_retry: f & D_TRUNCATED_RETRY != 0,
        ..StoredDns::default()
    };
    if f & D_ANSWERED != 0 {
        d.rcode = Some(u16::try_from(r.varint()?).map_err(|_| DecodeError::Malformed)?);
        d.answers = r.u32v()?;
        if f & D_SECTIONS != 0 {
            d.authority = r.u32v()?;
            d.additional = r.u32v()?;
        }
    }
    if f & D_LOOKUP != 0 {
        d.lookup_us = Some(sub_back(duration_us, unzigzag(r.varint()?)));
    }
    if f & D_REQUEST != 0 {
        let base = d.lookup_us.unwrap_or(duration_us);
        d.request_us = Some(sub_back(base, unzigzag(r.varint()?)));
    }
    let mut opt = |bit: u64| -> Result<Option<u64>, DecodeError> {
        if f & bit != 0 {
            r.varint().map(Some)
        } else {
            Ok(None)
        }
    };
    d.resolve_us = opt(D_RESOLVE)?;
    d.connect_us = opt(D_CONNECT)?;
    d.tls_us = opt(D_TLS)?;
    if f & D_STRAYS != 0 {
        d.stray_datagrams = r.u32v()?;
    }
    Ok(d)
}

// Per-hop word: received << 2 | has RTT << 1 | sent differs from the first hop's.
const H_SENT_DIFFERS: u64 = 1;
const H_RTT: u64 = 1 << 1;

fn put_trace(out: &mut Vec<u8>, t: &StoredTrace) {
    let first = t.hops.first().map_or(0, |h| h.ttl);
    let gaps = t
        .hops
        .iter()
        .enumerate()
        .any(|(i, h)| usize::from(h.ttl) != usize::from(first) + i);
    let last_avg = t.hops.last().and_then(|h| h.rtt_avg_us);
    let spread = match (t.last_rtt_us, last_avg) {
        (Some((min, avg, max)), Some(a)) => avg != a || min != a || max != a,
        _ => false,
    };
    let mut f = 0;
    for (set, bit) in [
        (t.reached, T_REACHED),
        (t.path_changed, T_PATH_CHANGED),
        (gaps, T_TTL_GAPS),
        (spread, T_LAST_SPREAD),
        (t.partial.is_some(), T_PARTIAL),
    ] {
        if set {
            f |= bit;
        }
    }
    put_varint(out, f);
    out.extend_from_slice(&t.path_hash.to_le_bytes());
    put_varint(out, u64::from(t.paths_known));
    if let Some((reached, flows)) = t.partial {
        put_varint(out, u64::from(reached));
        put_varint(out, u64::from(flows));
    }
    put_varint(out, t.hops.len() as u64);
    let Some(h0) = t.hops.first() else { return };
    out.push(first);
    put_varint(out, u64::from(h0.sent));
    // RTTs grow along the path: each is stored as the change from the previous answered hop.
    let mut prev_rtt = 0;
    for h in &t.hops {
        if gaps {
            out.push(h.ttl);
        }
        let mut w = u64::from(h.received) << 2;
        if h.sent != h0.sent {
            w |= H_SENT_DIFFERS;
        }
        if h.rtt_avg_us.is_some() {
            w |= H_RTT;
        }
        put_varint(out, w);
        if h.sent != h0.sent {
            put_varint(out, u64::from(h.sent));
        }
        if let Some(r) = h.rtt_avg_us {
            put_zigzag(out, delta(r, prev_rtt));
            prev_rtt = r;
        }
    }
    if spread && let (Some((min, _, max)), Some(avg)) = (t.last_rtt_us, last_avg) {
        // min <= avg <= max holds for real data; saturate for anything else.
        put_varint(out, avg.saturating_sub(min));
        put_varint(out, max.saturating_sub(avg));
    }
}

fn get_trace(r: &mut Reader<'_>) -> Result<StoredTrace, DecodeError> {
    let f = r.varint()?;
    if f & !T_KNOWN != 0 {
        return Err(DecodeError::Malformed);
    }
    let hash = r.bytes(4)?;
    let mut t = StoredTrace {
        reached: f & T_REACHED != 0,
        path_changed: f & T_PATH_CHANGED != 0,
        path_hash: u32::from_le_bytes([hash[0], hash[1], hash[2], hash[3]]),
        paths_known: r.u32v()?,
        ..StoredTrace::default()
    };
    if f & T_PARTIAL != 0 {
        let (reached, flows) = (r.u32v()?, r.u32v()?);
        if reached >= flows {
            return Err(DecodeError::Malformed);
        }
        t.partial = Some((reached, flows));
    }
    let n = r.varint()? as usize;
    if n == 0 {
        return if f & (T_TTL_GAPS | T_LAST_SPREAD) != 0 {
            Err(DecodeError::Malformed)
        } else {
            Ok(t)
        };
    }
    // At most 255 TTLs; also guards the allocation against a bad count.
    if n > 255 {
        return Err(DecodeError::Malformed);
    }
    let first = r.u8()?;
    let sent0 = r.u32v()?;
    t.hops.reserve_exact(n);
    let mut prev_rtt = 0;
    for i in 0..n {
        let ttl = if f & T_TTL_GAPS != 0 {
            r.u8()?
        } else {
            u8::try_from(usize::from(first) + i).map_err(|_| DecodeError::Malformed)?
        };
        let w = r.varint()?;
        let received = u32::try_from(w >> 2).map_err(|_| DecodeError::Malformed)?;
        let sent = if w & H_SENT_DIFFERS != 0 {
            r.u32v()?
        } else {
            sent0
        };
        let rtt_avg_us = if w & H_RTT != 0 {
            prev_rtt = (prev_rtt as i64).wrapping_add(unzigzag(r.varint()?)) as u64;
            Some(prev_rtt)
        } else {
            None
        };
        t.hops.push(StoredHop {
            ttl,
            sent,
            received,
            rtt_avg_us,
        });
    }
    if let Some(avg) = t.hops.last().and_then(|h| h.rtt_avg_us) {
        t.last_rtt_us = Some(if f & T_LAST_SPREAD != 0 {
            let min = avg.saturating_sub(r.varint()?);
            let max = avg.saturating_add(r.varint()?);
            (min, avg, max)
        } else {
            (avg, avg, avg)
        });
    } else if f & T_LAST_SPREAD != 0 {
        return Err(DecodeError::Malformed);
    }
    Ok(t)
}

fn get_module(r: &mut Reader<'_>) -> Result<StoredModule, DecodeError> {
    let code = r.u8()?;
    let len = r.varint()?;
    if len > MAX_MODULE_BYTES {
        return Err(DecodeError::Malformed);
    }
    let bytes = r.bytes(len as usize)?.to_vec();
    Ok(StoredModule { code, bytes })
}

/// The flagged rounds of a block, after its samples: most blocks have none and spend one byte.
fn put_quality(out: &mut Vec<u8>, samples: &[StoredSample]) {
    let flagged = samples.iter().filter(|s| !s.quality.is_empty()).count();
    put_varint(out, flagged as u64);
    let mut prev = 0;
    for (i, s) in samples.iter().enumerate() {
        if !s.quality.is_empty() {
            put_varint(out, (i - prev) as u64);
            out.push(s.quality.bits());
            prev = i;
        }
    }
}

fn get_quality(r: &mut Reader<'_>, samples: &mut [StoredSample]) -> Result<(), DecodeError> {
    let flagged = r.varint()?;
    if flagged > samples.len() as u64 {
        return Err(DecodeError::Malformed);
    }
    let mut at: Option<usize> = None;
    for _ in 0..flagged {
        let delta = usize::try_from(r.varint()?).map_err(|_| DecodeError::Malformed)?;
        let i = match at {
            None => delta,
            Some(_) if delta == 0 => return Err(DecodeError::Malformed),
            Some(prev) => prev.checked_add(delta).ok_or(DecodeError::Malformed)?,
        };
        let quality = RoundQuality::from_bits(r.u8()?)
            .filter(|q| !q.is_empty())
            .ok_or(DecodeError::Malformed)?;
        samples.get_mut(i).ok_or(DecodeError::Malformed)?.quality = quality;
        at = Some(i);
    }
    Ok(())
}

/// Encodes samples (in append order) into one block. A sample carries the figures of one
/// probe at most: ping's win over DNS's, DNS's over trace's.
pub fn encode_block(samples: &[StoredSample]) -> (Vec<u8>, BlockMeta) {
    let mut out = Vec::with_capacity(16 + samples.len() * 12);
    out.push(VERSION);
    put_varint(&mut out, samples.len() as u64);
    let base = samples.first().map_or(0, |s| s.timestamp_ms);
    put_varint(&mut out, zigzag(base));
    let mut prev = base;
    let (mut min_ts, mut max_ts) = (i64::MAX, i64::MIN);
    for s in samples {
        min_ts = min_ts.min(s.timestamp_ms);
        max_ts = max_ts.max(s.timestamp_ms);
        put_varint(&mut out, u64::from(s.series));
        put_varint(&mut out, zigzag(s.timestamp_ms.wrapping_sub(prev)));
        prev = s.timestamp_ms;
        let mut flags = (s.error as u8) << F_ERROR_SHIFT;
        if s.success {
            flags |= F_SUCCESS;
        }
        if let Some(p) = &s.ping {
            flags |= F_PING;
            if p.duplicates != 0 || p.icmp_errors != 0 {
                flags |= F_EXTRA;
            }
            if let Some((min, avg, max)) = p.rtt_us {
                flags |= F_RTTS;
                if min == avg && avg == max {
                    flags |= F_RTT_EQUAL;
                }
            }
        } else if s.trace.is_some() {
            flags |= F_TRACE;
        } else if s.module.is_some() {
            flags |= F_MODULE;
        }
        out.push(flags);
        put_varint(&mut out, s.duration_us);
        if let Some(p) = &s.ping {
            put_varint(&mut out, u64::from(p.sent));
            put_varint(&mut out, u64::from(p.received));
            if flags & F_EXTRA != 0 {
                put_varint(&mut out, u64::from(p.duplicates));
                put_varint(&mut out, u64::from(p.icmp_errors));
            }
            if let Some((min, avg, max)) = p.rtt_us {
                put_varint(&mut out, min);
                if flags & F_RTT_EQUAL == 0 {
                    // min <= avg <= max holds for real data; saturate for anything else.
                    put_varint(&mut out, avg.saturating_sub(min));
                    put_varint(&mut out, max.saturating_sub(avg.max(min)));
                    put_varint(&mut out, p.stddev_us);
                }
            }
        } else if let Some(t) = &s.trace {
            put_trace(&mut out, t);
        } else if let Some(m) = &s.module {
            out.push(m.code);
            put_varint(&mut out, m.bytes.len() as u64);
            out.extend_from_slice(&m.bytes);
        }
    }
    put_quality(&mut out, samples);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    if samples.is_empty() {
        (min_ts, max_ts) = (0, 0);
    }
    let meta = BlockMeta {
        count: samples.len() as u32,
        min_ts,
        max_ts,
        len: out.len() as u32,
    };
    (out, meta)
}

/// Whether a block is whole: long enough and its checksum holds. A whole block that does not
/// decode was written by a newer build (or a format change this build does not know): the
/// store keeps it untouched and skips it; a block that is not whole is damage.
pub fn is_intact(block: &[u8]) -> bool {
    block.len() >= 5 && {
        let (body, crc) = block.split_at(block.len() - 4);
        crc32fast::hash(body).to_le_bytes() == crc
    }
}

/// Decodes a whole block (version 1 to 4), checking its checksum.
pub fn decode_block(block: &[u8]) -> Result<Vec<StoredSample>, DecodeError> {
    if block.len() < 5 {
        return Err(DecodeError::Truncated);
    }
    let (body, crc) = block.split_at(block.len() - 4);
    if crc32fast::hash(body).to_le_bytes() != crc {
        return Err(DecodeError::Checksum);
    }
    let mut r = Reader::new(body);
    let version = r.u8()?;
    if !format::BLOCK.reads(version) {
        return Err(DecodeError::Version(version));
    }
    let n = r.varint()? as usize;
    // Each sample takes at least 4 bytes: guards the allocation against a bad count.
    if n > body.len() / 4 + 1 {
        return Err(DecodeError::Truncated);
    }
    let mut prev = unzigzag(r.varint()?);
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let series = r.u32v()?;
        let ts = prev.wrapping_add(unzigzag(r.varint()?));
        prev = ts;
        let flags = r.u8()?;
        let duration_us = r.varint()?;
        let (mut ping, mut trace, mut module) = (None, None, None);
        if flags & F_PING != 0 {
            let sent = r.u32v()?;
            let received = r.u32v()?;
            let (duplicates, icmp_errors) = if flags & F_EXTRA != 0 {
                (r.u32v()?, r.u32v()?)
            } else {
                (0, 0)
            };
            let mut stddev_us = 0;
            let rtt_us = if flags & F_RTTS != 0 {
                let min = r.varint()?;
                if flags & F_RTT_EQUAL != 0 {
                    Some((min, min, min))
                } else {
                    let avg = min.saturating_add(r.varint()?);
                    let max = avg.saturating_add(r.varint()?);
                    stddev_us = r.varint()?;
                    Some((min, avg, max))
                }
            } else {
                None
            };
            ping = Some(StoredPing {
                sent,
                received,
                duplicates,
                icmp_errors,
                rtt_us,
                stddev_us,
            });
        } else {
            // Version 1 kept bits 5 to 7 of other rounds zero; version 2 uses 5 and 6, 3 all.
            let known = match version {
                VERSION_1 => 0,
                VERSION_2 => F_DNS | F_TRACE,
                _ => F_DNS | F_TRACE | F_MODULE,
            };
            let kinds = flags & (F_DNS | F_TRACE | F_MODULE);
            if kinds & !known != 0 || kinds.count_ones() > 1 {
                return Err(DecodeError::Malformed);
            }
            if flags & F_DNS != 0 {
                module = Some(Box::new(get_dns(&mut r, duration_us)?));
            } else if flags & F_TRACE != 0 {
                trace = Some(Box::new(get_trace(&mut r)?));
            } else if flags & F_MODULE != 0 {
                module = Some(Box::new(get_module(&mut r)?));
            }
        }
        out.push(StoredSample {
            series,
            timestamp_ms: ts,
            success: flags & F_SUCCESS != 0,
            error: ErrorKind::from_bits((flags & F_ERROR_MASK) >> F_ERROR_SHIFT),
            duration_us,
            ping,
            trace,
            module,
            quality: RoundQuality::empty(),
        });
    }
    if version > VERSION_3 {
        get_quality(&mut r, &mut out)?;
    }
    if !r.is_empty() {
        return Err(DecodeError::Truncated);
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use vantage_core::{
        DnsFlags, DnsPhases, DnsRecord, DnsReport, HopReport, ProbeKind, TraceReport,
    };

    use super::*;

    fn ping(series: u32, ts: i64, rtt: Option<(u64, u64, u64)>) -> StoredSample {
        StoredSample {
            series,
            timestamp_ms: ts,
            success: rtt.is_some(),
            error: if rtt.is_some() {
                ErrorKind::None
            } else {
                ErrorKind::Timeout
            },
            duration_us: rtt.map_or(1_000_000, |r| r.2),
            ping: Some(StoredPing {
                sent: 1,
                received: u32::from(rtt.is_some()),
                duplicates: 0,
                icmp_errors: 0,
                rtt_us: rtt,
                stddev_us: rtt.map_or(0, |r| (r.2 - r.0) / 3),
            }),
            trace: None,
            module: None,
            quality: RoundQuality::empty(),
        }
    }

    #[test]
    fn round_trip() {
        let samples = vec![
            ping(0, 1_700_000_000_000, Some((12_345, 12_345, 12_345))),
            ping(1, 1_700_000_000_010, Some((100, 250, 900))),
            ping(2, 1_700_000_000_005, None),
            StoredSample {
                series: 70_000,
                timestamp_ms: -5,
                success: false,
                error: ErrorKind::Resolve,
                duration_us: 3,
                ping: None,
                trace: None,
                module: None,
                quality: RoundQuality::empty(),
            },
            StoredSample {
                ping: Some(StoredPing {
                    sent: 5,
                    received: 7,
                    duplicates: 2,
                    icmp_errors: 1,
                    rtt_us: Some((1, 2, 3)),
                    stddev_us: 1,
                }),
                ..ping(3, i64::MAX, None)
            },
        ];
        let (b, meta) = encode_block(&samples);
        assert_eq!(decode_block(&b).unwrap(), samples);
        assert_eq!(meta.count, 5);
        assert_eq!(meta.min_ts, -5);
        assert_eq!(meta.max_ts, i64::MAX);
        assert_eq!(BlockMeta::decode(&meta.encode()), Some(meta));
        assert_eq!(decode_block(&encode_block(&[]).0).unwrap(), vec![]);
    }

    #[test]
    fn typical_round_is_compact() {
        // 100 targets at 1 s for a minute, RTTs around 20 ms.
        let mut samples = Vec::new();
        for sec in 0..60 {
            for t in 0..100u32 {
                let ts = 1_700_000_000_000 + sec * 1000 + i64::from(t) * 10;
                let rtt = 20_000 + u64::from(t) * 37;
                samples.push(ping(t, ts, Some((rtt, rtt, rtt))));
            }
        }
        let (b, _) = encode_block(&samples);
        let per = b.len() as f64 / samples.len() as f64;
        assert!(per <= 12.0, "{per} bytes per sample");
    }

    /// A block a newer build wrote decodes to an error but is intact (the store keeps it);
    /// a damaged one is not.
    #[test]
    fn a_newer_block_is_intact_and_a_damaged_one_is_not() {
        let (mut b, _) = encode_block(&[ping(0, 1_000, Some((5, 6, 7)))]);
        assert!(is_intact(&b));
        b[0] = format::BLOCK.reads_newest + 1;
        reseal(&mut b);
        assert_eq!(decode_block(&b), Err(DecodeError::Version(b[0])));
        assert!(is_intact(&b));
        let n = b.len();
        b[n / 2] ^= 0x40;
        assert!(!is_intact(&b));
        assert!(!is_intact(&b[..3]));
    }

    #[test]
    fn damage_is_detected() {
        let samples: Vec<_> = (0..50)
            .map(|i| ping(i, 1_000 + i64::from(i), Some((5, 6, 7))))
            .collect();
        let (b, _) = encode_block(&samples);
        for cut in [0, 1, 4, b.len() / 2, b.len() - 1] {
            assert!(decode_block(&b[..cut]).is_err(), "cut at {cut}");
        }
        for i in 0..b.len() {
            let mut bad = b.clone();
            bad[i] ^= 0x40;
            assert!(decode_block(&bad).is_err(), "flip at {i}");
        }
    }

    /// A successful round without figures, which the rounds of each kind in tests start from.
    pub(crate) fn other(series: u32, ts: i64) -> StoredSample {
        StoredSample {
            series,
            timestamp_ms: ts,
            success: true,
            error: ErrorKind::None,
            duration_us: 21_000,
            ping: None,
            trace: None,
            module: None,
            quality: RoundQuality::empty(),
        }
    }

    /// A DNS round: the DNS module's, code 2.
    fn dns(series: u32, ts: i64, d: StoredDns) -> StoredSample {
        StoredSample {
            module: Some(Box::new(StoredModule::dns(&d))),
            ..other(series, ts)
        }
    }

    fn trace(series: u32, ts: i64, t: StoredTrace) -> StoredSample {
        StoredSample {
            trace: Some(Box::new(t)),
            ..other(series, ts)
        }
    }

    fn usual_dns() -> StoredDns {
        StoredDns {
            rcode: Some(0),
            answers: 1,
            authority: 0,
            additional: 1,
            lookup_us: Some(20_800),
            request_us: Some(20_750),
            ..StoredDns::default()
        }
    }

    fn hops(n: u8, first: u8) -> Vec<StoredHop> {
        (0..n)
            .map(|i| StoredHop {
                ttl: first + i,
                sent: 3,
                received: 3,
                rtt_avg_us: Some(800 + u64::from(i) * 1_900),
            })
            .collect()
    }

    #[test]
    fn dns_and_trace_round_trip() {
        let samples = vec![
            dns(0, 1_700_000_000_000, usual_dns()),
            // Everything set, extended rcode, odd values.
            dns(
                1,
                1_700_000_000_001,
                StoredDns {
                    rcode: Some(4095),
                    answers: u32::MAX,
                    authority: 7,
                    additional: 0,
                    lookup_us: Some(u64::MAX),
                    resolve_us: Some(5),
                    connect_us: Some(0),
                    tls_us: Some(1 << 40),
                    request_us: Some(3),
                    validation_failed: true,
                    truncated_retry: true,
                    stray_datagrams: 9,
                },
            ),
            // A timeout: no answer, only the request phase.
            StoredSample {
                success: false,
                error: ErrorKind::Timeout,
                ..dns(
                    2,
                    1_700_000_000_002,
                    StoredDns {
                        request_us: Some(1_000_000),
                        ..StoredDns::default()
                    },
                )
            },
            // Failed validation, request longer than the round (clock oddities stay exact).
            StoredSample {
                success: false,
                error: ErrorKind::Validation,
                ..dns(
                    3,
                    1_700_000_000_003,
                    StoredDns {
                        rcode: Some(3),
                        request_us: Some(90_000),
                        ..StoredDns::default()
                    },
                )
            },
            trace(
                4,
                1_700_000_000_004,
                StoredTrace {
                    reached: true,
                    last_rtt_us: Some((20_000, 21_700, 25_000)),
                    hops: {
                        let mut h = hops(12, 1);
                        h[3].received = 0;
                        h[3].rtt_avg_us = None;
                        h[5].sent = 6;
                        h[5].received = 4;
                        h[11].rtt_avg_us = Some(21_700);
                        h
                    },
                    path_hash: 0xdead_beef,
                    path_changed: true,
                    paths_known: 2,
                    // A partial blackhole: 4 of 6 flows got through.
                    partial: Some((4, 6)),
                },
            ),
            // TTLs with gaps, a first TTL above 1, the last hop silent.
            trace(
                5,
                1_700_000_000_005,
                StoredTrace {
                    hops: vec![
                        StoredHop {
                            ttl: 3,
                            sent: 1,
                            received: 1,
                            rtt_avg_us: Some(1),
                        },
                        StoredHop {
                            ttl: 255,
                            sent: u32::MAX,
                            received: u32::MAX,
                            rtt_avg_us: None,
                        },
                    ],
                    path_hash: 1,
                    ..StoredTrace::default()
                },
            ),
            // One hop with equal RTTs; an empty trace.
            trace(
                6,
                1_700_000_000_006,
                StoredTrace {
                    reached: true,
                    hops: hops(1, 1),
                    last_rtt_us: Some((800, 800, 800)),
                    ..StoredTrace::default()
                },
            ),
            StoredSample {
                success: false,
                error: ErrorKind::Network,
                ..trace(7, 1_700_000_000_007, StoredTrace::default())
            },
            // A DNS or trace round that could not run keeps no figures.
            StoredSample {
                success: false,
                error: ErrorKind::Resolve,
                ..other(8, 1_700_000_000_008)
            },
            ping(9, 1_700_000_000_009, Some((100, 250, 900))),
        ];
        let (b, meta) = encode_block(&samples);
        assert_eq!(b[0], VERSION);
        assert_eq!(decode_block(&b).unwrap(), samples);
        assert_eq!(meta.count, samples.len() as u32);
        // Each alone too (the first sample of a block has no predecessor).
        for s in &samples {
            let one = std::slice::from_ref(s);
            assert_eq!(decode_block(&encode_block(one).0).unwrap(), one);
        }
    }

    /// A block written by version 1 (before DNS and trace figures), committed as produced:
    /// ping rounds in full; series 2 to 4 were a DNS, a trace and a failed round, kept with
    /// success, error kind and duration only.
    #[test]
    fn version_1_blocks_still_decode() {
        let b = include_bytes!("../tests/data/block-v1.bin");
        assert_eq!(b[0], VERSION_1);
        let p = |sent, received, duplicates, rtt_us, stddev_us| {
            Some(StoredPing {
                sent,
                received,
                duplicates,
                icmp_errors: 0,
                rtt_us,
                stddev_us,
            })
        };
        let s = |series, timestamp_ms, success, error, duration_us, ping| StoredSample {
            series,
            timestamp_ms,
            success,
            error,
            duration_us,
            ping,
            trace: None,
            module: None,
            quality: RoundQuality::empty(),
        };
        let want = vec![
            s(
                0,
                1_700_000_000_000,
                true,
                ErrorKind::None,
                12_400,
                p(1, 1, 0, Some((12_345, 12_345, 12_345)), 0),
            ),
            s(
                1,
                1_700_000_000_250,
                true,
                ErrorKind::None,
                25_000,
                p(5, 4, 1, Some((900, 1_500, 2_600)), 640),
            ),
            s(
                0,
                1_700_000_001_000,
                false,
                ErrorKind::Timeout,
                1_000_000,
                p(1, 0, 0, None, 0),
            ),
            s(2, 1_700_000_001_100, true, ErrorKind::None, 3_200, None),
            s(
                3,
                1_700_000_001_050,
                false,
                ErrorKind::Other,
                5_000_000,
                None,
            ),
            s(4, 1_700_000_001_200, false, ErrorKind::Resolve, 7, None),
        ];
        assert_eq!(decode_block(b).unwrap(), want);
        // Version 4 writes the same rounds in the same bytes, but for the version and the
        // count of flagged rounds (0) after them.
        let (v4, _) = encode_block(&want);
        assert_eq!(v4[0], VERSION);
        assert_eq!(v4[1..v4.len() - 5], b[1..b.len() - 4]);
        assert_eq!(v4[v4.len() - 5], 0);
    }

    /// The rounds of one target of a committed version-4 block, each `ms` after the block's
    /// first, without error or flags.
    fn v4_round(
        target: &str,
        probe: ProbeKind,
        duration: Duration,
    ) -> impl Fn(u64, bool, Measurement) -> Sample {
        move |ms, success, measurement| Sample {
            target: target.into(),
            probe,
            timestamp: UNIX_EPOCH + Duration::from_millis(1_700_000_000_000 + ms),
            duration,
            success,
            error: None,
            measurement,
            quality: RoundQuality::empty(),
        }
    }

    /// Checks the committed version-4 block of `kind` (`tests/data/block-v4-{kind}.bin`)
    /// against the rounds it was written from, stored as `series`: it decodes to them, and
    /// they are written in its bytes now. With `WRITE_{KIND}_BLOCK` set in the environment it
    /// is written afresh first. Returns the decoded rounds.
    fn check_v4_block(rounds: &[Sample], series: u32, kind: &str) -> Vec<StoredSample> {
        let rounds: Vec<StoredSample> = rounds
            .iter()
            .map(|s| StoredSample::from_sample(s, series))
            .collect();
        let path = format!(
            "{}/tests/data/block-v4-{kind}.bin",
            env!("CARGO_MANIFEST_DIR")
        );
        if std::env::var_os(format!("WRITE_{}_BLOCK", kind.to_uppercase())).is_some() {
            std::fs::write(&path, encode_block(&rounds).0).unwrap();
        }
        let b = std::fs::read(&path).unwrap();
        assert_eq!(b[0], VERSION);
        let old = decode_block(&b).unwrap();
        assert_eq!(old, rounds);
        assert_eq!(encode_block(&rounds).0, b);
        old
    }

    /// The ping rounds of `tests/data/block-v4-ping.bin`, as the daemon hands them to the store.
    fn v4_ping_rounds() -> Vec<Sample> {
        let us = Duration::from_micros;
        let round = v4_round("gw", ProbeKind::PING, us(2_004_100));
        let report = |sent, received, duplicates, icmp_errors, rtts: &[u64]| {
            Measurement::from(vantage_core::PingReport {
                sent,
                received,
                duplicates,
                icmp_errors,
                rtts: rtts.iter().copied().map(us).collect(),
                ..vantage_core::PingReport::default()
            })
        };
        vec![
            round(0, true, report(5, 4, 1, 0, &[40, 900, 1_500, 2_600])),
            round(1_000, true, report(1, 1, 0, 0, &[12_345])),
            round(2_000, false, report(5, 0, 0, 2, &[])),
            Sample {
                quality: RoundQuality::LATE | RoundQuality::CPU,
                ..round(3_000, true, report(3, 3, 0, 0, &[700, 700, 700]))
            },
            Sample {
                error: Some(vantage_core::ProbeError::Resolve("gw: no address".into())),
                ..round(4_000, false, Measurement::None)
            },
        ]
    }

    /// A block of ping rounds written by the built-in ping kind's encoder (version 4),
    /// committed as produced: it decodes to the same rounds and named values, and the same
    /// rounds are written in the same bytes now.
    #[test]
    fn version_4_ping_blocks_still_decode() {
        let old = check_v4_block(&v4_ping_rounds(), 7, "ping");
        let values: Vec<Vec<(&str, f64)>> = old.iter().map(StoredSample::values).collect();
        let want: Vec<Vec<(&str, f64)>> = vec![
            vec![
                ("success", 1.0),
                ("duration_seconds", 2.0041),
                ("sent", 5.0),
                ("received", 4.0),
                ("duplicates", 1.0),
                ("loss_ratio", 0.19999999999999996),
                ("rtt_min_seconds", 4e-5),
                ("rtt_avg_seconds", 0.00126),
                ("rtt_max_seconds", 0.0026),
                ("rtt_stddev_seconds", 0.000932),
            ],
            vec![
                ("success", 1.0),
                ("duration_seconds", 2.0041),
                ("sent", 1.0),
                ("received", 1.0),
                ("duplicates", 0.0),
                ("loss_ratio", 0.0),
                ("rtt_min_seconds", 0.012345),
                ("rtt_avg_seconds", 0.012345),
                ("rtt_max_seconds", 0.012345),
                ("rtt_stddev_seconds", 0.0),
            ],
            vec![
                ("success", 0.0),
                ("duration_seconds", 2.0041),
                ("sent", 5.0),
                ("received", 0.0),
                ("duplicates", 0.0),
                ("loss_ratio", 1.0),
            ],
            vec![
                ("success", 1.0),
                ("duration_seconds", 2.0041),
                ("sent", 3.0),
                ("received", 3.0),
                ("duplicates", 0.0),
                ("loss_ratio", 0.0),
                ("rtt_min_seconds", 0.0007),
                ("rtt_avg_seconds", 0.0007),
                ("rtt_max_seconds", 0.0007),
                ("rtt_stddev_seconds", 0.0),
            ],
            vec![("success", 0.0), ("duration_seconds", 2.0041)],
        ];
        assert_eq!(values, want);
        assert_eq!(old[2].ping.map(|p| p.icmp_errors), Some(2));
    }

    /// The trace rounds of `tests/data/block-v4-trace.bin`, as the daemon hands them to the
    /// store.
    fn v4_trace_rounds() -> Vec<Sample> {
        let us = Duration::from_micros;
        let round = v4_round("up", ProbeKind::TRACE, us(1_503_200));
        let hop = |ttl: u8, sent: u32, rtts: &[u64]| HopReport {
            ttl,
            sent,
            received: rtts.len() as u32,
            rtts: rtts.iter().copied().map(us).collect(),
            ..HopReport::default()
        };
        let trace = |reached, flows, flows_reached, hops, hash, changed, known| {
            Measurement::from(TraceReport {
                reached,
                flows,
                flows_reached,
                hops,
                path_hash: hash,
                path_changed: changed,
                paths_known: known,
                ..TraceReport::default()
            })
        };
        let path = vec![
            hop(1, 3, &[400, 500, 600]),
            hop(2, 3, &[900, 1_100]),
            hop(3, 3, &[]),
            hop(4, 3, &[2_000, 2_400, 2_900]),
        ];
        vec![
            round(0, true, trace(true, 1, 1, path, 0xdead_beef, false, 1)),
            // A partial blackhole on a new path with a TTL gap and equal last-hop RTTs.
            round(
                60_000,
                true,
                trace(
                    true,
                    4,
                    3,
                    vec![hop(2, 1, &[450]), hop(5, 2, &[7_000, 7_000])],
                    42,
                    true,
                    3,
                ),
            ),
            // Not reached; the last hop that answered ends it.
            Sample {
                quality: RoundQuality::MEMORY,
                ..round(
                    120_000,
                    false,
                    trace(
                        false,
                        2,
                        0,
                        vec![hop(1, 2, &[300]), hop(2, 2, &[])],
                        7,
                        false,
                        2,
                    ),
                )
            },
            round(180_000, false, trace(false, 1, 0, Vec::new(), 0, false, 0)),
            Sample {
                error: Some(vantage_core::ProbeError::Resolve("up: no address".into())),
                ..round(240_000, false, Measurement::None)
            },
        ]
    }

    /// A block of trace rounds written by the built-in trace kind's encoder (version 4),
    /// committed as produced: it decodes to the same rounds, named values and rollups, and
    /// the same rounds are written in the same bytes now.
    #[test]
    fn version_4_trace_blocks_still_decode() {
        let old = check_v4_block(&v4_trace_rounds(), 9, "trace");
        let values: Vec<Vec<(&str, f64)>> = old.iter().map(StoredSample::values).collect();
        let points: Vec<Vec<String>> = old
            .iter()
            .map(|s| {
                crate::gauges::points(s)
                    .iter()
                    .map(|p| format!("{}{{{:?}}} {}", p.gauge.name, p.label_value, p.value))
                    .collect()
            })
            .collect();
        let rollups: Vec<crate::rollup::Agg> = old
            .iter()
            .map(|s| {
                let mut a = crate::rollup::Agg::default();
                a.add(s);
                a
            })
            .collect();
        let mut shown = String::new();
        for ((v, p), a) in values.iter().zip(&points).zip(&rollups) {
            shown.push_str(&format!("values {v:?}\npoints {p:?}\nrollup {a:?}\n"));
        }
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/block-v4-trace.txt");
        if std::env::var_os("WRITE_TRACE_BLOCK").is_some() {
            std::fs::write(path, &shown).unwrap();
        }
        assert_eq!(shown, include_str!("../tests/data/block-v4-trace.txt"));
    }

    /// The rounds of `tests/data/block-v3.bin`: one of each kind, as version 3 wrote them.
    fn v3_rounds() -> Vec<StoredSample> {
        vec![
            ping(0, 1_700_000_000_000, Some((12_345, 12_345, 12_345))),
            ping(1, 1_700_000_000_250, Some((900, 1_500, 2_600))),
            ping(0, 1_700_000_001_000, None),
            dns(2, 1_700_000_001_100, usual_dns()),
            trace(
                3,
                1_700_000_001_050,
                StoredTrace {
                    reached: true,
                    hops: hops(3, 1),
                    last_rtt_us: Some((4_600, 4_600, 4_600)),
                    path_hash: 0xdead_beef,
                    paths_known: 1,
                    ..StoredTrace::default()
                },
            ),
            module(4, 1_700_000_001_200, 250, &[1, 2, 3]),
            StoredSample {
                success: false,
                error: ErrorKind::Resolve,
                ..other(5, 1_700_000_001_300)
            },
        ]
    }

    /// The built-in figures of [`usual_dns`] in the committed version-3 block, in bytes.
    const DNS_ROUND_V3_BYTES: usize = 8;

    /// A block written by version 3, committed as produced.
    #[test]
    fn version_3_blocks_still_decode() {
        let b = include_bytes!("../tests/data/block-v3.bin");
        assert_eq!(b[0], VERSION_3);
        assert_eq!(decode_block(b).unwrap(), v3_rounds());
    }

    /// A DNS round of an old block (the built-in figures) reads as the DNS module's round,
    /// with every figure, and shows the points and values of the same round written now.
    #[test]
    fn built_in_dns_rounds_read_as_dns_module_rounds() {
        let b = include_bytes!("../tests/data/block-v3.bin");
        let old = decode_block(b).unwrap();
        let m = old[3].module.as_deref().expect("the block's DNS round");
        assert_eq!(m.module().map(|m| m.name()), Some("dns"));
        assert_eq!(StoredDns::decode(&m.bytes), Some(usual_dns()));
        let now = StoredSample::from_sample(&dns_sample_of(&old[3]), old[3].series);
        assert_eq!(now, old[3]);
        assert_eq!(crate::gauges::points(&now), crate::gauges::points(&old[3]));
        assert_eq!(now.values(), old[3].values());
        let lookup = crate::gauges::points(&old[3])
            .into_iter()
            .find(|p| p.gauge == &vantage_core::dns_series::LOOKUP);
        assert_eq!(lookup.map(|p| p.value), Some(0.0208));
    }

    /// The live round whose stored form is `s`'s: [`usual_dns`] as a DNS report.
    fn dns_sample_of(s: &StoredSample) -> Sample {
        let us = Duration::from_micros;
        let report = DnsReport {
            rcode: Some(0),
            answers: vec![DnsRecord {
                name: "example.com.".into(),
                ttl: 60,
                class: "IN".into(),
                record_type: "A".into(),
                data: "192.0.2.1".into(),
            }],
            additional_records: 1,
            lookup: Some(us(20_800)),
            phases: DnsPhases {
                request: Some(us(20_750)),
                ..DnsPhases::default()
            },
            ..DnsReport::default()
        };
        Sample {
            target: "d".into(),
            probe: ProbeKind::DNS,
            timestamp: s.timestamp(),
            duration: us(s.duration_us),
            success: s.success,
            error: None,
            measurement: report.into(),
            quality: RoundQuality::empty(),
        }
    }

    /// Rounds that ran late or under pressure keep their flags; unflagged rounds cost nothing
    /// but the block's one count byte.
    #[test]
    fn round_quality_round_trips_in_version_4() {
        let v3 = include_bytes!("../tests/data/block-v3.bin");
        let plain = encode_block(&v3_rounds()).0;
        // One count byte, and the DNS round's figures now in the module's encoding.
        let mut dns = Vec::new();
        usual_dns().encode(&mut dns);
        let module_overhead = 2 + dns.len() - DNS_ROUND_V3_BYTES;
        assert_eq!(plain.len(), v3.len() + 1 + module_overhead);
        let mut samples = v3_rounds();
        samples[0].quality = RoundQuality::LATE;
        samples[3].quality = RoundQuality::CPU | RoundQuality::MEMORY;
        samples[4].quality = RoundQuality::MEMORY;
        samples[6].quality = RoundQuality::LATE | RoundQuality::CPU;
        let (b, meta) = encode_block(&samples);
        assert_eq!(b[0], VERSION);
        assert_eq!(meta.count, 7);
        // Count, then (delta, flags) for indexes 0, 3, 4, 6.
        assert_eq!(b[plain.len() - 5..b.len() - 4], [4, 0, 1, 3, 6, 1, 4, 2, 3]);
        assert_eq!(decode_block(&b).unwrap(), samples);
        let one = [StoredSample {
            quality: RoundQuality::CPU,
            ..ping(0, 5, None)
        }];
        assert_eq!(decode_block(&encode_block(&one).0).unwrap(), one);
    }

    /// Flags this version does not define, empty flags, or an index past the block are
    /// damage, like the sample flags.
    #[test]
    fn unknown_or_misplaced_quality_flags_are_refused() {
        let samples = [
            ping(0, 5, None),
            StoredSample {
                quality: RoundQuality::LATE,
                ..ping(1, 6, None)
            },
        ];
        let (b, _) = encode_block(&samples);
        let n = b.len() - 4;
        assert_eq!(b[n - 3..n], [1, 1, 1]);
        for (at, value) in [
            (n - 1, 1 << 3),
            (n - 1, 0x80),
            (n - 1, 0),
            (n - 2, 2),
            (n - 3, 3),
        ] {
            let mut bad = b.clone();
            bad[at] = value;
            reseal(&mut bad);
            assert_eq!(
                decode_block(&bad),
                Err(DecodeError::Malformed),
                "{at}={value}"
            );
        }
        // A second entry for the same round (delta 0) is refused too.
        let mut twice = b[..n - 3].to_vec();
        twice.extend_from_slice(&[2, 1, 1, 0, 2, 0, 0, 0, 0]);
        reseal(&mut twice);
        assert_eq!(decode_block(&twice), Err(DecodeError::Malformed));
        // Version 3 has no quality section: the same bytes are trailing garbage there.
        let mut v3 = b.clone();
        v3[0] = VERSION_3;
        reseal(&mut v3);
        assert_eq!(decode_block(&v3), Err(DecodeError::Truncated));
    }

    /// Version 1 never set the DNS or trace bits: such a block is damage, not a round.
    #[test]
    fn version_1_blocks_with_new_flags_are_refused() {
        let (mut b, _) = encode_block(&[dns(0, 5, usual_dns())]);
        b[0] = VERSION_1;
        let n = b.len() - 4;
        let crc = crc32fast::hash(&b[..n]);
        b[n..].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(decode_block(&b), Err(DecodeError::Malformed));
    }

    fn module(series: u32, ts: i64, code: u8, bytes: &[u8]) -> StoredSample {
        StoredSample {
            module: Some(Box::new(StoredModule {
                code,
                bytes: bytes.to_vec(),
            })),
            ..other(series, ts)
        }
    }

    fn reseal(b: &mut [u8]) {
        let n = b.len() - 4;
        let crc = crc32fast::hash(&b[..n]);
        b[n..].copy_from_slice(&crc.to_le_bytes());
    }

    /// A probe module's figures are kept as its bytes, behind its store code; a code this
    /// build does not know still decodes (and shows no figures), older versions refuse the bit.
    #[test]
    fn module_rounds_round_trip_and_old_versions_refuse_them() {
        let samples = vec![
            module(0, 1_700_000_000_000, 250, &[1, 2, 3]),
            other(1, 1_700_000_000_100),
            module(2, 1_700_000_000_200, 251, &[]),
        ];
        let (b, meta) = encode_block(&samples);
        assert_eq!(b[0], VERSION);
        assert_eq!(meta.count, 3);
        let back = decode_block(&b).unwrap();
        assert_eq!(back, samples);
        assert!(back[0].module.as_ref().unwrap().module().is_none());
        let points = crate::gauges::points(&back[0]);
        assert_eq!(points.len(), 2, "success and duration only: {points:?}");
        for old in [VERSION_2, VERSION_1] {
            let mut old_block = b.clone();
            old_block[0] = old;
            reseal(&mut old_block);
            assert_eq!(decode_block(&old_block), Err(DecodeError::Malformed));
        }
        // A length past the bound is refused before anything is allocated.
        let big = vec![0u8; MAX_MODULE_BYTES as usize + 1];
        let (b, _) = encode_block(&[module(0, 0, 250, &big)]);
        assert_eq!(decode_block(&b), Err(DecodeError::Malformed));
        // Damage inside the module's bytes is the checksum's to find.
        let (mut b, _) = encode_block(&[module(0, 0, 250, &[9; 8])]);
        let n = b.len() - 6;
        b[n] ^= 0xff;
        assert_eq!(decode_block(&b), Err(DecodeError::Checksum));
    }

    /// Rounds written before the share of flows was kept (no bit 4) read as all flows when
    /// reached, none when not; a share that is not partial is damage.
    #[test]
    fn the_share_of_flows_reached_is_kept_and_older_rounds_read_as_all_or_none() {
        let full = StoredTrace {
            reached: true,
            hops: hops(3, 1),
            last_rtt_us: Some((4_600, 4_600, 4_600)),
            ..StoredTrace::default()
        };
        let (b, _) = encode_block(&[trace(0, 5, full.clone())]);
        let t = decode_block(&b).unwrap().remove(0).trace.unwrap();
        assert_eq!((t.partial, t.flows_reached_ratio()), (None, 1.0));
        let none = StoredTrace {
            reached: false,
            ..full.clone()
        };
        assert_eq!(none.flows_reached_ratio(), 0.0);
        let partial = StoredTrace {
            partial: Some((1, 4)),
            ..full
        };
        let (mut b, _) = encode_block(&[trace(0, 5, partial.clone())]);
        let t = decode_block(&b).unwrap().remove(0).trace.unwrap();
        assert_eq!(*t, partial);
        assert_eq!(t.flows_reached_ratio(), 0.25);
        // Flows reached, then flows: 1 and 4 sit right after paths_known (0) in this block.
        let at = b.windows(3).position(|w| w == [0, 1, 4]).unwrap() + 1;
        b[at] = 4;
        let n = b.len() - 4;
        let crc = crc32fast::hash(&b[..n]);
        b[n..].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(decode_block(&b), Err(DecodeError::Malformed));
    }

    #[test]
    fn dns_and_trace_rounds_are_compact() {
        // 100 DNS targets and 100 traces of 12 hops at 10 s for ten minutes.
        let size = |make: &dyn Fn(u32, i64) -> StoredSample| {
            let mut samples = Vec::new();
            for round in 0..60 {
                for t in 0..100u32 {
                    samples.push(make(
                        t,
                        1_700_000_000_000 + round * 10_000 + i64::from(t) * 97,
                    ));
                }
            }
            encode_block(&samples).0.len() as f64 / samples.len() as f64
        };
        let d = size(&|t, ts| {
            let mut s = dns(t, ts, usual_dns());
            s.duration_us = 20_900 + u64::from(t) * 13;
            s
        });
        // A module round: code, length and version bytes, and the lookup whole (the built-in
        // figures kept it as its difference from the round's duration, about 15 bytes a round).
        assert!(d <= 19.5, "{d} bytes per DNS round");
        let tr = size(&|t, ts| {
            trace(
                t,
                ts,
                StoredTrace {
                    reached: true,
                    hops: hops(12, 1),
                    last_rtt_us: Some((21_000, 21_700, 22_400)),
                    path_hash: 0x9e37_79b9_u32.wrapping_mul(t),
                    paths_known: 1,
                    ..StoredTrace::default()
                },
            )
        });
        assert!(tr <= 60.0, "{tr} bytes per 12-hop trace round");
        eprintln!("{d:.1} bytes per DNS round, {tr:.1} per 12-hop trace round");
    }

    #[test]
    fn damage_in_dns_and_trace_rounds_is_detected() {
        let samples: Vec<_> = (0..20)
            .map(|i| {
                if i % 2 == 0 {
                    dns(i, 1_000 + i64::from(i), usual_dns())
                } else {
                    trace(
                        i,
                        1_000 + i64::from(i),
                        StoredTrace {
                            hops: hops(5, 1),
                            ..StoredTrace::default()
                        },
                    )
                }
            })
            .collect();
        let (b, _) = encode_block(&samples);
        for cut in [0, 1, 4, b.len() / 2, b.len() - 1] {
            assert!(decode_block(&b[..cut]).is_err(), "cut at {cut}");
        }
        for i in 0..b.len() {
            let mut bad = b.clone();
            bad[i] ^= 0x40;
            assert!(decode_block(&bad).is_err(), "flip at {i}");
        }
    }

    /// Hostile bytes behind a valid checksum never panic: flags, counts and hop numbers out of
    /// range are errors.
    #[test]
    fn garbage_with_a_valid_checksum_is_an_error_not_a_panic() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let (good, _) = encode_block(&[
            dns(0, 1, usual_dns()),
            trace(
                1,
                2,
                StoredTrace {
                    hops: hops(4, 1),
                    ..StoredTrace::default()
                },
            ),
        ]);
        for _ in 0..20_000 {
            let mut b = good.clone();
            let n = b.len() - 4;
            for _ in 0..1 + next() % 4 {
                let i = 1 + (next() as usize) % (n - 1);
                b[i] = next() as u8;
            }
            let crc = crc32fast::hash(&b[..n]);
            b[n..].copy_from_slice(&crc.to_le_bytes());
            let _ = decode_block(&b);
        }
    }

    /// Found by fuzzing (`fuzz/`, target `store_block`): a hand-made block may hold a standard
    /// deviation beside equal RTTs, which the encoder never writes. It decodes as written and
    /// encodes to the equal-RTT form, which then stays as it is.
    #[test]
    fn a_deviation_beside_equal_rtts_decodes_and_encodes_canonically() {
        let body = [2, 1, 0x32, 0x3b, 0x3b, 0x3b, 0x3b, 0, 9, 1, 0, 0, 0x0f];
        let mut block = body.to_vec();
        block.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        let read = decode_block(&block).unwrap();
        let p = read[0].ping.as_ref().unwrap();
        assert_eq!((p.rtt_us, p.stddev_us), (Some((1, 1, 1)), 15));
        let written = decode_block(&encode_block(&read).0).unwrap();
        assert_eq!(written[0].ping.as_ref().unwrap().stddev_us, 0);
        assert_eq!(decode_block(&encode_block(&written).0).unwrap(), written);
    }

    /// A stored round gives the same named values as the live sample, at µs resolution.
    #[test]
    fn stored_values_match_the_sample() {
        let ms = Duration::from_millis;
        let hop = |ttl: u8, sent: u32, rtts: &[u64]| HopReport {
            ttl,
            sent,
            received: rtts.len() as u32,
            rtts: rtts.iter().map(|m| ms(*m)).collect(),
            ..Default::default()
        };
        let base = Sample {
            target: Arc::from("t"),
            probe: ProbeKind::DNS,
            timestamp: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            duration: Duration::from_micros(21_345),
            success: true,
            error: None,
            measurement: Measurement::None,
            quality: Default::default(),
        };
        let samples = [
            Sample {
                measurement: Measurement::from(DnsReport {
                    rcode: Some(0),
                    flags: DnsFlags::default(),
                    answers: vec![DnsRecord {
                        name: "a.".into(),
                        ttl: 60,
                        class: "IN".into(),
                        record_type: "A".into(),
                        data: "192.0.2.1".into(),
                    }],
                    authority_records: 2,
                    additional_records: 1,
                    lookup: Some(Duration::from_micros(21_001)),
                    phases: DnsPhases {
                        resolve: Some(Duration::from_micros(40)),
                        connect: Some(Duration::from_micros(300)),
                        tls: None,
                        request: Some(Duration::from_micros(20_500)),
                    },
                    truncated_retry: true,
                    stray_datagrams: 2,
                    validation_failures: vec!["no 192.0.2.9".into()],
                    ..DnsReport::default()
                }),
                ..base.clone()
            },
            Sample {
                success: false,
                error: Some(ProbeError::Timeout),
                measurement: Measurement::from(DnsReport {
                    phases: DnsPhases {
                        request: Some(ms(1000)),
                        ..DnsPhases::default()
                    },
                    ..DnsReport::default()
                }),
                ..base.clone()
            },
            Sample {
                probe: ProbeKind::TRACE,
                measurement: Measurement::from(TraceReport {
                    reached: true,
                    hops: vec![hop(1, 3, &[1, 1, 2]), hop(2, 3, &[]), hop(3, 4, &[10, 30])],
                    path_hash: 0xdead_beef,
                    path_changed: true,
                    paths_known: 2,
                    ..Default::default()
                }),
                ..base.clone()
            },
        ];
        for s in &samples {
            let stored = StoredSample::from_sample(s, 0);
            let (b, _) = encode_block(std::slice::from_ref(&stored));
            let back = decode_block(&b).unwrap().remove(0);
            assert_eq!(back, stored);
            let mut want = s.values();
            let mut got = back.values();
            // The stored form adds the RTT spread of ping only.
            got.retain(|(k, _)| *k != "rtt_stddev_seconds");
            want.sort_by(|a, b| a.0.cmp(b.0));
            got.sort_by(|a, b| a.0.cmp(b.0));
            let names = |v: &[(&'static str, f64)]| v.iter().map(|p| p.0).collect::<Vec<_>>();
            assert_eq!(names(&got), names(&want), "{s:?}");
            for ((k, g), (_, w)) in got.iter().zip(&want) {
                assert!((g - w).abs() < 1e-6, "{k}: {g} != {w}");
            }
        }
        let t = StoredSample::from_sample(&samples[2], 0).trace.unwrap();
        assert_eq!(t.hops[0].rtt_avg_us, Some(1_333));
        assert_eq!(t.hops[1].rtt_avg_us, None);
        assert_eq!(t.hops[1].loss_ratio(), 1.0);
        assert_eq!(t.last_rtt_us, Some((10_000, 20_000, 30_000)));
        let e = StoredSample::from_sample(&samples[0], 0).error;
        assert_eq!(e, ErrorKind::None);
        let m = StoredSample::from_sample(&samples[1], 0).module.unwrap();
        let d = StoredDns::decode(&m.bytes).unwrap();
        assert_eq!((d.rcode, d.answers, d.lookup_us), (None, 0, None));
    }

    #[test]
    fn new_error_kinds_are_kept() {
        for (e, k) in [
            (ProbeError::Protocol("x".into()), ErrorKind::Protocol),
            (ProbeError::Validation("x".into()), ErrorKind::Validation),
        ] {
            let mut s = other(0, 1);
            s.error = ErrorKind::of(Some(&e));
            assert_eq!(s.error, k);
            assert_eq!(decode_block(&encode_block(&[s]).0).unwrap()[0].error, k);
        }
    }

    /// The memory queue holds up to a million rounds: DNS and trace figures stay boxed.
    #[test]
    fn a_queued_round_stays_small() {
        assert!(std::mem::size_of::<StoredSample>() <= 112);
    }
}
