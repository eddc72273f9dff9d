//! UDP replies from the address the query was sent to.
//!
//! The responder listens on a wildcard address. A query that reached it through a Service
//! (kube-proxy DNAT to the node's IP) must be answered *from* that node IP: conntrack only
//! undoes the DNAT for replies with that source. Left to routing, the kernel picks the source
//! of the route back to the client, e.g. the pod bridge's gateway address, and the client
//! drops the answer ("connection timed out; no servers could be reached"). So every query is
//! received with its destination address (IP_PKTINFO / IPV6_PKTINFO) and the reply is sent with
//! that address as source, as dnsmasq and CoreDNS do.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Asks the kernel for every datagram's destination address (both families: a dual-stack
/// socket receives IPv4 too).
pub fn enable(sock: &UdpSocket) -> io::Result<()> {
    let fd = sock.as_raw_fd();
    let on: libc::c_int = 1;
    let set = |level, opt| {
        // SAFETY: setsockopt with a valid fd and a c_int option value.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                level,
                opt,
                &on as *const _ as *const libc::c_void,
                size_of::<libc::c_int>() as u32,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    };
    if sock.local_addr()?.is_ipv6() {
        set(libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO)?;
    }
    // On an AF_INET6 socket this covers its IPv4 (v4-mapped) traffic.
    set(libc::IPPROTO_IP, libc::IP_PKTINFO)
}

/// One datagram: its length, sender, and the address it was sent to (when the kernel said).
pub async fn recv(
    sock: &UdpSocket,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddr, Option<IpAddr>)> {
    sock.async_io(Interest::READABLE, || recv_now(sock.as_raw_fd(), buf))
        .await
}

fn recv_now(fd: i32, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, Option<IpAddr>)> {
    // SAFETY: plain-old-data structures, zeroed; recvmsg gets valid pointers and lengths.
    unsafe {
        let mut name: libc::sockaddr_storage = zeroed();
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr() as *mut libc::c_void,
            iov_len: buf.len(),
        };
        let mut control = [0u64; 32];
        let mut msg: libc::msghdr = zeroed();
        msg.msg_name = &mut name as *mut _ as *mut libc::c_void;
        msg.msg_namelen = size_of::<libc::sockaddr_storage>() as u32;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = std::mem::size_of_val(&control);
        let n = libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let peer =
            to_socket_addr(&name).ok_or_else(|| io::Error::other("unknown address family"))?;
        let mut dst = None;
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            let data = libc::CMSG_DATA(c);
            match ((*c).cmsg_level, (*c).cmsg_type) {
                (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                    let info = std::ptr::read_unaligned(data as *const libc::in_pktinfo);
                    dst = Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                        info.ipi_addr.s_addr,
                    ))));
                }
                (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                    let info = std::ptr::read_unaligned(data as *const libc::in6_pktinfo);
                    dst = Some(IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)).to_canonical());
                }
                _ => {}
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
        Ok((n as usize, peer, dst))
    }
}

/// Sends `data` to `peer` from source address `src` (None: the kernel's choice).
pub async fn send(
    sock: &UdpSocket,
    data: &[u8],
    peer: SocketAddr,
    src: Option<IpAddr>,
) -> io::Result<usize> {
    let v6 = sock.local_addr()?.is_ipv6();
    sock.async_io(Interest::WRITABLE, || {
        send_now(sock.as_raw_fd(), v6, data, peer, src)
    })
    .await
}

