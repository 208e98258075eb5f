//! The loop's queue of ready callbacks: a first-in first-out ring whose append is a few
//! inlined instructions.
//!
//! `VecDeque::push_back` is compiled as an out-of-line call (its growth path makes it too
//! large to inline): about 19 instructions per `call_soon`, of which the call frame is half.
//! This ring keeps the append inline and only its growth out of line. Slots are `Option`s
//! (a null pointer for `None` with `Py`), so no uninitialised memory is involved.

/// A growable FIFO ring of `T` (its capacity a power of two).
pub struct ReadyQueue<T> {
    /// The slots; `len` of them, from `head` on (wrapping), are `Some`.
    slots: Vec<Option<T>>,
    /// Index of the first item.
    head: usize,
    /// Number of items.
    len: usize,
}

impl<T> Default for ReadyQueue<T> {
    fn default() -> Self {
        ReadyQueue {
            slots: Vec::new(),
            head: 0,
            len: 0,
        }
    }
}

impl<T> ReadyQueue<T> {
    /// Number of items.
    #[inline(always)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if there is no item.
    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `item` at the back.
    #[inline(always)]
    pub fn push_back(&mut self, item: T) {
        if self.len == self.slots.len() {
            self.grow();
        }
        // The capacity is a power of two (`grow`), so the mask keeps the index in bounds.
        let at = (self.head + self.len) & (self.slots.len() - 1);
        // SAFETY: `slots.len()` is a power of two (not 0 after `grow`), so `at` < `slots.len()`.
        let previous = unsafe { self.slots.get_unchecked_mut(at) }.replace(item);
        debug_assert!(previous.is_none());
        // The slot was empty: nothing to drop (and no generic drop code for it).
        std::mem::forget(previous);
        self.len += 1;
    }

    /// Removes and returns the front item.
    #[inline(always)]
    pub fn pop_front(&mut self) -> Option<T> {
        if self.len == 0 {
            return None;
        }
        // SAFETY: `head` < `slots.len()`: it starts at 0 and is always masked by a power of two
        // (`slots` is not empty while an item is queued).
        let item = unsafe { self.slots.get_unchecked_mut(self.head) }.take();
        self.head = (self.head + 1) & (self.slots.len() - 1);
        self.len -= 1;
        item
    }

    /// The items, front first.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        let mask = self.slots.len().wrapping_sub(1);
        (0..self.len).filter_map(move |i| self.slots[(self.head + i) & mask].as_ref())
    }

    /// Doubles the capacity (at least 16), the items moved to the front in order.
    #[cold]
    #[inline(never)]
    fn grow(&mut self) {
        let capacity = (self.slots.len() * 2).max(16);
        let mut slots: Vec<Option<T>> = Vec::with_capacity(capacity);
        let old = self.slots.len();
        for i in 0..self.len {
            slots.push(self.slots[(self.head + i) % old].take());
        }
        slots.resize_with(capacity, || None);
        self.slots = slots;
        self.head = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::ReadyQueue;

    #[test]
    fn fifo_across_wraps_and_growth() {
        let mut queue = ReadyQueue::default();
        let mut expected = std::collections::VecDeque::new();
        let mut next = 0;
        for round in 0..200 {
            for _ in 0..(round % 7) + 1 {
                queue.push_back(next);
                expected.push_back(next);
                next += 1;
            }
            for _ in 0..(round % 5) {
                assert_eq!(queue.pop_front(), expected.pop_front());
            }
            assert_eq!(queue.len(), expected.len());
            assert!(queue.iter().eq(expected.iter()));
        }
        while let Some(item) = expected.pop_front() {
            assert_eq!(queue.pop_front(), Some(item));
        }
        assert!(queue.is_empty());
        assert_eq!(queue.pop_front(), None);
    }
}
