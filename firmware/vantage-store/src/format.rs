//! The store's versioned on-disk formats and the rule that keeps an update and a rollback from
//! losing data (`docs/STORE.md`, "Formats across releases").
//!
//! The rule, "read in N, write in N+1": a format version is written only by a release whose
//! predecessor already reads it. An update (N to N+1) then reads everything N wrote, and a
//! rollback (N+1 back to N) reads everything N+1 wrote. Each [`Format`] says what this build
//! writes and reads and what the previous release (the build a rollback returns to) writes and
//! reads; the test `every_format_is_read_by_the_release_before_the_one_that_writes_it` fails
//! when the written version runs ahead of what the previous release reads.
//!
//! Data that is intact but newer than this build reads (a rollback by more than one release,
//! or a format changed against the rule) is kept on disk untouched and skipped, never deleted,
//! quarantined or rewritten: blocks are counted in `StoreStats::unreadable_samples`, a newer
//! engine directory leaves the store closed (`BackendError::Newer`) instead of moved aside.
//!
//! Layouts without a version byte (index entries, cursors, the floor and the other 8-byte meta
//! values, the head file, series entries, the series log's framing) are frozen: a change to
//! them needs a new key or file, which older builds ignore.

/// One versioned format: what this build writes and reads, and what the previous release does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Format {
    pub name: &'static str,
    /// The version this build writes.
    pub writes: u8,
    /// The oldest version this build reads.
    pub reads_oldest: u8,
    /// The newest version this build reads.
    pub reads_newest: u8,
    /// The newest version the previous release reads: the most this build may write.
    /// Raise it only once a release that reads the new version has shipped.
    pub previous_reads_newest: u8,
    /// The version the previous release writes: this build must read it (an update).
    pub previous_writes: u8,
}

impl Format {
    /// Whether this build reads `version`.
    pub const fn reads(&self, version: u8) -> bool {
        version >= self.reads_oldest && version <= self.reads_newest
    }

    /// Whether `version` is newer than this build reads (a newer build wrote it).
    pub const fn is_newer(&self, version: u8) -> bool {
        version > self.reads_newest
    }

    /// The rule's failures for this format, as sentences (empty when it holds).
    pub fn rule_violations(&self) -> Vec<String> {
        let mut out = Vec::new();
        let name = self.name;
        if self.writes > self.previous_reads_newest {
            out.push(format!(
                "{name}: this build writes version {} but the previous release reads only up to {}: \
                 a rollback could not read it (ship a release that reads it first)",
                self.writes, self.previous_reads_newest
            ));
        }
        if !self.reads(self.writes) {
            out.push(format!(
                "{name}: this build writes version {} but does not read it",
                self.writes
            ));
        }
        if !self.reads(self.previous_writes) {
            out.push(format!(
                "{name}: the previous release writes version {} and this build does not read it: \
                 an update could not read the store",
                self.previous_writes
            ));
        }
        out
    }
}

/// Blocks of rounds (`codec.rs`): version 4, reading 1 to 4.
pub const BLOCK: Format = Format {
    name: "block",
    writes: 4,
    reads_oldest: 1,
    reads_newest: 4,
    previous_reads_newest: 4,
    previous_writes: 4,
};

/// Per-minute aggregates (`rollup.rs`).
pub const AGGREGATE: Format = Format {
    name: "aggregate",
    writes: 1,
    reads_oldest: 1,
    reads_newest: 1,
    previous_reads_newest: 1,
    previous_writes: 1,
};

/// The fjall engine's own directory (its `version` file: `FJL` and this byte). fjall 3 reads
/// and writes only its format 3: an upgrade of fjall that changes it breaks a rollback, so the
/// engine's format is pinned (`backend/fjall.rs` checks the file before fjall opens it).
pub const ENGINE_FJALL: Format = Format {
    name: "fjall engine",
    writes: 3,
    reads_oldest: 3,
    reads_newest: 3,
    previous_reads_newest: 3,
    previous_writes: 3,
};

/// Every versioned format the store writes.
pub const FORMATS: [Format; 3] = [BLOCK, AGGREGATE, ENGINE_FJALL];

#[cfg(test)]
mod tests {
    use super::*;

    /// The guard: fails when someone bumps a written version before the release a rollback
    /// returns to reads it, or drops reading what the previous release writes.
    #[test]
    fn every_format_is_read_by_the_release_before_the_one_that_writes_it() {
        let violations: Vec<String> = FORMATS.iter().flat_map(Format::rule_violations).collect();
        assert!(violations.is_empty(), "{}", violations.join("\n"));
    }

    #[test]
    fn the_rule_catches_a_version_written_too_early_and_one_no_longer_read() {
        let today = Format {
            name: "test",
            writes: 4,
            reads_oldest: 1,
            reads_newest: 4,
            previous_reads_newest: 4,
            previous_writes: 4,
        };
        assert!(today.rule_violations().is_empty());
        let early = Format {
            writes: 5,
            reads_newest: 5,
            ..today
        };
        assert_eq!(early.rule_violations().len(), 1, "{early:?}");
        let unread = Format { writes: 5, ..today };
        assert_eq!(unread.rule_violations().len(), 2, "{unread:?}");
        let forgot = Format {
            reads_oldest: 5,
            ..early
        };
        assert_eq!(forgot.rule_violations().len(), 2, "{forgot:?}");
        assert!(today.is_newer(5) && !today.is_newer(4) && today.reads(1) && !today.reads(0));
    }
}
