//! The Python face of `LoopCore`: its one `#[pymethods]` block (PyO3 is built without
//! `multiple-pymethods`). Each method only converts arguments and forwards to the file of its
//! concept (see the map in `mod.rs`); `fast_methods.rs` replaces `call_soon`, `call_later`,
//! `call_at` and `get_debug` with raw entry points when the module loads (these PyO3 methods
//! stay as their fallbacks, `_checked_call_soon` & co.).

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple};

use crate::event_loop::fd_watch::Side;
use crate::event_loop::handle::Handle;
use crate::event_loop::LoopCore;
use crate::interop::errors::os_error;

#[pymethods]
impl LoopCore {
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn new(_args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        Self::create()
    }

    /// The loop's clock: `time.monotonic()`'s clock and scale, or the virtual clock.
    fn time(&self) -> f64 {
        self.clock.now()
    }

    /// Attribute assignment as usual; setting `time` on the instance makes the loop read its
    /// clock through it, as asyncio's loop does (`time_override.rs`).
    fn __setattr__(
        slf: &Bound<'_, Self>,
        name: &Bound<'_, PyString>,
        value: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        // SAFETY: all three pointers are live objects borrowed for the call; the generic
        // setter stores into the instance's __dict__ (or a data descriptor) as `object` would.
        let rc = unsafe {
            pyo3::ffi::PyObject_GenericSetAttr(slf.as_ptr(), name.as_ptr(), value.as_ptr())
        };
        if rc != 0 {
            return Err(PyErr::fetch(slf.py()));
        }
        slf.get().note_attribute(slf.py(), name, Some(value))
    }

