use super::*;
use crate::model::EndpointPort;
use std::sync::Arc;

fn svc(
    ns: &str,
    name: &str,
    headless: bool,
    ports: &[(&str, u16)],
    eps: &[&str],
    since: i64,
) -> RemoteService {
    let ports: Vec<ServicePort> = ports
        .iter()
        .map(|(n, p)| ServicePort {
            name: n.to_string(),
            port: *p,
            protocol: Protocol::Tcp,
        })
        .collect();
    let eports: Vec<EndpointPort> = ports
        .iter()
        .map(|p| EndpointPort {
            name: p.name.clone(),
            port: 8000 + p.port,
            protocol: p.protocol,
        })
        .collect();
    RemoteService {
        namespace: ns.into(),
        name: name.into(),
        cluster_ips: if headless {
            vec![]
        } else {
            vec!["10.96.0.10".parse().unwrap()]
        },
        headless,
        ports,
        affinity_timeout: None,
        endpoints: eps
            .iter()
            .map(|ip| Endpoint {
                ip: ip.parse().unwrap(),
                node_name: Some("n1".into()),
                ready: true,
                serving: true,
                terminating: false,
                ports: Arc::from(eports.clone()),
            })
            .collect(),
        exported_since: Some(since),
        internal_traffic_policy: None,
        traffic_distribution: None,
    }
}

fn mcs(cidrs: &[&str]) -> McsConfig {
    McsConfig {
        cluster_set_cidrs: cidrs.iter().map(|c| c.parse().unwrap()).collect(),
        failover_order: BTreeMap::new(),
        ..Default::default()
    }
}

fn exports<'a>(cluster: &'a str, local: bool, services: &'a [RemoteService]) -> ClusterExports<'a> {
    ClusterExports {
        cluster,
        local,
        services: services.iter().collect(),
    }
}

#[test]
fn one_clusterset_ip_per_family_and_the_local_cluster_first() {
    let a = [svc(
        "default",
        "web",
        false,
        &[("http", 80)],
        &["10.1.0.5"],
        10,
    )];
    let b = [svc(
        "default",
        "web",
        false,
        &[("http", 80)],
        &["10.2.0.5"],
        20,
    )];
    let c = [svc(
        "default",
        "web",
        false,
        &[("http", 80)],
        &["10.3.0.5"],
        30,
    )];
    let cfg = mcs(&["10.250.0.0/16", "fd00:250::/64"]);
    let (out, problems) = build(
        &cfg,
        &[
            exports("b", true, &b),
            exports("a", false, &a),
            exports("c", false, &c),
        ],
    );
    assert!(problems.is_empty());
    assert_eq!(out.len(), 1);
    let s = &out[0];
    assert_eq!(s.ips.len(), 2);
    assert!(s.ips[0].is_ipv4() && s.ips[1].is_ipv6());
    let members: Vec<(&str, u32)> = s
        .members
        .iter()
        .map(|m| (m.cluster.as_str(), m.tier))
        .collect();
    assert_eq!(members, [("b", 0), ("a", 1), ("c", 1)]);
    assert!(s.conflicts.is_empty());
}

#[test]
fn every_cluster_computes_the_same_ips() {
    let a = [
        svc("default", "web", false, &[("http", 80)], &["10.1.0.5"], 10),
        svc("shop", "cart", false, &[("http", 80)], &["10.1.0.6"], 10),
    ];
    let b = [
        svc("default", "web", false, &[("http", 80)], &["10.2.0.5"], 20),
        svc("shop", "db", false, &[("pg", 5432)], &["10.2.0.6"], 20),
    ];
    let cfg = mcs(&["10.250.0.0/24"]);
    let ips = |out: Vec<ClusterSetService>| -> Vec<(String, Vec<IpAddr>)> {
        out.into_iter().map(|s| (s.key(), s.ips)).collect()
    };
    let (from_a, _) = build(&cfg, &[exports("a", true, &a), exports("b", false, &b)]);
    let (from_b, _) = build(&cfg, &[exports("b", true, &b), exports("a", false, &a)]);
    assert_eq!(ips(from_a.clone()), ips(from_b));
    assert_eq!(from_a.len(), 3);
    // Distinct, inside the CIDR.
    let all: std::collections::BTreeSet<IpAddr> = from_a.iter().map(|s| s.ips[0]).collect();
    assert_eq!(all.len(), 3);
    let cidr: ipnetwork::IpNetwork = "10.250.0.0/24".parse().unwrap();
    assert!(all.iter().all(|ip| cidr.contains(*ip)));
}

