//! Remote ClusterIPs through real kernel IPVS, end to end: this machine's kernel has no IPVS,
//! so the test re-runs itself inside the VM (`../shared/vm/vm-run`, one boot) and builds the
//! netns lab there, with peers and services from fake API servers (the kube source). A pod in
//! cluster east connects to a west ClusterIP; IPVS on its own node picks a west pod; the
//! connection goes through the tunnel.
//!
//! Checks: the real `ipvsadm -Ln` equals `sdn-tunnel status --ipvs`; round robin over 3
//! backends (by their replies); a removed endpoint drains (weight 0, its open connection keeps
//! working, no new ones, deleted after); the node itself reaches the ClusterIP (source NAT);
//! an empty service refuses at once; a restarted agent
//! (after SIGKILL) adopts IPVS without changing anything; a ClusterSetIP (east and west both
//! export `web`) is served by east's own pod (weight 1, west's weight 0, `Standby`) and by
//! west's pods once east's is not ready.
//!
//! The agents run from inside the agent image (the Dockerfile's runtime stage, built by
//! scripts/lab-images.sh on this machine before the VM boots, unpacked under target/): IPVS,
//! the nftables MSS rules and everything else the agent does are proven with the image's own
//! nft and libraries, not only the host's.

mod common;

use fakekube::gen;
use sdn_lab::kube::KubeLab;
use sdn_lab::{serve_named_echo, LabOptions};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(120);

/// A backend: the pod answers with its name, then echoes.
fn serve(kl: &KubeLab, node: &str, pod: usize, port: u16) -> String {
    let name = format!("{node}-p{pod}");
    serve_named_echo(&kl.lab.pod_ns(node, pod), &name, port).unwrap();
    name
}

/// Connects from pod 0 of `node` to `vip` and reads the backend's name.
fn hello(kl: &KubeLab, node: &str, vip: SocketAddr) -> std::io::Result<(String, TcpStream)> {
    sdn_lab::hello(&kl.lab.pod_ns(node, 0), vip)
}

