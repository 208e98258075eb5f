//! `clone3(2)` for the vfork-style spawn of [`crate::process::fork_exec`], with the child's
//! signal handlers reset by the kernel (`CLONE_CLEAR_SIGHAND`, Linux >= 5.5) and its pidfd
//! returned with the clone (`CLONE_PIDFD`).
//!
//! Why: a child must not run the parent's (Python's) signal handlers between its clone and
//! its exec, so every caught signal goes back to its default action first. Done by the child
//! that is 64 `sigaction` reads (and a write per caught signal) while the parent is suspended
//! (`CLONE_VFORK`): wall time of every spawn. `CLONE_CLEAR_SIGHAND` makes the kernel do the
//! same thing (caught signals to their default, ignored ones left ignored) while it copies
//! the handler table.
//!
//! glibc has no `clone3` wrapper that starts a function on a new stack, so the system call is
//! made here with inline assembly (x86_64 only): in the child, which the kernel starts on the
//! given stack right after the `syscall` instruction, the entry function is called with its
//! argument and never returns (it execs or `_exit`s; should it return, the child exits with
//! its value). Elsewhere, or when the kernel refuses (`ENOSYS`: older than 5.3 or filtered by
//! seccomp; `EINVAL`: older than 5.5; `E2BIG`, `EPERM`), the caller falls back to the C
//! library's `clone` and resets the handlers in the child.

use std::sync::atomic::{AtomicU8, Ordering};

/// Whether `clone3` with these flags works here: unknown until the first spawn.
static CLONE3_STATE: AtomicU8 = AtomicU8::new(UNKNOWN);
const UNKNOWN: u8 = 0;
const WORKS: u8 = 1;
const REFUSED: u8 = 2;

/// `CLONE_CLEAR_SIGHAND` (linux/sched.h): caught signals to their default in the child.
#[cfg(target_arch = "x86_64")]
const CLONE_CLEAR_SIGHAND: u64 = 0x1_0000_0000;

/// `struct clone_args` (linux/sched.h), the size of its first version (`CLONE_ARGS_SIZE_VER0`
/// plus the three later fields, all zero here).
#[cfg(target_arch = "x86_64")]
#[repr(C)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// The entry point a child starts in: called with the argument, never returns.
pub type Entry = extern "C" fn(*mut libc::c_void) -> libc::c_int;

/// Whether `clone3` was refused here before (the caller then goes straight to `clone`).
pub fn refused() -> bool {
    CLONE3_STATE.load(Ordering::Relaxed) == REFUSED
}

/// `clone3(CLONE_VM | CLONE_VFORK | CLONE_CLEAR_SIGHAND [| CLONE_PIDFD])` running
/// `entry(arg)` on `stack` (exit signal SIGCHLD): the child's pid, or None if the kernel
/// refuses these flags (remembered: later calls return None at once), or errno.
///
/// # Safety
/// As for `clone(CLONE_VM | CLONE_VFORK)`: `arg` and `stack` must stay valid until this
/// returns (the caller is suspended until the child execs or exits); every signal should be
/// blocked in the calling thread; `entry` must only make async-signal-safe calls.
#[cfg(target_arch = "x86_64")]
pub unsafe fn clone_vfork(
    entry: Entry,
    arg: *mut libc::c_void,
    stack: &mut [std::mem::MaybeUninit<u8>],
    pidfd: Option<&mut libc::c_int>,
) -> Option<Result<libc::pid_t, i32>> {
    if refused() {
        return None;
    }
    let mut flags = (libc::CLONE_VM | libc::CLONE_VFORK) as u64 | CLONE_CLEAR_SIGHAND;
    let mut pidfd_address = 0u64;
    if let Some(pidfd) = pidfd {
        flags |= libc::CLONE_PIDFD as u64;
        pidfd_address = pidfd as *mut libc::c_int as u64;
    }
    // The kernel starts the child with its stack pointer at `stack + stack_size`.
    let args = CloneArgs {
        flags,
        pidfd: pidfd_address,
        child_tid: 0,
        parent_tid: 0,
        exit_signal: libc::SIGCHLD as u64,
        stack: stack.as_mut_ptr() as u64,
        stack_size: stack.len() as u64,
        tls: 0,
        set_tid: 0,
        set_tid_size: 0,
        cgroup: 0,
    };
    let ret: isize;
    // SAFETY: the caller's contract. The child resumes after `syscall` with the parent's
    // registers on its own stack: it aligns that stack, calls `entry(arg)` (held in
    // registers the system call preserves) and exits if it ever returns; it never reaches
    // the Rust code after the block. The parent gets the pid (or -errno) in rax, and sees
    // memory as the child left it (no `nomem`: memory is clobbered).
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "xor ebp, ebp",
            "and rsp, -16",
            "mov rdi, {arg}",
            "call {entry}",
            "mov edi, eax",
            "mov eax, 60",
            "syscall",
            "ud2",
            "2:",
            arg = in(reg) arg,
            entry = in(reg) entry,
            inlateout("rax") libc::SYS_clone3 as isize => ret,
            in("rdi") &args as *const CloneArgs,
            in("rsi") std::mem::size_of::<CloneArgs>(),
            // Not `lateout`: the inputs must not sit in the registers `syscall` clobbers.
            out("rcx") _,
            out("r11") _,
        );
    }
    if ret >= 0 {
        CLONE3_STATE.store(WORKS, Ordering::Relaxed);
        return Some(Ok(ret as libc::pid_t));
    }
    let err = (-ret) as i32;
    if CLONE3_STATE.load(Ordering::Relaxed) == UNKNOWN
        && matches!(err, libc::ENOSYS | libc::EINVAL | libc::E2BIG | libc::EPERM)
    {
        CLONE3_STATE.store(REFUSED, Ordering::Relaxed);
        return None;
    }
    Some(Err(err))
}

/// Not x86_64: no `clone3` here, the caller uses `clone`.
///
/// # Safety
/// Nothing is done.
#[cfg(not(target_arch = "x86_64"))]
pub unsafe fn clone_vfork(
    _entry: Entry,
    _arg: *mut libc::c_void,
    _stack: &mut [std::mem::MaybeUninit<u8>],
    _pidfd: Option<&mut libc::c_int>,
) -> Option<Result<libc::pid_t, i32>> {
    None
}
