//! An NFQUEUE delay holder: accepts each queued packet a fixed time (± jitter) after it arrived.
//!
//! Stands in for `tc qdisc netem delay` on kernels without netem. An iptables rule sends the
//! packets to delay (`-j NFQUEUE --queue-num N`); this loop reads them from the queue with
//! libnetfilter_queue, keeps only their ids, and gives each an ACCEPT verdict when its time comes.
//! It sleeps with `ppoll` and a 1 ns timer slack, so a held packet leaves within a few
//! microseconds of its due time on an idle machine.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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
        pub fn nfq_set_verdict(
            qh: *mut nfq_q_handle,
            id: u32,
            verdict: u32,
            data_len: u32,
            buf: *const u8,
        ) -> c_int;
    }
}

/// Collects the ids of the packets one `nfq_handle_packet` call delivered.
unsafe extern "C" fn on_packet(
    _qh: *mut ffi::nfq_q_handle,
    _nfmsg: *mut std::ffi::c_void,
    nfad: *mut ffi::nfq_data,
    data: *mut std::ffi::c_void,
) -> std::ffi::c_int {
    // SAFETY: `data` is the `Vec<u32>` registered in `Queue::open`, alive for the queue's life;
    // `nfad` is valid for the duration of this callback.
    unsafe {
        let ids = &mut *data.cast::<Vec<u32>>();
        let hdr = ffi::nfq_get_msg_packet_hdr(nfad);
        if !hdr.is_null() {
            ids.push(u32::from_be(std::ptr::read_unaligned(
                &raw const (*hdr).packet_id,
            )));
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
    ids: Box<Vec<u32>>,
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
            let qh = ffi::nfq_create_queue(h, num, on_packet, (&mut *ids as *mut Vec<u32>).cast());
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

/// What a delay loop did.
#[derive(Debug, Default, Clone, Copy)]
pub struct DelayStats {
    /// Packets held and released.
    pub packets: u64,
    /// The latest any packet left after its due time.
    pub max_overshoot: Duration,
}

/// Runs the holder on queue `num` in the calling thread's namespace until `stop` is set.
/// `ready` is called once the queue is bound (or failed to bind), before any packet is read.
pub fn run_delay_loop(
    num: u16,
    delay: Duration,
    jitter: Duration,
    stop: &AtomicBool,
    packets: &AtomicU64,
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
    // The holder is the truth the tests measure against: it should release on time even
    // when the machine is busy compiling. A real-time priority (we run as root) keeps
    // ordinary processes from delaying its wake-ups; the 1 ns timer slack keeps the kernel
    // from batching them.
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
    let mut held: BinaryHeap<Reverse<(Instant, u32)>> = BinaryHeap::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut stats = DelayStats::default();
    let jitter_ns = jitter.as_nanos() as i64;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        while let Some(Reverse((due, id))) = held.peek().copied() {
            if due > now {
                break;
            }
            held.pop();
            queue.accept(id);
            stats.packets += 1;
            packets.store(stats.packets, Ordering::Relaxed);
            stats.max_overshoot = stats.max_overshoot.max(now - due);
        }
        // Wake for the next due packet, or now and then to notice `stop`.
        let wait = held
            .peek()
            .map(|Reverse((due, _))| due.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_millis(50))
            .min(Duration::from_millis(50));
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
            let arrived = Instant::now();
            for id in queue.ids.drain(..) {
                let offset = if jitter_ns > 0 {
                    rand::random_range(-jitter_ns..=jitter_ns)
                } else {
                    0
                };
                let hold = Duration::from_nanos((delay.as_nanos() as i64 + offset).max(0) as u64);
                held.push(Reverse((arrived + hold, id)));
            }
        }
    }
    // Let what is still held go rather than leave it to the kernel to drop.
    for Reverse((_, id)) in held.drain() {
        queue.accept(id);
    }
    Ok(stats)
}

/// A delay holder running on its own thread inside a namespace; stops on drop.
#[derive(Debug)]
pub struct DelayQueue {
    stop: Arc<AtomicBool>,
    packets: Arc<AtomicU64>,
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
        let stop = Arc::new(AtomicBool::new(false));
        let packets = Arc::new(AtomicU64::new(0));
        let (tx, rx) = std::sync::mpsc::channel();
        let (s, p) = (stop.clone(), packets.clone());
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
                run_delay_loop(num, delay, jitter, &s, &p, |r| {
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
            stop,
            packets,
            thread: Some(thread),
        }
    }

    /// Packets released so far.
    pub fn packets(&self) -> u64 {
        self.packets.load(Ordering::Relaxed)
    }

    /// Stops the holder and returns what it did.
    pub fn stop(mut self) -> DelayStats {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> DelayStats {
        self.stop.store(true, Ordering::Relaxed);
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
            self.stop.store(true, Ordering::Relaxed);
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }
}
