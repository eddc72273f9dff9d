//! The one shape both proxy backends have: the desired virtual services in, the kernel made
//! to match, a line for the log out. The proxy loop (`agent::proxy`) drives any of them.

use super::model::VirtualService;
use ipnetwork::IpNetwork;
use std::future::Future;
use std::sync::Arc;

pub trait ServiceBackend: Send {
    /// For logs and status.
    fn name(&self) -> &'static str;

    /// Makes the kernel hold exactly `desired` (our objects only). `protected`: service CIDRs
    /// of remotes not synced since start, whose services stay as the kernel holds them where
    /// the backend can tell them apart. `changed`: `desired` differs from the last sync (a
    /// rewrite of the same table is logged at debug only).
    fn sync(
        &mut self,
        desired: &Arc<Vec<VirtualService>>,
        protected: &[IpNetwork],
        changed: bool,
    ) -> impl Future<Output = Result<(), String>> + Send;

    /// The periodic resync: re-read the kernel next time (someone may have edited it).
    fn resync(&mut self) {}

    /// Connections are draining: sync again even without a change.
    fn has_draining(&self) -> bool {
        false
    }

    /// Rewrites its whole table from `desired` alone, so it must wait for every remote's
    /// first snapshot (or a timeout) before its first sync.
    fn needs_every_remote(&self) -> bool {
        false
    }
}
