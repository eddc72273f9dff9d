//! Remote services for the DNS tests.

use sdn_tunnel::model::DesiredService;
use sdn_tunnel::source::{Endpoint, Protocol, RemoteService, ServicePort};

/// `default/<name>` of `remote` with one port `http` 80/TCP; headless when `ips` is empty.
pub fn service(remote: &str, name: &str, ips: &[&str], endpoints: Vec<Endpoint>) -> DesiredService {
    DesiredService {
        remote: remote.into(),
        service: RemoteService {
            namespace: "default".into(),
            name: name.into(),
            cluster_ips: ips.iter().map(|i| i.parse().unwrap()).collect(),
            headless: ips.is_empty(),
            ports: vec![ServicePort {
                name: "http".into(),
                port: 80,
                protocol: Protocol::Tcp,
            }],
            affinity_timeout: None,
            endpoints,
        },
    }
}
