//! An NFQUEUE delay holder: accepts each queued packet a fixed time (± jitter) after it arrived.
//!
//! Stands in for `tc qdisc netem delay` on kernels without netem. An iptables rule sends the
//! packets to delay (`-j NFQUEUE --queue-num N`); this loop reads them from the queue with
//! libnetfilter_queue, keeps only their ids, and gives each an ACCEPT verdict when its time comes.
//! It sleeps with `ppoll` and a 1 ns timer slack, so a held packet leaves within a few
//! microseconds of its due time on an idle machine.
//!
//! A packet's hold starts at the kernel's receive timestamp of it (NFQUEUE passes it on), not
//! when this loop got round to reading it, so the holder's own wake-up latency does not add to
//! the delay. What is left, each packet's release after its due time, is recorded
//! ([`Lateness`]): it is the floor of any RTT error measured against this holder.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crate::netns::Netns;

#[allow(non_camel_case_types)]
mod ffi {
    use std::ffi::{c_char, c_int, c_void};

    #[repr(C)]
    pub struct nfq_handle {
        _private: [u8; 0],
    }
    #[repr(C)]
    pub struct nfq_q_handle {
        _private: [u8; 0],
    }
    #[repr(C)]
    pub struct nfq_data {
        _private: [u8; 0],
    }
    /// `struct nfqnl_msg_packet_hdr` (packed, network byte order).
    #[repr(C, packed)]
    pub struct nfqnl_msg_packet_hdr {
        pub packet_id: u32,
        pub hw_protocol: u16,
        pub hook: u8,
    }

    pub type nfq_callback = unsafe extern "C" fn(
        qh: *mut nfq_q_handle,
        nfmsg: *mut c_void,
        nfad: *mut nfq_data,
        data: *mut c_void,
    ) -> c_int;

    pub const NFQNL_COPY_META: u8 = 1;
    pub const NF_ACCEPT: u32 = 1;

    #[link(name = "netfilter_queue")]
    unsafe extern "C" {
        pub fn nfq_open() -> *mut nfq_handle;
        pub fn nfq_close(h: *mut nfq_handle) -> c_int;
        pub fn nfq_create_queue(
            h: *mut nfq_handle,
            num: u16,
            cb: nfq_callback,
            data: *mut c_void,
        ) -> *mut nfq_q_handle;
        pub fn nfq_destroy_queue(qh: *mut nfq_q_handle) -> c_int;
        pub fn nfq_set_mode(qh: *mut nfq_q_handle, mode: u8, range: u32) -> c_int;
        pub fn nfq_set_queue_maxlen(qh: *mut nfq_q_handle, queuelen: u32) -> c_int;
        pub fn nfq_fd(h: *mut nfq_handle) -> c_int;
        pub fn nfq_handle_packet(h: *mut nfq_handle, buf: *mut c_char, len: c_int) -> c_int;
        pub fn nfq_get_msg_packet_hdr(nfad: *mut nfq_data) -> *mut nfqnl_msg_packet_hdr;
        pub fn nfq_get_timestamp(nfad: *mut nfq_data, tv: *mut libc::timeval) -> c_int;
        pub fn nfq_set_verdict(
            qh: *mut nfq_q_handle,
            id: u32,
            verdict: u32,
            data_len: u32,
            buf: *const u8,
        ) -> c_int;
    }
}

/// A queued packet: its id and, where the kernel stamped it, when it arrived.
type Queued = (u32, Option<SystemTime>);

/// Collects the ids and arrival times of the packets one `nfq_handle_packet` call delivered.
unsafe extern "C" fn on_packet(
    _qh: *mut ffi::nfq_q_handle,
    _nfmsg: *mut std::ffi::c_void,
    nfad: *mut ffi::nfq_data,
    data: *mut std::ffi::c_void,
) -> std::ffi::c_int {
    // SAFETY: `data` is the `Vec<Queued>` registered in `Queue::open`, alive for the queue's
    // life; `nfad` is valid for the duration of this callback; `tv` is a plain out-parameter.
    unsafe {
        let ids = &mut *data.cast::<Vec<Queued>>();
        let hdr = ffi::nfq_get_msg_packet_hdr(nfad);
        if !hdr.is_null() {
            let mut tv = libc::timeval {
                tv_sec: 0,
                tv_usec: 0,
            };
            let arrived =
                (ffi::nfq_get_timestamp(nfad, &mut tv) == 0 && tv.tv_sec > 0).then(|| {
                    SystemTime::UNIX_EPOCH
                        + Duration::new(tv.tv_sec as u64, (tv.tv_usec as u32).min(999_999) * 1000)
                });
            let id = u32::from_be(std::ptr::read_unaligned(&raw const (*hdr).packet_id));
            ids.push((id, arrived));
        }
    }
    0
}

