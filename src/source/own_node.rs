//! Self-advertisement: this node's public key and endpoint go into annotations on its own Node
//! in the local cluster, where the other clusters' agents read them. Also reads the node's pod
//! CIDRs, so `node.podCIDRs` need not be configured.

use super::convert::node_pod_cidrs;
use super::{ANN_ENDPOINT, ANN_ENDPOINT_OVERRIDE, ANN_PUBLIC_KEY};
use crate::config::EndpointPolicy;
use ipnetwork::IpNetwork;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use std::net::{IpAddr, SocketAddr};

/// The annotation values we want on our Node (None = remove the annotation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advertisement {
    pub public_key: String,
    pub endpoint: Option<SocketAddr>,
}

/// What we learned from our own Node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnNode {
    pub pod_cidrs: Vec<IpNetwork>,
    /// The admin's override, if set (it wins over ours on the remote side).
    pub endpoint_override: Option<String>,
    pub advertised: Advertisement,
    /// True if this call patched the Node (false: it already carried our annotations).
    pub patched: bool,
}

/// Pure: the endpoint per `tunnel.endpoint`.
pub fn choose_endpoint(
    node: &Node,
    policy: &EndpointPolicy,
    listen_port: u16,
) -> Result<SocketAddr, String> {
    let want = match policy {
        EndpointPolicy::Literal(addr) => return Ok(*addr),
        EndpointPolicy::LiteralIp(ip) => return Ok(SocketAddr::new(*ip, listen_port)),
        EndpointPolicy::NodeInternalIp => "InternalIP",
        EndpointPolicy::NodeExternalIp => "ExternalIP",
    };
    let addrs = node
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .map(Vec::as_slice)
        .unwrap_or_default();
    // Prefer IPv4 when a dual-stack node lists both: it is the common underlay.
    let mut found: Vec<IpAddr> = addrs
        .iter()
        .filter(|a| a.type_ == want)
        .filter_map(|a| a.address.parse().ok())
        .collect();
    found.sort_by_key(|ip: &IpAddr| ip.is_ipv6());
    found
        .first()
        .map(|ip| SocketAddr::new(*ip, listen_port))
        .ok_or_else(|| format!("the Node has no {want} in status.addresses"))
}

/// Pure: the merge patch that makes the Node carry `adv`, or None if it already does.
pub fn annotation_patch(node: &Node, adv: &Advertisement) -> Option<serde_json::Value> {
    let ann = node.metadata.annotations.clone().unwrap_or_default();
    let want_ep = adv.endpoint.map(|e| e.to_string());
    let same_key = ann.get(ANN_PUBLIC_KEY) == Some(&adv.public_key);
    let same_ep = ann.get(ANN_ENDPOINT) == want_ep.as_ref();
    if same_key && same_ep {
        return None;
    }
    Some(serde_json::json!({"metadata": {"annotations": {
        ANN_PUBLIC_KEY: adv.public_key,
        ANN_ENDPOINT: want_ep,
    }}}))
}

pub struct Advertiser {
    api: Api<Node>,
    pub node_name: String,
    policy: EndpointPolicy,
    listen_port: u16,
}

impl Advertiser {
    pub fn new(client: Client, node_name: &str, policy: EndpointPolicy, listen_port: u16) -> Self {
        Advertiser {
            api: Api::all(client),
            node_name: node_name.to_string(),
            policy,
            listen_port,
        }
    }

    /// Reads our Node and patches its annotations if they differ from `public_key` and the
    /// endpoint chosen by policy. Idempotent.
    pub async fn advertise(&self, public_key: &[u8; 32]) -> anyhow::Result<OwnNode> {
        use anyhow::Context;
        let node = self
            .api
            .get(&self.node_name)
            .await
            .with_context(|| format!("get Node {}", self.node_name))?;
        let endpoint = match choose_endpoint(&node, &self.policy, self.listen_port) {
            Ok(e) => Some(e),
            Err(reason) => {
                tracing::warn!(node = %self.node_name, policy = %self.policy, %reason,
                    "no endpoint to advertise; remote peers cannot initiate to this node \
                     (set tunnel.endpoint or the {ANN_ENDPOINT_OVERRIDE} annotation)");
                None
            }
        };
        let advertised = Advertisement {
            public_key: crate::keys::encode_key(public_key),
            endpoint,
        };
        let patch = annotation_patch(&node, &advertised);
        if let Some(p) = &patch {
            self.api
                .patch(&self.node_name, &PatchParams::default(), &Patch::Merge(p))
                .await
                .with_context(|| format!("patch annotations of Node {}", self.node_name))?;
        }
        let pod_cidrs = node_pod_cidrs(&node).unwrap_or_else(|reason| {
            tracing::warn!(node = %self.node_name, %reason, "ignoring our Node's pod CIDRs");
            vec![]
        });
        Ok(OwnNode {
            pod_cidrs,
            endpoint_override: node
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(ANN_ENDPOINT_OVERRIDE).cloned()),
            advertised,
            patched: patch.is_some(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node() -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": "a1", "annotations": {ANN_PUBLIC_KEY: "old"}},
            "status": {"addresses": [
                {"type": "Hostname", "address": "a1"},
                {"type": "InternalIP", "address": "fd00::11"},
                {"type": "InternalIP", "address": "10.0.0.11"},
                {"type": "ExternalIP", "address": "203.0.113.11"}]}
        }))
        .unwrap()
    }

    #[test]
    fn endpoint_by_policy() {
        let n = node();
        let ep = |p| choose_endpoint(&n, &p, 51820).map(|a| a.to_string());
        assert_eq!(
            ep(EndpointPolicy::NodeInternalIp).unwrap(),
            "10.0.0.11:51820"
        );
        assert_eq!(
            ep(EndpointPolicy::NodeExternalIp).unwrap(),
            "203.0.113.11:51820"
        );
        assert_eq!(
            ep(EndpointPolicy::LiteralIp("192.0.2.1".parse().unwrap())).unwrap(),
            "192.0.2.1:51820"
        );
        assert_eq!(
            ep(EndpointPolicy::Literal(
                "[2001:db8::1]:4500".parse().unwrap()
            ))
            .unwrap(),
            "[2001:db8::1]:4500"
        );
        let bare: Node = serde_json::from_value(json!({"metadata": {"name": "x"}})).unwrap();
        assert!(choose_endpoint(&bare, &EndpointPolicy::NodeExternalIp, 1)
            .unwrap_err()
            .contains("ExternalIP"));
    }

    #[test]
    fn patch_only_when_different() {
        let mut n = node();
        let adv = Advertisement {
            public_key: "NEW".into(),
            endpoint: Some("10.0.0.11:51820".parse().unwrap()),
        };
        let p = annotation_patch(&n, &adv).unwrap();
        assert_eq!(p["metadata"]["annotations"][ANN_PUBLIC_KEY], "NEW");
        assert_eq!(
            p["metadata"]["annotations"][ANN_ENDPOINT],
            "10.0.0.11:51820"
        );
        let ann = n.metadata.annotations.as_mut().unwrap();
        ann.insert(ANN_PUBLIC_KEY.into(), "NEW".into());
        ann.insert(ANN_ENDPOINT.into(), "10.0.0.11:51820".into());
        assert_eq!(annotation_patch(&n, &adv), None);
        // No endpoint: the stale annotation is removed (JSON null in a merge patch).
        let adv2 = Advertisement {
            endpoint: None,
            ..adv
        };
        let p = annotation_patch(&n, &adv2).unwrap();
        assert!(p["metadata"]["annotations"][ANN_ENDPOINT].is_null());
    }
}
