//! The watchdog (`loop.set_watchdog(threshold, handler=None)`): a Rust thread that notices a
//! callback running longer than `threshold` and captures the loop thread's Python stack while
//! it still blocks.
//!
//! Hot path: while the watchdog is on, before each callback the loop publishes the callback's
//! generation number and its handle's address in two relaxed atomic stores, and a 0 after it
//! (no clock read); while it is off, the loop does not publish (one plain flag read per batch
//! and a predictable branch per callback). The watchdog thread (`std::thread`, no
//! Python thread, never joined, so it never keeps the process alive) samples the generation
//! (`core::stall`) and, on a stall, takes the GIL (which a thread sleeping in `time.sleep`, or
//! running Python code, hands over at the next switch interval; C code holding the GIL hands
//! it over when it returns), checks that the same callback still runs, and reads the loop
//! thread's frame (`sys._current_frames()`). With the GIL held by the watchdog, the loop thread
//! cannot move on, so the handle whose address was published is still alive.
//!
//! Report, once per stall: by default a WARNING on the `asyncio` logger, sent from the watchdog
//! thread while the loop is still blocked; with a handler, `handler(report)` is scheduled with
//! `call_soon_threadsafe` and so runs in the loop thread once the callback returned. While the
//! watchdog is on, handles keep their callback after running (as debug mode does, and as
//! asyncio's handles always do) so that the report can name it.
//!
//! Life: the thread stops when the watchdog is turned off, at `close()` and when the loop is
//! dropped (an epoch number tells a thread it is stale; it is woken with `unpark`); a forked
//! child has no thread: `_renew_after_fork` starts a new one. The thread shares only atomics
//! and GIL-guarded cells with the loop (no mutex a fork could leave locked), attaches to the
//! interpreter with `Python::try_attach` (not during finalisation), and catches panics.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::Thread;
use std::time::Duration;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyList, PyWeakrefReference};

use crate::core::clock::monotonic_seconds;
use crate::core::stall::{sampling_period, Stall, StallDetector};
use crate::interop::gil_cell::GilRefCell;

/// The name of the watchdog thread (as `/proc/self/task/*/comm` shows it: 15 bytes at most).
const THREAD_NAME: &str = "ferroloop-wdog";

/// What the loop and its watchdog thread share.
struct Shared {
    /// The generation of the callback running now; 0 between callbacks.
    running: AtomicU64,
    /// The address of the handle running now (meaningful while `running` is not 0).
    handle: AtomicUsize,
    /// The threshold in seconds (`f64` bits); 0.0 when off.
    threshold: AtomicU64,
    /// The epoch of the thread that should run; a thread of an older epoch ends.
    epoch: AtomicU64,
    /// `threading.get_ident()` of the thread running the loop, 0 when it does not run.
    loop_thread: AtomicU64,
    /// The handler given to `set_watchdog`, if any.
    handler: GilRefCell<Option<Py<PyAny>>>,
    /// A weak reference to the loop (the thread must not keep it alive).
    loop_ref: GilRefCell<Option<Py<PyWeakrefReference>>>,
}

/// The loop's watchdog: the shared state and the current thread, if any.
pub(super) struct Watchdog {
    shared: Arc<Shared>,
    /// The thread of the current epoch (to wake it), if one was started.
    thread: GilRefCell<Option<Thread>>,
    /// The generation of the last callback published.
    generation: AtomicU64,
    /// True while the watchdog is on: the loop's one check per batch (a plain load, not
    /// through the shared state).
    on: AtomicBool,
}

impl Watchdog {
    /// A watchdog that is off.
    pub(super) fn new() -> Self {
        Watchdog {
            shared: Arc::new(Shared {
                running: AtomicU64::new(0),
                handle: AtomicUsize::new(0),
                threshold: AtomicU64::new(0),
                epoch: AtomicU64::new(0),
                loop_thread: AtomicU64::new(0),
                handler: GilRefCell::new(None),
                loop_ref: GilRefCell::new(None),
            }),
            thread: GilRefCell::new(None),
            generation: AtomicU64::new(0),
            on: AtomicBool::new(false),
        }
    }

