//! A DNS round's gauges, and the round as the store keeps it (µs resolution, without the
//! records): the DNS probe module's series and store encoding.
//!
//! The module's own encoding of a round:
//!
//! ```text
//! version u8 = 1
//! dflags  varint  bit0 answered, bit1 authority/additional present, bit2 lookup,
//!                 bit3 request phase, bit4 validation failed, bit5 truncated retry,
//!                 bit6 resolve phase, bit7 connect phase, bit8 tls phase, bit9 stray datagrams
//! [answered] rcode varint, answers varint, [bit1] authority varint, additional varint
//! [lookup] lookup µs varint, [request] zigzag(lookup - request) µs (lookup 0 without one)
//! [resolve] µs, [connect] µs, [tls] µs, [strays] count (varints)
//! ```
//!
//! The flags are those of the store's built-in DNS figures (blocks of versions 2 to 4), which
//! the store still reads into [`StoredDns`].

use std::time::Duration;

use super::super::tcp::{put_varint, varint};
use super::options::rcode_name;
use super::report::{DnsPhases, DnsReport};
use crate::series::{CounterDef, Gauge, HistogramDef, Point, flag, gauge, labelled, secs};

/// The phases of a query, in the order they happen: `vantage_dns_phase_seconds{phase}`.
pub const PHASES: [&str; 4] = ["resolve", "connect", "tls", "request"];

pub static PHASE: Gauge = labelled(
    "vantage_dns_phase_seconds",
    "phase",
    "Time of each phase of the last query: resolve (the server's name), connect, tls, request.",
);
pub static RCODE: Gauge = labelled(
    "vantage_dns_rcode",
    "rcode",
    "1 for the rcode of the last answer, 0 for the common rcodes (all 0 without an answer).",
);
pub static ANSWER_RECORDS: Gauge = gauge(
    "vantage_dns_answer_records",
    "Records in the answer section of the last answer.",
);
pub static AUTHORITY_RECORDS: Gauge = gauge(
    "vantage_dns_authority_records",
    "Records in the authority section of the last answer.",
);
pub static ADDITIONAL_RECORDS: Gauge = gauge(
    "vantage_dns_additional_records",
    "Records in the additional section of the last answer (EDNS OPT included).",
);
pub static LOOKUP: Gauge = gauge(
    "vantage_dns_round_lookup_seconds",
    "Time from the start of the last round to the answer (absent without an answer).",
);
pub static VALIDATION_FAILED: Gauge = gauge(
    "vantage_dns_round_validation_failed",
    "1 if the last answer had an expected rcode but failed the configured checks.",
);
pub static TRUNCATED_RETRY: Gauge = gauge(
    "vantage_dns_round_truncated_retry",
    "1 if the last round's UDP answer was truncated and asked again over TCP.",
);
pub static STRAY_DATAGRAMS: Gauge = gauge(
    "vantage_dns_round_stray_datagrams",
    "Datagrams the last round ignored because they were not the answer.",
);

/// Every per-round gauge of a DNS round, besides the ones every kind has.
pub static GAUGES: [&Gauge; 9] = [
    &PHASE,
    &RCODE,
    &ANSWER_RECORDS,
    &AUTHORITY_RECORDS,
    &ADDITIONAL_RECORDS,
    &LOOKUP,
    &VALIDATION_FAILED,
    &TRUNCATED_RETRY,
    &STRAY_DATAGRAMS,
];

/// Lookup time of every round that got an answer: 100 µs doubling to ~26 s.
pub const LOOKUP_HISTOGRAM: HistogramDef = HistogramDef {
    name: "vantage_dns_lookup_seconds",
    help: "Time from the start of a round to the answer, for rounds that got one.",
    start: 0.0001,
    factor: 2.0,
    count: 19,
};

/// The counters the daemon keeps of DNS rounds, in the order [`count`] adds to them.
pub const COUNTERS: [CounterDef; 3] = [
    CounterDef {
        name: "vantage_dns_validation_failures_total",
        help: "Answers with an expected rcode whose records failed the configured checks.",
    },
    CounterDef {
        name: "vantage_dns_truncated_retries_total",
        help: "Truncated UDP answers retried over TCP.",
    },
    CounterDef {
        name: "vantage_dns_stray_datagrams_total",
        help: "Datagrams ignored because they were not the answer (wrong ID or question, malformed).",
    },
];

/// What a round adds to [`LOOKUP_HISTOGRAM`] (index 0).
pub fn observe(r: &DnsReport, add: &mut dyn FnMut(usize, f64)) {
    if let Some(l) = r.lookup {
        add(0, l.as_secs_f64());
    }
}

/// What a round adds to each of [`COUNTERS`], by index.
pub fn count(r: &DnsReport, add: &mut dyn FnMut(usize, u64)) {
    add(0, u64::from(!r.validation_failures.is_empty()));
    add(1, u64::from(r.truncated_retry));
    add(2, u64::from(r.stray_datagrams));
}

