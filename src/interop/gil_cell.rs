//! Interior mutability for loop state that only ever changes while the GIL is held.

use std::cell::{RefCell, RefMut};

use pyo3::Python;

/// A `RefCell` that may live in a `#[pyclass(frozen)]`: every access takes a `Python` token,
/// so accesses are serialised by the GIL even when another thread (call_soon_threadsafe)
/// touches the loop. A reentrant access (a `__del__` that calls back into the loop while the
/// state is borrowed) panics instead of aliasing; PyO3 turns that panic into a Python
/// exception, never an abort. Callers keep borrows short and never call Python while borrowed.
pub struct GilRefCell<T>(RefCell<T>);

// SAFETY: the inner RefCell is only reachable through `borrow_mut`, which requires a `Python`
// token, i.e. the calling thread holds the GIL. This crate is not built for free-threaded
// CPython (no `Py_GIL_DISABLED` support is declared), so at most one thread holds a token at
// any time and the RefCell's non-atomic borrow flag is never raced.
unsafe impl<T: Send> Sync for GilRefCell<T> {}

impl<T> GilRefCell<T> {
    /// Wraps `value`.
    pub fn new(value: T) -> Self {
        GilRefCell(RefCell::new(value))
    }

    /// Borrows the value mutably; the `Python` token proves the GIL is held.
    #[inline]
    pub fn borrow_mut<'a>(&'a self, _py: Python<'_>) -> RefMut<'a, T> {
        self.0.borrow_mut()
    }

    /// Borrows the value mutably if nobody borrows it now (for code that must not panic, such
    /// as a guard's `drop` while a panic unwinds).
    #[inline]
    pub fn try_borrow_mut<'a>(&'a self, _py: Python<'_>) -> Option<RefMut<'a, T>> {
        self.0.try_borrow_mut().ok()
    }

    /// Borrows the value from a garbage-collector hook (`__traverse__`/`__clear__`), which
    /// gets no `Python` token but runs with the GIL held; None if it is borrowed right now
    /// (a collection triggered inside a method that holds the borrow).
    #[inline]
    pub fn try_borrow_in_gc(&self) -> Option<RefMut<'_, T>> {
        self.0.try_borrow_mut().ok()
    }

    /// Exclusive access without the GIL (`&mut self` proves nobody else holds the cell).
    #[inline]
    pub fn get_mut(&mut self) -> &mut T {
        self.0.get_mut()
    }
}
