//! Handles: what `call_soon`, `call_later` and `call_at` return and what the ready queue holds.
//!
//! A PyO3 class cannot inherit `asyncio.Handle` (a Python class with `__slots__`; `extends=`
//! takes native types only). We keep one native class for both kinds and give it a
//! `__class__` property that reports `asyncio.Handle` or `asyncio.TimerHandle`, so
//! `isinstance(h, asyncio.Handle)` / `isinstance(h, asyncio.TimerHandle)` hold while
//! creating and running a handle stays a few native field accesses (a Python subclass holding
//! Rust state would cost an instance dict and Python-level attribute traffic per callback).
//! `type(h)` is `ferroloop._ferroloop.Handle`; that is the one visible difference.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use pyo3::exceptions::PyAttributeError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::pyclass::CompareOp;
use pyo3::types::PyTuple;

use crate::core::timers::TimerEntry;
use crate::interop::context_reuse;
use crate::interop::context_switch;
use crate::interop::gil_cell::GilRefCell;
use crate::interop::py_cache;
use crate::interop::step_untrack;

/// What a handle refers to. The callback and its arguments are released when the handle is
/// cancelled (as asyncio does), once it has run (outside debug mode), and when the loop closes;
/// the context stays for `get_context()`.
///
/// Handles are deliberately kept out of Python's garbage collector lists: GC-tracked handles made
/// every young-generation collection walk all pending timers (measured: ~15% of a
/// call_later-heavy workload). Releasing the callback at the three points above breaks the
/// cycles a handle can be part of (`self._timer = loop.call_later(..., self.method)`).
#[derive(Default)]
struct Slots {
    callback: Option<Py<PyAny>>,
    args: Option<CallArgs>,
    /// The Context, or, while the handle's `lazy` flag is set, only the mapping a copy of the
    /// current context would hold (see `interop::context_reuse`: the Context is made when the
    /// handle runs or is asked for it).
    context: Option<Py<PyAny>>,
    source_traceback: Option<Py<PyAny>>,
    /// Set for a native method: `callback` is then the object whose method runs (see
    /// `NativeMethod`).
    native: Option<NativeCall>,
}

/// A method of a native object that the loop calls from Rust, without a Python call.
///
/// The native transports watch their socket with handles whose callback is one of their own
/// methods (`transport._read_ready`). Such a handle holds the transport itself and a
/// `&'static NativeMethod`: running it calls the method's Rust body directly (no bound-method
/// object per connection, no vectorcall, no PyO3 argument handling), while `_callback`, `repr`
/// and error reports show `getattr(transport, name)`, the bound method asyncio's handle holds.
pub struct NativeMethod {
    /// The method's name.
    pub name: &'static str,
    /// Its body, given the object (a wrong type is a TypeError, never undefined behaviour).
    pub call: fn(&Bound<'_, PyAny>) -> PyResult<()>,
}

/// A callback's positional arguments: a tuple, or a single object held without one.
///
/// Most callbacks with arguments take exactly one (a timer's value, a future's done callback
/// `cb(fut)`, every `Task.__wakeup(fut)`): keeping that object directly spares a tuple
/// allocation and its release per call, and, for pending timers, a garbage-collector-tracked
/// object per timer (allocations that young-generation collections count and walk).
/// `Handle._args` builds the tuple when asked.
pub enum CallArgs {
    /// No argument (no tuple either).
    Zero,
    /// Any number of arguments, as a tuple.
    Tuple(Py<PyTuple>),
    /// Exactly one argument.
    One(Py<PyAny>),
}

impl CallArgs {
    /// The arguments as a tuple (a new one for `One`).
    pub fn to_tuple(&self, py: Python<'_>) -> PyResult<Py<PyTuple>> {
        match self {
            CallArgs::Zero => Ok(PyTuple::empty(py).unbind()),
            CallArgs::Tuple(tuple) => Ok(tuple.clone_ref(py)),
            CallArgs::One(item) => Ok(PyTuple::new(py, [item.bind(py)])?.unbind()),
        }
    }

    /// A new reference to the same arguments.
    fn clone_ref(&self, py: Python<'_>) -> CallArgs {
        match self {
            CallArgs::Zero => CallArgs::Zero,
            CallArgs::Tuple(tuple) => CallArgs::Tuple(tuple.clone_ref(py)),
            CallArgs::One(item) => CallArgs::One(item.clone_ref(py)),
        }
    }

