//! Route reconciler over rtnetlink.
//!
//! Our routes are the routes in the main table whose protocol (`rtm_protocol`, `proto N` in
//! `ip route`) is our protocol number. That number is the ownership tag: we list, add, replace
//! and delete only routes carrying it, and every delete request carries it too, so the kernel
//! itself refuses to match a foreign route (IPv4 `fib_table_delete` and IPv6 `ip6_route_del` both
//! skip routes whose protocol differs from a non-zero requested one).
//!
//! Adds use `NLM_F_CREATE` *without* `NLM_F_REPLACE`: `NLM_F_REPLACE` replaces the first route
//! with the same key (destination, TOS, metric), which may be a foreign route, and that would
//! break "we only touch kernel objects we own". Without `NLM_F_EXCL` the kernel answers EEXIST
//! only if an identical route already exists (IPv4), or a route with the same destination,
//! metric and device (IPv6); otherwise ours is added next to any foreign route to the same
//! destination (IPv4 puts the newest first, so ours becomes the active one).

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use ipnetwork::IpNetwork;
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
    RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_REQUEST,
};
use rtnetlink::RouteMessageBuilder;

use crate::link::{self, describe, errno};

mod local_source;

/// Route protocol numbers that belong to the kernel and to plain `ip route add`: adopting one of
/// them would make us delete routes that are not ours.
const RESERVED_PROTOCOLS: u8 = 4; // 0 unspec, 1 redirect, 2 kernel, 3 boot, 4 static

const RT_TABLE_MAIN: u32 = RouteHeader::RT_TABLE_MAIN as u32;

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("open an rtnetlink socket: {0}")]
    Connect(#[source] std::io::Error),
    #[error(
        "route protocol {0} is reserved (0 unspec, 1 redirect, 2 kernel, 3 boot, 4 static): \
         using it would adopt routes that are not ours; pick an unused number (e.g. 93)"
    )]
    ReservedProtocol(u8),
    #[error("device {0:?} for our routes does not exist")]
    DeviceNotFound(String),
    #[error("device {0:?} is down: the kernel refuses routes via a device that is down")]
    DeviceDown(String),
    #[error(
        "source address {0} is not assigned to any local interface: the kernel refuses routes \
         whose src is not local (assign it, or fix node.sourceIP)"
    )]
    SourceNotLocal(IpAddr),
    #[error("{what}: {}", describe(.source))]
    Dump {
        what: &'static str,
        #[source]
        source: Box<rtnetlink::Error>,
    },
    #[error("look up device: {0}")]
    Link(#[from] link::LinkError),
    /// The kernel refused one route operation.
    #[error("{op} route {route}: {}{hint}", describe(.source))]
    Netlink {
        op: &'static str,
        /// The route, as `ip route` would print it.
        route: String,
        /// Positive errno of the kernel's reply, if the error is a kernel reply.
        errno: Option<i32>,
        hint: &'static str,
        #[source]
        source: Box<rtnetlink::Error>,
    },
    /// Some route operations of a reconcile failed; all others were applied (listed in
    /// `changes`). The next reconcile retries the failed ones.
    #[error("{}", incomplete_message(.changes, .failures))]
    Incomplete {
        changes: RouteChanges,
        failures: Vec<RouteError>,
    },
}

fn incomplete_message(changes: &RouteChanges, failures: &[RouteError]) -> String {
    let list: Vec<String> = failures.iter().map(|f| f.to_string()).collect();
    format!(
        "{} route operation(s) failed (the others were applied: {} added, {} removed): {}",
        failures.len(),
        changes.added.len(),
        changes.removed.len(),
        list.join("; ")
    )
}

/// One of our routes, as the kernel holds it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OurRoute {
    pub destination: IpNetwork,
    /// Output device name; empty if the route has no single output device (e.g. multipath).
    pub device: String,
    /// Preferred source address (`src` in `ip route`).
    pub source: Option<IpAddr>,
    pub protocol: u8,
    pub table: u32,
    /// Route priority (`metric`); the kernel gives IPv6 routes 1024 when none was asked for.
    pub metric: Option<u32>,
}

/// What a reconcile did. `removed` has one entry per route deleted (a destination can appear in
/// both lists when our route to it was replaced, e.g. because its src changed).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RouteChanges {
    pub added: Vec<IpNetwork>,
    pub removed: Vec<IpNetwork>,
}

impl RouteChanges {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
}

