//! Pure conversion of Kubernetes objects into our compact snapshot types. Everything a remote
//! cluster sends is untrusted: bad values are reported as a reason string (the caller records a
//! rejection), never a panic. CIDR confinement happens later, in `model::plan`.

use super::{
    Endpoint, EndpointPort, Protocol, RemoteNode, RemoteService, ServicePort, ANN_ENDPOINT,
    ANN_ENDPOINT_OVERRIDE, ANN_POD_CIDRS, ANN_PUBLIC_KEY, MAX_ANNOTATION_BYTES,
};
use crate::keys;
use ipnetwork::IpNetwork;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// Label that ties an EndpointSlice to its Service.
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";
/// Default ClientIP affinity timeout (Kubernetes' default, 3 hours).
pub const DEFAULT_AFFINITY_SECONDS: u32 = 10800;
/// Most ports a service may declare here (the API allows far fewer in practice).
const MAX_PORTS: usize = 256;
/// Most endpoints in one EndpointSlice (the API server's own limit).
pub const MAX_SLICE_ENDPOINTS: usize = 1000;

/// A remote string as it may appear in our messages, logs and `status`: control characters
/// escaped (no terminal escape sequences from a hostile API), at most 64 characters.
pub fn shown(s: &str) -> String {
    let mut out: String = s.chars().take(64).flat_map(char::escape_debug).collect();
    if s.chars().count() > 64 {
        out.push_str("...");
    }
    out
}

/// A DNS subdomain (RFC 1123, as Kubernetes names Nodes): lower-case alphanumerics, '-' and
/// '.', at most 253 characters, alphanumeric at both ends.
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// A DNS label (RFC 1123, as Kubernetes names namespaces and Services): at most 63 characters.
pub fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Port names become DNS SRV labels and status text: empty, or a DNS label.
fn check_port_name(name: Option<&str>) -> Result<(), String> {
    match name {
        Some(n) if !n.is_empty() && !is_dns_label(n) => {
            Err(format!("port name '{}' is not a DNS label", shown(n)))
        }
        _ => Ok(()),
    }
}

/// A Node without our public-key annotation doesn't run the agent: `Ok(None)`.
pub fn node(n: &Node) -> Result<Option<RemoteNode>, String> {
    let name = n.metadata.name.clone().unwrap_or_default();
    // Names end up in metric labels, logs and the terminal (`status`).
    if !is_dns_subdomain(&name) {
        return Err(format!("name '{}' is not a DNS subdomain", shown(&name)));
    }
    let empty = BTreeMap::new();
    let ann = n.metadata.annotations.as_ref().unwrap_or(&empty);
    for key in [
        ANN_PUBLIC_KEY,
        ANN_ENDPOINT,
        ANN_ENDPOINT_OVERRIDE,
        ANN_POD_CIDRS,
    ] {
        if let Some(v) = ann.get(key) {
            if v.len() > MAX_ANNOTATION_BYTES {
                return Err(format!(
                    "annotation {key} is {} bytes (limit {MAX_ANNOTATION_BYTES})",
                    v.len()
                ));
            }
        }
    }
    let Some(key) = ann.get(ANN_PUBLIC_KEY) else {
        return Ok(None);
    };
    let public_key = keys::parse_key(key.trim())
        .map_err(|e| format!("annotation {ANN_PUBLIC_KEY}: malformed key: {e}"))?;
    let endpoint = match (ann.get(ANN_ENDPOINT_OVERRIDE), ann.get(ANN_ENDPOINT)) {
        (Some(v), _) => Some(
            parse_endpoint(v).map_err(|e| format!("annotation {ANN_ENDPOINT_OVERRIDE}: {e}"))?,
        ),
        (None, Some(v)) => {
            Some(parse_endpoint(v).map_err(|e| format!("annotation {ANN_ENDPOINT}: {e}"))?)
        }
        (None, None) => None,
    };
    let pod_cidrs = node_pod_cidrs(n)?;
    if pod_cidrs.is_empty() {
        return Err(format!(
            "no pod CIDRs (spec.podCIDRs is empty and there is no {ANN_POD_CIDRS} annotation)"
        ));
    }
    Ok(Some(RemoteNode {
        name,
        public_key,
        endpoint,
        pod_cidrs,
    }))
}

