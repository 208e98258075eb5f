//! Per-task run time, for `python -m ferroloop top`'s busiest tasks: while an inspector serves
//! (`_profile_tasks(True)`), the loop times each callback and adds its run time to the task it
//! steps or wakes (the callback is a method of the task: `TaskStepMethWrapper`, `__wakeup`, a
//! Python task subclass's bound method). Off (the default), the loop's only cost is the
//! per-batch flag it already reads for debug mode.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::event_loop::handle::Handle;
use crate::event_loop::LoopCore;
use crate::interop::py_cache;

/// Seconds of callback run time per task, by the task's address (`id(task)`).
#[derive(Default)]
pub(super) struct TaskCpu {
    /// `asyncio.Task` (the type tasks are checked against), while on.
    task_type: Option<Py<PyAny>>,
    /// Accumulated run time by task address.
    seconds: HashMap<usize, f64>,
}

impl LoopCore {
    /// True while callbacks are timed per task.
    #[inline]
    pub(super) fn profiling_tasks(&self) -> bool {
        self.profiling_tasks.load(Ordering::Relaxed)
    }

    /// Turns per-task timing on or off (off forgets the times).
    pub(super) fn profile_tasks(&self, py: Python<'_>, on: bool) -> PyResult<()> {
        let task_type = if on {
            Some(py_cache::asyncio_task_type(py)?.unbind())
        } else {
            None
        };
        let old = {
            let mut cpu = self.task_cpu.borrow_mut(py);
            if !on {
                cpu.seconds = HashMap::new();
            }
            std::mem::replace(&mut cpu.task_type, task_type)
        };
        drop(old);
        self.profiling_tasks.store(on, Ordering::Relaxed);
        Ok(())
    }

    /// The task `handle`'s callback steps or wakes, by address, if it is one.
    pub(super) fn stepped_task(&self, py: Python<'_>, handle: &Handle) -> Option<usize> {
        let owner = handle.callback_owner(py)?;
        let task_type = self
            .task_cpu
            .borrow_mut(py)
            .task_type
            .as_ref()?
            .clone_ref(py);
        owner
            .is_instance(task_type.bind(py))
            .unwrap_or(false)
            .then(|| owner.as_ptr() as usize)
    }

    /// Adds `seconds` of run time to the task at `address`.
    pub(super) fn add_task_time(&self, py: Python<'_>, address: usize, seconds: f64) {
        let mut cpu = self.task_cpu.borrow_mut(py);
        if cpu.task_type.is_some() {
            *cpu.seconds.entry(address).or_insert(0.0) += seconds.max(0.0);
        }
    }

    /// `{id(task): seconds}` for the tasks in `live` (ids of live tasks); the times of the
    /// others (finished tasks) are forgotten.
    pub(super) fn task_times<'py>(
        &self,
        py: Python<'py>,
        live: Vec<usize>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        let mut cpu = self.task_cpu.borrow_mut(py);
        let mut kept = HashMap::with_capacity(live.len());
        for address in live {
            if let Some(seconds) = cpu.seconds.get(&address) {
                kept.insert(address, *seconds);
                dict.set_item(address, *seconds)?;
            }
        }
        cpu.seconds = kept;
        Ok(dict)
    }
}
