//! The agent's small HTTP server (`http.listen`): `/metrics` for Prometheus, `/healthz` and
//! `/readyz` for the kubelet. Plain HTTP/1.1 (hyper), GET and HEAD only, no request bodies.
//! What each path answers comes from an [`Endpoints`] implementation, so this file is only
//! the transport and is tested with a fake.

use crate::health::Verdict;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Concurrent connections from other hosts; more are closed at once.
pub const MAX_CONNECTIONS: usize = 64;
/// Concurrent connections from any one other address: a few slow clients cannot take every slot.
pub const MAX_PER_ADDRESS: usize = 4;
/// Slots kept for connections from the node itself (the kubelet's probes of a hostNetwork pod
/// come from the node's own address), whatever other hosts hold.
pub const LOCAL_CONNECTIONS: usize = 16;
/// A client must send its request headers within this time.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection lives at most this long (keep-alive included): a client that trickles
/// requests cannot hold a slot for good.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the server answers; implemented by the agent.
pub trait Endpoints: Send + Sync + 'static {
    fn metrics(&self) -> String;
    fn healthz(&self) -> Verdict;
    fn readyz(&self) -> Verdict;
}

pub async fn serve(listener: TcpListener, endpoints: Arc<dyn Endpoints>) -> io::Result<()> {
    let slots = Slots::default();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            // Out of fds and the like: not a reason to stop serving probes for good.
            Err(e) => {
                tracing::debug!(error = %e, "http accept");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let local = stream.local_addr().map(|a| a.ip()).ok();
        let Some(slot) = slots.take(peer.ip(), local == Some(peer.ip())) else {
            tracing::debug!(client = %peer, "http: connection limit reached; closed");
            continue; // dropping the stream closes it
        };
        let ep = endpoints.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let ep = ep.clone();
                async move { Ok::<_, Infallible>(answer(&*ep, &req)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc);
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, conn).await;
            drop(slot);
        });
    }
}

/// Connection slots: a pool for the node itself, a pool for everyone else, and a cap per
/// other address. Taking one never waits: a connection without a slot is closed.
#[derive(Clone)]
struct Slots {
    local: Arc<Semaphore>,
    others: Arc<Semaphore>,
    per_address: Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
}

impl Default for Slots {
    fn default() -> Self {
        Slots {
            local: Arc::new(Semaphore::new(LOCAL_CONNECTIONS)),
            others: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
            per_address: Default::default(),
        }
    }
}

/// Held for as long as the connection lives.
struct Slot {
    _permit: tokio::sync::OwnedSemaphorePermit,
    address: Option<(std::net::IpAddr, Slots)>,
}

