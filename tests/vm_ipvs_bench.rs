//! Benchmark (not run by default: `#[ignore]`): programming N services x D destinations into
//! kernel IPVS with our backend, against `ipvsadm -R` fed the same rules, in the same VM boot;
//! then the latency of one endpoint change with everything programmed. `bash bench/ipvs.sh`
//! runs it; results and caveats are in docs/performance.md.
//!
//! This machine's kernel has no IPVS, so the test re-runs its own binary inside
//! `../shared/vm/vm-run` (stock Debian kernel under TCG: slow, but every number is a ratio
//! against a reference measured in the same boot). Before that, on the host, it times the pure
//! diff of one change at full scale natively (the CPU cost of the diff without emulation).
//!
//! Knobs (environment, passed into the VM): `IPVS_BENCH_SERVICES` (10000),
//! `IPVS_BENCH_DESTS` (10), `IPVS_BENCH_ROUNDS` (3), `IPVS_BENCH_CHANGES` (200),
//! `IPVS_BENCH_VM_TIMEOUT` (seconds, 5400), `SDN_TUNNEL_VM_RUN` (path of vm-run).

mod common;

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ipnetwork::IpNetwork;
use sdn_tunnel::proxy::ipvs::{ForwardMethod, IpvsClient, Request, Scheduler, ServiceKey};
use sdn_tunnel::proxy::ipvs_backend::IpvsBackend;
use sdn_tunnel::proxy::ipvs_plan::{self, DrainSet, Held};
use sdn_tunnel::proxy::model::{Backend, BackendState, VirtualService};
use sdn_tunnel::proxy::vip_device;
use sdn_tunnel::source::Protocol;

const TEST: &str = "vm_ipvs_bench";
const DEVICE: &str = "sdnbench0";
const VIP_CIDR: &str = "172.31.0.0/16";
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
const RULES: &str = "/tmp/ipvs-bench.rules";
/// Everything the benchmark reports also goes here (the target dir is shared with the VM),
/// so a complete copy survives even if the guest's output stream loses lines.
const REPORT: &str = concat!(env!("CARGO_TARGET_TMPDIR"), "/vm_ipvs_bench.txt");

/// `println!` that also appends the line to [`REPORT`].
macro_rules! report {
    ($($t:tt)*) => {{
        let line = format!($($t)*);
        println!("{line}");
        append_report(&line);
    }};
}

fn append_report(line: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(REPORT)
        .unwrap_or_else(|e| panic!("open {REPORT}: {e}"));
    writeln!(f, "{line}").unwrap();
}

