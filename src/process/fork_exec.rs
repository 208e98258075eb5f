//! Starting a child with `clone(CLONE_VM | CLONE_VFORK)` and `execve(2)`, set up as
//! `subprocess.Popen` sets it up, `extra_groups`, `group`, `user` and `umask` included. Every
//! child the loop starts natively goes through here (glibc's `posix_spawn(3)`, used before,
//! cannot set credentials, and its child spends twice the system calls on signal dispositions
//! while the parent waits: see `spawn.rs`).
//!
//! Why not `subprocess.Popen`: its parent side reads the child's exec status with a blocking
//! `os.read` on the loop thread (which blocking detectors refuse) and runs in Python.
//! Here the parent blocks in Rust, without the GIL, until the child's exec closes the error
//! pipe.
//!
//! Why a vfork-style child on its own stack and not `fork`: copying the parent's page tables
//! and scheduling a forked child cost milliseconds per spawn on a loaded machine (measured:
//! `Popen(user=0)`, which forks, 9 ms median; a vfork-style spawn, 0.15 ms). The parent thread is
//! suspended until the child execs or exits, so the shared memory is only the child's.
//! CPython's `_posixsubprocess` does not vfork when it changes credentials because the C
//! library's `setuid` family signals every thread of the process (the parent's); here the
//! credential calls are raw system calls that change only the calling task.
//!
//! Everything the child uses is prepared in the parent; the child makes only system calls
//! (async-signal-safe, no allocation, no lock, no Python), in `Popen`'s order:
//! pass_fds made inheritable; stdin/stdout/stderr copied into place (a source among 0..2 moved
//! above 2 first); `chdir(cwd)`; `umask`; SIGPIPE/SIGXFSZ to their defaults (`restore_signals`);
//! caught signals back to their defaults and the parent's signal mask restored (signals are
//! blocked across the fork, so no Python handler runs in the child); `setsid`/`setpgid`;
//! `setgroups`, `setregid`, `setreuid`; `close_fds`; `execve` of each candidate in turn.
//! A failure writes errno and the failed stage into the close-on-exec error pipe and the child
//! exits; the parent reaps it and reports the error as `Popen` does.
//!
//! The credential calls are raw system calls: they change only the calling task, the child
//! (the C library's wrappers would broadcast the change to the parent's threads).

use std::os::fd::RawFd;

use crate::process::request::{environment, pointers, SpawnError, SpawnRequest, Stage, Stdio};

/// Bytes of a failure report: errno (native-endian i32) then the stage.
const REPORT_LEN: usize = 5;

/// Bytes of the child's stack (its frames are small: system calls on prepared data).
const CHILD_STACK: usize = 64 * 1024;

/// Marker in [`Prepared::stdio`]: the child's stderr is a copy of its stdout.
const AS_STDOUT: RawFd = -2;

fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn stage_code(stage: Stage) -> u8 {
    match stage {
        Stage::Setup => 0,
        Stage::Chdir => 1,
        Stage::Exec => 2,
        Stage::Fork => 3,
    }
}

fn stage_of(code: u8) -> Stage {
    match code {
        1 => Stage::Chdir,
        2 => Stage::Exec,
        3 => Stage::Fork,
        _ => Stage::Setup,
    }
}

/// Descriptors opened by the parent for one spawn, closed on drop.
struct Owned(Vec<RawFd>);

impl Drop for Owned {
    fn drop(&mut self) {
        for &fd in &self.0 {
            // SAFETY: each descriptor was opened by `spawn` and is closed once.
            unsafe { libc::close(fd) };
        }
    }
}

/// What the child needs, all computed before the fork.
struct Prepared<'a> {
    request: &'a SpawnRequest<'a>,
    argv: Vec<*mut libc::c_char>,
    envp: *const *mut libc::c_char,
    /// Source of the child's 0, 1, 2: a descriptor, -1 (inherit) or [`AS_STDOUT`].
    stdio: [RawFd; 3],
    /// Descriptors above 2 that `close_fds` keeps, sorted (pass_fds and the error pipe).
    keep: Vec<RawFd>,
    /// Highest descriptor number closed one by one when `close_range(2)` is missing.
    max_fd: RawFd,
    /// Write end of the error pipe.
    report: RawFd,
    /// The parent's signal mask, restored in the child before exec.
    mask: libc::sigset_t,
}

