//! One scrape: a fresh registry filled from an [`AgentStatus`] snapshot plus the persistent
//! [`Metrics`], encoded as OpenMetrics text. Pure.

use super::{reasons, Metrics};
use crate::control::AgentStatus;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;

type Labels = Vec<(&'static str, String)>;
type FGauge = Gauge<f64, AtomicU64>;

/// What a scrape renders from.
pub struct RenderInput<'a> {
    pub status: &'a AgentStatus,
    pub metrics: &'a Metrics,
    pub now_unix: u64,
    /// A peer whose last handshake is older than this (or that never had one) is down.
    pub peer_down_after_secs: u64,
    pub ready: bool,
}

fn counter_family(reg: &mut Registry, name: &str, help: &str) -> Family<Labels, Counter> {
    let f = Family::<Labels, Counter>::default();
    reg.register(name, help, f.clone());
    f
}

fn gauge_family(reg: &mut Registry, name: &str, help: &str) -> Family<Labels, FGauge> {
    let f = Family::<Labels, FGauge>::default();
    reg.register(name, help, f.clone());
    f
}

fn gauge(reg: &mut Registry, name: &str, help: &str, v: f64) {
    let g = FGauge::default();
    g.set(v);
    reg.register(name, help, g);
}

fn counter(reg: &mut Registry, name: &str, help: &str, v: u64) {
    let c = Counter::<u64>::default();
    c.inc_by(v);
    reg.register(name, help, c);
}

pub fn render(input: &RenderInput<'_>) -> String {
    let s = input.status;
    let mut reg = Registry::with_prefix("sdn_tunnel");
    agent(&mut reg, input);
    peers(&mut reg, input);
    drops(&mut reg, s);
    remotes(&mut reg, input);
    proxy(&mut reg, input);
    clusterset(&mut reg, s);
    dns(&mut reg, s);
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &reg);
    out
}

fn agent(reg: &mut Registry, input: &RenderInput<'_>) {
    let info = gauge_family(
        reg,
        "build_info",
        "Version of the running agent (always 1).",
    );
    info.get_or_create(&vec![("version", env!("CARGO_PKG_VERSION").to_string())])
        .set(1.0);
    gauge(
        reg,
        "start_time_seconds",
        "Unix time the agent started.",
        input.status.started_at_unix as f64,
    );
    gauge(
        reg,
        "ready",
        "1 if /readyz would answer 200.",
        if input.ready { 1.0 } else { 0.0 },
    );
}

fn peers(reg: &mut Registry, input: &RenderInput<'_>) {
    let rx = counter_family(
        reg,
        "peer_receive_bytes",
        "Bytes received from the peer (WireGuard payload, as `wg show`).",
    );
    let tx = counter_family(reg, "peer_transmit_bytes", "Bytes sent to the peer.");
    let age = gauge_family(
        reg,
        "peer_last_handshake_age_seconds",
        "Seconds since the last completed handshake (absent: none yet).",
    );
    let up = gauge_family(
        reg,
        "peer_up",
        "1 if the peer completed a handshake within proxy.peerDownAfterSeconds.",
    );
    let attempts = counter_family(
        reg,
        "peer_handshake_attempts",
        "Handshake initiations sent to the peer.",
    );
    let failures = counter_family(
        reg,
        "peer_handshake_failures",
        "Handshake initiations that got no response before the next retry.",
    );
    let total = gauge_family(reg, "peers", "Peers programmed, by remote cluster.");
    let total_up = gauge_family(reg, "peers_up", "Peers that are up, by remote cluster.");
    let mut per_remote: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for p in &input.status.peers {
        let name = p
            .name
            .clone()
            .unwrap_or_else(|| p.public_key.chars().take(8).collect());
        let l: Labels = vec![("remote", p.remote.clone()), ("peer", name)];
        rx.get_or_create(&l).inc_by(p.rx_bytes);
        tx.get_or_create(&l).inc_by(p.tx_bytes);
        attempts.get_or_create(&l).inc_by(p.handshake_attempts);
        failures.get_or_create(&l).inc_by(p.handshake_failures);
        let a = p.handshake_age(input.now_unix);
        if let Some(a) = a {
            age.get_or_create(&l).set(a as f64);
        }
        let is_up = a.is_some_and(|a| a <= input.peer_down_after_secs);
        up.get_or_create(&l).set(if is_up { 1.0 } else { 0.0 });
        let e = per_remote.entry(p.remote.as_str()).or_default();
        e.0 += 1;
        e.1 += u64::from(is_up);
    }
    // Every remote gets a series, also one without peers (0 up of 0 is worth alerting on).
    for r in &input.status.remotes {
        per_remote.entry(r.name.as_str()).or_default();
    }
    for (remote, (n, n_up)) in per_remote {
        let l: Labels = vec![("remote", remote.to_string())];
        total.get_or_create(&l).set(n as f64);
        total_up.get_or_create(&l).set(n_up as f64);
    }
}

