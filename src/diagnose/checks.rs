//! The checks: pure functions from [`Facts`] to verdicts, each with what was found and, when
//! something is wrong, the fix. No I/O here; `gather.rs` collects the facts.

use super::facts::{ConfigFacts, Facts, KernelRoute, Toward};
use crate::cidr;
use crate::config::ProxyBackend;
use crate::status::ago;
use ipnetwork::IpNetwork;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// WireGuard's encapsulation overhead: outer IPv4 (20) + UDP (8) + WireGuard header (16) +
/// authentication tag (16); IPv6 has a 40-byte header instead.
pub const WG_OVERHEAD_V4: u32 = 60;
pub const WG_OVERHEAD_V6: u32 = 80;
/// 2024-01-01T00:00:00Z: a clock before this is certainly wrong (no RTC, no NTP yet).
const SANE_CLOCK_UNIX: u64 = 1_704_067_200;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Skip,
    Warn,
    Fail,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Skip => "SKIP",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Check {
    fn ok(name: &'static str, detail: impl Into<String>) -> Check {
        Check {
            name,
            status: Status::Ok,
            detail: detail.into(),
            hint: None,
        }
    }
    fn skip(name: &'static str, detail: impl Into<String>) -> Check {
        Check {
            name,
            status: Status::Skip,
            detail: detail.into(),
            hint: None,
        }
    }
    fn warn(name: &'static str, detail: impl Into<String>, hint: impl Into<String>) -> Check {
        Check {
            name,
            status: Status::Warn,
            detail: detail.into(),
            hint: Some(hint.into()),
        }
    }
    fn fail(name: &'static str, detail: impl Into<String>, hint: impl Into<String>) -> Check {
        Check {
            name,
            status: Status::Fail,
            detail: detail.into(),
            hint: Some(hint.into()),
        }
    }
}

/// Every check, in the order they are printed.
pub fn all(f: &Facts) -> Vec<Check> {
    let mut out = vec![
        agent(f),
        device(f),
        ip_forward(f),
        rp_filter(f),
        mtu(f),
        mss_clamp(f),
        nft_tables(f),
        ipvs(f),
        routes(f),
        cidr_overlaps(f),
    ];
    out.extend(remotes(f));
    out.push(clusterset(f));
    out.extend(peers(f));
    out.push(udp_port(f));
    out.push(http(f));
    out.push(clock(f));
    out
}

/// The endpoint the kubelet probes: no answer means restarts; 503 means not ready (the
/// other checks usually say why, the body says it too).
pub fn http(f: &Facts) -> Check {
    let Some(h) = &f.http else {
        return Check::skip("http", "http.enabled: false (no metrics, no HTTP probes)");
    };
    match &h.readyz {
        Ok((200, _)) => Check::ok("http", format!("{} answers 200 (ready)", h.url)),
        Ok((503, body)) => Check::warn(
            "http",
            format!(
                "{} answers 503, not ready: {}",
                h.url,
                body.replace('\n', "; ")
            ),
            "the pod is kept out of rollouts until this clears; the lines above say what is \
             missing (a remote's first sync waits at most http.readyTimeoutSeconds)",
        ),
        Ok((code, body)) => Check::fail(
            "http",
            format!("{} answers {code}: {body}", h.url),
            "something else holds http.listen: move it, or change http.listen and the probes",
        ),
        Err(e) => Check::fail(
            "http",
            format!("no answer from {}: {e}", h.url),
            "the kubelet's probes fail the same way and restart the agent: is it running, and \
             is http.listen the address the probes use?",
        ),
    }
}

pub fn agent(f: &Facts) -> Check {
    match &f.agent {
        Ok(a) => Check::ok(
            "agent",
            format!(
                "running: pid {}, cluster {}, node {}, started {}",
                a.pid,
                a.cluster,
                a.node,
                when(f.now_unix.saturating_sub(a.started_at_unix))
            ),
        ),
        Err(e) if e.contains("ermission denied") => Check::fail(
            "agent",
            format!("control socket not readable: {e}"),
            "run diagnose as root (or as the agent's user): the control socket is mode 0600",
        ),
        Err(e) => Check::fail(
            "agent",
            format!("not answering on its control socket: {e}"),
            "start the agent (the DaemonSet pod, or `sdn-tunnel agent --config FILE`) and read \
             its log; the checks that need its status are skipped",
        ),
    }
}

pub fn device(f: &Facts) -> Check {
    let dev = &f.config.device;
    let links = match &f.links {
        Ok(l) => l,
        Err(e) => return Check::fail("device", format!("list devices: {e}"), "run as root"),
    };
    match links.get(dev) {
        None => Check::fail(
            "device",
            format!("{dev} does not exist"),
            "the agent creates it at start; it stays (persistent) while the agent is stopped, \
             and only an uninstall or `sdn-tunnel cleanup` removes it: start the agent",
        ),
        Some(l) if !l.up => Check::fail(
            "device",
            format!("{dev} is down"),
            format!("ip link set {dev} up, or restart the agent"),
        ),
        Some(l) => Check::ok("device", format!("{dev} up, mtu {}", l.mtu)),
    }
}

pub fn ip_forward(f: &Facts) -> Check {
    let mut bad = Vec::new();
    let mut fixes = Vec::new();
    let mut consider = |name: &str, v: &Result<String, String>| match v {
        Ok(v) if v == "1" => {}
        Ok(v) => {
            bad.push(format!("{name} = {v}"));
            fixes.push(format!("sysctl -w {name}=1"));
        }
        Err(e) => bad.push(format!("{name}: {e}")),
    };
    consider("net.ipv4.ip_forward", &f.ip_forward_v4);
    if let Some(v6) = &f.ip_forward_v6 {
        consider("net.ipv6.conf.all.forwarding", v6);
    }
    if bad.is_empty() {
        let what = if f.ip_forward_v6.is_some() {
            "IPv4 and IPv6 forwarding on"
        } else {
            "net.ipv4.ip_forward = 1"
        };
        return Check::ok("ip_forward", what);
    }
    let fix = if fixes.is_empty() {
        "run as root with /proc/sys mounted".to_string()
    } else {
        format!(
            "{} (the agent sets it at start: find what reset it)",
            fixes.join("; ")
        )
    };
    Check::fail(
        "ip_forward",
        format!(
            "{}: pod traffic is not forwarded into or out of the tunnel",
            bad.join(", ")
        ),
        fix,
    )
}

fn rp_name(v: u8) -> &'static str {
    match v {
        0 => "off",
        1 => "strict",
        2 => "loose",
        _ => "invalid",
    }
}

/// `sysctl -w` accepts the slash form, which is needed when the device name has a dot.
fn rp_sysctl(dev: &str) -> String {
    if dev.contains('.') {
        format!("net/ipv4/conf/{dev}/rp_filter")
    } else {
        format!("net.ipv4.conf.{dev}.rp_filter")
    }
}

pub fn rp_filter(f: &Facts) -> Check {
    let dev = &f.config.device;
    let all = match &f.rp_filter_all {
        Ok(v) => *v,
        Err(e) => {
            return Check::fail(
                "rp_filter",
                format!("net.ipv4.conf.all.rp_filter: {e}"),
                "run as root with /proc/sys mounted",
            )
        }
    };
    let Some(link) = f.links.as_ref().ok().and_then(|l| l.get(dev)) else {
        return Check::skip(
            "rp_filter",
            format!("{dev} absent: nothing to check (see the device check)"),
        );
    };
    let Some(on_dev) = link.rp_filter else {
        return Check::fail(
            "rp_filter",
            format!("net.ipv4.conf.{dev}.rp_filter cannot be read"),
            "run as root with /proc/sys mounted (is IPv4 configuration present on the device?)",
        );
    };
    // The kernel applies max(all, <dev>).
    let effective = all.max(on_dev);
    let mut detail = format!(
        "{dev}: {} ({effective}) (all {all}, {dev} {on_dev})",
        rp_name(effective)
    );
    // The underlay sees only the outer UDP packets; strict is fine there as long as the route
    // back to each peer's endpoint leaves through the device they arrive on.
    for (name, value) in underlay_devices(f)
        .iter()
        .filter_map(|d| Some((d, f.links.as_ref().ok()?.get(d)?.rp_filter?)))
    {
        let eff = all.max(value);
        detail += &format!("; underlay {name}: {} ({eff})", rp_name(eff));
    }
    match effective {
        1 => Check::fail(
            "rp_filter",
            format!(
                "{detail}: packets from remote pods arriving on {dev} are dropped whenever the \
                 route back to their source does not leave via {dev} (a more specific foreign \
                 route, asymmetric paths); the agent sets {dev} to 2 (loose) at start because \
                 the kernel uses max(all, {dev}), so a strict value here means something reset it"
            ),
            format!(
                "sysctl -w {}=2 (and find what reset it, e.g. a sysctl.d file applied when the \
                 device appears)",
                rp_sysctl(dev)
            ),
        ),
        0 | 2 => Check::ok("rp_filter", detail),
        _ => Check::warn(
            "rp_filter",
            detail,
            format!("sysctl -w {}=2", rp_sysctl(dev)),
        ),
    }
}

