//! Socket addresses between their C form and Python's address tuples: the datagram
//! transport's hot path, and the compact peer addresses of accepted connections (the stream
//! transport's `peername`/`sockname`).
//!
//! Only numeric IPv4/IPv6 addresses are converted here; anything else (host names, `''`,
//! `'<broadcast>'`, AF_UNIX paths) goes through Python's `socket` module, which resolves and
//! validates exactly as asyncio's transport would. A small cache maps the addresses datagrams
//! came from to the tuples handed to the protocol, so that an echo (`sendto(data, addr)` with
//! the very tuple received) costs neither a tuple allocation nor address parsing.

use std::net::{Ipv4Addr, Ipv6Addr};

use pyo3::prelude::*;
use pyo3::types::{PyString, PyTuple};

/// A socket address in its C form.
#[derive(Clone, Copy)]
pub struct RawAddr {
    storage: libc::sockaddr_storage,
    len: libc::socklen_t,
}

impl RawAddr {
    /// An empty address buffer for `recvfrom` to fill.
    pub fn empty() -> Self {
        RawAddr {
            // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
            storage: unsafe { std::mem::zeroed() },
            len: std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t,
        }
    }

    /// Pointer and length for `recvfrom`/`sendto`.
    pub fn as_mut_parts(&mut self) -> (*mut libc::sockaddr, *mut libc::socklen_t) {
        (
            (&mut self.storage as *mut libc::sockaddr_storage).cast(),
            &mut self.len,
        )
    }

    /// Sets the length a system call reported for the address.
    pub fn set_len(&mut self, len: libc::socklen_t) {
        self.len = len;
    }

    /// Pointer and length for `sendto`.
    pub fn as_parts(&self) -> (*const libc::sockaddr, libc::socklen_t) {
        (
            (&self.storage as *const libc::sockaddr_storage).cast(),
            self.len,
        )
    }

    fn bytes(&self) -> &[u8] {
        let len = (self.len as usize).min(std::mem::size_of::<libc::sockaddr_storage>());
        // SAFETY: `storage` is `size_of::<sockaddr_storage>()` initialised bytes; we read at
        // most that many.
        unsafe {
            std::slice::from_raw_parts(
                (&self.storage as *const libc::sockaddr_storage).cast::<u8>(),
                len,
            )
        }
    }

    /// The address as Python's socket module reports it: `(host, port)` for IPv4,
    /// `(host, port, flowinfo, scope_id)` for IPv6; None for other families.
    pub fn to_python<'py>(&self, py: Python<'py>) -> Option<PyResult<Bound<'py, PyAny>>> {
        match self.storage.ss_family as i32 {
            libc::AF_INET => {
                // SAFETY: the family says the storage holds a sockaddr_in.
                let sin: &libc::sockaddr_in =
                    unsafe { &*(&self.storage as *const libc::sockaddr_storage).cast() };
                let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                let port = u16::from_be(sin.sin_port);
                let host = PyString::new(py, &ip.to_string());
                Some((host, port).into_pyobject(py).map(|t| t.into_any()))
            }
            libc::AF_INET6 => {
                // SAFETY: the family says the storage holds a sockaddr_in6.
                let sin6: &libc::sockaddr_in6 =
                    unsafe { &*(&self.storage as *const libc::sockaddr_storage).cast() };
                let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                let host = PyString::new(py, &ip.to_string());
                let tuple = (
                    host,
                    u16::from_be(sin6.sin6_port),
                    u32::from_be(sin6.sin6_flowinfo),
                    sin6.sin6_scope_id,
                );
                Some(tuple.into_pyobject(py).map(|t| t.into_any()))
            }
            _ => None,
        }
    }

    /// Like `to_python`, for every family a stream socket can have: AF_UNIX gives the path
    /// as the socket module does (`''` for an unnamed socket, `bytes` in the abstract
    /// namespace); other families give None.
    pub fn to_python_any<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        if let Some(converted) = self.to_python(py) {
            return converted;
        }
        if self.storage.ss_family as i32 != libc::AF_UNIX {
            return Ok(py.None().into_bound(py));
        }
        let bytes = self.bytes();
        let offset = std::mem::size_of::<libc::sa_family_t>();
        let path = bytes.get(offset..).unwrap_or(&[]);
        if path.first() == Some(&0) {
            return Ok(pyo3::types::PyBytes::new(py, path).into_any());
        }
        let end = path.iter().position(|&b| b == 0).unwrap_or(path.len());
        Ok(PyString::new(py, &String::from_utf8_lossy(&path[..end])).into_any())
    }

    /// `getsockname(2)` or `getpeername(2)` of `fd`.
    pub fn of_socket(fd: i32, peer: bool) -> std::io::Result<RawAddr> {
        let mut raw = RawAddr::empty();
        let (sa, len) = raw.as_mut_parts();
        // SAFETY: `sa`/`len` describe `raw`'s storage, which the call fills.
        let rc = unsafe {
            if peer {
                libc::getpeername(fd, sa, len)
            } else {
                libc::getsockname(fd, sa, len)
            }
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(raw)
    }

    /// Parses a numeric address tuple for a socket of `family`; None when it is anything
    /// else (the caller then lets Python's socket module handle it, errors included).
    pub fn from_python(family: i32, addr: &Bound<'_, PyAny>) -> Option<RawAddr> {
        let tuple = addr.cast::<PyTuple>().ok()?;
        let host = tuple.get_item(0).ok()?;
        let host = host.cast::<PyString>().ok()?.to_str().ok()?;
        let port: u16 = tuple.get_item(1).ok()?.extract().ok()?;
        let mut raw = RawAddr::empty();
        match (family, tuple.len()) {
            (libc::AF_INET, 2) => {
                let ip: Ipv4Addr = host.parse().ok()?;
                // SAFETY: sockaddr_storage is large enough and aligned for a sockaddr_in.
                let sin: &mut libc::sockaddr_in =
                    unsafe { &mut *(&mut raw.storage as *mut libc::sockaddr_storage).cast() };
                sin.sin_family = libc::AF_INET as libc::sa_family_t;
                sin.sin_port = port.to_be();
                sin.sin_addr.s_addr = u32::from(ip).to_be();
                raw.len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            }
            (libc::AF_INET6, 2..=4) => {
                let ip: Ipv6Addr = host.parse().ok()?;
                let flowinfo: u32 = match tuple.get_item(2) {
                    Ok(v) => v.extract().ok()?,
                    Err(_) => 0,
                };
                let scope_id: u32 = match tuple.get_item(3) {
                    Ok(v) => v.extract().ok()?,
                    Err(_) => 0,
                };
                // SAFETY: sockaddr_storage is large enough and aligned for a sockaddr_in6.
                let sin6: &mut libc::sockaddr_in6 =
                    unsafe { &mut *(&mut raw.storage as *mut libc::sockaddr_storage).cast() };
                sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                sin6.sin6_port = port.to_be();
                sin6.sin6_flowinfo = flowinfo.to_be();
                sin6.sin6_addr.s6_addr = ip.octets();
                sin6.sin6_scope_id = scope_id;
                raw.len = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
            }
            _ => return None,
        }
        Some(raw)
    }
}

