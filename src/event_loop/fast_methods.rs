//! Raw CPython entry points for the loop methods called most: `call_soon(callback, *args,
//! context=...)` (every Task step, every Future callback, from CPython's own C code),
//! `call_later`/`call_at` (every timer, every `asyncio.sleep(d)`), `get_debug()` (every
//! Future's creation), `Handle.cancel()` (every timeout that did not fire),
//! `call_soon_threadsafe`, which threads posting work to the loop call in tight loops, and
//! `create_task(coro)`/`create_future()` (every task; every `asyncio.sleep(d)`).
//!
//! PyO3's method trampolines parse arguments generically (keyword matching, a `*args` tuple,
//! GIL bookkeeping): about 250 of the ~550 machine instructions a `call_soon` costs. These
//! `METH_FASTCALL` functions read the vectorcall arguments directly; anything unusual (no
//! callback, unknown keywords, a wrong type) goes to the PyO3 method they replace, which
//! raises the exact TypeError. They are installed on `LoopCore` (and `Handle`) when the module loads.
//!
//! They run outside PyO3's trampoline, so PyO3 does not know the thread is attached to the
//! interpreter, and the crate is built with `pyo3_disable_reference_pool` (see
//! `.cargo/config.toml`): a `Py` dropped here would be leaked rather than released. The fast
//! path therefore only takes the calls that cannot fail and drops references through `Bound`
//! (`handle::drop_attached`): debug mode, a closed loop and every error case go to the PyO3
//! method.

use std::ffi::{c_int, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicPtr, Ordering};

use pyo3::exceptions::PyRuntimeError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyString, PyTuple, PyType};

use crate::event_loop::handle::ArgsRef;
use crate::event_loop::handle::Handle;
use crate::event_loop::tasks::call_with_loop;
use crate::event_loop::LoopCore;
use crate::interop::py_cache;

/// The PyO3 `call_soon` method that the fast entry point replaces (its fallback).
static CHECKED_CALL_SOON: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
/// The PyO3 `call_later` method (the fast entry point's fallback).
static CHECKED_CALL_LATER: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
/// The PyO3 `call_at` method (the fast entry point's fallback).
static CHECKED_CALL_AT: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
/// The PyO3 `call_soon_threadsafe` method (the fast entry point's fallback).
static CHECKED_CALL_SOON_THREADSAFE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
/// The PyO3 `create_task` method (the fast entry point's fallback).
static CHECKED_CREATE_TASK: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// Runs `body` with the GIL token, turning a panic into a Python exception (a panic must
/// never unwind through CPython's C frames).
///
/// # Safety
/// Must be called by CPython, with the GIL held.
unsafe fn guarded(
    body: impl FnOnce(Python<'_>) -> PyResult<*mut ffi::PyObject>,
) -> *mut ffi::PyObject {
    // SAFETY: CPython calls our entry points with the GIL held (caller's contract).
    let py = unsafe { Python::assume_attached() };
    let outcome = catch_unwind(AssertUnwindSafe(|| body(py)));
    let err = match outcome {
        Ok(Ok(result)) => return result,
        Ok(Err(err)) => err,
        Err(_) => {
            PyRuntimeError::new_err("ferroloop: internal error (Rust panic) in a loop method")
        }
    };
    err.restore(py);
    std::ptr::null_mut()
}

/// `context` strings met as keyword names that are not the interned one (asyncio's C module
/// before 3.13 passes its own `("context",)` tuple on every task step and future callback),
/// each held by a strong reference so that its address can never name another object.
static CONTEXT_NAMES: [AtomicPtr<ffi::PyObject>; 2] = [
    AtomicPtr::new(std::ptr::null_mut()),
    AtomicPtr::new(std::ptr::null_mut()),
];

/// True if the keyword name `name` is `"context"`: by address for the interned string and the
/// ones met before, else by value (then remembered, in one of two slots).
///
/// # Safety
/// `name` is a valid borrowed reference (an item of a vectorcall's `kwnames`); the GIL is held.
#[inline(always)]
unsafe fn is_context_keyword(py: Python<'_>, name: *mut ffi::PyObject) -> bool {
    if name == pyo3::intern!(py, "context").as_ptr()
        || CONTEXT_NAMES
            .iter()
            .any(|seen| seen.load(Ordering::Relaxed) == name)
    {
        return true;
    }
    // SAFETY: caller's contract.
    let equal = unsafe { Bound::from_borrowed_ptr(py, name) }
        .cast::<PyString>()
        .is_ok_and(|n| n == "context");
    if equal {
        if let Some(slot) = CONTEXT_NAMES
            .iter()
            .find(|seen| seen.load(Ordering::Relaxed).is_null())
        {
            // SAFETY: `name` is a live object; the reference taken here is never released.
            unsafe { ffi::Py_IncRef(name) };
            slot.store(name, Ordering::Relaxed);
        }
    }
    equal
}

/// Which scheduling method a fast entry point implements. It is the const parameter of
/// `schedule_fast` (as a `u8`: stable Rust takes no enum there), so each entry point is its
/// own copy of the body with the other kinds' branches compiled out.
#[derive(Clone, Copy)]
#[repr(u8)]
enum Kind {
    /// `call_soon(callback, *args, context=None)`.
    Soon = 0,
    /// `call_soon_threadsafe(callback, *args, context=None)`: wakes the loop after queueing
    /// and throttles the poster when the loop falls behind.
    SoonThreadsafe = 1,
    /// `call_later(delay, callback, *args, context=None)`.
    Later = 2,
    /// `call_at(when, callback, *args, context=None)`.
    At = 3,
}

impl Kind {
    /// The kind whose `as u8` is `tag`.
    const fn of(tag: u8) -> Kind {
        match tag {
            0 => Kind::Soon,
            1 => Kind::SoonThreadsafe,
            2 => Kind::Later,
            _ => Kind::At,
        }
    }

    /// The positional arguments before the callback's own.
    fn leading(self) -> ffi::Py_ssize_t {
        match self {
            Kind::Soon | Kind::SoonThreadsafe => 1,
            Kind::Later | Kind::At => 2,
        }
    }

    /// The PyO3 method this entry point replaces.
    fn checked(self) -> &'static PyOnceLock<Py<PyAny>> {
        match self {
            Kind::Soon => &CHECKED_CALL_SOON,
            Kind::Later => &CHECKED_CALL_LATER,
            Kind::At => &CHECKED_CALL_AT,
            Kind::SoonThreadsafe => &CHECKED_CALL_SOON_THREADSAFE,
        }
    }
}

