//! The admin password, sessions and the login rate limit.
//!
//! There is no default password: until one is chosen, the page shows the first-boot form and
//! every other API answers 401. The password is stored as an argon2id PHC string (which carries
//! its own parameters, so they can change later without invalidating stored hashes) in
//! `web/admin.json`, mode 0600. Sessions live in memory only: a restart logs everyone out,
//! and nothing secret about them is ever on disk.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use vantage_core::{LockExt, RwLockExt};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use super::config_file::write_private;

/// Sessions end after this long without a request...
pub const SESSION_IDLE: Duration = Duration::from_secs(60 * 60);
/// ...and in any case this long after login.
pub const SESSION_MAX: Duration = Duration::from_secs(12 * 60 * 60);
/// Open sessions beyond this evict the oldest (bounds memory under a login flood).
const MAX_SESSIONS: usize = 64;
pub const MIN_PASSWORD_CHARS: usize = 10;
/// What the first-boot page says while anyone may set the password.
pub const CLAIM_WARNING: &str = "Anyone who can reach this device on the network can set this \
    password first and take it over. Set it now, from a network you trust; the device's log \
    names the address that set it.";
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Failed logins from one client address before it has to wait.
const FREE_FAILURES: u32 = 5;
/// Failed logins from one IPv6 /64 before all of it has to wait. Higher than per address:
/// every SLAAC host of a LAN shares one /64, and one of them guessing must not lock the others
/// out; but a host can pick any address in its /64, so the /64 needs a limit of its own.
const FREE_FAILURES_PER_NET: u32 = 50;
/// Threads that hash passwords. One: argon2's 19 MiB buffer is freed after each hash, and
/// handed back to the system after it (see [`give_back_freed_memory`]); a flood of wrong
/// logins then costs 19 MiB while it lasts, not once per blocking thread.
pub const HASH_THREADS: usize = 1;
/// Failures are forgotten this long after the last one.
const FAILURE_MEMORY: Duration = Duration::from_secs(15 * 60);
const MAX_LOCKOUT: Duration = Duration::from_secs(5 * 60);
/// Clients the limiter remembers; beyond this the oldest entries go.
const MAX_TRACKED_CLIENTS: usize = 4096;

/// argon2id cost parameters for new hashes.
#[derive(Debug, Clone, Copy)]
pub struct HashParams {
    pub m_kib: u32,
    pub t: u32,
    pub p: u32,
}

impl HashParams {
    /// 19 MiB, 2 passes, 1 lane: OWASP's first recommended argon2id setting. 25 ms of CPU
    /// per hash on an x86 server core, estimated at 0.26–0.33 s on a Raspberry Pi 3 (see
    /// docs/WEB.md), under the 0.5 s budget, while every guess costs an attacker 19 MiB.
    pub const PRODUCTION: HashParams = HashParams {
        m_kib: 19 * 1024,
        t: 2,
        p: 1,
    };
    /// Cheap parameters for tests only.
    #[cfg(test)]
    pub const TEST: HashParams = HashParams {
        m_kib: 64,
        t: 1,
        p: 1,
    };

    fn argon2(self) -> Argon2<'static> {
        let params = Params::new(self.m_kib, self.t, self.p, None).expect("valid argon2 params");
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct AdminFile {
    password_hash: String,
}

#[derive(Debug, Clone)]
pub struct Session {
    pub csrf: String,
    created: Instant,
    last_seen: Instant,
}

#[derive(Debug)]
struct Failures {
    count: u32,
    last: Instant,
}

impl Failures {
    /// How long to wait still, once `free` failures are used up: 1 s, 2 s, 4 s … up to
    /// [`MAX_LOCKOUT`].
    fn wait(&self, free: u32) -> Option<Duration> {
        if self.count < free {
            return None;
        }
        let wait = Duration::from_secs(1u64 << (self.count - free).min(16)).min(MAX_LOCKOUT);
        let waited = self.last.elapsed();
        (waited < wait).then(|| wait - waited)
    }
}

/// What the login limit counts failures per.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Counted {
    Address(IpAddr),
    /// The upper 64 bits of an IPv6 address.
    Net64(u64),
}

/// The counters one client's failures go to, with the failures each allows for free.
fn counted(ip: IpAddr) -> impl Iterator<Item = (Counted, u32)> {
    let ip = ip.to_canonical();
    let net = match ip {
        IpAddr::V6(v6) => Some((
            Counted::Net64((u128::from(v6) >> 64) as u64),
            FREE_FAILURES_PER_NET,
        )),
        IpAddr::V4(_) => None,
    };
    std::iter::once((Counted::Address(ip), FREE_FAILURES)).chain(net)
}

