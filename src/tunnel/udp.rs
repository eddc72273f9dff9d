//! The UDP underlay socket: one dual-stack socket (IPv4 arrives v4-mapped) or IPv4-only when
//! the host has no IPv6, large buffers, and batched I/O with recvmmsg/sendmmsg.
//!
//! UDP GSO and GRO: consecutive datagrams of one batch to the same peer and of the same size
//! (the segments of one TCP super-packet, encrypted; the last may be shorter) leave as one
//! message with `UDP_SEGMENT`, which the kernel (or the NIC) cuts into datagrams; with
//! `UDP_GRO` the kernel may hand us several datagrams of one sender as one buffer with their
//! size in a control message, which [`RecvBatch::datagrams`] splits again. Where the kernel
//! refuses GSO, the socket falls back to one datagram per message (logged once).

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io;
use std::mem::MaybeUninit;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

const UDP_SEGMENT: libc::c_int = 103;
const UDP_GRO: libc::c_int = 104;
/// The kernel's UDP_MAX_SEGMENTS.
const MAX_SEGMENTS: usize = 64;
/// Payload of one GSO message, below the 65507 bytes of an IPv4 UDP datagram.
const MAX_GSO_BYTES: usize = 65_000;
/// Room for one cmsg of an int (UDP_SEGMENT takes a u16, UDP_GRO gives an int), aligned.
const CMSG_BUF: usize = 32;

pub struct Udp {
    sock: Socket,
    dual_stack: bool,
    /// Send with UDP_SEGMENT (switched off for good when the kernel refuses it).
    gso: AtomicBool,
    gro: bool,
}

impl Udp {
    pub fn bind(port: u16, buffer_bytes: u32) -> io::Result<Udp> {
        let mut group = Self::bind_group(port, buffer_bytes, 1)?;
        Ok(group.remove(0))
    }

