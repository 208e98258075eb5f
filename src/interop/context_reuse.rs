//! Reuse of `contextvars.Context` objects for handles: the copy `call_soon` makes of the
//! current context without a new object per callback.
//!
//! asyncio gives every handle made without `context=` a fresh `copy_context()`, entered around
//! its callback. A copy is a new object that shares the current context's variable mapping
//! (an immutable HAMT): CPython allocates it (`PyContext_CopyCurrent`, GC tracking included)
//! and frees it once the handle is gone; in a `call_soon` chain that is about a tenth of a
//! callback's cost. What is observable of such a copy is its mapping, its identity while
//! someone holds it, and weak references to it. A context that only a recycled handle
//! references (reference count 1, no weak reference, not entered) can therefore be parked
//! (its mapping replaced by the empty one, so the values it held are released when asyncio
//! would release them) and later given to another handle with the then-current mapping:
//! nobody can tell it from a fresh copy.
//!
//! The mapping (`ctx_vars`) and the thread's current context (`PyThreadState.context`) are
//! private fields. Their offsets are known per Python version and checked against the running
//! interpreter when the module loads (`enable`): contexts entered and left, a variable set, a
//! weak reference taken, and a parked context refilled must all read back as expected. If
//! any check fails, or the version is not one whose layout is known, reuse stays off and
//! handles get `PyContext_CopyCurrent` as before.
//!
//! A handle that has no parked context of its own (a new one, e.g. in a burst of
//! `call_soon_threadsafe` posts larger than the spare-handle pool) does not need a Context at
//! all until it runs or someone asks for it: it keeps the current *mapping* (`capture_vars`,
//! one reference count) and gets a Context from a small pool of parked ones when it runs
//! (`context_with_vars`), on the loop's thread. Such a post allocates nothing the garbage
//! collector tracks, so a large batch of posts triggers no young-generation collections.
//! A Context given back by a handle that is freed goes to that pool (`pool_parked`).

use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

use pyo3::ffi;
use pyo3::prelude::*;

/// Offset of `ctx_prev` in a context object (after the 16-byte object header).
pub(super) const CTX_PREV: usize = 16;
/// Offset of `ctx_vars`, the variable mapping.
pub(super) const CTX_VARS: usize = 24;
/// Offset of `ctx_weakreflist`.
pub(super) const CTX_WEAKREFS: usize = 32;
/// Offset of `ctx_entered` (an `int`).
pub(super) const CTX_ENTERED: usize = 40;

/// Offset of `context` in `PyThreadState` for the running version; 0 while reuse is off.
static TSTATE_CONTEXT: AtomicUsize = AtomicUsize::new(0);
/// The empty mapping parked contexts hold (a strong reference, never released).
static EMPTY_VARS: AtomicPtr<ffi::PyObject> = AtomicPtr::new(std::ptr::null_mut());

/// How many parked contexts the pool keeps for handles that have none.
const POOL_MAX: usize = 256;

/// Parked contexts (strong references) for handles that captured only a mapping.
struct ParkedPool(std::cell::UnsafeCell<Vec<*mut ffi::PyObject>>);

// SAFETY: the pool is only touched with the GIL held (every function below requires it), and
// reuse is off on free-threaded builds (`enable` checks the object header's size).
unsafe impl Sync for ParkedPool {}

/// The pool of `pool_parked`.
static POOL: ParkedPool = ParkedPool(std::cell::UnsafeCell::new(Vec::new()));

/// `PyThreadState.context`'s offset in the CPython headers of each version (x86-64 and other
/// 64-bit targets; 3.11: 224; 3.12 to 3.14: 208; 3.15 alpha: 232). Checked at load anyway.
fn expected_tstate_offset() -> Option<usize> {
    // SAFETY: `Py_Version` is a constant of the interpreter (3.11+).
    let version = unsafe { ffi::Py_Version } >> 16;
    match version {
        0x030B => Some(224),
        0x030C..=0x030E => Some(208),
        0x030F => Some(232),
        _ => None,
    }
}

/// Reads the pointer at `offset` bytes into `base`.
///
/// # Safety
/// `base + offset` lies inside a live object and holds a pointer.
#[inline(always)]
pub(super) unsafe fn field(base: *mut ffi::PyObject, offset: usize) -> *mut ffi::PyObject {
    // SAFETY: caller's contract.
    unsafe { *(base.cast::<u8>().add(offset).cast::<*mut ffi::PyObject>()) }
}

