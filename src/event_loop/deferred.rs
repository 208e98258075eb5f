//! Work that waits for the end of the current iteration: a transport asks the loop to run one
//! of its native methods once the callbacks of this iteration have run, before the loop polls
//! again. The datagram transport uses it to send the replies of one iteration with a single
//! `sendmmsg(2)` instead of one `sendto(2)` each.
//!
//! Only code running inside the loop's callbacks may defer (`defer_to_iteration_end` says
//! no otherwise): a `sendto` made while the loop is not running callbacks (between
//! `run_until_complete` calls, from another thread while the loop waits) must act at once, as
//! nothing would run the deferred work soon.

use std::sync::atomic::Ordering;

use pyo3::exceptions::{PyKeyboardInterrupt, PySystemExit};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::event_loop::handle::NativeMethod;
use crate::event_loop::LoopCore;

impl LoopCore {
    /// Runs `method` on `target` at the end of this iteration, if the loop is running its
    /// callbacks now; false (nothing registered) otherwise. The caller registers a target once
    /// per iteration (it knows whether it has work waiting already).
    pub(crate) fn defer_to_iteration_end(
        &self,
        py: Python<'_>,
        target: &Bound<'_, PyAny>,
        method: &'static NativeMethod,
    ) -> bool {
        if !self.running_callbacks.load(Ordering::Relaxed) {
            return false;
        }
        self.deferred
            .borrow_mut(py)
            .push((target.clone().unbind(), method));
        true
    }

    /// Runs the work deferred during this iteration, in the order it was deferred (work
    /// deferred meanwhile runs too). An exception is reported as a callback's would be:
    /// SystemExit and KeyboardInterrupt leave the loop once everything has run.
    ///
    /// Inlined: most iterations deferred nothing, and then this is one look at the list
    /// (the work itself runs out of line).
    #[inline(always)]
    pub(super) fn run_deferred(&self, slf: &Bound<'_, Self>) -> PyResult<()> {
        if self.deferred.borrow_mut(slf.py()).is_empty() {
            return Ok(());
        }
        self.run_deferred_work(slf)
    }

    /// `run_deferred` when work was deferred.
    #[inline(never)]
    fn run_deferred_work(&self, slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let mut exit = None;
        loop {
            let work = std::mem::take(&mut *self.deferred.borrow_mut(py));
            if work.is_empty() {
                break;
            }
            for (target, method) in work {
                let Err(err) = (method.call)(target.bind(py)) else {
                    continue;
                };
                if err.is_instance_of::<PyKeyboardInterrupt>(py)
                    || err.is_instance_of::<PySystemExit>(py)
                {
                    exit.get_or_insert(err);
                    continue;
                }
                let context = PyDict::new(py);
                let target = target.bind(py);
                context.set_item(
                    "message",
                    format!(
                        "Exception in callback {}.{}()",
                        target.get_type().qualname()?,
                        method.name
                    ),
                )?;
                context.set_item("exception", err.into_value(py))?;
                context.set_item("transport", target)?;
                slf.call_method1(pyo3::intern!(py, "call_exception_handler"), (context,))?;
            }
        }
        exit.map_or(Ok(()), Err)
    }
}
