//! `LoopCore`: the native half of `ferroloop.EventLoop` — the ready queue, the timers, the
//! poll, and the hot entry points (`call_soon`, `call_later`, `create_future`, `create_task`).
//!
//! The Python class `ferroloop.EventLoop` (`python/ferroloop/_loop.py`) has `LoopCore` as its
//! first base, then the Python mixins of the socket, connection and server APIs, then
//! `asyncio.AbstractEventLoop`; they add the cold glue (run_forever's set-up, executors,
//! exception handler, signals, sockets, servers). Every iteration of the loop runs here without
//! touching Python except to run callbacks.
//!
//! This file holds the loop's state; its methods are split by concept (plain `impl LoopCore`
//! blocks, one per file):
//! - [`methods`]: the one `#[pymethods]` block, thin: each method forwards to a file below;
//!   [`fast_methods`]: raw CPython entry points for `call_soon`, `call_soon_threadsafe`,
//!   `call_later`, `call_at` (one generic body), `get_debug` and `Handle.cancel`;
//! - [`lifecycle`]: creation, the closed/running/debug flags, `run_forever`'s native part,
//!   closing, counters;
//! - [`schedule`]: `call_soon`/`call_soon_threadsafe` (with the post gate's throttling, see
//!   `core::post_gate`)/`call_later`/`call_at` and asyncio's checks, handle creation and
//!   recycling; [`handle`]: the handle class itself;
//! - [`iteration`]: one iteration (`run_once`): timeout, poll, I/O dispatch, due timers,
//!   running the ready callbacks; [`report`]: callback errors and slow callbacks;
//!   [`deferred`]: transports' work run at the end of the iteration (batched datagram sends);
//! - [`fd_watch`]: descriptor watches (`add_reader` & co., the transports' watches, native
//!   receives): the only code that registers descriptors with the poller;
//! - [`native_recv`]: native `sock_recv`/`sock_recv_into`, completed by the loop itself;
//!   [`sock_io`]: one receive (also the stream transport's) and the pending-receive record;
//! - [`tasks`]: `create_future`, `create_task`, the task factory;
//! - [`transports`]: the registry of open transports by descriptor;
//! - [`stats`]: `loop.stats()`, and the iteration's hooks feeding its metrics;
//! - [`time_override`]: `loop.time` replaced on the instance (tests' mocks) drives the clock;
//! - [`watchdog`]: `set_watchdog`: a Rust thread that reports callbacks blocking the loop,
//!   with the loop thread's Python stack, while they block;
//! - [`inspector_socket`]: the file-system work of `serve_inspector()` (its private
//!   directory and socket), native so that it makes no blocking `os` call in Python on the
//!   loop thread;
//! - [`virtual_time`]: `advance_time`, switching to virtual time, outstanding executor jobs
//!   (the clock and the wait planning are in `core::clock`).

mod deferred;
pub mod fast_methods;
mod fd_watch;
pub mod handle;
pub mod inspector_socket;
mod iteration;
mod lifecycle;
mod methods;
mod native_recv;
mod report;
mod schedule;
pub mod sock_io;
mod stats;
mod task_cpu;
pub(crate) mod tasks;
mod time_override;
mod transports;
mod virtual_time;
pub mod watchdog;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::Arc;

use pyo3::prelude::*;

use crate::core::clock::Clock;
use crate::core::fd_map::FdMap;
use crate::core::loop_stats::LoopMeter;
use crate::core::poller::{Poller, Readiness};
use crate::core::post_gate::PostGate;
use crate::core::ready_queue::ReadyQueue;
use crate::core::spare_budget::SpareBudget;
use crate::core::timers::TimerQueue;
use crate::event_loop::fd_watch::FdWatch;
use crate::event_loop::handle::Handle;
use crate::interop::gil_cell::GilRefCell;

pub use crate::event_loop::fd_watch::Side;

