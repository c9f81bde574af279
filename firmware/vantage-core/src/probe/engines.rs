//! The sockets a prober shares between targets: one engine per socket key, opened on first use.

use std::collections::HashMap;
use std::hash::Hash;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::lock::LockExt;
use crate::sample::ProbeError;

/// A failure to open a socket is logged at most this often: every round of every target would
/// hit it, and the journal lives on the SD card.
const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// The `Debug` (its name and socket factory) and `Default` (`new`: on the kernel's sockets) of a
/// prober whose sockets open on first use, from a pool of [`Engines`].
macro_rules! socket_prober {
    ($prober:ident) => {
        impl std::fmt::Debug for $prober {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($prober))
                    .field("factory", &self.factory)
                    .finish_non_exhaustive()
            }
        }

        impl Default for $prober {
            fn default() -> Self {
                Self::new()
            }
        }
    };
}
pub(crate) use socket_prober;

pub(crate) struct Engines<K, E> {
    map: Mutex<HashMap<K, Arc<E>>>,
    last_failure_log: Mutex<Option<Instant>>,
}

impl<K, E> Default for Engines<K, E> {
    fn default() -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            last_failure_log: Mutex::new(None),
        }
    }
}

impl<K: Hash + Eq, E> Engines<K, E> {
    /// The engine for `key`, started with `open` if there is none yet. `what` names the
    /// socket in errors ("ICMP socket"), `who` the probes that cannot run in the log line.
    pub(crate) fn get_or_open(
        &self,
        key: K,
        what: &str,
        who: &str,
        open: impl FnOnce(&K) -> io::Result<E>,
    ) -> Result<Arc<E>, ProbeError> {
        let mut map = self.map.lock_or_recover();
        if let Some(e) = map.get(&key) {
            return Ok(e.clone());
        }
        let engine = open(&key).map_err(|e| {
            let err = match e.kind() {
                io::ErrorKind::PermissionDenied => ProbeError::Permission(e.to_string()),
                _ => ProbeError::Network(format!("cannot open {what}: {e}")),
            };
            let mut last = self.last_failure_log.lock_or_recover();
            if last.is_none_or(|t| t.elapsed() > FAILURE_LOG_INTERVAL) {
                tracing::error!("{who} cannot run: {err}");
                *last = Some(Instant::now());
            }
            err
        })?;
        let engine = Arc::new(engine);
        map.insert(key, engine.clone());
        Ok(engine)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn opens_once_per_key_and_retries_after_a_failure() {
        let engines: Engines<u8, usize> = Engines::default();
        let opened = AtomicUsize::new(0);
        let open = |k: &u8| {
            opened.fetch_add(1, Ordering::SeqCst);
            Ok(usize::from(*k) * 10)
        };
        assert_eq!(*engines.get_or_open(1, "s", "p", open).unwrap(), 10);
        assert_eq!(*engines.get_or_open(1, "s", "p", open).unwrap(), 10);
        assert_eq!(*engines.get_or_open(2, "s", "p", open).unwrap(), 20);
        assert_eq!(opened.load(Ordering::SeqCst), 2);

        let denied = |_: &u8| Err(io::Error::from(io::ErrorKind::PermissionDenied));
        assert!(matches!(
            engines.get_or_open(3, "s", "p", denied),
            Err(ProbeError::Permission(_))
        ));
        let unreachable = |_: &u8| Err(io::Error::other("no route"));
        match engines.get_or_open(3, "ICMP socket", "p", unreachable) {
            Err(ProbeError::Network(m)) => assert_eq!(m, "cannot open ICMP socket: no route"),
            other => panic!("{other:?}"),
        }
        // A failure is not remembered: the next round tries again.
        assert_eq!(*engines.get_or_open(3, "s", "p", open).unwrap(), 30);
    }
}
