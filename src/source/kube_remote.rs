//! The live source for one remote cluster: kube-runtime watchers on its Nodes, Services and
//! EndpointSlices feed a [`RemoteStore`]; a fresh [`RemoteSnapshot`] is published (debounced)
//! after changes. Errors never clear the snapshot: the last good one stays published and the
//! remote is marked stale until the watchers recover (kube-runtime re-lists with backoff,
//! including after 410 Gone).

use super::kube_client;
use super::store::{self, RemoteStore};
use super::watch_health::{Failure, WatchHealth, Watcher};
use super::{now_unix, RemoteView, SourceHealth, SourceKind};
use crate::config::Import;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::core::{ApiResource, DynamicObject, PartialObjectMeta};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};

/// Coalesces bursts of events into one snapshot (a re-list of 10k objects is one publish).
const DEBOUNCE: Duration = Duration::from_millis(100);
/// Retry interval for a missing or broken kubeconfig.
const CONFIG_RETRY: Duration = Duration::from_secs(10);
/// While stale, how often a cheap list probes whether the API is back (a re-established watch
/// with nothing new to say produces no event to tell us).
const PROBE: Duration = Duration::from_secs(2);
/// Watch retry backoff: 0.5 s doubling to 5 s. kube-runtime's default grows to 30 s, which
/// would keep a remote stale for half a minute after its API came back.
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How often the kubeconfig file is checked for a change (kubelet refreshes a Secret-mounted
/// file within about a minute of the Secret's update).
const KUBECONFIG_CHECK: Duration = Duration::from_secs(5);
/// Services (and their slices) another proxy owns, as kube-proxy skips them.
const NOT_OURS: &str = "!service.kubernetes.io/service-proxy-name";

pub struct KubeRemote {
    pub name: String,
    pub kubeconfig: PathBuf,
    pub context: Option<String>,
    /// Set for this agent's own cluster (its exported Services for the ClusterSetIPs): the
    /// client is the agent's own, and its Nodes are not watched (they are not peers).
    pub local: Option<super::kube_client::LocalApi>,
    /// What this remote may cost us (config `limits`).
    pub limits: crate::config::LimitsConfig,
    /// Which of its Services are imported (config `remotes[].import`).
    pub import: Import,
}

/// The Multi-Cluster Services API group, and the ServiceExport versions we read, preferred
/// first (v1beta1 since mcs-api v0.5.0; v1alpha1 is what older Submariner and GKE serve).
const MCS_GROUP: &str = "multicluster.x-k8s.io";
const EXPORT_VERSIONS: [&str; 2] = ["v1beta1", "v1alpha1"];
/// While the remote serves no ServiceExport API (or we could not tell), how often we look
/// again: installing the CRDs there is followed without a restart.
const EXPORT_API_CHECK: Duration = Duration::from_secs(10);

/// What asking the remote for its ServiceExport API found.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ExportApi {
    /// Served at this version.
    Served(&'static str),
    /// Not served: the CRD is not installed.
    Absent,
    /// The discovery request failed (the API is down, or refuses us).
    Unknown(String),
}

impl ExportApi {
    fn api_version(&self) -> Option<String> {
        match self {
            ExportApi::Served(v) => Some(format!("{MCS_GROUP}/{v}")),
            _ => None,
        }
    }
}

/// Asks the remote's discovery which ServiceExport version it serves.
async fn discover_export_api(client: &Client) -> ExportApi {
    // Bounded: an unreachable API must not hold up the other watchers (they report it).
    const TIMEOUT: Duration = Duration::from_secs(5);
    for v in EXPORT_VERSIONS {
        let gv = format!("{MCS_GROUP}/{v}");
        let Ok(found) = tokio::time::timeout(TIMEOUT, client.list_api_group_resources(&gv)).await
        else {
            return ExportApi::Unknown(format!("no answer to {gv} discovery within {TIMEOUT:?}"));
        };
        match found {
            Ok(list) if list.resources.iter().any(|r| r.name == "serviceexports") => {
                return ExportApi::Served(v)
            }
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return ExportApi::Unknown(e.to_string()),
        }
    }
    ExportApi::Absent
}

fn export_resource(version: &str) -> ApiResource {
    ApiResource {
        group: MCS_GROUP.into(),
        version: version.into(),
        api_version: format!("{MCS_GROUP}/{version}"),
        kind: "ServiceExport".into(),
        plural: "serviceexports".into(),
    }
}

/// A 404 from the export watcher: the CRD went away under it.
fn is_not_found(e: &watcher::Error) -> bool {
    match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => s.code == 404,
        watcher::Error::WatchError(s) => s.code == 404,
        _ => false,
    }
}

