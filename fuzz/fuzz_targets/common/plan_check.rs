//! The invariants of `model::plan_with` (confinement), shared by the plan_confined and
//! config_parse targets. The config must be valid (`Config::validate`): the checks rely on its
//! CIDRs being disjoint between clusters.

use ipnetwork::IpNetwork;
use sdn_tunnel::cidr;
use sdn_tunnel::config::Config;
use sdn_tunnel::model::{key_owners, plan_with, Desired, KeyOwners, Snapshots};
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

/// An endpoint `plan` must never accept (its own rule, restated).
fn forbidden_endpoint(ip: IpAddr) -> Option<&'static str> {
    let ip = ip.to_canonical();
    match ip {
        _ if ip.is_unspecified() => Some("unspecified"),
        _ if ip.is_loopback() => Some("loopback"),
        _ if ip.is_multicast() => Some("multicast"),
        IpAddr::V4(a) if a.octets()[..2] == [169, 254] => Some("link-local"),
        IpAddr::V4(a) if a.octets() == [255; 4] => Some("broadcast"),
        IpAddr::V6(a) if a.segments()[0] & 0xffc0 == 0xfe80 => Some("link-local"),
        _ => None,
    }
}

/// Runs `plan_with` and checks its result; returns it.
pub fn check_plan(cfg: &Config, snaps: &Snapshots, owners: &KeyOwners) -> Desired {
    let d = plan_with(cfg, snaps, owners);
    assert_eq!(
        d,
        plan_with(cfg, snaps, owners),
        "plan is not deterministic"
    );

    let all: Vec<IpNetwork> = cfg.all_cidrs().copied().collect();
    let local: Vec<IpNetwork> = cfg
        .cluster
        .pod_cidrs
        .iter()
        .chain(&cfg.cluster.service_cidrs)
        .copied()
        .collect();
    let remote_of = |name: &str| cfg.remotes.iter().find(|r| r.name == name);

    // Routes: every remote's pod and service CIDRs (as networks), in order, once each.
    let mut routes = Vec::new();
    for r in &cfg.remotes {
        for n in r.pod_cidrs.iter().chain(&r.service_cidrs) {
            let n = cidr::network(n);
            if !routes.contains(&n) {
                routes.push(n);
            }
        }
    }
    assert_eq!(d.routes, routes, "routes");

    // Which remotes' snapshots claim each key (only remotes of the config count).
    let mut claims: HashMap<[u8; 32], HashSet<&str>> = HashMap::new();
    for r in &cfg.remotes {
        if let Some(s) = snaps.get(&r.name) {
            for n in &s.nodes {
                claims.entry(n.public_key).or_default().insert(&r.name);
            }
        }
    }

    let mut keys = HashSet::new();
    let mut nets: Vec<(IpNetwork, &str)> = Vec::new();
    for p in &d.peers {
        let remote = remote_of(&p.remote).expect("a peer of a remote not in the config");
        let snap = snaps
            .get(&p.remote)
            .expect("a peer of a remote without snapshot");
        assert!(keys.insert(p.public_key), "a key given to two peers: {p:?}");
        let claimers = &claims[&p.public_key];
        if claimers.len() > 1 {
            assert_eq!(
                owners.get(&p.public_key).map(String::as_str),
                Some(p.remote.as_str()),
                "a key claimed by {claimers:?} went to {} without owning it",
                p.remote
            );
        }
        // The peer is one of the remote's nodes, unchanged but for normalised CIDRs.
        assert!(
            snap.nodes.iter().any(|n| n.public_key == p.public_key
                && n.endpoint == p.endpoint
                && p.name == Some(n.name.clone()).filter(|s| !s.is_empty())
                && n.pod_cidrs.iter().map(cidr::network).collect::<Vec<_>>() == p.allowed_ips),
            "{p:?} is not a node of its snapshot"
        );
        assert_eq!(
            p.persistent_keepalive,
            Some(cfg.tunnel.persistent_keepalive).filter(|&k| k != 0)
        );
        assert!(!p.allowed_ips.is_empty(), "a peer without allowed IPs");
        for n in &p.allowed_ips {
            assert!(!cidr::has_host_bits(n), "{n}: host bits");
            assert!(
                remote.pod_cidrs.iter().any(|o| cidr::contains(o, n)),
                "{n} of {} outside its remote's podCIDRs",
                p.remote
            );
            for l in &local {
                assert!(!cidr::overlaps(l, n), "{n} overlaps our own {l}");
            }
            for (m, who) in &nets {
                assert!(!cidr::overlaps(m, n), "{n} overlaps {m} of {who}");
            }
        }
        nets.extend(p.allowed_ips.iter().map(|n| (*n, p.remote.as_str())));
        if let Some(ep) = p.endpoint {
            assert_eq!(
                forbidden_endpoint(ep.ip()),
                None,
                "endpoint {ep} of {}",
                p.remote
            );
            let ip = ep.ip().to_canonical();
            assert!(
                !all.iter().any(|c| c.contains(ip)),
                "endpoint {ep} inside a configured range"
            );
        }
    }

    // Services, per remote in snapshot order: refused when a ClusterIP is outside the
    // remote's serviceCIDRs, else kept with the endpoints outside its podCIDRs dropped.
    // Accounting: every node and service is programmed or rejected, every dropped endpoint
    // reported.
    let mut want_rejected = 0;
    for r in &cfg.remotes {
        let Some(s) = snaps.get(&r.name) else {
            assert!(d.services.iter().all(|x| x.remote != r.name));
            continue;
        };
        let inside = |ip: &IpAddr, nets: &[IpNetwork]| nets.iter().any(|n| n.contains(*ip));
        let mut want = Vec::new();
        let mut refused = 0;
        let mut dropped = 0;
        for o in &s.services {
            if !o.cluster_ips.iter().all(|ip| inside(ip, &r.service_cidrs)) {
                refused += 1;
                continue;
            }
            let mut kept = o.clone();
            kept.endpoints.retain(|e| inside(&e.ip, &r.pod_cidrs));
            dropped += o.endpoints.len() - kept.endpoints.len();
            want.push(kept);
        }
        let got: Vec<_> = d
            .services
            .iter()
            .filter(|x| x.remote == r.name)
            .map(|x| x.service.clone())
            .collect();
        assert_eq!(got, want, "services of {}", r.name);
        let peers = d.peers.iter().filter(|p| p.remote == r.name).count();
        want_rejected += s.rejected.len() + (s.nodes.len() - peers) + refused + dropped;
    }
    assert!(d.services.iter().all(|x| remote_of(&x.remote).is_some()));
    assert_eq!(d.rejected.len(), want_rejected, "rejections do not add up");
    for r in &d.rejected {
        assert!(!r.reason.is_empty() && !r.object.is_empty(), "{r:?}");
    }

    // Re-planning with the owners this plan establishes keeps the same peers (the agent feeds
    // each plan's owners into the next).
    let again = plan_with(cfg, snaps, &key_owners(&d));
    assert_eq!(
        again.peers, d.peers,
        "plan is not a fixpoint of its own key owners"
    );
    d
}