/// A route of ours as dumped, with what is needed to delete exactly it.
struct Dumped {
    msg: RouteMessage,
    route: OurRoute,
    oif: Option<u32>,
}

/// Which of our dumped routes are right (one per destination: desired, through device `oif`,
/// with the right source, unicast, no gateway) and which are stale.
fn partition(
    dumped: Vec<Dumped>,
    desired: &BTreeSet<IpNetwork>,
    oif: u32,
    src_for: &dyn Fn(&IpNetwork) -> Option<IpAddr>,
) -> (BTreeSet<IpNetwork>, Vec<Dumped>) {
    let is_good = |d: &Dumped, kept: &BTreeSet<IpNetwork>| {
        desired.contains(&d.route.destination)
            && !kept.contains(&d.route.destination)
            && d.oif == Some(oif)
            && d.route.source == src_for(&d.route.destination)
            && d.msg.header.kind == RouteType::Unicast
            && !d.msg.attributes.iter().any(|a| {
                matches!(
                    a,
                    RouteAttribute::Gateway(_)
                        | RouteAttribute::Via(_)
                        | RouteAttribute::MultiPath(_)
                )
            })
    };
    let mut kept = BTreeSet::new();
    let mut stale = Vec::new();
    for d in dumped {
        if is_good(&d, &kept) {
            kept.insert(d.route.destination);
        } else {
            stale.push(d);
        }
    }
    (kept, stale)
}

pub struct Routes {
    handle: rtnetlink::Handle,
    protocol: u8,
}

impl Routes {
    /// Opens an rtnetlink connection (spawned on the current tokio runtime: must be called
    /// inside one). `protocol` is our ownership tag; 0-4 are refused.
    pub fn new(protocol: u8) -> Result<Routes, RouteError> {
        if protocol <= RESERVED_PROTOCOLS {
            return Err(RouteError::ReservedProtocol(protocol));
        }
        let (conn, handle, _) = rtnetlink::new_connection().map_err(RouteError::Connect)?;
        tokio::spawn(conn);
        Ok(Routes { handle, protocol })
    }

    /// The underlying rtnetlink handle, to share the connection (e.g. with [`crate::link`]).
    pub fn handle(&self) -> &rtnetlink::Handle {
        &self.handle
    }

    pub fn protocol(&self) -> u8 {
        self.protocol
    }

    /// Our routes (main table, IPv4 and IPv6, our protocol only), sorted by destination.
    pub async fn list_ours(&self) -> Result<Vec<OurRoute>, RouteError> {
        Ok(self
            .dump_ours()
            .await?
            .into_iter()
            .map(|d| d.route)
            .collect())
    }

    /// Idempotent: makes the set of our routes equal `desired` (all via `device`, with source
    /// `src_v4` for IPv4 destinations / `src_v6` for IPv6 if given).
    ///
    /// Removes only our stale routes (our protocol), including ours with the wrong device or
    /// src and duplicates of ours; never touches any other route; adds missing ones. Running it
    /// twice changes nothing. Destinations are normalised (host bits cleared) and deduplicated.
    ///
    /// Before changing anything it checks that `device` exists and is up and that the src
    /// addresses are local, so a bad config does not tear down working routes. If individual
    /// route operations fail, the others are still applied and [`RouteError::Incomplete`]
    /// reports both.
    pub async fn reconcile(
        &self,
        device: &str,
        desired: &[IpNetwork],
        src_v4: Option<Ipv4Addr>,
        src_v6: Option<Ipv6Addr>,
    ) -> Result<RouteChanges, RouteError> {
        let dev = link::get(&self.handle, device)
            .await?
            .ok_or_else(|| RouteError::DeviceNotFound(device.to_string()))?;
        let desired: BTreeSet<IpNetwork> = desired.iter().map(normalize).collect();
        let src_for = |net: &IpNetwork| -> Option<IpAddr> {
            match net {
                IpNetwork::V4(_) => src_v4.map(IpAddr::V4),
                IpNetwork::V6(_) => src_v6.map(IpAddr::V6),
            }
        };

        if !desired.is_empty() && !dev.up {
            return Err(RouteError::DeviceDown(device.to_string()));
        }
        let needed_srcs: BTreeSet<IpAddr> = desired.iter().filter_map(src_for).collect();
        if !needed_srcs.is_empty() {
            let local = self.local_addresses().await?;
            if let Some(missing) = needed_srcs.iter().find(|a| !local.contains(a)) {
                return Err(RouteError::SourceNotLocal(*missing));
            }
        }

        let partition = |dumped| partition(dumped, &desired, dev.index, &src_for);
        let mut changes = RouteChanges::default();
        let mut failures = Vec::new();
        let (mut kept, stale) = partition(self.dump_ours().await?);
        if !stale.is_empty() {
            for d in &stale {
                match self.delete(d).await {
                    Ok(true) => changes.removed.push(d.route.destination),
                    Ok(false) => {}
                    Err(e) => failures.push(e),
                }
            }
            // An IPv4 delete matches the first of our routes with that destination, device and
            // metric; when a stale one has no src it can hit a good one. Re-read instead of
            // assuming.
            kept = partition(self.dump_ours().await?).0;
        }

        for net in desired.difference(&kept) {
            match self.add(net, dev.index, device, src_for(net)).await {
                Ok(()) => changes.added.push(*net),
                Err(e) => failures.push(e),
            }
        }
        changes.removed.sort();
        if failures.is_empty() {
            Ok(changes)
        } else {
            Err(RouteError::Incomplete { changes, failures })
        }
    }

