//! The ServiceImport derived from the ServiceExports of one (namespace, name) in several
//! clusters, and the conditions each ServiceExport gets, as KEP-1645 ("Constraints and Conflict
//! Resolution") and the sigs.k8s.io/mcs-api v1beta1 API specify them:
//!
//! - Precedence: exports ordered by `creationTimestamp`, oldest first; equal timestamps (they
//!   have a granularity of one second) by cluster name. The oldest export wins every conflict.
//! - Type (ClusterSetIP or Headless) and session affinity are global properties: the derived
//!   service takes the oldest export's; any other value is a conflict (`TypeConflict`,
//!   `SessionAffinityConflict`, and `SessionAffinityConfigConflict` when both use ClientIP
//!   with different timeouts).
//! - Ports: the union of the exports' ports, merged first by name, then by (protocol, port):
//!   a port whose name is already taken by a different port, or whose (protocol, port) is
//!   already taken under another name, is dropped in favour of the older export's. Ports that
//!   are not identical in every export are a `PortConflict` (the conformance suite expects the
//!   condition also when the ports only differ, and their union is exposed). Each port lists
//!   the clusters whose export has exactly that port (name, protocol, number, appProtocol):
//!   traffic for a port goes only to those clusters.
//! - An export whose type differs from the derived type backs nothing (its endpoints cannot
//!   serve the derived type) and its ports are not merged; it is reported (`TypeConflict`).
//! - Every export gets `Valid` (True, `Valid`) and `Conflict`: True on *every* export of the
//!   service when there is any conflict (KEP: "set on all ServiceExports for the conflicted
//!   service"; the conformance suite checks the oldest one too), with the reasons joined by
//!   commas as the API documents; otherwise False, `NoConflicts`. Exports that are not valid
//!   at all (no Service, an ExternalName Service) are decided before, by [`import_type_of`],
//!   and take no part in the merge.
//!
//! Not handled here (yet): exported labels and annotations (`LabelsConflict`,
//! `AnnotationsConflict`), internalTrafficPolicy, trafficDistribution and IP families, and the
//! `Ready` condition (it depends on the export having been published, not on the merge).

use std::collections::BTreeMap;
use std::fmt;

/// Condition types of a ServiceExport (v1beta1 `ServiceExportConditionType`).
pub mod condition_type {
    pub const VALID: &str = "Valid";
    pub const READY: &str = "Ready";
    pub const CONFLICT: &str = "Conflict";
}

/// Condition reasons of a ServiceExport (v1beta1 `ServiceExportConditionReason`), verbatim.
pub mod reason {
    // Valid
    pub const VALID: &str = "Valid";
    pub const NO_SERVICE: &str = "NoService";
    pub const INVALID_SERVICE_TYPE: &str = "InvalidServiceType";
    // Ready
    pub const EXPORTED: &str = "Exported";
    pub const READY: &str = "Ready";
    pub const PENDING: &str = "Pending";
    pub const FAILED: &str = "Failed";
    // Conflict
    pub const PORT_CONFLICT: &str = "PortConflict";
    pub const TYPE_CONFLICT: &str = "TypeConflict";
    pub const SESSION_AFFINITY_CONFLICT: &str = "SessionAffinityConflict";
    pub const SESSION_AFFINITY_CONFIG_CONFLICT: &str = "SessionAffinityConfigConflict";
    pub const LABELS_CONFLICT: &str = "LabelsConflict";
    pub const ANNOTATIONS_CONFLICT: &str = "AnnotationsConflict";
    pub const INTERNAL_TRAFFIC_POLICY_CONFLICT: &str = "InternalTrafficPolicyConflict";
    pub const TRAFFIC_DISTRIBUTION_CONFLICT: &str = "TrafficDistributionConflict";
    pub const IP_FAMILY_CONFLICT: &str = "IPFamilyConflict";
    pub const NO_CONFLICTS: &str = "NoConflicts";
}

/// `ServiceImport.spec.type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImportType {
    ClusterSetIp,
    Headless,
}

impl ImportType {
    pub fn as_str(self) -> &'static str {
        match self {
            ImportType::ClusterSetIp => "ClusterSetIP",
            ImportType::Headless => "Headless",
        }
    }
}