fn send_now(
    fd: i32,
    v6_socket: bool,
    data: &[u8],
    peer: SocketAddr,
    src: Option<IpAddr>,
) -> io::Result<usize> {
    // A v6 socket addresses IPv4 peers as v4-mapped.
    let peer = match (v6_socket, peer) {
        (true, SocketAddr::V4(a)) => {
            SocketAddr::V6(SocketAddrV6::new(a.ip().to_ipv6_mapped(), a.port(), 0, 0))
        }
        (_, p) => p,
    };
    // SAFETY: as in recv_now; the control buffer is large and aligned enough for one pktinfo.
    unsafe {
        let (mut name, namelen) = from_socket_addr(peer);
        let mut iov = libc::iovec {
            iov_base: data.as_ptr() as *mut libc::c_void,
            iov_len: data.len(),
        };
        let mut control = [0u64; 8];
        let mut msg: libc::msghdr = zeroed();
        msg.msg_name = &mut name as *mut _ as *mut libc::c_void;
        msg.msg_namelen = namelen;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if let Some(src) = src {
            msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
            let c;
            if v6_socket {
                // IPv4 sources go as v4-mapped IPV6_PKTINFO: the kernel's IPv4 path of a
                // dual-stack socket takes exactly that (ip_cmsg_send, allow_ipv6).
                let addr = match src {
                    IpAddr::V4(a) => a.to_ipv6_mapped(),
                    IpAddr::V6(a) => a,
                };
                msg.msg_controllen =
                    libc::CMSG_SPACE(size_of::<libc::in6_pktinfo>() as u32) as usize;
                c = libc::CMSG_FIRSTHDR(&msg);
                (*c).cmsg_level = libc::IPPROTO_IPV6;
                (*c).cmsg_type = libc::IPV6_PKTINFO;
                (*c).cmsg_len = libc::CMSG_LEN(size_of::<libc::in6_pktinfo>() as u32) as usize;
                let info = libc::in6_pktinfo {
                    ipi6_addr: libc::in6_addr {
                        s6_addr: addr.octets(),
                    },
                    ipi6_ifindex: 0,
                };
                std::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut libc::in6_pktinfo, info);
            } else {
                let IpAddr::V4(a) = src else {
                    return Err(io::Error::other("IPv6 source on an IPv4 socket"));
                };
                msg.msg_controllen =
                    libc::CMSG_SPACE(size_of::<libc::in_pktinfo>() as u32) as usize;
                c = libc::CMSG_FIRSTHDR(&msg);
                (*c).cmsg_level = libc::IPPROTO_IP;
                (*c).cmsg_type = libc::IP_PKTINFO;
                (*c).cmsg_len = libc::CMSG_LEN(size_of::<libc::in_pktinfo>() as u32) as usize;
                let info = libc::in_pktinfo {
                    ipi_ifindex: 0,
                    ipi_spec_dst: libc::in_addr {
                        s_addr: u32::from(a).to_be(),
                    },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                };
                std::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut libc::in_pktinfo, info);
            }
        }
        let n = libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

fn to_socket_addr(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    // SAFETY: the family field says which structure the storage holds.
    unsafe {
        match s.ss_family as i32 {
            libc::AF_INET => {
                let a = &*(s as *const _ as *const libc::sockaddr_in);
                Some(SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                    u16::from_be(a.sin_port),
                )))
            }
            libc::AF_INET6 => {
                let a = &*(s as *const _ as *const libc::sockaddr_in6);
                let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
                let port = u16::from_be(a.sin6_port);
                // Report IPv4 clients of a dual-stack socket as IPv4.
                Some(match ip.to_ipv4_mapped() {
                    Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, port)),
                    None => SocketAddr::V6(SocketAddrV6::new(
                        ip,
                        port,
                        a.sin6_flowinfo,
                        a.sin6_scope_id,
                    )),
                })
            }
            _ => None,
        }
    }
}

fn from_socket_addr(a: SocketAddr) -> (libc::sockaddr_storage, u32) {
    // SAFETY: zeroed storage, then the matching structure written into it.
    unsafe {
        let mut s: libc::sockaddr_storage = zeroed();
        match a {
            SocketAddr::V4(a) => {
                let p = &mut s as *mut _ as *mut libc::sockaddr_in;
                (*p).sin_family = libc::AF_INET as u16;
                (*p).sin_port = a.port().to_be();
                (*p).sin_addr = libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                };
                (s, size_of::<libc::sockaddr_in>() as u32)
            }
            SocketAddr::V6(a) => {
                let p = &mut s as *mut _ as *mut libc::sockaddr_in6;
                (*p).sin6_family = libc::AF_INET6 as u16;
                (*p).sin6_port = a.port().to_be();
                (*p).sin6_addr = libc::in6_addr {
                    s6_addr: a.ip().octets(),
                };
                (*p).sin6_flowinfo = a.flowinfo();
                (*p).sin6_scope_id = a.scope_id();
                (s, size_of::<libc::sockaddr_in6>() as u32)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both families on a dual-stack socket: the destination is reported, and a reply sent
    /// with it as source comes from that address.
    #[tokio::test]
    async fn reply_comes_from_the_queried_address() {
        let server = crate::listen::udp("[::]:0".parse().unwrap()).unwrap();
        enable(&server).unwrap();
        let port = server.local_addr().unwrap().port();
        for (client_bind, dst) in [("127.0.0.1:0", "127.0.0.7"), ("[::1]:0", "::1")] {
            let Ok(client) = UdpSocket::bind(client_bind).await else {
                continue;
            }; // no IPv6 here
            let dst: IpAddr = dst.parse().unwrap();
            client.send_to(b"q", (dst, port)).await.unwrap();
            let mut buf = [0u8; 16];
            let (n, peer, got) = recv(&server, &mut buf).await.unwrap();
            assert_eq!((n, got), (1, Some(dst)));
            assert_eq!(peer, client.local_addr().unwrap());
            send(&server, b"a", peer, got).await.unwrap();
            let (_, from) = client.recv_from(&mut buf).await.unwrap();
            assert_eq!(from.ip().to_canonical(), dst, "reply source");
        }
    }
}
