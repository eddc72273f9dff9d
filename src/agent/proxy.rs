//! The proxy reconciler: turns the planned remote services into virtual services (pure) and
//! keeps the chosen backend (IPVS or nftables, one [`ServiceBackend`] trait) in sync with them.
//! Re-evaluates every 2 s because backend states depend on tunnel handshakes and on draining
//! connections, not only on snapshot changes; re-reads the kernel every 60 s to repair manual
//! edits.

use super::observe::DownPeers;
use super::remotes::Plan;
use crate::config::{Config, ProxyBackend};
use crate::control::ProxyStatus;
use crate::proxy::backend::ServiceBackend;
use crate::proxy::ipvs_backend::IpvsBackend;
use crate::proxy::model::{clusterset_virtual_services, virtual_services, VirtualService};
use crate::proxy::nft_backend::{self, NftBackend};
use crate::reconcile::{self, Reconciler, Schedule, Trigger};
use crate::source::now_unix;
use crate::status_board;
use ipnetwork::IpNetwork;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;

const TICK: Duration = Duration::from_secs(2);
const RESYNC: Duration = Duration::from_secs(60);
const RETRY: Duration = Duration::from_secs(30);
/// How long the nftables backend waits for unsynced remotes before programming without them.
const NFT_FIRST_SYNC_WAIT: Duration = Duration::from_secs(60);

/// Our nftables proxy table (family inet).
pub fn nft_table(cfg: &Config) -> String {
    format!("{}_proxy", cfg.tunnel.nft_table())
}

/// Where the proxy's VIPs live: remote service CIDRs and the ClusterSetIP CIDRs. Only IPVS
/// services and VIP-device addresses inside them are ours to change.
pub fn remote_service_cidrs(cfg: &Config) -> Vec<IpNetwork> {
    cfg.remotes
        .iter()
        .flat_map(|r| r.service_cidrs.iter().copied())
        .chain(cfg.mcs.cluster_set_cidrs.iter().copied())
        .collect()
}

pub struct ProxyTask {
    pub cfg: Arc<Config>,
    /// The planner's plans: the confined services, protected CIDRs and change times.
    pub plans: watch::Receiver<Arc<Plan>>,
    /// Peers judged down, published by the agent's peer poll.
    pub down: watch::Receiver<Arc<DownPeers>>,
    pub status: watch::Sender<Option<ProxyStatus>>,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub beat: crate::health::Beat,
}

impl ProxyTask {
    /// Starts the configured backend (retrying while it cannot start), then reconciles it on
    /// every change of the plan or of peer liveness, every 2 s (draining backends, handshake
    /// ages) and every 60 s with a re-read of the kernel.
    pub async fn run(self) -> std::io::Result<()> {
        match self.cfg.proxy.backend {
            ProxyBackend::Ipvs => {
                let backend = self.start(Self::ipvs).await;
                self.drive(backend).await
            }
            ProxyBackend::Nftables => {
                let table = nft_table(&self.cfg);
                self.drive(NftBackend { table }).await
            }
            ProxyBackend::None => Ok(()),
        }
    }

    async fn drive<B: ServiceBackend + Send>(self, backend: B) -> std::io::Result<()> {
        let r = ProxyReconciler {
            backend,
            metrics: self.metrics,
            status: self.status,
            backend_name: backend_label(&self.cfg),
            last: None,
            started_at: Instant::now(),
            force: true,
            watermark: None,
        };
        let schedule = Schedule {
            tick: TICK,
            resync: Some(RESYNC),
        };
        reconcile::run(r, (self.plans, self.down), schedule, self.beat).await
    }

    async fn ipvs(&self) -> Result<IpvsBackend, String> {
        let p = &self.cfg.proxy;
        let handle = crate::link::connect().map_err(|e| e.to_string())?;
        IpvsBackend::new(
            handle,
            &p.device,
            &p.scheduler,
            Duration::from_secs(p.drain_timeout_seconds.into()),
            remote_service_cidrs(&self.cfg),
        )
        .await
        .map_err(|e| e.to_string())
    }

    /// Retries `make` every 30 s until the backend starts (e.g. a kernel without IPVS).
    async fn start<'a, B, F>(&'a self, make: impl Fn(&'a Self) -> F) -> B
    where
        F: std::future::Future<Output = Result<B, String>> + 'a,
    {
        loop {
            match make(self).await {
                Ok(b) => return b,
                Err(e) => {
                    tracing::error!(backend = ?self.cfg.proxy.backend, error = %e,
                        "service proxy unavailable; remote ClusterIPs won't work; retrying in 30s");
                    let backend = backend_label(&self.cfg);
                    status_board::update(
                        &self.status,
                        || ProxyStatus {
                            backend,
                            ..Default::default()
                        },
                        |s| s.last_error = Some(e.clone()),
                    );
                    self.beat.tick();
                    tokio::time::sleep(RETRY).await;
                    self.beat.tick();
                }
            }
        }
    }
}

fn backend_label(cfg: &Config) -> String {
    format!("{:?}", cfg.proxy.backend).to_lowercase()
}

/// Keeps one backend equal to the virtual services of the latest plan and down-peer set.
struct ProxyReconciler<B> {
    backend: B,
    metrics: Arc<crate::metrics::Metrics>,
    status: watch::Sender<Option<ProxyStatus>>,
    backend_name: String,
    /// Shared, not copied, by the last-applied value, the backend and the status.
    last: Option<Arc<Vec<VirtualService>>>,
    started_at: Instant,
    /// Sync even if nothing changed (start, resync).
    force: bool,
    /// Newest change trigger already recorded as programmed.
    watermark: Option<SystemTime>,
}

impl<B: ServiceBackend + Send> Reconciler for ProxyReconciler<B> {
    type Desired = (Arc<Plan>, Arc<DownPeers>);
    const NAME: &'static str = "service proxy";