fn ipvsadm(kl: &KubeLab, node: &str) -> String {
    let out = kl.lab.exec(&kl.lab.node_ns(node), &["ipvsadm", "-Ln"]);
    assert!(out.status.success(), "ipvsadm: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn our_ipvs_text(kl: &KubeLab, node: &str) -> String {
    let bin = env!("CARGO_BIN_EXE_sdn-tunnel");
    let cfg = kl.lab.agent_config_path(node);
    let out = kl.lab.exec(
        &kl.lab.node_ns(node),
        &[bin, "status", "--config", cfg.to_str().unwrap(), "--ipvs"],
    );
    assert!(out.status.success(), "status --ipvs: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// `(weight, active, inactive)` of `dest` under `vip` in `ipvsadm -Ln`, if listed.
fn dest_line(text: &str, vip: SocketAddr, dest: SocketAddr) -> Option<(u32, u32, u32)> {
    let mut in_vip = false;
    for l in text.lines() {
        if l.starts_with("TCP") || l.starts_with("UDP") {
            in_vip = l.split_whitespace().nth(1) == Some(&vip.to_string());
        } else if in_vip && l.trim_start().starts_with("->") {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.get(1) == Some(&dest.to_string().as_str()) {
                return Some((f[3].parse().ok()?, f[4].parse().ok()?, f[5].parse().ok()?));
            }
        }
    }
    None
}

fn slice(kl: &KubeLab, backends: &[(&str, usize)]) -> serde_json::Value {
    let eps: Vec<gen::Endpoint> = backends
        .iter()
        .map(|(n, p)| gen::Endpoint::ready(&kl.lab.pod_ip(n, *p).to_string(), n))
        .collect();
    gen::endpoint_slice(
        "default",
        "web",
        "web-1",
        &eps,
        &[gen::Port::tcp("http", 80, 8080)],
    )
}

#[test]
fn remote_cluster_ip_through_ipvs() {
    if !common::require_root() {
        return;
    }
    let rootfs = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("agent-image-rootfs");
    if std::env::var_os("VM_RUN_GUEST").is_none() {
        use sdn_lab::realkube::{bins::repo_root, images};
        let built = images::build(
            &repo_root(),
            &images::cache_dir(),
            std::path::Path::new(env!("CARGO_BIN_EXE_sdn-tunnel")),
        )
        .unwrap_or_else(|e| panic!("the agent image (scripts/lab-images.sh): {e:#}"));
        images::extract_rootfs(&built.agent, &rootfs).expect("unpack the agent image");
    }
    if !common::in_vm_or_rerun("remote_cluster_ip_through_ipvs") {
        return;
    }
    let kl = KubeLab::up(LabOptions {
        bin: Some(env!("CARGO_BIN_EXE_sdn-tunnel").into()),
        pods_per_node: 2,
        agent_rootfs: Some(rootfs.clone()),
        ..LabOptions::default()
    })
    .expect("lab up");
    let west_svc = kl.lab.topology().cluster("west").unwrap().service_cidr;
    let vip = SocketAddr::new(west_svc.nth(10).into(), 80);
    let empty_vip = SocketAddr::new(west_svc.nth(11).into(), 80);
    let backends = [("b1", 0), ("b1", 1), ("b2", 0)];
    let names: Vec<String> = backends
        .iter()
        .map(|(n, p)| serve(&kl, n, *p, 8080))
        .collect();
    let west = &kl.apis["west"];
    let port = [gen::Port::tcp("http", 80, 8080)];
    west.apply(gen::service(
        "default",
        "web",
        &[&vip.ip().to_string()],
        &port,
    ))
    .unwrap();
    west.apply(slice(&kl, &backends)).unwrap();
    // `import: exported` (the default).
    for svc in ["web", "empty"] {
        west.apply(gen::service_export("default", svc)).unwrap();
    }
    west.apply(gen::service(
        "default",
        "empty",
        &[&empty_vip.ip().to_string()],
        &port,
    ))
    .unwrap();
    west.apply(gen::endpoint_slice(
        "default",
        "empty",
        "empty-1",
        &[],
        &port,
    ))
    .unwrap();
    // East exports `web` too, served by a pod of a2: with ClusterSetIPs on, one VIP over both.
    let local_name = serve(&kl, "a2", 0, 8080);
    let east = &kl.apis["east"];
    let east_svc = kl.lab.topology().cluster("east").unwrap().service_cidr;
    east.apply(gen::service(
        "default",
        "web",
        &[&east_svc.nth(10).to_string()],
        &port,
    ))
    .unwrap();
    east.apply(slice(&kl, &[("a2", 0)])).unwrap();
    east.apply(gen::service_export("default", "web")).unwrap();

    kl.start_agents(
        |n| {
            let mcs = serde_json::json!({"clusterSetCIDRs": ["10.255.0.0/24"]});
            if n.starts_with('a') {
                serde_json::json!({"proxy": {"backend": "ipvs", "drainTimeoutSeconds": 15},
                                   "mcs": mcs})
            } else {
                serde_json::json!({ "mcs": mcs })
            }
        },
        LONG,
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    // The agent really runs inside the image.
    let pid = kl.lab.agent_pid("a1").expect("a1 agent");
    // (The VM's own root is a chroot too: the link may carry its prefix, /newroot.)
    let root = std::fs::read_link(format!("/proc/{pid}/root")).unwrap();
    assert!(
        root.ends_with(rootfs.strip_prefix("/").unwrap()),
        "agent root {root:?}"
    );
    // west's web and empty, and their ClusterSetIPs (every exported service has one).
    kl.wait("a1 programs 4 virtual services", LONG, || {
        kl.try_status("a1")
            .is_some_and(|s| s["agent"]["proxy"]["virtualServices"] == 4)
    });

    // 1. Our status prints exactly what the real ipvsadm prints.
    kl.wait("3 real servers in ipvsadm", LONG, || {
        (0..3).all(|i| {
            let dest = SocketAddr::new(kl.lab.pod_ip(backends[i].0, backends[i].1).into(), 8080);
            dest_line(&ipvsadm(&kl, "a1"), vip, dest).is_some()
        })
    });
    let real = ipvsadm(&kl, "a1");
    assert_eq!(our_ipvs_text(&kl, "a1"), real);
    eprintln!("ipvsadm -Ln on a1:\n{real}");
    let annotated = kl.lab.status("a1", false);
    assert!(annotated.contains("# west/default/web:http"), "{annotated}");

    // 2. Round robin across the 3 remote pods, through the tunnel.
    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    for _ in 0..15 {
        let (who, _) =
            hello(&kl, "a1", vip).unwrap_or_else(|e| panic!("connect {vip}: {e}\n{}", kl.logs()));
        *seen.entry(who).or_default() += 1;
    }
    eprintln!("replies: {seen:?}");
    for n in &names {
        assert!(
            seen.get(n).copied().unwrap_or(0) >= 3,
            "{n} got too few: {seen:?}"
        );
    }

    // The node itself (host-originated, source NAT into its pod CIDR) reaches it too.
    let (who, _) = sdn_lab::hello(&kl.lab.node_ns("a1"), vip)
        .unwrap_or_else(|e| panic!("node a1 -> {vip}: {e}\n{}", kl.logs()));
    assert!(names.contains(&who), "{who}");

    // 3. An empty service refuses at once (no silent timeout).
    let t = Instant::now();
    let r = hello(&kl, "a1", empty_vip);
    let took = t.elapsed();
    let e = r.expect_err("connecting to an empty service must fail");
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
    assert!(took < Duration::from_secs(1), "refusal took {took:?}");

    // 4. Endpoint removal drains: weight 0, the open connection lives on, then it goes.
    let (victim, mut held) = hello(&kl, "a1", vip).unwrap();
    let i = names.iter().position(|n| *n == victim).unwrap();
    let victim_addr = SocketAddr::new(kl.lab.pod_ip(backends[i].0, backends[i].1).into(), 8080);
    let rest: Vec<_> = backends
        .iter()
        .enumerate()
        .filter(|(j, _)| *j != i)
        .map(|(_, b)| *b)
        .collect();
    west.apply(slice(&kl, &rest)).unwrap();
    kl.wait("victim quiesced (weight 0)", LONG, || {
        matches!(
            dest_line(&ipvsadm(&kl, "a1"), vip, victim_addr),
            Some((0, _, _))
        )
    });
    for _ in 0..6 {
        let (who, _) = hello(&kl, "a1", vip).unwrap();
        assert_ne!(who, victim, "a draining backend got a new connection");
    }
    writeln!(held, "still here").unwrap();
    let mut line = String::new();
    BufReader::new(held.try_clone().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(
        line.trim(),
        "still here",
        "the drained connection must keep working"
    );
    drop(held);
    kl.wait("victim deleted after draining", LONG, || {
        dest_line(&ipvsadm(&kl, "a1"), vip, victim_addr).is_none()
    });

    // 5. Restart after a crash adopts IPVS as it is: nothing deleted or re-created.
    let before = ipvsadm(&kl, "a1");
    kl.lab.stop_agent("a1", libc::SIGKILL).unwrap();
    let log_len = kl.lab.agent_log("a1").len();
    kl.lab.start_agent("a1").unwrap();
    kl.lab.wait_agent_ready("a1", LONG).unwrap();
    kl.wait("a1 proxy synced after restart", LONG, || {
        kl.try_status("a1")
            .is_some_and(|s| s["agent"]["proxy"]["lastSyncUnix"].is_u64())
    });
    let after_log = kl.lab.agent_log("a1")[log_len..].to_string();
    assert!(
        !after_log.contains("IPVS programmed"),
        "restart changed IPVS:\n{after_log}"
    );
    let strip = |t: &str| -> Vec<String> {
        // Connection counters move; compare everything else.
        t.lines()
            .map(|l| l.split_whitespace().take(4).collect::<Vec<_>>().join(" "))
            .collect()
    };
    assert_eq!(strip(&ipvsadm(&kl, "a1")), strip(&before));
    kl.wait("traffic after restart", LONG, || {
        hello(&kl, "a1", vip).is_ok()
    });

    // 6. The ClusterSetIP: east's own pod first (weight 1), west's on standby (weight 0);
    // when east's pod is not ready, west's take the new connections.
    // (Just restarted: the sources sync again first; IPVS kept everything meanwhile.)
    let web_ip = || -> Option<String> {
        let s = kl.try_status("a1")?;
        s["agent"]["clusterset"]["services"]
            .as_array()?
            .iter()
            .find(|v| v["name"] == "web")
            .and_then(|v| v["ips"][0].as_str())
            .map(String::from)
    };
    kl.wait("a1 knows web's ClusterSetIP again", LONG, || {
        web_ip().is_some()
    });
    let cs_ip = web_ip().unwrap();
    let cs_vip = SocketAddr::new(cs_ip.parse().unwrap(), 80);
    let local = SocketAddr::new(kl.lab.pod_ip("a2", 0).into(), 8080);
    let remote: Vec<SocketAddr> = rest
        .iter()
        .map(|(n, p)| SocketAddr::new(kl.lab.pod_ip(n, *p).into(), 8080))
        .collect();
    let weights = |text: &str| -> (Option<u32>, Vec<Option<u32>>) {
        (
            dest_line(text, cs_vip, local).map(|d| d.0),
            remote
                .iter()
                .map(|r| dest_line(text, cs_vip, *r).map(|d| d.0))
                .collect(),
        )
    };
    kl.wait("local weight 1, remote 0", LONG, || {
        weights(&ipvsadm(&kl, "a1")) == (Some(1), vec![Some(0); remote.len()])
    });
    for _ in 0..4 {
        let (who, _) = hello(&kl, "a1", cs_vip)
            .unwrap_or_else(|e| panic!("connect {cs_vip}: {e}\n{}", kl.logs()));
        assert_eq!(who, local_name, "the local pod first");
    }
    let t = Instant::now();
    east.apply(gen::endpoint_slice(
        "default",
        "web",
        "web-1",
        &[gen::Endpoint {
            ready: false,
            serving: false,
            ..gen::Endpoint::ready(&local.ip().to_string(), "a2")
        }],
        &port,
    ))
    .unwrap();
    kl.wait("local weight 0, remote 1", LONG, || {
        weights(&ipvsadm(&kl, "a1")) == (Some(0), vec![Some(1); remote.len()])
    });
    eprintln!(
        "failover to west's pods in IPVS {:.2} s after the endpoint change",
        t.elapsed().as_secs_f64()
    );
    for _ in 0..4 {
        let (who, _) = hello(&kl, "a1", cs_vip).unwrap();
        assert_ne!(
            who, local_name,
            "a not-ready local pod got a new connection"
        );
    }
    // Our status still prints what ipvsadm does (connection counters aside: they move).
    assert_eq!(strip(&our_ipvs_text(&kl, "a1")), strip(&ipvsadm(&kl, "a1")));
}
