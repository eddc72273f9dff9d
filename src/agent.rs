//! `sdn-tunnel agent`: wiring and order only. Start-up brings the tunnel up
//! (`bring_up_tunnel`), starts the pipeline (sources -> planner -> one `Arc<Plan>` -> the
//! reconcilers: peers and DNS (`apply`), the service proxy (`proxy`), routes and the nft table
//! (`kernel`), each run by `reconcile::run` and publishing its own status on the
//! `StatusBoard`), DNS, advertisement and the sockets; `MainLoop` then handles signals, task
//! failures, peer liveness, key rotation and this node's pod CIDRs until a signal or a failure;
//! `teardown` is the one way out (fail closed unless the agent is being uninstalled).

use crate::config::Config;
use crate::control;
use crate::reconcile::{self, Schedule};
use crate::status_board::{self, Identity, StatusBoard};
use crate::tunnel::tun::{Offloads, Tun};
use crate::tunnel::{uapi, udp::Udp, Device};
use crate::{host, link, routes::Routes};
use anyhow::{Context, Result};
use ipnetwork::IpNetwork;
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{watch, Notify};

mod advertise;
mod apply;
mod kernel;
mod key_watch;
pub mod mcs_lease;
mod mcs_writer;
mod observe;
pub mod proxy;
mod remotes;
pub mod shutdown;

/// How often routes and the nft table are re-checked (self-heal if someone removed them).
const RESYNC: Duration = Duration::from_secs(30);
/// Heartbeat of reconcilers that only act on changes and resyncs.
const IDLE: Duration = Duration::from_secs(10);
/// How often the key file is checked for a rotation.
const KEY_POLL: Duration = Duration::from_secs(5);
/// How often peers' liveness is read (once, for the log and the proxy's plan).
const PEER_POLL: Duration = Duration::from_secs(2);
/// Lets a burst of source updates settle into one re-plan.
const REPLAN_DEBOUNCE: Duration = Duration::from_millis(50);

type Tasks = tokio::task::JoinSet<std::io::Result<()>>;

pub async fn run(cfg: Config) -> Result<()> {
    // Registered before anything is built, so a signal during start-up is not lost.
    let mut signals = Signals {
        term: signal(SignalKind::terminate())?,
        int: signal(SignalKind::interrupt())?,
    };
    let local_api = if cfg.advertises() {
        cfg.local_api()
    } else {
        None
    };
    // Before the device is touched: a second agent on it would share its queues and port.
    let _instance = crate::instance_lock::InstanceLock::acquire(&cfg.tunnel.device)?;
    let key = load_or_create_key(&cfg, local_api.is_some())?;
    let (device, routes) = bring_up_tunnel(&cfg, key).await?;

    let (board, publish) = StatusBoard::new(Identity {
        cluster: cfg.cluster.name.clone(),
        node: cfg.node_name().to_string(),
        started_at_unix: control::now_unix(),
    });
    let board = Arc::new(board);
    let metrics = Arc::new(crate::metrics::Metrics::default());
    let health = Arc::new(device_health(&device));
    let mut tasks = Tasks::new();
    if cfg.http.enabled {
        start_http(&cfg, &device, &board, &metrics, &health, &mut tasks)?;
    }
    let pipeline = start_pipeline(
        &cfg,
        &device,
        publish.plan,
        publish.proxy,
        publish.dns,
        &metrics,
        &health,
        &mut tasks,
    )
    .await;

    if let Some(api) = mcs_writer::wanted(&cfg) {
        tasks.spawn(
            mcs_writer::McsController {
                cfg: Arc::new(cfg.clone()),
                api,
                plans: pipeline.plans.clone(),
                status: publish.mcs,
            }
            .run(),
        );
    }
    let key_changed = Arc::new(Notify::new());
    let mut own_cidrs = start_advertise(
        &cfg,
        local_api.as_ref(),
        &device,
        publish.advertisement,
        &key_changed,
        &mut tasks,
    );
    tasks.spawn(device.clone().run());
    tasks.spawn(uapi::serve(device.clone(), cfg.tunnel.uapi_socket_path()));
    tasks.spawn(control::serve(
        device.clone(),
        board.clone(),
        cfg.tunnel.control_socket_path(),
    ));

    let node_cidrs = first_node_cidrs(&cfg, local_api.is_some(), &mut own_cidrs).await;
    device.set_local_cidrs(node_cidrs.clone());
    // From here on every way out goes through the teardown below (no `?`).
    let outcome = async {
        let kernel_tx = start_kernel(&cfg, routes, node_cidrs, &health, &mut tasks).await?;
        tracing::info!(peers = pipeline.first_peers, "ready");
        MainLoop {
            cfg: &cfg,
            device: &device,
            main_beat: health.beat("main loop"),
            tasks: &mut tasks,
            signals: &mut signals,
            down_tx: pipeline.down_tx,
            key_changed,
            own_cidrs,
            kernel_tx,
        }
        .run()
        .await
    }
    .await;
    tasks.abort_all();
    device.stop();
    teardown(&cfg, device, local_api.as_ref(), &outcome).await;
    outcome
}