    /// `count` sockets on one port (`SO_REUSEPORT` when more than one), one per packet queue:
    /// the kernel hands each sender's datagrams (by 4-tuple hash) to one of them, so one
    /// peer's packets stay in order on one receive thread. Only processes of our user can
    /// join the group; a second agent is kept out by the single-instance lock before this.
    ///
    /// `SO_REUSEPORT` would also let us join a group that another process of our user opened
    /// on the port (OpenBSD `nc -l` does), silently sharing the tunnel's traffic with it. So
    /// the port is first bound without it (that fails if anything holds the port), and after
    /// the group is bound, no socket but ours may be on the port.
    pub fn bind_group(port: u16, buffer_bytes: u32, count: usize) -> io::Result<Vec<Udp>> {
        let reuse = count > 1;
        if reuse && port != 0 {
            drop(Self::bind_one(port, 1 << 16, false, None)?);
        }
        let first = Self::bind_one(port, buffer_bytes, reuse, None)?;
        let port = first.local_port()?;
        let family = first.dual_stack;
        let mut group = vec![first];
        for _ in 1..count {
            group.push(Self::bind_one(port, buffer_bytes, reuse, Some(family))?);
        }
        if reuse {
            let holders = crate::port_owner::udp_port_holders(port)?;
            if holders.len() > count {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!(
                        "bind UDP port {port}: {} sockets on the port, {count} of them ours: \
                         another process joined it with SO_REUSEPORT (holders: {}); stop it or \
                         set tunnel.listenPort to a free port",
                        holders.len(),
                        crate::port_owner::describe(&holders)
                    ),
                ));
            }
        }
        Ok(group)
    }

    /// One socket: dual-stack unless the host has no IPv6 (or `dual_stack` says otherwise).
    fn bind_one(
        port: u16,
        buffer_bytes: u32,
        reuse: bool,
        dual_stack: Option<bool>,
    ) -> io::Result<Udp> {
        let v6 = match dual_stack {
            Some(false) => None,
            // The group's family is fixed by its first socket: a later one must not fall back
            // to IPv4 (it would take all IPv4 traffic, and the others' addresses would not fit).
            Some(true) => Some(Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?),
            None => Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP)).ok(),
        };
        let (sock, dual_stack) = match v6 {
            Some(s) => {
                s.set_only_v6(false)?;
                if reuse {
                    s.set_reuse_port(true)?;
                }
                let addr = SocketAddr::from((Ipv6Addr::UNSPECIFIED, port));
                match s.bind(&addr.into()) {
                    Ok(()) => (s, true),
                    Err(e)
                        if e.raw_os_error() == Some(libc::EADDRNOTAVAIL)
                            && dual_stack.is_none() =>
                    {
                        Self::v4(port, reuse)?
                    }
                    Err(e) => return Err(bind_err(port, e)),
                }
            }
            None => Self::v4(port, reuse)?,
        };
        sock.set_nonblocking(true)?;
        set_buffers(&sock, buffer_bytes as usize);
        let gro = set_int(&sock, libc::SOL_UDP, UDP_GRO, 1).is_ok();
        Ok(Udp {
            sock,
            dual_stack,
            gso: AtomicBool::new(true),
            gro,
        })
    }

    /// Whether sends may use UDP GSO and receives UDP GRO.
    pub fn offloads(&self) -> (bool, bool) {
        (self.gso.load(Relaxed), self.gro)
    }

    /// Sends one datagram per message from now on.
    pub fn disable_gso(&self) {
        self.gso.store(false, Relaxed);
    }

    fn v4(port: u16, reuse: bool) -> io::Result<(Socket, bool)> {
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        if reuse {
            s.set_reuse_port(true)?;
        }
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
            batch.hdrs[i].msg_hdr.msg_control = batch.cmsgs[i].as_mut_ptr().cast();
            batch.hdrs[i].msg_hdr.msg_controllen = CMSG_BUF as _;
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
            batch.segment[i] = gro_segment_size(&batch.hdrs[i].msg_hdr);
        }
        Ok(got)
    }

    /// Sends every datagram queued in `out` (sendmmsg; runs to one peer as GSO messages),
    /// retrying on partial sends. Returns the number of datagrams sent before `WouldBlock`,
    /// leaving the rest queued.
    pub fn send_batch(&self, out: &mut SendBatch) -> io::Result<usize> {
        let mut sent_total = 0;
        while out.next < out.len {
            let gso = self.gso.load(Relaxed);
            let msgs = out.build_messages(gso);
            // SAFETY: the headers point at buffers, addresses and control data owned by `out`.
            let n = unsafe {
                libc::sendmmsg(
                    self.sock.as_raw_fd(),
                    out.hdrs.as_mut_ptr(),
                    msgs as u32,
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
                let first = out.msg_dgrams[0];
                if first > 1 && matches!(e.raw_os_error(), Some(libc::EIO | libc::EINVAL)) {
                    // GSO refused (no checksum offload on the route's device, an old
                    // kernel): from now on one datagram per message.
                    tracing::warn!(error = %e, "UDP GSO refused by the kernel; sending datagrams one by one");
                    self.disable_gso();
                    continue;
                }
                // A hard error for one message (e.g. EHOSTUNREACH): skip it, keep the rest.
                out.next += first;
                out.errors += first as u64;
                continue;
            }
            let n = n as usize;
            let datagrams: usize = out.msg_dgrams[..n].iter().sum();
            out.gso_messages += out.msg_dgrams[..n].iter().filter(|&&d| d > 1).count() as u64;
            out.next += datagrams;
            sent_total += datagrams;
        }
        out.clear();
        Ok(sent_total)
    }
}

/// The segment size of a message received with UDP_GRO (from its control message), if the
/// kernel coalesced datagrams into it.
fn gro_segment_size(hdr: &libc::msghdr) -> Option<usize> {
    // SAFETY: the kernel filled msg_control up to msg_controllen; the CMSG macros stay in it.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(hdr);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_UDP && (*c).cmsg_type == UDP_GRO {
                let size = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>());
                return usize::try_from(size).ok().filter(|&s| s > 0);
            }
            c = libc::CMSG_NXTHDR(hdr, c);
        }
    }
    None
}

