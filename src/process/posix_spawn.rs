//! Starting a child with `posix_spawn(3)`, set up as `subprocess.Popen` sets it up, in plain
//! Rust (no Python).
//!
//! Why: `subprocess.Popen` spends most of the loop thread's time of a spawn in Python code
//! (argument checks, handle juggling, an error pipe read back with `os.read`) around a C
//! `vfork`. glibc's `posix_spawn` also uses `clone(CLONE_VM | CLONE_VFORK)` and reports an
//! exec failure through shared memory, so no error pipe is needed either.
//!
//! What `Popen`'s child does and how it is expressed here, in the same order:
//! - `pass_fds` made inheritable: `adddup2(fd, fd)` (clears close-on-exec);
//! - stdin/stdout/stderr: `adddup2(src, n)` (`src == n` clears close-on-exec), `/dev/null`
//!   opened read-write in the child, stderr as a copy of the child's stdout; a source among
//!   0..2 that an earlier `dup2` would overwrite is first copied above 2 in the parent;
//! - `cwd`: `addchdir_np`; `close_fds`: `addclose` for the gaps below the highest kept
//!   descriptor, then `addclosefrom_np`;
//! - `restore_signals`: SIGPIPE and SIGXFSZ back to their defaults (`POSIX_SPAWN_SETSIGDEF`,
//!   which also keeps glibc's two internal signals from reaching the program ignored);
//!   `start_new_session`: `POSIX_SPAWN_SETSID`; `process_group`: `POSIX_SPAWN_SETPGROUP`;
//! - exec: every candidate path in turn (`PATH` search done by the caller, as `Popen` does);
//!   the first error other than ENOENT/ENOTDIR is the one reported, else the last one.
//!
//! `addchdir_np` (glibc 2.29) and `addclosefrom_np` (glibc 2.34) are looked up at run time, so
//! the library still loads on an older C library: [`SpawnError::Unsupported`] then tells the
//! caller to use `subprocess.Popen`. Options `posix_spawn` cannot express (`user`, `group`,
//! `extra_groups`, `umask`: [`crate::process::fork_exec`]; `preexec_fn`: `subprocess.Popen`)
//! never reach this module.

use std::ffi::CStr;
use std::os::fd::RawFd;
use std::sync::OnceLock;

use crate::process::request::{environment, pointers, SpawnError, SpawnRequest, Stage, Stdio};

type AddChdir =
    unsafe extern "C" fn(*mut libc::posix_spawn_file_actions_t, *const libc::c_char) -> i32;
type AddCloseFrom = unsafe extern "C" fn(*mut libc::posix_spawn_file_actions_t, i32) -> i32;

/// Looks a C library function up by name (None if this C library lacks it).
fn lookup(name: &CStr) -> Option<usize> {
    // SAFETY: dlsym with RTLD_DEFAULT searches the loaded objects for a NUL-terminated name.
    let ptr = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
    (!ptr.is_null()).then_some(ptr as usize)
}

fn add_chdir() -> Option<AddChdir> {
    static FN: OnceLock<Option<usize>> = OnceLock::new();
    let addr = (*FN.get_or_init(|| lookup(c"posix_spawn_file_actions_addchdir_np")))?;
    // SAFETY: the symbol is glibc's posix_spawn_file_actions_addchdir_np, of this signature.
    Some(unsafe { std::mem::transmute::<usize, AddChdir>(addr) })
}

fn add_close_from() -> Option<AddCloseFrom> {
    static FN: OnceLock<Option<usize>> = OnceLock::new();
    let addr = (*FN.get_or_init(|| lookup(c"posix_spawn_file_actions_addclosefrom_np")))?;
    // SAFETY: the symbol is glibc's posix_spawn_file_actions_addclosefrom_np, of this signature.
    Some(unsafe { std::mem::transmute::<usize, AddCloseFrom>(addr) })
}

fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// Fails with `Stage::Setup` if a `posix_spawn_*` set-up call returned an error.
fn check(rc: i32) -> Result<(), SpawnError> {
    if rc == 0 {
        Ok(())
    } else {
        Err(SpawnError::Os(rc, Stage::Setup))
    }
}

/// The file actions and attributes of one spawn, destroyed on drop.
struct Plan {
    actions: libc::posix_spawn_file_actions_t,
    attr: libc::posix_spawnattr_t,
    /// Copies made in the parent (low descriptors moved out of the way), closed on drop.
    temporaries: Vec<RawFd>,
}

impl Plan {
    fn new() -> Box<Self> {
        // SAFETY: both types are plain C structs for which all-zero is a valid placeholder;
        // the init calls below fill them in before any other use.
        let mut plan = Box::new(unsafe {
            Plan {
                actions: std::mem::zeroed(),
                attr: std::mem::zeroed(),
                temporaries: Vec::new(),
            }
        });
        // SAFETY: initialising the freshly allocated structures (glibc's init cannot fail
        // for file actions; spawnattr_init only zeroes).
        unsafe {
            libc::posix_spawn_file_actions_init(&mut plan.actions);
            libc::posix_spawnattr_init(&mut plan.attr);
        }
        plan
    }