/// The child's entry point on its own stack; `arg` is the parent's [`Prepared`].
extern "C" fn child_entry(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` points to the `Prepared` of `spawn`, alive while the parent is suspended.
    let prepared = unsafe { &*(arg as *const Prepared<'_>) };
    child(prepared)
}

/// Writes the failure into the error pipe and ends the child.
fn fail(p: &Prepared<'_>, err: i32, stage: Stage) -> ! {
    let mut buf = [0u8; REPORT_LEN];
    buf[..4].copy_from_slice(&err.to_ne_bytes());
    buf[4] = stage_code(stage);
    // SAFETY: write and _exit are async-signal-safe; `buf` is a local array.
    unsafe {
        libc::write(p.report, buf.as_ptr().cast(), REPORT_LEN);
        libc::_exit(255)
    }
}

/// Clears close-on-exec on `fd`.
fn set_inheritable(fd: RawFd) -> Result<(), i32> {
    // SAFETY: fcntl on a descriptor number only reads or sets its flags.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
            return Err(errno());
        }
    }
    Ok(())
}

/// Closes descriptors `low..=high` (close_range, or one by one without it).
fn close_between(low: RawFd, high: RawFd, max_fd: RawFd) {
    if low > high {
        return;
    }
    // SAFETY: close_range only closes this process's descriptors in the range.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, low as u32, high as u32, 0u32) };
    if rc == 0 {
        return;
    }
    for fd in low..=high.min(max_fd) {
        // SAFETY: closing a descriptor number (EBADF for an unused one is ignored).
        unsafe { libc::close(fd) };
    }
}

/// The child, from the fork to exec; never returns.
fn child(p: &Prepared<'_>) -> ! {
    let request = p.request;
    for &fd in request.pass_fds {
        if let Err(err) = set_inheritable(fd) {
            fail(p, err, Stage::Setup);
        }
    }
    // A source among 0..2 other than its target could be overwritten by an earlier dup2.
    let mut stdio = p.stdio;
    for (target, source) in stdio.iter_mut().enumerate() {
        if (0..3).contains(source) && *source != target as RawFd {
            // SAFETY: duplicating an open descriptor above 2, close-on-exec.
            let copy = unsafe { libc::fcntl(*source, libc::F_DUPFD_CLOEXEC, 3) };
            if copy < 0 {
                fail(p, errno(), Stage::Setup);
            }
            *source = copy;
        }
    }
    for (target, &source) in stdio.iter().enumerate() {
        let target = target as RawFd;
        let result = match source {
            -1 => Ok(()),
            AS_STDOUT => dup_to(1, target),
            fd if fd == target => set_inheritable(fd),
            fd => dup_to(fd, target),
        };
        if let Err(err) = result {
            fail(p, err, Stage::Setup);
        }
    }
    if let Some(cwd) = request.cwd {
        // SAFETY: chdir to a NUL-terminated path prepared by the parent.
        if unsafe { libc::chdir(cwd.as_ptr()) } < 0 {
            fail(p, errno(), Stage::Chdir);
        }
    }
    let credentials = request.credentials;
    if let Some(mask) = credentials.umask {
        // SAFETY: umask always succeeds.
        unsafe { libc::umask(mask) };
    }
    // SAFETY: sigaction/sigprocmask with structures of this stack frame; async-signal-safe.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        let mut old: libc::sigaction = std::mem::zeroed();
        if request.restore_signals {
            action.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(libc::SIGPIPE, &action, std::ptr::null_mut());
            libc::sigaction(libc::SIGXFSZ, &action, std::ptr::null_mut());
        }
        // A caught signal would run the parent's handler (Python's) in the child: back to
        // the default, as exec would set it anyway; ignored signals stay ignored.
        action.sa_sigaction = libc::SIG_DFL;
        for sig in 1..libc::SIGRTMAX() + 1 {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            if libc::sigaction(sig, std::ptr::null(), &mut old) == 0
                && old.sa_sigaction != libc::SIG_DFL
                && old.sa_sigaction != libc::SIG_IGN
            {
                libc::sigaction(sig, &action, std::ptr::null_mut());
            }
        }
        libc::pthread_sigmask(libc::SIG_SETMASK, &p.mask, std::ptr::null_mut());
    }
    if request.new_session {
        // SAFETY: setsid has no arguments.
        if unsafe { libc::setsid() } < 0 {
            fail(p, errno(), Stage::Setup);
        }
    }
    if let Some(group) = request.process_group {
        // SAFETY: setpgid of this process.
        if unsafe { libc::setpgid(0, group) } < 0 {
            fail(p, errno(), Stage::Setup);
        }
    }
    // SAFETY: raw credential system calls of this (single-threaded) child; the group list is
    // a slice prepared by the parent.
    unsafe {
        if let Some(groups) = credentials.groups {
            if libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) < 0 {
                fail(p, errno(), Stage::Setup);
            }
        }
        if let Some(gid) = credentials.gid {
            if libc::syscall(libc::SYS_setregid, gid, gid) < 0 {
                fail(p, errno(), Stage::Setup);
            }
        }
        if let Some(uid) = credentials.uid {
            if libc::syscall(libc::SYS_setreuid, uid, uid) < 0 {
                fail(p, errno(), Stage::Setup);
            }
        }
    }
    if request.close_fds {
        let mut low = 3;
        for &keep in &p.keep {
            close_between(low, keep - 1, p.max_fd);
            low = keep + 1;
        }
        close_between(low, RawFd::MAX, p.max_fd);
    }
    let mut first_other = 0;
    let mut last = libc::ENOENT;
    for executable in request.executables {
        // SAFETY: NUL-terminated path and NULL-terminated argv/envp arrays prepared by the
        // parent; execve returns only on failure.
        unsafe { libc::execve(executable.as_ptr(), p.argv.as_ptr().cast(), p.envp.cast()) };
        let err = errno();
        if first_other == 0 && err != libc::ENOENT && err != libc::ENOTDIR {
            first_other = err;
        }
        last = err;
    }
    fail(
        p,
        if first_other != 0 { first_other } else { last },
        Stage::Exec,
    )
}

/// `dup2(from, to)`, retried on EINTR.
fn dup_to(from: RawFd, to: RawFd) -> Result<(), i32> {
    loop {
        // SAFETY: dup2 between descriptor numbers.
        if unsafe { libc::dup2(from, to) } >= 0 {
            return Ok(());
        }
        let err = errno();
        if err != libc::EINTR {
            return Err(err);
        }
    }
}

/// A close-on-exec copy of `fd` above 2 if it is among 0..2 (the child's copies into 0..2
/// must not overwrite it); the copy is added to `owned`.
fn above_stdio(fd: RawFd, owned: &mut Owned) -> Result<RawFd, SpawnError> {
    if fd >= 3 {
        return Ok(fd);
    }
    // SAFETY: duplicating an open descriptor of this process.
    let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if copy < 0 {
        return Err(SpawnError::Os(errno(), Stage::Fork));
    }
    owned.0.push(copy);
    Ok(copy)
}

/// Starts the child with fork and exec; its pid, or why it could not be started.
pub fn spawn(request: &SpawnRequest<'_>) -> Result<libc::pid_t, SpawnError> {
    let mut owned = Owned(Vec::new());
    let mut ends = [0; 2];
    // SAFETY: pipe2 writes two new descriptors into `ends`.
    if unsafe { libc::pipe2(ends.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(SpawnError::Os(errno(), Stage::Fork));
    }
    owned.0.extend(ends);
    let report = above_stdio(ends[1], &mut owned)?;
    let mut stdio = [-1; 3];
    for (slot, source) in stdio.iter_mut().zip(request.stdio) {
        *slot = match source {
            Stdio::Inherit => -1,
            Stdio::Fd(fd) => fd,
            Stdio::SameAsStdout => AS_STDOUT,
            Stdio::DevNull => {
                // SAFETY: opening a NUL-terminated literal path.
                let fd =
                    unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
                if fd < 0 {
                    return Err(SpawnError::Os(errno(), Stage::Fork));
                }
                owned.0.push(fd);
                fd
            }
        };
    }
    let mut keep: Vec<RawFd> = request
        .pass_fds
        .iter()
        .copied()
        .filter(|&fd| fd >= 3)
        .collect();
    keep.push(report);
    keep.sort_unstable();
    keep.dedup();
    // SAFETY: getrlimit fills a local structure.
    let max_fd = unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur.min(1 << 20) as RawFd
        } else {
            65_536
        }
    };
    let envp_storage = request.envp.map(pointers);
    let envp = match &envp_storage {
        Some(list) => list.as_ptr(),
        None => environment(),
    };
    let mut prepared = Prepared {
        request,
        argv: pointers(request.argv),
        envp,
        stdio,
        keep,
        max_fd,
        report,
        // SAFETY: an all-zero sigset_t is valid; pthread_sigmask fills it below.
        mask: unsafe { std::mem::zeroed() },
    };
    let mut stack = vec![0u8; CHILD_STACK];
    // The stack grows down from its 16-byte aligned top.
    let top = (stack.as_mut_ptr() as usize + CHILD_STACK) & !15;
    // SAFETY: every signal is blocked in this thread across the clone (the child restores the
    // mask once its handlers are reset, so no handler runs on the shared memory); the child
    // runs `child_entry` on `stack` and this thread is suspended until it execs or exits,
    // while `prepared` and `stack` stay alive.
    let pid = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut prepared.mask);
        let pid = libc::clone(
            child_entry,
            top as *mut libc::c_void,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&prepared as *const Prepared<'_>).cast_mut().cast(),
        );
        let clone_errno = errno();
        libc::pthread_sigmask(libc::SIG_SETMASK, &prepared.mask, std::ptr::null_mut());
        if pid < 0 {
            return Err(SpawnError::Os(clone_errno, Stage::Fork));
        }
        pid
    };
    drop(stack);
    // The parent's copy of the write end goes, so that exec (or exit) means end of file.
    let read_end = ends[0];
    owned.0.retain(|&fd| fd != read_end);
    drop(owned);
    let mut buf = [0u8; REPORT_LEN];
    let mut got = 0;
    while got < REPORT_LEN {
        // SAFETY: reading into the unfilled tail of a local buffer.
        let n = unsafe { libc::read(read_end, buf[got..].as_mut_ptr().cast(), REPORT_LEN - got) };
        if n > 0 {
            got += n as usize;
        } else if n == 0 || errno() != libc::EINTR {
            break;
        }
    }
    // SAFETY: the read end was opened above and is closed once.
    unsafe { libc::close(read_end) };
    if got == 0 {
        return Ok(pid);
    }
    let mut status = 0;
    // SAFETY: reaping our own child, which has exited or is about to.
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0 && errno() == libc::EINTR {}
    if got < REPORT_LEN {
        return Err(SpawnError::Os(libc::EIO, Stage::Setup));
    }
    let err = i32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]);
    Err(SpawnError::Os(err, stage_of(buf[4])))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::request::test_support;
    use crate::process::request::Credentials;
    use std::ffi::CString;

    use test_support::wait;

    /// The shared test request, with a umask.
    fn request<'a>(argv: &'a [CString], exes: &'a [CString]) -> SpawnRequest<'a> {
        SpawnRequest {
            credentials: Credentials {
                umask: Some(0o077),
                ..Credentials::default()
            },
            ..test_support::request(argv, exes)
        }
    }

    #[test]
    fn umask_reaches_the_child() {
        let argv = [
            c"sh".to_owned(),
            c"-c".to_owned(),
            c"test $(umask) = 0077".to_owned(),
        ];
        let exes = [c"/bin/sh".to_owned()];
        let pid = spawn(&request(&argv, &exes)).unwrap();
        assert_eq!(wait(pid), 0);
    }

    #[test]
    fn missing_program_is_enoent_at_exec() {
        let argv = [c"nope".to_owned()];
        let exes = [c"/nonexistent/a".to_owned(), c"/nonexistent/b".to_owned()];
        assert_eq!(
            spawn(&request(&argv, &exes)),
            Err(SpawnError::Os(libc::ENOENT, Stage::Exec))
        );
    }

    #[test]
    fn missing_cwd_is_reported_as_chdir() {
        let argv = [c"true".to_owned()];
        let exes = [c"/bin/true".to_owned()];
        let mut req = request(&argv, &exes);
        req.cwd = Some(c"/nonexistent-dir");
        assert_eq!(spawn(&req), Err(SpawnError::Os(libc::ENOENT, Stage::Chdir)));
    }

    #[test]
    fn runs_with_the_parents_credentials_and_reports_exit_status() {
        let argv = [c"sh".to_owned(), c"-c".to_owned(), c"exit 3".to_owned()];
        let exes = [c"/bin/sh".to_owned()];
        let pid = spawn(&test_support::request(&argv, &exes)).unwrap();
        assert_eq!(wait(pid), 3);
    }

    #[test]
    fn bad_descriptor_is_a_setup_error() {
        let argv = [c"true".to_owned()];
        let exes = [c"/bin/true".to_owned()];
        let mut req = test_support::request(&argv, &exes);
        req.stdio[0] = Stdio::Fd(987_654);
        assert_eq!(spawn(&req), Err(SpawnError::Os(libc::EBADF, Stage::Setup)));
    }
}
