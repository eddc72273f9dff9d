//! The object store: current objects, one global resourceVersion counter, the bounded event
//! history that watches and paginated lists read, and compaction. Like etcd behind the
//! apiserver's watch cache. No I/O here; callers hold it behind a lock.

use std::borrow::Cow;
use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::sync::Arc;

use base64::Engine as _;
use serde_json::{json, Map, Value};

use crate::clock;
use crate::error::ApiError;
use crate::patch;
use crate::resources::{lookup, lookup_kind, ResourceId, ResourceType, RESOURCES};
use crate::selector::{FieldSelector, LabelSelector};

/// (namespace, name); the namespace is "" for cluster-scoped objects.
pub type Key = (String, String);

/// Default bound of the event history; older events are compacted away.
pub const DEFAULT_MAX_HISTORY: usize = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, kept in the history.
#[derive(Debug, Clone)]
struct Event {
    rv: u64,
    res: ResourceId,
    etype: EventType,
    key: Key,
    /// State after the change (for DELETED: the last state, with the deletion's RV).
    obj: Arc<Value>,
    /// State before the change (None for ADDED).
    prev: Option<Arc<Value>>,
}

/// What a list or watch selects.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Filter {
    pub fn matches(&self, key: &Key, obj: &Value) -> bool {
        self.namespace.as_deref().is_none_or(|ns| ns == key.0)
            && self.labels.matches(obj)
            && self.fields.matches(obj)
    }
}

/// A watch event to send.
#[derive(Debug, Clone)]
pub struct WatchItem {
    pub etype: EventType,
    pub obj: Arc<Value>,
}

/// Where a watch is, between polls.
#[derive(Debug, Clone, Copy)]
pub struct WatchCursor {
    pub rv: u64,
    pub epoch: u64,
}

/// The outcome of a list request.
#[derive(Debug)]
pub struct ListPage {
    pub rv: u64,
    pub items: Vec<Arc<Value>>,
    pub continue_token: Option<String>,
}

/// How an update treats `status` and preconditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateMode {
    /// PUT/PATCH of the main resource: status kept if the type has a status subresource.
    Main,
    /// PUT/PATCH of `/status`: only status changes.
    Status,
    /// In-process test write: the whole object, no resourceVersion precondition.
    Force,
}

/// Patch content types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Merge,
    Strategic,
    Json,
    Apply,
}

