//! One iteration of the loop (`run_once`), in asyncio's order:
//! 1. purge cancelled timers if they dominate the queue;
//! 2. choose the timeout: 0 if callbacks are ready or stop() was called, else until the first
//!    timer (or the next closed-socket sweep while native receives are pending), else forever;
//!    in virtual time (`core::clock`), the rest of the autojump threshold in real time instead
//!    (a quiet period cut into several waits by the closed-socket sweep counts as one), and
//!    the clock jumps to the first timer's deadline if that wait reports nothing; a NaN wait
//!    is no wait (asyncio's `max(0, nan)`);
//! 3. wait for events (with the GIL released only if the wait may block; while callbacks keep
//!    the loop busy, only every second iteration polls), queue the ready descriptors'
//!    callbacks and complete native receives, schedule the `add_signal_handler` callbacks of
//!    the signal numbers read from the wakeup pipe, then run pending Python signal handlers; fail
//!    native receives whose socket was closed behind the loop's back (`native_recv.rs`); a
//!    loop whose spare-handle pool grew (`core::spare_budget`) first waits at most
//!    `IDLE_SHRINK_AFTER`, and if nothing came, lets the extra handles go and waits on;
//! 4. move timers due by now into the ready queue, in deadline order;
//! 5. run the callbacks that were ready at this point (FIFO); callbacks they schedule run in
//!    the next iteration;
//! 6. run the work transports deferred to the end of the iteration (`deferred.rs`: the
//!    datagrams sent by this iteration's callbacks, in one `sendmmsg`).
//!
//! An iteration with only callbacks to run (nothing watched, no timer, no native receive, real
//! time) skips steps 1–4, and the iterations after it that are of the same kind run back to
//! back in `run_callback_iterations`, until stop() or until something else is to be done.

use std::sync::atomic::Ordering;
use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::core::clock::{monotonic_seconds, plan_virtual_wait, CLOCK_RESOLUTION};
use crate::core::poller::{Readiness, Wakeup};
use crate::core::ticks::ticks;
use crate::event_loop::fd_watch::{Side, Watcher};
use crate::event_loop::handle::{Handle, RunOutcome};
use crate::event_loop::stats::BatchTally;
use crate::event_loop::{LoopCore, LoopQueues};
use crate::interop::context_switch;
use crate::interop::errors::os_error;
use crate::interop::py_cache::python_at_least;

/// asyncio caps a single wait at one day; longer timers are re-checked after it.
const MAX_WAIT_SECONDS: f64 = 24.0 * 3600.0;

/// How long a loop with a grown spare-handle pool waits idle before letting the extra
/// handles go (`core::spare_budget`). Between the batches of threads posting in a flood the
/// loop waits microseconds; a program that went quiet gives the memory back after this.
const IDLE_SHRINK_AFTER: Duration = Duration::from_millis(100);

/// A wait in seconds as a `Duration`, between 0 and `MAX_WAIT_SECONDS`. NaN (a NaN timer
/// deadline, or a replaced `loop.time` returning NaN) is no wait, as in asyncio up to 3.12,
/// where `max(0, nan)` is 0 (3.13+ raises before this, see `poll_timeout`); `clamp` would pass NaN through and `from_secs_f64` panic on it.
fn wait_duration(seconds: f64) -> Duration {
    if seconds.is_nan() {
        return Duration::ZERO;
    }
    Duration::from_secs_f64(seconds.clamp(0.0, MAX_WAIT_SECONDS))
}

/// Virtual time: the first timer's deadline, and the loop's "now" it was planned against
/// (both in the scale of the `time()` the program sees, maybe a replaced `loop.time`).
#[derive(Clone, Copy)]
struct VirtualJump {
    /// The deadline to jump to.
    when: f64,
    /// The loop's "now" when the jump was planned.
    now: f64,
}

