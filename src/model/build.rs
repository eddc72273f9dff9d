//! Builders of the snapshot vocabulary, for tests (unit, integration, benchmarks) and examples:
//! one place that knows how a plain service or endpoint looks, so a new field is added once.
//!
//! ```
//! use sdn_tunnel::model::{build, Protocol};
//! let svc = build::service("default", "web")
//!     .with_ips(&["10.101.0.10"])
//!     .with_port("dns", 53, Protocol::Udp)
//!     .with_endpoints(vec![build::endpoint("10.132.0.5").on_node("b1")])
//!     .of("west");
//! assert_eq!(svc.service.ports.len(), 2);
//! ```

use super::{DesiredService, Endpoint, EndpointPort, Protocol, RemoteService, ServicePort};
use std::sync::Arc;

/// `namespace/name`: headless (no ClusterIP), one port `http` 80/TCP, no endpoints.
pub fn service(namespace: &str, name: &str) -> RemoteService {
    RemoteService {
        namespace: namespace.into(),
        name: name.into(),
        cluster_ips: Vec::new(),
        headless: true,
        ports: vec![ServicePort {
            name: "http".into(),
            port: 80,
            protocol: Protocol::Tcp,
        }],
        affinity_timeout: None,
        endpoints: Vec::new(),
        exported_since: None,
        internal_traffic_policy: None,
        traffic_distribution: None,
    }
}

/// A ready, serving endpoint at `ip` with one port `http` 8080/TCP, on no node.
pub fn endpoint(ip: &str) -> Endpoint {
    Endpoint {
        ip: ip
            .parse()
            .unwrap_or_else(|e| panic!("endpoint ip {ip}: {e}")),
        node_name: None,
        ready: true,
        serving: true,
        terminating: false,
        ports: Arc::from(vec![EndpointPort {
            name: "http".into(),
            port: 8080,
            protocol: Protocol::Tcp,
        }]),
    }
}

impl RemoteService {
    /// ClusterIPs (IPv4 or IPv6 literals); an empty list keeps it headless.
    pub fn with_ips(mut self, ips: &[&str]) -> Self {
        self.cluster_ips = ips
            .iter()
            .map(|i| i.parse().unwrap_or_else(|e| panic!("cluster ip {i}: {e}")))
            .collect();
        self.headless = ips.is_empty();
        self
    }

    /// One more port.
    pub fn with_port(mut self, name: &str, port: u16, protocol: Protocol) -> Self {
        self.ports.push(ServicePort {
            name: name.into(),
            port,
            protocol,
        });
        self
    }

    /// Replaces the ports.
    pub fn with_ports(mut self, ports: Vec<ServicePort>) -> Self {
        self.ports = ports;
        self
    }

    pub fn with_endpoints(mut self, endpoints: Vec<Endpoint>) -> Self {
        self.endpoints = endpoints;
        self
    }

    /// As planned for `remote`.
    pub fn of(self, remote: &str) -> DesiredService {
        DesiredService {
            remote: remote.into(),
            service: self,
        }
    }
}

impl Endpoint {
    pub fn on_node(mut self, node: &str) -> Self {
        self.node_name = Some(node.into());
        self
    }

    /// Neither ready nor serving.
    pub fn not_ready(mut self) -> Self {
        self.ready = false;
        self.serving = false;
        self
    }

    /// Replaces the ports (an empty list: no named ports).
    pub fn with_ports(mut self, ports: Vec<EndpointPort>) -> Self {
        self.ports = Arc::from(ports);
        self
    }

    pub fn with_port(self, name: &str, port: u16, protocol: Protocol) -> Self {
        self.with_ports(vec![EndpointPort {
            name: name.into(),
            port,
            protocol,
        }])
    }
}