    /// Drops the reference through `Bound` (see `Slots::drop_attached`).
    #[inline(always)]
    pub fn drop_attached(self, py: Python<'_>) {
        match self {
            CallArgs::Zero => {}
            CallArgs::Tuple(tuple) => drop(tuple.into_bound(py)),
            CallArgs::One(item) => drop(item.into_bound(py)),
        }
    }
}

/// A callback's arguments as the scheduling entry points receive them (borrowed; turned into
/// the handle's own `CallArgs` once nothing can fail any more).
#[derive(Clone, Copy)]
pub(crate) enum ArgsRef<'a, 'py> {
    /// No argument.
    Zero,
    /// Arguments in a tuple.
    Tuple(&'a Bound<'py, PyTuple>),
    /// Exactly one argument, without a tuple.
    One(&'a Bound<'py, PyAny>),
}

impl ArgsRef<'_, '_> {
    /// Owned references for the handle.
    #[inline(always)]
    pub(crate) fn to_owned_args(self) -> CallArgs {
        match self {
            ArgsRef::Zero => CallArgs::Zero,
            ArgsRef::Tuple(tuple) => CallArgs::Tuple(tuple.clone().unbind()),
            ArgsRef::One(item) => CallArgs::One(item.clone().unbind()),
        }
    }
}

/// Drops optional arguments through `Bound`.
#[inline(always)]
fn drop_args(py: Python<'_>, args: Option<CallArgs>) {
    if let Some(args) = args {
        args.drop_attached(py);
    }
}

/// A handle's native method (see `NativeMethod`).
pub type NativeCall = &'static NativeMethod;

impl Slots {
    /// True if the callback, its arguments or the creation stack is set.
    #[inline(always)]
    fn holds_call(&self) -> bool {
        self.callback.is_some() || self.args.is_some() || self.source_traceback.is_some()
    }

    /// True if any slot holds a Python reference.
    #[inline]
    fn holds_references(&self) -> bool {
        self.callback.is_some()
            || self.args.is_some()
            || self.context.is_some()
            || self.source_traceback.is_some()
    }
}

impl Slots {
    /// Drops every reference now, through `Bound` (a plain `Py` drop first asks a
    /// thread-local whether the thread is attached: measurable per callback, and outside
    /// PyO3's trampolines, in the raw entry points of `fast_methods.rs`, it would leak).
    #[inline(always)]
    fn drop_attached(self, py: Python<'_>) {
        drop_attached(py, self.callback);
        drop_args(py, self.args);
        drop_attached(py, self.context);
        drop_attached(py, self.source_traceback);
    }
}

/// Drops `obj` (if any) as a `Bound`: one `Py_DECREF`, no attach check (see
/// `Slots::drop_attached`).
#[inline(always)]
pub fn drop_attached<T>(py: Python<'_>, obj: Option<Py<T>>) {
    if let Some(obj) = obj {
        drop(obj.into_bound(py));
    }
}

/// References taken out of a handle, to be dropped by the caller at a safe point: the
/// context (or a parked context's mapping), and the other slots if any was still set (usually
/// none: running the handle took its callback and arguments).
pub struct ReleasedSlots<'py> {
    context: Option<Py<PyAny>>,
    rest: Option<Slots>,
    py: Python<'py>,
}

impl Drop for ReleasedSlots<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        drop_attached(self.py, self.context.take());
        if let Some(slots) = self.rest.take() {
            slots.drop_attached(self.py);
        }
    }
}

/// A scheduled callback: asyncio's `Handle` or, with a deadline, its `TimerHandle`.
///
/// The loop recycles handles nobody else references once they ran (see
/// `LoopCore::recycle`): a handle is re-initialised in place instead of being freed and
/// allocated again, which is most of what a callback costs the loop.
#[pyclass(frozen, module = "ferroloop._ferroloop", name = "Handle")]
pub struct Handle {
    slots: GilRefCell<Slots>,
    cancelled: AtomicBool,
    /// True for `call_later`/`call_at` handles.
    is_timer: AtomicBool,
    /// The deadline's `f64` bits (timer handles).
    when_bits: AtomicU64,
    /// True when `call_at` was given an `int` deadline: `when()`/`_when` give it back as an
    /// int, as asyncio's TimerHandle keeps its argument as given (aiohttp's TimeoutHandle
    /// rounds deadlines up to whole seconds and its tests check the type). Fits in the
    /// padding beside the other flags: the object keeps its size.
    int_when: AtomicBool,
    /// True while the timer sits in the loop's timer queue.
    scheduled: AtomicBool,
    /// True for add_reader/add_writer handles, which run again at every readiness and so keep
    /// their callback after running.
    repeating: AtomicBool,
    /// The context slot holds only a mapping, not yet a Context (`materialize`). A flag here
    /// rather than in the slots: it fits in the padding beside the others.
    lazy: AtomicBool,
    /// Shared with the loop: how many queued timers were cancelled since it last looked.
    cancelled_in_queue: Arc<AtomicUsize>,
}

/// The outcome of running a handle.
pub enum RunOutcome {
    /// The handle was cancelled and did not run.
    Skipped,
    /// The callback returned.
    Done,
    /// The callback raised; the callback is kept so that the report can describe the handle.
    Raised(PyErr),
}

