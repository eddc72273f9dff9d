//! A hostile remote API costs a bounded amount (root, netns lab with fake APIs).
//!
//! West's API serves 50,000 nodes, each with a 2 KiB junk annotation, some with an oversized
//! key annotation. The agent of a1 (which watches west) must keep answering /healthz with 200
//! the whole time, stay within the DaemonSet's memory limit (512 MiB), keep the first
//! `limits.nodes` (5,000) nodes, count the rest as ignored and say so in status and metrics.
//! Then a single 20 MiB object: longer than `limits.messageBytes`, it makes the remote stale
//! with a reason naming the limit; the agent keeps its last snapshot and stays healthy.

mod common;

use fakekube::gen;
use sdn_lab::kube::KubeLab;
use sdn_lab::LabOptions;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const NODES: usize = 50_000;
const LIMIT_MIB: u64 = 512;

fn vm_hwm_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn fifty_thousand_nodes_and_a_huge_object_cost_a_bounded_amount() {
    if !common::require_root() {
        return;
    }
    let kl = KubeLab::up(LabOptions {
        bin: Some(env!("CARGO_BIN_EXE_sdn-tunnel").into()),
        nodes_per_cluster: 1,
        ..LabOptions::default()
    })
    .expect("lab up");
    kl.start_agents(|_| serde_json::Value::Null, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let pid = kl.lab.agent_pid("a1").expect("a1 agent");

    // /healthz of a1, polled every 250 ms from now on.
    let stop = AtomicBool::new(false);
    let (polls, bad) = (AtomicU64::new(0), AtomicU64::new(0));
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                match kl.lab.agent_http("a1", "/healthz") {
                    Ok((200, _)) => {}
                    other => {
                        eprintln!("/healthz: {other:?}");
                        bad.fetch_add(1, Ordering::Relaxed);
                    }
                }
                polls.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(250));
            }
        });

        let west = &kl.apis["west"];
        let junk = "j".repeat(2048);
        let t0 = Instant::now();
        let nodes = (0..NODES).map(|i| {
            let name = format!("h{i}");
            let cidr = format!("10.{}.{}.0/24", 132 + i / 65536 % 4, i / 256 % 256);
            let mut n = gen::node(&name, "192.0.2.1", None, &[&cidr]);
            gen::annotate(&mut n, "example.com/junk", &junk);
            let key = if i % 1000 == 7 {
                "k".repeat(4096) // oversized key annotation
            } else {
                sdn_tunnel::keys::encode_key(&sdn_tunnel::keys::public_from_private(&[
                    (i % 251) as u8 + 1,
                    (i / 251 % 251) as u8 + 1,
                    (i / 63001) as u8 + 1,
                    7,
                    7,
                    7,
                    7,
                    7,
                    7,
                    7,
                    7,
                    7,
                    7,
                    7,
                    7,
                    7,
                    7,
                    7,
                    7,
                    7,
                    7,
                    7,
                    7,
                    7,
                    7,
                    7,
                    7,
                    7,
                    7,
                    7,
                    7,
                    7,
                ]))
            };
            gen::annotate(&mut n, "sdn-tunnel.io/public-key", &key);
            gen::annotate(
                &mut n,
                "sdn-tunnel.io/endpoint",
                &format!("192.0.2.{}:51820", i % 250 + 1),
            );
            n
        });
        west.apply_all(nodes).expect("bulk load");
        eprintln!(
            "{NODES} nodes loaded into west's API in {:.1} s",
            t0.elapsed().as_secs_f64()
        );

        // The limit shows in status, and the agent keeps exactly that many nodes.
        kl.wait("west at its node limit", Duration::from_secs(240), || {
            kl.try_status("a1").is_some_and(|s| {
                let r = &s["agent"]["remotes"][0];
                r["limitsHit"].as_array().is_some_and(|l| {
                    l.iter()
                        .any(|h| h["kind"] == "nodes" && h["limit"] == 5000 && h["now"] == true)
                }) && r["nodes"].as_u64().is_some_and(|n| n <= 5000)
            })
        });
        let s = kl.status("a1");
        let r = &s["agent"]["remotes"][0];
        eprintln!(
            "west: {} nodes kept, {} peers, limits {}",
            r["nodes"], r["peers"], r["limitsHit"]
        );
        let (code, metrics) = kl.lab.agent_http("a1", "/metrics").unwrap();
        assert_eq!(code, 200);
        assert!(
            metrics.contains(r#"sdn_tunnel_remote_at_limit{remote="west",kind="nodes"} 1"#),
            "{}",
            metrics
                .lines()
                .filter(|l| l.contains("limit"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        let text = kl.lab.status("a1", false);
        assert!(text.contains("LIMIT nodes: 5000 reached"), "{text}");
        let peak = vm_hwm_kib(pid);
        eprintln!(
            "a1's agent peak RSS with {NODES} remote nodes: {} MiB",
            peak / 1024
        );
        assert!(peak < LIMIT_MIB * 1024, "peak RSS {} MiB", peak / 1024);

        // One object longer than limits.messageBytes (16 MiB).
        let mut huge = gen::node("huge", "192.0.2.1", None, &["10.135.255.0/24"]);
        gen::annotate(&mut huge, "example.com/junk", &"x".repeat(20 << 20));
        west.apply(huge).expect("huge node");
        kl.wait(
            "west stale for a too-long message",
            Duration::from_secs(120),
            || {
                kl.try_status("a1").is_some_and(|s| {
                    let r = &s["agent"]["remotes"][0];
                    r["staleSinceUnix"].is_u64()
                        && r["lastError"]
                            .as_str()
                            .is_some_and(|e| e.contains("limits.messageBytes"))
                })
            },
        );
        let s = kl.status("a1");
        assert!(
            s["agent"]["remotes"][0]["nodes"].as_u64().unwrap() > 0,
            "the last good snapshot is kept"
        );
        let peak = vm_hwm_kib(pid);
        eprintln!("peak RSS after the 20 MiB object: {} MiB", peak / 1024);
        assert!(peak < LIMIT_MIB * 1024, "peak RSS {} MiB", peak / 1024);
        stop.store(true, Ordering::Relaxed);
    });
    let (n, b) = (polls.load(Ordering::Relaxed), bad.load(Ordering::Relaxed));
    eprintln!("/healthz: {n} polls, {b} not 200");
    assert!(n > 20, "too few polls");
    assert_eq!(
        b,
        0,
        "/healthz failed {b} of {n} times\n{}",
        kl.logs()
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .join("\n")
    );
}
