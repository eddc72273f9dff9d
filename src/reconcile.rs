//! The one shape of every reconciler (peers and DNS, routes and the nft table, the service
//! proxy): desired state in, kernel (or device) converged, status published by the reconciler
//! itself, all driven by one loop ([`run`]) that wakes on a change of the desired state, on a
//! periodic tick and on a periodic resync, and keeps a heartbeat for `/healthz`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Why a reconcile runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The desired state changed.
    Changed,
    /// The periodic tick, for reconcilers whose result depends on time (draining backends,
    /// peer liveness), see [`Reconciler::wants_tick`].
    Tick,
    /// The periodic resync: re-read the kernel instead of trusting what was last written
    /// (repairs manual edits).
    Resync,
}

pub trait Reconciler: Send {
    /// What the reconciler converges to (shared, never copied per reconcile).
    type Desired: Send + Sync;
    /// Names the reconciler in logs.
    const NAME: &'static str;

    /// Converges to `desired`. An error is logged by the loop and retried at the next trigger.
    fn reconcile(
        &mut self,
        desired: &Self::Desired,
        why: Trigger,
    ) -> impl Future<Output = Result<(), String>> + Send;

    /// Whether a tick without a change should reconcile.
    fn wants_tick(&self) -> bool {
        false
    }
}

/// Where the desired state comes from: one watch channel, or two followed together.
pub trait Input: Send {
    type Value: Send + Sync;
    /// Waits for a change; false once the publisher is gone.
    fn changed(&mut self) -> impl Future<Output = bool> + Send;
    /// The latest value (marks it seen).
    fn current(&mut self) -> Self::Value;
}

impl<T: Send + Sync> Input for watch::Receiver<Arc<T>> {
    type Value = Arc<T>;
    async fn changed(&mut self) -> bool {
        watch::Receiver::changed(self).await.is_ok()
    }
    fn current(&mut self) -> Arc<T> {
        self.borrow_and_update().clone()
    }
}

impl<A: Send + Sync, B: Send + Sync> Input for (watch::Receiver<Arc<A>>, watch::Receiver<Arc<B>>) {
    type Value = (Arc<A>, Arc<B>);
    async fn changed(&mut self) -> bool {
        tokio::select! {
            r = self.0.changed() => r.is_ok(),
            r = self.1.changed() => r.is_ok(),
        }
    }
    fn current(&mut self) -> (Arc<A>, Arc<B>) {
        (
            self.0.borrow_and_update().clone(),
            self.1.borrow_and_update().clone(),
        )
    }
}

/// When a reconciler wakes besides changes.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// Heartbeat, and a reconcile when [`Reconciler::wants_tick`].
    pub tick: Duration,
    pub resync: Option<Duration>,
}

/// Runs `r` on `input` until the input's publisher is gone (the agent stopping).
pub async fn run<R, I>(
    mut r: R,
    mut input: I,
    schedule: Schedule,
    beat: crate::health::Beat,
) -> std::io::Result<()>
where
    I: Input,
    R: Reconciler<Desired = I::Value>,
{
    let mut tick = tokio::time::interval(schedule.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let resync_every = schedule.resync.unwrap_or(Duration::from_secs(86_400 * 365));
    let mut resync =
        tokio::time::interval_at(tokio::time::Instant::now() + resync_every, resync_every);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        beat.tick();
        let why = tokio::select! {
            ok = input.changed() => {
                if !ok {
                    return Ok(());
                }
                Trigger::Changed
            }
            _ = tick.tick() => Trigger::Tick,
            _ = resync.tick(), if schedule.resync.is_some() => Trigger::Resync,
        };
        if why == Trigger::Tick && !r.wants_tick() {
            continue;
        }
        let desired = input.current();
        beat.tick();
        if let Err(e) = r.reconcile(&desired, why).await {
            tracing::warn!(reconciler = R::NAME, error = %e, "reconcile failed; will retry");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    struct Recorder {
        seen: Arc<Mutex<Vec<(u32, Trigger)>>>,
        tick: bool,
    }

    impl Reconciler for Recorder {
        type Desired = Arc<u32>;
        const NAME: &'static str = "test";
        async fn reconcile(&mut self, d: &Arc<u32>, why: Trigger) -> Result<(), String> {
            self.seen.lock().unwrap().push((**d, why));
            if **d == 2 {
                return Err("two".into());
            }
            Ok(())
        }
        fn wants_tick(&self) -> bool {
            self.tick
        }
    }

    async fn drive(tick: bool, resync: Option<Duration>, ms: u64) -> Vec<(u32, Trigger)> {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = watch::channel(Arc::new(1u32));
        let r = Recorder {
            seen: seen.clone(),
            tick,
        };
        let sched = Schedule {
            tick: Duration::from_millis(40),
            resync,
        };
        let health = crate::health::Health::default();
        let task = tokio::spawn(run(r, rx, sched, health.beat("test")));
        tokio::time::sleep(Duration::from_millis(10)).await;
        tx.send_replace(Arc::new(2));
        tokio::time::sleep(Duration::from_millis(10)).await;
        tx.send_replace(Arc::new(3));
        tokio::time::sleep(Duration::from_millis(ms)).await;
        drop(tx);
        task.await.unwrap().unwrap();
        let v = seen.lock().unwrap().clone();
        v
    }

    #[tokio::test(start_paused = true)]
    async fn changes_are_reconciled_and_an_error_does_not_stop_the_loop() {
        let v = drive(false, None, 200).await;
        assert_eq!(v, vec![(2, Trigger::Changed), (3, Trigger::Changed)]);
    }

    #[tokio::test(start_paused = true)]
    async fn ticks_reconcile_only_when_wanted_and_resync_is_periodic() {
        let v = drive(true, None, 100).await;
        assert!(
            v.iter().filter(|(_, w)| *w == Trigger::Tick).count() >= 2,
            "{v:?}"
        );
        let v = drive(false, Some(Duration::from_millis(50)), 120).await;
        let resyncs = v.iter().filter(|(_, w)| *w == Trigger::Resync).count();
        assert_eq!(resyncs, 2, "{v:?}");
        assert!(!v.iter().any(|(_, w)| *w == Trigger::Tick), "{v:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_pair_of_inputs_wakes_on_either() {
        let (ta, ra) = watch::channel(Arc::new(1u8));
        let (tb, rb) = watch::channel(Arc::new(10u8));
        let mut input = (ra, rb);
        tb.send_replace(Arc::new(11));
        assert!(input.changed().await);
        assert_eq!(input.current(), (Arc::new(1), Arc::new(11)));
        ta.send_replace(Arc::new(2));
        assert!(input.changed().await);
        assert_eq!(input.current(), (Arc::new(2), Arc::new(11)));
        drop(ta);
        assert!(!input.changed().await);
    }
}
