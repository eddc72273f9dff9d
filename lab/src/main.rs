//! `sdn-lab`: the network-namespace lab from the command line: demo, up, down, list, bench.

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use sdn_lab::bench::{self, BenchOptions, Mode};
use sdn_lab::{exec, Lab, LabOptions};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

mod kube_cmd;

#[derive(Parser)]
#[command(
    name = "sdn-lab",
    version,
    about = "Multi-cluster sdn-tunnel lab in network namespaces (needs root)",
    long_about = "Builds clusters of nodes and pods as network namespaces joined by an underlay \
                  bridge, runs a real sdn-tunnel agent per node, and shows traffic between the \
                  clusters. See docs/lab.md."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Bring a lab up, show cross-cluster traffic, status and `wg show`, tear it down.
    Demo {
        #[command(flatten)]
        lab: LabArgs,
        /// Leave the lab running afterwards (remove it with `sdn-lab down <prefix>`).
        #[arg(long)]
        keep: bool,
    },
    /// Bring a lab up and leave it running; prints its prefix.
    Up {
        #[command(flatten)]
        lab: LabArgs,
        /// Do not wait for cross-cluster connectivity.
        #[arg(long)]
        no_wait: bool,
    },
    /// Tear down a lab left running (or after a crash): by prefix, or all of them.
    Down {
        /// The lab prefix printed by `up`/`demo --keep` (e.g. sl3f2a).
        prefix: Option<String>,
        /// Every lab on this machine (namespaces named sl<4 hex>-*, /tmp/sdn-lab-sl*).
        #[arg(long, conflicts_with = "prefix")]
        all: bool,
    },
    /// List the labs present on this machine.
    List,
    /// Real Kubernetes clusters on the lab (built from the official Go modules): up, down.
    #[command(subcommand)]
    Kube(kube_cmd::KubeCmd),
    /// Benchmark: plain routing vs userspace WireGuard references (Debian's wireguard-go, a
    /// current wireguard-go, boringtun-cli with 4 threads and with 1) vs sdn-tunnel (iperf3, ping,
    /// CPU). References not given are built once by scripts/bench-refs.sh (run here if missing).
    Bench {
        /// The sdn-tunnel binary (build with --release for meaningful numbers).
        #[arg(long, env = "SDN_TUNNEL_BIN")]
        bin: Option<PathBuf>,
        /// Interleaved rounds (each runs every mode once).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Seconds per iperf3 run.
        #[arg(long, default_value_t = 5)]
        duration: u32,
        /// Comma-separated subset of: plain, wireguard-go-debian (alias wireguard-go),
        /// wireguard-go-current, boringtun-cli, boringtun-cli-1thread, sdn-tunnel.
        #[arg(
            long,
            default_value = "plain,wireguard-go-debian,wireguard-go-current,boringtun-cli,boringtun-cli-1thread,sdn-tunnel"
        )]
        modes: String,
        /// The current wireguard-go binary (default: scripts/bench-refs.sh's, built if missing).
        #[arg(long, env = "SDN_BENCH_WIREGUARD_GO_CURRENT")]
        wireguard_go_current: Option<PathBuf>,
        /// The boringtun-cli binary (default: scripts/bench-refs.sh's, built if missing).
        #[arg(long, env = "SDN_BENCH_BORINGTUN_CLI")]
        boringtun_cli: Option<PathBuf>,
    },
}

#[derive(Args, Clone)]
struct LabArgs {
    /// The sdn-tunnel binary.
    #[arg(
        long,
        env = "SDN_TUNNEL_BIN",
        default_value = "target/release/sdn-tunnel"
    )]
    bin: PathBuf,
    /// Number of sdn-tunnel clusters (1-3: east, west, south).
    #[arg(long, default_value_t = 2)]
    clusters: usize,
    /// Nodes per cluster.
    #[arg(long, default_value_t = 2)]
    nodes: usize,
    /// Pods per node.
    #[arg(long, default_value_t = 1)]
    pods: usize,
    /// Peers reach each other over the IPv6 underlay.
    #[arg(long)]
    ipv6: bool,
    /// Dual-stack pods: every pod network also gets its IPv6 twin (10.132.0.10 -> fd10:0:132::10).
    #[arg(long)]
    pods_ipv6: bool,
    /// Add cluster "north" whose node n1 runs Debian's wireguard-go (interop).
    #[arg(long)]
    foreign: bool,
}