/// A socket address kept by a transport until someone asks for it: 8 bytes for IPv4 (the
/// usual case), boxed otherwise, instead of a Python tuple per connection.
pub enum CompactAddr {
    /// An IPv4 address and port.
    V4 {
        /// Address, host byte order.
        ip: u32,
        /// Port, host byte order.
        port: u16,
    },
    /// Any other address.
    Other(Box<RawAddr>),
}

impl CompactAddr {
    /// Compacts `raw`.
    pub fn new(raw: &RawAddr) -> Self {
        if raw.storage.ss_family as i32 == libc::AF_INET {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin: &libc::sockaddr_in =
                unsafe { &*(&raw.storage as *const libc::sockaddr_storage).cast() };
            return CompactAddr::V4 {
                ip: u32::from_be(sin.sin_addr.s_addr),
                port: u16::from_be(sin.sin_port),
            };
        }
        CompactAddr::Other(Box::new(*raw))
    }

    /// The address as the socket module reports it.
    pub fn to_python<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match self {
            CompactAddr::V4 { ip, port } => {
                let host = PyString::new(py, &Ipv4Addr::from(*ip).to_string());
                Ok((host, *port).into_pyobject(py)?.into_any())
            }
            CompactAddr::Other(raw) => raw.to_python_any(py),
        }
    }
}

/// The address family of socket `fd` (SO_DOMAIN), -1 if it cannot be read.
pub fn socket_family(fd: i32) -> i32 {
    let mut domain: libc::c_int = 0;
    let mut size = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `size` bytes into `domain`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_DOMAIN,
            (&mut domain as *mut libc::c_int).cast(),
            &mut size,
        )
    };
    if rc == 0 {
        domain
    } else {
        -1
    }
}

/// How many peer addresses the cache remembers (an echo server with more peers than this
/// still works, it just converts more).
const CACHE_CAPACITY: usize = 64;

/// A cheap summary of an address's bytes (its 8-byte words folded together, and its length),
/// kept beside each cached entry: a lookup scans these dense words and compares the whole
/// address only where they match, instead of one `memcmp` call per cached entry (with 20
/// peers that scan cost ~360 instructions per datagram, a tenth of an echo's user-space work).
fn fingerprint(bytes: &[u8]) -> u64 {
    let mut key = bytes.len() as u64;
    for word in bytes.chunks(8) {
        let mut padded = [0u8; 8];
        padded[..word.len()].copy_from_slice(word);
        key = key.rotate_left(17) ^ u64::from_ne_bytes(padded);
    }
    key
}

