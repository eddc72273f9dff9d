//! Builders of realistic Node, Service and EndpointSlice objects, and of a whole synthetic
//! cluster for benchmarks.

use serde_json::{json, Value};

/// A Service port; in an EndpointSlice the `target_port` is what is listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    pub name: String,
    pub port: u16,
    /// "TCP", "UDP" or "SCTP".
    pub protocol: String,
    pub target_port: u16,
}

impl Port {
    pub fn tcp(name: &str, port: u16, target_port: u16) -> Port {
        Port {
            name: name.into(),
            port,
            protocol: "TCP".into(),
            target_port,
        }
    }

    pub fn udp(name: &str, port: u16, target_port: u16) -> Port {
        Port {
            name: name.into(),
            port,
            protocol: "UDP".into(),
            target_port,
        }
    }
}

/// One endpoint of an EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub addresses: Vec<String>,
    pub node_name: Option<String>,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
}

impl Endpoint {
    /// A ready, serving endpoint on a node.
    pub fn ready(address: &str, node_name: &str) -> Endpoint {
        Endpoint {
            addresses: vec![address.into()],
            node_name: Some(node_name.into()),
            ready: true,
            serving: true,
            terminating: false,
        }
    }

    /// A terminating endpoint (still serving, not ready).
    pub fn terminating(address: &str, node_name: &str) -> Endpoint {
        Endpoint {
            ready: false,
            terminating: true,
            ..Endpoint::ready(address, node_name)
        }
    }
}

/// A Node with `spec.podCIDR(s)`, `status.addresses` (InternalIP, optional ExternalIP,
/// Hostname), a Ready condition and the usual labels.
pub fn node(name: &str, internal_ip: &str, external_ip: Option<&str>, pod_cidrs: &[&str]) -> Value {
    let mut addresses = vec![json!({"type": "InternalIP", "address": internal_ip})];
    if let Some(ext) = external_ip {
        addresses.push(json!({"type": "ExternalIP", "address": ext}));
    }
    addresses.push(json!({"type": "Hostname", "address": name}));
    let mut spec = json!({"podCIDRs": pod_cidrs});
    if let Some(first) = pod_cidrs.first() {
        spec["podCIDR"] = json!(first);
    }
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
            },
            "annotations": {"node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": spec,
        "status": {
            "addresses": addresses,
            "conditions": [{
                "type": "Ready",
                "status": "True",
                "reason": "KubeletReady",
                "message": "kubelet is posting ready status",
                "lastHeartbeatTime": "2025-01-01T00:00:00Z",
                "lastTransitionTime": "2025-01-01T00:00:00Z",
            }],
            "nodeInfo": {
                "kubeletVersion": crate::discovery::GIT_VERSION,
                "containerRuntimeVersion": "containerd://1.7.24",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        },
    })
}

fn family(ip: &str) -> &'static str {
    if ip.contains(':') {
        "IPv6"
    } else {
        "IPv4"
    }
}

/// A ClusterIP Service selecting `app=<name>`, with `clusterIP`/`clusterIPs`, IP families,
/// ports (name, port, protocol, targetPort) and `sessionAffinity: None`. An empty
/// `cluster_ips` makes a headless service (`clusterIP: None`).
pub fn service(namespace: &str, name: &str, cluster_ips: &[&str], ports: &[Port]) -> Value {
    let ports: Vec<Value> = ports
        .iter()
        .map(|p| json!({"name": p.name, "port": p.port, "protocol": p.protocol, "targetPort": p.target_port}))
        .collect();
    let (cluster_ip, ips, families): (&str, Vec<&str>, Vec<&str>) = if cluster_ips.is_empty() {
        ("None", vec!["None"], vec!["IPv4"])
    } else {
        (
            cluster_ips[0],
            cluster_ips.to_vec(),
            cluster_ips.iter().map(|ip| family(ip)).collect(),
        )
    };
    let policy = if families.len() > 1 {
        "RequireDualStack"
    } else {
        "SingleStack"
    };
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
        "spec": {
            "type": "ClusterIP",
            "clusterIP": cluster_ip,
            "clusterIPs": ips,
            "ipFamilies": families,
            "ipFamilyPolicy": policy,
            "ports": ports,
            "selector": {"app": name},
            "sessionAffinity": "None",
            "internalTrafficPolicy": "Cluster",
        },
        "status": {"loadBalancer": {}},
    })
}