    fn dup2(&mut self, from: RawFd, to: RawFd) -> Result<(), SpawnError> {
        // SAFETY: `actions` was initialised in `new`.
        check(unsafe { libc::posix_spawn_file_actions_adddup2(&mut self.actions, from, to) })
    }

    fn close(&mut self, fd: RawFd) -> Result<(), SpawnError> {
        // SAFETY: `actions` was initialised in `new`.
        check(unsafe { libc::posix_spawn_file_actions_addclose(&mut self.actions, fd) })
    }

    fn dev_null(&mut self, to: RawFd) -> Result<(), SpawnError> {
        // SAFETY: `actions` was initialised in `new`; the path is a NUL-terminated literal.
        check(unsafe {
            libc::posix_spawn_file_actions_addopen(
                &mut self.actions,
                to,
                c"/dev/null".as_ptr(),
                libc::O_RDWR,
                0,
            )
        })
    }

    /// A copy of `fd` above 2 (close-on-exec), closed when the plan is dropped.
    fn copy_high(&mut self, fd: RawFd) -> Result<RawFd, SpawnError> {
        // SAFETY: F_DUPFD_CLOEXEC duplicates `fd` (validated by the caller) to a new number.
        let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
        if copy < 0 {
            return Err(SpawnError::Os(errno(), Stage::Setup));
        }
        self.temporaries.push(copy);
        Ok(copy)
    }
}

impl Drop for Plan {
    fn drop(&mut self) {
        // SAFETY: both were initialised in `new` and are destroyed once; the temporaries
        // are descriptors this plan created.
        unsafe {
            libc::posix_spawn_file_actions_destroy(&mut self.actions);
            libc::posix_spawnattr_destroy(&mut self.attr);
            for fd in &self.temporaries {
                libc::close(*fd);
            }
        }
    }
}

/// Whether `fd` is an open descriptor of this process (EBADF otherwise).
fn check_open(fd: RawFd) -> Result<(), SpawnError> {
    // SAFETY: F_GETFD only reads the descriptor's flags.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(SpawnError::Os(errno(), Stage::Setup));
    }
    Ok(())
}

/// Why the child could not change to `cwd`, if it could not (checked after a failure, as
/// `posix_spawn` reports only an errno, not which step failed).
fn chdir_error(cwd: &CStr) -> Option<i32> {
    // SAFETY: opening a NUL-terminated path, without following it into anything but a
    // directory; the descriptor is closed right away.
    let fd = unsafe {
        libc::open(
            cwd.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Some(errno());
    }
    // SAFETY: `fd` was just opened above.
    unsafe { libc::close(fd) };
    // SAFETY: access only reads the path's permissions.
    if unsafe { libc::access(cwd.as_ptr(), libc::X_OK) } < 0 {
        return Some(errno());
    }
    None
}

/// Whether a path names nothing (ENOENT/ENOTDIR): such a candidate would fail exec the same
/// way, so it is skipped without starting a child.
fn missing(path: &CStr) -> Option<i32> {
    // SAFETY: faccessat only reads the NUL-terminated path.
    if unsafe { libc::faccessat(libc::AT_FDCWD, path.as_ptr(), libc::F_OK, 0) } == 0 {
        return None;
    }
    let err = errno();
    matches!(err, libc::ENOENT | libc::ENOTDIR).then_some(err)
}

fn build(request: &SpawnRequest<'_>) -> Result<Box<Plan>, SpawnError> {
    let add_close_from = add_close_from();
    if request.close_fds && add_close_from.is_none() {
        return Err(SpawnError::Unsupported);
    }
    let add_chdir = match request.cwd {
        Some(_) => Some(add_chdir().ok_or(SpawnError::Unsupported)?),
        None => None,
    };
    let mut plan = Plan::new();
    for &fd in request.pass_fds {
        check_open(fd)?;
        plan.dup2(fd, fd)?;
    }
    for (target, source) in request.stdio.iter().enumerate() {
        let target = target as RawFd;
        match *source {
            Stdio::Inherit => {}
            Stdio::DevNull => plan.dev_null(target)?,
            Stdio::SameAsStdout => plan.dup2(1, target)?,
            Stdio::Fd(fd) => {
                check_open(fd)?;
                // A source among 0..2 other than the target may be overwritten by an earlier
                // dup2 (stdout taken from the parent's fd 0 after stdin was set): copy it.
                let fd = if fd < 3 && fd != target {
                    plan.copy_high(fd)?
                } else {
                    fd
                };
                plan.dup2(fd, target)?;
            }
        }
    }
    if let (Some(add_chdir), Some(cwd)) = (add_chdir, request.cwd) {
        // SAFETY: `actions` is initialised; `cwd` is NUL-terminated and glibc copies it.
        check(unsafe { add_chdir(&mut plan.actions, cwd.as_ptr()) })?;
    }
    if let (true, Some(add_close_from)) = (request.close_fds, add_close_from) {
        let mut next = 3;
        for &keep in request.pass_fds.iter().filter(|fd| **fd >= 3) {
            for fd in next..keep {
                plan.close(fd)?;
            }
            next = keep + 1;
        }
        // SAFETY: `actions` is initialised; closefrom of a valid descriptor number.
        check(unsafe { add_close_from(&mut plan.actions, next) })?;
    }
    // SAFETY: an all-zero sigset_t is valid; sigemptyset/sigaddset fill it in, and
    // setsigdefault copies it into the initialised attributes.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        if request.restore_signals {
            libc::sigaddset(&mut set, libc::SIGPIPE);
            libc::sigaddset(&mut set, libc::SIGXFSZ);
        }
        // glibc's child sets its two internal signals (32: thread cancellation, 33: set*id
        // broadcast) to SIG_IGN unless they are in this set, and an ignored signal stays
        // ignored across exec: the program would start with them ignored, where Popen's
        // child leaves them at their default. sigaddset refuses them, so their bits (signal
        // n is bit n - 1 of the first word) are set directly.
        let words = (&mut set as *mut libc::sigset_t).cast::<libc::c_ulong>();
        *words |= (1 << (32 - 1)) | (1 << (33 - 1));
        check(libc::posix_spawnattr_setsigdefault(&mut plan.attr, &set))?;
    }
    let mut flags = libc::POSIX_SPAWN_SETSIGDEF;
    if request.new_session {
        flags |= libc::POSIX_SPAWN_SETSID as i32;
    }
    if let Some(group) = request.process_group {
        // SAFETY: `attr` is initialised.
        check(unsafe { libc::posix_spawnattr_setpgroup(&mut plan.attr, group) })?;
        flags |= libc::POSIX_SPAWN_SETPGROUP;
    }
    // SAFETY: `attr` is initialised; the flags are glibc's POSIX_SPAWN_* bits.
    check(unsafe { libc::posix_spawnattr_setflags(&mut plan.attr, flags as libc::c_short) })?;
    Ok(plan)
}