    /// Deletes all our routes (main table, our protocol); returns how many were deleted.
    pub async fn remove_all(&self) -> Result<usize, RouteError> {
        let mut n = 0;
        let mut failures = Vec::new();
        let mut removed = Vec::new();
        for d in self.dump_ours().await? {
            match self.delete(&d).await {
                Ok(true) => {
                    n += 1;
                    removed.push(d.route.destination);
                }
                Ok(false) => {}
                Err(e) => failures.push(e),
            }
        }
        if failures.is_empty() {
            Ok(n)
        } else {
            Err(RouteError::Incomplete {
                changes: RouteChanges {
                    added: vec![],
                    removed,
                },
                failures,
            })
        }
    }

    /// Our routes in the main table, both families, with their raw messages.
    async fn dump_ours(&self) -> Result<Vec<Dumped>, RouteError> {
        let names = link::index_names(&self.handle)
            .await
            .map_err(|source| RouteError::Dump {
                what: "list network devices",
                source: Box::new(source),
            })?;
        let msgs = main_table_routes(&self.handle, Some(self.protocol))
            .await
            .map_err(|source| RouteError::Dump {
                what: "list routes",
                source: Box::new(source),
            })?;
        let mut out: Vec<Dumped> = msgs
            .into_iter()
            .filter(|m| u8::from(m.header.protocol) == self.protocol)
            .map(|m| self.parse(m, &names))
            .collect();
        out.sort_by_key(|d| d.route.destination);
        Ok(out)
    }

    fn parse(&self, msg: RouteMessage, names: &HashMap<u32, String>) -> Dumped {
        let RouteFields {
            destination,
            oif,
            source,
            metric,
        } = route_fields(&msg);
        let route = OurRoute {
            destination,
            device: oif.and_then(|i| names.get(&i).cloned()).unwrap_or_default(),
            source,
            protocol: u8::from(msg.header.protocol),
            table: table_of(&msg),
            metric,
        };
        Dumped { msg, route, oif }
    }

    /// Deletes exactly this route of ours. `Ok(false)` if it was already gone.
    async fn delete(&self, d: &Dumped) -> Result<bool, RouteError> {
        let mut msg = RouteMessage::default();
        msg.header = d.msg.header.clone();
        // The ownership guard: the kernel only matches routes with this protocol.
        msg.header.protocol = RouteProtocol::from(self.protocol);
        msg.attributes = d
            .msg
            .attributes
            .iter()
            .filter(|a| {
                matches!(
                    a,
                    RouteAttribute::Destination(_)
                        | RouteAttribute::Oif(_)
                        | RouteAttribute::PrefSource(_)
                        | RouteAttribute::Priority(_)
                        | RouteAttribute::Table(_)
                        | RouteAttribute::Gateway(_)
                        | RouteAttribute::Via(_)
                        | RouteAttribute::MultiPath(_)
                        | RouteAttribute::NhId(_)
                )
            })
            .cloned()
            .collect();
        match self.handle.route().del(msg).execute().await {
            Ok(()) => Ok(true),
            Err(e) if errno(&e) == Some(libc::ESRCH) => Ok(false),
            Err(source) => Err(RouteError::Netlink {
                op: "delete",
                route: show(&d.route),
                errno: errno(&source),
                hint: hint("delete", errno(&source), false),
                source: Box::new(source),
            }),
        }
    }