/// Liveness watches the packet threads and the timers from the start.
fn device_health(device: &Device) -> crate::health::Health {
    let health = crate::health::Health::default();
    for (q, beat) in device.beats.queues.iter().enumerate() {
        health.watch(format!("tunnel queue {q} thread"), beat.clone());
    }
    health.watch("tunnel timers", device.beats.timers.clone());
    health
}

/// This node's pod CIDRs at start-up. The source address for host traffic needs them; with no
/// node.podCIDRs configured they come from our Node, so give the first advertisement a moment.
async fn first_node_cidrs(
    cfg: &Config,
    advertising: bool,
    own_cidrs: &mut watch::Receiver<Option<Vec<IpNetwork>>>,
) -> Vec<IpNetwork> {
    if cfg.node.pod_cidrs.is_empty() && advertising {
        let _ = tokio::time::timeout(Duration::from_secs(10), own_cidrs.changed()).await;
    }
    let node_cidrs = node_pod_cidrs(cfg, &own_cidrs.borrow_and_update());
    warn_if_unknown(&node_cidrs);
    node_cidrs
}

/// The kernel reconciler's first full sync (an error stops the agent before it reports ready),
/// then its loop; returns where the main loop publishes this node's pod CIDRs to it.
async fn start_kernel(
    cfg: &Config,
    routes: Routes,
    node_cidrs: Vec<IpNetwork>,
    health: &crate::health::Health,
    tasks: &mut Tasks,
) -> Result<watch::Sender<Arc<Vec<IpNetwork>>>> {
    let node_cidrs = Arc::new(node_cidrs);
    let kernel = kernel::KernelReconciler::start(cfg.clone(), routes, node_cidrs.clone()).await?;
    health.set_kernel_programmed();
    tracing::info!(routes = kernel.routes(), "routes and nft table programmed");
    let (kernel_tx, kernel_rx) = watch::channel(node_cidrs);
    let schedule = Schedule {
        tick: IDLE,
        resync: Some(RESYNC),
    };
    let beat = health.beat("routes and nft table");
    tasks.spawn(reconcile::run(kernel, kernel_rx, schedule, beat));
    Ok(kernel_tx)
}

