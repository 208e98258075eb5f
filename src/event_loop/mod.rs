//! `LoopCore`: the native half of `ferroloop.EventLoop` — the ready queue, the timers, the
//! poll, and the hot entry points (`call_soon`, `call_later`, `create_future`, `create_task`).
//!
//! The Python class `ferroloop.EventLoop(LoopCore, asyncio.AbstractEventLoop)` adds the cold
//! glue (run_forever's set-up, executors, exception handler, async generators); every
//! iteration of the loop runs here without touching Python except to run callbacks.
//!
//! One iteration (`run_once`), in asyncio's order:
//! 1. purge cancelled timers if they dominate the queue;
//! 2. choose the timeout: 0 if callbacks are ready or stop() was called, else until the first
//!    timer, else forever;
//! 3. wait for events with the GIL released, then run pending Python signal handlers;
//! 4. move timers due by now into the ready queue, in deadline order;
//! 5. run the callbacks that were ready at this point (FIFO); callbacks they schedule run in
//!    the next iteration.

pub mod fast_methods;
pub mod handle;
pub mod sock_io;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pyo3::exceptions::{
    PyKeyboardInterrupt, PyOSError, PyRuntimeError, PySystemExit, PyTypeError, PyValueError,
};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::core::clock::{Clock, CLOCK_RESOLUTION};
use crate::core::fd_map::FdMap;
use crate::core::poller::{Interest, Poller, Readiness, Trigger, Wakeup};
use crate::core::timers::TimerQueue;
use crate::event_loop::handle::{Handle, HandleInit, NativeCall, RunOutcome};
use crate::event_loop::sock_io::{
    try_recv, RecvOutcome, RecvTarget, RecvWaiter, Watcher, CLOSED_SOCKET_SWEEP_INTERVAL,
};
use crate::interop::callback_check::check_callback;
use crate::interop::errors::os_error;
use crate::interop::gil_cell::GilRefCell;
use crate::interop::py_cache;

/// asyncio caps a single wait at one day; longer timers are re-checked after it.
const MAX_WAIT_SECONDS: f64 = 24.0 * 3600.0;

/// Queues that change on every iteration; touched only with the GIL held.
struct LoopQueues {
    ready: VecDeque<Py<Handle>>,
    timers: TimerQueue<Py<Handle>>,
    /// Handles that ran and that nobody else references, ready to be re-initialised.
    spare_handles: Vec<Py<Handle>>,
    /// Descriptors watched for add_reader/add_writer, by descriptor number.
    watched: FdMap<FdWatch>,
    /// Readiness reported by the last wait (kept to reuse its allocation).
    io_events: Vec<Readiness>,
    /// How many native receives are pending (they bound the wait, for the closed-socket sweep).
    pending_receives: usize,
    /// When the next closed-socket sweep is due (loop time).
    next_sweep: f64,
}

/// +1 for a native receive coming in, -1 for one going out.
fn receive_delta(incoming: Option<&Watcher>, outgoing: Option<&Watcher>) -> isize {
    let is_recv = |w: Option<&Watcher>| matches!(w, Some(Watcher::Recv(_))) as isize;
    is_recv(incoming) - is_recv(outgoing)
}

/// The callbacks registered for one descriptor.
#[derive(Default)]
struct FdWatch {
    reader: Option<Watcher>,
    writer: Option<Watcher>,
    /// The object first registered for this descriptor: like asyncio's selectors, a socket
    /// closed after registration (fileno() now -1) is still found through it.
    fileobj: Option<Py<PyAny>>,
    /// How epoll currently has the descriptor registered, if at all.
    registered: Option<Trigger>,
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

    fn interest(&self) -> Interest {
        Interest {
            read: self.reader.is_some(),
            write: self.writer.is_some(),
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
    fn slot(self, watch: &mut FdWatch) -> &mut Option<Watcher> {
        match self {
            Side::Read => &mut watch.reader,
            Side::Write => &mut watch.writer,
        }
    }
}

/// How many spare handles the loop keeps for reuse.
const SPARE_HANDLES_MAX: usize = 1024;

/// Counters of the loop's life, for introspection and metrics.
#[derive(Default)]
struct LoopStats {
    iterations: AtomicU64,
}

/// The native event loop state. Subclassed by `ferroloop.EventLoop`.
#[pyclass(
    frozen,
    subclass,
    weakref,
    module = "ferroloop._ferroloop",
    name = "LoopCore"
)]
pub struct LoopCore {
    queues: GilRefCell<LoopQueues>,
    clock: Clock,
    poller: Poller,
    /// Incremented by `TimerHandle.cancel()` for timers still queued.
    cancelled_timers: Arc<AtomicUsize>,
    debug: AtomicBool,
    closed: AtomicBool,
    stopping: AtomicBool,
    /// The previous iteration polled for I/O.
    polled_last: AtomicBool,
    /// `threading.get_ident()` of the thread running the loop, 0 when not running.
    running_thread: AtomicU64,
    task_factory: GilRefCell<Option<Py<PyAny>>>,
    stats: LoopStats,
    /// The buffer native receives read into (see `sock_io.rs`).
    scratch: GilRefCell<Vec<u8>>,
    /// Open transports by descriptor (object addresses, borrowed): add_reader & co. refuse
    /// their descriptors. A transport enters at creation and leaves when it starts closing or
    /// is deallocated, whichever comes first, so an address here always points to a live
    /// object. (asyncio keeps a WeakValueDictionary: ~120 bytes per connection more.)
    transports: GilRefCell<FdMap<usize>>,
}

