//! Native waiting for the `sock_recv` family: instead of a Python reader callback that
//! retries `sock.recv()` and resolves a future (asyncio's way: an exception on every
//! would-block, a callback frame, a done-callback to unregister), the loop itself calls
//! `recv(2)` (`sock_io.rs`) when the descriptor is readable and resolves the future.
//!
//! The waiter is the reader of its descriptor (`Watcher::Recv`, see `fd_watch.rs`), registered
//! one-shot. A socket closed behind the loop's back is forgotten by epoll without an event:
//! while receives are pending, a periodic sweep (`sweep_closed_sockets`) fails them instead of
//! letting them hang.

use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;

use crate::core::clock::monotonic_seconds;
use crate::event_loop::fd_watch::{fileobj_to_fd, Side, Watcher};
use crate::event_loop::sock_io::{
    try_recv, RecvOutcome, RecvTarget, RecvWaiter, CLOSED_SOCKET_SWEEP_INTERVAL,
};
use crate::event_loop::LoopCore;
use crate::interop::errors::os_error;

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
        // Real time, also under virtual time: the sweep looks for sockets closed in the real
        // world, and must not make a virtual clock jump.
        let suspects: Vec<(i32, Py<PyAny>, Py<PyAny>)> = {
            let mut queues = self.queues.borrow_mut(py);
            // No clock read without a pending receive (most iterations of most programs).
            if queues.pending_receives == 0 {
                return Ok(());
            }
            let now = monotonic_seconds();
            if now < queues.next_sweep {
                return Ok(());
            }
            queues.next_sweep = now + CLOSED_SOCKET_SWEEP_INTERVAL;
            queues
                .watched
                .iter()
                .filter_map(|(fd, watch)| match watch.side(Side::Read) {
                    Some(Watcher::Recv(w)) => {
                        Some((fd, w.sock.clone_ref(py), w.future.clone_ref(py)))
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
