//! Waiting on a 32-bit atomic word with the kernel's futex, without a mutex around it.
//!
//! `std`'s `Condvar` needs a `Mutex` that every waiter takes back when it wakes: when the loop
//! wakes two posting threads at once (`post_gate`), they wake into a contended mutex, one more
//! wait and wake each time (measured: ~10% of the futex calls of a two-thread post race). A
//! futex on the word itself needs no lock: `FUTEX_WAIT` sleeps only while the word still holds
//! the value the waiter saw, checked atomically in the kernel, so a change made after the
//! waiter's last look (and the wake that follows it) is never missed.

use std::sync::atomic::AtomicU32;
use std::time::Duration;

/// Sleeps while `word` holds `expected`, for at most `timeout`; returns early (and spuriously)
/// like any futex wait: the caller re-checks its condition.
pub fn wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let spec = libc::timespec {
        tv_sec: timeout.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `word` is a valid, aligned 32-bit atomic for the call's duration; `spec` is a
    // valid relative timeout; the process-private futex word is only used by this module.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            &spec as *const libc::timespec,
        );
    }
}

/// Wakes every thread waiting on `word`.
pub fn wake_all(word: &AtomicU32) {
    // SAFETY: `word` is a valid, aligned 32-bit atomic; FUTEX_WAKE only reads its address.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            i32::MAX,
        );
    }
}
