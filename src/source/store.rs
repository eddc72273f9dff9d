//! The state of one remote cluster as its watchers see it: a table per kind, fed with watch
//! events, turned into a [`RemoteSnapshot`] on demand. Pure (no I/O), so the re-list semantics
//! (an `Init` .. `InitDone` sequence replaces a table atomically) are unit-tested here.

use super::convert::{self, SliceData};
use super::{ImportReport, LimitHit, Rejected, RemoteNode, RemoteService, RemoteSnapshot};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

/// `Ok(None)`: an object that isn't relevant (no agent on the node, ExternalName service...).
type Converted<T> = Result<Option<T>, String>;

/// One kind's objects by key (name or namespace/name), with a buffer for a re-list, at most
/// `cap` of them: an object beyond that is ignored and counted (a hostile or broken remote
/// costs a bounded amount of memory). Every operation is O(log n).
#[derive(Debug)]
pub struct Table<T> {
    items: BTreeMap<String, Converted<T>>,
    relist: Option<BTreeMap<String, Converted<T>>>,
    /// A full list has completed at least once.
    pub synced: bool,
    pub cap: usize,
    /// Objects ignored because the table was full (since the agent started).
    pub ignored: u64,
    /// Whether the latest list or event found the table full.
    pub full: bool,
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Table {
            items: BTreeMap::new(),
            relist: None,
            synced: false,
            cap: usize::MAX,
            ignored: 0,
            full: false,
        }
    }
}

impl<T> Table<T> {
    pub fn with_cap(cap: usize) -> Self {
        Table {
            cap,
            ..Default::default()
        }
    }

    /// Inserts into `map` unless that would exceed `cap` (a known key is always replaced).
    fn insert_capped(
        map: &mut BTreeMap<String, Converted<T>>,
        cap: usize,
        ignored: &mut u64,
        full: &mut bool,
        key: String,
        v: Converted<T>,
    ) {
        if map.len() >= cap && !map.contains_key(&key) {
            *ignored += 1;
            *full = true;
            return;
        }
        map.insert(key, v);
    }

    pub fn apply(&mut self, key: String, v: Converted<T>) {
        Self::insert_capped(
            &mut self.items,
            self.cap,
            &mut self.ignored,
            &mut self.full,
            key,
            v,
        );
    }

    pub fn delete(&mut self, key: &str) {
        self.items.remove(key);
    }

    /// A (re-)list starts: collect into a buffer; the old items stay visible until it's done.
    pub fn init(&mut self) {
        self.relist = Some(BTreeMap::new());
        self.full = false;
    }

    pub fn init_apply(&mut self, key: String, v: Converted<T>) {
        let map = self.relist.get_or_insert_with(BTreeMap::new);
        Self::insert_capped(map, self.cap, &mut self.ignored, &mut self.full, key, v);
    }

    /// The list is complete: objects not listed are gone.
    pub fn init_done(&mut self) {
        if let Some(items) = self.relist.take() {
            self.items = items;
        }
        self.synced = true;
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    fn iter(&self) -> impl Iterator<Item = (&String, &Converted<T>)> {
        self.items.iter()
    }
}

/// The tables' caps (config `limits`).
#[derive(Debug, Clone, Copy)]
pub struct StoreLimits {
    pub nodes: usize,
    pub services: usize,
    pub slices: usize,
}

impl From<&crate::config::LimitsConfig> for StoreLimits {
    fn from(l: &crate::config::LimitsConfig) -> Self {
        StoreLimits {
            nodes: l.nodes,
            services: l.services,
            slices: l.endpoint_slices,
        }
    }
}

/// All three kinds for one remote.
#[derive(Debug, Default)]
pub struct RemoteStore {
    pub remote: String,
    pub nodes: Table<RemoteNode>,
    pub services: Table<RemoteService>,
    pub slices: Table<SliceData>,
    /// `import: exported`: the remote's ServiceExports by namespace/name, with their creation
    /// time (Unix seconds; 0 if unknown); only their Services are imported. None: every
    /// Service is.
    pub exports: Option<Table<i64>>,
    /// "multicluster.x-k8s.io/v1beta1" while the remote serves a ServiceExport API.
    pub export_api: Option<String>,
    /// `import` as written, for the report.
    pub policy: String,
    /// namespace/service -> when its latest change happened (for the network programming
    /// latency metric). Only changes after the first full sync: the initial list is not a
    /// change anyone waits for.
    changed_at: HashMap<String, SystemTime>,
}

/// Set by the EndpointSlice controller: when the pod or service change behind this slice
/// update happened (the start of the Kubernetes network programming SLI).
pub const ANN_TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";

/// The trigger time of a slice update: its annotation if present and sane, else `now`.
pub fn slice_trigger_time(s: &EndpointSlice, now: SystemTime) -> SystemTime {
    s.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANN_TRIGGER_TIME))
        .and_then(|v| v.parse::<k8s_openapi::jiff::Timestamp>().ok())
        .map(SystemTime::from)
        // A remote clock far off would make the metric meaningless: fall back to ours.
        .filter(|t| {
            let skew = Duration::from_secs(3600);
            *t <= now + skew && now.duration_since(*t).unwrap_or_default() <= skew
        })
        .unwrap_or(now)
}

