//! The agent's DNS responder (issue #5): answers `<svc>.<ns>.svc.cluster.<remote>` per remote
//! cluster and the merged `<svc>.<ns>.svc.<clusterset domain>` from the same confined
//! services the proxy programs.
//!
//! - [`zone`]: pure. [`Zones::build`] turns a snapshot of [`crate::model::DesiredService`]s
//!   into an index (one hash lookup per query); [`Zones::lookup`] maps (name, type) to an
//!   [`Answer`] (records borrowed from the index, rcode, SOA for negative answers).
//! - [`server`]: UDP and TCP on one address, EDNS0, truncation, hostile-input handling and
//!   counters by rcode. The agent swaps zones on each re-plan with [`DnsHandle::set_zones`].
//! - [`forward`]: relays names outside our zones to `dns.forwarders` when configured (else
//!   they are REFUSED); never our own zones.
//!
//! ```no_run
//! # async fn f(services: Vec<sdn_tunnel::model::DesiredService>) -> std::io::Result<()> {
//! use sdn_tunnel::dns::{DnsHandle, DnsServer, Zones, DEFAULT_CLUSTERSET_DOMAIN, DEFAULT_TTL};
//! let handle = DnsHandle::new(Zones::build(&services, DEFAULT_CLUSTERSET_DOMAIN, DEFAULT_TTL));
//! let server = DnsServer::bind("0.0.0.0:53".parse().unwrap(), handle.clone()).await?;
//! tokio::spawn(server.run());
//! // on every re-plan:
//! handle.set_zones(Zones::build(&services, DEFAULT_CLUSTERSET_DOMAIN, DEFAULT_TTL));
//! # Ok(()) }
//! ```

pub mod forward;
pub mod server;
mod udp_pktinfo;
pub mod zone;

pub use server::{DnsCounters, DnsCountersSnapshot, DnsHandle, DnsServer};
pub use zone::{Answer, ZoneStats, Zones, DEFAULT_CLUSTERSET_DOMAIN, DEFAULT_TTL};
