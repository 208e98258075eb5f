//! Backpressure for callbacks posted from other threads (`call_soon_threadsafe`).
//!
//! Posting threads and the loop share one GIL. Threads that post in a tight loop hold it most
//! of the time (the interpreter hands it over every switch interval, 5 ms, to whichever thread
//! waits), so they post faster than the loop runs their callbacks: the backlog grows every
//! iteration, and timers and I/O, which are only looked at between batches, come later and
//! later (seconds, with eight posting threads). Stock asyncio stays fair by accident: each
//! post writes to the self-pipe, a system call that hands the GIL back.
//!
//! The gate engages when the loop is behind *in time*: once the oldest post not yet taken by
//! the loop (the first of the current *epoch*, which ends when the loop takes its next batch)
//! has waited `max_age`, or `depth_max` posts are pending, a posting thread waits, without the
//! GIL, until the loop takes the batch. The age is looked at every `check_every` posts (one
//! clock read per epoch and per `check_every` posts). A count alone (the first version: wait
//! at 512 pending) was measured to hand the GIL over every 512 posts in a two-thread post race
//! where the loop keeps up (`bench/RESULTS.md`): a condvar wait, a futex wake and a GIL
//! hand-over each time, for a batch that the loop runs in a fraction of a millisecond.
//!
//! The wait is bounded: when the loop does not come back within `patience` (it is stopping,
//! or its thread is blocked in a callback waiting for the posting thread), the thread posts
//! on, and only looks again after `STALL_CREDIT` times `check_every` further posts: a thread
//! that posts 10,000 callbacks to a stuck loop loses a few patiences. (Letting the rest of the
//! epoch through unthrottled instead was measured to let a timed-out wait on a busy machine
//! turn into seconds of backlog.) Nothing is dropped or reordered: the gate only delays the
//! posting thread.
//!
//! Every `note_post` and `next_epoch` runs with the GIL held (they are called by Python
//! methods and by the loop between callbacks), so they never race each other; the atomics
//! make the gate `Sync` and serve the waits, which run without the GIL.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// XTDBG: temporary counters (checks, waits, timeouts, non-empty epochs).
pub static XT_STATS: [AtomicU64; 4] = [
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
];

/// After a timed-out wait, how many `check_every` posts go through before the next check.
const STALL_CREDIT: usize = 8;

/// When a posting thread should wait for the loop.
#[derive(Clone, Copy, Debug)]
pub struct GateLimits {
    /// Posts between two looks at the clock.
    pub check_every: usize,
    /// The loop is behind once the oldest pending post is this old.
    pub max_age: Duration,
    /// The loop is behind once this many posts are pending, however recent.
    pub depth_max: usize,
    /// The longest a thread waits for one epoch.
    pub patience: Duration,
}

/// Counts cross-thread posts per batch and makes posting threads wait for a loop behind.
pub struct PostGate {
    /// Posts since the loop last took a batch.
    pending: AtomicUsize,
    /// `pending` count at which the next post looks at the clock.
    next_check: AtomicUsize,
    /// When the first post of this epoch was made (nanoseconds since `origin`).
    first_post: AtomicU64,
    /// The thresholds.
    limits: GateLimits,
    /// The zero of `first_post`.
    origin: Instant,
    /// Incremented each time the loop takes a batch (and when it stops).
    epoch: AtomicU64,
    /// Threads waiting in `wait_for_next_batch`.
    waiters: AtomicUsize,
    /// Guards the waits (the epoch itself is atomic).
    lock: Mutex<()>,
    /// Signalled when the epoch changes while threads wait.
    next_batch: Condvar,
}

impl PostGate {
    /// A gate with these thresholds.
    pub fn new(limits: GateLimits) -> Self {
        let limits = GateLimits {
            check_every: limits.check_every.max(1),
            depth_max: limits.depth_max.max(1),
            ..limits
        };
        PostGate {
            pending: AtomicUsize::new(0),
            next_check: AtomicUsize::new(limits.check_every.min(limits.depth_max)),
            first_post: AtomicU64::new(0),
            limits,
            origin: Instant::now(),
            epoch: AtomicU64::new(1),
            waiters: AtomicUsize::new(0),
            lock: Mutex::new(()),
            next_batch: Condvar::new(),
        }
    }

