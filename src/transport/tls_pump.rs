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
//! pure-Python `ssl.SSLObject` wrapper); when they are the `_ssl` C methods, the bytes they
//! read or fill are lent through one reusable [`BufferWindow`] per connection instead of a
//! new `memoryview` per call (`buffer_window.rs`). Every decision that is not the common case (a state
//! other than WRAPPED, a paused side, a crossed water mark, a non-empty write backlog, a
//! buffered app protocol) is handed to the `SSLProtocol` method that asyncio runs for it.
//!
//! The protocol attributes the data path reads are not looked up per record: the pump keeps a
//! copy ([`Mirror`]) that `_tls.py`'s `__setattr__` refreshes whenever the protocol assigns
//! one of them (the stdlib code only ever assigns them), so the copy always equals the
//! attributes. The pump keeps no reference to the protocol itself (each call passes it); the
//! app protocol and transport it copies are the protocol's own references (cleared with
//! them in `connection_lost`) and are reported to the garbage collector.
//!
//! The pump knows no transport type: the native stream transport that feeds it (`stream.rs`,
//! which hands it the received bytes) offers its own `write` as a [`NativeWriter`], and the
//! pump writes through that when the protocol's `_transport` is such a transport.
//!
//! The pump also counts the connection's application bytes for `ferroloop.inspect_transports`
//! (plaintext, where the socket transport counts records): those it hands to the app's
//! `data_received`, and those the app wrote that TLS accepted (encrypted at once by
//! `app_write`, or queued in `_write_backlog`: every queued byte raises `_write_buffer_size`,
//! an attribute the mirror re-reads on each assignment). `_tls.py` adds what a buffered app
//! protocol gets through `SSLProtocol._do_read__buffered`.

use std::cell::RefCell;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use pyo3::exceptions::{PyException, PyTypeError};
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyMemoryView, PySlice, PyString, PyTuple};
use pyo3::{PyTraverseError, PyVisit};

use crate::interop::gil_cell::GilRefCell;
use crate::interop::read_bytes::_PyBytes_Resize;
use crate::interop::spare_bytes;
use crate::transport::buffer_window::BufferWindow;

/// What `SSLProtocol.max_size` is: the most one `SSLObject.read` is asked for.
const READ_CHUNK: usize = 256 * 1024;

/// From this many ciphertext bytes in the incoming BIO on, records are decrypted straight
/// into the app's `bytes` (below it, through the reused buffer and one small copy, which
/// lets the transport's spare `bytes` be reused).
const DIRECT_READ_MIN: usize = 16 * 1024;

thread_local! {
    /// Where decrypted bytes are gathered before they become one `bytes` for the app.
    static PLAINTEXT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// One `SSLObject.read` call's outcome in the record read loops (`TlsPump::after_read`).
enum ReadStep {
    /// `n` plaintext bytes; more may be buffered.
    Read(usize),
    /// `n` plaintext bytes, and nothing is left in the BIO or the SSL object.
    ReadAll(usize),
    /// The peer's close_notify (a read of 0 bytes).
    Eof,
    /// The SSL object wants more ciphertext.
    WantRead,
}

/// Where the protocol's `_state` stands, as far as the data path cares.
#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    /// `SSLProtocolState.WRAPPED`.
    Wrapped,
    /// `SSLProtocolState.FLUSHING`.
    Flushing,
    /// Any other state.
    Other,
}