/// A node's pod CIDRs: `spec.podCIDRs` (or the older `spec.podCIDR`), else our annotation for
/// CNIs that don't fill the spec. Used for remote nodes and for our own Node.
pub fn node_pod_cidrs(n: &Node) -> Result<Vec<IpNetwork>, String> {
    let spec = n.spec.as_ref();
    let mut raw: Vec<&str> = spec
        .and_then(|s| s.pod_cidrs.as_ref())
        .map(|v| v.iter().map(String::as_str).collect())
        .unwrap_or_default();
    let mut field = "spec.podCIDRs".to_string();
    if raw.is_empty() {
        if let Some(c) = spec.and_then(|s| s.pod_cidr.as_deref()) {
            raw.push(c);
            field = "spec.podCIDR".into();
        }
    }
    if raw.is_empty() {
        if let Some(v) = n
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANN_POD_CIDRS))
        {
            if v.len() > MAX_ANNOTATION_BYTES {
                return Err(format!("annotation {ANN_POD_CIDRS} is too long"));
            }
            raw = v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect();
            field = format!("annotation {ANN_POD_CIDRS}");
        }
    }
    raw.iter()
        .map(|s| {
            let net: IpNetwork = s
                .parse()
                .map_err(|e| format!("{field}: '{}' is not a CIDR: {e}", shown(s)))?;
            Ok(crate::cidr::network(&net))
        })
        .collect()
}

/// `host:port` or `[v6]:port` with an IP literal (no DNS lookups in the data path).
pub fn parse_endpoint(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    let addr: SocketAddr = s.parse().map_err(|_| {
        format!(
            "'{}' is not an address:port with an IP literal (e.g. 192.0.2.7:51820 or [2001:db8::7]:51820)",
            shown(s)
        )
    })?;
    if addr.port() == 0 {
        return Err(format!("'{s}': port 0"));
    }
    if addr.ip().is_unspecified() || addr.ip().is_multicast() {
        return Err(format!("'{s}': not a unicast address"));
    }
    Ok(addr)
}

/// A Service in the snapshot (without endpoints; the store joins EndpointSlices in).
/// ExternalName services aren't proxied or tunnelled: `Ok(None)`.
pub fn service(s: &Service) -> Result<Option<RemoteService>, String> {
    let namespace = s.metadata.namespace.clone().unwrap_or_default();
    let name = s.metadata.name.clone().unwrap_or_default();
    // Names become DNS names, metric labels and status lines.
    if !is_dns_label(&namespace) || !is_dns_label(&name) {
        return Err(format!(
            "name '{}/{}' is not a namespace/name of DNS labels",
            shown(&namespace),
            shown(&name)
        ));
    }
    let Some(spec) = s.spec.as_ref() else {
        return Err("no spec".into());
    };
    if spec.type_.as_deref() == Some("ExternalName") {
        return Ok(None);
    }
    let mut raw_ips: Vec<&str> = spec
        .cluster_ips
        .as_ref()
        .map(|v| v.iter().map(String::as_str).collect())
        .unwrap_or_default();
    if raw_ips.is_empty() {
        raw_ips.extend(spec.cluster_ip.as_deref());
    }
    let headless = raw_ips.contains(&"None");
    let cluster_ips = if headless {
        vec![]
    } else {
        raw_ips
            .iter()
            .map(|ip| {
                ip.parse::<IpAddr>()
                    .map_err(|_| format!("spec.clusterIPs: '{ip}' is not an IP address"))
            })
            .collect::<Result<Vec<_>, _>>()?
    };
    let raw_ports = spec.ports.as_deref().unwrap_or_default();
    if raw_ports.len() > MAX_PORTS {
        return Err(format!("{} ports (limit {MAX_PORTS})", raw_ports.len()));
    }
    let mut ports = Vec::with_capacity(raw_ports.len());
    for p in raw_ports {
        let protocol = protocol(p.protocol.as_deref())?;
        let port = u16::try_from(p.port)
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| format!("spec.ports: port {} out of range", p.port))?;
        check_port_name(p.name.as_deref())?;
        ports.push(ServicePort {
            name: p.name.clone().unwrap_or_default(),
            port,
            protocol,
        });
    }
    let affinity_timeout = match spec.session_affinity.as_deref() {
        Some("ClientIP") => Some(
            spec.session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .map(|t| t.clamp(1, 86400) as u32)
                .unwrap_or(DEFAULT_AFFINITY_SECONDS),
        ),
        _ => None,
    };
    Ok(Some(RemoteService {
        namespace,
        name,
        cluster_ips,
        headless,
        ports,
        affinity_timeout,
        endpoints: vec![],
        exported_since: None,
        internal_traffic_policy: token(spec.internal_traffic_policy.as_deref()),
        traffic_distribution: token(spec.traffic_distribution.as_deref()),
    }))
}

