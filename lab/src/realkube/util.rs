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

/// Bytes available to an unprivileged writer under `path` (statvfs `f_bavail`).
pub fn free_bytes(path: &Path) -> Result<u64> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = CString::new(path.as_os_str().as_bytes())
        .with_context(|| format!("path {} contains NUL", path.display()))?;
    // SAFETY: `c` is a valid NUL-terminated string and `st` a zeroed out-parameter.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("statvfs {}", path.display()));
    }
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

/// Fails with a clear message when `path` has less than `need` bytes free: a full disk
/// otherwise shows up minutes later as an image import or etcd write error on some node.
pub fn ensure_free_space(path: &Path, need: u64, what: &str) -> Result<()> {
    let free = free_bytes(path)?;
    const GIB: f64 = (1u64 << 30) as f64;
    anyhow::ensure!(
        free >= need,
        "not enough disk space for {what}: {:.1} GiB free under {}, about {:.1} GiB needed \
         (remove old labs with `sdn-lab kube down --all` / `sdn-lab down --all`, or free space)",
        free as f64 / GIB,
        path.display(),
        need as f64 / GIB
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_space_check_names_the_shortfall() {
        let tmp = Path::new("/tmp");
        assert!(free_bytes(tmp).unwrap() > 0);
        ensure_free_space(tmp, 1, "a test").unwrap();
        let err = ensure_free_space(tmp, u64::MAX, "a test")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not enough disk space for a test"), "{err}");
        assert!(err.contains("GiB free under /tmp"), "{err}");
    }
}
