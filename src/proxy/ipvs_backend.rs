//! The IPVS backend: programs the desired virtual services into kernel IPVS with minimal
//! changes (see `ipvs_plan`), binds their VIPs on our dummy device, and drains departed
//! backends. It keeps a cache of what it holds, re-read from the kernel at start (adoption:
//! nothing is deleted and re-created) and on every full resync or failed request.

use super::ipvs::{AsyncIpvsClient, Destination, IpvsError, Scheduler};
use super::ipvs_plan::{self, DrainSet, Held};
use super::model::VirtualService;
use super::vip_device;
use crate::host;
use ipnetwork::IpNetwork;
use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Sysctls IPVS needs here, and why.
pub const SYSCTLS: &[(&str, &str, &str)] = &[
    // Let netfilter conntrack see IPVS connections, so our nftables rules (MSS clamping) and
    // the host firewall apply to them.
    (
        "net.ipv4.vs.conntrack",
        "1",
        "conntrack for IPVS connections",
    ),
    // When a backend is deleted, expire its connections at once so clients retry (reset)
    // instead of hanging on a dead destination.
    (
        "net.ipv4.vs.expire_nodest_conn",
        "1",
        "expire connections to deleted backends",
    ),
    // Persistence templates pointing at a quiesced (weight 0) backend expire, so ClientIP
    // affinity moves off draining backends.
    (
        "net.ipv4.vs.expire_quiescent_template",
        "1",
        "affinity leaves drained backends",
    ),
    // 0: reuse of a client port does not force a new scheduling decision, avoiding the 1 s
    // SYN stall older kernels show with conntrack=1 (kube-proxy sets the same).
    (
        "net.ipv4.vs.conn_reuse_mode",
        "0",
        "no 1 s stall on client port reuse",
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("IPVS: {0}")]
    Ipvs(#[from] IpvsError),
    #[error("VIP device: {0}")]
    Vip(#[from] vip_device::VipError),
    #[error("sysctl {name}: {source}")]
    Sysctl {
        name: String,
        source: std::io::Error,
    },
}

/// What one sync did, for logs and metrics.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SyncStats {
    pub requests: usize,
    pub failed: usize,
    pub vips_added: usize,
    pub vips_removed: usize,
    pub services: usize,
    pub destinations: usize,
}

pub struct IpvsBackend {
    client: AsyncIpvsClient,
    handle: rtnetlink::Handle,
    device_index: u32,
    scheduler: Scheduler,
    drain_timeout: Duration,
    /// Remote service CIDRs: the only IPVS services and VIPs we own.
    owned: Vec<IpNetwork>,
    held: HashMap<super::ipvs::ServiceKey, Held>,
    draining: DrainSet,
    reload: bool,
    /// The VIPs (and protected CIDRs) the device was last made to match. Checking the device
    /// means dumping every address on it (~10k), which dominated the latency of one endpoint
    /// change: it is skipped while neither changed, and redone on every reload/resync.
    vips_done: Option<(BTreeSet<IpAddr>, Vec<IpNetwork>)>,
}

impl IpvsBackend {
    pub async fn new(
        handle: rtnetlink::Handle,
        device: &str,
        scheduler: &str,
        drain_timeout: Duration,
        owned: Vec<IpNetwork>,
    ) -> Result<IpvsBackend, BackendError> {
        let client = AsyncIpvsClient::new().await?;
        for (name, value, why) in SYSCTLS {
            match host::write_sysctl(name, value) {
                Ok(true) => tracing::info!(sysctl = %name, %value, reason = %why, "set"),
                Ok(false) => {}
                Err(source) => {
                    return Err(BackendError::Sysctl {
                        name: name.to_string(),
                        source,
                    })
                }
            }
        }
        let device_index = vip_device::ensure(&handle, device).await?;
        Ok(IpvsBackend {
            client,
            handle,
            device_index,
            scheduler: Scheduler::from_name(scheduler),
            drain_timeout,
            owned,
            held: HashMap::new(),
            draining: DrainSet::new(),
            reload: true,
            vips_done: None,
        })
    }

    /// Re-reads our services and their destinations from the kernel.
    async fn reload(&mut self) -> Result<(), BackendError> {
        let owned = self.owned.clone();
        let held = self
            .client
            .run(move |c| {
                let mut held = HashMap::new();
                for s in c.services()? {
                    if !ipvs_plan::is_ours(&s.key, &owned) {
                        continue;
                    }
                    let dests = c.destinations(&s.key)?;
                    held.insert(s.key, Held { service: s, dests });
                }
                Ok::<_, IpvsError>(held)
            })
            .await??;
        self.held = held;
        self.reload = false;
        Ok(())
    }

    /// Refreshes connection counts of services with draining backends.
    async fn refresh_draining(&mut self) -> Result<(), BackendError> {
        let keys: BTreeSet<_> = self.draining.keys().map(|(k, _)| *k).collect();
        for k in keys {
            let dests: Vec<Destination> = self.client.destinations(k).await?;
            if let Some(h) = self.held.get_mut(&k) {
                h.dests = dests;
            }
        }
        Ok(())
    }

    /// Makes the kernel match `desired`. Errors of single requests are logged and trigger a
    /// full reload next time; they don't stop the rest.
    /// `protected`: service CIDRs of remotes not synced yet (their services are kept as the
    /// kernel holds them).
    pub async fn sync(
        &mut self,
        desired: &[VirtualService],
        protected: &[IpNetwork],
    ) -> Result<SyncStats, BackendError> {
        if self.reload {
            self.vips_done = None;
            self.reload().await?;
        } else if !self.draining.is_empty() {
            self.refresh_draining().await?;
        }
        let reqs = ipvs_plan::diff(
            desired,
            &self.scheduler,
            &self.held,
            &mut self.draining,
            Instant::now(),
            self.drain_timeout,
            protected,
        );
        let mut stats = SyncStats {
            requests: reqs.len(),
            ..Default::default()
        };
        if !reqs.is_empty() {
            let results = self.client.apply(reqs.clone()).await?;
            for (req, res) in reqs.iter().zip(results) {
                match res {
                    Ok(()) => ipvs_plan::record(&mut self.held, req),
                    Err(e) => {
                        stats.failed += 1;
                        self.reload = true;
                        if stats.failed <= 5 {
                            tracing::warn!(request = %req.target(), error = %e, "IPVS request failed; will resync");
                        }
                    }
                }
            }
        }
        let vips: BTreeSet<IpAddr> = desired.iter().map(|v| v.vip.ip()).collect();
        let done = self
            .vips_done
            .as_ref()
            .is_some_and(|(v, p)| *v == vips && p.as_slice() == protected);
        if !done {
            let (added, removed) = vip_device::reconcile(
                &self.handle,
                self.device_index,
                &vips,
                &self.owned,
                protected,
            )
            .await?;
            stats.vips_added = added;
            stats.vips_removed = removed;
            self.vips_done = Some((vips, protected.to_vec()));
        }
        stats.services = self.held.len();
        stats.destinations = self.held.values().map(|h| h.dests.len()).sum();
        Ok(stats)
    }

    /// Forces the next sync to re-read the kernel (periodic resync: someone may have edited
    /// IPVS by hand).
    pub fn resync(&mut self) {
        self.reload = true;
    }

    pub fn has_draining(&self) -> bool {
        !self.draining.is_empty()
    }
}

impl super::backend::ServiceBackend for IpvsBackend {
    fn name(&self) -> &'static str {
        "ipvs"
    }

    async fn sync(
        &mut self,
        desired: &std::sync::Arc<Vec<VirtualService>>,
        protected: &[IpNetwork],
        _changed: bool,
    ) -> Result<(), String> {
        let st = IpvsBackend::sync(self, desired, protected)
            .await
            .map_err(|e| e.to_string())?;
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
        Ok(())
    }

    fn resync(&mut self) {
        IpvsBackend::resync(self)
    }

    fn has_draining(&self) -> bool {
        IpvsBackend::has_draining(self)
    }
}
