//! Pure: a snapshot of remote services -> an index of DNS names -> answers. No I/O.
//!
//! Zones served:
//! - `cluster.<remote>` for every remote that has services:
//!   - `<svc>.<ns>.svc.cluster.<remote>`: A/AAAA = the ClusterIPs; for a headless service the
//!     ready endpoints' IPs.
//!   - `<ip-dashed>.<svc>.<ns>.svc.cluster.<remote>`: A/AAAA of one ready endpoint of a
//!     headless service (`10-132-3-7`, `fd00--7`: the IP text with `.`/`:` replaced by `-`).
//!   - `_<port>._<proto>.<svc>.<ns>.svc.cluster.<remote>`: SRV for each *named* port (the
//!     Kubernetes DNS spec gives unnamed ports no SRV). Target: the service name (port = the
//!     service port), or for a headless service one record per ready endpoint targeting its
//!     endpoint name (port = the endpoint's port of that name, else the service port). The
//!     targets' A/AAAA go in the additional section.
//! - the clusterset domain (default `clusterset.local`), merged over all remotes that have
//!   `<ns>/<svc>`, following the Multi-Cluster Services API DNS spec where it applies:
//!   - `<svc>.<ns>.svc.<domain>`: the MCS API wants one ClusterSetIP. We have none (no VIP is
//!     allocated for the merged service), so we answer with the union of the remotes'
//!     ClusterIPs (a client picks one; the proxy load-balances inside that remote only). For
//!     remotes where the service is headless, their ready endpoint IPs join the union.
//!   - `<ip-dashed>.<remote>.<svc>.<ns>.svc.<domain>`: one endpoint of a headless service
//!     (MCS: `<hostname>.<clusterid>.<svc>.<ns>.svc.clusterset.local`; we have no hostnames,
//!     so the dashed IP stands in, as in per-cluster DNS).
//!   - `_<port>._<proto>.<svc>.<ns>.svc.<domain>`: SRV, the union of the per-remote records
//!     rewritten to clusterset targets.
//!
//! Negative answers: NXDOMAIN for a name inside a zone that does not exist, NODATA (NOERROR, no
//! answers) for an existing name without records of the asked type (including empty
//! non-terminals such as `<ns>.svc.cluster.<remote>`); both carry the zone's SOA in the
//! authority section, its MINIMUM being the TTL. Names outside our zones: REFUSED (the server
//! may forward those instead, see [`super::forward`]).
//!
//! Stale remotes (`dns.serveStale: false`): [`Zones::build_with_stale`] keeps the zone
//! `cluster.<remote>` of each remote listed as failed but answers every name in it SERVFAIL,
//! and leaves its services out of the merged clusterset names.
//!
//! The index is built once per snapshot: lookups lowercase the query name into a stack buffer
//! and do one hash lookup per label to find the zone plus one for the name. The index holds
//! each name's data compactly (an address, or a port and a target name: 24 bytes, where a
//! hickory `Record` is 272 plus its owner name); an answer builds its few records from it.
//! (With 10,000 remote services the records as `Record`s were most of the agent's memory.)

use crate::mcs::clusterset::ClusterSetService;
use crate::model::DesiredService;
use crate::model::RemoteService;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const DEFAULT_CLUSTERSET_DOMAIN: &str = "clusterset.local";
/// Seconds; small, because remote endpoints change and there is no NOTIFY for caches.
pub const DEFAULT_TTL: u32 = 5;

/// What [`Zones::lookup`] answers. Whether the answer fits the transport (truncation) is the
/// server's business.
#[derive(Debug, Clone)]
pub struct Answer {
    pub rcode: ResponseCode,
    /// True for names inside our zones (AA bit).
    pub authoritative: bool,
    pub answers: Vec<Record>,
    /// The zone's SOA for negative answers (NXDOMAIN and NODATA).
    pub authority: Option<Record>,
    /// A/AAAA of SRV targets.
    pub additionals: Vec<Record>,
}

impl Answer {
    const REFUSED: Answer = Answer {
        rcode: ResponseCode::Refused,
        authoritative: false,
        answers: Vec::new(),
        authority: None,
        additionals: Vec::new(),
    };
    /// A zone we have but cannot vouch for (a stale remote with `serveStale: false`).
    const SERVFAIL: Answer = Answer {
        rcode: ResponseCode::ServFail,
        authoritative: false,
        answers: Vec::new(),
        authority: None,
        additionals: Vec::new(),
    };

    /// True for a name outside every zone we serve (the only names that may be forwarded).
    pub fn is_outside_zones(&self) -> bool {
        self.rcode == ResponseCode::Refused && !self.authoritative
    }

    /// NOERROR without answers.
    pub fn is_nodata(&self) -> bool {
        self.rcode == ResponseCode::NoError && self.answers.is_empty()
    }
}

/// One record of a name, without its owner (the name) and TTL (the index's).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Rdata {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    /// Priority 0, weight 100; the target's A/AAAA are the additionals.
    Srv {
        port: u16,
        target: Box<str>,
    },
}

impl Rdata {
    fn rtype(&self) -> RecordType {
        match self {
            Rdata::A(_) => RecordType::A,
            Rdata::Aaaa(_) => RecordType::AAAA,
            Rdata::Srv { .. } => RecordType::SRV,
        }
    }
}

#[derive(Debug, Default)]
struct Node {
    zone: u32,
    apex: bool,
    /// In insertion order; a name holds one type or two (A and AAAA).
    records: Vec<Rdata>,
}

/// Appends without `Vec::push`'s 4-element first allocation (most names hold one record);
/// still amortised O(1): the capacity doubles once in use.
fn push_exact(v: &mut Vec<Rdata>, rec: Rdata) {
    if v.len() == v.capacity() {
        v.reserve_exact(v.len().max(1));
    }
    v.push(rec);
}

