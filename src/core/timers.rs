//! The timer queue: a binary heap of deadlines with lazy purging of cancelled entries.
//!
//! Timers are ordered by `when`, then by insertion order, so timers due at the same instant run
//! in the order they were scheduled (stricter than asyncio's heap, which leaves ties unordered).
//! A cancelled timer stays in the heap until it reaches the top or until cancelled entries make
//! up more than half of the heap, at which point the heap is rebuilt without them: memory held
//! by cancelled timers stays bounded by the live ones (rloop never purges; a million cancelled
//! one-hour timers cost it ~184 MiB).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// Below this many entries a rebuild is not worth it; cancelled entries are popped as they
/// surface instead.
const MIN_ENTRIES_FOR_PURGE: usize = 64;

/// Something that can be stored in the timer queue.
pub trait TimerEntry {
    /// Whether the timer was cancelled (it must not run, and may be dropped).
    fn is_cancelled(&self) -> bool;
}

struct Slot<T> {
    /// Deadline and insertion order packed into one integer, so that a heap comparison is a
    /// single `u128` compare (see `order_key`).
    key: u128,
    when: f64,
    item: T,
}

/// Maps a deadline to a `u64` whose unsigned order is the float's numeric order (the usual
/// sign-flip trick: negatives have all bits inverted, non-negatives get the sign bit set).
fn ordered_bits(when: f64) -> u64 {
    let bits = when.to_bits();
    if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    }
}

/// The heap key of a timer: std's heap is a max-heap, so the key is inverted to pop the
/// earliest deadline (then the earliest insertion) first.
fn order_key(when: f64, seq: u64) -> u128 {
    !((u128::from(ordered_bits(when)) << 64) | u128::from(seq))
}

impl<T> PartialEq for Slot<T> {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}
impl<T> Eq for Slot<T> {}
impl<T> PartialOrd for Slot<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Slot<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key.cmp(&other.key)
    }
}

/// A min-heap of timers keyed by deadline, then by insertion order.
pub struct TimerQueue<T> {
    heap: BinaryHeap<Slot<T>>,
    next_seq: u64,
    cancelled: usize,
}

impl<T: TimerEntry> Default for TimerQueue<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: TimerEntry> TimerQueue<T> {
    /// An empty queue.
    pub fn new() -> Self {
        TimerQueue {
            heap: BinaryHeap::new(),
            next_seq: 0,
            cancelled: 0,
        }
    }

