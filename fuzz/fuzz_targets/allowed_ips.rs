//! The device's crypto-key routing table (`tunnel::allowed_ips::AllowedIps`, what
//! `PeerSet::route` looks up for every outgoing packet) against a naive model: a Vec of
//! (network, value) with a linear longest-prefix match, where inserting an equal network
//! replaces its value (last claim wins, as in WireGuard).
//!
//! Input: a sequence of inserts and lookups, IPv4 and IPv6. Addresses are drawn near a few
//! bases so that networks nest and collide often.
#![no_main]

use arbitrary::Arbitrary;
use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use libfuzzer_sys::fuzz_target;
use sdn_tunnel::tunnel::allowed_ips::AllowedIps;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

#[derive(Arbitrary, Debug)]
enum Addr {
    /// Near 10.132.0.0 (the low 16 bits free) or fully arbitrary.
    V4Near(u16),
    V4(u32),
    /// Near fd00:132:: (the low 32 bits free), v4-mapped, or fully arbitrary.
    V6Near(u32),
    V6Mapped(u32),
    V6(u128),
}

impl Addr {
    fn ip(&self) -> IpAddr {
        match *self {
            Addr::V4Near(x) => IpAddr::V4(Ipv4Addr::from(0x0a84_0000 | u32::from(x))),
            Addr::V4(x) => IpAddr::V4(Ipv4Addr::from(x)),
            Addr::V6Near(x) => IpAddr::V6(Ipv6Addr::from((0xfd00_0132u128 << 96) | u128::from(x))),
            Addr::V6Mapped(x) => IpAddr::V6(Ipv4Addr::from(x).to_ipv6_mapped()),
            Addr::V6(x) => IpAddr::V6(Ipv6Addr::from(x)),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    Insert { addr: Addr, prefix: u8, value: u8 },
    Lookup(Addr),
}

fn net(ip: IpAddr, prefix: u8) -> IpNetwork {
    match ip {
        // Host bits may be set: the table must mask them (ipnetwork keeps them).
        IpAddr::V4(a) => IpNetwork::V4(Ipv4Network::new(a, prefix % 33).unwrap()),
        IpAddr::V6(a) => IpNetwork::V6(Ipv6Network::new(a, prefix % 129).unwrap()),
    }
}

/// Linear longest-prefix match; the latest insert of an equal network wins.
fn model_lookup(model: &[(IpNetwork, u8)], ip: IpAddr) -> Option<u8> {
    let mut best: Option<(u8, u8)> = None;
    for (n, v) in model {
        if n.is_ipv4() != ip.is_ipv4() || !n.contains(ip) {
            continue;
        }
        if best.is_none_or(|(len, _)| n.prefix() >= len) {
            best = Some((n.prefix(), *v));
        }
    }
    best.map(|(_, v)| v)
}

fuzz_target!(|ops: Vec<Op>| {
    let mut table = AllowedIps::default();
    let mut model: Vec<(IpNetwork, u8)> = Vec::new();
    for op in ops.iter().take(512) {
        match op {
            Op::Insert {
                addr,
                prefix,
                value,
            } => {
                let n = net(addr.ip(), *prefix);
                table.insert(n, *value);
                model.push((n, *value));
            }
            Op::Lookup(addr) => {
                let ip = addr.ip();
                assert_eq!(
                    table.lookup(ip).copied(),
                    model_lookup(&model, ip),
                    "lookup {ip} in {model:?}"
                );
            }
        }
    }
    // Every inserted network's first and last address find the model's answer too.
    for (n, _) in &model {
        for ip in [n.network(), n.broadcast()] {
            assert_eq!(table.lookup(ip).copied(), model_lookup(&model, ip));
        }
    }
});
