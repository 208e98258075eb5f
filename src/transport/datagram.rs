//! The datagram transport (UDP and AF_UNIX datagrams): asyncio's `DatagramTransport` with its
//! receive and send paths in Rust.
//!
//! Receiving: up to `DATAGRAMS_PER_WAKEUP` datagrams per readiness, handed one by one to
//! `protocol.datagram_received(data, addr)` while the transport stays open; IP sockets receive
//! them with one `recvmmsg(2)` into per-thread buffers, and each sender's address becomes the
//! Python tuple the socket module would give (cached per peer, see `sockaddr.rs`). Sending:
//! `sendto` at once while nothing is queued; a datagram the socket cannot take now is queued
//! whole and sent when it becomes writable. Errors follow asyncio: OSErrors go to the
//! protocol's `error_received`, anything else is a fatal error that closes the transport.
//!
//! Families other than AF_INET/AF_INET6, and addresses that are not numeric, go through the
//! socket object's own `recvfrom`/`sendto`, so name resolution and validation stay Python's.

use std::collections::VecDeque;
use std::io;

use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use pyo3::{intern, PyTraverseError, PyVisit};

use crate::event_loop::handle::NativeMethod;
use crate::event_loop::{LoopCore, Side};
use crate::interop::errors::os_error;
use crate::interop::gil_cell::GilRefCell;
use crate::interop::lazy_dict;
use crate::interop::py_cache;
use crate::interop::py_cache::python_at_least;
use crate::transport::core::{
    transport_pymethods, would_block, LOST_WRITES_BEFORE_WARNING, READ_SIZE,
};
use crate::transport::core::{CoreState, NativeTransport, TransportState};
use crate::transport::datagram_batch::{send_batch, BatchSent, Held, HeldBytes, BATCH_MAX};
use crate::transport::payload::Payload;
use crate::transport::sockaddr::{socket_family, AddressCache, RawAddr};
use crate::transport::socket_info::{
    close_socket_object, extra_info, keep_socket_info, warn_unclosed,
};
use crate::transport::write_buffer::memory_error;

/// A datagram waiting for the socket to become writable: its bytes and its destination
/// (None on a connected socket).
struct Queued {
    data: QueuedData,
    addr: Option<Py<PyAny>>,
}

/// A queued datagram's bytes: a `bytes` held by reference (immutable: asyncio queues it as
/// is, without a copy), or a copy of a bytearray or memoryview (which the caller may change
/// once `sendto()` returns). The copy is allocated fallibly: MemoryError, as asyncio's
/// `bytes(data)`, instead of aborting the process.
enum QueuedData {
    Shared(Py<PyBytes>),
    Copied(Vec<u8>),
}

impl QueuedData {
    /// Queues `contents`, the bytes of `payload`.
    fn new(payload: &Payload<'_, '_>, contents: &[u8]) -> PyResult<Self> {
        Ok(match payload {
            Payload::Bytes(bytes) => QueuedData::Shared((*bytes).clone().unbind()),
            Payload::Copy(bytes, _) => QueuedData::Shared(bytes.clone().unbind()),
            Payload::View(_) => {
                let mut copy = Vec::new();
                copy.try_reserve_exact(contents.len())
                    .map_err(memory_error)?;
                copy.extend_from_slice(contents);
                QueuedData::Copied(copy)
            }
        })
    }

    fn as_slice<'a>(&'a self, py: Python<'_>) -> &'a [u8] {
        match self {
            QueuedData::Shared(bytes) => bytes.as_bytes(py),
            QueuedData::Copied(copy) => copy,
        }
    }
}

pub(crate) struct State {
    /// What every native transport has (see `core.rs`).
    core: CoreState,
    /// The socket's descriptor.
    fd: i32,
    sock: Option<Py<PyAny>>,
    /// The socket's address family (SO_DOMAIN).
    family: i32,
    extra: Py<PyDict>,
    /// The remote address given to create_datagram_endpoint, if any.
    address: Option<Py<PyAny>>,
    /// The socket is connected (`peername` is set): send(2), not sendto.
    connected: bool,
    queue: VecDeque<Queued>,
    queued_bytes: usize,
    addresses: AddressCache,
    /// Sends may wait for the end of the iteration (`datagram_batch.rs`): an IP socket, not
    /// connected, without `IP_RECVERR`.
    batchable: bool,
    /// The datagrams waiting for the end of this iteration, in order (see `datagram_batch.rs`).
    batch: Vec<Held>,
    /// The destinations of `batch` as the program gave them, for the queue if the socket
    /// cannot take them all.
    batch_addrs: Vec<Py<PyAny>>,
    /// Bytes received in datagrams so far (for `inspect_transports`).
    bytes_in: u64,
    /// Bytes of the datagrams handed to `sendto()` and sent or queued so far.
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
        self.queued_bytes
    }
    fn has_pending(&self) -> bool {
        !self.queue.is_empty()
    }
    fn discard_pending(&mut self) {
        self.queue.clear();
        self.queued_bytes = 0;
    }
}