/// A copy of the `SSLProtocol` attributes the data path reads, refreshed by `sync` each time
/// the protocol assigns one of them (`_tls.py`'s `__setattr__`): the per-record path reads
/// them here instead of looking each one up in the protocol's dict.
struct Mirror {
    /// False until the first `sync`.
    synced: bool,
    /// `_state`.
    state: State,
    /// `_app_reading_paused`.
    app_reading_paused: bool,
    /// `_app_protocol_is_buffer`.
    app_protocol_is_buffer: bool,
    /// `_ssl_writing_paused`.
    ssl_writing_paused: bool,
    /// `_ssl_reading_paused`.
    ssl_reading_paused: bool,
    /// `_app_writing_paused`.
    app_writing_paused: bool,
    /// `_write_buffer_size`.
    write_buffer_size: isize,
    /// `_incoming_high_water`.
    incoming_high_water: f64,
    /// `_incoming_low_water`.
    incoming_low_water: f64,
    /// `_outgoing_high_water`.
    outgoing_high_water: f64,
    /// `_outgoing_low_water`.
    outgoing_low_water: f64,
    /// `_app_protocol`.
    app_protocol: Option<Py<PyAny>>,
    /// `_transport`.
    transport: Option<Py<PyAny>>,
    /// The native write of `_transport`, when it is a transport the offered [`NativeWriter`]
    /// accepts (its `write` is the native one).
    native_write: Option<WriteFn>,
    /// `_write_backlog` (a deque; its length is read where asyncio tests it).
    write_backlog: Option<Py<PyAny>>,
}

impl Mirror {
    /// Nothing read yet.
    const fn empty() -> Self {
        Mirror {
            synced: false,
            state: State::Other,
            app_reading_paused: false,
            app_protocol_is_buffer: false,
            ssl_writing_paused: false,
            ssl_reading_paused: false,
            app_writing_paused: false,
            write_buffer_size: 0,
            incoming_high_water: 0.0,
            incoming_low_water: 0.0,
            outgoing_high_water: 0.0,
            outgoing_low_water: 0.0,
            app_protocol: None,
            transport: None,
            native_write: None,
            write_backlog: None,
        }
    }
}

/// A native transport's `write(data)` (the transport, the data).
pub type WriteFn = fn(&Bound<'_, PyAny>, &Bound<'_, PyAny>) -> PyResult<()>;

/// The write path of a native transport, offered to the pump by the transport that feeds it
/// (see the module doc): the pump hands the records it encrypts to `write` instead of calling
/// the transport's Python `write`.
pub struct NativeWriter {
    /// Is `transport` one of this kind whose `write` is the native one (its class does not
    /// replace `write`)?
    pub accepts: fn(&Bound<'_, PyAny>) -> PyResult<bool>,
    /// `write(data)` of a transport `accepts` took; it must run no code that could encrypt
    /// more.
    pub write: WriteFn,
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
    /// `READ_CHUNK` as a Python int (made once).
    read_chunk: Py<PyAny>,
    /// The buffer lent to `incoming.write` and `SSLObject.read`, when both are the `_ssl`
    /// C methods (else a `memoryview` per call).
    window: Option<Py<BufferWindow>>,
    /// The protocol's attributes the data path reads (see [`Mirror`]).
    mirror: GilRefCell<Mirror>,
    /// The write path the native transport feeding the pump offered, if one did.
    writer: GilRefCell<Option<&'static NativeWriter>>,
    /// Plaintext bytes handed to the app protocol's `data_received`.
    app_in: AtomicU64,
    /// Plaintext bytes the app wrote that TLS accepted (encrypted, or queued in the backlog).
    app_out: AtomicU64,
    /// `_write_buffer_size` when `sync` last read it (its rises are app bytes queued; kept
    /// apart from the mirror, which is re-read from scratch when a writer is offered).
    seen_backlog: AtomicI64,
}

/// Adds `n` to a counter only the thread holding the GIL writes (no locked instruction).
fn add(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Ordering::Relaxed) + n, Ordering::Relaxed);
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

/// `obj.name` as an integer.
fn int_attr(obj: &Bound<'_, PyAny>, name: &Bound<'_, PyString>) -> PyResult<isize> {
    obj.getattr(name)?.extract()
}

/// A mirrored object attribute, or None when the protocol holds None there.
fn object_attr(obj: &Bound<'_, PyAny>, name: &Bound<'_, PyString>) -> PyResult<Option<Py<PyAny>>> {
    let value = obj.getattr(name)?;
    Ok((!value.is_none()).then(|| value.unbind()))
}