#[derive(Clone)]
pub struct Store {
    rv: u64,
    objects: Vec<BTreeMap<Key, Arc<Value>>>,
    history: VecDeque<Event>,
    /// Lists and watches from an RV below this get 410 Expired.
    compacted_rv: u64,
    /// Bumped by `compact()`: open watches of an older epoch end with 410.
    epoch: u64,
    max_history: usize,
    uid_seed: u64,
    uid_counter: u64,
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn rv_of(obj: &Value) -> &str {
    obj.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn metadata_mut(obj: &mut Value) -> &mut Map<String, Value> {
    let o = obj.as_object_mut().expect("checked object");
    let m = o
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !m.is_object() {
        *m = Value::Object(Map::new());
    }
    m.as_object_mut().expect("object")
}

/// Everything but metadata and status, to decide whether `generation` moves.
fn spec_differs(a: &Value, b: &Value) -> bool {
    let skip = ["metadata", "status", "kind", "apiVersion"];
    let strip = |v: &Value| -> Map<String, Value> {
        v.as_object()
            .map(|m| {
                m.iter()
                    .filter(|(k, _)| !skip.contains(&k.as_str()))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default()
    };
    strip(a) != strip(b)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric()
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

impl Store {
    pub fn new() -> Self {
        use std::hash::{BuildHasher, RandomState};
        Store {
            rv: 1,
            objects: vec![BTreeMap::new(); RESOURCES.len()],
            history: VecDeque::new(),
            compacted_rv: 1,
            epoch: 0,
            max_history: DEFAULT_MAX_HISTORY,
            uid_seed: RandomState::new().hash_one(0x5eed_u64),
            uid_counter: 0,
        }
    }

    /// The current (latest) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    pub fn compacted_rv(&self) -> u64 {
        self.compacted_rv
    }

    pub fn history_len(&self) -> usize {
        self.history.len()
    }

    pub fn set_max_history(&mut self, n: usize) {
        self.max_history = n.max(1);
        self.trim_history();
    }

    /// Forgets all history: lists continued and watches resumed from any RV older than now get
    /// 410, and every open watch is ended with 410 (as when the apiserver's watch cache is
    /// re-initialised).
    pub fn compact(&mut self) {
        self.history.clear();
        self.compacted_rv = self.rv;
        self.epoch += 1;
    }

    fn new_uid(&mut self) -> String {
        self.uid_counter += 1;
        let a = splitmix64(self.uid_seed ^ self.uid_counter);
        let b = splitmix64(a ^ self.uid_counter.rotate_left(17));
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            0x8000 | ((b >> 48) & 0x3fff),
            b & 0xffff_ffff_ffff
        )
    }

    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn trim_history(&mut self) {
        while self.history.len() > self.max_history {
            if let Some(e) = self.history.pop_front() {
                self.compacted_rv = e.rv;
            }
        }
    }

    fn record(
        &mut self,
        res: ResourceId,
        etype: EventType,
        key: Key,
        obj: Arc<Value>,
        prev: Option<Arc<Value>>,
    ) {
        self.history.push_back(Event {
            rv: self.rv,
            res,
            etype,
            key,
            obj,
            prev,
        });
        self.trim_history();
    }

    pub fn get(&self, res: ResourceId, ns: &str, name: &str) -> Option<Arc<Value>> {
        let ns = if RESOURCES[res].namespaced { ns } else { "" };
        self.objects[res]
            .get(&(ns.to_string(), name.to_string()))
            .cloned()
    }

    /// All objects of a type, in key order.
    pub fn all(&self, res: ResourceId) -> impl Iterator<Item = &Arc<Value>> {
        self.objects[res].values()
    }

    pub fn count(&self, res: ResourceId) -> usize {
        self.objects[res].len()
    }

    /// Checks kind/apiVersion/namespace/name of a body and fills them in.
    /// Returns the key. `ns` is the namespace from the request ("" if none).
    fn normalize(&mut self, res: ResourceId, ns: &str, obj: &mut Value) -> Result<Key, ApiError> {
        let rt: &ResourceType = &RESOURCES[res];
        let Some(o) = obj.as_object_mut() else {
            return Err(ApiError::bad_request(
                "the request body must be a JSON object",
            ));
        };
        let api_version = rt.api_version();
        match o.get("kind").and_then(Value::as_str) {
            None | Some("") => {
                o.insert("kind".into(), Value::String(rt.kind.into()));
            }
            Some(k) if k == rt.kind => {}
            Some(k) => {
                return Err(ApiError::bad_request(format!(
                    "the kind {k:?} of the object does not match {:?}",
                    rt.kind
                )))
            }
        }
        match o.get("apiVersion").and_then(Value::as_str) {
            None | Some("") => {
                o.insert("apiVersion".into(), Value::String(api_version));
            }
            Some(v) if v == api_version => {}
            Some(v) => {
                return Err(ApiError::bad_request(format!(
                    "the apiVersion {v:?} of the object does not match {api_version:?}"
                )))
            }
        }
        let meta = metadata_mut(obj);
        let body_ns = meta
            .get("namespace")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let ns = if rt.namespaced {
            let ns = if ns.is_empty() { body_ns.as_str() } else { ns };
            let ns = if ns.is_empty() { "default" } else { ns };
            if !body_ns.is_empty() && body_ns != ns {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            meta.insert("namespace".into(), Value::String(ns.to_string()));
            ns.to_string()
        } else {
            meta.remove("namespace");
            String::new()
        };
        let mut name = meta
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if name.is_empty() {
            if let Some(prefix) = meta
                .get("generateName")
                .and_then(Value::as_str)
                .filter(|p| !p.is_empty())
            {
                let prefix = prefix.to_string();
                self.uid_counter += 1;
                let r = splitmix64(self.uid_seed ^ self.uid_counter);
                let suffix: String = (0..5)
                    .map(|i| b"bcdfghjklmnpqrstvwxz2456789"[((r >> (i * 8)) % 27) as usize] as char)
                    .collect();
                name = format!("{prefix}{suffix}");
                metadata_mut(obj).insert("name".into(), Value::String(name.clone()));
            }
        }
        if name.is_empty() {
            return Err(ApiError::invalid(
                rt,
                "",
                "metadata.name: Required value: name or generateName is required",
            ));
        }
        if !valid_name(&name) {
            return Err(ApiError::invalid(
                rt,
                &name,
                "metadata.name: Invalid value: a lowercase RFC 1123 subdomain must consist of lower case \
                 alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
            ));
        }
        if let Some(l) = obj.pointer("/metadata/labels") {
            if !l.is_null()
                && !l
                    .as_object()
                    .is_some_and(|m| m.values().all(Value::is_string))
            {
                return Err(ApiError::invalid(
                    rt,
                    &name,
                    "metadata.labels: must be a map of strings",
                ));
            }
        }
        if let Some(a) = obj.pointer("/metadata/annotations") {
            if !a.is_null()
                && !a
                    .as_object()
                    .is_some_and(|m| m.values().all(Value::is_string))
            {
                return Err(ApiError::invalid(
                    rt,
                    &name,
                    "metadata.annotations: must be a map of strings",
                ));
            }
        }
        Ok((ns, name))
    }

    /// POST: creates an object; 409 AlreadyExists if present.
    pub fn create(
        &mut self,
        res: ResourceId,
        ns: &str,
        mut obj: Value,
    ) -> Result<Arc<Value>, ApiError> {
        if !rv_of(&obj).is_empty() {
            return Err(ApiError::bad_request(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        let key = self.normalize(res, ns, &mut obj)?;
        if self.objects[res].contains_key(&key) {
            return Err(ApiError::already_exists(&RESOURCES[res], &key.1));
        }
        let rv = self.next_rv();
        let uid = self.new_uid();
        let meta = metadata_mut(&mut obj);
        meta.insert("uid".into(), Value::String(uid));
        meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
        meta.insert("creationTimestamp".into(), Value::String(clock::now()));
        meta.insert("generation".into(), json!(1));
        meta.remove("deletionTimestamp");
        let obj = Arc::new(obj);
        self.objects[res].insert(key.clone(), obj.clone());
        self.record(res, EventType::Added, key, obj.clone(), None);
        Ok(obj)
    }

    /// PUT (or the write behind a PATCH): replaces an existing object; 404 if absent, 409
    /// Conflict if the body carries a stale resourceVersion (unless `Force`). An update that
    /// changes nothing keeps the resourceVersion and sends no event, like the apiserver.
    pub fn update(
        &mut self,
        res: ResourceId,
        ns: &str,
        name: &str,
        mut obj: Value,
        mode: UpdateMode,
    ) -> Result<Arc<Value>, ApiError> {
        let rt = &RESOURCES[res];
        if obj.is_object() && meta_str(&obj, "name").is_empty() {
            metadata_mut(&mut obj).insert("name".into(), Value::String(name.to_string()));
        }
        let key = self.normalize(res, ns, &mut obj)?;
        if key.1 != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                key.1
            )));
        }
        let Some(old) = self.objects[res].get(&key).cloned() else {
            return Err(ApiError::not_found(rt, name));
        };
        let body_rv = rv_of(&obj);
        if mode != UpdateMode::Force && !body_rv.is_empty() && body_rv != rv_of(&old) {
            return Err(ApiError::conflict(rt, name));
        }
        let body_uid = meta_str(&obj, "uid");
        if mode != UpdateMode::Force && !body_uid.is_empty() && body_uid != meta_str(&old, "uid") {
            return Err(ApiError::conflict(rt, name));
        }
        let mut new = match mode {
            UpdateMode::Status => {
                let mut n = (*old).clone();
                match obj.get("status") {
                    Some(s) => n["status"] = s.clone(),
                    None => {
                        n.as_object_mut().expect("object").remove("status");
                    }
                }
                n
            }
            UpdateMode::Main if rt.status_subresource => {
                match old.get("status") {
                    Some(s) => obj["status"] = s.clone(),
                    None => {
                        obj.as_object_mut().expect("object").remove("status");
                    }
                }
                obj
            }
            _ => obj,
        };
        let old_gen = old
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        let generation = if spec_differs(&old, &new) {
            old_gen + 1
        } else {
            old_gen
        };
        {
            let meta = metadata_mut(&mut new);
            for f in ["uid", "creationTimestamp"] {
                match old.pointer(&format!("/metadata/{f}")) {
                    Some(v) => meta.insert(f.into(), v.clone()),
                    None => meta.remove(f),
                };
            }
            meta.insert("generation".into(), json!(generation));
            meta.insert(
                "resourceVersion".into(),
                Value::String(rv_of(&old).to_string()),
            );
        }
        if new == *old {
            return Ok(old);
        }
        let rv = self.next_rv();
        metadata_mut(&mut new).insert("resourceVersion".into(), Value::String(rv.to_string()));
        let new = Arc::new(new);
        self.objects[res].insert(key.clone(), new.clone());
        self.record(res, EventType::Modified, key, new.clone(), Some(old));
        Ok(new)
    }

    /// PATCH. `status` selects the `/status` subresource. An apply patch creates a missing object.
    pub fn patch(
        &mut self,
        res: ResourceId,
        ns: &str,
        name: &str,
        ptype: PatchType,
        body: &Value,
        status: bool,
    ) -> Result<Arc<Value>, ApiError> {
        let rt = &RESOURCES[res];
        let ns = if rt.namespaced { ns } else { "" };
        let Some(old) = self.objects[res]
            .get(&(ns.to_string(), name.to_string()))
            .cloned()
        else {
            if ptype == PatchType::Apply && !status {
                let mut obj = body.clone();
                if obj.is_object() && meta_str(&obj, "name").is_empty() {
                    metadata_mut(&mut obj).insert("name".into(), Value::String(name.to_string()));
                }
                if meta_str(&obj, "name") != name {
                    return Err(ApiError::bad_request(
                        "the name of the object does not match the name on the URL",
                    ));
                }
                return self.create(res, ns, obj);
            }
            return Err(ApiError::not_found(rt, name));
        };
        let mut doc = (*old).clone();
        match ptype {
            PatchType::Merge | PatchType::Apply => patch::merge_patch(&mut doc, body),
            PatchType::Strategic => patch::strategic_merge_patch(&mut doc, body),
            PatchType::Json => {
                patch::json_patch(&mut doc, body).map_err(|e| ApiError::new(422, "Invalid", e))?;
            }
        }
        if ptype == PatchType::Apply {
            // Server-side apply carries no optimistic-concurrency precondition unless set.
            if rv_of(body).is_empty() {
                metadata_mut(&mut doc).insert(
                    "resourceVersion".into(),
                    Value::String(rv_of(&old).to_string()),
                );
            }
        }
        let mode = if status {
            UpdateMode::Status
        } else {
            UpdateMode::Main
        };
        self.update(res, ns, name, doc, mode)
    }

    /// DELETE: removes and returns the object (with the deletion's resourceVersion).
    /// Preconditions (from DeleteOptions) give 409 Conflict when they do not hold.
    pub fn delete(
        &mut self,
        res: ResourceId,
        ns: &str,
        name: &str,
        precondition_rv: Option<&str>,
        precondition_uid: Option<&str>,
    ) -> Result<Arc<Value>, ApiError> {
        let rt = &RESOURCES[res];
        let key = (
            if rt.namespaced { ns } else { "" }.to_string(),
            name.to_string(),
        );
        let Some(old) = self.objects[res].get(&key).cloned() else {
            return Err(ApiError::not_found(rt, name));
        };
        if precondition_rv.is_some_and(|p| !p.is_empty() && p != rv_of(&old))
            || precondition_uid.is_some_and(|p| !p.is_empty() && p != meta_str(&old, "uid"))
        {
            return Err(ApiError::conflict(rt, name));
        }
        self.objects[res].remove(&key);
        let rv = self.next_rv();
        let mut gone = (*old).clone();
        metadata_mut(&mut gone).insert("resourceVersion".into(), Value::String(rv.to_string()));
        let gone = Arc::new(gone);
        self.record(res, EventType::Deleted, key, gone.clone(), Some(old));
        Ok(gone)
    }

    /// In-process create-or-replace of a whole object (status included, no preconditions).
    /// The type comes from `apiVersion`+`kind` (or just `kind`).
    pub fn apply(&mut self, obj: Value) -> Result<Arc<Value>, ApiError> {
        let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
        let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        let res = lookup_kind(api_version, kind)
            .or_else(|| {
                if api_version.is_empty() {
                    lookup(kind)
                } else {
                    None
                }
            })
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "no resource type for apiVersion {api_version:?} kind {kind:?}"
                ))
            })?;
        let ns = meta_str(&obj, "namespace").to_string();
        let name = meta_str(&obj, "name").to_string();
        let ns = if RESOURCES[res].namespaced && ns.is_empty() {
            "default".to_string()
        } else {
            ns
        };
        if !name.is_empty() && self.get(res, &ns, &name).is_some() {
            self.update(res, &ns, &name, obj, UpdateMode::Force)
        } else {
            let mut obj = obj;
            if obj.is_object() {
                metadata_mut(&mut obj).remove("resourceVersion");
            }
            self.create(res, &ns, obj)
        }
    }

    /// The objects of `res` as they were at `at`, from the current ones and the history.
    fn snapshot_at(
        &self,
        res: ResourceId,
        at: u64,
    ) -> Result<Cow<'_, BTreeMap<Key, Arc<Value>>>, ApiError> {
        if at < self.compacted_rv {
            return Err(ApiError::expired(format!(
                "The resourceVersion for the provided list is too old: {at} (compacted at {})",
                self.compacted_rv
            )));
        }
        let newer = self.history.iter().rev().take_while(|e| e.rv > at);
        if !newer.clone().any(|e| e.res == res) {
            return Ok(Cow::Borrowed(&self.objects[res]));
        }
        let mut map = self.objects[res].clone();
        for e in newer.filter(|e| e.res == res) {
            match &e.prev {
                Some(p) => map.insert(e.key.clone(), p.clone()),
                None => map.remove(&e.key),
            };
        }
        Ok(Cow::Owned(map))
    }

    /// LIST. `continue_token` pages through a snapshot taken at the first page's RV; `exact_rv`
    /// serves the state at that RV (resourceVersionMatch=Exact).
    pub fn list(
        &self,
        res: ResourceId,
        filter: &Filter,
        limit: Option<usize>,
        continue_token: Option<&str>,
        exact_rv: Option<u64>,
    ) -> Result<ListPage, ApiError> {
        let (at, start) = match continue_token {
            Some(tok) => {
                let (rv, start) = decode_continue(tok)?;
                if rv < self.compacted_rv {
                    return Err(ApiError::expired(
                        "The provided continue parameter is too old to display a consistent list result. \
                         You can start a new list without the continue parameter.",
                    ));
                }
                (rv, Some(start))
            }
            None => (exact_rv.unwrap_or(self.rv), None),
        };
        let snapshot = self.snapshot_at(res, at)?;
        let range = match &start {
            Some(k) => snapshot.range((Bound::Excluded(k.clone()), Bound::Unbounded)),
            None => snapshot.range::<Key, _>(..),
        };
        let mut matching = range.filter(|(k, v)| filter.matches(k, v));
        let mut items = Vec::new();
        let mut last: Option<&Key> = None;
        let limit = limit.filter(|&l| l > 0).unwrap_or(usize::MAX);
        for (k, v) in matching.by_ref() {
            items.push(v.clone());
            last = Some(k);
            if items.len() >= limit {
                break;
            }
        }
        let more = items.len() >= limit && matching.next().is_some();
        let continue_token = match (more, last) {
            (true, Some(k)) => Some(encode_continue(at, k)),
            _ => None,
        };
        Ok(ListPage {
            rv: at,
            items,
            continue_token,
        })
    }

    /// Starts a watch. `from`: Some(rv) resumes after rv (410 if compacted);
    /// None starts now, with the current matching objects as ADDED events first.
    pub fn watch_start(
        &self,
        res: ResourceId,
        filter: &Filter,
        from: Option<u64>,
    ) -> Result<(WatchCursor, Vec<WatchItem>), ApiError> {
        let mut cursor = WatchCursor {
            rv: self.rv,
            epoch: self.epoch,
        };
        match from {
            Some(rv) => {
                cursor.rv = rv;
                let items = self.watch_poll(res, filter, &mut cursor)?;
                Ok((cursor, items))
            }
            None => {
                let items = self.objects[res]
                    .iter()
                    .filter(|(k, v)| filter.matches(k, v))
                    .map(|(_, v)| WatchItem {
                        etype: EventType::Added,
                        obj: v.clone(),
                    })
                    .collect();
                Ok((cursor, items))
            }
        }
    }

    /// The events after the cursor that the filter sees, advancing the cursor to now.
    /// 410 Expired once the cursor is older than the history (or the store was compacted).
    pub fn watch_poll(
        &self,
        res: ResourceId,
        filter: &Filter,
        cursor: &mut WatchCursor,
    ) -> Result<Vec<WatchItem>, ApiError> {
        if cursor.epoch != self.epoch || cursor.rv < self.compacted_rv {
            return Err(ApiError::expired(format!(
                "too old resource version: {} ({})",
                cursor.rv,
                self.compacted_rv + 1
            )));
        }
        let start = self.history.partition_point(|e| e.rv <= cursor.rv);
        let mut out = Vec::new();
        for e in self.history.range(start..).filter(|e| e.res == res) {
            let now = filter.matches(&e.key, &e.obj);
            let before = e.prev.as_ref().is_some_and(|p| filter.matches(&e.key, p));
            match e.etype {
                EventType::Added if now => out.push(WatchItem {
                    etype: EventType::Added,
                    obj: e.obj.clone(),
                }),
                EventType::Deleted if before => out.push(WatchItem {
                    etype: EventType::Deleted,
                    obj: e.obj.clone(),
                }),
                EventType::Modified => match (before, now) {
                    (true, true) => out.push(WatchItem {
                        etype: EventType::Modified,
                        obj: e.obj.clone(),
                    }),
                    (false, true) => out.push(WatchItem {
                        etype: EventType::Added,
                        obj: e.obj.clone(),
                    }),
                    (true, false) => {
                        // Like the apiserver: the previous content, with the event's RV.
                        let mut old = (**e.prev.as_ref().expect("before implies prev")).clone();
                        metadata_mut(&mut old)
                            .insert("resourceVersion".into(), Value::String(e.rv.to_string()));
                        out.push(WatchItem {
                            etype: EventType::Deleted,
                            obj: Arc::new(old),
                        });
                    }
                    (false, false) => {}
                },
                _ => {}
            }
        }
        cursor.rv = self.rv;
        Ok(out)
    }
}