    /// True while the watchdog is on (handles then keep their callback after running).
    #[inline]
    pub(super) fn is_on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// The generation of the last callback published, to number a batch from.
    #[inline]
    pub(super) fn last_generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// The loop starts the callback of `handle` (the `generation`th, never 0).
    #[inline]
    pub(super) fn enter(&self, generation: u64, handle: *mut pyo3::ffi::PyObject) {
        self.shared.handle.store(handle as usize, Ordering::Relaxed);
        self.shared.running.store(generation, Ordering::Relaxed);
    }

    /// The callback returned.
    #[inline]
    pub(super) fn leave(&self) {
        self.shared.running.store(0, Ordering::Relaxed);
    }

    /// A batch ended after publishing `generation`.
    #[inline]
    pub(super) fn batch_done(&self, generation: u64) {
        self.generation.store(generation, Ordering::Relaxed);
    }

    /// The loop starts running in thread `ident` (0: it stopped).
    pub(super) fn set_loop_thread(&self, ident: u64) {
        self.shared.loop_thread.store(ident, Ordering::Relaxed);
    }

    /// The current threshold in seconds, None when off.
    fn threshold(&self) -> Option<f64> {
        let bits = self.shared.threshold.load(Ordering::Relaxed);
        (bits != 0).then(|| f64::from_bits(bits))
    }

    /// Turns the watchdog of `loop_obj` on (`threshold` seconds, optional `handler`), or off
    /// (None); `check_open` raises if the loop is closed (turning on is refused then).
    pub(super) fn configure(
        &self,
        loop_obj: &Bound<'_, PyAny>,
        threshold: Option<&Bound<'_, PyAny>>,
        handler: Option<Bound<'_, PyAny>>,
        check_open: impl FnOnce() -> PyResult<()>,
    ) -> PyResult<()> {
        let py = loop_obj.py();
        let Some(threshold) = threshold.filter(|t| !t.is_none()) else {
            self.stop(py);
            return Ok(());
        };
        let seconds: f64 = threshold.extract().map_err(|_| {
            PyTypeError::new_err(format!(
                "threshold must be a number of seconds or None, not {}",
                threshold
                    .get_type()
                    .name()
                    .map_or("?".into(), |n| n.to_string())
            ))
        })?;
        if !(seconds.is_finite() && seconds > 0.0) {
            return Err(PyValueError::new_err(format!(
                "threshold must be a positive number of seconds, got {seconds}"
            )));
        }
        let handler = handler.filter(|h| !h.is_none());
        if let Some(handler) = &handler {
            if !handler.is_callable() {
                return Err(PyTypeError::new_err("handler must be a callable or None"));
            }
        }
        check_open()?;
        let weak = PyWeakrefReference::new(loop_obj)?;
        *self.shared.loop_ref.borrow_mut(py) = Some(weak.unbind());
        let old_handler = std::mem::replace(
            &mut *self.shared.handler.borrow_mut(py),
            handler.map(Bound::unbind),
        );
        drop(old_handler);
        self.shared
            .threshold
            .store(seconds.to_bits(), Ordering::Relaxed);
        self.on.store(true, Ordering::Relaxed);
        self.ensure_thread(py)
    }

    /// Starts the thread of the current epoch unless it runs; wakes it if it does (to apply
    /// a new threshold at once).
    fn ensure_thread(&self, py: Python<'_>) -> PyResult<()> {
        let mut thread = self.thread.borrow_mut(py);
        if let Some(running) = thread.as_ref() {
            running.unpark();
            return Ok(());
        }
        let shared = Arc::clone(&self.shared);
        let epoch = shared.epoch.load(Ordering::Relaxed);
        let spawned = std::thread::Builder::new()
            .name(THREAD_NAME.into())
            .spawn(move || watch(&shared, epoch))
            .map_err(|e| pyo3::exceptions::PyOSError::new_err(e.to_string()))?;
        *thread = Some(spawned.thread().clone());
        Ok(())
    }

