//! The Ansible rollout (ansible/site.yml) run for real against the real-Kubernetes lab
//! (`sdn-lab kube --bare`: three clusters of one node, nothing of ours installed), with
//! kubernetes.core and the Python kubernetes client from PyPI (the venv scripts/check-ansible.sh
//! installs). Connect from nothing, re-run (changed=0), grow to a third cluster, shrink back,
//! an unreachable cluster, --limit, and no secret in the output with -v.
//!
//! `harness = false`: one lab, checks in order, each reported on its own (see kube_real.rs).

mod common;

use anyhow::{ensure, Context, Result};
use common::checks::Checks;
use sdn_lab::realkube::{KubeLabOptions, RealKube};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const VENV: &str = "/opt/sdn-tunnel-ansible";

fn main() {
    if !prerequisites() {
        return;
    }
    let rk = match RealKube::up(KubeLabOptions {
        clusters: 3,
        nodes_per_cluster: 1,
        bare: true,
        bin: PathBuf::from(env!("CARGO_BIN_EXE_sdn-tunnel")),
        verbose: true,
        ..KubeLabOptions::default()
    }) {
        Ok(rk) => rk,
        Err(e) => panic!("the real-Kubernetes lab did not come up: {e:#}"),
    };
    let mut c = Checks::default();
    c.run(
        "connect east and west from nothing (with -v: no secret in the output)",
        || first_run(&rk),
    );
    c.run(
        "a second run changes nothing (changed=0 in every recap)",
        || second_run(&rk),
    );
    c.run(
        "grow: south joins, the others learn it, pods reach it",
        || grow(&rk),
    );
    c.run(
        "shrink: south leaves, no trace of it in east and west",
        || shrink(&rk),
    );
    c.run(
        "an unreachable cluster stops the run before any cluster changes",
        || unreachable(&rk),
    );
    c.run("--limit is refused with a clear message", || limit(&rk));
    drop(rk);
    c.finish();
}

fn prerequisites() -> bool {
    if !common::require_root() {
        return false;
    }
    let bins = std::process::Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kube-bins.sh"))
        .arg("--check")
        .output();
    if !matches!(bins, Ok(ref o) if o.status.success())
        && std::env::var_os(sdn_lab::realkube::bins::BINS_ENV).is_none()
    {
        return common::skip_or_fail(
            "needs the Kubernetes binaries: run `bash scripts/kube-bins.sh` (builds them once)",
        );
    }
    if !std::path::Path::new(VENV)
        .join("bin/ansible-playbook")
        .exists()
    {
        return common::skip_or_fail(
            "needs Ansible with kubernetes.core: run `bash scripts/check-ansible.sh` (installs it)",
        );
    }
    true
}

/// What an ansible-playbook run printed, and its exit status.
struct Run {
    ok: bool,
    out: String,
}

impl Run {
    /// The PLAY RECAP: host -> (ok, changed, failed).
    fn recap(&self) -> BTreeMap<String, (u32, u32, u32)> {
        let mut m = BTreeMap::new();
        let mut in_recap = false;
        for l in self.out.lines() {
            if l.starts_with("PLAY RECAP") {
                in_recap = true;
                continue;
            }
            if !in_recap || !l.contains(" : ") {
                continue;
            }
            let (host, rest) = l.split_once(" : ").unwrap();
            let field = |k: &str| -> u32 {
                rest.split_whitespace()
                    .find_map(|f| f.strip_prefix(&format!("{k}=")))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0)
            };
            m.insert(
                host.trim().to_string(),
                (field("ok"), field("changed"), field("failed")),
            );
        }
        m
    }

    fn tail(&self) -> String {
        let lines: Vec<&str> = self.out.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }
}