impl TlsPump {
    /// Reads the mirrored attributes of `protocol` (see [`Mirror`]).
    fn sync_impl(&self, protocol: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = protocol.py();
        let flag = |name: &Bound<'_, PyString>| protocol.getattr(name)?.is_truthy();
        let level = |name: &Bound<'_, PyString>| protocol.getattr(name)?.extract::<f64>();
        let state = protocol.getattr(intern!(py, "_state"))?;
        let state = if state.is(self.wrapped.bind(py)) {
            State::Wrapped
        } else if state.is(self.flushing.bind(py)) {
            State::Flushing
        } else {
            State::Other
        };
        let transport = object_attr(protocol, intern!(py, "_transport"))?;
        let writer = *self.writer.borrow_mut(py);
        let native_write = match (&transport, writer) {
            (Some(t), Some(writer)) if (writer.accepts)(t.bind(py))? => Some(writer.write),
            _ => None,
        };
        let fresh = Mirror {
            synced: true,
            state,
            app_reading_paused: flag(intern!(py, "_app_reading_paused"))?,
            app_protocol_is_buffer: flag(intern!(py, "_app_protocol_is_buffer"))?,
            ssl_writing_paused: flag(intern!(py, "_ssl_writing_paused"))?,
            ssl_reading_paused: flag(intern!(py, "_ssl_reading_paused"))?,
            app_writing_paused: flag(intern!(py, "_app_writing_paused"))?,
            write_buffer_size: int_attr(protocol, intern!(py, "_write_buffer_size"))?,
            incoming_high_water: level(intern!(py, "_incoming_high_water"))?,
            incoming_low_water: level(intern!(py, "_incoming_low_water"))?,
            outgoing_high_water: level(intern!(py, "_outgoing_high_water"))?,
            outgoing_low_water: level(intern!(py, "_outgoing_low_water"))?,
            app_protocol: object_attr(protocol, intern!(py, "_app_protocol"))?,
            transport,
            native_write,
            write_backlog: object_attr(protocol, intern!(py, "_write_backlog"))?,
        };
        // App bytes queued in the backlog raise `_write_buffer_size` (`_write_appdata`, and the
        // rest of a partial write in `app_write`); nothing else raises it.
        let size = fresh.write_buffer_size as i64;
        let queued = size - self.seen_backlog.swap(size, Ordering::Relaxed);
        if queued > 0 {
            add(&self.app_out, queued as u64);
        }
        let old = std::mem::replace(&mut *self.mirror.borrow_mut(py), fresh);
        drop(old); // outside the borrow: dropping may run Python code
        Ok(())
    }

    /// The native transport that feeds the pump offers its write path (see [`NativeWriter`]);
    /// a new one makes the next call re-read the mirror, which decides whether `_transport`
    /// is written through it.
    pub(crate) fn offer_writer(&self, py: Python<'_>, writer: &'static NativeWriter) {
        let previous = self.writer.borrow_mut(py).replace(writer);
        if !previous.is_some_and(|known| std::ptr::eq(known, writer)) {
            self.mirror.borrow_mut(py).synced = false;
        }
    }

    /// The mirror, read once (the first time) if nothing has assigned a mirrored attribute.
    fn ensure_synced(&self, protocol: &Bound<'_, PyAny>) -> PyResult<()> {
        if !self.mirror.borrow_mut(protocol.py()).synced {
            self.sync_impl(protocol)?;
        }
        Ok(())
    }

    /// Reads one value out of the mirror (a short borrow, no Python code runs under it).
    fn with<R>(&self, py: Python<'_>, f: impl FnOnce(&Mirror) -> R) -> R {
        f(&self.mirror.borrow_mut(py))
    }

