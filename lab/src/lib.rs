//! A reusable network-namespace lab for sdn-tunnel.
//!
//! [`Lab::up`] builds, with `ip` commands, an underlay namespace holding a bridge, one namespace
//! per node (veth into the underlay bridge, IPv4 192.168.77.0/24 + IPv6 fd00:77::/64), and per
//! node a bridge `cbr0` with the pod gateway plus pod namespaces behind it. It generates keys,
//! writes one agent config per node (static peers = every node of every other cluster) and runs
//! a real `sdn-tunnel agent` in each node namespace. Optionally one more cluster, "north", whose
//! single node runs Debian's wireguard-go (interop). Dropping the [`Lab`] tears everything down
//! (unless `keep`). See docs/lab.md for the picture and the addresses.
//!
//! Every lab instance has a random prefix (`sl` + 4 hex digits) used for namespace and device
//! names, so concurrent labs (parallel tests) never collide.

pub mod agent_config;
pub mod bench;
pub mod kube;
pub mod netns;
pub mod poll;
pub mod realkube;
pub mod stream;
pub mod topology;
pub mod traffic;
pub mod wggo;

pub use netns::{exec, exec_ok, in_netns, is_root, kill, process_cpu_seconds, spawn_in, wait_for};
pub use topology::{ClusterSpec, Ipv4Net, NodeSpec, Topology};
pub use traffic::{
    hello, http_get, metric_value, ping, serve_named_echo, tcp_transfer, udp_echo,
    udp_gso_transfer, Transfer,
};
pub use wggo::WgPeer;

pub use agent_config::AgentConfig;
use anyhow::{anyhow, bail, Context, Result};
use serde_json::json;
use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Env var naming the sdn-tunnel binary when [`LabOptions::bin`] is not set.
pub const BIN_ENV: &str = "SDN_TUNNEL_BIN";
/// Namespace / device prefix of labs with a generated prefix: `sl` + 4 hex digits.
pub const PREFIX_START: &str = "sl";
/// Where lab directories (keys, configs, logs) live: `<LAB_DIR_ROOT>/sdn-lab-<prefix>`.
pub const LAB_DIR_ROOT: &str = "/tmp";
/// The agent's default `http.listen` port (the lab's configs keep the default).
pub const AGENT_HTTP_PORT: u16 = 9477;
/// Our agent's control sockets, `<runDir>/sdn-tunnel/<device>.sock`, with runDir /var/run.
pub const SDN_RUN_DIR: &str = "/var/run/sdn-tunnel";

/// How to build a lab. `LabOptions::default()`: 2 clusters x 2 nodes x 1 pod, IPv4 endpoints,
/// agents started, no foreign node, binary from `$SDN_TUNNEL_BIN`.
#[derive(Debug, Clone)]
pub struct LabOptions {
    /// sdn-tunnel clusters: 1..=3 (east, west, south).
    pub clusters: usize,
    /// 1..=9 nodes per cluster.
    pub nodes_per_cluster: usize,
    /// Pod namespaces behind each node.
    pub pods_per_node: usize,
    /// Static peer endpoints use the underlay IPv6 addresses instead of IPv4.
    pub ipv6_endpoints: bool,
    /// Pods are dual-stack: each pod network also has its IPv6 twin
    /// ([`topology::v6_twin`]) in the pods, on the bridge and in the agents' configs.
    pub pods_ipv6: bool,
    /// Leave everything running when the Lab is dropped (tear down later with `sdn-lab down`).
    pub keep: bool,
    /// The sdn-tunnel binary (keygen, pubkey, agent, status). Default: `$SDN_TUNNEL_BIN`.
    /// Without one, keys come from `wg genkey` and agents cannot be started.
    pub bin: Option<PathBuf>,
    /// Add cluster "north" with one node n1 running Debian's wireguard-go.
    pub foreign_node: bool,
    /// The foreign node's wireguard-go instead of Debian's (e.g. a current build, see
    /// scripts/bench-refs.sh).
    pub foreign_program: Option<PathBuf>,
    /// Start an agent on every sdn-tunnel node during `up` (and wait for its device).
    pub start_agents: bool,
    /// Namespace/device prefix; default random `sl` + 4 hex digits.
    pub prefix: Option<String>,
    /// Tunnel MTU written into the configs (and used for wireguard-go).
    pub mtu: u16,
    pub persistent_keepalive: u16,
    /// Route each node's pod CIDR via its underlay address on the other nodes of the same
    /// cluster, like a flat CNI would.
    pub intra_cluster_routes: bool,
    /// Progress messages on stderr.
    pub verbose: bool,
    /// Give every sdn-tunnel cluster a static remote service `default/web` (ClusterIP = .10 of
    /// its service CIDR, port 80 -> 8080 on pod 0 of each node) in the other clusters' configs,
    /// proxied with the nftables backend.
    pub services: bool,
    /// Create each node's pod bridge `cbr0` with the gateway address. Off for the
    /// real-Kubernetes lab, where the CNI bridge plugin creates it (pods must then be 0).
    pub pod_bridge: bool,
    /// Run the agents from inside this root filesystem (the agent image unpacked,
    /// [`realkube::images::extract_rootfs`]): `chroot` with /proc, /sys, /dev, /run and /tmp
    /// bound in, so the image's own nft and libraries are what the agent uses.
    pub agent_rootfs: Option<PathBuf>,
}

