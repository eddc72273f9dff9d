//! The control plane of one lab cluster: etcd, kube-apiserver, kube-controller-manager and
//! kube-scheduler, run as processes in the network namespace of the cluster's first node (like
//! a kubeadm control-plane node). The API server listens on that node's underlay address, so
//! the other clusters' agents reach it over the underlay like a real remote API.

use anyhow::{bail, Context, Result};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use super::bins::KubeBins;
use super::kubectl::Kubectl;
use super::pki::{kubeconfig, Pki, Usage};
use super::process::{log_tail, spawn_logged, Enter};
use super::util::{path_str, write};
use crate::topology::ClusterSpec;

pub const API_PORT: u16 = 6443;

/// Files of a cluster's control plane.
#[derive(Clone)]
pub struct ControlPlaneFiles {
    pub dir: PathBuf,
    pub pki: Pki,
    /// cluster-admin (system:masters); what the tests, kubectl and Ansible use.
    pub admin_kubeconfig: PathBuf,
    pub api_server: String,
}

/// A running control plane.
pub struct ControlPlane {
    pub files: ControlPlaneFiles,
    pub children: Vec<(String, Child)>,
}

/// Makes the PKI and kubeconfigs of cluster `c` whose API server runs on `api_ip`.
pub fn prepare(dir: &Path, c: &ClusterSpec, api_ip: Ipv4Addr) -> Result<ControlPlaneFiles> {
    let pki = Pki::create(&dir.join("pki"), &format!("sdn-lab-{}-ca", c.name))?;
    let service_ip = IpAddr::V4(c.service_cidr.nth(1));
    pki.issue(
        "apiserver",
        "kube-apiserver",
        None,
        Usage::Server {
            dns: &[
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
                "localhost",
            ],
            ips: &[
                IpAddr::V4(api_ip),
                service_ip,
                IpAddr::V4(Ipv4Addr::LOCALHOST),
            ],
        },
    )?;
    pki.issue(
        "apiserver-kubelet-client",
        "kube-apiserver-kubelet-client",
        None,
        Usage::Client,
    )?;
    pki.service_account_keys()?;
    let server = format!("https://{api_ip}:{API_PORT}");
    let users: [(&str, &str, Option<&str>); 4] = [
        ("admin", "kubernetes-admin", Some("system:masters")),
        ("controller-manager", "system:kube-controller-manager", None),
        ("scheduler", "system:kube-scheduler", None),
        ("kube-proxy", "system:kube-proxy", None),
    ];
    for (name, cn, org) in users {
        let pair = pki.issue(name, cn, org, Usage::Client)?;
        let kc = kubeconfig(&c.name, &server, &pki.ca.cert, &pair, cn)?;
        write(&dir.join(format!("{name}.kubeconfig")), &kc, 0o600)?;
    }
    Ok(ControlPlaneFiles {
        dir: dir.to_path_buf(),
        admin_kubeconfig: dir.join("admin.kubeconfig"),
        pki,
        api_server: server,
    })
}

impl ControlPlaneFiles {
    /// A kubelet's kubeconfig (CN system:node:<node>, O system:nodes: the Node authorizer).
    pub fn kubelet_kubeconfig(&self, c: &ClusterSpec, node: &str, out: &Path) -> Result<()> {
        let pair = self.pki.issue(
            &format!("kubelet-{node}"),
            &format!("system:node:{node}"),
            Some("system:nodes"),
            Usage::Client,
        )?;
        let kc = kubeconfig(
            &c.name,
            &self.api_server,
            &self.pki.ca.cert,
            &pair,
            &format!("system:node:{node}"),
        )?;
        write(out, &kc, 0o600)
    }
}