/// Writes the pointer at `offset` bytes into `base`.
///
/// # Safety
/// As `field`; the caller owns what the field held and the reference it stores.
#[inline(always)]
pub(super) unsafe fn set_field(base: *mut ffi::PyObject, offset: usize, value: *mut ffi::PyObject) {
    // SAFETY: caller's contract.
    unsafe { *(base.cast::<u8>().add(offset).cast::<*mut ffi::PyObject>()) = value }
}

/// Reads `ctx_entered`.
///
/// # Safety
/// `ctx` is a live context object.
#[inline(always)]
pub(super) unsafe fn entered(ctx: *mut ffi::PyObject) -> bool {
    // SAFETY: caller's contract; the field is an `int`.
    unsafe { *(ctx.cast::<u8>().add(CTX_ENTERED).cast::<std::ffi::c_int>()) != 0 }
}

/// True once `enable` verified the layout.
#[inline(always)]
pub fn enabled() -> bool {
    TSTATE_CONTEXT.load(Ordering::Relaxed) != 0
}

/// The calling thread's current context (borrowed), or null when it has none yet or reuse
/// is off.
///
/// # Safety
/// The GIL is held.
#[inline(always)]
unsafe fn current_context() -> *mut ffi::PyObject {
    let offset = TSTATE_CONTEXT.load(Ordering::Relaxed);
    if offset == 0 {
        return std::ptr::null_mut();
    }
    // SAFETY: the GIL is held, so the thread has a thread state; `offset` was verified to be
    // its `context` field.
    unsafe { field(ffi::PyThreadState_Get().cast(), offset) }
}

/// Takes `ctx` out of use if only its holder references it, no weak reference points to it and
/// it is not entered: its mapping is swapped for the empty one and returned (a new reference
/// for the caller to release outside any borrow). None: `ctx` must be released as usual.
///
/// # Safety
/// `ctx` is a live object the caller holds a reference to; the GIL is held.
#[inline(always)]
pub unsafe fn park(ctx: *mut ffi::PyObject) -> Option<*mut ffi::PyObject> {
    if !enabled() {
        return None;
    }
    // SAFETY: caller's contract; the fields are read only after the exact type check, and
    // the layout was verified by `enable`.
    unsafe {
        if ffi::Py_REFCNT(ctx) != 1
            || ffi::PyContext_CheckExact(ctx) == 0
            || !field(ctx, CTX_WEAKREFS).is_null()
            || !field(ctx, CTX_PREV).is_null()
            || entered(ctx)
        {
            return None;
        }
        let empty = EMPTY_VARS.load(Ordering::Relaxed);
        let vars = field(ctx, CTX_VARS);
        ffi::Py_INCREF(empty);
        set_field(ctx, CTX_VARS, empty);
        Some(vars)
    }
}

/// Gives a parked context the calling thread's current mapping: it is then what
/// `copy_context()` would have made. False (nothing changed) if the thread has no current
/// context yet (`PyContext_CopyCurrent` makes one). `ts`: the calling thread's state if the
/// caller has it at hand (read once per batch by the loop), else null (looked up here).
///
/// # Safety
/// `ctx` was parked by `park` and is referenced only by the caller; the GIL is held; `ts` is
/// null or the calling thread's state.
#[inline(always)]
pub unsafe fn refill(ts: *mut ffi::PyObject, ctx: *mut ffi::PyObject) -> bool {
    // SAFETY: caller's contract; the parked context holds the empty mapping, of which we hold
    // a reference of our own, so releasing it here never frees it (no code runs). A parked
    // context exists only while reuse is on, so the offset is the verified one.
    unsafe {
        let current = if ts.is_null() {
            current_context()
        } else {
            field(ts, TSTATE_CONTEXT.load(Ordering::Relaxed))
        };
        if current.is_null() {
            return false;
        }
        let vars = field(current, CTX_VARS);
        ffi::Py_INCREF(vars);
        let parked = field(ctx, CTX_VARS);
        set_field(ctx, CTX_VARS, vars);
        ffi::Py_DECREF(parked);
        true
    }
}

