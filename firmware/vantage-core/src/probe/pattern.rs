//! A regex setting of a probe (DNS answer patterns, a TCP `expect`, HTTP body patterns):
//! compiled once when the options are read, not every round, and compared, hashed and shown by
//! its text, so options stay `Eq + Hash` and serialise as written.

use std::fmt;
use std::hash::{Hash, Hasher};

use serde::Serialize;

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
