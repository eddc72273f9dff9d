//! Wires the remote sources to the tunnel: starts one source per remote, and on every change
//! re-plans from all snapshots, applies the peer set, and refreshes what status shows.

use crate::config::Config;
use crate::control::{AgentFacts, RemoteStatus};
use crate::model::{self, Desired, Rejected, Snapshots};
use crate::source::kube_remote::KubeRemote;
use crate::source::{static_source, RemoteSnapshot, RemoteView, SourceHealth, SourceKind};
use crate::tunnel::Device;
use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;

/// New rejections logged one by one per plan; beyond that, one summary line.
const LOG_REJECTIONS: usize = 10;

pub struct Remotes {
    feeds: Vec<watch::Receiver<RemoteView>>,
    /// Static remotes' senders, kept so their channels stay open.
    _static: Vec<watch::Sender<RemoteView>>,
    pub changed: Arc<Notify>,
    /// Rejections already logged (logged once, again only if they reappear after going away).
    logged: HashSet<Rejected>,
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
                    limits: cfg.limits.clone(),
                };
                let changed = changed.clone();
                tasks.spawn(async move {
                    source.run(tx, changed).await;
                    Err(std::io::Error::other("a remote source ended"))
                });
                feeds.push(rx);
            }
        }
        Remotes {
            feeds,
            _static: statics,
            changed,
            logged: HashSet::new(),
            owners: model::KeyOwners::new(),
        }
    }

    /// Plans from the current snapshots, applies the peers, updates status facts.
    pub fn apply(&mut self, cfg: &Config, device: &Device, facts: &RwLock<AgentFacts>) -> Desired {
        let views: Vec<RemoteView> = self.feeds.iter().map(|rx| rx.borrow().clone()).collect();
        let snaps: Snapshots = views
            .iter()
            .map(|v| (v.remote.clone(), v.snapshot.clone()))
            .collect();
        let desired = model::plan_with(cfg, &snaps, &self.owners);
        self.owners = model::key_owners(&desired);
        let ch = device.set_peers(&desired.peers);
        for p in &ch.added {
            tracing::info!(peer = %p, "peer added");
        }
        for p in &ch.updated {
            tracing::info!(peer = %p, "peer updated");
        }
        for p in &ch.removed {
            tracing::info!(peer = %p, "peer removed");
        }
        self.log_rejections(&desired.rejected);
        let remotes = views.iter().map(|v| remote_status(v, &desired)).collect();
        let mut f = facts.write().unwrap_or_else(|e| e.into_inner());
        f.rejected = desired.rejected.clone();
        f.remotes = remotes;
        desired
    }

    /// Service CIDRs of remotes that haven't delivered a complete snapshot since we started:
    /// the proxy must not remove what the kernel holds for them.
    pub fn unsynced_service_cidrs(&self, cfg: &Config) -> Vec<ipnetwork::IpNetwork> {
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
    pub fn stale_remotes(&self) -> Vec<String> {
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
    pub fn change_times(&self) -> Vec<std::time::SystemTime> {
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

    /// New rejections are logged once each, at most [`LOG_REJECTIONS`] per plan at warn (a
    /// hostile remote can produce thousands; status and metrics count them all), the rest as
    /// one summary line.
    fn log_rejections(&mut self, now: &[Rejected]) {
        let current: HashSet<Rejected> = now.iter().cloned().collect();
        let mut new = now.iter().filter(|r| !self.logged.contains(*r));
        for r in new.by_ref().take(LOG_REJECTIONS) {
            tracing::warn!(remote = %r.remote, object = %r.object, reason = %r.reason,
                "rejected");
        }
        let more = new.count();
        if more > 0 {
            tracing::warn!(more, "more objects rejected (sdn-tunnel status lists them)");
        }
        self.logged = current;
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
    }
}
