//! Peers from the Kubernetes API, end to end in the netns lab (root): each cluster has a fake
//! API server (listening on its first node's underlay address), every agent advertises itself
//! on its own Node there, and the other cluster's agents watch it. Then: pod traffic flows; an
//! API outage of 30 s tears nothing down; a node that leaves loses its peer and comes back; a
//! rotated key file is re-advertised and followed by the peers, without restarts.

mod common;

use sdn_lab::kube::KubeLab;
use sdn_lab::LabOptions;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

fn file_key(path: &std::path::Path) -> String {
    let private = sdn_tunnel::keys::read_private_key_file(path).unwrap();
    sdn_tunnel::keys::encode_key(&sdn_tunnel::keys::public_from_private(&private))
}

#[test]
fn peers_from_the_api_survive_outages_follow_churn_and_rekey() {
    if !common::require_root() {
        return;
    }
    let kl = KubeLab::up(LabOptions {
        bin: Some(env!("CARGO_BIN_EXE_sdn-tunnel").into()),
        ..LabOptions::default()
    })
    .expect("lab up");
    let lab = &kl.lab;
    // a2 has no key yet: the agent must create one (0600) and advertise it.
    std::fs::remove_file(lab.private_key_file("a2")).unwrap();
    kl.start_agents(|_| serde_json::Value::Null, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e:#}"));

    // Self-advertisement: every Node carries the key of its node's key file.
    let mode = std::fs::metadata(lab.private_key_file("a2"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "generated key file mode");
    for n in lab.agent_nodes() {
        assert_eq!(
            kl.advertised_key(&n),
            Some(file_key(&lab.private_key_file(&n))),
            "advertised key of {n}"
        );
        let node = kl.apis[&lab.node(&n).cluster]
            .get("Node", None, &n)
            .unwrap();
        assert_eq!(
            node["metadata"]["annotations"]["sdn-tunnel.io/endpoint"],
            format!("{}:{}", lab.node(&n).underlay_v4, lab.node(&n).listen_port),
            "advertised endpoint of {n}"
        );
    }
    let s = kl.status("a1");
    let west = &s["agent"]["remotes"][0];
    assert_eq!(west["name"], "west");
    assert_eq!(west["source"], "kube");
    assert_eq!(west["synced"], true);
    assert_eq!(west["peers"], 2);
    assert!(s["agent"]["advertisement"]["lastOkUnix"].is_u64(), "{s}");
    // The route source came from the Node's spec.podCIDRs (no node.podCIDRs configured):
    // host-originated traffic to a remote pod works.
    assert!(
        lab.ping(&lab.node_ns("a1"), lab.pod_ip("b1", 0)),
        "node a1 -> pod b1"
    );

    // ----- API outage (both clusters) for 30 s: nothing torn down, traffic flows -----
    for api in kl.apis.values() {
        api.set_down(true);
    }
    let down_at = Instant::now();
    let mut pings = 0;
    while down_at.elapsed() < Duration::from_secs(30) {
        assert!(
            kl.pod_ping("a1", "b2"),
            "ping a1 -> b2 during the outage\n{}",
            kl.logs()
        );
        assert!(kl.pod_ping("b1", "a2"), "ping b1 -> a2 during the outage");
        pings += 2;
        std::thread::sleep(Duration::from_secs(2));
    }
    let s = kl.status("a1");
    let west = &s["agent"]["remotes"][0];
    assert!(
        west["staleSinceUnix"].is_u64(),
        "west must show as stale: {west}"
    );
    assert_eq!(west["peers"], 2, "peers kept during the outage");
    let text = lab.status("a1", false);
    assert!(text.contains("west (kube): STALE since"), "{text}");
    for api in kl.apis.values() {
        api.set_down(false);
    }
    kl.wait("west synced again", Duration::from_secs(30), || {
        kl.status("a1")["agent"]["remotes"][0]["staleSinceUnix"].is_null()
    });
    eprintln!("outage: {pings} pings answered while both APIs were down");

    // ----- a node leaves, then comes back -----
    let west_api = &kl.apis["west"];
    let b2 = west_api.get("Node", None, "b2").unwrap();
    west_api.delete("Node", None, "b2").unwrap();
    kl.wait("a1 drops peer b2", Duration::from_secs(10), || {
        kl.peer_key("a1", "b2").is_none()
    });
    assert!(!kl.pod_ping("a1", "b2"), "no peer, no path");
    assert!(kl.pod_ping("a1", "b1"), "other peers undisturbed");
    west_api.apply(b2).unwrap();
    kl.wait("a1 re-adds peer b2", Duration::from_secs(10), || {
        kl.peer_key("a1", "b2").is_some()
    });
    kl.wait("a1 -> b2 again", Duration::from_secs(15), || {
        kl.pod_ping("a1", "b2")
    });

    // ----- key rotation on b1: replace the file, no restart -----
    let b1_pid = lab.agent_pid("b1");
    let path = lab.private_key_file("b1");
    let tmp = path.with_extension("new");
    sdn_tunnel::keys::write_private_key_file(&tmp, &sdn_tunnel::keys::generate_private()).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    let new_key = file_key(&path);
    kl.wait("b1 re-advertises", Duration::from_secs(15), || {
        kl.advertised_key("b1").as_deref() == Some(new_key.as_str())
    });
    for a in ["a1", "a2"] {
        kl.wait("peers follow the new key", Duration::from_secs(10), || {
            kl.peer_key(a, "b1").as_deref() == Some(new_key.as_str())
        });
    }
    kl.wait("a1 -> b1 with the new key", Duration::from_secs(20), || {
        kl.pod_ping("a1", "b1")
    });
    assert!(kl.pod_ping("b1", "a2"), "b1 -> a2 with the new key");
    assert_eq!(lab.agent_pid("b1"), b1_pid, "no restart");
    assert!(kl.lab.agent_log("b1").contains("private key rotated"));
    for n in lab.agent_nodes() {
        assert!(lab.agent_running(&n), "agent {n} still running");
    }
}
