//! The userspace WireGuard device: boringtun's `noise::Tunn` per peer, driven by our own tokio
//! loop over a TUN device and a UDP socket.

pub mod allowed_ips;
pub mod counters;
pub mod device;
pub mod gro;
pub mod offload;
pub mod peer;
pub mod peer_set;
pub mod tun;
pub mod uapi;
pub mod udp;

pub use device::Device;
