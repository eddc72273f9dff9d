//! Remote ClusterIPs through the nftables backend, end to end on this machine's kernel (no VM):
//! the netns lab with peers and services from fake API servers; east's agents run
//! `proxy: {backend: nftables}`. A pod in east connects to a west ClusterIP and is balanced
//! round robin over west pods through the tunnel; an empty service refuses at once; a removed
//! endpoint gets no new connections while its open one keeps working; the node itself reaches
//! the ClusterIP; an agent killed and restarted keeps established connections alive. The
//! agent's DNS answers the service's names from the same snapshot.

mod common;

use fakekube::gen;
use sdn_lab::kube::KubeLab;
use sdn_lab::{serve_named_echo, LabOptions};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);

fn echo(s: &mut TcpStream, text: &str) -> String {
    writeln!(s, "{text}").unwrap();
    let mut line = String::new();
    BufReader::new(s.try_clone().unwrap())
        .read_line(&mut line)
        .unwrap();
    line.trim().to_string()
}

#[test]
fn remote_cluster_ip_through_nftables() {
    if !common::require_root() || !common::require_program("nft") {
        return;
    }
    let kl = KubeLab::up(LabOptions {
        bin: Some(env!("CARGO_BIN_EXE_sdn-tunnel").into()),
        pods_per_node: 2,
        ..LabOptions::default()
    })
    .expect("lab up");
    let lab = &kl.lab;
    let west_svc = lab.topology().cluster("west").unwrap().service_cidr;
    let vip = SocketAddr::new(west_svc.nth(10).into(), 80);
    let empty_vip = SocketAddr::new(west_svc.nth(11).into(), 80);
    let private_vip = SocketAddr::new(west_svc.nth(12).into(), 80);
    let backends = [("b1", 0), ("b1", 1), ("b2", 0)];
    let mut names = Vec::new();
    for (n, p) in backends {
        let name = format!("{n}-p{p}");
        serve_named_echo(&lab.pod_ns(n, p), &name, 8080).unwrap();
        names.push(name);
    }
    let slice = |list: &[(&str, usize)]| {
        let eps: Vec<gen::Endpoint> = list
            .iter()
            .map(|(n, p)| gen::Endpoint::ready(&lab.pod_ip(n, *p).to_string(), n))
            .collect();
        gen::endpoint_slice(
            "default",
            "web",
            "web-1",
            &eps,
            &[gen::Port::tcp("http", 80, 8080)],
        )
    };
    let west = &kl.apis["west"];
    let port = [gen::Port::tcp("http", 80, 8080)];
    west.apply(gen::service(
        "default",
        "web",
        &[&vip.ip().to_string()],
        &port,
    ))
    .unwrap();
    west.apply(slice(&backends)).unwrap();
    west.apply(gen::service(
        "default",
        "empty",
        &[&empty_vip.ip().to_string()],
        &port,
    ))
    .unwrap();
    // `import: exported` (the default): west exports these two; a third Service it does not
    // export stays out of every node of east.
    for svc in ["web", "empty"] {
        west.apply(gen::service_export("default", svc)).unwrap();
    }
    west.apply(gen::service(
        "default",
        "private",
        &[&private_vip.ip().to_string()],
        &port,
    ))
    .unwrap();
    kl.start_agents(
        |n| {
            if n.starts_with('a') {
                serde_json::json!({"proxy": {"backend": "nftables"}})
            } else {
                serde_json::Value::Null
            }
        },
        WAIT,
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    kl.wait("a1 programs 2 virtual services", WAIT, || {
        kl.try_status("a1").is_some_and(|s| {
            s["agent"]["proxy"]["virtualServices"] == 2
                && s["agent"]["proxy"]["lastSyncUnix"].is_u64()
        })
    });
    let pod = lab.pod_ns("a1", 0);
    let import = &kl.status("a1")["agent"]["remotes"][0]["import"];
    assert_eq!(import["serviceExports"], 2, "{import}");
    assert_eq!(import["notExported"], 1, "{import}");
    assert_eq!(
        import["exportApi"], "multicluster.x-k8s.io/v1beta1",
        "{import}"
    );

    // The agent's DNS answers the remote service's name with its ClusterIP (the same snapshot
    // the proxy uses), per remote and in the merged clusterset zone.
    if common::require_program("dig") {
        let dig = |name: &str| {
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
                    "A",
                ],
            );
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        assert_eq!(dig("web.default.svc.cluster.west"), vip.ip().to_string());
        assert_eq!(
            dig("web.default.svc.clusterset.local"),
            vip.ip().to_string()
        );
        let s = kl.status("a1");
        let zones = s["agent"]["dns"]["zones"]["zones"].to_string();
        assert!(zones.contains("cluster.west"), "{s}");
        assert!(
            s["agent"]["dns"]["queries"]["noerror"].as_u64() >= Some(2),
            "{s}"
        );
    }

    // Round robin over the three remote pods.
    let mut seen = BTreeMap::<String, usize>::new();
    for _ in 0..15 {
        let (who, _) = sdn_lab::hello(&pod, vip)
            .unwrap_or_else(|e| panic!("connect {vip}: {e}\n{}", kl.logs()));
        *seen.entry(who).or_default() += 1;
    }
    eprintln!("replies: {seen:?}");
    for n in &names {
        assert_eq!(seen.get(n), Some(&5), "round robin: {seen:?}");
    }
    // The node itself (host-originated) reaches the ClusterIP too.
    let (who, _) = sdn_lab::hello(&lab.node_ns("a1"), vip).expect("node a1 -> ClusterIP");
    assert!(names.contains(&who));

    // An empty service refuses at once.
    let t = Instant::now();
    let e = sdn_lab::hello(&pod, empty_vip).expect_err("empty service must refuse");
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "took {:?}",
        t.elapsed()
    );

    // Unexport: the virtual service goes from east's nodes; export again: it is back.
    // The time is printed (the issue asks for about a second); the bound only catches a hang.
    let kl_ref = &kl;
    let virtual_services = move |n: u64| {
        move || {
            kl_ref
                .try_status("a1")
                .is_some_and(|s| s["agent"]["proxy"]["virtualServices"] == n)
        }
    };
    let t = Instant::now();
    west.delete("serviceexports", Some("default"), "empty")
        .unwrap();
    kl.wait("a1 drops the unexported service", WAIT, virtual_services(1));
    let unexported = t.elapsed();
    let t = Instant::now();
    west.apply(gen::service_export("default", "empty")).unwrap();
    kl.wait(
        "a1 programs the re-exported service",
        WAIT,
        virtual_services(2),
    );
    eprintln!(
        "unexport followed in {:.2} s, export in {:.2} s (status polled every 0.2 s)",
        unexported.as_secs_f64(),
        t.elapsed().as_secs_f64()
    );

    // A removed endpoint: no new connections, the open one lives on.
    let (victim, mut held) = sdn_lab::hello(&pod, vip).unwrap();
    let rest: Vec<_> = backends
        .iter()
        .zip(&names)
        .filter(|(_, n)| **n != victim)
        .map(|(b, _)| *b)
        .collect();
    west.apply(slice(&rest)).unwrap();
    kl.wait("a1 drops the endpoint", WAIT, || {
        kl.try_status("a1")
            .is_some_and(|s| s["agent"]["proxy"]["realServers"] == 2)
    });
    for _ in 0..6 {
        let (who, _) = sdn_lab::hello(&pod, vip).unwrap();
        assert_ne!(who, victim, "a removed endpoint got a new connection");
    }
    // That endpoint change was timed from the watch event to the kernel (the SLI metric).
    let (code, m) = lab.agent_http("a1", "/metrics").unwrap();
    assert_eq!(code, 200);
    let series = |s: &str| sdn_lab::metric_value(&m, s).unwrap_or_else(|| panic!("{s}:\n{m}"));
    let n = series("sdn_tunnel_network_programming_duration_seconds_count");
    let sum = series("sdn_tunnel_network_programming_duration_seconds_sum");
    assert!(n >= 1.0, "no programming latency observed:\n{m}");
    assert!(
        sum / n < WAIT.as_secs_f64(),
        "mean programming latency {}s",
        sum / n
    );
    assert_eq!(echo(&mut held, "still here"), "still here");

    // Crash and restart: the table stays, established connections keep working.
    let (_, mut long) = sdn_lab::hello(&pod, vip).unwrap();
    lab.stop_agent("a1", libc::SIGKILL).unwrap();
    lab.start_agent("a1").unwrap();
    lab.wait_agent_ready("a1", WAIT).unwrap();
    kl.wait("a1 proxy synced after restart", WAIT, || {
        kl.try_status("a1")
            .is_some_and(|s| s["agent"]["proxy"]["lastSyncUnix"].is_u64())
    });
    kl.wait("tunnel back after restart", WAIT, || {
        kl.pod_ping("a1", "b1")
    });
    assert_eq!(echo(&mut long, "after restart"), "after restart");
    assert_eq!(echo(&mut held, "still"), "still");
    let (who, _) = sdn_lab::hello(&pod, vip).unwrap();
    assert_ne!(who, victim);
}
