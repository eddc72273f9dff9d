//! The self-advertisement loop: keeps our Node's annotations equal to the device's current
//! public key and our endpoint; re-checks periodically (someone may have edited the Node) and
//! at once after a key rotation. Failures are retried with backoff and never stop the tunnel.

use crate::config::EndpointPolicy;
use crate::control::AdvertiseStatus;
use crate::source::kube_client::{self, LocalApi};
use crate::source::now_unix;
use crate::source::own_node::Advertiser;
use crate::status_board;
use crate::tunnel::Device;
use ipnetwork::IpNetwork;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};

const RECHECK: Duration = Duration::from_secs(60);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

pub struct AdvertiseTask {
    pub api: LocalApi,
    pub node_name: String,
    pub policy: EndpointPolicy,
    pub listen_port: u16,
    pub device: Arc<Device>,
    pub key_changed: Arc<Notify>,
    pub status: watch::Sender<Option<AdvertiseStatus>>,
    /// Our Node's pod CIDRs, once read.
    pub pod_cidrs: watch::Sender<Option<Vec<IpNetwork>>>,
}

impl AdvertiseTask {
    pub async fn run(self) -> std::io::Result<()> {
        let mut advertiser: Option<Advertiser> = None;
        let mut backoff = Duration::from_secs(1);
        let mut last_error: Option<String> = None;
        let mut last_key = None;
        loop {
            let key = self.device.public_key();
            let result = match &advertiser {
                Some(a) => a.advertise(&key).await,
                None => match kube_client::local_client(&self.api).await {
                    Ok(c) => {
                        let a = Advertiser::new(c, &self.node_name, self.policy, self.listen_port);
                        let r = a.advertise(&key).await;
                        advertiser = Some(a);
                        r
                    }
                    Err(e) => Err(e.into()),
                },
            };
            let wait = match result {
                Ok(own) => {
                    if own.patched || last_key != Some(key) || last_error.is_some() {
                        tracing::info!(node = %self.node_name,
                            public_key = %own.advertised.public_key,
                            endpoint = ?own.advertised.endpoint.map(|e| e.to_string()),
                            endpoint_override = ?own.endpoint_override,
                            "advertised on our Node");
                    }
                    last_key = Some(key);
                    last_error = None;
                    backoff = Duration::from_secs(1);
                    self.pod_cidrs.send_replace(Some(own.pod_cidrs.clone()));
                    self.set_status(|s| {
                        s.endpoint = own.advertised.endpoint.map(|e| e.to_string());
                        s.endpoint_override = own.endpoint_override.clone();
                        s.last_ok_unix = Some(now_unix());
                        s.last_error = None;
                    });
                    RECHECK
                }
                Err(e) => {
                    let msg = format!("{e:#}");
                    if last_error.as_deref() != Some(&msg) {
                        tracing::warn!(node = %self.node_name, api = %self.api, error = %msg,
                            "cannot advertise on our Node; retrying");
                    }
                    self.set_status(|s| s.last_error = Some(msg.clone()));
                    last_error = Some(msg);
                    let w = backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    w
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.key_changed.notified() => {}
            }
        }
    }

    fn set_status(&self, f: impl FnOnce(&mut AdvertiseStatus)) {
        let init = || AdvertiseStatus {
            api: self.api.to_string(),
            ..Default::default()
        };
        status_board::update(&self.status, init, f);
    }
}