/// `_read_ready`, run by the loop without a Python call (see `handle::NativeMethod`).
static READ_READY: NativeMethod = NativeMethod {
    name: "_read_ready",
    call: |transport| DatagramTransport::_read_ready(transport.cast::<DatagramTransport>()?),
};

/// `_flush_batch`, run by the loop at the end of the iteration (`LoopCore::run_deferred`).
static FLUSH_BATCH: NativeMethod = NativeMethod {
    name: "_flush_batch",
    call: |transport| DatagramTransport::flush_batch(transport.cast::<DatagramTransport>()?),
};

/// `_sendto_ready`, run by the loop without a Python call.
static SENDTO_READY: NativeMethod = NativeMethod {
    name: "_sendto_ready",
    call: |transport| DatagramTransport::_sendto_ready(transport.cast::<DatagramTransport>()?),
};

/// asyncio's datagram transport over a non-blocking datagram socket.
#[pyclass(
    frozen,
    weakref,
    dict,
    module = "ferroloop._ferroloop",
    name = "DatagramTransport"
)]
pub struct DatagramTransport {
    state: GilRefCell<State>,
}

/// Most datagrams read per readiness event (libuv reads 32 too): a busy socket then costs one
/// poll per batch instead of one per datagram, while other callbacks still get their turn.
const DATAGRAMS_PER_WAKEUP: usize = 32;

/// Room for one datagram in the batch buffer: the largest UDP payload over IPv4 (65,507)
/// or IPv6 without jumbograms (65,527) fits, so nothing is ever truncated.
const DATAGRAM_SLOT: usize = 64 * 1024;

/// The buffers one `recvmmsg` fills: `DATAGRAMS_PER_WAKEUP` slots of `DATAGRAM_SLOT` bytes
/// (2 MiB of address space per thread, allocated zeroed on first use: only the pages
/// datagrams actually touch become resident) and their sender addresses.
struct BatchBuffers {
    data: Vec<u8>,
    addrs: Vec<RawAddr>,
    lengths: Vec<usize>,
}

impl BatchBuffers {
    const fn new() -> Self {
        BatchBuffers {
            data: Vec::new(),
            addrs: Vec::new(),
            lengths: Vec::new(),
        }
    }

