//! The dummy device that holds remote ClusterIPs as local /32 (/128) addresses, so IPVS (which
//! hooks local input) sees connections to them. Only the device named in the config is
//! touched, and only addresses inside remote service CIDRs are removed from it.

use crate::link;
use futures::TryStreamExt;
use ipnetwork::IpNetwork;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::{Handle, LinkDummy};
use std::collections::{BTreeSet, HashSet};
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

/// Address requests in flight at once: one awaited round trip per VIP made 10k services take
/// seconds; the kernel handles a window of them as fast as one.
const IN_FLIGHT: usize = 64;

/// Makes the device hold exactly `vips` among addresses inside `owned` (remote service
/// CIDRs), leaving those inside `protected` (unsynced remotes) alone. Returns (added, removed).
pub async fn reconcile(
    handle: &Handle,
    index: u32,
    vips: &BTreeSet<IpAddr>,
    owned: &[IpNetwork],
    protected: &[IpNetwork],
) -> Result<(usize, usize), VipError> {
    use futures::stream::{self, StreamExt};
    let have = addresses(handle, index).await?;
    let present: HashSet<IpAddr> = have.iter().map(|(ip, _)| *ip).collect();
    let in_any = |nets: &[IpNetwork], ip: &IpAddr| nets.iter().any(|n| n.contains(*ip));
    let stale: Vec<(IpAddr, AddressMessage)> = have
        .into_iter()
        .filter(|(ip, _)| in_any(owned, ip) && !in_any(protected, ip) && !vips.contains(ip))
        .collect();
    let removed = stale.len();
    let results: Vec<Result<(), VipError>> = stream::iter(stale)
        .map(|(ip, msg)| async move {
            let res = handle.address().del(msg).execute().await;
            res.map_err(err("remove address", ip.to_string()))
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    results.into_iter().collect::<Result<(), _>>()?;
    let missing: Vec<IpAddr> = vips
        .iter()
        .filter(|ip| !present.contains(ip))
        .copied()
        .collect();
    let added = missing.len();
    let results: Vec<Result<(), VipError>> = stream::iter(missing)
        .map(|ip| async move {
            let prefix = if ip.is_ipv4() { 32 } else { 128 };
            let res = handle.address().add(index, ip, prefix).execute().await;
            res.map_err(err("add address", ip.to_string()))
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    results.into_iter().collect::<Result<(), _>>()?;
    Ok((added, removed))
}