// One lives at a time (moved straight into the store), so the size spread costs nothing.
#[allow(clippy::large_enum_variant)]
enum Update {
    Node(Result<Event<Node>, watcher::Error>),
    Service(Result<Event<Service>, watcher::Error>),
    Slice(Result<Event<EndpointSlice>, watcher::Error>),
    Export(Result<Event<PartialObjectMeta<DynamicObject>>, watcher::Error>),
}

impl Update {
    fn watcher(&self) -> Watcher {
        match self {
            Update::Node(_) => Watcher::Nodes,
            Update::Service(_) => Watcher::Services,
            Update::Slice(_) => Watcher::Slices,
            Update::Export(_) => Watcher::Exports,
        }
    }
}

/// What one watcher event told us.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Nothing from the server yet (kube-runtime emits `Init` before it sends the list request).
    Quiet,
    /// One object of a re-list in progress: the list may still fail on a later page.
    Page,
    /// A completed list or a watch event; `changed`: the store's contents changed.
    Delivered { changed: bool },
}

impl KubeRemote {
    /// Runs forever, publishing into `tx` and poking `changed` after each publish. A changed
    /// kubeconfig file (a rotated token in a re-mounted Secret) is picked up without a restart:
    /// the watchers reconnect with it, and their re-list replaces the store's contents
    /// atomically, so nothing flaps.
    pub async fn run(self, tx: watch::Sender<RemoteView>, changed: Arc<Notify>) {
        let mut health = SourceHealth::new(SourceKind::Kube);
        let mut store = RemoteStore::with_limits(&self.name, (&self.limits).into());
        store.policy = self.import.to_string();
        if self.import == Import::Exported {
            store.gate_on_exports(self.limits.services);
        }
        let mut was_synced = false;
        let mut conn = self.connect(&tx, &changed, &mut health).await;
        loop {
            let Some(next) = self
                .watch(
                    conn,
                    &tx,
                    &changed,
                    &mut health,
                    &mut store,
                    &mut was_synced,
                )
                .await
            else {
                return;
            };
            conn = next;
        }
    }

    /// A client from the kubeconfig, retrying every 10 s until it can be built.
    async fn connect(
        &self,
        tx: &watch::Sender<RemoteView>,
        changed: &Notify,
        health: &mut SourceHealth,
    ) -> (Client, Option<u64>) {
        loop {
            let fp = fingerprint(&self.kubeconfig);
            let client = match &self.local {
                Some(api) => kube_client::local_client(api).await,
                None => {
                    kube_client::from_remote_kubeconfig(
                        &self.kubeconfig,
                        self.context.as_deref(),
                        self.limits.message_bytes,
                    )
                    .await
                }
            };
            match client {
                Ok(c) => return (c, fp),
                Err(e) => {
                    let msg = e.to_string();
                    if health.last_error.as_deref() != Some(&msg) {
                        tracing::error!(remote = %self.name, error = %msg, "remote unavailable; retrying every 10s");
                    }
                    health.last_error = Some(msg);
                    health.stale_since_unix.get_or_insert_with(now_unix);
                    publish_health(tx, health, changed);
                    tokio::time::sleep(CONFIG_RETRY).await;
                }
            }
        }
    }

