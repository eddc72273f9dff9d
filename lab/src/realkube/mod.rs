//! The real-Kubernetes lab: clusters made of the official Kubernetes components (built from
//! their Go modules by scripts/kube-bins.sh) on top of the network-namespace lab.
//!
//! Per cluster, etcd, kube-apiserver, kube-controller-manager and kube-scheduler run in the
//! namespace of the cluster's first node; per node, containerd, the kubelet and kube-proxy
//! (nftables mode) run in the node's namespace (see [`node`]). The lab creates each Node with
//! the pod CIDR of its plan before the node's kubelet registers and adopts it (the
//! controller-manager's allocator leaves set CIDRs alone), pods get addresses from the CNI
//! bridge plugin. Unless `bare`, sdn-tunnel is then installed with `kubectl apply -k` exactly as
//! docs/install.md says ([`deploy`]). docs/kube-lab.md has the picture.

pub mod bins;
pub mod control_plane;
pub mod deploy;
pub mod images;
pub mod kubectl;
pub mod node;
pub mod pki;
pub mod process;
pub mod util;
pub mod workload;

use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use crate::{netns, Lab, LabOptions, Topology};
use bins::{repo_root, KubeBins};
use control_plane::ControlPlane;
use kubectl::Kubectl;
use node::NodeRuntime;

/// The management address on the underlay bridge: kubectl, the tests and Ansible run in the
/// underlay namespace and reach every API server and node from there.
pub const MGMT_ADDR: &str = "192.168.77.254/24";

#[derive(Debug, Clone)]
pub struct KubeLabOptions {
    pub clusters: usize,
    pub nodes_per_cluster: usize,
    /// Start the clusters without sdn-tunnel (for the Ansible rollout to install it).
    pub bare: bool,
    /// Leave everything running when dropped (`sdn-lab kube down <prefix>` removes it).
    pub keep: bool,
    /// The sdn-tunnel release binary (goes into the agent image).
    pub bin: PathBuf,
    pub prefix: Option<String>,
    pub verbose: bool,
    /// proxy.backend of the agents (this machine's kernel has no IPVS: nftables).
    pub proxy_backend: String,
    /// Upper bound for each waiting step (API ready, nodes ready, rollout).
    pub timeout: Duration,
}

impl Default for KubeLabOptions {
    fn default() -> Self {
        KubeLabOptions {
            clusters: 2,
            nodes_per_cluster: 2,
            bare: false,
            keep: false,
            bin: std::env::var_os(crate::BIN_ENV)
                .map(PathBuf::from)
                .unwrap_or_else(|| repo_root().join("target/release/sdn-tunnel")),
            prefix: None,
            verbose: false,
            proxy_backend: "nftables".into(),
            timeout: Duration::from_secs(180),
        }
    }
}

/// A rough upper bound of the disk a lab takes under /tmp: every node's containerd holds each
/// image twice (content and unpacked snapshot), every cluster an etcd (WAL segments are
/// preallocated 64 MiB), plus logs.
fn disk_needed(clusters: usize, nodes: usize) -> u64 {
    const MIB: u64 = 1 << 20;
    let images: u64 = images::cache_dir()
        .read_dir()
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "tar"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
        .max(256 * MIB);
    nodes as u64 * 2 * images + clusters as u64 * 256 * MIB + 512 * MIB
}

/// One running cluster.
pub struct ClusterRt {
    pub name: String,
    pub control_plane: ControlPlane,
    pub kubectl: Kubectl,
}

/// A running real-Kubernetes lab. Dropping it tears everything down unless `keep`.
pub struct RealKube {
    pub opts: KubeLabOptions,
    pub bins: KubeBins,
    pub repo: PathBuf,
    pub clusters: Vec<ClusterRt>,
    pub nodes: BTreeMap<String, NodeRuntime>,
    /// Last: dropped after the processes above are stopped.
    pub lab: Lab,
}

