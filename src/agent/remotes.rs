//! The planner's side of the remotes: starts one source per remote, and on request plans from
//! all their current snapshots into one immutable [`Plan`] (what every consumer needs). No
//! side effects: applying a plan is `apply`'s job.

use crate::config::Config;
use crate::control::RemoteStatus;
use crate::mcs::{
    self,
    clusterset::{ClusterExports, ClusterSetService},
};
use crate::model::{self, Desired, Snapshots};
use crate::source::kube_remote::KubeRemote;
use crate::source::{static_source, RemoteSnapshot, RemoteView, SourceHealth, SourceKind};
use ipnetwork::IpNetwork;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;

/// One plan: computed once per change of any remote's snapshot, then only read (peers, DNS,
/// the proxy and status all take their part of the same plan).
#[derive(Debug, Default)]
pub struct Plan {
    /// Peers, routes, services (confined) and every rejection.
    pub desired: Desired,
    /// Per remote: its source's health and what it contributed.
    pub remotes: Vec<RemoteStatus>,
    /// Service CIDRs of remotes not synced since start: the proxy leaves them as they are.
    pub protected: Vec<IpNetwork>,
    /// Remotes whose source is failing (we hold their last good snapshot).
    pub stale: Vec<String>,
    /// When each remote service last changed (the network programming metric).
    pub changed_at: Vec<SystemTime>,
    /// The clusterset's exported services with their ClusterSetIPs (`mcs.clusterSetCIDRs`
    /// set), local cluster included; empty otherwise.
    pub clusterset: Vec<ClusterSetService>,
    /// Why ClusterSetIPs could not be allocated, one line each.
    pub clusterset_problems: Vec<String>,
    /// Every source (the local exports and each remote) has synced since start: the
    /// clusterset is complete. Until then its endpoints and even its VIPs may be partial, and
    /// what the kernel holds for it is better left alone.
    pub clusterset_complete: bool,
    /// The local cluster's exports source (None: ClusterSetIPs off, or no local API).
    pub local: Option<RemoteStatus>,
}

pub struct Remotes {
    feeds: Vec<watch::Receiver<RemoteView>>,
    /// The local cluster's exported services (ClusterSetIPs on and a local API known).
    local: Option<watch::Receiver<RemoteView>>,
    /// Static remotes' senders, kept so their channels stay open.
    _static: Vec<watch::Sender<RemoteView>>,
    pub changed: Arc<Notify>,
    /// Which remote had each public key in the last plan (it keeps it in a conflict).
    owners: model::KeyOwners,
}

impl Remotes {
    /// Publishes static snapshots at once and spawns a watcher task per kube remote.
    pub fn start(cfg: &Config, tasks: &mut JoinSet<std::io::Result<()>>) -> Remotes {
        let changed = Arc::new(Notify::new());
        let mut feeds = Vec::new();
        let mut statics = Vec::new();
        for r in &cfg.remotes {
            if r.static_source.is_some() {
                let (tx, rx) = watch::channel(RemoteView {
                    remote: r.name.clone(),
                    snapshot: Arc::new(static_source::snapshot(r)),
                    health: static_source::health(),
                });
                statics.push(tx);
                feeds.push(rx);
            } else if let Some(path) = &r.kubeconfig {
                let (tx, rx) = watch::channel(RemoteView {
                    remote: r.name.clone(),
                    snapshot: Arc::new(RemoteSnapshot::default()),
                    health: SourceHealth::new(SourceKind::Kube),
                });
                let source = KubeRemote {
                    name: r.name.clone(),
                    kubeconfig: path.clone(),
                    context: r.context.clone(),
                    import: r.import.clone(),
                    limits: cfg.limits.clone(),
                    local: None,
                };
                let changed = changed.clone();
                tasks.spawn(async move {
                    source.run(tx, changed).await;
                    Err(std::io::Error::other("a remote source ended"))
                });
                feeds.push(rx);
            }
        }
        let local = start_local(cfg, &changed, tasks);
        Remotes {
            feeds,
            local,
            _static: statics,
            changed,
            owners: model::KeyOwners::new(),
        }
    }

    /// Plans from the current snapshots. Cost: `model::plan_with`'s, plus O(remotes x
    /// services) for the per-remote status.
    pub fn plan(&mut self, cfg: &Config) -> Plan {
        let views: Vec<RemoteView> = self.feeds.iter().map(|rx| rx.borrow().clone()).collect();
        let snaps: Snapshots = views
            .iter()
            .map(|v| (v.remote.clone(), v.snapshot.clone()))
            .collect();
        let desired = model::plan_with(cfg, &snaps, &self.owners);
        self.owners = model::key_owners(&desired);
        let local = self.local.as_ref().map(|rx| rx.borrow().clone());
        let (clusterset, clusterset_problems) = if cfg.mcs.enabled() {
            clusterset(cfg, local.as_ref(), &desired)
        } else {
            Default::default()
        };
        let mut protected = self.unsynced_service_cidrs(cfg);
        let clusterset_complete =
            local.as_ref().is_none_or(|v| v.health.synced) && views.iter().all(|v| v.health.synced);
        if cfg.mcs.enabled() && !clusterset_complete {
            // Who exports what is not known yet: ClusterSetIPs could move or vanish.
            protected.extend(cfg.mcs.cluster_set_cidrs.iter().copied());
        }
        Plan {
            remotes: views.iter().map(|v| remote_status(v, &desired)).collect(),
            local: local.as_ref().map(local_status),
            desired,
            protected,
            stale: self.stale_remotes(),
            changed_at: self.change_times(),
            clusterset,
            clusterset_problems,
            clusterset_complete,
        }
    }

