//! Which of a remote's watchers are failing, and why. A remote is healthy again only when
//! every watcher that failed has recovered: one watcher's events say nothing about another's,
//! and the first pages of a re-list say nothing about the page that failed.

/// The watchers of one remote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Watcher {
    Nodes = 0,
    Services = 1,
    Slices = 2,
    /// ServiceExports (`import: exported` only).
    Exports = 3,
}

/// Why a watcher failed, ordered by how much it takes to clear.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Failure {
    /// The API was unreachable or the stream broke: any request that gets through (the probe)
    /// shows it is back; a resumed watch with nothing new to say sends no event to tell us.
    Connection,
    /// What the API sent was refused (too long, undecodable): only that watcher completing a
    /// list or delivering an event shows the bad object is gone.
    Content,
}

impl Failure {
    /// Classifies a watcher error by its message chain.
    pub fn of(error: &str) -> Failure {
        const CONTENT: [&str; 2] = [super::message_limit::MARKER, "Error deserializing response"];
        if CONTENT.iter().any(|m| error.contains(m)) {
            Failure::Content
        } else {
            Failure::Connection
        }
    }
}

#[derive(Debug, Default)]
pub struct WatchHealth {
    failing: [Option<Failure>; 4],
}

impl WatchHealth {
    pub fn failed(&mut self, w: Watcher, f: Failure) {
        let slot = &mut self.failing[w as usize];
        *slot = Some(slot.map_or(f, |old| old.max(f)));
    }

    /// `w` completed a list or delivered a watch event.
    pub fn delivered(&mut self, w: Watcher) {
        self.failing[w as usize] = None;
    }

    /// A plain request to the API succeeded: connection failures are over.
    pub fn probe_ok(&mut self) {
        for slot in &mut self.failing {
            if *slot == Some(Failure::Connection) {
                *slot = None;
            }
        }
    }

    pub fn any_failing(&self) -> bool {
        self.failing.iter().any(Option::is_some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_watchers_events_do_not_clear_anothers_failure() {
        let mut h = WatchHealth::default();
        h.failed(Watcher::Nodes, Failure::Content);
        h.delivered(Watcher::Services);
        h.delivered(Watcher::Slices);
        assert!(h.any_failing());
        h.delivered(Watcher::Nodes);
        assert!(!h.any_failing());
    }

    #[test]
    fn a_probe_clears_connection_failures_only() {
        let mut h = WatchHealth::default();
        h.failed(Watcher::Services, Failure::Connection);
        h.failed(Watcher::Nodes, Failure::Content);
        h.failed(Watcher::Nodes, Failure::Connection); // does not downgrade
        h.probe_ok();
        assert!(h.any_failing());
        h.delivered(Watcher::Nodes);
        assert!(!h.any_failing());
    }

    #[test]
    fn classifies_errors() {
        let too_long = super::super::message_limit::TooLong(16).to_string();
        assert_eq!(
            Failure::of(&format!("watch stream failed: {too_long}")),
            Failure::Content
        );
        assert_eq!(
            Failure::of("Error deserializing response: EOF"),
            Failure::Content
        );
        assert_eq!(
            Failure::of("client error: connection refused"),
            Failure::Connection
        );
    }
}