    /// Watches with `client` until the kubeconfig file changes and a client can be built from
    /// the new one (returned), or the streams end (None).
    ///
    /// Longer than our usual functions on purpose: one select loop over the three watchers, the
    /// debounce, the kubeconfig re-read and the staleness probe, which all share the store, the
    /// health, the watchers' failures and the debounce state; split, each arm would take all of
    /// them as arguments and the loop's order would be harder to see.
    async fn watch(
        &self,
        (client, mut fp): (Client, Option<u64>),
        tx: &watch::Sender<RemoteView>,
        changed: &Notify,
        health: &mut SourceHealth,
        store: &mut RemoteStore,
        was_synced: &mut bool,
    ) -> Option<(Client, Option<u64>)> {
        let nodes = if self.local.is_some() {
            // Our own nodes are not peers: an empty table that counts as listed.
            store.nodes.init();
            store.nodes.init_done();
            futures::stream::pending().boxed()
        } else {
            watcher::watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
                .backoff(RetryBackoff::default())
                .map(Update::Node)
                .boxed()
        };
        let svc_cfg = watcher::Config::default().labels(NOT_OURS);
        // `import: {selector}` is the API server's to apply. Slices are not filtered by it
        // (their labels need not follow the Service's): the snapshot joins them by Service.
        let selected = match &self.import {
            Import::Selector(sel) => {
                watcher::Config::default().labels(&format!("{NOT_OURS},{sel}"))
            }
            _ => svc_cfg.clone(),
        };
        let services = watcher::watcher(Api::<Service>::all(client.clone()), selected)
            .backoff(RetryBackoff::default())
            .map(Update::Service);
        let slices = watcher::watcher(Api::<EndpointSlice>::all(client.clone()), svc_cfg)
            .backoff(RetryBackoff::default())
            .map(Update::Slice);
        let mut export_api = None;
        let mut dirty = false;
        if self.import == Import::Exported {
            let found = discover_export_api(&client).await;
            dirty = self.export_api_found(&found, store, health, tx, changed);
            export_api = Some(found);
        }
        let exports = match &export_api {
            // Metadata only: the name is all that matters, and a status can be long.
            Some(ExportApi::Served(v)) => watcher::watcher(
                Api::<PartialObjectMeta<DynamicObject>>::all_with(
                    client.clone(),
                    &export_resource(v),
                ),
                watcher::Config::default(),
            )
            .backoff(RetryBackoff::default())
            .map(Update::Export)
            .boxed(),
            _ => futures::stream::pending().boxed(),
        };
        let discovery = client.clone();
        let probe_api = Api::<Service>::all(client);
        let mut updates =
            futures::stream::select_all([nodes, services.boxed(), slices.boxed(), exports]);
        let mut export_check = tokio::time::interval(EXPORT_API_CHECK);
        export_check.tick().await;
        let mut watchers = WatchHealth::default();
        let mut probe = tokio::time::interval(PROBE);
        let mut reread = tokio::time::interval(KUBECONFIG_CHECK);
        reread.tick().await;
        let debounce = tokio::time::sleep(DEBOUNCE);
        tokio::pin!(debounce);
        loop {
            tokio::select! {
                next = updates.next() => {
                    let update = next?;
                    let w = update.watcher();
                    match apply(store, update) {
                        Ok(Step::Quiet | Step::Page) => {}
                        Ok(Step::Delivered { changed: data_changed }) => {
                            health.last_sync_unix = Some(now_unix());
                            watchers.delivered(w);
                            if !watchers.any_failing() && self.recovered(health) {
                                publish_health(tx, health, changed);
                            }
                            if data_changed && !dirty {
                                dirty = true;
                                debounce.as_mut().reset(tokio::time::Instant::now() + DEBOUNCE);
                            }
                        }
                        Err(e) if w == Watcher::Exports && is_not_found(&e) => {
                            // The CRD was deleted: look again, and start over without it.
                            let found = discover_export_api(&discovery).await;
                            if Some(&found) != export_api.as_ref() {
                                if dirty {
                                    self.publish(store, health, tx, changed, was_synced);
                                }
                                return Some((discovery, fp));
                            }
                        }
                        Err(e) => {
                            let msg = e.to_string();
                            watchers.failed(w, Failure::of(&msg));
                            self.failing(health, msg, tx, changed);
                        }
                    }
                }
                _ = export_check.tick(), if matches!(export_api, Some(ExportApi::Absent | ExportApi::Unknown(_))) => {
                    let found = discover_export_api(&discovery).await;
                    if Some(&found) != export_api.as_ref() {
                        if dirty {
                            self.publish(store, health, tx, changed, was_synced);
                        }
                        if !matches!(found, ExportApi::Unknown(_)) {
                            // Served now (or known absent after an error): the watchers
                            // start over with it; their re-lists replace the store atomically.
                            return Some((discovery, fp));
                        }
                        self.export_api_found(&found, store, health, tx, changed);
                        export_api = Some(found);
                    }
                }
                () = &mut debounce, if dirty => {
                    self.publish(store, health, tx, changed, was_synced);
                    dirty = false;
                }
                _ = reread.tick() => {
                    let now = fingerprint(&self.kubeconfig);
                    if now.is_none() || now == fp {
                        continue;
                    }
                    let ctx = self.context.as_deref();
                    let client = match &self.local {
                        Some(api) => kube_client::local_client(api).await,
                        None => kube_client::from_remote_kubeconfig(&self.kubeconfig, ctx, self.limits.message_bytes).await,
                    };
                    match client {
                        Ok(c) => {
                            if dirty {
                                self.publish(store, health, tx, changed, was_synced);
                            }
                            tracing::info!(remote = %self.name, kubeconfig = %self.kubeconfig.display(),
                                "kubeconfig changed; reconnecting with it");
                            return Some((c, now));
                        }
                        // Half-written, or broken: keep the current connection, say so once.
                        Err(e) => {
                            tracing::warn!(remote = %self.name, error = %e,
                                "kubeconfig changed but cannot be used; keeping the current connection");
                            fp = now;
                        }
                    }
                }
                _ = probe.tick(), if health.stale_since_unix.is_some() => {
                    let lp = kube::api::ListParams::default().limit(1);
                    let ok = tokio::time::timeout(PROBE, probe_api.list_metadata(&lp)).await;
                    if matches!(ok, Ok(Ok(_))) {
                        watchers.probe_ok();
                        if !watchers.any_failing() && self.recovered(health) {
                            publish_health(tx, health, changed);
                        }
                    }
                }
            }
        }
    }