/// The route the kernel would use toward `to` (main table, longest prefix, then lowest
/// metric). Policy routing is not modelled.
pub fn lookup(routes: &[KernelRoute], to: Toward) -> Option<&KernelRoute> {
    routes
        .iter()
        .filter(|r| r.kind == "unicast" && !r.device.is_empty())
        .filter(|r| match to {
            Toward::Address(ip) => r.destination.contains(ip),
            Toward::DefaultRoute { ipv6 } => {
                r.destination.prefix() == 0 && r.destination.is_ipv6() == ipv6
            }
        })
        .min_by_key(|r| (std::cmp::Reverse(r.destination.prefix()), r.metric))
}

/// (device, IPv6 underlay) -> the targets that leave through it.
fn underlay(f: &Facts) -> BTreeMap<(String, bool), Vec<String>> {
    let mut out: BTreeMap<(String, bool), Vec<String>> = BTreeMap::new();
    let Ok(routes) = &f.routes else {
        return out;
    };
    for t in &f.underlay_targets {
        let ipv6 = match t.to {
            Toward::Address(ip) => ip.is_ipv6(),
            Toward::DefaultRoute { ipv6 } => ipv6,
        };
        if let Some(r) = lookup(routes, t.to) {
            out.entry((r.device.clone(), ipv6))
                .or_default()
                .push(t.label.clone());
        }
    }
    out
}

fn underlay_devices(f: &Facts) -> BTreeSet<String> {
    underlay(f)
        .into_keys()
        .map(|(d, _)| d)
        .filter(|d| *d != f.config.device)
        .collect()
}

fn targets_text(labels: &[String]) -> String {
    match labels {
        [one] => one.clone(),
        many if many.iter().all(|l| l.starts_with("peer ")) => {
            format!("{} peer endpoints", many.len())
        }
        many => format!("{} targets", many.len()),
    }
}

/// "just now" or "5 minutes ago".
fn when(secs: u64) -> String {
    if secs == 0 {
        "just now".into()
    } else {
        ago(secs)
    }
}

pub fn mtu(f: &Facts) -> Check {
    let c = &f.config;
    let links = match &f.links {
        Ok(l) => l,
        Err(e) => return Check::fail("mtu", format!("list devices: {e}"), "run as root"),
    };
    let running = links.get(&c.device).map(|l| l.mtu);
    let tunnel = running.unwrap_or(c.mtu as u32);
    let groups = underlay(f);
    if groups.is_empty() {
        return Check::skip(
            "mtu",
            "no route toward any peer endpoint and no default route: underlay device unknown",
        );
    }
    let mut problems = Vec::new();
    let mut fine = Vec::new();
    let mut largest = u32::MAX;
    for ((dev, ipv6), labels) in &groups {
        if *dev == c.device {
            problems.push(format!(
                "{} is routed into the tunnel itself ({dev})",
                targets_text(labels)
            ));
            continue;
        }
        let Some(under) = links.get(dev) else {
            continue;
        };
        let overhead = if *ipv6 {
            WG_OVERHEAD_V6
        } else {
            WG_OVERHEAD_V4
        };
        let fam = if *ipv6 { "IPv6" } else { "IPv4" };
        if tunnel + overhead > under.mtu {
            largest = largest.min(under.mtu.saturating_sub(overhead));
            problems.push(format!(
                "{} {tunnel} + {overhead} ({fam}) = {} > {dev} mtu {} (toward {})",
                c.device,
                tunnel + overhead,
                under.mtu,
                targets_text(labels)
            ));
        } else {
            fine.push(format!(
                "{tunnel} + {overhead} ({fam}) <= {dev} mtu {} (toward {})",
                under.mtu,
                targets_text(labels)
            ));
        }
    }
    if !problems.is_empty() {
        let hint = if largest == u32::MAX {
            "fix the routes toward the peers' endpoints: they must not go through the tunnel"
                .to_string()
        } else {
            format!(
                "set tunnel.mtu to {largest} or less (the same in every cluster) and restart the \
                 agents, or raise the underlay MTU; until then large packets are dropped"
            )
        };
        return Check::fail("mtu", problems.join("; "), hint);
    }
    if let Some(r) = running.filter(|&r| r != c.mtu as u32) {
        return Check::warn(
            "mtu",
            format!(
                "{} has mtu {r} but tunnel.mtu is {}; {}",
                c.device,
                c.mtu,
                fine.join("; ")
            ),
            "restart the agent: it sets the device MTU (and the MSS clamp) from tunnel.mtu at start",
        );
    }
    Check::ok("mtu", fine.join("; "))
}

/// The MSS our table should clamp to for the configured MTU: (IPv4, IPv6).
fn expected_mss(mtu: u16) -> (u16, u16) {
    (mtu.saturating_sub(40), mtu.saturating_sub(60))
}

/// Every `maxseg size set N` value in an `nft list table` listing.
fn clamped_values(listing: &str) -> BTreeSet<u16> {
    listing
        .split("maxseg size set ")
        .skip(1)
        .filter_map(|rest| {
            let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
            digits.parse().ok()
        })
        .collect()
}

pub fn mss_clamp(f: &Facts) -> Check {
    let c = &f.config;
    let (mss4, mss6) = expected_mss(c.mtu);
    match &f.tunnel_table {
        Err(e) => Check::fail(
            "mss_clamp",
            format!("cannot list nftables: {e}"),
            "install nftables (the agent needs `nft` for MSS clamping) and run as root",
        ),
        Ok(None) => Check::fail(
            "mss_clamp",
            format!(
                "table inet {} is missing: TCP SYNs through {} are not clamped, large transfers stall",
                c.nft_table, c.device
            ),
            "the agent restores it within 30 s; if it keeps disappearing, find what flushes the \
             ruleset (nft flush ruleset, a firewall reload)",
        ),
        Ok(Some(listing)) => {
            let have = clamped_values(listing);
            if have.contains(&mss4) && have.contains(&mss6) && listing.contains(&c.device) {
                Check::ok(
                    "mss_clamp",
                    format!(
                        "inet {}: SYNs via {} clamped to MSS {mss4} (IPv4) / {mss6} (IPv6)",
                        c.nft_table, c.device
                    ),
                )
            } else if have.is_empty() {
                Check::fail(
                    "mss_clamp",
                    format!("inet {} has no MSS clamping rule", c.nft_table),
                    "restart the agent: it replaces its table atomically at start",
                )
            } else {
                let list: Vec<String> = have.iter().map(|v| v.to_string()).collect();
                Check::fail(
                    "mss_clamp",
                    format!(
                        "inet {} clamps to MSS {} but tunnel.mtu {} needs {mss4} (IPv4) / {mss6} (IPv6)",
                        c.nft_table,
                        list.join(", "),
                        c.mtu
                    ),
                    "restart the agent so its table matches tunnel.mtu",
                )
            }
        }
    }
}

