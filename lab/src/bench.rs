//! Benchmark on the lab topology (one node per cluster, one pod per node): pod a1-p0 ->
//! pod b1-p0 through (a) plain routing over the underlay (no tunnel), (b) userspace WireGuard
//! references: Debian's wireguard-go (2022), a current wireguard-go built from its Go module,
//! boringtun-cli from crates.io with its default 4 threads and with 1 thread, all configured
//! the same way with `wg` (the last three are built by scripts/bench-refs.sh into a cache
//! outside the repository), (c) our agent. Interleaved rounds; medians and ratios of sdn-tunnel
//! against each reference as a markdown table.

use crate::netns::{command, exec, exec_ok, ip, process_cpu_seconds, terminate, wait_for};
use crate::wggo::{self, Daemon, WgGoConfig, WgPeer};
use crate::{ping, Lab, LabOptions};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What carries the traffic between the two nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Static routes via the underlay, no tunnel.
    Plain,
    /// Debian's wireguard-go (`wireguard-go-debian`; `wireguard-go` and `wggo` are aliases) on
    /// both nodes, configured with `wg`.
    WireguardGo,
    /// wireguard-go built from the newest code of its Go module (scripts/bench-refs.sh), same
    /// configuration; it enables TUN TSO/GRO and UDP GSO/GRO by itself where the kernel has them.
    WireguardGoCurrent,
    /// boringtun-cli from crates.io (scripts/bench-refs.sh) with its default threads (4).
    BoringtunCli,
    /// boringtun-cli with `--threads 1`.
    BoringtunCli1,
    /// sdn-tunnel agents on both nodes.
    SdnTunnel,
}

/// A reference binary that scripts/bench-refs.sh builds (names as the script spells them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefBinary {
    WireguardGoCurrent,
    BoringtunCli,
}

impl RefBinary {
    pub fn name(self) -> &'static str {
        match self {
            RefBinary::WireguardGoCurrent => "wireguard-go-current",
            RefBinary::BoringtunCli => "boringtun-cli",
        }
    }
}

impl Mode {
    pub const ALL: [Mode; 6] = [
        Mode::Plain,
        Mode::WireguardGo,
        Mode::WireguardGoCurrent,
        Mode::BoringtunCli,
        Mode::BoringtunCli1,
        Mode::SdnTunnel,
    ];

    /// The tunnels sdn-tunnel is compared with, the headline (current wireguard-go) first.
    pub const REFERENCES: [Mode; 4] = [
        Mode::WireguardGoCurrent,
        Mode::WireguardGo,
        Mode::BoringtunCli,
        Mode::BoringtunCli1,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Mode::Plain => "plain",
            Mode::WireguardGo => "wireguard-go-debian",
            Mode::WireguardGoCurrent => "wireguard-go-current",
            Mode::BoringtunCli => "boringtun-cli",
            Mode::BoringtunCli1 => "boringtun-cli-1thread",
            Mode::SdnTunnel => "sdn-tunnel",
        }
    }

    pub fn parse(s: &str) -> Result<Mode> {
        Ok(match s {
            "plain" => Mode::Plain,
            "wireguard-go-debian" | "wireguard-go" | "wggo" => Mode::WireguardGo,
            "wireguard-go-current" => Mode::WireguardGoCurrent,
            "boringtun-cli" => Mode::BoringtunCli,
            "boringtun-cli-1thread" => Mode::BoringtunCli1,
            "sdn-tunnel" | "ours" => Mode::SdnTunnel,
            _ => bail!(
                "unknown mode {s:?} ({}; wireguard-go = wireguard-go-debian)",
                Mode::ALL.map(Mode::name).join(", ")
            ),
        })
    }

    /// The binary scripts/bench-refs.sh builds for this mode, if any.
    pub fn ref_binary(self) -> Option<RefBinary> {
        match self {
            Mode::WireguardGoCurrent => Some(RefBinary::WireguardGoCurrent),
            Mode::BoringtunCli | Mode::BoringtunCli1 => Some(RefBinary::BoringtunCli),
            _ => None,
        }
    }

    /// Column header of the report (`plain routing` as before).
    fn column(self) -> &'static str {
        match self {
            Mode::Plain => "plain routing",
            m => m.name(),
        }
    }
}

