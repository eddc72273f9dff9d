//! The kernel reconciler: the routes to the remote CIDRs through the tunnel device (with this
//! node's source address) and the tunnel's nftables table (MSS clamping, fail-closed and input
//! guards, host SNAT for the IPVS backend). Its desired state is this node's pod CIDRs: routes
//! depend on the config alone (every remote's declared CIDRs, synced or not), the source
//! address and the SNAT rule on the pod CIDRs.

use super::proxy;
use crate::config::Config;
use crate::reconcile::{Reconciler, Trigger};
use crate::{nft, routes::Routes};
use anyhow::{Context, Result};
use ipnetwork::IpNetwork;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

pub struct KernelReconciler {
    cfg: Config,
    routes: Routes,
    desired_routes: Vec<IpNetwork>,
    node_cidrs: Arc<Vec<IpNetwork>>,
    src4: Option<Ipv4Addr>,
    src6: Option<Ipv6Addr>,
    ruleset: String,
    /// The pod CIDRs changed but no source address for them was found yet.
    sources_pending: bool,
}

impl KernelReconciler {
    /// The first full sync. An error here stops the agent: it never reports ready on a
    /// half-programmed kernel.
    pub async fn start(
        cfg: Config,
        routes: Routes,
        node_cidrs: Arc<Vec<IpNetwork>>,
    ) -> Result<KernelReconciler> {
        let desired_routes = desired_routes(&cfg);
        let (src4, src6) = source_addresses(&cfg, &node_cidrs, &routes).await?;
        let ruleset = tunnel_ruleset(&cfg, src4, src6);
        let k = KernelReconciler {
            cfg,
            routes,
            desired_routes,
            node_cidrs,
            src4,
            src6,
            ruleset,
            sources_pending: false,
        };
        k.sync(true).await?;
        Ok(k)
    }

    pub fn routes(&self) -> usize {
        self.desired_routes.len()
    }

    /// Routes converged; the nft table installed when `reinstall` (start, new source
    /// address) or found missing.
    async fn sync(&self, reinstall: bool) -> Result<()> {
        let t = &self.cfg.tunnel;
        let ch = self
            .routes
            .reconcile(&t.device, &self.desired_routes, self.src4, self.src6)
            .await
            .context("program routes")?;
        for r in &ch.added {
            if reinstall {
                tracing::debug!(route = %r, "route added");
            } else {
                tracing::info!(route = %r, "route restored");
            }
        }
        for r in &ch.removed {
            tracing::info!(route = %r, "stale route removed");
        }
        if reinstall || !nft::table_exists(&t.nft_table()).unwrap_or(false) {
            nft::apply(&self.ruleset).context("install the MSS clamping nftables table")?;
            if !reinstall {
                tracing::info!(table = %t.nft_table(), "nftables table restored");
            }
        }
        Ok(())
    }
}

impl Reconciler for KernelReconciler {
    type Desired = Arc<Vec<IpNetwork>>;
    const NAME: &'static str = "routes and nft table";

    /// New pod CIDRs mean new source addresses and a re-installed nft table (its SNAT source);
    /// until they can be found, the routes keep the old ones and each resync retries.
    async fn reconcile(&mut self, cidrs: &Arc<Vec<IpNetwork>>, why: Trigger) -> Result<(), String> {
        if why == Trigger::Changed && **cidrs != *self.node_cidrs {
            self.node_cidrs = cidrs.clone();
            self.sources_pending = true;
        }
        let mut reinstall = false;
        if self.sources_pending {
            match source_addresses(&self.cfg, &self.node_cidrs, &self.routes).await {
                Ok((v4, v6)) => {
                    (self.src4, self.src6) = (v4, v6);
                    self.ruleset = tunnel_ruleset(&self.cfg, v4, v6);
                    self.sources_pending = false;
                    reinstall = true;
                }
                Err(e) => tracing::warn!(error = %format!("{e:#}"),
                    "this node's pod CIDRs changed but no source address for them; retrying at the next resync"),
            }
        }
        self.sync(reinstall).await.map_err(|e| format!("{e:#}"))
    }
}

/// Every remote's declared pod and service CIDRs, synced or not: the routes for the agent's
/// lifetime.
fn desired_routes(cfg: &Config) -> Vec<IpNetwork> {
    crate::model::routes(cfg)
}

/// MSS clamping, the fail-closed and input guards, plus (IPVS backend) source NAT of
/// host-originated ClusterIP connections.
fn tunnel_ruleset(cfg: &Config, src4: Option<Ipv4Addr>, src6: Option<Ipv6Addr>) -> String {
    let t = &cfg.tunnel;
    let remote_cidrs: Vec<IpNetwork> = cfg
        .remotes
        .iter()
        .flat_map(|r| r.pod_cidrs.iter().chain(&r.service_cidrs))
        .copied()
        .collect();
    let base = nft::with_guards(
        &nft::mss_clamp_ruleset(&t.nft_table(), &t.device, t.mtu),
        &t.device,
        &remote_cidrs,
    );
    if cfg.proxy.backend != crate::config::ProxyBackend::Ipvs {
        return base;
    }
    let cidrs = proxy::remote_service_cidrs(cfg);
    nft::with_host_snat(&base, &t.device, &cidrs, src4, src6)
}

/// The source address for host-originated packets into the tunnel: config, else a local
/// address inside this node's pod CIDRs (e.g. the CNI bridge gateway).
async fn source_addresses(
    cfg: &Config,
    node_cidrs: &[IpNetwork],
    routes: &Routes,
) -> Result<(Option<Ipv4Addr>, Option<Ipv6Addr>)> {
    if let Some(ip) = cfg.node.source_ip {
        return Ok(match ip {
            IpAddr::V4(a) => (Some(a), None),
            IpAddr::V6(a) => (None, Some(a)),
        });
    }
    let (v4, v6) = routes
        .find_local_source(node_cidrs)
        .await
        .context("look for a local address inside node.podCIDRs")?;
    if v4.is_none() && v6.is_none() {
        tracing::warn!(
            "no local address inside node.podCIDRs: traffic from this host itself (not its pods) \
             to remote pods would leave with an underlay source the remote cannot route back; \
             set node.sourceIP or give this node an address in its pod CIDR"
        );
    } else {
        tracing::info!(v4 = ?v4, v6 = ?v6, "source address for host-originated tunnel traffic");
    }
    Ok((v4, v6))
}