    /// Turns the watchdog off: its thread ends (it is woken to see that).
    pub(super) fn stop(&self, py: Python<'_>) {
        self.on.store(false, Ordering::Relaxed);
        self.shared.threshold.store(0, Ordering::Relaxed);
        self.shared.epoch.fetch_add(1, Ordering::Relaxed);
        if let Some(thread) = self.thread.borrow_mut(py).take() {
            thread.unpark();
        }
        let handler = self.shared.handler.borrow_mut(py).take();
        let loop_ref = self.shared.loop_ref.borrow_mut(py).take();
        drop((handler, loop_ref));
    }

    /// In a child made by `fork()`: the parent's thread does not exist here; start one if the
    /// watchdog is on.
    pub(super) fn renew_after_fork(&self, py: Python<'_>) -> PyResult<()> {
        self.shared.epoch.fetch_add(1, Ordering::Relaxed);
        *self.thread.borrow_mut(py) = None;
        if self.threshold().is_some() {
            self.ensure_thread(py)?;
        }
        Ok(())
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.shared.threshold.store(0, Ordering::Relaxed);
        self.shared.epoch.fetch_add(1, Ordering::Relaxed);
        if let Some(thread) = self.thread.get_mut().take() {
            thread.unpark();
        }
        // The handler and the weak reference are released here, where the GIL is held (the
        // loop is being deallocated), not in the watchdog thread.
        let _ = Python::try_attach(|py| {
            let handler = self.shared.handler.borrow_mut(py).take();
            let loop_ref = self.shared.loop_ref.borrow_mut(py).take();
            drop((handler, loop_ref));
        });
    }
}

/// The watchdog thread's body: sample, and report each stall once, until its epoch is over.
fn watch(shared: &Shared, epoch: u64) {
    let mut detector = StallDetector::new();
    loop {
        let bits = shared.threshold.load(Ordering::Relaxed);
        if shared.epoch.load(Ordering::Relaxed) != epoch || bits == 0 {
            return;
        }
        let threshold = f64::from_bits(bits);
        std::thread::park_timeout(Duration::from_secs_f64(sampling_period(threshold)));
        if shared.epoch.load(Ordering::Relaxed) != epoch {
            return;
        }
        let generation = shared.running.load(Ordering::Relaxed);
        if let Some(stall) = detector.observe(generation, monotonic_seconds(), threshold) {
            // A panic while reporting loses that report, never the process nor the watchdog.
            let _ = catch_unwind(AssertUnwindSafe(|| report(shared, epoch, stall)));
        }
    }
}

/// Takes the GIL, looks at the loop thread and reports `stall`.
fn report(shared: &Shared, epoch: u64, stall: Stall) {
    let _ = Python::try_attach(|py| {
        if shared.epoch.load(Ordering::Relaxed) != epoch {
            return; // turned off (or closed) while the GIL was awaited
        }
        if let Err(err) = report_attached(py, shared, stall) {
            err.write_unraisable(py, None);
        }
    });
}

/// `report` with the GIL held: builds the report and logs it or schedules the handler.
fn report_attached(py: Python<'_>, shared: &Shared, stall: Stall) -> PyResult<()> {
    let Some(loop_obj) = shared
        .loop_ref
        .borrow_mut(py)
        .as_ref()
        .and_then(|weak| weak.bind(py).upgrade())
    else {
        return Ok(());
    };
    let thread_id = shared.loop_thread.load(Ordering::Relaxed);
    // With the GIL held here, the loop thread does not run: the published values are stable.
    let still_blocked = shared.running.load(Ordering::Relaxed) == stall.generation;
    let (handle, stack, blocked_for) = if still_blocked && thread_id != 0 {
        let address = shared.handle.load(Ordering::Relaxed) as *mut pyo3::ffi::PyObject;
        // SAFETY: the loop thread holds a reference to the handle it runs until after it
        // publishes 0, and it cannot publish while this thread holds the GIL.
        let handle = unsafe { Bound::from_borrowed_ptr(py, address) }.unbind();
        let blocked_for = monotonic_seconds() - stall.since;
        (Some(handle), thread_stack(py, thread_id)?, blocked_for)
    } else {
        // The callback returned while the GIL was awaited (C code that held it): only the
        // duration was seen.
        (None, PyList::empty(py).unbind(), stall.blocked_for)
    };
    let report = Py::new(
        py,
        WatchdogReport {
            handle,
            blocked_for,
            stack,
            thread_id,
        },
    )?;
    let handler = shared
        .handler
        .borrow_mut(py)
        .as_ref()
        .map(|h| h.clone_ref(py));
    match handler {
        Some(handler) => {
            // The handler runs in the loop thread, once the callback returned; a closed loop
            // drops it.
            let _ =
                loop_obj.call_method1(pyo3::intern!(py, "call_soon_threadsafe"), (handler, report));
        }
        None => log_report(py, report.bind(py))?,
    }
    Ok(())
}