impl LabArgs {
    fn options(&self, prefix: String, keep: bool) -> Result<LabOptions> {
        let bin = std::fs::canonicalize(&self.bin).with_context(|| {
            format!(
                "sdn-tunnel binary {} not found (cargo build --release, or --bin PATH)",
                self.bin.display()
            )
        })?;
        Ok(LabOptions {
            clusters: self.clusters,
            nodes_per_cluster: self.nodes,
            pods_per_node: self.pods.max(1),
            ipv6_endpoints: self.ipv6,
            pods_ipv6: self.pods_ipv6,
            keep,
            bin: Some(bin),
            foreign_node: self.foreign,
            start_agents: true,
            prefix: Some(prefix),
            verbose: true,
            ..LabOptions::default()
        })
    }
}

/// The prefix of the lab this process is building, for the signal handler.
static CURRENT: Mutex<Option<String>> = Mutex::new(None);

/// Ctrl-C / SIGTERM: tear down the lab being built or shown, then exit. Signals are blocked
/// in every thread and taken by one waiting thread, so the teardown does not race the main
/// thread's work in a signal handler. (Children get an empty mask: see `netns::command`.)
fn install_signal_teardown() {
    // SAFETY: signal-mask manipulation with valid, initialized sets.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        std::thread::spawn(move || {
            let mut sig: libc::c_int = 0;
            libc::sigwait(&set, &mut sig);
            let prefix = CURRENT.lock().map(|p| p.clone()).unwrap_or(None);
            if let Some(p) = prefix {
                eprintln!("\nsdn-lab: signal {sig}, tearing down lab {p} ...");
                if let Err(e) = sdn_lab::down(&p) {
                    eprintln!("sdn-lab: teardown of {p}: {e:#}");
                }
            }
            std::process::exit(128 + sig);
        });
    }
}

fn heading(title: &str) {
    println!(
        "\n=== {title} {}",
        "=".repeat(70usize.saturating_sub(title.len()))
    );
}

fn show(cmd: &str, out: &std::process::Output) {
    println!("$ {cmd}");
    print!("{}", String::from_utf8_lossy(&out.stdout));
    let err = String::from_utf8_lossy(&out.stderr);
    if !err.trim().is_empty() {
        print!("{err}");
    }
    if !out.status.success() {
        println!("({})", out.status);
    }
}

