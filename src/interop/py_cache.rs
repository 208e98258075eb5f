//! Python objects the loop looks up once per interpreter and keeps: asyncio's public types,
//! helpers it calls on cold paths, and interned attribute names.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyString;

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

/// `asyncio.futures.Future` as it is now: read at each `create_future`, as asyncio does, so
/// that a program (or CPython's tests) swapping in the pure-Python Future is followed.
pub fn asyncio_future_type(py: Python<'_>) -> PyResult<Py<PyAny>> {
    let module = asyncio_futures_module(py)?.bind(py);
    Ok(module.getattr(pyo3::intern!(py, "Future"))?.unbind())
}

/// `asyncio.tasks.Task` as it is now: read at each `create_task`, as asyncio does.
pub fn asyncio_task_type(py: Python<'_>) -> PyResult<Py<PyAny>> {
    let module = asyncio_tasks_module(py)?.bind(py);
    Ok(module.getattr(pyo3::intern!(py, "Task"))?.unbind())
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
