//! `loop.time` replaced on the instance (`mock.patch.object(loop, "time")`, a common way for
//! tests to move a loop's clock): asyncio's loop reads its clock through `self.time()`, so
//! its timers, the poll timeout and `call_later`'s deadlines all follow the replacement.
//! ferroloop reads a native clock; to follow the same contract, setting or deleting the
//! instance attribute `time` is noticed here (`LoopCore.__setattr__`/`__delattr__`), and while
//! a replacement is set the loop's "now" comes from calling it. Without one (the normal
//! case), reading the clock costs one relaxed atomic load more.

use std::sync::atomic::Ordering;

use pyo3::prelude::*;
use pyo3::types::PyString;

use crate::event_loop::LoopCore;

impl LoopCore {
    /// The loop's "now": the native clock, or what the instance's replacement of `time`
    /// returns.
    pub(super) fn now(&self, py: Python<'_>) -> PyResult<f64> {
        if !self.time_replaced.load(Ordering::Relaxed) {
            return Ok(self.clock.now());
        }
        let replacement = self
            .time_replacement
            .borrow_mut(py)
            .as_ref()
            .map(|f| f.clone_ref(py).into_bound(py));
        // Held (and dropped) as a `Bound`: this runs from the raw entry points of
        // `fast_methods.rs` too, outside PyO3's trampolines, where dropping a `Py` would leak
        // the reference.
        match replacement {
            Some(time) => time.call0()?.extract::<f64>(),
            None => Ok(self.clock.now()),
        }
    }

    /// Notes an instance attribute set (`value`) or deleted (None): only `time` matters.
    pub(super) fn note_attribute(
        &self,
        py: Python<'_>,
        name: &Bound<'_, PyString>,
        value: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        if name.to_str()? != "time" {
            return Ok(());
        }
        let replacement = value.map(|v| v.clone().unbind());
        self.time_replaced
            .store(replacement.is_some(), Ordering::Relaxed);
        let previous = std::mem::replace(&mut *self.time_replacement.borrow_mut(py), replacement);
        crate::event_loop::handle::drop_attached(py, previous); // outside the borrow
        Ok(())
    }
}