/// What a handle is (re)initialised with.
pub struct HandleInit {
    /// The callable.
    pub callback: Py<PyAny>,
    /// Its positional arguments.
    pub args: CallArgs,
    /// The `contextvars.Context` it runs in; None: a copy of the current one (made by `init`,
    /// which reuses the handle's parked context if it has one, else keeps only the current
    /// mapping until the handle runs, see `interop::context_reuse`).
    pub context: Option<Py<PyAny>>,
    /// The creation stack (debug mode).
    pub source_traceback: Option<Py<PyAny>>,
    /// The deadline, for timer handles.
    pub when: Option<f64>,
    /// Runs again at every readiness of a descriptor (add_reader/add_writer).
    pub repeating: bool,
    /// Set when `callback` is a native object whose method `native` runs (see
    /// `NativeMethod`).
    pub native: Option<NativeCall>,
}

impl Handle {
    /// An empty handle of the loop whose cancelled-timer counter is `cancelled_in_queue`.
    pub fn empty(cancelled_in_queue: Arc<AtomicUsize>) -> Self {
        Handle {
            slots: GilRefCell::new(Slots::default()),
            cancelled: AtomicBool::new(false),
            is_timer: AtomicBool::new(false),
            when_bits: AtomicU64::new(0),
            int_when: AtomicBool::new(false),
            scheduled: AtomicBool::new(false),
            repeating: AtomicBool::new(false),
            lazy: AtomicBool::new(false),
            cancelled_in_queue,
        }
    }

    /// Fills a new or recycled handle. Its slots must be empty (fresh, or `reset`: then the
    /// context slot may hold a parked context). Fails only if the copy of the current
    /// context cannot be made (no memory); `init`'s references are then released.
    pub fn init(&self, py: Python<'_>, init: HandleInit) -> PyResult<()> {
        let (context, lazy) = match init.context {
            Some(context) => (context, false),
            None => match self.current_context(py) {
                Ok(context) => context,
                Err(err) => {
                    drop_attached(py, Some(init.callback));
                    init.args.drop_attached(py);
                    drop_attached(py, init.source_traceback);
                    return Err(err);
                }
            },
        };
        let previous = {
            let mut slots = self.slots.borrow_mut(py);
            std::mem::replace(
                &mut *slots,
                Slots {
                    callback: Some(init.callback),
                    args: Some(init.args),
                    context: Some(context),
                    source_traceback: init.source_traceback,
                    native: init.native,
                },
            )
        };
        self.cancelled.store(false, Ordering::Relaxed);
        self.lazy.store(lazy, Ordering::Relaxed);
        self.repeating.store(init.repeating, Ordering::Relaxed);
        self.int_when.store(false, Ordering::Relaxed);
        match init.when {
            Some(when) => {
                self.when_bits.store(when.to_bits(), Ordering::Relaxed);
                self.is_timer.store(true, Ordering::Relaxed);
                self.scheduled.store(true, Ordering::Relaxed);
            }
            None => {
                self.is_timer.store(false, Ordering::Relaxed);
                self.scheduled.store(false, Ordering::Relaxed);
            }
        }
        // The slots are empty by contract (a fresh or reset handle): then there is nothing to
        // release, and the generic drop (a call, with its thread-local lookup) is skipped.
        if previous.holds_references() {
            previous.drop_attached(py);
        } else {
            std::mem::forget(previous);
        }
        Ok(())
    }

    /// Fills a spare handle (empty since `reset`, maybe but for a parked context) for
    /// `call_soon` outside debug mode, as `init` would with no creation stack and no deadline,
    /// without running any Python code: with `context` given (not None), the handle takes it
    /// and the parked context it replaces, if any, is returned for the caller to release; else
    /// the parked context takes the current mapping. `Err(())`, nothing changed: no parked
    /// context, or the thread has no current context yet (`init` makes a new copy then).
    /// `ts`: the calling thread's state if the caller has it, else null (see `refill`).
    #[inline(always)]
    pub(crate) fn fill_soon(
        &self,
        py: Python<'_>,
        callback: &Bound<'_, PyAny>,
        args: ArgsRef<'_, '_>,
        context: Option<&Bound<'_, PyAny>>,
        ts: *mut ffi::PyObject,
    ) -> Result<Option<Py<PyAny>>, ()> {
        let mut slots = self.slots.borrow_mut(py);
        let replaced = match context {
            Some(given) if !given.is_none() => slots.context.replace(given.clone().unbind()),
            _ => {
                let parked = slots.context.as_ref().ok_or(())?.as_ptr();
                // SAFETY: a context parked by `reset`, referenced by this spare handle only
                // (the loop holds the only reference to spare handles); the GIL is held.
                if !unsafe { context_reuse::refill(ts, parked) } {
                    return Err(());
                }
                None
            }
        };
        // A spare handle's other slots are empty (`reset` took them, or it is new): nothing
        // to release (`forget` of a `None`; were one ever set, its reference would leak
        // rather than be released under the caller's borrow).
        let empty = (
            slots.callback.replace(callback.clone().unbind()),
            slots.args.replace(args.to_owned_args()),
        );
        debug_assert!(empty.0.is_none() && empty.1.is_none());
        debug_assert!(slots.source_traceback.is_none() && slots.native.is_none());
        std::mem::forget(empty);
        drop(slots);
        self.cancelled.store(false, Ordering::Relaxed);
        self.repeating.store(false, Ordering::Relaxed);
        self.int_when.store(false, Ordering::Relaxed);
        self.is_timer.store(false, Ordering::Relaxed);
        self.scheduled.store(false, Ordering::Relaxed);
        Ok(replaced)
    }

