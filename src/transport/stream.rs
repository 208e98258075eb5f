//! The stream transport (TCP and Unix sockets): asyncio's `Transport` with its read and write
//! paths in Rust.
//!
//! Reading: the loop runs `_read_ready` when the socket is readable (a reader handle, so I/O
//! callbacks keep asyncio's place in the ready queue); it calls `recv(2)` into one buffer per
//! thread and hands a `bytes` to `protocol.data_received` (or fills the BufferedProtocol's
//! buffer). After a large read the next one goes straight into a new `bytes`, and a `bytes`
//! the protocol let go of is reused (`interop/spare_bytes.rs`). Idle connections hold no read
//! buffer.
//!
//! Writing: `write()` tries the socket at once and buffers only what it did not take (see
//! `write_buffer.rs`); a writer handle then flushes the buffer with one vectored send per
//! writability event. Flow control calls the protocol's `pause_writing`/`resume_writing` at
//! the high/low water marks.
//!
//! Order and arguments of the protocol calls are CPython 3.11's selector transport's:
//! `connection_made` → `data_received`* → `eof_received` → `connection_lost`, with the same
//! error reporting (`call_exception_handler` for non-OSErrors, debug log for OSErrors).
//!
//! `type(t)` is this class; its `__class__` property reports `asyncio.Transport`, so
//! `isinstance(t, asyncio.Transport)` holds (a native class cannot inherit a Python class that
//! has `__slots__`, as `asyncio.BaseTransport` does).

use std::cell::RefMut;
use std::io;

use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyMemoryView};
use pyo3::{intern, PyTraverseError, PyVisit};

use crate::core::direct_syscall;
use crate::event_loop::handle::NativeMethod;
use crate::event_loop::sock_io::{recv_into_new_bytes, recv_raw};
use crate::event_loop::{LoopCore, Side};
use crate::interop::errors::os_error;
use crate::interop::gil_cell::GilRefCell;
use crate::interop::lazy_dict;
use crate::interop::py_cache;
use crate::interop::py_cache::python_at_least;
use crate::interop::spare_bytes;
use crate::transport::accept::AcceptedSocket;
use crate::transport::core::{
    transport_pymethods, with_read_buffer, would_block, CoreState, NativeTransport,
    ReadingTransport, TransportState, LOST_WRITES_BEFORE_WARNING,
};
use crate::transport::payload::{ByteView, Payload};
use crate::transport::sockaddr::{socket_family, CompactAddr, RawAddr};
use crate::transport::socket_info::{close_socket_object, warn_unclosed};
use crate::transport::tls_pump::{NativeWriter, TlsPump};
use crate::transport::write_buffer::{
    memory_error, LiveByteArray, PinnedView, SharedBytes, WriteBuffer, MAX_IOVECS,
};

/// A read at least this large makes the next one read straight into a new `bytes`.
const LARGE_READ: usize = 32 * 1024;
/// The size of that `bytes`: below glibc's default mmap threshold (128 KiB), so that even
/// with malloc's default settings it comes from the heap and shrinks in place, instead of
/// costing an mmap/mremap/munmap per read (what asyncio's 256 KiB reads cost unpinned).
const LARGE_READ_SIZE: usize = 120 * 1024;
/// The mutable state of a transport (GIL-guarded; never borrowed across a Python call).
pub(crate) struct State {
    /// What every native transport has (see `core.rs`).
    core: CoreState,
    /// The socket's descriptor.
    fd: i32,
    /// The socket object; closed and dropped once the connection is lost. A connection
    /// accepted natively (`accept.rs`) has none until someone asks for it.
    sock: Option<Py<PyAny>>,
    /// The descriptor is ours to close (no socket object owns it yet).
    owns_fd: bool,
    /// The socket was closed (the connection is lost).
    closed: bool,
    /// The socket's address family.
    family: i32,
    /// The last read was large (see `_read_ready`).
    large_reads: bool,
    /// Bytes received so far (for `ferroloop.inspect_transports`).
    bytes_in: u64,
    /// Bytes handed to `write()` so far; those sent are this minus the ones still buffered.
    bytes_written: u64,
    /// The peer's address, for a natively accepted connection (others keep it in `extra`).
    peer: Option<CompactAddr>,
    /// What few connections use, allocated when first needed (see `Cold`).
    cold: Option<Box<Cold>>,
    /// The protocol is an `asyncio.BufferedProtocol`.
    buffered: bool,
    protocol_connected: bool,
    server: Option<Py<PyAny>>,
    buffer: WriteBuffer,
    /// `write_eof()` was called.
    eof: bool,
    /// `pause_reading()` is in effect.
    paused: bool,
}

/// The state most connections never use, kept out of `State` so that an idle connection's
/// transport object is smaller (CPython's allocator class 208 instead of 240; 5,000 idle
/// connections measured 741 → 677 bytes of RSS each, CPython 3.11; then 192 with the TLS
/// pump and the extra info here, which a natively accepted plain connection has neither of).
#[derive(Default)]
struct Cold {
    /// The protocol is our TLS protocol: received bytes go to its native pump.
    tls: Option<Py<TlsPump>>,
    /// Extra info: what the creator passed, plus what `get_extra_info` computed.
    extra: Option<Py<PyDict>>,
    /// The local address, read just before the socket was closed.
    sockname_at_close: Option<CompactAddr>,
    /// The `TransportSocket` handed out by `get_extra_info('socket')`.
    transport_socket: Option<Py<PyAny>>,
    /// The future `loop.sendfile` waits on for the buffer to drain.
    empty_waiter: Option<Py<PyAny>>,
}

