//! Removing everything of ours (routes with our protocol, the tunnel device, our nftables
//! table, our sockets, and with the whole config the service proxy's objects). Idempotent;
//! touches nothing else. The one teardown path: `sdn-tunnel cleanup` and an uninstalled agent
//! (agent::shutdown) both come here.

use crate::config::{Config, TunnelConfig};
use crate::{link, nft, routes::Routes};
use anyhow::{Context, Result};

#[derive(Debug, Default, PartialEq, Eq)]
pub struct CleanupReport {
    pub routes_removed: usize,
    pub device_removed: bool,
    pub nft_table_removed: bool,
    pub sockets_removed: usize,
    /// What the service proxy's teardown removed (empty: nothing, or no full config).
    pub proxy: String,
}

/// `full`: the whole config, when it parses; the proxy's objects are found through the
/// remotes' service CIDRs, so without it they are left alone.
pub async fn cleanup(t: &TunnelConfig, full: Option<&Config>) -> Result<CleanupReport> {
    let routes = Routes::new(t.route_protocol).context("open rtnetlink")?;
    let mut report = CleanupReport {
        routes_removed: routes.remove_all().await.context("remove our routes")?,
        ..Default::default()
    };
    if let Some(info) = link::get(routes.handle(), &t.device).await? {
        // Only a TUN device by that name is ours; refuse to delete anything else.
        if info.kind.as_deref().is_some_and(|k| k != "tun") {
            anyhow::bail!(
                "{} exists but is a {:?} device, not our TUN device; not touching it",
                t.device,
                info.kind
            );
        }
        report.device_removed = link::delete(routes.handle(), &t.device).await?;
    }
    report.nft_table_removed = nft::delete_table(&t.nft_table())?;
    for p in [t.uapi_socket_path(), t.control_socket_path()] {
        if std::fs::remove_file(p).is_ok() {
            report.sockets_removed += 1;
        }
    }
    if let Some(cfg) = full {
        report.proxy = crate::agent::proxy::teardown(cfg).await;
    }
    Ok(report)
}
