//! Test-only fault injection: makes a chosen system call fail with a chosen errno.
//!
//! Some errors cannot be produced on demand without harming the machine: ENFILE (the
//! system-wide file table is full) needs `/proc/sys/fs/file-max` lowered for every process,
//! and root is exempt from it anyway. The fault tests arm a site here instead, through the
//! private `_ferroloop._inject_fault(site, errno)`; the site's next calls then fail with that
//! errno, without making the system call, until the test disarms it (errno 0). Compiled into
//! every build but inert unless armed: an unarmed site costs one relaxed atomic load.

use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};

/// A system call that can be made to fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Site {
    /// `accept4(2)` of a server's listening socket (`accept_connection`).
    Accept,
    /// `eventfd(2)` of a new loop's poller (its wake-up channel, made after epoll).
    Waker,
}

impl Site {
    /// The site called `name` (`"accept"`, `"waker"`), if any.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "accept" => Some(Self::Accept),
            "waker" => Some(Self::Waker),
            _ => None,
        }
    }

    fn index(self) -> usize {
        match self {
            Self::Accept => 0,
            Self::Waker => 1,
        }
    }
}

const SITES: usize = 2;
static ERRNO: [AtomicI32; SITES] = [AtomicI32::new(0), AtomicI32::new(0)];
static FIRED: [AtomicU32; SITES] = [AtomicU32::new(0), AtomicU32::new(0)];

/// Makes `site` fail with `errno` from now on (0: stop failing); returns how many calls it
/// failed since it was last armed or disarmed.
pub fn arm(site: Site, errno: i32) -> u32 {
    ERRNO[site.index()].store(errno, Ordering::Relaxed);
    FIRED[site.index()].swap(0, Ordering::Relaxed)
}

/// The errno `site` must fail with now, if it is armed (the call is then counted).
#[inline]
pub fn injected(site: Site) -> Option<i32> {
    let errno = ERRNO[site.index()].load(Ordering::Relaxed);
    if errno == 0 {
        return None;
    }
    FIRED[site.index()].fetch_add(1, Ordering::Relaxed);
    Some(errno)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn armed_sites_fail_and_count() {
        assert_eq!(Site::from_name("nope"), None);
        let site = Site::from_name("waker").unwrap();
        assert_eq!(arm(site, libc::ENFILE), 0);
        assert_eq!(injected(site), Some(libc::ENFILE));
        assert_eq!(injected(site), Some(libc::ENFILE));
        assert_eq!(arm(site, 0), 2);
        assert_eq!(injected(site), None);
        assert_eq!(arm(site, 0), 0);
    }
}
