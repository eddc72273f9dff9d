//! The proxy loop: turns the planned remote services into virtual services (pure) and keeps
//! the chosen backend (IPVS or nftables) in sync with them. Re-evaluates every 2 s because
//! backend states depend on tunnel handshakes and on draining connections, not only on
//! snapshot changes; re-reads the kernel every 60 s to repair manual edits.

use crate::config::{Config, ProxyBackend};
use crate::control::{AgentFacts, ProxyStatus};
use crate::proxy::backend::ServiceBackend;
use crate::proxy::ipvs_backend::IpvsBackend;
use crate::proxy::model::{virtual_services, VirtualService};
use crate::proxy::nft_backend::{self, NftBackend};
use crate::source::now_unix;
use crate::tunnel::Device;
use ipnetwork::IpNetwork;
use std::sync::{Arc, RwLock};
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

pub fn remote_service_cidrs(cfg: &Config) -> Vec<IpNetwork> {
    cfg.remotes
        .iter()
        .flat_map(|r| r.service_cidrs.iter().copied())
        .collect()
}

pub struct ProxyTask {
    pub cfg: Arc<Config>,
    pub device: Arc<Device>,
    /// The planner's plans: the confined services, protected CIDRs and change times.
    pub plans: watch::Receiver<Arc<super::remotes::Plan>>,
    /// Peers judged down, published by the agent's peer poll.
    pub down: watch::Receiver<Arc<super::observe::DownPeers>>,
    pub facts: Arc<RwLock<AgentFacts>>,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub beat: crate::health::Beat,
}

impl ProxyTask {
    /// Starts the configured backend (retrying while it cannot start) and drives it.
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
                    self.set_status(|s| s.last_error = Some(e.clone()));
                    self.beat.tick();
                    tokio::time::sleep(RETRY).await;
                    self.beat.tick();
                }
            }
        }
    }

    /// The loop: on a change of the services or of peer liveness, every 2 s (draining) and
    /// every 60 s (resync), compute the desired table and sync the backend if needed.
    async fn drive(mut self, mut backend: impl ServiceBackend) -> std::io::Result<()> {
        let mut tick = tokio::time::interval(TICK);
        let mut resync = tokio::time::interval(RESYNC);
        resync.tick().await;
        let mut last: Option<Arc<Vec<VirtualService>>> = None;
        let started_at = Instant::now();
        let mut force = true;
        // Newest change trigger already recorded as programmed.
        let mut watermark = None;
        loop {
            self.beat.tick();
            tokio::select! {
                r = self.plans.changed() => {
                    if r.is_err() {
                        return Ok(());
                    }
                }
                r = self.down.changed() => {
                    if r.is_err() {
                        return Ok(());
                    }
                }
                _ = tick.tick() => {}
                _ = resync.tick() => {
                    force = true;
                    backend.resync();
                }
            }
            // Shared, not copied, by the last-applied value, the backend and the status.
            let desired = Arc::new(self.desired());
            let (protected, triggers) = {
                let plan = self.plans.borrow();
                (plan.protected.clone(), plan.changed_at.clone())
            };
            let changed = last.as_ref() != Some(&desired);
            if !force && !backend.has_draining() && !changed {
                // The kernel already holds what these changes lead to.
                self.metrics
                    .observe_programmed(&triggers, &mut watermark, SystemTime::now());
                continue;
            }
            // A backend that rewrites its table from the desired list alone waits for every
            // remote's first snapshot (IPVS keeps unsynced remotes' services itself).
            if backend.needs_every_remote()
                && !protected.is_empty()
                && started_at.elapsed() < NFT_FIRST_SYNC_WAIT
            {
                continue;
            }
            let started = Instant::now();
            let result = backend.sync(&desired, &protected, changed).await;
            let took = started.elapsed();
            self.metrics.observe_proxy_sync(took);
            match result {
                Ok(()) => {
                    force = false;
                    self.metrics
                        .observe_programmed(&triggers, &mut watermark, SystemTime::now());
                    self.set_status(|s| {
                        s.last_sync_unix = Some(now_unix());
                        s.last_sync_ms = took.as_secs_f64() * 1000.0;
                        s.last_error = None;
                        s.virtual_services = desired.len();
                        s.real_servers = desired.iter().map(|v| v.backends.len()).sum();
                        s.services = Arc::clone(&desired);
                    });
                    last = Some(desired);
                }
                Err(e) => {
                    self.metrics.proxy_sync_errors.inc();
                    tracing::warn!(backend = backend.name(), error = %e,
                        "service proxy sync failed; retrying");
                    self.set_status(|s| s.last_error = Some(e));
                }
            }
        }
    }

    /// O(endpoints): one hash lookup per endpoint in the published down set.
    fn desired(&self) -> Vec<VirtualService> {
        let down_peers = self.down.borrow().clone();
        let down = |remote: &str, node: &str| {
            down_peers
                .get(remote)
                .is_some_and(|nodes| nodes.contains(node))
        };
        virtual_services(&self.plans.borrow().desired.services, &down)
    }

    fn set_status(&self, f: impl FnOnce(&mut ProxyStatus)) {
        let mut facts = self.facts.write().unwrap_or_else(|e| e.into_inner());
        let s = facts.proxy.get_or_insert_with(|| ProxyStatus {
            backend: format!("{:?}", self.cfg.proxy.backend).to_lowercase(),
            ..Default::default()
        });
        f(s);
    }
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
