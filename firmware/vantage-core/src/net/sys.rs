//! Every `unsafe` call of the ping and trace sockets, each with its `SAFETY` note: socket
//! options socket2 does not cover, `recvmsg` with control messages (the error queue, kernel
//! timestamps, the answer's TTL), `sendmsg` with a per-packet TTL, `TCP_INFO`, and handing a
//! socket to tokio's reactor.

use std::io;
use std::mem;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::RawFd;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use socket2::{SockAddr, SockAddrStorage, Socket};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// An extended error from the socket error queue (`IP_RECVERR`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ExtErr {
    pub origin: u8,
    pub typ: u8,
    pub code: u8,
    pub info: u32,
    /// The host that sent the ICMP error.
    pub offender: Option<IpAddr>,
}

impl ExtErr {
    pub fn is_icmp(&self) -> bool {
        self.origin == libc::SO_EE_ORIGIN_ICMP || self.origin == libc::SO_EE_ORIGIN_ICMP6
    }
}

/// One message read with `recvmsg`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Msg {
    pub len: usize,
    /// `msg_name`: the sender, or for the error queue the probe's destination.
    pub name: Option<SocketAddr>,
    /// When the kernel received the packet (`SO_TIMESTAMPNS`).
    pub kernel_time: Option<SystemTime>,
    /// The software stamp of `SO_TIMESTAMPING`: for a sent packet looped back on the error
    /// queue, when it left.
    pub sent_time: Option<SystemTime>,
    /// TTL / hop limit the packet arrived with.
    pub ttl: Option<u8>,
    pub err: Option<ExtErr>,
    pub read_at: Instant,
}

/// Sets an integer socket option.
pub(crate) fn set_int(fd: RawFd, level: i32, opt: i32, value: i32) -> io::Result<()> {
    set_bytes(fd, level, opt, &value.to_ne_bytes())
}

/// Sets a socket option from raw bytes.
pub(crate) fn set_bytes(fd: RawFd, level: i32, opt: i32, value: &[u8]) -> io::Result<()> {
    // SAFETY: setsockopt reads value.len() bytes from value, which holds that many.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            value.as_ptr().cast(),
            value.len() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Asks for kernel receive timestamps (`SO_TIMESTAMPNS`, [`Msg::kernel_time`]).
pub(crate) fn stamp_receives(fd: RawFd) {
    if let Err(e) = set_int(fd, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1) {
        tracing::debug!("SO_TIMESTAMPNS unavailable, RTTs use user-space receive times: {e}");
    }
}

/// Asks for software send timestamps (`SO_TIMESTAMPING`, [`Msg::sent_time`]), with each sent
/// packet looped back on the error queue so that its stamp names it; whether the kernel agreed.
pub(crate) fn stamp_sends(fd: RawFd) -> bool {
    let flags = libc::SOF_TIMESTAMPING_TX_SOFTWARE | libc::SOF_TIMESTAMPING_SOFTWARE;
    match set_int(fd, libc::SOL_SOCKET, libc::SO_TIMESTAMPING, flags as i32) {
        Ok(()) => true,
        Err(e) => {
            tracing::debug!("SO_TIMESTAMPING unavailable, RTTs use user-space send times: {e}");
            false
        }
    }
}

/// Hands a socket to tokio's reactor.
pub(crate) fn register(s: Socket, interest: Interest) -> io::Result<AsyncFd<Socket>> {
    // SAFETY: the Socket owns its fd, keeps it open and never swaps it while it lives.
    unsafe { AsyncFd::register_with_interest(s, interest) }.map_err(io::Error::from)
}

/// Reads one message without blocking; `errqueue` reads the socket error queue.
pub(crate) fn recv(fd: RawFd, buf: &mut [u8], errqueue: bool) -> io::Result<Msg> {
    let mut addr = SockAddrStorage::zeroed();
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // u64 elements keep the control buffer aligned for cmsghdr.
    let mut control = [0u64; 64];
    let namelen = addr.size_of();
    let mut msg = msghdr((&raw mut addr).cast(), namelen, &mut iov, &mut control);
    let flags = libc::MSG_DONTWAIT | if errqueue { libc::MSG_ERRQUEUE } else { 0 };
    // SAFETY: all pointers in msg point to live buffers of the stated sizes.
    let n = unsafe { libc::recvmsg(fd, &mut msg, flags) };
    let read_at = Instant::now();
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Msg {
        len: (n as usize).min(buf.len()),
        name: None,
        kernel_time: None,
        sent_time: None,
        ttl: None,
        err: None,
        read_at,
    };
    if msg.msg_namelen > 0 {
        // SAFETY: the kernel wrote a sockaddr of msg_namelen bytes into addr.
        out.name = unsafe { SockAddr::new(addr, msg.msg_namelen) }.as_socket();
    }
    // SAFETY: recvmsg just filled msg, and control is still alive.
    unsafe { read_control(&msg, &mut out) };
    Ok(out)
}

/// A message header over an address, one buffer and a control buffer (u64 elements keep it
/// aligned for cmsghdr); the pointers must outlive its use.
fn msghdr(
    name: *mut libc::c_void,
    namelen: libc::socklen_t,
    iov: &mut libc::iovec,
    control: &mut [u64],
) -> libc::msghdr {
    // SAFETY: msghdr is plain data; zero is a valid initial state.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_name = name;
    msg.msg_namelen = namelen;
    msg.msg_iov = iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = mem::size_of_val(control) as _;
    msg
}

/// Reads the control messages `recvmsg` left in `msg` into `out`.
///
/// # Safety
/// `msg` was just filled by `recvmsg`: its control pointer and length describe a live buffer
/// of control messages the kernel wrote.
unsafe fn read_control(msg: &libc::msghdr, out: &mut Msg) {
    // SAFETY: per the contract; CMSG_* walk within msg_controllen and every payload is read
    // unaligned, only when it is as long as the type the kernel documents for it.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(msg);
        while !cmsg.is_null() {
            let (level, typ) = ((*cmsg).cmsg_level, (*cmsg).cmsg_type);
            let data = libc::CMSG_DATA(cmsg);
            let data_len = (*cmsg).cmsg_len as usize - (data as usize - cmsg as usize);
            let has = |size: usize| data_len >= size;
            match (level, typ) {
                (libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS)
                    if has(mem::size_of::<libc::timespec>()) =>
                {
                    out.kernel_time = wall_time(std::ptr::read_unaligned(data.cast()));
                }
                // Three stamps: software, (deprecated), hardware; only software ones are asked.
                (libc::SOL_SOCKET, libc::SCM_TIMESTAMPING)
                    if has(mem::size_of::<libc::timespec>()) =>
                {
                    out.sent_time = wall_time(std::ptr::read_unaligned(data.cast()))
                        .filter(|t| *t >= UNIX_EPOCH + Duration::from_secs(1));
                }
                (libc::SOL_IP, libc::IP_TTL) | (libc::SOL_IPV6, libc::IPV6_HOPLIMIT) if has(4) => {
                    let v: i32 = std::ptr::read_unaligned(data.cast());
                    out.ttl = u8::try_from(v).ok();
                }
                (libc::SOL_IP, libc::IP_RECVERR) | (libc::SOL_IPV6, libc::IPV6_RECVERR)
                    if has(mem::size_of::<libc::sock_extended_err>()) =>
                {
                    out.err = Some(ext_err(data, data_len));
                }
                _ => {}
            }
            cmsg = libc::CMSG_NXTHDR(msg, cmsg);
        }
    }
}

