//! Accepting connections for servers without a Python socket object per connection.
//!
//! `accept_connection(listen_fd)` calls `accept4(2)` (non-blocking, close-on-exec) and returns
//! an `AcceptedSocket`: the new descriptor and the peer's address in compact form. The stream
//! transport takes both over; it creates a `socket.socket` only if someone asks for it
//! (`get_extra_info('socket')`, `transport._sock`). An idle connection therefore costs no
//! socket object, no address tuple and no extra-info dict (asyncio: ~500 bytes of them).

use std::io;

use pyo3::prelude::*;

use crate::core::fault_inject::{self, Site};
use crate::interop::errors::os_error;
use crate::interop::gil_cell::GilRefCell;
use crate::transport::sockaddr::{CompactAddr, RawAddr};

/// A connection accepted by `accept_connection`, until a transport takes it over. Closed on
/// `close()` or when dropped untaken.
#[pyclass(frozen, module = "ferroloop._ferroloop", name = "AcceptedSocket")]
pub struct AcceptedSocket {
    inner: GilRefCell<Option<(i32, CompactAddr)>>,
}

impl AcceptedSocket {
    /// Takes the descriptor and peer address (the caller now owns the descriptor).
    pub fn take(&self, py: Python<'_>) -> Option<(i32, CompactAddr)> {
        self.inner.borrow_mut(py).take()
    }
}

fn close_fd(fd: i32) {
    // SAFETY: closing a descriptor this object owns, once (it was taken out of `inner`).
    unsafe {
        libc::close(fd);
    }
}

#[pymethods]
impl AcceptedSocket {
    /// The descriptor (-1 once taken or closed).
    fn fileno(&self, py: Python<'_>) -> i32 {
        self.inner.borrow_mut(py).as_ref().map_or(-1, |(fd, _)| *fd)
    }

    /// Closes the connection (used when the protocol factory failed).
    fn close(&self, py: Python<'_>) {
        if let Some((fd, _)) = self.take(py) {
            close_fd(fd);
        }
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!("<AcceptedSocket fd={}>", self.fileno(py))
    }
}

impl Drop for AcceptedSocket {
    fn drop(&mut self) {
        if let Some((fd, _)) = self.inner.get_mut().take() {
            close_fd(fd);
        }
    }
}

/// Accepts one connection on the non-blocking listening socket `listen_fd`: an
/// `AcceptedSocket`, or None when no connection is waiting (EAGAIN) or it was aborted before
/// we took it (ECONNABORTED, as asyncio ignores it). Other errors (EMFILE...) raise OSError.
#[pyfunction]
pub fn accept_connection(py: Python<'_>, listen_fd: i32) -> PyResult<Option<AcceptedSocket>> {
    let mut raw = RawAddr::empty();
    let fd = loop {
        let (sa, len) = raw.as_mut_parts();
        let err = if let Some(errno) = fault_inject::injected(Site::Accept) {
            io::Error::from_raw_os_error(errno) // a test's simulated failure (ENFILE)
        } else {
            // SAFETY: `sa`/`len` describe `raw`'s storage, which accept4 fills with the
            // peer's address.
            let fd = unsafe {
                libc::accept4(listen_fd, sa, len, libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)
            };
            if fd >= 0 {
                break fd;
            }
            io::Error::last_os_error()
        };
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) | Some(libc::ECONNABORTED) => return Ok(None),
            _ => return Err(os_error(err)),
        }
    };
    let _ = py;
    Ok(Some(AcceptedSocket {
        inner: GilRefCell::new(Some((fd, CompactAddr::new(&raw)))),
    }))
}
