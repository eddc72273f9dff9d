//! A bound on what one remote API response may make us hold: the kube client reads a watch
//! stream line by line and a list page whole, and would accept a line of any length. This
//! layer counts the bytes since the last newline of every response body and fails the body
//! once a line passes the limit (`limits.messageBytes`): a watch event is one object on one
//! line, a list page is one line. The request then fails like a broken connection; the
//! watcher backs off and the remote shows as stale with the reason.

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame};
use std::pin::Pin;
use std::task::{Context, Poll};

#[derive(Debug, Clone, Copy)]
pub struct MessageLimitLayer(pub usize);

impl<S> tower::Layer<S> for MessageLimitLayer {
    type Service = MessageLimit<S>;
    fn layer(&self, inner: S) -> MessageLimit<S> {
        MessageLimit {
            inner,
            limit: self.0,
        }
    }
}

#[derive(Debug, Clone)]
pub struct MessageLimit<S> {
    inner: S,
    limit: usize,
}

impl<S, ReqB, ResB> tower::Service<Request<ReqB>> for MessageLimit<S>
where
    S: tower::Service<Request<ReqB>, Response = Response<ResB>>,
    S::Future: Send + 'static,
{
    type Response = Response<Limited<ResB>>;
    type Error = S::Error;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let limit = self.limit;
        let fut = self.inner.call(req);
        Box::pin(async move {
            let res = fut.await?;
            Ok(res.map(|inner| Limited {
                inner,
                limit,
                line: 0,
            }))
        })
    }
}

/// A body that fails once a line (bytes between newlines) is longer than `limit`.
#[derive(Debug)]
pub struct Limited<B> {
    inner: B,
    limit: usize,
    line: usize,
}

/// Part of [`TooLong`]'s message that survives kube's error wrapping (its chain is flattened
/// into strings on the way out of the watcher).
pub const MARKER: &str = "longer than limits.messageBytes";

#[derive(Debug, thiserror::Error)]
#[error("a message from the remote API is longer than limits.messageBytes ({0} bytes)")]
pub struct TooLong(pub usize);

impl<B> Body for Limited<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.line = line_after(this.line, data);
                    if this.line > this.limit {
                        return Poll::Ready(Some(Err(Box::new(TooLong(this.limit)))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The length of the current line after `data` (bytes since its last newline).
fn line_after(line: usize, data: &[u8]) -> usize {
    match data.iter().rposition(|&b| b == b'\n') {
        Some(i) => data.len() - i - 1,
        None => line + data.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full, StreamBody};

    #[test]
    fn line_lengths() {
        assert_eq!(line_after(0, b"abc"), 3);
        assert_eq!(line_after(3, b"de\nf"), 1);
        assert_eq!(line_after(5, b"x\n"), 0);
        assert_eq!(line_after(5, b""), 5);
    }

    #[tokio::test]
    async fn short_lines_pass_a_long_one_fails() {
        let ok = Limited {
            inner: Full::new(Bytes::from("0123456789\n0123456789\n")),
            limit: 10,
            line: 0,
        };
        assert_eq!(ok.collect().await.unwrap().to_bytes().len(), 22);
        let chunks: Vec<Result<Frame<Bytes>, std::io::Error>> = (0..5)
            .map(|_| Ok(Frame::data(Bytes::from_static(b"0123"))))
            .collect();
        let long = Limited {
            inner: StreamBody::new(futures::stream::iter(chunks)),
            limit: 10,
            line: 0,
        };
        let e = long.collect().await.unwrap_err();
        assert!(
            e.to_string()
                .contains("longer than limits.messageBytes (10 bytes)"),
            "{e}"
        );
    }
}
