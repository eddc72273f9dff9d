//! Serves [`Zones`] over UDP and TCP on one address.
//!
//! - Zones live in an [`ArcSwap`] behind a cloneable [`DnsHandle`]; the agent calls
//!   [`DnsHandle::set_zones`] after each re-plan, and queries in flight finish on the old zones.
//! - EDNS0: a client's advertised UDP size is honoured (clamped to 512..=4096); without EDNS the
//!   limit is 512. A response that does not fit first loses its additional section, then is
//!   sent with TC set and no records so the client retries over TCP (RFC 7766). Over TCP the
//!   limit is 65535 (hickory writes as many records as fit and sets TC).
//! - Hostile input: datagrams shorter than a header and responses (QR set) are dropped;
//!   anything that does not decode (oversized names, compression loops, bad counts) gets a
//!   bare FORMERR header; other opcodes NOTIMP; EDNS versions other than 0 BADVERS; classes
//!   other than IN REFUSED. Everything is counted in [`DnsCounters`]; answering runs under
//!   `catch_unwind` so even a bug cannot take the listener down.
//! - Forwarding (`dns.forwarders`, [`super::forward`]): a name outside every zone is REFUSED
//!   unless forwarders are configured; then the listener relays it in a task of its own (UDP)
//!   or inline (TCP), bounded by [`super::forward::MAX_OUTSTANDING`]. Names in our zones never
//!   reach that code. [`DnsHandle::answer`] itself never forwards.
//! - Hot path: one receive buffer and one output buffer per listener task, zones read through
//!   an `ArcSwap` guard (no refcount traffic), records borrowed from the index and encoded
//!   directly. What is still allocated per query is hickory's request decoding (a few small
//!   vectors) and its name-compression table.

use super::forward::{Forwarder, FORWARD_TIMEOUT, MAX_OUTSTANDING};
use super::zone::Zones;
use arc_swap::ArcSwap;
use hickory_proto::op::{
    emit_message_parts, Edns, Message, MessageType, Metadata, OpCode, Query, ResponseCode,
};
use hickory_proto::rr::{DNSClass, Record};
use hickory_proto::serialize::binary::BinEncoder;
use serde::{Deserialize, Serialize};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// Largest UDP response we send, whatever the client advertises.
pub const MAX_UDP_PAYLOAD: u16 = 4096;
/// The UDP payload size we advertise in our OPT record (DNS flag day 2020).
pub const ADVERTISED_UDP_PAYLOAD: u16 = 1232;
/// Concurrent TCP connections; more are closed at once.
pub const MAX_TCP_CONNECTIONS: usize = 256;
/// A TCP connection idle (or dribbling a message) this long is closed.
pub const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Which transport a query came in on: decides the size limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// Query counters, by transport and by outcome. Relaxed atomics: read for status/metrics.
#[derive(Debug, Default)]
pub struct DnsCounters {
    pub udp_queries: AtomicU64,
    pub tcp_queries: AtomicU64,
    /// NOERROR with answers.
    pub noerror: AtomicU64,
    /// NOERROR without answers.
    pub nodata: AtomicU64,
    pub nxdomain: AtomicU64,
    pub refused: AtomicU64,
    pub formerr: AtomicU64,
    pub notimp: AtomicU64,
    pub servfail: AtomicU64,
    pub badvers: AtomicU64,
    /// Responses sent with TC set.
    pub truncated: AtomicU64,
    /// Datagrams/messages not answered at all (shorter than a header, or responses).
    pub dropped: AtomicU64,
    pub tcp_connections: AtomicU64,
    /// TCP connections closed at once because [`MAX_TCP_CONNECTIONS`] were open.
    pub tcp_rejected: AtomicU64,
    /// Bugs caught by `catch_unwind` (should stay 0).
    pub panics: AtomicU64,
    /// Queries for names outside our zones relayed to `dns.forwarders`.
    pub forwarded: AtomicU64,
    /// Forwarded queries no upstream answered in time (answered SERVFAIL).
    pub forward_failed: AtomicU64,
    /// Queries not forwarded because too many were in flight (answered SERVFAIL).
    pub forward_overload: AtomicU64,
}

