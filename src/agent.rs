//! `sdn-tunnel agent`: brings the tunnel up from a validated config, keeps the kernel state
//! converged, and removes everything of ours on SIGTERM/SIGINT.

use crate::config::Config;
use crate::control::{self, AgentFacts};
use crate::tunnel::{tun::Tun, uapi, udp::Udp, Device};
use crate::{host, link, model, nft, routes::Routes};
use anyhow::{Context, Result};
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};

/// How often routes and the nft table are re-checked (self-heal if someone removed them).
const RESYNC: Duration = Duration::from_secs(30);

pub async fn run(cfg: Config) -> Result<()> {
    let key = cfg.load_private_key()?;
    let t = &cfg.tunnel;
    let desired = model::plan(&cfg);
    for r in &desired.rejected {
        tracing::warn!(remote = %r.remote, object = %r.object, reason = %r.reason, "rejected");
    }

    let any_ipv6 = cfg.all_cidrs().any(|n| n.is_ipv6());
    if host::enable_ip_forward(any_ipv6).context("enable IP forwarding")? {
        tracing::info!("enabled IP forwarding (needed to forward pod traffic into the tunnel)");
    }
    let tun = Tun::create(&t.device).context("create the tunnel device")?;
    let routes = Routes::new(t.route_protocol).context("open rtnetlink")?;
    // Before the link goes up, so no router solicitation or MLD report is ever sent into it.
    if !any_ipv6 {
        host::disable_ipv6_on(&t.device).context("disable IPv6 on the tunnel device")?;
    }
    link::set_up_with_mtu(routes.handle(), &t.device, t.mtu as u32)
        .await
        .with_context(|| format!("bring {} up with mtu {}", t.device, t.mtu))?;
    host::set_rp_filter_loose(&t.device).context("set rp_filter")?;
    let udp = Udp::bind(t.listen_port, t.udp_buffer_bytes)?;
    let device = Device::new(tun, udp, key)?;
    let (rcv, snd) = device.udp_buffer_sizes();
    tracing::info!(
        device = %t.device,
        port = device.listen_port,
        public_key = %crate::keys::encode_key(&device.public_key()),
        udp_rcvbuf = rcv,
        udp_sndbuf = snd,
        "tunnel up"
    );
    let changes = device.set_peers(&desired.peers);
    for p in &changes.added {
        tracing::info!(peer = %p, "peer added");
    }

    let (src4, src6) = source_addresses(&cfg, &routes).await?;
    let facts = Arc::new(RwLock::new(AgentFacts {
        cluster: cfg.cluster.name.clone(),
        node: cfg.node_name().to_string(),
        started_at_unix: control::now_unix(),
        rejected: desired.rejected.clone(),
    }));

    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(device.clone().run());
    tasks.spawn(uapi::serve(device.clone(), t.uapi_socket_path()));
    tasks.spawn(control::serve(
        device.clone(),
        facts,
        t.control_socket_path(),
    ));

    let ruleset = nft::mss_clamp_ruleset(&t.nft_table(), &t.device, t.mtu);
    sync_kernel(&routes, &cfg, &desired.routes, src4, src6, &ruleset, true).await?;
    tracing::info!(
        routes = desired.routes.len(),
        peers = desired.peers.len(),
        "ready"
    );

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut resync = tokio::time::interval(RESYNC);
    resync.tick().await;
    let outcome: Result<()> = loop {
        tokio::select! {
            _ = term.recv() => break Ok(()),
            _ = int.recv() => break Ok(()),
            Some(res) = tasks.join_next() => {
                break Err(match res {
                    Ok(Ok(())) => anyhow::anyhow!("a device task ended unexpectedly"),
                    Ok(Err(e)) => anyhow::Error::from(e).context("device task failed"),
                    Err(e) => anyhow::Error::from(e).context("device task panicked"),
                });
            }
            _ = resync.tick() => {
                if let Err(e) = sync_kernel(&routes, &cfg, &desired.routes, src4, src6, &ruleset, false).await {
                    tracing::warn!(error = %format!("{e:#}"), "resync failed; will retry");
                }
            }
        }
    };
    tracing::info!("shutting down: removing our routes, nft table and device");
    tasks.abort_all();
    device.stop();
    teardown(&cfg, &routes).await;
    drop(device);
    outcome
}

async fn sync_kernel(
    routes: &Routes,
    cfg: &Config,
    desired: &[ipnetwork::IpNetwork],
    src4: Option<std::net::Ipv4Addr>,
    src6: Option<std::net::Ipv6Addr>,
    ruleset: &str,
    first: bool,
) -> Result<()> {
    let t = &cfg.tunnel;
    let ch = routes
        .reconcile(&t.device, desired, src4, src6)
        .await
        .context("program routes")?;
    for r in &ch.added {
        if first {
            tracing::debug!(route = %r, "route added");
        } else {
            tracing::info!(route = %r, "route restored");
        }
    }
    for r in &ch.removed {
        tracing::info!(route = %r, "stale route removed");
    }
    if first || !nft::table_exists(&t.nft_table()).unwrap_or(false) {
        nft::apply(ruleset).context("install the MSS clamping nftables table")?;
        if !first {
            tracing::info!(table = %t.nft_table(), "nftables table restored");
        }
    }
    Ok(())
}

/// The source address for host-originated packets into the tunnel: config, else a local
/// address inside this node's pod CIDRs (e.g. the CNI bridge gateway).
async fn source_addresses(
    cfg: &Config,
    routes: &Routes,
) -> Result<(Option<std::net::Ipv4Addr>, Option<std::net::Ipv6Addr>)> {
    if let Some(ip) = cfg.node.source_ip {
        return Ok(match ip {
            IpAddr::V4(a) => (Some(a), None),
            IpAddr::V6(a) => (None, Some(a)),
        });
    }
    let (v4, v6) = routes
        .find_local_source(&cfg.node.pod_cidrs)
        .await
        .context("look for a local address inside node.podCIDRs")?;
    if v4.is_none() && v6.is_none() {
        tracing::warn!(
            "no local address inside node.podCIDRs: traffic from this host itself (not its pods) \
             to remote pods would leave with an underlay source the remote cannot route back; \
             set node.sourceIP or give this node an address in its pod CIDR"
        );
    } else {
        tracing::info!(v4 = ?v4, v6 = ?v6, "source address for host-originated tunnel traffic");
    }
    Ok((v4, v6))
}

/// Removes our routes and nft table; the TUN device goes when its fd closes.
async fn teardown(cfg: &Config, routes: &Routes) {
    let t = &cfg.tunnel;
    if let Err(e) = routes.remove_all().await {
        tracing::warn!(error = %e, "removing routes");
    }
    if let Err(e) = nft::delete_table(&t.nft_table()) {
        tracing::warn!(error = %e, "removing nftables table");
    }
    for p in [t.uapi_socket_path(), t.control_socket_path()] {
        let _ = std::fs::remove_file(p);
    }
}
