//! The agent's control socket (`<runDir>/sdn-tunnel/<device>.sock`, 0600): on connect it writes
//! one JSON `AgentStatus` and closes. `sdn-tunnel status` reads it; the kernel-side facts
//! (routes, link) status reads from the kernel itself.

use crate::model::Rejected;
use crate::source::SourceKind;
use crate::tunnel::counters::CountersSnapshot;
use crate::tunnel::Device;
use serde::{Deserialize, Serialize};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::AsyncWriteExt;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentStatus {
    pub cluster: String,
    pub node: String,
    pub device: String,
    pub listen_port: u16,
    pub public_key: String,
    pub pid: u32,
    pub started_at_unix: u64,
    pub udp_receive_buffer: usize,
    pub udp_send_buffer: usize,
    /// Queues of the device (each a TUN queue, a socket and a thread).
    #[serde(default)]
    pub queues: usize,
    /// Per queue: reads from its TUN queue (packets or TSO super-packets leaving) and
    /// datagrams received on its socket (arriving): how the kernel spread the work.
    #[serde(default)]
    pub queue_tun_reads: Vec<u64>,
    #[serde(default)]
    pub queue_udp_datagrams: Vec<u64>,
    pub peers: Vec<PeerStatus>,
    pub counters: CountersSnapshot,
    pub rejected: Vec<Rejected>,
    #[serde(default)]
    pub remotes: Vec<RemoteStatus>,
    /// `mcs.clusterSetCIDRs` set: the clusterset's services and the local exports source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clusterset: Option<ClusterSetStatus>,
    #[serde(default)]
    pub advertisement: Option<AdvertiseStatus>,
    #[serde(default)]
    pub proxy: Option<ProxyStatus>,
    #[serde(default)]
    pub dns: Option<DnsStatus>,
    /// This node's pod CIDRs as the device has them: the only destinations a peer's packets
    /// may have and the only sources packets entering the tunnel may have. Empty: unknown,
    /// the tunnel passes nothing.
    #[serde(default)]
    pub node_pod_cidrs: Vec<String>,
}

/// The clusterset as this node serves it (ClusterSetIPs on).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSetStatus {
    /// The local cluster's exports source (None: no local API, so this cluster's own exports
    /// are not members).
    pub local: Option<RemoteStatus>,
    pub services: Vec<ClusterSetServiceStatus>,
    /// Why ClusterSetIPs could not be allocated.
    #[serde(default)]
    pub problems: Vec<String>,
    /// The MCS controller of this cluster as this agent sees it (None: `mcs.controller` off
    /// or no local API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller: Option<McsControllerStatus>,
}

/// The Lease-elected writer of ServiceExport conditions and ServiceImports.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct McsControllerStatus {
    /// The Lease `<namespace>/<name>`.
    pub lease: String,
    /// Its holder as last read (an agent's node name).
    pub holder: Option<String>,
    /// This agent holds it and writes.
    pub leader: bool,
    /// Unix seconds of the last complete write pass (leader only).
    pub last_sync_unix: Option<u64>,
    pub service_imports: usize,
    /// ServiceExports whose conditions were written in the last pass (unchanged ones are not).
    pub conditions_written: usize,
    /// Why some objects could not be written (e.g. a namespace missing here), one line each.
    #[serde(default)]
    pub skipped: Vec<String>,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSetServiceStatus {
    pub namespace: String,
    pub name: String,
    pub headless: bool,
    pub ips: Vec<String>,
    pub members: Vec<ClusterSetMemberStatus>,
    /// KEP-1645 conflict reasons; empty without a conflict.
    #[serde(default)]
    pub conflicts: Vec<String>,
}

impl ClusterSetServiceStatus {
    /// The failover tier that takes new connections now (the lowest with a ready endpoint),
    /// by readiness alone.
    pub fn serving_tier(&self) -> Option<u32> {
        self.members
            .iter()
            .filter(|m| m.ready > 0)
            .map(|m| m.tier)
            .min()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSetMemberStatus {
    pub cluster: String,
    pub local: bool,
    pub tier: u32,
    pub endpoints: usize,
    pub ready: usize,
}

/// The DNS responder: zones served with record counts, and queries by outcome.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DnsStatus {
    pub listen: String,
    pub error: Option<String>,
    pub zones: crate::dns::ZoneStats,
    pub queries: crate::dns::DnsCountersSnapshot,
}

/// The service proxy (remote ClusterIPs).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyStatus {
    pub backend: String,
    pub virtual_services: usize,
    pub real_servers: usize,
    pub last_sync_unix: Option<u64>,
    pub last_sync_ms: f64,
    pub last_error: Option<String>,
    /// What the agent last programmed, with each service's remote/namespace/name.
    pub services: std::sync::Arc<Vec<crate::proxy::model::VirtualService>>,
}

/// One remote cluster as the agent sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RemoteStatus {
    pub name: String,
    pub source: SourceKind,
    pub synced: bool,
    pub last_sync_unix: Option<u64>,
    /// Set while the remote's API is failing; we keep serving the last good snapshot.
    pub stale_since_unix: Option<u64>,
    pub last_error: Option<String>,
    /// Nodes that advertise a key (before confinement).
    pub nodes: usize,
    /// Peers programmed from this remote.
    pub peers: usize,
    pub services: usize,
    pub endpoints: usize,
    pub rejected: Vec<Rejected>,
    /// Limits (config `limits`) this remote reached.
    #[serde(default)]
    pub limits_hit: Vec<crate::model::LimitHit>,
    /// What `import` let through (kubeconfig remotes).
    #[serde(default)]
    pub import: Option<crate::model::ImportReport>,
}

