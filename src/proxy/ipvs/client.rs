//! The IPVS client: one generic-netlink socket, reused buffers, typed operations.
//!
//! Thread model: [`IpvsClient`] is blocking (netlink-sys `Socket`); the kernel handles a
//! request synchronously inside `send`, so a "blocking" call costs two syscalls and no wait.
//! [`AsyncIpvsClient`] shares one `IpvsClient` behind a mutex and runs each call (or a
//! whole closure of calls, [`AsyncIpvsClient::run`]) on tokio's blocking pool.
//!
//! Pipelining: [`IpvsClient::apply`] appends up to [`PIPELINE_DEPTH`] requests, each with
//! `NLM_F_ACK` and its own sequence number, into one buffer and sends it with one `send`; the
//! kernel processes them in order (continuing after a failed one) and queues one ACK per
//! request, which are then matched back by sequence number. The depth is bounded so the ACKs
//! always fit the socket receive buffer (an overflow would drop ACKs with ENOBUFS).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use netlink_packet_core::{NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST};
use netlink_sys::{protocols::NETLINK_GENERIC, Socket};

use super::codec::IpvsMessage;
use super::consts::*;
use super::error::{CodecError, IpvsError, OpKind};
use super::netlink::{parse_family_id, push_get_family, push_request, Messages, Reply};
use super::types::*;

/// Requests sent per `send` by [`IpvsClient::apply`]. An ACK costs well under 1 KiB of
/// receive buffer (skb truesize), so 64 stay far below the default 208 KiB.
pub const PIPELINE_DEPTH: usize = 64;
/// Receive buffer: the kernel never puts more than 32 KiB into one dump datagram.
const RX_BUF: usize = 64 * 1024;
/// How long to wait for a reply before giving up (the kernel answers inside `send`, so this
/// only fires if replies were lost).
const RECV_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a dump that the kernel flags as interrupted (`NLM_F_DUMP_INTR`) is retried.
const DUMP_RETRIES: usize = 3;

/// A change to the kernel's IPVS table, for [`IpvsClient::apply`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    AddService(Service),
    UpdateService(Service),
    DeleteService(ServiceKey),
    AddDestination(ServiceKey, Destination),
    UpdateDestination(ServiceKey, Destination),
    DeleteDestination(ServiceKey, SocketAddr),
    SetTimeouts(Timeouts),
    Flush,
}

impl Request {
    pub fn op(&self) -> OpKind {
        match self {
            Request::AddService(_) => OpKind::AddService,
            Request::UpdateService(_) => OpKind::UpdateService,
            Request::DeleteService(_) => OpKind::DeleteService,
            Request::AddDestination(..) => OpKind::AddDestination,
            Request::UpdateDestination(..) => OpKind::UpdateDestination,
            Request::DeleteDestination(..) => OpKind::DeleteDestination,
            Request::SetTimeouts(_) => OpKind::SetConfig,
            Request::Flush => OpKind::Flush,
        }
    }

    /// The object, for error messages (`TCP  10.0.0.1:80 -> 10.1.0.7:8080`).
    pub fn target(&self) -> String {
        match self {
            Request::AddService(s) | Request::UpdateService(s) => s.key.to_string(),
            Request::DeleteService(k) => k.to_string(),
            Request::AddDestination(k, d) | Request::UpdateDestination(k, d) => {
                format!("{k} -> {}", d.addr)
            }
            Request::DeleteDestination(k, a) => format!("{k} -> {a}"),
            Request::SetTimeouts(_) | Request::Flush => String::new(),
        }
    }

    pub fn message(&self) -> Result<IpvsMessage, CodecError> {
        Ok(match self {
            Request::AddService(s) => IpvsMessage::new_service(s)?,
            Request::UpdateService(s) => IpvsMessage::set_service(s)?,
            Request::DeleteService(k) => IpvsMessage::del_service(k),
            Request::AddDestination(k, d) => IpvsMessage::new_dest(k, d)?,
            Request::UpdateDestination(k, d) => IpvsMessage::set_dest(k, d)?,
            Request::DeleteDestination(k, a) => IpvsMessage::del_dest(k, *a),
            Request::SetTimeouts(t) => IpvsMessage::set_config(t),
            Request::Flush => IpvsMessage::flush(),
        })
    }
}

/// Datagram transport under the client: the netlink socket, or a scripted fake in tests.
pub(crate) trait Transport: Send {
    fn send(&mut self, buf: &[u8]) -> io::Result<()>;
    /// Receives one datagram into `buf`; returns its full length, which exceeds `buf.len()`
    /// if it was truncated.
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize>;
}

