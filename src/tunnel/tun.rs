//! The TUN device: opened from /dev/net/tun (IFF_TUN | IFF_NO_PI), non-blocking, one packet per
//! read/write. Persistent (TUNSETPERSIST): the device, and the routes through it, outlive the
//! agent. While no agent holds it the device has no carrier and the kernel drops what is routed
//! to it, so traffic for the remote clusters is never sent in plaintext by another route while
//! the agent is stopped, crashed or restarting (fail closed); the next agent attaches to it.
//! `sdn-tunnel cleanup` (or an uninstall, see agent::shutdown) deletes it.
//!
//! With offloads (`tunnel.offloads`, the default) the device is opened with `IFF_VNET_HDR`
//! and TSO, USO (where the kernel has it, 6.2+) and checksum offload enabled (`TUNSETOFFLOAD`):
//! a read then yields a virtio-net header and up to 64 KiB of TCP or UDP that the agent
//! segments itself (`offload.rs`), and a write carries a header saying "nothing to do".
//! Without them, offloads are switched off explicitly: a persistent device may still have
//! them from an earlier agent.
//!
//! Multi-queue: the device is created with `IFF_MULTI_QUEUE` and opened once per queue; the
//! kernel spreads what it routes into the device over the queues by flow hash, and moves a
//! flow to the queue that last wrote packets of it (so a flow follows its peer's queue; in
//! the rare move, a packet or two may pass one still queued on the other). Each queue has
//! its own packet thread. A device an earlier version created without multi-queue keeps one queue (the
//! kernel cannot change that on a live device); `sdn-tunnel cleanup` before the next start
//! recreates it.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const IFF_VNET_HDR: libc::c_int = 0x4000;
const IFF_MULTI_QUEUE: libc::c_int = 0x0100;
const TUN_F_CSUM: libc::c_ulong = 0x01;
const TUN_F_TSO4: libc::c_ulong = 0x02;
const TUN_F_TSO6: libc::c_ulong = 0x04;
/// UDP segmentation offload (kernel 6.2+; older kernels refuse the flags with EINVAL).
const TUN_F_USO4: libc::c_ulong = 0x20;
const TUN_F_USO6: libc::c_ulong = 0x40;

pub struct Tun {
    fd: OwnedFd,
    name: String,
    /// Reads start with a virtio-net header, writes must (offloads on).
    vnet_hdr: bool,
}

/// What offloads the device ended up with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Offloads {
    /// TSO (IPv4, IPv6) and checksum offload.
    On,
    /// Asked for but refused by the kernel (the reason); packets come one by one.
    Refused(String),
    Off,
}

/// The queues of one device, opened by [`Tun::create`].
pub struct Opened {
    /// One fd per queue (at least one).
    pub queues: Vec<Tun>,
    pub offloads: Offloads,
    /// The device existed without `IFF_MULTI_QUEUE` (made by an earlier version): one queue.
    pub single_queue_device: bool,
    /// UDP segmentation (USO) on as well: UDP super-packets from `UDP_SEGMENT` senders.
    pub uso: bool,
}

#[repr(C)]
struct IfReq {
    name: [libc::c_char; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

impl Tun {
    /// Creates, or attaches to (after a restart), the persistent TUN device `name` with
    /// `queues` queues, with TSO, USO and checksum offload when `offloads` (USO only where the
    /// kernel has it; none where the kernel refuses the header).
    pub fn create(name: &str, offloads: bool, queues: usize) -> io::Result<Opened> {
        if name.is_empty() || name.len() >= libc::IFNAMSIZ {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("device name {name:?} must be 1..15 characters"),
            ));
        }
        // The virtio-net header's fields are little-endian on the hosts we run on; a big-endian
        // host would need TUNSETVNETLE, so it goes without.
        let want = offloads && cfg!(target_endian = "little");
        let (first, mut state, multi_queue) = Self::open_first(name, want)?;
        let vnet_hdr = first.vnet_hdr;
        let mut tuns = vec![first];
        if multi_queue {
            for _ in 1..queues.max(1) {
                tuns.push(Self::open(name, vnet_hdr, true).map_err(|e| tunsetiff_error(name, e))?);
            }
        }
        if !want {
            state = if offloads {
                Offloads::Refused("big-endian host".into())
            } else {
                Offloads::Off
            };
        }
        let mut uso = false;
        match state {
            Offloads::On => {
                let tso = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6;
                let set = |flags: libc::c_ulong| {
                    // SAFETY: TUNSETOFFLOAD takes the flags by value (one call sets the device).
                    if unsafe { libc::ioctl(tuns[0].fd.as_raw_fd(), TUNSETOFFLOAD as _, flags) } < 0
                    {
                        Err(io::Error::last_os_error())
                    } else {
                        Ok(())
                    }
                };
                if set(tso | TUN_F_USO4 | TUN_F_USO6).is_ok() {
                    uso = true;
                } else if let Err(e) = set(tso) {
                    // The header stays (every packet then comes with GSO type "none"), harmless.
                    state = Offloads::Refused(format!("TUNSETOFFLOAD: {e}"));
                }
            }
            _ => tuns[0].clear_offloads()?,
        }
        Ok(Opened {
            queues: tuns,
            offloads: state,
            single_queue_device: !multi_queue,
            uso,
        })
    }

