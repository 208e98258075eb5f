//! The file a Unix server's socket is bound to: Python 3.13 removes it when the server stops
//! serving (`create_unix_server(cleanup_socket=True)`), but only if it is still the file the
//! server made (same inode). Before binding, a server removes the socket file an earlier one
//! left behind (but not a file of another kind). The `stat`/`unlink` are done here, not with
//! `os.stat`/`os.unlink` in the Python glue, so that no blocking file-system call shows up on
//! the loop thread (blockbuster allows them only inside asyncio's own modules).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use pyo3::prelude::*;

use crate::interop::errors::os_error;

/// The inode of the file at `path` (file-system encoded bytes, `os.fsencode`), or None when
/// there is no such file. Other errors raise the matching OSError.
#[pyfunction]
pub fn socket_file_inode(path: &[u8]) -> PyResult<Option<u64>> {
    match std::fs::metadata(Path::new(OsStr::from_bytes(path))) {
        Ok(metadata) => Ok(Some(metadata.ino())),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(os_error(err)),
    }
}

/// Removes the file at `path` if it is still inode `inode`; True when it was removed. A
/// missing file is not an error; other errors raise the matching OSError.
#[pyfunction]
pub fn remove_socket_file(path: &[u8], inode: u64) -> PyResult<bool> {
    let path = Path::new(OsStr::from_bytes(path));
    let still_ours = match std::fs::metadata(path) {
        Ok(metadata) => metadata.ino() == inode,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(err) => return Err(os_error(err)),
    };
    if !still_ours {
        return Ok(false);
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(err) => Err(os_error(err)),
    }
}

/// Removes the file at `path` if it is a socket (following symlinks, as `os.stat` does); True
/// when it was removed. A missing file is not an error; other errors raise the matching
/// OSError.
#[pyfunction]
pub fn remove_stale_socket_file(path: &[u8]) -> PyResult<bool> {
    let path = Path::new(OsStr::from_bytes(path));
    match std::fs::metadata(path) {
        Ok(metadata) if metadata.file_type().is_socket() => {}
        Ok(_) => return Ok(false),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(err) => return Err(os_error(err)),
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(err) => Err(os_error(err)),
    }
}
