//! Timers (a tokio task every 250 ms): handshake retries, rekeying, keepalives, and the
//! handshake rate limiter's reset.

use super::*;

impl Device {
    /// Handshake retries, rekeying, keepalives; the rate limiter's per-second reset.
    pub(super) async fn timers(self: Arc<Self>) -> io::Result<()> {
        let mut buf = vec![0u8; BUF];
        let mut tick = tokio::time::interval(TIMER_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut n: u64 = 0;
        while !self.stopping.load(Ordering::Relaxed) {
            tick.tick().await;
            self.beats.timers.tick();
            n += 1;
            if n % 4 == 0 {
                self.identity.load().rate_limiter.reset_count();
            }
            let peers = self.peers.load();
            for peer in &peers.peers {
                let mut tunn = peer.tunn();
                match tunn.update_timers(&mut buf) {
                    TunnResult::WriteToNetwork(pkt) => {
                        peer.note_sent(pkt);
                        if let Some(ep) = peer.endpoint() {
                            self.send_one(pkt, ep);
                        }
                    }
                    TunnResult::Err(WireGuardError::ConnectionExpired) => {}
                    TunnResult::Err(e) => {
                        tracing::debug!(peer = %peer.label(), error = ?e, "timer")
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }
}
