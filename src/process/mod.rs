//! Child processes: watching a child the loop started until it exits, and reaping it.
//!
//! The layer above [`crate::event_loop`] and [`crate::transport`]: spawning itself is done by
//! the Python edge (`python/ferroloop/_subprocess.py`, through `subprocess.Popen`, as asyncio
//! does), and the child's pipes are the loop's pipe transports. What is here is the part that
//! must not cost anything to a program that never spawns, and must never touch a child the loop
//! did not start:
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
pub mod exit_status;
