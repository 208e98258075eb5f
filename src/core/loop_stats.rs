//! The loop's metrics (`loop.stats()`), kept cheap enough to be always on: plain counters,
//! two clock reads per batch of ready callbacks (never one per callback), and the lag of
//! ready callbacks (how long they waited before running) in a sliding window of log-scale
//! histograms.
//!
//! How the lag is measured without timestamping each callback: the ready queue is FIFO, so a
//! handle is known by its sequence number (handles dequeued so far plus its position). The
//! loop drops *marks* (sequence number, time) whenever the time handles are queued at changes
//! meaningfully: at the start of each batch (handles queued while it runs were queued no
//! earlier than that), when a blocking poll returns (the I/O callbacks it queues became ready
//! then), and for each due timer (its deadline). When a batch of `n` handles ran between
//! `started` and `ended`, the `k`-th one is taken to have started at
//! `started + (ended - started) * k / n` (equal shares of the batch), and its lag is that minus
//! the time of the mark it falls under. The lag is thus exact to the batch's resolution (and
//! to 100 µs: closer marks merge, so timers due together make one segment).

use std::collections::VecDeque;

/// Sub-buckets per power of two in the lag histogram (3 bits: values within 12.5 %).
const SUB_BITS: u32 = 3;
/// Sub-buckets per power of two.
const SUB: usize = 1 << SUB_BITS;
/// Buckets covering every `u64` nanosecond value.
const BUCKETS: usize = (64 - SUB_BITS as usize + 1) * SUB;
/// The lag window turns over after this many seconds: percentiles cover the last 30 to 60 s.
pub const LAG_WINDOW_SECONDS: f64 = 30.0;
/// Marks closer in time than this (seconds) are merged: the lag is not measured finer.
const MARK_RESOLUTION: f64 = 100e-6;
/// A segment of a batch larger than this is recorded as this many equal parts.
const SEGMENT_PARTS: usize = 8;

/// The histogram bucket of `nanos`.
fn bucket_of(nanos: u64) -> usize {
    if nanos < SUB as u64 {
        return nanos as usize;
    }
    let msb = 63 - nanos.leading_zeros(); // >= SUB_BITS
    let sub = (nanos >> (msb - SUB_BITS)) as usize & (SUB - 1);
    (msb - SUB_BITS + 1) as usize * SUB + sub
}

/// The smallest value in bucket `index`.
fn bucket_floor(index: usize) -> u64 {
    if index < SUB {
        return index as u64;
    }
    let msb = (index / SUB) as u32 + SUB_BITS - 1;
    ((SUB + index % SUB) as u64) << (msb - SUB_BITS)
}

/// A log-scale histogram of lags in nanoseconds, with the exact maximum.
#[derive(Clone)]
struct Histogram {
    counts: Box<[u64; BUCKETS]>,
    total: u64,
    max: u64,
}

impl Histogram {
    fn new() -> Self {
        Histogram {
            counts: Box::new([0; BUCKETS]),
            total: 0,
            max: 0,
        }
    }

    fn record(&mut self, nanos: u64, weight: u64) {
        self.counts[bucket_of(nanos)] += weight;
        self.total += weight;
        self.max = self.max.max(nanos);
    }

    fn clear(&mut self) {
        self.counts.fill(0);
        self.total = 0;
        self.max = 0;
    }
}

/// Percentiles and maximum of the lag over the window, in seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LagSummary {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest lag seen in the window.
    pub max: f64,
}

/// The lag's sliding window: the current histogram and the previous one.
pub struct LagWindow {
    current: Histogram,
    previous: Histogram,
    /// When `current` began (monotonic seconds); NaN before the first sample.
    began: f64,
}

impl Default for LagWindow {
    fn default() -> Self {
        LagWindow {
            current: Histogram::new(),
            previous: Histogram::new(),
            began: f64::NAN,
        }
    }
}

impl LagWindow {
    /// Records `weight` callbacks that waited `seconds` (negative counts as 0), at time `now`.
    pub fn record(&mut self, now: f64, seconds: f64, weight: u64) {
        // `within` is false also when `began` is NaN (first sample).
        let within = |span: f64| (now - self.began) < span;
        if !within(LAG_WINDOW_SECONDS) {
            std::mem::swap(&mut self.current, &mut self.previous);
            if !within(2.0 * LAG_WINDOW_SECONDS) {
                self.previous.clear();
            }
            self.current.clear();
            self.began = now;
        }
        let nanos = if seconds > 0.0 {
            (seconds * 1e9) as u64 // saturates
        } else {
            0
        };
        self.current.record(nanos, weight);
    }