extern "C" {
    /// `threading.get_ident()` in C (declared here: not every pyo3-ffi release has it).
    fn PyThread_get_thread_ident() -> std::os::raw::c_ulong;
}

/// `threading.get_ident()` of the calling thread.
fn current_thread_ident() -> u64 {
    // SAFETY: a plain query with no preconditions.
    unsafe { PyThread_get_thread_ident() as u64 }
}

/// A new reference to a copy of the current `contextvars.Context`.
fn copy_current_context(py: Python<'_>) -> PyResult<Py<PyAny>> {
    // SAFETY: called with the GIL held; returns a new reference or NULL with an exception set.
    unsafe {
        let ctx = ffi::PyContext_CopyCurrent();
        if ctx.is_null() {
            return Err(PyErr::fetch(py));
        }
        Ok(Bound::from_owned_ptr(py, ctx).unbind())
    }
}

/// Allocates an empty handle object, outside the garbage collector's lists.
///
/// PyO3 makes every pyclass a GC type. A handle holds nothing the collector needs to see (its
/// callback is released once it ran or was cancelled, see `handle.rs`), and tracking pending
/// timers made collections walk every one of them: untracking them cut call_later's cost.
fn new_untracked_handle(
    py: Python<'_>,
    cancelled_in_queue: &Arc<AtomicUsize>,
) -> PyResult<Py<Handle>> {
    let obj = Py::new(py, Handle::empty(cancelled_in_queue.clone()))?;
    // SAFETY: `obj` is a live object we own. Only an object of a GC type carries a GC
    // header; untracking such a fresh object is always allowed, and its dealloc untracks again
    // harmlessly. (PyO3 0.30 makes every class a GC type; 0.29, pinned here, does not.)
    unsafe {
        if ffi::PyObject_IS_GC(obj.as_ptr()) != 0 {
            ffi::PyObject_GC_UnTrack(obj.as_ptr().cast());
        }
    }
    Ok(obj)
}

/// Converts a delay/deadline argument to seconds, with asyncio's error for `None`.
fn seconds_arg(value: &Bound<'_, PyAny>, none_message: &str) -> PyResult<f64> {
    if value.is_none() {
        return Err(PyTypeError::new_err(none_message.to_string()));
    }
    value.extract::<f64>()
}