pub fn node_key(n: &Node) -> String {
    n.metadata.name.clone().unwrap_or_default()
}

pub fn namespaced_key(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default()
    )
}

impl RemoteStore {
    pub fn new(remote: &str) -> RemoteStore {
        RemoteStore {
            remote: remote.to_string(),
            ..Default::default()
        }
    }

    pub fn with_limits(remote: &str, l: StoreLimits) -> RemoteStore {
        RemoteStore {
            remote: remote.to_string(),
            nodes: Table::with_cap(l.nodes),
            services: Table::with_cap(l.services),
            slices: Table::with_cap(l.slices),
            ..Default::default()
        }
    }

    /// The limits that were hit: "nodes: 5000 (limit; 12 ignored)".
    pub fn limits_hit(&self) -> Vec<LimitHit> {
        [
            ("nodes", self.nodes.full, self.nodes.cap, self.nodes.ignored),
            (
                "services",
                self.services.full,
                self.services.cap,
                self.services.ignored,
            ),
            (
                "endpointslices",
                self.slices.full,
                self.slices.cap,
                self.slices.ignored,
            ),
        ]
        .into_iter()
        .chain(
            self.exports
                .as_ref()
                .map(|t| ("serviceexports", t.full, t.cap, t.ignored)),
        )
        .filter(|(_, full, _, ignored)| *full || *ignored > 0)
        .map(|(kind, full, limit, ignored)| LimitHit {
            kind: kind.into(),
            limit,
            ignored,
            now: full,
        })
        .collect()
    }

    /// Records a change of a service (or its slices) seen by a watch event.
    pub fn note_change(&mut self, service_key: String, at: SystemTime) {
        if self.synced() {
            let e = self.changed_at.entry(service_key).or_insert(at);
            *e = (*e).max(at);
            // Deleted services leave entries behind: prune now and then.
            if self.changed_at.len() > 2 * self.services.len() + 64 {
                let services = &self.services.items;
                self.changed_at.retain(|k, _| services.contains_key(k));
            }
        }
    }

    pub fn synced(&self) -> bool {
        self.nodes.synced
            && self.services.synced
            && self.slices.synced
            && self.exports.as_ref().is_none_or(|t| t.synced)
    }

    /// Imports only exported Services from now on (`import: exported`).
    pub fn gate_on_exports(&mut self, cap: usize) {
        self.exports = Some(Table::with_cap(cap));
    }

    /// The remote serves ServiceExports at `api` (None: it serves none, so none exist and
    /// the table counts as synced and empty).
    pub fn set_export_api(&mut self, api: Option<String>) {
        if let (None, Some(t)) = (&api, self.exports.as_mut()) {
            t.init();
            t.init_done();
        }
        self.export_api = api;
    }

    pub fn convert_export(
        o: &kube::core::PartialObjectMeta<kube::core::DynamicObject>,
    ) -> (String, Converted<i64>) {
        let created = o
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or(0, |t| t.0.as_second());
        (namespaced_key(&o.metadata), Ok(Some(created)))
    }

    pub fn convert_node(n: &Node) -> (String, Converted<RemoteNode>) {
        (node_key(n), convert::node(n))
    }

