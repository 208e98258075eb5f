//! Raw CPython entry points for the two loop methods CPython's own C code calls most:
//! `call_soon(callback, *args, context=...)` (every Task step, every Future callback) and
//! `get_debug()` (every Future's creation), and for `call_soon_threadsafe`, which threads
//! posting work to the loop call in tight loops.
//!
//! PyO3's method trampolines parse arguments generically (keyword matching, a `*args` tuple,
//! GIL bookkeeping): about 250 of the ~550 machine instructions a `call_soon` costs. These
//! `METH_FASTCALL` functions read the vectorcall arguments directly; anything unusual (no
//! callback, unknown keywords, a wrong type) goes to the PyO3 method they replace, which
//! raises the exact TypeError. They are installed on `LoopCore` when the module loads.
//!
//! They run outside PyO3's trampoline, so PyO3 does not know the thread is attached to the
//! interpreter, and the crate is built with `pyo3_disable_reference_pool` (see
//! `.cargo/config.toml`): a `Py` dropped here would be leaked rather than released. The fast
//! path therefore only takes the calls that cannot fail and that drop no `Py` (`Bound`s are
//! released normally): debug mode, a closed loop and every error case go to the PyO3 method.

use std::ffi::{c_int, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

use pyo3::exceptions::PyRuntimeError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyString, PyTuple, PyType};

use crate::event_loop::LoopCore;

/// The PyO3 `call_soon` method that the fast entry point replaces (its fallback).
static CHECKED_CALL_SOON: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// The PyO3 `call_soon_threadsafe` method that the fast entry point replaces.
static CHECKED_CALL_SOON_THREADSAFE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// Which of the two scheduling methods a fast entry point implements.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Soon {
    /// `call_soon`.
    Plain,
    /// `call_soon_threadsafe`: wakes the loop first, throttles the poster after.
    Threadsafe,
}

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

/// `call_soon` by vectorcall.
///
/// # Safety
/// Called by CPython as a `METH_FASTCALL | METH_KEYWORDS` method: `args` holds `nargs`
/// positional then `len(kwnames)` keyword values, all borrowed; `slf` is a `LoopCore`.
unsafe extern "C" fn call_soon_fast(
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: forwarded from CPython's call (same contract).
    unsafe { schedule_fast(Soon::Plain, slf, args, nargs, kwnames) }
}

/// `call_soon_threadsafe` by vectorcall.
///
/// # Safety
/// Same contract as `call_soon_fast`.
unsafe extern "C" fn call_soon_threadsafe_fast(
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: forwarded from CPython's call (same contract).
    unsafe { schedule_fast(Soon::Threadsafe, slf, args, nargs, kwnames) }
}

/// The body of both fast entry points: the handle for `callback(*args, context=...)`, or the
/// PyO3 method's answer for anything unusual.
///
/// # Safety
/// Same contract as `call_soon_fast`.
unsafe fn schedule_fast(
    kind: Soon,
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
                || (keywords == 1 && {
                    let name = Bound::from_borrowed_ptr(py, ffi::PyTuple_GET_ITEM(kwnames, 0));
                    name.cast::<PyString>()
                        .is_ok_and(|n| n.is(pyo3::intern!(py, "context")) || n == "context")
                });
            let this = Bound::from_borrowed_ptr(py, slf);
            let core = this.cast::<LoopCore>();
            let core = match core {
                Ok(core) if nargs >= 1 && only_context && core.get().takes_fast_call_soon() => core,
                _ => return checked_call(kind, py, slf, args, nargs, kwnames),
            };
            let callback = Bound::from_borrowed_ptr(py, *args);
            let rest = if nargs == 1 {
                PyTuple::empty(py)
            } else {
                let items = std::slice::from_raw_parts(args.add(1), (nargs - 1) as usize);
                PyTuple::new(py, items.iter().map(|p| Bound::from_borrowed_ptr(py, *p)))?
            };
            let context =
                (keywords == 1).then(|| Bound::from_borrowed_ptr(py, *args.add(nargs as usize)));
            let handle = core
                .get()
                .schedule_soon(py, &callback, &rest, context.as_ref())?;
            if kind == Soon::Threadsafe {
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
/// Same arguments as `call_soon_fast`.
unsafe fn checked_call(
    kind: Soon,
    py: Python<'_>,
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> PyResult<*mut ffi::PyObject> {
    let checked = match kind {
        Soon::Plain => &CHECKED_CALL_SOON,
        Soon::Threadsafe => &CHECKED_CALL_SOON_THREADSAFE,
    };
    let method = checked
        .get(py)
        .ok_or_else(|| PyRuntimeError::new_err("ferroloop: call_soon is not initialised"))?;
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
fn install_method(ty: &Bound<'_, PyType>, name: &CStr, def: ffi::PyMethodDef) -> PyResult<()> {
    let py = ty.py();
    // The definition must outlive the type: leak it (once per interpreter start).
    let def: &'static mut ffi::PyMethodDef = Box::leak(Box::new(def));
    // SAFETY: `ty` is a live type object and `def` a valid, 'static method definition.
    let descriptor =
        unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyDescr_NewMethod(ty.as_type_ptr(), def))? };
    ty.setattr(name.to_str().unwrap_or_default(), descriptor)
}

/// Installs the fast `call_soon`, `call_soon_threadsafe` and `get_debug` on `LoopCore`.
pub fn install(ty: &Bound<'_, PyType>) -> PyResult<()> {
    let py = ty.py();
    let checked = ty.getattr("call_soon")?.unbind();
    CHECKED_CALL_SOON.get_or_init(py, || checked);
    ty.setattr(
        "_checked_call_soon",
        CHECKED_CALL_SOON.get(py).map(|m| m.bind(py)),
    )?;
    let checked = ty.getattr("call_soon_threadsafe")?.unbind();
    CHECKED_CALL_SOON_THREADSAFE.get_or_init(py, || checked);
    ty.setattr(
        "_checked_call_soon_threadsafe",
        CHECKED_CALL_SOON_THREADSAFE.get(py).map(|m| m.bind(py)),
    )?;
    install_method(
        ty,
        c"call_soon_threadsafe",
        ffi::PyMethodDef {
            ml_name: c"call_soon_threadsafe".as_ptr(),
            ml_meth: ffi::PyMethodDefPointer {
                PyCFunctionFastWithKeywords: call_soon_threadsafe_fast,
            },
            ml_flags: (ffi::METH_FASTCALL | ffi::METH_KEYWORDS) as c_int,
            ml_doc: c"call_soon_threadsafe($self, callback, *args, context=None)\n--\n\nSchedules `callback(*args)` from any thread and wakes the loop.".as_ptr(),
        },
    )?;
    install_method(
        ty,
        c"call_soon",
        ffi::PyMethodDef {
            ml_name: c"call_soon".as_ptr(),
            ml_meth: ffi::PyMethodDefPointer {
                PyCFunctionFastWithKeywords: call_soon_fast,
            },
            ml_flags: (ffi::METH_FASTCALL | ffi::METH_KEYWORDS) as c_int,
            ml_doc: c"call_soon($self, callback, *args, context=None)\n--\n\nSchedules `callback(*args)` for the next iteration.".as_ptr(),
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
