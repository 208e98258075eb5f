//! What the native transports share: their link to the loop and the protocol, watching their
//! descriptor, write-side flow control, the start and the closing state machine.
//!
//! They follow asyncio's selector transports:
//! * `close()` stops reading at once and, once the outgoing data (`pending`) is sent, schedules
//!   `connection_lost(None)`;
//! * `abort()` and fatal errors drop the outgoing data and schedule `connection_lost(exc)` at
//!   once; a fatal `OSError` is only logged in debug mode, anything else goes to the loop's
//!   exception handler;
//! * `pause_writing()` is called when the outgoing data grows above the high-water mark and
//!   `resume_writing()` when it falls back to the low-water mark, each once per crossing; an
//!   exception from either goes to the exception handler.
//!
//! A transport's own state embeds a `CoreState`; the `NativeTransport` trait gives the
//! functions here access to it and to what differs (how much is waiting to be sent, and how
//! to drop it). The trait's provided methods are the shared behaviour, including the start
//! (`enter_registry`, `schedule_start`); the Python methods that only expose it (`close`,
//! `abort`, `is_closing`, the write-buffer limits, `_loop`, ...) are written once, in the
//! `transport_pymethods!` macro, which writes each transport's single `#[pymethods]` block.

use std::cell::RefCell;
use std::io;