fn drops(reg: &mut Registry, s: &AgentStatus) {
    let c = &s.counters;
    let dropped = counter_family(
        reg,
        "dropped_packets",
        "Packets the tunnel dropped, by reason (no_peer: no peer's AllowedIPs match the \
         destination; bad_packet: malformed or failed authentication; replay; rate_limited: \
         handshake load shedding; unknown_peer; bad_source: source outside the sender's \
         AllowedIPs; bad_destination: a peer's packet for anything but this node's pods; \
         bad_source_out: a packet entering the tunnel with a source not of this node's pods; \
         no_endpoint; tun_write, udp_send: local errors).",
    );
    for (reason, v) in [
        ("no_peer", c.dropped_no_peer),
        ("no_endpoint", c.dropped_no_endpoint),
        ("bad_packet", c.dropped_bad_packet),
        ("replay", c.dropped_replay),
        ("rate_limited", c.dropped_rate_limited),
        ("unknown_peer", c.dropped_unknown_peer),
        ("bad_source", c.dropped_bad_source),
        ("bad_destination", c.dropped_bad_destination),
        ("bad_source_out", c.dropped_bad_source_out),
        ("tun_write", c.dropped_tun_write),
        ("udp_send", c.dropped_udp_send),
    ] {
        dropped
            .get_or_create(&vec![("reason", reason.to_string())])
            .inc_by(v);
    }
    counter(
        reg,
        "handshakes",
        "Handshakes completed (all peers).",
        c.handshakes_completed,
    );
    counter(
        reg,
        "received_datagrams",
        "UDP datagrams received on the tunnel port.",
        c.rx_datagrams,
    );
    counter(
        reg,
        "sent_datagrams",
        "UDP datagrams sent from the tunnel port.",
        c.tx_datagrams,
    );
}

fn remotes(reg: &mut Registry, input: &RenderInput<'_>) {
    let synced = gauge_family(
        reg,
        "remote_synced",
        "1 if the remote's API delivered a complete snapshot and is not failing now.",
    );
    let stale = gauge_family(
        reg,
        "remote_stale",
        "1 while the remote's API fails (its last good snapshot is still served).",
    );
    let age = gauge_family(
        reg,
        "remote_last_sync_age_seconds",
        "Seconds since the last successful list or watch event from the remote.",
    );
    let objects = gauge_family(
        reg,
        "remote_objects",
        "Objects of the remote in use, by kind (node: nodes running the agent; service; \
         endpoint).",
    );
    let rejected = gauge_family(
        reg,
        "remote_rejected_objects",
        "Objects of the remote refused, by reason class.",
    );
    let at_limit = gauge_family(
        reg,
        "remote_at_limit",
        "1 while the remote has more objects of a kind than config limits allows (the rest \
         are ignored).",
    );
    let ignored = gauge_family(
        reg,
        "remote_ignored_objects",
        "Objects of the remote ignored because a config limit was reached, by kind, since \
         the agent started.",
    );
    let not_exported = gauge_family(
        reg,
        "remote_services_not_exported",
        "Services of the remote left out because nothing exports them (import: exported).",
    );
    let export_api = gauge_family(
        reg,
        "remote_export_api_served",
        "import: exported: 1 if the remote serves a ServiceExport API, 0 if not (then \
         nothing of it is imported).",
    );
    for r in &input.status.remotes {
        let l: Labels = vec![("remote", r.name.clone())];
        let is_stale = r.stale_since_unix.is_some();
        if let Some(i) = r.import.as_ref().filter(|i| i.policy == "exported") {
            not_exported.get_or_create(&l).set(i.not_exported as f64);
            export_api
                .get_or_create(&l)
                .set(if i.export_api.is_some() { 1.0 } else { 0.0 });
        }
        for h in &r.limits_hit {
            let l = vec![("remote", r.name.clone()), ("kind", h.kind.clone())];
            at_limit
                .get_or_create(&l)
                .set(if h.now { 1.0 } else { 0.0 });
            ignored.get_or_create(&l).set(h.ignored as f64);
        }
        synced
            .get_or_create(&l)
            .set(if r.synced && !is_stale { 1.0 } else { 0.0 });
        stale
            .get_or_create(&l)
            .set(if is_stale { 1.0 } else { 0.0 });
        if let Some(t) = r.last_sync_unix {
            age.get_or_create(&l)
                .set(input.now_unix.saturating_sub(t) as f64);
        }
        for (kind, n) in [
            ("node", r.nodes),
            ("service", r.services),
            ("endpoint", r.endpoints),
        ] {
            objects
                .get_or_create(&vec![("remote", r.name.clone()), ("kind", kind.into())])
                .set(n as f64);
        }
        let mut by_reason: BTreeMap<&str, usize> = BTreeMap::new();
        for x in &r.rejected {
            *by_reason.entry(reasons::classify(&x.reason)).or_default() += 1;
        }
        for (reason, n) in by_reason {
            rejected
                .get_or_create(&vec![
                    ("remote", r.name.clone()),
                    ("reason", reason.to_string()),
                ])
                .set(n as f64);
        }
    }
}

