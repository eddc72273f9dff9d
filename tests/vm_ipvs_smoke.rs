//! The IPVS client against a real kernel, cross-checked with the real `ipvsadm`.
//!
//! This machine's kernel has no IPVS, so the single test re-runs its own binary under
//! `../shared/vm/vm-run` (a stock Debian kernel in qemu, one boot for everything) unless it
//! is already inside that VM (`VM_RUN_GUEST=1`). Needs root (skips otherwise, or fails with
//! `SDN_TUNNEL_REQUIRE_PRIVILEGED=1`). `SDN_TUNNEL_VM_RUN` overrides the vm-run path.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use sdn_tunnel::proxy::ipvs::*;
use sdn_tunnel::proxy::ipvs_text::{render_annotated, render_list, render_stats};

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

    render_matches_ipvsadm(&mut ipvs);
}

type Table = Vec<(Service, Vec<Destination>)>;
/// `ipvs_text::render_list` or `render_stats`.
type Render = fn(&Info, &[(Service, Vec<Destination>)]) -> String;

/// Our view of the whole table, in the shape the `ipvs_text` renderers take.
fn snapshot(ipvs: &mut IpvsClient) -> (Info, Table) {
    let info = ipvs.info().unwrap();
    let services = ipvs.services().unwrap();
    let table = services
        .into_iter()
        .map(|s| {
            let d = ipvs.destinations(&s).unwrap();
            (s, d)
        })
        .collect();
    (info, table)
}

/// Panics unless `ours == theirs` byte for byte, showing every line (Debug-quoted, so
/// trailing blanks are visible) and marking the differing ones.
fn assert_text_eq(ours: &str, theirs: &str, what: &str) {
    if ours == theirs {
        return;
    }
    let (a, b): (Vec<&str>, Vec<&str>) = (ours.split('\n').collect(), theirs.split('\n').collect());
    for i in 0..a.len().max(b.len()) {
        let (x, y) = (a.get(i).copied(), b.get(i).copied());
        let mark = if x == y { ' ' } else { '!' };
        eprintln!("{mark} ours:    {x:?}\n{mark} ipvsadm: {y:?}");
    }
    panic!("{what}: our rendering differs from ipvsadm's (lines marked ! above)");
}

/// Compares `render` of our snapshot with `ipvsadm <args>`, byte for byte, and returns the
/// snapshot it checked plus ipvsadm's text. Counters change only at the kernel's 2 s
/// estimator tick (and connection counts when entries expire), so ipvsadm's read is taken
/// between two of ours: only when both of ours are identical must ipvsadm's agree; otherwise
/// something moved mid-way and the round is repeated.
fn assert_same_as_ipvsadm(
    ipvs: &mut IpvsClient,
    args: &[&str],
    render: Render,
) -> (Info, Table, String) {
    for round in 1..=15 {
        let before = snapshot(ipvs);
        let theirs = ipvsadm(args);
        let after = snapshot(ipvs);
        if before != after {
            eprintln!(
                "ipvsadm {}: the kernel's view moved during round {round}",
                args.join(" ")
            );
            std::thread::sleep(Duration::from_millis(700));
            continue;
        }
        let ours = render(&before.0, &before.1);
        assert_text_eq(&ours, &theirs, &format!("ipvsadm {}", args.join(" ")));
        eprintln!(
            "ipvsadm {}: identical to ours ({} bytes)",
            args.join(" "),
            ours.len()
        );
        return (before.0, before.1, theirs);
    }
    panic!(
        "ipvsadm {}: the kernel's view never held still",
        args.join(" ")
    );
}

/// Adds a service (and its destinations) that needs an optional kernel feature; reports and
/// skips it when the kernel says no.
fn add_optional(ipvs: &mut IpvsClient, what: &str, svc: &Service, dests: &[Destination]) {
    match ipvs.add_service(svc) {
        Ok(()) => {
            for d in dests {
                ipvs.add_destination(svc, d).unwrap();
            }
        }
        Err(e) => eprintln!("NOTE: {what} not covered, the kernel refused it: {e}"),
    }
}