/// An open, bound queue.
struct Queue {
    h: *mut ffi::nfq_handle,
    qh: *mut ffi::nfq_q_handle,
    fd: i32,
    /// Filled by `on_packet`; boxed so its address stays put while the Queue moves.
    #[allow(clippy::box_collection)]
    ids: Box<Vec<Queued>>,
}

impl Queue {
    fn open(num: u16) -> io::Result<Self> {
        let mut ids = Box::new(Vec::with_capacity(1024));
        // SAFETY: plain libnetfilter_queue calls; every handle is checked before use and
        // released in Drop. `ids` outlives the queue (both are owned by the returned Queue).
        unsafe {
            let h = ffi::nfq_open();
            if h.is_null() {
                return Err(io::Error::other(format!(
                    "nfq_open: {} (is the nfnetlink_queue module available?)",
                    io::Error::last_os_error()
                )));
            }
            let qh =
                ffi::nfq_create_queue(h, num, on_packet, (&mut *ids as *mut Vec<Queued>).cast());
            if qh.is_null() {
                let e = io::Error::last_os_error();
                ffi::nfq_close(h);
                return Err(io::Error::other(format!(
                    "cannot bind NFQUEUE {num}: {e} (another holder on it?)"
                )));
            }
            let q = Self {
                h,
                qh,
                fd: ffi::nfq_fd(h),
                ids,
            };
            // Metadata only: the verdict needs the id, not the packet.
            if ffi::nfq_set_mode(qh, ffi::NFQNL_COPY_META, 0) < 0 {
                return Err(io::Error::other("nfq_set_mode failed"));
            }
            // Room for a second of 10,000 targets' packets held at once.
            let _ = ffi::nfq_set_queue_maxlen(qh, 65536);
            let size: libc::c_int = 16 << 20;
            let _ = libc::setsockopt(
                q.fd,
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
            Ok(q)
        }
    }

    fn accept(&mut self, id: u32) {
        // SAFETY: qh is a live queue handle.
        unsafe {
            ffi::nfq_set_verdict(self.qh, id, ffi::NF_ACCEPT, 0, std::ptr::null());
        }
    }

    /// Reads everything queued now; returns the ids that arrived.
    fn drain(&mut self, buf: &mut [u8]) -> io::Result<()> {
        loop {
            // SAFETY: buf is a live, writable buffer of the given length.
            let n = unsafe {
                libc::recv(
                    self.fd,
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EAGAIN) => return Ok(()),
                    // The socket overflowed: those packets are gone (dropped by the kernel).
                    Some(libc::ENOBUFS) | Some(libc::EINTR) => continue,
                    _ => return Err(e),
                }
            }
            // SAFETY: the first n bytes of buf hold netlink messages from the kernel.
            unsafe {
                ffi::nfq_handle_packet(self.h, buf.as_mut_ptr().cast(), n as libc::c_int);
            }
        }
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        // SAFETY: handles from open, released once.
        unsafe {
            ffi::nfq_destroy_queue(self.qh);
            ffi::nfq_close(self.h);
        }
    }
}

/// How late packets left: one-microsecond buckets up to [`Lateness::RANGE_US`], and the rest
/// counted above it. 80 KB whatever the packet count.
#[derive(Debug, Clone)]
pub struct Lateness {
    buckets: Vec<u32>,
    above: u64,
    count: u64,
    max: Duration,
}

impl Default for Lateness {
    fn default() -> Self {
        Self {
            buckets: vec![0; Self::RANGE_US as usize],
            above: 0,
            count: 0,
            max: Duration::ZERO,
        }
    }
}

impl Lateness {
    /// Microseconds kept bucket by bucket; later releases only count (and set the maximum).
    pub const RANGE_US: u64 = 20_000;

