//! Building kube-rs clients: for a remote (its kubeconfig file) and for the local cluster
//! (`cluster.kubeconfig`, else `$KUBECONFIG`, else the in-cluster service account).

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Fail fast when an API server is down; watches have their own (long) read timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum KubeClientError {
    #[error("kubeconfig {}: {reason}", path.display())]
    Kubeconfig { path: PathBuf, reason: String },
    #[error("in-cluster config: {0}")]
    InCluster(String),
    #[error("building the client: {0}")]
    Client(String),
}

/// Where the local cluster's API is, if anywhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalApi {
    Kubeconfig(PathBuf),
    InCluster,
}

impl std::fmt::Display for LocalApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LocalApi::Kubeconfig(p) => write!(f, "kubeconfig {}", p.display()),
            LocalApi::InCluster => write!(f, "in-cluster service account"),
        }
    }
}

/// `cluster.kubeconfig`, else `$KUBECONFIG`, else in-cluster when running in a pod.
pub fn local_api(configured: Option<&Path>) -> Option<LocalApi> {
    if let Some(p) = configured {
        return Some(LocalApi::Kubeconfig(p.to_path_buf()));
    }
    if let Some(p) = std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
        return Some(LocalApi::Kubeconfig(PathBuf::from(p)));
    }
    std::env::var_os("KUBERNETES_SERVICE_HOST").map(|_| LocalApi::InCluster)
}

pub async fn local_client(api: &LocalApi) -> Result<Client, KubeClientError> {
    match api {
        LocalApi::Kubeconfig(p) => from_kubeconfig(p, None).await,
        LocalApi::InCluster => {
            let mut cfg =
                Config::incluster().map_err(|e| KubeClientError::InCluster(e.to_string()))?;
            cfg.connect_timeout = Some(CONNECT_TIMEOUT);
            Client::try_from(cfg).map_err(|e| KubeClientError::Client(e.to_string()))
        }
    }
}

/// The client of a *remote* cluster: its kubeconfig must be data only
/// ([`super::kubeconfig_policy`]); an `exec` plugin or a file path is refused, never run. No
/// message (watch event, list page) from it may be longer than `message_bytes`
/// ([`super::message_limit`]).
pub async fn from_remote_kubeconfig(
    path: &Path,
    context: Option<&str>,
    message_bytes: usize,
) -> Result<Client, KubeClientError> {
    let err = |reason: String| KubeClientError::Kubeconfig {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| err(format!("failed to read kubeconfig: {e}")))?;
    super::kubeconfig_policy::check(&text).map_err(err)?;
    let cfg = config_from(path, context).await?;
    Ok(kube::client::ClientBuilder::try_from(cfg)
        .map_err(|e| KubeClientError::Client(e.to_string()))?
        .with_layer(&super::message_limit::MessageLimitLayer(message_bytes))
        .build())
}

async fn config_from(path: &Path, context: Option<&str>) -> Result<Config, KubeClientError> {
    let err = |reason: String| KubeClientError::Kubeconfig {
        path: path.to_path_buf(),
        reason,
    };
    let kc = Kubeconfig::read_from(path).map_err(|e| err(e.to_string()))?;
    let opts = KubeConfigOptions {
        context: context.map(str::to_string),
        ..Default::default()
    };
    let mut cfg = Config::from_custom_kubeconfig(kc, &opts)
        .await
        .map_err(|e| err(e.to_string()))?;
    cfg.connect_timeout = Some(CONNECT_TIMEOUT);
    Ok(cfg)
}

/// A client from a kubeconfig of this operator's choosing (the local cluster's, or a test's).
pub async fn from_kubeconfig(
    path: &Path,
    context: Option<&str>,
) -> Result<Client, KubeClientError> {
    let cfg = config_from(path, context).await?;
    Client::try_from(cfg).map_err(|e| KubeClientError::Client(e.to_string()))
}