/// A delay or deadline given as an exact `float` or `int` (what `float()` makes of it), else
/// None: the checked method then handles it (None, other numeric types, overflow).
///
/// # Safety
/// `obj` is a valid borrowed reference and the GIL is held.
unsafe fn plain_seconds(obj: *mut ffi::PyObject) -> Option<f64> {
    // SAFETY: caller's contract.
    unsafe {
        if ffi::PyFloat_CheckExact(obj) != 0 {
            return Some(ffi::PyFloat_AS_DOUBLE(obj));
        }
        if ffi::PyLong_CheckExact(obj) != 0 {
            let value = ffi::PyLong_AsDouble(obj);
            if value == -1.0 && !ffi::PyErr_Occurred().is_null() {
                ffi::PyErr_Clear();
                return None;
            }
            return Some(value);
        }
    }
    None
}

/// A callback's own arguments, as given to a fast entry point: none, one (kept without a
/// tuple, see `CallArgs`), or a new tuple.
enum FastArgs<'a, 'py> {
    /// No argument.
    Zero,
    /// Two or more arguments, in a new tuple.
    Tuple(Bound<'py, PyTuple>),
    /// Exactly one argument (borrowed from the call's argument array).
    One(&'a Bound<'py, PyAny>),
}

impl<'py> FastArgs<'_, 'py> {
    /// Borrowed, as the scheduling functions take them.
    #[inline(always)]
    fn as_ref(&self) -> ArgsRef<'_, 'py> {
        match self {
            FastArgs::Zero => ArgsRef::Zero,
            FastArgs::Tuple(tuple) => ArgsRef::Tuple(tuple),
            FastArgs::One(item) => ArgsRef::One(item),
        }
    }
}

/// Reads the `count` arguments at `items`.
///
/// # Safety
/// `items` points to `count` valid borrowed references (a vectorcall's argument array) that
/// outlive `'a`; the GIL is held.
#[inline(always)]
unsafe fn callback_args<'a, 'py>(
    py: Python<'py>,
    items: *const *mut ffi::PyObject,
    count: ffi::Py_ssize_t,
) -> PyResult<FastArgs<'a, 'py>> {
    // SAFETY: caller's contract.
    unsafe {
        Ok(match count {
            0 => FastArgs::Zero,
            1 => FastArgs::One(Bound::ref_from_ptr(py, &*items)),
            _ => {
                let items = std::slice::from_raw_parts(items, count as usize);
                FastArgs::Tuple(PyTuple::new(
                    py,
                    items.iter().map(|p| Bound::from_borrowed_ptr(py, *p)),
                )?)
            }
        })
    }
}