/// Starts etcd, then the API server (waits until it is ready), then the controller-manager
/// and the scheduler, all in network namespace `ns`.
pub fn start(
    files: &ControlPlaneFiles,
    bins: &KubeBins,
    kubectl: &Kubectl,
    c: &ClusterSpec,
    ns: &str,
    api_ip: Ipv4Addr,
    timeout: Duration,
) -> Result<ControlPlane> {
    let d = &files.dir;
    let pki = &files.pki.dir;
    let pk = |f: &str| path_str(&pki.join(f));
    let enter = Enter::Net(ns);
    let mut cp = ControlPlane {
        children: Vec::new(),
        files: files.clone(),
    };
    let etcd_log = d.join("etcd.log");
    let etcd = vec![
        bins.path("etcd"),
        format!("--name={}", c.name),
        format!("--data-dir={}", path_str(&d.join("etcd"))),
        "--listen-client-urls=http://127.0.0.1:2379".into(),
        "--advertise-client-urls=http://127.0.0.1:2379".into(),
        "--listen-peer-urls=http://127.0.0.1:2380".into(),
        "--initial-advertise-peer-urls=http://127.0.0.1:2380".into(),
        format!("--initial-cluster={}=http://127.0.0.1:2380", c.name),
        "--listen-metrics-urls=http://127.0.0.1:2381".into(),
        // A throwaway lab: durability is not worth the fsync latency on a shared disk.
        "--unsafe-no-fsync".into(),
        "--log-level=warn".into(),
    ];
    cp.children
        .push(("etcd".into(), spawn_logged(&enter, &etcd, &etcd_log, &[])?));

    let api_log = d.join("kube-apiserver.log");
    let apiserver = vec![
        bins.path("kube-apiserver"),
        "--etcd-servers=http://127.0.0.1:2379".into(),
        format!("--advertise-address={api_ip}"),
        "--bind-address=0.0.0.0".into(),
        format!("--secure-port={API_PORT}"),
        format!("--service-cluster-ip-range={}", c.service_cidr),
        format!("--client-ca-file={}", pk("ca.crt")),
        format!("--tls-cert-file={}", pk("apiserver.crt")),
        format!("--tls-private-key-file={}", pk("apiserver.key")),
        format!(
            "--kubelet-client-certificate={}",
            pk("apiserver-kubelet-client.crt")
        ),
        format!(
            "--kubelet-client-key={}",
            pk("apiserver-kubelet-client.key")
        ),
        "--kubelet-preferred-address-types=InternalIP".into(),
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
        format!("--service-account-key-file={}", pk("sa.pub")),
        format!("--service-account-signing-key-file={}", pk("sa.key")),
        "--authorization-mode=Node,RBAC".into(),
        "--enable-admission-plugins=NodeRestriction".into(),
        "--allow-privileged=true".into(),
        "--profiling=false".into(),
        "--v=1".into(),
    ];
    cp.children.push((
        "kube-apiserver".into(),
        spawn_logged(&enter, &apiserver, &api_log, &[])?,
    ));
    wait_ready(&mut cp, kubectl, &api_log, timeout)?;

    let kc = |n: &str| path_str(&d.join(format!("{n}.kubeconfig")));
    let cm = vec![
        bins.path("kube-controller-manager"),
        format!("--kubeconfig={}", kc("controller-manager")),
        format!("--authentication-kubeconfig={}", kc("controller-manager")),
        format!("--authorization-kubeconfig={}", kc("controller-manager")),
        "--bind-address=127.0.0.1".into(),
        format!("--cluster-name={}", c.name),
        format!("--cluster-cidr={}", c.pod_cidr),
        // The lab creates every Node with its pod CIDR already set (see RealKube::up): the range
        // allocator only marks those as used, it hands out a CIDR only to a Node without one.
        "--allocate-node-cidrs=true".into(),
        "--node-cidr-mask-size=24".into(),
        format!("--service-cluster-ip-range={}", c.service_cidr),
        format!("--service-account-private-key-file={}", pk("sa.key")),
        format!("--root-ca-file={}", pk("ca.crt")),
        "--use-service-account-credentials=true".into(),
        "--leader-elect=false".into(),
        "--v=1".into(),
    ];
    cp.children.push((
        "kube-controller-manager".into(),
        spawn_logged(&enter, &cm, &d.join("kube-controller-manager.log"), &[])?,
    ));
    let sched = vec![
        bins.path("kube-scheduler"),
        format!("--kubeconfig={}", kc("scheduler")),
        format!("--authentication-kubeconfig={}", kc("scheduler")),
        format!("--authorization-kubeconfig={}", kc("scheduler")),
        "--bind-address=127.0.0.1".into(),
        "--leader-elect=false".into(),
        "--v=1".into(),
    ];
    cp.children.push((
        "kube-scheduler".into(),
        spawn_logged(&enter, &sched, &d.join("kube-scheduler.log"), &[])?,
    ));
    Ok(cp)
}

/// Polls `/readyz` with the admin identity until the API server answers "ok".
fn wait_ready(
    cp: &mut ControlPlane,
    kubectl: &Kubectl,
    log: &Path,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        for (name, child) in cp.children.iter_mut() {
            if let Some(st) = child.try_wait()? {
                bail!(
                    "{name} exited ({st}) while the API server was starting; {}:\n{}",
                    log.display(),
                    log_tail(log, 30)
                );
            }
        }
        let out = kubectl.output(&["--request-timeout=3s", "get", "--raw=/readyz"]);
        if out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok" {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(anyhow::anyhow!(
                "API server not ready within {timeout:?}: {}; {}:\n{}",
                String::from_utf8_lossy(&out.stderr).trim(),
                log.display(),
                log_tail(log, 30)
            ))
            .context("starting the control plane");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