/// The calling thread's current mapping (a new reference), what a copy of the current context
/// would hold; null when reuse is off or the thread has no current context yet (then
/// `PyContext_CopyCurrent` must be used: it makes one).
///
/// # Safety
/// The GIL is held.
#[inline(always)]
pub unsafe fn capture_vars() -> *mut ffi::PyObject {
    // SAFETY: the GIL is held (caller's contract); a context's mapping is never null.
    unsafe {
        let current = current_context();
        if current.is_null() {
            return current;
        }
        let vars = field(current, CTX_VARS);
        ffi::Py_INCREF(vars);
        vars
    }
}

/// A Context holding `vars` (whose reference it takes): a parked one from the pool, else a
/// new one. What `copy_context()` made at the time `vars` was captured, as far as anyone can
/// tell: a context nobody else references, not entered, without weak references.
///
/// # Safety
/// The GIL is held, reuse is on (`capture_vars` returned `vars`), and `vars` is a mapping
/// taken from a context.
pub unsafe fn context_with_vars(py: Python<'_>, vars: *mut ffi::PyObject) -> PyResult<Py<PyAny>> {
    // SAFETY: the GIL is held; the pool holds parked contexts only (`pool_parked`), each with
    // the empty mapping, of which we hold a reference of our own, so releasing it runs no code.
    unsafe {
        let pool = &mut *POOL.0.get();
        let ctx = match pool.pop() {
            Some(ctx) => ctx,
            None => {
                // May run a collection (arbitrary code), which is why the caller holds no
                // borrow; the pool is not borrowed across it either.
                let ctx = ffi::PyContext_New();
                if ctx.is_null() {
                    ffi::Py_DECREF(vars);
                    return Err(PyErr::fetch(py));
                }
                ctx
            }
        };
        let old = field(ctx, CTX_VARS);
        set_field(ctx, CTX_VARS, vars);
        ffi::Py_DECREF(old);
        Ok(Bound::from_owned_ptr(py, ctx).unbind())
    }
}

/// Keeps a context parked by `park` (whose reference it takes) for `context_with_vars`, or
/// releases it when the pool is full.
///
/// # Safety
/// The GIL is held; `ctx` was parked by `park` and nothing else references it.
pub unsafe fn pool_parked(ctx: *mut ffi::PyObject) {
    // SAFETY: the GIL is held (caller's contract); the pool is not borrowed elsewhere (no
    // function here calls back into Python while it is).
    unsafe {
        let pool = &mut *POOL.0.get();
        if pool.len() < POOL_MAX {
            pool.push(ctx);
        } else {
            ffi::Py_DECREF(ctx);
        }
    }
}

/// Checks the layout against the running interpreter and turns reuse on if it holds; returns
/// whether it is on. Called once, when the module loads (the calling thread's current context
/// is the same before and after).
pub fn enable(py: Python<'_>) -> bool {
    if std::mem::size_of::<ffi::PyObject>() != 16 {
        return false; // free-threaded or trace-refs build: another header
    }
    let Some(offset) = expected_tstate_offset() else {
        return false;
    };
    // SAFETY: the GIL is held (`py`); every object used is created here and released before
    // returning; fields are read at the offsets under test only inside objects whose size
    // covers them (a context object is 44 bytes past its header's start at least, a thread
    // state hundreds).
    let verified = unsafe { verify(offset) };
    if PyErr::take(py).is_some() || !verified {
        return false;
    }
    // SAFETY: a new empty context; its mapping is the empty one, kept with a reference of
    // our own for good.
    unsafe {
        let ctx = ffi::PyContext_New();
        if ctx.is_null() {
            let _ = PyErr::take(py);
            return false;
        }
        let empty = field(ctx, CTX_VARS);
        ffi::Py_INCREF(empty);
        EMPTY_VARS.store(empty, Ordering::Relaxed);
        ffi::Py_DECREF(ctx);
    }
    TSTATE_CONTEXT.store(offset, Ordering::Relaxed);
    true
}

/// The thread state's `context` offset `enable` verified, if reuse is on (entering contexts
/// directly may use it too: it checks its own part).
pub fn verified_tstate_offset() -> Option<usize> {
    match TSTATE_CONTEXT.load(Ordering::Relaxed) {
        0 => None,
        offset => Some(offset),
    }
}