/// An EndpointSlice of `service` (label `kubernetes.io/service-name`), `addressType` from
/// the first address (IPv4 if none), endpoints with conditions and nodeName, and ports
/// (name, target port as `port`, protocol).
pub fn endpoint_slice(
    namespace: &str,
    service: &str,
    slice_name: &str,
    endpoints: &[Endpoint],
    ports: &[Port],
) -> Value {
    let address_type = endpoints
        .iter()
        .flat_map(|e| e.addresses.first())
        .next()
        .map(|a| family(a))
        .unwrap_or("IPv4");
    let endpoints: Vec<Value> = endpoints
        .iter()
        .map(|e| {
            let mut v = json!({
                "addresses": e.addresses,
                "conditions": {"ready": e.ready, "serving": e.serving, "terminating": e.terminating},
            });
            if let Some(n) = &e.node_name {
                v["nodeName"] = json!(n);
            }
            v
        })
        .collect();
    let ports: Vec<Value> = ports
        .iter()
        .map(|p| json!({"name": p.name, "port": p.target_port, "protocol": p.protocol}))
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": slice_name,
            "namespace": namespace,
            "labels": {
                "kubernetes.io/service-name": service,
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
            },
        },
        "addressType": address_type,
        "endpoints": endpoints,
        "ports": ports,
    })
}

/// A Namespace.
/// A Multi-Cluster Services API `ServiceExport` (multicluster.x-k8s.io/v1beta1): exports the
/// Service of the same namespace and name to the clusterset.
pub fn service_export(namespace: &str, name: &str) -> Value {
    json!({
        "apiVersion": "multicluster.x-k8s.io/v1beta1",
        "kind": "ServiceExport",
        "metadata": {"namespace": namespace, "name": name},
    })
}

pub fn namespace(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}}, "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}})
}

fn set_meta_map(obj: &mut Value, map: &str, key: &str, value: &str) {
    let meta = &mut obj["metadata"];
    if !meta[map].is_object() {
        meta[map] = json!({});
    }
    meta[map][key] = json!(value);
}

/// Sets `metadata.annotations[key]`.
pub fn annotate(obj: &mut Value, key: &str, value: &str) {
    set_meta_map(obj, "annotations", key, value);
}

/// Sets `metadata.labels[key]`.
pub fn label(obj: &mut Value, key: &str, value: &str) {
    set_meta_map(obj, "labels", key, value);
}

/// Shape of a synthetic cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterSpec {
    /// Cluster number; 0..16 give disjoint addresses between clusters.
    pub cluster: u8,
    /// At most 1024.
    pub nodes: usize,
    /// At most 65,000.
    pub services: usize,
    pub endpoints_per_service: usize,
    /// Services are spread over namespaces `ns-0`..`ns-{n-1}` (at least 1).
    pub namespaces: usize,
}

impl Default for ClusterSpec {
    /// The benchmark shape: 1,000 nodes, 10,000 services with 5 endpoints each, 10 namespaces.
    fn default() -> Self {
        ClusterSpec {
            cluster: 0,
            nodes: 1000,
            services: 10_000,
            endpoints_per_service: 5,
            namespaces: 10,
        }
    }
}

/// Names and addresses used by [`cluster`].
pub fn node_name(i: usize) -> String {
    format!("node-{i:04}")
}

/// InternalIP of node `i` of cluster `c`: 172.(16+c).x.y
pub fn node_ip(c: u8, i: usize) -> String {
    let j = i + 10;
    format!(
        "172.{}.{}.{}",
        16 + u16::from(c % 16),
        (j >> 8) & 255,
        j & 255
    )
}

/// Pod CIDR of node `i` of cluster `c`: 10.(4c + i/256).(i%256).0/24
pub fn pod_cidr(c: u8, i: usize) -> String {
    format!(
        "10.{}.{}.0/24",
        (usize::from(c % 64) * 4 + (i >> 8)) & 255,
        i & 255
    )
}

/// ClusterIP of service `s` of cluster `c`: 10.(96+c).x.y
pub fn service_ip(c: u8, s: usize) -> String {
    let j = s + 10;
    format!(
        "10.{}.{}.{}",
        96 + u16::from(c % 16),
        (j >> 8) & 255,
        j & 255
    )
}