/// Paths of the binaries scripts/bench-refs.sh builds; `None`: ask the script.
#[derive(Debug, Clone, Default)]
pub struct RefBinaries {
    pub wireguard_go_current: Option<PathBuf>,
    pub boringtun_cli: Option<PathBuf>,
}

impl RefBinaries {
    fn slot(&mut self, r: RefBinary) -> &mut Option<PathBuf> {
        match r {
            RefBinary::WireguardGoCurrent => &mut self.wireguard_go_current,
            RefBinary::BoringtunCli => &mut self.boringtun_cli,
        }
    }

    /// Fills in the binaries that `modes` need and were not given: from
    /// scripts/bench-refs.sh, which builds a missing one first (saying so).
    pub fn resolve(&mut self, modes: &[Mode]) -> Result<()> {
        for r in modes.iter().filter_map(|m| m.ref_binary()) {
            let slot = self.slot(r);
            if slot.is_none() {
                *slot = Some(ref_binary_path(r)?);
            }
        }
        Ok(())
    }

    /// The userspace WireGuard daemon that serves `mode` (None for plain and sdn-tunnel).
    /// A reference binary not resolved yet is asked of scripts/bench-refs.sh.
    pub fn daemon(&self, mode: Mode) -> Result<Option<Daemon>> {
        let path = |r: RefBinary| -> Result<PathBuf> {
            let given = match r {
                RefBinary::WireguardGoCurrent => &self.wireguard_go_current,
                RefBinary::BoringtunCli => &self.boringtun_cli,
            };
            given.clone().map_or_else(|| ref_binary_path(r), Ok)
        };
        Ok(match mode {
            Mode::Plain | Mode::SdnTunnel => None,
            Mode::WireguardGo => Some(Daemon::WireguardGo {
                program: PathBuf::from("wireguard-go"),
                log_level: "verbose",
            }),
            Mode::WireguardGoCurrent => Some(Daemon::WireguardGo {
                program: path(RefBinary::WireguardGoCurrent)?,
                log_level: "verbose",
            }),
            Mode::BoringtunCli => Some(Daemon::BoringtunCli {
                program: path(RefBinary::BoringtunCli)?,
                threads: None,
            }),
            Mode::BoringtunCli1 => Some(Daemon::BoringtunCli {
                program: path(RefBinary::BoringtunCli)?,
                threads: Some(1),
            }),
        })
    }
}

/// scripts/bench-refs.sh of the checkout this binary was built from.
pub fn refs_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/bench-refs.sh")
}

/// The `<name> <path>` line of bench-refs.sh's output for `name`.
fn refs_line(stdout: &str, name: &str) -> Option<PathBuf> {
    stdout
        .lines()
        .filter_map(|l| l.split_once(' '))
        .find(|(n, _)| *n == name)
        .map(|(_, p)| PathBuf::from(p.trim()))
}

/// Path of `r` as built by scripts/bench-refs.sh; runs the script to build it when missing.
pub fn ref_binary_path(r: RefBinary) -> Result<PathBuf> {
    let script = refs_script();
    if !script.exists() {
        bail!(
            "{} not found: build {} with scripts/bench-refs.sh and pass its path (--{})",
            script.display(),
            r.name(),
            r.name()
        );
    }
    let script_s = script.to_string_lossy().into_owned();
    let found = exec("", &["bash", &script_s, "--path", r.name()]);
    if found.status.success() {
        if let Some(p) = refs_line(&String::from_utf8_lossy(&found.stdout), r.name()) {
            return Ok(p);
        }
    }
    eprintln!(
        "{}: not built yet; running scripts/bench-refs.sh {} (builds it once, cached outside the repository)",
        r.name(),
        r.name()
    );
    let out = command("", &["bash", &script_s, r.name()])
        .stderr(Stdio::inherit())
        .output()
        .context("running scripts/bench-refs.sh")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    match refs_line(&stdout, r.name()) {
        Some(p) if out.status.success() => Ok(p),
        _ => bail!(
            "scripts/bench-refs.sh {} failed ({}); see its output above",
            r.name(),
            out.status
        ),
    }
}

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub rounds: usize,
    /// Seconds per iperf3 run.
    pub duration: u32,
    pub modes: Vec<Mode>,
    /// sdn-tunnel binary (needed for Mode::SdnTunnel).
    pub bin: Option<PathBuf>,
    /// The references built by scripts/bench-refs.sh (asked of the script when `None`).
    pub refs: RefBinaries,
    pub verbose: bool,
    /// Lab prefix (default: random).
    pub prefix: Option<String>,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            rounds: 3,
            duration: 5,
            modes: Mode::ALL.to_vec(),
            bin: None,
            refs: RefBinaries::default(),
            verbose: true,
            prefix: None,
        }
    }
}

