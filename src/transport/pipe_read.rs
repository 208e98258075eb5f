//! The read pipe transport: asyncio's `_UnixReadPipeTransport` (what
//! `loop.connect_read_pipe` returns) with its read path in Rust.
//!
//! It wraps the read end of a pipe, a FIFO, a socket or a character device (a pty master);
//! the loop runs `_read_ready` when the descriptor is readable, which calls `read(2)` (at most
//! 256 KiB, asyncio's `max_size`) and hands a `bytes` to `protocol.data_received`.
//!
//! Behaviour is asyncio's (identical in 3.11, 3.12 and 3.13):
//! * `connection_made`, then reading starts (unless paused meanwhile), then the waiter;
//! * end of file: `eof_received()` and `connection_lost(None)`, each in its own callback
//!   (eof_received's result is ignored: a pipe cannot half-close);
//! * a read error is fatal: `connection_lost(exc)`; EIO (what a pty master reads once the
//!   slave side is closed) is only logged in debug mode, any other error goes to the loop's
//!   exception handler;
//! * an exception from `data_received` is not the transport's: it propagates out of
//!   `_read_ready` to the loop, which reports it as an exception in that callback;
//! * `connection_lost` closes the pipe object and releases the loop and protocol.
//!
//! `type(t)` is this class; its `__class__` property reports `asyncio.ReadTransport`.

use pyo3::exceptions::PyOSError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::event_loop::handle::NativeMethod;
use crate::event_loop::{LoopCore, Side};
use crate::interop::errors::os_error;
use crate::interop::gil_cell::GilRefCell;
use crate::interop::lazy_dict;
use crate::interop::py_cache;
use crate::interop::{read_bytes, spare_bytes};
use crate::transport::core::{
    transport_pymethods, with_read_buffer, would_block, CoreState, NativeTransport,
    ReadingTransport, TransportState,
};
use crate::transport::pipe_file::{
    close_unclosed, describe, grow_pipe, notify_connection_lost, open_pipe, pipe_extra, read_raw,
    release, FileKind, Growth, PipeState, PipeStatus, DEFAULT_PIPE_CAPACITY, PIPE_READ_SIZE,
};

/// The mutable state of a read pipe transport (GIL-guarded; never borrowed across a Python
/// call).
pub(crate) struct State {
    /// The link to the loop and protocol; `closing` is asyncio's `_closing`, `conn_lost` > 0
    /// once `connection_lost` is scheduled.
    core: CoreState,
    /// The pipe's descriptor.
    fd: i32,
    /// The pipe object; closed and dropped once the connection is lost.
    pipe: Option<Py<PyAny>>,
    /// Extra info (`pipe`, and what the creator passed).
    extra: Option<Py<PyDict>>,
    /// `pause_reading()` is in effect.
    paused: bool,
    /// The loop watches the descriptor for us.
    watching: bool,
    /// The descriptor is a pipe or FIFO (its capacity can be changed).
    is_fifo: bool,
    /// Whether the pipe may be grown once a read finds it full (the loop's child pipes).
    growth: Growth,
    /// The last read was large: the next one asks how much is waiting and reads it straight
    /// into a `bytes` of that size (see `read_bytes`).
    bulk: bool,
    /// Bytes read so far (for `inspect_transports`).
    bytes_in: u64,
}

/// A read at least this large counts as bulk (see `State::bulk`).
const BULK_READ: usize = 16 * 1024;

/// The bytes waiting to be read (`FIONREAD`), 0 if unknown (a device without the request).
fn bytes_waiting(fd: i32) -> usize {
    let mut waiting: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through the pointer.
    if unsafe { libc::ioctl(fd, libc::FIONREAD, &mut waiting) } < 0 {
        return 0;
    }
    waiting.max(0) as usize
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
        0
    }
    fn has_pending(&self) -> bool {
        false
    }
    fn discard_pending(&mut self) {}
}

impl PipeState for State {
    fn pipe_parts(&mut self) -> (&mut Option<Py<PyAny>>, &mut Option<Py<PyDict>>) {
        (&mut self.pipe, &mut self.extra)
    }
}