fn demo(args: &LabArgs, keep: bool) -> Result<()> {
    let prefix = sdn_lab::new_prefix()?;
    *CURRENT.lock().unwrap() = Some(prefix.clone());
    heading("Building the lab");
    let mut opts = args.options(prefix.clone(), keep)?;
    opts.services = true;
    let lab = Lab::up(opts)?;
    print!("{}", lab.describe());

    heading("Waiting for the tunnels (handshakes)");
    let t0 = Instant::now();
    if let Err(e) = lab.wait_connected(Duration::from_secs(30)) {
        for n in lab.agent_nodes() {
            eprintln!("--- agent log {n} (last lines) ---");
            let log = lab.agent_log(&n);
            let lines: Vec<&str> = log.lines().collect();
            eprintln!("{}", lines[lines.len().saturating_sub(15)..].join("\n"));
        }
        return Err(e);
    }
    println!(
        "every pod reaches every pod of the other clusters ({:.1} s)",
        t0.elapsed().as_secs_f64()
    );

    let topo = lab.topology().clone();
    let sdn: Vec<_> = topo.nodes.iter().filter(|n| !n.foreign).collect();
    let (first, last) = (
        sdn[0],
        *sdn.iter()
            .rev()
            .find(|n| n.cluster != sdn[0].cluster)
            .context("one cluster only")?,
    );

    heading("Pod -> pod ping across clusters");
    for (from, to) in [(first, last), (last, first)] {
        let dst = to.pods[0].to_string();
        let out = exec(
            &from.pod_ns[0],
            &["ping", "-n", "-c", "3", "-i", "0.2", dst.as_str()],
        );
        show(
            &format!(
                "ip netns exec {} ping -c 3 {dst}    # pod on {} ({}) -> pod on {} ({})",
                from.pod_ns[0], from.name, from.cluster, to.name, to.cluster
            ),
            &out,
        );
    }
    heading("Pod -> remote ClusterIP (nftables proxy on the client's node, then the tunnel)");
    for n in &sdn {
        sdn_lab::serve_named_echo(
            &n.pod_ns[0],
            &format!("pod {} on {}", n.pods[0], n.name),
            8080,
        )?;
    }
    let vip = std::net::SocketAddr::new(lab.service_ip(&last.cluster).into(), 80);
    println!(
        "$ connect from {} to {vip} (service default/web of cluster {}) 4 times:",
        first.pod_ns[0], last.cluster
    );
    for i in 1..=4 {
        match sdn_lab::hello(&first.pod_ns[0], vip) {
            Ok((who, _)) => println!("  connection {i}: answered by {who}"),
            Err(e) => println!("  connection {i}: FAILED: {e}"),
        }
    }
    if let Some(n1) = topo.nodes.iter().find(|n| n.foreign) {
        heading("Interop: pod behind wireguard-go node n1 <-> pod behind our agent");
        let dst = first.pods[0].to_string();
        let out = exec(
            &n1.pod_ns[0],
            &["ping", "-n", "-c", "3", "-i", "0.2", dst.as_str()],
        );
        show(
            &format!("ip netns exec {} ping -c 3 {dst}", n1.pod_ns[0]),
            &out,
        );
    }

    heading("Node -> remote pod (host-originated traffic)");
    let dst = last.pods[0].to_string();
    let out = exec(
        &first.ns,
        &["ping", "-n", "-c", "2", "-i", "0.2", dst.as_str()],
    );
    show(
        &format!(
            "ip netns exec {} ping -c 2 {dst}    # node {}",
            first.ns, first.name
        ),
        &out,
    );

    heading("TCP transfer across clusters (64 MiB, checksummed)");
    let size = 64u64 << 20;
    for (from, to) in [(first, last), (last, first)] {
        let t = sdn_lab::tcp_transfer(
            &from.pod_ns[0],
            &to.pod_ns[0],
            to.pods[0].into(),
            5001,
            size,
        )?;
        println!(
            "pod {} ({}) -> pod {} ({}): {} MiB in {:.2} s = {:.0} Mbit/s, checksum {:016x} matches",
            from.pods[0],
            from.cluster,
            to.pods[0],
            to.cluster,
            size >> 20,
            t.seconds,
            t.mbit_per_s(),
            t.checksum
        );
    }
    let echoed = sdn_lab::udp_echo(
        &first.pod_ns[0],
        &last.pod_ns[0],
        last.pods[0].into(),
        5002,
        50,
    )?;
    println!(
        "UDP: {echoed}/50 datagrams echoed {} <-> {}",
        first.pods[0], last.pods[0]
    );

    heading(&format!("sdn-tunnel status (node {})", first.name));
    let out = lab.status_output(&first.name, false);
    show(
        &format!(
            "ip netns exec {} sdn-tunnel status --config {}",
            first.ns,
            lab.agent_config_path(&first.name).display()
        ),
        &out,
    );

    heading(&format!("sdn-tunnel diagnose (node {})", first.name));
    let bin = lab.bin()?.to_path_buf();
    let cfg = lab.agent_config_path(&first.name);
    let out = exec(
        &first.ns,
        &[
            bin.to_string_lossy().as_ref(),
            "diagnose",
            "--config",
            cfg.to_string_lossy().as_ref(),
        ],
    );
    show(
        &format!(
            "ip netns exec {} sdn-tunnel diagnose --config {}",
            first.ns,
            cfg.display()
        ),
        &out,
    );

    heading(&format!(
        "Prometheus metrics (node {}, an excerpt)",
        first.name
    ));
    let (code, metrics) = lab.agent_http(&first.name, "/metrics")?;
    println!(
        "$ curl http://127.0.0.1:9477/metrics    # HTTP {code}, in {}",
        first.ns
    );
    for l in metrics.lines().filter(|l| {
        [
            "sdn_tunnel_peer_transmit_bytes_total",
            "sdn_tunnel_peers_up",
            "sdn_tunnel_remote_synced",
        ]
        .iter()
        .any(|p| l.starts_with(p))
    }) {
        println!("{l}");
    }

    heading(&format!(
        "wg show {} (the standard wg tool, node {})",
        first.device, first.name
    ));
    show(
        &format!("wg show {}", first.device),
        &lab.wg_show(&first.name),
    );

    if keep {
        heading("The lab stays up");
        println!(
            "Poke at it:\n  \
             ip netns list | grep {p}\n  \
             ip netns exec {pod} ping {dst}\n  \
             ip netns exec {ns} {bin} status --config {cfg}\n  \
             wg show {dev}\n  \
             less {dir}/{node}.log        # agent logs, configs and keys are in {dir}\n\
             Tear it down:\n  \
             sdn-lab down {p}             # or: target/release/sdn-lab down {p}",
            p = lab.prefix(),
            pod = first.pod_ns[0],
            ns = first.ns,
            bin = lab
                .options()
                .bin
                .as_ref()
                .map(|b| b.display().to_string())
                .unwrap_or_default(),
            cfg = lab.agent_config_path(&first.name).display(),
            dev = first.device,
            dir = lab.dir().display(),
            node = first.name,
        );
    } else {
        heading("Tearing down");
        lab.down();
        println!("done: no namespace of lab {prefix} is left");
    }
    *CURRENT.lock().unwrap() = None;
    Ok(())
}