/// Nodes, Namespaces, Services and one EndpointSlice per service (endpoints spread over the
/// nodes, addresses inside the nodes' pod CIDRs). Deterministic.
pub fn cluster(spec: &ClusterSpec) -> Vec<Value> {
    let c = spec.cluster;
    let nodes = spec.nodes.max(1);
    let namespaces = spec.namespaces.max(1);
    let mut out = Vec::with_capacity(spec.nodes + namespaces + 2 * spec.services);
    for i in 0..spec.nodes {
        let cidr = pod_cidr(c, i);
        out.push(node(&node_name(i), &node_ip(c, i), None, &[&cidr]));
    }
    for n in 0..namespaces {
        out.push(namespace(&format!("ns-{n}")));
    }
    for s in 0..spec.services {
        let ns = format!("ns-{}", s % namespaces);
        let name = format!("svc-{s}");
        let mut ports = vec![Port::tcp("http", 80, 8080)];
        if s % 10 == 0 {
            ports.push(Port::udp("dns", 53, 5353));
        }
        out.push(service(&ns, &name, &[&service_ip(c, s)], &ports));
        let endpoints: Vec<Endpoint> = (0..spec.endpoints_per_service)
            .map(|k| {
                let g = s * spec.endpoints_per_service + k;
                let n = g % nodes;
                let host = (g / nodes) % 250 + 2;
                let ip = format!(
                    "10.{}.{}.{host}",
                    (usize::from(c % 64) * 4 + (n >> 8)) & 255,
                    n & 255
                );
                Endpoint::ready(&ip, &node_name(n))
            })
            .collect();
        out.push(endpoint_slice(
            &ns,
            &name,
            &format!("{name}-abcde"),
            &endpoints,
            &ports,
        ));
    }
    out
}

/// Annotates every Node in `objs` the way an sdn-tunnel agent advertises itself: a distinct
/// (deterministic) public key and `InternalIP:51820` as endpoint.
pub fn advertise_all(objs: &mut [Value]) {
    use base64::Engine as _;
    for (i, o) in objs.iter_mut().enumerate() {
        if o["kind"] != "Node" {
            continue;
        }
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
        key[31] = 0x42;
        let ip = o["status"]["addresses"][0]["address"]
            .as_str()
            .unwrap_or("192.0.2.1")
            .to_string();
        let b64 = base64::engine::general_purpose::STANDARD.encode(key);
        annotate(o, "sdn-tunnel.io/public-key", &b64);
        annotate(o, "sdn-tunnel.io/endpoint", &format!("{ip}:51820"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let n = node(
            "n1",
            "10.0.0.1",
            Some("1.2.3.4"),
            &["10.244.0.0/24", "fd00::/64"],
        );
        assert_eq!(n["spec"]["podCIDR"], "10.244.0.0/24");
        assert_eq!(n["status"]["addresses"][1]["type"], "ExternalIP");
        let s = service(
            "default",
            "web",
            &["10.96.0.10", "fd00::10"],
            &[Port::tcp("http", 80, 8080)],
        );
        assert_eq!(s["spec"]["ipFamilies"], json!(["IPv4", "IPv6"]));
        assert_eq!(s["spec"]["ports"][0]["targetPort"], 8080);
        assert_eq!(service("d", "h", &[], &[])["spec"]["clusterIP"], "None");
        let e = endpoint_slice(
            "default",
            "web",
            "web-1",
            &[Endpoint::terminating("fd00::1", "n1")],
            &[Port::tcp("http", 80, 8080)],
        );
        assert_eq!(e["addressType"], "IPv6");
        assert_eq!(e["metadata"]["labels"]["kubernetes.io/service-name"], "web");
        assert_eq!(e["endpoints"][0]["conditions"]["terminating"], true);
        assert_eq!(e["ports"][0]["port"], 8080);
        let mut n = n;
        annotate(&mut n, "a", "b");
        label(&mut n, "l", "v");
        assert_eq!(n["metadata"]["annotations"]["a"], "b");
        assert_eq!(n["metadata"]["labels"]["l"], "v");
    }

    #[test]
    fn synthetic_cluster() {
        let spec = ClusterSpec {
            cluster: 3,
            nodes: 300,
            services: 20,
            endpoints_per_service: 5,
            namespaces: 4,
        };
        let objs = cluster(&spec);
        assert_eq!(objs.len(), 300 + 4 + 40);
        assert_eq!(node_ip(3, 0), "172.19.0.10");
        assert_eq!(pod_cidr(3, 299), "10.13.43.0/24");
        assert_eq!(service_ip(3, 0), "10.99.0.10");
        let slice = objs.last().unwrap();
        assert_eq!(slice["endpoints"].as_array().unwrap().len(), 5);
    }
}
