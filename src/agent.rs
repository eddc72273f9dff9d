//! `sdn-tunnel agent`: wiring and order only. Start-up brings the tunnel up
//! (`bring_up_tunnel`), starts the pipeline (sources -> planner -> one `Arc<Plan>` -> the
//! applier and the proxy; see `remotes`, `apply`, `proxy`), DNS, advertisement and the
//! sockets; `MainLoop` then keeps the kernel converged until a signal or a failure; `teardown`
//! is the one way out (fail closed unless the agent is being uninstalled).

use crate::config::Config;
use crate::control::{self, AgentFacts};
use crate::tunnel::{tun::Tun, uapi, udp::Udp, Device};
use crate::{host, link, nft, routes::Routes};
use anyhow::{Context, Result};
use ipnetwork::IpNetwork;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{watch, Notify};

/// How often routes and the nft table are re-checked (self-heal if someone removed them).
const RESYNC: Duration = Duration::from_secs(30);

mod advertise;
mod apply;
mod key_watch;
mod observe;
pub mod proxy;
mod remotes;
pub mod shutdown;

/// How often the key file is checked for a rotation.
const KEY_POLL: Duration = Duration::from_secs(5);
/// How often peers' liveness is read (once, for the log and the proxy's plan).
const PEER_POLL: Duration = Duration::from_secs(2);
/// Lets a burst of source updates settle into one re-plan.
const REPLAN_DEBOUNCE: Duration = Duration::from_millis(50);

