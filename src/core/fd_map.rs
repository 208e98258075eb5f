//! Maps keyed by file descriptor: a table indexed by the descriptor, in pages.
//!
//! The kernel hands out the lowest free descriptor, so a process's descriptors are dense small
//! integers: an array indexed by them needs no hashing, no key stored beside each value and no
//! spare capacity beyond the last partly used page. A hash map kept for 5,000 connections had
//! 8,192 buckets of key, value and control byte, every one touched (resident), plus the tables
//! it outgrew; here 79 pages of 64 slots hold them. Measured with the loop's two maps (watches,
//! transports), 5,000 idle connections: 677 → 536 bytes of RSS per connection (CPython 3.11).
//!
//! Pages are allocated when a descriptor in their range is first inserted and freed when their
//! last entry goes, so a burst of connections does not pin its memory after they close. A
//! descriptor beyond `PAGED_LIMIT` (or a negative key, which no descriptor is) goes to a small
//! hash map instead, so no key ever makes the page index huge.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Slots per page (a power of two).
const PAGE: usize = 64;
/// Keys from 0 up to this (exclusive) are paged; others go to the overflow map. 2^22 keys take
/// at most 64 Ki page pointers (512 KiB), and only if a descriptor that high is used.
const PAGED_LIMIT: i32 = 1 << 22;

/// One page of slots and how many of them are occupied.
struct Page<V> {
    slots: [Option<V>; PAGE],
    used: usize,
}

impl<V> Page<V> {
    fn new() -> Box<Self> {
        Box::new(Page {
            slots: std::array::from_fn(|_| None),
            used: 0,
        })
    }
}

/// A map from file descriptor to `V`.
pub struct FdMap<V> {
    pages: Vec<Option<Box<Page<V>>>>,
    /// Keys outside `0..PAGED_LIMIT`.
    overflow: HashMap<i32, V, BuildHasherDefault<FdHasher>>,
    len: usize,
}

impl<V> Default for FdMap<V> {
    fn default() -> Self {
        FdMap {
            pages: Vec::new(),
            overflow: HashMap::default(),
            len: 0,
        }
    }
}

/// Page and slot of a paged key.
#[inline]
fn split(fd: i32) -> Option<(usize, usize)> {
    (0..PAGED_LIMIT)
        .contains(&fd)
        .then_some((fd as usize / PAGE, fd as usize % PAGE))
}

impl<V> FdMap<V> {
    /// How many descriptors have an entry.
    pub fn len(&self) -> usize {
        self.len
    }

    /// No descriptor has an entry.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The entry of `fd`.
    #[inline]
    pub fn get(&self, fd: &i32) -> Option<&V> {
        match split(*fd) {
            Some((page, slot)) => self.pages.get(page)?.as_ref()?.slots[slot].as_ref(),
            None => self.overflow.get(fd),
        }
    }

    /// The entry of `fd`, mutably.
    #[inline]
    pub fn get_mut(&mut self, fd: &i32) -> Option<&mut V> {
        match split(*fd) {
            Some((page, slot)) => self.pages.get_mut(page)?.as_mut()?.slots[slot].as_mut(),
            None => self.overflow.get_mut(fd),
        }
    }

    /// Sets the entry of `fd`; returns the previous one.
    pub fn insert(&mut self, fd: i32, value: V) -> Option<V> {
        let Some((page, slot)) = split(fd) else {
            let previous = self.overflow.insert(fd, value);
            self.len += previous.is_none() as usize;
            return previous;
        };
        if self.pages.len() <= page {
            self.pages.resize_with(page + 1, || None);
        }
        let page = self.pages[page].get_or_insert_with(Page::new);
        let previous = page.slots[slot].replace(value);
        if previous.is_none() {
            page.used += 1;
            self.len += 1;
        }
        previous
    }

    /// The entry of `fd`, created with `V::default()` if there is none.
    pub fn get_or_insert_default(&mut self, fd: i32) -> &mut V
    where
        V: Default,
    {
        if self.get(&fd).is_none() {
            self.insert(fd, V::default());
        }
        self.get_mut(&fd).expect("just inserted")
    }

    /// Removes the entry of `fd` and returns it; a page left empty is freed.
    pub fn remove(&mut self, fd: &i32) -> Option<V> {
        let Some((page, slot)) = split(*fd) else {
            let removed = self.overflow.remove(fd);
            self.len -= removed.is_some() as usize;
            return removed;
        };
        let entry = self.pages.get_mut(page)?;
        let removed = entry.as_mut()?.slots[slot].take()?;
        self.len -= 1;
        let emptied = entry.as_mut().is_some_and(|p| {
            p.used -= 1;
            p.used == 0
        });
        if emptied {
            *entry = None;
            while matches!(self.pages.last(), Some(None)) {
                self.pages.pop();
            }
        }
        Some(removed)
    }

    /// Every entry with its descriptor: paged ones in descriptor order, then the others.
    pub fn iter(&self) -> impl Iterator<Item = (i32, &V)> {
        let pages = self.pages.iter().map(|page| Some(&page.as_ref()?.slots));
        paged_entries(pages, Option::as_ref).chain(self.overflow.iter().map(|(fd, v)| (*fd, v)))
    }