/// Rcodes whose `vantage_dns_rcode` series every DNS round sets (NOERROR, SERVFAIL, NXDOMAIN,
/// REFUSED), so an alert on SERVFAIL has a series before the first one happens.
pub const COMMON_RCODES: [u16; 4] = [0, 2, 3, 5];

/// The mark of a round without an answer, where a range of rounds keeps each round's rcode
/// and its changes.
pub const NO_RCODE: u32 = 65_535;

/// A mark as the page shows it: the rcode's mnemonic, "no answer" for [`NO_RCODE`].
pub fn mark_name(mark: u32) -> String {
    match u16::try_from(mark) {
        Ok(r) if mark != NO_RCODE => rcode_name(r),
        _ => "no answer".into(),
    }
}

const VERSION: u8 = 1;

// DNS flags, most common first so a usual round's flags fit one varint byte.
pub(crate) const D_ANSWERED: u64 = 1;
pub(crate) const D_SECTIONS: u64 = 1 << 1;
pub(crate) const D_LOOKUP: u64 = 1 << 2;
pub(crate) const D_REQUEST: u64 = 1 << 3;
pub(crate) const D_VALIDATION_FAILED: u64 = 1 << 4;
pub(crate) const D_TRUNCATED_RETRY: u64 = 1 << 5;
pub(crate) const D_RESOLVE: u64 = 1 << 6;
pub(crate) const D_CONNECT: u64 = 1 << 7;
pub(crate) const D_TLS: u64 = 1 << 8;
pub(crate) const D_STRAYS: u64 = 1 << 9;
pub(crate) const D_KNOWN: u64 = (1 << 10) - 1;

/// DNS figures of one stored round: what `/metrics` shows of a query, without the records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoredDns {
    /// Response code of the answer (extended rcode included); `None` without an answer.
    pub rcode: Option<u16>,
    /// Records in the answer, authority and additional sections (0 without an answer).
    pub answers: u32,
    pub authority: u32,
    pub additional: u32,
    /// Time from the start of the round to the answer, µs.
    pub lookup_us: Option<u64>,
    /// The phases of the round, µs; `None` for a phase that did not happen.
    pub resolve_us: Option<u64>,
    pub connect_us: Option<u64>,
    pub tls_us: Option<u64>,
    pub request_us: Option<u64>,
    /// The answer failed the configured checks (contains, match, minimum count).
    pub validation_failed: bool,
    /// The UDP answer came back truncated and the query was repeated over TCP.
    pub truncated_retry: bool,
    pub stray_datagrams: u32,
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

impl StoredDns {
    pub fn from_report(d: &DnsReport) -> Self {
        let answered = d.rcode.is_some();
        Self {
            rcode: d.rcode,
            answers: if answered {
                u32::try_from(d.answers.len()).unwrap_or(u32::MAX)
            } else {
                0
            },
            authority: if answered { d.authority_records } else { 0 },
            additional: if answered { d.additional_records } else { 0 },
            lookup_us: d.lookup.map(micros),
            resolve_us: d.phases.resolve.map(micros),
            connect_us: d.phases.connect.map(micros),
            tls_us: d.phases.tls.map(micros),
            request_us: d.phases.request.map(micros),
            validation_failed: !d.validation_failures.is_empty(),
            truncated_retry: d.truncated_retry,
            stray_datagrams: d.stray_datagrams,
        }
    }

    /// The phase names of `/metrics` (`vantage_dns_phase_seconds{phase}`) with their times.
    pub fn phases(&self) -> [(&'static str, Option<u64>); 4] {
        let [resolve, connect, tls, request] = PHASES;
        [
            (resolve, self.resolve_us),
            (connect, self.connect_us),
            (tls, self.tls_us),
            (request, self.request_us),
        ]
    }

    /// The flags of these figures, in the module's encoding and the store's built-in one.
    pub fn flags(&self) -> u64 {
        let mut f = 0;
        if self.rcode.is_some() {
            f |= D_ANSWERED;
            if self.authority != 0 || self.additional != 0 {
                f |= D_SECTIONS;
            }
        }
        for (set, bit) in [
            (self.lookup_us.is_some(), D_LOOKUP),
            (self.request_us.is_some(), D_REQUEST),
            (self.validation_failed, D_VALIDATION_FAILED),
            (self.truncated_retry, D_TRUNCATED_RETRY),
            (self.resolve_us.is_some(), D_RESOLVE),
            (self.connect_us.is_some(), D_CONNECT),
            (self.tls_us.is_some(), D_TLS),
            (self.stray_datagrams != 0, D_STRAYS),
        ] {
            if set {
                f |= bit;
            }
        }
        f
    }

    /// The module's encoding of these figures (see the module doc).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let f = self.flags();
        out.push(VERSION);
        put_varint(out, f);
        if let Some(rcode) = self.rcode {
            put_varint(out, u64::from(rcode));
            put_varint(out, u64::from(self.answers));
            if f & D_SECTIONS != 0 {
                put_varint(out, u64::from(self.authority));
                put_varint(out, u64::from(self.additional));
            }
        }
        if let Some(l) = self.lookup_us {
            put_varint(out, l);
        }
        if let Some(r) = self.request_us {
            let base = self.lookup_us.unwrap_or(0);
            put_varint(out, zigzag((base as i64).wrapping_sub(r as i64)));
        }
        for p in [self.resolve_us, self.connect_us, self.tls_us]
            .into_iter()
            .flatten()
        {
            put_varint(out, p);
        }
        if self.stray_datagrams != 0 {
            put_varint(out, u64::from(self.stray_datagrams));
        }
    }

