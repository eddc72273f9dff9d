//! Typed IPVS objects: what a virtual service, a real server (destination), their counters and
//! the global settings look like to the rest of the agent. No I/O and no wire format here;
//! [`super::codec`] maps these to and from netlink attributes.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use super::consts::*;

/// Transport protocol of a virtual service (`IPVS_SVC_ATTR_PROTOCOL`, an IP protocol number).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
    /// A protocol number this crate has no name for (decoded as is, never rejected).
    Other(u16),
}

impl Protocol {
    /// The IP protocol number (`IPPROTO_*`).
    pub fn number(self) -> u16 {
        match self {
            Protocol::Tcp => libc::IPPROTO_TCP as u16,
            Protocol::Udp => libc::IPPROTO_UDP as u16,
            Protocol::Sctp => libc::IPPROTO_SCTP as u16,
            Protocol::Other(n) => n,
        }
    }

    pub fn from_number(n: u16) -> Protocol {
        match i32::from(n) {
            libc::IPPROTO_TCP => Protocol::Tcp,
            libc::IPPROTO_UDP => Protocol::Udp,
            libc::IPPROTO_SCTP => Protocol::Sctp,
            _ => Protocol::Other(n),
        }
    }
}

impl fmt::Display for Protocol {
    /// `TCP`, `UDP`, `SCTP` as `ipvsadm -Ln` prints them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Protocol::Tcp => f.write_str("TCP"),
            Protocol::Udp => f.write_str("UDP"),
            Protocol::Sctp => f.write_str("SCTP"),
            Protocol::Other(n) => write!(f, "proto-{n}"),
        }
    }
}

/// Scheduling algorithm (`IPVS_SVC_ATTR_SCHED_NAME`). The kernel loads `ip_vs_<name>` on demand.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum Scheduler {
    /// `rr`
    RoundRobin,
    /// `wrr`
    WeightedRoundRobin,
    /// `lc`
    LeastConnection,
    /// `wlc` (the kernel's and ipvsadm's default)
    #[default]
    WeightedLeastConnection,
    /// `sh`
    SourceHashing,
    /// `dh`
    DestinationHashing,
    /// `mh` (Maglev)
    MaglevHashing,
    /// `sed`
    ShortestExpectedDelay,
    /// `nq`
    NeverQueue,
    /// Any other name (`lblc`, `lblcr`, `fo`, `ovf`, `twos`, `none`, ...), at most 15 bytes.
    Other(String),
}

impl Scheduler {
    pub fn name(&self) -> &str {
        match self {
            Scheduler::RoundRobin => "rr",
            Scheduler::WeightedRoundRobin => "wrr",
            Scheduler::LeastConnection => "lc",
            Scheduler::WeightedLeastConnection => "wlc",
            Scheduler::SourceHashing => "sh",
            Scheduler::DestinationHashing => "dh",
            Scheduler::MaglevHashing => "mh",
            Scheduler::ShortestExpectedDelay => "sed",
            Scheduler::NeverQueue => "nq",
            Scheduler::Other(s) => s,
        }
    }

    pub fn from_name(name: &str) -> Scheduler {
        match name {
            "rr" => Scheduler::RoundRobin,
            "wrr" => Scheduler::WeightedRoundRobin,
            "lc" => Scheduler::LeastConnection,
            "wlc" => Scheduler::WeightedLeastConnection,
            "sh" => Scheduler::SourceHashing,
            "dh" => Scheduler::DestinationHashing,
            "mh" => Scheduler::MaglevHashing,
            "sed" => Scheduler::ShortestExpectedDelay,
            "nq" => Scheduler::NeverQueue,
            other => Scheduler::Other(other.to_string()),
        }
    }
}

impl fmt::Display for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Service flags (`IP_VS_SVC_F_*`), sent as `struct ip_vs_flags { flags, mask }`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ServiceFlags(pub u32);

impl ServiceFlags {
    pub const NONE: ServiceFlags = ServiceFlags(0);
    /// Persistent service (client affinity for [`Service::timeout`] seconds).
    pub const PERSISTENT: ServiceFlags = ServiceFlags(IP_VS_SVC_F_PERSISTENT);
    /// Kernel bookkeeping ("service is in the hash table"). Never sent, and removed when a
    /// service is decoded, so a decoded service compares equal to the one that was added.
    pub const HASHED: ServiceFlags = ServiceFlags(IP_VS_SVC_F_HASHED);
    /// One-packet scheduling (UDP: schedule each datagram separately).
    pub const ONE_PACKET: ServiceFlags = ServiceFlags(IP_VS_SVC_F_ONEPACKET);
    pub const SCHED1: ServiceFlags = ServiceFlags(IP_VS_SVC_F_SCHED1);
    pub const SCHED2: ServiceFlags = ServiceFlags(IP_VS_SVC_F_SCHED2);
    pub const SCHED3: ServiceFlags = ServiceFlags(IP_VS_SVC_F_SCHED3);
    /// `sh`/`mh`: fall back to another server when the chosen one is unavailable.
    pub const SH_FALLBACK: ServiceFlags = ServiceFlags::SCHED1;
    /// `sh`/`mh`: hash the source port too.
    pub const SH_PORT: ServiceFlags = ServiceFlags::SCHED2;

