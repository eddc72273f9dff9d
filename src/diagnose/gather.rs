//! Collects the [`Facts`] for `diagnose`: sysctls, devices, routes and addresses over
//! rtnetlink, our nftables tables, IPVS, bound UDP ports, the clock and the agent's status.
//! Read-only: nothing here changes the system. Every piece that fails becomes an `Err` with
//! the reason, so one missing capability never hides the other checks.

use super::facts::{
    ClockFact, ConfigFacts, Facts, HttpFact, IpvsFacts, KernelRoute, LinkFact, LocalAddress, Read,
    RemoteFact, Toward, UnderlayTarget,
};
use crate::config::{Config, ProxyBackend};
use crate::control::{self, AgentStatus};
use crate::{host, link, nft};
use futures::TryStreamExt;
use ipnetwork::IpNetwork;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::route::RouteMessage;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// Gathers everything. Must run inside a tokio runtime (rtnetlink). Blocking parts (control
/// socket, nft, IPVS) are short and run before the netlink connection is opened.
pub async fn gather(cfg: &Config, stale_after_secs: u64) -> Facts {
    let config = config_facts(cfg);
    let agent = control::fetch(&cfg.tunnel.control_socket_path()).map_err(|e| e.to_string());
    let underlay_targets = underlay_targets(cfg, agent.as_ref().ok());
    let tunnel_table = nft::list_table(&config.nft_table).map_err(|e| e.to_string());
    let proxy_table = (config.proxy_backend == ProxyBackend::Nftables)
        .then(|| nft::table_exists(&config.proxy_table).map_err(|e| e.to_string()));
    let ipvs = (config.proxy_backend == ProxyBackend::Ipvs).then(ipvs_facts);
    let (links, routes, addresses) = netlink_facts().await;
    Facts {
        now_unix: control::now_unix(),
        stale_after_secs,
        ip_forward_v4: sysctl("net.ipv4.ip_forward"),
        ip_forward_v6: config
            .any_ipv6
            .then(|| sysctl("net.ipv6.conf.all.forwarding")),
        rp_filter_all: sysctl("net.ipv4.conf.all.rp_filter")
            .and_then(|v| v.parse().map_err(|e| format!("{v:?}: {e}"))),
        config,
        links,
        routes,
        addresses,
        underlay_targets,
        tunnel_table,
        proxy_table,
        ipvs,
        udp_port_holders: crate::port_owner::udp_port_holders(
            agent
                .as_ref()
                .map(|a| a.listen_port)
                .unwrap_or(cfg.tunnel.listen_port),
        )
        .map_err(|e| format!("/proc/net/udp: {e}")),
        clock: clock(),
        agent,
        http: cfg.http.enabled.then(|| http_readyz(cfg.http.listen)),
    }
}

/// Asks the agent's `/readyz` as the kubelet would (plain HTTP/1.1, 3 s timeouts).
fn http_readyz(listen: SocketAddr) -> HttpFact {
    use std::io::{Read as _, Write as _};
    let mut addr = listen;
    if addr.ip().is_unspecified() {
        // IPv4 loopback for both wildcards: `[::]` is bound dual-stack (src/listen.rs), or
        // falls back to 0.0.0.0 on a kernel without IPv6.
        addr.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    let url = format!("http://{addr}/readyz");
    let timeout = std::time::Duration::from_secs(3);
    let readyz = (|| -> std::io::Result<(u16, String)> {
        let mut s = std::net::TcpStream::connect_timeout(&addr, timeout)?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        write!(
            s,
            "GET /readyz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )?;
        let mut raw = String::new();
        s.take(64 * 1024).read_to_string(&mut raw)?;
        let code = raw.get(9..12).and_then(|c| c.parse().ok()).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP response")
        })?;
        let body = raw.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
        Ok((code, body.trim().to_string()))
    })()
    .map_err(|e| e.to_string());
    HttpFact { url, readyz }
}

