//! The poller under the loop: one `epoll_wait` per iteration (through mio), an eventfd waker
//! for `call_soon_threadsafe`, and the read end of the signal wakeup pipe.
//!
//! Why mio: its `Poll::poll` is exactly one `epoll_wait` (kqueue elsewhere), its `Waker` is an
//! eventfd on Linux, and `SourceFd` watches any descriptor. The `polling` crate re-arms a
//! timerfd and its notifier around every wait (three extra syscalls per iteration).
//!
//! Signals: CPython's C-level handler only sets a flag; the Python-level handler runs when the
//! main thread next executes bytecode. While the loop sleeps in `epoll_wait` with the GIL
//! released nothing would run it, so the loop hands the write end of a non-blocking pipe to
//! `signal.set_wakeup_fd()`: the C handler writes the signal number there and the poll wakes.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

/// Token of the waker (call_soon_threadsafe).
const WAKER_TOKEN: Token = Token(usize::MAX);
/// Token of the signal wakeup pipe's read end.
const SIGNAL_TOKEN: Token = Token(usize::MAX - 1);
/// How many events one wait collects.
const EVENTS_CAPACITY: usize = 1024;

/// What a wait observed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Wakeup {
    /// Bytes arrived on the signal wakeup pipe (a signal was delivered).
    pub signal: bool,
}

/// The loop's poller. `wait` is called by the loop thread only; `wake` from any thread.
pub struct Poller {
    poll: Mutex<(Poll, Events)>,
    waker: Waker,
    /// Set by `wake` so that a burst of threadsafe calls writes the eventfd once per iteration.
    wake_pending: AtomicBool,
    signal_read: OwnedFd,
    signal_write: OwnedFd,
}

/// Creates a non-blocking, close-on-exec pipe.
fn nonblocking_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
    unsafe { Ok((OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))) }
}

impl Poller {
    /// Opens the epoll instance, the waker and the signal pipe.
    pub fn new() -> io::Result<Self> {
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), WAKER_TOKEN)?;
        let (signal_read, signal_write) = nonblocking_pipe()?;
        poll.registry().register(
            &mut SourceFd(&signal_read.as_raw_fd()),
            SIGNAL_TOKEN,
            Interest::READABLE,
        )?;
        Ok(Poller {
            poll: Mutex::new((poll, Events::with_capacity(EVENTS_CAPACITY))),
            waker,
            wake_pending: AtomicBool::new(false),
            signal_read,
            signal_write,
        })
    }

    /// The descriptor to give to `signal.set_wakeup_fd()`.
    pub fn signal_wakeup_fd(&self) -> RawFd {
        self.signal_write.as_raw_fd()
    }

    /// Wakes the loop from any thread; cheap when a wake is already pending.
    pub fn wake(&self) -> io::Result<()> {
        if !self.wake_pending.swap(true, Ordering::AcqRel) {
            self.waker.wake()?;
        }
        Ok(())
    }

    /// Re-arms `wake`. The loop calls this before it looks at its queues to choose a timeout,
    /// so a wake that lands after the look always interrupts the following wait.
    pub fn rearm_wake(&self) {
        self.wake_pending.store(false, Ordering::Release);
    }

    /// Waits for events up to `timeout` (`None`: forever). An interrupted wait (EINTR) counts
    /// as a wakeup: the caller runs pending signal handlers next.
    pub fn wait(&self, timeout: Option<Duration>) -> io::Result<Wakeup> {
        let mut guard = self
            .poll
            .lock()
            .map_err(|_| io::Error::other("poller mutex poisoned"))?;
        let (poll, events) = &mut *guard;
        let mut wakeup = Wakeup::default();
        match poll.poll(events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                wakeup.signal = true;
                return Ok(wakeup);
            }
            Err(e) => return Err(e),
        }
        for event in events.iter() {
            if event.token() == SIGNAL_TOKEN {
                wakeup.signal = true;
            }
        }
        if wakeup.signal {
            self.drain_signal_pipe();
        }
        Ok(wakeup)
    }

    /// Empties the signal pipe (edge-triggered: it must be read to EAGAIN).
    fn drain_signal_pipe(&self) {
        let mut buf = [0u8; 256];
        loop {
            // SAFETY: `buf` is valid for writes of its length; the fd is open for our lifetime.
            let n = unsafe {
                libc::read(
                    self.signal_read.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                )
            };
            if n <= 0 {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Instant;

    #[test]
    fn wake_interrupts_a_long_wait() {
        let poller = Arc::new(Poller::new().unwrap());
        let p2 = poller.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            p2.wake().unwrap();
        });
        let start = Instant::now();
        poller.wait(Some(Duration::from_secs(5))).unwrap();
        assert!(start.elapsed() < Duration::from_secs(2));
        t.join().unwrap();
    }

    #[test]
    fn timeout_is_not_early() {
        let poller = Poller::new().unwrap();
        let start = Instant::now();
        poller.wait(Some(Duration::from_millis(15))).unwrap();
        assert!(start.elapsed() >= Duration::from_millis(15));
    }

    #[test]
    fn signal_pipe_bytes_report_a_signal() {
        let poller = Poller::new().unwrap();
        // SAFETY: writing one byte from a valid buffer to our own open pipe.
        let n = unsafe { libc::write(poller.signal_wakeup_fd(), [2u8].as_ptr().cast(), 1) };
        assert_eq!(n, 1);
        let w = poller.wait(Some(Duration::from_secs(1))).unwrap();
        assert!(w.signal);
        // Drained: the next wait times out without a signal.
        let w = poller.wait(Some(Duration::from_millis(1))).unwrap();
        assert!(!w.signal);
    }
}
