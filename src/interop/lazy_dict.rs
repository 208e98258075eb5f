//! Instance dictionaries created only when used.
//!
//! The native transports accept attributes set by programs (`transport.foo = 1`, as asyncio's
//! Python transports do), so their classes have a `__dict__` slot. CPython 3.11 and 3.12 fill
//! that slot with an empty dict when the object is created (`object.__new__` calls
//! `_PyObject_InitializeDict`), 64 bytes per connection that idle servers pay for nothing.
//! An empty slot behaves the same: attribute lookup skips it, and the first `setattr` or
//! `__dict__` access creates the dict (`PyObject_GenericSetAttr`, `PyObject_GenericGetDict`).
//!
//! Only on 3.12+, because the slot also decides how the interpreter specialises method calls
//! on the object (`transport.write(data)`): 3.12's `LOAD_ATTR_METHOD_LAZY_DICT` requires an
//! empty slot (an eager dict deoptimises every such call: TCP echo measured 2,389 → 2,146
//! instructions per request without it), while 3.11's `LOAD_METHOD_WITH_DICT` requires a dict
//! (without it: 1,897 → 1,981). 3.13 creates no eager dict.

use pyo3::ffi;
use pyo3::prelude::*;

use crate::interop::py_cache::python_at_least;

/// Drops the empty instance dict of `obj` that nobody else holds, leaving the slot empty
/// (Python 3.12+; see the module's doc).
pub fn release_unused_dict(obj: &Bound<'_, PyAny>) {
    if !python_at_least(3, 12) {
        return;
    }
    let Some(slot) = dict_slot(obj) else {
        return;
    };
    // SAFETY: the GIL is held (`obj` is bound) and `slot` is the object's dict slot (see
    // `dict_slot`). The dict is released only when it is an exact, empty dict that the slot
    // alone references, so no other code can observe it go; the slot is cleared before the
    // release, as `Py_CLEAR` does.
    unsafe {
        let dict = *slot;
        if dict.is_null()
            || ffi::PyDict_CheckExact(dict) == 0
            || ffi::PyDict_Size(dict) != 0
            || ffi::Py_REFCNT(dict) != 1
        {
            return;
        }
        *slot = std::ptr::null_mut();
        ffi::Py_DECREF(dict);
    }
}

/// The value `name` has in `obj`'s own instance dict, if the object has a dict and the name
/// is in it: an attribute a program set on this one object (`transport.write = ...`, as
/// `unittest.mock.patch.object` does). Never creates the dict.
pub fn instance_attribute<'py>(
    obj: &Bound<'py, PyAny>,
    name: &Bound<'py, PyAny>,
) -> Option<Bound<'py, PyAny>> {
    let slot = dict_slot(obj)?;
    // SAFETY: the GIL is held (`obj` is bound) and `slot` is the object's dict slot, null or a
    // dict (see `dict_slot`). `PyDict_GetItemWithError` returns a borrowed reference, which is
    // turned into an owned one before anything else runs.
    unsafe {
        let dict = *slot;
        if dict.is_null() || ffi::PyDict_Size(dict) == 0 {
            return None;
        }
        let value = ffi::PyDict_GetItemWithError(dict, name.as_ptr());
        if value.is_null() {
            // A lookup error (an unhashable key cannot happen for a str name) is dropped: the
            // class attribute is used, as before.
            ffi::PyErr_Clear();
            return None;
        }
        Some(Bound::from_borrowed_ptr(obj.py(), value))
    }
}

/// The address of `obj`'s instance-dict slot (null or a dict, PyO3's `#[pyclass(dict)]`
/// layout), or None when its type has no dict slot at a fixed offset.
fn dict_slot(obj: &Bound<'_, PyAny>) -> Option<*mut *mut ffi::PyObject> {
    // SAFETY: the GIL is held (`obj` is bound). `tp_dictoffset` is read from the object's own
    // type; a positive offset names a `PyObject *` slot inside the object's allocation.
    unsafe {
        let offset = (*ffi::Py_TYPE(obj.as_ptr())).tp_dictoffset;
        if offset <= 0 {
            return None;
        }
        Some(
            obj.as_ptr()
                .cast::<u8>()
                .offset(offset)
                .cast::<*mut ffi::PyObject>(),
        )
    }
}
