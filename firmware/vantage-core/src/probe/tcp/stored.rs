//! A TCP round as the store keeps it (µs resolution), and the gauges it shows.
//!
//! ```text
//! version u8 = 1
//! flags   varint  bit0 connected (connect stats follow), bit1 TLS handshake, bit2 certificate
//!                 expiry, bit3 expect checked, bit4 expect matched, bit5 TLS version
//! sent varint, connected varint,
//! [bit0] min µs, avg-min µs, max-avg µs,  [bit1] handshake µs,  [bit2] zigzag(not_after s),
//! [bit5] TLS version as on the wire (0x0304 for TLS 1.3)
//! ```

use std::time::Duration;

use super::series::{
    ATTEMPTS_OK, ATTEMPTS_SENT, CERT_NOT_AFTER, CONNECT_STATS, EXPECT_MATCHED, LOSS, TLS_HANDSHAKE,
    TLS_VERSION, TcpReport,
};
use crate::series::{Point, flag, secs};

const VERSION: u8 = 1;
const F_CONNECTED: u64 = 1;
const F_TLS: u64 = 1 << 1;
const F_CERT: u64 = 1 << 2;
const F_EXPECT: u64 = 1 << 3;
const F_MATCHED: u64 = 1 << 4;
const F_TLS_VERSION: u64 = 1 << 5;
const F_KNOWN: u64 = (1 << 6) - 1;

/// The TLS versions a round may agree: as on the wire (and stored), and as shown (blackbox's
/// label values).
const TLS_VERSIONS: [(u16, &str); 4] = [
    (0x0301, "TLS 1.0"),
    (0x0302, "TLS 1.1"),
    (0x0303, "TLS 1.2"),
    (0x0304, "TLS 1.3"),
];

/// A TLS version's name, from its wire code.
pub(crate) fn tls_version_name(code: u16) -> Option<&'static str> {
    TLS_VERSIONS.iter().find(|v| v.0 == code).map(|v| v.1)
}

/// A TLS version's wire code, from its name.
pub(crate) fn tls_version_code(name: &str) -> Option<u16> {
    TLS_VERSIONS.iter().find(|v| v.1 == name).map(|v| v.0)
}