impl LoopCore {
    fn check_closed(&self) -> PyResult<()> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(PyRuntimeError::new_err("Event loop is closed"));
        }
        Ok(())
    }

    /// asyncio's debug-mode check that a non-threadsafe method runs on the loop's thread.
    fn check_thread(&self) -> PyResult<()> {
        let running = self.running_thread.load(Ordering::Relaxed);
        if running != 0 && running != current_thread_ident() {
            return Err(PyRuntimeError::new_err(
                "Non-thread-safe operation invoked on an event loop other than the current one",
            ));
        }
        Ok(())
    }

    /// True in debug mode.
    pub(crate) fn is_debug(&self) -> bool {
        self.debug.load(Ordering::Relaxed)
    }

    /// Records `transport` as the user of `fd` (see `LoopCore::transports`).
    pub(crate) fn register_transport(&self, py: Python<'_>, fd: i32, transport: &Bound<'_, PyAny>) {
        self.transports
            .borrow_mut(py)
            .insert(fd, transport.as_ptr() as usize);
    }

    /// Forgets `transport` as the user of `fd` (it is closing or being deallocated).
    pub(crate) fn unregister_transport(
        &self,
        py: Python<'_>,
        fd: i32,
        transport: *mut ffi::PyObject,
    ) {
        let mut transports = self.transports.borrow_mut(py);
        if transports.get(&fd) == Some(&(transport as usize)) {
            transports.remove(&fd);
        }
    }

    /// Whether `call_soon` may take the native fast entry point: outside debug mode, on an
    /// open loop, it can only fail for lack of memory (see `fast_methods.rs`).
    pub(crate) fn takes_fast_call_soon(&self) -> bool {
        !self.is_debug() && !self.closed.load(Ordering::Relaxed)
    }

    /// `call_soon` from Rust (the transports): asyncio's checks, then the handle.
    pub(crate) fn call_soon_checked(
        &self,
        py: Python<'_>,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        context: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<Handle>> {
        self.check_can_schedule(py, callback, "call_soon")?;
        self.schedule_soon(py, callback, args, context)
    }

    /// The creation stack recorded on handles in debug mode.
    fn source_traceback(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        if !self.is_debug() {
            return Ok(None);
        }
        Ok(Some(
            py_cache::extract_stack(py)?.bind(py).call0()?.unbind(),
        ))
    }

    /// A handle filled with `init`: a spare one if the loop has one, else a new one.
    fn make_handle(&self, py: Python<'_>, init: HandleInit) -> PyResult<Py<Handle>> {
        let spare = self.queues.borrow_mut(py).spare_handles.pop();
        let handle = match spare {
            Some(handle) => handle,
            None => new_untracked_handle(py, &self.cancelled_timers)?,
        };
        handle.get().init(py, init);
        Ok(handle)
    }

    /// Keeps `handle` for reuse if the loop holds the only reference to it (so no Python code
    /// can ever observe the reuse); otherwise lets it go.
    fn recycle(&self, py: Python<'_>, handle: Py<Handle>) {
        // SAFETY: reading the reference count of a live object we own a reference to.
        if unsafe { ffi::Py_REFCNT(handle.as_ptr()) } != 1 {
            return;
        }
        let released = handle.get().reset(py);
        let overflow = {
            let mut queues = self.queues.borrow_mut(py);
            if queues.spare_handles.len() < SPARE_HANDLES_MAX {
                queues.spare_handles.push(handle);
                None
            } else {
                Some(handle)
            }
        };
        drop(released);
        drop(overflow);
    }

    /// The context a callback runs in: the given one, else a copy of the current one.
    fn context_or_copy(py: Python<'_>, context: Option<&Bound<'_, PyAny>>) -> PyResult<Py<PyAny>> {
        match context {
            Some(c) if !c.is_none() => Ok(c.clone().unbind()),
            _ => copy_current_context(py),
        }
    }

    /// asyncio's checks before scheduling: open loop; in debug mode, loop thread and callback.
    fn check_can_schedule(
        &self,
        py: Python<'_>,
        callback: &Bound<'_, PyAny>,
        method: &str,
    ) -> PyResult<()> {
        self.check_closed()?;
        if self.is_debug() {
            // asyncio validates callbacks in debug mode only.
            self.check_thread()?;
            check_callback(py, callback, method)?;
        }
        Ok(())
    }

    /// What a new handle is filled with.
    fn handle_init(
        &self,
        py: Python<'_>,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        context: Option<&Bound<'_, PyAny>>,
        when: Option<f64>,
    ) -> PyResult<HandleInit> {
        // What can fail comes first: nothing is then dropped on an error (the native call_soon
        // runs outside PyO3's attach bookkeeping, see fast_methods.rs).
        let context = Self::context_or_copy(py, context)?;
        let source_traceback = self.source_traceback(py)?;
        Ok(HandleInit {
            callback: callback.clone().unbind(),
            args: args.clone().unbind(),
            context,
            source_traceback,
            when,
            repeating: false,
            native: None,
        })
    }

    /// Builds a handle and appends it to the ready queue, without asyncio's checks: callers
    /// make them (`call_soon_checked`), or, like the native `call_soon` entry point, know from
    /// `takes_fast_call_soon()` that there are none to make.
    pub(crate) fn schedule_soon(
        &self,
        py: Python<'_>,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        context: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<Handle>> {
        let init = self.handle_init(py, callback, args, context, None)?;
        let handle = self.make_handle(py, init)?;
        self.queues
            .borrow_mut(py)
            .ready
            .push_back(handle.clone_ref(py));
        Ok(handle)
    }

    /// Builds a timer handle due at `when` and queues it.
    fn schedule_at(
        &self,
        py: Python<'_>,
        when: f64,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        context: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<Handle>> {
        self.check_can_schedule(py, callback, "call_at")?;
        let init = self.handle_init(py, callback, args, context, Some(when))?;
        let handle = self.make_handle(py, init)?;
        self.queues
            .borrow_mut(py)
            .timers
            .push(when, handle.clone_ref(py));
        Ok(handle)
    }

    /// Drops cancelled timers when they dominate the queue (or sit at its head).
    fn purge_cancelled_timers(&self, py: Python<'_>) {
        let newly_cancelled = self.cancelled_timers.swap(0, Ordering::Relaxed);
        let removed = {
            let mut queues = self.queues.borrow_mut(py);
            for _ in 0..newly_cancelled {
                queues.timers.note_cancelled();
            }
            queues.timers.purge_cancelled()
        };
        for handle in &removed {
            handle.get().mark_unscheduled();
        }
        // `removed` is dropped here, outside the borrow.
    }

    /// How long the poll may sleep.
    fn poll_timeout(&self, py: Python<'_>) -> Option<Duration> {
        let queues = self.queues.borrow_mut(py);
        if !queues.ready.is_empty() || self.stopping.load(Ordering::Relaxed) {
            return Some(Duration::ZERO);
        }
        let mut deadline = queues.timers.next_deadline();
        if queues.pending_receives > 0 {
            deadline = Some(deadline.map_or(queues.next_sweep, |d| d.min(queues.next_sweep)));
        }
        let wait = (deadline? - self.clock.now()).clamp(0.0, MAX_WAIT_SECONDS);
        Some(Duration::from_secs_f64(wait))
    }

    /// Queues the reader/writer callbacks of the descriptors a wait reported ready, as asyncio
    /// does: a cancelled callback is unregistered instead.
    fn dispatch_io(&self, py: Python<'_>, io_events: &mut Vec<Readiness>) -> PyResult<()> {
        let mut stale = Vec::new();
        let mut receives = Vec::new();
        {
            let mut queues = self.queues.borrow_mut(py);
            let LoopQueues { watched, ready, .. } = &mut *queues;
            for event in io_events.iter() {
                let fd = event.token as i32;
                let Some(watch) = watched.get(&fd) else {
                    continue;
                };
                for (side, wanted) in [(Side::Read, event.readable), (Side::Write, event.writable)]
                {
                    if !wanted {
                        continue;
                    }
                    let watcher = match side {
                        Side::Read => &watch.reader,
                        Side::Write => &watch.writer,
                    };
                    match watcher {
                        Some(Watcher::Callback(handle)) if handle.get().is_cancelled() => {
                            stale.push((fd, side));
                        }
                        Some(Watcher::Callback(handle)) => ready.push_back(handle.clone_ref(py)),
                        Some(Watcher::Recv(_)) => receives.push(fd),
                        None => {}
                    }
                }
            }
            io_events.clear();
        }
        for (fd, side) in stale {
            self.unwatch(py, fd, side)?;
        }
        for fd in receives {
            self.complete_recv(py, fd)?;
        }
        Ok(())
    }

    /// A readable descriptor with a pending native receive: receive, then resolve the future.
    fn complete_recv(&self, py: Python<'_>, fd: i32) -> PyResult<()> {
        let pending = {
            let queues = self.queues.borrow_mut(py);
            match queues.watched.get(&fd).and_then(|w| w.reader.as_ref()) {
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
                let mut queues = self.queues.borrow_mut(py);
                if let Some(watch) = queues.watched.get_mut(&fd) {
                    self.sync_registration(fd, watch).map_err(os_error)?;
                }
                return Ok(());
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
    fn watch(
        &self,
        py: Python<'_>,
        fd: i32,
        fileobj: &Bound<'_, PyAny>,
        side: Side,
        watcher: Watcher,
    ) -> PyResult<()> {
        let previous = {
            let mut queues = self.queues.borrow_mut(py);
            let watch = queues.watched.entry(fd).or_default();
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
                let forget = watch.wanted().is_none() && watch.registered.is_none();
                if forget {
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
            if watch.wanted().is_none() && watch.registered.is_none() {
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
        let mut init = self.handle_init(py, callback, args, None, None)?;
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
    fn remove_watch(
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
    fn registered_fd(&self, py: Python<'_>, fileobj: &Bound<'_, PyAny>) -> PyResult<i32> {
        match fileobj_to_fd(fileobj) {
            Ok(fd) => Ok(fd),
            Err(err) if err.is_instance_of::<PyValueError>(py) => {
                let queues = self.queues.borrow_mut(py);
                queues
                    .watched
                    .iter()
                    .find(|(_, watch)| watch.fileobj.as_ref().is_some_and(|o| o.is(fileobj)))
                    .map(|(fd, _)| *fd)
                    .ok_or(err)
            }
            Err(err) => Err(err),
        }
    }

    /// Receives now if possible; otherwise registers a native waiter and returns its future.
    ///
    /// Anything unusual (a closed socket, a buffer that is not writable) is handed to the
    /// socket's own method with the caller's `argument`, so the error is exactly Python's.
    fn recv_or_wait(
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
        let future = Self::create_future(slf)?;
        let waiter = RecvWaiter {
            future: future.clone_ref(py),
            target,
            sock: sock.clone().unbind(),
        };
        self.watch(py, fd, sock, Side::Read, Watcher::Recv(Box::new(waiter)))?;
        Ok(future)
    }

    /// Fails pending native receives whose socket was closed behind the loop's back (epoll
    /// forgets a closed descriptor, so no event would ever come): an error, not a hang.
    fn sweep_closed_sockets(&self, py: Python<'_>) -> PyResult<()> {
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
                .filter_map(|(fd, watch)| match &watch.reader {
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

    /// Moves every timer due by now into the ready queue.
    fn collect_due_timers(&self, py: Python<'_>) {
        if self.queues.borrow_mut(py).timers.is_empty() {
            return; // no clock read when there is nothing to compare it with
        }
        let end = self.clock.now() + CLOCK_RESOLUTION;
        let mut dropped = Vec::new();
        {
            let mut queues = self.queues.borrow_mut(py);
            while let Some(handle) = queues.timers.pop_due(end) {
                handle.get().mark_unscheduled();
                if handle.get().is_cancelled() {
                    dropped.push(handle);
                } else {
                    queues.ready.push_back(handle);
                }
            }
        }
        drop(dropped);
    }

    /// One iteration of the loop.
    fn run_once(&self, slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        self.stats.iterations.fetch_add(1, Ordering::Relaxed);
        self.purge_cancelled_timers(py);
        self.poller.rearm_wake();
        let timeout = self.poll_timeout(py);
        // With callbacks ready and no descriptor of the user's to watch, a zero-timeout poll
        // could only report our own waker: skip the syscall. Python signal handlers still run
        // (the interpreter's eval breaker inside callbacks).
        let watching = !self.queues.borrow_mut(py).watched.is_empty();
        // While callbacks keep the loop busy (zero timeout), poll every second iteration
        // only: right after a poll, another zero-timeout poll mostly finds nothing new (the
        // callbacks just run were mostly the I/O it reported, and the task steps they
        // scheduled). Callback order is unchanged; readiness is noticed at most one
        // iteration later; a busy server makes half the epoll calls (streams echo: 2-4% less
        // CPU per request). asyncio does not promise in which iteration I/O is noticed.
        let skip_busy_poll =
            timeout == Some(Duration::ZERO) && self.polled_last.load(Ordering::Relaxed);
        let polling = timeout != Some(Duration::ZERO) || (watching && !skip_busy_poll);
        self.polled_last.store(polling, Ordering::Relaxed);
        if polling {
            let mut io_events = std::mem::take(&mut self.queues.borrow_mut(py).io_events);
            let poller = &self.poller;
            // A wait that may block releases the GIL, so that other threads run meanwhile.
            // Releasing and taking it back costs about as much as the poll itself, and on a
            // busy loop events are usually pending already: look first with the GIL held
            // (zero timeout), and only when nothing at all is there, block without it.
            let waited = match poller.wait(Some(Duration::ZERO), &mut io_events) {
                Ok(wakeup)
                    if timeout != Some(Duration::ZERO)
                        && io_events.is_empty()
                        && wakeup == Wakeup::default() =>
                {
                    py.detach(|| poller.wait(timeout, &mut io_events))
                }
                other => other,
            };
            let dispatched = self.dispatch_io(py, &mut io_events);
            self.queues.borrow_mut(py).io_events = io_events;
            waited.map_err(os_error)?;
            dispatched?;
            // Run the Python handlers of signals that interrupted the wait now; when the wait
            // was skipped, the interpreter runs them inside the next callback anyway.
            py.check_signals()?;
        }
        self.sweep_closed_sockets(py)?;
        self.collect_due_timers(py);
        self.run_ready(slf)
    }

    /// Runs the callbacks ready at the start of this step, in FIFO order.
    fn run_ready(&self, slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let todo = self.queues.borrow_mut(py).ready.len();
        let debug = self.is_debug();
        for _ in 0..todo {
            let Some(handle) = self.queues.borrow_mut(py).ready.pop_front() else {
                break;
            };
            let started = if debug { self.clock.now() } else { 0.0 };
            let outcome = handle.get().run(py, debug);
            if let RunOutcome::Raised(err) = outcome {
                self.report_callback_error(slf, &handle, err)?;
            }
            if debug {
                self.warn_if_slow(slf, &handle, self.clock.now() - started)?;
            }
            self.recycle(py, handle);
        }
        Ok(())
    }

    /// Sends an exception raised by a callback to the loop's exception handler; SystemExit and
    /// KeyboardInterrupt propagate out of the loop instead, as in asyncio.
    fn report_callback_error(
        &self,
        slf: &Bound<'_, Self>,
        handle: &Py<Handle>,
        err: PyErr,
    ) -> PyResult<()> {
        let py = slf.py();
        if err.is_instance_of::<PyKeyboardInterrupt>(py) || err.is_instance_of::<PySystemExit>(py) {
            return Err(err);
        }
        let context = PyDict::new(py);
        let described = handle.get().callback_source(py)?.unwrap_or_default();
        context.set_item("message", format!("Exception in callback {described}"))?;
        // `into_value` attaches the traceback to the exception (3.11 keeps it apart), so the
        // handler logs where the callback failed.
        context.set_item("exception", err.into_value(py))?;
        context.set_item("handle", handle.clone_ref(py))?;
        if let Ok(tb) = handle.bind(py).getattr("_source_traceback") {
            if !tb.is_none() {
                context.set_item("source_traceback", tb)?;
            }
        }
        slf.call_method1(pyo3::intern!(py, "call_exception_handler"), (context,))?;
        Ok(())
    }

    /// Debug mode: logs callbacks that ran longer than `loop.slow_callback_duration`.
    fn warn_if_slow(&self, slf: &Bound<'_, Self>, handle: &Py<Handle>, took: f64) -> PyResult<()> {
        let py = slf.py();
        let limit: f64 = slf
            .getattr(pyo3::intern!(py, "slow_callback_duration"))
            .and_then(|v| v.extract())
            .unwrap_or(0.1);
        if took >= limit {
            let logger = py.import("asyncio.log")?.getattr("logger")?;
            logger.call_method1(
                "warning",
                ("Executing %s took %.3f seconds", handle.clone_ref(py), took),
            )?;
        }
        Ok(())
    }
}

/// asyncio's (selectors') conversion of a file object to a descriptor number.
fn fileobj_to_fd(fileobj: &Bound<'_, PyAny>) -> PyResult<i32> {
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

/// Calls `callable(*positional, loop=loop)` by vectorcall (Future/Task construction).
fn call_with_loop_kw(
    py: Python<'_>,
    callable: &Py<PyAny>,
    positional: &[&Bound<'_, PyAny>],
    loop_obj: &Bound<'_, PyAny>,
    extra_kw: &[(&str, &Bound<'_, PyAny>)],
) -> PyResult<Py<PyAny>> {
    let kwargs = PyDict::new(py);
    kwargs.set_item(py_cache::str_loop(py), loop_obj)?;
    for (k, v) in extra_kw {
        kwargs.set_item(*k, *v)?;
    }
    let args = PyTuple::new(py, positional)?;
    Ok(callable.bind(py).call(args, Some(&kwargs))?.unbind())
}

#[pymethods]
impl LoopCore {
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn new(_args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        Ok(LoopCore {
            queues: GilRefCell::new(LoopQueues {
                ready: VecDeque::new(),
                timers: TimerQueue::new(),
                spare_handles: Vec::new(),
                watched: FdMap::default(),
                io_events: Vec::new(),
                pending_receives: 0,
                next_sweep: 0.0,
            }),
            clock: Clock::new(),
            poller: Poller::new().map_err(os_error)?,
            cancelled_timers: Arc::new(AtomicUsize::new(0)),
            debug: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            polled_last: AtomicBool::new(false),
            running_thread: AtomicU64::new(0),
            task_factory: GilRefCell::new(None),
            stats: LoopStats::default(),
            scratch: GilRefCell::new(Vec::new()),
            transports: GilRefCell::new(FdMap::default()),
        })
    }

    /// The loop's clock: `time.monotonic()`'s clock and scale.
    fn time(&self) -> f64 {
        self.clock.now()
    }

    /// Schedules `callback(*args)` for the next iteration.
    #[pyo3(signature = (callback, *args, context=None))]
    fn call_soon(
        &self,
        py: Python<'_>,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        context: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<Handle>> {
        self.check_can_schedule(py, callback, "call_soon")?;
        self.schedule_soon(py, callback, args, context)
    }

    /// Schedules `callback(*args)` from any thread and wakes the loop.
    #[pyo3(signature = (callback, *args, context=None))]
    fn call_soon_threadsafe(
        &self,
        py: Python<'_>,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        context: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<Handle>> {
        self.check_closed()?;
        if self.is_debug() {
            check_callback(py, callback, "call_soon_threadsafe")?;
        }
        // The ready queue is GIL-protected and this thread holds the GIL: append directly.
        let handle = self.schedule_soon(py, callback, args, context)?;
        self.poller.wake().map_err(os_error)?;
        Ok(handle)
    }

    /// Schedules `callback(*args)` to run `delay` seconds from now.
    #[pyo3(signature = (delay, callback, *args, context=None))]
    fn call_later(
        &self,
        py: Python<'_>,
        delay: &Bound<'_, PyAny>,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        context: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<Handle>> {
        if delay.is_none() {
            return Err(PyTypeError::new_err("delay must not be None"));
        }
        let now = self.clock.now();
        let when = match delay.extract::<f64>() {
            Ok(seconds) => now + seconds,
            // Not a real number: evaluate `loop.time() + delay` as asyncio does, so the error
            // (or a numeric type's own addition) is exactly Python's.
            Err(_) => pyo3::types::PyFloat::new(py, now)
                .add(delay)?
                .extract::<f64>()?,
        };
        self.schedule_at(py, when, callback, args, context)
    }

    /// Schedules `callback(*args)` at absolute time `when` (on `loop.time()`'s clock).
    #[pyo3(signature = (when, callback, *args, context=None))]
    fn call_at(
        &self,
        py: Python<'_>,
        when: &Bound<'_, PyAny>,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        context: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<Handle>> {
        let when = seconds_arg(when, "when cannot be None")?;
        self.schedule_at(py, when, callback, args, context)
    }

    /// Calls `callback(*args)` whenever `fd` (a descriptor or an object with `fileno()`) is
    /// readable (level-triggered), replacing any previous reader of `fd`.
    #[pyo3(signature = (fd, callback, *args))]
    fn add_reader(
        &self,
        py: Python<'_>,
        fd: &Bound<'_, PyAny>,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
    ) -> PyResult<()> {
        self.add_watch(py, fd, Side::Read, callback, args, None)?;
        Ok(())
    }

    /// `add_reader` returning the handle (for the sock_* methods, which must not remove a
    /// reader that replaced theirs).
    #[pyo3(signature = (fd, callback, *args))]
    fn _add_reader(
        &self,
        py: Python<'_>,
        fd: &Bound<'_, PyAny>,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
    ) -> PyResult<Py<Handle>> {
        self.add_watch(py, fd, Side::Read, callback, args, None)
    }

    /// `add_writer` returning the handle.
    #[pyo3(signature = (fd, callback, *args))]
    fn _add_writer(
        &self,
        py: Python<'_>,
        fd: &Bound<'_, PyAny>,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
    ) -> PyResult<Py<Handle>> {
        self.add_watch(py, fd, Side::Write, callback, args, None)
    }

    /// Stops watching `fd` for reading; returns whether a reader was registered.
    fn remove_reader(&self, py: Python<'_>, fd: &Bound<'_, PyAny>) -> PyResult<bool> {
        self.remove_watch(py, fd, Side::Read)
    }

    /// `remove_reader` without the transport check of the Python wrapper (internal use).
    fn _remove_reader(&self, py: Python<'_>, fd: &Bound<'_, PyAny>) -> PyResult<bool> {
        self.remove_watch(py, fd, Side::Read)
    }

    /// `remove_writer` without the transport check of the Python wrapper (internal use).
    fn _remove_writer(&self, py: Python<'_>, fd: &Bound<'_, PyAny>) -> PyResult<bool> {
        self.remove_watch(py, fd, Side::Write)
    }

    /// Calls `callback(*args)` whenever `fd` is writable (level-triggered), replacing any
    /// previous writer of `fd`.
    #[pyo3(signature = (fd, callback, *args))]
    fn add_writer(
        &self,
        py: Python<'_>,
        fd: &Bound<'_, PyAny>,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
    ) -> PyResult<()> {
        self.add_watch(py, fd, Side::Write, callback, args, None)?;
        Ok(())
    }

    /// Stops watching `fd` for writing; returns whether a writer was registered.
    fn remove_writer(&self, py: Python<'_>, fd: &Bound<'_, PyAny>) -> PyResult<bool> {
        self.remove_watch(py, fd, Side::Write)
    }

    /// `sock_recv`'s native part: the data if `sock` has some now, else a future the loop
    /// resolves when it has received (see `sock_io.rs`).
    fn _sock_recv(
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

    /// `sock_recv_into`'s native part: the count if `sock` has data now, else a future.
    fn _sock_recv_into(
        slf: &Bound<'_, Self>,
        sock: &Bound<'_, PyAny>,
        buf: &Bound<'_, PyAny>,
    ) -> PyResult<Py<PyAny>> {
        slf.get()
            .recv_or_wait(slf, sock, RecvTarget::Into(buf.clone().unbind()), buf)
    }

    /// Drops the pending native receive on `sock` if it is the one resolving `future` (the
    /// awaiting coroutine was cancelled).
    fn _sock_forget_wait(
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
                queues.watched.get(&fd).and_then(|w| w.reader.as_ref()),
                Some(Watcher::Recv(waiter)) if waiter.future.is(future)
            )
        };
        if ours {
            self.unwatch(py, fd, Side::Read)?;
        }
        Ok(())
    }

    /// A new `asyncio.Future` bound to this loop.
    /// The open transport using descriptor `fd`, if any.
    fn _transport_for_fd(&self, py: Python<'_>, fd: i32) -> Option<Py<PyAny>> {
        let address = *self.transports.borrow_mut(py).get(&fd)?;
        // SAFETY: an address in `transports` belongs to a live transport (entries leave
        // before their object is deallocated, see the field's comment); we take a new
        // strong reference to it while holding the GIL.
        Some(unsafe { Bound::from_borrowed_ptr(py, address as *mut ffi::PyObject) }.unbind())
    }

    fn create_future(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let future_type = py_cache::asyncio_future_type(py)?;
        call_with_loop_kw(py, future_type, &[], slf.as_any(), &[])
    }

    /// Wraps `coro` in a Task (or the task factory's object) scheduled on this loop.
    #[pyo3(signature = (coro, *, name=None, context=None))]
    fn create_task(
        slf: &Bound<'_, Self>,
        coro: &Bound<'_, PyAny>,
        name: Option<&Bound<'_, PyAny>>,
        context: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let this = slf.get();
        this.check_closed()?;
        let factory = this
            .task_factory
            .borrow_mut(py)
            .as_ref()
            .map(|f| f.clone_ref(py));
        let name = name.filter(|n| !n.is_none());
        let context = context.filter(|c| !c.is_none());
        match factory {
            None => {
                let mut extra: Vec<(&str, &Bound<'_, PyAny>)> = Vec::with_capacity(2);
                if let Some(n) = name {
                    extra.push(("name", n));
                }
                if let Some(c) = context {
                    extra.push(("context", c));
                }
                let task_type = py_cache::asyncio_task_type(py)?;
                call_with_loop_kw(py, task_type, &[coro], slf.as_any(), &extra)
            }
            Some(factory) => {
                let factory = factory.bind(py);
                let task = match context {
                    None => factory.call1((slf, coro))?,
                    Some(c) => {
                        let kwargs = PyDict::new(py);
                        kwargs.set_item("context", c)?;
                        factory.call((slf, coro), Some(&kwargs))?
                    }
                };
                if let Some(n) = name {
                    if let Ok(set_name) = task.getattr("set_name") {
                        set_name.call1((n,))?;
                    }
                }
                Ok(task.unbind())
            }
        }
    }

    /// Sets the factory `create_task` uses (`factory(loop, coro[, context=...])`), or None.
    fn set_task_factory(&self, py: Python<'_>, factory: &Bound<'_, PyAny>) -> PyResult<()> {
        if !factory.is_none() && !factory.is_callable() {
            return Err(PyTypeError::new_err(
                "task factory must be a callable or None",
            ));
        }
        let new = if factory.is_none() {
            None
        } else {
            Some(factory.clone().unbind())
        };
        let old = std::mem::replace(&mut *self.task_factory.borrow_mut(py), new);
        drop(old);
        Ok(())
    }

    /// The task factory, or None.
    fn get_task_factory(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.task_factory
            .borrow_mut(py)
            .as_ref()
            .map(|f| f.clone_ref(py))
    }

    /// True in debug mode.
    fn get_debug(&self) -> bool {
        self.is_debug()
    }

    /// Turns debug mode on or off.
    fn set_debug(&self, enabled: &Bound<'_, PyAny>) -> PyResult<()> {
        self.debug.store(enabled.is_truthy()?, Ordering::Relaxed);
        Ok(())
    }

    /// True while `run_forever` runs.
    fn is_running(&self) -> bool {
        self.running_thread.load(Ordering::Relaxed) != 0
    }

    /// True once `close()` was called.
    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Stops the loop after the callbacks of the current iteration.
    fn stop(&self) -> PyResult<()> {
        self.stopping.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Raises RuntimeError if the loop is closed.
    fn _check_closed(&self) -> PyResult<()> {
        self.check_closed()
    }

    /// Wakes the loop from its poll (any thread).
    fn _write_to_self(&self) -> PyResult<()> {
        self.poller.wake().map_err(os_error)
    }

    /// The descriptor the Python side hands to `signal.set_wakeup_fd()`.
    fn _signal_wakeup_fd(&self) -> i32 {
        self.poller.signal_wakeup_fd()
    }

    /// Runs iterations until `stop()`; the Python `run_forever` wraps this with its set-up.
    fn _run_until_stopped(slf: &Bound<'_, Self>) -> PyResult<()> {
        let this = slf.get();
        this.running_thread
            .store(current_thread_ident(), Ordering::Relaxed);
        let result = loop {
            if let Err(err) = this.run_once(slf) {
                break Err(err);
            }
            if this.stopping.load(Ordering::Relaxed) {
                break Ok(());
            }
        };
        this.stopping.store(false, Ordering::Relaxed);
        this.running_thread.store(0, Ordering::Relaxed);
        // The spare `bytes` of the transports lives in this thread only while a loop runs
        // here: a loop that is never closed, or an interpreter that is finalised, keeps none.
        crate::interop::spare_bytes::release(slf.py());
        result
    }

    /// Marks the loop closed and drops every pending callback and timer.
    fn _close_core(&self, py: Python<'_>) -> PyResult<()> {
        if self.is_running() {
            return Err(PyRuntimeError::new_err("Cannot close a running event loop"));
        }
        if self.closed.swap(true, Ordering::Relaxed) {
            return Ok(());
        }
        let (ready, timers, spare, watched) = {
            let mut queues = self.queues.borrow_mut(py);
            (
                std::mem::take(&mut queues.ready),
                queues.timers.drain_all(),
                std::mem::take(&mut queues.spare_handles),
                std::mem::take(&mut queues.watched),
            )
        };
        self.queues.borrow_mut(py).pending_receives = 0;
        self.poller.close();
        for watch in watched.into_values() {
            for watcher in [watch.reader, watch.writer].into_iter().flatten() {
                if let Watcher::Callback(handle) = watcher {
                    handle.get().cancel_now(py);
                }
            }
        }
        drop(spare);
        for handle in &timers {
            handle.get().mark_unscheduled();
        }
        for handle in ready.iter().chain(timers.iter()) {
            handle.get().release(py);
        }
        drop(ready);
        drop(timers);
        Ok(())
    }

    /// Counts for introspection: ready callbacks, queued timers, cancelled timers still queued,
    /// loop iterations so far.
    fn _stats(&self, py: Python<'_>) -> (usize, usize, usize, u64) {
        let queues = self.queues.borrow_mut(py);
        (
            queues.ready.len(),
            queues.timers.len(),
            queues.timers.cancelled_count() + self.cancelled_timers.load(Ordering::Relaxed),
            self.stats.iterations.load(Ordering::Relaxed),
        )
    }
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
