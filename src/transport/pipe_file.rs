//! What both pipe transports share: the pipe object they wrap (a Python file object, or
//! anything with `fileno()` and `close()`), the check of the descriptor's file type, making it
//! non-blocking, and the raw `read(2)`/`write(2)`/`writev(2)` calls.
//!
//! The checks and system calls run here, in Rust, so that no `os.fstat` or `os.read` is
//! called from Python on the loop's thread (blocking-call detectors watch those).

use std::io;

use pyo3::exceptions::PyValueError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use pyo3::{PyTraverseError, PyVisit};

use crate::event_loop::LoopCore;
use crate::interop::errors::os_error;
use crate::transport::core::{NativeTransport, TransportState};
use crate::transport::socket_info::warn_unclosed;
use crate::transport::write_buffer::{WriteBuffer, MAX_IOVECS};

/// asyncio's `max_size` of a pipe read: at most this many bytes per readiness event.
pub(crate) const PIPE_READ_SIZE: usize = 256 * 1024;

/// A pipe's capacity unless changed: Linux's default (16 pages).
pub(crate) const DEFAULT_PIPE_CAPACITY: usize = 64 * 1024;

/// The capacity a busy pipe of a child process is grown to (see [`grow_pipe`]): one read of
/// `PIPE_READ_SIZE` can then take what the child wrote meanwhile.
const BUSY_PIPE_CAPACITY: i32 = PIPE_READ_SIZE as i32;

/// Whether a pipe transport may grow its pipe, and whether it has done so.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub(crate) enum Growth {
    /// The pipe is not ours to resize (the default: a pipe the user passed in).
    #[default]
    Never,
    /// A pipe the loop created for a child: grown the first time it fills up.
    WhenFull,
    /// Grown (or the attempt failed): nothing more to do.
    Done,
}

/// Grows a pipe the loop created for a child to [`BUSY_PIPE_CAPACITY`] (`F_SETPIPE_SZ`), once
/// it has been seen full: a bulk transfer then takes a quarter of the system calls and
/// wake-ups (measured on 100 MB through `cat`). Only pipes seen full are grown: idle pipes
/// of many children keep the default size, so the per-user pipe-buffer limit
/// (`/proc/sys/fs/pipe-user-pages-soft`) is not reached by them. A failure (EPERM at that
/// limit, EBUSY) leaves the pipe as it is: only the speed differs.
pub(crate) fn grow_pipe(fd: i32, growth: &mut Growth) {
    if *growth != Growth::WhenFull {
        return;
    }
    *growth = Growth::Done;
    // SAFETY: F_SETPIPE_SZ only changes the capacity of the pipe behind `fd`.
    unsafe { libc::fcntl(fd, libc::F_SETPIPE_SZ, BUSY_PIPE_CAPACITY) };
}

/// The kind of file behind a descriptor, as far as the pipe transports care.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum FileKind {
    /// A pipe or a FIFO.
    Fifo,
    /// A socket.
    Socket,
    /// A character device (a tty or pty, `/dev/null`, ...).
    CharDevice,
    /// Anything else (a regular file, a directory, a block device): refused.
    Other,
}

/// `fstat(fd)`'s file type.
pub(crate) fn file_kind(fd: i32) -> io::Result<FileKind> {
    // SAFETY: an all-zero `stat` is a valid value for fstat to overwrite.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is writable for its size during the call.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(match st.st_mode & libc::S_IFMT {
        libc::S_IFIFO => FileKind::Fifo,
        libc::S_IFSOCK => FileKind::Socket,
        libc::S_IFCHR => FileKind::CharDevice,
        _ => FileKind::Other,
    })
}