impl Default for LabOptions {
    fn default() -> Self {
        LabOptions {
            clusters: 2,
            nodes_per_cluster: 2,
            pods_per_node: 1,
            ipv6_endpoints: false,
            pods_ipv6: false,
            keep: false,
            bin: std::env::var_os(BIN_ENV).map(PathBuf::from),
            foreign_node: false,
            foreign_program: None,
            start_agents: true,
            prefix: None,
            mtu: 1420,
            persistent_keepalive: 25,
            intra_cluster_routes: true,
            verbose: false,
            services: false,
            pod_bridge: true,
            agent_rootfs: None,
        }
    }
}

struct Keys {
    private_key_file: PathBuf,
    public_key: String,
}

/// A running lab. Dropping it tears everything down unless `keep` was set.
pub struct Lab {
    topo: Topology,
    dir: PathBuf,
    opts: LabOptions,
    keys: HashMap<String, Keys>,
    created_ns: Mutex<Vec<String>>,
    agents: Mutex<HashMap<String, Child>>,
    /// Other long-running processes we own (wireguard-go), by name.
    procs: Mutex<HashMap<String, Child>>,
}

impl Lab {
    /// Builds the lab; on error everything created so far is removed again (unless `keep`).
    pub fn up(opts: LabOptions) -> Result<Lab> {
        anyhow::ensure!(is_root(), "the lab needs root (network namespaces)");
        if opts.start_agents && opts.bin.is_none() {
            bail!(
                "LabOptions::bin (or ${BIN_ENV}) must name the sdn-tunnel binary to start agents"
            );
        }
        if let Some(bin) = &opts.bin {
            anyhow::ensure!(
                bin.exists(),
                "sdn-tunnel binary {} not found",
                bin.display()
            );
        }
        let existing = netns::list_netns();
        let prefix = match &opts.prefix {
            Some(p) => p.clone(),
            None => new_prefix()?,
        };
        anyhow::ensure!(
            !existing
                .iter()
                .any(|n| n.starts_with(&format!("{prefix}-"))),
            "namespaces with prefix {prefix} exist already (sdn-lab down {prefix})"
        );
        let topo = Topology::plan(
            &prefix,
            opts.clusters,
            opts.nodes_per_cluster,
            opts.pods_per_node,
            opts.foreign_node,
        )?;
        let dir = Path::new(LAB_DIR_ROOT).join(format!("sdn-lab-{prefix}"));
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
        let mut lab = Lab {
            topo,
            dir,
            opts,
            keys: HashMap::new(),
            created_ns: Mutex::new(Vec::new()),
            agents: Mutex::new(HashMap::new()),
            procs: Mutex::new(HashMap::new()),
        };
        lab.build()
            .with_context(|| format!("building lab {prefix}"))?;
        Ok(lab)
    }

    fn say(&self, msg: impl AsRef<str>) {
        if self.opts.verbose {
            eprintln!("[sdn-lab {}] {}", self.topo.prefix, msg.as_ref());
        }
    }

    fn add_ns(&self, ns: &str) -> Result<()> {
        netns::ip("", &["netns", "add", ns])?;
        self.created_ns.lock().unwrap().push(ns.to_string());
        netns::ip(ns, &["link", "set", "lo", "up"])?;
        Ok(())
    }

    fn build(&mut self) -> Result<()> {
        let topo = self.topo.clone();
        self.say(format!(
            "building {} clusters, {} nodes, {} pods in {}",
            topo.clusters.len(),
            topo.nodes.len(),
            topo.nodes.iter().map(|n| n.pods.len()).sum::<usize>(),
            self.dir.display()
        ));
        let u = topo.underlay_ns.as_str();
        self.add_ns(u)?;
        netns::ip(u, &["link", "add", "br0", "type", "bridge"])?;
        netns::ip(u, &["link", "set", "br0", "up"])?;
        for node in &topo.nodes {
            self.build_node(node)?;
        }
        if self.opts.intra_cluster_routes {
            for a in &topo.nodes {
                for b in topo
                    .nodes
                    .iter()
                    .filter(|b| b.cluster == a.cluster && b.name != a.name)
                {
                    let (dst, via) = (b.pod_cidr.to_string(), b.underlay_v4.to_string());
                    netns::ip(&a.ns, &["route", "add", &dst, "via", &via])?;
                }
            }
        }
        self.say("generating keys and agent configs");
        for node in &topo.nodes {
            let keys = self.make_keys(node)?;
            self.keys.insert(node.name.clone(), keys);
        }
        for node in topo.nodes.iter().filter(|n| !n.foreign) {
            let cfg = self.agent_config(&node.name);
            self.write_agent_config(&node.name, &cfg)?;
        }
        for node in topo.nodes.iter().filter(|n| n.foreign) {
            self.say(format!(
                "starting wireguard-go on foreign node {}",
                node.name
            ));
            self.start_foreign(node)?;
        }
        if self.opts.start_agents {
            let sdn: Vec<_> = topo.nodes.iter().filter(|n| !n.foreign).collect();
            for node in &sdn {
                self.start_agent(&node.name)?;
            }
            for node in &sdn {
                self.wait_agent_ready(&node.name, Duration::from_secs(10))?;
            }
            self.say("agents running");
        }
        Ok(())
    }

