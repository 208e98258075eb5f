//! The per-request socket system calls, made without glibc's cancellation wrappers.
//!
//! glibc's `send`, `recv` and `sendmsg` are POSIX thread-cancellation points. While the process
//! has one thread the wrappers go straight to the kernel; as soon as a second thread exists
//! (the default executor after any `getaddrinfo`, `to_thread`, the watchdog) each call enables
//! and disables asynchronous cancellation around the system call, about 90 instructions per
//! call, 3 calls per echoed request. Python never cancels threads (`pthread_cancel`), so the
//! cancellation point is of no use here: `syscall(2)` makes the same system call without it.
//! Each function returns what the system call returns (-1 with `errno` set on failure).

use std::os::fd::RawFd;

/// `recv(fd, buf, flags)` (as `recvfrom` without an address, which is what glibc's `recv`
/// calls on x86-64 too).
pub fn recv(fd: RawFd, buf: &mut [u8], flags: libc::c_int) -> isize {
    // SAFETY: `buf` is valid for writes of its length during the call; no address buffer is
    // passed (both null), which recvfrom allows.
    unsafe {
        libc::syscall(
            libc::SYS_recvfrom,
            fd,
            buf.as_mut_ptr(),
            buf.len(),
            flags,
            std::ptr::null_mut::<libc::sockaddr>(),
            std::ptr::null_mut::<libc::socklen_t>(),
        ) as isize
    }
}

/// `send(fd, data, flags)` (as `sendto` without an address).
pub fn send(fd: RawFd, data: &[u8], flags: libc::c_int) -> isize {
    // SAFETY: `data` is valid for reads of its length during the call; a null address with
    // length 0 is `send`.
    unsafe {
        libc::syscall(
            libc::SYS_sendto,
            fd,
            data.as_ptr(),
            data.len(),
            flags,
            std::ptr::null::<libc::sockaddr>(),
            0 as libc::socklen_t,
        ) as isize
    }
}

/// `sendmsg(fd, msg, flags)`.
///
/// # Safety
/// `msg` must describe live buffers (iovecs, and the address and control data if any) that
/// stay valid for reads during the call.
pub unsafe fn sendmsg(fd: RawFd, msg: &libc::msghdr, flags: libc::c_int) -> isize {
    // SAFETY: the caller guarantees `msg` and what it points to are valid for the call.
    unsafe { libc::syscall(libc::SYS_sendmsg, fd, msg as *const libc::msghdr, flags) as isize }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    #[test]
    #[cfg_attr(miri, ignore = "Miri does not emulate raw socket system calls")]
    fn send_and_recv_move_bytes_and_report_errno() {
        let (a, b) = UnixStream::pair().unwrap();
        assert_eq!(send(a.as_raw_fd(), b"ping", libc::MSG_NOSIGNAL), 4);
        let mut buf = [0u8; 16];
        assert_eq!(recv(b.as_raw_fd(), &mut buf, 0), 4);
        assert_eq!(&buf[..4], b"ping");
        b.set_nonblocking(true).unwrap();
        assert_eq!(recv(b.as_raw_fd(), &mut buf, 0), -1);
        assert_eq!(io::Error::last_os_error().kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri does not emulate raw socket system calls")]
    fn sendmsg_sends_every_piece() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut pieces = [
            libc::iovec {
                iov_base: b"ab".as_ptr() as *mut _,
                iov_len: 2,
            },
            libc::iovec {
                iov_base: b"cd".as_ptr() as *mut _,
                iov_len: 2,
            },
        ];
        // SAFETY: zeroed msghdr is a valid "no address, no control data" header.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = pieces.as_mut_ptr();
        msg.msg_iovlen = 2;
        // SAFETY: the iovecs point to static byte strings.
        assert_eq!(unsafe { sendmsg(a.as_raw_fd(), &msg, 0) }, 4);
        let mut buf = [0u8; 8];
        assert_eq!(recv(b.as_raw_fd(), &mut buf, 0), 4);
        assert_eq!(&buf[..4], b"abcd");
    }
}
