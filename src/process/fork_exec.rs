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
//! caught signals back to their defaults (by the kernel with `clone3`'s `CLONE_CLEAR_SIGHAND`;
//! else by the child, with every signal blocked across the `clone` and the parent's mask
//! restored afterwards, so no Python handler runs in the child); `setsid`/`setpgid`;
//! `setgroups`, `setregid`, `setreuid`; `close_fds`; `execve` of each candidate in turn.
//! A failure stores errno and the failed stage in the parent's memory (the child shares it
//! until exec) and the child exits; the parent, which `CLONE_VFORK` keeps suspended until the
//! child has exec'd or exited, reads them, reaps the child and reports the error as `Popen`
//! does. No error pipe is needed for that: the shared memory is the report (glibc's
//! `posix_spawn` works the same way).
//!
//! What the parent pays per spawn is kept to the clone itself (bench/RESULTS.md, "spawn CPU"):
//! the child's pidfd comes with the clone (`CLONE_PIDFD`, no `pidfd_open` afterwards);
//! `/dev/null` is opened in the child (its descriptor goes at exec); the descriptor limit is
//! read only where `close_range(2)` is missing; the child's pipe ends, created non-blocking
//! for the parent's transports, are made blocking by the child; the child's stack is one
//! reused buffer per thread, not an allocation per spawn.
//!
//! The credential calls are raw system calls: they change only the calling task, the child
//! (the C library's wrappers would broadcast the change to the parent's threads).

use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU8, Ordering};

use crate::process::clone3;
use crate::process::request::{environment, pointers, SpawnError, SpawnRequest, Stage, Stdio};

/// Bytes of the child's stack (its frames are small: system calls on prepared data).
const CHILD_STACK: usize = 64 * 1024;

/// Marker in [`Prepared::stdio`]: the child's stderr is a copy of its stdout.
const AS_STDOUT: RawFd = -2;

/// Marker in [`Prepared::stdio`]: `/dev/null`, opened by the child.
const DEV_NULL: RawFd = -3;

/// Whether `clone` accepts `CLONE_PIDFD` here: unknown until the first spawn that asks.
static CLONE_PIDFD_STATE: AtomicU8 = AtomicU8::new(PIDFD_UNKNOWN);
const PIDFD_UNKNOWN: u8 = 0;
const PIDFD_WORKS: u8 = 1;
const PIDFD_REFUSED: u8 = 2;

thread_local! {
    /// The child's stack, one per spawning thread, reused: the thread is suspended while its
    /// child runs on it (`CLONE_VFORK`), so no two children share it. Never zeroed: the
    /// child's frames initialise what they use.
    static CHILD_STACK_BUF: RefCell<Box<[MaybeUninit<u8>]>> =
        RefCell::new(Box::new_uninit_slice(CHILD_STACK));
}

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

/// A failed child's report, written by the child into the parent's memory before it exits.
struct Report {
    /// errno of the failure (0: none, the child exec'd).
    errno: AtomicI32,
    /// [`stage_code`] of the failed step.
    stage: AtomicU8,
}

/// What the child needs, all computed before the fork.
struct Prepared<'a> {
    request: &'a SpawnRequest<'a>,
    argv: Vec<*mut libc::c_char>,
    envp: *const *mut libc::c_char,
    /// Source of the child's 0, 1, 2: a descriptor, -1 (inherit), [`AS_STDOUT`] or
    /// [`DEV_NULL`].
    stdio: [RawFd; 3],
    /// Pipe ends the parent created non-blocking, which the child makes blocking (-1: none).
    make_blocking: [RawFd; 3],
    /// Descriptors above 2 that `close_fds` keeps, sorted (pass_fds).
    keep: Vec<RawFd>,
    /// Where a failing child reports why.
    report: Report,
    /// The kernel has reset the child's caught signals (`clone3` with
    /// `CLONE_CLEAR_SIGHAND`): the child need not, and the parent did not block its
    /// signals across the clone (the child already has the parent's mask).
    handlers_cleared: AtomicBool,
    /// The parent's signal mask, restored in the child before exec (only after a plain
    /// `clone`, across which the parent blocked every signal).
    mask: libc::sigset_t,
}