    /// One `recvmmsg` on `fd`: how many datagrams arrived (at least one), or the error
    /// (EAGAIN when none was waiting).
    fn receive(&mut self, fd: i32) -> io::Result<usize> {
        if self.data.is_empty() {
            self.data = vec![0; DATAGRAMS_PER_WAKEUP * DATAGRAM_SLOT];
            self.addrs = vec![RawAddr::empty(); DATAGRAMS_PER_WAKEUP];
            self.lengths = vec![0; DATAGRAMS_PER_WAKEUP];
        }
        let mut iovecs: Vec<libc::iovec> = self
            .data
            .chunks_mut(DATAGRAM_SLOT)
            .map(|slot| libc::iovec {
                iov_base: slot.as_mut_ptr().cast(),
                iov_len: slot.len(),
            })
            .collect();
        // SAFETY: an all-zero mmsghdr is a valid empty header; each is filled below.
        let mut headers: Vec<libc::mmsghdr> = (0..DATAGRAMS_PER_WAKEUP)
            .map(|_| unsafe { std::mem::zeroed() })
            .collect();
        for (i, header) in headers.iter_mut().enumerate() {
            self.addrs[i] = RawAddr::empty();
            let (sa, len) = self.addrs[i].as_mut_parts();
            header.msg_hdr.msg_name = sa.cast();
            // SAFETY: `len` points to the address buffer's length, valid and initialised.
            header.msg_hdr.msg_namelen = unsafe { *len };
            header.msg_hdr.msg_iov = &mut iovecs[i];
            header.msg_hdr.msg_iovlen = 1;
        }
        let count = loop {
            // SAFETY: every header points to a live iovec (one slot of `data`) and a live
            // address buffer; the kernel writes at most their stated sizes. No timeout.
            let n = unsafe {
                libc::recvmmsg(
                    fd,
                    headers.as_mut_ptr(),
                    headers.len() as libc::c_uint,
                    0,
                    std::ptr::null_mut(),
                )
            };
            if n >= 0 {
                break n as usize;
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        };
        for (i, header) in headers.iter().take(count).enumerate() {
            self.lengths[i] = header.msg_len as usize;
            self.addrs[i].set_len(header.msg_hdr.msg_namelen);
        }
        Ok(count)
    }

    /// The `i`th datagram of the last `receive` and its sender.
    fn message(&self, i: usize) -> (&[u8], &RawAddr) {
        let start = i * DATAGRAM_SLOT;
        (&self.data[start..start + self.lengths[i]], &self.addrs[i])
    }
}

thread_local! {
    /// The per-thread `recvmmsg` buffers (datagrams are copied out before the protocol runs).
    static BATCH_BUFFERS: std::cell::RefCell<BatchBuffers> =
        const { std::cell::RefCell::new(BatchBuffers::new()) };
}

/// The outcome of one send attempt.
enum Sent {
    Done,
    WouldBlock,
    Failed(PyErr),
}

/// Interprets a `send`/`sendto` return value (EINTR retried by the caller's loop).
fn sent_result(n: isize) -> Option<io::Result<()>> {
    if n >= 0 {
        return Some(Ok(()));
    }
    let err = io::Error::last_os_error();
    if err.kind() == io::ErrorKind::Interrupted {
        return None;
    }
    Some(Err(err))
}

impl NativeTransport for DatagramTransport {
    type State = State;
    fn state(&self) -> &GilRefCell<State> {
        &self.state
    }
    fn send_held_back(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::flush_batch(slf)
    }
}

/// The socket reports asynchronous errors (ICMP) to every send: `IP_RECVERR` or
/// `IPV6_RECVERR` is set. `sendmmsg` would lose such an error when it hits a datagram after
/// the first (it returns the count sent and drops the error), so such sockets send at once.
fn reports_async_errors(fd: i32, family: i32) -> bool {
    let (level, option) = match family {
        libc::AF_INET => (libc::IPPROTO_IP, libc::IP_RECVERR),
        libc::AF_INET6 => (libc::IPPROTO_IPV6, libc::IPV6_RECVERR),
        _ => return true,
    };
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are valid for writes of their sizes during the call.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            level,
            option,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    rc != 0 || value != 0
}

impl DatagramTransport {
    /// Sends the datagrams held back for the end of the iteration, in order, with
    /// `sendmmsg`: an error goes to `error_received` (that datagram is dropped, the next are
    /// sent, as successive `sendto` calls would); what the socket cannot take now is queued
    /// (flow control applies) and sent when it becomes writable. The first exception raised
    /// by `error_received` is returned once all are handled.
    fn flush_batch(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        // Taken out while error_received may run (it may send, close, abort).
        let (fd, mut held, mut addrs) = {
            let mut state = this.state.borrow_mut(py);
            if state.batch.is_empty() {
                return Ok(());
            }
            (
                state.fd,
                std::mem::take(&mut state.batch),
                std::mem::take(&mut state.batch_addrs),
            )
        };
        let mut raised = None;
        let mut start = 0;
        while start < held.len() {
            match send_batch(py, fd, &held[start..]) {
                BatchSent::Sent(n) => start += n,
                BatchSent::Failed(err) if would_block(&err) => break,
                BatchSent::Failed(err) => {
                    start += 1;
                    if let Err(err) = this.error_received(py, os_error(err)) {
                        raised.get_or_insert(err);
                    }
                }
            }
        }
        let unsent = start < held.len();
        let was_empty = {
            let mut state = this.state.borrow_mut(py);
            let was_empty = state.queue.is_empty();
            // Ahead of anything queued meanwhile (by error_received): these came first.
            let rest: Vec<_> = held.drain(start..).zip(addrs.drain(start..)).collect();
            for (datagram, addr) in rest.into_iter().rev() {
                let data = match datagram.data {
                    HeldBytes::Shared(bytes) => QueuedData::Shared(bytes),
                    HeldBytes::Owned(copy) => QueuedData::Copied(copy),
                };
                state.queued_bytes += data.as_slice(py).len();
                state.queue.push_front(Queued {
                    data,
                    addr: Some(addr),
                });
            }
            // Keep the vectors' room for the next iteration's batch.
            held.clear();
            addrs.clear();
            if state.batch.is_empty() && state.batch.capacity() == 0 {
                state.batch = held;
                state.batch_addrs = addrs;
            }
            was_empty
        };
        if unsent {
            if was_empty {
                Self::watch(slf, Side::Write, &SENDTO_READY)?;
            }
            Self::maybe_pause_protocol(slf)?;
        }
        raised.map_or(Ok(()), Err)
    }

