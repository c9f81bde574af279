//! LED backends: one trait, one file per way of lighting an LED.

mod gpio;
mod led;
mod log;
mod sysfs;

#[cfg(target_os = "linux")]
pub use gpio::RppalLine;
pub use gpio::{GpioLed, OutputLine};
pub use led::Led;
pub use log::LogLed;
pub use sysfs::SysfsLed;
