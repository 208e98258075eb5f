//! The data path of TLS connections in Rust: record pumping between the socket and the
//! standard library's `ssl.SSLObject` over two `ssl.MemoryBIO`s.
//!
//! TLS stays the standard library's: the protocol is `asyncio.sslproto.SSLProtocol` (our
//! subclass in `_tls.py`), whose handshake/shutdown state machine, timeouts, errors and extra
//! info are untouched. What moves here is what runs per record once the connection is
//! wrapped: socket bytes → `incoming.write` → `SSLObject.read` → the app protocol's
//! `data_received`, and app `write()` → `SSLObject.write` → `outgoing.read` → the socket
//! transport, with the read/write flow-control checks. The `MemoryBIO` and `_ssl._SSLSocket`
//! methods are looked up once per connection and called directly (not through the
//! pure-Python `ssl.SSLObject` wrapper). Every decision that is not the common case (a state
//! other than WRAPPED, a paused side, a crossed water mark, a non-empty write backlog, a
//! buffered app protocol) is handed to the `SSLProtocol` method that asyncio runs for it.
//!
//! The pump keeps no reference to the protocol (each call passes it), so it adds no cycle.

use std::cell::RefCell;

use pyo3::exceptions::{PyException, PyTypeError};
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyMemoryView, PySlice, PyString, PyTuple};

use crate::interop::spare_bytes;

/// What `SSLProtocol.max_size` is: the most one `SSLObject.read` is asked for.
const READ_CHUNK: usize = 256 * 1024;

