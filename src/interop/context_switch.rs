//! Entering and leaving a handle's `contextvars.Context` around its callback without
//! `PyContext_Enter`/`PyContext_Exit`.
//!
//! asyncio runs every callback inside its context (`Context.run`): two C API calls per
//! callback, each of which first looks the thread state up (a thread-local read through
//! `__tls_get_addr` in a shared libpython) before doing a few field writes. The loop runs its
//! callbacks on one thread: it reads the thread state once per batch of callbacks and does
//! those writes itself, exactly as CPython 3.11–3.13 does them (the previous context kept in
//! `ctx_prev`, `ctx_entered` set, the thread's `context` and `context_ver` updated, the
//! latter so that `ContextVar.get`'s per-thread cache sees the switch).
//!
//! Only on 3.11–3.13: 3.14 also notifies context watchers on every switch, which only the C
//! API can do. The offsets are `context_reuse`'s (verified there), and this part checks its own
//! when the module loads: `context_ver` follows `context` and moves by one per switch, and a
//! direct switch is seen by `ContextVar.get` and undone by the C API's exit (and the other way
//! round). Anything unexpected at run time (not an exact `Context`, already entered, the
//! thread in another context when leaving) falls back to the C API, which raises asyncio's
//! errors.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use pyo3::ffi;
use pyo3::prelude::*;

use crate::interop::context_reuse::{entered, field, set_field, CTX_ENTERED, CTX_PREV};

/// Offset of `context` in `PyThreadState`; 0 while direct switching is off.
static TSTATE_CONTEXT: AtomicUsize = AtomicUsize::new(0);
/// Direct switching verified and on.
static ON: AtomicBool = AtomicBool::new(false);

/// The thread state of the calling thread if direct switching or context reuse is on (the
/// latter's refill reads the current context from it: `context_reuse::refill`), else null.
///
/// # Safety
/// The GIL is held.
#[inline(always)]
pub unsafe fn thread_state() -> *mut ffi::PyObject {
    if !ON.load(Ordering::Relaxed) && !crate::interop::context_reuse::enabled() {
        return std::ptr::null_mut();
    }
    // SAFETY: the GIL is held, so the thread has a thread state.
    unsafe { ffi::PyThreadState_Get().cast() }
}

/// `context_ver` of the thread state `ts`.
///
/// # Safety
/// `ts` is a live thread state and `offset + 8` its verified `context_ver` field.
#[inline(always)]
unsafe fn version(ts: *mut ffi::PyObject, offset: usize) -> *mut u64 {
    // SAFETY: caller's contract.
    unsafe { ts.cast::<u8>().add(offset + 8).cast::<u64>() }
}

/// Sets `ctx_entered`.
///
/// # Safety
/// `ctx` is a live context object.
#[inline(always)]
unsafe fn set_entered(ctx: *mut ffi::PyObject, value: bool) {
    // SAFETY: caller's contract; the field is an `int`.
    unsafe { *(ctx.cast::<u8>().add(CTX_ENTERED).cast::<std::ffi::c_int>()) = value as _ }
}

/// Enters `ctx` on the thread whose state is `ts` (from `thread_state`, on this thread) as
/// `PyContext_Enter` does; false if it did nothing (switching off, not an exact `Context`,
/// already entered): the caller then uses the C API, which raises the right error.
///
/// # Safety
/// `ts` is null or the calling thread's state; `ctx` is a live object the caller keeps alive
/// until the matching `exit`; the GIL is held.
#[inline(always)]
pub unsafe fn enter(ts: *mut ffi::PyObject, ctx: *mut ffi::PyObject) -> bool {
    // SAFETY: caller's contract.
    ON.load(Ordering::Relaxed) && unsafe { switch_in(ts, ctx) }
}

/// `enter` also while `enable` verifies (switching not on yet).
///
/// # Safety
/// As `enter`; `TSTATE_CONTEXT` holds the offset under test or the verified one.
#[inline(always)]
unsafe fn switch_in(ts: *mut ffi::PyObject, ctx: *mut ffi::PyObject) -> bool {
    // SAFETY: caller's contract; the fields were verified by `enable`.
    unsafe {
        if ts.is_null() || ffi::PyContext_CheckExact(ctx) == 0 || entered(ctx) {
            return false;
        }
        let offset = TSTATE_CONTEXT.load(Ordering::Relaxed);
        // The thread's reference to its current context moves into `ctx_prev`.
        set_field(ctx, CTX_PREV, field(ts, offset));
        set_entered(ctx, true);
        ffi::Py_INCREF(ctx);
        set_field(ts, offset, ctx);
        *version(ts, offset) += 1;
        true
    }
}

/// Leaves `ctx`, entered by `enter` (or `PyContext_Enter`) on this thread, as
/// `PyContext_Exit` does; false if it did nothing (switching off, `ctx` not entered or not the
/// thread's current context): the caller then uses the C API, which raises the right error.
///
/// # Safety
/// As `enter`; the caller holds a reference to `ctx` of its own (the one the thread state
/// held is released here).
#[inline(always)]
pub unsafe fn exit(ts: *mut ffi::PyObject, ctx: *mut ffi::PyObject) -> bool {
    // SAFETY: caller's contract.
    ON.load(Ordering::Relaxed) && unsafe { switch_out(ts, ctx) }
}

