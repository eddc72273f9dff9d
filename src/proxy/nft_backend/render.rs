//! The ruleset text for the nftables proxy backend (pure, no I/O).
//!
//! Layout of our table `inet <table>` (the why is in the docs of [`super`]):
//!
//! ```text
//! nat-prerouting  nat hook prerouting priority dstnat  ─┐
//! nat-output      nat hook output     priority -100    ─┴─> jump services
//! services        ip  daddr . meta l4proto . th dport vmap @service-ips4   (goto svc-*)
//!                 ip6 daddr . meta l4proto . th dport vmap @service-ips6
//! svc-<vip>-<proto>-<port>-<hash>   one per service with Active backends: round robin DNAT
//!                 (a numgen cascade), or with ClientIP affinity: remembered clients first,
//!                 then round robin over goto ep-*
//! ep-<svc id>-<backend>             (affinity) update @aff-* { saddr }, DNAT to the backend
//! aff-<svc id>-<backend>            (affinity) dynamic set of client addresses with timeout
//!
//! filter-input, filter-forward, filter-output   filter hooks, priority filter:
//!                 ct state new jump no-endpoints
//! no-endpoints    ip  daddr . meta l4proto . th dport vmap @no-endpoints4  (goto reject-new)
//!                 ip6 daddr . meta l4proto . th dport vmap @no-endpoints6
//! reject-new      TCP: reject with tcp reset; otherwise ICMP(v6) port unreachable
//! ```
//!
//! `<hash>` digests everything a service chain says, so a chain whose name is in the kernel
//! already holds exactly the wanted rules: [`render_update`] leaves it alone and only rewrites
//! services that changed.

use crate::model::Protocol;
use crate::nft::valid_table_name;
use crate::proxy::model::VirtualService;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The first line of a script for a table name we refuse to put into nft syntax: nft rejects
/// it, so the whole transaction fails and nothing changes (as in `crate::nft`).
pub(crate) const REFUSE_LINE: &str = "sdn-tunnel-refuses-an-unsafe-table-name\n";

/// Verdict maps dispatching `daddr . l4proto . dport` to a service chain.
pub const SERVICE_IPS4: &str = "service-ips4";
pub const SERVICE_IPS6: &str = "service-ips6";
/// Verdict maps sending new connections to services without Active backends to `reject-new`.
pub const NO_ENDPOINTS4: &str = "no-endpoints4";
pub const NO_ENDPOINTS6: &str = "no-endpoints6";

const MAPS: [&str; 4] = [SERVICE_IPS4, SERVICE_IPS6, NO_ENDPOINTS4, NO_ENDPOINTS6];

/// The chains every version of our table has, whatever the services.
const FIXED_CHAINS: [&str; 8] = [
    "nat-prerouting",
    "nat-output",
    "filter-input",
    "filter-forward",
    "filter-output",
    "services",
    "no-endpoints",
    "reject-new",
];

/// Changes whenever the text of service chains changes, so that [`render_update`] rewrites
/// every service chain made by an older version.
const FORMAT_VERSION: &str = "1";

/// Longest comment we emit (nft allows 128 bytes).
const COMMENT_MAX: usize = 120;

/// Names of the objects our table holds, as read back from the kernel (see
/// [`super::existing`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Existing {
    pub chains: BTreeSet<String>,
    pub sets: BTreeSet<String>,
    pub maps: BTreeSet<String>,
}

/// The complete script replacing our table `inet <table>` with rules implementing `services`,
/// in one nft transaction (declare, delete, recreate: valid whether or not the table exists).
/// Touches no other table. Pure.
///
/// Affinity sets start empty (clients forget their backend); [`super::apply`] uses
/// [`render_update`] instead when our table exists.
///
/// Services are taken as given except for what would make nft reject the whole transaction:
/// a second service with the same VIP, port and protocol is ignored, and so are backends of
/// the other address family than the VIP's and duplicate backend addresses.
pub fn render(table: &str, services: &[VirtualService]) -> String {
    let plan = plan(services);
    let mut s = String::with_capacity(4096 + services.len() * 1024);
    if !valid_table_name(table) {
        s.push_str(REFUSE_LINE);
    }
    // Declaring the table first makes the delete valid when it does not exist yet (nft 1.0.6
    // has no `destroy`).
    let _ = writeln!(s, "table inet {table} {{}}");
    let _ = writeln!(s, "delete table inet {table}");
    let _ = writeln!(s, "table inet {table} {{");
    fixed_chains(&mut s);
    for svc in &plan.services {
        service_objects(&mut s, svc);
    }
    for name in MAPS {
        let _ = write!(
            s,
            "\tmap {name} {{\n\t\ttype {} . inet_proto . inet_service : verdict\n",
            if name.ends_with('6') {
                "ipv6_addr"
            } else {
                "ipv4_addr"
            }
        );
        let elements = map_elements(&plan, name, |_| true);
        if !elements.is_empty() {
            let _ = write!(s, "\t\telements = {{\n{elements}\t\t}}\n");
        }
        s.push_str("\t}\n");
    }
    s.push_str("}\n");
    s
}