/// The child's entry point on its own stack; `arg` is the parent's [`Prepared`].
extern "C" fn child_entry(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` points to the `Prepared` of `spawn`, alive while the parent is suspended.
    let prepared = unsafe { &*(arg as *const Prepared<'_>) };
    child(prepared)
}

/// Stores the failure in the parent's memory and ends the child.
fn fail(p: &Prepared<'_>, err: i32, stage: Stage) -> ! {
    p.report.stage.store(stage_code(stage), Ordering::Relaxed);
    // Release: the parent reads the stage after it sees the errno.
    p.report.errno.store(err.max(1), Ordering::Release);
    // SAFETY: _exit is async-signal-safe and ends only this child.
    unsafe { libc::_exit(255) }
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

/// Highest descriptor number closed one by one when `close_range(2)` is missing: the
/// descriptor limit (capped), read in the child only on that path.
fn max_fd() -> RawFd {
    // SAFETY: getrlimit fills a local structure.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur.min(1 << 20) as RawFd
        } else {
            65_536
        }
    }
}

/// Closes descriptors `low..=high` (close_range, or one by one without it).
fn close_between(low: RawFd, high: RawFd) {
    if low > high {
        return;
    }
    // SAFETY: close_range only closes this process's descriptors in the range.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, low as u32, high as u32, 0u32) };
    if rc == 0 {
        return;
    }
    for fd in low..=high.min(max_fd()) {
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
    for &fd in &p.make_blocking {
        // SAFETY: F_SETFL on a pipe end created by the parent (its only status flag is
        // O_NONBLOCK, cleared here; the parent's end is a separate open file).
        if fd >= 0 && unsafe { libc::fcntl(fd, libc::F_SETFL, 0) } < 0 {
            fail(p, errno(), Stage::Setup);
        }
    }
    let mut stdio = p.stdio;
    if stdio.contains(&DEV_NULL) {
        // Close-on-exec: only the copies made into 0..2 below outlive the exec.
        // SAFETY: opening a NUL-terminated literal path.
        let null = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        if null < 0 {
            fail(p, errno(), Stage::Fork);
        }
        for source in stdio.iter_mut().filter(|source| **source == DEV_NULL) {
            *source = null;
        }
    }
    // A source among 0..2 other than its target could be overwritten by an earlier dup2.
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
        // After the plain `clone` only (after `clone3`, `CLONE_CLEAR_SIGHAND` had the kernel
        // reset the handlers, and the mask was never changed): a caught signal would run the
        // parent's handler (Python's) in the child, so back to the default, as exec would
        // set it anyway (ignored signals stay ignored); then the parent's mask back, blocked
        // across the clone (see `clone_blocked`).
        if !p.handlers_cleared.load(Ordering::Relaxed) {
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
            close_between(low, keep - 1);
            low = keep + 1;
        }
        close_between(low, RawFd::MAX);
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

/// A started child: its pid and, when asked for and the kernel gives one, its pidfd.
#[derive(Debug, PartialEq, Eq)]
pub struct Spawned {
    /// The child's pid.
    pub pid: libc::pid_t,
    /// Its pidfd (close-on-exec; the caller owns it), or -1.
    pub pidfd: RawFd,
}

/// `clone(CLONE_VM | CLONE_VFORK)` running `child_entry(prepared)` on `stack`, with the
/// child's pidfd in `pidfd` if `flags` has `CLONE_PIDFD`: the pid, or errno.
///
/// # Safety
/// `prepared` and `stack` must stay alive until this returns (the parent is suspended until
/// the child execs or exits); every signal must be blocked in this thread.
unsafe fn clone_child(
    prepared: &Prepared<'_>,
    stack: &mut [MaybeUninit<u8>],
    flags: libc::c_int,
    pidfd: &mut libc::c_int,
) -> Result<libc::pid_t, i32> {
    // The stack grows down from its 16-byte aligned top.
    let top = (stack.as_mut_ptr() as usize + stack.len()) & !15;
    // SAFETY: the caller's contract; `pidfd` is a valid int for the kernel to fill in.
    let pid = unsafe {
        libc::clone(
            child_entry,
            top as *mut libc::c_void,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD | flags,
            (prepared as *const Prepared<'_>).cast_mut().cast(),
            pidfd as *mut libc::c_int,
        )
    };
    if pid < 0 {
        Err(errno())
    } else {
        Ok(pid)
    }
}

/// Clones the child: with `clone3` where it works (the kernel resets the child's signal
/// handlers), else with `clone`; asking for its pidfd with the clone when `want_pidfd` and
/// the kernel accepts `CLONE_PIDFD` (Linux >= 5.2; a kernel that refuses it is asked no
/// more).
///
/// Signals are blocked across the plain `clone` only (`clone_blocked`): after `clone3` with
/// `CLONE_CLEAR_SIGHAND` the child has no handler of the parent's that a signal could run on
/// the shared memory (caught signals are back to their defaults from its first instruction,
/// and it runs on its own stack), so the parent's `rt_sigprocmask` before and after the clone
/// and the child's before its exec are not needed: three system calls per spawn, two of them
/// while the parent waits for the child's exec (bench/RESULTS.md, "spawn3").
fn clone_with_pidfd(
    prepared: &mut Prepared<'_>,
    stack: &mut [MaybeUninit<u8>],
    want_pidfd: bool,
) -> Result<Spawned, i32> {
    if !clone3::refused() {
        let mut pidfd: libc::c_int = -1;
        prepared.handlers_cleared.store(true, Ordering::Relaxed);
        let arg = (prepared as *const Prepared<'_>).cast_mut().cast();
        // SAFETY: forwarded contract of `spawn` (`prepared`/`stack` alive until the child
        // has exec'd or exited); `child_entry` makes system calls only; the kernel clears
        // the child's signal handlers, so no signal needs blocking (see above).
        let cloned = unsafe {
            clone3::clone_vfork(child_entry, arg, stack, want_pidfd.then_some(&mut pidfd))
        };
        match cloned {
            Some(Ok(pid)) => return Ok(Spawned { pid, pidfd }),
            Some(Err(err)) => return Err(err),
            None => prepared.handlers_cleared.store(false, Ordering::Relaxed),
        }
    }
    // SAFETY: every signal is blocked in this thread across the clone (the child restores
    // the mask once it has reset its handlers, so no Python handler runs in the child on the
    // shared memory); `prepared` and `stack` stay alive while this thread is suspended.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut prepared.mask);
        let cloned = clone_blocked(prepared, stack, want_pidfd);
        libc::pthread_sigmask(libc::SIG_SETMASK, &prepared.mask, std::ptr::null_mut());
        cloned
    }
}

/// The plain `clone` (no `clone3`), with the pidfd where the kernel gives it.
///
/// # Safety
/// Every signal blocked in this thread; `prepared` and `stack` alive until the child has
/// exec'd or exited.
unsafe fn clone_blocked(
    prepared: &Prepared<'_>,
    stack: &mut [MaybeUninit<u8>],
    want_pidfd: bool,
) -> Result<Spawned, i32> {
    let mut pidfd: libc::c_int = -1;
    let state = CLONE_PIDFD_STATE.load(Ordering::Relaxed);
    if want_pidfd && state != PIDFD_REFUSED {
        // SAFETY: forwarded contract of `spawn` (signals blocked, `prepared`/`stack` alive).
        match unsafe { clone_child(prepared, stack, libc::CLONE_PIDFD, &mut pidfd) } {
            Ok(pid) => {
                // A kernel older than 5.2 ignores the flag: no pidfd written.
                let got = if pidfd >= 0 {
                    PIDFD_WORKS
                } else {
                    PIDFD_REFUSED
                };
                CLONE_PIDFD_STATE.store(got, Ordering::Relaxed);
                return Ok(Spawned { pid, pidfd });
            }
            Err(libc::EINVAL) if state == PIDFD_UNKNOWN => {
                CLONE_PIDFD_STATE.store(PIDFD_REFUSED, Ordering::Relaxed);
            }
            Err(err) => return Err(err),
        }
    }
    pidfd = -1;
    // SAFETY: as above.
    let pid = unsafe { clone_child(prepared, stack, 0, &mut pidfd) }?;
    Ok(Spawned { pid, pidfd: -1 })
}

/// Starts the child with a vfork-style clone and exec: its pid (and pidfd if
/// `request.pidfd`), or why it could not be started.
pub fn spawn(request: &SpawnRequest<'_>) -> Result<Spawned, SpawnError> {
    let mut stdio = [-1; 3];
    let mut make_blocking = [-1; 3];
    for ((slot, blocking), source) in stdio
        .iter_mut()
        .zip(make_blocking.iter_mut())
        .zip(request.stdio)
    {
        *slot = match source {
            Stdio::Inherit => -1,
            Stdio::Fd(fd) => fd,
            Stdio::Pipe(fd) => {
                *blocking = fd;
                fd
            }
            Stdio::SameAsStdout => AS_STDOUT,
            Stdio::DevNull => DEV_NULL,
        };
    }
    let mut keep: Vec<RawFd> = request
        .pass_fds
        .iter()
        .copied()
        .filter(|&fd| fd >= 3)
        .collect();
    keep.sort_unstable();
    keep.dedup();
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
        make_blocking,
        keep,
        report: Report {
            errno: AtomicI32::new(0),
            stage: AtomicU8::new(0),
        },
        handlers_cleared: AtomicBool::new(false),
        // SAFETY: an all-zero sigset_t is valid; pthread_sigmask fills it below.
        mask: unsafe { std::mem::zeroed() },
    };
    let cloned = CHILD_STACK_BUF.with(|buf| {
        let mut fresh;
        let mut reused = buf.try_borrow_mut();
        let stack: &mut [MaybeUninit<u8>] = match reused.as_deref_mut() {
            Ok(stack) => stack,
            // Not reachable (this thread is suspended while its child runs): a stack of
            // its own all the same.
            Err(_) => {
                fresh = Box::new_uninit_slice(CHILD_STACK);
                &mut fresh
            }
        };
        // The child runs `child_entry` on `stack` and this thread is suspended until it
        // execs or exits, while `prepared` and `stack` stay alive.
        clone_with_pidfd(&mut prepared, stack, request.pidfd)
    });
    let spawned = cloned.map_err(|err| SpawnError::Os(err, Stage::Fork))?;
    // The child has exec'd (or exited): what it reported, if anything, is in `report`.
    let err = prepared.report.errno.load(Ordering::Acquire);
    if err == 0 {
        return Ok(spawned);
    }
    let stage = stage_of(prepared.report.stage.load(Ordering::Relaxed));
    if spawned.pidfd >= 0 {
        // SAFETY: the pidfd was returned by clone and is closed once.
        unsafe { libc::close(spawned.pidfd) };
    }
    let mut status = 0;
    // SAFETY: reaping our own child, which has exited or is about to.
    while unsafe { libc::waitpid(spawned.pid, &mut status, 0) } < 0 && errno() == libc::EINTR {}
    Err(SpawnError::Os(err, stage))
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
        let pid = spawn(&request(&argv, &exes)).unwrap().pid;
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
        let pid = spawn(&test_support::request(&argv, &exes)).unwrap().pid;
        assert_eq!(wait(pid), 3);
    }

    #[test]
    fn pidfd_comes_with_the_clone_when_asked_for() {
        let argv = [c"true".to_owned()];
        let exes = [c"/bin/true".to_owned()];
        let mut req = test_support::request(&argv, &exes);
        let plain = spawn(&req).unwrap();
        assert_eq!(plain.pidfd, -1);
        assert_eq!(wait(plain.pid), 0);
        req.pidfd = true;
        let spawned = spawn(&req).unwrap();
        assert!(spawned.pidfd >= 0, "no pidfd from CLONE_PIDFD");
        // The pidfd names the child: its readiness is the child's exit, its reap the status.
        let mut poll = libc::pollfd {
            fd: spawned.pidfd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: polling one valid descriptor.
        assert_eq!(unsafe { libc::poll(&mut poll, 1, 10_000) }, 1);
        let code = crate::process::exit_status::reap_pidfd(spawned.pidfd).unwrap();
        assert_eq!(code, Some(0));
        // SAFETY: closing the pidfd this test owns.
        unsafe { libc::close(spawned.pidfd) };
    }

    #[test]
    fn child_pipe_end_is_made_blocking_and_parent_end_stays_non_blocking() {
        let mut ends = [0; 2];
        // SAFETY: pipe2 writes two new descriptors into `ends`.
        let made = unsafe { libc::pipe2(ends.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) };
        assert_eq!(made, 0);
        let argv = [c"true".to_owned()];
        let exes = [c"/bin/true".to_owned()];
        let mut req = test_support::request(&argv, &exes);
        req.stdio[1] = Stdio::Pipe(ends[1]);
        let pid = spawn(&req).unwrap().pid;
        assert_eq!(wait(pid), 0);
        // SAFETY: reading the status flags of the two ends.
        let (read_flags, write_flags) = unsafe {
            (
                libc::fcntl(ends[0], libc::F_GETFL),
                libc::fcntl(ends[1], libc::F_GETFL),
            )
        };
        assert_ne!(read_flags & libc::O_NONBLOCK, 0);
        assert_eq!(write_flags & libc::O_NONBLOCK, 0);
        for fd in ends {
            // SAFETY: closing the test's own descriptors.
            unsafe { libc::close(fd) };
        }
    }

    #[test]
    fn devnull_is_opened_by_the_child() {
        let argv = [c"sh".to_owned(), c"-c".to_owned(), c"read line".to_owned()];
        let exes = [c"/bin/sh".to_owned()];
        let pid = spawn(&test_support::request(&argv, &exes)).unwrap().pid;
        // `read` at /dev/null's end of file fails: the exit status is 1, not a hang.
        assert_eq!(wait(pid), 1);
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
