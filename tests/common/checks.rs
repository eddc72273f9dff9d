//! A sequence of named checks against one expensive fixture (a real cluster lab), each
//! reported on its own: a failing check does not hide the ones after it. Used by the
//! `harness = false` test binaries.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

#[derive(Default)]
pub struct Checks {
    results: Vec<(String, Result<String, String>, f64)>,
}

impl Checks {
    /// Runs `f`; an `Err` or a panic fails the check, `Ok(note)` passes it (note printed).
    pub fn run(&mut self, name: &str, f: impl FnOnce() -> anyhow::Result<String>) {
        eprintln!("\n=== check: {name}");
        let t0 = Instant::now();
        let r = match catch_unwind(AssertUnwindSafe(f)) {
            Ok(Ok(note)) => Ok(note),
            Ok(Err(e)) => Err(format!("{e:#}")),
            Err(p) => Err(p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".into())),
        };
        let secs = t0.elapsed().as_secs_f64();
        match &r {
            Ok(note) => eprintln!("--- ok ({secs:.1} s) {name}{}", fmt_note(note)),
            Err(e) => eprintln!("--- FAILED ({secs:.1} s) {name}: {e}"),
        }
        self.results.push((name.to_string(), r, secs));
    }

    pub fn failed(&self) -> usize {
        self.results.iter().filter(|r| r.1.is_err()).count()
    }

    /// For a normal `#[test]`: prints the summary and panics naming the failed checks.
    pub fn assert_all(self) {
        let failed: Vec<String> = self
            .results
            .iter()
            .filter_map(|(name, r, _)| r.as_ref().err().map(|e| format!("{name}: {e}")))
            .collect();
        let total = self.results.len();
        eprintln!("\n=== {total} checks, {} failed", failed.len());
        assert!(failed.is_empty(), "failed checks:\n{}", failed.join("\n"));
    }

    /// Prints the summary; exits 1 if any check failed.
    pub fn finish(self) {
        eprintln!("\n=== summary");
        for (name, r, secs) in &self.results {
            match r {
                Ok(note) => eprintln!("ok      {secs:6.1} s  {name}{}", fmt_note(note)),
                Err(e) => eprintln!(
                    "FAILED  {secs:6.1} s  {name}: {}",
                    e.lines().next().unwrap_or("")
                ),
            }
        }
        let failed = self.failed();
        eprintln!("{} checks, {failed} failed", self.results.len());
        if failed > 0 {
            std::process::exit(1);
        }
    }
}

fn fmt_note(note: &str) -> String {
    if note.is_empty() {
        String::new()
    } else {
        format!(": {note}")
    }
}