pub async fn run(cfg: Config) -> Result<()> {
    let t = &cfg.tunnel;
    // Registered before anything is built, so a signal during start-up is not lost.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let local_api = if cfg.advertises() {
        cfg.local_api()
    } else {
        None
    };
    if local_api.is_some()
        && crate::keys::create_private_key_file_if_absent(&t.private_key_file)
            .with_context(|| format!("create {}", t.private_key_file.display()))?
    {
        tracing::info!(path = %t.private_key_file.display(), "generated a new private key");
    }
    let key = cfg.load_private_key()?;

    let (device, routes) = bring_up_tunnel(&cfg, key).await?;

    let facts = Arc::new(RwLock::new(AgentFacts {
        cluster: cfg.cluster.name.clone(),
        node: cfg.node_name().to_string(),
        started_at_unix: control::now_unix(),
        ..Default::default()
    }));
    let metrics = Arc::new(crate::metrics::Metrics::default());
    let health = Arc::new(crate::health::Health::default());
    let main_beat = health.beat("main loop");
    health.watch("tunnel tx thread", device.beats.tx.clone());
    health.watch("tunnel rx thread", device.beats.rx.clone());
    health.watch("tunnel timers", device.beats.timers.clone());
    let mut tasks = tokio::task::JoinSet::new();
    if cfg.http.enabled {
        // Bound before anything slow, so the kubelet's probes get answers from the start.
        let listen = cfg.http.listen;
        let listener = crate::listen::tcp(listen).with_context(|| {
            format!(
                "http.listen {listen}: cannot listen (another process on this port? change \
                 http.listen, or set http.enabled: false and drop the probes)"
            )
        })?;
        tracing::info!(%listen, "metrics and probes: /metrics /healthz /readyz");
        let ep = Arc::new(observe::AgentEndpoints::new(
            &cfg,
            device.clone(),
            facts.clone(),
            metrics.clone(),
            health.clone(),
        ));
        tasks.spawn(crate::http::serve(listener, ep));
    }
    // Sources -> planner -> one Arc<Plan> per change -> the applier (peers, DNS zones,
    // status) and the proxy, each following the latest plan.
    let mut remotes = remotes::Remotes::start(&cfg, &mut tasks);
    let first = Arc::new(remotes.plan(&cfg));
    // Routes depend on the config alone (every remote's declared CIDRs, synced or not), so
    // the first plan's routes are the routes for the agent's lifetime.
    let desired_routes = first.desired.routes.clone();
    let first_peers = first.desired.peers.len();
    let (plan_tx, plan_rx) = watch::channel(first.clone());
    let (down_tx, down_rx) = watch::channel(Arc::new(observe::DownPeers::new()));
    if cfg.proxy.backend != crate::config::ProxyBackend::None {
        tracing::info!(backend = ?cfg.proxy.backend, "service proxy for remote ClusterIPs");
        tasks.spawn(
            proxy::ProxyTask {
                cfg: Arc::new(cfg.clone()),
                device: device.clone(),
                plans: plan_rx.clone(),
                down: down_rx,
                facts: facts.clone(),
                metrics: metrics.clone(),
                beat: health.beat("service proxy"),
            }
            .run(),
        );
    }

    let dns = cfg.dns.enabled.then(|| {
        crate::dns::DnsHandle::with_forwarders(
            crate::dns::Zones::default(),
            crate::dns::forward::parse_forwarders(&cfg.dns.forwarders),
        )
    });
    // The first plan is applied before the DNS responder answers and the device runs.
    let mut applier =
        apply::PlanApplier::new(cfg.clone(), device.clone(), facts.clone(), dns.clone());
    applier.apply(&first);
    drop(first);
    if let Some(handle) = &dns {
        let d = &cfg.dns;
        let state = match crate::dns::DnsServer::bind(d.listen, handle.clone()).await {
            Ok(server) => {
                tracing::info!(listen = %d.listen, domain = %d.cluster_set_domain, "DNS responder up");
                tasks.spawn(async move {
                    server.run().await;
                    Err(std::io::Error::other("the DNS responder stopped"))
                });
                Ok(handle.clone())
            }
            // The tunnel matters more than names: keep going, say why in logs and status.
            Err(e) => {
                tracing::error!(listen = %d.listen, error = %e, "DNS responder not started (dns.listen)");
                Err(format!("bind {}: {e}", d.listen))
            }
        };
        facts.write().unwrap_or_else(|e| e.into_inner()).dns = Some((d.listen.to_string(), state));
    }

    // Re-planning runs in a task of its own, off this loop: a hostile remote's snapshot may
    // take a while to plan, and the main loop's heartbeat (/healthz) must not wait for it.
    tasks.spawn(plan_loop(
        remotes,
        cfg.clone(),
        plan_tx,
        health.beat("planner"),
    ));
    tasks.spawn(applier.run(plan_rx, health.beat("plan applier")));

    let key_changed = Arc::new(Notify::new());
    let (own_cidrs_tx, mut own_cidrs) = watch::channel(None);
    match &local_api {
        Some(api) => {
            tracing::info!(%api, node = %cfg.node_name(), "advertising this node's key and endpoint");
            tasks.spawn(
                advertise::AdvertiseTask {
                    api: api.clone(),
                    node_name: cfg.node_name().to_string(),
                    policy: t.endpoint,
                    listen_port: device.listen_port,
                    device: device.clone(),
                    key_changed: key_changed.clone(),
                    facts: facts.clone(),
                    pod_cidrs: own_cidrs_tx,
                }
                .run(),
            );
        }
        None => tracing::info!(
            "not advertising on our Node (no local API: set cluster.kubeconfig or $KUBECONFIG, \
             or run in a pod; node.advertise: never turns this message off)"
        ),
    }
    tasks.spawn(device.clone().run());
    tasks.spawn(uapi::serve(device.clone(), t.uapi_socket_path()));
    tasks.spawn(control::serve(
        device.clone(),
        facts.clone(),
        t.control_socket_path(),
    ));

    // The source address for host traffic needs this node's pod CIDRs; with no node.podCIDRs
    // configured they come from our Node, so give the first advertisement a moment.
    if cfg.node.pod_cidrs.is_empty() && local_api.is_some() {
        let _ = tokio::time::timeout(Duration::from_secs(10), own_cidrs.changed()).await;
    }
    let node_cidrs = node_pod_cidrs(&cfg, &own_cidrs.borrow_and_update());
    warn_if_unknown(&node_cidrs);
    device.set_local_cidrs(node_cidrs.clone());
    // From here on every way out goes through the teardown below (no `?`).
    let outcome = MainLoop {
        cfg: &cfg,
        routes: &routes,
        device: &device,
        desired_routes: &desired_routes,
        first_peers,
        health: &health,
        main_beat,
        tasks: &mut tasks,
        term: &mut term,
        int: &mut int,
        down_tx,
        key_changed,
        own_cidrs,
        node_cidrs,
    }
    .run()
    .await;
    tasks.abort_all();
    device.stop();
    teardown(&cfg, device, local_api.as_ref(), &outcome).await;
    outcome
}

/// The device up and configured, the socket bound: the tunnel half of start-up.
async fn bring_up_tunnel(cfg: &Config, key: [u8; 32]) -> Result<(Arc<Device>, Routes)> {
    let t = &cfg.tunnel;
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
    Ok((device, routes))
}

