//! Numbers from the kernel's `include/uapi/linux/ip_vs.h` (generic-netlink interface, version 1).
//!
//! Byte order, as the kernel reads and writes them (net/netfilter/ipvs/ip_vs_ctl.c):
//! ports and the IPv4 persistence netmask are big endian (`nla_put_be16/be32`), everything else
//! is host order. Addresses are always 16 bytes (`union nf_inet_addr`), IPv4 in the first 4.

/// Generic-netlink family name, resolved with `CTRL_CMD_GETFAMILY`.
pub const IPVS_GENL_NAME: &str = "IPVS";
/// `IPVS_GENL_VERSION`.
pub const IPVS_GENL_VERSION: u8 = 0x1;

/// `IP_VS_SCHEDNAME_MAXLEN`, including the terminating NUL.
pub const IP_VS_SCHEDNAME_MAXLEN: usize = 16;
/// `IP_VS_PENAME_MAXLEN`, including the terminating NUL.
pub const IP_VS_PENAME_MAXLEN: usize = 16;

// enum { IPVS_CMD_* }
pub const IPVS_CMD_UNSPEC: u8 = 0;
pub const IPVS_CMD_NEW_SERVICE: u8 = 1;
pub const IPVS_CMD_SET_SERVICE: u8 = 2;
pub const IPVS_CMD_DEL_SERVICE: u8 = 3;
pub const IPVS_CMD_GET_SERVICE: u8 = 4;
pub const IPVS_CMD_NEW_DEST: u8 = 5;
pub const IPVS_CMD_SET_DEST: u8 = 6;
pub const IPVS_CMD_DEL_DEST: u8 = 7;
pub const IPVS_CMD_GET_DEST: u8 = 8;
pub const IPVS_CMD_NEW_DAEMON: u8 = 9;
pub const IPVS_CMD_DEL_DAEMON: u8 = 10;
pub const IPVS_CMD_GET_DAEMON: u8 = 11;
pub const IPVS_CMD_SET_CONFIG: u8 = 12;
pub const IPVS_CMD_GET_CONFIG: u8 = 13;
/// Only used as the command of the `IPVS_CMD_GET_INFO` reply.
pub const IPVS_CMD_SET_INFO: u8 = 14;
pub const IPVS_CMD_GET_INFO: u8 = 15;
pub const IPVS_CMD_ZERO: u8 = 16;
pub const IPVS_CMD_FLUSH: u8 = 17;

// enum { IPVS_CMD_ATTR_* } - top level attributes of every message
pub const IPVS_CMD_ATTR_SERVICE: u16 = 1;
pub const IPVS_CMD_ATTR_DEST: u16 = 2;
pub const IPVS_CMD_ATTR_DAEMON: u16 = 3;
pub const IPVS_CMD_ATTR_TIMEOUT_TCP: u16 = 4;
pub const IPVS_CMD_ATTR_TIMEOUT_TCP_FIN: u16 = 5;
pub const IPVS_CMD_ATTR_TIMEOUT_UDP: u16 = 6;

// enum { IPVS_SVC_ATTR_* } - nested in IPVS_CMD_ATTR_SERVICE
pub const IPVS_SVC_ATTR_AF: u16 = 1; // u16
pub const IPVS_SVC_ATTR_PROTOCOL: u16 = 2; // u16
pub const IPVS_SVC_ATTR_ADDR: u16 = 3; // 16 bytes
pub const IPVS_SVC_ATTR_PORT: u16 = 4; // be16
pub const IPVS_SVC_ATTR_FWMARK: u16 = 5; // u32
pub const IPVS_SVC_ATTR_SCHED_NAME: u16 = 6; // NUL-terminated string
pub const IPVS_SVC_ATTR_FLAGS: u16 = 7; // struct ip_vs_flags { u32 flags; u32 mask; }
pub const IPVS_SVC_ATTR_TIMEOUT: u16 = 8; // u32 seconds
pub const IPVS_SVC_ATTR_NETMASK: u16 = 9; // be32 (v4 mask) / prefix length (v6)
pub const IPVS_SVC_ATTR_STATS: u16 = 10; // nested IPVS_STATS_ATTR_*
pub const IPVS_SVC_ATTR_PE_NAME: u16 = 11; // NUL-terminated string
pub const IPVS_SVC_ATTR_STATS64: u16 = 12; // nested IPVS_STATS_ATTR_*, all u64

