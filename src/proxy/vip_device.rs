//! The dummy device that holds remote ClusterIPs as local /32 (/128) addresses, so IPVS (which
//! hooks local input) sees connections to them. Only the device named in the config is
//! touched, and only addresses inside remote service CIDRs are removed from it.

use crate::link;
use futures::TryStreamExt;
use ipnetwork::IpNetwork;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::{Handle, LinkDummy};
use std::collections::BTreeSet;
use std::net::IpAddr;

#[derive(Debug, thiserror::Error)]
#[error("{op} {what}: {source}")]
pub struct VipError {
    op: &'static str,
    what: String,
    source: Box<dyn std::error::Error + Send + Sync>,
}

fn err(op: &'static str, what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> VipError {
    let what = what.into();
    move |e| VipError {
        op,
        what,
        source: Box::new(e),
    }
}

/// Creates the dummy device if missing and brings it up; returns its index.
pub async fn ensure(handle: &Handle, name: &str) -> Result<u32, VipError> {
    let lookup = |e: link::LinkError| VipError {
        op: "look up",
        what: name.to_string(),
        source: Box::new(e),
    };
    if link::get(handle, name).await.map_err(lookup)?.is_none() {
        handle
            .link()
            .add(LinkDummy::new(name).up().build())
            .execute()
            .await
            .map_err(err("create dummy device", name))?;
    }
    let info = link::get(handle, name)
        .await
        .map_err(lookup)?
        .ok_or_else(|| VipError {
            op: "find",
            what: name.to_string(),
            source: "device vanished after creation".into(),
        })?;
    if !info.up {
        link::set_up_with_mtu(handle, name, info.mtu)
            .await
            .map_err(|e| VipError {
                op: "bring up",
                what: name.to_string(),
                source: Box::new(e),
            })?;
    }
    Ok(info.index)
}

/// The addresses on the device, with their messages (for deletion).
async fn addresses(handle: &Handle, index: u32) -> Result<Vec<(IpAddr, AddressMessage)>, VipError> {
    let mut out = Vec::new();
    let mut s = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute();
    while let Some(m) = s
        .try_next()
        .await
        .map_err(err("list addresses of", index.to_string()))?
    {
        let ip = m.attributes.iter().find_map(|a| match a {
            AddressAttribute::Local(a) | AddressAttribute::Address(a) => Some(*a),
            _ => None,
        });
        if let Some(ip) = ip {
            out.push((ip, m));
        }
    }
    Ok(out)
}

/// Makes the device hold exactly `vips` among addresses inside `owned` (remote service
/// CIDRs), leaving those inside `protected` (unsynced remotes) alone. Returns (added, removed).
pub async fn reconcile(
    handle: &Handle,
    index: u32,
    vips: &BTreeSet<IpAddr>,
    owned: &[IpNetwork],
    protected: &[IpNetwork],
) -> Result<(usize, usize), VipError> {
    let have = addresses(handle, index).await?;
    let mut removed = 0;
    for (ip, msg) in &have {
        let in_any = |nets: &[IpNetwork]| nets.iter().any(|n| n.contains(*ip));
        if in_any(owned) && !in_any(protected) && !vips.contains(ip) {
            handle
                .address()
                .del(msg.clone())
                .execute()
                .await
                .map_err(err("remove address", ip.to_string()))?;
            removed += 1;
        }
    }
    let mut added = 0;
    for ip in vips {
        if have.iter().any(|(h, _)| h == ip) {
            continue;
        }
        let prefix = if ip.is_ipv4() { 32 } else { 128 };
        handle
            .address()
            .add(index, *ip, prefix)
            .execute()
            .await
            .map_err(err("add address", ip.to_string()))?;
        added += 1;
    }
    Ok((added, removed))
}
