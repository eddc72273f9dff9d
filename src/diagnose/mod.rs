//! `sdn-tunnel diagnose`: checks the node for everything the tunnel depends on (sysctls, MTU,
//! routes, nftables, IPVS, the UDP port, the clock) and the running agent's view (remotes,
//! peers, rejections), and prints one line per check with a fix hint.
//!
//! Split like the rest of the crate: `gather` does the (read-only) I/O into plain [`Facts`],
//! `checks` turns them into verdicts without I/O, `render` prints them.

pub mod checks;
pub mod facts;
pub mod gather;
pub mod render;

pub use checks::{Check, Status};
pub use facts::Facts;

use crate::config::{Config, ConfigError};
use std::path::{Path, PathBuf};

/// Default for `--stale-after`: WireGuard re-handshakes every 2 minutes while packets flow
/// (and persistent keepalives keep them flowing), and a session is rejected after 180 s.
pub const DEFAULT_STALE_AFTER_SECS: u64 = 180;

#[derive(Debug, thiserror::Error)]
pub enum DiagnoseError {
    #[error("read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Config {
        path: PathBuf,
        #[source]
        source: ConfigError,
    },
}

/// Reads and validates the config. The private key file is not checked: diagnosing needs
/// none, and a node without one is still worth diagnosing.
pub fn load_config(path: &Path) -> Result<Config, DiagnoseError> {
    let text = std::fs::read_to_string(path).map_err(|source| DiagnoseError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let node = std::env::var("NODE_NAME").ok();
    Config::parse(&text, Some(node.as_deref().unwrap_or("diagnose"))).map_err(|source| {
        DiagnoseError::Config {
            path: path.to_path_buf(),
            source,
        }
    })
}

/// Gathers the facts and runs every check. Must run inside a tokio runtime.
pub async fn run(cfg: &Config, stale_after_secs: u64) -> Vec<Check> {
    let facts = gather::gather(cfg, stale_after_secs).await;
    checks::all(&facts)
}

/// True if any check failed (exit code 1).
pub fn any_failed(checks: &[Check]) -> bool {
    checks.iter().any(|c| c.status == Status::Fail)
}
