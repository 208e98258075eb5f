//! The loop's registry of open transports by descriptor: `add_reader` & co. refuse a
//! descriptor a transport uses (asyncio's check, made by the Python wrappers through
//! `_transport_for_fd`).

use pyo3::ffi;
use pyo3::prelude::*;

use crate::event_loop::LoopCore;

impl LoopCore {
    /// Records `transport` as the user of `fd` (see `LoopCore::transports`).
    pub(crate) fn register_transport(&self, py: Python<'_>, fd: i32, transport: &Bound<'_, PyAny>) {
        self.transports
            .borrow_mut(py)
            .insert(fd, transport.as_ptr() as usize);
    }

    /// Forgets `transport` as the user of `fd` (it is closing or being deallocated).
    pub(crate) fn unregister_transport(
        &self,
        py: Python<'_>,
        fd: i32,
        transport: *mut ffi::PyObject,
    ) {
        let mut transports = self.transports.borrow_mut(py);
        if transports.get(&fd) == Some(&(transport as usize)) {
            transports.remove(&fd);
        }
    }

    /// The open transport using descriptor `fd`, if any.
    pub(super) fn transport_for_fd(&self, py: Python<'_>, fd: i32) -> Option<Py<PyAny>> {
        let address = *self.transports.borrow_mut(py).get(&fd)?;
        // SAFETY: an address in `transports` belongs to a live transport (entries leave
        // before their object is deallocated, see the field's comment); we take a new
        // strong reference to it while holding the GIL.
        Some(unsafe { Bound::from_borrowed_ptr(py, address as *mut ffi::PyObject) }.unbind())
    }

    /// Every open transport and its descriptor (for `ferroloop.inspect_transports`), in
    /// descriptor order.
    pub(super) fn open_transports(&self, py: Python<'_>) -> Vec<(i32, Py<PyAny>)> {
        let mut entries: Vec<(i32, usize)> = self
            .transports
            .borrow_mut(py)
            .iter()
            .map(|(fd, address)| (fd, *address))
            .collect();
        entries.sort_unstable();
        entries
            .into_iter()
            .map(|(fd, address)| {
                // SAFETY: as in `transport_for_fd`: registered addresses are live objects, and
                // no Python code (which could close one) ran since the map was read.
                let object = unsafe { Bound::from_borrowed_ptr(py, address as *mut ffi::PyObject) };
                (fd, object.unbind())
            })
            .collect()
    }
}
