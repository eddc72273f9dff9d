//! Test traffic between namespaces: ping, a checksummed TCP transfer, a UDP echo exchange.
//! TCP and UDP run in-process (sockets created on threads that joined the namespaces), so no
//! external tool is needed and the data is verified end to end.

use crate::netns::{exec, in_netns};
use anyhow::{bail, Context, Result};
use std::fmt::Display;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

/// One ping (`ping -c 1 -W 1`) from namespace `ns` to `ip`; true if answered.
pub fn ping(ns: &str, ip: impl Display) -> bool {
    let ip = ip.to_string();
    exec(ns, &["ping", "-n", "-q", "-c", "1", "-W", "1", ip.as_str()])
        .status
        .success()
}

/// Result of [`tcp_transfer`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transfer {
    pub bytes: u64,
    pub seconds: f64,
    /// FNV-1a 64 of the data, equal on both sides (checked).
    pub checksum: u64,
}

impl Transfer {
    pub fn mbit_per_s(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.seconds.max(1e-9) / 1e6
    }
}

const FNV_OFFSET: u64 = 0xcbf29ce484222325;
const FNV_PRIME: u64 = 0x100000001b3;

fn fnv1a(mut h: u64, data: &[u8]) -> u64 {
    for b in data {
        h ^= *b as u64;
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// Deterministic pseudo-random bytes (xorshift64), so corruption cannot hide in zeros.
fn fill(state: &mut u64, buf: &mut [u8]) {
    for chunk in buf.chunks_mut(8) {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        let b = state.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
}

/// Sends `bytes` bytes over TCP from namespace `from_ns` to `to_ip:port`, received by a
/// listener in `to_ns`; both sides checksum the stream and the call fails unless length and
/// checksum match. Times out after 60 s without progress.
pub fn tcp_transfer(
    from_ns: &str,
    to_ns: &str,
    to_ip: IpAddr,
    port: u16,
    bytes: u64,
) -> Result<Transfer> {
    let bind: SocketAddr = match to_ip {
        IpAddr::V4(_) => ([0, 0, 0, 0], port).into(),
        IpAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, port).into(),
    };
    let listener = in_netns(to_ns, || TcpListener::bind(bind))?
        .with_context(|| format!("binding {bind} in {to_ns}"))?;
    listener.set_nonblocking(true)?;
    let timeout = Duration::from_secs(60);

    std::thread::scope(|s| {
        let server = s.spawn(move || -> Result<(u64, u64)> {
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut stream = loop {
                match listener.accept() {
                    Ok((st, _)) => break st,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        if Instant::now() > deadline {
                            bail!("no connection to {bind} in {to_ns} within 30 s");
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(e) => return Err(e.into()),
                }
            };
            stream.set_nonblocking(false)?;
            stream.set_read_timeout(Some(timeout))?;
            let mut buf = vec![0u8; 256 * 1024];
            let (mut n, mut h) = (0u64, FNV_OFFSET);
            loop {
                let k = stream.read(&mut buf).context("receiving")?;
                if k == 0 {
                    break;
                }
                h = fnv1a(h, &buf[..k]);
                n += k as u64;
            }
            // Tell the sender we are done (it waits for this byte before reporting).
            stream.write_all(&[1])?;
            Ok((n, h))
        });

        let dest = SocketAddr::new(to_ip, port);
        let started = Instant::now();
        let client = (|| -> Result<u64> {
            let mut stream = in_netns(from_ns, || {
                TcpStream::connect_timeout(&dest, Duration::from_secs(10))
            })?
            .with_context(|| format!("connecting from {from_ns} to {dest}"))?;
            stream.set_write_timeout(Some(timeout))?;
            stream.set_read_timeout(Some(timeout))?;
            let mut buf = vec![0u8; 256 * 1024];
            let (mut left, mut state, mut h) = (bytes, 0x9e3779b97f4a7c15u64, FNV_OFFSET);
            while left > 0 {
                let k = left.min(buf.len() as u64) as usize;
                fill(&mut state, &mut buf[..k]);
                stream.write_all(&buf[..k]).context("sending")?;
                h = fnv1a(h, &buf[..k]);
                left -= k as u64;
            }
            stream.shutdown(std::net::Shutdown::Write)?;
            let mut ack = [0u8; 1];
            stream
                .read_exact(&mut ack)
                .context("waiting for the receiver's ack")?;
            Ok(h)
        })();
        let seconds = started.elapsed().as_secs_f64();
        let client_hash = match client {
            Ok(h) => h,
            Err(e) => {
                // Unblock the server: connect to it ourselves if it is still waiting.
                let _ = in_netns(to_ns, || {
                    TcpStream::connect_timeout(&dest, Duration::from_millis(200))
                });
                let _ = server.join();
                return Err(e);
            }
        };
        let (n, server_hash) = server
            .join()
            .map_err(|_| anyhow::anyhow!("receiver panicked"))??;
        if n != bytes || server_hash != client_hash {
            bail!(
                "TCP transfer {from_ns} -> {dest}: sent {bytes} bytes (fnv {client_hash:016x}), \
                 received {n} bytes (fnv {server_hash:016x})"
            );
        }
        Ok(Transfer {
            bytes,
            seconds,
            checksum: client_hash,
        })
    })
}

/// A UDP server bound to `port` (any address of `to_ip`'s family) in `to_ns` and a client on
/// an ephemeral port in `from_ns`.
fn udp_pair(
    from_ns: &str,
    to_ns: &str,
    to_ip: IpAddr,
    port: u16,
) -> Result<(UdpSocket, UdpSocket)> {
    let (bind_any, local_any): (SocketAddr, SocketAddr) = match to_ip {
        IpAddr::V4(_) => (([0, 0, 0, 0], port).into(), ([0, 0, 0, 0], 0).into()),
        IpAddr::V6(_) => (
            (std::net::Ipv6Addr::UNSPECIFIED, port).into(),
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
        ),
    };
    let server = in_netns(to_ns, || UdpSocket::bind(bind_any))?
        .with_context(|| format!("binding UDP {bind_any} in {to_ns}"))?;
    let client = in_netns(from_ns, || UdpSocket::bind(local_any))??;
    Ok((server, client))
}

/// Sends `count` UDP datagrams (each with a distinct payload) from namespace `from_ns` to an
/// echo responder on `to_ip:port` in `to_ns`, and returns how many correct echoes came back
/// (exercising both directions). Each datagram waits up to 1 s for its echo.
pub fn udp_echo(from_ns: &str, to_ns: &str, to_ip: IpAddr, port: u16, count: u32) -> Result<u32> {
    let (server, client) = udp_pair(from_ns, to_ns, to_ip, port)?;
    server.set_read_timeout(Some(Duration::from_millis(100)))?;
    client.set_read_timeout(Some(Duration::from_secs(1)))?;
    let dest = SocketAddr::new(to_ip, port);
    let done = std::sync::atomic::AtomicBool::new(false);

    std::thread::scope(|s| {
        s.spawn(|| {
            let mut buf = [0u8; 2048];
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok((n, from)) = server.recv_from(&mut buf) {
                    let _ = server.send_to(&buf[..n], from);
                }
            }
        });
        let result = (|| -> Result<u32> {
            let mut ok = 0;
            let mut buf = [0u8; 2048];
            for i in 0..count {
                let payload = format!("sdn-lab udp {i} {}", "x".repeat((i % 7) as usize * 100));
                client.send_to(payload.as_bytes(), dest)?;
                let deadline = Instant::now() + Duration::from_secs(1);
                while Instant::now() < deadline {
                    match client.recv_from(&mut buf) {
                        Ok((n, from)) if from == dest && &buf[..n] == payload.as_bytes() => {
                            ok += 1;
                            break;
                        }
                        Ok(_) => continue, // a late echo of an earlier datagram
                        Err(_) => break,
                    }
                }
            }
            Ok(ok)
        })();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        result
    })
}

/// A TCP server in namespace `ns` on `port`: on each connection it says `name`, then echoes
/// lines. Runs on background threads for the rest of the process.
pub fn serve_named_echo(ns: &str, name: &str, port: u16) -> anyhow::Result<()> {
    use std::io::{BufRead, BufReader, Write};
    let listener = crate::netns::in_netns(ns, || std::net::TcpListener::bind(("0.0.0.0", port)))??;
    let name = name.to_string();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let n = name.clone();
            std::thread::spawn(move || {
                let Ok(mut w) = conn.try_clone() else { return };
                let _ = writeln!(w, "{n}");
                for line in BufReader::new(conn).lines().map_while(Result::ok) {
                    let _ = writeln!(w, "{line}");
                }
            });
        }
    });
    Ok(())
}