/// The Python stack of thread `thread_id` as `traceback.FrameSummary` objects, innermost last
/// (empty if the thread has no Python frame).
fn thread_stack(py: Python<'_>, thread_id: u64) -> PyResult<Py<PyList>> {
    let frames = py.import("sys")?.call_method0("_current_frames")?;
    let frame = frames.call_method1("get", (thread_id,))?;
    if frame.is_none() {
        return Ok(PyList::empty(py).unbind());
    }
    let summary = py
        .import("traceback")?
        .call_method1("extract_stack", (frame,))?;
    Ok(PyList::new(py, summary.try_iter()?.collect::<PyResult<Vec<_>>>()?)?.unbind())
}

/// The default report: a WARNING on the `asyncio` logger, stack printed as a traceback.
fn log_report(py: Python<'_>, report: &Bound<'_, WatchdogReport>) -> PyResult<()> {
    let this = report.get();
    let formatted: String = if this.stack.bind(py).is_empty() {
        "  (the callback returned before its stack could be read)\n".to_string()
    } else {
        py.import("traceback")?
            .call_method1("format_list", (this.stack.bind(py),))?
            .extract::<Vec<String>>()?
            .concat()
    };
    let what = match &this.handle {
        Some(handle) => describe(py, handle.bind(py))?,
        None => "a callback".to_string(),
    };
    let logger = py.import("asyncio.log")?.getattr("logger")?;
    logger.call_method1(
        "warning",
        (
            "Executing %s has blocked the event loop for %.3f seconds (thread %s); \
             stack (most recent call last):\n%s",
            what,
            this.blocked_for,
            this.thread_id,
            formatted.trim_end_matches('\n'),
        ),
    )?;
    Ok(())
}

/// The handle's repr, and for a task step the task's (the step's own repr names no coroutine).
fn describe(py: Python<'_>, handle: &Bound<'_, PyAny>) -> PyResult<String> {
    let mut what = handle.repr()?.to_string();
    let owner = handle
        .getattr(pyo3::intern!(py, "_callback"))
        .and_then(|callback| callback.getattr(pyo3::intern!(py, "__self__")));
    if let Ok(owner) = owner {
        let future = py.import("asyncio")?.getattr("Future")?;
        if owner.is_instance(&future)? {
            what.push_str(&format!(" of {}", owner.repr()?));
        }
    }
    Ok(what)
}

/// What the watchdog saw of one stall: given to the handler of `loop.set_watchdog`.
#[pyclass(frozen, module = "ferroloop._ferroloop", name = "WatchdogReport")]
pub struct WatchdogReport {
    /// The handle whose callback blocked (None if it returned before it could be looked at).
    #[pyo3(get)]
    handle: Option<Py<PyAny>>,
    /// How long the callback had blocked the loop when its stack was read, in seconds.
    #[pyo3(get)]
    blocked_for: f64,
    /// The loop thread's Python stack, `traceback.FrameSummary` objects, innermost last.
    #[pyo3(get)]
    stack: Py<PyList>,
    /// `threading.get_ident()` of the loop's thread.
    #[pyo3(get)]
    thread_id: u64,
}

#[pymethods]
impl WatchdogReport {
    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let handle = match &self.handle {
            Some(h) => h.bind(py).repr()?.to_string(),
            None => "None".to_string(),
        };
        Ok(format!(
            "<WatchdogReport handle={handle} blocked_for={:.3} frames={} thread_id={}>",
            self.blocked_for,
            self.stack.bind(py).len(),
            self.thread_id
        ))
    }
}
