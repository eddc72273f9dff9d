//! A long-running TCP stream between two network namespaces, for measuring interruptions: a
//! 1 KiB chunk every 10 ms; the receiver records when data arrived. Used for agent restarts,
//! crashes and rolling updates with traffic in flight.

use anyhow::{Context, Result};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::netns::in_netns;

/// A running stream; [`Stream::stop`] ends it and reports.
pub struct Stream {
    stop: Arc<AtomicBool>,
    sender: JoinHandle<Option<String>>,
    receiver: JoinHandle<(u64, Option<String>)>,
    arrivals: Arc<Mutex<Vec<Instant>>>,
    pub started: Instant,
}

#[derive(Debug, Clone)]
pub struct StreamReport {
    pub bytes: u64,
    /// When data arrived (one entry per read).
    pub arrivals: Vec<Instant>,
    /// Why the connection broke, if it did.
    pub error: Option<String>,
}

impl StreamReport {
    /// The longest time without data, over the whole stream.
    pub fn longest_gap(&self) -> Duration {
        self.arrivals
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or_default()
    }

    /// How long after `t` data arrived again (None: never).
    pub fn resumed_after(&self, t: Instant) -> Option<Duration> {
        self.arrivals.iter().find(|&&a| a > t).map(|&a| a - t)
    }
}

impl Stream {
    /// Connects from `from_ns` to `to_ip:port`, served by a listener in `to_ns` (namespace
    /// names or `/proc/<pid>/ns/net` paths).
    pub fn start(from_ns: &str, to_ns: &str, to: SocketAddr) -> Result<Stream> {
        let bind: SocketAddr = match to {
            SocketAddr::V4(_) => ([0, 0, 0, 0], to.port()).into(),
            SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, to.port()).into(),
        };
        let listener = in_netns(to_ns, || TcpListener::bind(bind))?
            .with_context(|| format!("listen on {bind} in {to_ns}"))?;
        let mut client = in_netns(from_ns, || {
            TcpStream::connect_timeout(&to, Duration::from_secs(5))
        })?
        .with_context(|| format!("connect to {to} from {from_ns}"))?;
        let (mut server, _) = listener.accept()?;
        server.set_read_timeout(Some(Duration::from_secs(120)))?;
        let stop = Arc::new(AtomicBool::new(false));
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let receiver = {
            let arrivals = arrivals.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 65536];
                let mut total = 0u64;
                loop {
                    match server.read(&mut buf) {
                        Ok(0) => return (total, None),
                        Ok(n) => {
                            total += n as u64;
                            arrivals.lock().unwrap().push(Instant::now());
                        }
                        Err(e) => return (total, Some(format!("receiver: {e}"))),
                    }
                }
            })
        };
        let sender = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let chunk = [0x5au8; 1024];
                while !stop.load(Ordering::Relaxed) {
                    if let Err(e) = client.write_all(&chunk) {
                        return Some(format!("sender: {e}"));
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                let _ = client.shutdown(std::net::Shutdown::Write);
                None
            })
        };
        Ok(Stream {
            stop,
            sender,
            receiver,
            arrivals,
            started: Instant::now(),
        })
    }

    /// Stops sending, waits for the receiver to see the end, and reports.
    pub fn stop(self) -> StreamReport {
        self.stop.store(true, Ordering::Relaxed);
        let send_err = self.sender.join().unwrap_or(Some("sender panicked".into()));
        let (bytes, recv_err) = self
            .receiver
            .join()
            .unwrap_or((0, Some("receiver panicked".into())));
        let arrivals = self.arrivals.lock().unwrap().clone();
        StreamReport {
            bytes,
            arrivals,
            error: send_err.or(recv_err),
        }
    }
}