impl State {
    #[allow(clippy::too_many_arguments)]
    fn new(
        event_loop: Py<LoopCore>,
        sock: Option<Py<PyAny>>,
        fd: i32,
        protocol: &Bound<'_, PyAny>,
        buffered: bool,
        extra: Option<Py<PyDict>>,
        server: Option<Py<PyAny>>,
        peer: Option<CompactAddr>,
    ) -> Self {
        let family = socket_family(fd);
        set_nodelay(fd, family);
        let tls = tls_pump_of(protocol);
        let cold = (tls.is_some() || extra.is_some()).then(|| {
            Box::new(Cold {
                tls,
                extra,
                ..Cold::default()
            })
        });
        State {
            core: CoreState::new(event_loop, protocol.clone().unbind()),
            owns_fd: sock.is_none(),
            sock,
            closed: false,
            fd,
            family,
            large_reads: false,
            bytes_in: 0,
            bytes_written: 0,
            peer,
            cold,
            buffered,
            protocol_connected: true,
            server,
            buffer: WriteBuffer::default(),
            eof: false,
            paused: false,
        }
    }

    /// The rarely used state, allocated on first use.
    fn cold_mut(&mut self) -> &mut Cold {
        self.cold.get_or_insert_with(Box::default)
    }

    /// The native TLS pump of the protocol, if it is our TLS protocol.
    fn tls(&self) -> Option<&Py<TlsPump>> {
        self.cold.as_ref()?.tls.as_ref()
    }

    /// Sets (or clears) the TLS pump, allocating the cold state only to set one.
    fn set_tls(&mut self, tls: Option<Py<TlsPump>>) -> Option<Py<TlsPump>> {
        if tls.is_none() && self.cold.is_none() {
            return None;
        }
        std::mem::replace(&mut self.cold_mut().tls, tls)
    }

    /// The extra info dict, if the transport has one.
    fn extra(&self) -> Option<&Py<PyDict>> {
        self.cold.as_ref()?.extra.as_ref()
    }

    /// The future `loop.sendfile` waits on, if one is in progress.
    fn empty_waiter(&self) -> Option<&Py<PyAny>> {
        self.cold.as_ref()?.empty_waiter.as_ref()
    }

    /// Takes the sendfile future out.
    fn take_empty_waiter(&mut self) -> Option<Py<PyAny>> {
        self.cold.as_mut()?.empty_waiter.take()
    }
}

/// The native TLS pump of `protocol` (`_tls.py`'s `SSLProtocol`), if it has one; the pump
/// is offered this transport's native write (`TLS_WRITER`), so that it can write the records
/// it encrypts without a Python call.
fn tls_pump_of(protocol: &Bound<'_, PyAny>) -> Option<Py<TlsPump>> {
    let py = protocol.py();
    let pump = protocol
        .getattr_opt(intern!(py, "_ferroloop_tls_pump"))
        .ok()
        .flatten()?;
    let pump = pump.cast_into::<TlsPump>().ok()?;
    pump.get().offer_writer(py, &TLS_WRITER);
    Some(pump.unbind())
}

/// The native `write` the TLS pump takes for a stream transport (see
/// `tls_pump::NativeWriter`).
static TLS_WRITER: NativeWriter = NativeWriter {
    accepts: writes_natively,
    write: write_for_tls,
};

/// `transport` is a stream transport whose class keeps the native `write`.
fn writes_natively(transport: &Bound<'_, PyAny>) -> PyResult<bool> {
    let py = transport.py();
    if !transport.is_instance_of::<StreamTransport>() {
        return Ok(false);
    }
    let write = transport.get_type().getattr(intern!(py, "write"))?;
    let native = py
        .get_type::<StreamTransport>()
        .getattr(intern!(py, "write"))?;
    Ok(write.is(&native))
}

/// `transport.write(data)` for the TLS pump, on a transport `writes_natively` accepted. A
/// `write` set on the instance itself (a test's `mock.patch.object(transport, "write")`) is
/// called instead, as asyncio's `SSLProtocol` would find it.
fn write_for_tls(transport: &Bound<'_, PyAny>, data: &Bound<'_, PyAny>) -> PyResult<()> {
    let py = transport.py();
    if let Some(own) = lazy_dict::instance_attribute(transport, intern!(py, "write").as_any()) {
        own.call1((data,))?;
        return Ok(());
    }
    StreamTransport::write(transport.cast::<StreamTransport>()?, data)
}

impl TransportState for State {
    fn fd(&self) -> i32 {
        self.fd
    }
    fn core(&self) -> &CoreState {
        &self.core
    }
    fn core_mut(&mut self) -> &mut CoreState {
        &mut self.core
    }
    fn pending_bytes(&self) -> usize {
        self.buffer.len()
    }
    fn has_pending(&self) -> bool {
        !self.buffer.is_empty()
    }
    fn discard_pending(&mut self) {
        self.buffer.clear();
    }
}

/// `_read_ready`, run by the loop without a Python call (see `handle::NativeMethod`).
static READ_READY: NativeMethod = NativeMethod {
    name: "_read_ready",
    call: |transport| StreamTransport::_read_ready(transport.cast::<StreamTransport>()?),
};

/// `_write_ready`, run by the loop without a Python call.
static WRITE_READY: NativeMethod = NativeMethod {
    name: "_write_ready",
    call: |transport| StreamTransport::_write_ready(transport.cast::<StreamTransport>()?),
};

/// asyncio's stream transport over a connected non-blocking socket.
#[pyclass(
    frozen,
    weakref,
    dict,
    module = "ferroloop._ferroloop",
    name = "StreamTransport"
)]
pub struct StreamTransport {
    state: GilRefCell<State>,
}

