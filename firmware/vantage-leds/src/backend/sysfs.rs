//! The kernel LED class: `/sys/class/leds/<name>/{brightness,trigger,delay_on,delay_off}`.
//!
//! Works for every LED the kernel knows: the Pi's ACT/PWR LEDs and LEDs declared with the
//! `gpio-led` device-tree overlay. While the daemon runs it owns the LED (trigger `none`) and
//! renders patterns itself; [`Led::persist`] hands a pattern to a kernel trigger so it keeps
//! going without the daemon (the boot pattern).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::led::Led;
use crate::pattern::Pattern;

#[derive(Debug)]
pub struct SysfsLed {
    label: String,
    dir: PathBuf,
    max: u32,
}

impl SysfsLed {
    /// Opens `<root>/<name>` and takes it over from whatever trigger drove it.
    pub fn open(root: &Path, name: &str) -> io::Result<Self> {
        crate::config::check_led_name(name).map_err(|m| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("LED name {name:?} {m}"),
            )
        })?;
        let dir = root.join(name);
        if !dir.join("brightness").exists() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "no LED {name:?}: {} does not exist (LEDs here: {})",
                    dir.join("brightness").display(),
                    available(root)
                ),
            ));
        }
        // max_brightness is 1 for GPIO LEDs, 255 for PWM ones; light them fully.
        let max = fs::read_to_string(dir.join("max_brightness"))
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .filter(|m| *m > 0)
            .unwrap_or(1);
        let led = Self {
            label: name.to_string(),
            dir,
            max,
        };
        led.write("trigger", "none")?;
        Ok(led)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn write(&self, file: &str, value: &str) -> io::Result<()> {
        let path = self.dir.join(file);
        fs::write(&path, value)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
    }
}

/// The LED names under `root`, for the error message of a typo.
fn available(root: &Path) -> String {
    let mut names: Vec<String> = fs::read_dir(root)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

impl Led for SysfsLed {
    fn label(&self) -> &str {
        &self.label
    }

    fn set(&mut self, on: bool) -> io::Result<()> {
        let level = if on { self.max } else { 0 };
        self.write("brightness", &level.to_string())
    }

    fn persist(&mut self, pattern: Pattern) -> io::Result<bool> {
        match pattern {
            Pattern::Off => {
                self.write("trigger", "none")?;
                self.write("brightness", "0")?;
            }
            Pattern::Steady => {
                self.write("trigger", "none")?;
                self.write("brightness", &self.max.to_string())?;
            }
            Pattern::SlowBlink | Pattern::FastBlink => {
                let (on, off) = pattern.timer_delays().unwrap_or((500, 500));
                // The delay files appear once the timer trigger is set.
                self.write("trigger", "timer")?;
                self.write("delay_on", &on.to_string())?;
                self.write("delay_off", &off.to_string())?;
            }
            Pattern::DoubleFlash => {
                // The kernel's heartbeat is a double beat; its rate follows the load average.
                self.write("trigger", "heartbeat")?;
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake LED class: a directory per LED with the files the kernel shows.
    pub(crate) fn fake_led(root: &Path, name: &str, max: u32) {
        let d = root.join(name);
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("brightness"), "0").unwrap();
        fs::write(d.join("max_brightness"), max.to_string()).unwrap();
        fs::write(d.join("trigger"), "none [mmc0] timer heartbeat").unwrap();
    }

    fn read(root: &Path, name: &str, file: &str) -> String {
        fs::read_to_string(root.join(name).join(file)).unwrap()
    }

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("vantage-leds-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn takes_over_sets_and_persists() {
        let root = tempdir("sysfs");
        fake_led(&root, "ACT", 255);
        let mut led = SysfsLed::open(&root, "ACT").unwrap();
        assert_eq!(read(&root, "ACT", "trigger"), "none");
        led.set(true).unwrap();
        assert_eq!(read(&root, "ACT", "brightness"), "255");
        led.set(false).unwrap();
        assert_eq!(read(&root, "ACT", "brightness"), "0");
        led.persist(Pattern::SlowBlink).unwrap();
        assert_eq!(read(&root, "ACT", "trigger"), "timer");
        assert_eq!(read(&root, "ACT", "delay_on"), "500");
        assert_eq!(read(&root, "ACT", "delay_off"), "500");
        led.persist(Pattern::FastBlink).unwrap();
        assert_eq!(read(&root, "ACT", "delay_on"), "100");
        led.persist(Pattern::DoubleFlash).unwrap();
        assert_eq!(read(&root, "ACT", "trigger"), "heartbeat");
        led.persist(Pattern::Steady).unwrap();
        assert_eq!(read(&root, "ACT", "trigger"), "none");
        assert_eq!(read(&root, "ACT", "brightness"), "255");
        led.persist(Pattern::Off).unwrap();
        assert_eq!(read(&root, "ACT", "brightness"), "0");
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn missing_led_names_the_ones_that_exist() {
        let root = tempdir("sysfs-missing");
        fake_led(&root, "ACT", 1);
        fake_led(&root, "PWR", 1);
        let e = SysfsLed::open(&root, "led0").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(e.to_string().contains("LEDs here: ACT, PWR"), "{e}");
        let e = SysfsLed::open(&root, "../PWR").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn write_errors_name_the_file() {
        let root = tempdir("sysfs-ro");
        fake_led(&root, "ACT", 1);
        let mut led = SysfsLed::open(&root, "ACT").unwrap();
        // A directory where the brightness file should be: writing fails like a vanished LED.
        fs::remove_file(root.join("ACT/brightness")).unwrap();
        fs::create_dir(root.join("ACT/brightness")).unwrap();
        let e = led.set(true).unwrap_err();
        assert!(e.to_string().contains("ACT/brightness"), "{e}");
        fs::remove_dir_all(&root).unwrap();
    }
}
