//! Benchmark on the lab topology (one node per cluster, one pod per node): pod a1-p0 ->
//! pod b1-p0 through (a) plain routing over the underlay (no tunnel), (b) Debian's
//! wireguard-go, (c) our agent. Interleaved rounds; medians and ratios as a markdown table.

use crate::netns::{command, exec, exec_ok, ip, process_cpu_seconds, wait_for};
use crate::wggo::{WgGoConfig, WgPeer};
use crate::{ping, Lab, LabOptions};
use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// What carries the traffic between the two nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Static routes via the underlay, no tunnel.
    Plain,
    /// Debian's wireguard-go on both nodes, configured with `wg`.
    WireguardGo,
    /// sdn-tunnel agents on both nodes.
    SdnTunnel,
}

impl Mode {
    pub const ALL: [Mode; 3] = [Mode::Plain, Mode::WireguardGo, Mode::SdnTunnel];

    pub fn name(self) -> &'static str {
        match self {
            Mode::Plain => "plain",
            Mode::WireguardGo => "wireguard-go",
            Mode::SdnTunnel => "sdn-tunnel",
        }
    }

    pub fn parse(s: &str) -> Result<Mode> {
        Ok(match s {
            "plain" => Mode::Plain,
            "wireguard-go" | "wggo" => Mode::WireguardGo,
            "sdn-tunnel" | "ours" => Mode::SdnTunnel,
            _ => bail!("unknown mode {s:?} (plain, wireguard-go, sdn-tunnel)"),
        })
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
}

/// The mode's tunnel processes (for CPU accounting).
pub struct ModeGuard {
    pub mode: Mode,
    pub pids: Vec<u32>,
}

const A: &str = "a1";
const B: &str = "b1";
const WG_A: &str = "bench-wg-a1";
const WG_B: &str = "bench-wg-b1";

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

fn wg_device(lab: &Lab, node: &str) -> String {
    format!("{}-g{node}", lab.prefix())
}

/// Makes pod a1-p0 <-> pod b1-p0 traffic flow through `mode`, and waits until it does.
pub fn setup_mode(lab: &Lab, mode: Mode) -> Result<ModeGuard> {
    let mut pids = Vec::new();
    match mode {
        Mode::Plain => {
            for (me, other) in [(A, B), (B, A)] {
                let dst = lab.node(other).pod_cidr.to_string();
                let via = lab.node_underlay_ip(other).to_string();
                ip(&lab.node_ns(me), &["route", "replace", &dst, "via", &via])?;
            }
        }
        Mode::WireguardGo => {
            for (me, other, name) in [(A, B, WG_A), (B, A, WG_B)] {
                let dev = wg_device(lab, me);
                let ns = lab.node_ns(me);
                let key = lab.private_key_file(me);
                let log = lab.dir().join(format!("{dev}.log"));
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
                pids.push(lab.start_wireguard_go(name, &cfg)?);
            }
        }
        Mode::SdnTunnel => {
            for n in [A, B] {
                lab.start_agent(n)?;
            }
            for n in [A, B] {
                lab.wait_agent_ready(n, Duration::from_secs(10))?;
                pids.push(lab.agent_pid(n).context("agent pid")?);
            }
        }
    }
    let guard = ModeGuard { mode, pids };
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
        Mode::WireguardGo => {
            lab.stop_process(WG_A);
            lab.stop_process(WG_B);
        }
        Mode::SdnTunnel => {
            for n in [A, B] {
                if let Err(e) = lab.stop_agent(n, libc::SIGTERM) {
                    eprintln!("warning: {e}");
                }
            }
        }
    }
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

/// One iperf3 TCP run pod a1-p0 -> pod b1-p0; returns (Gbit/s, CPU s/GB).
fn iperf(lab: &Lab, guard: &ModeGuard, duration: u32, streams: u32) -> Result<(f64, Option<f64>)> {
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
    Ok((bps / 1e9, cpu))
}

/// Measures one mode (already set up).
pub fn measure(lab: &Lab, guard: &ModeGuard, duration: u32) -> Result<Sample> {
    let (tcp1_gbps, cpu1_s_per_gb) = iperf(lab, guard, duration, 1)?;
    let (tcp4_gbps, cpu4_s_per_gb) = iperf(lab, guard, duration, 4)?;
    let dst = lab.pod_ip(B, 0).to_string();
    let out = exec_ok(
        &lab.pod_ns(A, 0),
        &["ping", "-n", "-q", "-c", "20", "-i", "0.05", &dst],
    )?;
    let rtt_ms = ping_avg_ms(&out).context("cannot parse ping output")?;
    Ok(Sample {
        tcp1_gbps,
        tcp4_gbps,
        rtt_ms,
        cpu1_s_per_gb,
        cpu4_s_per_gb,
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
    let started = Instant::now();
    let lab = Lab::up(LabOptions {
        prefix: opts.prefix.clone(),
        ..lab_options(opts.bin.clone(), opts.verbose)
    })?;
    let mut samples: Vec<(Mode, Sample)> = Vec::new();
    for round in 1..=opts.rounds {
        for &mode in &opts.modes {
            let guard = setup_mode(&lab, mode)?;
            let r = measure(&lab, &guard, opts.duration);
            teardown_mode(&lab, &guard);
            let s = r.with_context(|| format!("round {round}, {}", mode.name()))?;
            if opts.verbose {
                eprintln!(
                    "round {round}/{} {:<12} tcp1 {:>6.2} Gbit/s  tcp4 {:>6.2} Gbit/s  rtt {:.3} ms  cpu/GB {} / {}",
                    opts.rounds,
                    mode.name(),
                    s.tcp1_gbps,
                    s.tcp4_gbps,
                    s.rtt_ms,
                    fmt_opt(s.cpu1_s_per_gb, 2),
                    fmt_opt(s.cpu4_s_per_gb, 2)
                );
            }
            samples.push((mode, s));
        }
    }
    drop(lab);
    Ok(report(opts, &samples, started.elapsed()))
}

fn fmt_opt(v: Option<f64>, prec: usize) -> String {
    v.map_or("n/a".into(), |x| format!("{x:.prec$}"))
}

fn report(opts: &BenchOptions, samples: &[(Mode, Sample)], took: Duration) -> String {
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
    let mut s = String::new();
    s += &format!(
        "Pod -> pod across two lab clusters (one node each), medians of {} interleaved rounds, \
         iperf3 {} s per run, 20 pings at 0.05 s.\nMachine: {cpu_model}, {cpus} CPUs, kernel {kernel}; \
         benchmark took {:.0} s.\n\n",
        opts.rounds,
        opts.duration,
        took.as_secs_f64()
    );
    s += "| metric | plain routing | wireguard-go | sdn-tunnel | sdn-tunnel / wireguard-go | sdn-tunnel / plain |\n";
    s += "|---|---:|---:|---:|---:|---:|\n";
    for (name, f, prec) in metrics {
        let (p, w, o) = (
            med(Mode::Plain, f),
            med(Mode::WireguardGo, f),
            med(Mode::SdnTunnel, f),
        );
        s += &format!(
            "| {name} | {} | {} | {} | {} | {} |\n",
            fmt_opt(p, prec),
            fmt_opt(w, prec),
            fmt_opt(o, prec),
            ratio(o, w),
            ratio(o, p)
        );
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
}
