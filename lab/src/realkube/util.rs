//! Small file helpers of the real-Kubernetes lab.

use anyhow::{Context, Result};
use base64::Engine;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

pub fn chmod(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", path.display()))
}

pub fn base64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// Writes `content` to `path` (creating parent directories) with `mode`.
pub fn write(path: &Path, content: &str, mode: u32) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    fs::write(path, content).with_context(|| format!("writing {}", path.display()))?;
    chmod(path, mode)
}

pub fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}
