//! The loop's life: creation, the state flags asyncio checks (closed, running, on which
//! thread, debug), `run_forever`'s native part (iterations until `stop()`), closing (every
//! pending callback, timer and watch dropped), and the counters for introspection.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

use crate::core::clock::Clock;
use crate::core::fd_map::FdMap;
use crate::core::loop_stats::LoopMeter;
use crate::core::poller::Poller;
use crate::core::post_gate::PostGate;
use crate::core::ready_queue::ReadyQueue;
use crate::core::spare_budget::SpareBudget;
use crate::core::timers::TimerQueue;
use crate::event_loop::{LoopCore, LoopQueues, LoopStats};
use crate::interop::errors::os_error;
use crate::interop::gil_cell::GilRefCell;

/// Posts from other threads pending for the loop's next batch before a poster waits. Small
/// enough that a batch runs in about a millisecond and timers and I/O stay on time; large
/// enough that the GIL changes hands rarely (measured in `bench/RESULTS.md`).
///
/// The spare-handle pool grows to the batches the loop takes (`core::spare_budget`), so a
/// batch of this size reuses its handles. Measured (RESULTS.md, "xthread5"): with that pool,
/// 1,000 to 16,384 cost the same instructions per post + run (1,926-1,962); 4,096 quarters
/// the hand-overs of 1,000 and its batch (with its contexts, ~0.6 MB) still fits a core's L2
/// cache. (Without the growing pool, batches past 1,024 allocated every extra handle: +35%
/// per post in batches of 16,384, RESULTS.md "xthread4".) A gate on the age of the oldest
/// post (2 ms) broke the fairness row (RESULTS.md, II and III).
const POSTS_PENDING_MAX: usize = 4096;

/// The longest a posting thread waits for one batch of a loop that does not come back (it is
/// stopping, or its thread is blocked waiting for the poster): then it posts on for a while.
const POSTER_PATIENCE: Duration = Duration::from_millis(50);

extern "C" {
    /// `threading.get_ident()` in C (declared here: not every pyo3-ffi release has it).
    fn PyThread_get_thread_ident() -> std::os::raw::c_ulong;
}

/// `threading.get_ident()` of the calling thread.
pub(super) fn current_thread_ident() -> u64 {
    // SAFETY: a plain query with no preconditions.
    unsafe { PyThread_get_thread_ident() as u64 }
}

/// Resets a loop's running state when `run_until_stopped` ends, also by a panic.
struct RunningGuard<'a, 'py>(&'a Bound<'py, LoopCore>);

impl Drop for RunningGuard<'_, '_> {
    fn drop(&mut self) {
        let this = self.0.get();
        this.stopping.store(false, Ordering::Relaxed);
        this.running_thread.store(0, Ordering::Relaxed);
        this.watchdog.set_loop_thread(0);
        // Threads waiting for the next batch would wait for nothing now.
        this.post_gate.next_epoch();
        this.meter_run_end(self.0.py());
        // A quiet period (virtual time) does not span two runs.
        if let Some(mut queues) = this.queues.try_borrow_mut(self.0.py()) {
            queues.quiet_since = None;
        }
        // The spare `bytes` of the transports lives in this thread only while a loop runs
        // here: a loop that is never closed, or an interpreter that is finalised, keeps none.
        crate::interop::spare_bytes::release(self.0.py());
    }
}

impl LoopCore {
    /// A new, open, stopped loop with its own poller.
    pub(super) fn create() -> PyResult<Self> {
        Ok(LoopCore {
            queues: GilRefCell::new(LoopQueues {
                ready: ReadyQueue::default(),
                timers: TimerQueue::new(),
                spare_handles: Vec::new(),
                spare_budget: SpareBudget::new(),
                watched: FdMap::default(),
                io_events: Vec::new(),
                pending_receives: 0,
                next_sweep: 0.0,
                quiet_since: None,
                meter: LoopMeter::default(),
            }),
            clock: Clock::new(),
            poller: Poller::new().map_err(os_error)?,
            cancelled_timers: Arc::new(AtomicUsize::new(0)),
            debug: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            outstanding_work: AtomicUsize::new(0),
            polled_last: AtomicBool::new(false),
            running_thread: AtomicU64::new(0),
            post_gate: PostGate::new(POSTS_PENDING_MAX, POSTER_PATIENCE),
            task_factory: GilRefCell::new(None),
            task_births: GilRefCell::new(None),
            task_cpu: GilRefCell::new(Default::default()),
            profiling_tasks: AtomicBool::new(false),
            stats: LoopStats::default(),
            scratch: GilRefCell::new(Vec::new()),
            transports: GilRefCell::new(FdMap::default()),
            time_replaced: AtomicBool::new(false),
            time_replacement: GilRefCell::new(None),
            watchdog: crate::event_loop::watchdog::Watchdog::new(),
            running_callbacks: AtomicBool::new(false),
            batch_thread_state: std::sync::atomic::AtomicPtr::new(std::ptr::null_mut()),
            deferred: GilRefCell::new(Vec::new()),
        })
    }

