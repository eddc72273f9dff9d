//! The `sdn-tunnel` command line: the agent and its operator tools.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use sdn_tunnel::config::{self, Config, ConfigUse, TunnelConfig};
use sdn_tunnel::status::{LinkState, StatusReport};
use sdn_tunnel::{cleanup, control, keys, link, routes::Routes, status};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const DEFAULT_CONFIG: &str = "/etc/sdn-tunnel/config.yaml";

#[derive(Parser)]
#[command(
    name = "sdn-tunnel",
    version,
    about = "Connects the pod and service networks of Kubernetes clusters over a userspace WireGuard mesh",
    long_about = "Connects the pod and service networks of Kubernetes clusters over a userspace \
WireGuard mesh.\n\nOne agent runs per node (a privileged hostNetwork pod). It creates a TUN device driven \
by boringtun, peers with every node of every remote cluster, routes the remote clusters' pod and \
service CIDRs into the tunnel and clamps TCP MSS. Configuration: docs/configuration.md."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print a new private key (base64, same format as `wg genkey`).
    Keygen,
    /// Read a private key on stdin, print its public key (same as `wg pubkey`).
    Pubkey,
    /// Run the agent in the foreground until SIGTERM/SIGINT. On stop the device, routes and
    /// nftables guards stay (fail closed: remote traffic is dropped, never sent in plaintext,
    /// until the agent runs again); they are removed only when its DaemonSet is being deleted,
    /// or by `sdn-tunnel cleanup`. Serves Prometheus metrics and the kubelet's probes on
    /// http.listen (default [::]:9477, dual-stack: /metrics, /healthz, /readyz).
    Agent {
        /// Config file (YAML).
        #[arg(long, short, env = "SDN_TUNNEL_CONFIG", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Validate the config (and the private key file) and exit: 0 if valid.
        #[arg(long)]
        check_config: bool,
        /// Log format on stderr; levels via RUST_LOG (default info).
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
    },
    /// Show the tunnel device, its peers (like `wg show`), remotes, the service proxy and the
    /// IPVS table (like `ipvsadm -Ln`, annotated with remote/namespace/name), and our routes.
    Status {
        /// Config file to find the device, run directory and route protocol. Without it,
        /// --device and the defaults are used.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Tunnel device name (default sdn0, or the config's).
        #[arg(long)]
        device: Option<String>,
        /// Machine-readable output (every section).
        #[arg(long)]
        json: bool,
        /// Print only the IPVS table, exactly as `ipvsadm -Ln` would (no annotations).
        #[arg(long)]
        ipvs: bool,
        /// IPVS counters, exactly as `ipvsadm -Ln --stats`.
        #[arg(long)]
        stats: bool,
    },
    /// Connect to one remote cluster's API as the agent would (its kubeconfig from the config),
    /// wait for the first full snapshot, and report nodes, services and what would be
    /// rejected. Exit 0 if it synced, 1 if not. Needs no root and touches nothing local.
    CheckRemote {
        #[arg(long, short, env = "SDN_TUNNEL_CONFIG", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// The remote's name (remotes[].name).
        #[arg(long)]
        remote: String,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
        #[arg(long)]
        json: bool,
    },
    /// Check this node for what the tunnel needs and print one line per check (OK, WARN, FAIL,
    /// SKIP) with a fix hint: the agent answers; ip_forward; rp_filter on the tunnel device;
    /// tunnel MTU + WireGuard overhead vs the underlay MTU; MSS clamping and our nftables
    /// tables; IPVS (with proxy.backend ipvs); our routes present and not shadowed; local
    /// addresses or routes overlapping the remotes' CIDRs; every remote synced; peers with a
    /// recent handshake; the UDP port bound; the clock. Read-only.
    ///
    /// Exit code: 0 if nothing failed (warnings and skips are fine), 1 if any check failed, 2 if
    /// diagnose could not run (e.g. the config is unreadable). Run it where the agent runs (the
    /// node, or the agent pod): it reads that network namespace. See docs/troubleshooting.md.
    Diagnose {
        /// Config file (YAML): device, MTU, port, tables and the remotes' CIDRs to check.
        #[arg(long, short, env = "SDN_TUNNEL_CONFIG", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Machine-readable output: {"ok": bool, "checks": [{name, status, detail, hint}]}.
        #[arg(long)]
        json: bool,
        /// A peer whose latest handshake is older than this many seconds fails the check.
        #[arg(long, value_name = "SECS", default_value_t = sdn_tunnel::diagnose::DEFAULT_STALE_AFTER_SECS)]
        stale_after: u64,
    },
    /// Pod-to-pod check across clusters (what the Ansible playbook's verify role runs in a
    /// plain pod of the agent image): `probe serve` answers each TCP connection with one line
    /// naming itself; `probe connect ADDR...` dials each and prints JSON results. Exit 1 if a
    /// target did not answer.
    Probe {
        #[command(subcommand)]
        cmd: ProbeCommand,
    },
    /// Remove everything of ours: routes with our protocol, the device, our nftables tables
    /// (MSS clamping, guards, the nftables proxy), the service proxy's IPVS services and VIP
    /// device, and our sockets. Idempotent. Stop the agent first: this ends the fail-closed
    /// guards, so remote traffic may then follow other routes.
    Cleanup {
        #[arg(long, short, env = "SDN_TUNNEL_CONFIG", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum ProbeCommand {
    /// Answer every TCP connection with `sdn-tunnel-probe <name>` (forever).
    Serve {
        #[arg(long, default_value = "[::]:9478")]
        listen: std::net::SocketAddr,
        /// The name to answer with (default: $POD_NAME, else the hostname).
        #[arg(long, env = "POD_NAME")]
        name: Option<String>,
    },
    /// Dial each address once; print [{target, ok, answer, millis, error}] as JSON.
    Connect {
        #[arg(required = true)]
        targets: Vec<std::net::SocketAddr>,
        #[arg(long, default_value_t = 3000)]
        timeout_ms: u64,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// A parent may have left SIGTERM/SIGINT blocked (the mask is inherited across exec); the
/// agent's clean shutdown depends on receiving them, so unblock them before any thread starts.
fn unblock_shutdown_signals() {
    // SAFETY: plain sigset manipulation on a local set, then pthread_sigmask on this thread
    // before any other thread exists (threads inherit the mask).
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, sig);
        }
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// One function per command; each returns the process's exit code.
fn run(cli: Cli) -> Result<ExitCode> {
    match cli.cmd {
        Command::Keygen => {
            println!("{}", keys::encode_key(&keys::generate_private()));
            Ok(ExitCode::SUCCESS)
        }
        Command::Pubkey => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s)?;
            let k = keys::parse_key(&s).context("reading the private key from stdin")?;
            println!("{}", keys::encode_key(&keys::public_from_private(&k)));
            Ok(ExitCode::SUCCESS)
        }
        Command::Agent {
            config,
            check_config,
            log_format,
        } => agent(&config, check_config, log_format),
        Command::Status {
            config,
            device,
            json,
            ipvs,
            stats,
        } => status_cmd(config.as_deref(), device, json, ipvs, stats),
        Command::CheckRemote {
            config,
            remote,
            timeout,
            json,
        } => check_remote(&config, &remote, timeout, json),
        Command::Diagnose {
            config,
            json,
            stale_after,
        } => Ok(diagnose(&config, json, stale_after)),
        Command::Probe { cmd } => probe(cmd),
        Command::Cleanup { config } => cleanup_cmd(&config),
    }
}

