//! Prometheus metrics (`/metrics`, OpenMetrics text).
//!
//! Most values already live in the agent's status (peer byte counts, drop counters, remote
//! health, proxy and DNS counters), so each scrape renders a fresh registry from one
//! [`AgentStatus`] snapshot ([`render`], pure). Only what status does not keep, the
//! distributions, lives here in [`Metrics`] and is updated by the loops themselves.
//!
//! Cardinality is bounded by design: labels are remotes, peers (remote nodes) and fixed
//! reason/kind/rcode sets; never pods, services or endpoints.

mod reasons;
mod render;

pub use reasons::{classify as classify_reason, CLASSES as REASON_CLASSES};
pub use render::{render, RenderInput};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use std::time::{Duration, SystemTime};

/// Distributions and counters kept across scrapes.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// One proxy reconcile (diff + kernel writes), seconds.
    pub proxy_sync_seconds: Histogram,
    /// The upstream Kubernetes SLI: from a remote Service/EndpointSlice change (its
    /// `endpoints.kubernetes.io/last-change-trigger-time`, else the moment our watch saw it)
    /// to the kernel holding it.
    pub network_programming_seconds: Histogram,
    pub proxy_sync_errors: Counter,
}

/// Buckets for network programming latency: sub-second for a healthy agent, up to minutes
/// when a remote API lags (like kube-proxy's, but fewer).
const PROGRAMMING_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];
const SYNC_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            proxy_sync_seconds: Histogram::new(SYNC_BUCKETS.iter().copied()),
            network_programming_seconds: Histogram::new(PROGRAMMING_BUCKETS.iter().copied()),
            proxy_sync_errors: Counter::default(),
        }
    }
}

impl Metrics {
    pub fn observe_proxy_sync(&self, took: Duration) {
        self.proxy_sync_seconds.observe(took.as_secs_f64());
    }

    /// Records changes that are now in the kernel: each trigger time newer than `*watermark`
    /// once, then moves the watermark. Trigger times in the future (a remote's clock ahead of
    /// ours) count as zero.
    pub fn observe_programmed(
        &self,
        triggers: &[SystemTime],
        watermark: &mut Option<SystemTime>,
        now: SystemTime,
    ) -> usize {
        let mut n = 0;
        let mut newest = *watermark;
        for t in triggers {
            if watermark.is_some_and(|w| *t <= w) {
                continue;
            }
            let took = now.duration_since(*t).unwrap_or_default();
            self.network_programming_seconds.observe(took.as_secs_f64());
            n += 1;
            if newest.is_none_or(|w| *t > w) {
                newest = Some(*t);
            }
        }
        *watermark = newest;
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_change_is_observed_once() {
        let m = Metrics::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let now = t0 + Duration::from_secs(2);
        let mut w = None;
        assert_eq!(m.observe_programmed(&[t0], &mut w, now), 1);
        assert_eq!(w, Some(t0));
        // Same trigger again (nothing new): not observed twice.
        assert_eq!(m.observe_programmed(&[t0], &mut w, now), 0);
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(m.observe_programmed(&[t0, t1], &mut w, now), 1);
        assert_eq!(m.network_programming_seconds.count(), 2);
        // 2 s + 1 s.
        assert!((m.network_programming_seconds.sum() - 3.0).abs() < 1e-9);
        // From the future: zero, not a panic.
        let future = now + Duration::from_secs(60);
        assert_eq!(m.observe_programmed(&[future], &mut w, now), 1);
        assert!((m.network_programming_seconds.sum() - 3.0).abs() < 1e-9);
    }
}