struct NetlinkTransport(Socket);

impl Transport for NetlinkTransport {
    fn send(&mut self, buf: &[u8]) -> io::Result<()> {
        let n = self.0.send(buf, 0)?;
        if n != buf.len() {
            return Err(io::Error::other(format!(
                "short netlink send: {n} of {}",
                buf.len()
            )));
        }
        Ok(())
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut slice = &mut buf[..];
        self.0.recv(&mut slice, libc::MSG_TRUNC)
    }
}

fn open_socket() -> io::Result<Socket> {
    let mut socket = Socket::new(NETLINK_GENERIC)?;
    socket.bind_auto()?;
    socket.connect(&netlink_sys::SocketAddr::new(0, 0))?;
    // Best effort: error messages from the kernel, short error ACKs, room for ACKs.
    let _ = socket.set_ext_ack(true);
    let _ = socket.set_cap_ack(true);
    let _ = socket.set_rx_buf_sz(1usize << 20);
    let tv = libc::timeval {
        tv_sec: RECV_TIMEOUT.as_secs() as libc::time_t,
        tv_usec: 0,
    };
    use std::os::fd::AsRawFd;
    // SAFETY: valid fd, and a pointer to a timeval that outlives the call with its size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const libc::timeval as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(socket)
}

/// Blocking IPVS client. Keep one per agent (or per network namespace) and reuse it: the
/// socket and both buffers live as long as the client.
pub struct IpvsClient {
    io: Box<dyn Transport>,
    family_id: u16,
    seq: u32,
    tx: Vec<u8>,
    rx: Vec<u8>,
}

impl std::fmt::Debug for IpvsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IpvsClient")
            .field("family_id", &self.family_id)
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

impl IpvsClient {
    /// Opens a generic-netlink socket in the calling thread's network namespace and resolves
    /// the `IPVS` family. Fails with [`IpvsError::NotAvailable`] without IPVS.
    pub fn new() -> Result<IpvsClient, IpvsError> {
        let socket = open_socket()?;
        IpvsClient::with_transport(Box::new(NetlinkTransport(socket)))
    }

    pub(crate) fn with_transport(io: Box<dyn Transport>) -> Result<IpvsClient, IpvsError> {
        let mut client = IpvsClient {
            io,
            family_id: 0,
            seq: 0,
            tx: Vec::with_capacity(16 * 1024),
            rx: vec![0; RX_BUF],
        };
        client.family_id = client.resolve_family()?;
        Ok(client)
    }

    /// The dynamically assigned generic-netlink family id of IPVS.
    pub fn family_id(&self) -> u16 {
        self.family_id
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        if self.seq == 0 {
            self.seq = 1;
        }
        self.seq
    }

    fn send_tx(&mut self) -> Result<(), IpvsError> {
        self.io.send(&self.tx).map_err(IpvsError::Io)
    }

