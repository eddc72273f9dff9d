//! The lab's container images (scripts/lab-images.sh) and the agent image's root filesystem
//! unpacked on disk (to run the agent from inside the image where no container runtime is:
//! the IPVS test in the VM, [`crate::LabOptions::agent_rootfs`]).

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

use super::util::path_str;
use crate::netns::exec_ok;

/// The archives `scripts/lab-images.sh` writes (docker-archive, for `ctr images import`).
pub struct Images {
    pub pause: PathBuf,
    pub busybox: PathBuf,
    pub agent: PathBuf,
}

impl Images {
    pub fn all(&self) -> Vec<PathBuf> {
        vec![self.pause.clone(), self.busybox.clone(), self.agent.clone()]
    }
}

/// Where the archives are kept between runs (`$SDN_LAB_IMAGES`, else
/// `~/.cache/sdn-tunnel/lab-images`): lab-images.sh rewrites one only when its image changed.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("SDN_LAB_IMAGES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| "/root".into());
            home.join(".cache/sdn-tunnel/lab-images")
        })
}

/// Builds (or reuses) the images into `out` with `bin` as the agent's binary.
pub fn build(repo: &Path, out: &Path, bin: &Path) -> Result<Images> {
    exec_ok(
        "",
        &[
            "bash",
            &path_str(&repo.join("scripts/lab-images.sh")),
            &path_str(out),
            &path_str(bin),
        ],
    )?;
    Ok(Images {
        pause: out.join("pause.tar"),
        busybox: out.join("busybox.tar"),
        agent: out.join("agent.tar"),
    })
}

/// Unpacks the layers of docker-archive `tar` into `dir` (emptied first), in order. Whiteout
/// files of later layers are removed with what they hide.
pub fn extract_rootfs(tar: &Path, dir: &Path) -> Result<()> {
    let work = dir.with_extension("layers");
    for d in [dir, &work] {
        if d.exists() {
            std::fs::remove_dir_all(d).with_context(|| format!("removing {}", d.display()))?;
        }
        std::fs::create_dir_all(d)?;
    }
    exec_ok("", &["tar", "-xf", &path_str(tar), "-C", &path_str(&work)])?;
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(work.join("manifest.json"))?)
            .context("manifest.json of the image archive")?;
    let layers = manifest[0]["Layers"]
        .as_array()
        .context("manifest.json: no Layers")?;
    for l in layers {
        let layer = work.join(l.as_str().context("layer name")?);
        exec_ok("", &["tar", "-xf", &path_str(&layer), "-C", &path_str(dir)])?;
        apply_whiteouts(dir)?;
    }
    std::fs::remove_dir_all(&work)?;
    Ok(())
}

/// `.wh.<name>` deletes `<name>`; `.wh..wh..opq` empties its directory of older content (here:
/// the marker alone is removed, layers are applied one at a time so older content is gone).
fn apply_whiteouts(dir: &Path) -> Result<()> {
    for e in std::fs::read_dir(dir)?.flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(hidden) = name.strip_prefix(".wh.") {
            if hidden != ".wh..opq" {
                let target = dir.join(hidden);
                if target.is_dir() && !target.is_symlink() {
                    let _ = std::fs::remove_dir_all(&target);
                } else {
                    let _ = std::fs::remove_file(&target);
                }
            }
            std::fs::remove_file(&p)?;
        } else if e.file_type()?.is_dir() {
            apply_whiteouts(&p)?;
        }
    }
    Ok(())
}
