//! Polling until something holds: the one place tests and the lab wait for a converging
//! system (an agent programming the kernel, a rollout, a metric moving).

use anyhow::{bail, Result};
use std::time::{Duration, Instant};

/// Polls `predicate` every 100 ms until it returns true (-> true) or `timeout` passes (-> false).
pub fn wait_for(mut predicate: impl FnMut() -> bool, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if predicate() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Polls `f` every `every` until it returns `Ok(true)`; after `timeout`, an error naming
/// `what` and the last error `f` returned (errors while polling are not fatal).
pub fn until(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut f: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        match f() {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last = format!(" (last error: {e:#})"),
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}{last}");
        }
        std::thread::sleep(every);
    }
}

/// [`wait_for`] that panics naming `what` on timeout (for tests), polling every `every`.
pub fn assert_within(what: &str, timeout: Duration, every: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(every);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn until_reports_what_and_the_last_error() {
        let mut n = 0;
        until(
            "three calls",
            Duration::from_secs(5),
            Duration::ZERO,
            || {
                n += 1;
                Ok(n == 3)
            },
        )
        .unwrap();
        assert_eq!(n, 3);
        let e = until(
            "never",
            Duration::from_millis(20),
            Duration::from_millis(5),
            || bail!("boom"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("never") && e.contains("boom"), "{e}");
        assert!(!wait_for(|| false, Duration::from_millis(10)));
    }
}