fn up(args: &LabArgs, no_wait: bool) -> Result<()> {
    let prefix = sdn_lab::new_prefix()?;
    *CURRENT.lock().unwrap() = Some(prefix.clone());
    let lab = Lab::up(args.options(prefix.clone(), true)?)?;
    print!("{}", lab.describe());
    if !no_wait {
        if let Err(e) = lab.wait_connected(Duration::from_secs(30)) {
            eprintln!("warning: {e:#} (see the logs in {})", lab.dir().display());
        } else {
            println!("all cross-cluster pod pairs connected");
        }
    }
    println!("lab {prefix} is up; tear it down with: sdn-lab down {prefix}");
    *CURRENT.lock().unwrap() = None;
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if !sdn_lab::is_root() {
        bail!("sdn-lab needs root (it creates network namespaces)");
    }
    install_signal_teardown();
    match cli.cmd {
        Cmd::Demo { lab, keep } => demo(&lab, keep),
        Cmd::Up { lab, no_wait } => up(&lab, no_wait),
        Cmd::Down { prefix, all } => {
            let removed = match (prefix, all) {
                (_, true) => sdn_lab::down_all()?,
                (Some(p), false) => {
                    let ns = sdn_lab::down(&p)?;
                    println!("removed {} namespaces", ns.len());
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
        Cmd::Kube(k) => kube_cmd::run(k, |p| *CURRENT.lock().unwrap() = p),
        Cmd::List => {
            for p in sdn_lab::list_labs() {
                println!("{p}");
            }
            Ok(())
        }
        Cmd::Bench {
            bin,
            rounds,
            duration,
            modes,
            wireguard_go_current,
            boringtun_cli,
        } => {
            let modes = modes
                .split(',')
                .map(|m| Mode::parse(m.trim()))
                .collect::<Result<Vec<_>>>()?;
            let canonical = |b: Option<PathBuf>| -> Result<Option<PathBuf>> {
                b.map(|b| {
                    std::fs::canonicalize(&b).with_context(|| format!("{} not found", b.display()))
                })
                .transpose()
            };
            let bin = canonical(bin)?;
            let refs = bench::RefBinaries {
                wireguard_go_current: canonical(wireguard_go_current)?,
                boringtun_cli: canonical(boringtun_cli)?,
            };
            let prefix = sdn_lab::new_prefix()?;
            *CURRENT.lock().unwrap() = Some(prefix.clone());
            let report = bench::run(&BenchOptions {
                rounds,
                duration,
                modes,
                bin,
                refs,
                verbose: true,
                prefix: Some(prefix),
            })?;
            println!("\n{report}");
            Ok(())
        }
    }
}