/// A plain copy of [`DnsCounters`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DnsCountersSnapshot {
    pub udp_queries: u64,
    pub tcp_queries: u64,
    pub noerror: u64,
    pub nodata: u64,
    pub nxdomain: u64,
    pub refused: u64,
    pub formerr: u64,
    pub notimp: u64,
    pub servfail: u64,
    pub badvers: u64,
    pub truncated: u64,
    pub dropped: u64,
    pub tcp_connections: u64,
    pub tcp_rejected: u64,
    pub panics: u64,
    #[serde(default)]
    pub forwarded: u64,
    #[serde(default)]
    pub forward_failed: u64,
    #[serde(default)]
    pub forward_overload: u64,
}

impl DnsCounters {
    pub fn snapshot(&self) -> DnsCountersSnapshot {
        let g = |c: &AtomicU64| c.load(Relaxed);
        DnsCountersSnapshot {
            udp_queries: g(&self.udp_queries),
            tcp_queries: g(&self.tcp_queries),
            noerror: g(&self.noerror),
            nodata: g(&self.nodata),
            nxdomain: g(&self.nxdomain),
            refused: g(&self.refused),
            formerr: g(&self.formerr),
            notimp: g(&self.notimp),
            servfail: g(&self.servfail),
            badvers: g(&self.badvers),
            truncated: g(&self.truncated),
            dropped: g(&self.dropped),
            tcp_connections: g(&self.tcp_connections),
            tcp_rejected: g(&self.tcp_rejected),
            panics: g(&self.panics),
            forwarded: g(&self.forwarded),
            forward_failed: g(&self.forward_failed),
            forward_overload: g(&self.forward_overload),
        }
    }

    fn rcode(&self, rcode: ResponseCode, answered: bool) {
        let c = match rcode {
            ResponseCode::NoError if answered => &self.noerror,
            ResponseCode::NoError => &self.nodata,
            ResponseCode::NXDomain => &self.nxdomain,
            ResponseCode::Refused => &self.refused,
            ResponseCode::FormErr => &self.formerr,
            ResponseCode::NotImp => &self.notimp,
            ResponseCode::BADVERS => &self.badvers,
            _ => &self.servfail,
        };
        c.fetch_add(1, Relaxed);
    }
}

struct Shared {
    zones: ArcSwap<Zones>,
    counters: DnsCounters,
    /// None: names outside our zones are REFUSED.
    forwarder: Option<Forwarder>,
}

/// What the listener does with a query.
enum Outcome {
    /// Send `out`.
    Send,
    /// Send nothing.
    Drop,
    /// Outside our zones and forwarders are configured: relay it. `udp_limit`: the largest
    /// answer the (UDP) client takes.
    Forward { udp_limit: usize },
}

/// The agent's grip on a running responder: swap zones, read counters. Cheap to clone.
#[derive(Clone)]
pub struct DnsHandle {
    shared: Arc<Shared>,
}

impl DnsHandle {
    pub fn new(zones: Zones) -> DnsHandle {
        DnsHandle::with_forwarders(zones, Vec::new())
    }

    /// Like [`DnsHandle::new`]; the listeners relay names outside our zones to `forwarders`
    /// (tried in order, [`FORWARD_TIMEOUT`] each). Empty: those names are REFUSED.
    pub fn with_forwarders(zones: Zones, forwarders: Vec<SocketAddr>) -> DnsHandle {
        DnsHandle::with_forwarder(
            zones,
            Forwarder::new(forwarders, FORWARD_TIMEOUT, MAX_OUTSTANDING),
        )
    }

    /// With a custom forwarder (timeouts and limits for tests).
    pub fn with_forwarder(zones: Zones, forwarder: Option<Forwarder>) -> DnsHandle {
        DnsHandle {
            shared: Arc::new(Shared {
                zones: ArcSwap::from_pointee(zones),
                counters: DnsCounters::default(),
                forwarder,
            }),
        }
    }

    /// The configured upstreams (empty: no forwarding).
    pub fn forwarders(&self) -> &[SocketAddr] {
        self.shared
            .forwarder
            .as_ref()
            .map_or(&[], |f| f.upstreams())
    }

    /// Replaces the zones atomically; the next query sees the new ones.
    pub fn set_zones(&self, zones: Zones) {
        self.shared.zones.store(Arc::new(zones));
    }

    pub fn zones(&self) -> Arc<Zones> {
        self.shared.zones.load_full()
    }

    pub fn counters(&self) -> DnsCountersSnapshot {
        self.shared.counters.snapshot()
    }

