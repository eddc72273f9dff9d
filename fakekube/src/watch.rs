//! The body of a watch response: newline-delimited JSON events, bookmarks, timeout, and the
//! 410 ERROR event. It lives inside the connection's future, so cutting the connection ends it.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use hyper::body::Frame;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::time::{sleep_until, Instant};

use crate::error::ApiError;
use crate::resources::{ResourceId, RESOURCES};
use crate::server::Shared;
use crate::store::{Filter, WatchCursor, WatchItem};

/// Appends one `{"type":..,"object":..}\n` line.
pub fn encode_event(out: &mut Vec<u8>, etype: &str, obj: &Value) {
    out.extend_from_slice(b"{\"type\":\"");
    out.extend_from_slice(etype.as_bytes());
    out.extend_from_slice(b"\",\"object\":");
    serde_json::to_writer(&mut *out, obj).expect("a Value always serializes");
    out.extend_from_slice(b"}\n");
}

fn encode_items(out: &mut Vec<u8>, items: &[WatchItem]) {
    for it in items {
        encode_event(out, it.etype.as_str(), &it.obj);
    }
}

/// The object of a BOOKMARK event.
pub fn bookmark_object(res: ResourceId, rv: u64, initial_events_end: bool) -> Value {
    let r = &RESOURCES[res];
    let mut meta = json!({"resourceVersion": rv.to_string(), "creationTimestamp": null});
    if initial_events_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    json!({"kind": r.kind, "apiVersion": r.api_version(), "metadata": meta})
}

pub struct WatchParams {
    pub res: ResourceId,
    pub filter: Filter,
    pub bookmarks: bool,
    pub timeout: Duration,
}

struct WatchState {
    shared: Arc<Shared>,
    p: WatchParams,
    cursor: WatchCursor,
    pending: Vec<u8>,
    rv_rx: watch::Receiver<u64>,
    next_bookmark: Instant,
    deadline: Instant,
    finished: bool,
}

impl Drop for WatchState {
    fn drop(&mut self) {
        self.shared.active_watches.fetch_sub(1, Ordering::Relaxed);
    }
}

impl WatchState {
    fn bookmark_interval(&self) -> Duration {
        Duration::from_millis(
            self.shared
                .bookmark_interval_ms
                .load(Ordering::Relaxed)
                .max(1),
        )
    }

    /// Moves new events from the store into `pending`.
    fn pull(&mut self) {
        self.rv_rx.borrow_and_update();
        let result =
            self.shared
                .store
                .lock()
                .watch_poll(self.p.res, &self.p.filter, &mut self.cursor);
        match result {
            Ok(items) => encode_items(&mut self.pending, &items),
            Err(e) => {
                encode_event(&mut self.pending, "ERROR", &e.to_status());
                self.finished = true;
            }
        }
    }

    async fn next_chunk(&mut self) -> Option<Bytes> {
        loop {
            if !self.pending.is_empty() {
                return Some(Bytes::from(std::mem::take(&mut self.pending)));
            }
            if self.finished {
                return None;
            }
            tokio::select! {
                _ = sleep_until(self.deadline) => self.finished = true,
                changed = self.rv_rx.changed() => match changed {
                    Ok(()) => self.pull(),
                    Err(_) => self.finished = true,
                },
                _ = sleep_until(self.next_bookmark), if self.p.bookmarks => {
                    self.pull();
                    if !self.finished {
                        let bm = bookmark_object(self.p.res, self.cursor.rv, false);
                        encode_event(&mut self.pending, "BOOKMARK", &bm);
                    }
                    self.next_bookmark = Instant::now() + self.bookmark_interval();
                }
            }
        }
    }
}

/// Starts a watch and returns its body stream. `from`: None = the current objects as ADDED
/// first, then changes; Some(rv) = changes after rv. `initial_events_end`: after the initial
/// events, a BOOKMARK annotated `k8s.io/initial-events-end` (streaming lists).
/// A start older than the history yields a single ERROR event with a 410 `Status`.
pub fn start(
    shared: Arc<Shared>,
    p: WatchParams,
    from: Option<u64>,
    initial_events_end: bool,
) -> impl Stream<Item = Result<Frame<Bytes>, Infallible>> + Send {
    let rv_rx = shared.rv_tx.subscribe();
    let mut pending = Vec::new();
    let mut finished = false;
    let started: Result<_, ApiError> = shared.store.lock().watch_start(p.res, &p.filter, from);
    let cursor = match started {
        Ok((cursor, items)) => {
            encode_items(&mut pending, &items);
            if initial_events_end {
                encode_event(
                    &mut pending,
                    "BOOKMARK",
                    &bookmark_object(p.res, cursor.rv, true),
                );
            }
            cursor
        }
        Err(e) => {
            encode_event(&mut pending, "ERROR", &e.to_status());
            finished = true;
            WatchCursor { rv: 0, epoch: 0 }
        }
    };
    shared.active_watches.fetch_add(1, Ordering::Relaxed);
    let now = Instant::now();
    let interval =
        Duration::from_millis(shared.bookmark_interval_ms.load(Ordering::Relaxed).max(1));
    let state = WatchState {
        deadline: now + p.timeout,
        next_bookmark: now + interval,
        shared,
        p,
        cursor,
        pending,
        rv_rx,
        finished,
    };
    futures::stream::unfold(state, |mut st| async move {
        let chunk = st.next_chunk().await?;
        Some((Ok(Frame::data(chunk)), st))
    })
}