    pub fn record(&mut self, late: Duration) {
        let us = late.as_micros() as u64;
        match self.buckets.get_mut(us as usize) {
            Some(b) => *b = b.saturating_add(1),
            None => self.above += 1,
        }
        self.count += 1;
        self.max = self.max.max(late);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn max(&self) -> Duration {
        self.max
    }

    /// The `q` quantile (0..=1) in whole microseconds, rounded up to its bucket's top; `None`
    /// without packets, and the maximum where it falls above the range.
    pub fn quantile_us(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (us, n) in self.buckets.iter().enumerate() {
            seen += u64::from(*n);
            if seen >= rank {
                return Some(us as u64 + 1);
            }
        }
        Some(self.max.as_micros() as u64)
    }
}

/// What a delay loop did.
#[derive(Debug, Default, Clone)]
pub struct DelayStats {
    /// Packets held and released.
    pub packets: u64,
    /// Of those, the ones whose hold started at the kernel's receive timestamp (the others at
    /// the moment this loop read them).
    pub kernel_arrivals: u64,
    /// How long after its due time each packet left.
    pub late: Lateness,
}

impl DelayStats {
    /// The latest any packet left after its due time.
    pub fn max_overshoot(&self) -> Duration {
        self.late.max()
    }

    /// One line for people and scripts: packets, how many by kernel arrival time, and the
    /// release lateness p50, p99 and maximum in microseconds.
    pub fn summary(&self) -> String {
        let q = |q| {
            self.late
                .quantile_us(q)
                .map_or("-".into(), |v| v.to_string())
        };
        format!(
            "{} packets ({} by kernel arrival time), released after due: p50 {} us, p99 {} us, max {} us",
            self.packets,
            self.kernel_arrivals,
            q(0.5),
            q(0.99),
            self.late.max().as_micros()
        )
    }
}

/// Shared with the thread that runs a delay loop.
#[derive(Debug, Default)]
pub struct Control {
    /// Set to end the loop.
    pub stop: AtomicBool,
    /// Set to have the loop print the window's [`DelayStats::summary`] on stderr (as
    /// `nfq-delay: window: ...`) and start a new window; the loop clears it.
    pub report: AtomicBool,
    /// Packets released so far, for watchers.
    pub packets: AtomicU64,
}

/// Holds timestamps on for the namespace's received packets while it lives: the kernel stamps
/// a packet only while some socket asked for stamps, and the hold starts at that stamp.
fn keep_receive_stamps_on() -> Option<std::net::UdpSocket> {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").ok()?;
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: a valid socket and a plain int option.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    (rc == 0).then_some(s)
}

/// A real-time priority (we run as root) keeps ordinary processes from delaying the holder's
/// wake-ups, and a 1 ns timer slack keeps the kernel from batching them: it is the truth the
/// tests measure against, and should release on time even when the machine is busy compiling.
fn run_at_real_time() {
    // SAFETY: prctl and sched_setscheduler only change this thread's scheduling.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong);
        let param = libc::sched_param { sched_priority: 10 };
        if libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) != 0 {
            eprintln!(
                "nfq-delay: no real-time priority ({}); releases may be late under load",
                io::Error::last_os_error()
            );
        }
    }
}

/// The packets held, earliest due first, and what was done with them.
struct Held {
    heap: BinaryHeap<Reverse<(Instant, u32)>>,
    delay: i64,
    jitter: i64,
    total: DelayStats,
    window: DelayStats,
}

impl Held {
    /// Takes in what the queue read at `read` (`Instant`) / `read_sys` (wall clock): each
    /// packet is due its hold after its kernel arrival time where there is one.
    fn admit(&mut self, queued: impl Iterator<Item = Queued>, read: Instant, read_sys: SystemTime) {
        for (id, arrived) in queued {
            let offset = if self.jitter > 0 {
                rand::random_range(-self.jitter..=self.jitter)
            } else {
                0
            };
            let hold = Duration::from_nanos((self.delay + offset).max(0) as u64);
            // The stamp's age, if believable: a wall clock step makes it useless.
            let age = arrived
                .and_then(|a| read_sys.duration_since(a).ok())
                .filter(|age| *age < Duration::from_secs(1));
            if age.is_some() {
                self.total.kernel_arrivals += 1;
                self.window.kernel_arrivals += 1;
            }
            let start = read.checked_sub(age.unwrap_or_default()).unwrap_or(read);
            self.heap.push(Reverse((start + hold, id)));
        }
    }

