//! Pure diff for the IPVS backend: desired virtual services vs. what the kernel holds (ours
//! only) -> the smallest list of IPVS requests. Running it on its own output yields nothing,
//! so it is idempotent, and a restarted agent that finds its services adopts them unchanged.
//!
//! Graceful termination (like kube-proxy): a backend that leaves (or is terminating, or whose
//! tunnel peer is down) first gets weight 0, so it takes no new connections while existing
//! ones finish; a departed backend is deleted once it has no connections left, or after the
//! drain timeout.

use super::ipvs::{Destination, Protocol as IpvsProtocol, Request, Scheduler, Service};
use super::ipvs::{ServiceFlags, ServiceKey};
use super::model::{BackendState, VirtualService};
use crate::model::Protocol;
use ipnetwork::IpNetwork;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// What the kernel holds for one of our services.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub service: Service,
    pub dests: Vec<Destination>,
}

/// Departed backends being drained: (service, backend) -> when draining started.
pub type DrainSet = HashMap<(ServiceKey, SocketAddr), Instant>;

pub fn key(vs: &VirtualService) -> ServiceKey {
    ServiceKey::Addr {
        protocol: match vs.protocol {
            Protocol::Tcp => IpvsProtocol::Tcp,
            Protocol::Udp => IpvsProtocol::Udp,
            Protocol::Sctp => IpvsProtocol::Sctp,
        },
        addr: vs.vip,
    }
}

/// Ours = an address service whose VIP lies in a remote's service CIDR. Never touch others.
pub fn is_ours(key: &ServiceKey, remote_service_cidrs: &[IpNetwork]) -> bool {
    match key {
        ServiceKey::Addr { addr, .. } => remote_service_cidrs.iter().any(|n| n.contains(addr.ip())),
        ServiceKey::Fwmark { .. } => false,
    }
}

/// The kernel service we want for `vs`.
pub fn desired_service(vs: &VirtualService, scheduler: &Scheduler) -> Service {
    let mut s = Service::new(key(vs), scheduler.clone());
    if let Some(t) = vs.affinity_timeout {
        s.flags = ServiceFlags::PERSISTENT;
        s.timeout = t;
    }
    s
}

fn weight(state: BackendState) -> u32 {
    match state {
        BackendState::Active => 1,
        BackendState::Draining | BackendState::PeerDown | BackendState::Standby => 0,
    }
}

/// The requests that turn `held` (our services in the kernel, by key) into `desired`.
/// `draining` is updated: departed backends enter it when set to weight 0 and leave it when
/// deleted (or when they come back). Held services inside `protected` (the service CIDRs of
/// remotes not synced since we started) are never deleted: after a restart, a remote whose API
/// is slow or down must not lose its services.
pub fn diff(
    desired: &[VirtualService],
    scheduler: &Scheduler,
    held: &HashMap<ServiceKey, Held>,
    draining: &mut DrainSet,
    now: Instant,
    drain_timeout: Duration,
    protected: &[IpNetwork],
) -> Vec<Request> {
    let mut reqs = Vec::new();
    let mut wanted_keys = std::collections::HashSet::with_capacity(desired.len());
    for vs in desired {
        let want = desired_service(vs, scheduler);
        let k = want.key;
        wanted_keys.insert(k);
        let old = held.get(&k);
        match old {
            None => reqs.push(Request::AddService(want.clone())),
            Some(h) if !same_service(&h.service, &want) => {
                reqs.push(Request::UpdateService(want.clone()))
            }
            Some(_) => {}
        }
        let old_dests: &[Destination] = old.map(|h| h.dests.as_slice()).unwrap_or_default();
        for b in &vs.backends {
            let w = weight(b.state);
            draining.remove(&(k, b.addr));
            match old_dests.iter().find(|d| d.addr == b.addr) {
                None => reqs.push(Request::AddDestination(k, Destination::new(b.addr, w))),
                Some(d) if d.weight != w || !plain(d) => {
                    reqs.push(Request::UpdateDestination(k, Destination::new(b.addr, w)))
                }
                Some(_) => {}
            }
        }
        for d in old_dests {
            if vs.backends.iter().any(|b| b.addr == d.addr) {
                continue;
            }
            // Departed: quiesce first, delete once drained.
            let since = *draining.entry((k, d.addr)).or_insert(now);
            if d.weight != 0 {
                reqs.push(Request::UpdateDestination(k, Destination::new(d.addr, 0)));
            } else if d.active_conns + d.inactive_conns == 0
                || now.duration_since(since) >= drain_timeout
            {
                reqs.push(Request::DeleteDestination(k, d.addr));
                draining.remove(&(k, d.addr));
            }
        }
    }
    for k in held.keys() {
        if !wanted_keys.contains(k) && !is_ours(k, protected) {
            reqs.push(Request::DeleteService(*k));
        }
    }
    draining.retain(|(k, _), _| wanted_keys.contains(k));
    reqs
}