thread_local! {
    /// Where decrypted bytes are gathered before they become one `bytes` for the app.
    static PLAINTEXT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// One TLS connection's cached `MemoryBIO`/`SSLObject` methods (see the module doc).
#[pyclass(module = "ferroloop._ferroloop", frozen)]
pub struct TlsPump {
    /// The incoming `MemoryBIO` (its `pending`).
    incoming: Py<PyAny>,
    /// The outgoing `MemoryBIO` (its `pending`).
    outgoing: Py<PyAny>,
    /// `incoming.write`.
    incoming_write: Py<PyAny>,
    /// `outgoing.read`.
    outgoing_read: Py<PyAny>,
    /// `SSLObject.read` (of the `_ssl` object under the stdlib wrapper when there is one).
    ssl_read: Py<PyAny>,
    /// `SSLObject.write`.
    ssl_write: Py<PyAny>,
    /// `SSLObject.pending`.
    ssl_pending: Py<PyAny>,
    /// `SSLProtocolState.WRAPPED`.
    wrapped: Py<PyAny>,
    /// `SSLProtocolState.FLUSHING`.
    flushing: Py<PyAny>,
    /// `sslproto.SSLAgainErrors`: want-read/want-write, "try again later".
    again: Py<PyAny>,
}

/// The protocol and its instance dict: the protocol's attributes the pump reads are instance
/// attributes, read from the dict (one lookup each) instead of through `getattr`; one that is
/// not there (a program that moved it elsewhere) is looked up normally.
struct Proto<'a, 'py> {
    /// The `SSLProtocol`.
    obj: &'a Bound<'py, PyAny>,
    /// Its `__dict__`, if it has one.
    dict: Option<Bound<'py, PyDict>>,
}

impl<'a, 'py> Proto<'a, 'py> {
    /// Reads `protocol.__dict__` once.
    fn new(obj: &'a Bound<'py, PyAny>) -> Self {
        let dict = obj
            .getattr(intern!(obj.py(), "__dict__"))
            .ok()
            .and_then(|d| d.cast_into::<PyDict>().ok());
        Proto { obj, dict }
    }

    /// `protocol.name`.
    fn get(&self, name: &Bound<'py, PyString>) -> PyResult<Bound<'py, PyAny>> {
        if let Some(dict) = &self.dict {
            if let Some(value) = dict.get_item(name)? {
                return Ok(value);
            }
        }
        self.obj.getattr(name)
    }

    /// `bool(protocol.name)`.
    fn flag(&self, name: &Bound<'py, PyString>) -> PyResult<bool> {
        self.get(name)?.is_truthy()
    }

    /// `protocol.name` as an integer.
    fn int(&self, name: &Bound<'py, PyString>) -> PyResult<isize> {
        self.get(name)?.extract()
    }

    /// `protocol.name()`.
    fn call0(&self, name: &Bound<'py, PyString>) -> PyResult<Bound<'py, PyAny>> {
        self.obj.call_method0(name)
    }
}

/// `obj.name` as an integer.
fn int_attr(obj: &Bound<'_, PyAny>, name: &Bound<'_, PyString>) -> PyResult<isize> {
    obj.getattr(name)?.extract()
}

/// Runs `f`; an `Exception` it raises goes to `protocol._fatal_error(exc, message)` as
/// `SSLProtocol` does around its data path; anything else (KeyboardInterrupt, ...) propagates.
fn guarded(protocol: &Bound<'_, PyAny>, f: impl FnOnce() -> PyResult<()>) -> PyResult<()> {
    let py = protocol.py();
    match f() {
        Err(err) if err.is_instance_of::<PyException>(py) => {
            protocol.call_method1(
                intern!(py, "_fatal_error"),
                (err.into_value(py), "Fatal error on SSL protocol"),
            )?;
            Ok(())
        }
        other => other,
    }
}

impl TlsPump {
    /// Is the protocol's state `want`?
    fn state_is(p: &Proto<'_, '_>, want: &Py<PyAny>) -> PyResult<bool> {
        let state = p.get(intern!(p.obj.py(), "_state"))?;
        Ok(state.is(want.bind(p.obj.py())))
    }

    /// Bytes that arrived from the socket: into the incoming BIO, then whatever
    /// `SSLProtocol.buffer_updated` does in the current state (the transport's read path).
    pub(crate) fn feed(
        &self,
        protocol: &Bound<'_, PyAny>,
        data: &Bound<'_, PyBytes>,
    ) -> PyResult<()> {
        let py = protocol.py();
        self.incoming_write.bind(py).call1((data,))?;
        let p = Proto::new(protocol);
        if Self::state_is(&p, &self.wrapped)? {
            self.do_read_impl(&p)
        } else {
            p.call0(intern!(py, "_ferroloop_after_incoming"))?;
            Ok(())
        }
    }

    /// `SSLProtocol._do_read`.
    fn do_read_impl(&self, p: &Proto<'_, '_>) -> PyResult<()> {
        let py = p.obj.py();
        let state = p.get(intern!(py, "_state"))?;
        if !state.is(self.wrapped.bind(py)) && !state.is(self.flushing.bind(py)) {
            return Ok(());
        }
        guarded(p.obj, || {
            if !p.flag(intern!(py, "_app_reading_paused"))? {
                if p.flag(intern!(py, "_app_protocol_is_buffer"))? {
                    p.call0(intern!(py, "_do_read__buffered"))?;
                } else {
                    self.read_copied(p)?;
                }
                if p.flag(intern!(py, "_write_backlog"))? {
                    p.call0(intern!(py, "_do_write"))?;
                } else {
                    self.process_outgoing_impl(p)?;
                }
            }
            self.control_ssl_reading(p)
        })
    }

    /// `SSLProtocol._do_read__copied`: every decrypted byte available now, as one `bytes`,
    /// to the app protocol's `data_received`; a close_notify ends the app's input.
    fn read_copied(&self, p: &Proto<'_, '_>) -> PyResult<()> {
        let py = p.obj.py();
        // A reentrant use (an ssl callback running Python that reads another connection)
        // gets a buffer of its own.
        let mut local = Vec::new();
        let (data, eof) = PLAINTEXT.with(|cell| {
            let mut guard = cell.try_borrow_mut().ok();
            let buf = match guard.as_deref_mut() {
                Some(buf) => buf,
                None => &mut local,
            };
            self.read_records(py, buf)
        })?;
        if let Some(data) = data {
            let app = p.get(intern!(py, "_app_protocol"))?;
            app.call_method1(intern!(py, "data_received"), (&data,))?;
            spare_bytes::recycle(data);
        }
        if eof {
            p.call0(intern!(py, "_call_eof_received"))?;
            p.call0(intern!(py, "_start_shutdown"))?;
        }
        Ok(())
    }

    /// Reads records until the SSL object wants more input (or nothing is left to read, so
    /// no want-read exception is raised just to learn it); returns the plaintext and whether
    /// the peer's close_notify arrived. An error drops what was read, as asyncio does.
    fn read_records<'py>(
        &self,
        py: Python<'py>,
        buf: &mut Vec<u8>,
    ) -> PyResult<(Option<Bound<'py, PyBytes>>, bool)> {
        let read = self.ssl_read.bind(py);
        let incoming = self.incoming.bind(py);
        let pending = intern!(py, "pending");
        let mut filled = 0usize;
        let mut eof = false;
        loop {
            if buf.len() < filled + READ_CHUNK {
                buf.resize(filled + READ_CHUNK, 0);
            }
            // SAFETY: the view covers `READ_CHUNK` initialised bytes of `buf`, which is not
            // touched otherwise until the view is released below; `SSLObject.read` writes at
            // most the length it is given and keeps no reference to the buffer.
            let view = unsafe {
                let ptr = ffi::PyMemoryView_FromMemory(
                    buf.as_mut_ptr().add(filled).cast(),
                    READ_CHUNK as ffi::Py_ssize_t,
                    ffi::PyBUF_WRITE,
                );
                Bound::from_owned_ptr_or_err(py, ptr)?.cast_into_unchecked::<PyMemoryView>()
            };
            let result = read.call1((READ_CHUNK, &view));
            // SAFETY: reading the reference count of a live object we hold a reference to.
            if unsafe { ffi::Py_REFCNT(view.as_ptr()) } > 1 {
                // Someone kept the view: cut it off from `buf` before `buf` moves on.
                view.call_method0(intern!(py, "release"))?;
            }
            drop(view);
            match result {
                Ok(count) => {
                    let count: usize = count.extract()?;
                    if count == 0 {
                        eof = true;
                        break;
                    }
                    filled += count;
                    // Nothing more buffered in either the BIO or the SSL object: the next
                    // read could only raise want-read.
                    if int_attr(incoming, pending)? == 0
                        && self.ssl_pending.bind(py).call0()?.extract::<isize>()? == 0
                    {
                        break;
                    }
                }
                Err(err) if err.matches(py, self.again.bind(py))? => break,
                Err(err) => return Err(err),
            }
        }
        let data = (filled > 0).then(|| spare_bytes::bytes_from(py, &buf[..filled]));
        if buf.len() > 2 * READ_CHUNK {
            buf.truncate(READ_CHUNK);
            buf.shrink_to_fit();
        }
        Ok((data, eof))
    }

    /// `SSLProtocol._process_outgoing`: what the SSL object wrote goes to the transport.
    fn process_outgoing_impl(&self, p: &Proto<'_, '_>) -> PyResult<()> {
        let py = p.obj.py();
        if !p.flag(intern!(py, "_ssl_writing_paused"))? {
            let data = self.outgoing_read.bind(py).call0()?;
            if data.len()? > 0 {
                p.get(intern!(py, "_transport"))?
                    .call_method1(intern!(py, "write"), (data,))?;
            }
        }
        self.control_app_writing(p)
    }

    /// `SSLProtocol._control_app_writing`, run only when a water mark is crossed.
    fn control_app_writing(&self, p: &Proto<'_, '_>) -> PyResult<()> {
        let py = p.obj.py();
        let size = int_attr(self.outgoing.bind(py), intern!(py, "pending"))?
            + p.int(intern!(py, "_write_buffer_size"))?;
        let crossed = if p.flag(intern!(py, "_app_writing_paused"))? {
            size <= p.int(intern!(py, "_outgoing_low_water"))?
        } else {
            size >= p.int(intern!(py, "_outgoing_high_water"))?
        };
        if crossed {
            p.call0(intern!(py, "_control_app_writing"))?;
        }
        Ok(())
    }

    /// `SSLProtocol._control_ssl_reading`, run only when a water mark is crossed.
    fn control_ssl_reading(&self, p: &Proto<'_, '_>) -> PyResult<()> {
        let py = p.obj.py();
        let size = int_attr(self.incoming.bind(py), intern!(py, "pending"))?;
        let crossed = if p.flag(intern!(py, "_ssl_reading_paused"))? {
            size <= p.int(intern!(py, "_incoming_low_water"))?
        } else {
            size >= p.int(intern!(py, "_incoming_high_water"))?
        };
        if crossed {
            p.call0(intern!(py, "_control_ssl_reading"))?;
        }
        Ok(())
    }
}

#[pymethods]
impl TlsPump {
    /// Caches the methods of `incoming`, `outgoing` and `sslobj` (the `_ssl` object, or the
    /// program's own `sslobject_class` instance), and the protocol states it compares with.
    #[new]
    fn new(
        incoming: &Bound<'_, PyAny>,
        outgoing: &Bound<'_, PyAny>,
        sslobj: &Bound<'_, PyAny>,
        wrapped: &Bound<'_, PyAny>,
        flushing: &Bound<'_, PyAny>,
        again: &Bound<'_, PyTuple>,
    ) -> PyResult<Self> {
        let py = incoming.py();
        Ok(TlsPump {
            incoming: incoming.clone().unbind(),
            outgoing: outgoing.clone().unbind(),
            incoming_write: incoming.getattr(intern!(py, "write"))?.unbind(),
            outgoing_read: outgoing.getattr(intern!(py, "read"))?.unbind(),
            ssl_read: sslobj.getattr(intern!(py, "read"))?.unbind(),
            ssl_write: sslobj.getattr(intern!(py, "write"))?.unbind(),
            ssl_pending: sslobj.getattr(intern!(py, "pending"))?.unbind(),
            wrapped: wrapped.clone().unbind(),
            flushing: flushing.clone().unbind(),
            again: again.clone().into_any().unbind(),
        })
    }

    /// `SSLProtocol._do_read` of `protocol`.
    fn do_read(&self, protocol: &Bound<'_, PyAny>) -> PyResult<()> {
        self.do_read_impl(&Proto::new(protocol))
    }

    /// `SSLProtocol._process_outgoing` of `protocol`.
    fn process_outgoing(&self, protocol: &Bound<'_, PyAny>) -> PyResult<()> {
        self.process_outgoing_impl(&Proto::new(protocol))
    }

    /// `data` received from the socket for `protocol` (what `buffer_updated` does).
    fn data_received(
        &self,
        protocol: &Bound<'_, PyAny>,
        data: &Bound<'_, PyBytes>,
    ) -> PyResult<()> {
        self.feed(protocol, data)
    }

    /// The app transport's `write(data)`: encrypted and handed to the socket transport at
    /// once when the connection is wrapped and nothing is queued before it; otherwise
    /// `SSLProtocol._write_appdata` decides.
    fn app_write(&self, protocol: &Bound<'_, PyAny>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = protocol.py();
        if !(data.is_instance_of::<PyBytes>()
            || data.is_instance_of::<PyByteArray>()
            || data.is_instance_of::<PyMemoryView>())
        {
            return Err(PyTypeError::new_err(format!(
                "data: expecting a bytes-like instance, got {}",
                data.get_type().name()?
            )));
        }
        if !data.is_truthy()? {
            return Ok(());
        }
        let p = Proto::new(protocol);
        if !Self::state_is(&p, &self.wrapped)? || p.flag(intern!(py, "_write_backlog"))? {
            protocol.call_method1(intern!(py, "_write_appdata"), ((data,),))?;
            return Ok(());
        }
        guarded(protocol, || {
            let size = data.len()?;
            let count = match self.ssl_write.bind(py).call1((data,)) {
                Ok(count) => count.extract::<usize>()?,
                Err(err) if err.matches(py, self.again.bind(py))? => 0,
                Err(err) => return Err(err),
            };
            if count < size {
                // The rest waits in the backlog, as `_do_write` leaves it.
                let rest = data.get_item(PySlice::new(py, count as isize, size as isize, 1))?;
                p.get(intern!(py, "_write_backlog"))?
                    .call_method1(intern!(py, "append"), (rest,))?;
                let buffered = p.int(intern!(py, "_write_buffer_size"))?;
                protocol.setattr(
                    intern!(py, "_write_buffer_size"),
                    buffered + (size - count) as isize,
                )?;
            }
            self.process_outgoing_impl(&p)
        })
    }
}