type Job = Box<dyn FnOnce() + Send>;

/// Returns the memory freed by a hash to the system. glibc's malloc raises its mmap threshold
/// once a large block is freed, so the next 19 MiB buffers come from the heap, and it keeps
/// them there: 1,000 wrong logins took RSS from 12 to 145 MB on one hashing thread (seven
/// buffers), though only one is ever in use. `malloc_trim` hands free pages back at once. The
/// daemon's `malloc::tune` fixes the threshold too; this keeps any other caller (tests) bounded.
fn give_back_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions; it only releases free memory.
    let _ = unsafe { libc::malloc_trim(0) };
}

/// A fixed set of threads for password hashes (see [`HASH_THREADS`]), fed in order.
pub struct HashPool {
    jobs: std::sync::mpsc::Sender<Job>,
    /// Hashes queued or running: a request that gives up waiting leaves no work behind.
    permits: Arc<tokio::sync::Semaphore>,
    running: Arc<AtomicUsize>,
    /// The most hashes that ever ran at once.
    peak: Arc<AtomicUsize>,
}

impl std::fmt::Debug for HashPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HashPool").finish_non_exhaustive()
    }
}

impl HashPool {
    fn new(threads: usize) -> Self {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads {
            let rx = rx.clone();
            // The thread ends when the pool (its sender) is dropped.
            std::thread::Builder::new()
                .name(format!("password-hash-{i}"))
                .spawn(move || {
                    loop {
                        let next = rx.lock_or_recover().recv();
                        let Ok(job) = next else { return };
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                    }
                })
                .expect("spawn the password hashing thread");
        }
        Self {
            jobs: tx,
            permits: Arc::new(tokio::sync::Semaphore::new(threads)),
            running: Arc::default(),
            peak: Arc::default(),
        }
    }

    /// Runs `f` on a hashing thread once one is free.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, String> {
        let stopped = || "the password hashing thread has stopped".to_string();
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| stopped())?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (running, peak) = (self.running.clone(), self.peak.clone());
        let job: Job = Box::new(move || {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            let out = f();
            // Before the answer goes out: once a login is answered, its memory is back.
            give_back_freed_memory();
            running.fetch_sub(1, Ordering::SeqCst);
            drop(permit);
            let _ = tx.send(out);
        });
        self.jobs.send(job).map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())
    }

    #[cfg(test)]
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }
}

pub struct Auth {
    path: PathBuf,
    params: HashParams,
    /// Why `admin.json` could not be used; logins are refused while it is set.
    pub damaged: Option<String>,
    /// The one-time code first-boot setup requires, when the device has one (see
    /// [`Auth::require_setup_code`]).
    setup_code: RwLock<Option<SetupCode>>,
    hash: RwLock<Option<String>>,
    sessions: Mutex<HashMap<String, Session>>,
    failures: Mutex<HashMap<Counted, Failures>>,
    /// argon2 is deliberately expensive: hashes run on a fixed thread pool, so a login flood
    /// can starve the probes neither of CPU nor of memory.
    pub hash_pool: HashPool,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth").field("path", &self.path).finish()
    }
}

/// A setup code and the file it came from (named in messages).
#[derive(Debug, Clone)]
pub struct SetupCode {
    code: String,
    pub file: PathBuf,
}

/// Setup code files beyond this are not a code.
const MAX_SETUP_CODE_BYTES: u64 = 256;

/// Reads a setup code file: its first line, trimmed; `None` when there is no usable code.
fn read_setup_code(path: &Path) -> Option<String> {
    let text = crate::files::read_text(path, MAX_SETUP_CODE_BYTES)?;
    let code = text.lines().next().unwrap_or("").trim();
    (!code.is_empty()).then(|| code.to_string())
}

