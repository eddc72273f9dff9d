//! Relays queries for names outside our zones to configured upstream resolvers
//! (`dns.forwarders`). Only the listeners use it, and only after [`super::Zones::lookup`]
//! said the name is in none of our zones: our own zones are never forwarded, and their hot
//! path never touches this module.
//!
//! - The client's message goes upstream unchanged except for a fresh random ID (and, for UDP,
//!   a fresh ephemeral port per query on a connected socket); the answer comes back unchanged
//!   except that the client's ID is restored. A reply must carry our ID, have QR set and echo
//!   our question, or it is ignored.
//! - UDP first. A truncated (TC) upstream answer is retried over TCP against the same
//!   upstream; the full answer is used if it fits the client's UDP limit, else the truncated
//!   one is passed on (the client then retries over TCP, and a TCP client's query goes
//!   upstream over TCP directly).
//! - Upstreams are tried in order, each for at most [`FORWARD_TIMEOUT`]; an error (port
//!   unreachable, connection refused) moves on at once. When all fail the caller answers
//!   SERVFAIL.
//! - At most [`MAX_OUTSTANDING`] forwarded queries are in flight; beyond that the caller
//!   answers SERVFAIL at once (a flood cannot pile up tasks and sockets).

use rand_core::{OsRng, RngCore};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// The port of a forwarder given without one.
pub const DEFAULT_PORT: u16 = 53;
/// How long one upstream gets (UDP and a possible TCP retry together) before the next.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(2);
/// Forwarded queries in flight at once; more are answered SERVFAIL at once.
pub const MAX_OUTSTANDING: usize = 1024;

/// `IP` or `IP:port` (`[v6]:port` for IPv6 with a port); the port defaults to 53.
pub fn parse_forwarder(s: &str) -> Result<SocketAddr, String> {
    let t = s.trim();
    if let Ok(ip) = t.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, DEFAULT_PORT));
    }
    match t.parse::<SocketAddr>() {
        Ok(a) if a.port() == 0 => Err(format!("'{s}': port must not be 0")),
        Ok(a) => Ok(a),
        Err(_) => Err(format!(
            "'{s}' is not an IP address or IP:port (IPv6 with a port: [fd00::53]:53)"
        )),
    }
}

/// The valid entries of `dns.forwarders` (the config was validated before).
pub fn parse_forwarders(list: &[String]) -> Vec<SocketAddr> {
    list.iter()
        .filter_map(|s| parse_forwarder(s).ok())
        .collect()
}

/// True if sending to `fwd` would reach a listener bound to `listen` on this host (a loop).
pub fn is_self(fwd: SocketAddr, listen: SocketAddr) -> bool {
    if fwd.port() != listen.port() {
        return false;
    }
    let (f, l) = (fwd.ip().to_canonical(), listen.ip().to_canonical());
    f == l || (l.is_unspecified() && (f.is_loopback() || f.is_unspecified()))
}

/// The upstreams and the in-flight bound. Cheap to share (behind the server's handle).
#[derive(Debug)]
pub struct Forwarder {
    upstreams: Vec<SocketAddr>,
    timeout: Duration,
    slots: Arc<Semaphore>,
}

impl Forwarder {
    /// None without upstreams (names outside our zones stay REFUSED).
    pub fn new(
        upstreams: Vec<SocketAddr>,
        timeout: Duration,
        max_outstanding: usize,
    ) -> Option<Self> {
        (!upstreams.is_empty()).then(|| Forwarder {
            upstreams,
            timeout,
            slots: Arc::new(Semaphore::new(max_outstanding)),
        })
    }

    pub fn upstreams(&self) -> &[SocketAddr] {
        &self.upstreams
    }

    /// A slot for one forwarded query, or None when [`MAX_OUTSTANDING`] are in flight.
    pub fn try_slot(&self) -> Option<OwnedSemaphorePermit> {
        self.slots.clone().try_acquire_owned().ok()
    }