    /// Holds `data` for `addr` back until the end of the iteration if that cannot change
    /// anything the program sees (see `datagram_batch.rs`); false if it must be sent now.
    fn hold_back(
        slf: &Bound<'_, Self>,
        payload: &Payload<'_, '_>,
        addr: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let py = slf.py();
        let this = slf.get();
        let Some(addr) = addr else {
            return Ok(false);
        };
        let full = {
            let mut state = this.state.borrow_mut(py);
            if !state.batchable || !state.queue.is_empty() || state.core.closing {
                return Ok(false);
            }
            // Replies only: the address tuple `datagram_received` was given, so the peer
            // just reached us (a bad port, an unroutable address: sent at once, and their
            // error reaches error_received inside sendto, as on asyncio).
            let Some(raw) = state.addresses.raw_for(addr) else {
                return Ok(false);
            };
            if state.batch.is_empty() {
                let Some(event_loop) = state.core.event_loop.as_ref() else {
                    return Ok(false);
                };
                // Only while the loop runs callbacks: it sends the batch when they are done.
                if !event_loop
                    .get()
                    .defer_to_iteration_end(py, slf.as_any(), &FLUSH_BATCH)
                {
                    return Ok(false);
                }
            }
            let data = match payload {
                Payload::Bytes(bytes) => HeldBytes::Shared((*bytes).clone().unbind()),
                other => HeldBytes::Owned(other.as_slice().to_vec()),
            };
            state.batch.push(Held { data, raw });
            state.batch_addrs.push(addr.clone().unbind());
            state.batch.len() >= BATCH_MAX
        };
        if full {
            Self::flush_batch(slf)?;
        }
        Ok(true)
    }

    /// `protocol.error_received(exc)`.
    fn error_received(&self, py: Python<'_>, err: PyErr) -> PyResult<()> {
        if let Some(protocol) = self.protocol_of(py) {
            protocol
                .bind(py)
                .call_method1(intern!(py, "error_received"), (err.into_value(py),))?;
        }
        Ok(())
    }

    /// Sends one datagram now: send(2) when connected, else sendto(2) to `addr` (numeric
    /// addresses natively, others through the socket object).
    fn send_one(&self, py: Python<'_>, data: &[u8], addr: Option<&Bound<'_, PyAny>>) -> Sent {
        let (fd, connected, raw, sock) = {
            let state = self.state.borrow_mut(py);
            let raw = addr.and_then(|a| {
                state
                    .addresses
                    .raw_for(a)
                    .or_else(|| RawAddr::from_python(state.family, a))
            });
            (
                state.fd,
                state.connected,
                raw,
                state.sock.as_ref().map(|s| s.clone_ref(py)),
            )
        };
        let outcome = if connected {
            loop {
                // SAFETY: `data` is valid for reads of its length during the call.
                let n = unsafe { libc::send(fd, data.as_ptr().cast(), data.len(), 0) };
                if let Some(result) = sent_result(n) {
                    break result;
                }
            }
        } else if let Some(raw) = raw {
            let (sa, len) = raw.as_parts();
            loop {
                // SAFETY: `data` is readable for its length; `sa`/`len` describe a valid
                // socket address owned by `raw`.
                let n = unsafe { libc::sendto(fd, data.as_ptr().cast(), data.len(), 0, sa, len) };
                if let Some(result) = sent_result(n) {
                    break result;
                }
            }
        } else {
            // Host names, AF_UNIX paths, bad addresses: the socket module decides.
            let Some(sock) = sock else {
                return Sent::Failed(PyOSError::new_err((libc::EBADF, "Bad file descriptor")));
            };
            let bytes = PyBytes::new(py, data);
            let addr = addr.map_or_else(|| py.None().into_bound(py), |a| a.clone());
            return match sock
                .bind(py)
                .call_method1(intern!(py, "sendto"), (bytes, addr))
            {
                Ok(_) => Sent::Done,
                Err(err) if err.is_instance_of::<pyo3::exceptions::PyBlockingIOError>(py) => {
                    Sent::WouldBlock
                }
                Err(err) => Sent::Failed(err),
            };
        };
        match outcome {
            Ok(()) => Sent::Done,
            Err(err) if would_block(&err) => Sent::WouldBlock,
            Err(err) => Sent::Failed(os_error(err)),
        }
    }

