//! The loop's metrics (`loop.stats()`), kept cheap enough to be always on: plain counters, no
//! clock read per batch of ready callbacks but in sampled stretches, two tick counter readings
//! (`core::ticks`: one instruction each on x86_64) around a poll that blocks, and the lag of
//! ready callbacks (how long they waited before running) in a sliding window of log-scale
//! histograms.
//!
//! Busy time needs no reading per batch: it is the time the loop ran (`run_forever`'s start
//! to its end, or to `stats()`) minus the time it was blocked in the poll. The blocked time
//! is counted in ticks, and turned into seconds by the rate of ticks to monotonic seconds
//! over the run (both clocks are read when the run starts, ends, and at `stats()`).
//!
//! The lag is sampled: measured in stretches of `MEASURED_BATCHES` consecutive batches, the
//! first ones of every run and then one stretch after each `SAMPLE_EVERY` unmeasured batches
//! (a clock read at the end of each measured batch, and one before the stretch); a batch of
//! `BUSY_BATCH` callbacks or more begins a stretch, or prolongs one. Outside a
//! stretch a batch costs a few additions: on a loop running small batches (a protocol echoing
//! over a socket: one or two callbacks per batch) a clock read and the bookkeeping per batch
//! would cost several percent of the loop's time.
//!
//! How the lag is measured without timestamping each callback: the ready queue is FIFO, so a
//! handle is known by its sequence number (handles dequeued so far plus its position). While
//! a stretch lasts, the loop drops *marks* (sequence number, time) whenever the time handles
//! are queued at changes meaningfully: at the start of each batch (handles queued while it runs
//! were queued no earlier than that), when a blocking poll returns (the I/O callbacks it queues
//! became ready then), and for each due timer (its deadline). Handles queued before the
//! stretch began have no known time (a NaN mark): they are not recorded. When a batch of `n`
//! handles ran between `started` and `ended`, the `k`-th one is taken to have started at
//! `started + (ended - started) * k / n` (equal shares of the batch), and its lag is that minus
//! the time of the mark it falls under. The lag is thus exact to the batch's resolution (and
//! to 100 µs: closer marks merge, so timers due together make one segment).

use std::collections::VecDeque;

use crate::core::ticks::{ticks_to_seconds, Reading};

/// Sub-buckets per power of two in the lag histogram (3 bits: values within 12.5 %).
const SUB_BITS: u32 = 3;
/// The bucket key of a positive `f64`: its exponent and first `SUB_BITS` mantissa bits.
const KEY_SHIFT: u32 = 52 - SUB_BITS;
/// The key of 2^-30 s (~1 ns): lags below fall in the first bucket.
const LOWEST_KEY: u64 = (1023 - 30) << SUB_BITS;
/// Buckets from 2^-30 s to 2^13 s (~2.3 hours; longer lags fall in the last one).
const BUCKETS: usize = (43 << SUB_BITS) as usize;
/// The lag window turns over after this many seconds: percentiles cover the last 30 to 60 s.
pub const LAG_WINDOW_SECONDS: f64 = 30.0;
/// Marks closer in time than this (seconds) are merged: the lag is not measured finer.
const MARK_RESOLUTION: f64 = 100e-6;
/// A segment of a batch larger than this is recorded as this many equal parts.
const SEGMENT_PARTS: usize = 8;
/// Consecutive batches whose lag is measured in one stretch (the first measures the handles
/// queued since the stretch began; those queued before have no known time).
const MEASURED_BATCHES: u32 = 2;
/// Unmeasured batches between two stretches (the clock is read at the end of the last one).
const SAMPLE_EVERY: u32 = 126;
/// A batch of at least this many callbacks begins a stretch, or prolongs one: its clock read
/// and bookkeeping are shared by enough callbacks to cost next to nothing, so a loop busy
/// with large batches has its lag measured in (nearly) every batch.
const BUSY_BATCH: usize = 16;

/// The histogram bucket of a lag in seconds: a shift of its bits (log scale, no arithmetic).
#[inline]
fn bucket_of(seconds: f64) -> usize {
    if seconds.is_nan() || seconds <= 0.0 {
        return 0;
    }
    let key = seconds.to_bits() >> KEY_SHIFT;
    (key.saturating_sub(LOWEST_KEY) as usize).min(BUCKETS - 1)
}

