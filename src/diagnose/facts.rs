//! Everything `diagnose` gathered, as plain data: the checks (`checks.rs`) are pure functions
//! of this, so every verdict is unit-tested with hand-written facts. A value that could not be
//! read is an `Err` with the reason, which the check reports instead of guessing.

use crate::config::ProxyBackend;
use crate::control::AgentStatus;
use ipnetwork::IpNetwork;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// A value read from the system, or why it could not be read.
pub type Read<T> = Result<T, String>;

#[derive(Debug, Clone)]
pub struct Facts {
    pub now_unix: u64,
    /// A handshake older than this many seconds is stale (`--stale-after`).
    pub stale_after_secs: u64,
    pub config: ConfigFacts,
    /// `net.ipv4.ip_forward`.
    pub ip_forward_v4: Read<String>,
    /// `net.ipv6.conf.all.forwarding`, only read when some configured CIDR is IPv6.
    pub ip_forward_v6: Option<Read<String>>,
    /// `net.ipv4.conf.all.rp_filter`.
    pub rp_filter_all: Read<u8>,
    /// Every network device, by name.
    pub links: Read<BTreeMap<String, LinkFact>>,
    /// Main-table routes (both families), clones excluded.
    pub routes: Read<Vec<KernelRoute>>,
    /// Addresses on all devices.
    pub addresses: Read<Vec<LocalAddress>>,
    /// Where tunnel traffic goes on the underlay: the peers' endpoints, or the default route
    /// when none is known.
    pub underlay_targets: Vec<UnderlayTarget>,
    /// `nft list table inet <tunnel table>`: `None` if the table does not exist.
    pub tunnel_table: Read<Option<String>>,
    /// The proxy's table (nftables backend only): whether it exists.
    pub proxy_table: Option<Read<bool>>,
    /// IPVS (ipvs backend only).
    pub ipvs: Option<IpvsFacts>,
    /// Who holds the tunnel's UDP port (the running agent's, else the config's), from
    /// `/proc/net/udp[6]` and the processes' open sockets.
    pub udp_port_holders: Read<Vec<crate::port_owner::Holder>>,
    pub clock: Read<ClockFact>,
    /// The running agent's status over its control socket.
    pub agent: Read<AgentStatus>,
    /// `GET /readyz` on `http.listen` (None: `http.enabled: false`).
    pub http: Option<HttpFact>,
}

#[derive(Debug, Clone)]
pub struct HttpFact {
    /// Where it was asked (the listen address, a wildcard replaced by loopback).
    pub url: String,
    /// (status code, body), or why there was no answer.
    pub readyz: Read<(u16, String)>,
}

/// What the config says (after the same planning the agent does).
#[derive(Debug, Clone, Default)]
pub struct ConfigFacts {
    pub device: String,
    pub mtu: u16,
    pub listen_port: u16,
    pub route_protocol: u8,
    pub nft_table: String,
    pub proxy_backend: ProxyBackend,
    /// The nftables backend's table name.
    pub proxy_table: String,
    /// The IPVS backend's VIP device (its addresses are remote ClusterIPs on purpose).
    pub vip_device: String,
    pub remotes: Vec<RemoteFact>,
    /// The routes the agent programs into the tunnel device (`plan()`'s routes).
    pub routes: Vec<IpNetwork>,
    pub any_ipv6: bool,
}

#[derive(Debug, Clone, Default)]
pub struct RemoteFact {
    pub name: String,
    pub pod_cidrs: Vec<IpNetwork>,
    pub service_cidrs: Vec<IpNetwork>,
    /// Read from the remote's API (kubeconfig), not static.
    pub live: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkFact {
    pub mtu: u32,
    pub up: bool,
    /// `net.ipv4.conf.<dev>.rp_filter`, if readable.
    pub rp_filter: Option<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelRoute {
    pub destination: IpNetwork,
    /// Output device; empty for routes without one (blackhole, multipath).
    pub device: String,
    pub protocol: u8,
    /// `unicast`, `blackhole`, `unreachable`, ...
    pub kind: String,
    pub metric: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalAddress {
    /// Address with its prefix length, as `ip addr` shows it.
    pub address: IpNetwork,
    pub device: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnderlayTarget {
    /// `peer west/b1` or `IPv4 default route`.
    pub label: String,
    pub to: Toward,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Toward {
    Address(IpAddr),
    /// The default route of this family (true: IPv6).
    DefaultRoute {
        ipv6: bool,
    },
}

#[derive(Debug, Clone)]
pub struct IpvsFacts {
    /// Whether the IPVS generic-netlink family answers (module loaded).
    pub available: Read<()>,
    /// (sysctl, value the agent sets, value read).
    pub sysctls: Vec<(String, String, Read<String>)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockFact {
    /// `STA_UNSYNC` from adjtimex(2): the kernel does not consider the clock synchronized.
    pub unsynchronized: bool,
}
