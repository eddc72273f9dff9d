//! `sdn-tunnel check-remote`: connects to one remote's API with the agent's own source code,
//! waits for the first complete snapshot and reports what the agent would accept and reject.
//! For operators ("is this kubeconfig right?") and for the snapshot benchmark.

use crate::config::Config;
use crate::model::{plan, Rejected, Snapshots};
use crate::source::kube_remote::KubeRemote;
use crate::source::{RemoteSnapshot, RemoteView, SourceHealth, SourceKind};
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckReport {
    pub remote: String,
    pub synced: bool,
    pub seconds_to_snapshot: Option<f64>,
    pub last_error: Option<String>,
    /// Nodes advertising a key, and how many of them would become peers.
    pub nodes: usize,
    pub peers: usize,
    pub services: usize,
    pub endpoints: usize,
    pub rejected: Vec<Rejected>,
    /// Peak resident memory of this process (the same source code as the agent's).
    pub peak_rss_bytes: Option<u64>,
    /// What `import` let through.
    pub import: Option<crate::model::ImportReport>,
}

pub async fn check(cfg: &Config, remote: &str, timeout: Duration) -> anyhow::Result<CheckReport> {
    let r = cfg
        .remotes
        .iter()
        .find(|r| r.name == remote)
        .ok_or_else(|| anyhow::anyhow!("no remote named '{remote}' in the config"))?;
    let Some(kubeconfig) = &r.kubeconfig else {
        anyhow::bail!("remote '{remote}' has no kubeconfig (static remotes need no check)");
    };
    let (tx, mut rx) = watch::channel(RemoteView {
        remote: remote.to_string(),
        snapshot: Arc::new(RemoteSnapshot::default()),
        health: SourceHealth::new(SourceKind::Kube),
    });
    let source = KubeRemote {
        name: remote.to_string(),
        kubeconfig: kubeconfig.clone(),
        context: r.context.clone(),
        import: r.import.clone(),
        limits: cfg.limits.clone(),
        local: None,
    };
    let started = Instant::now();
    let task = tokio::spawn(source.run(tx, Arc::new(Notify::new())));
    let synced = tokio::time::timeout(timeout, rx.wait_for(|v| v.health.synced))
        .await
        .is_ok();
    let elapsed = started.elapsed().as_secs_f64();
    task.abort();
    let view = rx.borrow().clone();
    let mut snaps = Snapshots::new();
    snaps.insert(remote.to_string(), view.snapshot.clone());
    let d = plan(cfg, &snaps);
    Ok(CheckReport {
        remote: remote.to_string(),
        synced,
        seconds_to_snapshot: synced.then_some(elapsed),
        last_error: view.health.last_error.clone(),
        nodes: view.snapshot.nodes.len(),
        peers: d.peers.len(),
        services: d.services.len(),
        endpoints: d.services.iter().map(|s| s.service.endpoints.len()).sum(),
        rejected: d.rejected,
        peak_rss_bytes: peak_rss_bytes(),
        import: view.snapshot.import.clone(),
    })
}

/// VmHWM from /proc/self/status.
pub fn peak_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

pub fn render_text(r: &CheckReport) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    match r.seconds_to_snapshot {
        Some(t) => {
            let _ = writeln!(s, "remote {}: synced in {t:.2}s", r.remote);
        }
        None => {
            let _ = writeln!(
                s,
                "remote {}: NOT synced: {}",
                r.remote,
                r.last_error.as_deref().unwrap_or("timed out")
            );
        }
    }
    let _ = writeln!(
        s,
        "  nodes with a key: {}, would become peers: {}\n  services: {}, endpoints: {}\n  rejected: {}",
        r.nodes,
        r.peers,
        r.services,
        r.endpoints,
        r.rejected.len()
    );
    if let Some(line) = r.import.as_ref().and_then(crate::status::import_line) {
        let _ = writeln!(s, "  {line}");
    }
    for rej in &r.rejected {
        let _ = writeln!(s, "    {}: {}", rej.object, rej.reason);
    }
    s
}