    /// Adds our route; NLM_F_CREATE without NLM_F_EXCL or NLM_F_REPLACE (see the module docs).
    async fn add(
        &self,
        net: &IpNetwork,
        oif: u32,
        device: &str,
        src: Option<IpAddr>,
    ) -> Result<(), RouteError> {
        let shown = show(&OurRoute {
            destination: *net,
            device: device.to_string(),
            source: src,
            protocol: self.protocol,
            table: RT_TABLE_MAIN,
            metric: None,
        });
        let msg = build_add(net, oif, src, self.protocol);
        let mut req = NetlinkMessage::from(RouteNetlinkMessage::NewRoute(msg));
        req.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE;
        let result: Result<(), rtnetlink::Error> = async {
            let mut handle = self.handle.clone();
            let mut response = handle.request(req)?;
            while let Some(m) = futures::StreamExt::next(&mut response).await {
                if let NetlinkPayload::Error(e) = m.payload {
                    return Err(rtnetlink::Error::NetlinkError(e));
                }
            }
            Ok(())
        }
        .await;
        result.map_err(|source| RouteError::Netlink {
            op: "add",
            route: shown,
            errno: errno(&source),
            hint: hint("add", errno(&source), src.is_some()),
            source: Box::new(source),
        })
    }
}

/// The add request for one of our device routes in the main table.
fn build_add(net: &IpNetwork, oif: u32, src: Option<IpAddr>, protocol: u8) -> RouteMessage {
    let protocol = RouteProtocol::from(protocol);
    match (net, src) {
        (IpNetwork::V4(n), src) => {
            let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(n.network(), n.prefix())
                .output_interface(oif)
                .protocol(protocol)
                // Like `ip route add ... dev D`: a device route without gateway is link scope.
                .scope(RouteScope::Link);
            if let Some(IpAddr::V4(s)) = src {
                b = b.pref_source(s);
            }
            b.build()
        }
        (IpNetwork::V6(n), src) => {
            let mut b = RouteMessageBuilder::<Ipv6Addr>::new()
                .destination_prefix(n.network(), n.prefix())
                .output_interface(oif)
                .protocol(protocol);
            if let Some(IpAddr::V6(s)) = src {
                b = b.pref_source(s);
            }
            b.build()
        }
    }
}

fn hint(op: &str, errno: Option<i32>, with_src: bool) -> &'static str {
    match (op, errno) {
        ("add", Some(libc::EINVAL)) if with_src => {
            " (is the src address assigned to a local interface? the kernel refuses a non-local src)"
        }
        ("add", Some(libc::EEXIST)) => {
            " (a route with the same destination and metric/device exists and is not ours: we \
             never modify foreign routes; remove it or take the CIDR out of the config)"
        }
        (_, Some(libc::ENETDOWN)) => " (the device is down)",
        (_, Some(libc::ENODEV)) => " (the device does not exist)",
        (_, Some(libc::EPERM)) => " (needs CAP_NET_ADMIN)",
        _ => "",
    }
}

/// `10.1.0.0/16 dev sdn0 src 10.128.0.1 proto 93 metric 5`, like `ip route`.
fn show(r: &OurRoute) -> String {
    let mut s = format!("{}", r.destination);
    if !r.device.is_empty() {
        s.push_str(&format!(" dev {}", r.device));
    }
    if let Some(src) = r.source {
        s.push_str(&format!(" src {src}"));
    }
    s.push_str(&format!(" proto {}", r.protocol));
    if r.table != RT_TABLE_MAIN {
        s.push_str(&format!(" table {}", r.table));
    }
    if let Some(m) = r.metric {
        s.push_str(&format!(" metric {m}"));
    }
    s
}

impl fmt::Display for OurRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&show(self))
    }
}

/// Clears host bits: `10.1.2.3/16` -> `10.1.0.0/16` (the kernel refuses the former for IPv4).
pub fn normalize(net: &IpNetwork) -> IpNetwork {
    IpNetwork::new(net.network(), net.prefix()).expect("same prefix is valid")
}

