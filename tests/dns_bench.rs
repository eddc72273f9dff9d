//! DNS responder benchmark with the real `dnsperf` (Debian package `dnsperf`): the server
//! in-process on 127.0.0.1, 1,000 remote services, a query mix of per-cluster A, AAAA (NODATA),
//! SRV, headless and merged clusterset names, and NXDOMAIN. Ignored by default; run it with
//! `bash bench/dns.sh` (which installs dnsperf and builds in release mode).
//!
//! The server runs on a current_thread runtime (one core) pinned to CPU `DNS_BENCH_SERVER_CPU`
//! (default 0); dnsperf is pinned to `DNS_BENCH_CLIENT_CPU` (default 1) with `taskset`, so on a
//! two-core machine each has its own core. Other knobs: `DNS_BENCH_SECONDS` (10),
//! `DNS_BENCH_CLIENTS` (4), `DNS_BENCH_MAX_QPS` (200000), `DNS_BENCH_OUTSTANDING` (100).

use sdn_tunnel::dns::{DnsHandle, DnsServer, Zones, DEFAULT_CLUSTERSET_DOMAIN, DEFAULT_TTL};
use sdn_tunnel::model::{build, DesiredService};
use sdn_tunnel::source::Protocol;
use std::io::Write;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::mpsc;

const SERVICES: usize = 1000;
/// Services 0..600 are in remote `west`, 600..1000 in `north`; north's service names repeat
/// west's first 400, so 400 clusterset names merge two remotes.
const WEST: usize = 600;
const NAMESPACES: usize = 10;

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// (remote, namespace, name, headless) of service `i`.
fn identity(i: usize) -> (&'static str, String, String, bool) {
    let (remote, n) = if i < WEST {
        ("west", i)
    } else {
        ("north", i - WEST)
    };
    (
        remote,
        format!("ns-{}", n % NAMESPACES),
        format!("svc-{n}"),
        n % 10 == 9,
    )
}

fn services() -> Vec<DesiredService> {
    (0..SERVICES)
        .map(|i| {
            let (remote, namespace, name, headless) = identity(i);
            let second = if remote == "west" { 101 } else { 102 };
            let pod = if remote == "west" { 132 } else { 136 };
            let cluster_ip = format!("10.{second}.{}.{}", i / 250, i % 250 + 1);
            let endpoints = (0..3)
                .map(|e| {
                    build::endpoint(&format!("10.{pod}.{}.{}", (i / 250) * 3 + e, i % 250 + 1))
                        .on_node(&format!("{remote}-n{e}"))
                })
                .collect();
            let ips: &[&str] = if headless { &[] } else { &[&cluster_ip] };
            build::service(&namespace, &name)
                .with_ips(ips)
                .with_port("metrics", 9090, Protocol::Tcp)
                .with_endpoints(endpoints)
                .of(remote)
        })
        .collect()
}