#[test]
fn headless_services_get_no_ip() {
    let a = [svc(
        "default",
        "db",
        true,
        &[("pg", 5432)],
        &["10.1.0.5"],
        10,
    )];
    let (out, _) = build(&mcs(&["10.250.0.0/24"]), &[exports("a", true, &a)]);
    assert!(out[0].headless);
    assert!(out[0].ips.is_empty());
}

#[test]
fn failover_order_puts_remotes_in_tiers_and_unlisted_last() {
    let a = [svc(
        "default",
        "web",
        false,
        &[("http", 80)],
        &["10.1.0.5"],
        10,
    )];
    let b = [svc(
        "default",
        "web",
        false,
        &[("http", 80)],
        &["10.2.0.5"],
        10,
    )];
    let c = [svc(
        "default",
        "web",
        false,
        &[("http", 80)],
        &["10.3.0.5"],
        10,
    )];
    let mut cfg = mcs(&["10.250.0.0/24"]);
    cfg.failover_order
        .insert("default/web".into(), vec!["c".into()]);
    let (out, _) = build(
        &cfg,
        &[
            exports("a", true, &a),
            exports("b", false, &b),
            exports("c", false, &c),
        ],
    );
    let members: Vec<(&str, u32)> = out[0]
        .members
        .iter()
        .map(|m| (m.cluster.as_str(), m.tier))
        .collect();
    assert_eq!(members, [("a", 0), ("c", 1), ("b", 2)]);
}

#[test]
fn the_oldest_export_wins_a_type_conflict() {
    // b exported first, as headless: a's ClusterIP export is left out and the service has no IP.
    let a = [svc(
        "default",
        "web",
        false,
        &[("http", 80)],
        &["10.1.0.5"],
        20,
    )];
    let b = [svc(
        "default",
        "web",
        true,
        &[("http", 80)],
        &["10.2.0.5"],
        10,
    )];
    let (out, _) = build(
        &mcs(&["10.250.0.0/24"]),
        &[exports("a", true, &a), exports("b", false, &b)],
    );
    let s = &out[0];
    assert!(s.headless);
    assert!(s.ips.is_empty());
    assert_eq!(s.conflicts, ["TypeConflict"]);
    let members: Vec<&str> = s.members.iter().map(|m| m.cluster.as_str()).collect();
    assert_eq!(members, ["b"]);
}

#[test]
fn port_conflicts_keep_each_port_with_its_clusters() {
    let a = [svc(
        "default",
        "web",
        false,
        &[("http", 80)],
        &["10.1.0.5"],
        10,
    )];
    let b = [svc(
        "default",
        "web",
        false,
        &[("http", 8080)],
        &["10.2.0.5"],
        20,
    )];
    let (out, _) = build(
        &mcs(&["10.250.0.0/24"]),
        &[exports("a", true, &a), exports("b", false, &b)],
    );
    let s = &out[0];
    assert_eq!(s.conflicts, ["PortConflict"]);
    let ports: Vec<(u16, Vec<String>)> = s
        .ports
        .iter()
        .map(|p| (p.port.port, p.clusters.clone()))
        .collect();
    assert!(ports.contains(&(80, vec!["a".to_string()])), "{ports:?}");
}

#[test]
fn a_cidr_too_small_is_a_problem_not_a_panic() {
    let a = [
        svc("default", "a", false, &[("http", 80)], &[], 1),
        svc("default", "b", false, &[("http", 80)], &[], 1),
        svc("default", "c", false, &[("http", 80)], &[], 1),
    ];
    let (out, problems) = build(&mcs(&["10.250.0.0/30"]), &[exports("a", true, &a)]);
    assert_eq!(out.len(), 3);
    assert!(out.iter().all(|s| s.ips.is_empty()));
    assert_eq!(problems.len(), 1);
    assert!(problems[0].contains("10.250.0.0/30"), "{problems:?}");
}
