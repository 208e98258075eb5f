//! The write pipe transport: asyncio's `_UnixWritePipeTransport` (what
//! `loop.connect_write_pipe` returns) with its write path in Rust.
//!
//! It wraps the write end of a pipe, a FIFO, a socket or a character device (a pty).
//! `write()` calls `write(2)` at once and buffers only what the pipe did not take (see
//! `write_buffer.rs`); a writer handle then flushes the buffer with one `writev(2)` per
//! writability event. Flow control calls the protocol's `pause_writing` above the high-water
//! mark and `resume_writing` once the buffer is flushed.
//!
//! Behaviour is asyncio's (identical in 3.11, 3.12 and 3.13):
//! * `connection_made`, then (for a pipe, FIFO or socket) the "reader trick": the write end is
//!   watched for readability, which a pipe reports when its read end is closed — the transport
//!   then closes (`connection_lost(BrokenPipeError())` if data was still buffered, else
//!   `connection_lost(None)`); then the waiter;
//! * `write_eof()` and `close()` are the same: once the buffer is flushed,
//!   `connection_lost(None)` (a pipe cannot half-close);
//! * a write error (EPIPE when the reader is gone) is fatal: the buffer is dropped and
//!   `connection_lost(exc)` follows; an `OSError` is only logged in debug mode, anything else
//!   goes to the loop's exception handler;
//! * writes after closing are dropped, with a warning from the sixth on.
//!
//! `type(t)` is this class; its `__class__` property reports `asyncio.Transport`: asyncio's
//! write pipe transport derives from `_FlowControlMixin`, an `asyncio.Transport`, so it is
//! an instance of `ReadTransport` too.

use pyo3::exceptions::{PyAssertionError, PyBrokenPipeError, PyOSError, PyTypeError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyMemoryView, PyTuple};

use crate::event_loop::handle::NativeMethod;
use crate::event_loop::{LoopCore, Side};
use crate::interop::errors::os_error;
use crate::interop::gil_cell::GilRefCell;
use crate::interop::lazy_dict;
use crate::interop::py_cache;
use crate::transport::core::{
    transport_pymethods, would_block, CoreState, NativeTransport, TransportState,
    LOST_WRITES_BEFORE_WARNING,
};
use crate::transport::payload::Payload;
use crate::transport::pipe_file::{
    close_unclosed, describe, grow_pipe, notify_connection_lost, open_pipe, pipe_extra, release,
    write_buffer, write_raw, FileKind, Growth, PipeState, PipeStatus,
};
use crate::transport::write_buffer::{memory_error, SharedBytes, WriteBuffer};

/// A `bytes` at least this long is buffered by reference instead of copied.
const SHARE_AT_LEAST: usize = 4096;

/// The mutable state of a write pipe transport (GIL-guarded; never borrowed across a Python
/// call).
pub(crate) struct State {
    /// The link to the loop and protocol, flow control; `closing` is asyncio's `_closing`
    /// (set by close/write_eof/abort/errors), `conn_lost` asyncio's `_conn_lost` (writes
    /// dropped after a failure or after closing).
    core: CoreState,
    /// The pipe's descriptor.
    fd: i32,
    /// The pipe object; closed and dropped once the connection is lost.
    pipe: Option<Py<PyAny>>,
    /// Extra info (`pipe`, and what the creator passed).
    extra: Option<Py<PyDict>>,
    /// Data not yet written.
    buffer: WriteBuffer,
    /// The descriptor is a pipe, FIFO or socket: watch it for readability to notice the
    /// reader going away.
    peer_watch: bool,
    /// The loop watches readability (the reader trick) for us.
    watching_read: bool,
    /// The loop watches writability (to flush the buffer) for us.
    watching_write: bool,
    /// `connection_lost` is scheduled or done.
    lost: bool,
    /// The descriptor is a pipe or FIFO (its capacity can be changed).
    is_fifo: bool,
    /// Whether the pipe may be grown once a write finds it full (the loop's child pipes).
    growth: Growth,
    /// Bytes handed to `write()` so far (written or buffered; for `inspect_transports`).
    bytes_written: u64,
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

impl PipeState for State {
    fn pipe_parts(&mut self) -> (&mut Option<Py<PyAny>>, &mut Option<Py<PyDict>>) {
        (&mut self.pipe, &mut self.extra)
    }
}

/// `_read_ready` (the read end was closed), run by the loop without a Python call.
static READ_READY: NativeMethod = NativeMethod {
    name: "_read_ready",
    call: |transport| WritePipeTransport::_read_ready(transport.cast::<WritePipeTransport>()?),
};

/// `_write_ready`, run by the loop without a Python call.
static WRITE_READY: NativeMethod = NativeMethod {
    name: "_write_ready",
    call: |transport| WritePipeTransport::_write_ready(transport.cast::<WritePipeTransport>()?),
};

/// asyncio's write pipe transport.
#[pyclass(
    frozen,
    weakref,
    dict,
    module = "ferroloop._ferroloop",
    name = "WritePipeTransport"
)]
pub struct WritePipeTransport {
    state: GilRefCell<State>,
}