/// One measurement of one mode.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    pub tcp1_gbps: f64,
    pub tcp4_gbps: f64,
    pub rtt_ms: f64,
    /// CPU seconds (tunnel processes on both nodes) per GB received; None for plain routing.
    pub cpu1_s_per_gb: Option<f64>,
    pub cpu4_s_per_gb: Option<f64>,
    /// Payload bytes iperf3 received in both runs.
    pub iperf_bytes: f64,
    /// Bytes the tunnel device on b1 delivered to the kernel (its rx counter) during both
    /// iperf3 runs: at least `iperf_bytes` when the traffic really went through the tunnel.
    /// None for plain routing.
    pub tunnel_rx_bytes: Option<u64>,
}

/// The mode's tunnel processes (for CPU accounting) and devices.
pub struct ModeGuard {
    pub mode: Mode,
    pub pids: Vec<u32>,
    /// The tunnel device on a1 and on b1 (None for plain routing).
    pub devices: Option<(String, String)>,
    /// The userspace daemons this module started (stopped by [`teardown_mode`] or on drop).
    children: Mutex<Vec<Child>>,
}

impl Drop for ModeGuard {
    fn drop(&mut self) {
        stop_children(self);
    }
}

fn stop_children(guard: &ModeGuard) {
    let mut children = std::mem::take(&mut *guard.children.lock().unwrap());
    for c in children.iter_mut() {
        terminate(c, Duration::from_secs(3));
    }
}

const A: &str = "a1";
const B: &str = "b1";

/// The lab the benchmark uses: 2 clusters x 1 node x 1 pod, no agents started.
pub fn lab_options(bin: Option<PathBuf>, verbose: bool) -> LabOptions {
    LabOptions {
        clusters: 2,
        nodes_per_cluster: 1,
        pods_per_node: 1,
        start_agents: false,
        bin,
        verbose,
        ..LabOptions::default()
    }
}

/// The device the userspace references create on `node` (one mode at a time).
fn wg_device(lab: &Lab, node: &str) -> String {
    format!("{}-g{node}", lab.prefix())
}

/// The log of `mode`'s daemon on the device `dev`.
fn daemon_log(lab: &Lab, dev: &str, mode: Mode) -> PathBuf {
    lab.dir().join(format!("{dev}-{}.log", mode.name()))
}

/// Makes pod a1-p0 <-> pod b1-p0 traffic flow through `mode`, and waits until it does. The
/// reference binaries come from scripts/bench-refs.sh (see [`setup_mode_with`]).
pub fn setup_mode(lab: &Lab, mode: Mode) -> Result<ModeGuard> {
    setup_mode_with(lab, mode, &RefBinaries::default())
}

