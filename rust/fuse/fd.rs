//! Thin wrappers over the system calls the native loop makes on raw descriptors.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

pub(crate) use crate::engine::{eventfd, signal};

/// `FUSE_DEV_IOC_CLONE`: `_IOR(229, 0, uint32_t)`.
const FUSE_DEV_IOC_CLONE: libc::c_ulong = 0x8004_e500;

fn check(res: libc::c_int) -> io::Result<libc::c_int> {
    if res < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(res)
    }
}

fn owned(res: libc::c_int) -> io::Result<OwnedFd> {
    let fd = check(res)?;
    // SAFETY: `fd` was just returned by the kernel as a new descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The count a read- or write-like call returned, or its error; calls cut short by a
/// signal (`EINTR`) are made again.
fn retrying(mut call: impl FnMut() -> isize) -> io::Result<usize> {
    loop {
        let n = call();
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn poll_in(set: &mut [libc::pollfd], timeout_ms: libc::c_int) -> io::Result<usize> {
    // SAFETY: `set` is a live, mutably borrowed array of `set.len()` pollfds.
    retrying(
        || unsafe { libc::poll(set.as_mut_ptr(), set.len() as libc::nfds_t, timeout_ms) } as isize
    )
}

/// Waits until `fd` is readable or `stop` is; true when `stop` is.
pub fn wait_readable(fd: RawFd, stop: &OwnedFd) -> io::Result<bool> {
    let mut set = [
        libc::pollfd { fd, events: libc::POLLIN, revents: 0 },
        libc::pollfd { fd: stop.as_raw_fd(), events: libc::POLLIN, revents: 0 },
    ];
    poll_in(&mut set, -1)?;
    Ok(set[1].revents != 0)
}

/// Whether `fd` is readable now (never blocks).
pub fn is_readable(fd: &OwnedFd) -> bool {
    let mut set = [libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
    poll_in(&mut set, 0).is_ok_and(|n| n > 0)
}

/// One `read` into `buf`.
pub fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: writes at most `buf.len()` bytes into `buf`, which is borrowed mutably.
    retrying(|| unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) })
}

/// One `recv` of a whole datagram into `buf`; the datagram's real size, which is larger
/// than `buf` when it was cut (`MSG_TRUNC`).
pub fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: writes at most `buf.len()` bytes into `buf`, which is borrowed mutably.
    retrying(|| unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_TRUNC) })
}

/// Writes `parts` as one message (one FUSE reply, one datagram); the bytes written.
pub fn writev(fd: RawFd, parts: &[&[u8]]) -> io::Result<usize> {
    let iov: Vec<libc::iovec> = parts
        .iter()
        .map(|p| libc::iovec { iov_base: p.as_ptr() as *mut libc::c_void, iov_len: p.len() })
        .collect();
    // SAFETY: each iovec points into a slice borrowed for this call; writev only reads.
    retrying(|| unsafe { libc::writev(fd, iov.as_ptr(), iov.len() as libc::c_int) })
}

/// A `SOCK_SEQPACKET` pair (message boundaries kept, as the FUSE device keeps them), each
/// end able to carry messages of `message` bytes. Buffers that large need
/// `SO_SNDBUFFORCE` (CAP_NET_ADMIN) unless `net.core.wmem_max` allows them.
pub fn message_pair(message: usize) -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a live array of two ints for the kernel to fill.
    check(unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    })?;
    // SAFETY: both descriptors were just created and are owned by nobody else.
    let (a, b) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    for end in [&a, &b] {
        set_sndbuf(end.as_raw_fd(), message)?;
    }
    Ok((a, b))
}

fn set_sndbuf(fd: RawFd, message: usize) -> io::Result<()> {
    // A datagram must fit the sender's buffer, less some overhead the kernel keeps.
    let want = libc::c_int::try_from(message * 2).unwrap_or(libc::c_int::MAX);
    for opt in [libc::SO_SNDBUFFORCE, libc::SO_SNDBUF] {
        // SAFETY: passes a pointer to a live c_int and its size.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&want as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        let mut got: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: the kernel writes one c_int into `got` and its size into `len`.
        check(unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                (&mut got as *mut libc::c_int).cast(),
                &mut len,
            )
        })?;
        if got as usize > message + 4096 {
            return Ok(());
        }
    }
    Err(io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!(
            "cannot size a socket buffer for {message}-byte FUSE messages: needs CAP_NET_ADMIN \
             or net.core.wmem_max >= {}",
            message * 2
        ),
    ))
}

/// A new descriptor for `fd`'s file, close-on-exec.
pub fn dup(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: no pointers; returns a new descriptor or -1.
    owned(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) })
}

/// Makes descriptor number `target` refer to `src`'s file (close-on-exec).
pub fn replace(src: &OwnedFd, target: RawFd) -> io::Result<()> {
    // SAFETY: no pointers; `target` is a number the caller owns and wants replaced.
    check(unsafe { libc::dup3(src.as_raw_fd(), target, libc::O_CLOEXEC) }).map(|_| ())
}

/// A new non-blocking `/dev/fuse` descriptor attached to `session`'s connection: requests
/// read from it are answered on it.
pub fn clone_device(session: RawFd) -> io::Result<OwnedFd> {
    let path = c"/dev/fuse";
    // SAFETY: `path` is a NUL-terminated literal; returns a new descriptor or -1.
    let fd = owned(unsafe {
        libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC | libc::O_NONBLOCK)
    })?;
    let src = session as u32;
    // SAFETY: the ioctl reads one u32 (the session's descriptor) from a live local.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), FUSE_DEV_IOC_CLONE, &src as *const u32) })?;
    Ok(fd)
}

/// Makes `fd` non-blocking.
pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: no pointers.
    let flags = check(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    // SAFETY: no pointers.
    check(unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) }).map(|_| ())
}

/// Sends `msg` as one datagram, blocking while the peer's queue is full.
pub fn send(fd: RawFd, msg: &[u8]) -> io::Result<()> {
    // SAFETY: reads `msg.len()` bytes from a live slice.
    retrying(|| unsafe { libc::send(fd, msg.as_ptr().cast(), msg.len(), libc::MSG_NOSIGNAL) })
        .map(|_| ())
}

/// Ends both directions of a socket: blocked senders and receivers on it return.
pub fn shutdown(fd: &OwnedFd) {
    // SAFETY: no pointers; an error (not a socket, not connected) changes nothing.
    unsafe { libc::shutdown(fd.as_raw_fd(), libc::SHUT_RDWR) };
}