/// Connects from namespace `ns` to `addr` and reads the server's first line (its name, see
/// [`serve_named_echo`]); returns it with the open connection.
pub fn hello(
    ns: &str,
    addr: std::net::SocketAddr,
) -> std::io::Result<(String, std::net::TcpStream)> {
    use std::io::BufRead;
    let s = crate::netns::in_netns(ns, || {
        std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(5))
    })
    .map_err(std::io::Error::other)??;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    let mut line = String::new();
    std::io::BufReader::new(s.try_clone()?).read_line(&mut line)?;
    Ok((line.trim().to_string(), s))
}

/// `GET path` over plain HTTP/1.1 to `addr` from inside namespace `ns` (e.g. an agent's
/// `/metrics` on 127.0.0.1:9477 of its node): (status code, body).
pub fn http_get(ns: &str, addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let path = path.to_string();
    in_netns(ns, move || -> Result<(u16, String)> {
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .with_context(|| format!("connect {addr}"))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )?;
        let mut raw = String::new();
        s.read_to_string(&mut raw)?;
        let code = raw
            .get(9..12)
            .and_then(|c| c.parse().ok())
            .with_context(|| format!("not an HTTP response: {raw:?}"))?;
        let body = raw.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
        Ok((code, body.to_string()))
    })?
}