/// Our own Node's annotations (self-advertisement).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdvertiseStatus {
    /// Where the local API is (kubeconfig path or in-cluster).
    pub api: String,
    pub endpoint: Option<String>,
    pub endpoint_override: Option<String>,
    pub last_ok_unix: Option<u64>,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerStatus {
    pub remote: String,
    pub name: Option<String>,
    pub public_key: String,
    pub endpoint: Option<String>,
    pub allowed_ips: Vec<String>,
    pub latest_handshake_unix: Option<u64>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub persistent_keepalive: Option<u16>,
    #[serde(default)]
    pub handshake_attempts: u64,
    #[serde(default)]
    pub handshake_failures: u64,
    /// Seconds since the last handshake on the agent's monotonic clock (what peer-down
    /// decisions use; `latest_handshake_unix` is for people and moves with clock steps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handshake_age_secs: Option<u64>,
}

impl PeerStatus {
    /// Seconds since the last handshake: the monotonic age when the agent gave one, else
    /// from the wall-clock timestamp.
    pub fn handshake_age(&self, now_unix: u64) -> Option<u64> {
        self.handshake_age_secs.or_else(|| {
            self.latest_handshake_unix
                .map(|t| now_unix.saturating_sub(t))
        })
    }
}

/// What the agent knows beyond the device itself, as assembled from every stage's published
/// status ([`crate::status_board::StatusBoard::facts`]).
#[derive(Default, Clone)]
pub struct AgentFacts {
    pub cluster: String,
    pub node: String,
    pub started_at_unix: u64,
    pub rejected: Vec<Rejected>,
    pub remotes: Vec<RemoteStatus>,
    pub clusterset: Option<ClusterSetStatus>,
    pub advertisement: Option<AdvertiseStatus>,
    pub proxy: Option<ProxyStatus>,
    /// Listen address and the running responder (or why it isn't running).
    pub dns: Option<(String, Result<crate::dns::DnsHandle, String>)>,
}

pub fn snapshot(dev: &Device, facts: &AgentFacts) -> AgentStatus {
    let (rcv, snd) = dev.udp_buffer_sizes();
    let queues = dev.queue_counters();
    AgentStatus {
        cluster: facts.cluster.clone(),
        node: facts.node.clone(),
        device: dev.name.clone(),
        listen_port: dev.listen_port,
        public_key: crate::keys::encode_key(&dev.public_key()),
        pid: std::process::id(),
        started_at_unix: facts.started_at_unix,
        udp_receive_buffer: rcv,
        udp_send_buffer: snd,
        queues: dev.queue_count(),
        queue_tun_reads: queues.iter().map(|c| c.0).collect(),
        queue_udp_datagrams: queues.iter().map(|c| c.1).collect(),
        peers: dev
            .peers()
            .peers
            .iter()
            .map(|p| {
                let info = p.info();
                let stats = p.stats();
                PeerStatus {
                    remote: info.remote,
                    name: info.name,
                    public_key: crate::keys::encode_key(&p.public_key),
                    endpoint: p.endpoint().map(|e| e.to_string()),
                    allowed_ips: info.allowed_ips.iter().map(|n| n.to_string()).collect(),
                    latest_handshake_unix: stats
                        .last_handshake
                        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                        .map(|d| d.as_secs()),
                    rx_bytes: stats.rx_bytes,
                    tx_bytes: stats.tx_bytes,
                    persistent_keepalive: info.persistent_keepalive,
                    handshake_attempts: stats.handshake_attempts,
                    handshake_failures: stats.handshake_failures,
                    handshake_age_secs: stats.handshake_age.map(|a| a.as_secs()),
                }
            })
            .collect(),
        counters: dev.counters.snapshot(),
        node_pod_cidrs: dev.local_cidrs().iter().map(|n| n.to_string()).collect(),
        rejected: facts.rejected.clone(),
        remotes: facts.remotes.clone(),
        clusterset: facts.clusterset.clone(),
        advertisement: facts.advertisement.clone(),
        proxy: facts.proxy.clone(),
        dns: facts.dns.as_ref().map(|(listen, h)| match h {
            Ok(h) => DnsStatus {
                listen: listen.clone(),
                error: None,
                zones: h.zones().stats(),
                queries: h.counters(),
            },
            Err(e) => DnsStatus {
                listen: listen.clone(),
                error: Some(e.clone()),
                ..Default::default()
            },
        }),
    }
}

pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub async fn serve(
    dev: Arc<Device>,
    board: Arc<crate::status_board::StatusBoard>,
    path: PathBuf,
) -> io::Result<()> {
    let listener = crate::tunnel::uapi::bind_private_socket(&path)?;
    loop {
        let mut stream = match listener.accept().await {
            Ok((s, _)) => s,
            // Out of fds and the like: `status` works again once the cause is gone.
            Err(e) => {
                tracing::warn!(error = %e, "control socket accept failed; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let status = snapshot(&dev, &board.facts());
        tokio::spawn(async move {
            let body = serde_json::to_vec(&status).unwrap_or_default();
            let _ = stream.write_all(&body).await;
            let _ = stream.shutdown().await;
        });
    }
}

/// Reads the running agent's status (blocking; used by the CLI).
pub fn fetch(path: &Path) -> io::Result<AgentStatus> {
    let mut s = std::os::unix::net::UnixStream::connect(path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("{}: {e} (is the agent running?)", path.display()),
        )
    })?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut body = Vec::new();
    s.read_to_end(&mut body)?;
    serde_json::from_slice(&body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}