/// The image copies the card's code into the service's credentials (see
/// `vantage-image-setup-code.service`); that copy's path means nothing to the person at the page.
fn setup_code_place(file: &Path, credentials: Option<&Path>) -> String {
    match credentials {
        Some(dir) if file.starts_with(dir) => {
            "setup-code.txt on the SD card's boot partition".to_string()
        }
        _ => file.display().to_string(),
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum LoginError {
    /// Wait this long before trying again.
    RateLimited(Duration),
    BadPassword,
    NotSetUp,
    Damaged(String),
}

pub fn random_token() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Compares without an early exit, so the time taken does not reveal the matching prefix.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The server's rule for a new password; the page checks the same before sending.
pub fn check_new_password(pw: &str) -> Result<(), String> {
    if pw.chars().count() < MIN_PASSWORD_CHARS {
        return Err(format!(
            "must be at least {MIN_PASSWORD_CHARS} characters long"
        ));
    }
    if pw.len() > MAX_PASSWORD_BYTES {
        return Err(format!("must be at most {MAX_PASSWORD_BYTES} bytes long"));
    }
    if pw.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    let mut chars = pw.chars();
    if let Some(first) = chars.next()
        && chars.all(|c| c == first)
    {
        return Err(if first == ' ' {
            "must not be only spaces".into()
        } else {
            "must not be one character repeated".into()
        });
    }
    Ok(())
}

impl Auth {
    pub fn open(dir: &Path, params: HashParams) -> anyhow::Result<Self> {
        let path = dir.join("admin.json");
        // A damaged file must neither stop the daemon (the device has no console) nor fall back
        // to "no password" (anyone could then claim the device): logins are refused until the
        // file is removed, e.g. from the SD card.
        let (hash, damaged) = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<AdminFile>(&bytes)
                .map_err(|e| e.to_string())
                .and_then(|f| match PasswordHash::new(&f.password_hash) {
                    Ok(_) => Ok(f.password_hash),
                    Err(e) => Err(format!("bad password hash: {e}")),
                }) {
                Ok(h) => (Some(h), None),
                Err(e) => (None, Some(e)),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (None, None),
            Err(e) => (None, Some(e.to_string())),
        };
        let damaged = damaged.map(|e| {
            let msg = format!(
                "the admin password file {} is damaged ({e}); remove it and restart the device to choose a new password",
                path.display()
            );
            tracing::error!("{msg}");
            msg
        });
        Ok(Self {
            path,
            params,
            damaged,
            hash: RwLock::new(hash),
            sessions: Mutex::default(),
            failures: Mutex::default(),
            hash_pool: HashPool::new(HASH_THREADS),
            setup_code: RwLock::new(None),
        })
    }

    /// Makes first-boot setup require the code in `path` (written to the boot partition when
    /// the image is built or flashed). Without a usable file anyone on the network can claim
    /// the device, which the log says.
    pub fn require_setup_code(&self, path: &Path) {
        let code = read_setup_code(path);
        if code.is_none() && !self.is_set_up() {
            tracing::warn!(
                file = %path.display(),
                "no setup code: anyone on the network can set the admin password"
            );
        }
        *self.setup_code.write_or_recover() = code.map(|code| SetupCode {
            code,
            file: path.to_path_buf(),
        });
    }

    /// Where a person finds the setup code, for messages: the card's file when the code came in
    /// as a systemd credential (the image's way), else the file the daemon was given.
    pub fn setup_code_place(&self) -> Option<String> {
        let file = self.setup_code_file()?;
        let credentials = std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from);
        Some(setup_code_place(&file, credentials.as_deref()))
    }

    /// The file setup's code comes from, when setup needs one.
    pub fn setup_code_file(&self) -> Option<PathBuf> {
        self.setup_code
            .read_or_recover()
            .as_ref()
            .map(|c| c.file.clone())
    }

    /// Checks a setup attempt's code (constant time); a wrong one counts as a failed login
    /// for the client, so codes cannot be guessed faster than passwords.
    pub fn check_setup_code(&self, client: IpAddr, given: Option<&str>) -> Result<(), LoginError> {
        let want = self.setup_code.read_or_recover().clone();
        let Some(want) = want else { return Ok(()) };
        if let Some(wait) = self.retry_after(client) {
            return Err(LoginError::RateLimited(wait));
        }
        let given = given.unwrap_or("").trim();
        if constant_time_eq(given.as_bytes(), want.code.as_bytes()) {
            Ok(())
        } else {
            self.record_failure(client);
            Err(LoginError::BadPassword)
        }
    }

    pub fn is_set_up(&self) -> bool {
        self.damaged.is_some() || self.hash.read_or_recover().is_some()
    }

    pub fn hash_password(&self, pw: &str) -> Result<String, String> {
        let mut salt = [0u8; 16];
        rand::rng().fill_bytes(&mut salt);
        let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
        self.params
            .argon2()
            .hash_password(pw.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| e.to_string())
    }

    fn verify(&self, pw: &str) -> bool {
        let Some(stored) = self.hash.read_or_recover().clone() else {
            return false;
        };
        let Ok(parsed) = PasswordHash::new(&stored) else {
            return false;
        };
        // Verification uses the parameters stored with the hash.
        Argon2::default()
            .verify_password(pw.as_bytes(), &parsed)
            .is_ok()
    }

    /// Stores a new password hash (atomically, mode 0600) and ends every session.
    pub fn store_hash(&self, hash: String) -> std::io::Result<()> {
        let body = serde_json::to_vec_pretty(&AdminFile {
            password_hash: hash.clone(),
        })
        .map_err(std::io::Error::other)?;
        write_private(&self.path, &body)?;
        *self.hash.write_or_recover() = Some(hash);
        self.sessions.lock_or_recover().clear();
        Ok(())
    }

    /// Sets the first password. Fails if one exists (checked again under the write lock by
    /// the caller's ordering: the hash is computed first, then swapped in only if still unset).
    pub fn setup(&self, hash: String) -> Result<(), std::io::Error> {
        let mut guard = self.hash.write_or_recover();
        if guard.is_some() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "a password is already set",
            ));
        }
        let body = serde_json::to_vec_pretty(&AdminFile {
            password_hash: hash.clone(),
        })
        .map_err(std::io::Error::other)?;
        write_private(&self.path, &body)?;
        *guard = Some(hash);
        Ok(())
    }

    /// How long `client` must still wait before its next login attempt: the longer of its
    /// address's wait and its /64's.
    pub fn retry_after(&self, client: IpAddr) -> Option<Duration> {
        let map = self.failures.lock_or_recover();
        counted(client)
            .filter_map(|(key, free)| map.get(&key)?.wait(free))
            .max()
    }

    fn record_failure(&self, client: IpAddr) {
        let mut map = self.failures.lock_or_recover();
        let now = Instant::now();
        for (key, _) in counted(client) {
            if map.len() >= MAX_TRACKED_CLIENTS {
                map.retain(|_, f| now.duration_since(f.last) < FAILURE_MEMORY);
                if map.len() >= MAX_TRACKED_CLIENTS
                    && let Some(oldest) = map.iter().min_by_key(|(_, f)| f.last).map(|(k, _)| *k)
                {
                    map.remove(&oldest);
                }
            }
            let f = map.entry(key).or_insert(Failures {
                count: 0,
                last: now,
            });
            if now.duration_since(f.last) >= FAILURE_MEMORY {
                f.count = 0;
            }
            f.count += 1;
            f.last = now;
        }
    }

    /// Checks the password (blocking: run it off the async threads) and opens a session.
    pub fn login(&self, client: IpAddr, pw: &str) -> Result<(String, Session), LoginError> {
        if let Some(d) = &self.damaged {
            return Err(LoginError::Damaged(d.clone()));
        }
        if !self.is_set_up() {
            return Err(LoginError::NotSetUp);
        }
        if let Some(wait) = self.retry_after(client) {
            return Err(LoginError::RateLimited(wait));
        }
        if pw.len() > MAX_PASSWORD_BYTES || !self.verify(pw) {
            self.record_failure(client);
            return Err(LoginError::BadPassword);
        }
        // The address starts afresh; its /64's count runs out on its own.
        self.failures
            .lock_or_recover()
            .remove(&Counted::Address(client.to_canonical()));
        Ok(self.open_session())
    }

    /// Checks the current password without rate-limit bookkeeping side effects on success.
    pub fn check_password(&self, client: IpAddr, pw: &str) -> Result<(), LoginError> {
        if let Some(d) = &self.damaged {
            return Err(LoginError::Damaged(d.clone()));
        }
        if let Some(wait) = self.retry_after(client) {
            return Err(LoginError::RateLimited(wait));
        }
        if pw.len() > MAX_PASSWORD_BYTES || !self.verify(pw) {
            self.record_failure(client);
            return Err(LoginError::BadPassword);
        }
        Ok(())
    }

    pub fn open_session(&self) -> (String, Session) {
        let token = random_token();
        let now = Instant::now();
        let s = Session {
            csrf: random_token(),
            created: now,
            last_seen: now,
        };
        let mut map = self.sessions.lock_or_recover();
        map.retain(|_, s| s.alive(now));
        while map.len() >= MAX_SESSIONS {
            let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            map.remove(&oldest);
        }
        map.insert(token.clone(), s.clone());
        (token, s)
    }

    /// The live session of `token`, refreshed.
    pub fn session(&self, token: &str) -> Option<Session> {
        let now = Instant::now();
        let mut map = self.sessions.lock_or_recover();
        match map.get_mut(token) {
            Some(s) if s.alive(now) => {
                s.last_seen = now;
                Some(s.clone())
            }
            Some(_) => {
                map.remove(token);
                None
            }
            None => None,
        }
    }

    pub fn logout(&self, token: &str) {
        self.sessions.lock_or_recover().remove(token);
    }

    #[cfg(test)]
    pub fn age_sessions(&self, by: Duration) {
        for s in self.sessions.lock_or_recover().values_mut() {
            s.created -= by;
            s.last_seen -= by;
        }
    }
}

