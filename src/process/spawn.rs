//! `spawn_child`: the loop's native spawn, called by `python/ferroloop/_spawn.py`.
//!
//! The Python edge has already done what `subprocess.Popen` does in Python (argument and
//! environment encoding, the `PATH` candidates, the `sys.audit` event); here the child's pipes
//! are created (close-on-exec, and non-blocking: the parent's ends go to the loop's pipe
//! transports, which would make them non-blocking anyway; the child makes its ends blocking),
//! the child is started by [`fork_exec`] (with its pidfd, when asked for), the child's ends of
//! the pipes are closed, and the parent's ends are returned. A failure closes every descriptor
//! made here and raises the `OSError` subclass `Popen` raises, naming the file `Popen` names
//! (the program for an exec failure, `cwd` for a failed `chdir`).
//!
//! Why [`fork_exec`] and not glibc's `posix_spawn(3)` (used until 2026-12-03): the parent is
//! suspended until the child execs either way, so whatever the child does before its exec is
//! wall time of every spawn. glibc 2.36's `posix_spawn` child sets every one of the 64 signals
//! back to its default (a `sigaction` read and a `sigaction` write each, 128 system calls) and
//! the parent maps and unmaps a stack per spawn and checks each file action with `prlimit64`;
//! [`fork_exec`]'s child reads the dispositions and resets only the caught ones (about 66
//! system calls), as `_posixsubprocess` does. Same parent CPU per `spawn_child` (76 µs both),
//! 25-50 µs less wall time per `spawn_child` (bench/RESULTS.md, "spawn wall time").

use std::ffi::CString;
use std::os::fd::RawFd;

use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::interop::errors::strerror;
use crate::process::fork_exec;
use crate::process::request::{Credentials, SpawnError, SpawnRequest, Stage, Stdio};

/// `subprocess.PIPE`.
const PIPE: i32 = -1;
/// `subprocess.STDOUT`.
const STDOUT: i32 = -2;
/// `subprocess.DEVNULL`.
const DEVNULL: i32 = -3;

fn c_string(bytes: &Bound<'_, PyBytes>) -> PyResult<CString> {
    CString::new(bytes.as_bytes()).map_err(|_| PyValueError::new_err("embedded null byte"))
}

fn c_strings(list: &[Bound<'_, PyBytes>]) -> PyResult<Vec<CString>> {
    list.iter().map(c_string).collect()
}

/// Descriptors opened here, closed on drop unless taken.
#[derive(Default)]
struct Fds(Vec<RawFd>);

impl Fds {
    fn pipe(&mut self) -> std::io::Result<(RawFd, RawFd)> {
        let mut ends = [0; 2];
        // SAFETY: pipe2 writes two new descriptors into `ends`.
        if unsafe { libc::pipe2(ends.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        self.0.extend(ends);
        Ok((ends[0], ends[1]))
    }

    /// Removes `fd` from the descriptors closed on drop.
    fn keep(&mut self, fd: RawFd) -> RawFd {
        self.0.retain(|&open| open != fd);
        fd
    }
}

impl Drop for Fds {
    fn drop(&mut self) {
        for fd in &self.0 {
            // SAFETY: each descriptor was created by `pipe` and is closed once.
            unsafe { libc::close(*fd) };
        }
    }
}

/// How the child's descriptor `target` is set up from the caller's code, and the parent's end
/// of a new pipe (-1 if none).
fn plan_stdio(code: Option<i32>, target: RawFd, fds: &mut Fds) -> PyResult<(Stdio, RawFd)> {
    let pipe_error = |err: std::io::Error| crate::interop::errors::os_error(err);
    Ok(match code {
        None => (Stdio::Inherit, -1),
        Some(PIPE) => {
            let (read, write) = fds.pipe().map_err(pipe_error)?;
            if target == 0 {
                (Stdio::Pipe(read), write)
            } else {
                (Stdio::Pipe(write), read)
            }
        }
        Some(DEVNULL) => (Stdio::DevNull, -1),
        Some(STDOUT) if target == 2 => (Stdio::SameAsStdout, -1),
        Some(fd) => (Stdio::Fd(fd), -1),
    })
}

/// Starts a child with a vfork-style clone and exec: `(pid, pidfd, stdin_w, stdout_r,
/// stderr_r)` (-1 where there is no pipe; pidfd -1 unless `pidfd` asked for it and the kernel
/// gives it with the clone: the caller owns it). The parent's pipe ends are non-blocking.
///
/// `stdin`/`stdout`/`stderr`: None (inherit), `subprocess.PIPE`, `DEVNULL`, `STDOUT` (stderr
/// only) or a descriptor. `filenames`: the file an `OSError` names for a failed exec, a failed
/// `chdir`, and any other set-up failure (None: no file). `groups`, `gid`, `uid`, `umask`:
/// `setgroups`, `setregid`, `setreuid`, `umask` in the child (None: the parent's).
#[pyfunction]
#[pyo3(signature = (argv, executables, envp, cwd, stdin, stdout, stderr, close_fds, pass_fds,
    restore_signals, start_new_session, process_group, filenames, groups=None, gid=None, uid=None,
    umask=None, pidfd=false))]
