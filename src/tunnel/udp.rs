//! The UDP underlay socket: one dual-stack socket (IPv4 arrives v4-mapped) or IPv4-only when
//! the host has no IPv6, large buffers, and batched I/O with recvmmsg/sendmmsg so that UDP
//! GSO/GRO can slot in later without changing the device loop.

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io;
use std::mem::MaybeUninit;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::os::fd::AsRawFd;

pub struct Udp {
    sock: Socket,
    dual_stack: bool,
}

impl Udp {
    pub fn bind(port: u16, buffer_bytes: u32) -> io::Result<Udp> {
        let (sock, dual_stack) = match Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP)) {
            Ok(s) => {
                s.set_only_v6(false)?;
                let addr = SocketAddr::from((Ipv6Addr::UNSPECIFIED, port));
                match s.bind(&addr.into()) {
                    Ok(()) => (s, true),
                    Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => Self::v4(port)?,
                    Err(e) => return Err(bind_err(port, e)),
                }
            }
            Err(_) => Self::v4(port)?,
        };
        sock.set_nonblocking(true)?;
        set_buffers(&sock, buffer_bytes as usize);
        Ok(Udp { sock, dual_stack })
    }

    fn v4(port: u16) -> io::Result<(Socket, bool)> {
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        let addr = SocketAddr::from(([0, 0, 0, 0], port));
        s.bind(&addr.into()).map_err(|e| bind_err(port, e))?;
        Ok((s, false))
    }

    pub fn local_port(&self) -> io::Result<u16> {
        Ok(self
            .sock
            .local_addr()?
            .as_socket()
            .map(|a| a.port())
            .unwrap_or(0))
    }

    pub fn buffer_sizes(&self) -> (usize, usize) {
        (
            self.sock.recv_buffer_size().unwrap_or(0),
            self.sock.send_buffer_size().unwrap_or(0),
        )
    }

    /// The address to send to: v4 peers are v4-mapped on a dual-stack socket.
    pub fn sockaddr(&self, addr: SocketAddr) -> SockAddr {
        match addr {
            SocketAddr::V4(v4) if self.dual_stack => {
                SockAddr::from(SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0))
            }
            other => SockAddr::from(other),
        }
    }

    pub fn send_to(&self, buf: &[u8], addr: SocketAddr) -> io::Result<usize> {
        self.sock.send_to(buf, &self.sockaddr(addr))
    }

    /// Receives up to `batch.len()` datagrams without blocking. Returns how many arrived
    /// (`WouldBlock` if none).
    pub fn recv_batch(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        let n = batch.bufs.len();
        for i in 0..n {
            batch.iov[i] = libc::iovec {
                iov_base: batch.bufs[i].as_mut_ptr().cast(),
                iov_len: batch.bufs[i].len(),
            };
            // SAFETY: zeroed mmsghdr is valid; we then point it at our own storage.
            batch.hdrs[i] = unsafe { std::mem::zeroed() };
            batch.hdrs[i].msg_hdr.msg_name =
                (&mut batch.addrs[i] as *mut libc::sockaddr_storage).cast();
            batch.hdrs[i].msg_hdr.msg_namelen =
                std::mem::size_of::<libc::sockaddr_storage>() as u32;
            batch.hdrs[i].msg_hdr.msg_iov = &mut batch.iov[i];
            batch.hdrs[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: every header points at live buffers owned by `batch` for the call's duration.
        let got = unsafe {
            libc::recvmmsg(
                self.sock.as_raw_fd(),
                batch.hdrs.as_mut_ptr(),
                n as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if got < 0 {
            return Err(io::Error::last_os_error());
        }
        let got = got as usize;
        for i in 0..got {
            batch.lens[i] = batch.hdrs[i].msg_len as usize;
            batch.srcs[i] = sockaddr_to_std(&batch.addrs[i]);
        }
        Ok(got)
    }

    /// Sends every datagram queued in `out` (sendmmsg), retrying on partial sends. Returns the
    /// number sent before `WouldBlock`, leaving the rest queued.
    pub fn send_batch(&self, out: &mut SendBatch) -> io::Result<usize> {
        let mut sent_total = 0;
        while out.next < out.len {
            let start = out.next;
            let count = out.len - start;
            for i in 0..count {
                let j = start + i;
                out.iov[i] = libc::iovec {
                    iov_base: out.bufs[j].as_mut_ptr().cast(),
                    iov_len: out.lens[j],
                };
                // SAFETY: zeroed mmsghdr is valid; we then point it at our own storage.
                out.hdrs[i] = unsafe { std::mem::zeroed() };
                out.hdrs[i].msg_hdr.msg_name = out.dsts[j].as_ptr() as *mut libc::c_void;
                out.hdrs[i].msg_hdr.msg_namelen = out.dsts[j].len();
                out.hdrs[i].msg_hdr.msg_iov = &mut out.iov[i];
                out.hdrs[i].msg_hdr.msg_iovlen = 1;
            }
            // SAFETY: the headers point at buffers and addresses owned by `out`.
            let n = unsafe {
                libc::sendmmsg(
                    self.sock.as_raw_fd(),
                    out.hdrs.as_mut_ptr(),
                    count as u32,
                    libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::WouldBlock {
                    return if sent_total > 0 {
                        Ok(sent_total)
                    } else {
                        Err(e)
                    };
                }
                // A hard error for one datagram (e.g. EHOSTUNREACH): skip it, keep the rest.
                out.next += 1;
                out.errors += 1;
                continue;
            }
            out.next += n as usize;
            sent_total += n as usize;
        }
        out.clear();
        Ok(sent_total)
    }
}

impl AsRawFd for Udp {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.sock.as_raw_fd()
    }
}

fn bind_err(port: u16, e: io::Error) -> io::Error {
    let who = match crate::port_owner::udp_port_holders(port) {
        Ok(h) if !h.is_empty() => format!("held by {}", crate::port_owner::describe(&h)),
        _ => "is another WireGuard instance listening on it?".into(),
    };
    io::Error::new(
        e.kind(),
        format!(
            "bind UDP port {port}: {e} ({who}; Calico, flannel and Kilo use 51820/51821, \
             Cilium 51871: set tunnel.listenPort to a free port on every node)"
        ),
    )
}

/// Raises the socket buffers; as root SO_*BUFFORCE goes past net.core.[rw]mem_max.
fn set_buffers(sock: &Socket, bytes: usize) {
    let fd = sock.as_raw_fd();
    for (force, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        let v = bytes as libc::c_int;
        // SAFETY: setsockopt with a pointer to a live c_int of the right size.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                force,
                (&v as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as u32,
            )
        };
        if rc != 0 {
            // SAFETY: as above.
            unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    plain,
                    (&v as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as u32,
                )
            };
        }
    }
}

fn sockaddr_to_std(ss: &libc::sockaddr_storage) -> Option<SocketAddr> {
    // SAFETY: sockaddr_storage is large enough for any address; SockAddr copies it.
    let sa = unsafe {
        SockAddr::try_init(|storage, len| {
            std::ptr::copy_nonoverlapping(ss as *const libc::sockaddr_storage, storage.cast(), 1);
            *len = std::mem::size_of::<libc::sockaddr_storage>() as u32;
            Ok(())
        })
    }
    .ok()?
    .1;
    let addr = sa.as_socket()?;
    // v4-mapped sources are IPv4 peers: show and compare them as such.
    Some(match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::from((v4, v6.port())),
            None => addr,
        },
        v4 => v4,
    })
}

