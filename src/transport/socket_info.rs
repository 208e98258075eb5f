//! What the socket transports report about their socket: `get_extra_info`'s computed entries,
//! the socket object's closing, and the ResourceWarning of a transport collected open.

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::interop::py_cache;

/// `get_extra_info(name, default)` of both transports: the creator's entries first; `socket`
/// and `sockname` are computed on first request and kept (idle connections do not carry them).
pub(crate) fn extra_info(
    py: Python<'_>,
    extra: &Bound<'_, PyDict>,
    sock: Option<&Py<PyAny>>,
    name: &Bound<'_, PyAny>,
    default: Option<Py<PyAny>>,
) -> PyResult<Py<PyAny>> {
    let default = default.unwrap_or_else(|| py.None());
    if let Some(value) = extra.get_item(name)? {
        return Ok(value.unbind());
    }
    let Ok(key) = name.extract::<&str>() else {
        return Ok(default);
    };
    let Some(sock) = sock else {
        return Ok(default);
    };
    let sock = sock.bind(py);
    let value = match key {
        "socket" => py_cache::transport_socket_type(py)?
            .bind(py)
            .call1((sock,))?,
        "sockname" => match sock.call_method0(intern!(py, "getsockname")) {
            Ok(addr) => addr,
            Err(err) if err.is_instance_of::<pyo3::exceptions::PyOSError>(py) => {
                py.None().into_bound(py)
            }
            Err(err) => return Err(err),
        },
        _ => return Ok(default),
    };
    extra.set_item(name, &value)?;
    Ok(value.unbind())
}

/// The ResourceWarning of a transport collected while open (from its `Drop`, where an
/// exception can only be reported as unraisable).
pub(crate) fn warn_unclosed(py: Python<'_>, kind: &str, fd: i32) {
    let message = std::ffi::CString::new(format!("unclosed transport <{kind} fd={fd} open>"))
        .unwrap_or_default();
    let category = py.get_type::<pyo3::exceptions::PyResourceWarning>();
    if let Err(err) = PyErr::warn(py, &category, &message, 1) {
        err.write_unraisable(py, None);
    }
}

/// Closes a socket object; if its Python-level `close` fails because the garbage collector
/// already cleared its slots (a transport collected in a cycle with its socket), through
/// `_socket.socket.close`, the C method.
pub(crate) fn close_socket_object(py: Python<'_>, sock: &Bound<'_, PyAny>) -> PyResult<()> {
    match sock.call_method0(intern!(py, "close")) {
        Ok(_) => Ok(()),
        Err(err) if err.is_instance_of::<pyo3::exceptions::PyAttributeError>(py) => {
            py_cache::raw_socket_close(py)?
                .bind(py)
                .getattr(intern!(py, "close"))?
                .call1((sock,))?;
            Ok(())
        }
        Err(err) => Err(err),
    }
}

/// Before the socket is closed: records `sockname` and `socket` in the extra info if nobody
/// asked for them yet, so that they read as asyncio's (which records them at creation) after
/// the connection is lost.
pub(crate) fn keep_socket_info(
    py: Python<'_>,
    extra: &Bound<'_, PyDict>,
    sock: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let sock = sock.clone().unbind();
    for key in [intern!(py, "sockname"), intern!(py, "socket")] {
        if !extra.contains(key)? {
            extra_info(py, extra, Some(&sock), key.as_any(), None)?;
        }
    }
    Ok(())
}
