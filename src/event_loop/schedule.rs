//! Scheduling: how `call_soon`, `call_soon_threadsafe`, `call_later` and `call_at` turn a
//! callback into a handle on the ready queue or the timer heap, with asyncio's checks (an open
//! loop; in debug mode, the loop's thread and a callable that is not a coroutine).
//!
//! `call_soon_threadsafe` appends to the same ready queue (the posting thread holds the GIL,
//! which guards it), wakes the loop only if it may be blocked in its wait (one system call per
//! batch at most, see `Poller::suppress_wake`), and applies backpressure: once
//! `POSTS_PENDING_MAX` posts wait for the loop's next batch, a posting thread gives the GIL back
//! until the loop takes them (`core::post_gate`), so that timers and I/O stay on time however
//! fast other threads post.
//!
//! Handles are recycled: one that ran and that nobody else references goes back to a pool
//! (`recycle`) and is filled again by the next `make_handle`, so a steady stream of
//! callbacks allocates no objects. The pool's size follows the batches the loop takes
//! (`core::spare_budget`), and it lets its extra handles go when batches are small again or
//! the loop idles. New handles are kept out of the garbage collector's lists
//! (see `handle.rs`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use pyo3::exceptions::PyTypeError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyFloat, PyTuple};

use crate::event_loop::handle::{ArgsRef, Handle, HandleInit};
use crate::event_loop::lifecycle::current_thread_ident;
use crate::event_loop::{LoopCore, LoopQueues};
use crate::interop::callback_check::check_callback;
use crate::interop::errors::os_error;
use crate::interop::py_cache;
use crate::interop::step_untrack;

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

/// Takes a callback's argument tuple out of the garbage collector's lists when none of its
/// items can be part of a reference cycle (numbers, strings, None, untracked tuples).
///
/// CPython's collector does the same to every such tuple it meets in a young-generation
/// collection (`untrack_tuples`); doing it when a timer is made spares every collection
/// until then the walk over the arguments of pending timers (a timer's `(float,)`). An
/// untracked tuple is re-tracked by nothing, which is correct: a tuple's items never change.
#[inline]
fn untrack_atomic_args(args: &Bound<'_, PyTuple>) {
    // SAFETY: `args` is a live tuple and the GIL is held; reading its items and the GC flags
    // of those items is read-only; untracking a tracked tuple is allowed (CPython does it).
    unsafe {
        let tuple = args.as_ptr();
        let len = ffi::PyTuple_GET_SIZE(tuple);
        if len == 0 || ffi::PyObject_GC_IsTracked(tuple) == 0 {
            return;
        }
        for i in 0..len {
            let item = ffi::PyTuple_GET_ITEM(tuple, i);
            // CPython's rule (`_PyObject_GC_MAY_BE_TRACKED`): only an untracked tuple is
            // known to stay untracked; an untracked dict may be tracked again later.
            let may_be_tracked = ffi::PyObject_IS_GC(item) != 0
                && (ffi::PyTuple_CheckExact(item) == 0 || ffi::PyObject_GC_IsTracked(item) != 0);
            if may_be_tracked {
                return;
            }
        }
        ffi::PyObject_GC_UnTrack(tuple.cast());
    }
}

/// Converts a delay/deadline argument to seconds, with asyncio's error for `None`.
fn seconds_arg(value: &Bound<'_, PyAny>, none_message: &str) -> PyResult<f64> {
    if value.is_none() {
        return Err(PyTypeError::new_err(none_message.to_string()));
    }
    value.extract::<f64>()
}

impl LoopQueues {
    /// True if an iteration would only run ready callbacks as far as the queues tell: some
    /// are ready, no descriptor is watched, no timer is queued, no native receive is pending
    /// (`LoopCore::only_callbacks` adds the checks outside the queues).
    #[inline(always)]
    pub(super) fn only_callbacks(&self) -> bool {
        !self.ready.is_empty()
            && self.watched.is_empty()
            && self.timers.is_empty()
            && self.pending_receives == 0
    }

    /// Takes the batch of callbacks ready now: their number, told to the spare-handle budget,
    /// and the spare handles beyond the budget if it fell back (`take_extra_spares`), for the
    /// caller to drop once the queues are no longer borrowed.
    #[inline(always)]
    pub(super) fn take_batch(&mut self) -> (usize, Option<Vec<Py<Handle>>>) {
        let todo = self.ready.len();
        let shrink = self.spare_budget.batch_taken(todo);
        (todo, shrink.then(|| self.take_extra_spares()))
    }

    /// The spare handles beyond the budget (after it fell back), taken out of the pool for the
    /// caller to drop once the queues are no longer borrowed (freeing a handle's parked
    /// context may run Python code).
    pub(super) fn take_extra_spares(&mut self) -> Vec<Py<Handle>> {
        let keep = self.spare_budget.cap().min(self.spare_handles.len());
        let extra = self.spare_handles.split_off(keep);
        self.spare_handles.shrink_to(keep);
        extra
    }
}