use pyo3::exceptions::{PyKeyboardInterrupt, PySystemExit, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::pyclass::boolean_struct::True;
use pyo3::types::{PyDict, PyInt, PyString, PyTuple};
use pyo3::PyClass;

use crate::event_loop::handle::NativeCall;
use crate::event_loop::{LoopCore, Side};
use crate::interop::gil_cell::GilRefCell;
use crate::interop::py_cache;

/// Bytes read per receive into the per-thread read buffer (asyncio's `max_size`).
pub(crate) const READ_SIZE: usize = 256 * 1024;
/// asyncio's default high-water mark of the write buffer.
pub(crate) const DEFAULT_HIGH_WATER: usize = 64 * 1024;
/// After this many writes to a lost connection, each further write logs a warning.
pub(crate) const LOST_WRITES_BEFORE_WARNING: u32 = 5;

thread_local! {
    /// One read buffer per thread, shared by every transport: data is copied out into a
    /// `bytes` before the protocol runs, so no transport needs a buffer of its own.
    static READ_BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with the per-thread read buffer (`READ_SIZE` bytes, allocated on first use).
pub(crate) fn with_read_buffer<R>(f: impl FnOnce(&mut [u8]) -> R) -> R {
    READ_BUFFER.with_borrow_mut(|buf| {
        if buf.is_empty() {
            buf.resize(READ_SIZE, 0);
        }
        f(buf)
    })
}

/// Is `err` one that must leave the loop (asyncio re-raises these from every callback)?
pub(crate) fn is_exit(py: Python<'_>, err: &PyErr) -> bool {
    err.is_instance_of::<PyKeyboardInterrupt>(py) || err.is_instance_of::<PySystemExit>(py)
}

/// Did the operation fail only because the descriptor is not ready (EAGAIN/EWOULDBLOCK)?
pub(crate) fn would_block(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::WouldBlock
}

/// The state every native transport has.
pub(crate) struct CoreState {
    /// This transport's address in the loop's transport registry (0: not registered).
    pub registry_address: usize,
    /// The loop; None once the connection is lost.
    pub event_loop: Option<Py<LoopCore>>,
    /// The protocol; None once the connection is lost.
    pub protocol: Option<Py<PyAny>>,
    /// 0 while connected; then counts writes attempted after the connection was lost.
    pub conn_lost: u32,
    /// close() or abort() was called, or the connection was lost.
    pub closing: bool,
    /// `pause_writing()` was called on the protocol and not yet undone.
    pub protocol_paused: bool,
    /// The write-buffer limits, when `set_write_buffer_limits` set others than the defaults
    /// (boxed: most transports keep the defaults, and every transport object is 16 bytes
    /// smaller for it: 5,000 idle connections, one allocator class less each).
    pub marks: Option<Box<WaterMarks>>,
}

/// Write-buffer limits other than the defaults.
pub(crate) struct WaterMarks {
    /// Above this many pending bytes the protocol is paused.
    pub high: usize,
    /// At or below this many pending bytes a paused protocol is resumed.
    pub low: usize,
    /// `(low, high)` as given to `set_write_buffer_limits` when they are not plain ints
    /// (asyncio keeps floats as given; the marks above are their floors, which compare the
    /// same with whole byte counts).
    pub given: Option<Py<PyTuple>>,
}

impl CoreState {
    /// A connected transport of `event_loop`, speaking to `protocol`, with asyncio's default
    /// water marks.
    pub fn new(event_loop: Py<LoopCore>, protocol: Py<PyAny>) -> Self {
        CoreState {
            registry_address: 0,
            event_loop: Some(event_loop),
            protocol: Some(protocol),
            conn_lost: 0,
            closing: false,
            protocol_paused: false,
            marks: None,
        }
    }

    /// Above this many pending bytes the protocol is paused.
    pub fn high_water(&self) -> usize {
        self.marks.as_ref().map_or(DEFAULT_HIGH_WATER, |m| m.high)
    }

    /// At or below this many pending bytes a paused protocol is resumed.
    pub fn low_water(&self) -> usize {
        self.marks
            .as_ref()
            .map_or(DEFAULT_HIGH_WATER / 4, |m| m.low)
    }
}

/// A transport's state, seen by the shared code. (The descriptor stays in the transport's own
/// state, beside its other small fields: inside `CoreState` it would cost 8 bytes of padding
/// per connection.)
pub(crate) trait TransportState {
    /// The socket's descriptor.
    fn fd(&self) -> i32;
    /// The shared part.
    fn core(&self) -> &CoreState;
    /// The shared part, to change.
    fn core_mut(&mut self) -> &mut CoreState;
    /// Bytes waiting to be sent, as flow control counts them (the write buffer, or the
    /// queued datagrams).
    fn pending_bytes(&self) -> usize;
    /// Something waits to be sent (an empty datagram counts).
    fn has_pending(&self) -> bool;
    /// Drops the data waiting to be sent (abort, fatal error).
    fn discard_pending(&mut self);
}

/// A native transport class: a frozen PyO3 class whose state is a `TransportState`. The
/// provided methods are the shared behaviour; an implementation only names its state.
pub(crate) trait NativeTransport: PyClass<Frozen = True> + Sync {
    /// Its state type.
    type State: TransportState;

    /// Its state.
    fn state(&self) -> &GilRefCell<Self::State>;

    /// Sends what the transport held back for the end of the iteration (the datagram
    /// transport's batch) before `close()`/`abort()` or a fatal error decide its fate: the
    /// program sent it already, as far as it can tell. Nothing by default.
    fn send_held_back(_slf: &Bound<'_, Self>) -> PyResult<()> {
        Ok(())
    }

    /// The transport's loop, if it is still connected.
    fn loop_of(&self, py: Python<'_>) -> Option<Py<LoopCore>> {
        let state = self.state().borrow_mut(py);
        state.core().event_loop.as_ref().map(|l| l.clone_ref(py))
    }

    /// The transport's protocol, if it is still connected.
    fn protocol_of(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        let state = self.state().borrow_mut(py);
        state.core().protocol.as_ref().map(|p| p.clone_ref(py))
    }

    /// The transport's descriptor.
    fn fd_of(&self, py: Python<'_>) -> i32 {
        self.state().borrow_mut(py).fd()
    }

    /// close() or abort() was called, or the connection was lost.
    fn closing(&self, py: Python<'_>) -> bool {
        self.state().borrow_mut(py).core().closing
    }

    /// `set_protocol(protocol)`: from now on the transport speaks to `protocol`. (The stream
    /// transport overrides it, to note whether the new protocol is a buffered one.)
    fn replace_protocol(&self, protocol: &Bound<'_, PyAny>) -> PyResult<()> {
        let previous = self
            .state()
            .borrow_mut(protocol.py())
            .core_mut()
            .protocol
            .replace(protocol.clone().unbind());
        drop(previous);
        Ok(())
    }

    /// Bytes waiting to be sent, as flow control counts them.
    fn write_buffer_size(&self, py: Python<'_>) -> usize {
        self.state().borrow_mut(py).pending_bytes()
    }

    /// True if the transport's loop is in debug mode.
    fn is_debug(&self, py: Python<'_>) -> bool {
        let state = self.state().borrow_mut(py);
        state
            .core()
            .event_loop
            .as_ref()
            .is_some_and(|l| l.get().is_debug())
    }

    /// Enters the loop's transport registry (`add_reader` & co. then refuse the descriptor),
    /// the first step of `_start()`; false if the transport has no loop or protocol any more
    /// (the start is then skipped).
    fn enter_registry(slf: &Bound<'_, Self>) -> bool {
        let py = slf.py();
        let this = slf.get();
        let (Some(event_loop), Some(_)) = (this.loop_of(py), this.protocol_of(py)) else {
            return false;
        };
        let fd = this.fd_of(py);
        event_loop.get().register_transport(py, fd, slf.as_any());
        this.state().borrow_mut(py).core_mut().registry_address = slf.as_ptr() as usize;
        true
    }

    /// The rest of `_start()`: schedules `protocol.connection_made(transport)`, then the
    /// transport's `_start_reading()`, then `waiter`'s result (None), as asyncio's transports
    /// do from their constructor.
    fn schedule_start(slf: &Bound<'_, Self>, waiter: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let Some(protocol) = this.protocol_of(py) else {
            return Ok(());
        };
        let made = protocol.bind(py).getattr(intern!(py, "connection_made"))?;
        this.call_soon(py, &made, &PyTuple::new(py, [slf.as_any()])?)?;
        let start = slf.as_any().getattr(intern!(py, "_start_reading"))?;
        this.call_soon(py, &start, &PyTuple::empty(py))?;
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

    /// Leaves the loop's transport registry (closing, or being deallocated).
    fn leave_registry(&self, py: Python<'_>) {
        let (address, fd, event_loop) = {
            let mut state = self.state().borrow_mut(py);
            let fd = state.fd();
            let core = state.core_mut();
            let address = std::mem::take(&mut core.registry_address);
            (
                address,
                fd,
                core.event_loop.as_ref().map(|l| l.clone_ref(py)),
            )
        };
        if let (true, Some(event_loop)) = (address != 0, event_loop) {
            event_loop
                .get()
                .unregister_transport(py, fd, address as *mut pyo3::ffi::PyObject);
        }
    }

    /// `loop.call_soon(callback, *args)` on the transport's loop (nothing once it is gone).
    fn call_soon(
        &self,
        py: Python<'_>,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
    ) -> PyResult<()> {
        if let Some(event_loop) = self.loop_of(py) {
            event_loop
                .get()
                .call_soon_checked(py, callback, args, None)?;
        }
        Ok(())
    }

    /// Watches the socket's readability or writability with the native method `native`.
    fn watch(slf: &Bound<'_, Self>, side: Side, native: NativeCall) -> PyResult<()> {
        let py = slf.py();
        let (event_loop, fd) = {
            let state = slf.get().state().borrow_mut(py);
            let core = state.core();
            (
                core.event_loop.as_ref().map(|l| l.clone_ref(py)),
                state.fd(),
            )
        };
        if let Some(event_loop) = event_loop {
            event_loop.get().add_watch(
                py,
                &fd.into_pyobject(py)?.into_any(),
                side,
                slf.as_any(),
                &PyTuple::empty(py),
                Some(native),
            )?;
        }
        Ok(())
    }

    /// Stops watching one side of the socket.
    fn unwatch(&self, py: Python<'_>, side: Side) -> PyResult<()> {
        let (event_loop, fd) = {
            let state = self.state().borrow_mut(py);
            let core = state.core();
            (
                core.event_loop.as_ref().map(|l| l.clone_ref(py)),
                state.fd(),
            )
        };
        if let Some(event_loop) = event_loop {
            event_loop.get().unwatch(py, fd, side)?;
        }
        Ok(())
    }

    /// `loop.call_exception_handler({"message", "exception", "transport"[, "protocol"]})`.
    fn report(slf: &Bound<'_, Self>, message: &str, err: PyErr) -> PyResult<()> {
        let py = slf.py();
        let Some(event_loop) = slf.get().loop_of(py) else {
            return Ok(());
        };
        let context = PyDict::new(py);
        context.set_item("message", message)?;
        context.set_item("exception", err.into_value(py))?;
        context.set_item("transport", slf)?;
        if let Some(protocol) = slf.get().protocol_of(py) {
            context.set_item("protocol", protocol)?;
        }
        event_loop
            .bind(py)
            .call_method1(intern!(py, "call_exception_handler"), (context,))?;
        Ok(())
    }

    /// Calls `protocol.<method>()`; an exception goes to the exception handler (SystemExit and
    /// KeyboardInterrupt propagate).
    fn notify_protocol(slf: &Bound<'_, Self>, method: &Bound<'_, PyString>) -> PyResult<()> {
        let py = slf.py();
        let Some(protocol) = slf.get().protocol_of(py) else {
            return Ok(());
        };
        if let Err(err) = protocol.bind(py).call_method0(method) {
            if is_exit(py, &err) {
                return Err(err);
            }
            let message = format!("protocol.{}() failed", method.to_str()?);
            Self::report(slf, &message, err)?;
        }
        Ok(())
    }

    /// `set_write_buffer_limits(high, low)`: asyncio's defaults (high 64 KiB, or 4 × low; low
    /// high // 4) and check (`high >= low >= 0`), computed with Python's arithmetic when the
    /// marks are not ints; then pauses the protocol if the pending data is above the new mark.
    fn set_water_marks(
        slf: &Bound<'_, Self>,
        high: Option<&Bound<'_, PyAny>>,
        low: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let py = slf.py();
        let (high, low) = resolve_water_marks(py, high, low)?;
        let (high_water, low_water) = (floor_mark(&high)?, floor_mark(&low)?);
        // Whole numbers of bytes are reported back from the marks themselves; anything else
        // (a float, a bool, an int beyond usize) as given.
        let whole = |mark: &Bound<'_, PyAny>, floor: usize| {
            mark.is_exact_instance_of::<PyInt>() && mark.extract::<usize>().ok() == Some(floor)
        };
        let given = if whole(&high, high_water) && whole(&low, low_water) {
            None
        } else {
            Some(PyTuple::new(py, [low, high])?.unbind())
        };
        let previous = {
            let mut state = slf.get().state().borrow_mut(py);
            let marks = if given.is_none()
                && high_water == DEFAULT_HIGH_WATER
                && low_water == DEFAULT_HIGH_WATER / 4
            {
                None
            } else {
                Some(Box::new(WaterMarks {
                    high: high_water,
                    low: low_water,
                    given,
                }))
            };
            std::mem::replace(&mut state.core_mut().marks, marks)
        };
        drop(previous);
        Self::maybe_pause_protocol(slf)
    }

    /// `get_write_buffer_limits()`: `(low, high)`.
    fn water_mark_limits(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let state = self.state().borrow_mut(py);
        let core = state.core();
        match core.marks.as_ref().and_then(|m| m.given.as_ref()) {
            Some(given) => Ok(given.clone_ref(py).into_any()),
            None => Ok((core.low_water(), core.high_water())
                .into_pyobject(py)?
                .into_any()
                .unbind()),
        }
    }

    /// `protocol.pause_writing()` if the pending data just grew above the high-water mark.
    fn maybe_pause_protocol(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        {
            let mut state = slf.get().state().borrow_mut(py);
            let pending = state.pending_bytes();
            let core = state.core_mut();
            if pending <= core.high_water() || core.protocol_paused {
                return Ok(());
            }
            core.protocol_paused = true;
        }
        Self::notify_protocol(slf, intern!(py, "pause_writing"))
    }

    /// `protocol.resume_writing()` if the protocol is paused and the pending data fell to the
    /// low-water mark.
    fn maybe_resume_protocol(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        {
            let mut state = slf.get().state().borrow_mut(py);
            let pending = state.pending_bytes();
            let core = state.core_mut();
            if !(core.protocol_paused && pending <= core.low_water()) {
                return Ok(());
            }
            core.protocol_paused = false;
        }
        Self::notify_protocol(slf, intern!(py, "resume_writing"))
    }

    /// A fatal error: reported (an `OSError` only logged, in debug mode), then the transport
    /// closes at once with the error as connection_lost's argument.
    fn fatal_error(slf: &Bound<'_, Self>, err: PyErr, message: &str) -> PyResult<()> {
        let py = slf.py();
        let quiet = err.is_instance_of::<pyo3::exceptions::PyOSError>(py);
        let exc = Self::report_fatal(slf, err, message, quiet)?;
        Self::force_close(slf, Some(exc))
    }

    /// The reporting half of a fatal error: SystemExit and KeyboardInterrupt propagate; a
    /// `quiet` error is only logged (`"%r: %s"` with its traceback, in debug mode), any other
    /// goes to the exception handler. Returns the exception, for connection_lost.
    fn report_fatal<'py>(
        slf: &Bound<'py, Self>,
        err: PyErr,
        message: &str,
        quiet: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        if is_exit(py, &err) {
            return Err(err);
        }
        let exc = err.value(py).clone().into_any();
        if !quiet {
            Self::report(slf, message, err)?;
        } else if slf.get().is_debug(py) {
            let kwargs = PyDict::new(py);
            kwargs.set_item("exc_info", &exc)?;
            py_cache::asyncio_logger(py)?.bind(py).call_method(
                "debug",
                ("%r: %s", slf, message),
                Some(&kwargs),
            )?;
        }
        Ok(exc)
    }

    /// Closes at once, dropping the pending data; `connection_lost(exc)` (None if `exc` is)
    /// follows in a later callback. Does nothing once the connection is lost.
    fn force_close(slf: &Bound<'_, Self>, exc: Option<Bound<'_, PyAny>>) -> PyResult<()> {
        Self::send_held_back(slf)?;
        let py = slf.py();
        let this = slf.get();
        let (had_pending, was_closing) = {
            let mut state = this.state().borrow_mut(py);
            if state.core().conn_lost > 0 {
                return Ok(());
            }
            let had_pending = state.has_pending();
            state.discard_pending();
            let core = state.core_mut();
            let was_closing = core.closing;
            core.closing = true;
            core.conn_lost += 1;
            (had_pending, was_closing)
        };
        this.leave_registry(py);
        if had_pending {
            this.unwatch(py, Side::Write)?;
        }
        if !was_closing {
            this.unwatch(py, Side::Read)?;
        }
        Self::schedule_connection_lost(slf, exc.unwrap_or_else(|| py.None().into_bound(py)))
    }

    /// `close()`: stops reading; once nothing is pending (now, or when the last data is sent),
    /// `connection_lost(None)` follows.
    fn begin_close(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::send_held_back(slf)?;
        let py = slf.py();
        let this = slf.get();
        let nothing_pending = {
            let mut state = this.state().borrow_mut(py);
            if state.core().closing {
                return Ok(());
            }
            let nothing_pending = !state.has_pending();
            let core = state.core_mut();
            core.closing = true;
            if nothing_pending {
                core.conn_lost += 1;
            }
            nothing_pending
        };
        this.leave_registry(py);
        this.unwatch(py, Side::Read)?;
        if nothing_pending {
            this.unwatch(py, Side::Write)?;
            Self::schedule_connection_lost(slf, py.None().into_bound(py))?;
        }
        Ok(())
    }

    /// Schedules `transport._call_connection_lost(exc)` (the transport's own cleanup).
    fn schedule_connection_lost(slf: &Bound<'_, Self>, exc: Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let callback = slf.as_any().getattr(intern!(py, "_call_connection_lost"))?;
        slf.get()
            .call_soon(py, &callback, &PyTuple::new(py, [exc])?)
    }
}