/// What the config says, planned as the agent plans it (routes of remotes without snapshots
/// are the same as with them).
pub fn config_facts(cfg: &Config) -> ConfigFacts {
    let t = &cfg.tunnel;
    ConfigFacts {
        device: t.device.clone(),
        mtu: t.mtu,
        listen_port: t.listen_port,
        route_protocol: t.route_protocol,
        nft_table: t.nft_table(),
        proxy_backend: cfg.proxy.backend,
        proxy_table: crate::agent::proxy::nft_table(cfg),
        vip_device: cfg.proxy.device.clone(),
        remotes: cfg
            .remotes
            .iter()
            .map(|r| RemoteFact {
                name: r.name.clone(),
                pod_cidrs: r.pod_cidrs.clone(),
                service_cidrs: r.service_cidrs.clone(),
                live: r.static_source.is_none(),
            })
            .collect(),
        routes: crate::model::plan(cfg, &Default::default()).routes,
        any_ipv6: cfg.all_cidrs().any(|n| n.is_ipv6()),
    }
}

fn sysctl(name: &str) -> Read<String> {
    host::read_sysctl(name).map_err(|e| e.to_string())
}

/// The peers' endpoints (the agent's view, else the config's static peers), else the default
/// routes.
fn underlay_targets(cfg: &Config, agent: Option<&AgentStatus>) -> Vec<UnderlayTarget> {
    let mut out: Vec<UnderlayTarget> = match agent {
        Some(a) => a
            .peers
            .iter()
            .filter_map(|p| {
                let ep: SocketAddr = p.endpoint.as_deref()?.parse().ok()?;
                Some(UnderlayTarget {
                    label: format!(
                        "peer {}/{}",
                        p.remote,
                        p.name.as_deref().unwrap_or(&p.public_key)
                    ),
                    to: Toward::Address(ep.ip().to_canonical()),
                })
            })
            .collect(),
        None => cfg
            .remotes
            .iter()
            .flat_map(|r| {
                r.static_source
                    .iter()
                    .flat_map(|s| s.peers.iter())
                    .filter_map(move |p| {
                        let ep: SocketAddr = p.endpoint.as_deref()?.parse().ok()?;
                        Some(UnderlayTarget {
                            label: format!(
                                "peer {}/{}",
                                r.name,
                                p.name.as_deref().unwrap_or(&p.public_key)
                            ),
                            to: Toward::Address(ep.ip().to_canonical()),
                        })
                    })
            })
            .collect(),
    };
    if out.is_empty() {
        for ipv6 in [false, true] {
            out.push(UnderlayTarget {
                label: format!("IPv{} default route", if ipv6 { 6 } else { 4 }),
                to: Toward::DefaultRoute { ipv6 },
            });
        }
    }
    out
}

fn ipvs_facts() -> IpvsFacts {
    IpvsFacts {
        available: crate::proxy::ipvs::IpvsClient::new()
            .map(drop)
            .map_err(|e| e.to_string()),
        sysctls: crate::proxy::ipvs_backend::SYSCTLS
            .iter()
            .map(|(name, want, _)| (name.to_string(), want.to_string(), sysctl(name)))
            .collect(),
    }
}

type NetlinkFacts = (
    Read<BTreeMap<String, LinkFact>>,
    Read<Vec<KernelRoute>>,
    Read<Vec<LocalAddress>>,
);

async fn netlink_facts() -> NetlinkFacts {
    let handle = match link::connect() {
        Ok(h) => h,
        Err(e) => {
            let e = e.to_string();
            return (Err(e.clone()), Err(e.clone()), Err(e));
        }
    };
    let links = dump_links(&handle).await;
    let names: HashMap<u32, String> = match &links {
        Ok(l) => l.iter().map(|(i, name, _)| (*i, name.clone())).collect(),
        Err(_) => HashMap::new(),
    };
    let routes = dump_routes(&handle, &names).await;
    let addresses = dump_addresses(&handle, &names).await;
    let links = links.map(|l| l.into_iter().map(|(_, n, f)| (n, f)).collect());
    (links, routes, addresses)
}

async fn dump_links(handle: &rtnetlink::Handle) -> Read<Vec<(u32, String, LinkFact)>> {
    let mut out = Vec::new();
    let mut stream = handle.link().get().execute();
    while let Some(msg) = stream
        .try_next()
        .await
        .map_err(|e| format!("list devices: {}", link::describe(&e)))?
    {
        let info = link::link_info(&msg);
        // Slash form: device names may contain dots.
        let rp_filter = host::read_sysctl(&format!("net/ipv4/conf/{}/rp_filter", info.name))
            .ok()
            .and_then(|v| v.parse().ok());
        out.push((
            info.index,
            info.name,
            LinkFact {
                mtu: info.mtu,
                up: info.up,
                rp_filter,
            },
        ));
    }
    Ok(out)
}