/// `_read_ready`, run by the loop without a Python call (see `handle::NativeMethod`).
static READ_READY: NativeMethod = NativeMethod {
    name: "_read_ready",
    call: |transport| ReadPipeTransport::_read_ready(transport.cast::<ReadPipeTransport>()?),
};

/// asyncio's read pipe transport.
#[pyclass(
    frozen,
    weakref,
    dict,
    module = "ferroloop._ferroloop",
    name = "ReadPipeTransport"
)]
pub struct ReadPipeTransport {
    state: GilRefCell<State>,
}

impl NativeTransport for ReadPipeTransport {
    type State = State;
    fn state(&self) -> &GilRefCell<State> {
        &self.state
    }
}

impl ReadingTransport for ReadPipeTransport {
    fn is_paused(state: &State) -> bool {
        state.paused
    }
    fn set_paused(state: &mut State, paused: bool) {
        state.paused = paused;
    }
    /// Watches the descriptor for readability, and remembers that we do (nothing if still
    /// watched: a pause keeps the watch until the pipe turns readable, see
    /// `unwatch_for_pause`).
    fn watch_readable(slf: &Bound<'_, Self>) -> PyResult<()> {
        if slf.get().state.borrow_mut(slf.py()).watching {
            return Ok(());
        }
        Self::watch(slf, Side::Read, &READ_READY)?;
        slf.get().state.borrow_mut(slf.py()).watching = true;
        Ok(())
    }
    /// A pause keeps the descriptor watched: `_read_ready` stops the watch if the pipe turns
    /// readable while paused, and reads nothing. A reader that pauses on a large chunk and
    /// resumes as soon as it has consumed it (asyncio's `StreamReader` above twice its limit,
    /// every 256 KiB read of a bulk transfer) then costs no `epoll_ctl` at all instead of two.
    fn unwatch_for_pause(&self, _py: Python<'_>) -> PyResult<()> {
        Ok(())
    }
    /// Stops watching the descriptor, if we do (it may be shared with a write transport
    /// whose watch must stay).
    fn unwatch_readable(&self, py: Python<'_>) -> PyResult<()> {
        let watching = std::mem::take(&mut self.state.borrow_mut(py).watching);
        if watching {
            self.unwatch(py, Side::Read)?;
        }
        Ok(())
    }
}

impl ReadPipeTransport {
    /// asyncio's `_close(exc)`: closing, no more reading, `connection_lost(exc)` next.
    fn close_with(slf: &Bound<'_, Self>, exc: Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        {
            let mut state = slf.get().state.borrow_mut(py);
            if state.core.conn_lost > 0 {
                return Ok(()); // already scheduled
            }
            state.core.closing = true;
            state.core.conn_lost = 1;
        }
        slf.get().unwatch_readable(py)?;
        Self::schedule_connection_lost(slf, exc)
    }

    /// asyncio's `_fatal_error`: reported (EIO, what a pty master reads once its slave side
    /// is closed, only logged in debug mode), then the transport closes with `exc` as
    /// connection_lost's argument.
    fn fatal(slf: &Bound<'_, Self>, exc: &Bound<'_, PyAny>, message: &str) -> PyResult<()> {
        let py = slf.py();
        let is_eio = exc.is_instance_of::<PyOSError>()
            && exc
                .getattr(intern!(py, "errno"))
                .ok()
                .and_then(|e| e.extract::<i32>().ok())
                == Some(libc::EIO);
        let exc = Self::report_fatal(slf, PyErr::from_value(exc.clone()), message, is_eio)?;
        Self::close_with(slf, exc)
    }

    /// End of file: `eof_received()` and `connection_lost(None)` in the next callbacks.
    fn on_eof(slf: &Bound<'_, Self>, protocol: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        if slf.get().is_debug(py) {
            py_cache::asyncio_logger(py)?
                .bind(py)
                .call_method1("info", ("%r was closed by peer", slf))?;
        }
        {
            let mut state = slf.get().state.borrow_mut(py);
            state.core.closing = true;
            state.core.conn_lost = 1;
        }
        slf.get().unwatch_readable(py)?;
        let eof = protocol.getattr(intern!(py, "eof_received"))?;
        slf.get().call_soon(py, &eof, &PyTuple::empty(py))?;
        Self::schedule_connection_lost(slf, py.None().into_bound(py))
    }
}

