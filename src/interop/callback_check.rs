//! asyncio's validation of callbacks passed to `call_soon`/`call_later`/`call_at`/
//! `run_in_executor`: coroutine functions and coroutines are refused with a TypeError, as are
//! non-callables.
//!
//! asyncio checks in debug mode only, but then on every scheduled callback (each Task step,
//! each Future callback), so the common cases are decided natively: C-level callables (Task
//! step wrappers, bound C methods, builtins) can never be coroutine functions, and Python
//! functions are decided from their code flags. Only instances of Python classes fall back to
//! `asyncio.iscoroutinefunction`.

use pyo3::exceptions::PyTypeError;
use pyo3::ffi;
use pyo3::prelude::*;

use crate::interop::py_cache;

/// `CO_COROUTINE` from CPython's code object flags.
const CO_COROUTINE: i32 = 0x0080;

/// The head of CPython's `PyMethodObject` (a bound Python method), stable across 3.11–3.13.
#[repr(C)]
struct MethodObjectHead {
    ob_base: ffi::PyObject,
    im_func: *mut ffi::PyObject,
}

/// The head of CPython's `PyCodeObject` up to `co_flags`: the same in 3.11, 3.12 and 3.13.
#[repr(C)]
struct CodeObjectHead {
    ob_base: ffi::PyVarObject,
    co_consts: *mut ffi::PyObject,
    co_names: *mut ffi::PyObject,
    co_exceptiontable: *mut ffi::PyObject,
    co_flags: i32,
}

extern "C" {
    /// `types.MethodType`, not declared by pyo3-ffi.
    static mut PyMethod_Type: ffi::PyTypeObject;
}

/// Reads a function's code flags: directly from the code object on the CPython versions
/// whose layout we know, else through `__code__.co_flags`.
fn code_flags(py: Python<'_>, function: &Bound<'_, PyAny>) -> PyResult<i32> {
    static KNOWN_CODE_LAYOUT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let known = *KNOWN_CODE_LAYOUT.get_or_init(|| {
        // `version_info` formats the version string: read it once, not per callback.
        let version = py.version_info();
        version.major == 3 && (11..14).contains(&version.minor)
    });
    if known {
        // SAFETY: `function` is a PyFunctionObject (checked by the caller); its code object
        // is alive while the function is, and on 3.11–3.13 starts with `CodeObjectHead`.
        unsafe {
            let code = ffi::PyFunction_GetCode(function.as_ptr());
            if !code.is_null() {
                return Ok((*(code as *const CodeObjectHead)).co_flags);
            }
        }
    }
    function
        .getattr(pyo3::intern!(py, "__code__"))?
        .getattr(pyo3::intern!(py, "co_flags"))?
        .extract()
}

/// Raises asyncio's TypeError if `callback` is a coroutine (function) or not callable.
pub fn check_callback(py: Python<'_>, callback: &Bound<'_, PyAny>, method: &str) -> PyResult<()> {
    if !callback.is_callable() {
        if py_cache::iscoroutine(py)?
            .bind(py)
            .call1((callback,))?
            .is_truthy()?
        {
            return Err(coroutines_refused(method));
        }
        return Err(PyTypeError::new_err(format!(
            "a callable object was expected by {method}(), got {}",
            callback.repr()?
        )));
    }
    if is_coroutine_function(py, callback)? {
        return Err(coroutines_refused(method));
    }
    Ok(())
}

fn coroutines_refused(method: &str) -> PyErr {
    PyTypeError::new_err(format!("coroutines cannot be used with {method}()"))
}

/// `asyncio.iscoroutinefunction(obj)`, decided natively where the answer is certain.
fn is_coroutine_function(py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<bool> {
    let mut current = obj.clone();
    for _ in 0..32 {
        let ptr = current.as_ptr();
        // SAFETY: `ptr` is a live object (owned by `current`); these are type checks and
        // borrowed-field reads under the GIL.
        unsafe {
            if ffi::Py_TYPE(ptr) == &raw mut PyMethod_Type {
                let func = (*(ptr as *const MethodObjectHead)).im_func;
                current = Bound::from_borrowed_ptr(py, func);
                continue;
            }
            if ffi::PyFunction_Check(ptr) != 0 {
                if code_flags(py, &current)? & CO_COROUTINE != 0 {
                    return Ok(true);
                }
                // Functions marked by `asyncio.coroutine`-style or `inspect.markcoroutinefunction`
                // carry a marker in their __dict__; only then is the slow check needed.
                let dict = (*(ptr as *mut ffi::PyFunctionObject)).func_dict;
                if dict.is_null() || ffi::PyDict_Size(dict) == 0 {
                    return Ok(false);
                }
                return slow_check(py, obj);
            }
            let ty = ffi::Py_TYPE(ptr);
            if ty.cast() == py_cache::functools_partial(py)?.as_ptr() {
                current = current.getattr(pyo3::intern!(py, "func"))?;
                continue;
            }
            if (*ty).tp_flags & ffi::Py_TPFLAGS_HEAPTYPE == 0 {
                // A static (C) type other than function/method/partial: builtins, method
                // wrappers, the C Task's step/wakeup wrappers. Never a coroutine function.
                return Ok(false);
            }
        }
        return slow_check(py, obj);
    }
    slow_check(py, obj)
}

fn slow_check(py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<bool> {
    py_cache::iscoroutinefunction(py)?
        .bind(py)
        .call1((obj,))?
        .is_truthy()
}