    /// The first queue: multi-queue with the header if we can; the header refused (EINVAL on
    /// a kernel without it) falls back to none, a device made without multi-queue (EINVAL
    /// too) to one queue. Returns the queue, the offload state so far, and multi-queue.
    fn open_first(name: &str, vnet_hdr: bool) -> io::Result<(Tun, Offloads, bool)> {
        let einval =
            |r: &io::Result<Tun>| matches!(r, Err(e) if e.raw_os_error() == Some(libc::EINVAL));
        let mut tries: Vec<(bool, bool)> = vec![(vnet_hdr, true), (vnet_hdr, false)];
        if vnet_hdr {
            tries.extend([(false, true), (false, false)]);
        }
        let mut last = None;
        for (hdr, mq) in tries {
            let r = Self::open(name, hdr, mq);
            if einval(&r) {
                last = Some(r);
                continue;
            }
            let r = r.map_err(|e| tunsetiff_error(name, e));
            let state = if hdr == vnet_hdr {
                Offloads::On
            } else {
                Offloads::Refused("IFF_VNET_HDR refused (EINVAL)".into())
            };
            return r.map(|t| (t, state, mq));
        }
        Err(tunsetiff_error(
            name,
            last.expect("at least one attempt")
                .err()
                .expect("only errors are kept"),
        ))
    }

    fn open(name: &str, vnet_hdr: bool, multi_queue: bool) -> io::Result<Tun> {
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
        let mut flags = libc::IFF_TUN | libc::IFF_NO_PI;
        if vnet_hdr {
            flags |= IFF_VNET_HDR;
        }
        if multi_queue {
            flags |= IFF_MULTI_QUEUE;
        }
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            flags: flags as libc::c_short,
            _pad: [0; 22],
        };
        for (dst, src) in req.name.iter_mut().zip(name.bytes()) {
            *dst = src as libc::c_char;
        }
        // SAFETY: TUNSETIFF reads/writes an ifreq, which IfReq mirrors (name + flags + padding).
        if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF as _, &mut req) } < 0 {
            // Unwrapped, so that open_first can tell EINVAL; it adds the explanation.
            return Err(io::Error::last_os_error());
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
        Ok(Tun {
            fd,
            name: actual,
            vnet_hdr,
        })
    }

    /// Offloads off: a persistent device keeps the ones an earlier agent enabled, and without a
    /// virtio-net header a TSO super-packet could not be told from a packet.
    fn clear_offloads(&self) -> io::Result<()> {
        // SAFETY: TUNSETOFFLOAD takes the flags by value.
        if unsafe { libc::ioctl(self.fd.as_raw_fd(), TUNSETOFFLOAD as _, 0 as libc::c_ulong) } < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("TUNSETOFFLOAD 0 on {}: {e}", self.name),
            ));
        }
        Ok(())
    }

    /// A "device" over any packet fd (e.g. one end of a SOCK_DGRAM socketpair): for fuzzing
    /// and tests of the device loop without /dev/net/tun.
    #[doc(hidden)]
    pub fn from_fd(fd: OwnedFd, name: &str) -> Tun {
        Tun {
            fd,
            name: name.to_string(),
            vnet_hdr: false,
        }
    }

    /// Whether reads start with (and writes need) a virtio-net header.
    pub fn vnet_hdr(&self) -> bool {
        self.vnet_hdr
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

    /// Writes a virtio-net header and its packet as they are (a device with headers only).
    pub fn write_with_header(&self, frame: &[u8]) -> io::Result<usize> {
        debug_assert!(self.vnet_hdr);
        // SAFETY: frame is valid for frame.len() bytes.
        let n = unsafe { libc::write(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// Writes one packet (after a header saying "no offload" when the device has headers).
    pub fn write(&self, pkt: &[u8]) -> io::Result<usize> {
        if !self.vnet_hdr {
            // SAFETY: pkt is valid for pkt.len() bytes.
            let n = unsafe { libc::write(self.fd.as_raw_fd(), pkt.as_ptr().cast(), pkt.len()) };
            return if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            };
        }
        static NO_OFFLOAD: [u8; super::offload::VNET_HDR_LEN] = [0; super::offload::VNET_HDR_LEN];
        let iov = [
            libc::iovec {
                iov_base: NO_OFFLOAD.as_ptr() as *mut libc::c_void,
                iov_len: NO_OFFLOAD.len(),
            },
            libc::iovec {
                iov_base: pkt.as_ptr() as *mut libc::c_void,
                iov_len: pkt.len(),
            },
        ];
        // SAFETY: both iovecs point at valid memory that the kernel only reads.
        let n = unsafe { libc::writev(self.fd.as_raw_fd(), iov.as_ptr(), 2) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok((n as usize).saturating_sub(NO_OFFLOAD.len()))
        }
    }
}

/// A failed attach, explained.
fn tunsetiff_error(name: &str, e: io::Error) -> io::Error {
    if e.raw_os_error().is_none() {
        return e; // already explained (open, TUNSETPERSIST)
    }
    io::Error::new(
        e.kind(),
        format!("TUNSETIFF {name}: {e} (does a non-TUN device with that name exist, or another process hold it?)"),
    )
}

impl AsRawFd for Tun {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