/// The script that turns our table, holding `existing` now, into what [`render`] builds for
/// `services`, changing only what differs, in one transaction:
///
/// - service chains whose name (with its content hash) is wanted are not touched; others
///   are replaced (new chain, map element swapped, old chain deleted);
/// - the affinity sets of backends that stay Active keep their clients (a changed timeout
///   applies to new entries); other sets, endpoint chains and stray objects are deleted;
/// - the fixed chains are flushed and refilled, the no-endpoints maps rewritten.
///
/// If the fixed skeleton is not all there (not our table, or made by something else), the
/// result is [`render`]'s full replacement. Pure.
pub fn render_update(table: &str, services: &[VirtualService], existing: &Existing) -> String {
    let skeleton = FIXED_CHAINS.iter().all(|c| existing.chains.contains(*c))
        && MAPS.iter().all(|m| existing.maps.contains(*m));
    if !skeleton || !valid_table_name(table) {
        return render(table, services);
    }
    let plan = plan(services);
    let diff = Diff::new(existing, &plan);
    let mut s = String::with_capacity(4096);
    let _ = writeln!(s, "table inet {table} {{}}");
    render_removals(&mut s, table, existing, &plan, &diff);
    render_additions(&mut s, table, &plan, &diff);
    s
}

/// Services in the kernel (by id) and in the plan, and which of them stay as they are.
struct Diff<'a> {
    have: HashMap<&'a str, &'a str>,
    want: HashMap<&'a str, &'a Svc<'a>>,
}