/// Every route of the main table, both families, without the kernel's cloned (cache) entries.
/// `protocol`: a filter hint for the kernel, which ignores it unless NETLINK_GET_STRICT_CHK
/// is on; callers filter themselves.
pub(crate) async fn main_table_routes(
    handle: &rtnetlink::Handle,
    protocol: Option<u8>,
) -> Result<Vec<RouteMessage>, rtnetlink::Error> {
    let mut out = Vec::new();
    for family in [AddressFamily::Inet, AddressFamily::Inet6] {
        let mut filter = RouteMessage::default();
        filter.header.address_family = family;
        if let Some(p) = protocol {
            filter.header.protocol = RouteProtocol::from(p);
        }
        filter.header.table = RouteHeader::RT_TABLE_MAIN;
        let mut stream = handle.route().get(filter).execute();
        while let Some(msg) = stream.try_next().await? {
            if table_of(&msg) == RT_TABLE_MAIN && !msg.header.flags.contains(RouteFlags::Cloned) {
                out.push(msg);
            }
        }
    }
    Ok(out)
}

fn table_of(msg: &RouteMessage) -> u32 {
    msg.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(msg.header.table as u32)
}

/// The fields of a dumped route both the reconciler and `diagnose` need.
pub(crate) struct RouteFields {
    /// 0.0.0.0/0 or ::/0 for a default route (no Destination attribute).
    pub destination: IpNetwork,
    pub oif: Option<u32>,
    pub source: Option<IpAddr>,
    pub metric: Option<u32>,
}

pub(crate) fn route_fields(msg: &RouteMessage) -> RouteFields {
    let family_v6 = msg.header.address_family == AddressFamily::Inet6;
    let mut dst: Option<IpAddr> = None;
    let (mut oif, mut source, mut metric) = (None, None, None);
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Destination(a) => dst = route_addr(a),
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::PrefSource(a) => source = route_addr(a),
            RouteAttribute::Priority(p) => metric = Some(*p),
            _ => {}
        }
    }
    let dst = dst.unwrap_or(if family_v6 {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    });
    let max = if dst.is_ipv6() { 128 } else { 32 };
    let destination = IpNetwork::new(dst, msg.header.destination_prefix_length.min(max))
        .expect("prefix length clamped to the family maximum");
    RouteFields {
        destination,
        oif,
        source,
        metric,
    }
}

fn route_addr(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(x) => Some(IpAddr::V4(*x)),
        RouteAddress::Inet6(x) => Some(IpAddr::V6(*x)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    #[test]
    fn normalize_clears_host_bits() {
        assert_eq!(normalize(&net("10.1.2.3/16")), net("10.1.0.0/16"));
        assert_eq!(normalize(&net("fd00::1/64")), net("fd00::/64"));
        assert_eq!(normalize(&net("10.1.0.0/16")), net("10.1.0.0/16"));
    }

    #[test]
    fn add_message_carries_our_protocol_scope_and_src() {
        let m = build_add(
            &net("10.132.0.0/14"),
            7,
            Some("10.128.0.1".parse().unwrap()),
            93,
        );
        assert_eq!(u8::from(m.header.protocol), 93);
        assert_eq!(m.header.scope, RouteScope::Link);
        assert_eq!(m.header.table, RouteHeader::RT_TABLE_MAIN);
        assert_eq!(m.header.destination_prefix_length, 14);
        assert!(m.attributes.contains(&RouteAttribute::Oif(7)));
        assert!(m
            .attributes
            .contains(&RouteAttribute::PrefSource(RouteAddress::Inet(
                "10.128.0.1".parse().unwrap()
            ))));

        let m6 = build_add(&net("fd00:132::/48"), 7, None, 93);
        assert_eq!(m6.header.address_family, AddressFamily::Inet6);
        assert_eq!(m6.header.scope, RouteScope::Universe);
        assert!(!m6
            .attributes
            .iter()
            .any(|a| matches!(a, RouteAttribute::PrefSource(_))));
    }

    #[test]
    fn show_looks_like_ip_route() {
        let r = OurRoute {
            destination: net("10.132.0.0/14"),
            device: "sdn0".into(),
            source: Some("10.128.0.1".parse().unwrap()),
            protocol: 93,
            table: RT_TABLE_MAIN,
            metric: None,
        };
        assert_eq!(
            r.to_string(),
            "10.132.0.0/14 dev sdn0 src 10.128.0.1 proto 93"
        );
    }

    #[test]
    fn hints() {
        assert!(hint("add", Some(libc::EINVAL), true).contains("local"));
        assert_eq!(hint("add", Some(libc::EINVAL), false), "");
        assert!(hint("add", Some(libc::EEXIST), false).contains("not ours"));
    }

    #[tokio::test]
    async fn reserved_protocols_are_refused() {
        for p in 0..=4 {
            assert!(matches!(
                Routes::new(p),
                Err(RouteError::ReservedProtocol(_))
            ));
        }
    }
}
