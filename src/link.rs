//! Link (network device) operations over rtnetlink: look a device up, bring it up with an MTU,
//! delete it. Only ever called on devices we own (the tunnel device); callers check that.

use futures::TryStreamExt;
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkInfo as NlLinkInfo, LinkMessage};
use rtnetlink::LinkUnspec;

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("open an rtnetlink socket: {0}")]
    Connect(#[source] std::io::Error),
    #[error("network device {0:?} does not exist")]
    NotFound(String),
    #[error("{op} network device {name:?}: {}", describe(.source))]
    Netlink {
        op: &'static str,
        name: String,
        #[source]
        source: Box<rtnetlink::Error>,
    },
}

/// What we need to know about a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    pub name: String,
    pub index: u32,
    pub mtu: u32,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// `IFLA_INFO_KIND` ("tun", "dummy", "veth", ...); `None` for devices without one (e.g. `lo`,
    /// most physical NICs).
    pub kind: Option<String>,
}

/// Opens an rtnetlink connection and spawns its driver on the current tokio runtime.
///
/// Panics (inside `tokio::spawn`) if called outside a tokio runtime.
pub fn connect() -> Result<rtnetlink::Handle, LinkError> {
    let (conn, handle, _) = rtnetlink::new_connection().map_err(LinkError::Connect)?;
    tokio::spawn(conn);
    Ok(handle)
}

/// Looks a device up by name; `Ok(None)` if there is no such device.
pub async fn get(handle: &rtnetlink::Handle, name: &str) -> Result<Option<LinkInfo>, LinkError> {
    // The kernel rejects names that cannot exist (empty, too long) with EINVAL; that is simply
    // "not there" for our purposes.
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Ok(None);
    }
    let mut stream = handle.link().get().match_name(name).execute();
    match stream.try_next().await {
        Ok(Some(msg)) => Ok(Some(link_info(&msg))),
        Ok(None) => Ok(None),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(source) => Err(LinkError::Netlink {
            op: "look up",
            name: name.to_string(),
            source: Box::new(source),
        }),
    }
}

/// Sets the MTU and brings the device up (`ip link set <name> mtu <mtu> up`). Does nothing if it
/// already is up with that MTU.
pub async fn set_up_with_mtu(
    handle: &rtnetlink::Handle,
    name: &str,
    mtu: u32,
) -> Result<(), LinkError> {
    let info = get(handle, name)
        .await?
        .ok_or_else(|| LinkError::NotFound(name.to_string()))?;
    if info.up && info.mtu == mtu {
        return Ok(());
    }
    let msg = LinkUnspec::new_with_index(info.index).mtu(mtu).up().build();
    handle
        .link()
        .change(msg)
        .execute()
        .await
        .map_err(|source| LinkError::Netlink {
            op: "set mtu/up on",
            name: name.to_string(),
            source: Box::new(source),
        })
}

/// Deletes the device; `Ok(false)` if it did not exist. Callers must make sure it is ours.
pub async fn delete(handle: &rtnetlink::Handle, name: &str) -> Result<bool, LinkError> {
    let Some(info) = get(handle, name).await? else {
        return Ok(false);
    };
    match handle.link().del(info.index).execute().await {
        Ok(()) => Ok(true),
        // Gone between the lookup and the delete (e.g. its owning fd closed).
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(false),
        Err(source) => Err(LinkError::Netlink {
            op: "delete",
            name: name.to_string(),
            source: Box::new(source),
        }),
    }
}

/// Index -> name of all devices (one dump).
pub(crate) async fn index_names(
    handle: &rtnetlink::Handle,
) -> Result<std::collections::HashMap<u32, String>, rtnetlink::Error> {
    let mut out = std::collections::HashMap::new();
    let mut stream = handle.link().get().execute();
    while let Some(msg) = stream.try_next().await? {
        let info = link_info(&msg);
        out.insert(info.index, info.name);
    }
    Ok(out)
}

pub(crate) fn link_info(msg: &LinkMessage) -> LinkInfo {
    let mut info = LinkInfo {
        name: String::new(),
        index: msg.header.index,
        mtu: 0,
        up: msg.header.flags.contains(LinkFlags::Up),
        kind: None,
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => info.name = n.clone(),
            LinkAttribute::Mtu(m) => info.mtu = *m,
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let NlLinkInfo::Kind(k) = i {
                        info.kind = Some(k.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    info
}

/// The (positive) errno of a netlink error reply, if that is what `e` is.
pub(crate) fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| c.get().abs()),
        _ => None,
    }
}

/// A short human description of an rtnetlink error: "File exists (errno 17, EEXIST)" for kernel
/// replies, the library's message otherwise.
pub(crate) fn describe(e: &rtnetlink::Error) -> String {
    match errno(e) {
        Some(n) => {
            let text = std::io::Error::from_raw_os_error(n).to_string();
            // std appends " (os error N)"; we print our own errno label instead.
            let text = text
                .strip_suffix(&format!(" (os error {n})"))
                .unwrap_or(&text)
                .to_string();
            match errno_name(n) {
                Some(name) => format!("{text} (errno {n}, {name})"),
                None => format!("{text} (errno {n})"),
            }
        }
        None => e.to_string(),
    }
}

fn errno_name(n: i32) -> Option<&'static str> {
    Some(match n {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EEXIST => "EEXIST",
        libc::ENODEV => "ENODEV",
        libc::EINVAL => "EINVAL",
        libc::ENETDOWN => "ENETDOWN",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::EADDRNOTAVAIL => "EADDRNOTAVAIL",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EAFNOSUPPORT => "EAFNOSUPPORT",
        libc::EBUSY => "EBUSY",
        libc::ENOBUFS => "ENOBUFS",
        libc::EACCES => "EACCES",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_kernel_errors_with_errno() {
        let msg = {
            let mut m = rtnetlink::packet_core::ErrorMessage::default();
            m.code = std::num::NonZeroI32::new(-libc::EEXIST);
            m
        };
        let d = describe(&rtnetlink::Error::NetlinkError(msg));
        assert!(d.contains("File exists"), "{d}");
        assert!(d.contains("errno 17, EEXIST"), "{d}");
        assert!(!d.contains("os error"), "{d}");
    }

    #[test]
    fn errno_only_for_kernel_replies() {
        assert_eq!(errno(&rtnetlink::Error::RequestFailed), None);
    }
}
