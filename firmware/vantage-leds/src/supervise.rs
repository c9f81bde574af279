//! The daemon's main-loop tick for the LEDs: derive the state, hand it to the renderer (which
//! proves the loop alive) and ping the systemd watchdog, only while everything is healthy.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::driver::Leds;
use crate::health::Health;
use crate::notify::Notifier;

/// The main loop's period when systemd asks for nothing faster.
pub const TICK: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct Supervisor {
    pub leds: Arc<Leds>,
    pub health: Arc<Health>,
    pub notifier: Option<Arc<Notifier>>,
}

impl Supervisor {
    /// One tick. `healthy` is the daemon's own verdict on the rest (runtime, scheduler);
    /// returns whether the watchdog was pinged.
    pub fn tick(&self, healthy: bool) -> bool {
        self.tick_at(Instant::now(), healthy)
    }

    /// [`Supervisor::tick`] at a given time. Stalled probes are treated like a stuck main
    /// loop: the renderer is not fed (so it shows "not responding" after `stale_after`) and
    /// the watchdog is not pinged (so systemd restarts the daemon).
    pub fn tick_at(&self, now: Instant, healthy: bool) -> bool {
        let state = self.health.state(now);
        let stalled = self.health.stalled(now);
        if stalled {
            self.leds.set_state(state);
            tracing::warn!("no probe results for too long: probing looks stuck");
        } else {
            self.leds.update(state);
        }
        let ok = healthy && !stalled && self.leds.renderer_alive();
        match (&self.notifier, ok) {
            (Some(n), true) if n.watchdog_timeout().is_some() => match n.watchdog() {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!("systemd watchdog ping: {e}");
                    false
                }
            },
            (Some(n), false) if n.watchdog_timeout().is_some() => {
                tracing::warn!("unhealthy: not pinging the systemd watchdog");
                false
            }
            _ => false,
        }
    }

    pub fn period(&self) -> Duration {
        self.notifier
            .as_ref()
            .and_then(|n| n.watchdog_interval())
            .map_or(TICK, |w| w.min(TICK))
            .max(Duration::from_millis(50))
    }

    /// Ticks on the Tokio runtime until `stop` turns true, so a wedged runtime stops the
    /// ticks, the LEDs say "not responding" and systemd restarts the daemon.
    pub async fn run(self, healthy: impl Fn() -> bool + Send, mut stop: watch::Receiver<bool>) {
        let mut every = tokio::time::interval(self.period());
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => { self.tick(healthy()); }
                r = stop.changed() => if r.is_err() || *stop.borrow() { return },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixDatagram;

    use super::*;
    use crate::backend::{Led, LogLed};
    use crate::config::LedRole;
    use crate::pattern::Pattern;

    // The test blocks on the socket, so the loop needs a worker thread of its own.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pings_only_while_healthy() {
        let path = std::env::temp_dir().join(format!("vantage-sup-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).unwrap();
        listener
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let notifier =
            Notifier::new(path.as_os_str(), Some("200000"), None, std::process::id()).unwrap();
        let leds: Vec<(LedRole, Box<dyn Led>)> =
            vec![(LedRole::Health, Box::new(LogLed::new("g")))];
        let sup = Supervisor {
            leds: Arc::new(Leds::start(
                leds,
                Duration::from_secs(5),
                Duration::from_secs(2),
            )),
            health: Arc::new(Health::new(Instant::now(), Duration::from_secs(1))),
            notifier: Some(Arc::new(notifier)),
        };
        assert_eq!(sup.period(), Duration::from_millis(100));
        let mut buf = [0u8; 64];

        assert!(sup.tick(true));
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1");

        assert!(!sup.tick(false));
        assert!(listener.recv(&mut buf).is_err(), "no ping while unhealthy");

        // The run loop pings on its own, and stops when told.
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(sup.clone().run(|| true, rx));
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1");
        tx.send(true).unwrap();
        task.await.unwrap();

        // Probes silent for too long: no ping, and the LEDs are not fed.
        sup.health.set_targets(["t"]);
        sup.health.set_stall_after(Duration::from_secs(5));
        assert!(!sup.tick_at(Instant::now() + Duration::from_secs(6), true));
        assert!(listener.recv(&mut buf).is_err());
        sup.health.record("t", "ping", true);
        assert!(sup.tick(true));
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1");

        // A dead renderer means no ping even if the rest is fine.
        sup.leds.shutdown(Pattern::Off);
        while listener.recv(&mut buf).is_ok() {}
        assert!(!sup.tick(true));
        assert!(listener.recv(&mut buf).is_err());
        std::fs::remove_file(path).unwrap();
    }
}