fn same_service(a: &Service, b: &Service) -> bool {
    a.scheduler == b.scheduler
        && a.flags == b.flags
        && (!a.flags.contains(ServiceFlags::PERSISTENT) || a.timeout == b.timeout)
}

/// Masquerade with no thresholds: what we program (someone may have edited it).
fn plain(d: &Destination) -> bool {
    let want = Destination::new(d.addr, d.weight);
    d.forward == want.forward
        && d.upper_threshold == want.upper_threshold
        && d.lower_threshold == want.lower_threshold
}

/// Applies successful requests to `held`, so the next diff starts from the new state.
pub fn record(held: &mut HashMap<ServiceKey, Held>, req: &Request) {
    match req {
        Request::AddService(s) => {
            held.insert(
                s.key,
                Held {
                    service: s.clone(),
                    dests: vec![],
                },
            );
        }
        Request::UpdateService(s) => {
            if let Some(h) = held.get_mut(&s.key) {
                h.service = s.clone();
            }
        }
        Request::DeleteService(k) => {
            held.remove(k);
        }
        Request::AddDestination(k, d) | Request::UpdateDestination(k, d) => {
            if let Some(h) = held.get_mut(k) {
                match h.dests.iter_mut().find(|x| x.addr == d.addr) {
                    Some(x) => {
                        x.weight = d.weight;
                        x.forward = d.forward;
                        x.upper_threshold = d.upper_threshold;
                        x.lower_threshold = d.lower_threshold;
                    }
                    None => h.dests.push(d.clone()),
                }
            }
        }
        Request::DeleteDestination(k, a) => {
            if let Some(h) = held.get_mut(k) {
                h.dests.retain(|d| d.addr != *a);
            }
        }
        Request::SetTimeouts(_) | Request::Flush => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::model::Backend;

    fn vs(vip: &str, backends: &[(&str, BackendState)], affinity: Option<u32>) -> VirtualService {
        VirtualService {
            remote: "west".into(),
            namespace: "default".into(),
            name: "web".into(),
            port_name: "http".into(),
            vip: vip.parse().unwrap(),
            protocol: Protocol::Tcp,
            affinity_timeout: affinity,
            backends: backends
                .iter()
                .map(|(a, s)| Backend {
                    addr: a.parse().unwrap(),
                    node: Some("b1".into()),
                    state: *s,
                })
                .collect(),
        }
    }

    fn apply_all(held: &mut HashMap<ServiceKey, Held>, reqs: &[Request]) {
        for r in reqs {
            record(held, r);
        }
    }

    use BackendState::*;
    const T: Duration = Duration::from_secs(60);

    #[test]
    fn creates_then_idempotent() {
        let rr = Scheduler::RoundRobin;
        let d = vec![vs(
            "172.31.0.10:80",
            &[("10.132.1.5:8080", Active), ("10.132.2.5:8080", PeerDown)],
            Some(30),
        )];
        let mut held = HashMap::new();
        let mut dr = DrainSet::new();
        let now = Instant::now();
        let reqs = diff(&d, &rr, &held, &mut dr, now, T, &[]);
        assert_eq!(reqs.len(), 3, "{reqs:?}");
        match &reqs[0] {
            Request::AddService(s) => {
                assert!(s.flags.contains(ServiceFlags::PERSISTENT));
                assert_eq!(s.timeout, 30);
                assert_eq!(s.scheduler, Scheduler::RoundRobin);
            }
            r => panic!("{r:?}"),
        }
        match &reqs[2] {
            Request::AddDestination(_, dst) => assert_eq!(dst.weight, 0),
            r => panic!("{r:?}"),
        }
        apply_all(&mut held, &reqs);
        assert!(diff(&d, &rr, &held, &mut dr, now, T, &[]).is_empty());
    }

    #[test]
    fn departed_backend_drains_then_goes() {
        let rr = Scheduler::RoundRobin;
        let two = vec![vs(
            "172.31.0.10:80",
            &[("10.132.1.5:8080", Active), ("10.132.1.6:8080", Active)],
            None,
        )];
        let one = vec![vs("172.31.0.10:80", &[("10.132.1.5:8080", Active)], None)];
        let mut held = HashMap::new();
        let mut dr = DrainSet::new();
        let t0 = Instant::now();
        let r = diff(&two, &rr, &held, &mut dr, t0, T, &[]);
        apply_all(&mut held, &r);
        // .6 leaves: weight 0, not deleted.
        let r = diff(&one, &rr, &held, &mut dr, t0, T, &[]);
        assert_eq!(r.len(), 1);
        assert!(matches!(&r[0], Request::UpdateDestination(_, d) if d.weight == 0));
        apply_all(&mut held, &r);
        // Still has a connection: stays.
        let k = key(&one[0]);
        held.get_mut(&k).unwrap().dests[1].active_conns = 1;
        assert!(diff(
            &one,
            &rr,
            &held,
            &mut dr,
            t0 + Duration::from_secs(5),
            T,
            &[]
        )
        .is_empty());
        // Connections gone: deleted.
        held.get_mut(&k).unwrap().dests[1].active_conns = 0;
        let r = diff(
            &one,
            &rr,
            &held,
            &mut dr,
            t0 + Duration::from_secs(6),
            T,
            &[],
        );
        assert_eq!(
            r,
            vec![Request::DeleteDestination(
                k,
                "10.132.1.6:8080".parse().unwrap()
            )]
        );
        apply_all(&mut held, &r);
        assert!(dr.is_empty());
        assert!(diff(
            &one,
            &rr,
            &held,
            &mut dr,
            t0 + Duration::from_secs(7),
            T,
            &[]
        )
        .is_empty());
    }

    #[test]
    fn drain_timeout_deletes_busy_backends() {
        let rr = Scheduler::RoundRobin;
        let one = vec![vs("172.31.0.10:80", &[("10.132.1.5:8080", Active)], None)];
        let k = key(&one[0]);
        let mut busy = Destination::new("10.132.1.6:8080".parse().unwrap(), 0);
        busy.inactive_conns = 7;
        let mut held = HashMap::from([(
            k,
            Held {
                service: desired_service(&one[0], &rr),
                dests: vec![
                    Destination::new("10.132.1.5:8080".parse().unwrap(), 1),
                    busy,
                ],
            },
        )]);
        let mut dr = DrainSet::new();
        let t0 = Instant::now();
        assert!(diff(&one, &rr, &held, &mut dr, t0, T, &[]).is_empty());
        let r = diff(&one, &rr, &held, &mut dr, t0 + T, T, &[]);
        assert!(matches!(r[..], [Request::DeleteDestination(..)]));
        apply_all(&mut held, &r);
    }

    #[test]
    fn service_changes_and_removal() {
        let rr = Scheduler::RoundRobin;
        let a = vec![vs("172.31.0.10:80", &[("10.132.1.5:8080", Active)], None)];
        let mut held = HashMap::new();
        let mut dr = DrainSet::new();
        let now = Instant::now();
        let r = diff(&a, &rr, &held, &mut dr, now, T, &[]);
        apply_all(&mut held, &r);
        // Affinity switched on: update in place, backends untouched.
        let b = vec![vs(
            "172.31.0.10:80",
            &[("10.132.1.5:8080", Active)],
            Some(10),
        )];
        let r = diff(&b, &rr, &held, &mut dr, now, T, &[]);
        assert!(matches!(r[..], [Request::UpdateService(_)]), "{r:?}");
        apply_all(&mut held, &r);
        // A terminating backend stays listed with weight 0.
        let c = vec![vs(
            "172.31.0.10:80",
            &[("10.132.1.5:8080", Draining)],
            Some(10),
        )];
        let r = diff(&c, &rr, &held, &mut dr, now, T, &[]);
        assert!(matches!(&r[..], [Request::UpdateDestination(_, d)] if d.weight == 0));
        apply_all(&mut held, &r);
        // Its remote hasn't synced since a restart: kept.
        let protected: Vec<IpNetwork> = vec!["172.31.0.0/16".parse().unwrap()];
        assert!(diff(&[], &rr, &held, &mut dr, now, T, &protected).is_empty());
        // Gone entirely.
        let r = diff(&[], &rr, &held, &mut dr, now, T, &[]);
        assert!(matches!(r[..], [Request::DeleteService(_)]));
        apply_all(&mut held, &r);
        assert!(held.is_empty());
    }

    #[test]
    fn ownership_by_service_cidr_only() {
        let cidrs: Vec<IpNetwork> = vec!["172.31.0.0/16".parse().unwrap()];
        assert!(is_ours(
            &ServiceKey::tcp("172.31.5.5:80".parse().unwrap()),
            &cidrs
        ));
        assert!(!is_ours(
            &ServiceKey::tcp("10.96.0.1:443".parse().unwrap()),
            &cidrs
        ));
        assert!(!is_ours(
            &ServiceKey::Fwmark {
                ipv6: false,
                mark: 1
            },
            &cidrs
        ));
    }
}
