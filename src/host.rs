//! Host sysctls, read and written through `/proc/sys` (per network namespace: the values seen
//! are those of the calling thread's namespace).

use std::io;
use std::path::{Path, PathBuf};

const PROC_SYS: &str = "/proc/sys";

/// Turns on IPv4 forwarding (`net.ipv4.ip_forward=1`) and, only when `ipv6` (some pod/service
/// CIDR is IPv6) and the host has IPv6, IPv6 forwarding (`net.ipv6.conf.all.forwarding=1`).
/// Returns true if it changed anything.
///
/// IPv6 forwarding is not switched on needlessly: with `net.ipv6.conf.<dev>.accept_ra=1` (the
/// default) the kernel stops accepting router advertisements once forwarding is on, and hosts
/// that get their IPv6 default route from RAs would lose it (they need `accept_ra=2`).
pub fn enable_ip_forward(ipv6: bool) -> io::Result<bool> {
    enable_ip_forward_in(Path::new(PROC_SYS), ipv6)
}

fn enable_ip_forward_in(root: &Path, ipv6: bool) -> io::Result<bool> {
    let mut changed = false;
    for (path, optional) in [
        ("net/ipv4/ip_forward", false),
        ("net/ipv6/conf/all/forwarding", true),
    ] {
        if optional && !ipv6 {
            continue;
        }
        let file = root.join(path);
        if optional && !file.exists() {
            continue;
        }
        if set_if_different(&file, "1")? {
            tracing::info!(sysctl = %path.replace('/', "."), value = 1, "sysctl changed");
            changed = true;
        }
    }
    Ok(changed)
}

/// Sets `net.ipv4.conf.<device>.rp_filter=2` (loose reverse-path filtering) so packets from
/// remote pods arriving on the tunnel device are not dropped by a strict rp_filter.
///
/// The kernel uses `max(conf.all.rp_filter, conf.<device>.rp_filter)`, so 2 on the device makes
/// it loose whatever `all` says (and never makes another device less strict).
pub fn set_rp_filter_loose(device: &str) -> io::Result<()> {
    set_rp_filter_loose_in(Path::new(PROC_SYS), device)
}

fn set_rp_filter_loose_in(root: &Path, device: &str) -> io::Result<()> {
    check_device_name(device)?;
    let file = root.join("net/ipv4/conf").join(device).join("rp_filter");
    if set_if_different(&file, "2")? {
        tracing::debug!(device, "rp_filter set to 2 (loose)");
    }
    Ok(())
}

/// Turns IPv6 off on our tunnel device when no configured CIDR is IPv6: otherwise the kernel
/// sends router solicitations and MLD reports into the tunnel, which match no peer and would
/// show up as `no-peer` drops. Does nothing if the host has no IPv6.
pub fn disable_ipv6_on(device: &str) -> io::Result<()> {
    disable_ipv6_on_in(Path::new(PROC_SYS), device)
}

fn disable_ipv6_on_in(root: &Path, device: &str) -> io::Result<()> {
    check_device_name(device)?;
    let file = root.join("net/ipv6/conf").join(device).join("disable_ipv6");
    if file.exists() {
        set_if_different(&file, "1")?;
    }
    Ok(())
}

/// Reads a sysctl, trimmed. `path` is either relative to `/proc/sys` with slashes
/// (`net/ipv4/conf/eth0.100/rp_filter`; use this form when a component contains a dot) or in
/// dotted sysctl form (`net.ipv4.ip_forward`); an absolute `/proc/sys/...` path also works.
pub fn read_sysctl(path: &str) -> io::Result<String> {
    let file = sysctl_path(Path::new(PROC_SYS), path)?;
    Ok(std::fs::read_to_string(&file)
        .map_err(|e| with_path(e, &file))?
        .trim()
        .to_string())
}

/// Writes a sysctl (same path forms as [`read_sysctl`]) if it differs; true if it changed.
pub fn write_sysctl(path: &str, value: &str) -> io::Result<bool> {
    let file = sysctl_path(Path::new(PROC_SYS), path)?;
    set_if_different(&file, value)
}

fn sysctl_path(root: &Path, path: &str) -> io::Result<PathBuf> {
    let rel = if let Some(rest) = path.strip_prefix("/proc/sys/") {
        rest.to_string()
    } else if path.contains('/') {
        path.trim_start_matches('/').to_string()
    } else {
        path.replace('.', "/")
    };
    if rel.is_empty() || rel.split('/').any(|c| c.is_empty() || c == "..") {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid sysctl name {path:?}"),
        ));
    }
    Ok(root.join(rel))
}

/// Writes `value` unless the file already holds it; true if it wrote.
fn set_if_different(file: &Path, value: &str) -> io::Result<bool> {
    let current = std::fs::read_to_string(file).map_err(|e| with_path(e, file))?;
    if current.trim() == value {
        return Ok(false);
    }
    std::fs::write(file, value).map_err(|e| with_path(e, file))?;
    Ok(true)
}