/// `send(2)` of the whole of `data` at most, with MSG_NOSIGNAL (a vanished peer gives EPIPE,
/// never SIGPIPE, whatever the embedding program did with that signal). EINTR is retried.
fn send_raw(fd: i32, data: &[u8]) -> io::Result<usize> {
    loop {
        let n = direct_syscall::send(fd, data, libc::MSG_NOSIGNAL);
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// One vectored send of the buffer's first pieces; returns the bytes sent.
fn send_buffer(fd: i32, buffer: &WriteBuffer) -> io::Result<usize> {
    let mut iovecs = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; MAX_IOVECS];
    let count = buffer.fill_iovecs(&mut iovecs);
    loop {
        // SAFETY: zeroed msghdr is a valid "no address, no control data" header.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = iovecs.as_mut_ptr();
        msg.msg_iovlen = count as _;
        // SAFETY: the iovecs describe live buffer contents; sendmsg only reads them.
        let n = unsafe { direct_syscall::sendmsg(fd, &msg, libc::MSG_NOSIGNAL) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// TCP_NODELAY on TCP sockets, as asyncio sets it on every stream transport.
fn set_nodelay(fd: i32, family: i32) {
    if family != libc::AF_INET && family != libc::AF_INET6 {
        return;
    }
    let one: libc::c_int = 1;
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from `one`. Failure (not a TCP
    // socket) is ignored, as asyncio only sets it where it applies.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

impl NativeTransport for StreamTransport {
    type State = State;
    fn state(&self) -> &GilRefCell<State> {
        &self.state
    }

    /// Also notes whether the new protocol is a buffered one, or our TLS protocol with its
    /// native pump (asyncio's `_protocol_connected` is set too).
    fn replace_protocol(&self, protocol: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = protocol.py();
        let buffered =
            protocol.is_instance(py_cache::asyncio_buffered_protocol_type(py)?.bind(py))?;
        let tls = tls_pump_of(protocol);
        let previous = {
            let mut state = self.state.borrow_mut(py);
            state.buffered = buffered;
            let previous_tls = state.set_tls(tls);
            state.protocol_connected = true;
            (
                state.core.protocol.replace(protocol.clone().unbind()),
                previous_tls,
            )
        };
        drop(previous);
        Ok(())
    }
}

impl ReadingTransport for StreamTransport {
    fn is_paused(state: &State) -> bool {
        state.paused
    }
    fn set_paused(state: &mut State, paused: bool) {
        state.paused = paused;
    }
    fn watch_readable(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::watch(slf, Side::Read, &READ_READY)
    }
}

impl StreamTransport {
    fn with_state(state: State) -> Self {
        StreamTransport {
            state: GilRefCell::new(state),
        }
    }

    /// The checks `write()` and `writelines()` (`method`) make before queueing anything, in
    /// asyncio's order: a RuntimeError after `write_eof()` or while a sendfile is in progress;
    /// then nothing to send (`is_empty`) is done; then a lost connection is done too, counting
    /// the write and logging asyncio's warning from the sixth one on (with `counts_lost`
    /// false, as `writelines()` before 3.14, it is done without counting). Returns the state,
    /// still borrowed, when the data is to be sent.
    fn admit_write(
        &self,
        py: Python<'_>,
        method: &str,
        is_empty: impl FnOnce() -> PyResult<bool>,
        counts_lost: bool,
    ) -> PyResult<Option<RefMut<'_, State>>> {
        let mut state = self.state.borrow_mut(py);
        if state.eof {
            return Err(PyRuntimeError::new_err(format!(
                "Cannot call {method}() after write_eof()"
            )));
        }
        if state.empty_waiter().is_some() {
            return Err(PyRuntimeError::new_err(format!(
                "unable to {method}; sendfile is in progress"
            )));
        }
        if is_empty()? {
            return Ok(None);
        }
        if state.core.conn_lost > 0 {
            if !counts_lost {
                return Ok(None);
            }
            let warn = state.core.conn_lost >= LOST_WRITES_BEFORE_WARNING;
            state.core.conn_lost += 1;
            drop(state);
            if warn {
                py_cache::asyncio_logger(py)?
                    .bind(py)
                    .call_method1("warning", ("socket.send() raised exception.",))?;
            }
            return Ok(None);
        }
        Ok(Some(state))
    }

    /// `writelines()` of Python 3.12+: each non-empty piece queued as a memoryview of it,
    /// then one flush; what the socket does not take waits for writability. 3.14+ drop the
    /// call once the connection is lost (with write()'s warnings) and may pause the protocol;
    /// 3.15+ queue the pieces one by one (those before a piece that is not bytes-like stay
    /// queued), earlier versions check every piece before queueing any.
    fn writelines_by_reference(
        slf: &Bound<'_, Self>,
        list_of_data: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let drops_when_lost = python_at_least(3, 14);
        let incremental = python_at_least(3, 15);
        let admitted = this.admit_write(
            py,
            "writelines",
            || Ok(!list_of_data.is_truthy()?),
            drops_when_lost,
        )?;
        if admitted.is_none() {
            return Ok(());
        }
        drop(admitted);
        let was_empty = this.state.borrow_mut(py).buffer.is_empty();
        let mut pieces = Vec::new();
        let mut failure = None;
        for item in list_of_data.try_iter()? {
            let piece = item.and_then(|item| {
                let view = PyMemoryView::from(&item)?;
                ByteView::new(view.as_any(), ffi::PyBUF_SIMPLE)
            });
            match piece {
                Ok(view) if view.len() == 0 => {}
                Ok(view) => pieces.push(view),
                Err(err) => {
                    failure = Some(err);
                    break;
                }
            }
        }
        if failure.is_none() || incremental {
            let mut state = this.state.borrow_mut(py);
            for view in pieces {
                state.bytes_written += view.len() as u64;
                state.buffer.push_pinned(PinnedView::new(view), 0);
            }
        }
        if let Some(err) = failure {
            // A non-contiguous memoryview: asyncio's sendmsg fails at the flush, a fatal write
            // error; anything else is the caller's TypeError.
            if err.is_instance_of::<pyo3::exceptions::PyBufferError>(py) {
                return Self::fatal_error(slf, err, "Fatal write error on socket transport");
            }
            return Err(err);
        }
        if this.state.borrow_mut(py).buffer.is_empty() {
            return Ok(());
        }
        Self::_write_ready(slf)?;
        if was_empty && !this.state.borrow_mut(py).buffer.is_empty() {
            Self::watch(slf, Side::Write, &WRITE_READY)?;
        }
        if drops_when_lost {
            Self::maybe_pause_protocol(slf)?;
        }
        Ok(())
    }

    /// The socket object, created on first request for a natively accepted connection
    /// (it then owns the descriptor); None once closed.
    fn socket_object(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        let (sock, owns_fd, closed, fd) = {
            let state = self.state.borrow_mut(py);
            (
                state.sock.as_ref().map(|s| s.clone_ref(py)),
                state.owns_fd,
                state.closed,
                state.fd,
            )
        };
        if closed {
            return Ok(None);
        }
        if let Some(sock) = sock {
            return Ok(Some(sock));
        }
        if !owns_fd {
            return Ok(None);
        }
        let kwargs = PyDict::new(py);
        kwargs.set_item("fileno", fd)?;
        let sock = py
            .import("socket")?
            .getattr("socket")?
            .call((), Some(&kwargs))?
            .unbind();
        let mut state = self.state.borrow_mut(py);
        state.owns_fd = false;
        state.sock = Some(sock.clone_ref(py));
        Ok(Some(sock))
    }

    /// Closes the socket (connection lost, or an unclosed transport deallocated). With
    /// `keep_info`, the local address is read first so that `get_extra_info('sockname')`
    /// still answers afterwards, as asyncio's (read at creation) does.
    fn close_socket(&self, py: Python<'_>, keep_info: bool) -> PyResult<()> {
        let (sock, owns_fd, fd) = {
            let mut state = self.state.borrow_mut(py);
            if state.closed {
                return Ok(());
            }
            if keep_info {
                let sockname = RawAddr::of_socket(state.fd, false)
                    .ok()
                    .map(|raw| CompactAddr::new(&raw));
                if sockname.is_some() {
                    state.cold_mut().sockname_at_close = sockname;
                }
            }
            state.closed = true;
            let owns_fd = std::mem::take(&mut state.owns_fd);
            (state.sock.take(), owns_fd, state.fd)
        };
        if let Some(sock) = sock {
            close_socket_object(py, sock.bind(py))?;
        } else if owns_fd {
            // SAFETY: closing the descriptor this transport owns, exactly once (`owns_fd`
            // was cleared above).
            unsafe {
                libc::close(fd);
            }
        }
        Ok(())
    }

    /// End of stream from the peer: `eof_received()`; a true result keeps the write side open.
    fn on_eof(slf: &Bound<'_, Self>, protocol: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        if slf.get().is_debug(py) {
            py_cache::asyncio_logger(py)?
                .bind(py)
                .call_method1("debug", ("%r received EOF", slf))?;
        }
        match protocol.call_method0(intern!(py, "eof_received")) {
            Err(err) => Self::fatal_error(
                slf,
                err,
                "Fatal error: protocol.eof_received() call failed.",
            ),
            Ok(keep_open) => {
                if keep_open.is_truthy()? {
                    // Half-closed: no more reading, writing goes on.
                    slf.get().unwatch(py, Side::Read)
                } else {
                    Self::close(slf)
                }
            }
        }
    }

    fn read_into_protocol_buffer(
        slf: &Bound<'_, Self>,
        fd: i32,
        protocol: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let py = slf.py();
        let buf = match protocol
            .call_method1(intern!(py, "get_buffer"), (-1,))
            .and_then(|buf| {
                if buf.len()? == 0 {
                    Err(PyRuntimeError::new_err(
                        "get_buffer() returned an empty buffer",
                    ))
                } else {
                    Ok(buf)
                }
            }) {
            Ok(buf) => buf,
            Err(err) => {
                return Self::fatal_error(
                    slf,
                    err,
                    "Fatal error: protocol.get_buffer() call failed.",
                )
            }
        };
        // A buffer we cannot write into fails the receive itself, as `sock.recv_into` would.
        let view = match ByteView::new(&buf, ffi::PyBUF_WRITABLE) {
            Ok(view) => view,
            Err(_) => {
                let err = PyTypeError::new_err(format!(
                    "recv_into() argument 'buffer' must be read-write bytes-like object, not {}",
                    buf.get_type().name()?
                ));
                return Self::fatal_error(slf, err, "Fatal read error on socket transport");
            }
        };
        // SAFETY: the view is writable (requested with PyBUF_WRITABLE), `len()` bytes long,
        // and stays valid until it is released just below.
        let target = unsafe { std::slice::from_raw_parts_mut(view.as_mut_ptr(), view.len()) };
        let received = recv_raw(fd, target);
        drop(view);
        let n = match received {
            Ok(n) => n,
            Err(err) if would_block(&err) => return Ok(()),
            Err(err) => {
                return Self::fatal_error(
                    slf,
                    os_error(err),
                    "Fatal read error on socket transport",
                )
            }
        };
        if n == 0 {
            return Self::on_eof(slf, protocol);
        }
        slf.get().state.borrow_mut(py).bytes_in += n as u64;
        if let Err(err) = protocol.call_method1(intern!(py, "buffer_updated"), (n,)) {
            return Self::fatal_error(
                slf,
                err,
                "Fatal error: protocol.buffer_updated() call failed.",
            );
        }
        Ok(())
    }

    /// Connection lost: `protocol.connection_lost(exc)`, then the socket is closed and every
    /// reference the transport holds is dropped.
    fn connection_lost(slf: &Bound<'_, Self>, exc: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let (protocol, connected) = {
            let state = slf.get().state.borrow_mut(py);
            (
                state.core.protocol.as_ref().map(|p| p.clone_ref(py)),
                state.protocol_connected,
            )
        };
        let result = match protocol {
            Some(protocol) if connected => protocol
                .bind(py)
                .call_method1(intern!(py, "connection_lost"), (exc,))
                .map(drop),
            _ => Ok(()),
        };
        let (waiter, server, event_loop, protocol) = {
            let mut state = slf.get().state.borrow_mut(py);
            (
                state.take_empty_waiter(),
                state.server.take(),
                state.core.event_loop.take(),
                state.core.protocol.take(),
            )
        };
        if let Some(waiter) = waiter {
            let waiter = waiter.bind(py);
            if !waiter.call_method0(intern!(py, "done"))?.is_truthy()? {
                let err =
                    pyo3::exceptions::PyConnectionError::new_err("Connection is closed by peer");
                waiter.call_method1(intern!(py, "set_exception"), (err.into_value(py),))?;
            }
            // Keep it set: write() keeps refusing data until sendfile ends.
            slf.get().state.borrow_mut(py).cold_mut().empty_waiter = Some(waiter.clone().unbind());
        }
        slf.get().close_socket(py, true)?;
        drop((event_loop, protocol));
        if let Some(server) = server {
            server
                .bind(py)
                .call_method1(intern!(py, "_detach"), (slf,))?;
        }
        result
    }
}

transport_pymethods! {
    impl StreamTransport [base, close, write, reading, socket] {
        /// `StreamTransport(loop, sock, protocol, extra=None, server=None)`: wraps a connected
        /// non-blocking socket. `_start()` then schedules `connection_made` and reading.
        #[new]
        #[pyo3(signature = (event_loop, sock, protocol, extra=None, server=None))]
        fn new(
            event_loop: &Bound<'_, PyAny>,
            sock: &Bound<'_, PyAny>,
            protocol: &Bound<'_, PyAny>,
            extra: Option<&Bound<'_, PyAny>>,
            server: Option<&Bound<'_, PyAny>>,
        ) -> PyResult<Self> {
            let py = sock.py();
            let core = event_loop.cast::<LoopCore>()?.clone().unbind();
            let buffered =
                protocol.is_instance(py_cache::asyncio_buffered_protocol_type(py)?.bind(py))?;
            let server = server.filter(|s| !s.is_none()).map(|s| s.clone().unbind());
            if let Ok(accepted) = sock.cast::<AcceptedSocket>() {
                let Some((fd, peer)) = accepted.get().take(py) else {
                    return Err(PyValueError::new_err("the accepted socket is closed"));
                };
                let extra = match extra {
                    Some(extra) if !extra.is_none() => {
                        Some(extra.cast::<PyDict>()?.clone().unbind())
                    }
                    _ => None,
                };
                return Ok(StreamTransport::with_state(State::new(
                    core,
                    None,
                    fd,
                    protocol,
                    buffered,
                    extra,
                    server,
                    Some(peer),
                )));
            }
            let fd: i32 = sock.call_method0(intern!(py, "fileno"))?.extract()?;
            // asyncio keeps the caller's dict itself. The peer's address is read now, as asyncio
            // does, since it is gone once the peer disconnects; `socket` and `sockname` are
            // computed when first asked for.
            let extra = match extra {
                Some(extra) if !extra.is_none() => extra.cast::<PyDict>()?.clone(),
                _ => PyDict::new(py),
            };
            if !extra.contains(intern!(py, "peername"))? {
                let peer = match sock.call_method0(intern!(py, "getpeername")) {
                    Ok(addr) => addr,
                    Err(err) if err.is_instance_of::<pyo3::exceptions::PyOSError>(py) => {
                        py.None().into_bound(py)
                    }
                    Err(err) => return Err(err),
                };
                extra.set_item(intern!(py, "peername"), peer)?;
            }
            Ok(StreamTransport::with_state(State::new(
                core,
                Some(sock.clone().unbind()),
                fd,
                protocol,
                buffered,
                Some(extra.unbind()),
                server,
                None,
            )))
        }

        /// Second half of construction (needs the object itself): registers the transport with
        /// the loop and server and schedules `connection_made`, reading and the waiter.
        #[pyo3(signature = (waiter=None))]
        fn _start(slf: &Bound<'_, Self>, waiter: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
            lazy_dict::release_unused_dict(slf.as_any());
            if !Self::enter_registry(slf) {
                return Ok(());
            }
            let py = slf.py();
            let server = {
                let state = slf.get().state.borrow_mut(py);
                state.server.as_ref().map(|s| s.clone_ref(py))
            };
            if let Some(server) = server {
                server
                    .bind(py)
                    .call_method1(intern!(py, "_attach"), (slf,))?;
            }
            Self::schedule_start(slf, waiter)
        }

        #[getter(__class__)]
        fn class(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
            Ok(py_cache::asyncio_transport_type(py)?.clone_ref(py))
        }

        /// `loop.start_tls()` accepts this transport.
        #[classattr]
        fn _start_tls_compatible() -> bool {
            true
        }

        fn __repr__(&self, py: Python<'_>) -> String {
            let state = self.state.borrow_mut(py);
            let status = if state.closed {
                "closed"
            } else if state.core.closing {
                "closing"
            } else {
                "open"
            };
            format!("<StreamTransport fd={} {status}>", state.fd)
        }

        fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
            // The collector runs with the GIL held; if the state is borrowed right now (a
            // collection triggered inside a transport method), reporting nothing is safe: the
            // objects merely look externally referenced for this collection.
            let Some(state) = self.state.try_borrow_in_gc() else {
                return Ok(());
            };
            let cold = state.cold.as_deref();
            for obj in [
                state.core.protocol.as_ref(),
                state.sock.as_ref(),
                cold.and_then(|c| c.transport_socket.as_ref()),
                state.server.as_ref(),
                cold.and_then(|c| c.empty_waiter.as_ref()),
            ]
            .into_iter()
            .flatten()
            {
                visit.call(obj)?;
            }
            if let Some(extra) = state.extra() {
                visit.call(extra)?;
            }
            Ok(())
        }

        fn __clear__(&self) {
            let Some(mut state) = self.state.try_borrow_in_gc() else {
                return;
            };
            // Unreachable garbage: break the cycles (protocol ↔ transport, extra info).
            let protocol = state.core.protocol.take();
            let extra = state.cold.as_mut().and_then(|c| c.extra.take());
            let server = state.server.take();
            let waiter = state.take_empty_waiter();
            drop(state);
            drop((protocol, extra, server, waiter));
        }

        /// Starts reading, unless paused or closing (scheduled after `connection_made`).
        fn _start_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
            if slf.get().reading(slf.py()) {
                Self::watch_readable(slf)?;
            }
            Ok(())
        }

        /// The socket is readable: one receive, handed to the protocol.
        fn _read_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
            let py = slf.py();
            let (fd, protocol, buffered, tls, large) = {
                let state = slf.get().state.borrow_mut(py);
                if state.core.conn_lost > 0 {
                    return Ok(());
                }
                let Some(protocol) = state.core.protocol.as_ref() else {
                    return Ok(());
                };
                // Bound references (a `Py` would be released through PyO3's check that the
                // thread is attached, a thread-local read per request).
                let tls = state.tls().map(|pump| pump.bind(py).clone());
                (state.fd, protocol.bind(py).clone(), state.buffered, tls, state.large_reads)
            };
            let protocol = &protocol;
            if let Some(pump) = tls {
                return Self::read_into_tls(slf, fd, protocol, pump.get());
            }
            if buffered {
                return Self::read_into_protocol_buffer(slf, fd, protocol);
            }
            // Small reads go through the shared buffer and are copied out; after a large read,
            // the next one goes straight into a new `bytes` shrunk to what arrived (a 64 KiB
            // copy costs more than the allocation), as `socket.recv` does.
            let received = if large {
                match recv_into_new_bytes(py, fd, LARGE_READ_SIZE)? {
                    Ok(obj) => Ok(obj.into_bound(py).cast_into::<PyBytes>()?),
                    Err(err) => Err(err),
                }
            } else {
                with_read_buffer(|buf| {
                    recv_raw(fd, buf).map(|n| spare_bytes::bytes_from(py, &buf[..n]))
                })
            };
            if let Ok(data) = &received {
                let mut state = slf.get().state.borrow_mut(py);
                let n = data.as_bytes().len();
                state.large_reads = n >= LARGE_READ;
                state.bytes_in += n as u64;
            }
            let data = match received {
                Ok(data) => data,
                Err(err) if would_block(&err) => return Ok(()),
                Err(err) => {
                    return Self::fatal_error(
                        slf,
                        os_error(err),
                        "Fatal read error on socket transport",
                    )
                }
            };
            if data.as_bytes().is_empty() {
                return Self::on_eof(slf, protocol);
            }
            if let Err(err) = protocol.call_method1(intern!(py, "data_received"), (&data,)) {
                return Self::fatal_error(
                    slf,
                    err,
                    "Fatal error: protocol.data_received() call failed.",
                );
            }
            spare_bytes::recycle(data);
            Ok(())
        }

        /// For `ferroloop.inspect_transports`: bytes received, bytes handed to `write()`, and
        /// whether the protocol's writing is paused (flow control).
        fn _io_counts(&self, py: Python<'_>) -> (u64, u64, bool) {
            let state = self.state.borrow_mut(py);
            (state.bytes_in, state.bytes_written, state.core.protocol_paused)
        }

        /// Sends `data` (bytes, bytearray or memoryview): at once if the buffer is empty, the rest
        /// (or all of it) buffered and sent when the socket is writable.
        pub(crate) fn write(slf: &Bound<'_, Self>, data: &Bound<'_, PyAny>) -> PyResult<()> {
            let py = slf.py();
            let this = slf.get();
            let mut payload = Payload::for_write(data)?;
            let unsendable = payload.take_unsendable();
            let contents = payload.as_slice();
            let (fd, was_empty) = match this.admit_write(py, "write", || Ok(contents.is_empty()), true)? {
                Some(mut state) => {
                    state.bytes_written += contents.len() as u64;
                    (state.fd, state.buffer.is_empty())
                }
                None => return Ok(()),
            };
            let mut sent = 0;
            if let Some(err) = unsendable {
                // asyncio: with nothing buffered, `sock.send` raises BufferError, a fatal write
                // error. With data buffered, 3.11 raises TypeError from `bytearray.extend`; 3.12+
                // queue the view and fail the same way at the next flush (which drops the buffer):
                // here at once.
                if !was_empty && !python_at_least(3, 12) {
                    return Err(PyTypeError::new_err(
                        "can't set bytearray slice from memoryview",
                    ));
                }
                return Self::fatal_error(slf, err, "Fatal write error on socket transport");
            }
            if was_empty {
                // Try the socket at once; buffer only what it did not take.
                match send_raw(fd, contents) {
                    Ok(n) if n == contents.len() => return Ok(()),
                    Ok(n) => sent = n,
                    Err(err) if would_block(&err) => {}
                    Err(err) => {
                        return Self::fatal_error(
                            slf,
                            os_error(err),
                            "Fatal write error on socket transport",
                        )
                    }
                }
            }
            // A bytearray or memoryview: CPython 3.12+ buffers the object itself (see
            // write_buffer.rs), 3.11 a copy.
            let by_reference =
                matches!(payload, Payload::View(_)) && python_at_least(3, 12);
            {
                let mut state = this.state.borrow_mut(py);
                if by_reference {
                    match data.cast::<PyByteArray>() {
                        // Not sent at all: the bytearray itself (sent as it is then).
                        Ok(bytearray) if sent == 0 => {
                            state.buffer.push_live(LiveByteArray::new(bytearray))
                        }
                        // A memoryview, or the rest of a partly sent bytearray
                        // (`memoryview(data)[n:]`): held through a buffer view.
                        _ => {
                            if let Some(view) = payload.into_view() {
                                state.buffer.push_pinned(PinnedView::new(view), sent);
                            }
                        }
                    }
                } else {
                    match payload.immutable_bytes() {
                        Some(b) if contents.len() - sent >= 4096 => {
                            state.buffer.push_shared(SharedBytes::new(b), sent)
                        }
                        _ => state.buffer.push_copy(contents, sent).map_err(memory_error)?,
                    }
                }
            }
            if was_empty {
                Self::watch(slf, Side::Write, &WRITE_READY)?;
            }
            Self::maybe_pause_protocol(slf)
        }

        /// Python 3.11: `write(b"".join(list_of_data))`. 3.12+: every piece queued as a
        /// memoryview of it (its current contents are what is sent), then one flush, as
        /// asyncio's socket transport does.
        fn writelines(slf: &Bound<'_, Self>, list_of_data: &Bound<'_, PyAny>) -> PyResult<()> {
            let py = slf.py();
            if !python_at_least(3, 12) {
                let joined =
                    PyBytes::new(py, b"").call_method1(intern!(py, "join"), (list_of_data,))?;
                return Self::write(slf, &joined);
            }
            Self::writelines_by_reference(slf, list_of_data)
        }

        /// The socket is writable: flush as much of the buffer as it takes.
        fn _write_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
            let py = slf.py();
            let this = slf.get();
            let outcome = {
                let mut state = this.state.borrow_mut(py);
                if state.core.conn_lost > 0 {
                    return Ok(());
                }
                if state.buffer.is_empty() {
                    Ok(None)
                } else {
                    match send_buffer(state.fd, &state.buffer) {
                        // The rest of a partly sent bytearray could not be copied.
                        Ok(n) => Ok(state.buffer.consume(n).err().map(memory_error)),
                        Err(err) => Err(err),
                    }
                }
            };
            let failure = match outcome {
                Ok(None) => None,
                Ok(Some(short_of_memory)) => Some(short_of_memory),
                Err(err) if would_block(&err) => return Ok(()),
                Err(err) => Some(os_error(err)),
            };
            match failure {
                None => {}
                Some(err) => {
                    this.unwatch(py, Side::Write)?;
                    this.state.borrow_mut(py).buffer.clear();
                    let waiter = this
                        .state
                        .borrow_mut(py)
                        .empty_waiter()
                        .map(|w| w.clone_ref(py));
                    let exc = err.value(py).clone();
                    Self::fatal_error(slf, err, "Fatal write error on socket transport")?;
                    if let Some(waiter) = waiter {
                        let waiter = waiter.bind(py);
                        if !waiter.call_method0(intern!(py, "done"))?.is_truthy()? {
                            waiter.call_method1(intern!(py, "set_exception"), (exc,))?;
                        }
                    }
                    return Ok(());
                }
            }
            Self::maybe_resume_protocol(slf)?;
            let (empty, closing, eof, waiter, fd) = {
                let state = this.state.borrow_mut(py);
                (
                    state.buffer.is_empty(),
                    state.core.closing,
                    state.eof,
                    state.empty_waiter().map(|w| w.clone_ref(py)),
                    state.fd,
                )
            };
            if !empty {
                return Ok(());
            }
            this.unwatch(py, Side::Write)?;
            if let Some(waiter) = waiter {
                let waiter = waiter.bind(py);
                if !waiter.call_method0(intern!(py, "done"))?.is_truthy()? {
                    waiter.call_method1(intern!(py, "set_result"), (py.None(),))?;
                }
            }
            if closing {
                let already = {
                    let mut state = this.state.borrow_mut(py);
                    let already = state.core.conn_lost > 0;
                    state.core.conn_lost += 1; // a later abort() must not report the loss twice
                    already
                };
                if !already {
                    Self::connection_lost(slf, &py.None().into_bound(py))?;
                }
            } else if eof {
                // SAFETY: shutdown on a descriptor we own; errors are reported below.
                if unsafe { libc::shutdown(fd, libc::SHUT_WR) } != 0 {
                    return Err(os_error(io::Error::last_os_error()));
                }
            }
            Ok(())
        }

        /// Runs `protocol.connection_lost(exc)` and releases the socket (scheduled by close/abort).
        fn _call_connection_lost(slf: &Bound<'_, Self>, exc: &Bound<'_, PyAny>) -> PyResult<()> {
            Self::connection_lost(slf, exc)
        }

        /// True: stream sockets can half-close.
        fn can_write_eof(&self) -> bool {
            true
        }

        /// Closes the write side once the buffer is flushed (`shutdown(SHUT_WR)`).
        fn write_eof(&self, py: Python<'_>) -> PyResult<()> {
            let fd = {
                let mut state = self.state.borrow_mut(py);
                if state.core.closing || state.eof {
                    return Ok(());
                }
                state.eof = true;
                if !state.buffer.is_empty() {
                    return Ok(());
                }
                state.fd
            };
            // SAFETY: shutdown on the transport's own descriptor.
            if unsafe { libc::shutdown(fd, libc::SHUT_WR) } != 0 {
                return Err(os_error(io::Error::last_os_error()));
            }
            Ok(())
        }

        /// Extra information: `socket` (an `asyncio.trsock.TransportSocket`), `sockname`,
        /// `peername`, and whatever the transport's creator passed.
        #[pyo3(signature = (name, default=None))]
        fn get_extra_info(
            &self,
            py: Python<'_>,
            name: &Bound<'_, PyAny>,
            default: Option<Py<PyAny>>,
        ) -> PyResult<Py<PyAny>> {
            let default = default.unwrap_or_else(|| py.None());
            let extra = self
                .state
                .borrow_mut(py)
                .extra()
                .map(|e| e.clone_ref(py));
            if let Some(extra) = &extra {
                if let Some(value) = extra.bind(py).get_item(name)? {
                    return Ok(value.unbind());
                }
            }
            let Ok(key) = name.extract::<&str>() else {
                return Ok(default);
            };
            match key {
                "peername" => {
                    let state = self.state.borrow_mut(py);
                    match &state.peer {
                        Some(peer) => Ok(peer.to_python(py)?.unbind()),
                        None => Ok(default),
                    }
                }
                "sockname" => {
                    let (closed, fd) = {
                        let state = self.state.borrow_mut(py);
                        if state.closed {
                            return match state.cold.as_ref().and_then(|c| c.sockname_at_close.as_ref()) {
                                Some(addr) => Ok(addr.to_python(py)?.unbind()),
                                None => Ok(py.None()),
                            };
                        }
                        (state.closed, state.fd)
                    };
                    debug_assert!(!closed);
                    match RawAddr::of_socket(fd, false) {
                        Ok(raw) => Ok(raw.to_python_any(py)?.unbind()),
                        Err(_) => Ok(py.None()),
                    }
                }
                "socket" => {
                    let cached = self
                        .state
                        .borrow_mut(py)
                        .cold
                        .as_ref()
                        .and_then(|c| c.transport_socket.as_ref())
                        .map(|t| t.clone_ref(py));
                    if let Some(cached) = cached {
                        return Ok(cached);
                    }
                    let sock = match self.socket_object(py)? {
                        Some(sock) => sock,
                        None => {
                            // Lost before anyone asked: a closed socket of the same kind, as
                            // asyncio's (made at creation, closed since) reads.
                            let family = self.state.borrow_mut(py).family;
                            let sock = py
                                .import("socket")?
                                .getattr("socket")?
                                .call1((family, libc::SOCK_STREAM))?;
                            sock.call_method0(intern!(py, "close"))?;
                            sock.unbind()
                        }
                    };
                    let wrapped = py_cache::transport_socket_type(py)?
                        .bind(py)
                        .call1((sock,))?
                        .unbind();
                    self.state.borrow_mut(py).cold_mut().transport_socket = Some(wrapped.clone_ref(py));
                    Ok(wrapped)
                }
                _ => Ok(default),
            }
        }

        /// The socket object (None once the connection is lost).
        #[getter]
        fn _sock(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
            self.socket_object(py)
        }

        /// A future resolved once everything written so far has left the buffer; while it is
        /// set, write() refuses data (loop.sendfile owns the socket).
        fn _wait_buffer_empty(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
            let py = slf.py();
            let (event_loop, empty) = {
                let state = slf.get().state.borrow_mut(py);
                if state.empty_waiter().is_some() {
                    return Err(PyRuntimeError::new_err("Empty waiter is already set"));
                }
                (
                    state.core.event_loop.as_ref().map(|l| l.clone_ref(py)),
                    state.buffer.is_empty(),
                )
            };
            let Some(event_loop) = event_loop else {
                return Err(PyRuntimeError::new_err("Transport is closed"));
            };
            let waiter = event_loop
                .bind(py)
                .call_method0(intern!(py, "create_future"))?;
            if empty {
                waiter.call_method1(intern!(py, "set_result"), (py.None(),))?;
            }
            slf.get().state.borrow_mut(py).cold_mut().empty_waiter = Some(waiter.clone().unbind());
            Ok(waiter.unbind())
        }

        /// Ends a sendfile: write() accepts data again.
        fn _end_sendfile(&self, py: Python<'_>) {
            let waiter = self.state.borrow_mut(py).take_empty_waiter();
            drop(waiter);
        }
    }
}