impl LoopCore {
    /// The loop has been idle for a while: the spare pool falls back to its base budget.
    pub(super) fn shrink_spares_when_idle(&self, py: Python<'_>) {
        let extra = {
            let mut queues = self.queues.borrow_mut(py);
            if !queues.spare_budget.idle() {
                return;
            }
            queues.take_extra_spares()
        };
        drop(extra);
    }

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
    pub(super) fn make_handle(&self, py: Python<'_>, init: HandleInit) -> PyResult<Py<Handle>> {
        let spare = self.queues.borrow_mut(py).spare_handles.pop();
        let handle = match spare {
            Some(handle) => handle,
            None => match new_untracked_handle(py, &self.cancelled_timers) {
                Ok(handle) => handle,
                Err(err) => {
                    crate::event_loop::handle::drop_attached(py, Some(init.callback));
                    init.args.drop_attached(py);
                    crate::event_loop::handle::drop_attached(py, init.source_traceback);
                    crate::event_loop::handle::drop_attached(py, init.context);
                    return Err(err);
                }
            },
        };
        if let Err(err) = handle.get().init(py, init) {
            // Back to the pool: it is as empty as it was.
            self.queues.borrow_mut(py).spare_handles.push(handle);
            return Err(err);
        }
        Ok(handle)
    }

    /// Keeps `handle` for reuse if the loop holds the only reference to it (so no Python code
    /// can ever observe the reuse); otherwise lets it go. Inlined: it runs after every callback.
    #[inline(always)]
    pub(super) fn recycle(&self, py: Python<'_>, handle: Py<Handle>) {
        // SAFETY: reading the reference count of a live object we own a reference to.
        if unsafe { ffi::Py_REFCNT(handle.as_ptr()) } != 1 {
            drop(handle.into_bound(py));
            return;
        }
        let released = handle.get().reset(py);
        let overflow = {
            let mut queues = self.queues.borrow_mut(py);
            if queues.spare_handles.len() < queues.spare_budget.cap() {
                queues.spare_handles.push(handle);
                None
            } else {
                Some(handle)
            }
        };
        drop(released);
        if let Some(handle) = overflow {
            // Its parked context serves the handles that have none (`context_reuse`).
            handle.get().donate_parked(py);
            drop(handle.into_bound(py));
        }
    }

