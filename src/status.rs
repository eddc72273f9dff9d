//! `sdn-tunnel status`: what the running system holds, rendered like `wg show` (peers) plus our
//! routes and drop counters. Gathering does I/O; rendering is pure and unit-tested.

use crate::control::{AdvertiseStatus, AgentStatus, PeerStatus, RemoteStatus};
use crate::routes::OurRoute;
use crate::source::SourceKind;
use serde::Serialize;
use std::fmt::Write as _;

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    pub device: String,
    /// Link state as the kernel reports it (None: the device does not exist).
    pub link: Option<LinkState>,
    /// The agent's own view (None: no agent answered on the control socket).
    pub agent: Option<AgentStatus>,
    pub agent_error: Option<String>,
    pub route_protocol: u8,
    pub routes: Vec<OurRoute>,
    pub routes_error: Option<String>,
    /// The kernel's IPVS table (with the ipvs backend, or when asked for).
    pub ipvs: Option<IpvsSection>,
}

/// IPVS as the kernel holds it: `ipvsadm -Ln` text, the same annotated with the remote
/// service each of our virtual services stands for, `--stats` text, and structured data.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IpvsSection {
    pub error: Option<String>,
    pub text: String,
    pub annotated_text: String,
    pub stats_text: String,
    pub services: Vec<IpvsServiceJson>,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IpvsServiceJson {
    pub protocol: String,
    pub address: String,
    pub scheduler: String,
    pub persistent_timeout: Option<u32>,
    /// remote/namespace/name:port, for ours.
    pub label: Option<String>,
    pub connections: u64,
    pub destinations: Vec<IpvsDestJson>,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IpvsDestJson {
    pub address: String,
    pub forward: String,
    pub weight: u32,
    pub active_conns: u32,
    pub inactive_conns: u32,
}

/// Reads IPVS from the kernel (blocking). Labels come from what the agent programmed.
pub fn gather_ipvs(agent: Option<&AgentStatus>) -> IpvsSection {
    use crate::proxy::ipvs::{IpvsClient, ServiceFlags, ServiceKey};
    use crate::proxy::ipvs_text;
    let read = || -> Result<_, crate::proxy::ipvs::IpvsError> {
        let mut c = IpvsClient::new()?;
        let info = c.info()?;
        let mut all = Vec::new();
        for s in c.services()? {
            let d = c.destinations(&s.key)?;
            all.push((s, d));
        }
        Ok((info, all))
    };
    let (info, all) = match read() {
        Ok(v) => v,
        Err(e) => {
            return IpvsSection {
                error: Some(e.to_string()),
                ..Default::default()
            }
        }
    };
    let labels = agent
        .and_then(|a| a.proxy.as_ref())
        .map(|p| ipvs_text::virtual_service_labels(&p.services))
        .unwrap_or_default();
    let label = |k: &ServiceKey| labels.get(k).cloned();
    let services = all
        .iter()
        .map(|(s, d)| IpvsServiceJson {
            protocol: match s.key {
                ServiceKey::Addr { protocol, .. } => format!("{protocol:?}").to_uppercase(),
                ServiceKey::Fwmark { .. } => "FWM".into(),
            },
            address: match s.key {
                ServiceKey::Addr { addr, .. } => addr.to_string(),
                ServiceKey::Fwmark { mark, .. } => mark.to_string(),
            },
            scheduler: s.scheduler.name().to_string(),
            persistent_timeout: s
                .flags
                .contains(ServiceFlags::PERSISTENT)
                .then_some(s.timeout),
            label: label(&s.key),
            connections: s.stats.as_ref().map(|st| st.conns).unwrap_or(0),
            destinations: d
                .iter()
                .map(|d| IpvsDestJson {
                    address: d.addr.to_string(),
                    forward: format!("{:?}", d.forward),
                    weight: d.weight,
                    active_conns: d.active_conns,
                    inactive_conns: d.inactive_conns,
                })
                .collect(),
        })
        .collect();
    IpvsSection {
        error: None,
        text: ipvs_text::render_list(&info, &all),
        annotated_text: ipvs_text::render_annotated(&info, &all, &label),
        stats_text: ipvs_text::render_stats(&info, &all),
        services,
    }
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LinkState {
    pub index: u32,
    pub mtu: u32,
    pub up: bool,
}

/// The `status` text, section by section (as the metrics render the same facts): the
/// interface, its peers, the counters, the advertisement and remotes, then the proxy, DNS,
/// IPVS and routes.
pub fn render_text(r: &StatusReport, now_unix: u64) -> String {
    let mut s = String::new();
    render_interface(&mut s, r);
    match &r.agent {
        Some(a) => {
            render_agent(&mut s, a);
            for p in &a.peers {
                render_peer(&mut s, p, now_unix);
            }
            render_counters(&mut s, &a.counters);
            if let Some(adv) = &a.advertisement {
                render_advertisement(&mut s, adv, now_unix);
            }
            if a.remotes.is_empty() && !a.rejected.is_empty() {
                let _ = writeln!(s, "rejected inputs:");
                for rej in &a.rejected {
                    let _ = writeln!(s, "  {} {}: {}", rej.remote, rej.object, rej.reason);
                }
            }
            render_remotes(&mut s, &a.remotes, now_unix);
            if let Some(cs) = &a.clusterset {
                render_clusterset(&mut s, cs, now_unix);
            }
        }
        None => {
            let _ = writeln!(
                s,
                "  agent: not answering ({})",
                r.agent_error.as_deref().unwrap_or("unknown")
            );
        }
    }
    if let Some(p) = r.agent.as_ref().and_then(|a| a.proxy.as_ref()) {
        render_proxy(&mut s, p, now_unix);
    }
    if let Some(d) = r.agent.as_ref().and_then(|a| a.dns.as_ref()) {
        render_dns(&mut s, d);
    }
    if let Some(ipvs) = &r.ipvs {
        s.push('\n');
        match &ipvs.error {
            Some(e) => {
                let _ = writeln!(s, "IPVS: {e}");
            }
            None => s.push_str(&ipvs.annotated_text),
        }
    }
    render_routes(&mut s, r);
    s
}

fn render_interface(s: &mut String, r: &StatusReport) {
    let _ = write!(s, "interface: {}", r.device);
    match &r.link {
        Some(l) => {
            let _ = writeln!(s, " ({}, mtu {})", if l.up { "up" } else { "DOWN" }, l.mtu);
        }
        None => {
            let _ = writeln!(s, " (absent)");
        }
    }
}

fn render_agent(s: &mut String, a: &AgentStatus) {
    let _ = writeln!(s, "  public key: {}", a.public_key);
    let _ = writeln!(s, "  listening port: {}", a.listen_port);
    if a.queues > 1 {
        let list = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(" ");
        let _ = writeln!(
            s,
            "  queues: {} (device reads: {}; datagrams received: {})",
            a.queues,
            list(&a.queue_tun_reads),
            list(&a.queue_udp_datagrams)
        );
    }
    let _ = writeln!(
        s,
        "  cluster: {}  node: {}  pid: {}",
        a.cluster, a.node, a.pid
    );
    if a.node_pod_cidrs.is_empty() {
        let _ = writeln!(
            s,
            "  node pod CIDRs: UNKNOWN (node.podCIDRs unset and none on our Node): \
             the tunnel passes no traffic"
        );
    } else {
        let _ = writeln!(s, "  node pod CIDRs: {}", a.node_pod_cidrs.join(", "));
    }
    let _ = writeln!(
        s,
        "  udp buffers: receive {} send {}",
        bytes(a.udp_receive_buffer as u64),
        bytes(a.udp_send_buffer as u64)
    );
}

fn render_peer(s: &mut String, p: &PeerStatus, now_unix: u64) {
    s.push('\n');
    let label = match &p.name {
        Some(n) => format!("{}/{}", p.remote, n),
        None => p.remote.clone(),
    };
    let _ = writeln!(s, "peer: {} ({label})", p.public_key);
    if let Some(ep) = &p.endpoint {
        let _ = writeln!(s, "  endpoint: {ep}");
    }
    let _ = writeln!(s, "  allowed ips: {}", join_or_none(&p.allowed_ips));
    match p.handshake_age(now_unix) {
        Some(age) => {
            let _ = writeln!(s, "  latest handshake: {}", ago(age));
        }
        None => {
            let _ = writeln!(s, "  latest handshake: (none)");
        }
    }
    let _ = writeln!(
        s,
        "  transfer: {} received, {} sent",
        bytes(p.rx_bytes),
        bytes(p.tx_bytes)
    );
    if let Some(k) = p.persistent_keepalive {
        let _ = writeln!(s, "  persistent keepalive: every {k} seconds");
    }
}

fn render_counters(s: &mut String, c: &crate::tunnel::counters::CountersSnapshot) {
    s.push('\n');
    let _ = writeln!(
        s,
        "datagrams: {} received, {} sent, {} handshakes",
        c.rx_datagrams, c.tx_datagrams, c.handshakes_completed
    );
    let _ = writeln!(
        s,
        "dropped: no-peer {} no-endpoint {} bad-packet {} replay {} rate-limited {} unknown-peer {} bad-source {} bad-destination {} bad-source-out {} tun-write {} udp-send {}",
        c.dropped_no_peer,
        c.dropped_no_endpoint,
        c.dropped_bad_packet,
        c.dropped_replay,
        c.dropped_rate_limited,
        c.dropped_unknown_peer,
        c.dropped_bad_source,
        c.dropped_bad_destination,
        c.dropped_bad_source_out,
        c.dropped_tun_write,
        c.dropped_udp_send
    );
}

fn render_proxy(s: &mut String, p: &crate::control::ProxyStatus, now_unix: u64) {
    s.push('\n');
    let _ = write!(
        s,
        "service proxy ({}): {} virtual services, {} real servers",
        p.backend, p.virtual_services, p.real_servers
    );
    match (&p.last_error, p.last_sync_unix) {
        (Some(e), _) => {
            let _ = writeln!(s, "; FAILING: {e}");
        }
        (None, Some(t)) => {
            let _ = writeln!(
                s,
                "; synced {} in {:.1} ms",
                ago(now_unix.saturating_sub(t)),
                p.last_sync_ms
            );
        }
        (None, None) => {
            let _ = writeln!(s, "; not synced yet");
        }
    }
}

fn render_dns(s: &mut String, d: &crate::control::DnsStatus) {
    s.push('\n');
    if let Some(e) = &d.error {
        let _ = writeln!(s, "dns ({}): NOT RUNNING: {e}", d.listen);
        return;
    }
    let zones: Vec<String> = d
        .zones
        .zones
        .iter()
        .map(|z| match z.servfail {
            true => format!("{} (SERVFAIL: remote stale)", z.origin),
            false => format!("{} ({} names, {} records)", z.origin, z.names, z.records),
        })
        .collect();
    let _ = writeln!(s, "dns ({}): zones: {}", d.listen, join_or_none(&zones));
    let q = &d.queries;
    let _ = writeln!(
        s,
        "  queries: udp {} tcp {}; noerror {} nodata {} nxdomain {} refused {} formerr {} truncated {}",
        q.udp_queries, q.tcp_queries, q.noerror, q.nodata, q.nxdomain, q.refused, q.formerr, q.truncated
    );
    if q.forwarded + q.forward_overload > 0 {
        let _ = writeln!(
            s,
            "  forwarded {} (failed {}, over the in-flight limit {})",
            q.forwarded, q.forward_failed, q.forward_overload
        );
    }
}

fn render_routes(s: &mut String, r: &StatusReport) {
    s.push('\n');
    let _ = writeln!(s, "routes (proto {}):", r.route_protocol);
    if let Some(e) = &r.routes_error {
        let _ = writeln!(s, "  error: {e}");
    } else if r.routes.is_empty() {
        let _ = writeln!(s, "  (none)");
    }
    for rt in &r.routes {
        let _ = write!(s, "  {} dev {}", rt.destination, rt.device);
        if let Some(src) = rt.source {
            let _ = write!(s, " src {src}");
        }
        if rt.table != 254 {
            let _ = write!(s, " table {}", rt.table);
        }
        s.push('\n');
    }
}

fn render_advertisement(s: &mut String, a: &AdvertiseStatus, now_unix: u64) {
    let _ = write!(
        s,
        "advertised on our Node via {}: endpoint {}",
        a.api,
        a.endpoint.as_deref().unwrap_or("(none)")
    );
    if let Some(o) = &a.endpoint_override {
        let _ = write!(s, " (override {o})");
    }
    match (a.last_ok_unix, &a.last_error) {
        (_, Some(e)) => {
            let _ = writeln!(s, "; FAILING: {e}");
        }
        (Some(t), None) => {
            let _ = writeln!(s, "; checked {}", ago(now_unix.saturating_sub(t)));
        }
        (None, None) => {
            let _ = writeln!(s, "; pending");
        }
    }
}

/// The `import` line of a remote (none for `import: all`, which filters nothing).
pub(crate) fn import_line(i: &crate::model::ImportReport) -> Option<String> {
    match (i.policy.as_str(), &i.export_api) {
        ("all", _) => None,
        ("exported", Some(api)) => Some(format!(
            "import exported: {} ServiceExports ({api}); {} services not exported",
            i.service_exports, i.not_exported
        )),
        ("exported", None) => Some(format!(
            "import exported: NOTHING IMPORTED: the remote serves no ServiceExport API \
             (install the MCS CRDs there and export Services, or set import: all); \
             {} services not exported",
            i.not_exported
        )),
        (policy, _) => Some(format!("import {policy}")),
    }
}

/// The clusterset's services: ClusterSetIPs, each exporting cluster with its ready endpoints
/// in failover order, and which tier takes new connections now.
fn render_clusterset(s: &mut String, cs: &crate::control::ClusterSetStatus, now_unix: u64) {
    s.push('\n');
    let _ = writeln!(s, "clusterset: {} exported service(s)", cs.services.len());
    match &cs.local {
        Some(l) => {
            let state = match (l.synced, l.stale_since_unix) {
                (_, Some(t)) => format!("STALE since {}", ago(now_unix.saturating_sub(t))),
                (true, None) => "synced".to_string(),
                (false, None) => "syncing".to_string(),
            };
            let _ = writeln!(
                s,
                "  local exports ({}): {state}; services {}, endpoints {}",
                l.name, l.services, l.endpoints
            );
            if let Some(e) = &l.last_error {
                let _ = writeln!(s, "    error: {e}");
            }
            if let Some(line) = l.import.as_ref().and_then(import_line) {
                let _ = writeln!(s, "    {line}");
            }
        }
        None => {
            let _ = writeln!(
                s,
                "  local exports: NOT WATCHED (no local API): this cluster's own endpoints are \
                 not behind the ClusterSetIPs"
            );
        }
    }
    if let Some(c) = &cs.controller {
        let role = if c.leader {
            format!(
                "LEADER (lease {}): writes {} ServiceImport(s) and the exports' conditions{}",
                c.lease,
                c.service_imports,
                c.last_sync_unix
                    .map(|t| format!(", last pass {}", ago(now_unix.saturating_sub(t))))
                    .unwrap_or_default()
            )
        } else {
            format!(
                "follower; {} holds lease {}",
                c.holder.as_deref().unwrap_or("nobody"),
                c.lease
            )
        };
        let _ = writeln!(s, "  controller: {role}");
        if let Some(e) = &c.last_error {
            let _ = writeln!(s, "    error: {e}");
        }
        for k in &c.skipped {
            let _ = writeln!(s, "    skipped {k}");
        }
    }
    for p in &cs.problems {
        let _ = writeln!(s, "  PROBLEM {p}");
    }
    for svc in &cs.services {
        let ips = if svc.headless {
            "headless".to_string()
        } else if svc.ips.is_empty() {
            "no ClusterSetIP".to_string()
        } else {
            svc.ips.join(", ")
        };
        let serving = svc.serving_tier();
        let members: Vec<String> = svc
            .members
            .iter()
            .map(|m| {
                let mark = if Some(m.tier) == serving { "*" } else { "" };
                let local = if m.local { " local" } else { "" };
                format!(
                    "{mark}{}{local} {}/{} ready",
                    m.cluster, m.ready, m.endpoints
                )
            })
            .collect();
        let _ = writeln!(
            s,
            "  {}/{} {ips}: {}",
            svc.namespace,
            svc.name,
            if members.is_empty() {
                "no exporting cluster".to_string()
            } else {
                members.join(", ")
            }
        );
        if !svc.conflicts.is_empty() {
            let _ = writeln!(s, "    CONFLICT {}", svc.conflicts.join(", "));
        }
    }
}

fn render_remotes(s: &mut String, remotes: &[RemoteStatus], now_unix: u64) {
    if remotes.is_empty() {
        return;
    }
    s.push('\n');
    let _ = writeln!(s, "remotes:");
    for r in remotes {
        let source = match r.source {
            SourceKind::Static => "static",
            SourceKind::Kube => "kube",
        };
        let state = match (r.synced, r.stale_since_unix) {
            (_, Some(t)) => format!("STALE since {}", ago(now_unix.saturating_sub(t))),
            (true, None) => "synced".to_string(),
            (false, None) => "syncing".to_string(),
        };
        let _ = writeln!(
            s,
            "  {} ({source}): {state}; peers {}/{} nodes, services {}, endpoints {}, rejected {}",
            r.name,
            r.peers,
            r.nodes,
            r.services,
            r.endpoints,
            r.rejected.len()
        );
        if let Some(e) = &r.last_error {
            let _ = writeln!(s, "    error: {e}");
        }
        if let Some(line) = r.import.as_ref().and_then(import_line) {
            let _ = writeln!(s, "    {line}");
        }
        for l in &r.limits_hit {
            let _ = writeln!(
                s,
                "    LIMIT {}: {}{} ({} ignored so far; config limits)",
                l.kind,
                l.limit,
                if l.now { " reached" } else { " was reached" },
                l.ignored
            );
        }
        // A hostile remote can send thousands: the first ones, then a count.
        const SHOWN: usize = 20;
        for rej in r.rejected.iter().take(SHOWN) {
            let _ = writeln!(s, "    rejected {}: {}", rej.object, rej.reason);
        }
        if r.rejected.len() > SHOWN {
            let _ = writeln!(
                s,
                "    ... and {} more rejected (status --json lists them all)",
                r.rejected.len() - SHOWN
            );
        }
    }
}

fn join_or_none(v: &[String]) -> String {
    if v.is_empty() {
        "(none)".into()
    } else {
        v.join(", ")
    }
}

/// "1 minute, 5 seconds ago", like `wg show`.
pub fn ago(secs: u64) -> String {
    if secs == 0 {
        return "Now".into();
    }
    let units = [
        ("day", 86_400),
        ("hour", 3_600),
        ("minute", 60),
        ("second", 1),
    ];
    let mut rest = secs;
    let mut parts = Vec::new();
    for (name, size) in units {
        let n = rest / size;
        rest %= size;
        if n > 0 {
            parts.push(format!("{n} {name}{}", if n == 1 { "" } else { "s" }));
        }
    }
    format!("{} ago", parts.join(", "))
}

/// "1.50 MiB", like `wg show`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.2} {}", UNITS[i])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::PeerStatus;

    #[test]
    fn formats_like_wg() {
        assert_eq!(ago(0), "Now");
        assert_eq!(ago(65), "1 minute, 5 seconds ago");
        assert_eq!(ago(7200), "2 hours ago");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.50 KiB");
        assert_eq!(bytes(3 * 1024 * 1024), "3.00 MiB");
    }

    #[test]
    fn renders_the_clusterset_with_its_serving_tier() {
        use crate::control::{ClusterSetMemberStatus, ClusterSetServiceStatus, ClusterSetStatus};
        let member = |cluster: &str, local, tier, ready| ClusterSetMemberStatus {
            cluster: cluster.into(),
            local,
            tier,
            endpoints: 2,
            ready,
        };
        let cs = ClusterSetStatus {
            local: None,
            problems: vec![],
            controller: Some(crate::control::McsControllerStatus {
                lease: "sdn-tunnel/sdn-tunnel-mcs".into(),
                holder: Some("a2".into()),
                ..Default::default()
            }),
            services: vec![ClusterSetServiceStatus {
                namespace: "default".into(),
                name: "web".into(),
                headless: false,
                ips: vec!["10.250.0.7".into()],
                members: vec![member("east", true, 0, 0), member("west", false, 1, 2)],
                conflicts: vec!["PortConflict".into()],
            }],
        };
        let mut s = String::new();
        render_clusterset(&mut s, &cs, 1000);
        assert!(s.contains("local exports: NOT WATCHED"), "{s}");
        assert!(
            s.contains("default/web 10.250.0.7: east local 0/2 ready, *west 2/2 ready"),
            "{s}"
        );
        assert!(s.contains("CONFLICT PortConflict"), "{s}");
        assert!(
            s.contains("controller: follower; a2 holds lease sdn-tunnel/sdn-tunnel-mcs"),
            "{s}"
        );
    }

    #[test]
    fn renders_peers_routes_and_absence() {
        let mut r = StatusReport {
            device: "sdn0".into(),
            link: Some(LinkState {
                index: 7,
                mtu: 1420,
                up: true,
            }),
            route_protocol: 93,
            routes: vec![OurRoute {
                destination: "10.132.0.0/14".parse().unwrap(),
                device: "sdn0".into(),
                source: Some("10.128.0.1".parse().unwrap()),
                protocol: 93,
                table: 254,
                metric: None,
            }],
            ..Default::default()
        };
        r.agent = Some(AgentStatus {
            cluster: "east".into(),
            node: "a1".into(),
            device: "sdn0".into(),
            listen_port: 51820,
            public_key: "PUB".into(),
            peers: vec![PeerStatus {
                remote: "west".into(),
                name: Some("b1".into()),
                public_key: "PEER".into(),
                endpoint: Some("192.0.2.1:51820".into()),
                allowed_ips: vec!["10.132.0.0/24".into()],
                latest_handshake_unix: Some(995),
                rx_bytes: 2048,
                tx_bytes: 10,
                persistent_keepalive: Some(25),
                ..Default::default()
            }],
            ..Default::default()
        });
        let t = render_text(&r, 1000);
        assert!(t.contains("interface: sdn0 (up, mtu 1420)"), "{t}");
        assert!(t.contains("peer: PEER (west/b1)"), "{t}");
        assert!(t.contains("latest handshake: 5 seconds ago"), "{t}");
        assert!(t.contains("transfer: 2.00 KiB received, 10 B sent"), "{t}");
        assert!(t.contains("10.132.0.0/14 dev sdn0 src 10.128.0.1"), "{t}");
        assert!(t.contains("node pod CIDRs: UNKNOWN"), "{t}");
        r.agent.as_mut().unwrap().node_pod_cidrs = vec!["10.128.0.0/24".into()];
        let t = render_text(&r, 1000);
        assert!(t.contains("node pod CIDRs: 10.128.0.0/24\n"), "{t}");

        let a = r.agent.as_mut().unwrap();
        a.remotes = vec![
            RemoteStatus {
                name: "west".into(),
                source: SourceKind::Kube,
                synced: true,
                last_sync_unix: Some(990),
                stale_since_unix: Some(970),
                last_error: Some("connection refused".into()),
                nodes: 3,
                peers: 2,
                services: 10,
                endpoints: 25,
                rejected: vec![crate::model::Rejected {
                    remote: "west".into(),
                    object: "node evil".into(),
                    reason: "podCIDR 10.128.0.0/24 is outside remote west podCIDRs".into(),
                }],
                limits_hit: vec![],
                import: Some(crate::model::ImportReport {
                    policy: "exported".into(),
                    export_api: Some("multicluster.x-k8s.io/v1beta1".into()),
                    service_exports: 4,
                    not_exported: 7,
                }),
            },
            RemoteStatus {
                name: "north".into(),
                source: SourceKind::Static,
                synced: true,
                last_sync_unix: Some(990),
                stale_since_unix: None,
                last_error: None,
                nodes: 1,
                peers: 1,
                services: 0,
                endpoints: 0,
                rejected: vec![],
                limits_hit: vec![],
                import: None,
            },
        ];
        a.advertisement = Some(AdvertiseStatus {
            api: "kubeconfig /k".into(),
            endpoint: Some("10.0.0.1:51820".into()),
            endpoint_override: None,
            last_ok_unix: Some(940),
            last_error: None,
        });
        let t = render_text(&r, 1000);
        assert!(
            t.contains("west (kube): STALE since 30 seconds ago; peers 2/3 nodes, services 10, endpoints 25, rejected 1"),
            "{t}"
        );
        assert!(t.contains("    error: connection refused"), "{t}");
        assert!(
            t.contains("    import exported: 4 ServiceExports (multicluster.x-k8s.io/v1beta1); 7 services not exported"),
            "{t}"
        );
        let mut i = r.agent.as_ref().unwrap().remotes[0].import.clone().unwrap();
        i.export_api = None;
        assert!(import_line(&i).unwrap().contains("NOTHING IMPORTED"));
        i.policy = "all".into();
        assert_eq!(import_line(&i), None);
        assert!(
            t.contains("    rejected node evil: podCIDR 10.128.0.0/24 is outside"),
            "{t}"
        );
        assert!(t.contains("north (static): synced; peers 1/1 nodes"), "{t}");
        assert!(
            t.contains("advertised on our Node via kubeconfig /k: endpoint 10.0.0.1:51820; checked 1 minute ago"),
            "{t}"
        );

        r.agent = None;
        r.agent_error = Some("connection refused".into());
        r.link = None;
        r.routes.clear();
        let t = render_text(&r, 1000);
        assert!(
            t.contains("(absent)") && t.contains("not answering") && t.contains("(none)"),
            "{t}"
        );
    }
}