/// `call_soon`, `call_soon_threadsafe`, `call_later` and `call_at` by vectorcall: one body,
/// one copy per `Kind` (`KIND` is `Kind as u8`; see `install`).
///
/// # Safety
/// Called by CPython as a `METH_FASTCALL | METH_KEYWORDS` method: `args` holds `nargs`
/// positional then `len(kwnames)` keyword values, all borrowed; `slf` is a `LoopCore`.
unsafe extern "C" fn schedule_fast<const KIND: u8>(
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: forwarded from CPython's call (see the function's contract).
    unsafe {
        guarded(|py| {
            let keywords = if kwnames.is_null() {
                0
            } else {
                ffi::PyTuple_GET_SIZE(kwnames)
            };
            let only_context = keywords == 0
                || (keywords == 1 && is_context_keyword(py, ffi::PyTuple_GET_ITEM(kwnames, 0)));
            let kind = const { Kind::of(KIND) };
            let leading = kind.leading();
            // Borrowed as the call gives them: no reference counting for the call's arguments.
            let this = Bound::ref_from_ptr(py, &slf);
            // No type check (a subtype walk of the MRO per call): CPython calls a method
            // descriptor's function only with an instance of the descriptor's type, `LoopCore`,
            // as `self` (`descr_check` when the method is bound, and for an unbound call).
            let core = this.cast_unchecked::<LoopCore>();
            if !(nargs >= leading && only_context && core.get().takes_fast_call_soon()) {
                return checked_call(py, kind.checked(), slf, args, nargs, kwnames);
            }
            let when = match kind {
                Kind::Soon | Kind::SoonThreadsafe => None,
                Kind::Later | Kind::At => match plain_seconds(*args) {
                    Some(seconds) if matches!(kind, Kind::Later) => {
                        Some(core.get().now(py)? + seconds)
                    }
                    Some(when) => Some(when),
                    None => return checked_call(py, kind.checked(), slf, args, nargs, kwnames),
                },
            };
            let callback = Bound::ref_from_ptr(py, &*args.add(leading as usize - 1));
            let rest = callback_args(py, args.add(leading as usize), nargs - leading)?;
            let context =
                (keywords == 1).then(|| Bound::ref_from_ptr(py, &*args.add(nargs as usize)));
            let handle = match when {
                None => core
                    .get()
                    .schedule_soon_args(py, callback, rest.as_ref(), context)?,
                Some(when) => {
                    let handle =
                        core.get()
                            .push_timer(py, when, callback, rest.as_ref(), context)?;
                    if matches!(kind, Kind::At) && ffi::PyLong_CheckExact(*args) != 0 {
                        // asyncio keeps the deadline as given: an int stays an int in
                        // `when()` and the repr.
                        handle.get().mark_int_deadline();
                    }
                    handle
                }
            };
            if matches!(kind, Kind::SoonThreadsafe) {
                // Wake after queueing (see `schedule_soon_threadsafe`). The eventfd write
                // cannot fail on an open loop but for a saturated counter, which already means
                // a wake is pending; asyncio's self-pipe write ignores its errors too. (The
                // handle is queued: raising here would drop `handle`, which this entry point
                // must not do.)
                let _ = core.get().wake_loop();
                core.get().throttle_poster();
            }
            Ok(handle.into_ptr())
        })
    }
}