#[allow(clippy::too_many_arguments)]
pub fn spawn_child(
    py: Python<'_>,
    argv: Vec<Bound<'_, PyBytes>>,
    executables: Vec<Bound<'_, PyBytes>>,
    envp: Option<Vec<Bound<'_, PyBytes>>>,
    cwd: Option<Bound<'_, PyBytes>>,
    stdin: Option<i32>,
    stdout: Option<i32>,
    stderr: Option<i32>,
    close_fds: bool,
    pass_fds: Vec<RawFd>,
    restore_signals: bool,
    start_new_session: bool,
    process_group: libc::pid_t,
    filenames: (Py<PyAny>, Py<PyAny>, Py<PyAny>),
    groups: Option<Vec<libc::gid_t>>,
    gid: Option<libc::gid_t>,
    uid: Option<libc::uid_t>,
    umask: Option<libc::mode_t>,
    pidfd: bool,
) -> PyResult<(libc::pid_t, RawFd, RawFd, RawFd, RawFd)> {
    let argv = c_strings(&argv)?;
    let executables = c_strings(&executables)?;
    let envp = envp.as_deref().map(c_strings).transpose()?;
    let cwd = cwd.as_ref().map(c_string).transpose()?;
    let mut pass_fds = pass_fds;
    pass_fds.sort_unstable();
    pass_fds.dedup();
    let mut fds = Fds::default();
    let (stdin_plan, stdin_w) = plan_stdio(stdin, 0, &mut fds)?;
    let (stdout_plan, stdout_r) = plan_stdio(stdout, 1, &mut fds)?;
    let (stderr_plan, stderr_r) = plan_stdio(stderr, 2, &mut fds)?;
    let request = SpawnRequest {
        argv: &argv,
        executables: &executables,
        envp: envp.as_deref(),
        cwd: cwd.as_deref(),
        stdio: [stdin_plan, stdout_plan, stderr_plan],
        close_fds,
        pass_fds: &pass_fds,
        restore_signals,
        new_session: start_new_session,
        process_group: (process_group >= 0).then_some(process_group),
        credentials: Credentials {
            groups: groups.as_deref(),
            gid,
            uid,
            umask,
        },
        pidfd,
    };
    // The child runs until its exec without the GIL: other threads are not held up.
    let outcome = py.detach(|| fork_exec::spawn(&request));
    match outcome {
        Ok(spawned) => {
            // The child's ends close with `fds`; the parent's ends are handed over.
            let parent_ends = (fds.keep(stdin_w), fds.keep(stdout_r), fds.keep(stderr_r));
            Ok((
                spawned.pid,
                spawned.pidfd,
                parent_ends.0,
                parent_ends.1,
                parent_ends.2,
            ))
        }
        Err(SpawnError::Os(errno, stage)) => {
            let filename = match stage {
                Stage::Exec => Some(filenames.0),
                Stage::Chdir => Some(filenames.1),
                Stage::Setup => Some(filenames.2),
                Stage::Fork => None,
            };
            let message = strerror(errno);
            Err(match filename {
                Some(name) if !name.is_none(py) => PyOSError::new_err((errno, message, name)),
                _ => PyOSError::new_err((errno, message)),
            })
        }
    }
}