    /// Records what discovery found about the ServiceExport API (logged when it changes);
    /// true if the store changed.
    fn export_api_found(
        &self,
        found: &ExportApi,
        store: &mut RemoteStore,
        health: &mut SourceHealth,
        tx: &watch::Sender<RemoteView>,
        changed: &Notify,
    ) -> bool {
        let was = store.export_api.clone();
        match found {
            ExportApi::Served(v) => {
                if was.is_none() {
                    tracing::info!(remote = %self.name, api = %format!("{MCS_GROUP}/{v}"),
                        "importing the Services this remote exports (ServiceExport)");
                }
                store.set_export_api(found.api_version());
                false
            }
            ExportApi::Absent => {
                // Said at every (re)connect: it is the one reason nothing gets imported.
                tracing::warn!(remote = %self.name,
                    "remote serves no ServiceExport API ({MCS_GROUP}): none of its Services is \
                     imported; install the MCS CRDs there (deploy/crds) and export them, or set \
                     `import: all` for this remote");
                let had = store
                    .exports
                    .as_ref()
                    .is_some_and(|t| !t.synced || !t.is_empty());
                store.set_export_api(None);
                had || was.is_some()
            }
            ExportApi::Unknown(msg) => {
                self.failing(
                    health,
                    format!("ServiceExport discovery: {msg}"),
                    tx,
                    changed,
                );
                false
            }
        }
    }

    /// Clears staleness; true if it was stale.
    fn recovered(&self, health: &mut SourceHealth) -> bool {
        if health.stale_since_unix.take().is_none() {
            return false;
        }
        health.last_error = None;
        tracing::info!(remote = %self.name, "remote API reachable again");
        true
    }

    fn failing(
        &self,
        health: &mut SourceHealth,
        msg: String,
        tx: &watch::Sender<RemoteView>,
        changed: &Notify,
    ) {
        if health.stale_since_unix.is_none() {
            tracing::warn!(remote = %self.name, error = %msg,
                "remote API failing; keeping the last good snapshot");
            health.stale_since_unix = Some(now_unix());
        } else {
            tracing::debug!(remote = %self.name, error = %msg, "remote API still failing");
        }
        if health.last_error.as_deref() != Some(&msg) {
            health.last_error = Some(msg);
            publish_health(tx, health, changed);
        }
    }