/// dnsperf's input: 100 lines per round over different services, in this mix:
/// 45 A per-cluster (ClusterIP), 5 A headless, 10 AAAA (NODATA: IPv4-only services),
/// 15 SRV `_http._tcp`, 15 A clusterset (merged), 10 NXDOMAIN.
fn query_file(rounds: usize) -> String {
    let mut out = String::new();
    let mut k = 0usize;
    let mut next = |headless: bool| loop {
        k = (k + 7919) % SERVICES; // a prime stride visits every service
        let (r, ns, n, h) = identity(k);
        if h == headless {
            return (r, ns, n);
        }
    };
    for round in 0..rounds {
        for slot in 0..100 {
            let line = match slot {
                0..=44 => {
                    let (r, ns, n) = next(false);
                    format!("{n}.{ns}.svc.cluster.{r} A")
                }
                45..=49 => {
                    let (r, ns, n) = next(true);
                    format!("{n}.{ns}.svc.cluster.{r} A")
                }
                50..=59 => {
                    let (r, ns, n) = next(false);
                    format!("{n}.{ns}.svc.cluster.{r} AAAA")
                }
                60..=74 => {
                    let (r, ns, n) = next(slot % 5 == 0);
                    format!("_http._tcp.{n}.{ns}.svc.cluster.{r} SRV")
                }
                75..=89 => {
                    let (_, ns, n) = next(false);
                    format!("{n}.{ns}.svc.{DEFAULT_CLUSTERSET_DOMAIN} A")
                }
                _ => format!("missing-{round}-{slot}.ns-1.svc.cluster.west A"),
            };
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}

fn pin_current_thread(cpu: usize) -> bool {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; pid 0 is the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

/// utime + stime of one of our threads, from /proc (clock ticks of 1/100 s).
fn thread_cpu_seconds(tid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
    // Fields after the ")" of the command: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

#[test]
#[ignore = "benchmark: run with bash bench/dns.sh (needs dnsperf)"]
fn dnsperf_1000_services() {
    let seconds: u32 = env("DNS_BENCH_SECONDS", 10);
    let clients: u32 = env("DNS_BENCH_CLIENTS", 4);
    let max_qps: u32 = env("DNS_BENCH_MAX_QPS", 200_000);
    let outstanding: u32 = env("DNS_BENCH_OUTSTANDING", 100);
    let server_cpu: usize = env("DNS_BENCH_SERVER_CPU", 0);
    let client_cpu: usize = env("DNS_BENCH_CLIENT_CPU", 1);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());

    let svcs = services();
    let zones = Zones::build(&svcs, DEFAULT_CLUSTERSET_DOMAIN, DEFAULT_TTL);
    let stats = zones.stats();
    let handle = DnsHandle::new(zones);

    // The server: one thread, a current_thread runtime, pinned to one CPU.
    let (tx, rx) = mpsc::channel::<(SocketAddr, i32)>();
    let h = handle.clone();
    std::thread::spawn(move || {
        let pinned = server_cpu < cpus && pin_current_thread(server_cpu);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let server = DnsServer::bind("127.0.0.1:0".parse().unwrap(), h)
                .await
                .expect("bind");
            eprintln!(
                "server: current_thread runtime, {}",
                if pinned {
                    format!("pinned to CPU {server_cpu}")
                } else {
                    "not pinned".into()
                }
            );
            tx.send((server.local_addr().unwrap(), unsafe { libc::gettid() }))
                .unwrap();
            server.run().await;
        });
    });
    let (addr, server_tid) = rx.recv().unwrap();

    let dir = tempfile::tempdir().unwrap();
    let qpath = dir.path().join("queries.txt");
    std::fs::File::create(&qpath)
        .unwrap()
        .write_all(query_file(100).as_bytes())
        .unwrap();

    eprintln!(
        "zones: {}",
        stats
            .zones
            .iter()
            .map(|z| format!("{} ({} names, {} records)", z.origin, z.names, z.records))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let port = addr.port().to_string();
    let (seconds_s, clients_s, qps_s, out_s) = (
        seconds.to_string(),
        clients.to_string(),
        max_qps.to_string(),
        outstanding.to_string(),
    );
    let args = vec![
        "-s",
        "127.0.0.1",
        "-p",
        &port,
        "-d",
        qpath.to_str().unwrap(),
        "-l",
        &seconds_s,
        "-c",
        &clients_s,
        "-Q",
        &qps_s,
        "-q",
        &out_s,
    ];
    let cpu_s = client_cpu.to_string();
    let mut cmd = if client_cpu < cpus && client_cpu != server_cpu {
        let mut c = Command::new("taskset");
        c.args(["-c", &cpu_s, "dnsperf"]);
        c
    } else {
        Command::new("dnsperf")
    };
    eprintln!(
        "dnsperf {} (client CPU: {})",
        args.join(" "),
        if client_cpu < cpus && client_cpu != server_cpu {
            cpu_s.clone()
        } else {
            "any".into()
        }
    );
    let cpu_before = thread_cpu_seconds(server_tid);
    let started = std::time::Instant::now();
    let out = cmd
        .args(&args)
        .output()
        .expect("run dnsperf (apt-get install dnsperf)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    if !out.stderr.is_empty() {
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    }
    assert!(out.status.success(), "dnsperf failed: {}", out.status);

    let wall = started.elapsed().as_secs_f64();
    let cpu = thread_cpu_seconds(server_tid) - cpu_before;
    let c = handle.counters();
    println!(
        "server thread CPU: {cpu:.2} s over {wall:.2} s wall ({:.0}% of one core); \
         {:.0} queries per server CPU-second",
        100.0 * cpu / wall,
        (c.udp_queries + c.tcp_queries) as f64 / cpu.max(0.01)
    );
    println!(
        "server counters: udp {} tcp {} noerror {} nodata {} nxdomain {} refused {} formerr {} \
         servfail {} truncated {} dropped {} panics {}",
        c.udp_queries,
        c.tcp_queries,
        c.noerror,
        c.nodata,
        c.nxdomain,
        c.refused,
        c.formerr,
        c.servfail,
        c.truncated,
        c.dropped,
        c.panics
    );
    assert_eq!((c.refused, c.formerr, c.servfail, c.panics), (0, 0, 0, 0));
    assert!(c.nxdomain > 0 && c.nodata > 0 && c.noerror > 0);
}
