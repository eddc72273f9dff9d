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
    /// The demo on real clusters: nodes and pods, cross-cluster pod traffic, a remote
    /// ClusterIP and its DNS name, `sdn-tunnel status` through `kubectl exec`.
    Demo {
        /// Leave the lab running afterwards (remove it with `sdn-lab kube down <prefix>`).
        #[arg(long)]
        keep: bool,
        /// The sdn-tunnel release binary that goes into the agent image.
        #[arg(
            long,
            env = "SDN_TUNNEL_BIN",
            default_value = "target/release/sdn-tunnel"
        )]
        bin: PathBuf,
    },
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
    /// Write an Ansible inventory of the clusters to FILE (for ansible/site.yml; use with
    /// --bare).
    #[arg(long, value_name = "FILE")]
    inventory: Option<PathBuf>,
    /// proxy.backend of the agents (this kernel has no IPVS).
    #[arg(long, default_value = "nftables")]
    proxy: String,
}

pub fn run(cmd: KubeCmd, set_current: impl Fn(Option<String>)) -> Result<()> {
    match cmd {
        KubeCmd::Up(a) => up(a, set_current),
        KubeCmd::Demo { keep, bin } => demo(keep, &bin, set_current),
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
    if let Some(path) = &a.inventory {
        let names: Vec<String> = rk
            .topology()
            .clusters
            .iter()
            .map(|c| c.name.clone())
            .collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        std::fs::write(path, rk.inventory(&names))
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!(
            "inventory: {} (run: ip netns exec {}-u ansible-playbook -i {} ansible/site.yml)",
            path.display(),
            rk.lab.prefix(),
            path.display()
        );
    }
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

fn heading(title: &str) {
    println!(
        "\n=== {title} {}",
        "=".repeat(70usize.saturating_sub(title.len()))
    );
}

/// Runs kubectl in `cluster` and prints the command line and its output.
fn show(rk: &RealKube, cluster: &str, args: &[&str]) {
    println!("$ kubectl --context {cluster} {}", args.join(" "));
    let out = rk.kubectl(cluster).output(args);
    print!("{}", String::from_utf8_lossy(&out.stdout));
    let err = String::from_utf8_lossy(&out.stderr);
    if !err.trim().is_empty() {
        print!("{err}");
    }
}

fn demo(keep: bool, bin: &std::path::Path, set_current: impl Fn(Option<String>)) -> Result<()> {
    use sdn_lab::realkube::workload::{pod_yaml, web_yaml};
    let bin = std::fs::canonicalize(bin).with_context(|| {
        format!(
            "sdn-tunnel binary {} not found (cargo build --release)",
            bin.display()
        )
    })?;
    let prefix = sdn_lab::new_prefix()?;
    set_current(Some(prefix.clone()));
    heading("Starting two real Kubernetes clusters and installing sdn-tunnel (kubectl apply -k)");
    let rk = RealKube::up(KubeLabOptions {
        bin,
        prefix: Some(prefix.clone()),
        keep,
        verbose: true,
        ..KubeLabOptions::default()
    })?;
    print!("{}", describe(&rk));
    let clusters: Vec<String> = rk
        .topology()
        .clusters
        .iter()
        .map(|c| c.name.clone())
        .collect();
    let (east, west) = (&clusters[0], &clusters[1]);
    let (a1, b1) = (
        rk.topology().cluster(east).expect("east").nodes[0].clone(),
        rk.topology().cluster(west).expect("west").nodes[0].clone(),
    );

    heading("Nodes and pods");
    for c in &clusters {
        show(&rk, c, &["get", "nodes", "-o", "wide"]);
        show(&rk, c, &["get", "pods", "-A", "-o", "wide"]);
    }

    heading(&format!(
        "Workloads: a client pod in {east}, a web Deployment (2 pods) + Service in {west}"
    ));
    rk.apply(east, &pod_yaml("client", &a1, &["sleep", "1000000"]))?;
    rk.apply(west, &pod_yaml("target", &b1, &["sleep", "1000000"]))?;
    rk.apply(west, &web_yaml("web", 2))?;
    rk.wait_pod(east, "client", Duration::from_secs(120))?;
    rk.wait_pod(west, "target", Duration::from_secs(120))?;
    rk.kubectl(west).run(&[
        "-n",
        "default",
        "rollout",
        "status",
        "deployment/web",
        "--timeout=120s",
    ])?;
    show(
        &rk,
        west,
        &["-n", "default", "get", "pods,svc", "-o", "wide"],
    );

    heading(&format!(
        "Pod -> pod across clusters: client ({east}) pings target ({west})"
    ));
    let target = rk.pod_ip(west, "target")?;
    println!("$ kubectl --context {east} exec client -- ping -c 3 {target}");
    let out = rk.exec_pod(east, "client", &["ping", "-c", "3", &target]);
    print!("{}", String::from_utf8_lossy(&out.stdout));

    heading(&format!(
        "Pod -> remote ClusterIP: client connects to {west}'s web Service 4 times"
    ));
    let ip = rk.kubectl(west).run(&[
        "-n",
        "default",
        "get",
        "svc",
        "web",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ])?;
    for i in 1..=4 {
        let out = rk.exec_pod(
            east,
            "client",
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
        println!(
            "  GET http://{ip}/ #{i}: answered by pod {}",
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }

    heading(&format!(
        "DNS: web.default.svc.cluster.{west} through the sdn-tunnel-dns Service"
    ));
    let dns = rk.kubectl(east).run(&[
        "-n",
        "sdn-tunnel",
        "get",
        "svc",
        "sdn-tunnel-dns",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ])?;
    println!(
        "$ kubectl --context {east} exec client -- nslookup web.default.svc.cluster.{west} {dns}"
    );
    let out = rk.exec_pod(
        east,
        "client",
        &["nslookup", &format!("web.default.svc.cluster.{west}"), &dns],
    );
    print!("{}", String::from_utf8_lossy(&out.stdout));

    heading(&format!(
        "sdn-tunnel status on node {a1} (kubectl exec into the agent pod)"
    ));
    let pod = rk.kubectl(east).run(&[
        "-n",
        "sdn-tunnel",
        "get",
        "pods",
        "-l",
        "app.kubernetes.io/component=agent",
        "--field-selector",
        &format!("spec.nodeName={a1}"),
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ])?;
    show(
        &rk,
        east,
        &[
            "-n",
            "sdn-tunnel",
            "exec",
            &pod,
            "-c",
            "agent",
            "--",
            "sdn-tunnel",
            "status",
        ],
    );

    if keep {
        heading("The lab stays up");
        println!("remove it with: sdn-lab kube down {prefix}");
    } else {
        heading("Tearing down");
        drop(rk);
        sdn_lab::down(&prefix)?;
        println!("done: nothing of lab {prefix} is left");
    }
    set_current(None);
    Ok(())
}