impl RealKube {
    pub fn up(opts: KubeLabOptions) -> Result<RealKube> {
        let t0 = Instant::now();
        let repo = repo_root();
        let bins = KubeBins::locate(&repo)?;
        anyhow::ensure!(
            opts.bin.exists(),
            "sdn-tunnel binary {} not found (cargo build --release)",
            opts.bin.display()
        );
        util::ensure_free_space(
            Path::new(crate::LAB_DIR_ROOT),
            disk_needed(opts.clusters, opts.clusters * opts.nodes_per_cluster),
            "the real-Kubernetes lab",
        )?;
        let lab = Lab::up(LabOptions {
            clusters: opts.clusters,
            nodes_per_cluster: opts.nodes_per_cluster,
            pods_per_node: 0,
            start_agents: false,
            bin: Some(opts.bin.clone()),
            prefix: opts.prefix.clone(),
            keep: opts.keep,
            verbose: opts.verbose,
            pod_bridge: false,
            ..LabOptions::default()
        })?;
        let mut rk = RealKube {
            bins,
            repo,
            clusters: Vec::new(),
            nodes: BTreeMap::new(),
            lab,
            opts,
        };
        rk.build()
            .with_context(|| format!("building real-Kubernetes lab {}", rk.lab.prefix()))?;
        rk.say(format!("ready in {:.0} s", t0.elapsed().as_secs_f64()));
        Ok(rk)
    }

    fn say(&self, msg: impl AsRef<str>) {
        if self.opts.verbose {
            eprintln!("[sdn-lab kube {}] {}", self.lab.prefix(), msg.as_ref());
        }
    }

    pub fn topology(&self) -> &Topology {
        self.lab.topology()
    }

    pub fn dir(&self) -> &Path {
        self.lab.dir()
    }

    fn build(&mut self) -> Result<()> {
        let topo = self.lab.topology().clone();
        let u = topo.underlay_ns.clone();
        netns::ip(&u, &["addr", "add", MGMT_ADDR, "dev", "br0"])?;
        for n in &topo.nodes {
            // Bridged pod traffic to Services goes through kube-proxy's rules (br_netfilter).
            netns::exec_ok(
                &n.ns,
                &["sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1"],
            )?;
            // Like a real node, a default route (to the management address, which routes
            // nowhere): a local connection to a ClusterIP needs a route before kube-proxy's
            // DNAT can rewrite it (the agent reaches its API at the `kubernetes` ClusterIP).
            netns::ip(
                &n.ns,
                &[
                    "route",
                    "add",
                    "default",
                    "via",
                    MGMT_ADDR.split('/').next().expect("addr"),
                ],
            )?;
        }

        self.say("building images (scripts/lab-images.sh)");
        let tars = images::build(&self.repo, &images::cache_dir(), &self.opts.bin)?.all();

        self.say("starting control planes");
        let timeout = self.opts.timeout;
        let mut planes = Vec::new();
        for c in &topo.clusters {
            let first = topo.node(&c.nodes[0]).expect("first node");
            let dir = self.dir().join("clusters").join(&c.name);
            let files = control_plane::prepare(&dir, c, first.underlay_v4)?;
            let kubectl = Kubectl::new(self.bins.path("kubectl"), &files.admin_kubeconfig, &u);
            planes.push((c.clone(), first.clone(), files, kubectl));
        }
        // The clusters start side by side (each API server takes ~10 s to come up).
        let bins = self.bins.clone();
        let started: Vec<Result<ControlPlane>> = std::thread::scope(|s| {
            let hs: Vec<_> = planes
                .iter()
                .map(|(c, first, files, kubectl)| {
                    let bins = &bins;
                    s.spawn(move || {
                        control_plane::start(
                            files,
                            bins,
                            kubectl,
                            c,
                            &first.ns,
                            first.underlay_v4,
                            timeout,
                        )
                    })
                })
                .collect();
            hs.into_iter()
                .map(|h| h.join().expect("control plane thread"))
                .collect()
        });
        for ((c, _, _, kubectl), cp) in planes.into_iter().zip(started) {
            let cp = cp.with_context(|| format!("cluster {}", c.name))?;
            // The API server's identity towards kubelets (logs, exec, port-forward).
            kubectl.run(&[
                "create",
                "clusterrolebinding",
                "sdn-lab:apiserver-kubelet",
                "--clusterrole=system:kubelet-api-admin",
                "--user=kube-apiserver-kubelet-client",
            ])?;
            self.clusters.push(ClusterRt {
                name: c.name.clone(),
                control_plane: cp,
                kubectl,
            });
        }

        self.say("starting containerd on every node and importing the images");
        for n in &topo.nodes {
            let dir = self.dir().join("nodes").join(&n.name);
            let rt = NodeRuntime::start(&self.bins, &topo.prefix, n, &dir)?;
            self.nodes.insert(n.name.clone(), rt);
        }
        let bins = self.bins.clone();
        let imports: Vec<Result<()>> = std::thread::scope(|s| {
            let hs: Vec<_> = self
                .nodes
                .values()
                .map(|rt| {
                    let (bins, tars) = (&bins, &tars);
                    s.spawn(move || rt.import_images(bins, tars))
                })
                .collect();
            hs.into_iter()
                .map(|h| h.join().expect("import thread"))
                .collect()
        });
        imports.into_iter().collect::<Result<Vec<()>>>()?;

        // Every Node is created with its planned pod CIDR before its kubelet starts: the kubelet
        // finds the Node and adopts it ("Node was previously registered"), and the
        // controller-manager's range allocator only marks a CIDR that is already set as used.
        // Left to the allocator, the order of the CIDRs is not guaranteed, whatever order the
        // kubelets start in (CI once gave b2 10.132.2.0/24 instead of its 10.132.1.0/24).
        self.say("creating the Nodes with their planned pod CIDRs and starting kubelets");
        for n in &topo.nodes {
            self.create_node(&n.cluster, &n.name)?;
            self.start_kubelet(&n.cluster, &n.name)?;
        }
        for n in &topo.nodes {
            let (name, want) = (n.name.clone(), n.pod_cidr);
            let kubectl = self.kubectl(&n.cluster).clone();
            let mut got = String::new();
            kubectl
                .wait_until(
                    &format!("the kubelet of {name} to take over its Node"),
                    timeout,
                    |k| {
                        let out = k.output(&[
                            "get",
                            "node",
                            &name,
                            "-o",
                            "jsonpath={.status.nodeInfo.kubeletVersion}|{.spec.podCIDR}",
                        ]);
                        let s = String::from_utf8_lossy(&out.stdout);
                        let (kubelet, cidr) = s.trim().split_once('|').unwrap_or(("", ""));
                        got = cidr.to_string();
                        Ok(out.status.success() && !kubelet.is_empty())
                    },
                )
                .map_err(|e| anyhow::anyhow!("{e:#}\n{}", self.node_logs(&name)))?;
            if got != want.to_string() {
                bail!("node {name} has pod CIDR {got:?}, the lab's plan says {want}");
            }
            self.nodes[&name].write_cni(&want)?;
        }
        for c in &topo.clusters {
            for n in &c.nodes {
                let kc = self
                    .clusters
                    .iter()
                    .find(|x| x.name == c.name)
                    .expect("cluster");
                let kp = kc.control_plane.files.dir.join("kube-proxy.kubeconfig");
                let bins = self.bins.clone();
                self.nodes
                    .get_mut(n)
                    .expect("node")
                    .start_kube_proxy(&bins, &kp, c)?;
            }
        }
        self.say("waiting for every node to be Ready");
        for c in &topo.clusters {
            let k = self.kubectl(&c.name).clone();
            k.run(&[
                "wait",
                "--for=condition=Ready",
                "node",
                "--all",
                &format!("--timeout={}s", timeout.as_secs()),
            ])
            .map_err(|e| anyhow::anyhow!("{e:#}\n{}", self.all_node_logs()))?;
        }
        if !self.opts.bare {
            self.install_sdn_tunnel()?;
        }
        Ok(())
    }

