//! Backpressure for callbacks posted from other threads (`call_soon_threadsafe`).
//!
//! Posting threads and the loop share one GIL. Threads that post in a tight loop hold it most
//! of the time (the interpreter hands it over every switch interval, 5 ms, to whichever thread
//! waits), so they post faster than the loop runs their callbacks: the backlog grows every
//! iteration, and timers and I/O, which are only looked at between batches, come later and
//! later (seconds, with eight posting threads). Stock asyncio stays fair by accident: each
//! post writes to the self-pipe, a system call that hands the GIL back.
//!
//! The gate counts the posts since the loop last took its batch of ready callbacks. Once
//! `limit` are pending, a posting thread waits, without the GIL, until the loop takes the
//! next batch (a new *epoch*). The wait is bounded: when the loop does not come back within
//! `patience` (it is stopping, or its thread is blocked in a callback waiting for the posting
//! thread), the thread posts on, and only waits again after `STALL_CREDIT` limits' worth of
//! further posts: a thread that posts 10,000 callbacks to a stuck loop loses ~3 patiences.
//! (Letting the rest of the epoch through unthrottled instead was measured to let a timed-out
//! wait on a busy machine turn into seconds of backlog.)
//! Nothing is dropped or reordered: the gate only delays the posting thread.

use crate::core::futex;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// After a timed-out wait, how many limits' worth of posts go through before the next wait.
const STALL_CREDIT: usize = 8;

/// Counts cross-thread posts per batch and makes posting threads wait for the loop.
pub struct PostGate {
    /// Posts since the loop last took a batch.
    pending: AtomicUsize,
    /// How many pending posts make a posting thread wait.
    limit: usize,
    /// Extra pending posts allowed in this epoch after timed-out waits.
    allowance: AtomicUsize,
    /// The longest a thread waits for one epoch.
    patience: Duration,
    /// Incremented each time the loop takes a batch (and when it stops); waiting threads
    /// sleep on this word (`core::futex`). It wraps: a waiter only asks whether it changed.
    epoch: AtomicU32,
    /// Threads in `wait_for_next_batch`: the loop makes the wake system call only when some
    /// are. (A waiter counts itself before it looks at the epoch, the loop changes the epoch
    /// before it looks at the count, both sequentially consistent: either the waiter sees
    /// the new epoch, or the loop sees the waiter and wakes it.)
    waiters: AtomicUsize,
}

impl PostGate {
    /// A gate making threads wait once `limit` posts are pending, for at most `patience`.
    pub fn new(limit: usize, patience: Duration) -> Self {
        PostGate {
            pending: AtomicUsize::new(0),
            limit: limit.max(1),
            allowance: AtomicUsize::new(0),
            patience,
            epoch: AtomicU32::new(1),
            waiters: AtomicUsize::new(0),
        }
    }

    /// Records one post. Returns the epoch to wait for the end of when the poster should wait
    /// (the limit is reached), else `None`.
    ///
    /// The caller holds the GIL, as does every other writer of the count (`next_epoch` on the
    /// loop's thread, `reset_after_fork`): the count is a load and a store, no locked
    /// instruction. (Threads read it without the GIL only after a timed-out wait, where a stale
    /// value sizes the allowance a little differently.)
    #[inline]
    pub fn note_post(&self) -> Option<u32> {
        let pending = self.pending.load(Ordering::Relaxed) + 1;
        self.pending.store(pending, Ordering::Relaxed);
        if pending < self.limit + self.allowance.load(Ordering::Relaxed) {
            return None;
        }
        Some(self.epoch.load(Ordering::SeqCst))
    }