    /// Receives one datagram into `self.rx`; returns its length.
    fn recv_rx(&mut self) -> Result<usize, IpvsError> {
        let n = self.io.recv(&mut self.rx).map_err(|e| {
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) {
                IpvsError::Protocol(format!("no reply from the kernel within {RECV_TIMEOUT:?}"))
            } else {
                IpvsError::Io(e)
            }
        })?;
        if n > self.rx.len() {
            return Err(IpvsError::Protocol(format!(
                "reply of {n} bytes truncated to {}",
                self.rx.len()
            )));
        }
        Ok(n)
    }

    fn resolve_family(&mut self) -> Result<u16, IpvsError> {
        let seq = self.next_seq();
        self.tx.clear();
        push_get_family(&mut self.tx, NLM_F_REQUEST | NLM_F_ACK, seq, IPVS_GENL_NAME);
        self.send_tx()?;
        let mut family = None;
        loop {
            let n = self.recv_rx()?;
            for m in Messages::new(&self.rx[..n]) {
                let m = m?;
                if m.seq != seq {
                    continue;
                }
                match m.reply {
                    Reply::Data { msg_type, payload } if msg_type == GENL_ID_CTRL => {
                        family = Some(parse_family_id(payload)?);
                    }
                    Reply::Ack => {
                        return family.ok_or_else(|| {
                            IpvsError::Protocol("family lookup acknowledged without a reply".into())
                        });
                    }
                    Reply::Error { errno, .. } if errno == libc::ENOENT => {
                        return Err(IpvsError::NotAvailable(io::Error::from_raw_os_error(errno)));
                    }
                    Reply::Error { errno, extack } => {
                        return Err(IpvsError::kernel(
                            OpKind::ResolveFamily,
                            String::new(),
                            errno,
                            extack,
                        ));
                    }
                    Reply::Overrun => return Err(IpvsError::Protocol("netlink overrun".into())),
                    _ => {}
                }
            }
        }
    }

    /// A `doit` request with one reply message followed by the ACK.
    fn query(
        &mut self,
        op: OpKind,
        target: &str,
        msg: IpvsMessage,
    ) -> Result<IpvsMessage, IpvsError> {
        let seq = self.next_seq();
        self.tx.clear();
        push_request(
            &mut self.tx,
            self.family_id,
            NLM_F_REQUEST | NLM_F_ACK,
            seq,
            msg,
        );
        self.send_tx()?;
        let mut reply = None;
        loop {
            let n = self.recv_rx()?;
            for m in Messages::new(&self.rx[..n]) {
                let m = m?;
                if m.seq != seq {
                    continue;
                }
                match m.reply {
                    Reply::Data { msg_type, payload } if msg_type == self.family_id => {
                        reply = Some(IpvsMessage::parse_genl(payload));
                    }
                    Reply::Ack => {
                        return match reply {
                            Some(r) => Ok(r?),
                            None => Err(IpvsError::Protocol(format!(
                                "{op}: acknowledged without a reply"
                            ))),
                        };
                    }
                    Reply::Error { errno, extack } => {
                        return Err(IpvsError::kernel(op, target.to_string(), errno, extack));
                    }
                    Reply::Overrun => return Err(IpvsError::Protocol("netlink overrun".into())),
                    _ => {}
                }
            }
        }
    }

    /// A dump: every family message up to `NLMSG_DONE` goes to `each`. Decode errors are
    /// reported after the dump is drained, so the socket never holds leftovers.
    fn dump(
        &mut self,
        op: OpKind,
        target: &str,
        msg: &IpvsMessage,
        mut each: impl FnMut(IpvsMessage) -> Result<(), CodecError>,
    ) -> Result<(), IpvsError> {
        for _attempt in 0..DUMP_RETRIES {
            let seq = self.next_seq();
            self.tx.clear();
            push_request(
                &mut self.tx,
                self.family_id,
                NLM_F_REQUEST | NLM_F_DUMP,
                seq,
                msg.clone(),
            );
            self.send_tx()?;
            let mut first_error: Option<CodecError> = None;
            let mut interrupted = false;
            'recv: loop {
                let n = self.recv_rx()?;
                for m in Messages::new(&self.rx[..n]) {
                    let m = m?;
                    if m.seq != seq {
                        continue;
                    }
                    interrupted |= m.flags & NLM_F_DUMP_INTR != 0;
                    match m.reply {
                        // After a decode error the rest is only drained.
                        Reply::Data { msg_type, payload }
                            if msg_type == self.family_id && first_error.is_none() =>
                        {
                            if let Err(e) = IpvsMessage::parse_genl(payload).and_then(&mut each) {
                                first_error = Some(e);
                            }
                        }
                        Reply::Done { code } if code < 0 => {
                            let errno = code.saturating_abs(); // no overflow on i32::MIN
                            return Err(IpvsError::kernel(op, target.to_string(), errno, None));
                        }
                        Reply::Done { .. } => break 'recv,
                        Reply::Error { errno, extack } => {
                            return Err(IpvsError::kernel(op, target.to_string(), errno, extack));
                        }
                        Reply::Overrun => {
                            return Err(IpvsError::Protocol("netlink overrun".into()));
                        }
                        _ => {}
                    }
                }
            }
            if let Some(e) = first_error {
                return Err(e.into());
            }
            if !interrupted {
                return Ok(());
            }
        }
        Err(IpvsError::Protocol(format!(
            "{op}: dump interrupted by concurrent changes {DUMP_RETRIES} times"
        )))
    }

    /// Version and connection table size (`ipvsadm`'s first line).
    pub fn info(&mut self) -> Result<Info, IpvsError> {
        Ok(self
            .query(OpKind::GetInfo, "", IpvsMessage::get_info())?
            .to_info()?)
    }

    /// TCP, TCP FIN and UDP connection timeouts.
    pub fn timeouts(&mut self) -> Result<Timeouts, IpvsError> {
        Ok(self
            .query(OpKind::GetConfig, "", IpvsMessage::get_config())?
            .to_timeouts()?)
    }

    /// Sets the non-zero timeouts.
    pub fn set_timeouts(&mut self, t: Timeouts) -> Result<(), IpvsError> {
        self.apply_one(&Request::SetTimeouts(t))
    }

    /// All virtual services, with stats.
    pub fn services(&mut self) -> Result<Vec<Service>, IpvsError> {
        let mut out = Vec::new();
        let msg = IpvsMessage::get_services();
        self.dump(OpKind::GetServices, "", &msg, |m| {
            out.push(m.to_service()?);
            Ok(())
        })?;
        Ok(out)
    }

    /// One service; a missing one is an error with [`IpvsError::is_not_found`].
    pub fn service(&mut self, key: &ServiceKey) -> Result<Service, IpvsError> {
        let target = key.to_string();
        Ok(self
            .query(OpKind::GetService, &target, IpvsMessage::get_service(key))?
            .to_service()?)
    }

    /// The destinations of a service. Note: the kernel answers an empty list (not an error)
    /// when the service does not exist.
    pub fn destinations(
        &mut self,
        service: &impl AsRef<ServiceKey>,
    ) -> Result<Vec<Destination>, IpvsError> {
        let key = service.as_ref();
        let mut out = Vec::new();
        let msg = IpvsMessage::get_dests(key);
        let ipv6 = key.is_ipv6();
        let target = key.to_string();
        self.dump(OpKind::GetDestinations, &target, &msg, |m| {
            out.push(m.to_destination(ipv6)?);
            Ok(())
        })?;
        Ok(out)
    }

    pub fn add_service(&mut self, svc: &Service) -> Result<(), IpvsError> {
        self.apply_one(&Request::AddService(svc.clone()))
    }

    /// Changes scheduler, flags, timeout, netmask of an existing service.
    pub fn update_service(&mut self, svc: &Service) -> Result<(), IpvsError> {
        self.apply_one(&Request::UpdateService(svc.clone()))
    }

    /// Deletes a service and its destinations.
    pub fn delete_service(&mut self, service: &impl AsRef<ServiceKey>) -> Result<(), IpvsError> {
        self.apply_one(&Request::DeleteService(*service.as_ref()))
    }

    pub fn add_destination(
        &mut self,
        service: &impl AsRef<ServiceKey>,
        dest: &Destination,
    ) -> Result<(), IpvsError> {
        self.apply_one(&Request::AddDestination(*service.as_ref(), dest.clone()))
    }

    pub fn update_destination(
        &mut self,
        service: &impl AsRef<ServiceKey>,
        dest: &Destination,
    ) -> Result<(), IpvsError> {
        self.apply_one(&Request::UpdateDestination(*service.as_ref(), dest.clone()))
    }

    pub fn delete_destination(
        &mut self,
        service: &impl AsRef<ServiceKey>,
        addr: SocketAddr,
    ) -> Result<(), IpvsError> {
        self.apply_one(&Request::DeleteDestination(*service.as_ref(), addr))
    }

    /// Deletes every service and destination in this network namespace. The agent must not
    /// call this on a node where it does not own all of IPVS (use `delete_service`).
    pub fn flush(&mut self) -> Result<(), IpvsError> {
        self.apply_one(&Request::Flush)
    }

    /// Applies one change and waits for its ACK.
    pub fn apply_one(&mut self, req: &Request) -> Result<(), IpvsError> {
        self.apply(std::slice::from_ref(req))
            .pop()
            .unwrap_or_else(|| Err(IpvsError::Protocol("no result".into())))
    }

    /// Applies many changes, pipelined [`PIPELINE_DEPTH`] per `send`, in order. Returns one
    /// result per request (a failed request does not stop the following ones, exactly as
    /// if they had been sent one by one).
    pub fn apply(&mut self, reqs: &[Request]) -> Vec<Result<(), IpvsError>> {
        let mut results: Vec<Result<(), IpvsError>> = Vec::with_capacity(reqs.len());
        for chunk in reqs.chunks(PIPELINE_DEPTH) {
            // None = sent, waiting for the ACK.
            let mut slots: Vec<Option<Result<(), IpvsError>>> = Vec::with_capacity(chunk.len());
            let mut seqs: Vec<u32> = Vec::with_capacity(chunk.len());
            self.tx.clear();
            for req in chunk {
                match req.message() {
                    Ok(msg) => {
                        let seq = self.next_seq();
                        push_request(
                            &mut self.tx,
                            self.family_id,
                            NLM_F_REQUEST | NLM_F_ACK,
                            seq,
                            msg,
                        );
                        seqs.push(seq);
                        slots.push(None);
                    }
                    Err(e) => {
                        seqs.push(0);
                        slots.push(Some(Err(IpvsError::Invalid(format!(
                            "{} {}: {e}",
                            req.op(),
                            req.target()
                        )))));
                    }
                }
            }
            let mut waiting = slots.iter().filter(|s| s.is_none()).count();
            if waiting > 0 {
                if let Err(e) = self
                    .send_tx()
                    .and_then(|()| self.collect_acks(chunk, &seqs, &mut slots, &mut waiting))
                {
                    // Whatever was not answered shares the transport error.
                    let mut first = Some(e);
                    for slot in slots.iter_mut().filter(|s| s.is_none()) {
                        let err = match first.take() {
                            Some(e) => e,
                            None => IpvsError::Protocol("no ACK (see the previous error)".into()),
                        };
                        *slot = Some(Err(err));
                    }
                }
            }
            results.extend(
                slots
                    .into_iter()
                    .map(|s| s.unwrap_or_else(|| Err(IpvsError::Protocol("no ACK".into())))),
            );
        }
        results
    }

    fn collect_acks(
        &mut self,
        chunk: &[Request],
        seqs: &[u32],
        slots: &mut [Option<Result<(), IpvsError>>],
        waiting: &mut usize,
    ) -> Result<(), IpvsError> {
        while *waiting > 0 {
            let n = self.recv_rx()?;
            for m in Messages::new(&self.rx[..n]) {
                let m = m?;
                // seq 0 marks a request that was never sent.
                let Some(i) = seqs.iter().position(|&s| s != 0 && s == m.seq) else {
                    continue; // stale reply of an earlier, abandoned request
                };
                if slots[i].is_some() {
                    continue;
                }
                let result = match m.reply {
                    Reply::Ack => Ok(()),
                    Reply::Error { errno, extack } => Err(IpvsError::kernel(
                        chunk[i].op(),
                        chunk[i].target(),
                        errno,
                        extack,
                    )),
                    Reply::Overrun => return Err(IpvsError::Protocol("netlink overrun".into())),
                    _ => continue,
                };
                slots[i] = Some(result);
                *waiting -= 1;
            }
        }
        Ok(())
    }
}