    /// Relays the client's `query` and returns the upstream's answer carrying the client's ID,
    /// or None if every upstream failed or timed out. `tcp`: the client came over TCP (ask
    /// upstream over TCP). `udp_limit`: the largest answer the UDP client takes.
    pub async fn forward(&self, query: &[u8], tcp: bool, udp_limit: usize) -> Option<Vec<u8>> {
        let qend = question_end(query)?;
        let mut msg = query.to_vec();
        for &up in &self.upstreams {
            let id = OsRng.next_u32() as u16;
            msg[..2].copy_from_slice(&id.to_be_bytes());
            let deadline = Instant::now() + self.timeout;
            let got = if tcp {
                within(deadline, tcp_exchange(up, &msg, qend)).await
            } else {
                match within(deadline, udp_exchange(up, &msg, qend)).await {
                    Ok(resp) if resp[2] & 0x02 != 0 => {
                        match within(deadline, tcp_exchange(up, &msg, qend)).await {
                            Ok(full) if full.len() <= udp_limit => Ok(full),
                            _ => Ok(resp),
                        }
                    }
                    other => other,
                }
            };
            match got {
                Ok(mut resp) => {
                    resp[..2].copy_from_slice(&query[..2]);
                    return Some(resp);
                }
                Err(e) => tracing::debug!(upstream = %up, error = %e, "dns forward failed"),
            }
        }
        None
    }
}

async fn within<T>(
    deadline: Instant,
    f: impl std::future::Future<Output = io::Result<T>>,
) -> io::Result<T> {
    tokio::time::timeout_at(deadline, f)
        .await
        .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "timed out")))
}

/// Offset just past the (single) question: the header, the name, type and class.
fn question_end(msg: &[u8]) -> Option<usize> {
    if msg.len() < 12 || u16::from_be_bytes([msg[4], msg[5]]) != 1 {
        return None;
    }
    let mut i = 12;
    loop {
        let len = usize::from(*msg.get(i)?);
        if len == 0 {
            break;
        }
        if len > 63 {
            return None; // a pointer or a reserved label type: not in a question we relay
        }
        i += 1 + len;
    }
    let end = i + 1 + 4;
    (end <= msg.len()).then_some(end)
}

/// A reply to `ours`: same ID, QR set, and (if it has one) the same question.
fn is_reply(resp: &[u8], ours: &[u8], qend: usize) -> bool {
    if resp.len() < 12 || resp[..2] != ours[..2] || resp[2] & 0x80 == 0 {
        return false;
    }
    let qdcount = u16::from_be_bytes([resp[4], resp[5]]);
    qdcount == 0
        || (qdcount == 1
            && resp.len() >= qend
            && resp[12..qend].eq_ignore_ascii_case(&ours[12..qend]))
}

