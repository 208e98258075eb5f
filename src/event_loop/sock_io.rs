//! One receive from a socket, as the loop's native `sock_recv` and the stream transport do it:
//! `recv(2)` retried on EINTR, into the loop's scratch buffer, into a new `bytes` shrunk to
//! what arrived, or into the caller's buffer; and the record of a pending receive
//! (`RecvWaiter`: its future, its destination, its socket), which the loop keeps as the
//! descriptor's reader (see `fd_watch.rs` and `native_recv.rs`).
//!
//! Small receives land in one scratch buffer owned by the loop and are copied once into the
//! returned `bytes` (no allocation for an attempt that finds nothing); large ones go straight
//! into a new `bytes` that is shrunk to what arrived, saving the copy.

use std::io;
use std::os::fd::RawFd;

use pyo3::buffer::PyBuffer;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::core::direct_syscall;
use crate::interop::errors::os_error;
use crate::interop::read_bytes::_PyBytes_Resize;

/// A pending receive: where the data goes and which future gets the result.
pub struct RecvWaiter {
    /// The future `sock_recv` awaits.
    pub future: Py<PyAny>,
    /// What to receive into.
    pub target: RecvTarget,
    /// The socket object: if it is closed while we wait (its `fileno()` turns -1), epoll
    /// silently forgets the descriptor; the loop's periodic sweep notices and fails the wait.
    pub sock: Py<PyAny>,
}

/// How often (seconds) pending receives are checked for sockets closed behind the loop's back.
pub const CLOSED_SOCKET_SWEEP_INTERVAL: f64 = 0.25;

/// The destination of a receive.
pub enum RecvTarget {
    /// `sock_recv(sock, n)`: a new `bytes` of at most `n` bytes.
    Bytes(usize),
    /// `sock_recv_into(sock, buf)`: the caller's writable buffer; the result is a count.
    Into(Py<PyAny>),
}

impl RecvTarget {
    /// A second reference to the same target.
    pub fn clone_ref(&self, py: Python<'_>) -> RecvTarget {
        match self {
            RecvTarget::Bytes(n) => RecvTarget::Bytes(*n),
            RecvTarget::Into(buf) => RecvTarget::Into(buf.clone_ref(py)),
        }
    }
}

/// The result of one receive attempt.
pub enum RecvOutcome {
    /// Data (a `bytes` or a count) — the operation is complete.
    Done(Py<PyAny>),
    /// Nothing to read yet.
    WouldBlock,
    /// The receive failed; the error is the operation's result.
    Failed(PyErr),
}

/// `recv(2)` on `fd` into `buf`, retried on EINTR as Python's socket module does (PEP 475).
pub(crate) fn recv_raw(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        let n = direct_syscall::recv(fd, buf, 0);
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Up to this size a receive goes through the scratch buffer and is copied into an exact-size
/// `bytes` (no allocation when nothing arrived); above it, into a new `bytes` of the requested
/// size that is shrunk to what arrived, as `socket.recv` does (saving a large copy).
const SCRATCH_COPY_MAX: usize = 16 * 1024;

/// Receives straight into a new `bytes` of `size` bytes, shrunk to the received length.
pub(crate) fn recv_into_new_bytes(
    py: Python<'_>,
    fd: RawFd,
    size: usize,
) -> PyResult<io::Result<Py<PyAny>>> {
    use pyo3::ffi;
    // SAFETY: PyBytes_FromStringAndSize(NULL, n) returns a new, uninitialised bytes of n
    // bytes (or NULL with an exception); we own it until it is returned or released below,
    // nobody else can see it, so writing into its buffer and resizing it are allowed.
    unsafe {
        let mut obj = ffi::PyBytes_FromStringAndSize(std::ptr::null(), size as ffi::Py_ssize_t);
        if obj.is_null() {
            return Err(PyErr::fetch(py));
        }
        let buffer = ffi::PyBytes_AsString(obj) as *mut u8;
        match recv_raw(fd, std::slice::from_raw_parts_mut(buffer, size)) {
            Ok(received) => {
                if received < size && _PyBytes_Resize(&mut obj, received as ffi::Py_ssize_t) < 0 {
                    return Err(PyErr::fetch(py)); // _PyBytes_Resize released `obj`
                }
                Ok(Ok(Bound::from_owned_ptr(py, obj).unbind()))
            }
            Err(err) => {
                ffi::Py_DECREF(obj);
                Ok(Err(err))
            }
        }
    }
}

/// Tries to receive once into `target`.
pub fn try_recv(
    py: Python<'_>,
    fd: RawFd,
    target: &RecvTarget,
    scratch: &mut Vec<u8>,
) -> RecvOutcome {
    let received = match target {
        RecvTarget::Bytes(size) if *size > SCRATCH_COPY_MAX => {
            match recv_into_new_bytes(py, fd, *size) {
                Ok(result) => result,
                Err(err) => return RecvOutcome::Failed(err),
            }
        }
        RecvTarget::Bytes(size) => {
            if scratch.len() < *size {
                scratch.resize(*size, 0);
            }
            recv_raw(fd, &mut scratch[..*size])
                .map(|n| PyBytes::new(py, &scratch[..n]).into_any().unbind())
        }
        RecvTarget::Into(buffer) => {
            let view = match PyBuffer::<u8>::get(buffer.bind(py)) {
                Ok(view) => view,
                Err(err) => return RecvOutcome::Failed(err),
            };
            if view.readonly() {
                return RecvOutcome::Failed(pyo3::exceptions::PyTypeError::new_err(
                    "recv_into() argument 'buffer' must be read-write bytes-like object",
                ));
            }
            let len = view.len_bytes();
            // SAFETY: the buffer is writable (checked), `len` bytes long, and the view keeps
            // it alive and its size fixed until it is released at the end of this scope.
            let slice = unsafe { std::slice::from_raw_parts_mut(view.buf_ptr() as *mut u8, len) };
            let result = recv_raw(fd, slice);
            drop(view);
            result.map(|n| {
                n.into_pyobject(py)
                    .map(|v| v.into_any().unbind())
                    .unwrap_or_else(|e| match e {})
            })
        }
    };
    match received {
        Ok(value) => RecvOutcome::Done(value),
        Err(err) if err.kind() == io::ErrorKind::WouldBlock => RecvOutcome::WouldBlock,
        Err(err) => RecvOutcome::Failed(os_error(err)),
    }
}