    /// A mirrored object attribute (None when the protocol holds None).
    fn object<'py>(
        &self,
        py: Python<'py>,
        f: impl FnOnce(&Mirror) -> &Option<Py<PyAny>>,
    ) -> Option<Bound<'py, PyAny>> {
        self.with(py, |m| f(m).as_ref().map(|o| o.bind(py).clone()))
    }

    /// `bool(protocol._write_backlog)`.
    fn backlog_nonempty(&self, py: Python<'_>) -> PyResult<bool> {
        match self.object(py, |m| &m.write_backlog) {
            Some(backlog) => backlog.is_truthy(),
            None => Ok(false),
        }
    }

    /// Puts received bytes into the incoming BIO; the caller then runs `after_incoming`
    /// (split so that `data` may be the transport's read buffer: only C code runs here).
    pub(crate) fn write_incoming(&self, py: Python<'_>, data: &[u8]) -> PyResult<()> {
        let write = self.incoming_write.bind(py);
        // SAFETY: `data` is only read (not writable), and stays valid and unchanged during the
        // call (`MemoryBIO.write` copies it into the BIO).
        unsafe {
            self.lend_buffer(py, data.as_ptr().cast_mut(), data.len(), false, |buf| {
                write.call1((buf,))
            })
        }
        .map(drop)
    }

    /// `SSLObject.read(asked, buffer)` into the `len` bytes at `data`. The outer error is the
    /// buffer's; the inner result is the call's (want-read and the like).
    ///
    /// # Safety
    /// `data` must be valid for writes of `len` bytes and not be otherwise accessed until
    /// this returns; `asked` must not exceed `len` (`SSLObject.read` writes at most `asked`).
    unsafe fn read_into<'py>(
        &self,
        py: Python<'py>,
        asked: &Bound<'py, PyAny>,
        data: *mut u8,
        len: usize,
    ) -> PyResult<PyResult<Bound<'py, PyAny>>> {
        let read = self.ssl_read.bind(py);
        // SAFETY: this function's contract.
        unsafe { self.lend_buffer(py, data, len, true, |buf| Ok(read.call1((asked, buf)))) }
    }

    /// Runs `call` with a buffer object showing the `len` bytes at `data` (writable if
    /// `writable`): the connection's window when there is a free one (`c_buffers`), else a
    /// `memoryview`, released afterwards if the callee kept a reference to it.
    ///
    /// # Safety
    /// `data` must be valid for reads (and writes, if `writable`) of `len` bytes, and not be
    /// otherwise accessed, until this returns.
    unsafe fn lend_buffer<'py, R>(
        &self,
        py: Python<'py>,
        data: *mut u8,
        len: usize,
        writable: bool,
        call: impl Fn(&Bound<'py, PyAny>) -> PyResult<R>,
    ) -> PyResult<R> {
        if let Some(window) = &self.window {
            // SAFETY: this function's contract; the window is only set for the `_ssl` C
            // methods, which release the buffer before they return.
            let lent = unsafe { BufferWindow::lend(window.bind(py), data, len, writable, &call) };
            if let Some(result) = lent {
                return result;
            }
        }
        let flags = if writable {
            ffi::PyBUF_WRITE
        } else {
            ffi::PyBUF_READ
        };
        // SAFETY: the view covers the `len` bytes at `data` (this function's contract), and is
        // released below before the memory can be touched otherwise.
        let view = unsafe {
            let ptr = ffi::PyMemoryView_FromMemory(data.cast(), len as ffi::Py_ssize_t, flags);
            Bound::from_owned_ptr_or_err(py, ptr)?.cast_into_unchecked::<PyMemoryView>()
        };
        let result = call(view.as_any());
        release_if_kept(&view)?;
        result
    }

    /// Whatever `SSLProtocol.buffer_updated` does in the current state once the received
    /// bytes are in the incoming BIO.
    pub(crate) fn after_incoming(
        &self,
        protocol: &Bound<'_, PyAny>,
        received: usize,
    ) -> PyResult<()> {
        self.ensure_synced(protocol)?;
        if self.with(protocol.py(), |m| m.state == State::Wrapped) {
            self.do_read_impl(protocol, Some(received))
        } else {
            protocol.call_method0(intern!(protocol.py(), "_ferroloop_after_incoming"))?;
            Ok(())
        }
    }

    /// `SSLProtocol._do_read` (`received`: see `read_copied`).
    fn do_read_impl(&self, protocol: &Bound<'_, PyAny>, received: Option<usize>) -> PyResult<()> {
        let py = protocol.py();
        if self.with(py, |m| m.state == State::Other) {
            return Ok(());
        }
        guarded(protocol, || {
            let mut emptied = false;
            if !self.with(py, |m| m.app_reading_paused) {
                if self.with(py, |m| m.app_protocol_is_buffer) {
                    protocol.call_method0(intern!(py, "_do_read__buffered"))?;
                } else {
                    emptied = self.read_copied(protocol, received)?;
                }
                if self.backlog_nonempty(py)? {
                    protocol.call_method0(intern!(py, "_do_write"))?;
                } else {
                    self.process_outgoing_impl(protocol, false)?;
                }
            }
            self.control_ssl_reading(protocol, emptied)
        })
    }

    /// `SSLProtocol._do_read__copied`: every decrypted byte available now, as one `bytes`,
    /// to the app protocol's `data_received`; a close_notify ends the app's input.
    /// `received`: how many bytes the socket just delivered, when that is what runs this.
    /// Returns whether the incoming BIO was left empty.
    fn read_copied(&self, protocol: &Bound<'_, PyAny>, received: Option<usize>) -> PyResult<bool> {
        let py = protocol.py();
        // What just came from the socket tells a small read apart without asking the BIO.
        let arrived = match received {
            Some(n) if n < DIRECT_READ_MIN => n,
            _ => int_attr(self.incoming.bind(py), intern!(py, "pending"))? as usize,
        };
        let (data, eof, emptied) = if arrived >= DIRECT_READ_MIN {
            self.read_records_direct(py, arrived)?
        } else {
            // A reentrant use (an ssl callback running Python that reads another
            // connection) gets a buffer of its own.
            let mut local = Vec::new();
            PLAINTEXT.with(|cell| {
                let mut guard = cell.try_borrow_mut().ok();
                let buf = match guard.as_deref_mut() {
                    Some(buf) => buf,
                    None => &mut local,
                };
                self.read_records(py, buf)
            })?
        };
        if let Some(data) = data {
            add(&self.app_in, data.as_bytes().len() as u64);
            let app = match self.object(py, |m| &m.app_protocol) {
                Some(app) => app,
                None => py.None().into_bound(py),
            };
            app.call_method1(intern!(py, "data_received"), (&data,))?;
            spare_bytes::recycle(data);
        }
        if eof {
            protocol.call_method0(intern!(py, "_call_eof_received"))?;
            protocol.call_method0(intern!(py, "_start_shutdown"))?;
        }
        Ok(emptied)
    }

    /// What one `SSLObject.read(asked, view)` call's `result` means for the read loops of
    /// `read_records` and `read_records_direct`; sets `emptied` after a read that returned
    /// data. Nothing more buffered in either the BIO or the SSL object means the next read
    /// could only raise want-read. A read that returned less than it was asked for emptied
    /// its record, so the SSL object holds nothing decrypted; it is asked only after a full
    /// read.
    fn after_read(
        &self,
        py: Python<'_>,
        result: PyResult<Bound<'_, PyAny>>,
        asked: usize,
        incoming: &Bound<'_, PyAny>,
        emptied: &mut bool,
    ) -> PyResult<ReadStep> {
        let count: usize = match result {
            Ok(count) => count.extract()?,
            Err(err) if err.matches(py, self.again.bind(py))? => return Ok(ReadStep::WantRead),
            Err(err) => return Err(err),
        };
        if count == 0 {
            return Ok(ReadStep::Eof);
        }
        *emptied = int_attr(incoming, intern!(py, "pending"))? == 0;
        let all_read = *emptied
            && (count < asked || self.ssl_pending.bind(py).call0()?.extract::<isize>()? == 0);
        Ok(if all_read {
            ReadStep::ReadAll(count)
        } else {
            ReadStep::Read(count)
        })
    }

    /// Reads records until the SSL object wants more input (or nothing is left to read, so
    /// no want-read exception is raised just to learn it); returns the plaintext and whether
    /// the peer's close_notify arrived. An error drops what was read, as asyncio does.
    fn read_records<'py>(
        &self,
        py: Python<'py>,
        buf: &mut Vec<u8>,
    ) -> PyResult<(Option<Bound<'py, PyBytes>>, bool, bool)> {
        let incoming = self.incoming.bind(py);
        let mut filled = 0usize;
        let mut eof = false;
        let mut emptied = false;
        loop {
            if buf.len() < filled + READ_CHUNK {
                buf.resize(filled + READ_CHUNK, 0);
            }
            // SAFETY: `READ_CHUNK` initialised bytes of `buf` from `filled` on, not touched
            // otherwise during the call.
            let result = unsafe {
                self.read_into(
                    py,
                    self.read_chunk.bind(py),
                    buf.as_mut_ptr().add(filled),
                    READ_CHUNK,
                )?
            };
            match self.after_read(py, result, READ_CHUNK, incoming, &mut emptied)? {
                ReadStep::Read(count) => filled += count,
                ReadStep::ReadAll(count) => {
                    filled += count;
                    break;
                }
                ReadStep::Eof => {
                    eof = true;
                    break;
                }
                ReadStep::WantRead => break,
            }
        }
        let data = (filled > 0).then(|| spare_bytes::bytes_from(py, &buf[..filled]));
        if buf.len() > 2 * READ_CHUNK {
            buf.truncate(READ_CHUNK);
            buf.shrink_to_fit();
        }
        Ok((data, eof, emptied))
    }

    /// `read_records` for much ciphertext at once: the records are decrypted straight into
    /// the `bytes` the app gets (sized by the `arrived` ciphertext bytes, which are more
    /// than the plaintext they hold; grown if the SSL object had more), saving a copy of
    /// everything read.
    fn read_records_direct<'py>(
        &self,
        py: Python<'py>,
        arrived: usize,
    ) -> PyResult<(Option<Bound<'py, PyBytes>>, bool, bool)> {
        let incoming = self.incoming.bind(py);
        let mut capacity = arrived;
        // SAFETY: a new, uninitialised `bytes` that nobody else can see until it is
        // returned: writing into it and resizing it are allowed (as `socket.recv` does).
        let mut data = unsafe {
            let obj = ffi::PyBytes_FromStringAndSize(std::ptr::null(), capacity as ffi::Py_ssize_t);
            Bound::from_owned_ptr_or_err(py, obj)?.cast_into_unchecked::<PyBytes>()
        };
        let mut filled = 0usize;
        let mut eof = false;
        let mut emptied = false;
        loop {
            if filled == capacity {
                capacity += READ_CHUNK;
                data = resize_fresh_bytes(data, capacity)?;
            }
            let room = capacity - filled;
            let asked = room.into_pyobject(py)?.into_any();
            // SAFETY: the unwritten tail of `data`'s buffer, which only `SSLObject.read`
            // writes (at most `room` bytes) before `data` is resized or handed out.
            let result = unsafe {
                let start = ffi::PyBytes_AsString(data.as_ptr()).add(filled);
                self.read_into(py, &asked, start.cast(), room)?
            };
            match self.after_read(py, result, room, incoming, &mut emptied)? {
                ReadStep::Read(count) => filled += count,
                ReadStep::ReadAll(count) => {
                    filled += count;
                    break;
                }
                ReadStep::Eof => {
                    eof = true;
                    break;
                }
                ReadStep::WantRead => break,
            }
        }
        if filled == 0 {
            return Ok((None, eof, emptied));
        }
        Ok((Some(resize_fresh_bytes(data, filled)?), eof, emptied))
    }

    /// `SSLProtocol._process_outgoing`: what the SSL object wrote goes to the transport.
    /// `filled`: the outgoing BIO is known to hold records (the caller's `SSLObject.write`
    /// just took bytes; nothing reads the BIO in between), so its size is not asked.
    fn process_outgoing_impl(&self, protocol: &Bound<'_, PyAny>, filled: bool) -> PyResult<()> {
        let py = protocol.py();
        // What the outgoing BIO holds afterwards, when known without asking it again.
        let mut left = None;
        if !self.with(py, |m| m.ssl_writing_paused) {
            left = Some(0);
        }
        if left.is_some()
            && (filled || int_attr(self.outgoing.bind(py), intern!(py, "pending"))? > 0)
        {
            let data = self.outgoing_read.bind(py).call0()?;
            // An `sslobject_class` of the program's own may have written nothing: asyncio
            // writes only a non-empty read.
            if filled && data.len()? == 0 {
                return self.control_app_writing(protocol, left);
            }
            let transport = self.object(py, |m| &m.transport);
            let native_write = self.with(py, |m| m.native_write);
            match (transport, native_write) {
                // The native write runs no code that could encrypt more (a crossed water
                // mark only sets `SSLProtocol._ssl_writing_paused`): the BIO stays empty.
                (Some(t), Some(write)) => write(&t, &data)?,
                (Some(t), None) => {
                    left = None;
                    t.call_method1(intern!(py, "write"), (data,))?;
                }
                // What asyncio's `None.write(...)` raises.
                (None, _) => {
                    py.None()
                        .into_bound(py)
                        .call_method1(intern!(py, "write"), (data,))?;
                }
            }
        }
        self.control_app_writing(protocol, left)
    }

    /// `SSLProtocol._control_app_writing`, run only when a water mark is crossed
    /// (`pending`: the outgoing BIO's size if known).
    fn control_app_writing(
        &self,
        protocol: &Bound<'_, PyAny>,
        pending: Option<isize>,
    ) -> PyResult<()> {
        let py = protocol.py();
        let pending = match pending {
            Some(pending) => pending,
            None => int_attr(self.outgoing.bind(py), intern!(py, "pending"))?,
        };
        let crossed = self.with(py, |m| {
            let size = (pending + m.write_buffer_size) as f64;
            if m.app_writing_paused {
                size <= m.outgoing_low_water
            } else {
                size >= m.outgoing_high_water
            }
        });
        if crossed {
            protocol.call_method0(intern!(py, "_control_app_writing"))?;
        }
        Ok(())
    }

    /// `SSLProtocol._control_ssl_reading`, run only when a water mark is crossed.
    /// (`known_empty`: the incoming BIO was just found empty; only socket reads fill it,
    /// and none can run inside this call.)
    fn control_ssl_reading(&self, protocol: &Bound<'_, PyAny>, known_empty: bool) -> PyResult<()> {
        let py = protocol.py();
        let size = if known_empty {
            0.0
        } else {
            int_attr(self.incoming.bind(py), intern!(py, "pending"))? as f64
        };
        let crossed = self.with(py, |m| {
            if m.ssl_reading_paused {
                size <= m.incoming_low_water
            } else {
                size >= m.incoming_high_water
            }
        });
        if crossed {
            protocol.call_method0(intern!(py, "_control_ssl_reading"))?;
        }
        Ok(())
    }
}

