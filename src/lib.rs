//! ferroloop: asyncio's event loop, rebuilt in Rust.
//!
//! The extension module `ferroloop._ferroloop` exports [`event_loop::LoopCore`] (the native
//! half of `ferroloop.EventLoop`), its handles, its transports, servers' native accept, the
//! child watch and native spawn, and the system calls the Python glue must not make on the loop
//! thread (a Unix server's socket file, sendfile's `fstat`/`sendfile`/`lseek`). Layers, each a
//! folder, each importing only the ones listed before it:
//! - [`core`]: the domain, plain Rust with no Python: clock, timer heap, poller (epoll, waker,
//!   signal pipe), descriptor maps, the `call_soon_threadsafe` post gate;
//! - [`interop`]: what every adapter needs to talk to Python: GIL-guarded cells, cached Python
//!   objects, OS errors as `OSError` subclasses, asyncio's callback check, reused `bytes`;
//! - [`event_loop`]: the loop object: ready queue, iteration, scheduling entry points, descriptor
//!   watches, handles, futures and tasks, native `sock_recv`, virtual time and a replaced
//!   `loop.time`;
//! - [`transport`]: the transports and servers' accept, on a shared transport core;
//! - [`process`]: child processes: native spawn (vfork-style clone + exec), exit watching through pidfds,
//!   reaping, signals.
//!
//! The Python package (`python/ferroloop/`) is the edge above all of them: the cold paths.
#![deny(missing_docs)]

pub mod core;
pub mod event_loop;
pub mod interop;
pub mod process;
pub mod transport;

use pyo3::prelude::*;

/// asyncio's check of a callback given to `method`: TypeError for coroutines and non-callables.
#[pyfunction]
fn _check_callback(callback: &Bound<'_, PyAny>, method: &str) -> PyResult<()> {
    interop::callback_check::check_callback(callback.py(), callback, method)
}

/// Test-only: makes the system call at `site` (`"accept"`, `"waker"`) fail with `errno` from
/// now on, 0 to stop; returns how many calls it failed meanwhile (see `core::fault_inject`).
#[pyfunction]
fn _inject_fault(site: &str, errno: i32) -> PyResult<u32> {
    let site = core::fault_inject::Site::from_name(site).ok_or_else(|| {
        pyo3::exceptions::PyValueError::new_err(format!("unknown fault site {site:?}"))
    })?;
    Ok(core::fault_inject::arm(site, errno))
}

/// The extension module.
#[pymodule]
fn _ferroloop(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("_context_reuse", interop::context_reuse::enable(m.py()))?;
    if let Some(offset) = interop::context_reuse::verified_tstate_offset() {
        interop::context_switch::enable(m.py(), offset);
    }
    m.add("_context_switch", interop::context_switch::enabled())?;
    m.add_class::<event_loop::LoopCore>()?;
    event_loop::fast_methods::install(
        &m.py().get_type::<event_loop::LoopCore>(),
        &m.py().get_type::<event_loop::handle::Handle>(),
    )?;
    m.add_class::<event_loop::handle::Handle>()?;
    m.add_class::<event_loop::watchdog::WatchdogReport>()?;
    m.add_class::<transport::stream::StreamTransport>()?;
    transport::fast_write::install(&m.py().get_type::<transport::stream::StreamTransport>())?;
    m.add_class::<transport::tls_pump::TlsPump>()?;
    m.add_class::<transport::buffer_window::BufferWindow>()?;
    m.add_class::<transport::datagram::DatagramTransport>()?;
    m.add_class::<transport::pipe_read::ReadPipeTransport>()?;
    m.add_class::<transport::pipe_write::WritePipeTransport>()?;
    m.add_function(wrap_pyfunction!(_check_callback, m)?)?;
    m.add_function(wrap_pyfunction!(_inject_fault, m)?)?;
    m.add_class::<transport::accept::AcceptedSocket>()?;
    m.add_function(wrap_pyfunction!(transport::accept::accept_connection, m)?)?;
    m.add_class::<transport::server_clients::ServerClients>()?;
    m.add_class::<process::child_watch::ChildWatch>()?;
    m.add_function(wrap_pyfunction!(process::spawn::spawn_child, m)?)?;
    m.add_function(wrap_pyfunction!(
        transport::socket_file::socket_file_inode,
        m
    )?)?;
    m.add_function(wrap_pyfunction!(
        transport::socket_file::remove_socket_file,
        m
    )?)?;
    m.add_function(wrap_pyfunction!(
        transport::socket_file::remove_stale_socket_file,
        m
    )?)?;
    m.add_function(wrap_pyfunction!(transport::file_send::file_size, m)?)?;
    m.add_function(wrap_pyfunction!(
        event_loop::inspector_socket::prepare_inspector_socket,
        m
    )?)?;
    m.add_function(wrap_pyfunction!(transport::file_send::send_file_chunk, m)?)?;
    m.add_function(wrap_pyfunction!(transport::file_send::seek_file, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
