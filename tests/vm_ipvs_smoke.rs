//! The IPVS client against a real kernel, cross-checked with the real `ipvsadm`.
//!
//! This machine's kernel has no IPVS, so the single test re-runs its own binary under
//! `../shared/vm/vm-run` (a stock Debian kernel in qemu, one boot for everything) unless it
//! is already inside that VM (`VM_RUN_GUEST=1`). Needs root (skips otherwise, or fails with
//! `SDN_TUNNEL_REQUIRE_PRIVILEGED=1`). `SDN_TUNNEL_VM_RUN` overrides the vm-run path.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use sdn_tunnel::proxy::ipvs::*;

const VM_RUN_ENV: &str = "SDN_TUNNEL_VM_RUN";

#[test]
fn vm_ipvs_smoke() {
    if !common::require_root() {
        return;
    }
    if std::env::var_os("VM_RUN_GUEST").is_none() {
        run_in_vm();
        return;
    }
    in_guest();
}

/// `$SDN_TUNNEL_VM_RUN`, else `../shared/vm/vm-run` next to the checkout, else the
/// workplace's fixed location (CI may check out elsewhere).
fn vm_run_path() -> PathBuf {
    if let Some(p) = std::env::var_os(VM_RUN_ENV) {
        return PathBuf::from(p);
    }
    let beside = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/vm/vm-run");
    let fixed = PathBuf::from("/work/shared/vm/vm-run");
    if !beside.exists() && fixed.exists() {
        fixed
    } else {
        beside
    }
}