    /// A copy of the current context for this handle: its parked context given the current
    /// mapping if it has one; else only the current mapping (`true`: the Context is made when
    /// needed, see `materialize`); else (reuse off, or a thread without a context yet) a new
    /// copy.
    #[inline(always)]
    fn current_context(&self, py: Python<'_>) -> PyResult<(Py<PyAny>, bool)> {
        let parked = self.slots.borrow_mut(py).context.take();
        if let Some(parked) = parked {
            // SAFETY: a context parked by `reset`, referenced by this handle only (recycled
            // handles are referenced by the loop alone); the GIL is held.
            if unsafe { context_reuse::refill(std::ptr::null_mut(), parked.as_ptr()) } {
                return Ok((parked, false));
            }
            drop_attached(py, Some(parked));
        }
        // SAFETY: called with the GIL held; `capture_vars` returns a new reference or null,
        // `PyContext_CopyCurrent` a new reference or NULL with an exception set.
        unsafe {
            let vars = context_reuse::capture_vars();
            if !vars.is_null() {
                return Ok((Bound::from_owned_ptr(py, vars).unbind(), true));
            }
            let ctx = ffi::PyContext_CopyCurrent();
            if ctx.is_null() {
                return Err(PyErr::fetch(py));
            }
            Ok((Bound::from_owned_ptr(py, ctx).unbind(), false))
        }
    }

    /// Gives a handle that holds only a mapping (`lazy`) its Context now: a parked one filled
    /// with that mapping. Its identity is then kept for the handle's life, as a copy made at
    /// scheduling time would be. Nothing to do for other handles.
    #[inline]
    fn materialize(&self, py: Python<'_>) -> PyResult<()> {
        if !self.lazy.swap(false, Ordering::Relaxed) {
            return Ok(());
        }
        let vars = self.slots.borrow_mut(py).context.take();
        let Some(vars) = vars else {
            return Ok(());
        };
        // No borrow is held: making a Context may run a collection, hence any code.
        // SAFETY: the GIL is held; `vars` is a mapping captured by `capture_vars` (reuse on),
        // whose reference is handed over.
        let context = unsafe { context_reuse::context_with_vars(py, vars.into_ptr()) }?;
        let previous = self.slots.borrow_mut(py).context.replace(context);
        drop_attached(py, previous);
        Ok(())
    }

    /// Gives the handle's parked context (after `reset`) to the pool of parked contexts, for
    /// a handle the loop lets go of (the spare pool is full).
    #[inline]
    pub fn donate_parked(&self, py: Python<'_>) {
        let parked = self.slots.borrow_mut(py).context.take();
        if let Some(parked) = parked {
            // SAFETY: after `reset`, a context left in the slot is parked and referenced by
            // this handle only; the GIL is held.
            unsafe { context_reuse::pool_parked(parked.into_ptr()) };
        }
    }