/// Like [`setup_mode`], with the reference binaries in `refs`.
pub fn setup_mode_with(lab: &Lab, mode: Mode, refs: &RefBinaries) -> Result<ModeGuard> {
    let mut guard = ModeGuard {
        mode,
        pids: Vec::new(),
        devices: None,
        children: Mutex::new(Vec::new()),
    };
    match mode {
        Mode::Plain => {
            for (me, other) in [(A, B), (B, A)] {
                let dst = lab.node(other).pod_cidr.to_string();
                let via = lab.node_underlay_ip(other).to_string();
                ip(&lab.node_ns(me), &["route", "replace", &dst, "via", &via])?;
            }
        }
        Mode::SdnTunnel => {
            for n in [A, B] {
                lab.start_agent(n)?;
            }
            guard.devices = Some((lab.node(A).device.clone(), lab.node(B).device.clone()));
            for n in [A, B] {
                if let Err(e) = lab.wait_agent_ready(n, Duration::from_secs(10)) {
                    teardown_mode(lab, &guard);
                    return Err(e);
                }
                guard.pids.push(lab.agent_pid(n).context("agent pid")?);
            }
        }
        _ => {
            let daemon = refs.daemon(mode)?.expect("a userspace reference");
            guard.devices = Some((wg_device(lab, A), wg_device(lab, B)));
            for (me, other) in [(A, B), (B, A)] {
                let dev = wg_device(lab, me);
                let ns = lab.node_ns(me);
                let key = lab.private_key_file(me);
                let log = daemon_log(lab, &dev, mode);
                let remote_cluster = lab
                    .topology()
                    .cluster(&lab.node(other).cluster)
                    .expect("cluster")
                    .pod_cidr
                    .to_string();
                let cfg = WgGoConfig {
                    ns: &ns,
                    device: &dev,
                    private_key_file: &key,
                    listen_port: lab.node(me).listen_port,
                    mtu: lab.options().mtu,
                    peers: vec![WgPeer {
                        public_key: lab.public_key(other),
                        allowed_ips: vec![lab.node(other).pod_cidr.to_string()],
                        endpoint: Some(lab.endpoint(other)),
                        persistent_keepalive: lab.options().persistent_keepalive,
                    }],
                    routes: vec![remote_cluster],
                    route_src: Some(lab.gateway_ip(me)),
                    log_file: &log,
                };
                let child = wggo::start_daemon(&daemon, &cfg)
                    .with_context(|| format!("{} on {me}", mode.name()))?;
                guard.pids.push(child.id());
                guard.children.lock().unwrap().push(child);
            }
        }
    }
    let (from, to) = (lab.pod_ns(A, 0), lab.pod_ip(B, 0));
    if !wait_for(|| ping(&from, to), Duration::from_secs(20)) {
        teardown_mode(lab, &guard);
        bail!(
            "{}: pod {A} cannot reach pod {B} ({to}) within 20 s",
            mode.name()
        );
    }
    Ok(guard)
}

/// Undoes [`setup_mode`].
pub fn teardown_mode(lab: &Lab, guard: &ModeGuard) {
    match guard.mode {
        Mode::Plain => {
            for (me, other) in [(A, B), (B, A)] {
                let dst = lab.node(other).pod_cidr.to_string();
                let _ = ip(&lab.node_ns(me), &["route", "del", &dst]);
            }
        }
        Mode::SdnTunnel => {
            for n in [A, B] {
                if let Err(e) = lab.stop_agent(n, libc::SIGTERM) {
                    eprintln!("warning: {e}");
                }
                // SIGTERM leaves the device, routes and guards (fail closed); the next mode
                // routes the same CIDRs without us.
                if let Err(e) = lab.cleanup_agent(n) {
                    eprintln!("warning: cleanup on {n}: {e:#}");
                }
            }
        }
        _ => stop_children(guard),
    }
}

/// The rx byte counter of `dev` in `ns` (`ip -s -j link`).
fn rx_bytes(ns: &str, dev: &str) -> Result<u64> {
    let out = exec_ok(ns, &["ip", "-s", "-j", "link", "show", "dev", dev])?;
    let v: serde_json::Value = serde_json::from_str(&out).context("ip -j output")?;
    v[0]["stats64"]["rx"]["bytes"]
        .as_u64()
        .with_context(|| format!("no rx byte counter for {dev} in {ns}"))
}

/// What the mode's setup shows about itself: the daemon's version, its thread setting and the
/// offloads its TUN device on a1 got (`ethtool -k`).
pub fn describe_mode(lab: &Lab, guard: &ModeGuard, refs: &RefBinaries) -> String {
    let mut parts = Vec::new();
    match refs.daemon(guard.mode) {
        Ok(Some(d)) => {
            let prog = d.program().to_string_lossy().into_owned();
            let v = exec("", &[prog.as_str(), "--version"]);
            let version = String::from_utf8_lossy(&v.stdout)
                .lines()
                .next()
                .unwrap_or("version unknown")
                .trim()
                .to_string();
            let path = if prog.contains('/') {
                prog.clone()
            } else {
                String::from_utf8_lossy(
                    &exec("", &["sh", "-c", &format!("command -v {prog}")]).stdout,
                )
                .trim()
                .to_string()
            };
            parts.push(format!("`{path}` ({version})"));
            if let Daemon::BoringtunCli { threads, .. } = d {
                parts.push(match threads {
                    Some(t) => format!("--threads {t}"),
                    None => "default threads (4)".into(),
                });
            }
        }
        Ok(None) => {}
        Err(e) => parts.push(format!("{e:#}")),
    }
    if guard.mode == Mode::SdnTunnel {
        if let Some(bin) = &lab.options().bin {
            parts.push(format!("`{}`", bin.display()));
        }
    }
    if let Some((dev, _)) = &guard.devices {
        let out = exec(&lab.node_ns(A), &["ethtool", "-k", dev]);
        if out.status.success() {
            let text = String::from_utf8_lossy(&out.stdout);
            let feats: Vec<String> = ["tx-tcp-segmentation", "tx-udp-segmentation"]
                .iter()
                .map(|f| {
                    let state = text
                        .lines()
                        .map(str::trim)
                        .find_map(|l| l.strip_prefix(&format!("{f}: ")))
                        .map_or("?", |s| s.split_whitespace().next().unwrap_or("?"));
                    format!("{f} {state}")
                })
                .collect();
            parts.push(format!("TUN device offloads: {}", feats.join(", ")));
        } else {
            parts.push("TUN device offloads: unknown (ethtool failed or missing)".into());
        }
    }
    parts.join("; ")
}