impl fmt::Display for ImportType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        }
    }
}

/// A service port as the ServiceImport carries it (v1beta1 `ServicePort`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Port {
    /// Empty for the single unnamed port of a service.
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
    pub app_protocol: Option<String>,
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = if self.name.is_empty() {
            "(unnamed)"
        } else {
            &self.name
        };
        write!(f, "{name} {}/{}", self.port, self.protocol.as_str())?;
        if let Some(app) = &self.app_protocol {
            write!(f, " ({app})")?;
        }
        Ok(())
    }
}

/// `spec.sessionAffinity` (+ `sessionAffinityConfig.clientIP.timeoutSeconds`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionAffinity {
    None,
    ClientIp { timeout_seconds: i32 },
}

impl fmt::Display for SessionAffinity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionAffinity::None => f.write_str("None"),
            SessionAffinity::ClientIp { timeout_seconds } => {
                write!(f, "ClientIP ({timeout_seconds}s)")
            }
        }
    }
}

/// One cluster's ServiceExport of the service, with what its Service says. One per cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Export {
    pub cluster: String,
    /// The ServiceExport's `metadata.creationTimestamp`, Unix seconds.
    pub created: i64,
    pub import_type: ImportType,
    pub ports: Vec<Port>,
    pub session_affinity: SessionAffinity,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

impl ConditionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionStatus::True => "True",
            ConditionStatus::False => "False",
            ConditionStatus::Unknown => "Unknown",
        }
    }
}

/// A `metav1.Condition` without its timestamps and generation (the writer adds them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Condition {
    pub type_: &'static str,
    pub status: ConditionStatus,
    pub reason: String,
    pub message: String,
}

/// A port of the derived ServiceImport and the clusters whose endpoints serve it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MergedPort {
    pub port: Port,
    /// Sorted cluster names.
    pub clusters: Vec<String>,
}

/// The derived ServiceImport (its spec without the IPs, which [`super::clusterset_ip`]
/// allocates) and the conditions of every export.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Derived {
    pub import_type: ImportType,
    /// Sorted by (name, protocol, port).
    pub ports: Vec<MergedPort>,
    pub session_affinity: SessionAffinity,
    /// `status.clusters`: the clusters whose exports back the import (all exports of the derived
    /// type), sorted.
    pub clusters: Vec<String>,
    /// The reasons of the conflict, in the order of [`reason`]; empty without a conflict.
    pub conflicts: Vec<&'static str>,
    /// Per exporting cluster: its `Valid` and `Conflict` conditions.
    pub conditions: BTreeMap<String, Vec<Condition>>,
}

/// What a Service exports as, or the `Valid` = False condition its ServiceExport gets: no
/// Service (`service_type` None), or an ExternalName Service. Headless is `clusterIP: None`.
pub fn import_type_of(
    service_type: Option<&str>,
    cluster_ip: Option<&str>,
) -> Result<ImportType, Condition> {
    let invalid = |reason: &str, message: String| Condition {
        type_: condition_type::VALID,
        status: ConditionStatus::False,
        reason: reason.to_string(),
        message,
    };
    match service_type {
        None => Err(invalid(
            reason::NO_SERVICE,
            "there is no Service of the same namespace and name".to_string(),
        )),
        Some("ExternalName") => Err(invalid(
            reason::INVALID_SERVICE_TYPE,
            "an ExternalName Service cannot be exported".to_string(),
        )),
        Some(_) if cluster_ip == Some("None") => Ok(ImportType::Headless),
        Some(_) => Ok(ImportType::ClusterSetIp),
    }
}

