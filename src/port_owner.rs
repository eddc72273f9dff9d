//! Who holds a UDP port: the sockets of `/proc/net/udp[6]` bound to it, and the processes whose
//! file descriptors point at them. A socket that no visible process owns belongs to the kernel
//! (a kernel WireGuard device, such as Calico's, flannel's or Kilo's) or to a process in
//! another PID namespace (the agent's container sees only its own processes).

use std::collections::HashMap;
use std::fmt;

/// One socket bound to the port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The owning process, if one is visible: (pid, command name).
    pub process: Option<(u32, String)>,
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.process {
            Some((pid, comm)) => write!(f, "{comm} (pid {pid})"),
            None => write!(
                f,
                "no visible process (a kernel WireGuard device? `ip -d link show type wireguard`; \
                 or a process in another PID namespace)"
            ),
        }
    }
}

/// The holders of UDP `port` in this network namespace (both families).
pub fn udp_port_holders(port: u16) -> std::io::Result<Vec<Holder>> {
    let mut inodes = Vec::new();
    for (path, required) in [("/proc/net/udp", true), ("/proc/net/udp6", false)] {
        match std::fs::read_to_string(path) {
            Ok(text) => inodes.extend(
                parse_proc_net_udp(&text)
                    .into_iter()
                    .filter(|s| s.port == port)
                    .map(|s| s.inode),
            ),
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    let owners = socket_owners(&inodes);
    Ok(inodes
        .iter()
        .map(|i| Holder {
            process: owners.get(i).cloned(),
        })
        .collect())
}

/// "wireguard-go (pid 812), ..." for a message.
pub fn describe(holders: &[Holder]) -> String {
    let v: Vec<String> = holders.iter().map(|h| h.to_string()).collect();
    v.join(", ")
}

/// A line of `/proc/net/udp[6]`: local port and socket inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpSocket {
    pub port: u16,
    pub inode: u64,
}

/// `sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode`,
/// the address as `HEX:PORTHEX`. Lines that do not parse are skipped.
pub fn parse_proc_net_udp(text: &str) -> Vec<UdpSocket> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (_, port) = f.get(1)?.rsplit_once(':')?;
            Some(UdpSocket {
                port: u16::from_str_radix(port, 16).ok()?,
                inode: f.get(9)?.parse().ok()?,
            })
        })
        .collect()
}

/// inode -> (pid, comm) for the sockets among `inodes` that a visible process holds open.
pub(crate) fn socket_owners(inodes: &[u64]) -> HashMap<u64, (u32, String)> {
    let mut out = HashMap::new();
    if inodes.iter().all(|&i| i == 0) {
        return out;
    }
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let Some(inode) = socket_inode(&target.to_string_lossy()) else {
                continue;
            };
            if inodes.contains(&inode) && !out.contains_key(&inode) {
                let comm = std::fs::read_to_string(p.path().join("comm"))
                    .map(|c| c.trim().to_string())
                    .unwrap_or_else(|_| "?".into());
                out.insert(inode, (pid, comm));
            }
        }
    }
    out
}

/// The inode of a `socket:[12345]` link target.
fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_net_udp() {
        let text = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
                    \x20 123: 00000000:CA6E 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4242 2 0000000000000000 0\n\
                    \x20 124: 0100007F:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000   101        0 0 2 0000000000000000 0\n\
                    garbage\n";
        assert_eq!(
            parse_proc_net_udp(text),
            vec![
                UdpSocket {
                    port: 51822,
                    inode: 4242
                },
                UdpSocket { port: 53, inode: 0 }
            ]
        );
        let v6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
                  \x20  3: 00000000000000000000000000000000:CA6C 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 777 2 0000000000000000 0\n";
        assert_eq!(
            parse_proc_net_udp(v6),
            vec![UdpSocket {
                port: 51820,
                inode: 777
            }]
        );
        assert!(parse_proc_net_udp("header only\n").is_empty());
        assert_eq!(socket_inode("socket:[99]"), Some(99));
        assert_eq!(socket_inode("pipe:[99]"), None);
    }

    #[test]
    fn finds_this_process_holding_a_port() {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = s.local_addr().unwrap().port();
        let h = udp_port_holders(port).unwrap();
        assert_eq!(h.len(), 1, "{h:?}");
        let (pid, _) = h[0].process.clone().expect("our own socket has an owner");
        assert_eq!(pid, std::process::id());
        assert!(describe(&h).contains(&format!("(pid {pid})")));
    }
}
