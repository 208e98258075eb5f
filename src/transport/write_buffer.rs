//! The write buffer of a stream transport: what `write()` could not send at once, kept as a
//! queue of chunks and flushed with one vectored send per writability event.
//!
//! A `bytes` object written by the protocol is immutable, so the buffer keeps a reference to
//! it instead of copying (the common case for large writes). Other buffers (`bytearray`,
//! `memoryview`) may change after `write()` returns, so they are copied; small copies are
//! appended to the tail chunk to keep the iovec count low.

use std::collections::VecDeque;

use pyo3::prelude::*;
use pyo3::types::PyBytes;

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

/// One buffered piece of data.
pub enum Chunk {
    /// Copied data.
    Owned(Vec<u8>),
    /// A `bytes` object's data, referenced.
    Shared(SharedBytes),
}

impl Chunk {
    fn as_slice(&self) -> &[u8] {
        match self {
            Chunk::Owned(data) => data,
            Chunk::Shared(shared) => shared.as_slice(),
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
    /// Bytes of the front chunk already sent.
    front_sent: usize,
    /// Unsent bytes in all.
    len: usize,
}

impl WriteBuffer {
    /// Unsent bytes.
    pub fn len(&self) -> usize {
        self.queue.as_ref().map_or(0, |q| q.len)
    }

    /// True when everything was sent.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn queue(&mut self) -> &mut Queue {
        self.queue.get_or_insert_with(Box::default)
    }

    /// Queues a copy of `data[skip..]`.
    pub fn push_copy(&mut self, data: &[u8], skip: usize) {
        if skip < data.len() {
            self.queue().push_copy(data, skip);
        }
    }

    /// Queues `bytes` from offset `skip` on, by reference. `skip` may be non-zero only when
    /// the buffer is empty (the part a direct send already took).
    pub fn push_shared(&mut self, bytes: SharedBytes, skip: usize) {
        if skip < bytes.len {
            self.queue().push_shared(bytes, skip);
        }
    }

    /// Describes up to `iovecs.len()` unsent pieces in `iovecs`; returns how many.
    pub fn fill_iovecs(&self, iovecs: &mut [libc::iovec]) -> usize {
        self.queue.as_ref().map_or(0, |q| q.fill_iovecs(iovecs))
    }

    /// Drops the first `sent` unsent bytes; frees the queue once it is empty.
    pub fn consume(&mut self, sent: usize) {
        if let Some(queue) = self.queue.as_mut() {
            queue.consume(sent);
            if queue.len == 0 {
                self.queue = None;
            }
        }
    }

    /// Drops everything (abort, fatal error).
    pub fn clear(&mut self) {
        self.queue = None;
    }
}

impl Queue {
    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn push_copy(&mut self, data: &[u8], skip: usize) {
        let data = &data[skip..];
        if data.is_empty() {
            return;
        }
        self.len += data.len();
        if let Some(Chunk::Owned(tail)) = self.chunks.back_mut() {
            if tail.capacity() - tail.len() >= data.len() {
                tail.extend_from_slice(data);
                return;
            }
        }
        let mut owned = Vec::with_capacity(data.len().max(MIN_OWNED_CAPACITY));
        owned.extend_from_slice(data);
        self.chunks.push_back(Chunk::Owned(owned));
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

    fn consume(&mut self, mut sent: usize) {
        debug_assert!(sent <= self.len);
        self.len -= sent.min(self.len);
        while sent > 0 {
            let Some(front) = self.chunks.front() else {
                break;
            };
            let left = front.as_slice().len() - self.front_sent;
            if sent < left {
                self.front_sent += sent;
                return;
            }
            sent -= left;
            self.front_sent = 0;
            self.chunks.pop_front();
        }
        if self.len == 0 {
            self.chunks.clear();
            self.front_sent = 0;
        }
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
        buffer.push_copy(b"xxhello", 2);
        buffer.push_copy(b" world", 0);
        assert_eq!(buffer.queue.as_ref().unwrap().chunks.len(), 1);
        assert_eq!(buffer.len(), 11);
        assert_eq!(unsent(&buffer), b"hello world");
    }

    #[test]
    fn consume_walks_across_chunks() {
        let mut buffer = WriteBuffer::default();
        let big = vec![b'a'; MIN_OWNED_CAPACITY];
        buffer.push_copy(&big, 0);
        buffer.push_copy(b"bcd", 0);
        assert_eq!(buffer.queue.as_ref().unwrap().chunks.len(), 2);
        buffer.consume(MIN_OWNED_CAPACITY - 1);
        assert_eq!(unsent(&buffer), b"abcd");
        buffer.consume(2);
        assert_eq!(unsent(&buffer), b"cd");
        assert_eq!(buffer.len(), 2);
        buffer.consume(2);
        assert!(buffer.is_empty());
        assert!(buffer.queue.is_none());
    }

    #[test]
    fn clear_forgets_everything() {
        let mut buffer = WriteBuffer::default();
        buffer.push_copy(b"abc", 0);
        buffer.clear();
        assert!(buffer.is_empty());
        assert_eq!(unsent(&buffer), b"");
    }

    #[test]
    fn shared_bytes_are_referenced_with_skip() {
        Python::initialize();
        Python::attach(|py| {
            let mut buffer = WriteBuffer::default();
            let bytes = PyBytes::new(py, b"0123456789");
            buffer.push_shared(SharedBytes::new(&bytes), 4);
            buffer.push_copy(b"ab", 0);
            assert_eq!(buffer.len(), 8);
            assert_eq!(unsent(&buffer), b"456789ab");
            buffer.consume(7);
            assert_eq!(unsent(&buffer), b"b");
        });
    }
}
