//! `sdn-lab kube ...`: the real-Kubernetes lab from the command line.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use sdn_lab::realkube::{KubeLabOptions, RealKube};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Subcommand)]
pub enum KubeCmd {
    /// Start real clusters (etcd, API server, controller-manager, scheduler; containerd,
    /// kubelet and kube-proxy per node) and, unless --bare, install sdn-tunnel with
    /// `kubectl apply -k`. Without --keep it stays in the foreground until Ctrl-C.
    Up(UpArgs),
    /// Tear down a real-Kubernetes lab left running (same as `sdn-lab down`).
    Down {
        /// The lab prefix printed by `kube up` (e.g. sl3f2a).
        prefix: Option<String>,
        /// Every lab on this machine.
        #[arg(long, conflicts_with = "prefix")]
        all: bool,
    },
}

#[derive(Args)]
pub struct UpArgs {
    /// Clusters (1-3: east, west, south).
    #[arg(long, default_value_t = 2)]
    clusters: usize,
    /// Nodes per cluster (the first also runs the control plane).
    #[arg(long, default_value_t = 2)]
    nodes: usize,
    /// Do not install sdn-tunnel (for the Ansible playbook to do it).
    #[arg(long)]
    bare: bool,
    /// Leave the lab running and exit (remove it with `sdn-lab kube down <prefix>`).
    #[arg(long)]
    keep: bool,
    /// Print the lab as JSON: per cluster the admin kubeconfig, API address, CIDRs, and per
    /// node its network namespace.
    #[arg(long)]
    json: bool,
    /// The sdn-tunnel release binary that goes into the agent image.
    #[arg(
        long,
        env = "SDN_TUNNEL_BIN",
        default_value = "target/release/sdn-tunnel"
    )]
    bin: PathBuf,
    /// proxy.backend of the agents (this kernel has no IPVS).
    #[arg(long, default_value = "nftables")]
    proxy: String,
}

pub fn run(cmd: KubeCmd, set_current: impl Fn(Option<String>)) -> Result<()> {
    match cmd {
        KubeCmd::Up(a) => up(a, set_current),
        KubeCmd::Down { prefix, all } => {
            let removed = match (prefix, all) {
                (_, true) => sdn_lab::down_all()?,
                (Some(p), false) => {
                    sdn_lab::down(&p)?;
                    vec![p]
                }
                (None, false) => bail!("give a lab prefix or --all (see `sdn-lab list`)"),
            };
            println!(
                "removed labs: {}",
                if removed.is_empty() {
                    "none".into()
                } else {
                    removed.join(" ")
                }
            );
            Ok(())
        }
    }
}

fn up(a: UpArgs, set_current: impl Fn(Option<String>)) -> Result<()> {
    let bin = std::fs::canonicalize(&a.bin).with_context(|| {
        format!(
            "sdn-tunnel binary {} not found (cargo build --release, or --bin)",
            a.bin.display()
        )
    })?;
    let prefix = sdn_lab::new_prefix()?;
    set_current(Some(prefix.clone()));
    let rk = RealKube::up(KubeLabOptions {
        clusters: a.clusters,
        nodes_per_cluster: a.nodes,
        bare: a.bare,
        keep: a.keep,
        bin,
        prefix: Some(prefix.clone()),
        verbose: !a.json,
        proxy_backend: a.proxy,
        timeout: Duration::from_secs(300),
    })?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rk.describe_json())?);
    } else {
        println!("{}", describe(&rk));
    }
    if a.keep {
        set_current(None);
        eprintln!("lab {prefix} stays up; remove it with: sdn-lab kube down {prefix}");
        return Ok(());
    }
    eprintln!("lab {prefix} is up; Ctrl-C tears it down");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// A human-readable summary: clusters, nodes, and how to use kubectl on them.
pub fn describe(rk: &RealKube) -> String {
    let topo = rk.topology();
    let mut s = format!(
        "real-Kubernetes lab {} (files in {})\n",
        topo.prefix,
        rk.dir().display()
    );
    for c in &topo.clusters {
        s += &format!(
            "cluster {:<6} API {}  pods {}  services {}\n  kubeconfig {}\n",
            c.name,
            rk.api_server(&c.name),
            c.pod_cidr,
            c.service_cidr,
            rk.kubectl(&c.name).kubeconfig.display()
        );
        for n in &c.nodes {
            let spec = topo.node(n).expect("node");
            s += &format!(
                "  node {:<3} netns {:<10} InternalIP {:<14} pods {}\n",
                n, spec.ns, spec.underlay_v4, spec.pod_cidr
            );
        }
    }
    let first = &topo.clusters[0];
    s += &format!(
        "kubectl runs in the management namespace {u} (192.168.77.254 on the underlay):\n  \
         ip netns exec {u} {kubectl} --kubeconfig {kc} get pods -A -o wide\n",
        u = topo.underlay_ns,
        kubectl = rk.bins.path("kubectl"),
        kc = rk.kubectl(&first.name).kubeconfig.display(),
    );
    s
}