fn proxy(reg: &mut Registry, input: &RenderInput<'_>) {
    let m = input.metrics;
    if let Some(p) = &input.status.proxy {
        gauge(
            reg,
            "proxy_virtual_services",
            "Virtual services (remote ClusterIP:port) programmed.",
            p.virtual_services as f64,
        );
        gauge(
            reg,
            "proxy_real_servers",
            "Real servers (remote endpoints) programmed.",
            p.real_servers as f64,
        );
        if let Some(t) = p.last_sync_unix {
            gauge(
                reg,
                "proxy_last_sync_time_seconds",
                "Unix time of the last successful proxy sync.",
                t as f64,
            );
        }
    }
    reg.register(
        "proxy_sync_duration_seconds",
        "Time of one service proxy reconcile (diff and kernel writes).",
        m.proxy_sync_seconds.clone(),
    );
    reg.register(
        "proxy_sync_errors",
        "Service proxy reconciles that failed.",
        m.proxy_sync_errors.clone(),
    );
    reg.register(
        "network_programming_duration_seconds",
        "From a remote Service/EndpointSlice change to the kernel programmed (the Kubernetes \
         SLI; start: endpoints.kubernetes.io/last-change-trigger-time, else when the watch \
         delivered it).",
        m.network_programming_seconds.clone(),
    );
}

/// ClusterSetIPs (`mcs.clusterSetCIDRs`): only with them on.
fn clusterset(reg: &mut Registry, s: &AgentStatus) {
    let Some(cs) = &s.clusterset else { return };
    gauge(
        reg,
        "clusterset_services",
        "Exported services of the cluster set this node serves (ClusterSetIPs and headless).",
        cs.services.len() as f64,
    );
    let remote = cs
        .services
        .iter()
        .filter(|svc| {
            svc.members.iter().any(|m| m.local) && svc.serving_tier().is_some_and(|t| t > 0)
        })
        .count();
    gauge(
        reg,
        "clusterset_services_failed_over",
        "Services exported by this cluster too whose new connections go to another cluster: \
         no local endpoint is ready.",
        remote as f64,
    );
    gauge(
        reg,
        "clusterset_conflicts",
        "Exported services whose exports conflict across clusters (KEP-1645 resolution applied).",
        cs.services
            .iter()
            .filter(|s| !s.conflicts.is_empty())
            .count() as f64,
    );
    if let Some(c) = &cs.controller {
        gauge(
            reg,
            "mcs_controller_leader",
            "1 if this agent holds the MCS controller Lease and writes ServiceImports and \
             ServiceExport conditions.",
            if c.leader { 1.0 } else { 0.0 },
        );
    }
}

