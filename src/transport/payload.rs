//! The argument of `write()` and `sendto()`: any bytes-like object, read without a copy where
//! Python allows it.

use pyo3::exceptions::PyTypeError;
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyMemoryView};

use crate::interop::py_cache::python_at_least;

/// What `write()` or `sendto()` was given, readable as bytes: a `bytes` as is, a bytearray or
/// memoryview through a buffer view. A memoryview that is not C-contiguous
/// (`memoryview(b)[::2]`) cannot be sent as is (asyncio's `sock.send` raises BufferError): it is
/// read as a copy, which keeps that error for the caller to report as asyncio would.
pub(crate) enum Payload<'a, 'py> {
    /// A `bytes`, read in place (and queued by reference if need be).
    Bytes(&'a Bound<'py, PyBytes>),
    /// A bytearray or contiguous memoryview, read through a buffer view.
    View(ByteView),
    /// A copy of a non-contiguous memoryview, and the BufferError asyncio's send would raise
    /// (until taken).
    Copy(Bound<'py, PyBytes>, Option<PyErr>),
}

impl<'a, 'py> Payload<'a, 'py> {
    /// Reads `sendto()`'s `data`; anything but bytes, bytearray or memoryview is asyncio's
    /// TypeError.
    #[inline]
    pub(crate) fn new(data: &'a Bound<'py, PyAny>) -> PyResult<Self> {
        Self::read(data, false)
    }

    /// Reads `write()`'s `data`, as [`Payload::new`]; Python 3.14+ words the TypeError
    /// differently for a stream transport's `write()` (not for `sendto()`).
    #[inline]
    pub(crate) fn for_write(data: &'a Bound<'py, PyAny>) -> PyResult<Self> {
        Self::read(data, true)
    }

    #[inline]
    fn read(data: &'a Bound<'py, PyAny>, stream_write: bool) -> PyResult<Self> {
        if let Ok(bytes) = data.cast::<PyBytes>() {
            return Ok(Payload::Bytes(bytes));
        }
        let py = data.py();
        if !data.is_instance_of::<PyByteArray>() && !data.is_instance_of::<PyMemoryView>() {
            let expected = if stream_write && python_at_least(3, 14) {
                "a bytes, bytearray, or memoryview object"
            } else {
                "a bytes-like object"
            };
            return Err(PyTypeError::new_err(format!(
                "data argument must be {expected}, not {}",
                data.get_type().name()?.repr()?
            )));
        }
        match ByteView::new(data, ffi::PyBUF_SIMPLE) {
            Ok(view) => Ok(Payload::View(view)),
            Err(err) if err.is_instance_of::<pyo3::exceptions::PyBufferError>(py) => {
                let copy = data.call_method0(intern!(py, "tobytes"))?;
                Ok(Payload::Copy(copy.cast_into::<PyBytes>()?, Some(err)))
            }
            Err(err) => Err(err),
        }
    }

    /// The BufferError asyncio's send would raise for this data, taken out (see `Payload`).
    #[inline]
    pub(crate) fn take_unsendable(&mut self) -> Option<PyErr> {
        match self {
            Payload::Copy(_, err) => err.take(),
            _ => None,
        }
    }

    /// The buffer view of a bytearray or memoryview, taken out (to be held while its data
    /// waits in a write buffer).
    #[inline]
    pub(crate) fn into_view(self) -> Option<ByteView> {
        match self {
            Payload::View(view) => Some(view),
            _ => None,
        }
    }

    /// The contents.
    #[inline]
    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            Payload::Bytes(bytes) => bytes.as_bytes(),
            Payload::View(view) => view.as_slice(),
            Payload::Copy(bytes, _) => bytes.as_bytes(),
        }
    }

    /// The contents as an immutable `bytes`, if they are one (they can then be queued by
    /// reference instead of copied).
    #[inline]
    pub(crate) fn immutable_bytes(&self) -> Option<&Bound<'py, PyBytes>> {
        match self {
            Payload::Bytes(bytes) => Some(bytes),
            Payload::View(_) => None,
            Payload::Copy(bytes, _) => Some(bytes),
        }
    }
}

/// A C-contiguous view of a bytes-like object's contents, released on drop.
pub(crate) struct ByteView {
    view: ffi::Py_buffer,
}

impl ByteView {
    /// Views `obj` (`flags`: `PyBUF_SIMPLE`, or `PyBUF_WRITABLE` to write into it).
    pub(crate) fn new(obj: &Bound<'_, PyAny>, flags: std::os::raw::c_int) -> PyResult<Self> {
        let mut view = std::mem::MaybeUninit::<ffi::Py_buffer>::uninit();
        // SAFETY: `obj` is live; on success the exporter fills `view`, which we release in
        // Drop; on failure an exception is set and `view` is not used.
        let rc = unsafe { ffi::PyObject_GetBuffer(obj.as_ptr(), view.as_mut_ptr(), flags) };
        if rc != 0 {
            return Err(PyErr::fetch(obj.py()));
        }
        // SAFETY: PyObject_GetBuffer succeeded, so `view` is initialised.
        let view = unsafe { view.assume_init() };
        Ok(ByteView { view })
    }

    /// The view's length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.view.len as usize
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        if self.view.len == 0 {
            return &[];
        }
        // SAFETY: a PyBUF_SIMPLE view is `len` contiguous bytes at `buf`, valid until release.
        unsafe { std::slice::from_raw_parts(self.view.buf as *const u8, self.len()) }
    }

    /// The first byte, for writing into a view made with `PyBUF_WRITABLE`.
    pub(crate) fn as_mut_ptr(&self) -> *mut u8 {
        self.view.buf as *mut u8
    }
}

impl Drop for ByteView {
    fn drop(&mut self) {
        // SAFETY: `view` was filled by a successful PyObject_GetBuffer and is released once.
        // Views are created and dropped with the GIL held (they live inside transport methods).
        unsafe { ffi::PyBuffer_Release(&mut self.view) }
    }
}
