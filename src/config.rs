//! Config file schema (YAML, camelCase keys). Parsing rejects unknown keys; `validate` (in
//! `config/validate.rs`) checks the semantic rules and names the offending field.

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::path::PathBuf;

mod label_selector;
mod load;
mod validate;
pub use load::{read, ConfigUse};
pub use validate::{ConfigError, FieldError};

pub const DEFAULT_DEVICE: &str = "sdn0";
/// Not WireGuard's customary 51820: Calico, flannel and Kilo use it (51821 for IPv6) on the
/// same hostNetwork, and Cilium 51871.
pub const DEFAULT_LISTEN_PORT: u16 = 51830;
pub const DEFAULT_MTU: u16 = 1420;
pub const DEFAULT_KEEPALIVE: u16 = 25;
pub const DEFAULT_PRIVATE_KEY_FILE: &str = "/var/lib/sdn-tunnel/private.key";
/// Route protocol number that marks our routes (see /etc/iproute2/rt_protos; unassigned there).
pub const DEFAULT_ROUTE_PROTOCOL: u8 = 0x5d;
/// Default UDP socket buffer size; the kernel default (~200 KiB) overflows under load.
pub const DEFAULT_UDP_BUFFER_BYTES: u32 = 8 << 20;
pub const DEFAULT_RUN_DIR: &str = "/var/run";

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    pub cluster: ClusterConfig,
    #[serde(default)]
    pub node: NodeConfig,
    #[serde(default)]
    pub tunnel: TunnelConfig,
    #[serde(default)]
    pub proxy: ProxyConfig,
    #[serde(default)]
    pub remotes: Vec<RemoteConfig>,
    #[serde(default)]
    pub dns: DnsConfig,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub mcs: McsConfig,
}

/// The Multi-Cluster Services API's ClusterSetIPs (issue 17): one VIP per exported
/// (namespace, name), the same on every node of every cluster, load-balanced over the ready
/// endpoints of every exporting cluster, local ones first.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct McsConfig {
    /// Where ClusterSetIPs come from, at most one CIDR per IP family; it must be the same in
    /// every cluster of the set. Empty (the default): no ClusterSetIPs, and
    /// `<svc>.<ns>.svc.<clusterSetDomain>` answers the exporting remotes' ClusterIPs.
    #[serde(rename = "clusterSetCIDRs", default)]
    pub cluster_set_cidrs: Vec<IpNetwork>,
    /// Per service (`namespace/name`): which clusters take over, in order, when no local
    /// endpoint is ready. The local cluster always comes first, wherever it is listed (so one
    /// list can serve every cluster of the set); unlisted remotes come after the listed ones,
    /// together. Services not listed use every remote at once.
    #[serde(default)]
    pub failover_order: std::collections::BTreeMap<String, Vec<String>>,
    /// With ClusterSetIPs on: one agent of the cluster (elected with a Lease) writes the
    /// conditions of this cluster's ServiceExports and a ServiceImport per exported service
    /// of the set. Off where another MCS implementation writes them.
    #[serde(default = "default_true")]
    pub controller: bool,
}

impl Default for McsConfig {
    fn default() -> Self {
        McsConfig {
            cluster_set_cidrs: Vec::new(),
            failover_order: Default::default(),
            controller: true,
        }
    }
}

impl McsConfig {
    /// ClusterSetIPs are allocated and served.
    pub fn enabled(&self) -> bool {
        !self.cluster_set_cidrs.is_empty()
    }
}

/// What one remote cluster's API may cost this agent: a hostile or broken remote gets a fixed
/// amount of memory and CPU. Objects beyond a count are ignored (and counted, in status and
/// metrics); a longer message fails the request (the remote shows as stale with the reason).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LimitsConfig {
    /// Nodes per remote.
    #[serde(default = "default_limit_nodes")]
    pub nodes: usize,
    /// Services per remote.
    #[serde(default = "default_limit_services")]
    pub services: usize,
    /// EndpointSlices per remote.
    #[serde(default = "default_limit_slices")]
    pub endpoint_slices: usize,
    /// Bytes of one message from a remote API: a watch event (one object) or a page of a list.
    #[serde(default = "default_limit_message_bytes")]
    pub message_bytes: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            nodes: default_limit_nodes(),
            services: default_limit_services(),
            endpoint_slices: default_limit_slices(),
            message_bytes: default_limit_message_bytes(),
        }
    }
}