    /// Answers one wire-format query into `out` (cleared first). Returns false when nothing
    /// should be sent. Public for benchmarks and fuzzing. Never forwards: names outside our
    /// zones are REFUSED here even with forwarders (the listeners forward those).
    pub fn answer(&self, query: &[u8], transport: Transport, out: &mut Vec<u8>) -> bool {
        matches!(self.outcome(query, transport, out, false), Outcome::Send)
    }

    fn outcome(
        &self,
        query: &[u8],
        transport: Transport,
        out: &mut Vec<u8>,
        forwarding: bool,
    ) -> Outcome {
        let zones = self.shared.zones.load();
        let counters = &self.shared.counters;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            respond(&zones, counters, query, transport, out, forwarding)
        })) {
            Ok(o) => o,
            Err(_) => {
                counters.panics.fetch_add(1, Relaxed);
                send_if(header_only(query, ResponseCode::ServFail, counters, out))
            }
        }
    }

    /// Relays `query` (known to be outside our zones) and writes the answer, or SERVFAIL,
    /// into `out`. The caller holds a forwarding slot.
    async fn forward(
        &self,
        query: &[u8],
        transport: Transport,
        udp_limit: usize,
        out: &mut Vec<u8>,
    ) {
        let Some(f) = &self.shared.forwarder else {
            return;
        };
        let c = &self.shared.counters;
        c.forwarded.fetch_add(1, Relaxed);
        match f
            .forward(query, transport == Transport::Tcp, udp_limit)
            .await
        {
            Some(resp) => *out = resp,
            None => {
                c.forward_failed.fetch_add(1, Relaxed);
                servfail(query, c, out);
            }
        }
    }

    /// A forwarding slot, or None (counted, `out` holds SERVFAIL) when too many are in flight.
    fn forward_slot(
        &self,
        query: &[u8],
        out: &mut Vec<u8>,
    ) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let slot = self.shared.forwarder.as_ref()?.try_slot();
        if slot.is_none() {
            self.shared.counters.forward_overload.fetch_add(1, Relaxed);
            servfail(query, &self.shared.counters, out);
        }
        slot
    }
}

fn send_if(send: bool) -> Outcome {
    if send {
        Outcome::Send
    } else {
        Outcome::Drop
    }
}

/// SERVFAIL for a query that decoded before (echoes the question and EDNS).
fn servfail(query: &[u8], c: &DnsCounters, out: &mut Vec<u8>) {
    let Ok(msg) = Message::from_vec(query) else {
        header_only(query, ResponseCode::ServFail, c, out);
        return;
    };
    let Some(q) = msg.queries.first() else {
        header_only(query, ResponseCode::ServFail, c, out);
        return;
    };
    let mut meta = Metadata::response_from_request(&msg.metadata);
    meta.response_code = ResponseCode::ServFail;
    let edns = msg.edns.as_ref().map(|_| {
        let mut e = Edns::new();
        e.set_max_payload(ADVERTISED_UDP_PAYLOAD);
        e
    });
    if !finish(c, &meta, q, &[], None, &[], edns.as_ref(), out) {
        header_only(query, ResponseCode::ServFail, c, out);
    }
}

/// Replies with just a header (id, opcode and RD copied from the query), no question.
fn header_only(query: &[u8], rcode: ResponseCode, c: &DnsCounters, out: &mut Vec<u8>) -> bool {
    out.clear();
    if query.len() < 12 {
        c.dropped.fetch_add(1, Relaxed);
        return false;
    }
    let opcode_rd = query[2] & 0x79; // opcode bits and RD
    out.extend_from_slice(&[query[0], query[1], 0x80 | opcode_rd, rcode.low()]);
    out.extend_from_slice(&[0; 8]);
    c.rcode(rcode, false);
    true
}

