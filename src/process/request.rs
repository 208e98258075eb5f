//! What a spawn asks for, and how it fails: what `spawn_child` (`crate::process::spawn`)
//! hands to [`crate::process::fork_exec`], which starts the child.

use std::ffi::{CStr, CString};
use std::os::fd::RawFd;

/// Where one of the child's standard descriptors comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stdio {
    /// The parent's descriptor of the same number, left as it is.
    Inherit,
    /// A copy of this descriptor of the parent.
    Fd(RawFd),
    /// A copy of this end of a pipe made for the child, created non-blocking (for the
    /// parent's transport on the other end): the child makes it blocking before exec.
    Pipe(RawFd),
    /// `/dev/null`, opened read-write in the child.
    DevNull,
    /// A copy of the child's stdout (stderr only).
    SameAsStdout,
}

/// The step of the child's set-up that failed; `Popen` names a different file for each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Setting up descriptors or the session before exec.
    Setup,
    /// Changing to `cwd`.
    Chdir,
    /// Executing the program.
    Exec,
    /// Creating the process (`clone` refused: EAGAIN).
    Fork,
}

/// Why no child was started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpawnError {
    /// A system error (errno) at a stage.
    Os(i32, Stage),
}

/// Everything the child needs, already converted to C strings.
pub struct SpawnRequest<'a> {
    /// `argv` of the program.
    pub argv: &'a [CString],
    /// Paths to try in turn (one unless the program was looked up in `PATH`).
    pub executables: &'a [CString],
    /// `KEY=value` entries, or None for the parent's environment.
    pub envp: Option<&'a [CString]>,
    /// Directory to change to before exec.
    pub cwd: Option<&'a CStr>,
    /// Sources of the child's descriptors 0, 1 and 2.
    pub stdio: [Stdio; 3],
    /// Close every descriptor above 2 that is not in `pass_fds`.
    pub close_fds: bool,
    /// Descriptors the child keeps (made inheritable), sorted, without duplicates.
    pub pass_fds: &'a [RawFd],
    /// SIGPIPE and SIGXFSZ back to their default action.
    pub restore_signals: bool,
    /// `setsid()` in the child.
    pub new_session: bool,
    /// `setpgid(0, group)` in the child.
    pub process_group: Option<libc::pid_t>,
    /// Groups, user and umask of the child.
    pub credentials: Credentials<'a>,
    /// Ask for the child's pidfd with the clone (`CLONE_PIDFD`).
    pub pidfd: bool,
}

/// `extra_groups`, `group`, `user` and `umask` of `subprocess.Popen`, already resolved to
/// numbers; all None for a child that keeps the parent's.
#[derive(Clone, Copy, Debug, Default)]
pub struct Credentials<'a> {
    /// `setgroups(groups)`.
    pub groups: Option<&'a [libc::gid_t]>,
    /// `setregid(gid, gid)`.
    pub gid: Option<libc::gid_t>,
    /// `setreuid(uid, uid)`.
    pub uid: Option<libc::uid_t>,
    /// `umask(mask)`.
    pub umask: Option<libc::mode_t>,
}

/// A NULL-terminated array of pointers into `strings` (which must outlive it).
pub fn pointers(strings: &[CString]) -> Vec<*mut libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr() as *mut libc::c_char)
        .chain(std::iter::once(std::ptr::null_mut()))
        .collect()
}

extern "C" {
    static environ: *const *mut libc::c_char;
}

/// The C library's current environment (what `execv` passes on).
pub fn environment() -> *const *mut libc::c_char {
    // SAFETY: reading the C library's environment pointer, as execv would.
    unsafe { environ }
}

/// Helpers shared by the tests of the two ways a child is started.
#[cfg(test)]
pub(crate) mod test_support {
    use super::{Credentials, SpawnRequest, Stdio};
    use std::ffi::CString;

    /// Waits for our child `pid`; its exit status.
    pub(crate) fn wait(pid: libc::pid_t) -> i32 {
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        libc::WEXITSTATUS(status)
    }

    /// A request for `argv`, trying `exes` in turn: stdin and stdout on `/dev/null`, stderr
    /// as stdout, descriptors closed, signals restored, the parent's credentials.
    pub(crate) fn request<'a>(argv: &'a [CString], exes: &'a [CString]) -> SpawnRequest<'a> {
        SpawnRequest {
            argv,
            executables: exes,
            envp: None,
            cwd: None,
            stdio: [Stdio::DevNull, Stdio::DevNull, Stdio::SameAsStdout],
            close_fds: true,
            pass_fds: &[],
            restore_signals: true,
            new_session: false,
            process_group: None,
            credentials: Credentials::default(),
            pidfd: false,
        }
    }
}
