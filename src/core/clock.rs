//! The loop's clock: the one seam every time reading goes through.
//!
//! `loop.time()` must be on the same clock and scale as `time.monotonic()` (asyncio's contract):
//! on Linux and macOS both are `clock_gettime(CLOCK_MONOTONIC)`, in seconds as a float. A future
//! virtual clock for tests replaces [`Clock::now`] and nothing else.

/// The loop's time source.
#[derive(Debug, Default)]
pub struct Clock {
    _private: (),
}

/// The granularity the loop treats as "the same instant" when deciding which timers are due:
/// CLOCK_MONOTONIC's resolution, as `time.get_clock_info('monotonic').resolution` reports it.
pub const CLOCK_RESOLUTION: f64 = 1e-9;

impl Clock {
    /// Creates the real monotonic clock.
    pub fn new() -> Self {
        Clock { _private: () }
    }

    /// Seconds on the monotonic clock, as `time.monotonic()` gives them.
    #[inline]
    pub fn now(&self) -> f64 {
        monotonic_seconds()
    }
}

/// Reads CLOCK_MONOTONIC in seconds.
#[inline]
pub fn monotonic_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC is always supported on the
    // platforms we build for, so the call cannot fail.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_is_monotonic() {
        let clock = Clock::new();
        let a = clock.now();
        let b = clock.now();
        assert!(b >= a);
        assert!(a > 0.0);
    }
}
