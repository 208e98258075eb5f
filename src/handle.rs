//! Handles: what `call_soon`, `call_later` and `call_at` return and what the ready queue holds.
//!
//! A PyO3 class cannot inherit `asyncio.Handle` (a Python class with `__slots__`; `extends=`
//! takes native types only). We keep one native class for both kinds and give it a
//! `__class__` property that reports `asyncio.Handle` or `asyncio.TimerHandle`, so
//! `isinstance(h, asyncio.Handle)` / `isinstance(h, asyncio.TimerHandle)` hold while
//! creating and running a handle stays a few native field accesses (a Python subclass holding
//! Rust state would cost an instance dict and Python-level attribute traffic per callback).
//! `type(h)` is `ferroloop._ferroloop.Handle`; that is the one visible difference.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use pyo3::exceptions::PyAttributeError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::pyclass::CompareOp;
use pyo3::types::PyTuple;

use crate::gil_cell::GilRefCell;
use crate::py_cache;
use crate::timers::TimerEntry;

/// What a handle calls. Released when the handle is cancelled (as asyncio does), once it has
/// run (outside debug mode), and when the loop closes.
///
/// Handles are deliberately not tracked by Python's garbage collector: GC-tracked handles made
/// every young-generation collection walk all pending timers (measured: ~15% of a
/// call_later-heavy workload). Releasing the payload at the three points above breaks the
/// cycles a handle can be part of (`self._timer = loop.call_later(..., self.method)`).
struct Payload {
    callback: Py<PyAny>,
    args: Py<PyTuple>,
    source_traceback: Option<Py<PyAny>>,
}

/// Timer-specific state of a handle made by `call_later`/`call_at`.
struct TimerState {
    when: f64,
    /// True while the timer sits in the loop's timer queue.
    scheduled: AtomicBool,
    /// Shared with the loop: how many queued timers were cancelled since it last looked.
    cancelled_in_queue: Arc<AtomicUsize>,
}

/// A scheduled callback: asyncio's `Handle` or, with a deadline, its `TimerHandle`.
#[pyclass(frozen, weakref, module = "ferroloop._ferroloop", name = "Handle")]
pub struct Handle {
    payload: GilRefCell<Option<Payload>>,
    context: Py<PyAny>,
    cancelled: AtomicBool,
    timer: Option<TimerState>,
    /// Cached `repr` of the callback, kept in debug mode so a cancelled handle still names it.
    debug_repr: GilRefCell<Option<String>>,
}

/// The outcome of running a handle.
pub enum RunOutcome {
    /// The handle was cancelled and did not run.
    Skipped,
    /// The callback returned.
    Done,
    /// The callback raised; the payload is kept so that the report can describe the handle.
    Raised(PyErr),
}

impl Handle {
    /// A plain handle (`call_soon`).
    pub fn new_soon(
        callback: Py<PyAny>,
        args: Py<PyTuple>,
        context: Py<PyAny>,
        source_traceback: Option<Py<PyAny>>,
    ) -> Self {
        Handle {
            payload: GilRefCell::new(Some(Payload {
                callback,
                args,
                source_traceback,
            })),
            context,
            cancelled: AtomicBool::new(false),
            timer: None,
            debug_repr: GilRefCell::new(None),
        }
    }

    /// A timer handle due at `when`, counted into `cancelled_in_queue` if cancelled while queued.
    pub fn new_timer(
        when: f64,
        callback: Py<PyAny>,
        args: Py<PyTuple>,
        context: Py<PyAny>,
        source_traceback: Option<Py<PyAny>>,
        cancelled_in_queue: Arc<AtomicUsize>,
    ) -> Self {
        let mut handle = Handle::new_soon(callback, args, context, source_traceback);
        handle.timer = Some(TimerState {
            when,
            scheduled: AtomicBool::new(true),
            cancelled_in_queue,
        });
        handle
    }

    /// The deadline of a timer handle.
    pub fn deadline(&self) -> Option<f64> {
        self.timer.as_ref().map(|t| t.when)
    }

    /// Marks a timer as taken out of the timer queue (due, or purged).
    pub fn mark_unscheduled(&self) {
        if let Some(t) = &self.timer {
            t.scheduled.store(false, Ordering::Relaxed);
        }
    }

