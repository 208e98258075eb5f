//! Native waiting for the `sock_recv` family: instead of a Python reader callback that
//! retries `sock.recv()` and resolves a future (asyncio's way: an exception on every
//! would-block, a callback frame, a done-callback to unregister), the loop itself calls
//! `recv(2)` when the descriptor is readable and resolves the future.
//!
//! Small receives land in one scratch buffer owned by the loop and are copied once into the
//! returned `bytes` (no allocation for an attempt that finds nothing); large ones go straight
//! into a new `bytes` that is shrunk to what arrived, saving the copy. (`recv_raw` and
//! `recv_into_new_bytes` also serve the stream transport's reads.)
//!
//! The waiter is the reader of its descriptor (`Watcher::Recv`, see `fd_watch.rs`), registered
//! one-shot. A socket closed behind the loop's back is forgotten by epoll without an event:
//! while receives are pending, a periodic sweep (`sweep_closed_sockets`) fails them instead of
//! letting them hang.

use std::io;
use std::os::fd::RawFd;

use pyo3::buffer::PyBuffer;
use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::event_loop::fd_watch::{fileobj_to_fd, Side, Watcher};
use crate::event_loop::LoopCore;
use crate::interop::errors::os_error;

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
        // SAFETY: `buf` is valid for writes of its length for the duration of the call.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
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

extern "C" {
    /// CPython's in-place resize of a fresh `bytes` (not declared publicly by pyo3-ffi).
    fn _PyBytes_Resize(bytes: *mut *mut pyo3::ffi::PyObject, size: pyo3::ffi::Py_ssize_t) -> i32;
}

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

impl LoopCore {
    /// `sock_recv(sock, n)`'s native part: the data if `sock` has some now, else a future the
    /// loop resolves when it has received.
    pub(super) fn sock_recv(
        slf: &Bound<'_, Self>,
        sock: &Bound<'_, PyAny>,
        n: &Bound<'_, PyAny>,
    ) -> PyResult<Py<PyAny>> {
        match n
            .extract::<isize>()
            .ok()
            .and_then(|n| usize::try_from(n).ok())
        {
            Some(size) => slf
                .get()
                .recv_or_wait(slf, sock, RecvTarget::Bytes(size), n),
            // Let the socket module raise its own error for a bad size.
            None => Ok(sock
                .call_method1(pyo3::intern!(slf.py(), "recv"), (n,))?
                .unbind()),
        }
    }

    /// `sock_recv_into(sock, buf)`'s native part: the count if `sock` has data now, else a
    /// future.
    pub(super) fn sock_recv_into(
        slf: &Bound<'_, Self>,
        sock: &Bound<'_, PyAny>,
        buf: &Bound<'_, PyAny>,
    ) -> PyResult<Py<PyAny>> {
        slf.get()
            .recv_or_wait(slf, sock, RecvTarget::Into(buf.clone().unbind()), buf)
    }

    /// Drops the pending native receive on `sock` if it is the one resolving `future` (the
    /// awaiting coroutine was cancelled).
    pub(super) fn forget_recv(
        &self,
        py: Python<'_>,
        sock: &Bound<'_, PyAny>,
        future: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let Ok(fd) = self.registered_fd(py, sock) else {
            return Ok(()); // closed and no longer watched: nothing to forget
        };
        let ours = {
            let queues = self.queues.borrow_mut(py);
            matches!(
                queues.watched.get(&fd).and_then(|w| w.side(Side::Read)),
                Some(Watcher::Recv(waiter)) if waiter.future.is(future)
            )
        };
        if ours {
            self.unwatch(py, fd, Side::Read)?;
        }
        Ok(())
    }

