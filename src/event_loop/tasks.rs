//! Futures and tasks made by the loop: `create_future` and `create_task` build asyncio's own
//! `Future` and `Task` (the C implementations) bound to this loop, or call the task factory.
//! While an inspector serves (`_track_task_births`), each new task's creation time is noted
//! for its age (one `None` check per task otherwise).

use pyo3::exceptions::PyTypeError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::event_loop::LoopCore;
use crate::interop::py_cache;

/// Calls `callable(*positional, loop=loop)` by vectorcall (Future/Task construction): no
/// argument tuple or keyword dict of ours, and every reference held as a `Bound` (the raw
/// `create_task`/`create_future` entry points call this outside PyO3's trampoline, where a
/// dropped `Py` would leak, see `fast_methods.rs`).
pub(crate) fn call_with_loop<'py>(
    callable: &Bound<'py, PyAny>,
    positional: Option<&Bound<'py, PyAny>>,
    loop_obj: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = callable.py();
    let kwnames = py_cache::loop_kwnames(py);
    let (stack, nargs) = match positional {
        Some(first) => ([first.as_ptr(), loop_obj.as_ptr()], 1),
        None => ([loop_obj.as_ptr(), std::ptr::null_mut()], 0),
    };
    // SAFETY: `stack` holds `nargs` positional then one keyword value, all borrowed references
    // kept alive by the caller for the call; `kwnames` is a tuple of one string; the GIL is held.
    unsafe {
        let result =
            ffi::PyObject_Vectorcall(callable.as_ptr(), stack.as_ptr(), nargs, kwnames.as_ptr());
        Bound::from_owned_ptr_or_err(py, result)
    }
}

/// Calls `callable(*positional, loop=loop, **extra_kw)` (Task construction with `name=` or
/// `context=`).
fn call_with_loop_kw(
    py: Python<'_>,
    callable: &Bound<'_, PyAny>,
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
    Ok(callable.call(args, Some(&kwargs))?.unbind())
}

impl LoopCore {
    /// `create_future()`: a new `asyncio.Future` bound to this loop.
    pub(super) fn new_future(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let future_type = py_cache::asyncio_future_type(py)?;
        Ok(call_with_loop(&future_type, None, slf.as_any())?.unbind())
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
        let passes_keywords = py_cache::python_at_least(3, 14);
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
                    None if extra.is_empty() => {
                        Ok(call_with_loop(&task_type, Some(coro), slf.as_any())?.unbind())
                    }
                    None => call_with_loop_kw(py, &task_type, &[coro], slf.as_any(), &extra),
                    Some(more) => {
                        let all = more.copy()?;
                        all.set_item(py_cache::str_loop(py), slf)?;
                        for (key, value) in extra {
                            all.set_item(key, value)?;
                        }
                        Ok(task_type.call((coro,), Some(&all))?.unbind())
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

    /// `create_task(coro)` builds asyncio's Task itself: the loop is open, has no task
    /// factory, and no inspector is noting task births (the fast entry point's condition).
    pub(crate) fn makes_plain_tasks(&self, py: Python<'_>) -> bool {
        !self.closed.load(std::sync::atomic::Ordering::Relaxed)
            && self.task_factory.borrow_mut(py).is_none()
            && self.task_births.borrow_mut(py).is_none()
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