/// Recently seen peer addresses and the Python tuples that stand for them.
#[derive(Default)]
pub struct AddressCache {
    entries: Vec<(RawAddr, Py<PyAny>)>,
    /// `fingerprint` of each entry's address, in the same order as `entries`.
    keys: Vec<u64>,
    /// The slot the next new address replaces once the cache is full.
    next: usize,
}

impl AddressCache {
    /// The Python address for `raw` (the cached tuple, or a new one that is then cached);
    /// None for families this module does not convert.
    pub fn python_for<'py>(
        &mut self,
        py: Python<'py>,
        raw: &RawAddr,
    ) -> Option<PyResult<Bound<'py, PyAny>>> {
        let bytes = raw.bytes();
        let key = fingerprint(bytes);
        let mut start = 0;
        while let Some(found) = self.keys[start..].iter().position(|k| *k == key) {
            let (cached, obj) = &self.entries[start + found];
            if cached.bytes() == bytes {
                return Some(Ok(obj.bind(py).clone()));
            }
            start += found + 1;
        }
        let obj = match raw.to_python(py)? {
            Ok(obj) => obj,
            Err(err) => return Some(Err(err)),
        };
        let entry = (*raw, obj.clone().unbind());
        if self.entries.len() < CACHE_CAPACITY {
            self.entries.push(entry);
            self.keys.push(key);
        } else {
            self.entries[self.next] = entry;
            self.keys[self.next] = key;
            self.next = (self.next + 1) % CACHE_CAPACITY;
        }
        Some(Ok(obj))
    }

    /// The C address of a tuple this cache handed out (identity), if it is still cached.
    pub fn raw_for(&self, addr: &Bound<'_, PyAny>) -> Option<RawAddr> {
        self.entries
            .iter()
            .find(|(_, obj)| obj.as_ptr() == addr.as_ptr())
            .map(|(raw, _)| *raw)
    }

    /// The cached objects (for the garbage collector's traversal).
    pub fn objects(&self) -> impl Iterator<Item = &Py<PyAny>> {
        self.entries.iter().map(|(_, obj)| obj)
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.keys.clear();
        self.next = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_round_trip_and_cache_identity() {
        Python::initialize();
        Python::attach(|py| {
            let tuple = ("127.0.0.1", 8080u16).into_pyobject(py).unwrap().into_any();
            let raw = RawAddr::from_python(libc::AF_INET, &tuple).unwrap();
            let back = raw.to_python(py).unwrap().unwrap();
            assert!(back.eq(&tuple).unwrap());
            let mut cache = AddressCache::default();
            let first = cache.python_for(py, &raw).unwrap().unwrap();
            let second = cache.python_for(py, &raw).unwrap().unwrap();
            assert!(first.is(&second));
            assert!(cache.raw_for(&first).is_some());
            assert!(cache.raw_for(&tuple).is_none());
        });
    }

    #[test]
    fn cache_finds_each_peer_among_many() {
        Python::initialize();
        Python::attach(|py| {
            let mut cache = AddressCache::default();
            // More peers than the cache holds, IPv4 and IPv6, each looked up twice: every
            // lookup gives that peer's own tuple, and a repeated one the cached object.
            for round in 0..2 {
                for port in 1..=(CACHE_CAPACITY as u16 / 2 + 4) {
                    for (family, host) in [(libc::AF_INET, "10.0.0.1"), (libc::AF_INET6, "::2")] {
                        let tuple = (host, port).into_pyobject(py).unwrap().into_any();
                        let raw = RawAddr::from_python(family, &tuple).unwrap();
                        let found = cache.python_for(py, &raw).unwrap().unwrap();
                        assert!(raw.to_python(py).unwrap().unwrap().eq(&found).unwrap());
                        if round == 1 {
                            assert!(cache.python_for(py, &raw).unwrap().unwrap().is(&found));
                        }
                    }
                }
            }
        });
    }

    #[test]
    fn ipv6_and_non_numeric_hosts() {
        Python::initialize();
        Python::attach(|py| {
            let tuple = ("::1", 53u16, 0u32, 0u32)
                .into_pyobject(py)
                .unwrap()
                .into_any();
            let raw = RawAddr::from_python(libc::AF_INET6, &tuple).unwrap();
            assert!(raw.to_python(py).unwrap().unwrap().eq(&tuple).unwrap());
            let named = ("localhost", 53u16).into_pyobject(py).unwrap().into_any();
            assert!(RawAddr::from_python(libc::AF_INET, &named).is_none());
            let v4_on_v6 = ("127.0.0.1", 53u16).into_pyobject(py).unwrap().into_any();
            assert!(RawAddr::from_python(libc::AF_INET6, &v4_on_v6).is_none());
        });
    }
}