/// The agent's own loop once everything is started: signals, task failures, peer liveness,
/// key rotation, this node's pod CIDRs, and the periodic kernel resync.
struct MainLoop<'a> {
    cfg: &'a Config,
    routes: &'a Routes,
    device: &'a Arc<Device>,
    desired_routes: &'a [IpNetwork],
    first_peers: usize,
    health: &'a crate::health::Health,
    main_beat: crate::health::Beat,
    tasks: &'a mut tokio::task::JoinSet<std::io::Result<()>>,
    term: &'a mut tokio::signal::unix::Signal,
    int: &'a mut tokio::signal::unix::Signal,
    down_tx: watch::Sender<Arc<observe::DownPeers>>,
    key_changed: Arc<Notify>,
    own_cidrs: watch::Receiver<Option<Vec<IpNetwork>>>,
    node_cidrs: Vec<IpNetwork>,
}

impl MainLoop<'_> {
    /// Ok on SIGTERM/SIGINT; Err when start-up's kernel sync or a task failed.
    async fn run(self) -> Result<()> {
        let MainLoop {
            cfg,
            routes,
            device,
            desired_routes,
            first_peers,
            health,
            main_beat,
            tasks,
            term,
            int,
            down_tx,
            key_changed,
            mut own_cidrs,
            mut node_cidrs,
        } = self;
        let t = &cfg.tunnel;

        let (mut src4, mut src6) = source_addresses(cfg, &node_cidrs, routes).await?;
        let mut ruleset = tunnel_ruleset(cfg, src4, src6);
        sync_kernel(routes, cfg, desired_routes, src4, src6, &ruleset, true).await?;
        health.set_kernel_programmed();
        tracing::info!(routes = desired_routes.len(), peers = first_peers, "ready");

        let mut key_watch = key_watch::KeyWatch::new(t.private_key_file.clone());
        let mut resync = tokio::time::interval(RESYNC);
        resync.tick().await;
        let mut key_tick = tokio::time::interval(KEY_POLL);
        let mut peer_tick = tokio::time::interval(PEER_POLL);
        let mut peer_watch = observe::PeerWatch::default();
        let peer_down_after = Duration::from_secs(cfg.proxy.peer_down_after_seconds.into());
        let judge_peers = cfg.tunnel.persistent_keepalive != 0;
        let mut sources_pending = false;
        loop {
            main_beat.tick();
            tokio::select! {
                _ = term.recv() => break Ok(()),
                _ = int.recv() => break Ok(()),
                Some(res) = tasks.join_next() => {
                    break Err(match res {
                        Ok(Ok(())) => anyhow::anyhow!("an agent task ended unexpectedly"),
                        Ok(Err(e)) => anyhow::Error::from(e).context("agent task failed"),
                        Err(e) => anyhow::Error::from(e).context("agent task panicked"),
                    });
                }
                _ = peer_tick.tick() => {
                    let down = peer_watch.poll(device, peer_down_after, judge_peers);
                    down_tx.send_if_modified(|cur| {
                        let changed = **cur != down;
                        if changed {
                            *cur = Arc::new(down);
                        }
                        changed
                    });
                    continue;
                }
                _ = key_tick.tick() => {
                    if let Some(k) = key_watch.poll() {
                        if device.set_private_key(k) {
                            tracing::info!(public_key = %crate::keys::encode_key(&device.public_key()),
                                "private key rotated; sessions re-handshake");
                            key_changed.notify_one();
                        }
                    }
                    continue;
                }
                Ok(()) = own_cidrs.changed() => {
                    let now = node_pod_cidrs(cfg, &own_cidrs.borrow_and_update());
                    if now == node_cidrs {
                        continue;
                    }
                    node_cidrs = now;
                    warn_if_unknown(&node_cidrs);
                    device.set_local_cidrs(node_cidrs.clone());
                    sources_pending = true;
                }
                _ = resync.tick() => {}
            }
            // Reached after a change of this node's pod CIDRs or a resync tick. New pod CIDRs mean
            // new source addresses and a re-installed nft table (its SNAT source); until they can
            // be found, the routes keep the old ones and each resync retries.
            let mut reinstall = false;
            if sources_pending {
                match source_addresses(cfg, &node_cidrs, routes).await {
                    Ok(src) => {
                        (src4, src6) = src;
                        ruleset = tunnel_ruleset(cfg, src4, src6);
                        sources_pending = false;
                        reinstall = true;
                    }
                    Err(e) => tracing::warn!(error = %format!("{e:#}"),
                    "this node's pod CIDRs changed but no source address for them; retrying at the next resync"),
                }
            }
            if let Err(e) =
                sync_kernel(routes, cfg, desired_routes, src4, src6, &ruleset, reinstall).await
            {
                tracing::warn!(error = %format!("{e:#}"), "kernel sync failed; will retry");
            }
        }
    }
}