    pub fn bits(self) -> u32 {
        self.0
    }

    pub fn contains(self, other: ServiceFlags) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn without(self, other: ServiceFlags) -> ServiceFlags {
        ServiceFlags(self.0 & !other.0)
    }
}

impl std::ops::BitOr for ServiceFlags {
    type Output = ServiceFlags;
    fn bitor(self, rhs: ServiceFlags) -> ServiceFlags {
        ServiceFlags(self.0 | rhs.0)
    }
}

impl std::ops::BitOrAssign for ServiceFlags {
    fn bitor_assign(&mut self, rhs: ServiceFlags) {
        self.0 |= rhs.0;
    }
}

/// What identifies a virtual service in the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ServiceKey {
    /// protocol + virtual IP + port (what a ClusterIP Service becomes).
    Addr {
        protocol: Protocol,
        addr: SocketAddr,
    },
    /// Firewall-mark service of the given family (`ipv6 == false` is `AF_INET`).
    Fwmark { ipv6: bool, mark: u32 },
}

impl ServiceKey {
    pub fn tcp(addr: SocketAddr) -> ServiceKey {
        ServiceKey::Addr {
            protocol: Protocol::Tcp,
            addr,
        }
    }

    pub fn udp(addr: SocketAddr) -> ServiceKey {
        ServiceKey::Addr {
            protocol: Protocol::Udp,
            addr,
        }
    }

    pub fn is_ipv6(&self) -> bool {
        match self {
            ServiceKey::Addr { addr, .. } => addr.is_ipv6(),
            ServiceKey::Fwmark { ipv6, .. } => *ipv6,
        }
    }

    /// `AF_INET` or `AF_INET6`.
    pub fn family(&self) -> u16 {
        if self.is_ipv6() {
            AF_INET6
        } else {
            AF_INET
        }
    }
}

impl AsRef<ServiceKey> for ServiceKey {
    fn as_ref(&self) -> &ServiceKey {
        self
    }
}

impl fmt::Display for ServiceKey {
    /// `TCP  10.0.0.1:80`, `UDP  [fd00::1]:53`, `FWM  7` - the ipvsadm spelling.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceKey::Addr { protocol, addr } => write!(f, "{protocol}  {addr}"),
            ServiceKey::Fwmark { ipv6, mark } => {
                write!(f, "FWM  {mark}{}", if *ipv6 { " IPv6" } else { "" })
            }
        }
    }
}

/// A virtual service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub key: ServiceKey,
    pub scheduler: Scheduler,
    /// Without [`ServiceFlags::HASHED`] (see there).
    pub flags: ServiceFlags,
    /// Persistence timeout in seconds (used when `flags` has [`ServiceFlags::PERSISTENT`]).
    pub timeout: u32,
    /// Persistence granularity. IPv4: the netmask as a number (`0xffff_ffff` = per client
    /// address, `0xffff_ff00` = per /24). IPv6: the prefix length (1..=128). See
    /// [`Service::default_netmask`].
    pub netmask: u32,
    /// Persistence engine (`sip`), if any.
    pub pe_name: Option<String>,
    /// Counters; only set on services read from the kernel, ignored when sending.
    pub stats: Option<Stats>,
}

impl Service {
    /// A service with the given scheduler, no persistence and the default netmask.
    pub fn new(key: ServiceKey, scheduler: Scheduler) -> Service {
        Service {
            key,
            scheduler,
            flags: ServiceFlags::NONE,
            timeout: 0,
            netmask: Service::default_netmask(key.is_ipv6()),
            pe_name: None,
            stats: None,
        }
    }

    /// Makes the service persistent for `seconds` (`ipvsadm -p`).
    pub fn with_persistence(mut self, seconds: u32) -> Service {
        self.flags |= ServiceFlags::PERSISTENT;
        self.timeout = seconds;
        self
    }

    /// What ipvsadm uses: `255.255.255.255` for IPv4, `/128` for IPv6.
    pub fn default_netmask(ipv6: bool) -> u32 {
        if ipv6 {
            128
        } else {
            0xffff_ffff
        }
    }
}

impl AsRef<ServiceKey> for Service {
    fn as_ref(&self) -> &ServiceKey {
        &self.key
    }
}

/// How IPVS forwards packets to a destination (`IPVS_DEST_ATTR_FWD_METHOD`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ForwardMethod {
    /// NAT (`-m`), what the agent uses.
    #[default]
    Masquerade,
    /// Local node (the kernel's own choice for local real servers).
    Local,
    /// IP-in-IP / GUE / GRE tunnel (`-i`).
    Tunnel,
    /// Direct routing (`-g`).
    Route,
    /// Bypass.
    Bypass,
}

