//! A lab whose clusters have Kubernetes APIs: one in-process fake API server per cluster
//! (`fakekube`), listening on the cluster's first node's underlay address so every node can
//! reach it. Nodes are registered like kubelet would (InternalIP, spec.podCIDRs); agents get a
//! config with no static peers: they advertise themselves and watch the other clusters.

use crate::agent_config::{self, AgentConfig};
use crate::{netns, Lab, LabOptions};
use anyhow::{Context, Result};
use fakekube::{gen, FakeApi};
use serde_json::json;
use std::collections::HashMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub const API_PORT: u16 = 6443;

pub struct KubeLab {
    pub lab: Lab,
    pub apis: HashMap<String, FakeApi>,
    pub kubeconfigs: HashMap<String, PathBuf>,
    _rt: tokio::runtime::Runtime,
}

impl KubeLab {
    /// Builds the lab (agents not started) and one fake API per cluster.
    pub fn up(opts: LabOptions) -> Result<KubeLab> {
        let lab = Lab::up(LabOptions {
            start_agents: false,
            ..opts
        })?;
        let rt = tokio::runtime::Runtime::new()?;
        let mut apis = HashMap::new();
        let mut kubeconfigs = HashMap::new();
        for c in &lab.topology().clusters {
            let host = lab.node(&c.nodes[0]);
            let addr = format!("{}:{API_PORT}", host.underlay_v4);
            let listener = netns::in_netns(&host.ns, || TcpListener::bind(&addr))?
                .with_context(|| format!("bind the fake API of {} on {addr}", c.name))?;
            let api = rt.block_on(FakeApi::start_on(listener))?;
            for n in &c.nodes {
                let spec = lab.node(n);
                let ip = spec.underlay_v4.to_string();
                api.apply(gen::node(n, &ip, None, &[&spec.pod_cidr.to_string()]))
                    .map_err(|e| anyhow::anyhow!("register node {n}: {e}"))?;
            }
            let path = lab.dir().join(format!("{}.kubeconfig", c.name));
            api.write_kubeconfig(&path, &c.name)?;
            apis.insert(c.name.clone(), api);
            kubeconfigs.insert(c.name.clone(), path);
        }
        Ok(KubeLab {
            lab,
            apis,
            kubeconfigs,
            _rt: rt,
        })
    }

    /// The agent config of `node`: no static peers and no node.podCIDRs (both come from the
    /// APIs), the top-level sections of `extra` set (e.g. `{"proxy": {...}}`; `null`: none).
    pub fn config(&self, node: &str, extra: serde_json::Value) -> AgentConfig {
        let lab = &self.lab;
        let n = lab.node(node);
        let topo = lab.topology();
        let c = topo.cluster(&n.cluster).expect("node's cluster");
        let mut cfg = AgentConfig::new(
            json!({"name": c.name, "podCIDRs": [c.pod_cidr.to_string()],
                   "serviceCIDRs": [c.service_cidr.to_string()],
                   "kubeconfig": self.kubeconfigs[&c.name]}),
            json!({ "name": node }),
            json!({"device": n.device, "listenPort": n.listen_port,
                   "privateKeyFile": lab.private_key_file(node), "persistentKeepalive": 5}),
        )
        .set_all(extra);
        for rc in topo.clusters.iter().filter(|rc| rc.name != c.name) {
            cfg = cfg.add_remote(agent_config::kube_remote(
                &rc.name,
                &rc.pod_cidr.to_string(),
                &rc.service_cidr.to_string(),
                &self.kubeconfigs[&rc.name].to_string_lossy(),
            ));
        }
        cfg
    }

    /// Writes every agent's config (with `extra_for(node)`), starts them, waits for their
    /// devices and for pod connectivity across clusters.
    pub fn start_agents(
        &self,
        extra_for: impl Fn(&str) -> serde_json::Value,
        timeout: Duration,
    ) -> Result<()> {
        for n in self.lab.agent_nodes() {
            self.lab
                .write_agent_config(&n, &self.config(&n, extra_for(&n)))?;
            self.lab.start_agent(&n)?;
        }
        for n in self.lab.agent_nodes() {
            self.lab.wait_agent_ready(&n, timeout)?;
        }
        self.lab
            .wait_connected(timeout)
            .map_err(|e| anyhow::anyhow!("{e:#}\n{}", self.logs()))
    }

    /// `status --json` of `node`, or None while its agent doesn't answer (e.g. starting).
    pub fn try_status(&self, node: &str) -> Option<serde_json::Value> {
        let out = self.lab.status_output(node, true);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    pub fn status(&self, node: &str) -> serde_json::Value {
        let s = self.lab.status(node, true);
        serde_json::from_str(&s).unwrap_or_else(|e| panic!("status --json of {node}: {e}: {s}"))
    }

    pub fn logs(&self) -> String {
        self.lab
            .agent_nodes()
            .iter()
            .map(|n| format!("--- agent {n} ---\n{}", self.lab.agent_log(n)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn pod_ping(&self, from: &str, to: &str) -> bool {
        self.lab
            .ping(&self.lab.pod_ns(from, 0), self.lab.pod_ip(to, 0))
    }

    /// Polls `f` every 200 ms; panics with the agents' logs on timeout.
    pub fn wait(&self, what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while !f() {
            if Instant::now() > deadline {
                panic!(
                    "timed out ({timeout:?}) waiting for {what}\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The key a cluster's API currently holds for `node`.
    pub fn advertised_key(&self, node: &str) -> Option<String> {
        let cluster = &self.lab.node(node).cluster;
        let n = self.apis[cluster].get("Node", None, node)?;
        n["metadata"]["annotations"]["sdn-tunnel.io/public-key"]
            .as_str()
            .map(str::to_string)
    }

    /// The public key `at`'s agent uses for its peer `peer` (by node name).
    pub fn peer_key(&self, at: &str, peer: &str) -> Option<String> {
        let s = self.status(at);
        s["agent"]["peers"]
            .as_array()?
            .iter()
            .find_map(|p| (p["name"] == peer).then(|| p["publicKey"].as_str().unwrap().to_string()))
    }
}
