//! `ChildWatch`: one child the loop started, watched until it exits and reaped exactly once.
//!
//! With a pidfd (Linux >= 5.3), the Python edge registers [`ChildWatch::fileno`] with the
//! loop's reader machinery; when it turns readable, [`ChildWatch::reap`] collects the status
//! with `waitid(P_PIDFD)` and closes the pidfd. Nothing runs in between: no thread, no SIGCHLD
//! handler. Signals go through `pidfd_send_signal`, so a recycled pid is never hit.
//!
//! Without pidfds (`pidfd_open` fails: ENOSYS or EPERM on an old kernel or under a seccomp
//! filter, or no descriptor to spare), `fileno` is None and a waiter thread calls [`ChildWatch::wait_blocking`]
//! (`waitpid(pid)` with the GIL released), as asyncio's `ThreadedChildWatcher` does.

use std::os::fd::{IntoRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use pyo3::prelude::*;

use crate::interop::errors::os_error;
use crate::process::exit_status;

/// One child process: its pid, its pidfd while it runs, whether it has been reaped.
#[pyclass(frozen, module = "ferroloop._ferroloop", name = "ChildWatch")]
pub struct ChildWatch {
    pid: libc::pid_t,
    /// The pidfd, or -1 (no pidfd support, or closed once reaped).
    pidfd: AtomicI32,
    /// Whether the pidfd design is in use (false: the waiter-thread fallback).
    uses_pidfd: bool,
    /// Set once the status has been collected (or found collected by somebody else).
    reaped: AtomicBool,
}

impl ChildWatch {
    /// The pidfd while open.
    fn fd(&self) -> Option<RawFd> {
        let fd = self.pidfd.load(Ordering::Acquire);
        (fd >= 0).then_some(fd)
    }

    /// Closes the pidfd (once).
    fn close_pidfd(&self) {
        let fd = self.pidfd.swap(-1, Ordering::AcqRel);
        if fd >= 0 {
            // SAFETY: `fd` was returned by pidfd_open and is closed exactly once (swapped out).
            unsafe { libc::close(fd) };
        }
    }

    /// Records the outcome of a reap: the status is collected (or lost: ECHILD). The pidfd
    /// stays open until `close()`, so that the caller can first stop watching it.
    fn after_reap(&self, outcome: std::io::Result<Option<i32>>) -> PyResult<Option<i32>> {
        match outcome {
            Ok(None) => Ok(None),
            Ok(Some(code)) => {
                self.reaped.store(true, Ordering::Release);
                Ok(Some(code))
            }
            Err(err) => {
                if err.raw_os_error() == Some(libc::ECHILD) {
                    self.reaped.store(true, Ordering::Release);
                }
                Err(os_error(err))
            }
        }
    }
}

#[pymethods]
impl ChildWatch {
    /// Starts watching child `pid`; `use_pidfd=False` forces the waiter-thread fallback.
    /// `pidfd`: the child's pidfd if the spawn already has one (`CLONE_PIDFD`); the watch
    /// owns it from here on (closed at once with `use_pidfd=False`). Otherwise one is opened.
    #[new]
    #[pyo3(signature = (pid, use_pidfd = true, pidfd = -1))]
    fn new(pid: libc::pid_t, use_pidfd: bool, pidfd: RawFd) -> PyResult<Self> {
        if pidfd >= 0 && !use_pidfd {
            // SAFETY: the caller handed this pidfd over; it is closed once, here.
            unsafe { libc::close(pidfd) };
        }
        if pid <= 0 {
            if pidfd >= 0 && use_pidfd {
                // SAFETY: as above.
                unsafe { libc::close(pidfd) };
            }
            return Err(pyo3::exceptions::PyValueError::new_err(format!(
                "invalid child pid {pid}"
            )));
        }
        // ENOSYS/EPERM: no pidfd support (old kernel, seccomp); EMFILE/ENFILE/ENOMEM: no
        // descriptor to spare. Either way the waiter thread still reaps the child correctly,
        // where raising would leave it unreaped.
        let pidfd = if !use_pidfd {
            -1
        } else if pidfd >= 0 {
            pidfd
        } else {
            exit_status::pidfd_open(pid).map_or(-1, |fd| fd.into_raw_fd())
        };
        Ok(Self {
            pid,
            pidfd: AtomicI32::new(pidfd),
            uses_pidfd: pidfd >= 0,
            reaped: AtomicBool::new(false),
        })
    }

    /// The child's pid.
    #[getter]
    fn pid(&self) -> libc::pid_t {
        self.pid
    }

    /// The pidfd to watch for readability, None without pidfd support or once closed.
    #[getter]
    fn fileno(&self) -> Option<RawFd> {
        self.fd()
    }

    /// Whether the pidfd design is in use (False: a waiter thread must call wait_blocking).
    #[getter]
    fn uses_pidfd(&self) -> bool {
        self.uses_pidfd
    }

    /// Whether the child's status has been collected.
    #[getter]
    fn reaped(&self) -> bool {
        self.reaped.load(Ordering::Acquire)
    }

    /// Reaps the child if it has exited: its returncode (exit status or -signum), or None if
    /// it still runs. ChildProcessError if its status was collected by somebody else.
    fn reap(&self) -> PyResult<Option<i32>> {
        if self.reaped() {
            return Err(os_error(std::io::Error::from_raw_os_error(libc::ECHILD)));
        }
        let outcome = match self.fd() {
            Some(fd) => exit_status::reap_pidfd(fd),
            None => exit_status::reap_pid_nohang(self.pid),
        };
        self.after_reap(outcome)
    }

    /// Blocks (GIL released) until the child exits, reaps it and returns its returncode: the
    /// waiter thread of the fallback.
    fn wait_blocking(&self, py: Python<'_>) -> PyResult<i32> {
        if self.reaped() {
            return Err(os_error(std::io::Error::from_raw_os_error(libc::ECHILD)));
        }
        let pid = self.pid;
        let outcome = py.detach(|| exit_status::reap_pid_blocking(pid));
        self.after_reap(outcome.map(Some))
            .map(|code| code.unwrap_or_default())
    }

    /// Whether the child has exited, without reaping it (`WNOWAIT`): asyncio's `close()`
    /// kills only a child that still runs, and peeking leaves the status for `reap`.
    fn has_exited(&self) -> PyResult<bool> {
        if self.reaped() {
            return Ok(true);
        }
        let peeked = match self.fd() {
            Some(fd) => exit_status::peek_pidfd(fd),
            None => exit_status::peek_pid(self.pid),
        };
        match peeked {
            Ok(code) => Ok(code.is_some()),
            Err(err) if err.raw_os_error() == Some(libc::ECHILD) => Ok(true),
            Err(err) => Err(os_error(err)),
        }
    }

    /// Sends `sig` to the child (through its pidfd when there is one).
    /// ProcessLookupError once it has been reaped.
    fn send_signal(&self, sig: libc::c_int) -> PyResult<()> {
        if self.reaped() {
            return Err(os_error(std::io::Error::from_raw_os_error(libc::ESRCH)));
        }
        let sent = match self.fd() {
            Some(fd) => exit_status::pidfd_send_signal(fd, sig),
            None => exit_status::kill_pid(self.pid, sig),
        };
        sent.map_err(os_error)
    }

    /// Stops watching: closes the pidfd (the child is left alone).
    fn close(&self) {
        self.close_pidfd();
    }

    fn __repr__(&self) -> String {
        let state = if self.reaped() { "reaped" } else { "watching" };
        let how = if self.uses_pidfd { "pidfd" } else { "thread" };
        format!("<ChildWatch pid={} {state} ({how})>", self.pid)
    }
}

impl Drop for ChildWatch {
    fn drop(&mut self) {
        self.close_pidfd();
    }
}