    /// IP sockets: receives up to `DATAGRAMS_PER_WAKEUP` datagrams with one `recvmmsg(2)`,
    /// then hands them to the protocol one by one while the transport stays open (datagrams
    /// left when it closes are dropped, as closing the socket would drop them).
    fn read_batch(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let (fd, protocol) = {
            let state = this.state.borrow_mut(py);
            if state.core.conn_lost > 0 || state.core.closing {
                return Ok(());
            }
            let Some(protocol) = state.core.protocol.as_ref() else {
                return Ok(());
            };
            (state.fd, protocol.clone_ref(py))
        };
        let received = BATCH_BUFFERS.with_borrow_mut(|batch| {
            batch.receive(fd).map(|count| {
                (0..count)
                    .map(|i| {
                        let (data, raw) = batch.message(i);
                        (PyBytes::new(py, data), *raw)
                    })
                    .collect::<Vec<_>>()
            })
        });
        if let Ok(datagrams) = &received {
            let size: usize = datagrams
                .iter()
                .map(|(data, _)| data.as_bytes().len())
                .sum();
            this.state.borrow_mut(py).bytes_in += size as u64;
        }
        let datagrams = match received {
            Ok(datagrams) => datagrams,
            Err(err) if would_block(&err) => return Ok(()),
            Err(err) => return this.error_received(py, os_error(err)),
        };
        let protocol = protocol.bind(py);
        for (data, raw) in datagrams {
            if this.state.borrow_mut(py).core.closing {
                break;
            }
            let addr = this.state.borrow_mut(py).addresses.python_for(py, &raw);
            let addr = match addr {
                Some(addr) => addr?,
                None => py.None().into_bound(py),
            };
            protocol.call_method1(intern!(py, "datagram_received"), (data, addr))?;
        }
        Ok(())
    }