    fn publish(
        &self,
        store: &RemoteStore,
        health: &mut SourceHealth,
        tx: &watch::Sender<RemoteView>,
        changed: &Notify,
        was_synced: &mut bool,
    ) {
        health.synced = store.synced();
        if health.synced && !*was_synced {
            *was_synced = true;
            tracing::info!(
                remote = %self.name,
                nodes = store.nodes.len(),
                services = store.services.len(),
                endpointslices = store.slices.len(),
                "remote synced"
            );
        }
        let snapshot = Arc::new(store.snapshot());
        tx.send_modify(|v| {
            v.snapshot = snapshot;
            v.health = health.clone();
        });
        changed.notify_one();
    }
}

/// A hash of the kubeconfig file's bytes (None if unreadable right now).
fn fingerprint(path: &std::path::Path) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let bytes = std::fs::read(path).ok()?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    Some(h.finish())
}

/// Exponential retry backoff for the watchers, reset after a success.
struct RetryBackoff {
    next: Duration,
}

impl Default for RetryBackoff {
    fn default() -> Self {
        RetryBackoff { next: BACKOFF_MIN }
    }
}

impl Iterator for RetryBackoff {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        let d = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        Some(d)
    }
}

impl kube::runtime::utils::Backoff for RetryBackoff {
    fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }
}

fn publish_health(tx: &watch::Sender<RemoteView>, health: &SourceHealth, changed: &Notify) {
    let mut h = health.clone();
    tx.send_modify(|v| {
        h.synced = v.health.synced;
        v.health = h;
    });
    changed.notify_one();
}

/// Feeds one watcher event into the store.
fn apply(store: &mut RemoteStore, u: Update) -> Result<Step, watcher::Error> {
    macro_rules! route {
        ($ev:expr, $table:expr, $conv:path) => {
            match $ev? {
                Event::Apply(o) => {
                    let (k, v) = $conv(&o);
                    $table.apply(k, v);
                }
                Event::Delete(o) => {
                    let (k, _) = $conv(&o);
                    $table.delete(&k);
                }
                Event::Init => {
                    $table.init();
                    return Ok(Step::Quiet);
                }
                Event::InitApply(o) => {
                    let (k, v) = $conv(&o);
                    $table.init_apply(k, v);
                    return Ok(Step::Page);
                }
                Event::InitDone => $table.init_done(),
            }
        };
    }
    // Trigger times for the network programming metric, before the event is consumed.
    let now = std::time::SystemTime::now();
    let change = match &u {
        Update::Service(Ok(Event::Apply(o) | Event::Delete(o))) => {
            Some((store::namespaced_key(&o.metadata), now))
        }
        Update::Slice(Ok(Event::Apply(o) | Event::Delete(o))) => o
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(crate::source::convert::LABEL_SERVICE_NAME))
            .map(|svc| {
                let ns = o.metadata.namespace.as_deref().unwrap_or_default();
                (format!("{ns}/{svc}"), store::slice_trigger_time(o, now))
            }),
        // Exporting or unexporting changes what is programmed for that Service.
        Update::Export(Ok(Event::Apply(o) | Event::Delete(o))) => {
            Some((store::namespaced_key(&o.metadata), now))
        }
        _ => None,
    };
    match u {
        Update::Export(ev) => {
            let Some(exports) = store.exports.as_mut() else {
                return Ok(Step::Quiet);
            };
            route!(ev, exports, RemoteStore::convert_export)
        }
        Update::Node(ev) => route!(ev, store.nodes, RemoteStore::convert_node),
        Update::Service(ev) => route!(ev, store.services, RemoteStore::convert_service),
        Update::Slice(ev) => route!(ev, store.slices, RemoteStore::convert_slice),
    }
    if let Some((key, at)) = change {
        store.note_change(key, at);
    }
    Ok(Step::Delivered { changed: true })
}