    /// Nanoseconds since `origin`.
    fn now(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }

    /// Records one post. Returns the epoch to wait for the end of when the poster should wait
    /// (the loop is behind), else `None`.
    #[inline]
    pub fn note_post(&self) -> Option<u64> {
        let pending = self.pending.fetch_add(1, Ordering::Relaxed) + 1;
        if pending == 1 {
            self.first_post.store(self.now(), Ordering::Relaxed);
        }
        if pending < self.next_check.load(Ordering::Relaxed) {
            return None;
        }
        self.check(pending)
    }

    /// The slow half of `note_post`: is the loop behind? If not, the next look is
    /// `check_every` posts later (or at `depth_max`).
    #[cold]
    fn check(&self, pending: usize) -> Option<u64> {
        XT_STATS[0].fetch_add(1, Ordering::Relaxed);
        let age = self
            .now()
            .saturating_sub(self.first_post.load(Ordering::Relaxed));
        if pending < self.limits.depth_max && age < self.limits.max_age.as_nanos() as u64 {
            let next = (pending + self.limits.check_every).min(self.limits.depth_max);
            self.next_check.store(next, Ordering::Relaxed);
            return None;
        }
        // Behind: every further post of this epoch looks again (and waits).
        Some(self.epoch.load(Ordering::SeqCst))
    }

    /// The poster told to wait by `note_post` will not (the loop is not running, or this is
    /// its own thread): the next look is `check_every` posts later.
    pub fn skip_wait(&self) {
        let pending = self.pending.load(Ordering::Relaxed);
        self.next_check
            .store(pending + self.limits.check_every, Ordering::Relaxed);
    }

    /// Blocks until the loop leaves `epoch` (takes a batch or stops) or `patience` runs out.
    /// Returns false on a timeout. Call it without holding the GIL.
    pub fn wait_for_next_batch(&self, epoch: u64) -> bool {
        XT_STATS[1].fetch_add(1, Ordering::Relaxed);
        let deadline = Instant::now() + self.limits.patience;
        let mut guard = match self.lock.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let moved_on = loop {
            if self.epoch.load(Ordering::SeqCst) != epoch {
                break true;
            }
            let now = Instant::now();
            if now >= deadline {
                break false;
            }
            guard = match self.next_batch.wait_timeout(guard, deadline - now) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        };
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        drop(guard);
        if !moved_on {
            XT_STATS[2].fetch_add(1, Ordering::Relaxed);
        }
        if !moved_on && self.epoch.load(Ordering::SeqCst) == epoch {
            // The GIL is not held here: `fetch_max`, as the loop may not move on meanwhile
            // and other timed-out posters raise it too.
            let pending = self.pending.load(Ordering::Relaxed);
            let allowed = pending + self.limits.check_every * STALL_CREDIT;
            self.next_check.fetch_max(allowed, Ordering::Relaxed);
        }
        moved_on
    }

