//! LEDs that exist only in the log, for development on a machine without any.

use std::io;

use super::led::Led;
use crate::pattern::Pattern;

#[derive(Debug)]
pub struct LogLed {
    label: String,
}

impl LogLed {
    pub fn new(label: impl Into<String>) -> Self {
        Self {
            label: label.into(),
        }
    }
}

impl Led for LogLed {
    fn label(&self) -> &str {
        &self.label
    }

    fn set(&mut self, on: bool) -> io::Result<()> {
        tracing::trace!(led = %self.label, on, "led");
        Ok(())
    }

    fn pattern_changed(&mut self, pattern: Pattern) {
        tracing::info!(led = %self.label, %pattern, "led pattern");
    }

    fn persist(&mut self, pattern: Pattern) -> io::Result<bool> {
        tracing::info!(led = %self.label, %pattern, "led left showing");
        Ok(true)
    }
}