/// Lines of the mode's daemon logs saying an offload was refused (wireguard-go logs "disabled
/// UDP GSO" at verbose level when the kernel refuses UDP_SEGMENT sends).
fn offload_refusals(lab: &Lab, mode: Mode) -> Vec<String> {
    let mut out = Vec::new();
    for n in [A, B] {
        let log = daemon_log(lab, &wg_device(lab, n), mode);
        if let Ok(text) = std::fs::read_to_string(&log) {
            let mut lines: Vec<String> = text
                .lines()
                .filter(|l| {
                    let l = l.to_ascii_lowercase();
                    l.contains("gso") || l.contains("gro") || l.contains("offload")
                })
                .map(|l| format!("{n}: {}", l.trim()))
                .collect();
            lines.dedup();
            out.extend(lines.into_iter().take(3));
        }
    }
    out
}

/// Extracts `"key": <number>` from the `"sum_received"` object of iperf3's JSON output.
fn iperf_sum_received(json: &str, key: &str) -> Option<f64> {
    let start = json.find("\"sum_received\"")?;
    let obj = &json[start..];
    let obj = &obj[..obj.find('}')?];
    let k = obj.find(&format!("\"{key}\""))?;
    let rest = obj[k + key.len() + 2..]
        .trim_start()
        .strip_prefix(':')?
        .trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '-' | '+')))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// `rtt min/avg/max/mdev = 0.030/0.045/0.071/0.010 ms` -> avg.
fn ping_avg_ms(out: &str) -> Option<f64> {
    let line = out.lines().find(|l| l.contains("min/avg/max"))?;
    let nums = line.split('=').nth(1)?.trim();
    nums.split('/').nth(1)?.trim().parse().ok()
}

fn cpu_total(pids: &[u32]) -> Result<f64> {
    pids.iter().map(|&p| process_cpu_seconds(p)).sum()
}

