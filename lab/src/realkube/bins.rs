//! Where the real Kubernetes binaries are: built by scripts/kube-bins.sh into a cache outside
//! the repository (or named by $SDN_KUBE_BINS).

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Env var naming a directory that holds the binaries (skips scripts/kube-bins.sh).
pub const BINS_ENV: &str = "SDN_KUBE_BINS";

/// The binaries of the lab's clusters and nodes.
#[derive(Debug, Clone)]
pub struct KubeBins {
    pub dir: PathBuf,
}

impl KubeBins {
    /// `$SDN_KUBE_BINS`, else the directory scripts/kube-bins.sh prints (building on first use:
    /// about half an hour on 2 cores, cached afterwards).
    pub fn locate(repo: &Path) -> Result<KubeBins> {
        let dir = match std::env::var_os(BINS_ENV) {
            Some(d) => PathBuf::from(d),
            None => {
                let script = repo.join("scripts/kube-bins.sh");
                let out = Command::new("bash")
                    .arg(&script)
                    .stderr(std::process::Stdio::inherit())
                    .output()
                    .with_context(|| format!("running {}", script.display()))?;
                if !out.status.success() {
                    bail!("{} failed ({})", script.display(), out.status);
                }
                PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
            }
        };
        let bins = KubeBins { dir };
        for b in [
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kubelet",
            "kube-proxy",
            "kubectl",
            "containerd",
            "containerd-shim-runc-v2",
            "ctr",
            "crictl",
            "cni/bridge",
            "cni/host-local",
            "cni/loopback",
        ] {
            let p = bins.dir.join(b);
            anyhow::ensure!(p.exists(), "{} missing (scripts/kube-bins.sh)", p.display());
        }
        Ok(bins)
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).to_string_lossy().into_owned()
    }

    pub fn cni_dir(&self) -> PathBuf {
        self.dir.join("cni")
    }
}

/// The repository root: `$SDN_REPO`, else the parent of this crate's manifest directory (the
/// lab is always built from the repository).
pub fn repo_root() -> PathBuf {
    std::env::var_os("SDN_REPO")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
}