    /// Attribute deletion as usual; deleting the instance's `time` restores the native clock.
    fn __delattr__(slf: &Bound<'_, Self>, name: &Bound<'_, PyString>) -> PyResult<()> {
        // SAFETY: live pointers borrowed for the call; a NULL value asks for deletion.
        let rc = unsafe {
            pyo3::ffi::PyObject_GenericSetAttr(slf.as_ptr(), name.as_ptr(), std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(PyErr::fetch(slf.py()));
        }
        slf.get().note_attribute(slf.py(), name, None)
    }

    // ------------------------------------------------------------ virtual time (core/clock.rs)

    /// Moves the virtual clock forward by `seconds`; timers that become due run in the next
    /// iterations. ValueError if negative (or NaN, infinite), RuntimeError in real time.
    fn advance_time(&self, seconds: f64) -> PyResult<()> {
        self.advance_virtual_time(seconds)
    }

    /// Switches the loop to virtual time (before it first runs): `time()` reads 0.0 and jumps
    /// to the next timer whenever no I/O arrives within `autojump_threshold` real seconds.
    fn _enable_virtual_time(&self, autojump_threshold: f64) -> PyResult<()> {
        self.enable_virtual_time(autojump_threshold)
    }

    /// True when the loop runs on virtual time.
    fn _is_virtual_time(&self) -> bool {
        self.clock.is_virtual()
    }

    /// Counts an executor job as outstanding work (`delta` = 1) or finished (`delta` = -1):
    /// in virtual time the clock does not jump while some is outstanding.
    fn _outstanding_work(&self, delta: i32) {
        self.count_outstanding_work(delta)
    }

    // ---------------------------------------------------------------- scheduling (schedule.rs)

    /// Schedules `callback(*args)` for the next iteration.
    #[pyo3(signature = (callback, *args, context=None))]
    fn call_soon(
        &self,
        py: Python<'_>,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        context: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<Handle>> {
        self.call_soon_checked(py, callback, args, context)
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
        self.schedule_soon_threadsafe(py, callback, args, context)
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
        self.schedule_later(py, delay, callback, args, context)
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
        self.schedule_at_arg(py, when, callback, args, context)
    }

    // ---------------------------------------------------- descriptor watches (fd_watch.rs)
    // `EventLoop.add_reader` & co. (Python) refuse a transport's descriptor, then call these.

    /// Calls `callback(*args)` whenever `fd` (a descriptor or an object with `fileno()`) is
    /// readable (level-triggered), replacing any previous reader of `fd`; returns the handle
    /// (the sock_* methods must not remove a reader that replaced theirs).
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

    /// Calls `callback(*args)` whenever `fd` is writable (level-triggered), replacing any
    /// previous writer of `fd`; returns the handle.
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
    fn _remove_reader(&self, py: Python<'_>, fd: &Bound<'_, PyAny>) -> PyResult<bool> {
        self.remove_watch(py, fd, Side::Read)
    }

    /// Stops watching `fd` for writing; returns whether a writer was registered.
    fn _remove_writer(&self, py: Python<'_>, fd: &Bound<'_, PyAny>) -> PyResult<bool> {
        self.remove_watch(py, fd, Side::Write)
    }

    /// The open transport using descriptor `fd`, if any (transports.rs).
    fn _transport_for_fd(&self, py: Python<'_>, fd: i32) -> Option<Py<PyAny>> {
        self.transport_for_fd(py, fd)
    }

    // ----------------------------------------------------------- native receives (native_recv.rs)

    /// `sock_recv`'s native part: the data if `sock` has some now, else a future the loop
    /// resolves when it has received.
    fn _sock_recv(
        slf: &Bound<'_, Self>,
        sock: &Bound<'_, PyAny>,
        n: &Bound<'_, PyAny>,
    ) -> PyResult<Py<PyAny>> {
        Self::sock_recv(slf, sock, n)
    }

    /// `sock_recv_into`'s native part: the count if `sock` has data now, else a future.
    fn _sock_recv_into(
        slf: &Bound<'_, Self>,
        sock: &Bound<'_, PyAny>,
        buf: &Bound<'_, PyAny>,
    ) -> PyResult<Py<PyAny>> {
        Self::sock_recv_into(slf, sock, buf)
    }

    /// Drops the pending native receive on `sock` if it is the one resolving `future` (the
    /// awaiting coroutine was cancelled).
    fn _sock_forget_wait(
        &self,
        py: Python<'_>,
        sock: &Bound<'_, PyAny>,
        future: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        self.forget_recv(py, sock, future)
    }

    // ------------------------------------------------------------- futures and tasks (tasks.rs)

    /// A new `asyncio.Future` bound to this loop.
    fn create_future(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        Self::new_future(slf)
    }

    /// Wraps `coro` in a Task (or the task factory's object) scheduled on this loop; 3.14+
    /// passes other keywords (`eager_start=`) on.
    #[pyo3(signature = (coro, *, name=None, context=None, **kwargs))]
    fn create_task(
        slf: &Bound<'_, Self>,
        coro: &Bound<'_, PyAny>,
        name: Option<&Bound<'_, PyAny>>,
        context: Option<&Bound<'_, PyAny>>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        Self::new_task(slf, coro, name, context, kwargs)
    }

    /// Sets the factory `create_task` uses (`factory(loop, coro[, context=...])`), or None.
    fn set_task_factory(&self, py: Python<'_>, factory: &Bound<'_, PyAny>) -> PyResult<()> {
        self.replace_task_factory(py, factory)
    }

    /// While an inspector serves: `create_task` notes each new task's creation time (loop
    /// time) in `births` (a mapping keyed by task); None stops it (tasks.rs).
    fn _track_task_births(&self, py: Python<'_>, births: &Bound<'_, PyAny>) {
        self.track_task_births(py, births)
    }

    /// While an inspector serves: time each callback and add its run time to the task it
    /// steps (task_cpu.rs); False stops and forgets.
    fn _profile_tasks(&self, py: Python<'_>, on: bool) -> PyResult<()> {
        self.profile_tasks(py, on)
    }

    /// `{id(task): seconds of run time}` for the live tasks `live` (ids) while profiling;
    /// the times of other tasks are forgotten (task_cpu.rs).
    fn _task_times<'py>(&self, py: Python<'py>, live: Vec<usize>) -> PyResult<Bound<'py, PyDict>> {
        self.task_times(py, live)
    }

    /// The task factory, or None.
    fn get_task_factory(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.current_task_factory(py)
    }

    // ---------------------------------------------------------------- life (lifecycle.rs)

    /// True in debug mode.
    fn get_debug(&self) -> bool {
        self.is_debug()
    }

    /// Turns debug mode on or off.
    fn set_debug(&self, enabled: &Bound<'_, PyAny>) -> PyResult<()> {
        self.set_debug_mode(enabled.is_truthy()?);
        Ok(())
    }

    /// True while `run_forever` runs.
    fn is_running(&self) -> bool {
        self.is_loop_running()
    }

    /// True once `close()` was called.
    fn is_closed(&self) -> bool {
        self.is_loop_closed()
    }

    /// Stops the loop after the callbacks of the current iteration.
    fn stop(&self) -> PyResult<()> {
        self.request_stop();
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

    /// In a child made by `fork()`: the loop gets its own epoll, waker and signal pipe, its
    /// watched descriptors registered again (`python/ferroloop/_fork.py` calls it).
    fn _renew_after_fork(&self, py: Python<'_>) -> PyResult<()> {
        self.renew_watches_after_fork(py)?;
        self.watchdog.renew_after_fork(py)
    }

    // ------------------------------------------------------------------ watchdog.rs

    /// Reports callbacks that run longer than `threshold` seconds, with the loop thread's
    /// stack while they block; `None` turns the watchdog off.
    #[pyo3(signature = (threshold, handler=None))]
    fn set_watchdog(
        slf: &Bound<'_, Self>,
        threshold: Option<&Bound<'_, PyAny>>,
        handler: Option<Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let this = slf.get();
        this.watchdog
            .configure(slf.as_any(), threshold, handler, || this.check_closed())
    }

    /// Runs iterations until `stop()`; the Python `run_forever` wraps this with its set-up.
    fn _run_until_stopped(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::run_until_stopped(slf)
    }

    /// Marks the loop closed and drops every pending callback, timer and watch.
    fn _close_core(&self, py: Python<'_>) -> PyResult<()> {
        self.close_core(py)
    }

    /// The native part of `loop.stats()` (stats.rs): every documented key but `tasks`.
    fn _loop_stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.stats_dict(py)
    }

    /// Every open native transport with its descriptor, in descriptor order (transports.rs).
    fn _open_transports(&self, py: Python<'_>) -> Vec<(i32, Py<PyAny>)> {
        self.open_transports(py)
    }

    /// Counts for introspection: ready callbacks, queued timers, cancelled timers still queued,
    /// loop iterations so far.
    fn _stats(&self, py: Python<'_>) -> (usize, usize, usize, u64) {
        self.counts(py)
    }
}