    pub fn convert_service(s: &Service) -> (String, Converted<RemoteService>) {
        (namespaced_key(&s.metadata), convert::service(s))
    }

    pub fn convert_slice(s: &EndpointSlice) -> (String, Converted<SliceData>) {
        (namespaced_key(&s.metadata), convert::endpoint_slice(s))
    }

    /// Builds the snapshot: nodes that run the agent, services with the endpoints of all their
    /// slices, and the objects that could not be converted.
    pub fn snapshot(&self) -> RemoteSnapshot {
        let mut snap = RemoteSnapshot {
            limits_hit: self.limits_hit(),
            ..Default::default()
        };
        let mut reject = |kind: &str, key: &str, reason: &str| {
            snap.rejected.push(Rejected {
                remote: self.remote.clone(),
                object: format!("{kind} {}", convert::shown(key)),
                reason: reason.to_string(),
            })
        };
        for (key, v) in self.nodes.iter() {
            match v {
                Ok(Some(n)) => snap.nodes.push(n.clone()),
                Ok(None) => {}
                Err(reason) => reject("node", key, reason),
            }
        }
        // namespace/service -> slices' endpoints
        let mut by_service: HashMap<String, Vec<&SliceData>> = HashMap::new();
        for (key, v) in self.slices.iter() {
            match v {
                Ok(Some(d)) => {
                    let ns = key.split('/').next().unwrap_or_default();
                    by_service
                        .entry(format!("{ns}/{}", d.service))
                        .or_default()
                        .push(d);
                }
                Ok(None) => {}
                Err(reason) => reject("endpointslice", key, reason),
            }
        }
        let mut not_exported = 0;
        for (key, v) in self.services.iter() {
            let mut exported_since = None;
            if let Some(exports) = &self.exports {
                match exports.items.get(key) {
                    Some(Ok(Some(created))) => exported_since = Some(*created),
                    Some(_) => {}
                    None => {
                        not_exported += 1;
                        continue;
                    }
                }
            }
            match v {
                Ok(Some(s)) => {
                    if let Some(t) = self.changed_at.get(key) {
                        snap.changed_at.insert(key.clone(), *t);
                    }
                    let mut s = s.clone();
                    s.exported_since = exported_since;
                    for d in by_service.get(key.as_str()).into_iter().flatten() {
                        for e in &d.endpoints {
                            // The same endpoint may briefly sit in two slices while the
                            // EndpointSlice controller moves it.
                            if !s.endpoints.iter().any(|x| x.ip == e.ip) {
                                s.endpoints.push(e.clone());
                            }
                        }
                    }
                    snap.services.push(s);
                }
                Ok(None) => {}
                Err(reason) => reject("service", key, reason),
            }
        }
        snap.import = Some(ImportReport {
            policy: self.policy.clone(),
            export_api: self.export_api.clone(),
            service_exports: self.exports.as_ref().map_or(0, |t| t.len()),
            not_exported,
        });
        snap
    }
}

#[cfg(test)]
mod limit_tests {
    use super::*;

