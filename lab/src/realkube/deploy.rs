//! Installs sdn-tunnel on the lab's clusters the way docs/install.md tells a user to:
//! `kubectl apply -k` of a small overlay of deploy/base (it sets only the image and this
//! cluster's config), the remote-reader kubeconfig of every cluster minted with
//! scripts/mint-remote-kubeconfig.sh against its real API server, and in every cluster the
//! Secret `sdn-tunnel-remotes` holding the other clusters' kubeconfigs.

use anyhow::{Context, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::bins::KubeBins;
use super::kubectl::Kubectl;
use super::util::{path_str, write};
use crate::agent_config::{kube_remote, AgentConfig};
use crate::topology::{ClusterSpec, Topology};
use serde_json::json;

/// The agent image the lab builds and imports (scripts/lab-images.sh).
pub const AGENT_IMAGE_NAME: &str = "localhost/sdn-tunnel";
pub const AGENT_IMAGE_TAG: &str = "lab";
/// The lab's agents listen here (the default of tunnel.listenPort).
pub const TUNNEL_PORT: u16 = 51830;

/// The lab's `mcs.clusterSetCIDRs` (outside every lab pod, service and underlay range).
pub const CLUSTER_SET_CIDR: &str = "10.255.0.0/24";

/// The agent config of cluster `c` in a lab of `topo` (what the ConfigMap carries).
pub fn agent_config(topo: &Topology, c: &ClusterSpec, proxy_backend: &str) -> String {
    let mut cfg = AgentConfig::new(
        json!({"name": c.name, "podCIDRs": [c.pod_cidr.to_string()],
               "serviceCIDRs": [c.service_cidr.to_string()]}),
        json!({"advertise": "always"}),
        json!({
            "privateKeyFile": "/var/lib/sdn-tunnel/private.key",
            "endpoint": "nodeInternalIP",
            "listenPort": TUNNEL_PORT,
            "mtu": 1420,
            "persistentKeepalive": 5,
            "runDir": "/run",
        }),
    )
    .set("proxy", json!({ "backend": proxy_backend }))
    // The same ClusterSetIP range in every cluster (issue 17).
    .set("mcs", json!({ "clusterSetCIDRs": [CLUSTER_SET_CIDR] }));
    for rc in topo
        .clusters
        .iter()
        .filter(|rc| rc.name != c.name && !rc.foreign)
    {
        cfg = cfg.add_remote(kube_remote(
            &rc.name,
            &rc.pod_cidr.to_string(),
            &rc.service_cidr.to_string(),
            &format!("/etc/sdn-tunnel/remotes/{}", rc.name),
        ));
    }
    cfg.render()
}

/// Writes the lab overlay of cluster `c` into `dir`: deploy/base, the lab's image, this
/// cluster's config. Nothing else differs from what a user applies.
pub fn write_overlay(dir: &Path, repo: &Path, config: &str) -> Result<PathBuf> {
    fs::create_dir_all(dir)?;
    let base = fs::canonicalize(repo.join("deploy/base")).context("deploy/base")?;
    // kustomize takes a base by relative path only.
    let rel = relative(dir, &base);
    let indented: String = config.lines().map(|l| format!("    {l}\n")).collect();
    write(
        &dir.join("config.yaml"),
        &format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: sdn-tunnel-config\n  \
             namespace: sdn-tunnel\ndata:\n  config.yaml: |\n{indented}"
        ),
        0o644,
    )?;
    write(
        &dir.join("kustomization.yaml"),
        &format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
             resources:\n  - {rel}\n\
             images:\n  - name: ghcr.io/sdn-tunnel/sdn-tunnel\n    newName: {AGENT_IMAGE_NAME}\n    \
             newTag: {AGENT_IMAGE_TAG}\n\
             patches:\n  - path: config.yaml\n"
        ),
        0o644,
    )?;
    Ok(dir.to_path_buf())
}

/// `../..` path from directory `from` to `to` (both absolute).
fn relative(from: &Path, to: &Path) -> String {
    let from = fs::canonicalize(from).unwrap_or_else(|_| from.to_path_buf());
    let f: Vec<_> = from.components().collect();
    let t: Vec<_> = to.components().collect();
    let common = f.iter().zip(&t).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<String> = vec!["..".to_string(); f.len() - common];
    parts.extend(
        t[common..]
            .iter()
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    parts.join("/")
}

/// Mints cluster `c`'s remote-reader kubeconfig with scripts/mint-remote-kubeconfig.sh.
pub fn mint_reader(
    repo: &Path,
    bins: &KubeBins,
    kubectl: &Kubectl,
    c: &ClusterSpec,
    server: &str,
    out: &Path,
) -> Result<()> {
    let path = format!(
        "{}:{}",
        path_str(&bins.dir),
        std::env::var("PATH").unwrap_or_default()
    );
    let script = path_str(&repo.join("scripts/mint-remote-kubeconfig.sh"));
    crate::netns::exec_ok(
        &kubectl.ns,
        &[
            "env",
            &format!("PATH={path}"),
            &format!("KUBECONFIG={}", kubectl.kubeconfig.display()),
            "bash",
            &script,
            "--cluster-name",
            &c.name,
            "--server",
            server,
            "--out",
            &path_str(out),
            "--timeout",
            "120",
        ],
    )
    .with_context(|| format!("minting the remote-reader kubeconfig of {}", c.name))?;
    Ok(())
}

/// Creates or replaces Secret sdn-tunnel/sdn-tunnel-remotes: key = remote name, value = its
/// reader kubeconfig.
pub fn apply_remotes_secret(kubectl: &Kubectl, readers: &[(String, PathBuf)]) -> Result<()> {
    let mut args: Vec<String> = vec![
        "-n".into(),
        "sdn-tunnel".into(),
        "create".into(),
        "secret".into(),
        "generic".into(),
        "sdn-tunnel-remotes".into(),
    ];
    for (name, file) in readers {
        args.push(format!("--from-file={name}={}", file.display()));
    }
    args.extend(["--dry-run=client".into(), "-o".into(), "yaml".into()]);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let yaml = kubectl.run(&a)?;
    kubectl.run_stdin(&["apply", "--server-side", "-f", "-"], &yaml)?;
    Ok(())
}

/// Waits until the DaemonSet has a Ready pod on every node (`rollout status`).
pub fn wait_rollout(kubectl: &Kubectl, timeout: Duration) -> Result<()> {
    kubectl
        .run(&[
            "-n",
            "sdn-tunnel",
            "rollout",
            "status",
            "daemonset/sdn-tunnel",
            &format!("--timeout={}s", timeout.as_secs()),
        ])
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths() {
        assert_eq!(
            relative(Path::new("/tmp/a/b"), Path::new("/work/main/deploy/base")),
            "../../../work/main/deploy/base"
        );
        assert_eq!(relative(Path::new("/x/y"), Path::new("/x/z")), "../z");
    }

    #[test]
    fn config_lists_the_other_clusters_only() {
        let topo = Topology::plan("sl0001", 3, 1, 0, false).unwrap();
        let y = agent_config(&topo, &topo.clusters[1], "nftables");
        let v: serde_json::Value = serde_json::from_str(&y).unwrap();
        assert_eq!(v["cluster"]["name"], "west");
        let kubeconfigs: Vec<&str> = v["remotes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["kubeconfig"].as_str().unwrap())
            .collect();
        assert_eq!(
            kubeconfigs,
            [
                "/etc/sdn-tunnel/remotes/east",
                "/etc/sdn-tunnel/remotes/south"
            ]
        );
    }
}
