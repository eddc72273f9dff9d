//! fakekube: an in-process fake Kubernetes API server with real list/watch semantics, for
//! tests of sdn-tunnel (see DESIGN.md, "Testing pyramid", item 4).
//!
//! It speaks plain HTTP/1.1 + JSON on 127.0.0.1, so kube-rs (`kube::Api`, `kube::runtime::watcher`)
//! works against it unchanged. Served: nodes, services, endpointslices (and namespaces, pods,
//! configmaps), `/version`, legacy discovery. Semantics follow the apiserver: one global
//! resourceVersion counter; LIST with `limit`/`continue` (snapshot at the first page's RV),
//! label and field selectors; WATCH from a resourceVersion with ADDED/MODIFIED/DELETED,
//! selector transitions as ADDED/DELETED, BOOKMARKs, `timeoutSeconds`, and an ERROR event with
//! a 410 `Status` when the RV is older than the compacted history; POST/PUT/PATCH/DELETE with
//! `Status` errors (404 NotFound, 409 AlreadyExists/Conflict, 400 BadRequest, 410 Expired).
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! let api = fakekube::FakeApi::start().await?;
//! api.apply(fakekube::gen::node("n1", "192.168.0.1", None, &["10.244.0.0/24"])).unwrap();
//! api.write_kubeconfig("/tmp/kubeconfig", "fake")?;
//! api.set_down(true); // outage: connections cut and refused
//! api.set_down(false);
//! api.compact(); // watches get 410 and re-list
//! assert!(api.lists("nodes") == 0);
//! # Ok(()) }
//! ```

mod clock;
pub mod discovery;
mod error;
pub mod gen;
mod http;
mod kubeconfig;
mod log;
pub mod patch;
mod query;
pub mod resources;
pub mod selector;
mod server;
mod store;
mod watch;

pub use error::ApiError;
pub use log::{RequestRecord, Verb, MAX_RECORDS};
pub use server::{FakeApi, DEFAULT_BOOKMARK_INTERVAL};
pub use store::DEFAULT_MAX_HISTORY;
