//! Remote services for the DNS tests.

use sdn_tunnel::model::{build, DesiredService, Endpoint};

/// `default/<name>` of `remote` with one port `http` 80/TCP; headless when `ips` is empty.
pub fn service(remote: &str, name: &str, ips: &[&str], endpoints: Vec<Endpoint>) -> DesiredService {
    build::service("default", name)
        .with_ips(ips)
        .with_endpoints(endpoints)
        .of(remote)
}