impl Session {
    fn alive(&self, now: Instant) -> bool {
        now.duration_since(self.last_seen) < SESSION_IDLE
            && now.duration_since(self.created) < SESSION_MAX
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_backs_off_after_free_failures() {
        let dir = tempdir();
        let a = Auth::open(dir.path(), HashParams::TEST).unwrap();
        a.setup(a.hash_password("correct horse battery").unwrap())
            .unwrap();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        for _ in 0..FREE_FAILURES {
            assert_eq!(a.login(ip, "wrong").unwrap_err(), LoginError::BadPassword);
        }
        // The right password is refused too while the client must wait.
        assert!(matches!(
            a.login(ip, "correct horse battery"),
            Err(LoginError::RateLimited(_))
        ));
        // Another client is not affected.
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        assert!(a.login(other, "correct horse battery").is_ok());
        // One IPv6 host guessing does not lock out the other hosts of its /64 (SLAAC)...
        let guesser: IpAddr = "2001:db8::bad".parse().unwrap();
        for _ in 0..FREE_FAILURES {
            assert_eq!(
                a.login(guesser, "wrong").unwrap_err(),
                LoginError::BadPassword
            );
        }
        assert!(matches!(
            a.login(guesser, "correct horse battery"),
            Err(LoginError::RateLimited(_))
        ));
        assert!(
            a.login("2001:db8::900d".parse().unwrap(), "correct horse battery")
                .is_ok()
        );
        // ...but it cannot dodge the limit by changing addresses within its /64 either: the
        // /64 has a higher limit of its own.
        for i in FREE_FAILURES..FREE_FAILURES_PER_NET {
            let ip: IpAddr = format!("2001:db8::{i:x}").parse().unwrap();
            assert_eq!(a.login(ip, "wrong").unwrap_err(), LoginError::BadPassword);
        }
        assert!(matches!(
            a.login("2001:db8::ffff:1".parse().unwrap(), "wrong"),
            Err(LoginError::RateLimited(_))
        ));
        assert!(
            a.login("2001:db8:0:1::1".parse().unwrap(), "correct horse battery")
                .is_ok()
        );
    }

    #[test]
    fn setup_codes_are_read_bounded_and_checked_with_the_rate_limit() {
        let dir = tempdir();
        let a = Auth::open(dir.path(), HashParams::TEST).unwrap();
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        // No file: no code needed.
        a.require_setup_code(&dir.path().join("missing"));
        assert!(a.setup_code_file().is_none());
        assert!(a.check_setup_code(ip, None).is_ok());
        // A directory or an empty file is no code either.
        a.require_setup_code(dir.path());
        assert!(a.setup_code_file().is_none());
        let file = dir.path().join("setup-code.txt");
        std::fs::write(&file, "\n").unwrap();
        a.require_setup_code(&file);
        assert!(a.setup_code_file().is_none());
        std::fs::write(&file, " K7Q2-M9XD-P4TW \nsecond line\n").unwrap();
        a.require_setup_code(&file);
        assert_eq!(a.setup_code_file().as_deref(), Some(file.as_path()));
        assert!(a.check_setup_code(ip, Some("K7Q2-M9XD-P4TW")).is_ok());
        for _ in 0..FREE_FAILURES {
            assert_eq!(
                a.check_setup_code(ip, Some("guess")),
                Err(LoginError::BadPassword)
            );
        }
        assert!(matches!(
            a.check_setup_code(ip, Some("K7Q2-M9XD-P4TW")),
            Err(LoginError::RateLimited(_))
        ));
        assert!(a.check_setup_code(ip, None).is_err());
    }

    #[test]
    fn setup_code_messages_name_the_card_file_not_the_credential_copy() {
        let creds = Path::new("/run/credentials/vantage.service");
        assert_eq!(
            setup_code_place(&creds.join("vantage.setup-code"), Some(creds)),
            "setup-code.txt on the SD card's boot partition"
        );
        let own = Path::new("/etc/vantage/setup-code");
        assert_eq!(
            setup_code_place(own, Some(creds)),
            "/etc/vantage/setup-code"
        );
        assert_eq!(setup_code_place(own, None), "/etc/vantage/setup-code");
    }

    #[test]
    fn weak_new_passwords_are_refused() {
        for pw in ["          ", "aaaaaaaaaa", "ääääääääääää", "short"] {
            assert!(check_new_password(pw).is_err(), "{pw:?}");
        }
        assert!(
            check_new_password("          ")
                .unwrap_err()
                .contains("spaces")
        );
        assert!(check_new_password("aaaaaaaaab").is_ok());
    }

    /// Wrong logins from many clients at once: the hashes run one pool thread at a time, so
    /// their memory is bounded by the pool, not by the number of clients.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_logins_hash_on_the_fixed_pool() {
        let dir = tempdir();
        let a = Arc::new(Auth::open(dir.path(), HashParams::TEST).unwrap());
        a.setup(a.hash_password("correct horse battery").unwrap())
            .unwrap();
        let threads = Arc::new(Mutex::new(std::collections::HashSet::new()));
        let tasks: Vec<_> = (0..40u8)
            .map(|i| {
                let (a, threads) = (a.clone(), threads.clone());
                tokio::spawn(async move {
                    let ip = IpAddr::from([192, 0, 2, i]);
                    let a2 = a.clone();
                    a.hash_pool
                        .run(move || {
                            threads.lock().unwrap().insert(std::thread::current().id());
                            a2.login(ip, "wrong")
                        })
                        .await
                })
            })
            .collect();
        for t in tasks {
            assert_eq!(
                t.await.unwrap().unwrap().unwrap_err(),
                LoginError::BadPassword
            );
        }
        assert!(a.hash_pool.peak() <= HASH_THREADS, "{}", a.hash_pool.peak());
        assert!(threads.lock().unwrap().len() <= HASH_THREADS);
    }