/// The one way out: an uninstall (the DaemonSet being deleted) removes everything of ours
/// through the same path as `sdn-tunnel cleanup`; any other stop or failure leaves the
/// device, routes and guards in place (fail closed).
async fn teardown(
    cfg: &Config,
    device: Arc<Device>,
    local_api: Option<&crate::source::kube_client::LocalApi>,
    outcome: &Result<()>,
) {
    let leave = match outcome {
        Ok(()) => shutdown::decide(local_api).await,
        Err(e) => shutdown::Leave::Keep(format!("the agent failed: {e:#}")),
    };
    match leave {
        shutdown::Leave::Remove(why) => {
            tracing::info!(reason = %why, "uninstall: removing the device, routes, nftables tables and service proxy");
            drop(device);
            match crate::cleanup::cleanup(&cfg.tunnel, Some(cfg)).await {
                Ok(r) => tracing::info!(report = ?r, "removed"),
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "cleanup incomplete"),
            }
        }
        shutdown::Leave::Keep(why) => {
            tracing::info!(
                reason = %why,
                "stopping; the device, routes and nftables guards stay (fail closed: remote \
                 traffic is dropped until the agent runs again; `sdn-tunnel cleanup` removes them)"
            );
            for p in [
                cfg.tunnel.uapi_socket_path(),
                cfg.tunnel.control_socket_path(),
            ] {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

/// Re-plans after every change of a remote's snapshot (debounced) and publishes the plan.
/// Planning runs in `block_in_place`: other tasks move to another worker meanwhile. Ticks its
/// heartbeat at least every 10 s while idle.
async fn plan_loop(
    mut remotes: remotes::Remotes,
    cfg: Config,
    plans: watch::Sender<Arc<remotes::Plan>>,
    beat: crate::health::Beat,
) -> std::io::Result<()> {
    let changed = remotes.changed.clone();
    let mut idle = tokio::time::interval(Duration::from_secs(10));
    loop {
        beat.tick();
        tokio::select! {
            _ = changed.notified() => {}
            _ = idle.tick() => continue,
        }
        tokio::time::sleep(REPLAN_DEBOUNCE).await;
        beat.tick();
        let plan = tokio::task::block_in_place(|| remotes.plan(&cfg));
        if plans.send(Arc::new(plan)).is_err() {
            return Ok(());
        }
        crate::memory::release_freed();
    }
}

/// MSS clamping, the fail-closed and input guards, plus (IPVS backend) source NAT of
/// host-originated ClusterIP connections.
fn tunnel_ruleset(
    cfg: &Config,
    src4: Option<std::net::Ipv4Addr>,
    src6: Option<std::net::Ipv6Addr>,
) -> String {
    let t = &cfg.tunnel;
    let remote_cidrs: Vec<IpNetwork> = cfg
        .remotes
        .iter()
        .flat_map(|r| r.pod_cidrs.iter().chain(&r.service_cidrs))
        .copied()
        .collect();
    let base = nft::with_guards(
        &nft::mss_clamp_ruleset(&t.nft_table(), &t.device, t.mtu),
        &t.device,
        &remote_cidrs,
    );
    if cfg.proxy.backend != crate::config::ProxyBackend::Ipvs {
        return base;
    }
    let cidrs = proxy::remote_service_cidrs(cfg);
    nft::with_host_snat(&base, &t.device, &cidrs, src4, src6)
}

/// The device passes only packets to and from this node's pods: without their CIDRs it
/// passes nothing, which is safe but has to be said.
fn warn_if_unknown(node_cidrs: &[IpNetwork]) {
    if node_cidrs.is_empty() {
        tracing::warn!(
            "this node's pod CIDRs are unknown (node.podCIDRs is not set, and our Node has no \
             spec.podCIDRs or sdn-tunnel.io/pod-cidrs annotation): the tunnel passes no traffic \
             until they are known"
        );
    }
}

/// This node's pod CIDRs: from the config, else from our Node.
fn node_pod_cidrs(cfg: &Config, own: &Option<Vec<IpNetwork>>) -> Vec<IpNetwork> {
    if !cfg.node.pod_cidrs.is_empty() {
        return cfg.node.pod_cidrs.clone();
    }
    own.clone().unwrap_or_default()
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
    node_cidrs: &[IpNetwork],
    routes: &Routes,
) -> Result<(Option<std::net::Ipv4Addr>, Option<std::net::Ipv6Addr>)> {
    if let Some(ip) = cfg.node.source_ip {
        return Ok(match ip {
            IpAddr::V4(a) => (Some(a), None),
            IpAddr::V6(a) => (None, Some(a)),
        });
    }
    let (v4, v6) = routes
        .find_local_source(node_cidrs)
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
