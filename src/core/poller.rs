//! The poller under the loop: one `epoll` wait per iteration, an eventfd waker for
//! `call_soon_threadsafe`, the read end of the signal wakeup pipe, and the descriptors the
//! loop watches (for `add_reader`/`add_writer`, the native transports and native receives;
//! the loop registers them in one place, `event_loop/fd_watch.rs`).
//!
//! Why epoll through `libc` rather than a crate:
//! - asyncio's `add_reader` is level-triggered (the callback runs again while the descriptor
//!   stays readable). mio registers everything edge-triggered, so each dispatch would need an
//!   `epoll_ctl` to re-arm; here each registration picks level-triggered, edge-triggered (for
//!   descriptors the loop reads to `EAGAIN` itself, such as the wakeup pipes) or one-shot (a
//!   pending native receive).
//! - `polling` supports level mode but re-arms a timerfd and its notifier around every wait
//!   (three more syscalls per iteration).
//! - Timers: `epoll_pwait2` (Linux 5.11+) takes a nanosecond timeout, so a timer due in 300 µs
//!   is not rounded up to a whole millisecond as with `epoll_wait`; older kernels fall back to
//!   `epoll_wait`, rounding up (never waking early).
//!
//! Linux only for now (kqueue is future work).
//!
//! Signals: CPython's C-level handler only sets a flag; the Python-level handler runs when the
//! main thread next executes bytecode. While the loop sleeps in `epoll_wait` with the GIL
//! released nothing would run it, so the loop hands the write end of a non-blocking pipe to
//! `signal.set_wakeup_fd()`: the C handler writes the signal number there and the wait returns.

use std::io;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::core::fault_inject::{self, Site};

/// Token of the waker (call_soon_threadsafe).
const WAKER_TOKEN: u64 = u64::MAX;
/// Token of the signal wakeup pipe's read end.
const SIGNAL_TOKEN: u64 = u64::MAX - 1;
/// How many events one wait collects.
const EVENTS_CAPACITY: usize = 1024;

/// Readiness of one watched descriptor, as asyncio's selectors map epoll's bits: an error or
/// hang-up wakes both the reader and the writer, so that either sees the failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Readiness {
    /// The token given at registration (the descriptor number for user descriptors).
    pub token: u64,
    /// Readable, or error/hang-up.
    pub readable: bool,
    /// Writable, or error/hang-up.
    pub writable: bool,
}

/// What a wait observed besides descriptor readiness.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Wakeup {
    /// Bytes arrived on the signal wakeup pipe, or the wait was interrupted by a signal.
    pub signal: bool,
    /// Another thread woke the loop (`wake`).
    pub woken: bool,
}

/// Which readiness a registration asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interest {
    /// Wake when readable.
    pub read: bool,
    /// Wake when writable.
    pub write: bool,
}

/// How a registration reports readiness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// Reported at every wait while ready (asyncio's add_reader/add_writer).
    Level,
    /// Reported when readiness appears (sources the loop drains itself).
    Edge,
    /// Reported once, then disarmed until set again: the loop's own receives, which re-arm
    /// with one `EPOLL_CTL_MOD` per wait instead of an ADD and a DEL.
    OneShot,
}

impl Interest {
    fn epoll_bits(self, trigger: Trigger) -> u32 {
        let mut bits = 0;
        if self.read {
            bits |= libc::EPOLLIN as u32;
        }
        if self.write {
            bits |= libc::EPOLLOUT as u32;
        }
        bits |= match trigger {
            Trigger::Level => 0,
            Trigger::Edge => libc::EPOLLET as u32,
            Trigger::OneShot => libc::EPOLLONESHOT as u32,
        };
        bits
    }
}

