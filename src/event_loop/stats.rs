//! `loop.stats()`: the loop's metrics as a dict, and the iteration's hooks that feed them
//! (`core::loop_stats::LoopMeter`, kept in the loop's queues). The hooks cost two tick counter
//! readings (`core::ticks`) around each blocking poll (counted in `dispatch_io`, under the
//! borrow it takes anyway) and a few additions per batch of ready callbacks; a clock read
//! per batch only in the sampled stretches where the lag is measured; nothing per callback
//! but a count.

use std::sync::atomic::Ordering;

use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::core::clock::monotonic_seconds;
use crate::core::ticks::Reading;
use crate::event_loop::LoopCore;

/// What one batch of ready callbacks did, counted by `run_batch`.
#[derive(Clone, Copy)]
pub(super) struct BatchTally {
    /// Handles taken from the ready queue.
    pub(super) dequeued: usize,
    /// Of those, the ones skipped (cancelled): the others ran.
    pub(super) skipped: usize,
}

impl LoopCore {
    /// `run_forever` starts: what is queued waits from now on.
    pub(super) fn meter_run_start(&self, py: Python<'_>) {
        self.queues.borrow_mut(py).meter.run_started(Reading::now());
    }

    /// A batch of `todo` (at least 1) ready callbacks ended (maybe early, on an error): counts, and a
    /// clock read only in a sampled stretch (or before one).
    #[inline]
    pub(super) fn meter_batch_end(&self, py: Python<'_>, todo: usize, tally: BatchTally) {
        let mut queues = self.queues.borrow_mut(py);
        if queues
            .meter
            .batch_counted(todo, (tally.dequeued - tally.skipped) as u64)
        {
            let queued = queues.ready.len();
            queues
                .meter
                .batch_measured(todo, tally.dequeued, queued, monotonic_seconds());
        }
    }

    /// `run_forever` ends: the run's busy time is kept.
    pub(super) fn meter_run_end(&self, py: Python<'_>) {
        if let Some(mut queues) = self.queues.try_borrow_mut(py) {
            queues.meter.run_ended(Reading::now());
        }
    }

    /// The native part of `loop.stats()`: every key but `tasks`.
    pub(super) fn stats_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        let newly_cancelled = self.cancelled_timers.load(Ordering::Relaxed);
        let (readers, writers) = {
            let queues = self.queues.borrow_mut(py);
            let meter = &queues.meter;
            dict.set_item("iterations", self.stats.iterations.load(Ordering::Relaxed))?;
            dict.set_item("callbacks_run", meter.callbacks_run)?;
            dict.set_item("io_events", meter.io_events)?;
            dict.set_item("timers_fired", meter.timers_fired)?;
            let (now, running) = (Reading::now(), self.is_loop_running());
            dict.set_item("busy_time", meter.busy_time(now, running))?;
            dict.set_item("idle_time", meter.idle_time(now, running))?;
            let lag = meter.lag.summary();
            let lag_dict = PyDict::new(py);
            lag_dict.set_item("p50", lag.p50)?;
            lag_dict.set_item("p99", lag.p99)?;
            lag_dict.set_item("max", lag.max)?;
            dict.set_item("lag", lag_dict)?;
            let timers = queues
                .timers
                .len()
                .saturating_sub(queues.timers.cancelled_count() + newly_cancelled);
            dict.set_item("timers", timers)?;
            let readers = queues
                .watched
                .values()
                .filter(|w| w.reader.is_some())
                .count();
            let writers = queues
                .watched
                .values()
                .filter(|w| w.writer.is_some())
                .count();
            (readers, writers)
        };
        dict.set_item("transports", self.transports.borrow_mut(py).len())?;
        dict.set_item("readers", readers)?;
        dict.set_item("writers", writers)?;
        Ok(dict)
    }
}
