//! ferroloop: asyncio's event loop, rebuilt in Rust.
//!
//! The extension module `ferroloop._ferroloop` exports [`event_loop::LoopCore`] (the native
//! half of `ferroloop.EventLoop`) and [`handle::Handle`]. Module map, one concept per file:
//! - [`event_loop`]: the ready queue, the iteration, the hot scheduling entry points;
//! - [`handle`]: handles and timer handles (what the queues hold);
//! - [`timers`]: the deadline heap with purging of cancelled timers;
//! - [`poller`]: epoll (level/edge-triggered registrations), the threadsafe waker, the signal
//!   wakeup pipe;
//! - [`clock`]: the loop's single time source;
//! - [`errors`]: OS errors as Python's `OSError` subclasses;
//! - [`sock_io`]: native completion of `sock_recv`/`sock_recv_into`;
//! - [`stream_transport`]: the TCP/Unix stream transport; [`write_buffer`]: its write queue;
//! - [`accept`]: servers' native accept (no Python socket object per connection);
//! - [`datagram_transport`]: the UDP/AF_UNIX datagram transport; [`sockaddr`]: its address
//!   conversion;
//! - [`fast_methods`]: raw vectorcall entry points for `call_soon` and `get_debug`;
//! - [`callback_check`]: asyncio's validation of callbacks;
//! - [`gil_cell`], [`py_cache`]: GIL-guarded state and cached Python objects.
#![deny(missing_docs)]

pub mod accept;
pub mod callback_check;
pub mod clock;
pub mod datagram_transport;
pub mod errors;
pub mod event_loop;
pub mod fast_methods;
pub mod fd_map;
pub mod gil_cell;
pub mod handle;
pub mod poller;
pub mod py_cache;
pub mod sock_io;
pub mod sockaddr;
pub mod spare_bytes;
pub mod stream_transport;
pub mod timers;
pub mod transport_core;
pub mod write_buffer;

use pyo3::prelude::*;

/// asyncio's check of a callback given to `method`: TypeError for coroutines and non-callables.
#[pyfunction]
fn _check_callback(callback: &Bound<'_, PyAny>, method: &str) -> PyResult<()> {
    callback_check::check_callback(callback.py(), callback, method)
}

/// The extension module.
#[pymodule]
fn _ferroloop(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<event_loop::LoopCore>()?;
    fast_methods::install(&m.py().get_type::<event_loop::LoopCore>())?;
    m.add_class::<handle::Handle>()?;
    m.add_class::<stream_transport::StreamTransport>()?;
    m.add_class::<datagram_transport::DatagramTransport>()?;
    m.add_function(wrap_pyfunction!(_check_callback, m)?)?;
    m.add_class::<accept::AcceptedSocket>()?;
    m.add_function(wrap_pyfunction!(accept::accept_connection, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