/// Writes an inventory of `clusters` (plus `extra` YAML host entries) and runs site.yml in
/// the lab's management namespace.
fn playbook(rk: &RealKube, clusters: &[&str], extra_hosts: &str, args: &[&str]) -> Result<Run> {
    let mut inv = rk.inventory(clusters);
    inv += extra_hosts;
    let path = rk.dir().join("inventory.yml");
    std::fs::write(&path, &inv)?;
    let playbook_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/ansible");
    let path_env = format!("{VENV}/bin:{}", std::env::var("PATH").unwrap_or_default());
    let mut argv: Vec<String> = vec![
        "env".into(),
        format!("PATH={path_env}"),
        format!("ANSIBLE_HOME={VENV}/home"),
        format!("ANSIBLE_COLLECTIONS_PATH={VENV}/home/collections"),
        "ANSIBLE_NOCOLOR=1".into(),
        "ANSIBLE_FORCE_COLOR=0".into(),
        format!("ANSIBLE_CONFIG={playbook_dir}/ansible.cfg"),
        "ansible-playbook".into(),
        "-i".into(),
        path.to_string_lossy().into_owned(),
        format!("{playbook_dir}/site.yml"),
    ];
    argv.extend(args.iter().map(|s| s.to_string()));
    let t0 = Instant::now();
    let out = sdn_lab::exec(&format!("{}-u", rk.lab.prefix()), &argv);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "ansible-playbook ({}) {} in {:.0} s",
        clusters.join(","),
        if out.status.success() { "ok" } else { "FAILED" },
        t0.elapsed().as_secs_f64()
    );
    Ok(Run {
        ok: out.status.success(),
        out: text,
    })
}

/// `sdn-tunnel status --json` of the (one) agent of `cluster`.
fn agent_status(rk: &RealKube, cluster: &str) -> Result<serde_json::Value> {
    let out = rk.kubectl(cluster).run(&[
        "-n",
        "sdn-tunnel",
        "exec",
        "ds/sdn-tunnel",
        "-c",
        "agent",
        "--",
        "sdn-tunnel",
        "status",
        "--json",
    ])?;
    serde_json::from_str(&out).context("status --json")
}