/// A kernel timestamp as wall-clock time.
fn wall_time(ts: libc::timespec) -> Option<SystemTime> {
    (ts.tv_sec >= 0).then(|| UNIX_EPOCH + Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

/// Sends `buf` to `to` with a per-packet TTL / hop limit.
pub(crate) fn send_ttl(fd: RawFd, buf: &[u8], to: SocketAddr, ttl: u8) -> io::Result<()> {
    let to = SockAddr::from(to);
    let mut iov = libc::iovec {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    let mut control = [0u64; 4];
    let mut msg = msghdr(
        to.as_ptr().cast_mut().cast(),
        to.len(),
        &mut iov,
        &mut control,
    );
    // SAFETY: CMSG_SPACE is a pure size computation.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(mem::size_of::<i32>() as u32) } as _;
    let (level, typ) = if to.is_ipv6() {
        (libc::SOL_IPV6, libc::IPV6_HOPLIMIT)
    } else {
        (libc::SOL_IP, libc::IP_TTL)
    };
    // SAFETY: the control buffer holds one cmsghdr with an int payload (CMSG_SPACE above), and
    // every pointer in msg refers to a live buffer of the stated size; sendmsg only reads them.
    let n = unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = level;
        (*cmsg).cmsg_type = typ;
        (*cmsg).cmsg_len = libc::CMSG_LEN(mem::size_of::<i32>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<i32>(), i32::from(ttl));
        libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The handshake's RTT as the kernel measured it (`tcpi_rtt` of `TCP_INFO`), once it has one.
pub(crate) fn tcp_rtt(fd: RawFd) -> Option<Duration> {
    // SAFETY: tcp_info is plain data; the kernel fills at most `len` bytes of it.
    let mut info: libc::tcp_info = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: info and len describe a writable buffer of that size.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut len,
        )
    };
    (rc == 0 && info.tcpi_rtt > 0).then(|| Duration::from_micros(u64::from(info.tcpi_rtt)))
}

/// The extended error of an `IP_RECVERR` / `IPV6_RECVERR` control message, with the address of
/// the node that sent it when the kernel appended one.
///
/// # Safety
/// `data` must point to `data_len` readable bytes of such a message's payload, at least a
/// `sock_extended_err` long.
unsafe fn ext_err(data: *const u8, data_len: usize) -> ExtErr {
    let head = mem::size_of::<libc::sock_extended_err>();
    // SAFETY: the caller vouches for data_len >= head bytes at data; the read is unaligned.
    let ee: libc::sock_extended_err = unsafe { std::ptr::read_unaligned(data.cast()) };
    let off_len = data_len - head;
    let offender = if off_len >= mem::size_of::<libc::sockaddr_in>() {
        let mut st = SockAddrStorage::zeroed();
        let len = off_len.min(st.size_of() as usize);
        // SAFETY: the len bytes after the header are within the payload and fit in st; the
        // kernel appends a sockaddr of that length, so st holds one.
        unsafe {
            std::ptr::copy_nonoverlapping(data.add(head), (&raw mut st).cast::<u8>(), len);
            SockAddr::new(st, len as libc::socklen_t)
        }
        .as_socket()
        .map(|a| a.ip())
    } else {
        None
    };
    ExtErr {
        origin: ee.ee_origin,
        typ: ee.ee_type,
        code: ee.ee_code,
        info: ee.ee_info,
        offender: offender.filter(|a| !a.is_unspecified()),
    }
}