pub fn nft_tables(f: &Facts) -> Check {
    let c = &f.config;
    let mut present = Vec::new();
    let mut missing = Vec::new();
    let mut errors = Vec::new();
    match &f.tunnel_table {
        Ok(Some(_)) => present.push(format!("inet {}", c.nft_table)),
        Ok(None) => missing.push(format!("inet {} (MSS clamping, host SNAT)", c.nft_table)),
        Err(e) => errors.push(e.clone()),
    }
    match &f.proxy_table {
        Some(Ok(true)) => present.push(format!("inet {}", c.proxy_table)),
        Some(Ok(false)) => missing.push(format!(
            "inet {} (the nftables service proxy: remote ClusterIPs)",
            c.proxy_table
        )),
        Some(Err(e)) => errors.push(e.clone()),
        None => {}
    }
    if !errors.is_empty() {
        return Check::fail(
            "nft_tables",
            format!("cannot list nftables: {}", errors.join("; ")),
            "install nftables and run as root",
        );
    }
    if !missing.is_empty() {
        return Check::fail(
            "nft_tables",
            format!("missing: {}", missing.join(", ")),
            "the agent restores its tables (within 30 s, the proxy's within 2 s); if one stays \
             missing, `sdn-tunnel status` shows the error and something may be flushing the ruleset",
        );
    }
    Check::ok("nft_tables", format!("present: {}", present.join(", ")))
}

pub fn ipvs(f: &Facts) -> Check {
    let Some(ipvs) = &f.ipvs else {
        let backend = match f.config.proxy_backend {
            ProxyBackend::None => "none",
            ProxyBackend::Nftables => "nftables",
            ProxyBackend::Ipvs => "ipvs",
        };
        return Check::skip("ipvs", format!("proxy.backend is {backend}"));
    };
    if let Err(e) = &ipvs.available {
        return Check::fail(
            "ipvs",
            format!("{e}: remote ClusterIPs do not work"),
            "modprobe ip_vs && modprobe ip_vs_rr (ip_vs_<scheduler> for another proxy.scheduler); \
             list them in /etc/modules-load.d/ (Linux 5.16+ loads ip_vs on first use; the agent \
             image has no modprobe)",
        );
    }
    let off: Vec<String> = ipvs
        .sysctls
        .iter()
        .filter_map(|(name, want, have)| match have {
            Ok(v) if v == want => None,
            Ok(v) => Some(format!("{name} = {v} (the agent sets {want})")),
            Err(e) => Some(format!("{name}: {e}")),
        })
        .collect();
    if !off.is_empty() {
        let fixes: Vec<String> = ipvs
            .sysctls
            .iter()
            .map(|(n, w, _)| format!("{n}={w}"))
            .collect();
        return Check::warn(
            "ipvs",
            off.join(", "),
            format!(
                "restart the agent, or sysctl -w {} (docs/service-proxy.md explains each)",
                fixes.join(" ")
            ),
        );
    }
    Check::ok("ipvs", "IPVS available, sysctls as the agent sets them")
}

/// "remote west podCIDRs" for a configured CIDR.
fn owner(f: &Facts, net: &IpNetwork) -> String {
    for r in &f.config.remotes {
        if r.pod_cidrs.iter().any(|c| cidr::network(c) == *net) {
            return format!("remote {} podCIDRs", r.name);
        }
        if r.service_cidrs.iter().any(|c| cidr::network(c) == *net) {
            return format!("remote {} serviceCIDRs", r.name);
        }
    }
    "a remote".into()
}

fn proto_name(p: u8) -> String {
    match p {
        2 => "kernel".into(),
        3 => "boot".into(),
        4 => "static".into(),
        n => n.to_string(),
    }
}

/// A route as `ip route` would print it (enough to find and delete it).
fn show_route(r: &KernelRoute) -> String {
    let mut s = if r.kind == "unicast" {
        r.destination.to_string()
    } else {
        format!("{} {}", r.kind, r.destination)
    };
    if !r.device.is_empty() {
        s += &format!(" dev {}", r.device);
    }
    s + &format!(" proto {}", proto_name(r.protocol))
}

pub fn routes(f: &Facts) -> Check {
    let c = &f.config;
    if c.routes.is_empty() {
        return Check::ok("routes", "no remotes, no routes");
    }
    let routes = match &f.routes {
        Ok(r) => r,
        Err(e) => return Check::fail("routes", format!("list routes: {e}"), "run as root"),
    };
    let ours: BTreeSet<IpNetwork> = routes
        .iter()
        .filter(|r| r.protocol == c.route_protocol && r.device == c.device)
        .map(|r| cidr::network(&r.destination))
        .collect();
    let mut missing = Vec::new();
    let mut shadowed = Vec::new();
    let mut competing = Vec::new();
    for want in &c.routes {
        if !ours.contains(want) {
            missing.push(format!("{want} ({})", owner(f, want)));
        }
        for r in routes.iter().filter(|r| r.protocol != c.route_protocol) {
            let d = cidr::network(&r.destination);
            if !cidr::contains(want, &d) {
                continue;
            }
            if d.prefix() > want.prefix() {
                shadowed.push(format!(
                    "{} shadows part of {want} ({})",
                    show_route(r),
                    owner(f, want)
                ));
            } else {
                competing.push(format!("{} competes with ours", show_route(r)));
            }
        }
    }
    if !missing.is_empty() || !shadowed.is_empty() {
        let mut parts = Vec::new();
        let mut hints = Vec::new();
        if !missing.is_empty() {
            parts.push(format!(
                "missing via {} (proto {}): {}",
                c.device,
                c.route_protocol,
                missing.join(", ")
            ));
            hints.push("the agent re-adds its routes within 30 s: is it running? read its log");
        }
        if !shadowed.is_empty() {
            parts.push(shadowed.join("; "));
            hints.push(
                "traffic to the shadowed addresses bypasses the tunnel: delete the foreign route \
                 (ip route del ...) and fix the component that adds it",
            );
        }
        return Check::fail("routes", parts.join("; "), hints.join("; "));
    }
    if !competing.is_empty() {
        return Check::warn(
            "routes",
            competing.join("; "),
            "a foreign route with the same destination may win over ours (metric, order): \
             delete it",
        );
    }
    Check::ok(
        "routes",
        format!(
            "{} route(s) via {} (proto {}), none shadowed",
            c.routes.len(),
            c.device,
            c.route_protocol
        ),
    )
}

pub fn cidr_overlaps(f: &Facts) -> Check {
    let c = &f.config;
    let remote_cidrs = remote_cidrs(c);
    let mut found = Vec::new();
    let mut notes = Vec::new();
    match &f.addresses {
        Ok(addrs) => {
            for a in addrs {
                // Our own devices: the IPVS VIP device holds remote ClusterIPs by design.
                if a.device == c.device
                    || (c.proxy_backend == ProxyBackend::Ipvs && a.device == c.vip_device)
                {
                    continue;
                }
                for (n, who) in &remote_cidrs {
                    if n.contains(a.address.ip()) {
                        found.push(format!(
                            "address {} on {} is inside {n} ({who})",
                            a.address, a.device
                        ));
                    }
                }
            }
        }
        Err(e) => notes.push(format!("addresses not checked: {e}")),
    }
    match &f.routes {
        Ok(routes) => {
            for r in routes.iter().filter(|r| r.protocol != c.route_protocol) {
                for (n, who) in &remote_cidrs {
                    if cidr::contains(n, &cidr::network(&r.destination)) {
                        found.push(format!("route {} overlaps {n} ({who})", show_route(r)));
                    }
                }
            }
        }
        Err(e) => notes.push(format!("routes not checked: {e}")),
    }
    let mut rejected_overlap = false;
    match &f.agent {
        Ok(a) => {
            let rejected = overlap_rejections(a);
            rejected_overlap = !rejected.is_empty();
            found.extend(rejected);
        }
        Err(_) => notes.push("agent rejections not checked: agent not running".into()),
    }
    if !found.is_empty() {
        let mut hint = "a local address or route inside a remote cluster's CIDR takes that \
                        traffic away from the tunnel: remove it or renumber (a remote's \
                        podCIDRs/serviceCIDRs must not be used on this host)"
            .to_string();
        if rejected_overlap {
            hint += "; rejected objects: see docs/troubleshooting.md, Objects rejected";
        }
        return Check::fail("cidr_overlaps", found.join("; "), hint);
    }
    let mut detail = format!(
        "no local address or foreign route inside the remotes' {} CIDR(s)",
        remote_cidrs.len()
    );
    if !notes.is_empty() {
        detail += &format!("; {}", notes.join("; "));
    }
    Check::ok("cidr_overlaps", detail)
}

