//! IPVS state as text, byte for byte what `ipvsadm -Ln` and `ipvsadm -Ln --stats` print.
//! Pure: the caller reads [`Info`], the services and their destinations (for instance with
//! [`IpvsClient`](super::ipvs::IpvsClient)) and gets a `String`.
//!
//! - [`render_list`]: `ipvsadm -Ln`.
//! - [`render_stats`]: `ipvsadm -Ln --stats`.
//! - [`render_annotated`]: `ipvsadm -Ln` with each virtual service line that has a label
//!   followed by `  # <label>` (the line first padded to 40 characters, see there), e.g.
//!   `TCP  172.31.0.10:80 rr                    # west/default/web:http`.
//!
//! The reference is ipvsadm 1.31 (Debian `1:1.31-1+b1`) on glibc 2.36, read from its source
//! (`ipvsadm.c`: `list_all`, `print_title`, `print_service_entry`, `print_sched_flags`,
//! `print_largenum`, `addrport_to_anyname`, `fwd_name`, `protocol_name`; `libipvs.c`:
//! `ipvs_cmp_services`, `ipvs_cmp_dests`, `ipvs_dests_parse_entry`) and checked against the
//! real binary on a real kernel (`tests/vm_ipvs_smoke.rs`; what that cannot produce, such as
//! counters past 10^8, the bypass/tunnel/local forwarding names or unknown protocols, rests
//! on the source alone). What that means in detail:
//!
//! - Header: `IP Virtual Server version %d.%d.%d (size=%d)`, then for the list
//!   `Prot LocalAddress:Port Scheduler Flags` and
//!   `  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn`; for the stats
//!   `"%-33s %8s %8s %8s %8s %8s"` of `Prot LocalAddress:Port Conns InPkts OutPkts InBytes
//!   OutBytes` and `  -> RemoteAddress:Port`.
//! - Service name: `"%-4s %s"` of `TCP`/`UDP`/`SCTP` (`?` for any other protocol) and the
//!   numeric address (`10.0.0.1:80`, `[fd00::1]:53`), cut at 33 bytes for IPv4 only; or
//!   `FWM  <mark>` / `FWM  <mark> IPv6`. IPv6 text is glibc's `inet_ntop`, which writes
//!   IPv4-compatible addresses as `::1.2.3.4` (Rust's `Ipv6Addr` writes `::102:304`).
//! - List service line: `<name> <scheduler>`, then ` (<flags>)` when a scheduler flag is set
//!   (`sh-fallback,sh-port` for `sh`, `mh-fallback,mh-port` for `mh`, else
//!   `flag-1,flag-2,flag-3`), then for persistent services ` persistent <timeout>`, ` mask
//!   <dotted quad>` (IPv4, unless 255.255.255.255) or ` mask <prefix>` (IPv6, unless 128),
//!   ` pe <name>`; then ` ops` for one-packet scheduling. No trailing blanks.
//! - List destination line: `"  -> %-28s %-7s %-6d %-10u %-10u"` of address:port (IPv4 cut at
//!   28 bytes, IPv6 never cut), `Masq`/`Local`/`Tunnel`/`Route` (glibc's `(null)` for bypass),
//!   weight, active and inactive connections. Note the trailing blanks.
//! - Stats lines: `"%-33s"` of the service name (IPv6 names are not cut and push the numbers
//!   right) or `"  -> %-28s"` of the destination, then five `print_largenum` fields: `%9llu`
//!   below 10^8, else `%8llu` plus `K` (below 10^9, value/10^3), `M` (below 10^11, /10^6),
//!   `G` (below 10^14, /10^9) or `T` (/10^12).
//! - Destination conns/inpkts/outpkts in the stats are the low 32 bits of the kernel's
//!   64-bit counters: libipvs parses `IPVS_DEST_ATTR_STATS64` with its 32-bit `nla_get_u32`
//!   parser (services use the 64-bit one). Byte counts are full 64-bit everywhere.
//! - Order: not the kernel's dump order. ipvsadm sorts services and each service's
//!   destinations with glibc `qsort` (a top-down merge sort) and libipvs' comparators, which
//!   subtract unsigned 32-bit words and read the result as `int`: services by fwmark, family,
//!   protocol, address, port; destinations by address, port. The subtraction wraps, so
//!   `200.0.0.1` sorts *before* `10.0.0.1` (0x0a000001 - 0xc8000001 is positive as an int),
//!   `172.31.0.10` before `10.96.0.1`, and `[fd00::1]` before `[2001:db8::1]`. Both the
//!   comparators and the merge sort are reproduced exactly here, wrap included.
//!
//! Not reproduced: ipvsadm's non-numeric form (no `-n`: DNS and `/etc/services` names),
//! `--nosort`, `--exact`, `--rate`, `--thresholds`, `--persistent-conn`, `--tun-info`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::ipvs::{
    Destination, ForwardMethod, Info, Protocol, Service, ServiceFlags, ServiceKey, Stats,
};
use super::model::VirtualService;

