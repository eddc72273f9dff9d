//! IPVS generic-netlink payloads: attributes and messages, encoded and decoded.
//!
//! Layer by layer (include/uapi/linux/ip_vs.h):
//! ```text
//! nlmsghdr | genlmsghdr {cmd, version=1, 0} | IPVS_CMD_ATTR_SERVICE (nested) { IPVS_SVC_ATTR_* }
//!                                           | IPVS_CMD_ATTR_DEST    (nested) { IPVS_DEST_ATTR_* }
//!                                           | IPVS_CMD_ATTR_TIMEOUT_* (u32)
//! ```
//! The GET_INFO reply is the exception: its top-level attributes are `IPVS_INFO_ATTR_*`,
//! whose numbers collide with `IPVS_CMD_ATTR_SERVICE`/`DEST`, so top-level parsing depends on
//! the command ([`IpvsMessage::parse`]).
//!
//! Decoding rules: unknown attributes are kept as [`DefaultNla`] and otherwise ignored (newer
//! kernels add attributes); a known attribute with a wrong length, a truncated attribute or a
//! missing mandatory attribute is a [`CodecError`]. Attribute types are read with the
//! `NLA_F_NESTED`/`NLA_F_NET_BYTEORDER` bits masked off: the kernel sends nests without the
//! flag (`nla_nest_start_noflag`), we send them with it (both are accepted by the kernel's
//! liberal parsing of this family).
//!
//! The netlink header (nlmsghdr) is added by [`super::netlink`]; this module produces and
//! consumes the generic-netlink payload, and plugs into netlink-packet-generic as
//! `GenlMessage<IpvsMessage>` through [`GenlFamily`], [`Emitable`] and
//! [`ParseableParametrized`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use netlink_packet_core::{
    DecodeError, DefaultNla, Emitable, Nla, NlaBuffer, NlasIterator, Parseable,
    ParseableParametrized, NLA_F_NESTED,
};
use netlink_packet_generic::{GenlFamily, GenlHeader};

use super::consts::*;
use super::error::CodecError;
use super::types::*;

// ---------------------------------------------------------------------------------------------
// Scalar helpers: every read checks the length first.

fn exact<const N: usize>(what: &'static str, v: &[u8]) -> Result<[u8; N], CodecError> {
    <[u8; N]>::try_from(v).map_err(|_| CodecError::BadLength { what, len: v.len() })
}

fn get_u8(what: &'static str, v: &[u8]) -> Result<u8, CodecError> {
    Ok(exact::<1>(what, v)?[0])
}

fn get_u16(what: &'static str, v: &[u8]) -> Result<u16, CodecError> {
    Ok(u16::from_ne_bytes(exact(what, v)?))
}

fn get_be16(what: &'static str, v: &[u8]) -> Result<u16, CodecError> {
    Ok(u16::from_be_bytes(exact(what, v)?))
}

fn get_u32(what: &'static str, v: &[u8]) -> Result<u32, CodecError> {
    Ok(u32::from_ne_bytes(exact(what, v)?))
}

/// Counters are u32 in `*_ATTR_STATS` (except the byte counts) and u64 in `*_ATTR_STATS64`.
fn get_counter(what: &'static str, v: &[u8]) -> Result<u64, CodecError> {
    match v.len() {
        4 => Ok(u64::from(get_u32(what, v)?)),
        8 => Ok(u64::from_ne_bytes(exact(what, v)?)),
        len => Err(CodecError::BadLength { what, len }),
    }
}

/// `union nf_inet_addr`: 16 bytes on the wire, IPv4 in the first 4.
fn get_addr(what: &'static str, v: &[u8]) -> Result<[u8; 16], CodecError> {
    exact::<16>(what, v)
}

/// A NUL-terminated string of at most `max` bytes including the NUL.
fn get_string(what: &'static str, v: &[u8], max: usize) -> Result<String, CodecError> {
    let end = v.iter().position(|&b| b == 0).ok_or(CodecError::Invalid {
        what,
        detail: "string is not NUL-terminated".into(),
    })?;
    if end + 1 > max {
        return Err(CodecError::BadLength { what, len: end + 1 });
    }
    String::from_utf8(v[..end].to_vec()).map_err(|e| CodecError::Invalid {
        what,
        detail: format!("not UTF-8: {e}"),
    })
}

fn check_name(what: &'static str, s: &str, max: usize) -> Result<(), CodecError> {
    if s.is_empty() || s.len() + 1 > max || s.as_bytes().contains(&0) {
        return Err(CodecError::Invalid {
            what,
            detail: format!("{s:?} must be 1..={} bytes without NUL", max - 1),
        });
    }
    Ok(())
}

/// Iterates the attributes in `buf`, turning framing errors into [`CodecError`].
fn attrs<'a>(buf: &'a [u8]) -> impl Iterator<Item = Result<NlaBuffer<&'a [u8]>, CodecError>> + 'a {
    NlasIterator::new(buf).map(|r| r.map_err(CodecError::from))
}

fn other(nla: &NlaBuffer<&[u8]>) -> Result<DefaultNla, CodecError> {
    Ok(DefaultNla::parse(nla)?)
}

pub(crate) fn addr_to_wire(ip: IpAddr) -> [u8; 16] {
    let mut out = [0u8; 16];
    match ip {
        IpAddr::V4(v4) => out[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => out = v6.octets(),
    }
    out
}

fn addr_from_wire(what: &'static str, af: u16, raw: &[u8; 16]) -> Result<IpAddr, CodecError> {
    match af {
        AF_INET => Ok(IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))),
        AF_INET6 => Ok(IpAddr::V6(Ipv6Addr::from(*raw))),
        other => Err(CodecError::Invalid {
            what,
            detail: format!("unknown address family {other}"),
        }),
    }
}

