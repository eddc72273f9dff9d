//! The server handle: listener, connections, outage simulation, and the in-process API.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::ApiError;
use crate::http;
use crate::kubeconfig;
use crate::log::{RequestLog, RequestRecord, Verb};
use crate::patch::merge_patch;
use crate::resources::{lookup, ResourceId, RESOURCES};
use crate::store::{Store, UpdateMode};

/// Bookmark interval of a new server.
pub const DEFAULT_BOOKMARK_INTERVAL: Duration = Duration::from_secs(1);

/// State shared by the handle, the accept loop, connections and watches.
pub(crate) struct Shared {
    pub store: Mutex<Store>,
    /// Latest resourceVersion; every write (and compaction) wakes the watches.
    pub rv_tx: watch::Sender<u64>,
    /// true while the server is "down"; connections end when it turns true.
    pub down_tx: watch::Sender<bool>,
    pub log: Mutex<RequestLog>,
    pub bookmark_interval_ms: AtomicU64,
    pub active_watches: AtomicUsize,
    pub open_connections: AtomicUsize,
    pub addr: SocketAddr,
    /// API groups answered 404, as if their CRDs were not installed.
    pub hidden_groups: Mutex<Vec<String>>,
}

impl Shared {
    /// Runs a write under the store lock, then wakes the watches.
    pub fn write<R>(&self, f: impl FnOnce(&mut Store) -> R) -> R {
        let (r, rv) = {
            let mut s = self.store.lock();
            let r = f(&mut s);
            (r, s.resource_version())
        };
        self.rv_tx.send_replace(rv);
        r
    }
}

/// Decrements a counter when dropped.
pub(crate) struct CountGuard<'a>(pub &'a AtomicUsize);

impl<'a> CountGuard<'a> {
    pub fn new(c: &'a AtomicUsize) -> Self {
        c.fetch_add(1, Ordering::Relaxed);
        CountGuard(c)
    }
}

impl Drop for CountGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Guard {
    task: JoinHandle<()>,
    shared: Arc<Shared>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.task.abort();
        // Ends every open connection (and so every watch).
        self.shared.down_tx.send_replace(true);
    }
}

/// A running fake API server. Clones share it; it stops when the last clone is dropped.
#[derive(Clone)]
pub struct FakeApi {
    shared: Arc<Shared>,
    _guard: Arc<Guard>,
}

impl std::fmt::Debug for FakeApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeApi")
            .field("addr", &self.shared.addr)
            .finish()
    }
}

fn resource(kind: &str) -> ResourceId {
    lookup(kind).unwrap_or_else(|| panic!("fakekube: unknown resource kind {kind:?}"))
}

async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    let _open = CountGuard::new(&shared.open_connections);
    let mut down_rx = shared.down_tx.subscribe();
    let svc_shared = shared.clone();
    let svc = hyper::service::service_fn(move |req| {
        let s = svc_shared.clone();
        async move { Ok::<_, Infallible>(http::handle(s, req).await) }
    });
    let conn =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
    tokio::select! {
        biased;
        // Dropping the connection future closes the socket mid-response, as a crash would.
        _ = down_rx.wait_for(|down| *down) => tracing::debug!("connection cut: server down"),
        r = conn => {
            if let Err(e) = r {
                tracing::debug!("connection ended: {e}");
            }
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        if *shared.down_tx.borrow() {
            // Reset instead of serving: SO_LINGER 0 makes close() send RST.
            let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve_connection(stream, shared.clone()));
    }
}

impl FakeApi {
    /// Starts a server on 127.0.0.1 with an ephemeral port. Needs a Tokio runtime.
    pub async fn start() -> io::Result<FakeApi> {
        Self::start_on(std::net::TcpListener::bind("127.0.0.1:0")?).await
    }

