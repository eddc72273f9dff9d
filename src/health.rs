//! Liveness and readiness, for `/healthz` and `/readyz`.
//!
//! Every long-running loop (the agent's main loop, the two packet threads, the WireGuard
//! timers, the service proxy) holds a [`Beat`] and ticks it each time round. `/healthz` fails
//! when any beat is older than [`STALLED_AFTER`]: a deadlocked or wedged loop, which a
//! restart fixes. A loop that *ends* takes the whole agent down anyway (the kubelet restarts it).
//!
//! Readiness is "the tunnel is programmed, and every remote has synced once or the first-sync
//! timeout passed" (a cluster that is down must not block a rollout forever).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// A loop that has not ticked for this long is stalled. Generous: the slowest loop (the proxy)
/// ticks every 2 s, but one big IPVS sync may hold it for a few seconds.
pub const STALLED_AFTER: Duration = Duration::from_secs(60);

/// Milliseconds on a process-wide monotonic clock.
pub fn mono_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// One loop's heartbeat: the monotonic time of its last tick.
#[derive(Debug, Clone)]
pub struct Beat(Arc<AtomicU64>);

impl Default for Beat {
    fn default() -> Self {
        Beat(Arc::new(AtomicU64::new(mono_ms())))
    }
}

impl Beat {
    /// Cheap enough for a packet loop (one clock read and a relaxed store).
    pub fn tick(&self) {
        self.0.store(mono_ms(), Relaxed);
    }

    pub fn age(&self) -> Duration {
        Duration::from_millis(mono_ms().saturating_sub(self.0.load(Relaxed)))
    }
}

#[derive(Default)]
pub struct Health {
    beats: Mutex<Vec<(String, Beat)>>,
    kernel_programmed: AtomicBool,
}

/// The verdict of one probe, with a line per problem for the response body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub ok: bool,
    pub lines: Vec<String>,
}

impl Health {
    /// Registers a loop under `name` and returns its beat.
    pub fn beat(&self, name: &'static str) -> Beat {
        let b = Beat::default();
        self.watch(name, b.clone());
        b
    }

    /// Watches a beat that was created elsewhere (the device's packet threads).
    pub fn watch(&self, name: impl Into<String>, beat: Beat) {
        self.beats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((name.into(), beat));
    }

    pub fn set_kernel_programmed(&self) {
        self.kernel_programmed.store(true, Relaxed);
    }

    pub fn kernel_programmed(&self) -> bool {
        self.kernel_programmed.load(Relaxed)
    }

    /// Ages of every watched loop.
    pub fn ages(&self) -> Vec<(String, Duration)> {
        self.beats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(n, b)| (n.clone(), b.age()))
            .collect()
    }

    pub fn liveness(&self) -> Verdict {
        liveness(&self.ages(), STALLED_AFTER)
    }
}

/// Pure: every loop ticked within `limit`.
pub fn liveness<N: AsRef<str>>(ages: &[(N, Duration)], limit: Duration) -> Verdict {
    if ages.is_empty() {
        return Verdict {
            ok: false,
            lines: vec!["no loops registered yet".into()],
        };
    }
    let lines: Vec<String> = ages
        .iter()
        .filter(|(_, age)| *age > limit)
        .map(|(name, age)| format!("{}: no progress for {}s", name.as_ref(), age.as_secs()))
        .collect();
    Verdict {
        ok: lines.is_empty(),
        lines,
    }
    .or_ok_line("ok")
}

/// A remote as readiness sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteSync<'a> {
    pub name: &'a str,
    pub synced: bool,
}

/// Pure: live, kernel programmed, and every remote synced once (or `since_start` is past
/// `first_sync_timeout`, then unsynced remotes are only listed).
pub fn readiness(
    live: &Verdict,
    kernel_programmed: bool,
    remotes: &[RemoteSync<'_>],
    since_start: Duration,
    first_sync_timeout: Duration,
) -> Verdict {
    let mut lines = Vec::new();
    let mut ok = live.ok;
    if !live.ok {
        lines.extend(live.lines.iter().cloned());
    }
    if !kernel_programmed {
        ok = false;
        lines.push("tunnel: routes and nftables not programmed yet".into());
    }
    let waiting = since_start < first_sync_timeout;
    for r in remotes.iter().filter(|r| !r.synced) {
        if waiting {
            ok = false;
            lines.push(format!(
                "remote {}: first sync pending ({}s of {}s)",
                r.name,
                since_start.as_secs(),
                first_sync_timeout.as_secs()
            ));
        } else {
            lines.push(format!(
                "remote {}: not synced (ready anyway: first-sync timeout passed)",
                r.name
            ));
        }
    }
    Verdict { ok, lines }.or_ok_line("ok")
}

impl Verdict {
    fn or_ok_line(mut self, line: &str) -> Verdict {
        if self.lines.is_empty() {
            self.lines.push(line.into());
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn a_stalled_loop_fails_liveness_and_names_itself() {
        let v = liveness(&[("main", S(1)), ("tunnel rx", S(61))], S(60));
        assert!(!v.ok);
        assert_eq!(v.lines, vec!["tunnel rx: no progress for 61s"]);
        let v = liveness(&[("main", S(1)), ("tunnel rx", S(2))], S(60));
        assert!(v.ok);
        assert_eq!(v.lines, vec!["ok"]);
    }

    #[test]
    fn no_loops_is_not_alive() {
        assert!(!liveness::<&str>(&[], S(60)).ok);
    }

    #[test]
    fn readiness_waits_for_first_sync_until_the_timeout() {
        let live = liveness(&[("main", S(0))], S(60));
        let remotes = [
            RemoteSync {
                name: "west",
                synced: true,
            },
            RemoteSync {
                name: "north",
                synced: false,
            },
        ];
        let v = readiness(&live, true, &remotes, S(10), S(60));
        assert!(!v.ok);
        assert!(v.lines[0].contains("north: first sync pending"), "{v:?}");
        let v = readiness(&live, true, &remotes, S(61), S(60));
        assert!(v.ok, "{v:?}");
        assert!(v.lines[0].contains("ready anyway"));
        let v = readiness(&live, true, &remotes[..1], S(1), S(60));
        assert_eq!(
            v,
            Verdict {
                ok: true,
                lines: vec!["ok".into()]
            }
        );
    }

    #[test]
    fn not_ready_before_the_kernel_is_programmed_or_when_stalled() {
        let live = liveness(&[("main", S(0))], S(60));
        assert!(!readiness(&live, false, &[], S(100), S(60)).ok);
        let dead = liveness(&[("main", S(100))], S(60));
        let v = readiness(&dead, true, &[], S(100), S(60));
        assert!(!v.ok);
        assert!(v.lines[0].contains("main"));
    }

    #[test]
    fn beats_age_and_reset() {
        let h = Health::default();
        let b = h.beat("x");
        std::thread::sleep(Duration::from_millis(30));
        assert!(b.age() >= Duration::from_millis(20));
        b.tick();
        assert!(b.age() < Duration::from_millis(20));
        assert_eq!(h.ages().len(), 1);
    }
}