    /// Blocks until the loop leaves `epoch` (takes a batch or stops) or `patience` runs out.
    /// Returns false on a timeout. Call it without holding the GIL.
    pub fn wait_for_next_batch(&self, epoch: u32) -> bool {
        let deadline = Instant::now() + self.patience;
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let moved_on = loop {
            if self.epoch.load(Ordering::SeqCst) != epoch {
                break true;
            }
            let now = Instant::now();
            if now >= deadline {
                break false;
            }
            futex::wait(&self.epoch, epoch, deadline - now);
        };
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        if !moved_on {
            let pending = self.pending.load(Ordering::Relaxed);
            let allowed = pending.saturating_sub(self.limit) + self.limit * STALL_CREDIT;
            self.allowance.fetch_max(allowed, Ordering::Relaxed);
        }
        moved_on
    }

    /// In a child made by `fork()`: the posts counted and the threads waiting were the
    /// parent's (those threads do not exist in the child). Forgets them and starts a new
    /// epoch, so that the child's first posts are not throttled for the parent's backlog and
    /// `next_epoch` does not make a system call to wake nobody.
    pub fn reset_after_fork(&self) {
        self.waiters.store(0, Ordering::SeqCst);
        self.pending.store(0, Ordering::Relaxed);
        self.allowance.store(0, Ordering::Relaxed);
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// The loop takes its batch of ready callbacks: as `next_epoch`, but nothing at all (no
    /// locked instruction) when no post was counted in this epoch and no allowance is open:
    /// then no thread waits for this epoch's end (a poster counts its post, under the GIL, in
    /// the epoch it then waits for the end of; the loop calls this with the GIL held too), and
    /// the epoch's counters are already what a new epoch starts with. A busy loop without
    /// cross-thread posts thus makes no atomic read-modify-write per iteration.
    #[inline]
    pub fn batch_taken(&self) {
        if self.pending.load(Ordering::Relaxed) == 0 && self.allowance.load(Ordering::Relaxed) == 0
        {
            return;
        }
        self.next_epoch();
    }

    /// The loop took its batch (or stopped): a new epoch starts, waiting posters resume.
    #[inline]
    pub fn next_epoch(&self) {
        self.pending.store(0, Ordering::Relaxed);
        self.allowance.store(0, Ordering::Relaxed);
        self.epoch.fetch_add(1, Ordering::SeqCst);
        if self.waiters.load(Ordering::SeqCst) != 0 {
            futex::wake_all(&self.epoch);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn waits_only_at_the_limit() {
        let gate = PostGate::new(3, Duration::from_millis(10));
        assert_eq!(gate.note_post(), None);
        assert_eq!(gate.note_post(), None);
        assert_eq!(gate.note_post(), Some(1));
        gate.next_epoch();
        assert_eq!(gate.note_post(), None);
    }

    #[test]
    fn a_batch_without_posts_keeps_the_epoch() {
        let gate = PostGate::new(2, Duration::from_millis(10));
        let epoch = gate.epoch.load(Ordering::SeqCst);
        gate.batch_taken();
        assert_eq!(gate.epoch.load(Ordering::SeqCst), epoch);
        assert_eq!(gate.note_post(), None);
        assert_eq!(gate.note_post(), Some(epoch));
        gate.batch_taken();
        assert!(gate.epoch.load(Ordering::SeqCst) > epoch);
        assert_eq!(gate.pending.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_timed_out_wait_lets_some_posts_through() {
        let gate = PostGate::new(2, Duration::from_millis(5));
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
        let gate = PostGate::new(2, Duration::from_millis(5));
        assert_eq!(gate.note_post(), None);
        let epoch = gate.note_post().unwrap();
        assert!(!gate.wait_for_next_batch(epoch));
        gate.waiters.store(3, Ordering::SeqCst); // threads of the parent, gone in the child
        gate.reset_after_fork();
        assert_eq!(gate.waiters.load(Ordering::SeqCst), 0);
        assert_eq!(gate.pending.load(Ordering::SeqCst), 0);
        assert_eq!(gate.allowance.load(Ordering::SeqCst), 0);
        assert!(gate.epoch.load(Ordering::SeqCst) > epoch);
        assert_eq!(gate.note_post(), None);
    }

    #[test]
    fn next_epoch_releases_a_waiter() {
        let gate = Arc::new(PostGate::new(1, Duration::from_secs(30)));
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
