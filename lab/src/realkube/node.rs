//! One node of a real lab cluster: containerd, the kubelet and kube-proxy, run in the node's
//! network namespace and in a mount namespace of the node's own.
//!
//! All nodes share this machine's filesystem, but a real node has its own: its hostPaths
//! (/var/lib/sdn-tunnel holds the node's private key; /run/wireguard and /run/sdn-tunnel its
//! sockets), containerd's state, the kubelet's pods and logs. So the node's mount namespace
//! bind-mounts a directory of the lab over each of those paths (kind gets the same from one
//! container per node). The kubelet also sets a few machine-wide sysctls (vm.overcommit_memory,
//! kernel.panic, ...); the node namespace mounts files holding the values it wants over them,
//! so the kubelet finds them set and this machine's own settings are left alone.

use anyhow::{bail, Context, Result};
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use super::bins::KubeBins;
use super::process::{log_tail, run, spawn_logged, Enter};
use super::util::{path_str, write};
use crate::topology::{ClusterSpec, Ipv4Net, NodeSpec};

/// Paths bind-mounted per node (the node's own copy lives under `<node dir>/fs/<path>`).
pub const NODE_PATHS: [&str; 11] = [
    "/var/lib/containerd",
    "/run/containerd",
    "/var/lib/kubelet",
    "/var/log/pods",
    "/var/log/containers",
    "/var/lib/cni",
    "/etc/cni/net.d",
    "/run/netns",
    "/var/lib/sdn-tunnel",
    "/run/sdn-tunnel",
    "/run/wireguard",
];

/// Machine-wide sysctls the kubelet sets when they differ (pkg/kubelet/cm, setupKernelTunables).
const KUBELET_SYSCTLS: [(&str, &str); 6] = [
    ("vm/overcommit_memory", "1"),
    ("vm/panic_on_oom", "0"),
    ("kernel/panic", "10"),
    ("kernel/panic_on_oops", "1"),
    ("kernel/keys/root_maxkeys", "1000000"),
    ("kernel/keys/root_maxbytes", "25000000"),
];

/// cgroup v1 hierarchies the kubelet's pods are placed in (under [`cgroup_root`]).
const CGROUP_CONTROLLERS: [&str; 9] = [
    "cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids", "systemd",
];

/// The kubelet's cgroupRoot of `node` of lab `prefix`: every lab node's pods live below
/// /sdnlab/<prefix>-<node> in each hierarchy, so nodes never share a cgroup.
pub fn cgroup_root(prefix: &str, node: &str) -> String {
    format!("/sdnlab/{prefix}-{node}")
}

pub struct NodeRuntime {
    pub name: String,
    pub ns: String,
    pub dir: PathBuf,
    pub underlay: Ipv4Addr,
    pub cgroup_root: String,
    pub containerd: Child,
    pub kubelet: Option<Child>,
    pub kube_proxy: Option<Child>,
}

impl NodeRuntime {
    /// Where node path `p` (one of [`NODE_PATHS`]) lives on this machine.
    pub fn host_path(&self, p: &str) -> PathBuf {
        host_path(&self.dir, p)
    }

