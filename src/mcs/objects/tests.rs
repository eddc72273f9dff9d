use super::*;
use crate::mcs::clusterset::Member;
use crate::mcs::conflict::{self, ConditionStatus, MergedPort, Port};

fn cs(headless: bool, affinity: SessionAffinity) -> ClusterSetService {
    let member = |c: &str| Member {
        cluster: c.into(),
        local: c == "east",
        tier: 0,
        ports: vec![],
        endpoints: vec![],
    };
    ClusterSetService {
        namespace: "shop".into(),
        name: "cart".into(),
        headless,
        ips: if headless {
            vec![]
        } else {
            vec![
                "10.255.0.7".parse().unwrap(),
                "fd00:255::7".parse().unwrap(),
            ]
        },
        ports: vec![
            MergedPort {
                port: Port {
                    name: "http".into(),
                    protocol: conflict::Protocol::Tcp,
                    port: 80,
                    app_protocol: None,
                },
                clusters: vec!["east".into(), "west".into()],
            },
            MergedPort {
                port: Port {
                    name: String::new(),
                    protocol: conflict::Protocol::Udp,
                    port: 53,
                    app_protocol: Some("dns".into()),
                },
                clusters: vec!["west".into()],
            },
        ],
        affinity_timeout: None,
        members: vec![member("west"), member("east")],
        conflicts: vec![],
        exported_by: vec!["east".into(), "west".into()],
        conditions: vec![],
        session_affinity: affinity,
        internal_traffic_policy: Some("Cluster".into()),
        traffic_distribution: None,
    }
}

#[test]
fn a_cluster_set_ip_import_carries_ips_families_ports_and_affinity() {
    let v = service_import(
        &cs(
            false,
            SessionAffinity::ClientIp {
                timeout_seconds: 10,
            },
        ),
        "multicluster.x-k8s.io/v1beta1",
    );
    assert_eq!(
        v,
        json!({
            "apiVersion": "multicluster.x-k8s.io/v1beta1",
            "kind": "ServiceImport",
            "metadata": {"name": "cart", "namespace": "shop",
                         "labels": {"app.kubernetes.io/managed-by": "sdn-tunnel"}},
            "spec": {
                "type": "ClusterSetIP",
                "ports": [
                    {"name": "http", "protocol": "TCP", "port": 80},
                    {"protocol": "UDP", "port": 53, "appProtocol": "dns"}
                ],
                "ips": ["10.255.0.7", "fd00:255::7"],
                "ipFamilies": ["IPv4", "IPv6"],
                "internalTrafficPolicy": "Cluster",
                "sessionAffinity": "ClientIP",
                "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 10}}
            }
        })
    );
    let st = service_import_status(&cs(false, SessionAffinity::None), "v");
    assert_eq!(
        st["status"]["clusters"],
        json!([{"cluster": "east"}, {"cluster": "west"}])
    );
}

#[test]
fn a_headless_import_has_no_ips() {
    let mut s = cs(true, SessionAffinity::None);
    let v = service_import(&s, "v");
    assert_eq!(v["spec"]["type"], "Headless");
    assert!(v["spec"].get("ips").is_none() && v["spec"].get("ipFamilies").is_none());
    // The families come from the endpoints.
    s.members[0].endpoints = vec![crate::model::build::endpoint("fd00:10::5")];
    s.members[1].endpoints = vec![crate::model::build::endpoint("10.1.0.5")];
    let v = service_import(&s, "v");
    assert_eq!(v["spec"]["ipFamilies"], json!(["IPv4", "IPv6"]));
    assert_eq!(v["spec"]["sessionAffinity"], "None");
}

#[test]
fn up_to_date_compares_spec_and_our_label() {
    let want = service_import(&cs(false, SessionAffinity::None), "v");
    let mut have = want.clone();
    have["metadata"]["resourceVersion"] = json!("12");
    assert!(import_up_to_date(&have, &want));
    have["spec"]["ips"] = json!(["10.255.0.8"]);
    assert!(!import_up_to_date(&have, &want));
}

fn cond(type_: &'static str, status: ConditionStatus, reason: &str) -> Condition {
    Condition {
        type_,
        status,
        reason: reason.into(),
        message: String::new(),
    }
}

#[test]
fn conditions_keep_their_transition_time_and_are_not_rewritten_when_unchanged() {
    let want = [
        cond("Valid", ConditionStatus::True, "Valid"),
        cond("Conflict", ConditionStatus::False, "NoConflicts"),
    ];
    let first = merged_conditions(&Value::Null, &want, "2026-01-01T00:00:00Z").unwrap();
    assert_eq!(first.len(), 2);
    assert_eq!(first[0]["lastTransitionTime"], "2026-01-01T00:00:00Z");
    // Nothing changed: no write.
    assert!(merged_conditions(&json!(first), &want, "2026-01-02T00:00:00Z").is_none());
    // A conflict appears: Conflict changes (new time), Valid keeps its time; a foreign
    // condition type is kept.
    let mut existing = first.clone();
    existing.push(json!({"type": "Ready", "status": "True", "reason": "Ready",
                         "message": "", "lastTransitionTime": "2025-12-31T00:00:00Z"}));
    let want = [
        cond("Valid", ConditionStatus::True, "Valid"),
        cond("Conflict", ConditionStatus::True, "PortConflict"),
    ];
    let next = merged_conditions(&json!(existing), &want, "2026-01-03T00:00:00Z").unwrap();
    let by = |t: &str| next.iter().find(|c| c["type"] == t).unwrap().clone();
    assert_eq!(by("Valid")["lastTransitionTime"], "2026-01-01T00:00:00Z");
    assert_eq!(by("Conflict")["lastTransitionTime"], "2026-01-03T00:00:00Z");
    assert_eq!(by("Conflict")["reason"], "PortConflict");
    assert_eq!(by("Ready")["reason"], "Ready");
}