    /// True if `cancel()` was called.
    #[inline]
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }

    /// Calls the callback inside its context, as `Context.run(callback, *args)` does.
    ///
    /// Outside debug mode the payload is moved out and released after the call (no reference
    /// counting traffic, and no cycle survives a handle that ran); with `keep` (debug mode) it
    /// stays so that slow-callback warnings can name the callback.
    pub fn run(&self, py: Python<'_>, keep: bool) -> RunOutcome {
        if self.is_cancelled() {
            return RunOutcome::Skipped;
        }
        // Release the borrow before calling Python: the callback may cancel this very handle.
        let payload = {
            let mut slot = self.payload.borrow_mut(py);
            if keep {
                slot.as_ref().map(|p| Payload {
                    callback: p.callback.clone_ref(py),
                    args: p.args.clone_ref(py),
                    source_traceback: None,
                })
            } else {
                slot.take()
            }
        };
        let Some(payload) = payload else {
            return RunOutcome::Skipped;
        };
        match call_in_context(py, &payload.callback, &payload.args, &self.context) {
            Ok(()) => RunOutcome::Done,
            Err(err) => {
                if !keep {
                    let mut slot = self.payload.borrow_mut(py);
                    if slot.is_none() && !self.is_cancelled() {
                        *slot = Some(payload);
                    }
                }
                RunOutcome::Raised(err)
            }
        }
    }

    /// Releases the callback and its arguments (the loop is closing and drops this handle).
    pub fn release(&self, py: Python<'_>) {
        let released = self.payload.borrow_mut(py).take();
        drop(released);
    }

    fn repr_info(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        let class_name = if self.timer.is_some() {
            "TimerHandle"
        } else {
            "Handle"
        };
        let mut info = vec![class_name.to_string()];
        if self.is_cancelled() {
            info.push("cancelled".to_string());
        }
        if let Some(t) = &self.timer {
            info.push(format!("when={}", float_repr(t.when)));
        }
        let parts = {
            let payload = self.payload.borrow_mut(py);
            payload.as_ref().map(|p| {
                (
                    p.callback.clone_ref(py),
                    p.args.clone_ref(py),
                    p.source_traceback.as_ref().map(|s| s.clone_ref(py)),
                )
            })
        };
        let mut source = None;
        match parts {
            Some((callback, args, tb)) => {
                let formatted = py_cache::format_callback_source(py)?
                    .bind(py)
                    .call1((callback, args))?;
                info.push(formatted.extract::<String>()?);
                source = tb;
            }
            None => {
                if let Some(r) = self.debug_repr.borrow_mut(py).as_ref() {
                    info.push(r.clone());
                }
            }
        }
        if let Some(tb) = source {
            let tb = tb.bind(py);
            if let Ok(len) = tb.len() {
                if len > 0 {
                    let frame = tb.get_item(len - 1)?;
                    let file = frame.get_item(0)?.str()?;
                    let line = frame.get_item(1)?.str()?;
                    info.push(format!("created at {file}:{line}"));
                }
            }
        }
        Ok(info)
    }
}

/// Python's `repr(float)` for the `when=` field.
fn float_repr(value: f64) -> String {
    Python::attach(|py| {
        pyo3::types::PyFloat::new(py, value)
            .repr()
            .map(|r| r.to_string())
            .unwrap_or_else(|_| value.to_string())
    })
}

/// Enters `context`, calls `callback(*args)` by vectorcall, and leaves the context.
pub fn call_in_context(
    py: Python<'_>,
    callback: &Py<PyAny>,
    args: &Py<PyTuple>,
    context: &Py<PyAny>,
) -> PyResult<()> {
    // SAFETY: all pointers are owned references kept alive by the `Py` arguments for the
    // duration of the call; the GIL is held (`py`). The tuple's items are contiguous
    // (`ob_item`), which is what vectorcall expects, and no offset flag is passed, so the
    // callee will not write to `items[-1]`.
    unsafe {
        let ctx = context.as_ptr();
        if ffi::PyContext_Enter(ctx) < 0 {
            return Err(PyErr::fetch(py));
        }
        let tuple = args.as_ptr();
        let nargs = ffi::PyTuple_GET_SIZE(tuple);
        let items = (*(tuple as *mut ffi::PyTupleObject)).ob_item.as_ptr() as *const *mut ffi::PyObject;
        let result = ffi::PyObject_Vectorcall(callback.as_ptr(), items, nargs as usize, std::ptr::null_mut());
        let outcome = if result.is_null() {
            Err(PyErr::fetch(py))
        } else {
            ffi::Py_DECREF(result);
            Ok(())
        };
        if ffi::PyContext_Exit(ctx) < 0 {
            let exit_err = PyErr::fetch(py);
            return outcome.and(Err(exit_err));
        }
        outcome
    }
}

impl TimerEntry for Py<Handle> {
    fn is_cancelled(&self) -> bool {
        self.get().is_cancelled()
    }
}

#[pymethods]
impl Handle {
    /// Cancels the call; a cancelled handle never runs.
    fn cancel(&self, py: Python<'_>) -> PyResult<()> {
        if self.cancelled.swap(true, Ordering::Relaxed) {
            return Ok(());
        }
        if let Some(t) = &self.timer {
            if t.scheduled.load(Ordering::Relaxed) {
                t.cancelled_in_queue.fetch_add(1, Ordering::Relaxed);
            }
        }
        // Keep a description for repr in debug mode (the payload is about to go).
        let has_tb = self
            .payload
            .borrow_mut(py)
            .as_ref()
            .is_some_and(|p| p.source_traceback.is_some());
        if has_tb {
            let info = self.repr_info(py)?;
            // Drop "Handle"/"cancelled"/"when=" and keep the callback part.
            let skip = 2 + usize::from(self.timer.is_some());
            let described = info.into_iter().skip(skip).collect::<Vec<_>>().join(" ");
            *self.debug_repr.borrow_mut(py) = Some(described);
        }
        // Release the callback and its arguments now, like asyncio, so that cancelled timers
        // hold no memory and reference cycles through them are broken.
        self.release(py);
        Ok(())
    }