#[derive(Debug)]
struct Zone {
    /// Lowercase, no trailing dot.
    origin: String,
    soa: Record,
    /// Every name in the zone is answered SERVFAIL (a stale remote, `serveStale: false`).
    servfail: bool,
}

/// Record counts per zone, for `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ZoneStat {
    pub origin: String,
    pub names: usize,
    pub records: usize,
    /// Answered SERVFAIL: the remote is stale and `dns.serveStale` is false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub servfail: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ZoneStats {
    pub zones: Vec<ZoneStat>,
    /// Services (or remotes) left out because they do not form valid DNS names.
    pub skipped: usize,
    pub ttl: u32,
}

/// The DNS index for one snapshot of remote services. Immutable once built; the server swaps
/// whole `Zones`.
#[derive(Debug)]
pub struct Zones {
    ttl: u32,
    zones: Vec<Zone>,
    zone_index: HashMap<Box<[u8]>, u32>,
    nodes: HashMap<Box<[u8]>, Node>,
    skipped: usize,
}

impl Default for Zones {
    /// No zones: everything is REFUSED.
    fn default() -> Self {
        Zones::build(&[], "", DEFAULT_TTL)
    }
}

/// Longest name text we index: 255 wire octets make at most 254 text characters.
const MAX_TEXT: usize = 256;
const MAX_LABELS: usize = 128;

impl Zones {
    /// Builds the index. `cluster_set_domain` "" disables the merged zone.
    pub fn build(services: &[DesiredService], cluster_set_domain: &str, ttl: u32) -> Zones {
        Zones::build_for(&[], services, cluster_set_domain, ttl)
    }

    /// Like [`Zones::build`], with a zone `cluster.<remote>` for every name in `remotes` even
    /// when it has no services yet (its names are then NXDOMAIN, not REFUSED).
    pub fn build_for(
        remotes: &[&str],
        services: &[DesiredService],
        cluster_set_domain: &str,
        ttl: u32,
    ) -> Zones {
        Zones::build_with_stale(remotes, &[], services, cluster_set_domain, ttl)
    }

    /// Like [`Zones::build_for`]; the zones of the remotes in `servfail` (stale remotes when
    /// `dns.serveStale` is false) answer every name SERVFAIL, and their services are left out
    /// of the clusterset names.
    pub fn build_with_stale(
        remotes: &[&str],
        servfail: &[&str],
        services: &[DesiredService],
        cluster_set_domain: &str,
        ttl: u32,
    ) -> Zones {
        Zones::build_all(remotes, servfail, services, None, cluster_set_domain, ttl)
    }

    /// Like [`Zones::build_with_stale`]; with `clusterset` (ClusterSetIPs on) the clusterset
    /// domain answers from it, as the MCS DNS spec says: `<svc>.<ns>.svc.<domain>` is the
    /// ClusterSetIP (headless: the ready endpoints of every exporting cluster, the local one
    /// included), each endpoint also as `<ip-dashed>.<cluster>.<svc>.<ns>.svc.<domain>`, and
    /// SRV per named port.
    pub fn build_all(
        remotes: &[&str],
        servfail: &[&str],
        services: &[DesiredService],
        clusterset: Option<&[ClusterSetService]>,
        cluster_set_domain: &str,
        ttl: u32,
    ) -> Zones {
        let mut b = Builder::new(ttl);
        let mut by_remote: BTreeMap<String, Vec<&RemoteService>> = remotes
            .iter()
            .chain(servfail)
            .map(|r| (r.to_ascii_lowercase(), Vec::new()))
            .collect();
        for s in services {
            by_remote
                .entry(s.remote.to_ascii_lowercase())
                .or_default()
                .push(&s.service);
        }
        let failed: HashSet<String> = servfail.iter().map(|r| r.to_ascii_lowercase()).collect();
        let domain = normalize(cluster_set_domain);
        let mut merged: BTreeMap<(String, String), Vec<(&str, &RemoteService)>> = BTreeMap::new();
        for (remote, svcs) in &by_remote {
            let origin = format!("cluster.{remote}");
            let Some(zone) = b.zone(&origin) else {
                b.skipped += svcs.len();
                continue;
            };
            if failed.contains(remote) {
                b.zones[zone as usize].servfail = true;
                b.mix(b"servfail");
                b.mix(origin.as_bytes());
                continue;
            }
            for svc in svcs {
                let base = service_base(svc, &origin);
                b.add_view(zone, &base, &[(None, svc)]);
                if !domain.is_empty() && clusterset.is_none() {
                    merged
                        .entry((
                            svc.namespace.to_ascii_lowercase(),
                            svc.name.to_ascii_lowercase(),
                        ))
                        .or_default()
                        .push((remote.as_str(), svc));
                }
            }
        }
        if let (false, Some(cs)) = (domain.is_empty(), clusterset) {
            if let Some(zone) = b.zone(&domain) {
                for s in cs {
                    let base =
                        format!("{}.{}.svc.{domain}", s.name, s.namespace).to_ascii_lowercase();
                    let views = clusterset_views(s);
                    let members: Vec<_> = views.iter().map(|(c, v)| (*c, v)).collect();
                    b.add_view(zone, &base, &members);
                }
            }
        } else if !domain.is_empty() {
            if let Some(zone) = b.zone(&domain) {
                for ((ns, name), members) in &merged {
                    let base = format!("{name}.{ns}.svc.{domain}");
                    let members: Vec<_> = members.iter().map(|(r, s)| (Some(*r), *s)).collect();
                    b.add_view(zone, &base, &members);
                }
            }
        }
        b.finish()
    }