// enum { IPVS_DEST_ATTR_* } - nested in IPVS_CMD_ATTR_DEST
pub const IPVS_DEST_ATTR_ADDR: u16 = 1; // 16 bytes
pub const IPVS_DEST_ATTR_PORT: u16 = 2; // be16
pub const IPVS_DEST_ATTR_FWD_METHOD: u16 = 3; // u32
pub const IPVS_DEST_ATTR_WEIGHT: u16 = 4; // u32
pub const IPVS_DEST_ATTR_U_THRESH: u16 = 5; // u32
pub const IPVS_DEST_ATTR_L_THRESH: u16 = 6; // u32
pub const IPVS_DEST_ATTR_ACTIVE_CONNS: u16 = 7; // u32
pub const IPVS_DEST_ATTR_INACT_CONNS: u16 = 8; // u32
pub const IPVS_DEST_ATTR_PERSIST_CONNS: u16 = 9; // u32
pub const IPVS_DEST_ATTR_STATS: u16 = 10; // nested
pub const IPVS_DEST_ATTR_ADDR_FAMILY: u16 = 11; // u16
pub const IPVS_DEST_ATTR_STATS64: u16 = 12; // nested
pub const IPVS_DEST_ATTR_TUN_TYPE: u16 = 13; // u8
pub const IPVS_DEST_ATTR_TUN_PORT: u16 = 14; // be16
pub const IPVS_DEST_ATTR_TUN_FLAGS: u16 = 15; // u16

// enum { IPVS_STATS_ATTR_* } - nested in *_ATTR_STATS / *_ATTR_STATS64
pub const IPVS_STATS_ATTR_CONNS: u16 = 1;
pub const IPVS_STATS_ATTR_INPKTS: u16 = 2;
pub const IPVS_STATS_ATTR_OUTPKTS: u16 = 3;
pub const IPVS_STATS_ATTR_INBYTES: u16 = 4;
pub const IPVS_STATS_ATTR_OUTBYTES: u16 = 5;
pub const IPVS_STATS_ATTR_CPS: u16 = 6;
pub const IPVS_STATS_ATTR_INPPS: u16 = 7;
pub const IPVS_STATS_ATTR_OUTPPS: u16 = 8;
pub const IPVS_STATS_ATTR_INBPS: u16 = 9;
pub const IPVS_STATS_ATTR_OUTBPS: u16 = 10;
/// Alignment padding for u64 attributes (`nla_put_u64_64bit`); carries nothing.
pub const IPVS_STATS_ATTR_PAD: u16 = 11;

// enum { IPVS_INFO_ATTR_* } - top level of the IPVS_CMD_GET_INFO reply
pub const IPVS_INFO_ATTR_VERSION: u16 = 1; // u32, e.g. 0x010201 = 1.2.1
pub const IPVS_INFO_ATTR_CONN_TAB_SIZE: u16 = 2; // u32

// Service flags (IP_VS_SVC_F_*)
pub const IP_VS_SVC_F_PERSISTENT: u32 = 0x0001;
pub const IP_VS_SVC_F_HASHED: u32 = 0x0002;
pub const IP_VS_SVC_F_ONEPACKET: u32 = 0x0004;
pub const IP_VS_SVC_F_SCHED1: u32 = 0x0008;
pub const IP_VS_SVC_F_SCHED2: u32 = 0x0010;
pub const IP_VS_SVC_F_SCHED3: u32 = 0x0020;

// Destination forwarding methods (IP_VS_CONN_F_FWD_MASK bits of conn_flags)
pub const IP_VS_CONN_F_FWD_MASK: u32 = 0x0007;
pub const IP_VS_CONN_F_MASQ: u32 = 0x0000;
pub const IP_VS_CONN_F_LOCALNODE: u32 = 0x0001;
pub const IP_VS_CONN_F_TUNNEL: u32 = 0x0002;
pub const IP_VS_CONN_F_DROUTE: u32 = 0x0003;
pub const IP_VS_CONN_F_BYPASS: u32 = 0x0004;

// Tunnel types (IP_VS_CONN_F_TUNNEL_TYPE_*)
pub const IP_VS_CONN_F_TUNNEL_TYPE_IPIP: u8 = 0;
pub const IP_VS_CONN_F_TUNNEL_TYPE_GUE: u8 = 1;
pub const IP_VS_CONN_F_TUNNEL_TYPE_GRE: u8 = 2;

// Generic-netlink controller (linux/genetlink.h), for the family lookup.
pub const GENL_ID_CTRL: u16 = 0x10;
pub const CTRL_CMD_GETFAMILY: u8 = 3;
pub const CTRL_ATTR_FAMILY_ID: u16 = 1;
pub const CTRL_ATTR_FAMILY_NAME: u16 = 2;
pub const CTRL_ATTR_VERSION: u16 = 3;
pub const CTRL_ATTR_MAXATTR: u16 = 5;

// netlink error TLVs (linux/netlink.h, enum nlmsgerr_attrs), for extended ACKs.
pub const NLMSGERR_ATTR_MSG: u16 = 1;

// Address families as the kernel encodes them.
pub const AF_INET: u16 = libc::AF_INET as u16;
pub const AF_INET6: u16 = libc::AF_INET6 as u16;