    /// Releases what is due at `now`.
    fn release(&mut self, queue: &mut Queue, now: Instant, packets: &AtomicU64) {
        while let Some(Reverse((due, id))) = self.heap.peek().copied() {
            if due > now {
                break;
            }
            self.heap.pop();
            queue.accept(id);
            for s in [&mut self.total, &mut self.window] {
                s.packets += 1;
                s.late.record(now - due);
            }
            packets.store(self.total.packets, Ordering::Relaxed);
        }
    }

    /// How long to sleep: until the next due packet, or now and then to notice `stop`.
    fn wait(&self) -> Duration {
        self.heap
            .peek()
            .map(|Reverse((due, _))| due.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_millis(50))
            .min(Duration::from_millis(50))
    }
}

/// Runs the holder on queue `num` in the calling thread's namespace until `ctl.stop` is set.
/// `ready` is called once the queue is bound (or failed to bind), before any packet is read.
pub fn run_delay_loop(
    num: u16,
    delay: Duration,
    jitter: Duration,
    ctl: &Control,
    ready: impl FnOnce(&io::Result<()>),
) -> io::Result<DelayStats> {
    let mut queue = match Queue::open(num) {
        Ok(q) => {
            ready(&Ok(()));
            q
        }
        Err(e) => {
            ready(&Err(io::Error::new(e.kind(), e.to_string())));
            return Err(e);
        }
    };
    let _stamps = keep_receive_stamps_on();
    run_at_real_time();
    let mut held = Held {
        heap: BinaryHeap::new(),
        delay: delay.as_nanos() as i64,
        jitter: jitter.as_nanos() as i64,
        total: DelayStats::default(),
        window: DelayStats::default(),
    };
    let mut buf = vec![0u8; 1 << 16];
    while !ctl.stop.load(Ordering::Relaxed) {
        held.release(&mut queue, Instant::now(), &ctl.packets);
        if ctl.report.swap(false, Ordering::Relaxed) {
            eprintln!("nfq-delay: window: {}", held.window.summary());
            held.window = DelayStats::default();
        }
        let wait = held.wait();
        let ts = libc::timespec {
            tv_sec: wait.as_secs() as libc::time_t,
            tv_nsec: wait.subsec_nanos() as libc::c_long,
        };
        let mut pfd = libc::pollfd {
            fd: queue.fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd and a valid timespec.
        let rc = unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
        if rc > 0 {
            queue.drain(&mut buf)?;
            let (read, read_sys) = (Instant::now(), SystemTime::now());
            held.admit(queue.ids.drain(..), read, read_sys);
        }
    }
    // Let what is still held go rather than leave it to the kernel to drop.
    for Reverse((_, id)) in held.heap.drain() {
        queue.accept(id);
    }
    Ok(held.total)
}

/// A delay holder running on its own thread inside a namespace; stops on drop.
#[derive(Debug)]
pub struct DelayQueue {
    ctl: Arc<Control>,
    thread: Option<JoinHandle<io::Result<DelayStats>>>,
}

impl DelayQueue {
    /// Holds every echo request `ns` receives (IPv4 and IPv6) for `delay`
    /// (± `jitter`) in an NFQUEUE holder on queue `queue`, until the returned guard is dropped.
    ///
    /// Requests rather than replies: a reply is charged to the kernel's own ICMP socket while
    /// it is held, whose small send buffer would then drop replies once a hundred or so are
    /// held at once. A request that crossed the veth belongs to no socket.
    pub fn echo_requests(ns: &Netns, queue: u16, delay: Duration, jitter: Duration) -> Self {
        // The holder binds first: packets sent to an unbound queue are dropped.
        let holder = Self::start(ns, queue, delay, jitter);
        let q = queue.to_string();
        ns.iptables(&[
            "-A",
            "INPUT",
            "-p",
            "icmp",
            "--icmp-type",
            "echo-request",
            "-j",
            "NFQUEUE",
            "--queue-num",
            &q,
        ]);
        ns.ip6tables(&[
            "-A",
            "INPUT",
            "-p",
            "icmpv6",
            "--icmpv6-type",
            "echo-request",
            "-j",
            "NFQUEUE",
            "--queue-num",
            &q,
        ]);
        holder
    }

    /// Starts the holder on queue `num` inside `ns` and waits until it is bound. Panics if it
    /// cannot bind. Add the iptables rule that feeds the queue after this returns.
    pub fn start(ns: &Netns, num: u16, delay: Duration, jitter: Duration) -> Self {
        let path = format!("/var/run/netns/{}", ns.name());
        let ctl = Arc::new(Control::default());
        let (tx, rx) = std::sync::mpsc::channel();
        let c = ctl.clone();
        let thread = std::thread::Builder::new()
            .name(format!("nfq-delay-{num}"))
            .spawn(move || {
                let f = std::fs::File::open(&path)?;
                use std::os::fd::AsRawFd;
                // SAFETY: a valid namespace fd; setns changes only this thread's namespace.
                if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    let e = io::Error::last_os_error();
                    let _ = tx.send(Err(format!("setns {path}: {e}")));
                    return Err(e);
                }
                run_delay_loop(num, delay, jitter, &c, |r| {
                    let _ = tx.send(r.as_ref().map(|_| ()).map_err(|e| e.to_string()));
                })
            })
            .expect("spawn the delay thread");
        match rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("NFQUEUE delay holder: {e}"),
            Err(_) => panic!("NFQUEUE delay holder thread died before binding"),
        }
        Self {
            ctl,
            thread: Some(thread),
        }
    }

    /// Packets released so far.
    pub fn packets(&self) -> u64 {
        self.ctl.packets.load(Ordering::Relaxed)
    }

    /// Stops the holder and returns what it did.
    pub fn stop(mut self) -> DelayStats {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> DelayStats {
        self.ctl.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(Ok(stats))) => stats,
            Some(Ok(Err(e))) => panic!("NFQUEUE delay holder failed: {e}"),
            Some(Err(_)) => panic!("NFQUEUE delay holder panicked"),
            None => DelayStats::default(),
        }
    }
}