impl Slots {
    /// `from_node`: the client connected from the address it connected to (the node itself).
    fn take(&self, ip: std::net::IpAddr, from_node: bool) -> Option<Slot> {
        if from_node {
            let permit = self.local.clone().try_acquire_owned().ok()?;
            return Some(Slot {
                _permit: permit,
                address: None,
            });
        }
        let mut held = self.per_address.lock().unwrap_or_else(|e| e.into_inner());
        let n = held.entry(ip).or_insert(0);
        if *n >= MAX_PER_ADDRESS {
            return None;
        }
        let permit = self.others.clone().try_acquire_owned().ok()?;
        *n += 1;
        Some(Slot {
            _permit: permit,
            address: Some((ip, self.clone())),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some((ip, slots)) = &self.address {
            let mut held = slots.per_address.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = held.get_mut(ip) {
                *n -= 1;
                if *n == 0 {
                    held.remove(ip);
                }
            }
        }
    }
}

fn answer(ep: &dyn Endpoints, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let head = req.method() == Method::HEAD;
    if req.method() != Method::GET && !head {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET or HEAD\n",
            head,
        );
    }
    match req.uri().path() {
        "/metrics" => reply(StatusCode::OK, OPENMETRICS, ep.metrics(), head),
        "/healthz" | "/livez" => verdict(ep.healthz(), head),
        "/readyz" => verdict(ep.readyz(), head),
        "/" => reply(
            StatusCode::OK,
            "text/plain",
            "sdn-tunnel agent: /metrics /healthz /readyz\n",
            head,
        ),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n", head),
    }
}

fn verdict(v: Verdict, head: bool) -> Response<Full<Bytes>> {
    let code = if v.ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    reply(code, "text/plain", v.lines.join("\n") + "\n", head)
}

fn reply(
    code: StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
    head: bool,
) -> Response<Full<Bytes>> {
    let body: Bytes = if head { Bytes::new() } else { body.into() };
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = code;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    struct Fake {
        ready: AtomicBool,
    }

    impl Endpoints for Fake {
        fn metrics(&self) -> String {
            "# TYPE x gauge\nx 1\n# EOF\n".into()
        }
        fn healthz(&self) -> Verdict {
            Verdict {
                ok: true,
                lines: vec!["ok".into()],
            }
        }
        fn readyz(&self) -> Verdict {
            let ok = self.ready.load(Ordering::Relaxed);
            Verdict {
                ok,
                lines: vec![if ok {
                    "ok"
                } else {
                    "remote west: first sync pending"
                }
                .into()],
            }
        }
    }

    async fn get(addr: std::net::SocketAddr, req: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn paths_codes_and_bodies() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let fake = Arc::new(Fake {
            ready: AtomicBool::new(false),
        });
        tokio::spawn(serve(l, fake.clone()));
        let close = "Connection: close\r\n\r\n";
        let r = get(
            addr,
            &format!("GET /metrics HTTP/1.1\r\nHost: x\r\n{close}"),
        )
        .await;
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        assert!(
            r.contains("openmetrics-text") && r.ends_with("x 1\n# EOF\n"),
            "{r}"
        );
        let r = get(addr, &format!("GET /readyz HTTP/1.1\r\nHost: x\r\n{close}")).await;
        assert!(r.starts_with("HTTP/1.1 503"), "{r}");
        assert!(r.contains("first sync pending"), "{r}");
        fake.ready.store(true, Ordering::Relaxed);
        let r = get(addr, &format!("GET /readyz HTTP/1.1\r\nHost: x\r\n{close}")).await;
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        let r = get(
            addr,
            &format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{close}"),
        )
        .await;
        assert!(r.starts_with("HTTP/1.1 200") && r.ends_with("ok\n"), "{r}");
        let r = get(addr, &format!("GET /nope HTTP/1.1\r\nHost: x\r\n{close}")).await;
        assert!(r.starts_with("HTTP/1.1 404"), "{r}");
        let r = get(
            addr,
            &format!("POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n{close}"),
        )
        .await;
        assert!(r.starts_with("HTTP/1.1 405"), "{r}");
        let r = get(
            addr,
            &format!("HEAD /metrics HTTP/1.1\r\nHost: x\r\n{close}"),
        )
        .await;
        assert!(r.starts_with("HTTP/1.1 200") && !r.contains("x 1"), "{r}");
        // Garbage gets an error response or a closed connection, and the server lives on.
        let r = get(addr, "\x16\x03\x01 not http\r\n\r\n").await;
        assert!(r.is_empty() || r.starts_with("HTTP/1.1 400"), "{r}");
        let r = get(
            addr,
            &format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{close}"),
        )
        .await;
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    }

    async fn connect_from(src: &str, addr: std::net::SocketAddr) -> tokio::net::TcpStream {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.bind(format!("{src}:0").parse().unwrap()).unwrap();
        s.connect(addr).await.unwrap()
    }

    /// Slow clients that open connections and send nothing hold no slot the kubelet needs:
    /// one address gets `MAX_PER_ADDRESS`, and the node itself has its own pool.
    #[tokio::test]
    async fn slow_clients_cannot_starve_the_probes() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(serve(
            l,
            Arc::new(Fake {
                ready: AtomicBool::new(true),
            }),
        ));
        let mut idle = Vec::new();
        for i in 0..MAX_CONNECTIONS + 8 {
            // Many other addresses (127.0.0.2..), each up to its cap and beyond.
            idle.push(connect_from(&format!("127.0.0.{}", 2 + i % 20), addr).await);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let probe = async {
            let mut s = connect_from("127.0.0.1", addr).await;
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        let r = tokio::time::timeout(Duration::from_secs(2), probe)
            .await
            .expect("the node's own probe was starved");
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        // A connection over its address's cap is closed at once, not queued.
        let mut extra = connect_from("127.0.0.2", addr).await;
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(2), extra.read(&mut buf))
            .await
            .expect("closed at once");
        assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
        drop(idle);
    }
}
