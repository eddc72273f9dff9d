//! Loading and validating the config file. Parsing (serde) catches syntax, unknown keys and
//! malformed values; `validate` checks the semantic rules without touching the filesystem and
//! reports every problem at once, each naming the offending field by its YAML path
//! (e.g. `remotes[0].static.peers[2].publicKey`).

use super::{Advertise, Config, RemoteConfig, StaticPeer};
use crate::cidr;
use crate::keys::{self, KeyError};
use ipnetwork::IpNetwork;
use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// One semantic problem, displayed as `field: reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FieldError {
    /// YAML path of the offending value, e.g. `remotes[1].podCIDRs[0]`.
    pub field: String,
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// YAML syntax, unknown keys, wrong types, malformed addresses. The text is serde's and
    /// names the field path and the line/column.
    #[error("{0}")]
    Parse(String),
    /// Semantic problems, one per line.
    #[error("{}", Lines(.0))]
    Invalid(Vec<FieldError>),
}

struct Lines<'a>(&'a [FieldError]);

impl fmt::Display for Lines<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Route protocol numbers defined in the kernel's `include/uapi/linux/rtnetlink.h` (RTPROT_*).
/// Our cleanup deletes every route carrying our number, so it must not be one of these.
const RESERVED_ROUTE_PROTOCOLS: &[u8] = &[
    0, 1, 2, 3, 4, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 42, 99, 186, 187, 188, 189, 192,
];

impl Config {
    /// Parses YAML text, fills `node.name` from `node_name_env` (normally `$NODE_NAME`) when
    /// the file leaves it out, and validates. No filesystem access.
    pub fn parse(text: &str, node_name_env: Option<&str>) -> Result<Config, ConfigError> {
        let cfg = Self::parse_unvalidated(text, node_name_env)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads, parses and validates the file at `path` (with `$NODE_NAME`), and checks that the
    /// private key file exists, is 0600 and holds a key. All problems are reported together.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let env = std::env::var("NODE_NAME").ok();
        let cfg = Self::parse_unvalidated(&text, env.as_deref())?;
        let mut errors = cfg.field_errors();
        match keys::read_private_key_file(&cfg.tunnel.private_key_file) {
            // With self-advertisement the agent creates the key and publishes it itself.
            Err(KeyError::Missing { .. }) if cfg.advertises() => {}
            Err(e) => errors.push(key_file_error(e)),
            Ok(_) => {}
        }
        if cfg.node.advertise == Advertise::Always && cfg.local_api().is_none() {
            errors.push(FieldError {
                field: "node.advertise".into(),
                reason: "'always' needs the local cluster's API: set cluster.kubeconfig or \
                         $KUBECONFIG, or run in a pod"
                    .into(),
            });
        }
        if errors.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigError::Invalid(errors))
        }
    }

    /// Checks the semantic rules (CIDRs, overlaps, names, keys, ports, ...). Never touches the
    /// filesystem; returns every problem found, not just the first.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let errors = self.field_errors();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(errors))
        }
    }

    /// Where the local cluster's API is (cluster.kubeconfig, $KUBECONFIG, in-cluster).
    pub fn local_api(&self) -> Option<crate::source::kube_client::LocalApi> {
        crate::source::kube_client::local_api(self.cluster.kubeconfig.as_deref())
    }

    /// Whether the agent will annotate its own Node (and may create its key).
    pub fn advertises(&self) -> bool {
        match self.node.advertise {
            Advertise::Never => false,
            Advertise::Always => true,
            Advertise::Auto => self.local_api().is_some(),
        }
    }

    /// This node's name. Always set on a config returned by `parse`/`load`.
    pub fn node_name(&self) -> &str {
        self.node.name.as_deref().unwrap_or("")
    }

    /// Reads the private key from `tunnel.privateKeyFile` (which must be mode 0600).
    pub fn load_private_key(&self) -> Result<[u8; 32], ConfigError> {
        keys::read_private_key_file(&self.tunnel.private_key_file)
            .map_err(|e| ConfigError::Invalid(vec![key_file_error(e)]))
    }

    /// For the read-only commands (`status`, `cleanup`) that must work even with a config the
    /// validator refuses: parsed, `node.name` filled, not validated.
    pub fn parse_lenient(text: &str, node_name_env: Option<&str>) -> Result<Config, ConfigError> {
        Self::parse_unvalidated(text, node_name_env)
    }

    fn parse_unvalidated(text: &str, node_name_env: Option<&str>) -> Result<Config, ConfigError> {
        let mut cfg: Config =
            serde_norway::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        let unset = cfg.node.name.as_deref().is_none_or(|n| n.trim().is_empty());
        if unset {
            cfg.node.name = node_name_env
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(str::to_string);
        }
        Ok(cfg)
    }

    fn field_errors(&self) -> Vec<FieldError> {
        let mut c = Checker::default();
        c.cluster(self);
        c.node(self);
        c.tunnel(self);
        c.proxy(self);
        c.dns(self);
        c.http(self);
        c.limits(self);
        c.remotes(self);
        c.mcs(self);
        c.overlaps(self);
        c.errors
    }
}

fn key_file_error(e: KeyError) -> FieldError {
    FieldError {
        field: "tunnel.privateKeyFile".into(),
        reason: e.to_string(),
    }
}

/// A CIDR with its YAML path; entries of the same group may overlap each other.
struct Entry<'a> {
    field: String,
    net: &'a IpNetwork,
    group: (usize, u8),
}

#[derive(Default)]
struct Checker {
    errors: Vec<FieldError>,
}

impl Checker {
    fn err(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        self.errors.push(FieldError {
            field: field.into(),
            reason: reason.into(),
        });
    }

    fn cluster(&mut self, cfg: &Config) {
        self.dns_label("cluster.name", &cfg.cluster.name);
        self.cidr_list("cluster.podCIDRs", &cfg.cluster.pod_cidrs, true);
        self.cidr_list("cluster.serviceCIDRs", &cfg.cluster.service_cidrs, false);
    }

    fn node(&mut self, cfg: &Config) {
        let node = &cfg.node;
        if node.name.as_deref().is_none_or(|n| n.trim().is_empty()) {
            self.err(
                "node.name",
                "missing; set it or the NODE_NAME environment variable",
            );
        }
        // Optional: with self-advertisement they come from our Node's spec.podCIDRs.
        self.cidr_list("node.podCIDRs", &node.pod_cidrs, false);
        for (i, n) in node.pod_cidrs.iter().enumerate() {
            if !cfg.cluster.pod_cidrs.iter().any(|c| cidr::contains(c, n)) {
                self.err(
                    format!("node.podCIDRs[{i}]"),
                    format!(
                        "{n} is outside cluster.podCIDRs {}",
                        list(&cfg.cluster.pod_cidrs)
                    ),
                );
            }
        }
        if let Some(ip) = node.source_ip {
            if !node.pod_cidrs.iter().any(|n| n.contains(ip)) {
                self.err(
                    "node.sourceIP",
                    format!(
                        "{ip} is outside node.podCIDRs {}; remote clusters route replies only \
                         to this node's pod CIDRs",
                        list(&node.pod_cidrs)
                    ),
                );
            }
        }
    }

