//! The file-system work of `loop.serve_inspector()`: the private directory, the removal of
//! sockets left by our processes that ended, and the listening socket (mode 0600, created with
//! that mode). In Rust and not through the `os` module: it runs on the loop's thread, where
//! blocking-call detectors (blockbuster) refuse `os.stat`, `os.unlink` & co. from the loop's
//! own Python code.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::Path;

use pyo3::prelude::*;

use crate::interop::errors::os_error;

/// Makes `path` a directory only we can enter, or refuses one someone else could use.
fn private_directory(path: &Path) -> io::Result<()> {
    match fs::DirBuilder::new().mode(0o700).create(path) {
        Err(err) if err.kind() != io::ErrorKind::AlreadyExists => return Err(err),
        _ => {}
    }
    let info = fs::symlink_metadata(path)?;
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    if !info.is_dir() || info.uid() != uid {
        return Err(io::Error::from_raw_os_error(libc::EPERM));
    }
    if info.mode() & 0o077 != 0 {
        fs::set_permissions(path, fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Removes `ferroloop-PID.sock` files of processes that no longer exist.
fn remove_stale_sockets(directory: &Path) {
    let Ok(entries) = fs::read_dir(directory) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("ferroloop-"))
            .and_then(|n| n.strip_suffix(".sock"))
        else {
            continue;
        };
        if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if !Path::new("/proc").join(pid).exists() {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// A non-blocking Unix stream socket listening at `path`, made 0600 before it is bound.
fn listen_private(path: &Path) -> io::Result<i32> {
    let bytes = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: an all-zero sockaddr_un is a valid value of this plain C struct.
    let mut address: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    let raw = bytes.as_bytes_with_nul();
    if raw.len() > address.sun_path.len() {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    address.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (slot, byte) in address.sun_path.iter_mut().zip(raw) {
        *slot = *byte as libc::c_char;
    }
    // SAFETY: plain system calls on a descriptor we own; `address` is a valid sockaddr_un of
    // the size given, `bytes` a NUL-terminated path.
    unsafe {
        let fd = libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        );
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let size = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
        let ok = libc::fchmod(fd, 0o600) == 0
            && libc::bind(fd, (&raw const address).cast(), size) == 0
            && libc::chmod(bytes.as_ptr(), 0o600) == 0
            && libc::listen(fd, 16) == 0;
        if !ok {
            let err = io::Error::last_os_error();
            libc::close(fd);
            return Err(err);
        }
        Ok(fd)
    }
}

/// Prepares the inspector socket of process `pid`: in `runtime_dir` if given and a directory
/// (`$XDG_RUNTIME_DIR`), else in `fallback_dir`, made private (0700, ours). Sockets of our
/// ended processes there are removed, a stale one at our path too. Returns the listening
/// socket's descriptor (non-blocking, close-on-exec) and its path.
#[pyfunction]
pub fn prepare_inspector_socket(
    runtime_dir: Option<String>,
    fallback_dir: String,
    pid: u32,
) -> PyResult<(i32, String)> {
    let directory = match runtime_dir.filter(|d| !d.is_empty() && Path::new(d).is_dir()) {
        Some(runtime) => runtime.into(),
        None => {
            let directory = std::path::PathBuf::from(fallback_dir);
            private_directory(&directory).map_err(|err| {
                if err.raw_os_error() == Some(libc::EPERM) {
                    pyo3::exceptions::PyPermissionError::new_err(format!(
                        "inspector directory {:?} is not ours",
                        directory.display().to_string()
                    ))
                } else {
                    os_error(err)
                }
            })?;
            directory
        }
    };
    remove_stale_sockets(&directory);
    let path = directory.join(format!("ferroloop-{pid}.sock"));
    match fs::remove_file(&path) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => return Err(os_error(err)),
        _ => {}
    }
    let fd = listen_private(&path).map_err(os_error)?;
    Ok((fd, path.to_string_lossy().into_owned()))
}