/// Keeps our Node's annotations equal to our key and endpoint (when there is a local API);
/// the returned channel carries our Node's pod CIDRs once read.
fn start_advertise(
    cfg: &Config,
    local_api: Option<&crate::source::kube_client::LocalApi>,
    device: &Arc<Device>,
    status: watch::Sender<Option<crate::control::AdvertiseStatus>>,
    key_changed: &Arc<Notify>,
    tasks: &mut Tasks,
) -> watch::Receiver<Option<Vec<IpNetwork>>> {
    let (own_cidrs_tx, own_cidrs) = watch::channel(None);
    match local_api {
        Some(api) => {
            tracing::info!(%api, node = %cfg.node_name(), "advertising this node's key and endpoint");
            tasks.spawn(
                advertise::AdvertiseTask {
                    api: api.clone(),
                    node_name: cfg.node_name().to_string(),
                    policy: cfg.tunnel.endpoint,
                    listen_port: device.listen_port,
                    device: device.clone(),
                    key_changed: key_changed.clone(),
                    status,
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
    own_cidrs
}

/// The private key from its file; an advertising agent first creates a missing one.
fn load_or_create_key(cfg: &Config, advertises: bool) -> Result<[u8; 32]> {
    let path = &cfg.tunnel.private_key_file;
    if advertises
        && crate::keys::create_private_key_file_if_absent(path)
            .with_context(|| format!("create {}", path.display()))?
    {
        tracing::info!(path = %path.display(), "generated a new private key");
    }
    Ok(cfg.load_private_key()?)
}

/// What the main loop keeps of the started pipeline.
struct Pipeline {
    first_peers: usize,
    /// Where the main loop publishes peer liveness for the proxy.
    down_tx: watch::Sender<Arc<observe::DownPeers>>,
    /// Every plan, for consumers started after the pipeline.
    plans: watch::Receiver<Arc<remotes::Plan>>,
}

/// Sources -> planner -> one `Arc<Plan>` per change -> the reconcilers, each following the
/// latest plan. The first plan is applied (peers, zones) before the DNS responder answers and
/// the device runs.
#[allow(clippy::too_many_arguments)] // one status sender per stage, handed over by value
async fn start_pipeline(
    cfg: &Config,
    device: &Arc<Device>,
    plan_status: watch::Sender<status_board::PlanStatus>,
    proxy_status: watch::Sender<Option<crate::control::ProxyStatus>>,
    dns_status: watch::Sender<Option<status_board::DnsState>>,
    metrics: &Arc<crate::metrics::Metrics>,
    health: &crate::health::Health,
    tasks: &mut Tasks,
) -> Pipeline {
    let mut remotes = remotes::Remotes::start(cfg, tasks);
    let first = Arc::new(remotes.plan(cfg));
    let first_peers = first.desired.peers.len();
    let (plan_tx, plan_rx) = watch::channel(first.clone());
    let (down_tx, down_rx) = watch::channel(Arc::new(observe::DownPeers::new()));
    if cfg.proxy.backend != crate::config::ProxyBackend::None {
        tracing::info!(backend = ?cfg.proxy.backend, "service proxy for remote ClusterIPs");
        tasks.spawn(
            proxy::ProxyTask {
                cfg: Arc::new(cfg.clone()),
                plans: plan_rx.clone(),
                down: down_rx,
                status: proxy_status,
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
    let mut applier =
        apply::PlanApplier::new(cfg.clone(), device.clone(), plan_status, dns.clone());
    applier.apply(&first);
    drop(first);
    if let Some(handle) = dns {
        dns_status.send_replace(Some(start_dns(cfg, handle, tasks).await));
    }
    // Re-planning runs in a task of its own, off the main loop: a hostile remote's snapshot
    // may take a while to plan, and the main loop's heartbeat (/healthz) must not wait for it.
    tasks.spawn(plan_loop(
        remotes,
        cfg.clone(),
        plan_tx,
        health.beat("planner"),
    ));
    let idle = Schedule {
        tick: IDLE,
        resync: None,
    };
    tasks.spawn(reconcile::run(
        applier,
        plan_rx.clone(),
        idle,
        health.beat("plan applier"),
    ));
    Pipeline {
        first_peers,
        down_tx,
        plans: plan_rx,
    }
}

/// Binds the metrics and probes listener (before anything slow, so the kubelet's probes get
/// answers from the start) and serves it.
fn start_http(
    cfg: &Config,
    device: &Arc<Device>,
    board: &Arc<StatusBoard>,
    metrics: &Arc<crate::metrics::Metrics>,
    health: &Arc<crate::health::Health>,
    tasks: &mut Tasks,
) -> Result<()> {
    let listen = cfg.http.listen;
    let listener = crate::listen::tcp(listen).with_context(|| {
        format!(
            "http.listen {listen}: cannot listen (another process on this port? change \
             http.listen, or set http.enabled: false and drop the probes)"
        )
    })?;
    tracing::info!(%listen, "metrics and probes: /metrics /healthz /readyz");
    let ep = Arc::new(observe::AgentEndpoints::new(
        cfg,
        device.clone(),
        board.clone(),
        metrics.clone(),
        health.clone(),
    ));
    tasks.spawn(crate::http::serve(listener, ep));
    Ok(())
}

/// Starts the DNS responder; a failure to bind is reported in logs and status, and the agent
/// keeps going (the tunnel matters more than names).
async fn start_dns(
    cfg: &Config,
    handle: crate::dns::DnsHandle,
    tasks: &mut Tasks,
) -> status_board::DnsState {
    let d = &cfg.dns;
    let state = match crate::dns::DnsServer::bind(d.listen, handle.clone()).await {
        Ok(server) => {
            tracing::info!(listen = %d.listen, domain = %d.cluster_set_domain, "DNS responder up");
            tasks.spawn(async move {
                server.run().await;
                Err(std::io::Error::other("the DNS responder stopped"))
            });
            Ok(handle)
        }
        Err(e) => {
            tracing::error!(listen = %d.listen, error = %e, "DNS responder not started (dns.listen)");
            Err(format!("bind {}: {e}", d.listen))
        }
    };
    (d.listen.to_string(), state)
}

/// The device up and configured, the socket bound: the tunnel half of start-up.
async fn bring_up_tunnel(cfg: &Config, key: [u8; 32]) -> Result<(Arc<Device>, Routes)> {
    let t = &cfg.tunnel;
    let any_ipv6 = cfg.all_cidrs().any(|n| n.is_ipv6());
    if host::enable_ip_forward(any_ipv6).context("enable IP forwarding")? {
        tracing::info!("enabled IP forwarding (needed to forward pod traffic into the tunnel)");
    }
    let queues = t.queue_count();
    let opened = Tun::create(&t.device, t.offloads, queues).context("create the tunnel device")?;
    if opened.single_queue_device && queues > 1 {
        tracing::warn!(device = %t.device, queues,
            "the tunnel device was created without multi-queue (by an earlier version); \
             running one queue. `sdn-tunnel cleanup` while the agent is stopped recreates it");
    }
    match opened.offloads {
        Offloads::On if opened.uso => {
            tracing::info!(device = %t.device, "TUN offloads on (TSO, USO, checksum)")
        }
        Offloads::On => tracing::info!(device = %t.device,
            "TUN offloads on (TSO, checksum; USO refused by this kernel, needs 6.2)"),
        Offloads::Refused(why) => tracing::warn!(device = %t.device, reason = %why,
            "TUN offloads refused by the kernel; packets are read one by one (slower, correct)"),
        Offloads::Off => {
            tracing::info!(device = %t.device, "TUN offloads off (tunnel.offloads: false)")
        }
    }
    let routes = Routes::new(t.route_protocol).context("open rtnetlink")?;
    // Before the link goes up, so no router solicitation or MLD report is ever sent into it.
    if !any_ipv6 {
        host::disable_ipv6_on(&t.device).context("disable IPv6 on the tunnel device")?;
    }
    link::set_up_with_mtu(routes.handle(), &t.device, t.mtu as u32)
        .await
        .with_context(|| format!("bring {} up with mtu {}", t.device, t.mtu))?;
    host::set_rp_filter_loose(&t.device).context("set rp_filter")?;
    let udps = Udp::bind_group(t.listen_port, t.udp_buffer_bytes, opened.queues.len())?;
    let device = Device::with_queues(opened.queues.into_iter().zip(udps).collect(), key)?;
    let (rcv, snd) = device.udp_buffer_sizes();
    let (udp_gso, udp_gro) = device.udp_offloads();
    tracing::info!(
        device = %t.device,
        port = device.listen_port,
        public_key = %crate::keys::encode_key(&device.public_key()),
        udp_rcvbuf = rcv,
        udp_sndbuf = snd,
        udp_gso,
        udp_gro,
        queues = device.queue_count(),
        "tunnel up"
    );
    Ok((device, routes))
}

struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

/// The agent's own loop once everything is started: signals, task failures, peer liveness,
/// key rotation and this node's pod CIDRs (handed to the device and the kernel reconciler).
struct MainLoop<'a> {
    cfg: &'a Config,
    device: &'a Arc<Device>,
    main_beat: crate::health::Beat,
    tasks: &'a mut Tasks,
    signals: &'a mut Signals,
    down_tx: watch::Sender<Arc<observe::DownPeers>>,
    key_changed: Arc<Notify>,
    own_cidrs: watch::Receiver<Option<Vec<IpNetwork>>>,
    kernel_tx: watch::Sender<Arc<Vec<IpNetwork>>>,
}

impl MainLoop<'_> {
    /// Ok on SIGTERM/SIGINT; Err when a task failed.
    async fn run(mut self) -> Result<()> {
        let cfg = self.cfg;
        let mut key_watch = key_watch::KeyWatch::new(cfg.tunnel.private_key_file.clone());
        let mut key_tick = tokio::time::interval(KEY_POLL);
        let mut peer_tick = tokio::time::interval(PEER_POLL);
        let mut peer_watch = observe::PeerWatch::default();
        let peer_down_after = Duration::from_secs(cfg.proxy.peer_down_after_seconds.into());
        let judge_peers = cfg.tunnel.persistent_keepalive != 0;
        loop {
            self.main_beat.tick();
            tokio::select! {
                _ = self.signals.term.recv() => return Ok(()),
                _ = self.signals.int.recv() => return Ok(()),
                Some(res) = self.tasks.join_next() => {
                    return Err(match res {
                        Ok(Ok(())) => anyhow::anyhow!("an agent task ended unexpectedly"),
                        Ok(Err(e)) => anyhow::Error::from(e).context("agent task failed"),
                        Err(e) => anyhow::Error::from(e).context("agent task panicked"),
                    });
                }
                _ = peer_tick.tick() => {
                    let down = peer_watch.poll(self.device, peer_down_after, judge_peers);
                    self.down_tx.send_if_modified(|cur| {
                        let changed = **cur != down;
                        if changed {
                            *cur = Arc::new(down);
                        }
                        changed
                    });
                }
                _ = key_tick.tick() => {
                    if let Some(k) = key_watch.poll() {
                        if self.device.set_private_key(k) {
                            tracing::info!(public_key = %crate::keys::encode_key(&self.device.public_key()),
                                "private key rotated; sessions re-handshake");
                            self.key_changed.notify_one();
                        }
                    }
                }
                Ok(()) = self.own_cidrs.changed() => {
                    let now = node_pod_cidrs(cfg, &self.own_cidrs.borrow_and_update());
                    if now != **self.kernel_tx.borrow() {
                        warn_if_unknown(&now);
                        self.device.set_local_cidrs(now.clone());
                        self.kernel_tx.send_replace(Arc::new(now));
                    }
                }
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
