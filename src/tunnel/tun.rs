//! The TUN device: opened from /dev/net/tun (IFF_TUN | IFF_NO_PI), non-blocking, one packet per
//! read/write. Persistent (TUNSETPERSIST): the device, and the routes through it, outlive the
//! agent. While no agent holds it the device has no carrier and the kernel drops what is routed
//! to it, so traffic for the remote clusters is never sent in plaintext by another route while
//! the agent is stopped, crashed or restarting (fail closed); the next agent attaches to it.
//! `sdn-tunnel cleanup` (or an uninstall, see agent::shutdown) deletes it.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb;

pub struct Tun {
    fd: OwnedFd,
    name: String,
}

#[repr(C)]
struct IfReq {
    name: [libc::c_char; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

impl Tun {
    /// Creates, or attaches to (after a restart), the persistent TUN device `name`.
    pub fn create(name: &str) -> io::Result<Tun> {
        if name.is_empty() || name.len() >= libc::IFNAMSIZ {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("device name {name:?} must be 1..15 characters"),
            ));
        }
        let path = c"/dev/net/tun";
        // SAFETY: plain open(2) of a constant NUL-terminated path.
        let raw = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        if raw < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("open /dev/net/tun: {e} (is the tun module loaded and /dev/net/tun mounted into the container?)"),
            ));
        }
        // SAFETY: raw is a fresh fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            flags: (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short,
            _pad: [0; 22],
        };
        for (dst, src) in req.name.iter_mut().zip(name.bytes()) {
            *dst = src as libc::c_char;
        }
        // SAFETY: TUNSETIFF reads/writes an ifreq, which IfReq mirrors (name + flags + padding).
        if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF as _, &mut req) } < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("TUNSETIFF {name}: {e} (does a non-TUN device with that name exist, or is another agent running?)"),
            ));
        }
        // SAFETY: the kernel NUL-terminates the name it returns.
        let actual = unsafe { CStr::from_ptr(req.name.as_ptr()) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: TUNSETPERSIST takes an int by value.
        if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETPERSIST as _, 1 as libc::c_ulong) } < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("TUNSETPERSIST {actual}: {e}"),
            ));
        }
        Ok(Tun { fd, name: actual })
    }

    /// A "device" over any packet fd (e.g. one end of a SOCK_DGRAM socketpair): for fuzzing
    /// and tests of the device loop without /dev/net/tun.
    #[doc(hidden)]
    pub fn from_fd(fd: OwnedFd, name: &str) -> Tun {
        Tun {
            fd,
            name: name.to_string(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reads one packet; `WouldBlock` when none is queued.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: buf is valid for buf.len() bytes.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// Writes one packet.
    pub fn write(&self, pkt: &[u8]) -> io::Result<usize> {
        // SAFETY: pkt is valid for pkt.len() bytes.
        let n = unsafe { libc::write(self.fd.as_raw_fd(), pkt.as_ptr().cast(), pkt.len()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
}

impl AsRawFd for Tun {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