/// `ipvs_text` renders exactly what the real `ipvsadm -Ln` and `ipvsadm -Ln --stats` print,
/// over services that exercise its formats: rr and wrr with weight-0 destinations, v6 with
/// persistence and a mask, scheduler flags and one-packet scheduling, fwmark v4 and v6,
/// SCTP, a persistence engine, IPv6 names longer than the columns, IPv4-compatible IPv6
/// (`::1.2.3.4`), and addresses that libipvs' wrapping comparators sort out of numeric order.
fn render_matches_ipvsadm(ipvs: &mut IpvsClient) {
    ipvs.flush().unwrap();
    assert_same_as_ipvsadm(ipvs, &["-Ln"], render_list);
    assert_same_as_ipvsadm(ipvs, &["-Ln", "--stats"], render_stats);

    let web = Service::new(ServiceKey::tcp(sa("172.31.0.10:80")), Scheduler::RoundRobin);
    let api = Service::new(
        ServiceKey::tcp(sa("172.31.0.11:443")),
        Scheduler::WeightedRoundRobin,
    );
    let dns6 = Service {
        netmask: 64,
        ..Service::new(
            ServiceKey::udp(sa("[fd00:31::10]:53")),
            Scheduler::WeightedRoundRobin,
        )
        .with_persistence(600)
    };
    let sticky = Service {
        flags: ServiceFlags::PERSISTENT
            | ServiceFlags::SH_FALLBACK
            | ServiceFlags::SH_PORT
            | ServiceFlags::ONE_PACKET,
        timeout: 30,
        netmask: 0xffff_ff00,
        ..Service::new(
            ServiceKey::udp(sa("172.31.0.12:53")),
            Scheduler::SourceHashing,
        )
    };
    let wrapped = Service::new(ServiceKey::tcp(sa("200.0.0.1:80")), Scheduler::RoundRobin);
    let long6 = Service::new(
        ServiceKey::udp(sa("[2001:db8:1234:5678:9abc:def0:1234:5678]:65535")),
        Scheduler::WeightedLeastConnection,
    )
    .with_persistence(300);
    let fwm4 = Service::new(
        ServiceKey::Fwmark {
            ipv6: false,
            mark: 7,
        },
        Scheduler::RoundRobin,
    );
    let fwm6 = Service::new(
        ServiceKey::Fwmark {
            ipv6: true,
            mark: 8,
        },
        Scheduler::LeastConnection,
    );
    let d = |a: &str, w: u32| Destination::new(sa(a), w);
    let mut batch = Vec::new();
    for (svc, dests) in [
        (
            &web,
            vec![
                d("10.132.0.7:8080", 1),
                d("10.132.0.5:8080", 1),
                d("10.132.0.6:8080", 0),
            ],
        ),
        (
            &api,
            vec![
                d("10.132.1.5:8443", 3),
                d("200.0.0.9:8443", 1),
                d("10.132.1.6:8443", 0),
            ],
        ),
        (
            &dns6,
            vec![
                d("[fd00:32::7]:5353", 2),
                d("[::1.2.3.4]:53", 1),
                d("[2001:db8:1234:5678:9abc:def0:1234:5679]:65535", 1),
            ],
        ),
        (&sticky, vec![d("10.132.2.5:53", 1), d("10.132.2.6:53", 1)]),
        (&wrapped, vec![]),
        (&long6, vec![d("[fd00:32::8]:53", 1)]),
        (
            &fwm4,
            vec![Destination {
                forward: ForwardMethod::Route,
                ..d("10.1.1.1:0", 1)
            }],
        ),
        (&fwm6, vec![]),
    ] {
        batch.push(Request::AddService(svc.clone()));
        for dest in dests {
            batch.push(Request::AddDestination(svc.key, dest));
        }
    }
    for r in ipvs.apply(&batch) {
        assert!(r.is_ok(), "{r:?}");
    }
    let sctp = Service::new(
        ServiceKey::Addr {
            protocol: Protocol::Sctp,
            addr: sa("172.31.0.13:3868"),
        },
        Scheduler::RoundRobin,
    );
    add_optional(ipvs, "SCTP", &sctp, &[d("10.132.3.5:3868", 1)]);
    let sip = Service {
        pe_name: Some("sip".into()),
        ..Service::new(
            ServiceKey::udp(sa("172.31.0.14:5060")),
            Scheduler::RoundRobin,
        )
        .with_persistence(60)
    };
    add_optional(
        ipvs,
        "the sip persistence engine",
        &sip,
        &[d("10.132.4.5:5060", 1)],
    );

    // Some traffic, so the counters are not all zero: a TCP connection attempt to `web` (its
    // SYNs are scheduled and NATed, then dropped for want of a route) and UDP datagrams to
    // `dns6` and `sticky`. Nothing is sent during the comparisons.
    common::run("ip", &["addr", "add", "172.31.0.10/32", "dev", "lo"]);
    common::run("ip", &["addr", "add", "172.31.0.12/32", "dev", "lo"]);
    let attempt = TcpStream::connect_timeout(&sa("172.31.0.10:80"), Duration::from_secs(1));
    eprintln!("connection attempt through IPVS: {attempt:?}");
    let udp4 = UdpSocket::bind("0.0.0.0:0").unwrap();
    for _ in 0..3 {
        let _ = udp4.send_to(b"ping", "172.31.0.12:53");
    }
    let v6 = std::process::Command::new("ip")
        .args(["-6", "addr", "add", "fd00:31::10/128", "dev", "lo", "nodad"])
        .status();
    match (v6, UdpSocket::bind("[::]:0")) {
        (Ok(st), Ok(udp6)) if st.success() => {
            for _ in 0..5 {
                let _ = udp6.send_to(&[0u8; 100], "[fd00:31::10]:53");
            }
        }
        (st, sock) => eprintln!("NOTE: no IPv6 traffic ({st:?}, {:?})", sock.err()),
    }
    drop(attempt);
    // Wait for the estimator to fold the per-CPU counters in.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let conns = ipvs.service(&web.key).unwrap().stats.map_or(0, |s| s.conns);
        if conns > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "web's counters never moved");
        std::thread::sleep(Duration::from_millis(200));
    }

    let (_, _, list) = assert_same_as_ipvsadm(ipvs, &["-Ln"], render_list);
    let (_, table, stats) = assert_same_as_ipvsadm(ipvs, &["-Ln", "--stats"], render_stats);
    eprintln!("$ ipvsadm -Ln\n{list}\n$ ipvsadm -Ln --stats\n{stats}");
    // The stats comparison covered real, non-zero counters.
    let web_stats = table
        .iter()
        .find(|(s, _)| s.key == web.key)
        .and_then(|(s, _)| s.stats)
        .expect("web's stats");
    assert!(
        web_stats.conns >= 1 && web_stats.inpkts >= 1,
        "{web_stats:?}"
    );
    let web_line = stats
        .lines()
        .find(|l| l.starts_with("TCP  172.31.0.10:80 "))
        .expect("web in ipvsadm --stats");
    assert!(
        web_line.split_whitespace().skip(2).any(|f| f != "0"),
        "{web_line}"
    );

    // The annotated form: our services named, others (here `api`) plain; without the
    // annotations it is ipvsadm's text.
    let labels: BTreeMap<ServiceKey, String> = [
        (web.key, "west/default/web:http"),
        (dns6.key, "east/kube-system/kube-dns:dns"),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_string()))
    .collect();
    let (info2, table2, list) = assert_same_as_ipvsadm(ipvs, &["-Ln"], render_list);
    let annotated = render_annotated(&info2, &table2, &|k| labels.get(k).cloned());
    eprintln!("annotated:\n{annotated}");
    assert!(
        annotated.contains("TCP  172.31.0.10:80 rr                    # west/default/web:http\n")
    );
    assert!(annotated.contains("\nTCP  172.31.0.11:443 wrr\n"));
    let stripped: String = annotated
        .lines()
        .map(|l| match l.find("  # ") {
            Some(i) => format!("{}\n", l[..i].trim_end()),
            None => format!("{l}\n"),
        })
        .collect();
    assert_text_eq(&stripped, &list, "annotated minus annotations");

    ipvs.flush().unwrap();
}
