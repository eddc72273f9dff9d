//! `sdn-tunnel diagnose` against a real lab (root): one KubeLab (two clusters x two nodes, live
//! remotes from fake APIs, the nftables proxy), diagnosed from node a1's namespace. Healthy
//! first (all green, exit 0, `--json` parses), then broken one way at a time, restoring in
//! between so one lab boot serves every case: rp_filter strict, underlay MTU too small,
//! overlapping CIDRs (a foreign route and a local address inside west's pod CIDR), west's API
//! down, a peer down (with `--stale-after`), and finally the agent itself stopped.

mod common;

use sdn_lab::kube::KubeLab;
use sdn_lab::LabOptions;
use serde_json::Value;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_sdn-tunnel");
const NODE: &str = "a1";

struct Diag {
    code: i32,
    /// Text output, or the JSON document's text.
    out: String,
}

fn run(kl: &KubeLab, extra: &[&str]) -> Diag {
    let lab = &kl.lab;
    let cfg = lab.agent_config_path(NODE).to_string_lossy().into_owned();
    let mut args = vec![BIN, "diagnose", "-c", cfg.as_str()];
    args.extend_from_slice(extra);
    let o = lab.exec(&lab.node_ns(NODE), &args);
    Diag {
        code: o.status.code().unwrap_or(-1),
        out: format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    }
}