fn knob(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Knobs {
    services: usize,
    dests: usize,
    rounds: usize,
    changes: usize,
}

fn knobs() -> Knobs {
    let k = Knobs {
        services: knob("IPVS_BENCH_SERVICES", 10_000),
        dests: knob("IPVS_BENCH_DESTS", 10),
        rounds: knob("IPVS_BENCH_ROUNDS", 3).max(1),
        changes: knob("IPVS_BENCH_CHANGES", 200).max(1),
    };
    assert!(k.services <= 65_000, "VIPs must fit 172.31.0.0/16");
    assert!(
        k.services * k.dests < 250_000,
        "backends must fit 10.132.0.0/14"
    );
    k
}

#[test]
#[ignore = "benchmark: minutes under TCG; run with bench/ipvs.sh"]
fn vm_ipvs_bench() {
    if !common::require_root() {
        return;
    }
    if std::env::var_os("VM_RUN_GUEST").is_none() {
        let _ = std::fs::remove_file(REPORT);
        host_diff_bench(&knobs());
        rerun_in_vm();
        if let Ok(text) = std::fs::read_to_string(REPORT) {
            println!("\n---- complete report ({REPORT}) ----\n{text}");
        }
        return;
    }
    in_guest(&knobs());
}

/// `common::in_vm_or_rerun` runs the test without `--ignored`, which would skip this
/// `#[ignore]` test inside the VM and pass vacuously; so this benchmark launches vm-run itself
/// (and with a longer timeout).
fn rerun_in_vm() {
    let vm_run = match std::env::var_os("SDN_TUNNEL_VM_RUN") {
        Some(p) => PathBuf::from(p),
        None => {
            let beside = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/vm/vm-run");
            let fixed = PathBuf::from("/work/shared/vm/vm-run");
            if !beside.exists() && fixed.exists() {
                fixed
            } else {
                beside
            }
        }
    };
    if !vm_run.exists() {
        common::skip_or_fail(&format!(
            "needs {} to boot a kernel with IPVS",
            vm_run.display()
        ));
        return;
    }
    let timeout = knob("IPVS_BENCH_VM_TIMEOUT", 5400).to_string();
    let exe = std::env::current_exe().expect("current_exe");
    let started = Instant::now();
    let status = Command::new(&vm_run)
        .args(["--timeout", &timeout, "--"])
        .arg(&exe)
        .args([
            "--exact",
            TEST,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .status()
        .unwrap_or_else(|e| panic!("run {}: {e}", vm_run.display()));
    eprintln!("vm-run finished in {:?}", started.elapsed());
    assert!(
        status.success(),
        "the benchmark inside the VM failed ({status}); its output is above"
    );
}

// ---------------------------------------------------------------------------------------------
// The workload

fn vip(i: usize) -> SocketAddr {
    let base = u32::from(Ipv4Addr::new(172, 31, 0, 0));
    SocketAddr::new(Ipv4Addr::from(base + 1 + i as u32).into(), 80)
}

/// Backend `n` (0-based, unique across services) in 10.132.0.0/14.
fn backend_addr(n: usize) -> SocketAddr {
    let base = u32::from(Ipv4Addr::new(10, 132, 0, 0));
    SocketAddr::new(Ipv4Addr::from(base + 1 + n as u32).into(), 8080)
}

fn backend(addr: SocketAddr) -> Backend {
    Backend {
        addr,
        node: Some("b1".into()),
        state: BackendState::Active,
    }
}

fn desired(k: &Knobs) -> Vec<VirtualService> {
    (0..k.services)
        .map(|i| VirtualService {
            remote: "west".into(),
            namespace: "bench".into(),
            name: format!("svc-{i}"),
            port_name: String::new(),
            vip: vip(i),
            protocol: Protocol::Tcp,
            affinity_timeout: None,
            backends: (0..k.dests)
                .map(|j| backend(backend_addr(i * k.dests + j)))
                .collect(),
        })
        .collect()
}

/// Change number `c`: in a service spread over the table, one backend is replaced by a new
/// one (a pod restarted elsewhere). New addresses come after all the initial ones.
fn change(desired: &mut [VirtualService], k: &Knobs, c: usize) {
    let i = (c * 7919 + 13) % desired.len();
    let vs = &mut desired[i];
    let j = c % vs.backends.len();
    vs.backends[j] = backend(backend_addr(k.services * k.dests + c));
    vs.backends.sort_by_key(|b| b.addr);
}

/// The `ipvsadm -R` input equivalent to `desired`.
fn rules(desired: &[VirtualService]) -> String {
    let mut s = String::with_capacity(desired.len() * (40 + 60 * 10));
    for vs in desired {
        s += &format!("-A -t {} -s rr\n", vs.vip);
        for b in &vs.backends {
            s += &format!("-a -t {} -r {} -m -w 1\n", vs.vip, b.addr);
        }
    }
    s
}

// ---------------------------------------------------------------------------------------------
// Statistics

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// (p50, p99, max) of `v`.
fn percentiles(v: &[Duration]) -> (Duration, Duration, Duration) {
    let mut s = v.to_vec();
    s.sort();
    let at = |q: f64| s[((q * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1];
    (at(0.50), at(0.99), *s.last().unwrap())
}

fn median(v: &[Duration]) -> Duration {
    let mut s = v.to_vec();
    s.sort();
    s[(s.len() - 1) / 2]
}

fn list(v: &[Duration]) -> String {
    v.iter()
        .map(|d| format!("{:.2}", secs(*d)))
        .collect::<Vec<_>>()
        .join(" / ")
}

fn print_latency(what: &str, v: &[Duration]) {
    let (p50, p99, max) = percentiles(v);
    report!(
        "  {what:<52} p50 {:>8.3} ms   p99 {:>8.3} ms   max {:>8.3} ms   (n={})",
        ms(p50),
        ms(p99),
        ms(max),
        v.len()
    );
}

// ---------------------------------------------------------------------------------------------
// Prototypes of the proposed fixes (see docs/performance.md), measured next to the real code

/// What the diff looks at in a virtual service (names and nodes are only labels).
fn same_desired(a: &VirtualService, b: &VirtualService) -> bool {
    a.vip == b.vip
        && a.protocol == b.protocol
        && a.affinity_timeout == b.affinity_timeout
        && a.backends.len() == b.backends.len()
        && a.backends
            .iter()
            .zip(&b.backends)
            .all(|(x, y)| x.addr == y.addr && x.state == y.state)
}

/// Proposed incremental sync: keep the desired state of the last successful sync, and run
/// the real `ipvs_plan::diff` only over the services that changed since then (plus those
/// with backends still draining); services that disappeared are deleted. Both lists are
/// sorted by (vip, protocol), as `model::virtual_services` returns them. A reload (restart,
/// periodic resync, failed request) would still run the full diff.
fn incremental_diff(
    last: &[VirtualService],
    desired: &[VirtualService],
    held: &HashMap<ServiceKey, Held>,
    draining: &mut DrainSet,
) -> Vec<Request> {
    let draining_keys: BTreeSet<ServiceKey> = draining.keys().map(|(k, _)| *k).collect();
    let mut changed: Vec<VirtualService> = Vec::new();
    let mut gone: Vec<ServiceKey> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < last.len() || j < desired.len() {
        let order = match (last.get(i), desired.get(j)) {
            (Some(a), Some(b)) => (a.vip, a.protocol).cmp(&(b.vip, b.protocol)),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        match order {
            std::cmp::Ordering::Less => {
                gone.push(ipvs_plan::key(&last[i]));
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                changed.push(desired[j].clone());
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                let b = &desired[j];
                if !same_desired(&last[i], b) || draining_keys.contains(&ipvs_plan::key(b)) {
                    changed.push(b.clone());
                }
                i += 1;
                j += 1;
            }
        }
    }
    let sub: HashMap<ServiceKey, Held> = changed
        .iter()
        .filter_map(|vs| {
            let k = ipvs_plan::key(vs);
            held.get(&k).map(|h| (k, h.clone()))
        })
        .collect();
    // `diff` forgets drains of services it is not shown: keep the others.
    let mut sub_draining: DrainSet = draining
        .iter()
        .filter(|((k, _), _)| sub.contains_key(k))
        .map(|(k, v)| (*k, *v))
        .collect();
    draining.retain(|(k, _), _| !sub.contains_key(k));
    let mut reqs = ipvs_plan::diff(
        &changed,
        &Scheduler::RoundRobin,
        &sub,
        &mut sub_draining,
        Instant::now(),
        DRAIN_TIMEOUT,
        &[],
    );
    draining.extend(sub_draining);
    for k in gone {
        draining.retain(|(dk, _), _| *dk != k);
        if held.contains_key(&k) {
            reqs.push(Request::DeleteService(k));
        }
    }
    reqs
}

/// Proposed VIP binding: the address adds issued concurrently over the one rtnetlink
/// connection (64 in flight) instead of one awaited request after the other.
async fn bind_vips_pipelined(handle: &rtnetlink::Handle, index: u32, vips: &BTreeSet<IpAddr>) {
    use futures::stream::{self, StreamExt, TryStreamExt};
    stream::iter(vips.iter().copied())
        .map(|ip| handle.address().add(index, ip, 32).execute())
        .buffer_unordered(64)
        .try_collect::<Vec<()>>()
        .await
        .expect("add VIPs");
}

// ---------------------------------------------------------------------------------------------
// Host: the pure diff natively

fn host_diff_bench(k: &Knobs) {
    let mut want = desired(k);
    let rr = Scheduler::RoundRobin;
    let mut held: HashMap<ServiceKey, Held> = HashMap::new();
    let mut draining = DrainSet::new();
    let t = Instant::now();
    let reqs = ipvs_plan::diff(
        &want,
        &rr,
        &held,
        &mut draining,
        Instant::now(),
        DRAIN_TIMEOUT,
        &[],
    );
    let full = t.elapsed();
    for r in &reqs {
        ipvs_plan::record(&mut held, r);
    }
    let t = Instant::now();
    let noop = ipvs_plan::diff(
        &want,
        &rr,
        &held,
        &mut draining,
        Instant::now(),
        DRAIN_TIMEOUT,
        &[],
    );
    let idle = t.elapsed();
    assert!(noop.is_empty());
    let mut last = want.clone();
    let (mut lat, mut inc_lat) = (Vec::new(), Vec::new());
    for c in 0..k.changes {
        change(&mut want, k, c);
        let mut full_draining = draining.clone();
        let t = Instant::now();
        let reqs = ipvs_plan::diff(
            &want,
            &rr,
            &held,
            &mut full_draining,
            Instant::now(),
            DRAIN_TIMEOUT,
            &[],
        );
        lat.push(t.elapsed());
        let t = Instant::now();
        let inc = incremental_diff(&last, &want, &held, &mut draining);
        inc_lat.push(t.elapsed());
        // The prototype asks for exactly what the real diff asks for.
        let text =
            |r: &[Request]| -> BTreeSet<String> { r.iter().map(|r| format!("{r:?}")).collect() };
        assert_eq!(text(&reqs), text(&inc), "change {c}");
        let keys =
            |d: &DrainSet| -> BTreeSet<String> { d.keys().map(|k| format!("{k:?}")).collect() };
        assert_eq!(keys(&full_draining), keys(&draining), "change {c}");
        // Add the new backend, quiesce the old one (and delete the one quiesced last time).
        assert!((2..=3).contains(&reqs.len()), "{reqs:?}");
        for r in &reqs {
            ipvs_plan::record(&mut held, r);
        }
        change(&mut last, k, c);
    }
    report!(
        "host (native, no emulation): {} services x {} destinations",
        k.services,
        k.dests
    );
    report!(
        "  pure diff from empty: {:.1} ms for {} requests; diff with nothing to do: {:.1} ms",
        ms(full),
        reqs.len(),
        ms(idle)
    );
    print_latency("pure diff of one endpoint change", &lat);
    print_latency("prototype: incremental diff of the same change", &inc_lat);
}

// ---------------------------------------------------------------------------------------------
// Guest
//
// Every timed step starts in a fresh network namespace, which is deleted afterwards, and the
// next step waits until the kernel has freed it. Emptying IPVS in place is no good here: the
// kernel keeps deleted destinations in a per-namespace trash list for up to three minutes,
// and every destination added meanwhile searches it linearly (`ip_vs_trash_get_dest`), which
// made a restore right after `ipvsadm -C` five times slower in this VM. Keeping the old
// namespaces is no good either: in 6.1 the service hash table (256 buckets) is shared by all
// namespaces, so their services would lengthen every later lookup.

fn sh(program: &str, args: &[&str]) -> String {
    common::run(program, args)
}

/// Runs `f` in a new network namespace (loopback up; IPVS refuses real servers in a namespace
/// without a local routing table), then deletes the namespace and waits until the kernel has
/// freed what it held.
fn in_fresh_netns<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    let before = percpu_kb();
    let ns = common::Netns::new("ipvsb");
    let v = ns.run_in(f);
    let full = percpu_kb();
    drop(ns);
    wait_freed(before, full);
    v
}

/// Per-CPU memory in use (kB). IPVS keeps per-CPU counters for every service and destination,
/// so this grows with the table and shrinks when it is freed.
fn percpu_kb() -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("Percpu:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("Percpu in /proc/meminfo")
}

/// After a namespace was deleted: waits until at least half of the per-CPU memory it took
/// (`before` -> `full`) is back (the kernel tears namespaces down asynchronously, and under
/// TCG that takes seconds), then until the figure has been steady for 2 s.
fn wait_freed(before: u64, full: u64) {
    let started = Instant::now();
    let limit = Duration::from_secs(300);
    if full > before + 512 {
        while percpu_kb() > before + (full - before) / 2 && started.elapsed() < limit {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let (mut last, mut same) = (percpu_kb(), 0);
    while same < 4 && started.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(500));
        let now = percpu_kb();
        same = if now == last { same + 1 } else { 0 };
        last = now;
    }
    if started.elapsed() >= limit {
        eprintln!("warning: the deleted namespace was not freed within {limit:?}");
    }
}

/// A tokio runtime for the calling thread's namespace (its threads are spawned from here).
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Our services and destinations in the calling thread's namespace, as `ipvsadm -Sn` lines
/// (read with our client: the kernel's /proc/net/ip_vs of 6.1 miscounts while another
/// namespace holds services).
fn kernel_rules() -> BTreeSet<String> {
    let mut client = IpvsClient::new().unwrap();
    let mut out = BTreeSet::new();
    for s in client.services().unwrap() {
        let ServiceKey::Addr { addr: vip, .. } = s.key else {
            panic!("unexpected service {}", s.key)
        };
        out.insert(format!("-A -t {vip} -s {}", s.scheduler.name()));
        for d in client.destinations(&s.key).unwrap() {
            assert_eq!(d.forward, ForwardMethod::Masquerade);
            out.insert(format!("-a -t {vip} -r {} -m -w {}", d.addr, d.weight));
        }
    }
    out
}

/// What `ipvsadm -Sn` (the reference tool's own reading) prints, as a set of lines.
fn ipvsadm_rules() -> BTreeSet<String> {
    sh("ipvsadm", &["-Sn"])
        .lines()
        .map(str::to_string)
        .collect()
}

fn expected_rules(want: &[VirtualService]) -> BTreeSet<String> {
    rules(want).lines().map(str::to_string).collect()
}

/// The kernel holds exactly `want`, every backend with weight 1.
fn check_programmed(want: &[VirtualService], what: &str) {
    let have = kernel_rules();
    let expect = expected_rules(want);
    if have != expect {
        let missing: Vec<_> = expect.difference(&have).take(3).collect();
        let extra: Vec<_> = have.difference(&expect).take(3).collect();
        panic!(
            "{what}: the kernel holds {} lines, expected {}; missing e.g. {missing:?}, extra e.g. {extra:?}",
            have.len(),
            expect.len()
        );
    }
}

fn vips_on_device() -> usize {
    match Command::new("ip")
        .args(["-4", "-o", "addr", "show", "dev", DEVICE])
        .output()
    {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).lines().count(),
        _ => 0,
    }
}

/// Our backend, from an empty kernel: returns (time of `sync`, time of `new`, the backend).
async fn ours_sync(k: &Knobs, want: &[VirtualService]) -> (Duration, Duration, IpvsBackend) {
    let handle = sdn_tunnel::link::connect().unwrap();
    let owned: Vec<IpNetwork> = vec![VIP_CIDR.parse().unwrap()];
    let t = Instant::now();
    let mut backend = IpvsBackend::new(handle, DEVICE, "rr", DRAIN_TIMEOUT, owned)
        .await
        .unwrap();
    let setup = t.elapsed();
    let t = Instant::now();
    let stats = backend.sync(want, &[]).await.unwrap();
    let took = t.elapsed();
    assert_eq!(stats.failed, 0, "{stats:?}");
    assert_eq!(stats.requests, k.services * (k.dests + 1), "{stats:?}");
    assert_eq!(stats.vips_added, k.services, "{stats:?}");
    check_programmed(want, "IpvsBackend::sync");
    assert_eq!(vips_on_device(), k.services);
    (took, setup, backend)
}

/// Our pure IPVS part: diff from empty, then the pipelined `apply`. Returns (diff, apply).
fn ours_pure(want: &[VirtualService]) -> (Duration, Duration) {
    let mut client = IpvsClient::new().unwrap();
    let t = Instant::now();
    let reqs = ipvs_plan::diff(
        want,
        &Scheduler::RoundRobin,
        &HashMap::new(),
        &mut DrainSet::new(),
        Instant::now(),
        DRAIN_TIMEOUT,
        &[],
    );
    let diff = t.elapsed();
    let t = Instant::now();
    let results = client.apply(&reqs);
    let apply = t.elapsed();
    let failed: Vec<_> = results.iter().filter(|r| r.is_err()).collect();
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        failed[0]
    );
    check_programmed(want, "diff + apply");
    (diff, apply)
}

/// `ipvsadm -R < rules`, the whole process (exec included).
fn ipvsadm_restore(want: &[VirtualService]) -> Duration {
    let file = std::fs::File::open(RULES).unwrap();
    let t = Instant::now();
    let out = Command::new("ipvsadm")
        .arg("-R")
        .stdin(file)
        .output()
        .expect("run ipvsadm -R");
    let took = t.elapsed();
    assert!(
        out.status.success(),
        "ipvsadm -R: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    check_programmed(want, "ipvsadm -R");
    took
}

/// Cost of starting ipvsadm with nothing to restore (exec, dynamic linking, libnl setup).
fn ipvsadm_start() -> Duration {
    let t = Instant::now();
    let st = Command::new("ipvsadm")
        .arg("-R")
        .stdin(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    t.elapsed()
}

fn in_guest(k: &Knobs) {
    let mut want = desired(k);
    std::fs::write(RULES, rules(&want)).unwrap();
    report!(
        "guest: {} services x {} destinations = {} IPVS requests ({} services + {} destinations), {} VIPs; kernel {}",
        k.services,
        k.dests,
        k.services * (k.dests + 1),
        k.services,
        k.services * k.dests,
        k.services,
        sh("uname", &["-r"]).trim()
    );

    let (mut sync, mut setup) = (Vec::new(), Vec::new());
    let (mut diff, mut apply, mut pure) = (Vec::new(), Vec::new(), Vec::new());
    let (mut restore, mut start) = (Vec::new(), Vec::new());
    for round in 1..=k.rounds {
        // Interleaved, so drift in the emulator hits all three alike.
        let (t, s) = in_fresh_netns(|| {
            runtime().block_on(async {
                let (t, s, _backend) = ours_sync(k, &want).await;
                (t, s)
            })
        });
        sync.push(t);
        setup.push(s);
        // Round 1 also checks with ipvsadm's own reading that both programmed the same.
        let check = round == 1;
        let ((d, a), ours_read) = in_fresh_netns(|| {
            let t = ours_pure(&want);
            (t, check.then(ipvsadm_rules))
        });
        diff.push(d);
        apply.push(a);
        pure.push(d + a);
        let ((st, t), theirs_read) = in_fresh_netns(|| {
            let t = (ipvsadm_start(), ipvsadm_restore(&want));
            (t, check.then(ipvsadm_rules))
        });
        start.push(st);
        restore.push(t);
        if check {
            let expect = Some(expected_rules(&want));
            assert!(ours_read == expect, "ipvsadm -Sn differs after our apply");
            assert!(
                theirs_read == expect,
                "ipvsadm -Sn differs after ipvsadm -R"
            );
        }
        report!(
            "round {round}: ours sync {:.2} s (diff {:.3} s + apply {:.2} s = {:.2} s pure IPVS), ipvsadm -R {:.2} s",
            secs(t_of(&sync, round)),
            secs(d),
            secs(a),
            secs(d + a),
            secs(t_of(&restore, round))
        );
    }

    // Where the rest of sync goes: binding the VIPs one awaited rtnetlink request each (and
    // the address dump that precedes it every time).
    let vips: BTreeSet<IpAddr> = want.iter().map(|v| v.vip.ip()).collect();
    let (vip_bind, vip_noop) = in_fresh_netns(|| {
        runtime().block_on(async {
            let handle = sdn_tunnel::link::connect().unwrap();
            let index = vip_device::ensure(&handle, DEVICE).await.unwrap();
            let owned: Vec<IpNetwork> = vec![VIP_CIDR.parse().unwrap()];
            let t = Instant::now();
            let (added, _) = vip_device::reconcile(&handle, index, &vips, &owned, &[])
                .await
                .unwrap();
            let bind = t.elapsed();
            assert_eq!(added, k.services);
            let mut noop = Vec::new();
            for _ in 0..20 {
                let t = Instant::now();
                let (a, r) = vip_device::reconcile(&handle, index, &vips, &owned, &[])
                    .await
                    .unwrap();
                noop.push(t.elapsed());
                assert_eq!((a, r), (0, 0));
            }
            (bind, noop)
        })
    });
    let vip_pipelined = in_fresh_netns(|| {
        runtime().block_on(async {
            let handle = sdn_tunnel::link::connect().unwrap();
            let index = vip_device::ensure(&handle, DEVICE).await.unwrap();
            let t = Instant::now();
            bind_vips_pipelined(&handle, index, &vips).await;
            let took = t.elapsed();
            assert_eq!(vips_on_device(), k.services);
            took
        })
    });

    let r = |ours: Duration, theirs: Duration| secs(ours) / secs(theirs);
    report!("");
    report!(
        "programming {} services x {} destinations from empty, each in a fresh netns (median of {} interleaved rounds; all rounds in s):",
        k.services,
        k.dests,
        k.rounds
    );
    report!(
        "  ipvsadm -R (whole process)                 {:>8.2} s   [{}]   of which process start {:.2} s",
        secs(median(&restore)),
        list(&restore),
        secs(median(&start))
    );
    report!(
        "  ours: pure IPVS (diff + pipelined apply)   {:>8.2} s   [{}]   ratio {:.2}x ipvsadm",
        secs(median(&pure)),
        list(&pure),
        r(median(&pure), median(&restore))
    );
    report!(
        "        of which diff                        {:>8.3} s   apply {:.2} s",
        secs(median(&diff)),
        secs(median(&apply))
    );
    report!(
        "  ours: IpvsBackend::sync (+ {} VIPs bound)  {:>8.2} s   [{}]   ratio {:.2}x ipvsadm",
        k.services,
        secs(median(&sync)),
        list(&sync),
        r(median(&sync), median(&restore))
    );
    report!(
        "        IpvsBackend::new (sysctls, device)   {:>8.3} s",
        secs(median(&setup))
    );
    report!(
        "  vip_device::reconcile alone: bind {} VIPs {:.2} s; nothing to do (address dump) p50 {:.1} ms",
        k.services,
        secs(vip_bind),
        ms(median(&vip_noop))
    );
    report!(
        "  prototype: bind {} VIPs with 64 rtnetlink requests in flight: {:.2} s",
        k.services,
        secs(vip_pipelined)
    );

    // One endpoint change with everything programmed: through IpvsBackend::sync, then the
    // same kind of change through its parts (diff alone, apply alone), then the prototype.
    in_fresh_netns(|| {
        runtime().block_on(changes(k, &mut want, &vip_noop));
    });
}

fn t_of(v: &[Duration], round: usize) -> Duration {
    v[round - 1]
}

async fn changes(k: &Knobs, want: &mut [VirtualService], vip_noop: &[Duration]) {
    let (first, _, mut backend) = ours_sync(k, want).await;
    let mut lat = Vec::with_capacity(k.changes);
    let mut reqs = 0;
    for c in 0..k.changes {
        change(want, k, c);
        let t = Instant::now();
        let st = backend.sync(want, &[]).await.unwrap();
        lat.push(t.elapsed());
        assert_eq!(st.failed, 0);
        reqs += st.requests;
        if c == 0 {
            // The kernel holds the new backend once sync returns.
            let vs = &want[13 % want.len()];
            let mut client = IpvsClient::new().unwrap();
            let dests = client.destinations(&ipvs_plan::key(vs)).unwrap();
            for b in &vs.backends {
                assert!(
                    dests.iter().any(|d| d.addr == b.addr && d.weight == 1),
                    "{} missing in {dests:?}",
                    b.addr
                );
            }
        }
    }
    // The last replaced backend drains with 0 connections: the next sync deletes it.
    let st = backend.sync(want, &[]).await.unwrap();
    assert_eq!(st.requests, 1, "{st:?}");
    check_programmed(want, "after the changes");
    drop(backend);

    // Restart adoption: re-read everything, as `IpvsBackend` does on start and resync.
    let t = Instant::now();
    let mut client = IpvsClient::new().unwrap();
    let mut held: HashMap<ServiceKey, Held> = HashMap::new();
    for s in client.services().unwrap() {
        let dests = client.destinations(&s.key).unwrap();
        held.insert(s.key, Held { service: s, dests });
    }
    let adopt = t.elapsed();

    let mut draining = DrainSet::new();
    let (mut d_lat, mut a_lat) = (Vec::new(), Vec::new());
    let (mut inc_lat, mut inc_apply) = (Vec::new(), Vec::new());
    let mut last = want.to_vec();
    for c in k.changes..3 * k.changes {
        let incremental = c >= 2 * k.changes;
        change(want, k, c);
        let t = Instant::now();
        let reqs: Vec<Request> = if incremental {
            incremental_diff(&last, want, &held, &mut draining)
        } else {
            ipvs_plan::diff(
                want,
                &Scheduler::RoundRobin,
                &held,
                &mut draining,
                Instant::now(),
                DRAIN_TIMEOUT,
                &[],
            )
        };
        let d = t.elapsed();
        assert!((2..=3).contains(&reqs.len()), "{reqs:?}");
        let t = Instant::now();
        for (req, res) in reqs.iter().zip(client.apply(&reqs)) {
            res.unwrap();
            ipvs_plan::record(&mut held, req);
        }
        let a = t.elapsed();
        if incremental {
            inc_lat.push(d);
            inc_apply.push(a);
        } else {
            d_lat.push(d);
            a_lat.push(a);
        }
        change(&mut last, k, c);
    }
    let end = ipvs_plan::diff(
        want,
        &Scheduler::RoundRobin,
        &held,
        &mut draining,
        Instant::now(),
        DRAIN_TIMEOUT,
        &[],
    );
    for (req, res) in end.iter().zip(client.apply(&end)) {
        res.unwrap();
        ipvs_plan::record(&mut held, req);
    }
    check_programmed(want, "after the incremental changes");

    report!(
        "  (a 4th IpvsBackend::sync from empty, before the changes: {:.2} s)",
        secs(first)
    );
    report!("");
    report!(
        "one endpoint change (one backend of one service replaced), {} services programmed, {} times:",
        k.services,
        k.changes
    );
    print_latency("IpvsBackend::sync, change to kernel updated", &lat);
    report!(
        "    ({:.1} IPVS requests per sync: add the new backend, quiesce the old, delete the one quiesced before)",
        reqs as f64 / k.changes as f64
    );
    print_latency("  parts: pure diff (in the VM)", &d_lat);
    print_latency("         pipelined apply of its 2-3 requests", &a_lat);
    print_latency("         VIP reconcile with nothing to do", vip_noop);
    print_latency("  prototype: incremental diff (in the VM)", &inc_lat);
    print_latency("           + its apply", &inc_apply);
    report!(
        "  re-reading {} services + their destinations from the kernel (restart adoption): {:.2} s",
        k.services,
        secs(adopt)
    );
}

#[test]
fn workload_is_consistent() {
    // Cheap checks of the generator itself (runs by default, no root, no VM).
    let k = Knobs {
        services: 300,
        dests: 3,
        rounds: 1,
        changes: 5,
    };
    let mut want = desired(&k);
    assert_eq!(want.len(), 300);
    assert_eq!(want[0].vip.to_string(), "172.31.0.1:80");
    assert_eq!(want[299].vip.to_string(), "172.31.1.44:80");
    assert_eq!(want[1].backends[0].addr.to_string(), "10.132.0.4:8080");
    let text = rules(&want[..1]);
    assert_eq!(
        text,
        "-A -t 172.31.0.1:80 -s rr\n\
         -a -t 172.31.0.1:80 -r 10.132.0.1:8080 -m -w 1\n\
         -a -t 172.31.0.1:80 -r 10.132.0.2:8080 -m -w 1\n\
         -a -t 172.31.0.1:80 -r 10.132.0.3:8080 -m -w 1\n"
    );
    let before: BTreeSet<_> = want
        .iter()
        .flat_map(|v| v.backends.iter().map(|b| b.addr))
        .collect();
    change(&mut want, &k, 0);
    let after: BTreeSet<_> = want
        .iter()
        .flat_map(|v| v.backends.iter().map(|b| b.addr))
        .collect();
    assert_eq!(before.difference(&after).count(), 1);
    assert_eq!(after.difference(&before).count(), 1);
    let (p50, p99, max) = percentiles(&[Duration::from_millis(1); 10]);
    assert_eq!(
        (p50, p99, max),
        (
            Duration::from_millis(1),
            Duration::from_millis(1),
            Duration::from_millis(1)
        )
    );
}