    pub fn ttl(&self) -> u32 {
        self.ttl
    }

    /// Zone origins (lowercase, no trailing dot).
    pub fn origins(&self) -> impl Iterator<Item = &str> {
        self.zones.iter().map(|z| z.origin.as_str())
    }

    pub fn stats(&self) -> ZoneStats {
        let mut zones: Vec<ZoneStat> = self
            .zones
            .iter()
            .map(|z| ZoneStat {
                origin: z.origin.clone(),
                names: 0,
                records: 1, // the SOA
                servfail: z.servfail,
            })
            .collect();
        for node in self.nodes.values() {
            let z = &mut zones[node.zone as usize];
            z.names += 1;
            z.records += node.records.len();
        }
        zones.sort_by(|a, b| a.origin.cmp(&b.origin));
        ZoneStats {
            zones,
            skipped: self.skipped,
            ttl: self.ttl,
        }
    }

    /// Answers one question. Case-insensitive; allocates only the answer's records.
    pub fn lookup(&self, qname: &Name, qtype: RecordType) -> Answer {
        let mut buf = [0u8; MAX_TEXT];
        let mut starts = [0u16; MAX_LABELS];
        let mut labels = 0;
        let mut len = 0;
        let mut dotted_label = false;
        for label in qname.iter() {
            // A valid Name (<= 255 octets) always fits; refuse anything else defensively.
            if labels == MAX_LABELS || len + label.len() + 1 > MAX_TEXT {
                return Answer::REFUSED;
            }
            if labels > 0 {
                buf[len] = b'.';
                len += 1;
            }
            starts[labels] = len as u16;
            labels += 1;
            for &c in label {
                dotted_label |= c == b'.';
                buf[len] = c.to_ascii_lowercase();
                len += 1;
            }
        }
        self.lookup_key(qname, &buf[..len], &starts[..labels], dotted_label, qtype)
    }

    /// [`Zones::lookup`] for a textual name (tests, tools). Invalid names are REFUSED.
    pub fn lookup_str(&self, qname: &str, qtype: RecordType) -> Answer {
        match Name::from_ascii(qname) {
            Ok(name) => self.lookup(&name, qtype),
            Err(_) => Answer::REFUSED,
        }
    }

    fn lookup_key(
        &self,
        qname: &Name,
        key: &[u8],
        starts: &[u16],
        dotted_label: bool,
        qtype: RecordType,
    ) -> Answer {
        // The most specific zone: the longest suffix, on label boundaries, that is a zone.
        let Some(zi) = starts
            .iter()
            .find_map(|&s| self.zone_index.get(&key[s as usize..]).copied())
        else {
            return Answer::REFUSED;
        };
        let zone = &self.zones[zi as usize];
        if zone.servfail {
            return Answer::SERVFAIL;
        }
        let negative = |rcode| Answer {
            rcode,
            authoritative: true,
            answers: Vec::new(),
            authority: Some(zone.soa.clone()),
            additionals: Vec::new(),
        };
        // A label containing a '.' octet cannot be one of our names (its text would alias).
        let node = if dotted_label {
            None
        } else {
            self.nodes.get(key)
        };
        let Some(node) = node else {
            return negative(ResponseCode::NXDomain);
        };
        // RFC 8482: answer ANY with one RRset (the first type this name has).
        let rtype = match qtype {
            RecordType::ANY if node.apex && node.records.is_empty() => RecordType::SOA,
            RecordType::ANY => node.records.first().map_or(RecordType::NULL, Rdata::rtype),
            t => t,
        };
        let answers: Vec<Record> = if rtype == RecordType::SOA {
            if node.apex {
                vec![zone.soa.clone()]
            } else {
                Vec::new()
            }
        } else {
            // The owner is the name asked (its case kept, as a cache expects), made absolute.
            let mut owner = qname.clone();
            owner.set_fqdn(true);
            node.records
                .iter()
                .filter(|r| r.rtype() == rtype)
                .filter_map(|r| self.record(&owner, r))
                .collect()
        };
        if answers.is_empty() {
            return negative(ResponseCode::NoError);
        }
        let additionals = if rtype == RecordType::SRV {
            self.srv_additionals(node)
        } else {
            Vec::new()
        };
        Answer {
            rcode: ResponseCode::NoError,
            authoritative: true,
            answers,
            authority: None,
            additionals,
        }
    }

    fn record(&self, owner: &Name, r: &Rdata) -> Option<Record> {
        let data = match r {
            Rdata::A(ip) => RData::A(A(*ip)),
            Rdata::Aaaa(ip) => RData::AAAA(AAAA(*ip)),
            Rdata::Srv { port, target } => {
                let target = Name::from_ascii(format!("{target}.")).ok()?;
                RData::SRV(SRV::new(0, 100, *port, target))
            }
        };
        Some(Record::from_rdata(owner.clone(), self.ttl, data))
    }

    /// The A/AAAA of each distinct SRV target of `node` (targets are names of this index).
    fn srv_additionals(&self, node: &Node) -> Vec<Record> {
        let mut out = Vec::new();
        let mut seen: Vec<&str> = Vec::new();
        for r in &node.records {
            let Rdata::Srv { target, .. } = r else {
                continue;
            };
            if seen.contains(&&**target) {
                continue;
            }
            seen.push(target);
            let (Some(t), Ok(owner)) = (
                self.nodes.get(target.as_bytes()),
                Name::from_ascii(format!("{target}.")),
            ) else {
                continue;
            };
            out.extend(
                t.records
                    .iter()
                    .filter(|r| matches!(r, Rdata::A(_) | Rdata::Aaaa(_)))
                    .filter_map(|r| self.record(&owner, r)),
            );
        }
        out
    }
}