/// `os.set_blocking(fd, False)`.
pub(crate) fn set_nonblocking(fd: i32) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor number; failure is reported through errno.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    if flags & libc::O_NONBLOCK != 0 {
        return Ok(());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The pipe object's descriptor, checked to be a pipe, FIFO, socket or character device
/// (else `ValueError(refusal)`), and made non-blocking. Returns the descriptor and its kind.
///
/// `child_pipe`: the pipe is one the loop's spawn created for a child (`spawn_child`), known
/// to be a pipe and already non-blocking on this end: no `fstat`, no `fcntl`.
pub(crate) fn open_pipe(
    pipe: &Bound<'_, PyAny>,
    refusal: &str,
    child_pipe: bool,
) -> PyResult<(i32, FileKind)> {
    let py = pipe.py();
    let fd: i32 = pipe.call_method0(intern!(py, "fileno"))?.extract()?;
    if child_pipe {
        return Ok((fd, FileKind::Fifo));
    }
    let kind = file_kind(fd).map_err(os_error)?;
    if kind == FileKind::Other {
        return Err(PyValueError::new_err(refusal.to_owned()));
    }
    set_nonblocking(fd).map_err(os_error)?;
    Ok((fd, kind))
}

/// The extra-info dict of a pipe transport: the caller's own dict (as asyncio keeps it), or a
/// new one, with `pipe` set.
pub(crate) fn pipe_extra<'py>(
    pipe: &Bound<'py, PyAny>,
    extra: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    let py = pipe.py();
    let extra = match extra {
        Some(extra) if !extra.is_none() => extra.cast::<PyDict>()?.clone(),
        _ => PyDict::new(py),
    };
    extra.set_item(intern!(py, "pipe"), pipe)?;
    Ok(extra)
}

/// What both pipe transports' states hold beside the shared `CoreState`: the pipe object and
/// the extra-info dict. The Python methods over them (`transport_pymethods!`'s `pipe` group)
/// are written once, in the functions below.
pub(crate) trait PipeState: TransportState {
    /// The pipe object (None once the connection is lost or the attribute was set to None)
    /// and the extra-info dict (None once the garbage collector cleared it).
    fn pipe_parts(&mut self) -> (&mut Option<Py<PyAny>>, &mut Option<Py<PyDict>>);
}

/// `get_extra_info(name, default)`: the extra-info dict's entry, or `default`.
pub(crate) fn pipe_extra_info<T>(
    transport: &T,
    py: Python<'_>,
    name: &Bound<'_, PyAny>,
    default: Option<Py<PyAny>>,
) -> PyResult<Py<PyAny>>
where
    T: NativeTransport<State: PipeState>,
{
    let extra = {
        let mut state = transport.state().borrow_mut(py);
        state.pipe_parts().1.as_ref().map(|e| e.clone_ref(py))
    };
    if let Some(extra) = extra {
        if let Some(value) = extra.bind(py).get_item(name)? {
            return Ok(value.unbind());
        }
    }
    Ok(default.unwrap_or_else(|| py.None()))
}