fn peer_remotes(rk: &RealKube, cluster: &str) -> Result<Vec<String>> {
    let s = agent_status(rk, cluster)?;
    let mut v: Vec<String> = s["agent"]["peers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["latestHandshakeUnix"].as_u64().unwrap_or(0) > 0)
        .filter_map(|p| p["remote"].as_str().map(str::to_string))
        .collect();
    v.sort();
    v.dedup();
    Ok(v)
}

fn wait(what: &str, timeout: Duration, f: impl FnMut() -> Result<bool>) -> Result<()> {
    sdn_lab::poll::until(what, timeout, Duration::from_secs(1), f)
}

/// The reader tokens of every cluster (their base64 and plain forms) and the minted
/// kubeconfig Secrets' contents: none may appear in any playbook output.
fn secrets(rk: &RealKube) -> Result<Vec<String>> {
    let mut v = Vec::new();
    for c in &rk.topology().clusters {
        let k = rk.kubectl(&c.name);
        let tok = k.output(&[
            "-n",
            "sdn-tunnel",
            "get",
            "secret",
            "sdn-tunnel-remote-reader-token",
            "-o",
            "jsonpath={.data.token}",
        ]);
        let b64 = String::from_utf8_lossy(&tok.stdout).trim().to_string();
        if !b64.is_empty() {
            use base64::Engine;
            let plain = base64::engine::general_purpose::STANDARD.decode(&b64)?;
            v.push(String::from_utf8_lossy(&plain).to_string());
            v.push(b64);
        }
        let remotes = k.output(&[
            "-n",
            "sdn-tunnel",
            "get",
            "secret",
            "sdn-tunnel-remotes",
            "-o",
            "json",
        ]);
        if remotes.status.success() {
            let j: serde_json::Value = serde_json::from_slice(&remotes.stdout)?;
            for (_, val) in j["data"].as_object().into_iter().flatten() {
                v.push(val.as_str().unwrap_or_default().to_string());
            }
        }
    }
    // Tokens are JWTs: also their signature part alone (the last segment).
    let sigs: Vec<String> = v
        .iter()
        .filter_map(|t| t.rsplit('.').next().map(str::to_string))
        .collect();
    v.extend(sigs);
    v.retain(|s| s.len() >= 16);
    Ok(v)
}

fn first_run(rk: &RealKube) -> Result<String> {
    let run = playbook(rk, &["east", "west"], "", &["-v"])?;
    std::fs::write(
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ansible-first-run.txt"),
        &run.out,
    )?;
    ensure!(run.ok, "the playbook failed:\n{}", run.tail());
    let recap = run.recap();
    ensure!(
        recap.len() == 2 && recap.values().all(|r| r.2 == 0),
        "recap {recap:?}"
    );
    ensure!(
        run.out.contains("POD -> POD (ms)"),
        "no summary table:\n{}",
        run.tail()
    );
    ensure!(
        run.out.contains("east/sdn-tunnel-probe") && run.out.contains("west/sdn-tunnel-probe"),
        "the probes did not answer:\n{}",
        run.tail()
    );
    // Our own look, beyond the playbook's: each agent has a handshake with the other cluster.
    ensure!(peer_remotes(rk, "east")? == ["west"], "east peers");
    ensure!(peer_remotes(rk, "west")? == ["east"], "west peers");
    let leaked: Vec<String> = secrets(rk)?
        .into_iter()
        .filter(|s| run.out.contains(s.as_str()))
        .map(|s| format!("{}...", &s[..12]))
        .collect();
    ensure!(leaked.is_empty(), "secrets in the -v output: {leaked:?}");
    let summary: Vec<&str> = run
        .out
        .lines()
        .skip_while(|l| !l.contains("CLUSTER       NODES"))
        .take(3)
        .collect();
    Ok(format!(
        "recap {recap:?}; {}",
        summary.join(" | ").replace("  ", " ")
    ))
}

fn second_run(rk: &RealKube) -> Result<String> {
    let run = playbook(rk, &["east", "west"], "", &[])?;
    ensure!(run.ok, "the playbook failed:\n{}", run.tail());
    let recap = run.recap();
    let changed: Vec<_> = recap.iter().filter(|(_, r)| r.1 != 0).collect();
    ensure!(
        changed.is_empty(),
        "changed on a second run: {changed:?}\n{}",
        changed_tasks(&run)
    );
    Ok(format!("recap {recap:?}"))
}

/// The tasks that reported `changed:` (for a failure message).
fn changed_tasks(run: &Run) -> String {
    let mut task = "";
    let mut v = Vec::new();
    for l in run.out.lines() {
        if l.starts_with("TASK [") {
            task = l;
        } else if l.starts_with("changed:") {
            v.push(format!("{task} {l}"));
        }
    }
    v.join("\n")
}

fn config_of(rk: &RealKube, cluster: &str) -> Result<String> {
    rk.kubectl(cluster).run(&[
        "-n",
        "sdn-tunnel",
        "get",
        "configmap",
        "sdn-tunnel-config",
        "-o",
        "jsonpath={.data.config\\.yaml}",
    ])
}

fn secret_keys(rk: &RealKube, cluster: &str) -> Result<Vec<String>> {
    let j = rk
        .kubectl(cluster)
        .get_json(&["-n", "sdn-tunnel", "secret", "sdn-tunnel-remotes"])?;
    let mut v: Vec<String> = j["data"]
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    v.sort();
    Ok(v)
}

fn grow(rk: &RealKube) -> Result<String> {
    let run = playbook(rk, &["east", "west", "south"], "", &[])?;
    ensure!(run.ok, "the playbook failed:\n{}", run.tail());
    ensure!(
        run.out.contains("south/sdn-tunnel-probe"),
        "no probe answer from south:\n{}",
        run.tail()
    );
    for (c, want) in [
        ("east", ["south", "west"]),
        ("west", ["east", "south"]),
        ("south", ["east", "west"]),
    ] {
        ensure!(
            secret_keys(rk, c)? == want,
            "{c}: Secret keys {:?}",
            secret_keys(rk, c)?
        );
        wait(
            &format!("{c} handshakes with {want:?}"),
            Duration::from_secs(60),
            || Ok(peer_remotes(rk, c)? == want),
        )?;
    }
    Ok("south joined; east and west peer with it; pods reach it (verify's probes)".into())
}

fn shrink(rk: &RealKube) -> Result<String> {
    let run = playbook(rk, &["east", "west"], "", &[])?;
    ensure!(run.ok, "the playbook failed:\n{}", run.tail());
    let south = rk.topology().cluster("south").context("south")?.clone();
    for c in ["east", "west"] {
        ensure!(
            !secret_keys(rk, c)?.contains(&"south".to_string()),
            "{c}: Secret still has south"
        );
        let cfg = config_of(rk, c)?;
        ensure!(
            !cfg.contains("south") && !cfg.contains(&south.pod_cidr.to_string()),
            "{c}: config still names south:\n{cfg}"
        );
        let ds =
            rk.kubectl(c)
                .run(&["-n", "sdn-tunnel", "get", "ds", "sdn-tunnel", "-o", "yaml"])?;
        ensure!(!ds.contains("south"), "{c}: the DaemonSet mentions south");
        // On the node: no peer, no route for south.
        wait(
            &format!("{c}'s agent without south"),
            Duration::from_secs(60),
            || Ok(peer_remotes(rk, c)? == [if c == "east" { "west" } else { "east" }]),
        )?;
        let s = agent_status(rk, c)?;
        ensure!(
            !s["agent"]["peers"].to_string().contains("\"south\""),
            "{c}: a south peer is left: {}",
            s["agent"]["peers"]
        );
        let node = &rk.topology().cluster(c).context("cluster")?.nodes[0];
        let routes = rk.node(node).run(&["ip", "route", "show", "proto", "93"])?;
        ensure!(
            !routes.contains(&south.pod_cidr.to_string())
                && !routes.contains(&south.service_cidr.to_string()),
            "{c}/{node}: routes for south are left:\n{routes}"
        );
    }
    Ok("south gone from east and west: Secret key, config, DaemonSet, peers, routes".into())
}

/// (resourceVersion of the ConfigMap, of the Secret, of the DaemonSet) of `cluster`.
fn versions(rk: &RealKube, cluster: &str) -> Result<String> {
    let mut v = Vec::new();
    for (kind, name) in [
        ("configmap", "sdn-tunnel-config"),
        ("secret", "sdn-tunnel-remotes"),
        ("daemonset", "sdn-tunnel"),
    ] {
        v.push(rk.kubectl(cluster).run(&[
            "-n",
            "sdn-tunnel",
            "get",
            kind,
            name,
            "-o",
            "jsonpath={.metadata.resourceVersion}",
        ])?);
    }
    Ok(v.join("/"))
}

fn unreachable(rk: &RealKube) -> Result<String> {
    let before: Vec<String> = ["east", "west"]
        .iter()
        .map(|c| versions(rk, c))
        .collect::<Result<_>>()?;
    // A cluster whose API does not answer: a kubeconfig for an address nobody has.
    let kc = rk.dir().join("ghost.kubeconfig");
    let east_kc = std::fs::read_to_string(&rk.kubectl("east").kubeconfig)?;
    std::fs::write(
        &kc,
        east_kc.replace(&rk.api_server("east"), "https://192.168.77.99:6443"),
    )?;
    let ghost = format!(
        "        ghost:\n          sdn_tunnel_kubeconfig: {}\n          sdn_tunnel_api_server: https://192.168.77.99:6443\n          \
         sdn_tunnel_pod_cidrs: [10.150.0.0/16]\n          sdn_tunnel_service_cidrs: [172.27.0.0/16]\n",
        kc.display()
    );
    let run = playbook(rk, &["east", "west"], &ghost, &[])?;
    ensure!(
        !run.ok,
        "the playbook succeeded with an unreachable cluster"
    );
    ensure!(
        run.out.contains("ghost: cannot reach the Kubernetes API"),
        "the failure does not name the cluster:\n{}",
        run.tail()
    );
    let recap = run.recap();
    ensure!(
        recap.values().all(|r| r.1 == 0),
        "something changed: {recap:?}"
    );
    ensure!(
        !run.out.contains("TASK [reader"),
        "the run went past preflight:\n{}",
        run.tail()
    );
    let after: Vec<String> = ["east", "west"]
        .iter()
        .map(|c| versions(rk, c))
        .collect::<Result<_>>()?;
    ensure!(before == after, "objects changed: {before:?} -> {after:?}");
    let msg = run
        .out
        .lines()
        .find(|l| l.contains("ghost: cannot reach"))
        .unwrap_or("")
        .trim()
        .to_string();
    Ok(msg.chars().take(200).collect())
}

fn limit(rk: &RealKube) -> Result<String> {
    let before = versions(rk, "east")?;
    let run = playbook(rk, &["east", "west"], "", &["--limit", "east"])?;
    ensure!(!run.ok, "a --limit run succeeded");
    ensure!(
        run.out.contains("--limit east is not supported"),
        "no clear refusal:\n{}",
        run.tail()
    );
    ensure!(versions(rk, "east")? == before, "east changed");
    Ok("refused: --limit east is not supported ...".into())
}