    fn tunnel(&mut self, cfg: &Config) {
        let t = &cfg.tunnel;
        if let Some(reason) = ifname_problem(&t.device) {
            self.err("tunnel.device", reason);
        }
        if !(1280..=9000).contains(&t.mtu) {
            self.err(
                "tunnel.mtu",
                format!(
                    "{} is out of range 1280..=9000 (1280 is the IPv6 minimum)",
                    t.mtu
                ),
            );
        }
        if t.listen_port == 0 {
            self.err("tunnel.listenPort", "must not be 0");
        }
        if t.udp_buffer_bytes < 65536 {
            self.err(
                "tunnel.udpBufferBytes",
                format!("{} is too small; use at least 65536", t.udp_buffer_bytes),
            );
        }
        if let Some(q) = t.queues {
            if !(1..=super::QUEUES_MAX).contains(&q) {
                self.err(
                    "tunnel.queues",
                    format!(
                        "{q} is out of range 1..={} (leave it out for one per available CPU)",
                        super::QUEUES_MAX
                    ),
                );
            }
        }
        if RESERVED_ROUTE_PROTOCOLS.contains(&t.route_protocol) {
            self.err(
                "tunnel.routeProtocol",
                format!(
                    "{} is a well-known route protocol (kernel RTPROT_*); pick a number nothing \
                     else uses, e.g. the default {}",
                    t.route_protocol,
                    super::DEFAULT_ROUTE_PROTOCOL
                ),
            );
        }
    }

