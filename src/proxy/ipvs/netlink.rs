//! Netlink framing for the IPVS client: requests appended to a reusable buffer (so several can
//! go out in one `send`), and replies walked one by one out of a receive buffer. Sans-I/O, so
//! it is unit-tested without a socket.
//!
//! Requests are built with netlink-packet-core's `NetlinkMessage` around
//! netlink-packet-generic's `GenlMessage<IpvsMessage>` (and `GenlMessage<GenlCtrl>` for the
//! family lookup). Replies are framed with `NetlinkBuffer::new_checked` and `ErrorBuffer`,
//! and decoded with our own typed errors; extended-ACK TLVs are read here because
//! netlink-packet-core 0.9 leaves them in the raw error payload.

use netlink_packet_core::{
    ErrorBuffer, NetlinkBuffer, NetlinkMessage, NetlinkSerializable, NlasIterator, NLMSG_DONE,
    NLMSG_ERROR, NLMSG_NOOP, NLMSG_OVERRUN, NLM_F_ACK_TLVS, NLM_F_CAPPED,
};
use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_packet_generic::{GenlHeader, GenlMessage};

use super::codec::IpvsMessage;
use super::consts::*;
use super::error::CodecError;

/// `sizeof(struct nlmsghdr)`.
pub const NLMSG_HDRLEN: usize = 16;
/// `GENL_HDRLEN`.
pub const GENL_HDRLEN: usize = 4;

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn push<T: NetlinkSerializable>(buf: &mut Vec<u8>, msg: &NetlinkMessage<T>) -> usize {
    let start = align4(buf.len());
    let len = msg.buffer_len();
    buf.resize(start + len, 0);
    msg.serialize(&mut buf[start..start + len]);
    len
}

/// Appends one IPVS request (nlmsghdr + genlmsghdr + attributes) at the next 4-byte boundary
/// of `buf`; returns its length. `flags` are the `NLM_F_*` request flags.
pub fn push_request(
    buf: &mut Vec<u8>,
    family_id: u16,
    flags: u16,
    seq: u32,
    msg: IpvsMessage,
) -> usize {
    let mut genl = GenlMessage::from_payload(msg);
    genl.set_resolved_family_id(family_id);
    let mut nl = NetlinkMessage::from(genl);
    nl.header.flags = flags;
    nl.header.sequence_number = seq;
    nl.finalize();
    push(buf, &nl)
}

/// Appends a `CTRL_CMD_GETFAMILY` request for `name` to the nlctrl family.
pub fn push_get_family(buf: &mut Vec<u8>, flags: u16, seq: u32, name: &str) -> usize {
    let genl = GenlMessage::from_payload(GenlCtrl {
        cmd: GenlCtrlCmd::GetFamily,
        nlas: vec![GenlCtrlAttrs::FamilyName(name.to_string())],
    });
    let mut nl = NetlinkMessage::from(genl);
    nl.header.flags = flags;
    nl.header.sequence_number = seq;
    nl.finalize();
    push(buf, &nl)
}

/// Reads `CTRL_ATTR_FAMILY_ID` out of a `CTRL_CMD_NEWFAMILY` reply payload (after the
/// nlmsghdr). Other attributes (ops, policies, groups; more in newer kernels) are skipped.
pub fn parse_family_id(payload: &[u8]) -> Result<u16, CodecError> {
    GenlHeader::parse(payload)?;
    for nla in NlasIterator::new(&payload[GENL_HDRLEN..]) {
        let nla = nla?;
        if nla.kind() == CTRL_ATTR_FAMILY_ID {
            let v = nla.value();
            let b: [u8; 2] = v.try_into().map_err(|_| CodecError::BadLength {
                what: "CTRL_ATTR_FAMILY_ID",
                len: v.len(),
            })?;
            return Ok(u16::from_ne_bytes(b));
        }
    }
    Err(CodecError::Missing {
        what: "family reply",
        attr: "CTRL_ATTR_FAMILY_ID",
    })
}

/// What one received netlink message is.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply<'a> {
    /// `NLMSG_ERROR` with code 0.
    Ack,
    /// `NLMSG_ERROR` with a negative code; `errno` is positive.
    Error {
        errno: i32,
        extack: Option<String>,
    },
    /// End of a dump; a negative code means the dump failed.
    Done {
        code: i32,
    },
    Noop,
    Overrun,
    /// Anything else: a family message; `payload` starts with the genlmsghdr.
    Data {
        msg_type: u16,
        payload: &'a [u8],
    },
}

