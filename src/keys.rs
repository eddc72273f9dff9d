//! WireGuard keys in the `wg genkey` / `wg pubkey` format (32 bytes, standard base64), and the
//! private key file (which must be 0600: the key never goes to env, argv or logs).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use boringtun::x25519::{PublicKey, StaticSecret};
use rand_core::{OsRng, RngCore};
use std::fs;
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("not a WireGuard key: expected 44 characters of base64 encoding 32 bytes")]
    Malformed,
    #[error("{path} does not exist; create it with `(umask 077; sdn-tunnel keygen > {path})`")]
    Missing { path: String },
    #[error("{path} is readable by group/others (mode {mode:04o}); run `chmod 600 {path}`")]
    Permissive { path: String, mode: u32 },
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("{path}: the file does not hold a WireGuard private key (expected the output of `wg genkey`)")]
    BadFile { path: String },
}

/// Parses a base64 key as printed by `wg genkey` / `wg pubkey`.
pub fn parse_key(s: &str) -> Result<[u8; 32], KeyError> {
    let s = s.trim();
    if s.len() != 44 {
        return Err(KeyError::Malformed);
    }
    let bytes = B64.decode(s).map_err(|_| KeyError::Malformed)?;
    bytes.try_into().map_err(|_| KeyError::Malformed)
}

pub fn encode_key(key: &[u8; 32]) -> String {
    B64.encode(key)
}

/// A fresh private key, clamped as `wg genkey` does (curve25519 clamping).
pub fn generate_private() -> [u8; 32] {
    let mut k = [0u8; 32];
    OsRng.fill_bytes(&mut k);
    k[0] &= 248;
    k[31] = (k[31] & 127) | 64;
    k
}

pub fn public_from_private(private: &[u8; 32]) -> [u8; 32] {
    PublicKey::from(&StaticSecret::from(*private)).to_bytes()
}

/// Reads the private key file, refusing one that group or others can read.
pub fn read_private_key_file(path: &Path) -> Result<[u8; 32], KeyError> {
    let shown = path.display().to_string();
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(KeyError::Missing { path: shown })
        }
        Err(source) => {
            return Err(KeyError::Io {
                path: shown,
                source,
            })
        }
    };
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Permissive { path: shown, mode });
    }
    let text = fs::read_to_string(path).map_err(|source| KeyError::Io {
        path: shown.clone(),
        source,
    })?;
    parse_key(&text).map_err(|_| KeyError::BadFile { path: shown })
}

/// Writes a private key file with mode 0600, atomically: a temporary file in the same
/// directory (created 0600, written, synced) is renamed over `path`, so a crash leaves the old
/// file or the new one, never a partial key.
pub fn write_private_key_file(path: &Path, key: &[u8; 32]) -> io::Result<()> {
    let tmp = write_temp_key(path, key)?;
    let res = fs::rename(&tmp, path).and_then(|()| sync_parent(path));
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

/// Creates a fresh private key file (0600, parent directory 0700 if it has to be created)
/// unless one exists. Returns true if it created one. The key is written to a temporary file
/// first and hard-linked into place (fails if `path` exists), so two agents racing on the same
/// path can't both win and a crash never leaves an empty key file. An empty file (left by an
/// older version that crashed mid-write) holds no key and is replaced.
pub fn create_private_key_file_if_absent(path: &Path) -> io::Result<bool> {
    use std::os::unix::fs::DirBuilderExt;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
    }
    if fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() == 0) {
        tracing::warn!(path = %path.display(), "private key file is empty; replacing it with a new key");
        write_private_key_file(path, &generate_private())?;
        return Ok(true);
    }
    let tmp = write_temp_key(path, &generate_private())?;
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            sync_parent(path)?;
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// A new file beside `path` (O_EXCL, mode 0600) holding `key`, synced to disk.
fn write_temp_key(path: &Path, key: &[u8; 32]) -> io::Result<std::path::PathBuf> {
    use std::io::Write;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let suffix = u64::from_le_bytes(generate_private()[..8].try_into().unwrap_or_default());
    let tmp = path.with_file_name(format!(".{name}.{suffix:016x}.tmp"));
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    let written = writeln!(f, "{}", encode_key(key)).and_then(|()| f.sync_all());
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(tmp)
}

/// Makes a rename or link in `path`'s directory durable.
fn sync_parent(path: &Path) -> io::Result<()> {
    let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(d) => d,
        None => Path::new("."),
    };
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7748_public_key() {
        // RFC 7748 section 6.1 test vector (Alice).
        let private: [u8; 32] =
            hex::decode("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
                .unwrap()
                .try_into()
                .unwrap();
        let public = public_from_private(&private);
        assert_eq!(
            hex::encode(public),
            "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
        );
    }

    #[test]
    fn generated_keys_are_clamped_and_roundtrip() {
        let k = generate_private();
        assert_eq!(k[0] & 7, 0);
        assert_eq!(k[31] & 0xc0, 0x40);
        assert_eq!(parse_key(&encode_key(&k)).unwrap(), k);
    }

    #[test]
    fn malformed_keys_rejected() {
        assert!(parse_key("abc").is_err());
        assert!(parse_key(&"A".repeat(44)).is_err());
        assert!(parse_key("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!=").is_err());
        // 33 bytes of base64 is not a key
        assert!(parse_key(&B64.encode([0u8; 33])).is_err());
    }

    #[test]
    fn key_file_created_once_with_mode_600() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/dir/k");
        assert!(create_private_key_file_if_absent(&p).unwrap());
        let k = read_private_key_file(&p).unwrap();
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dmode = fs::metadata(p.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dmode, 0o700);
        assert!(!create_private_key_file_if_absent(&p).unwrap());
        assert_eq!(read_private_key_file(&p).unwrap(), k);
        // Nothing but the key is left in the directory.
        assert_eq!(fs::read_dir(p.parent().unwrap()).unwrap().count(), 1);
    }

    /// An empty key file (a crash between create and write, as older versions could leave)
    /// is replaced by a key; the agent starts instead of refusing for good.
    #[test]
    fn empty_key_file_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&p)
            .unwrap();
        assert!(create_private_key_file_if_absent(&p).unwrap());
        read_private_key_file(&p).unwrap();
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn key_file_permissions_enforced() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        assert!(matches!(
            read_private_key_file(&p),
            Err(KeyError::Missing { .. })
        ));
        let k = generate_private();
        write_private_key_file(&p, &k).unwrap();
        assert_eq!(read_private_key_file(&p).unwrap(), k);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_private_key_file(&p).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(&p, "garbage\n").unwrap();
        assert!(matches!(
            read_private_key_file(&p),
            Err(KeyError::BadFile { .. })
        ));
    }
}