    fn build_node(&self, node: &NodeSpec) -> Result<()> {
        let (u, ns) = (self.topo.underlay_ns.as_str(), node.ns.as_str());
        self.add_ns(ns)?;
        netns::exec_ok(
            ns,
            &[
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
                "net.ipv6.conf.all.forwarding=1",
                "net.ipv6.conf.all.accept_dad=0",
                "net.ipv6.conf.default.accept_dad=0",
            ],
        )?;
        // Underlay: veth "<node>" on the underlay bridge <-> "eth0" in the node.
        netns::ip(
            u,
            &[
                "link", "add", &node.name, "mtu", "1500", "type", "veth", "peer", "name", "eth0",
                "netns", ns,
            ],
        )?;
        netns::ip(u, &["link", "set", &node.name, "master", "br0", "up"])?;
        let v4 = format!("{}/{}", node.underlay_v4, topology::UNDERLAY_V4_PREFIX);
        let v6 = format!("{}/{}", node.underlay_v6, topology::UNDERLAY_V6_PREFIX);
        netns::ip(ns, &["addr", "add", &v4, "dev", "eth0"])?;
        netns::ip(ns, &["addr", "add", &v6, "dev", "eth0", "nodad"])?;
        netns::ip(ns, &["link", "set", "eth0", "mtu", "1500", "up"])?;
        if !self.opts.pod_bridge {
            anyhow::ensure!(node.pods.is_empty(), "pods need the pod bridge");
            return Ok(());
        }
        // Pod bridge with the gateway address.
        let gw = format!("{}/{}", node.gateway, node.pod_cidr.prefix);
        netns::ip(ns, &["link", "add", "cbr0", "type", "bridge"])?;
        netns::ip(ns, &["addr", "add", &gw, "dev", "cbr0"])?;
        netns::ip(ns, &["link", "set", "cbr0", "up"])?;
        if self.opts.pods_ipv6 {
            let gw6 = format!("{}/64", topology::v6_twin(node.gateway));
            netns::ip(ns, &["addr", "add", &gw6, "dev", "cbr0", "nodad"])?;
        }
        for (i, (pod_ns, pod_ip)) in node.pod_ns.iter().zip(&node.pods).enumerate() {
            self.add_ns(pod_ns)?;
            let port = format!("veth-p{i}");
            netns::ip(
                ns,
                &[
                    "link", "add", &port, "mtu", "1500", "type", "veth", "peer", "name", "eth0",
                    "netns", pod_ns,
                ],
            )?;
            netns::ip(ns, &["link", "set", &port, "master", "cbr0", "up"])?;
            let addr = format!("{pod_ip}/{}", node.pod_cidr.prefix);
            netns::ip(pod_ns, &["addr", "add", &addr, "dev", "eth0"])?;
            netns::ip(pod_ns, &["link", "set", "eth0", "mtu", "1500", "up"])?;
            netns::ip(
                pod_ns,
                &["route", "add", "default", "via", &node.gateway.to_string()],
            )?;
            if self.opts.pods_ipv6 {
                let addr6 = format!("{}/64", topology::v6_twin(*pod_ip));
                netns::ip(pod_ns, &["addr", "add", &addr6, "dev", "eth0", "nodad"])?;
                let gw6 = topology::v6_twin(node.gateway).to_string();
                netns::ip(pod_ns, &["-6", "route", "add", "default", "via", &gw6])?;
            }
        }
        Ok(())
    }

    fn make_keys(&self, node: &NodeSpec) -> Result<Keys> {
        let use_wg = node.foreign || self.opts.bin.is_none();
        let (gen, pubk): (Vec<String>, Vec<String>) = if use_wg {
            (
                vec!["wg".into(), "genkey".into()],
                vec!["wg".into(), "pubkey".into()],
            )
        } else {
            let b = self.bin()?.to_string_lossy().into_owned();
            (vec![b.clone(), "keygen".into()], vec![b, "pubkey".into()])
        };
        let private = netns::exec_ok("", &gen)?.trim().to_string();
        anyhow::ensure!(!private.is_empty(), "`{}` printed nothing", gen.join(" "));
        let mut child = netns::command("", &pubk)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {}", pubk.join(" ")))?;
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(format!("{private}\n").as_bytes())?;
        let out = child.wait_with_output()?;
        anyhow::ensure!(
            out.status.success(),
            "`{}` failed: {}",
            pubk.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        let public_key = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let private_key_file = self.dir.join(format!("{}.key", node.name));
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&private_key_file)?;
        writeln!(f, "{private}")?;
        Ok(Keys {
            private_key_file,
            public_key,
        })
    }