fn encode_continue(rv: u64, key: &Key) -> String {
    let raw = json!({"v": "meta.k8s.io/v1", "rv": rv, "ns": key.0, "name": key.1}).to_string();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

fn decode_continue(tok: &str) -> Result<(u64, Key), ApiError> {
    let bad = || ApiError::bad_request("continue key is not valid");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(tok.trim_end_matches('='))
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    if v["v"] != "meta.k8s.io/v1" {
        return Err(bad());
    }
    let rv = v["rv"].as_u64().ok_or_else(bad)?;
    let ns = v["ns"].as_str().ok_or_else(bad)?.to_string();
    let name = v["name"].as_str().ok_or_else(bad)?.to_string();
    Ok((rv, (ns, name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, labels: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}, "spec": {}})
    }

    const NODES: ResourceId = 0;

    #[test]
    fn create_update_delete_rvs() {
        let mut s = Store::new();
        let a = s.create(NODES, "", node("a", json!({}))).unwrap();
        assert_eq!(rv_of(&a), "2");
        assert_eq!(a["metadata"]["generation"], 1);
        assert_eq!(meta_str(&a, "uid").len(), 36);
        assert_eq!(
            s.create(NODES, "", node("a", json!({}))).unwrap_err().code,
            409
        );
        // No-op update: same RV, no event.
        let same = s
            .update(NODES, "", "a", (*a).clone(), UpdateMode::Main)
            .unwrap();
        assert_eq!(rv_of(&same), "2");
        assert_eq!(s.history_len(), 1);
        let mut changed = (*a).clone();
        changed["spec"]["unschedulable"] = json!(true);
        let b = s
            .update(NODES, "", "a", changed.clone(), UpdateMode::Main)
            .unwrap();
        assert_eq!(rv_of(&b), "3");
        assert_eq!(b["metadata"]["generation"], 2);
        assert_eq!(b["metadata"]["uid"], a["metadata"]["uid"]);
        // Stale RV.
        changed["spec"]["unschedulable"] = json!(false);
        assert_eq!(
            s.update(NODES, "", "a", changed, UpdateMode::Main)
                .unwrap_err()
                .reason,
            "Conflict"
        );
        // Status is kept on a main-resource update of a type with a status subresource.
        let mut with_status = (*b).clone();
        with_status["status"] = json!({"phase": "x"});
        let c = s
            .update(NODES, "", "a", with_status.clone(), UpdateMode::Main)
            .unwrap();
        assert!(c.get("status").is_none());
        let d = s
            .update(NODES, "", "a", with_status, UpdateMode::Status)
            .unwrap();
        assert_eq!(d["status"]["phase"], "x");
        let gone = s.delete(NODES, "", "a", None, None).unwrap();
        assert_eq!(rv_of(&gone), "5");
        assert_eq!(s.delete(NODES, "", "a", None, None).unwrap_err().code, 404);
    }

    #[test]
    fn paginated_list_is_a_snapshot() {
        let mut s = Store::new();
        for i in 0..5 {
            s.create(NODES, "", node(&format!("n{i}"), json!({})))
                .unwrap();
        }
        let f = Filter::default();
        let p1 = s.list(NODES, &f, Some(2), None, None).unwrap();
        assert_eq!(p1.items.len(), 2);
        // Changes after the first page are not seen by later pages.
        s.delete(NODES, "", "n3", None, None).unwrap();
        s.create(NODES, "", node("n9", json!({}))).unwrap();
        let p2 = s
            .list(NODES, &f, Some(2), p1.continue_token.as_deref(), None)
            .unwrap();
        let p3 = s
            .list(NODES, &f, Some(2), p2.continue_token.as_deref(), None)
            .unwrap();
        assert!(p3.continue_token.is_none());
        let names: Vec<_> = p1
            .items
            .iter()
            .chain(&p2.items)
            .chain(&p3.items)
            .map(|o| meta_str(o, "name").to_string())
            .collect();
        assert_eq!(names, ["n0", "n1", "n2", "n3", "n4"]);
        assert_eq!(p3.rv, p1.rv);
        s.compact();
        assert_eq!(
            s.list(NODES, &f, Some(2), p1.continue_token.as_deref(), None)
                .unwrap_err()
                .code,
            410
        );
        assert_eq!(
            s.list(NODES, &f, Some(2), Some("garbage"), None)
                .unwrap_err()
                .code,
            400
        );
    }

    #[test]
    fn watch_selector_transitions() {
        let mut s = Store::new();
        let f = Filter {
            labels: LabelSelector::parse("app=web").unwrap(),
            ..Default::default()
        };
        let (mut cur, init) = s
            .watch_start(NODES, &f, Some(s.resource_version()))
            .unwrap();
        assert!(init.is_empty());
        s.create(NODES, "", node("a", json!({"app": "db"})))
            .unwrap();
        let mut o = (*s.get(NODES, "", "a").unwrap()).clone();
        o["metadata"]["labels"]["app"] = json!("web");
        s.update(NODES, "", "a", o.clone(), UpdateMode::Main)
            .unwrap();
        o["metadata"]["labels"]["app"] = json!("db");
        o["metadata"]["resourceVersion"] = json!("");
        s.update(NODES, "", "a", o, UpdateMode::Main).unwrap();
        let ev = s.watch_poll(NODES, &f, &mut cur).unwrap();
        let types: Vec<_> = ev.iter().map(|e| e.etype).collect();
        assert_eq!(types, [EventType::Added, EventType::Deleted]);
        assert_eq!(rv_of(&ev[1].obj), "4");
        assert_eq!(ev[1].obj["metadata"]["labels"]["app"], "web");
        s.compact();
        assert_eq!(s.watch_poll(NODES, &f, &mut cur).unwrap_err().code, 410);
    }

    #[test]
    fn bounded_history() {
        let mut s = Store::new();
        s.set_max_history(3);
        for i in 0..5 {
            s.create(NODES, "", node(&format!("n{i}"), json!({})))
                .unwrap();
        }
        assert_eq!(s.history_len(), 3);
        let f = Filter::default();
        assert_eq!(s.watch_start(NODES, &f, Some(2)).unwrap_err().code, 410);
        assert_eq!(s.watch_start(NODES, &f, Some(3)).unwrap().1.len(), 3);
    }
}