    /// Raises RuntimeError if the loop is closed.
    pub(super) fn check_closed(&self) -> PyResult<()> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(PyRuntimeError::new_err("Event loop is closed"));
        }
        Ok(())
    }

    /// asyncio's debug-mode check that a non-threadsafe method runs on the loop's thread.
    pub(super) fn check_thread(&self) -> PyResult<()> {
        let running = self.running_thread.load(Ordering::Relaxed);
        if running != 0 && running != current_thread_ident() {
            return Err(PyRuntimeError::new_err(
                "Non-thread-safe operation invoked on an event loop other than the current one",
            ));
        }
        Ok(())
    }

    /// True in debug mode.
    pub(crate) fn is_debug(&self) -> bool {
        self.debug.load(Ordering::Relaxed)
    }

    /// True while `run_forever` runs.
    pub(super) fn is_loop_running(&self) -> bool {
        self.running_thread.load(Ordering::Relaxed) != 0
    }

    /// True once `close()` was called.
    pub(super) fn is_loop_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Turns debug mode on or off.
    pub(super) fn set_debug_mode(&self, enabled: bool) {
        self.debug.store(enabled, Ordering::Relaxed);
    }

    /// Stops the loop after the callbacks of the current iteration.
    pub(super) fn request_stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// Runs iterations until `stop()`; the Python `run_forever` wraps this with its set-up.
    /// The loop's running state is reset however the iterations end: `stop()`, an exception,
    /// or a Rust panic (PyO3 turns it into `PanicException`; the reset runs while it unwinds).
    pub(super) fn run_until_stopped(slf: &Bound<'_, Self>) -> PyResult<()> {
        let this = slf.get();
        this.running_thread
            .store(current_thread_ident(), Ordering::Relaxed);
        this.watchdog.set_loop_thread(current_thread_ident());
        let _running = RunningGuard(slf);
        this.meter_run_start(slf.py());
        loop {
            this.run_once(slf)?;
            if this.stopping.load(Ordering::Relaxed) {
                return Ok(());
            }
        }
    }

    /// Marks the loop closed and drops every pending callback and timer.
    pub(super) fn close_core(&self, py: Python<'_>) -> PyResult<()> {
        if self.is_loop_running() {
            return Err(PyRuntimeError::new_err("Cannot close a running event loop"));
        }
        if self.closed.swap(true, Ordering::Relaxed) {
            return Ok(());
        }
        let (ready, timers, spare) = {
            let mut queues = self.queues.borrow_mut(py);
            (
                std::mem::take(&mut queues.ready),
                queues.timers.drain_all(),
                std::mem::take(&mut queues.spare_handles),
            )
        };
        self.watchdog.stop(py);
        self.poller.close();
        self.forget_all_watches(py);
        drop(spare);
        for handle in &timers {
            handle.get().mark_unscheduled();
        }
        for handle in ready.iter().chain(timers.iter()) {
            handle.get().release(py);
        }
        drop(ready);
        drop(timers);
        Ok(())
    }

    /// Counts for introspection: ready callbacks, queued timers, cancelled timers still queued,
    /// loop iterations so far.
    pub(super) fn counts(&self, py: Python<'_>) -> (usize, usize, usize, u64) {
        let queues = self.queues.borrow_mut(py);
        (
            queues.ready.len(),
            queues.timers.len(),
            queues.timers.cancelled_count() + self.cancelled_timers.load(Ordering::Relaxed),
            self.stats.iterations.load(Ordering::Relaxed),
        )
    }
}
