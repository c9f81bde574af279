//! The series dictionary: each (target, probe, labels) gets a small id, stored once.

use std::collections::BTreeMap;
use std::sync::Arc;

use vantage_core::{ModuleId, ProbeKind};

use crate::codec::{DecodeError, Reader, put_varint};

/// A target's user labels.
pub type Labels = BTreeMap<String, String>;

/// What a stored sample belongs to: the target, the probe and the user labels it had then.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SeriesKey {
    pub target: Arc<str>,
    pub probe: ProbeKind,
    pub labels: Arc<Labels>,
}

fn probe_code(p: ProbeKind) -> u8 {
    match p {
        ProbeKind::Module(m) => m.module().store_code(),
        _ => 0,
    }
}

fn probe_of(c: u8) -> Option<ProbeKind> {
    ModuleId::by_store_code(c).map(ProbeKind::Module)
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn get_str(r: &mut Reader<'_>) -> Result<String, DecodeError> {
    let n = r.varint()? as usize;
    let b = r.bytes(n)?;
    String::from_utf8(b.to_vec()).map_err(|_| DecodeError::Checksum)
}

impl SeriesKey {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![probe_code(self.probe)];
        put_str(&mut out, &self.target);
        put_varint(&mut out, self.labels.len() as u64);
        for (k, v) in self.labels.iter() {
            put_str(&mut out, k);
            put_str(&mut out, v);
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes an entry: `Malformed` for an intact entry of a probe this build does not know
    /// (a newer build's), another error for damage.
    pub fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        if b.len() < 5 {
            return Err(DecodeError::Truncated);
        }
        let (body, crc) = b.split_at(b.len() - 4);
        if crc32fast::hash(body).to_le_bytes() != crc {
            return Err(DecodeError::Checksum);
        }
        let mut r = Reader::new(body);
        // An intact entry of a probe this build does not know: a newer build's series.
        let probe = probe_of(r.u8()?).ok_or(DecodeError::Malformed)?;
        let target: Arc<str> = get_str(&mut r)?.into();
        let n = r.varint()? as usize;
        let mut labels = Labels::new();
        for _ in 0..n.min(1024) {
            let k = get_str(&mut r)?;
            let v = get_str(&mut r)?;
            labels.insert(k, v);
        }
        Ok(Self {
            target,
            probe,
            labels: Arc::new(labels),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let k = SeriesKey {
            target: "gw".into(),
            probe: ProbeKind::PING,
            labels: Arc::new(Labels::from([("site".into(), "office ü".into())])),
        };
        assert_eq!(SeriesKey::decode(&k.encode()).unwrap(), k);
        let mut bad = k.encode();
        bad[2] ^= 1;
        assert!(SeriesKey::decode(&bad).is_err());
    }

    /// The DNS kind keeps the code it had built in: series written then are DNS's now.
    #[test]
    fn dns_series_keep_their_code() {
        let k = SeriesKey {
            target: "resolver".into(),
            probe: ProbeKind::DNS,
            labels: Arc::new(Labels::new()),
        };
        let b = k.encode();
        assert_eq!(b[0], 2);
        assert_eq!(SeriesKey::decode(&b).unwrap(), k);
        assert_eq!(probe_of(2), Some(ProbeKind::DNS));
    }
}
