//! `diagnose` output: one aligned line per check (text) or a JSON document. Pure.

use super::checks::{Check, Status};
use serde::Serialize;
use std::fmt::Write as _;

/// The JSON document: `ok` is false if any check failed.
#[derive(Debug, Serialize)]
pub struct JsonReport<'a> {
    pub ok: bool,
    pub checks: &'a [Check],
}

/// `FAIL rp_filter    sdn0: strict (1) ... -> hint: sysctl -w ...`, then a summary line.
pub fn text(checks: &[Check]) -> String {
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    let mut s = String::new();
    for c in checks {
        let _ = write!(s, "{:<4} {:<width$} {}", c.status.label(), c.name, c.detail);
        if let Some(h) = &c.hint {
            let _ = write!(s, " -> hint: {h}");
        }
        s.push('\n');
    }
    let count = |st: Status| checks.iter().filter(|c| c.status == st).count();
    let _ = writeln!(
        s,
        "{} checks: {} ok, {} warn, {} fail, {} skipped",
        checks.len(),
        count(Status::Ok),
        count(Status::Warn),
        count(Status::Fail),
        count(Status::Skip)
    );
    s
}

pub fn json(checks: &[Check]) -> String {
    let report = JsonReport {
        ok: !checks.iter().any(|c| c.status == Status::Fail),
        checks,
    };
    serde_json::to_string_pretty(&report).expect("plain data serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Check> {
        vec![
            Check {
                name: "agent",
                status: Status::Ok,
                detail: "running".into(),
                hint: None,
            },
            Check {
                name: "rp_filter",
                status: Status::Fail,
                detail: "sdn0: strict (1)".into(),
                hint: Some("sysctl -w net.ipv4.conf.sdn0.rp_filter=2".into()),
            },
        ]
    }

    #[test]
    fn text_is_aligned_with_hints_and_a_summary() {
        let t = text(&sample());
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "OK   agent     running");
        assert_eq!(
            lines[1],
            "FAIL rp_filter sdn0: strict (1) -> hint: sysctl -w net.ipv4.conf.sdn0.rp_filter=2"
        );
        assert_eq!(lines[2], "2 checks: 1 ok, 0 warn, 1 fail, 0 skipped");
    }

    #[test]
    fn json_has_ok_and_lowercase_statuses() {
        let v: serde_json::Value = serde_json::from_str(&json(&sample())).unwrap();
        assert_eq!(v["ok"], false);
        assert_eq!(v["checks"][1]["status"], "fail");
        assert_eq!(v["checks"][1]["name"], "rp_filter");
        assert!(v["checks"][0].get("hint").is_none());
    }
}