/// Every remote's pod and service CIDRs with where they come from.
fn remote_cidrs(c: &ConfigFacts) -> Vec<(IpNetwork, String)> {
    c.remotes
        .iter()
        .flat_map(|r| {
            r.pod_cidrs
                .iter()
                .map(move |n| (cidr::network(n), format!("remote {} podCIDRs", r.name)))
                .chain(
                    r.service_cidrs.iter().map(move |n| {
                        (cidr::network(n), format!("remote {} serviceCIDRs", r.name))
                    }),
                )
        })
        .collect()
}

/// The agent's rejections for an overlap, each once.
fn overlap_rejections(a: &crate::control::AgentStatus) -> Vec<String> {
    let mut seen = BTreeSet::new();
    a.rejected
        .iter()
        .chain(a.remotes.iter().flat_map(|r| r.rejected.iter()))
        .filter(|r| r.reason.contains("overlap"))
        .filter(|rej| seen.insert((&rej.remote, &rej.object, &rej.reason)))
        .map(|rej| {
            format!(
                "remote {} {} rejected: {}",
                rej.remote, rej.object, rej.reason
            )
        })
        .collect()
}

pub fn remotes(f: &Facts) -> Vec<Check> {
    const NAME: &str = "remotes";
    if f.config.remotes.is_empty() {
        return vec![Check::skip(NAME, "no remotes in the config")];
    }
    let a = match &f.agent {
        Ok(a) => a,
        Err(_) => return vec![Check::skip(NAME, "agent not running")],
    };
    f.config
        .remotes
        .iter()
        .map(|r| {
            let hint = format!(
                "sdn-tunnel check-remote --remote {} (API URL, token, RBAC; docs/troubleshooting.md, \
                 A remote is STALE)",
                r.name
            );
            let Some(s) = a.remotes.iter().find(|s| s.name == r.name) else {
                return Check::fail(
                    NAME,
                    format!("{}: unknown to the running agent", r.name),
                    "the config changed since the agent started: restart it",
                );
            };
            let err = s.last_error.as_deref().unwrap_or("no error reported");
            if let Some(since) = s.stale_since_unix {
                return Check::fail(
                    NAME,
                    format!(
                        "{}: STALE since {}: {err}",
                        r.name,
                        when(f.now_unix.saturating_sub(since))
                    ),
                    hint,
                );
            }
            if !s.synced {
                return Check::fail(
                    NAME,
                    format!("{}: not synced yet: {err}", r.name),
                    hint,
                );
            }
            let mut detail = if r.live {
                format!(
                    "{}: synced{}, peers {}/{} nodes",
                    r.name,
                    s.last_sync_unix
                        .map(|t| format!(" {}", when(f.now_unix.saturating_sub(t))))
                        .unwrap_or_default(),
                    s.peers,
                    s.nodes
                )
            } else {
                format!("{}: static, {} peers", r.name, s.peers)
            };
            if let Some(i) = s.import.as_ref().filter(|i| i.policy == "exported") {
                if i.export_api.is_none() {
                    detail += "; it serves no ServiceExport API: none of its Services is imported";
                    return Check::warn(
                        NAME,
                        detail,
                        "install the MCS CRDs there (kubectl apply -k deploy/crds) and export \
                         Services, or set remotes[].import: all (docs/troubleshooting.md, A \
                         remote Service is missing)",
                    );
                }
                detail += &format!(
                    ", {} exported services imported ({} not exported)",
                    s.services, i.not_exported
                );
            }
            let other: Vec<_> = s
                .rejected
                .iter()
                .filter(|x| !x.reason.contains("overlap"))
                .collect();
            if let Some(first) = other.first() {
                detail += &format!(
                    "; rejected {}: {} {}",
                    other.len(),
                    first.object,
                    first.reason
                );
                return Check::warn(
                    NAME,
                    detail,
                    "docs/troubleshooting.md, Objects rejected: compare the remote's ranges with \
                     remotes[].podCIDRs/serviceCIDRs",
                );
            }
            Check::ok(NAME, detail)
        })
        .collect()
}

/// ClusterSetIPs (`mcs.clusterSetCIDRs`): the local exports are watched and synced, the VIPs
/// could be allocated, and (with the controller) some agent of the cluster writes the MCS
/// objects.
pub fn clusterset(f: &Facts) -> Check {
    const NAME: &str = "clusterset";
    let a = match &f.agent {
        Ok(a) => a,
        Err(_) => return Check::skip(NAME, "agent not running"),
    };
    let Some(cs) = &a.clusterset else {
        return Check::skip(NAME, "ClusterSetIPs off (mcs.clusterSetCIDRs empty)");
    };
    let docs = "docs/troubleshooting.md, A ClusterSetIP does not answer";
    if let Some(p) = cs.problems.first() {
        return Check::fail(
            NAME,
            p.clone(),
            "a larger mcs.clusterSetCIDRs (the same in every cluster)",
        );
    }
    let Some(local) = &cs.local else {
        return Check::warn(
            NAME,
            "the local cluster's exports are not watched (no local API): this cluster's pods \
             are not behind its ClusterSetIPs",
            "set cluster.kubeconfig or $KUBECONFIG, or run the agent in a pod",
        );
    };
    if let Some(e) = &local.last_error {
        return Check::fail(
            NAME,
            format!("local exports: {e}"),
            format!("re-apply deploy/base (rbac-clusterset.yaml); {docs}"),
        );
    }
    if !local.synced {
        return Check::fail(NAME, "local exports not synced yet", docs);
    }
    let mut detail = format!(
        "{} exported service(s), {} exported here",
        cs.services.len(),
        local.services
    );
    if let Some(c) = &cs.controller {
        match (&c.holder, c.leader) {
            (_, true) => detail += "; this agent writes the MCS objects",
            (Some(h), false) => detail += &format!("; {h} writes the MCS objects"),
            (None, false) => {
                return Check::warn(
                    NAME,
                    format!(
                        "{detail}; nobody holds the MCS controller lease ({})",
                        c.lease
                    ),
                    "check the agents' logs for `MCS controller lease` errors (RBAC: the Role \
                     sdn-tunnel-agent-lease)",
                )
            }
        }
        if let Some(e) = &c.last_error {
            return Check::warn(NAME, format!("{detail}; last write failed: {e}"), docs);
        }
    }
    let conflicts: Vec<String> = cs
        .services
        .iter()
        .filter(|s| !s.conflicts.is_empty())
        .map(|s| format!("{}/{} {}", s.namespace, s.name, s.conflicts.join(",")))
        .collect();
    if !conflicts.is_empty() {
        return Check::warn(
            NAME,
            format!("{detail}; conflicts: {}", conflicts.join("; ")),
            "make the exporting clusters' Services agree (kubectl get serviceexport -o yaml shows \
             the Conflict condition's message)",
        );
    }
    Check::ok(NAME, detail)
}

pub fn peers(f: &Facts) -> Vec<Check> {
    const NAME: &str = "peers";
    let a = match &f.agent {
        Ok(a) => a,
        Err(_) => return vec![Check::skip(NAME, "agent not running")],
    };
    if a.peers.is_empty() {
        if f.config.remotes.is_empty() {
            return vec![Check::ok(NAME, "no peers (no remotes)")];
        }
        return vec![Check::warn(
            NAME,
            "no peers although remotes are configured",
            "the remotes have no nodes with a key yet, or all were rejected: `sdn-tunnel status`",
        )];
    }
    let mut out = Vec::new();
    let mut oldest = 0;
    for p in &a.peers {
        let label = match &p.name {
            Some(n) => format!("{}/{n}", p.remote),
            None => format!("{}/{}", p.remote, p.public_key),
        };
        let endpoint = p.endpoint.as_deref().unwrap_or("no endpoint");
        let problem = match p.handshake_age(f.now_unix) {
            None => Some("no handshake".to_string()),
            Some(age) => {
                oldest = oldest.max(age);
                (age > f.stale_after_secs).then(|| {
                    format!(
                        "latest handshake {} (stale: older than {}s)",
                        ago(age),
                        f.stale_after_secs
                    )
                })
            }
        };
        if let Some(problem) = problem {
            let hint = if p.endpoint.is_none() {
                "the remote node advertises no endpoint, so this node can only answer its \
                 handshakes: check its Node annotations (docs/troubleshooting.md, Stale handshakes)"
                    .to_string()
            } else {
                format!(
                    "is the remote's agent running? is UDP to {endpoint} open both ways \
                     (firewall, security groups)? compare the endpoint with what the remote \
                     advertises (`sdn-tunnel status` on both nodes)"
                )
            };
            out.push(Check::fail(
                NAME,
                format!("{label} ({endpoint}): {problem}"),
                hint,
            ));
        }
    }
    if out.is_empty() {
        out.push(Check::ok(
            NAME,
            format!(
                "{} peer(s), every handshake within {}s (oldest {}s)",
                a.peers.len(),
                f.stale_after_secs,
                oldest
            ),
        ));
    }
    out
}