/// `data` (a `bytes` only the caller references, being filled) resized to `size`.
fn resize_fresh_bytes(data: Bound<'_, PyBytes>, size: usize) -> PyResult<Bound<'_, PyBytes>> {
    let py = data.py();
    if data.as_bytes().len() == size {
        return Ok(data);
    }
    let mut obj = data.into_ptr();
    // SAFETY: `obj` is an owned reference to a `bytes` nobody else references (made by
    // `read_records_direct` and not yet handed out); on failure `_PyBytes_Resize` releases it
    // and sets the exception.
    unsafe {
        if _PyBytes_Resize(&mut obj, size as ffi::Py_ssize_t) < 0 {
            return Err(PyErr::fetch(py));
        }
        Ok(Bound::from_owned_ptr(py, obj).cast_into_unchecked::<PyBytes>())
    }
}

/// Cuts a memoryview over Rust memory off from that memory if somebody kept a reference
/// to it (the memory is reused once the view is dropped).
fn release_if_kept(view: &Bound<'_, PyMemoryView>) -> PyResult<()> {
    // SAFETY: reading the reference count of a live object we hold a reference to.
    if unsafe { ffi::Py_REFCNT(view.as_ptr()) } > 1 {
        view.call_method0(intern!(view.py(), "release"))?;
    }
    Ok(())
}

#[pymethods]
impl TlsPump {
    /// Caches the methods of `incoming`, `outgoing` and `sslobj` (the `_ssl` object, or the
    /// program's own `sslobject_class` instance), and the protocol states it compares with.
    /// `c_buffers`: `incoming` is an `ssl.MemoryBIO` and `sslobj` an `_ssl._SSLSocket`, so
    /// their `write`/`read` get a reusable buffer instead of a `memoryview` per call.
    #[new]
    #[pyo3(signature = (incoming, outgoing, sslobj, wrapped, flushing, again, c_buffers = false))]
    fn new(
        incoming: &Bound<'_, PyAny>,
        outgoing: &Bound<'_, PyAny>,
        sslobj: &Bound<'_, PyAny>,
        wrapped: &Bound<'_, PyAny>,
        flushing: &Bound<'_, PyAny>,
        again: &Bound<'_, PyTuple>,
        c_buffers: bool,
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
            read_chunk: READ_CHUNK.into_pyobject(py)?.into_any().unbind(),
            window: if c_buffers {
                Some(BufferWindow::new_object(py)?)
            } else {
                None
            },
            mirror: GilRefCell::new(Mirror::empty()),
            writer: GilRefCell::new(None),
            app_in: AtomicU64::new(0),
            app_out: AtomicU64::new(0),
            seen_backlog: AtomicI64::new(0),
        })
    }

    /// For `ferroloop.inspect_transports`: application bytes handed to `data_received`, and
    /// written by the app and accepted by TLS (encrypted, or queued in the backlog).
    fn _app_counts(&self) -> (u64, u64) {
        (
            self.app_in.load(Ordering::Relaxed),
            self.app_out.load(Ordering::Relaxed),
        )
    }

    /// Re-reads the protocol attributes the data path uses (called by the protocol's
    /// `__setattr__` whenever it assigns one of them).
    fn sync(&self, protocol: &Bound<'_, PyAny>) -> PyResult<()> {
        self.sync_impl(protocol)
    }

    /// `SSLProtocol._do_read` of `protocol`.
    fn do_read(&self, protocol: &Bound<'_, PyAny>) -> PyResult<()> {
        self.ensure_synced(protocol)?;
        self.do_read_impl(protocol, None)
    }

    /// `SSLProtocol._process_outgoing` of `protocol`.
    fn process_outgoing(&self, protocol: &Bound<'_, PyAny>) -> PyResult<()> {
        self.ensure_synced(protocol)?;
        self.process_outgoing_impl(protocol, false)
    }

    /// `data` received from the socket for `protocol` (what `buffer_updated` does).
    fn data_received(
        &self,
        protocol: &Bound<'_, PyAny>,
        data: &Bound<'_, PyBytes>,
    ) -> PyResult<()> {
        self.write_incoming(protocol.py(), data.as_bytes())?;
        self.after_incoming(protocol, data.as_bytes().len())
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
        self.ensure_synced(protocol)?;
        if self.with(py, |m| m.state != State::Wrapped) || self.backlog_nonempty(py)? {
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
            // What is not encrypted now is counted when it enters the backlog (`sync`).
            add(&self.app_out, count as u64);
            if count < size {
                // The rest waits in the backlog, as `_do_write` leaves it.
                let rest = data.get_item(PySlice::new(py, count as isize, size as isize, 1))?;
                protocol
                    .getattr(intern!(py, "_write_backlog"))?
                    .call_method1(intern!(py, "append"), (rest,))?;
                let buffered = int_attr(protocol, intern!(py, "_write_buffer_size"))?;
                protocol.setattr(
                    intern!(py, "_write_buffer_size"),
                    buffered + (size - count) as isize,
                )?;
            }
            // `SSLObject.write` put records into the outgoing BIO if it took any byte.
            self.process_outgoing_impl(protocol, count > 0)
        })
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        // Borrowed right now (a collection inside a pump method): report nothing, the
        // objects merely look externally referenced for this collection.
        let Some(mirror) = self.mirror.try_borrow_in_gc() else {
            return Ok(());
        };
        for obj in [
            &mirror.app_protocol,
            &mirror.transport,
            &mirror.write_backlog,
        ]
        .into_iter()
        .flatten()
        {
            visit.call(obj)?;
        }
        Ok(())
    }

    fn __clear__(&self) {
        if let Some(mut mirror) = self.mirror.try_borrow_in_gc() {
            let old = std::mem::replace(&mut *mirror, Mirror::empty());
            drop(mirror);
            drop(old);
        }
    }
}