    /// True if the handle was cancelled.
    fn cancelled(&self) -> bool {
        self.is_cancelled()
    }

    /// The `contextvars.Context` the callback runs in.
    fn get_context(&self, py: Python<'_>) -> Py<PyAny> {
        self.context.clone_ref(py)
    }

    /// The absolute time (on `loop.time()`'s clock) at which a timer is due.
    fn when(&self) -> PyResult<f64> {
        self.deadline()
            .ok_or_else(|| PyAttributeError::new_err("'Handle' object has no attribute 'when'"))
    }

    /// Runs the callback now (asyncio's private `Handle._run`, used by some libraries).
    fn _run(&self, py: Python<'_>) -> PyResult<()> {
        match self.run(py, true) {
            RunOutcome::Raised(err) => Err(err),
            _ => Ok(()),
        }
    }

    /// Reports `asyncio.Handle` or `asyncio.TimerHandle`, so isinstance checks hold.
    #[getter(__class__)]
    fn class(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let ty = if self.timer.is_some() {
            py_cache::asyncio_timer_handle_type(py)?
        } else {
            py_cache::asyncio_handle_type(py)?
        };
        Ok(ty.clone_ref(py))
    }

    #[getter(_callback)]
    fn callback_attr(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.payload
            .borrow_mut(py)
            .as_ref()
            .map(|p| p.callback.clone_ref(py))
    }

    #[getter(_args)]
    fn args_attr(&self, py: Python<'_>) -> Option<Py<PyTuple>> {
        self.payload
            .borrow_mut(py)
            .as_ref()
            .map(|p| p.args.clone_ref(py))
    }

    #[getter(_context)]
    fn context_attr(&self, py: Python<'_>) -> Py<PyAny> {
        self.get_context(py)
    }

    #[getter(_cancelled)]
    fn cancelled_attr(&self) -> bool {
        self.is_cancelled()
    }

    #[getter(_when)]
    fn when_attr(&self) -> PyResult<f64> {
        self.when()
    }

    #[getter(_scheduled)]
    fn scheduled_attr(&self) -> bool {
        self.timer
            .as_ref()
            .is_some_and(|t| t.scheduled.load(Ordering::Relaxed))
    }

    #[getter(_source_traceback)]
    fn source_traceback_attr(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.payload
            .borrow_mut(py)
            .as_ref()
            .and_then(|p| p.source_traceback.as_ref().map(|s| s.clone_ref(py)))
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!("<{}>", self.repr_info(py)?.join(" ")))
    }

    fn __hash__(slf: &Bound<'_, Self>) -> isize {
        match slf.get().deadline() {
            Some(when) => {
                let h = pyo3::types::PyFloat::new(slf.py(), when).hash();
                h.unwrap_or(0)
            }
            None => slf.as_ptr() as isize,
        }
    }

    fn __richcmp__(
        slf: &Bound<'_, Self>,
        other: &Bound<'_, PyAny>,
        op: CompareOp,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let not_implemented = || py.NotImplemented();
        let Ok(other) = other.cast::<Handle>() else {
            return Ok(not_implemented());
        };
        let (a, b) = (slf.get(), other.get());
        let result = match (a.deadline(), b.deadline()) {
            (Some(x), Some(y)) => match op {
                CompareOp::Lt => x < y,
                CompareOp::Le => x <= y || slf.is(other),
                CompareOp::Gt => x > y,
                CompareOp::Ge => x >= y || slf.is(other),
                CompareOp::Eq => slf.is(other) || a.same_call(py, b, x, y)?,
                CompareOp::Ne => !(slf.is(other) || a.same_call(py, b, x, y)?),
            },
            _ => match op {
                CompareOp::Eq => slf.is(other),
                CompareOp::Ne => !slf.is(other),
                _ => return Ok(not_implemented()),
            },
        };
        Ok(pyo3::types::PyBool::new(py, result).to_owned().into_any().unbind())
    }
}

impl Handle {
    /// asyncio's TimerHandle equality: same deadline, callback, arguments and state.
    fn same_call(&self, py: Python<'_>, other: &Handle, x: f64, y: f64) -> PyResult<bool> {
        if x != y || self.is_cancelled() != other.is_cancelled() {
            return Ok(false);
        }
        let mine = self.callback_attr(py);
        let theirs = other.callback_attr(py);
        let (a_args, b_args) = (self.args_attr(py), other.args_attr(py));
        match (mine, theirs) {
            (Some(a), Some(b)) => Ok(a.bind(py).eq(b.bind(py))?
                && match (a_args, b_args) {
                    (Some(x), Some(y)) => x.bind(py).eq(y.bind(py))?,
                    _ => false,
                }),
            (None, None) => Ok(true),
            _ => Ok(false),
        }
    }
}