/// The `_pipe` attribute: the pipe object, None once the connection is lost.
pub(crate) fn pipe_of<T>(transport: &T, py: Python<'_>) -> Option<Py<PyAny>>
where
    T: NativeTransport<State: PipeState>,
{
    let mut state = transport.state().borrow_mut(py);
    state.pipe_parts().0.as_ref().map(|p| p.clone_ref(py))
}

/// Setting the `_pipe` attribute (None: the transport forgets the pipe).
pub(crate) fn replace_pipe<T>(transport: &T, py: Python<'_>, pipe: Option<Py<PyAny>>)
where
    T: NativeTransport<State: PipeState>,
{
    let previous = std::mem::replace(transport.state().borrow_mut(py).pipe_parts().0, pipe);
    drop(previous);
}

/// `__traverse__`: the protocol, the pipe object and the extra info.
pub(crate) fn traverse_pipe<T>(transport: &T, visit: PyVisit<'_>) -> Result<(), PyTraverseError>
where
    T: NativeTransport<State: PipeState>,
{
    // See StreamTransport::__traverse__: a borrowed state reports nothing.
    let Some(mut state) = transport.state().try_borrow_in_gc() else {
        return Ok(());
    };
    if let Some(protocol) = &state.core().protocol {
        visit.call(protocol)?;
    }
    let (pipe, extra) = state.pipe_parts();
    if let Some(pipe) = pipe {
        visit.call(&*pipe)?;
    }
    if let Some(extra) = extra {
        visit.call(&*extra)?;
    }
    Ok(())
}

/// `__clear__` of unreachable garbage: breaks the cycles (protocol ↔ transport, extra info).
/// The pipe stays, for `Drop` to warn about and close.
pub(crate) fn clear_pipe<T>(transport: &T)
where
    T: NativeTransport<State: PipeState>,
{
    let Some(mut state) = transport.state().try_borrow_in_gc() else {
        return;
    };
    let protocol = state.core_mut().protocol.take();
    let extra = state.pipe_parts().1.take();
    drop(state);
    drop((protocol, extra));
}

/// `pipe.close()`: closes the descriptor through the object that owns it.
pub(crate) fn close_pipe_object(py: Python<'_>, pipe: &Bound<'_, PyAny>) -> PyResult<()> {
    pipe.call_method0(intern!(py, "close")).map(drop)
}

/// `protocol.connection_lost(exc)`, unless the protocol is already gone.
pub(crate) fn notify_connection_lost(
    py: Python<'_>,
    protocol: Option<Py<PyAny>>,
    exc: &Bound<'_, PyAny>,
) -> PyResult<()> {
    match protocol {
        Some(protocol) => protocol
            .bind(py)
            .call_method1(intern!(py, "connection_lost"), (exc,))
            .map(drop),
        None => Ok(()),
    }
}

/// The end of `_call_connection_lost`: closes the pipe object the transport let go of (if
/// any), then drops it with the protocol and the loop.
pub(crate) fn release(
    py: Python<'_>,
    pipe: Option<Py<PyAny>>,
    protocol: Option<Py<PyAny>>,
    event_loop: Option<Py<LoopCore>>,
) -> PyResult<()> {
    let closed = match &pipe {
        Some(pipe) => close_pipe_object(py, pipe.bind(py)),
        None => Ok(()),
    };
    drop((pipe, protocol, event_loop));
    closed
}

/// What a pipe transport collected while open does (from its `Drop`), as asyncio's
/// `__del__`: the ResourceWarning, then the pipe object closed (an error is unraisable).
pub(crate) fn close_unclosed(py: Python<'_>, kind: &str, fd: i32, pipe: Option<Py<PyAny>>) {
    let Some(pipe) = pipe else {
        return;
    };
    warn_unclosed(py, kind, fd);
    if let Err(err) = close_pipe_object(py, pipe.bind(py)) {
        err.write_unraisable(py, None);
    }
}

/// What a pipe transport's repr shows.
pub(crate) struct PipeStatus {
    /// The class name.
    pub name: &'static str,
    /// The pipe object is still held (not yet closed by connection_lost).
    pub open: bool,
    /// The transport is closing.
    pub closing: bool,
    /// The descriptor.
    pub fd: i32,
    /// The loop watches the descriptor for us (reading, or writing for a write pipe).
    pub watching: bool,
    /// A write pipe's buffered byte count.
    pub buffered: Option<usize>,
}

/// asyncio's repr of a pipe transport: `closed`/`closing`, the descriptor, and while the loop
/// is open `polling`/`idle` (and a write pipe's `bufsize=`), else `open` or `closed`.
pub(crate) fn describe(
    py: Python<'_>,
    status: PipeStatus,
    event_loop: Option<Py<LoopCore>>,
) -> PyResult<String> {
    let mut info = vec![status.name.to_owned()];
    if !status.open {
        info.push("closed".into());
    } else if status.closing {
        info.push("closing".into());
    }
    info.push(format!("fd={}", status.fd));
    let loop_open = match event_loop {
        Some(l) => !l
            .bind(py)
            .call_method0(intern!(py, "is_closed"))?
            .is_truthy()?,
        None => false,
    };
    if status.open && loop_open {
        info.push(if status.watching { "polling" } else { "idle" }.into());
        if let Some(size) = status.buffered {
            info.push(format!("bufsize={size}"));
        }
    } else if status.open {
        info.push("open".into());
    } else {
        info.push("closed".into());
    }
    Ok(format!("<{}>", info.join(" ")))
}

/// `read(2)` into `buf`; EINTR is retried.
pub(crate) fn read_raw(fd: i32, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: `buf` is valid for writes of its length during the call.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// `write(2)` of `data` (at most all of it); EINTR is retried. A pipe without a reader gives
/// EPIPE (Python ignores SIGPIPE, as asyncio relies on).
pub(crate) fn write_raw(fd: i32, data: &[u8]) -> io::Result<usize> {
    loop {
        // SAFETY: `data` is valid for reads of its length during the call.
        let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// One `writev(2)` of the buffer's first pieces; returns the bytes written.
pub(crate) fn write_buffer(fd: i32, buffer: &WriteBuffer) -> io::Result<usize> {
    let mut iovecs = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; MAX_IOVECS];
    let count = buffer.fill_iovecs(&mut iovecs);
    loop {
        // SAFETY: the first `count` iovecs describe live buffer contents; writev only reads.
        let n = unsafe { libc::writev(fd, iovecs.as_ptr(), count as libc::c_int) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipe() -> (i32, i32) {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe() writes.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        (fds[0], fds[1])
    }

    fn close(fd: i32) {
        // SAFETY: closing a descriptor this test opened.
        unsafe { libc::close(fd) };
    }

    #[test]
    fn file_kinds() {
        let (r, w) = pipe();
        assert_eq!(file_kind(r).unwrap(), FileKind::Fifo);
        let mut pair = [0; 2];
        // SAFETY: `pair` has room for the two descriptors socketpair() writes.
        let rc =
            unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, pair.as_mut_ptr()) };
        assert_eq!(rc, 0);
        assert_eq!(file_kind(pair[0]).unwrap(), FileKind::Socket);
        let null = std::fs::File::open("/dev/null").unwrap();
        use std::os::fd::AsRawFd;
        assert_eq!(file_kind(null.as_raw_fd()).unwrap(), FileKind::CharDevice);
        let exe = std::fs::File::open(std::env::current_exe().unwrap()).unwrap();
        assert_eq!(file_kind(exe.as_raw_fd()).unwrap(), FileKind::Other);
        let err = file_kind(-1).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EBADF));
        for fd in [r, w, pair[0], pair[1]] {
            close(fd);
        }
    }

    #[test]
    fn non_blocking_read_write_and_writev() {
        let (r, w) = pipe();
        set_nonblocking(r).unwrap();
        set_nonblocking(r).unwrap(); // already: no change
        set_nonblocking(w).unwrap();
        let mut buf = [0u8; 16];
        let err = read_raw(r, &mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(write_raw(w, b"abc").unwrap(), 3);
        let mut queue = WriteBuffer::default();
        queue.push_copy(b"xxdef", 2).unwrap();
        queue.push_copy(b"ghi", 0).unwrap();
        assert_eq!(write_buffer(w, &queue).unwrap(), 6);
        assert_eq!(read_raw(r, &mut buf).unwrap(), 9);
        assert_eq!(&buf[..9], b"abcdefghi");
        close(w);
        assert_eq!(read_raw(r, &mut buf).unwrap(), 0); // end of file
        close(r);
    }

    #[test]
    fn write_to_a_pipe_without_reader_is_epipe() {
        let (r, w) = pipe();
        close(r);
        // Rust's runtime ignores SIGPIPE, as Python does: the write fails with EPIPE.
        let err = write_raw(w, b"x").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPIPE));
        close(w);
    }
}