/// The figures of one stored TCP round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct StoredTcp {
    pub sent: u32,
    pub connected: u32,
    /// min, avg, max connect time in µs, when an attempt connected.
    pub connect_us: Option<(u64, u64, u64)>,
    pub tls_us: Option<u64>,
    pub not_after: Option<i64>,
    pub expect_matched: Option<bool>,
    /// The TLS version's wire code.
    pub tls_version: Option<u16>,
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(crate) fn varint(b: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = b.split_first()?;
        *b = rest;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

impl StoredTcp {
    pub fn from_report(r: &TcpReport) -> Self {
        let t = &r.connect_times;
        let connect_us = match (t.iter().min(), t.iter().max()) {
            (Some(min), Some(max)) => {
                let avg = t.iter().sum::<Duration>() / t.len() as u32;
                Some((micros(*min), micros(avg), micros(*max)))
            }
            _ => None,
        };
        Self {
            sent: r.sent,
            connected: r.connected,
            connect_us,
            tls_us: r.tls_handshake.map(micros),
            not_after: r.cert_not_after,
            expect_matched: r.expect_matched,
            tls_version: r.tls_version.as_deref().and_then(tls_version_code),
        }
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut flags = 0;
        for (set, bit) in [
            (self.connect_us.is_some(), F_CONNECTED),
            (self.tls_us.is_some(), F_TLS),
            (self.not_after.is_some(), F_CERT),
            (self.expect_matched.is_some(), F_EXPECT),
            (self.expect_matched == Some(true), F_MATCHED),
            (self.tls_version.is_some(), F_TLS_VERSION),
        ] {
            if set {
                flags |= bit;
            }
        }
        out.push(VERSION);
        put_varint(out, flags);
        put_varint(out, u64::from(self.sent));
        put_varint(out, u64::from(self.connected));
        if let Some((min, avg, max)) = self.connect_us {
            put_varint(out, min);
            put_varint(out, avg.saturating_sub(min));
            put_varint(out, max.saturating_sub(avg.max(min)));
        }
        if let Some(t) = self.tls_us {
            put_varint(out, t);
        }
        if let Some(n) = self.not_after {
            put_varint(out, ((n << 1) ^ (n >> 63)) as u64);
        }
        if let Some(v) = self.tls_version {
            put_varint(out, u64::from(v));
        }
    }

    /// `None` for another version, unknown flags or bytes that do not add up.
    pub fn decode(mut b: &[u8]) -> Option<Self> {
        let (&version, rest) = b.split_first()?;
        b = rest;
        let flags = varint(&mut b)?;
        if version != VERSION || flags & !F_KNOWN != 0 {
            return None;
        }
        let u32v = |b: &mut &[u8]| varint(b).and_then(|v| u32::try_from(v).ok());
        let mut s = Self {
            sent: u32v(&mut b)?,
            connected: u32v(&mut b)?,
            ..Self::default()
        };
        if flags & F_CONNECTED != 0 {
            let min = varint(&mut b)?;
            let avg = min.saturating_add(varint(&mut b)?);
            s.connect_us = Some((min, avg, avg.saturating_add(varint(&mut b)?)));
        }
        if flags & F_TLS != 0 {
            s.tls_us = Some(varint(&mut b)?);
        }
        if flags & F_CERT != 0 {
            let z = varint(&mut b)?;
            s.not_after = Some((z >> 1) as i64 ^ -((z & 1) as i64));
        }
        if flags & F_EXPECT != 0 {
            s.expect_matched = Some(flags & F_MATCHED != 0);
        }
        if flags & F_TLS_VERSION != 0 {
            s.tls_version = Some(u16::try_from(varint(&mut b)?).ok()?);
        }
        b.is_empty().then_some(s)
    }

    /// The round's gauges; a figure the round did not have (no connection, no TLS) is absent.
    pub fn points(&self, out: &mut Vec<Point>) {
        out.push(Point::new(&ATTEMPTS_SENT, f64::from(self.sent)));
        out.push(Point::new(&ATTEMPTS_OK, f64::from(self.connected)));
        let loss = if self.sent == 0 {
            1.0
        } else {
            1.0 - f64::from(self.connected.min(self.sent)) / f64::from(self.sent)
        };
        out.push(Point::new(&LOSS, loss));
        if let Some((min, avg, max)) = self.connect_us {
            for (stat, v) in [("min", min), ("avg", avg), ("max", max)] {
                out.push(Point::labelled(&CONNECT_STATS, stat, secs(v)));
            }
        }
        if let Some(t) = self.tls_us {
            out.push(Point::new(&TLS_HANDSHAKE, secs(t)));
        }
        if let Some(n) = self.not_after {
            out.push(Point::new(&CERT_NOT_AFTER, n as f64));
        }
        if let Some(m) = self.expect_matched {
            out.push(Point::new(&EXPECT_MATCHED, flag(m)));
        }
        if let Some(name) = self.tls_version.and_then(tls_version_name) {
            out.push(Point::labelled(&TLS_VERSION, name, 1.0));
        }
    }
}

impl StoredTcp {
    /// The round's named values (the store's query answers): the connect times with a
    /// connection, the handshake with TLS, and the certificate's expiry when one was seen.
    pub fn values(&self, out: &mut Vec<(&'static str, f64)>) {
        out.push(("attempts_sent", f64::from(self.sent)));
        out.push(("attempts_connected", f64::from(self.connected)));
        if let Some((min, avg, max)) = self.connect_us {
            out.push(("connect_seconds", secs(avg)));
            out.push(("connect_min_seconds", secs(min)));
            out.push(("connect_max_seconds", secs(max)));
        }
        if let Some(t) = self.tls_us {
            out.push(("tls_seconds", secs(t)));
        }
        if let Some(n) = self.not_after {
            out.push(("cert_not_after_seconds", n as f64));
        }
    }
}

/// One DER element: its tag and contents, and what follows it.
fn der(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, b) = b.split_first()?;
    let (&len, mut b) = b.split_first()?;
    let len = if len < 0x80 {
        usize::from(len)
    } else {
        let n = usize::from(len & 0x7f);
        if n == 0 || n > 4 || b.len() < n {
            return None;
        }
        let (l, rest) = b.split_at(n);
        b = rest;
        l.iter().fold(0usize, |a, &x| (a << 8) | usize::from(x))
    };
    (b.len() >= len).then(|| (tag, &b[..len], &b[len..]))
}

/// A certificate's `notAfter`, in seconds since the epoch (RFC 5280 section 4.1).
pub(crate) fn not_after(cert: &[u8]) -> Option<i64> {
    let (_, cert, _) = der(cert)?;
    let (_, tbs, _) = der(cert)?;
    let mut rest = tbs;
    // [0] version (optional), serialNumber, signature, issuer, then validity.
    let (tag, _, r) = der(rest)?;
    if tag == 0xa0 {
        rest = r;
    }
    for _ in 0..3 {
        rest = der(rest)?.2;
    }
    let (_, validity, _) = der(rest)?;
    let (_, _, after) = der(validity)?;
    let (tag, time, _) = der(after)?;
    asn1_time(tag, std::str::from_utf8(time).ok()?)
}

/// UTCTime (`YYMMDDHHMMSSZ`, 1950 to 2049) or GeneralizedTime (`YYYYMMDDHHMMSSZ`).
fn asn1_time(tag: u8, s: &str) -> Option<i64> {
    let digits = s.strip_suffix('Z')?;
    let (year, rest) = match (tag, digits.len()) {
        (0x17, 12) => {
            let yy: i64 = digits[..2].parse().ok()?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, &digits[2..])
        }
        (0x18, 14) => (digits[..4].parse().ok()?, &digits[4..]),
        _ => return None,
    };
    let n = |i: usize| rest.get(i..i + 2)?.parse::<i64>().ok();
    crate::clock::utc_to_unix(year, n(0)?, n(2)?, n(4)?, n(6)?, n(8)?)
}
