//! Packet counters of the device loop, mostly drops by reason. Lock-free; read by status.

use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        #[derive(Default)]
        pub struct Counters { $($(#[$doc])* pub $name: AtomicU64,)* }

        #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        pub struct CountersSnapshot { $(#[serde(default)] pub $name: u64,)* }

        impl Counters {
            pub fn snapshot(&self) -> CountersSnapshot {
                CountersSnapshot { $($name: self.$name.load(Relaxed),)* }
            }
        }
    };
}

counters! {
    /// Inner packet whose destination matches no peer's AllowedIPs.
    dropped_no_peer,
    /// Peer known but without an endpoint yet.
    dropped_no_endpoint,
    /// Unparseable inner packet or UDP datagram (wrong size/type, bad MAC, failed decryption).
    dropped_bad_packet,
    /// Data packet with a counter already seen (replay) or too old.
    dropped_replay,
    /// Handshake refused by the rate limiter (cookie sent or under load).
    dropped_rate_limited,
    /// Datagram for an unknown receiver index or from an unknown public key.
    dropped_unknown_peer,
    /// Decrypted packet whose source is outside the sending peer's AllowedIPs.
    dropped_bad_source,
    /// Decrypted packet for an address outside this node's pod CIDRs (the node itself, a
    /// local ClusterIP, the underlay, another node's pods): a peer may reach only our pods.
    dropped_bad_destination,
    /// Packet entering the tunnel with a source outside this node's pod CIDRs.
    dropped_bad_source_out,
    /// Write to the TUN device failed.
    dropped_tun_write,
    /// UDP send failed.
    dropped_udp_send,
    handshakes_completed,
    rx_datagrams,
    tx_datagrams,
    /// TCP super-packets read from the device (TSO) and cut into segments by us.
    tso_superpackets,
    /// The segments they were cut into.
    tso_segments,
    /// UDP super-packets read from the device (USO, from `UDP_SEGMENT` senders), cut by us.
    uso_superpackets,
    /// The datagrams they were cut into.
    uso_segments,
    /// UDP messages sent with UDP_SEGMENT (several datagrams to one peer in one message).
    udp_gso_messages,
    /// UDP messages received coalesced (UDP_GRO: several datagrams of one sender).
    udp_gro_messages,
    /// TCP super-packets we joined from decrypted segments and wrote to the device at once.
    gro_superpackets,
    /// The segments they joined.
    gro_segments,
}

impl Counters {
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Relaxed);
    }
}