pub fn udp_port(f: &Facts) -> Check {
    let port = match &f.agent {
        Ok(a) => a.listen_port,
        Err(_) => f.config.listen_port,
    };
    if port == 0 {
        return Check::skip(
            "udp_port",
            "tunnel.listenPort 0 (random) and no agent to ask",
        );
    }
    let holders = match &f.udp_port_holders {
        Err(e) => return Check::fail("udp_port", format!("read {e}"), "run as root"),
        Ok(h) => h,
    };
    if let Ok(a) = &f.agent {
        // The agent answered and reports the port it bound.
        return match holders.is_empty() {
            false => Check::ok(
                "udp_port",
                format!("UDP {port} is bound by the agent (pid {})", a.pid),
            ),
            true => Check::fail(
                "udp_port",
                format!("the agent reports UDP {port}, but no socket is bound to it here"),
                "is the agent in another network namespace than this command? (hostNetwork)",
            ),
        };
    }
    // The agent's control socket did not answer, but the agent process holds the port.
    if let Some(h) = holders.iter().find(|h| {
        h.process
            .as_ref()
            .is_some_and(|(_, comm)| comm == "sdn-tunnel")
    }) {
        return Check::ok("udp_port", format!("UDP {port} is bound by {h}"));
    }
    if holders.is_empty() {
        return Check::fail(
            "udp_port",
            format!("nothing listens on UDP {port}: no handshake can reach this node"),
            format!("the agent binds it at start: is it running? ss -ulpn 'sport = :{port}'"),
        );
    }
    Check::fail(
        "udp_port",
        format!(
            "UDP {port} is held by {}, and no agent answers: the agent cannot bind it",
            crate::port_owner::describe(holders)
        ),
        "another WireGuard on this node? Calico, flannel and Kilo use 51820 (51821 for IPv6), \
         Cilium 51871: set tunnel.listenPort to a free port on every node, or stop the holder",
    )
}