impl ForwardMethod {
    pub fn code(self) -> u32 {
        match self {
            ForwardMethod::Masquerade => IP_VS_CONN_F_MASQ,
            ForwardMethod::Local => IP_VS_CONN_F_LOCALNODE,
            ForwardMethod::Tunnel => IP_VS_CONN_F_TUNNEL,
            ForwardMethod::Route => IP_VS_CONN_F_DROUTE,
            ForwardMethod::Bypass => IP_VS_CONN_F_BYPASS,
        }
    }

    /// Decodes the low bits (`IP_VS_CONN_F_FWD_MASK`); values 5..=7 are not defined.
    pub fn from_code(code: u32) -> Option<ForwardMethod> {
        Some(match code & IP_VS_CONN_F_FWD_MASK {
            IP_VS_CONN_F_MASQ => ForwardMethod::Masquerade,
            IP_VS_CONN_F_LOCALNODE => ForwardMethod::Local,
            IP_VS_CONN_F_TUNNEL => ForwardMethod::Tunnel,
            IP_VS_CONN_F_DROUTE => ForwardMethod::Route,
            IP_VS_CONN_F_BYPASS => ForwardMethod::Bypass,
            _ => return None,
        })
    }
}

impl fmt::Display for ForwardMethod {
    /// The ipvsadm column names.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ForwardMethod::Masquerade => "Masq",
            ForwardMethod::Local => "Local",
            ForwardMethod::Tunnel => "Tunnel",
            ForwardMethod::Route => "Route",
            ForwardMethod::Bypass => "Bypass",
        })
    }
}

/// Tunnel encapsulation of a [`ForwardMethod::Tunnel`] destination (`IPVS_DEST_ATTR_TUN_*`,
/// kernel 5.2+). Decoded from every destination; sent only when not the IPIP default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TunnelConfig {
    /// `IP_VS_CONN_F_TUNNEL_TYPE_*`: 0 IPIP, 1 GUE, 2 GRE.
    pub kind: u8,
    /// UDP port for GUE (host order here, big endian on the wire).
    pub port: u16,
    /// `IP_VS_TUNNEL_ENCAP_FLAG_*`.
    pub flags: u16,
}

/// A real server behind a virtual service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destination {
    /// Address and port; the address family may differ from the service's only for tunnels.
    pub addr: SocketAddr,
    pub forward: ForwardMethod,
    /// 0 means "quiesced": no new connections, existing ones go on.
    pub weight: u32,
    /// Upper connection threshold, 0 = none.
    pub upper_threshold: u32,
    /// Lower connection threshold, 0 = none.
    pub lower_threshold: u32,
    pub tunnel: TunnelConfig,
    /// Read-only counters (ignored when sending).
    pub active_conns: u32,
    pub inactive_conns: u32,
    pub persist_conns: u32,
    pub stats: Option<Stats>,
}

impl Destination {
    /// A masquerading destination with the given weight and no thresholds.
    pub fn new(addr: SocketAddr, weight: u32) -> Destination {
        Destination {
            addr,
            forward: ForwardMethod::Masquerade,
            weight,
            upper_threshold: 0,
            lower_threshold: 0,
            tunnel: TunnelConfig::default(),
            active_conns: 0,
            inactive_conns: 0,
            persist_conns: 0,
            stats: None,
        }
    }

    pub fn ip(&self) -> IpAddr {
        self.addr.ip()
    }
}

/// Traffic counters of a service or destination (from `*_ATTR_STATS64`, else `*_ATTR_STATS`).
/// Rates are the kernel's estimator averages (per second).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Stats {
    pub conns: u64,
    pub inpkts: u64,
    pub outpkts: u64,
    pub inbytes: u64,
    pub outbytes: u64,
    pub cps: u64,
    pub inpps: u64,
    pub outpps: u64,
    pub inbps: u64,
    pub outbps: u64,
}

/// Answer to `IPVS_CMD_GET_INFO`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Info {
    /// `IP_VS_VERSION_CODE`, e.g. `0x010201`.
    pub version: u32,
    /// Size of the connection hash table.
    pub conn_tab_size: u32,
}

impl Info {
    /// `(major, minor, patch)`, e.g. `(1, 2, 1)`.
    pub fn version_triple(&self) -> (u8, u8, u8) {
        (
            (self.version >> 16) as u8,
            (self.version >> 8) as u8,
            self.version as u8,
        )
    }
}

impl fmt::Display for Info {
    /// `IP Virtual Server version 1.2.1 (size=4096)`, like ipvsadm's first line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (a, b, c) = self.version_triple();
        write!(
            f,
            "IP Virtual Server version {a}.{b}.{c} (size={})",
            self.conn_tab_size
        )
    }
}

/// Connection timeouts in seconds (`IPVS_CMD_GET_CONFIG`/`SET_CONFIG`, `ipvsadm --set`).
/// When setting, 0 means "leave unchanged".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timeouts {
    pub tcp: u32,
    pub tcp_fin: u32,
    pub udp: u32,
}