/// `exit` also while `enable` verifies (switching not on yet).
///
/// # Safety
/// As `exit`; `TSTATE_CONTEXT` holds the offset under test or the verified one.
#[inline(always)]
unsafe fn switch_out(ts: *mut ffi::PyObject, ctx: *mut ffi::PyObject) -> bool {
    // SAFETY: caller's contract; the fields were verified by `enable`.
    unsafe {
        if ts.is_null() || ffi::PyContext_CheckExact(ctx) == 0 || !entered(ctx) {
            return false;
        }
        let offset = TSTATE_CONTEXT.load(Ordering::Relaxed);
        if field(ts, offset) != ctx {
            return false;
        }
        set_field(ts, offset, field(ctx, CTX_PREV));
        *version(ts, offset) += 1;
        set_field(ctx, CTX_PREV, std::ptr::null_mut());
        set_entered(ctx, false);
        // The thread state's reference; the caller's own keeps `ctx` alive (no code runs).
        ffi::Py_DECREF(ctx);
        true
    }
}

/// True once `enable` verified direct switching.
pub fn enabled() -> bool {
    ON.load(Ordering::Relaxed)
}

/// Turns direct switching on if the running version switches contexts as 3.11–3.13 do and the
/// checks below hold with `offset` as the thread state's `context` field (verified by
/// `context_reuse`). Called once, when the module loads.
pub fn enable(py: Python<'_>, offset: usize) -> bool {
    // SAFETY: `Py_Version` is a constant of the interpreter (3.11+).
    let version = unsafe { ffi::Py_Version } >> 16;
    if !(0x030B..=0x030D).contains(&version) {
        return false;
    }
    // `enter` and `exit` read the offset from here (`verify` calls them); nothing else uses
    // them while `ON` is false.
    TSTATE_CONTEXT.store(offset, Ordering::Relaxed);
    // SAFETY: the GIL is held (`py`); see `verify`.
    let verified = unsafe { verify(offset) };
    if PyErr::take(py).is_some() || !verified {
        TSTATE_CONTEXT.store(0, Ordering::Relaxed);
        return false;
    }
    ON.store(true, Ordering::Relaxed);
    true
}

/// The checks of `enable`.
///
/// # Safety
/// The GIL is held; `offset` is the verified `context` field of the thread state.
unsafe fn verify(offset: usize) -> bool {
    // SAFETY: the GIL is held; every object is created here and released before returning;
    // the thread state is hundreds of bytes long, so `offset + 8` lies inside it.
    unsafe {
        let ts: *mut ffi::PyObject = ffi::PyThreadState_Get().cast();
        let before = field(ts, offset);
        let v0 = *version(ts, offset);
        let ctx = ffi::PyContext_New();
        let var = ffi::PyContextVar_New(c"ferroloop_switch_check".as_ptr(), std::ptr::null_mut());
        let value = ffi::PyLong_FromLong(11);
        let mut ok = !ctx.is_null() && !var.is_null() && !value.is_null();
        // The C API moves the version by one per switch.
        if ok && ffi::PyContext_Enter(ctx) == 0 {
            ok = *version(ts, offset) == v0 + 1 && field(ts, offset) == ctx;
            // A value set in `ctx`, seen inside it only.
            let token = ffi::PyContextVar_Set(var, value);
            ok = ok && !token.is_null();
            ffi::Py_XDECREF(token);
            let v1 = *version(ts, offset);
            ok = ffi::PyContext_Exit(ctx) == 0 && ok && *version(ts, offset) == v1 + 1;
        } else {
            ok = false;
        }
        let seen = |expected: *mut ffi::PyObject| {
            let mut got = std::ptr::null_mut();
            let fine =
                ffi::PyContextVar_Get(var, std::ptr::null_mut(), &mut got) == 0 && got == expected;
            ffi::Py_XDECREF(got);
            fine
        };
        // Outside: no value (this read also caches the lookup for the current version).
        ok = ok && field(ts, offset) == before && seen(std::ptr::null_mut());
        // Entered directly: the value is seen (the version moved: the cache is not used),
        // and the C API leaves it.
        if ok && switch_in(ts, ctx) {
            ok = field(ts, offset) == ctx && field(ctx, CTX_PREV) == before && seen(value);
            ok = ffi::PyContext_Exit(ctx) == 0 && ok;
            ok = ok && field(ts, offset) == before && !entered(ctx) && seen(std::ptr::null_mut());
        } else {
            ok = false;
        }
        // Entered by the C API, left directly.
        if ok && ffi::PyContext_Enter(ctx) == 0 {
            ok = seen(value) && switch_out(ts, ctx);
            ok = ok
                && field(ts, offset) == before
                && field(ctx, CTX_PREV).is_null()
                && !entered(ctx)
                && seen(std::ptr::null_mut());
            if field(ts, offset) == ctx {
                ffi::PyContext_Exit(ctx);
            }
        } else {
            ok = false;
        }
        // Entered and left directly: the reference count is back where it was.
        if ok {
            let count = ffi::Py_REFCNT(ctx);
            ok = switch_in(ts, ctx) && seen(value) && switch_out(ts, ctx);
            ok = ok && ffi::Py_REFCNT(ctx) == count && seen(std::ptr::null_mut());
        }
        ok = ok && field(ts, offset) == before;
        ffi::Py_XDECREF(value);
        ffi::Py_XDECREF(var);
        ffi::Py_XDECREF(ctx);
        ok
    }
}