    /// The figures of [`Self::encode`]'s bytes; `None` for bytes of another version, with
    /// unknown flags, cut short or with bytes left over.
    pub fn decode(mut b: &[u8]) -> Option<Self> {
        let (&version, rest) = b.split_first()?;
        b = rest;
        if version != VERSION {
            return None;
        }
        let b = &mut b;
        let f = varint(b)?;
        if f & !D_KNOWN != 0 {
            return None;
        }
        let u32v = |b: &mut &[u8]| varint(b).and_then(|v| u32::try_from(v).ok());
        let mut d = Self {
            validation_failed: f & D_VALIDATION_FAILED != 0,
            truncated_retry: f & D_TRUNCATED_RETRY != 0,
            ..Self::default()
        };
        if f & D_ANSWERED != 0 {
            d.rcode = Some(u16::try_from(varint(b)?).ok()?);
            d.answers = u32v(b)?;
            if f & D_SECTIONS != 0 {
                d.authority = u32v(b)?;
                d.additional = u32v(b)?;
            }
        }
        let mut opt = |bit: u64| -> Option<Option<u64>> {
            if f & bit != 0 {
                varint(b).map(Some)
            } else {
                Some(None)
            }
        };
        d.lookup_us = opt(D_LOOKUP)?;
        let request = opt(D_REQUEST)?;
        d.request_us =
            request.map(|z| (d.lookup_us.unwrap_or(0) as i64).wrapping_sub(unzigzag(z)) as u64);
        d.resolve_us = opt(D_RESOLVE)?;
        d.connect_us = opt(D_CONNECT)?;
        d.tls_us = opt(D_TLS)?;
        if f & D_STRAYS != 0 {
            d.stray_datagrams = u32v(b)?;
        }
        b.is_empty().then_some(d)
    }

