//! What the agent shows operators beyond `status`: the HTTP endpoints (metrics and probes)
//! and one log line per peer state change.

use crate::config::Config;
use crate::control;
use crate::health::{self, Health, RemoteSync, Verdict};
use crate::http::Endpoints;
use crate::metrics::{self, Metrics};
use crate::status_board::StatusBoard;
use crate::tunnel::Device;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct AgentEndpoints {
    pub device: Arc<Device>,
    pub board: Arc<StatusBoard>,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    pub started: Instant,
    pub ready_timeout: Duration,
    pub peer_down_after: Duration,
}

impl AgentEndpoints {
    pub fn new(
        cfg: &Config,
        device: Arc<Device>,
        board: Arc<StatusBoard>,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
    ) -> AgentEndpoints {
        AgentEndpoints {
            device,
            board,
            metrics,
            health,
            started: Instant::now(),
            ready_timeout: Duration::from_secs(cfg.http.ready_timeout_seconds.into()),
            peer_down_after: Duration::from_secs(cfg.proxy.peer_down_after_seconds.into()),
        }
    }
}

impl Endpoints for AgentEndpoints {
    fn metrics(&self) -> String {
        let status = control::snapshot(&self.device, &self.board.facts());
        metrics::render(&metrics::RenderInput {
            status: &status,
            metrics: &self.metrics,
            now_unix: control::now_unix(),
            peer_down_after_secs: self.peer_down_after.as_secs(),
            ready: self.readyz().ok,
        })
    }

    fn healthz(&self) -> Verdict {
        self.health.liveness()
    }

    fn readyz(&self) -> Verdict {
        let remotes = self.board.remotes();
        let remotes: Vec<RemoteSync<'_>> = remotes
            .iter()
            .map(|r| RemoteSync {
                name: &r.name,
                synced: r.synced,
            })
            .collect();
        health::readiness(
            &self.health.liveness(),
            self.health.kernel_programmed(),
            &remotes,
            self.started.elapsed(),
            self.ready_timeout,
        )
    }
}

/// Logs a line when a peer comes up (first handshake, or again after being down) or goes
/// down (no handshake within the threshold), so logs tell the story without per-packet noise.
/// Peers judged down (no handshake within `proxy.peerDownAfterSeconds`), by remote and node
/// name: read once per poll, so the proxy's plan looks peers up here instead of taking each
/// peer's session lock (the packet threads' lock) per endpoint.
pub type DownPeers = HashMap<String, HashSet<String>>;

#[derive(Default)]
pub struct PeerWatch {
    up: HashMap<[u8; 32], bool>,
}

impl PeerWatch {
    /// Logs each peer's state change and returns the peers that are down. `judge`: whether
    /// peers can be judged at all (without keepalives an idle but healthy peer has no handshake
    /// either, and refusing it new connections would keep it idle). O(peers).
    pub fn poll(&mut self, device: &Device, threshold: Duration, judge: bool) -> DownPeers {
        let peers = device.peers();
        let mut next = HashMap::with_capacity(peers.peers.len());
        let mut down_peers = DownPeers::new();
        for p in &peers.peers {
            // One read of the peer's stats (it takes the session lock the packet threads use).
            let stats = p.stats();
            let down = p.is_down_with(stats.handshake_age, threshold);
            if judge && down {
                let info = p.info();
                if let Some(name) = info.name {
                    down_peers.entry(info.remote).or_default().insert(name);
                }
            }
            let up = stats.handshake_age.is_some() && !down;
            let was = self.up.get(&p.public_key).copied();
            match (was, up) {
                (Some(false) | None, true) => {
                    tracing::info!(peer = %p.label(), endpoint = ?p.endpoint(), "peer up")
                }
                (Some(true), false) => tracing::warn!(peer = %p.label(),
                    endpoint = ?p.endpoint(), after_secs = threshold.as_secs(),
                    "peer down: no handshake"),
                // Never up since it was added: say so once, when it crosses the threshold.
                (None, false) if down => tracing::warn!(peer = %p.label(),
                    endpoint = ?p.endpoint(), "peer has not completed a handshake yet"),
                (None, false) => {
                    // Not judged yet: keep it unknown.
                    continue;
                }
                _ => {}
            }
            next.insert(p.public_key, up);
        }
        self.up = next;
        down_peers
    }
}