/// Async face of [`IpvsClient`] for the tokio agent: a cheap-to-clone handle; calls run on
/// the blocking pool, serialized by a mutex around the one socket.
#[derive(Clone, Debug)]
pub struct AsyncIpvsClient {
    inner: Arc<parking_lot::Mutex<IpvsClient>>,
}

impl AsyncIpvsClient {
    /// Opens the socket on a blocking-pool thread (which is in the process's network
    /// namespace; use [`AsyncIpvsClient::from_client`] for another one).
    pub async fn new() -> Result<AsyncIpvsClient, IpvsError> {
        let client = tokio::task::spawn_blocking(IpvsClient::new)
            .await
            .map_err(|e| IpvsError::Io(io::Error::other(e.to_string())))??;
        Ok(AsyncIpvsClient::from_client(client))
    }

    pub fn from_client(client: IpvsClient) -> AsyncIpvsClient {
        AsyncIpvsClient {
            inner: Arc::new(parking_lot::Mutex::new(client)),
        }
    }

    /// Runs `f` with exclusive use of the client on the blocking pool: the way to batch a
    /// whole reconcile pass (dumps plus [`IpvsClient::apply`]) into one task.
    pub async fn run<T, F>(&self, f: F) -> Result<T, IpvsError>
    where
        T: Send + 'static,
        F: FnOnce(&mut IpvsClient) -> T + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        match tokio::task::spawn_blocking(move || f(&mut inner.lock())).await {
            Ok(v) => Ok(v),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(IpvsError::Io(io::Error::other(format!("IPVS task: {e}")))),
        }
    }

    pub async fn info(&self) -> Result<Info, IpvsError> {
        self.run(|c| c.info()).await?
    }

    pub async fn services(&self) -> Result<Vec<Service>, IpvsError> {
        self.run(|c| c.services()).await?
    }

    pub async fn destinations(&self, service: ServiceKey) -> Result<Vec<Destination>, IpvsError> {
        self.run(move |c| c.destinations(&service)).await?
    }

    pub async fn apply(&self, reqs: Vec<Request>) -> Result<Vec<Result<(), IpvsError>>, IpvsError> {
        self.run(move |c| c.apply(&reqs)).await
    }

    pub async fn apply_one(&self, req: Request) -> Result<(), IpvsError> {
        self.run(move |c| c.apply_one(&req)).await?
    }
}