    /// Service CIDRs of remotes that haven't delivered a complete snapshot since we started:
    /// the proxy must not remove what the kernel holds for them.
    fn unsynced_service_cidrs(&self, cfg: &Config) -> Vec<ipnetwork::IpNetwork> {
        self.feeds
            .iter()
            .filter(|rx| !rx.borrow().health.synced)
            .filter_map(|rx| {
                let name = rx.borrow().remote.clone();
                cfg.remotes.iter().find(|r| r.name == name)
            })
            .flat_map(|r| r.service_cidrs.iter().copied())
            .collect()
    }

    /// Remotes whose source is failing (`stale_since_unix` set): we hold their last good
    /// snapshot. With `dns.serveStale: false` DNS answers their zones SERVFAIL meanwhile.
    fn stale_remotes(&self) -> Vec<String> {
        self.feeds
            .iter()
            .filter_map(|rx| {
                let v = rx.borrow();
                v.health
                    .stale_since_unix
                    .is_some()
                    .then(|| v.remote.clone())
            })
            .collect()
    }

    /// Every remote service's last change time (watch events after the first sync).
    fn change_times(&self) -> Vec<std::time::SystemTime> {
        self.feeds
            .iter()
            .flat_map(|rx| {
                rx.borrow()
                    .snapshot
                    .changed_at
                    .values()
                    .copied()
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

/// Watches the local cluster's exported Services when ClusterSetIPs are on: the local cluster
/// is then a member of the clusterset like any remote, and its endpoints come first.
fn start_local(
    cfg: &Config,
    changed: &Arc<Notify>,
    tasks: &mut JoinSet<std::io::Result<()>>,
) -> Option<watch::Receiver<RemoteView>> {
    if !cfg.mcs.enabled() {
        return None;
    }
    let Some(api) = cfg.local_api() else {
        tracing::warn!(
            "mcs.clusterSetCIDRs is set but the local cluster's API is unknown (set \
             cluster.kubeconfig or $KUBECONFIG, or run in a pod): this cluster's own exports \
             are not part of the ClusterSetIPs"
        );
        return None;
    };
    let (tx, rx) = watch::channel(RemoteView {
        remote: cfg.cluster.name.clone(),
        snapshot: Arc::new(RemoteSnapshot::default()),
        health: SourceHealth::new(SourceKind::Kube),
    });
    let source = KubeRemote {
        name: cfg.cluster.name.clone(),
        kubeconfig: match &api {
            crate::source::kube_client::LocalApi::Kubeconfig(p) => p.clone(),
            crate::source::kube_client::LocalApi::InCluster => Default::default(),
        },
        context: None,
        import: crate::config::Import::Exported,
        limits: cfg.limits.clone(),
        local: Some(api),
    };
    let changed = changed.clone();
    tasks.spawn(async move {
        source.run(tx, changed).await;
        Err(std::io::Error::other("the local exports source ended"))
    });
    Some(rx)
}

/// The clusterset from the local exports and the remotes' exported (confined) services.
fn clusterset(
    cfg: &Config,
    local: Option<&RemoteView>,
    desired: &Desired,
) -> (Vec<ClusterSetService>, Vec<String>) {
    let mut clusters = Vec::new();
    if let Some(v) = local {
        clusters.push(ClusterExports {
            cluster: &v.remote,
            local: true,
            services: v.snapshot.services.iter().collect(),
        });
    }
    for r in &cfg.remotes {
        clusters.push(ClusterExports {
            cluster: &r.name,
            local: false,
            // Only exported Services: an `import: all` remote's others are not the
            // clusterset's (the other clusters would not count them).
            services: desired
                .services
                .iter()
                .filter(|s| s.remote == r.name && s.service.exported_since.is_some())
                .map(|s| &s.service)
                .collect(),
        });
    }
    mcs::clusterset::build(&cfg.mcs, &clusters)
}

/// The local exports source: its own services (exported ones), not planned remote services.
fn local_status(v: &RemoteView) -> RemoteStatus {
    RemoteStatus {
        services: v.snapshot.services.len(),
        endpoints: v.snapshot.endpoint_count(),
        ..remote_status(v, &Desired::default())
    }
}

fn remote_status(v: &RemoteView, d: &Desired) -> RemoteStatus {
    let services: Vec<_> = d.services.iter().filter(|s| s.remote == v.remote).collect();
    RemoteStatus {
        name: v.remote.clone(),
        source: v.health.kind,
        synced: v.health.synced,
        last_sync_unix: v.health.last_sync_unix,
        stale_since_unix: v.health.stale_since_unix,
        last_error: v.health.last_error.clone(),
        nodes: v.snapshot.nodes.len(),
        peers: d.peers.iter().filter(|p| p.remote == v.remote).count(),
        services: services.len(),
        endpoints: services.iter().map(|s| s.service.endpoints.len()).sum(),
        rejected: d
            .rejected
            .iter()
            .filter(|r| r.remote == v.remote)
            .cloned()
            .collect(),
        limits_hit: v.snapshot.limits_hit.clone(),
        import: v.snapshot.import.clone(),
    }
}