impl<'a> Diff<'a> {
    fn new(existing: &'a Existing, plan: &'a Plan<'a>) -> Diff<'a> {
        let mut have: HashMap<&str, &str> = HashMap::new();
        for c in &existing.chains {
            if let Some((id, _hash)) = c.strip_prefix("svc-").and_then(|r| r.rsplit_once('-')) {
                have.insert(id, c.as_str());
            }
        }
        let want = plan
            .services
            .iter()
            .filter(|svc| svc.chain.is_some())
            .map(|svc| (svc.id.as_str(), svc))
            .collect();
        Diff { have, want }
    }

    fn unchanged(&self, id: &str) -> bool {
        match (self.have.get(id), self.want.get(id)) {
            (Some(h), Some(w)) => Some(*h) == w.chain.as_deref(),
            _ => false,
        }
    }
}

/// Step 1: map elements pointing at chains that go away, then those chains, sets and maps;
/// the fixed chains and endpoint chains of changed services are flushed for refilling.
fn render_removals(s: &mut String, table: &str, existing: &Existing, plan: &Plan, diff: &Diff) {
    for (map, v6) in [(SERVICE_IPS4, false), (SERVICE_IPS6, true)] {
        let mut keys: Vec<String> = diff
            .have
            .keys()
            .filter(|id| !diff.unchanged(id))
            .filter_map(|id| map_key_of_id(id))
            .filter(|(key_v6, _)| *key_v6 == v6)
            .map(|(_, key)| key)
            .collect();
        if !keys.is_empty() {
            keys.sort();
            let _ = writeln!(
                s,
                "delete element inet {table} {map} {{ {} }}",
                keys.join(", ")
            );
        }
    }
    for name in [NO_ENDPOINTS4, NO_ENDPOINTS6] {
        let _ = writeln!(s, "flush map inet {table} {name}");
    }
    for c in FIXED_CHAINS {
        let _ = writeln!(s, "flush chain inet {table} {c}");
    }
    let mut keep_chains: HashSet<&str> = FIXED_CHAINS.iter().copied().collect();
    let mut wanted_ep = HashSet::new();
    let mut wanted_sets = HashSet::new();
    for svc in diff.want.values() {
        keep_chains.insert(svc.chain.as_deref().unwrap_or_default());
        if svc.vs.affinity_timeout.is_some() {
            for b in &svc.active {
                wanted_ep.insert(ep_chain(svc, b));
                wanted_sets.insert(aff_set(svc, b));
            }
        }
    }
    // Service chains first (they reference endpoint chains and sets), then the rest.
    let mut deletes: Vec<&String> = existing
        .chains
        .iter()
        .filter(|c| !keep_chains.contains(c.as_str()) && !wanted_ep.contains(c.as_str()))
        .collect();
    deletes.sort_by_key(|c| !c.starts_with("svc-"));
    for c in deletes {
        if valid_object_name(c) {
            let _ = writeln!(s, "delete chain inet {table} {c}");
        }
    }
    // Endpoint chains of changed services that stay: refilled below.
    // (In plan order, so that the script is a deterministic function of its inputs.)
    for svc in plan.services.iter().filter(|svc| svc.chain.is_some()) {
        if svc.vs.affinity_timeout.is_some() && !diff.unchanged(&svc.id) {
            for b in &svc.active {
                let ep = ep_chain(svc, b);
                if existing.chains.contains(&ep) {
                    let _ = writeln!(s, "flush chain inet {table} {ep}");
                }
            }
        }
    }
    for set in &existing.sets {
        if !wanted_sets.contains(set) && valid_object_name(set) {
            let _ = writeln!(s, "delete set inet {table} {set}");
        }
    }
    for m in &existing.maps {
        if !MAPS.contains(&m.as_str()) && valid_object_name(m) {
            let _ = writeln!(s, "delete map inet {table} {m}");
        }
    }
}

/// Step 2: new contents: fixed chains, changed and new services, map elements.
fn render_additions(s: &mut String, table: &str, plan: &Plan, diff: &Diff) {
    let _ = writeln!(s, "table inet {table} {{");
    fixed_chains(s);
    for svc in &plan.services {
        if svc.chain.is_some() && !diff.unchanged(&svc.id) {
            service_objects(s, svc);
        }
    }
    s.push_str("}\n");
    for name in MAPS {
        let elements = if name.starts_with("service-ips") {
            map_elements(plan, name, |svc| !diff.unchanged(&svc.id))
        } else {
            map_elements(plan, name, |_| true)
        };
        if !elements.is_empty() {
            let _ = write!(s, "add element inet {table} {name} {{\n{elements}}}\n");
        }
    }
}

/// A name we can put into an nft identifier position (as our own names are); anything else
/// read back from the kernel is not ours to delete by name.
fn valid_object_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        && name.len() <= 255
}

/// One service, checked and named.
struct Svc<'a> {
    vs: &'a VirtualService,
    v6: bool,
    /// `<vip>-<proto>-<port>`, unique per service; the base of its object names.
    id: String,
    comment: String,
    /// Active backends of the VIP's family, deduplicated, in the given order.
    active: Vec<SocketAddr>,
    /// `svc-<id>-<hash>`, if there are Active backends.
    chain: Option<String>,
}

struct Plan<'a> {
    services: Vec<Svc<'a>>,
}

fn plan(services: &[VirtualService]) -> Plan<'_> {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(services.len());
    for vs in services {
        if !seen.insert((vs.vip, vs.protocol)) {
            continue;
        }
        let v6 = vs.vip.is_ipv6();
        let mut addrs = HashSet::new();
        let active: Vec<SocketAddr> = vs
            .active_backends()
            .map(|b| b.addr)
            .filter(|a| a.is_ipv6() == v6 && addrs.insert(*a))
            .collect();
        let id = format!(
            "{}-{}-{}",
            name_ip(vs.vip.ip()),
            proto(vs.protocol),
            vs.vip.port()
        );
        let comment = comment(&vs.label());
        let chain = (!active.is_empty()).then(|| {
            // Everything the service's chains, sets and map element say.
            let mut digest = format!("{FORMAT_VERSION} {id} {:?} {comment}", vs.affinity_timeout);
            for b in &active {
                let _ = write!(digest, " {b}");
            }
            format!("svc-{id}-{:016x}", fnv1a(digest.as_bytes()))
        });
        out.push(Svc {
            vs,
            v6,
            id,
            comment,
            active,
            chain,
        });
    }
    Plan { services: out }
}