    #[test]
    fn a_full_table_ignores_new_keys_and_counts_them() {
        let mut t: Table<u32> = Table::with_cap(2);
        t.apply("a".into(), Ok(Some(1)));
        t.apply("b".into(), Ok(Some(2)));
        t.apply("c".into(), Ok(Some(3)));
        assert_eq!((t.len(), t.ignored, t.full), (2, 1, true));
        // A known key is still updated; a deletion makes room.
        t.apply("a".into(), Ok(Some(9)));
        t.delete("b");
        t.apply("c".into(), Ok(Some(3)));
        assert_eq!(t.len(), 2);
        // A re-list is capped the same way and resets "full" when it fits.
        t.init();
        for k in ["x", "y", "z"] {
            t.init_apply(k.into(), Ok(Some(0)));
        }
        t.init_done();
        assert_eq!((t.len(), t.ignored, t.full), (2, 2, true));
        t.init();
        t.init_apply("x".into(), Ok(Some(0)));
        t.init_done();
        assert!(!t.full);
        let st = RemoteStore::with_limits(
            "west",
            StoreLimits {
                nodes: 1,
                services: 5,
                slices: 5,
            },
        );
        assert!(st.limits_hit().is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const K1: &str = "4ONiAEenjiGp0lgFD1UTkoqxnIHcISSKx9IX8357aW0=";

    fn node(name: &str, key: &str) -> Node {
        serde_json::from_value(json!({"metadata": {"name": name, "annotations": {
            super::super::ANN_PUBLIC_KEY: key}}, "spec": {"podCIDRs": ["10.132.1.0/24"]}}))
        .unwrap()
    }

    fn apply_node(st: &mut RemoteStore, n: &Node) {
        let (k, v) = RemoteStore::convert_node(n);
        st.nodes.apply(k, v);
    }

    #[test]
    fn relist_replaces_atomically_and_drops_missing_objects() {
        let mut st = RemoteStore::new("west");
        apply_node(&mut st, &node("b1", K1));
        apply_node(&mut st, &node("b2", K1));
        assert_eq!(st.snapshot().nodes.len(), 2);
        st.nodes.init();
        let (k, v) = RemoteStore::convert_node(&node("b2", K1));
        st.nodes.init_apply(k, v);
        // Mid-relist: the old view still holds.
        assert_eq!(st.snapshot().nodes.len(), 2);
        st.nodes.init_done();
        let names: Vec<_> = st.snapshot().nodes.into_iter().map(|n| n.name).collect();
        assert_eq!(names, vec!["b2"]);
        assert!(st.nodes.synced && !st.synced());
    }

    #[test]
    fn bad_objects_become_rejections_and_good_ones_remain() {
        let mut st = RemoteStore::new("west");
        apply_node(&mut st, &node("b1", K1));
        apply_node(&mut st, &node("evil", "xx"));
        let snap = st.snapshot();
        assert_eq!(snap.nodes.len(), 1);
        assert_eq!(snap.rejected.len(), 1);
        assert_eq!(snap.rejected[0].object, "node evil");
        assert!(snap.rejected[0].reason.contains("malformed key"));
        st.nodes.delete("evil");
        assert!(st.snapshot().rejected.is_empty());
    }

    #[test]
    fn changes_after_the_first_sync_carry_their_trigger_time() {
        let mut st = RemoteStore::new("west");
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"namespace": "a", "name": "web"},
            "spec": {"clusterIP": "172.31.0.10", "ports": [{"port": 80}]}}))
        .unwrap();
        let (k, v) = RemoteStore::convert_service(&svc);
        st.services.apply(k, v);
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        // Not synced yet: the initial list is no change.
        st.note_change("a/web".into(), t0);
        assert!(st.snapshot().changed_at.is_empty());
        for t in [
            &mut st.nodes.synced,
            &mut st.services.synced,
            &mut st.slices.synced,
        ] {
            *t = true;
        }
        st.note_change("a/web".into(), t0);
        st.note_change("a/web".into(), t0 - Duration::from_secs(5)); // older: ignored
        st.note_change("a/gone".into(), t0); // no such service: not in the snapshot
        let snap = st.snapshot();
        assert_eq!(snap.changed_at.len(), 1);
        assert_eq!(snap.changed_at["a/web"], t0);
    }

    #[test]
    fn slice_trigger_time_from_the_annotation_within_reason() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let slice = |ann: &str| -> EndpointSlice {
            serde_json::from_value(json!({"metadata": {"annotations": {ANN_TRIGGER_TIME: ann}},
                "addressType": "IPv4", "endpoints": []}))
            .unwrap()
        };
        // 2023-11-14T22:13:10Z is now - 10 s.
        let t = slice_trigger_time(&slice("2023-11-14T22:13:10Z"), now);
        assert_eq!(now.duration_since(t).unwrap(), Duration::from_secs(10));
        assert_eq!(slice_trigger_time(&slice("garbage"), now), now);
        assert_eq!(slice_trigger_time(&slice("2001-01-01T00:00:00Z"), now), now);
    }

    fn export(ns: &str, name: &str) -> kube::core::PartialObjectMeta<kube::core::DynamicObject> {
        serde_json::from_value(json!({"apiVersion": "multicluster.x-k8s.io/v1beta1",
            "kind": "ServiceExport", "metadata": {"namespace": ns, "name": name}}))
        .unwrap()
    }

    #[test]
    fn import_exported_keeps_only_services_with_a_service_export() {
        let mut st = RemoteStore::new("west");
        st.policy = "exported".into();
        st.gate_on_exports(10);
        for (ns, name) in [("a", "web"), ("a", "db"), ("b", "web")] {
            let svc: Service = serde_json::from_value(json!({
                "metadata": {"namespace": ns, "name": name},
                "spec": {"clusterIP": "172.31.0.10", "ports": [{"port": 80}]}}))
            .unwrap();
            let (k, v) = RemoteStore::convert_service(&svc);
            st.services.apply(k, v);
        }
        st.nodes.synced = true;
        st.services.synced = true;
        st.slices.synced = true;
        // Exports not listed yet: not synced, nothing imported.
        assert!(!st.synced());
        assert!(st.snapshot().services.is_empty());
        st.set_export_api(Some("multicluster.x-k8s.io/v1beta1".into()));
        let exports = st.exports.as_mut().unwrap();
        exports.init();
        // The same name in another namespace exports nothing here (namespace sameness).
        let (k, v) = RemoteStore::convert_export(&export("b", "web"));
        exports.init_apply(k, v);
        let (k, v) = RemoteStore::convert_export(&export("a", "missing"));
        exports.init_apply(k, v);
        exports.init_done();
        assert!(st.synced());
        let snap = st.snapshot();
        let names: Vec<_> = snap
            .services
            .iter()
            .map(|s| format!("{}/{}", s.namespace, s.name))
            .collect();
        assert_eq!(names, vec!["b/web"]);
        let report = snap.import.unwrap();
        assert_eq!((report.service_exports, report.not_exported), (2, 2));
        assert_eq!(
            report.export_api.as_deref(),
            Some("multicluster.x-k8s.io/v1beta1")
        );
        // Unexport: gone.
        st.exports.as_mut().unwrap().delete("b/web");
        assert!(st.snapshot().services.is_empty());
        // The CRD goes away: synced, nothing exported, the report says why.
        st.exports
            .as_mut()
            .unwrap()
            .apply("a/web".into(), Ok(Some(0)));
        st.set_export_api(None);
        assert!(st.synced());
        let snap = st.snapshot();
        assert!(snap.services.is_empty());
        assert_eq!(snap.import.unwrap().export_api, None);
        // The exports table is capped like the others.
        let mut st = RemoteStore::new("west");
        st.gate_on_exports(1);
        let t = st.exports.as_mut().unwrap();
        t.apply("a/x".into(), Ok(Some(0)));
        t.apply("a/y".into(), Ok(Some(0)));
        assert_eq!(st.limits_hit()[0].kind, "serviceexports");
    }

    #[test]
    fn services_join_their_slices_in_the_same_namespace() {
        let mut st = RemoteStore::new("west");
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"namespace": "a", "name": "web"},
            "spec": {"clusterIP": "172.31.0.10", "ports": [{"name": "http", "port": 80}]}}))
        .unwrap();
        let (k, v) = RemoteStore::convert_service(&svc);
        st.services.apply(k, v);
        let slice = |ns: &str, name: &str, ips: &[&str]| -> EndpointSlice {
            let eps: Vec<_> = ips.iter().map(|ip| json!({"addresses": [ip]})).collect();
            serde_json::from_value(json!({
                "metadata": {"namespace": ns, "name": name,
                    "labels": {convert::LABEL_SERVICE_NAME: "web"}},
                "addressType": "IPv4", "ports": [{"name": "http", "port": 8080}],
                "endpoints": eps}))
            .unwrap()
        };
        for s in [
            slice("a", "web-1", &["10.132.1.5", "10.132.1.6"]),
            slice("a", "web-2", &["10.132.1.6", "10.132.2.7"]),
            slice("b", "web-1", &["10.132.3.3"]),
        ] {
            let (k, v) = RemoteStore::convert_slice(&s);
            st.slices.apply(k, v);
        }
        let snap = st.snapshot();
        assert_eq!(snap.services.len(), 1);
        let ips: Vec<String> = snap.services[0]
            .endpoints
            .iter()
            .map(|e| e.ip.to_string())
            .collect();
        assert_eq!(ips, vec!["10.132.1.5", "10.132.1.6", "10.132.2.7"]);
        assert_eq!(snap.endpoint_count(), 3);
    }
}
