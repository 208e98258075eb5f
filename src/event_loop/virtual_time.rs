//! Virtual time on the loop (issue #12): switching it on, `advance_time`, and the count of
//! executor jobs the clock must not jump past. The clock itself and the pure planning of a
//! wait are in `core::clock`; the jump happens in `iteration.rs`.

use std::sync::atomic::Ordering;

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;

use crate::core::clock::VirtualTimeError;
use crate::event_loop::LoopCore;

impl LoopCore {
    /// Switches to virtual time; refused once the loop runs (its timers are on the real clock).
    pub(super) fn enable_virtual_time(&self, autojump_threshold: f64) -> PyResult<()> {
        if self.is_loop_running() {
            return Err(PyRuntimeError::new_err(
                "virtual time must be chosen before the loop runs",
            ));
        }
        self.clock
            .enable_virtual(autojump_threshold)
            .map_err(|_| PyValueError::new_err("autojump_threshold must be >= 0"))
    }

    /// `loop.advance_time(seconds)`: moves the virtual clock, and wakes the loop so that it
    /// looks at its timers again (it may be waiting with no end in sight).
    pub(super) fn advance_virtual_time(&self, seconds: f64) -> PyResult<()> {
        if !self.clock.is_virtual() {
            return Err(PyRuntimeError::new_err(
                "advance_time() needs a loop made with virtual_time=True",
            ));
        }
        self.clock.advance(seconds).map_err(|err| match err {
            VirtualTimeError::BadStep if seconds < 0.0 => {
                PyValueError::new_err("advance_time() cannot move time backwards")
            }
            _ => PyValueError::new_err("advance_time() needs a finite number of seconds"),
        })?;
        if self.is_loop_running() && !self.is_loop_closed() {
            // A failed wake only delays the timers to the next event: nothing to report.
            let _ = self.poller.wake();
        }
        Ok(())
    }

    /// Adds `delta` (+1 started, -1 finished) to the outstanding executor jobs.
    pub(super) fn count_outstanding_work(&self, delta: i32) {
        if delta >= 0 {
            self.outstanding_work
                .fetch_add(delta as usize, Ordering::Relaxed);
        } else {
            let _ = self
                .outstanding_work
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    Some(n.saturating_sub(delta.unsigned_abs() as usize))
                });
        }
    }
}
