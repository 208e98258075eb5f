//! The datagrams a datagram transport was asked to send during the current iteration of the
//! loop, sent together at the end of the iteration with `sendmmsg(2)`: one system call for
//! all the replies an iteration produced instead of one `sendto(2)` each.
//!
//! What is held back (see `DatagramTransport::hold_back`): replies — datagrams to the very
//! address tuple `datagram_received` was given, so the peer just reached us — on IP sockets
//! that are not connected (the kernel reports no asynchronous ICMP error on them unless
//! `IP_RECVERR` is set, checked when the transport is made: `sendmmsg` would lose such an
//! error), from the loop's callbacks, while nothing waits in the transport's queue. The
//! batch does not count in `get_write_buffer_size()` (asyncio would have sent these
//! datagrams already); it is sent before anything that could tell the difference:
//! `close()`, `abort()`, a fatal error, any datagram sent at once, and as soon as it holds
//! `BATCH_MAX` datagrams. Each datagram that fails goes to `error_received` (the others are
//! still sent, in order), as successive `sendto` calls would report it; the one difference
//! left is when: at the end of the iteration instead of inside `sendto` (for a reply to a
//! peer that just reached us, only a local refusal — a firewall's EPERM, ENOBUFS — can fail).
//! EAGAIN queues the rest, as asyncio queues a datagram the socket cannot take.

use std::io;
use std::mem::MaybeUninit;

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::transport::sockaddr::RawAddr;

/// Most datagrams held back: past this many, the batch is sent from inside `sendto` (a
/// callback that sends in a loop meets the socket's limits as it would on asyncio).
pub const BATCH_MAX: usize = 64;

/// A held-back datagram's bytes: a `bytes` object by reference (immutable: what `sendto`
/// was given is what is sent), anything else (bytearray, memoryview) as a copy taken in
/// `sendto`, since the program may change it afterwards.
pub enum HeldBytes {
    /// The `bytes` given to `sendto`.
    Shared(Py<PyBytes>),
    /// A copy of a mutable buffer.
    Owned(Vec<u8>),
}

impl HeldBytes {
    /// The datagram's bytes.
    pub fn as_slice<'a>(&'a self, py: Python<'_>) -> &'a [u8] {
        match self {
            HeldBytes::Shared(bytes) => bytes.as_bytes(py),
            HeldBytes::Owned(data) => data,
        }
    }
}

/// One datagram of the batch: its bytes and its destination, in C form.
pub struct Held {
    /// The datagram.
    pub data: HeldBytes,
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

/// Sends the first `BATCH_MAX` (or fewer) datagrams of `held` with one `sendmmsg`; EINTR is
/// retried.
pub fn send_batch(py: Python<'_>, fd: i32, held: &[Held]) -> BatchSent {
    let count = held.len().min(BATCH_MAX);
    // Only the `count` headers used are written (zeroing all `BATCH_MAX` on every call cost
    // more than the batching saved in user space).
    let mut iovecs = [MaybeUninit::<libc::iovec>::uninit(); BATCH_MAX];
    let mut headers = [MaybeUninit::<libc::mmsghdr>::uninit(); BATCH_MAX];
    for (i, datagram) in held.iter().take(count).enumerate() {
        let data = datagram.data.as_slice(py);
        let iovec = iovecs[i].write(libc::iovec {
            iov_base: data.as_ptr() as *mut libc::c_void,
            iov_len: data.len(),
        });
        let (sa, len) = datagram.raw.as_parts();
        // SAFETY: an all-zero mmsghdr is a valid empty header.
        let mut header: libc::mmsghdr = unsafe { std::mem::zeroed() };
        header.msg_hdr.msg_name = sa as *mut libc::c_void;
        header.msg_hdr.msg_namelen = len;
        header.msg_hdr.msg_iov = iovec;
        header.msg_hdr.msg_iovlen = 1;
        headers[i].write(header);
    }
    loop {
        // SAFETY: the first `count` headers are initialised and point to live iovecs over
        // the datagrams' bytes and to live addresses; the kernel reads only those (and
        // writes their `msg_len`).
        let n = unsafe {
            libc::sendmmsg(
                fd,
                headers.as_mut_ptr().cast::<libc::mmsghdr>(),
                count as libc::c_uint,
                0,
            )
        };
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    fn held(data: &[u8], to: &std::net::SocketAddr) -> Held {
        let mut raw = RawAddr::empty();
        let std::net::SocketAddr::V4(v4) = to else {
            panic!("IPv4 only here");
        };
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: v4.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*v4.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        let (sa, len) = raw.as_mut_parts();
        // SAFETY: `sa` points to a sockaddr_storage, large enough for a sockaddr_in.
        unsafe {
            std::ptr::write(sa.cast::<libc::sockaddr_in>(), sin);
            *len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        }
        Held {
            data: HeldBytes::Owned(data.to_vec()),
            raw,
        }
    }

    #[test]
    fn a_bad_datagram_stops_the_batch_and_fails_alone() {
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        let good = peer.local_addr().unwrap();
        let bad: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap(); // EINVAL
        let batch = [held(b"a", &good), held(b"x", &bad), held(b"b", &good)];
        let fd = sender.as_raw_fd();
        Python::initialize();
        Python::attach(|py| {
            assert!(matches!(send_batch(py, fd, &batch), BatchSent::Sent(1)));
            match send_batch(py, fd, &batch[1..]) {
                BatchSent::Failed(err) => assert_eq!(err.raw_os_error(), Some(libc::EINVAL)),
                BatchSent::Sent(n) => panic!("sent {n}"),
            }
            assert!(matches!(
                send_batch(py, fd, &batch[2..]),
                BatchSent::Sent(1)
            ));
        });
        let mut buf = [0u8; 8];
        assert_eq!(peer.recv(&mut buf).unwrap(), 1);
        assert_eq!(&buf[..1], b"a");
        assert_eq!(peer.recv(&mut buf).unwrap(), 1);
        assert_eq!(&buf[..1], b"b");
    }
}