    /// Empties the handle for reuse; the caller drops the returned references outside any
    /// borrow of the loop's state. A context nothing else can reach stays, parked, for the
    /// handle's next copy of the current context (its mapping is among the references
    /// returned, released as the context's own release would have).
    #[inline(always)]
    pub fn reset<'py>(&self, py: Python<'py>) -> ReleasedSlots<'py> {
        let mut slots = self.slots.borrow_mut(py);
        let rest = if slots.holds_call() {
            Some(Slots {
                callback: slots.callback.take(),
                args: slots.args.take(),
                context: None,
                source_traceback: slots.source_traceback.take(),
                native: None,
            })
        } else {
            None
        };
        slots.native = None;
        // A load and a store, not a swap (a locked instruction per handle); the GIL orders them.
        let lazy = self.lazy.load(Ordering::Relaxed);
        if lazy {
            self.lazy.store(false, Ordering::Relaxed);
        }
        let context = slots.context.take().map(|context| {
            if lazy {
                // Only a mapping: released with the rest.
                return context;
            }
            // SAFETY: the handle holds a reference to `context`; the GIL is held.
            match unsafe { context_reuse::park(context.as_ptr()) } {
                Some(vars) => {
                    // The slot is empty (taken above): `replace` then `forget` of the None
                    // spares the generic drop of the old value (a thread-local lookup).
                    std::mem::forget(slots.context.replace(context));
                    // SAFETY: `park` returned the mapping's reference to us.
                    unsafe { Bound::from_owned_ptr(py, vars) }.unbind()
                }
                None => context,
            }
        });
        drop(slots);
        ReleasedSlots { context, rest, py }
    }

    /// The deadline of a timer handle.
    pub fn deadline(&self) -> Option<f64> {
        if self.is_timer.load(Ordering::Relaxed) {
            Some(f64::from_bits(self.when_bits.load(Ordering::Relaxed)))
        } else {
            None
        }
    }

    /// Records that the deadline was given as an `int` (see `int_when`).
    pub fn mark_int_deadline(&self) {
        self.int_when.store(true, Ordering::Relaxed);
    }

    /// Marks a timer as taken out of the timer queue (due, or purged).
    pub fn mark_unscheduled(&self) {
        self.scheduled.store(false, Ordering::Relaxed);
    }

    /// The object the callback is a method of (`__self__` of a bound method, of a builtin
    /// method such as `Task.__wakeup`, or of asyncio's `TaskStepMethWrapper`), if any; None
    /// for a native method or a plain function. Used to attribute run time to tasks
    /// (`task_cpu.rs`), only while that is on.
    pub fn callback_owner<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyAny>> {
        let slots = self.slots.borrow_mut(py);
        if slots.native.is_some() {
            return None;
        }
        let callback = slots.callback.as_ref()?.bind(py).clone();
        drop(slots);
        let raw = callback.as_ptr();
        // SAFETY: a type check and a borrowed-field read on a live object we hold a reference
        // to; the borrowed `self` becomes an owned reference before `callback` is dropped.
        unsafe {
            if ffi::PyCFunction_Check(raw) != 0 {
                let owner = ffi::PyCFunction_GET_SELF(raw);
                return (!owner.is_null()).then(|| Bound::from_borrowed_ptr(py, owner));
            }
        }
        if step_untrack::is_step_wrapper(&callback)
            || callback
                .get_type()
                .name()
                .is_ok_and(|name| name == "method")
        {
            return callback.getattr(pyo3::intern!(py, "__self__")).ok();
        }
        None
    }

    /// True if `cancel()` was called.
    #[inline]
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }

    /// Calls the callback inside its context, as `Context.run(callback, *args)` does.
    ///
    /// Outside debug mode the callback and arguments are moved out and released after the call
    /// (no reference counting traffic, and no cycle survives a handle that ran); with `keep`
    /// (debug mode) they stay so that slow-callback warnings can name the callback.
    ///
    /// `ts`: the calling thread's state from `context_switch::thread_state()` (read once per
    /// batch), or null: the context is then entered through the C API.
    /// The error path is out of line (`run_failed`).
    pub fn run(&self, py: Python<'_>, keep: bool, ts: *mut ffi::PyObject) -> RunOutcome {
        if self.is_cancelled() {
            return RunOutcome::Skipped;
        }
        let keep = keep || self.repeating.load(Ordering::Relaxed);
        // Release the borrow before calling Python: the callback may cancel this very handle.
        let (taken, context, native) = {
            if self.lazy.load(Ordering::Relaxed) {
                return self.run_lazy(py, keep, ts);
            }
            let mut slots = self.slots.borrow_mut(py);
            // The context is used where it is, without a reference of our own: nothing
            // releases a handle's context while it runs (`cancel` and `release` take the
            // callback and arguments only; `init` and `reset` apply to handles the loop
            // is not running, see `LoopCore::recycle`).
            let context = slots.context.as_ref().map(|c| c.as_ptr());
            let taken = if keep {
                (
                    slots.callback.as_ref().map(|c| c.clone_ref(py)),
                    slots.args.as_ref().map(|a| a.clone_ref(py)),
                )
            } else {
                (slots.callback.take(), slots.args.take())
            };
            (taken, context, slots.native)
        };
        let ((Some(callback), Some(args)), Some(context)) = (taken, context) else {
            return RunOutcome::Skipped;
        };
        // SAFETY: `context` is held by this handle's slots for the whole call (see above).
        let context = unsafe { Bound::ref_from_ptr(py, &context) };
        let outcome = match native {
            Some(native) => native_call_in_context(py, ts, native, &callback, context),
            None => call_in_context(py, ts, &callback, &args, context),
        };
        match outcome {
            Ok(()) => {
                drop_attached(py, Some(callback));
                args.drop_attached(py);
                RunOutcome::Done
            }
            Err(err) => self.run_failed(py, keep, callback, args, err),
        }
    }

    /// `run` when the callback raised: outside debug mode the callback and its arguments go
    /// back into the handle (unless it was cancelled meanwhile or given a new call), so that
    /// the error report can describe it.
    #[cold]
    #[inline(never)]
    fn run_failed(
        &self,
        py: Python<'_>,
        keep: bool,
        callback: Py<PyAny>,
        args: CallArgs,
        err: PyErr,
    ) -> RunOutcome {
        let mut unused = (Some(callback), Some(args));
        if !keep && !self.is_cancelled() {
            let mut slots = self.slots.borrow_mut(py);
            if slots.callback.is_none() {
                slots.callback = unused.0.take();
                slots.args = unused.1.take();
            }
        }
        drop_attached(py, unused.0);
        drop_args(py, unused.1);
        RunOutcome::Raised(err)
    }

    /// `run` for a handle that holds only a mapping: its Context is made first.
    #[cold]
    #[inline(never)]
    fn run_lazy(&self, py: Python<'_>, keep: bool, ts: *mut ffi::PyObject) -> RunOutcome {
        match self.materialize(py) {
            Ok(()) => self.run(py, keep, ts),
            Err(err) => RunOutcome::Raised(err),
        }
    }

    /// `cancel()`, callable from Rust.
    pub fn cancel_now(&self, py: Python<'_>) {
        if self.cancelled.swap(true, Ordering::Relaxed) {
            return;
        }
        if self.scheduled.load(Ordering::Relaxed) {
            self.cancelled_in_queue.fetch_add(1, Ordering::Relaxed);
        }
        // Release the callback and its arguments now, like asyncio, so that cancelled timers
        // hold no memory and reference cycles through them are broken. Debug mode keeps them:
        // the repr of a cancelled handle then still names its callback.
        let (callback, args) = {
            let mut slots = self.slots.borrow_mut(py);
            if slots.source_traceback.is_some() {
                return;
            }
            (slots.callback.take(), slots.args.take())
        };
        drop_attached(py, callback);
        drop_args(py, args);
    }

    /// Releases the callback and its arguments (cancelled, or the loop is closing).
    pub fn release(&self, py: Python<'_>) {
        let (callback, args, source_traceback) = {
            let mut slots = self.slots.borrow_mut(py);
            (
                slots.callback.take(),
                slots.args.take(),
                slots.source_traceback.take(),
            )
        };
        drop_attached(py, callback);
        drop_args(py, args);
        drop_attached(py, source_traceback);
    }

    /// The callback as Python sees it: for a native method, the bound method (made now).
    pub fn visible_callback(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        let (callback, native) = {
            let slots = self.slots.borrow_mut(py);
            (
                slots.callback.as_ref().map(|c| c.clone_ref(py)),
                slots.native,
            )
        };
        if let Some(callback) = &callback {
            // SAFETY: a live object we hold a reference to; the GIL is held.
            unsafe { step_untrack::retrack_exposed_step(callback.as_ptr()) };
        }
        match (callback, native) {
            (Some(target), Some(native)) => {
                Ok(Some(target.bind(py).getattr(native.name)?.unbind()))
            }
            (callback, _) => Ok(callback),
        }
    }

    /// asyncio's description of the callback, `name(args) at file:line`, or None once the
    /// callback was released. Arguments are shown in debug mode (a handle made in debug mode
    /// carries its creation stack); before 3.13 asyncio always shows them.
    pub fn callback_source(&self, py: Python<'_>) -> PyResult<Option<String>> {
        let (args, debug) = {
            let slots = self.slots.borrow_mut(py);
            (
                slots.args.as_ref().map(|a| a.clone_ref(py)),
                slots.source_traceback.is_some(),
            )
        };
        let args = args.map(|a| a.to_tuple(py)).transpose()?;
        let (Some(callback), Some(args)) = (self.visible_callback(py)?, args) else {
            return Ok(None);
        };
        let format = py_cache::format_callback_source(py)?.bind(py);
        let formatted = if debug && py.version_info() >= (3, 13) {
            let kwargs = pyo3::types::PyDict::new(py);
            kwargs.set_item("debug", true)?;
            format.call((callback, args), Some(&kwargs))?
        } else {
            format.call1((callback, args))?
        };
        Ok(Some(formatted.extract::<String>()?))
    }

    fn repr_info(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        let when = self.deadline();
        let mut info = vec![if when.is_some() {
            "TimerHandle"
        } else {
            "Handle"
        }
        .to_string()];
        if self.is_cancelled() {
            info.push("cancelled".to_string());
        }
        if when.is_some() {
            info.push(format!("when={}", self.when(py)?.bind(py).repr()?));
        }
        let source = self
            .slots
            .borrow_mut(py)
            .source_traceback
            .as_ref()
            .map(|s| s.clone_ref(py));
        if let Some(described) = self.callback_source(py)? {
            info.push(described);
        }
        if let Some(tb) = source {
            let tb = tb.bind(py);
            let len = tb.len()?;
            if len > 0 {
                let frame = tb.get_item(len - 1)?;
                let file = frame.get_item(0)?.str()?;
                let line = frame.get_item(1)?.str()?;
                info.push(format!("created at {file}:{line}"));
            }
        }
        Ok(info)
    }
}