/// The PyO3 method, for calls the fast path does not handle (it raises the precise error).
///
/// # Safety
/// Same arguments as `schedule_fast`.
pub(crate) unsafe fn checked_call(
    py: Python<'_>,
    checked: &'static PyOnceLock<Py<PyAny>>,
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> PyResult<*mut ffi::PyObject> {
    let method = checked
        .get(py)
        .ok_or_else(|| PyRuntimeError::new_err("ferroloop: fast methods are not initialised"))?;
    let keywords = if kwnames.is_null() {
        0
    } else {
        // SAFETY: `kwnames` is a tuple (CPython's vectorcall contract).
        unsafe { ffi::PyTuple_GET_SIZE(kwnames) }
    };
    let mut stack = Vec::with_capacity(1 + (nargs + keywords) as usize);
    stack.push(slf);
    // SAFETY: `args` holds `nargs + keywords` valid borrowed pointers.
    stack.extend_from_slice(unsafe {
        std::slice::from_raw_parts(args, (nargs + keywords) as usize)
    });
    // SAFETY: the stack holds `1 + nargs` positionals then the keyword values; all borrowed
    // references stay alive for the duration of the call.
    let result = unsafe {
        ffi::PyObject_Vectorcall(
            method.as_ptr(),
            stack.as_ptr(),
            (nargs + 1) as usize,
            kwnames,
        )
    };
    if result.is_null() {
        Err(PyErr::fetch(py))
    } else {
        Ok(result)
    }
}

/// `create_task(coro)` by vectorcall: `Task(coro, loop=self)` built by vectorcall. Anything
/// else (keywords, a task factory, a closed loop, a wrong call) goes to the PyO3 method.
///
/// # Safety
/// Called by CPython as a `METH_FASTCALL | METH_KEYWORDS` method of `LoopCore`.
unsafe extern "C" fn create_task_fast(
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: forwarded from CPython's call (see the function's contract).
    unsafe {
        guarded(|py| {
            let this = Bound::from_borrowed_ptr(py, slf);
            match this.cast::<LoopCore>() {
                Ok(core) if nargs == 1 && kwnames.is_null() && core.get().makes_plain_tasks(py) => {
                    let coro = Bound::from_borrowed_ptr(py, *args);
                    let task_type = py_cache::asyncio_task_type(py)?;
                    Ok(call_with_loop(&task_type, Some(&coro), &this)?.into_ptr())
                }
                _ => checked_call(py, &CHECKED_CREATE_TASK, slf, args, nargs, kwnames),
            }
        })
    }
}

/// `create_future()` without PyO3's trampoline: `Future(loop=self)` by vectorcall.
///
/// # Safety
/// Called by CPython as a `METH_NOARGS` method of `LoopCore`.
unsafe extern "C" fn create_future_fast(
    slf: *mut ffi::PyObject,
    _unused: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: forwarded from CPython's call (see the function's contract).
    unsafe {
        guarded(|py| {
            let this = Bound::from_borrowed_ptr(py, slf);
            this.cast::<LoopCore>()?;
            let future_type = py_cache::asyncio_future_type(py)?;
            Ok(call_with_loop(&future_type, None, &this)?.into_ptr())
        })
    }
}

/// `Handle.cancel()` without PyO3's trampoline (asyncio.sleep, wait_for and timeouts cancel
/// a timer handle on every call; the benchmark's call_later+cancel row is half cancels).
///
/// # Safety
/// Called by CPython as a `METH_NOARGS` method of `Handle`.
unsafe extern "C" fn handle_cancel_fast(
    slf: *mut ffi::PyObject,
    _unused: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: forwarded from CPython's call (see the function's contract).
    unsafe {
        guarded(|py| {
            let this = Bound::from_borrowed_ptr(py, slf);
            this.cast::<Handle>()?.get().cancel_now(py);
            Ok(ffi::Py_NewRef(ffi::Py_None()))
        })
    }
}

/// `get_debug()` without PyO3's trampoline.
///
/// # Safety
/// Called by CPython as a `METH_NOARGS` method of `LoopCore`.
unsafe extern "C" fn get_debug_fast(
    slf: *mut ffi::PyObject,
    _unused: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: forwarded from CPython's call (see the function's contract).
    unsafe {
        guarded(|py| {
            let this = Bound::from_borrowed_ptr(py, slf);
            let debug = this.cast::<LoopCore>()?.get().is_debug();
            Ok(pyo3::types::PyBool::new(py, debug).to_owned().into_ptr())
        })
    }
}

/// Creates a method descriptor for `def` on `ty` and sets it as attribute `name`.
pub(crate) fn install_method(
    ty: &Bound<'_, PyType>,
    name: &CStr,
    def: ffi::PyMethodDef,
) -> PyResult<()> {
    let py = ty.py();
    // The definition must outlive the type: leak it (once per interpreter start).
    let def: &'static mut ffi::PyMethodDef = Box::leak(Box::new(def));
    // SAFETY: `ty` is a live type object and `def` a valid, 'static method definition.
    let descriptor =
        unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyDescr_NewMethod(ty.as_type_ptr(), def))? };
    ty.setattr(name.to_str().unwrap_or_default(), descriptor)
}

/// A `METH_FASTCALL | METH_KEYWORDS` method definition.
pub(crate) fn fastcall_def(
    name: &'static CStr,
    body: ffi::PyCFunctionFastWithKeywords,
    doc: &'static CStr,
) -> ffi::PyMethodDef {
    ffi::PyMethodDef {
        ml_name: name.as_ptr(),
        ml_meth: ffi::PyMethodDefPointer {
            PyCFunctionFastWithKeywords: body,
        },
        ml_flags: (ffi::METH_FASTCALL | ffi::METH_KEYWORDS) as c_int,
        ml_doc: doc.as_ptr(),
    }
}