    fn start_foreign(&self, node: &NodeSpec) -> Result<()> {
        let peers = self
            .topo
            .remote_nodes(node)
            .filter(|n| !n.foreign)
            .map(|n| WgPeer {
                public_key: self.public_key(&n.name),
                allowed_ips: vec![n.pod_cidr.to_string()],
                endpoint: Some(self.endpoint(&n.name)),
                persistent_keepalive: self.opts.persistent_keepalive,
            })
            .collect();
        let routes = self
            .topo
            .clusters
            .iter()
            .filter(|c| c.name != node.cluster)
            .flat_map(|c| [c.pod_cidr.to_string(), c.service_cidr.to_string()])
            .collect();
        let log = self.dir.join(format!("{}.log", node.name));
        let daemon = match &self.opts.foreign_program {
            Some(program) => wggo::Daemon::WireguardGo {
                program: program.clone(),
                log_level: "verbose",
            },
            None => wggo::Daemon::debian_wireguard_go(),
        };
        let child = wggo::start_daemon(
            &daemon,
            &wggo::WgGoConfig {
                ns: &node.ns,
                device: &node.device,
                private_key_file: &self.keys[&node.name].private_key_file,
                listen_port: node.listen_port,
                mtu: self.opts.mtu,
                peers,
                routes,
                route_src: Some(node.gateway),
                log_file: &log,
            },
        )?;
        self.procs
            .lock()
            .unwrap()
            .insert(format!("wireguard-go:{}", node.device), child);
        Ok(())
    }

    /// Starts wireguard-go in `cfg.ns` (see [`wggo::start`]) and owns the process: it is
    /// stopped by [`Lab::stop_process`] or at teardown. `name` identifies it.
    pub fn start_wireguard_go(&self, name: &str, cfg: &wggo::WgGoConfig<'_>) -> Result<u32> {
        let child = wggo::start(cfg)?;
        let pid = child.id();
        self.procs.lock().unwrap().insert(name.to_string(), child);
        Ok(pid)
    }

    /// SIGTERM (then SIGKILL after 3 s) a process started by [`Lab::start_wireguard_go`].
    pub fn stop_process(&self, name: &str) -> Option<ExitStatus> {
        let child = self.procs.lock().unwrap().remove(name);
        child.and_then(|mut c| netns::terminate(&mut c, Duration::from_secs(3)))
    }

    /// Pid of a process started by [`Lab::start_wireguard_go`] (the foreign node's is
    /// `wireguard-go:<device>`).
    pub fn process_pid(&self, name: &str) -> Option<u32> {
        self.procs.lock().unwrap().get(name).map(|c| c.id())
    }

    // ----- addressing -----

