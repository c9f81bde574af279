//! An HTTP round as the store keeps it (µs resolution), and the gauges it shows.
//!
//! ```text
//! version u8 = 1
//! flags   u8   bit0 status, bit1 content length, bit2 certificate expiry, bit3 TLS version
//! redirects u16 LE, then 5 × phase µs u32 LE (resolve, connect, tls, processing, transfer)
//! [bit0] status u16 LE,  [bit1] content length u64 LE,  [bit2] not_after s i64 LE,
//! [bit3] TLS version as on the wire u16 LE (0x0304 for TLS 1.3)
//! ```

use std::time::Duration;

use super::super::tcp::{CERT_NOT_AFTER, TLS_VERSION, tls_version_code, tls_version_name};
use super::{CONTENT_LENGTH, HttpReport, PHASE, PHASES, REDIRECTS, STATUS};
use crate::series::{Point, secs};

const VERSION: u8 = 1;
const F_STATUS: u8 = 1;
const F_LENGTH: u8 = 1 << 1;
const F_CERT: u8 = 1 << 2;
const F_TLS_VERSION: u8 = 1 << 3;
const F_KNOWN: u8 = (1 << 4) - 1;

/// The figures of one stored HTTP round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct StoredHttp {
    pub redirects: u16,
    pub phases_us: [u32; 5],
    pub status: Option<u16>,
    pub content_length: Option<u64>,
    pub not_after: Option<i64>,
    /// The TLS version's wire code.
    pub tls_version: Option<u16>,
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// Takes `N` bytes off the front of `b`.
fn take<const N: usize>(b: &mut &[u8]) -> Option<[u8; N]> {
    let (head, rest) = b.split_first_chunk::<N>()?;
    *b = rest;
    Some(*head)
}

impl StoredHttp {
    pub fn from_report(r: &HttpReport) -> Self {
        Self {
            redirects: u16::try_from(r.redirects).unwrap_or(u16::MAX),
            phases_us: r.phases.map(micros),
            status: r.status,
            content_length: r.content_length,
            not_after: r.cert_not_after,
            tls_version: r.tls_version.as_deref().and_then(tls_version_code),
        }
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut flags = 0;
        for (set, bit) in [
            (self.status.is_some(), F_STATUS),
            (self.content_length.is_some(), F_LENGTH),
            (self.not_after.is_some(), F_CERT),
            (self.tls_version.is_some(), F_TLS_VERSION),
        ] {
            if set {
                flags |= bit;
            }
        }
        out.extend([VERSION, flags]);
        out.extend(self.redirects.to_le_bytes());
        for p in self.phases_us {
            out.extend(p.to_le_bytes());
        }
        if let Some(s) = self.status {
            out.extend(s.to_le_bytes());
        }
        if let Some(n) = self.content_length {
            out.extend(n.to_le_bytes());
        }
        if let Some(n) = self.not_after {
            out.extend(n.to_le_bytes());
        }
        if let Some(v) = self.tls_version {
            out.extend(v.to_le_bytes());
        }
    }

    /// `None` for another version, unknown flags or bytes that do not add up.
    pub fn decode(mut b: &[u8]) -> Option<Self> {
        let [version, flags] = take(&mut b)?;
        if version != VERSION || flags & !F_KNOWN != 0 {
            return None;
        }
        let mut s = Self {
            redirects: u16::from_le_bytes(take(&mut b)?),
            ..Self::default()
        };
        for p in &mut s.phases_us {
            *p = u32::from_le_bytes(take(&mut b)?);
        }
        if flags & F_STATUS != 0 {
            s.status = Some(u16::from_le_bytes(take(&mut b)?));
        }
        if flags & F_LENGTH != 0 {
            s.content_length = Some(u64::from_le_bytes(take(&mut b)?));
        }
        if flags & F_CERT != 0 {
            s.not_after = Some(i64::from_le_bytes(take(&mut b)?));
        }
        if flags & F_TLS_VERSION != 0 {
            s.tls_version = Some(u16::from_le_bytes(take(&mut b)?));
        }
        b.is_empty().then_some(s)
    }

    /// The round's gauges: every phase always, the figures a round did not have absent.
    pub fn points(&self, out: &mut Vec<Point>) {
        for (phase, us) in PHASES.iter().zip(self.phases_us) {
            out.push(Point::labelled(&PHASE, *phase, secs(u64::from(us))));
        }
        out.push(Point::new(&REDIRECTS, f64::from(self.redirects)));
        if let Some(s) = self.status {
            out.push(Point::new(&STATUS, f64::from(s)));
        }
        if let Some(n) = self.content_length {
            out.push(Point::new(&CONTENT_LENGTH, n as f64));
        }
        if let Some(n) = self.not_after {
            out.push(Point::new(&CERT_NOT_AFTER, n as f64));
        }
        if let Some(name) = self.tls_version.and_then(tls_version_name) {
            out.push(Point::labelled(&TLS_VERSION, name, 1.0));
        }
    }
}

/// The mark of a round without a response (status codes are 100 to 999).
pub(crate) const NO_STATUS: u32 = 0;

impl StoredHttp {
    /// The round's named values (the store's query answers): every phase, their total, the
    /// redirects, and the status and certificate expiry when the round had them.
    pub fn values(&self, out: &mut Vec<(&'static str, f64)>) {
        const NAMES: [&str; 5] = [
            "resolve_seconds",
            "connect_seconds",
            "tls_seconds",
            "processing_seconds",
            "transfer_seconds",
        ];
        for (name, us) in NAMES.iter().zip(self.phases_us) {
            out.push((name, secs(u64::from(us))));
        }
        out.push(("total_seconds", secs(self.total_us())));
        out.push(("redirects", f64::from(self.redirects)));
        if let Some(s) = self.status {
            out.push(("status_code", f64::from(s)));
        }
        if let Some(n) = self.not_after {
            out.push(("cert_not_after_seconds", n as f64));
        }
    }

    /// The phases together, µs.
    pub fn total_us(&self) -> u64 {
        self.phases_us.iter().map(|&p| u64::from(p)).sum()
    }

    /// What a range keeps: the total time of a round with a response, and its status.
    pub fn mark(&self) -> u32 {
        self.status.map_or(NO_STATUS, u32::from)
    }
}
