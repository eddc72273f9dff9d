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
    #[error("{}", ConfigMessage(path, source))]
    Config {
        path: PathBuf,
        #[source]
        source: ConfigError,
    },
}

/// The config error, prefixed with the file unless it names it already (a read error).
struct ConfigMessage<'a>(&'a Path, &'a ConfigError);

impl std::fmt::Display for ConfigMessage<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.1 {
            ConfigError::Io { .. } => write!(f, "{}", self.1),
            e => write!(f, "{}: {e}", self.0.display()),
        }
    }
}

/// Reads and validates the config. The private key file is not checked: diagnosing needs
/// none, and a node without one is still worth diagnosing.
pub fn load_config(path: &Path) -> Result<Config, DiagnoseError> {
    let usage = crate::config::ConfigUse::Tool {
        node_name: "diagnose",
    };
    crate::config::read(path, usage).map_err(|source| DiagnoseError::Config {
        path: path.to_path_buf(),
        source,
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
