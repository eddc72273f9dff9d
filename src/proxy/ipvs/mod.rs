//! Kernel IPVS over generic netlink: a small codec and a typed client.
//!
//! No maintained crate speaks this family, so this module does, on top of the netlink stack
//! rtnetlink already brings in (netlink-packet-core 0.9, netlink-packet-generic 0.5,
//! netlink-sys 0.9). Reference: include/uapi/linux/ip_vs.h and
//! net/netfilter/ipvs/ip_vs_ctl.c (the kernel side), libipvs (ipvsadm), moby/ipvs.
//!
//! - [`types`]: `Service`, `Destination`, `Stats`, `Info`, `Timeouts`, protocol, scheduler,
//!   flags, forwarding method.
//! - [`codec`]: the IPVS attributes and messages (`IpvsMessage`), encode and decode.
//! - [`netlink`]: nlmsghdr framing, ACK/NACK/extended-ACK and dump parsing (sans I/O).
//! - [`client`]: [`IpvsClient`] (blocking, one socket, pipelined batches) and
//!   [`AsyncIpvsClient`] (tokio).
//!
//! ```no_run
//! use sdn_tunnel::proxy::ipvs::*;
//! # fn main() -> Result<(), IpvsError> {
//! let mut ipvs = IpvsClient::new()?;
//! let svc = Service::new(ServiceKey::tcp("10.101.0.10:80".parse().unwrap()), Scheduler::RoundRobin);
//! ipvs.add_service(&svc)?;
//! ipvs.add_destination(&svc, &Destination::new("10.132.3.7:8080".parse().unwrap(), 1))?;
//! for s in ipvs.services()? {
//!     println!("{} {} {:?}", s.key, s.scheduler, ipvs.destinations(&s)?);
//! }
//! # Ok(()) }
//! ```

pub mod client;
pub mod codec;
pub mod consts;
pub mod error;
pub mod netlink;
pub mod types;

#[cfg(test)]
mod tests;

pub use client::{AsyncIpvsClient, IpvsClient, Request, PIPELINE_DEPTH};
pub use error::{CodecError, IpvsError, OpKind};
pub use types::{
    Destination, ForwardMethod, Info, Protocol, Scheduler, Service, ServiceFlags, ServiceKey,
    Stats, Timeouts, TunnelConfig,
};