/// FNV-1a, 64 bits: stable across Rust versions and runs (unlike `DefaultHasher`).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The chains that do not depend on the services.
fn fixed_chains(s: &mut String) {
    // Dispatch: only the first packet of a connection traverses nat chains, so everything
    // here decides new connections only; established ones keep their conntrack NAT binding.
    s.push_str(
        "\tchain nat-prerouting {\n\
         \t\ttype nat hook prerouting priority dstnat; policy accept;\n\
         \t\tjump services\n\
         \t}\n\
         \tchain nat-output {\n\
         \t\ttype nat hook output priority -100; policy accept;\n\
         \t\tjump services\n\
         \t}\n",
    );
    // Refusal: reject is not allowed in nat chains, so services without Active backends are
    // caught in filter chains. Their VIP was not translated, so input (VIP bound locally),
    // forward (pods; VIP routed onward) and output (the host) see it as the destination;
    // priority filter runs after the output DNAT, and `ct state new` spares established
    // connections whose backends went away (they drain).
    for hook in ["input", "forward", "output"] {
        let _ = write!(
            s,
            "\tchain filter-{hook} {{\n\
             \t\ttype filter hook {hook} priority filter; policy accept;\n\
             \t\tct state new jump no-endpoints\n\
             \t}}\n"
        );
    }
    let _ = write!(
        s,
        "\tchain services {{\n\
         \t\tip daddr . meta l4proto . th dport vmap @{SERVICE_IPS4}\n\
         \t\tip6 daddr . meta l4proto . th dport vmap @{SERVICE_IPS6}\n\
         \t}}\n\
         \tchain no-endpoints {{\n\
         \t\tip daddr . meta l4proto . th dport vmap @{NO_ENDPOINTS4}\n\
         \t\tip6 daddr . meta l4proto . th dport vmap @{NO_ENDPOINTS6}\n\
         \t}}\n\
         \tchain reject-new {{\n\
         \t\tmeta l4proto tcp reject with tcp reset\n\
         \t\treject with icmpx port-unreachable\n\
         \t}}\n"
    );
}

/// The element lines (`\t\t\t<key> comment "..." : goto <chain>,\n`) of map `name`, for the
/// services `filter` selects.
fn map_elements(plan: &Plan, name: &str, filter: impl Fn(&Svc) -> bool) -> String {
    let v6 = name.ends_with('6');
    let with_backends = name.starts_with("service-ips");
    let mut out = String::new();
    for svc in &plan.services {
        if svc.v6 != v6 || svc.chain.is_some() != with_backends || !filter(svc) {
            continue;
        }
        let target = svc.chain.as_deref().unwrap_or("reject-new");
        let _ = writeln!(
            out,
            "\t\t\t{} . {} . {} comment \"{}\" : goto {target},",
            svc.vs.vip.ip(),
            proto(svc.vs.protocol),
            svc.vs.vip.port(),
            svc.comment
        );
    }
    out
}