fn respond(
    zones: &Zones,
    c: &DnsCounters,
    query: &[u8],
    transport: Transport,
    out: &mut Vec<u8>,
    forwarding: bool,
) -> Outcome {
    out.clear();
    if query.len() < 12 || query[2] & 0x80 != 0 {
        // Too short to answer, or a response: never answer those (no reflection loops).
        c.dropped.fetch_add(1, Relaxed);
        return Outcome::Drop;
    }
    let Ok(msg) = Message::from_vec(query) else {
        return send_if(header_only(query, ResponseCode::FormErr, c, out));
    };
    if msg.metadata.op_code != OpCode::Query {
        return send_if(header_only(query, ResponseCode::NotImp, c, out));
    }
    if msg.queries.len() != 1 || msg.metadata.message_type != MessageType::Query {
        return send_if(header_only(query, ResponseCode::FormErr, c, out));
    }
    let q = &msg.queries[0];
    let mut meta = Metadata::response_from_request(&msg.metadata);
    let edns = msg.edns.as_ref().map(|_| {
        let mut e = Edns::new();
        e.set_max_payload(ADVERTISED_UDP_PAYLOAD);
        e
    });
    let limit = match (transport, &msg.edns) {
        (Transport::Tcp, _) => usize::from(u16::MAX),
        (Transport::Udp, None) => 512,
        (Transport::Udp, Some(e)) => usize::from(e.max_payload().clamp(512, MAX_UDP_PAYLOAD)),
    };
    if msg.edns.as_ref().is_some_and(|e| e.version() != 0) {
        meta.response_code = ResponseCode::BADVERS;
        return send_if(finish(c, &meta, q, &[], None, &[], edns.as_ref(), out));
    }
    let ans = zones.lookup(q.name(), q.query_type());
    if forwarding && ans.is_outside_zones() {
        // Not ours: relayed as is by the listener (any class).
        return Outcome::Forward {
            udp_limit: limit.min(usize::from(MAX_UDP_PAYLOAD)),
        };
    }
    if q.query_class() != DNSClass::IN && q.query_class() != DNSClass::ANY {
        meta.response_code = ResponseCode::Refused;
        return send_if(finish(c, &meta, q, &[], None, &[], edns.as_ref(), out));
    }
    meta.authoritative = ans.authoritative;
    meta.response_code = ans.rcode;
    let mut additionals: &[Record] = &ans.additionals;
    loop {
        if encode(
            &meta,
            q,
            &ans.answers,
            ans.authority.as_ref(),
            additionals,
            edns.as_ref(),
            out,
        )
        .is_err()
        {
            return send_if(header_only(query, ResponseCode::ServFail, c, out));
        }
        if out.len() <= limit {
            break;
        }
        if !additionals.is_empty() {
            additionals = &[]; // optional data goes first, without TC (RFC 2181 9)
            continue;
        }
        // Does not fit: an empty answer with TC so the client retries over TCP.
        meta.truncation = true;
        return send_if(finish(c, &meta, q, &[], None, &[], edns.as_ref(), out));
    }
    if out.len() > 2 && out[2] & 0x02 != 0 {
        c.truncated.fetch_add(1, Relaxed); // hickory cut records over TCP's 64 KiB
    }
    c.rcode(meta.response_code, !ans.answers.is_empty());
    Outcome::Send
}

/// Encodes and counts a response without records; falls back to SERVFAIL.
#[allow(clippy::too_many_arguments)]
fn finish(
    c: &DnsCounters,
    meta: &Metadata,
    q: &Query,
    answers: &[Record],
    authority: Option<&Record>,
    additionals: &[Record],
    edns: Option<&Edns>,
    out: &mut Vec<u8>,
) -> bool {
    if encode(meta, q, answers, authority, additionals, edns, out).is_err() {
        out.clear();
        c.servfail.fetch_add(1, Relaxed);
        return false;
    }
    if meta.truncation {
        c.truncated.fetch_add(1, Relaxed);
    }
    c.rcode(meta.response_code, !answers.is_empty());
    true
}

fn encode(
    meta: &Metadata,
    q: &Query,
    answers: &[Record],
    authority: Option<&Record>,
    additionals: &[Record],
    edns: Option<&Edns>,
    out: &mut Vec<u8>,
) -> Result<(), hickory_proto::ProtoError> {
    out.clear();
    let mut enc = BinEncoder::new(out);
    emit_message_parts(
        meta,
        &mut std::iter::once(q),
        &mut answers.iter(),
        &mut authority.into_iter(),
        &mut additionals.iter(),
        edns,
        None,
        &mut enc,
    )?;
    Ok(())
}

/// A bound responder. `run` serves until the future is dropped (or its task aborted), which
/// also closes open TCP connections.
pub struct DnsServer {
    udp: UdpSocket,
    tcp: TcpListener,
    handle: DnsHandle,
}