    /// Non-IP sockets: receives one datagram through the socket object and hands it to the
    /// protocol; true if another may be read now.
    fn read_one(slf: &Bound<'_, Self>) -> PyResult<bool> {
        let py = slf.py();
        let this = slf.get();
        let (protocol, sock) = {
            let state = this.state.borrow_mut(py);
            if state.core.conn_lost > 0 || state.core.closing {
                return Ok(false);
            }
            let Some(protocol) = state.core.protocol.as_ref() else {
                return Ok(false);
            };
            (
                protocol.clone_ref(py),
                state.sock.as_ref().map(|s| s.clone_ref(py)),
            )
        };
        let protocol = protocol.bind(py);
        // Other families (AF_UNIX datagrams): the socket object's recvfrom, one at a time.
        let received: PyResult<Option<(Bound<'_, PyBytes>, Bound<'_, PyAny>)>> = {
            let Some(sock) = sock else {
                return Ok(false);
            };
            match sock
                .bind(py)
                .call_method1(intern!(py, "recvfrom"), (READ_SIZE,))
            {
                Ok(pair) => {
                    let (data, addr): (Bound<'_, PyBytes>, Bound<'_, PyAny>) = pair.extract()?;
                    Ok(Some((data, addr)))
                }
                Err(err) if err.is_instance_of::<pyo3::exceptions::PyBlockingIOError>(py) => {
                    Ok(None)
                }
                Err(err) => Err(err),
            }
        };
        match received {
            Ok(Some((data, addr))) => {
                this.state.borrow_mut(py).bytes_in += data.as_bytes().len() as u64;
                protocol.call_method1(intern!(py, "datagram_received"), (data, addr))?;
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(err) if err.is_instance_of::<PyOSError>(py) => {
                this.error_received(py, err).map(|_| false)
            }
            Err(err) => {
                Self::fatal_error(slf, err, "Fatal read error on datagram transport").map(|_| false)
            }
        }
    }
}

transport_pymethods! {
    impl DatagramTransport [base, close, write, socket] {
        /// `DatagramTransport(loop, sock, protocol, address=None, extra=None)`: wraps a
        /// non-blocking datagram socket (`address`: the remote address it is connected to).
        /// `_start()` then schedules `connection_made` and reading.
        #[new]
        #[pyo3(signature = (event_loop, sock, protocol, address=None, extra=None))]
        fn new(
            event_loop: &Bound<'_, PyAny>,
            sock: &Bound<'_, PyAny>,
            protocol: &Bound<'_, PyAny>,
            address: Option<&Bound<'_, PyAny>>,
            extra: Option<&Bound<'_, PyAny>>,
        ) -> PyResult<Self> {
            let py = sock.py();
            let core = event_loop.cast::<LoopCore>()?.clone().unbind();
            let fd: i32 = sock.call_method0(intern!(py, "fileno"))?.extract()?;
            let extra = match extra {
                Some(extra) if !extra.is_none() => extra.cast::<PyDict>()?.clone(),
                _ => PyDict::new(py),
            };
            if !extra.contains(intern!(py, "peername"))? {
                let peer = match sock.call_method0(intern!(py, "getpeername")) {
                    Ok(addr) => addr,
                    Err(err) if err.is_instance_of::<PyOSError>(py) => py.None().into_bound(py),
                    Err(err) => return Err(err),
                };
                extra.set_item(intern!(py, "peername"), peer)?;
            }
            let connected = extra
                .get_item(intern!(py, "peername"))?
                .map_or(Ok(false), |p| p.is_truthy())?;
            let family = socket_family(fd);
            let batchable = (family == libc::AF_INET || family == libc::AF_INET6)
                && !connected
                && !reports_async_errors(fd, family);
            Ok(DatagramTransport {
                state: GilRefCell::new(State {
                    core: CoreState::new(core, protocol.clone().unbind()),
                    sock: Some(sock.clone().unbind()),
                    fd,
                    family,
                    extra: extra.unbind(),
                    address: address.filter(|a| !a.is_none()).map(|a| a.clone().unbind()),
                    connected,
                    queue: VecDeque::new(),
                    queued_bytes: 0,
                    addresses: AddressCache::default(),
                    batchable,
                    batch: Vec::new(),
                    batch_addrs: Vec::new(),
                    bytes_in: 0,
                    bytes_written: 0,
                }),
            })
        }

        /// Registers the transport with the loop and schedules `connection_made`, reading, and
        /// then `waiter`'s result.
        #[pyo3(signature = (waiter=None))]
        fn _start(slf: &Bound<'_, Self>, waiter: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
            lazy_dict::release_unused_dict(slf.as_any());
            if !Self::enter_registry(slf) {
                return Ok(());
            }
            Self::schedule_start(slf, waiter)
        }

        #[getter(__class__)]
        fn class(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
            Ok(py_cache::datagram_transport_class(py)?.clone_ref(py))
        }

        fn __repr__(&self, py: Python<'_>) -> String {
            let state = self.state.borrow_mut(py);
            let status = if state.sock.is_none() {
                "closed"
            } else if state.core.closing {
                "closing"
            } else {
                "open"
            };
            format!("<DatagramTransport fd={} {status}>", state.fd)
        }

        fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
            // See StreamTransport::__traverse__: a state borrowed right now reports nothing.
            let Some(state) = self.state.try_borrow_in_gc() else {
                return Ok(());
            };
            for obj in [&state.core.protocol, &state.sock, &state.address]
                .into_iter()
                .flatten()
            {
                visit.call(obj)?;
            }
            visit.call(&state.extra)?;
            for queued in &state.queue {
                if let Some(addr) = &queued.addr {
                    visit.call(addr)?;
                }
            }
            for obj in state.addresses.objects() {
                visit.call(obj)?;
            }
            for addr in &state.batch_addrs {
                visit.call(addr)?;
            }
            Ok(())
        }

        fn __clear__(&self) {
            let Some(mut state) = self.state.try_borrow_in_gc() else {
                return;
            };
            let protocol = state.core.protocol.take();
            let queue = std::mem::take(&mut state.queue);
            let batch_addrs = std::mem::take(&mut state.batch_addrs);
            state.batch.clear();
            state.addresses.clear();
            drop(state);
            drop((protocol, queue, batch_addrs));
        }

        /// Starts reading unless closing (scheduled after `connection_made`).
        fn _start_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
            if slf.get().state.borrow_mut(slf.py()).core.closing {
                return Ok(());
            }
            Self::watch(slf, Side::Read, &READ_READY)
        }

