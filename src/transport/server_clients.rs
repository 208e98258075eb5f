//! The connections a server has attached and not yet detached: what asyncio 3.13+'s
//! `Server.close_clients()` and `abort_clients()` close (stock asyncio keeps them in a
//! `weakref.WeakSet`).
//!
//! Native because of its size. A Python `set` grows its table 4× at 60 % load, so 5,000
//! connections sat in 32,768 slots of 16 bytes: 512 KiB, every page touched by the zeroing,
//! plus the 128 KiB table it outgrew (measured: 3.13+ only, where servers track clients,
//! 5,000 idle connections on CPython 3.14). This set holds the same strong references in a
//! hash table of object pointers: 8,192 buckets of 8 bytes and a control byte, 72 KiB.
//! Members are compared by identity, as a `set` of transports (which do not define `__eq__`)
//! does. The table is reported to the garbage collector (transport → server → clients →
//! transport is a cycle).

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, DefaultHasher, Hash, Hasher};

use pyo3::prelude::*;
use pyo3::{PyTraverseError, PyVisit};

use crate::interop::gil_cell::GilRefCell;

/// A member, hashed and compared by the object's address (its identity).
struct Member(Py<PyAny>);

impl PartialEq for Member {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_ptr() == other.0.as_ptr()
    }
}

impl Eq for Member {}

impl Hash for Member {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (self.0.as_ptr() as usize).hash(state);
    }
}

/// Deterministic hashing (the same iteration order on every run, as a `set` keyed by
/// addresses has), no per-process random keys.
type Members = HashSet<Member, BuildHasherDefault<DefaultHasher>>;

/// The attached connections of one server (`Server._clients`).
#[pyclass(frozen, module = "ferroloop._ferroloop", name = "ServerClients")]
pub struct ServerClients {
    members: GilRefCell<Members>,
}

#[pymethods]
impl ServerClients {
    /// An empty set.
    #[new]
    fn new() -> Self {
        ServerClients {
            members: GilRefCell::new(Members::default()),
        }
    }

    /// Adds `transport` (no effect if it is already a member).
    fn add(&self, py: Python<'_>, transport: &Bound<'_, PyAny>) {
        let member = Member(transport.clone().unbind());
        let refused = {
            let mut members = self.members.borrow_mut(py);
            if members.contains(&member) {
                Some(member)
            } else {
                members.insert(member);
                None
            }
        };
        drop(refused); // outside the borrow: dropping a reference may run Python code
    }

    /// Removes `transport` if it is a member.
    fn discard(&self, py: Python<'_>, transport: &Bound<'_, PyAny>) {
        let key = Member(transport.clone().unbind());
        let removed = self.members.borrow_mut(py).take(&key);
        drop((removed, key)); // outside the borrow, as in `add`
    }

    /// The members now, as a new list (what `close_clients` iterates: closing one may detach
    /// others).
    fn snapshot(&self, py: Python<'_>) -> Vec<Py<PyAny>> {
        self.members
            .borrow_mut(py)
            .iter()
            .map(|member| member.0.clone_ref(py))
            .collect()
    }

    fn __len__(&self, py: Python<'_>) -> usize {
        self.members.borrow_mut(py).len()
    }

    fn __contains__(&self, py: Python<'_>, transport: &Bound<'_, PyAny>) -> bool {
        let key = Member(transport.clone().unbind());
        let found = self.members.borrow_mut(py).contains(&key);
        drop(key);
        found
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        // Borrowed right now (a collection inside a method): report nothing, the members
        // merely look externally referenced for this collection.
        let Some(members) = self.members.try_borrow_in_gc() else {
            return Ok(());
        };
        for member in members.iter() {
            visit.call(&member.0)?;
        }
        Ok(())
    }

    fn __clear__(&self) {
        if let Some(mut members) = self.members.try_borrow_in_gc() {
            let old = std::mem::take(&mut *members);
            drop(members);
            drop(old);
        }
    }
}