    /// The context a callback runs in: the given one, else None (a copy of the current one,
    /// made when the handle is filled).
    #[inline(always)]
    fn given_context(context: Option<&Bound<'_, PyAny>>) -> Option<Py<PyAny>> {
        match context {
            Some(c) if !c.is_none() => Some(c.clone().unbind()),
            _ => None,
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
    pub(super) fn handle_init(
        &self,
        py: Python<'_>,
        callback: &Bound<'_, PyAny>,
        args: ArgsRef<'_, '_>,
        context: Option<&Bound<'_, PyAny>>,
        when: Option<f64>,
    ) -> PyResult<HandleInit> {
        // What can fail comes first: nothing is then dropped on an error (the native call_soon
        // runs outside PyO3's attach bookkeeping, see fast_methods.rs).
        let source_traceback = self.source_traceback(py)?;
        let context = Self::given_context(context);
        Ok(HandleInit {
            callback: callback.clone().unbind(),
            args: args.to_owned_args(),
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
        self.schedule_soon_args(py, callback, ArgsRef::Tuple(args), context)
    }

    /// `schedule_soon` with the arguments as the fast entry points hold them. Inlined into
    /// them: the usual case (`schedule_soon_recycled`) then costs no call frame of its own.
    #[inline(always)]
    pub(crate) fn schedule_soon_args(
        &self,
        py: Python<'_>,
        callback: &Bound<'_, PyAny>,
        args: ArgsRef<'_, '_>,
        context: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<Handle>> {
        // SAFETY: a live callback the handle made below takes a reference to; GIL held.
        unsafe { step_untrack::untrack_queued_step(callback.as_ptr()) };
        if let Some(handle) = self.schedule_soon_recycled(py, callback, args, context) {
            return Ok(handle);
        }
        self.schedule_soon_new(py, callback, args, context)
    }

    /// `schedule_soon_args` for a handle filled by `init` (a new one, or a new copy of the
    /// current context, or debug mode).
    #[inline(never)]
    fn schedule_soon_new(
        &self,
        py: Python<'_>,
        callback: &Bound<'_, PyAny>,
        args: ArgsRef<'_, '_>,
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

    /// The usual case of `schedule_soon_args` in one borrow of the loop's queues: outside
    /// debug mode (no creation stack to record), a spare handle filled in place
    /// (`Handle::fill_soon`) and queued. None (nothing changed) when there is no spare handle
    /// or the copy of the current context needs a new object: the general path then.
    ///
    /// Nothing here can run Python code (references taken, a parked context given the
    /// current mapping), so the borrow may span it; a parked context replaced by a given one
    /// is released after the borrow.
    #[inline(always)]
    fn schedule_soon_recycled(
        &self,
        py: Python<'_>,
        callback: &Bound<'_, PyAny>,
        args: ArgsRef<'_, '_>,
        context: Option<&Bound<'_, PyAny>>,
    ) -> Option<Py<Handle>> {
        if self.is_debug() {
            return None;
        }
        let mut queues = self.queues.borrow_mut(py);
        let handle = queues.spare_handles.pop()?;
        let ts = self.callback_thread_state();
        match handle.get().fill_soon(py, callback, args, context, ts) {
            Ok(replaced) => {
                queues.ready.push_back(handle.clone_ref(py));
                drop(queues);
                crate::event_loop::handle::drop_attached(py, replaced);
                Some(handle)
            }
            Err(()) => {
                queues.spare_handles.push(handle);
                None
            }
        }
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
        self.push_timer(py, when, callback, ArgsRef::Tuple(args), context)
    }

    /// Builds a timer handle due at `when` and queues it, without asyncio's checks (see
    /// `schedule_soon`).
    pub(crate) fn push_timer(
        &self,
        py: Python<'_>,
        when: f64,
        callback: &Bound<'_, PyAny>,
        args: ArgsRef<'_, '_>,
        context: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<Handle>> {
        // Timers live long enough to meet collections; a ready callback's arguments mostly
        // do not (measured: untracking them cost call_soon chains ~2%).
        if let ArgsRef::Tuple(tuple) = args {
            untrack_atomic_args(tuple);
        }
        let init = self.handle_init(py, callback, args, context, Some(when))?;
        let handle = self.make_handle(py, init)?;
        self.queues
            .borrow_mut(py)
            .timers
            .push(when, handle.clone_ref(py));
        Ok(handle)
    }

    /// `call_soon_threadsafe`: `call_soon` from any thread, then wakes the loop.
    pub(super) fn schedule_soon_threadsafe(
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
        // Then wake: the handle's creation may run Python code (debug mode) that lets the
        // loop take the GIL, so a wake before the append could be consumed too early.
        let handle = self.schedule_soon(py, callback, args, context)?;
        self.poller.wake().map_err(os_error)?;
        self.throttle_poster();
        Ok(handle)
    }

    /// Wakes the loop if it may be blocked in its wait (`call_soon_threadsafe`'s wake-up).
    pub(crate) fn wake_loop(&self) -> std::io::Result<()> {
        self.poller.wake()
    }

    /// After a post from another thread: when the loop is behind (too many posts pending for
    /// its next batch), gives the GIL back until the loop takes them, or for at most
    /// `POSTER_PATIENCE`. Never waits on the loop's own thread or for a loop not running.
    ///
    /// Touches no Python object while the GIL is released; callable from the raw entry point.
    pub(crate) fn throttle_poster(&self) {
        let Some(epoch) = self.post_gate.note_post() else {
            return;
        };
        let running = self.running_thread.load(Ordering::Relaxed);
        if running == 0 || running == current_thread_ident() {
            return;
        }
        // SAFETY: the calling thread holds the GIL (every caller is a Python method); it is
        // released around a wait that uses no Python API and taken back before returning.
        unsafe {
            let state = ffi::PyEval_SaveThread();
            self.post_gate.wait_for_next_batch(epoch);
            ffi::PyEval_RestoreThread(state);
        }
    }

    /// The loop takes its batch of ready callbacks: posters waiting for it resume.
    pub(super) fn batch_taken(&self) {
        self.post_gate.batch_taken();
    }

    /// `call_later`: a timer due `delay` seconds from now.
    pub(super) fn schedule_later(
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
        let now = self.now(py)?;
        let plain = delay.is_exact_instance_of::<PyFloat>()
            || delay.is_exact_instance_of::<pyo3::types::PyInt>();
        let when = match plain.then(|| delay.extract::<f64>()) {
            Some(Ok(seconds)) => now + seconds,
            // Anything else (a Decimal, a str, an int too large for a float...): evaluate
            // `loop.time() + delay` as asyncio does, so the error (or a numeric type's own
            // addition) is exactly Python's. (`float(delay)` would accept a Decimal, which
            // asyncio refuses.)
            _ => PyFloat::new(py, now).add(delay)?.extract::<f64>()?,
        };
        self.schedule_at(py, when, callback, args, context)
    }

    /// `call_at`: a timer due at `when` (on `loop.time()`'s clock).
    pub(super) fn schedule_at_arg(
        &self,
        py: Python<'_>,
        when: &Bound<'_, PyAny>,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        context: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<Handle>> {
        let is_int = when.is_instance_of::<pyo3::types::PyInt>();
        let seconds = seconds_arg(when, "when cannot be None")?;
        let handle = self.schedule_at(py, seconds, callback, args, context)?;
        if is_int {
            handle.get().mark_int_deadline();
        }
        Ok(handle)
    }
}