    /// In a child made by `fork()`: the posts counted and the threads waiting were the
    /// parent's (those threads do not exist in the child). Forgets them and starts a new
    /// epoch, so that the child's first posts are not throttled for the parent's backlog and
    /// `next_epoch` does not take the lock to wake nobody.
    pub fn reset_after_fork(&self) {
        self.waiters.store(0, Ordering::SeqCst);
        self.reset_counts();
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// A new epoch's counts: nothing pending, the first look after `check_every` posts.
    fn reset_counts(&self) {
        self.pending.store(0, Ordering::Relaxed);
        self.next_check.store(
            self.limits.check_every.min(self.limits.depth_max),
            Ordering::Relaxed,
        );
    }

    /// The loop took its batch (or stopped): a new epoch starts, waiting posters resume.
    #[inline]
    pub fn next_epoch(&self) {
        if self.pending.load(Ordering::Relaxed) != 0 {
            XT_STATS[3].fetch_add(1, Ordering::Relaxed);
        }
        self.reset_counts();
        self.epoch.fetch_add(1, Ordering::SeqCst);
        if self.waiters.load(Ordering::SeqCst) != 0 {
            let _guard = match self.lock.lock() {
                Ok(guard) => guard,
                Err(poisoned) => poisoned.into_inner(),
            };
            self.next_batch.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn limits(check_every: usize, max_age_ms: u64, depth_max: usize) -> GateLimits {
        GateLimits {
            check_every,
            max_age: Duration::from_millis(max_age_ms),
            depth_max,
            patience: Duration::from_millis(5),
        }
    }

    #[test]
    fn a_loop_keeping_up_is_not_waited_for() {
        // A fresh epoch: the posts are recent, so looks at the clock let them through.
        let gate = PostGate::new(limits(2, 60_000, 1_000));
        for _ in 0..100 {
            assert_eq!(gate.note_post(), None);
        }
    }

    #[test]
    fn waits_once_the_oldest_post_is_old() {
        let gate = PostGate::new(limits(2, 20, 1_000));
        assert_eq!(gate.note_post(), None);
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(gate.note_post(), Some(1));
        // Behind: every further post of the epoch is told to wait.
        assert_eq!(gate.note_post(), Some(1));
        gate.next_epoch();
        assert_eq!(gate.note_post(), None);
        assert_eq!(gate.note_post(), None);
    }

    #[test]
    fn waits_at_the_depth_limit_however_recent() {
        let gate = PostGate::new(limits(2, 60_000, 3));
        assert_eq!(gate.note_post(), None);
        assert_eq!(gate.note_post(), None);
        assert_eq!(gate.note_post(), Some(1));
        gate.next_epoch();
        assert_eq!(gate.note_post(), None);
    }

    #[test]
    fn a_skipped_wait_looks_again_later() {
        let gate = PostGate::new(limits(4, 0, 1_000));
        for _ in 0..3 {
            assert_eq!(gate.note_post(), None);
        }
        assert!(gate.note_post().is_some());
        gate.skip_wait();
        for _ in 0..3 {
            assert_eq!(gate.note_post(), None);
        }
        assert!(gate.note_post().is_some());
    }

    #[test]
    fn a_timed_out_wait_lets_some_posts_through() {
        let gate = PostGate::new(limits(2, 60_000, 2));
        assert_eq!(gate.note_post(), None);
        let epoch = gate.note_post().unwrap();
        assert!(!gate.wait_for_next_batch(epoch));
        for _ in 0..2 * STALL_CREDIT - 1 {
            assert_eq!(gate.note_post(), None);
        }
        assert_eq!(gate.note_post(), Some(epoch));
        gate.next_epoch();
        assert_eq!(gate.note_post(), None);
    }

    #[test]
    fn reset_after_fork_forgets_posts_and_waiters() {
        let gate = PostGate::new(limits(2, 60_000, 2));
        assert_eq!(gate.note_post(), None);
        let epoch = gate.note_post().unwrap();
        assert!(!gate.wait_for_next_batch(epoch));
        gate.waiters.store(3, Ordering::SeqCst); // threads of the parent, gone in the child
        gate.reset_after_fork();
        assert_eq!(gate.waiters.load(Ordering::SeqCst), 0);
        assert_eq!(gate.pending.load(Ordering::SeqCst), 0);
        assert_eq!(gate.next_check.load(Ordering::SeqCst), 2);
        assert!(gate.epoch.load(Ordering::SeqCst) > epoch);
        assert_eq!(gate.note_post(), None);
    }

    #[test]
    fn next_epoch_releases_a_waiter() {
        let gate = Arc::new(PostGate::new(GateLimits {
            patience: Duration::from_secs(30),
            ..limits(1, 0, 1)
        }));
        let epoch = gate.note_post().unwrap();
        let waiter = {
            let gate = gate.clone();
            std::thread::spawn(move || gate.wait_for_next_batch(epoch))
        };
        while gate.waiters.load(Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
        let started = Instant::now();
        gate.next_epoch();
        assert!(waiter.join().unwrap());
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