    /// Receives now if possible; otherwise registers a native waiter and returns its future.
    ///
    /// Anything unusual (a closed socket, a buffer that is not writable) is handed to the
    /// socket's own method with the caller's `argument`, so the error is exactly Python's.
    pub(super) fn recv_or_wait(
        &self,
        slf: &Bound<'_, Self>,
        sock: &Bound<'_, PyAny>,
        target: RecvTarget,
        argument: &Bound<'_, PyAny>,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let by_socket_module = |target: &RecvTarget| {
            let method = match target {
                RecvTarget::Bytes(_) => pyo3::intern!(py, "recv"),
                RecvTarget::Into(_) => pyo3::intern!(py, "recv_into"),
            };
            Ok(sock.call_method1(method, (argument,))?.unbind())
        };
        let fd = match fileobj_to_fd(sock) {
            Ok(fd) => fd,
            Err(_) => return by_socket_module(&target),
        };
        match try_recv(py, fd, &target, &mut self.scratch.borrow_mut(py)) {
            RecvOutcome::Done(value) => return Ok(value),
            RecvOutcome::Failed(err) if err.is_instance_of::<PyOSError>(py) => return Err(err),
            RecvOutcome::Failed(_) => return by_socket_module(&target),
            RecvOutcome::WouldBlock => {}
        }
        self.check_closed()?;
        let future = Self::new_future(slf)?;
        let waiter = RecvWaiter {
            future: future.clone_ref(py),
            target,
            sock: sock.clone().unbind(),
        };
        self.watch(py, fd, sock, Side::Read, Watcher::Recv(Box::new(waiter)))?;
        Ok(future)
    }

    /// A readable descriptor with a pending native receive: receive, then resolve the future.
    pub(super) fn complete_recv(&self, py: Python<'_>, fd: i32) -> PyResult<()> {
        let pending = {
            let queues = self.queues.borrow_mut(py);
            match queues.watched.get(&fd).and_then(|w| w.side(Side::Read)) {
                Some(Watcher::Recv(waiter)) => {
                    Some((waiter.future.clone_ref(py), waiter.target.clone_ref(py)))
                }
                _ => None,
            }
        };
        let Some((future, target)) = pending else {
            return Ok(());
        };
        let future = future.bind(py);
        if future
            .call_method0(pyo3::intern!(py, "done"))?
            .is_truthy()?
        {
            self.unwatch(py, fd, Side::Read)?; // cancelled meanwhile
            return Ok(());
        }
        let outcome = try_recv(py, fd, &target, &mut self.scratch.borrow_mut(py));
        let (method, value) = match outcome {
            RecvOutcome::WouldBlock => {
                // A spurious wakeup disarmed the one-shot registration: arm it again.
                return self.rearm(py, fd);
            }
            RecvOutcome::Done(value) => (pyo3::intern!(py, "set_result"), value),
            RecvOutcome::Failed(err) => (
                pyo3::intern!(py, "set_exception"),
                err.into_value(py).into_any(),
            ),
        };
        self.unwatch(py, fd, Side::Read)?;
        future.call_method1(method, (value,))?;
        Ok(())
    }

    /// Fails pending native receives whose socket was closed behind the loop's back (epoll
    /// forgets a closed descriptor, so no event would ever come): an error, not a hang.
    pub(super) fn sweep_closed_sockets(&self, py: Python<'_>) -> PyResult<()> {
        let now = self.clock.now();
        let suspects: Vec<(i32, Py<PyAny>, Py<PyAny>)> = {
            let mut queues = self.queues.borrow_mut(py);
            if queues.pending_receives == 0 || now < queues.next_sweep {
                return Ok(());
            }
            queues.next_sweep = now + CLOSED_SOCKET_SWEEP_INTERVAL;
            queues
                .watched
                .iter()
                .filter_map(|(fd, watch)| match watch.side(Side::Read) {
                    Some(Watcher::Recv(w)) => {
                        Some((*fd, w.sock.clone_ref(py), w.future.clone_ref(py)))
                    }
                    _ => None,
                })
                .collect()
        };
        for (fd, sock, future) in suspects {
            let open = sock
                .bind(py)
                .call_method0(pyo3::intern!(py, "fileno"))
                .and_then(|n| n.extract::<i64>())
                .is_ok_and(|n| n == i64::from(fd));
            if open {
                continue;
            }
            self.unwatch(py, fd, Side::Read)?;
            let future = future.bind(py);
            if !future
                .call_method0(pyo3::intern!(py, "done"))?
                .is_truthy()?
            {
                let err = os_error(std::io::Error::from_raw_os_error(libc::EBADF));
                future.call_method1(pyo3::intern!(py, "set_exception"), (err.into_value(py),))?;
            }
        }
        Ok(())
    }
}
