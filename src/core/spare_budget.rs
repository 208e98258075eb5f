//! How many spare handles a loop keeps for reuse (the pool of `event_loop::schedule`).
//!
//! A handle that ran goes back to the pool, and the next `call_soon` fills it again instead of
//! allocating one. The pool serves a batch only if it is as large as the batch: past it, every
//! extra callback allocates its handle and frees it after it ran (+35% instructions per
//! cross-thread post + run in batches of 16,384 with a pool of 1,024, RESULTS.md "xthread4").
//! Such batches are common: threads that post while the loop is not running yet (it cannot
//! throttle them, see `core::post_gate`) fill it with one batch of everything they posted.
//!
//! The handles of a batch are all alive while it is queued, so a pool as large as the batch
//! raises no peak: it only keeps that memory after the batch. The budget therefore follows
//! the batches the loop takes: it starts at `SPARE_BASE`, grows to a larger batch's size (at
//! most `SPARE_MAX`) when the loop takes it, and shrinks after `SHRINK_AFTER` iterations in a
//! row whose batches used at most a quarter of it (to the largest of them, at least
//! `SPARE_BASE`), or back to `SPARE_BASE` when the loop has been idle for a while (the loop's
//! part: `event_loop::iteration`).

/// The budget of a loop that has not seen a large batch lately.
pub const SPARE_BASE: usize = 1024;

/// The largest budget (a handle with its parked context is about 140 bytes).
pub const SPARE_MAX: usize = 262_144;

/// Iterations in a row with small batches before the budget shrinks.
const SHRINK_AFTER: u32 = 64;

/// The spare-handle budget of one loop (see the module's description).
#[derive(Debug)]
pub struct SpareBudget {
    /// How many spare handles the pool may hold now.
    cap: usize,
    /// Iterations in a row whose batch used at most a quarter of a grown budget.
    small_batches: u32,
    /// The largest batch of those iterations.
    small_max: usize,
}

impl Default for SpareBudget {
    fn default() -> Self {
        Self::new()
    }
}

impl SpareBudget {
    /// The base budget.
    pub const fn new() -> Self {
        SpareBudget {
            cap: SPARE_BASE,
            small_batches: 0,
            small_max: 0,
        }
    }

    /// How many spare handles the pool may hold.
    #[inline(always)]
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// True while the budget is above the base one.
    #[inline(always)]
    pub fn is_grown(&self) -> bool {
        self.cap > SPARE_BASE
    }

    /// The loop takes a batch of `n` callbacks. Returns true when the budget just shrank:
    /// the pool should then let its handles beyond `cap()` go.
    #[inline(always)]
    pub fn batch_taken(&mut self, n: usize) -> bool {
        if n <= SPARE_BASE && self.cap == SPARE_BASE {
            return false;
        }
        self.grown_batch_taken(n)
    }

    /// `batch_taken` for a batch larger than the base budget, or a grown budget.
    #[inline(never)]
    fn grown_batch_taken(&mut self, n: usize) -> bool {
        if n > self.cap {
            self.cap = n.min(SPARE_MAX);
            self.small_batches = 0;
            return false;
        }
        if n > self.cap / 4 {
            self.small_batches = 0;
            return false;
        }
        if self.small_batches == 0 {
            self.small_max = 0;
        }
        self.small_batches += 1;
        self.small_max = self.small_max.max(n);
        if self.small_batches < SHRINK_AFTER {
            return false;
        }
        self.small_batches = 0;
        self.cap = self.small_max.max(SPARE_BASE);
        true
    }

    /// The loop has been idle for a while. Returns true when the budget fell back to
    /// `SPARE_BASE` (it was larger): the pool should let its extra handles go.
    pub fn idle(&mut self) -> bool {
        if !self.is_grown() {
            return false;
        }
        self.cap = SPARE_BASE;
        self.small_batches = 0;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_batches_keep_the_base_budget() {
        let mut budget = SpareBudget::new();
        for n in [0, 1, 10, SPARE_BASE] {
            assert!(!budget.batch_taken(n));
            assert_eq!(budget.cap(), SPARE_BASE);
        }
        assert!(!budget.idle());
    }

    #[test]
    fn grows_to_the_batch_up_to_the_maximum() {
        let mut budget = SpareBudget::new();
        assert!(!budget.batch_taken(4000));
        assert_eq!(budget.cap(), 4000);
        assert!(!budget.batch_taken(3000));
        assert_eq!(budget.cap(), 4000);
        assert!(!budget.batch_taken(10 * SPARE_MAX));
        assert_eq!(budget.cap(), SPARE_MAX);
    }

    #[test]
    fn shrinks_after_a_run_of_small_batches() {
        let mut budget = SpareBudget::new();
        budget.batch_taken(100_000);
        for _ in 0..SHRINK_AFTER - 1 {
            assert!(!budget.batch_taken(5));
        }
        // A batch using more than a quarter of the budget starts the count again.
        assert!(!budget.batch_taken(30_000));
        for _ in 0..SHRINK_AFTER - 2 {
            assert!(!budget.batch_taken(5));
        }
        assert!(!budget.batch_taken(3_000));
        assert_eq!(budget.cap(), 100_000);
        // To the largest batch of the run.
        assert!(budget.batch_taken(5));
        assert_eq!(budget.cap(), 3_000);
        // Then to the base budget.
        for _ in 0..SHRINK_AFTER - 1 {
            assert!(!budget.batch_taken(5));
        }
        assert!(budget.batch_taken(0));
        assert_eq!(budget.cap(), SPARE_BASE);
        assert!(!budget.batch_taken(5));
    }

    #[test]
    fn falls_back_when_idle() {
        let mut budget = SpareBudget::new();
        budget.batch_taken(5000);
        assert!(budget.is_grown());
        assert!(budget.idle());
        assert_eq!(budget.cap(), SPARE_BASE);
        assert!(!budget.idle());
    }
}
