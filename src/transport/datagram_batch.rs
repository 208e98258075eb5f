//! The datagrams a datagram transport was asked to send during the current iteration of the
//! loop, sent together at the end of the iteration with `sendmmsg(2)`: one system call for
//! all the replies an iteration produced instead of one `sendto(2)` each.
//!
//! Only what the deferral cannot change is deferred (see `DatagramTransport::sendto`): IP
//! sockets that are not connected (the kernel reports no asynchronous ICMP error on them
//! unless `IP_RECVERR` is set, which is checked when the transport is made), numeric
//! addresses, while nothing waits in the transport's queue. The batch does not count in
//! `get_write_buffer_size()` (asyncio would have sent these datagrams already); it is sent
//! before anything that could tell the difference: `close()`, `abort()`, a datagram that is
//! sent at once, and when it reaches `BATCH_MAX` datagrams.

use std::io;

use crate::transport::sockaddr::RawAddr;

/// Most datagrams held back: past this many, the batch is sent from inside `sendto` (a
/// callback that sends in a loop meets the socket's limits as it would on asyncio).
pub const BATCH_MAX: usize = 64;

/// One datagram of the batch: its bytes and its destination, in C form.
pub struct Held {
    /// The datagram.
    pub data: Vec<u8>,
    /// Where it goes.
    pub raw: RawAddr,
}

/// What one `sendmmsg` did with the datagrams from `start` on.
pub enum BatchSent {
    /// This many datagrams (at least one) were sent.
    Sent(usize),
    /// The first of them failed with this error (nothing was sent).
    Failed(io::Error),
}

/// Sends `held[start..]` (at most `BATCH_MAX`) with one `sendmmsg`; EINTR is retried.
pub fn send_batch(fd: i32, held: &[Held]) -> BatchSent {
    let count = held.len().min(BATCH_MAX);
    let mut iovecs: [libc::iovec; BATCH_MAX] = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; BATCH_MAX];
    // SAFETY: an all-zero mmsghdr is a valid empty header; each used one is filled below.
    let mut headers: [libc::mmsghdr; BATCH_MAX] = unsafe { std::mem::zeroed() };
    for (i, datagram) in held.iter().take(count).enumerate() {
        iovecs[i] = libc::iovec {
            iov_base: datagram.data.as_ptr() as *mut libc::c_void,
            iov_len: datagram.data.len(),
        };
        let (sa, len) = datagram.raw.as_parts();
        headers[i].msg_hdr.msg_name = sa as *mut libc::c_void;
        headers[i].msg_hdr.msg_namelen = len;
        headers[i].msg_hdr.msg_iov = &mut iovecs[i];
        headers[i].msg_hdr.msg_iovlen = 1;
    }
    loop {
        // SAFETY: the first `count` headers point to live iovecs over the datagrams' bytes
        // and to live addresses; the kernel only reads them (and writes `msg_len`).
        let n = unsafe { libc::sendmmsg(fd, headers.as_mut_ptr(), count as libc::c_uint, 0) };
        if n > 0 {
            return BatchSent::Sent(n as usize);
        }
        let err = if n == 0 {
            io::Error::from_raw_os_error(libc::EAGAIN)
        } else {
            io::Error::last_os_error()
        };
        if err.kind() != io::ErrorKind::Interrupted {
            return BatchSent::Failed(err);
        }
    }
}