/// The loop's poller. `wait` is called by the loop thread only; `wake` from any thread.
///
/// The four descriptors are closed by `close()` (the loop's `close()`), not only on drop, so a
/// closed loop that is still referenced holds no descriptor. Safety of that: every caller
/// holds the GIL except `wait`, and the loop refuses to close while it runs (while `wait`
/// may be in progress), so no descriptor number is used after it was closed.
pub struct Poller {
    epoll: AtomicI32,
    waker: AtomicI32,
    /// Set by `wake` so that a burst of threadsafe calls writes the eventfd once per iteration.
    wake_pending: AtomicBool,
    signal_read: AtomicI32,
    signal_write: AtomicI32,
    events: Mutex<Vec<libc::epoll_event>>,
    /// Signal numbers read from the signal wakeup pipe and not yet taken by the loop, in
    /// arrival order. The interpreter's C-level handler writes each signal's number there
    /// whatever Python-level handler is installed: that is how the loop learns which of its
    /// `add_signal_handler` callbacks to run.
    signals: Mutex<Vec<u8>>,
    /// False once `epoll_pwait2` was found missing (kernel older than 5.11).
    has_pwait2: AtomicBool,
}

/// Converts a libc return value into an `io::Result`.
fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Creates a non-blocking, close-on-exec pipe.
fn nonblocking_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) })?;
    // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
    unsafe { Ok((OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))) }
}

/// The descriptor stored in `slot` (-1 once closed).
#[inline]
fn fd_of(slot: &AtomicI32) -> RawFd {
    slot.load(Ordering::Relaxed)
}

/// Reads a descriptor until it would block (edge-triggered sources must be emptied).
fn drain(fd: RawFd) {
    let mut buf = [0u8; 256];
    loop {
        // SAFETY: `buf` is valid for writes of its length; `fd` is open for the poller's life.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
    }
}

