//! The on-disk encoding of samples: one block per group commit.
//!
//! A block is a run of samples in append order:
//!
//! ```text
//! version u8 = 1
//! count   varint
//! base_ts zigzag varint (ms since the epoch)
//! count × sample:
//!   series   varint      (id in the series dictionary)
//!   ts       zigzag varint, ms since the previous sample of the block (base_ts for the first)
//!   flags    u8          bit0 success, bits1-3 error kind, bit4 ping, bit5 has rtts,
//!                        bit6 rtts all equal, bit7 extra counters present
//!   duration varint, µs
//!   ping only: sent varint, received varint,
//!              [extra] duplicates varint, icmp_errors varint,
//!              [has rtts] min µs varint, [not equal] avg-min, max-avg, stddev varints
//! crc32   u32 LE over everything before it
//! ```
//!
//! A typical ping round (one packet, answered) takes 9 to 12 bytes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use vantage_core::{Measurement, ProbeError, Sample};

const VERSION: u8 = 1;

const F_SUCCESS: u8 = 1;
const F_ERROR_SHIFT: u8 = 1;
const F_ERROR_MASK: u8 = 0b1110;
const F_PING: u8 = 1 << 4;
const F_RTTS: u8 = 1 << 5;
const F_RTT_EQUAL: u8 = 1 << 6;
const F_EXTRA: u8 = 1 << 7;

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
            ErrorKind::Other => "other",
        }
    }
}

/// Ping figures of one stored round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoredPing {
    pub sent: u32,
    pub received: u32,
    pub duplicates: u32,
    pub icmp_errors: u32,
    /// min, avg, max RTT in µs, when at least one reply came back.
    pub rtt_us: Option<(u64, u64, u64)>,
    /// Population standard deviation of the RTTs in µs (0 with one reply).
    pub stddev_us: u64,
}

/// One probe round as stored: what the charts and remote_write need, at µs resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredSample {
    /// Id in the store's series dictionary.
    pub series: u32,
    /// Milliseconds since the Unix epoch (the round's start).
    pub timestamp_ms: i64,
    pub success: bool,
    pub error: ErrorKind,
    pub duration_us: u64,
    pub ping: Option<StoredPing>,
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
        let ping = match &s.measurement {
            Measurement::Ping(p) => Some(StoredPing {
                sent: p.sent,
                received: p.received,
                duplicates: p.duplicates,
                icmp_errors: p.icmp_errors,
                rtt_us: match (p.min(), p.mean(), p.max()) {
                    (Some(a), Some(b), Some(c)) => Some((micros(a), micros(b), micros(c))),
                    _ => None,
                },
                stddev_us: p
                    .stddev_seconds()
                    .map_or(0, |s| (s * 1e6).round().max(0.0) as u64),
            }),
            _ => None,
        };
        Self {
            series,
            timestamp_ms: unix_ms(s.timestamp),
            success: s.success,
            error: ErrorKind::of(s.error.as_ref()),
            duration_us: micros(s.duration),
            ping,
        }
    }

    /// The same named values as [`Sample::values`], at the stored resolution.
    pub fn values(&self) -> Vec<(&'static str, f64)> {
        let mut v = Vec::with_capacity(9);
        v.push(("success", if self.success { 1.0 } else { 0.0 }));
        v.push(("duration_seconds", self.duration_us as f64 / 1e6));
        if let Some(p) = &self.ping {
            v.push(("sent", f64::from(p.sent)));
            v.push(("received", f64::from(p.received)));
            v.push(("duplicates", f64::from(p.duplicates)));
            let loss = if p.sent == 0 {
                1.0
            } else {
                1.0 - f64::from(p.received.min(p.sent)) / f64::from(p.sent)
            };
            v.push(("loss_ratio", loss));
            if let Some((min, avg, max)) = p.rtt_us {
                v.push(("rtt_min_seconds", min as f64 / 1e6));
                v.push(("rtt_avg_seconds", avg as f64 / 1e6));
                v.push(("rtt_max_seconds", max as f64 / 1e6));
                v.push(("rtt_stddev_seconds", p.stddev_us as f64 / 1e6));
            }
        }
        v
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

/// Encodes samples (in append order) into one block.
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
        }
    }
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

/// Decodes a whole block, checking its checksum.
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
    if version != VERSION {
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
        let ping = if flags & F_PING != 0 {
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
            Some(StoredPing {
                sent,
                received,
                duplicates,
                icmp_errors,
                rtt_us,
                stddev_us,
            })
        } else {
            None
        };
        out.push(StoredSample {
            series,
            timestamp_ms: ts,
            success: flags & F_SUCCESS != 0,
            error: ErrorKind::from_bits((flags & F_ERROR_MASK) >> F_ERROR_SHIFT),
            duration_us,
            ping,
        });
    }
    if !r.is_empty() {
        return Err(DecodeError::Truncated);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
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
}
