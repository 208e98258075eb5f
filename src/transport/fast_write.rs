//! A raw CPython entry point for `StreamTransport.write(data)`, the call a protocol makes for
//! every message it sends (an echo server: once per request).
//!
//! PyO3's method wrapper matches the arguments generically (keyword names against the
//! signature, the positional count, then the receiver's type). This `METH_FASTCALL |
//! METH_KEYWORDS` function takes the usual call, one positional argument and no keywords,
//! straight to the same Rust body (`StreamTransport::write`); any other call shape
//! (`write(data=...)`, a wrong count) goes to the PyO3 method it replaces, which accepts the
//! keyword and raises the exact TypeError. It runs inside PyO3's own trampoline
//! (`get_trampoline_function!`), so PyO3 knows the thread is attached: references dropped in
//! the write path (buffering, flow control) are released, not leaked, and a panic becomes a
//! Python exception.

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;
use pyo3::Borrowed;

use crate::event_loop::fast_methods::{checked_call, fastcall_def, install_method};
use crate::transport::stream::StreamTransport;

/// The PyO3 `write` method (for the calls the fast entry point does not take).
static CHECKED_WRITE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// `write(data)` by vectorcall: one positional argument goes straight to the Rust body.
///
/// # Safety
/// Called through PyO3's fastcall trampoline, as a `METH_FASTCALL | METH_KEYWORDS` method of
/// `StreamTransport`: `args` holds `nargs` positional then the keyword values, all valid
/// borrowed references; the GIL is held.
unsafe fn write_fast(
    py: Python<'_>,
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> PyResult<*mut ffi::PyObject> {
    if nargs == 1 && kwnames.is_null() {
        // SAFETY: `slf` and `args[0]` are valid borrowed references for the whole call
        // (caller's contract): used as they are, without reference counting.
        let (this, data) = unsafe { (Borrowed::from_ptr(py, slf), Borrowed::from_ptr(py, *args)) };
        let transport = this.cast::<StreamTransport>()?;
        StreamTransport::write(&transport, &data)?;
        // SAFETY: a new reference to None, returned to CPython.
        return Ok(unsafe { ffi::Py_NewRef(ffi::Py_None()) });
    }
    // SAFETY: the same arguments, forwarded (caller's contract).
    unsafe { checked_call(py, &CHECKED_WRITE, slf, args, nargs, kwnames) }
}

/// Replaces `StreamTransport.write` with the fast entry point (the PyO3 method stays its
/// fallback).
pub fn install(ty: &Bound<'_, PyType>) -> PyResult<()> {
    let py = ty.py();
    let checked = ty.getattr("write")?.unbind();
    CHECKED_WRITE.get_or_init(py, || checked);
    install_method(
        ty,
        c"write",
        fastcall_def(
            c"write",
            pyo3::get_trampoline_function!(fastcall_cfunction_with_keywords, write_fast),
            c"write($self, data)\n--\n\nSends `data` (bytes, bytearray or memoryview): at once if the buffer is empty, the rest (or all of it) buffered and sent when the socket is writable.",
        ),
    )
}
