//! systemd's notification protocol (`sd_notify`): `READY=1`, `WATCHDOG=1`, `STOPPING=1` as
//! datagrams to `$NOTIFY_SOCKET`. With `WatchdogSec=` in the unit, systemd kills and restarts
//! the daemon when the pings stop; the daemon sends them only while it is healthy.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

#[derive(Debug)]
pub struct Notifier {
    sock: UnixDatagram,
    addr: SocketAddr,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// From the environment systemd sets; `None` when not started by systemd with
    /// `Type=notify` (or when the socket cannot be used, which is logged).
    pub fn from_env() -> Option<Self> {
        let socket = std::env::var_os("NOTIFY_SOCKET")?;
        let usec = std::env::var("WATCHDOG_USEC").ok();
        let pid = std::env::var("WATCHDOG_PID").ok();
        match Self::new(&socket, usec.as_deref(), pid.as_deref(), std::process::id()) {
            Ok(n) => Some(n),
            Err(e) => {
                tracing::warn!("NOTIFY_SOCKET={}: {e}", socket.to_string_lossy());
                None
            }
        }
    }

    /// `socket` is a path or `@abstract-name`; `watchdog_usec` and `watchdog_pid` are the
    /// variables of the same names (the watchdog applies only if the pid is ours).
    pub fn new(
        socket: &OsStr,
        watchdog_usec: Option<&str>,
        watchdog_pid: Option<&str>,
        our_pid: u32,
    ) -> io::Result<Self> {
        let bytes = socket.as_bytes();
        let addr = match bytes.first() {
            Some(b'/') => SocketAddr::from_pathname(std::path::Path::new(socket))?,
            #[cfg(target_os = "linux")]
            Some(b'@') => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(&bytes[1..])?
            }
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "not an absolute path or an @abstract socket name",
                ));
            }
        };
        let for_us = watchdog_pid.is_none_or(|p| p.trim().parse::<u32>().ok() == Some(our_pid));
        let watchdog = watchdog_usec
            .and_then(|u| u.trim().parse::<u64>().ok())
            .filter(|u| *u > 0 && for_us)
            .map(Duration::from_micros);
        Ok(Self {
            sock: UnixDatagram::unbound()?,
            addr,
            watchdog,
        })
    }

    /// `WatchdogSec=` as systemd told us, if the watchdog is on.
    pub fn watchdog_timeout(&self) -> Option<Duration> {
        self.watchdog
    }

    /// How often to ping: half the timeout, as sd_watchdog_enabled(3) advises.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog.map(|w| w / 2)
    }

    pub fn ready(&self) -> io::Result<()> {
        self.send("READY=1")
    }

    pub fn watchdog(&self) -> io::Result<()> {
        self.send("WATCHDOG=1")
    }

    pub fn stopping(&self) -> io::Result<()> {
        self.send("STOPPING=1")
    }

    pub fn reloading(&self) -> io::Result<()> {
        self.send("RELOADING=1")
    }

    /// A one-line status shown by `systemctl status`.
    pub fn status(&self, text: &str) -> io::Result<()> {
        let line: String = text.chars().filter(|c| *c != '\n').collect();
        self.send(&format!("STATUS={line}"))
    }

    pub fn send(&self, msg: &str) -> io::Result<()> {
        self.sock
            .send_to_addr(msg.as_bytes(), &self.addr)
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listen(tag: &str) -> (std::path::PathBuf, UnixDatagram) {
        let p = std::env::temp_dir().join(format!("vantage-notify-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_file(&p);
        let l = UnixDatagram::bind(&p).unwrap();
        l.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        (p, l)
    }

    fn recv(l: &UnixDatagram) -> String {
        let mut buf = [0u8; 256];
        let n = l.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn sends_the_protocol_messages() {
        let (p, l) = listen("msgs");
        let n = Notifier::new(p.as_os_str(), Some("10000000"), None, 42).unwrap();
        assert_eq!(n.watchdog_timeout(), Some(Duration::from_secs(10)));
        assert_eq!(n.watchdog_interval(), Some(Duration::from_secs(5)));
        n.ready().unwrap();
        n.watchdog().unwrap();
        n.status("probing 3 targets\nx").unwrap();
        n.stopping().unwrap();
        assert_eq!(recv(&l), "READY=1");
        assert_eq!(recv(&l), "WATCHDOG=1");
        assert_eq!(recv(&l), "STATUS=probing 3 targetsx");
        assert_eq!(recv(&l), "STOPPING=1");
        std::fs::remove_file(p).unwrap();
    }

    #[test]
    fn abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("vantage-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let l = UnixDatagram::bind_addr(&addr).unwrap();
        l.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let n = Notifier::new(OsStr::new(&format!("@{name}")), None, None, 1).unwrap();
        assert_eq!(n.watchdog_timeout(), None);
        n.ready().unwrap();
        assert_eq!(recv(&l), "READY=1");
    }

    #[test]
    fn watchdog_only_for_our_pid_and_sane_values() {
        let (p, _l) = listen("pid");
        let s = p.as_os_str();
        assert!(
            Notifier::new(s, Some("1000"), Some("7"), 8)
                .unwrap()
                .watchdog_timeout()
                .is_none()
        );
        assert!(
            Notifier::new(s, Some("1000"), Some("8"), 8)
                .unwrap()
                .watchdog_timeout()
                .is_some()
        );
        assert!(
            Notifier::new(s, Some("0"), None, 8)
                .unwrap()
                .watchdog_timeout()
                .is_none()
        );
        assert!(
            Notifier::new(s, Some("soon"), None, 8)
                .unwrap()
                .watchdog_timeout()
                .is_none()
        );
        assert!(Notifier::new(OsStr::new("relative/sock"), None, None, 8).is_err());
        assert!(Notifier::new(OsStr::new(""), None, None, 8).is_err());
        std::fs::remove_file(p).unwrap();
    }
}