impl DnsServer {
    /// Binds UDP and TCP on `addr`. With port 0, picks one port free for both.
    pub async fn bind(addr: SocketAddr, handle: DnsHandle) -> io::Result<DnsServer> {
        let mut last_err = None;
        for _ in 0..if addr.port() == 0 { 20 } else { 1 } {
            let udp = crate::listen::udp(addr)?;
            let port = udp.local_addr()?.port();
            match crate::listen::tcp(SocketAddr::new(udp.local_addr()?.ip(), port)) {
                Ok(tcp) => return Ok(DnsServer { udp, tcp, handle }),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| io::Error::other("no port")))
    }

    /// The address both listeners are bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.udp.local_addr()
    }

    pub fn handle(&self) -> DnsHandle {
        self.handle.clone()
    }

    /// Serves forever (until dropped).
    pub async fn run(self) {
        tokio::join!(
            udp_loop(self.udp, self.handle.clone()),
            tcp_loop(self.tcp, self.handle)
        );
    }
}

async fn udp_loop(sock: UdpSocket, handle: DnsHandle) {
    // Replies leave from the address each query was sent to (see udp_pktinfo).
    if let Err(e) = super::udp_pktinfo::enable(&sock) {
        tracing::warn!(
            "dns udp: no IP_PKTINFO ({e}): answers to queries via a Service may be dropped"
        );
    }
    let sock = Arc::new(sock);
    let forwarding = handle.shared.forwarder.is_some();
    let mut buf = vec![0u8; 65535];
    let mut out = Vec::with_capacity(usize::from(MAX_UDP_PAYLOAD));
    let counters = &handle.shared.counters;
    loop {
        let (n, peer, dst) = match super::udp_pktinfo::recv(&sock, &mut buf).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!("dns udp recv: {e}");
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
        };
        counters.udp_queries.fetch_add(1, Relaxed);
        match handle.outcome(&buf[..n], Transport::Udp, &mut out, forwarding) {
            Outcome::Send => {}
            Outcome::Drop => continue,
            Outcome::Forward { udp_limit } => {
                let Some(slot) = handle.forward_slot(&buf[..n], &mut out) else {
                    reply(&sock, &out, peer, dst).await;
                    continue;
                };
                let (query, h, sock) = (buf[..n].to_vec(), handle.clone(), sock.clone());
                // Bounded by the slot and the forward timeouts; not aborted with the server.
                tokio::spawn(async move {
                    let _slot = slot;
                    let mut out = Vec::new();
                    h.forward(&query, Transport::Udp, udp_limit, &mut out).await;
                    if !out.is_empty() {
                        reply(&sock, &out, peer, dst).await;
                    }
                });
                continue;
            }
        }
        reply(&sock, &out, peer, dst).await;
    }
}

async fn reply(sock: &UdpSocket, out: &[u8], peer: SocketAddr, src: Option<std::net::IpAddr>) {
    if let Err(e) = super::udp_pktinfo::send(sock, out, peer, src).await {
        tracing::debug!("dns udp send to {peer}: {e}");
    }
}

