//! The C task's step callbacks (`TaskStepMethWrapper`, one new object per task step) kept out
//! of the garbage collector's lists while a ready handle holds them.
//!
//! asyncio's C task (3.11+) schedules each step as `call_soon(TaskStepMethWrapper(task),
//! context=ctx)`. On a busy loop every suspended task has one such object waiting in the ready
//! queue; they live for a whole lap of the queue, so they survive the young collections, are
//! promoted to the oldest generation and are walked by every full collection (with 100,000
//! tasks: 100,000 of them per collection, and 100,000 more promoted per lap, which brings the
//! next full collection nearer).
//!
//! While the loop's handle holds the wrapper, the collector gains nothing from seeing it:
//! nothing but the handle references it (the task does not keep its wrappers; checked by the
//! reference count when the handle takes it), and the handle
//! is held by the loop, outside the collector's view. A tracked object referenced from outside
//! the collector's view is a root; an untracked one keeps what it references alive the same
//! way (its references are never subtracted), so untracking changes no collection's outcome.
//! The handle releases the wrapper when it runs (the wrapper is then freed). If Python code
//! asks a handle for its callback (`_callback`, `repr`, `==`), the wrapper is tracked again
//! before it is handed out: from then on others may hold it and build cycles through it.

use std::sync::atomic::{AtomicPtr, Ordering};

use pyo3::ffi;

/// The C task's `TaskStepMethWrapper` type, once seen (a reference held for the process's
/// life); null before.
static STEP_WRAPPER_TYPE: AtomicPtr<ffi::PyTypeObject> = AtomicPtr::new(std::ptr::null_mut());

/// True if `ty` is the C task's step wrapper type (remembered on first sight: a type without
/// vectorcall named `_asyncio.TaskStepMethWrapper`, which only `_asyncio` defines).
///
/// # Safety
/// `ty` is a live type object; the GIL is held.
#[inline(always)]
unsafe fn is_step_wrapper_type(ty: *mut ffi::PyTypeObject) -> bool {
    let known = STEP_WRAPPER_TYPE.load(Ordering::Relaxed);
    if known == ty {
        return !known.is_null();
    }
    // SAFETY: caller's contract (a live type; `tp_name` is a NUL-terminated string it owns).
    unsafe {
        if !known.is_null() || ffi::PyType_HasFeature(ty, ffi::Py_TPFLAGS_HAVE_VECTORCALL) != 0 {
            return false;
        }
        let name = std::ffi::CStr::from_ptr((*ty).tp_name);
        // A heap type's `tp_name` is its spec's full name (3.12: `_asyncio.` in front).
        if !matches!(
            name.to_bytes(),
            b"_asyncio.TaskStepMethWrapper" | b"TaskStepMethWrapper"
        ) {
            return false;
        }
        ffi::Py_INCREF(ty.cast());
    }
    STEP_WRAPPER_TYPE.store(ty, Ordering::Relaxed);
    true
}

/// True if `obj` is one of the C task's step wrappers (`TaskStepMethWrapper`).
pub fn is_step_wrapper(obj: &pyo3::Bound<'_, pyo3::PyAny>) -> bool {
    // SAFETY: a bound object is live and proves the GIL is held; its type is live with it.
    unsafe { is_step_wrapper_type(ffi::Py_TYPE(obj.as_ptr())) }
}

/// Untracks `callback` if it is a tracked step wrapper about to be held by a ready handle and
/// nothing but its maker references it.
///
/// The C task makes the wrapper, calls `call_soon` with it (arguments borrowed by our entry
/// point) and drops its reference as soon as `call_soon` returns: a reference count of one
/// here means the handle is about to hold the only reference. Anything else (a `call_soon`
/// override in Python that got the wrapper first and may keep it) leaves it tracked.
///
/// # Safety
/// `callback` is a live object the caller's handle takes a reference to; the GIL is held.
#[inline(always)]
pub unsafe fn untrack_queued_step(callback: *mut ffi::PyObject) {
    // SAFETY: caller's contract; untracking an object of a GC type is allowed (its dealloc
    // untracks only if still tracked). `PyObject_GC_UnTrack` itself does nothing to an
    // untracked object (3.11–3.15), so no `PyObject_GC_IsTracked` call first: on 3.14 that is
    // a second exported call per task step (~12 instructions, callgrind).
    unsafe {
        if is_step_wrapper_type(ffi::Py_TYPE(callback)) && ffi::Py_REFCNT(callback) == 1 {
            ffi::PyObject_GC_UnTrack(callback.cast());
        }
    }
}

/// Tracks `callback` again if it is a step wrapper we untracked, before Python code gets it.
///
/// # Safety
/// `callback` is a live object; the GIL is held.
#[inline]
pub unsafe fn retrack_exposed_step(callback: *mut ffi::PyObject) {
    // SAFETY: caller's contract; the wrapper is a GC type, and `PyObject_GC_Track` is only
    // called on an untracked one (tracking twice is a fatal error).
    unsafe {
        let known = STEP_WRAPPER_TYPE.load(Ordering::Relaxed);
        if !known.is_null()
            && ffi::Py_TYPE(callback) == known
            && ffi::PyObject_GC_IsTracked(callback) == 0
        {
            ffi::PyObject_GC_Track(callback.cast());
        }
    }
}
