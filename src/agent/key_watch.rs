//! Key rotation without a restart: the agent polls `tunnel.privateKeyFile` and, when its
//! content changes to another valid key, switches the device to it (and re-advertises).

use crate::keys;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

pub struct KeyWatch {
    path: PathBuf,
    /// (inode, mtime ns, size) of the file as last read.
    seen: Option<(u64, i128, u64)>,
    last_problem: Option<String>,
}

impl KeyWatch {
    pub fn new(path: PathBuf) -> KeyWatch {
        let mut w = KeyWatch {
            path,
            seen: None,
            last_problem: None,
        };
        w.seen = w.stamp();
        w
    }

    fn stamp(&self) -> Option<(u64, i128, u64)> {
        let m = std::fs::metadata(&self.path).ok()?;
        let mtime = m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128;
        Some((m.ino(), mtime, m.size()))
    }

    /// The new key if the file changed and holds a valid key (0600). A broken replacement is
    /// reported once and the current key stays in use.
    pub fn poll(&mut self) -> Option<[u8; 32]> {
        let stamp = self.stamp();
        if stamp == self.seen {
            return None;
        }
        match keys::read_private_key_file(&self.path) {
            Ok(k) => {
                self.seen = stamp;
                self.last_problem = None;
                Some(k)
            }
            Err(e) => {
                let msg = e.to_string();
                if self.last_problem.as_deref() != Some(&msg) {
                    tracing::warn!(error = %msg, "private key file changed but is unusable; keeping the current key");
                    self.last_problem = Some(msg);
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn detects_replacement_and_ignores_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        let k1 = keys::generate_private();
        keys::write_private_key_file(&p, &k1).unwrap();
        let mut w = KeyWatch::new(p.clone());
        assert_eq!(w.poll(), None);
        // Replace atomically, as an operator or a Secret update would.
        let k2 = keys::generate_private();
        let tmp = dir.path().join("k.new");
        keys::write_private_key_file(&tmp, &k2).unwrap();
        std::fs::rename(&tmp, &p).unwrap();
        assert_eq!(w.poll(), Some(k2));
        assert_eq!(w.poll(), None);
        // World-readable replacement: refused, old key kept, no repeat.
        let tmp = dir.path().join("k.bad");
        keys::write_private_key_file(&tmp, &keys::generate_private()).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::rename(&tmp, &p).unwrap();
        assert_eq!(w.poll(), None);
        assert_eq!(w.poll(), None);
    }
}