        /// The socket is readable: up to `DATAGRAMS_PER_WAKEUP` datagrams to the protocol, while
        /// the transport stays open (IP sockets: received with one `recvmmsg`).
        fn _read_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
            let family = slf.get().state.borrow_mut(slf.py()).family;
            if family == libc::AF_INET || family == libc::AF_INET6 {
                return Self::read_batch(slf);
            }
            for _ in 0..DATAGRAMS_PER_WAKEUP {
                if !Self::read_one(slf)? {
                    break;
                }
            }
            Ok(())
        }

        /// For `ferroloop.inspect_transports`: bytes received, bytes handed to `sendto()`
        /// (sent or queued), and whether the protocol's writing is paused (flow control).
        fn _io_counts(&self, py: Python<'_>) -> (u64, u64, bool) {
            let state = self.state.borrow_mut(py);
            (state.bytes_in, state.bytes_written, state.core.protocol_paused)
        }

        /// Sends `data` to `addr` (None: the connected peer).
        #[pyo3(signature = (data, addr=None))]
        fn sendto(
            slf: &Bound<'_, Self>,
            data: &Bound<'_, PyAny>,
            addr: Option<&Bound<'_, PyAny>>,
        ) -> PyResult<()> {
            let py = slf.py();
            let this = slf.get();
            let mut payload = Payload::new(data)?;
            let unsendable = payload.take_unsendable();
            let contents = payload.as_slice();
            // Up to 3.12 asyncio drops an empty datagram; 3.13 sends it (it is a valid datagram).
            if contents.is_empty() && !python_at_least(3, 13) {
                return Ok(());
            }
            let mut addr = addr.filter(|a| !a.is_none()).cloned();
            let (address, conn_lost, queued) = {
                let state = this.state.borrow_mut(py);
                (
                    state.address.as_ref().map(|a| a.clone_ref(py)),
                    state.core.conn_lost,
                    !state.queue.is_empty(),
                )
            };
            if let Some(address) = &address {
                let address = address.bind(py);
                if let Some(given) = &addr {
                    if !given.eq(address)? {
                        return Err(PyValueError::new_err(format!(
                            "Invalid address: must be None or {}",
                            address.str()?
                        )));
                    }
                }
                addr = Some(address.clone());
                if conn_lost > 0 {
                    if conn_lost >= LOST_WRITES_BEFORE_WARNING {
                        py_cache::asyncio_logger(py)?
                            .bind(py)
                            .call_method1("warning", ("socket.send() raised exception.",))?;
                    }
                    this.state.borrow_mut(py).core.conn_lost += 1;
                    return Ok(());
                }
            }
            if let (false, Some(err)) = (queued, unsendable) {
                return Self::fatal_error(slf, err, "Fatal write error on datagram transport");
            }
            if !queued && Self::hold_back(slf, &payload, addr.as_ref())? {
                this.state.borrow_mut(py).bytes_written += contents.len() as u64;
                return Ok(());
            }
            // Anything held back goes first; it may leave datagrams queued.
            Self::flush_batch(slf)?;
            let queued = !this.state.borrow_mut(py).queue.is_empty();
            if !queued {
                match this.send_one(py, contents, addr.as_ref()) {
                    Sent::Done => {
                        this.state.borrow_mut(py).bytes_written += contents.len() as u64;
                        return Ok(());
                    }
                    Sent::WouldBlock => Self::watch(slf, Side::Write, &SENDTO_READY)?,
                    Sent::Failed(err) if err.is_instance_of::<PyOSError>(py) => {
                        return this.error_received(py, err)
                    }
                    Sent::Failed(err) => {
                        return Self::fatal_error(
                            slf,
                            err,
                            "Fatal write error on datagram transport",
                        )
                    }
                }
            }
            {
                let data = QueuedData::new(&payload, contents)?;
                let mut state = this.state.borrow_mut(py);
                state.queued_bytes += contents.len();
                state.bytes_written += contents.len() as u64;
                state.queue.push_back(Queued {
                    data,
                    addr: addr.map(Bound::unbind),
                });
            }
            Self::maybe_pause_protocol(slf)
        }