async fn tcp_loop(listener: TcpListener, handle: DnsHandle) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_TCP_CONNECTIONS));
    let mut conns = tokio::task::JoinSet::new();
    let counters = &handle.shared.counters;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    counters.tcp_connections.fetch_add(1, Relaxed);
                    let Ok(slot) = slots.clone().try_acquire_owned() else {
                        counters.tcp_rejected.fetch_add(1, Relaxed);
                        continue; // dropping the stream closes it
                    };
                    let h = handle.clone();
                    conns.spawn(async move {
                        let _slot = slot;
                        tcp_conn(stream, h).await;
                    });
                }
                Err(e) => {
                    // e.g. EMFILE: back off instead of spinning
                    tracing::debug!("dns tcp accept: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn tcp_conn(mut stream: TcpStream, handle: DnsHandle) {
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut frame = Vec::new();
    let counters = &handle.shared.counters;
    let forwarding = handle.shared.forwarder.is_some();
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(TCP_IDLE_TIMEOUT, stream.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let n = usize::from(u16::from_be_bytes(len));
        buf.resize(n, 0);
        match tokio::time::timeout(TCP_IDLE_TIMEOUT, stream.read_exact(&mut buf)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        counters.tcp_queries.fetch_add(1, Relaxed);
        match handle.outcome(&buf, Transport::Tcp, &mut out, forwarding) {
            Outcome::Send => {}
            Outcome::Drop => return, // not a query: the stream is out of sync or hostile
            Outcome::Forward { udp_limit } => {
                if let Some(_slot) = handle.forward_slot(&buf, &mut out) {
                    handle
                        .forward(&buf, Transport::Tcp, udp_limit, &mut out)
                        .await;
                }
                if out.is_empty() || out.len() > usize::from(u16::MAX) {
                    return;
                }
            }
        }
        frame.clear();
        frame.extend_from_slice(&(out.len() as u16).to_be_bytes());
        frame.extend_from_slice(&out);
        if stream.write_all(&frame).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::build;
    use hickory_proto::op::Message;
    use hickory_proto::rr::{Name, RecordType};

    fn query(name: &str, qtype: RecordType, edns: Option<u16>) -> Vec<u8> {
        let mut m = Message::query();
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        if let Some(size) = edns {
            let mut e = Edns::new();
            e.set_max_payload(size);
            m.set_edns(e);
        }
        m.to_vec().unwrap()
    }

    fn zones(endpoints: usize) -> Zones {
        let eps = (0..endpoints)
            .map(|i| {
                build::endpoint(&format!("10.132.{}.{}", i / 250, i % 250 + 1)).with_ports(vec![])
            })
            .collect();
        Zones::build(
            &[build::service("ns", "big")
                .with_ports(vec![])
                .with_endpoints(eps)
                .of("b")],
            "clusterset.local",
            5,
        )
    }

    fn ask(h: &DnsHandle, q: &[u8], t: Transport) -> Option<Message> {
        let mut out = Vec::new();
        h.answer(q, t, &mut out)
            .then(|| Message::from_vec(&out).unwrap())
    }

    #[test]
    fn answers_and_truncates() {
        let h = DnsHandle::new(zones(200));
        let q = query("big.ns.svc.cluster.b.", RecordType::A, None);
        let r = ask(&h, &q, Transport::Udp).unwrap();
        assert!(r.metadata.truncation && r.answers.is_empty());
        let r = ask(&h, &q, Transport::Tcp).unwrap();
        assert!(!r.metadata.truncation);
        assert_eq!(r.answers.len(), 200);
        assert!(r.metadata.authoritative);
        // 100 records (~1.7 kB): too big for EDNS 1232, fine for 4096
        h.set_zones(zones(100));
        let q = query("big.ns.svc.cluster.b.", RecordType::A, Some(1232));
        let r = ask(&h, &q, Transport::Udp).unwrap();
        assert!(r.metadata.truncation && r.answers.is_empty());
        assert!(r.edns.is_some());
        let q = query("big.ns.svc.cluster.b.", RecordType::A, Some(4096));
        let mut out = Vec::new();
        assert!(h.answer(&q, Transport::Udp, &mut out));
        assert!(out.len() <= 4096);
        let r = Message::from_vec(&out).unwrap();
        assert_eq!(r.answers.len(), 100);
        assert_eq!(
            r.edns.as_ref().unwrap().max_payload(),
            ADVERTISED_UDP_PAYLOAD
        );
        let c = h.counters();
        assert_eq!((c.truncated, c.noerror), (2, 2));
    }

    #[test]
    fn hostile_input() {
        let h = DnsHandle::new(zones(3));
        let mut out = Vec::new();
        assert!(!h.answer(&[1, 2, 3], Transport::Udp, &mut out));
        // a compression loop in the question name
        let mut loop_q = vec![0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        loop_q.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        assert!(h.answer(&loop_q, Transport::Udp, &mut out));
        assert_eq!((&out[..2], out[3] & 0xf), (&[0xab, 0xcd][..], 1));
        // a response is never answered
        let mut resp = query("big.ns.svc.cluster.b.", RecordType::A, None);
        resp[2] |= 0x80;
        assert!(!h.answer(&resp, Transport::Udp, &mut out));
        // pseudo-random garbage
        let mut x: u32 = 12345;
        for len in 0..2000 {
            let pkt: Vec<u8> = (0..len % 600)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            h.answer(&pkt, Transport::Udp, &mut out);
        }
        assert_eq!(h.counters().panics, 0);
        let q = query("big.ns.svc.cluster.b.", RecordType::A, None);
        assert_eq!(ask(&h, &q, Transport::Udp).unwrap().answers.len(), 3);
        let q = query("example.com.", RecordType::A, None);
        let r = ask(&h, &q, Transport::Udp).unwrap();
        assert_eq!(r.metadata.response_code, ResponseCode::Refused);
    }

    #[test]
    fn swap_zones() {
        let h = DnsHandle::new(Zones::default());
        let q = query("big.ns.svc.cluster.b.", RecordType::A, None);
        let r = ask(&h, &q, Transport::Udp).unwrap();
        assert_eq!(r.metadata.response_code, ResponseCode::Refused);
        h.set_zones(zones(2));
        assert_eq!(ask(&h, &q, Transport::Udp).unwrap().answers.len(), 2);
    }

    #[tokio::test]
    async fn forwarding_is_bounded_and_never_for_our_zones() {
        use crate::dns::forward::Forwarder;
        // an upstream that never answers; one slot
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let f = Forwarder::new(
            vec![silent.local_addr().unwrap()],
            Duration::from_millis(500),
            1,
        );
        let h = DnsHandle::with_forwarder(zones(1), f);
        assert_eq!(h.forwarders().len(), 1);
        let server = DnsServer::bind("127.0.0.1:0".parse().unwrap(), h.clone())
            .await
            .unwrap();
        let addr = server.local_addr().unwrap();
        let task = tokio::spawn(server.run());
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.connect(addr).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let mut recv = async |client: &UdpSocket| {
            let n = tokio::time::timeout(Duration::from_secs(3), client.recv(&mut buf))
                .await
                .unwrap()
                .unwrap();
            Message::from_vec(&buf[..n]).unwrap()
        };
        // the first takes the slot; the second is SERVFAIL at once
        let mut q1 = query("example.com.", RecordType::A, None);
        q1[..2].copy_from_slice(&[0, 1]);
        let mut q2 = query("example.org.", RecordType::A, None);
        q2[..2].copy_from_slice(&[0, 2]);
        client.send(&q1).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        client.send(&q2).await.unwrap();
        let r = recv(&client).await;
        assert_eq!(
            (r.metadata.id, r.metadata.response_code),
            (2, ResponseCode::ServFail)
        );
        assert_eq!(r.queries[0].name().to_ascii(), "example.org.");
        // our zone meanwhile: answered, not forwarded
        let q3 = query("big.ns.svc.cluster.b.", RecordType::A, None);
        client.send(&q3).await.unwrap();
        let r = recv(&client).await;
        assert_eq!(r.answers.len(), 1);
        // the first fails after the upstream timeout
        let r = recv(&client).await;
        assert_eq!(
            (r.metadata.id, r.metadata.response_code),
            (1, ResponseCode::ServFail)
        );
        let c = h.counters();
        assert_eq!(
            (
                c.forwarded,
                c.forward_failed,
                c.forward_overload,
                c.servfail,
                c.noerror
            ),
            (1, 1, 1, 2, 1)
        );
        // the slot is free again
        client.send(&q2).await.unwrap();
        let r = recv(&client).await;
        assert_eq!(
            (r.metadata.id, r.metadata.response_code),
            (2, ResponseCode::ServFail)
        );
        assert_eq!(h.counters().forward_overload, 1);
        task.abort();
    }

    /// `cargo test --release --lib dns::server::tests::answer_throughput -- --ignored --nocapture`:
    /// the encode/decode path alone (no sockets), 1,000 services.
    #[test]
    #[ignore]
    fn answer_throughput() {
        use crate::model::DesiredService;
        let services: Vec<DesiredService> = (0..1000)
            .map(|i| {
                build::service("ns", &format!("svc{i}"))
                    .with_ips(&[&format!("10.101.{}.{}", i / 250, i % 250 + 1)])
                    .with_ports(vec![])
                    .of("b")
            })
            .collect();
        let h = DnsHandle::new(Zones::build(&services, "clusterset.local", 5));
        let queries: Vec<Vec<u8>> = (0..1000)
            .map(|i| {
                query(
                    &format!("svc{i}.ns.svc.cluster.b."),
                    RecordType::A,
                    Some(1232),
                )
            })
            .collect();
        let mut out = Vec::new();
        let n = 1_000_000;
        let start = std::time::Instant::now();
        for i in 0..n {
            assert!(h.answer(&queries[i % 1000], Transport::Udp, &mut out));
        }
        let el = start.elapsed();
        eprintln!(
            "{n} answers in {el:?}: {:.0} qps on one core",
            n as f64 / el.as_secs_f64()
        );
    }
}