    #[test]
    fn sessions_expire_and_password_change_ends_them() {
        let dir = tempdir();
        let a = Auth::open(dir.path(), HashParams::TEST).unwrap();
        let (t, _) = a.open_session();
        assert!(a.session(&t).is_some());
        a.age_sessions(SESSION_IDLE + Duration::from_secs(1));
        assert!(a.session(&t).is_none());
        let (t2, _) = a.open_session();
        a.store_hash(a.hash_password("another password").unwrap())
            .unwrap();
        assert!(a.session(&t2).is_none());
    }

    #[test]
    fn hash_file_is_private_and_reloads() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempdir();
        let a = Auth::open(dir.path(), HashParams::TEST).unwrap();
        a.setup(a.hash_password("0123456789ab").unwrap()).unwrap();
        assert!(a.setup(a.hash_password("someone else!").unwrap()).is_err());
        let mode = std::fs::metadata(dir.path().join("admin.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = Auth::open(dir.path(), HashParams::TEST).unwrap();
        assert!(b.is_set_up());
        assert!(
            b.check_password("192.0.2.1".parse().unwrap(), "0123456789ab")
                .is_ok()
        );
        let text = std::fs::read_to_string(dir.path().join("admin.json")).unwrap();
        assert!(text.contains("$argon2id$"), "{text}");
        assert!(!text.contains("0123456789ab"));
    }

    /// Measures the production parameters on this machine:
    /// `cargo test --profile ci -p vantage -- --ignored argon2_cost --nocapture`
    /// (scripts/bench-web-login.sh measures a whole login over HTTP).
    #[test]
    #[ignore]
    fn argon2_cost() {
        let dir = tempdir();
        let a = Auth::open(dir.path(), HashParams::PRODUCTION).unwrap();
        let h = a.hash_password("benchmark password").unwrap();
        a.setup(h).unwrap();
        let start = Instant::now();
        let n = 10;
        for _ in 0..n {
            assert!(a.verify("benchmark password"));
        }
        println!(
            "argon2id m={}KiB t={} p={}: {:.1} ms per verification",
            HashParams::PRODUCTION.m_kib,
            HashParams::PRODUCTION.t,
            HashParams::PRODUCTION.p,
            start.elapsed().as_secs_f64() * 1000.0 / n as f64
        );
    }

    fn tempdir() -> crate::web::tests::TempDir {
        crate::web::tests::TempDir::new("auth")
    }
}