async fn udp_exchange(up: SocketAddr, msg: &[u8], qend: usize) -> io::Result<Vec<u8>> {
    let local: IpAddr = match up {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let sock = UdpSocket::bind(SocketAddr::new(local, 0)).await?;
    sock.connect(up).await?;
    sock.send(msg).await?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = sock.recv(&mut buf).await?;
        if is_reply(&buf[..n], msg, qend) {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

async fn tcp_exchange(up: SocketAddr, msg: &[u8], qend: usize) -> io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(up).await?;
    let _ = stream.set_nodelay(true);
    let len = u16::try_from(msg.len()).map_err(|_| io::Error::other("query too long"))?;
    let mut frame = Vec::with_capacity(msg.len() + 2);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(msg);
    stream.write_all(&frame).await?;
    loop {
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).await?;
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut buf).await?;
        if is_reply(&buf, msg, qend) {
            return Ok(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Message, MessageType, Query, ResponseCode};
    use hickory_proto::rr::{rdata::A, Name, RData, Record, RecordType};

    fn query(id: u16, name: &str) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = id;
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        m.to_vec().unwrap()
    }

    /// A reply to `q` with `n` A records (and TC if `tc`).
    fn reply(q: &[u8], n: usize, tc: bool) -> Vec<u8> {
        let req = Message::from_vec(q).unwrap();
        let mut m = Message::new(req.metadata.id, MessageType::Response, req.metadata.op_code);
        m.metadata.truncation = tc;
        m.metadata.recursion_available = true;
        m.add_query(req.queries[0].clone());
        if !tc {
            for i in 0..n {
                m.add_answer(Record::from_rdata(
                    req.queries[0].name().clone(),
                    60,
                    RData::A(A::new(192, 0, 2, (i % 250) as u8 + 1)),
                ));
            }
        }
        m.to_vec().unwrap()
    }

    #[test]
    fn parse_and_self_detection() {
        let a = |s: &str| parse_forwarder(s);
        assert_eq!(a("10.96.0.10"), Ok("10.96.0.10:53".parse().unwrap()));
        assert_eq!(
            a(" 10.96.0.10:5353 "),
            Ok("10.96.0.10:5353".parse().unwrap())
        );
        assert_eq!(a("fd00::53"), Ok("[fd00::53]:53".parse().unwrap()));
        assert_eq!(a("[fd00::53]:54"), Ok("[fd00::53]:54".parse().unwrap()));
        for bad in [
            "",
            "dns.google",
            "10.0.0.1:0",
            "10.0.0.1:70000",
            "10.0.0.0/8",
            "[fd00::53]",
        ] {
            assert!(a(bad).is_err(), "{bad}");
        }
        let l = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(is_self(l("127.0.0.1:10053"), l("0.0.0.0:10053")));
        assert!(is_self(l("10.0.0.5:10053"), l("10.0.0.5:10053")));
        assert!(is_self(l("[::1]:10053"), l("[::]:10053")));
        assert!(!is_self(l("127.0.0.1:53"), l("0.0.0.0:10053")));
        assert!(!is_self(l("10.0.0.6:10053"), l("10.0.0.5:10053")));
    }

    #[test]
    fn question_matching() {
        let q = query(7, "Example.COM.");
        let qend = question_end(&q).unwrap();
        assert_eq!(qend, q.len());
        let mut r = reply(&q, 1, false);
        assert!(is_reply(&r, &q, qend));
        // case differences in the echoed question are fine
        r[13] = b'e';
        assert!(is_reply(&r, &q, qend));
        // another ID, a query, or another question: not ours
        let mut other = r.clone();
        other[1] ^= 1;
        assert!(!is_reply(&other, &q, qend));
        assert!(!is_reply(&q, &q, qend));
        let r2 = reply(&query(7, "example.org."), 1, false);
        assert!(!is_reply(&r2, &q, qend));
        // compressed or missing question: not relayed
        let mut bad = q.clone();
        bad[12] = 0xc0;
        assert_eq!(question_end(&bad), None);
        assert_eq!(question_end(&q[..12]), None);
    }

    /// A UDP+TCP upstream on 127.0.0.1 answering with `n` records; UDP answers are truncated
    /// when `udp_tc`. Returns its address and how many UDP/TCP queries it saw.
    async fn upstream(
        n: usize,
        udp_tc: bool,
    ) -> (
        SocketAddr,
        Arc<std::sync::atomic::AtomicUsize>,
        Arc<std::sync::atomic::AtomicUsize>,
    ) {
        use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = udp.local_addr().unwrap();
        let tcp = tokio::net::TcpListener::bind(addr).await.unwrap();
        let (nu, nt) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let c = nu.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let (len, peer) = udp.recv_from(&mut buf).await.unwrap();
                c.fetch_add(1, Relaxed);
                let r = reply(&buf[..len], n, udp_tc);
                udp.send_to(&r, peer).await.unwrap();
            }
        });
        let c = nt.clone();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = tcp.accept().await.unwrap();
                c.fetch_add(1, Relaxed);
                let mut len = [0u8; 2];
                s.read_exact(&mut len).await.unwrap();
                let mut q = vec![0u8; usize::from(u16::from_be_bytes(len))];
                s.read_exact(&mut q).await.unwrap();
                let r = reply(&q, n, false);
                s.write_all(&(r.len() as u16).to_be_bytes()).await.unwrap();
                s.write_all(&r).await.unwrap();
            }
        });
        (addr, nu, nt)
    }

    #[tokio::test]
    async fn relays_with_the_clients_id_and_falls_back_to_tcp() {
        use std::sync::atomic::Ordering::Relaxed;
        let (addr, nu, nt) = upstream(2, false).await;
        let f = Forwarder::new(vec![addr], FORWARD_TIMEOUT, 4).unwrap();
        let q = query(0xbeef, "example.com.");
        let r = f.forward(&q, false, 512).await.unwrap();
        let m = Message::from_vec(&r).unwrap();
        assert_eq!(m.metadata.id, 0xbeef);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert_eq!(m.answers.len(), 2);
        assert_eq!((nu.load(Relaxed), nt.load(Relaxed)), (1, 0));
        // TCP client: TCP upstream
        let r = f.forward(&q, true, 512).await.unwrap();
        assert_eq!(Message::from_vec(&r).unwrap().answers.len(), 2);
        assert_eq!((nu.load(Relaxed), nt.load(Relaxed)), (1, 1));

        // upstream truncates over UDP: the TCP answer if it fits the client, else the TC one
        let (addr, nu, nt) = upstream(60, true).await;
        let f = Forwarder::new(vec![addr], FORWARD_TIMEOUT, 4).unwrap();
        let r = f.forward(&q, false, 4096).await.unwrap();
        let m = Message::from_vec(&r).unwrap();
        assert!(!m.metadata.truncation);
        assert_eq!((m.metadata.id, m.answers.len()), (0xbeef, 60));
        let r = f.forward(&q, false, 512).await.unwrap();
        let m = Message::from_vec(&r).unwrap();
        assert!(m.metadata.truncation && m.answers.is_empty());
        assert_eq!((nu.load(Relaxed), nt.load(Relaxed)), (2, 2));
    }

    #[tokio::test]
    async fn next_upstream_on_failure_none_when_all_fail() {
        // a silent upstream (bound, never answers) and a closed port (port unreachable)
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let closed = {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            s.local_addr().unwrap()
        };
        let (good, _, _) = upstream(1, false).await;
        let q = query(9, "example.com.");
        let timeout = Duration::from_millis(300);
        let f =
            Forwarder::new(vec![silent.local_addr().unwrap(), closed, good], timeout, 4).unwrap();
        let start = std::time::Instant::now();
        let r = f.forward(&q, false, 512).await.unwrap();
        assert_eq!(Message::from_vec(&r).unwrap().answers.len(), 1);
        let el = start.elapsed();
        assert!(el >= timeout && el < timeout * 3, "{el:?}");
        let f = Forwarder::new(vec![silent.local_addr().unwrap(), closed], timeout, 4).unwrap();
        let start = std::time::Instant::now();
        assert!(f.forward(&q, false, 512).await.is_none());
        assert!(f.forward(&q, true, 512).await.is_none());
        assert!(start.elapsed() < timeout * 4, "{:?}", start.elapsed());
        assert!(Forwarder::new(vec![], timeout, 4).is_none());
    }

    #[test]
    fn bounded_slots() {
        let f = Forwarder::new(vec!["127.0.0.1:53".parse().unwrap()], FORWARD_TIMEOUT, 2).unwrap();
        let a = f.try_slot().unwrap();
        let _b = f.try_slot().unwrap();
        assert!(f.try_slot().is_none());
        drop(a);
        assert!(f.try_slot().is_some());
    }
}
