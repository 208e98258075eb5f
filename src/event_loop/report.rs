//! Reporting what goes wrong in callbacks, as asyncio does: an exception raised by a callback
//! goes to the loop's exception handler (`call_exception_handler`, with the handle and, in
//! debug mode, where it was created), except SystemExit and KeyboardInterrupt, which leave the
//! loop; in debug mode, a callback slower than `slow_callback_duration` is logged.

use pyo3::exceptions::{PyKeyboardInterrupt, PySystemExit};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::event_loop::handle::Handle;
use crate::event_loop::LoopCore;
use crate::interop::py_cache;

impl LoopCore {
    /// Sends an exception raised by a callback to the loop's exception handler; SystemExit and
    /// KeyboardInterrupt propagate out of the loop instead, as in asyncio.
    #[cold]
    #[inline(never)]
    pub(super) fn report_callback_error(
        &self,
        slf: &Bound<'_, Self>,
        handle: &Py<Handle>,
        err: PyErr,
    ) -> PyResult<()> {
        let py = slf.py();
        if err.is_instance_of::<PyKeyboardInterrupt>(py) || err.is_instance_of::<PySystemExit>(py) {
            return Err(err);
        }
        let context = PyDict::new(py);
        let described = match handle.get().callback_source(py)? {
            Some(described) => described,
            // A callback that cancelled its own handle has released it (asyncio's cancel()
            // clears `_callback` and `_args`): asyncio then formats the cleared pair, `None()`.
            None => py_cache::format_callback_source(py)?
                .bind(py)
                .call1((py.None(), py.None()))?
                .extract::<String>()?,
        };
        context.set_item("message", format!("Exception in callback {described}"))?;
        // `into_value` attaches the traceback to the exception (3.11 keeps it apart), so the
        // handler logs where the callback failed.
        context.set_item("exception", err.into_value(py))?;
        context.set_item("handle", handle.clone_ref(py))?;
        if let Ok(tb) = handle.bind(py).getattr("_source_traceback") {
            if !tb.is_none() {
                context.set_item("source_traceback", tb)?;
            }
        }
        slf.call_method1(pyo3::intern!(py, "call_exception_handler"), (context,))?;
        Ok(())
    }

    /// Debug mode: logs callbacks that ran longer than `loop.slow_callback_duration`.
    #[inline(never)]
    pub(super) fn warn_if_slow(
        &self,
        slf: &Bound<'_, Self>,
        handle: &Py<Handle>,
        took: f64,
    ) -> PyResult<()> {
        let py = slf.py();
        let limit: f64 = slf
            .getattr(pyo3::intern!(py, "slow_callback_duration"))
            .and_then(|v| v.extract())
            .unwrap_or(0.1);
        if took >= limit {
            let logger = py.import("asyncio.log")?.getattr("logger")?;
            logger.call_method1(
                "warning",
                ("Executing %s took %.3f seconds", handle.clone_ref(py), took),
            )?;
        }
        Ok(())
    }
}
