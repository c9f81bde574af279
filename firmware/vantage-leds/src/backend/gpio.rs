//! LEDs on Raspberry Pi GPIO pins, by BCM number, through rppal (`/dev/gpiomem`).
//!
//! rppal's repository is archived, but the crate works on the Pi 1 to 5; the pin access sits
//! behind [`OutputLine`] so the polarity logic is tested without a Pi, and a successor crate
//! (or the GPIO character device) can replace it without touching the rest.

use std::fmt;
use std::io;

use super::led::Led;
use crate::pattern::Pattern;

/// One output pin.
pub trait OutputLine: Send + fmt::Debug {
    fn write(&mut self, high: bool) -> io::Result<()>;
}

/// An LED on one pin; active-low LEDs light when the pin is pulled low (LED wired to 3V3).
#[derive(Debug)]
pub struct GpioLed<L: OutputLine> {
    label: String,
    line: L,
    active_low: bool,
}

impl<L: OutputLine> GpioLed<L> {
    pub fn new(label: impl Into<String>, line: L, active_low: bool) -> Self {
        Self {
            label: label.into(),
            line,
            active_low,
        }
    }
}

impl<L: OutputLine> Led for GpioLed<L> {
    fn label(&self) -> &str {
        &self.label
    }

    fn set(&mut self, on: bool) -> io::Result<()> {
        self.line.write(on != self.active_low)
    }

    /// A pin holds a level but cannot blink on its own: steady and off are kept, blinking
    /// patterns leave the LED dark. (Declare the LEDs with the `gpio-led` overlay and use the
    /// sysfs backend to have the kernel blink them.)
    fn persist(&mut self, pattern: Pattern) -> io::Result<bool> {
        let on = pattern == Pattern::Steady;
        self.set(on)?;
        Ok(matches!(pattern, Pattern::Steady | Pattern::Off))
    }
}

#[cfg(target_os = "linux")]
pub use rppal_line::RppalLine;

#[cfg(target_os = "linux")]
mod rppal_line {
    use std::io;

    use rppal::gpio::{Gpio, OutputPin};

    use super::{GpioLed, OutputLine};

    /// A BCM pin driven through rppal.
    #[derive(Debug)]
    pub struct RppalLine {
        pin: OutputPin,
    }

    impl RppalLine {
        /// Claims BCM pin `bcm` as an output, starting dark.
        pub fn open(bcm: u8, active_low: bool) -> io::Result<Self> {
            let gpio = Gpio::new().map_err(|e| io::Error::other(format!("GPIO: {e}")))?;
            let pin = gpio
                .get(bcm)
                .map_err(|e| io::Error::other(format!("GPIO pin {bcm}: {e}")))?;
            let mut pin = if active_low {
                pin.into_output_high()
            } else {
                pin.into_output_low()
            };
            // The level set last (the shutdown state) stays after exit instead of the pin
            // falling back to an input and the LED floating.
            pin.set_reset_on_drop(false);
            Ok(Self { pin })
        }
    }

    impl OutputLine for RppalLine {
        fn write(&mut self, high: bool) -> io::Result<()> {
            if high {
                self.pin.set_high();
            } else {
                self.pin.set_low();
            }
            Ok(())
        }
    }

    impl GpioLed<RppalLine> {
        pub fn open(label: impl Into<String>, bcm: u8, active_low: bool) -> io::Result<Self> {
            Ok(GpioLed::new(
                label,
                RppalLine::open(bcm, active_low)?,
                active_low,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Debug, Clone, Default)]
    struct FakeLine(Arc<Mutex<Vec<bool>>>);

    impl OutputLine for FakeLine {
        fn write(&mut self, high: bool) -> io::Result<()> {
            self.0.lock().unwrap().push(high);
            Ok(())
        }
    }

    #[test]
    fn active_high_and_low() {
        let line = FakeLine::default();
        let mut led = GpioLed::new("green", line.clone(), false);
        led.set(true).unwrap();
        led.set(false).unwrap();
        assert_eq!(*line.0.lock().unwrap(), [true, false]);

        let line = FakeLine::default();
        let mut led = GpioLed::new("red", line.clone(), true);
        led.set(true).unwrap();
        led.set(false).unwrap();
        assert_eq!(
            *line.0.lock().unwrap(),
            [false, true],
            "active-low: lit = pin low"
        );
    }

    #[test]
    fn persist_holds_levels_only() {
        let line = FakeLine::default();
        let mut led = GpioLed::new("red", line.clone(), true);
        assert!(led.persist(Pattern::Steady).unwrap());
        assert!(led.persist(Pattern::Off).unwrap());
        assert!(!led.persist(Pattern::SlowBlink).unwrap());
        // Steady = lit = low; off = high; a blink it cannot keep leaves it dark = high.
        assert_eq!(*line.0.lock().unwrap(), [false, true, true]);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn rppal_without_a_pi_fails_cleanly() {
        // No /dev/gpiomem (or not a Pi): an error that says GPIO, never a panic.
        if std::path::Path::new("/dev/gpiomem").exists() {
            println!("skipped: this machine has /dev/gpiomem");
            return;
        }
        let e = GpioLed::open("green", 17, false).unwrap_err();
        assert!(e.to_string().contains("GPIO"), "{e}");
    }
}
