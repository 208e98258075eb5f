//! The loop's clock: the one seam every time reading goes through.
//!
//! `loop.time()` must be on the same clock and scale as `time.monotonic()` (asyncio's contract):
//! on Linux and macOS both are `clock_gettime(CLOCK_MONOTONIC)`, in seconds as a float.
//!
//! A loop made with `virtual_time=True` reads a virtual clock instead (issue #12): it starts at
//! 0.0 and moves only when the loop would otherwise wait for its next timer (an *autojump*, see
//! [`plan_virtual_wait`]) or by hand (`loop.advance_time`). Tests that sleep for an hour then
//! finish in milliseconds, with every timer firing at exactly its deadline. The mode is one
//! relaxed atomic load on each reading, so a real-time loop pays nothing measurable for it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The loop's time source: the monotonic clock, or a virtual one.
#[derive(Debug, Default)]
pub struct Clock {
    /// Virtual time is on (set once, before the loop runs).
    virtual_mode: AtomicBool,
    /// The virtual reading, as `f64` bits (written by the loop thread and `advance_time`).
    virtual_now: AtomicU64,
    /// Real seconds the loop waits for I/O before it jumps to the next timer, as `f64` bits.
    autojump_threshold: AtomicU64,
}

/// The granularity the loop treats as "the same instant" when deciding which timers are due:
/// CLOCK_MONOTONIC's resolution, as `time.get_clock_info('monotonic').resolution` reports it.
pub const CLOCK_RESOLUTION: f64 = 1e-9;

/// Why a virtual-time setting was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VirtualTimeError {
    /// The threshold is negative or NaN.
    BadThreshold,
    /// The step is negative, NaN or infinite.
    BadStep,
}

impl Clock {
    /// Creates the real monotonic clock.
    pub fn new() -> Self {
        Clock::default()
    }

    /// Switches to virtual time, reading 0.0, with the given autojump threshold (real
    /// seconds; `f64::INFINITY`: time moves only by hand).
    pub fn enable_virtual(&self, autojump_threshold: f64) -> Result<(), VirtualTimeError> {
        if autojump_threshold.is_nan() || autojump_threshold < 0.0 {
            return Err(VirtualTimeError::BadThreshold);
        }
        self.virtual_now.store(0f64.to_bits(), Ordering::Relaxed);
        self.autojump_threshold
            .store(autojump_threshold.to_bits(), Ordering::Relaxed);
        self.virtual_mode.store(true, Ordering::Release);
        Ok(())
    }

    /// True when the clock is virtual.
    #[inline]
    pub fn is_virtual(&self) -> bool {
        self.virtual_mode.load(Ordering::Relaxed)
    }

    /// The autojump threshold in real seconds (meaningful in virtual mode only).
    pub fn autojump_threshold(&self) -> f64 {
        f64::from_bits(self.autojump_threshold.load(Ordering::Relaxed))
    }

    /// Seconds on the loop's clock: `time.monotonic()`'s, or the virtual reading.
    #[inline]
    pub fn now(&self) -> f64 {
        if self.is_virtual() {
            f64::from_bits(self.virtual_now.load(Ordering::Acquire))
        } else {
            monotonic_seconds()
        }
    }

    /// Moves the virtual clock forward by `seconds` (a no-op step of 0 is allowed).
    pub fn advance(&self, seconds: f64) -> Result<(), VirtualTimeError> {
        if !seconds.is_finite() || seconds < 0.0 {
            return Err(VirtualTimeError::BadStep);
        }
        let _ = self
            .virtual_now
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |bits| {
                Some((f64::from_bits(bits) + seconds).to_bits())
            });
        Ok(())
    }

    /// Moves the virtual clock to `when` if that is later than its reading (an autojump).
    pub fn jump_to(&self, when: f64) {
        let _ = self
            .virtual_now
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |bits| {
                (when > f64::from_bits(bits)).then_some(when.to_bits())
            });
    }
}

/// What the loop does when it would wait, in virtual time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VirtualWait {
    /// How long to wait for I/O in real seconds (`None`: until something happens).
    pub real_timeout: Option<f64>,
    /// Where the clock jumps if that wait reports nothing (`None`: no jump).
    pub jump_to: Option<f64>,
}