/// Queues that change on every iteration; touched only with the GIL held.
struct LoopQueues {
    ready: ReadyQueue<Py<Handle>>,
    timers: TimerQueue<Py<Handle>>,
    /// Handles that ran and that nobody else references, ready to be re-initialised.
    spare_handles: Vec<Py<Handle>>,
    /// How many spare handles to keep: follows the batches the loop takes.
    spare_budget: SpareBudget,
    /// Watched descriptors (add_reader & co., transports, native receives), by number.
    watched: FdMap<FdWatch>,
    /// Readiness reported by the last wait (kept to reuse its allocation).
    io_events: Vec<Readiness>,
    /// How many native receives are pending (they bound the wait, for the closed-socket sweep).
    pending_receives: usize,
    /// When the next closed-socket sweep is due (real monotonic time, also in virtual time).
    next_sweep: f64,
    /// Virtual time: when (real monotonic time) the loop's current quiet period began (no
    /// event, no callback since), if one is under way. The autojump is due once it lasts
    /// the threshold, however many shorter waits (the closed-socket sweep) it took.
    quiet_since: Option<f64>,
    /// The metrics of `loop.stats()` (`stats.rs`, `core::loop_stats`).
    meter: LoopMeter,
}

/// Counters of the loop's life, for introspection and metrics.
#[derive(Default)]
struct LoopStats {
    iterations: AtomicU64,
}

/// The native event loop state. Subclassed by `ferroloop.EventLoop`.
#[pyclass(
    frozen,
    subclass,
    weakref,
    module = "ferroloop._ferroloop",
    name = "LoopCore"
)]
pub struct LoopCore {
    queues: GilRefCell<LoopQueues>,
    clock: Clock,
    poller: Poller,
    /// Incremented by `TimerHandle.cancel()` for timers still queued.
    cancelled_timers: Arc<AtomicUsize>,
    debug: AtomicBool,
    closed: AtomicBool,
    stopping: AtomicBool,
    /// Executor jobs (`run_in_executor`, `to_thread`) still outstanding; counted in virtual
    /// time only, where the clock does not jump past them.
    outstanding_work: AtomicUsize,
    /// The previous iteration polled for I/O.
    polled_last: AtomicBool,
    /// `threading.get_ident()` of the thread running the loop, 0 when not running.
    running_thread: AtomicU64,
    /// Backpressure on threads posting with `call_soon_threadsafe` (see `schedule.rs`).
    post_gate: PostGate,
    task_factory: GilRefCell<Option<Py<PyAny>>>,
    /// While an inspector serves: a mapping (a `WeakKeyDictionary`) that `create_task` fills
    /// with each new task's creation time (loop time), for the task's age; None otherwise.
    task_births: GilRefCell<Option<Py<PyAny>>>,
    /// While an inspector serves: callback run time per task (`task_cpu.rs`).
    task_cpu: GilRefCell<task_cpu::TaskCpu>,
    /// True while `task_cpu` measures (read once per batch).
    profiling_tasks: AtomicBool,
    stats: LoopStats,
    /// The buffer native receives read into (see `sock_io.rs`).
    scratch: GilRefCell<Vec<u8>>,
    /// Open transports by descriptor (object addresses, borrowed): add_reader & co. refuse
    /// their descriptors. A transport enters at creation and leaves when it starts closing or
    /// is deallocated, whichever comes first, so an address here always points to a live
    /// object. (asyncio keeps a WeakValueDictionary: ~120 bytes per connection more.)
    transports: GilRefCell<FdMap<usize>>,
    /// `time` was set on the instance: the loop's clock is that callable (`time_override.rs`).
    time_replaced: AtomicBool,
    /// The instance's replacement of `time`, if any.
    time_replacement: GilRefCell<Option<Py<PyAny>>>,
    /// `set_watchdog`: what the loop publishes around each callback, and the watchdog thread.
    watchdog: watchdog::Watchdog,
    /// The ready callbacks of an iteration are running: transports may defer work to the
    /// end of the iteration (`deferred.rs`).
    running_callbacks: AtomicBool,
    /// While the loop runs a batch of callbacks: its thread's state if the contexts' fast
    /// paths use it (`interop::context_switch::thread_state`), else null. A `call_soon` on
    /// the loop's thread copies the current context from it (no thread-state lookup).
    batch_thread_state: std::sync::atomic::AtomicPtr<pyo3::ffi::PyObject>,
    /// Work deferred to the end of this iteration: a target and the native method to run.
    deferred: GilRefCell<Vec<(Py<PyAny>, &'static handle::NativeMethod)>>,
}
