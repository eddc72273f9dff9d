//! Listening sockets of the agent's HTTP endpoint and DNS responder. Their default addresses
//! are the IPv6 wildcard bound dual-stack (IPV6_V6ONLY off): the kubelet probes a hostNetwork
//! pod on the node's primary address, which is IPv6 on IPv6-primary nodes, so listening on
//! 0.0.0.0 alone fails those probes. Where the kernel has no IPv6 at all, the same port on
//! 0.0.0.0 is used instead.

use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

/// A TCP listener on `addr` (see the module comment for `[::]`).
pub fn tcp(addr: SocketAddr) -> io::Result<tokio::net::TcpListener> {
    with_fallback(addr, |a| {
        let s = socket(a, Type::STREAM, Protocol::TCP)?;
        s.set_reuse_address(true)?;
        s.bind(&a.into())?;
        s.listen(1024)?;
        tokio::net::TcpListener::from_std(s.into())
    })
}

/// A UDP socket bound to `addr` (see the module comment for `[::]`).
pub fn udp(addr: SocketAddr) -> io::Result<tokio::net::UdpSocket> {
    with_fallback(addr, |a| {
        let s = socket(a, Type::DGRAM, Protocol::UDP)?;
        s.bind(&a.into())?;
        tokio::net::UdpSocket::from_std(s.into())
    })
}

fn socket(addr: SocketAddr, ty: Type, proto: Protocol) -> io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), ty, Some(proto))?;
    if addr.is_ipv6() {
        // Dual-stack for the wildcard; a no-op difference for a specific IPv6 address.
        s.set_only_v6(false)?;
    }
    s.set_nonblocking(true)?;
    s.set_cloexec(true)?;
    Ok(s)
}

/// Runs `bind` on `addr`; for `[::]:port` on a kernel without IPv6, on `0.0.0.0:port`.
fn with_fallback<T>(addr: SocketAddr, bind: impl Fn(SocketAddr) -> io::Result<T>) -> io::Result<T> {
    match bind(addr) {
        Err(e) if addr.ip() == Ipv6Addr::UNSPECIFIED && no_ipv6(&e) => {
            let v4 = SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), addr.port());
            tracing::info!(%addr, fallback = %v4, "no IPv6 in this kernel: listening on IPv4 only");
            bind(v4)
        }
        r => r,
    }
}

fn no_ipv6(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EAFNOSUPPORT) | Some(libc::EADDRNOTAVAIL)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_ipv6_wildcard_also_accepts_ipv4() {
        let l = tcp("[::]:0".parse().unwrap()).unwrap();
        let port = l.local_addr().unwrap().port();
        let c4 = tokio::net::TcpStream::connect(("127.0.0.1", port)).await;
        assert!(c4.is_ok(), "IPv4 client: {c4:?}");
        let u = udp("[::]:0".parse().unwrap()).unwrap();
        let port = u.local_addr().unwrap().port();
        let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.send_to(b"x", ("127.0.0.1", port)).await.unwrap();
        let mut buf = [0u8; 4];
        let (n, from) = u.recv_from(&mut buf).await.unwrap();
        assert_eq!(
            (n, from.ip().to_canonical()),
            (1, client.local_addr().unwrap().ip())
        );
    }

    #[tokio::test]
    async fn a_specific_ipv4_address_stays_ipv4() {
        let l = tcp("127.0.0.1:0".parse().unwrap()).unwrap();
        assert!(l.local_addr().unwrap().is_ipv4());
    }
}
