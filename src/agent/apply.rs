//! The peers-and-DNS reconciler: applies each published [`Plan`]'s peer set to the device and
//! its zones to DNS, and publishes the plan's remotes and rejections as its status (the proxy
//! follows the same plans on its own, see `proxy`).

use super::remotes::Plan;
use crate::config::Config;
use crate::model::Rejected;
use crate::reconcile::{Reconciler, Trigger};
use crate::status_board::PlanStatus;
use crate::tunnel::Device;
use std::collections::HashSet;
use std::sync::Arc;
use tokio::sync::watch;

/// New rejections logged one by one per plan; beyond that, one summary line.
const LOG_REJECTIONS: usize = 10;

pub struct PlanApplier {
    pub cfg: Config,
    pub device: Arc<Device>,
    pub status: watch::Sender<PlanStatus>,
    pub dns: Option<crate::dns::DnsHandle>,
    /// Rejections already logged (logged once, again only if they reappear after going away).
    pub logged: HashSet<Rejected>,
}

impl PlanApplier {
    pub fn new(
        cfg: Config,
        device: Arc<Device>,
        status: watch::Sender<PlanStatus>,
        dns: Option<crate::dns::DnsHandle>,
    ) -> PlanApplier {
        PlanApplier {
            cfg,
            device,
            status,
            dns,
            logged: HashSet::new(),
        }
    }

    pub fn apply(&mut self, plan: &Plan) {
        let ch = self.device.set_peers(&plan.desired.peers);
        for p in &ch.added {
            tracing::info!(peer = %p, "peer added");
        }
        for p in &ch.updated {
            tracing::info!(peer = %p, "peer updated");
        }
        for p in &ch.removed {
            tracing::info!(peer = %p, "peer removed");
        }
        self.log_rejections(&plan.desired.rejected);
        self.status.send_replace(PlanStatus {
            remotes: plan.remotes.clone(),
            rejected: plan.desired.rejected.clone(),
            clusterset: self.cfg.mcs.enabled().then(|| clusterset_status(plan)),
        });
        if let Some(h) = &self.dns {
            h.set_zones(dns_zones(&self.cfg, plan));
        }
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

impl Reconciler for PlanApplier {
    type Desired = Arc<Plan>;
    const NAME: &'static str = "peers and DNS";

    /// Peers and zones live in memory (the device's peer set, the responder's zones): there is
    /// nothing in the kernel to re-read, so only changes reconcile.
    async fn reconcile(&mut self, plan: &Arc<Plan>, _why: Trigger) -> Result<(), String> {
        tokio::task::block_in_place(|| self.apply(plan));
        Ok(())
    }
}

fn clusterset_status(plan: &Plan) -> crate::control::ClusterSetStatus {
    use crate::control::{ClusterSetMemberStatus, ClusterSetServiceStatus, ClusterSetStatus};
    ClusterSetStatus {
        local: plan.local.clone(),
        problems: plan.clusterset_problems.clone(),
        // The status board adds the controller's own status.
        controller: None,
        services: plan
            .clusterset
            .iter()
            .map(|s| ClusterSetServiceStatus {
                namespace: s.namespace.clone(),
                name: s.name.clone(),
                headless: s.headless,
                ips: s.ips.iter().map(|ip| ip.to_string()).collect(),
                conflicts: s.conflicts.iter().map(|c| c.to_string()).collect(),
                members: s
                    .members
                    .iter()
                    .map(|m| ClusterSetMemberStatus {
                        cluster: m.cluster.clone(),
                        local: m.local,
                        tier: m.tier,
                        endpoints: m.endpoints.len(),
                        ready: m.endpoints.iter().filter(|e| e.ready).count(),
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// The DNS zones for one plan. Stale remotes: with `dns.serveStale: false` their zones answer
/// SERVFAIL and they leave the clusterset names.
pub fn dns_zones(cfg: &Config, plan: &Plan) -> crate::dns::Zones {
    let remotes: Vec<&str> = cfg.remotes.iter().map(|r| r.name.as_str()).collect();
    let failed: Vec<&str> = if cfg.dns.serve_stale {
        Vec::new()
    } else {
        plan.stale.iter().map(String::as_str).collect()
    };
    let d = &cfg.dns;
    let clusterset = cfg.mcs.enabled().then_some(plan.clusterset.as_slice());
    crate::dns::Zones::build_all(
        &remotes,
        &failed,
        &plan.desired.services,
        clusterset,
        &d.cluster_set_domain,
        d.ttl,
    )
}