/// One iperf3 TCP run pod a1-p0 -> pod b1-p0; returns (Gbit/s, CPU s/GB, bytes received).
fn iperf(
    lab: &Lab,
    guard: &ModeGuard,
    duration: u32,
    streams: u32,
) -> Result<(f64, Option<f64>, f64)> {
    let (srv_ns, cli_ns) = (lab.pod_ns(B, 0), lab.pod_ns(A, 0));
    let mut server = command(&srv_ns, &["iperf3", "-s", "-1", "-p", "5201"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting iperf3 -s (apt-get install iperf3)")?;
    let listening = wait_for(
        || {
            let o = exec(&srv_ns, &["ss", "-Hltn", "sport = :5201"]);
            !String::from_utf8_lossy(&o.stdout).trim().is_empty()
        },
        Duration::from_secs(5),
    );
    if !listening {
        let _ = server.kill();
        let _ = server.wait();
        bail!("iperf3 server did not listen");
    }
    let cpu0 = cpu_total(&guard.pids)?;
    let (dst, t, p) = (
        lab.pod_ip(B, 0).to_string(),
        duration.to_string(),
        streams.to_string(),
    );
    let out = exec_ok(
        &cli_ns,
        &["iperf3", "-c", &dst, "-p", "5201", "-t", &t, "-P", &p, "-J"],
    );
    let cpu1 = cpu_total(&guard.pids)?;
    if !wait_for(
        || matches!(server.try_wait(), Ok(Some(_))),
        Duration::from_secs(5),
    ) {
        let _ = server.kill();
    }
    let _ = server.wait();
    let json = out?;
    let bps = iperf_sum_received(&json, "bits_per_second")
        .context("iperf3 JSON: no sum_received.bits_per_second")?;
    let bytes = iperf_sum_received(&json, "bytes").context("iperf3 JSON: no sum_received.bytes")?;
    let cpu = (guard.mode != Mode::Plain && bytes > 0.0).then(|| (cpu1 - cpu0) / (bytes / 1e9));
    Ok((bps / 1e9, cpu, bytes))
}

/// Measures one mode (already set up). For a tunnel, fails unless the tunnel device on b1
/// delivered at least the bytes iperf3 received (the traffic really went through it).
pub fn measure(lab: &Lab, guard: &ModeGuard, duration: u32) -> Result<Sample> {
    let rx = |g: &ModeGuard| -> Result<Option<u64>> {
        g.devices
            .as_ref()
            .map(|(_, dev_b)| rx_bytes(&lab.node_ns(B), dev_b))
            .transpose()
    };
    let rx0 = rx(guard)?;
    let (tcp1_gbps, cpu1_s_per_gb, bytes1) = iperf(lab, guard, duration, 1)?;
    let (tcp4_gbps, cpu4_s_per_gb, bytes4) = iperf(lab, guard, duration, 4)?;
    let rx1 = rx(guard)?;
    let iperf_bytes = bytes1 + bytes4;
    let tunnel_rx_bytes = rx0.zip(rx1).map(|(a, b)| b.saturating_sub(a));
    if let Some(t) = tunnel_rx_bytes {
        if (t as f64) < iperf_bytes {
            bail!(
                "{}: the tunnel device on {B} delivered {t} bytes but iperf3 received {iperf_bytes:.0}: \
                 the traffic did not go through the tunnel",
                guard.mode.name()
            );
        }
    }
    let dst = lab.pod_ip(B, 0).to_string();
    // After a second of quiet (iperf3's last segments and its control connection gone):
    // 200 pings, since single runs of 20 varied by +-30% on this 2-core machine.
    std::thread::sleep(Duration::from_secs(1));
    let out = exec_ok(
        &lab.pod_ns(A, 0),
        &["ping", "-n", "-q", "-c", "200", "-i", "0.01", &dst],
    )?;
    let rtt_ms = ping_avg_ms(&out).context("cannot parse ping output")?;
    Ok(Sample {
        tcp1_gbps,
        tcp4_gbps,
        rtt_ms,
        cpu1_s_per_gb,
        cpu4_s_per_gb,
        iperf_bytes,
        tunnel_rx_bytes,
    })
}

pub fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Runs the whole benchmark and returns the markdown report.
pub fn run(opts: &BenchOptions) -> Result<String> {
    anyhow::ensure!(opts.rounds >= 1 && !opts.modes.is_empty(), "nothing to do");
    if opts.modes.contains(&Mode::SdnTunnel) && opts.bin.is_none() {
        bail!("--bin (the sdn-tunnel binary) is needed for mode sdn-tunnel");
    }
    // Before the lab exists: this may build a reference (minutes, once).
    let mut refs = opts.refs.clone();
    refs.resolve(&opts.modes)?;
    let started = Instant::now();
    let lab = Lab::up(LabOptions {
        prefix: opts.prefix.clone(),
        ..lab_options(opts.bin.clone(), opts.verbose)
    })?;
    let mut samples: Vec<(Mode, Sample)> = Vec::new();
    let mut about: Vec<(Mode, String)> = Vec::new();
    for round in 1..=opts.rounds {
        for &mode in &opts.modes {
            let guard = setup_mode_with(&lab, mode, &refs)?;
            if round == 1 && mode != Mode::Plain {
                about.push((mode, describe_mode(&lab, &guard, &refs)));
            }
            let r = measure(&lab, &guard, opts.duration);
            teardown_mode(&lab, &guard);
            let s = r.with_context(|| format!("round {round}, {}", mode.name()))?;
            if opts.verbose {
                eprintln!(
                    "round {round}/{} {:<21} tcp1 {:>6.2} Gbit/s  tcp4 {:>6.2} Gbit/s  rtt {:.3} ms  cpu/GB {} / {}{}",
                    opts.rounds,
                    mode.name(),
                    s.tcp1_gbps,
                    s.tcp4_gbps,
                    s.rtt_ms,
                    fmt_opt(s.cpu1_s_per_gb, 2),
                    fmt_opt(s.cpu4_s_per_gb, 2),
                    s.tunnel_rx_bytes.map_or(String::new(), |t| format!(
                        "  tunnel rx on {B} {:.0} MB (iperf3 {:.0} MB)",
                        t as f64 / 1e6,
                        s.iperf_bytes / 1e6
                    ))
                );
            }
            samples.push((mode, s));
        }
    }
    for (mode, text) in about.iter_mut() {
        let refused = offload_refusals(&lab, *mode);
        if !refused.is_empty() {
            *text += &format!("; its log: {}", refused.join(" | "));
        } else if matches!(*mode, Mode::WireguardGo | Mode::WireguardGoCurrent) {
            *text += "; its verbose log: no offload refused (no \"disabled UDP GSO\")";
        }
    }
    drop(lab);
    Ok(report(opts, &samples, &about, started.elapsed()))
}

fn fmt_opt(v: Option<f64>, prec: usize) -> String {
    v.map_or("n/a".into(), |x| format!("{x:.prec$}"))
}

fn report(
    opts: &BenchOptions,
    samples: &[(Mode, Sample)],
    about: &[(Mode, String)],
    took: Duration,
) -> String {
    type Metric = (&'static str, fn(&Sample) -> Option<f64>, usize);
    let metrics: [Metric; 5] = [
        ("TCP, 1 stream (Gbit/s)", |s| Some(s.tcp1_gbps), 2),
        ("TCP, 4 streams (Gbit/s)", |s| Some(s.tcp4_gbps), 2),
        ("ping RTT, avg (ms)", |s| Some(s.rtt_ms), 3),
        (
            "CPU s per GB, 1 stream (both nodes)",
            |s| s.cpu1_s_per_gb,
            2,
        ),
        (
            "CPU s per GB, 4 streams (both nodes)",
            |s| s.cpu4_s_per_gb,
            2,
        ),
    ];
    let med = |mode: Mode, f: fn(&Sample) -> Option<f64>| -> Option<f64> {
        median(
            samples
                .iter()
                .filter(|(m, _)| *m == mode)
                .filter_map(|(_, s)| f(s))
                .collect(),
        )
    };
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "n/a".into(),
    };
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = String::from_utf8_lossy(&exec("", &["uname", "-r"]).stdout)
        .trim()
        .to_string();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    // Columns: every mode in the order run; ratios of sdn-tunnel against each tunnel
    // reference (the headline, current wireguard-go, first), then against plain routing.
    let modes: Vec<Mode> = Mode::ALL
        .into_iter()
        .filter(|m| opts.modes.contains(m))
        .collect();
    let ours = opts.modes.contains(&Mode::SdnTunnel);
    let mut against: Vec<Mode> = if ours {
        Mode::REFERENCES
            .into_iter()
            .filter(|m| opts.modes.contains(m))
            .collect()
    } else {
        Vec::new()
    };
    if ours && opts.modes.contains(&Mode::Plain) {
        against.push(Mode::Plain);
    }
    let mut s = String::new();
    s += &format!(
        "Pod -> pod across two lab clusters (one node each), medians of {} interleaved rounds, \
         iperf3 {} s per run, 200 pings at 0.01 s after 1 s of quiet.\nMachine: {cpu_model}, {cpus} CPUs, kernel {kernel}; \
         benchmark took {:.0} s.\n\n",
        opts.rounds,
        opts.duration,
        took.as_secs_f64()
    );
    s += "| metric |";
    for m in &modes {
        s += &format!(" {} |", m.column());
    }
    for m in &against {
        s += &format!(" sdn-tunnel / {} |", m.name());
    }
    s += "\n|---|";
    s += &"---:|".repeat(modes.len() + against.len());
    s += "\n";
    for (name, f, prec) in metrics {
        s += &format!("| {name} |");
        for &m in &modes {
            s += &format!(" {} |", fmt_opt(med(m, f), prec));
        }
        for &m in &against {
            s += &format!(" {} |", ratio(med(Mode::SdnTunnel, f), med(m, f)));
        }
        s += "\n";
    }
    if opts.rounds > 1 {
        s += "\nPer round, TCP 1 stream (Gbit/s):";
        for (i, &m) in modes.iter().enumerate() {
            let v: Vec<String> = samples
                .iter()
                .filter(|(x, _)| *x == m)
                .map(|(_, s)| format!("{:.2}", s.tcp1_gbps))
                .collect();
            s += &format!(
                "{} {} {}",
                if i == 0 { "" } else { ";" },
                m.name(),
                v.join(" / ")
            );
        }
        s += ".\n";
    }
    if !about.is_empty() {
        s += "\nModes:\n";
        for (m, text) in about {
            s += &format!("- {}: {text}\n", m.name());
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_iperf_and_ping_output() {
        let json = r#"{"end": {"streams": [], "sum_sent": {"bytes": 5, "bits_per_second": 1.0},
            "sum_received": {"start": 0, "end": 5.0, "seconds": 5.0, "bytes": 2500000000,
            "bits_per_second": 3.99e9, "sender": true}, "cpu_utilization_percent": {}}}"#;
        assert_eq!(iperf_sum_received(json, "bytes"), Some(2.5e9));
        assert_eq!(iperf_sum_received(json, "bits_per_second"), Some(3.99e9));
        let ping = "--- 10.132.0.10 ping statistics ---\n20 packets transmitted, 20 received, 0% packet loss, time 960ms\nrtt min/avg/max/mdev = 0.031/0.052/0.090/0.012 ms\n";
        assert_eq!(ping_avg_ms(ping), Some(0.052));
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
    }

    #[test]
    fn mode_names_and_aliases() {
        for m in Mode::ALL {
            assert_eq!(Mode::parse(m.name()).unwrap(), m);
        }
        for alias in ["wireguard-go", "wggo", "wireguard-go-debian"] {
            assert_eq!(Mode::parse(alias).unwrap(), Mode::WireguardGo);
        }
        assert_eq!(Mode::parse("ours").unwrap(), Mode::SdnTunnel);
        assert!(Mode::parse("kernel").is_err());
        assert_eq!(
            Mode::BoringtunCli1.ref_binary(),
            Some(RefBinary::BoringtunCli)
        );
        assert_eq!(Mode::WireguardGo.ref_binary(), None);
        let out = "wireguard-go-current /c/wireguard-go-v0/wireguard-go\nboringtun-cli /c/b/bin/boringtun-cli\n";
        assert_eq!(
            refs_line(out, "boringtun-cli"),
            Some(PathBuf::from("/c/b/bin/boringtun-cli"))
        );
        assert_eq!(refs_line(out, "wireguard-go"), None);
    }

    #[test]
    fn report_has_a_column_per_mode_and_ratios_against_each_reference() {
        let sample = |g: f64| Sample {
            tcp1_gbps: g,
            tcp4_gbps: g,
            rtt_ms: 0.5,
            cpu1_s_per_gb: Some(10.0 / g),
            cpu4_s_per_gb: Some(10.0 / g),
            ..Sample::default()
        };
        let opts = BenchOptions {
            rounds: 2,
            ..BenchOptions::default()
        };
        let samples: Vec<(Mode, Sample)> = Mode::ALL
            .iter()
            .enumerate()
            .flat_map(|(i, &m)| [(m, sample(i as f64 + 1.0)), (m, sample(i as f64 + 1.0))])
            .collect();
        let r = report(&opts, &samples, &[], Duration::from_secs(1));
        let header = r.lines().find(|l| l.starts_with("| metric")).unwrap();
        assert_eq!(
            header,
            "| metric | plain routing | wireguard-go-debian | wireguard-go-current | boringtun-cli | \
             boringtun-cli-1thread | sdn-tunnel | sdn-tunnel / wireguard-go-current | \
             sdn-tunnel / wireguard-go-debian | sdn-tunnel / boringtun-cli | \
             sdn-tunnel / boringtun-cli-1thread | sdn-tunnel / plain |"
        );
        let tcp1 = r
            .lines()
            .find(|l| l.starts_with("| TCP, 1 stream"))
            .unwrap();
        assert_eq!(
            tcp1,
            "| TCP, 1 stream (Gbit/s) | 1.00 | 2.00 | 3.00 | 4.00 | 5.00 | 6.00 | 2.00x | 3.00x | 1.50x | 1.20x | 6.00x |"
        );
        // Only the modes run, and no ratio without sdn-tunnel.
        let opts = BenchOptions {
            modes: vec![Mode::Plain, Mode::WireguardGo],
            ..BenchOptions::default()
        };
        let r = report(&opts, &samples, &[], Duration::from_secs(1));
        assert!(r.contains("| metric | plain routing | wireguard-go-debian |\n|---|---:|---:|\n"));
    }
}