async fn dump_routes(
    handle: &rtnetlink::Handle,
    names: &HashMap<u32, String>,
) -> Read<Vec<KernelRoute>> {
    let msgs = crate::routes::main_table_routes(handle, None)
        .await
        .map_err(|e| format!("list routes: {}", link::describe(&e)))?;
    Ok(msgs.iter().map(|m| kernel_route(m, names)).collect())
}

fn kernel_route(msg: &RouteMessage, names: &HashMap<u32, String>) -> KernelRoute {
    let f = crate::routes::route_fields(msg);
    KernelRoute {
        destination: f.destination,
        device: f
            .oif
            .and_then(|i| names.get(&i).cloned())
            .unwrap_or_default(),
        metric: f.metric.unwrap_or(0),
        protocol: u8::from(msg.header.protocol),
        kind: format!("{:?}", msg.header.kind).to_lowercase(),
    }
}

async fn dump_addresses(
    handle: &rtnetlink::Handle,
    names: &HashMap<u32, String>,
) -> Read<Vec<LocalAddress>> {
    let mut out = Vec::new();
    let mut stream = handle.address().get().execute();
    while let Some(msg) = stream
        .try_next()
        .await
        .map_err(|e| format!("list addresses: {}", link::describe(&e)))?
    {
        let mut local = None;
        let mut address = None;
        for attr in &msg.attributes {
            match attr {
                AddressAttribute::Local(a) => local = Some(*a),
                AddressAttribute::Address(a) => address = Some(*a),
                _ => {}
            }
        }
        // IFA_LOCAL is the local address; IFA_ADDRESS is the peer on point-to-point links.
        let Some(ip) = local.or(address) else {
            continue;
        };
        if let Ok(address) = IpNetwork::new(ip, msg.header.prefix_len) {
            out.push(LocalAddress {
                address,
                device: names.get(&msg.header.index).cloned().unwrap_or_default(),
            });
        }
    }
    Ok(out)
}

/// adjtimex(2) with no modes only reads the kernel's clock state.
fn clock() -> Read<ClockFact> {
    // SAFETY: a zeroed timex (modes 0: read only) is a valid argument.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    // SAFETY: tx is a valid, writable timex.
    let rc = unsafe { libc::adjtimex(&mut tx) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    Ok(ClockFact {
        unsynchronized: tx.status & libc::STA_UNSYNC != 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_facts_plan_the_routes() {
        let cfg = Config::parse(
            "cluster: {name: east, podCIDRs: [10.128.0.0/14]}\n\
             node: {name: a1}\n\
             tunnel: {device: sdn0, mtu: 1400}\n\
             proxy: {backend: nftables}\n\
             remotes:\n\
             \x20 - {name: west, podCIDRs: [10.132.0.0/14], serviceCIDRs: [172.31.0.0/16], static: {peers: []}}\n",
            None,
        )
        .unwrap();
        let c = config_facts(&cfg);
        assert_eq!(
            c.routes,
            vec![
                "10.132.0.0/14".parse::<IpNetwork>().unwrap(),
                "172.31.0.0/16".parse().unwrap()
            ]
        );
        assert_eq!(c.mtu, 1400);
        assert_eq!(c.nft_table, "sdn_tunnel_sdn0");
        assert_eq!(c.proxy_table, "sdn_tunnel_sdn0_proxy");
        assert!(!c.remotes[0].live);
        let t = underlay_targets(&cfg, None);
        assert_eq!(t.len(), 2, "no endpoints: both default routes");
        assert!(matches!(t[0].to, Toward::DefaultRoute { ipv6: false }));

        // The agent's peers' endpoints win; v4-mapped ones are IPv4 (60 bytes of overhead).
        let agent = AgentStatus {
            peers: vec![crate::control::PeerStatus {
                remote: "west".into(),
                name: Some("b1".into()),
                endpoint: Some("[::ffff:192.168.77.21]:51820".into()),
                ..Default::default()
            }],
            ..Default::default()
        };
        let t = underlay_targets(&cfg, Some(&agent));
        assert_eq!(
            t,
            vec![UnderlayTarget {
                label: "peer west/b1".into(),
                to: Toward::Address("192.168.77.21".parse().unwrap()),
            }]
        );
    }
}
