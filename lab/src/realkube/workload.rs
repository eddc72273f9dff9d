//! Test workloads on the real clusters: busybox pods pinned to nodes, a web Deployment behind a
//! real Service, and access to a pod's network namespace from this machine (for the lab's
//! checksummed traffic helpers).

use anyhow::{bail, Context, Result};
use std::time::Duration;

use super::RealKube;

/// The test pods' image (scripts/lab-images.sh), never pulled.
pub const BUSYBOX: &str = "localhost/sdn-lab/busybox:1";

/// A pod running `sleep` (or `command`) on `node`, in namespace `default`.
pub fn pod_yaml(name: &str, node: &str, command: &[&str]) -> String {
    let cmd: Vec<String> = command.iter().map(|c| format!("{c:?}")).collect();
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: default\n  labels: {{app: {name}}}\n\
         spec:\n  nodeName: {node}\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    \
         image: {BUSYBOX}\n    imagePullPolicy: Never\n    command: [{}]\n",
        cmd.join(", ")
    )
}

/// A Deployment `name` of busybox httpd pods answering `GET /` with their pod name on port
/// 8080, a ClusterIP Service `name` port 80 -> 8080, in namespace `default`, and the
/// ServiceExport that shares it with the other clusters (the agents' default
/// `import: exported`).
pub fn web_yaml(name: &str, replicas: u32) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\n  namespace: default\n\
         spec:\n  replicas: {replicas}\n  selector:\n    matchLabels: {{app: {name}}}\n  template:\n    \
         metadata:\n      labels: {{app: {name}}}\n    spec:\n      terminationGracePeriodSeconds: 1\n      \
         containers:\n      - name: httpd\n        image: {BUSYBOX}\n        imagePullPolicy: Never\n        \
         command: [\"sh\", \"-c\", \"mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www\"]\n        \
         ports: [{{containerPort: 8080, name: http}}]\n        \
         readinessProbe: {{tcpSocket: {{port: 8080}}, periodSeconds: 1}}\n\
         ---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: default\n\
         spec:\n  selector: {{app: {name}}}\n  ports:\n  - {{name: http, port: 80, targetPort: 8080}}\n\
         ---\napiVersion: multicluster.x-k8s.io/v1beta1\nkind: ServiceExport\nmetadata:\n  name: {name}\n  namespace: default\n"
    )
}

impl RealKube {
    /// Applies `yaml` to `cluster`.
    pub fn apply(&self, cluster: &str, yaml: &str) -> Result<()> {
        self.kubectl(cluster)
            .run_stdin(&["apply", "-f", "-"], yaml)
            .map(|_| ())
    }

    /// Starts a busybox pod `name` on `node` of `cluster` and waits until it runs.
    pub fn run_pod(&self, cluster: &str, name: &str, node: &str, command: &[&str]) -> Result<()> {
        self.apply(cluster, &pod_yaml(name, node, command))?;
        self.wait_pod(cluster, name, Duration::from_secs(90))
    }

    pub fn wait_pod(&self, cluster: &str, name: &str, timeout: Duration) -> Result<()> {
        self.kubectl(cluster)
            .run(&[
                "-n",
                "default",
                "wait",
                "--for=condition=Ready",
                &format!("pod/{name}"),
                &format!("--timeout={}s", timeout.as_secs()),
            ])
            .map(|_| ())
            .with_context(|| format!("pod {name} in {cluster} not Ready"))
    }

    pub fn pod_ip(&self, cluster: &str, name: &str) -> Result<String> {
        let ip = self.kubectl(cluster).run(&[
            "-n",
            "default",
            "get",
            "pod",
            name,
            "-o",
            "jsonpath={.status.podIP}",
        ])?;
        anyhow::ensure!(
            !ip.trim().is_empty(),
            "pod {name} in {cluster} has no IP yet"
        );
        Ok(ip.trim().to_string())
    }

    /// `kubectl exec <pod> -- <args>` in namespace `default`: the raw output.
    pub fn exec_pod(&self, cluster: &str, pod: &str, args: &[&str]) -> std::process::Output {
        let mut a = vec!["-n", "default", "exec", pod, "--"];
        a.extend_from_slice(args);
        self.kubectl(cluster).output(&a)
    }

    /// The network namespace of a pod (`/proc/<pid>/ns/net` of its container's process), for
    /// the lab's traffic helpers ([`crate::tcp_transfer`], ...), which accept such paths.
    pub fn pod_netns(&self, cluster: &str, namespace: &str, pod: &str) -> Result<String> {
        let k = self.kubectl(cluster);
        let node = k.run(&[
            "-n",
            namespace,
            "get",
            "pod",
            pod,
            "-o",
            "jsonpath={.spec.nodeName}",
        ])?;
        let rt = self.node(node.trim());
        let ids = rt.run(&[
            &self.bins.path("crictl"),
            "ps",
            "-q",
            "--label",
            &format!("io.kubernetes.pod.name={pod}"),
            "--label",
            &format!("io.kubernetes.pod.namespace={namespace}"),
        ])?;
        let id = ids
            .lines()
            .next()
            .context("no running container")?
            .trim()
            .to_string();
        let info = rt.run(&[&self.bins.path("crictl"), "inspect", &id])?;
        let v: serde_json::Value = serde_json::from_str(&info)?;
        let pid = v["info"]["pid"]
            .as_u64()
            .context("crictl inspect: no info.pid")?;
        if pid == 0 {
            bail!("container of {pod} has no pid");
        }
        Ok(format!("/proc/{pid}/ns/net"))
    }
}
