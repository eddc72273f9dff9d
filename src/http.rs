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

/// Concurrent connections; more wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 64;
/// A client must send its request headers within this time.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the server answers; implemented by the agent.
pub trait Endpoints: Send + Sync + 'static {
    fn metrics(&self) -> String;
    fn healthz(&self) -> Verdict;
    fn readyz(&self) -> Verdict;
}

pub async fn serve(listener: TcpListener, endpoints: Arc<dyn Endpoints>) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = slots
            .clone()
            .acquire_owned()
            .await
            .map_err(io::Error::other)?;
        let (stream, _) = match listener.accept().await {
            Ok(c) => c,
            // Out of fds and the like: not a reason to stop serving probes for good.
            Err(e) => {
                tracing::debug!(error = %e, "http accept");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let ep = endpoints.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let ep = ep.clone();
                async move { Ok::<_, Infallible>(answer(&*ep, &req)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc)
                .await;
            drop(permit);
        });
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
}