/// Column where a service line's annotation (`# label`) starts, when the line is shorter.
const ANNOTATION_COLUMN: usize = 40;

/// `ipvsadm -Ln`, byte for byte: header, then every service (sorted like ipvsadm) followed by
/// its destinations (sorted like ipvsadm). The input order does not matter. The connection
/// columns come from each [`Destination`]; `stats` are not used.
pub fn render_list(info: &Info, services: &[(Service, Vec<Destination>)]) -> String {
    render(info, services, Format::List, None)
}

/// `ipvsadm -Ln --stats`, byte for byte. Missing `stats` print as zeros.
pub fn render_stats(info: &Info, services: &[(Service, Vec<Destination>)]) -> String {
    render(info, services, Format::Stats, None)
}

/// [`render_list`] with each virtual service line for which `labels` has a name padded with
/// blanks to 40 characters and followed by two blanks, `# ` and the name (so the `#` is in
/// column 43, or two blanks after a longer line):
///
/// ```text
/// TCP  172.31.0.10:80 rr                    # west/default/web:http
///   -> 10.132.0.5:8080              Masq    1      0          0
/// TCP  10.96.0.1:443 rr
/// ```
///
/// Services without a label (not ours) are printed as ipvsadm does. Removing every
/// `"  # ..."` suffix (and the blanks before it) gives back [`render_list`] exactly, since
/// ipvsadm's service lines never end in blanks. Control characters in a label become `?`.
pub fn render_annotated(
    info: &Info,
    services: &[(Service, Vec<Destination>)],
    labels: &dyn Fn(&ServiceKey) -> Option<String>,
) -> String {
    render(info, services, Format::List, Some(labels))
}

/// `remote/namespace/name[:port]` ([`VirtualService::label`]) by IPVS service key, for
/// [`render_annotated`]: `&|k| labels.get(k).cloned()`.
pub fn virtual_service_labels(services: &[VirtualService]) -> HashMap<ServiceKey, String> {
    services
        .iter()
        .map(|vs| {
            let protocol = match vs.protocol {
                crate::model::Protocol::Tcp => Protocol::Tcp,
                crate::model::Protocol::Udp => Protocol::Udp,
                crate::model::Protocol::Sctp => Protocol::Sctp,
            };
            (
                ServiceKey::Addr {
                    protocol,
                    addr: vs.vip,
                },
                vs.label(),
            )
        })
        .collect()
}

/// What [`render_annotated`] asks for a service's label.
type Labels<'a> = &'a dyn Fn(&ServiceKey) -> Option<String>;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    List,
    Stats,
}

fn render(
    info: &Info,
    services: &[(Service, Vec<Destination>)],
    format: Format,
    labels: Option<Labels>,
) -> String {
    let mut out = String::new();
    let (a, b, c) = info.version_triple();
    let _ = writeln!(
        out,
        "IP Virtual Server version {a}.{b}.{c} (size={})",
        info.conn_tab_size as i32
    );
    match format {
        Format::List => out.push_str(
            "Prot LocalAddress:Port Scheduler Flags\n  \
             -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n",
        ),
        Format::Stats => {
            let _ = writeln!(
                out,
                "{:<33} {:>8} {:>8} {:>8} {:>8} {:>8}\n  -> RemoteAddress:Port",
                "Prot LocalAddress:Port", "Conns", "InPkts", "OutPkts", "InBytes", "OutBytes"
            );
        }
    }

    let mut sorted: Vec<&(Service, Vec<Destination>)> = services.iter().collect();
    glibc_msort(&mut sorted, &|a, b| cmp_services(&a.0, &b.0));
    for (svc, dests) in sorted {
        let name = service_name(&svc.key);
        match format {
            Format::List => {
                let line = list_service_line(&name, svc);
                match labels.and_then(|f| f(&svc.key)) {
                    Some(label) => {
                        let label: String = label
                            .chars()
                            .map(|c| if c.is_control() { '?' } else { c })
                            .collect();
                        let _ = writeln!(out, "{line:<ANNOTATION_COLUMN$}  # {label}");
                    }
                    None => {
                        out.push_str(&line);
                        out.push('\n');
                    }
                }
            }
            Format::Stats => {
                let _ = write!(out, "{name:<33}");
                stats_fields(&mut out, &svc.stats.unwrap_or_default());
                out.push('\n');
            }
        }

        let mut dests: Vec<&Destination> = dests.iter().collect();
        glibc_msort(&mut dests, &|a, b| cmp_dests(a, b));
        for d in dests {
            destination_line(&mut out, d, format);
        }
    }
    out
}