impl Drop for StreamTransport {
    /// An unclosed transport warns (ResourceWarning) and closes its socket, as asyncio's
    /// `__del__` does.
    fn drop(&mut self) {
        Python::attach(|py| {
            self.leave_registry(py);
            let (closed, fd) = {
                let state = self.state.borrow_mut(py);
                (state.closed, state.fd)
            };
            if closed {
                return;
            }
            warn_unclosed(py, "StreamTransport", fd);
            if let Err(err) = self.close_socket(py, false) {
                err.write_unraisable(py, None);
            }
        });
    }
}

impl StreamTransport {
    /// The socket is readable on a TLS connection: one receive straight from the shared
    /// read buffer into the TLS protocol's incoming BIO (no `bytes` in between), then what
    /// `buffer_updated` does.
    fn read_into_tls(
        slf: &Bound<'_, Self>,
        fd: i32,
        protocol: &Bound<'_, PyAny>,
        pump: &TlsPump,
    ) -> PyResult<()> {
        let py = slf.py();
        // Only C code (`MemoryBIO.write`) runs while the read buffer is borrowed.
        let received = with_read_buffer(|buf| match recv_raw(fd, buf) {
            Ok(0) => Ok(Ok(0)),
            Ok(n) => pump.write_incoming(py, &buf[..n]).map(|()| Ok(n)),
            Err(err) => Ok(Err(err)),
        });
        let n = match received {
            Ok(Ok(n)) => n,
            Ok(Err(err)) if would_block(&err) => return Ok(()),
            Ok(Err(err)) => {
                return Self::fatal_error(
                    slf,
                    os_error(err),
                    "Fatal read error on socket transport",
                )
            }
            Err(err) => {
                return Self::fatal_error(
                    slf,
                    err,
                    "Fatal error: protocol.buffer_updated() call failed.",
                )
            }
        };
        if n == 0 {
            return Self::on_eof(slf, protocol);
        }
        slf.get().state.borrow_mut(py).bytes_in += n as u64;
        if let Err(err) = pump.after_incoming(protocol, n) {
            return Self::fatal_error(
                slf,
                err,
                "Fatal error: protocol.buffer_updated() call failed.",
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    /// Every connection carries one transport state: keep it small. At 152 bytes the
    /// transport object (state, its borrow flag, the object header, `__dict__` and weakref
    /// slots, the collector's header) fits CPython's 208-byte allocator class; 8 more bytes
    /// and it takes 224, 16 more and 240 (what it took before `Cold`).
    #[test]
    fn state_size() {
        let size = std::mem::size_of::<super::State>();
        assert!(size <= 152, "{size}");
        println!("State: {size} bytes");
    }
}