    /// Creates the Node object of `node` with the pod CIDR of the lab's plan (`spec.podCIDR`,
    /// `spec.podCIDRs`), for its kubelet to adopt when it registers.
    fn create_node(&self, cluster: &str, node: &str) -> Result<()> {
        let cidr = self
            .topology()
            .node(node)
            .with_context(|| format!("no node {node}"))?
            .pod_cidr
            .to_string();
        let obj = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": node},
            "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
        });
        self.kubectl(cluster)
            .run_stdin(&["create", "-f", "-"], &obj.to_string())
            .with_context(|| format!("creating Node {node} with pod CIDR {cidr}"))?;
        Ok(())
    }

    fn start_kubelet(&mut self, cluster: &str, node: &str) -> Result<()> {
        let topo = self.lab.topology().clone();
        let c = topo.cluster(cluster).expect("cluster");
        let cp = &self
            .clusters
            .iter()
            .find(|x| x.name == cluster)
            .expect("cluster")
            .control_plane;
        let rt_dir = self.nodes[node].dir.clone();
        let kc = rt_dir.join("kubelet.kubeconfig");
        cp.files.kubelet_kubeconfig(c, node, &kc)?;
        let ca = cp.files.pki.ca.cert.clone();
        let bins = self.bins.clone();
        self.nodes
            .get_mut(node)
            .expect("node")
            .start_kubelet(&bins, &kc, &ca)
    }

    /// Installs sdn-tunnel on every cluster as docs/install.md describes (see [`deploy`]).
    pub fn install_sdn_tunnel(&self) -> Result<()> {
        let topo = self.topology().clone();
        self.say("installing the MCS API CRDs (kubectl apply -k deploy/crds) and sdn-tunnel: kubectl apply -k (lab overlay of deploy/base)");
        for c in topo.clusters.iter() {
            let crds = self.repo.join("deploy").join("crds");
            self.kubectl(&c.name)
                .run(&["apply", "-k", &util::path_str(&crds)])?;
            let cfg = deploy::agent_config(&topo, c, &self.opts.proxy_backend);
            let overlay =
                deploy::write_overlay(&self.dir().join("deploy").join(&c.name), &self.repo, &cfg)?;
            self.kubectl(&c.name)
                .run(&["apply", "-k", &util::path_str(&overlay)])?;
        }
        self.say("minting remote-reader kubeconfigs (scripts/mint-remote-kubeconfig.sh)");
        let mut readers = Vec::new();
        for c in &topo.clusters {
            let out = self
                .dir()
                .join("readers")
                .join(format!("{}.kubeconfig", c.name));
            std::fs::create_dir_all(out.parent().expect("dir"))?;
            let server = self.api_server(&c.name);
            deploy::mint_reader(
                &self.repo,
                &self.bins,
                self.kubectl(&c.name),
                c,
                &server,
                &out,
            )?;
            readers.push((c.name.clone(), out));
        }
        for c in &topo.clusters {
            let others: Vec<_> = readers
                .iter()
                .filter(|(n, _)| *n != c.name)
                .cloned()
                .collect();
            deploy::apply_remotes_secret(self.kubectl(&c.name), &others)?;
        }
        self.say("waiting for the agents (kubectl rollout status)");
        for c in &topo.clusters {
            deploy::wait_rollout(self.kubectl(&c.name), self.opts.timeout).map_err(|e| {
                anyhow::anyhow!(
                    "cluster {}: {e:#}\n{}",
                    c.name,
                    self.agent_pods_report(&c.name)
                )
            })?;
        }
        Ok(())
    }

    pub fn kubectl(&self, cluster: &str) -> &Kubectl {
        &self
            .clusters
            .iter()
            .find(|c| c.name == cluster)
            .unwrap_or_else(|| panic!("no cluster {cluster}"))
            .kubectl
    }

    pub fn api_server(&self, cluster: &str) -> String {
        self.clusters
            .iter()
            .find(|c| c.name == cluster)
            .map(|c| c.control_plane.files.api_server.clone())
            .unwrap_or_default()
    }

    pub fn node(&self, name: &str) -> &NodeRuntime {
        &self.nodes[name]
    }

    /// Pods, events and the agent logs of a cluster (for error messages).
    pub fn agent_pods_report(&self, cluster: &str) -> String {
        let k = self.kubectl(cluster);
        let mut s = String::new();
        for args in [
            vec!["-n", "sdn-tunnel", "get", "pods", "-o", "wide"],
            vec!["-n", "sdn-tunnel", "describe", "pods"],
            vec![
                "-n",
                "sdn-tunnel",
                "logs",
                "-l",
                "app.kubernetes.io/component=agent",
                "--tail=30",
                "--all-containers",
                "--prefix",
            ],
        ] {
            let out = k.output(&args);
            s += &format!(
                "$ kubectl {}\n{}{}\n",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        s
    }

    pub fn node_logs(&self, node: &str) -> String {
        let rt = &self.nodes[node];
        ["containerd", "kubelet", "kube-proxy"]
            .iter()
            .map(|l| format!("--- {node} {l} ---\n{}", process::log_tail(&rt.log(l), 25)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn all_node_logs(&self) -> String {
        self.nodes
            .keys()
            .map(|n| self.node_logs(n))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// What `sdn-lab kube up --json` prints.
    pub fn describe_json(&self) -> serde_json::Value {
        let topo = self.topology();
        let clusters: Vec<serde_json::Value> = topo
            .clusters
            .iter()
            .map(|c| {
                let cp = &self
                    .clusters
                    .iter()
                    .find(|x| x.name == c.name)
                    .expect("cluster")
                    .control_plane;
                serde_json::json!({
                    "name": c.name,
                    "kubeconfig": cp.files.admin_kubeconfig,
                    "apiServer": cp.files.api_server,
                    "podCIDR": c.pod_cidr.to_string(),
                    "serviceCIDR": c.service_cidr.to_string(),
                    "nodes": c.nodes.iter().map(|n| {
                        let spec = topo.node(n).expect("node");
                        serde_json::json!({
                            "name": n,
                            "netns": spec.ns,
                            "internalIP": spec.underlay_v4.to_string(),
                            "podCIDR": spec.pod_cidr.to_string(),
                            "containerdPid": self.nodes[n].containerd.id(),
                        })
                    }).collect::<Vec<_>>(),
                })
            })
            .collect();
        serde_json::json!({
            "prefix": topo.prefix,
            "dir": self.dir(),
            "managementNetns": topo.underlay_ns,
            "kubectl": self.bins.path("kubectl"),
            "bare": self.opts.bare,
            "clusters": clusters,
        })
    }

    fn stop_all(&mut self) {
        // Kubelets first (they would restart what is killed), then the pods (cgroups), then
        // every other process; the namespaces go with the Lab.
        let mut procs: Vec<&mut Child> = Vec::new();
        for rt in self.nodes.values_mut() {
            if let Some(k) = rt.kubelet.as_mut() {
                procs.push(k);
            }
        }
        for p in procs {
            let _ = p.kill();
            let _ = p.wait();
        }
        node::remove_cgroups(self.lab.prefix());
        for rt in self.nodes.values_mut() {
            for (_, c) in rt.children() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        for c in &mut self.clusters {
            for (_, ch) in &mut c.control_plane.children {
                let _ = ch.kill();
                let _ = ch.wait();
            }
        }
    }
}

impl Drop for RealKube {
    fn drop(&mut self) {
        if self.opts.keep {
            return;
        }
        self.stop_all();
    }
}

impl RealKube {
    /// Stops the kubelet of `node` (SIGKILL, like a crash) and starts a new one. If the Node was
    /// deleted, it is created again with its planned pod CIDR first (as in [`RealKube::up`]), so
    /// the node keeps the CIDR its CNI config hands out.
    pub fn restart_kubelet(&mut self, node: &str) -> Result<()> {
        if let Some(mut k) = self.nodes.get_mut(node).and_then(|rt| rt.kubelet.take()) {
            let _ = k.kill();
            let _ = k.wait();
        }
        let cluster = self
            .topology()
            .node(node)
            .with_context(|| format!("no node {node}"))?
            .cluster
            .clone();
        if !self
            .kubectl(&cluster)
            .output(&["get", "node", node])
            .status
            .success()
        {
            self.create_node(&cluster, node)?;
        }
        self.start_kubelet(&cluster, node)
    }

    /// Cluster name of `node`.
    pub fn cluster_of(&self, node: &str) -> String {
        self.topology().node(node).expect("node").cluster.clone()
    }
}

impl RealKube {
    /// An Ansible inventory (the shape of ansible/inventories/example/hosts.yml) for the
    /// clusters named in `clusters`, in that order: each cluster's admin kubeconfig, API
    /// address and CIDRs, and the lab's agent image. ansible-playbook must run in the
    /// management namespace (`ip netns exec <prefix>-u ...`) to reach the API servers.
    pub fn inventory(&self, clusters: &[&str]) -> String {
        let mut y = format!(
            "---\n# Written by sdn-lab for lab {p}: one host per cluster. Run the playbook in the\n\
             # lab's management namespace: ip netns exec {p}-u ansible-playbook -i <this file> \
             ansible/site.yml\nall:\n  vars:\n    sdn_tunnel_image: {}:{}\n  children:\n    \
             sdn_tunnel_clusters:\n      hosts:\n",
            deploy::AGENT_IMAGE_NAME,
            deploy::AGENT_IMAGE_TAG,
            p = self.lab.prefix(),
        );
        for name in clusters {
            let Some(c) = self.topology().cluster(name) else {
                continue;
            };
            y += &format!(
                "        {n}:\n          sdn_tunnel_kubeconfig: {kc}\n          \
                 sdn_tunnel_api_server: {api}\n          sdn_tunnel_pod_cidrs: [{pods}]\n          \
                 sdn_tunnel_service_cidrs: [{svcs}]\n          sdn_tunnel_endpoint: nodeInternalIP\n",
                n = c.name,
                kc = self.kubectl(&c.name).kubeconfig.display(),
                api = self.api_server(&c.name),
                pods = c.pod_cidr,
                svcs = c.service_cidr,
            );
        }
        y
    }
}
