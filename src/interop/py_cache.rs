//! Python objects the loop looks up once per interpreter and keeps: asyncio's public types,
//! helpers it calls on cold paths, and interned attribute names.

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyString, PyTuple};

/// Imports `module` and returns its attribute `name`, caching it in `cell`.
fn cached_attr<'py>(
    py: Python<'py>,
    cell: &'static PyOnceLock<Py<PyAny>>,
    module: &str,
    name: &str,
) -> PyResult<&'static Py<PyAny>> {
    cell.get_or_try_init(py, || {
        Ok::<_, PyErr>(py.import(module)?.getattr(name)?.unbind())
    })
}

macro_rules! cached {
    ($(#[$doc:meta])* $fn_name:ident, $module:literal, $attr:literal) => {
        $(#[$doc])*
        pub fn $fn_name(py: Python<'_>) -> PyResult<&'static Py<PyAny>> {
            static CELL: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
            cached_attr(py, &CELL, $module, $attr)
        }
    };
}

cached!(
    /// `asyncio.Handle`, reported as the `__class__` of plain handles.
    asyncio_handle_type, "asyncio.events", "Handle");
cached!(
    /// `asyncio.TimerHandle`, reported as the `__class__` of timer handles.
    asyncio_timer_handle_type, "asyncio.events", "TimerHandle");
cached!(
    /// The `asyncio.futures` module (its `Future` is read at each use, see below).
    asyncio_futures_module, "asyncio", "futures");
cached!(
    /// The `asyncio.tasks` module (its `Task` is read at each use, see below).
    asyncio_tasks_module, "asyncio", "tasks");

/// `module.name`, read from the module's dict (one dict lookup): the attribute protocol
/// (a module `__getattr__`, a replaced `__class__`, the missing name's error) only when the
/// dict does not have it.
fn module_attr<'py>(
    py: Python<'py>,
    module: &Py<PyAny>,
    name: &Bound<'py, PyString>,
) -> PyResult<Bound<'py, PyAny>> {
    // SAFETY: `module` is a live object and the GIL is held; `PyModule_GetDict` of an exact
    // module returns a borrowed dict (never NULL for a module), the item is borrowed from it
    // and turned into a new reference at once.
    unsafe {
        if ffi::PyModule_CheckExact(module.as_ptr()) != 0 {
            let dict = ffi::PyModule_GetDict(module.as_ptr());
            let item = ffi::PyDict_GetItemWithError(dict, name.as_ptr());
            if !item.is_null() {
                return Ok(Bound::from_borrowed_ptr(py, item));
            }
            if !ffi::PyErr_Occurred().is_null() {
                return Err(PyErr::fetch(py));
            }
        }
    }
    module.bind(py).getattr(name)
}

/// `asyncio.futures.Future` as it is now: read at each `create_future`, as asyncio does, so
/// that a program (or CPython's tests) swapping in the pure-Python Future is followed.
pub fn asyncio_future_type(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    module_attr(py, asyncio_futures_module(py)?, pyo3::intern!(py, "Future"))
}

/// `asyncio.tasks.Task` as it is now: read at each `create_task`, as asyncio does.
pub fn asyncio_task_type(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    module_attr(py, asyncio_tasks_module(py)?, pyo3::intern!(py, "Task"))
}

/// The running interpreter is Python `major.minor` or later. `py.version_info()` parses
/// `sys.version` at each call (~600 instructions): hot paths ask this instead.
pub fn python_at_least(major: u8, minor: u8) -> bool {
    // SAFETY: `Py_Version` is a constant of the interpreter (3.11+), set before any extension
    // module loads.
    let version = unsafe { ffi::Py_Version };
    (version >> 16) >= ((major as std::ffi::c_ulong) << 8 | minor as std::ffi::c_ulong)
}

/// The keyword names `("loop",)`, for `Future(loop=...)` and `Task(coro, loop=...)` by
/// vectorcall.
pub fn loop_kwnames(py: Python<'_>) -> &Bound<'_, PyTuple> {
    static CELL: PyOnceLock<Py<PyTuple>> = PyOnceLock::new();
    CELL.get_or_init(py, || {
        PyTuple::new(py, [str_loop(py)])
            .expect("a one-item tuple")
            .unbind()
    })
    .bind(py)
}

cached!(
    /// asyncio's helper that renders `callback(args)` with its source location.
    format_callback_source, "asyncio.format_helpers", "_format_callback_source");
cached!(
    /// asyncio's helper that captures a handle's creation stack in debug mode.
    extract_stack, "asyncio.format_helpers", "extract_stack");
/// asyncio's coroutine-function test, the slow path of the callback check: the private
/// `asyncio.coroutines._iscoroutinefunction` where it exists (3.14+, whose public
/// `iscoroutinefunction` warns that it is deprecated; asyncio itself calls the private one),
/// else `iscoroutinefunction`.
pub fn iscoroutinefunction(py: Python<'_>) -> PyResult<&'static Py<PyAny>> {
    static CELL: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    CELL.get_or_try_init(py, || {
        let module = py.import("asyncio.coroutines")?;
        let test = match module.getattr("_iscoroutinefunction") {
            Ok(private) => private,
            Err(_) => module.getattr("iscoroutinefunction")?,
        };
        Ok::<_, PyErr>(test.unbind())
    })
}
cached!(
    /// `asyncio.iscoroutine`.
    iscoroutine, "asyncio.coroutines", "iscoroutine");
cached!(
    /// `functools.partial`, unwrapped by the callback check.
    functools_partial, "functools", "partial");

cached!(
    /// `asyncio.Transport`, reported as the `__class__` of stream and write pipe transports.
    asyncio_transport_type, "asyncio.transports", "Transport");
cached!(
    /// `asyncio.ReadTransport`, reported as the `__class__` of read pipe transports.
    asyncio_read_transport_type, "asyncio.transports", "ReadTransport");
cached!(
    /// `asyncio.BufferedProtocol`: transports read into such a protocol's own buffer.
    asyncio_buffered_protocol_type, "asyncio.protocols", "BufferedProtocol");
cached!(
    /// The `asyncio` logger, which transports log through.
    asyncio_logger, "asyncio.log", "logger");
cached!(
    /// asyncio's helper that resolves a waiter unless it was cancelled.
    set_result_unless_cancelled, "asyncio.futures", "_set_result_unless_cancelled");
cached!(
    /// `asyncio.trsock.TransportSocket`, the socket wrapper of `get_extra_info('socket')`.
    transport_socket_type, "asyncio.trsock", "TransportSocket");

cached!(
    /// What datagram transports report as their `__class__`: a subclass of both
    /// `asyncio.DatagramTransport` and `asyncio.Transport`, as asyncio's own transport is.
    datagram_transport_class, "ferroloop._transports", "DatagramTransportType");

cached!(
    /// `_socket.socket.close`, the C method: closes a socket object even when the garbage
    /// collector already cleared the Python-level slots `socket.socket.close` needs.
    raw_socket_close, "_socket", "socket");

/// Interned `"loop"`, the keyword every Future/Task constructor call passes.
pub fn str_loop(py: Python<'_>) -> &Bound<'_, PyString> {
    pyo3::intern!(py, "loop")
}
