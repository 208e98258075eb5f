//! Stall detection for the watchdog, as plain arithmetic on samples.
//!
//! The loop publishes only a generation number per callback (0 between callbacks): reading
//! the clock around every callback would cost more than the rest of the watchdog's hot path.
//! The watchdog thread samples that number every `threshold / SAMPLES_PER_THRESHOLD` seconds
//! and times each generation itself, from the first sample that saw it: a generation seen
//! running for at least `threshold` is a callback that has run at least that long (the time is
//! a lower bound, short of the truth by less than one sampling period), reported once.

/// How many samples the watchdog thread takes per threshold.
pub const SAMPLES_PER_THRESHOLD: f64 = 8.0;

/// The shortest and the longest sampling period, in seconds.
const PERIOD_BOUNDS: (f64, f64) = (0.001, 1.0);

/// The sampling period for `threshold` seconds.
pub fn sampling_period(threshold: f64) -> f64 {
    (threshold / SAMPLES_PER_THRESHOLD).clamp(PERIOD_BOUNDS.0, PERIOD_BOUNDS.1)
}

/// A callback that has run for at least the threshold.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stall {
    /// The callback's generation (as the loop published it).
    pub generation: u64,
    /// When (monotonic seconds) the watchdog first saw it running.
    pub since: f64,
    /// How long it had run at least, when detected.
    pub blocked_for: f64,
}

/// Follows the generation the loop publishes, one sample at a time.
#[derive(Default, Debug)]
pub struct StallDetector {
    /// The generation of the previous sample (0: between callbacks).
    seen: u64,
    /// When that generation was first seen.
    since: f64,
    /// Its stall was reported already.
    reported: bool,
}

impl StallDetector {
    /// A detector that has seen nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one sample: `generation` running at `now`. Returns the stall the first time that
    /// generation has been seen running for `threshold` seconds, never again for it.
    pub fn observe(&mut self, generation: u64, now: f64, threshold: f64) -> Option<Stall> {
        if generation != self.seen {
            self.seen = generation;
            self.since = now;
            self.reported = false;
            return None;
        }
        if generation == 0 || self.reported || now - self.since < threshold {
            return None;
        }
        self.reported = true;
        Some(Stall {
            generation,
            since: self.since,
            blocked_for: now - self.since,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_callback_is_reported_once() {
        let mut d = StallDetector::new();
        assert_eq!(d.observe(7, 10.0, 0.1), None);
        assert_eq!(d.observe(7, 10.05, 0.1), None);
        let stall = d.observe(7, 10.125, 0.1).expect("stall");
        assert_eq!(stall.generation, 7);
        assert_eq!(stall.since, 10.0);
        assert!((stall.blocked_for - 0.125).abs() < 1e-9);
        assert_eq!(d.observe(7, 10.5, 0.1), None);
        assert_eq!(d.observe(7, 11.0, 0.1), None);
    }

    #[test]
    fn short_callbacks_and_idle_time_are_not_stalls() {
        let mut d = StallDetector::new();
        for (i, t) in (1..100u64).zip((0..).map(|k| k as f64 * 0.05)) {
            assert_eq!(d.observe(i, t, 0.1), None);
        }
        assert_eq!(d.observe(0, 10.0, 0.1), None);
        assert_eq!(d.observe(0, 20.0, 0.1), None);
    }

    #[test]
    fn a_new_generation_starts_a_new_count() {
        let mut d = StallDetector::new();
        d.observe(1, 0.0, 0.1);
        assert!(d.observe(1, 0.2, 0.1).is_some());
        assert_eq!(d.observe(2, 0.21, 0.1), None);
        assert!(d.observe(2, 0.32, 0.1).is_some());
    }

    #[test]
    fn period_is_bounded() {
        assert_eq!(sampling_period(0.08), 0.01);
        assert_eq!(sampling_period(0.0001), 0.001);
        assert_eq!(sampling_period(100.0), 1.0);
    }
}