    /// `iter`, mutably.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (i32, &mut V)> {
        let pages = self
            .pages
            .iter_mut()
            .map(|page| Some(&mut page.as_mut()?.slots));
        paged_entries(pages, Option::as_mut).chain(self.overflow.iter_mut().map(|(fd, v)| (*fd, v)))
    }

    /// Every entry.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.iter().map(|(_, v)| v)
    }

    /// Every entry, taken out of the map.
    pub fn into_values(self) -> impl Iterator<Item = V> {
        self.pages
            .into_iter()
            .flatten()
            .flat_map(|page| page.slots.into_iter().flatten())
            .chain(self.overflow.into_values())
    }
}

/// The occupied slots of `pages` (each page's slots, or None for a page not allocated) with
/// their descriptors, in descriptor order; `entry` turns a slot into its entry if it has one
/// (`Option::as_ref` or `Option::as_mut`): the one walk behind `iter` and `iter_mut`.
fn paged_entries<S, E>(
    pages: impl Iterator<Item = Option<S>>,
    entry: impl Fn(S::Item) -> Option<E> + Copy,
) -> impl Iterator<Item = (i32, E)>
where
    S: IntoIterator,
{
    pages
        .enumerate()
        .filter_map(|(index, slots)| Some((index, slots?)))
        .flat_map(move |(index, slots)| {
            slots
                .into_iter()
                .enumerate()
                .filter_map(move |(slot, v)| Some(((index * PAGE + slot) as i32, entry(v)?)))
        })
}

/// Hashes one descriptor (an `i32`) by Fibonacci multiplication (the overflow map's keys).
#[derive(Default, Clone, Copy)]
pub struct FdHasher(u64);

/// 2^64 divided by the golden ratio, odd: multiplying by it permutes the 64-bit integers
/// and moves the differences of small keys into the high bits.
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

impl Hasher for FdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only reached for keys other than integers; not used by `FdMap`, kept correct.
        for &byte in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(byte)).wrapping_mul(GOLDEN);
        }
    }

    fn write_i32(&mut self, fd: i32) {
        self.0 = (self.0 ^ u64::from(fd as u32)).wrapping_mul(GOLDEN);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_map_and_unmap() {
        // Miri (scripts/memcheck.sh) interprets every step: a smaller map there.
        let count: i32 = if cfg!(miri) { 512 } else { 10_000 };
        let mut map: FdMap<usize> = FdMap::default();
        for fd in 0..count {
            assert_eq!(map.insert(fd, fd as usize * 2), None);
        }
        assert_eq!(map.len(), count as usize);
        assert!((0..count).all(|fd| map.get(&fd) == Some(&(fd as usize * 2))));
        for fd in (0..count).step_by(2) {
            assert_eq!(map.remove(&fd), Some(fd as usize * 2));
        }
        assert_eq!(map.get(&4), None);
        assert_eq!(map.remove(&4), None);
        assert_eq!(map.get(&5), Some(&10));
        assert_eq!(map.len(), count as usize / 2);
        assert_eq!(map.insert(5, 1), Some(10));
        assert_eq!(map.len(), count as usize / 2);
    }

    #[test]
    fn iteration_is_in_descriptor_order_and_pages_are_freed() {
        let mut map: FdMap<i32> = FdMap::default();
        for fd in [700, 3, 64, 65, 0] {
            map.insert(fd, -fd);
        }
        let seen: Vec<(i32, i32)> = map.iter().map(|(fd, v)| (fd, *v)).collect();
        assert_eq!(seen, [(0, 0), (3, -3), (64, -64), (65, -65), (700, -700)]);
        for (_, v) in map.iter_mut() {
            *v *= 2;
        }
        assert_eq!(map.values().sum::<i32>(), -2 * 832);
        map.remove(&64);
        map.remove(&65);
        assert!(map.pages[1].is_none(), "an emptied page is freed");
        map.remove(&700);
        assert_eq!(map.pages.len(), 1, "trailing empty pages are dropped");
        assert_eq!(map.into_values().collect::<Vec<_>>(), [0, -6]);
    }

    #[test]
    fn keys_outside_the_paged_range_work_too() {
        let mut map: FdMap<&str> = FdMap::default();
        map.insert(-1, "negative");
        map.insert(PAGED_LIMIT, "high");
        map.insert(1, "low");
        assert_eq!(map.len(), 3);
        assert_eq!(map.get(&-1), Some(&"negative"));
        assert_eq!(map.get(&PAGED_LIMIT), Some(&"high"));
        *map.get_or_insert_default(-1) = "changed";
        assert_eq!(map.get(&-1), Some(&"changed"));
        assert_eq!(*map.get_or_insert_default(9), "");
        assert_eq!(map.remove(&PAGED_LIMIT), Some("high"));
        assert_eq!(map.len(), 3);
        assert!(map.pages.len() == 1);
        let mut all: Vec<i32> = map.iter().map(|(fd, _)| fd).collect();
        all.sort_unstable();
        assert_eq!(all, [-1, 1, 9]);
    }

    #[test]
    fn consecutive_descriptors_differ_in_the_high_bits() {
        let hash = |fd: i32| {
            let mut h = FdHasher::default();
            h.write_i32(fd);
            h.finish() >> 57 // the 7 bits hashbrown stores as the control byte
        };
        let distinct: std::collections::HashSet<u64> = (0..64).map(hash).collect();
        assert!(
            distinct.len() > 32,
            "control bytes barely vary: {}",
            distinct.len()
        );
    }
}