fn dns(reg: &mut Registry, s: &AgentStatus) {
    let Some(d) = &s.dns else { return };
    let q = &d.queries;
    let responses = counter_family(
        reg,
        "dns_responses",
        "DNS responses by rcode (NOERROR includes empty answers).",
    );
    for (rcode, v) in [
        ("NOERROR", q.noerror + q.nodata),
        ("NXDOMAIN", q.nxdomain),
        ("REFUSED", q.refused),
        ("FORMERR", q.formerr),
        ("NOTIMP", q.notimp),
        ("SERVFAIL", q.servfail),
        ("BADVERS", q.badvers),
    ] {
        responses
            .get_or_create(&vec![("rcode", rcode.to_string())])
            .inc_by(v);
    }
    let queries = counter_family(reg, "dns_queries", "DNS queries by transport.");
    for (t, v) in [("udp", q.udp_queries), ("tcp", q.tcp_queries)] {
        queries
            .get_or_create(&vec![("transport", t.to_string())])
            .inc_by(v);
    }
    counter(
        reg,
        "dns_forwarded_queries",
        "Queries outside our zones relayed to dns.forwarders.",
        q.forwarded,
    );
    let fwd_failed = counter_family(
        reg,
        "dns_forward_failures",
        "Forwarded queries answered SERVFAIL by us (failed: no forwarder answered in time; \
         overload: too many forwards in flight).",
    );
    for (reason, v) in [
        ("failed", q.forward_failed),
        ("overload", q.forward_overload),
    ] {
        fwd_failed
            .get_or_create(&vec![("reason", reason.to_string())])
            .inc_by(v);
    }
    counter(
        reg,
        "dns_truncated_responses",
        "UDP responses sent truncated (the client retries over TCP).",
        q.truncated,
    );
    counter(
        reg,
        "dns_dropped_messages",
        "DNS messages not answered (shorter than a header, or responses).",
        q.dropped,
    );
    gauge(
        reg,
        "dns_up",
        "1 if the DNS responder is listening.",
        if d.error.is_none() { 1.0 } else { 0.0 },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{PeerStatus, ProxyStatus, RemoteStatus};
    use crate::model::Rejected;
    use crate::source::SourceKind;

    fn status() -> AgentStatus {
        let mut s = AgentStatus {
            started_at_unix: 1000,
            clusterset: Some(crate::control::ClusterSetStatus {
                services: vec![crate::control::ClusterSetServiceStatus {
                    members: vec![
                        crate::control::ClusterSetMemberStatus {
                            cluster: "east".into(),
                            local: true,
                            tier: 0,
                            endpoints: 1,
                            ready: 0,
                        },
                        crate::control::ClusterSetMemberStatus {
                            cluster: "west".into(),
                            local: false,
                            tier: 1,
                            endpoints: 1,
                            ready: 1,
                        },
                    ],
                    ..Default::default()
                }],
                controller: Some(crate::control::McsControllerStatus {
                    leader: true,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        s.peers.push(PeerStatus {
            remote: "west".into(),
            name: Some("b1".into()),
            public_key: "KEYKEYKEY".into(),
            latest_handshake_unix: Some(1990),
            rx_bytes: 123,
            tx_bytes: 456,
            handshake_attempts: 3,
            handshake_failures: 1,
            ..Default::default()
        });
        s.peers.push(PeerStatus {
            remote: "west".into(),
            name: None,
            public_key: "ABCDEFGHIJK".into(),
            latest_handshake_unix: None,
            ..Default::default()
        });
        s.remotes.push(RemoteStatus {
            name: "west".into(),
            source: SourceKind::Kube,
            synced: true,
            last_sync_unix: Some(1995),
            stale_since_unix: None,
            last_error: None,
            nodes: 2,
            peers: 2,
            services: 7,
            endpoints: 30,
            rejected: vec![
                Rejected {
                    remote: "west".into(),
                    object: "node x".into(),
                    reason: "no podCIDRs".into(),
                },
                Rejected {
                    remote: "west".into(),
                    object: "node y".into(),
                    reason: "no podCIDRs".into(),
                },
            ],
            limits_hit: vec![],
            import: Some(crate::model::ImportReport {
                policy: "exported".into(),
                export_api: Some("multicluster.x-k8s.io/v1beta1".into()),
                service_exports: 7,
                not_exported: 3,
            }),
        });
        s.remotes.push(RemoteStatus {
            name: "north".into(),
            source: SourceKind::Kube,
            synced: false,
            last_sync_unix: None,
            stale_since_unix: Some(1500),
            last_error: Some("connection refused".into()),
            nodes: 0,
            peers: 0,
            services: 0,
            endpoints: 0,
            rejected: vec![],
            limits_hit: vec![],
            import: None,
        });
        s.counters.dropped_no_peer = 9;
        s.proxy = Some(ProxyStatus {
            virtual_services: 7,
            real_servers: 30,
            ..Default::default()
        });
        s
    }

    fn lines(text: &str) -> Vec<&str> {
        text.lines().filter(|l| !l.starts_with('#')).collect()
    }

    #[test]
    fn renders_peers_remotes_drops_and_proxy() {
        let s = status();
        let m = Metrics::default();
        m.observe_proxy_sync(std::time::Duration::from_millis(3));
        let text = render(&RenderInput {
            status: &s,
            metrics: &m,
            now_unix: 2000,
            peer_down_after_secs: 180,
            ready: true,
        });
        let l = lines(&text);
        for want in [
            r#"sdn_tunnel_peer_receive_bytes_total{remote="west",peer="b1"} 123"#,
            r#"sdn_tunnel_peer_transmit_bytes_total{remote="west",peer="b1"} 456"#,
            r#"sdn_tunnel_peer_last_handshake_age_seconds{remote="west",peer="b1"} 10.0"#,
            r#"sdn_tunnel_peer_up{remote="west",peer="b1"} 1.0"#,
            r#"sdn_tunnel_peer_up{remote="west",peer="ABCDEFGH"} 0.0"#,
            r#"sdn_tunnel_peer_handshake_failures_total{remote="west",peer="b1"} 1"#,
            r#"sdn_tunnel_peers{remote="west"} 2.0"#,
            r#"sdn_tunnel_peers_up{remote="west"} 1.0"#,
            r#"sdn_tunnel_peers{remote="north"} 0.0"#,
            r#"sdn_tunnel_dropped_packets_total{reason="no_peer"} 9"#,
            r#"sdn_tunnel_remote_synced{remote="west"} 1.0"#,
            r#"sdn_tunnel_remote_synced{remote="north"} 0.0"#,
            r#"sdn_tunnel_remote_stale{remote="north"} 1.0"#,
            r#"sdn_tunnel_remote_last_sync_age_seconds{remote="west"} 5.0"#,
            r#"sdn_tunnel_remote_objects{remote="west",kind="service"} 7.0"#,
            r#"sdn_tunnel_remote_rejected_objects{remote="west",reason="no_pod_cidrs"} 2.0"#,
            r#"sdn_tunnel_remote_services_not_exported{remote="west"} 3.0"#,
            r#"sdn_tunnel_remote_export_api_served{remote="west"} 1.0"#,
            r#"sdn_tunnel_proxy_virtual_services 7.0"#,
            r#"sdn_tunnel_clusterset_services 1.0"#,
            r#"sdn_tunnel_clusterset_services_failed_over 1.0"#,
            r#"sdn_tunnel_clusterset_conflicts 0.0"#,
            r#"sdn_tunnel_mcs_controller_leader 1.0"#,
            r#"sdn_tunnel_proxy_sync_duration_seconds_count 1"#,
            r#"sdn_tunnel_ready 1.0"#,
        ] {
            assert!(l.contains(&want), "missing {want} in\n{text}");
        }
        // No age series for a peer that never handshook, no DNS section without DNS.
        assert!(!text.contains(r#"peer_last_handshake_age_seconds{remote="west",peer="ABCDEFGH"}"#));
        assert!(!text.contains("dns_"));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn peer_up_follows_the_monotonic_age_not_the_wall_clock() {
        let mut s = status();
        // The wall clock stepped 1000 s ahead since the handshake; the agent's monotonic
        // age says 3 s: the peer is up.
        s.peers[0].latest_handshake_unix = Some(1000);
        s.peers[0].handshake_age_secs = Some(3);
        let text = render(&RenderInput {
            status: &s,
            metrics: &Metrics::default(),
            now_unix: 2000,
            peer_down_after_secs: 180,
            ready: true,
        });
        let l = lines(&text);
        assert!(l.contains(&r#"sdn_tunnel_peer_up{remote="west",peer="b1"} 1.0"#));
        assert!(l.contains(
            &r#"sdn_tunnel_peer_last_handshake_age_seconds{remote="west",peer="b1"} 3.0"#
        ));
    }

    #[test]
    fn dns_responses_by_rcode() {
        let mut s = status();
        s.dns = Some(crate::control::DnsStatus {
            queries: crate::dns::DnsCountersSnapshot {
                noerror: 5,
                nodata: 2,
                nxdomain: 3,
                udp_queries: 10,
                ..Default::default()
            },
            ..Default::default()
        });
        let text = render(&RenderInput {
            status: &s,
            metrics: &Metrics::default(),
            now_unix: 2000,
            peer_down_after_secs: 180,
            ready: false,
        });
        let l = lines(&text);
        assert!(l.contains(&r#"sdn_tunnel_dns_responses_total{rcode="NOERROR"} 7"#));
        assert!(l.contains(&r#"sdn_tunnel_dns_responses_total{rcode="NXDOMAIN"} 3"#));
        assert!(l.contains(&r#"sdn_tunnel_dns_queries_total{transport="udp"} 10"#));
        assert!(l.contains(&"sdn_tunnel_dns_up 1.0"));
    }
}
