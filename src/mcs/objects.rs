//! The MCS API objects the elected agent writes in its cluster, as JSON (pure): ServiceImports
//! (spec and status) from the clusterset's services, and the conditions of each local
//! ServiceExport, merged with what the object already has so that an unchanged condition
//! keeps its `lastTransitionTime` and nothing is written when nothing changed.

use super::clusterset::ClusterSetService;
use super::conflict::{Condition, ImportType, SessionAffinity};
use serde_json::{json, Map, Value};

/// The label on every ServiceImport we write: only those are ours to update or delete.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "sdn-tunnel";
/// Field manager for server-side apply.
pub const FIELD_MANAGER: &str = "sdn-tunnel";

/// The ServiceImport of `cs` (apiVersion `api_version`), for server-side apply: spec only.
pub fn service_import(cs: &ClusterSetService, api_version: &str) -> Value {
    let import_type = if cs.headless {
        ImportType::Headless
    } else {
        ImportType::ClusterSetIp
    };
    let ports: Vec<Value> = cs
        .ports
        .iter()
        .map(|p| {
            let mut o = Map::new();
            if !p.port.name.is_empty() {
                o.insert("name".into(), json!(p.port.name));
            }
            o.insert("protocol".into(), json!(p.port.protocol.as_str()));
            o.insert("port".into(), json!(p.port.port));
            if let Some(a) = &p.port.app_protocol {
                o.insert("appProtocol".into(), json!(a));
            }
            Value::Object(o)
        })
        .collect();
    let mut spec = Map::new();
    spec.insert("type".into(), json!(import_type.as_str()));
    spec.insert("ports".into(), Value::Array(ports));
    if !cs.ips.is_empty() {
        spec.insert(
            "ips".into(),
            json!(cs.ips.iter().map(|ip| ip.to_string()).collect::<Vec<_>>()),
        );
        let families: Vec<&str> = cs
            .ips
            .iter()
            .map(|ip| if ip.is_ipv4() { "IPv4" } else { "IPv6" })
            .collect();
        spec.insert("ipFamilies".into(), json!(families));
    }
    if let Some(p) = &cs.internal_traffic_policy {
        spec.insert("internalTrafficPolicy".into(), json!(p));
    }
    if let Some(t) = &cs.traffic_distribution {
        spec.insert("trafficDistribution".into(), json!(t));
    }
    // Headless: the families of the endpoints (a headless import has no IPs to tell them).
    if cs.ips.is_empty() {
        let mut families: Vec<&str> = Vec::new();
        for e in cs.members.iter().flat_map(|m| &m.endpoints) {
            let f = if e.ip.is_ipv4() { "IPv4" } else { "IPv6" };
            if !families.contains(&f) {
                families.push(f);
            }
        }
        families.sort();
        if !families.is_empty() {
            spec.insert("ipFamilies".into(), json!(families));
        }
    }
    match cs.session_affinity {
        SessionAffinity::None => {
            spec.insert("sessionAffinity".into(), json!("None"));
        }
        SessionAffinity::ClientIp { timeout_seconds } => {
            spec.insert("sessionAffinity".into(), json!("ClientIP"));
            spec.insert(
                "sessionAffinityConfig".into(),
                json!({"clientIP": {"timeoutSeconds": timeout_seconds}}),
            );
        }
    }
    json!({
        "apiVersion": api_version,
        "kind": "ServiceImport",
        "metadata": {
            "name": cs.name,
            "namespace": cs.namespace,
            "labels": {MANAGED_BY_LABEL: MANAGED_BY},
        },
        "spec": Value::Object(spec),
    })
}

/// The ServiceImport's status for server-side apply: the clusters that back it.
pub fn service_import_status(cs: &ClusterSetService, api_version: &str) -> Value {
    let mut clusters: Vec<&str> = cs.members.iter().map(|m| m.cluster.as_str()).collect();
    clusters.sort();
    json!({
        "apiVersion": api_version,
        "kind": "ServiceImport",
        "metadata": {"name": cs.name, "namespace": cs.namespace},
        "status": {"clusters": clusters.iter().map(|c| json!({"cluster": c})).collect::<Vec<_>>()},
    })
}

/// Whether the object `have` (as read) already carries `want`'s spec and labels, so that no
/// write is needed.
pub fn import_up_to_date(have: &Value, want: &Value) -> bool {
    have["spec"] == want["spec"]
        && have["metadata"]["labels"][MANAGED_BY_LABEL]
            == want["metadata"]["labels"][MANAGED_BY_LABEL]
}

/// Whether `have`'s status lists exactly `want`'s clusters.
pub fn import_status_up_to_date(have: &Value, want: &Value) -> bool {
    have["status"]["clusters"] == want["status"]["clusters"]
}

/// The conditions `existing` (a ServiceExport's `status.conditions`) should become with
/// `want`, or None if they already say it. Conditions of other types are kept; a condition
/// whose status is unchanged keeps its `lastTransitionTime`; `now` (RFC 3339) is used for the
/// others.
pub fn merged_conditions(existing: &Value, want: &[Condition], now: &str) -> Option<Vec<Value>> {
    let old: Vec<Value> = existing.as_array().cloned().unwrap_or_default();
    let mut out: Vec<Value> = old
        .iter()
        .filter(|c| !want.iter().any(|w| c["type"] == w.type_))
        .cloned()
        .collect();
    let mut changed = false;
    for w in want {
        let prev = old.iter().find(|c| c["type"] == w.type_);
        let same = prev.is_some_and(|p| {
            p["status"] == w.status.as_str()
                && p["reason"] == w.reason.as_str()
                && p["message"] == w.message.as_str()
        });
        changed |= !same;
        let since = match prev {
            Some(p) if p["status"] == w.status.as_str() => p["lastTransitionTime"].clone(),
            _ => json!(now),
        };
        out.push(json!({
            "type": w.type_,
            "status": w.status.as_str(),
            "reason": w.reason,
            "message": w.message,
            "lastTransitionTime": since,
        }));
    }
    changed.then_some(out)
}

#[cfg(test)]
mod tests;
