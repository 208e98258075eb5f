//! The domain layer: the loop's machinery in plain Rust, with no Python in it.
//!
//! Nothing here imports PyO3, so each piece is unit-tested with `cargo test` alone:
//! - [`clock`]: the loop's single time source (`CLOCK_MONOTONIC`, as `time.monotonic()`);
//! - [`timers`]: the deadline heap, ordered by deadline then scheduling order, with lazy purging
//!   of cancelled entries;
//! - [`direct_syscall`]: the per-request socket calls without glibc's cancellation wrappers;
//! - [`poller`]: epoll, the eventfd waker of `call_soon_threadsafe`, the signal wakeup pipe;
//! - [`loop_stats`]: the counters and lag window of `loop.stats()`;
//! - [`fault_inject`]: test-only failures of chosen system calls (ENFILE), inert unless armed;
//! - [`fd_map`]: maps keyed by file descriptor (a table indexed by it, in pages);
//! - [`futex`]: waiting on an atomic word without a mutex (the post gate's waits);
//! - [`ready_queue`]: the FIFO ring of ready callbacks (an inlined append);
//! - [`post_gate`]: backpressure for `call_soon_threadsafe` (posting threads wait for the loop
//!   once too many posts are pending);
//! - [`spare_budget`]: how many spare handles a loop keeps (follows the batches it takes);
//! - [`stall`]: the watchdog's stall detection (a callback generation sampled over time);
//! - [`ticks`]: a cheap tick counter (the TSC where invariant) timing the polls that block.

pub mod clock;
pub mod direct_syscall;
pub mod fault_inject;
pub mod fd_map;
pub mod futex;
pub mod loop_stats;
pub mod poller;
pub mod post_gate;
pub mod ready_queue;
pub mod spare_budget;
pub mod stall;
pub mod ticks;
pub mod timers;