    /// p50, p99 and max over the window (zeros when empty).
    pub fn summary(&self) -> LagSummary {
        let total = self.current.total + self.previous.total;
        if total == 0 {
            return LagSummary::default();
        }
        let max = self.current.max.max(self.previous.max);
        let quantile = |q: f64| {
            let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
            let mut seen = 0;
            for index in 0..BUCKETS {
                seen += self.current.counts[index] + self.previous.counts[index];
                if seen >= rank {
                    // The middle of the bucket, never above the largest value seen.
                    let low = bucket_floor(index);
                    let high = if index + 1 < BUCKETS {
                        bucket_floor(index + 1)
                    } else {
                        u64::MAX
                    };
                    return (low / 2 + high / 2).min(max);
                }
            }
            max
        };
        LagSummary {
            p50: quantile(0.50) as f64 / 1e9,
            p99: quantile(0.99) as f64 / 1e9,
            max: max as f64 / 1e9,
        }
    }
}

/// A point in the ready queue: handles from sequence number `seq` on were queued no earlier
/// than `at` (monotonic seconds).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Mark {
    seq: u64,
    at: f64,
}

/// The loop's counters and lag window. Updated by the loop's iteration only.
#[derive(Default)]
pub struct LoopMeter {
    /// Callbacks run (cancelled handles skipped are not counted).
    pub callbacks_run: u64,
    /// Readiness events dispatched: reader/writer callbacks queued and native receives.
    pub io_events: u64,
    /// Timers that became due and were queued.
    pub timers_fired: u64,
    /// Seconds spent running batches of ready callbacks.
    pub busy_time: f64,
    /// Seconds spent blocked in the poll.
    pub idle_time: f64,
    /// Handles that left the ready queue so far: the sequence number of its head.
    dequeued: u64,
    /// Marks in sequence order, none before the queue's head except the one covering it.
    marks: VecDeque<Mark>,
    /// The lag of ready callbacks.
    pub lag: LagWindow,
}

impl LoopMeter {
    /// Handles queued from now on (the queue holds `queued` handles) were queued no earlier
    /// than `at`.
    #[inline]
    pub fn queued_from(&mut self, queued: usize, at: f64) {
        let seq = self.dequeued + queued as u64;
        match self.marks.back_mut() {
            // No handle between the two marks: the later one replaces the earlier.
            Some(last) if last.seq == seq => last.at = at,
            // Close enough in time (timers due together): one segment, one lag.
            Some(last) if (at - last.at).abs() < MARK_RESOLUTION => {}
            _ => self.marks.push_back(Mark { seq, at }),
        }
    }

    /// The `n` handles at the queue's head left it and ran (`ran` of them were not cancelled)
    /// between `started` and `ended`: busy time, counts and their lags.
    pub fn batch_ran(&mut self, n: usize, ran: u64, started: f64, ended: f64) {
        self.callbacks_run += ran;
        let took = (ended - started).max(0.0);
        self.busy_time += took;
        if n == 0 {
            return;
        }
        let first = self.dequeued;
        let end = first + n as u64;
        let share = took / n as f64;
        // Walk the segments of [first, end), each under one mark (or none: lag from `started`).
        let mut index = 0;
        while index < self.marks.len() && self.marks[index].seq <= first {
            index += 1;
        }
        // marks[index - 1] covers `first`, if any.
        let mut from = first;
        let mut at = if index > 0 {
            self.marks[index - 1].at
        } else {
            started
        };
        loop {
            let until = match self.marks.get(index) {
                Some(mark) if mark.seq < end => mark.seq,
                _ => end,
            };
            self.record_segment(
                started,
                share,
                (from - first) as usize,
                (until - from) as usize,
                at,
            );
            if until == end {
                break;
            }
            from = until;
            at = self.marks[index].at;
            index += 1;
        }
        // Drop the marks no longer needed: keep the last one at or before `end`.
        while self.marks.len() >= 2 && self.marks[1].seq <= end {
            self.marks.pop_front();
        }
        self.dequeued = end;
    }