        /// The socket is writable: send queued datagrams until it would block.
        fn _sendto_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
            let py = slf.py();
            let this = slf.get();
            loop {
                let next = this.state.borrow_mut(py).queue.pop_front();
                let Some(queued) = next else {
                    break;
                };
                let addr = queued.addr.as_ref().map(|a| a.bind(py).clone());
                match this.send_one(py, queued.data.as_slice(py), addr.as_ref()) {
                    Sent::Done => {
                        this.state.borrow_mut(py).queued_bytes -= queued.data.as_slice(py).len();
                    }
                    Sent::WouldBlock => {
                        this.state.borrow_mut(py).queue.push_front(queued);
                        break;
                    }
                    Sent::Failed(err) => {
                        this.state.borrow_mut(py).queued_bytes -= queued.data.as_slice(py).len();
                        if err.is_instance_of::<PyOSError>(py) {
                            return this.error_received(py, err);
                        }
                        return Self::fatal_error(
                            slf,
                            err,
                            "Fatal write error on datagram transport",
                        );
                    }
                }
            }
            Self::maybe_resume_protocol(slf)?;
            let (empty, closing) = {
                let state = this.state.borrow_mut(py);
                (state.queue.is_empty(), state.core.closing)
            };
            if empty {
                this.unwatch(py, Side::Write)?;
                if closing {
                    let already = {
                        let mut state = this.state.borrow_mut(py);
                        let already = state.core.conn_lost > 0;
                        state.core.conn_lost += 1;
                        already
                    };
                    if !already {
                        Self::_call_connection_lost(slf, &py.None().into_bound(py))?;
                    }
                }
            }
            Ok(())
        }

        /// Runs `protocol.connection_lost(exc)`, then closes the socket and drops references.
        fn _call_connection_lost(slf: &Bound<'_, Self>, exc: &Bound<'_, PyAny>) -> PyResult<()> {
            let py = slf.py();
            let result = match slf.get().protocol_of(py) {
                Some(protocol) => protocol
                    .bind(py)
                    .call_method1(intern!(py, "connection_lost"), (exc,))
                    .map(drop),
                None => Ok(()),
            };
            let (sock, event_loop, protocol) = {
                let mut state = slf.get().state.borrow_mut(py);
                state.addresses.clear();
                (
                    state.sock.take(),
                    state.core.event_loop.take(),
                    state.core.protocol.take(),
                )
            };
            if let Some(sock) = sock {
                let extra = slf.get().state.borrow_mut(py).extra.clone_ref(py);
                keep_socket_info(py, extra.bind(py), sock.bind(py))?;
                close_socket_object(py, sock.bind(py))?;
            }
            drop((event_loop, protocol));
            result
        }

        /// Extra information: `socket`, `sockname`, `peername` and what the creator passed.
        #[pyo3(signature = (name, default=None))]
        fn get_extra_info(
            &self,
            py: Python<'_>,
            name: &Bound<'_, PyAny>,
            default: Option<Py<PyAny>>,
        ) -> PyResult<Py<PyAny>> {
            let (extra, sock) = {
                let state = self.state.borrow_mut(py);
                (
                    state.extra.clone_ref(py),
                    state.sock.as_ref().map(|s| s.clone_ref(py)),
                )
            };
            extra_info(py, extra.bind(py), sock.as_ref(), name, default)
        }

        /// The socket object (None once closed).
        #[getter]
        fn _sock(&self, py: Python<'_>) -> Option<Py<PyAny>> {
            self.state
                .borrow_mut(py)
                .sock
                .as_ref()
                .map(|s| s.clone_ref(py))
        }

        /// The remote address given at creation (None if unconnected).
        #[getter]
        fn _address(&self, py: Python<'_>) -> Option<Py<PyAny>> {
            self.state
                .borrow_mut(py)
                .address
                .as_ref()
                .map(|a| a.clone_ref(py))
        }

        /// Bytes queued (asyncio's private attribute).
        #[getter]
        fn _buffer_size(&self, py: Python<'_>) -> usize {
            self.get_write_buffer_size(py)
        }
    }
}

impl Drop for DatagramTransport {
    /// An unclosed transport warns (ResourceWarning) and closes its socket.
    fn drop(&mut self) {
        Python::attach(|py| {
            self.leave_registry(py);
            let sock = self.state.borrow_mut(py).sock.take();
            let Some(sock) = sock else {
                return;
            };
            let fd = self.state.borrow_mut(py).fd;
            warn_unclosed(py, "DatagramTransport", fd);
            if let Err(err) = close_socket_object(py, sock.bind(py)) {
                err.write_unraisable(py, None);
            }
        });
    }
}