/// (year, month, day) of a Unix time (UTC), for messages.
fn civil_date(unix: u64) -> (i64, u32, u32) {
    // Howard Hinnant's days-from-civil inverse.
    let z = (unix / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

pub fn clock(f: &Facts) -> Check {
    let (y, m, d) = civil_date(f.now_unix);
    if f.now_unix < SANE_CLOCK_UNIX {
        return Check::fail(
            "clock",
            format!("the system clock says {y:04}-{m:02}-{d:02}: certainly wrong"),
            "set the time and enable NTP; WireGuard peers reject handshake initiations with \
             timestamps older than ones they have seen",
        );
    }
    match &f.clock {
        Err(e) => Check::warn(
            "clock",
            format!("adjtimex: {e}"),
            "check NTP with timedatectl or chronyc tracking",
        ),
        Ok(c) if c.unsynchronized => Check::warn(
            "clock",
            format!(
                "{y:04}-{m:02}-{d:02}, not synchronized (adjtimex STA_UNSYNC): WireGuard \
                 handshake initiations carry a timestamp and a peer rejects one older than the \
                 last it accepted, so a clock that jumps back blocks handshakes"
            ),
            "enable NTP (systemd-timesyncd, chrony); timedatectl shows the state",
        ),
        Ok(_) => Check::ok("clock", format!("{y:04}-{m:02}-{d:02}, synchronized")),
    }
}

#[cfg(test)]
mod tests {
    use super::super::facts::*;
    use super::*;
    use crate::control::{AgentStatus, PeerStatus, RemoteStatus};
    use crate::model::Rejected;
    use crate::source::SourceKind;

    const NOW: u64 = 1_780_000_000;

    fn n(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    fn route(dst: &str, dev: &str, proto: u8) -> KernelRoute {
        KernelRoute {
            destination: n(dst),
            device: dev.into(),
            protocol: proto,
            kind: "unicast".into(),
            metric: 0,
        }
    }

    fn link(mtu: u32, rp: u8) -> LinkFact {
        LinkFact {
            mtu,
            up: true,
            rp_filter: Some(rp),
        }
    }

    /// A healthy node of east with remote west (live), one peer per west node.
    fn healthy() -> Facts {
        let links = [
            ("sdn0".to_string(), link(1420, 2)),
            ("eth0".to_string(), link(1500, 1)),
            ("cbr0".to_string(), link(1500, 0)),
            ("lo".to_string(), link(65536, 0)),
        ]
        .into_iter()
        .collect();
        let peer = |name: &str, ep: &str| PeerStatus {
            remote: "west".into(),
            name: Some(name.into()),
            public_key: format!("key-{name}"),
            endpoint: Some(ep.into()),
            latest_handshake_unix: Some(NOW - 30),
            ..Default::default()
        };
        Facts {
            now_unix: NOW,
            stale_after_secs: 180,
            config: ConfigFacts {
                device: "sdn0".into(),
                mtu: 1420,
                listen_port: 51820,
                route_protocol: 93,
                nft_table: "sdn_tunnel_sdn0".into(),
                proxy_backend: ProxyBackend::None,
                proxy_table: "sdn_tunnel_sdn0_proxy".into(),
                vip_device: "sdn-ipvs0".into(),
                remotes: vec![RemoteFact {
                    name: "west".into(),
                    pod_cidrs: vec![n("10.132.0.0/14")],
                    service_cidrs: vec![n("172.31.0.0/16")],
                    live: true,
                }],
                routes: vec![n("10.132.0.0/14"), n("172.31.0.0/16")],
                any_ipv6: false,
            },
            ip_forward_v4: Ok("1".into()),
            ip_forward_v6: None,
            rp_filter_all: Ok(1),
            links: Ok(links),
            routes: Ok(vec![
                route("192.168.77.0/24", "eth0", 2),
                route("10.128.0.0/24", "cbr0", 2),
                route("10.128.1.0/24", "eth0", 4),
                route("10.132.0.0/14", "sdn0", 93),
                route("172.31.0.0/16", "sdn0", 93),
            ]),
            addresses: Ok(vec![
                LocalAddress {
                    address: n("192.168.77.11/24"),
                    device: "eth0".into(),
                },
                LocalAddress {
                    address: n("10.128.0.1/24"),
                    device: "cbr0".into(),
                },
            ]),
            underlay_targets: vec![
                UnderlayTarget {
                    label: "peer west/b1".into(),
                    to: Toward::Address("192.168.77.21".parse().unwrap()),
                },
                UnderlayTarget {
                    label: "peer west/b2".into(),
                    to: Toward::Address("192.168.77.22".parse().unwrap()),
                },
            ],
            tunnel_table: Ok(Some(
                "table inet sdn_tunnel_sdn0 {\n chain forward {\n oifname \"sdn0\" tcp flags syn / syn,rst \
                 tcp option maxseg size > 1380 tcp option maxseg size set 1380\n \
                 tcp option maxseg size set 1360\n }\n}\n"
                    .into(),
            )),
            proxy_table: None,
            ipvs: None,
            udp_port_holders: Ok(vec![crate::port_owner::Holder {
                process: Some((4242, "sdn-tunnel".into())),
            }]),
            clock: Ok(ClockFact {
                unsynchronized: false,
            }),
            http: Some(HttpFact {
                url: "http://127.0.0.1:9477/readyz".into(),
                readyz: Ok((200, "ok".into())),
            }),
            agent: Ok(AgentStatus {
                cluster: "east".into(),
                node: "a1".into(),
                device: "sdn0".into(),
                listen_port: 51820,
                pid: 42,
                started_at_unix: NOW - 100,
                peers: vec![
                    peer("b1", "192.168.77.21:51820"),
                    peer("b2", "192.168.77.22:51820"),
                ],
                remotes: vec![RemoteStatus {
                    name: "west".into(),
                    source: SourceKind::Kube,
                    synced: true,
                    last_sync_unix: Some(NOW - 5),
                    stale_since_unix: None,
                    last_error: None,
                    nodes: 2,
                    peers: 2,
                    services: 0,
                    endpoints: 0,
                    rejected: vec![],
                    limits_hit: vec![],
                    import: None,
                }],
                ..Default::default()
            }),
        }
    }

    fn only<'a>(checks: &'a [Check], name: &str) -> &'a Check {
        let v: Vec<_> = checks.iter().filter(|c| c.name == name).collect();
        assert_eq!(v.len(), 1, "{name}: {checks:#?}");
        v[0]
    }

    fn agent_mut(f: &mut Facts) -> &mut AgentStatus {
        f.agent.as_mut().unwrap()
    }

    #[test]
    fn clusterset_is_judged_by_its_local_source_controller_and_conflicts() {
        use crate::control::{ClusterSetServiceStatus, ClusterSetStatus, McsControllerStatus};
        let mut f = healthy();
        assert_eq!(clusterset(&f).status, Status::Skip);
        agent_mut(&mut f).clusterset = Some(ClusterSetStatus::default());
        let c = clusterset(&f);
        assert_eq!(c.status, Status::Warn);
        assert!(c.detail.contains("not watched"), "{c:?}");
        let local = crate::control::RemoteStatus {
            name: "east".into(),
            source: crate::source::SourceKind::Kube,
            synced: true,
            last_sync_unix: None,
            stale_since_unix: None,
            last_error: None,
            nodes: 0,
            peers: 0,
            services: 1,
            endpoints: 2,
            rejected: vec![],
            limits_hit: vec![],
            import: None,
        };
        agent_mut(&mut f).clusterset = Some(ClusterSetStatus {
            local: Some(local.clone()),
            services: vec![ClusterSetServiceStatus::default()],
            controller: Some(McsControllerStatus {
                holder: Some("a2".into()),
                ..Default::default()
            }),
            ..Default::default()
        });
        let c = clusterset(&f);
        assert_eq!(c.status, Status::Ok, "{c:?}");
        assert!(c.detail.contains("a2 writes the MCS objects"), "{c:?}");
        let cs = agent_mut(&mut f).clusterset.as_mut().unwrap();
        cs.services[0].conflicts = vec!["PortConflict".into()];
        assert_eq!(clusterset(&f).status, Status::Warn);
        let cs = agent_mut(&mut f).clusterset.as_mut().unwrap();
        cs.problems = vec!["mcs.clusterSetCIDRs: too small".into()];
        assert_eq!(clusterset(&f).status, Status::Fail);
    }

    #[test]
    fn healthy_node_is_all_green() {
        let checks = all(&healthy());
        for c in &checks {
            assert!(matches!(c.status, Status::Ok | Status::Skip), "{c:#?}");
        }
        assert_eq!(only(&checks, "ipvs").status, Status::Skip);
        assert!(only(&checks, "mtu")
            .detail
            .contains("1420 + 60 (IPv4) <= eth0 mtu 1500"));
        assert!(only(&checks, "rp_filter").detail.contains("loose (2)"));
        assert!(only(&checks, "rp_filter")
            .detail
            .contains("underlay eth0: strict (1)"));
    }

    #[test]
    fn http_probe_answers_are_judged() {
        let mut f = healthy();
        let url = "http://127.0.0.1:9477/readyz".to_string();
        for (readyz, status, needle) in [
            (
                Ok((503, "remote west: first sync pending".into())),
                Status::Warn,
                "west",
            ),
            (Ok((404, "not found".into())), Status::Fail, "404"),
            (Err("Connection refused".into()), Status::Fail, "refused"),
        ] {
            f.http = Some(HttpFact {
                url: url.clone(),
                readyz,
            });
            let c = http(&f);
            assert_eq!(c.status, status, "{c:?}");
            assert!(c.detail.contains(needle), "{c:?}");
        }
        f.http = None;
        assert_eq!(http(&f).status, Status::Skip);
    }

    #[test]
    fn agent_down_fails_and_skips_what_needs_it() {
        let mut f = healthy();
        f.agent = Err("connection refused (is the agent running?)".into());
        let checks = all(&f);
        let a = only(&checks, "agent");
        assert_eq!(a.status, Status::Fail);
        assert!(a.detail.contains("connection refused"));
        assert_eq!(only(&checks, "remotes").status, Status::Skip);
        assert_eq!(only(&checks, "peers").status, Status::Skip);
        // kernel checks still judged; the config's port is used
        assert_eq!(only(&checks, "udp_port").status, Status::Ok);
        assert_eq!(only(&checks, "cidr_overlaps").status, Status::Ok);
        assert!(only(&checks, "cidr_overlaps")
            .detail
            .contains("agent rejections not checked"));
    }

    #[test]
    fn agent_socket_not_readable_says_so() {
        let mut f = healthy();
        f.agent = Err("/var/run/sdn-tunnel/sdn0.sock: Permission denied (os error 13)".into());
        let c = agent(&f);
        assert_eq!(c.status, Status::Fail);
        assert!(c.hint.unwrap().contains("run diagnose as root"));
    }

    #[test]
    fn device_absent_or_down() {
        let mut f = healthy();
        f.links.as_mut().unwrap().remove("sdn0");
        assert_eq!(device(&f).status, Status::Fail);
        assert_eq!(rp_filter(&f).status, Status::Skip);
        let mut f = healthy();
        f.links.as_mut().unwrap().get_mut("sdn0").unwrap().rp_filter = None;
        assert_eq!(rp_filter(&f).status, Status::Fail);
        let mut f = healthy();
        f.links.as_mut().unwrap().get_mut("sdn0").unwrap().up = false;
        let c = device(&f);
        assert_eq!(c.status, Status::Fail);
        assert!(c.hint.unwrap().contains("ip link set sdn0 up"));
    }

    #[test]
    fn ip_forward_off_fails() {
        let mut f = healthy();
        f.ip_forward_v4 = Ok("0".into());
        let c = ip_forward(&f);
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.contains("net.ipv4.ip_forward = 0"));
        assert!(c.hint.unwrap().contains("sysctl -w net.ipv4.ip_forward=1"));
        let mut f = healthy();
        f.ip_forward_v6 = Some(Ok("0".into()));
        let c = ip_forward(&f);
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.contains("net.ipv6.conf.all.forwarding = 0"));
        f.ip_forward_v6 = Some(Ok("1".into()));
        assert_eq!(ip_forward(&f).status, Status::Ok);
    }

    #[test]
    fn rp_filter_uses_the_max_of_all_and_device() {
        let mut f = healthy();
        // all=1, dev=2 -> loose: fine
        assert_eq!(rp_filter(&f).status, Status::Ok);
        // all=1, dev=0 -> strict
        f.links.as_mut().unwrap().get_mut("sdn0").unwrap().rp_filter = Some(0);
        let c = rp_filter(&f);
        assert_eq!(c.status, Status::Fail, "{c:#?}");
        assert!(
            c.detail.starts_with("sdn0: strict (1) (all 1, sdn0 0)"),
            "{}",
            c.detail
        );
        assert!(c
            .hint
            .unwrap()
            .starts_with("sysctl -w net.ipv4.conf.sdn0.rp_filter=2"));
        // all=0, dev=1 -> strict
        f.rp_filter_all = Ok(0);
        f.links.as_mut().unwrap().get_mut("sdn0").unwrap().rp_filter = Some(1);
        assert_eq!(rp_filter(&f).status, Status::Fail);
        // all=0, dev=0 -> off: fine
        f.links.as_mut().unwrap().get_mut("sdn0").unwrap().rp_filter = Some(0);
        assert_eq!(rp_filter(&f).status, Status::Ok);
        assert_eq!(rp_sysctl("eth0.100"), "net/ipv4/conf/eth0.100/rp_filter");
    }

    #[test]
    fn mtu_too_big_for_the_underlay_fails_with_the_largest_fit() {
        let mut f = healthy();
        f.links.as_mut().unwrap().get_mut("eth0").unwrap().mtu = 1400;
        let c = mtu(&f);
        assert_eq!(c.status, Status::Fail, "{c:#?}");
        assert!(
            c.detail
                .contains("sdn0 1420 + 60 (IPv4) = 1480 > eth0 mtu 1400"),
            "{}",
            c.detail
        );
        assert!(c.hint.unwrap().contains("tunnel.mtu to 1340 or less"));
    }

    #[test]
    fn mtu_uses_80_bytes_over_ipv6() {
        let mut f = healthy();
        f.routes
            .as_mut()
            .unwrap()
            .push(route("fd00:77::/64", "eth0", 2));
        f.underlay_targets = vec![UnderlayTarget {
            label: "peer west/b1".into(),
            to: Toward::Address("fd00:77::21".parse().unwrap()),
        }];
        // 1420 + 80 = 1500: fits exactly
        assert_eq!(mtu(&f).status, Status::Ok);
        f.links.as_mut().unwrap().get_mut("sdn0").unwrap().mtu = 1421;
        f.config.mtu = 1421;
        let c = mtu(&f);
        assert_eq!(c.status, Status::Fail);
        assert!(c.hint.unwrap().contains("tunnel.mtu to 1420 or less"));
    }

    #[test]
    fn mtu_device_differs_from_config_warns() {
        let mut f = healthy();
        f.config.mtu = 1400;
        let c = mtu(&f);
        assert_eq!(c.status, Status::Warn);
        assert!(c
            .detail
            .contains("sdn0 has mtu 1420 but tunnel.mtu is 1400"));
    }

    #[test]
    fn mtu_falls_back_to_the_default_route_or_skips() {
        let mut f = healthy();
        f.underlay_targets = vec![UnderlayTarget {
            label: "IPv4 default route".into(),
            to: Toward::DefaultRoute { ipv6: false },
        }];
        assert_eq!(mtu(&f).status, Status::Skip);
        f.routes
            .as_mut()
            .unwrap()
            .push(route("0.0.0.0/0", "eth0", 3));
        let c = mtu(&f);
        assert_eq!(c.status, Status::Ok);
        assert!(
            c.detail.contains("toward IPv4 default route"),
            "{}",
            c.detail
        );
    }

    #[test]
    fn endpoint_routed_into_the_tunnel_fails() {
        let mut f = healthy();
        f.routes
            .as_mut()
            .unwrap()
            .push(route("192.168.77.21/32", "sdn0", 4));
        let c = mtu(&f);
        assert_eq!(c.status, Status::Fail);
        assert!(c
            .detail
            .contains("peer west/b1 is routed into the tunnel itself"));
    }

    #[test]
    fn lookup_prefers_longest_prefix_then_metric() {
        let mut a = route("10.0.0.0/8", "a", 2);
        a.metric = 5;
        let mut b = route("10.0.0.0/8", "b", 2);
        b.metric = 1;
        let c = route("10.1.0.0/16", "c", 2);
        let mut bh = route("10.1.2.0/24", "", 2);
        bh.kind = "blackhole".into();
        let routes = vec![a, b, c, bh];
        let to = |s: &str| Toward::Address(s.parse().unwrap());
        assert_eq!(lookup(&routes, to("10.2.0.1")).unwrap().device, "b");
        assert_eq!(lookup(&routes, to("10.1.2.3")).unwrap().device, "c");
        assert!(lookup(&routes, to("11.0.0.1")).is_none());
        assert!(lookup(&routes, Toward::DefaultRoute { ipv6: false }).is_none());
    }

    #[test]
    fn mss_clamp_missing_wrong_or_right() {
        let f = healthy();
        assert_eq!(mss_clamp(&f).status, Status::Ok);
        let mut g = healthy();
        g.tunnel_table = Ok(None);
        assert_eq!(mss_clamp(&g).status, Status::Fail);
        assert_eq!(nft_tables(&g).status, Status::Fail);
        let mut g = healthy();
        g.config.mtu = 1380;
        let c = mss_clamp(&g);
        assert_eq!(c.status, Status::Fail);
        assert!(
            c.detail
                .contains("clamps to MSS 1360, 1380 but tunnel.mtu 1380 needs 1340"),
            "{}",
            c.detail
        );
        let mut g = healthy();
        g.tunnel_table = Ok(Some("table inet sdn_tunnel_sdn0 {\n}\n".into()));
        assert!(mss_clamp(&g).detail.contains("no MSS clamping rule"));
        let mut g = healthy();
        g.tunnel_table = Err("the nft binary was not found".into());
        assert_eq!(mss_clamp(&g).status, Status::Fail);
        assert_eq!(nft_tables(&g).status, Status::Fail);
    }

    #[test]
    fn nft_proxy_table_with_the_nftables_backend() {
        let mut f = healthy();
        f.config.proxy_backend = ProxyBackend::Nftables;
        f.proxy_table = Some(Ok(true));
        let c = nft_tables(&f);
        assert_eq!(c.status, Status::Ok);
        assert!(c.detail.contains("inet sdn_tunnel_sdn0_proxy"));
        f.proxy_table = Some(Ok(false));
        let c = nft_tables(&f);
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.contains("sdn_tunnel_sdn0_proxy"));
    }

    #[test]
    fn ipvs_only_with_the_ipvs_backend() {
        let mut f = healthy();
        assert_eq!(ipvs(&f).status, Status::Skip);
        f.config.proxy_backend = ProxyBackend::Ipvs;
        f.ipvs = Some(IpvsFacts {
            available: Err("No such file or directory (os error 2)".into()),
            sysctls: vec![],
        });
        let c = ipvs(&f);
        assert_eq!(c.status, Status::Fail);
        assert!(c.hint.unwrap().starts_with("modprobe ip_vs"));
        f.ipvs = Some(IpvsFacts {
            available: Ok(()),
            sysctls: vec![("net.ipv4.vs.conntrack".into(), "1".into(), Ok("0".into()))],
        });
        let c = ipvs(&f);
        assert_eq!(c.status, Status::Warn);
        assert!(c
            .detail
            .contains("net.ipv4.vs.conntrack = 0 (the agent sets 1)"));
        f.ipvs.as_mut().unwrap().sysctls[0].2 = Ok("1".into());
        assert_eq!(ipvs(&f).status, Status::Ok);
    }

    #[test]
    fn missing_route_fails() {
        let mut f = healthy();
        f.routes
            .as_mut()
            .unwrap()
            .retain(|r| r.destination != n("172.31.0.0/16"));
        let c = routes(&f);
        assert_eq!(c.status, Status::Fail);
        assert!(
            c.detail
                .contains("172.31.0.0/16 (remote west serviceCIDRs)"),
            "{}",
            c.detail
        );
        // ours on the wrong device counts as missing
        let mut f = healthy();
        f.routes.as_mut().unwrap()[3].device = "eth0".into();
        assert!(routes(&f)
            .detail
            .contains("10.132.0.0/14 (remote west podCIDRs)"));
    }

    #[test]
    fn more_specific_foreign_route_shadows() {
        let mut f = healthy();
        let mut bh = route("10.132.200.0/24", "", 4);
        bh.kind = "blackhole".into();
        f.routes.as_mut().unwrap().push(bh);
        let c = routes(&f);
        assert_eq!(c.status, Status::Fail);
        assert!(
            c.detail.contains("blackhole 10.132.200.0/24 proto static shadows part of 10.132.0.0/14 (remote west podCIDRs)"),
            "{}",
            c.detail
        );
        // the same destination as ours, foreign: a warning
        let mut f = healthy();
        f.routes
            .as_mut()
            .unwrap()
            .push(route("172.31.0.0/16", "eth0", 3));
        assert_eq!(routes(&f).status, Status::Warn);
        // a less specific foreign route does not shadow ours
        let mut f = healthy();
        f.routes
            .as_mut()
            .unwrap()
            .push(route("10.0.0.0/8", "eth0", 3));
        assert_eq!(routes(&f).status, Status::Ok);
    }

    #[test]
    fn docker_bridge_inside_a_remote_service_cidr_overlaps() {
        let mut f = healthy();
        f.config.remotes[0].service_cidrs = vec![n("172.16.0.0/12")];
        f.config.routes = vec![n("10.132.0.0/14"), n("172.16.0.0/12")];
        f.routes.as_mut().unwrap()[4].destination = n("172.16.0.0/12");
        f.routes
            .as_mut()
            .unwrap()
            .push(route("172.17.0.0/16", "docker0", 2));
        f.addresses.as_mut().unwrap().push(LocalAddress {
            address: n("172.17.0.1/16"),
            device: "docker0".into(),
        });
        let c = cidr_overlaps(&f);
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.contains("address 172.17.0.1/16 on docker0 is inside 172.16.0.0/12 (remote west serviceCIDRs)"), "{}", c.detail);
        assert!(
            c.detail
                .contains("route 172.17.0.0/16 dev docker0 proto kernel overlaps 172.16.0.0/12"),
            "{}",
            c.detail
        );
        assert_eq!(routes(&f).status, Status::Fail);
    }

    #[test]
    fn vip_addresses_are_ours_with_ipvs() {
        let mut f = healthy();
        f.addresses.as_mut().unwrap().push(LocalAddress {
            address: n("172.31.0.10/32"),
            device: "sdn-ipvs0".into(),
        });
        assert_eq!(cidr_overlaps(&f).status, Status::Fail);
        f.config.proxy_backend = ProxyBackend::Ipvs;
        assert_eq!(cidr_overlaps(&f).status, Status::Ok);
    }

    #[test]
    fn overlap_rejections_are_reported_once() {
        let mut f = healthy();
        let rej = Rejected {
            remote: "west".into(),
            object: "node b3".into(),
            reason: "podCIDR 10.132.1.0/24 overlaps 10.132.1.0/24 of node b1".into(),
        };
        let a = agent_mut(&mut f);
        a.rejected = vec![rej.clone()];
        a.remotes[0].rejected = vec![rej];
        let c = cidr_overlaps(&f);
        assert_eq!(c.status, Status::Fail);
        assert_eq!(c.detail.matches("node b3").count(), 1, "{}", c.detail);
        assert!(c.hint.unwrap().contains("Objects rejected"));
        // not counted again as a plain rejection of the remote
        assert_eq!(remotes(&f)[0].status, Status::Ok);
    }

    #[test]
    fn stale_or_unsynced_remote_fails() {
        let mut f = healthy();
        {
            let r = &mut agent_mut(&mut f).remotes[0];
            r.stale_since_unix = Some(NOW - 300);
            r.last_error = Some("connection refused".into());
        }
        let c = &remotes(&f)[0];
        assert_eq!(c.status, Status::Fail);
        assert_eq!(
            c.detail,
            "west: STALE since 5 minutes ago: connection refused"
        );
        assert!(c
            .hint
            .as_ref()
            .unwrap()
            .contains("check-remote --remote west"));
        let mut f = healthy();
        agent_mut(&mut f).remotes[0].synced = false;
        assert!(remotes(&f)[0].detail.contains("not synced yet"));
        let mut f = healthy();
        agent_mut(&mut f).remotes.clear();
        assert!(remotes(&f)[0]
            .detail
            .contains("unknown to the running agent"));
    }

    #[test]
    fn a_remote_without_the_export_api_warns() {
        let mut f = healthy();
        let mut report = crate::model::ImportReport {
            policy: "exported".into(),
            export_api: Some("multicluster.x-k8s.io/v1beta1".into()),
            service_exports: 3,
            not_exported: 5,
        };
        agent_mut(&mut f).remotes[0].import = Some(report.clone());
        let c = &remotes(&f)[0];
        assert_eq!(c.status, Status::Ok);
        assert!(
            c.detail
                .contains("exported services imported (5 not exported)"),
            "{}",
            c.detail
        );
        report.export_api = None;
        agent_mut(&mut f).remotes[0].import = Some(report);
        let c = &remotes(&f)[0];
        assert_eq!(c.status, Status::Warn);
        assert!(
            c.detail.contains("serves no ServiceExport API"),
            "{}",
            c.detail
        );
        assert!(c.hint.as_ref().unwrap().contains("deploy/crds"));
    }

    #[test]
    fn static_remote_and_other_rejections() {
        let mut f = healthy();
        f.config.remotes[0].live = false;
        {
            let r = &mut agent_mut(&mut f).remotes[0];
            r.source = SourceKind::Static;
        }
        assert_eq!(remotes(&f)[0].detail, "west: static, 2 peers");
        agent_mut(&mut f).remotes[0].rejected = vec![Rejected {
            remote: "west".into(),
            object: "node b4".into(),
            reason: "podCIDR 10.140.0.0/24 is outside remote west podCIDRs".into(),
        }];
        assert_eq!(remotes(&f)[0].status, Status::Warn);
    }

    #[test]
    fn peers_without_or_with_old_handshakes_fail() {
        let mut f = healthy();
        {
            let a = agent_mut(&mut f);
            a.peers[0].latest_handshake_unix = None;
            a.peers[1].latest_handshake_unix = Some(NOW - 200);
        }
        let c = peers(&f);
        assert_eq!(c.len(), 2);
        assert!(c.iter().all(|c| c.status == Status::Fail));
        assert_eq!(c[0].detail, "west/b1 (192.168.77.21:51820): no handshake");
        assert!(c[1].detail.contains("west/b2 (192.168.77.22:51820): latest handshake 3 minutes, 20 seconds ago (stale: older than 180s)"), "{}", c[1].detail);
        assert!(c[0]
            .hint
            .as_ref()
            .unwrap()
            .contains("UDP to 192.168.77.21:51820"));
        // --stale-after
        f.stale_after_secs = 300;
        assert_eq!(peers(&f).len(), 1);
        // no endpoint
        agent_mut(&mut f).peers[0].endpoint = None;
        let c = peers(&f);
        assert!(c[0].detail.contains("(no endpoint)"));
        assert!(c[0]
            .hint
            .as_ref()
            .unwrap()
            .contains("advertises no endpoint"));
    }

    #[test]
    fn healthy_peers_summarised() {
        let c = peers(&healthy());
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].status, Status::Ok);
        assert!(c[0].detail.contains("2 peer(s)"));
        let mut f = healthy();
        agent_mut(&mut f).peers.clear();
        assert_eq!(peers(&f)[0].status, Status::Warn);
    }

    #[test]
    fn udp_port_not_bound_fails() {
        let mut f = healthy();
        assert_eq!(udp_port(&f).status, Status::Ok);
        f.udp_port_holders = Ok(vec![]);
        let c = udp_port(&f);
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.contains("no socket is bound"), "{}", c.detail);
        f.agent = Err("connect: no such file".into());
        let c = udp_port(&f);
        assert_eq!(c.status, Status::Fail);
        assert!(
            c.detail.contains("nothing listens on UDP 51820"),
            "{}",
            c.detail
        );
    }

    #[test]
    fn udp_port_held_by_another_process_names_it() {
        let mut f = healthy();
        f.agent = Err("connect: no such file".into());
        f.udp_port_holders = Ok(vec![crate::port_owner::Holder {
            process: Some((812, "wireguard-go".into())),
        }]);
        let c = udp_port(&f);
        assert_eq!(c.status, Status::Fail);
        assert!(
            c.detail.contains("held by wireguard-go (pid 812)"),
            "{}",
            c.detail
        );
        assert!(c.hint.unwrap().contains("tunnel.listenPort"));
        f.udp_port_holders = Ok(vec![crate::port_owner::Holder { process: None }]);
        assert!(udp_port(&f).detail.contains("kernel WireGuard device"));
    }

    #[test]
    fn clock_checks() {
        let mut f = healthy();
        assert_eq!(clock(&f).status, Status::Ok);
        f.clock = Ok(ClockFact {
            unsynchronized: true,
        });
        assert_eq!(clock(&f).status, Status::Warn);
        f.now_unix = 86_400 * 365; // 1971
        let c = clock(&f);
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.contains("1971-01-01"), "{}", c.detail);
        assert_eq!(civil_date(1_704_067_200), (2024, 1, 1));
        assert_eq!(civil_date(951_782_400), (2000, 2, 29));
    }
}
