//! The system calls of `loop.sendfile`/`loop.sock_sendfile`'s zero-copy path: the file's size
//! (`fstat`), one `sendfile(2)` from the file into the socket, and leaving the file positioned
//! after what was sent (`lseek`).
//!
//! They run here, in Rust, and not as `os.fstat`/`os.sendfile`/`os.lseek` in the Python glue:
//! blocking-call detectors (blockbuster, used by aiohttp's own test suite) wrap those `os`
//! functions and refuse them on the loop's thread unless the caller is asyncio's own module.
//! The retry on `EAGAIN` (waiting for the socket to be writable) stays in Python.

use pyo3::prelude::*;

use crate::interop::errors::os_error;

/// The size in bytes of the file open on `fd` (`fstat(2)`'s `st_size`); OSError on failure.
#[pyfunction]
pub fn file_size(fd: i32) -> PyResult<u64> {
    // SAFETY: an all-zero `stat` is a valid value of this plain C struct.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `stat` is a valid, writable `struct stat`; a bad `fd` only makes fstat fail.
    if unsafe { libc::fstat(fd, &mut stat) } != 0 {
        return Err(os_error(std::io::Error::last_os_error()));
    }
    Ok(u64::try_from(stat.st_size).unwrap_or(0))
}

/// One `sendfile(2)`: up to `count` bytes of the file `in_fd`, from `offset`, written to the
/// socket `out_fd`; the number sent (0 at the end of the file). The file's own position is
/// not used nor moved. Raises the matching OSError (BlockingIOError when the socket's buffer
/// is full). The GIL is released meanwhile: the file's pages may have to be read from disk.
#[pyfunction]
pub fn send_file_chunk(
    py: Python<'_>,
    out_fd: i32,
    in_fd: i32,
    offset: i64,
    count: usize,
) -> PyResult<usize> {
    let outcome = py.detach(|| {
        let mut off: libc::off_t = offset;
        // SAFETY: `off` is a valid, writable off_t; bad descriptors only make sendfile fail.
        let sent = unsafe { libc::sendfile(out_fd, in_fd, &mut off, count) };
        if sent < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(sent as usize)
        }
    });
    outcome.map_err(os_error)
}

/// Positions the file open on `fd` at byte `position` (`lseek(2)`, `SEEK_SET`).
#[pyfunction]
pub fn seek_file(fd: i32, position: i64) -> PyResult<()> {
    // SAFETY: lseek takes plain integers; a bad `fd` only makes it fail.
    if unsafe { libc::lseek(fd, position, libc::SEEK_SET) } < 0 {
        return Err(os_error(std::io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::fd::AsRawFd;

    #[test]
    fn sends_a_file_into_a_socket() {
        pyo3::Python::initialize();
        let mut file = std::env::temp_dir();
        file.push(format!("ferroloop-file-send-{}", std::process::id()));
        std::fs::File::create(&file)
            .unwrap()
            .write_all(b"hello world")
            .unwrap();
        let reader = std::fs::File::open(&file).unwrap();
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        pyo3::Python::attach(|py| {
            assert_eq!(super::file_size(reader.as_raw_fd()).unwrap(), 11);
            let sent = super::send_file_chunk(py, a.as_raw_fd(), reader.as_raw_fd(), 6, 100);
            assert_eq!(sent.unwrap(), 5);
            super::seek_file(reader.as_raw_fd(), 3).unwrap();
            assert!(super::file_size(-1).is_err());
        });
        let mut got = [0u8; 5];
        std::io::Read::read_exact(&mut &b, &mut got).unwrap();
        assert_eq!(&got, b"world");
        std::fs::remove_file(&file).unwrap();
    }
}
