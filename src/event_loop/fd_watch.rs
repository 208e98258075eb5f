//! Descriptor watches: the one place where the loop registers descriptors with epoll.
//!
//! Each watched descriptor has an `FdWatch` in the loop's map holding its reader and writer
//! (`Watcher`: a Python callback from `add_reader`/`add_writer` and the native transports, or
//! a pending native receive, see `native_recv.rs`). `sync_registration` brings epoll in line
//! with them: level-triggered for callbacks (asyncio's semantics), one-shot for a native
//! receive alone. Everything that watches a descriptor (the `add_reader` family, the native
//! transports through `add_watch`/`unwatch`, native receives) goes through `watch`/`unwatch`.
//!
//! A file object is converted to a descriptor as asyncio's selectors do (`fileobj_to_fd`); a
//! socket closed after registration is still found through the object it was registered with.

use std::sync::atomic::Ordering;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::core::poller::{Interest, Trigger};
use crate::event_loop::handle::ArgsRef;
use crate::event_loop::handle::{Handle, NativeCall};
use crate::event_loop::sock_io::RecvWaiter;
use crate::event_loop::LoopCore;
use crate::interop::errors::os_error;

/// What watches one side of a descriptor.
pub(crate) enum Watcher {
    /// A Python callback (`add_reader`/`add_writer`), run as a loop callback at each readiness.
    Callback(Py<Handle>),
    /// A pending `sock_recv`/`sock_recv_into`, completed by the loop itself (boxed: the
    /// watcher, held for every watched descriptor, stays two words).
    Recv(Box<RecvWaiter>),
}

/// +1 for a native receive coming in, -1 for one going out.
fn receive_delta(incoming: Option<&Watcher>, outgoing: Option<&Watcher>) -> isize {
    let is_recv = |w: Option<&Watcher>| matches!(w, Some(Watcher::Recv(_))) as isize;
    is_recv(incoming) - is_recv(outgoing)
}

/// The callbacks registered for one descriptor.
#[derive(Default)]
pub(super) struct FdWatch {
    /// Watches readability.
    pub(super) reader: Option<Watcher>,
    /// Watches writability.
    pub(super) writer: Option<Watcher>,
    /// The object first registered for this descriptor: like asyncio's selectors, a socket
    /// closed after registration (fileno() now -1) is still found through it.
    pub(super) fileobj: Option<Py<PyAny>>,
    /// How epoll currently has the descriptor registered, if at all.
    pub(super) registered: Option<Trigger>,
}

impl FdWatch {
    /// How epoll should watch the descriptor: a native receive alone uses a one-shot
    /// registration; any Python callback makes it level-triggered (asyncio's semantics).
    fn wanted(&self) -> Option<(Interest, Trigger)> {
        match (&self.reader, &self.writer) {
            (None, None) => None,
            (Some(Watcher::Recv(_)), None) => Some((self.interest(), Trigger::OneShot)),
            _ => Some((self.interest(), Trigger::Level)),
        }
    }

    /// The sides that have a watcher.
    fn interest(&self) -> Interest {
        Interest {
            read: self.reader.is_some(),
            write: self.writer.is_some(),
        }
    }

    /// Nothing watches the descriptor and epoll does not hold it: the entry can go.
    fn is_unused(&self) -> bool {
        self.wanted().is_none() && self.registered.is_none()
    }

    /// The watcher of one side.
    pub(super) fn side(&self, side: Side) -> Option<&Watcher> {
        match side {
            Side::Read => self.reader.as_ref(),
            Side::Write => self.writer.as_ref(),
        }
    }
}

/// Which side of a descriptor a callback watches.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Readability.
    Read,
    /// Writability.
    Write,
}

impl Side {
    /// The watcher slot of this side in `watch`.
    fn slot(self, watch: &mut FdWatch) -> &mut Option<Watcher> {
        match self {
            Side::Read => &mut watch.reader,
            Side::Write => &mut watch.writer,
        }
    }
}

impl LoopCore {
    /// Brings epoll's registration of `fd` in line with its watchers (see
    /// `FdWatch::wanted`). A one-shot registration whose receive completed is kept, disarmed,
    /// so that the next receive re-arms it with a single `EPOLL_CTL_MOD`.
    fn sync_registration(&self, fd: i32, watch: &mut FdWatch) -> std::io::Result<()> {
        match (watch.wanted(), watch.registered) {
            (None, Some(Trigger::OneShot)) => {
                watch.fileobj = None; // parked: do not keep the socket object alive
            }
            (None, Some(_)) => {
                self.poller.deregister(fd);
                watch.registered = None;
            }
            (None, None) => {}
            (Some((interest, trigger)), registered) => {
                match registered {
                    None => self.poller.register(fd, fd as u64, interest, trigger)?,
                    Some(_) => self.poller.reregister(fd, fd as u64, interest, trigger)?,
                }
                watch.registered = Some(trigger);
            }
        }
        Ok(())
    }

