//! A reusable buffer-protocol object that lends a range of Rust memory to one C call.
//!
//! The TLS pump hands bytes to `_ssl` functions that take any buffer: `MemoryBIO.write(data)`
//! (the received ciphertext, which lies in the socket transport's read buffer) and
//! `_SSLSocket.read(n, buffer)` (plaintext written into a Rust buffer or a fresh `bytes`). A
//! `memoryview` made for each call costs two garbage-collected objects (the view and its
//! managed buffer) per call; a window is made once per connection and only points at the
//! memory for the length of the call ([`BufferWindow::lend`]). Outside a call it exports
//! nothing (`BufferError`), so the memory it pointed at can be reused afterwards.
//!
//! Only for callees that are C code known to release the buffer before they return (the
//! `_ssl` types): Python code could keep an export, or expect a `memoryview`'s methods.

use std::os::raw::{c_int, c_void};

use pyo3::exceptions::PyBufferError;
use pyo3::ffi;
use pyo3::prelude::*;

use crate::interop::gil_cell::GilRefCell;

/// What the window shows now.
struct Lent {
    /// Address of the memory (as an integer: the cell must be `Send`); 0 when not lent.
    address: usize,
    /// Length of the memory.
    len: usize,
    /// May the borrower write into it?
    writable: bool,
    /// Is a call borrowing the window right now?
    lent: bool,
    /// Buffers exported and not yet released.
    exports: usize,
}

/// A buffer object showing a range of Rust memory during one call (see the module doc).
#[pyclass(module = "ferroloop._ferroloop", frozen)]
pub struct BufferWindow {
    /// The current range.
    state: GilRefCell<Lent>,
}

impl BufferWindow {
    /// A new window showing nothing.
    pub fn new_object(py: Python<'_>) -> PyResult<Py<BufferWindow>> {
        Py::new(
            py,
            BufferWindow {
                state: GilRefCell::new(Lent {
                    address: 0,
                    len: 0,
                    writable: false,
                    lent: false,
                    exports: 0,
                }),
            },
        )
    }

    /// Runs `call` with the window showing `len` bytes at `data` (writable if `writable`), then
    /// shows nothing again. None, without running `call`, if the window is lent already (a
    /// call made from inside another one): the caller then uses a `memoryview` of its own.
    /// An export the callee did not release is an error (`BufferError`), as a `memoryview`'s
    /// `release()` raises in the same case.
    ///
    /// # Safety
    /// `data` must be valid for reads (and writes, if `writable`) of `len` bytes, and not be
    /// otherwise accessed, until this returns.
    pub unsafe fn lend<'py, R>(
        window: &Bound<'py, BufferWindow>,
        data: *mut u8,
        len: usize,
        writable: bool,
        call: impl FnOnce(&Bound<'py, PyAny>) -> PyResult<R>,
    ) -> Option<PyResult<R>> {
        let py = window.py();
        {
            let mut state = window.get().state.borrow_mut(py);
            if state.lent {
                return None;
            }
            state.address = data as usize;
            state.len = len;
            state.writable = writable;
            state.lent = true;
        }
        let result = call(window.as_any());
        let mut state = window.get().state.borrow_mut(py);
        state.address = 0;
        state.len = 0;
        state.lent = false;
        if state.exports > 0 {
            return Some(Err(PyBufferError::new_err(
                "a buffer of the TLS pump's window is still held after the call",
            )));
        }
        Some(result)
    }
}

#[pymethods]
impl BufferWindow {
    /// Exports the lent range (`BufferError` when nothing is lent).
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        let py = slf.py();
        let mut state = slf.get().state.borrow_mut(py);
        if !state.lent {
            return Err(PyBufferError::new_err(
                "the TLS pump's window shows nothing now",
            ));
        }
        // SAFETY: `view` is the caller's Py_buffer to fill; the range is valid while lent
        // (`lend`'s contract), and `lend` fails the call if the export outlives it.
        // PyBuffer_FillInfo takes a new reference to `slf` in `view.obj`, refuses a writable
        // request on a read-only range, and honours `flags` for format/shape/strides.
        let status = unsafe {
            ffi::PyBuffer_FillInfo(
                view,
                slf.as_ptr(),
                state.address as *mut c_void,
                state.len as ffi::Py_ssize_t,
                c_int::from(!state.writable),
                flags,
            )
        };
        if status < 0 {
            return Err(PyErr::fetch(py));
        }
        state.exports += 1;
        Ok(())
    }

    /// Counts the export released.
    unsafe fn __releasebuffer__(slf: Bound<'_, Self>, _view: *mut ffi::Py_buffer) {
        let mut state = slf.get().state.borrow_mut(slf.py());
        state.exports = state.exports.saturating_sub(1);
    }
}