fn set_int(sock: &Socket, level: libc::c_int, name: libc::c_int, v: libc::c_int) -> io::Result<()> {
    // SAFETY: setsockopt with a pointer to a live c_int of the right size.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as u32,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
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
    /// The size of the datagrams a GRO message holds (None: one datagram).
    pub segment: Vec<Option<usize>>,
    addrs: Vec<libc::sockaddr_storage>,
    iov: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    cmsgs: Vec<[u64; CMSG_BUF / 8]>,
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
            segment: vec![None; count],
            cmsgs: vec![[0; CMSG_BUF / 8]; count],
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

impl RecvBatch {
    /// The datagrams message `i` holds: one, or several of `segment[i]` bytes (the last may
    /// be shorter) when the kernel coalesced them (GRO).
    pub fn datagrams(&self, i: usize) -> std::slice::Chunks<'_, u8> {
        let data = &self.bufs[i][..self.lens[i]];
        data.chunks(self.segment[i].unwrap_or(data.len()).max(1))
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
    /// Messages sent with UDP_SEGMENT (several datagrams each) since last read.
    pub gso_messages: u64,
    iov: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    /// Datagrams in each message of the last `build_messages`.
    msg_dgrams: Vec<usize>,
    cmsgs: Vec<[u64; CMSG_BUF / 8]>,
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
            gso_messages: 0,
            msg_dgrams: vec![0; count],
            cmsgs: vec![[0; CMSG_BUF / 8]; count],
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

    /// Points `hdrs` at the queued datagrams from `next` on, one message per datagram or, with
    /// `gso`, one per run of datagrams to the same destination that all have the first one's
    /// size (the last may be shorter). Returns the number of messages.
    fn build_messages(&mut self, gso: bool) -> usize {
        let mut msgs = 0;
        let mut j = self.next;
        while j < self.len {
            let run = if gso { self.run_at(j) } else { 1 };
            for k in j..j + run {
                self.iov[k] = libc::iovec {
                    iov_base: self.bufs[k].as_mut_ptr().cast(),
                    iov_len: self.lens[k],
                };
            }
            // SAFETY: zeroed mmsghdr is valid; we then point it at our own storage.
            let h = &mut self.hdrs[msgs];
            *h = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_name = self.dsts[j].as_ptr() as *mut libc::c_void;
            h.msg_hdr.msg_namelen = self.dsts[j].len();
            h.msg_hdr.msg_iov = &mut self.iov[j];
            h.msg_hdr.msg_iovlen = run as _;
            if run > 1 {
                let buf = &mut self.cmsgs[msgs];
                h.msg_hdr.msg_control = buf.as_mut_ptr().cast();
                // SAFETY: CMSG_SPACE of a u16 fits CMSG_BUF; the cmsg is written inside `buf`.
                unsafe {
                    h.msg_hdr.msg_controllen = libc::CMSG_SPACE(2) as _;
                    let c = libc::CMSG_FIRSTHDR(&h.msg_hdr);
                    (*c).cmsg_level = libc::SOL_UDP;
                    (*c).cmsg_type = UDP_SEGMENT;
                    (*c).cmsg_len = libc::CMSG_LEN(2) as _;
                    std::ptr::write_unaligned(
                        libc::CMSG_DATA(c).cast::<u16>(),
                        self.lens[j] as u16,
                    );
                }
            }
            self.msg_dgrams[msgs] = run;
            msgs += 1;
            j += run;
        }
        msgs
    }

    /// How many datagrams from `j` on can go as one GSO message.
    fn run_at(&self, j: usize) -> usize {
        let size = self.lens[j];
        let mut run = 1;
        let mut bytes = size;
        while j + run < self.len
            && run < MAX_SEGMENTS
            && self.lens[j + run - 1] == size
            && self.lens[j + run] <= size
            && self.lens[j + run] > 0
            && bytes + self.lens[j + run] <= MAX_GSO_BYTES
            && self.dsts[j + run] == self.dsts[j]
        {
            bytes += self.lens[j + run];
            run += 1;
        }
        run
    }

    /// The datagrams queued and not yet sent (fuzzing and tests).
    #[doc(hidden)]
    pub fn queued(&self) -> impl Iterator<Item = &[u8]> {
        (self.next..self.len).map(|i| &self.bufs[i][..self.lens[i]])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn to(port: u16) -> SockAddr {
        SockAddr::from(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    fn push(out: &mut SendBatch, len: usize, fill: u8, dst: &SockAddr) {
        out.slot()[..len].fill(fill);
        out.push(len, dst.clone());
    }

    #[test]
    fn runs_group_same_size_datagrams_to_one_destination() {
        let (a, b) = (to(1), to(2));
        let mut out = SendBatch::new(32, 2048);
        for _ in 0..3 {
            push(&mut out, 1000, 1, &a);
        }
        push(&mut out, 400, 2, &a); // a shorter last one ends the run
        push(&mut out, 400, 3, &a);
        push(&mut out, 400, 4, &b); // another destination
        push(&mut out, 500, 5, &b); // larger than the run's size
        assert_eq!(out.build_messages(true), 4);
        assert_eq!(&out.msg_dgrams[..4], &[4, 1, 1, 1]);
        // Without GSO: one message per datagram.
        assert_eq!(out.build_messages(false), 7);
        // At most 64 segments per message.
        let mut out = SendBatch::new(100, 64);
        for _ in 0..100 {
            push(&mut out, 10, 0, &a);
        }
        assert_eq!(out.build_messages(true), 2);
        assert_eq!(&out.msg_dgrams[..2], &[64, 36]);
    }

    #[test]
    fn gso_and_gro_round_trip_on_loopback() {
        let tx = Udp::bind(0, 1 << 20).unwrap();
        let rx = Udp::bind(0, 1 << 20).unwrap();
        let dst = tx.sockaddr(SocketAddr::from(([127, 0, 0, 1], rx.local_port().unwrap())));
        let mut out = SendBatch::new(32, 2048);
        let mut want = Vec::new();
        for (i, len) in [1200usize; 12]
            .into_iter()
            .chain([700, 300, 300])
            .enumerate()
        {
            let d: Vec<u8> = (0..len).map(|k| (i * 7 + k) as u8).collect();
            out.slot()[..len].copy_from_slice(&d);
            out.push(len, dst.clone());
            want.push(d);
        }
        assert_eq!(tx.send_batch(&mut out).unwrap(), want.len());
        assert!(
            out.gso_messages >= 1 || !tx.offloads().0,
            "GSO was not used"
        );

        let mut got = Vec::new();
        let mut coalesced = 0;
        let mut batch = RecvBatch::new(32, 65_536);
        let deadline = Instant::now() + Duration::from_secs(5);
        while got.len() < want.len() && Instant::now() < deadline {
            match rx.recv_batch(&mut batch) {
                Ok(n) => {
                    for i in 0..n {
                        if batch.datagrams(i).len() > 1 {
                            coalesced += 1;
                        }
                        got.extend(batch.datagrams(i).map(<[u8]>::to_vec));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(got, want, "datagrams differ or are missing");
        eprintln!(
            "offloads tx {:?} rx {:?}; GSO messages {}, coalesced receives {coalesced}",
            tx.offloads(),
            rx.offloads(),
            out.gso_messages
        );
        if tx.offloads().0 && rx.offloads().1 {
            assert!(coalesced >= 1, "GRO did not hand over a coalesced message");
        }
    }

    #[test]
    fn a_socket_group_shares_one_port_and_keeps_each_sender_on_one_socket() {
        let group = Udp::bind_group(0, 1 << 20, 2).unwrap();
        let port = group[0].local_port().unwrap();
        assert_eq!(group[1].local_port().unwrap(), port);
        // 32 senders, three datagrams each: the kernel picks a socket per sender (4-tuple
        // hash), so all of a sender's datagrams arrive on one socket, and with 32 senders both
        // sockets get some (all on one: probability 2^-31).
        let senders: Vec<std::net::UdpSocket> = (0..32)
            .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        for round in 0..3u8 {
            for (i, s) in senders.iter().enumerate() {
                s.send_to(&[i as u8, round], ("127.0.0.1", port)).unwrap();
            }
        }
        let mut seen: Vec<Vec<SocketAddr>> = vec![Vec::new(), Vec::new()];
        let mut batch = RecvBatch::new(32, 2048);
        let deadline = Instant::now() + Duration::from_secs(5);
        while seen.iter().map(Vec::len).sum::<usize>() < 96 && Instant::now() < deadline {
            let mut any = false;
            for (k, sock) in group.iter().enumerate() {
                if let Ok(n) = sock.recv_batch(&mut batch) {
                    any = true;
                    for i in 0..n {
                        seen[k].push(batch.srcs[i].unwrap());
                    }
                }
            }
            if !any {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        assert_eq!(seen[0].len() + seen[1].len(), 96, "datagrams lost");
        assert!(
            !seen[0].is_empty() && !seen[1].is_empty(),
            "one socket got all: {seen:?}"
        );
        for src in &seen[0] {
            assert!(!seen[1].contains(src), "{src} arrived on both sockets");
        }
        // A single socket (the default for one queue) does not ask for SO_REUSEPORT, so
        // nothing else can bind its port.
        let single = Udp::bind(0, 1 << 16).unwrap();
        let p = single.local_port().unwrap();
        assert!(Udp::bind_group(p, 1 << 16, 2).is_err());
        // A socket of another program that set SO_REUSEPORT itself (OpenBSD `nc -l` does):
        // the group must not join it.
        let squatter = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP)).unwrap();
        squatter.set_only_v6(false).unwrap();
        squatter.set_reuse_port(true).unwrap();
        squatter
            .bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)).into())
            .unwrap();
        let p = squatter.local_addr().unwrap().as_socket().unwrap().port();
        match Udp::bind_group(p, 1 << 16, 2) {
            Ok(_) => panic!("the group joined another program's SO_REUSEPORT socket"),
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "{e}"),
        }
    }
}