/// An enum-like field (`Cluster`, `PreferClose`): kept only if it looks like one, so that a
/// hostile remote cannot carry arbitrary text into the ServiceImports we write.
fn token(v: Option<&str>) -> Option<String> {
    v.filter(|t| !t.is_empty() && t.len() <= 32 && t.bytes().all(|b| b.is_ascii_alphanumeric()))
        .map(str::to_string)
}

fn protocol(p: Option<&str>) -> Result<Protocol, String> {
    let p = p.unwrap_or("TCP");
    Protocol::parse(p).ok_or_else(|| format!("unknown protocol '{p}'"))
}

/// The endpoints of one EndpointSlice and the service it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceData {
    pub service: String,
    pub endpoints: Vec<Endpoint>,
}

/// An EndpointSlice without the service-name label, or for FQDN addresses: `Ok(None)`.
pub fn endpoint_slice(s: &EndpointSlice) -> Result<Option<SliceData>, String> {
    let Some(service) = s
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(LABEL_SERVICE_NAME))
    else {
        return Ok(None);
    };
    if s.address_type == "FQDN" {
        return Ok(None);
    }
    let n = s.endpoints.as_ref().map_or(0, Vec::len);
    if n > MAX_SLICE_ENDPOINTS {
        return Err(format!(
            "{n} endpoints (a slice holds at most {MAX_SLICE_ENDPOINTS})"
        ));
    }
    if s.ports.as_ref().is_some_and(|p| p.len() > MAX_PORTS) {
        return Err(format!("more than {MAX_PORTS} ports"));
    }
    let mut ports = Vec::new();
    for p in s.ports.as_deref().unwrap_or_default() {
        let Some(port) = p.port else { continue };
        let port = u16::try_from(port)
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| format!("ports: port {port} out of range"))?;
        check_port_name(p.name.as_deref())?;
        ports.push(EndpointPort {
            name: p.name.clone().unwrap_or_default(),
            port,
            protocol: protocol(p.protocol.as_deref())?,
        });
    }
    if ports.len() > MAX_PORTS {
        return Err(format!("{} ports (limit {MAX_PORTS})", ports.len()));
    }
    let ports: Arc<[EndpointPort]> = ports.into();
    let raw = s.endpoints.as_deref().unwrap_or_default();
    let mut endpoints = Vec::with_capacity(raw.len());
    for e in raw {
        // All addresses of an endpoint are fungible; Kubernetes consumers use the first.
        let Some(first) = e.addresses.first() else {
            continue;
        };
        let ip: IpAddr = first
            .parse()
            .map_err(|_| format!("endpoints: '{first}' is not an IP address"))?;
        let cond = e.conditions.as_ref();
        let ready = cond.and_then(|c| c.ready).unwrap_or(true);
        endpoints.push(Endpoint {
            ip,
            // Shown in status; a name that is no Node name is dropped, not shown.
            node_name: e.node_name.clone().filter(|n| is_dns_subdomain(n)),
            ready,
            serving: cond.and_then(|c| c.serving).unwrap_or(ready),
            terminating: cond.and_then(|c| c.terminating).unwrap_or(false),
            ports: ports.clone(),
        });
    }
    Ok(Some(SliceData {
        service: service.clone(),
        endpoints,
    }))
}

#[cfg(test)]
mod name_tests {
    use super::*;