/// One message from a receive buffer, with the fields of its nlmsghdr that matter.
#[derive(Debug, PartialEq, Eq)]
pub struct Received<'a> {
    pub seq: u32,
    pub flags: u16,
    pub reply: Reply<'a>,
}

/// Walks the netlink messages in one datagram. Stops after the first framing error.
pub struct Messages<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Messages<'a> {
    pub fn new(buf: &'a [u8]) -> Messages<'a> {
        Messages { buf, pos: 0 }
    }
}

impl<'a> Iterator for Messages<'a> {
    type Item = Result<Received<'a>, CodecError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.buf.len() {
            return None;
        }
        let rest = &self.buf[self.pos..];
        let nb = match NetlinkBuffer::new_checked(rest) {
            Ok(nb) => nb,
            Err(e) => {
                self.pos = self.buf.len();
                return Some(Err(CodecError::Netlink(e.to_string())));
            }
        };
        let len = nb.length() as usize;
        self.pos += align4(len);
        let (seq, flags, msg_type) = (nb.sequence_number(), nb.flags(), nb.message_type());
        let payload = &rest[NLMSG_HDRLEN..len];
        let reply = match msg_type {
            NLMSG_ERROR => parse_error(flags, payload),
            NLMSG_DONE => parse_done(payload),
            NLMSG_NOOP => Ok(Reply::Noop),
            NLMSG_OVERRUN => Ok(Reply::Overrun),
            _ => Ok(Reply::Data { msg_type, payload }),
        };
        if reply.is_err() {
            self.pos = self.buf.len();
        }
        Some(reply.map(|reply| Received { seq, flags, reply }))
    }
}

fn parse_done(payload: &[u8]) -> Result<Reply<'_>, CodecError> {
    if payload.is_empty() {
        return Ok(Reply::Done { code: 0 });
    }
    let b: [u8; 4] =
        payload
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .ok_or(CodecError::Truncated {
                what: "NLMSG_DONE",
                need: 4,
                have: payload.len(),
            })?;
    Ok(Reply::Done {
        code: i32::from_ne_bytes(b),
    })
}

/// `struct nlmsgerr { int error; struct nlmsghdr msg; }`, then (if not capped and an error)
/// the rest of the request, then (with `NLM_F_ACK_TLVS`) `NLMSGERR_ATTR_*` TLVs.
fn parse_error(flags: u16, payload: &[u8]) -> Result<Reply<'_>, CodecError> {
    let eb = ErrorBuffer::new_checked(payload).map_err(|_| CodecError::Truncated {
        what: "NLMSG_ERROR",
        need: 4,
        have: payload.len(),
    })?;
    let code = eb.code().map_or(0, |c| c.get());
    let orig = eb.payload();
    if orig.len() < NLMSG_HDRLEN {
        return Err(CodecError::Truncated {
            what: "NLMSG_ERROR original header",
            need: NLMSG_HDRLEN,
            have: orig.len(),
        });
    }
    if code == 0 {
        return Ok(Reply::Ack);
    }
    let mut extack = None;
    if flags & NLM_F_ACK_TLVS != 0 {
        let orig_len = u32::from_ne_bytes([orig[0], orig[1], orig[2], orig[3]]) as usize;
        let skip = if flags & NLM_F_CAPPED != 0 {
            NLMSG_HDRLEN
        } else {
            align4(orig_len)
        };
        let tlvs = orig.get(skip..).ok_or(CodecError::Truncated {
            what: "NLMSG_ERROR echoed request",
            need: skip,
            have: orig.len(),
        })?;
        for nla in NlasIterator::new(tlvs) {
            let nla = nla?;
            if nla.kind() == NLMSGERR_ATTR_MSG {
                let v = nla.value();
                let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
                extack = Some(String::from_utf8_lossy(&v[..end]).into_owned());
            }
        }
    }
    // The kernel sends -errno; a (malformed) positive code is still reported as positive.
    Ok(Reply::Error {
        errno: code.saturating_abs(),
        extack,
    })
}