/// Runs `body` inside `context` (entered and left around it, as `Context.run` does); an
/// error leaving the context is reported after the body's own. `ts`: see `Handle::run`.
#[inline]
fn in_context(
    py: Python<'_>,
    ts: *mut ffi::PyObject,
    context: &Bound<'_, PyAny>,
    body: impl FnOnce() -> PyResult<()>,
) -> PyResult<()> {
    let ctx = context.as_ptr();
    // SAFETY: `context` is a reference to a `contextvars.Context` the handle holds for the
    // whole call; `ts` is null or this thread's state; the GIL is held (`py`). The direct
    // switch does nothing when it cannot do what the C API does; the C API then raises.
    if unsafe { !context_switch::enter(ts, ctx) && ffi::PyContext_Enter(ctx) < 0 } {
        return Err(PyErr::fetch(py));
    }
    let outcome = body();
    // SAFETY: as above; this thread entered the context just before.
    if unsafe { !context_switch::exit(ts, ctx) && ffi::PyContext_Exit(ctx) < 0 } {
        let exit_err = PyErr::fetch(py);
        return outcome.and(Err(exit_err));
    }
    outcome
}

/// Runs `native` for `callback` inside `context`. A panic is reported as this callback's
/// error, as PyO3's trampoline would have done had the method been called from Python: it
/// must not unwind through the loop.
fn native_call_in_context(
    py: Python<'_>,
    ts: *mut ffi::PyObject,
    native: NativeCall,
    callback: &Py<PyAny>,
    context: &Bound<'_, PyAny>,
) -> PyResult<()> {
    in_context(py, ts, context, || {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            (native.call)(callback.bind(py))
        }))
        .unwrap_or_else(|_| {
            Err(pyo3::exceptions::PyRuntimeError::new_err(
                "ferroloop: internal error (Rust panic) in a transport callback",
            ))
        })
    })
}