/// Runs this very test binary (only this test) inside the VM.
fn run_in_vm() {
    let vm_run = vm_run_path();
    if !vm_run.exists() {
        common::skip_or_fail(&format!(
            "needs {} (or {VM_RUN_ENV}) to boot a kernel with IPVS",
            vm_run.display()
        ));
        return;
    }
    let exe = std::env::current_exe().expect("current_exe");
    let started = Instant::now();
    let status = Command::new(&vm_run)
        .args(["--timeout", "600", "--"])
        .arg(&exe)
        .args([
            "--exact",
            "vm_ipvs_smoke",
            "--nocapture",
            "--test-threads=1",
        ])
        .status()
        .unwrap_or_else(|e| panic!("run {}: {e}", vm_run.display()));
    eprintln!("vm-run finished in {:?}", started.elapsed());
    assert!(
        status.success(),
        "the test inside the VM failed ({status}); its output is above"
    );
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Strips what the kernel owns (counters), keeping what we configured.
fn config_of_service(s: &Service) -> Service {
    Service {
        stats: None,
        ..s.clone()
    }
}

fn config_of_dest(d: &Destination) -> Destination {
    Destination {
        active_conns: 0,
        inactive_conns: 0,
        persist_conns: 0,
        stats: None,
        ..d.clone()
    }
}

/// `ipvsadm -Ln` style output as {service line: {destination lines}}, whitespace
/// normalized, header lines (version, column titles) dropped.
fn parse_listing(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut current = None;
    for line in text.lines() {
        let norm = line.split_whitespace().collect::<Vec<_>>().join(" ");
        if norm.is_empty()
            || norm.starts_with("IP Virtual Server")
            || norm.starts_with("Prot ")
            || norm.starts_with("-> RemoteAddress")
        {
            continue;
        }
        if norm.starts_with("->") {
            let svc: &String = current.as_ref().expect("destination before any service");
            out.get_mut(svc).unwrap().insert(norm);
        } else {
            out.entry(norm.clone()).or_default();
            current = Some(norm);
        }
    }
    out
}

fn ipvsadm(args: &[&str]) -> String {
    let out = common::run("ipvsadm", args);
    let lines = out.lines().count();
    if lines <= 20 {
        eprintln!("$ ipvsadm {}\n{out}", args.join(" "));
    } else {
        eprintln!("$ ipvsadm {}  ({lines} lines)", args.join(" "));
    }
    out
}

fn in_guest() {
    common::run("modprobe", &["ip_vs"]);
    let mut ipvs = IpvsClient::new().expect("IpvsClient::new in the VM");
    ipvs.flush().expect("flush");
    assert!(ipvs.services().unwrap().is_empty());

    // GET_INFO agrees with ipvsadm's first line.
    let info = ipvs.info().unwrap();
    assert_eq!(info.version_triple(), (1, 2, 1), "{info:?}");
    let listing = ipvsadm(&["-Ln"]);
    assert_eq!(listing.lines().next().unwrap(), info.to_string());

    // 2 services and 3 destinations in one pipelined batch.
    let tcp = Service::new(ServiceKey::tcp(sa("10.96.0.10:80")), Scheduler::RoundRobin);
    let mut udp6 = Service::new(
        ServiceKey::udp(sa("[fd00:96::10]:53")),
        Scheduler::WeightedRoundRobin,
    )
    .with_persistence(300);
    let d1 = Destination::new(sa("10.132.3.7:8080"), 1);
    let mut d2 = Destination::new(sa("10.132.4.8:8080"), 2);
    let d3 = Destination::new(sa("[fd00:132::7]:5353"), 1);
    let results = ipvs.apply(&[
        Request::AddService(tcp.clone()),
        Request::AddService(udp6.clone()),
        Request::AddDestination(tcp.key, d1.clone()),
        Request::AddDestination(tcp.key, d2.clone()),
        Request::AddDestination(udp6.key, d3.clone()),
    ]);
    for r in &results {
        assert!(r.is_ok(), "{r:?}");
    }

    // Real kernel errors, with their meaning.
    let e = ipvs.add_service(&tcp).unwrap_err();
    eprintln!("expected error: {e}");
    assert!(e.is_already_exists(), "{e}");
    let missing = ServiceKey::tcp(sa("10.96.0.99:80"));
    let e = ipvs.delete_service(&missing).unwrap_err();
    eprintln!("expected error: {e}");
    assert!(e.is_not_found(), "{e}");
    assert_eq!(e.errno(), Some(libc::ESRCH));
    let e = ipvs.add_destination(&missing, &d1).unwrap_err();
    assert_eq!(e.errno(), Some(libc::ESRCH), "{e}");
    let e = ipvs
        .delete_destination(&tcp, sa("10.132.9.9:1"))
        .unwrap_err();
    eprintln!("expected error: {e}");
    assert!(e.is_not_found(), "{e}");
    assert_eq!(e.errno(), Some(libc::ENOENT));
    let e = ipvs
        .add_service(&Service::new(missing, Scheduler::Other("nosuch".into())))
        .unwrap_err();
    eprintln!("expected error: {e}");
    assert_eq!(e.errno(), Some(libc::ENOENT), "{e}");
    assert!(ipvs.service(&missing).unwrap_err().is_not_found());

    // Updates.
    d2.weight = 3;
    ipvs.update_destination(&tcp, &d2).unwrap();
    udp6.timeout = 600;
    ipvs.update_service(&udp6).unwrap();

    // One connection attempt through the TCP service, so counters are not all zero: the
    // local SYN is scheduled and NATed, then dropped for want of a route.
    common::run("ip", &["link", "set", "lo", "up"]);
    common::run("ip", &["addr", "add", "10.96.0.10/32", "dev", "lo"]);
    let attempt = TcpStream::connect_timeout(&sa("10.96.0.10:80"), Duration::from_secs(2));
    eprintln!("connection attempt through IPVS: {attempt:?}");

    // Our own view: exactly what we configured, plus the kernel's counters. The kernel folds
    // its per-CPU counters into the reported stats every 2 s, so wait for the estimator.
    let deadline = Instant::now() + Duration::from_secs(15);
    let services = loop {
        let mut services = ipvs.services().unwrap();
        services.sort_by_key(|s| s.key);
        let conns = services
            .first()
            .and_then(|s| s.stats)
            .map_or(0, |s| s.conns);
        if conns > 0 || Instant::now() > deadline {
            break services;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let got: Vec<Service> = services.iter().map(config_of_service).collect();
    assert_eq!(got, vec![tcp.clone(), udp6.clone()]);
    assert_eq!(ipvs.service(&tcp.key).unwrap().key, tcp.key);
    let tcp_stats = services[0].stats.expect("service stats");
    assert_eq!(tcp_stats.conns, 1, "{tcp_stats:?}");
    let mut tcp_dests = ipvs.destinations(&tcp).unwrap();
    tcp_dests.sort_by_key(|d| d.addr);
    let got: Vec<Destination> = tcp_dests.iter().map(config_of_dest).collect();
    assert_eq!(got, vec![d1.clone(), d2.clone()]);
    assert_eq!(
        tcp_dests
            .iter()
            .map(|d| d.stats.unwrap().conns)
            .sum::<u64>(),
        1
    );
    let udp_dests = ipvs.destinations(&udp6).unwrap();
    let got: Vec<Destination> = udp_dests.iter().map(config_of_dest).collect();
    assert_eq!(got, vec![d3.clone()]);

    // ipvsadm -Ln lists exactly that.
    let mut want: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    want.insert(
        "TCP 10.96.0.10:80 rr".into(),
        tcp_dests
            .iter()
            .map(|d| {
                format!(
                    "-> {} Masq {} {} {}",
                    d.addr, d.weight, d.active_conns, d.inactive_conns
                )
            })
            .collect(),
    );
    want.insert(
        "UDP [fd00:96::10]:53 wrr persistent 600".into(),
        ["-> [fd00:132::7]:5353 Masq 1 0 0".to_string()].into(),
    );
    assert_eq!(parse_listing(&ipvsadm(&["-Ln"])), want);

    // ipvsadm -Ln --stats shows the same counters as our decoder.
    let line = |key: String, s: &Stats| {
        format!(
            "{key} {} {} {} {} {}",
            s.conns, s.inpkts, s.outpkts, s.inbytes, s.outbytes
        )
    };
    let mut want: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for svc in &services {
        let key = match svc.key {
            ServiceKey::Addr { protocol, addr } => format!("{protocol} {addr}"),
            ServiceKey::Fwmark { .. } => unreachable!(),
        };
        let dests = ipvs.destinations(svc).unwrap();
        want.insert(
            line(key, &svc.stats.unwrap()),
            dests
                .iter()
                .map(|d| line(format!("-> {}", d.addr), &d.stats.unwrap()))
                .collect(),
        );
    }
    assert_eq!(parse_listing(&ipvsadm(&["-Ln", "--stats"])), want);

    // The async face, from a tokio runtime.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = AsyncIpvsClient::new().await.unwrap();
        assert_eq!(client.services().await.unwrap().len(), 2);
        assert_eq!(client.destinations(tcp.key).await.unwrap().len(), 2);
        assert_eq!(client.info().await.unwrap(), info);
    });

    // Delete everything we added, in one batch; IPVS is empty again.
    let results = ipvs.apply(&[
        Request::DeleteDestination(tcp.key, d1.addr),
        Request::DeleteDestination(tcp.key, d2.addr),
        Request::DeleteDestination(udp6.key, d3.addr),
        Request::DeleteService(tcp.key),
        Request::DeleteService(udp6.key),
    ]);
    for r in &results {
        assert!(r.is_ok(), "{r:?}");
    }
    assert!(ipvs.services().unwrap().is_empty());
    assert!(parse_listing(&ipvsadm(&["-Ln"])).is_empty());

    // Batch scale: 400 services x 2 destinations (1,200 requests, pipelined), dumped back
    // (many datagrams), then deleted.
    let keys: Vec<ServiceKey> = (0..400u32)
        .map(|i| {
            ServiceKey::tcp(SocketAddr::from((
                [10, 97, (i / 200) as u8, (i % 200) as u8 + 1],
                443,
            )))
        })
        .collect();
    let mut batch = Vec::new();
    for k in &keys {
        batch.push(Request::AddService(Service::new(*k, Scheduler::RoundRobin)));
        for j in 1..=2u8 {
            batch.push(Request::AddDestination(
                *k,
                Destination::new(SocketAddr::from(([10, 133, j, 1], 8443)), 1),
            ));
        }
    }
    let started = Instant::now();
    let results = ipvs.apply(&batch);
    eprintln!(
        "applied {} requests in {:?}",
        batch.len(),
        started.elapsed()
    );
    assert!(results.iter().all(|r| r.is_ok()));
    let all = ipvs.services().unwrap();
    assert_eq!(all.len(), keys.len());
    assert_eq!(ipvs.destinations(&keys[399]).unwrap().len(), 2);
    assert_eq!(parse_listing(&ipvsadm(&["-Ln"])).len(), keys.len());
    let deletes: Vec<Request> = keys.iter().map(|k| Request::DeleteService(*k)).collect();
    assert!(ipvs.apply(&deletes).iter().all(|r| r.is_ok()));
    assert!(ipvs.services().unwrap().is_empty());

    // Flush and timeouts.
    ipvs.add_service(&tcp).unwrap();
    ipvs.add_destination(&tcp, &d1).unwrap();
    ipvs.flush().unwrap();
    assert!(ipvs.services().unwrap().is_empty());
    assert!(parse_listing(&ipvsadm(&["-Ln"])).is_empty());
    let before = ipvs.timeouts().unwrap();
    ipvs.set_timeouts(Timeouts {
        tcp: 1000,
        tcp_fin: 0,
        udp: 200,
    })
    .unwrap();
    let after = ipvs.timeouts().unwrap();
    assert_eq!(
        after,
        Timeouts {
            tcp: 1000,
            tcp_fin: before.tcp_fin,
            udp: 200
        }
    );
    let text = ipvsadm(&["-Ln", "--timeout"]);
    assert_eq!(
        text.split_whitespace().collect::<Vec<_>>().join(" "),
        format!("Timeout (tcp tcpfin udp): 1000 {} 200", before.tcp_fin)
    );
}
