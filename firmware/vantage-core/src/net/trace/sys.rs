//! Thin wrappers over the socket calls socket2 does not cover: `recvmsg` with control messages
//! (the error queue, kernel timestamps, the answer's TTL) and `sendmsg` with a per-packet TTL.

use std::io;
use std::mem::{self, MaybeUninit};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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
    pub kernel_time: Option<SystemTime>,
    /// TTL / hop limit the packet arrived with.
    pub ttl: Option<u8>,
    pub err: Option<ExtErr>,
    pub read_at: Instant,
}

/// Sets an integer socket option.
pub(crate) fn set_int(fd: RawFd, level: i32, opt: i32, value: i32) -> io::Result<()> {
    // SAFETY: valid fd; the option value is a c_int of the declared size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (&value as *const i32).cast(),
            mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets a socket option from raw bytes.
pub(crate) fn set_bytes(fd: RawFd, level: i32, opt: i32, value: &[u8]) -> io::Result<()> {
    // SAFETY: valid fd; value points to value.len() readable bytes.
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

/// Reads one message without blocking; `errqueue` reads the socket error queue.
pub(crate) fn recv(fd: RawFd, buf: &mut [u8], errqueue: bool) -> io::Result<Msg> {
    let mut addr = MaybeUninit::<libc::sockaddr_storage>::zeroed();
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // u64 elements keep the control buffer aligned for cmsghdr.
    let mut control = [0u64; 64];
    // SAFETY: msghdr is plain data; zero is a valid initial state.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_name = addr.as_mut_ptr().cast();
    msg.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = mem::size_of_val(&control) as _;
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
        ttl: None,
        err: None,
        read_at,
    };
    if msg.msg_namelen > 0 {
        // SAFETY: the kernel wrote msg_namelen bytes of a sockaddr into addr.
        out.name = unsafe { sockaddr(addr.as_ptr()) };
    }
    // SAFETY: msg was filled by recvmsg; CMSG_* walk within msg_controllen and every payload
    // is read unaligned with the size the kernel documents for its type.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            let (level, typ) = ((*cmsg).cmsg_level, (*cmsg).cmsg_type);
            let data = libc::CMSG_DATA(cmsg);
            let data_len = (*cmsg).cmsg_len as usize - (data as usize - cmsg as usize);
            match (level, typ) {
                (libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS)
                    if data_len >= mem::size_of::<libc::timespec>() =>
                {
                    let ts: libc::timespec = std::ptr::read_unaligned(data.cast());
                    if ts.tv_sec >= 0 {
                        out.kernel_time =
                            Some(UNIX_EPOCH + Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32));
                    }
                }
                (libc::SOL_IP, libc::IP_TTL) | (libc::SOL_IPV6, libc::IPV6_HOPLIMIT)
                    if data_len >= 4 =>
                {
                    let v: i32 = std::ptr::read_unaligned(data.cast());
                    out.ttl = u8::try_from(v).ok();
                }
                (libc::SOL_IP, libc::IP_RECVERR) | (libc::SOL_IPV6, libc::IPV6_RECVERR)
                    if data_len >= mem::size_of::<libc::sock_extended_err>() =>
                {
                    out.err = Some(ext_err(data, data_len));
                }
                _ => {}
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok(out)
}

/// Sends `buf` to `to` with a per-packet TTL / hop limit.
pub(crate) fn send_ttl(fd: RawFd, buf: &[u8], to: SocketAddr, ttl: u8) -> io::Result<()> {
    let (mut storage, len) = to_sockaddr(to);
    let mut iov = libc::iovec {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    let mut control = [0u64; 4];
    // SAFETY: msghdr is plain data; zero is a valid initial state.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_name = (&mut storage as *mut libc::sockaddr_storage).cast();
    msg.msg_namelen = len;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE is a pure size computation.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(mem::size_of::<i32>() as u32) } as _;
    let (level, typ) = if to.is_ipv6() {
        (libc::SOL_IPV6, libc::IPV6_HOPLIMIT)
    } else {
        (libc::SOL_IP, libc::IP_TTL)
    };
    // SAFETY: the control buffer holds one cmsghdr with an int payload (CMSG_SPACE above), and
    // every pointer in msg refers to a live buffer of the stated size.
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

fn to_sockaddr(a: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; zero is valid.
    let mut st: libc::sockaddr_storage = unsafe { mem::zeroed() };
    match a {
        SocketAddr::V4(v4) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in.
            let sin = unsafe {
                &mut *(&mut st as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>()
            };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = v4.port().to_be();
            sin.sin_addr.s_addr = u32::from(*v4.ip()).to_be();
            (st, mem::size_of::<libc::sockaddr_in>() as libc::socklen_t)
        }
        SocketAddr::V6(v6) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in6.
            let sin6 = unsafe {
                &mut *(&mut st as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = v6.port().to_be();
            sin6.sin6_addr.s6_addr = v6.ip().octets();
            sin6.sin6_scope_id = v6.scope_id();
            (st, mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t)
        }
    }
}

/// # Safety
/// `addr` must point to an initialised sockaddr_storage.
unsafe fn sockaddr(addr: *const libc::sockaddr_storage) -> Option<SocketAddr> {
    // SAFETY: per the contract; the family field says which struct it is.
    unsafe {
        match i32::from((*addr).ss_family) {
            libc::AF_INET => {
                let sin = &*(addr.cast::<libc::sockaddr_in>());
                Some(SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                    u16::from_be(sin.sin_port),
                )))
            }
            libc::AF_INET6 => {
                let sin6 = &*(addr.cast::<libc::sockaddr_in6>());
                Some(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                    u16::from_be(sin6.sin6_port),
                    0,
                    sin6.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }
}

/// The extended error of an `IP_RECVERR` / `IPV6_RECVERR` control message, with the address of
/// the node that sent it when the kernel appended one.
///
/// # Safety
/// `data` must point to `data_len` readable bytes of such a message's payload, at least a
/// `sock_extended_err` long.
unsafe fn ext_err(data: *const u8, data_len: usize) -> ExtErr {
    // SAFETY: the caller vouches for data_len bytes at data; reads are unaligned and bounded.
    unsafe {
        let ee: libc::sock_extended_err = std::ptr::read_unaligned(data.cast());
        let off_len = data_len - mem::size_of::<libc::sock_extended_err>();
        let offender = if off_len >= mem::size_of::<libc::sockaddr_in>() {
            let mut st = MaybeUninit::<libc::sockaddr_storage>::zeroed();
            std::ptr::copy_nonoverlapping(
                data.add(mem::size_of::<libc::sock_extended_err>()),
                st.as_mut_ptr().cast::<u8>(),
                off_len.min(mem::size_of::<libc::sockaddr_storage>()),
            );
            sockaddr(st.as_ptr()).map(|a| a.ip())
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
}