/// Emits one scalar attribute; the building block of the nested emitters below.
enum Scalar<'a> {
    U32(u16, u32),
    U64(u16, u64),
    /// NUL-terminated.
    Str(u16, &'a str),
}

impl Nla for Scalar<'_> {
    fn value_len(&self) -> usize {
        match self {
            Scalar::U32(..) => 4,
            Scalar::U64(..) => 8,
            Scalar::Str(_, s) => s.len() + 1,
        }
    }

    fn kind(&self) -> u16 {
        match self {
            Scalar::U32(k, _) | Scalar::U64(k, _) | Scalar::Str(k, _) => *k,
        }
    }

    fn emit_value(&self, buf: &mut [u8]) {
        match self {
            Scalar::U32(_, v) => buf.copy_from_slice(&v.to_ne_bytes()),
            Scalar::U64(_, v) => buf.copy_from_slice(&v.to_ne_bytes()),
            Scalar::Str(_, s) => {
                buf[..s.len()].copy_from_slice(s.as_bytes());
                buf[s.len()] = 0;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Stats (nested IPVS_STATS_ATTR_*)

fn stats_nlas(s: &Stats, all64: bool) -> Vec<Scalar<'static>> {
    let n = |kind, v: u64| {
        if all64 {
            Scalar::U64(kind, v)
        } else {
            Scalar::U32(kind, v as u32)
        }
    };
    vec![
        n(IPVS_STATS_ATTR_CONNS, s.conns),
        n(IPVS_STATS_ATTR_INPKTS, s.inpkts),
        n(IPVS_STATS_ATTR_OUTPKTS, s.outpkts),
        Scalar::U64(IPVS_STATS_ATTR_INBYTES, s.inbytes),
        Scalar::U64(IPVS_STATS_ATTR_OUTBYTES, s.outbytes),
        n(IPVS_STATS_ATTR_CPS, s.cps),
        n(IPVS_STATS_ATTR_INPPS, s.inpps),
        n(IPVS_STATS_ATTR_OUTPPS, s.outpps),
        n(IPVS_STATS_ATTR_INBPS, s.inbps),
        n(IPVS_STATS_ATTR_OUTBPS, s.outbps),
    ]
}

/// Decodes a nested stats attribute; counters may be 4 or 8 bytes, unknown ones (PAD) skipped.
pub fn parse_stats(buf: &[u8]) -> Result<Stats, CodecError> {
    let mut s = Stats::default();
    for nla in attrs(buf) {
        let nla = nla?;
        let v = nla.value();
        let slot = match nla.kind() {
            IPVS_STATS_ATTR_CONNS => &mut s.conns,
            IPVS_STATS_ATTR_INPKTS => &mut s.inpkts,
            IPVS_STATS_ATTR_OUTPKTS => &mut s.outpkts,
            IPVS_STATS_ATTR_INBYTES => &mut s.inbytes,
            IPVS_STATS_ATTR_OUTBYTES => &mut s.outbytes,
            IPVS_STATS_ATTR_CPS => &mut s.cps,
            IPVS_STATS_ATTR_INPPS => &mut s.inpps,
            IPVS_STATS_ATTR_OUTPPS => &mut s.outpps,
            IPVS_STATS_ATTR_INBPS => &mut s.inbps,
            IPVS_STATS_ATTR_OUTBPS => &mut s.outbps,
            _ => continue,
        };
        *slot = get_counter("IPVS_STATS_ATTR_*", v)?;
    }
    Ok(s)
}

// ---------------------------------------------------------------------------------------------
// Service attributes (nested in IPVS_CMD_ATTR_SERVICE)

/// One `IPVS_SVC_ATTR_*`, values in host order (the codec does the byte swapping).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceAttr {
    Af(u16),
    Protocol(u16),
    /// 16 bytes, IPv4 in the first 4.
    Addr([u8; 16]),
    /// Host order here; big endian on the wire.
    Port(u16),
    Fwmark(u32),
    SchedName(String),
    /// `struct ip_vs_flags`: bits in `mask` are set to their value in `flags`.
    Flags {
        flags: u32,
        mask: u32,
    },
    Timeout(u32),
    /// Raw wire bytes: IPv4 mask in network order, IPv6 prefix length in host order.
    Netmask([u8; 4]),
    Stats(Stats),
    PeName(String),
    Stats64(Stats),
    Other(DefaultNla),
}

impl Nla for ServiceAttr {
    fn value_len(&self) -> usize {
        use ServiceAttr::*;
        match self {
            Af(_) | Protocol(_) | Port(_) => 2,
            Addr(_) => 16,
            Fwmark(_) | Timeout(_) | Netmask(_) => 4,
            SchedName(s) | PeName(s) => s.len() + 1,
            Flags { .. } => 8,
            Stats(s) => stats_nlas(s, false).as_slice().buffer_len(),
            Stats64(s) => stats_nlas(s, true).as_slice().buffer_len(),
            Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        use ServiceAttr::*;
        match self {
            Af(_) => IPVS_SVC_ATTR_AF,
            Protocol(_) => IPVS_SVC_ATTR_PROTOCOL,
            Addr(_) => IPVS_SVC_ATTR_ADDR,
            Port(_) => IPVS_SVC_ATTR_PORT,
            Fwmark(_) => IPVS_SVC_ATTR_FWMARK,
            SchedName(_) => IPVS_SVC_ATTR_SCHED_NAME,
            Flags { .. } => IPVS_SVC_ATTR_FLAGS,
            Timeout(_) => IPVS_SVC_ATTR_TIMEOUT,
            Netmask(_) => IPVS_SVC_ATTR_NETMASK,
            Stats(_) => IPVS_SVC_ATTR_STATS | NLA_F_NESTED,
            PeName(_) => IPVS_SVC_ATTR_PE_NAME,
            Stats64(_) => IPVS_SVC_ATTR_STATS64 | NLA_F_NESTED,
            Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buf: &mut [u8]) {
        use ServiceAttr::*;
        match self {
            Af(v) | Protocol(v) => buf.copy_from_slice(&v.to_ne_bytes()),
            Port(v) => buf.copy_from_slice(&v.to_be_bytes()),
            Addr(a) => buf.copy_from_slice(a),
            Fwmark(v) | Timeout(v) => buf.copy_from_slice(&v.to_ne_bytes()),
            Netmask(b) => buf.copy_from_slice(b),
            SchedName(s) | PeName(s) => Scalar::Str(0, s).emit_value(buf),
            Flags { flags, mask } => {
                buf[..4].copy_from_slice(&flags.to_ne_bytes());
                buf[4..8].copy_from_slice(&mask.to_ne_bytes());
            }
            Stats(s) => stats_nlas(s, false).as_slice().emit(buf),
            Stats64(s) => stats_nlas(s, true).as_slice().emit(buf),
            Other(nla) => nla.emit_value(buf),
        }
    }
}

impl ServiceAttr {
    pub fn parse(nla: &NlaBuffer<&[u8]>) -> Result<ServiceAttr, CodecError> {
        use ServiceAttr::*;
        let v = nla.value();
        Ok(match nla.kind() {
            IPVS_SVC_ATTR_AF => Af(get_u16("IPVS_SVC_ATTR_AF", v)?),
            IPVS_SVC_ATTR_PROTOCOL => Protocol(get_u16("IPVS_SVC_ATTR_PROTOCOL", v)?),
            IPVS_SVC_ATTR_ADDR => Addr(get_addr("IPVS_SVC_ATTR_ADDR", v)?),
            IPVS_SVC_ATTR_PORT => Port(get_be16("IPVS_SVC_ATTR_PORT", v)?),
            IPVS_SVC_ATTR_FWMARK => Fwmark(get_u32("IPVS_SVC_ATTR_FWMARK", v)?),
            IPVS_SVC_ATTR_SCHED_NAME => SchedName(get_string(
                "IPVS_SVC_ATTR_SCHED_NAME",
                v,
                IP_VS_SCHEDNAME_MAXLEN,
            )?),
            IPVS_SVC_ATTR_FLAGS => {
                let b: [u8; 8] = exact("IPVS_SVC_ATTR_FLAGS", v)?;
                Flags {
                    flags: u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
                    mask: u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
                }
            }
            IPVS_SVC_ATTR_TIMEOUT => Timeout(get_u32("IPVS_SVC_ATTR_TIMEOUT", v)?),
            IPVS_SVC_ATTR_NETMASK => Netmask(exact("IPVS_SVC_ATTR_NETMASK", v)?),
            IPVS_SVC_ATTR_STATS => Stats(parse_stats(v)?),
            IPVS_SVC_ATTR_PE_NAME => {
                PeName(get_string("IPVS_SVC_ATTR_PE_NAME", v, IP_VS_PENAME_MAXLEN)?)
            }
            IPVS_SVC_ATTR_STATS64 => Stats64(parse_stats(v)?),
            _ => Other(other(nla)?),
        })
    }

    /// Parses the contents of an `IPVS_CMD_ATTR_SERVICE` nest.
    pub fn parse_all(buf: &[u8]) -> Result<Vec<ServiceAttr>, CodecError> {
        attrs(buf).map(|n| ServiceAttr::parse(&n?)).collect()
    }
}

/// The attributes that identify a service (enough for DEL_SERVICE, GET_DEST and dest ops).
pub fn service_key_attrs(key: &ServiceKey) -> Vec<ServiceAttr> {
    match key {
        ServiceKey::Addr { protocol, addr } => vec![
            ServiceAttr::Af(key.family()),
            ServiceAttr::Protocol(protocol.number()),
            ServiceAttr::Addr(addr_to_wire(addr.ip())),
            ServiceAttr::Port(addr.port()),
        ],
        ServiceKey::Fwmark { mark, .. } => {
            vec![ServiceAttr::Af(key.family()), ServiceAttr::Fwmark(*mark)]
        }
    }
}

/// The netmask attribute bytes: IPv4 mask big endian, IPv6 prefix length host order (the
/// kernel reads both with `nla_get_be32` and then uses the IPv6 value as a plain number).
pub fn netmask_to_wire(ipv6: bool, netmask: u32) -> [u8; 4] {
    if ipv6 {
        netmask.to_ne_bytes()
    } else {
        netmask.to_be_bytes()
    }
}

pub fn netmask_from_wire(ipv6: bool, raw: [u8; 4]) -> u32 {
    if ipv6 {
        u32::from_ne_bytes(raw)
    } else {
        u32::from_be_bytes(raw)
    }
}

/// All attributes of a service for NEW_SERVICE / SET_SERVICE. The kernel requires
/// SCHED_NAME, FLAGS, TIMEOUT and NETMASK besides the key. Flags are sent with a full mask
/// (like ipvsadm), so the kernel ends up with exactly `svc.flags` (plus its HASHED bit).
pub fn service_attrs(svc: &Service) -> Result<Vec<ServiceAttr>, CodecError> {
    let sched = svc.scheduler.name();
    check_name("scheduler name", sched, IP_VS_SCHEDNAME_MAXLEN)?;
    if let Some(pe) = &svc.pe_name {
        check_name("persistence engine name", pe, IP_VS_PENAME_MAXLEN)?;
    }
    let mut out = service_key_attrs(&svc.key);
    out.push(ServiceAttr::SchedName(sched.to_string()));
    if let Some(pe) = &svc.pe_name {
        out.push(ServiceAttr::PeName(pe.clone()));
    }
    out.push(ServiceAttr::Flags {
        flags: svc.flags.without(ServiceFlags::HASHED).bits(),
        mask: u32::MAX,
    });
    out.push(ServiceAttr::Timeout(svc.timeout));
    out.push(ServiceAttr::Netmask(netmask_to_wire(
        svc.key.is_ipv6(),
        svc.netmask,
    )));
    Ok(out)
}

/// Builds a [`Service`] from a decoded `IPVS_CMD_ATTR_SERVICE`. Mandatory, as in libipvs:
/// AF, FWMARK or PROTOCOL+ADDR+PORT, SCHED_NAME, FLAGS, TIMEOUT, NETMASK. Prefers STATS64
/// over STATS.
pub fn service_from_attrs(list: &[ServiceAttr]) -> Result<Service, CodecError> {
    const W: &str = "service";
    let (mut af, mut proto, mut addr, mut port, mut fwmark) = (None, None, None, None, None);
    let (mut sched, mut flags, mut timeout, mut netmask) = (None, None, None, None);
    let (mut pe, mut stats, mut stats64) = (None, None, None);
    for a in list {
        match a {
            ServiceAttr::Af(v) => af = Some(*v),
            ServiceAttr::Protocol(v) => proto = Some(*v),
            ServiceAttr::Addr(v) => addr = Some(*v),
            ServiceAttr::Port(v) => port = Some(*v),
            ServiceAttr::Fwmark(v) => fwmark = Some(*v),
            ServiceAttr::SchedName(v) => sched = Some(v.as_str()),
            ServiceAttr::Flags { flags: f, .. } => flags = Some(*f),
            ServiceAttr::Timeout(v) => timeout = Some(*v),
            ServiceAttr::Netmask(v) => netmask = Some(*v),
            ServiceAttr::Stats(s) => stats = Some(*s),
            ServiceAttr::Stats64(s) => stats64 = Some(*s),
            ServiceAttr::PeName(v) => pe = Some(v.clone()),
            ServiceAttr::Other(_) => {}
        }
    }
    let missing = |attr| CodecError::Missing { what: W, attr };
    let af = af.ok_or(missing("IPVS_SVC_ATTR_AF"))?;
    if af != AF_INET && af != AF_INET6 {
        return Err(CodecError::Invalid {
            what: W,
            detail: format!("unknown address family {af}"),
        });
    }
    let ipv6 = af == AF_INET6;
    let key = match fwmark {
        Some(mark) if mark != 0 => ServiceKey::Fwmark { ipv6, mark },
        _ => {
            let proto = proto.ok_or(missing("IPVS_SVC_ATTR_PROTOCOL"))?;
            let raw = addr.ok_or(missing("IPVS_SVC_ATTR_ADDR"))?;
            let port = port.ok_or(missing("IPVS_SVC_ATTR_PORT"))?;
            let ip = addr_from_wire(W, af, &raw)?;
            ServiceKey::Addr {
                protocol: Protocol::from_number(proto),
                addr: SocketAddr::new(ip, port),
            }
        }
    };
    Ok(Service {
        key,
        scheduler: Scheduler::from_name(sched.ok_or(missing("IPVS_SVC_ATTR_SCHED_NAME"))?),
        flags: ServiceFlags(flags.ok_or(missing("IPVS_SVC_ATTR_FLAGS"))?)
            .without(ServiceFlags::HASHED),
        timeout: timeout.ok_or(missing("IPVS_SVC_ATTR_TIMEOUT"))?,
        netmask: netmask_from_wire(ipv6, netmask.ok_or(missing("IPVS_SVC_ATTR_NETMASK"))?),
        pe_name: pe,
        stats: stats64.or(stats),
    })
}

// ---------------------------------------------------------------------------------------------
// Destination attributes (nested in IPVS_CMD_ATTR_DEST)

/// One `IPVS_DEST_ATTR_*`, values in host order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DestAttr {
    Addr([u8; 16]),
    Port(u16),
    FwdMethod(u32),
    Weight(u32),
    UThresh(u32),
    LThresh(u32),
    ActiveConns(u32),
    InactConns(u32),
    PersistConns(u32),
    Stats(Stats),
    AddrFamily(u16),
    Stats64(Stats),
    TunType(u8),
    TunPort(u16),
    TunFlags(u16),
    Other(DefaultNla),
}

impl Nla for DestAttr {
    fn value_len(&self) -> usize {
        use DestAttr::*;
        match self {
            Addr(_) => 16,
            Port(_) | AddrFamily(_) | TunPort(_) | TunFlags(_) => 2,
            TunType(_) => 1,
            FwdMethod(_) | Weight(_) | UThresh(_) | LThresh(_) | ActiveConns(_) | InactConns(_)
            | PersistConns(_) => 4,
            Stats(s) => stats_nlas(s, false).as_slice().buffer_len(),
            Stats64(s) => stats_nlas(s, true).as_slice().buffer_len(),
            Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        use DestAttr::*;
        match self {
            Addr(_) => IPVS_DEST_ATTR_ADDR,
            Port(_) => IPVS_DEST_ATTR_PORT,
            FwdMethod(_) => IPVS_DEST_ATTR_FWD_METHOD,
            Weight(_) => IPVS_DEST_ATTR_WEIGHT,
            UThresh(_) => IPVS_DEST_ATTR_U_THRESH,
            LThresh(_) => IPVS_DEST_ATTR_L_THRESH,
            ActiveConns(_) => IPVS_DEST_ATTR_ACTIVE_CONNS,
            InactConns(_) => IPVS_DEST_ATTR_INACT_CONNS,
            PersistConns(_) => IPVS_DEST_ATTR_PERSIST_CONNS,
            Stats(_) => IPVS_DEST_ATTR_STATS | NLA_F_NESTED,
            AddrFamily(_) => IPVS_DEST_ATTR_ADDR_FAMILY,
            Stats64(_) => IPVS_DEST_ATTR_STATS64 | NLA_F_NESTED,
            TunType(_) => IPVS_DEST_ATTR_TUN_TYPE,
            TunPort(_) => IPVS_DEST_ATTR_TUN_PORT,
            TunFlags(_) => IPVS_DEST_ATTR_TUN_FLAGS,
            Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buf: &mut [u8]) {
        use DestAttr::*;
        match self {
            Addr(a) => buf.copy_from_slice(a),
            Port(v) | TunPort(v) => buf.copy_from_slice(&v.to_be_bytes()),
            AddrFamily(v) | TunFlags(v) => buf.copy_from_slice(&v.to_ne_bytes()),
            TunType(v) => buf[0] = *v,
            FwdMethod(v) | Weight(v) | UThresh(v) | LThresh(v) | ActiveConns(v) | InactConns(v)
            | PersistConns(v) => buf.copy_from_slice(&v.to_ne_bytes()),
            Stats(s) => stats_nlas(s, false).as_slice().emit(buf),
            Stats64(s) => stats_nlas(s, true).as_slice().emit(buf),
            Other(nla) => nla.emit_value(buf),
        }
    }
}

impl DestAttr {
    pub fn parse(nla: &NlaBuffer<&[u8]>) -> Result<DestAttr, CodecError> {
        use DestAttr::*;
        let v = nla.value();
        Ok(match nla.kind() {
            IPVS_DEST_ATTR_ADDR => Addr(get_addr("IPVS_DEST_ATTR_ADDR", v)?),
            IPVS_DEST_ATTR_PORT => Port(get_be16("IPVS_DEST_ATTR_PORT", v)?),
            IPVS_DEST_ATTR_FWD_METHOD => FwdMethod(get_u32("IPVS_DEST_ATTR_FWD_METHOD", v)?),
            IPVS_DEST_ATTR_WEIGHT => Weight(get_u32("IPVS_DEST_ATTR_WEIGHT", v)?),
            IPVS_DEST_ATTR_U_THRESH => UThresh(get_u32("IPVS_DEST_ATTR_U_THRESH", v)?),
            IPVS_DEST_ATTR_L_THRESH => LThresh(get_u32("IPVS_DEST_ATTR_L_THRESH", v)?),
            IPVS_DEST_ATTR_ACTIVE_CONNS => ActiveConns(get_u32("IPVS_DEST_ATTR_ACTIVE_CONNS", v)?),
            IPVS_DEST_ATTR_INACT_CONNS => InactConns(get_u32("IPVS_DEST_ATTR_INACT_CONNS", v)?),
            IPVS_DEST_ATTR_PERSIST_CONNS => {
                PersistConns(get_u32("IPVS_DEST_ATTR_PERSIST_CONNS", v)?)
            }
            IPVS_DEST_ATTR_STATS => Stats(parse_stats(v)?),
            IPVS_DEST_ATTR_ADDR_FAMILY => AddrFamily(get_u16("IPVS_DEST_ATTR_ADDR_FAMILY", v)?),
            IPVS_DEST_ATTR_STATS64 => Stats64(parse_stats(v)?),
            IPVS_DEST_ATTR_TUN_TYPE => TunType(get_u8("IPVS_DEST_ATTR_TUN_TYPE", v)?),
            IPVS_DEST_ATTR_TUN_PORT => TunPort(get_be16("IPVS_DEST_ATTR_TUN_PORT", v)?),
            IPVS_DEST_ATTR_TUN_FLAGS => TunFlags(get_u16("IPVS_DEST_ATTR_TUN_FLAGS", v)?),
            _ => Other(other(nla)?),
        })
    }

    /// Parses the contents of an `IPVS_CMD_ATTR_DEST` nest.
    pub fn parse_all(buf: &[u8]) -> Result<Vec<DestAttr>, CodecError> {
        attrs(buf).map(|n| DestAttr::parse(&n?)).collect()
    }
}

fn family_of(ip: IpAddr) -> u16 {
    if ip.is_ipv6() {
        AF_INET6
    } else {
        AF_INET
    }
}

/// The attributes that identify a destination (DEL_DEST).
pub fn dest_key_attrs(addr: SocketAddr) -> Vec<DestAttr> {
    vec![
        DestAttr::AddrFamily(family_of(addr.ip())),
        DestAttr::Addr(addr_to_wire(addr.ip())),
        DestAttr::Port(addr.port()),
    ]
}

/// All attributes of a destination for NEW_DEST / SET_DEST (the kernel requires FWD_METHOD,
/// WEIGHT, U_THRESH, L_THRESH). ADDR_FAMILY is always sent (kernels before 4.3 ignore it);
/// the TUN_* attributes only for tunnels with a non-default encapsulation.
pub fn dest_attrs(d: &Destination) -> Result<Vec<DestAttr>, CodecError> {
    if d.weight > i32::MAX as u32 {
        return Err(CodecError::Invalid {
            what: "destination weight",
            detail: format!("{} exceeds {}", d.weight, i32::MAX),
        });
    }
    let mut out = dest_key_attrs(d.addr);
    out.push(DestAttr::FwdMethod(d.forward.code()));
    out.push(DestAttr::Weight(d.weight));
    out.push(DestAttr::UThresh(d.upper_threshold));
    out.push(DestAttr::LThresh(d.lower_threshold));
    if d.forward == ForwardMethod::Tunnel && d.tunnel != TunnelConfig::default() {
        out.push(DestAttr::TunType(d.tunnel.kind));
        out.push(DestAttr::TunPort(d.tunnel.port));
        out.push(DestAttr::TunFlags(d.tunnel.flags));
    }
    Ok(out)
}

/// Builds a [`Destination`] from a decoded `IPVS_CMD_ATTR_DEST`. The address family is
/// ADDR_FAMILY when present, else the service's (`service_ipv6`). Mandatory, as in libipvs:
/// ADDR, PORT, FWD_METHOD, WEIGHT, U_THRESH, L_THRESH, ACTIVE_CONNS, INACT_CONNS,
/// PERSIST_CONNS.
pub fn dest_from_attrs(list: &[DestAttr], service_ipv6: bool) -> Result<Destination, CodecError> {
    const W: &str = "destination";
    let (mut addr, mut port, mut fwd, mut weight, mut uth, mut lth) =
        (None, None, None, None, None, None);
    let (mut active, mut inact, mut persist, mut af) = (None, None, None, None);
    let (mut stats, mut stats64, mut tunnel) = (None, None, TunnelConfig::default());
    for a in list {
        match a {
            DestAttr::Addr(v) => addr = Some(*v),
            DestAttr::Port(v) => port = Some(*v),
            DestAttr::FwdMethod(v) => fwd = Some(*v),
            DestAttr::Weight(v) => weight = Some(*v),
            DestAttr::UThresh(v) => uth = Some(*v),
            DestAttr::LThresh(v) => lth = Some(*v),
            DestAttr::ActiveConns(v) => active = Some(*v),
            DestAttr::InactConns(v) => inact = Some(*v),
            DestAttr::PersistConns(v) => persist = Some(*v),
            DestAttr::Stats(s) => stats = Some(*s),
            DestAttr::Stats64(s) => stats64 = Some(*s),
            DestAttr::AddrFamily(v) => af = Some(*v),
            DestAttr::TunType(v) => tunnel.kind = *v,
            DestAttr::TunPort(v) => tunnel.port = *v,
            DestAttr::TunFlags(v) => tunnel.flags = *v,
            DestAttr::Other(_) => {}
        }
    }
    let missing = |attr| CodecError::Missing { what: W, attr };
    let af = af.unwrap_or(if service_ipv6 { AF_INET6 } else { AF_INET });
    let ip = addr_from_wire(W, af, &addr.ok_or(missing("IPVS_DEST_ATTR_ADDR"))?)?;
    let fwd = fwd.ok_or(missing("IPVS_DEST_ATTR_FWD_METHOD"))?;
    Ok(Destination {
        addr: SocketAddr::new(ip, port.ok_or(missing("IPVS_DEST_ATTR_PORT"))?),
        forward: ForwardMethod::from_code(fwd).ok_or_else(|| CodecError::Invalid {
            what: W,
            detail: format!("unknown forwarding method {fwd}"),
        })?,
        weight: weight.ok_or(missing("IPVS_DEST_ATTR_WEIGHT"))?,
        upper_threshold: uth.ok_or(missing("IPVS_DEST_ATTR_U_THRESH"))?,
        lower_threshold: lth.ok_or(missing("IPVS_DEST_ATTR_L_THRESH"))?,
        tunnel,
        active_conns: active.ok_or(missing("IPVS_DEST_ATTR_ACTIVE_CONNS"))?,
        inactive_conns: inact.ok_or(missing("IPVS_DEST_ATTR_INACT_CONNS"))?,
        persist_conns: persist.ok_or(missing("IPVS_DEST_ATTR_PERSIST_CONNS"))?,
        stats: stats64.or(stats),
    })
}

// ---------------------------------------------------------------------------------------------
// Top-level attributes and messages

/// A top-level attribute of an IPVS message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IpvsAttr {
    /// `IPVS_CMD_ATTR_SERVICE`
    Service(Vec<ServiceAttr>),
    /// `IPVS_CMD_ATTR_DEST`
    Dest(Vec<DestAttr>),
    TimeoutTcp(u32),
    TimeoutTcpFin(u32),
    TimeoutUdp(u32),
    /// `IPVS_INFO_ATTR_VERSION` (only in the GET_INFO reply, command `IPVS_CMD_SET_INFO`).
    InfoVersion(u32),
    /// `IPVS_INFO_ATTR_CONN_TAB_SIZE` (ditto).
    InfoConnTabSize(u32),
    Other(DefaultNla),
}

impl Nla for IpvsAttr {
    fn value_len(&self) -> usize {
        match self {
            IpvsAttr::Service(a) => a.as_slice().buffer_len(),
            IpvsAttr::Dest(a) => a.as_slice().buffer_len(),
            IpvsAttr::TimeoutTcp(_)
            | IpvsAttr::TimeoutTcpFin(_)
            | IpvsAttr::TimeoutUdp(_)
            | IpvsAttr::InfoVersion(_)
            | IpvsAttr::InfoConnTabSize(_) => 4,
            IpvsAttr::Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            IpvsAttr::Service(_) => IPVS_CMD_ATTR_SERVICE | NLA_F_NESTED,
            IpvsAttr::Dest(_) => IPVS_CMD_ATTR_DEST | NLA_F_NESTED,
            IpvsAttr::TimeoutTcp(_) => IPVS_CMD_ATTR_TIMEOUT_TCP,
            IpvsAttr::TimeoutTcpFin(_) => IPVS_CMD_ATTR_TIMEOUT_TCP_FIN,
            IpvsAttr::TimeoutUdp(_) => IPVS_CMD_ATTR_TIMEOUT_UDP,
            IpvsAttr::InfoVersion(_) => IPVS_INFO_ATTR_VERSION,
            IpvsAttr::InfoConnTabSize(_) => IPVS_INFO_ATTR_CONN_TAB_SIZE,
            IpvsAttr::Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buf: &mut [u8]) {
        match self {
            IpvsAttr::Service(a) => a.as_slice().emit(buf),
            IpvsAttr::Dest(a) => a.as_slice().emit(buf),
            IpvsAttr::TimeoutTcp(v)
            | IpvsAttr::TimeoutTcpFin(v)
            | IpvsAttr::TimeoutUdp(v)
            | IpvsAttr::InfoVersion(v)
            | IpvsAttr::InfoConnTabSize(v) => buf.copy_from_slice(&v.to_ne_bytes()),
            IpvsAttr::Other(nla) => nla.emit_value(buf),
        }
    }
}

/// The generic-netlink payload of one IPVS message: command plus top-level attributes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpvsMessage {
    pub cmd: u8,
    pub attrs: Vec<IpvsAttr>,
}

impl IpvsMessage {
    pub fn new(cmd: u8, attrs: Vec<IpvsAttr>) -> IpvsMessage {
        IpvsMessage { cmd, attrs }
    }

    pub fn get_info() -> IpvsMessage {
        IpvsMessage::new(IPVS_CMD_GET_INFO, vec![])
    }

    pub fn get_config() -> IpvsMessage {
        IpvsMessage::new(IPVS_CMD_GET_CONFIG, vec![])
    }

    /// Zero fields are "leave unchanged" and are not sent.
    pub fn set_config(t: &Timeouts) -> IpvsMessage {
        let mut attrs = vec![];
        if t.tcp != 0 {
            attrs.push(IpvsAttr::TimeoutTcp(t.tcp));
        }
        if t.tcp_fin != 0 {
            attrs.push(IpvsAttr::TimeoutTcpFin(t.tcp_fin));
        }
        if t.udp != 0 {
            attrs.push(IpvsAttr::TimeoutUdp(t.udp));
        }
        IpvsMessage::new(IPVS_CMD_SET_CONFIG, attrs)
    }

    pub fn flush() -> IpvsMessage {
        IpvsMessage::new(IPVS_CMD_FLUSH, vec![])
    }

    /// A dump request for all services (send with `NLM_F_DUMP`).
    pub fn get_services() -> IpvsMessage {
        IpvsMessage::new(IPVS_CMD_GET_SERVICE, vec![])
    }

    /// One service (a `doit` request, without `NLM_F_DUMP`).
    pub fn get_service(key: &ServiceKey) -> IpvsMessage {
        IpvsMessage::new(
            IPVS_CMD_GET_SERVICE,
            vec![IpvsAttr::Service(service_key_attrs(key))],
        )
    }

    pub fn new_service(svc: &Service) -> Result<IpvsMessage, CodecError> {
        Ok(IpvsMessage::new(
            IPVS_CMD_NEW_SERVICE,
            vec![IpvsAttr::Service(service_attrs(svc)?)],
        ))
    }

    pub fn set_service(svc: &Service) -> Result<IpvsMessage, CodecError> {
        Ok(IpvsMessage::new(
            IPVS_CMD_SET_SERVICE,
            vec![IpvsAttr::Service(service_attrs(svc)?)],
        ))
    }

    pub fn del_service(key: &ServiceKey) -> IpvsMessage {
        IpvsMessage::new(
            IPVS_CMD_DEL_SERVICE,
            vec![IpvsAttr::Service(service_key_attrs(key))],
        )
    }

    /// A dump request for the destinations of one service (send with `NLM_F_DUMP`).
    pub fn get_dests(key: &ServiceKey) -> IpvsMessage {
        IpvsMessage::new(
            IPVS_CMD_GET_DEST,
            vec![IpvsAttr::Service(service_key_attrs(key))],
        )
    }

    pub fn new_dest(key: &ServiceKey, d: &Destination) -> Result<IpvsMessage, CodecError> {
        Ok(IpvsMessage::new(
            IPVS_CMD_NEW_DEST,
            vec![
                IpvsAttr::Service(service_key_attrs(key)),
                IpvsAttr::Dest(dest_attrs(d)?),
            ],
        ))
    }

    pub fn set_dest(key: &ServiceKey, d: &Destination) -> Result<IpvsMessage, CodecError> {
        Ok(IpvsMessage::new(
            IPVS_CMD_SET_DEST,
            vec![
                IpvsAttr::Service(service_key_attrs(key)),
                IpvsAttr::Dest(dest_attrs(d)?),
            ],
        ))
    }

    pub fn del_dest(key: &ServiceKey, addr: SocketAddr) -> IpvsMessage {
        IpvsMessage::new(
            IPVS_CMD_DEL_DEST,
            vec![
                IpvsAttr::Service(service_key_attrs(key)),
                IpvsAttr::Dest(dest_key_attrs(addr)),
            ],
        )
    }

    /// Parses the attributes that follow the genl header of a message with command `cmd`.
    pub fn parse(cmd: u8, buf: &[u8]) -> Result<IpvsMessage, CodecError> {
        let info = cmd == IPVS_CMD_SET_INFO || cmd == IPVS_CMD_GET_INFO;
        let mut out = Vec::new();
        for nla in attrs(buf) {
            let nla = nla?;
            let v = nla.value();
            out.push(match (info, nla.kind()) {
                (true, IPVS_INFO_ATTR_VERSION) => {
                    IpvsAttr::InfoVersion(get_u32("IPVS_INFO_ATTR_VERSION", v)?)
                }
                (true, IPVS_INFO_ATTR_CONN_TAB_SIZE) => {
                    IpvsAttr::InfoConnTabSize(get_u32("IPVS_INFO_ATTR_CONN_TAB_SIZE", v)?)
                }
                (true, _) => IpvsAttr::Other(other(&nla)?),
                (false, IPVS_CMD_ATTR_SERVICE) => IpvsAttr::Service(ServiceAttr::parse_all(v)?),
                (false, IPVS_CMD_ATTR_DEST) => IpvsAttr::Dest(DestAttr::parse_all(v)?),
                (false, IPVS_CMD_ATTR_TIMEOUT_TCP) => {
                    IpvsAttr::TimeoutTcp(get_u32("IPVS_CMD_ATTR_TIMEOUT_TCP", v)?)
                }
                (false, IPVS_CMD_ATTR_TIMEOUT_TCP_FIN) => {
                    IpvsAttr::TimeoutTcpFin(get_u32("IPVS_CMD_ATTR_TIMEOUT_TCP_FIN", v)?)
                }
                (false, IPVS_CMD_ATTR_TIMEOUT_UDP) => {
                    IpvsAttr::TimeoutUdp(get_u32("IPVS_CMD_ATTR_TIMEOUT_UDP", v)?)
                }
                (false, _) => IpvsAttr::Other(other(&nla)?),
            });
        }
        Ok(IpvsMessage { cmd, attrs: out })
    }

    /// Parses a genl payload: the 4-byte genlmsghdr, then attributes.
    pub fn parse_genl(buf: &[u8]) -> Result<IpvsMessage, CodecError> {
        let header = GenlHeader::parse(buf)?;
        IpvsMessage::parse(header.cmd, &buf[4..])
    }

    fn expect_cmd(&self, want: u8, what: &'static str) -> Result<(), CodecError> {
        if self.cmd != want {
            return Err(CodecError::Invalid {
                what,
                detail: format!("unexpected command {} (want {want})", self.cmd),
            });
        }
        Ok(())
    }

    /// A service dump entry or GET_SERVICE reply (command `IPVS_CMD_NEW_SERVICE`).
    pub fn to_service(&self) -> Result<Service, CodecError> {
        self.expect_cmd(IPVS_CMD_NEW_SERVICE, "service reply")?;
        let attrs = self.attrs.iter().find_map(|a| match a {
            IpvsAttr::Service(s) => Some(s),
            _ => None,
        });
        let attrs = attrs.ok_or(CodecError::Missing {
            what: "service reply",
            attr: "IPVS_CMD_ATTR_SERVICE",
        })?;
        service_from_attrs(attrs)
    }

    /// A destination dump entry (command `IPVS_CMD_NEW_DEST`).
    pub fn to_destination(&self, service_ipv6: bool) -> Result<Destination, CodecError> {
        self.expect_cmd(IPVS_CMD_NEW_DEST, "destination reply")?;
        let attrs = self.attrs.iter().find_map(|a| match a {
            IpvsAttr::Dest(d) => Some(d),
            _ => None,
        });
        let attrs = attrs.ok_or(CodecError::Missing {
            what: "destination reply",
            attr: "IPVS_CMD_ATTR_DEST",
        })?;
        dest_from_attrs(attrs, service_ipv6)
    }

    /// The GET_INFO reply (command `IPVS_CMD_SET_INFO`); both attributes are mandatory.
    pub fn to_info(&self) -> Result<Info, CodecError> {
        self.expect_cmd(IPVS_CMD_SET_INFO, "info reply")?;
        let (mut version, mut size) = (None, None);
        for a in &self.attrs {
            match a {
                IpvsAttr::InfoVersion(v) => version = Some(*v),
                IpvsAttr::InfoConnTabSize(v) => size = Some(*v),
                _ => {}
            }
        }
        Ok(Info {
            version: version.ok_or(CodecError::Missing {
                what: "info reply",
                attr: "IPVS_INFO_ATTR_VERSION",
            })?,
            conn_tab_size: size.ok_or(CodecError::Missing {
                what: "info reply",
                attr: "IPVS_INFO_ATTR_CONN_TAB_SIZE",
            })?,
        })
    }

    /// The GET_CONFIG reply (command `IPVS_CMD_SET_CONFIG`).
    pub fn to_timeouts(&self) -> Result<Timeouts, CodecError> {
        self.expect_cmd(IPVS_CMD_SET_CONFIG, "config reply")?;
        let mut t = Timeouts::default();
        for a in &self.attrs {
            match a {
                IpvsAttr::TimeoutTcp(v) => t.tcp = *v,
                IpvsAttr::TimeoutTcpFin(v) => t.tcp_fin = *v,
                IpvsAttr::TimeoutUdp(v) => t.udp = *v,
                _ => {}
            }
        }
        Ok(t)
    }
}

impl GenlFamily for IpvsMessage {
    fn family_name() -> &'static str {
        IPVS_GENL_NAME
    }

    fn command(&self) -> u8 {
        self.cmd
    }

    fn version(&self) -> u8 {
        IPVS_GENL_VERSION
    }
}

impl Emitable for IpvsMessage {
    fn buffer_len(&self) -> usize {
        self.attrs.as_slice().buffer_len()
    }

    fn emit(&self, buffer: &mut [u8]) {
        self.attrs.as_slice().emit(buffer)
    }
}

impl ParseableParametrized<[u8], GenlHeader> for IpvsMessage {
    fn parse_with_param(buf: &[u8], header: GenlHeader) -> Result<Self, DecodeError> {
        IpvsMessage::parse(header.cmd, buf).map_err(|e| DecodeError::from(e.to_string()))
    }
}