fn normalize(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// The SRV records of one (port name, protocol) of a view, without duplicates.
#[derive(Default)]
struct Srv {
    records: Vec<Rdata>,
    seen: HashSet<(u16, Box<str>)>,
}

/// The addresses of a view's name: ClusterIPs, or ready endpoints when headless; each once.
fn view_ips(members: &[(Option<&str>, &RemoteService)]) -> Vec<IpAddr> {
    let mut seen = HashSet::new();
    let mut ips = Vec::new();
    for (_, svc) in members {
        if svc.headless {
            ips.extend(ready_ips(svc).map(|e| e.ip).filter(|ip| seen.insert(*ip)));
        } else {
            ips.extend(
                svc.cluster_ips
                    .iter()
                    .copied()
                    .filter(|ip| seen.insert(*ip)),
            );
        }
    }
    ips
}

/// A clusterset service as the views [`Builder::add_view`] takes: the ClusterSetIPs with the
/// merged ports (no per-cluster names), or for a headless service every exporting cluster's
/// endpoints under its cluster name.
fn clusterset_views(s: &ClusterSetService) -> Vec<(Option<&str>, RemoteService)> {
    let view = |ips: Vec<IpAddr>, ports, endpoints| RemoteService {
        namespace: s.namespace.clone(),
        name: s.name.clone(),
        cluster_ips: ips,
        headless: s.headless,
        ports,
        affinity_timeout: None,
        endpoints,
        exported_since: None,
        internal_traffic_policy: None,
        traffic_distribution: None,
    };
    if !s.headless {
        let ports = s
            .ports
            .iter()
            .map(|p| crate::model::ServicePort {
                name: p.port.name.clone(),
                port: p.port.port,
                protocol: crate::mcs::clusterset::protocol(&p.port),
            })
            .collect();
        return vec![(None, view(s.ips.clone(), ports, Vec::new()))];
    }
    s.members
        .iter()
        .map(|m| {
            (
                Some(m.cluster.as_str()),
                view(Vec::new(), m.ports.clone(), m.endpoints.clone()),
            )
        })
        .collect()
}

fn service_base(svc: &RemoteService, origin: &str) -> String {
    format!("{}.{}.svc.{origin}", svc.name, svc.namespace).to_ascii_lowercase()
}

/// `10.132.3.7` -> `10-132-3-7`, `fd00::7` -> `fd00--7`.
fn dashed(ip: IpAddr) -> String {
    ip.to_string().replace(['.', ':'], "-")
}

fn fqdn(text: &str) -> Option<Name> {
    let name = Name::from_ascii(format!("{text}.")).ok()?;
    // Name::from_ascii accepts escapes and odd octets; only plain names are indexable.
    let plain = text
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.');
    plain.then_some(name)
}

fn ip_rdata(ip: IpAddr) -> Rdata {
    match ip {
        IpAddr::V4(v4) => Rdata::A(v4),
        IpAddr::V6(v6) => Rdata::Aaaa(v6),
    }
}

fn ready_ips(svc: &RemoteService) -> impl Iterator<Item = &crate::model::Endpoint> {
    svc.endpoints.iter().filter(|e| e.ready)
}

struct Builder {
    ttl: u32,
    zones: Vec<Zone>,
    zone_index: HashMap<Box<[u8]>, u32>,
    nodes: HashMap<Box<[u8]>, Node>,
    skipped: usize,
    /// FNV-1a over the content, for the SOA serial.
    hash: u32,
}

impl Builder {
    fn new(ttl: u32) -> Builder {
        Builder {
            ttl,
            zones: Vec::new(),
            zone_index: HashMap::new(),
            nodes: HashMap::new(),
            skipped: 0,
            hash: 0x811c_9dc5,
        }
    }

    fn mix(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.hash = (self.hash ^ u32::from(b)).wrapping_mul(0x0100_0193);
        }
    }

    /// The zone `origin` (lowercase), created on first use; None if not a valid name.
    fn zone(&mut self, origin: &str) -> Option<u32> {
        if let Some(&z) = self.zone_index.get(origin.as_bytes()) {
            return Some(z);
        }
        let name = fqdn(origin)?;
        let soa = SOA::new(
            Name::from_ascii("ns.dns").ok()?.append_domain(&name).ok()?,
            Name::from_ascii("hostmaster")
                .ok()?
                .append_domain(&name)
                .ok()?,
            0, // set in finish()
            7200,
            1800,
            86400,
            self.ttl,
        );
        let z = self.zones.len() as u32;
        self.zones.push(Zone {
            origin: origin.to_string(),
            soa: Record::from_rdata(name, self.ttl, RData::SOA(soa)),
            servfail: false,
        });
        self.zone_index.insert(origin.as_bytes().into(), z);
        self.node(z, origin).apex = true;
        Some(z)
    }

    /// The node for `name` (lowercase, inside zone `z`), with its empty ancestors up to the
    /// zone apex so that those answer NODATA rather than NXDOMAIN.
    fn node(&mut self, z: u32, name: &str) -> &mut Node {
        let origin_len = self.zones[z as usize].origin.len();
        let mut rest = name;
        while rest.len() > origin_len {
            self.nodes
                .entry(rest.as_bytes().into())
                .or_insert_with(|| Node {
                    zone: z,
                    ..Node::default()
                });
            rest = rest.split_once('.').map_or("", |(_, r)| r);
        }
        self.nodes
            .entry(name.as_bytes().into())
            .or_insert_with(|| Node {
                zone: z,
                ..Node::default()
            })
    }

    fn add_ips(&mut self, z: u32, name: &str, ips: &[IpAddr]) {
        self.mix(name.as_bytes());
        for ip in ips {
            match ip {
                IpAddr::V4(v4) => self.mix(&v4.octets()),
                IpAddr::V6(v6) => self.mix(&v6.octets()),
            }
        }
        let node = self.node(z, name);
        // A before AAAA, as the answers list them.
        for &ip in ips.iter().filter(|ip| ip.is_ipv4()) {
            push_exact(&mut node.records, ip_rdata(ip));
        }
        for &ip in ips.iter().filter(|ip| ip.is_ipv6()) {
            push_exact(&mut node.records, ip_rdata(ip));
        }
    }

    /// One service name `base` in zone `z`, merged over `members` (one member for per-cluster
    /// names; for the clusterset each member carries its remote's name, which becomes a label
    /// of its endpoints' names).
    fn add_view(&mut self, z: u32, base: &str, members: &[(Option<&str>, &RemoteService)]) {
        if fqdn(base).is_none() {
            self.skipped += members.len();
            return;
        }
        // A/AAAA of the service name: ClusterIPs, or ready endpoints when headless.
        self.add_ips(z, base, &view_ips(members));

        // SRV per (port name, protocol); the targets' addresses are the additionals.
        let mut srvs: BTreeMap<(String, &'static str), Srv> = BTreeMap::new();
        for (remote, svc) in members {
            let mut endpoints = Vec::new();
            if svc.headless {
                let mut seen = HashSet::new();
                for ep in ready_ips(svc).filter(|e| seen.insert(e.ip)) {
                    let text = match remote {
                        Some(r) => format!("{}.{r}.{base}", dashed(ep.ip)),
                        None => format!("{}.{base}", dashed(ep.ip)),
                    };
                    if fqdn(&text).is_none() {
                        continue;
                    }
                    self.add_ips(z, &text, &[ep.ip]);
                    endpoints.push((ep, text.into_boxed_str()));
                }
            }
            for port in svc.ports.iter().filter(|p| !p.name.is_empty()) {
                let key = (
                    port.name.to_ascii_lowercase(),
                    match port.protocol {
                        crate::model::Protocol::Tcp => "tcp",
                        crate::model::Protocol::Udp => "udp",
                        crate::model::Protocol::Sctp => "sctp",
                    },
                );
                let srv = srvs.entry(key).or_default();
                let mut add = |port: u16, target: &str| {
                    if srv.seen.insert((port, target.into())) {
                        let target = target.into();
                        push_exact(&mut srv.records, Rdata::Srv { port, target });
                    }
                };
                if !svc.headless {
                    add(port.port, base);
                    continue;
                }
                for (ep, owner) in &endpoints {
                    let p = ep
                        .ports
                        .iter()
                        .find(|e| e.name == port.name && e.protocol == port.protocol)
                        .map_or(port.port, |e| e.port);
                    add(p, owner);
                }
            }
        }
        self.add_srv_nodes(z, base, srvs);
    }

    /// One `_<port>._<proto>.<base>` node per SRV set.
    fn add_srv_nodes(&mut self, z: u32, base: &str, srvs: BTreeMap<(String, &'static str), Srv>) {
        for ((port, proto), Srv { records, .. }) in srvs {
            let text = format!("_{port}._{proto}.{base}");
            if fqdn(&text).is_none() {
                continue;
            }
            self.mix(text.as_bytes());
            for r in &records {
                if let Rdata::Srv { port, target } = r {
                    self.mix(&port.to_be_bytes());
                    self.mix(target.as_bytes());
                    self.mix(b".");
                }
            }
            let node = self.node(z, &text);
            node.records.reserve_exact(records.len());
            node.records.extend(records);
        }
    }

    fn finish(mut self) -> Zones {
        self.nodes.shrink_to_fit();
        let serial = self.hash;
        for z in &mut self.zones {
            if let RData::SOA(soa) = &mut z.soa.data {
                soa.serial = serial;
            }
        }
        Zones {
            ttl: self.ttl,
            zones: self.zones,
            zone_index: self.zone_index,
            nodes: self.nodes,
            skipped: self.skipped,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn configured_remote_without_services_is_nxdomain_not_refused() {
        use hickory_proto::op::ResponseCode;
        use hickory_proto::rr::RecordType;
        let z = Zones::build_for(&["west"], &[], "clusterset.local", 5);
        let a = z.lookup_str("web.default.svc.cluster.west.", RecordType::A);
        assert_eq!(a.rcode, ResponseCode::NXDomain);
        let a = z.lookup_str("web.default.svc.cluster.east.", RecordType::A);
        assert_eq!(a.rcode, ResponseCode::Refused);
    }

    use super::*;
    use crate::model::{build, Endpoint, Protocol};

    #[test]
    fn stale_remote_zone_is_servfail_and_left_out_of_clusterset() {
        let services = [
            svc("b", "default", "web", &["10.101.0.10"], vec![]),
            svc("c", "default", "web", &["10.201.0.10"], vec![]),
            svc("c", "default", "only-c", &["10.201.0.11"], vec![]),
        ];
        let z = Zones::build_with_stale(&["b", "c"], &["C"], &services, "clusterset.local", 5);
        for (name, qtype) in [
            ("web.default.svc.cluster.c.", RecordType::A),
            ("nope.default.svc.cluster.c.", RecordType::A),
            ("cluster.c.", RecordType::SOA),
            ("_http._tcp.web.default.svc.cluster.c.", RecordType::SRV),
        ] {
            let a = z.lookup_str(name, qtype);
            assert_eq!(a.rcode, ResponseCode::ServFail, "{name}");
            assert!(!a.authoritative && a.answers.is_empty() && a.authority.is_none());
            assert!(!a.is_outside_zones());
        }
        // the healthy remote and the merged view without c
        let a = z.lookup_str("web.default.svc.cluster.b.", RecordType::A);
        assert_eq!(ips(&a), ["10.101.0.10"]);
        let a = z.lookup_str("web.default.svc.clusterset.local.", RecordType::A);
        assert_eq!(ips(&a), ["10.101.0.10"]);
        let a = z.lookup_str("only-c.default.svc.clusterset.local.", RecordType::A);
        assert_eq!(a.rcode, ResponseCode::NXDomain);
        let stats = z.stats();
        let c = stats
            .zones
            .iter()
            .find(|s| s.origin == "cluster.c")
            .unwrap();
        assert!(c.servfail);
        assert!(stats
            .zones
            .iter()
            .filter(|s| s.origin != "cluster.c")
            .all(|s| !s.servfail));
        // a stale remote that has no services yet still has its (SERVFAIL) zone
        let z = Zones::build_with_stale(&[], &["d"], &[], "clusterset.local", 5);
        let a = z.lookup_str("x.default.svc.cluster.d.", RecordType::A);
        assert_eq!(a.rcode, ResponseCode::ServFail);
        // once it syncs again (not listed), answered as before
        let z = Zones::build_with_stale(&["b", "c"], &[], &services, "clusterset.local", 5);
        let a = z.lookup_str("web.default.svc.clusterset.local.", RecordType::A);
        assert_eq!(ips(&a), ["10.101.0.10", "10.201.0.10"]);
        assert!(z
            .lookup_str("example.com.", RecordType::A)
            .is_outside_zones());
    }

    fn ep(ip: &str, ready: bool, port: u16) -> Endpoint {
        let e = build::endpoint(ip).with_port("http", port, Protocol::Tcp);
        if ready {
            e
        } else {
            e.not_ready()
        }
    }

    /// `ns/name` of `remote` with ports http 80/TCP and dns 53/UDP.
    fn svc(remote: &str, ns: &str, name: &str, ips: &[&str], eps: Vec<Endpoint>) -> DesiredService {
        build::service(ns, name)
            .with_ips(ips)
            .with_port("dns", 53, Protocol::Udp)
            .with_endpoints(eps)
            .of(remote)
    }

    fn zones() -> Zones {
        Zones::build(
            &[
                svc(
                    "b",
                    "default",
                    "web",
                    &["10.101.0.10"],
                    vec![ep("10.132.0.5", true, 8080)],
                ),
                svc(
                    "b",
                    "default",
                    "dual",
                    &["10.101.0.11", "fd00:101::11"],
                    vec![],
                ),
                svc(
                    "b",
                    "default",
                    "db",
                    &[],
                    vec![
                        ep("10.132.1.1", true, 5432),
                        ep("10.132.1.2", true, 5433),
                        ep("10.132.1.3", false, 5432),
                    ],
                ),
                svc("c", "default", "web", &["10.201.0.10"], vec![]),
                svc(
                    "c",
                    "default",
                    "db",
                    &[],
                    vec![ep("10.232.0.9", true, 5432)],
                ),
            ],
            DEFAULT_CLUSTERSET_DOMAIN,
            DEFAULT_TTL,
        )
    }

    fn ips(a: &Answer) -> Vec<String> {
        a.answers.iter().map(|r| r.data.to_string()).collect()
    }

    #[test]
    fn cluster_ip_a_aaaa_case_insensitive() {
        let z = zones();
        let a = z.lookup_str("web.default.svc.cluster.b.", RecordType::A);
        assert_eq!(a.rcode, ResponseCode::NoError);
        assert!(a.authoritative);
        assert_eq!(ips(&a), ["10.101.0.10"]);
        assert_eq!(a.answers[0].ttl, 5);
        let a = z.lookup_str("WEB.Default.SVC.cluster.B.", RecordType::A);
        assert_eq!(ips(&a), ["10.101.0.10"]);
        let a = z.lookup_str("dual.default.svc.cluster.b.", RecordType::AAAA);
        assert_eq!(ips(&a), ["fd00:101::11"]);
    }

    #[test]
    fn nodata_and_nxdomain_carry_soa() {
        let z = zones();
        for (name, qtype, rcode) in [
            (
                "web.default.svc.cluster.b.",
                RecordType::AAAA,
                ResponseCode::NoError,
            ),
            (
                "web.default.svc.cluster.b.",
                RecordType::MX,
                ResponseCode::NoError,
            ),
            (
                "default.svc.cluster.b.",
                RecordType::A,
                ResponseCode::NoError,
            ),
            ("svc.cluster.b.", RecordType::A, ResponseCode::NoError),
            ("cluster.b.", RecordType::A, ResponseCode::NoError),
            (
                "_tcp.web.default.svc.cluster.b.",
                RecordType::SRV,
                ResponseCode::NoError,
            ),
            (
                "nope.default.svc.cluster.b.",
                RecordType::A,
                ResponseCode::NXDomain,
            ),
            (
                "x.web.default.svc.cluster.b.",
                RecordType::A,
                ResponseCode::NXDomain,
            ),
            (
                "web.default.svc.clusterset.local.",
                RecordType::AAAA,
                ResponseCode::NoError,
            ),
            (
                "nope.default.svc.clusterset.local.",
                RecordType::A,
                ResponseCode::NXDomain,
            ),
        ] {
            let a = z.lookup_str(name, qtype);
            assert_eq!(a.rcode, rcode, "{name} {qtype}");
            assert!(a.answers.is_empty(), "{name} {qtype}");
            let soa = a.authority.unwrap_or_else(|| panic!("{name}: no SOA"));
            let RData::SOA(s) = &soa.data else { panic!() };
            assert_eq!(s.minimum, 5);
            assert!(
                name.ends_with(&format!("{}", soa.name)),
                "{name} vs {}",
                soa.name
            );
        }
    }

    #[test]
    fn refused_outside_our_zones() {
        let z = zones();
        for name in [
            "example.com.",
            "cluster.x.",
            "b.",
            "local.",
            "svc.cluster.local.",
            ".",
        ] {
            let a = z.lookup_str(name, RecordType::A);
            assert_eq!(a.rcode, ResponseCode::Refused, "{name}");
            assert!(a.authority.is_none() && !a.authoritative);
        }
    }

    #[test]
    fn soa_at_apex() {
        let z = zones();
        let a = z.lookup_str("cluster.b.", RecordType::SOA);
        assert_eq!(a.answers.len(), 1);
        let a = z.lookup_str("clusterset.local.", RecordType::SOA);
        assert_eq!(a.answers.len(), 1);
        assert_eq!(a.answers[0].record_type(), RecordType::SOA);
    }

    #[test]
    fn headless_ready_endpoints_and_names() {
        let z = zones();
        let a = z.lookup_str("db.default.svc.cluster.b.", RecordType::A);
        assert_eq!(ips(&a), ["10.132.1.1", "10.132.1.2"]);
        let a = z.lookup_str("10-132-1-2.db.default.svc.cluster.b.", RecordType::A);
        assert_eq!(ips(&a), ["10.132.1.2"]);
        // not ready: no name
        let a = z.lookup_str("10-132-1-3.db.default.svc.cluster.b.", RecordType::A);
        assert_eq!(a.rcode, ResponseCode::NXDomain);
    }

    #[test]
    fn srv_records() {
        let z = zones();
        let a = z.lookup_str("_http._tcp.web.default.svc.cluster.b.", RecordType::SRV);
        let srv: Vec<String> = a.answers.iter().map(|r| r.data.to_string()).collect();
        assert_eq!(srv, ["0 100 80 web.default.svc.cluster.b."]);
        assert_eq!(
            a.answers[0].name.to_string(),
            "_http._tcp.web.default.svc.cluster.b."
        );
        assert_eq!(
            ips(&Answer {
                answers: a.additionals.clone(),
                ..a.clone()
            }),
            ["10.101.0.10"]
        );
        let a = z.lookup_str("_dns._udp.web.default.svc.cluster.b.", RecordType::SRV);
        assert_eq!(a.answers.len(), 1);
        // protocol matters
        let a = z.lookup_str("_http._udp.web.default.svc.cluster.b.", RecordType::SRV);
        assert_eq!(a.rcode, ResponseCode::NXDomain);
        // headless: per endpoint, with the endpoint's port
        let a = z.lookup_str("_http._tcp.db.default.svc.cluster.b.", RecordType::SRV);
        let mut srv: Vec<String> = a.answers.iter().map(|r| r.data.to_string()).collect();
        srv.sort();
        assert_eq!(
            srv,
            [
                "0 100 5432 10-132-1-1.db.default.svc.cluster.b.",
                "0 100 5433 10-132-1-2.db.default.svc.cluster.b."
            ]
        );
        assert_eq!(a.additionals.len(), 2);
    }

    #[test]
    fn clusterset_merges_remotes() {
        let z = zones();
        let a = z.lookup_str("web.default.svc.clusterset.local.", RecordType::A);
        assert_eq!(ips(&a), ["10.101.0.10", "10.201.0.10"]);
        let a = z.lookup_str("db.default.svc.clusterset.local.", RecordType::A);
        assert_eq!(ips(&a), ["10.132.1.1", "10.132.1.2", "10.232.0.9"]);
        let a = z.lookup_str(
            "10-232-0-9.c.db.default.svc.clusterset.local.",
            RecordType::A,
        );
        assert_eq!(ips(&a), ["10.232.0.9"]);
        let a = z.lookup_str(
            "_http._tcp.web.default.svc.clusterset.local.",
            RecordType::SRV,
        );
        let srv: Vec<String> = a.answers.iter().map(|r| r.data.to_string()).collect();
        assert_eq!(srv, ["0 100 80 web.default.svc.clusterset.local."]);
        let a = z.lookup_str(
            "_http._tcp.db.default.svc.clusterset.local.",
            RecordType::SRV,
        );
        assert_eq!(a.answers.len(), 3);
        // only in b
        let a = z.lookup_str("dual.default.svc.clusterset.local.", RecordType::AAAA);
        assert_eq!(ips(&a), ["fd00:101::11"]);
    }

    #[test]
    fn clusterset_ips_replace_the_merged_clusterips_when_configured() {
        use crate::mcs::clusterset::{build as cs_build, ClusterExports};
        let exported = |mut d: DesiredService| {
            d.service.exported_since = Some(1);
            d
        };
        let local = [
            exported(svc(
                "a",
                "default",
                "web",
                &["10.96.0.10"],
                vec![ep("10.1.0.5", true, 8080)],
            )),
            exported(svc(
                "a",
                "default",
                "db",
                &[],
                vec![ep("10.1.0.6", true, 5432)],
            )),
        ];
        let remote = [
            exported(svc("b", "default", "web", &["10.101.0.10"], vec![])),
            exported(svc(
                "b",
                "default",
                "db",
                &[],
                vec![ep("10.132.1.1", true, 5432), ep("10.132.1.2", false, 5432)],
            )),
        ];
        let cfg = crate::config::McsConfig {
            cluster_set_cidrs: vec![
                "10.250.0.0/24".parse().unwrap(),
                "fd00:250::/64".parse().unwrap(),
            ],
            failover_order: Default::default(),
            ..Default::default()
        };
        let (cs, problems) = cs_build(
            &cfg,
            &[
                ClusterExports {
                    cluster: "a",
                    local: true,
                    services: local.iter().map(|d| &d.service).collect(),
                },
                ClusterExports {
                    cluster: "b",
                    local: false,
                    services: remote.iter().map(|d| &d.service).collect(),
                },
            ],
        );
        assert!(problems.is_empty());
        let web = cs.iter().find(|s| s.name == "web").unwrap();
        let z = Zones::build_all(&["b"], &[], &remote, Some(&cs), "clusterset.local", 5);
        let a = z.lookup_str("web.default.svc.clusterset.local.", RecordType::A);
        assert_eq!(ips(&a), [web.ips[0].to_string()]);
        let a = z.lookup_str("web.default.svc.clusterset.local.", RecordType::AAAA);
        assert_eq!(ips(&a), [web.ips[1].to_string()]);
        // The per-cluster name still answers that cluster's ClusterIP.
        let a = z.lookup_str("web.default.svc.cluster.b.", RecordType::A);
        assert_eq!(ips(&a), ["10.101.0.10"]);
        // Headless: the ready endpoints of every exporting cluster, ours included.
        let a = z.lookup_str("db.default.svc.clusterset.local.", RecordType::A);
        assert_eq!(ips(&a), ["10.1.0.6", "10.132.1.1"]);
        let a = z.lookup_str("10-1-0-6.a.db.default.svc.clusterset.local.", RecordType::A);
        assert_eq!(ips(&a), ["10.1.0.6"]);
        let a = z.lookup_str(
            "_http._tcp.web.default.svc.clusterset.local.",
            RecordType::SRV,
        );
        let srv: Vec<String> = a.answers.iter().map(|r| r.data.to_string()).collect();
        assert_eq!(srv, ["0 100 80 web.default.svc.clusterset.local."]);
        let a = z.lookup_str(
            "_http._tcp.db.default.svc.clusterset.local.",
            RecordType::SRV,
        );
        let srv: Vec<String> = a.answers.iter().map(|r| r.data.to_string()).collect();
        assert_eq!(
            srv,
            [
                "0 100 5432 10-1-0-6.a.db.default.svc.clusterset.local.",
                "0 100 5432 10-132-1-1.b.db.default.svc.clusterset.local."
            ]
        );
    }

    #[test]
    fn custom_domain_and_disabled_clusterset() {
        let s = [svc("b", "ns", "web", &["10.101.0.10"], vec![])];
        let z = Zones::build(&s, "Mesh.Example.", 30);
        let a = z.lookup_str("web.ns.svc.mesh.example.", RecordType::A);
        assert_eq!(ips(&a), ["10.101.0.10"]);
        assert_eq!(a.answers[0].ttl, 30);
        assert_eq!(
            z.lookup_str("web.ns.svc.clusterset.local.", RecordType::A)
                .rcode,
            ResponseCode::Refused
        );
        let z = Zones::build(&s, "", 5);
        assert_eq!(z.origins().collect::<Vec<_>>(), ["cluster.b"]);
    }

    #[test]
    fn hostile_names_do_not_alias() {
        let z = zones();
        // one label "web.default" must not match two labels
        let name = Name::from_labels(vec![
            b"web.default".to_vec(),
            b"svc".to_vec(),
            b"cluster".to_vec(),
            b"b".to_vec(),
        ])
        .unwrap();
        let a = z.lookup(&name, RecordType::A);
        assert_eq!(a.rcode, ResponseCode::NXDomain);
        // invalid service names are skipped, not panicking
        let bad = [
            svc("b", "n s", "we b", &["10.0.0.1"], vec![]),
            svc("bad remote", "ns", "x", &["10.0.0.1"], vec![]),
        ];
        let z = Zones::build(&bad, DEFAULT_CLUSTERSET_DOMAIN, 5);
        assert_eq!(z.stats().skipped, 3);
    }

    #[test]
    fn stats_and_serial() {
        let z = zones();
        let s = z.stats();
        assert_eq!(
            s.zones
                .iter()
                .map(|z| z.origin.as_str())
                .collect::<Vec<_>>(),
            ["cluster.b", "cluster.c", "clusterset.local"]
        );
        assert!(s.zones.iter().all(|z| z.records > 1));
        let serial = |z: &Zones| match &z.lookup_str("cluster.b.", RecordType::SOA).answers[0].data
        {
            RData::SOA(s) => s.serial,
            _ => unreachable!(),
        };
        assert_eq!(serial(&z), serial(&zones()));
        let other = Zones::build(
            &[svc("b", "default", "web", &["10.101.0.99"], vec![])],
            DEFAULT_CLUSTERSET_DOMAIN,
            5,
        );
        assert_ne!(serial(&z), serial(&other));
    }

    #[test]
    fn thousand_services_index() {
        let services: Vec<DesiredService> = (0..1000)
            .map(|i| {
                svc(
                    "b",
                    "ns",
                    &format!("svc{i}"),
                    &[&format!("10.101.{}.{}", i / 250, i % 250 + 1)],
                    vec![],
                )
            })
            .collect();
        let z = Zones::build(&services, DEFAULT_CLUSTERSET_DOMAIN, 5);
        let name = Name::from_ascii("svc999.ns.svc.cluster.b.").unwrap();
        let start = std::time::Instant::now();
        for _ in 0..100_000 {
            assert_eq!(z.lookup(&name, RecordType::A).answers.len(), 1);
        }
        // generous: ~100 ns per lookup expected; catches accidental O(n) scans
        assert!(
            start.elapsed() < std::time::Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
    }
}
