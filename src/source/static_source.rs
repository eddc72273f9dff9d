//! The static source: peers written in the config file become a snapshot of the same type the
//! kube source produces. Peers the source cannot parse are rejected here (the config validator
//! refuses them too; this is defense in depth for callers that skip validation).

use super::{
    Endpoint, EndpointPort, Rejected, RemoteNode, RemoteService, RemoteSnapshot, ServicePort,
    SourceHealth, SourceKind,
};
use crate::config::{RemoteConfig, StaticPeer, StaticService};
use crate::{cidr, keys};

pub fn snapshot(remote: &RemoteConfig) -> RemoteSnapshot {
    let mut snap = RemoteSnapshot::default();
    for p in remote.static_source.iter().flat_map(|s| &s.peers) {
        match node(p) {
            Ok(n) => snap.nodes.push(n),
            Err(reason) => snap.rejected.push(Rejected {
                remote: remote.name.clone(),
                object: label(p),
                reason,
            }),
        }
    }
    for svc in remote.static_source.iter().flat_map(|s| &s.services) {
        snap.services.push(service(svc));
    }
    snap.services
        .sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    snap
}

fn service(s: &StaticService) -> RemoteService {
    let mut cluster_ips = s.cluster_ips.clone();
    if let Some(ip) = s.cluster_ip {
        if !cluster_ips.contains(&ip) {
            cluster_ips.insert(0, ip);
        }
    }
    let ports: Vec<ServicePort> = s
        .ports
        .iter()
        .map(|p| ServicePort {
            name: p.name.clone(),
            port: p.port,
            protocol: p.protocol,
        })
        .collect();
    let endpoints = s
        .endpoints
        .iter()
        .map(|e| Endpoint {
            ip: e.ip,
            node_name: e.node_name.clone(),
            ready: e.ready && !e.terminating,
            serving: e.ready,
            terminating: e.terminating,
            ports: ports
                .iter()
                .map(|p| EndpointPort {
                    name: p.name.clone(),
                    port: e.ports.get(&p.name).copied().unwrap_or(p.port),
                    protocol: p.protocol,
                })
                .collect::<Vec<_>>()
                .into(),
        })
        .collect();
    RemoteService {
        namespace: s.namespace.clone(),
        name: s.name.clone(),
        headless: cluster_ips.is_empty(),
        cluster_ips,
        ports,
        affinity_timeout: s.session_affinity_timeout,
        endpoints,
        exported_since: None,
        internal_traffic_policy: None,
        traffic_distribution: None,
    }
}

/// A static remote is always synced and never stale.
pub fn health() -> SourceHealth {
    SourceHealth {
        synced: true,
        last_sync_unix: Some(super::now_unix()),
        ..SourceHealth::new(SourceKind::Static)
    }
}

fn node(p: &StaticPeer) -> Result<RemoteNode, String> {
    let public_key = keys::parse_key(&p.public_key).map_err(|e| format!("publicKey: {e}"))?;
    let endpoint = p.endpoint_addr().map_err(|e| format!("endpoint: {e}"))?;
    Ok(RemoteNode {
        name: p.name.clone().unwrap_or_default(),
        public_key,
        endpoint,
        pod_cidrs: p.pod_cidrs.iter().map(cidr::network).collect(),
    })
}

/// Static peers are labelled by name, else by key ("peer b1", as in earlier releases).
fn label(p: &StaticPeer) -> String {
    format!("peer {}", p.name.as_deref().unwrap_or(&p.public_key))
}

/// The snapshots of the config's static remotes (live remotes are added by their sources).
pub fn snapshots(cfg: &crate::config::Config) -> crate::model::Snapshots {
    cfg.remotes
        .iter()
        .filter(|r| r.static_source.is_some())
        .map(|r| (r.name.clone(), std::sync::Arc::new(snapshot(r))))
        .collect()
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn static_services_become_the_same_model_as_kube_ones() {
        let cfg = Config::parse(
            "cluster: {name: east, podCIDRs: [10.128.0.0/14]}\nnode: {name: a1}\n\
             remotes:\n- name: west\n  podCIDRs: [10.132.0.0/14]\n  serviceCIDRs: [172.31.0.0/16]\n  \
             static:\n    services:\n    - {namespace: default, name: web, clusterIP: 172.31.0.10,\n       \
             ports: [{name: http, port: 80, protocol: TCP}, {name: dns, port: 53, protocol: UDP}],\n       \
             sessionAffinityTimeout: 30,\n       \
             endpoints: [{ip: 10.132.0.5, nodeName: b1, ports: {http: 8080}},\n                   \
             {ip: 10.132.0.6, terminating: true}]}\n",
            None,
        )
        .unwrap();
        let snap = super::snapshot(&cfg.remotes[0]);
        let s = &snap.services[0];
        assert_eq!(s.key(), "default/web");
        assert_eq!(
            s.cluster_ips,
            vec!["172.31.0.10".parse::<std::net::IpAddr>().unwrap()]
        );
        assert_eq!(s.affinity_timeout, Some(30));
        let e = &s.endpoints[0];
        assert!(e.ready && !e.terminating);
        assert_eq!(e.node_name.as_deref(), Some("b1"));
        assert_eq!((e.ports[0].name.as_str(), e.ports[0].port), ("http", 8080));
        // Not listed: the target port is the service port.
        assert_eq!((e.ports[1].name.as_str(), e.ports[1].port), ("dns", 53));
        assert!(!s.endpoints[1].ready && s.endpoints[1].terminating);
    }
}