/// One `  -> ` line of a real server.
fn destination_line(out: &mut String, d: &Destination, format: Format) {
    let mut dname = addr_port(&d.addr);
    if !d.addr.is_ipv6() {
        dname.truncate(28);
    }
    match format {
        Format::List => {
            let _ = writeln!(
                out,
                "  -> {dname:<28} {:<7} {:<6} {:<10} {:<10}",
                fwd_name(d.forward),
                d.weight as i32,
                d.active_conns,
                d.inactive_conns
            );
        }
        Format::Stats => {
            let _ = write!(out, "  -> {dname:<28}");
            let s = d.stats.unwrap_or_default();
            // libipvs reads these three (and the rates) of a destination's STATS64 with
            // nla_get_u32.
            let s = Stats {
                conns: s.conns & 0xffff_ffff,
                inpkts: s.inpkts & 0xffff_ffff,
                outpkts: s.outpkts & 0xffff_ffff,
                ..s
            };
            stats_fields(out, &s);
            out.push('\n');
        }
    }
}

/// `svc_name` of `print_service_entry` (numeric, not in rule format).
fn service_name(key: &ServiceKey) -> String {
    match key {
        ServiceKey::Fwmark { ipv6: false, mark } => format!("FWM  {mark}"),
        ServiceKey::Fwmark { ipv6: true, mark } => format!("FWM  {mark} IPv6"),
        ServiceKey::Addr { protocol, addr } => {
            let mut name = format!("{:<4} {}", protocol_name(*protocol), addr_port(addr));
            if !addr.is_ipv6() {
                name.truncate(33);
            }
            name
        }
    }
}

fn protocol_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "TCP",
        Protocol::Udp => "UDP",
        Protocol::Sctp => "SCTP",
        Protocol::Other(_) => "?",
    }
}

/// `fwd_name`; glibc prints a NULL `%s` as `(null)`.
fn fwd_name(f: ForwardMethod) -> &'static str {
    match f {
        ForwardMethod::Masquerade => "Masq",
        ForwardMethod::Local => "Local",
        ForwardMethod::Tunnel => "Tunnel",
        ForwardMethod::Route => "Route",
        ForwardMethod::Bypass => "(null)",
    }
}

/// The service line of the plain listing (without the newline).
fn list_service_line(name: &str, svc: &Service) -> String {
    let mut line = format!("{name} {}", svc.scheduler.name());
    let sched_bits =
        ServiceFlags::SCHED1.bits() | ServiceFlags::SCHED2.bits() | ServiceFlags::SCHED3.bits();
    if svc.flags.bits() & sched_bits != 0 {
        let _ = write!(line, " ({})", sched_flags(svc));
    }
    if svc.flags.contains(ServiceFlags::PERSISTENT) {
        let _ = write!(line, " persistent {}", svc.timeout);
        if svc.key.is_ipv6() {
            if svc.netmask != 128 {
                let _ = write!(line, " mask {}", svc.netmask as i32);
            }
        } else if svc.netmask != 0xffff_ffff {
            let _ = write!(line, " mask {}", Ipv4Addr::from(svc.netmask));
        }
        if let Some(pe) = svc.pe_name.as_deref().filter(|p| !p.is_empty()) {
            let _ = write!(line, " pe {pe}");
        }
    }
    if svc.flags.contains(ServiceFlags::ONE_PACKET) {
        line.push_str(" ops");
    }
    line
}

/// `print_sched_flags`: names depend on the scheduler.
fn sched_flags(svc: &Service) -> String {
    let f = svc.flags;
    let names: [(ServiceFlags, &str); 3] = match svc.scheduler.name() {
        "sh" => [
            (ServiceFlags::SH_FALLBACK, "sh-fallback"),
            (ServiceFlags::SH_PORT, "sh-port"),
            (ServiceFlags(0), ""),
        ],
        "mh" => [
            (ServiceFlags::SCHED1, "mh-fallback"),
            (ServiceFlags::SCHED2, "mh-port"),
            (ServiceFlags(0), ""),
        ],
        _ => [
            (ServiceFlags::SCHED1, "flag-1"),
            (ServiceFlags::SCHED2, "flag-2"),
            (ServiceFlags::SCHED3, "flag-3"),
        ],
    };
    names
        .iter()
        .filter(|(bit, _)| bit.bits() != 0 && f.contains(*bit))
        .map(|(_, name)| *name)
        .collect::<Vec<_>>()
        .join(",")
}

fn stats_fields(out: &mut String, s: &Stats) {
    for v in [s.conns, s.inpkts, s.outpkts, s.inbytes, s.outbytes] {
        largenum(out, v);
    }
}

/// `print_largenum` without `--exact`: always 9 characters for values below 10^17.
fn largenum(out: &mut String, i: u64) {
    let _ = if i < 100_000_000 {
        write!(out, "{i:>9}")
    } else if i < 1_000_000_000 {
        write!(out, "{:>8}K", i / 1_000)
    } else if i < 100_000_000_000 {
        write!(out, "{:>8}M", i / 1_000_000)
    } else if i < 100_000_000_000_000 {
        write!(out, "{:>8}G", i / 1_000_000_000)
    } else {
        write!(out, "{:>8}T", i / 1_000_000_000_000)
    };
}