transport_pymethods! {
    impl ReadPipeTransport [base, reading, pipe] {
        /// `ReadPipeTransport(loop, pipe, protocol, extra=None)`: checks the pipe's file type
        /// (ValueError for anything but a pipe, FIFO, socket or character device) and makes it
        /// non-blocking. `_start()` then schedules `connection_made` and reading.
        /// `_child_pipe=True`: a pipe `spawn_child` made for a child (already non-blocking, not
        /// checked), which grows once a read finds it full (see `pipe_file::grow_pipe`).
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
            let (fd, kind) =
                open_pipe(pipe, "Pipe transport is for pipes/sockets only.", _child_pipe)?;
            Ok(ReadPipeTransport {
                state: GilRefCell::new(State {
                    core: CoreState::new(core, protocol.clone().unbind()),
                    fd,
                    pipe: Some(pipe.clone().unbind()),
                    extra: Some(extra.unbind()),
                    paused: false,
                    watching: false,
                    is_fifo: kind == FileKind::Fifo,
                    growth: if _child_pipe {
                        Growth::WhenFull
                    } else {
                        Growth::Never
                    },
                    bulk: false,
                    bytes_in: 0,
                }),
            })
        }

        /// Second half of construction: schedules `connection_made`, reading and the waiter.
        #[pyo3(signature = (waiter=None))]
        fn _start(slf: &Bound<'_, Self>, waiter: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
            lazy_dict::release_unused_dict(slf.as_any());
            Self::schedule_start(slf, waiter)
        }

        /// Starts reading, unless paused or closing (scheduled after `connection_made`).
        fn _start_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
            if slf.get().reading(slf.py()) {
                Self::watch_readable(slf)?;
            }
            Ok(())
        }

        /// For `ferroloop.inspect_transports`: bytes read, bytes written (none: a read pipe),
        /// and whether writing is paused (never).
        fn _io_counts(&self, py: Python<'_>) -> (u64, u64, bool) {
            (self.state.borrow_mut(py).bytes_in, 0, false)
        }

        /// The pipe is readable: one read, handed to the protocol.
        fn _read_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
            let py = slf.py();
            let (fd, protocol, bulk) = {
                let state = slf.get().state.borrow_mut(py);
                if state.core.conn_lost > 0 {
                    return Ok(());
                }
                if state.paused {
                    // Readable while paused (see `unwatch_for_pause`): stop watching now.
                    drop(state);
                    return slf.get().unwatch_readable(py);
                }
                let Some(protocol) = state.core.protocol.as_ref() else {
                    return Ok(());
                };
                (state.fd, protocol.clone_ref(py), state.bulk)
            };
            let protocol = protocol.bind(py);
            let waiting = if bulk { bytes_waiting(fd) } else { 0 };
            let received = if waiting >= BULK_READ {
                let size = waiting.min(PIPE_READ_SIZE);
                read_bytes::read_into_bytes(py, size, |buf| read_raw(fd, buf))?
            } else {
                with_read_buffer(|buf| {
                    let size = buf.len().min(PIPE_READ_SIZE);
                    read_raw(fd, &mut buf[..size]).map(|n| spare_bytes::bytes_from(py, &buf[..n]))
                })
            };
            let data = match received {
                Ok(data) => data,
                Err(err) if would_block(&err) => return Ok(()),
                Err(err) => {
                    let exc = os_error(err).into_value(py).into_bound(py).into_any();
                    return Self::fatal(slf, &exc, "Fatal read error on pipe transport");
                }
            };
            let size = data.as_bytes().len();
            if size == 0 {
                return Self::on_eof(slf, protocol);
            }
            {
                let length = data.as_bytes().len();
                let mut state = slf.get().state.borrow_mut(py);
                state.bulk = length >= BULK_READ;
                state.bytes_in += length as u64;
                if length >= DEFAULT_PIPE_CAPACITY {
                    // The writer filled the pipe: a child's busy pipe grows (once).
                    grow_pipe(fd, &mut state.growth);
                }
            }
            protocol.call_method1(intern!(py, "data_received"), (&data,))?;
            spare_bytes::recycle(data);
            Ok(())
        }

        /// Lets the transport grow its pipe once a read finds it full (for the pipes the loop
        /// creates for a child; see `pipe_file::grow_pipe`). Nothing for a non-pipe.
        fn _grow_when_full(&self, py: Python<'_>) {
            let mut state = self.state.borrow_mut(py);
            if state.is_fifo && state.growth == Growth::Never {
                state.growth = Growth::WhenFull;
            }
        }

        /// Runs `protocol.connection_lost(exc)`, then closes the pipe and drops the loop and the
        /// protocol (scheduled by close, EOF and fatal errors).
        fn _call_connection_lost(slf: &Bound<'_, Self>, exc: &Bound<'_, PyAny>) -> PyResult<()> {
            let py = slf.py();
            let this = slf.get();
            let result = notify_connection_lost(py, this.protocol_of(py), exc);
            let cleanup = this.unwatch_readable(py);
            let (pipe, protocol, event_loop) = {
                let mut state = this.state.borrow_mut(py);
                (
                    state.pipe.take(),
                    state.core.protocol.take(),
                    state.core.event_loop.take(),
                )
            };
            let closed = release(py, pipe, protocol, event_loop);
            result.and(cleanup).and(closed)
        }

        /// Closes: no more reading; `connection_lost(None)` follows.
        fn close(slf: &Bound<'_, Self>) -> PyResult<()> {
            if slf.get().closing(slf.py()) {
                return Ok(());
            }
            Self::close_with(slf, slf.py().None().into_bound(slf.py()))
        }

        /// asyncio's `_fatal_error(exc, message)`: reported, then closed with `exc`.
        #[pyo3(signature = (exc, message="Fatal error on pipe transport"))]
        fn _fatal_error(
            slf: &Bound<'_, Self>,
            exc: &Bound<'_, PyAny>,
            message: &str,
        ) -> PyResult<()> {
            Self::fatal(slf, exc, message)
        }

        #[getter(__class__)]
        fn class(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
            Ok(py_cache::asyncio_read_transport_type(py)?.clone_ref(py))
        }

        /// asyncio's repr: `closed`/`closing`, the descriptor, and `polling`/`idle` while the
        /// loop is open (`open` once it is closed).
        fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
            let (status, event_loop) = {
                let state = self.state.borrow_mut(py);
                let status = PipeStatus {
                    name: "ReadPipeTransport",
                    open: state.pipe.is_some(),
                    closing: state.core.closing,
                    fd: state.fd,
                    watching: state.watching && !state.paused,
                    buffered: None,
                };
                (status, state.core.event_loop.as_ref().map(|l| l.clone_ref(py)))
            };
            describe(py, status, event_loop)
        }

        /// True while reading is paused.
        #[getter]
        fn _paused(&self, py: Python<'_>) -> bool {
            self.state.borrow_mut(py).paused
        }

        /// asyncio's `max_size`: bytes read at most per readiness event.
        #[classattr]
        fn max_size() -> usize {
            PIPE_READ_SIZE
        }

    }
}

impl Drop for ReadPipeTransport {
    /// An unclosed transport warns (ResourceWarning) and closes its pipe, as asyncio's
    /// `__del__` does.
    fn drop(&mut self) {
        Python::attach(|py| {
            let (pipe, fd) = {
                let mut state = self.state.borrow_mut(py);
                (state.pipe.take(), state.fd)
            };
            close_unclosed(py, "ReadPipeTransport", fd, pipe);
        });
    }
}