/// Merges the valid exports of one service; None without any export.
pub fn derive(exports: &[Export]) -> Option<Derived> {
    let mut ordered: Vec<&Export> = exports.iter().collect();
    ordered.sort_by(|a, b| (a.created, &a.cluster).cmp(&(b.created, &b.cluster)));
    let oldest = *ordered.first()?;
    let mut problems: Vec<(&'static str, String)> = Vec::new();

    // Type.
    let import_type = oldest.import_type;
    let other_type: Vec<&str> = ordered
        .iter()
        .filter(|e| e.import_type != import_type)
        .map(|e| e.cluster.as_str())
        .collect();
    if !other_type.is_empty() {
        problems.push((
            reason::TYPE_CONFLICT,
            format!(
                "type {import_type} from the oldest export (cluster {}), not backed by {} \
                 (exported as {})",
                oldest.cluster,
                other_type.join(", "),
                import_type_other(import_type)
            ),
        ));
    }
    let backing: Vec<&Export> = ordered
        .iter()
        .copied()
        .filter(|e| e.import_type == import_type)
        .collect();

    // Session affinity.
    let session_affinity = oldest.session_affinity;
    let affinity_kind = |a: SessionAffinity| matches!(a, SessionAffinity::ClientIp { .. });
    let differing = |same_kind: bool| -> Vec<String> {
        ordered
            .iter()
            .filter(|e| {
                e.session_affinity != session_affinity
                    && (affinity_kind(e.session_affinity) == affinity_kind(session_affinity))
                        == same_kind
            })
            .map(|e| format!("{} ({})", e.cluster, e.session_affinity))
            .collect()
    };
    // Another kind of affinity, then the same kind configured differently, in that order.
    for (same_kind, why) in [
        (false, reason::SESSION_AFFINITY_CONFLICT),
        (true, reason::SESSION_AFFINITY_CONFIG_CONFLICT),
    ] {
        let others = differing(same_kind);
        if !others.is_empty() {
            problems.push((
                why,
                format!(
                    "session affinity {session_affinity} from the oldest export (cluster {}), \
                     ignored from {}",
                    oldest.cluster,
                    others.join(", ")
                ),
            ));
        }
    }

    // Ports of the backing exports, in precedence order, by name, then by (protocol, port).
    let mut merged: Vec<MergedPort> = Vec::new();
    let mut dropped: Vec<String> = Vec::new();
    for export in &backing {
        for port in &export.ports {
            if let Some(m) = merged.iter_mut().find(|m| m.port.name == port.name) {
                if m.port == *port {
                    if !m.clusters.contains(&export.cluster) {
                        m.clusters.push(export.cluster.clone());
                    }
                } else {
                    dropped.push(format!(
                        "{} of cluster {} (name taken by {})",
                        port, export.cluster, m.port
                    ));
                }
            } else if let Some(m) = merged
                .iter()
                .find(|m| (m.port.protocol, m.port.port) == (port.protocol, port.port))
            {
                dropped.push(format!(
                    "{} of cluster {} (port taken by {})",
                    port, export.cluster, m.port
                ));
            } else {
                merged.push(MergedPort {
                    port: port.clone(),
                    clusters: vec![export.cluster.clone()],
                });
            }
        }
    }
    let sorted_ports = |e: &Export| {
        let mut p = e.ports.clone();
        p.sort();
        p
    };
    let reference = sorted_ports(oldest);
    let all_identical = backing.iter().all(|e| sorted_ports(e) == reference);
    if !all_identical || !dropped.is_empty() {
        let mut message = "the exports' ports differ, the union is exposed".to_string();
        if !dropped.is_empty() {
            message.push_str(" (older exports first), dropped: ");
            message.push_str(&dropped.join(", "));
        }
        problems.push((reason::PORT_CONFLICT, message));
    }
    for m in &mut merged {
        m.clusters.sort();
    }
    merged.sort_by(|a, b| {
        (&a.port.name, a.port.protocol, a.port.port).cmp(&(
            &b.port.name,
            b.port.protocol,
            b.port.port,
        ))
    });

    // Conditions: the reasons in the API's order.
    const ORDER: [&str; 4] = [
        reason::PORT_CONFLICT,
        reason::TYPE_CONFLICT,
        reason::SESSION_AFFINITY_CONFLICT,
        reason::SESSION_AFFINITY_CONFIG_CONFLICT,
    ];
    problems.sort_by_key(|(r, _)| ORDER.iter().position(|o| o == r));
    let conflicts: Vec<&'static str> = problems.iter().map(|(r, _)| *r).collect();
    let conflict = if problems.is_empty() {
        Condition {
            type_: condition_type::CONFLICT,
            status: ConditionStatus::False,
            reason: reason::NO_CONFLICTS.to_string(),
            message: String::new(),
        }
    } else {
        Condition {
            type_: condition_type::CONFLICT,
            status: ConditionStatus::True,
            reason: conflicts.join(","),
            message: problems
                .iter()
                .map(|(r, m)| format!("{r}: {m}"))
                .collect::<Vec<_>>()
                .join("; "),
        }
    };
    let valid = Condition {
        type_: condition_type::VALID,
        status: ConditionStatus::True,
        reason: reason::VALID.to_string(),
        message: String::new(),
    };
    let conditions = ordered
        .iter()
        .map(|e| (e.cluster.clone(), vec![valid.clone(), conflict.clone()]))
        .collect();
    let mut clusters: Vec<String> = backing.iter().map(|e| e.cluster.clone()).collect();
    clusters.sort();

    Some(Derived {
        import_type,
        ports: merged,
        session_affinity,
        clusters,
        conflicts,
        conditions,
    })
}

fn import_type_other(t: ImportType) -> ImportType {
    match t {
        ImportType::ClusterSetIp => ImportType::Headless,
        ImportType::Headless => ImportType::ClusterSetIp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(name: &str, protocol: Protocol, number: u16) -> Port {
        Port {
            name: name.to_string(),
            protocol,
            port: number,
            app_protocol: None,
        }
    }

    /// The conformance suite's "hello" service: tcp 42/TCP and udp 42/UDP.
    fn hello() -> Vec<Port> {
        vec![
            port("tcp", Protocol::Tcp, 42),
            port("udp", Protocol::Udp, 42),
        ]
    }

    fn export(cluster: &str, created: i64, ports: Vec<Port>) -> Export {
        Export {
            cluster: cluster.to_string(),
            created,
            import_type: ImportType::ClusterSetIp,
            ports,
            session_affinity: SessionAffinity::None,
        }
    }

    fn conflict_of<'a>(d: &'a Derived, cluster: &str) -> &'a Condition {
        d.conditions[cluster]
            .iter()
            .find(|c| c.type_ == condition_type::CONFLICT)
            .unwrap()
    }

    fn port_list(d: &Derived) -> Vec<(String, Vec<String>)> {
        d.ports
            .iter()
            .map(|m| (m.port.to_string(), m.clusters.clone()))
            .collect()
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn no_exports_no_import() {
        assert_eq!(derive(&[]), None);
    }

    #[test]
    fn identical_exports_merge_without_conflict() {
        let d = derive(&[export("b", 10, hello()), export("a", 20, hello())]).unwrap();
        assert_eq!(d.import_type, ImportType::ClusterSetIp);
        assert_eq!(d.clusters, names(&["a", "b"]));
        assert!(d.conflicts.is_empty());
        assert_eq!(
            port_list(&d),
            [
                ("tcp 42/TCP".to_string(), names(&["a", "b"])),
                ("udp 42/UDP".to_string(), names(&["a", "b"])),
            ]
        );
        for cluster in ["a", "b"] {
            let c = &d.conditions[cluster];
            assert_eq!(c.len(), 2);
            assert_eq!(
                (c[0].type_, c[0].status, c[0].reason.as_str()),
                ("Valid", ConditionStatus::True, "Valid")
            );
            assert_eq!(
                (c[1].type_, c[1].status, c[1].reason.as_str()),
                ("Conflict", ConditionStatus::False, "NoConflicts")
            );
        }
    }

    /// Conformance: "should expose the union of the constituent service ports and raise a
    /// conflict" (a second cluster exports tcp and a new stcp 142/SCTP).
    #[test]
    fn differing_ports_expose_the_union_and_conflict_on_every_export() {
        let second = vec![
            port("tcp", Protocol::Tcp, 42),
            port("stcp", Protocol::Sctp, 142),
        ];
        let d = derive(&[export("c1", 100, hello()), export("c2", 101, second)]).unwrap();
        assert_eq!(
            port_list(&d),
            [
                ("stcp 142/SCTP".to_string(), names(&["c2"])),
                ("tcp 42/TCP".to_string(), names(&["c1", "c2"])),
                ("udp 42/UDP".to_string(), names(&["c1"])),
            ]
        );
        assert_eq!(d.conflicts, ["PortConflict"]);
        for cluster in ["c1", "c2"] {
            let c = conflict_of(&d, cluster);
            assert_eq!(
                (c.status, c.reason.as_str()),
                (ConditionStatus::True, "PortConflict")
            );
        }
    }

    /// Conformance: "with conflicting ports ... should apply the conflict resolution policy"
    /// (the newer export's "tcp" is 43/TCP): the oldest export's ports win.
    #[test]
    fn same_name_different_port_the_oldest_wins() {
        let newer = vec![port("tcp", Protocol::Tcp, 43)];
        // Given newest first, to show that the order of the input does not matter.
        let d = derive(&[export("c2", 101, newer), export("c1", 100, hello())]).unwrap();
        assert_eq!(
            port_list(&d),
            [
                ("tcp 42/TCP".to_string(), names(&["c1"])),
                ("udp 42/UDP".to_string(), names(&["c1"])),
            ]
        );
        let c = conflict_of(&d, "c2");
        assert_eq!(c.reason, "PortConflict");
        assert!(
            c.message
                .contains("tcp 43/TCP of cluster c2 (name taken by tcp 42/TCP)"),
            "{}",
            c.message
        );
        assert_eq!(conflict_of(&d, "c1"), c);
    }

    #[test]
    fn same_protocol_and_number_under_another_name_the_oldest_wins() {
        let older = vec![port("http", Protocol::Tcp, 80)];
        let newer = vec![port("web", Protocol::Tcp, 80)];
        let d = derive(&[export("a", 5, newer), export("b", 1, older)]).unwrap();
        assert_eq!(port_list(&d), [("http 80/TCP".to_string(), names(&["b"]))]);
        assert!(conflict_of(&d, "a")
            .message
            .contains("web 80/TCP of cluster a (port taken by http 80/TCP)"));
        // The same number over another protocol is another port.
        let udp = vec![port("dns", Protocol::Udp, 80)];
        let d = derive(&[
            export("a", 5, udp),
            export("b", 1, vec![port("http", Protocol::Tcp, 80)]),
        ])
        .unwrap();
        assert_eq!(d.ports.len(), 2);
    }

    #[test]
    fn app_protocol_is_part_of_a_port() {
        let mut h2 = port("web", Protocol::Tcp, 8080);
        h2.app_protocol = Some("kubernetes.io/h2c".to_string());
        let plain = port("web", Protocol::Tcp, 8080);
        let d = derive(&[export("new", 2, vec![plain]), export("old", 1, vec![h2])]).unwrap();
        assert_eq!(d.conflicts, ["PortConflict"]);
        assert_eq!(
            port_list(&d),
            [(
                "web 8080/TCP (kubernetes.io/h2c)".to_string(),
                names(&["old"])
            )]
        );
    }

    #[test]
    fn equal_timestamps_are_ordered_by_cluster_name() {
        let d = derive(&[
            export("zeta", 7, vec![port("p", Protocol::Tcp, 2)]),
            export("alpha", 7, vec![port("p", Protocol::Tcp, 1)]),
        ])
        .unwrap();
        assert_eq!(port_list(&d), [("p 1/TCP".to_string(), names(&["alpha"]))]);
    }

    /// Conformance: "A service exported on two clusters with conflicting headlessness": the
    /// oldest export's type, Conflict on both.
    #[test]
    fn type_conflict_takes_the_oldest_type() {
        let mut headless = export("c2", 101, hello());
        headless.import_type = ImportType::Headless;
        let d = derive(&[headless, export("c1", 100, hello())]).unwrap();
        assert_eq!(d.import_type, ImportType::ClusterSetIp);
        assert_eq!(d.conflicts, ["TypeConflict"]);
        // The headless cluster backs nothing.
        assert_eq!(d.clusters, names(&["c1"]));
        assert!(d.ports.iter().all(|m| m.clusters == names(&["c1"])));
        for cluster in ["c1", "c2"] {
            let c = conflict_of(&d, cluster);
            assert_eq!(
                (c.status, c.reason.as_str()),
                (ConditionStatus::True, "TypeConflict")
            );
            assert!(
                c.message
                    .contains("not backed by c2 (exported as Headless)"),
                "{}",
                c.message
            );
        }
        // And the other way round.
        let mut headless = export("c1", 100, hello());
        headless.import_type = ImportType::Headless;
        let d = derive(&[headless, export("c2", 101, hello())]).unwrap();
        assert_eq!(d.import_type, ImportType::Headless);
        assert_eq!(d.clusters, names(&["c1"]));
    }

    #[test]
    fn session_affinity_conflicts() {
        let mut a = export("a", 1, hello());
        a.session_affinity = SessionAffinity::ClientIp {
            timeout_seconds: 10,
        };
        let mut b = export("b", 2, hello());
        b.session_affinity = SessionAffinity::ClientIp {
            timeout_seconds: 30,
        };
        let c = export("c", 3, hello());
        let d = derive(&[c, b.clone(), a.clone()]).unwrap();
        assert_eq!(
            d.session_affinity,
            SessionAffinity::ClientIp {
                timeout_seconds: 10
            }
        );
        assert_eq!(
            d.conflicts,
            ["SessionAffinityConflict", "SessionAffinityConfigConflict"]
        );
        assert_eq!(
            conflict_of(&d, "c").reason,
            "SessionAffinityConflict,SessionAffinityConfigConflict"
        );
        // Only the timeout differs.
        let d = derive(&[a, b]).unwrap();
        assert_eq!(d.conflicts, ["SessionAffinityConfigConflict"]);
        // Session affinity does not change who backs the service.
        assert_eq!(d.clusters, names(&["a", "b"]));
    }

    #[test]
    fn several_conflicts_are_joined_with_commas_in_the_apis_order() {
        let mut b = export("b", 2, vec![port("tcp", Protocol::Tcp, 43)]);
        b.session_affinity = SessionAffinity::ClientIp {
            timeout_seconds: 10800,
        };
        let mut c = export("c", 3, hello());
        c.import_type = ImportType::Headless;
        let d = derive(&[c, b, export("a", 1, hello())]).unwrap();
        let cond = conflict_of(&d, "a");
        assert_eq!(
            cond.reason,
            "PortConflict,TypeConflict,SessionAffinityConflict"
        );
        assert_eq!(cond.message.matches("; ").count(), 2, "{}", cond.message);
        assert!(d.conditions.values().all(|c| c[1] == *cond));
    }

    #[test]
    fn a_single_export_is_its_own_import() {
        let d = derive(&[export("only", 1, hello())]).unwrap();
        assert!(d.conflicts.is_empty());
        assert_eq!(d.clusters, names(&["only"]));
        assert_eq!(d.ports.len(), 2);
    }

    #[test]
    fn validity_of_the_exported_service() {
        assert_eq!(
            import_type_of(Some("ClusterIP"), Some("10.96.0.10")),
            Ok(ImportType::ClusterSetIp)
        );
        assert_eq!(
            import_type_of(Some("ClusterIP"), Some("None")),
            Ok(ImportType::Headless)
        );
        assert_eq!(
            import_type_of(Some("LoadBalancer"), Some("10.96.0.11")),
            Ok(ImportType::ClusterSetIp)
        );
        let no = import_type_of(None, None).unwrap_err();
        assert_eq!(
            (no.type_, no.status, no.reason.as_str()),
            ("Valid", ConditionStatus::False, "NoService")
        );
        let ext = import_type_of(Some("ExternalName"), None).unwrap_err();
        assert_eq!(
            (ext.type_, ext.status, ext.reason.as_str()),
            ("Valid", ConditionStatus::False, "InvalidServiceType")
        );
    }

    /// The strings are the upstream API's (sigs.k8s.io/mcs-api v0.5.2 pkg/apis/v1beta1).
    #[test]
    fn names_match_upstream() {
        assert_eq!(
            [
                condition_type::VALID,
                condition_type::READY,
                condition_type::CONFLICT
            ],
            ["Valid", "Ready", "Conflict"]
        );
        assert_eq!(ImportType::ClusterSetIp.as_str(), "ClusterSetIP");
        assert_eq!(ImportType::Headless.as_str(), "Headless");
        assert_eq!(reason::IP_FAMILY_CONFLICT, "IPFamilyConflict");
        assert_eq!(
            [Protocol::Tcp, Protocol::Udp, Protocol::Sctp].map(Protocol::as_str),
            ["TCP", "UDP", "SCTP"]
        );
    }
}