    /// Enter this node: its network and mount namespaces (those of its containerd).
    pub fn enter(&self) -> Enter<'static> {
        Enter::NetMount(self.containerd.id())
    }

    /// Runs `args` on the node (its namespaces); stdout.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        let a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        run(&self.enter(), &a)
    }

    pub fn log(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.log"))
    }

    /// Prepares the node's directories, cgroups and containerd config, and starts containerd
    /// in the node's namespaces; waits for its socket.
    pub fn start(
        bins: &KubeBins,
        prefix: &str,
        node: &NodeSpec,
        dir: &Path,
    ) -> Result<NodeRuntime> {
        fs::create_dir_all(dir)?;
        for p in NODE_PATHS {
            fs::create_dir_all(host_path(dir, p))?;
            // The mount point on this machine (an empty directory).
            fs::create_dir_all(p).with_context(|| format!("creating mount point {p}"))?;
        }
        let cgroup_root = cgroup_root(prefix, &node.name);
        make_cgroups(&cgroup_root)?;
        let sysctl_dir = dir.join("sysctl");
        let mut sysctl_mounts = String::new();
        for (name, value) in KUBELET_SYSCTLS {
            let f = sysctl_dir.join(name.replace('/', "."));
            write(&f, &format!("{value}\n"), 0o644)?;
            sysctl_mounts += &format!("mount --bind {} /proc/sys/{name}\n", path_str(&f));
        }
        let mut binds = String::new();
        for p in NODE_PATHS {
            binds += &format!("mount --bind {} {p}\n", path_str(&host_path(dir, p)));
        }
        fs::create_dir_all("/opt/cni/bin")?;
        let script = format!(
            "#!/bin/sh\n\
             # Node {node} of lab {prefix}: runs in the node's network namespace and a new mount\n\
             # namespace (see lab/src/realkube/node.rs), then becomes containerd.\n\
             set -eu\n\
             mount --make-rshared /\n\
             {binds}\
             mount --bind {cni} /opt/cni/bin\n\
             {sysctl_mounts}\
             exec {containerd} --config {config}\n",
            node = node.name,
            cni = path_str(&bins.cni_dir()),
            containerd = bins.path("containerd"),
            config = path_str(&dir.join("containerd.toml")),
        );
        write(&dir.join("node.sh"), &script, 0o755)?;
        write(&dir.join("containerd.toml"), CONTAINERD_CONFIG, 0o644)?;
        let log = dir.join("containerd.log");
        let args: Vec<String> = vec![
            "unshare".into(),
            "--mount".into(),
            "--propagation".into(),
            "slave".into(),
            "--".into(),
            "/bin/sh".into(),
            path_str(&dir.join("node.sh")),
        ];
        let path = format!(
            "{}:{}",
            path_str(&bins.dir),
            std::env::var("PATH").unwrap_or_default()
        );
        let containerd = spawn_logged(&Enter::Net(&node.ns), &args, &log, &[("PATH", path)])?;
        let mut rt = NodeRuntime {
            name: node.name.clone(),
            ns: node.ns.clone(),
            dir: dir.to_path_buf(),
            underlay: node.underlay_v4,
            cgroup_root,
            containerd,
            kubelet: None,
            kube_proxy: None,
        };
        let sock = rt.host_path("/run/containerd").join("containerd.sock");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !sock.exists() {
            if let Some(st) = rt.containerd.try_wait()? {
                bail!(
                    "containerd on {} exited ({st}):\n{}",
                    node.name,
                    log_tail(&log, 30)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "containerd on {} did not create its socket within 60 s:\n{}",
                    node.name,
                    log_tail(&log, 30)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(rt)
    }

    /// `ctr images import` of each docker-archive into the CRI namespace (k8s.io).
    pub fn import_images(&self, bins: &KubeBins, tars: &[PathBuf]) -> Result<()> {
        for t in tars {
            let sock = path_str(&self.host_path("/run/containerd").join("containerd.sock"));
            crate::netns::exec_ok(
                "",
                &[
                    bins.path("ctr").as_str(),
                    "--address",
                    &sock,
                    "--namespace",
                    "k8s.io",
                    "images",
                    "import",
                    "--no-unpack=false",
                    &path_str(t),
                ],
            )
            .with_context(|| format!("importing {} on {}", t.display(), self.name))?;
        }
        Ok(())
    }

    /// Writes the kubelet's config and starts it (it registers with, and adopts, the Node the lab
    /// created with the planned pod CIDR).
    pub fn start_kubelet(&mut self, bins: &KubeBins, kubeconfig: &Path, ca: &Path) -> Result<()> {
        let resolv = self.dir.join("resolv.conf");
        // No cluster DNS in the lab: pods get this (nothing answers; the tests address the
        // agent's DNS Service by IP).
        write(&resolv, "nameserver 127.0.0.1\noptions ndots:1\n", 0o644)?;
        let cfg = format!(
            "apiVersion: kubelet.config.k8s.io/v1beta1\n\
             kind: KubeletConfiguration\n\
             # This machine has cgroup v1 (see docs/kube-lab.md); v1.35+ needs this to start.\n\
             failCgroupV1: false\n\
             cgroupDriver: cgroupfs\n\
             cgroupRoot: {cgroup_root}\n\
             containerRuntimeEndpoint: unix:///run/containerd/containerd.sock\n\
             authentication:\n  anonymous: {{enabled: false}}\n  webhook: {{enabled: true}}\n  \
             x509: {{clientCAFile: {ca}}}\n\
             authorization: {{mode: Webhook}}\n\
             clusterDomain: cluster.local\n\
             resolvConf: {resolv}\n\
             failSwapOn: false\n\
             healthzBindAddress: 127.0.0.1\n\
             readOnlyPort: 0\n\
             serializeImagePulls: false\n\
             # Never pull: the images are imported (no registry is reachable).\n\
             imageGCHighThresholdPercent: 100\n\
             imageGCLowThresholdPercent: 99\n\
             evictionHard: {{memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, \
             nodefs.inodesFree: 1%, imagefs.inodesFree: 1%}}\n\
             nodeStatusUpdateFrequency: 5s\n\
             syncFrequency: 10s\n",
            cgroup_root = self.cgroup_root,
            ca = path_str(ca),
            resolv = path_str(&resolv),
        );
        let cfg_path = self.dir.join("kubelet.yaml");
        write(&cfg_path, &cfg, 0o644)?;
        let args = vec![
            bins.path("kubelet"),
            format!("--config={}", path_str(&cfg_path)),
            format!("--kubeconfig={}", path_str(kubeconfig)),
            format!("--hostname-override={}", self.name),
            format!("--node-ip={}", self.underlay),
            "--v=1".into(),
        ];
        let path = format!(
            "{}:{}",
            path_str(&bins.dir),
            std::env::var("PATH").unwrap_or_default()
        );
        self.kubelet = Some(spawn_logged(
            &self.enter(),
            &args,
            &self.log("kubelet"),
            &[("PATH", path)],
        )?);
        Ok(())
    }

    /// Starts kube-proxy (nftables mode) for this node.
    pub fn start_kube_proxy(
        &mut self,
        bins: &KubeBins,
        kubeconfig: &Path,
        c: &ClusterSpec,
    ) -> Result<()> {
        let cfg = format!(
            "apiVersion: kubeproxy.config.k8s.io/v1alpha1\n\
             kind: KubeProxyConfiguration\n\
             mode: nftables\n\
             clientConnection: {{kubeconfig: {kc}}}\n\
             hostnameOverride: {node}\n\
             clusterCIDR: {pods}\n\
             metricsBindAddress: 127.0.0.1:10249\n\
             healthzBindAddress: 127.0.0.1:10256\n\
             # Machine-wide conntrack settings are left alone (0 = do not set).\n\
             conntrack: {{maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}}\n",
            kc = path_str(kubeconfig),
            node = self.name,
            pods = c.pod_cidr,
        );
        let cfg_path = self.dir.join("kube-proxy.yaml");
        write(&cfg_path, &cfg, 0o644)?;
        let args = vec![
            bins.path("kube-proxy"),
            format!("--config={}", path_str(&cfg_path)),
            "--v=1".into(),
        ];
        self.kube_proxy = Some(spawn_logged(
            &self.enter(),
            &args,
            &self.log("kube-proxy"),
            &[],
        )?);
        Ok(())
    }

    /// The CNI config: a bridge `cbr0` with the gateway `.1` of the node's pod CIDR, addresses
    /// from host-local IPAM, as `kubenet` did.
    pub fn write_cni(&self, pod_cidr: &Ipv4Net) -> Result<()> {
        let conf = format!(
            r#"{{
  "cniVersion": "1.0.0",
  "name": "sdn-lab",
  "plugins": [
    {{
      "type": "bridge",
      "bridge": "cbr0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "mtu": 1500,
      "ipam": {{
        "type": "host-local",
        "ranges": [[{{"subnet": "{pod_cidr}", "gateway": "{gw}"}}]],
        "routes": [{{"dst": "0.0.0.0/0"}}]
      }}
    }},
    {{"type": "portmap", "capabilities": {{"portMappings": true}}}}
  ]
}}
"#,
            gw = pod_cidr.nth(1),
        );
        write(
            &self.host_path("/etc/cni/net.d").join("10-sdn-lab.conflist"),
            &conf,
            0o644,
        )
    }

    /// Every process of this node that sdn-lab started, by name.
    pub fn children(&mut self) -> Vec<(&'static str, &mut Child)> {
        let mut v: Vec<(&'static str, &mut Child)> = vec![("containerd", &mut self.containerd)];
        if let Some(k) = self.kubelet.as_mut() {
            v.push(("kubelet", k));
        }
        if let Some(k) = self.kube_proxy.as_mut() {
            v.push(("kube-proxy", k));
        }
        v
    }
}

pub fn host_path(dir: &Path, p: &str) -> PathBuf {
    dir.join("fs").join(p.trim_start_matches('/'))
}

fn make_cgroups(root: &str) -> Result<()> {
    for ctrl in CGROUP_CONTROLLERS {
        let base = Path::new("/sys/fs/cgroup").join(ctrl);
        if !base.exists() {
            continue;
        }
        let mut cur = base.clone();
        for part in root.trim_start_matches('/').split('/') {
            let parent = cur.clone();
            cur = cur.join(part);
            if !cur.exists() {
                fs::create_dir(&cur)
                    .with_context(|| format!("creating cgroup {}", cur.display()))?;
            }
            if ctrl == "cpuset" {
                // A new cpuset cgroup starts empty: no task can join it until cpus and mems
                // are set (copied from the parent).
                for f in ["cpuset.cpus", "cpuset.mems"] {
                    let v = fs::read_to_string(parent.join(f))?;
                    if fs::read_to_string(cur.join(f))?.trim().is_empty() {
                        fs::write(cur.join(f), v.trim())?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// Kills every process in the lab's cgroups of `prefix` (the pods of all its nodes) and
/// removes those cgroups, deepest first.
pub fn remove_cgroups(prefix: &str) {
    for ctrl in CGROUP_CONTROLLERS {
        let base = Path::new("/sys/fs/cgroup").join(ctrl).join("sdnlab");
        let Ok(rd) = fs::read_dir(&base) else {
            continue;
        };
        for e in rd.flatten() {
            if e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{prefix}-"))
            {
                kill_and_remove(&e.path());
            }
        }
        let _ = fs::remove_dir(&base);
    }
}

fn kill_and_remove(dir: &Path) {
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                kill_and_remove(&e.path());
            }
        }
    }
    for _ in 0..50 {
        let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        let pids: Vec<u32> = procs
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        if pids.is_empty() {
            break;
        }
        for p in pids {
            crate::netns::kill(p, libc::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = fs::remove_dir(dir);
}

/// containerd 2.x config (version 3): runc from Debian, cgroupfs (no systemd here), the
/// lab's sandbox image, CNI from /opt/cni/bin and /etc/cni/net.d (both per node), and the
/// one concession to this sandbox, `restrict_oom_score_adj`.
const CONTAINERD_CONFIG: &str = r#"version = 3
root = "/var/lib/containerd"
state = "/run/containerd"
disabled_plugins = ["io.containerd.internal.v1.tracing", "io.containerd.nri.v1.nri"]

[grpc]
  address = "/run/containerd/containerd.sock"

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "localhost/sdn-lab/pause:1"

[plugins.'io.containerd.cri.v1.runtime']
  enable_selinux = false
  # This sandbox lacks CAP_SYS_RESOURCE, so no process may lower its oom_score_adj below 0,
  # and runc fails every pod ("nsexec: failed to update /proc/self/oom_score_adj: Permission
  # denied") because the kubelet asks for -998 (sandboxes) and -997 (critical pods). Rootless
  # containerd, kind's rootless mode and usernetes use the same setting: clamp at our own 0.
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "/usr/sbin/runc"
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["/opt/cni/bin"]
    conf_dir = "/etc/cni/net.d"
"#;