    /// Starts a server on a listener bound by the caller (for example inside a network
    /// namespace). Needs a Tokio runtime.
    pub async fn start_on(listener: std::net::TcpListener) -> io::Result<FakeApi> {
        listener.set_nonblocking(true)?;
        let listener = TcpListener::from_std(listener)?;
        let addr = listener.local_addr()?;
        let store = Store::new();
        let (rv_tx, _) = watch::channel(store.resource_version());
        let (down_tx, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            store: Mutex::new(store),
            rv_tx,
            down_tx,
            log: Mutex::new(RequestLog::default()),
            bookmark_interval_ms: AtomicU64::new(DEFAULT_BOOKMARK_INTERVAL.as_millis() as u64),
            active_watches: AtomicUsize::new(0),
            open_connections: AtomicUsize::new(0),
            addr,
            hidden_groups: Mutex::new(Vec::new()),
        });
        let task = tokio::spawn(accept_loop(listener, shared.clone()));
        tracing::debug!(%addr, "fakekube listening");
        Ok(FakeApi {
            _guard: Arc::new(Guard {
                task,
                shared: shared.clone(),
            }),
            shared,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    /// A kubeconfig (YAML) whose cluster, user and context are all named `context`.
    pub fn kubeconfig(&self, context: &str) -> String {
        kubeconfig::render(&self.url(), context)
    }

    /// Writes [`FakeApi::kubeconfig`] to `path`.
    pub fn write_kubeconfig(&self, path: impl AsRef<Path>, context: &str) -> io::Result<()> {
        std::fs::write(path, self.kubeconfig(context))
    }

    /// Creates or replaces an object (whole object, status included, no resourceVersion
    /// precondition). The type comes from `apiVersion`/`kind`; a namespaced object without
    /// a namespace goes to "default". Returns the stored object.
    pub fn apply(&self, obj: Value) -> Result<Value, ApiError> {
        self.shared.write(|s| s.apply(obj)).map(|o| (*o).clone())
    }

    /// [`FakeApi::apply`] for many objects under one lock (fast bulk load). Stops at the
    /// first error; returns how many were applied.
    pub fn apply_all(&self, objs: impl IntoIterator<Item = Value>) -> Result<usize, ApiError> {
        self.shared.write(|s| {
            let mut n = 0;
            for o in objs {
                s.apply(o)?;
                n += 1;
            }
            Ok(n)
        })
    }

    /// Merge-patches (RFC 7386) an object in place, status included. 404 if absent.
    pub fn merge(
        &self,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        patch: &Value,
    ) -> Result<Value, ApiError> {
        let res = resource(kind);
        let ns = namespace.unwrap_or("default");
        self.shared.write(|s| {
            let mut doc = (*s
                .get(res, ns, name)
                .ok_or_else(|| ApiError::not_found(&RESOURCES[res], name))?)
            .clone();
            merge_patch(&mut doc, patch);
            s.update(res, ns, name, doc, UpdateMode::Force)
                .map(|o| (*o).clone())
        })
    }

    /// Deletes an object; returns it. `kind` is a kind, plural or short name ("Node",
    /// "services", "svc"); `namespace` None means "default" for namespaced types.
    pub fn delete(
        &self,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        let res = lookup(kind)
            .ok_or_else(|| ApiError::bad_request(format!("unknown resource kind {kind:?}")))?;
        let ns = namespace.unwrap_or("default");
        self.shared
            .write(|s| s.delete(res, ns, name, None, None))
            .map(|o| (*o).clone())
    }

    /// One object. Panics on an unknown kind.
    pub fn get(&self, kind: &str, namespace: Option<&str>, name: &str) -> Option<Value> {
        let res = resource(kind);
        self.shared
            .store
            .lock()
            .get(res, namespace.unwrap_or("default"), name)
            .map(|o| (*o).clone())
    }

    /// All objects of a kind, all namespaces, in (namespace, name) order. Panics on an unknown kind.
    pub fn list(&self, kind: &str) -> Vec<Value> {
        let res = resource(kind);
        self.shared
            .store
            .lock()
            .all(res)
            .map(|o| (**o).clone())
            .collect()
    }

    /// Number of objects of a kind. Panics on an unknown kind.
    pub fn count_objects(&self, kind: &str) -> usize {
        self.shared.store.lock().count(resource(kind))
    }

    /// The current resourceVersion (the global counter).
    pub fn resource_version(&self) -> u64 {
        self.shared.store.lock().resource_version()
    }

    /// The compaction point: lists continued and watches started from an older
    /// resourceVersion get 410.
    pub fn compacted_resource_version(&self) -> u64 {
        self.shared.store.lock().compacted_rv()
    }

    /// Number of events kept in the history.
    pub fn history_len(&self) -> usize {
        self.shared.store.lock().history_len()
    }

    /// Forgets the event history: a list continued, or a watch started, from any
    /// resourceVersion older than now gets 410 Expired, and every open watch receives an
    /// ERROR event with a 410 `Status` and is closed (so kube-runtime watchers re-list).
    pub fn compact(&self) {
        self.shared.write(|s| s.compact());
    }

    /// Bounds the event history (default 100,000); older events are compacted away, and a
    /// watch that falls that far behind gets 410.
    pub fn set_max_history(&self, events: usize) {
        self.shared.write(|s| s.set_max_history(events));
    }

    /// Simulates an outage. While down, new connections are accepted and reset at once
    /// (RST), and every open connection (so every watch) is cut when going down. Back up,
    /// the same address serves the preserved state. The in-process API keeps working.
    pub fn set_down(&self, down: bool) {
        self.shared.down_tx.send_replace(down);
    }

    /// Serves the API group `group` or not (404 on every path under it, absent from
    /// `/apis`), as a real server does before and after its CRDs are installed. Objects
    /// stored under it are kept.
    pub fn set_group_served(&self, group: &str, served: bool) {
        let mut h = self.shared.hidden_groups.lock();
        h.retain(|g| g != group);
        if !served {
            h.push(group.to_string());
        }
    }

    pub fn is_down(&self) -> bool {
        *self.shared.down_tx.borrow()
    }

    /// Interval of BOOKMARK events on watches that allow them (default 1 s). Takes effect
    /// from each watch's next bookmark.
    pub fn set_bookmark_interval(&self, interval: Duration) {
        self.shared
            .bookmark_interval_ms
            .store(interval.as_millis().max(1) as u64, Ordering::Relaxed);
    }

    /// Watch responses currently streaming.
    pub fn active_watches(&self) -> usize {
        self.shared.active_watches.load(Ordering::Relaxed)
    }

    /// Open HTTP connections.
    pub fn open_connections(&self) -> usize {
        self.shared.open_connections.load(Ordering::Relaxed)
    }

    /// The last requests served (at most [`crate::log::MAX_RECORDS`]), oldest first.
    pub fn request_log(&self) -> Vec<RequestRecord> {
        self.shared.log.lock().records()
    }

    /// Requests of one verb on one resource (kind, plural or short name) since start or the
    /// last [`FakeApi::clear_request_log`].
    pub fn count(&self, kind: &str, verb: Verb) -> u64 {
        let plural = RESOURCES[resource(kind)].plural;
        self.shared.log.lock().count(plural, verb)
    }

    /// LIST requests on a resource.
    pub fn lists(&self, kind: &str) -> u64 {
        self.count(kind, Verb::List)
    }

    /// WATCH requests on a resource.
    pub fn watches(&self, kind: &str) -> u64 {
        self.count(kind, Verb::Watch)
    }

    /// The raw query string of the last request of that verb on that resource.
    pub fn last_query(&self, kind: &str, verb: Verb) -> Option<String> {
        let plural = RESOURCES[resource(kind)].plural;
        self.shared.log.lock().last_query(plural, verb)
    }

    /// Clears the request log and the counters.
    pub fn clear_request_log(&self) {
        self.shared.log.lock().clear();
    }
}