    /// Records `count` handles from batch position `offset` on, queued at `at`.
    fn record_segment(&mut self, started: f64, share: f64, offset: usize, count: usize, at: f64) {
        if count == 0 {
            return;
        }
        let waited = started - at;
        if count <= SEGMENT_PARTS {
            for k in offset..offset + count {
                self.lag.record(started, waited + share * k as f64, 1);
            }
        } else {
            // Equal parts, each recorded at its middle position.
            for part in 0..SEGMENT_PARTS {
                let lo = offset + count * part / SEGMENT_PARTS;
                let hi = offset + count * (part + 1) / SEGMENT_PARTS;
                if hi > lo {
                    let middle = (lo + hi - 1) as f64 / 2.0;
                    self.lag
                        .record(started, waited + share * middle, (hi - lo) as u64);
                }
            }
        }
    }

    /// A timer became due and is queued behind `queued` handles; `due` is its deadline on
    /// the meter's clock, None when the loop's time is virtual or replaced (then it counts
    /// as queued with the handles before it).
    #[inline]
    pub fn timer_fired(&mut self, queued: usize, due: Option<f64>, now: f64) {
        self.timers_fired += 1;
        if let Some(due) = due {
            self.queued_from(queued, due.min(now));
        }
    }

    /// The loop starts running at `now`: handles already queued wait from now on (the time
    /// the loop was not running is not lag).
    pub fn run_started(&mut self, now: f64) {
        self.marks.clear();
        self.marks.push_back(Mark {
            seq: self.dequeued,
            at: now,
        });
    }

    /// The poll blocked for `seconds`.
    #[inline]
    pub fn waited(&mut self, seconds: f64) {
        self.idle_time += seconds.max(0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ordered_and_cover_values() {
        for nanos in [
            0u64,
            1,
            7,
            8,
            9,
            15,
            16,
            1000,
            123_456_789,
            u64::MAX / 3,
            u64::MAX,
        ] {
            let index = bucket_of(nanos);
            assert!(bucket_floor(index) <= nanos, "{nanos}");
            if index + 1 < BUCKETS {
                assert!(bucket_floor(index + 1) > nanos, "{nanos}");
            }
        }
        for index in 1..BUCKETS {
            assert!(bucket_floor(index) > bucket_floor(index - 1));
        }
    }

    #[test]
    fn percentiles_within_bucket_precision() {
        let mut window = LagWindow::default();
        window.record(0.0, 0.001, 98);
        window.record(0.0, 0.5, 2);
        let summary = window.summary();
        assert!((summary.p50 - 0.001).abs() < 0.000_15, "{summary:?}");
        assert!((summary.p99 - 0.5).abs() < 0.07, "{summary:?}");
        assert_eq!(summary.max, 0.5);
    }

    #[test]
    fn window_forgets_old_samples() {
        let mut window = LagWindow::default();
        window.record(0.0, 1.0, 1);
        window.record(LAG_WINDOW_SECONDS + 1.0, 0.001, 1);
        assert_eq!(window.summary().max, 1.0); // previous half still counts
        window.record(3.0 * LAG_WINDOW_SECONDS, 0.002, 1);
        assert_eq!(window.summary().max, 0.002);
    }

    #[test]
    fn a_slow_callback_delays_the_next_ones() {
        let mut meter = LoopMeter::default();
        // Batch 1: 2 handles queued at 0.0, started at 1.0; the first takes 0.5 s. One handle
        // is queued during the batch (mark at 1.0).
        meter.queued_from(0, 0.0);
        meter.queued_from(2, 1.0);
        meter.batch_ran(2, 2, 1.0, 1.5);
        // Batch 2: that handle, started at 1.5.
        meter.queued_from(1, 1.5);
        meter.batch_ran(1, 1, 1.5, 1.5);
        assert_eq!(meter.callbacks_run, 3);
        assert!((meter.busy_time - 0.5).abs() < 1e-9);
        let summary = meter.lag.summary();
        // Lags: 1.0, 1.25 (equal shares) and 0.5.
        assert!((summary.max - 1.25).abs() < 1e-6, "{summary:?}");
        assert_eq!(meter.marks.len(), 1);
    }

    #[test]
    fn large_segments_are_recorded_in_parts() {
        let mut meter = LoopMeter::default();
        meter.queued_from(0, 0.0);
        meter.batch_ran(1000, 1000, 0.0, 1.0);
        let summary = meter.lag.summary();
        assert!(summary.max > 0.9 && summary.max < 1.0, "{summary:?}");
        assert!((summary.p50 - 0.5).abs() < 0.1, "{summary:?}");
    }
}
