//! The system calls that watch, signal and reap one child, in plain Rust (no Python).
//!
//! Why pidfds: a pidfd names one process for its whole life, so waiting on it and signalling
//! it can never hit a recycled pid, and it is an ordinary descriptor that the loop's poller
//! reports readable when the process exits. `waitid(P_PIDFD)` reaps exactly that child and no
//! other one, which leaves children started elsewhere (`subprocess.run` in a thread) alone.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// asyncio's returncode for a wait status: the exit status, or `-signum` if a signal killed it.
pub fn returncode_of_wait_status(status: libc::c_int) -> i32 {
    if libc::WIFSIGNALED(status) {
        -libc::WTERMSIG(status)
    } else if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        // Stopped/continued are not reported without WUNTRACED/WCONTINUED; asyncio passes
        // such a status through unchanged.
        status
    }
}

/// asyncio's returncode from the `siginfo_t` filled by `waitid`.
fn returncode_of_siginfo(info: &libc::siginfo_t) -> i32 {
    // SAFETY: `waitid` reported a child (si_pid != 0), so the SIGCHLD fields are filled in.
    let status = unsafe { info.si_status() };
    match info.si_code {
        libc::CLD_KILLED | libc::CLD_DUMPED => -status,
        _ => status,
    }
}

/// `pidfd_open(pid, 0)`: a descriptor (close-on-exec) that becomes readable when `pid` exits.
pub fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: the pidfd_open system call takes a pid and flags and returns a new descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the system call succeeded: `fd` is a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `waitid(idtype, id, WEXITED | WNOHANG [| WNOWAIT])`: the returncode if the child has
/// exited, None if it still runs. With `peek`, the child stays a zombie (not reaped).
fn waitid_nohang(idtype: libc::idtype_t, id: libc::id_t, peek: bool) -> io::Result<Option<i32>> {
    let mut flags = libc::WEXITED | libc::WNOHANG;
    if peek {
        flags |= libc::WNOWAIT;
    }
    loop {
        // SAFETY: an all-zero siginfo_t is a valid value; waitid fills it in.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a valid siginfo_t for waitid to fill.
        let rc = unsafe { libc::waitid(idtype, id, &mut info, flags) };
        if rc < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        // SAFETY: waitid succeeded; si_pid is 0 when no child has changed state (WNOHANG).
        if unsafe { info.si_pid() } == 0 {
            return Ok(None);
        }
        return Ok(Some(returncode_of_siginfo(&info)));
    }
}

/// Reaps the child behind `pidfd` if it has exited: its returncode, or None if it runs.
/// `ECHILD` means somebody else reaped it (its status is lost).
pub fn reap_pidfd(pidfd: RawFd) -> io::Result<Option<i32>> {
    waitid_nohang(libc::P_PIDFD, pidfd as libc::id_t, false)
}

/// Whether the child behind `pidfd` has exited, without reaping it (`WNOWAIT`).
pub fn peek_pidfd(pidfd: RawFd) -> io::Result<Option<i32>> {
    waitid_nohang(libc::P_PIDFD, pidfd as libc::id_t, true)
}

/// Whether child `pid` has exited, without reaping it (`WNOWAIT`).
pub fn peek_pid(pid: libc::pid_t) -> io::Result<Option<i32>> {
    waitid_nohang(libc::P_PID, pid as libc::id_t, true)
}

/// Reaps child `pid` if it has exited (`waitpid(pid, WNOHANG)`).
pub fn reap_pid_nohang(pid: libc::pid_t) -> io::Result<Option<i32>> {
    let mut status: libc::c_int = 0;
    loop {
        // SAFETY: `status` is a valid int for waitpid to fill.
        let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if rc < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        return Ok((rc != 0).then(|| returncode_of_wait_status(status)));
    }
}

/// Blocks until child `pid` exits and reaps it (`waitpid(pid, 0)`): the fallback's waiter.
pub fn reap_pid_blocking(pid: libc::pid_t) -> io::Result<i32> {
    let mut status: libc::c_int = 0;
    loop {
        // SAFETY: `status` is a valid int for waitpid to fill.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        return Ok(returncode_of_wait_status(status));
    }
}

/// `pidfd_send_signal(pidfd, sig, NULL, 0)`: signals exactly the process behind `pidfd`.
pub fn pidfd_send_signal(pidfd: RawFd, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: the system call takes a descriptor, a signal number, a null siginfo and flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd,
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `kill(pid, sig)`: the fallback's signal, when there is no pidfd.
pub fn kill_pid(pid: libc::pid_t, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: kill takes a pid and a signal number.
    if unsafe { libc::kill(pid, sig) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    /// Forks a child that runs `body` and exits with its result (never returns in the child).
    fn fork_child(body: fn() -> i32) -> libc::pid_t {
        // SAFETY: the child only calls async-signal-safe functions before _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let code = body();
            // SAFETY: leaves the forked child at once, without running the test harness.
            unsafe { libc::_exit(code) };
        }
        pid
    }

    fn wait_readable(fd: RawFd) {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `pfd` is a valid pollfd array of length 1.
        assert_eq!(unsafe { libc::poll(&mut pfd, 1, 10_000) }, 1);
    }

    #[test]
    fn exit_status_through_pidfd() {
        let pid = fork_child(|| 7);
        let pidfd = pidfd_open(pid).unwrap();
        wait_readable(pidfd.as_raw_fd());
        assert_eq!(peek_pidfd(pidfd.as_raw_fd()).unwrap(), Some(7));
        assert_eq!(reap_pidfd(pidfd.as_raw_fd()).unwrap(), Some(7));
        let err = reap_pidfd(pidfd.as_raw_fd()).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ECHILD));
    }

    #[test]
    fn killed_child_reports_minus_signum() {
        let pid = fork_child(|| {
            // SAFETY: pause only waits for a signal.
            unsafe { libc::pause() };
            0
        });
        let pidfd = pidfd_open(pid).unwrap();
        assert_eq!(reap_pidfd(pidfd.as_raw_fd()).unwrap(), None);
        pidfd_send_signal(pidfd.as_raw_fd(), libc::SIGKILL).unwrap();
        wait_readable(pidfd.as_raw_fd());
        assert_eq!(reap_pidfd(pidfd.as_raw_fd()).unwrap(), Some(-libc::SIGKILL));
    }

    #[test]
    fn blocking_fallback_reaps_that_pid() {
        let pid = fork_child(|| 3);
        assert_eq!(reap_pid_blocking(pid).unwrap(), 3);
        assert_eq!(
            reap_pid_nohang(pid).unwrap_err().raw_os_error(),
            Some(libc::ECHILD)
        );
    }

    #[test]
    fn wait_status_conversion() {
        assert_eq!(returncode_of_wait_status(0x0100), 1);
        assert_eq!(returncode_of_wait_status(9), -9);
    }
}
