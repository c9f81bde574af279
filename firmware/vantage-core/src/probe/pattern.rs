//! A regex setting of a probe (DNS answer patterns, a TCP `expect`, HTTP body patterns):
//! compiled once when the options are read, not every round, and compared, hashed and shown by
//! its text, so options stay `Eq + Hash` and serialise as written.

use std::fmt;
use std::hash::{Hash, Hasher};

use serde::Serialize;
use toml::Spanned;

use crate::config::check::Check;

/// A compiled regex with its text.
#[derive(Clone)]
pub struct Pattern(pub regex::Regex);

impl Pattern {
    /// The most a pattern may compile to: a hostile setting cannot take more memory.
    pub const SIZE_LIMIT: usize = 1 << 20;

    /// Compiles `text` within [`Pattern::SIZE_LIMIT`].
    pub fn new(text: &str) -> Result<Self, regex::Error> {
        regex::RegexBuilder::new(text)
            .size_limit(Self::SIZE_LIMIT)
            .build()
            .map(Self)
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    pub fn is_match(&self, haystack: &str) -> bool {
        self.0.is_match(haystack)
    }
}

/// A pattern setting as written: at most `max_len` bytes, and it compiles; otherwise the
/// problem is recorded at its place and there is no pattern.
pub(crate) fn setting(
    c: &mut Check<'_, '_>,
    v: Option<&Spanned<String>>,
    field: &str,
    max_len: usize,
) -> Option<Pattern> {
    let v = v?;
    let s = v.get_ref();
    let compiled = if s.len() > max_len {
        Err(format!("is {} bytes long; at most {max_len}", s.len()))
    } else {
        Pattern::new(s).map_err(|e| format!("is not a valid regex: {e}"))
    };
    compiled.map_err(|msg| c.err(v.span(), field, msg)).ok()
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Pattern {}

impl Hash for Pattern {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl Serialize for Pattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pattern_is_its_text_and_bounded() {
        let p = Pattern::new("^OK ").unwrap();
        assert!(p.is_match("OK ready") && !p.is_match("NOK"));
        assert_eq!(p, Pattern::new("^OK ").unwrap());
        assert_ne!(p, Pattern::new("^OK").unwrap());
        assert_eq!(format!("{p:?}"), "\"^OK \"");
        assert_eq!(serde_json::to_string(&p).unwrap(), "\"^OK \"");
        assert!(Pattern::new("(").is_err());
        // A repetition that compiles to more than the limit is refused, not built.
        assert!(Pattern::new(r"\w{1000}{1000}").is_err());
    }
}