impl NativeTransport for WritePipeTransport {
    type State = State;
    fn state(&self) -> &GilRefCell<State> {
        &self.state
    }
}

impl WritePipeTransport {
    /// Watches one side of the descriptor, and remembers that we do.
    fn start_watching(slf: &Bound<'_, Self>, side: Side) -> PyResult<()> {
        let native = match side {
            Side::Read => &READ_READY,
            Side::Write => &WRITE_READY,
        };
        Self::watch(slf, side, native)?;
        let mut state = slf.get().state.borrow_mut(slf.py());
        match side {
            Side::Read => state.watching_read = true,
            Side::Write => state.watching_write = true,
        }
        Ok(())
    }

    /// Stops watching one side of the descriptor, if we watch it (a pty's descriptor may be
    /// shared with a read transport whose watch must stay).
    fn stop_watching(&self, py: Python<'_>, side: Side) -> PyResult<()> {
        let watching = {
            let mut state = self.state.borrow_mut(py);
            match side {
                Side::Read => std::mem::take(&mut state.watching_read),
                Side::Write => std::mem::take(&mut state.watching_write),
            }
        };
        if watching {
            self.unwatch(py, side)?;
        }
        Ok(())
    }

    /// The pipe was found full: a child's pipe grows (once). Whether it just grew.
    fn grow_when_full(&self, py: Python<'_>) -> bool {
        let mut state = self.state.borrow_mut(py);
        if state.growth != Growth::WhenFull {
            return false;
        }
        let fd = state.fd;
        grow_pipe(fd, &mut state.growth);
        true
    }

    /// asyncio's `_close(exc)`: closing, the buffer dropped, nothing watched any more;
    /// `connection_lost(exc)` next.
    fn close_with(slf: &Bound<'_, Self>, exc: Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        {
            let mut state = this.state.borrow_mut(py);
            state.core.closing = true;
            state.buffer.clear();
            if std::mem::replace(&mut state.lost, true) {
                return Ok(()); // already scheduled
            }
        }
        this.stop_watching(py, Side::Write)?;
        this.stop_watching(py, Side::Read)?;
        Self::schedule_connection_lost(slf, exc)
    }

    /// asyncio's `_fatal_error`: an `OSError` only logged in debug mode, anything else
    /// reported to the exception handler; then closed with `exc`.
    fn fatal(slf: &Bound<'_, Self>, err: PyErr, message: &str) -> PyResult<()> {
        let quiet = err.is_instance_of::<PyOSError>(slf.py());
        let exc = Self::report_fatal(slf, err, message, quiet)?;
        Self::close_with(slf, exc)
    }
}

