//! What stopping the agent leaves behind.
//!
//! Fail closed: normally everything stays, the persistent tunnel device with its routes, the
//! nftables tables (with the guards), the IPVS services. Traffic for the remote clusters is
//! then dropped, never sent in plaintext, until an agent runs again and attaches to the
//! device: a crash, an OOM kill, a liveness restart or a rolling update loses packets for a
//! moment, not confidentiality. Only an *uninstall* removes it all, and in Kubernetes the
//! agent can tell one: its DaemonSet is gone or being deleted, or the API no longer accepts
//! its identity (its ServiceAccount or RBAC went with the rest of deploy/). Outside Kubernetes,
//! or when the API cannot say, everything stays (`sdn-tunnel cleanup` removes it).

use crate::source::kube_client::{local_client, LocalApi};
use k8s_openapi::api::apps::v1::DaemonSet;
use std::time::Duration;

/// The agent's own namespace (downward API) and its DaemonSet's name, set by the manifest.
pub const ENV_NAMESPACE: &str = "POD_NAMESPACE";
pub const ENV_DAEMONSET: &str = "SDN_TUNNEL_DAEMONSET";
const ASK_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leave {
    /// Keep everything (fail closed); why, for the log.
    Keep(String),
    /// Remove everything of ours; why.
    Remove(String),
}

/// Decides on SIGTERM/SIGINT.
pub async fn decide(api: Option<&LocalApi>) -> Leave {
    let (Ok(ns), Ok(name)) = (std::env::var(ENV_NAMESPACE), std::env::var(ENV_DAEMONSET)) else {
        return Leave::Keep("not a DaemonSet pod (no $POD_NAMESPACE/$SDN_TUNNEL_DAEMONSET)".into());
    };
    let Some(api) = api else {
        return Leave::Keep("no local API to ask whether this is an uninstall".into());
    };
    let answer = tokio::time::timeout(ASK_TIMEOUT, async {
        let client = local_client(api).await.map_err(|e| e.to_string())?;
        kube::Api::<DaemonSet>::namespaced(client, &ns)
            .get(&name)
            .await
            .map_err(|e| match e {
                kube::Error::Api(s) => format!("{}:{}", s.code, s.message),
                e => e.to_string(),
            })
    })
    .await
    .unwrap_or_else(|_| Err("timed out".into()));
    classify(
        &ns,
        &name,
        answer.map(|ds| ds.metadata.deletion_timestamp.is_some()),
    )
}

/// Pure: the API's answer about our DaemonSet (Ok(being deleted) or the error) -> decision.
/// API errors are `"<code>:<message>"`.
pub fn classify(ns: &str, name: &str, answer: Result<bool, String>) -> Leave {
    let ds = format!("DaemonSet {ns}/{name}");
    match answer {
        Ok(true) => Leave::Remove(format!("{ds} is being deleted")),
        Ok(false) => Leave::Keep(format!("{ds} exists: a restart or a rolling update")),
        Err(e) if e.starts_with("404:") => Leave::Remove(format!("{ds} is gone")),
        Err(e) if e.starts_with("401:") || e.starts_with("403:") => Leave::Remove(format!(
            "the API no longer accepts this agent's identity ({e}): deploy/ is being deleted"
        )),
        Err(e) => Leave::Keep(format!("could not ask about {ds} ({e})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_clear_uninstall_removes() {
        let c = |a| classify("sdn-tunnel", "sdn-tunnel", a);
        assert!(matches!(c(Ok(true)), Leave::Remove(_)));
        assert!(matches!(c(Ok(false)), Leave::Keep(_)));
        assert!(matches!(c(Err("404:not found".into())), Leave::Remove(_)));
        assert!(matches!(
            c(Err("401:Unauthorized".into())),
            Leave::Remove(_)
        ));
        assert!(matches!(c(Err("403:forbidden".into())), Leave::Remove(_)));
        // The API down or slow: fail closed.
        assert!(matches!(c(Err("timed out".into())), Leave::Keep(_)));
        assert!(matches!(c(Err("500:etcd".into())), Leave::Keep(_)));
        assert!(matches!(
            c(Err("connection refused".into())),
            Leave::Keep(_)
        ));
    }
}