/// A transport that reads and can pause (the stream transport; a read pipe): asyncio's
/// `is_reading()`, `pause_reading()` and `resume_reading()`, written once. An implementation
/// names its paused flag and how it starts watching for readability.
pub(crate) trait ReadingTransport: NativeTransport {
    /// Reading was paused by `pause_reading()`.
    fn is_paused(state: &Self::State) -> bool;
    /// Records whether reading is paused.
    fn set_paused(state: &mut Self::State, paused: bool);
    /// Starts watching the descriptor for readability (its native `_read_ready`).
    fn watch_readable(slf: &Bound<'_, Self>) -> PyResult<()>;
    /// Stops watching the descriptor for readability.
    fn unwatch_readable(&self, py: Python<'_>) -> PyResult<()> {
        self.unwatch(py, Side::Read)
    }

    /// What `pause_reading()` does to the watch: stops it at once (the default). A transport
    /// may instead keep the descriptor watched and stop only once it turns readable while
    /// paused (see the read pipe transport), which spares two `epoll_ctl` calls when reading
    /// resumes before that.
    fn unwatch_for_pause(&self, py: Python<'_>) -> PyResult<()> {
        self.unwatch_readable(py)
    }

    /// `is_reading()`: neither paused nor closing.
    fn reading(&self, py: Python<'_>) -> bool {
        let state = self.state().borrow_mut(py);
        !Self::is_paused(&state) && !state.core().closing
    }

    /// `pause_reading()`: stops watching until `resume_reading()` (nothing if paused or
    /// closing); logged in debug mode.
    fn pause(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        {
            let mut state = slf.get().state().borrow_mut(py);
            if Self::is_paused(&state) || state.core().closing {
                return Ok(());
            }
            Self::set_paused(&mut state, true);
        }
        slf.get().unwatch_for_pause(py)?;
        if slf.get().is_debug(py) {
            py_cache::asyncio_logger(py)?
                .bind(py)
                .call_method1("debug", ("%r pauses reading", slf))?;
        }
        Ok(())
    }

    /// `resume_reading()`: watches again (nothing if not paused, or closing); logged in debug
    /// mode.
    fn resume(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        {
            let mut state = slf.get().state().borrow_mut(py);
            if state.core().closing || !Self::is_paused(&state) {
                return Ok(());
            }
            Self::set_paused(&mut state, false);
        }
        Self::watch_readable(slf)?;
        if slf.get().is_debug(py) {
            py_cache::asyncio_logger(py)?
                .bind(py)
                .call_method1("debug", ("%r resumes reading", slf))?;
        }
        Ok(())
    }
}

/// asyncio's `set_write_buffer_limits(high, low)` arguments resolved to `(high, low)`: high
/// defaults to 64 KiB (or 4 × low), low to high // 4, and `high >= low >= 0` is required;
/// computed with Python's arithmetic and comparisons, so that any number type asyncio takes
/// (floats, bools, huge ints) resolves as there.
fn resolve_water_marks<'py>(
    py: Python<'py>,
    high: Option<&Bound<'py, PyAny>>,
    low: Option<&Bound<'py, PyAny>>,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    let high = match (high, low) {
        (Some(high), _) => high.clone(),
        (None, Some(low)) => low.mul(4)?,
        (None, None) => DEFAULT_HIGH_WATER.into_pyobject(py)?.into_any(),
    };
    let low = match low {
        Some(low) => low.clone(),
        None => high.floor_div(4)?,
    };
    if !(high.ge(&low)? && low.ge(0)?) {
        return Err(PyValueError::new_err(format!(
            "high ({}) must be >= low ({}) must be >= 0",
            high.repr()?,
            low.repr()?
        )));
    }
    Ok((high, low))
}