impl Drop for DelayQueue {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.ctl.stop.store(true, Ordering::Relaxed);
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lateness_quantiles_come_from_microsecond_buckets() {
        let mut l = Lateness::default();
        assert_eq!(l.quantile_us(0.5), None);
        for us in 0..100u64 {
            l.record(Duration::from_nanos(us * 1000 + 400));
        }
        assert_eq!(l.count(), 100);
        assert_eq!(l.quantile_us(0.5), Some(50));
        assert_eq!(l.quantile_us(0.99), Some(99));
        assert_eq!(l.quantile_us(1.0), Some(100));
        // Beyond the range: counted, and a quantile there is the maximum.
        l.record(Duration::from_secs(3));
        l.record(Duration::from_secs(2));
        assert_eq!(l.count(), 102);
        assert_eq!(l.quantile_us(1.0), Some(3_000_000));
        assert_eq!(l.max(), Duration::from_secs(3));
    }

    #[test]
    fn a_summary_names_packets_stamps_and_quantiles() {
        let mut s = DelayStats {
            packets: 3,
            kernel_arrivals: 2,
            ..DelayStats::default()
        };
        for us in [5, 7, 40] {
            s.late.record(Duration::from_micros(us));
        }
        assert_eq!(
            s.summary(),
            "3 packets (2 by kernel arrival time), released after due: p50 8 us, p99 41 us, max 40 us"
        );
    }

    #[test]
    fn a_hold_starts_at_the_kernel_stamp_when_it_is_believable() {
        let mut h = Held {
            heap: BinaryHeap::new(),
            delay: 10_000_000,
            jitter: 0,
            total: DelayStats::default(),
            window: DelayStats::default(),
        };
        let (read, sys) = (Instant::now(), SystemTime::now());
        let stamped = sys - Duration::from_micros(300);
        let stepped = sys + Duration::from_secs(5);
        h.admit(
            [(1, Some(stamped)), (2, None), (3, Some(stepped))].into_iter(),
            read,
            sys,
        );
        let mut due: Vec<_> = h.heap.iter().map(|Reverse((d, id))| (*id, *d)).collect();
        due.sort();
        let ten = Duration::from_millis(10);
        assert_eq!(due[0], (1, read - Duration::from_micros(300) + ten));
        assert_eq!(due[1], (2, read + ten));
        assert_eq!(
            due[2],
            (3, read + ten),
            "a stamp from the future is not believed"
        );
        assert_eq!(h.total.kernel_arrivals, 1);
    }
}
