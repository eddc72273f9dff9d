//! One agent per tunnel device and network namespace. A multi-queue TUN device lets a second
//! process attach more queues and an `SO_REUSEPORT` socket group lets it share the port, so
//! neither refuses a second agent any more: this lock does. It is an abstract unix socket
//! (`@sdn-tunnel/<device>`): abstract names belong to the network namespace, which is exactly
//! the scope of a device and a port, and the kernel frees the name when the process dies, so
//! a crash never leaves a stale lock behind.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Held for the agent's lifetime; dropping it releases the name.
#[derive(Debug)]
pub struct InstanceLock {
    _sock: UnixDatagram,
}

/// The abstract socket name for `device`.
pub fn lock_name(device: &str) -> String {
    format!("sdn-tunnel/{device}")
}

impl InstanceLock {
    /// Takes the lock for `device`, or says who to look for.
    pub fn acquire(device: &str) -> io::Result<InstanceLock> {
        let name = lock_name(device);
        let addr = SocketAddr::from_abstract_name(name.as_bytes())?;
        match UnixDatagram::bind_addr(&addr) {
            Ok(sock) => Ok(InstanceLock { _sock: sock }),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                // Abstract names have no permissions: say who holds it, in case it is not us.
                let who = holder(&name)
                    .map(|(pid, comm)| format!("{comm} (pid {pid})"))
                    .unwrap_or_else(|| "a process not visible here".into());
                Err(io::Error::new(
                    e.kind(),
                    format!(
                        "another sdn-tunnel agent already runs tunnel device {device} in this \
                         network namespace: {who} holds the abstract socket @{name}; stop it \
                         first, or give this one another tunnel.device and tunnel.listenPort"
                    ),
                ))
            }
            Err(e) => Err(e),
        }
    }
}

/// The process holding abstract unix socket `@name`, from `/proc/net/unix` (`Num RefCount
/// Protocol Flags Type St Inode Path`, abstract paths shown with a leading `@`).
fn holder(name: &str) -> Option<(u32, String)> {
    let text = std::fs::read_to_string("/proc/net/unix").ok()?;
    let want = format!("@{name}");
    let inode: u64 = text.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(7) == Some(&want.as_str())).then(|| f.get(6)?.parse().ok())?
    })?;
    crate::port_owner::socket_owners(&[inode]).remove(&inode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let device = format!("locktest{}", std::process::id());
        let first = InstanceLock::acquire(&device).unwrap();
        let err = InstanceLock::acquire(&device).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        assert!(
            err.to_string().contains("another sdn-tunnel agent"),
            "{err}"
        );
        // Another device in the same namespace is independent.
        let other = InstanceLock::acquire(&format!("{device}b")).unwrap();
        drop(first);
        let again = InstanceLock::acquire(&device).unwrap();
        drop((other, again));
    }
}