/// Starts the child; its pid, or why it could not be started.
pub fn spawn(request: &SpawnRequest<'_>) -> Result<libc::pid_t, SpawnError> {
    let plan = build(request)?;
    let argv = pointers(request.argv);
    let envp_storage = request.envp.map(pointers);
    let envp = match &envp_storage {
        Some(list) => list.as_ptr(),
        None => environment(),
    };
    let mut first_other = 0;
    let mut last = libc::ENOENT;
    for executable in request.executables {
        // Without cwd a relative candidate is looked at from here, as the child would.
        if request.executables.len() > 1 && request.cwd.is_none() {
            if let Some(err) = missing(executable) {
                last = err;
                continue;
            }
        }
        let mut pid: libc::pid_t = 0;
        // SAFETY: every pointer is valid for the call: the plan's initialised actions and
        // attributes, NUL-terminated path, NULL-terminated argv/envp arrays whose strings
        // outlive the call.
        let rc = unsafe {
            libc::posix_spawn(
                &mut pid,
                executable.as_ptr(),
                &plan.actions,
                &plan.attr,
                argv.as_ptr(),
                envp,
            )
        };
        if rc == 0 {
            return Ok(pid);
        }
        if rc == libc::EAGAIN {
            return Err(SpawnError::Os(rc, Stage::Fork));
        }
        if let Some(err) = request.cwd.and_then(chdir_error) {
            return Err(SpawnError::Os(err, Stage::Chdir));
        }
        if first_other == 0 && rc != libc::ENOENT && rc != libc::ENOTDIR {
            first_other = rc;
        }
        last = rc;
    }
    let err = if first_other != 0 { first_other } else { last };
    Err(SpawnError::Os(err, Stage::Exec))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::request::test_support::{request, wait};

    #[test]
    fn runs_and_reports_exit_status() {
        let argv = [c"sh".to_owned(), c"-c".to_owned(), c"exit 3".to_owned()];
        let exes = [c"/bin/sh".to_owned()];
        let pid = spawn(&request(&argv, &exes)).unwrap();
        assert_eq!(wait(pid), 3);
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
        let cwd = c"/nonexistent-dir";
        let mut req = request(&argv, &exes);
        req.cwd = Some(cwd);
        assert_eq!(spawn(&req), Err(SpawnError::Os(libc::ENOENT, Stage::Chdir)));
    }

    #[test]
    fn bad_descriptor_is_a_setup_error() {
        let argv = [c"true".to_owned()];
        let exes = [c"/bin/true".to_owned()];
        let mut req = request(&argv, &exes);
        req.stdio[0] = Stdio::Fd(987_654);
        assert_eq!(spawn(&req), Err(SpawnError::Os(libc::EBADF, Stage::Setup)));
    }
}
