//! The proxy loop: turns the planned remote services into virtual services (pure) and keeps
//! the chosen backend (IPVS or nftables) in sync with them. Re-evaluates every 2 s because
//! backend states depend on tunnel handshakes and on draining connections, not only on
//! snapshot changes; re-reads the kernel every 60 s to repair manual edits.

use crate::config::{Config, ProxyBackend};
use crate::control::{AgentFacts, ProxyStatus};
use crate::model::DesiredService;
use crate::proxy::ipvs_backend::IpvsBackend;
use crate::proxy::model::{virtual_services, VirtualService};
use crate::proxy::nft_backend;
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

enum Backend {
    Ipvs(Box<IpvsBackend>),
    Nft(String),
}

/// What the proxy gets on every re-plan.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProxyInput {
    pub services: Vec<DesiredService>,
    /// Service CIDRs of remotes not synced since start: left as the kernel holds them.
    pub protected: Vec<IpNetwork>,
    /// When the remote services last changed (for the network programming metric).
    pub changed_at: Vec<std::time::SystemTime>,
}

pub struct ProxyTask {
    pub cfg: Arc<Config>,
    pub device: Arc<Device>,
    pub services: watch::Receiver<Arc<ProxyInput>>,
    /// Peers judged down, published by the agent's peer poll.
    pub down: watch::Receiver<Arc<super::observe::DownPeers>>,
    pub facts: Arc<RwLock<AgentFacts>>,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub beat: crate::health::Beat,
}

impl ProxyTask {
    pub async fn run(mut self) -> std::io::Result<()> {
        let kind = self.cfg.proxy.backend;
        let mut backend = loop {
            match self.backend().await {
                Ok(b) => break b,
                Err(e) => {
                    tracing::error!(backend = ?kind, error = %e,
                        "service proxy unavailable; remote ClusterIPs won't work; retrying in 30s");
                    self.set_status(|s| s.last_error = Some(e.clone()));
                    self.beat.tick();
                    tokio::time::sleep(RETRY).await;
                    self.beat.tick();
                }
            }
        };
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
                r = self.services.changed() => {
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
                    if let Backend::Ipvs(b) = &mut backend {
                        b.resync();
                    }
                }
            }
            // Shared, not copied, by the last-applied value, the nft task and the status.
            let desired = Arc::new(self.desired());
            let (protected, triggers) = {
                let input = self.services.borrow();
                (input.protected.clone(), input.changed_at.clone())
            };
            let draining = matches!(&backend, Backend::Ipvs(b) if b.has_draining());
            let changed = last.as_ref() != Some(&desired);
            if !force && !draining && !changed {
                // The kernel already holds what these changes lead to.
                self.metrics
                    .observe_programmed(&triggers, &mut watermark, SystemTime::now());
                continue;
            }
            // nftables rewrites its table from the desired list alone: wait for every remote's
            // first snapshot (IPVS keeps unsynced remotes' services itself).
            if matches!(backend, Backend::Nft(_))
                && !protected.is_empty()
                && started_at.elapsed() < NFT_FIRST_SYNC_WAIT
            {
                continue;
            }
            let started = Instant::now();
            let result = match &mut backend {
                Backend::Ipvs(b) => b
                    .sync(&desired, &protected)
                    .await
                    .map_err(|e| e.to_string())
                    .map(|st| {
                        if st.requests > 0 || st.vips_added > 0 || st.vips_removed > 0 {
                            tracing::info!(
                                requests = st.requests,
                                failed = st.failed,
                                vips_added = st.vips_added,
                                vips_removed = st.vips_removed,
                                services = st.services,
                                "IPVS programmed"
                            );
                        }
                    }),
                Backend::Nft(table) => {
                    let table = table.clone();
                    let d = Arc::clone(&desired);
                    tokio::task::spawn_blocking(move || nft_backend::apply(&table, &d))
                        .await
                        .map_err(|e| e.to_string())
                        .and_then(|r| r.map_err(|e| e.to_string()))
                        .map(|()| {
                            // The 60 s resync rewrites the table too: only news is worth info.
                            if changed {
                                tracing::info!(
                                    services = desired.len(),
                                    "nftables proxy programmed"
                                )
                            } else {
                                tracing::debug!(
                                    services = desired.len(),
                                    "nftables proxy rewritten"
                                )
                            }
                        })
                }
            };
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
                    tracing::warn!(error = %e, "service proxy sync failed; retrying");
                    self.set_status(|s| s.last_error = Some(e));
                }
            }
        }
    }

    async fn backend(&self) -> Result<Backend, String> {
        let p = &self.cfg.proxy;
        match p.backend {
            ProxyBackend::Ipvs => {
                let handle = crate::link::connect().map_err(|e| e.to_string())?;
                let b = IpvsBackend::new(
                    handle,
                    &p.device,
                    &p.scheduler,
                    Duration::from_secs(p.drain_timeout_seconds.into()),
                    remote_service_cidrs(&self.cfg),
                )
                .await
                .map_err(|e| e.to_string())?;
                Ok(Backend::Ipvs(Box::new(b)))
            }
            ProxyBackend::Nftables => Ok(Backend::Nft(nft_table(&self.cfg))),
            ProxyBackend::None => Err("no backend".into()),
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
        virtual_services(&self.services.borrow().services, &down)
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
