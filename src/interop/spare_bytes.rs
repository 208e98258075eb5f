//! Reuse of the `bytes` objects the stream transport hands to `data_received`.
//!
//! Most protocols consume the data they are given (parse it, copy it into a buffer, write it
//! back) and drop it before `data_received` returns. The transport then holds the only
//! reference to the `bytes`, and nothing in Python can observe it any more (bytes objects
//! support no weak references). Instead of freeing it and allocating the same size again for
//! the next read — reads above 512 bytes bypass Python's small-object allocator, so this is a
//! `malloc`/`free` pair per read — the transport keeps it and copies the next read of the same
//! length into it. A `bytes` anybody else still references is never touched.
//!
//! One object is kept per thread (a loop runs on one thread; transports read only while it
//! runs); the loop releases it when it stops running.

use std::cell::Cell;
use std::ptr;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// Largest `bytes` kept for reuse: small and medium reads, where the allocation is a
/// noticeable part of the cost (larger reads go straight into a new `bytes`).
const MAX_SPARE_LEN: usize = 64 * 1024;

thread_local! {
    /// An owned reference to a `bytes` nobody else references, or null.
    static SPARE: Cell<*mut ffi::PyObject> = const { Cell::new(ptr::null_mut()) };
}

/// A `bytes` holding `data`: the spare one if it has exactly this length, else a new one.
pub fn bytes_from<'py>(py: Python<'py>, data: &[u8]) -> Bound<'py, PyBytes> {
    let spare = SPARE.with(|slot| slot.replace(ptr::null_mut()));
    if spare.is_null() {
        return PyBytes::new(py, data);
    }
    // SAFETY: `spare` is an owned reference to a live `bytes` (see `recycle`), taken out of the
    // slot; the GIL is held. It had a reference count of one when it was stored and no other
    // code can have obtained it since, so it is still exclusively ours and may be written.
    unsafe {
        let spare = Bound::from_owned_ptr(py, spare).cast_into_unchecked::<PyBytes>();
        if spare.as_bytes().len() != data.len() {
            return PyBytes::new(py, data); // `spare` is freed here
        }
        let object = spare.as_ptr().cast::<ffi::PyBytesObject>();
        let contents = ptr::addr_of_mut!((*object).ob_sval).cast::<u8>();
        ptr::copy_nonoverlapping(data.as_ptr(), contents, data.len());
        // The cached hash described the old contents.
        #[allow(deprecated)]
        {
            (*object).ob_shash = -1;
        }
        spare
    }
}

/// Keeps `data` for the next `bytes_from` if the caller holds the only reference to it.
pub fn recycle(data: Bound<'_, PyBytes>) {
    // SAFETY: reading the reference count of a live object we hold a reference to.
    let only_ours = unsafe { ffi::Py_REFCNT(data.as_ptr()) } == 1;
    if !only_ours || data.as_bytes().len() > MAX_SPARE_LEN || data.as_bytes().is_empty() {
        return;
    }
    let previous = SPARE.with(|slot| slot.replace(data.into_ptr()));
    if !previous.is_null() {
        // SAFETY: the previous spare was an owned reference; the GIL is held (`data` is bound).
        unsafe { ffi::Py_DECREF(previous) };
    }
}

/// Frees this thread's spare `bytes`, if any (the loop stopped running).
pub fn release(_py: Python<'_>) {
    let spare = SPARE.with(|slot| slot.replace(ptr::null_mut()));
    if !spare.is_null() {
        // SAFETY: an owned reference taken out of the slot; the GIL is held (`_py`).
        unsafe { ffi::Py_DECREF(spare) };
    }
}
