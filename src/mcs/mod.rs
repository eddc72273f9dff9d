//! The Multi-Cluster Services API (KEP-1645, sigs.k8s.io/mcs-api v1beta1; issue 17), the pure
//! part: no I/O. The agent feeds it (`agent::remotes` plans the clusterset, `agent::mcs_writer`
//! and `agent::mcs_lease` write the objects).
//!
//! - [`clusterset`]: the clusterset's services as a node serves them: every exported
//!   (namespace, name) of the local cluster and the remotes, merged, with ClusterSetIPs and
//!   each exporting cluster's endpoints in a failover tier (local first).
//! - [`clusterset_ip`]: one ClusterSetIP per exported (namespace, name), computed identically by
//!   every node of every cluster from `mcs.clusterSetCIDRs` and the set of exported services.
//! - [`conflict`]: the ServiceImport derived from the ServiceExports of one (namespace, name) in
//!   several clusters, and the conditions to set on each ServiceExport (the KEP's conflict
//!   resolution: oldest export first).
//! - [`lease_rules`]: who writes a cluster's MCS objects (Lease election rules).
//! - [`objects`]: ServiceImports and ServiceExport conditions as JSON.
//!
//! See docs/mcs.md (users) and docs/mcs-notes.md (upstream versions, conformance suite).

pub mod clusterset;
pub mod clusterset_ip;
pub mod conflict;
pub mod lease_rules;
pub mod objects;

use std::fmt;

/// An exported service: the (namespace, name) shared by a ServiceExport, its Service and the
/// derived ServiceImport. Ordered by namespace, then name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    pub namespace: String,
    pub name: String,
}

impl ServiceKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}