fn default_limit_nodes() -> usize {
    5_000
}
fn default_limit_services() -> usize {
    20_000
}
fn default_limit_slices() -> usize {
    50_000
}
fn default_limit_message_bytes() -> usize {
    16 << 20
}

/// The HTTP endpoint for Prometheus metrics and the kubelet's probes.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpConfig {
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Serves `/metrics`, `/healthz` and `/readyz`.
    #[serde(default = "default_http_listen")]
    pub listen: std::net::SocketAddr,
    /// `/readyz` waits this long for every remote's first sync, then reports ready anyway
    /// (one unreachable cluster must not block a rollout forever).
    #[serde(default = "default_ready_timeout")]
    pub ready_timeout_seconds: u32,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            enabled: true,
            listen: default_http_listen(),
            ready_timeout_seconds: default_ready_timeout(),
        }
    }
}

fn default_http_listen() -> std::net::SocketAddr {
    // Dual-stack (src/listen.rs): the kubelet probes IPv6-primary nodes over IPv6.
    "[::]:9477".parse().expect("literal")
}
fn default_ready_timeout() -> u32 {
    60
}

/// The DNS responder for `<svc>.<ns>.svc.cluster.<remote>` and the merged clusterset domain.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DnsConfig {
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// UDP and TCP. Not 53 by default: the node's own resolver usually has it.
    #[serde(default = "default_dns_listen")]
    pub listen: std::net::SocketAddr,
    /// The merged zone (`<svc>.<ns>.svc.<domain>`); "" turns it off.
    #[serde(default = "default_clusterset_domain")]
    pub cluster_set_domain: String,
    /// Seconds.
    #[serde(default = "default_dns_ttl")]
    pub ttl: u32,
    /// `IP` or `IP:port` (port 53 by default): names outside our zones are relayed there.
    /// Empty (default): they are REFUSED.
    #[serde(default)]
    pub forwarders: Vec<String>,
    /// Keep answering a stale remote (its API failing) from its last good snapshot (default);
    /// false: its zone answers SERVFAIL and it leaves the clusterset names until it syncs.
    #[serde(default = "default_true")]
    pub serve_stale: bool,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            enabled: true,
            listen: default_dns_listen(),
            cluster_set_domain: default_clusterset_domain(),
            ttl: default_dns_ttl(),
            forwarders: Vec::new(),
            serve_stale: true,
        }
    }
}

fn default_dns_listen() -> std::net::SocketAddr {
    "[::]:10053".parse().expect("literal")
}
fn default_clusterset_domain() -> String {
    "clusterset.local".into()
}
fn default_dns_ttl() -> u32 {
    5
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterConfig {
    pub name: String,
    #[serde(rename = "podCIDRs")]
    pub pod_cidrs: Vec<IpNetwork>,
    #[serde(rename = "serviceCIDRs", default)]
    pub service_cidrs: Vec<IpNetwork>,
    /// Kubeconfig for the local cluster's API (self-advertisement). Default: `$KUBECONFIG`,
    /// else the in-cluster service account when running in a pod.
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
}

/// Whether the agent annotates its own Node with its public key and endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Advertise {
    /// When the local API is known (cluster.kubeconfig, $KUBECONFIG or in a pod).
    #[default]
    Auto,
    /// Required: the agent fails to start without a local API.
    Always,
    Never,
}

/// Which address other clusters should send our tunnel traffic to (`tunnel.endpoint`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub enum EndpointPolicy {
    #[default]
    NodeInternalIp,
    NodeExternalIp,
    /// An address; the port is `tunnel.listenPort`.
    LiteralIp(IpAddr),
    /// Address and port (e.g. a NAT's public side).
    Literal(std::net::SocketAddr),
}