    /// Registers `watcher` as the reader or writer of `fd`, replacing (and cancelling) the
    /// previous one.
    pub(super) fn watch(
        &self,
        py: Python<'_>,
        fd: i32,
        fileobj: &Bound<'_, PyAny>,
        side: Side,
        watcher: Watcher,
    ) -> PyResult<()> {
        let previous = {
            let mut queues = self.queues.borrow_mut(py);
            let watch = queues.watched.get_or_insert_default(fd);
            // An int is its own descriptor and needs no keeping (the native transports
            // register theirs as ints: one int object fewer per connection above fd 256).
            if watch.fileobj.is_none() && !fileobj.is_exact_instance_of::<pyo3::types::PyInt>() {
                watch.fileobj = Some(fileobj.clone().unbind());
            }
            let delta = receive_delta(Some(&watcher), side.slot(watch).as_ref());
            let previous = side.slot(watch).replace(watcher);
            if let Err(err) = self.sync_registration(fd, watch) {
                // Undo: the descriptor is not watched (epoll refused it, e.g. EBADF/EPERM).
                let undone = side.slot(watch).take();
                if watch.is_unused() {
                    queues.watched.remove(&fd);
                }
                drop(queues);
                drop(undone);
                drop(previous);
                return Err(os_error(err));
            }
            queues.pending_receives = queues.pending_receives.saturating_add_signed(delta);
            previous
        };
        if let Some(Watcher::Callback(old)) = previous {
            old.get().cancel_now(py);
        }
        Ok(())
    }

    /// Registers `fd` again as its watchers want it: a spurious wakeup disarmed the one-shot
    /// registration of a pending native receive.
    pub(super) fn rearm(&self, py: Python<'_>, fd: i32) -> PyResult<()> {
        let mut queues = self.queues.borrow_mut(py);
        if let Some(watch) = queues.watched.get_mut(&fd) {
            self.sync_registration(fd, watch).map_err(os_error)?;
        }
        Ok(())
    }

    /// Unregisters the reader or writer of `fd`; returns whether one was registered.
    pub(crate) fn unwatch(&self, py: Python<'_>, fd: i32, side: Side) -> PyResult<bool> {
        let removed = {
            let mut queues = self.queues.borrow_mut(py);
            let Some(watch) = queues.watched.get_mut(&fd) else {
                return Ok(false);
            };
            let removed = side.slot(watch).take();
            if removed.is_some() {
                // A descriptor closed behind our back is already gone from epoll: ignore.
                let _ = self.sync_registration(fd, watch);
            }
            if watch.is_unused() {
                queues.watched.remove(&fd);
            }
            let delta = receive_delta(None, removed.as_ref());
            queues.pending_receives = queues.pending_receives.saturating_add_signed(delta);
            removed
        };
        // A pending native receive just stops (its future stays pending, as asyncio's would
        // when its reader is removed).
        if let Some(Watcher::Callback(handle)) = &removed {
            handle.get().cancel_now(py);
        }
        Ok(removed.is_some())
    }

    /// Drops every watch when the loop closes (its poller is closed already): reader and
    /// writer callbacks are cancelled, pending native receives just stop.
    pub(super) fn forget_all_watches(&self, py: Python<'_>) {
        let watched = {
            let mut queues = self.queues.borrow_mut(py);
            queues.pending_receives = 0;
            std::mem::take(&mut queues.watched)
        };
        for watch in watched.into_values() {
            for watcher in [watch.reader, watch.writer].into_iter().flatten() {
                if let Watcher::Callback(handle) = watcher {
                    handle.get().cancel_now(py);
                }
            }
        }
    }

    /// In a child made by `fork()`: forgets the parent's cross-thread posts
    /// (`PostGate::reset_after_fork`), gives the loop its own epoll instance, waker and signal
    /// pipe (`Poller::renew_after_fork`) and registers every watched descriptor in them, so
    /// that the child's use of the loop never changes the parent's registrations. A
    /// descriptor that fails (closed meanwhile) is simply not watched, as epoll forgets closed
    /// descriptors.
    pub(super) fn renew_watches_after_fork(&self, py: Python<'_>) -> PyResult<()> {
        // The parent's posting threads and their backlog are not the child's.
        self.post_gate.reset_after_fork();
        if self.is_loop_closed() {
            return Ok(());
        }
        self.poller.renew_after_fork().map_err(os_error)?;
        let mut queues = self.queues.borrow_mut(py);
        for (fd, watch) in queues.watched.iter_mut() {
            watch.registered = None;
            if let Some((interest, trigger)) = watch.wanted() {
                if self
                    .poller
                    .register(fd, fd as u64, interest, trigger)
                    .is_ok()
                {
                    watch.registered = Some(trigger);
                }
            }
        }
        Ok(())
    }