/// `addrport_to_anyname` with `FMT_NUMERIC`: `a.b.c.d:port` or `[inet_ntop6]:port`.
fn addr_port(addr: &SocketAddr) -> String {
    match addr.ip() {
        IpAddr::V4(ip) => format!("{ip}:{}", addr.port()),
        IpAddr::V6(ip) => format!("[{}]:{}", inet_ntop6(&ip), addr.port()),
    }
}

/// glibc's `inet_ntop(AF_INET6, ...)` (resolv/inet_ntop.c): RFC 5952 compression of the
/// first longest run (of at least two) of zero words, lowercase hex, and an embedded IPv4
/// dotted quad for IPv4-compatible (`::a.b.c.d`) and IPv4-mapped (`::ffff:a.b.c.d`) addresses.
fn inet_ntop6(ip: &Ipv6Addr) -> String {
    let words = ip.segments();
    let (mut best_base, mut best_len) = (None::<usize>, 0usize);
    let mut cur: Option<(usize, usize)> = None;
    for (i, w) in words.iter().enumerate() {
        if *w == 0 {
            cur = Some(match cur {
                None => (i, 1),
                Some((b, l)) => (b, l + 1),
            });
        } else if let Some((b, l)) = cur.take() {
            if best_base.is_none() || l > best_len {
                (best_base, best_len) = (Some(b), l);
            }
        }
    }
    if let Some((b, l)) = cur {
        if best_base.is_none() || l > best_len {
            (best_base, best_len) = (Some(b), l);
        }
    }
    if best_len < 2 {
        best_base = None;
    }
    let mut s = String::new();
    for (i, w) in words.iter().enumerate() {
        if let Some(b) = best_base {
            if i >= b && i < b + best_len {
                if i == b {
                    s.push(':');
                }
                continue;
            }
        }
        if i != 0 {
            s.push(':');
        }
        if i == 6
            && best_base == Some(0)
            && (best_len == 6 || (best_len == 5 && words[5] == 0xffff))
        {
            let o = ip.octets();
            let _ = write!(s, "{}", Ipv4Addr::new(o[12], o[13], o[14], o[15]));
            return s;
        }
        let _ = write!(s, "{w:x}");
    }
    if best_base.is_some_and(|b| b + best_len == 8) {
        s.push(':');
    }
    s
}

/// `union nf_inet_addr` as the four host-order words libipvs' comparators read
/// (`ntohl(addr.ip)` for IPv4 is word 0; the rest of an IPv4 address is zero).
fn addr_words(ip: IpAddr) -> [u32; 4] {
    match ip {
        IpAddr::V4(v4) => [u32::from(v4), 0, 0, 0],
        IpAddr::V6(v6) => {
            let o = v6.octets();
            std::array::from_fn(|i| {
                u32::from_be_bytes([o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]])
            })
        }
    }
}

/// `ntohl(a) - ntohl(b)` word by word as C computes it: unsigned, wrapping, read as `int`.
fn cmp_addr_words(ipv6: bool, a: &[u32; 4], b: &[u32; 4]) -> i32 {
    let n = if ipv6 { 4 } else { 1 };
    for i in 0..n {
        let r = a[i].wrapping_sub(b[i]) as i32;
        if r != 0 {
            return r;
        }
    }
    0
}

/// libipvs `ipvs_cmp_services`. Fwmark services have protocol, address and port 0 there.
fn cmp_services(a: &Service, b: &Service) -> i32 {
    fn fields(k: &ServiceKey) -> (u32, u16, u16, [u32; 4], u16) {
        match k {
            ServiceKey::Fwmark { mark, .. } => (*mark, k.family(), 0, [0; 4], 0),
            ServiceKey::Addr { protocol, addr } => (
                0,
                k.family(),
                protocol.number(),
                addr_words(addr.ip()),
                addr.port(),
            ),
        }
    }
    let (fa, afa, pa, aa, porta) = fields(&a.key);
    let (fb, afb, pb, ab, portb) = fields(&b.key);
    let r = fa.wrapping_sub(fb) as i32;
    if r != 0 {
        return r;
    }
    let r = i32::from(afa) - i32::from(afb);
    if r != 0 {
        return r;
    }
    let r = i32::from(pa) - i32::from(pb);
    if r != 0 {
        return r;
    }
    let r = cmp_addr_words(a.key.is_ipv6(), &aa, &ab);
    if r != 0 {
        return r;
    }
    i32::from(porta) - i32::from(portb)
}

/// libipvs `ipvs_cmp_dests` (the first destination's family decides how many words count).
fn cmp_dests(a: &Destination, b: &Destination) -> i32 {
    let r = cmp_addr_words(
        a.addr.is_ipv6(),
        &addr_words(a.addr.ip()),
        &addr_words(b.addr.ip()),
    );
    if r != 0 {
        return r;
    }
    i32::from(a.addr.port()) - i32::from(b.addr.port())
}

