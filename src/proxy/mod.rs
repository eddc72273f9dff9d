//! Service proxy backends: remote ClusterIPs become local virtual servers that load-balance
//! onto remote pod IPs before the traffic enters the tunnel.
//!
//! - [`ipvs`]: a small, tested codec and client for the kernel's IPVS generic-netlink family.

pub mod backend;
pub mod ipvs;
pub mod ipvs_backend;
pub mod ipvs_plan;
pub mod ipvs_text;
pub mod model;
pub mod nft_backend;
pub mod vip_device;