/// Calls `callback(*args)` by vectorcall inside `context` (`ts`: see `Handle::run`).
/// Inlined into `Handle::run`, its one caller (a call frame less per callback).
#[inline(always)]
pub fn call_in_context(
    py: Python<'_>,
    ts: *mut ffi::PyObject,
    callback: &Py<PyAny>,
    args: &CallArgs,
    context: &Bound<'_, PyAny>,
) -> PyResult<()> {
    in_context(py, ts, context, || {
        // SAFETY: all pointers are owned references kept alive by the `Py` arguments for the
        // duration of the call; the GIL is held (`py`). A tuple's items are contiguous
        // (`ob_item`), and a single argument is one pointer on our stack: that is what
        // vectorcall expects, and no offset flag is passed, so the callee will not write to
        // `items[-1]`.
        unsafe {
            if let CallArgs::Zero = args {
                if let Some(result) = call_without_vectorcall(callback.as_ptr()) {
                    if result.is_null() {
                        return Err(PyErr::fetch(py));
                    }
                    ffi::Py_DECREF(result);
                    return Ok(());
                }
            }
            let single;
            let (items, nargs) = match args {
                CallArgs::Zero => (std::ptr::null(), 0),
                CallArgs::Tuple(tuple) => {
                    let tuple = tuple.as_ptr();
                    (
                        (*(tuple as *mut ffi::PyTupleObject)).ob_item.as_ptr() as *const _,
                        ffi::PyTuple_GET_SIZE(tuple) as usize,
                    )
                }
                CallArgs::One(item) => {
                    single = [item.as_ptr()];
                    (single.as_ptr(), 1)
                }
            };
            let result =
                ffi::PyObject_Vectorcall(callback.as_ptr(), items, nargs, std::ptr::null_mut());
            if result.is_null() {
                return Err(PyErr::fetch(py));
            }
            ffi::Py_DECREF(result);
        }
        Ok(())
    })
}