/// `diagnose --json` (plus `extra`): exit code and the checks as (name, status, detail).
fn run_json(kl: &KubeLab, extra: &[&str]) -> (i32, Vec<(String, String, String)>, String) {
    let mut args = vec!["--json"];
    args.extend_from_slice(extra);
    let d = run(kl, &args);
    let v: Value = serde_json::from_str(&d.out)
        .unwrap_or_else(|e| panic!("diagnose --json is not JSON: {e}:\n{}", d.out));
    assert_eq!(
        v["ok"],
        d.code == 0,
        "ok vs exit code {}: {}",
        d.code,
        d.out
    );
    let checks = v["checks"]
        .as_array()
        .expect("checks array")
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["status"].as_str().unwrap().to_string(),
                c["detail"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    (d.code, checks, d.out)
}

fn has(checks: &[(String, String, String)], name: &str, status: &str, detail: &str) -> bool {
    checks
        .iter()
        .any(|(n, s, d)| n == name && s == status && d.contains(detail))
}

/// Runs `diagnose --json` until `want` holds (the agent and the lab need a moment to notice
/// changes); returns the last result. Panics with the output and the agents' logs on timeout.
fn wait_for(
    kl: &KubeLab,
    what: &str,
    extra: &[&str],
    timeout: Duration,
    want: impl Fn(i32, &[(String, String, String)]) -> bool,
) -> (i32, Vec<(String, String, String)>) {
    let deadline = Instant::now() + timeout;
    loop {
        let (code, checks, out) = run_json(kl, extra);
        if want(code, &checks) {
            return (code, checks);
        }
        if Instant::now() > deadline {
            panic!(
                "timed out ({timeout:?}) waiting for diagnose to show {what}; last output (exit {code}):\n{out}\n{}",
                kl.logs()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn in_node(kl: &KubeLab, args: &[&str]) {
    kl.lab
        .exec_ok(&kl.lab.node_ns(NODE), args)
        .unwrap_or_else(|e| panic!("{args:?}: {e:#}"));
}

fn healthy(kl: &KubeLab, what: &str) {
    wait_for(kl, what, &[], Duration::from_secs(60), |code, _| code == 0);
}

#[test]
fn diagnose_finds_what_is_broken() {
    if !common::require_root() {
        return;
    }
    let kl = KubeLab::up(LabOptions {
        bin: Some(BIN.into()),
        ..LabOptions::default()
    })
    .expect("lab up");
    kl.start_agents(
        |_| serde_json::json!({"proxy": {"backend": "nftables"}}),
        Duration::from_secs(30),
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    let lab = &kl.lab;
    let dev = lab.device(NODE);

    // Each step is reported on its own: a failing one does not hide the next.
    let mut checks = common::checks::Checks::default();
    checks.run("a healthy node: every check OK", || {
        healthy(&kl, "a healthy node");
        let text = run(&kl, &[]);
        eprintln!("diagnose on a healthy {NODE}:\n{}", text.out);
        assert_eq!(text.code, 0, "{}", text.out);
        let lines: Vec<&str> = text.out.lines().collect();
        let (summary, checks) = lines.split_last().unwrap();
        assert!(summary.contains(" 0 fail"), "{summary}");
        for l in checks {
            let mut w = l.split_whitespace();
            let (status, name) = (w.next().unwrap(), w.next().unwrap());
            match (status, name) {
                // No IPVS (nftables here), no ClusterSetIPs configured.
                ("OK", _) | ("SKIP", "ipvs" | "clusterset") | ("WARN", "clock") => {}
                _ => panic!("not OK on a healthy node: {l}\n{}", text.out),
            }
        }
        for name in [
            "agent",
            "device",
            "ip_forward",
            "rp_filter",
            "mtu",
            "mss_clamp",
            "nft_tables",
            "routes",
            "cidr_overlaps",
            "remotes",
            "peers",
            "udp_port",
            "clock",
        ] {
            assert!(
                checks
                    .iter()
                    .any(|l| l.split_whitespace().nth(1) == Some(name)),
                "no {name} line:\n{}",
                text.out
            );
        }
        let (code, checks, _) = run_json(&kl, &[]);
        assert_eq!(code, 0);
        assert!(has(&checks, "nft_tables", "ok", "_proxy"), "{checks:?}");
        assert!(has(&checks, "peers", "ok", "2 peer(s)"), "{checks:?}");
        Ok(String::new())
    });
    checks.run(
        "rp_filter strict on the tunnel device, with the sysctl hint",
        || {
            let rp = format!("net.ipv4.conf.{dev}.rp_filter");
            in_node(&kl, &["sysctl", "-qw", &format!("{rp}=1")]);
            let (code, checks, out) = run_json(&kl, &[]);
            assert_eq!(code, 1, "{out}");
            assert!(has(&checks, "rp_filter", "fail", "strict (1)"), "{out}");
            let text = run(&kl, &[]);
            eprintln!("diagnose with rp_filter strict:\n{}", text.out);
            assert!(
                text.out.contains(&format!("-> hint: sysctl -w {rp}=2")),
                "{}",
                text.out
            );
            in_node(&kl, &["sysctl", "-qw", &format!("{rp}=2")]);
            healthy(&kl, "rp_filter restored");
            Ok(String::new())
        },
    );
    checks.run("underlay MTU below the tunnel MTU + 60", || {
        in_node(&kl, &["ip", "link", "set", "eth0", "mtu", "1400"]);
        let (code, checks, out) = run_json(&kl, &[]);
        in_node(&kl, &["ip", "link", "set", "eth0", "mtu", "1500"]);
        assert_eq!(code, 1, "{out}");
        assert!(
            has(
                &checks,
                "mtu",
                "fail",
                "1420 + 60 (IPv4) = 1480 > eth0 mtu 1400"
            ),
            "{out}"
        );
        assert!(out.contains("tunnel.mtu to 1340 or less"), "{out}");
        healthy(&kl, "underlay MTU restored");
        Ok(String::new())
    });
    checks.run(
        "overlapping CIDRs: a foreign route and a local address",
        || {
            in_node(&kl, &["ip", "route", "add", "blackhole", "10.132.200.0/24"]);
            in_node(&kl, &["ip", "addr", "add", "10.132.201.1/32", "dev", "lo"]);
            let (code, checks, out) = run_json(&kl, &[]);
            in_node(&kl, &["ip", "route", "del", "blackhole", "10.132.200.0/24"]);
            in_node(&kl, &["ip", "addr", "del", "10.132.201.1/32", "dev", "lo"]);
            assert_eq!(code, 1, "{out}");
            assert!(
                has(
                    &checks,
                    "cidr_overlaps",
                    "fail",
                    "address 10.132.201.1/32 on lo is inside 10.132.0.0/14 (remote west podCIDRs)"
                ),
                "{out}"
            );
            assert!(
                has(
                    &checks,
                    "cidr_overlaps",
                    "fail",
                    "blackhole 10.132.200.0/24"
                ),
                "{out}"
            );
            assert!(
                has(
                    &checks,
                    "routes",
                    "fail",
                    "blackhole 10.132.200.0/24 proto boot shadows part of 10.132.0.0/14"
                ),
                "{out}"
            );
            healthy(&kl, "overlaps removed");
            Ok(String::new())
        },
    );
    checks.run("west's API down: the remote goes stale", || {
        kl.apis["west"].set_down(true);
        let (code, checks) = wait_for(
            &kl,
            "remote west failing",
            &[],
            Duration::from_secs(90),
            |_, c| has(c, "remotes", "fail", "west: STALE since"),
        );
        kl.apis["west"].set_down(false);
        eprintln!(
            "west's API down: {:?}",
            checks.iter().find(|c| c.0 == "remotes")
        );
        assert_eq!(code, 1);
        assert!(has(&checks, "agent", "ok", ""), "{checks:?}");
        healthy(&kl, "west synced again");
        Ok(String::new())
    });
    checks.run("a peer down, and --stale-after", || {
        lab.stop_agent("b1", libc::SIGTERM).expect("stop b1");
        lab.restart_agent(NODE).expect("restart a1");
        lab.wait_agent_ready(NODE, Duration::from_secs(10))
            .expect("a1 ready");
        let (code, checks) = wait_for(
            &kl,
            "peer b1 without handshake, b2 fine",
            &[],
            Duration::from_secs(30),
            |_, c| {
                has(c, "peers", "fail", "west/b1 (")
                    && !has(c, "peers", "fail", "west/b2")
                    && has(c, "remotes", "ok", "west: synced")
            },
        );
        assert_eq!(code, 1);
        let b1_endpoint = lab.endpoint("b1");
        assert!(
            has(
                &checks,
                "peers",
                "fail",
                &format!("west/b1 ({b1_endpoint}): no handshake")
            ),
            "{checks:?}"
        );
        // --stale-after: b2's handshake is fresh but older than 1 s after a short wait.
        std::thread::sleep(Duration::from_secs(2));
        let (code, checks, out) = run_json(&kl, &["--stale-after", "1"]);
        assert_eq!(code, 1, "{out}");
        assert!(
            has(&checks, "peers", "fail", "west/b2 (")
                && has(&checks, "peers", "fail", "(stale: older than 1s)"),
            "{out}"
        );
        Ok(String::new())
    });
    checks.run(
        "the agent stopped: a failing check, the rest still runs",
        || {
            lab.stop_agent(NODE, libc::SIGTERM).expect("stop a1");
            let (code, checks, out) = run_json(&kl, &[]);
            assert_eq!(code, 1, "{out}");
            assert!(has(&checks, "agent", "fail", "not answering"), "{out}");
            assert!(
                has(&checks, "remotes", "skip", "agent not running"),
                "{out}"
            );
            assert!(has(&checks, "peers", "skip", "agent not running"), "{out}");
            assert!(has(&checks, "udp_port", "fail", "nothing listens"), "{out}");
            assert!(has(&checks, "ip_forward", "ok", ""), "{out}");
            Ok(String::new())
        },
    );
    checks.run("another process holds the tunnel port", || {
        let port = lab.node(NODE).listen_port.to_string();
        let mut squatter = lab
            .spawn_in(&lab.node_ns(NODE), &["nc", "-u", "-l", port.as_str()])
            .expect("nc");
        let pid = squatter.id();
        let held = format!("held by nc (pid {pid})");
        let (code, _) = wait_for(
            &kl,
            "the squatter seen",
            &[],
            Duration::from_secs(5),
            |_, c| has(c, "udp_port", "fail", &held),
        );
        assert_eq!(code, 1);
        lab.start_agent(NODE).expect("start a1");
        let deadline = Instant::now() + Duration::from_secs(10);
        while lab.agent_running(NODE) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(
            !lab.agent_running(NODE),
            "the agent started although UDP {port} is taken"
        );
        let log = lab.agent_log(NODE);
        assert!(
            log.contains(&format!("bind UDP port {port}")) && log.contains(&held),
            "{log}"
        );
        let _ = squatter.kill();
        let _ = squatter.wait();
        Ok(String::new())
    });
    checks.assert_all();
}

#[test]
fn diagnose_help_and_a_config_it_cannot_use() {
    let out = std::process::Command::new(BIN)
        .args(["diagnose", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for word in ["--json", "--stale-after", "--config", "Exit code"] {
        assert!(help.contains(word), "diagnose --help lacks {word}: {help}");
    }
    // Exit 2: diagnose could not run (missing file, invalid config), unlike a failed check.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "cluster: {name: east}\n").unwrap();
    for path in [std::path::Path::new("/nonexistent/sdn-tunnel.yaml"), &bad] {
        let out = std::process::Command::new(BIN)
            .arg("diagnose")
            .arg("-c")
            .arg(path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{path:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("diagnose could not run"), "{err}");
    }
}