fn agent(config: &Path, check_config: bool, log_format: LogFormat) -> Result<ExitCode> {
    let cfg = read_config(config, ConfigUse::Agent)?;
    if check_config {
        println!("{}: ok", config.display());
        return Ok(ExitCode::SUCCESS);
    }
    init_logs(log_format);
    unblock_shutdown_signals();
    sdn_tunnel::memory::tune_for_agent();
    runtime()?.block_on(sdn_tunnel::agent::run(cfg))?;
    Ok(ExitCode::SUCCESS)
}

/// Exit 3 when no agent answered (the kernel's side is still shown).
fn status_cmd(
    config: Option<&Path>,
    device: Option<String>,
    json: bool,
    ipvs: bool,
    stats: bool,
) -> Result<ExitCode> {
    let mut t = match config {
        Some(p) => read_config(p, ConfigUse::Lenient)?.tunnel,
        None => TunnelConfig::default(),
    };
    if let Some(d) = device {
        t.device = d;
    }
    let mut report = runtime()?.block_on(gather_status(&t));
    let want_ipvs = ipvs
        || stats
        || report
            .agent
            .as_ref()
            .and_then(|a| a.proxy.as_ref())
            .is_some_and(|p| p.backend == "ipvs");
    if want_ipvs {
        report.ipvs = Some(status::gather_ipvs(report.agent.as_ref()));
    }
    if ipvs || (stats && !json) {
        let section = report.ipvs.as_ref().expect("gathered above");
        if let Some(e) = &section.error {
            anyhow::bail!("IPVS: {e}");
        }
        print!(
            "{}",
            if stats {
                &section.stats_text
            } else {
                &section.text
            }
        );
        return Ok(ExitCode::SUCCESS);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", status::render_text(&report, control::now_unix()));
    }
    Ok(if report.agent.is_none() {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}

/// Exit 1 when the remote did not sync.
fn check_remote(config: &Path, remote: &str, timeout: u64, json: bool) -> Result<ExitCode> {
    let cfg = read_config(
        config,
        ConfigUse::Tool {
            node_name: "check-remote",
        },
    )?;
    let r = runtime()?.block_on(sdn_tunnel::check_remote::check(
        &cfg,
        remote,
        std::time::Duration::from_secs(timeout),
    ))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print!("{}", sdn_tunnel::check_remote::render_text(&r));
    }
    Ok(if r.synced {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn probe(cmd: ProbeCommand) -> Result<ExitCode> {
    match cmd {
        ProbeCommand::Serve { listen, name } => {
            let name = name.unwrap_or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|h| h.trim().to_string())
                    .unwrap_or_else(|_| "unknown".into())
            });
            sdn_tunnel::probe::serve(listen, &name).context("probe serve")?;
            Ok(ExitCode::SUCCESS)
        }
        ProbeCommand::Connect {
            targets,
            timeout_ms,
        } => {
            let results =
                sdn_tunnel::probe::connect(&targets, std::time::Duration::from_millis(timeout_ms));
            println!("{}", serde_json::to_string(&results)?);
            Ok(if results.iter().all(|r| r.ok) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

fn cleanup_cmd(config: &Path) -> Result<ExitCode> {
    let cfg = read_config(config, ConfigUse::Lenient)?;
    // Not under a running agent: it would lose its device and routes mid-flight.
    let _lock = sdn_tunnel::instance_lock::InstanceLock::acquire(&cfg.tunnel.device)
        .context("cleanup refuses to run while an agent runs the device")?;
    let r = runtime()?.block_on(cleanup::cleanup(&cfg.tunnel, Some(&cfg)))?;
    if !r.proxy.is_empty() {
        println!("removed (proxy): {}", r.proxy);
    }
    println!(
        "removed: {} route(s), device {}: {}, nft table {}: {}, {} socket(s)",
        r.routes_removed,
        cfg.tunnel.device,
        yes_no(r.device_removed),
        cfg.tunnel.nft_table(),
        yes_no(r.nft_table_removed),
        r.sockets_removed
    );
    Ok(ExitCode::SUCCESS)
}

/// Exit 0: nothing failed; 1: a check failed; 2: diagnose could not run.
fn diagnose(config: &Path, json: bool, stale_after: u64) -> ExitCode {
    use sdn_tunnel::diagnose;
    let checks = match diagnose::load_config(config)
        .map_err(anyhow::Error::from)
        .and_then(|cfg| Ok(runtime()?.block_on(diagnose::run(&cfg, stale_after))))
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: diagnose could not run: {e}");
            return ExitCode::from(2);
        }
    };
    if json {
        println!("{}", diagnose::render::json(&checks));
    } else {
        print!("{}", diagnose::render::text(&checks));
    }
    if diagnose::any_failed(&checks) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "not present"
    }
}

/// The tunnel section only: status and cleanup must work even when the rest of the config (or
/// the key file) is broken, so no full validation here.
/// Every command reads its config through `config::read`; errors name the file.
fn read_config(path: &Path, usage: ConfigUse) -> Result<Config> {
    config::read(path, usage).map_err(|e| match e {
        config::ConfigError::Io { .. } => anyhow::anyhow!("{e}"), // names the file already
        e => anyhow::anyhow!("{}: {e}", path.display()),
    })
}

async fn gather_status(t: &TunnelConfig) -> StatusReport {
    let mut r = StatusReport {
        device: t.device.clone(),
        route_protocol: t.route_protocol,
        ..Default::default()
    };
    match control::fetch(&t.control_socket_path()) {
        Ok(a) => r.agent = Some(a),
        Err(e) => r.agent_error = Some(e.to_string()),
    }
    match Routes::new(t.route_protocol) {
        Ok(routes) => {
            if let Ok(Some(l)) = link::get(routes.handle(), &t.device).await {
                r.link = Some(LinkState {
                    index: l.index,
                    mtu: l.mtu,
                    up: l.up,
                });
            }
            match routes.list_ours().await {
                Ok(list) => r.routes = list,
                Err(e) => r.routes_error = Some(e.to_string()),
            }
        }
        Err(e) => r.routes_error = Some(e.to_string()),
    }
    r
}