    #[test]
    fn names_are_dns_and_shown_escaped() {
        assert!(is_dns_subdomain("b1.west.example"));
        assert!(is_dns_label("kube-system"));
        for bad in [
            "",
            "B1",
            "-b1",
            "b1-",
            "a_b",
            "b1\u{1b}[31m",
            &"a".repeat(64),
        ] {
            assert!(!is_dns_label(bad), "{bad:?}");
        }
        assert!(!is_dns_subdomain("a..b") && !is_dns_subdomain(&"a.".repeat(130)));
        assert_eq!(shown("b1\u{1b}[2J"), "b1\\u{1b}[2J");
        assert_eq!(shown(&"x".repeat(70)), format!("{}...", "x".repeat(64)));
        let n: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "evil\u{1b}[2J", "annotations": {"sdn-tunnel.io/public-key": "x"}}
        }))
        .unwrap();
        let e = node(&n).unwrap_err();
        assert!(e.contains("\\u{1b}") && !e.contains('\u{1b}'), "{e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const K1: &str = "4ONiAEenjiGp0lgFD1UTkoqxnIHcISSKx9IX8357aW0=";

    fn node_json(v: serde_json::Value) -> Node {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn node_with_annotations_becomes_remote_node() {
        let n = node_json(json!({
            "metadata": {"name": "b1", "annotations": {
                ANN_PUBLIC_KEY: K1, ANN_ENDPOINT: "192.0.2.11:51820"}},
            "spec": {"podCIDRs": ["10.132.1.0/24", "fd00:132:1::/64"]}
        }));
        let r = node(&n).unwrap().unwrap();
        assert_eq!(r.name, "b1");
        assert_eq!(r.public_key, keys::parse_key(K1).unwrap());
        assert_eq!(r.endpoint, Some("192.0.2.11:51820".parse().unwrap()));
        assert_eq!(
            r.pod_cidrs,
            vec![
                "10.132.1.0/24".parse::<IpNetwork>().unwrap(),
                "fd00:132:1::/64".parse().unwrap()
            ]
        );
    }

    #[test]
    fn override_wins_and_annotation_cidrs_are_a_fallback() {
        let n = node_json(json!({
            "metadata": {"name": "b1", "annotations": {
                ANN_PUBLIC_KEY: K1, ANN_ENDPOINT: "192.0.2.11:51820",
                ANN_ENDPOINT_OVERRIDE: "[2001:db8::7]:4500",
                ANN_POD_CIDRS: "10.132.1.0/24, 10.133.0.0/24"}},
            "spec": {}
        }));
        let r = node(&n).unwrap().unwrap();
        assert_eq!(r.endpoint, Some("[2001:db8::7]:4500".parse().unwrap()));
        assert_eq!(r.pod_cidrs.len(), 2);
    }

    #[test]
    fn node_without_key_is_not_ours() {
        let n =
            node_json(json!({"metadata": {"name": "b1"}, "spec": {"podCIDRs": ["10.132.1.0/24"]}}));
        assert_eq!(node(&n), Ok(None));
    }

    #[test]
    fn hostile_nodes_are_rejected_with_a_reason() {
        let cases = [
            (json!({ANN_PUBLIC_KEY: "not-a-key"}), "malformed key"),
            (
                json!({ANN_PUBLIC_KEY: K1, ANN_ENDPOINT: "example.com:51820"}),
                "IP literal",
            ),
            (
                json!({ANN_PUBLIC_KEY: K1, ANN_ENDPOINT: "192.0.2.1:0"}),
                "port 0",
            ),
            (
                json!({ANN_PUBLIC_KEY: K1, ANN_ENDPOINT_OVERRIDE: "0.0.0.0:51820"}),
                "unicast",
            ),
            (
                json!({ANN_PUBLIC_KEY: K1, ANN_POD_CIDRS: "x".repeat(5000)}),
                "limit 1024",
            ),
        ];
        for (ann, needle) in cases {
            let n = node_json(json!({"metadata": {"name": "b1", "annotations": ann},
                "spec": {"podCIDRs": ["10.132.1.0/24"]}}));
            let err = node(&n).unwrap_err();
            assert!(err.contains(needle), "{needle:?} not in {err:?}");
        }
        let n = node_json(
            json!({"metadata": {"name": "b1", "annotations": {ANN_PUBLIC_KEY: K1}},
            "spec": {"podCIDRs": ["10.132.1.0/33"]}}),
        );
        assert!(node(&n).unwrap_err().contains("spec.podCIDRs"));
        let n = node_json(json!({"metadata": {"name": "b1", "annotations": {ANN_PUBLIC_KEY: K1}}}));
        assert!(node(&n).unwrap_err().contains("no pod CIDRs"));
    }

    #[test]
    fn service_fields() {
        let s: Service = serde_json::from_value(json!({
            "metadata": {"namespace": "default", "name": "web"},
            "spec": {"clusterIP": "172.31.0.10", "clusterIPs": ["172.31.0.10", "fd00:31::10"],
                "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080},
                          {"name": "dns", "port": 53, "protocol": "UDP"}],
                "sessionAffinity": "ClientIP",
                "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}}
        }))
        .unwrap();
        let r = service(&s).unwrap().unwrap();
        assert_eq!(r.key(), "default/web");
        assert_eq!(r.cluster_ips.len(), 2);
        assert!(!r.headless);
        assert_eq!(r.ports[1].protocol, Protocol::Udp);
        assert_eq!(r.affinity_timeout, Some(60));
    }

    #[test]
    fn headless_externalname_and_bad_services() {
        let headless: Service = serde_json::from_value(json!({
            "metadata": {"namespace": "db", "name": "pg"},
            "spec": {"clusterIP": "None", "ports": [{"port": 5432}]}}))
        .unwrap();
        let r = service(&headless).unwrap().unwrap();
        assert!(r.headless && r.cluster_ips.is_empty());
        assert_eq!(r.ports[0].protocol, Protocol::Tcp);
        assert_eq!(r.affinity_timeout, None);
        let ext: Service = serde_json::from_value(json!({
            "metadata": {"namespace": "db", "name": "x"},
            "spec": {"type": "ExternalName", "externalName": "example.com"}}))
        .unwrap();
        assert_eq!(service(&ext), Ok(None));
        let bad: Service = serde_json::from_value(json!({
            "metadata": {"namespace": "db", "name": "x"},
            "spec": {"clusterIP": "300.1.1.1"}}))
        .unwrap();
        assert!(service(&bad).unwrap_err().contains("300.1.1.1"));
        let badproto: Service = serde_json::from_value(json!({
            "metadata": {"namespace": "db", "name": "x"},
            "spec": {"clusterIP": "172.31.0.1", "ports": [{"port": 1, "protocol": "ICMP"}]}}))
        .unwrap();
        assert!(service(&badproto).unwrap_err().contains("ICMP"));
    }

    #[test]
    fn endpoint_slice_conditions_default_like_kubernetes() {
        let s: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"namespace": "default", "name": "web-abc",
                "labels": {LABEL_SERVICE_NAME: "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [
                {"addresses": ["10.132.1.5"], "nodeName": "b1"},
                {"addresses": ["10.132.2.5"], "conditions": {"ready": false, "serving": true, "terminating": true}},
                {"addresses": []}
            ]
        }))
        .unwrap();
        let d = endpoint_slice(&s).unwrap().unwrap();
        assert_eq!(d.service, "web");
        assert_eq!(d.endpoints.len(), 2);
        let e = &d.endpoints[0];
        assert!(e.ready && e.serving && !e.terminating);
        assert_eq!(e.node_name.as_deref(), Some("b1"));
        assert_eq!(e.ports[0].port, 8080);
        let t = &d.endpoints[1];
        assert!(!t.ready && t.serving && t.terminating);
    }

    #[test]
    fn slices_without_service_or_with_fqdn_are_ignored_and_bad_ips_rejected() {
        let nolabel: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"namespace": "default", "name": "x"}, "addressType": "IPv4", "endpoints": []})).unwrap();
        assert_eq!(endpoint_slice(&nolabel), Ok(None));
        let fqdn: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"namespace": "default", "name": "x", "labels": {LABEL_SERVICE_NAME: "a"}},
            "addressType": "FQDN", "endpoints": [{"addresses": ["example.com"]}]}))
        .unwrap();
        assert_eq!(endpoint_slice(&fqdn), Ok(None));
        let bad: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"namespace": "default", "name": "x", "labels": {LABEL_SERVICE_NAME: "a"}},
            "addressType": "IPv4", "endpoints": [{"addresses": ["10.0.0.300"]}]}))
        .unwrap();
        assert!(endpoint_slice(&bad).unwrap_err().contains("10.0.0.300"));
    }

    #[test]
    fn enum_like_fields_are_kept_only_when_they_look_like_one() {
        assert_eq!(token(Some("PreferClose")).as_deref(), Some("PreferClose"));
        assert_eq!(token(Some("Local")).as_deref(), Some("Local"));
        for bad in ["", "Prefer Close", "a\nb", &"x".repeat(33)] {
            assert_eq!(token(Some(bad)), None, "{bad:?}");
        }
        assert_eq!(token(None), None);
    }
}