    /// Adds a reader or writer callback (shared by add_reader and add_writer); the native
    /// transports pass `native`, their method's Rust body (see `NativeCall`).
    pub(crate) fn add_watch(
        &self,
        py: Python<'_>,
        fileobj: &Bound<'_, PyAny>,
        side: Side,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        native: Option<NativeCall>,
    ) -> PyResult<Py<Handle>> {
        // asyncio validates the descriptor before it checks that the loop is open.
        let fd = self.registered_fd(py, fileobj)?;
        self.check_closed()?;
        let mut init = self.handle_init(py, callback, ArgsRef::Tuple(args), None, None)?;
        init.repeating = true;
        init.native = native;
        let handle = self.make_handle(py, init)?;
        self.watch(
            py,
            fd,
            fileobj,
            side,
            Watcher::Callback(handle.clone_ref(py)),
        )?;
        Ok(handle)
    }

    /// Removes a reader or writer callback (shared by remove_reader and remove_writer).
    pub(super) fn remove_watch(
        &self,
        py: Python<'_>,
        fileobj: &Bound<'_, PyAny>,
        side: Side,
    ) -> PyResult<bool> {
        let fd = self.registered_fd(py, fileobj)?;
        if self.closed.load(Ordering::Relaxed) {
            return Ok(false);
        }
        self.unwatch(py, fd, side)
    }

    /// The descriptor of `fileobj`; for an object whose descriptor is no longer valid (a
    /// closed socket), the one it was registered with, as asyncio's selectors look it up.
    pub(super) fn registered_fd(
        &self,
        py: Python<'_>,
        fileobj: &Bound<'_, PyAny>,
    ) -> PyResult<i32> {
        match fileobj_to_fd(fileobj) {
            Ok(fd) => Ok(fd),
            Err(err) if err.is_instance_of::<PyValueError>(py) => {
                let queues = self.queues.borrow_mut(py);
                let found = queues
                    .watched
                    .iter()
                    .find(|(_, watch)| watch.fileobj.as_ref().is_some_and(|o| o.is(fileobj)))
                    .map(|(fd, _)| fd);
                found.ok_or(err)
            }
            Err(err) => Err(err),
        }
    }
}

/// asyncio's (selectors') conversion of a file object to a descriptor number.
pub(super) fn fileobj_to_fd(fileobj: &Bound<'_, PyAny>) -> PyResult<i32> {
    let py = fileobj.py();
    let fd: i64 = if fileobj.is_instance_of::<pyo3::types::PyInt>() {
        fileobj.extract()?
    } else {
        let invalid = || {
            fileobj.repr().map_or_else(
                |e| e,
                |r| PyValueError::new_err(format!("Invalid file object: {r}")),
            )
        };
        match fileobj
            .call_method0(pyo3::intern!(py, "fileno"))
            .and_then(|n| py.get_type::<pyo3::types::PyInt>().call1((n,)))
        {
            Ok(n) => n.extract().map_err(|_| invalid())?,
            Err(err)
                if err.is_instance_of::<pyo3::exceptions::PyAttributeError>(py)
                    || err.is_instance_of::<PyTypeError>(py)
                    || err.is_instance_of::<PyValueError>(py) =>
            {
                return Err(invalid())
            }
            Err(err) => return Err(err),
        }
    };
    if fd < 0 {
        return Err(PyValueError::new_err(format!(
            "Invalid file descriptor: {fd}"
        )));
    }
    i32::try_from(fd).map_err(|_| PyValueError::new_err(format!("Invalid file descriptor: {fd}")))
}

#[cfg(test)]
mod tests {
    use super::FdWatch;

    /// Every watched descriptor (each open connection) holds one `FdWatch` in the loop's map:
    /// keep it small (5,000 idle connections ≈ 8,192 map slots).
    #[test]
    fn fd_watch_stays_small() {
        assert!(
            std::mem::size_of::<FdWatch>() <= 48,
            "{}",
            std::mem::size_of::<FdWatch>()
        );
    }
}
