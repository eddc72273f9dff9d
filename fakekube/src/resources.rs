//! The table of resource types the fake server knows, and lookups into it.

/// One served resource type (one REST collection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceType {
    /// API group, "" for the core group.
    pub group: &'static str,
    pub version: &'static str,
    /// URL path segment, e.g. "endpointslices".
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    /// Whether the real apiserver has a `/status` subresource for it (then a PUT or PATCH of
    /// the main resource keeps the old status, and `/status` changes only the status).
    pub status_subresource: bool,
    pub short_names: &'static [&'static str],
}

impl ResourceType {
    /// `apiVersion` as written in objects: "v1" or "group/version".
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Kind of the list type, e.g. "NodeList".
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// Collection path for `ns` (None = all namespaces, or cluster-scoped).
    pub fn collection_path(&self, ns: Option<&str>) -> String {
        let prefix = if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        };
        match ns {
            Some(ns) if self.namespaced => format!("{prefix}/namespaces/{ns}/{}", self.plural),
            _ => format!("{prefix}/{}", self.plural),
        }
    }

    /// Resource name used in Status messages and details, e.g. "endpointslices.discovery.k8s.io".
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

const fn rt(
    group: &'static str,
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    namespaced: bool,
    status_subresource: bool,
    short_names: &'static [&'static str],
) -> ResourceType {
    ResourceType {
        group,
        version: "v1",
        plural,
        singular,
        kind,
        namespaced,
        status_subresource,
        short_names,
    }
}

/// Every resource type served. Adding one here is all it takes to serve it.
pub static RESOURCES: &[ResourceType] = &[
    rt("", "nodes", "node", "Node", false, true, &["no"]),
    rt("", "services", "service", "Service", true, true, &["svc"]),
    rt(
        "discovery.k8s.io",
        "endpointslices",
        "endpointslice",
        "EndpointSlice",
        true,
        false,
        &[],
    ),
    rt(
        "",
        "namespaces",
        "namespace",
        "Namespace",
        false,
        true,
        &["ns"],
    ),
    rt("", "pods", "pod", "Pod", true, true, &["po"]),
    ResourceType {
        group: "multicluster.x-k8s.io",
        version: "v1beta1",
        plural: "serviceexports",
        singular: "serviceexport",
        kind: "ServiceExport",
        namespaced: true,
        status_subresource: true,
        short_names: &["svcex"],
    },
    rt(
        "",
        "configmaps",
        "configmap",
        "ConfigMap",
        true,
        false,
        &["cm"],
    ),
];

/// Index into [`RESOURCES`].
pub type ResourceId = usize;

/// Finds a resource by kind ("Node"), plural ("nodes"), singular or short name, case-insensitive.
pub fn lookup(name: &str) -> Option<ResourceId> {
    RESOURCES.iter().position(|r| {
        r.kind.eq_ignore_ascii_case(name)
            || r.plural.eq_ignore_ascii_case(name)
            || r.singular.eq_ignore_ascii_case(name)
            || r.short_names.iter().any(|s| s.eq_ignore_ascii_case(name))
    })
}

/// Finds a resource by the group/version/plural of a URL.
pub fn lookup_path(group: &str, version: &str, plural: &str) -> Option<ResourceId> {
    RESOURCES
        .iter()
        .position(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Finds a resource by an object's `apiVersion` and `kind`.
pub fn lookup_kind(api_version: &str, kind: &str) -> Option<ResourceId> {
    RESOURCES
        .iter()
        .position(|r| r.kind == kind && r.api_version() == api_version)
}

/// The API groups other than core, each with its (one) version.
pub fn groups() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&'static str, &'static str)> = Vec::new();
    for r in RESOURCES {
        if !r.group.is_empty() && !out.iter().any(|(g, _)| *g == r.group) {
            out.push((r.group, r.version));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups() {
        assert_eq!(RESOURCES[lookup("Node").unwrap()].plural, "nodes");
        assert_eq!(RESOURCES[lookup("svc").unwrap()].kind, "Service");
        assert_eq!(
            RESOURCES[lookup("endpointslices").unwrap()].group,
            "discovery.k8s.io"
        );
        assert!(lookup("widgets").is_none());
        let es = lookup_kind("discovery.k8s.io/v1", "EndpointSlice").unwrap();
        assert_eq!(
            lookup_path("discovery.k8s.io", "v1", "endpointslices"),
            Some(es)
        );
        assert_eq!(
            RESOURCES[es].collection_path(Some("kube-system")),
            "/apis/discovery.k8s.io/v1/namespaces/kube-system/endpointslices"
        );
        assert_eq!(
            RESOURCES[lookup("nodes").unwrap()].collection_path(Some("x")),
            "/api/v1/nodes"
        );
    }
}
