//! Reading straight into a new `bytes`, for large reads.
//!
//! A read into a scratch buffer followed by `bytes(buffer[:n])` copies every byte twice (the
//! kernel's copy, then ours). For a pipe streaming data (100 MB through `cat`), the second
//! copy is a measurable part of the loop's time per MB. Here the kernel copies into the
//! `bytes` object itself: an uninitialised `bytes` of the full read size is allocated, read
//! into, and shrunk to the bytes read (`_PyBytes_Resize`, in place for a shrink).
//!
//! A short read (less than a quarter of the size) is copied out into a `bytes` of its own
//! length instead (see `spare_bytes`), and the large object is kept for the next read (one
//! per thread, never seen by Python code), so a trickle of small reads does not allocate and
//! free the full size every time. The kept object is released when the loop stops running.

use std::cell::Cell;
use std::io;
use std::ptr;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::interop::spare_bytes;

extern "C" {
    /// CPython's resize of a `bytes` it alone references (0 on success; on failure the object
    /// is freed, `*bytes` set to NULL and an exception set). Not declared by pyo3-ffi; the
    /// one declaration the crate shares (socket receives and TLS reads use it too).
    pub(crate) fn _PyBytes_Resize(bytes: *mut *mut ffi::PyObject, newsize: ffi::Py_ssize_t) -> i32;
}

thread_local! {
    /// An owned reference to an unexposed full-size `bytes` kept for the next read, or null.
    static KEPT: Cell<*mut ffi::PyObject> = const { Cell::new(ptr::null_mut()) };
}

/// Keeps `object` (an owned reference nobody else has) for the next read.
///
/// # Safety
/// `object` must be an owned, unexposed `bytes`; the GIL must be held.
unsafe fn keep(object: *mut ffi::PyObject) {
    let previous = KEPT.with(|slot| slot.replace(object));
    if !previous.is_null() {
        // SAFETY: the previous kept object was an owned reference; the GIL is held.
        unsafe { ffi::Py_DECREF(previous) };
    }
}

/// Runs `read` on a buffer of `size` bytes and returns what it read as a `bytes`: the buffer
/// itself (no copy) for a read of at least a quarter of `size`, a copy for a shorter one
/// (empty for end of file). The outer error is Python's (no memory); the inner one `read`'s.
pub fn read_into_bytes<'py>(
    py: Python<'py>,
    size: usize,
    read: impl FnOnce(&mut [u8]) -> io::Result<usize>,
) -> PyResult<io::Result<Bound<'py, PyBytes>>> {
    let mut object = KEPT.with(|slot| slot.replace(ptr::null_mut()));
    // SAFETY: `object` is either null or the kept owned reference (an unexposed `bytes`);
    // the GIL is held (`py`). A new `bytes` from PyBytes_FromStringAndSize(NULL, size) is
    // ours alone with `size` writable bytes; no Python code runs while its contents are
    // borrowed as `buffer`; the object is either kept, freed by a failed resize, or handed
    // out once fully written up to its (new) length.
    unsafe {
        if !object.is_null() && ffi::PyBytes_Size(object) as usize != size {
            ffi::Py_DECREF(object);
            object = ptr::null_mut();
        }
        if object.is_null() {
            object = ffi::PyBytes_FromStringAndSize(ptr::null(), size as ffi::Py_ssize_t);
            if object.is_null() {
                return Err(PyErr::fetch(py));
            }
        }
        let buffer = std::slice::from_raw_parts_mut(ffi::PyBytes_AsString(object).cast(), size);
        let n = match read(buffer) {
            Ok(n) => n.min(size),
            Err(err) => {
                keep(object);
                return Ok(Err(err));
            }
        };
        if n * 4 < size {
            let small = spare_bytes::bytes_from(py, &buffer[..n]);
            keep(object);
            return Ok(Ok(small));
        }
        if n != size && _PyBytes_Resize(&mut object, n as ffi::Py_ssize_t) != 0 {
            return Err(PyErr::fetch(py));
        }
        Ok(Ok(
            Bound::from_owned_ptr(py, object).cast_into_unchecked::<PyBytes>()
        ))
    }
}

/// Frees this thread's kept `bytes`, if any (the loop stopped running).
pub fn release(_py: Python<'_>) {
    let kept = KEPT.with(|slot| slot.replace(ptr::null_mut()));
    if !kept.is_null() {
        // SAFETY: an owned reference taken out of the slot; the GIL is held (`_py`).
        unsafe { ffi::Py_DECREF(kept) };
    }
}