impl TryFrom<String> for EndpointPolicy {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "nodeInternalIP" => Ok(EndpointPolicy::NodeInternalIp),
            "nodeExternalIP" => Ok(EndpointPolicy::NodeExternalIp),
            _ => {
                if let Ok(ip) = s.parse::<IpAddr>() {
                    Ok(EndpointPolicy::LiteralIp(ip))
                } else if let Ok(a) = s.parse::<std::net::SocketAddr>() {
                    Ok(EndpointPolicy::Literal(a))
                } else {
                    Err(format!(
                        "endpoint '{s}' is neither nodeInternalIP, nodeExternalIP, an IP address nor \
                         address:port"
                    ))
                }
            }
        }
    }
}

impl From<EndpointPolicy> for String {
    fn from(p: EndpointPolicy) -> String {
        p.to_string()
    }
}

impl std::fmt::Display for EndpointPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EndpointPolicy::NodeInternalIp => write!(f, "nodeInternalIP"),
            EndpointPolicy::NodeExternalIp => write!(f, "nodeExternalIP"),
            EndpointPolicy::LiteralIp(ip) => write!(f, "{ip}"),
            EndpointPolicy::Literal(a) => write!(f, "{a}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeConfig {
    /// Defaults to $NODE_NAME (filled in by `Config::load`).
    #[serde(default)]
    pub name: Option<String>,
    #[serde(rename = "podCIDRs", default)]
    pub pod_cidrs: Vec<IpNetwork>,
    /// Source address for host-originated traffic into the tunnel. Must lie inside
    /// `node.podCIDRs` so the remote side routes replies back. Default: a local address found
    /// inside `node.podCIDRs` (e.g. the CNI bridge's gateway address).
    #[serde(rename = "sourceIP", default)]
    pub source_ip: Option<IpAddr>,
    #[serde(default)]
    pub advertise: Advertise,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TunnelConfig {
    #[serde(default = "default_device")]
    pub device: String,
    #[serde(default = "default_listen_port")]
    pub listen_port: u16,
    #[serde(default = "default_mtu")]
    pub mtu: u16,
    #[serde(default = "default_private_key_file")]
    pub private_key_file: PathBuf,
    /// Seconds; 0 disables.
    #[serde(default = "default_keepalive")]
    pub persistent_keepalive: u16,
    #[serde(default = "default_route_protocol")]
    pub route_protocol: u8,
    #[serde(default = "default_udp_buffer_bytes")]
    pub udp_buffer_bytes: u32,
    /// Where the UAPI socket (`<runDir>/wireguard/<device>.sock`) and our control socket
    /// (`<runDir>/sdn-tunnel/<device>.sock`) live.
    #[serde(default = "default_run_dir")]
    pub run_dir: PathBuf,
    /// Advertised endpoint: nodeInternalIP (default), nodeExternalIP, an IP, or address:port.
    #[serde(default)]
    pub endpoint: EndpointPolicy,
    /// TUN offloads (TSO, USO where the kernel has it, and checksum offload through virtio-net
    /// headers); on by default.
    #[serde(default = "default_true")]
    pub offloads: bool,
    /// Queues of the device, each with its own packet thread. Default: the CPUs
    /// available to the process, at most [`AUTO_QUEUES_MAX`].
    #[serde(default)]
    pub queues: Option<u16>,
}

/// The most queues chosen automatically: each queue holds ~6 MiB of batch buffers, and past a
/// few queues the one-peer-per-socket receive side gains nothing for the memory.
pub const AUTO_QUEUES_MAX: usize = 8;
/// The most queues that may be configured.
pub const QUEUES_MAX: u16 = 64;

impl TunnelConfig {
    /// The configured queue count, or the CPUs available to this process (affinity and
    /// cgroup quota included), at most [`AUTO_QUEUES_MAX`].
    pub fn queue_count(&self) -> usize {
        match self.queues {
            Some(n) => usize::from(n.max(1)),
            None => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
                .min(AUTO_QUEUES_MAX),
        }
    }
}

impl Default for TunnelConfig {
    fn default() -> Self {
        TunnelConfig {
            device: default_device(),
            listen_port: default_listen_port(),
            mtu: default_mtu(),
            private_key_file: default_private_key_file(),
            persistent_keepalive: default_keepalive(),
            route_protocol: default_route_protocol(),
            udp_buffer_bytes: default_udp_buffer_bytes(),
            run_dir: default_run_dir(),
            endpoint: EndpointPolicy::default(),
            offloads: true,
            queues: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyBackend {
    #[default]
    None,
    Ipvs,
    Nftables,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyConfig {
    #[serde(default)]
    pub backend: ProxyBackend,
    /// IPVS scheduler (rr, wrr, lc, wlc, sh, dh, mh, sed, nq).
    #[serde(default = "default_scheduler")]
    pub scheduler: String,
    /// Dummy device that holds the remote ClusterIPs (IPVS backend).
    #[serde(default = "default_vip_device")]
    pub device: String,
    /// A departed backend (weight 0) is deleted once its connections are gone, or after this.
    #[serde(default = "default_drain_timeout")]
    pub drain_timeout_seconds: u32,
    /// Backends on a remote node whose tunnel peer had no handshake for this long get no new
    /// connections until it is back.
    #[serde(default = "default_peer_down_after")]
    pub peer_down_after_seconds: u32,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            backend: ProxyBackend::default(),
            scheduler: default_scheduler(),
            device: default_vip_device(),
            drain_timeout_seconds: default_drain_timeout(),
            peer_down_after_seconds: default_peer_down_after(),
        }
    }
}

fn default_scheduler() -> String {
    "rr".into()
}
fn default_vip_device() -> String {
    "sdn-ipvs0".into()
}
fn default_drain_timeout() -> u32 {
    120
}
fn default_peer_down_after() -> u32 {
    180
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RemoteConfig {
    pub name: String,
    #[serde(rename = "podCIDRs")]
    pub pod_cidrs: Vec<IpNetwork>,
    #[serde(rename = "serviceCIDRs", default)]
    pub service_cidrs: Vec<IpNetwork>,
    #[serde(rename = "static", default)]
    pub static_source: Option<StaticSource>,
    /// Live source: a read-only kubeconfig for the remote cluster's API.
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    /// Context in that kubeconfig (default: its current-context).
    #[serde(default)]
    pub context: Option<String>,
    /// Which of the remote's Services are imported (kubeconfig remotes; static ones list
    /// their services).
    #[serde(default)]
    pub import: Import,
}

/// Which Services of a remote cluster this cluster imports (`remotes[].import`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(try_from = "ImportRepr", into = "ImportRepr")]
pub enum Import {
    /// Only those the remote exports with a Multi-Cluster Services API `ServiceExport`
    /// (multicluster.x-k8s.io, v1beta1 or v1alpha1) of the same namespace and name.
    #[default]
    Exported,
    /// Every Service (for clusters without the MCS CRDs).
    All,
    /// Services whose labels match this Kubernetes label selector (`{selector: "k=v,..."}`),
    /// as an export label does in Linkerd; the remote's API server filters them.
    Selector(String),
}

/// How `import` is written: a word, or a map with one key.
#[derive(Deserialize, Serialize)]
#[serde(untagged)]
enum ImportRepr {
    Word(String),
    Map(std::collections::BTreeMap<String, String>),
}

impl TryFrom<ImportRepr> for Import {
    type Error = String;
    fn try_from(r: ImportRepr) -> Result<Import, String> {
        // serde names the remote, not this field: the message says `import` itself.
        const EXPECTED: &str = "expected `exported`, `all` or `{selector: \"<label selector>\"}`";
        match r {
            ImportRepr::Word(w) if w == "exported" => Ok(Import::Exported),
            ImportRepr::Word(w) if w == "all" => Ok(Import::All),
            ImportRepr::Word(w) => Err(format!("import: unknown value '{w}': {EXPECTED}")),
            ImportRepr::Map(mut m) => match (m.remove("selector"), m.keys().next()) {
                (_, Some(k)) => Err(format!("import: unknown key '{k}': {EXPECTED}")),
                (Some(sel), None) => Ok(Import::Selector(sel)),
                (None, None) => Err(format!("import: empty map: {EXPECTED}")),
            },
        }
    }
}

impl From<Import> for ImportRepr {
    fn from(i: Import) -> ImportRepr {
        match i {
            Import::Exported => ImportRepr::Word("exported".into()),
            Import::All => ImportRepr::Word("all".into()),
            Import::Selector(s) => ImportRepr::Map([("selector".to_string(), s)].into()),
        }
    }
}

impl std::fmt::Display for Import {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Import::Exported => f.write_str("exported"),
            Import::All => f.write_str("all"),
            Import::Selector(s) => write!(f, "selector {s}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StaticSource {
    #[serde(default)]
    pub peers: Vec<StaticPeer>,
    /// Remote services, for demos and tests (the kube source reads them from the API).
    #[serde(default)]
    pub services: Vec<StaticService>,
}

/// A remote Service with its endpoints, as the kube source would see it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StaticService {
    pub namespace: String,
    pub name: String,
    /// Single-stack form; `clusterIPs` for dual stack. Neither: a headless service.
    #[serde(rename = "clusterIP", default)]
    pub cluster_ip: Option<IpAddr>,
    #[serde(rename = "clusterIPs", default)]
    pub cluster_ips: Vec<IpAddr>,
    pub ports: Vec<StaticServicePort>,
    /// ClientIP affinity timeout in seconds (like sessionAffinity: ClientIP).
    #[serde(default)]
    pub session_affinity_timeout: Option<u32>,
    #[serde(default)]
    pub endpoints: Vec<StaticEndpoint>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StaticServicePort {
    #[serde(default)]
    pub name: String,
    pub port: u16,
    #[serde(default = "default_protocol")]
    pub protocol: crate::model::Protocol,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StaticEndpoint {
    pub ip: IpAddr,
    #[serde(default)]
    pub node_name: Option<String>,
    /// Service port name -> target port. A port not listed here uses the service port.
    #[serde(default)]
    pub ports: std::collections::BTreeMap<String, u16>,
    #[serde(default = "default_true")]
    pub ready: bool,
    #[serde(default)]
    pub terminating: bool,
}

fn default_protocol() -> crate::model::Protocol {
    crate::model::Protocol::Tcp
}
fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StaticPeer {
    /// Optional label (e.g. the node name) for logs and status.
    #[serde(default)]
    pub name: Option<String>,
    /// Base64 (wg format) public key; checked by `validate`.
    pub public_key: String,
    /// `host:port` / `[v6]:port` with a literal IP; optional (a peer without one waits to be
    /// contacted and then follows the source of its authenticated packets).
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(rename = "podCIDRs")]
    pub pod_cidrs: Vec<IpNetwork>,
}

fn default_device() -> String {
    DEFAULT_DEVICE.to_string()
}
fn default_listen_port() -> u16 {
    DEFAULT_LISTEN_PORT
}
fn default_mtu() -> u16 {
    DEFAULT_MTU
}
fn default_private_key_file() -> PathBuf {
    PathBuf::from(DEFAULT_PRIVATE_KEY_FILE)
}
fn default_keepalive() -> u16 {
    DEFAULT_KEEPALIVE
}
fn default_route_protocol() -> u8 {
    DEFAULT_ROUTE_PROTOCOL
}
fn default_udp_buffer_bytes() -> u32 {
    DEFAULT_UDP_BUFFER_BYTES
}
fn default_run_dir() -> PathBuf {
    PathBuf::from(DEFAULT_RUN_DIR)
}

impl Config {
    /// Every pod and service CIDR of the local cluster and of all remotes.
    pub fn all_cidrs(&self) -> impl Iterator<Item = &IpNetwork> {
        let local = self
            .cluster
            .pod_cidrs
            .iter()
            .chain(&self.cluster.service_cidrs);
        let remotes = self
            .remotes
            .iter()
            .flat_map(|r| r.pod_cidrs.iter().chain(&r.service_cidrs));
        local.chain(remotes)
    }
}

impl TunnelConfig {
    pub fn uapi_socket_path(&self) -> PathBuf {
        self.run_dir
            .join("wireguard")
            .join(format!("{}.sock", self.device))
    }
    pub fn control_socket_path(&self) -> PathBuf {
        self.run_dir
            .join("sdn-tunnel")
            .join(format!("{}.sock", self.device))
    }
    /// Our nftables table (family inet) for this device.
    pub fn nft_table(&self) -> String {
        format!("sdn_tunnel_{}", self.device.replace(['-', '.'], "_"))
    }
}