/// The smallest lag (seconds) in bucket `index` (0 for the first).
fn bucket_floor(index: usize) -> f64 {
    if index == 0 {
        return 0.0;
    }
    f64::from_bits((index as u64 + LOWEST_KEY) << KEY_SHIFT)
}

/// A log-scale histogram of lags, with the exact maximum.
#[derive(Clone)]
struct Histogram {
    counts: Box<[u64; BUCKETS]>,
    total: u64,
    max: f64,
}

impl Histogram {
    fn new() -> Self {
        Histogram {
            counts: Box::new([0; BUCKETS]),
            total: 0,
            max: 0.0,
        }
    }

    #[inline]
    fn record(&mut self, seconds: f64, weight: u64) {
        self.counts[bucket_of(seconds)] += weight;
        self.total += weight;
        self.max = self.max.max(seconds);
    }

    fn clear(&mut self) {
        self.counts.fill(0);
        self.total = 0;
        self.max = 0.0;
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
    /// Turns the window over if `now` is past its current half (once per batch).
    #[inline]
    pub fn advance(&mut self, now: f64) {
        // `within` is false also when `began` is NaN (first sample).
        let within = |span: f64| (now - self.began) < span;
        if !within(LAG_WINDOW_SECONDS) {
            self.turn(now, within(2.0 * LAG_WINDOW_SECONDS));
        }
    }

    #[cold]
    fn turn(&mut self, now: f64, keep_previous: bool) {
        std::mem::swap(&mut self.current, &mut self.previous);
        if !keep_previous {
            self.previous.clear();
        }
        self.current.clear();
        self.began = now;
    }

    /// Records `weight` callbacks that waited `seconds` (negative counts as 0).
    #[inline]
    pub fn record(&mut self, seconds: f64, weight: u64) {
        self.current.record(seconds.max(0.0), weight);
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
                        max
                    };
                    return ((low + high) / 2.0).min(max);
                }
            }
            max
        };
        LagSummary {
            p50: quantile(0.50),
            p99: quantile(0.99),
            max,
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
pub struct LoopMeter {
    /// Callbacks run (cancelled handles skipped are not counted).
    pub callbacks_run: u64,
    /// Readiness events dispatched: reader/writer callbacks queued and native receives.
    pub io_events: u64,
    /// Timers that became due and were queued.
    pub timers_fired: u64,
    /// Ticks the current run spent blocked in the poll.
    idle_ticks: u64,
    /// Seconds the runs that ended spent blocked in the poll.
    idle_before: f64,
    /// Seconds the runs that ended spent not blocked in the poll.
    busy_before: f64,
    /// When the current run began.
    run_began: Reading,
    /// Handles that left the ready queue since the current stretch began: the sequence
    /// number of its head.
    dequeued: u64,
    /// Marks in sequence order, none before the queue's head except the one covering it
    /// (meaningful while a stretch lasts only).
    marks: VecDeque<Mark>,
    /// The lag of ready callbacks.
    pub lag: LagWindow,
    /// The last clock reading while a stretch lasts (monotonic seconds): the end of the last
    /// batch or blocking poll, or when the stretch or the run began. The next batch starts then.
    last_time: f64,
    /// Batches left before the next stretch ends: `MEASURED_BATCHES` when one just began
    /// (the batches from then on are measured), above it between stretches.
    countdown: u32,
}

impl Default for LoopMeter {
    fn default() -> Self {
        LoopMeter {
            callbacks_run: 0,
            io_events: 0,
            timers_fired: 0,
            idle_ticks: 0,
            idle_before: 0.0,
            busy_before: 0.0,
            run_began: Reading::default(),
            dequeued: 0,
            marks: VecDeque::new(),
            lag: LagWindow::default(),
            last_time: 0.0,
            countdown: SAMPLE_EVERY + MEASURED_BATCHES,
        }
    }
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

    /// A batch of `todo` callbacks ran, `ran` of them not cancelled. Counts them; true when
    /// the batch's end must be read from the clock and handed to `batch_measured` (a stretch
    /// lasts, or begins after it). Nothing else: sequence numbers restart with each stretch.
    #[inline]
    pub fn batch_counted(&mut self, todo: usize, ran: u64) -> bool {
        self.callbacks_run += ran;
        self.countdown = self.countdown.wrapping_sub(1);
        self.countdown <= MEASURED_BATCHES || todo >= BUSY_BATCH
    }

    /// True while a stretch lasts: handles queued now get marks with known times.
    #[inline]
    fn measuring(&self) -> bool {
        self.countdown <= MEASURED_BATCHES
    }

    /// The batch `batch_counted` asked for ended at `ended`: `todo` callbacks were due, `n`
    /// handles left the queue's head (fewer than `todo` if a callback's error ended the batch
    /// early) and the queue now holds `queued`. In a stretch, records the lags of the batch
    /// (begun at the previous reading); otherwise a stretch begins: handles queued from now on
    /// have known times.
    #[inline(never)]
    pub fn batch_measured(&mut self, todo: usize, n: usize, queued: usize, ended: f64) {
        if self.countdown >= MEASURED_BATCHES {
            // Its turn, or a busy batch outside a stretch.
            self.begin_stretch(queued, ended);
            return;
        }
        if self.countdown == 0 {
            // A busy batch prolongs the stretch: the next batch is measured too.
            self.countdown = if todo >= BUSY_BATCH {
                1
            } else {
                SAMPLE_EVERY + MEASURED_BATCHES
            };
        }
        let started = self.last_time;
        self.queued_from(todo, started);
        let took = (ended - started).max(0.0);
        self.last_time = ended;
        if n == 0 {
            return;
        }
        self.lag.advance(ended);
        let first = self.dequeued;
        let end = first + n as u64;
        // The usual case: one mark covers the whole batch.
        if let Some(cover) = self.marks.front().filter(|m| m.seq <= first) {
            if self.marks.get(1).is_none_or(|m| m.seq >= end) {
                let at = cover.at;
                if n == 1 {
                    if !at.is_nan() {
                        self.lag.record(started - at, 1);
                    }
                } else {
                    self.record_segment(started, took / n as f64, 0, n, at);
                }
                self.forget_marks_before(end);
                return;
            }
        }
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
        self.forget_marks_before(end);
    }

    /// The handles before `end` ran: drops the marks no longer needed (keeps the last one at
    /// or before `end`, which covers the handles from `end` on).
    #[inline]
    fn forget_marks_before(&mut self, end: u64) {
        while self.marks.len() >= 2 && self.marks[1].seq <= end {
            self.marks.pop_front();
        }
        self.dequeued = end;
    }

    /// Records `count` handles from batch position `offset` on, queued at `at`.
    fn record_segment(&mut self, started: f64, share: f64, offset: usize, count: usize, at: f64) {
        debug_assert!(count > 0);
        if at.is_nan() {
            return; // queued before the stretch began: no known time
        }
        let waited = started - at;
        if count == 1 {
            self.lag.record(waited + share * offset as f64, 1);
        } else if count <= SEGMENT_PARTS {
            for k in offset..offset + count {
                self.lag.record(waited + share * k as f64, 1);
            }
        } else {
            // Equal parts, each recorded at its middle position.
            for part in 0..SEGMENT_PARTS {
                let lo = offset + count * part / SEGMENT_PARTS;
                let hi = offset + count * (part + 1) / SEGMENT_PARTS;
                if hi > lo {
                    let middle = (lo + hi - 1) as f64 / 2.0;
                    self.lag.record(waited + share * middle, (hi - lo) as u64);
                }
            }
        }
    }

    /// A timer became due and is queued behind `queued` handles; `due` is its deadline on
    /// the meter's clock, None when the loop's time is virtual or replaced (then it counts
    /// as queued with the handles before it).
    #[inline]
    pub fn timer_fired(&mut self, queued: usize, due: impl FnOnce() -> Option<f64>, now: f64) {
        self.timers_fired += 1;
        if !self.measuring() {
            return;
        }
        if let Some(due) = due() {
            self.queued_from(queued, due.min(now));
        }
    }

    /// A stretch of measured batches begins at `now`, when the queue holds `queued` handles:
    /// their times are unknown, those queued from now on were queued no earlier than `now`.
    #[cold]
    fn begin_stretch(&mut self, queued: usize, now: f64) {
        // Sequence numbers count from the queue's head now (marks before are dropped).
        self.dequeued = 0;
        self.marks.clear();
        self.marks.push_back(Mark {
            seq: self.dequeued,
            at: f64::NAN,
        });
        self.queued_from(queued, now);
        self.last_time = now;
        self.countdown = MEASURED_BATCHES;
    }

    /// The loop starts running at `now`: handles already queued wait from now on (the time
    /// the loop was not running is not lag), and a stretch of measured batches begins.
    pub fn run_started(&mut self, now: Reading) {
        self.run_began = now;
        self.idle_ticks = 0;
        // No handle before the NaN mark: the mark at `now` replaces it.
        self.begin_stretch(0, now.seconds);
    }

    /// The run begun by `run_started` ended at `now`: its busy and idle times are kept.
    pub fn run_ended(&mut self, now: Reading) {
        let (busy, idle) = self.run_split(now);
        self.busy_before += busy;
        self.idle_before += idle;
        self.idle_ticks = 0;
        self.run_began = now;
    }

    /// The current run's seconds up to `now`, split into (busy, idle).
    fn run_split(&self, now: Reading) -> (f64, f64) {
        let ran = (now.seconds - self.run_began.seconds).max(0.0);
        let span = now.ticks.saturating_sub(self.run_began.ticks);
        let idle = ticks_to_seconds(self.idle_ticks, span, ran).min(ran);
        (ran - idle, idle)
    }

    /// Seconds spent running, not blocked in the poll (callbacks, and the loop's own work),
    /// up to `now` when the loop is `running`.
    pub fn busy_time(&self, now: Reading, running: bool) -> f64 {
        if !running {
            return self.busy_before;
        }
        self.busy_before + self.run_split(now).0
    }

    /// Seconds spent blocked in the poll, up to `now` when the loop is `running`.
    pub fn idle_time(&self, now: Reading, running: bool) -> f64 {
        if !running {
            return self.idle_before;
        }
        self.idle_before + self.run_split(now).1
    }

    /// The poll blocked from tick `since` to tick `until` (`core::ticks` readings around
    /// it). Handles queued from now on (the queue holds `queued`) became ready when it
    /// returned (`now`: the monotonic clock, read only while a stretch lasts).
    #[inline]
    pub fn slept(
        &mut self,
        queued: impl FnOnce() -> usize,
        since: u64,
        until: u64,
        now: impl FnOnce() -> f64,
    ) {
        self.idle_ticks += until.saturating_sub(since);
        if self.measuring() {
            self.slept_measuring(queued(), now());
        }
    }

    /// `slept` in a stretch: the I/O callbacks about to be queued became ready at `until`.
    #[cold]
    #[inline(never)]
    fn slept_measuring(&mut self, queued: usize, until: f64) {
        self.last_time = until;
        self.queued_from(queued, until);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both clocks at `seconds` (ticks: nanoseconds).
    fn at(seconds: f64) -> Reading {
        Reading {
            seconds,
            ticks: tick(seconds),
        }
    }

    /// The tick reading at `seconds` (nanoseconds).
    fn tick(seconds: f64) -> u64 {
        (seconds * 1e9).round() as u64
    }

    #[test]
    fn buckets_are_ordered_and_cover_values() {
        for seconds in [
            1e-9, 1.5e-9, 1e-6, 0.001, 0.0123, 0.5, 1.0, 3.7, 1000.0, 8000.0,
        ] {
            let index = bucket_of(seconds);
            assert!(bucket_floor(index) <= seconds, "{seconds}");
            assert!(bucket_floor(index + 1) > seconds, "{seconds}");
            assert!(bucket_floor(index + 1) <= seconds * 1.126, "{seconds}");
        }
        assert_eq!(bucket_of(0.0), 0);
        assert_eq!(bucket_of(-1.0), 0);
        assert_eq!(bucket_of(f64::NAN), 0);
        assert_eq!(bucket_of(1e9), BUCKETS - 1);
        for index in 1..BUCKETS {
            assert!(bucket_floor(index) > bucket_floor(index - 1));
        }
    }

    #[test]
    fn percentiles_within_bucket_precision() {
        let mut window = LagWindow::default();
        window.advance(0.0);
        window.record(0.001, 98);
        window.record(0.5, 2);
        let summary = window.summary();
        assert!((summary.p50 - 0.001).abs() < 0.000_15, "{summary:?}");
        assert!((summary.p99 - 0.5).abs() < 0.07, "{summary:?}");
        assert_eq!(summary.max, 0.5);
    }

    #[test]
    fn window_forgets_old_samples() {
        let mut window = LagWindow::default();
        window.advance(0.0);
        window.record(1.0, 1);
        window.advance(LAG_WINDOW_SECONDS + 1.0);
        window.record(0.001, 1);
        assert_eq!(window.summary().max, 1.0); // previous half still counts
        window.advance(3.0 * LAG_WINDOW_SECONDS);
        window.record(0.002, 1);
        assert_eq!(window.summary().max, 0.002);
    }

    /// One batch through both hooks, as the loop runs it; `queued` is the queue's length
    /// after it.
    fn batch(meter: &mut LoopMeter, todo: usize, n: usize, queued: usize, ended: f64) {
        if meter.batch_counted(todo, n as u64) {
            meter.batch_measured(todo, n, queued, ended);
        }
    }

    #[test]
    fn a_slow_callback_delays_the_next_ones() {
        let mut meter = LoopMeter::default();
        // Batch 1: 2 handles queued at 0.0, started at 1.0; the first takes 0.5 s. One handle
        // is queued during the batch (mark at 1.0).
        meter.run_started(at(0.0));
        meter.slept(|| 0, tick(0.0), tick(1.0), || 1.0); // queued at 0.0; the loop slept until 1.0 (a timer)
        batch(&mut meter, 2, 2, 1, 1.5);
        // Batch 2: that handle, started at 1.5.
        batch(&mut meter, 1, 1, 0, 1.5);
        assert_eq!(meter.callbacks_run, 3);
        assert!((meter.busy_time(at(1.5), true) - 0.5).abs() < 1e-9);
        let summary = meter.lag.summary();
        // Lags: 0 and 0.25 (queued when the loop woke at 1.0; equal shares), then 0.5.
        assert!((summary.max - 0.5).abs() < 1e-6, "{summary:?}");
        assert!((meter.idle_time(at(1.5), true) - 1.0).abs() < 1e-9);
        assert!(meter.marks.len() <= 2);
    }

    #[test]
    fn busy_time_is_running_time_minus_idle_time() {
        let mut meter = LoopMeter::default();
        meter.run_started(at(10.0));
        // The loop works 0.1 s, then blocks 1 s, then works 0.2 s more and stops.
        meter.slept(|| 0, tick(10.1), tick(11.1), || 11.1);
        assert!((meter.busy_time(at(11.2), true) - 0.2).abs() < 1e-9);
        assert!((meter.idle_time(at(11.2), true) - 1.0).abs() < 1e-9);
        meter.run_ended(at(11.3));
        assert!((meter.busy_time(at(99.0), false) - 0.3).abs() < 1e-9);
        // The time between runs counts for nothing.
        meter.run_started(at(20.0));
        assert!((meter.busy_time(at(20.5), true) - 0.8).abs() < 1e-9);
        assert!((meter.idle_time(at(20.5), true) - 1.0).abs() < 1e-9);
        assert!((meter.idle_time(at(99.0), false) - 1.0).abs() < 1e-9);
    }

    #[test]
    fn idle_ticks_are_converted_at_the_run_rate() {
        // Ticks at 3 GHz: the split is the same in seconds.
        let mut meter = LoopMeter::default();
        let reading = |seconds: f64| Reading {
            seconds,
            ticks: (seconds * 3e9) as u64,
        };
        meter.run_started(reading(1.0));
        meter.slept(|| 0, reading(1.5).ticks, reading(2.25).ticks, || 2.25);
        let now = reading(3.0);
        assert!((meter.idle_time(now, true) - 0.75).abs() < 1e-9);
        assert!((meter.busy_time(now, true) - 1.25).abs() < 1e-9);
    }

    #[test]
    fn lag_is_measured_in_sampled_stretches() {
        let mut meter = LoopMeter::default();
        meter.run_started(at(0.0));
        // The run's first stretch: two measured batches.
        batch(&mut meter, 1, 1, 1, 0.001);
        batch(&mut meter, 1, 1, 1, 0.002);
        let measured = meter.lag.current.total;
        assert_eq!(measured, 2);
        // Unmeasured batches, one slow: not recorded (it shows in busy time only).
        let mut now = 0.002;
        for k in 0..SAMPLE_EVERY {
            now += if k == 3 { 5.0 } else { 0.001 };
            batch(&mut meter, 1, 1, 1, now);
        }
        assert_eq!(meter.lag.current.total, measured);
        assert_eq!(meter.countdown, MEASURED_BATCHES);
        // The next stretch: the first batch's handle was queued before it began (not
        // recorded); the second batch's handle was queued during the first (recorded).
        now += 0.001;
        batch(&mut meter, 1, 1, 1, now);
        assert_eq!(meter.lag.current.total, measured);
        now += 0.003;
        batch(&mut meter, 1, 1, 1, now);
        assert_eq!(meter.lag.current.total, measured + 1);
        assert!(meter.lag.summary().max < 0.01, "{:?}", meter.lag.summary());
        assert_eq!(meter.callbacks_run, 4 + SAMPLE_EVERY as u64);
        assert!(!meter.measuring());
        assert_eq!(meter.countdown, SAMPLE_EVERY + MEASURED_BATCHES);
        assert!(meter.marks.len() <= 2);
    }

    #[test]
    fn busy_batches_are_measured_back_to_back() {
        let mut meter = LoopMeter::default();
        meter.run_started(at(0.0));
        let mut now = 0.0;
        for _ in 0..10 {
            now += 0.01;
            batch(&mut meter, BUSY_BATCH, BUSY_BATCH, BUSY_BATCH, now);
        }
        assert_eq!(meter.lag.current.total, 10 * BUSY_BATCH as u64);
        // Small batches again: the stretch ends after the next one.
        batch(&mut meter, 1, 1, 1, now + 0.01);
        assert!(!meter.measuring());
        // Outside a stretch, a busy batch begins one (it is not measured itself).
        let total = meter.lag.current.total;
        batch(&mut meter, BUSY_BATCH, BUSY_BATCH, 1, now + 0.02);
        assert_eq!(meter.lag.current.total, total);
        assert!(meter.measuring());
        // The handle queued before the stretch began has no known time; the next one has.
        batch(&mut meter, 1, 1, 1, now + 0.03);
        assert_eq!(meter.lag.current.total, total);
        batch(&mut meter, 1, 1, 0, now + 0.04);
        assert_eq!(meter.lag.current.total, total + 1);
    }

    #[test]
    fn timers_are_marked_only_in_a_stretch() {
        let mut meter = LoopMeter::default();
        meter.run_started(at(0.0));
        batch(&mut meter, 1, 1, 0, 0.001);
        batch(&mut meter, 1, 1, 0, 0.002);
        let marks = meter.marks.len();
        meter.timer_fired(0, || Some(0.5), 1.0);
        assert_eq!(meter.marks.len(), marks);
        assert_eq!(meter.timers_fired, 1);
    }

    #[test]
    fn large_segments_are_recorded_in_parts() {
        let mut meter = LoopMeter::default();
        meter.run_started(at(0.0));
        batch(&mut meter, 1000, 1000, 0, 1.0);
        let summary = meter.lag.summary();
        assert!(summary.max > 0.9 && summary.max < 1.0, "{summary:?}");
        assert!((summary.p50 - 0.5).abs() < 0.1, "{summary:?}");
    }
}