    /// Number of entries, cancelled ones included.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// True if no entry is stored.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Adds a timer due at `when`.
    pub fn push(&mut self, when: f64, item: T) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.heap.push(Slot {
            key: order_key(when, seq),
            when,
            item,
        });
    }

    /// Records that one stored timer was cancelled.
    pub fn note_cancelled(&mut self) {
        self.cancelled += 1;
    }

    /// Number of cancelled entries still stored (as reported through [`note_cancelled`]).
    ///
    /// [`note_cancelled`]: TimerQueue::note_cancelled
    pub fn cancelled_count(&self) -> usize {
        self.cancelled
    }

    /// Removes cancelled entries: all of them if they are more than half of the heap, else only
    /// those at the top. Returns the removed items so that the caller drops them outside any
    /// borrow (dropping a Python object can run arbitrary code).
    pub fn purge_cancelled(&mut self) -> Vec<T> {
        let mut removed = Vec::new();
        if self.heap.len() >= MIN_ENTRIES_FOR_PURGE && self.cancelled * 2 > self.heap.len() {
            let old = std::mem::take(&mut self.heap).into_vec();
            let mut live = Vec::with_capacity(old.len() - self.cancelled.min(old.len()));
            for slot in old {
                if slot.item.is_cancelled() {
                    removed.push(slot.item);
                } else {
                    live.push(slot);
                }
            }
            self.heap = BinaryHeap::from(live);
            self.cancelled = 0;
        } else {
            while let Some(top) = self.heap.peek() {
                if !top.item.is_cancelled() {
                    break;
                }
                if let Some(slot) = self.heap.pop() {
                    self.cancelled = self.cancelled.saturating_sub(1);
                    removed.push(slot.item);
                }
            }
        }
        removed
    }

    /// Deadline of the earliest live timer, after dropping cancelled ones from the top.
    pub fn next_deadline(&self) -> Option<f64> {
        self.heap.peek().map(|s| s.when)
    }

    /// Pops the earliest timer if it is due before `end` (cancelled ones included; the caller
    /// skips them and they are counted out of the cancelled tally here).
    /// A NaN deadline is due at once, as in asyncio (`when >= end` is false for NaN).
    pub fn pop_due(&mut self, end: f64) -> Option<T> {
        let when = self.heap.peek()?.when;
        if when < end || when.is_nan() {
            let slot = self.heap.pop()?;
            if slot.item.is_cancelled() {
                self.cancelled = self.cancelled.saturating_sub(1);
            }
            Some(slot.item)
        } else {
            None
        }
    }

    /// Removes every entry, returning them for dropping outside any borrow.
    pub fn drain_all(&mut self) -> Vec<T> {
        self.cancelled = 0;
        std::mem::take(&mut self.heap)
            .into_vec()
            .into_iter()
            .map(|s| s.item)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    #[derive(Clone)]
    struct Fake {
        id: u32,
        cancelled: Rc<Cell<bool>>,
    }
    impl TimerEntry for Fake {
        fn is_cancelled(&self) -> bool {
            self.cancelled.get()
        }
    }
    fn fake(id: u32) -> Fake {
        Fake {
            id,
            cancelled: Rc::new(Cell::new(false)),
        }
    }

    fn drain_ids(q: &mut TimerQueue<Fake>, end: f64) -> Vec<u32> {
        let mut out = vec![];
        while let Some(t) = q.pop_due(end) {
            if !t.is_cancelled() {
                out.push(t.id);
            }
        }
        out
    }

    #[test]
    fn a_nan_deadline_is_due() {
        let mut q = TimerQueue::new();
        q.push(f64::NAN, fake(1));
        assert_eq!(drain_ids(&mut q, 0.0), vec![1]);
    }

    #[test]
    fn pops_in_deadline_order() {
        let mut q = TimerQueue::new();
        q.push(3.0, fake(3));
        q.push(1.0, fake(1));
        q.push(2.0, fake(2));
        assert_eq!(q.next_deadline(), Some(1.0));
        assert_eq!(drain_ids(&mut q, 10.0), vec![1, 2, 3]);
        assert!(q.is_empty());
    }

    #[test]
    fn equal_deadlines_keep_insertion_order() {
        let mut q = TimerQueue::new();
        for id in 0..100 {
            q.push(5.0, fake(id));
        }
        assert_eq!(drain_ids(&mut q, 10.0), (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn negative_and_mixed_deadlines_order_numerically() {
        let mut q = TimerQueue::new();
        let whens = [3.5, -1.0, 0.0, -7.25, 1e9, -0.0, 2.0];
        for (i, w) in whens.iter().enumerate() {
            q.push(*w, fake(i as u32));
        }
        let mut popped = Vec::new();
        while let Some(t) = q.pop_due(f64::INFINITY) {
            popped.push(whens[t.id as usize]);
        }
        // -0.0 sorts before 0.0 by bits; both are "now": only the non-zero order matters.
        assert_eq!(popped, vec![-7.25, -1.0, -0.0, 0.0, 2.0, 3.5, 1e9]);
    }

    #[test]
    fn only_due_timers_pop() {
        let mut q = TimerQueue::new();
        q.push(1.0, fake(1));
        q.push(2.0, fake(2));
        assert_eq!(drain_ids(&mut q, 1.5), vec![1]);
        assert_eq!(q.len(), 1);
        // `end` is exclusive.
        assert_eq!(drain_ids(&mut q, 2.0), Vec::<u32>::new());
    }

    #[test]
    fn purge_rebuilds_when_most_are_cancelled() {
        let mut q = TimerQueue::new();
        let items: Vec<Fake> = (0..1000).map(fake).collect();
        for (i, it) in items.iter().enumerate() {
            q.push(i as f64, it.clone());
        }
        for it in items
            .iter()
            .skip(1)
            .step_by(2)
            .chain(items.iter().skip(2).step_by(4))
        {
            if !it.cancelled.get() {
                it.cancelled.set(true);
                q.note_cancelled();
            }
        }
        assert!(q.cancelled_count() * 2 > q.len());
        let removed = q.purge_cancelled();
        assert_eq!(removed.len(), 750);
        assert_eq!(q.len(), 250);
        assert_eq!(q.cancelled_count(), 0);
        let ids = drain_ids(&mut q, f64::INFINITY);
        assert_eq!(ids.len(), 250);
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn purge_pops_cancelled_head_only_when_few() {
        let mut q = TimerQueue::new();
        let items: Vec<Fake> = (0..10).map(fake).collect();
        for (i, it) in items.iter().enumerate() {
            q.push(i as f64, it.clone());
        }
        items[0].cancelled.set(true);
        items[5].cancelled.set(true);
        q.note_cancelled();
        q.note_cancelled();
        let removed = q.purge_cancelled();
        assert_eq!(removed.len(), 1);
        assert_eq!(q.next_deadline(), Some(1.0));
        assert_eq!(q.cancelled_count(), 1);
    }
}