    fn dns(&mut self, cfg: &Config) {
        let d = &cfg.dns;
        if !(1..=3600).contains(&d.ttl) {
            self.err(
                "dns.ttl",
                format!("{} is out of range 1..=3600 seconds", d.ttl),
            );
        }
        let dom = d.cluster_set_domain.trim_end_matches('.');
        let bad_label = dom.split('.').any(|l| {
            l.is_empty()
                || l.len() > 63
                || !l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
        if !dom.is_empty() && (bad_label || dom.len() > 200) {
            self.err(
                "dns.clusterSetDomain",
                format!("'{}' is not a valid DNS domain name", d.cluster_set_domain),
            );
        }
        if dom.starts_with("cluster.")
            && cfg
                .remotes
                .iter()
                .any(|r| dom == format!("cluster.{}", r.name))
        {
            self.err(
                "dns.clusterSetDomain",
                "must differ from every cluster.<remote> zone",
            );
        }
        for (i, f) in d.forwarders.iter().enumerate() {
            let field = format!("dns.forwarders[{i}]");
            match crate::dns::forward::parse_forwarder(f) {
                Err(reason) => self.err(field, reason),
                Ok(a) if crate::dns::forward::is_self(a, d.listen) => self.err(
                    field,
                    format!(
                        "{a} is this agent's own dns.listen {}: queries would loop",
                        d.listen
                    ),
                ),
                Ok(_) => {}
            }
        }
    }

    fn http(&mut self, cfg: &Config) {
        let h = &cfg.http;
        if !h.enabled {
            return;
        }
        if h.listen.port() == 0 {
            self.err(
                "http.listen",
                "port 0: the kubelet's probes need a fixed port",
            );
        }
        if cfg.dns.enabled && cfg.dns.listen == h.listen {
            self.err("http.listen", format!("{} is dns.listen too", h.listen));
        }
        if !(1..=3600).contains(&h.ready_timeout_seconds) {
            self.err(
                "http.readyTimeoutSeconds",
                format!(
                    "{} is out of range 1..=3600 seconds",
                    h.ready_timeout_seconds
                ),
            );
        }
    }

    fn limits(&mut self, cfg: &Config) {
        let l = &cfg.limits;
        for (field, v, min) in [
            ("limits.nodes", l.nodes, 1),
            ("limits.services", l.services, 1),
            ("limits.endpointSlices", l.endpoint_slices, 1),
            // A page of a list holds up to 500 objects of a few KiB.
            ("limits.messageBytes", l.message_bytes, 1 << 20),
        ] {
            if v < min {
                self.err(field, format!("{v} is below the minimum {min}"));
            }
        }
    }

    fn proxy(&mut self, cfg: &Config) {
        let p = &cfg.proxy;
        const SCHEDULERS: &[&str] = &["rr", "wrr", "lc", "wlc", "sh", "dh", "mh", "sed", "nq"];
        if !SCHEDULERS.contains(&p.scheduler.as_str()) {
            self.err(
                "proxy.scheduler",
                format!(
                    "unknown IPVS scheduler '{}'; use one of {}",
                    p.scheduler,
                    SCHEDULERS.join(", ")
                ),
            );
        }
        if let Some(reason) = ifname_problem(&p.device) {
            self.err("proxy.device", reason);
        } else if p.device == cfg.tunnel.device {
            self.err("proxy.device", "must differ from tunnel.device");
        }
        if p.peer_down_after_seconds < 150 {
            self.err(
                "proxy.peerDownAfterSeconds",
                format!(
                    "{} is too short: must be at least 150 (a healthy peer re-handshakes only \
                     every 2 minutes)",
                    p.peer_down_after_seconds
                ),
            );
        }
    }

    fn remotes(&mut self, cfg: &Config) {
        let mut names: HashMap<&str, usize> = HashMap::new();
        // Every peer key seen so far -> the field that declared it.
        let mut keys_seen: HashMap<[u8; 32], String> = HashMap::new();
        for (i, r) in cfg.remotes.iter().enumerate() {
            let at = format!("remotes[{i}]");
            self.dns_label(&format!("{at}.name"), &r.name);
            if r.name == "local" {
                self.err(
                    format!("{at}.name"),
                    "'local' would make its DNS zone cluster.local, the local cluster's own domain",
                );
            }
            if !r.name.is_empty() && r.name == cfg.cluster.name {
                self.err(
                    format!("{at}.name"),
                    format!("'{}' is the local cluster's name (cluster.name)", r.name),
                );
            }
            let first = *names.entry(&r.name).or_insert(i);
            if first != i {
                self.err(
                    format!("{at}.name"),
                    format!(
                        "duplicate remote name '{}' (also remotes[{first}].name)",
                        r.name
                    ),
                );
            }
            self.cidr_list(&format!("{at}.podCIDRs"), &r.pod_cidrs, true);
            self.cidr_list(&format!("{at}.serviceCIDRs"), &r.service_cidrs, false);
            if r.context.is_some() && r.kubeconfig.is_none() {
                self.err(format!("{at}.context"), "only meaningful with `kubeconfig`");
            }
            if let crate::config::Import::Selector(sel) = &r.import {
                if let Err(reason) = super::label_selector::check(sel) {
                    self.err(format!("{at}.import.selector"), reason);
                }
            }
            if r.static_source.is_some() && r.import != crate::config::Import::default() {
                self.err(
                    format!("{at}.import"),
                    "only meaningful with `kubeconfig` (a static remote lists its services)",
                );
            }
            match (&r.static_source, &r.kubeconfig) {
                (None, None) => self.err(at, "no source; add `kubeconfig:` or `static:`"),
                (Some(_), Some(_)) => self.err(
                    format!("{at}.kubeconfig"),
                    "a remote has one source: `kubeconfig` or `static`, not both",
                ),
                (None, Some(p)) => {
                    if p.as_os_str().is_empty() {
                        self.err(format!("{at}.kubeconfig"), "empty path");
                    }
                }
                (Some(s), None) => {
                    for (j, p) in s.peers.iter().enumerate() {
                        let at = format!("{at}.static.peers[{j}]");
                        self.peer(&at, r, p, &mut keys_seen);
                    }
                    self.peer_overlaps(&at, &s.peers);
                    for (j, svc) in s.services.iter().enumerate() {
                        self.static_service(&format!("{at}.static.services[{j}]"), r, svc);
                    }
                }
            }
        }
    }

    fn static_service(&mut self, at: &str, remote: &RemoteConfig, s: &super::StaticService) {
        if s.namespace.is_empty() || s.name.is_empty() {
            self.err(at.to_string(), "namespace and name are required");
        }
        // Each address named by the field it was written in.
        let ips = (s
            .cluster_ip
            .iter()
            .map(|ip| (format!("{at}.clusterIP"), ip)))
        .chain(
            s.cluster_ips
                .iter()
                .enumerate()
                .map(|(i, ip)| (format!("{at}.clusterIPs[{i}]"), ip)),
        );
        for (field, ip) in ips {
            if !remote.service_cidrs.iter().any(|n| n.contains(*ip)) {
                self.err(
                    field,
                    format!(
                        "{ip} is outside remote {} serviceCIDRs {}",
                        remote.name,
                        list(&remote.service_cidrs)
                    ),
                );
            }
        }
        if s.ports.is_empty() {
            self.err(format!("{at}.ports"), "at least one port is required");
        }
        for (k, e) in s.endpoints.iter().enumerate() {
            if !remote.pod_cidrs.iter().any(|n| n.contains(e.ip)) {
                self.err(
                    format!("{at}.endpoints[{k}].ip"),
                    format!(
                        "{} is outside remote {} podCIDRs {}",
                        e.ip,
                        remote.name,
                        list(&remote.pod_cidrs)
                    ),
                );
            }
            for name in e.ports.keys() {
                if !s.ports.iter().any(|p| &p.name == name) {
                    self.err(
                        format!("{at}.endpoints[{k}].ports.{name}"),
                        "no service port has this name",
                    );
                }
            }
        }
    }

    fn peer(
        &mut self,
        at: &str,
        remote: &RemoteConfig,
        p: &StaticPeer,
        keys_seen: &mut HashMap<[u8; 32], String>,
    ) {
        match keys::parse_key(&p.public_key) {
            Err(e) => self.err(format!("{at}.publicKey"), format!("malformed: {e}")),
            Ok(k) => {
                let field = format!("{at}.publicKey");
                if let Some(first) = keys_seen.get(&k) {
                    self.err(field, format!("duplicate publicKey (also {first})"));
                } else {
                    keys_seen.insert(k, field);
                }
            }
        }
        if let Err(reason) = p.endpoint_addr() {
            self.err(format!("{at}.endpoint"), reason);
        }
        let field = format!("{at}.podCIDRs");
        self.cidr_list(&field, &p.pod_cidrs, true);
        for (k, n) in p.pod_cidrs.iter().enumerate() {
            if !remote.pod_cidrs.iter().any(|o| cidr::contains(o, n)) {
                self.err(
                    format!("{field}[{k}]"),
                    format!(
                        "{n} is outside remote {} podCIDRs {}",
                        remote.name,
                        list(&remote.pod_cidrs)
                    ),
                );
            }
        }
    }

    /// Two peers of one remote claiming overlapping pod CIDRs would steal each other's traffic.
    fn peer_overlaps(&mut self, at: &str, peers: &[StaticPeer]) {
        let mut all = Vec::new();
        for (j, p) in peers.iter().enumerate() {
            for (k, net) in p.pod_cidrs.iter().enumerate() {
                all.push(Entry {
                    field: format!("{at}.static.peers[{j}].podCIDRs[{k}]"),
                    net,
                    group: (j, 0),
                });
            }
        }
        self.cross_overlaps(&all);
    }

    fn mcs(&mut self, cfg: &Config) {
        let m = &cfg.mcs;
        self.cidr_list("mcs.clusterSetCIDRs", &m.cluster_set_cidrs, false);
        for (i, n) in m.cluster_set_cidrs.iter().enumerate() {
            let field = format!("mcs.clusterSetCIDRs[{i}]");
            if m.cluster_set_cidrs[..i]
                .iter()
                .any(|o| o.is_ipv4() == n.is_ipv4())
            {
                self.err(field, format!("{n}: at most one CIDR per IP family"));
            } else if crate::mcs::clusterset_ip::usable_addresses(*n) < 2 {
                self.err(field, format!("{n} is too small for ClusterSetIPs"));
            }
        }
        // The local cluster may be listed (one list for every cluster of the set): it comes
        // first wherever it is.
        let clusters: Vec<&str> = cfg
            .remotes
            .iter()
            .map(|r| r.name.as_str())
            .chain([cfg.cluster.name.as_str()])
            .collect();
        for (svc, order) in &m.failover_order {
            let field = format!("mcs.failoverOrder.{svc}");
            let parts: Vec<&str> = svc.split('/').collect();
            if parts.len() != 2 || parts.iter().any(|p| p.is_empty()) {
                self.err(field.clone(), "the key must be namespace/name");
            }
            for (k, c) in order.iter().enumerate() {
                if !clusters.contains(&c.as_str()) {
                    self.err(
                        format!("{field}[{k}]"),
                        format!("'{c}' is neither this cluster nor a remote in `remotes`"),
                    );
                } else if order[..k].contains(c) {
                    self.err(format!("{field}[{k}]"), format!("'{c}' is listed twice"));
                }
            }
        }
    }

    /// Overlaps between the local cluster's and the remotes' pod/service CIDRs, between
    /// remotes, and between one cluster's pod and service CIDRs. Entries of one list may
    /// nest (harmless); anything else that overlaps would make routing ambiguous.
    fn overlaps(&mut self, cfg: &Config) {
        let local = (
            "cluster".to_string(),
            &cfg.cluster.pod_cidrs,
            &cfg.cluster.service_cidrs,
        );
        let remotes = cfg
            .remotes
            .iter()
            .enumerate()
            .map(|(i, r)| (format!("remotes[{i}]"), &r.pod_cidrs, &r.service_cidrs));
        let mut all = Vec::new();
        for (c, (prefix, pods, svcs)) in std::iter::once(local).chain(remotes).enumerate() {
            for (kind, name, nets) in [(0, "podCIDRs", pods), (1, "serviceCIDRs", svcs)] {
                for (k, net) in nets.iter().enumerate() {
                    all.push(Entry {
                        field: format!("{prefix}.{name}[{k}]"),
                        net,
                        group: (c, kind),
                    });
                }
            }
        }
        // ClusterSetIPs are local VIPs: routed into the tunnel or onto a pod, they'd be lost.
        let c = all.len();
        for (k, net) in cfg.mcs.cluster_set_cidrs.iter().enumerate() {
            all.push(Entry {
                field: format!("mcs.clusterSetCIDRs[{k}]"),
                net,
                group: (c, 2),
            });
        }
        self.cross_overlaps(&all);
    }

    /// Reports each entry that overlaps an earlier entry of a different group, naming both.
    fn cross_overlaps(&mut self, all: &[Entry<'_>]) {
        for (b, eb) in all.iter().enumerate() {
            let hit = all[..b]
                .iter()
                .find(|ea| ea.group != eb.group && cidr::overlaps(ea.net, eb.net));
            if let Some(ea) = hit {
                self.err(
                    eb.field.clone(),
                    format!("{} overlaps {} ({})", eb.net, ea.field, ea.net),
                );
            }
        }
    }

    fn dns_label(&mut self, field: &str, s: &str) {
        let reason = if s.is_empty() {
            "must not be empty".to_string()
        } else if s.len() > 63 {
            format!("'{s}' is longer than 63 characters")
        } else if !s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            || s.starts_with('-')
            || s.ends_with('-')
        {
            format!(
                "'{s}' is not a DNS label (lowercase letters, digits and '-', not at either end)"
            )
        } else {
            return;
        };
        self.err(field, reason);
    }

    /// Host-bit check for every entry, and (if `required`) at least one entry.
    fn cidr_list(&mut self, field: &str, nets: &[IpNetwork], required: bool) {
        if required && nets.is_empty() {
            self.err(field, "must list at least one CIDR");
        }
        for (i, n) in nets.iter().enumerate() {
            if cidr::has_host_bits(n) {
                self.err(
                    format!("{field}[{i}]"),
                    format!("{n} has host bits set; did you mean {}?", cidr::network(n)),
                );
            }
        }
    }
}

/// Why `name` is not a valid Linux interface name (the kernel's `dev_valid_name`), if it isn't.
fn ifname_problem(name: &str) -> Option<String> {
    if name.is_empty() || name.len() > 15 {
        return Some(format!(
            "'{name}' must be 1 to 15 characters (Linux interface name)"
        ));
    }
    if name == "." || name == ".." {
        return Some(format!("'{name}' is not a valid interface name"));
    }
    // The name also goes into our nftables rules, so only characters nft can quote safely.
    if !crate::nft::valid_device_name(name) {
        return Some(format!(
            "'{name}' may only contain letters, digits and _ . @ + - (Linux interface name)"
        ));
    }
    None
}

impl StaticPeer {
    /// The endpoint as a socket address: a literal `IP:port` or `[IPv6]:port`, port not 0.
    /// `Ok(None)` when the peer has no endpoint. The error is a reason for humans.
    pub fn endpoint_addr(&self) -> Result<Option<SocketAddr>, String> {
        let Some(s) = self.endpoint.as_deref() else {
            return Ok(None);
        };
        let addr: SocketAddr = s.trim().parse().map_err(|_| {
            format!(
                "'{s}' is not IP:port (e.g. 192.0.2.1:51820 or [fd00::1]:51820); hostnames are \
                 not supported"
            )
        })?;
        if addr.port() == 0 {
            return Err(format!("'{s}': port 0 is not allowed"));
        }
        Ok(Some(addr))
    }
}

fn list(nets: &[IpNetwork]) -> String {
    let items: Vec<String> = nets.iter().map(|n| n.to_string()).collect();
    format!("[{}]", items.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ProxyBackend, StaticSource, TunnelConfig};
    use std::os::unix::fs::PermissionsExt;

    const EXAMPLE: &str = include_str!("../../examples/config.yaml");
    const K1: &str = "4ONiAEenjiGp0lgFD1UTkoqxnIHcISSKx9IX8357aW0=";
    const K4: &str = "O8IIdfYX+8NEjt8ZOjr9WrQ92wMPp7rtpHoxMwXIICg=";

    fn n(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    /// The example config (valid), to be broken one field at a time.
    fn example() -> Config {
        Config::parse(EXAMPLE, Some("a1")).expect("example config is valid")
    }

    fn errors(cfg: &Config) -> Vec<FieldError> {
        match cfg.validate() {
            Ok(()) => vec![],
            Err(ConfigError::Invalid(v)) => v,
            Err(e) => panic!("unexpected {e:?}"),
        }
    }

    /// Found by fuzzing (fuzz/regressions/config_parse): an address of `clusterIPs` was
    /// reported on `clusterIP`, a field the file did not have.
    #[test]
    fn static_service_addresses_are_named_by_the_field_written() {
        let text =
            include_str!("../../fuzz/regressions/config_parse/cluster_ips_error_names_clusterIP");
        let Err(ConfigError::Invalid(errs)) = Config::parse(text, None) else {
            panic!("must be invalid");
        };
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert!(
            fields.contains(&"remotes[0].static.services[0].clusterIPs[0]"),
            "{fields:?}"
        );
        assert!(
            !fields.iter().any(|f| f.ends_with(".clusterIP")),
            "{fields:?}"
        );
    }

    #[test]
    fn import_parses_its_three_forms_and_checks_the_selector() {
        use crate::config::Import;
        let with = |import: &str| {
            format!(
                "cluster: {{name: a, podCIDRs: [10.128.0.0/16]}}\nnode: {{name: a1}}\n\
                 remotes:\n- name: b\n  podCIDRs: [10.132.0.0/16]\n  kubeconfig: /k\n{import}"
            )
        };
        let parsed =
            |import: &str| Config::parse(&with(import), None).map(|c| c.remotes[0].import.clone());
        assert_eq!(parsed("").unwrap(), Import::Exported);
        assert_eq!(parsed("  import: all\n").unwrap(), Import::All);
        assert_eq!(parsed("  import: exported\n").unwrap(), Import::Exported);
        assert_eq!(
            parsed("  import: {selector: 'mirror.linkerd.io/exported=true,tier in (web, api)'}\n")
                .unwrap(),
            Import::Selector("mirror.linkerd.io/exported=true,tier in (web, api)".into())
        );
        let err = format!("{:?}", parsed("  import: some\n").unwrap_err());
        assert!(
            err.contains("remotes[0]: import: unknown value 'some'"),
            "{err}"
        );
        let err = format!("{:?}", parsed("  import: {selectr: a}\n").unwrap_err());
        assert!(err.contains("unknown key 'selectr'"), "{err}");
        for bad in [
            "''",
            "'a=b,'",
            "'=x'",
            "'a in (b'",
            "'/x=1'",
            "'a=b c'",
            "'a in ()'",
        ] {
            let Err(ConfigError::Invalid(errs)) =
                parsed(&format!("  import: {{selector: {bad}}}\n"))
            else {
                panic!("selector {bad} must be refused");
            };
            assert_eq!(
                errs[0].field, "remotes[0].import.selector",
                "{bad}: {errs:?}"
            );
        }
        // A static remote lists its own services: `import` there is a mistake.
        let mut cfg = example();
        let i = cfg
            .remotes
            .iter()
            .position(|r| r.static_source.is_some())
            .unwrap();
        cfg.remotes[i].import = Import::All;
        assert_error(
            &cfg,
            &format!("remotes[{i}].import"),
            "only meaningful with `kubeconfig`",
        );
    }

    /// Asserts that exactly one error names `field` and that its reason contains `needle`.
    #[track_caller]
    fn assert_error(cfg: &Config, field: &str, needle: &str) {
        let errs = errors(cfg);
        let hits: Vec<_> = errs.iter().filter(|e| e.field == field).collect();
        assert_eq!(hits.len(), 1, "want one error on {field}, got {errs:#?}");
        assert!(
            hits[0].reason.contains(needle),
            "{field}: {:?} lacks {needle:?}",
            hits[0].reason
        );
    }

    fn parse_err(text: &str) -> String {
        match Config::parse(text, Some("a1")) {
            Err(ConfigError::Parse(s)) => s,
            other => panic!("want a parse error, got {other:?}"),
        }
    }

    #[test]
    fn example_config_is_valid() {
        let cfg = example();
        assert_eq!(cfg.node_name(), "a1");
        assert_eq!(cfg.cluster.name, "east");
        assert_eq!(cfg.node.source_ip, Some("10.128.1.1".parse().unwrap()));
        // the example spells out every tunnel default
        assert_eq!(cfg.tunnel, TunnelConfig::default());
        assert_eq!(cfg.remotes.len(), 1);
        let peers = &cfg.remotes[0].static_source.as_ref().unwrap().peers;
        assert_eq!(peers.len(), 3);
        assert_eq!(
            peers[1].endpoint_addr().unwrap(),
            Some("[2001:db8::12]:51820".parse().unwrap())
        );
        assert_eq!(peers[2].endpoint_addr().unwrap(), None);
    }

    #[test]
    fn kube_example_config_is_valid() {
        let text = include_str!("../../examples/config-kube.yaml");
        let cfg = Config::parse(text, Some("a1")).unwrap();
        assert_eq!(cfg.node_name(), "a1");
        assert!(cfg.remotes.iter().all(|r| r.kubeconfig.is_some()));
        assert!(cfg.node.pod_cidrs.is_empty());
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let text = "cluster: {name: east, podCIDRs: [10.128.0.0/14]}\n\
                    node: {podCIDRs: [10.128.1.0/24]}\n";
        let cfg = Config::parse(text, Some("a1")).unwrap();
        assert_eq!(cfg.tunnel, TunnelConfig::default());
        assert_eq!(cfg.proxy.backend, ProxyBackend::None);
        assert!(cfg.remotes.is_empty());
        assert!(cfg.cluster.service_cidrs.is_empty());
    }

    #[test]
    fn node_name_from_env_unless_set() {
        let text = "cluster: {name: east, podCIDRs: [10.128.0.0/14]}\n\
                    node: {podCIDRs: [10.128.1.0/24]}\n";
        assert_eq!(Config::parse(text, Some("a7")).unwrap().node_name(), "a7");
        let named = text.replace("node: {", "node: {name: a2, ");
        assert_eq!(Config::parse(&named, Some("a7")).unwrap().node_name(), "a2");
        for env in [None, Some(""), Some("  ")] {
            let err = Config::parse(text, env).unwrap_err().to_string();
            assert_eq!(
                err,
                "node.name: missing; set it or the NODE_NAME environment variable"
            );
        }
    }

    #[test]
    fn unknown_key_is_a_parse_error_naming_it() {
        let text = EXAMPLE.replace("listenPort:", "listenPrt:");
        let err = parse_err(&text);
        assert!(err.contains("unknown field `listenPrt`"), "{err}");
        assert!(err.starts_with("tunnel: "), "{err}");
        let line = 1 + EXAMPLE
            .lines()
            .position(|l| l.contains("listenPort:"))
            .unwrap();
        assert!(err.contains(&format!("at line {line} ")), "{err}");
    }

    #[test]
    fn malformed_cidr_is_a_parse_error_naming_the_field() {
        let text = EXAMPLE.replace("[10.132.0.0/14]", "[10.300.0.0/14]");
        let err = parse_err(&text);
        assert!(err.contains("remotes[0].podCIDRs"), "{err}");
        assert!(err.contains("10.300.0.0/14"), "{err}");
        let text = EXAMPLE.replace("[10.132.2.0/24]", "[10.132.2.0/33]");
        let err = parse_err(&text);
        assert!(err.contains("remotes[0].static.peers[1].podCIDRs"), "{err}");
    }

    #[test]
    fn wrong_type_and_unknown_variant_are_parse_errors() {
        let err = parse_err(&EXAMPLE.replace("mtu: 1420", "mtu: 100000"));
        assert!(err.contains("tunnel.mtu"), "{err}");
        let err = parse_err(&EXAMPLE.replace("backend: none", "backend: iptables"));
        assert!(
            err.contains("proxy.backend") && err.contains("iptables"),
            "{err}"
        );
        let err = parse_err(&EXAMPLE.replace("sourceIP: 10.128.1.1", "sourceIP: a1"));
        assert!(err.contains("node.sourceIP"), "{err}");
    }

    #[test]
    fn mcs_cluster_set_cidrs_and_failover_order_are_checked() {
        let mut cfg = example();
        cfg.mcs.cluster_set_cidrs = vec![n("10.250.0.0/16"), n("10.251.0.0/16")];
        assert_error(&cfg, "mcs.clusterSetCIDRs[1]", "one CIDR per IP family");
        cfg.mcs.cluster_set_cidrs = vec![n("10.250.0.1/16")];
        assert_error(&cfg, "mcs.clusterSetCIDRs[0]", "host bits");
        cfg.mcs.cluster_set_cidrs = vec![n("10.250.0.0/31")];
        assert_error(&cfg, "mcs.clusterSetCIDRs[0]", "too small");
        // Overlapping a pod or service CIDR would route ClusterSetIPs away.
        cfg.mcs.cluster_set_cidrs = vec![cfg.cluster.pod_cidrs[0]];
        assert_error(
            &cfg,
            "mcs.clusterSetCIDRs[0]",
            "overlaps cluster.podCIDRs[0]",
        );
        cfg.mcs.cluster_set_cidrs = vec![n("10.250.0.0/16"), n("fd00:250::/64")];
        cfg.mcs
            .failover_order
            .insert("default".into(), vec!["nowhere".into()]);
        let errs = errors(&cfg);
        assert!(
            errs.iter()
                .any(|e| e.field == "mcs.failoverOrder.default"
                    && e.reason.contains("namespace/name")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.field == "mcs.failoverOrder.default[0]"
                    && e.reason.contains("neither this cluster nor a remote")),
            "{errs:?}"
        );
        cfg.mcs.failover_order.clear();
        assert!(errors(&cfg).is_empty(), "{:?}", errors(&cfg));
        // Parsed from YAML under its documented names.
        let text = "cluster: {name: east, podCIDRs: [10.128.0.0/14]}\nmcs:\n  clusterSetCIDRs: [10.250.0.0/16]\n  failoverOrder: {default/web: []}\n";
        let cfg = Config::parse(text, Some("a1")).unwrap();
        assert!(cfg.mcs.enabled());
        assert!(cfg.mcs.failover_order.contains_key("default/web"));
    }

    #[test]
    fn http_listen_and_ready_timeout_are_checked() {
        let mut cfg = example();
        cfg.http.listen = "0.0.0.0:0".parse().unwrap();
        assert_error(&cfg, "http.listen", "port 0");
        let mut cfg = example();
        cfg.http.listen = cfg.dns.listen;
        assert_error(&cfg, "http.listen", "is dns.listen too");
        let mut cfg = example();
        cfg.http.ready_timeout_seconds = 0;
        assert_error(&cfg, "http.readyTimeoutSeconds", "out of range");
        // Off: nothing to check.
        cfg.http.enabled = false;
        assert!(errors(&cfg).is_empty());
    }

    #[test]
    fn cluster_name_must_be_a_dns_label() {
        for (name, needle) in [
            ("", "must not be empty"),
            ("East", "not a DNS label"),
            ("east_1", "not a DNS label"),
            ("-east", "not a DNS label"),
            (&"a".repeat(64), "longer than 63"),
        ] {
            let mut cfg = example();
            cfg.cluster.name = name.to_string();
            assert_error(&cfg, "cluster.name", needle);
        }
        let mut cfg = example();
        cfg.cluster.name = "a".repeat(63);
        assert!(errors(&cfg).is_empty());
    }

    #[test]
    fn remote_name_must_be_a_dns_label() {
        let mut cfg = example();
        cfg.remotes[0].name = "West.1".into();
        assert_error(&cfg, "remotes[0].name", "not a DNS label");
    }

    #[test]
    fn dns_forwarders_and_serve_stale() {
        let cfg = example();
        assert!(cfg.dns.forwarders.is_empty() && cfg.dns.serve_stale);
        let text = format!(
            "{EXAMPLE}\ndns:\n  forwarders: [10.96.0.10, '10.96.0.11:5353', 'fd00::53', \
             '[fd00::54]:54']\n  serveStale: false\n"
        );
        let cfg = Config::parse(&text, Some("a1")).unwrap();
        assert_eq!(cfg.dns.forwarders.len(), 4);
        assert!(!cfg.dns.serve_stale);
        assert_eq!(
            crate::dns::forward::parse_forwarders(&cfg.dns.forwarders)[3],
            "[fd00::54]:54".parse().unwrap()
        );
        for (entry, needle) in [
            ("dns.google", "not an IP address or IP:port"),
            ("10.96.0.10:0", "port must not be 0"),
            ("127.0.0.1:10053", "own dns.listen"),
            ("0.0.0.0:10053", "own dns.listen"),
        ] {
            let mut cfg = example();
            cfg.dns.forwarders = vec!["10.96.0.10".into(), entry.into()];
            assert_error(&cfg, "dns.forwarders[1]", needle);
        }
        // another port on loopback is fine (e.g. a node-local cache)
        let mut cfg = example();
        cfg.dns.forwarders = vec!["127.0.0.53".into(), "127.0.0.1:53".into()];
        assert!(errors(&cfg).is_empty(), "{:?}", errors(&cfg));
    }

    #[test]
    fn pod_cidrs_required() {
        let mut cfg = example();
        cfg.cluster.pod_cidrs.clear();
        assert_error(&cfg, "cluster.podCIDRs", "at least one");
        let mut cfg = example();
        cfg.remotes[0].pod_cidrs.clear();
        assert_error(&cfg, "remotes[0].podCIDRs", "at least one");
        // node.podCIDRs is optional (it can come from our Node), but sourceIP needs it.
        let mut cfg = example();
        cfg.node.pod_cidrs.clear();
        cfg.node.source_ip = None;
        assert!(errors(&cfg).is_empty(), "{:?}", errors(&cfg));
        let mut cfg = example();
        cfg.remotes[0].static_source.as_mut().unwrap().peers[2]
            .pod_cidrs
            .clear();
        assert_error(&cfg, "remotes[0].static.peers[2].podCIDRs", "at least one");
    }

    #[test]
    fn host_bits_set() {
        let text = EXAMPLE.replace("podCIDRs: [10.128.0.0/14]", "podCIDRs: [10.128.0.1/14]");
        let err = Config::parse(&text, Some("a1")).unwrap_err().to_string();
        assert_eq!(
            err,
            "cluster.podCIDRs[0]: 10.128.0.1/14 has host bits set; did you mean 10.128.0.0/14?"
        );
        let mut cfg = example();
        cfg.remotes[0].service_cidrs.push(n("fd00:101::1/64"));
        assert_error(
            &cfg,
            "remotes[0].serviceCIDRs[1]",
            "host bits set; did you mean fd00:101::/64",
        );
    }

    #[test]
    fn remote_overlapping_local_cluster() {
        let mut cfg = example();
        cfg.remotes[0].pod_cidrs = vec![n("10.128.0.0/16")];
        let errs = errors(&cfg);
        assert!(errs.contains(&FieldError {
            field: "remotes[0].podCIDRs[0]".into(),
            reason: "10.128.0.0/16 overlaps cluster.podCIDRs[0] (10.128.0.0/14)".into(),
        }));
        let mut cfg = example();
        cfg.remotes[0].service_cidrs = vec![n("10.96.0.0/12")];
        assert_error(
            &cfg,
            "remotes[0].serviceCIDRs[0]",
            "overlaps cluster.serviceCIDRs[0]",
        );
    }

    #[test]
    fn remotes_overlapping_each_other() {
        let mut cfg = example();
        let mut north = cfg.remotes[0].clone();
        north.name = "north".into();
        north.pod_cidrs = vec![n("10.136.0.0/14")];
        north.service_cidrs = vec![n("10.101.128.0/17")];
        north.static_source = Some(StaticSource::default());
        cfg.remotes.push(north);
        assert_error(
            &cfg,
            "remotes[1].serviceCIDRs[0]",
            "10.101.128.0/17 overlaps remotes[0].serviceCIDRs[0] (10.101.0.0/16)",
        );
    }

    #[test]
    fn pod_and_service_cidrs_of_one_cluster_overlap() {
        let mut cfg = example();
        cfg.cluster.service_cidrs = vec![n("10.130.0.0/16")];
        assert_error(
            &cfg,
            "cluster.serviceCIDRs[0]",
            "overlaps cluster.podCIDRs[0]",
        );
        let mut cfg = example();
        cfg.remotes[0].service_cidrs = vec![n("10.133.0.0/16")];
        assert_error(
            &cfg,
            "remotes[0].serviceCIDRs[0]",
            "overlaps remotes[0].podCIDRs[0]",
        );
    }

    #[test]
    fn nested_entries_of_one_list_are_allowed() {
        let mut cfg = example();
        cfg.cluster.pod_cidrs.push(n("10.128.0.0/16"));
        assert!(errors(&cfg).is_empty(), "{:?}", errors(&cfg));
    }

    #[test]
    fn node_pod_cidr_outside_cluster() {
        let mut cfg = example();
        cfg.node.pod_cidrs = vec![n("10.132.1.0/24")];
        cfg.node.source_ip = None;
        assert_error(
            &cfg,
            "node.podCIDRs[0]",
            "10.132.1.0/24 is outside cluster.podCIDRs [10.128.0.0/14]",
        );
    }

    #[test]
    fn source_ip_outside_node_pod_cidrs() {
        let mut cfg = example();
        cfg.node.source_ip = Some("10.128.2.1".parse().unwrap());
        assert_error(&cfg, "node.sourceIP", "10.128.2.1 is outside node.podCIDRs");
    }

    #[test]
    fn tunnel_device_name() {
        for bad in [
            "",
            "sixteen-chars-xx",
            "a/b",
            "a b",
            "eth0:1",
            ".",
            "..",
            "a\"b",
        ] {
            let mut cfg = example();
            cfg.tunnel.device = bad.into();
            assert_error(&cfg, "tunnel.device", bad);
        }
        let mut cfg = example();
        cfg.tunnel.device = "fifteen-chars-x".into();
        assert!(errors(&cfg).is_empty());
    }

    #[test]
    fn tunnel_numbers() {
        for (mtu, ok) in [(1279, false), (1280, true), (9000, true), (9001, false)] {
            let mut cfg = example();
            cfg.tunnel.mtu = mtu;
            if ok {
                assert!(errors(&cfg).is_empty());
            } else {
                assert_error(&cfg, "tunnel.mtu", "1280..=9000");
            }
        }
        let mut cfg = example();
        cfg.tunnel.listen_port = 0;
        assert_error(&cfg, "tunnel.listenPort", "must not be 0");
        let mut cfg = example();
        cfg.tunnel.udp_buffer_bytes = 65535;
        assert_error(&cfg, "tunnel.udpBufferBytes", "at least 65536");
        for (queues, ok) in [(0, false), (1, true), (64, true), (65, false)] {
            let mut cfg = example();
            cfg.tunnel.queues = Some(queues);
            if ok {
                assert!(errors(&cfg).is_empty());
                assert_eq!(cfg.tunnel.queue_count(), usize::from(queues));
            } else {
                assert_error(&cfg, "tunnel.queues", "out of range 1..=64");
            }
        }
        let auto = example().tunnel.queue_count();
        assert!(
            (1..=crate::config::AUTO_QUEUES_MAX).contains(&auto),
            "{auto}"
        );
        let mut cfg = example();
        cfg.tunnel.route_protocol = 4;
        assert_error(&cfg, "tunnel.routeProtocol", "well-known");
        cfg.tunnel.route_protocol = 186;
        assert_error(&cfg, "tunnel.routeProtocol", "well-known");
    }

    #[test]
    fn proxy_settings() {
        for backend in [
            ProxyBackend::Ipvs,
            ProxyBackend::Nftables,
            ProxyBackend::None,
        ] {
            let mut cfg = example();
            cfg.proxy.backend = backend;
            assert!(errors(&cfg).is_empty(), "{:?}", errors(&cfg));
        }
        let mut cfg = example();
        cfg.proxy.scheduler = "fastest".into();
        assert_error(&cfg, "proxy.scheduler", "unknown IPVS scheduler 'fastest'");
        let mut cfg = example();
        cfg.proxy.device = cfg.tunnel.device.clone();
        assert_error(&cfg, "proxy.device", "must differ from tunnel.device");
        let mut cfg = example();
        cfg.proxy.peer_down_after_seconds = 1;
        assert_error(&cfg, "proxy.peerDownAfterSeconds", "at least 150");
    }

    #[test]
    fn remote_without_source() {
        let mut cfg = example();
        cfg.remotes[0].static_source = None;
        assert_error(
            &cfg,
            "remotes[0]",
            "no source; add `kubeconfig:` or `static:`",
        );
        cfg.remotes[0].kubeconfig = Some("/etc/sdn-tunnel/remotes/west".into());
        assert!(errors(&cfg).is_empty(), "{:?}", errors(&cfg));
        cfg.remotes[0].static_source = Some(Default::default());
        assert_error(&cfg, "remotes[0].kubeconfig", "not both");
        cfg.remotes[0].kubeconfig = None;
        cfg.remotes[0].context = Some("west".into());
        assert_error(
            &cfg,
            "remotes[0].context",
            "only meaningful with `kubeconfig`",
        );
    }

    #[test]
    fn endpoint_policy_parses() {
        for (v, ok) in [
            ("nodeInternalIP", true),
            ("nodeExternalIP", true),
            ("192.0.2.1", true),
            ("[2001:db8::1]:4500", true),
            ("nodeIP", false),
            ("example.com:51820", false),
        ] {
            let text = format!(
                "cluster: {{name: east, podCIDRs: [10.128.0.0/14]}}\nnode: {{name: a1}}\ntunnel: {{endpoint: '{v}'}}\n"
            );
            match Config::parse(&text, None) {
                Ok(c) => {
                    assert!(ok, "{v} accepted");
                    assert_eq!(c.tunnel.endpoint.to_string(), v);
                }
                Err(e) => {
                    assert!(!ok, "{v}: {e}");
                    assert!(e.to_string().contains("tunnel: endpoint '"), "{e}");
                }
            }
        }
    }

    #[test]
    fn remote_names_unique_and_not_local() {
        let mut cfg = example();
        cfg.remotes[0].name = "east".into();
        assert_error(&cfg, "remotes[0].name", "local cluster's name");
        let mut cfg = example();
        let mut again = cfg.remotes[0].clone();
        again.pod_cidrs = vec![n("10.136.0.0/14")];
        again.service_cidrs.clear();
        again.static_source = Some(StaticSource::default());
        cfg.remotes.push(again);
        assert_error(
            &cfg,
            "remotes[1].name",
            "duplicate remote name 'west' (also remotes[0].name)",
        );
    }

    #[test]
    fn peer_public_key_malformed() {
        let mut cfg = example();
        cfg.remotes[0].static_source.as_mut().unwrap().peers[2].public_key = "abc=".into();
        assert_error(&cfg, "remotes[0].static.peers[2].publicKey", "malformed");
    }

    #[test]
    fn peer_public_key_duplicate() {
        let mut cfg = example();
        // same key, different spelling (trailing newline)
        cfg.remotes[0].static_source.as_mut().unwrap().peers[2].public_key = format!("{K1}\n");
        assert_error(
            &cfg,
            "remotes[0].static.peers[2].publicKey",
            "duplicate publicKey (also remotes[0].static.peers[0].publicKey)",
        );
    }

    #[test]
    fn peer_endpoint() {
        for (ep, needle) in [
            ("192.0.2.1", "not IP:port"),
            ("west-b1.example:51820", "hostnames are not supported"),
            ("fd00::1:51820", "not IP:port"),
            ("192.0.2.1:0", "port 0"),
            ("[fd00::1]:0", "port 0"),
        ] {
            let mut cfg = example();
            cfg.remotes[0].static_source.as_mut().unwrap().peers[0].endpoint = Some(ep.into());
            assert_error(&cfg, "remotes[0].static.peers[0].endpoint", needle);
        }
    }

    #[test]
    fn peer_pod_cidr_outside_its_remote() {
        let mut cfg = example();
        cfg.remotes[0].static_source.as_mut().unwrap().peers[1].pod_cidrs =
            vec![n("10.132.2.0/24"), n("10.128.5.0/24")];
        assert_error(
            &cfg,
            "remotes[0].static.peers[1].podCIDRs[1]",
            "10.128.5.0/24 is outside remote west podCIDRs [10.132.0.0/14]",
        );
    }

    #[test]
    fn peers_of_one_remote_overlapping() {
        let mut cfg = example();
        let peers = &mut cfg.remotes[0].static_source.as_mut().unwrap().peers;
        peers[2].pod_cidrs = vec![n("10.132.0.0/16")];
        assert_error(
            &cfg,
            "remotes[0].static.peers[2].podCIDRs[0]",
            "overlaps remotes[0].static.peers[0].podCIDRs[0] (10.132.1.0/24)",
        );
    }

    #[test]
    fn all_errors_reported_one_per_line() {
        let mut cfg = example();
        cfg.tunnel.mtu = 100;
        cfg.tunnel.listen_port = 0;
        cfg.remotes[0].static_source.as_mut().unwrap().peers[0].public_key = "x".into();
        let text = cfg.validate().unwrap_err().to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("tunnel.mtu: "));
        assert!(lines[1].starts_with("tunnel.listenPort: "));
        assert!(lines[2].starts_with("remotes[0].static.peers[0].publicKey: malformed"));
    }

    /// Writes the example config (with `node.name` set and the key file in `dir`).
    fn write_config(dir: &Path, key_mode: Option<u32>) -> PathBuf {
        let key = dir.join("private.key");
        if let Some(mode) = key_mode {
            keys::write_private_key_file(&key, &keys::parse_key(K4).unwrap()).unwrap();
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        let text = EXAMPLE
            .replace("# name: a1", "name: a1")
            .replace("/var/lib/sdn-tunnel/private.key", key.to_str().unwrap());
        let path = dir.join("config.yaml");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn load_checks_the_private_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(dir.path(), Some(0o600));
        let cfg = Config::load(&path).unwrap();
        assert_eq!(cfg.node_name(), "a1");
        assert_eq!(
            cfg.load_private_key().unwrap(),
            keys::parse_key(K4).unwrap()
        );
    }

    #[test]
    fn load_refuses_group_readable_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(dir.path(), Some(0o640));
        let err = Config::load(&path).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("tunnel.privateKeyFile: "), "{text}");
        assert!(text.contains("chmod 600"), "{text}");
    }

    #[test]
    fn load_reports_missing_key_file_with_other_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(dir.path(), None);
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("mtu: 1420", "mtu: 1000");
        std::fs::write(&path, text).unwrap();
        let Err(ConfigError::Invalid(errs)) = Config::load(&path) else {
            panic!("want Invalid");
        };
        assert_eq!(errs.len(), 2, "{errs:#?}");
        assert_eq!(errs[0].field, "tunnel.mtu");
        assert_eq!(errs[1].field, "tunnel.privateKeyFile");
        assert!(errs[1].reason.contains("sdn-tunnel keygen"), "{errs:?}");
    }

    #[test]
    fn load_missing_config_file_is_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope.yaml");
        let err = Config::load(&path).unwrap_err();
        assert!(matches!(err, ConfigError::Io { .. }), "{err:?}");
        assert!(err.to_string().contains("nope.yaml"), "{err}");
    }

    #[test]
    fn load_private_key_error_names_the_field() {
        let mut cfg = example();
        cfg.tunnel.private_key_file = "/nonexistent/sdn-tunnel/private.key".into();
        let err = cfg.load_private_key().unwrap_err().to_string();
        assert!(err.starts_with("tunnel.privateKeyFile: "), "{err}");
    }
}