/// Installs the fast `call_soon`, `call_soon_threadsafe`, `call_later`, `call_at` and
/// `get_debug` on `LoopCore`
/// (the PyO3 methods stay reachable as `_checked_call_soon` & co.), and the fast `cancel` on
/// `Handle`.
pub fn install(ty: &Bound<'_, PyType>, handle_ty: &Bound<'_, PyType>) -> PyResult<()> {
    let py = ty.py();
    for (name, checked_name, kind) in [
        ("call_soon", "_checked_call_soon", Kind::Soon),
        ("call_later", "_checked_call_later", Kind::Later),
        ("call_at", "_checked_call_at", Kind::At),
        (
            "call_soon_threadsafe",
            "_checked_call_soon_threadsafe",
            Kind::SoonThreadsafe,
        ),
    ] {
        let checked = ty.getattr(name)?.unbind();
        let cell = kind.checked();
        cell.get_or_init(py, || checked);
        ty.setattr(checked_name, cell.get(py).map(|m| m.bind(py)))?;
    }
    install_method(
        ty,
        c"call_soon",
        fastcall_def(
            c"call_soon",
            schedule_fast::<{ Kind::Soon as u8 }>,
            c"call_soon($self, callback, *args, context=None)\n--\n\nSchedules `callback(*args)` for the next iteration.",
        ),
    )?;
    install_method(
        ty,
        c"call_soon_threadsafe",
        fastcall_def(
            c"call_soon_threadsafe",
            schedule_fast::<{ Kind::SoonThreadsafe as u8 }>,
            c"call_soon_threadsafe($self, callback, *args, context=None)\n--\n\nSchedules `callback(*args)` from any thread and wakes the loop.",
        ),
    )?;
    install_method(
        ty,
        c"call_later",
        fastcall_def(
            c"call_later",
            schedule_fast::<{ Kind::Later as u8 }>,
            c"call_later($self, delay, callback, *args, context=None)\n--\n\nSchedules `callback(*args)` to run `delay` seconds from now.",
        ),
    )?;
    install_method(
        ty,
        c"call_at",
        fastcall_def(
            c"call_at",
            schedule_fast::<{ Kind::At as u8 }>,
            c"call_at($self, when, callback, *args, context=None)\n--\n\nSchedules `callback(*args)` at absolute time `when` (on `loop.time()`'s clock).",
        ),
    )?;
    let checked = ty.getattr("create_task")?.unbind();
    CHECKED_CREATE_TASK.get_or_init(py, || checked);
    ty.setattr(
        "_checked_create_task",
        CHECKED_CREATE_TASK.get(py).map(|m| m.bind(py)),
    )?;
    install_method(
        ty,
        c"create_task",
        fastcall_def(
            c"create_task",
            create_task_fast,
            c"create_task($self, coro, *, name=None, context=None, **kwargs)\n--\n\nWraps `coro` in a Task (or the task factory's object) scheduled on this loop; 3.14+ passes other keywords (`eager_start=`) on.",
        ),
    )?;
    install_method(
        ty,
        c"create_future",
        ffi::PyMethodDef {
            ml_name: c"create_future".as_ptr(),
            ml_meth: ffi::PyMethodDefPointer {
                PyCFunction: create_future_fast,
            },
            ml_flags: ffi::METH_NOARGS as c_int,
            ml_doc: c"create_future($self, /)\n--\n\nA new `asyncio.Future` bound to this loop."
                .as_ptr(),
        },
    )?;
    install_method(
        handle_ty,
        c"cancel",
        ffi::PyMethodDef {
            ml_name: c"cancel".as_ptr(),
            ml_meth: ffi::PyMethodDefPointer {
                PyCFunction: handle_cancel_fast,
            },
            ml_flags: ffi::METH_NOARGS as c_int,
            ml_doc: c"cancel($self, /)\n--\n\nCancels the call; a cancelled handle never runs."
                .as_ptr(),
        },
    )?;
    install_method(
        ty,
        c"get_debug",
        ffi::PyMethodDef {
            ml_name: c"get_debug".as_ptr(),
            ml_meth: ffi::PyMethodDefPointer {
                PyCFunction: get_debug_fast,
            },
            ml_flags: ffi::METH_NOARGS as c_int,
            ml_doc: c"get_debug($self, /)\n--\n\nTrue in debug mode.".as_ptr(),
        },
    )
}