    /// Every tick: backends drain and peers' liveness moves with time.
    fn wants_tick(&self) -> bool {
        true
    }

    async fn reconcile(
        &mut self,
        (plan, down): &(Arc<Plan>, Arc<DownPeers>),
        why: Trigger,
    ) -> Result<(), String> {
        if why == Trigger::Resync {
            self.force = true;
            self.backend.resync();
        }
        // A partial clusterset (a source not synced since start) would take backends away
        // from ClusterSetIPs the kernel already holds: wait for it, as long as nftables waits.
        let clusterset =
            plan.clusterset_complete || self.started_at.elapsed() >= NFT_FIRST_SYNC_WAIT;
        let desired = Arc::new(desired(plan, down, clusterset));
        let changed = self.last.as_ref() != Some(&desired);
        if !self.force && !self.backend.has_draining() && !changed {
            // The kernel already holds what these changes lead to.
            self.metrics.observe_programmed(
                &plan.changed_at,
                &mut self.watermark,
                SystemTime::now(),
            );
            return Ok(());
        }
        // A backend that rewrites its table from the desired list alone waits for every
        // remote's first snapshot (IPVS keeps unsynced remotes' services itself).
        if self.backend.needs_every_remote()
            && !plan.protected.is_empty()
            && self.started_at.elapsed() < NFT_FIRST_SYNC_WAIT
        {
            return Ok(());
        }
        let started = Instant::now();
        let result = self.backend.sync(&desired, &plan.protected, changed).await;
        let took = started.elapsed();
        self.metrics.observe_proxy_sync(took);
        let backend = self.backend_name.clone();
        let init = || ProxyStatus {
            backend,
            ..Default::default()
        };
        match result {
            Ok(()) => {
                self.force = false;
                self.metrics.observe_programmed(
                    &plan.changed_at,
                    &mut self.watermark,
                    SystemTime::now(),
                );
                status_board::update(&self.status, init, |s| {
                    s.last_sync_unix = Some(now_unix());
                    s.last_sync_ms = took.as_secs_f64() * 1000.0;
                    s.last_error = None;
                    s.virtual_services = desired.len();
                    s.real_servers = desired.iter().map(|v| v.backends.len()).sum();
                    s.services = Arc::clone(&desired);
                });
                self.last = Some(desired);
                Ok(())
            }
            Err(e) => {
                self.metrics.proxy_sync_errors.inc();
                status_board::update(&self.status, init, |s| s.last_error = Some(e.clone()));
                Err(format!("{} backend: {e}", self.backend.name()))
            }
        }
    }
}

/// O(endpoints): one hash lookup per endpoint in the published down set. ClusterSetIPs only
/// with `clusterset`.
fn desired(plan: &Plan, down_peers: &DownPeers, clusterset: bool) -> Vec<VirtualService> {
    let down = |remote: &str, node: &str| {
        down_peers
            .get(remote)
            .is_some_and(|nodes| nodes.contains(node))
    };
    let mut out = virtual_services(&plan.desired.services, &down);
    if clusterset {
        // Remote ClusterIPs and ClusterSetIPs never share an address (validated CIDRs).
        out.extend(clusterset_virtual_services(&plan.clusterset, &down));
    }
    out.sort_by_key(|v| (v.vip, v.protocol));
    out
}

/// Removes everything the proxy owns: our IPVS services (VIPs in remote service CIDRs), the VIP
/// device, the nftables proxy table. Best effort, idempotent; returns a summary.
pub async fn teardown(cfg: &Config) -> String {
    let mut parts = Vec::new();
    let owned = remote_service_cidrs(cfg);
    // No IPVS in this kernel: nothing of ours there.
    if let Ok(c) = crate::proxy::ipvs::AsyncIpvsClient::new().await {
        {
            let owned2 = owned.clone();
            let r = c
                .run(move |c| -> Result<usize, crate::proxy::ipvs::IpvsError> {
                    let ours: Vec<_> = c
                        .services()?
                        .into_iter()
                        .filter(|s| crate::proxy::ipvs_plan::is_ours(&s.key, &owned2))
                        .map(|s| crate::proxy::ipvs::Request::DeleteService(s.key))
                        .collect();
                    let n = ours.len();
                    for r in c.apply(&ours) {
                        r?;
                    }
                    Ok(n)
                })
                .await;
            match r {
                Ok(Ok(n)) => parts.push(format!("{n} IPVS service(s)")),
                Ok(Err(e)) | Err(e) => parts.push(format!("IPVS: {e}")),
            }
        }
    }
    if let Ok(h) = crate::link::connect() {
        // Only a dummy device is ours to delete: never remove someone else's link by name.
        let is_dummy = matches!(
            crate::link::get(&h, &cfg.proxy.device).await,
            Ok(Some(l)) if l.kind.as_deref() == Some("dummy")
        );
        if is_dummy {
            if let Ok(true) = crate::link::delete(&h, &cfg.proxy.device).await {
                parts.push(format!("device {}", cfg.proxy.device));
            }
        }
    }
    if let Ok(true) = nft_backend::delete(&nft_table(cfg)) {
        parts.push(format!("nft table {}", nft_table(cfg)));
    }
    parts.join(", ")
}