/// The value of one series in Prometheus text (`name{labels}` exactly as exposed).
pub fn metric_value(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        let rest = l.strip_prefix(series)?.strip_prefix(' ')?;
        rest.split(' ').next()?.parse().ok()
    })
}

/// The payload of datagram `k` of send `s` in [`udp_gso_transfer`]: the two numbers, then a
/// pattern of both, so a datagram cut at the wrong place or with bytes of another shows.
fn gso_datagram(s: u32, k: u16, size: usize) -> Vec<u8> {
    let mut d = Vec::with_capacity(size);
    d.extend_from_slice(&s.to_be_bytes());
    d.extend_from_slice(&k.to_be_bytes());
    d.extend((6..size).map(|i| (s as usize * 31 + usize::from(k) * 7 + i) as u8));
    d
}

/// `sends` messages of `per_send` datagrams of `size` bytes each from `from_ns` to
/// `to_ip:port` in `to_ns`, each message sent at once with `UDP_SEGMENT` (one UDP super-packet
/// for the kernel, a routed device with USO passes it on whole). Returns how many datagrams
/// arrived exactly as they were sent (the receiver checks every byte).
pub fn udp_gso_transfer(
    from_ns: &str,
    to_ns: &str,
    to_ip: IpAddr,
    port: u16,
    sends: u32,
    per_send: u16,
    size: u16,
) -> Result<u32> {
    const UDP_SEGMENT: libc::c_int = 103;
    let (server, client) = udp_pair(from_ns, to_ns, to_ip, port)?;
    server.set_read_timeout(Some(Duration::from_millis(200)))?;
    let gso = libc::c_int::from(size);
    // SAFETY: setsockopt with a pointer to a live c_int of the right size.
    let rc = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&client),
            libc::SOL_UDP,
            UDP_SEGMENT,
            (&gso as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as u32,
        )
    };
    if rc != 0 {
        bail!("UDP_SEGMENT refused: {}", std::io::Error::last_os_error());
    }
    let dest = SocketAddr::new(to_ip, port);
    let size = usize::from(size);
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|sc| {
        let receiver = sc.spawn(|| {
            let mut ok = 0u32;
            let mut buf = vec![0u8; 65_536];
            let mut quiet_since: Option<Instant> = None;
            loop {
                match server.recv_from(&mut buf) {
                    Ok((n, _)) if n >= 6 => {
                        quiet_since = None;
                        let s = u32::from_be_bytes(buf[..4].try_into().expect("4 bytes"));
                        let k = u16::from_be_bytes([buf[4], buf[5]]);
                        if buf[..n] == gso_datagram(s, k, size)[..] {
                            ok += 1;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => {
                        if done.load(std::sync::atomic::Ordering::Relaxed) {
                            let since = *quiet_since.get_or_insert_with(Instant::now);
                            if since.elapsed() > Duration::from_secs(1) {
                                return ok;
                            }
                        }
                    }
                }
            }
        });
        let sent = (|| -> Result<()> {
            for s in 0..sends {
                let msg: Vec<u8> = (0..per_send)
                    .flat_map(|k| gso_datagram(s, k, size))
                    .collect();
                client.send_to(&msg, dest)?;
                // Paced: the point is the offload path, not the receiver's buffer.
                std::thread::sleep(Duration::from_millis(2));
            }
            Ok(())
        })();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        let ok = receiver
            .join()
            .map_err(|_| anyhow::anyhow!("receiver panicked"))?;
        sent.map(|()| ok)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_is_deterministic_and_not_constant() {
        let (mut a, mut b) = (1u64, 1u64);
        let (mut x, mut y) = ([0u8; 37], [0u8; 37]);
        fill(&mut a, &mut x);
        fill(&mut b, &mut y);
        assert_eq!(x, y);
        assert!(x.iter().any(|&v| v != x[0]));
        assert_ne!(fnv1a(FNV_OFFSET, &x), fnv1a(FNV_OFFSET, &x[1..]));
    }
}
