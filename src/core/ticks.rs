//! A cheap tick counter for timing the loop's blocking polls (`idle_time`/`busy_time` of
//! `loop.stats()`), read twice around every poll that blocks.
//!
//! `clock_gettime(CLOCK_MONOTONIC)` costs a call into the vDSO and some arithmetic per reading
//! (and, under a profiler such as valgrind, a system call); on a server that blocks in the
//! poll for every request, two of them per request were over 1 % of its instructions. On
//! x86_64 with an invariant TSC (constant rate, ticking in every power state: what Linux's own
//! clock uses there) the counter is read with one `rdtsc` instead. Elsewhere (other
//! architectures, a CPU or hypervisor that does not promise an invariant TSC, Miri) the ticks
//! are CLOCK_MONOTONIC's nanoseconds.
//!
//! Ticks have no fixed unit: a count of ticks is turned into seconds by the ratio of
//! monotonic seconds to ticks over a span both were read across (see [`ticks_to_seconds`]),
//! so no TSC frequency has to be known. The counter is only ever used for differences.

use std::sync::atomic::{AtomicU8, Ordering};

use crate::core::clock::monotonic_seconds;

/// Not yet decided which source ticks come from.
const UNDECIDED: u8 = 0;
/// Ticks are the TSC.
const TSC: u8 = 1;
/// Ticks are CLOCK_MONOTONIC nanoseconds.
const MONOTONIC: u8 = 2;

/// Which source [`ticks`] reads (decided on the first reading, the same for the whole
/// process).
static SOURCE: AtomicU8 = AtomicU8::new(UNDECIDED);

/// Reads the tick counter.
#[inline]
pub fn ticks() -> u64 {
    match SOURCE.load(Ordering::Relaxed) {
        TSC => read_tsc(),
        MONOTONIC => monotonic_nanos(),
        _ => first_reading(),
    }
}

/// The first reading: decides the source.
#[cold]
#[inline(never)]
fn first_reading() -> u64 {
    let source = if invariant_tsc() { TSC } else { MONOTONIC };
    SOURCE.store(source, Ordering::Relaxed);
    ticks()
}

/// `ticks` ticks in seconds, by the rate measured over a span: `span_seconds` monotonic
/// seconds during which `span_ticks` ticks passed (0 ticks: 0 seconds).
#[inline]
pub fn ticks_to_seconds(ticks: u64, span_ticks: u64, span_seconds: f64) -> f64 {
    if span_ticks == 0 {
        return 0.0;
    }
    ticks as f64 * (span_seconds.max(0.0) / span_ticks as f64)
}

/// A reading of both clocks at (nearly) the same instant: monotonic seconds, and ticks.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Reading {
    /// CLOCK_MONOTONIC seconds.
    pub seconds: f64,
    /// [`ticks`].
    pub ticks: u64,
}

impl Reading {
    /// Reads both clocks now.
    pub fn now() -> Self {
        let ticks = ticks();
        Reading {
            seconds: monotonic_seconds(),
            ticks,
        }
    }
}

/// CLOCK_MONOTONIC in nanoseconds.
#[inline]
fn monotonic_nanos() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC is always supported on the
    // platforms we build for.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    }
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

/// The time stamp counter.
#[cfg(all(target_arch = "x86_64", not(miri)))]
#[inline]
fn read_tsc() -> u64 {
    // SAFETY: `rdtsc` reads a counter and has no other effect; `invariant_tsc` checked that
    // the CPU has it (every x86_64 CPU does).
    #[allow(unused_unsafe)]
    unsafe {
        std::arch::x86_64::_rdtsc()
    }
}

/// No TSC here: never chosen (see `invariant_tsc`).
#[cfg(not(all(target_arch = "x86_64", not(miri))))]
#[inline]
fn read_tsc() -> u64 {
    monotonic_nanos()
}

/// True if the CPU says its TSC is invariant (CPUID leaf 0x8000_0007, EDX bit 8).
#[cfg(all(target_arch = "x86_64", not(miri)))]
fn invariant_tsc() -> bool {
    use std::arch::x86_64::__cpuid;
    // SAFETY: CPUID exists on every x86_64 CPU; the extended leaf is asked only if the
    // highest extended leaf reported covers it.
    #[allow(unused_unsafe)]
    unsafe {
        let highest = __cpuid(0x8000_0000).eax;
        highest >= 0x8000_0007 && __cpuid(0x8000_0007).edx & (1 << 8) != 0
    }
}

/// Not x86_64 (or Miri): ticks are CLOCK_MONOTONIC nanoseconds.
#[cfg(not(all(target_arch = "x86_64", not(miri))))]
fn invariant_tsc() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_advance_and_convert_to_seconds() {
        let start = Reading::now();
        let spin = std::time::Instant::now();
        while spin.elapsed() < std::time::Duration::from_millis(20) {}
        let end = Reading::now();
        assert!(end.ticks > start.ticks);
        let span = end.ticks - start.ticks;
        let seconds = end.seconds - start.seconds;
        // The whole span converts to its own length; a half to half of it.
        assert!((ticks_to_seconds(span, span, seconds) - seconds).abs() < 1e-12);
        assert!((ticks_to_seconds(span / 2, span, seconds) - seconds / 2.0).abs() < 1e-6);
        assert_eq!(ticks_to_seconds(5, 0, 1.0), 0.0);
    }
}
