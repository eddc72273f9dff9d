//! sdn-tunnel on real Kubernetes: two clusters of two nodes built from the official components
//! (`sdn-lab kube`, lab/src/realkube), our DaemonSet applied with `kubectl apply -k` and running
//! under containerd and runc, real pods, Services and EndpointSlices.
//!
//! `harness = false`: one lab (about a minute to build) serves every check; the checks run in
//! order and each is reported on its own, so a failure does not hide the rest. Needs root and
//! the binaries of scripts/kube-bins.sh; without them it skips with the reason, unless
//! SDN_TUNNEL_REQUIRE_PRIVILEGED=1 (CI), which turns the skip into a failure.

mod common;

use anyhow::{bail, ensure, Context, Result};
use common::checks::Checks;
use sdn_lab::realkube::workload::web_yaml;
use sdn_lab::realkube::{KubeLabOptions, RealKube};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const AGENT_SELECTOR: &str = "app.kubernetes.io/component=agent";
const AGENT_SA: &str = "system:serviceaccount:sdn-tunnel:sdn-tunnel";
const READER_SA: &str = "system:serviceaccount:sdn-tunnel:sdn-tunnel-remote-reader";

fn main() {
    if !prerequisites() {
        return;
    }
    let mut rk = match RealKube::up(KubeLabOptions {
        bin: PathBuf::from(env!("CARGO_BIN_EXE_sdn-tunnel")),
        verbose: true,
        ..KubeLabOptions::default()
    }) {
        Ok(rk) => rk,
        Err(e) => panic!("the real-Kubernetes lab did not come up: {e:#}"),
    };
    let mut c = Checks::default();
    c.run(
        "agent pods Running and Ready on every node; JSON logs",
        || agents_ready(&rk),
    );
    c.run(
        "every agent advertises itself on its own Node and peers with every remote node",
        || advertised_and_peered(&rk),
    );
    c.run(
        "RBAC: what the agent and the remote reader may and must not do",
        || rbac(&rk),
    );
    c.run(
        "admission policy: a node's agent cannot annotate another Node",
        || admission(&rk),
    );
    let workloads = setup_workloads(&rk);
    c.run(
        "test workloads (a pod per node, web Deployment + Service per cluster)",
        || {
            workloads
                .as_ref()
                .map(|_| String::new())
                .map_err(|e| anyhow::anyhow!("{e:#}"))
        },
    );
    if workloads.is_ok() {
        c.run(
            "pod -> pod across clusters: ping and a checksummed TCP transfer, both ways",
            || pod_to_pod(&rk),
        );
        c.run(
            "pod -> remote ClusterIP: answered by every remote pod; scaling followed",
            || remote_cluster_ip(&rk),
        );
        c.run(
            "ServiceExport: unexporting web takes it off the remote agents, exporting brings it back",
            || export_unexport(&rk),
        );
        c.run(
            "pod resolves <svc>.<ns>.svc.cluster.<remote> through the sdn-tunnel-dns Service",
            || dns(&rk),
        );
        c.run(
            "ClusterSetIP: the same on every node, answered locally, by the remote cluster \
             while the local Deployment is scaled to zero, and by name in clusterset.local",
            || clusterset_ip(&rk),
        );
        c.run(
            "MCS objects: one Lease holder per cluster; ServiceImports in every cluster; \
             conflict, ExternalName and missing-Service conditions; unexport deletes the import",
            || mcs_objects(&rk),
        );
        c.run(
            "kubectl rollout restart of the agents during a cross-cluster TCP stream",
            || rollout_restart_during_stream(&rk),
        );
    }
    c.run(
        "kube source tests (tests/kube_source.rs) against the real API server",
        || kube_source_tests(&rk),
    );
    c.run(
        "deleting a remote Node removes its peer; re-registering brings it back",
        || delete_remote_node(&mut rk),
    );
    c.run(
        "kubectl delete -k plus the documented cleanup leaves nothing on the nodes",
        || uninstall(&rk),
    );
    drop(rk);
    c.finish();
}

fn prerequisites() -> bool {
    if !common::require_root() {
        return false;
    }
    let check = std::process::Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kube-bins.sh"))
        .arg("--check")
        .output();
    match check {
        Ok(o) if o.status.success() => true,
        _ if std::env::var_os(sdn_lab::realkube::bins::BINS_ENV).is_some() => true,
        _ => common::skip_or_fail(
            "needs the Kubernetes binaries: run `bash scripts/kube-bins.sh` (builds them once)",
        ),
    }
}

// ----- helpers -------------------------------------------------------------------------------

fn clusters(rk: &RealKube) -> Vec<String> {
    rk.topology()
        .clusters
        .iter()
        .map(|c| c.name.clone())
        .collect()
}