/// Plans a wait in virtual time, given the virtual reading `now`, the next timer's deadline,
/// the autojump threshold, the real-time cap of one wait, and whether work outside the loop
/// (an executor job, a thread) is outstanding.
///
/// - a timer already due: no wait, no jump;
/// - no timer: wait for I/O as long as it takes (nothing to jump to);
/// - outstanding work: wait for it in real time (the clock must not pass it);
/// - otherwise wait `threshold` real seconds for I/O, then jump to the deadline. A threshold
///   beyond the cap (infinity included) never jumps: time then moves only by hand.
pub fn plan_virtual_wait(
    now: f64,
    next_deadline: Option<f64>,
    threshold: f64,
    max_wait: f64,
    outstanding_work: bool,
) -> VirtualWait {
    let idle = VirtualWait {
        real_timeout: None,
        jump_to: None,
    };
    let Some(deadline) = next_deadline else {
        return idle;
    };
    // A NaN deadline (or reading) is due at once, as in asyncio.
    if deadline <= now + CLOCK_RESOLUTION || deadline.is_nan() || now.is_nan() {
        return VirtualWait {
            real_timeout: Some(0.0),
            jump_to: None,
        };
    }
    if outstanding_work || threshold > max_wait {
        return idle;
    }
    VirtualWait {
        real_timeout: Some(threshold),
        jump_to: Some(deadline),
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

    const DAY: f64 = 86400.0;

    #[test]
    fn a_nan_deadline_is_due_at_once() {
        let plan = plan_virtual_wait(5.0, Some(f64::NAN), 0.1, DAY, false);
        assert_eq!(plan.real_timeout, Some(0.0));
        assert_eq!(plan.jump_to, None);
    }

    #[test]
    fn clock_is_monotonic() {
        let clock = Clock::new();
        let a = clock.now();
        let b = clock.now();
        assert!(b >= a);
        assert!(a > 0.0);
        assert!(!clock.is_virtual());
    }

    #[test]
    fn virtual_clock_starts_at_zero_and_moves_only_when_told() {
        let clock = Clock::new();
        clock.enable_virtual(0.0).unwrap();
        assert!(clock.is_virtual());
        assert_eq!(clock.now(), 0.0);
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert_eq!(clock.now(), 0.0);
        clock.advance(1.5).unwrap();
        assert_eq!(clock.now(), 1.5);
        clock.jump_to(3600.0);
        assert_eq!(clock.now(), 3600.0);
        clock.jump_to(10.0); // never backwards
        assert_eq!(clock.now(), 3600.0);
        clock.advance(0.0).unwrap();
        assert_eq!(clock.now(), 3600.0);
    }

    #[test]
    fn bad_steps_and_thresholds_are_refused() {
        let clock = Clock::new();
        assert_eq!(
            clock.enable_virtual(-1.0),
            Err(VirtualTimeError::BadThreshold)
        );
        assert_eq!(
            clock.enable_virtual(f64::NAN),
            Err(VirtualTimeError::BadThreshold)
        );
        assert!(!clock.is_virtual());
        clock.enable_virtual(f64::INFINITY).unwrap();
        assert_eq!(clock.autojump_threshold(), f64::INFINITY);
        for step in [-0.5, f64::NAN, f64::INFINITY] {
            assert_eq!(clock.advance(step), Err(VirtualTimeError::BadStep));
        }
        assert_eq!(clock.now(), 0.0);
    }

    #[test]
    fn plan_jumps_to_the_next_deadline_after_the_threshold() {
        let plan = plan_virtual_wait(5.0, Some(65.0), 0.0, DAY, false);
        assert_eq!(plan.real_timeout, Some(0.0));
        assert_eq!(plan.jump_to, Some(65.0));
        let plan = plan_virtual_wait(5.0, Some(65.0), 0.25, DAY, false);
        assert_eq!(plan.real_timeout, Some(0.25));
        assert_eq!(plan.jump_to, Some(65.0));
    }

    #[test]
    fn plan_runs_due_timers_without_waiting() {
        let plan = plan_virtual_wait(5.0, Some(5.0), 0.25, DAY, false);
        assert_eq!(plan.real_timeout, Some(0.0));
        assert_eq!(plan.jump_to, None);
        let plan = plan_virtual_wait(5.0, Some(4.0), 0.25, DAY, true);
        assert_eq!(plan.real_timeout, Some(0.0));
        assert_eq!(plan.jump_to, None);
    }

    #[test]
    fn plan_waits_for_io_when_nothing_is_scheduled_or_work_is_outstanding() {
        let idle = VirtualWait {
            real_timeout: None,
            jump_to: None,
        };
        assert_eq!(plan_virtual_wait(5.0, None, 0.0, DAY, false), idle);
        assert_eq!(plan_virtual_wait(5.0, Some(10.0), 0.0, DAY, true), idle);
    }

    #[test]
    fn plan_never_jumps_with_an_infinite_threshold() {
        let plan = plan_virtual_wait(0.0, Some(1.0), f64::INFINITY, DAY, false);
        assert_eq!(plan.real_timeout, None);
        assert_eq!(plan.jump_to, None);
    }
}
