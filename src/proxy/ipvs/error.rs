//! Errors of the IPVS codec and client.

use std::fmt;

/// What a request was trying to do; gives kernel errors their meaning (the same errno means
/// different things for different commands, as in ipvsadm's `ipvs_strerror`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpKind {
    ResolveFamily,
    GetInfo,
    GetConfig,
    SetConfig,
    GetServices,
    GetService,
    AddService,
    UpdateService,
    DeleteService,
    GetDestinations,
    AddDestination,
    UpdateDestination,
    DeleteDestination,
    Flush,
}

impl fmt::Display for OpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OpKind::ResolveFamily => "resolve generic netlink family IPVS",
            OpKind::GetInfo => "get IPVS info",
            OpKind::GetConfig => "get IPVS timeouts",
            OpKind::SetConfig => "set IPVS timeouts",
            OpKind::GetServices => "list services",
            OpKind::GetService => "get service",
            OpKind::AddService => "add service",
            OpKind::UpdateService => "update service",
            OpKind::DeleteService => "delete service",
            OpKind::GetDestinations => "list destinations",
            OpKind::AddDestination => "add destination",
            OpKind::UpdateDestination => "update destination",
            OpKind::DeleteDestination => "delete destination",
            OpKind::Flush => "flush IPVS",
        })
    }
}

/// A message (or part of one) that cannot be decoded, or a value that cannot be encoded.
/// Never a panic: every length is checked before it is used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("{what}: truncated: {have} bytes, need {need}")]
    Truncated {
        what: &'static str,
        need: usize,
        have: usize,
    },
    #[error("{what}: invalid length {len}")]
    BadLength { what: &'static str, len: usize },
    #[error("{what}: missing {attr}")]
    Missing {
        what: &'static str,
        attr: &'static str,
    },
    #[error("{what}: {detail}")]
    Invalid { what: &'static str, detail: String },
    /// From the netlink-packet-* parsers (attribute framing, genl header).
    #[error("netlink: {0}")]
    Netlink(String),
}

impl From<netlink_packet_core::DecodeError> for CodecError {
    fn from(e: netlink_packet_core::DecodeError) -> Self {
        CodecError::Netlink(e.to_string())
    }
}

/// Everything [`super::IpvsClient`] can fail with.
#[derive(Debug, thiserror::Error)]
pub enum IpvsError {
    /// The generic-netlink family `IPVS` does not exist: the module is not loaded (or not
    /// built), or the netns has no IPVS.
    #[error("IPVS is not available in this kernel: the generic netlink family \"IPVS\" was not found ({0}); kernels before 5.16 do not load ip_vs on demand: load it on the host (modprobe ip_vs; /etc/modules-load.d/ip_vs.conf), or use proxy.backend: nftables")]
    NotAvailable(std::io::Error),
    /// The kernel refused a request.
    #[error("{op}{}{target}: {message} (errno {errno}: {}){}",
        if .target.is_empty() { "" } else { " " },
        std::io::Error::from_raw_os_error(*.errno),
        .extack.as_deref().map(|m| format!("; kernel says: {m}")).unwrap_or_default())]
    Kernel {
        op: OpKind,
        /// The object, e.g. `TCP  10.0.0.1:80 -> 10.1.0.7:8080`; empty for global commands.
        target: String,
        /// Positive errno (`libc::ESRCH`, ...).
        errno: i32,
        /// What the errno means for this command.
        message: &'static str,
        /// Extended-ACK message, when the kernel sent one.
        extack: Option<String>,
    },
    /// Socket creation or I/O failed.
    #[error("IPVS netlink socket: {0}")]
    Io(#[from] std::io::Error),
    /// The kernel sent something we cannot decode.
    #[error("malformed IPVS netlink message: {0}")]
    Codec(#[from] CodecError),
    /// The request itself is invalid (caught before sending).
    #[error("invalid IPVS request: {0}")]
    Invalid(String),
    /// The reply sequence did not make sense (wrong sequence number, missing ACK, overrun).
    #[error("unexpected IPVS netlink reply: {0}")]
    Protocol(String),
}

impl IpvsError {
    pub(crate) fn kernel(op: OpKind, target: String, errno: i32, extack: Option<String>) -> Self {
        IpvsError::Kernel {
            op,
            target,
            errno,
            message: errno_meaning(op, errno),
            extack,
        }
    }

    /// The kernel's errno, for [`IpvsError::Kernel`] and OS-level I/O errors.
    pub fn errno(&self) -> Option<i32> {
        match self {
            IpvsError::Kernel { errno, .. } => Some(*errno),
            IpvsError::Io(e) | IpvsError::NotAvailable(e) => e.raw_os_error(),
            _ => None,
        }
    }

    /// The service (ESRCH) or destination (ENOENT on update/delete) does not exist.
    pub fn is_not_found(&self) -> bool {
        match self {
            IpvsError::Kernel { op, errno, .. } => {
                *errno == libc::ESRCH
                    || (*errno == libc::ENOENT
                        && matches!(op, OpKind::UpdateDestination | OpKind::DeleteDestination))
            }
            _ => false,
        }
    }

    /// The service or destination exists already (EEXIST).
    pub fn is_already_exists(&self) -> bool {
        matches!(self, IpvsError::Kernel { errno, .. } if *errno == libc::EEXIST)
    }
}

/// ipvsadm's `ipvs_strerror` table (libipvs/libipvs.c), extended with the kernel's reasons
/// from net/netfilter/ipvs/ip_vs_ctl.c. A missing service is ESRCH, a missing destination
/// ENOENT, an unknown scheduler ENOENT on add/update service.
pub fn errno_meaning(op: OpKind, errno: i32) -> &'static str {
    use OpKind::*;
    match (op, errno) {
        (AddService, libc::EEXIST) => "service already exists",
        (AddService | UpdateService, libc::ENOENT) => {
            "scheduler or persistence engine not found (is the ip_vs_<sched> module available?)"
        }
        (UpdateService | DeleteService | GetService, libc::ESRCH) => "no such service",
        (AddDestination | UpdateDestination | DeleteDestination, libc::ESRCH) => {
            "service not defined"
        }
        (AddDestination, libc::EEXIST) => "destination already exists",
        (UpdateDestination | DeleteDestination, libc::ENOENT) => "no such destination",
        (ResolveFamily, libc::ENOENT) => "IPVS is not available in this kernel (modprobe ip_vs)",
        (_, libc::EPERM) => "permission denied (needs CAP_NET_ADMIN in the network namespace)",
        (_, libc::EINVAL) => {
            "invalid request (missing attribute, bad address or netmask, weight out of range, ...)"
        }
        (_, libc::ENOPROTOOPT) => "protocol not available",
        (_, libc::ENOMEM) => "kernel memory allocation failed",
        (_, libc::EOPNOTSUPP) => "operation not supported with IPv6",
        (_, libc::EAFNOSUPPORT) => {
            "address family not supported (mixed families need tunnel forwarding)"
        }
        (_, libc::EMSGSIZE) => "message too large or wrong IPVS module version",
        (_, libc::ENOBUFS) => "netlink receive buffer overrun (replies lost)",
        _ => "request failed",
    }
}
