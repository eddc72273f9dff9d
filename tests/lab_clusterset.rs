//! ClusterSetIPs (issue 17, items 4 to 6) end to end on this machine's kernel: the netns lab
//! with three clusters (east, west, south) whose fake API servers export `default/web`;
//! `mcs.clusterSetCIDRs` set everywhere, east's agents on the nftables backend. A pod in east
//! connects to the ClusterSetIP and is answered by east's own pod while it is ready; when it
//! is not, by the first remote of `mcs.failoverOrder` (south), then by west when south's pod
//! is gone as well; back local when east's pod is ready again. Every agent of every cluster
//! computes the same ClusterSetIP; DNS answers it for `web.default.svc.clusterset.local`.
//! The failover gap (endpoint change in the API -> first answer from the next cluster) is
//! printed, not asserted.

mod common;

use fakekube::gen;
use sdn_lab::kube::KubeLab;
use sdn_lab::{serve_named_echo, LabOptions};
use serde_json::json;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);
const CIDR: &str = "10.255.0.0/24";

#[test]
fn clusterset_ip_is_local_first_then_fails_over_in_order() {
    if !common::require_root() || !common::require_program("nft") {
        return;
    }
    let kl = KubeLab::up(LabOptions {
        bin: Some(env!("CARGO_BIN_EXE_sdn-tunnel").into()),
        clusters: 3,
        nodes_per_cluster: 2,
        pods_per_node: 2,
        ..LabOptions::default()
    })
    .expect("lab up");
    let lab = &kl.lab;
    // One backend pod per cluster; east's on a2, so that the client (a1's pod) reaches it
    // through a1's routing like any other pod of its cluster.
    let backends = [("east", "a2"), ("west", "b1"), ("south", "c1")];
    let port = [gen::Port::tcp("http", 80, 8080)];
    for (i, (cluster, node)) in backends.iter().enumerate() {
        serve_named_echo(&lab.pod_ns(node, 0), cluster, 8080).unwrap();
        let svc_cidr = lab.topology().cluster(cluster).unwrap().service_cidr;
        let api = &kl.apis[*cluster];
        api.apply(gen::service(
            "default",
            "web",
            &[&svc_cidr.nth(10).to_string()],
            &port,
        ))
        .unwrap();
        api.apply(slice(&lab.pod_ip(node, 0).to_string(), node, true))
            .unwrap();
        api.apply(gen::service_export("default", "web")).unwrap();
        eprintln!("{cluster}: exports default/web ({i})");
    }
    // A headless service exported by east and west: DNS answers every cluster's endpoints.
    for (cluster, node) in [("east", "a1"), ("west", "b2")] {
        let api = &kl.apis[cluster];
        api.apply(gen::service("default", "db", &[], &port))
            .unwrap();
        api.apply(gen::endpoint_slice(
            "default",
            "db",
            "db-1",
            &[gen::Endpoint::ready(&lab.pod_ip(node, 1).to_string(), node)],
            &port,
        ))
        .unwrap();
        api.apply(gen::service_export("default", "db")).unwrap();
    }
    kl.start_agents(
        |n| {
            let mut extra = json!({"mcs": {
                "clusterSetCIDRs": [CIDR],
                "failoverOrder": {"default/web": ["east", "south", "west"]},
            }});
            if n.starts_with('a') {
                extra["proxy"] = json!({"backend": "nftables"});
            }
            extra
        },
        WAIT,
    )
    .unwrap_or_else(|e| panic!("{e:#}"));

    // Every agent of every cluster agrees on the ClusterSetIP.
    let ip_of = |node: &str| -> Option<String> {
        let s = kl.try_status(node)?;
        let svc = s["agent"]["clusterset"]["services"]
            .as_array()?
            .iter()
            .find(|v| v["name"] == "web")?;
        (svc["members"].as_array()?.len() == 3).then(|| svc["ips"][0].as_str().map(String::from))?
    };
    kl.wait("every agent sees web exported by 3 clusters", WAIT, || {
        ["a1", "a2", "b1", "b2", "c1", "c2"]
            .iter()
            .all(|n| ip_of(n).is_some())
    });
    let ip = ip_of("a1").unwrap();
    for n in ["a2", "b1", "b2", "c1", "c2"] {
        assert_eq!(ip_of(n).as_deref(), Some(ip.as_str()), "{n}'s ClusterSetIP");
    }
    let cidr: ipnetwork::IpNetwork = CIDR.parse().unwrap();
    let vip = SocketAddr::new(ip.parse().unwrap(), 80);
    assert!(cidr.contains(vip.ip()), "{vip} outside {CIDR}");
    let s = kl.status("a1");
    let cs = &s["agent"]["clusterset"];
    assert_eq!(cs["local"]["synced"], true, "{cs}");
    let web = cs["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "web")
        .unwrap();
    let tiers: Vec<(String, u64)> = web["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["cluster"].as_str().unwrap().into(),
                m["tier"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        tiers,
        [("east".into(), 0), ("south".into(), 2), ("west".into(), 3)],
        "{cs}"
    );
    let text = lab.status_output("a1", false);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains(&format!("default/web {ip}: *east local 1/1 ready")),
        "{text}"
    );

    if common::require_program("dig") {
        let dig = |name: &str, t: &str| {
            let out = lab.exec(
                &lab.node_ns("a1"),
                &[
                    "dig",
                    "@127.0.0.1",
                    "-p",
                    "10053",
                    "+short",
                    "+time=2",
                    name,
                    t,
                ],
            );
            let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(String::from)
                .collect();
            v.sort();
            v
        };
        assert_eq!(dig("web.default.svc.clusterset.local", "A"), [ip.as_str()]);
        assert_eq!(
            dig("_http._tcp.web.default.svc.clusterset.local", "SRV"),
            ["0 100 80 web.default.svc.clusterset.local."]
        );
        // Headless: the ready endpoints of east (ours) and west, each also by name.
        let (a1, b2) = (
            lab.pod_ip("a1", 1).to_string(),
            lab.pod_ip("b2", 1).to_string(),
        );
        let mut both = vec![a1.clone(), b2.clone()];
        both.sort();
        assert_eq!(dig("db.default.svc.clusterset.local", "A"), both);
        let dashed = b2.replace('.', "-");
        assert_eq!(
            dig(
                &format!("{dashed}.west.db.default.svc.clusterset.local"),
                "A"
            ),
            [b2.as_str()]
        );
        assert_eq!(
            dig("_http._tcp.db.default.svc.clusterset.local", "SRV").len(),
            2
        );
        // The per-cluster name still answers that cluster's own ClusterIP.
        let west_vip = lab.topology().cluster("west").unwrap().service_cidr.nth(10);
        assert_eq!(
            dig("web.default.svc.cluster.west", "A"),
            [west_vip.to_string()]
        );
    }

    let pod = lab.pod_ns("a1", 0);
    let who = || {
        sdn_lab::hello(&pod, vip)
            .map(|(w, _)| w)
            .unwrap_or_else(|e| format!("error: {e}"))
    };
    kl.wait("a1's pod reaches the ClusterSetIP", WAIT, || {
        who() == "east"
    });
    for _ in 0..5 {
        assert_eq!(who(), "east", "local endpoints first");
    }

    // East's pod goes unready: south (first in failoverOrder) takes over, west stays standby.
    let gap = |cluster: &str, node: &str, ready: bool, want: &str| -> Duration {
        let t = Instant::now();
        kl.apis[cluster]
            .apply(slice(&lab.pod_ip(node, 0).to_string(), node, ready))
            .unwrap();
        kl.wait(&format!("answers from {want}"), WAIT, || who() == want);
        t.elapsed()
    };
    let to_south = gap("east", "a2", false, "south");
    for _ in 0..5 {
        assert_eq!(who(), "south", "the first remote tier only");
    }
    let to_west = gap("south", "c1", false, "west");
    let back = gap("east", "a2", true, "east");
    eprintln!(
        "failover: east -> south {:.2} s, south -> west {:.2} s, back to east {:.2} s \
         (endpoint change in the API to the first answer from the next cluster)",
        to_south.as_secs_f64(),
        to_west.as_secs_f64(),
        back.as_secs_f64()
    );
}

/// `default/web`'s EndpointSlice with one endpoint.
fn slice(ip: &str, node: &str, ready: bool) -> serde_json::Value {
    let ep = if ready {
        gen::Endpoint::ready(ip, node)
    } else {
        gen::Endpoint {
            ready: false,
            serving: false,
            ..gen::Endpoint::ready(ip, node)
        }
    };
    gen::endpoint_slice(
        "default",
        "web",
        "web-1",
        &[ep],
        &[gen::Port::tcp("http", 80, 8080)],
    )
}
