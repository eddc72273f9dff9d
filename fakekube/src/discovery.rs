//! `/version` and the legacy discovery documents (`/api`, `/apis`, group and resource lists).

use serde_json::{json, Value};

use crate::resources::{groups, RESOURCES};

/// The Kubernetes version the fake server claims to be.
pub const GIT_VERSION: &str = "v1.33.0";

pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "emulationMajor": "1",
        "emulationMinor": "33",
        "minCompatibilityMajor": "1",
        "minCompatibilityMinor": "32",
        "gitVersion": GIT_VERSION,
        "gitCommit": "fakekube",
        "gitTreeState": "clean",
        "buildDate": "2025-04-23T00:00:00Z",
        "goVersion": "go1.24.2",
        "compiler": "gc",
        "platform": "linux/amd64"
    })
}

pub fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]
    })
}

fn group_doc((name, version): (&str, &str)) -> Value {
    let gv = json!({"groupVersion": format!("{name}/{version}"), "version": version});
    json!({"name": name, "versions": [gv.clone()], "preferredVersion": gv})
}

/// `/apis`: every group but the `hidden` ones (not installed, like a CRD that isn't).
pub fn api_group_list(hidden: &[String]) -> Value {
    let groups: Vec<Value> = groups()
        .into_iter()
        .filter(|(g, _)| !hidden.iter().any(|h| h == g))
        .map(group_doc)
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/{group}`, if the group is served.
pub fn api_group(group: &str) -> Option<Value> {
    groups().into_iter().find(|(g, _)| *g == group).map(|g| {
        let mut doc = group_doc(g);
        doc["kind"] = json!("APIGroup");
        doc["apiVersion"] = json!("v1");
        doc
    })
}

/// `/api/v1` or `/apis/{group}/{version}`, if served.
pub fn api_resource_list(group: &str, version: &str) -> Option<Value> {
    let mut resources = Vec::new();
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        resources.push(json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
            "shortNames": r.short_names,
        }));
        if r.status_subresource {
            resources.push(json!({
                "name": format!("{}/status", r.plural),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
    }
    if resources.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docs() {
        assert_eq!(version()["gitVersion"], "v1.33.0");
        assert_eq!(api_group_list(&[])["groups"][0]["name"], "discovery.k8s.io");
        let mcs = "multicluster.x-k8s.io".to_string();
        assert_eq!(
            api_group_list(&[])["groups"][1]["preferredVersion"]["version"],
            "v1beta1"
        );
        assert_eq!(
            api_group_list(&[mcs])["groups"].as_array().unwrap().len(),
            1
        );
        assert!(api_group("discovery.k8s.io").is_some());
        assert!(api_group("apps").is_none());
        let core = api_resource_list("", "v1").unwrap();
        assert!(core["resources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "nodes/status"));
        assert!(api_resource_list("discovery.k8s.io", "v1").is_some());
        assert!(api_resource_list("apps", "v1").is_none());
    }
}