/// (pod, node) of the agents of `cluster`.
fn agent_pods(rk: &RealKube, cluster: &str) -> Result<Vec<(String, String)>> {
    let v = rk
        .kubectl(cluster)
        .get_json(&["-n", "sdn-tunnel", "pods", "-l", AGENT_SELECTOR])?;
    Ok(v["items"]
        .as_array()
        .context("items")?
        .iter()
        .map(|p| {
            (
                p["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                p["spec"]["nodeName"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect())
}

fn agent_on(rk: &RealKube, node: &str) -> Result<String> {
    let cluster = rk.cluster_of(node);
    agent_pods(rk, &cluster)?
        .into_iter()
        .find(|(_, n)| n == node)
        .map(|(p, _)| p)
        .with_context(|| format!("no agent pod on {node}"))
}

/// `sdn-tunnel status --json` of the agent on `node`, through `kubectl exec`.
fn agent_status(rk: &RealKube, node: &str) -> Result<Value> {
    let cluster = rk.cluster_of(node);
    let pod = agent_on(rk, node)?;
    let out = rk.kubectl(&cluster).run(&[
        "-n",
        "sdn-tunnel",
        "exec",
        &pod,
        "-c",
        "agent",
        "--",
        "sdn-tunnel",
        "status",
        "--json",
    ])?;
    serde_json::from_str(&out).context("status --json")
}

fn wait(what: &str, timeout: Duration, f: impl FnMut() -> Result<bool>) -> Result<()> {
    sdn_lab::poll::until(what, timeout, Duration::from_millis(500), f)
}

fn nodes_of(rk: &RealKube, cluster: &str) -> Vec<String> {
    rk.topology()
        .cluster(cluster)
        .expect("cluster")
        .nodes
        .clone()
}

fn probe(node: &str) -> String {
    format!("probe-{node}")
}

// ----- checks --------------------------------------------------------------------------------

fn agents_ready(rk: &RealKube) -> Result<String> {
    let mut pods = 0;
    for cl in clusters(rk) {
        let v = rk
            .kubectl(&cl)
            .get_json(&["-n", "sdn-tunnel", "pods", "-l", AGENT_SELECTOR])?;
        let items = v["items"].as_array().context("items")?;
        let nodes: BTreeSet<&str> = items
            .iter()
            .filter_map(|p| p["spec"]["nodeName"].as_str())
            .collect();
        let want: BTreeSet<String> = nodes_of(rk, &cl).into_iter().collect();
        ensure!(
            nodes.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>() == want,
            "{cl}: agents on {nodes:?}, nodes are {want:?}"
        );
        for p in items {
            let name = p["metadata"]["name"].as_str().unwrap_or_default();
            ensure!(
                p["status"]["phase"] == "Running",
                "{cl}/{name}: phase {}",
                p["status"]["phase"]
            );
            let ready = p["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            ensure!(
                ready,
                "{cl}/{name} not Ready: {}",
                p["status"]["conditions"]
            );
            let logs = rk
                .kubectl(&cl)
                .run(&["-n", "sdn-tunnel", "logs", name, "-c", "agent"])?;
            let lines: Vec<&str> = logs.lines().filter(|l| !l.trim().is_empty()).collect();
            ensure!(!lines.is_empty(), "{cl}/{name}: no logs");
            for l in &lines {
                let j: Value = serde_json::from_str(l)
                    .with_context(|| format!("{cl}/{name}: log line is not JSON: {l}"))?;
                ensure!(
                    j["level"].is_string() && j["fields"]["message"].is_string(),
                    "{cl}/{name}: log line lacks level/message: {l}"
                );
            }
            pods += 1;
        }
    }
    Ok(format!(
        "{pods} agent pods Running and Ready, every log line JSON"
    ))
}

fn advertised_and_peered(rk: &RealKube) -> Result<String> {
    let topo = rk.topology().clone();
    for n in &topo.nodes {
        let k = rk.kubectl(&n.cluster);
        wait(
            &format!("Node {} annotated", n.name),
            Duration::from_secs(60),
            || {
                let v = k.get_json(&["node", &n.name])?;
                let ann = &v["metadata"]["annotations"];
                Ok(ann["sdn-tunnel.io/public-key"].is_string()
                    && ann["sdn-tunnel.io/endpoint"] == format!("{}:51830", n.underlay_v4).as_str())
            },
        )?;
    }
    for n in &topo.nodes {
        let want: BTreeSet<String> = topo.remote_nodes(n).map(|r| r.name.clone()).collect();
        wait(
            &format!("agent on {} has a handshake with {want:?}", n.name),
            Duration::from_secs(90),
            || {
                let s = agent_status(rk, &n.name)?;
                let up: BTreeSet<String> = s["agent"]["peers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| p["latestHandshakeUnix"].as_u64().unwrap_or(0) > 0)
                    .filter_map(|p| p["name"].as_str().map(str::to_string))
                    .collect();
                Ok(up == want)
            },
        )?;
    }
    Ok(format!(
        "{} nodes annotated with key and endpoint; all cross-cluster handshakes done",
        topo.nodes.len()
    ))
}

fn can_i(
    rk: &RealKube,
    cluster: &str,
    who: &str,
    verb: &str,
    resource: &str,
    ns: Option<&str>,
) -> Result<bool> {
    // `<resource>#<subresource>`: kubectl takes the subresource as a flag (a `/` would be a
    // resource name).
    let (resource, sub) = match resource.split_once('#') {
        Some((r, s)) => (r, Some(format!("--subresource={s}"))),
        None => (resource, None),
    };
    let mut args = vec!["auth", "can-i", verb, resource, "--as", who];
    if let Some(sub) = &sub {
        args.push(sub);
    }
    if let Some(ns) = ns {
        args.extend(["-n", ns]);
    }
    let out = rk.kubectl(cluster).output(&args);
    let answer = String::from_utf8_lossy(&out.stdout).trim().to_string();
    match answer.as_str() {
        "yes" => Ok(true),
        "no" => Ok(false),
        _ => bail!(
            "kubectl auth can-i {verb} {resource} --as {who}: {answer} {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

fn rbac(rk: &RealKube) -> Result<String> {
    let cl = &clusters(rk)[0];
    let cases: &[(&str, &str, &str, Option<&str>, bool)] = &[
        (AGENT_SA, "get", "nodes", None, true),
        (AGENT_SA, "patch", "nodes", None, true),
        (AGENT_SA, "list", "nodes", None, false),
        (AGENT_SA, "update", "nodes", None, false),
        (AGENT_SA, "delete", "nodes", None, false),
        (AGENT_SA, "get", "secrets", Some("sdn-tunnel"), false),
        (AGENT_SA, "list", "pods", Some("default"), false),
        // Its own cluster's exported Services (ClusterSetIPs), read only.
        (AGENT_SA, "watch", "services", Some("default"), true),
        (
            AGENT_SA,
            "list",
            "endpointslices.discovery.k8s.io",
            Some("default"),
            true,
        ),
        (
            AGENT_SA,
            "watch",
            "serviceexports.multicluster.x-k8s.io",
            Some("default"),
            true,
        ),
        (AGENT_SA, "create", "services", Some("default"), false),
        (AGENT_SA, "get", "services", Some("default"), true),
        (
            AGENT_SA,
            "update",
            "serviceexports.multicluster.x-k8s.io",
            Some("default"),
            false,
        ),
        // The elected writer: export conditions, ServiceImports, its Lease.
        (
            AGENT_SA,
            "patch",
            "serviceexports.multicluster.x-k8s.io#status",
            Some("default"),
            true,
        ),
        (
            AGENT_SA,
            "patch",
            "serviceimports.multicluster.x-k8s.io#status",
            Some("default"),
            true,
        ),
        (
            AGENT_SA,
            "patch",
            "serviceexports.multicluster.x-k8s.io",
            Some("default"),
            false,
        ),
        (
            AGENT_SA,
            "create",
            "serviceimports.multicluster.x-k8s.io",
            Some("default"),
            true,
        ),
        (
            AGENT_SA,
            "delete",
            "serviceimports.multicluster.x-k8s.io",
            Some("default"),
            true,
        ),
        (
            AGENT_SA,
            "update",
            "leases.coordination.k8s.io/sdn-tunnel-mcs",
            Some("sdn-tunnel"),
            true,
        ),
        (
            AGENT_SA,
            "update",
            "leases.coordination.k8s.io/other",
            Some("sdn-tunnel"),
            false,
        ),
        (
            AGENT_SA,
            "get",
            "leases.coordination.k8s.io/sdn-tunnel-mcs",
            Some("kube-system"),
            false,
        ),
        (AGENT_SA, "create", "pods", Some("sdn-tunnel"), false),
        (
            AGENT_SA,
            "get",
            "daemonsets.apps/sdn-tunnel",
            Some("sdn-tunnel"),
            true,
        ),
        (
            AGENT_SA,
            "get",
            "daemonsets.apps/other",
            Some("sdn-tunnel"),
            false,
        ),
        (
            AGENT_SA,
            "list",
            "daemonsets.apps",
            Some("sdn-tunnel"),
            false,
        ),
        (
            AGENT_SA,
            "get",
            "daemonsets.apps/sdn-tunnel",
            Some("kube-system"),
            false,
        ),
        (READER_SA, "list", "nodes", None, true),
        (READER_SA, "watch", "nodes", None, true),
        (READER_SA, "list", "services", Some("default"), true),
        (
            READER_SA,
            "watch",
            "endpointslices.discovery.k8s.io",
            Some("default"),
            true,
        ),
        (
            READER_SA,
            "watch",
            "serviceexports.multicluster.x-k8s.io",
            Some("default"),
            true,
        ),
        (
            READER_SA,
            "create",
            "serviceexports.multicluster.x-k8s.io",
            Some("default"),
            false,
        ),
        (READER_SA, "get", "nodes", None, false),
        (READER_SA, "patch", "nodes", None, false),
        (READER_SA, "list", "secrets", Some("sdn-tunnel"), false),
        (READER_SA, "get", "secrets", Some("kube-system"), false),
        (READER_SA, "list", "pods", Some("default"), false),
        (READER_SA, "list", "configmaps", Some("sdn-tunnel"), false),
        (READER_SA, "create", "services", Some("default"), false),
    ];
    let mut wrong = Vec::new();
    for (who, verb, res, ns, want) in cases {
        let got = can_i(rk, cl, who, verb, res, *ns)?;
        if got != *want {
            wrong.push(format!("{who} {verb} {res} {ns:?}: got {got}, want {want}"));
        }
    }
    ensure!(wrong.is_empty(), "RBAC differs:\n{}", wrong.join("\n"));
    Ok(format!("{} can-i answers as expected", cases.len()))
}

fn admission(rk: &RealKube) -> Result<String> {
    let cl = &clusters(rk)[0];
    let nodes = nodes_of(rk, cl);
    let (own, other) = (&nodes[0], &nodes[1]);
    let pod = agent_on(rk, own)?;
    let k = rk.kubectl(cl);
    // A token of the agent's ServiceAccount bound to its pod on `own`: like the one the agent
    // runs with, it carries the node claim the policy checks.
    let token = k.run(&[
        "-n",
        "sdn-tunnel",
        "create",
        "token",
        "sdn-tunnel",
        "--bound-object-kind=Pod",
        &format!("--bound-object-name={pod}"),
        "--duration=10m",
    ])?;
    let ca = rk.dir().join("clusters").join(cl).join("pki/ca.crt");
    let kc = rk.dir().join("agent-token.kubeconfig");
    std::fs::write(
        &kc,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    certificate-authority: {}\n\
             users:\n- name: agent\n  user:\n    token: {}\ncontexts:\n- name: c\n  context: {{cluster: c, user: agent}}\ncurrent-context: c\n",
            rk.api_server(cl),
            ca.display(),
            token.trim()
        ),
    )?;
    let as_agent = sdn_lab::realkube::kubectl::Kubectl::new(rk.bins.path("kubectl"), &kc, &k.ns);
    let whoami = as_agent.run(&["auth", "whoami", "-o", "json"])?;
    ensure!(
        whoami.contains(AGENT_SA) && whoami.contains(own.as_str()),
        "token identity: {whoami}"
    );
    // Its own Node: an sdn-tunnel.io/ annotation is allowed, any other is refused.
    as_agent.run(&[
        "annotate",
        "node",
        own,
        "sdn-tunnel.io/admission-test=1",
        "--overwrite",
    ])?;
    as_agent.run(&["annotate", "node", own, "sdn-tunnel.io/admission-test-"])?;
    let out = as_agent.output(&["annotate", "node", own, "example.com/x=1"]);
    let msg = String::from_utf8_lossy(&out.stderr).to_string();
    ensure!(
        !out.status.success() && msg.contains("may change only sdn-tunnel.io/* annotations"),
        "own node, foreign annotation: {msg}"
    );
    // Another Node: refused, with the API server's message naming both.
    let out = as_agent.output(&[
        "annotate",
        "node",
        other,
        "sdn-tunnel.io/public-key=forged",
        "--overwrite",
    ]);
    let msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
    ensure!(
        !out.status.success(),
        "annotating {other} with {own}'s token succeeded"
    );
    ensure!(
        msg.contains("ValidatingAdmissionPolicy 'sdn-tunnel-node-annotations'")
            && msg.contains(&format!(
                "may annotate only its own Node ({own}), not {other}"
            )),
        "unexpected refusal: {msg}"
    );
    let _ = std::fs::remove_file(&kc);
    Ok(format!("refused: {msg}"))
}

fn setup_workloads(rk: &RealKube) -> Result<()> {
    for cl in clusters(rk) {
        for n in nodes_of(rk, &cl) {
            rk.apply(
                &cl,
                &sdn_lab::realkube::workload::pod_yaml(&probe(&n), &n, &["sleep", "1000000"]),
            )?;
        }
        rk.apply(&cl, &web_yaml("web", 2))?;
    }
    for cl in clusters(rk) {
        for n in nodes_of(rk, &cl) {
            rk.wait_pod(&cl, &probe(&n), Duration::from_secs(120))?;
        }
        rk.kubectl(&cl).run(&[
            "-n",
            "default",
            "rollout",
            "status",
            "deployment/web",
            "--timeout=120s",
        ])?;
    }
    Ok(())
}

/// First node of each of the first two clusters.
fn pair(rk: &RealKube) -> (String, String) {
    let cl = clusters(rk);
    (
        nodes_of(rk, &cl[0])[0].clone(),
        nodes_of(rk, &cl[1])[0].clone(),
    )
}

fn pod_to_pod(rk: &RealKube) -> Result<String> {
    let topo = rk.topology().clone();
    let mut notes = Vec::new();
    // ping from inside the pods (busybox), every cross-cluster pair of nodes, both ways
    for (a, b) in topo.cross_cluster_pairs() {
        for (from, to) in [(a, b), (b, a)] {
            let ip = rk.pod_ip(&to.cluster, &probe(&to.name))?;
            wait(
                &format!("ping {} -> {}", from.name, to.name),
                Duration::from_secs(30),
                || {
                    Ok(rk
                        .exec_pod(
                            &from.cluster,
                            &probe(&from.name),
                            &["ping", "-c", "1", "-W", "2", &ip],
                        )
                        .status
                        .success())
                },
            )?;
        }
    }
    notes.push(format!(
        "{} pod pairs ping",
        topo.cross_cluster_pairs().len() * 2
    ));
    // a checksummed TCP transfer between the pods' network namespaces, both ways
    let (a, b) = pair(rk);
    let (ca, cb) = (rk.cluster_of(&a), rk.cluster_of(&b));
    let (na, nb) = (
        rk.pod_netns(&ca, "default", &probe(&a))?,
        rk.pod_netns(&cb, "default", &probe(&b))?,
    );
    let (ia, ib) = (rk.pod_ip(&ca, &probe(&a))?, rk.pod_ip(&cb, &probe(&b))?);
    for (from, to, ip) in [(&na, &nb, &ib), (&nb, &na, &ia)] {
        let t = sdn_lab::tcp_transfer(from, to, ip.parse()?, 5001, 32 << 20)?;
        notes.push(format!(
            "32 MiB {:.0} Mbit/s checksum {:016x}",
            t.mbit_per_s(),
            t.checksum
        ));
    }
    Ok(notes.join("; "))
}

/// The pod names answering `count` GETs of http://<ip>/ from `client` in `cluster`.
fn answers(
    rk: &RealKube,
    cluster: &str,
    client: &str,
    ip: &str,
    count: usize,
) -> Result<Vec<String>> {
    let mut v = Vec::new();
    for _ in 0..count {
        // Not `wget -T`: Debian's static busybox wget crashes (SIGSEGV) with a timeout set.
        let out = rk.exec_pod(
            cluster,
            client,
            &[
                "timeout",
                "5",
                "wget",
                "-q",
                "-O",
                "-",
                &format!("http://{ip}/"),
            ],
        );
        ensure!(
            out.status.success(),
            "GET http://{ip}/ from {client}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        v.push(String::from_utf8_lossy(&out.stdout).trim().to_string());
    }
    Ok(v)
}

fn web_pods(rk: &RealKube, cluster: &str) -> Result<BTreeSet<String>> {
    let v = rk
        .kubectl(cluster)
        .get_json(&["-n", "default", "pods", "-l", "app=web"])?;
    Ok(v["items"]
        .as_array()
        .context("items")?
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .filter(|p| {
            p["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
        .collect())
}

fn remote_cluster_ip(rk: &RealKube) -> Result<String> {
    let (a, b) = pair(rk);
    let (ca, cb) = (rk.cluster_of(&a), rk.cluster_of(&b));
    let ip = rk.kubectl(&cb).run(&[
        "-n",
        "default",
        "get",
        "svc",
        "web",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ])?;
    let client = probe(&a);
    let mut notes = Vec::new();
    for replicas in [2usize, 3, 1] {
        rk.kubectl(&cb).run(&[
            "-n",
            "default",
            "scale",
            "deployment/web",
            &format!("--replicas={replicas}"),
        ])?;
        rk.kubectl(&cb).run(&[
            "-n",
            "default",
            "rollout",
            "status",
            "deployment/web",
            "--timeout=120s",
        ])?;
        let t0 = Instant::now();
        let mut seen = Vec::new();
        wait(
            &format!("{replicas} remote pods answering {ip}"),
            Duration::from_secs(60),
            || {
                let want = web_pods(rk, &cb)?;
                if want.len() != replicas {
                    return Ok(false);
                }
                // In turn: 2 rounds of round robin reach every pod, and nothing else answers.
                seen = answers(rk, &ca, &client, &ip, 2 * replicas)?;
                let got: BTreeSet<String> = seen.iter().cloned().collect();
                Ok(got == want)
            },
        )?;
        notes.push(format!(
            "{replicas} replicas: all answer ({:.1} s), e.g. {}",
            t0.elapsed().as_secs_f64(),
            seen.join(" ")
        ));
    }
    Ok(notes.join("; "))
}

/// What the agent on `node` imports from `remote`: (ServiceExports seen, services imported).
fn imported_from(rk: &RealKube, node: &str, remote: &str) -> Result<(u64, u64)> {
    let s = agent_status(rk, node)?;
    let r = s["agent"]["remotes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["name"] == remote)
        .with_context(|| format!("no remote {remote} in the status of {node}"))?;
    Ok((
        r["import"]["serviceExports"].as_u64().unwrap_or(0),
        r["services"].as_u64().unwrap_or(0),
    ))
}

fn export_unexport(rk: &RealKube) -> Result<String> {
    let (a, b) = pair(rk);
    let cb = rk.cluster_of(&b);
    let (exports, services) = imported_from(rk, &a, &cb)?;
    ensure!(
        exports >= 1 && services >= 1,
        "{a} imports {services} services from {cb} ({exports} exports)"
    );
    let t = Instant::now();
    rk.kubectl(&cb)
        .run(&["-n", "default", "delete", "serviceexport", "web"])?;
    wait(
        &format!("{a} drops {cb}'s web once unexported"),
        Duration::from_secs(30),
        || Ok(imported_from(rk, &a, &cb)? == (exports - 1, services - 1)),
    )?;
    let gone = t.elapsed().as_secs_f64();
    let t = Instant::now();
    rk.apply(
        &cb,
        "apiVersion: multicluster.x-k8s.io/v1beta1\nkind: ServiceExport\nmetadata:\n  name: web\n  namespace: default\n",
    )?;
    wait(
        &format!("{a} imports {cb}'s web again once exported"),
        Duration::from_secs(30),
        || Ok(imported_from(rk, &a, &cb)? == (exports, services)),
    )?;
    Ok(format!(
        "unexport seen by {a} within {gone:.1} s, export within {:.1} s (status polled through \
         kubectl exec every 0.5 s)",
        t.elapsed().as_secs_f64()
    ))
}

fn dns(rk: &RealKube) -> Result<String> {
    let (a, b) = pair(rk);
    let (ca, cb) = (rk.cluster_of(&a), rk.cluster_of(&b));
    let dns_ip = rk.kubectl(&ca).run(&[
        "-n",
        "sdn-tunnel",
        "get",
        "svc",
        "sdn-tunnel-dns",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ])?;
    let web_ip = rk.kubectl(&cb).run(&[
        "-n",
        "default",
        "get",
        "svc",
        "web",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ])?;
    let name = format!("web.default.svc.cluster.{cb}");
    let mut last = String::new();
    wait(
        &format!("{name} via {dns_ip}"),
        Duration::from_secs(30),
        || {
            let out = rk.exec_pod(&ca, &probe(&a), &["nslookup", &name, &dns_ip]);
            last = String::from_utf8_lossy(&out.stdout).to_string();
            Ok(out.status.success() && last.contains(&format!("Address: {web_ip}")))
        },
    )
    .with_context(|| format!("last answer: {last}"))?;
    Ok(format!("{name} -> {web_ip} (asked {dns_ip})"))
}

/// `default/web`'s ClusterSetIP in the status of the agent on `node`, once both clusters
/// export it.
fn clusterset_ip_at(rk: &RealKube, node: &str) -> Result<Option<String>> {
    let s = agent_status(rk, node)?;
    let Some(web) = s["agent"]["clusterset"]["services"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["namespace"] == "default" && v["name"] == "web")
    else {
        return Ok(None);
    };
    if web["members"].as_array().map_or(0, Vec::len) < 2 {
        return Ok(None);
    }
    Ok(web["ips"][0].as_str().map(str::to_string))
}

fn clusterset_ip(rk: &RealKube) -> Result<String> {
    let (a, b) = pair(rk);
    let (ca, cb) = (rk.cluster_of(&a), rk.cluster_of(&b));
    let mut ip = None;
    wait(
        &format!("{a} serves web's ClusterSetIP from both clusters"),
        Duration::from_secs(30),
        || {
            ip = clusterset_ip_at(rk, &a)?;
            Ok(ip.is_some())
        },
    )?;
    let ip = ip.context("ClusterSetIP")?;
    let cidr: ipnetwork::IpNetwork = sdn_lab::realkube::deploy::CLUSTER_SET_CIDR.parse()?;
    ensure!(cidr.contains(ip.parse()?), "{ip} is outside {cidr}");
    // Every node of every cluster computes the same one.
    for cl in clusters(rk) {
        for n in nodes_of(rk, &cl) {
            let got = clusterset_ip_at(rk, &n)?;
            ensure!(
                got.as_deref() == Some(ip.as_str()),
                "{n} has {got:?}, {a} has {ip}"
            );
        }
    }
    let client = probe(&a);
    let local = web_pods(rk, &ca)?;
    let remote = web_pods(rk, &cb)?;
    let got = answers(rk, &ca, &client, &ip, 6)?;
    ensure!(
        got.iter().all(|p| local.contains(p)),
        "with local pods ready, {ip} was answered by {got:?} (local: {local:?})"
    );
    let scale = |n: usize| {
        rk.kubectl(&ca).run(&[
            "-n",
            "default",
            "scale",
            "deployment/web",
            &format!("--replicas={n}"),
        ])
    };
    // Local Deployment to zero: the remote cluster's pods take over.
    let t = Instant::now();
    scale(0)?;
    let mut last = Vec::new();
    wait(
        &format!("{ip} answered by {cb} once {ca}'s web is scaled to 0"),
        Duration::from_secs(60),
        || {
            last = answers(rk, &ca, &client, &ip, 1).unwrap_or_default();
            Ok(last.iter().all(|p| remote.contains(p)) && !last.is_empty())
        },
    )
    .with_context(|| format!("last answer {last:?}"))?;
    let gap = t.elapsed().as_secs_f64();
    let got = answers(rk, &ca, &client, &ip, 4)?;
    ensure!(
        got.iter().all(|p| remote.contains(p)),
        "after failover: {got:?}"
    );
    // Back to 2: local first again.
    scale(2)?;
    rk.kubectl(&ca).run(&[
        "-n",
        "default",
        "rollout",
        "status",
        "deployment/web",
        "--timeout=120s",
    ])?;
    let t = Instant::now();
    wait(
        &format!("{ip} answered locally again"),
        Duration::from_secs(60),
        || {
            let local = web_pods(rk, &ca)?;
            let got = answers(rk, &ca, &client, &ip, 4)?;
            Ok(got.iter().all(|p| local.contains(p)))
        },
    )?;
    let back = t.elapsed().as_secs_f64();
    // DNS per the MCS spec: the ClusterSetIP.
    let dns_ip = rk.kubectl(&ca).run(&[
        "-n",
        "sdn-tunnel",
        "get",
        "svc",
        "sdn-tunnel-dns",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ])?;
    let name = "web.default.svc.clusterset.local";
    let out = rk.exec_pod(&ca, &client, &["nslookup", name, &dns_ip]);
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success() && text.contains(&format!("Address: {ip}")),
        "nslookup {name}: {text}"
    );
    Ok(format!(
        "{ip} on every node; local answers; scaled to 0 -> first answer from {cb} after \
         {gap:.1} s (kubectl scale to a GET answered remotely, GETs through kubectl exec); \
         local again {back:.1} s after the rollout; {name} -> {ip}"
    ))
}

/// `kubectl get -o json` of one object, None if it does not exist.
fn get_json(rk: &RealKube, cluster: &str, args: &[&str]) -> Result<Option<Value>> {
    let mut a = vec!["get"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["-o", "json", "--ignore-not-found"]);
    let out = rk.kubectl(cluster).run(&a)?;
    if out.trim().is_empty() {
        return Ok(None);
    }
    Ok(Some(serde_json::from_str(&out)?))
}

/// The (status, reason) of condition `type_` on ServiceExport `default/name` in `cluster`.
fn export_condition(
    rk: &RealKube,
    cluster: &str,
    name: &str,
    type_: &str,
) -> Result<Option<(String, String)>> {
    let Some(e) = get_json(rk, cluster, &["-n", "default", "serviceexport", name])? else {
        return Ok(None);
    };
    Ok(e["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == type_)
        .map(|c| {
            (
                c["status"].as_str().unwrap_or_default().to_string(),
                c["reason"].as_str().unwrap_or_default().to_string(),
            )
        }))
}

fn mcs_objects(rk: &RealKube) -> Result<String> {
    let mut notes = Vec::new();
    let cls = clusters(rk);
    // One holder per cluster, an agent of that cluster, and it says so in its status.
    for cl in &cls {
        let mut holder = String::new();
        wait(
            &format!("{cl}'s MCS lease held"),
            Duration::from_secs(30),
            || {
                let l = get_json(rk, cl, &["-n", "sdn-tunnel", "lease", "sdn-tunnel-mcs"])?;
                holder = l
                    .as_ref()
                    .and_then(|l| l["spec"]["holderIdentity"].as_str())
                    .unwrap_or_default()
                    .to_string();
                Ok(!holder.is_empty())
            },
        )?;
        let nodes = nodes_of(rk, cl);
        ensure!(
            nodes.contains(&holder),
            "{cl}'s lease held by {holder}, not one of {nodes:?}"
        );
        let mut leaders = Vec::new();
        for n in &nodes {
            let s = agent_status(rk, n)?;
            if s["agent"]["clusterset"]["controller"]["leader"] == true {
                leaders.push(n.clone());
            }
        }
        ensure!(
            leaders == [holder.clone()],
            "{cl}: leaders by status {leaders:?}, lease holder {holder}"
        );
        notes.push(format!("{cl}: lease held by {holder}"));
    }
    // web is exported by both clusters: a ServiceImport in each, with the ClusterSetIP, and
    // clean conditions on both exports.
    let (a, _) = pair(rk);
    let ip = clusterset_ip_at(rk, &a)?.context("web's ClusterSetIP")?;
    for cl in &cls {
        wait(
            &format!("ServiceImport default/web in {cl}"),
            Duration::from_secs(30),
            || {
                let Some(si) = get_json(rk, cl, &["-n", "default", "serviceimport", "web"])? else {
                    return Ok(false);
                };
                let clusters: Vec<&str> = si["status"]["clusters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c["cluster"].as_str())
                    .collect();
                Ok(si["spec"]["type"] == "ClusterSetIP"
                    && si["spec"]["ips"] == json!([ip])
                    && si["spec"]["ports"][0]["port"] == 80
                    && clusters.len() == cls.len())
            },
        )?;
        wait(
            &format!("{cl}'s export of web is Valid, without conflict"),
            Duration::from_secs(30),
            || {
                Ok(export_condition(rk, cl, "web", "Valid")?
                    == Some(("True".into(), "Valid".into()))
                    && export_condition(rk, cl, "web", "Conflict")?
                        == Some(("False".into(), "NoConflicts".into())))
            },
        )?;
    }
    notes.push(format!(
        "ServiceImport web ({ip}) in {} clusters, conditions Valid/NoConflicts",
        cls.len()
    ));
    // A port conflict: the same name exported with different ports.
    let t = Instant::now();
    for (i, cl) in cls.iter().enumerate() {
        rk.apply(
            cl,
            &format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: clash, namespace: default}}\n\
                 spec: {{selector: {{app: web}}, ports: [{{name: http, port: {}, targetPort: 8080}}]}}\n\
                 ---\napiVersion: multicluster.x-k8s.io/v1beta1\nkind: ServiceExport\n\
                 metadata: {{name: clash, namespace: default}}\n",
                80 + i
            ),
        )?;
    }
    for cl in &cls {
        wait(
            &format!("{cl}'s export of clash reports PortConflict"),
            Duration::from_secs(30),
            || {
                Ok(export_condition(rk, cl, "clash", "Conflict")?
                    == Some(("True".into(), "PortConflict".into())))
            },
        )?;
    }
    notes.push(format!(
        "PortConflict on both exports within {:.1} s",
        t.elapsed().as_secs_f64()
    ));
    // An ExternalName Service and an export without a Service are not valid.
    let (c0, c1) = (&cls[0], &cls[1]);
    rk.apply(
        c0,
        "apiVersion: v1\nkind: Service\nmetadata: {name: outside, namespace: default}\n\
         spec: {type: ExternalName, externalName: example.org}\n\
         ---\napiVersion: multicluster.x-k8s.io/v1beta1\nkind: ServiceExport\n\
         metadata: {name: outside, namespace: default}\n\
         ---\napiVersion: multicluster.x-k8s.io/v1beta1\nkind: ServiceExport\n\
         metadata: {name: nothing, namespace: default}\n",
    )?;
    wait(
        "ExternalName and missing Service are Valid=False",
        Duration::from_secs(30),
        || {
            Ok(export_condition(rk, c0, "outside", "Valid")?
                == Some(("False".into(), "InvalidServiceType".into()))
                && export_condition(rk, c0, "nothing", "Valid")?
                    == Some(("False".into(), "NoService".into())))
        },
    )?;
    notes.push("InvalidServiceType and NoService reported".into());
    // Unexport clash in one cluster: its import stays (the other still exports); in both: gone
    // from every cluster.
    rk.kubectl(c0)
        .run(&["-n", "default", "delete", "serviceexport", "clash"])?;
    wait(
        "clash no longer in conflict",
        Duration::from_secs(30),
        || {
            Ok(export_condition(rk, c1, "clash", "Conflict")?
                == Some(("False".into(), "NoConflicts".into())))
        },
    )?;
    for cl in &cls {
        ensure!(
            get_json(rk, cl, &["-n", "default", "serviceimport", "clash"])?.is_some(),
            "{cl}: ServiceImport clash gone while {c1} still exports it"
        );
    }
    let t = Instant::now();
    rk.kubectl(c1)
        .run(&["-n", "default", "delete", "serviceexport", "clash"])?;
    for cl in &cls {
        wait(
            &format!("ServiceImport clash deleted in {cl}"),
            Duration::from_secs(30),
            || Ok(get_json(rk, cl, &["-n", "default", "serviceimport", "clash"])?.is_none()),
        )?;
    }
    notes.push(format!(
        "last unexport -> ServiceImport gone from {} clusters in {:.1} s",
        cls.len(),
        t.elapsed().as_secs_f64()
    ));
    for (cl, what) in [
        (c0, "service/outside"),
        (c0, "serviceexport/outside"),
        (c0, "serviceexport/nothing"),
    ] {
        rk.kubectl(cl).run(&["-n", "default", "delete", what])?;
    }
    for cl in &cls {
        rk.kubectl(cl)
            .run(&["-n", "default", "delete", "service", "clash"])?;
    }
    Ok(notes.join("; "))
}

fn rollout_restart_during_stream(rk: &RealKube) -> Result<String> {
    let (a, b) = pair(rk);
    let (ca, cb) = (rk.cluster_of(&a), rk.cluster_of(&b));
    let (na, nb) = (
        rk.pod_netns(&ca, "default", &probe(&a))?,
        rk.pod_netns(&cb, "default", &probe(&b))?,
    );
    let ib = rk.pod_ip(&cb, &probe(&b))?;
    let stream = sdn_lab::stream::Stream::start(&na, &nb, format!("{ib}:5002").parse()?)?;
    std::thread::sleep(Duration::from_secs(2));
    let t0 = Instant::now();
    let rolled = (|| -> Result<f64> {
        for cl in [&ca, &cb] {
            rk.kubectl(cl).run(&[
                "-n",
                "sdn-tunnel",
                "rollout",
                "restart",
                "daemonset/sdn-tunnel",
            ])?;
        }
        for cl in [&ca, &cb] {
            rk.kubectl(cl).run(&[
                "-n",
                "sdn-tunnel",
                "rollout",
                "status",
                "daemonset/sdn-tunnel",
                "--timeout=240s",
            ])?;
        }
        Ok(t0.elapsed().as_secs_f64())
    })();
    // Let the stream recover after the last agent is back.
    std::thread::sleep(Duration::from_secs(8));
    let report = stream.stop();
    let took = rolled?;
    let note = format!(
        "both clusters rolled in {took:.0} s; {} KiB streamed {a}->{b}; longest interruption {:.2} s",
        report.bytes / 1024,
        report.longest_gap().as_secs_f64()
    );
    eprintln!("rollout restart during a stream: {note}");
    if let Some(e) = report.error {
        bail!("the stream broke: {e} ({note})");
    }
    Ok(note)
}

fn kube_source_tests(rk: &RealKube) -> Result<String> {
    // The binary cargo built beside this one (same target directory and profile).
    let me = std::env::current_exe()?;
    let deps = me.parent().context("deps dir")?;
    let bin = std::fs::read_dir(deps)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().unwrap_or_default().to_string_lossy();
            n.starts_with("kube_source-") && !n.contains('.')
        })
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
        .context("kube_source test binary not built (cargo test builds it)")?;
    // West: the cluster those tests expect (service CIDR 172.31.0.0/16, see their config()).
    let cl = &clusters(rk)[1];
    let k = rk.kubectl(cl);
    let out = sdn_lab::exec(
        &k.ns,
        &[
            "env",
            &format!("KUBECONFIG={}", k.kubeconfig.display()),
            bin.to_str().context("path")?,
            "--ignored",
            "--test-threads=1",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "{} --ignored failed:\n{stdout}\n{}",
        bin.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = stdout
        .lines()
        .find(|l| l.starts_with("test result:"))
        .unwrap_or("")
        .to_string();
    ensure!(
        !summary.contains(" 0 passed"),
        "no real-cluster variant ran: {summary}"
    );
    Ok(summary)
}

fn delete_remote_node(rk: &mut RealKube) -> Result<String> {
    let cl = clusters(rk);
    let (watcher, remote) = (
        nodes_of(rk, &cl[0])[0].clone(),
        nodes_of(rk, &cl[1])[1].clone(),
    );
    let has_peer = |rk: &RealKube| -> Result<bool> {
        let s = agent_status(rk, &watcher)?;
        Ok(s["agent"]["peers"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p["name"] == remote.as_str()))
    };
    ensure!(
        has_peer(rk)?,
        "{watcher} has no peer {remote} to begin with"
    );
    rk.kubectl(&cl[1])
        .run(&["delete", "node", &remote, "--wait=true"])?;
    let t0 = Instant::now();
    wait(
        &format!("{watcher} drops peer {remote}"),
        Duration::from_secs(30),
        || Ok(!has_peer(rk)?),
    )?;
    let gone = t0.elapsed().as_secs_f64();
    rk.restart_kubelet(&remote)?;
    let rk: &RealKube = rk;
    wait(
        &format!("{remote} registered again"),
        Duration::from_secs(90),
        || {
            Ok(rk
                .kubectl(&cl[1])
                .output(&["get", "node", &remote])
                .status
                .success())
        },
    )?;
    rk.kubectl(&cl[1]).run(&[
        "wait",
        "--for=condition=Ready",
        "node",
        &remote,
        "--timeout=120s",
    ])?;
    wait(
        &format!("{watcher} peers with {remote} again"),
        Duration::from_secs(120),
        || has_peer(rk),
    )?;
    Ok(format!(
        "peer removed {gone:.1} s after the Node was deleted; back after re-registration"
    ))
}

fn uninstall(rk: &RealKube) -> Result<String> {
    let topo = rk.topology().clone();
    for c in &topo.clusters {
        let overlay = rk.dir().join("deploy").join(&c.name);
        // --ignore-not-found: deleting the Namespace also deletes what is in it.
        rk.kubectl(&c.name).run(&[
            "delete",
            "-k",
            overlay.to_str().context("path")?,
            "--ignore-not-found",
            "--wait=true",
            "--timeout=120s",
        ])?;
        // docs/install.md, "Uninstalling": the Node annotations the agents wrote.
        rk.kubectl(&c.name).run(&[
            "annotate",
            "nodes",
            "--all",
            "sdn-tunnel.io/public-key-",
            "sdn-tunnel.io/endpoint-",
        ])?;
    }
    let mut leftovers = Vec::new();
    for n in &topo.nodes {
        let rt = rk.node(&n.name);
        // docs/install.md, "Uninstalling": on each node, the private key's directory. (In the
        // lab the directory itself is the node's own bind mount: empty it instead.)
        rt.run(&["find", "/var/lib/sdn-tunnel", "-mindepth", "1", "-delete"])?;
        let links = rt.run(&["ip", "-o", "link", "show"])?;
        if links.contains("sdn0") {
            leftovers.push(format!("{}: device sdn0", n.name));
        }
        let routes = rt.run(&["ip", "route", "show", "table", "all", "proto", "93"])?;
        if !routes.trim().is_empty() {
            leftovers.push(format!("{}: routes {}", n.name, routes.trim()));
        }
        let tables = rt.run(&["nft", "list", "tables"])?;
        if tables.contains("sdn") {
            leftovers.push(format!("{}: nftables {}", n.name, tables.trim()));
        }
        for dir in ["/run/sdn-tunnel", "/run/wireguard", "/var/lib/sdn-tunnel"] {
            let ls = rt.run(&["sh", "-c", &format!("ls -A {dir} 2>/dev/null || true")])?;
            if !ls.trim().is_empty() {
                leftovers.push(format!("{}: {dir}: {}", n.name, ls.trim()));
            }
        }
        let v = rk.kubectl(&n.cluster).get_json(&["node", &n.name])?;
        let ann = v["metadata"]["annotations"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let ours: Vec<&String> = ann
            .keys()
            .filter(|k| k.starts_with("sdn-tunnel.io/"))
            .collect();
        if !ours.is_empty() {
            leftovers.push(format!("{}: Node annotations {ours:?}", n.name));
        }
    }
    for c in &topo.clusters {
        let left = rk
            .kubectl(&c.name)
            .output(&["get", "namespace", "sdn-tunnel"]);
        if left.status.success() {
            leftovers.push(format!("{}: namespace sdn-tunnel still exists", c.name));
        }
    }
    ensure!(
        leftovers.is_empty(),
        "left behind:\n{}",
        leftovers.join("\n")
    );
    Ok(format!("{} nodes clean", topo.nodes.len()))
}
