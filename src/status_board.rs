//! Where each stage of the agent publishes its own status: one `watch` channel per stage, one
//! writer each (the planner's applier, the proxy, the advertisement, DNS start-up). Readers
//! (the control socket behind `status`, `/metrics`, `/readyz`) take one [`AgentFacts`] snapshot
//! assembled from the latest value of every channel; none of them computes what a stage owns.

use crate::control::{
    AdvertiseStatus, AgentFacts, ClusterSetStatus, McsControllerStatus, ProxyStatus, RemoteStatus,
};
use crate::model::Rejected;
use tokio::sync::watch;

/// What the plan applier publishes: the remotes as planned and what the plan rejected.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PlanStatus {
    pub remotes: Vec<RemoteStatus>,
    pub rejected: Vec<Rejected>,
    pub clusterset: Option<ClusterSetStatus>,
}

/// The DNS responder's listen address and the running responder (or why it is not running).
pub type DnsState = (String, Result<crate::dns::DnsHandle, String>);

/// Facts fixed at start-up.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    pub cluster: String,
    pub node: String,
    pub started_at_unix: u64,
}

/// The read side: one receiver per stage.
pub struct StatusBoard {
    identity: Identity,
    plan: watch::Receiver<PlanStatus>,
    proxy: watch::Receiver<Option<ProxyStatus>>,
    advertisement: watch::Receiver<Option<AdvertiseStatus>>,
    dns: watch::Receiver<Option<DnsState>>,
    mcs: watch::Receiver<Option<McsControllerStatus>>,
}

/// The write side, handed out one field per stage (each stage owns its sender).
pub struct Publishers {
    pub plan: watch::Sender<PlanStatus>,
    pub proxy: watch::Sender<Option<ProxyStatus>>,
    pub advertisement: watch::Sender<Option<AdvertiseStatus>>,
    pub dns: watch::Sender<Option<DnsState>>,
    pub mcs: watch::Sender<Option<McsControllerStatus>>,
}

impl StatusBoard {
    pub fn new(identity: Identity) -> (StatusBoard, Publishers) {
        let (plan_tx, plan) = watch::channel(PlanStatus::default());
        let (proxy_tx, proxy) = watch::channel(None);
        let (adv_tx, advertisement) = watch::channel(None);
        let (dns_tx, dns) = watch::channel(None);
        let (mcs_tx, mcs) = watch::channel(None);
        (
            StatusBoard {
                identity,
                plan,
                proxy,
                advertisement,
                dns,
                mcs,
            },
            Publishers {
                plan: plan_tx,
                proxy: proxy_tx,
                advertisement: adv_tx,
                dns: dns_tx,
                mcs: mcs_tx,
            },
        )
    }

    /// One consistent-enough snapshot: each stage's latest value (the proxy's table is shared,
    /// not copied).
    pub fn facts(&self) -> AgentFacts {
        let plan = self.plan.borrow().clone();
        AgentFacts {
            cluster: self.identity.cluster.clone(),
            node: self.identity.node.clone(),
            started_at_unix: self.identity.started_at_unix,
            rejected: plan.rejected,
            remotes: plan.remotes,
            clusterset: plan.clusterset.map(|mut c| {
                c.controller = self.mcs.borrow().clone();
                c
            }),
            advertisement: self.advertisement.borrow().clone(),
            proxy: self.proxy.borrow().clone(),
            dns: self.dns.borrow().clone(),
        }
    }

    /// Only the remotes (readiness reads them on every probe).
    pub fn remotes(&self) -> Vec<RemoteStatus> {
        self.plan.borrow().remotes.clone()
    }
}

/// Updates an optional status in place, creating it with `init` first.
pub fn update<T>(tx: &watch::Sender<Option<T>>, init: impl FnOnce() -> T, f: impl FnOnce(&mut T)) {
    tx.send_modify(|s| f(s.get_or_insert_with(init)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_assemble_each_stage_latest_value() {
        let (board, publish) = StatusBoard::new(Identity {
            cluster: "east".into(),
            node: "e1".into(),
            started_at_unix: 7,
        });
        let f = board.facts();
        assert_eq!((f.cluster.as_str(), f.started_at_unix), ("east", 7));
        assert!(f.proxy.is_none() && f.remotes.is_empty());

        update(
            &publish.proxy,
            || ProxyStatus {
                backend: "ipvs".into(),
                ..Default::default()
            },
            |s| s.virtual_services = 3,
        );
        update(&publish.proxy, ProxyStatus::default, |s| s.real_servers = 5);
        publish
            .dns
            .send_replace(Some(("127.0.0.1:53".into(), Err("busy".into()))));
        let f = board.facts();
        let p = f.proxy.expect("proxy status");
        // Created once with the first initialiser, then updated in place.
        assert_eq!(
            (p.backend.as_str(), p.virtual_services, p.real_servers),
            ("ipvs", 3, 5)
        );
        assert!(matches!(f.dns, Some((_, Err(ref e))) if e == "busy"));
    }
}