/// glibc `qsort` (msort.c `msort_with_tmp`): top-down merge sort, left half `n / 2`, the
/// left element wins while `cmp <= 0`. Matches ipvsadm's order even where libipvs'
/// comparators are not a total order.
fn glibc_msort<T: Copy>(v: &mut [T], cmp: &dyn Fn(&T, &T) -> i32) {
    let n = v.len();
    if n <= 1 {
        return;
    }
    let n1 = n / 2;
    let (left, right) = v.split_at_mut(n1);
    glibc_msort(left, cmp);
    glibc_msort(right, cmp);
    let mut merged = Vec::with_capacity(n);
    let (mut i, mut j) = (0, 0);
    while i < left.len() && j < right.len() {
        if cmp(&left[i], &right[j]) <= 0 {
            merged.push(left[i]);
            i += 1;
        } else {
            merged.push(right[j]);
            j += 1;
        }
    }
    merged.extend_from_slice(&left[i..]);
    merged.extend_from_slice(&right[j..]);
    v.copy_from_slice(&merged);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::ipvs::Scheduler;

    fn info() -> Info {
        Info {
            version: 0x010201,
            conn_tab_size: 4096,
        }
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn dest(addr: &str, weight: u32, active: u32, inactive: u32) -> Destination {
        Destination {
            active_conns: active,
            inactive_conns: inactive,
            ..Destination::new(sa(addr), weight)
        }
    }

    fn stats(conns: u64, inpkts: u64, outpkts: u64, inbytes: u64, outbytes: u64) -> Stats {
        Stats {
            conns,
            inpkts,
            outpkts,
            inbytes,
            outbytes,
            ..Stats::default()
        }
    }

    const LIST_HEADER: &str = concat!(
        "IP Virtual Server version 1.2.1 (size=4096)\n",
        "Prot LocalAddress:Port Scheduler Flags\n",
        "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n",
    );

    const STATS_HEADER: &str = concat!(
        "IP Virtual Server version 1.2.1 (size=4096)\n",
        "Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes\n",
        "  -> RemoteAddress:Port\n",
    );

    fn v4_rr() -> (Service, Vec<Destination>) {
        (
            Service::new(ServiceKey::tcp(sa("172.31.0.10:80")), Scheduler::RoundRobin),
            // Kernel dump order is newest first; ipvsadm sorts.
            vec![
                dest("10.132.0.7:8080", 1, 0, 0),
                dest("10.132.0.5:8080", 1, 12, 345),
                dest("10.132.0.6:8080", 0, 1, 0),
            ],
        )
    }

    #[test]
    fn empty_table_is_the_header_only() {
        assert_eq!(render_list(&info(), &[]), LIST_HEADER);
        assert_eq!(render_stats(&info(), &[]), STATS_HEADER);
        assert_eq!(render_annotated(&info(), &[], &|_| None), LIST_HEADER);
        let other = Info {
            version: 0x010203,
            conn_tab_size: 1 << 20,
        };
        assert!(render_list(&other, &[])
            .starts_with("IP Virtual Server version 1.2.3 (size=1048576)\n"));
    }

    #[test]
    fn v4_tcp_rr_with_three_dests_one_of_weight_0() {
        let want = concat!(
            "TCP  172.31.0.10:80 rr\n",
            "  -> 10.132.0.5:8080              Masq    1      12         345       \n",
            "  -> 10.132.0.6:8080              Masq    0      1          0         \n",
            "  -> 10.132.0.7:8080              Masq    1      0          0         \n",
        );
        assert_eq!(
            render_list(&info(), &[v4_rr()]),
            format!("{LIST_HEADER}{want}")
        );
    }

    #[test]
    fn udp_v6_with_persistence_and_mask() {
        let svc = Service {
            netmask: 64,
            ..Service::new(
                ServiceKey::udp(sa("[fd00:31::10]:53")),
                Scheduler::WeightedRoundRobin,
            )
            .with_persistence(600)
        };
        let long = Service::new(
            ServiceKey::udp(sa("[2001:db8:1234:5678:9abc:def0:1234:5678]:65535")),
            Scheduler::WeightedLeastConnection,
        )
        .with_persistence(300);
        let services = [
            (
                svc,
                vec![
                    dest("[fd00:32::7]:5353", 2, 0, 3),
                    dest("[::1.2.3.4]:53", 1, 0, 0),
                ],
            ),
            (
                long,
                vec![dest(
                    "[2001:db8:1234:5678:9abc:def0:1234:5679]:65535",
                    1,
                    0,
                    0,
                )],
            ),
        ];
        // libipvs' wrapping subtraction: 0xfd000031 - 0x20010db8 and 0xfd000032 - 0 are
        // negative as ints, so fd00:... sorts before 2001:... and before ::1.2.3.4.
        let want = concat!(
            "UDP  [fd00:31::10]:53 wrr persistent 600 mask 64\n",
            "  -> [fd00:32::7]:5353            Masq    2      0          3         \n",
            "  -> [::1.2.3.4]:53               Masq    1      0          0         \n",
            "UDP  [2001:db8:1234:5678:9abc:def0:1234:5678]:65535 wlc persistent 300\n",
            "  -> [2001:db8:1234:5678:9abc:def0:1234:5679]:65535 Masq    1      0          0         \n",
        );
        assert_eq!(
            render_list(&info(), &services),
            format!("{LIST_HEADER}{want}")
        );
    }

    #[test]
    fn fwmark_services_after_address_services() {
        let services = [
            (
                Service::new(
                    ServiceKey::Fwmark {
                        ipv6: true,
                        mark: 7,
                    },
                    Scheduler::LeastConnection,
                ),
                vec![],
            ),
            (
                Service::new(
                    ServiceKey::Fwmark {
                        ipv6: false,
                        mark: 7,
                    },
                    Scheduler::RoundRobin,
                ),
                vec![Destination {
                    forward: ForwardMethod::Route,
                    ..dest("10.1.1.1:0", 1, 0, 0)
                }],
            ),
            (
                Service {
                    netmask: 0xffff_ff00,
                    ..Service::new(
                        ServiceKey::Fwmark {
                            ipv6: false,
                            mark: 9,
                        },
                        Scheduler::RoundRobin,
                    )
                    .with_persistence(60)
                },
                vec![],
            ),
            (
                Service::new(ServiceKey::udp(sa("[fd00::1]:53")), Scheduler::RoundRobin),
                vec![],
            ),
        ];
        let want = concat!(
            "UDP  [fd00::1]:53 rr\n",
            "FWM  7 rr\n",
            "  -> 10.1.1.1:0                   Route   1      0          0         \n",
            "FWM  7 IPv6 lc\n",
            "FWM  9 rr persistent 60 mask 255.255.255.0\n",
        );
        assert_eq!(
            render_list(&info(), &services),
            format!("{LIST_HEADER}{want}")
        );
    }

    #[test]
    fn flags_pe_protocols_and_forwarding_names() {
        let sh = Service {
            flags: ServiceFlags::PERSISTENT
                | ServiceFlags::SH_FALLBACK
                | ServiceFlags::SH_PORT
                | ServiceFlags::ONE_PACKET,
            netmask: 0xffff_ff00,
            ..Service::new(ServiceKey::udp(sa("10.0.0.2:53")), Scheduler::SourceHashing)
                .with_persistence(30)
        };
        let mh = Service {
            flags: ServiceFlags::SCHED2,
            ..Service::new(ServiceKey::tcp(sa("10.0.0.9:80")), Scheduler::MaglevHashing)
        };
        let rr3 = Service {
            flags: ServiceFlags::SCHED1 | ServiceFlags::SCHED3,
            ..Service::new(ServiceKey::tcp(sa("10.0.0.10:80")), Scheduler::RoundRobin)
        };
        let sip = Service {
            pe_name: Some("sip".into()),
            ..Service::new(ServiceKey::udp(sa("10.0.0.4:5060")), Scheduler::RoundRobin)
                .with_persistence(60)
        };
        let sctp = Service::new(
            ServiceKey::Addr {
                protocol: Protocol::Sctp,
                addr: sa("10.0.0.3:3868"),
            },
            Scheduler::Other("lblc".into()),
        );
        let other = Service::new(
            ServiceKey::Addr {
                protocol: Protocol::Other(33),
                addr: sa("10.0.0.5:1"),
            },
            Scheduler::RoundRobin,
        );
        let fwd = |f, a| Destination {
            forward: f,
            ..dest(a, 1, 0, 0)
        };
        let services = [
            (sh, vec![]),
            (mh, vec![]),
            (rr3, vec![]),
            (sip, vec![]),
            (sctp, vec![]),
            (
                other,
                vec![
                    fwd(ForwardMethod::Local, "10.0.1.1:1"),
                    fwd(ForwardMethod::Tunnel, "10.0.1.2:1"),
                    fwd(ForwardMethod::Bypass, "10.0.1.3:1"),
                ],
            ),
        ];
        let want = concat!(
            "TCP  10.0.0.9:80 mh (mh-port)\n",
            "TCP  10.0.0.10:80 rr (flag-1,flag-3)\n",
            "UDP  10.0.0.2:53 sh (sh-fallback,sh-port) persistent 30 mask 255.255.255.0 ops\n",
            "UDP  10.0.0.4:5060 rr persistent 60 pe sip\n",
            "?    10.0.0.5:1 rr\n",
            "  -> 10.0.1.1:1                   Local   1      0          0         \n",
            "  -> 10.0.1.2:1                   Tunnel  1      0          0         \n",
            "  -> 10.0.1.3:1                   (null)  1      0          0         \n",
            "SCTP 10.0.0.3:3868 lblc\n",
        );
        assert_eq!(
            render_list(&info(), &services),
            format!("{LIST_HEADER}{want}")
        );
    }

    #[test]
    fn sorting_wraps_like_libipvs() {
        // Seen on the real ipvsadm: 200.0.0.1 before 10.0.0.1, and the destinations
        // 150.0.0.1, 200.0.0.1, 10.0.0.5 in that order.
        let services = [
            (
                Service::new(ServiceKey::tcp(sa("10.0.0.1:80")), Scheduler::RoundRobin),
                vec![
                    dest("150.0.0.1:80", 1, 0, 0),
                    dest("10.0.0.5:80", 0, 0, 0),
                    dest("200.0.0.1:80", 1, 0, 0),
                ],
            ),
            (
                Service::new(
                    ServiceKey::tcp(sa("200.0.0.1:80")),
                    Scheduler::WeightedRoundRobin,
                ),
                vec![],
            ),
        ];
        let want = concat!(
            "TCP  200.0.0.1:80 wrr\n",
            "TCP  10.0.0.1:80 rr\n",
            "  -> 150.0.0.1:80                 Masq    1      0          0         \n",
            "  -> 200.0.0.1:80                 Masq    1      0          0         \n",
            "  -> 10.0.0.5:80                  Masq    0      0          0         \n",
        );
        assert_eq!(
            render_list(&info(), &services),
            format!("{LIST_HEADER}{want}")
        );
        // Ports compare after addresses; families before protocols.
        let keys = |svcs: &[(Service, Vec<Destination>)]| -> Vec<String> {
            let text = render_list(&info(), svcs);
            text.lines().skip(3).map(str::to_string).collect()
        };
        let mk = |k: ServiceKey| (Service::new(k, Scheduler::RoundRobin), vec![]);
        let got = keys(&[
            mk(ServiceKey::udp(sa("[fd00::1]:1"))),
            mk(ServiceKey::udp(sa("10.0.0.1:53"))),
            mk(ServiceKey::tcp(sa("10.0.0.1:443"))),
            mk(ServiceKey::tcp(sa("10.0.0.1:80"))),
            mk(ServiceKey::Fwmark {
                ipv6: false,
                mark: 0x8000_0001,
            }),
        ]);
        assert_eq!(
            got,
            [
                // 0 - 0x80000001 is positive as an int: the big mark sorts first.
                "FWM  2147483649 rr",
                "TCP  10.0.0.1:80 rr",
                "TCP  10.0.0.1:443 rr",
                "UDP  10.0.0.1:53 rr",
                "UDP  [fd00::1]:1 rr",
            ]
        );
    }

    #[test]
    fn stats_with_big_numbers() {
        let (mut svc, mut dests) = v4_rr();
        svc.stats = Some(stats(
            99_999_999,
            100_000_000,
            999_999_999,
            1_000_000_000,
            99_999_999_999,
        ));
        dests[0].stats = Some(stats(0, 1, 2, 100_000_000_000, 99_999_999_999_999));
        dests[1].stats = Some(stats(
            7,
            12_345_678,
            4_294_967_295,
            100_000_000_000_000,
            u64::MAX,
        ));
        // The third destination has no stats: zeros. Destination packet and connection
        // counters print modulo 2^32, like libipvs parses them.
        dests[2].stats = Some(stats((1 << 32) + 5, (1 << 32) + 123_456_789, 0, 0, 0));
        let v6 = Service {
            stats: Some(stats(1, 2, 3, 4, 5)),
            ..Service::new(
                ServiceKey::udp(sa("[fd00:31::10]:53")),
                Scheduler::RoundRobin,
            )
        };
        let fwm = Service::new(
            ServiceKey::Fwmark {
                ipv6: false,
                mark: 3,
            },
            Scheduler::RoundRobin,
        );
        let services = [
            (svc, dests),
            (
                v6,
                vec![dest(
                    "[2001:db8:1234:5678:9abc:def0:1234:5679]:65535",
                    1,
                    0,
                    0,
                )],
            ),
            (fwm, vec![]),
        ];
        let want = concat!(
            "TCP  172.31.0.10:80               99999999  100000K  999999K    1000M   99999M\n",
            // u64::MAX needs all nine characters: the columns touch, as in ipvsadm.
            "  -> 10.132.0.5:8080                     7 12345678    4294M     100T18446744T\n",
            "  -> 10.132.0.6:8080                     5  123456K        0        0        0\n",
            "  -> 10.132.0.7:8080                     0        1        2     100G   99999G\n",
            "UDP  [fd00:31::10]:53                    1        2        3        4        5\n",
            "  -> [2001:db8:1234:5678:9abc:def0:1234:5679]:65535        0        0        0        0        0\n",
            "FWM  3                                   0        0        0        0        0\n",
        );
        assert_eq!(
            render_stats(&info(), &services),
            format!("{STATS_HEADER}{want}")
        );
    }

    #[test]
    fn largenum_boundaries() {
        let f = |v: u64| {
            let mut s = String::new();
            largenum(&mut s, v);
            s
        };
        assert_eq!(f(0), "        0");
        assert_eq!(f(99_999_999), " 99999999");
        assert_eq!(f(100_000_000), "  100000K");
        assert_eq!(f(999_999_999), "  999999K");
        assert_eq!(f(1_000_000_000), "    1000M");
        assert_eq!(f(99_999_999_999), "   99999M");
        assert_eq!(f(100_000_000_000), "     100G");
        assert_eq!(f(99_999_999_999_999), "   99999G");
        assert_eq!(f(100_000_000_000_000), "     100T");
        assert_eq!(f(u64::MAX), "18446744T");
    }

    #[test]
    fn inet_ntop6_matches_glibc() {
        let f = |s: &str| inet_ntop6(&s.parse().unwrap());
        assert_eq!(f("::"), "::");
        assert_eq!(f("::1"), "::1");
        assert_eq!(f("::1.2.3.4"), "::1.2.3.4");
        assert_eq!(f("::ffff:1.2.3.4"), "::ffff:1.2.3.4");
        assert_eq!(f("::ffff:0:0"), "::ffff:0.0.0.0");
        assert_eq!(f("fd00::"), "fd00::");
        assert_eq!(f("fd00:0:1::1"), "fd00:0:1::1");
        assert_eq!(f("1:0:0:2:0:0:0:3"), "1:0:0:2::3");
        assert_eq!(f("1:0:0:2:3:0:0:4"), "1::2:3:0:0:4");
        assert_eq!(f("2001:DB8::A"), "2001:db8::a");
        assert_eq!(f("1:2:3:4:5:6:7:8"), "1:2:3:4:5:6:7:8");
        assert_eq!(f("0:1::"), "0:1::");
    }

    #[test]
    fn glibc_msort_is_a_stable_merge_sort() {
        let mut v = [5, 3, 9, 1, 3, 7, 0, 2, 8, 6, 4];
        glibc_msort(&mut v, &|a, b| a - b);
        assert_eq!(v, [0, 1, 2, 3, 3, 4, 5, 6, 7, 8, 9]);
        // Stable: equal keys keep their order.
        let mut v = [(1, 'a'), (0, 'b'), (1, 'c'), (0, 'd')];
        glibc_msort(&mut v, &|a, b| a.0 - b.0);
        assert_eq!(v, [(0, 'b'), (0, 'd'), (1, 'a'), (1, 'c')]);
    }

    #[test]
    fn annotated_names_our_services_only() {
        let mut labels = HashMap::new();
        labels.insert(
            ServiceKey::tcp(sa("172.31.0.10:80")),
            "west/default/web:http".to_string(),
        );
        labels.insert(
            ServiceKey::udp(sa("[fd00:31::10]:53")),
            "east/kube-system/kube-dns:dns".to_string(),
        );
        let long = Service::new(
            ServiceKey::udp(sa("[fd00:31::10]:53")),
            Scheduler::WeightedRoundRobin,
        )
        .with_persistence(10800);
        let services = [
            v4_rr(),
            (
                Service::new(ServiceKey::tcp(sa("10.96.0.1:443")), Scheduler::RoundRobin),
                vec![dest("192.168.1.10:6443", 1, 0, 0)],
            ),
            (long, vec![]),
        ];
        let got = render_annotated(&info(), &services, &|k| labels.get(k).cloned());
        let want = concat!(
            // 172.31.0.10 before 10.96.0.1: 0xac1f000a - 0x0a600001 is negative as an int.
            "TCP  172.31.0.10:80 rr                    # west/default/web:http\n",
            "  -> 10.132.0.5:8080              Masq    1      12         345       \n",
            "  -> 10.132.0.6:8080              Masq    0      1          0         \n",
            "  -> 10.132.0.7:8080              Masq    1      0          0         \n",
            "TCP  10.96.0.1:443 rr\n",
            "  -> 192.168.1.10:6443            Masq    1      0          0         \n",
            "UDP  [fd00:31::10]:53 wrr persistent 10800  # east/kube-system/kube-dns:dns\n",
        );
        assert_eq!(got, format!("{LIST_HEADER}{want}"));
        // Dropping the annotations gives ipvsadm's text back.
        let stripped: String = got
            .lines()
            .map(|l| match l.find("  # ") {
                Some(i) => format!("{}\n", l[..i].trim_end()),
                None => format!("{l}\n"),
            })
            .collect();
        assert_eq!(stripped, render_list(&info(), &services));
        // Long lines still get two blanks; control characters are neutralized.
        let long_line = render_annotated(&info(), &services[2..], &|_| Some("a\nb".into()));
        assert!(
            long_line.ends_with("wrr persistent 10800  # a?b\n"),
            "{long_line}"
        );
    }

    #[test]
    fn labels_from_virtual_services() {
        let vs = VirtualService {
            remote: "west".into(),
            namespace: "default".into(),
            name: "web".into(),
            port_name: "http".into(),
            vip: sa("172.31.0.10:80"),
            protocol: crate::model::Protocol::Tcp,
            affinity_timeout: None,
            backends: vec![],
        };
        let labels = virtual_service_labels(&[vs]);
        assert_eq!(
            labels
                .get(&ServiceKey::tcp(sa("172.31.0.10:80")))
                .map(String::as_str),
            Some("west/default/web:http")
        );
        assert!(!labels.contains_key(&ServiceKey::udp(sa("172.31.0.10:80"))));
    }
}