/// The checks of `enable`, with `offset` as the thread state's `context` field.
///
/// # Safety
/// The GIL is held.
unsafe fn verify(offset: usize) -> bool {
    // SAFETY: the GIL is held (caller's contract); see `enable` for the reads.
    unsafe {
        let tstate: *mut ffi::PyObject = ffi::PyThreadState_Get().cast();
        let before = field(tstate, offset);
        if !before.is_null() && ffi::PyContext_CheckExact(before) == 0 {
            return false;
        }
        let a = ffi::PyContext_New();
        let b = ffi::PyContext_New();
        let var = ffi::PyContextVar_New(c"ferroloop_layout_check".as_ptr(), std::ptr::null_mut());
        let value = ffi::PyLong_FromLong(7);
        let mut ok = !a.is_null() && !b.is_null() && !var.is_null() && !value.is_null();
        let fresh = |ctx| {
            field(ctx, CTX_PREV).is_null()
                && !field(ctx, CTX_VARS).is_null()
                && field(ctx, CTX_WEAKREFS).is_null()
                && !entered(ctx)
        };
        ok = ok && fresh(a) && fresh(b);
        // Entering and leaving: the thread state's field and the context's own.
        if ok && ffi::PyContext_Enter(a) == 0 {
            ok = field(tstate, offset) == a && field(a, CTX_PREV) == before && entered(a);
            if ffi::PyContext_Enter(b) == 0 {
                ok = ok && field(tstate, offset) == b && field(b, CTX_PREV) == a;
                ok = ffi::PyContext_Exit(b) == 0 && ok;
            } else {
                ok = false;
            }
            ok = ok && field(tstate, offset) == a && fresh(b);
            // Setting a variable gives the entered context a new mapping.
            let old_vars = field(a, CTX_VARS);
            let token = ffi::PyContextVar_Set(var, value);
            ok = ok && !token.is_null() && field(a, CTX_VARS) != old_vars;
            ffi::Py_XDECREF(token);
            ok = ffi::PyContext_Exit(a) == 0 && ok;
        } else {
            ok = false;
        }
        ok = ok && field(tstate, offset) == before && field(a, CTX_PREV).is_null() && !entered(a);
        // A weak reference is seen.
        if ok {
            let weak = ffi::PyWeakref_NewRef(a, std::ptr::null_mut());
            ok = !weak.is_null() && !field(a, CTX_WEAKREFS).is_null();
            ffi::Py_XDECREF(weak);
            ok = ok && field(a, CTX_WEAKREFS).is_null();
        }
        // A copy shares the mapping; parked and refilled, `b` reads the variable as `a` has it.
        if ok {
            let copy = ffi::PyContext_Copy(a);
            ok = !copy.is_null() && field(copy, CTX_VARS) == field(a, CTX_VARS);
            ffi::Py_XDECREF(copy);
        }
        if ok && ffi::PyContext_Enter(a) == 0 {
            let parked = field(b, CTX_VARS);
            ffi::Py_INCREF(field(a, CTX_VARS));
            set_field(b, CTX_VARS, field(a, CTX_VARS));
            ok = field(current_context_at(offset), CTX_VARS) == field(b, CTX_VARS);
            ok = ffi::PyContext_Exit(a) == 0 && ok;
            let mut seen = std::ptr::null_mut();
            if ok && ffi::PyContext_Enter(b) == 0 {
                ok = ffi::PyContextVar_Get(var, std::ptr::null_mut(), &mut seen) == 0
                    && seen == value;
                ok = ffi::PyContext_Exit(b) == 0 && ok;
            } else {
                ok = false;
            }
            ffi::Py_XDECREF(seen);
            // Back to the empty mapping it had.
            let filled = field(b, CTX_VARS);
            set_field(b, CTX_VARS, parked);
            ffi::Py_DECREF(filled);
        }
        ffi::Py_XDECREF(value);
        ffi::Py_XDECREF(var);
        ffi::Py_XDECREF(b);
        ffi::Py_XDECREF(a);
        ok
    }
}

/// The current context read through `offset` (before `enable` stored it).
///
/// # Safety
/// The GIL is held and `offset` is being verified.
unsafe fn current_context_at(offset: usize) -> *mut ffi::PyObject {
    // SAFETY: caller's contract.
    unsafe { field(ffi::PyThreadState_Get().cast(), offset) }
}