impl Poller {
    /// Opens the epoll instance, the waker and the signal pipe.
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain syscalls; on success each returns a new descriptor that we own.
        let (epoll, waker) = unsafe {
            let epoll = check(libc::epoll_create1(libc::EPOLL_CLOEXEC))?;
            let epoll = OwnedFd::from_raw_fd(epoll);
            if let Some(errno) = fault_inject::injected(Site::Waker) {
                return Err(io::Error::from_raw_os_error(errno)); // epoll dropped: closed
            }
            let waker = check(libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC))?;
            (epoll, OwnedFd::from_raw_fd(waker))
        };
        let (signal_read, signal_write) = nonblocking_pipe()?;
        let poller = Poller {
            epoll: AtomicI32::new(epoll.into_raw_fd()),
            waker: AtomicI32::new(waker.into_raw_fd()),
            wake_pending: AtomicBool::new(false),
            signal_read: AtomicI32::new(signal_read.into_raw_fd()),
            signal_write: AtomicI32::new(signal_write.into_raw_fd()),
            events: Mutex::new(Vec::with_capacity(EVENTS_CAPACITY)),
            signals: Mutex::new(Vec::new()),
            has_pwait2: AtomicBool::new(true),
        };
        let read = Interest {
            read: true,
            write: false,
        };
        // Edge-triggered: both are emptied by the poller when they fire.
        poller.register(fd_of(&poller.waker), WAKER_TOKEN, read, Trigger::Edge)?;
        poller.register(
            fd_of(&poller.signal_read),
            SIGNAL_TOKEN,
            read,
            Trigger::Edge,
        )?;
        Ok(poller)
    }

    fn control(
        &self,
        op: libc::c_int,
        fd: RawFd,
        token: u64,
        interest: Interest,
        trigger: Trigger,
    ) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: interest.epoll_bits(trigger),
            u64: token,
        };
        // SAFETY: `event` is a valid epoll_event; epoll_ctl only reads it. A bad `fd` is
        // reported as an error, not undefined behaviour.
        check(unsafe { libc::epoll_ctl(fd_of(&self.epoll), op, fd, &mut event) })?;
        Ok(())
    }

    /// Starts watching `fd`.
    pub fn register(
        &self,
        fd: RawFd,
        token: u64,
        interest: Interest,
        trigger: Trigger,
    ) -> io::Result<()> {
        self.control(libc::EPOLL_CTL_ADD, fd, token, interest, trigger)
    }

    /// Changes what `fd` is watched for. If epoll no longer knows `fd` (it forgets a
    /// descriptor when its file is closed, and the number may have been reused since), the
    /// descriptor is registered afresh.
    pub fn reregister(
        &self,
        fd: RawFd,
        token: u64,
        interest: Interest,
        trigger: Trigger,
    ) -> io::Result<()> {
        match self.control(libc::EPOLL_CTL_MOD, fd, token, interest, trigger) {
            Err(err) if err.raw_os_error() == Some(libc::ENOENT) => {
                self.register(fd, token, interest, trigger)
            }
            other => other,
        }
    }

    /// Stops watching `fd`. A descriptor already closed is gone from epoll anyway: like
    /// asyncio's selectors, that is not an error.
    pub fn deregister(&self, fd: RawFd) {
        let mut event = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: as in `control`; the result is deliberately ignored (see above).
        unsafe {
            libc::epoll_ctl(fd_of(&self.epoll), libc::EPOLL_CTL_DEL, fd, &mut event);
        }
    }

    /// The descriptor to give to `signal.set_wakeup_fd()`.
    pub fn signal_wakeup_fd(&self) -> RawFd {
        fd_of(&self.signal_write)
    }

    /// In a child made by `fork()`: replaces the epoll instance, the waker and the signal
    /// pipe, which the child shares with its parent, by new ones (the child's copies of the
    /// old descriptors are closed, which leaves the parent's untouched). The caller registers
    /// its watched descriptors again. A closed poller stays closed.
    ///
    /// Why: an epoll instance survives `fork()` as one kernel object seen by both processes,
    /// so a registration changed in the child would change the parent's, and both would be
    /// woken by the same eventfd and signal pipe.
    pub fn renew_after_fork(&self) -> io::Result<()> {
        if fd_of(&self.epoll) < 0 {
            return Ok(());
        }
        let fresh = Poller::new()?;
        for (slot, new_slot) in [
            (&self.epoll, &fresh.epoll),
            (&self.waker, &fresh.waker),
            (&self.signal_read, &fresh.signal_read),
            (&self.signal_write, &fresh.signal_write),
        ] {
            let new_fd = new_slot.swap(-1, Ordering::AcqRel);
            let old_fd = slot.swap(new_fd, Ordering::AcqRel);
            if old_fd >= 0 {
                // SAFETY: `old_fd` was this poller's (inherited copy) and is swapped out, so it
                // is closed exactly once; closing it in the child does not affect the parent.
                unsafe { libc::close(old_fd) };
            }
        }
        self.wake_pending.store(false, Ordering::Release);
        Ok(())
    }

    /// Closes the poller's descriptors; later waits fail with EBADF and wakes do nothing.
    pub fn close(&self) {
        for slot in [
            &self.epoll,
            &self.waker,
            &self.signal_read,
            &self.signal_write,
        ] {
            let fd = slot.swap(-1, Ordering::AcqRel);
            if fd >= 0 {
                // SAFETY: `fd` was opened by `new` and is closed exactly once (swapped out).
                unsafe { libc::close(fd) };
            }
        }
    }

    /// Wakes the loop from any thread; cheap when a wake is already pending.
    pub fn wake(&self) -> io::Result<()> {
        if fd_of(&self.waker) < 0 {
            return Ok(());
        }
        // A plain load first: while a wake is pending (or suppressed, the loop busy), most
        // posts stop here without a locked instruction.
        if !self.wake_pending.load(Ordering::Acquire)
            && !self.wake_pending.swap(true, Ordering::AcqRel)
        {
            let one: u64 = 1;
            // SAFETY: writes 8 bytes from a valid u64 to our eventfd.
            let n = unsafe {
                libc::write(
                    fd_of(&self.waker),
                    (&one as *const u64).cast(),
                    std::mem::size_of::<u64>(),
                )
            };
            if n < 0 {
                let err = io::Error::last_os_error();
                // EAGAIN: the counter is saturated, so a wake is pending anyway.
                if err.kind() != io::ErrorKind::WouldBlock {
                    return Err(err);
                }
            }
        }
        Ok(())
    }

    /// Re-arms `wake`. The loop calls this before it looks at its queues to choose a timeout,
    /// so a wake that lands after the look always interrupts the following wait.
    pub fn rearm_wake(&self) {
        self.wake_pending.store(false, Ordering::Release);
    }

    /// The loop is busy (it will not block before it looks at its queues again, after the next
    /// `rearm_wake`): until then, `wake` has nothing to interrupt and skips its system call.
    pub fn suppress_wake(&self) {
        self.wake_pending.store(true, Ordering::Release);
    }

    /// Empties the signal wakeup pipe into `signals`.
    fn read_signals(&self) {
        let fd = fd_of(&self.signal_read);
        let Ok(mut signals) = self.signals.lock() else {
            return drain(fd);
        };
        let mut buf = [0u8; 256];
        loop {
            // SAFETY: `buf` is valid for writes of its length; `fd` is open for the poller's life.
            let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            signals.extend_from_slice(&buf[..n as usize]);
        }
    }

    /// Takes the signal numbers read from the wakeup pipe since the last call, in arrival order.
    pub fn take_signals(&self) -> Vec<u8> {
        self.signals
            .lock()
            .map(|mut s| std::mem::take(&mut *s))
            .unwrap_or_default()
    }

    /// Waits up to `timeout` (`None`: forever) and appends the ready user descriptors to
    /// `ready`. An interrupted wait (EINTR) counts as a signal wakeup.
    pub fn wait(
        &self,
        timeout: Option<Duration>,
        ready: &mut Vec<Readiness>,
    ) -> io::Result<Wakeup> {
        let mut events = self
            .events
            .lock()
            .map_err(|_| io::Error::other("poller events poisoned"))?;
        events.clear();
        let count = match self.epoll_wait(&mut events, timeout) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                return Ok(Wakeup {
                    signal: true,
                    ..Wakeup::default()
                });
            }
            Err(e) => return Err(e),
        };
        // SAFETY: the kernel initialised the first `count` entries (count <= capacity).
        unsafe { events.set_len(count) };
        let mut wakeup = Wakeup::default();
        for event in events.iter() {
            let (bits, token) = (event.events, event.u64);
            match token {
                WAKER_TOKEN => {
                    wakeup.woken = true;
                    drain(fd_of(&self.waker));
                }
                SIGNAL_TOKEN => {
                    wakeup.signal = true;
                    self.read_signals();
                }
                _ => {
                    let failed = bits & (libc::EPOLLERR | libc::EPOLLHUP) as u32 != 0;
                    ready.push(Readiness {
                        token,
                        readable: failed || bits & (libc::EPOLLIN | libc::EPOLLRDHUP) as u32 != 0,
                        writable: failed || bits & libc::EPOLLOUT as u32 != 0,
                    });
                }
            }
        }
        Ok(wakeup)
    }

    /// One `epoll_pwait2` (nanosecond timeout) or, on kernels without it, `epoll_wait`.
    fn epoll_wait(
        &self,
        events: &mut Vec<libc::epoll_event>,
        timeout: Option<Duration>,
    ) -> io::Result<usize> {
        let capacity = events.capacity() as libc::c_int;
        let buffer = events.as_mut_ptr();
        if self.has_pwait2.load(Ordering::Relaxed) {
            let spec = timeout.map(|t| libc::timespec {
                tv_sec: t.as_secs().min(i64::MAX as u64) as libc::time_t,
                tv_nsec: t.subsec_nanos() as libc::c_long,
            });
            let spec_ptr = spec
                .as_ref()
                .map_or(std::ptr::null(), |s| s as *const libc::timespec);
            // SAFETY: `buffer` has room for `capacity` events; `spec_ptr` is null or points
            // to a live timespec; no signal mask is passed.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_epoll_pwait2,
                    fd_of(&self.epoll),
                    buffer,
                    capacity,
                    spec_ptr,
                    std::ptr::null::<libc::sigset_t>(),
                    0usize,
                )
            };
            if rc >= 0 {
                return Ok(rc as usize);
            }
            let err = io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::ENOSYS) {
                return Err(err);
            }
            self.has_pwait2.store(false, Ordering::Relaxed);
        }
        // Milliseconds, rounded up so that a timer is never reported early.
        let millis = match timeout {
            None => -1,
            Some(t) => {
                let ms = t.as_nanos().div_ceil(1_000_000);
                ms.min(libc::c_int::MAX as u128) as libc::c_int
            }
        };
        // `epoll_pwait` without a signal mask is `epoll_wait`; made through `syscall(2)`, as
        // `epoll_pwait2` above, not glibc's wrapper, a thread-cancellation point that costs
        // ~90 instructions per call once the process has a second thread (see
        // `direct_syscall`). (Kernels before 5.11 come here; so does valgrind, which does not
        // know `epoll_pwait2`.)
        // SAFETY: `buffer` has room for `capacity` events; no signal mask is passed.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_epoll_pwait,
                fd_of(&self.epoll),
                buffer,
                capacity,
                millis,
                std::ptr::null::<libc::sigset_t>(),
                0usize,
            )
        };
        Ok(check(rc as libc::c_int)? as usize)
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::sync::Arc;
    use std::time::Instant;

    const READ: Interest = Interest {
        read: true,
        write: false,
    };

    #[test]
    fn renewed_poller_has_new_descriptors_and_still_wakes() {
        let poller = Poller::new().unwrap();
        poller.renew_after_fork().unwrap();
        assert!(fd_of(&poller.epoll) >= 0 && fd_of(&poller.waker) >= 0);
        assert!(poller.signal_wakeup_fd() >= 0);
        // The new waker is registered in the new epoll: a wake ends the wait at once.
        poller.wake().unwrap();
        let mut events = Vec::new();
        let started = Instant::now();
        poller
            .wait(Some(Duration::from_secs(5)), &mut events)
            .unwrap();
        assert!(started.elapsed() < Duration::from_secs(2));
        poller.close();
        poller.renew_after_fork().unwrap();
        assert_eq!(fd_of(&poller.epoll), -1);
    }

    fn socketpair() -> (OwnedFd, OwnedFd) {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: `fds` is valid for socketpair to fill; on success we own both ends.
        unsafe {
            assert_eq!(
                libc::socketpair(
                    libc::AF_UNIX,
                    libc::SOCK_STREAM | libc::SOCK_NONBLOCK,
                    0,
                    fds.as_mut_ptr()
                ),
                0
            );
            (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))
        }
    }

    fn send_byte(fd: &OwnedFd) {
        // SAFETY: writing one byte from a valid buffer to an open descriptor.
        let n = unsafe { libc::write(fd.as_raw_fd(), [7u8].as_ptr().cast(), 1) };
        assert_eq!(n, 1);
    }

    #[test]
    fn wake_interrupts_a_long_wait() {
        let poller = Arc::new(Poller::new().unwrap());
        let p2 = poller.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            p2.wake().unwrap();
        });
        let start = Instant::now();
        poller
            .wait(Some(Duration::from_secs(5)), &mut Vec::new())
            .unwrap();
        assert!(start.elapsed() < Duration::from_secs(2));
        t.join().unwrap();
    }

    #[test]
    fn timeout_is_not_early() {
        let poller = Poller::new().unwrap();
        for micros in [300u64, 2_500, 15_000] {
            let start = Instant::now();
            poller
                .wait(Some(Duration::from_micros(micros)), &mut Vec::new())
                .unwrap();
            assert!(start.elapsed() >= Duration::from_micros(micros));
        }
    }

    #[test]
    fn signal_pipe_bytes_report_a_signal() {
        let poller = Poller::new().unwrap();
        // SAFETY: writing one byte from a valid buffer to our own open pipe.
        let n = unsafe { libc::write(poller.signal_wakeup_fd(), [2u8, 15].as_ptr().cast(), 2) };
        assert_eq!(n, 2);
        let w = poller
            .wait(Some(Duration::from_secs(1)), &mut Vec::new())
            .unwrap();
        assert!(w.signal);
        assert_eq!(poller.take_signals(), vec![2, 15]);
        assert!(poller.take_signals().is_empty());
        // Drained: the next wait times out without a signal.
        let w = poller
            .wait(Some(Duration::from_millis(1)), &mut Vec::new())
            .unwrap();
        assert!(!w.signal);
    }

    #[test]
    fn level_triggered_reports_until_drained() {
        let poller = Poller::new().unwrap();
        let (a, b) = socketpair();
        poller
            .register(a.as_raw_fd(), 42, READ, Trigger::Level)
            .unwrap();
        send_byte(&b);
        for _ in 0..3 {
            let mut ready = Vec::new();
            poller
                .wait(Some(Duration::from_millis(100)), &mut ready)
                .unwrap();
            assert_eq!(ready.len(), 1);
            assert_eq!(ready[0].token, 42);
            assert!(ready[0].readable && !ready[0].writable);
        }
        drain(a.as_raw_fd());
        let mut ready = Vec::new();
        poller
            .wait(Some(Duration::from_millis(1)), &mut ready)
            .unwrap();
        assert!(ready.is_empty());
        poller.deregister(a.as_raw_fd());
    }

    #[test]
    fn edge_triggered_reports_once() {
        let poller = Poller::new().unwrap();
        let (a, b) = socketpair();
        poller
            .register(a.as_raw_fd(), 7, READ, Trigger::Edge)
            .unwrap();
        send_byte(&b);
        let mut ready = Vec::new();
        poller
            .wait(Some(Duration::from_millis(100)), &mut ready)
            .unwrap();
        assert_eq!(ready.len(), 1);
        ready.clear();
        poller
            .wait(Some(Duration::from_millis(1)), &mut ready)
            .unwrap();
        assert!(ready.is_empty());
    }

    #[test]
    fn one_shot_reports_once_until_rearmed() {
        let poller = Poller::new().unwrap();
        let (a, b) = socketpair();
        poller
            .register(a.as_raw_fd(), 9, READ, Trigger::OneShot)
            .unwrap();
        send_byte(&b);
        let mut ready = Vec::new();
        poller
            .wait(Some(Duration::from_millis(100)), &mut ready)
            .unwrap();
        assert_eq!(ready.len(), 1);
        ready.clear();
        poller
            .wait(Some(Duration::from_millis(1)), &mut ready)
            .unwrap();
        assert!(ready.is_empty(), "disarmed after one report");
        poller
            .reregister(a.as_raw_fd(), 9, READ, Trigger::OneShot)
            .unwrap();
        poller
            .wait(Some(Duration::from_millis(100)), &mut ready)
            .unwrap();
        assert_eq!(ready.len(), 1, "re-armed, still readable");
    }

    #[test]
    fn reregister_after_close_registers_afresh() {
        let poller = Poller::new().unwrap();
        let (a, b) = socketpair();
        let fd = a.as_raw_fd();
        poller.register(fd, 3, READ, Trigger::Level).unwrap();
        drop(a); // epoll forgets the descriptor
        let (c, d) = socketpair();
        // The number may or may not be reused; either way reregister must succeed for the
        // live descriptor.
        poller
            .reregister(c.as_raw_fd(), 4, READ, Trigger::Level)
            .unwrap();
        send_byte(&d);
        let mut ready = Vec::new();
        poller
            .wait(Some(Duration::from_millis(100)), &mut ready)
            .unwrap();
        assert!(ready.iter().any(|r| r.token == 4));
        drop(b);
    }

    #[test]
    fn hang_up_wakes_reader_and_writer() {
        let poller = Poller::new().unwrap();
        let (a, b) = socketpair();
        let both = Interest {
            read: true,
            write: true,
        };
        poller
            .register(a.as_raw_fd(), 1, both, Trigger::Level)
            .unwrap();
        drop(b);
        let mut ready = Vec::new();
        poller
            .wait(Some(Duration::from_millis(100)), &mut ready)
            .unwrap();
        assert_eq!(ready.len(), 1);
        assert!(ready[0].readable && ready[0].writable);
    }

    #[test]
    fn close_releases_descriptors() {
        let poller = Poller::new().unwrap();
        let fd = poller.signal_wakeup_fd();
        poller.close();
        assert_eq!(poller.signal_wakeup_fd(), -1);
        // SAFETY: fcntl on a closed descriptor only reports EBADF.
        assert_eq!(unsafe { libc::fcntl(fd, libc::F_GETFD) }, -1);
        poller.wake().unwrap();
        assert!(poller.wait(Some(Duration::ZERO), &mut Vec::new()).is_err());
    }

    #[test]
    fn registering_a_bad_descriptor_fails() {
        let poller = Poller::new().unwrap();
        let err = poller
            .register(987_654, 1, READ, Trigger::Level)
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EBADF));
        // Deregistering an unknown descriptor is quietly accepted.
        poller.deregister(987_654);
    }
}
