//! The tunnel's rules, pure text: MSS clamping of TCP SYNs crossing the device, and the guards
//! that keep remote traffic from leaving any other way and new connections from entering.

use super::{valid_device_name, valid_table_name};

/// IPv4 (20) + TCP (20) headers.
const V4_OVERHEAD: u16 = 40;
/// IPv6 (40) + TCP (20) headers.
const V6_OVERHEAD: u16 = 60;

/// The complete ruleset for our table: replaces any previous version of it in one transaction
/// and touches no other table. Pure.
///
/// The `forward` chain clamps the MSS of TCP SYNs (SYN set, RST clear) leaving or entering
/// `device` to `mtu - 40` (IPv4) / `mtu - 60` (IPv6), only ever lowering it; the `output` chain
/// does the same for host-originated SYNs leaving via `device`.
///
/// `table` must be a plain identifier and `device` a plain interface name (see
/// [`valid_table_name`], [`valid_device_name`]); otherwise the text starts with a line nft
/// rejects, so [`apply`] fails with nft's message and changes nothing.
pub fn mss_clamp_ruleset(table: &str, device: &str, mtu: u16) -> String {
    let mss4 = mtu.saturating_sub(V4_OVERHEAD);
    let mss6 = mtu.saturating_sub(V6_OVERHEAD);
    let mut s = String::new();
    if !valid_table_name(table) || !valid_device_name(device) {
        s.push_str("sdn-tunnel-refuses-an-unsafe-table-or-device-name\n");
    }
    let clamp = |dir: &str, family: &str, mss: u16| {
        format!(
            "\t\tmeta nfproto {family} {dir} \"{device}\" tcp flags syn / syn,rst \
             tcp option maxseg size > {mss} tcp option maxseg size set {mss}\n"
        )
    };
    // Declaring the table first makes the delete valid when it does not exist yet (nft 1.0.6
    // has no `destroy`); all three commands are one atomic transaction.
    s.push_str(&format!(
        "table inet {table} {{}}\ndelete table inet {table}\ntable inet {table} {{\n"
    ));
    s.push_str("\tchain forward {\n\t\ttype filter hook forward priority mangle; policy accept;\n");
    for (family, mss) in [("ipv4", mss4), ("ipv6", mss6)] {
        s.push_str(&clamp("oifname", family, mss));
        s.push_str(&clamp("iifname", family, mss));
    }
    s.push_str("\t}\n");
    s.push_str("\tchain output {\n\t\ttype filter hook output priority mangle; policy accept;\n");
    for (family, mss) in [("ipv4", mss4), ("ipv6", mss6)] {
        s.push_str(&clamp("oifname", family, mss));
    }
    s.push_str("\t}\n}\n");
    s
}

/// Adds to a [`mss_clamp_ruleset`] the guards of the tunnel, which stay in place while the
/// agent is stopped (this table outlives it, like the persistent device):
/// - fail closed: a packet for a remote cluster's CIDR (`remote_cidrs`) that would leave by
///   any device but ours is dropped (forward and output), so it is never sent in plaintext,
///   whatever routing says (our device deleted, a more specific route, policy routing);
/// - a peer reaches this host only with replies: from our device, new connections to the
///   node itself (e.g. to its kubelet, or this agent's ports, through the pod bridge's
///   address) are dropped; established and related ones (replies to host-originated traffic)
///   pass. (What may not even get that far, a destination outside the node's pod CIDRs, the
///   device drops before it is written to the TUN device.)
pub fn with_guards(ruleset: &str, device: &str, remote_cidrs: &[ipnetwork::IpNetwork]) -> String {
    if !ruleset.ends_with("}\n") {
        return ruleset.to_string();
    }
    let set = |v6: bool| -> Vec<String> {
        remote_cidrs
            .iter()
            .filter(|n| n.is_ipv6() == v6)
            .map(|n| n.to_string())
            .collect()
    };
    let (v4, v6) = (set(false), set(true));
    let mut leave = String::new();
    if !v4.is_empty() {
        leave += &format!(
            "\t\tip daddr {{ {} }} oifname != \"{device}\" counter drop\n",
            v4.join(", ")
        );
    }
    if !v6.is_empty() {
        leave += &format!(
            "\t\tip6 daddr {{ {} }} oifname != \"{device}\" counter drop\n",
            v6.join(", ")
        );
    }
    let body = &ruleset[..ruleset.len() - 2];
    let mut out = format!(
        "{body}\tchain guard_input {{\n\t\ttype filter hook input priority filter; policy accept;\n\
         \t\tiifname \"{device}\" ct state established,related accept\n\
         \t\tiifname \"{device}\" counter drop\n\t}}\n"
    );
    if !leave.is_empty() {
        for hook in ["forward", "output"] {
            out += &format!(
                "\tchain guard_{hook} {{\n\t\ttype filter hook {hook} priority filter; policy accept;\n{leave}\t}}\n"
            );
        }
    }
    out + "}\n"
}