/// A water mark as a whole number of bytes: its floor (`size > high` and `size <= low` read
/// the same for whole sizes), infinity and anything beyond `usize` as `usize::MAX`.
fn floor_mark(mark: &Bound<'_, PyAny>) -> PyResult<usize> {
    let py = mark.py();
    let floor = match mark.call_method0(intern!(py, "__floor__")) {
        Ok(floor) => floor,
        Err(err) if err.is_instance_of::<pyo3::exceptions::PyOverflowError>(py) => {
            return Ok(usize::MAX); // float('inf')
        }
        Err(err) => return Err(err),
    };
    Ok(floor.extract::<usize>().unwrap_or(usize::MAX))
}

/// Writes the one `#[pymethods]` block of a native transport class: the shared Python methods
/// of the groups named, then the class's own items. (PyO3 is built without
/// `multiple-pymethods`, so a class cannot take shared methods from a second block; each
/// shared method is written once here, its body in `NativeTransport`.)
///
/// Groups:
/// - `base`: `is_closing()`, `get_protocol()`, `set_protocol(protocol)` (see
///   `replace_protocol`) and the `_loop`, `_protocol` and `_closing` attributes;
/// - `close` (the socket transports): `close()` (once the data waiting to be sent has gone,
///   see `begin_close`), `abort()` and `_force_close(exc)`;
/// - `write`: `get_write_buffer_size()`, `get_write_buffer_limits()`,
///   `set_write_buffer_limits(high=None, low=None)`;
/// - `reading` (for a `ReadingTransport`): `is_reading()`, `pause_reading()`,
///   `resume_reading()`;
/// - `socket`: the `_sock_fd` attribute;
/// - `pipe` (for a state that is a `PipeState`): `get_extra_info(name, default=None)`, the
///   `_pipe` attribute (settable) and `_fileno`, and the garbage collector's `__traverse__`
///   and `__clear__`.
///
/// Each group is one arm below, which appends its methods and recurses on the rest of the
/// list; the last arm writes the block.
///
/// ```ignore
/// transport_pymethods! {
///     impl StreamTransport [base, close, write, reading, socket] {
///         #[new]
///         fn new(/* ... */) -> PyResult<Self> { /* ... */ }
///         // ... the class's own methods
///     }
/// }
/// ```
macro_rules! transport_pymethods {
    (impl $ty:ident [$($group:ident),* $(,)?] { $($own:tt)* }) => {
        $crate::transport::core::transport_pymethods!(@collect $ty [$($group)*] [] { $($own)* });
    };
    (@collect $ty:ident [] [$($shared:tt)*] { $($own:tt)* }) => {
        #[::pyo3::pymethods]
        impl $ty {
            $($shared)*
            $($own)*
        }
    };
    (@collect $ty:ident [base $($rest:ident)*] [$($shared:tt)*] $own:tt) => {
        $crate::transport::core::transport_pymethods!(@collect $ty [$($rest)*] [$($shared)*
            /// True once close() or abort() was called or the connection was lost.
            fn is_closing(&self, py: ::pyo3::Python<'_>) -> bool {
                <Self as $crate::transport::core::NativeTransport>::closing(self, py)
            }

            /// The current protocol.
            fn get_protocol(
                &self,
                py: ::pyo3::Python<'_>,
            ) -> ::std::option::Option<::pyo3::Py<::pyo3::PyAny>> {
                <Self as $crate::transport::core::NativeTransport>::protocol_of(self, py)
            }

            /// The loop (None once the connection is lost).
            #[getter]
            fn _loop(
                &self,
                py: ::pyo3::Python<'_>,
            ) -> ::std::option::Option<::pyo3::Py<::pyo3::PyAny>> {
                <Self as $crate::transport::core::NativeTransport>::loop_of(self, py)
                    .map(|l| l.into_any())
            }

            /// The protocol (asyncio's private attribute, read by some libraries).
            #[getter]
            fn _protocol(
                &self,
                py: ::pyo3::Python<'_>,
            ) -> ::std::option::Option<::pyo3::Py<::pyo3::PyAny>> {
                <Self as $crate::transport::core::NativeTransport>::protocol_of(self, py)
            }

            /// True once close() or abort() was called (asyncio's private attribute).
            #[getter]
            fn _closing(&self, py: ::pyo3::Python<'_>) -> bool {
                <Self as $crate::transport::core::NativeTransport>::closing(self, py)
            }

            /// Replaces the protocol.
            fn set_protocol(
                &self,
                protocol: &::pyo3::Bound<'_, ::pyo3::PyAny>,
            ) -> ::pyo3::PyResult<()> {
                <Self as $crate::transport::core::NativeTransport>::replace_protocol(self, protocol)
            }
        ] $own);
    };
    (@collect $ty:ident [close $($rest:ident)*] [$($shared:tt)*] $own:tt) => {
        $crate::transport::core::transport_pymethods!(@collect $ty [$($rest)*] [$($shared)*
            /// Closes once the data waiting to be sent has gone (stops reading at once);
            /// `connection_lost(None)` follows.
            fn close(slf: &::pyo3::Bound<'_, Self>) -> ::pyo3::PyResult<()> {
                <Self as $crate::transport::core::NativeTransport>::begin_close(slf)
            }

            /// Closes at once, dropping the data waiting to be sent; `connection_lost(None)`
            /// follows.
            fn abort(slf: &::pyo3::Bound<'_, Self>) -> ::pyo3::PyResult<()> {
                <Self as $crate::transport::core::NativeTransport>::force_close(slf, None)
            }

            /// Internal: a fatal error; closes at once with `exc` (None: no error) for
            /// connection_lost (used by the loop's sendfile path and tests).
            fn _force_close(
                slf: &::pyo3::Bound<'_, Self>,
                exc: &::pyo3::Bound<'_, ::pyo3::PyAny>,
            ) -> ::pyo3::PyResult<()> {
                <Self as $crate::transport::core::NativeTransport>::force_close(
                    slf,
                    (!exc.is_none()).then(|| exc.clone()),
                )
            }
        ] $own);
    };
    (@collect $ty:ident [write $($rest:ident)*] [$($shared:tt)*] $own:tt) => {
        $crate::transport::core::transport_pymethods!(@collect $ty [$($rest)*] [$($shared)*
            /// Bytes waiting to be sent.
            fn get_write_buffer_size(&self, py: ::pyo3::Python<'_>) -> usize {
                <Self as $crate::transport::core::NativeTransport>::write_buffer_size(self, py)
            }

            /// `(low, high)` water marks of the write buffer.
            fn get_write_buffer_limits(
                &self,
                py: ::pyo3::Python<'_>,
            ) -> ::pyo3::PyResult<::pyo3::Py<::pyo3::PyAny>> {
                <Self as $crate::transport::core::NativeTransport>::water_mark_limits(self, py)
            }

            /// Sets the water marks (asyncio's defaults: high 64 KiB, low high/4).
            #[pyo3(signature = (high=None, low=None))]
            fn set_write_buffer_limits(
                slf: &::pyo3::Bound<'_, Self>,
                high: ::std::option::Option<&::pyo3::Bound<'_, ::pyo3::PyAny>>,
                low: ::std::option::Option<&::pyo3::Bound<'_, ::pyo3::PyAny>>,
            ) -> ::pyo3::PyResult<()> {
                <Self as $crate::transport::core::NativeTransport>::set_water_marks(slf, high, low)
            }
        ] $own);
    };
    (@collect $ty:ident [reading $($rest:ident)*] [$($shared:tt)*] $own:tt) => {
        $crate::transport::core::transport_pymethods!(@collect $ty [$($rest)*] [$($shared)*
            /// True unless reading is paused or the transport is closing.
            fn is_reading(&self, py: ::pyo3::Python<'_>) -> bool {
                <Self as $crate::transport::core::ReadingTransport>::reading(self, py)
            }

            /// Stops calling the protocol's `data_received` until `resume_reading()`.
            fn pause_reading(slf: &::pyo3::Bound<'_, Self>) -> ::pyo3::PyResult<()> {
                <Self as $crate::transport::core::ReadingTransport>::pause(slf)
            }

            /// Resumes reading after `pause_reading()`.
            fn resume_reading(slf: &::pyo3::Bound<'_, Self>) -> ::pyo3::PyResult<()> {
                <Self as $crate::transport::core::ReadingTransport>::resume(slf)
            }
        ] $own);
    };
    (@collect $ty:ident [socket $($rest:ident)*] [$($shared:tt)*] $own:tt) => {
        $crate::transport::core::transport_pymethods!(@collect $ty [$($rest)*] [$($shared)*
            /// The socket's descriptor.
            #[getter]
            fn _sock_fd(&self, py: ::pyo3::Python<'_>) -> i32 {
                <Self as $crate::transport::core::NativeTransport>::fd_of(self, py)
            }
        ] $own);
    };
    (@collect $ty:ident [pipe $($rest:ident)*] [$($shared:tt)*] $own:tt) => {
        $crate::transport::core::transport_pymethods!(@collect $ty [$($rest)*] [$($shared)*
            /// Extra information: `pipe`, and whatever the transport's creator passed.
            #[pyo3(signature = (name, default=None))]
            fn get_extra_info(
                &self,
                py: ::pyo3::Python<'_>,
                name: &::pyo3::Bound<'_, ::pyo3::PyAny>,
                default: ::std::option::Option<::pyo3::Py<::pyo3::PyAny>>,
            ) -> ::pyo3::PyResult<::pyo3::Py<::pyo3::PyAny>> {
                $crate::transport::pipe_file::pipe_extra_info(self, py, name, default)
            }

            /// The pipe object (None once the connection is lost). Setting it to None (as
            /// CPython's tests do) makes the transport forget the pipe: no warning, no close
            /// when collected.
            #[getter]
            fn _pipe(
                &self,
                py: ::pyo3::Python<'_>,
            ) -> ::std::option::Option<::pyo3::Py<::pyo3::PyAny>> {
                $crate::transport::pipe_file::pipe_of(self, py)
            }

            #[setter(_pipe)]
            fn set_pipe_attr(
                &self,
                py: ::pyo3::Python<'_>,
                pipe: ::std::option::Option<::pyo3::Py<::pyo3::PyAny>>,
            ) {
                $crate::transport::pipe_file::replace_pipe(self, py, pipe)
            }

            /// The pipe's descriptor.
            #[getter]
            fn _fileno(&self, py: ::pyo3::Python<'_>) -> i32 {
                <Self as $crate::transport::core::NativeTransport>::fd_of(self, py)
            }

            fn __traverse__(
                &self,
                visit: ::pyo3::PyVisit<'_>,
            ) -> ::std::result::Result<(), ::pyo3::PyTraverseError> {
                $crate::transport::pipe_file::traverse_pipe(self, visit)
            }

            fn __clear__(&self) {
                $crate::transport::pipe_file::clear_pipe(self)
            }
        ] $own);
    };
}
pub(crate) use transport_pymethods;
