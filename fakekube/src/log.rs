//! The request log and per-resource, per-verb counters that tests assert on.

use std::collections::{HashMap, VecDeque};
use std::fmt;

/// What a request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    List,
    Watch,
    Get,
    Create,
    Update,
    Patch,
    Delete,
    DeleteCollection,
    /// /version, /api, /apis, health checks.
    Discovery,
    /// Anything not understood (answered with an error).
    Other,
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Get => "get",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
            Verb::DeleteCollection => "deletecollection",
            Verb::Discovery => "discovery",
            Verb::Other => "other",
        };
        f.write_str(s)
    }
}

/// One served request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    pub method: String,
    pub path: String,
    /// Raw (still percent-encoded) query string.
    pub query: String,
    pub verb: Verb,
    /// Plural of the resource, e.g. "nodes", if the path named one.
    pub resource: Option<String>,
    /// HTTP status of the response (200 for a watch, even one that ends with an ERROR event).
    pub status: u16,
}

/// How many records are kept; counters are not bounded.
pub const MAX_RECORDS: usize = 10_000;

#[derive(Debug, Default)]
pub struct RequestLog {
    records: VecDeque<RequestRecord>,
    counts: HashMap<(String, Verb), u64>,
    last_query: HashMap<(String, Verb), String>,
}

impl RequestLog {
    pub fn record(&mut self, r: RequestRecord) {
        if let Some(res) = &r.resource {
            *self.counts.entry((res.clone(), r.verb)).or_default() += 1;
            self.last_query
                .insert((res.clone(), r.verb), r.query.clone());
        }
        if self.records.len() >= MAX_RECORDS {
            self.records.pop_front();
        }
        self.records.push_back(r);
    }

    pub fn count(&self, resource: &str, verb: Verb) -> u64 {
        self.counts
            .get(&(resource.to_string(), verb))
            .copied()
            .unwrap_or(0)
    }

    pub fn last_query(&self, resource: &str, verb: Verb) -> Option<String> {
        self.last_query.get(&(resource.to_string(), verb)).cloned()
    }

    pub fn records(&self) -> Vec<RequestRecord> {
        self.records.iter().cloned().collect()
    }

    pub fn clear(&mut self) {
        *self = RequestLog::default();
    }
}
