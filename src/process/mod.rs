//! Child processes: watching a child the loop started until it exits, and reaping it.
//!
//! The layer above [`crate::event_loop`] and [`crate::transport`]: the child's pipes are the
//! loop's pipe transports. What is here must not cost anything to a program that never spawns,
//! and must never touch a child the loop did not start:
//! - [`request`]: what a spawn asks for and how it fails; [`fork_exec`]: starting a child
//!   with a vfork-style clone and exec, set up as `subprocess.Popen` sets it up (no Python),
//!   `user`, `group`, `extra_groups` and `umask` included ([`clone3`]: its clone, with the
//!   child's signal handlers reset by the kernel); [`spawn`]: `spawn_child`, its
//!   Python entry point (pipes, errors as `Popen` raises them). `preexec_fn` (Python in the child) goes through
//!   `subprocess.Popen` (`python/ferroloop/_spawn.py`);
//! - [`exit_status`]: the system calls, no Python: `pidfd_open(2)`, `waitid(P_PIDFD)` (reap,
//!   or peek with `WNOWAIT`), `pidfd_send_signal(2)`, `waitpid(pid)`; a wait status as
//!   asyncio's returncode (exit status, or `-signum`);
//! - [`child_watch`]: `ChildWatch`, one per child: its pidfd, watched with the loop's reader
//!   machinery (readable = exited), reaped exactly once; when `pidfd_open` fails (no kernel
//!   support: `ENOSYS`/`EPERM`; or no descriptor to spare), a blocking `waitpid(pid)` for a
//!   waiter thread (asyncio's `ThreadedChildWatcher` design).
//!
//! There is no SIGCHLD handler and no thread per child on Linux >= 5.3.

pub mod child_watch;
pub mod clone3;
pub mod exit_status;
pub mod fork_exec;
pub mod request;
pub mod spawn;
