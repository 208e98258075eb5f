//! OS errors as the `OSError` subclasses asyncio raises.

use std::ffi::CStr;
use std::io;

use pyo3::exceptions::PyOSError;
use pyo3::PyErr;

/// `OSError(errno, strerror)`: Python picks the subclass from the errno
/// (`ConnectionRefusedError`, `BlockingIOError`, ...), and the message reads
/// `[Errno 9] Bad file descriptor`, exactly as from the `socket`/`os` modules.
pub fn os_error(err: io::Error) -> PyErr {
    match err.raw_os_error() {
        Some(code) => PyOSError::new_err((code, strerror(code))),
        None => PyOSError::new_err(err.to_string()),
    }
}

/// The C library's description of `code` (what `os.strerror` returns).
pub fn strerror(code: i32) -> String {
    let mut buf = [0 as libc::c_char; 256];
    // SAFETY: `buf` is writable for its length; the XSI strerror_r that libc exposes writes a
    // NUL-terminated message into it and returns 0 on success.
    let rc = unsafe { libc::strerror_r(code, buf.as_mut_ptr(), buf.len()) };
    if rc != 0 {
        return format!("Unknown error {code}");
    }
    // SAFETY: strerror_r succeeded, so `buf` holds a NUL-terminated string.
    unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::strerror;

    #[test]
    fn describes_errno() {
        assert_eq!(strerror(libc::EBADF), "Bad file descriptor");
    }
}
