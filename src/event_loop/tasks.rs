//! Futures and tasks made by the loop: `create_future` and `create_task` build asyncio's own
//! `Future` and `Task` (the C implementations) bound to this loop, or call the task factory.
//! While an inspector serves (`_track_task_births`), each new task's creation time is noted
//! for its age (one `None` check per task otherwise).

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::event_loop::LoopCore;
use crate::interop::py_cache;

/// Calls `callable(*positional, loop=loop)` by vectorcall (Future/Task construction).
fn call_with_loop_kw(
    py: Python<'_>,
    callable: &Py<PyAny>,
    positional: &[&Bound<'_, PyAny>],
    loop_obj: &Bound<'_, PyAny>,
    extra_kw: &[(&str, &Bound<'_, PyAny>)],
) -> PyResult<Py<PyAny>> {
    let kwargs = PyDict::new(py);
    kwargs.set_item(py_cache::str_loop(py), loop_obj)?;
    for (k, v) in extra_kw {
        kwargs.set_item(*k, *v)?;
    }
    let args = PyTuple::new(py, positional)?;
    Ok(callable.bind(py).call(args, Some(&kwargs))?.unbind())
}

impl LoopCore {
    /// `create_future()`: a new `asyncio.Future` bound to this loop.
    pub(super) fn new_future(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let future_type = py_cache::asyncio_future_type(py)?;
        call_with_loop_kw(py, &future_type, &[], slf.as_any(), &[])
    }

    /// `create_task(coro, name=, context=, **kwargs)`: a Task (or the task factory's object)
    /// scheduled on this loop. Python 3.14+ passes any other keyword (`eager_start=`) on to the
    /// Task or the factory, and gives the factory `name=` too; before 3.14 only `name` and
    /// `context` exist (another keyword is asyncio's TypeError).
    pub(super) fn new_task(
        slf: &Bound<'_, Self>,
        coro: &Bound<'_, PyAny>,
        name: Option<&Bound<'_, PyAny>>,
        context: Option<&Bound<'_, PyAny>>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let task = Self::make_task(slf, coro, name, context, kwargs)?;
        let py = slf.py();
        let this = slf.get();
        let births = this
            .task_births
            .borrow_mut(py)
            .as_ref()
            .map(|b| b.clone_ref(py));
        if let Some(births) = births {
            births.bind(py).set_item(&task, this.now(py)?)?;
        }
        Ok(task)
    }

    /// `new_task` without the birth record.
    fn make_task(
        slf: &Bound<'_, Self>,
        coro: &Bound<'_, PyAny>,
        name: Option<&Bound<'_, PyAny>>,
        context: Option<&Bound<'_, PyAny>>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let kwargs = kwargs.filter(|k| !k.is_empty());
        let passes_keywords = py.version_info() >= (3, 14);
        if let (Some(extra), false) = (kwargs, passes_keywords) {
            let first = extra.keys().get_item(0)?;
            return Err(PyTypeError::new_err(format!(
                "create_task() got an unexpected keyword argument '{first}'"
            )));
        }
        let this = slf.get();
        this.check_closed()?;
        let factory = this
            .task_factory
            .borrow_mut(py)
            .as_ref()
            .map(|f| f.clone_ref(py));
        let name = name.filter(|n| !n.is_none());
        let context = context.filter(|c| !c.is_none());
        match factory {
            None => {
                let mut extra: Vec<(&str, &Bound<'_, PyAny>)> = Vec::with_capacity(2);
                if let Some(n) = name {
                    extra.push(("name", n));
                }
                if let Some(c) = context {
                    extra.push(("context", c));
                }
                let task_type = py_cache::asyncio_task_type(py)?;
                match kwargs {
                    None => call_with_loop_kw(py, &task_type, &[coro], slf.as_any(), &extra),
                    Some(more) => {
                        let all = more.copy()?;
                        all.set_item(py_cache::str_loop(py), slf)?;
                        for (key, value) in extra {
                            all.set_item(key, value)?;
                        }
                        Ok(task_type.bind(py).call((coro,), Some(&all))?.unbind())
                    }
                }
            }
            Some(factory) => {
                let factory = factory.bind(py);
                let all = match kwargs {
                    Some(more) => more.copy()?,
                    None => PyDict::new(py),
                };
                if let Some(c) = context {
                    all.set_item("context", c)?;
                }
                if let (Some(n), true) = (name, passes_keywords) {
                    all.set_item("name", n)?;
                }
                let task = if all.is_empty() {
                    factory.call1((slf, coro))?
                } else {
                    factory.call((slf, coro), Some(&all))?
                };
                if let (Some(n), false) = (name, passes_keywords) {
                    if let Ok(set_name) = task.getattr("set_name") {
                        set_name.call1((n,))?;
                    }
                }
                Ok(task.unbind())
            }
        }
    }

    /// `set_task_factory(factory)`: a callable or None.
    pub(super) fn replace_task_factory(
        &self,
        py: Python<'_>,
        factory: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        if !factory.is_none() && !factory.is_callable() {
            return Err(PyTypeError::new_err(
                "task factory must be a callable or None",
            ));
        }
        let new = if factory.is_none() {
            None
        } else {
            Some(factory.clone().unbind())
        };
        let old = std::mem::replace(&mut *self.task_factory.borrow_mut(py), new);
        drop(old);
        Ok(())
    }

    /// Starts (a mapping) or stops (None) noting each new task's creation time in `births`.
    pub(super) fn track_task_births(&self, py: Python<'_>, births: &Bound<'_, PyAny>) {
        let new = (!births.is_none()).then(|| births.clone().unbind());
        let old = std::mem::replace(&mut *self.task_births.borrow_mut(py), new);
        drop(old);
    }

    /// The task factory, or None.
    pub(super) fn current_task_factory(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.task_factory
            .borrow_mut(py)
            .as_ref()
            .map(|f| f.clone_ref(py))
    }
}