    /// The round's named values, as the store's other rounds give theirs: the answer's
    /// figures with an answer, the lookup and each phase that happened.
    pub fn values(&self, v: &mut Vec<(&'static str, f64)>) {
        if let Some(rcode) = self.rcode {
            v.push(("rcode", f64::from(rcode)));
            v.push(("answer_records", f64::from(self.answers)));
            v.push(("authority_records", f64::from(self.authority)));
            v.push(("additional_records", f64::from(self.additional)));
            v.push(("validation_failed", flag(self.validation_failed)));
            v.push(("truncated_retry", flag(self.truncated_retry)));
        }
        if let Some(l) = self.lookup_us {
            v.push(("lookup_seconds", secs(l)));
        }
        for (name, value) in [
            ("resolve_seconds", self.resolve_us),
            ("connect_seconds", self.connect_us),
            ("tls_seconds", self.tls_us),
            ("request_seconds", self.request_us),
        ] {
            if let Some(p) = value {
                v.push((name, secs(p)));
            }
        }
    }

    /// What a range of rounds keeps of each round's outcome: the rcode, [`NO_RCODE`] without
    /// an answer.
    pub fn mark(&self) -> u32 {
        self.rcode.map_or(NO_RCODE, u32::from)
    }

    /// The gauges a round shows: every phase (0 when it did not happen), the common rcodes and
    /// the round's own (1 for it), the section counts (0 without an answer); the lookup only
    /// with an answer.
    pub fn points(&self, v: &mut Vec<Point>) {
        for (phase, us) in self.phases() {
            v.push(Point::labelled(&PHASE, phase, us.map_or(0.0, secs)));
        }
        let mut rcodes: Vec<u16> = COMMON_RCODES.to_vec();
        if let Some(r) = self.rcode
            && !rcodes.contains(&r)
        {
            rcodes.push(r);
        }
        for r in rcodes {
            v.push(Point::labelled(
                &RCODE,
                rcode_name(r),
                flag(self.rcode == Some(r)),
            ));
        }
        v.push(Point::new(&ANSWER_RECORDS, f64::from(self.answers)));
        v.push(Point::new(&AUTHORITY_RECORDS, f64::from(self.authority)));
        v.push(Point::new(&ADDITIONAL_RECORDS, f64::from(self.additional)));
        if let Some(l) = self.lookup_us {
            v.push(Point::new(&LOOKUP, secs(l)));
        }
        v.push(Point::new(&VALIDATION_FAILED, flag(self.validation_failed)));
        v.push(Point::new(&TRUNCATED_RETRY, flag(self.truncated_retry)));
        v.push(Point::new(
            &STRAY_DATAGRAMS,
            f64::from(self.stray_datagrams),
        ));
    }
}

/// The points before the first round: every series that does not depend on one, at 0.
pub fn initial_points(v: &mut Vec<Point>) {
    for phase in DnsPhases::NAMES {
        v.push(Point::labelled(&PHASE, phase, 0.0));
    }
    for r in COMMON_RCODES {
        v.push(Point::labelled(&RCODE, rcode_name(r), 0.0));
    }
    for g in [
        &ANSWER_RECORDS,
        &AUTHORITY_RECORDS,
        &ADDITIONAL_RECORDS,
        &VALIDATION_FAILED,
        &TRUNCATED_RETRY,
        &STRAY_DATAGRAMS,
    ] {
        v.push(Point::new(g, 0.0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usual() -> StoredDns {
        StoredDns {
            rcode: Some(0),
            answers: 2,
            additional: 1,
            lookup_us: Some(19_800),
            request_us: Some(19_500),
            ..StoredDns::default()
        }
    }

    #[test]
    fn the_module_encoding_round_trips_every_field() {
        let every = StoredDns {
            rcode: Some(3),
            answers: 0,
            authority: 1,
            additional: 1,
            lookup_us: Some(80_000),
            resolve_us: Some(1_000),
            connect_us: Some(2_000),
            tls_us: Some(30_000),
            request_us: Some(47_000),
            validation_failed: true,
            truncated_retry: true,
            stray_datagrams: 4,
        };
        let no_answer = StoredDns {
            request_us: Some(5_000),
            ..StoredDns::default()
        };
        for d in [usual(), every, no_answer, StoredDns::default()] {
            let mut b = Vec::new();
            d.encode(&mut b);
            assert_eq!(b[0], VERSION);
            assert_eq!(StoredDns::decode(&b), Some(d), "{b:?}");
        }
        let mut b = Vec::new();
        usual().encode(&mut b);
        // version, flags, rcode, answers, authority, additional, lookup (3 bytes), request
        // delta (2 bytes).
        assert_eq!(b.len(), 11, "{b:?}");
    }

    #[test]
    fn values_and_marks_of_a_round_with_and_without_an_answer() {
        let mut v = Vec::new();
        usual().values(&mut v);
        assert!(v.contains(&("lookup_seconds", 0.0198)), "{v:?}");
        assert!(v.contains(&("request_seconds", 0.0195)), "{v:?}");
        assert!(v.contains(&("rcode", 0.0)), "{v:?}");
        assert_eq!(usual().mark(), 0);
        let mut none = Vec::new();
        StoredDns::default().values(&mut none);
        assert!(none.is_empty(), "{none:?}");
        assert_eq!(StoredDns::default().mark(), NO_RCODE);
    }

    #[test]
    fn damaged_bytes_decode_to_nothing() {
        let mut b = Vec::new();
        usual().encode(&mut b);
        assert_eq!(StoredDns::decode(&b[..b.len() - 1]), None);
        let mut longer = b.clone();
        longer.push(0);
        assert_eq!(StoredDns::decode(&longer), None);
        let mut version = b.clone();
        version[0] = 2;
        assert_eq!(StoredDns::decode(&version), None);
        assert_eq!(StoredDns::decode(&[VERSION, 0x80, 0x10]), None);
        assert_eq!(StoredDns::decode(&[]), None);
    }

    #[test]
    fn a_round_shows_every_phase_and_the_common_rcodes() {
        let mut v = Vec::new();
        StoredDns {
            rcode: Some(9),
            ..usual()
        }
        .points(&mut v);
        let rcodes: Vec<_> = v
            .iter()
            .filter(|p| p.gauge == &RCODE)
            .map(|p| (p.label_value.clone().unwrap_or_default(), p.value))
            .collect();
        assert_eq!(rcodes.len(), 5);
        assert!(
            rcodes.iter().any(|(n, v)| n == "NOTAUTH" && *v == 1.0),
            "{rcodes:?}"
        );
        assert_eq!(v.iter().filter(|p| p.gauge == &PHASE).count(), 4);
        let mut initial = Vec::new();
        initial_points(&mut initial);
        assert!(initial.iter().all(|p| p.value == 0.0));
        assert!(!initial.iter().any(|p| p.gauge == &LOOKUP));
    }
}
