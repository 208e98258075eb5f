//! The write buffer of a stream transport: what `write()` could not send at once, kept as a
//! queue of chunks and flushed with one vectored send per writability event.
//!
//! A `bytes` object written by the protocol is immutable, so the buffer keeps a reference to
//! it instead of copying (the common case for large writes). Other buffers (`bytearray`,
//! `memoryview`) may change after `write()` returns. CPython 3.11's socket transport copies
//! them (so does the pipe transport on every version); 3.12+'s socket transport keeps the
//! object itself: a bytearray buffered whole is sent as it is at send time (resized or not),
//! a memoryview (or the unsent tail of a partly sent bytearray, `memoryview(data)[n:]`) pins
//! its exporter's size but shows its current contents. [`Chunk::Live`] and [`Chunk::Pinned`]
//! are those two. Small copies are appended to the tail chunk to keep the iovec count low.

use std::collections::{TryReserveError, VecDeque};

use pyo3::exceptions::PyMemoryError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes};

use crate::transport::payload::ByteView;

/// Most iovecs handed to one `sendmsg`: enough to drain any realistic backlog in one call,
/// well under Linux's IOV_MAX (1024).
pub const MAX_IOVECS: usize = 64;

/// A copied chunk starts with at least this capacity, so that a run of small writes lands in
/// one chunk.
const MIN_OWNED_CAPACITY: usize = 16 * 1024;

/// A reference to the contents of a Python `bytes` object.
pub struct SharedBytes {
    /// Keeps the object, and so its contents, alive.
    _owner: Py<PyBytes>,
    ptr: *const u8,
    len: usize,
}

// SAFETY: `ptr` points into the immutable contents of `_owner`, which this struct keeps
// alive; the data is never written through it. The transport that holds write buffers is
// only touched with the GIL held (see `gil_cell.rs`), so the pointer is never used while the
// object could be freed.
unsafe impl Send for SharedBytes {}

impl SharedBytes {
    /// References the contents of `bytes`.
    pub fn new(bytes: &Bound<'_, PyBytes>) -> Self {
        let data = bytes.as_bytes();
        SharedBytes {
            ptr: data.as_ptr(),
            len: data.len(),
            _owner: bytes.clone().unbind(),
        }
    }

    fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr`/`len` describe the contents of `_owner`, alive as long as `self`.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// A buffer view held while its data waits in the buffer (a memoryview's semantics: the
/// exporter cannot be resized, its contents may change).
pub struct PinnedView(ByteView);

// SAFETY: the view is read and released only with the GIL held: write buffers live in
// transports touched only with the GIL (see `gil_cell.rs`) and are dropped by their
// deallocation, which runs with the GIL.
unsafe impl Send for PinnedView {}

impl PinnedView {
    /// Keeps `view` (taken from `write()`'s argument) until its data is sent.
    pub(crate) fn new(view: ByteView) -> Self {
        PinnedView(view)
    }
}

/// A bytearray queued by reference: its length and contents are read at each send.
pub struct LiveByteArray(Py<PyByteArray>);

impl LiveByteArray {
    /// Queues `bytearray` itself.
    pub fn new(bytearray: &Bound<'_, PyByteArray>) -> Self {
        LiveByteArray(bytearray.clone().unbind())
    }

    fn as_slice(&self) -> &[u8] {
        let obj = self.0.as_ptr();
        // SAFETY: called with the GIL held (write buffers are only touched with it); the
        // object is alive (owned here). The slice is used before any Python code can run (the
        // send that reads it, or a copy), so the bytearray cannot be resized meanwhile.
        unsafe {
            let len = ffi::PyByteArray_Size(obj);
            if len <= 0 {
                return &[];
            }
            std::slice::from_raw_parts(ffi::PyByteArray_AsString(obj) as *const u8, len as usize)
        }
    }
}

/// One buffered piece of data.
pub enum Chunk {
    /// Copied data.
    Owned(Vec<u8>),
    /// A `bytes` object's data, referenced.
    Shared(SharedBytes),
    /// A memoryview-like reference: fixed length, current contents.
    Pinned(PinnedView),
    /// A bytearray: current length and contents.
    Live(LiveByteArray),
}

impl Chunk {
    fn as_slice(&self) -> &[u8] {
        match self {
            Chunk::Owned(data) => data,
            Chunk::Shared(shared) => shared.as_slice(),
            Chunk::Pinned(view) => view.0.as_slice(),
            Chunk::Live(bytearray) => bytearray.as_slice(),
        }
    }
}

/// Data waiting to be sent, oldest first. One word while empty (the usual state of an idle
/// connection): the queue is allocated when data is first buffered and freed once sent.
#[derive(Default)]
pub struct WriteBuffer {
    queue: Option<Box<Queue>>,
}

#[derive(Default)]
struct Queue {
    chunks: VecDeque<Chunk>,
    /// Bytes of the front chunk already sent (never of a `Live` one: see `consume`).
    front_sent: usize,
    /// Unsent bytes of the chunks other than `Live` ones.
    len: usize,
    /// How many `Live` chunks are queued (their length is read when asked for).
    live: usize,
}

impl WriteBuffer {
    /// Unsent bytes (a queued bytearray counts with its current length, as asyncio 3.12+'s
    /// `sum(map(len, buffer))`).
    pub fn len(&self) -> usize {
        self.queue.as_ref().map_or(0, |q| q.len())
    }

    /// True when nothing is queued (the queue is freed once its last chunk is sent).
    pub fn is_empty(&self) -> bool {
        self.queue.is_none()
    }

    fn queue(&mut self) -> &mut Queue {
        self.queue.get_or_insert_with(Box::default)
    }

    /// Queues a copy of `data[skip..]`. Fails, queueing nothing, when the copy cannot be
    /// allocated (a huge write under memory pressure): the caller raises MemoryError, as
    /// CPython 3.11's transports do when their `bytearray.extend` fails, instead of Rust's
    /// default of aborting the process.
    pub fn push_copy(&mut self, data: &[u8], skip: usize) -> Result<(), TryReserveError> {
        if skip < data.len() {
            let pushed = self.queue().push_copy(data, skip);
            if pushed.is_err() && self.queue.as_ref().is_some_and(|q| q.is_empty()) {
                self.queue = None; // `is_empty()` must stay true
            }
            pushed?;
        }
        Ok(())
    }

    /// Queues `bytes` from offset `skip` on, by reference. `skip` may be non-zero only when
    /// the buffer is empty (the part a direct send already took).
    pub fn push_shared(&mut self, bytes: SharedBytes, skip: usize) {
        if skip < bytes.len {
            self.queue().push_shared(bytes, skip);
        }
    }

    /// Queues a held buffer view from offset `skip` on. `skip` may be non-zero only when the
    /// buffer is empty.
    pub fn push_pinned(&mut self, view: PinnedView, skip: usize) {
        if skip < view.0.len() {
            self.queue().push_pinned(view, skip);
        }
    }

    /// Queues a bytearray by reference (read at send time).
    pub fn push_live(&mut self, bytearray: LiveByteArray) {
        let queue = self.queue();
        queue.live += 1;
        queue.chunks.push_back(Chunk::Live(bytearray));
    }

    /// Describes up to `iovecs.len()` unsent pieces in `iovecs`; returns how many.
    pub fn fill_iovecs(&self, iovecs: &mut [libc::iovec]) -> usize {
        self.queue.as_ref().map_or(0, |q| q.fill_iovecs(iovecs))
    }

    /// Drops the first `sent` unsent bytes; frees the queue once it is empty. Fails only when
    /// the copy of a partly sent bytearray's rest cannot be allocated (the caller fails the
    /// transport with MemoryError, as asyncio 3.12+ does when its `b[n:]` fails).
    pub fn consume(&mut self, sent: usize) -> Result<(), TryReserveError> {
        if let Some(queue) = self.queue.as_mut() {
            let consumed = queue.consume(sent);
            if queue.chunks.is_empty() {
                self.queue = None;
            }
            consumed?;
        }
        Ok(())
    }

    /// Drops everything (abort, fatal error).
    pub fn clear(&mut self) {
        self.queue = None;
    }
}

/// The MemoryError a failed [`WriteBuffer::push_copy`] becomes (no message, as CPython's).
pub fn memory_error(_: TryReserveError) -> PyErr {
    PyMemoryError::new_err(())
}

impl Queue {
    fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    fn len(&self) -> usize {
        if self.live == 0 {
            return self.len;
        }
        let live: usize = self
            .chunks
            .iter()
            .filter(|chunk| matches!(chunk, Chunk::Live(_)))
            .map(|chunk| chunk.as_slice().len())
            .sum();
        self.len + live
    }

    fn push_pinned(&mut self, view: PinnedView, skip: usize) {
        debug_assert!(skip == 0 || self.is_empty());
        if self.is_empty() {
            self.front_sent = skip;
        }
        self.len += view.0.len() - skip;
        self.chunks.push_back(Chunk::Pinned(view));
    }

    fn push_copy(&mut self, data: &[u8], skip: usize) -> Result<(), TryReserveError> {
        let data = &data[skip..];
        if data.is_empty() {
            return Ok(());
        }
        if let Some(Chunk::Owned(tail)) = self.chunks.back_mut() {
            if tail.capacity() - tail.len() >= data.len() {
                tail.extend_from_slice(data);
                self.len += data.len();
                return Ok(());
            }
        }
        let mut owned = Vec::new();
        owned.try_reserve_exact(data.len().max(MIN_OWNED_CAPACITY))?;
        owned.extend_from_slice(data);
        self.chunks.try_reserve(1)?;
        self.chunks.push_back(Chunk::Owned(owned));
        self.len += data.len();
        Ok(())
    }

    fn push_shared(&mut self, bytes: SharedBytes, skip: usize) {
        debug_assert!(skip == 0 || self.is_empty());
        if skip >= bytes.len {
            return;
        }
        if self.is_empty() {
            self.front_sent = skip;
        }
        self.len += bytes.len - skip;
        self.chunks.push_back(Chunk::Shared(bytes));
    }

    fn fill_iovecs(&self, iovecs: &mut [libc::iovec]) -> usize {
        let mut count = 0;
        for (i, chunk) in self.chunks.iter().take(iovecs.len()).enumerate() {
            let mut data = chunk.as_slice();
            if i == 0 {
                data = &data[self.front_sent..];
            }
            iovecs[i] = libc::iovec {
                iov_base: data.as_ptr() as *mut libc::c_void,
                iov_len: data.len(),
            };
            count += 1;
        }
        count
    }

    /// Drops the first `sent` unsent bytes. A bytearray sent in part leaves a copy of its
    /// rest (asyncio 3.12+ queues `b[n:]`, a new bytearray); chunks that became empty (a
    /// bytearray cleared after `write()`) are dropped.
    fn consume(&mut self, mut sent: usize) -> Result<(), TryReserveError> {
        while let Some(front) = self.chunks.front_mut() {
            let left = front.as_slice().len().saturating_sub(self.front_sent);
            if sent < left {
                if sent == 0 {
                    break;
                }
                if let Chunk::Live(bytearray) = front {
                    let tail = &bytearray.as_slice()[sent..];
                    let mut rest = Vec::new();
                    rest.try_reserve_exact(tail.len())?;
                    rest.extend_from_slice(tail);
                    self.len += rest.len();
                    self.live -= 1;
                    *front = Chunk::Owned(rest);
                } else {
                    self.front_sent += sent;
                    self.len -= sent;
                }
                break;
            }
            sent -= left;
            if matches!(front, Chunk::Live(_)) {
                self.live -= 1;
            } else {
                self.len -= left;
            }
            self.front_sent = 0;
            self.chunks.pop_front();
        }
        if self.chunks.is_empty() {
            self.front_sent = 0;
            self.len = 0;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unsent(buffer: &WriteBuffer) -> Vec<u8> {
        let mut iovecs = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; MAX_IOVECS];
        let n = buffer.fill_iovecs(&mut iovecs);
        let mut out = Vec::new();
        for iov in &iovecs[..n] {
            // SAFETY: the iovecs describe live slices of `buffer`.
            out.extend_from_slice(unsafe {
                std::slice::from_raw_parts(iov.iov_base as *const u8, iov.iov_len)
            });
        }
        out
    }

    #[test]
    fn small_copies_coalesce_into_one_chunk() {
        let mut buffer = WriteBuffer::default();
        buffer.push_copy(b"xxhello", 2).unwrap();
        buffer.push_copy(b" world", 0).unwrap();
        assert_eq!(buffer.queue.as_ref().unwrap().chunks.len(), 1);
        assert_eq!(buffer.len(), 11);
        assert_eq!(unsent(&buffer), b"hello world");
    }

    #[test]
    fn consume_walks_across_chunks() {
        let mut buffer = WriteBuffer::default();
        let big = vec![b'a'; MIN_OWNED_CAPACITY];
        buffer.push_copy(&big, 0).unwrap();
        buffer.push_copy(b"bcd", 0).unwrap();
        assert_eq!(buffer.queue.as_ref().unwrap().chunks.len(), 2);
        buffer.consume(MIN_OWNED_CAPACITY - 1).unwrap();
        assert_eq!(unsent(&buffer), b"abcd");
        buffer.consume(2).unwrap();
        assert_eq!(unsent(&buffer), b"cd");
        assert_eq!(buffer.len(), 2);
        buffer.consume(2).unwrap();
        assert!(buffer.is_empty());
        assert!(buffer.queue.is_none());
    }

    #[test]
    fn clear_forgets_everything() {
        let mut buffer = WriteBuffer::default();
        buffer.push_copy(b"abc", 0).unwrap();
        buffer.clear();
        assert!(buffer.is_empty());
        assert_eq!(unsent(&buffer), b"");
    }

    #[test]
    fn live_bytearray_is_read_at_send_time_and_its_partly_sent_rest_copied() {
        Python::initialize();
        Python::attach(|py| {
            let mut buffer = WriteBuffer::default();
            buffer.push_copy(b"ab", 0).unwrap();
            let array = PyByteArray::new(py, b"cdef");
            buffer.push_live(LiveByteArray::new(&array));
            assert_eq!(buffer.len(), 6);
            // SAFETY: nothing else uses the bytearray's contents meanwhile.
            unsafe { array.as_bytes_mut()[0] = b'C' };
            array.call_method1("extend", (b"gh".as_slice(),)).unwrap();
            assert_eq!(buffer.len(), 8);
            assert_eq!(unsent(&buffer), b"abCdefgh");
            buffer.consume(4).unwrap();
            // The rest is a copy now: later changes are not sent.
            array.call_method1("extend", (b"ij".as_slice(),)).unwrap();
            assert_eq!(unsent(&buffer), b"efgh");
            assert_eq!(buffer.len(), 4);
            buffer.consume(4).unwrap();
            assert!(buffer.is_empty());
        });
    }

    #[test]
    fn emptied_live_bytearray_is_dropped() {
        Python::initialize();
        Python::attach(|py| {
            let mut buffer = WriteBuffer::default();
            let array = PyByteArray::new(py, b"xyz");
            buffer.push_live(LiveByteArray::new(&array));
            array.call_method1("clear", ()).unwrap();
            assert_eq!(buffer.len(), 0);
            assert!(!buffer.is_empty());
            buffer.consume(0).unwrap();
            assert!(buffer.is_empty());
        });
    }

    #[test]
    fn shared_bytes_are_referenced_with_skip() {
        Python::initialize();
        Python::attach(|py| {
            let mut buffer = WriteBuffer::default();
            let bytes = PyBytes::new(py, b"0123456789");
            buffer.push_shared(SharedBytes::new(&bytes), 4);
            buffer.push_copy(b"ab", 0).unwrap();
            assert_eq!(buffer.len(), 8);
            assert_eq!(unsent(&buffer), b"456789ab");
            buffer.consume(7).unwrap();
            assert_eq!(unsent(&buffer), b"b");
        });
    }
}
