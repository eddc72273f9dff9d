//! Who writes the cluster's MCS objects (ServiceExport conditions, ServiceImports): one agent
//! per cluster, elected with a `coordination.k8s.io` Lease, so that N nodes do not write the
//! same objects N times. The rules only; the agent's leader loop does the API calls
//! (get, then create or replace with the read resourceVersion, so two agents can never both
//! win the same round).

/// What a Lease says, reduced to what the rules need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub holder: Option<String>,
    /// `renewTime` (else `acquireTime`), Unix milliseconds.
    pub renewed_ms: Option<i64>,
    pub duration_s: Option<i32>,
}

/// What to do with the Lease this round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// None exists: create it, holding it.
    Create,
    /// Ours: renew it.
    Renew,
    /// Someone else's and expired (or released): take it over.
    TakeOver { from: Option<String> },
    /// Someone else's and current: follow.
    Follow { holder: String },
}

/// The lease duration used when a Lease names none (ours always does).
pub const DEFAULT_DURATION_S: i32 = 15;

/// Pure: the decision for `me` at `now_ms` given the Lease as read (None: not found).
pub fn decide(held: Option<&Held>, me: &str, now_ms: i64) -> Decision {
    let Some(h) = held else {
        return Decision::Create;
    };
    match h.holder.as_deref() {
        Some(holder) if holder == me => Decision::Renew,
        None | Some("") => Decision::TakeOver { from: None },
        Some(holder) => {
            let duration_ms = i64::from(h.duration_s.unwrap_or(DEFAULT_DURATION_S).max(1)) * 1000;
            match h.renewed_ms {
                Some(t) if now_ms < t.saturating_add(duration_ms) => Decision::Follow {
                    holder: holder.to_string(),
                },
                _ => Decision::TakeOver {
                    from: Some(holder.to_string()),
                },
            }
        }
    }
}

/// Whether a leader that last renewed at `renewed_ms` must consider itself deposed at
/// `now_ms` (it could not renew in time: another agent may hold the Lease by now).
pub fn expired(renewed_ms: i64, duration_s: i32, now_ms: i64) -> bool {
    now_ms >= renewed_ms.saturating_add(i64::from(duration_s) * 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(holder: Option<&str>, renewed_ms: Option<i64>) -> Held {
        Held {
            holder: holder.map(String::from),
            renewed_ms,
            duration_s: Some(15),
        }
    }

    #[test]
    fn none_is_created_ours_is_renewed() {
        assert_eq!(decide(None, "a1", 0), Decision::Create);
        assert_eq!(
            decide(Some(&held(Some("a1"), Some(0))), "a1", 99_000),
            Decision::Renew
        );
    }

    #[test]
    fn another_holder_is_followed_until_the_lease_expires() {
        let h = held(Some("a2"), Some(100_000));
        assert_eq!(
            decide(Some(&h), "a1", 114_999),
            Decision::Follow {
                holder: "a2".into()
            }
        );
        assert_eq!(
            decide(Some(&h), "a1", 115_000),
            Decision::TakeOver {
                from: Some("a2".into())
            }
        );
        // Never renewed: nothing to wait for.
        assert_eq!(
            decide(Some(&held(Some("a2"), None)), "a1", 0),
            Decision::TakeOver {
                from: Some("a2".into())
            }
        );
    }

    #[test]
    fn a_released_lease_is_taken_at_once() {
        for holder in [None, Some("")] {
            assert_eq!(
                decide(Some(&held(holder, Some(100_000))), "a1", 100_001),
                Decision::TakeOver { from: None }
            );
        }
    }

    #[test]
    fn a_leader_that_cannot_renew_steps_down_when_its_lease_runs_out() {
        assert!(!expired(100_000, 15, 114_999));
        assert!(expired(100_000, 15, 115_000));
    }
}