/// Reused receive buffers for one recvmmsg call.
pub struct RecvBatch {
    pub bufs: Vec<Box<[u8]>>,
    pub lens: Vec<usize>,
    pub srcs: Vec<Option<SocketAddr>>,
    addrs: Vec<libc::sockaddr_storage>,
    iov: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

// SAFETY: the raw pointers inside are only scratch space rebuilt before every syscall.
unsafe impl Send for RecvBatch {}

impl RecvBatch {
    pub fn new(count: usize, buf_size: usize) -> RecvBatch {
        RecvBatch {
            bufs: (0..count)
                .map(|_| vec![0u8; buf_size].into_boxed_slice())
                .collect(),
            lens: vec![0; count],
            srcs: vec![None; count],
            // SAFETY: all-zero is a valid sockaddr_storage / iovec / mmsghdr.
            addrs: (0..count)
                .map(|_| unsafe { MaybeUninit::zeroed().assume_init() })
                .collect(),
            iov: (0..count)
                .map(|_| unsafe { MaybeUninit::zeroed().assume_init() })
                .collect(),
            hdrs: (0..count)
                .map(|_| unsafe { MaybeUninit::zeroed().assume_init() })
                .collect(),
        }
    }
}

/// Reused send buffers: fill with `slot()`/`push()`, flush with `Udp::send_batch`.
pub struct SendBatch {
    bufs: Vec<Box<[u8]>>,
    lens: Vec<usize>,
    dsts: Vec<SockAddr>,
    len: usize,
    next: usize,
    pub errors: u64,
    iov: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

// SAFETY: as for RecvBatch.
unsafe impl Send for SendBatch {}

impl SendBatch {
    pub fn new(count: usize, buf_size: usize) -> SendBatch {
        let any = SockAddr::from(SocketAddr::from(([0, 0, 0, 0], 0)));
        SendBatch {
            bufs: (0..count)
                .map(|_| vec![0u8; buf_size].into_boxed_slice())
                .collect(),
            lens: vec![0; count],
            dsts: vec![any; count],
            len: 0,
            next: 0,
            errors: 0,
            // SAFETY: all-zero is a valid iovec / mmsghdr.
            iov: (0..count)
                .map(|_| unsafe { MaybeUninit::zeroed().assume_init() })
                .collect(),
            hdrs: (0..count)
                .map(|_| unsafe { MaybeUninit::zeroed().assume_init() })
                .collect(),
        }
    }

    pub fn is_full(&self) -> bool {
        self.len == self.bufs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len == self.next
    }

    /// The next free buffer to encrypt into.
    pub fn slot(&mut self) -> &mut [u8] {
        &mut self.bufs[self.len]
    }

    /// Commits the first `len` bytes of the current slot for sending to `dst`.
    pub fn push(&mut self, len: usize, dst: SockAddr) {
        self.lens[self.len] = len;
        self.dsts[self.len] = dst;
        self.len += 1;
    }

    pub fn clear(&mut self) {
        self.len = 0;
        self.next = 0;
    }

    /// The datagrams queued and not yet sent (fuzzing and tests).
    #[doc(hidden)]
    pub fn queued(&self) -> impl Iterator<Item = &[u8]> {
        (self.next..self.len).map(|i| &self.bufs[i][..self.lens[i]])
    }
}