/// The chain (and for affinity, the sets and endpoint chains) of one service with Active
/// backends; nothing for one without (it is only an element of a no-endpoints map).
///
/// Round robin is a cascade, as iptables' `statistic --mode nth` was: the rule for backend
/// k of N matches every (N-k)-th connection reaching it (`numgen inc mod N-k 0`), so each
/// backend gets exactly one connection in every N. It needs no set: the kernel keeps a
/// table's sets in a list, so one anonymous `numgen ... map { }` per service makes loading
/// 10,000 services quadratic (tens of seconds), and shared named maps are walked on every
/// rule that binds them.
fn service_objects(s: &mut String, svc: &Svc) {
    let Some(chain) = &svc.chain else {
        return;
    };
    let family = if svc.v6 { "ip6" } else { "ip" };
    let l4 = proto(svc.vs.protocol);
    let n = svc.active.len();
    let comment = &svc.comment;
    let _ = writeln!(s, "\tchain {chain} {{");
    let pick = |k: usize| {
        if k + 1 < n {
            format!("numgen inc mod {} 0 ", n - k)
        } else {
            String::new()
        }
    };
    // The label once per chain is enough for a reader, and keeps big scripts smaller.
    let note = |k: usize| {
        if k == 0 {
            format!(" comment \"{comment}\"")
        } else {
            String::new()
        }
    };
    match svc.vs.affinity_timeout {
        None => {
            for (k, b) in svc.active.iter().enumerate() {
                let _ = writeln!(
                    s,
                    "\t\tmeta l4proto {l4} {}dnat {family} to {b}{}",
                    pick(k),
                    note(k)
                );
            }
        }
        Some(_) => {
            // A remembered client goes back to its backend while that backend is Active
            // (sets of other backends are not consulted); others are spread round robin.
            for b in &svc.active {
                let _ = writeln!(
                    s,
                    "\t\t{family} saddr @{} goto {}",
                    aff_set(svc, b),
                    ep_chain(svc, b)
                );
            }
            for (k, b) in svc.active.iter().enumerate() {
                let _ = writeln!(s, "\t\t{}goto {}{}", pick(k), ep_chain(svc, b), note(k));
            }
        }
    }
    s.push_str("\t}\n");

    if let Some(timeout) = svc.vs.affinity_timeout {
        let addr_type = if svc.v6 { "ipv6_addr" } else { "ipv4_addr" };
        for b in &svc.active {
            let set = aff_set(svc, b);
            let _ = write!(
                s,
                "\tset {set} {{\n\
                 \t\ttype {addr_type}; flags dynamic,timeout; timeout {}s;\n\
                 \t}}\n\
                 \tchain {} {{\n\
                 \t\tupdate @{set} {{ {family} saddr }} meta l4proto {l4} dnat {family} to {b} \
                 comment \"{comment}\"\n\
                 \t}}\n",
                // 0 would mean "no timeout" to nft.
                timeout.max(1),
                ep_chain(svc, b),
            );
        }
    }
}

fn ep_chain(svc: &Svc, b: &SocketAddr) -> String {
    format!("ep-{}-{}-{}", svc.id, name_ip(b.ip()), b.port())
}

fn aff_set(svc: &Svc, b: &SocketAddr) -> String {
    format!("aff-{}-{}-{}", svc.id, name_ip(b.ip()), b.port())
}

fn proto(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Sctp => "sctp",
    }
}

/// An address as part of an nft identifier (`[A-Za-z0-9_./-]`): IPv4 as usual, IPv6 as its
/// eight groups in hex joined by '.' (uncompressed, so distinct addresses never collide).
fn name_ip(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => a
            .segments()
            .iter()
            .map(|g| format!("{g:x}"))
            .collect::<Vec<_>>()
            .join("."),
    }
}

/// The inverse of [`name_ip`].
fn ip_of_name(name: &str) -> Option<IpAddr> {
    let parts: Vec<&str> = name.split('.').collect();
    match parts.len() {
        4 => name.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
        8 => {
            let mut g = [0u16; 8];
            for (slot, p) in g.iter_mut().zip(&parts) {
                *slot = u16::from_str_radix(p, 16).ok()?;
            }
            Some(IpAddr::V6(Ipv6Addr::from(g)))
        }
        _ => None,
    }
}

/// The service-ips map key (`vip . proto . port`) of a service id, and whether it is IPv6.
fn map_key_of_id(id: &str) -> Option<(bool, String)> {
    let mut parts = id.split('-');
    let (ip, l4, port) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !["tcp", "udp", "sctp"].contains(&l4) {
        return None;
    }
    let ip = ip_of_name(ip)?;
    let port: u16 = port.parse().ok()?;
    Some((ip.is_ipv6(), format!("{ip} . {l4} . {port}")))
}

/// Text safe between double quotes in nft (which has no escapes), at most [`COMMENT_MAX`]
/// bytes.
fn comment(label: &str) -> String {
    let mut out: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._/:-> ".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    out.truncate(COMMENT_MAX);
    out
}

#[cfg(test)]
pub(super) fn test_map_key_of_id(id: &str) -> Option<(bool, String)> {
    map_key_of_id(id)
}

#[cfg(test)]
pub(super) fn name_ip_for_test(ip: IpAddr) -> String {
    name_ip(ip)
}