impl LoopCore {
    /// One iteration of the loop (inlined into `run_until_stopped`, its one caller: a call
    /// per iteration costs more than the stats hooks).
    #[inline(always)]
    pub(super) fn run_once(&self, slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        // Only the loop's thread counts (a load and a store, no locked instruction).
        self.count_iteration();
        // One look at the queues first: with callbacks ready and no descriptor watched, no
        // timer queued, no native receive pending, real time (a chain of callbacks, tasks
        // stepping each other), every step below but running the callbacks does nothing (no
        // timer to purge or collect, a zero timeout, no poll, no sweep): only the flags they
        // set are set. Such iterations run back to back in `run_callback_iterations`.
        // Otherwise the full iteration.
        if self.only_callbacks(py) {
            return self.run_callback_iterations(slf);
        }
        self.purge_cancelled_timers(py);
        self.poller.rearm_wake();
        let (timeout, jump) = self.poll_timeout(py)?;
        let virtual_time = self.clock.is_virtual();
        let wait_started = if virtual_time {
            monotonic_seconds()
        } else {
            0.0
        };
        if timeout == Some(Duration::ZERO) {
            // Busy: the next iteration looks at the queues before it can block, so posts from
            // other threads until then need not write to the eventfd.
            self.poller.suppress_wake();
        }
        // With callbacks ready and no descriptor of the user's to watch, a zero-timeout poll
        // could only report our own waker: skip the syscall. Python signal handlers still run
        // (the interpreter's eval breaker inside callbacks).
        let watching = !self.queues.borrow_mut(py).watched.is_empty();
        // While callbacks keep the loop busy (zero timeout), poll every second iteration
        // only: right after a poll, another zero-timeout poll mostly finds nothing new (the
        // callbacks just run were mostly the I/O it reported, and the task steps they
        // scheduled). Callback order is unchanged; readiness is noticed at most one
        // iteration later; a busy server makes half the epoll calls (streams echo: 2-4% less
        // CPU per request). asyncio does not promise in which iteration I/O is noticed.
        let skip_busy_poll =
            timeout == Some(Duration::ZERO) && self.polled_last.load(Ordering::Relaxed);
        let polling =
            timeout != Some(Duration::ZERO) || (watching && !skip_busy_poll) || jump.is_some();
        self.polled_last.store(polling, Ordering::Relaxed);
        let mut quiet_wait = false;
        let mut jumped = false;
        if polling {
            let mut io_events = std::mem::take(&mut self.queues.borrow_mut(py).io_events);
            let poller = &self.poller;
            let mut slept = None;
            // A wait that may block releases the GIL, so that other threads run meanwhile.
            // Releasing and taking it back costs about as much as the poll itself, and on a
            // busy loop events are usually pending already: look first with the GIL held
            // (zero timeout), and only when nothing at all is there, block without it.
            let waited = match poller.wait(Some(Duration::ZERO), &mut io_events) {
                Ok(wakeup)
                    if timeout != Some(Duration::ZERO)
                        && io_events.is_empty()
                        && wakeup == Wakeup::default() =>
                {
                    // A spare pool grown by large batches is let go once the loop has been
                    // idle for `IDLE_SHRINK_AFTER` (in real time only: in virtual time the
                    // wait's end decides the clock's jump): the wait is cut there once.
                    let shrink_check = !virtual_time
                        && timeout.is_none_or(|t| t > IDLE_SHRINK_AFTER)
                        && self.queues.borrow_mut(py).spare_budget.is_grown();
                    let started = std::time::Instant::now();
                    let first = if shrink_check {
                        Some(IDLE_SHRINK_AFTER)
                    } else {
                        timeout
                    };
                    // Idle time: ticks (`core::ticks`), not clock reads, around the wait.
                    let (mut waited, since, mut until) = py.detach(|| {
                        let since = ticks();
                        let waited = poller.wait(first, &mut io_events);
                        (waited, since, ticks())
                    });
                    if shrink_check
                        && io_events.is_empty()
                        && matches!(waited, Ok(w) if w == Wakeup::default())
                    {
                        self.shrink_spares_when_idle(py);
                        let rest = timeout.map(|t| t.saturating_sub(started.elapsed()));
                        (waited, until) = py.detach(|| {
                            let waited = poller.wait(rest, &mut io_events);
                            (waited, ticks())
                        });
                    }
                    slept = Some((since, until));
                    waited
                }
                other => other,
            };
            let quiet = io_events.is_empty() && matches!(waited, Ok(w) if w == Wakeup::default());
            let dispatched = self.dispatch_io(py, &mut io_events, slept);
            self.queues.borrow_mut(py).io_events = io_events;
            let wakeup = waited.map_err(os_error)?;
            dispatched?;
            // Signals read from the wakeup pipe: the loop's handlers for them are scheduled
            // whatever Python-level handler the program has installed since (as asyncio does).
            if wakeup.signal {
                Self::schedule_signal_handlers(slf, self.poller.take_signals())?;
            }
            // Run the Python handlers of signals that interrupted the wait now; when the wait
            // was skipped, the interpreter runs them inside the next callback anyway.
            py.check_signals()?;
            // Virtual time: the wait saw nothing and nothing is ready: jump to the first timer.
            quiet_wait = quiet && self.nothing_ready(py);
            if let Some(jump) = jump.filter(|_| quiet_wait) {
                self.jump_clock(jump);
                jumped = true;
            }
        }
        self.sweep_closed_sockets(py)?;
        self.collect_due_timers(py)?;
        if virtual_time {
            self.note_quiet_period(py, quiet_wait && !jumped, wait_started);
        }
        self.run_callbacks(slf)
    }