    /// The lab's namespace/device prefix (`sdn-lab down <prefix>` removes a kept lab).
    pub fn prefix(&self) -> &str {
        &self.topo.prefix
    }
    /// Directory with keys, configs and logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn options(&self) -> &LabOptions {
        &self.opts
    }
    pub fn topology(&self) -> &Topology {
        &self.topo
    }
    /// Panics on an unknown node name (a bug in the test).
    pub fn node(&self, name: &str) -> &NodeSpec {
        self.topo
            .node(name)
            .unwrap_or_else(|| panic!("no node {name:?} in lab {}", self.topo.prefix))
    }
    /// Names of the nodes running sdn-tunnel (all but the foreign one).
    pub fn agent_nodes(&self) -> Vec<String> {
        self.topo
            .nodes
            .iter()
            .filter(|n| !n.foreign)
            .map(|n| n.name.clone())
            .collect()
    }
    pub fn underlay_ns(&self) -> &str {
        &self.topo.underlay_ns
    }
    pub fn node_ns(&self, node: &str) -> String {
        self.node(node).ns.clone()
    }
    pub fn pod_ns(&self, node: &str, i: usize) -> String {
        self.node(node).pod_ns[i].clone()
    }
    /// Pod `i`'s IPv6 address (labs with `pods_ipv6`).
    pub fn pod_ip6(&self, node: &str, i: usize) -> Ipv6Addr {
        topology::v6_twin(self.pod_ip(node, i))
    }

    pub fn pod_ip(&self, node: &str, i: usize) -> Ipv4Addr {
        self.node(node).pods[i]
    }
    pub fn node_underlay_ip(&self, node: &str) -> Ipv4Addr {
        self.node(node).underlay_v4
    }
    pub fn node_underlay_ip6(&self, node: &str) -> Ipv6Addr {
        self.node(node).underlay_v6
    }
    /// The node's pod gateway (first address of its pod CIDR, on `cbr0`).
    pub fn gateway_ip(&self, node: &str) -> Ipv4Addr {
        self.node(node).gateway
    }
    /// Tunnel device name in the node's namespace (also the UAPI socket name).
    pub fn device(&self, node: &str) -> String {
        self.node(node).device.clone()
    }
    /// `ip:port` (or `[ip6]:port` with `ipv6_endpoints`) peers use to reach `node`.
    pub fn endpoint(&self, node: &str) -> String {
        let n = self.node(node);
        if self.opts.ipv6_endpoints {
            format!("[{}]:{}", n.underlay_v6, n.listen_port)
        } else {
            format!("{}:{}", n.underlay_v4, n.listen_port)
        }
    }
    /// The ClusterIP of the `default/web` service of `cluster` (with [`LabOptions::services`]).
    pub fn service_ip(&self, cluster: &str) -> Ipv4Addr {
        self.topo
            .cluster(cluster)
            .expect("cluster")
            .service_cidr
            .nth(10)
    }
    pub fn public_key(&self, node: &str) -> String {
        self.keys[node].public_key.clone()
    }
    pub fn private_key_file(&self, node: &str) -> PathBuf {
        self.keys[node].private_key_file.clone()
    }
    pub fn agent_config_path(&self, node: &str) -> PathBuf {
        self.dir.join(format!("{node}.yaml"))
    }
    pub fn agent_log_path(&self, node: &str) -> PathBuf {
        self.dir.join(format!("{node}.log"))
    }
    /// The sdn-tunnel binary the lab runs.
    pub fn bin(&self) -> Result<&Path> {
        self.opts
            .bin
            .as_deref()
            .ok_or_else(|| anyhow!("no sdn-tunnel binary (LabOptions::bin or ${BIN_ENV})"))
    }

    // ----- agent configs and lifecycle -----

    /// The default agent config of `node` (what `up` writes to [`Lab::agent_config_path`]):
    /// static peers (and, with `services`, one static service) for every other cluster.
    pub fn agent_config(&self, node: &str) -> AgentConfig {
        let n = self.node(node);
        let c = self.topo.cluster(&n.cluster).expect("node's cluster");
        let proxy = if self.opts.services {
            "nftables"
        } else {
            "none"
        };
        // A pod network and, with `pods_ipv6`, its IPv6 twin.
        let pods = |net: &topology::Ipv4Net| -> Vec<String> {
            let mut v = vec![net.to_string()];
            if self.opts.pods_ipv6 {
                v.push(topology::v6_twin_net(net));
            }
            v
        };
        let mut cfg = AgentConfig::new(
            json!({"name": c.name, "podCIDRs": pods(&c.pod_cidr),
                   "serviceCIDRs": [c.service_cidr.to_string()]}),
            json!({"name": n.name, "podCIDRs": pods(&n.pod_cidr)}),
            json!({
                "device": n.device,
                "listenPort": n.listen_port,
                "mtu": self.opts.mtu,
                "privateKeyFile": self.keys[node].private_key_file,
                "persistentKeepalive": self.opts.persistent_keepalive,
                "runDir": "/var/run",
            }),
        )
        .with_comment(format!(
            "sdn-lab {}: node {} of cluster {}",
            self.topo.prefix, n.name, c.name
        ))
        .set("proxy", json!({ "backend": proxy }));
        for rc in self.topo.clusters.iter().filter(|rc| rc.name != c.name) {
            let peers: Vec<_> = rc
                .nodes
                .iter()
                .map(|p| {
                    json!({
                        "name": p,
                        "publicKey": self.keys[p].public_key,
                        "endpoint": self.endpoint(p),
                        "podCIDRs": pods(&self.node(p).pod_cidr),
                    })
                })
                .collect();
            let mut source = json!({ "peers": peers });
            if self.opts.services && !rc.foreign {
                let eps: Vec<_> = rc
                    .nodes
                    .iter()
                    .map(|p| {
                        json!({"ip": self.pod_ip(p, 0).to_string(), "nodeName": p,
                               "ports": {"http": 8080}})
                    })
                    .collect();
                source["services"] = json!([{
                    "namespace": "default",
                    "name": "web",
                    "clusterIP": self.service_ip(&rc.name).to_string(),
                    "ports": [{"name": "http", "port": 80}],
                    "endpoints": eps,
                }]);
            }
            cfg = cfg.add_remote(json!({
                "name": rc.name,
                "podCIDRs": pods(&rc.pod_cidr),
                "serviceCIDRs": [rc.service_cidr.to_string()],
                "static": source,
            }));
        }
        cfg
    }

    /// Replaces `node`'s config file (takes effect at the next agent start).
    pub fn write_agent_config(&self, node: &str, cfg: &AgentConfig) -> Result<()> {
        let path = self.agent_config_path(node);
        fs::write(&path, cfg.render()).with_context(|| format!("writing {}", path.display()))
    }

    /// Starts `sdn-tunnel agent --config <file>` in the node's namespace, output appended to
    /// [`Lab::agent_log_path`]. Does not wait; see [`Lab::wait_agent_ready`].
    pub fn start_agent(&self, node: &str) -> Result<()> {
        let n = self.node(node);
        anyhow::ensure!(!n.foreign, "{node} runs wireguard-go, not sdn-tunnel");
        let mut agents = self.agents.lock().unwrap();
        if let Some(c) = agents.get_mut(node) {
            if c.try_wait()?.is_none() {
                bail!("agent on {node} is running already (pid {})", c.id());
            }
        }
        let log_path = self.agent_log_path(node);
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        writeln!(log, "--- sdn-lab: starting agent on {node} ---")?;
        let bin = self.bin()?.to_string_lossy().into_owned();
        let cfg = self.agent_config_path(node).to_string_lossy().into_owned();
        let argv: Vec<String> = match &self.opts.agent_rootfs {
            None => vec![bin, "agent".into(), "--config".into(), cfg],
            Some(root) => {
                // A mount namespace of its own (ip netns exec made one) with the host's
                // /proc, /sys, /dev, /run and /tmp (configs, keys) inside the image's root.
                let r = root.display();
                let script = format!(
                    "set -e; for d in proc sys dev run tmp; do mount --rbind /$d {r}/$d; done; \
                     exec chroot {r} /usr/local/bin/sdn-tunnel agent --config {cfg}"
                );
                vec![
                    "unshare".into(),
                    "--mount".into(),
                    "--propagation".into(),
                    "private".into(),
                    "--".into(),
                    "/bin/sh".into(),
                    "-c".into(),
                    script,
                ]
            }
        };
        let mut cmd = netns::command(&n.ns, &argv);
        // Plain log files: no ANSI colours (tracing-subscriber honours NO_COLOR).
        cmd.env("RUST_BACKTRACE", "1")
            .env("NO_COLOR", "1")
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log));
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting agent on {node}"))?;
        self.say(format!("agent on {node}: pid {}", child.id()));
        agents.insert(node.to_string(), child);
        Ok(())
    }

    /// Sends `signal` to the agent on `node` and waits up to 5 s for it to exit (SIGKILL and
    /// an error if it does not). Returns its exit status, or None if no agent was running.
    pub fn stop_agent(&self, node: &str, signal: i32) -> Result<Option<ExitStatus>> {
        let Some(mut child) = self.agents.lock().unwrap().remove(node) else {
            return Ok(None);
        };
        if let Some(st) = child.try_wait()? {
            return Ok(Some(st));
        }
        kill(child.id(), signal);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Some(st) = child.try_wait()? {
                return Ok(Some(st));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        bail!("agent on {node} did not exit within 5 s of signal {signal}; killed it")
    }

    /// SIGTERM the agent (if running) and start it again.
    pub fn restart_agent(&self, node: &str) -> Result<()> {
        self.stop_agent(node, libc::SIGTERM)?;
        self.start_agent(node)
    }

    pub fn agent_pid(&self, node: &str) -> Option<u32> {
        self.agents.lock().unwrap().get(node).map(|c| c.id())
    }

    pub fn agent_running(&self, node: &str) -> bool {
        let mut agents = self.agents.lock().unwrap();
        matches!(agents.get_mut(node).map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Waits until the agent's tunnel device exists in the node namespace; fails early (with
    /// the log) if the agent exits.
    pub fn wait_agent_ready(&self, node: &str, timeout: Duration) -> Result<()> {
        let (ns, dev) = (self.node_ns(node), self.device(node));
        let ok = wait_for(
            || {
                !self.agent_running(node)
                    || exec(
                        "",
                        &["ip", "-n", ns.as_str(), "link", "show", "dev", dev.as_str()],
                    )
                    .status
                    .success()
            },
            timeout,
        );
        if !self.agent_running(node) {
            bail!(
                "agent on {node} exited; log {}:\n{}",
                self.agent_log_path(node).display(),
                tail(&self.agent_log(node), 40)
            );
        }
        if !ok {
            bail!(
                "agent on {node}: device {dev} not up within {timeout:?}; log:\n{}",
                tail(&self.agent_log(node), 40)
            );
        }
        Ok(())
    }

    /// Everything the agent on `node` wrote so far (all starts).
    pub fn agent_log(&self, node: &str) -> String {
        fs::read_to_string(self.agent_log_path(node)).unwrap_or_default()
    }

    /// `sdn-tunnel status --config <file> [--json]` in the node namespace; stdout on success,
    /// otherwise "error: <status>: <stderr>".
    pub fn status(&self, node: &str, json: bool) -> String {
        let out = self.status_output(node, json);
        if out.status.success() {
            String::from_utf8_lossy(&out.stdout).into_owned()
        } else {
            format!(
                "error: {}: {}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout)
            )
        }
    }

    /// `GET path` on the agent of `node`: its HTTP endpoint (`/metrics`, `/healthz`,
    /// `/readyz`) on 127.0.0.1:[`AGENT_HTTP_PORT`] in the node's namespace.
    pub fn agent_http(&self, node: &str, path: &str) -> Result<(u16, String)> {
        let addr = SocketAddr::from(([127, 0, 0, 1], AGENT_HTTP_PORT));
        traffic::http_get(&self.node_ns(node), addr, path)
    }

    /// The raw output of `sdn-tunnel status`.
    /// `sdn-tunnel cleanup` for `node` (its device, routes, nft tables and sockets): a stopped
    /// agent leaves them in place on purpose (fail closed), so whatever uses the node next
    /// without our agent (the benchmark's other modes) needs this first.
    pub fn cleanup_agent(&self, node: &str) -> Result<()> {
        let bin = self.bin()?.to_string_lossy().into_owned();
        let cfg = self.agent_config_path(node).to_string_lossy().into_owned();
        netns::exec_ok(&self.node_ns(node), &[&bin, "cleanup", "--config", &cfg])?;
        Ok(())
    }

    pub fn status_output(&self, node: &str, json: bool) -> Output {
        let bin = match self.bin() {
            Ok(b) => b.to_string_lossy().into_owned(),
            Err(e) => {
                return Output {
                    status: std::os::unix::process::ExitStatusExt::from_raw(127 << 8),
                    stdout: Vec::new(),
                    stderr: e.to_string().into_bytes(),
                }
            }
        };
        let cfg = self.agent_config_path(node).to_string_lossy().into_owned();
        let mut args = vec![bin, "status".into(), "--config".into(), cfg];
        if json {
            args.push("--json".into());
        }
        exec(&self.node_ns(node), &args)
    }

    /// `wg show <device>` (the standard tool, over the UAPI socket) for `node`.
    pub fn wg_show(&self, node: &str) -> Output {
        let dev = self.device(node);
        exec(&self.node_ns(node), &["wg", "show", dev.as_str()])
    }

    // ----- commands and traffic -----

    pub fn exec(&self, ns: &str, args: &[&str]) -> Output {
        exec(ns, args)
    }
    pub fn exec_ok(&self, ns: &str, args: &[&str]) -> Result<String> {
        exec_ok(ns, args)
    }
    pub fn spawn_in(&self, ns: &str, args: &[&str]) -> Result<Child> {
        spawn_in(ns, args)
    }
    /// One ping from namespace `ns` to `ip` (1 s timeout).
    pub fn ping(&self, ns: &str, ip: impl std::fmt::Display) -> bool {
        ping(ns, ip)
    }

    /// Waits until pod 0 of every node pings pod 0 of every node of every other cluster (both
    /// directions), i.e. all tunnels carry traffic. The error names the pairs that failed.
    pub fn wait_connected(&self, timeout: Duration) -> Result<()> {
        let pairs: Vec<(String, String)> = self
            .topo
            .cross_cluster_pairs()
            .into_iter()
            .filter(|(a, b)| !a.pods.is_empty() && !b.pods.is_empty())
            .flat_map(|(a, b)| {
                [
                    (a.name.clone(), b.name.clone()),
                    (b.name.clone(), a.name.clone()),
                ]
            })
            .collect();
        let mut pending = pairs;
        let deadline = Instant::now() + timeout;
        loop {
            pending.retain(|(a, b)| !self.ping(&self.pod_ns(a, 0), self.pod_ip(b, 0)));
            if pending.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let list: Vec<_> = pending.iter().map(|(a, b)| format!("{a}->{b}")).collect();
                bail!(
                    "no pod connectivity within {timeout:?} for {}",
                    list.join(", ")
                );
            }
        }
    }

    /// A human-readable summary of the lab: namespaces, addresses, devices.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "lab {} (files in {})\nunderlay namespace {} (bridge br0): 192.168.77.0/24, fd00:77::/64\n",
            self.topo.prefix,
            self.dir.display(),
            self.topo.underlay_ns
        );
        for c in &self.topo.clusters {
            s += &format!(
                "cluster {:<6} pods {:<14} services {:<14}{}\n",
                c.name,
                c.pod_cidr.to_string(),
                c.service_cidr.to_string(),
                if c.foreign { " (wireguard-go)" } else { "" }
            );
            for name in &c.nodes {
                let n = self.node(name);
                s += &format!(
                    "  node {:<3} netns {:<10} underlay {:<14} {:<15} device {:<11} pods {}: {}\n",
                    n.name,
                    n.ns,
                    n.underlay_v4.to_string(),
                    n.underlay_v6.to_string(),
                    n.device,
                    n.pod_cidr,
                    n.pod_ns
                        .iter()
                        .zip(&n.pods)
                        .map(|(ns, ip)| format!("{ip} ({ns})"))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
        s
    }

    /// Tears the lab down now (same as dropping it, but also when `keep` was set).
    pub fn down(mut self) {
        self.opts.keep = false;
    }

    fn teardown(&mut self) {
        let mut children: Vec<Child> = self
            .agents
            .lock()
            .unwrap()
            .drain()
            .map(|(_, c)| c)
            .collect();
        children.extend(self.procs.lock().unwrap().drain().map(|(_, c)| c));
        stop_all(&mut children, Duration::from_secs(3));
        let namespaces: Vec<String> = self.created_ns.lock().unwrap().drain(..).collect();
        for ns in namespaces.iter().rev() {
            for pid in netns::netns_pids(ns) {
                kill(pid, libc::SIGKILL);
            }
            let _ = netns::ip("", &["netns", "del", ns]);
        }
        remove_sockets(&self.topo.prefix);
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.opts.keep {
            return;
        }
        self.teardown();
    }
}

fn tail(s: &str, lines: usize) -> String {
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

/// SIGTERM all, wait up to `grace` for all, SIGKILL the rest.
fn stop_all(children: &mut [Child], grace: Duration) {
    for c in children.iter_mut() {
        if let Ok(None) = c.try_wait() {
            kill(c.id(), libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline
        && children
            .iter_mut()
            .any(|c| matches!(c.try_wait(), Ok(None)))
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    for c in children.iter_mut() {
        if let Ok(None) = c.try_wait() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Removes UAPI/control sockets named `<prefix>-*.sock` that a killed process left behind.
fn remove_sockets(prefix: &str) {
    for dir in [wggo::WG_RUN_DIR, SDN_RUN_DIR] {
        if let Ok(rd) = fs::read_dir(dir) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with(&format!("{prefix}-")) && name.ends_with(".sock") {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
    }
}

/// A fresh random lab prefix (`sl` + 4 hex digits) not used by any namespace or lab directory.
pub fn new_prefix() -> Result<String> {
    let existing = netns::list_netns();
    loop {
        let p = format!("{PREFIX_START}{}", netns::random_hex(4)?);
        let dir = Path::new(LAB_DIR_ROOT).join(format!("sdn-lab-{p}"));
        if !existing.iter().any(|n| n.starts_with(&format!("{p}-"))) && !dir.exists() {
            return Ok(p);
        }
    }
}

/// True for names of generated lab prefixes: `sl` + 4 lowercase hex digits.
pub fn is_lab_prefix(p: &str) -> bool {
    p.len() == 6
        && p.starts_with(PREFIX_START)
        && p[2..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Tears down a lab left running (`keep`) or after a crash, by prefix: SIGTERM every process
/// in its namespaces (SIGKILL after 3 s), deletes the namespaces, stale sockets and its
/// directory. Returns the namespaces removed.
pub fn down(prefix: &str) -> Result<Vec<String>> {
    anyhow::ensure!(
        !prefix.is_empty() && prefix.bytes().all(|b| b.is_ascii_alphanumeric()),
        "bad lab prefix {prefix:?}"
    );
    let ours: Vec<String> = netns::list_netns()
        .into_iter()
        .filter(|n| n.starts_with(&format!("{prefix}-")))
        .collect();
    let pids: Vec<u32> = ours.iter().flat_map(|ns| netns::netns_pids(ns)).collect();
    for &pid in &pids {
        kill(pid, libc::SIGTERM);
    }

    let alive = |pid: u32| Path::new(&format!("/proc/{pid}")).exists();
    wait_for(|| pids.iter().all(|&p| !alive(p)), Duration::from_secs(3));
    for &pid in pids.iter().filter(|&&p| alive(p)) {
        kill(pid, libc::SIGKILL);
    }
    // A real-Kubernetes lab (realkube): its kubelets were among those pids; its pods'
    // processes live in network namespaces of their own, but all in the lab's cgroups.
    realkube::node::remove_cgroups(prefix);
    // Pods before nodes before the underlay: longest names first.
    let mut sorted = ours.clone();
    sorted.sort_by_key(|n| std::cmp::Reverse(n.len()));
    for ns in &sorted {
        for pid in netns::netns_pids(ns) {
            kill(pid, libc::SIGKILL);
        }
        netns::ip("", &["netns", "del", ns.as_str()])?;
    }
    remove_sockets(prefix);
    let dir = Path::new(LAB_DIR_ROOT).join(format!("sdn-lab-{prefix}"));
    if dir.exists() {
        fs::remove_dir_all(&dir)?;
    }
    Ok(ours)
}

/// Prefixes of all labs (generated prefixes only) that have namespaces or a directory.
pub fn list_labs() -> Vec<String> {
    let mut v: Vec<String> = netns::list_netns()
        .iter()
        .filter_map(|n| n.split_once('-').map(|(p, _)| p.to_string()))
        .filter(|p| is_lab_prefix(p))
        .collect();
    if let Ok(rd) = fs::read_dir(LAB_DIR_ROOT) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(p) = name.strip_prefix("sdn-lab-") {
                if is_lab_prefix(p) {
                    v.push(p.to_string());
                }
            }
        }
    }
    v.sort();
    v.dedup();
    v
}

/// [`down`] for every lab found by [`list_labs`].
pub fn down_all() -> Result<Vec<String>> {
    let labs = list_labs();
    for p in &labs {
        down(p)?;
    }
    Ok(labs)
}

/// Pod IP as `IpAddr` (convenience for [`tcp_transfer`] / [`udp_echo`]).
pub fn v4(ip: Ipv4Addr) -> IpAddr {
    IpAddr::V4(ip)
}
