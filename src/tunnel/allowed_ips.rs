//! Crypto-key routing table: longest-prefix match from an inner IP address to a peer. One hash
//! map per prefix length present, probed from the longest; a lookup costs at most as many probes
//! as there are distinct prefix lengths (typically 1-3).

use ipnetwork::IpNetwork;
use std::collections::HashMap;
use std::net::IpAddr;

pub struct AllowedIps<T> {
    v4: Vec<(u8, HashMap<u32, T>)>,
    v6: Vec<(u8, HashMap<u128, T>)>,
}

impl<T> Default for AllowedIps<T> {
    fn default() -> Self {
        AllowedIps {
            v4: Vec::new(),
            v6: Vec::new(),
        }
    }
}

fn mask4(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - len)
    }
}
fn mask6(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - len)
    }
}

fn bucket<K, T>(tables: &mut Vec<(u8, HashMap<K, T>)>, len: u8) -> &mut HashMap<K, T> {
    let pos = match tables.iter().position(|(l, _)| *l <= len) {
        Some(p) if tables[p].0 == len => p,
        Some(p) => {
            tables.insert(p, (len, HashMap::new()));
            p
        }
        None => {
            tables.push((len, HashMap::new()));
            tables.len() - 1
        }
    };
    &mut tables[pos].1
}

impl<T> AllowedIps<T> {
    /// Inserts `net -> value`; an equal prefix already present is replaced (last one wins, as
    /// in WireGuard, where an allowed IP moves to the peer that last claimed it).
    pub fn insert(&mut self, net: IpNetwork, value: T) {
        match net {
            IpNetwork::V4(n) => {
                let len = n.prefix();
                let key = u32::from(n.network()) & mask4(len);
                bucket(&mut self.v4, len).insert(key, value);
            }
            IpNetwork::V6(n) => {
                let len = n.prefix();
                let key = u128::from(n.network()) & mask6(len);
                bucket(&mut self.v6, len).insert(key, value);
            }
        }
    }

    pub fn lookup(&self, ip: IpAddr) -> Option<&T> {
        match ip {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                self.v4
                    .iter()
                    .find_map(|(len, m)| m.get(&(a & mask4(*len))))
            }
            IpAddr::V6(a) => {
                let a = u128::from(a);
                self.v6
                    .iter()
                    .find_map(|(len, m)| m.get(&(a & mask6(*len))))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn longest_prefix_wins() {
        let mut t = AllowedIps::default();
        t.insert(net("10.0.0.0/8"), 1);
        t.insert(net("10.132.0.0/24"), 2);
        t.insert(net("10.132.0.128/25"), 3);
        t.insert(net("0.0.0.0/0"), 9);
        assert_eq!(t.lookup(ip("10.132.0.5")), Some(&2));
        assert_eq!(t.lookup(ip("10.132.0.200")), Some(&3));
        assert_eq!(t.lookup(ip("10.1.2.3")), Some(&1));
        assert_eq!(t.lookup(ip("192.168.1.1")), Some(&9));
        assert_eq!(t.lookup(ip("fd00::1")), None);
    }

    #[test]
    fn ipv6_and_replacement() {
        let mut t = AllowedIps::default();
        t.insert(net("fd00:132::/64"), 1);
        t.insert(net("fd00:132::/48"), 2);
        t.insert(net("fd00:132::/64"), 3);
        assert_eq!(t.lookup(ip("fd00:132::7")), Some(&3));
        assert_eq!(t.lookup(ip("fd00:132:0:1::7")), Some(&2));
        assert_eq!(t.lookup(ip("fd00:133::1")), None);
        assert_eq!(t.lookup(ip("10.0.0.1")), None);
    }

    #[test]
    fn host_routes() {
        let mut t = AllowedIps::default();
        t.insert(net("10.0.0.1/32"), 1);
        t.insert(net("::1/128"), 2);
        assert_eq!(t.lookup(ip("10.0.0.1")), Some(&1));
        assert_eq!(t.lookup(ip("10.0.0.2")), None);
        assert_eq!(t.lookup(ip("::1")), Some(&2));
    }
}