transport_pymethods! {
    impl WritePipeTransport [base, write, pipe] {
        /// `WritePipeTransport(loop, pipe, protocol, extra=None)`: checks the pipe's file type
        /// (ValueError for anything but a pipe, FIFO, socket or character device) and makes it
        /// non-blocking. `_start()` then schedules `connection_made` and the reader trick.
        /// `_child_pipe=True`: a pipe `spawn_child` made for a child (already non-blocking, not
        /// checked), which grows once a write finds it full (see `pipe_file::grow_pipe`).
        #[new]
        #[pyo3(signature = (event_loop, pipe, protocol, extra=None, _child_pipe=false))]
        fn new(
            event_loop: &Bound<'_, PyAny>,
            pipe: &Bound<'_, PyAny>,
            protocol: &Bound<'_, PyAny>,
            extra: Option<&Bound<'_, PyAny>>,
            _child_pipe: bool,
        ) -> PyResult<Self> {
            let core = event_loop.cast::<LoopCore>()?.clone().unbind();
            let extra = pipe_extra(pipe, extra)?;
            let (fd, kind) = open_pipe(
                pipe,
                "Pipe transport is only for pipes, sockets and character devices",
                _child_pipe,
            )?;
            Ok(WritePipeTransport {
                state: GilRefCell::new(State {
                    core: CoreState::new(core, protocol.clone().unbind()),
                    fd,
                    pipe: Some(pipe.clone().unbind()),
                    extra: Some(extra.unbind()),
                    buffer: WriteBuffer::default(),
                    peer_watch: matches!(kind, FileKind::Fifo | FileKind::Socket),
                    watching_read: false,
                    watching_write: false,
                    lost: false,
                    is_fifo: kind == FileKind::Fifo,
                    growth: if _child_pipe {
                        Growth::WhenFull
                    } else {
                        Growth::Never
                    },
                    bytes_written: 0,
                }),
            })
        }

        /// Second half of construction: schedules `connection_made`, the reader trick and the
        /// waiter.
        #[pyo3(signature = (waiter=None))]
        fn _start(slf: &Bound<'_, Self>, waiter: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
            lazy_dict::release_unused_dict(slf.as_any());
            let py = slf.py();
            let this = slf.get();
            let Some(protocol) = this.protocol_of(py) else {
                return Ok(());
            };
            let made = protocol.bind(py).getattr(intern!(py, "connection_made"))?;
            this.call_soon(py, &made, &PyTuple::new(py, [slf.as_any()])?)?;
            if this.state.borrow_mut(py).peer_watch {
                let start = slf.getattr(intern!(py, "_start_peer_watch"))?;
                this.call_soon(py, &start, &PyTuple::empty(py))?;
            }
            if let Some(waiter) = waiter.filter(|w| !w.is_none()) {
                let set = py_cache::set_result_unless_cancelled(py)?.bind(py);
                this.call_soon(
                    py,
                    set,
                    &PyTuple::new(py, [waiter.clone(), py.None().into_bound(py)])?,
                )?;
            }
            Ok(())
        }

        /// The reader trick (scheduled after `connection_made`): watch the write end for
        /// readability, which tells that the read end was closed. Skipped once the connection
        /// is lost.
        fn _start_peer_watch(slf: &Bound<'_, Self>) -> PyResult<()> {
            if slf.get().state.borrow_mut(slf.py()).lost {
                return Ok(());
            }
            Self::start_watching(slf, Side::Read)
        }

        /// The write end is readable: the read end was closed.
        fn _read_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
            let py = slf.py();
            if slf.get().is_debug(py) {
                py_cache::asyncio_logger(py)?
                    .bind(py)
                    .call_method1("info", ("%r was closed by peer", slf))?;
            }
            let buffered = slf.get().state.borrow_mut(py).has_pending();
            let exc = if buffered {
                PyBrokenPipeError::new_err(())
                    .into_value(py)
                    .into_bound(py)
                    .into_any()
            } else {
                py.None().into_bound(py)
            };
            Self::close_with(slf, exc)
        }

        /// Writes `data` (bytes, bytearray or memoryview): at once if nothing is buffered, the
        /// rest (or all of it) buffered and written when the pipe is writable.
        fn write(slf: &Bound<'_, Self>, data: &Bound<'_, PyAny>) -> PyResult<()> {
            let py = slf.py();
            let this = slf.get();
            if !(data.is_instance_of::<PyBytes>()
                || data.is_instance_of::<PyByteArray>()
                || data.is_instance_of::<PyMemoryView>())
            {
                // asyncio asserts the type.
                return Err(PyAssertionError::new_err(data.repr()?.unbind()));
            }
            let mut payload = Payload::new(data)?;
            let unsendable = payload.take_unsendable();
            let contents = payload.as_slice();
            if contents.is_empty() {
                return Ok(());
            }
            let (fd, was_empty) = {
                let mut state = this.state.borrow_mut(py);
                if state.core.conn_lost > 0 || state.core.closing {
                    let warn = state.core.conn_lost >= LOST_WRITES_BEFORE_WARNING;
                    state.core.conn_lost += 1;
                    drop(state);
                    if warn {
                        py_cache::asyncio_logger(py)?.bind(py).call_method1(
                            "warning",
                            ("pipe closed by peer or os.write(pipe, data) raised exception.",),
                        )?;
                    }
                    return Ok(());
                }
                state.bytes_written += contents.len() as u64;
                (state.fd, state.buffer.is_empty())
            };
            if let Some(err) = unsendable {
                // A non-contiguous memoryview: asyncio's os.write raises BufferError (a fatal
                // write error); behind buffered data, `bytearray += view` raises TypeError.
                if !was_empty {
                    return Err(PyTypeError::new_err("can't concat memoryview to bytearray"));
                }
                this.state.borrow_mut(py).core.conn_lost += 1;
                return Self::fatal(slf, err, "Fatal write error on pipe transport");
            }
            let mut sent = 0;
            if was_empty {
                // A second attempt once a child's pipe, found full, has grown.
                for attempt in 0..2 {
                    match write_raw(fd, &contents[sent..]) {
                        Ok(n) if sent + n == contents.len() => return Ok(()),
                        Ok(n) => sent += n,
                        Err(err) if would_block(&err) => {}
                        Err(err) => {
                            this.state.borrow_mut(py).core.conn_lost += 1;
                            let message = "Fatal write error on pipe transport";
                            return Self::fatal(slf, os_error(err), message);
                        }
                    }
                    if attempt > 0 || !this.grow_when_full(py) {
                        break;
                    }
                }
                Self::start_watching(slf, Side::Write)?;
            }
            {
                let mut state = this.state.borrow_mut(py);
                match payload.immutable_bytes() {
                    Some(b) if contents.len() - sent >= SHARE_AT_LEAST => {
                        state.buffer.push_shared(SharedBytes::new(b), sent)
                    }
                    _ => state.buffer.push_copy(contents, sent).map_err(memory_error)?,
                }
            }
            Self::maybe_pause_protocol(slf)
        }

        /// Lets the transport grow its pipe once a write finds it full (for the pipes the loop
        /// creates for a child; see `pipe_file::grow_pipe`). Nothing for a non-pipe.
        fn _grow_when_full(&self, py: Python<'_>) {
            let mut state = self.state.borrow_mut(py);
            if state.is_fifo && state.growth == Growth::Never {
                state.growth = Growth::WhenFull;
            }
        }

        /// For `ferroloop.inspect_transports`: bytes read (none: a write pipe), bytes handed to
        /// `write()`, and whether the protocol's writing is paused (flow control).
        fn _io_counts(&self, py: Python<'_>) -> (u64, u64, bool) {
            let state = self.state.borrow_mut(py);
            (0, state.bytes_written, state.core.protocol_paused)
        }

        /// `write(b"".join(list_of_data))`.
        fn writelines(slf: &Bound<'_, Self>, list_of_data: &Bound<'_, PyAny>) -> PyResult<()> {
            let py = slf.py();
            let joined = PyBytes::new(py, b"").call_method1(intern!(py, "join"), (list_of_data,))?;
            Self::write(slf, &joined)
        }

        /// The pipe is writable: write as much of the buffer as it takes.
        fn _write_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
            let py = slf.py();
            let this = slf.get();
            let outcome = {
                let mut state = this.state.borrow_mut(py);
                if state.lost || state.buffer.is_empty() {
                    return Ok(());
                }
                let outcome = write_buffer(state.fd, &state.buffer);
                if let Ok(n) = outcome {
                    // Pipes queue no bytearray by reference, whose partial send alone can
                    // fail here (copying its rest): nothing to handle.
                    let _ = state.buffer.consume(n);
                }
                outcome
            };
            match outcome {
                Ok(_) => {}
                Err(err) if would_block(&err) => return Ok(()),
                Err(err) => {
                    {
                        let mut state = this.state.borrow_mut(py);
                        state.buffer.clear();
                        state.core.conn_lost += 1;
                    }
                    this.stop_watching(py, Side::Write)?;
                    return Self::fatal(slf, os_error(err), "Fatal write error on pipe transport");
                }
            }
            if this.state.borrow_mut(py).has_pending() {
                this.grow_when_full(py);
                return Ok(());
            }
            this.stop_watching(py, Side::Write)?;
            Self::maybe_resume_protocol(slf)?; // may write again
            let finish = {
                let mut state = this.state.borrow_mut(py);
                let finish = state.core.closing && state.buffer.is_empty() && !state.lost;
                if finish {
                    state.lost = true;
                }
                finish
            };
            if finish {
                this.stop_watching(py, Side::Read)?;
                Self::_call_connection_lost(slf, &py.None().into_bound(py))?;
            }
            Ok(())
        }

        /// Runs `protocol.connection_lost(exc)`, then closes the pipe and drops the loop and the
        /// protocol.
        fn _call_connection_lost(slf: &Bound<'_, Self>, exc: &Bound<'_, PyAny>) -> PyResult<()> {
            let py = slf.py();
            let this = slf.get();
            this.state.borrow_mut(py).lost = true;
            let result = notify_connection_lost(py, this.protocol_of(py), exc);
            let cleanup = this
                .stop_watching(py, Side::Write)
                .and(this.stop_watching(py, Side::Read));
            let (pipe, protocol, event_loop) = {
                let mut state = this.state.borrow_mut(py);
                state.buffer.clear();
                (
                    state.pipe.take(),
                    state.core.protocol.take(),
                    state.core.event_loop.take(),
                )
            };
            let closed = release(py, pipe, protocol, event_loop);
            result.and(cleanup).and(closed)
        }

        /// True: `write_eof()` closes the pipe once the buffer is written.
        fn can_write_eof(&self) -> bool {
            true
        }

        /// Closes once the buffer is written (`connection_lost(None)` follows).
        fn write_eof(slf: &Bound<'_, Self>) -> PyResult<()> {
            let py = slf.py();
            let this = slf.get();
            {
                let mut state = this.state.borrow_mut(py);
                if state.core.closing {
                    return Ok(());
                }
                state.core.closing = true;
                if state.has_pending() {
                    return Ok(());
                }
                if std::mem::replace(&mut state.lost, true) {
                    return Ok(());
                }
            }
            this.stop_watching(py, Side::Read)?;
            Self::schedule_connection_lost(slf, py.None().into_bound(py))
        }

        /// Closes once the buffer is written (the same as `write_eof()`).
        fn close(slf: &Bound<'_, Self>) -> PyResult<()> {
            let open = {
                let state = slf.get().state.borrow_mut(slf.py());
                state.pipe.is_some() && !state.core.closing
            };
            if open {
                Self::write_eof(slf)?;
            }
            Ok(())
        }

        /// Closes at once, dropping buffered data; `connection_lost(None)` follows.
        fn abort(slf: &Bound<'_, Self>) -> PyResult<()> {
            Self::close_with(slf, slf.py().None().into_bound(slf.py()))
        }

        /// asyncio's `_fatal_error(exc, message)`.
        #[pyo3(signature = (exc, message="Fatal error on pipe transport"))]
        fn _fatal_error(
            slf: &Bound<'_, Self>,
            exc: &Bound<'_, PyAny>,
            message: &str,
        ) -> PyResult<()> {
            Self::fatal(slf, PyErr::from_value(exc.clone()), message)
        }

        #[getter(__class__)]
        fn class(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
            Ok(py_cache::asyncio_transport_type(py)?.clone_ref(py))
        }

        /// asyncio's repr: `closed`/`closing`, the descriptor, and while the loop is open
        /// `polling`/`idle` (writing) and the buffered size (`open` once the loop is closed).
        fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
            let (status, event_loop) = {
                let state = self.state.borrow_mut(py);
                let status = PipeStatus {
                    name: "WritePipeTransport",
                    open: state.pipe.is_some(),
                    closing: state.core.closing,
                    fd: state.fd,
                    watching: state.watching_write,
                    buffered: Some(state.buffer.len()),
                };
                (status, state.core.event_loop.as_ref().map(|l| l.clone_ref(py)))
            };
            describe(py, status, event_loop)
        }

        /// asyncio's count of writes after a failure or after closing.
        #[getter]
        fn _conn_lost(&self, py: Python<'_>) -> u32 {
            self.state.borrow_mut(py).core.conn_lost
        }

    }
}

impl Drop for WritePipeTransport {
    /// An unclosed transport warns (ResourceWarning) and closes its pipe, as asyncio's
    /// `__del__` does.
    fn drop(&mut self) {
        Python::attach(|py| {
            let (pipe, fd, buffer) = {
                let mut state = self.state.borrow_mut(py);
                (
                    state.pipe.take(),
                    state.fd,
                    std::mem::take(&mut state.buffer),
                )
            };
            drop(buffer);
            close_unclosed(py, "WritePipeTransport", fd, pipe);
        });
    }
}