/// Calls `callback()` through its type's `tp_call` when the type has no vectorcall (asyncio's
/// C task schedules each step as such an object, `TaskStepMethWrapper`): what
/// `PyObject_Vectorcall` would do, without its generic detour (a recursion check at the loop's
/// own depth, an argument tuple made from an empty array, a result check). None when the
/// callback has vectorcall or no `tp_call` (the generic call handles it).
///
/// # Safety
/// `callback` is a live object; the GIL is held.
#[inline(always)]
unsafe fn call_without_vectorcall(callback: *mut ffi::PyObject) -> Option<*mut ffi::PyObject> {
    // SAFETY: caller's contract; the empty tuple is a live object for the call.
    unsafe {
        let ty = ffi::Py_TYPE(callback);
        if ffi::PyType_HasFeature(ty, ffi::Py_TPFLAGS_HAVE_VECTORCALL) != 0 {
            return None;
        }
        let call = (*ty).tp_call?;
        let empty = ffi::PyTuple_New(0);
        if empty.is_null() {
            return Some(empty);
        }
        let result = call(callback, empty, std::ptr::null_mut());
        ffi::Py_DECREF(empty);
        Some(result)
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
    fn cancel(&self, py: Python<'_>) {
        self.cancel_now(py);
    }
    /// True if the handle was cancelled.
    fn cancelled(&self) -> bool {
        self.is_cancelled()
    }

    /// The `contextvars.Context` the callback runs in.
    fn get_context(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        self.materialize(py)?;
        Ok(self
            .slots
            .borrow_mut(py)
            .context
            .as_ref()
            .map(|c| c.clone_ref(py)))
    }

    /// The absolute time (on `loop.time()`'s clock) at which a timer is due: a float, or the
    /// int `call_at` was given.
    fn when(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let when = self
            .deadline()
            .ok_or_else(|| PyAttributeError::new_err("'Handle' object has no attribute 'when'"))?;
        if self.int_when.load(Ordering::Relaxed) {
            Ok((when as i64).into_pyobject(py)?.into_any().unbind())
        } else {
            Ok(pyo3::types::PyFloat::new(py, when).into_any().unbind())
        }
    }

    /// Runs the callback now (asyncio's private `Handle._run`, used by some libraries).
    fn _run(&self, py: Python<'_>) -> PyResult<()> {
        match self.run(py, true, std::ptr::null_mut()) {
            RunOutcome::Raised(err) => Err(err),
            _ => Ok(()),
        }
    }

    /// Reports `asyncio.Handle` or `asyncio.TimerHandle`, so isinstance checks hold.
    #[getter(__class__)]
    fn class(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let ty = if self.deadline().is_some() {
            py_cache::asyncio_timer_handle_type(py)?
        } else {
            py_cache::asyncio_handle_type(py)?
        };
        Ok(ty.clone_ref(py))
    }

    #[getter(_callback)]
    fn callback_attr(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        self.visible_callback(py)
    }

    #[getter(_args)]
    fn args_attr(&self, py: Python<'_>) -> PyResult<Option<Py<PyTuple>>> {
        let args = self
            .slots
            .borrow_mut(py)
            .args
            .as_ref()
            .map(|a| a.clone_ref(py));
        args.map(|a| a.to_tuple(py)).transpose()
    }

    #[getter(_context)]
    fn context_attr(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        self.get_context(py)
    }

    #[getter(_cancelled)]
    fn cancelled_attr(&self) -> bool {
        self.is_cancelled()
    }

    #[getter(_when)]
    fn when_attr(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.when(py)
    }

    #[getter(_scheduled)]
    fn scheduled_attr(&self) -> bool {
        self.scheduled.load(Ordering::Relaxed)
    }

    #[getter(_source_traceback)]
    fn source_traceback_attr(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.slots
            .borrow_mut(py)
            .source_traceback
            .as_ref()
            .map(|s| s.clone_ref(py))
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!("<{}>", self.repr_info(py)?.join(" ")))
    }

    fn __hash__(slf: &Bound<'_, Self>) -> isize {
        match slf.get().deadline() {
            Some(when) => pyo3::types::PyFloat::new(slf.py(), when)
                .hash()
                .unwrap_or(0),
            None => slf.as_ptr() as isize,
        }
    }

    fn __richcmp__(
        slf: &Bound<'_, Self>,
        other: &Bound<'_, PyAny>,
        op: CompareOp,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let Ok(other) = other.cast::<Handle>() else {
            return Ok(py.NotImplemented());
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
                _ => return Ok(py.NotImplemented()),
            },
        };
        Ok(pyo3::types::PyBool::new(py, result)
            .to_owned()
            .into_any()
            .unbind())
    }
}

impl Handle {
    /// asyncio's TimerHandle equality: same deadline, callback, arguments and state.
    fn same_call(&self, py: Python<'_>, other: &Handle, x: f64, y: f64) -> PyResult<bool> {
        if x != y || self.is_cancelled() != other.is_cancelled() {
            return Ok(false);
        }
        let mine = self.visible_callback(py)?;
        let theirs = other.visible_callback(py)?;
        let (a_args, b_args) = (self.args_attr(py)?, other.args_attr(py)?);
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

#[cfg(test)]
mod tests {
    /// The object (16-byte header + this struct) must stay out of CPython's 80-byte size class.
    /// At 80 a handle shares that class with weak references, and every Task registers one
    /// (asyncio's all-tasks WeakSet): short-lived handles then interleave with long-lived
    /// weakrefs in the same memory pages, and full garbage collections, which walk every weakref,
    /// ran ~15% longer (gather of 100k tasks: 8% slower overall). The struct used to carry a
    /// padding word for this; since the arguments became a two-word `CallArgs` it is 96 bytes
    /// without one.
    #[test]
    fn handle_object_is_96_bytes() {
        assert_eq!(16 + std::mem::size_of::<super::Handle>(), 96);
    }
}
