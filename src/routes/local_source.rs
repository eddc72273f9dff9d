//! This node's own addresses, read over rtnetlink: the route `src` for host traffic (an
//! address inside this node's pod CIDRs) and the set of local addresses the reconciler checks
//! a `src` against.

use super::{RouteError, Routes};
use futures::TryStreamExt;
use ipnetwork::IpNetwork;
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressHeaderFlags};
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

struct LocalAddr {
    addr: IpAddr,
    secondary: bool,
    usable: bool,
}

impl Routes {
    /// A local address (assigned to any interface) inside one of `cidrs`, IPv4 and IPv6
    /// separately; used as route `src` so host-originated traffic to remote pods gets a source
    /// the remote side routes back. CIDRs are tried in order; primary addresses are preferred
    /// over secondary ones; IPv6 addresses that are tentative, deprecated or failed DAD are
    /// skipped (the kernel refuses tentative ones as route src).
    pub async fn find_local_source(
        &self,
        cidrs: &[IpNetwork],
    ) -> Result<(Option<Ipv4Addr>, Option<Ipv6Addr>), RouteError> {
        let addrs = self.local_address_details().await?;
        let mut v4 = None;
        let mut v6 = None;
        for secondary_ok in [false, true] {
            for cidr in cidrs {
                for a in &addrs {
                    if (a.secondary && !secondary_ok) || !a.usable || !cidr.contains(a.addr) {
                        continue;
                    }
                    match a.addr {
                        IpAddr::V4(x) if v4.is_none() => v4 = Some(x),
                        IpAddr::V6(x) if v6.is_none() => v6 = Some(x),
                        _ => {}
                    }
                }
            }
        }
        Ok((v4, v6))
    }

    pub(super) async fn local_addresses(&self) -> Result<BTreeSet<IpAddr>, RouteError> {
        Ok(self
            .local_address_details()
            .await?
            .into_iter()
            .filter(|a| a.usable)
            .map(|a| a.addr)
            .collect())
    }

    async fn local_address_details(&self) -> Result<Vec<LocalAddr>, RouteError> {
        let mut out = Vec::new();
        let mut stream = self.handle.address().get().execute();
        while let Some(msg) = stream.try_next().await.map_err(|source| RouteError::Dump {
            what: "list local addresses",
            source: Box::new(source),
        })? {
            let mut local = None;
            let mut address = None;
            let mut flags = AddressFlags::from_bits_retain(u32::from(msg.header.flags.bits()));
            for attr in &msg.attributes {
                match attr {
                    AddressAttribute::Local(a) => local = Some(*a),
                    AddressAttribute::Address(a) => address = Some(*a),
                    AddressAttribute::Flags(f) => flags = *f,
                    _ => {}
                }
            }
            // IFA_LOCAL is the local address; IFA_ADDRESS is the peer on point-to-point links.
            let Some(addr) = local.or(address) else {
                continue;
            };
            let usable = !(addr.is_ipv6()
                && flags.intersects(
                    AddressFlags::Tentative | AddressFlags::Dadfailed | AddressFlags::Deprecated,
                ));
            out.push(LocalAddr {
                addr,
                secondary: msg.header.flags.contains(AddressHeaderFlags::Secondary)
                    || flags.contains(AddressFlags::Secondary),
                usable,
            });
        }
        Ok(out)
    }
}