    /// Counts an iteration for `loop.stats()` (only the loop's thread counts: a load and a
    /// store, no locked instruction).
    #[inline(always)]
    fn count_iteration(&self) {
        let iterations = &self.stats.iterations;
        iterations.store(iterations.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    /// True if the next iteration would only run ready callbacks: some are ready, no
    /// descriptor is watched, no timer is queued (nor newly cancelled), no native receive is
    /// pending, and the time is real (see `run_once`).
    #[inline(always)]
    fn only_callbacks(&self, py: Python<'_>) -> bool {
        self.no_timer_work() && self.queues.borrow_mut(py).only_callbacks()
    }

    /// The part of `only_callbacks` outside the queues: no timer newly cancelled, real time.
    #[inline(always)]
    fn no_timer_work(&self) -> bool {
        self.cancelled_timers.load(Ordering::Relaxed) == 0 && !self.clock.is_virtual()
    }

    /// Iterations that only run ready callbacks (`only_callbacks`, checked by the caller for
    /// the first and counted by it), back to back: after each, unless stop() was called (the
    /// check `run_until_stopped` makes), the next one runs here while it too would only run
    /// callbacks. Each does what `run_once` does in that case, in the same order (the wake
    /// flags, the batch of the callbacks ready at its start, the deferred work, the count),
    /// without a return to `run_until_stopped` per iteration: in a chain of callbacks (one
    /// per iteration) the call, the result hand-over and the thread state lookup per
    /// iteration were a tenth of the loop's cost per callback.
    #[inline(never)]
    fn run_callback_iterations(&self, slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        // The loop's thread state does not change while it runs (see `run_ready`).
        // SAFETY: the GIL is held (`py`).
        let ts = unsafe { context_switch::thread_state() };
        // The wake flags of a busy iteration; they stay so for the next ones (nothing but
        // `run_once` changes them, and these iterations do not wait).
        self.poller.rearm_wake();
        self.poller.suppress_wake();
        self.polled_last.store(false, Ordering::Relaxed);
        let mut todo = self.take_batch(py);
        loop {
            self.running_callbacks.store(true, Ordering::Relaxed);
            let ran = self.run_taken(slf, todo, ts);
            self.running_callbacks.store(false, Ordering::Relaxed);
            let flushed = self.run_deferred(slf);
            // The batch's error first (as `run_callbacks`' `ran.and(flushed)`).
            ran?;
            flushed?;
            if self.stopping.load(Ordering::Relaxed) {
                return Ok(());
            }
            match self.take_callback_batch(py) {
                Some(next) => todo = next,
                None => return Ok(()),
            }
            self.count_iteration();
        }
    }

    /// The next batch of a run of callback-only iterations: if the next iteration would only
    /// run callbacks (`only_callbacks`), its batch taken as `take_batch` does, in the same
    /// borrow of the queues; else None, nothing taken.
    #[inline(always)]
    fn take_callback_batch(&self, py: Python<'_>) -> Option<usize> {
        if !self.no_timer_work() {
            return None;
        }
        let (todo, extra_spares) = {
            let mut queues = self.queues.borrow_mut(py);
            if !queues.only_callbacks() {
                return None;
            }
            queues.take_batch()
        };
        Some(self.batch_taken_by_loop(extra_spares, todo))
    }

    /// The end of an iteration: the callbacks ready now, then the work transports deferred
    /// to the end of the iteration.
    #[inline(always)]
    fn run_callbacks(&self, slf: &Bound<'_, Self>) -> PyResult<()> {
        self.running_callbacks.store(true, Ordering::Relaxed);
        let ran = self.run_ready(slf);
        self.running_callbacks.store(false, Ordering::Relaxed);
        let flushed = self.run_deferred(slf);
        ran.and(flushed)
    }

    /// Virtual time: moves the clock to the first timer's deadline. With `loop.time` replaced,
    /// the deadline is in the replacement's scale: the clock moves by the distance to it
    /// instead, so the wait that planned the jump and the timers agree on what is due.
    fn jump_clock(&self, jump: VirtualJump) {
        if self.time_replaced.load(Ordering::Relaxed) {
            // A bad step (NaN, negative) is no step: the next wait plans again.
            let _ = self.clock.advance(jump.when - jump.now);
        } else {
            self.clock.jump_to(jump.when);
        }
    }

    /// Virtual time: a quiet iteration (the wait saw nothing, nothing is ready, no jump)
    /// continues the quiet period, begun at the latest when this wait started; anything else
    /// ends it.
    fn note_quiet_period(&self, py: Python<'_>, quiet_wait: bool, wait_started: f64) {
        let mut queues = self.queues.borrow_mut(py);
        if quiet_wait && queues.ready.is_empty() && !self.stopping.load(Ordering::Relaxed) {
            queues.quiet_since.get_or_insert(wait_started);
        } else {
            queues.quiet_since = None;
        }
    }

    /// Hands each signal number read from the wakeup pipe, in arrival order, to the Python
    /// half's `_handle_signal`, which schedules the callback registered for it, if any.
    fn schedule_signal_handlers(slf: &Bound<'_, Self>, signals: Vec<u8>) -> PyResult<()> {
        let py = slf.py();
        for signum in signals {
            slf.call_method1(pyo3::intern!(py, "_handle_signal"), (signum,))?;
        }
        Ok(())
    }

    /// Runs the callbacks ready at the start of this step, in FIFO order.
    #[inline(always)]
    fn run_ready(&self, slf: &Bound<'_, Self>) -> PyResult<()> {
        // The loop's thread state, for entering the callbacks' contexts directly and for
        // the context copies of `call_soon`s made by them (null when those fast paths are off).
        // SAFETY: the GIL is held.
        let ts = unsafe { context_switch::thread_state() };
        self.run_ready_in(slf, ts)
    }

    /// `run_ready` on the thread whose state is `ts` (`context_switch::thread_state()`).
    #[inline(always)]
    fn run_ready_in(&self, slf: &Bound<'_, Self>, ts: *mut pyo3::ffi::PyObject) -> PyResult<()> {
        let todo = self.take_batch(slf.py());
        self.run_taken(slf, todo, ts)
    }

    /// Takes the batch of callbacks ready now (their number): the spare-handle budget and
    /// the posters waiting for the loop to take its batch are told.
    #[inline(always)]
    fn take_batch(&self, py: Python<'_>) -> usize {
        let (todo, extra_spares) = self.queues.borrow_mut(py).take_batch();
        self.batch_taken_by_loop(extra_spares, todo)
    }

    /// After `LoopQueues::take_batch`, outside the queues' borrow (freeing a handle's parked
    /// context may run Python code): drops the spare handles beyond the budget and tells the
    /// posters waiting for the loop to take its batch; returns `todo`.
    #[inline(always)]
    fn batch_taken_by_loop(&self, extra_spares: Option<Vec<Py<Handle>>>, todo: usize) -> usize {
        drop(extra_spares);
        self.batch_taken();
        todo
    }

    /// Runs a batch of `todo` callbacks taken by `take_batch` (none: nothing to do).
    #[inline(always)]
    fn run_taken(
        &self,
        slf: &Bound<'_, Self>,
        todo: usize,
        ts: *mut pyo3::ffi::PyObject,
    ) -> PyResult<()> {
        if todo == 0 {
            return Ok(());
        }
        self.batch_thread_state.store(ts, Ordering::Relaxed);
        // Callbacks are timed in debug mode (slow callback warning) and while task run times
        // are measured (`task_cpu.rs`): a loop of its own, so that the usual one has no
        // timing branch at all.
        let ran = if self.is_debug() || self.profiling_tasks() {
            self.run_batch_timed(slf, todo, ts)
        } else {
            self.run_batch::<false>(slf, todo, ts)
        };
        self.batch_thread_state
            .store(std::ptr::null_mut(), Ordering::Relaxed);
        ran
    }

    /// While a batch runs and the caller is on the loop's thread (a `call_soon` made by a
    /// callback): the thread's state, else null.
    #[inline(always)]
    pub(super) fn callback_thread_state(&self) -> *mut pyo3::ffi::PyObject {
        let ts = self.batch_thread_state.load(Ordering::Relaxed);
        if ts.is_null() {
            return ts;
        }
        // `running_thread` holds `threading.get_ident()`, which is `pthread_self()`.
        // SAFETY: no preconditions.
        let me = unsafe { libc::pthread_self() } as u64;
        if me == self.running_thread.load(Ordering::Relaxed) {
            ts
        } else {
            std::ptr::null_mut()
        }
    }

    /// `run_batch` with each callback timed, kept out of line (so that the usual batch loop
    /// is inlined as before).
    #[cold]
    #[inline(never)]
    fn run_batch_timed(
        &self,
        slf: &Bound<'_, Self>,
        todo: usize,
        ts: *mut pyo3::ffi::PyObject,
    ) -> PyResult<()> {
        self.run_batch::<true>(slf, todo, ts)
    }

    /// Runs up to `todo` (at least 1) callbacks from the ready queue's head, and counts them
    /// for the stats at the end (counts kept in registers meanwhile); `TIMED`: each callback
    /// is timed (debug mode, task run times). `ts`: see `Handle::run`. Inlined into its
    /// callers (the iteration, `run_callback_iterations`, and `run_batch_timed`'s out-of-line
    /// copy): a call per batch costs a chain of callbacks, one per batch, its prologue and
    /// result hand-over per callback.
    #[inline(always)]
    fn run_batch<const TIMED: bool>(
        &self,
        slf: &Bound<'_, Self>,
        todo: usize,
        ts: *mut pyo3::ffi::PyObject,
    ) -> PyResult<()> {
        let py = slf.py();
        let debug = TIMED && self.is_debug();
        // The watchdog sees each callback only while it is on (one predictable branch per
        // callback otherwise); its report names the callback: handles keep it meanwhile.
        let watching = self.watchdog.is_on();
        let keep = debug || watching;
        let mut generation = if watching {
            self.watchdog.last_generation()
        } else {
            0
        };
        let mut tally = BatchTally {
            dequeued: 0,
            skipped: 0,
        };
        while tally.dequeued < todo {
            let Some(handle) = self.queues.borrow_mut(py).ready.pop_front() else {
                break;
            };
            tally.dequeued += 1;
            if watching {
                generation += 1;
                self.watchdog.enter(generation, handle.as_ptr());
            }
            // Real time, also under virtual time: a slow callback is slow in the real world.
            let (started, task) = if TIMED {
                (monotonic_seconds(), self.stepped_task(py, handle.get()))
            } else {
                (0.0, None)
            };
            match handle.get().run(py, keep, ts) {
                RunOutcome::Done => {}
                RunOutcome::Skipped => tally.skipped += 1,
                RunOutcome::Raised(err) => {
                    if let Err(err) = self.report_callback_error(slf, &handle, err) {
                        return self.batch_failed(py, todo, tally, watching, generation, err);
                    }
                }
            }
            if TIMED {
                if let Err(err) = self.after_timed(slf, &handle, debug, task, started) {
                    return self.batch_failed(py, todo, tally, watching, generation, err);
                }
            }
            if watching {
                self.watchdog.leave();
            }
            self.recycle(py, handle);
        }
        if watching {
            self.watchdog.batch_done(generation);
        }
        self.meter_batch_end(py, todo, tally);
        Ok(())
    }

    /// After a timed callback (debug mode, or task run times measured): its run time goes to
    /// the task it stepped, and debug mode warns if it was slow.
    #[inline(never)]
    fn after_timed(
        &self,
        slf: &Bound<'_, Self>,
        handle: &Py<crate::event_loop::handle::Handle>,
        debug: bool,
        task: Option<usize>,
        started: f64,
    ) -> PyResult<()> {
        let took = monotonic_seconds() - started;
        if let Some(task) = task {
            self.add_task_time(slf.py(), task, took);
        }
        if debug {
            self.warn_if_slow(slf, handle, took)?;
        }
        Ok(())
    }

    /// A callback's error ends the batch early (the exception handler raised, or stop by
    /// KeyboardInterrupt/SystemExit): the watchdog is told the callback is over and what ran
    /// is counted.
    #[cold]
    #[inline(never)]
    fn batch_failed(
        &self,
        py: Python<'_>,
        todo: usize,
        tally: BatchTally,
        watching: bool,
        generation: u64,
        err: PyErr,
    ) -> PyResult<()> {
        if watching {
            self.watchdog.leave();
            self.watchdog.batch_done(generation);
        }
        self.meter_batch_end(py, todo, tally);
        Err(err)
    }

    /// Drops cancelled timers when they dominate the queue (or sit at its head).
    fn purge_cancelled_timers(&self, py: Python<'_>) {
        // A plain load first: the swap is a locked instruction, and most iterations have no
        // newly cancelled timer.
        let newly_cancelled = match self.cancelled_timers.load(Ordering::Relaxed) {
            0 => 0,
            _ => self.cancelled_timers.swap(0, Ordering::Relaxed),
        };
        let removed = {
            let mut queues = self.queues.borrow_mut(py);
            for _ in 0..newly_cancelled {
                queues.timers.note_cancelled();
            }
            queues.timers.purge_cancelled()
        };
        for handle in &removed {
            handle.get().mark_unscheduled();
        }
        // `removed` is dropped here, outside the borrow.
    }

    /// How long the poll may sleep, and in virtual time how far the clock jumps if it sleeps
    /// through without any event.
    fn poll_timeout(&self, py: Python<'_>) -> PyResult<(Option<Duration>, Option<VirtualJump>)> {
        let (deadline, sweep, quiet_since) = {
            let queues = self.queues.borrow_mut(py);
            if !queues.ready.is_empty() || self.stopping.load(Ordering::Relaxed) {
                return Ok((Some(Duration::ZERO), None));
            }
            let sweep = (queues.pending_receives > 0).then_some(queues.next_sweep);
            (queues.timers.next_deadline(), sweep, queues.quiet_since)
        };
        // Timers are due by the `time()` the program sees (a replaced `loop.time` may run
        // Python code: the queues are no longer borrowed here); the sweep runs on real time.
        let now = match deadline {
            Some(_) => self.now(py)?,
            None => 0.0, // not read: no timer to compare it with
        };
        let (mut wait, mut jump) = if self.clock.is_virtual() {
            // The real time this quiet period has lasted already counts towards the
            // threshold: waits cut short by the sweep add up to one autojump.
            let mut threshold = self.clock.autojump_threshold();
            if let Some(since) = quiet_since.filter(|_| threshold <= MAX_WAIT_SECONDS) {
                threshold = (threshold - (monotonic_seconds() - since)).max(0.0);
            }
            let plan = plan_virtual_wait(
                now,
                deadline,
                threshold,
                MAX_WAIT_SECONDS,
                self.outstanding_work.load(Ordering::Relaxed) > 0,
            );
            let jump = plan.jump_to.map(|when| VirtualJump { when, now });
            (plan.real_timeout, jump)
        } else {
            let wait = deadline.map(|deadline| deadline - now);
            if wait.is_some_and(f64::is_nan) && python_at_least(3, 13) {
                // 3.13 stopped clamping the wait with `max(0, ...)` (which turned NaN into
                // 0): the NaN reaches the selector, whose `math.ceil` raises. The first timer
                // stays scheduled, and runs once a run finds callbacks ready (no wait).
                return Err(PyValueError::new_err("cannot convert float NaN to integer"));
            }
            (wait, None)
        };
        if let Some(sweep) = sweep {
            // The closed-socket sweep (real time) cuts the wait short: no jump after it (the
            // quiet period goes on, see `quiet_since`).
            let until_sweep = sweep - monotonic_seconds();
            if wait.is_none_or(|w| until_sweep < w) {
                wait = Some(until_sweep);
                jump = None;
            }
        }
        Ok((wait.map(wait_duration), jump))
    }

    /// No callback is ready and stop() was not called.
    fn nothing_ready(&self, py: Python<'_>) -> bool {
        self.queues.borrow_mut(py).ready.is_empty() && !self.stopping.load(Ordering::Relaxed)
    }

    /// Queues the reader/writer callbacks of the descriptors a wait reported ready, as asyncio
    /// does: a cancelled callback is unregistered instead. `slept`: the wait blocked from
    /// tick `.0` to tick `.1` (idle time; the I/O callbacks queued now became ready then).
    fn dispatch_io(
        &self,
        py: Python<'_>,
        io_events: &mut Vec<Readiness>,
        slept: Option<(u64, u64)>,
    ) -> PyResult<()> {
        let mut stale = Vec::new();
        let mut receives = Vec::new();
        {
            let mut queues = self.queues.borrow_mut(py);
            let LoopQueues {
                watched,
                ready,
                meter,
                ..
            } = &mut *queues;
            if let Some((since, until)) = slept {
                meter.slept(|| ready.len(), since, until, monotonic_seconds);
            }
            for event in io_events.iter() {
                let fd = event.token as i32;
                let Some(watch) = watched.get(&fd) else {
                    continue;
                };
                for (side, wanted) in [(Side::Read, event.readable), (Side::Write, event.writable)]
                {
                    if !wanted {
                        continue;
                    }
                    match watch.side(side) {
                        Some(Watcher::Callback(handle)) if handle.get().is_cancelled() => {
                            stale.push((fd, side));
                        }
                        Some(Watcher::Callback(handle)) => {
                            ready.push_back(handle.clone_ref(py));
                            meter.io_events += 1;
                        }
                        Some(Watcher::Recv(_)) => {
                            receives.push(fd);
                            meter.io_events += 1;
                        }
                        None => {}
                    }
                }
            }
            io_events.clear();
        }
        for (fd, side) in stale {
            self.unwatch(py, fd, side)?;
        }
        for fd in receives {
            self.complete_recv(py, fd)?;
        }
        Ok(())
    }

    /// Moves every timer due by now into the ready queue.
    fn collect_due_timers(&self, py: Python<'_>) -> PyResult<()> {
        if self.queues.borrow_mut(py).timers.is_empty() {
            return Ok(()); // no clock read when there is nothing to compare it with
        }
        let now = self.now(py)?;
        let end = now + CLOCK_RESOLUTION;
        let mut dropped = Vec::new();
        // Deadlines are on the monotonic clock (the meter's) unless the time is virtual or
        // replaced.
        let real_time = !self.clock.is_virtual() && !self.time_replaced.load(Ordering::Relaxed);
        {
            let mut queues = self.queues.borrow_mut(py);
            while let Some(handle) = queues.timers.pop_due(end) {
                handle.get().mark_unscheduled();
                if handle.get().is_cancelled() {
                    dropped.push(handle);
                } else {
                    let queued = queues.ready.len();
                    let due = || handle.get().deadline().filter(|_| real_time);
                    queues.meter.timer_fired(queued, due, now);
                    queues.ready.push_back(handle);
                }
            }
        }
        drop(dropped);
        Ok(())
    }
}