fn check_device_name(device: &str) -> io::Result<()> {
    if device.is_empty()
        || device.len() >= libc::IFNAMSIZ
        || device == "."
        || device == ".."
        || device.contains(['/', '\0'])
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid network device name {device:?}"),
        ));
    }
    Ok(())
}

fn with_path(e: io::Error, file: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", file.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn fake_proc(v4: &str, v6: Option<&str>) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("net/ipv4/conf/sdn0")).unwrap();
        fs::write(dir.path().join("net/ipv4/ip_forward"), v4).unwrap();
        fs::write(dir.path().join("net/ipv4/conf/sdn0/rp_filter"), "1\n").unwrap();
        if let Some(v6) = v6 {
            fs::create_dir_all(dir.path().join("net/ipv6/conf/all")).unwrap();
            fs::write(dir.path().join("net/ipv6/conf/all/forwarding"), v6).unwrap();
        }
        dir
    }

    fn read(dir: &tempfile::TempDir, p: &str) -> String {
        fs::read_to_string(dir.path().join(p))
            .unwrap()
            .trim()
            .to_string()
    }

    #[test]
    fn ip_forward_is_enabled_once() {
        let dir = fake_proc("0\n", Some("0\n"));
        assert!(enable_ip_forward_in(dir.path(), true).unwrap());
        assert_eq!(read(&dir, "net/ipv4/ip_forward"), "1");
        assert_eq!(read(&dir, "net/ipv6/conf/all/forwarding"), "1");
        assert!(!enable_ip_forward_in(dir.path(), true).unwrap());
    }

    #[test]
    fn ipv6_forwarding_left_alone_without_ipv6_cidrs() {
        let dir = fake_proc("0\n", Some("0\n"));
        assert!(enable_ip_forward_in(dir.path(), false).unwrap());
        assert_eq!(read(&dir, "net/ipv4/ip_forward"), "1");
        assert_eq!(read(&dir, "net/ipv6/conf/all/forwarding"), "0");
    }

    #[test]
    fn ip_forward_without_ipv6() {
        let dir = fake_proc("1\n", None);
        assert!(!enable_ip_forward_in(dir.path(), true).unwrap());
        let dir = fake_proc("0\n", None);
        assert!(enable_ip_forward_in(dir.path(), true).unwrap());
        assert!(!dir.path().join("net/ipv6").exists());
    }

    #[test]
    fn ipv6_disabled_on_device_only_if_present() {
        let dir = fake_proc("1", Some("1"));
        disable_ipv6_on_in(dir.path(), "sdn0").unwrap(); // no conf/sdn0: nothing to do
        fs::create_dir_all(dir.path().join("net/ipv6/conf/sdn0")).unwrap();
        fs::write(dir.path().join("net/ipv6/conf/sdn0/disable_ipv6"), "0\n").unwrap();
        disable_ipv6_on_in(dir.path(), "sdn0").unwrap();
        assert_eq!(read(&dir, "net/ipv6/conf/sdn0/disable_ipv6"), "1");
        assert!(disable_ipv6_on_in(dir.path(), "../x").is_err());
    }

    #[test]
    fn rp_filter_loose() {
        let dir = fake_proc("1", None);
        set_rp_filter_loose_in(dir.path(), "sdn0").unwrap();
        assert_eq!(read(&dir, "net/ipv4/conf/sdn0/rp_filter"), "2");
        let err = set_rp_filter_loose_in(dir.path(), "missing0").unwrap_err();
        assert!(err.to_string().contains("missing0"), "{err}");
        for bad in ["", "..", "a/b", "waytoolongdevicename"] {
            assert_eq!(
                set_rp_filter_loose_in(dir.path(), bad).unwrap_err().kind(),
                io::ErrorKind::InvalidInput
            );
        }
    }

    #[test]
    fn sysctl_names() {
        let root = Path::new("/r");
        assert_eq!(
            sysctl_path(root, "net.ipv4.ip_forward").unwrap(),
            Path::new("/r/net/ipv4/ip_forward")
        );
        assert_eq!(
            sysctl_path(root, "net/ipv4/conf/eth0.100/rp_filter").unwrap(),
            Path::new("/r/net/ipv4/conf/eth0.100/rp_filter")
        );
        assert_eq!(
            sysctl_path(root, "/proc/sys/net/ipv4/ip_forward").unwrap(),
            Path::new("/r/net/ipv4/ip_forward")
        );
        assert!(sysctl_path(root, "net/../../etc/passwd").is_err());
        assert!(sysctl_path(root, "").is_err());
    }

    #[test]
    fn read_real_sysctl() {
        // Present on every Linux host with /proc mounted.
        if Path::new("/proc/sys/net/ipv4/ip_forward").exists() {
            let v = read_sysctl("net.ipv4.ip_forward").unwrap();
            assert!(v == "0" || v == "1", "{v}");
        }
    }
}
