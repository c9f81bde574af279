//! What an LED backend is: the [`Led`] trait every backend implements.

use std::fmt;
use std::io;

use crate::pattern::Pattern;

/// One physical (or logged) LED. The renderer thread is the only caller while the daemon runs.
pub trait Led: Send + fmt::Debug {
    /// A name for logs and the web page.
    fn label(&self) -> &str;
    /// Lights or darkens the LED now; the renderer calls it only on a change.
    fn set(&mut self, on: bool) -> io::Result<()>;
    /// The pattern changed (the log backend reports it; others need not care).
    fn pattern_changed(&mut self, _pattern: Pattern) {}
    /// Leaves the LED showing `pattern` after this process stops looking after it, where the
    /// hardware can (the kernel's triggers). Returns whether the pattern is exactly kept;
    /// otherwise the LED is left dark, or steady for [`Pattern::Steady`].
    fn persist(&mut self, pattern: Pattern) -> io::Result<bool>;
}
